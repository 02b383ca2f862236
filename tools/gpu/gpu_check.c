/* gpu_check.c - the CUDA backend against the CPU backend, then timings.
 * Built by recipes/gpu.mk with GPU=1 only; run through
 * scripts/gpu-check.sh.
 *
 *   build/gpu/gpu_check [--no-t5] [--no-timing] [--configs DIR]
 *
 * Part 1, one row per op: the normalised error of the GPU result against the
 * CPU result on the same inputs, nmse = sum (cpu - gpu)^2 / sum cpu^2 (as
 * ggml's test-backend-ops), and the op's tolerance. Part 2: one training step
 * of t5-base (lib/t5.c moved to the GPU with t5_to_device) against the
 * CPU: loss, gradient norm, gradient nmse, and the parameters after AdamW.
 * Part 3: timings. Exit status 1 if any row fails.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "config.h"
#include "gpu.h"
#include "ops.h"
#include "optim.h"
#include "device.h"
#include "t5.h"

/* a model made on the host, moved to the device */
static t5_model *dev_model(const t5_config *c, int with_grads, int with_ia3) {
    t5_model *m = t5_new(c, with_grads, with_ia3);
    t5_to_device(m, dev_ops(MC_DEV_CUDA));
    return m;
}

/* host copy of n floats of device memory (caller frees) */
static float *dl(const float *d, size_t n) {
    float *h = mallocCheck(sizeof(float) * (n ? n : 1));
    gpu_download(h, d, sizeof(float) * n);
    return h;
}

static int n_pass, n_fail;

/* ------------------------------------------------------------ helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static double urand(void) { /* [0,1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}
static float *rnd(long n, float scale) {
    float *x = mallocCheck(sizeof(float) * (size_t)(n ? n : 1));
    for (long i = 0; i < n; i++) x[i] = (float)((2 * urand() - 1) * scale);
    return x;
}
static void *todev(const void *h, size_t bytes) {
    void *d = gpu_malloc(bytes);
    gpu_upload(d, h, bytes);
    return d;
}
#define TODEV(h, n) ((float *)todev((h), sizeof(float) * (size_t)(n)))

static double nmse(const float *ref, const float *got, long n) {
    double num = 0, den = 0;
    for (long i = 0; i < n; i++) {
        double d = (double)ref[i] - got[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (!isfinite(num)) return INFINITY;
    return den > 0 ? num / den : num;
}

static void row(const char *name, double err, double tol, const char *note) {
    int ok = err <= tol && isfinite(err);
    ok ? n_pass++ : n_fail++;
    printf("  %-34s %11.3e %10.1e  %s%s%s\n", name, err, tol, ok ? "ok" : "FAIL", note ? "  " : "",
           note ? note : "");
    fflush(stdout);
}

/* Compare a device buffer with a host reference. */
static void cmp(const char *name, const float *ref, const float *dev, long n, double tol) {
    float *h = mallocCheck(sizeof(float) * (size_t)(n ? n : 1));
    gpu_download(h, dev, sizeof(float) * (size_t)n);
    row(name, nmse(ref, h, n), tol, NULL);
    free(h);
}

/* Gradient outputs of a backward check. ops.h's backwards add into
 * parameter gradients always and into activation gradients when acc is 1;
 * with acc 0 they overwrite them. Each backward runs three times, every
 * time from the same nonzero prefill `init` on both devices:
 *   run 0: acc 1;  run 1: acc 0;  run 2: acc 0 with the device's activation
 *   gradients filled with NaN, which an overwrite must never read.
 * apart() then makes sure the CPU results of runs 0 and 1 differ by far more
 * than the tolerance, so the rows really tell += from =. */
static const char *const run_tag[3] = {"acc=1", "acc=0", "acc=0 NaN"};
enum { N_RUNS = 3 };
static int run_acc(int run) { return run == 0; }

typedef struct {
    const char *name; /* "linear_backward dx" */
    long n;
    double tol;
    int param;      /* 1: a parameter gradient (always +=) */
    float *init;    /* host prefill */
    float *h, *d;   /* the CPU's and the GPU's output */
    float *h_acc1;  /* the CPU's run-0 output (activation gradients) */
} grad_buf;

static void grad_init(grad_buf *g, const char *name, long n, double tol, int param, float scale) {
    g->name = name, g->n = n, g->tol = tol, g->param = param;
    g->init = rnd(n, scale);
    g->h = mallocCheck(sizeof(float) * (size_t)(n ? n : 1));
    g->d = gpu_malloc(sizeof(float) * (size_t)n);
    g->h_acc1 = param ? NULL : mallocCheck(sizeof(float) * (size_t)(n ? n : 1));
}

static void grad_prefill(grad_buf *g, int run) {
    memcpy(g->h, g->init, sizeof(float) * (size_t)g->n);
    if (run == 2 && !g->param) gpu_fill(g->d, g->n, NAN);
    else gpu_upload(g->d, g->init, sizeof(float) * (size_t)g->n);
}

/* Smaller of the two normalised errors that a GPU doing += where = was
 * asked (or the reverse) would show; it must be at least 1e4 tol. */
static void apart(const grad_buf *g) {
    double a = nmse(g->h, g->h_acc1, g->n), b = nmse(g->h_acc1, g->h, g->n);
    double d = a < b ? a : b, need = 1e4 * g->tol;
    if (need < 1e-6) need = 1e-6;
    int ok = isfinite(d) && d >= need;
    ok ? n_pass++ : n_fail++;
    char nm[80];
    snprintf(nm, sizeof nm, "%s acc 1 vs 0", g->name);
    printf("  %-34s %11.3e %10.1e  %s  (cpu, must be >= : the prefill separates += from =)\n", nm, d,
           need, ok ? "ok" : "FAIL");
    fflush(stdout);
}

static void grad_check(grad_buf *g, int run) {
    char nm[80];
    snprintf(nm, sizeof nm, "%s %s", g->name, run_tag[run]);
    cmp(nm, g->h, g->d, g->n, g->tol);
    if (g->param) return;
    if (run == 0) memcpy(g->h_acc1, g->h, sizeof(float) * (size_t)g->n);
    if (run == 1) apart(g);
}

static void grad_free(grad_buf *g) {
    free(g->init), free(g->h), free(g->h_acc1);
    gpu_free(g->d);
}

/* N_RUNS runs of a backward op with two gradients a and b (grad_bufs) on
 * both devices: cpu_call and gpu_call read `acc` (run_acc of the run). */
#define BACKWARD_RUNS2(a, b, cpu_call, gpu_call)                                                                 \
    do {                                                                                                         \
        for (int run = 0; run < N_RUNS; run++) {                                                                 \
            int acc = run_acc(run);                                                                              \
            grad_prefill(&a, run), grad_prefill(&b, run);                                                        \
            cpu_call;                                                                                            \
            gpu_call;                                                                                            \
            grad_check(&a, run), grad_check(&b, run);                                                            \
        }                                                                                                        \
        grad_free(&a), grad_free(&b);                                                                            \
    } while (0)

/* ------------------------------------------------------------ part 1: BLAS */

static void check_gemm(void) {
    int m = 384, n = 320, k = 256;
    for (int t = 0; t < 4; t++) {
        int tA = t & 1, tB = t >> 1;
        int lda = (tA ? m : k) + 3, ldb = (tB ? k : n) + 5, ldc = n + 2;
        long na = (long)(tA ? k : m) * lda, nb = (long)(tB ? n : k) * ldb, nc = (long)m * ldc;
        float *A = rnd(na, 1), *B = rnd(nb, 1), *C = rnd(nc, 1);
        float *dA = TODEV(A, na), *dB = TODEV(B, nb), *dC = TODEV(C, nc);
        be_gemm(tA, tB, m, n, k, 0.7f, A, lda, B, ldb, 0.3f, C, ldc);
        for (int mode = GPU_MATH_FP32; mode <= GPU_MATH_BF16; mode++) {
            if (mode != GPU_MATH_FP32 && t != 0) continue;
            float *dC2 = gpu_malloc(sizeof(float) * nc); /* the original C (dC) */
            gpu_copy(dC2, dC, sizeof(float) * nc);
            gpu_set_math(mode);
            gpu_gemm(tA, tB, m, n, k, 0.7f, dA, lda, dB, ldb, 0.3f, dC2, ldc);
            gpu_set_math(GPU_MATH_FP32);
            char name[64];
            snprintf(name, sizeof name, "gemm %s%s %s", tA ? "T" : "N", tB ? "T" : "N",
                     gpu_math_name(mode));
            cmp(name, C, dC2, nc, mode == GPU_MATH_FP32 ? 1e-10 : mode == GPU_MATH_TF32 ? 1e-5 : 1e-4);
            gpu_free(dC2);
        }
        free(A), free(B), free(C);
        gpu_free(dA), gpu_free(dB), gpu_free(dC);
    }
}

