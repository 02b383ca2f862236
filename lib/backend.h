/* backend.h - the one math interface every stage goes through (dense
 * products; the layer ops are ops.h, both behind device.h's table). The CPU backend (backend_cpu.c) uses OpenBLAS; a CUDA backend
 * with the same entry points lives in backend_cuda.cu (built with GPU=1).
 *
 * All matrices are row-major float32. be_gemm computes
 *   C (m x n) = alpha * op(A) (m x k) * op(B) (k x n) + beta * C
 * with op(X) = X or X^T, leading dimensions as in cblas row-major.
 *
 * Stages never call BLAS directly. New entry points are added at the end of
 * each group; existing ones keep their signatures.
 */
#ifndef MC_BACKEND_H
#define MC_BACKEND_H

#include <stddef.h>

/* Threads used by the math library (0 = leave as configured). */
void be_init(int threads);
/* [p, p + bytes) will not change until be_thaw(p): the float32 products
 * whose B operand lies inside keep its packed form (f32gemm_freeze). */
void be_freeze(const void *p, size_t bytes);
void be_thaw(const void *p);
/* MATS_THREADS when set, else `fallback` threads (the stages use 2). */
void be_init_default(int fallback);
int be_threads(void);

void be_gemm(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc);

/* C (n x n) = alpha * A^T A + beta * C where A is (k x n) (trans=1), or
 * alpha * A A^T + beta * C where A is (n x k) (trans=0). Only the upper
 * triangle is computed by BLAS; be_syrk fills in the lower one too. */
void be_syrk(int trans, int n, int k, float alpha, const float *A, int lda, float beta, float *C,
             int ldc);

/* Double-precision helpers for solves (merge). */
void be_dgemm(int transA, int transB, int m, int n, int k, double alpha, const double *A, int lda,
              const double *B, int ldb, double beta, double *C, int ldc);
/* Cholesky factorisation of a symmetric positive-definite n x n matrix in
 * place (upper triangle, row-major). Returns 0, or the order i>0 of the
 * leading minor that is not positive definite. */
int be_dpotrf(int n, double *A, int lda);
/* Solve A X = B for nrhs right-hand sides given be_dpotrf's factor; B is
 * n x nrhs row-major, overwritten by X. */
void be_dpotrs(int n, int nrhs, const double *A, int lda, double *B, int ldb);

float be_dot(long n, const float *x, const float *y);
void be_axpy(long n, float a, const float *x, float *y);

/* ---- strided batches and LAPACK solves ------------------------------ */

/* Strided batched GEMM: for i in [0, batch):
 *   C_i = alpha * op(A_i) * op(B_i) + beta * C_i
 * with X_i = X + i * strideX (in floats). The attention of T5 uses it with
 * batch = heads: head h of a row-major (T, H*K) buffer starts at h*K and has
 * leading dimension H*K, so no copies are needed. cuBLAS:
 * cublasSgemmStridedBatched. */
void be_gemm_sbatched(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                      int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                      float *C, int ldc, long strideC, int batch);

/* Merge: solve A X = B for nrhs right-hand sides given
 * be_dpotrf's factor, with B supplied transposed: Bt is nrhs x n row-major
 * (row j = right-hand side j), overwritten by X^T. No copies. */
void be_dpotrs_t(int n, int nrhs, const double *A, int lda, double *Bt, int ldbt);
/* Eigenvalues (ascending, into w) and eigenvectors of the symmetric n x n
 * A (row-major), in place: on return row j of A is the unit eigenvector of
 * w[j]. Returns 0, or LAPACK's info when it failed to converge. */
int be_dsyevd(int n, double *A, int lda, double *w);

/* ---- CPU product precision ----------------------------------------- */

/* be_gemm and be_gemm_sbatched on the CPU: float32 on our own kernels or
 * OpenBLAS (BE_MATH_FP32, the default; lib/f32gemm.h), or inputs rounded
 * to bfloat16 and products accumulated in float32 on Intel AMX
 * (lib/amx.h) or, without AMX, with AVX512_BF16's vdpbf16ps (BE_MATH_BF16),
 * chosen by `<stage>.cpu_math` or MATS_CPU_MATH (device.h). be_syrk,
 * be_dgemm and the solves stay in full precision. be_set_cpu_math returns
 * 0, or -1 with a one-line mc_error() when bf16 is asked for on a CPU with
 * neither. */
enum { BE_MATH_FP32 = 0, BE_MATH_BF16 = 1 };
int be_math_parse(const char *name); /* "fp32" / "bf16" -> BE_MATH_*, else -1 */
const char *be_math_name(int mode);
int be_set_cpu_math(int mode);
int be_cpu_math(void);
/* be_gemm_sbatched on the calling thread alone, callable from several
 * threads at once (the thread pool's workers, each its own products). With
 * bf16 the same bytes as be_gemm_sbatched; in float32 our own AVX-512
 * kernel (lib/f32gemm.h) where the CPU has it, else the BLAS. ops.c uses it
 * to run the attention's many small per-row products in parallel. */
void be_gemm_sbatched_local(int transA, int transB, int m, int n, int k, float alpha,
                            const float *A, int lda, long strideA, const float *B, int ldb,
                            long strideB, float beta, float *C, int ldc, long strideC, int batch);
/* be_gemm_sbatched_local with the rows of A (transA must be 0) and of C in
 * groups of `group` rows (f32gemm_local_groups): row r of A at A + (r /
 * group) * gstrideA + (r % group) * lda when gstrideA != 0 (else r * lda),
 * of C likewise with gstrideC. m is a multiple of group. One product with
 * op(B) packed once on our AVX-512 float32 kernel; elsewhere one product
 * per group. The bytes of one product per group either way. */
void be_gemm_sbatched_local_groups(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                                   int lda, long strideA, long gstrideA, const float *B, int ldb, long strideB,
                                   float beta, float *C, int ldc, long strideC, long gstrideC, int group,
                                   int batch);
/* be_gemm on the calling thread alone, with be_gemm's bytes: the blocked
 * kernels (f32gemm.h) or bf16's on one thread; callable from several
 * threads at once where be_gemm_local_parallel() (else it is the BLAS's
 * own threads, the same bytes as be_gemm). */
void be_gemm_local(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc);
/* 1 when be_gemm_sbatched_local runs one of our own kernels (bf16 on AMX,
 * or float32 with AVX-512), so that running products in parallel pays; 0
 * when it would be the BLAS. */
int be_gemm_local_parallel(void);
/* The kernel of cpu_math bf16 once set: "amx", "avx512bf16" (vdpbf16ps,
 * where the CPU has no AMX, or MATS_GEMM_BF16=avx512bf16), or "none". */
const char *be_bf16_kernel_name(void);

/* ---- SVD (merge) ---------------------------------------------------- */

/* Thin SVD of the row-major m x n A (destroyed): A = U diag(S) Vt with
 * r = min(m, n), U m x r and Vt r x n row-major (orthonormal columns of U,
 * rows of Vt), S descending (LAPACK dgesdd, divide and conquer; where
 * that does not converge, dgesvd's QR iteration on the same A). Returns
 * 0, or LAPACK's info when neither converged. In backend_svd.c, a file
 * of its own: only the binaries that call it link it, so the other
 * stages' bytes, and with them their cache keys, do not change. */
int be_dgesdd(int m, int n, double *A, double *U, double *S, double *Vt);
/* The same by dgesvd (QR iteration) alone: be_dgesdd's fallback. */
int be_dgesvd(int m, int n, double *A, double *U, double *S, double *Vt);

#endif
