/* backend_cuda.cu - the CUDA backend of backend.h: device selection, memory,
 * cuBLAS products, reductions, and the linear operators and CG of the merge
 * stage (gpu.h). Built only with `make GPU=1`.
 *
 * Row-major through column-major cuBLAS (the transpose trick, used by every
 * product below). A row-major r x c matrix X with leading dimension ld is, byte
 * for byte, the column-major c x r matrix X^T with the same ld. We want the
 * row-major product
 *     C (m x n) = op(A) (m x k) * op(B) (k x n).
 * Read column-major, the buffer of C holds C^T (n x m), and
 *     C^T = op(B)^T * op(A)^T.
 * The column-major view of B's buffer is B^T, so op(B)^T is that view taken
 * as-is when op(B) = B (CUBLAS_OP_N) and transposed when op(B) = B^T
 * (CUBLAS_OP_T); likewise for A. Hence
 *     be_gemm(tA, tB, m, n, k, A, lda, B, ldb, C, ldc)
 *   = cublasGemm(op(tB), op(tA), n, m, k, B, ldb, A, lda, C, ldc)
 * with the SAME transpose flags, the operands swapped and m, n swapped; the
 * leading dimensions carry over unchanged. Strided batched products apply the
 * same rule to every batch entry. For SYRK, row-major C = A^T A with A (k x n)
 * is, column-major, X X^T with X = A's view (n x k): CUBLAS_OP_N; and
 * C = A A^T with A (n x k) is X^T X with X (k x n): CUBLAS_OP_T. The
 * column-major lower triangle is the row-major upper one.
 */
#include "gpu_impl.cuh"

#include <cuda_bf16.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------ errors */

void gpu_fail_cuda_(cudaError_t e, const char *what, const char *file, int line) {
    die("%s:%d: CUDA error %s (%s) in %s", file, line, cudaGetErrorName(e), cudaGetErrorString(e),
        what);
}

void gpu_fail_cublas_(cublasStatus_t s, const char *what, const char *file, int line) {
    die("%s:%d: cuBLAS error %s (%s) in %s", file, line, cublasGetStatusName(s),
        cublasGetStatusString(s), what);
}

/* ------------------------------------------------------------ context */

static struct {
    int ready;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    int math;
    char name[256];
    size_t memory;
    double *partials; /* device, GPU_RED_BLOCKS doubles: reduction scratch */
    double *host_partials; /* pinned, GPU_RED_BLOCKS */
} G;

#define GPU_RED_BLOCKS 256
#define GPU_RED_THREADS 256

int gpu_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* clear the sticky "no driver" error */
        return 0;
    }
    return n > 0;
}

int gpu_init(int index) {
    if (G.ready) return 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        cudaGetLastError();
        return mc_fail("DEVICE=cuda: no CUDA device found (%s); use DEVICE=cpu",
                       e != cudaSuccess ? cudaGetErrorString(e) : "device count 0");
    }
    if (index < 0) {
        const char *s = getenv("MATS_GPU");
        index = s && *s ? atoi(s) : 0;
    }
    if (index < 0 || index >= n)
        return mc_fail("MATS_GPU=%d: only %d CUDA device(s) present (0..%d)", index, n, n - 1);
    cudaDeviceProp prop;
    cudaCheck(cudaSetDevice(index));
    cudaCheck(cudaGetDeviceProperties(&prop, index));
    G.device = index;
    snprintf(G.name, sizeof G.name, "%s", prop.name);
    G.memory = prop.totalGlobalMem;
    cudaCheck(cudaStreamCreateWithFlags(&G.stream, cudaStreamNonBlocking));
    cublasCheck(cublasCreate(&G.blas));
    cublasCheck(cublasSetStream(G.blas, G.stream));
    cublasCheck(cublasSetPointerMode(G.blas, CUBLAS_POINTER_MODE_HOST));
    cudaCheck(cudaMalloc(&G.partials, sizeof(double) * GPU_RED_BLOCKS));
    cudaCheck(cudaMallocHost(&G.host_partials, sizeof(double) * GPU_RED_BLOCKS));
    G.ready = 1;
    return 0;
}

static void ensure_init(void) {
    if (!G.ready && gpu_init(-1) < 0) die("%s", mc_error());
}

