/* bench_gemm.c - the CPU's float32 (and bf16) products, behind `make
 * bench-gemm` and the machine lines of the other benchmarks.
 *
 *   bench_gemm machine [--size N]
 *       the CPU (model name, cpuid family / model), the ISA features the
 *       kernels use, OpenBLAS's core type and OPENBLAS_CORETYPE, the kernel
 *       in use, and the sgemm peak (N x N x N, default 2048) of every
 *       kernel this CPU runs, measured now.
 *   bench_gemm shapes [--tokens T] [--reps R]
 *       the products of a training step of t5-mini, t5-small and t5-base
 *       (T rows, default 4096 = 32 x 128 tokens): forward x W^T, input
 *       gradient dy W, weight gradient dy^T x, for the attention projection
 *       and the feed-forward; each kernel forced in turn (float32:
 *       OpenBLAS, AVX2, AVX-512; bf16: AMX, AVX512_BF16, and AVX512_BF16
 *       with every operand packed, "bf16-pack", bf16gemm_set_inplace(0));
 *       GFLOP/s and the ratio to OpenBLAS in the same run.
 *   bench_gemm attention [--batch B] [--reps R]
 *       the attention's per-row products of t5-mini (4 heads of 64; the
 *       encoder's 128 x 128, the decoder's 32 x 32 and 32 x 128 against the
 *       encoder), run as the model runs them: B rows in parallel on the
 *       pool, each row's heads on one thread (be_gemm_sbatched_local;
 *       OpenBLAS one row at a time on every thread); each kernel forced in
 *       turn, as for shapes. GFLOP/s, best of R.
 * Rates are wall-clock, best of R repetitions, on be_threads() threads;
 * --cpu: per CPU-second of the process instead (on a shared machine, with
 * MATS_THREADS=1, the kernel's own speed, whatever else runs). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "amx.h"
#include "backend.h"
#include "common.h"
#include "f32gemm.h"
#include "opts.h"
#include "pool.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* a product as the backend runs it, with one kernel forced */
typedef struct {
    const char *name;
    int kernel;       /* F32GEMM_*, or -1 for cpu_math bf16 */
    const char *bf16; /* the bf16 kernel (MATS_GEMM_BF16) */
    int packed;       /* avx512bf16 with every operand packed (no in-place reading) */
} variant;

static const variant variants[] = {
    {"openblas", F32GEMM_OPENBLAS, NULL, 0},
    {"avx2", F32GEMM_AVX2, NULL, 0},
    {"avx512", F32GEMM_AVX512, NULL, 0},
    {"amx", -1, "amx", 0},
    {"avx512bf16", -1, "avx512bf16", 0},
    {"bf16-pack", -1, "avx512bf16", 1},
};
#define N_VARIANTS (int)(sizeof variants / sizeof *variants)

static int variant_use(const variant *v) {
    if (v->kernel < 0) {
        setenv("MATS_GEMM_BF16", v->bf16, 1);
        bf16gemm_set_inplace(!v->packed);
        return be_set_cpu_math(BE_MATH_BF16);
    }
    be_set_cpu_math(BE_MATH_FP32);
    return f32gemm_set_kernel(v->kernel);
}

static float *filled(size_t n, int mod) {
    float *x = mallocCheck(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u) % (unsigned)mod) * 0.01f - 0.03f;
    return x;
}

