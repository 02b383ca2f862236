/* amx.c - BF16 matrix products on Intel AMX (see amx.h).
 *
 * C = alpha * op(A) op(B) + beta * C, float32 in and out, with the product
 * taken in bfloat16 (inputs rounded to nearest even) and accumulated in
 * float32 by the AMX tile unit (TDPBF16PS). Per call:
 *
 *   1. pack op(A) (m x k) into bf16 rows of Kp = k rounded up to 32,
 *      m rounded up to 32, zeros in the padding;
 *   2. pack op(B) (k x n) into the tile unit's pair layout ("VNNI"):
 *      element (kk, j) at ((kk / 2) * Np + j) * 2 + kk % 2, n rounded up
 *      to Np, a multiple of 32;
 *   3. for every 32 x 32 block of C: four accumulator tiles (2 x 2 of
 *      16 x 16 floats), two A tiles (16 rows x 32 k), two B tiles
 *      (16 k-pairs x 16 columns), k in steps of 32; then the block is
 *      scaled into C.
 *
 * Packing and blocks run on the thread pool (pool.h), with the tile
 * configuration loaded in each worker. Every element of C is one fixed
 * sequence of tile operations whichever thread computes it, so the bytes do
 * not depend on the thread count. */
#include "amx.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>

#include "common.h"
#include "pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#include "simd.h"
#define MC_HAVE_AMX_CODE 1
#endif

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

/* AMX usable here: 1 or 0 (the tile state requested of Linux, which
 * grants it once per process) */
static int amx_probe(void) {
#ifdef MC_HAVE_AMX_CODE
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int tile = (d >> 24) & 1, bf16 = (d >> 22) & 1;
    int avx512bf16 = 0;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) avx512bf16 = (a >> 5) & 1;
    int avx512f = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d)) avx512f = (b >> 16) & 1;
    if (!tile || !bf16 || !avx512bf16 || !avx512f) return 0;
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0) return 0;
    return 1;
#else
    return 0;
#endif
}

int amx_available(void) {
    static int state = -1; /* published whole once known: no thread reads a provisional 0 */
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (s < 0) {
        s = amx_probe();
        __atomic_store_n(&state, s, __ATOMIC_RELEASE);
    }
    return s;
}

const char *amx_unavailable_reason(void) {
    return "this CPU or kernel offers no AMX-BF16 tile unit (Intel Sapphire Rapids or newer, "
           "Linux 5.16 or newer)";
}

#ifdef MC_HAVE_AMX_CODE

#define TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")))

static uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

typedef struct {
    /* sources: op(X) is rows x cols; X[r][c] at x + b * stride + r * ld + c
     * (not transposed) or x + b * stride + c * ld + r (transposed) */
    const float *a, *b;
    int ta, tb, lda, ldb;
    long sa, sb;
    int m, n, k, batch;
    int Mp, Np, Kp, kt; /* padded sizes; kt = Kp / 32 tiles along k */
    uint16_t *pa, *pb;  /* packed, tile by tile (see A_TILE, B_TILE) */
    float alpha, beta;
    float *c;
    int ldc;
    long sc;
    int mb, nb; /* blocks of 32 per matrix, rows and columns */
} amx_job;

/* Both operands are packed as 1 KiB tiles, each contiguous (64-byte rows),
 * in the order the kernel reads them: for rows i0..i0+15 of op(A) (or
 * columns j0..j0+15 of op(B)) the kt tiles along k follow each other.
 *   A tile (i/16, kk/32): 16 rows x 32 bf16, element (i%16, kk%32)
 *   B tile (j/16, kk/32): 16 k-pairs x 16 columns x 2, element
 *     ((kk%32)/2, j%16, kk%2) - the tile unit's pair layout */
#define A_TILE(j, bi, i16, k32) ((j)->pa + ((size_t)(bi) * ((j)->Mp / 16) + (i16)) * (j)->kt * 512 + (size_t)(k32) * 512)
#define B_TILE(j, bi, j16, k32) ((j)->pb + ((size_t)(bi) * ((j)->Np / 16) + (j16)) * (j)->kt * 512 + (size_t)(k32) * 512)

