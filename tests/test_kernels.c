/* test_kernels.c - our own CPU kernels. The matrix products against a
 * double-precision reference: the AMX bf16 products (lib/amx.c, on the
 * same bf16-rounded inputs), the AVX-512 float32 one (lib/f32gemm.c) and
 * the blocked float32 ones (lib/f32gemm_blocked.c), each kernel forced in
 * turn (AVX-512, AVX2, on the pool and on one thread), and their SYRK; the
 * float32 kernels give the same bytes as each other;
 * every transpose, shapes that are not multiples of the blocks, strided
 * batches, alpha and beta, C untouched outside its columns and not read
 * when beta = 0; the attention that runs them in parallel gives the same
 * bytes on 1 and 2 threads. The elementwise loops (exp, GELU) give the same
 * bytes on 16 lanes (AVX-512) as on 4 (SSE2), and match a scalar reference. */
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "amx.h"
#include "backend.h"
#include "common.h"
#include "f32gemm.h"
#include "harness.h"
#include "ops.h"
#include "optim.h"

static uint64_t rng = 88172645463325252ull;
static float urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
/* round to bfloat16, nearest even: what the tile unit multiplies */
static float bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}
static float same(float f) { return f; }

typedef void (*gemm_fn)(int, int, int, int, int, float, const float *, int, long, const float *, int, long,
                        float, float *, int, long, int);
typedef struct {
    const char *name;
    int (*available)(void);
    gemm_fn gemm;
    float (*round)(float); /* what the kernel does to its inputs */
} kernel;