static void check_sbatched(void) {
    int m = 96, n = 80, k = 64, batch = 6;
    long sA = (long)m * k + 7, sB = (long)k * n + 3, sC = (long)m * n + 11;
    float *A = rnd(sA * batch, 1), *B = rnd(sB * batch, 1), *C = rnd(sC * batch, 1);
    float *dA = TODEV(A, sA * batch), *dB = TODEV(B, sB * batch), *dC = TODEV(C, sC * batch);
    be_gemm_sbatched(0, 1, m, n, k, 1.0f, A, k, sA, B, k, sB, 0.5f, C, n, sC, batch);
    gpu_gemm_sbatched(0, 1, m, n, k, 1.0f, dA, k, sA, dB, k, sB, 0.5f, dC, n, sC, batch);
    cmp("gemm_sbatched NT", C, dC, sC * batch, 1e-10);
    free(A), free(B), free(C);
    gpu_free(dA), gpu_free(dB), gpu_free(dC);
}

static void check_syrk(void) {
    int n = 200, k = 300;
    for (int trans = 0; trans < 2; trans++)
        for (int mode = GPU_MATH_FP32; mode <= GPU_MATH_TF32; mode++) {
            int lda = trans ? n : k;
            long na = (long)(trans ? k : n) * lda;
            float *A = rnd(na, 1), *C = rnd((long)n * n, 1);
            /* symmetric start so that beta C keeps C symmetric */
            for (int i = 0; i < n; i++)
                for (int j = 0; j < i; j++) C[(size_t)i * n + j] = C[(size_t)j * n + i];
            float *dA = TODEV(A, na), *dC = TODEV(C, (long)n * n);
            be_syrk(trans, n, k, 0.5f, A, lda, 1.0f, C, n);
            gpu_set_math(mode);
            gpu_syrk(trans, n, k, 0.5f, dA, lda, 1.0f, dC, n);
            gpu_set_math(GPU_MATH_FP32);
            char name[64];
            snprintf(name, sizeof name, "syrk %s %s", trans ? "A^T A" : "A A^T", gpu_math_name(mode));
            float *h = mallocCheck(sizeof(float) * n * n);
            gpu_download(h, dC, sizeof(float) * n * n);
            int sym = 1;
            for (int i = 0; i < n; i++)
                for (int j = 0; j < i; j++) sym &= h[(size_t)i * n + j] == h[(size_t)j * n + i];
            row(name, sym ? nmse(C, h, (long)n * n) : INFINITY, mode == GPU_MATH_FP32 ? 1e-10 : 1e-5,
                sym ? "exactly symmetric" : "NOT SYMMETRIC");
            free(h), free(A), free(C);
            gpu_free(dA), gpu_free(dC);
        }
}

static void check_dgemm_dot(void) {
    int m = 120, n = 90, k = 70;
    double *A = mallocCheck(sizeof(double) * m * k), *B = mallocCheck(sizeof(double) * n * k);
    double *C = mallocCheck(sizeof(double) * m * n), *H = mallocCheck(sizeof(double) * m * n);
    for (int i = 0; i < m * k; i++) A[i] = 2 * urand() - 1;
    for (int i = 0; i < n * k; i++) B[i] = 2 * urand() - 1;
    for (int i = 0; i < m * n; i++) C[i] = 2 * urand() - 1;
    double *dA = todev(A, sizeof(double) * m * k), *dB = todev(B, sizeof(double) * n * k);
    double *dC = todev(C, sizeof(double) * m * n);
    be_dgemm(0, 1, m, n, k, 1.5, A, k, B, k, -1.0, C, n);
    gpu_dgemm(0, 1, m, n, k, 1.5, dA, k, dB, k, -1.0, dC, n);
    gpu_download(H, dC, sizeof(double) * m * n);
    double num = 0, den = 0;
    for (int i = 0; i < m * n; i++) num += (C[i] - H[i]) * (C[i] - H[i]), den += C[i] * C[i];
    row("dgemm NT", num / den, 1e-24, NULL);
    free(A), free(B), free(C), free(H);
    gpu_free(dA), gpu_free(dB), gpu_free(dC);

    long nn = 1000003;
    float *x = rnd(nn, 1), *y = rnd(nn, 1);
    float *dx = TODEV(x, nn), *dy = TODEV(y, nn);
    double ref = 0;
    for (long i = 0; i < nn; i++) ref += (double)x[i] * y[i];
    double got = gpu_dot(nn, dx, dy);
    row("dot (double sum)", fabs(got - ref) / fabs(ref), 1e-12, NULL);
    be_axpy(nn, 0.25f, x, y);
    gpu_axpy(nn, 0.25f, dx, dy);
    cmp("axpy", y, dy, nn, 1e-14);
    free(x), free(y);
    gpu_free(dx), gpu_free(dy);
}

/* ------------------------------------------------------------ part 1: T5 ops */

enum { TB = 4, TT = 128, TD = 768, TF = 2048, TH = 12, TK = 64 };

