/* ops.c - the T5 layer functions of ops.h: C loops plus be_gemm calls.
 *
 * The loops run on a small pool of threads (as many as the BLAS uses, see
 * pool_parallel_for): with two cores, leaving the elementwise work on one
 * thread while the BLAS threads idle cost about a third of a training step.
 * Work is split so that every output element is computed by exactly the
 * same arithmetic whatever the thread count; reductions across rows (the
 * gradients of norm weights and IA3 vectors) go through fixed chunks of
 * rows summed in chunk order, so results do not depend on the threads. */
#include "ops.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"

/* ------------------------------------------------------------ vector exp */

/* exp over 4 floats with SSE2 (baseline on x86-64): x = n ln2 + f with
 * |f| <= ln2/2 (Cody-Waite split of ln2), e^f by its degree-7 Taylor
 * polynomial (truncation error below 2e-7 relative), 2^n through the
 * exponent bits. Inputs are clamped to [-87.3, 88.3], so exp(-inf) gives
 * about 1e-38, not 0: callers zero masked entries themselves. Every element
 * of every array goes through exp4 (tails are padded), so results never
 * depend on how the work was split between threads. Elsewhere: expf. */
#if defined(__SSE2__)
#include <emmintrin.h>
#define VEXP 1
/* one definition for every vector width: P is the intrinsics' prefix (_mm
 * or _mm512), VF/VI the float/int vector types, CASTI the int->float cast */
#define DEFINE_EXP(ATTR, NAME, P, VF, VI, CASTI)                                  \
    ATTR static inline VF NAME(VF x) {                                            \
        x = P##_min_ps(P##_max_ps(x, P##_set1_ps(-87.3f)), P##_set1_ps(88.3f));   \
        VI n = P##_cvtps_epi32(P##_mul_ps(x, P##_set1_ps(1.44269504088896341f))); \
        VF nf = P##_cvtepi32_ps(n);                                               \
        VF f = P##_sub_ps(x, P##_mul_ps(nf, P##_set1_ps(0.693359375f)));          \
        f = P##_sub_ps(f, P##_mul_ps(nf, P##_set1_ps(-2.12194440e-4f)));          \
        VF p = P##_set1_ps(1.0f / 5040.0f);                                       \
        p = P##_add_ps(P##_mul_ps(p, f), P##_set1_ps(1.0f / 720.0f));             \
        p = P##_add_ps(P##_mul_ps(p, f), P##_set1_ps(1.0f / 120.0f));             \
        p = P##_add_ps(P##_mul_ps(p, f), P##_set1_ps(1.0f / 24.0f));              \
        p = P##_add_ps(P##_mul_ps(p, f), P##_set1_ps(1.0f / 6.0f));               \
        p = P##_add_ps(P##_mul_ps(p, f), P##_set1_ps(0.5f));                      \
        p = P##_add_ps(P##_mul_ps(p, f), P##_set1_ps(1.0f));                      \
        p = P##_add_ps(P##_mul_ps(p, f), P##_set1_ps(1.0f));                      \
        VI e = P##_slli_epi32(P##_add_epi32(n, P##_set1_epi32(127)), 23);         \
        return P##_mul_ps(p, CASTI(e));                                           \
    }
DEFINE_EXP(, exp4, _mm, __m128, __m128i, _mm_castsi128_ps)
#else
#define VEXP 0
#endif

/* The same arithmetic on 16 lanes with AVX-512, where the CPU has it
 * (ops_simd_lanes): exp16 is exp4's definition on 16 lanes, and the sums
 * below are taken in exp4's order, so both widths give the same bytes. */
#if VEXP && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "simd.h"
#define VEXP16 1
#define AVX512 __attribute__((target("avx512f")))
DEFINE_EXP(AVX512, exp16, _mm512, __m512, __m512i, _mm512_castsi512_ps)
#else
#define VEXP16 0
#endif

static int simd_lanes; /* 16 with AVX-512, else 4 (or 1 without SSE2); 0 = not yet known */

int ops_simd_lanes(void) {
    int lanes = __atomic_load_n(&simd_lanes, __ATOMIC_ACQUIRE);
    if (!lanes) { /* the pool's threads may ask first at once: each finds the same */
#if VEXP16
        __builtin_cpu_init();
        lanes = __builtin_cpu_supports("avx512f") ? 16 : 4;
#else
        lanes = VEXP ? 4 : 1;
#endif
        __atomic_store_n(&simd_lanes, lanes, __ATOMIC_RELEASE);
    }
    return lanes;
}

int ops_set_simd_lanes(int lanes) {
    int have = ops_simd_lanes();
    if (lanes != 1 && lanes != 4 && lanes != 16) return -1;
    if (lanes > have || (lanes == 1) != (have == 1)) return -1;
    __atomic_store_n(&simd_lanes, lanes, __ATOMIC_RELEASE);
    return 0;
}

#if VEXP16
/* exp4's loop on 16 lanes at a time: acc gets the four quarters in order,
 * as four steps of exp4's loop would add them */
AVX512 static long vexp16(float *y, const float *x, long n, float s, float a, __m128 *acc) {
    __m512 vs = _mm512_set1_ps(s), va = _mm512_set1_ps(a);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = _mm512_mul_ps(va, exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs)));
        _mm512_storeu_ps(y + i, e);
        *acc = _mm_add_ps(*acc, _mm512_castps512_ps128(e));
        *acc = _mm_add_ps(*acc, _mm512_extractf32x4_ps(e, 1));
        *acc = _mm_add_ps(*acc, _mm512_extractf32x4_ps(e, 2));
        *acc = _mm_add_ps(*acc, _mm512_extractf32x4_ps(e, 3));
    }
    return i;
}
#endif

