/* test_device.c - DEVICE=cpu|cuda selection (device.h): names, precedence,
 * one-line errors where CUDA is missing, and the CPU dispatch table. Runs
 * with and without GPU=1; where a GPU is present, cuda must open. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "device.h"
#include "harness.h"
#include "ops.h"
#ifdef MC_GPU
#include "gpu.h"
#endif

static int cuda_expected(void) {
#ifdef MC_GPU
    return gpu_available();
#else
    return 0;
#endif
}

static void test_parse(void) {
    CHECK(dev_parse("cpu", NULL) == MC_DEV_CPU, "cpu");
    CHECK(dev_parse("cuda", NULL) == MC_DEV_CUDA, "cuda");
    CHECK(dev_parse("gpu", "x.conf:3: train.device") < 0, "gpu is not a device name");
    CHECK(strstr(mc_error(), "x.conf:3: train.device") && strstr(mc_error(), "'gpu'"),
          "error names where and what: %s", mc_error());
    CHECK(dev_parse(NULL, NULL) < 0, "NULL name");
}

static void test_default_and_env(void) {
    unsetenv("DEVICE");
    unsetenv("MATS_GPU_MATH");
    CHECK(dev_select(NULL, NULL) == MC_DEV_CPU, "default is cpu");
    setenv("DEVICE", "tpu", 1);
    CHECK(dev_select(NULL, NULL) < 0, "DEVICE=tpu rejected");
    CHECK(strstr(mc_error(), "DEVICE") && strstr(mc_error(), "tpu"), "message: %s", mc_error());
    setenv("DEVICE", "", 1);
    CHECK(dev_select(NULL, NULL) == MC_DEV_CPU, "empty DEVICE means unset");
    unsetenv("DEVICE");
}

static void test_config_key(void) {
    unsetenv("DEVICE");
    mc_cfg *c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = cpu\ntrain.gpu_math = tf32\n", "t.conf") == 0, "load");
    CHECK(dev_select(c, "train.device") == MC_DEV_CPU, "config cpu");
    const char *ns[] = {"train", NULL};
    CHECK(cfg_check_unknown(c, ns) == 0, "device and gpu_math keys are read: %s", mc_error());
    cfg_free(c);

    c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = cuda\n", "t.conf") == 0, "load");
    int dev = dev_select(c, "train.device");
    if (cuda_expected()) {
        CHECK(dev == MC_DEV_CUDA, "a GPU is present, cuda must open: %s", mc_error());
    } else {
        CHECK(dev < 0, "cuda without backend or GPU must fail");
        const char *e = mc_error();
        CHECK(!strchr(e, '\n'), "one line: %s", e);
        CHECK(strstr(e, "DEVICE=cpu"), "tells what to do: %s", e);
        if (!dev_built_with_cuda()) CHECK(strstr(e, "GPU=1"), "names the build flag: %s", e);
    }
    /* the environment wins over the config */
    setenv("DEVICE", "cpu", 1);
    CHECK(dev_select(c, "train.device") == MC_DEV_CPU, "DEVICE=cpu overrides train.device = cuda");
    unsetenv("DEVICE");
    cfg_free(c);

    c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = metal\n", "t.conf") == 0, "load");
    CHECK(dev_select(c, "train.device") < 0, "unknown device in config");
    CHECK(strstr(mc_error(), "t.conf:1") && strstr(mc_error(), "metal"), "names file and line: %s",
          mc_error());
    cfg_free(c);
}

static void test_bad_math(void) {
    unsetenv("DEVICE");
    mc_cfg *c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = cuda\ntrain.gpu_math = fp8\n", "t.conf") == 0, "load");
    int dev = dev_select(c, "train.device");
    CHECK(dev < 0, "fp8 rejected (or no cuda)");
    if (dev_built_with_cuda()) CHECK(strstr(mc_error(), "fp8"), "names the value: %s", mc_error());
    cfg_free(c);
}