static void check_embed_norm_linear(void) {
    int N = TB * TT, D = TD, V = 1000;
    int *ids = mallocCheck(sizeof(int) * N);
    for (int i = 0; i < N; i++) ids[i] = (int)(urand() * 50); /* many repeats */
    float *table = rnd((long)V * D, 1);
    int *did = todev(ids, sizeof(int) * N);
    float *dtab = TODEV(table, (long)V * D);
    float *out = mallocCheck(sizeof(float) * N * D), *dout = gpu_malloc(sizeof(float) * N * D);
    op_embed_forward(out, ids, table, N, D);
    gpu_embed_forward(dout, did, dtab, N, D);
    cmp("embed_forward", out, dout, (long)N * D, 0);
    float *g = rnd((long)N * D, 1), *dg = TODEV(g, (long)N * D);
    op_embed_backward(table, g, ids, N, D);
    gpu_embed_backward(dtab, dg, did, N, D);
    cmp("embed_backward (atomics)", table, dtab, (long)V * D, 1e-12);

    /* RMSNorm: x from the embedding, accumulating backward */
    float *w = rnd(D, 1), *dw = TODEV(w, D);
    float *y = mallocCheck(sizeof(float) * N * D), *rs = mallocCheck(sizeof(float) * N);
    float *dy = gpu_malloc(sizeof(float) * N * D), *drs = gpu_malloc(sizeof(float) * N);
    op_rmsnorm_forward(y, rs, out, w, N, D, 1e-6f);
    gpu_rmsnorm_forward(dy, drs, dout, dw, N, D, 1e-6f);
    cmp("rmsnorm_forward out", y, dy, (long)N * D, 1e-12);
    cmp("rmsnorm_forward rstd", rs, drs, N, 1e-12);
    gpu_upload(drs, rs, sizeof(float) * N);
    {
        grad_buf gx, gw;
        grad_init(&gx, "rmsnorm_backward dx", (long)N * D, 1e-11, 0, 1.0f);
        grad_init(&gw, "rmsnorm_backward dw", D, 1e-11, 1, 0.1f);
        BACKWARD_RUNS2(gx, gw, op_rmsnorm_backward(gx.h, gw.h, g, out, w, rs, N, D, acc),
                       gpu_rmsnorm_backward(gx.d, gw.d, dg, dout, dw, drs, N, D, acc));
    }

    /* linear D -> F and back */
    int I = D, O = TF;
    float *W = rnd((long)O * I, 0.05f), *dW = TODEV(W, (long)O * I);
    float *lo = mallocCheck(sizeof(float) * N * O), *dlo = gpu_malloc(sizeof(float) * N * O);
    /* every op below gets the CPU's inputs uploaded, so a row measures that
     * op alone, not the rounding of the ops before it */
    gpu_upload(dy, y, sizeof(float) * N * D);
    op_linear_forward(lo, y, W, N, I, O);
    gpu_linear_forward(dlo, dy, dW, N, I, O);
    cmp("linear_forward", lo, dlo, (long)N * O, 1e-10);
    float *go = rnd((long)N * O, 1), *dgo = TODEV(go, (long)N * O);
    {
        grad_buf gx, gw;
        grad_init(&gx, "linear_backward dx", (long)N * I, 1e-10, 0, 1.0f);
        grad_init(&gw, "linear_backward dw", (long)O * I, 1e-10, 1, 0.1f);
        BACKWARD_RUNS2(gx, gw, op_linear_backward(gx.h, gw.h, go, y, W, N, I, O, acc),
                       gpu_linear_backward(gx.d, gw.d, dgo, dy, dW, N, I, O, acc));
    }

    /* IA3 on the linear's output */
    float *s = rnd(O, 1), *dsd = TODEV(s, O);
    float *io = mallocCheck(sizeof(float) * N * O), *dio = gpu_malloc(sizeof(float) * N * O);
    gpu_upload(dlo, lo, sizeof(float) * N * O);
    op_ia3_forward(io, lo, s, N, O);
    gpu_ia3_forward(dio, dlo, dsd, N, O);
    cmp("ia3_forward", io, dio, (long)N * O, 1e-12);
    {
        grad_buf gx, gs;
        grad_init(&gx, "ia3_backward dx", (long)N * O, 1e-12, 0, 1.0f);
        grad_init(&gs, "ia3_backward ds", O, 1e-11, 1, 0.1f);
        BACKWARD_RUNS2(gx, gs, op_ia3_backward(gx.h, gs.h, go, lo, s, N, O, acc),
                       gpu_ia3_backward(gx.d, gs.d, dgo, dlo, dsd, N, O, acc));
    }

    /* gated GELU on (lo, io) */
    long n = (long)N * O;
    float *gg = mallocCheck(sizeof(float) * n), *dgg = gpu_malloc(sizeof(float) * n);
    gpu_upload(dio, io, sizeof(float) * n);
    op_gated_gelu_forward(gg, lo, io, n);
    gpu_gated_gelu_forward(dgg, dlo, dio, n);
    cmp("gated_gelu_forward", gg, dgg, n, 1e-11); /* tanhf: CUDA vs glibc ulps */
    {
        grad_buf g0, g1;
        grad_init(&g0, "gated_gelu_backward dh0", n, 1e-11, 0, 1.0f);
        grad_init(&g1, "gated_gelu_backward dh1", n, 1e-11, 0, 1.0f);
        BACKWARD_RUNS2(g0, g1, op_gated_gelu_backward(g0.h, g1.h, go, lo, io, n, acc),
                       gpu_gated_gelu_backward(g0.d, g1.d, dgo, dlo, dio, n, acc));
    }

    /* ReLU of the original T5 on lo */
    op_relu_forward(gg, lo, n);
    gpu_relu_forward(dgg, dlo, n);
    cmp("relu_forward", gg, dgg, n, 0);
    {
        grad_buf gr;
        grad_init(&gr, "relu_backward dx", n, 0, 0, 1.0f);
        for (int run = 0; run < N_RUNS; run++) {
            int acc = run_acc(run);
            grad_prefill(&gr, run);
            op_relu_backward(gr.h, go, lo, n, acc);
            gpu_relu_backward(gr.d, dgo, dlo, n, acc);
            grad_check(&gr, run);
        }
        grad_free(&gr);
    }

    float *acc = rnd(n, 1), *dacc = TODEV(acc, n);
    gpu_upload(dgg, gg, sizeof(float) * n);
    op_add_inplace(acc, gg, n);
    gpu_add_inplace(dacc, dgg, n);
    cmp("add_inplace", acc, dacc, n, 1e-13);

    free(ids), free(table), free(out), free(g), free(w), free(y), free(rs);
    free(W), free(lo), free(go), free(s), free(io);
    free(gg), free(acc);
    void *dv[] = {did, dtab, dout, dg, dw, dy, drs, dW, dlo, dgo, dsd, dio, dgg, dacc};
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu_free(dv[i]);
}

static void check_relpos_attention(void) {
    int B = TB, T = TT, H = TH, K = TK, HK = H * K, NB = 32, MD = 128;
    long TTl = (long)T * T;
    /* buckets: exact */
    for (int bi = 0; bi < 2; bi++) {
        int *hb = mallocCheck(sizeof(int) * TTl), *gb = mallocCheck(sizeof(int) * TTl);
        int *db = gpu_malloc(sizeof(int) * TTl);
        op_relpos_buckets(hb, T, T, bi, NB, MD);
        gpu_relpos_buckets(db, T, T, bi, NB, MD);
        gpu_download(gb, db, sizeof(int) * TTl);
        long diff = 0;
        for (long i = 0; i < TTl; i++) diff += hb[i] != gb[i];
        row(bi ? "relpos_buckets bidirectional" : "relpos_buckets causal", (double)diff, 0, "(count)");
        free(hb), free(gb), gpu_free(db);
    }
    int *bk = mallocCheck(sizeof(int) * TTl);
    op_relpos_buckets(bk, T, T, 1, NB, MD);
    int *dbk = todev(bk, sizeof(int) * TTl);
    float *table = rnd((long)NB * H, 1), *dtable = TODEV(table, (long)NB * H);
    float *bias = mallocCheck(sizeof(float) * H * TTl), *dbias = gpu_malloc(sizeof(float) * H * TTl);
    op_relpos_bias_forward(bias, table, bk, H, T, T);
    gpu_relpos_bias_forward(dbias, dtable, dbk, H, T, T);
    cmp("relpos_bias_forward", bias, dbias, H * TTl, 0);
    float *gbias = rnd(H * TTl, 1), *dgbias = TODEV(gbias, H * TTl);
    op_relpos_bias_backward(table, gbias, bk, H, T, T);
    gpu_relpos_bias_backward(dtable, dgbias, dbk, H, T, T);
    /* the CPU adds up to Tq*Tk terms per entry one by one in float: its own
     * rounding is ~eps*sqrt(16384), hence the wider tolerance */
    cmp("relpos_bias_backward", table, dtable, (long)NB * H, 1e-9);

    /* attention: encoder (bias + padding mask), decoder (causal + bias), cross (mask + kv_index) */
    long nq = (long)B * T * HK;
    float *q = rnd(nq, 0.5f), *k = rnd(nq, 0.5f), *v = rnd(nq, 1);
    float *dq_ = TODEV(q, nq), *dk_ = TODEV(k, nq), *dv_ = TODEV(v, nq);
    uint8_t *mask = mallocCheck((size_t)B * T);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) mask[b * T + t] = t < T - 17 * b; /* row b has 17b pads */
    mask[3 * T + 0] = 1;
    uint8_t *dmask = todev(mask, (size_t)B * T);
    long np = (long)B * H * TTl;
    float *out = mallocCheck(sizeof(float) * nq), *P = mallocCheck(sizeof(float) * np);
    float *dout = gpu_malloc(sizeof(float) * nq), *dP = gpu_malloc(sizeof(float) * np);
    struct { const char *name; int causal, use_bias, use_mask; } cases[] = {
        {"attention_forward encoder", 0, 1, 1},
        {"attention_forward decoder causal", 1, 1, 0},
    };
    for (int c = 0; c < 2; c++) {
        op_attention_forward(out, P, q, k, v, cases[c].use_bias ? bias : NULL,
                             cases[c].use_mask ? mask : NULL, NULL, cases[c].causal, B, T, T, H, K);
        gpu_attention_forward(dout, dP, dq_, dk_, dv_, cases[c].use_bias ? dbias : NULL,
                              cases[c].use_mask ? dmask : NULL, NULL, cases[c].causal, B, T, T, H, K);
        char nm[80];
        snprintf(nm, sizeof nm, "%s out", cases[c].name);
        cmp(nm, out, dout, nq, 1e-10);
        snprintf(nm, sizeof nm, "%s probs", cases[c].name);
        cmp(nm, P, dP, np, 1e-10);
    }
    /* cross-attention: 6 decoder rows of length 32 over 4 encoder rows */
    {
        int Bd = 6, Td = 32, kvi[6] = {0, 0, 1, 2, 3, 3};
        long nqd = (long)Bd * Td * HK, npd = (long)Bd * H * Td * T;
        float *qd = rnd(nqd, 0.5f), *dqd = TODEV(qd, nqd);
        float *o2 = mallocCheck(sizeof(float) * nqd), *P2 = mallocCheck(sizeof(float) * npd);
        float *do2 = gpu_malloc(sizeof(float) * nqd), *dP2 = gpu_malloc(sizeof(float) * npd);
        op_attention_forward(o2, P2, qd, k, v, NULL, mask, kvi, 0, Bd, Td, T, H, K);
        gpu_attention_forward(do2, dP2, dqd, dk_, dv_, NULL, dmask, kvi, 0, Bd, Td, T, H, K);
        cmp("attention_forward cross kv_index", o2, do2, nqd, 1e-10);
        free(qd), free(o2), free(P2), gpu_free(dqd), gpu_free(do2), gpu_free(dP2);
    }
    /* backward of the encoder case (bias + mask) with dbias */
    op_attention_forward(out, P, q, k, v, bias, mask, NULL, 0, B, T, T, H, K);
    gpu_attention_forward(dout, dP, dq_, dk_, dv_, dbias, dmask, NULL, 0, B, T, T, H, K);
    float *go = rnd(nq, 1), *dgo = TODEV(go, nq);
    float *scr = mallocCheck(sizeof(float) * np), *dscr = gpu_malloc(sizeof(float) * np);
    gpu_upload(dP, P, sizeof(float) * np);
    {
        grad_buf gq, gk, gv, gb;
        grad_init(&gq, "attention_backward dq", nq, 1e-10, 0, 1.0f);
        grad_init(&gk, "attention_backward dk", nq, 1e-10, 0, 1.0f);
        grad_init(&gv, "attention_backward dv", nq, 1e-10, 0, 1.0f);
        grad_init(&gb, "attention_backward dbias", H * TTl, 1e-10, 1, 0.1f);
        for (int run = 0; run < N_RUNS; run++) {
            grad_prefill(&gq, run), grad_prefill(&gk, run), grad_prefill(&gv, run);
            grad_prefill(&gb, run);
            op_attention_backward(gq.h, gk.h, gv.h, gb.h, scr, go, q, k, v, P, B, T, T, H, K,
                                  run_acc(run));
            gpu_attention_backward(gq.d, gk.d, gv.d, gb.d, dscr, dgo, dq_, dk_, dv_, dP, B, T, T, H,
                                   K, run_acc(run));
            grad_check(&gq, run), grad_check(&gk, run), grad_check(&gv, run);
            grad_check(&gb, run);
        }
        grad_free(&gq), grad_free(&gk), grad_free(&gv), grad_free(&gb);
    }

    free(bk), free(table), free(bias), free(gbias), free(q), free(k), free(v), free(mask);
    free(out), free(P), free(go), free(scr);
    void *dv[] = {dbk, dtable, dbias, dgbias, dq_, dk_, dv_, dmask, dout, dP, dgo, dscr};
    for (size_t i = 0; i < sizeof dv / sizeof *dv; i++) gpu_free(dv[i]);
}