/* the blocked products with one kernel forced, batches one by one */
static void blocked(int kern, int local, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                    long sa, const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc, int batch) {
    int was = f32gemm_kernel();
    if (f32gemm_set_kernel(kern) != 0) die("%s", mc_error());
    for (int i = 0; i < batch; i++)
        f32gemm(local, ta, tb, m, n, k, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
    f32gemm_set_kernel(was);
}
#define BLOCKED(name, kern, local)                                                                            \
    static void name(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,      \
                     const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc, int batch) {   \
        blocked(kern, local, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);        \
    }
BLOCKED(avx512_pool, F32GEMM_AVX512, 0)
BLOCKED(avx512_one, F32GEMM_AVX512, 1)
BLOCKED(avx2_pool, F32GEMM_AVX2, 0)
BLOCKED(avx2_one, F32GEMM_AVX2, 1)
static void bf16_pool(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,
                      const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc, int batch) {
    for (int i = 0; i < batch; i++)
        bf16gemm(0, ta, tb, m, n, k, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}
static void bf16_one(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,
                     const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc, int batch) {
    for (int i = 0; i < batch; i++)
        bf16gemm(1, ta, tb, m, n, k, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}
/* the bf16 kernel with every operand packed (no in-place reading) */
static void bf16_packed(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, long sa,
                        const float *B, int ldb, long sb, float beta, float *C, int ldc, long sc, int batch) {
    int was = bf16gemm_set_inplace(0);
    bf16_pool(ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
    bf16gemm_set_inplace(was);
}
static int have_avx512(void) { return f32gemm_kernel_supported(F32GEMM_AVX512); }
static int have_avx2(void) { return f32gemm_kernel_supported(F32GEMM_AVX2); }

static const kernel kernels[] = {
    {"amx", amx_available, amx_gemm_batched, bf},
    {"amx-local", amx_available, amx_gemm_local, bf},
    {"f32", f32gemm_available, f32gemm_local, same},
    {"blocked-avx512", have_avx512, avx512_pool, same},
    {"blocked-avx512-local", have_avx512, avx512_one, same},
    {"blocked-avx2", have_avx2, avx2_pool, same},
    {"blocked-avx2-local", have_avx2, avx2_one, same},
    {"bf16-avx512", bf16gemm_available, bf16_pool, bf},
    {"bf16-avx512-local", bf16gemm_available, bf16_one, bf},
    {"bf16-avx512-packed", bf16gemm_available, bf16_packed, bf},
};
#define N_KERNELS (int)(sizeof kernels / sizeof *kernels)

/* reference: C = alpha op(A) op(B) + beta C in double over the kernel's
 * rounded inputs */
static void ref(const kernel *kn, int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda,
                const float *B, int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int q = 0; q < k; q++) {
                float a = ta ? A[(size_t)q * lda + i] : A[(size_t)i * lda + q];
                float b = tb ? B[(size_t)j * ldb + q] : B[(size_t)q * ldb + j];
                s += (double)kn->round(a) * kn->round(b);
            }
            C[(size_t)i * ldc + j] = (float)(alpha * s + (beta != 0 ? beta * (double)C[(size_t)i * ldc + j] : 0));
        }
}

static float *rnd(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = urand();
    return x;
}

static void test_shapes(void) {
    const int shapes[][3] = {{1, 1, 1},   {5, 7, 3},     {32, 32, 32}, {33, 31, 65},
                             {64, 96, 40}, {100, 17, 129}, {16, 48, 0},  {257, 130, 300},
                             {130, 600, 530}, {40, 70, 2100}, {1021, 21, 40}};
    /* (the last: with op(A) = A^T its lda is 1024, a multiple of 4 KiB, so
     * the weight gradients' path packs both operands instead of reading
     * them in place) */
    int ran = 0;
    for (int kn = 0; kn < N_KERNELS; kn++) {
        const kernel *K = &kernels[kn];
        if (!K->available()) continue;
        ran++;
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (int ab = 0; ab < 2; ab++) {
                        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                        int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
                        float alpha = ab ? 0.5f : 1.0f, beta = ab ? -1.5f : 0.0f;
                        float *A = rnd((size_t)(ta ? k : m) * lda + 1), *B = rnd((size_t)(tb ? n : k) * ldb + 1);
                        float *C = rnd((size_t)m * ldc), *R = malloc(sizeof(float) * (size_t)m * ldc);
                        if (!ab)
                            for (size_t i = 0; i < (size_t)m * ldc; i++) C[i] = NAN; /* beta 0: C is not read */
                        memcpy(R, C, sizeof(float) * (size_t)m * ldc);
                        K->gemm(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
                        ref(K, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, R, ldc);
                        char label[96];
                        snprintf(label, sizeof label, "%s %dx%dx%d ta%d tb%d %s", K->name, m, n, k, ta, tb,
                                 ab ? "alpha,beta" : "plain");
                        for (int i = 0; i < m; i++) /* padding columns of C untouched */
                            for (int j = n; j < ldc; j++)
                                CHECK(memcmp(&C[(size_t)i * ldc + j], &R[(size_t)i * ldc + j], 4) == 0,
                                      "%s: C[%d][%d] written", label, i, j);
                        float *c2 = malloc(sizeof(float) * (size_t)m * n), *r2 = malloc(sizeof(float) * (size_t)m * n);
                        for (int i = 0; i < m; i++) {
                            memcpy(c2 + (size_t)i * n, C + (size_t)i * ldc, sizeof(float) * n);
                            memcpy(r2 + (size_t)i * n, R + (size_t)i * ldc, sizeof(float) * n);
                        }
                        /* float32 accumulation of k products: a few ulps of sqrt(k) */
                        t_close(label, c2, r2, (long)m * n, 1e-5, 1e-6 * (k + 1));
                        free(A), free(B), free(C), free(R), free(c2), free(r2);
                    }
    }
    if (!ran) T_SKIP("neither AMX nor AVX-512F on this CPU");
}

/* the attention's layout: heads side by side in rows of H*K, batch = heads */
static void test_batched(void) {
    int ran = 0;
    for (int kn = 0; kn < N_KERNELS; kn++) {
        const kernel *kr = &kernels[kn];
        if (!kr->available()) continue;
        ran++;
        int T = 45, K = 24, H = 3, HK = H * K;
        float *q = rnd((size_t)T * HK), *kk = rnd((size_t)T * HK), *S = malloc(sizeof(float) * H * T * T),
              *R = malloc(sizeof(float) * H * T * T);
        char label[64];
        kr->gemm(0, 1, T, T, K, 1.0f, q, HK, K, kk, HK, K, 0.0f, S, T, (long)T * T, H);
        for (int h = 0; h < H; h++)
            ref(kr, 0, 1, T, T, K, 1.0f, q + h * K, HK, kk + h * K, HK, 0.0f, R + (size_t)h * T * T, T);
        snprintf(label, sizeof label, "%s scores", kr->name);
        t_close(label, S, R, (long)H * T * T, 1e-5, 1e-4);
        /* and back: out_h (T,K) = S_h V_h written into the (T, H*K) layout */
        float *O = malloc(sizeof(float) * T * HK), *RO = malloc(sizeof(float) * T * HK);
        kr->gemm(0, 0, T, K, T, 1.0f, S, T, (long)T * T, kk, HK, K, 0.0f, O, HK, K, H);
        for (int h = 0; h < H; h++)
            ref(kr, 0, 0, T, K, T, 1.0f, S + (size_t)h * T * T, T, kk + h * K, HK, 0.0f, RO + h * K, HK);
        snprintf(label, sizeof label, "%s context", kr->name);
        t_close(label, O, RO, (long)T * HK, 1e-5, 1e-4);
        free(q), free(kk), free(S), free(R), free(O), free(RO);
    }
    if (!ran) T_SKIP("neither AMX nor AVX-512F on this CPU");
}

/* the float32 kernels give the same bytes as each other, on the edges and
 * across k-blocks, with alpha and beta */
static void test_kernels_agree(void) {
    const kernel *fk[N_KERNELS];
    int nf = 0;
    for (int kn = 0; kn < N_KERNELS; kn++)
        if (kernels[kn].round == same && kernels[kn].available()) fk[nf++] = &kernels[kn];
    if (nf < 2) T_SKIP("fewer than two float32 kernels on this CPU");
    const int shapes[][3] = {{37, 45, 19}, {150, 530, 600}, {13, 1100, 257}, {50, 40, 1700}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int t = 0; t < 4; t++) {
            int ta = t & 1, tb = t >> 1, m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
            int lda = ta ? m : k, ldb = tb ? k : n;
            float *A = rnd((size_t)m * k), *B = rnd((size_t)k * n), *C0 = rnd((size_t)m * n);
            float *first = NULL, *C = malloc(sizeof(float) * (size_t)m * n);
            for (int q = 0; q < nf; q++) {
                memcpy(C, C0, sizeof(float) * (size_t)m * n);
                fk[q]->gemm(ta, tb, m, n, k, 0.75f, A, lda, 0, B, ldb, 0, 0.5f, C, n, 0, 1);
                if (!first) first = C, C = malloc(sizeof(float) * (size_t)m * n);
                else CHECK(memcmp(first, C, sizeof(float) * (size_t)m * n) == 0, "%s and %s differ at %dx%dx%d ta%d tb%d",
                           fk[0]->name, fk[q]->name, m, n, k, ta, tb);
            }
            free(A), free(B), free(C0), free(C), free(first);
        }
}

/* be_syrk through the blocked kernels: both transposes, beta 0 and not,
 * against float64; symmetric to the bit */
static void test_syrk(void) {
    int kerns[] = {F32GEMM_AVX512, F32GEMM_AVX2}, ran = 0, was = f32gemm_kernel();
    for (int q = 0; q < 2; q++) {
        if (f32gemm_set_kernel(kerns[q]) != 0) continue;
        ran++;
        const int shapes[][2] = {{5, 3}, {130, 300}, {700, 90}, {40, 1700}};
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
            for (int tr = 0; tr < 2; tr++) {
                int n = shapes[s][0], k = shapes[s][1], ld = (tr ? n : k) + 1, ldc = n + 1;
                float beta = tr ? 0.25f : 0.0f;
                float *A = rnd((size_t)(tr ? k : n) * ld), *C = rnd((size_t)n * ldc), *R = malloc(sizeof(float) * (size_t)n * ldc),
                      *C0 = malloc(sizeof(float) * (size_t)n * ldc);
                memcpy(R, C, sizeof(float) * (size_t)n * ldc);
                memcpy(C0, C, sizeof(float) * (size_t)n * ldc);
                be_syrk(tr, n, k, 1.5f, A, ld, beta, C, ldc);
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < n; j++) {
                        double sum = 0;
                        for (int p = 0; p < k; p++)
                            sum += (double)(tr ? A[(size_t)p * ld + i] : A[(size_t)i * ld + p]) *
                                   (tr ? A[(size_t)p * ld + j] : A[(size_t)j * ld + p]);
                        /* the lower triangle of R is the upper's old value: the kernel copies it over */
                        double old = beta != 0 ? beta * (double)C0[(size_t)(i < j ? i : j) * ldc + (i < j ? j : i)] : 0;
                        R[(size_t)i * ldc + j] = (float)(1.5 * sum + old);
                    }
                char label[96];
                snprintf(label, sizeof label, "syrk %s n%d k%d trans%d", f32gemm_kernel_name(kerns[q]), n, k, tr);
                t_close(label, C, R, (long)n * ldc, 1e-5, 1e-6 * (k + 1));
                int sym = 1;
                for (int i = 0; i < n; i++)
                    for (int j = 0; j < i; j++) sym &= !memcmp(&C[(size_t)i * ldc + j], &C[(size_t)j * ldc + i], 4);
                CHECK(sym, "%s: not symmetric", label);
                free(A), free(C), free(R), free(C0);
            }
    }
    f32gemm_set_kernel(was);
    if (!ran) T_SKIP("neither AVX-512F nor AVX2 on this CPU");
}

/* --dump MATH FILE: the attention forward and backward of a random batch
 * in cpu_math MATH, then a large product (beta != 0, k over one block) and
 * a SYRK, written to FILE (test_threads runs it under MATS_OPS_THREADS=1
 * and =2, and with each float32 kernel) */
enum { DB = 6, DT = 40, DH = 3, DK = 16, GM = 200, GN2 = 600, GK = 1100 };
#define DUMP_FLOATS ((size_t)DB * DT * DH * DK * 4 + (size_t)DH * DT * DT + (size_t)GM * GN2 + (size_t)GN2 * GN2)
static int dump(const char *math, const char *path) {
    int mode = be_math_parse(math);
    if (mode < 0 || be_set_cpu_math(mode) != 0) return 1;
    size_t nq = (size_t)DB * DT * DH * DK, np = (size_t)DB * DH * DT * DT;
    float *q = rnd(nq), *k = rnd(nq), *v = rnd(nq), *dout = rnd(nq), *bias = rnd((size_t)DH * DT * DT);
    float *out = malloc(sizeof(float) * nq), *probs = malloc(sizeof(float) * np),
          *scratch = malloc(sizeof(float) * np), *dq = malloc(sizeof(float) * nq),
          *dk = malloc(sizeof(float) * nq), *dv = malloc(sizeof(float) * nq),
          *dbias = calloc((size_t)DH * DT * DT, sizeof(float));
    op_attention_forward(out, probs, q, k, v, bias, NULL, NULL, 0, DB, DT, DT, DH, DK);
    op_attention_backward(dq, dk, dv, dbias, scratch, dout, q, k, v, probs, DB, DT, DT, DH, DK, 0);
    FILE *f = fopen(path, "wb");
    int bad = !f;
    const float *parts[] = {out, dq, dk, dv};
    for (int i = 0; i < 4 && !bad; i++) bad = fwrite(parts[i], sizeof(float), nq, f) != nq;
    if (!bad) bad = fwrite(dbias, sizeof(float), (size_t)DH * DT * DT, f) != (size_t)DH * DT * DT;
    float *ga = rnd((size_t)GM * GK), *gb = rnd((size_t)GK * GN2), *gc = rnd((size_t)GM * GN2),
          *gs = malloc(sizeof(float) * GN2 * GN2);
    be_gemm(0, 0, GM, GN2, GK, 1.0f, ga, GK, gb, GN2, 1.0f, gc, GN2);
    be_syrk(1, GN2, GK, 1.0f, gb, GN2, 0.0f, gs, GN2);
    if (!bad) bad = fwrite(gc, sizeof(float), (size_t)GM * GN2, f) != (size_t)GM * GN2;
    if (!bad) bad = fwrite(gs, sizeof(float), (size_t)GN2 * GN2, f) != (size_t)GN2 * GN2;
    if (f && fclose(f)) bad = 1;
    return bad;
}

static const char *self;

static void same_bytes(const char *math, const char *gemm) {
    char cmd[4096], p1[64], p2[64];
    snprintf(p1, sizeof p1, "/tmp/test_kernels.%d.1", (int)getpid());
    snprintf(p2, sizeof p2, "/tmp/test_kernels.%d.2", (int)getpid());
    snprintf(cmd, sizeof cmd, "MATS_GEMM=%s MATS_OPS_THREADS=1 %s --dump %s %s && MATS_GEMM=%s MATS_OPS_THREADS=2 %s --dump %s %s",
             gemm, self, math, p1, gemm, self, math, p2);
    CHECK(system(cmd) == 0, "%s failed", cmd);
    size_t n = DUMP_FLOATS;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    FILE *a = fopen(p1, "rb"), *b = fopen(p2, "rb");
    CHECK(a && b, "no dump files");
    if (a && b) {
        size_t na = fread(x, sizeof(float), n, a), nb = fread(y, sizeof(float), n, b);
        CHECK(na == n && nb == na, "short dumps: %zu %zu", na, nb);
        CHECK(memcmp(x, y, sizeof(float) * n) == 0, "%s, MATS_GEMM=%s: 1 and 2 threads give different bytes", math, gemm);
    }
    if (a) fclose(a);
    if (b) fclose(b);
    remove(p1), remove(p2);
    free(x), free(y);
}

static void test_threads(void) {
    for (int kern = F32GEMM_OPENBLAS; kern <= F32GEMM_AVX512; kern++)
        if (f32gemm_kernel_supported(kern)) same_bytes("fp32", f32gemm_kernel_name(kern));
    if (amx_available()) same_bytes("bf16", "avx512 MATS_GEMM_BF16=amx");
    if (bf16gemm_available()) same_bytes("bf16", "avx512 MATS_GEMM_BF16=avx512bf16");
}

/* the elementwise ops at one vector width, their outputs appended to out
 * (section names and ends in sec/end): GELU forward, backward (set and
 * accumulated), RMS norm forward and backward (set and accumulated, with
 * the weight gradient), IA3 forward and backward, attention forward
 * (softmax sums from exp; key mask; causal) and backward, cross-entropy
 * forward and backward, add, AdamW. Lengths are not multiples of 16. */
enum { GN = 16 * 37 + 7, SB = 3, ST = 53, SH = 2, SK = 8, CN = 7, CV = 1000, RN = 70, RD = 77 };
enum { MAX_SECTIONS = 32 };
typedef struct {
    float *out;
    size_t o, end[MAX_SECTIONS];
    const char *sec[MAX_SECTIONS];
    int n;
} outputs;

static float *emit(outputs *w, const char *name, size_t n) {
    float *p = w->out + w->o;
    w->o += n;
    w->sec[w->n] = name, w->end[w->n] = w->o, w->n++;
    return p;
}

static void simd_outputs(outputs *w, const float *in) {
    const float *h0 = in, *h1 = in + GN, *d = in + 2 * GN, *x = in + 3 * GN;
    op_gated_gelu_forward(emit(w, "gelu forward", GN), h0, h1, GN);
    float *dh = emit(w, "gelu backward", 2 * GN);
    op_gated_gelu_backward(dh, dh + GN, d, h0, h1, GN, 0);
    op_gated_gelu_backward(dh, dh + GN, d, h1, h0, GN, 1);
    /* RMS norm and IA3 on (RN, RD) */
    const float *rw = x + RN * RD, *rd = rw + RD;
    float *ro = emit(w, "rmsnorm forward", RN * RD + RN);
    op_rmsnorm_forward(ro, ro + RN * RD, x, rw, RN, RD, 1e-6f);
    float *rb = emit(w, "rmsnorm backward", RN * RD + RD);
    op_rmsnorm_backward(rb, rb + RN * RD, rd, x, rw, ro + RN * RD, RN, RD, 0);
    op_rmsnorm_backward(rb, rb + RN * RD, x, rd, rw, ro + RN * RD, RN, RD, 1);
    op_ia3_forward(emit(w, "ia3 forward", RN * RD), x, rw, RN, RD);
    float *ib = emit(w, "ia3 backward", RN * RD + RD);
    op_ia3_backward(ib, ib + RN * RD, rd, x, rw, RN, RD, 0);
    op_ia3_backward(ib, ib + RN * RD, x, rd, rw, RN, RD, 1);
    size_t nq = (size_t)SB * ST * SH * SK, np = (size_t)SB * SH * ST * ST;
    const float *q = rd + RN * RD, *k = q + nq, *v = k + nq, *bias = v + nq, *dout = bias + (size_t)SH * ST * ST;
    uint8_t mask[SB * ST];
    for (int i = 0; i < SB * ST; i++) mask[i] = (i * 7) % 5 != 0;
    static const char *names[] = {"attention (no mask)", "attention (key mask)", "attention (causal)"};
    float *probs = NULL;
    for (int pass = 0; pass < 3; pass++) {
        float *att = emit(w, names[pass], nq + np);
        probs = att + nq;
        op_attention_forward(att, probs, q, k, v, bias, pass == 1 ? mask : NULL, NULL, pass == 2, SB, ST, ST, SH, SK);
    }
    float *ab = emit(w, "attention backward", 3 * nq + (size_t)SH * ST * ST + np);
    op_attention_backward(ab, ab + nq, ab + 2 * nq, ab + 3 * nq, ab + 3 * nq + (size_t)SH * ST * ST, dout, q, k, v,
                          probs, SB, ST, ST, SH, SK, 0);
    /* the cross-attention of eval's choices: 7 decoder rows of 3 queries,
     * runs of them reading the same encoder row (the last reads row 0
     * again), keys padded at the end, summed as unpadded rows */
    enum { XB = 7, XT = 3 };
    const int kv[XB] = {0, 0, 0, 1, 2, 2, 0}, len[SB] = {ST, 40, 17};
    uint8_t pre[SB * ST];
    for (int i = 0; i < SB * ST; i++) pre[i] = i % ST < len[i / ST];
    float *xa = emit(w, "attention (cross, choices)", (size_t)XB * XT * SH * SK + (size_t)XB * SH * XT * ST);
    op_attention_forward(xa, xa + (size_t)XB * XT * SH * SK, q, k, v, NULL, pre, kv, ATT_PAD_INVARIANT, XB, XT, ST,
                         SH, SK);
    const float *logits = dout + nq;
    int targets[CN] = {0, 17, 999, 150, 3, 512, 256};
    float cw[CN] = {1, 0.5f, 2, 1, 0.25f, 1, 3};
    float *ce = emit(w, "cross-entropy forward", 2 * CN);
    op_crossentropy_forward(ce, ce + CN, logits, targets, CN, CV);
    op_crossentropy_backward(emit(w, "cross-entropy backward", (size_t)CN * CV), logits, ce + CN, targets, cw, CN, CV);
    float *sum = emit(w, "add", GN);
    memcpy(sum, h0, sizeof(float) * GN);
    op_add_inplace(sum, h1, GN);
    /* AdamW: three steps, with weight decay; the parameters, then m and v */
    float *par = emit(w, "adamw", 3 * GN);
    memcpy(par, h0, sizeof(float) * GN);
    optim *o = opt_new(OPT_ADAMW, 1e-2f, GN, NULL, 0);
    o->weight_decay = 0.1f;
    for (int step = 0; step < 3; step++) opt_step(o, par, step == 1 ? h1 : d);
    memcpy(par + GN, o->state, sizeof(float) * 2 * GN);
    opt_free(o);
}

/* Products with the rows of A and of C in groups (the attention over eval's
 * choices of one input: be_gemm_sbatched_local_groups) give, on every
 * float32 kernel, the bytes of one f32gemm_local product per group, and
 * write nothing between the groups. */
static void test_local_groups(void) {
    if (!f32gemm_available()) T_SKIP("no AVX-512F: no f32gemm_local to compare with");
    const int shapes[][4] = {{3, 5, 53, 8}, {1, 7, 40, 17}, {5, 3, 8, 53}, {8, 4, 33, 64}, {13, 2, 70, 9}};
    int kernels_run[2] = {F32GEMM_AVX512, F32GEMM_AVX2}, was = f32gemm_kernel(), cases = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int tb = 0; tb < 2; tb++)
            for (int lay = 0; lay < 4; lay++) {
                int g = shapes[s][0], ng = shapes[s][1], n = shapes[s][2], k = shapes[s][3], m = g * ng, batch = 2;
                int ga = lay & 1, gc = lay >> 1, lda = k + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
                long gsa = ga ? (long)g * lda + 11 : 0, gsc = gc ? (long)g * ldc + 7 : 0;
                long sa = (ga ? ng * gsa : (long)m * lda) + 5, sb = (long)(tb ? n : k) * ldb + 3;
                long sc = (gc ? ng * gsc : (long)m * ldc) + 9;
                float beta = (s + lay) % 2 ? 0.5f : 0.0f;
                float *A = rnd((size_t)sa * batch), *B = rnd((size_t)sb * batch), *C0 = rnd((size_t)sc * batch);
                float *want = malloc(sizeof(float) * sc * batch), *got = malloc(sizeof(float) * sc * batch);
                memcpy(want, C0, sizeof(float) * sc * batch);
                for (int q = 0; q < ng; q++)
                    f32gemm_local(0, tb, g, n, k, 0.75f, A + (ga ? q * gsa : (long)q * g * lda), lda, sa, B, ldb, sb,
                                  beta, want + (gc ? q * gsc : (long)q * g * ldc), ldc, sc, batch);
                for (int kr = 0; kr < 2; kr++) {
                    if (!f32gemm_kernel_supported(kernels_run[kr])) continue;
                    f32gemm_set_kernel(kernels_run[kr]);
                    memcpy(got, C0, sizeof(float) * sc * batch);
                    be_gemm_sbatched_local_groups(0, tb, m, n, k, 0.75f, A, lda, sa, gsa, B, ldb, sb, beta, got, ldc,
                                                  sc, gsc, g, batch);
                    size_t first = (size_t)sc * batch;
                    for (size_t i = 0; i < (size_t)sc * batch && first == (size_t)sc * batch; i++)
                        if (memcmp(&got[i], &want[i], 4)) first = i;
                    CHECK(first == (size_t)sc * batch, "%s, groups %d x %d, n %d, k %d, tb %d, layout %d: differs at %zu",
                          f32gemm_kernel_name(kernels_run[kr]), ng, g, n, k, tb, lay, first);
                    cases++;
                }
                free(A), free(B), free(C0), free(want), free(got);
            }
    f32gemm_set_kernel(was);
    CHECK(cases >= 80, "%d cases compared", cases);
}

/* the attention a batch row at a time (scores, softmax, output on one
 * thread) gives the bytes of three passes over the batch, forward and
 * backward, with a key mask, causal, and without */
static void test_attention_rows(void) {
    if (!be_gemm_local_parallel()) T_SKIP("the attention's products are OpenBLAS's here: always in passes");
    size_t nin = 1 << 17, nout = 1 << 18;
    float *in = malloc(sizeof(float) * nin);
    outputs by_row = {.out = calloc(nout, sizeof(float))}, passes = {.out = calloc(nout, sizeof(float))};
    for (size_t i = 0; i < nin; i++) in[i] = 4.0f * urand();
    simd_outputs(&by_row, in);
    CHECK(ops_set_attention_rows(0) == 1, "the attention did not run a row at a time by default");
    simd_outputs(&passes, in);
    ops_set_attention_rows(1);
    CHECK(by_row.o == passes.o && by_row.o <= nout, "outputs %zu %zu", by_row.o, passes.o);
    int att = 0;
    for (int sc = 0, i = 0; sc < by_row.n; sc++) {
        att += strncmp(by_row.sec[sc], "attention", 9) == 0;
        size_t first = by_row.end[sc];
        for (; (size_t)i < by_row.end[sc]; i++)
            if (first == by_row.end[sc] && memcmp(&by_row.out[i], &passes.out[i], 4)) first = (size_t)i;
        CHECK(first == by_row.end[sc], "%s: a row at a time and in passes differ at output %zu", by_row.sec[sc], first);
    }
    CHECK(att == 5, "%d attention sections compared", att);
    free(in), free(by_row.out), free(passes.out);
}

static void test_simd_widths(void) {
    if (ops_simd_lanes() != 16) T_SKIP("no AVX-512F: only one vector width here");
    size_t nin = 1 << 17, nout = 1 << 18;
    float *in = malloc(sizeof(float) * nin);
    outputs w16 = {.out = calloc(nout, sizeof(float))}, w4 = {.out = calloc(nout, sizeof(float))};
    for (size_t i = 0; i < nin; i++) in[i] = 4.0f * urand();
    for (size_t i = 0; i < GN; i++) in[i] *= 3.0f; /* GELU inputs out to +-12 */
    simd_outputs(&w16, in);
    CHECK(ops_set_simd_lanes(4) == 0, "cannot select 4 lanes");
    simd_outputs(&w4, in);
    ops_set_simd_lanes(16);
    CHECK(w16.o == w4.o && w16.o <= nout, "outputs %zu %zu", w16.o, w4.o);
    for (int sc = 0, i = 0; sc < w16.n; sc++) {
        size_t first = w16.end[sc];
        for (; (size_t)i < w16.end[sc]; i++)
            if (first == w16.end[sc] && memcmp(&w16.out[i], &w4.out[i], 4)) first = (size_t)i;
        CHECK(first == w16.end[sc], "%s: 16 and 4 lanes differ at output %zu: %.9g vs %.9g", w16.sec[sc], first,
              first < w16.end[sc] ? w16.out[first] : 0.0, first < w16.end[sc] ? w4.out[first] : 0.0);
    }
    /* and both are the function: GELU against op_gelu_new (libm expf) */
    float *ref_g = malloc(sizeof(float) * GN);
    for (int i = 0; i < GN; i++) ref_g[i] = op_gelu_new(in[i]) * in[GN + i];
    t_close("gelu 16 lanes", w16.out, ref_g, GN, 1e-5, 1e-6);
    free(in), free(w16.out), free(w4.out), free(ref_g);
}

/* The bf16 kernel reading op(A) = A in place (converted once to bf16 rows:
 * k <= 1024, whole 12 x 32 blocks; edge blocks pack) gives the bytes of
 * packing it, on the pool and on one thread, beta 0 and not. The shapes
 * with ta = 0, m >= 12, n >= 32 and k <= 1024 reach the in-place kernel
 * (odd k among them); the rest check that the switch changes nothing
 * where it does not apply. */
static void test_bf16_inplace(void) {
    if (!bf16gemm_available()) T_SKIP("no AVX512_BF16 on this CPU");
    const int shapes[][3] = {{13, 40, 1023}, {100, 17, 129}, {300, 200, 130}, {257, 96, 1700},
                             {24, 64, 4097}, {256, 256, 512}, {96, 512, 1024}, {7, 5, 3},
                             {64, 96, 40}, {257, 130, 301}, {37, 33, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int loc = 0; loc < 2; loc++) {
                    int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                    int lda = (ta ? m : k) + 1, ldb = (tb ? k : n) + 3, ldc = n;
                    float *A = rnd((size_t)(ta ? k : m) * lda), *B = rnd((size_t)(tb ? n : k) * ldb);
                    float *C0 = rnd((size_t)m * ldc), *C1 = malloc(sizeof(float) * (size_t)m * ldc);
                    float beta = loc ? 0.0f : 0.75f;
                    memcpy(C1, C0, sizeof(float) * (size_t)m * ldc);
                    int was = bf16gemm_set_inplace(0);
                    bf16gemm(loc, ta, tb, m, n, k, 1.25f, A, lda, B, ldb, beta, C0, ldc);
                    bf16gemm_set_inplace(1);
                    bf16gemm(loc, ta, tb, m, n, k, 1.25f, A, lda, B, ldb, beta, C1, ldc);
                    bf16gemm_set_inplace(was);
                    CHECK(!memcmp(C0, C1, sizeof(float) * (size_t)m * ldc),
                          "bf16 %dx%dx%d ta%d tb%d %s: in place gives other bytes than packed", m, n, k, ta, tb,
                          loc ? "local" : "pool");
                    free(A), free(B), free(C0), free(C1);
                }
}

/* Frozen operands (f32gemm_freeze): products whose B lies in a frozen range
 * reuse its packed panels and give the bytes of packing again, for each
 * float32 kernel and the bf16 one, both transposes, one and several
 * k-blocks; after a thaw a changed B gives the new product; with
 * MATS_CHECK_FROZEN=1 a B changed while frozen stops the program. */
static void test_frozen(void) {
    const int shapes[][3] = {{300, 200, 130}, {257, 96, 1700}};
    for (int kern = F32GEMM_AVX2; kern <= F32GEMM_AVX512 + 1; kern++) {
        int bf = kern > F32GEMM_AVX512;
        if (bf ? !bf16gemm_available() : !f32gemm_kernel_supported(kern)) continue;
        int was = f32gemm_kernel();
        if (!bf && f32gemm_set_kernel(kern) != 0) die("%s", mc_error());
        for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++)
            for (int tb = 0; tb < 2; tb++) {
                int m = shapes[sh][0], n = shapes[sh][1], k = shapes[sh][2], ldb = tb ? k : n;
                float *A = rnd((size_t)m * k), *B = rnd((size_t)k * n);
                float *C0 = malloc(sizeof(float) * m * n), *C1 = malloc(sizeof(float) * m * n);
                void (*g)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                          int) = bf ? bf16gemm : f32gemm;
                g(0, 0, tb, m, n, k, 1.0f, A, k, B, ldb, 0.0f, C0, n);
                f32gemm_freeze(B, sizeof(float) * (size_t)k * n);
                for (int rep = 0; rep < 2; rep++) { /* packs, then reuses */
                    g(0, 0, tb, m, n, k, 1.0f, A, k, B, ldb, 0.0f, C1, n);
                    CHECK(!memcmp(C0, C1, sizeof(float) * m * n), "%s frozen %dx%dx%d tb%d call %d: other bytes",
                          bf ? "bf16" : f32gemm_kernel_name(kern), m, n, k, tb, rep);
                }
                f32gemm_thaw(B);
                for (size_t i = 0; i < (size_t)k * n; i++) B[i] *= 0.5f;
                f32gemm_freeze(B, sizeof(float) * (size_t)k * n);
                g(0, 0, tb, m, n, k, 1.0f, A, k, B, ldb, 0.0f, C1, n);
                f32gemm_thaw(B);
                g(0, 0, tb, m, n, k, 1.0f, A, k, B, ldb, 0.0f, C0, n);
                CHECK(!memcmp(C0, C1, sizeof(float) * m * n), "after a thaw the changed B was not packed again");
                free(A), free(B), free(C0), free(C1);
            }
        f32gemm_set_kernel(was);
    }
    /* a B changed while frozen, with the check on: the program stops */
    if (!f32gemm_kernel_supported(F32GEMM_AVX2)) T_SKIP("no blocked kernel on this CPU");
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "MATS_CHECK_FROZEN=1 %s --frozen-change 2>/dev/null", self);
    int st = system(cmd);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 1, "a frozen B changed under MATS_CHECK_FROZEN=1: status %d",
          st);
    snprintf(cmd, sizeof cmd, "%s --frozen-change 2>/dev/null", self);
    st = system(cmd);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "without the check: status %d", st);
}

int main(int argc, char **argv) {
    self = argv[0];
    be_init(2);
    if (argc == 4 && !strcmp(argv[1], "--dump")) return dump(argv[2], argv[3]);
    if (argc == 2 && !strcmp(argv[1], "--frozen-change")) { /* test_frozen's child: B written while frozen */
        float *A = rnd(64 * 64), *B = rnd(64 * 64), *C = malloc(sizeof(float) * 64 * 64);
        f32gemm_freeze(B, sizeof(float) * 64 * 64);
        f32gemm(0, 0, 0, 64, 64, 64, 1.0f, A, 64, B, 64, 0.0f, C, 64);
        B[5] += 1.0f;
        f32gemm(0, 0, 0, 64, 64, 64, 1.0f, A, 64, B, 64, 0.0f, C, 64);
        return 0;
    }
    RUN(test_shapes);
    RUN(test_batched);
    RUN(test_kernels_agree);
    RUN(test_syrk);
    RUN(test_threads);
    RUN(test_simd_widths);
    RUN(test_attention_rows);
    RUN(test_local_groups);
    RUN(test_frozen);
    RUN(test_bf16_inplace);
    return t_done();
}
