/* f32gemm_blocked.c - the large float32 products (see f32gemm.h), blocked
 * after the BLIS/GotoBLAS scheme:
 *
 * k runs in blocks of KC. For each block:
 *   1. the block's slice of op(B) is packed into panels of NR columns
 *      (k-major: element (kk, j) of a panel at kk * NR + j % NR, zero
 *      columns past n), on the thread pool;
 *   2. C is cut into MC x NC tiles (narrower when there are few), the tiles
 *      split over the pool. The thread that runs a tile packs its MC rows
 *      of op(A) into panels of MR rows (kk * MR + i % MR, zero rows past m)
 *      while they are in its caches, once for consecutive tiles of the same
 *      rows (tiles go row by row). In a tile, for each NR panel (its KC x NR
 *      slice read from L1/L2), for each MR panel (the tile's MC x KC slice
 *      of op(A) stays in L2), the micro-kernel keeps an MR x NR block of C
 *      in registers over the KC steps:
 *        c[i][0..NR) += op(A)[i][kk] * panel[kk][0..NR)   (one FMA per kk)
 *      Between k-blocks the raw sums wait in C itself (beta = 0) or in a
 *      scratch m x n (beta != 0); after the last, the block is scaled into
 *      C. Blocks on the edges of C go through a small buffer.
 *
 * KC is large (512-1024): the partial sums' trips through memory between
 * k-blocks cost more than a B slice that spills from L1 to L2 (on a Zen 4,
 * 2048^3 on one core: KC 256 0.95x OpenBLAS, 768 1.03-1.05x, bf16 1.6x ->
 * 2.0x).
 *
 * Micro-kernels: AVX-512 12 x 32 (24 accumulators of 16 floats), AVX2 +
 * FMA 6 x 16 (12 accumulators of 8), and AVX512_BF16 12 x 32 over k-pairs.
 * Each element's operations are the same in the two float32 kernels
 * (f32gemm.h), so they give the same bytes. */
#include "f32gemm.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "common.h"
#include "pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include "simd.h"
#define MC_HAVE_BLOCKED_CODE 1
#endif

static const char *const kernel_names[] = {"openblas", "avx2", "avx512"};

int f32gemm_kernel_parse(const char *name) {
    for (int i = 0; i < 3; i++)
        if (name && !strcmp(name, kernel_names[i])) return i;
    return -1;
}

const char *f32gemm_kernel_name(int kernel) {
    return kernel >= 0 && kernel < 3 ? kernel_names[kernel] : "?";
}

int f32gemm_kernel_supported(int kernel) {
    if (kernel == F32GEMM_OPENBLAS) return 1;
#ifdef MC_HAVE_BLOCKED_CODE
    __builtin_cpu_init(); /* the checks include the OS's saving of the registers */
    if (kernel == F32GEMM_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (kernel == F32GEMM_AVX512) return __builtin_cpu_supports("avx512f");
#endif
    return 0;
}

static int chosen = -1;

/* `chosen` is published whole (atomics): the pool's threads may ask first
 * at once, and each finds the same kernel */
int f32gemm_kernel(void) {
    int k0 = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);
    if (k0 >= 0) return k0;
    const char *s = getenv("MATS_GEMM");
    if (s && *s) {
        k0 = f32gemm_kernel_parse(s);
        if (k0 < 0) die("MATS_GEMM '%s' is not one of openblas, avx2, avx512", s);
        if (!f32gemm_kernel_supported(k0)) die("MATS_GEMM %s: this CPU has no %s", s, k0 == F32GEMM_AVX2 ? "AVX2 + FMA" : "AVX-512F");
    } else {
        k0 = f32gemm_kernel_supported(F32GEMM_AVX512) ? F32GEMM_AVX512
             : f32gemm_kernel_supported(F32GEMM_AVX2) ? F32GEMM_AVX2
                                                      : F32GEMM_OPENBLAS;
    }
    __atomic_store_n(&chosen, k0, __ATOMIC_RELEASE);
    return k0;
}

int f32gemm_set_kernel(int kernel) {
    if (kernel < 0 || kernel > 2) return mc_fail("no float32 GEMM kernel %d", kernel);
    if (!f32gemm_kernel_supported(kernel))
        return mc_fail("the %s GEMM kernel needs %s, which this CPU lacks", kernel_names[kernel],
                       kernel == F32GEMM_AVX2 ? "AVX2 + FMA" : "AVX-512F");
    __atomic_store_n(&chosen, kernel, __ATOMIC_RELEASE);
    return 0;
}

#ifdef MC_HAVE_BLOCKED_CODE

/* a micro-kernel: the MR x NR block at dst (row stride ldd) from kc steps
 * of the panels a (kc x MR) and b (kc x NR), starting from the raw sums at
 * src (row stride lds) or from zero (src NULL); raw sums out (final = 0) or
 * alpha * sum, then fma(beta, dst, .) when beta != 0 (final = 1) */
typedef void (*ukr_fn)(long kc, const float *a, const float *b, const float *src, long lds, float *dst,
                       long ldd, int final, float alpha, float beta);