/* op(A) = A: one packed row, r in [0, batch * Mp) */
TARGET static void pack_a_rows(void *p, long lo, long hi) {
    amx_job *j = p;
    for (long r = lo; r < hi; r++) {
        int bi = (int)(r / j->Mp), i = (int)(r % j->Mp);
        const float *src = j->a + bi * j->sa + (size_t)i * j->lda;
        for (int t = 0; t < j->kt; t++) {
            uint16_t *dst = A_TILE(j, bi, i / 16, t) + (i % 16) * 32;
            int kk = t * 32, left = i < j->m ? j->k - kk : 0;
            if (left >= 32) {
                __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + kk + 16), _mm512_loadu_ps(src + kk));
                _mm512_storeu_si512((void *)dst, (__m512i)v);
            } else {
                int q = 0;
                for (; q < left; q++) dst[q] = bf16_round(src[kk + q]);
                for (; q < 32; q++) dst[q] = 0;
            }
        }
    }
}

/* op(A) = A^T (A stored k x m): 16 packed rows at a time, r in
 * [0, batch * Mp / 16). Two stored rows kk, kk+1 give 16 pairs (32-bit
 * words), one per packed row; the 16 k-pairs of a tile, transposed, are
 * its 16 rows. */
TARGET static void pack_at_blocks(void *p, long lo, long hi) {
    amx_job *j = p;
    int per = j->Mp / 16;
    const __m512i inter = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7,
                                           22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    for (long r = lo; r < hi; r++) {
        int bi = (int)(r / per), i16 = (int)(r % per), i0 = i16 * 16;
        int valid = j->m - i0 < 16 ? (j->m - i0 > 0 ? j->m - i0 : 0) : 16;
        __mmask16 mask = (__mmask16)((1u << valid) - 1u);
        const float *src = j->a + bi * j->sa + i0;
        for (int t = 0; t < j->kt; t++) {
            __m512i w[16];
            for (int q = 0; q < 16; q++) {
                int kk = t * 32 + 2 * q;
                __m512 x0 = kk < j->k ? _mm512_maskz_loadu_ps(mask, src + (size_t)kk * j->lda) : _mm512_setzero_ps();
                __m512 x1 = kk + 1 < j->k ? _mm512_maskz_loadu_ps(mask, src + (size_t)(kk + 1) * j->lda) : _mm512_setzero_ps();
                /* lanes 0-15: x0, 16-31: x1; then word i = (x0[i], x1[i]) */
                w[q] = _mm512_permutexvar_epi16(inter, (__m512i)_mm512_cvtne2ps_pbh(x1, x0));
            }
            simd_transpose16(w);
            uint16_t *dst = A_TILE(j, bi, i16, t);
            for (int i = 0; i < 16; i++) _mm512_storeu_si512((void *)(dst + i * 32), w[i]);
        }
    }
}

/* op(B) = B: one k-pair row, r in [0, batch * Kp/2): rows k0 = 2 kp and
 * k1 = k0 + 1 of B interleaved, 16 columns (one 64-byte tile row) at a time */
TARGET static void pack_b_rows(void *p, long lo, long hi) {
    amx_job *j = p;
    int half = j->Kp / 2;
    const __m512i lo_idx = _mm512_set_epi16(47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8,
                                            39, 7, 38, 6, 37, 5, 36, 4, 35, 3, 34, 2, 33, 1, 32, 0);
    const __m512i hi_idx = _mm512_set_epi16(63, 31, 62, 30, 61, 29, 60, 28, 59, 27, 58, 26, 57, 25, 56, 24,
                                            55, 23, 54, 22, 53, 21, 52, 20, 51, 19, 50, 18, 49, 17, 48, 16);
    for (long r = lo; r < hi; r++) {
        int bi = (int)(r / half), kp = (int)(r % half);
        const float *src = j->b + bi * j->sb;
        int k0 = 2 * kp, k1 = 2 * kp + 1;
        int v0 = k0 < j->k, v1 = k1 < j->k;
        const float *r0 = src + (size_t)k0 * j->ldb, *r1 = src + (size_t)k1 * j->ldb;
        int jj = 0;
        if (v1)
            for (; jj + 32 <= j->n; jj += 32) {
                __m512i x0 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r0 + jj + 16), _mm512_loadu_ps(r0 + jj));
                __m512i x1 = (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(r1 + jj + 16), _mm512_loadu_ps(r1 + jj));
                uint16_t *d0 = B_TILE(j, bi, jj / 16, kp / 16) + (kp % 16) * 32;
                uint16_t *d1 = B_TILE(j, bi, jj / 16 + 1, kp / 16) + (kp % 16) * 32;
                _mm512_storeu_si512((void *)d0, _mm512_permutex2var_epi16(x0, lo_idx, x1));
                _mm512_storeu_si512((void *)d1, _mm512_permutex2var_epi16(x0, hi_idx, x1));
            }
        for (; jj < j->Np; jj++) {
            uint16_t *d = B_TILE(j, bi, jj / 16, kp / 16) + (kp % 16) * 32 + (jj % 16) * 2;
            d[0] = v0 && jj < j->n ? bf16_round(r0[jj]) : 0;
            d[1] = v1 && jj < j->n ? bf16_round(r1[jj]) : 0;
        }
    }
}