/* y[i] = a * exp(x[i] - s) for i < n (y may alias x); returns the sum of y. */
static float vexp(float *y, const float *x, long n, float s, float a) {
    float sum = 0;
#if VEXP
    __m128 vs = _mm_set1_ps(s), va = _mm_set1_ps(a), acc = _mm_setzero_ps();
    long i = 0;
#if VEXP16
    if (ops_simd_lanes() == 16) i = vexp16(y, x, n, s, a, &acc);
#endif
    for (; i + 4 <= n; i += 4) {
        __m128 e = _mm_mul_ps(va, exp4(_mm_sub_ps(_mm_loadu_ps(x + i), vs)));
        _mm_storeu_ps(y + i, e);
        acc = _mm_add_ps(acc, e);
    }
    if (i < n) {
        float t[4] = {s, s, s, s};
        for (long j = i; j < n; j++) t[j - i] = x[j];
        _mm_storeu_ps(t, _mm_mul_ps(va, exp4(_mm_sub_ps(_mm_loadu_ps(t), vs))));
        for (long j = i; j < n; j++) y[j] = t[j - i], sum += t[j - i];
    }
    float t[4];
    _mm_storeu_ps(t, acc);
    sum += (t[0] + t[1]) + (t[2] + t[3]);
#else
    for (long i = 0; i < n; i++) {
        float e = a * expf(x[i] - s);
        y[i] = e;
        sum += e;
    }
#endif
    return sum;
}

static void zero_range(void *ctx, long lo, long hi) { memset((float *)ctx + lo, 0, sizeof(float) * (hi - lo)); }

void ops_zero(float *x, long n) { pool_parallel_for(n, 1 << 16, zero_range, x); }

/* Scratch for per-chunk partial sums (grows, never shrinks). */
#define ROW_CHUNK 64
static float *scratch;
static size_t scratch_cap;

static float *get_scratch(size_t n) {
    if (n > scratch_cap) {
        free(scratch);
        scratch = mallocCheck(sizeof(float) * n);
        scratch_cap = n;
    }
    return scratch;
}

/* dst (D) += sum over chunks of part (nch, D), in chunk order */
static void sum_chunks(float *dst, const float *partial, long nch, int D) {
    for (long c = 0; c < nch; c++)
        for (int i = 0; i < D; i++) dst[i] += partial[c * D + i];
}

/* Row sums in one fixed order that a 16-lane vector keeps: term i goes to
 * partial sum i % 16 over the whole blocks of 16, the tail to a running sum
 * s; then the partials fold in halves (8, 4, 2, 1) and s is added. The
 * term is a[i] * b[i], or (a[i] * w[i]) * b[i] with w. */
static float fold16(float *p, float s) {
    for (int w = 8; w; w >>= 1)
        for (int l = 0; l < w; l++) p[l] += p[l + w];
    return p[0] + s;
}

#if VEXP16
AVX512 static float dot16(const float *a, const float *b, const float *w, int n) {
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 t = _mm512_loadu_ps(a + i);
        if (w) t = _mm512_mul_ps(t, _mm512_loadu_ps(w + i));
        acc = _mm512_add_ps(acc, _mm512_mul_ps(t, _mm512_loadu_ps(b + i)));
    }
    float p[16], s = 0;
    _mm512_storeu_ps(p, acc);
    for (; i < n; i++) s += (w ? a[i] * w[i] : a[i]) * b[i];
    return fold16(p, s);
}
#endif

static float dot_fixed(const float *a, const float *b, const float *w, int n) {
#if VEXP16
    if (ops_simd_lanes() == 16) return dot16(a, b, w, n);
#endif
    float p[16] = {0}, s = 0;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) p[l] += (w ? a[i + l] * w[i + l] : a[i + l]) * b[i + l];
    for (; i < n; i++) s += (w ? a[i] * w[i] : a[i]) * b[i];
    return fold16(p, s);
}

/* Elementwise loops on 16 lanes: each lane does what the C loop beside it
 * does, operation for operation, so both give the same bytes. */
#if VEXP16
#define LD(m, x) _mm512_maskz_loadu_ps(m, x)

/* y = (x * r) * w, or x * r without w */
AVX512 static void scale2_16(float *y, const float *x, float r, const float *w, int n) {
    __m512 vr = _mm512_set1_ps(r);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = simd_mask16(n - i);
        __m512 t = _mm512_mul_ps(LD(m, x + i), vr);
        _mm512_mask_storeu_ps(y + i, m, w ? _mm512_mul_ps(t, LD(m, w + i)) : t);
    }
}

/* dx (+)= ((r * w) * d) - (x * k); pw += (d * x) * r (pw may be NULL) */
AVX512 static void rms_bwd16(float *dx, float *pw, const float *d, const float *x, const float *w, float r,
                             float k, int n, int acc) {
    __m512 vr = _mm512_set1_ps(r), vk = _mm512_set1_ps(k);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = simd_mask16(n - i);
        __m512 vd = LD(m, d + i), vx = LD(m, x + i);
        if (dx) {
            __m512 t = _mm512_sub_ps(_mm512_mul_ps(_mm512_mul_ps(vr, LD(m, w + i)), vd), _mm512_mul_ps(vx, vk));
            if (acc) t = _mm512_add_ps(LD(m, dx + i), t);
            _mm512_mask_storeu_ps(dx + i, m, t);
        }
        if (pw) _mm512_mask_storeu_ps(pw + i, m, _mm512_add_ps(LD(m, pw + i), _mm512_mul_ps(_mm512_mul_ps(vd, vx), vr)));
    }
}

/* y (+)= a * b (set, or added to y with acc) */
AVX512 static void mul16(float *y, const float *a, const float *b, long n, int acc) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = simd_mask16(n - i);
        __m512 t = _mm512_mul_ps(LD(m, a + i), LD(m, b + i));
        if (acc) t = _mm512_add_ps(LD(m, y + i), t);
        _mm512_mask_storeu_ps(y + i, m, t);
    }
}

/* y += x */
AVX512 static void add16(float *y, const float *x, long n) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 m = simd_mask16(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_add_ps(LD(m, y + i), LD(m, x + i)));
    }
}

/* d = p * (d - dot) */
AVX512 static void dscore16(float *d, const float *pr, float dot, int n) {
    __m512 vdot = _mm512_set1_ps(dot);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = simd_mask16(n - i);
        _mm512_mask_storeu_ps(d + i, m, _mm512_mul_ps(LD(m, pr + i), _mm512_sub_ps(LD(m, d + i), vdot)));
    }
}

/* softmax's first pass over row[0..n): for keys not masked out, row =
 * row + bias (0 without), returns their maximum; *masked set when a key
 * is masked */
