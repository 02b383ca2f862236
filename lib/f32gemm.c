/* f32gemm.c - small float32 products on one thread with AVX-512 (see
 * f32gemm.h).
 *
 * For each product: op(B) is packed 32 columns at a time into a panel of
 * k rows x 32 floats (zeros past n); op(A) is read where it lies, eight
 * rows at a time, one float broadcast per row and k step. The kernel keeps
 * an 8 x 32 block of C in 16 registers:
 *
 *   for kk in 0..k-1:  c[r][0..31] += op(A)[i0 + r][kk] * panel[kk][0..31]
 *
 * then writes alpha * c + beta * C over the valid rows and columns. Rows
 * past m repeat the last row (computed, not stored). */
#include "f32gemm.h"

#include <stdlib.h>

#include "common.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#include "simd.h"
#define MC_HAVE_F32GEMM_CODE 1
#endif

int f32gemm_available(void) {
#ifdef MC_HAVE_F32GEMM_CODE
    static int state = -1; /* published whole: the pool's threads may ask first at once */
    int s = __atomic_load_n(&state, __ATOMIC_ACQUIRE);
    if (s < 0) {
        __builtin_cpu_init();
        s = __builtin_cpu_supports("avx512f") ? 1 : 0; /* checks the OS saves zmm too */
        __atomic_store_n(&state, s, __ATOMIC_RELEASE);
    }
    return s;
#else
    return 0;
#endif
}

#ifdef MC_HAVE_F32GEMM_CODE

#define TARGET __attribute__((target("avx512f")))
#define MR 8
#define NR 32

static __thread float *panel;
static __thread size_t panel_cap;

static float *panel_for(int k) {
    size_t n = (size_t)(k > 0 ? k : 1) * NR;
    if (n > panel_cap) {
        free(panel);
        panel = aligned_alloc(64, n * sizeof(float));
        if (!panel) die("out of memory: %zu bytes for a product panel", n * sizeof(float));
        panel_cap = n;
    }
    return panel;
}

/* panel[kk][jj] = op(B)[kk][j0 + jj] for jj < w, else 0 */
TARGET static void pack_panel(const float *B, int ldb, int tb, int k, int j0, int w, float *p) {
    __mmask16 m0 = simd_mask16(w), m1 = simd_mask16(w - 16);
    if (!tb) {
        for (int kk = 0; kk < k; kk++) {
            const float *s = B + (size_t)kk * ldb + j0;
            _mm512_store_ps(p + (size_t)kk * NR, _mm512_maskz_loadu_ps(m0, s));
            _mm512_store_ps(p + (size_t)kk * NR + 16, _mm512_maskz_loadu_ps(m1, s + 16));
        }
        return;
    }
    /* op(B) = B^T: column j0 + jj of op(B) is stored row j0 + jj; 16
     * stored rows x 16 k at a time, transposed into 16 panel rows */
    for (int kk = 0; kk < k; kk += 16) {
        __mmask16 mk = simd_mask16(k - kk);
        for (int h = 0; h < 2; h++) {
            __m512i r[16];
            for (int c = 0; c < 16; c++)
                r[c] = h * 16 + c < w ? _mm512_castps_si512(_mm512_maskz_loadu_ps(mk, B + (size_t)(j0 + h * 16 + c) * ldb + kk))
                                      : _mm512_setzero_si512();
            simd_transpose16(r);
            for (int q = 0; q < 16 && kk + q < k; q++)
                _mm512_store_ps(p + (size_t)(kk + q) * NR + h * 16, _mm512_castsi512_ps(r[q]));
        }
    }
}

#define ROW_FMA(r)                                        \
    {                                                     \
        __m512 a = _mm512_set1_ps(p##r[o]);              \
        c##r##0 = _mm512_fmadd_ps(a, b0, c##r##0);        \
        c##r##1 = _mm512_fmadd_ps(a, b1, c##r##1);        \
    }
#define ROW_OUT(r)                                                       \
    if (r < rows) {                                                      \
        float *cr = C[r];                                                \
        __m512 x0 = _mm512_mul_ps(va, c##r##0), x1 = _mm512_mul_ps(va, c##r##1); \
        if (beta != 0.0f) {                                              \
            x0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, cr), x0); \
            x1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, cr + 16), x1); \
        }                                                                \
        _mm512_mask_storeu_ps(cr, m0, x0);                               \
        _mm512_mask_storeu_ps(cr + 16, m1, x1);                          \
    }

/* rows (<= MR) x w (<= NR) block of C, its row r at C[r]; row r of op(A)
 * starts at ar[r] and steps by sk along k */
