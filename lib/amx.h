/* amx.h - float32 matrix products with bfloat16 inputs on Intel AMX, the
 * CPU backend's `cpu_math = bf16` (backend.h: be_set_cpu_math).
 *
 *   C_i = alpha * op(A_i) op(B_i) + beta * C_i,  i in [0, batch)
 *
 * row-major, X_i = X + i * strideX, as be_gemm_sbatched. The inputs are
 * rounded to bfloat16 (nearest even) and the products accumulated in
 * float32; C is read only when beta != 0. The result does not depend on the
 * number of threads. */
#ifndef MC_AMX_H
#define MC_AMX_H

/* 1 if the CPU has AMX-BF16 and the kernel granted this process the tile
 * state (asked once); 0 otherwise. */
int amx_available(void);
/* Why amx_available() is 0, for an error message. */
const char *amx_unavailable_reason(void);

void amx_gemm_batched(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                      int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                      float *C, int ldc, long strideC, int batch);

/* The same product on the calling thread alone (no thread pool), with that
 * thread's own buffers: for callers that run many small products in
 * parallel themselves. Same bytes as amx_gemm_batched. */
void amx_gemm_local(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                    int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                    float *C, int ldc, long strideC, int batch);

#endif
