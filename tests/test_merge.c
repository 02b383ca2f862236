/* test_merge.c - the merge stage and its numerical core.
 *
 * Part 1 tests lib/merge*.c directly: selection, DARE mask, breadcrumbs,
 * the K-FAC operator (fast path against the pair-by-pair reference and a
 * triple loop), CG against Cholesky, the Kronecker preconditioner, the
 * ridge of singular solves, CG's scale invariance, the SVD helpers, WUDI's
 * system, Model Stock's ratio and slerp on hand-made cases.
 *
 * Part 2 writes the inputs of tests/reference/merge_fixture.txt (made by
 * the PyTorch reference merge_ref.py) as artifacts, runs build/bin/merge
 * for every method and compares with the reference outputs; then hand-built
 * TIES cases (ties at the threshold, zero signs), DARE properties, a
 * singular RegMean system, the scipy-legacy-tolerance quirk, meta contents,
 * determinism and bad inputs. The task-vector methods (iso_c, iso_cts,
 * tsv_m, wudi, model_stock, slerp) run on tests/reference/merge_tv_fixture.txt
 * (merge_ref_tv.py): random models, and the edge cases N = 1, a zero task
 * vector, rank-deficient task vectors and two identical models.
 */
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "art.h"
#include "backend.h"
#include "common.h"
#include "harness.h"
#include "merge.h"
#include "t5.h"

static char dir[256], root[1024];
static const char *PRE_KEY = "0123456789abcdef0123456789abcdef";

/* ------------------------------------------------------------ helpers */

static uint64_t rs = 88172645463325252ull;
static float frand(void) { /* uniform in [-1, 1) */
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (float)((rs >> 11) * 0x1.0p-53 * 2 - 1);
}