typedef struct {
    int mr, nr, mc, nc;
    int kc;   /* k per block (a multiple of kdiv) */
    int kc_t; /* k per block when both operands are read in place (ukr_t) */
    int kdiv; /* k per step of a panel: 1 (float32), 2 (bf16 pairs) */
    ukr_fn ukr;
    /* the same micro-kernel reading op(A) = A's rows in place (row stride
     * lda) instead of a packed panel; NULL: A is always packed */
    void (*ukr_u)(long kc, const float *a, long lda, const float *b, const float *src, long lds, float *dst,
                  long ldd, int final, float alpha, float beta, const float *pf);
    /* op(A) = A^T and op(B) = B, both read in place: step q of the block's
     * rows at a + q * lda (MR consecutive floats), of its columns at
     * b + q * ldb (NR consecutive floats); NULL: packed */
    void (*ukr_t)(long kc, const float *a, long lda, const float *b, long ldb, const float *src, long lds,
                  float *dst, long ldd, int final, float alpha, float beta);
    /* panel packers (NULL: the generic C loops) */
    void (*pack_rows)(const float *X, long ld, int k, int rows, int width, float *p); /* p[kk][r] = X[r][kk] */
    /* p[kk][c] = X[kk][c], nq panels side by side in X, panel q at p + q * ps
     * (row by row through X, for its cache lines) */
    void (*pack_cols)(const float *X, long ld, int k, int cols, int width, int nq, size_t ps, float *p);
} kdesc;

/* ---- micro-kernels ---- */

/* a micro-kernel's MR x 2 accumulators c: from the raw sums at src (row
 * stride lds) or zero */
#define UKR_START(V, P, MR, W)                                                                                \
    V c[MR][2];                                                                                               \
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                                                   \
        c[r][0] = src ? P##_loadu_ps(src + r * lds) : P##_setzero_ps();                                       \
        c[r][1] = src ? P##_loadu_ps(src + r * lds + W) : P##_setzero_ps();                                   \
    }
/* ... over kc steps: row r of op(A) at a + r * RS, a and b moving by ASTEP
 * and BSTEP a step (packed panels: 1, MR, 2 W; A in place: lda, 1, 2 W;
 * both in place: 1, lda, ldb), b's two vectors read with P##LOAD; each step
 * begins with AHEAD(MR, W), its prefetches (UKR_NO_AHEAD: none) */
#define UKR_NO_AHEAD(MR, W)
#define UKR_STEPS(V, P, MR, W, STEP, RS, ASTEP, BSTEP, LOAD, AHEAD)                                          \
    for (long q = 0; q < kc; q++, a += (ASTEP), b += (BSTEP)) {                                               \
        AHEAD(MR, W)                                                                                          \
        V b0 = P##LOAD(b), b1 = P##LOAD(b + W);                                                               \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                                               \
            c[r][0] = STEP(c[r][0], a + r * (RS), b0);                                                        \
            c[r][1] = STEP(c[r][1], a + r * (RS), b1);                                                        \
        }                                                                                                     \
    }
/* ... and out to dst (row stride ldd): raw (final = 0) or alpha * c, then
 * fma(beta, dst, .) when beta != 0 */
#define UKR_FINISH(V, P, MR, W)                                                                               \
    V va = P##_set1_ps(alpha), vb = P##_set1_ps(beta);                                                        \
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++) {                                                   \
        float *d = dst + r * ldd;                                                                             \
        V x0 = c[r][0], x1 = c[r][1];                                                                         \
        if (final) {                                                                                          \
            x0 = P##_mul_ps(va, x0), x1 = P##_mul_ps(va, x1);                                                 \
            if (beta != 0.0f) {                                                                               \
                x0 = P##_fmadd_ps(vb, P##_loadu_ps(d), x0);                                                   \
                x1 = P##_fmadd_ps(vb, P##_loadu_ps(d + W), x1);                                               \
            }                                                                                                 \
        }                                                                                                     \
        P##_storeu_ps(d, x0);                                                                                 \
        P##_storeu_ps(d + W, x1);                                                                             \
    }

/* one micro-kernel (ukr_fn) of MR rows x 2 vectors of W floats, from the
 * intrinsics of vector type V with prefix P (_mm512 / _mm256); STEP(c, a,
 * b) adds the products of one packed step of row a (a pointer) and b */
#define UKR(name, TGT, V, P, MR, W, STEP)                                                                        \
    __attribute__((target(TGT))) static void name(long kc, const float *a, const float *b, const float *src, \
                                                     long lds, float *dst, long ldd, int final, float alpha,  \
                                                     float beta) {                                           \
        UKR_START(V, P, MR, W)                                                                                \
        UKR_STEPS(V, P, MR, W, STEP, 1, MR, 2 * W, _load_ps, UKR_NO_AHEAD)                                    \
        UKR_FINISH(V, P, MR, W)                                                                               \
    }

/* the micro-kernel above with row r of op(A) at a + r * lda, step q at
 * a[r * lda + q]: the same operations on the same values, so the same bytes.
 * pf (or NULL): the next MR rows, fetched a line of each per 16 steps; a
 * row of 1-2 KiB is too short a stream for the hardware to foresee, and on
 * a tile's first panel of op(B) they still lie in memory (the linears'
 * forward and input gradients with cold operands, 2 threads, Zen 5:
 * 1.03-1.06x) */
#define UKRU_AHEAD(MR, W)                                                                                     \
    if (pf && (q & 15) == 0) {                                                                                \
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; r++)                                                 \
            _mm_prefetch((const char *)(pf + r * lda + q), _MM_HINT_T0);                                      \
    }
#define UKRU(name, TGT, V, P, MR, W, STEP)                                                                      \
    __attribute__((target(TGT))) static void name(long kc, const float *a, long lda, const float *b,         \
                                                     const float *src, long lds, float *dst, long ldd,         \
                                                     int final, float alpha, float beta, const float *pf) {    \
        UKR_START(V, P, MR, W)                                                                                \
        UKR_STEPS(V, P, MR, W, STEP, lda, 1, 2 * W, _load_ps, UKRU_AHEAD)                                     \
        UKR_FINISH(V, P, MR, W)                                                                               \
    }

/* and with op(A) = A^T, op(B) = B both in place (the weight gradients
 * dy^T x): row r of the block at a[q * lda + r], its columns at
 * b[q * ldb + ..]: again the same operations on the same values. Each
 * step's operands lie a whole row of dy and of x from the last (1 KiB on
 * t5-mini), so the step UKRT_STEPS_AHEAD steps on is prefetched, both ends of
 * each (cold operands, 2 threads, Zen 5: 1.03-1.05x) */
