/* bench_merge.c - measurements behind `make bench-merge` that the merge
 * stage itself does not print.
 *
 *   bench_merge sgemm [--size N] [--reps R]
 *       best sgemm rate of the backend (square N x N x N products), the
 *       "measured peak" the K-FAC operator is compared with.
 *   bench_merge speed --models A,B,... --gram GA,GB,... [--lambda X]
 *                     [--filter SUBSTR] [--iterations K] [--repeat R]
 *       for every linear whose name contains SUBSTR (default ".block.0."):
 *       the K-FAC operator's rate, fast path against the pair-by-pair path
 *       the MaTS code uses, and seconds per CG iteration (K iterations from
 *       the average, best of R runs, divided by the operator applications),
 *       summed over the linears: the same measure merge_peer.py prints.
 *   bench_merge precond (same options; --iterations N, default 100)
 *       how many iterations plain and Kronecker-preconditioned CG need to
 *       reach the residual that N plain iterations reach, from the average.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "art.h"
#include "backend.h"
#include "common.h"
#include "merge.h"
#include "opts.h"

/* CPU seconds of this process: with one thread, immune to other load on a
 * shared machine (wall time is not). */
static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void bench_sgemm(int size, int reps) {
    int sizes[3] = {size / 2, size, 2 * size};
    double best = 0, best_cpu = 0;
    for (int s = 0; s < 3; s++) {
        int n = sizes[s];
        float *A = mallocCheck(sizeof(float) * (size_t)n * n), *B = mallocCheck(sizeof(float) * (size_t)n * n),
              *C = mallocCheck(sizeof(float) * (size_t)n * n);
        for (size_t i = 0; i < (size_t)n * n; i++) A[i] = (float)(i % 7) * 0.1f, B[i] = (float)(i % 5) * 0.1f;
        be_gemm(0, 0, n, n, n, 1, A, n, B, n, 0, C, n); /* warm up */
        for (int r = 0; r < reps; r++) {
            double t0 = mc_now(), c0 = cpu_now();
            be_gemm(0, 0, n, n, n, 1, A, n, B, n, 0, C, n);
            double g = 2.0 * n * n * (double)n / (mc_now() - t0) * 1e-9;
            double gc = 2.0 * n * n * (double)n / (cpu_now() - c0) * 1e-9;
            if (g > best) best = g;
            if (gc > best_cpu) best_cpu = gc;
        }
        printf("sgemm %dx%dx%d: best of %d %.1f GFLOP/s so far\n", n, n, n, reps, best);
        free(A), free(B), free(C);
    }
    printf("sgemm_peak_gflops %.1f wall, %.1f per CPU-second (threads %d)\n", best, best_cpu, be_threads());
}