/* op(B) = B^T (B stored n x k): 16 columns of op(B) at a time, r in
 * [0, batch * Np / 16). Stored row j read as bf16 is column j's k-pairs in
 * order (16 words a tile); the 16 columns' words, transposed, are the
 * tile's 16 k-pair rows. */
TARGET static void pack_bt_blocks(void *p, long lo, long hi) {
    amx_job *j = p;
    int per = j->Np / 16;
    for (long r = lo; r < hi; r++) {
        int bi = (int)(r / per), j16 = (int)(r % per);
        const float *src = j->b + bi * j->sb;
        for (int t = 0; t < j->kt; t++) {
            int kk = t * 32, left = j->k - kk;
            __mmask16 m0 = simd_mask16(left), m1 = simd_mask16(left - 16);
            __m512i w[16];
            for (int c = 0; c < 16; c++) {
                int jj = j16 * 16 + c;
                w[c] = _mm512_setzero_si512();
                if (jj < j->n && left > 0) {
                    const float *row = src + (size_t)jj * j->ldb + kk;
                    w[c] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m1, row + 16), _mm512_maskz_loadu_ps(m0, row));
                }
            }
            simd_transpose16(w);
            uint16_t *dst = B_TILE(j, bi, j16, t);
            for (int q = 0; q < 16; q++) _mm512_storeu_si512((void *)(dst + q * 32), w[q]);
        }
    }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config;

/* 32 x 32 blocks of C: t in [0, batch * mb * nb) */
TARGET static void block_range(void *p, long lo, long hi) {
    amx_job *j = p;
    tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.rows[t] = 16;
        cfg.colsb[t] = 64;
    }
    _tile_loadconfig(&cfg);
    float out[32 * 32];
    long per = (long)j->mb * j->nb;
    for (long t = lo; t < hi; t++) {
        int bi = (int)(t / per);
        int ib = (int)(t % per / j->nb), jb = (int)(t % j->nb);
        int i0 = ib * 32, j0 = jb * 32;
        const uint16_t *a0 = A_TILE(j, bi, 2 * ib, 0), *a1 = A_TILE(j, bi, 2 * ib + 1, 0);
        const uint16_t *b0 = B_TILE(j, bi, 2 * jb, 0), *b1 = B_TILE(j, bi, 2 * jb + 1, 0);
        int ie = j->m - i0 < 32 ? j->m - i0 : 32, je = j->n - j0 < 32 ? j->n - j0 : 32;
        float *c = j->c + bi * j->sc + (size_t)i0 * j->ldc + j0;
        long sc = (long)j->ldc * 4;
        /* a whole block with alpha 1 and beta 0 or 1: accumulate in C itself */
        int direct = ie == 32 && je == 32 && j->alpha == 1.0f && (j->beta == 0.0f || j->beta == 1.0f);
        if (direct && j->beta == 1.0f) {
            _tile_loadd(0, c, sc);
            _tile_loadd(1, c + 16, sc);
            _tile_loadd(2, c + (size_t)16 * j->ldc, sc);
            _tile_loadd(3, c + (size_t)16 * j->ldc + 16, sc);
        } else {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
        }
        for (int q = 0; q < j->kt; q++) {
            _tile_loadd(4, a0 + (size_t)q * 512, 64);
            _tile_loadd(6, b0 + (size_t)q * 512, 64);
            _tile_loadd(5, a1 + (size_t)q * 512, 64);
            _tile_loadd(7, b1 + (size_t)q * 512, 64);
            _tile_dpbf16ps(0, 4, 6);
            _tile_dpbf16ps(1, 4, 7);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
        if (direct) {
            _tile_stored(0, c, sc);
            _tile_stored(1, c + 16, sc);
            _tile_stored(2, c + (size_t)16 * j->ldc, sc);
            _tile_stored(3, c + (size_t)16 * j->ldc + 16, sc);
            continue;
        }
        _tile_stored(0, out, 128);
        _tile_stored(1, out + 16, 128);
        _tile_stored(2, out + 16 * 32, 128);
        _tile_stored(3, out + 16 * 32 + 16, 128);
        __m512 va = _mm512_set1_ps(j->alpha), vb = _mm512_set1_ps(j->beta);
        for (int i = 0; i < ie; i++) {
            float *cr = c + (size_t)i * j->ldc;
            const float *o = out + i * 32;
            for (int q = 0; q < je; q += 16) {
                __mmask16 mk = simd_mask16(je - q);
                __m512 r = _mm512_mul_ps(va, _mm512_loadu_ps(o + q));
                if (j->beta != 0.0f) r = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(mk, cr + q), r);
                _mm512_mask_storeu_ps(cr + q, mk, r);
            }
        }
    }
    _tile_release();
}