static void rand_pd(float *M, int n, float ridge) {
    int m = 2 * n;
    float *Z = mallocCheck(sizeof(float) * n * m);
    for (int i = 0; i < n * m; i++) Z[i] = frand();
    be_syrk(0, n, m, 1.0f / m, Z, m, 0.0f, M, n);
    for (int i = 0; i < n; i++) M[i * n + i] += ridge;
    free(Z);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------ part 1: library */

static void test_scale_offdiag(void) {
    float M[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    mrg_scale_offdiag(M, 3, 0.25f);
    float want[9] = {1, 0.5f, 0.75f, 1, 5, 1.5f, 1.75f, 2, 9};
    t_close("scaled", M, want, 9, 0, 0);
}

static void test_select_matches_sort(void) {
    enum { n = 5000 };
    static float x[n], s[n];
    for (int trial = 0; trial < 3; trial++) {
        for (int i = 0; i < n; i++) {
            x[i] = frand();
            if (trial == 1) x[i] = (float)(int)(x[i] * 5); /* many ties, zeros */
            if (trial == 2 && i % 3 == 0) x[i] = 0;
        }
        for (int i = 0; i < n; i++) s[i] = fabsf(x[i]);
        qsort(s, n, sizeof(float), cmp_float);
        uint64_t ranks[] = {1, 2, 17, n / 2, n - 1, n};
        for (size_t r = 0; r < sizeof ranks / sizeof ranks[0]; r++) {
            mrg_select sel;
            mrg_select_init(&sel);
            mrg_select_feed(&sel, x, 1234); /* fed in two chunks */
            mrg_select_feed(&sel, x + 1234, n - 1234);
            mrg_select_next(&sel, ranks[r]);
            mrg_select_feed(&sel, x, n);
            mrg_select_next(&sel, ranks[r]);
            CHECK(sel.value == s[ranks[r] - 1], "trial %d rank %llu: %g vs sorted %g", trial,
                  (unsigned long long)ranks[r], sel.value, s[ranks[r] - 1]);
        }
    }
}

static void test_ties_rank(void) {
    CHECK(mrg_ties_rank(86, 40) == 52, "86 at 40%%: %llu", (unsigned long long)mrg_ties_rank(86, 40));
    CHECK(mrg_ties_rank(86, 100) == 0, "100%% keeps all");
    CHECK(mrg_ties_rank(86, 0) == 86, "0%% -> the max");
    CHECK(mrg_ties_rank(5, 20) == 4, "5 at 20%%");
}

static void test_dare_mask(void) {
    long kept = 0, n = 200000;
    for (long i = 0; i < n; i++) kept += mrg_dare_keep(7, 1, 99, (uint64_t)i, 0.3);
    double frac = (double)kept / n, sd = sqrt(0.3 * 0.7 / n);
    CHECK(fabs(frac - 0.7) < 6 * sd, "kept fraction %.4f, want 0.7 +- %.4f", frac, 6 * sd);
    int same = 1, diff_seed = 0, diff_model = 0;
    for (long i = 0; i < 1000; i++) {
        same &= mrg_dare_keep(7, 1, 99, i, 0.5) == mrg_dare_keep(7, 1, 99, i, 0.5);
        diff_seed += mrg_dare_keep(7, 1, 99, i, 0.5) != mrg_dare_keep(8, 1, 99, i, 0.5);
        diff_model += mrg_dare_keep(7, 1, 99, i, 0.5) != mrg_dare_keep(7, 2, 99, i, 0.5);
    }
    CHECK(same, "mask not deterministic");
    CHECK(diff_seed > 400 && diff_model > 400, "masks of other seeds/models too similar: %d %d", diff_seed,
          diff_model);
    for (long i = 0; i < 1000; i++) CHECK(mrg_dare_keep(3, 0, 0, i, 0.0), "p=0 dropped %ld", i);
}

static void test_breadcrumbs_hand(void) {
    float x[10] = {5, -1, 3, 0.5f, -4, 2, 0, 6, -2, 1}, w[10];
    /* |x| sorted: 0 .5 1 1 2 2 3 4 5 6; bottom 30% -> lo = 1 (4th smallest),
     * top 10% -> hi = 5 (2nd largest). */
    mrg_breadcrumbs(x, 10, 10, 30, w);
    float want[10] = {5, -1, 3, 0, -4, 2, 0, 0, -2, 1};
    t_close("breadcrumbs", x, want, 10, 0, 0);
    float y[4] = {1, 2, 3, 4};
    mrg_breadcrumbs(y, 4, 50, 50, w);
    float zero[4] = {0};
    t_close("breadcrumbs all dropped", y, zero, 4, 0, 0);
}

/* The K-FAC fast path against the pair-by-pair path and a double triple loop. */
static void test_kfac_apply(void) {
    int N = 3, out = 5, in = 7;
    mrg_kfac K;
    mrg_kfac_init(&K, N, out, in);
    float *A[3], *G[3], *Wi[3];
    for (int i = 0; i < N; i++) {
        A[i] = mallocCheck(sizeof(float) * in * in);
        G[i] = mallocCheck(sizeof(float) * out * out);
        Wi[i] = mallocCheck(sizeof(float) * out * in);
        rand_pd(A[i], in, 0.1f);
        rand_pd(G[i], out, 0.1f);
        for (int j = 0; j < out * in; j++) Wi[i][j] = frand();
        mrg_kfac_set(&K, i, A[i], G[i], 0.6f);
        mrg_scale_offdiag(A[i], in, 0.6f);
        mrg_scale_offdiag(G[i], out, 0.6f);
    }
    float W[35], Y[35], Yn[35], Yr[35], b[35], br[35];
    for (int j = 0; j < out * in; j++) W[j] = frand();
    mrg_op op;
    mrg_op_kfac(&op, &K);
    op.apply(&op, W, Y);
    mrg_kfac_apply_naive(&K, W, Yn);
    for (int r = 0; r < out; r++)
        for (int c = 0; c < in; c++) {
            double s = 0, sb = 0;
            for (int i = 0; i < N; i++)
                for (int p = 0; p < out; p++)
                    for (int q = 0; q < in; q++) {
                        s += (double)G[i][r * out + p] * W[p * in + q] * A[i][q * in + c];
                        sb += (double)G[i][r * out + p] * Wi[i][p * in + q] * A[i][q * in + c];
                    }
            Yr[r * in + c] = (float)s;
            br[r * in + c] = (float)sb;
        }
    t_close("kfac fast vs loop", Y, Yr, out * in, 1e-5, 1e-6);
    t_close("kfac naive vs loop", Yn, Yr, out * in, 1e-5, 1e-6);
    mrg_kfac_rhs(&K, (const float *const *)Wi, b);
    t_close("kfac rhs vs loop", b, br, out * in, 1e-5, 1e-6);
    CHECK(mrg_kfac_flops(&K) == 2.0 * 3 * 5 * 7 * 12, "flops %g", mrg_kfac_flops(&K));

    /* CG on the K-FAC system reaches the dense solution; the Kronecker
     * preconditioner gets there in fewer iterations. */
    float x[35] = {0}, xp[35] = {0};
    mrg_cg_result r1, r2;
    mrg_cg(&op, b, x, 500, 1e-7, 0, NULL, NULL, &r1);
    mrg_kron P;
    CHECK(mrg_kron_init(&P, &K) == 0, "kron init");
    mrg_cg(&op, b, xp, 500, 1e-7, 0, (mrg_precond_fn)mrg_kron_apply, &P, &r2);
    CHECK(r1.status == MRG_CG_CONVERGED && r2.status == MRG_CG_CONVERGED, "status %d %d", r1.status,
          r2.status);
    CHECK(r2.iterations < r1.iterations, "preconditioned %d vs plain %d iterations", r2.iterations,
          r1.iterations);
    /* dense: solve (sum G_i kron A_i) vec(W) = vec(b) */
    int n = out * in;
    double *M = callocCheck((size_t)n * n, sizeof(double)), *bd = mallocCheck(sizeof(double) * n);
    for (int i = 0; i < N; i++)
        for (int r = 0; r < out; r++)
            for (int c = 0; c < in; c++)
                for (int p = 0; p < out; p++)
                    for (int q = 0; q < in; q++)
                        M[(size_t)(r * in + c) * n + p * in + q] += (double)G[i][r * out + p] * A[i][q * in + c];
    for (int j = 0; j < n; j++) bd[j] = b[j];
    CHECK(mrg_spd_solve(n, 1, M, bd, NULL) == 0, "dense K-FAC system not PD");
    float xd[35];
    for (int j = 0; j < n; j++) xd[j] = (float)bd[j];
    t_close("cg kfac vs dense", x, xd, n, 1e-4, 1e-5);
    t_close("pcg kfac vs dense", xp, xd, n, 1e-4, 1e-5);

    /* P^-1 inverts P exactly when all pairs are the same. */
    mrg_kfac K2;
    mrg_kfac_init(&K2, 2, out, in);
    mrg_kfac_set(&K2, 0, A[0], G[0], 1.0f);
    mrg_kfac_set(&K2, 1, A[0], G[0], 1.0f);
    mrg_kron P2;
    mrg_kron_init(&P2, &K2);
    mrg_op op2;
    mrg_op_kfac(&op2, &K2);
    op2.apply(&op2, W, Y);
    mrg_kron_apply(&P2, Y, Yn);
    t_close("kron inverse", Yn, W, n, 1e-4, 1e-5);
    float x2[35] = {0};
    mrg_cg(&op2, Y, x2, 50, 1e-6, 0, (mrg_precond_fn)mrg_kron_apply, &P2, &r2);
    CHECK(r2.iterations <= 2, "exact preconditioner took %d iterations", r2.iterations);

    mrg_kron_free(&P);
    mrg_kron_free(&P2);
    mrg_kfac_free(&K);
    mrg_kfac_free(&K2);
    for (int i = 0; i < N; i++) free(A[i]), free(G[i]), free(Wi[i]);
    free(M);
    free(bd);
}

/* be_dsyevd: ascending eigenvalues, rows of A are unit eigenvectors. */
static void test_dsyevd(void) {
    int n = 6;
    double A[36], V[36], w[6];
    float F[36];
    rand_pd(F, n, 0.05f);
    for (int j = 0; j < n * n; j++) A[j] = V[j] = F[j];
    CHECK(be_dsyevd(n, V, n, w) == 0, "dsyevd failed");
    double worst = 0;
    for (int j = 0; j < n; j++) {
        if (j) CHECK(w[j - 1] <= w[j], "eigenvalues not ascending at %d", j);
        double nn = 0;
        for (int r = 0; r < n; r++) {
            double s = 0;
            for (int c = 0; c < n; c++) s += A[r * n + c] * V[j * n + c];
            double e = fabs(s - w[j] * V[j * n + r]);
            if (e > worst) worst = e;
            nn += V[j * n + r] * V[j * n + r];
        }
        CHECK(fabs(nn - 1) < 1e-12, "eigenvector %d has norm^2 %g", j, nn);
    }
    CHECK(worst < 1e-12, "|A v - w v| = %g", worst);
}

/* Preconditioned CG on a singular K-FAC system, as real Grams make them:
 * every A_i has the same 3-dimensional range in R^8. The system's null
 * space is W N = 0 for N spanning the rest; plain CG never moves there, and
 * the Kronecker preconditioner must not either (an inverse with a small
 * ridge multiplied the rounding noise there by 1/ridge^2 and broke down on
 * real statistics). Both must reach the same solution. */
static void test_kron_singular(void) {
    enum { N = 2, out = 6, in = 8, rk = 3 };
    /* orthonormal B (in x rk) by Gram-Schmidt */
    double B[in][rk];
    for (int k = 0; k < rk; k++) {
        for (int r = 0; r < in; r++) B[r][k] = frand();
        for (int j = 0; j < k; j++) {
            double d = 0;
            for (int r = 0; r < in; r++) d += B[r][k] * B[r][j];
            for (int r = 0; r < in; r++) B[r][k] -= d * B[r][j];
        }
        double nn = 0;
        for (int r = 0; r < in; r++) nn += B[r][k] * B[r][k];
        for (int r = 0; r < in; r++) B[r][k] /= sqrt(nn);
    }
    mrg_kfac K;
    mrg_kfac_init(&K, N, out, in);
    float *Wi[N];
    for (int i = 0; i < N; i++) {
        float A[in * in], G[out * out], C[rk * rk];
        rand_pd(C, rk, 0.2f);
        rand_pd(G, out, 0.2f);
        for (int r = 0; r < in; r++) /* A = B C B^T */
            for (int c = 0; c < in; c++) {
                double s = 0;
                for (int p = 0; p < rk; p++)
                    for (int q = 0; q < rk; q++) s += B[r][p] * C[p * rk + q] * B[c][q];
                A[r * in + c] = (float)s;
            }
        mrg_kfac_set(&K, i, A, G, 1.0f);
        Wi[i] = mallocCheck(sizeof(float) * out * in);
        for (int j = 0; j < out * in; j++) Wi[i][j] = frand();
    }
    float b[out * in], x0[out * in], xc[out * in], xp[out * in];
    mrg_kfac_rhs(&K, (const float *const *)Wi, b);
    for (int j = 0; j < out * in; j++) x0[j] = xc[j] = xp[j] = frand();
    mrg_op op;
    mrg_op_kfac(&op, &K);
    mrg_kron P;
    CHECK(mrg_kron_init(&P, &K) == 0, "kron init");
    CHECK(P.rank_a == rk && P.rank_g == out, "kept %d of A's and %d of G's eigenvalues, want %d and %d",
          P.rank_a, P.rank_g, rk, out);
    mrg_cg_result rc, rp;
    mrg_cg(&op, b, xc, 500, 1e-6, 0, NULL, NULL, &rc);
    mrg_cg(&op, b, xp, 500, 1e-6, 0, (mrg_precond_fn)mrg_kron_apply, &P, &rp);
    CHECK(rc.status == MRG_CG_CONVERGED, "plain CG status %d", rc.status);
    CHECK(rp.status == MRG_CG_CONVERGED && !rp.reverted, "preconditioned CG status %d", rp.status);
    CHECK(rp.iterations < rc.iterations, "preconditioned %d vs plain %d iterations", rp.iterations,
          rc.iterations);
    /* the null-space part of x - x0: (x - x0)(I - B B^T) */
    double nul[2] = {0, 0}, mov[2] = {0, 0};
    float *xs[2] = {xc, xp};
    for (int v = 0; v < 2; v++)
        for (int r = 0; r < out; r++)
            for (int c = 0; c < in; c++) {
                double s = 0;
                for (int q = 0; q < in; q++) {
                    double proj = 0;
                    for (int k = 0; k < rk; k++) proj += B[q][k] * B[c][k];
                    s += (xs[v][r * in + q] - x0[r * in + q]) * ((q == c) - proj);
                }
                nul[v] += s * s;
                mov[v] += (double)(xs[v][r * in + c] - x0[r * in + c]) * (xs[v][r * in + c] - x0[r * in + c]);
            }
    printf("  null-space share of the step: plain %.2e, kron %.2e (iterations %d, %d)\n",
           sqrt(nul[0] / mov[0]), sqrt(nul[1] / mov[1]), rc.iterations, rp.iterations);
    CHECK(sqrt(nul[0] / mov[0]) < 1e-4, "plain CG moved into the null space: %g", sqrt(nul[0] / mov[0]));
    CHECK(sqrt(nul[1] / mov[1]) < 1e-4, "kron PCG moved into the null space: %g", sqrt(nul[1] / mov[1]));
    t_close("kron pcg vs plain cg (singular)", xp, xc, out * in, 1e-3, 1e-4);
    mrg_kron_free(&P);
    mrg_kfac_free(&K);
    for (int i = 0; i < N; i++) free(Wi[i]);
}

/* What is left of the residual where the truncated preconditioner is 0:
 * "stalled", not a breakdown; those directions stay at x0. */
static void test_kron_stalled(void) {
    float A[9] = {1, 0, 0, 0, 0.5f, 0, 0, 0, 1e-5f}, G[4] = {1, 0, 0, 2};
    float W[6] = {1, 2, 3, -1, 0.5f, 2}, b[6], x[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    mrg_kfac K;
    mrg_kfac_init(&K, 1, 2, 3);
    mrg_kfac_set(&K, 0, A, G, 1.0f);
    const float *Ws[1] = {W};
    mrg_kfac_rhs(&K, Ws, b);
    mrg_op op;
    mrg_op_kfac(&op, &K);
    mrg_kron P;
    CHECK(mrg_kron_init(&P, &K) == 0 && P.rank_a == 2 && P.rank_g == 2, "kept %d and %d", P.rank_a,
          P.rank_g);
    mrg_cg_result r;
    mrg_cg(&op, b, x, 20, 1e-9, 0, (mrg_precond_fn)mrg_kron_apply, &P, &r);
    CHECK(r.status == MRG_CG_STALLED && !r.reverted, "status %d reverted %d after %d iterations", r.status,
          r.reverted, r.iterations);
    CHECK(fabsf(x[2] - 0.3f) < 1e-6f && fabsf(x[5] - 0.6f) < 1e-6f, "dropped column moved: %g %g", x[2],
          x[5]);
    for (int j = 0; j < 6; j++)
        if (j % 3 != 2) CHECK(fabsf(x[j] - W[j]) < 1e-4f, "x[%d] = %g, want %g", j, x[j], W[j]);
    mrg_kron_free(&P);
    mrg_kfac_free(&K);
}

/* A breakdown that leaves x worse than it started puts x0 back. */
static void test_cg_breakdown_reverts(void) {
    /* diag(1, -0.5) from 0 with b = (1, 1): the first step goes to (4, 4),
     * residual (-3, 3); the next direction has p^T A p = -36 < 0. */
    float d[2] = {1, -0.5f}, b[2] = {1, 1}, x[2] = {0, 0};
    mrg_op op;
    mrg_op_diag(&op, 2, d);
    mrg_cg_result r;
    mrg_cg(&op, b, x, 10, 1e-6, 0, NULL, NULL, &r);
    CHECK(r.status == MRG_CG_BREAKDOWN, "status %d", r.status);
    CHECK(r.reverted && x[0] == 0 && x[1] == 0, "reverted %d x = (%g, %g)", r.reverted, x[0], x[1]);
    CHECK(r.final_residual == r.initial_residual, "final %g initial %g", r.final_residual,
          r.initial_residual);
}

static void test_cg_rmul_vs_cholesky(void) {
    int rows = 4, k = 9;
    float S[81], b[36], x[36];
    rand_pd(S, k, 0.05f);
    for (int j = 0; j < 36; j++) b[j] = frand(), x[j] = 0;
    mrg_rmul c;
    mrg_op op;
    mrg_op_rmul(&op, &c, rows, k, S);
    mrg_cg_result r;
    mrg_cg(&op, b, x, 200, 1e-7, 0, NULL, NULL, &r);
    double Sd[81], Bd[36];
    for (int j = 0; j < 81; j++) Sd[j] = S[j];
    for (int rr = 0; rr < rows; rr++)
        for (int cc = 0; cc < k; cc++) Bd[cc * rows + rr] = b[rr * k + cc];
    mrg_spd_solve(k, rows, Sd, Bd, NULL);
    float want[36];
    for (int rr = 0; rr < rows; rr++)
        for (int cc = 0; cc < k; cc++) want[rr * k + cc] = (float)Bd[cc * rows + rr];
    t_close("cg vs cholesky", x, want, 36, 1e-4, 1e-5);
    CHECK(r.final_residual <= 1e-6 * r.b_norm * 10, "final residual %g, |b| %g", r.final_residual, r.b_norm);

    /* Past convergence: many iterations with tol 0 stay finite and accurate. */
    for (int j = 0; j < 36; j++) x[j] = 0;
    mrg_cg(&op, b, x, 5000, 0, 0, NULL, NULL, &r);
    long bad;
    CHECK(mrg_all_finite(x, 36, &bad), "non-finite after 5000 iterations at %ld", bad);
    t_close("cg long run", x, want, 36, 1e-4, 1e-5);
    /* b = 0 from a nonzero start goes to 0. */
    float zero[36] = {0};
    for (int j = 0; j < 36; j++) x[j] = frand();
    mrg_cg(&op, zero, x, 1000, 1e-6, 0, NULL, NULL, &r);
    CHECK(mrg_all_finite(x, 36, &bad), "b=0 non-finite");
    t_close("cg b=0", x, zero, 36, 0, 1e-4);
    /* Identity: one step. */
    mrg_op id;
    mrg_op_identity(&id, 36);
    for (int j = 0; j < 36; j++) x[j] = 0;
    mrg_cg(&id, b, x, 100, 1e-6, 0, NULL, NULL, &r);
    CHECK(r.iterations == 1 && r.status == MRG_CG_CONVERGED, "identity: %d iterations", r.iterations);
    t_close("cg identity", x, b, 36, 1e-6, 0);
}

/* The scipy-legacy quirk: an absolute tolerance returns x0 unchanged when
 * the statistics are small. Ours is relative, so scaling the system by
 * 1e-12 changes nothing. */
static void test_cg_scale_invariant(void) {
    int k = 8;
    float S[64], St[64], b[8], bt[8], x[8], xt[8];
    rand_pd(S, k, 0.05f);
    for (int j = 0; j < 64; j++) St[j] = S[j] * 1e-12f;
    for (int j = 0; j < k; j++) b[j] = frand(), bt[j] = b[j] * 1e-12f, x[j] = xt[j] = 0.1f;
    mrg_rmul c1, c2;
    mrg_op o1, o2;
    mrg_op_rmul(&o1, &c1, 1, k, S);
    mrg_op_rmul(&o2, &c2, 1, k, St);
    mrg_cg_result r1, r2;
    mrg_cg(&o1, b, x, 100, 1e-6, 0, NULL, NULL, &r1);
    mrg_cg(&o2, bt, xt, 100, 1e-6, 0, NULL, NULL, &r2);
    CHECK(r2.iterations > 0 && r2.iterations == r1.iterations, "iterations %d (scaled) vs %d", r2.iterations,
          r1.iterations);
    t_close("scaled system", xt, x, k, 1e-4, 1e-6);
}

static void test_spd_ridge(void) {
    /* Row/column 1 is zero (an input never seen): ridge, and the unknowns
     * of that row take the prior. */
    double S[9] = {2, 0, 0.5, 0, 0, 0, 0.5, 0, 1};
    double B[6] = {1, 2, 0, 0, 3, 1}; /* 3 x 2 */
    double P[6] = {9, 9, 7, -7, 9, 9};
    double r = mrg_spd_solve(3, 2, S, B, P);
    CHECK(r > 0 && r < 1e-4, "ridge %g", r);
    CHECK(fabs(B[2] - 7) < 1e-9 && fabs(B[3] + 7) < 1e-9, "dead row -> prior: %g %g", B[2], B[3]);
    /* the live part solves [[2,.5],[.5,1]] x = rhs up to the tiny ridge */
    double x0 = (1 * 1 - 0.5 * 3) / 1.75, x2 = (2 * 3 - 0.5 * 1) / 1.75;
    CHECK(fabs(B[0] - x0) < 1e-4 && fabs(B[4] - x2) < 1e-4, "live part %g %g vs %g %g", B[0], B[4], x0, x2);
    double S2[4] = {2, 1, 1, 2}, B2[2] = {3, 3};
    CHECK(mrg_spd_solve(2, 1, S2, B2, NULL) == 0, "PD needs no ridge");
    CHECK(fabs(B2[0] - 1) < 1e-12 && fabs(B2[1] - 1) < 1e-12, "solve %g %g", B2[0], B2[1]);
}

/* mrg_svd reconstructs A; mrg_polar of a full-rank matrix is orthogonal and
 * keeps its singular vectors; of a rank-deficient one it is the sum over
 * the kept components (two equal columns: the polar factor of one, split). */
/* The worst entry of U S Vt - A0 (U m x r, Vt r x n, r = min(m, n)). */
static double svd_error(int m, int n, const double *A0, const double *U, const double *S, const double *Vt) {
    int r = m < n ? m : n;
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int c = 0; c < n; c++) {
            double x = 0;
            for (int j = 0; j < r; j++) x += U[(size_t)i * r + j] * S[j] * Vt[(size_t)j * n + c];
            worst = fmax(worst, fabs(x - A0[(size_t)i * n + c]));
        }
    return worst;
}

/* The worst entry of Q^T Q - I for the m x r row-major Q. */
static double orth_error(int m, int r, const double *Q) {
    double worst = 0;
    for (int a = 0; a < r; a++)
        for (int b = 0; b < r; b++) {
            double x = 0;
            for (int i = 0; i < m; i++) x += Q[(size_t)i * r + a] * Q[(size_t)i * r + b];
            worst = fmax(worst, fabs(x - (a == b)));
        }
    return worst;
}

static void test_svd_helpers(void) {
    enum { m = 7, n = 5 };
    double A[m * n], A0[m * n], U[m * n], S[n], Vt[n * n], R[m * n];
    for (int e = 0; e < m * n; e++) A0[e] = A[e] = frand();
    CHECK(mrg_svd(m, n, A, U, S, Vt) == n, "full rank kept");
    for (int j = 1; j < n; j++) CHECK(S[j - 1] >= S[j], "descending at %d", j);
    double worst = svd_error(m, n, A0, U, S, Vt);
    CHECK(worst < 1e-12, "U S Vt - A: %g", worst);
    /* polar: Q^T Q = I */
    memcpy(R, A0, sizeof R);
    CHECK(mrg_polar(m, n, R) == 0, "polar");
    worst = orth_error(m, n, R);
    CHECK(worst < 1e-12, "polar not orthonormal: %g", worst);
    /* a rank-1 matrix u v^T: one component kept, the others zero */
    double u[m], v[n];
    for (int i = 0; i < m; i++) u[i] = frand();
    for (int c = 0; c < n; c++) v[c] = frand();
    for (int i = 0; i < m; i++)
        for (int c = 0; c < n; c++) A[i * n + c] = u[i] * v[c];
    CHECK(mrg_svd(m, n, A, U, S, Vt) == 1, "rank 1: kept more than one");
    for (int j = 1; j < n; j++) {
        CHECK(S[j] == 0, "dropped value %d = %g", j, S[j]);
        for (int i = 0; i < m; i++) CHECK(U[i * n + j] == 0, "dropped U column %d", j);
    }
    /* [x x] (two equal columns): its polar factor is [x x] / (sqrt 2 |x|) */
    double X[m * 2], nx = 0;
    for (int i = 0; i < m; i++) X[2 * i] = X[2 * i + 1] = u[i], nx += u[i] * u[i];
    CHECK(mrg_polar(m, 2, X) == 0, "polar rank 1");
    worst = 0;
    for (int i = 0; i < m; i++) worst = fmax(worst, fabs(X[2 * i] - u[i] / sqrt(2 * nx)) + fabs(X[2 * i + 1] - X[2 * i]));
    CHECK(worst < 1e-12, "polar of equal columns: %g", worst);
}

/* be_dgesvd (QR iteration, be_dgesdd's fallback) agrees with dgesdd on a
 * random matrix; and the iso_cts matrix of the fixture, from eight full
 * t5-mini task models (decoder.block.1 self-attention k, 256 x 256), on
 * which OpenBLAS's dgesdd returned info 1 (no convergence) and stopped the
 * merge on two threads (on one it converged), now factors: U S Vt is the
 * matrix, U orthonormal. */
static void test_svd_fallback(void) {
    enum { m = 9, n = 6 };
    double A[m * n], B[m * n], A0[m * n], U[m * n], S[n], Vt[n * n], U2[m * n], S2[n], Vt2[n * n], orth;
    for (int e = 0; e < m * n; e++) A0[e] = A[e] = B[e] = frand();
    CHECK(be_dgesdd(m, n, A, U, S, Vt) == 0, "dgesdd");
    CHECK(be_dgesvd(m, n, B, U2, S2, Vt2) == 0, "dgesvd");
    for (int j = 0; j < n; j++) CHECK(fabs(S[j] - S2[j]) < 1e-12, "S[%d] %g vs %g", j, S[j], S2[j]);
    double res = svd_error(m, n, A0, U2, S2, Vt2);
    orth = orth_error(m, n, U2);
    CHECK(res < 1e-12 && orth < 1e-12, "dgesvd: U S Vt - A %g, U^T U - I %g", res, orth);
    enum { N = 256 };
    static double F[N * N], F0[N * N], FU[N * N], FS[N], FVt[N * N];
    FILE *f = fopen("tests/fixtures/svd_gesdd_no_converge.f64", "rb");
    CHECK(f != NULL, "cannot open tests/fixtures/svd_gesdd_no_converge.f64 (run from the repository root)");
    if (!f) return;
    size_t got = fread(F0, sizeof(double), (size_t)N * N, f);
    fclose(f);
    CHECK(got == (size_t)N * N, "fixture: %zu of %d doubles", got, N * N);
    memcpy(F, F0, sizeof F);
    be_init(2); /* the merge stage's threads: with one, dgesdd converged on it */
    CHECK(be_dgesdd(N, N, F, FU, FS, FVt) == 0, "the fixture's SVD did not converge");
    be_init(1);
    for (int j = 1; j < N; j++) CHECK(FS[j - 1] >= FS[j], "descending at %d", j);
    res = svd_error(N, N, F0, FU, FS, FVt);
    orth = orth_error(N, N, FU);
    CHECK(res < 1e-12 * FS[0] * N && orth < 1e-10, "fixture: U S Vt - A %g (S0 %g), U^T U - I %g", res, FS[0], orth);
}

/* WUDI's system against the sums written out, and a zero task vector left out. */
static void test_wudi_system(void) {
    enum { out = 4, in = 3 };
    float T0[out * in], T1[out * in], Z[out * in] = {0}, S[in * in], B[out * in], work[in * in];
    for (int e = 0; e < out * in; e++) T0[e] = frand(), T1[e] = frand();
    const float *T[3] = {T0, Z, T1};
    CHECK(mrg_wudi_system(3, out, in, T, S, B, work) == 2, "the zero task vector was used");
    float Sw[in * in] = {0}, Bw[out * in] = {0};
    const float *Ts[2] = {T0, T1};
    for (int k = 0; k < 2; k++) {
        double sq = 0;
        for (int e = 0; e < out * in; e++) sq += (double)Ts[k][e] * Ts[k][e];
        double G[in * in] = {0};
        for (int a = 0; a < in; a++)
            for (int b = 0; b < in; b++)
                for (int r = 0; r < out; r++) G[a * in + b] += (double)Ts[k][r * in + a] * Ts[k][r * in + b];
        for (int a = 0; a < in * in; a++) Sw[a] += (float)(G[a] / sq);
        for (int r = 0; r < out; r++)
            for (int b = 0; b < in; b++) {
                double x = 0;
                for (int a = 0; a < in; a++) x += Ts[k][r * in + a] * G[a * in + b];
                Bw[r * in + b] += (float)(x / sq);
            }
    }
    t_close("wudi S", S, Sw, in * in, 1e-5, 1e-6);
    t_close("wudi B", B, Bw, out * in, 1e-5, 1e-6);
}

static void test_model_stock_ratio(void) {
    float a[3] = {1, 0, 0}, b[3] = {0, 2, 0}, z[3] = {0}, c[3] = {-1, 0, 0}, d[3] = {3, 0, 0};
    double t, cs;
    const float *orth[2] = {a, b}, *same[3] = {a, d, a}, *zero[2] = {a, z}, *opp[2] = {a, c}, *one[1] = {a};
    CHECK(mrg_model_stock_t(2, 3, orth, &t, &cs) == 0 && t == 0 && cs == 0, "orthogonal: t %g", t);
    CHECK(mrg_model_stock_t(3, 3, same, &t, &cs) == 0 && fabs(t - 1) < 1e-15, "parallel: t %g", t);
    CHECK(mrg_model_stock_t(2, 3, zero, &t, &cs) == 0 && t == 0 && cs == 0, "with a zero vector: t %g c %g", t, cs);
    CHECK(mrg_model_stock_t(2, 3, opp, &t, &cs) < 0, "opposite vectors: t %g accepted", t);
    CHECK(mrg_model_stock_t(1, 3, one, &t, &cs) < 0, "one model accepted");
    /* N = 3, cosines 0.6 (a, e), 0 (a, b), 0.8 (b, e): c = 7/15, t = 21/29 */
    float e[3] = {3, 4, 0};
    const float *three[3] = {a, b, e};
    CHECK(mrg_model_stock_t(3, 3, three, &t, &cs) == 0 && fabs(cs - 1.4 / 3) < 1e-12 &&
              fabs(t - 3 * (1.4 / 3) / (1 + 2 * (1.4 / 3))) < 1e-12, "three: c %g t %g", cs, t);
}

static void test_slerp_hand(void) {
    float a[2] = {1, 0}, b[2] = {0, 3}, out[2];
    mrg_slerp(2, 0.5, a, b, out); /* w = pi/2: sin(pi/4)/1 each */
    float want[2] = {(float)sqrt(0.5), (float)(3 * sqrt(0.5))};
    t_close("slerp orthogonal", out, want, 2, 1e-6, 1e-7);
    mrg_slerp(2, 0, a, b, out);
    t_close("slerp t=0", out, a, 2, 1e-6, 1e-7);
    mrg_slerp(2, 1, a, b, out);
    t_close("slerp t=1", out, b, 2, 1e-6, 1e-7);
    /* nearly colinear (dot 0.99995 > 0.9995): linear interpolation */
    float c[2] = {1, 0.01f}, d[2] = {2, 0.0201f}, lin[2];
    mrg_slerp(2, 0.25, c, d, out);
    for (int i = 0; i < 2; i++) lin[i] = (float)(0.75 * c[i] + 0.25 * d[i]);
    t_close("slerp colinear = lerp", out, lin, 2, 1e-6, 1e-7);
    /* a zero tensor is not normalised: dot 0, w = pi/2, out = sin((1-t) pi/2) a */
    float z[2] = {0, 0};
    mrg_slerp(2, 0.5, a, z, out);
    float wz[2] = {(float)sqrt(0.5), 0};
    t_close("slerp with zero", out, wz, 2, 1e-6, 1e-7);
}

/* ------------------------------------------------------------ part 2: fixture + stage */

typedef struct {
    char group[48], name[128];
    int ndim;
    int64_t shape[2];
    long n;
    float *x;
} ftensor;

static ftensor *FX;
static int NFX;

static int load_fixture(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    static int cap; /* FX grows across calls: one fixture file after another */
    while (fscanf(f, "%511s", line) == 1) {
        if (line[0] == '#') {
            if (!fgets(line, sizeof line, f)) break;
            continue;
        }
        if (strcmp(line, "tensor")) return -1;
        if (NFX == cap) FX = reallocCheck(FX, sizeof(ftensor) * (cap = cap ? 2 * cap : 64));
        ftensor *t = &FX[NFX++];
        memset(t, 0, sizeof *t);
        if (fscanf(f, "%47s %127s %d", t->group, t->name, &t->ndim) != 3) return -1;
        t->n = 1;
        for (int d = 0; d < t->ndim; d++) {
            long long s;
            if (fscanf(f, "%lld", &s) != 1) return -1;
            t->shape[d] = s;
            t->n *= s;
        }
        t->x = mallocCheck(sizeof(float) * t->n);
        for (long i = 0; i < t->n; i++) {
            double v;
            if (fscanf(f, "%lf", &v) != 1) return -1;
            t->x[i] = (float)v;
        }
    }
    fclose(f);
    return NFX > 0 ? 0 : -1;
}

static const ftensor *fx_find(const char *group, const char *name) {
    for (int i = 0; i < NFX; i++)
        if (!strcmp(FX[i].group, group) && !strcmp(FX[i].name, name)) return &FX[i];
    return NULL;
}

/* Write every fixture tensor of `group` as one artifact. `scale` multiplies
 * the data; `zero_idx` >= 0 zeroes that row and column of tensor `zname`. */
static void write_group(const char *file, const char *group, const char *kind, const char *key,
                        const char *base, float scale, const char *zname, int zero_idx) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    int n = 0;
    for (int i = 0; i < NFX; i++) n += !strcmp(FX[i].group, group);
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "test");
    if (base) val_set_str(meta, "base", base);
    if (!strcmp(kind, "model")) val_set_int(val_set_map(meta, "config"), "d_model", 4);
    art_writer *w = art_writer_open(p, kind, key, meta, (size_t)n);
    val_free(meta);
    if (!w) {
        CHECK(0, "%s", mc_error());
        return;
    }
    for (int i = 0; i < NFX; i++) {
        if (strcmp(FX[i].group, group)) continue;
        float *x = mallocCheck(sizeof(float) * FX[i].n);
        for (long j = 0; j < FX[i].n; j++) x[j] = FX[i].x[j] * scale;
        if (zname && !strcmp(FX[i].name, zname)) {
            int d = (int)FX[i].shape[0];
            for (int j = 0; j < d; j++) x[zero_idx * d + j] = x[j * d + zero_idx] = 0;
        }
        art_writer_tensor(w, FX[i].name, ART_F32, FX[i].ndim, FX[i].shape, x);
        free(x);
    }
    CHECK(art_writer_close(w) == 0, "%s", mc_error());
}