AVX512 static float bias_max16(float *row, const float *bias, const uint8_t *mask, int n, int *masked) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = simd_mask16(n - i), keep = m;
        if (mask) {
            uint8_t b[16] = {0};
            memcpy(b, mask + i, n - i < 16 ? (size_t)(n - i) : 16);
            keep = _mm512_mask_test_epi32_mask(m, _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b)),
                                               _mm512_set1_epi32(0xff));
            if (keep != m) *masked = 1;
        }
        __m512 t = _mm512_add_ps(LD(keep, row + i), bias ? LD(keep, bias + i) : _mm512_setzero_ps());
        _mm512_mask_storeu_ps(row + i, keep, t);
        mx = _mm512_mask_max_ps(mx, keep, mx, t);
    }
    return _mm512_reduce_max_ps(mx);
}
#undef LD
#endif

void op_embed_forward(float *out, const int *ids, const float *table, int N, int D) {
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * D, table + (size_t)ids[n] * D, sizeof(float) * D);
}

void op_embed_backward(float *dtable, const float *dout, const int *ids, int N, int D) {
    for (int n = 0; n < N; n++) {
        float *dt = dtable + (size_t)ids[n] * D;
        const float *d = dout + (size_t)n * D;
        for (int i = 0; i < D; i++) dt[i] += d[i];
    }
}

typedef struct {
    float *out, *rstd, *dx, *partial;
    const float *x, *w, *dout, *rs;
    int D;
    long N;
    float eps;
    int acc;
} rms_ctx;

static void rms_fwd_rows(void *p, long lo, long hi) {
    rms_ctx *c = p;
    int D = c->D;
    for (long n = lo; n < hi; n++) {
        const float *xn = c->x + (size_t)n * D;
        float *on = c->out + (size_t)n * D;
        float ss = dot_fixed(xn, xn, NULL, D);
        float r = 1.0f / sqrtf(ss / D + c->eps);
        c->rstd[n] = r;
#if VEXP16
        if (ops_simd_lanes() == 16) {
            scale2_16(on, xn, r, c->w, D);
            continue;
        }
#endif
        for (int i = 0; i < D; i++) on[i] = xn[i] * r * c->w[i];
    }
}

void op_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                        float eps) {
    rms_ctx c = {.out = out, .rstd = rstd, .x = x, .w = w, .D = D, .eps = eps};
    pool_parallel_for(N, 16, rms_fwd_rows, &c);
}

/* chunk ch covers rows [ch*ROW_CHUNK, ...); partial dw of the chunk in
 * c->partial + ch*D */
static void rms_bwd_chunks(void *p, long lo, long hi) {
    rms_ctx *c = p;
    int D = c->D;
    long N = c->N;
    for (long ch = lo; ch < hi; ch++) {
        float *pw = c->partial ? c->partial + ch * D : NULL;
        if (pw) memset(pw, 0, sizeof(float) * D);
        long r1 = (ch + 1) * ROW_CHUNK < N ? (ch + 1) * ROW_CHUNK : N;
        for (long n = ch * ROW_CHUNK; n < r1; n++) {
            const float *xn = c->x + (size_t)n * D, *dn = c->dout + (size_t)n * D;
            float r = c->rs[n];
            float dot = dot_fixed(dn, xn, c->w, D);
            float k = dot * r * r * r / D;
#if VEXP16
            if (ops_simd_lanes() == 16) {
                rms_bwd16(c->dx ? c->dx + (size_t)n * D : NULL, pw, dn, xn, c->w, r, k, D, c->acc);
                continue;
            }
#endif
            if (c->dx) {
                float *dxn = c->dx + (size_t)n * D;
                if (c->acc)
                    for (int i = 0; i < D; i++) dxn[i] += r * c->w[i] * dn[i] - xn[i] * k;
                else
                    for (int i = 0; i < D; i++) dxn[i] = r * c->w[i] * dn[i] - xn[i] * k;
            }
            if (pw)
                for (int i = 0; i < D; i++) pw[i] += dn[i] * xn[i] * r;
        }
    }
}

void op_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int N, int D, int acc) {
    long nch = (N + ROW_CHUNK - 1) / ROW_CHUNK;
    rms_ctx c = {.N = N, .dx = dx, .x = x, .w = w, .dout = dout, .rs = rstd, .D = D, .acc = acc};
    c.partial = dw ? get_scratch((size_t)nch * D) : NULL;
    pool_parallel_for(nch, 1, rms_bwd_chunks, &c);
    if (dw) sum_chunks(dw, c.partial, nch, D);
}

void op_linear_forward(float *out, const float *x, const float *w, int N, int I, int O) {
    be_gemm(0, 1, N, O, I, 1.0f, x, I, w, I, 0.0f, out, O);
}

void op_linear_forward_naive(float *out, const float *x, const float *w, int N, int I, int O) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int i = 0; i < I; i++) s += (double)x[(size_t)n * I + i] * w[(size_t)o * I + i];
            out[(size_t)n * O + o] = (float)s;
        }
}

void op_linear_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        int N, int I, int O, int acc) {
    if (dx) be_gemm(0, 0, N, I, O, 1.0f, dout, O, w, I, acc ? 1.0f : 0.0f, dx, I);
    if (dw) be_gemm(1, 0, O, I, N, 1.0f, dout, O, x, I, 1.0f, dw, I);
}

typedef struct {
    float *out, *dx, *partial;
    const float *x, *s, *dout;
    int C;
    long N;
    int acc;
} ia3_ctx;

static void ia3_fwd_rows(void *p, long lo, long hi) {
    ia3_ctx *c = p;
    for (long n = lo; n < hi; n++) {
        const float *xn = c->x + (size_t)n * c->C;
        float *on = c->out + (size_t)n * c->C;
#if VEXP16
        if (ops_simd_lanes() == 16) {
            mul16(on, xn, c->s, c->C, 0);
            continue;
        }
#endif
        for (int i = 0; i < c->C; i++) on[i] = xn[i] * c->s[i];
    }
}

void op_ia3_forward(float *out, const float *x, const float *s, int N, int C) {
    ia3_ctx c = {.out = out, .x = x, .s = s, .C = C, .N = N};
    pool_parallel_for(N, 16, ia3_fwd_rows, &c);
}

