/* f32gemm.h - small float32 matrix products on the calling thread with
 * AVX-512, for the attention's many per-row products (ops.c), which run in
 * parallel on the thread pool, one row of the batch per thread. The BLAS is
 * made for large products on all threads; at 128 x 128 x 64 per head its
 * threads cost more than they give.
 *
 *   C_i = alpha * op(A_i) op(B_i) + beta * C_i,  i in [0, batch)
 *
 * row-major, X_i = X + i * strideX, as be_gemm_sbatched. Every element of C
 * is one float32 sum over k in order (fused multiply-adds), then scaled:
 * the bytes depend on neither the thread count nor where C lies. C is read
 * only when beta != 0. */
#ifndef MC_F32GEMM_H
#define MC_F32GEMM_H

/* 1 if the CPU and the OS offer AVX-512F; the kernel exists only then. */
int f32gemm_available(void);

void f32gemm_local(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                   int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                   float *C, int ldc, long strideC, int batch);

#endif