static void check_crossentropy(void) {
    int N = 256, V = 32128;
    long n = (long)N * V;
    float *lg = rnd(n, 8), *dlg = TODEV(lg, n);
    int *tg = mallocCheck(sizeof(int) * N);
    float *w = mallocCheck(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        tg[i] = i % 9 == 8 ? 0 : 1 + (int)(urand() * (V - 1));
        w[i] = tg[i] ? 1.0f / 200 : 0.0f;
    }
    int *dtg = todev(tg, sizeof(int) * N);
    float *dw = TODEV(w, N);
    float *loss = mallocCheck(sizeof(float) * N), *lse = mallocCheck(sizeof(float) * N);
    float *dloss = gpu_malloc(sizeof(float) * N), *dlse = gpu_malloc(sizeof(float) * N);
    op_crossentropy_forward(loss, lse, lg, tg, N, V);
    gpu_crossentropy_forward(dloss, dlse, dlg, dtg, N, V);
    cmp("crossentropy_forward loss", loss, dloss, N, 1e-12);
    cmp("crossentropy_forward lse", lse, dlse, N, 1e-12);
    float *g = mallocCheck(sizeof(float) * n), *dg = gpu_malloc(sizeof(float) * n);
    op_crossentropy_backward(g, lg, lse, tg, w, N, V);
    gpu_upload(dlse, lse, sizeof(float) * N);
    gpu_crossentropy_backward(dg, dlg, dlse, dtg, dw, N, V);
    cmp("crossentropy_backward", g, dg, n, 1e-11);
    free(lg), free(tg), free(w), free(loss), free(lse), free(g);
    gpu_free(dlg), gpu_free(dtg), gpu_free(dw), gpu_free(dloss), gpu_free(dlse), gpu_free(dg);
}

/* optim.c against gpu_opt_step over a small tensor table: 3 steps each. */
static void check_optim(void) {
    t5_tensor tt[3];
    memset(tt, 0, sizeof tt);
    int64_t shapes[3][2] = {{300, 200}, {200, 1}, {64, 999}};
    int nd[3] = {2, 1, 2};
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        snprintf(tt[i].name, sizeof tt[i].name, "t%d", i);
        tt[i].ndim = nd[i];
        tt[i].shape[0] = shapes[i][0];
        tt[i].shape[1] = nd[i] == 2 ? shapes[i][1] : 0;
        tt[i].numel = (size_t)(nd[i] == 2 ? shapes[i][0] * shapes[i][1] : shapes[i][0]);
        tt[i].offset = off;
        off += tt[i].numel;
    }
    long n = (long)off;
    for (int kind = OPT_ADAMW; kind <= OPT_ADAFACTOR; kind++)
        for (int variant = 0; variant < 2; variant++) {
            optim *oc = opt_new(kind, 1e-2f, off, tt, 3), *og = opt_new(kind, 1e-2f, off, tt, 3);
            if (variant) {
                oc->weight_decay = og->weight_decay = 0.01f;
                oc->scale_parameter = og->scale_parameter = kind == OPT_ADAFACTOR;
            }
            float *p = rnd(n, 1), *dp = TODEV(p, n);
            float *dstate = TODEV(oc->state, (long)oc->n_state);
            float *dscr = gpu_malloc(sizeof(float) * off);
            float *g = mallocCheck(sizeof(float) * n), *dg = gpu_malloc(sizeof(float) * n);
            for (int s = 0; s < 3; s++) {
                for (long i = 0; i < n; i++) g[i] = (float)((2 * urand() - 1) * 0.1);
                gpu_upload(dg, g, sizeof(float) * n);
                opt_step(oc, p, g);
                gpu_opt_step(og, dp, dg, dstate, dscr);
            }
            char nm[64];
            snprintf(nm, sizeof nm, "%s%s params (3 steps)", kind == OPT_ADAMW ? "adamw" : "adafactor",
                     variant ? (kind == OPT_ADAMW ? " wd" : " wd+scale") : "");
            cmp(nm, p, dp, n, 1e-12);
            snprintf(nm, sizeof nm, "%s%s state", kind == OPT_ADAMW ? "adamw" : "adafactor",
                     variant ? (kind == OPT_ADAMW ? " wd" : " wd+scale") : "");
            cmp(nm, oc->state, dstate, (long)oc->n_state, 1e-10);
            opt_free(oc), opt_free(og);
            free(p), free(g);
            gpu_free(dp), gpu_free(dstate), gpu_free(dscr), gpu_free(dg);
        }
}

static void check_stats(void) {
    int k = 512, n = 300;
    float *X = rnd((long)k * n, 1), *C = rnd((long)n * n, 0);
    float *dX = TODEV(X, (long)k * n), *dC = TODEV(C, (long)n * n);
    for (int r = 0; r < 2; r++) { /* accumulate twice */
        be_syrk(1, n, k, 1.0f / k, X, n, 1.0f, C, n);
        gpu_gram_accumulate(dC, dX, k, n, n, 1.0f / k);
    }
    cmp("gram_accumulate (SYRK)", C, dC, (long)n * n, 1e-11);
    long m = (long)k * n;
    float *f = rnd(m, 0), *df = TODEV(f, m);
    for (long i = 0; i < m; i++) f[i] += 0.5f * X[i] * X[i];
    gpu_sq_accumulate(df, dX, m, 0.5f);
    cmp("fisher diag accumulate", f, df, m, 1e-14);
    free(X), free(C), free(f);
    gpu_free(dX), gpu_free(dC), gpu_free(df);
}