static void ia3_bwd_chunks(void *p, long lo, long hi) {
    ia3_ctx *c = p;
    int C = c->C;
    for (long ch = lo; ch < hi; ch++) {
        float *ps = c->partial ? c->partial + ch * C : NULL;
        if (ps) memset(ps, 0, sizeof(float) * C);
        long r1 = (ch + 1) * ROW_CHUNK < c->N ? (ch + 1) * ROW_CHUNK : c->N;
        for (long n = ch * ROW_CHUNK; n < r1; n++) {
            const float *dn = c->dout + (size_t)n * C, *xn = c->x + (size_t)n * C;
#if VEXP16
            if (ops_simd_lanes() == 16) {
                if (c->dx) mul16(c->dx + (size_t)n * C, dn, c->s, C, c->acc);
                if (ps) mul16(ps, dn, xn, C, 1);
                continue;
            }
#endif
            if (c->dx) {
                float *dxn = c->dx + (size_t)n * C;
                if (c->acc)
                    for (int i = 0; i < C; i++) dxn[i] += dn[i] * c->s[i];
                else
                    for (int i = 0; i < C; i++) dxn[i] = dn[i] * c->s[i];
            }
            if (ps)
                for (int i = 0; i < C; i++) ps[i] += dn[i] * xn[i];
        }
    }
}

void op_ia3_backward(float *dx, float *ds, const float *dout, const float *x, const float *s,
                     int N, int C, int acc) {
    long nch = ((long)N + ROW_CHUNK - 1) / ROW_CHUNK;
    ia3_ctx c = {.dx = dx, .x = x, .s = s, .dout = dout, .C = C, .N = N, .acc = acc};
    c.partial = ds ? get_scratch((size_t)nch * C) : NULL;
    pool_parallel_for(nch, 1, ia3_bwd_chunks, &c);
    if (ds) sum_chunks(ds, c.partial, nch, C);
}

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* tanh through expf: 1 - 2/(exp(2u)+1). glibc's tanhf goes through expm1f
 * and costs several times more; the absolute error here stays near float
 * rounding (1e-7), which is all gelu_new needs (it uses 1 + tanh). */
static inline float fast_tanh(float u) { return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f); }

float op_gelu_new(float x) { return 0.5f * x * (1.0f + fast_tanh(GELU_C * (x + GELU_A * x * x * x))); }

typedef struct {
    float *out, *dh0, *dh1;
    const float *h0, *h1, *dout;
    int acc;
} gelu_ctx;

#if VEXP
/* gelu_new on a vector: returns g = gelu_new(x), and with dg != NULL its
 * derivative there; t = tanh(C (x + A x^3)) = 1 - 2/(exp(2u)+1). One
 * definition for both widths, as DEFINE_EXP. */
#define DEFINE_GELU(ATTR, NAME, P, VF, EXP)                                                         \
    ATTR static inline VF NAME(VF x, VF *dg) {                                                      \
        VF half = P##_set1_ps(0.5f), one = P##_set1_ps(1.0f);                                       \
        VF u = P##_mul_ps(P##_set1_ps(GELU_C),                                                      \
                          P##_add_ps(x, P##_mul_ps(P##_set1_ps(GELU_A), P##_mul_ps(x, P##_mul_ps(x, x))))); \
        VF e = EXP(P##_add_ps(u, u));                                                               \
        VF t = P##_sub_ps(one, P##_div_ps(P##_set1_ps(2.0f), P##_add_ps(e, one)));                  \
        VF opt = P##_add_ps(one, t);                                                                \
        if (dg) {                                                                                   \
            VF poly = P##_add_ps(one, P##_mul_ps(P##_set1_ps(3.0f * GELU_A), P##_mul_ps(x, x)));    \
            *dg = P##_add_ps(P##_mul_ps(half, opt),                                                 \
                             P##_mul_ps(P##_mul_ps(P##_mul_ps(half, x), P##_sub_ps(one, P##_mul_ps(t, t))), \
                                        P##_mul_ps(P##_set1_ps(GELU_C), poly)));                    \
        }                                                                                           \
        return P##_mul_ps(P##_mul_ps(half, x), opt);                                                \
    }
DEFINE_GELU(, gelu4, _mm, __m128, exp4)

/* k <= 4 elements starting at i: forward */
static inline void gelu_fwd4(gelu_ctx *c, long i, int k) {
    float x[4] = {0}, h[4] = {0}, o[4];
    for (int j = 0; j < k; j++) x[j] = c->h0[i + j], h[j] = c->h1[i + j];
    __m128 g = gelu4(_mm_loadu_ps(x), NULL);
    _mm_storeu_ps(o, _mm_mul_ps(g, _mm_loadu_ps(h)));
    for (int j = 0; j < k; j++) c->out[i + j] = o[j];
}

static inline void gelu_bwd4(gelu_ctx *c, long i, int k) {
    float x[4] = {0}, h[4] = {0}, d[4] = {0}, a0[4], a1[4];
    for (int j = 0; j < k; j++) x[j] = c->h0[i + j], h[j] = c->h1[i + j], d[j] = c->dout[i + j];
    __m128 dg, g = gelu4(_mm_loadu_ps(x), &dg);
    __m128 vd = _mm_loadu_ps(d);
    _mm_storeu_ps(a0, _mm_mul_ps(_mm_mul_ps(vd, _mm_loadu_ps(h)), dg));
    _mm_storeu_ps(a1, _mm_mul_ps(vd, g));
    if (c->acc)
        for (int j = 0; j < k; j++) c->dh0[i + j] += a0[j], c->dh1[i + j] += a1[j];
    else
        for (int j = 0; j < k; j++) c->dh0[i + j] = a0[j], c->dh1[i + j] = a1[j];
}
#endif

#if VEXP16
/* gelu_fwd4 and gelu_bwd4 on 16 lanes over [lo, hi), the tail masked: the
 * same operations in the same order on every lane */
DEFINE_GELU(AVX512, gelu16, _mm512, __m512, exp16)

AVX512 static void gelu_fwd16(gelu_ctx *c, long lo, long hi) {
    for (long i = lo; i < hi; i += 16) {
        __mmask16 m = simd_mask16(hi - i);
        __m512 g = gelu16(_mm512_maskz_loadu_ps(m, c->h0 + i), NULL);
        _mm512_mask_storeu_ps(c->out + i, m, _mm512_mul_ps(g, _mm512_maskz_loadu_ps(m, c->h1 + i)));
    }
}

AVX512 static void gelu_bwd16(gelu_ctx *c, long lo, long hi) {
    for (long i = lo; i < hi; i += 16) {
        __mmask16 m = simd_mask16(hi - i);
        __m512 dg, g = gelu16(_mm512_maskz_loadu_ps(m, c->h0 + i), &dg);
        __m512 vd = _mm512_maskz_loadu_ps(m, c->dout + i);
        __m512 a0 = _mm512_mul_ps(_mm512_mul_ps(vd, _mm512_maskz_loadu_ps(m, c->h1 + i)), dg);
        __m512 a1 = _mm512_mul_ps(vd, g);
        if (c->acc) {
            a0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c->dh0 + i), a0);
            a1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m, c->dh1 + i), a1);
        }
        _mm512_mask_storeu_ps(c->dh0 + i, m, a0);
        _mm512_mask_storeu_ps(c->dh1 + i, m, a1);
    }
}
#endif