/* Run build/bin/merge with args (paths relative to dir); returns exit status
 * and leaves stderr in dir/stderr.txt. */
static int run_merge(const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cd %s && %s/build/bin/merge %s 2>stderr.txt >/dev/null", dir, root, args);
    int rc = system(cmd);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

static char *stderr_text(void) {
    char p[400];
    snprintf(p, sizeof p, "%s/stderr.txt", dir);
    unsigned char *buf;
    size_t len;
    if (mc_read_file(p, &buf, &len) < 0) return strdupCheck("");
    buf = reallocCheck(buf, len + 1);
    buf[len] = 0;
    return (char *)buf;
}

/* merge ARGS must exit 1 with one line on stderr naming `word`. */
static void expect_refusal(const char *args, const char *word) {
    int rc = run_merge(args);
    char *msg = stderr_text();
    const char *nl = strchr(msg, '\n');
    CHECK(rc == 1 && strstr(msg, word) && nl && !nl[1], "merge %s: exit %d, stderr '%s' (want one line naming '%s')",
          args, rc, msg, word);
    free(msg);
}

static art_file *open_out(const char *file) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    art_file *a = art_open(p, NULL);
    CHECK(a != NULL, "%s", mc_error());
    return a;
}

/* Compare every tensor of `file` with fixture group `expect`. */
static void compare(const char *file, const char *expect, double rtol, double atol) {
    art_file *a = open_out(file);
    if (!a) return;
    int seen = 0;
    for (int i = 0; i < NFX; i++) {
        if (strcmp(FX[i].group, expect)) continue;
        seen++;
        const art_tensor *t = art_find(a, FX[i].name);
        CHECK(t != NULL, "%s lacks %s", file, FX[i].name);
        if (!t) continue;
        CHECK(t->numel == FX[i].n && t->ndim == FX[i].ndim, "%s: shape of %s", file, FX[i].name);
        float *x = art_tensor_f32(t);
        char label[300];
        snprintf(label, sizeof label, "%s %s", expect, FX[i].name);
        t_close(label, x, FX[i].x, FX[i].n, rtol, atol);
        free(x);
    }
    CHECK(seen > 0 && (size_t)seen == a->n_tensors, "%s: %zu tensors, fixture %d", file, a->n_tensors, seen);
    art_close(a);
}