void gpu_shutdown(void) {
    if (!G.ready) return;
    cudaStreamSynchronize(G.stream);
    cudaFree(G.partials);
    cudaFreeHost(G.host_partials);
    cublasDestroy(G.blas);
    cudaStreamDestroy(G.stream);
    memset(&G, 0, sizeof G);
}

const char *gpu_device_name(void) {
    ensure_init();
    return G.name;
}

size_t gpu_device_memory(void) {
    ensure_init();
    return G.memory;
}

cudaStream_t gpu_stream(void) {
    ensure_init();
    return G.stream;
}

cublasHandle_t gpu_cublas(void) {
    ensure_init();
    return G.blas;
}

void gpu_sync(void) { cudaCheck(cudaStreamSynchronize(gpu_stream())); }

void gpu_set_math(int mode) {
    if (mode < GPU_MATH_FP32 || mode > GPU_MATH_BF16) die("gpu_set_math: unknown mode %d", mode);
    G.math = mode;
}

int gpu_math(void) { return G.math; }

int gpu_math_parse(const char *s) {
    if (!s) return -1;
    if (!strcmp(s, "fp32")) return GPU_MATH_FP32;
    if (!strcmp(s, "tf32")) return GPU_MATH_TF32;
    if (!strcmp(s, "bf16")) return GPU_MATH_BF16;
    return -1;
}

const char *gpu_math_name(int mode) {
    return mode == GPU_MATH_TF32 ? "tf32" : mode == GPU_MATH_BF16 ? "bf16" : "fp32";
}

/* fp32 and tf32 run on the FP32 operands; bf16 converts them first (below). */
static cublasComputeType_t compute_type(void) {
    return G.math == GPU_MATH_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
}

/* ------------------------------------------------------------ memory */

void *gpu_malloc_(size_t bytes, const char *file, int line) {
    ensure_init();
    if (bytes == 0) return NULL;
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess)
        die("%s:%d: cudaMalloc of %zu bytes failed (%s); free device memory or use a smaller "
            "batch",
            file, line, bytes, cudaGetErrorString(e));
    return p;
}

void gpu_free(void *p) {
    if (p) cudaCheck(cudaFree(p));
}

void gpu_upload(void *dst, const void *host_src, size_t bytes) {
    if (!bytes) return;
    cudaCheck(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, gpu_stream()));
    /* host_src may be pageable and reused by the caller right away */
    cudaCheck(cudaStreamSynchronize(G.stream));
}

void gpu_download(void *host_dst, const void *src, size_t bytes) {
    if (!bytes) return;
    cudaCheck(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, gpu_stream()));
    cudaCheck(cudaStreamSynchronize(G.stream));
}

void gpu_copy(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    cudaCheck(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, gpu_stream()));
}

void gpu_memset0(void *p, size_t bytes) {
    if (!bytes) return;
    cudaCheck(cudaMemsetAsync(p, 0, bytes, gpu_stream()));
}

/* ------------------------------------------------------------ BLAS */

static cublasOperation_t op_of(int t) { return t ? CUBLAS_OP_T : CUBLAS_OP_N; }

/* BF16 mode: the operands are rounded to bfloat16 into two staging buffers
 * (grown on demand, kept until exit) and multiplied by cuBLAS with FP32
 * accumulation and FP32 output (CUBLAS_COMPUTE_32F, A/B CUDA_R_16BF). The
 * FAST_16BF compute type on FP32 operands gave bit-identical results to
 * FAST_TF32 on an H100 with cuBLAS 13.0, so it is not used. */
static __nv_bfloat16 *bf_buf[2];
static long bf_cap[2];

__global__ static void to_bf16_kernel(__nv_bfloat16 *dst, const float *src, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        dst[i] = __float2bfloat16_rn(src[i]);
}

/* Elements spanned by `batch` row-major rows x cols matrices of leading
 * dimension ld, `stride` apart: only these are read (never past the end). */
static long span(int rows, int cols, int ld, long stride, int batch) {
    long s = (long)(rows - 1) * ld + cols;
    if (batch > 1 && stride > 0) s += stride * (batch - 1);
    return s;
}

