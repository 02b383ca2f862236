/* rank.c - rank classification (tokens.h tok_rank, rank.h tok_rank_order:
 * eval batches examples of similar input length together, which pads
 * little). A choice's score is the same, to the bit on the CPU, in any
 * batch and order (t5_batch.pad_invariant). */
#include <stdlib.h>

#include "common.h"
#include "rank.h"

/* pred[ex - pred_base] for example ex */
static void rank_run(t5_model *m, const tok_set *s, const int64_t *order, int64_t first, int64_t count,
                     tok_batch *tb, float *scores, int *pred, int64_t pred_base) {
    const int **ins = mallocCheck(sizeof(int *) * tb->maxB);
    int *nins = mallocCheck(sizeof(int) * tb->maxB);
    const int **outs = mallocCheck(sizeof(int *) * tb->maxBd);
    int *nouts = mallocCheck(sizeof(int) * tb->maxBd);
    int *map = mallocCheck(sizeof(int) * tb->maxBd);
    int64_t *cid = mallocCheck(sizeof(int64_t) * tb->maxBd);
    float *row = mallocCheck(sizeof(float) * tb->maxBd);
    int64_t i = first, end = first + count;
    while (i < end) {
        int ne = 0, nd = 0;
        while (i + ne < end && ne < tb->maxB) {
            int64_t e = order ? order[i + ne] : i + ne;
            int nc = (int)(s->ex_choices[e + 1] - s->ex_choices[e]);
            if (nd + nc > tb->maxBd) {
                if (ne == 0) die("%s: example %lld has %d choices, more than the decoder batch (%d): raise eval.batch_choices",
                                 s->path, (long long)e, nc, tb->maxBd);
                break;
            }
            ins[ne] = tok_input(s, e);
            nins[ne] = tok_input_len(s, e);
            for (int k = 0; k < nc; k++) {
                int64_t c = s->ex_choices[e] + k;
                outs[nd] = tok_choice(s, c);
                nouts[nd] = tok_choice_len(s, c);
                map[nd] = ne;
                cid[nd] = c;
                nd++;
            }
            ne++;
        }
        tok_batch_fill(tb, ne, ins, nins, nd, outs, nouts, map, 0, 0);
        tb->b.pad_invariant = 1; /* a choice's score whatever its batch */
        t5_score(m, &tb->b, row);
        for (int k = 0; k < nd; k++) scores[cid[k]] = row[k];
        for (int e = 0; e < ne; e++) {
            int64_t ex = order ? order[i + e] : i + e, a = s->ex_choices[ex], b = s->ex_choices[ex + 1];
            int best = 0;
            for (int64_t c = a; c < b; c++)
                if (scores[c] > scores[a + best]) best = (int)(c - a);
            pred[ex - pred_base] = best;
        }
        i += ne;
    }
    free(ins);
    free(nins);
    free(outs);
    free(nouts);
    free(map);
    free(cid);
    free(row);
}

void tok_rank(t5_model *m, const tok_set *s, int64_t first, int64_t count, tok_batch *tb,
              float *scores, int *pred) {
    rank_run(m, s, NULL, first, count, tb, scores, pred, first);
}

void tok_rank_order(t5_model *m, const tok_set *s, const int64_t *order, int64_t first, int64_t count,
                    tok_batch *tb, float *scores, int *pred) {
    rank_run(m, s, order, first, count, tb, scores, pred, 0);
}

static const tok_set *order_set; /* qsort has no context argument in C11 */
static int by_length(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    int lx = tok_input_len(order_set, x), ly = tok_input_len(order_set, y);
    return lx != ly ? (lx < ly ? -1 : 1) : (x > y) - (x < y);
}

int64_t *tok_length_order_range(const tok_set *s, int64_t lo, int64_t hi) {
    int64_t *o = mallocCheck(sizeof(int64_t) * (hi - lo + 1));
    for (int64_t e = lo; e < hi; e++) o[e - lo] = e;
    order_set = s;
    qsort(o, (size_t)(hi - lo), sizeof *o, by_length);
    return o;
}

int64_t *tok_length_order(const tok_set *s) { return tok_length_order_range(s, 0, s->n); }
