/* stats.h - per-example statistics of the T5 for Fisher merging, RegMean
 * and MaTS (the artifacts fisher_diag, fisher_block and gram).
 *
 * All functions read the activations and activation gradients kept by the
 * last t5_forward + t5_backward(m, b, T5_LOSS_EXAMPLE_MEAN, 1.0) on a batch:
 * with that loss (the sum over rows of each row's mean token loss), the
 * gradient at the tokens of row b is exactly the gradient of example b's own
 * loss, because the examples of a batch never interact. So one batched
 * backward yields every per-example statistic:
 *   - a linear layer's per-example weight gradient is sum_t g_t x_t^T over
 *     the example's tokens (one GEMM over its rows);
 *   - a norm weight's is sum_t dy_t * x_t * rstd_t; the relative-position
 *     table's is the example's dScores scattered by bucket, over all layers;
 *     the shared embedding's is its rows' gradients scattered by id, plus,
 *     for a head tied to it (the original T5, t5.h), the head's g^T x over
 *     the example's decoder tokens (a tied head is not among the linears:
 *     no Gram of its own, and the merge treats shared.weight as it always
 *     does, a non-linear tensor);
 *   - an IA3 vector's is sum_t dy_scaled_t * y_raw_t;
 *   - Gram matrices are SYRK updates over the batch's real (non-pad) rows.
 * Pad tokens contribute nothing: their gradients are exactly zero and Gram
 * updates skip their rows.
 */
#ifndef MC_STATS_H
#define MC_STATS_H

#include <stddef.h>

#include "t5.h"

/* Per-example gradients of every parameter, squared, added to acc
 * (n_params floats, the layout of m->params). scratch: n_params floats.
 * The model must have been built with all_act_grads = 1. */
void st_fisher_diag_full(t5_model *m, float *acc, float *scratch);

/* The same split in two for a model on the GPU: the linear layers' weights
 * (nearly all parameters) on the device, one GEMM and one squaring kernel
 * per example and linear, into acc (n_params floats, device memory) with
 * scratch (st_fisher_linear_scratch_floats, device); everything else (norm
 * weights, position tables, shared embedding) on the host from
 * t5_host_view's copy, into a host acc whose linear entries it leaves
 * untouched. Needs the CUDA backend. */
void st_fisher_linears_dev(const t5_model *m, float *acc, float *scratch);
size_t st_fisher_linear_scratch_floats(const t5_model *m);
void st_fisher_diag_nonlinear(t5_model *m, float *acc, float *scratch);

/* Per-example IA3 gradients of the last batch: E (B, n_ia3), row b the
 * gradient of example b's loss with respect to all IA3 vectors. */
void st_ia3_example_grads(const t5_model *m, float *E);
/* acc (n) += sum over rows of E (B, n) squared. */
void st_diag_accum(const float *E, int B, size_t n, float *acc);
/* blocks[i] (d_i, d_i) += sum over rows b of e_b e_b^T restricted to IA3
 * tensor i (SYRK over the batch). E and blocks are memory of m's device
 * (on cuda: E uploaded, the SYRKs on the GPU). */
void st_ia3_block_accum(const t5_model *m, const float *E, int B, float **blocks);
/* st_diag_accum on the GPU: E and acc device memory (m gives the device).
 * Needs the CUDA backend. */
void st_diag_accum_dev(const t5_model *m, const float *E, int B, size_t n, float *acc);

/* Gram accumulators of one linear layer. */
typedef struct {
    char name[96];              /* the weight's name, "X.weight" */
    int in, out, stream;
    float *in_gram;             /* (in, in) sum over real tokens of x x^T */
    float *out_gram;            /* (out, out) sum of g g^T; NULL for lm_head */
    const struct mc_ops *ops;   /* device of the two matrices (the model's) */
} st_gram;

/* Allocate zeroed accumulators for every linear of m (count in *n), in the
 * memory of m's device: on cuda the whole accumulation (row compaction and
 * SYRK) runs there. */
st_gram *st_gram_new(const t5_model *m, int *n);
void st_gram_free(st_gram *g, int n);
/* Input Grams only, of the linears keep() accepts: frees every output
 * Gram and the other input Grams (NULL; st_gram_accum skips them). */
void st_gram_keep(st_gram *g, int n, int (*keep)(const char *name, void *ctx), void *ctx);
/* Bring device accumulators to host memory (a no-op on the CPU). */
void st_gram_to_host(st_gram *g, int n);
/* Add the last batch's real tokens; counts of real encoder / decoder tokens
 * are added to *n_enc, *n_dec. scratch: rows x max(in,out) floats for the
 * largest stream of the batch (st_gram_scratch_floats), memory of m's
 * device. */
void st_gram_accum(const t5_model *m, st_gram *g, int n, float *scratch, long *n_enc, long *n_dec);
size_t st_gram_scratch_floats(const t5_model *m);

#endif