/* packing buffers, one pair per thread (amx_gemm_local runs on the ops
 * pool's workers), grown as needed */
static __thread uint16_t *buf_a, *buf_b;
static __thread size_t cap_a, cap_b;

static uint16_t *grow(uint16_t **p, size_t *cap, size_t n) {
    if (n > *cap) {
        free(*p);
        *p = aligned_alloc(64, (n * sizeof(uint16_t) + 63) / 64 * 64);
        if (!*p) die("out of memory: %zu bytes for an AMX packing buffer", n * sizeof(uint16_t));
        *cap = n;
    }
    return *p;
}

/* one packing pass over `items`: on the calling thread when local or when
 * the matrix is small (`elems` floats), else on the thread pool */
static void pack(int local, long elems, long items, long grain, pool_range_fn fn, amx_job *j) {
    if (local || elems < 32768) fn(j, 0, items);
    else pool_parallel_for(items, grain, fn, j);
}

/* the product on the thread pool (local = 0) or on the calling thread alone */
static void gemm(int local, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                 long sa, const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc,
                 int batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    if (!amx_available()) die("AMX products asked for, but %s", amx_unavailable_reason());
    amx_job j = {.a = A, .b = B, .ta = ta, .tb = tb, .lda = lda, .ldb = ldb, .sa = sa, .sb = sb,
                 .m = m, .n = n, .k = k, .batch = batch, .alpha = alpha, .beta = beta, .c = C,
                 .ldc = ldc, .sc = sc};
    j.Mp = (m + 31) / 32 * 32;
    j.Np = (n + 31) / 32 * 32;
    j.Kp = (k + 31) / 32 * 32;
    if (j.Kp == 0) j.Kp = 32; /* k = 0: zero tiles, C = beta * C */
    j.kt = j.Kp / 32;
    j.mb = j.Mp / 32;
    j.nb = j.Np / 32;
    j.pa = grow(&buf_a, &cap_a, (size_t)batch * j.Mp * j.Kp);
    j.pb = grow(&buf_b, &cap_b, (size_t)batch * j.Kp * j.Np);
    /* op(A): rows, or blocks of 16 rows when transposed; op(B): k-pair
     * rows, or blocks of 16 columns when transposed */
    pack(local, (long)m * k * batch, ta ? (long)batch * (j.Mp / 16) : (long)batch * j.Mp, ta ? 2 : 16,
         ta ? pack_at_blocks : pack_a_rows, &j);
    pack(local, (long)k * n * batch, tb ? (long)batch * (j.Np / 16) : (long)batch * (j.Kp / 2), tb ? 1 : 8,
         tb ? pack_bt_blocks : pack_b_rows, &j);
    long blocks = (long)batch * j.mb * j.nb;
    if (local || blocks * j.Kp < 4096) block_range(&j, 0, blocks);
    else pool_parallel_for(blocks, 1, block_range, &j);
}

void amx_gemm_batched(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                      long sa, const float *B, int ldb, long sb, float beta, float *C, int ldc,
                      long sc, int batch) {
    gemm(0, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

void amx_gemm_local(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                    long sa, const float *B, int ldb, long sb, float beta, float *C, int ldc,
                    long sc, int batch) {
    gemm(1, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

#else

void amx_gemm_batched(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                      long sa, const float *B, int ldb, long sb, float beta, float *C, int ldc,
                      long sc, int batch) {
    (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)A, (void)lda, (void)sa;
    (void)B, (void)ldb, (void)sb, (void)beta, (void)C, (void)ldc, (void)sc, (void)batch;
    die("AMX products are not built for this architecture");
}

void amx_gemm_local(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                    long sa, const float *B, int ldb, long sb, float beta, float *C, int ldc,
                    long sc, int batch) {
    amx_gemm_batched(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

#endif