static const __nv_bfloat16 *to_bf16(int slot, const float *src, long n) {
    if (n > bf_cap[slot]) {
        cudaCheck(cudaStreamSynchronize(G.stream)); /* the old buffer may be in use */
        cudaCheck(cudaFree(bf_buf[slot]));
        cudaCheck(cudaMalloc(&bf_buf[slot], sizeof(__nv_bfloat16) * (size_t)n));
        bf_cap[slot] = n;
    }
    to_bf16_kernel<<<gpu_blocks(n, 256), 256, 0, G.stream>>>(bf_buf[slot], src, n);
    launchCheck();
    return bf_buf[slot];
}

void gpu_gemm(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    gpu_gemm_sbatched(transA, transB, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

void gpu_gemm_sbatched(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                       int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                       float *C, int ldc, long strideC, int batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    cublasHandle_t h = gpu_cublas();
    const void *a = A, *b = B;
    cudaDataType_t ab = CUDA_R_32F;
    if (G.math == GPU_MATH_BF16 && k > 0) {
        a = to_bf16(0, A, span(transA ? k : m, transA ? m : k, lda, strideA, batch));
        b = to_bf16(1, B, span(transB ? n : k, transB ? k : n, ldb, strideB, batch));
        ab = CUDA_R_16BF;
    }
    /* see the top of this file: operands and m/n swapped, flags kept */
    if (batch == 1)
        cublasCheck(cublasGemmEx(h, op_of(transB), op_of(transA), n, m, k, &alpha, b, ab, ldb, a, ab,
                                 lda, &beta, C, CUDA_R_32F, ldc, compute_type(), CUBLAS_GEMM_DEFAULT));
    else
        cublasCheck(cublasGemmStridedBatchedEx(h, op_of(transB), op_of(transA), n, m, k, &alpha, b,
                                               ab, ldb, strideB, a, ab, lda, strideA, &beta, C,
                                               CUDA_R_32F, ldc, strideC, batch, compute_type(),
                                               CUBLAS_GEMM_DEFAULT));
}

/* Copy the row-major upper triangle onto the lower one. */
__global__ static void mirror_upper_kernel(float *C, int n, int ldc) {
    long total = (long)n * n;
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < total;
         idx += (long)gridDim.x * blockDim.x) {
        int i = (int)(idx / n), j = (int)(idx % n);
        if (j < i) C[(size_t)i * ldc + j] = C[(size_t)j * ldc + i];
    }
}

void gpu_syrk(int trans, int n, int k, float alpha, const float *A, int lda, float beta, float *C,
              int ldc) {
    if (n <= 0) return;
    if (G.math == GPU_MATH_FP32) {
        /* column-major lower = row-major upper (top of file) */
        cublasCheck(cublasSsyrk(gpu_cublas(), CUBLAS_FILL_MODE_LOWER, trans ? CUBLAS_OP_N : CUBLAS_OP_T,
                                n, k, &alpha, A, lda, &beta, C, ldc));
    } else {
        /* Tensor-core modes: a full GEMM (cuBLAS has no fast-math SYRK), then
         * the upper triangle is mirrored so C stays exactly symmetric. */
        gpu_gemm(trans, !trans, n, n, k, alpha, A, lda, A, lda, beta, C, ldc);
    }
    mirror_upper_kernel<<<gpu_blocks((long)n * n, 256), 256, 0, G.stream>>>(C, n, ldc);
    launchCheck();
}

void gpu_dgemm(int transA, int transB, int m, int n, int k, double alpha, const double *A, int lda,
               const double *B, int ldb, double beta, double *C, int ldc) {
    if (m <= 0 || n <= 0) return;
    cublasCheck(cublasDgemm(gpu_cublas(), op_of(transB), op_of(transA), n, m, k, &alpha, B, ldb, A,
                            lda, &beta, C, ldc));
}

/* ------------------------------------------------------------ reductions */

/* Block sum of a double into out[blockIdx.x]; blockDim.x == GPU_RED_THREADS. */
__device__ static void block_sum_store(double s, double *out) {
    __shared__ double sh[GPU_RED_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
    if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = s;
    __syncthreads();
    if (threadIdx.x < 32) {
        s = threadIdx.x < GPU_RED_THREADS / 32 ? sh[threadIdx.x] : 0.0;
        for (int o = 16; o > 0; o >>= 1) s += __shfl_down_sync(0xffffffffu, s, o);
        if (threadIdx.x == 0) out[blockIdx.x] = s;
    }
}

__global__ static void dot_kernel(double *partials, const float *x, const float *y, long n) {
    double s = 0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        s += (double)x[i] * y[i];
    block_sum_store(s, partials);
}

/* The fixed grid and the fixed order of the final host sum make the result
 * the same bytes on every run. */
static double finish_partials(void) {
    cudaCheck(cudaMemcpyAsync(G.host_partials, G.partials, sizeof(double) * GPU_RED_BLOCKS,
                              cudaMemcpyDeviceToHost, G.stream));
    cudaCheck(cudaStreamSynchronize(G.stream));
    double s = 0;
    for (int i = 0; i < GPU_RED_BLOCKS; i++) s += G.host_partials[i];
    return s;
}

double gpu_dot(long n, const float *x, const float *y) {
    ensure_init();
    dot_kernel<<<GPU_RED_BLOCKS, GPU_RED_THREADS, 0, G.stream>>>(G.partials, x, y, n);
    launchCheck();
    return finish_partials();
}

__global__ static void axpy_kernel(long n, float a, const float *x, float *y) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] += a * x[i];
}