/* ------------------------------------------------------------ part 1: merge operators */

/* SPD Gram: X^T X / k + 0.1 I, X (k x n). Caller frees. */
static float *spd(int n, int k) {
    float *X = rnd((long)k * n, 1), *S = calloc((size_t)n * n, sizeof(float));
    be_syrk(1, n, k, 1.0f / k, X, n, 0.0f, S, n);
    for (int i = 0; i < n; i++) S[(size_t)i * n + i] += 0.1f;
    free(X);
    return S;
}

/* Host K-FAC: Y = sum_i G~_i W A~_i with the lambda scaling (2N GEMMs). */
typedef struct {
    int N, out, in;
    float **A, **G; /* scaled copies */
} host_kfac;

static void host_kfac_apply(const host_kfac *K, const float *W, float *Y) {
    float *T = mallocCheck(sizeof(float) * (size_t)K->out * K->in);
    for (int i = 0; i < K->N; i++) {
        be_gemm(0, 0, K->out, K->in, K->out, 1.0f, K->G[i], K->out, W, K->in, 0.0f, T, K->in);
        be_gemm(0, 0, K->out, K->in, K->in, 1.0f, T, K->in, K->A[i], K->in, i ? 1.0f : 0.0f, Y, K->in);
    }
    free(T);
}

/* mrg_cg's algorithm without preconditioner, on the host (the reference for gpu_cg). */
static int host_cg(const host_kfac *K, const float *b, float *x, int maxit) {
    long n = (long)K->out * K->in;
    float *r = mallocCheck(sizeof(float) * n), *p = mallocCheck(sizeof(float) * n);
    float *q = mallocCheck(sizeof(float) * n);
    host_kfac_apply(K, x, r);
    double rr = 0;
    for (long i = 0; i < n; i++) r[i] = b[i] - r[i], rr += (double)r[i] * r[i];
    memcpy(p, r, sizeof(float) * n);
    int it = 0;
    for (; it < maxit && rr > 0; it++) {
        host_kfac_apply(K, p, q);
        double pq = 0;
        for (long i = 0; i < n; i++) pq += (double)p[i] * q[i];
        double alpha = rr / pq;
        if (!(pq > 0) || !isfinite(alpha)) break;
        double rn = 0;
        for (long i = 0; i < n; i++) {
            x[i] += (float)alpha * p[i];
            r[i] -= (float)alpha * q[i];
            rn += (double)r[i] * r[i];
        }
        double beta = rn / rr;
        if (!(rn > 0) || !isfinite(beta)) {
            it++;
            break;
        }
        for (long i = 0; i < n; i++) p[i] = r[i] + (float)beta * p[i];
        rr = rn;
    }
    free(r), free(p), free(q);
    return it;
}

static void gpu_kfac_apply_cb(const void *ctx, const float *x, float *y) {
    gpu_kfac_apply((const gpu_kfac *)ctx, x, y);
}

static void check_merge_ops(void) {
    int N = 3, out = 96, in = 80;
    float lambda = 0.7f;
    host_kfac hk = {N, out, in, mallocCheck(sizeof(float *) * N), mallocCheck(sizeof(float *) * N)};
    gpu_kfac gk;
    gpu_kfac_init(&gk, N, out, in);
    for (int i = 0; i < N; i++) {
        float *A = spd(in, 2 * in), *G = spd(out, 2 * out);
        gpu_kfac_set(&gk, i, A, G, lambda);
        for (int r = 0; r < in; r++)
            for (int c = 0; c < in; c++)
                if (r != c) A[(size_t)r * in + c] *= lambda;
        for (int r = 0; r < out; r++)
            for (int c = 0; c < out; c++)
                if (r != c) G[(size_t)r * out + c] *= lambda;
        hk.A[i] = A, hk.G[i] = G;
    }
    long n = (long)out * in;
    float *W = rnd(n, 1), *Y = mallocCheck(sizeof(float) * n), *Yg = mallocCheck(sizeof(float) * n);
    host_kfac_apply(&hk, W, Y);
    gpu_kfac_apply_host(&gk, W, Yg);
    row("kfac apply sum_i G_i W A_i", nmse(Y, Yg, n), 1e-10, NULL);

    /* CG: same iterates on both sides for a few steps, then convergence */
    float *b = Y, *x0 = mallocCheck(sizeof(float) * n);
    memset(x0, 0, sizeof(float) * n);
    int it_h = host_cg(&hk, b, x0, 10);
    float *db = TODEV(b, n), *dx = gpu_malloc(sizeof(float) * n);
    gpu_memset0(dx, sizeof(float) * n);
    gpu_cg_result res;
    gpu_cg(gpu_kfac_apply_cb, &gk, n, db, dx, 10, 0.0, &res);
    char note[96];
    snprintf(note, sizeof note, "iterations %d vs %d", res.iterations, it_h);
    cmp("cg kfac, 10 iterations: x", x0, dx, n, 1e-8);
    if (res.iterations != it_h) row("cg kfac iteration count", fabs((double)res.iterations - it_h), 0, note);
    gpu_memset0(dx, sizeof(float) * n);
    gpu_cg(gpu_kfac_apply_cb, &gk, n, db, dx, 500, 1e-6, &res);
    float *xs = mallocCheck(sizeof(float) * n);
    gpu_download(xs, dx, sizeof(float) * n);
    snprintf(note, sizeof note, "converged in %d iterations, status %d", res.iterations, res.status);
    row("cg kfac solve: x vs W", nmse(W, xs, n), 1e-6, note);

    /* blockwise Fisher (IA3): 5 blocks of d = 64 */
    int nb = 5, d = 64;
    float *S = mallocCheck(sizeof(float) * nb * d * d);
    for (int i = 0; i < nb; i++) {
        float *s = spd(d, 100);
        memcpy(S + (size_t)i * d * d, s, sizeof(float) * d * d);
        free(s);
    }
    float *xv = rnd((long)nb * d, 1), *yv = mallocCheck(sizeof(float) * nb * d);
    for (int i = 0; i < nb; i++)
        be_gemm(0, 0, d, 1, d, 1.0f, S + (size_t)i * d * d, d, xv + (size_t)i * d, 1, 0.0f,
                yv + (size_t)i * d, 1);
    float *dS = TODEV(S, (long)nb * d * d), *dxv = TODEV(xv, (long)nb * d);
    float *dyv = gpu_malloc(sizeof(float) * nb * d);
    gpu_blockfisher_apply(dS, dxv, dyv, nb, d);
    cmp("blockwise fisher apply", yv, dyv, (long)nb * d, 1e-11);
    float *dd = rnd((long)nb * d, 1), *ddd = TODEV(dd, (long)nb * d);
    for (int i = 0; i < nb * d; i++) yv[i] = dd[i] * xv[i];
    gpu_diag_apply(ddd, dxv, dyv, (long)nb * d);
    cmp("diagonal fisher apply", yv, dyv, (long)nb * d, 0);

    for (int i = 0; i < N; i++) free(hk.A[i]), free(hk.G[i]);
    free(hk.A), free(hk.G), free(W), free(Y), free(Yg), free(x0), free(xs), free(S), free(xv);
    free(yv), free(dd);
    gpu_kfac_free(&gk);
    gpu_free(db), gpu_free(dx), gpu_free(dS), gpu_free(dxv), gpu_free(dyv), gpu_free(ddd);
}

/* ------------------------------------------------------------ part 2: T5 step */

static int load_model_conf(t5_config *c, const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s.conf", dir, name);
    mc_cfg *cfg = cfg_new();
    int rc = cfg_load(cfg, path) < 0 || t5_config_from_cfg(c, cfg) < 0 ? -1 : 0;
    cfg_free(cfg);
    return rc;
}

/* A batch of B rows: inputs of random length up to Te, targets up to Td,
 * each ending with EOS, padded with 0. Host arrays from alloc. */
typedef struct {
    t5_batch b;
    int *enc, *dec, *tgt;
} batch_buf;

