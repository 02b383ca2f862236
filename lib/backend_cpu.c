/* backend_cpu.c - the CPU backend of backend.h: float32 products on our own
 * kernels (f32gemm.h: AVX-512 or AVX2 + FMA, chosen from cpuid or by
 * MATS_GEMM) or OpenBLAS, bf16 products on AMX (amx.h), double precision
 * and LAPACK on OpenBLAS. */
#include "backend.h"

#include "amx.h"
#include "f32gemm.h"
#include "common.h"
#include "lease.h"
#include "pool.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#endif

/* LAPACK (Fortran, column-major) as exported by libopenblas. */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dpotrs_(const char *uplo, const int *n, const int *nrhs, const double *a,
                    const int *lda, double *b, const int *ldb, int *info);
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                    double *w, double *work, const int *lwork, int *iwork, const int *liwork,
                    int *info);

/* Denormal floats: the pool's workers flush them (pool_flush_denormals,
 * pool.c); OpenBLAS starts its threads when the library loads, before main,
 * so be_init stops them once (the call OpenBLAS's own fork handler makes)
 * and the next BLAS call starts them again from this thread, whose setting
 * they inherit. */

extern void blas_thread_shutdown_(void) __attribute__((weak));
extern void openblas_read_env(void) __attribute__((weak));

/* OpenBLAS's pthreads build keeps idle threads spinning on sched_yield for
 * 2^28 cycles after each GEMM, and between GEMMs the thread pool (lib/pool.c)
 * needs those cores: 2^20 made t5-mini training 12-17% faster and eval 16%
 * (docs/performance.md). OpenBLAS reads OPENBLAS_THREAD_TIMEOUT when it
 * loads, before main; unless the user set it, be_init sets 20, has OpenBLAS
 * read its environment again, and the restart below applies it. */
#define MC_BLAS_THREAD_TIMEOUT "20"

void be_init(int threads) {
    pool_flush_denormals();
    static int restarted;
    if (!restarted) {
        if (openblas_read_env && !getenv("OPENBLAS_THREAD_TIMEOUT")) {
            setenv("OPENBLAS_THREAD_TIMEOUT", MC_BLAS_THREAD_TIMEOUT, 0);
            openblas_read_env();
        }
        if (blas_thread_shutdown_) blas_thread_shutdown_();
    }
    restarted = 1;
    if (threads <= 0) {
        const char *s = getenv("MATS_THREADS");
        if (s && *s) threads = atoi(s);
    }
    if (threads > 0) openblas_set_num_threads(threads);
    pool_set_threads(be_threads()); /* the loops use as many threads as the BLAS */
    lease_start(be_threads());      /* MATS_LEASE_DIR: borrow idle cores (lease.h) */
    f32gemm_kernel();               /* MATS_GEMM read (or refused) now, on this thread */
}

void be_init_default(int fallback) {
    const char *s = getenv("MATS_THREADS");
    be_init(s && *s ? 0 : fallback);
}

int be_threads(void) { return openblas_get_num_threads(); }

/* be_gemm and be_gemm_sbatched in float32 (OpenBLAS) or with bfloat16
 * inputs on the AMX tile unit (amx.c) */
static int cpu_math = BE_MATH_FP32;

int be_math_parse(const char *name) {
    if (name && !strcmp(name, "fp32")) return BE_MATH_FP32;
    if (name && !strcmp(name, "bf16")) return BE_MATH_BF16;
    return -1;
}

const char *be_math_name(int mode) { return mode == BE_MATH_BF16 ? "bf16" : "fp32"; }

/* bf16 products: on AMX where the CPU has it, else with vdpbf16ps
 * (AVX512_BF16, f32gemm.h); MATS_GEMM_BF16=amx|avx512bf16 forces one
 * (tests, benchmarks). 1: AMX, 2: AVX512_BF16, 0: none. */
static int bf16_kernel;

static int bf16_choose(void) {
    const char *s = getenv("MATS_GEMM_BF16");
    if (s && *s) {
        if (!strcmp(s, "amx")) {
            if (!amx_available()) return mc_fail("MATS_GEMM_BF16 amx: %s", amx_unavailable_reason());
            return 1;
        }
        if (!strcmp(s, "avx512bf16")) {
            if (!bf16gemm_available()) return mc_fail("MATS_GEMM_BF16 avx512bf16: this CPU has no AVX512_BF16");
            return 2;
        }
        return mc_fail("MATS_GEMM_BF16 '%s' is not one of amx, avx512bf16", s);
    }
    if (amx_available()) return 1;
    if (bf16gemm_available()) return 2;
    return mc_fail("cpu_math bf16 needs AMX-BF16 or AVX512_BF16, and this CPU has neither (%s); use cpu_math fp32",
                   amx_unavailable_reason());
}