#define UKRT_STEPS_AHEAD 8
#define UKRT_AHEAD(MR, W)                                                                                     \
    if (q + UKRT_STEPS_AHEAD < kc) {                                                                          \
        const char *pa = (const char *)(a + UKRT_STEPS_AHEAD * lda), *pb = (const char *)(b + UKRT_STEPS_AHEAD * ldb); \
        _mm_prefetch(pa, _MM_HINT_T0), _mm_prefetch(pa + sizeof(float) * ((MR) - 1), _MM_HINT_T0);            \
        _mm_prefetch(pb, _MM_HINT_T0), _mm_prefetch(pb + sizeof(float) * (2 * (W) - 1), _MM_HINT_T0);         \
    }
#define UKRT(name, TGT, V, P, MR, W, STEP)                                                                      \
    __attribute__((target(TGT))) static void name(long kc, const float *a, long lda, const float *b,         \
                                                     long ldb,                                                 \
                                                     const float *src, long lds, float *dst, long ldd,         \
                                                     int final, float alpha, float beta) {                     \
        UKR_START(V, P, MR, W)                                                                                \
        UKR_STEPS(V, P, MR, W, STEP, 1, lda, ldb, _loadu_ps, UKRT_AHEAD)                                      \
        UKR_FINISH(V, P, MR, W)                                                                               \
    }

#define FMA512(c, a, b) _mm512_fmadd_ps(_mm512_set1_ps(*(a)), b, c)
#define FMA256(c, a, b) _mm256_fmadd_ps(_mm256_broadcast_ss(a), b, c)
/* a step of bf16 pairs: a holds a row's pair (two bf16 in 32 bits), b 16
 * columns' pairs; vdpbf16ps adds both products to each column's sum */
#define DPBF16(c, a, b) _mm512_dpbf16_ps(c, (__m512bh)_mm512_set1_epi32(*(const int *)(a)), (__m512bh)b)
UKR(ukr_avx512, "avx512f", __m512, _mm512, 12, 16, FMA512)                        /* 12 x 32: 24 accumulators */
UKR(ukr_avx2, "avx2,fma", __m256, _mm256, 6, 8, FMA256)                           /* 6 x 16: 12 accumulators */
UKR(ukr_bf16, "avx512f,avx512bw,avx512bf16", __m512, _mm512, 12, 16, DPBF16) /* 12 x 32, k in pairs */
UKRU(ukru_avx512, "avx512f", __m512, _mm512, 12, 16, FMA512)
UKRU(ukru_avx2, "avx2,fma", __m256, _mm256, 6, 8, FMA256)
UKRT(ukrt_avx512, "avx512f", __m512, _mm512, 12, 16, FMA512)
UKRT(ukrt_avx2, "avx2,fma", __m256, _mm256, 6, 8, FMA256)
/* bf16 pairs with op(A)'s rows read in place from a row-major bf16 copy
 * (rows_bf16; a and lda in pairs): the same pair steps on the same rounded
 * values as the packed kernel, so the same bytes */
UKRU(ukru_bf16, "avx512f,avx512bw,avx512bf16", __m512, _mm512, 12, 16, DPBF16)

#define T512 __attribute__((target("avx512f")))

/* p[kk][r] = X[r][kk] for r < rows (zeros up to width), kk < k: 16 rows x
 * 16 k at a time through a 16 x 16 transpose */
T512 static void pack_rows_avx512(const float *X, long ld, int k, int rows, int width, float *p) {
    for (int h = 0; h < width; h += 16) {
        int hw = width - h < 16 ? width - h : 16, hv = rows - h;
        __mmask16 st = simd_mask16(hw);
        for (int kk = 0; kk < k; kk += 16) {
            __mmask16 mk = simd_mask16(k - kk);
            __m512i r[16];
            for (int c = 0; c < 16; c++)
                r[c] = c < hv ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mk, X + (size_t)(h + c) * ld + kk))
                              : _mm512_setzero_si512();
            simd_transpose16(r);
            for (int q = 0; q < 16 && kk + q < k; q++)
                _mm512_mask_storeu_ps(p + (size_t)(kk + q) * width + h, st, _mm512_castsi512_ps(r[q]));
        }
    }
}

/* panel q: p[q * ps + kk * width + c] = X[kk][q * width + c] while
 * q * width + c < cols, zeros up to width */
T512 static void pack_cols_avx512(const float *X, long ld, int k, int cols, int width, int nq, size_t ps, float *p) {
    for (int kk = 0; kk < k; kk++, X += ld)
        for (int q = 0; q < nq; q++)
            for (int h = 0; h < width; h += 16)
                _mm512_mask_storeu_ps(p + q * ps + (size_t)kk * width + h, simd_mask16(width - h),
                                      _mm512_maskz_loadu_ps(simd_mask16(cols - q * width - h), X + q * width + h));
}

/* ---- bf16 pairs (AVX512_BF16) ---- */

#define TBF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

/* p[q][l] = the pair (X[l][2q], X[l][2q+1]) rounded to bf16 (nearest even,
 * zeros past k and past `rows`): 16 lines x 32 k at a time, converted,
 * then a 16 x 16 transpose of the pairs */