/* The gated GELU forward (bwd 0) or backward (bwd 1) of [lo, hi): on 16
 * lanes, else in groups of 4, else one element at a time. */
static void gelu_range(gelu_ctx *c, long lo, long hi, int bwd) {
#if VEXP16
    if (ops_simd_lanes() == 16) {
        if (bwd) gelu_bwd16(c, lo, hi);
        else gelu_fwd16(c, lo, hi);
        return;
    }
#endif
#if VEXP
    for (long i = lo; i < hi; i += 4) {
        int k = hi - i < 4 ? (int)(hi - i) : 4;
        if (bwd) gelu_bwd4(c, i, k);
        else gelu_fwd4(c, i, k);
    }
#else
    for (long i = lo; i < hi; i++) {
        float x = c->h0[i];
        if (!bwd) {
            c->out[i] = op_gelu_new(x) * c->h1[i];
            continue;
        }
        float t = fast_tanh(GELU_C * (x + GELU_A * x * x * x));
        float g = 0.5f * x * (1.0f + t);
        float dg = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_A * x * x);
        if (c->acc) {
            c->dh0[i] += c->dout[i] * c->h1[i] * dg;
            c->dh1[i] += c->dout[i] * g;
        } else {
            c->dh0[i] = c->dout[i] * c->h1[i] * dg;
            c->dh1[i] = c->dout[i] * g;
        }
    }
#endif
}

/* The pool splits groups of 4 elements, so thread ranges start at multiples
 * of 4 and every element takes the same path whatever the thread count. */
typedef struct {
    gelu_ctx *c;
    long n;
    int bwd;
} gelu_blocks;

static void gelu_group_range(void *p, long lo, long hi) {
    gelu_blocks *gb = p;
    long a = lo * 4, b = hi * 4 < gb->n ? hi * 4 : gb->n;
    gelu_range(gb->c, a, b, gb->bwd);
}

void op_gated_gelu_forward(float *out, const float *h0, const float *h1, long n) {
    gelu_ctx c = {.out = out, .h0 = h0, .h1 = h1};
    gelu_blocks gb = {&c, n, 0};
    pool_parallel_for((n + 3) / 4, 1024, gelu_group_range, &gb);
}

void op_gated_gelu_backward(float *dh0, float *dh1, const float *dout, const float *h0,
                            const float *h1, long n, int acc) {
    gelu_ctx c = {.dh0 = dh0, .dh1 = dh1, .h0 = h0, .h1 = h1, .dout = dout, .acc = acc};
    gelu_blocks gb = {&c, n, 1};
    pool_parallel_for((n + 3) / 4, 1024, gelu_group_range, &gb);
}

/* ReLU (the original T5's feed-forward): elementwise, no lanes needed (a
 * compare and a select give the same bytes at any width). */
typedef struct {
    float *out;
    const float *x, *dout;
    int acc;
} relu_ctx;

static void relu_fwd_range(void *p, long lo, long hi) {
    relu_ctx *c = p;
    for (long i = lo; i < hi; i++) c->out[i] = c->x[i] > 0.0f ? c->x[i] : 0.0f;
}

static void relu_bwd_range(void *p, long lo, long hi) {
    relu_ctx *c = p;
    for (long i = lo; i < hi; i++) {
        float g = c->x[i] > 0.0f ? c->dout[i] : 0.0f;
        c->out[i] = c->acc ? c->out[i] + g : g;
    }
}

void op_relu_forward(float *out, const float *x, long n) {
    relu_ctx c = {.out = out, .x = x};
    pool_parallel_for(n, 1 << 14, relu_fwd_range, &c);
}

void op_relu_backward(float *dx, const float *dout, const float *x, long n, int acc) {
    relu_ctx c = {.out = dx, .x = x, .dout = dout, .acc = acc};
    pool_parallel_for(n, 1 << 14, relu_bwd_range, &c);
}

/* HF T5Attention._relative_position_bucket: half the buckets for each sign
 * when bidirectional; in the causal case only keys before the query count
 * (rp = -min(rp, 0)). Positions below max_exact = nb/2 get their own bucket;
 * larger ones are binned logarithmically up to max_distance. PyTorch
 * evaluates the log in float32, then truncates; we do the same so bucket
 * boundaries agree exactly. */
int op_relpos_bucket(int rp, int bidirectional, int num_buckets, int max_distance) {
    int bucket = 0, nb = num_buckets;
    if (bidirectional) {
        nb /= 2;
        if (rp > 0) bucket += nb;
        rp = rp < 0 ? -rp : rp;
    } else {
        rp = rp < 0 ? -rp : 0;
    }
    int max_exact = nb / 2;
    if (rp < max_exact) return bucket + rp;
    float l = logf((float)rp / (float)max_exact) / (float)log((double)max_distance / max_exact);
    int large = max_exact + (int)(l * (float)(nb - max_exact));
    if (large > nb - 1) large = nb - 1;
    if (large < max_exact) large = max_exact; /* t5_config_check keeps l >= 0; never index below */
    return bucket + large;
}

void op_relpos_buckets(int *buckets, int Tq, int Tk, int bidirectional, int num_buckets,
                       int max_distance) {
    for (int i = 0; i < Tq; i++)
        for (int j = 0; j < Tk; j++)
            buckets[i * Tk + j] = op_relpos_bucket(j - i, bidirectional, num_buckets, max_distance);
}