#define MODELS "--pretrained pre.msgpack --models m0.msgpack,m1.msgpack,m2.msgpack"
#define GRAMS "--gram g0.msgpack,g1.msgpack,g2.msgpack"
#define FISHERS "--fisher f0.msgpack,f1.msgpack,f2.msgpack"
#define IA3S "--pretrained pre.msgpack --models i0.msgpack,i1.msgpack,i2.msgpack"
#define CGX "--iterations 3000 --cg-tol 1e-9"

/* write_group of group gfmt % i to file ffmt % i, unscaled */
static void write_nth(const char *gfmt, const char *ffmt, int i, const char *kind, const char *key, const char *base) {
    char f[64], g[64];
    snprintf(g, sizeof g, gfmt, i), snprintf(f, sizeof f, ffmt, i);
    write_group(f, g, kind, key, base, 1, NULL, -1);
}

static void setup_artifacts(void) {
    write_group("pre.msgpack", "pre", "model", PRE_KEY, NULL, 1, NULL, -1);
    const char *keys[3] = {"11111111111111111111111111111111", "22222222222222222222222222222222",
                           "33333333333333333333333333333333"};
    for (int i = 0; i < 3; i++) {
        char f[64], g[64];
        snprintf(g, sizeof g, "model.%d", i), snprintf(f, sizeof f, "m%d.msgpack", i);
        write_group(f, g, "model", keys[i], NULL, 1, NULL, -1);
        snprintf(g, sizeof g, "gram.%d", i), snprintf(f, sizeof f, "g%d.msgpack", i);
        write_group(f, g, "gram", "", NULL, 1, NULL, -1);
        snprintf(f, sizeof f, "gs%d.msgpack", i);
        write_group(f, g, "gram", "", NULL, 1e-12f, NULL, -1);
        snprintf(f, sizeof f, "gz%d.msgpack", i);
        write_group(f, g, "gram", "", NULL, 1, "encoder.block.0.layer.0.SelfAttention.q.input_gram", 1);
        write_nth("fisher.%d", "f%d.msgpack", i, "fisher_diag", "", NULL);
        write_nth("ia3.%d", "i%d.msgpack", i, "ia3", keys[i], PRE_KEY);
        write_nth("fblock.%d", "fb%d.msgpack", i, "fisher_block", "", NULL);
    }
}

static void test_closed_forms(void) {
    CHECK(run_merge("--method average " MODELS " -o average.msgpack") == 0, "average failed");
    compare("average.msgpack", "expect.average", 1e-6, 1e-6);
    CHECK(run_merge("--method task_arithmetic --lambda 0.7 " MODELS " -o ta.msgpack") == 0, "ta failed");
    compare("ta.msgpack", "expect.task_arithmetic", 1e-5, 1e-6);
    CHECK(run_merge("--method ties --topk-percent 40 --lambda 0.9 " MODELS " -o ties.msgpack") == 0, "ties");
    compare("ties.msgpack", "expect.ties", 1e-5, 1e-6);
    CHECK(run_merge("--method fisher " MODELS " " FISHERS " -o fisher.msgpack") == 0, "fisher failed");
    compare("fisher.msgpack", "expect.fisher", 1e-5, 1e-6);
    CHECK(run_merge("--method regmean --lambda 0.8 " MODELS " " GRAMS " -o regmean.msgpack") == 0, "regmean");
    compare("regmean.msgpack", "expect.regmean", 1e-4, 1e-5);
    CHECK(run_merge("--method breadcrumbs --lambda 0.6 --breadcrumbs-top 10 --breadcrumbs-bottom 30 " MODELS
                    " -o bc.msgpack") == 0, "breadcrumbs failed");
    compare("bc.msgpack", "expect.breadcrumbs", 1e-5, 1e-6);
}