TBF16 static void pack_rows_bf16(const float *X, long ld, int k, int rows, int width, float *pf) {
    uint32_t *p = (uint32_t *)pf;
    int steps = (k + 1) / 2;
    for (int h = 0; h < width; h += 16) {
        int hv = rows - h;
        __mmask16 st = simd_mask16(width - h);
        for (int kk = 0; kk < k; kk += 32) {
            __mmask16 m0 = simd_mask16(k - kk), m1 = simd_mask16(k - kk - 16);
            __m512i r[16];
            for (int c = 0; c < 16; c++) {
                const float *x = X + (size_t)(h + c) * ld + kk;
                r[c] = c < hv ? (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + 16), _mm512_maskz_loadu_ps(m0, x))
                              : _mm512_setzero_si512();
            }
            simd_transpose16(r);
            for (int q = 0; q < 16 && kk / 2 + q < steps; q++)
                _mm512_mask_storeu_epi32(p + (size_t)(kk / 2 + q) * width + h, st, r[q]);
        }
    }
}

/* panel r: p[r * ps + q * width + l] = the pair (X[2q][l'], X[2q+1][l']),
 * l' = r * width + l, rounded to bf16: two rows of X converted together,
 * their halves interleaved */
TBF16 static void pack_cols_bf16(const float *X, long ld, int k, int cols, int width, int nq, size_t ps, float *pf) {
    uint32_t *p = (uint32_t *)pf;
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                           21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (int q = 0; q < (k + 1) / 2; q++) {
        const float *x0 = X + (size_t)(2 * q) * ld, *x1 = x0 + ld;
        int two = 2 * q + 1 < k;
        for (int r = 0; r < nq; r++)
            for (int h = 0; h < width; h += 16) {
                int l = r * width + h;
                __mmask16 mc = simd_mask16(cols - l);
                __m512 lo = _mm512_maskz_loadu_ps(mc, x0 + l), hi = two ? _mm512_maskz_loadu_ps(mc, x1 + l) : _mm512_setzero_ps();
                __m512i v = _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_mask_storeu_epi32(p + r * ps + (size_t)q * width + h, simd_mask16(width - h), v);
            }
    }
}

/* p[r * ldp + q] = the pair (X[r][2q], X[r][2q+1]) rounded to bf16 (a zero
 * second half past k), rows [r0, r1): X's rows as bf16, pairs adjacent */
TBF16 static void rows_bf16(const float *X, long ld, int k, long r0, long r1, float *pf, long ldp) {
    uint32_t *p = (uint32_t *)pf;
    for (long r = r0; r < r1; r++) {
        const float *x = X + (size_t)r * ld;
        for (int kk = 0; kk < k; kk += 32) {
            __mmask16 m0 = simd_mask16(k - kk), m1 = simd_mask16(k - kk - 16);
            __m512i v = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, x + kk + 16), _mm512_maskz_loadu_ps(m0, x + kk));
            _mm512_mask_storeu_epi32(p + (size_t)r * ldp + kk / 2, simd_mask16((k - kk + 1) / 2), v);
        }
    }
}

/* (no ukr_t: the weight gradients read from pair-interleaved copies in
 * place ran at 0.55-0.8x packed on t5-mini's shapes, Zen 5) */
static const kdesc kd_bf16 = {12, 32, 96, 512, 1024, 1024, 2, ukr_bf16, ukru_bf16, NULL, pack_rows_bf16, pack_cols_bf16};

/* kc_t 256: the weight gradients' operands, read in place a row of dy
 * and of x apart, stream from L2 and beyond; shorter k-blocks keep the
 * tile's slices there (t5-mini's dy^T x, cold operands, 2 threads, Zen 5:
 * 1.29-1.31x against 768; the partial sums are C's few rows) */
static const kdesc kd_avx512 = {12, 32, 96, 512, 768, 256, 1, ukr_avx512, ukru_avx512, ukrt_avx512, pack_rows_avx512, pack_cols_avx512};
static const kdesc kd_avx2 = {6, 16, 72, 256, 512, 256, 1, ukr_avx2, ukru_avx2, ukrt_avx2, NULL, NULL};

/* ---- packing ---- */

/* p[kk][r] = X[r][kk]: rows of X become columns of the panel */
static void pack_rows_c(const float *X, long ld, int k, int rows, int width, float *p) {
    for (int kk0 = 0; kk0 < k; kk0 += 8) {
        int ke = k - kk0 < 8 ? k - kk0 : 8;
        for (int r = 0; r < width; r++) {
            const float *x = X + (size_t)r * ld + kk0;
            float *d = p + (size_t)kk0 * width + r;
            if (r < rows)
                for (int q = 0; q < ke; q++) d[(size_t)q * width] = x[q];
            else
                for (int q = 0; q < ke; q++) d[(size_t)q * width] = 0.0f;
        }
    }
}

/* panel q: p[q * ps + kk * width + c] = X[kk][q * width + c], zeros past
 * `cols` */
static void pack_cols_c(const float *X, long ld, int k, int cols, int width, int nq, size_t ps, float *p) {
    for (int kk = 0; kk < k; kk++, X += ld)
        for (int q = 0; q < nq; q++)
            for (int c = 0; c < width; c++)
                p[q * ps + (size_t)kk * width + c] = q * width + c < cols ? X[q * width + c] : 0.0f;
}

typedef struct {
    const kdesc *kd;
    int m, n, k;
    float alpha, beta;
    const float *A, *B;
    int ta, tb, lda, ldb;
    float *C;
    int ldc;
    /* the k-block being run: op(A) in panels of mr rows x kc (pm of them),
     * op(B) in panels of kc x nr (pn) */
    long k0, kc, steps; /* steps = kc / kdiv, rounded up */
    int first, final;
    long pm, pn;
    float *pb;
    int b_inplace; /* op(A) = A^T, op(B) = B: neither packed (ukr_t) */
    /* op(A) = A as the in-place micro-kernel ukr_u reads it, row by row (NULL:
     * packed): A itself, or its bf16 copy (stride and k offset k0 / kdiv in
     * pairs) */
    const float *ai;
    long ldai;
    float *part; /* raw sums between k-blocks when beta != 0 (m x n), else NULL: C holds them */
    int mc, nc;  /* tiles of C: mc x nc (multiples of mr, nr) */
    int mt, nt;  /* tiles of C: rows, columns */
    int *tiles;  /* the tiles to compute (tile = it * nt + jt), ntiles of them */
    long ntiles;
} job;