/* The CPU table runs the ops of ops.h: same bytes as calling them directly. */
static void test_cpu_table(void) {
    const mc_ops *o = dev_ops(MC_DEV_CPU);
    CHECK(!strcmp(o->name, "cpu"), "name");
    int N = 3, D = 5;
    float *x = o->alloc(sizeof(float) * N * D), *w = o->alloc(sizeof(float) * D);
    for (int i = 0; i < D; i++) CHECK(w[i] == 0.0f, "alloc zeroes");
    float hx[15], hw[5];
    for (int i = 0; i < N * D; i++) hx[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < D; i++) hw[i] = 0.5f + i;
    o->upload(x, hx, sizeof hx);
    o->upload(w, hw, sizeof hw);
    float out1[15], rs1[3], out2[15], rs2[3];
    o->rmsnorm_forward(out1, rs1, x, w, N, D, 1e-6f);
    op_rmsnorm_forward(out2, rs2, hx, hw, N, D, 1e-6f);
    CHECK(!memcmp(out1, out2, sizeof out1) && !memcmp(rs1, rs2, sizeof rs1), "table = direct call");
    float y[15];
    o->download(y, x, sizeof y);
    CHECK(!memcmp(y, hx, sizeof y), "download");
    o->zero(x, sizeof hx);
    CHECK(x[7] == 0.0f, "zero");
    o->release(x);
    o->release(w);
    CHECK(!strcmp(dev_describe(MC_DEV_CPU), "cpu"), "describe");
}

/* ---- the acc flag of the backward entries, through a table ----
 * ops.h: activation gradients are overwritten with acc 0 and added to with
 * acc 1; parameter gradients are always added to. Each entry runs from
 * nonzero prefills P (activation gradients) and Q (parameter gradient):
 *   run 0: acc 0 ; run 1: acc 1 ; run 2: acc 0 with the parameter gradient
 *   starting at 0 ; run 3 (CUDA table only): acc 0 with NaN in the
 *   activation gradients, which must never be read (gpu.h promises that;
 *   on the CPU it is up to the BLAS).
 * acc 1 must give P + (the acc 0 result), so an entry that ignores acc
 * either way fails; the parameter gradient must not depend on acc and must
 * be Q + (its run-2 value). */
enum { ACC_RUNS = 3, ACC_RUNS_NAN = 4 };

static uint32_t acc_seed = 12345;
static float acc_rand(void) {
    acc_seed = acc_seed * 1664525u + 1013904223u;
    return (float)((acc_seed >> 8) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* A device buffer of n floats holding uniform(-1,1) * scale; the caller
 * releases it with o->release. */
static float *acc_buf(const mc_ops *o, long n, float scale) {
    float *tmp = mallocCheck(sizeof(float) * (size_t)n);
    for (long i = 0; i < n; i++) tmp[i] = acc_rand() * scale;
    float *d = o->alloc(sizeof(float) * (size_t)n);
    o->upload(d, tmp, sizeof(float) * (size_t)n);
    free(tmp);
    return d;
}

/* Largest |a - b| / (1 + |b|). */
static double acc_err(const float *a, const float *b, long n) {
    double e = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i]));
        if (!(d <= e)) e = d; /* NaN sticks */
    }
    return e;
}

/* Gradient buffers of one entry: up to 3 activation and 1 parameter. */
typedef struct {
    int na;
    long an[3], pn;
    float *ad[3], *pd;         /* device */
    float *P[3], *Q;           /* host prefills */
    float *r0[3], *r1[3], *rn[3]; /* host results of runs 0, 1, 3 */
    float *p0, *p1, *pz;          /* host results of runs 0, 1, 2 */
} acc_grads;

static void acc_grads_init(const mc_ops *o, acc_grads *g, int na, const long *an, long pn) {
    memset(g, 0, sizeof *g);
    g->na = na, g->pn = pn;
    for (int i = 0; i < na; i++) {
        g->an[i] = an[i];
        g->P[i] = mallocCheck(sizeof(float) * an[i]);
        for (long j = 0; j < an[i]; j++) g->P[i][j] = 0.5f + acc_rand(); /* nonzero on average */
        g->ad[i] = o->alloc(sizeof(float) * an[i]);
        g->r0[i] = mallocCheck(sizeof(float) * an[i]);
        g->r1[i] = mallocCheck(sizeof(float) * an[i]);
        g->rn[i] = mallocCheck(sizeof(float) * an[i]);
    }
    if (pn) {
        g->Q = mallocCheck(sizeof(float) * pn);
        for (long j = 0; j < pn; j++) g->Q[j] = acc_rand();
        g->pd = o->alloc(sizeof(float) * pn);
        g->p0 = mallocCheck(sizeof(float) * pn);
        g->p1 = mallocCheck(sizeof(float) * pn);
        g->pz = mallocCheck(sizeof(float) * pn);
    }
}

static int acc_of_run(int run) { return run == 1; }

