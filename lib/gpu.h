/* gpu.h - the CUDA backend of mats-c (docs/gpu.md), callable from C.
 *
 * Built only with `make GPU=1` (lib/backend_cuda.cu, lib/ops_cuda.cu). C code
 * that may be built either way includes this header and tests MC_GPU, or goes
 * through device.h, which compiles without CUDA.
 *
 * Memory. Every float / int / uint8_t pointer argument of a gpu_* function is
 * a DEVICE pointer (from gpu_malloc) unless its comment says "host". Work is
 * queued on one CUDA stream in call order; gpu_download and gpu_sync wait for
 * it. Nothing here is thread-safe: one host thread drives the device.
 *
 * Errors. A CUDA or cuBLAS failure is a programming or environment error: it
 * prints "PROG: file:line: what" and exits (cudaCheck / cublasCheck, llm.c
 * style). The only recoverable failure is gpu_init finding no usable device,
 * which returns -1 with mc_error() set.
 *
 * Ops. gpu_<op> mirrors op_<op> of ops.h one to one: same arguments in the
 * same order, same semantics, device pointers. Backwards accumulate (+=)
 * into parameter gradients (dw, ds, dtable, dbias); activation gradients
 * (dx, dq, dk, dv, dh0, dh1) are accumulated when the last argument `acc`
 * is 1 and overwritten when it is 0 (the old contents are never read, so
 * they may be garbage, even NaN). NULL gradient outputs are skipped. The
 * few host-side arguments are marked.
 *
 * Precision. Matrix products run in FP32 by default. gpu_set_math selects
 * TF32 tensor cores (cuBLAS CUBLAS_COMPUTE_32F_FAST_TF32 on the FP32
 * buffers) or BF16: the operands are rounded to bfloat16 into staging
 * buffers and multiplied with FP32 accumulation into the FP32 output. No
 * caller buffer changes type. Everything else (kernels, reductions) is FP32
 * with FP32 or FP64 accumulators.
 */
#ifndef MC_GPU_H
#define MC_GPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct optim; /* optim.h: gpu_opt_step reads it, this header needs only the name */

/* ------------------------------------------------------------ device */

/* 1 if a CUDA device can be used (the runtime finds at least one), else 0.
 * Never exits; safe to call before gpu_init. */
int gpu_available(void);
/* Select device `index` (-1: $MATS_GPU or 0), create the stream and the
 * cuBLAS handle. Idempotent. -1 with mc_error() when no device works. */
int gpu_init(int index);
/* Destroy handles and free the workspace (buffers from gpu_malloc stay the
 * caller's to free before this). */
void gpu_shutdown(void);
/* Name and memory of the selected device ("NVIDIA H100 80GB HBM3"); owned
 * by the library. */
const char *gpu_device_name(void);
size_t gpu_device_memory(void);
/* Wait for all queued work. */
void gpu_sync(void);

enum { GPU_MATH_FP32 = 0, GPU_MATH_TF32 = 1, GPU_MATH_BF16 = 2 };
/* Precision of matrix products (see the top of this file). */
void gpu_set_math(int mode);
int gpu_math(void);
/* "fp32" / "tf32" / "bf16" -> GPU_MATH_*, -1 for anything else. */
int gpu_math_parse(const char *s);
const char *gpu_math_name(int mode);

/* ------------------------------------------------------------ memory */

/* Device allocation; exits with file:line on failure. gpu_malloc(0) gives
 * NULL. The caller owns the buffer and frees it with gpu_free. */
void *gpu_malloc_(size_t bytes, const char *file, int line);
#define gpu_malloc(n) gpu_malloc_((n), __FILE__, __LINE__)
void gpu_free(void *p);
/* Copies (synchronous with respect to the host for downloads). */
void gpu_upload(void *dst, const void *host_src, size_t bytes);
void gpu_download(void *host_dst, const void *src, size_t bytes);
void gpu_copy(void *dst, const void *src, size_t bytes); /* ops_copy's mirror, in bytes */
void gpu_memset0(void *p, size_t bytes);  /* also the mirror of ops.h's ops_zero */

/* ------------------------------------------------------------ BLAS (backend.h) */