/* panels [q0, q1) of op(X) over the k-block, `width` = mr or nr lines,
 * panel q at p + (q - q0) * width * steps: op(X) line l is stored row l of
 * X (lines_are_rows) or column l */
static void pack_panels(const job *j, const float *X, long ld, int lines_are_rows, int lines, int width, long q0,
                        long q1, float *p) {
    size_t ps = (size_t)width * j->steps;
    if (!lines_are_rows) {
        int l0 = (int)q0 * width;
        (j->kd->pack_cols ? j->kd->pack_cols : pack_cols_c)(X + (size_t)j->k0 * ld + l0, ld, (int)j->kc, lines - l0,
                                                            width, (int)(q1 - q0), ps, p);
        return;
    }
    for (long q = q0; q < q1; q++) {
        int l0 = (int)q * width, valid = lines - l0 < width ? lines - l0 : width;
        (j->kd->pack_rows ? j->kd->pack_rows : pack_rows_c)(X + (size_t)l0 * ld + j->k0, ld, (int)j->kc, valid, width,
                                                            p + (q - q0) * ps);
    }
}

/* op(B)'s panels [lo, hi) */
static void pack_b_range(void *ctx, long lo, long hi) {
    job *j = ctx;
    pack_panels(j, j->B, j->ldb, j->tb, j->n, j->kd->nr, lo, hi, j->pb + (size_t)lo * j->kd->nr * j->steps);
}

/* per-thread buffers: the caller's packed op(B) and partial sums, each
 * worker's packed rows of op(A) */
typedef struct {
    float *p;
    size_t cap;
} fbuf;
static __thread fbuf buf_a, buf_b, buf_part, buf_edge;

static float *grow(fbuf *b, size_t n) {
    if (n > b->cap) {
        free(b->p);
        b->p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
        if (!b->p) die("out of memory: %zu bytes for a product buffer", n * sizeof(float));
        b->cap = n;
    }
    return b->p;
}

/* one MR x NR block: the micro-kernel on C or, on the edges of C, on a
 * buffer whose valid rows x cols go to and from C */
static void run_block(const kdesc *kd, long kc, const float *a, const float *b, const float *src, long lds,
                      float *dst, long ldd, int final, float alpha, float beta, int rows, int cols) {
    if (rows == kd->mr && cols == kd->nr) {
        kd->ukr(kc, a, b, src, lds, dst, ldd, final, alpha, beta);
        return;
    }
    float tin[16 * 32] __attribute__((aligned(64))), tout[16 * 32] __attribute__((aligned(64)));
    int nr = kd->nr;
    if (src) {
        memset(tin, 0, sizeof(float) * kd->mr * nr);
        for (int r = 0; r < rows; r++) memcpy(tin + r * nr, src + r * lds, sizeof(float) * cols);
    }
    if (final && beta != 0.0f) {
        memset(tout, 0, sizeof(float) * kd->mr * nr);
        for (int r = 0; r < rows; r++) memcpy(tout + r * nr, dst + r * ldd, sizeof(float) * cols);
    }
    kd->ukr(kc, a, b, src ? tin : NULL, nr, tout, nr, final, alpha, beta);
    for (int r = 0; r < rows; r++) memcpy(dst + r * ldd, tout + r * nr, sizeof(float) * cols);
}

/* the k-block on tiles [lo, hi): the tile's rows of op(A) packed by this
 * thread (once for consecutive tiles of the same rows), then for each NR
 * panel of the tile, each MR panel */
static void tile_range(void *ctx, long lo, long hi) {
    job *j = ctx;
    const kdesc *kd = j->kd;
    int mr = kd->mr, nr = kd->nr, packed = -1;
    float *pa = grow(&buf_a, (size_t)j->mc * (j->steps > 0 ? j->steps : 1));
    /* op(A) = A (j->ai, set by run): whole MR x NR blocks read A's rows in
     * place (no packing); an edge block packs its one panel */
    int inplace = j->ai != NULL, both = j->b_inplace;
    long ks = j->k0 / kd->kdiv; /* the k-block's first step */
    float *pe = both ? grow(&buf_edge, (size_t)nr * (j->steps > 0 ? j->steps : 1)) : NULL;
    for (long t = lo; t < hi; t++) {
        int it = j->tiles ? j->tiles[t] / j->nt : (int)(t / j->nt);
        int jt = j->tiles ? j->tiles[t] % j->nt : (int)(t % j->nt);
        int i0 = it * j->mc, j0 = jt * j->nc;
        int ih = j->m - i0 < j->mc ? j->m - i0 : j->mc, jw = j->n - j0 < j->nc ? j->n - j0 : j->nc;
        if (!inplace && !both && it != packed && j->kc > 0) {
            pack_panels(j, j->A, j->lda, !j->ta, j->m, mr, i0 / mr, (i0 + ih + mr - 1) / mr, pa);
            packed = it;
        }
        for (int jr = 0; jr < jw; jr += nr) {
            const float *bp = j->pb + (size_t)((j0 + jr) / nr) * nr * j->steps;
            for (int ir = 0; ir < ih; ir += mr) {
                const float *ap = pa + (size_t)(ir / mr) * mr * j->steps;
                size_t at = (size_t)(i0 + ir) * j->ldc + j0 + jr;
                float *c = j->C + at;
                /* raw sums between k-blocks: in C, or in the scratch */
                float *ps = j->part ? j->part + (size_t)(i0 + ir) * j->n + j0 + jr : c;
                long lps = j->part ? j->n : j->ldc;
                int rows = ih - ir < mr ? ih - ir : mr, cols = jw - jr < nr ? jw - jr : nr;
                if (inplace && rows == mr && cols == nr) {
                    /* on the tile's first panel of op(B), the next MR rows of A, still in memory */
                    const float *pf = jr == 0 && ir + 2 * mr <= ih ? j->ai + (size_t)(i0 + ir + mr) * j->ldai + ks : NULL;
                    kd->ukr_u(j->steps, j->ai + (size_t)(i0 + ir) * j->ldai + ks, j->ldai, bp, j->first ? NULL : ps,
                              lps, j->final ? c : ps, j->final ? j->ldc : lps, j->final, j->alpha, j->beta, pf);
                    continue;
                }
                if (both && rows == mr && cols == nr) {
                    kd->ukr_t(j->steps, j->A + (size_t)j->k0 * j->lda + i0 + ir, j->lda,
                              j->B + (size_t)j->k0 * j->ldb + j0 + jr, j->ldb, j->first ? NULL : ps, lps,
                              j->final ? c : ps, j->final ? j->ldc : lps, j->final, j->alpha, j->beta);
                    continue;
                }
                if (both) { /* an edge block: its two panels packed */
                    ap = pa, bp = pe; /* (bp is not read by the whole blocks of this mode) */
                    if (j->kc > 0) {
                        pack_panels(j, j->A, j->lda, 0, j->m, mr, (i0 + ir) / mr, (i0 + ir) / mr + 1, pa);
                        pack_panels(j, j->B, j->ldb, 0, j->n, nr, (j0 + jr) / nr, (j0 + jr) / nr + 1, pe);
                    }
                }
                if (inplace) {
                    ap = pa;
                    if (j->kc > 0) pack_panels(j, j->A, j->lda, 1, j->m, mr, (i0 + ir) / mr, (i0 + ir) / mr + 1, pa);
                }
                run_block(kd, j->steps, ap, bp, j->first ? NULL : ps, lps, j->final ? c : ps, j->final ? j->ldc : lps,
                          j->final, j->alpha, j->beta, rows, cols);
            }
        }
    }
}

