/* gpu_impl.cuh - shared internals of backend_cuda.cu and ops_cuda.cu (not a
 * public header: C code includes gpu.h). */
#ifndef MC_GPU_IMPL_CUH
#define MC_GPU_IMPL_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

extern "C" {
#include "common.h"
#include "gpu.h"
}

/* Exit with file:line on any CUDA / cuBLAS error (llm.c's cudaCheck). */
void gpu_fail_cuda_(cudaError_t e, const char *what, const char *file, int line);
void gpu_fail_cublas_(cublasStatus_t s, const char *what, const char *file, int line);
#define cudaCheck(x)                                                                  \
    do {                                                                              \
        cudaError_t e_ = (x);                                                         \
        if (e_ != cudaSuccess) gpu_fail_cuda_(e_, #x, __FILE__, __LINE__);            \
    } while (0)
#define cublasCheck(x)                                                                \
    do {                                                                              \
        cublasStatus_t s_ = (x);                                                      \
        if (s_ != CUBLAS_STATUS_SUCCESS) gpu_fail_cublas_(s_, #x, __FILE__, __LINE__); \
    } while (0)
/* After every kernel launch. */
#define launchCheck() cudaCheck(cudaGetLastError())

/* The stream and cuBLAS handle of the selected device (gpu_init must have
 * run; gpu_ctx() calls it with the default device if not). */
cudaStream_t gpu_stream(void);
cublasHandle_t gpu_cublas(void);

/* Blocks for a grid-stride loop over n elements with `threads` threads. */
static inline int gpu_blocks(long n, int threads) {
    long b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65535L * 16) b = 65535L * 16;
    return (int)b;
}

#endif