void op_relpos_bias_forward(float *bias, const float *table, const int *buckets, int H, int Tq,
                            int Tk) {
    for (int h = 0; h < H; h++)
        for (int ij = 0; ij < Tq * Tk; ij++) bias[(size_t)h * Tq * Tk + ij] = table[buckets[ij] * H + h];
}

void op_relpos_bias_backward(float *dtable, const float *dbias, const int *buckets, int H, int Tq,
                             int Tk) {
    for (int h = 0; h < H; h++)
        for (int ij = 0; ij < Tq * Tk; ij++) dtable[buckets[ij] * H + h] += dbias[(size_t)h * Tq * Tk + ij];
}

typedef struct {
    float *probs, *scratch, *dbias;
    const float *bias;
    const uint8_t *key_mask;
    const int *kv_index;
    int causal, pad_invariant, B, Tq, Tk, H, K;
    /* the products: inputs, outputs, beta of the gradient outputs */
    const float *q, *k, *v, *dout;
    float *out, *dq, *dk, *dv;
    float beta;
} att_ctx;

/* A key row's mask, once for all the query rows that read it: its first
 * masked key (v0; Tk if none) and its first visible key after that (nv; Tk
 * if none). The keys a row sees, [0, jmax) less the masked ones, are then
 * its first min(v0, jmax) exactly when nv >= jmax. */
typedef struct {
    int bk, v0, nv; /* bk -1: not yet found */
} key_prefix;

static void key_prefix_of(key_prefix *kp, const uint8_t *mask, int bk, int Tk) {
    int v = 0, n;
    while (v < Tk && (!mask || mask[v])) v++;
    for (n = v; n < Tk && mask && !mask[n]; n++) {}
    kp->bk = bk, kp->v0 = v, kp->nv = n;
}

/* softmax of rows r in [lo,hi) of probs viewed as (B*H*Tq, Tk). A row
 * with masked keys sums its exponentials one by one, an unmasked row in
 * vexp's lanes; with pad_invariant (ATT_PAD_INVARIANT) a row whose visible
 * keys are a prefix is summed as the unmasked row of that prefix, so that
 * it does not depend on the padding the rest of its batch brought. */
static void softmax_rows(void *p, long lo, long hi) {
    att_ctx *c = p;
    int Tq = c->Tq, Tk = c->Tk, H = c->H;
    long TT = (long)Tq * Tk;
    key_prefix kp = {.bk = -1}; /* rows come batch row by batch row: found once for each */
    for (long r = lo; r < hi; r++) {
        int i = (int)(r % Tq);
        int h = (int)((r / Tq) % H);
        int b = (int)(r / ((long)Tq * H));
        int bk = c->kv_index ? c->kv_index[b] : b;
        float *row = c->probs + r * Tk;
        const float *brow = c->bias ? c->bias + h * TT + (size_t)i * Tk : NULL;
        const uint8_t *mask = c->key_mask ? c->key_mask + (size_t)bk * Tk : NULL;
        int jmax = c->causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
        float mx = -INFINITY;
        int any_masked = jmax < Tk;
#if VEXP16
        if (ops_simd_lanes() == 16) mx = bias_max16(row, brow, mask, jmax, &any_masked);
        else
#endif
            for (int j = 0; j < jmax; j++) {
                if (mask && !mask[j]) {
                    any_masked = 1;
                    continue;
                }
                float s = row[j] + (brow ? brow[j] : 0.0f);
                row[j] = s;
                if (s > mx) mx = s;
            }
        if (mx == -INFINITY) { /* every key masked */
            memset(row, 0, sizeof(float) * Tk);
            continue;
        }
        int v = -1;
        if (any_masked && c->pad_invariant) {
            if (kp.bk != bk) key_prefix_of(&kp, mask, bk, Tk);
            if (kp.nv >= jmax) v = kp.v0 < jmax ? kp.v0 : jmax;
        }
        float sum;
        if (v >= 0) { /* the sum of an unpadded row of v keys */
            sum = vexp(row, row, v, mx, 1.0f);
            memset(row + v, 0, sizeof(float) * (size_t)(Tk - v));
        } else sum = vexp(row, row, jmax, mx, 1.0f);
        if (any_masked && v < 0) { /* masked entries were exponentiated too: zero them */
            sum = 0;
            for (int j = 0; j < Tk; j++) {
                if (j >= jmax || (mask && !mask[j])) row[j] = 0;
                sum += row[j];
            }
        }
        float inv = 1.0f / sum;
#if VEXP16
        if (ops_simd_lanes() == 16) {
            scale2_16(row, row, inv, NULL, jmax);
            continue;
        }
#endif
        for (int j = 0; j < jmax; j++) row[j] *= inv;
    }
}

/* the per-row products of the attention: the rows run in parallel on the
 * pool, each on one thread (be_gemm_sbatched_local: AMX in bf16, our
 * AVX-512 kernel in float32); without either, one row at a time, the BLAS
 * using every thread (splitting rows over the pool with a one-thread BLAS
 * was slower) */
typedef void (*sbatched_fn)(int, int, int, int, int, float, const float *, int, long, const float *,
                            int, long, float, float *, int, long, int);
typedef void (*att_row_fn)(const att_ctx *c, int b, sbatched_fn gemm);

typedef struct {
    const att_ctx *c;
    att_row_fn fn;
} att_rows_job;

static void att_rows_range(void *p, long lo, long hi) {
    att_rows_job *j = p;
    for (long b = lo; b < hi; b++) j->fn(j->c, (int)b, be_gemm_sbatched_local);
}

static void att_rows(const att_ctx *c, att_row_fn fn) {
    if (be_gemm_local_parallel()) {
        att_rows_job j = {c, fn};
        pool_parallel_for(c->B, 1, att_rows_range, &j);
    } else {
        for (int b = 0; b < c->B; b++) fn(c, b, be_gemm_sbatched);
    }
}

