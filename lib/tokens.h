/* tokens.h - reading `tokens` artifacts (the layout below) and making
 * T5 batches from them.
 *
 * A task set has input_ids/input_offsets plus choice_ids/choice_offsets,
 * example_choices and label. A pretraining corpus (from the data stage) has
 * only input_ids/input_offsets: one row per document or line.
 *
 * Batches: encoder rows are padded with 0 to the longest row of the batch,
 * decoder input = target shifted right with 0 as start token, targets padded
 * with 0 (ignored by the loss). Sequences longer than the limits are cut to
 * max-1 tokens plus EOS (every sequence keeps its EOS).
 *
 * Span corruption (T5 pretraining): noise density 0.15, mean noise span 3;
 * the i-th noise span becomes <extra_id_i> = extra_id_0 - i in the input and the
 * target is <extra_id_0> span0 <extra_id_1> span1 ... EOS.
 */
#ifndef MC_TOKENS_H
#define MC_TOKENS_H

#include <stdint.h>

#include "t5.h"

typedef struct {
    char *path;
    char key[33];
    char task[128], split[64];
    int64_t n;                /* examples (rows of input_offsets - 1) */
    int *input_ids;           /* flat */
    int64_t *input_off;       /* n+1 */
    int64_t n_choices;        /* 0 for a corpus */
    int *choice_ids;
    int64_t *choice_off;      /* n_choices+1 */
    int64_t *ex_choices;      /* n+1: example i has choices [ex_choices[i], ex_choices[i+1]) */
    int *label;               /* n */
    int max_id;
} tok_set;

/* Load a tokens artifact. need_choices: require the choice tensors (task
 * data). Returns NULL with mc_error() naming the file. */
tok_set *tok_load(const char *path, int need_choices);
void tok_free(tok_set *s);

/* Add sets[0..n) to key k as inputs named as the workflow names them:
 * "<prefix>.<task>" by each set's task (key_role_names), or, with
 * `bare_one` and one set, "<prefix>". Sets without a key are left out. */
struct mc_key;
void tok_key_inputs(struct mc_key *k, const char *prefix, tok_set *const *sets, int n, int bare_one);

static inline int tok_input_len(const tok_set *s, int64_t i) {
    return (int)(s->input_off[i + 1] - s->input_off[i]);
}
static inline const int *tok_input(const tok_set *s, int64_t i) { return s->input_ids + s->input_off[i]; }
static inline int tok_choice_len(const tok_set *s, int64_t c) {
    return (int)(s->choice_off[c + 1] - s->choice_off[c]);
}
static inline const int *tok_choice(const tok_set *s, int64_t c) { return s->choice_ids + s->choice_off[c]; }

/* Batch buffers for up to maxB encoder rows of maxTe and maxBd decoder rows
 * of maxTd. No allocation after init. */
typedef struct {
    int maxB, maxTe, maxBd, maxTd;
    int *enc, *dec, *tgt, *dec_enc;
    long real_in;     /* the last fill's real encoder tokens (each row's, cut to Te) */
    t5_batch b;
} tok_batch;

void tok_batch_init(tok_batch *tb, int maxB, int maxTe, int maxBd, int maxTd);
void tok_batch_free(tok_batch *tb);
/* Fill tb->b: nenc encoder rows ins[i] (length nins[i]) and ndec decoder
 * rows outs[j] (targets, length nouts[j]); dec_enc (ndec) maps decoder rows
 * to encoder rows (NULL: identity, ndec == nenc). Rows are cut to the
 * limits keeping a final EOS. fixed_Te/fixed_Td > 0 pad to that length
 * instead of the longest row (benchmarks). */
void tok_batch_fill(tok_batch *tb, int nenc, const int *const *ins, const int *nins, int ndec,
                    const int *const *outs, const int *nouts, const int *dec_enc, int fixed_Te,
                    int fixed_Td);

/* Fill tb->b with examples order[e0 .. e0+B-1] of task set s (order NULL:
 * examples e0 .. e0+B-1): each input as an encoder row, as the target its
 * choice pick[i] (NULL: its gold choice, what Grams and the empirical
 * Fisher are measured on). */
void tok_batch_examples(tok_batch *tb, const tok_set *s, const int64_t *order, int64_t e0, int B, const int *pick);

/* Span corruption of tokens[0..L): writes inputs (<= L+1) and targets
 * (<= L+1), returns their lengths. Deterministic in seed. extra_id_0: the
 * first sentinel's id (t5_extra_id_0 of the model's config). */
void tok_span_corrupt(const int *tokens, int L, uint64_t seed, double density, double mean_len,
                      int extra_id_0, int *in, int *nin, int *tgt, int *ntgt);
/* The largest raw chunk length whose corrupted input and target fit
 * max_in / max_tgt (T5's random_spans_helper). */
int tok_span_raw_length(int max_in, int max_tgt, double density, double mean_len);

/* Rank classification of examples [first, first+count) of s: encodes each
 * input once, scores all its choices in one decoder pass (several examples
 * per pass, up to the batch limits of tb). scores: one per choice (indexed
 * like choice_offsets, i.e. scores[c] for global choice c); pred: per
 * example (indexed from `first`), the argmax choice (first on ties). */
void tok_rank(t5_model *m, const tok_set *s, int64_t first, int64_t count, tok_batch *tb,
              float *scores, int *pred);

#endif