/* ---- frozen operands ----
 *
 * A product whose op(B) lies inside a frozen range (f32gemm_freeze) keeps
 * its packed panels, every k-block of them, and reuses them while the range
 * stays frozen: the same panels packing would write, so the same bytes. An
 * entry is keyed by the kernel, B, ldb, the transpose and the shape, and
 * dropped with its range (f32gemm_thaw). Products on the calling thread
 * alone (local) skip the cache: they run on pool workers, which must never
 * wait for the lock while its holder waits for the pool. */
typedef struct pack_entry {
    const kdesc *kd;
    const float *B;
    int ldb, tb, n, k;
    float *data;      /* block pc at data + pc * stride */
    size_t stride;
    uint64_t hash;    /* of op(B)'s source, for MATS_CHECK_FROZEN */
    struct pack_entry *next;
} pack_entry;
static pthread_mutex_t frz_mu = PTHREAD_MUTEX_INITIALIZER;
static struct { const char *lo, *hi; } *frz;
static int nfrz, capfrz;
static pack_entry *entries;
static int frz_check = -1; /* MATS_CHECK_FROZEN: re-hash the source on every reuse */

void f32gemm_freeze(const void *p, size_t bytes) {
    pthread_mutex_lock(&frz_mu);
    if (nfrz == capfrz) frz = reallocCheck(frz, sizeof *frz * (size_t)(capfrz = capfrz ? 2 * capfrz : 8));
    frz[nfrz].lo = p, frz[nfrz].hi = (const char *)p + bytes;
    nfrz++;
    pthread_mutex_unlock(&frz_mu);
}

void f32gemm_thaw(const void *p) {
    pthread_mutex_lock(&frz_mu);
    for (int i = 0; i < nfrz; i++) {
        if (frz[i].lo != p) continue;
        for (pack_entry **e = &entries; *e;) {
            const char *b = (const char *)(*e)->B;
            if (b >= frz[i].lo && b < frz[i].hi) {
                pack_entry *d = *e;
                *e = d->next;
                free(d->data), free(d);
            } else e = &(*e)->next;
        }
        frz[i] = frz[--nfrz];
        break;
    }
    pthread_mutex_unlock(&frz_mu);
}

/* The bytes op(B)'s source spans: rows of ldb floats. */
static size_t b_span(int tb, int n, int k, int ldb) {
    long rows = tb ? n : k, cols = tb ? k : n;
    return rows > 0 ? ((size_t)(rows - 1) * ldb + cols) * sizeof(float) : 0;
}