/* CG methods reach the closed forms within 1e-4 relative. */
static void test_cg_converges(void) {
    CHECK(run_merge("--method cg_average " CGX " " MODELS " --init pretrained -o cga.msgpack") == 0, "cg_average");
    compare("cga.msgpack", "expect.average", 1e-5, 1e-6);
    /* from the pretrained model: the all-zero Fisher entry must still move
     * (to the average, through the 1e-8 clamp); unclamped it would stay. */
    CHECK(run_merge("--method cg_fisher " CGX " " MODELS " " FISHERS " --init pretrained -o cgf.msgpack") == 0, "cg_fisher");
    compare("cgf.msgpack", "expect.fisher", 1e-4, 1e-5);
    /* lm_head included: the original leaves it at the pretrained value. */
    CHECK(run_merge("--method cg_regmean --lambda 0.8 " CGX " " MODELS " " GRAMS " -o cgr.msgpack") == 0, "cg_regmean");
    compare("cgr.msgpack", "expect.regmean", 1e-4, 1e-5);
    CHECK(run_merge("--method mats --lambda 0.8 " CGX " " MODELS " " GRAMS " -o mats.msgpack") == 0, "mats");
    compare("mats.msgpack", "expect.mats", 1e-4, 1e-5);
    CHECK(run_merge("--method mats --lambda 0.8 --precondition kron " CGX " " MODELS " " GRAMS
                    " --init task_arithmetic --init-lambda 0.3 -o matsk.msgpack") == 0, "mats kron");
    compare("matsk.msgpack", "expect.mats", 1e-4, 1e-5);
    /* --init FILE: from the regmean merge */
    CHECK(run_merge("--method mats --lambda 0.8 " CGX " " MODELS " " GRAMS " --init regmean.msgpack -o matsf.msgpack") == 0,
          "mats from file");
    compare("matsf.msgpack", "expect.mats", 1e-4, 1e-5);
}

static void test_ia3(void) {
    CHECK(run_merge("--method mats --lambda 0.7 " CGX " " IA3S " --fisher fb0.msgpack,fb1.msgpack,fb2.msgpack -o imats.msgpack") == 0,
          "ia3 mats");
    compare("imats.msgpack", "expect.ia3_mats", 1e-4, 1e-5);
    CHECK(run_merge("--method ties --topk-percent 50 " IA3S " -o ities.msgpack") == 0, "ia3 ties");
    compare("ities.msgpack", "expect.ia3_ties", 1e-5, 1e-6);
    CHECK(run_merge("--method task_arithmetic --lambda 0.5 " IA3S " -o ita.msgpack") == 0, "ia3 ta");
    compare("ita.msgpack", "expect.ia3_task_arithmetic", 1e-5, 1e-6);
    art_file *a = open_out("imats.msgpack");
    if (a) {
        CHECK(!strcmp(a->kind, "ia3"), "kind %s", a->kind);
        CHECK(!strcmp(val_get_str(a->meta, "base", ""), PRE_KEY), "meta.base %s", val_get_str(a->meta, "base", "?"));
        art_close(a);
    }
    /* the base model must be the one the ia3 vectors adapt */
    write_group("pre2.msgpack", "pre", "model", "fedcba9876543210fedcba9876543210", NULL, 1, NULL, -1);
    CHECK(run_merge("--method average --pretrained pre2.msgpack --models i0.msgpack,i1.msgpack -o x.msgpack") != 0,
          "base mismatch accepted");
    char *e = stderr_text();
    CHECK(strstr(e, "i0.msgpack") && strstr(e, "pre2.msgpack"), "message: %s", e);
    free(e);
    CHECK(run_merge("--method regmean " IA3S " " GRAMS " -o x.msgpack") != 0, "regmean on ia3 accepted");
}

/* One tensor "t" per artifact: a model whose only parameter is t. */
static void write_vec(const char *file, const char *key, const float *x, int n) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    art_writer *w = art_writer_open(p, "model", key, NULL, 1);
    int64_t sh[1] = {n};
    art_writer_tensor(w, "encoder.final_layer_norm.weight", ART_F32, 1, sh, x);
    CHECK(art_writer_close(w) == 0, "%s", mc_error());
}

static void merged_vec(const char *file, float *x, int n) {
    art_file *a = open_out(file);
    if (!a) return;
    const art_tensor *t = art_find(a, "encoder.final_layer_norm.weight");
    CHECK(t && t->numel == n, "bad output");
    if (t) art_tensor_copy(t, x);
    art_close(a);
}

static void test_ties_hand(void) {
    float z[5] = {0};
    write_vec("z.msgpack", "", z, 4);
    /* zero sign resolved by the majority (+): [1,1,2,0] */
    float a[4] = {1, -1, 2, 0}, b[4] = {-1, 1, 0, 0}, x[5];
    write_vec("a.msgpack", "", a, 4);
    write_vec("b.msgpack", "", b, 4);
    CHECK(run_merge("--method ties --topk-percent 100 --pretrained z.msgpack --models a.msgpack,b.msgpack -o t1.msgpack") == 0, "t1");
    merged_vec("t1.msgpack", x, 4);
    float w1[4] = {1, 1, 2, 0};
    t_close("ties majority", x, w1, 4, 0, 0);
    /* majority itself tied (0): torch.where(sign > 0, x > 0, x < 0) keeps negatives */
    float c[4] = {1, -1, 0, 0}, d[4] = {-1, 1, 0, 0};
    write_vec("c.msgpack", "", c, 4);
    write_vec("d.msgpack", "", d, 4);
    CHECK(run_merge("--method ties --topk-percent 100 --pretrained z.msgpack --models c.msgpack,d.msgpack -o t2.msgpack") == 0, "t2");
    merged_vec("t2.msgpack", x, 4);
    float w2[4] = {-1, -1, 0, 0};
    t_close("ties zero majority", x, w2, 4, 0, 0);
    /* magnitude ties at the threshold are all kept: top 20% of 5 -> rank 4 */
    write_vec("z5.msgpack", "", z, 5);
    float e[5] = {3, -3, 3, 1, 0.5f}, f[5] = {-0.1f, 0, 0, 0, 0};
    write_vec("e.msgpack", "", e, 5);
    write_vec("f.msgpack", "", f, 5);
    CHECK(run_merge("--method ties --topk-percent 20 --pretrained z5.msgpack --models e.msgpack,f.msgpack -o t3.msgpack") == 0, "t3");
    merged_vec("t3.msgpack", x, 5);
    float w3[5] = {3, -3, 3, 0, 0};
    t_close("ties threshold ties", x, w3, 5, 0, 0);
}

static void test_dare(void) {
    /* drop rate 0: dare_linear = task arithmetic, dare_ties = ties at 100% */
    CHECK(run_merge("--method dare_linear --drop-rate 0 --lambda 0.7 " MODELS " -o dl0.msgpack") == 0, "dl0");
    compare("dl0.msgpack", "expect.task_arithmetic", 1e-5, 1e-6);
    CHECK(run_merge("--method dare_ties --drop-rate 0 --lambda 0.9 " MODELS " -o dt0.msgpack") == 0, "dt0");
    CHECK(run_merge("--method ties --topk-percent 100 --lambda 0.9 " MODELS " -o t100.msgpack") == 0, "t100");
    art_file *p = open_out("dt0.msgpack"), *q = open_out("t100.msgpack");
    if (p && q)
        for (size_t j = 0; j < p->n_tensors; j++) {
            float *x = art_tensor_f32(&p->tensors[j]), *y = art_tensor_f32(art_find(q, p->tensors[j].name));
            t_close(p->tensors[j].name, x, y, p->tensors[j].numel, 1e-6, 1e-7);
            free(x), free(y);
        }
    art_close(p), art_close(q);
    /* p = 0.3, seed 11: the reference re-implements the drop mask's hash */
    CHECK(run_merge("--method dare_linear --drop-rate 0.3 --seed 11 --lambda 0.7 " MODELS " -o dl3.msgpack") == 0, "dl3");
    compare("dl3.msgpack", "expect.dare_linear", 1e-5, 1e-6);
    CHECK(run_merge("--method dare_ties --drop-rate 0.3 --seed 11 --lambda 0.9 " MODELS " -o dt3.msgpack") == 0, "dt3");
    compare("dt3.msgpack", "expect.dare_ties", 1e-5, 1e-6);
    /* one model, p = 0.5, lambda 1: every entry is pre or pre + 2 tau */
    CHECK(run_merge("--method dare_linear --drop-rate 0.5 --seed 5 --pretrained pre.msgpack --models m0.msgpack -o d1.msgpack") == 0, "d1");
    CHECK(run_merge("--method dare_linear --drop-rate 0.5 --seed 5 --pretrained pre.msgpack --models m0.msgpack -o d2.msgpack") == 0, "d2");
    CHECK(run_merge("--method dare_linear --drop-rate 0.5 --seed 6 --pretrained pre.msgpack --models m0.msgpack -o d3.msgpack") == 0, "d3");
    art_file *a = open_out("d1.msgpack"), *b = open_out("d2.msgpack"), *c = open_out("d3.msgpack");
    if (!a || !b || !c) return;
    CHECK(!memcmp(a->digest, b->digest, 16), "same seed, different bytes");
    CHECK(memcmp(a->digest, c->digest, 16), "another seed, same bytes");
    long kept = 0, total = 0, odd = 0;
    for (size_t j = 0; j < a->n_tensors; j++) {
        const art_tensor *t = &a->tensors[j];
        float *x = art_tensor_f32(t);
        const ftensor *pre = fx_find("pre", t->name), *m = fx_find("model.0", t->name);
        for (long e = 0; e < t->numel; e++) {
            float tau = m->x[e] - pre->x[e];
            if (fabsf(x[e] - pre->x[e]) < 1e-6f) continue;
            if (fabsf(x[e] - (pre->x[e] + 2 * tau)) < 1e-5f) kept++;
            else odd++;
        }
        total += t->numel;
        free(x);
    }
    CHECK(odd == 0, "%ld entries neither dropped nor rescaled", odd);
    CHECK(kept > total / 4 && kept < 3 * total / 4, "kept %ld of %ld at p=0.5", kept, total);
    art_close(a), art_close(b), art_close(c);
}

/* A dead input (zero row/column of every input Gram): RegMean adds a ridge
 * towards the average and says so; CG stays finite. */