static void make_batch(batch_buf *bb, int B, int Te, int Td, int V, void *(*alloc)(size_t)) {
    bb->enc = alloc(sizeof(int) * B * Te);
    bb->dec = alloc(sizeof(int) * B * Td);
    bb->tgt = alloc(sizeof(int) * B * Td);
    for (int b = 0; b < B; b++) {
        int le = Te - (int)(urand() * Te / 3), lt = Td - (int)(urand() * Td / 2);
        for (int t = 0; t < Te; t++) bb->enc[b * Te + t] = t < le - 1 ? 3 + (int)(urand() * (V - 103)) : t == le - 1 ? 1 : 0;
        for (int t = 0; t < Td; t++) bb->tgt[b * Td + t] = t < lt - 1 ? 3 + (int)(urand() * (V - 103)) : t == lt - 1 ? 1 : 0;
        for (int t = 0; t < Td; t++) bb->dec[b * Td + t] = t ? bb->tgt[b * Td + t - 1] : 0;
    }
    bb->b = (t5_batch){.B = B, .Te = Te, .Bd = B, .Td = Td, .enc_ids = bb->enc, .dec_ids = bb->dec,
                       .targets = bb->tgt, .dec_enc = NULL};
}

static void copy_batch(batch_buf *dst, const batch_buf *src, void *(*alloc)(size_t)) {
    int B = src->b.B, Te = src->b.Te, Td = src->b.Td;
    dst->enc = alloc(sizeof(int) * B * Te);
    dst->dec = alloc(sizeof(int) * B * Td);
    dst->tgt = alloc(sizeof(int) * B * Td);
    memcpy(dst->enc, src->enc, sizeof(int) * B * Te);
    memcpy(dst->dec, src->dec, sizeof(int) * B * Td);
    memcpy(dst->tgt, src->tgt, sizeof(int) * B * Td);
    dst->b = src->b;
    dst->b.enc_ids = dst->enc, dst->b.dec_ids = dst->dec, dst->b.targets = dst->tgt;
}

static void *host_alloc(size_t n) { return mallocCheck(n); }

static double norm2(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s);
}

/* One step on both devices from the same parameters. Returns the GPU model
 * (for the timings) or NULL. */
static t5_model *check_t5_step(const char *confdir) {
    t5_config c;
    if (load_model_conf(&c, confdir, "t5-base") < 0) {
        printf("  t5-base step: cannot read %s/t5-base.conf: %s\n", confdir, mc_error());
        n_fail++;
        return NULL;
    }
    int B = 4, Te = 128, Td = 32;
    batch_buf hb, gb;
    make_batch(&hb, B, Te, Td, c.vocab_size, host_alloc);
    copy_batch(&gb, &hb, host_alloc);

    double t0 = mc_now();
    t5_model *mc = t5_new(&c, 1, 0);
    t5_init_random(mc, 7);
    double t_init = mc_now() - t0;
    t5_model *mg = dev_model(&c, 1, 0);
    gpu_upload(mg->params, mc->params, sizeof(float) * mc->n_params);

    t0 = mc_now();
    t5_alloc_acts(mc, B, Te, B, Td, 1);
    float loss_c = t5_forward(mc, &hb.b);
    t5_zero_grad(mc);
    t5_backward(mc, &hb.b, T5_LOSS_MEAN, 1.0f);
    double t_cpu = mc_now() - t0;

    t5_alloc_acts(mg, B, Te, B, Td, 1);
    float loss_g = t5_forward(mg, &gb.b);
    t5_zero_grad(mg);
    t5_backward(mg, &gb.b, T5_LOSS_MEAN, 1.0f);
    gpu_sync();
    float *hg = dl(mg->grads, mg->n_params);

    char note[160];
    snprintf(note, sizeof note, "loss cpu %.7f gpu %.7f (cpu: init %.1f s, fwd+bwd %.2f s)", loss_c,
             loss_g, t_init, t_cpu);
    row("t5-base step: loss (rel)", fabs(loss_g - loss_c) / fabs(loss_c), 1e-5, note);
    double gn_c = norm2(mc->grads, mc->n_params), gn_g = norm2(hg, mg->n_params);
    snprintf(note, sizeof note, "grad norm cpu %.7f gpu %.7f", gn_c, gn_g);
    row("t5-base step: grad norm (rel)", fabs(gn_g - gn_c) / gn_c, 1e-5, note);
    row("t5-base step: all grads nmse", nmse(mc->grads, hg, (long)mc->n_params), 1e-6, NULL);
    double worst = -1;
    int wi = 0;
    for (int i = 0; i < mc->n_tensors; i++) { /* the worst tensor, for the record */
        const t5_tensor *t = &mc->tensors[i];
        double e = nmse(mc->grads + t->offset, hg + t->offset, (long)t->numel);
        if (!(e <= worst)) worst = e, wi = i;
    }
    row("t5-base step: worst tensor grad nmse", worst, 1e-5, mc->tensors[wi].name);

    /* The same step with tensor-core products (information, not a check):
     * how far TF32 / BF16 move the loss and the gradients. fp32 grads are
     * recomputed afterwards for the AdamW comparison. */
    for (int mode = GPU_MATH_TF32; mode <= GPU_MATH_BF16; mode++) {
        gpu_set_math(mode);
        float l = t5_forward(mg, &gb.b);
        t5_zero_grad(mg);
        t5_backward(mg, &gb.b, T5_LOSS_MEAN, 1.0f);
        gpu_sync();
        gpu_download(hg, mg->grads, sizeof(float) * mg->n_params);
        printf("  t5-base step %s (information): loss %.7f, rel %.2e; grad norm rel %.2e; grads nmse %.2e\n",
               gpu_math_name(mode), l, fabs(l - loss_c) / fabs(loss_c),
               fabs(norm2(hg, mg->n_params) - gn_c) / gn_c,
               nmse(mc->grads, hg, (long)mc->n_params));
    }
    gpu_set_math(GPU_MATH_FP32);
    t5_forward(mg, &gb.b);
    t5_zero_grad(mg);
    t5_backward(mg, &gb.b, T5_LOSS_MEAN, 1.0f);
    gpu_sync();
    free(hg);

    /* AdamW on both: the updates (near-zero gradients make lr*sign(g)
     * steps, so a few entries may differ by 2 lr: a looser tolerance) */
    float *p0 = mallocCheck(sizeof(float) * mc->n_params);
    memcpy(p0, mc->params, sizeof(float) * mc->n_params);
    optim *oc = opt_new(OPT_ADAMW, 1e-3f, mc->n_params, mc->tensors, mc->n_tensors);
    optim *og = opt_new(OPT_ADAMW, 1e-3f, mg->n_params, mg->tensors, mg->n_tensors);
    float *st = gpu_malloc(sizeof(float) * og->n_state);
    gpu_memset0(st, sizeof(float) * og->n_state);
    opt_step(oc, mc->params, mc->grads);
    gpu_opt_step(og, mg->params, mg->grads, st, NULL);
    gpu_sync();
    float *pg = mallocCheck(sizeof(float) * mc->n_params);
    gpu_download(pg, mg->params, sizeof(float) * mc->n_params);
    long n = (long)mc->n_params, differ = 0;
    for (long i = 0; i < n; i++) {
        float dc = mc->params[i] - p0[i], dg = pg[i] - p0[i];
        p0[i] = dc, pg[i] = dg;
        differ += fabsf(dc - dg) > 1e-4f;
    }
    snprintf(note, sizeof note, "%ld of %ld updates differ by > 0.1 lr", differ, n);
    row("t5-base step: AdamW update nmse", nmse(p0, pg, n), 1e-4, note);
    free(p0), free(pg);
    opt_free(oc), opt_free(og);
    gpu_free(st);
    t5_free(mc);
    free(hb.enc), free(hb.dec), free(hb.tgt);
    free(gb.enc), free(gb.dec), free(gb.tgt);
    return mg;
}

/* ------------------------------------------------------------ part 3: timings */

#define TIME(var, reps, stmt)                                     \
    do {                                                          \
        stmt;                                                     \
        gpu_sync();                                               \
        double t0_ = mc_now();                                    \
        for (int r_ = 0; r_ < (reps); r_++) stmt;                 \
        gpu_sync();                                               \
        var = (mc_now() - t0_) / (reps);                          \
    } while (0)