void gpu_axpy(long n, float a, const float *x, float *y) {
    if (n <= 0) return;
    axpy_kernel<<<gpu_blocks(n, 256), 256, 0, gpu_stream()>>>(n, a, x, y);
    launchCheck();
}

__global__ static void scale_kernel(long n, float a, float *x) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        x[i] *= a;
}

void gpu_scale(long n, float a, float *x) {
    if (n <= 0) return;
    scale_kernel<<<gpu_blocks(n, 256), 256, 0, gpu_stream()>>>(n, a, x);
    launchCheck();
}

__global__ static void fill_kernel(float *x, long n, float v) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        x[i] = v;
}

void gpu_fill(float *x, long n, float value) {
    if (n <= 0) return;
    fill_kernel<<<gpu_blocks(n, 256), 256, 0, gpu_stream()>>>(x, n, value);
    launchCheck();
}

__device__ static inline uint64_t mix64(uint64_t z) { /* splitmix64 finaliser */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Box-Muller on two 24-bit uniforms from one hash of (seed, i). */
__global__ static void fill_normal_kernel(float *x, long n, float std, uint64_t seed) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        uint64_t h = mix64(seed * 0x9e3779b97f4a7c15ULL + (uint64_t)i);
        float u1 = ((float)(h >> 40) + 0.5f) * (1.0f / 16777216.0f);
        float u2 = (float)((h >> 16) & 0xffffff) * (1.0f / 16777216.0f);
        x[i] = std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
    }
}

void gpu_fill_normal(float *x, long n, float std, uint64_t seed) {
    if (n <= 0) return;
    fill_normal_kernel<<<gpu_blocks(n, 256), 256, 0, gpu_stream()>>>(x, n, std, seed);
    launchCheck();
}

/* ------------------------------------------------------------ statistics */

void gpu_gram_accumulate(float *C, const float *X, int k, int n, int ldx, float alpha) {
    gpu_syrk(1, n, k, alpha, X, ldx, 1.0f, C, n);
}

__global__ static void sq_acc_kernel(float *f, const float *g, long n, float alpha) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        f[i] += alpha * g[i] * g[i];
}

void gpu_sq_accumulate(float *f, const float *g, long n, float alpha) {
    if (n <= 0) return;
    sq_acc_kernel<<<gpu_blocks(n, 256), 256, 0, gpu_stream()>>>(f, g, n, alpha);
    launchCheck();
}

/* ------------------------------------------------------------ K-FAC operator */

void gpu_kfac_init(gpu_kfac *K, int N, int out, int in) {
    K->N = N;
    K->out = out;
    K->in = in;
    K->A = (float *)gpu_malloc(sizeof(float) * (size_t)N * in * in);
    K->Gcat = (float *)gpu_malloc(sizeof(float) * (size_t)out * N * out);
    K->Qs = (float *)gpu_malloc(sizeof(float) * (size_t)N * out * in);
    K->x = (float *)gpu_malloc(sizeof(float) * (size_t)out * in);
    K->y = (float *)gpu_malloc(sizeof(float) * (size_t)out * in);
}