/* scores (H: Tq,Tk) = Q_h K_h^T of row b */
static void att_scores_row(const att_ctx *c, int b, sbatched_fn gemm) {
    int HK = c->H * c->K, Tq = c->Tq, Tk = c->Tk, K = c->K;
    long TT = (long)Tq * Tk;
    int bk = c->kv_index ? c->kv_index[b] : b;
    gemm(0, 1, Tq, Tk, K, 1.0f, c->q + (size_t)b * Tq * HK, HK, K, c->k + (size_t)bk * Tk * HK, HK, K, 0.0f,
         c->probs + (size_t)b * c->H * TT, Tk, TT, c->H);
}

/* out_h (Tq,K) = P_h V_h of row b */
static void att_context_row(const att_ctx *c, int b, sbatched_fn gemm) {
    int HK = c->H * c->K, Tq = c->Tq, Tk = c->Tk, K = c->K;
    long TT = (long)Tq * Tk;
    int bk = c->kv_index ? c->kv_index[b] : b;
    gemm(0, 0, Tq, K, Tk, 1.0f, c->probs + (size_t)b * c->H * TT, Tk, TT, c->v + (size_t)bk * Tk * HK, HK, K,
         0.0f, c->out + (size_t)b * Tq * HK, HK, K, c->H);
}

static int att_by_row = 1; /* ops_set_attention_rows */

int ops_set_attention_rows(int on) {
    return __atomic_exchange_n(&att_by_row, on ? 1 : 0, __ATOMIC_ACQ_REL);
}

static int att_fused(void) { return __atomic_load_n(&att_by_row, __ATOMIC_ACQUIRE) && be_gemm_local_parallel(); }

/* A batch row's three steps at once on one thread: a product, the row's
 * softmax (or softmax-gradient) rows, a product. The same products and
 * rows as three passes over the batch, so the same bytes, with the row's
 * H x Tq x Tk probabilities still in cache when the second and third read
 * them (they stream from memory when every row's first step runs first). */
typedef struct {
    att_ctx *c;
    att_row_fn first, last;
    void (*rows)(void *c, long lo, long hi);
} att_steps;

static void att_steps_range(void *p, long lo, long hi) {
    const att_steps *s = p;
    long rows = (long)s->c->H * s->c->Tq;
    for (long b = lo; b < hi; b++) {
        s->first(s->c, (int)b, be_gemm_sbatched_local);
        s->rows(s->c, b * rows, (b + 1) * rows);
        s->last(s->c, (int)b, be_gemm_sbatched_local);
    }
}

/* Runs of batch rows that read the same keys (kv_index: eval's choices of
 * one input, rows side by side) take their three steps together: each
 * product over all the run's queries at once (be_gemm_sbatched_local_groups),
 * the keys and values packed once for the run instead of once per row. Each
 * row's products and softmax rows are those of att_steps, so the bytes. */
typedef struct {
    att_ctx *c;
    const int *start; /* run g: rows [start[g], start[g + 1]) */
} att_runs;

static void att_runs_range(void *p, long lo, long hi) {
    const att_runs *r = p;
    const att_ctx *c = r->c;
    int H = c->H, K = c->K, HK = H * K, Tq = c->Tq, Tk = c->Tk;
    long TT = (long)Tq * Tk, rows = (long)H * Tq;
    for (long g = lo; g < hi; g++) {
        int b0 = r->start[g], n = r->start[g + 1] - b0, bk = c->kv_index[b0];
        float *pb = c->probs + (size_t)b0 * H * TT;
        be_gemm_sbatched_local_groups(0, 1, n * Tq, Tk, K, 1.0f, c->q + (size_t)b0 * Tq * HK, HK, K, 0,
                                      c->k + (size_t)bk * Tk * HK, HK, K, 0.0f, pb, Tk, TT, H * TT, Tq, H);
        softmax_rows(r->c, b0 * rows, (b0 + n) * rows);
        be_gemm_sbatched_local_groups(0, 0, n * Tq, K, Tk, 1.0f, pb, Tk, TT, H * TT, c->v + (size_t)bk * Tk * HK,
                                      HK, K, 0.0f, c->out + (size_t)b0 * Tq * HK, HK, K, 0, Tq, H);
    }
}

void op_attention_forward(float *out, float *probs, const float *q, const float *k,
                          const float *v, const float *bias, const uint8_t *key_mask,
                          const int *kv_index, int flags, int B, int Tq, int Tk, int H, int K) {
    att_ctx c = {.probs = probs, .bias = bias, .key_mask = key_mask, .kv_index = kv_index,
                 .causal = (flags & ATT_CAUSAL) != 0, .pad_invariant = (flags & ATT_PAD_INVARIANT) != 0,
                 .B = B, .Tq = Tq, .Tk = Tk, .H = H, .K = K, .q = q, .k = k,
                 .v = v, .out = out};
    if (att_fused() && kv_index) {
        int *start = mallocCheck(sizeof(int) * ((size_t)B + 1)), runs = 0;
        for (int b = 0; b < B; b++)
            if (b == 0 || kv_index[b] != kv_index[b - 1]) start[runs++] = b;
        start[runs] = B;
        att_runs rr = {&c, start};
        pool_parallel_for(runs, 1, att_runs_range, &rr);
        free(start);
        return;
    }
    if (att_fused()) {
        att_steps st = {&c, att_scores_row, att_context_row, softmax_rows};
        pool_parallel_for(B, 1, att_steps_range, &st);
        return;
    }
    att_rows(&c, att_scores_row);
    pool_parallel_for((long)B * H * Tq, 8, softmax_rows, &c);
    att_rows(&c, att_context_row);
}

/* dS = P * (dP - sum_j P dP), rows of (B*H*Tq, Tk) */
static void dscore_rows(void *p, long lo, long hi) {
    att_ctx *c = p;
    int Tk = c->Tk;
    for (long r = lo; r < hi; r++) {
        const float *pr = c->probs + r * Tk;
        float *d = c->scratch + r * Tk;
        float dot = dot_fixed(pr, d, NULL, Tk);
#if VEXP16
        if (ops_simd_lanes() == 16) {
            dscore16(d, pr, dot, Tk);
            continue;
        }
#endif
        for (int j = 0; j < Tk; j++) d[j] = pr[j] * (d[j] - dot);
    }
}

/* dbias (H,Tq,Tk) += sum over b of dS[b], element ranges of H*Tq*Tk */
static void dbias_range(void *p, long lo, long hi) {
    att_ctx *c = p;
    long HTT = (long)c->H * c->Tq * c->Tk;
    for (int b = 0; b < c->B; b++) {
        const float *sb = c->scratch + (size_t)b * HTT;
        for (long i = lo; i < hi; i++) c->dbias[i] += sb[i];
    }
}