static void timing_gemm(void) {
    printf("\n  GEMM (row-major, C = A B^T as in linear_forward)       TFLOP/s\n");
    struct { int m, n, k; const char *what; } s[] = {
        {4096, 4096, 4096, "4096^3"},
        {8192, 2816, 1024, "t5-large wi: 8192 tok x 1024 -> 2816"},
        {8192, 1024, 2816, "t5-large wo: 8192 tok x 2816 -> 1024"},
    };
    for (int i = 0; i < 3; i++) {
        int m = s[i].m, n = s[i].n, k = s[i].k;
        float *A = gpu_malloc(sizeof(float) * m * k), *B = gpu_malloc(sizeof(float) * n * k);
        float *C = gpu_malloc(sizeof(float) * m * n);
        gpu_memset0(A, sizeof(float) * m * k), gpu_memset0(B, sizeof(float) * n * k);
        printf("    %-40s", s[i].what);
        for (int mode = GPU_MATH_FP32; mode <= GPU_MATH_BF16; mode++) {
            gpu_set_math(mode);
            double t;
            TIME(t, 10, gpu_gemm(0, 1, m, n, k, 1.0f, A, k, B, k, 0.0f, C, n));
            printf("  %s %6.1f", gpu_math_name(mode), 2.0 * m * n * k / t / 1e12);
        }
        gpu_set_math(GPU_MATH_FP32);
        printf("\n");
        gpu_free(A), gpu_free(B), gpu_free(C);
    }
}

static void timing_ops(void) {
    printf("\n  ops (fp32)                                             time        throughput\n");
    int N = 8192, D = 1024, F = 2816;
    float *x = gpu_malloc(sizeof(float) * N * F), *y = gpu_malloc(sizeof(float) * N * F);
    float *z = gpu_malloc(sizeof(float) * N * F), *w = gpu_malloc(sizeof(float) * F);
    float *rs = gpu_malloc(sizeof(float) * N);
    gpu_memset0(x, sizeof(float) * N * F), gpu_memset0(y, sizeof(float) * N * F);
    gpu_memset0(w, sizeof(float) * F);
    double t;
    TIME(t, 20, gpu_rmsnorm_forward(y, rs, x, w, N, D, 1e-6f));
    printf("    %-48s %8.3f ms  %7.0f GB/s\n", "rmsnorm_forward 8192 x 1024", t * 1e3, 2.0 * N * D * 4 / t / 1e9);
    TIME(t, 20, gpu_rmsnorm_backward(z, w, y, x, w, rs, N, D, 1));
    printf("    %-48s %8.3f ms  %7.0f GB/s\n", "rmsnorm_backward 8192 x 1024 (dx, dw)", t * 1e3, 4.0 * N * D * 4 / t / 1e9);
    long n = (long)N * F;
    TIME(t, 20, gpu_gated_gelu_forward(z, x, y, n));
    printf("    %-48s %8.3f ms  %7.0f GB/s\n", "gated_gelu_forward 8192 x 2816", t * 1e3, 3.0 * n * 4 / t / 1e9);
    TIME(t, 20, gpu_gated_gelu_backward(x, y, z, x, y, n, 0));
    printf("    %-48s %8.3f ms  %7.0f GB/s\n", "gated_gelu_backward 8192 x 2816", t * 1e3, 7.0 * n * 4 / t / 1e9);
    gpu_free(x), gpu_free(y), gpu_free(z), gpu_free(w), gpu_free(rs);

    int B = 16, T = 512, H = 16, K = 64, HK = H * K;
    long nq = (long)B * T * HK, np = (long)B * H * T * T;
    float *q = gpu_malloc(sizeof(float) * nq), *o = gpu_malloc(sizeof(float) * nq);
    float *P = gpu_malloc(sizeof(float) * np), *S = gpu_malloc(sizeof(float) * np);
    float *g = gpu_malloc(sizeof(float) * nq), *bias = gpu_malloc(sizeof(float) * (long)H * T * T);
    gpu_memset0(q, sizeof(float) * nq), gpu_memset0(g, sizeof(float) * nq);
    gpu_memset0(bias, sizeof(float) * (long)H * T * T);
    double fl = 4.0 * B * H * (double)T * T * K;
    TIME(t, 5, gpu_attention_forward(o, P, q, q, q, bias, NULL, NULL, 0, B, T, T, H, K));
    printf("    %-48s %8.3f ms  %7.1f TFLOP/s\n", "attention_forward B16 T512 H16 K64", t * 1e3, fl / t / 1e12);
    TIME(t, 5, gpu_attention_backward(g, g, g, bias, S, o, q, q, q, P, B, T, T, H, K, 0));
    printf("    %-48s %8.3f ms  %7.1f TFLOP/s\n", "attention_backward (dq dk dv dbias)", t * 1e3, 2 * fl / t / 1e12);
    gpu_free(q), gpu_free(o), gpu_free(P), gpu_free(S), gpu_free(g), gpu_free(bias);

    int Nc = 2048, V = 32128;
    float *lg = gpu_malloc(sizeof(float) * Nc * V), *dl = gpu_malloc(sizeof(float) * Nc * V);
    float *ls = gpu_malloc(sizeof(float) * Nc), *lz = gpu_malloc(sizeof(float) * Nc);
    int *tg = gpu_malloc(sizeof(int) * Nc);
    gpu_memset0(lg, sizeof(float) * Nc * V), gpu_memset0(tg, sizeof(int) * Nc);
    gpu_memset0(ls, sizeof(float) * Nc);
    TIME(t, 10, gpu_crossentropy_forward(ls, lz, lg, tg, Nc, V));
    printf("    %-48s %8.3f ms  %7.0f GB/s\n", "crossentropy_forward 2048 x 32128", t * 1e3, 1.0 * Nc * V * 4 / t / 1e9);
    TIME(t, 10, gpu_crossentropy_backward(dl, lg, lz, tg, ls, Nc, V));
    printf("    %-48s %8.3f ms  %7.0f GB/s\n", "crossentropy_backward", t * 1e3, 2.0 * Nc * V * 4 / t / 1e9);
    gpu_free(lg), gpu_free(dl), gpu_free(ls), gpu_free(lz), gpu_free(tg);

    long np2 = 247577856; /* t5-base parameter count */
    float *p = gpu_malloc(sizeof(float) * np2 * 4);
    gpu_memset0(p, sizeof(float) * np2 * 4);
    TIME(t, 5, gpu_adamw_step(p, p + np2, p + 2 * np2, p + 3 * np2, np2, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1, 1));
    printf("    %-48s %8.3f ms  %7.0f GB/s\n", "adamw_step, t5-base size (247.6M)", t * 1e3, 7.0 * np2 * 4 / t / 1e9);
    gpu_free(p);
}

static void timing_stats(void) {
    printf("\n  Fisher / Gram accumulation (SYRK, C += X^T X)        fp32         tf32\n");
    int k = 8192;
    int ns[2] = {1024, 2816};
    for (int i = 0; i < 2; i++) {
        int n = ns[i];
        float *X = gpu_malloc(sizeof(float) * (long)k * n), *C = gpu_malloc(sizeof(float) * (long)n * n);
        gpu_memset0(X, sizeof(float) * (long)k * n), gpu_memset0(C, sizeof(float) * (long)n * n);
        printf("    %5d tokens x %4d (Gram of a %4d-wide input)  ", k, n, n);
        for (int mode = GPU_MATH_FP32; mode <= GPU_MATH_TF32; mode++) {
            gpu_set_math(mode);
            double t;
            TIME(t, 10, gpu_gram_accumulate(C, X, k, n, n, 1.0f));
            printf("  %5.1f TFLOP/s %5.2f Mtok/s", (double)k * n * n / t / 1e12, k / t / 1e6);
        }
        gpu_set_math(GPU_MATH_FP32);
        printf("\n");
        gpu_free(X), gpu_free(C);
    }
}

/* Random SPD-by-Gershgorin matrix: I + symmetric noise of row sum < 1. */
static float *cheap_spd(int n) {
    float *S = mallocCheck(sizeof(float) * (size_t)n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            float v = i == j ? 1.0f + (float)urand() : (float)((2 * urand() - 1) / n);
            S[(size_t)i * n + j] = S[(size_t)j * n + i] = v;
        }
    return S;
}