/* M (n x n, row stride ld) <- lambda M + (1 - lambda) diag(M). */
__global__ static void scale_offdiag_kernel(float *M, int n, int ld, float lambda) {
    long total = (long)n * n;
    for (long idx = blockIdx.x * (long)blockDim.x + threadIdx.x; idx < total;
         idx += (long)gridDim.x * blockDim.x) {
        int i = (int)(idx / n), j = (int)(idx % n);
        if (i != j) M[(size_t)i * ld + j] *= lambda;
    }
}

void gpu_kfac_set(gpu_kfac *K, int i, const float *A_host, const float *G_host, float lambda) {
    int N = K->N, out = K->out, in = K->in;
    if (i < 0 || i >= N) die("gpu_kfac_set: pair %d out of range 0..%d", i, N - 1);
    float *Ai = K->A + (size_t)i * in * in;
    gpu_upload(Ai, A_host, sizeof(float) * (size_t)in * in);
    /* G_i goes to columns [i*out, (i+1)*out) of Gcat: a pitched copy */
    float *Gi = K->Gcat + (size_t)i * out;
    cudaCheck(cudaMemcpy2DAsync(Gi, sizeof(float) * (size_t)N * out, G_host, sizeof(float) * out,
                                sizeof(float) * out, out, cudaMemcpyHostToDevice, gpu_stream()));
    if (lambda != 1.0f) {
        scale_offdiag_kernel<<<gpu_blocks((long)in * in, 256), 256, 0, G.stream>>>(Ai, in, in, lambda);
        launchCheck();
        scale_offdiag_kernel<<<gpu_blocks((long)out * out, 256), 256, 0, G.stream>>>(Gi, out, N * out, lambda);
        launchCheck();
    }
    gpu_sync();
}

void gpu_kfac_upload_cat(gpu_kfac *K, const float *Acat_host, const float *Gcat_host) {
    int N = K->N, out = K->out, in = K->in;
    /* column block i of Acat (row pitch N*in) -> the i-th stacked in x in block */
    for (int i = 0; i < N; i++)
        cudaCheck(cudaMemcpy2DAsync(K->A + (size_t)i * in * in, sizeof(float) * in, Acat_host + (size_t)i * in,
                                    sizeof(float) * (size_t)N * in, sizeof(float) * in, in,
                                    cudaMemcpyHostToDevice, gpu_stream()));
    gpu_upload(K->Gcat, Gcat_host, sizeof(float) * (size_t)out * N * out);
}

void gpu_kfac_free(gpu_kfac *K) {
    gpu_free(K->A);
    gpu_free(K->Gcat);
    gpu_free(K->Qs);
    gpu_free(K->x);
    gpu_free(K->y);
    memset(K, 0, sizeof *K);
}

void gpu_kfac_apply(const gpu_kfac *K, const float *W, float *Y) {
    int N = K->N, out = K->out, in = K->in;
    /* Qs_i (out x in) = W (out x in) A_i (in x in): W is shared (stride 0) */
    gpu_gemm_sbatched(0, 0, out, in, in, 1.0f, W, in, 0, K->A, in, (long)in * in, 0.0f, K->Qs, in,
                      (long)out * in, N);
    /* Y (out x in) = Gcat (out x N*out) Qs (N*out x in) */
    gpu_gemm(0, 0, out, in, N * out, 1.0f, K->Gcat, N * out, K->Qs, in, 0.0f, Y, in);
}

void gpu_kfac_apply_host(const gpu_kfac *K, const float *W_host, float *Y_host) {
    size_t bytes = sizeof(float) * (size_t)K->out * K->in;
    gpu_upload(K->x, W_host, bytes);
    gpu_kfac_apply(K, K->x, K->y);
    gpu_download(Y_host, K->y, bytes);
}

double gpu_kfac_flops(const gpu_kfac *K) {
    return 2.0 * K->N * (double)K->out * K->in * ((double)K->in + K->out);
}