static void acc_grads_prefill(const mc_ops *o, acc_grads *g, int run) {
    for (int i = 0; i < g->na; i++) {
        if (run == 3) {
            float *nan_buf = mallocCheck(sizeof(float) * g->an[i]);
            for (long j = 0; j < g->an[i]; j++) nan_buf[j] = NAN;
            o->upload(g->ad[i], nan_buf, sizeof(float) * g->an[i]);
            free(nan_buf);
        } else {
            o->upload(g->ad[i], g->P[i], sizeof(float) * g->an[i]);
        }
    }
    if (g->pn && run == 2) o->zero(g->pd, sizeof(float) * g->pn);
    else if (g->pn) o->upload(g->pd, g->Q, sizeof(float) * g->pn);
}

static void acc_grads_fetch(const mc_ops *o, acc_grads *g, int run) {
    o->sync();
    for (int i = 0; i < g->na; i++) {
        float *dst = run == 0 ? g->r0[i] : run == 1 ? g->r1[i] : run == 3 ? g->rn[i] : NULL;
        if (dst) o->download(dst, g->ad[i], sizeof(float) * g->an[i]);
    }
    if (g->pn && run < 3)
        o->download(run == 0 ? g->p0 : run == 1 ? g->p1 : g->pz, g->pd, sizeof(float) * g->pn);
}

static void acc_grads_check(const mc_ops *o, acc_grads *g, const char *what, int nan_run) {
    for (int i = 0; i < g->na; i++) {
        long n = g->an[i];
        float *want = mallocCheck(sizeof(float) * n);
        for (long j = 0; j < n; j++) want[j] = g->P[i][j] + g->r0[i][j];
        double e = acc_err(g->r1[i], want, n);
        CHECK(e < 1e-5, "%s %s: gradient %d with acc 1 is not prefill + (acc 0 result): err %.3g",
              o->name, what, i, e);
        if (nan_run) {
            double en = acc_err(g->rn[i], g->r0[i], n);
            CHECK(en < 1e-6, "%s %s: gradient %d with acc 0 read its old (NaN) contents: err %.3g",
                  o->name, what, i, en);
        }
        free(want);
    }
    if (g->pn) {
        double e = acc_err(g->p1, g->p0, g->pn);
        CHECK(e < 1e-5, "%s %s: parameter gradient depends on acc: err %.3g", o->name, what, e);
        float *want = mallocCheck(sizeof(float) * g->pn);
        for (long j = 0; j < g->pn; j++) want[j] = g->Q[j] + g->pz[j];
        e = acc_err(g->p0, want, g->pn);
        CHECK(e < 1e-5, "%s %s: parameter gradient is not prefill + (its value from 0): err %.3g",
              o->name, what, e);
        free(want);
    }
}

static void acc_grads_free(const mc_ops *o, acc_grads *g) {
    for (int i = 0; i < g->na; i++) {
        o->release(g->ad[i]);
        free(g->P[i]), free(g->r0[i]), free(g->r1[i]), free(g->rn[i]);
    }
    if (g->pn) {
        o->release(g->pd);
        free(g->Q), free(g->p0), free(g->p1), free(g->pz);
    }
}

/* `runs` runs of a backward entry into the gradients g (prefilled, then
 * fetched each run), checked and freed: `call` reads `acc` (acc_of_run). */
#define ACC_RUNS_CHECK(o, g, runs, name, nan_run, call)                                            \
    do {                                                                                           \
        for (int run = 0; run < (runs); run++) {                                                   \
            int acc = acc_of_run(run);                                                             \
            acc_grads_prefill(o, g, run);                                                          \
            call;                                                                                  \
            acc_grads_fetch(o, g, run);                                                            \
        }                                                                                          \
        acc_grads_check(o, g, name, nan_run);                                                      \
        acc_grads_free(o, g);                                                                      \
    } while (0)