int be_set_cpu_math(int mode) {
    if (mode == BE_MATH_BF16) {
        int k = bf16_choose();
        if (k < 0) return -1;
        bf16_kernel = k;
    }
    cpu_math = mode == BE_MATH_BF16 ? BE_MATH_BF16 : BE_MATH_FP32;
    return 0;
}

const char *be_bf16_kernel_name(void) { return bf16_kernel == 1 ? "amx" : bf16_kernel == 2 ? "avx512bf16" : "none"; }

/* the bf16 product, batches one by one where the kernel is ours */
static void gemm_bf16(int local, int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
                      long strideA, const float *B, int ldb, long strideB, float beta, float *C, int ldc,
                      long strideC, int batch) {
    if (bf16_kernel == 1) {
        (local ? amx_gemm_local : amx_gemm_batched)(transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB,
                                                    beta, C, ldc, strideC, batch);
        return;
    }
    for (int i = 0; i < batch; i++)
        bf16gemm(local, transA, transB, m, n, k, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta,
                 C + i * strideC, ldc);
}

int be_cpu_math(void) { return cpu_math; }

/* be_gemm on the pool (local = 0) or the calling thread (1): the same bytes */
static void gemm_one(int local, int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc) {
    if (cpu_math == BE_MATH_BF16) {
        gemm_bf16(local, transA, transB, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
        return;
    }
    if (f32gemm_kernel() != F32GEMM_OPENBLAS) {
        f32gemm(local, transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void be_gemm(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    gemm_one(0, transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void be_syrk(int trans, int n, int k, float alpha, const float *A, int lda, float beta, float *C,
             int ldc) {
    if (f32gemm_kernel() != F32GEMM_OPENBLAS) {
        f32gemm_syrk(trans, n, k, alpha, A, lda, beta, C, ldc);
        return;
    }
    cblas_ssyrk(CblasRowMajor, CblasUpper, trans ? CblasTrans : CblasNoTrans, n, k, alpha, A, lda,
                beta, C, ldc);
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++) C[(size_t)i * ldc + j] = C[(size_t)j * ldc + i];
}

void be_dgemm(int transA, int transB, int m, int n, int k, double alpha, const double *A, int lda,
              const double *B, int ldb, double beta, double *C, int ldc) {
    cblas_dgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* A row-major symmetric matrix read column-major is the same matrix; the
 * row-major upper triangle is LAPACK's lower triangle. */
int be_dpotrf(int n, double *A, int lda) {
    int info = 0;
    dpotrf_("L", &n, A, &lda, &info);
    return info;
}

/* B is n x nrhs row-major = nrhs x n column-major, i.e. B^T. Solving
 * A X = B is X^T = B^T A^{-1}; rather than transposing we solve column by
 * column on a transposed copy. */
void be_dpotrs(int n, int nrhs, const double *A, int lda, double *B, int ldb) {
    double *t = malloc(sizeof(double) * (size_t)n * nrhs);
    if (!t) abort();
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nrhs; j++) t[(size_t)j * n + i] = B[(size_t)i * ldb + j];
    int info = 0;
    dpotrs_("L", &n, &nrhs, A, &lda, t, &n, &info);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nrhs; j++) B[(size_t)i * ldb + j] = t[(size_t)j * n + i];
    free(t);
}

float be_dot(long n, const float *x, const float *y) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)x[i] * y[i];
    return (float)s;
}

void be_axpy(long n, float a, const float *x, float *y) {
    for (long i = 0; i < n; i++) y[i] += a * x[i];
}

/* ---- strided batches and LAPACK solves ------------------------------ */

void be_gemm_sbatched(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                      int lda, long strideA, const float *B, int ldb, long strideB, float beta,
                      float *C, int ldc, long strideC, int batch) {
    if (cpu_math == BE_MATH_BF16) {
        gemm_bf16(0, transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC,
                  batch);
        return;
    }
    if (f32gemm_kernel() != F32GEMM_OPENBLAS) {
        for (int i = 0; i < batch; i++)
            f32gemm(0, transA, transB, m, n, k, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta,
                    C + i * strideC, ldc);
        return;
    }
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans, m, n, k, alpha, A + i * strideA, lda,
                    B + i * strideB, ldb, beta, C + i * strideC, ldc);
}

void be_gemm_sbatched_local(int transA, int transB, int m, int n, int k, float alpha,
                            const float *A, int lda, long strideA, const float *B, int ldb,
                            long strideB, float beta, float *C, int ldc, long strideC, int batch) {
    if (cpu_math == BE_MATH_BF16) {
        gemm_bf16(1, transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC,
                  batch);
        return;
    }
    int kern = f32gemm_kernel();
    if (kern == F32GEMM_AVX512) { /* the same bytes as f32gemm's kernels (f32gemm.h) */
        f32gemm_local(transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc,
                      strideC, batch);
        return;
    }
    if (kern == F32GEMM_AVX2) {
        for (int i = 0; i < batch; i++)
            f32gemm(1, transA, transB, m, n, k, alpha, A + i * strideA, lda, B + i * strideB, ldb, beta,
                    C + i * strideC, ldc);
        return;
    }
    be_gemm_sbatched(transA, transB, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc,
                     strideC, batch);
}

void be_gemm_local(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc) {
    gemm_one(1, transA, transB, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void be_gemm_sbatched_local_groups(int transA, int transB, int m, int n, int k, float alpha, const float *A,
                                   int lda, long strideA, long gstrideA, const float *B, int ldb, long strideB,
                                   float beta, float *C, int ldc, long strideC, long gstrideC, int group,
                                   int batch) {
    if (group <= 0 || m % group != 0 || transA)
        die("be_gemm_sbatched_local_groups: %d rows in groups of %d%s", m, group, transA ? " with op(A) = A^T" : "");
    if (cpu_math != BE_MATH_BF16 && f32gemm_kernel() == F32GEMM_AVX512) {
        f32gemm_local_groups(transA, transB, m, n, k, alpha, A, lda, strideA, gstrideA ? group : 0, gstrideA, B,
                             ldb, strideB, beta, C, ldc, strideC, gstrideC ? group : 0, gstrideC, batch);
        return;
    }
    for (int g = 0; g < m / group; g++)
        be_gemm_sbatched_local(transA, transB, group, n, k, alpha,
                               A + (gstrideA ? (size_t)g * gstrideA : (size_t)g * group * lda), lda, strideA, B,
                               ldb, strideB, beta, C + (gstrideC ? (size_t)g * gstrideC : (size_t)g * group * ldc),
                               ldc, strideC, batch);
}

int be_gemm_local_parallel(void) { return cpu_math == BE_MATH_BF16 || f32gemm_kernel() != F32GEMM_OPENBLAS; }

/* Bt (nrhs x n row-major, leading dimension ldbt) is B (n x nrhs) in
 * column-major order with ldb = ldbt: LAPACK's native layout. */
void be_dpotrs_t(int n, int nrhs, const double *A, int lda, double *Bt, int ldbt) {
    int info = 0;
    if (n <= 0 || nrhs <= 0) return;
    dpotrs_("L", &n, &nrhs, A, &lda, Bt, &ldbt, &info);
}

/* Column-major eigenvectors (column j = vector j) read row-major are rows:
 * on return row j of A is the eigenvector of w[j]. */
int be_dsyevd(int n, double *A, int lda, double *w) {
    int info = 0, lwork = -1, liwork = -1, iw = 0;
    double wq = 0;
    if (n <= 0) return 0;
    dsyevd_("V", "L", &n, A, &lda, w, &wq, &lwork, &iw, &liwork, &info);
    if (info != 0) return info;
    lwork = (int)wq;
    liwork = iw;
    double *work = malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
    int *iwork = malloc(sizeof(int) * (size_t)(liwork > 1 ? liwork : 1));
    if (!work || !iwork) abort();
    dsyevd_("V", "L", &n, A, &lda, w, work, &lwork, iwork, &liwork, &info);
    free(work);
    free(iwork);
    return info;
}

void be_freeze(const void *p, size_t bytes) { f32gemm_freeze(p, bytes); }
void be_thaw(const void *p) { f32gemm_thaw(p); }