void gpu_blockfisher_apply(const float *S, const float *x, float *y, int nb, int d) {
    /* y_b (1 x d) = x_b (1 x d) S_b (d x d); S_b symmetric, so this is S_b x_b */
    gpu_gemm_sbatched(0, 0, 1, d, d, 1.0f, x, d, d, S, d, (long)d * d, 0.0f, y, d, d, nb);
}

__global__ static void diag_kernel(const float *d, const float *x, float *y, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = d[i] * x[i];
}

void gpu_diag_apply(const float *d, const float *x, float *y, long n) {
    if (n <= 0) return;
    diag_kernel<<<gpu_blocks(n, 256), 256, 0, gpu_stream()>>>(d, x, y, n);
    launchCheck();
}

/* ------------------------------------------------------------ CG */

/* r = b - r (r holds A x on entry); partials of sum r^2. */
__global__ static void residual_kernel(double *partials, float *r, const float *b, long n) {
    double s = 0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        float v = b[i] - r[i];
        r[i] = v;
        s += (double)v * v;
    }
    block_sum_store(s, partials);
}

/* x += a p ; r -= a q ; partials of sum r^2 (the CPU loop of mrg_cg). */
__global__ static void cg_update_kernel(double *partials, float *x, float *r, const float *p,
                                        const float *q, float a, long n) {
    double s = 0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        x[i] += a * p[i];
        float v = r[i] - a * q[i];
        r[i] = v;
        s += (double)v * v;
    }
    block_sum_store(s, partials);
}

/* p = r + beta p */
__global__ static void cg_dir_kernel(float *p, const float *r, float beta, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        p[i] = r[i] + beta * p[i];
}

static double residual(gpu_apply_fn apply, const void *ctx, const float *b, const float *x,
                       float *r, long n) {
    apply(ctx, x, r);
    residual_kernel<<<GPU_RED_BLOCKS, GPU_RED_THREADS, 0, G.stream>>>(G.partials, r, b, n);
    launchCheck();
    return sqrt(finish_partials());
}

void gpu_cg(gpu_apply_fn apply, const void *ctx, long n, const float *b, float *x, int maxit,
            double tol, gpu_cg_result *res) {
    ensure_init();
    gpu_sync();
    double t0 = mc_now();
    float *r = (float *)gpu_malloc(sizeof(float) * (size_t)n);
    float *p = (float *)gpu_malloc(sizeof(float) * (size_t)n);
    float *q = (float *)gpu_malloc(sizeof(float) * (size_t)n);
    memset(res, 0, sizeof *res);
    res->b_norm = sqrt(gpu_dot(n, b, b));
    double rnorm = residual(apply, ctx, b, x, r, n);
    res->initial_residual = rnorm;
    double stop = tol * res->b_norm;
    res->status = 0;
    gpu_copy(p, r, sizeof(float) * (size_t)n);
    double rz = rnorm * rnorm;
    int it = 0;
    for (; it < maxit; it++) {
        if (rnorm <= stop || rnorm == 0) {
            res->status = 1;
            break;
        }
        apply(ctx, p, q);
        double pq = gpu_dot(n, p, q);
        double alpha = rz / pq;
        if (!(pq > 0) || !isfinite(alpha)) {
            res->status = 2;
            break;
        }
        cg_update_kernel<<<GPU_RED_BLOCKS, GPU_RED_THREADS, 0, G.stream>>>(G.partials, x, r, p, q,
                                                                          (float)alpha, n);
        launchCheck();
        double rr = finish_partials();
        rnorm = sqrt(rr);
        double beta = rr / rz;
        if (!isfinite(beta) || !(rr > 0)) {
            it++;
            res->status = rr == 0 ? 1 : 2;
            break;
        }
        cg_dir_kernel<<<gpu_blocks(n, 256), 256, 0, G.stream>>>(p, r, (float)beta, n);
        launchCheck();
        rz = rr;
    }
    if (it == maxit && res->status == 0 && (rnorm <= stop || rnorm == 0)) res->status = 1;
    res->iterations = it;
    res->final_residual = residual(apply, ctx, b, x, q, n);
    res->seconds = mc_now() - t0;
    gpu_free(r);
    gpu_free(p);
    gpu_free(q);
}