/* dP_h = dO_h V_h^T ; dV_h (+)= P_h^T dO_h, row b */
static void att_dprobs_row(const att_ctx *c, int b, sbatched_fn gemm) {
    int HK = c->H * c->K, Tq = c->Tq, Tk = c->Tk, K = c->K;
    long TT = (long)Tq * Tk;
    size_t oq = (size_t)b * Tq * HK, ok = (size_t)b * Tk * HK;
    const float *pb = c->probs + (size_t)b * c->H * TT;
    gemm(0, 1, Tq, Tk, K, 1.0f, c->dout + oq, HK, K, c->v + ok, HK, K, 0.0f, c->scratch + (size_t)b * c->H * TT,
         Tk, TT, c->H);
    if (c->dv) gemm(1, 0, Tk, K, Tq, 1.0f, pb, Tk, TT, c->dout + oq, HK, K, c->beta, c->dv + ok, HK, K, c->H);
}

/* dQ_h (+)= dS_h K_h ; dK_h (+)= dS_h^T Q_h, row b */
static void att_dqk_row(const att_ctx *c, int b, sbatched_fn gemm) {
    int HK = c->H * c->K, Tq = c->Tq, Tk = c->Tk, K = c->K;
    long TT = (long)Tq * Tk;
    size_t oq = (size_t)b * Tq * HK, ok = (size_t)b * Tk * HK;
    const float *sb = c->scratch + (size_t)b * c->H * TT;
    if (c->dq) gemm(0, 0, Tq, K, Tk, 1.0f, sb, Tk, TT, c->k + ok, HK, K, c->beta, c->dq + oq, HK, K, c->H);
    if (c->dk) gemm(1, 0, Tk, K, Tq, 1.0f, sb, Tk, TT, c->q + oq, HK, K, c->beta, c->dk + ok, HK, K, c->H);
}

void op_attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                           const float *dout, const float *q, const float *k, const float *v,
                           const float *probs, int B, int Tq, int Tk, int H, int K, int acc) {
    /* every (b, head) block of dq, dk, dv is written once */
    att_ctx c = {.probs = (float *)probs, .scratch = scratch, .dbias = dbias, .B = B, .Tq = Tq,
                 .Tk = Tk, .H = H, .K = K, .q = q, .k = k, .v = v, .dout = dout, .dq = dq, .dk = dk,
                 .dv = dv, .beta = acc ? 1.0f : 0.0f};
    if (att_fused()) { /* dP and dV, dS, then dQ and dK */
        att_steps st = {&c, att_dprobs_row, att_dqk_row, dscore_rows};
        pool_parallel_for(B, 1, att_steps_range, &st);
        if (dbias) pool_parallel_for((long)H * Tq * Tk, 1024, dbias_range, &c); /* reads dS, kept in scratch */
        return;
    }
    att_rows(&c, att_dprobs_row);
    pool_parallel_for((long)B * H * Tq, 8, dscore_rows, &c);
    if (dbias) pool_parallel_for((long)H * Tq * Tk, 1024, dbias_range, &c);
    att_rows(&c, att_dqk_row);
}

typedef struct {
    float *loss, *lse, *dlogits, *y;
    const float *logits, *weight, *x, *lse_in;
    const int *targets;
    int V;
} ce_ctx;

static void ce_fwd_rows(void *p, long lo, long hi) {
    ce_ctx *c = p;
    int V = c->V;
    for (long n = lo; n < hi; n++) {
        const float *l = c->logits + (size_t)n * V;
        float mx = -INFINITY;
        for (int i = 0; i < V; i++)
            if (l[i] > mx) mx = l[i];
        /* only the sum of the exponentials is needed: vexp them chunk by
         * chunk into a stack buffer */
        double s = 0;
        float buf[256];
        for (int i = 0; i < V; i += 256) s += vexp(buf, l + i, V - i < 256 ? V - i : 256, mx, 1.0f);
        float z = mx + (float)log(s);
        c->lse[n] = z;
        c->loss[n] = c->targets[n] > 0 ? z - l[c->targets[n]] : 0.0f;
    }
}

void op_crossentropy_forward(float *loss, float *lse, const float *logits, const int *targets,
                             int N, int V) {
    ce_ctx c = {.loss = loss, .lse = lse, .logits = logits, .targets = targets, .V = V};
    pool_parallel_for(N, 1, ce_fwd_rows, &c);
}

static void ce_bwd_rows(void *p, long lo, long hi) {
    ce_ctx *c = p;
    int V = c->V;
    for (long n = lo; n < hi; n++) {
        float *d = c->dlogits + (size_t)n * V;
        float w = c->weight[n];
        int t = c->targets[n];
        if (w == 0.0f || t <= 0) {
            memset(d, 0, sizeof(float) * V);
            continue;
        }
        const float *l = c->logits + (size_t)n * V;
        float z = c->lse_in[n];
        vexp(d, l, V, z, w);
        d[t] -= w;
    }
}

void op_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                              const int *targets, const float *weight, int N, int V) {
    ce_ctx c = {.dlogits = dlogits, .logits = logits, .lse_in = lse, .targets = targets, .weight = weight, .V = V};
    pool_parallel_for(N, 1, ce_bwd_rows, &c);
}

static void add_range(void *p, long lo, long hi) {
    ce_ctx *c = p;
#if VEXP16
    if (ops_simd_lanes() == 16) {
        add16(c->y + lo, c->x + lo, hi - lo);
        return;
    }
#endif
    for (long i = lo; i < hi; i++) c->y[i] += c->x[i];
}

void op_add_inplace(float *y, const float *x, long n) {
    ce_ctx c = {.y = y, .x = x};
    pool_parallel_for(n, 1 << 14, add_range, &c);
}

static void copy_range(void *p, long lo, long hi) {
    ce_ctx *c = p;
    memcpy(c->y + lo, c->x + lo, sizeof(float) * (hi - lo));
}

void ops_copy(float *y, const float *x, long n) {
    ce_ctx c = {.y = y, .x = x};
    pool_parallel_for(n, 1 << 15, copy_range, &c);
}