static void test_regmean_singular(void) {
    const char *q = "encoder.block.0.layer.0.SelfAttention.q.weight";
    CHECK(run_merge("--method regmean --lambda 0.8 " MODELS " --gram gz0.msgpack,gz1.msgpack,gz2.msgpack -o rz.msgpack") == 0,
          "singular regmean failed");
    char *e = stderr_text();
    CHECK(strstr(e, "singular") && strstr(e, q), "stderr: %s", e);
    free(e);
    CHECK(run_merge("--method cg_regmean --lambda 0.8 " MODELS " --gram gz0.msgpack,gz1.msgpack,gz2.msgpack -o cz.msgpack") == 0,
          "singular cg_regmean failed");
    art_file *a = open_out("rz.msgpack"), *c = open_out("cz.msgpack");
    if (!a || !c) return;
    const mc_val *ridge = val_get(a->meta, "ridge");
    CHECK(ridge && val_get_float(ridge, q, 0) > 0, "meta.ridge missing");
    const ftensor *avg = fx_find("expect.average", q);
    float *x = art_tensor_f32(art_find(a, q)), *y = art_tensor_f32(art_find(c, q));
    long bad;
    CHECK(mrg_all_finite(x, avg->n, &bad) && mrg_all_finite(y, avg->n, &bad), "non-finite");
    int out = (int)avg->shape[0], in = (int)avg->shape[1];
    float xc[8], yc[8], ac[8];
    for (int r = 0; r < out; r++) xc[r] = x[r * in + 1], yc[r] = y[r * in + 1], ac[r] = avg->x[r * in + 1];
    t_close("dead column regmean = average", xc, ac, out, 1e-4, 1e-5);
    t_close("dead column cg_regmean = init", yc, ac, out, 1e-4, 1e-5);
    t_close("regmean vs cg_regmean, singular", y, x, avg->n, 1e-3, 1e-4);
    free(x), free(y);
    art_close(a), art_close(c);
}

/* Grams scaled by 1e-12: scipy's legacy absolute tolerance would return
 * the initial guess; ours is relative, so the merge is unchanged. */
static void test_small_statistics(void) {
    CHECK(run_merge("--method cg_regmean --lambda 0.8 " CGX " " MODELS " --gram gs0.msgpack,gs1.msgpack,gs2.msgpack -o cgs.msgpack") == 0,
          "scaled cg_regmean failed");
    compare("cgs.msgpack", "expect.regmean", 1e-4, 1e-5);
}

static void test_meta_and_determinism(void) {
    CHECK(run_merge("--method mats --lambda 0.8 --iterations 5 " MODELS " " GRAMS " -o meta1.msgpack") == 0, "m1");
    CHECK(run_merge("--method mats --lambda 0.8 --iterations 5 " MODELS " " GRAMS " -o meta2.msgpack") == 0, "m2");
    art_file *a = open_out("meta1.msgpack"), *b = open_out("meta2.msgpack");
    if (!a || !b) return;
    CHECK(!memcmp(a->digest, b->digest, 16), "two runs differ");
    CHECK(!strcmp(val_get_str(a->meta, "method", ""), "mats"), "meta.method");
    CHECK(val_get_float(a->meta, "lambda", 0) == 0.8, "meta.lambda");
    CHECK(val_path(a->meta, "config.d_model") != NULL, "meta.config dropped");
    const mc_val *models = val_path(a->meta, "inputs.models");
    CHECK(models && models->type == VAL_ARRAY && models->v.c.n == 3 &&
          !strcmp(models->v.c.items[1]->v.str.s, "22222222222222222222222222222222"), "inputs.models");
    CHECK(!strcmp(val_path(a->meta, "inputs.pretrained") ? val_path(a->meta, "inputs.pretrained")->v.str.s : "", PRE_KEY),
          "inputs.pretrained");
    const mc_val *cg = val_get(a->meta, "cg");
    const mc_val *q = val_get(cg, "encoder.block.0.layer.0.SelfAttention.q.weight");
    CHECK(q && val_get_int(q, "iterations", -1) == 5 && val_get_float(q, "final_residual", -1) >= 0 &&
          val_get_float(q, "final_residual", -1) < val_get_float(q, "initial_residual", -1),
          "cg residuals in meta");
    CHECK(val_get(cg, "lm_head.weight") == NULL, "mats must average lm_head, not solve it");
    CHECK(strlen(a->key) == 32, "key '%s'", a->key);
    art_close(a), art_close(b);
}

