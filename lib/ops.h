/* ops.h - the layer functions of the T5 model as forward/backward pairs.
 *
 * Every op works on plain row-major float buffers with explicit dimensions;
 * arguments are ordered outputs, inputs, dimensions (llm.c style). Backward
 * functions ACCUMULATE (+=) into parameter gradients (dw, ds, dtable), so
 * callers zero those once per step. Activation gradients (dx, dq, ...) are
 * accumulated when `acc` is 1 and overwritten when it is 0: the first op
 * that writes a buffer in a backward pass overwrites it, which spares
 * zeroing the whole activation-gradient block (hundreds of MB) every step.
 * A gradient output may be NULL when the caller does not need it (e.g.
 * weight gradients of a frozen base).
 *
 * Shapes in comments: N = tokens (B*T), D = d_model, O/I = out/in features,
 * H = heads, K = d_kv, Tq/Tk = query/key lengths, V = vocabulary.
 *
 * A CUDA backend mirrors exactly this header; matrix products go through
 * be_gemm / be_gemm_sbatched (backend.h), everything else is a C loop.
 */
#ifndef MC_OPS_H
#define MC_OPS_H

#include <stdint.h>

#include "pool.h" /* the loops run on pool_parallel_for */

/* x (n) = 0, in parallel. */
void ops_zero(float *x, long n);
/* Lanes of the elementwise loops (exp, GELU): 16 with AVX-512 where the
 * CPU has it, else 4 (SSE2), 1 without either. Both vector widths give the
 * same bytes; ops_set_simd_lanes(4) lets tests and benchmarks compare
 * (returns -1 for a width this CPU lacks). */
int ops_simd_lanes(void);
int ops_set_simd_lanes(int lanes);
/* Where the attention's products run on one thread a batch row
 * (be_gemm_local_parallel), each row goes from its scores through the
 * softmax to its output at once, its probabilities still in cache (1);
 * ops_set_attention_rows(0) makes each step a pass over the batch, as with
 * OpenBLAS. The same bytes either way; tests compare. Returns the previous
 * setting. */
int ops_set_attention_rows(int on);

/* out (N,D) = table[ids] ; table (V,D). */
void op_embed_forward(float *out, const int *ids, const float *table, int N, int D);
/* dtable (V,D) += scatter(dout (N,D)) by ids. */
void op_embed_backward(float *dtable, const float *dout, const int *ids, int N, int D);

/* T5 RMSNorm: out = x / sqrt(mean(x^2) + eps) * w.
 * out (N,D), rstd (N) saved for backward, x (N,D), w (D). */
void op_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                        float eps);
/* dx (N,D) (+)=, dw (D) += (dw may be NULL). */
void op_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int N, int D, int acc);

/* out (N,O) = x (N,I) W^T, W (O,I). No bias (T5 has none). */
void op_linear_forward(float *out, const float *x, const float *w, int N, int I, int O);
/* dx (N,I) (+)= dout W ; dw (O,I) += dout^T x. Either may be NULL. */
void op_linear_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        int N, int I, int O, int acc);
/* Naive reference of op_linear_forward (tests compare the BLAS path to it). */
void op_linear_forward_naive(float *out, const float *x, const float *w, int N, int I, int O);

/* IA3: out (N,C) = x (N,C) * s (C) (per column). out may alias x only in
 * forward when the caller does not need x again. */
void op_ia3_forward(float *out, const float *x, const float *s, int N, int C);
/* dx (N,C) (+)= dout * s ; ds (C) += sum_n dout * x. Either may be NULL. */
void op_ia3_backward(float *dx, float *ds, const float *dout, const float *x, const float *s,
                     int N, int C, int acc);

/* gelu_new(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))). */
float op_gelu_new(float x);
/* Gated GELU of T5 v1.1: out (N,F) = gelu_new(h0) * h1, all (N,F) flat n = N*F. */
void op_gated_gelu_forward(float *out, const float *h0, const float *h1, long n);
/* dh0 (+)=, dh1 (+)= (n = N*F). */
void op_gated_gelu_backward(float *dh0, float *dh1, const float *dout, const float *h0,
                            const float *h1, long n, int acc);