/* Same contracts as be_* in backend.h, on device pointers. */
void gpu_gemm(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void gpu_gemm_sbatched(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                       int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                       float *C, int ldc, long strideC, int batch);
/* Both triangles of C are written, exactly symmetric. */
void gpu_syrk(int trans, int n, int k, float alpha, const float *A, int lda, float beta, float *C,
              int ldc);
void gpu_dgemm(int transA, int transB, int m, int n, int k, double alpha, const double *A, int lda,
               const double *B, int ldb, double beta, double *C, int ldc);
/* Sum in double, returned to the host (waits). */
double gpu_dot(long n, const float *x, const float *y);
void gpu_axpy(long n, float a, const float *x, float *y);
/* x *= a */
void gpu_scale(long n, float a, float *x);

/* x (n) = value ; x (n) = std * N(0,1) from a counter-based hash of (seed, i)
 * (same values for the same seed on every device; not the CPU's mc_rng). */
void gpu_fill(float *x, long n, float value);
void gpu_fill_normal(float *x, long n, float std, uint64_t seed);

/* ------------------------------------------------------------ T5 ops (ops.h) */

void gpu_embed_forward(float *out, const int *ids, const float *table, int N, int D);
void gpu_embed_backward(float *dtable, const float *dout, const int *ids, int N, int D);
void gpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                         float eps);
void gpu_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int D, int acc);
void gpu_linear_forward(float *out, const float *x, const float *w, int N, int I, int O);
void gpu_linear_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         int N, int I, int O, int acc);
void gpu_ia3_forward(float *out, const float *x, const float *s, int N, int C);
void gpu_ia3_backward(float *dx, float *ds, const float *dout, const float *x, const float *s,
                      int N, int C, int acc);
void gpu_gated_gelu_forward(float *out, const float *h0, const float *h1, long n);
void gpu_gated_gelu_backward(float *dh0, float *dh1, const float *dout, const float *h0,
                             const float *h1, long n, int acc);
void gpu_relu_forward(float *out, const float *x, long n);
void gpu_relu_backward(float *dx, const float *dout, const float *x, long n, int acc);
/* buckets: device (Tq,Tk); computed on the host with op_relpos_bucket (so
 * bucket boundaries match the CPU bit for bit) and uploaded. */
void gpu_relpos_buckets(int *buckets, int Tq, int Tk, int bidirectional, int num_buckets,
                        int max_distance);
void gpu_relpos_bias_forward(float *bias, const float *table, const int *buckets, int H, int Tq,
                             int Tk);
void gpu_relpos_bias_backward(float *dtable, const float *dbias, const int *buckets, int H,
                              int Tq, int Tk);
/* kv_index: HOST array (B) or NULL. It chooses which matrices are multiplied,
 * a host-side decision; everything else is on the device. */
void gpu_attention_forward(float *out, float *probs, const float *q, const float *k,
                           const float *v, const float *bias, const uint8_t *key_mask,
                           const int *kv_index, int flags, int B, int Tq, int Tk, int H, int K);
void gpu_attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                            const float *dout, const float *q, const float *k, const float *v,
                            const float *probs, int B, int Tq, int Tk, int H, int K, int acc);
void gpu_crossentropy_forward(float *loss, float *lse, const float *logits, const int *targets,
                              int N, int V);
void gpu_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                               const int *targets, const float *weight, int N, int V);
void gpu_add_inplace(float *y, const float *x, long n);

/* ------------------------------------------------------------ optimizers */

/* AdamW with the arithmetic of optim.c (torch.optim.AdamW): for each i
 *   g = grad[i] * grad_scale ; p *= 1 - lr wd (if wd != 0)
 *   m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
 *   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * t is the 1-based step number. */
void gpu_adamw_step(float *p, float *m, float *v, const float *grad, long n, float lr, float b1,
                    float b2, float eps, float wd, float grad_scale, int t);

/* Adafactor (HF transformers, relative_step=False, beta1=None), as optim.c,
 * for one tensor of rows x cols. Matrices (vr != NULL) keep factored moments
 * vr (rows) and vc (cols); vectors (vr == NULL, rows = 1) keep v (cols):
 *   rho = 1 - t^decay_rate ; g2 = g^2 + eps1
 *   vr = rho vr + (1-rho) mean_cols(g2) ; vc = rho vc + (1-rho) mean_rows(g2)
 *   u = g / sqrt(vr_r / mean(vr)) / sqrt(vc_c)      (vector: u = g / sqrt(v))
 *   lr' = lr max(eps2, rms(p)) if scale_parameter
 *   p -= lr' wd p (wd != 0) ; p -= lr' u / max(1, rms(u) / clip)
 * `work` holds rows*cols floats. */