static void test_bad_inputs(void) {
    /* a model with a different shape for one tensor */
    const char *bad_name = "encoder.block.0.layer.0.SelfAttention.o.weight";
    char p[400];
    snprintf(p, sizeof p, "%s/bad.msgpack", dir);
    art_writer *w = art_writer_open(p, "model", "", NULL, 6);
    for (int i = 0; i < NFX; i++) {
        if (strcmp(FX[i].group, "model.0")) continue;
        int64_t sh[2] = {FX[i].shape[0], FX[i].shape[1]};
        if (!strcmp(FX[i].name, bad_name)) sh[0] = 3, sh[1] = 4;
        art_writer_tensor(w, FX[i].name, ART_F32, FX[i].ndim, sh, FX[i].x);
    }
    art_writer_close(w);
    CHECK(run_merge("--method average --pretrained pre.msgpack --models m0.msgpack,bad.msgpack -o x.msgpack") != 0,
          "shape mismatch accepted");
    char *e = stderr_text();
    CHECK(strstr(e, bad_name) && strstr(e, "bad.msgpack") && !strchr(strchr(e, '\n') ? strchr(e, '\n') + 1 : "", '\n'),
          "one line naming tensor and file: %s", e);
    free(e);
    /* a NaN */
    snprintf(p, sizeof p, "%s/nan.msgpack", dir);
    w = art_writer_open(p, "model", "", NULL, 6);
    for (int i = 0; i < NFX; i++) {
        if (strcmp(FX[i].group, "model.0")) continue;
        float *x = mallocCheck(sizeof(float) * FX[i].n);
        memcpy(x, FX[i].x, sizeof(float) * FX[i].n);
        if (!strcmp(FX[i].name, "lm_head.weight")) x[3] = NAN;
        art_writer_tensor(w, FX[i].name, ART_F32, FX[i].ndim, FX[i].shape, x);
        free(x);
    }
    art_writer_close(w);
    CHECK(run_merge("--method average --pretrained pre.msgpack --models m0.msgpack,nan.msgpack -o x.msgpack") != 0,
          "NaN accepted");
    e = stderr_text();
    CHECK(strstr(e, "lm_head.weight") && strstr(e, "nan.msgpack"), "message: %s", e);
    free(e);
    /* each: exit status 1 (not a crash), one line on stderr naming the thing */
    static const struct { const char *args, *word; } bad[] = {
        {"--method mats " MODELS " -o x.msgpack", "gram"},
        {"--method mats " MODELS " --gram g0.msgpack,g1.msgpack -o x.msgpack", "gram"},
        {"--method nope " MODELS " -o x.msgpack", "nope"},
        {"--method ties --topk-percent 120 " MODELS " -o x.msgpack", "120"},
        {"--method average " MODELS " --lambda x -o x.msgpack", "--lambda"},
        {"--method cg_regmean " MODELS " --gram g0.msgpack,g1.msgpack,f2.msgpack -o x.msgpack", "f2.msgpack"},
        {"--method slerp --lambda 0.5 " MODELS " -o x.msgpack", "exactly 2 models"},
        {"--method slerp --lambda 1.5 --pretrained pre.msgpack --models m0.msgpack,m1.msgpack -o x.msgpack", "1.5"},
        {"--method slerp --lambda -0.1 --pretrained pre.msgpack --models m0.msgpack,m1.msgpack -o x.msgpack", "[0, 1]"},
        {"--method model_stock --pretrained pre.msgpack --models m0.msgpack -o x.msgpack", "at least 2"},
        {"--method iso_cts --common-space-fraction 1.2 " MODELS " -o x.msgpack", "--common-space-fraction"},
        {"--method iso_cts --common-space-fraction -0.5 " MODELS " -o x.msgpack", "--common-space-fraction"},
        {"--method iso_cts --common-space-fraction abc " MODELS " -o x.msgpack", "abc"},
        {"--method iso_c " IA3S " -o x.msgpack", "iso_c"},
        {"--method tsv_m " IA3S " -o x.msgpack", "tsv_m"},
        {"--method wudi " IA3S " -o x.msgpack", "wudi"},
        {"--method wudi --precondition kron " MODELS " -o x.msgpack", "precondition"},
        {"--method wudi --iterations -3 " MODELS " -o x.msgpack", "--iterations"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_refusal(bad[i].args, bad[i].word);
    }
    snprintf(p, sizeof p, "%s/x.msgpack", dir);
    CHECK(access(p, F_OK) != 0, "a failed merge left %s", p);
}

/* ------------------------------------------------------------ task-vector methods
 * (tests/reference/merge_tv_fixture.txt, merge_ref_tv.py) */

#define TV "--pretrained tvpre.msgpack --models tv0.msgpack,tv1.msgpack,tv2.msgpack"
#define TVI "--pretrained tvpre.msgpack --models tvi0.msgpack,tvi1.msgpack,tvi2.msgpack"

/* The edge cases: fixture group prefix and number of models. */
static const struct {
    const char *name;
    int n;
} EDGES[] = {{"one", 1}, {"zero", 3}, {"rank", 3}, {"same", 2}};

static void setup_tv_artifacts(void) {
    const char *keys[3] = {"44444444444444444444444444444444", "55555555555555555555555555555555",
                           "66666666666666666666666666666666"};
    char f[64], g[64];
    write_group("tvpre.msgpack", "tv.pre", "model", PRE_KEY, NULL, 1, NULL, -1);
    write_group("edgepre.msgpack", "edge.pre", "model", PRE_KEY, NULL, 1, NULL, -1);
    for (int i = 0; i < 3; i++) {
        snprintf(g, sizeof g, "tv.model.%d", i), snprintf(f, sizeof f, "tv%d.msgpack", i);
        write_group(f, g, "model", keys[i], NULL, 1, NULL, -1);
        snprintf(g, sizeof g, "tv.ia3.%d", i), snprintf(f, sizeof f, "tvi%d.msgpack", i);
        write_group(f, g, "ia3", keys[i], PRE_KEY, 1, NULL, -1);
    }
    for (size_t c = 0; c < sizeof EDGES / sizeof EDGES[0]; c++)
        for (int i = 0; i < EDGES[c].n; i++) {
            snprintf(g, sizeof g, "%s.model.%d", EDGES[c].name, i);
            snprintf(f, sizeof f, "%s%d.msgpack", EDGES[c].name, i);
            write_group(f, g, "model", keys[i], NULL, 1, NULL, -1);
        }
}

/* Random models: each method within 1e-5 of the reference (wudi, by CG, 1e-3). */
static void test_tv_methods(void) {
    static const struct {
        const char *args, *out, *expect;
        double rtol, atol;
    } R[] = {
        {"--method iso_c --lambda 0.7 " TV, "tv_iso_c.msgpack", "expect.tv.iso_c", 1e-5, 1e-6},
        {"--method iso_cts --lambda 0.7 " TV, "tv_iso_cts.msgpack", "expect.tv.iso_cts", 1e-5, 1e-6},
        {"--method iso_cts --common-space-fraction 0.5 --lambda 0.7 " TV, "tv_iso_cts5.msgpack",
         "expect.tv.iso_cts_half", 1e-5, 1e-6},
        {"--method tsv_m --lambda 0.7 " TV, "tv_tsv_m.msgpack", "expect.tv.tsv_m", 1e-5, 1e-6},
        {"--method wudi " CGX " " TV, "tv_wudi.msgpack", "expect.tv.wudi", 1e-3, 1e-4},
        /* another start reaches the same minimiser (these systems are not singular) */
        {"--method wudi --init average " CGX " " TV, "tv_wudi_avg.msgpack", "expect.tv.wudi", 1e-3, 1e-4},
        {"--method model_stock " TV, "tv_ms.msgpack", "expect.tv.model_stock", 1e-5, 1e-6},
        {"--method slerp --lambda 0.3 --pretrained tvpre.msgpack --models tv0.msgpack,tv1.msgpack", "tv_slerp.msgpack",
         "expect.tv.slerp", 1e-5, 1e-6},
        {"--method model_stock " TVI, "tvi_ms.msgpack", "expect.tv.ia3_model_stock", 1e-5, 1e-6},
        {"--method slerp --lambda 0.6 --pretrained tvpre.msgpack --models tvi0.msgpack,tvi1.msgpack",
         "tvi_slerp.msgpack", "expect.tv.ia3_slerp", 1e-5, 1e-6},
    };
    for (size_t k = 0; k < sizeof R / sizeof R[0]; k++) {
        char args[600];
        snprintf(args, sizeof args, "%s -o %s", R[k].args, R[k].out);
        CHECK(run_merge(args) == 0, "merge %s failed", args);
        compare(R[k].out, R[k].expect, R[k].rtol, R[k].atol);
    }
    /* meta: wudi's default start is task arithmetic, iso_cts records its fraction */
    art_file *a = open_out("tv_wudi.msgpack"), *b = open_out("tv_iso_cts5.msgpack");
    if (a && b) {
        CHECK(!strcmp(val_get_str(a->meta, "init", ""), "task_arithmetic"), "wudi meta.init %s",
              val_get_str(a->meta, "init", "?"));
        CHECK(val_get(a->meta, "lambda") == NULL, "wudi records a lambda it ignores");
        CHECK(val_get(val_get(a->meta, "cg"), "lm_head.weight") != NULL, "wudi did not solve lm_head");
        CHECK(val_get(val_get(a->meta, "cg"), "shared.weight") == NULL, "wudi solved the embedding");
        CHECK(val_get_float(b->meta, "common_space_fraction", -1) == 0.5, "meta.common_space_fraction");
    }
    art_close(a), art_close(b);
}

/* N = 1, a zero task vector, rank-deficient task vectors, two identical
 * models: every method against the reference; model_stock and slerp refuse
 * one model in one line. wudi's systems are singular here (fewer task-vector
 * rows than inputs): CG from the task-arithmetic start stays in the range
 * of S and reaches the minimum-norm minimiser at the default tolerance. */
static void test_tv_edges(void) {
    static const struct {
        const char *method, *args;
        double rtol, atol;
    } M[] = {
        {"iso_c", "--lambda 0.7", 1e-5, 1e-6},   {"iso_cts", "--lambda 0.7", 1e-5, 1e-6},
        {"tsv_m", "--lambda 0.7", 1e-5, 1e-6},   {"wudi", "", 1e-3, 1e-4},
        {"model_stock", "", 1e-5, 1e-6},        {"slerp", "--lambda 0.3", 1e-5, 1e-6},
    };
    for (size_t c = 0; c < sizeof EDGES / sizeof EDGES[0]; c++)
        for (size_t k = 0; k < sizeof M / sizeof M[0]; k++) {
            int n = EDGES[c].n, slerp = !strcmp(M[k].method, "slerp");
            if (slerp && n > 2) n = 2;
            char models[256] = "", args[640], out[96], expect[96];
            for (int i = 0; i < n; i++)
                snprintf(models + strlen(models), sizeof models - strlen(models), "%s%s%d.msgpack", i ? "," : "",
                         EDGES[c].name, i);
            snprintf(out, sizeof out, "e_%s_%s.msgpack", EDGES[c].name, M[k].method);
            snprintf(args, sizeof args, "--method %s %s --pretrained edgepre.msgpack --models %s -o %s", M[k].method,
                     M[k].args, models, out);
            int rc = run_merge(args);
            if (n < 2 && (slerp || !strcmp(M[k].method, "model_stock"))) {
                char *e = stderr_text();
                const char *nl = strchr(e, '\n');
                CHECK(rc == 1 && strstr(e, M[k].method) && strstr(e, "models") && nl && !nl[1],
                      "%s of one model: exit %d, stderr '%s' (want one line)", M[k].method, rc, e);
                free(e);
                continue;
            }
            CHECK(rc == 0, "%s on case %s failed", M[k].method, EDGES[c].name);
            snprintf(expect, sizeof expect, "expect.%s.%s", EDGES[c].name, M[k].method);
            compare(out, expect, M[k].rtol, M[k].atol);
        }
    /* two identical models: model_stock, wudi and slerp give the model back */
    const char *same[] = {"e_same_model_stock.msgpack", "e_same_wudi.msgpack", "e_same_slerp.msgpack"};
    for (int j = 0; j < 3; j++) {
        art_file *a = open_out(same[j]);
        for (size_t i = 0; a && i < a->n_tensors; i++) {
            const art_tensor *t = &a->tensors[i];
            float *x = art_tensor_f32(t);
            const ftensor *m = fx_find("same.model.0", t->name);
            char label[200];
            snprintf(label, sizeof label, "%s = the model: %s", same[j], t->name);
            if (m) t_close(label, x, m->x, m->n, j == 1 ? 1e-3 : 1e-6, j == 1 ? 1e-4 : 1e-6);
            free(x);
        }
        art_close(a);
    }
}

/* ------------------------------------------------------------ regmean_pp
 * (tests/reference/merge_pp_fixture.txt, merge_ref_pp.py: RegMean++ of a
 * tiny T5 in float64, layer by layer, through the same examples) */

static t5_config pp_config(void) {
    const char *f[] = {"vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers", "num_decoder_layers",
                       "relative_attention_num_buckets", "relative_attention_max_distance"};
    int v[9];
    for (int i = 0; i < 9; i++) {
        const ftensor *t = fx_find("pp.config", f[i]);
        v[i] = t ? (int)t->x[0] : 0;
    }
    const ftensor *eps = fx_find("pp.config", "layer_norm_epsilon");
    return (t5_config){.vocab_size = v[0], .d_model = v[1], .d_kv = v[2], .d_ff = v[3], .num_heads = v[4],
                       .num_layers = v[5], .num_decoder_layers = v[6], .num_buckets = v[7], .max_distance = v[8],
                       .eps = eps ? eps->x[0] : 0};
}

/* A real model artifact (full config) from fixture group `group`. */
static void write_pp_model(const char *file, const char *group, const char *key) {
    t5_config c = pp_config();
    t5_model *m = t5_new(&c, 0, 0);
    for (int j = 0; j < m->n_tensors; j++) {
        const ftensor *t = fx_find(group, m->tensors[j].name);
        CHECK(t && (size_t)t->n == m->tensors[j].numel, "fixture %s lacks %s", group, m->tensors[j].name);
        if (t) memcpy(m->params + m->tensors[j].offset, t->x, sizeof(float) * t->n);
    }
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    CHECK(t5_save_model(m, p, key, NULL) == 0, "%s", mc_error());
    t5_free(m);
}

/* The fixture tensor group.name as n_out integers (+ shift), or NULL. */
static void *fx_ints(const char *group, const char *name, int wide, int shift, int64_t *n_out) {
    const ftensor *t = fx_find(group, name);
    CHECK(t != NULL, "fixture %s lacks %s", group, name);
    if (!t) return NULL;
    void *v = mallocCheck((wide ? 8 : 4) * (size_t)t->n);
    for (long j = 0; j < t->n; j++) {
        if (wide) ((int64_t *)v)[j] = (int64_t)t->x[j];
        else ((int32_t *)v)[j] = (int32_t)t->x[j] + shift;
    }
    *n_out = t->n;
    return v;
}

/* A tokens artifact from fixture group `group`; vocab_shift is added to
 * every input id. */
static void write_pp_tokens(const char *file, const char *group, int vocab_shift) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    int64_t n_in, n_io, n_ch, n_co, n_ex, n_lb;
    int32_t *in = fx_ints(group, "input_ids", 0, vocab_shift, &n_in), *ch = fx_ints(group, "choice_ids", 0, 0, &n_ch);
    int64_t *io = fx_ints(group, "input_offsets", 1, 0, &n_io), *co = fx_ints(group, "choice_offsets", 1, 0, &n_co);
    int64_t *ex = fx_ints(group, "example_choices", 1, 0, &n_ex);
    int32_t *lb = fx_ints(group, "label", 0, 0, &n_lb);
    mc_val *meta = val_map();
    val_set_str(meta, "task", group);
    val_set_str(meta, "split", "train");
    art_writer *w = art_writer_open(p, "tokens", "", meta, 6);
    val_free(meta);
    int rc = in && ch && io && co && ex && lb && w ? 0 : -1;
    if (!rc) rc = art_writer_ragged(w, "input_ids", ART_I32, in, n_in, "input_offsets", io, n_io - 1);
    if (!rc) rc = art_writer_ragged(w, "choice_ids", ART_I32, ch, n_ch, "choice_offsets", co, n_co - 1);
    if (!rc) rc = art_writer_rows(w, ex, lb, n_lb);
    CHECK(rc == 0 && art_writer_close(w) == 0, "%s: %s", file, mc_error());
    free(in), free(ch), free(io), free(co), free(ex), free(lb);
}

#define PP "--pretrained pp_pre.msgpack --models pp0.msgpack,pp1.msgpack,pp2.msgpack"
#define PPD "--data ppt0.msgpack,ppt1.msgpack,ppt2.msgpack"