/* ReLU of the original T5's feed-forward: out (n) = max(x, 0) (out may be x). */
void op_relu_forward(float *out, const float *x, long n);
/* dx (n) (+)= dout where x > 0, else 0 (torch's threshold at 0: the
 * gradient at x = 0 is 0). */
void op_relu_backward(float *dx, const float *dout, const float *x, long n, int acc);

/* HF's _relative_position_bucket for relative position rp = key - query,
 * computed in float32 like PyTorch does. */
int op_relpos_bucket(int rp, int bidirectional, int num_buckets, int max_distance);
/* buckets (Tq,Tk) for queries 0..Tq-1 and keys 0..Tk-1. */
void op_relpos_buckets(int *buckets, int Tq, int Tk, int bidirectional, int num_buckets,
                       int max_distance);
/* bias (H,Tq,Tk) = table[buckets[i,j], h] ; table (NB,H). */
void op_relpos_bias_forward(float *bias, const float *table, const int *buckets, int H, int Tq,
                            int Tk);
/* dtable (NB,H) += scatter of dbias (H,Tq,Tk). */
void op_relpos_bias_backward(float *dtable, const float *dbias, const int *buckets, int H, int Tq,
                             int Tk);

/* Multi-head attention of T5 (no 1/sqrt(K) scaling).
 *   q (B*Tq, H*K) ; k, v (Bk*Tk, H*K) ; out (B*Tq, H*K)
 *   probs (B,H,Tq,Tk) saved for backward
 *   bias (H,Tq,Tk) or NULL: added to every batch row's scores
 *   key_mask (Bk,Tk) or NULL: 0 = padding key, masked out (probability 0)
 *   flags: ATT_CAUSAL, query i sees keys j <= i; ATT_PAD_INVARIANT, a row
 *     whose visible keys are its first v is computed as the unmasked row of
 *     those v keys, to the bit, whatever padding its batch adds (rank
 *     classification; training keeps the summation of its released bytes)
 *   kv_index (B) or NULL: query row b uses key/value row kv_index[b] (eval
 *     scores several choices against one encoded input); NULL = identity.
 * A row whose keys are all masked gets probabilities 0 and output 0. */
enum { ATT_CAUSAL = 1, ATT_PAD_INVARIANT = 2 };
void op_attention_forward(float *out, float *probs, const float *q, const float *k,
                          const float *v, const float *bias, const uint8_t *key_mask,
                          const int *kv_index, int flags, int B, int Tq, int Tk, int H, int K);
/* dq (B*Tq,H*K) (+)=, dk, dv (Bk*Tk,H*K) (+)=, dbias (H,Tq,Tk) += (NULL: skip).
 * scratch (B,H,Tq,Tk) is overwritten. kv_index must be NULL here (the
 * training path never shares encoder rows). */
void op_attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                           const float *dout, const float *q, const float *k, const float *v,
                           const float *probs, int B, int Tq, int Tk, int H, int K, int acc);

/* Cross-entropy: loss (N) = logsumexp(logits[n]) - logits[n, target[n]] for
 * target[n] > 0 (pad = 0 gives loss 0). logits (N,V). lse (N) saved. */
void op_crossentropy_forward(float *loss, float *lse, const float *logits, const int *targets,
                             int N, int V);
/* dlogits (N,V) = weight[n] * (softmax(logits[n]) - onehot(target[n]))
 * (written, not accumulated: it is the start of the backward pass);
 * rows with weight 0 are zeroed. */
void op_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                              const int *targets, const float *weight, int N, int V);

/* y (n) += x (n). */
void op_add_inplace(float *y, const float *x, long n);
/* y (n) = x (n), in parallel. */
void ops_copy(float *y, const float *x, long n);

#endif