static int per_cpu;
static double now(void) {
    if (!per_cpu) return mc_now();
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* best GFLOP/s of each variant in g[] (0: not on this CPU) for one
 * product; the variants take turns, `reps` rounds, so that other load on
 * the machine falls on all of them alike */
static void rates(int ta, int tb, int m, int n, int k, int reps, double *g) {
    float *A = filled((size_t)m * k, 7), *B = filled((size_t)k * n, 5), *C = filled((size_t)m * n, 3);
    int was = f32gemm_kernel(), inplace = bf16gemm_set_inplace(1);
    for (int v = 0; v < N_VARIANTS; v++) g[v] = 0;
    for (int r = 0; r <= reps; r++) /* round 0 warms up */
        for (int v = 0; v < N_VARIANTS; v++) {
            if (variant_use(&variants[v]) != 0) continue;
            double t0 = now();
            be_gemm(ta, tb, m, n, k, 1.0f, A, ta ? m : k, B, tb ? k : n, 0.0f, C, n);
            double x = 2.0 * m * n * (double)k / (now() - t0) * 1e-9;
            if (r > 0 && x > g[v]) g[v] = x;
        }
    be_set_cpu_math(BE_MATH_FP32);
    f32gemm_set_kernel(was);
    bf16gemm_set_inplace(inplace);
    free(A), free(B), free(C);
}

static void cpu_line(void) {
    char model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *p = strchr(line, ':');
                if (p) {
                    snprintf(model, sizeof model, "%s", p + 2);
                    model[strcspn(model, "\n")] = 0;
                }
                break;
            }
        fclose(f);
    }
    int family = 0, mdl = 0;
#if defined(__x86_64__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        family = (a >> 8) & 15, mdl = (a >> 4) & 15;
        if (family == 15) family += (a >> 20) & 255;
        if (family >= 6) mdl += ((a >> 16) & 15) << 4;
    }
    int bf16 = 0;
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) bf16 = (a >> 5) & 1;
#else
    int bf16 = 0;
#endif
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("cpu: %s (family %d, model %d), %d threads\n", model, family, mdl, be_threads());
    printf("cpu isa: avx2+fma %s, avx512f %s, avx512_bf16 %s, amx-bf16 %s\n",
           f32gemm_kernel_supported(F32GEMM_AVX2) ? "yes" : "no", f32gemm_kernel_supported(F32GEMM_AVX512) ? "yes" : "no",
           bf16 ? "yes" : "no", amx_available() ? "yes" : "no");
    printf("openblas: core %s, OPENBLAS_CORETYPE %s; float32 products: %s kernel%s\n", openblas_get_corename(),
           ct && *ct ? ct : "(unset)", f32gemm_kernel_name(f32gemm_kernel()), getenv("MATS_GEMM") ? " (MATS_GEMM)" : "");
}

static void machine(int size, int reps) {
    cpu_line();
    double g[N_VARIANTS];
    rates(0, 0, size, size, size, reps, g);
    for (int v = 0; v < N_VARIANTS; v++)
        if (g[v] > 0)
            printf("peak %-10s %dx%dx%d: %.1f GFLOP/s (%.2fx openblas)\n", variants[v].name, size, size, size, g[v],
                   g[v] / g[0]);
}

static void shapes(int T, int reps) {
    static const struct {
        const char *model;
        int d, ff;
    } models[] = {{"t5-mini", 256, 512}, {"t5-small", 512, 2048}, {"t5-base", 768, 3072}};
    printf("%-9s %-22s %16s", "model", "product", "m x n x k");
    for (int v = 0; v < N_VARIANTS; v++) printf(" %10s", variants[v].name);
    printf("   GFLOP/s; ratio to openblas\n");
    for (int mi = 0; mi < 3; mi++) {
        int d = models[mi].d, ff = models[mi].ff;
        /* (name, ta, tb, m, n, k): y = x W^T, dx = dy W, dW = dy^T x */
        struct {
            const char *name;
            int ta, tb, m, n, k;
        } p[] = {{"attn fwd x W^T", 0, 1, T, d, d},   {"attn dx dy W", 0, 0, T, d, d},
                 {"attn dW dy^T x", 1, 0, d, d, T},   {"ff-in fwd x W^T", 0, 1, T, ff, d},
                 {"ff-in dx dy W", 0, 0, T, d, ff},   {"ff-in dW dy^T x", 1, 0, ff, d, T},
                 {"ff-out fwd x W^T", 0, 1, T, d, ff}, {"ff-out dW dy^T x", 1, 0, d, ff, T}};
        for (size_t q = 0; q < sizeof p / sizeof *p; q++) {
            char dims[48];
            snprintf(dims, sizeof dims, "%dx%dx%d", p[q].m, p[q].n, p[q].k);
            printf("%-9s %-22s %16s", models[mi].model, p[q].name, dims);
            double g[N_VARIANTS];
            char ratios[256] = "";
            rates(p[q].ta, p[q].tb, p[q].m, p[q].n, p[q].k, reps, g);
            for (int v = 0; v < N_VARIANTS; v++) {
                if (g[v] > 0) printf(" %10.1f", g[v]);
                else printf(" %10s", "-");
                if (v > 0 && g[v] > 0)
                    snprintf(ratios + strlen(ratios), sizeof ratios - strlen(ratios), " %s %.2fx", variants[v].name,
                             g[v] / g[0]);
            }
            printf("  ;%s\n", ratios);
            fflush(stdout);
        }
    }
}