void gpu_adafactor_step(float *p, float *vr, float *vc, float *v, float *work, const float *grad,
                        int rows, int cols, float lr, float eps1, float clip, float decay_rate,
                        float wd, int scale_parameter, float eps2, int t);

/* opt_step of optim.h on the device: params, grads (o->n floats) and state
 * (o->n_state floats, optim.c's layout) are device buffers; scratch holds
 * the largest tensor (Adafactor). o->step advances as in opt_step. */
void gpu_opt_step(struct optim *o, float *params, const float *grads, float *state, float *scratch);

/* ------------------------------------------------------------ statistics */

/* Fisher / Gram accumulation: C (n x n) += alpha * X^T X for X (k x n) rows
 * (tokens or examples) of leading dimension ldx. Both triangles. */
void gpu_gram_accumulate(float *C, const float *X, int k, int n, int ldx, float alpha);
/* Diagonal Fisher: f (n) += alpha * g (n)^2 elementwise. */
void gpu_sq_accumulate(float *f, const float *g, long n, float alpha);

/* ------------------------------------------------------------ merge (CG operators) */

/* K-FAC operator of merge.h in W-space: W (out x in) -> sum_i G_i W A_i over
 * N pairs (A_i input Gram in x in, G_i output-gradient Gram out x out), with
 * two cuBLAS calls per application and no copies:
 *   Qs = [W A_1; ...; W A_N]       one strided-batched GEMM (N x out x in)
 *   Y  = [G_1 ... G_N] Qs          one GEMM with k = N*out
 * A is kept as N stacked in x in blocks, G as Gcat (out x N*out). */
typedef struct {
    int N, out, in;
    float *A;    /* device, N x in x in */
    float *Gcat; /* device, out x N*out */
    float *Qs;   /* device, N*out x in work */
    float *x, *y; /* device, out x in each: staging for gpu_kfac_apply_host */
} gpu_kfac;
void gpu_kfac_init(gpu_kfac *K, int N, int out, int in);
/* Upload pair i (A, G: HOST, row-major) with the off-diagonal scale lambda
 * applied on the device: M~ = lambda M + (1 - lambda) diag(M). */
void gpu_kfac_set(gpu_kfac *K, int i, const float *A_host, const float *G_host, float lambda);
/* Upload all pairs at once from merge.h's concatenated HOST layout (already
 * lambda-scaled): Acat (in x N*in) = [A_1 ... A_N], Gcat (out x N*out). */
void gpu_kfac_upload_cat(gpu_kfac *K, const float *Acat_host, const float *Gcat_host);
void gpu_kfac_free(gpu_kfac *K);
/* Y = sum_i G_i W A_i (device pointers). */
void gpu_kfac_apply(const gpu_kfac *K, const float *W, float *Y);
/* The same with HOST W and Y (upload, apply, download): a drop-in for the
 * apply callback of merge.h's mrg_op. */
void gpu_kfac_apply_host(const gpu_kfac *K, const float *W_host, float *Y_host);
double gpu_kfac_flops(const gpu_kfac *K);

/* Blockwise Fisher operator (IA3): nb independent blocks of dimension d,
 * y_b = S_b x_b with S_b (d x d) = sum_i F_{i,b} (the caller sums the
 * lambda-scaled per-model Fisher blocks once, with gpu_axpy).
 * S: nb x d x d, x, y: nb x d. One strided-batched GEMM. */
void gpu_blockfisher_apply(const float *S, const float *x, float *y, int nb, int d);

/* y = d .* x (diagonal Fisher operator). */
void gpu_diag_apply(const float *d, const float *x, float *y, long n);

/* Conjugate gradient on the device, the algorithm of merge.h's mrg_cg
 * (same stopping rules and status codes: 0 max iterations, 1 converged,
 * 2 breakdown), without preconditioner. apply(ctx, x, y) computes y = A x
 * on device vectors. b, x: device (x in: x0, out: solution). Work: 3n
 * floats allocated here. */
typedef void (*gpu_apply_fn)(const void *ctx, const float *x, float *y);
typedef struct {
    int iterations, status;
    double b_norm, initial_residual, final_residual, seconds;
} gpu_cg_result;
void gpu_cg(gpu_apply_fn apply, const void *ctx, long n, const float *b, float *x, int maxit,
            double tol, gpu_cg_result *res);

#ifdef __cplusplus
}
#endif

#endif