static void test_regmean_pp(void) {
    write_pp_model("pp_pre.msgpack", "pp.pre", PRE_KEY);
    const char *keys[3] = {"77777777777777777777777777777777", "88888888888888888888888888888888",
                           "99999999999999999999999999999999"};
    for (int i = 0; i < 3; i++) {
        char f[64], g[64];
        snprintf(f, sizeof f, "pp%d.msgpack", i), snprintf(g, sizeof g, "pp.model.%d", i);
        write_pp_model(f, g, keys[i]);
        snprintf(f, sizeof f, "ppt%d.msgpack", i), snprintf(g, sizeof g, "pp.tok.%d", i);
        write_pp_tokens(f, g, 0);
    }
    write_pp_tokens("ppt_big.msgpack", "pp.tok.0", 1000);
    static const struct {
        const char *args, *out, *expect;
    } R[] = {
        {"--method regmean_pp " PP " " PPD, "pp_l1.msgpack", "pp.expect.l1"},
        {"--method regmean_pp --lambda 0.6 " PP " " PPD, "pp_l06.msgpack", "pp.expect.l06"},
        {"--method regmean_pp --lambda 0.6 --examples 6 " PP " " PPD, "pp_e6.msgpack", "pp.expect.e6"},
    };
    for (size_t k = 0; k < sizeof R / sizeof R[0]; k++) {
        char args[640];
        snprintf(args, sizeof args, "%s -o %s", R[k].args, R[k].out);
        CHECK(run_merge(args) == 0, "merge %s failed", args);
        compare(R[k].out, R[k].expect, 2e-4, 2e-5);
    }
    /* the same inputs, the same bytes; the key names the data */
    CHECK(run_merge("--method regmean_pp " PP " " PPD " -o pp_l1b.msgpack") == 0, "second run failed");
    char a[400], b[400];
    snprintf(a, sizeof a, "%s/pp_l1.msgpack", dir), snprintf(b, sizeof b, "%s/pp_l1b.msgpack", dir);
    unsigned char *x, *y;
    size_t nx, ny;
    CHECK(mc_read_file(a, &x, &nx) == 0 && mc_read_file(b, &y, &ny) == 0 && nx == ny && !memcmp(x, y, nx),
          "regmean_pp is not deterministic");
    free(x), free(y);
    art_file *o = open_out("pp_l1.msgpack");
    const mc_val *d = o ? val_path(o->meta, "inputs.data") : NULL;
    CHECK(d && d->type == VAL_ARRAY && d->v.c.n == 3, "meta.inputs.data lists the three tokens artifacts");
    art_close(o);
    /* one model, or two identical ones: that model back (lambda 0.6: few
     * tokens make Grams nearly singular, and the diagonal keeps the
     * system well conditioned) */
    const char *edge[] = {"--models pp0.msgpack --data ppt0.msgpack",
                          "--models pp0.msgpack,pp0.msgpack --data ppt0.msgpack,ppt1.msgpack"};
    for (int e = 0; e < 2; e++) {
        char args[400];
        snprintf(args, sizeof args, "--method regmean_pp --lambda 0.6 --pretrained pp_pre.msgpack %s -o pp_edge%d.msgpack", edge[e], e);
        CHECK(run_merge(args) == 0, "merge %s failed", args);
        snprintf(args, sizeof args, "pp_edge%d.msgpack", e);
        compare(args, "pp.model.0", 1e-4, 1e-5);
    }
    /* bad --data: one line naming it, nothing written */
    static const struct {
        const char *args, *word;
    } bad[] = {
        {"--method regmean_pp " PP, "--data"},
        {"--method regmean_pp " PP " --data ppt0.msgpack,ppt1.msgpack", "--data"},
        {"--method regmean_pp " PP " --data ppt0.msgpack,ppt1.msgpack,pp2.msgpack", "pp2.msgpack"},
        {"--method regmean_pp " PP " --data ppt0.msgpack,ppt1.msgpack,ppt_big.msgpack", "vocabulary"},
        {"--method regmean_pp " PP " " PPD " --examples 0", "--examples"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char args[640];
        snprintf(args, sizeof args, "%s -o pp_bad.msgpack", bad[i].args);
        expect_refusal(args, bad[i].word);
    }
    snprintf(a, sizeof a, "%s/pp_bad.msgpack", dir);
    CHECK(access(a, F_OK) != 0, "a failed merge left %s", a);
}


/* ------------------------------------------------------------ --rules
 * (tests/reference/merge_rules_fixture.txt, merge_ref_rules.py): per-model
 * weights, layer gradients and filters against the reference, and the
 * refusals. */

#define RULES_MODELS "--pretrained rpre.msgpack --models r0.msgpack,r1.msgpack,r2.msgpack"

static void test_rules(void) {
    const char *keys[3] = {"77777777777777777777777777777777", "88888888888888888888888888888888",
                           "99999999999999999999999999999999"};
    write_group("rpre.msgpack", "rules.pre", "model", PRE_KEY, NULL, 1, NULL, -1);
    for (int i = 0; i < 3; i++) {
        write_nth("rules.model.%d", "r%d.msgpack", i, "model", keys[i], NULL);
        write_nth("rules.fisher.%d", "rf%d.msgpack", i, "fisher_diag", "", NULL);
    }
    FILE *f = fopen("tests/reference/merge_rules_fixture.txt", "r");
    CHECK(f != NULL, "cannot read tests/reference/merge_rules_fixture.txt");
    if (!f) return;
    char line[1024];
    int cases = 0;
    while (fgets(line, sizeof line, f)) {
        char method[64], rules[512];
        int used = 0;
        if (sscanf(line, "# case %63s %511s %n", method, rules, &used) != 2) continue;
        char *flags = line + used;
        flags[strcspn(flags, "\n")] = 0;
        char args[2048], out[96], expect[96];
        snprintf(out, sizeof out, "rules_%s.msgpack", method);
        snprintf(expect, sizeof expect, "rules.expect.%s", method);
        int two = !strcmp(method, "slerp");
        snprintf(args, sizeof args, "--method %s --rules %s %s %s %s -o %s", method, rules, flags,
                 two ? "--pretrained rpre.msgpack --models r0.msgpack,r1.msgpack" : RULES_MODELS,
                 !strcmp(method, "fisher") ? "--fisher rf0.msgpack,rf1.msgpack,rf2.msgpack" : "", out);
        CHECK(run_merge(args) == 0, "merge %s failed: %s", args, stderr_text());
        compare(out, expect, 1e-5, 1e-6);
        /* the rules are in the meta as given */
        art_file *a = open_out(out);
        if (a) CHECK(!strcmp(val_get_str(a->meta, "rules", ""), rules), "%s: meta.rules", method);
        art_close(a);
        cases++;
    }
    fclose(f);
    CHECK(cases == 9, "the fixture has %d cases, want 9", cases);

    /* without --rules nothing changes: the same bytes as equal weights of 1 */
    CHECK(run_merge("--method task_arithmetic --lambda 0.7 " RULES_MODELS " -o rta0.msgpack") == 0, "ta");
    CHECK(run_merge("--method task_arithmetic --lambda 0.7 --rules weight:1 " RULES_MODELS " -o rta1.msgpack") == 0,
          "ta weight 1");
    art_file *a = open_out("rta0.msgpack"), *b = open_out("rta1.msgpack");
    if (a && b)
        for (size_t j = 0; j < a->n_tensors; j++) {
            float *x = art_tensor_f32(&a->tensors[j]), *y = art_tensor_f32(&b->tensors[j]);
            CHECK(!memcmp(x, y, sizeof(float) * (size_t)a->tensors[j].numel), "weight 1 changed %s",
                  a->tensors[j].name);
            free(x), free(y);
        }
    art_close(a), art_close(b);

    /* refusals, one line each */
    static const struct {
        const char *args, *word;
    } BAD[] = {
        {"--method regmean --rules weight.1:2", "--rules"},
        {"--method task_arithmetic --rules gamma:0.1", "gamma"},
        {"--method task_arithmetic --rules weight.4:1", "1 to 3"},
        {"--method task_arithmetic --rules lambda.2:1", "lambda"},
        {"--method task_arithmetic --rules weight:x", "not a finite number"},
        {"--method task_arithmetic --rules weight:1,", "not a finite number"},
        {"--method task_arithmetic --rules weight", "no ':'"},
        {"--method task_arithmetic --rules scale:1", "not a parameter"},
        {"--method task_arithmetic --rules weight:1//lambda:1", "empty rule"},
        {"--method task_arithmetic --rules weight@:1", "empty filter"},
        {"--method task_arithmetic --rules weight@q*:1", "filter"},
        {"--method ties --rules density.1@q:0.5", "one threshold per model"},
        {"--method ties --rules density:0.2,0.5", "one threshold per model"},
        {"--method dare_linear --rules density:1.5", "not in (0, 1]"},
        {"--method average --rules weight.1:1/weight.2:-1/weight.3:0", "sum to 0"},
        {"--method task_arithmetic --rules weight:1 --rules weight:2", "--rules"},
    };
    for (size_t k = 0; k < sizeof BAD / sizeof BAD[0]; k++) {
        char args[600];
        snprintf(args, sizeof args, "%s %s%s -o rbad.msgpack", BAD[k].args, RULES_MODELS,
                 strstr(BAD[k].args, "regmean") ? " --gram rf0.msgpack,rf1.msgpack,rf2.msgpack" : "");
        expect_refusal(args, BAD[k].word);
        char p[400];
        snprintf(p, sizeof p, "%s/rbad.msgpack", dir);
        CHECK(access(p, F_OK) != 0, "a refused merge left %s", p);
    }
    CHECK(run_merge("--method slerp --rules lambda@encoder:0,2 --pretrained rpre.msgpack "
                    "--models r0.msgpack,r1.msgpack -o rbad.msgpack") == 1, "slerp t 2 accepted");
}

int main(void) {
    t_tmpdir(dir, sizeof dir, "test_merge");
    if (!getcwd(root, sizeof root)) die("getcwd failed");
    be_init(1);
    RUN(test_scale_offdiag);
    RUN(test_select_matches_sort);
    RUN(test_ties_rank);
    RUN(test_dare_mask);
    RUN(test_breadcrumbs_hand);
    RUN(test_kfac_apply);
    RUN(test_dsyevd);
    RUN(test_kron_singular);
    RUN(test_kron_stalled);
    RUN(test_cg_breakdown_reverts);
    RUN(test_cg_rmul_vs_cholesky);
    RUN(test_cg_scale_invariant);
    RUN(test_spd_ridge);
    RUN(test_svd_helpers);
    RUN(test_svd_fallback);
    RUN(test_wudi_system);
    RUN(test_model_stock_ratio);
    RUN(test_slerp_hand);
    if (load_fixture("tests/reference/merge_fixture.txt") < 0) {
        printf("FAIL cannot read tests/reference/merge_fixture.txt (run from the repository root)\n");
        return 1;
    }
    if (access("build/bin/merge", X_OK) != 0) {
        printf("FAIL build/bin/merge is missing: run make first\n");
        return 1;
    }
    if (load_fixture("tests/reference/merge_tv_fixture.txt") < 0) {
        printf("FAIL cannot read tests/reference/merge_tv_fixture.txt (run from the repository root)\n");
        return 1;
    }
    if (load_fixture("tests/reference/merge_pp_fixture.txt") < 0) {
        printf("FAIL cannot read tests/reference/merge_pp_fixture.txt (run from the repository root)\n");
        return 1;
    }
    if (load_fixture("tests/reference/merge_rules_fixture.txt") < 0) {
        printf("FAIL cannot read tests/reference/merge_rules_fixture.txt (run from the repository root)\n");
        return 1;
    }
    setup_artifacts();
    setup_tv_artifacts();
    RUN(test_closed_forms);
    RUN(test_cg_converges);
    RUN(test_ia3);
    RUN(test_ties_hand);
    RUN(test_dare);
    RUN(test_regmean_singular);
    RUN(test_small_statistics);
    RUN(test_meta_and_determinism);
    RUN(test_bad_inputs);
    RUN(test_tv_methods);
    RUN(test_tv_edges);
    RUN(test_regmean_pp);
    RUN(test_rules);
    if (t_fail) return t_done(); /* the files stay for a look */
    return t_done_rm(dir);
}