static void check_table_acc(const mc_ops *o, int nan_run) {
    int N = 6, D = 8, I = 8, O = 5;
    int B = 2, Tq = 3, Tk = 4, H = 2, K = 3, HK = H * K;
    int runs = nan_run ? ACC_RUNS_NAN : ACC_RUNS;
    acc_grads g;

    { /* rmsnorm */
        float *x = acc_buf(o, (long)N * D, 1), *w = acc_buf(o, D, 1);
        float *dout = acc_buf(o, (long)N * D, 1);
        float *y = o->alloc(sizeof(float) * N * D), *rs = o->alloc(sizeof(float) * N);
        o->rmsnorm_forward(y, rs, x, w, N, D, 1e-6f);
        long an[] = {(long)N * D};
        acc_grads_init(o, &g, 1, an, D);
        ACC_RUNS_CHECK(o, &g, runs, "rmsnorm_backward", nan_run,
                       o->rmsnorm_backward(g.ad[0], g.pd, dout, x, w, rs, N, D, acc));
        o->release(x), o->release(w), o->release(dout), o->release(y), o->release(rs);
    }
    { /* linear */
        float *x = acc_buf(o, (long)N * I, 1), *w = acc_buf(o, (long)O * I, 1);
        float *dout = acc_buf(o, (long)N * O, 1);
        long an[] = {(long)N * I};
        acc_grads_init(o, &g, 1, an, (long)O * I);
        ACC_RUNS_CHECK(o, &g, runs, "linear_backward", nan_run,
                       o->linear_backward(g.ad[0], g.pd, dout, x, w, N, I, O, acc));
        o->release(x), o->release(w), o->release(dout);
    }
    { /* IA3 */
        float *x = acc_buf(o, (long)N * D, 1), *s = acc_buf(o, D, 1);
        float *dout = acc_buf(o, (long)N * D, 1);
        long an[] = {(long)N * D};
        acc_grads_init(o, &g, 1, an, D);
        ACC_RUNS_CHECK(o, &g, runs, "ia3_backward", nan_run, o->ia3_backward(g.ad[0], g.pd, dout, x, s, N, D, acc));
        o->release(x), o->release(s), o->release(dout);
    }
    { /* gated GELU (n = 37: not a multiple of the CPU's 4-wide groups) */
        long n = 37;
        float *h0 = acc_buf(o, n, 2), *h1 = acc_buf(o, n, 1);
        float *dout = acc_buf(o, n, 1);
        long an[] = {n, n};
        acc_grads_init(o, &g, 2, an, 0);
        ACC_RUNS_CHECK(o, &g, runs, "gated_gelu_backward", nan_run,
                       o->gated_gelu_backward(g.ad[0], g.ad[1], dout, h0, h1, n, acc));
        o->release(h0), o->release(h1), o->release(dout);
    }
    { /* ReLU (the original T5's feed-forward) */
        long n = 37;
        float *x = acc_buf(o, n, 2), *dout = acc_buf(o, n, 1);
        long an[] = {n};
        acc_grads_init(o, &g, 1, an, 0);
        ACC_RUNS_CHECK(o, &g, runs, "relu_backward", nan_run, o->relu_backward(g.ad[0], dout, x, n, acc));
        o->release(x), o->release(dout);
    }
    { /* attention (dbias is a parameter gradient: the position-bias table's) */
        long nq = (long)B * Tq * HK, nk = (long)B * Tk * HK, np = (long)B * H * Tq * Tk;
        float *q = acc_buf(o, nq, 1), *k = acc_buf(o, nk, 1), *v = acc_buf(o, nk, 1);
        float *bias = acc_buf(o, (long)H * Tq * Tk, 1), *dout = acc_buf(o, nq, 1);
        float *out = o->alloc(sizeof(float) * nq), *probs = o->alloc(sizeof(float) * np);
        float *scratch = o->alloc(sizeof(float) * np);
        o->attention_forward(out, probs, q, k, v, bias, NULL, NULL, 0, B, Tq, Tk, H, K);
        long an[] = {nq, nk, nk};
        acc_grads_init(o, &g, 3, an, (long)H * Tq * Tk);
        ACC_RUNS_CHECK(o, &g, runs, "attention_backward", nan_run,
                       o->attention_backward(g.ad[0], g.ad[1], g.ad[2], g.pd, scratch, dout, q, k, v, probs, B, Tq, Tk, H, K, acc));
        o->release(q), o->release(k), o->release(v), o->release(bias), o->release(dout);
        o->release(out), o->release(probs), o->release(scratch);
    }
}

static void test_cpu_table_acc(void) { check_table_acc(dev_ops(MC_DEV_CPU), 0); }

/* The same on the CUDA table where this binary has it and a GPU is present. */
static void test_cuda_table_acc(void) {
    if (!cuda_expected()) T_SKIP("no CUDA backend or no GPU");
    unsetenv("MATS_GPU_MATH");
    CHECK(dev_open(MC_DEV_CUDA, "fp32") == 0, "cuda opens: %s", mc_error());
    check_table_acc(dev_ops(MC_DEV_CUDA), 1);
}

int main(int argc, char **argv) {
    (void)argc;
    mc_set_progname(argv[0]);
    RUN(test_parse);
    RUN(test_default_and_env);
    RUN(test_config_key);
    RUN(test_bad_math);
    RUN(test_cpu_table);
    RUN(test_cpu_table_acc);
    RUN(test_cuda_table_acc);
    return t_done();
}