static void timing_cg(void) {
    printf("\n  MaTS CG on K-FAC statistics of t5-large, 8 models (sum_i G_i W A_i)\n");
    struct { int out, in, count; const char *what; } s[] = {
        {1024, 1024, 288, "attention q/k/v/o 1024x1024 (x288)"},
        {2816, 1024, 96, "wi_0 / wi_1 2816x1024 (x96)"},
        {1024, 2816, 48, "wo 1024x2816 (x48)"},
    };
    int N = 8;
    double total[2] = {0, 0};
    for (int i = 0; i < 3; i++) {
        gpu_kfac K;
        gpu_kfac_init(&K, N, s[i].out, s[i].in);
        for (int j = 0; j < N; j++) {
            float *A = cheap_spd(s[i].in), *G = cheap_spd(s[i].out);
            gpu_kfac_set(&K, j, A, G, 1.0f);
            free(A), free(G);
        }
        long n = (long)s[i].out * s[i].in;
        float *b = gpu_malloc(sizeof(float) * n), *x = gpu_malloc(sizeof(float) * n);
        float *hb = rnd(n, 1);
        gpu_upload(b, hb, sizeof(float) * n);
        free(hb);
        printf("    %-40s", s[i].what);
        for (int mode = GPU_MATH_FP32; mode <= GPU_MATH_TF32; mode++) {
            gpu_set_math(mode);
            gpu_memset0(x, sizeof(float) * n);
            gpu_cg_result res;
            gpu_cg(gpu_kfac_apply_cb, &K, n, b, x, 10, 0.0, &res);
            double per = res.seconds / (res.iterations + 2); /* + initial and final residual */
            total[mode] += per * s[i].count;
            printf("  %s %7.2f ms/iter %5.1f TFLOP/s", gpu_math_name(mode), per * 1e3,
                   gpu_kfac_flops(&K) / per / 1e12);
        }
        gpu_set_math(GPU_MATH_FP32);
        printf("\n");
        gpu_free(b), gpu_free(x);
        gpu_kfac_free(&K);
    }
    printf("    whole t5-large (all 432 K-FAC linears): %.3f s per CG iteration fp32, %.3f s tf32\n",
           total[0], total[1]);
}

/* A t5-large-shaped model on the device with quick random weights (the
 * CPU's t5_init_random takes about a minute for 783M parameters): layer
 * norms 1, everything else N(0, 0.05^2), IA3 vectors 1. */
static t5_model *quick_model(const char *confdir, const char *name, int ia3) {
    t5_config c;
    if (load_model_conf(&c, confdir, name) < 0) {
        printf("    %s: %s\n", name, mc_error());
        return NULL;
    }
    t5_model *m = dev_model(&c, !ia3, ia3);
    for (int i = 0; i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        size_t ln = strlen(t->name);
        if (ln > 17 && !strcmp(t->name + ln - 17, "layer_norm.weight"))
            gpu_fill(m->params + t->offset, (long)t->numel, 1.0f);
        else
            gpu_fill_normal(m->params + t->offset, (long)t->numel, 0.05f, 100 + i);
    }
    if (ia3) gpu_fill(m->ia3, (long)m->n_ia3, 1.0f);
    gpu_sync();
    return m;
}

/* Training tokens/s of lib/t5.c on the device (t5_to_device); frees m. */
static void timing_train(t5_model *m, const char *model, int ia3, int B, int Te, int Td, int steps) {
    if (!m) return;
    batch_buf gb;
    make_batch(&gb, B, Te, Td, m->c.vocab_size, host_alloc);
    t5_alloc_acts(m, B, Te, B, Td, 1);
    float *P = ia3 ? m->ia3 : m->params, *G = ia3 ? m->ia3_grads : m->grads;
    size_t n = ia3 ? m->n_ia3 : m->n_params;
    optim *o = ia3 ? opt_new(OPT_ADAFACTOR, 3e-3f, n, m->ia3_tensors, m->n_ia3_tensors)
                   : opt_new(OPT_ADAMW, 1e-4f, n, m->tensors, m->n_tensors);
    float *st = gpu_malloc(sizeof(float) * o->n_state);
    gpu_memset0(st, sizeof(float) * o->n_state);
    size_t maxn = 1;
    for (int i = 0; i < o->n_tensors; i++)
        if (o->tensors[i].numel > maxn) maxn = o->tensors[i].numel;
    float *scr = gpu_malloc(sizeof(float) * maxn);
    for (int mode = GPU_MATH_FP32; mode <= GPU_MATH_BF16; mode++) {
        gpu_set_math(mode);
        float loss = 0;
        double t0 = 0;
        for (int s = 0; s <= steps; s++) {
            if (s == 1) { /* step 0 warms up */
                gpu_sync();
                t0 = mc_now();
            }
            loss = t5_forward(m, &gb.b);
            t5_zero_grad(m);
            t5_backward(m, &gb.b, T5_LOSS_MEAN, 1.0f);
            gpu_opt_step(o, P, G, st, scr);
        }
        gpu_sync();
        double per = (mc_now() - t0) / steps;
        printf("    %-9s %-4s %-9s %s B=%d Te=%d Td=%d  %6.3f s/step  %7.0f tokens/s (in+out)  "
               "%6.1f examples/s  loss %.3f\n",
               model, ia3 ? "IA3" : "full", ia3 ? "adafactor" : "adamw", gpu_math_name(mode), B, Te,
               Td, per, (double)B * (Te + Td) / per, B / per, loss);
        fflush(stdout);
    }
    gpu_set_math(GPU_MATH_FP32);
    opt_free(o);
    gpu_free(st), gpu_free(scr);
    t5_free(m);
    free(gb.enc), free(gb.dec), free(gb.tgt);
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    int no_t5 = 0, no_timing = 0;
    t5_model *base = NULL;
    const char *confdir;
    opt_spec rows[] = {
        {.name = "--no-t5", .kind = OPT_FLAG, .dst = &no_t5, .help = "skip the t5-base training step"},
        {.name = "--no-timing", .kind = OPT_FLAG, .dst = &no_timing, .help = "skip the timings"},
        {.name = "--configs", .kind = OPT_STR, .dst = &confdir, .arg = "DIR", .def = "configs/models",
         .help = "the model configs (t5-base.conf)"},
        {0}};
    const opt_prog prog = {.name = "gpu_check", .opts = rows,
                           .about = "every GPU op against the CPU op, a t5-base step of both devices, timings"};
    opts_parse(&prog, argc - 1, argv + 1);
    int do_t5 = !no_t5, do_timing = !no_timing;
    if (gpu_init(-1) < 0) die("%s", mc_error());
    be_init(0);
    double t_start = mc_now();
    printf("gpu-check: %s, %.1f GiB; CPU reference: OpenBLAS, %d threads\n", gpu_device_name(),
           gpu_device_memory() / 1073741824.0, be_threads());
    printf("\n  %-34s %11s %10s\n", "op (GPU vs CPU)", "nmse", "tolerance");
    check_gemm();
    check_sbatched();
    check_syrk();
    check_dgemm_dot();
    check_embed_norm_linear();
    check_relpos_attention();
    check_crossentropy();
    check_optim();
    check_stats();
    check_merge_ops();
    if (do_t5) {
        printf("\n  t5-base training step, lib/t5.c on the GPU vs the CPU (random init, B=4 Te=128 "
               "Td=32)\n");
        base = check_t5_step(confdir);
    }
    printf("\n  %d passed, %d failed (%.1f s)\n", n_pass, n_fail, mc_now() - t_start);
    fflush(stdout);
    if (do_timing) {
        printf("\ntimings on %s\n", gpu_device_name());
        timing_gemm();
        timing_ops();
        timing_stats();
        timing_cg();
        if (do_t5) {
            printf("\n  training step (forward, backward, optimizer) with fp32, tf32, bf16 products;\n"
                   "  one batch repeated, so the loss falls from step to step\n");
            timing_train(base, "t5-base", 0, 32, 128, 32, 3);
            base = NULL;
            timing_train(quick_model(confdir, "t5-large", 1), "t5-large", 1, 32, 128, 32, 3);
        }
        printf("\n  total %.1f s\n", mc_now() - t_start);
    }
    if (base) t5_free(base);
    gpu_shutdown();
    return n_fail ? 1 : 0;
}