TARGET static void block(const float *const *ar, long sk, int k, const float *p, float alpha, float beta,
                         float *const *C, int rows, int w) {
    const float *p0 = ar[0], *p1 = ar[1], *p2 = ar[2], *p3 = ar[3], *p4 = ar[4], *p5 = ar[5], *p6 = ar[6], *p7 = ar[7];
    __m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    long o = 0;
    for (int kk = 0; kk < k; kk++, o += sk, p += NR) {
        __m512 b0 = _mm512_load_ps(p), b1 = _mm512_load_ps(p + 16);
        ROW_FMA(0) ROW_FMA(1) ROW_FMA(2) ROW_FMA(3) ROW_FMA(4) ROW_FMA(5) ROW_FMA(6) ROW_FMA(7)
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 m0 = simd_mask16(w), m1 = simd_mask16(w - 16);
    ROW_OUT(0) ROW_OUT(1) ROW_OUT(2) ROW_OUT(3) ROW_OUT(4) ROW_OUT(5) ROW_OUT(6) ROW_OUT(7)
}

/* The next panel's source, fetched into the caches a few lines before
 * each block of the current panel: the attention's operands come from
 * memory, rows 1 KiB or more apart, which the hardware does not foresee
 * (packing a panel took a third of the time of t5-mini's Q K^T). Lines:
 * op(B) = B^T: each of its w stored rows, k floats; else each of k rows,
 * its w floats. */
typedef struct {
    const float *B; /* NULL: no next panel */
    int ldb, tb, k, j0, w, per_row;
    long lines, done;
    int row, col; /* of line `done` */
} ahead;

static void ahead_set(ahead *h, const float *B, int ldb, int tb, int k, int j0, int w) {
    h->B = B, h->ldb = ldb, h->tb = tb, h->k = k, h->j0 = j0, h->w = w, h->done = 0, h->row = 0, h->col = 0;
    h->per_row = tb ? (k + 15) / 16 : (w + 15) / 16;
    h->lines = !B || k <= 0 ? 0 : (long)(tb ? w : k) * h->per_row;
}

TARGET static inline void ahead_fetch(ahead *h, long upto) {
    if (upto > h->lines) upto = h->lines;
    for (; h->done < upto; h->done++) {
        const float *x = h->tb ? h->B + (size_t)(h->j0 + h->row) * h->ldb + 16 * h->col
                               : h->B + (size_t)h->row * h->ldb + h->j0 + 16 * h->col;
        _mm_prefetch((const char *)x, _MM_HINT_T0);
        if (++h->col == h->per_row) h->col = 0, h->row++;
    }
}

/* row r of a matrix whose rows come in groups of g (g 0: one group), g
 * rows ld apart, the groups gs apart */
static inline size_t group_row(int r, int g, long ld, long gs) {
    return g > 0 ? (size_t)(r / g) * gs + (size_t)(r % g) * ld : (size_t)r * ld;
}

void f32gemm_local_groups(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,
                          int ga, long gsa, const float *B, int ldb, long sb, float beta, float *C, int ldc,
                          long sc, int gc, long gsc, int batch) {
    if (m <= 0 || n <= 0 || batch <= 0) return;
    if (!f32gemm_available()) die("f32gemm_local called on a CPU without AVX-512F");
    if (ta && ga > 0) die("f32gemm_local_groups: rows of op(A) in groups need transA = 0");
    float *p = panel_for(k);
    long sk = ta ? lda : 1; /* op(A)[i][kk] = A[row(i) + kk * sk] */
    long si = ta ? 1 : lda;
    int blocks = (m + MR - 1) / MR;
    for (int bi = 0; bi < batch; bi++) {
        const float *Ab = A + bi * sa, *Bb = B + bi * sb;
        float *Cb = C + bi * sc;
        for (int j0 = 0; j0 < n; j0 += NR) {
            int w = n - j0 < NR ? n - j0 : NR;
            pack_panel(Bb, ldb, tb, k, j0, w, p);
            ahead h;
            if (j0 + NR < n) ahead_set(&h, Bb, ldb, tb, k, j0 + NR, n - j0 - NR < NR ? n - j0 - NR : NR);
            else ahead_set(&h, bi + 1 < batch ? Bb + sb : NULL, ldb, tb, k, 0, n < NR ? n : NR);
            long per = (h.lines + blocks - 1) / blocks;
            for (int i0 = 0; i0 < m; i0 += MR) {
                int rows = m - i0 < MR ? m - i0 : MR;
                const float *a[MR];
                float *c[MR];
                for (int r = 0; r < MR; r++) {
                    int i = i0 + (r < rows ? r : rows - 1);
                    a[r] = Ab + group_row(i, ga, si, gsa);
                    c[r] = Cb + group_row(i, gc, ldc, gsc) + j0;
                }
                ahead_fetch(&h, h.done + per);
                block(a, sk, k, p, alpha, beta, c, rows, w);
            }
        }
    }
}

void f32gemm_local(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,
                   const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc, int batch) {
    f32gemm_local_groups(ta, tb, m, n, k, alpha, A, lda, sa, 0, 0, B, ldb, sb, beta, C, ldc, sc, 0, 0, batch);
}

#else

void f32gemm_local_groups(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,
                          int ga, long gsa, const float *B, int ldb, long sb, float beta, float *C, int ldc,
                          long sc, int gc, long gsc, int batch) {
    (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)A, (void)lda, (void)sa, (void)ga, (void)gsa;
    (void)B, (void)ldb, (void)sb, (void)beta, (void)C, (void)ldc, (void)sc, (void)gc, (void)gsc, (void)batch;
    die("f32gemm_local is not built for this architecture");
}

void f32gemm_local(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,
                   const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc, int batch) {
    (void)ta, (void)tb, (void)m, (void)n, (void)k, (void)alpha, (void)A, (void)lda, (void)sa;
    (void)B, (void)ldb, (void)sb, (void)beta, (void)C, (void)ldc, (void)sc, (void)batch;
    die("f32gemm_local is not built for this architecture");
}

#endif