static void bench_kfac(int N, art_file **M, art_file **G, float lambda, const char *filter, int iters,
                       int repeat, int precond) {
    long tot_plain = 0, tot_pc = 0, tensors = 0;
    double fast_s = 0, naive_s = 0, flops = 0, cg_s = 0, cfast_s = 0, cnaive_s = 0, ccg_s = 0;
    if (precond) printf("%-58s %7s %7s %12s %12s\n", "linear", "plain", "kron", "r_plain", "r_kron");
    for (size_t j = 0; j < M[0]->n_tensors; j++) {
        const art_tensor *t = &M[0]->tensors[j];
        if (t->ndim != 2 || !strstr(t->name, filter)) continue;
        size_t L = strlen(t->name);
        if (L < 7 || strcmp(t->name + L - 7, ".weight")) continue;
        char an[300], gn[300];
        snprintf(an, sizeof an, "%.*s.input_gram", (int)(L - 7), t->name);
        snprintf(gn, sizeof gn, "%.*s.output_grad_gram", (int)(L - 7), t->name);
        if (!art_find(G[0], an) || !art_find(G[0], gn)) continue;
        int out = (int)t->shape[0], in = (int)t->shape[1];
        long n = (long)out * in;
        mrg_kfac K;
        mrg_kfac_init(&K, N, out, in);
        float **W = mallocCheck(sizeof(float *) * N);
        float *avg = callocCheck((size_t)n, sizeof(float));
        for (int i = 0; i < N; i++) {
            float *A = art_tensor_f32(art_find(G[i], an)), *Gm = art_tensor_f32(art_find(G[i], gn));
            if (!A || !Gm) die("gram %s lacks %s", G[i]->path, an);
            mrg_kfac_set(&K, i, A, Gm, lambda);
            free(A), free(Gm);
            const art_tensor *wt = art_find(M[i], t->name);
            if (!wt) die("%s lacks %s", M[i]->path, t->name);
            W[i] = art_tensor_f32(wt);
            for (long e = 0; e < n; e++) avg[e] += W[i][e] / N;
        }
        float *b = mallocCheck(sizeof(float) * n), *y = mallocCheck(sizeof(float) * n);
        mrg_kfac_rhs(&K, (const float *const *)W, b);
        mrg_op op;
        mrg_op_kfac(&op, &K);
        float *x = mallocCheck(sizeof(float) * n);
        tensors++;
        if (!precond) {
            /* operator rates, best of `repeat` */
            op.apply(&op, avg, y);
            double bf = 1e30, bn = 1e30, bc = 1e30, cf = 1e30, cn = 1e30, cc = 1e30;
            for (int r = 0; r < repeat; r++) {
                double t0 = mc_now(), c0 = cpu_now();
                op.apply(&op, avg, y);
                double t1 = mc_now(), c1 = cpu_now();
                mrg_kfac_apply_naive(&K, avg, y);
                double t2 = mc_now(), c2 = cpu_now();
                if (t1 - t0 < bf) bf = t1 - t0;
                if (t2 - t1 < bn) bn = t2 - t1;
                if (c1 - c0 < cf) cf = c1 - c0;
                if (c2 - c1 < cn) cn = c2 - c1;
                memcpy(x, avg, sizeof(float) * n);
                mrg_cg_result rc;
                double c3 = cpu_now();
                mrg_cg(&op, b, x, iters, 0, 0, NULL, NULL, &rc);
                double per = rc.seconds / (rc.iterations + 2);
                double cper = (cpu_now() - c3) / (rc.iterations + 2);
                if (per < bc) bc = per;
                if (cper < cc) cc = cper;
            }
            fast_s += bf;
            naive_s += bn;
            cg_s += bc;
            cfast_s += cf;
            cnaive_s += cn;
            ccg_s += cc;
            flops += mrg_kfac_flops(&K);
        } else {
            /* iterations to the residual of `iters` plain iterations */
            memcpy(x, avg, sizeof(float) * n);
            mrg_cg_result rp, rk;
            mrg_cg(&op, b, x, iters, 0, 0, NULL, NULL, &rp);
            double target = rp.final_residual;
            memcpy(x, avg, sizeof(float) * n);
            mrg_kron P;
            if (mrg_kron_init(&P, &K) < 0) die("mean Grams of %s not PD", t->name);
            mrg_cg(&op, b, x, 10 * iters, 0, target, (mrg_precond_fn)mrg_kron_apply, &P, &rk);
            mrg_kron_free(&P);
            printf("%-58s %7d %7d %12.4g %12.4g\n", t->name, rp.iterations, rk.iterations,
                   rp.final_residual / rp.b_norm, rk.final_residual / rk.b_norm);
            tot_plain += rp.iterations;
            tot_pc += rk.iterations;
        }
        for (int i = 0; i < N; i++) free(W[i]);
        free(W), free(avg), free(b), free(y), free(x);
        mrg_kfac_free(&K);
    }
    if (!tensors) die("no linear matches '%s'", filter);
    if (!precond) {
        printf("c: %ld linears matching '%s', %d models, %d iterations, best of %d, threads %d\n", tensors,
               filter, N, iters, repeat, be_threads());
        printf("c_kfac_apply_fast_gflops %.1f\nc_kfac_apply_pairwise_gflops %.1f\n", flops / fast_s * 1e-9,
               flops / naive_s * 1e-9);
        printf("c_seconds_per_iteration %.4f\nc_cg_gflops %.1f\n", cg_s, flops / cg_s * 1e-9);
        printf("c_cpu_seconds_per_iteration %.4f (per CPU-second: apply fast %.1f, pairwise %.1f, cg %.1f GFLOP/s)\n",
               ccg_s, flops / cfast_s * 1e-9, flops / cnaive_s * 1e-9, flops / ccg_s * 1e-9);
    } else {
        printf("iterations_to_plain_%d_residual: plain %ld, kron %ld over %ld linears (%.1fx fewer)\n", iters,
               tot_plain, tot_pc, tensors, (double)tot_plain / (tot_pc ? tot_pc : 1));
    }
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    static const char *const cmds[] = {"sgemm", "speed", "precond", NULL};
    int cmd = 0;
    opt_list models = {0}, grams = {0};
    const char *filter;
    long size, reps, iters = -1, repeat; /* defaults: the rows below */
    double lambda;
    opt_spec rows[] = {
        {.name = "sgemm|speed|precond", .kind = OPT_CHOICE, .dst = &cmd, .choices = cmds, .flags = OPT_REQUIRED,
         .help = "what to measure (see tools/bench_merge.c)"},
        {.name = "--size", .kind = OPT_INT, .dst = &size, .arg = "N", .lo = 1, .hi = 65536, .def = "1536",
         .help = "sgemm: the products' size"},
        {.name = "--reps", .kind = OPT_INT, .dst = &reps, .arg = "R", .lo = 1, .hi = 1e6, .def = "5",
         .help = "sgemm: repetitions"},
        {.name = "--models", .kind = OPT_LIST, .dst = &models, .arg = "A,B,...", .help = "speed, precond: models"},
        {.name = "--gram", .kind = OPT_LIST, .dst = &grams, .arg = "GA,GB,...", .help = "speed, precond: their grams"},
        {.name = "--lambda", .kind = OPT_FLOAT, .dst = &lambda, .arg = "X", .def = "1", .help = "the Grams' lambda"},
        {.name = "--filter", .kind = OPT_STR, .dst = &filter, .arg = "SUBSTR", .def = ".block.0.",
         .help = "the linears whose names contain SUBSTR"},
        {.name = "--iterations", .kind = OPT_INT, .dst = &iters, .arg = "K", .lo = 1, .hi = 1e6,
         .help = "CG iterations (speed: 5, precond: 100)"},
        {.name = "--repeat", .kind = OPT_INT, .dst = &repeat, .arg = "R", .lo = 1, .hi = 1e6, .def = "3",
         .help = "best of R runs"},
        {0}};
    const opt_prog prog = {.name = "bench_merge", .opts = rows};
    opts_parse(&prog, argc - 1, argv + 1);
    be_init(0);
    if (cmd == 0) {
        bench_sgemm((int)size, (int)reps);
    } else {
        int precond = cmd == 2;
        if (iters < 0) iters = precond ? 100 : 5;
        if (!models.n || !grams.n) die("%s needs --models and --gram", cmds[cmd]);
        int n = models.n;
        if (n != grams.n) die("%d models but %d grams", n, grams.n);
        art_file **M = mallocCheck(sizeof(art_file *) * n), **G = mallocCheck(sizeof(art_file *) * n);
        for (int i = 0; i < n; i++) {
            if (!(M[i] = art_open(models.v[i], "model"))) die("%s", mc_error());
            if (!(G[i] = art_open(grams.v[i], "gram"))) die("%s", mc_error());
        }
        bench_kfac(n, M, G, (float)lambda, filter, (int)iters, (int)repeat, precond);
    }
    return 0;
}
