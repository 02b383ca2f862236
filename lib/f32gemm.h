/* f32gemm.h - our own float32 matrix products, row-major:
 *
 *   C = alpha * op(A) op(B) + beta * C     (op(X) = X or X^T)
 *
 * Two entry points share one contract on the bytes:
 *   - f32gemm_local (f32gemm.c): small products on the calling thread with
 *     AVX-512, for the attention's many per-row products (ops.c), which run
 *     in parallel on the thread pool, one row of the batch per thread;
 *   - f32gemm (f32gemm_blocked.c): the large products (the linears forward
 *     and backward, weight gradients, Gram SYRKs, the merge's CG), packed
 *     and blocked for the caches and split over the thread pool, with an
 *     AVX-512 or an AVX2 + FMA micro-kernel chosen at run time.
 *
 * Every element of C is one float32 sum over k in order, one fused
 * multiply-add per k starting from zero (sums carried across k-blocks are
 * stored and reloaded as float32, which is exact), then x = alpha * sum,
 * then x = fma(beta, C, x) when beta != 0. So the bytes depend on neither
 * the thread count, nor the blocking, nor the vector width: the AVX-512 and
 * AVX2 kernels and f32gemm_local give the same bytes. C is read only when
 * beta != 0, and nothing outside its m x n elements is written. */
#ifndef MC_F32GEMM_H
#define MC_F32GEMM_H

#include <stddef.h>

/* 1 if the CPU and the OS offer AVX-512F; f32gemm_local exists only then. */
int f32gemm_available(void);

void f32gemm_local(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                   int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                   float *C, int ldc, long strideC, int batch);
/* f32gemm_local with the rows of op(A) (transA = 0) and of C in groups:
 * row r of A at A + (r / groupA) * gstrideA + (r % groupA) * lda, and of C
 * likewise (group 0: rows lda or ldc apart, as in f32gemm_local). One
 * product over several batch rows' queries that read the same keys (eval's
 * choices of one input), their outputs laid out row by row of the batch:
 * op(B) is packed once for them all. The bytes of each row's own product. */
void f32gemm_local_groups(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                          int lda, long strideA, int groupA, long gstrideA, const float *B, int ldb,
                          long strideB, float beta, float *C, int ldc, long strideC, int groupC,
                          long gstrideC, int batch);

/* ---- the blocked products ------------------------------------------- */

/* The kernels of the CPU backend's float32 products. */
enum { F32GEMM_OPENBLAS = 0, F32GEMM_AVX2 = 1, F32GEMM_AVX512 = 2 };
/* "openblas" / "avx2" / "avx512" -> F32GEMM_*, else -1 */
int f32gemm_kernel_parse(const char *name);
const char *f32gemm_kernel_name(int kernel);
/* 1 if this CPU (cpuid, with the OS's register state) runs `kernel`. */
int f32gemm_kernel_supported(int kernel);
/* The kernel in use: MATS_GEMM (openblas, avx2, avx512) when set, else the
 * widest this CPU supports (AVX-512F, else AVX2 + FMA, else OpenBLAS). A
 * MATS_GEMM the CPU cannot run, or not one of the three, stops the program
 * with a one-line error. Never read from OpenBLAS's core type. */
int f32gemm_kernel(void);
/* Use `kernel` from now on; -1 with mc_error() when the CPU lacks it. */
int f32gemm_set_kernel(int kernel);

/* C (m x n) = alpha op(A) op(B) + beta C with f32gemm_kernel() (AVX-512 or
 * AVX2; it dies on F32GEMM_OPENBLAS), on the thread pool; local = 1 runs it
 * on the calling thread alone (callable from several threads at once). */
void f32gemm(int local, int transA, int transB, int m, int n, int k, float alpha, const float *A,
             int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* Frozen operands: [p, p + bytes) will not change until f32gemm_thaw(p).
 * Products whose op(B) lies inside it keep its packed panels and reuse
 * them (the bytes of packing again); the model's weights in IA3 training,
 * eval, Fisher and Gram. f32gemm_thaw drops the range and its panels: call
 * it before writing there or freeing it. With MATS_CHECK_FROZEN=1 every
 * reuse re-hashes the source and a change stops the program. Products with
 * local = 1 never use the cache. */
void f32gemm_freeze(const void *p, size_t bytes);
void f32gemm_thaw(const void *p);

/* be_syrk's product: C (n x n) = alpha A^T A + beta C with A (k x n)
 * (trans = 1), or alpha A A^T + beta C with A (n x k) (trans = 0); only the
 * blocks that touch the upper triangle are computed, then the upper
 * triangle is copied onto the lower. Element (i, j), i <= j, has the bytes
 * f32gemm would give it. */
void f32gemm_syrk(int trans, int n, int k, float alpha, const float *A, int lda, float beta, float *C,
                  int ldc);

/* ---- bf16 products without AMX ---------------------------------------- */

/* 1 if the CPU has AVX512_BF16 (vdpbf16ps: AMD Zen 4 and newer, Intel
 * Cooper Lake and Sapphire Rapids or newer). */
int bf16gemm_available(void);
/* f32gemm with the inputs rounded to bfloat16 (nearest even) and the
 * products accumulated in float32 by vdpbf16ps, k in pairs: the rounding
 * contract of the AMX kernel (amx.h), not its bytes. Each element of C is
 * one fixed chain of pair steps over k, so the bytes do not depend on the
 * thread count. */
void bf16gemm(int local, int transA, int transB, int m, int n, int k, float alpha, const float *A,
              int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* 0: bf16gemm packs every operand as the kernel's panels; 1 (default, or
 * MATS_GEMM_BF16_INPLACE unset or not 0): where op(A) = A with k <= 1024 it
 * converts A once per product to bf16 rows that the micro-kernel reads in
 * place instead. The same bytes either way (tests, bench_gemm). Returns the
 * setting before. */
int bf16gemm_set_inplace(int on);

#endif