/* XXH3 of op(B)'s source, row by row */
static uint64_t b_hash(const float *B, int tb, int n, int k, int ldb) {
    long rows = tb ? n : k, cols = tb ? k : n;
    XXH3_state_t *st = XXH3_createState();
    if (!st || XXH3_64bits_reset(st) != XXH_OK) die("out of memory: a hash state");
    for (long r = 0; r < rows; r++) XXH3_64bits_update(st, B + (size_t)r * ldb, sizeof(float) * (size_t)cols);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static void pack_b_range(void *ctx, long lo, long hi);

/* The packed panels of a frozen op(B) for job j (k-blocks of KC, nk of
 * them), packing them on first use; NULL when B is not frozen. */
static pack_entry *frozen_panels(job *j, long KC, int nk, int serial) {
    pthread_mutex_lock(&frz_mu);
    const char *b = (const char *)j->B, *e = b + b_span(j->tb, j->n, j->k, j->ldb);
    int in = 0;
    for (int i = 0; i < nfrz && !in; i++) in = b >= frz[i].lo && e <= frz[i].hi;
    pack_entry *pe = NULL;
    if (in) {
        for (pe = entries; pe; pe = pe->next)
            if (pe->kd == j->kd && pe->B == j->B && pe->ldb == j->ldb && pe->tb == j->tb && pe->n == j->n &&
                pe->k == j->k)
                break;
        if (frz_check < 0) {
            const char *c = getenv("MATS_CHECK_FROZEN");
            frz_check = c && *c && strcmp(c, "0") != 0;
        }
        if (pe && frz_check && b_hash(j->B, j->tb, j->n, j->k, j->ldb) != pe->hash)
            die("f32gemm: a frozen operand changed (%d x %d at %p): thaw it (f32gemm_thaw) before writing it",
                j->tb ? j->n : j->k, j->tb ? j->k : j->n, (const void *)j->B);
        if (!pe) {
            pe = callocCheck(1, sizeof *pe);
            pe->kd = j->kd, pe->B = j->B, pe->ldb = j->ldb, pe->tb = j->tb, pe->n = j->n, pe->k = j->k;
            long kc_max = j->k < KC ? (j->k > 0 ? j->k : 1) : KC;
            pe->stride = (size_t)j->pn * j->kd->nr * ((kc_max + j->kd->kdiv - 1) / j->kd->kdiv);
            size_t bytes = (sizeof(float) * pe->stride * (size_t)nk + 63) / 64 * 64;
            pe->data = aligned_alloc(64, bytes); /* the kernels load panels aligned (stride: whole panels) */
            if (!pe->data) die("out of memory: %zu bytes of packed frozen weights", bytes);
            for (int pc = 0; pc < nk; pc++) {
                j->k0 = (long)pc * KC, j->kc = j->k - j->k0 < KC ? j->k - j->k0 : KC;
                j->steps = (j->kc + j->kd->kdiv - 1) / j->kd->kdiv;
                j->pb = pe->data + (size_t)pc * pe->stride;
                if (j->kc <= 0) continue;
                if (serial) pack_b_range(j, 0, j->pn);
                else pool_parallel_for(j->pn, 2, pack_b_range, j);
            }
            pe->hash = b_hash(j->B, j->tb, j->n, j->k, j->ldb);
            pe->next = entries, entries = pe;
        }
    }
    pthread_mutex_unlock(&frz_mu);
    return pe;
}

/* ---- bf16 operands in place ----
 *
 * The bf16 kernel's packing rounds, converts and transposes every operand
 * of every product, per k-block and per tile (a third of a bf16 training
 * step of t5-mini on a Zen 5, perf). Where op(A) = A, A is instead
 * converted once per product to bf16 rows (pairs along k adjacent: the
 * linears' forward and input gradients), a streaming pass, and the
 * in-place micro-kernel reads them. Blocks on the edges of C still pack
 * their panels from the float32 A: the same rounding, so the same bytes. */
static int bf16_inplace = -1; /* MATS_GEMM_BF16_INPLACE=0: always pack (tests, bench) */

static int bf16_inplace_on(void) { /* published whole, as `chosen` */
    int on = __atomic_load_n(&bf16_inplace, __ATOMIC_ACQUIRE);
    if (on < 0) {
        const char *e = getenv("MATS_GEMM_BF16_INPLACE");
        on = !(e && !strcmp(e, "0"));
        __atomic_store_n(&bf16_inplace, on, __ATOMIC_RELEASE);
    }
    return on;
}

int bf16gemm_set_inplace(int on) {
    int was = bf16_inplace_on();
    __atomic_store_n(&bf16_inplace, on ? 1 : 0, __ATOMIC_RELEASE);
    return was;
}

typedef struct {
    const float *X;
    long ld, k;
    float *p;
} conv_job;

static void conv_range(void *ctx, long lo, long hi) {
    const conv_job *c = ctx;
    rows_bf16(c->X, c->ld, (int)c->k, lo, hi, c->p, (c->k + 1) / 2);
}

static __thread fbuf buf_ra;

/* X's rows [0, rows) of k floats as bf16 rows of (k + 1) / 2 pairs */
static const float *convert_rows(const float *X, long ld, long rows, long k, int serial) {
    conv_job c = {.X = X, .ld = ld, .k = k};
    c.p = grow(&buf_ra, (size_t)rows * ((k + 1) / 2));
    if (serial) conv_range(&c, 0, rows);
    else pool_parallel_for(rows, 16, conv_range, &c);
    return c.p;
}

/* the product; upper = 1: only the tiles that touch the upper triangle.
 * For each k-block of KC: pack both operands' slices (on the pool), then
 * run the tiles (on the pool). */
static void run(const kdesc *kd, int local, int upper, int ta, int tb, int m, int n, int k, float alpha,
                const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return;
    job j = {.kd = kd, .m = m, .n = n, .k = k, .alpha = alpha, .beta = beta, .A = A, .B = B, .ta = ta,
             .tb = tb, .lda = lda, .ldb = ldb, .C = C, .ldc = ldc};
    j.pm = (m + kd->mr - 1) / kd->mr, j.pn = (n + kd->nr - 1) / kd->nr;
    long KC = kd->kc;
    int nk = k > KC ? (k + KC - 1) / KC : 1;
    /* tiles: the kernel's sizes, narrowed (nc, then mc, never below 2 panels)
     * until every thread has 4 or more; the bytes do not depend on them */
    int threads = local ? 1 : pool_threads(), want = 4 * threads;
    j.mc = kd->mc, j.nc = kd->nc;
    for (;;) {
        j.mt = (m + j.mc - 1) / j.mc;
        j.nt = (n + j.nc - 1) / j.nc;
        if (threads == 1 || (long)j.mt * j.nt >= want) break;
        if (j.nc > 2 * kd->nr && j.nc >= n / 2) j.nc = (j.nc / 2 + kd->nr - 1) / kd->nr * kd->nr;
        else if (j.mc > 2 * kd->mr) j.mc = (j.mc / 2 + kd->mr - 1) / kd->mr * kd->mr;
        else break;
    }
    j.ntiles = (long)j.mt * j.nt;
    int *list = NULL;
    if (upper) {
        list = malloc(sizeof(int) * (size_t)j.ntiles);
        if (!list) die("out of memory: a tile list");
        long c = 0;
        for (int it = 0; it < j.mt; it++)
            for (int jt = 0; jt < j.nt; jt++)
                if ((long)(jt + 1) * j.nc > (long)it * j.mc) list[c++] = it * j.nt + jt;
        j.tiles = list, j.ntiles = c;
    }
    int serial = local || (long)m * n * (k > 0 ? k : 1) < (1L << 18);
    pack_entry *pe = local ? NULL : frozen_panels(&j, KC, nk, serial);
    /* in place unless a row stride is a multiple of 4 KiB: there every
     * step of that operand falls in one set of a 64-set L1 and packed
     * panels win (t5-small's 2048 x 512 x 4096 on a Zen 4: 0.90x OpenBLAS
     * packed, 0.77x in place; t5-base's 3072 x 768 x 4096 on a Zen 5:
     * 0.79x); elsewhere in place wins, whatever the size of C (cold
     * operands, 2 threads, Zen 5, against packed: t5-mini's dy^T x
     * 1.2-1.5x, its lm_head 8000 x 256 x 1024 1.34x, 768 x 768 x 4096
     * 1.21x, 32128 x 512 x 1024 1.08x) */
    j.b_inplace = kd->ukr_t && ta && !tb && !pe && lda % 1024 != 0 && ldb % 1024 != 0;
    if (j.b_inplace) KC = kd->kc_t, nk = k > KC ? (int)((k + KC - 1) / KC) : 1; /* the bytes do not depend on KC */
    long kc_max = k < KC ? (k > 0 ? k : 1) : KC;
    if (!pe) j.pb = grow(&buf_b, (size_t)j.pn * kd->nr * kc_max);
    j.part = nk > 1 && beta != 0.0f ? grow(&buf_part, (size_t)m * n) : NULL;
    /* A read in place: rows of at most 2 KiB (512 floats, or 512 bf16 pairs
     * converted first), where MR rows 8 KiB apart would share a set of a
     * 32 KiB 8-way L1 (2048^3 on a Zen 4: 1.02x OpenBLAS packed, 0.95x in
     * place) */
    if (kd->ukr_u && !ta && kd->kdiv == 1 && lda <= 512) j.ai = A, j.ldai = lda;
    /* (converted only where a whole MR x NR block will read it: edge blocks pack) */
    if (kd->ukr_u && !ta && kd->kdiv == 2 && k > 0 && k <= 1024 && m >= kd->mr && n >= kd->nr && bf16_inplace_on())
        j.ai = convert_rows(A, lda, m, k, serial), j.ldai = (k + 1) / 2;
    for (int pc = 0; pc < nk; pc++) {
        j.k0 = (long)pc * KC, j.kc = k - j.k0 < KC ? k - j.k0 : KC;
        j.steps = (j.kc + kd->kdiv - 1) / kd->kdiv;
        j.first = pc == 0, j.final = pc == nk - 1;
        if (pe) j.pb = pe->data + (size_t)pc * pe->stride; /* packed before, frozen since */
        else if (j.kc > 0 && !j.b_inplace) {
            if (serial) pack_b_range(&j, 0, j.pn);
            else pool_parallel_for(j.pn, 2, pack_b_range, &j);
        }
        if (serial) tile_range(&j, 0, j.ntiles);
        else pool_parallel_for(j.ntiles, 1, tile_range, &j);
    }
    free(list);
}

/* the float32 kernel in use */
static const kdesc *f32_kernel(void) {
    int kern = f32gemm_kernel();
    if (kern == F32GEMM_OPENBLAS) die("f32gemm called with the OpenBLAS kernel selected");
    return kern == F32GEMM_AVX512 ? &kd_avx512 : &kd_avx2;
}

void f32gemm(int local, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    run(f32_kernel(), local, 0, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

int bf16gemm_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
}

void bf16gemm(int local, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (!bf16gemm_available()) die("bf16 products asked for on a CPU without AVX512_BF16");
    run(&kd_bf16, local, 0, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

void f32gemm_syrk(int trans, int n, int k, float alpha, const float *A, int lda, float beta, float *C,
                  int ldc) {
    /* trans: A^T A, op(A) = A^T, op(B) = A; else A A^T, op(A) = A, op(B) = A^T */
    run(f32_kernel(), 0, 1, trans, !trans, n, n, k, alpha, A, lda, A, lda, beta, C, ldc);
    for (int i = 1; i < n; i++)
        for (int j = 0; j < i; j++) C[(size_t)i * ldc + j] = C[(size_t)j * ldc + i];
}

#else

/* no packed panels to keep: freezing is a no-op */
void f32gemm_freeze(const void *p, size_t bytes) { (void)p, (void)bytes; }
void f32gemm_thaw(const void *p) { (void)p; }

int bf16gemm_available(void) { return 0; }
int bf16gemm_set_inplace(int on) { (void)on; return 0; }

void bf16gemm(int local, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    f32gemm(local, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc); /* dies: not built */
}

void f32gemm(int local, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
             const float *B, int ldb, float beta, float *C, int ldc) {
    (void)local, (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)A, (void)lda;
    (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    die("f32gemm is not built for this architecture");
}

void f32gemm_syrk(int trans, int n, int k, float alpha, const float *A, int lda, float beta, float *C,
                  int ldc) {
    (void)trans, (void)n, (void)k, (void)alpha, (void)A, (void)lda, (void)beta, (void)C, (void)ldc;
    die("f32gemm_syrk is not built for this architecture");
}

#endif
