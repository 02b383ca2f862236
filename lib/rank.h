/* rank.h - rank classification over an arbitrary order of a set's examples. */
#ifndef MC_RANK_H
#define MC_RANK_H

#include "tokens.h"

/* Rank classification (as tok_rank) of the examples order[first ..
 * first+count-1] (example ids; NULL: the identity), so a caller can batch
 * examples of similar length together. scores are indexed by the set's
 * choice numbers (scores[c]), pred by example id (pred[e]). */
void tok_rank_order(t5_model *m, const tok_set *s, const int64_t *order, int64_t first, int64_t count,
                    tok_batch *tb, float *scores, int *pred);

/* Example ids 0..s->n-1 sorted by input length, ties in id order; free(). */
int64_t *tok_length_order(const tok_set *s);
/* The same for the example ids lo..hi-1 (hi - lo of them); free(). */
int64_t *tok_length_order_range(const tok_set *s, int64_t lo, int64_t hi);

#endif