/* one attention product of every row: C_h = op(A_h) op(B_h) for the H
 * heads of rows 0..B-1, row b's operands at b * row_a / row_b / row_c */
typedef struct {
    int ta, tb, m, n, k, H, lda, ldb, ldc;
    long ha, hb, hc, row_a, row_b, row_c;
    const float *A, *Bm;
    float *C;
} att_product;

static void att_rows(void *p, long lo, long hi) {
    const att_product *q = p;
    for (long b = lo; b < hi; b++)
        be_gemm_sbatched_local(q->ta, q->tb, q->m, q->n, q->k, 1.0f, q->A + b * q->row_a, q->lda, q->ha,
                               q->Bm + b * q->row_b, q->ldb, q->hb, 0.0f, q->C + b * q->row_c, q->ldc, q->hc, q->H);
}

static void attention(int B, int reps) {
    const int H = 4, K = 64, HK = H * K;
    /* (name, Tq, Tk, product): scores S = Q K^T, context O = P V, dP = dO V^T,
     * dV = P^T dO, dQ = dS K, dK = dS^T Q; Q, K, V, O rows of HK floats,
     * P and S H blocks of Tq x Tk */
    static const struct {
        const char *name;
        int Tq, Tk;
    } at[] = {{"encoder self", 128, 128}, {"decoder self", 32, 32}, {"decoder cross", 32, 128}};
    static const struct {
        const char *name;
        int ta, tb, which; /* which: 0 (Tq,Tk,K) from rows x rows, 1 (Tq,K,Tk) P x rows, 2 (Tk,K,Tq) P^T x rows */
    } pr[] = {{"S = Q K^T", 0, 1, 0}, {"O = P V", 0, 0, 1},   {"dP = dO V^T", 0, 1, 0},
              {"dV = P^T dO", 1, 0, 2}, {"dQ = dS K", 0, 0, 1}, {"dK = dS^T Q", 1, 0, 2}};
    printf("%-14s %-12s %14s", "attention", "product", "m x n x k");
    for (int v = 0; v < N_VARIANTS; v++) printf(" %10s", variants[v].name);
    printf("   GFLOP/s, %d rows x %d heads\n", B, H);
    for (size_t a = 0; a < sizeof at / sizeof *at; a++) {
        int Tq = at[a].Tq, Tk = at[a].Tk;
        long TT = (long)Tq * Tk, nq = (long)Tq * HK, nk = (long)Tk * HK, nc = H * TT;
        if (nq > nc) nc = nq;
        if (nk > nc) nc = nk;
        float *rq = filled((size_t)B * nq, 7), *rk = filled((size_t)B * nk, 5), *P = filled((size_t)B * H * TT, 3);
        float *C = filled((size_t)B * nc, 11);
        for (size_t q = 0; q < sizeof pr / sizeof *pr; q++) {
            att_product p = {.ta = pr[q].ta, .tb = pr[q].tb, .H = H, .C = C};
            if (pr[q].which == 0) { /* (Tq x K rows) x (Tk x K rows)^T -> Tq x Tk */
                p.m = Tq, p.n = Tk, p.k = K, p.A = rq, p.lda = HK, p.ha = K, p.row_a = nq;
                p.Bm = rk, p.ldb = HK, p.hb = K, p.row_b = nk, p.ldc = Tk, p.hc = TT, p.row_c = H * TT;
            } else if (pr[q].which == 1) { /* (Tq x Tk) x (Tk x K rows) -> Tq x K rows */
                p.m = Tq, p.n = K, p.k = Tk, p.A = P, p.lda = Tk, p.ha = TT, p.row_a = H * TT;
                p.Bm = rk, p.ldb = HK, p.hb = K, p.row_b = nk, p.ldc = HK, p.hc = K, p.row_c = nq;
            } else { /* (Tq x Tk)^T x (Tq x K rows) -> Tk x K rows */
                p.m = Tk, p.n = K, p.k = Tq, p.A = P, p.lda = Tk, p.ha = TT, p.row_a = H * TT;
                p.Bm = rq, p.ldb = HK, p.hb = K, p.row_b = nq, p.ldc = HK, p.hc = K, p.row_c = nk;
            }
            double g[N_VARIANTS], flop = 2.0 * p.m * p.n * (double)p.k * H * B;
            int was = f32gemm_kernel(), inplace = bf16gemm_set_inplace(1);
            for (int v = 0; v < N_VARIANTS; v++) g[v] = 0;
            for (int r = 0; r <= reps; r++) /* round 0 warms up; the variants take turns */
                for (int v = 0; v < N_VARIANTS; v++) {
                    if (variant_use(&variants[v]) != 0) continue;
                    double t0 = now();
                    if (be_gemm_local_parallel()) pool_parallel_for(B, 1, att_rows, &p);
                    else
                        for (int b = 0; b < B; b++)
                            be_gemm_sbatched(p.ta, p.tb, p.m, p.n, p.k, 1.0f, p.A + b * p.row_a, p.lda, p.ha,
                                             p.Bm + b * p.row_b, p.ldb, p.hb, 0.0f, p.C + b * p.row_c, p.ldc, p.hc, H);
                    double x = flop / (now() - t0) * 1e-9;
                    if (r > 0 && x > g[v]) g[v] = x;
                }
            be_set_cpu_math(BE_MATH_FP32);
            f32gemm_set_kernel(was);
            bf16gemm_set_inplace(inplace);
            char dims[48];
            snprintf(dims, sizeof dims, "%dx%dx%d", p.m, p.n, p.k);
            printf("%-14s %-12s %14s", at[a].name, pr[q].name, dims);
            for (int v = 0; v < N_VARIANTS; v++) {
                if (g[v] > 0) printf(" %10.1f", g[v]);
                else printf(" %10s", "-");
            }
            printf("\n");
            fflush(stdout);
        }
        free(rq), free(rk), free(P), free(C);
    }
}

int main(int argc, char **argv) {
    mc_set_progname("bench_gemm");
    be_init_default(2);
    const char *cmd = argc > 1 ? argv[1] : "";
    long size = 2048, reps = 3, tokens = 4096, batch = 32;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--size") && i + 1 < argc) size = atol(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atol(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc) tokens = atol(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atol(argv[++i]);
        else if (!strcmp(argv[i], "--cpu")) per_cpu = 1;
        else die("unknown option '%s' (bench_gemm machine|shapes|attention [--size N] [--reps R] [--tokens T] [--batch B] [--cpu])", argv[i]);
    }
    if (size < 1 || reps < 1 || tokens < 1 || batch < 1) die("--size, --reps, --tokens and --batch take positive numbers");
    if (!strcmp(cmd, "machine")) machine((int)size, (int)reps);
    else if (!strcmp(cmd, "shapes")) shapes((int)tokens, (int)reps);
    else if (!strcmp(cmd, "attention")) attention((int)batch, (int)reps);
    else die("usage: bench_gemm machine|shapes|attention [--size N] [--reps R] [--tokens T] [--batch B] [--cpu]");
    return 0;
}
