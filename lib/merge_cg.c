/* merge_cg.c - linear operators, SPD solves and conjugate gradient for the
 * merge stage (see merge.h for the conventions). */
#include "merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"

/* ------------------------------------------------------------ SPD solves */

/* Cholesky-factor S in place, adding the smallest ridge r I of the ladder
 * in merge.h that makes it positive definite; returns r (0 if none was
 * needed) or -1. */
static double spd_factor(int n, double *S) {
    size_t nn = (size_t)n * n;
    double *S0 = mallocCheck(sizeof(double) * (nn ? nn : 1));
    memcpy(S0, S, sizeof(double) * nn);
    double mean_diag = 0;
    for (int i = 0; i < n; i++) mean_diag += S0[(size_t)i * n + i];
    mean_diag /= n > 0 ? n : 1;
    if (!(mean_diag > 0) || !isfinite(mean_diag)) mean_diag = 1;
    double ridge = 0;
    int ok = be_dpotrf(n, S, n) == 0;
    for (double f = 1e-6; !ok && f <= 1.0 + 1e-12; f *= 10) {
        ridge = f * mean_diag;
        memcpy(S, S0, sizeof(double) * nn);
        for (int i = 0; i < n; i++) S[(size_t)i * n + i] += ridge;
        ok = be_dpotrf(n, S, n) == 0;
    }
    free(S0);
    return ok ? ridge : -1;
}

/* Factor S (spd_factor) and add ridge * prior to the right-hand sides
 * (nb values) when a ridge was needed. The ridge, or -1. */
static double spd_factor_rhs(int n, double *S, double *B, const double *prior, size_t nb) {
    double ridge = spd_factor(n, S);
    if (ridge > 0 && prior)
        for (size_t j = 0; j < nb; j++) B[j] += ridge * prior[j];
    return ridge;
}

double mrg_spd_solve(int n, int nrhs, double *S, double *B, const double *prior) {
    double ridge = spd_factor_rhs(n, S, B, prior, (size_t)n * nrhs);
    if (ridge >= 0 && nrhs > 0) be_dpotrs(n, nrhs, S, n, B, nrhs);
    return ridge;
}

double mrg_spd_solve_t(int n, int nrhs, double *S, double *Bt, const double *prior_t) {
    double ridge = spd_factor_rhs(n, S, Bt, prior_t, (size_t)n * nrhs);
    if (ridge >= 0) be_dpotrs_t(n, nrhs, S, n, Bt, n);
    return ridge;
}

double mrg_regmean_closed(int rows, int k, const float *S, const float *B, const float *prior, float *out) {
    size_t kk = (size_t)k * k, n = (size_t)rows * k;
    double *Sd = mallocCheck(sizeof(double) * kk);
    double *Bd = mallocCheck(sizeof(double) * n);
    double *Pd = mallocCheck(sizeof(double) * n);
    for (size_t e = 0; e < kk; e++) Sd[e] = S[e];
    for (size_t e = 0; e < n; e++) Bd[e] = B[e], Pd[e] = prior[e];
    double ridge = mrg_spd_solve_t(k, rows, Sd, Bd, Pd);
    if (ridge >= 0)
        for (size_t e = 0; e < n; e++) out[e] = (float)Bd[e];
    free(Sd);
    free(Bd);
    free(Pd);
    return ridge;
}

int mrg_check_psd(const float *M, int n, double tol) {
    double s = 0;
    for (int i = 0; i < n; i++) s = fmax(s, fabs((double)M[(size_t)i * n + i]));
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double a = M[(size_t)i * n + j], b = M[(size_t)j * n + i];
            if (fabs(a - b) > tol * s)
                return mc_fail("not symmetric: entry [%d,%d] is %g but [%d,%d] is %g", i, j, a, j, i, b);
        }
    for (int i = 0; i < n; i++)
        if (M[(size_t)i * n + i] < -tol * s)
            return mc_fail("not positive semi-definite: diagonal entry [%d,%d] is %g", i, i, M[(size_t)i * n + i]);
    if (s == 0) { /* a zero diagonal: PSD only if all is zero */
        for (size_t e = 0; e < (size_t)n * n; e++)
            if (M[e] != 0)
                return mc_fail("not positive semi-definite: its diagonal is zero but entry [%zu,%zu] is %g",
                               e / (size_t)n, e % (size_t)n, M[e]);
        return 0;
    }
    /* least eigenvalue >= -tol s  <=>  (M + M^T)/2 + tol s I is positive
     * definite (up to rounding), which Cholesky in double tells */
    double *A = mallocCheck(sizeof(double) * (size_t)n * n);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            A[(size_t)i * n + j] = 0.5 * ((double)M[(size_t)i * n + j] + M[(size_t)j * n + i]) + (i == j ? tol * s : 0);
    int bad = be_dpotrf(n, A, n);
    free(A);
    if (bad)
        return mc_fail("not positive semi-definite: an eigenvalue is below -%g times its largest diagonal entry "
                       "%g (Cholesky fails at row %d)", tol, s, bad);
    return 0;
}

/* ------------------------------------------------------------ operators */

static void apply_identity(const mrg_op *op, const float *x, float *y) {
    memcpy(y, x, sizeof(float) * (size_t)op->n);
}

void mrg_op_identity(mrg_op *op, long n) {
    op->n = n;
    op->apply = apply_identity;
    op->ctx = NULL;
}

static void apply_diag(const mrg_op *op, const float *x, float *y) {
    const float *d = op->ctx;
    for (long i = 0; i < op->n; i++) y[i] = d[i] * x[i];
}

void mrg_op_diag(mrg_op *op, long n, const float *d) {
    op->n = n;
    op->apply = apply_diag;
    op->ctx = (void *)d;
}

static void apply_rmul(const mrg_op *op, const float *x, float *y) {
    const mrg_rmul *c = op->ctx;
    /* Y (rows x k) = X (rows x k) S (k x k) */
    be_gemm(0, 0, c->rows, c->k, c->k, 1.0f, x, c->k, c->S, c->k, 0.0f, y, c->k);
}

void mrg_op_rmul(mrg_op *op, mrg_rmul *ctx, int rows, int k, const float *S) {
    ctx->rows = rows;
    ctx->k = k;
    ctx->S = S;
    op->n = (long)rows * k;
    op->apply = apply_rmul;
    op->ctx = ctx;
}

/* ------------------------------------------------------------ K-FAC */

void mrg_kfac_init(mrg_kfac *K, int N, int out, int in) {
    K->N = N;
    K->out = out;
    K->in = in;
    K->Acat = mallocCheck(sizeof(float) * (size_t)in * N * in);
    K->Gcat = mallocCheck(sizeof(float) * (size_t)out * N * out);
    K->Q = mallocCheck(sizeof(float) * (size_t)out * N * in);
    K->Qs = mallocCheck(sizeof(float) * (size_t)out * N * in);
}

void mrg_kfac_set(mrg_kfac *K, int i, const float *A, const float *G, float lambda) {
    int N = K->N, in = K->in, out = K->out;
    /* Row r of A goes to columns [i*in, (i+1)*in) of row r of Acat. */
    for (int r = 0; r < in; r++) {
        float *dst = K->Acat + (size_t)r * N * in + (size_t)i * in;
        const float *src = A + (size_t)r * in;
        for (int c = 0; c < in; c++) dst[c] = r == c ? src[c] : lambda * src[c];
    }
    for (int r = 0; r < out; r++) {
        float *dst = K->Gcat + (size_t)r * N * out + (size_t)i * out;
        const float *src = G + (size_t)r * out;
        for (int c = 0; c < out; c++) dst[c] = r == c ? src[c] : lambda * src[c];
    }
}

void mrg_kfac_free(mrg_kfac *K) {
    free(K->Acat), free(K->Gcat), free(K->Q), free(K->Qs);
    memset(K, 0, sizeof *K);
}

double mrg_kfac_flops(const mrg_kfac *K) {
    return 2.0 * K->N * (double)K->out * K->in * ((double)K->in + K->out);
}

/* Q's column block i (out x in, row stride N*in) -> rows [i*out,(i+1)*out) of Qs. */
static void kfac_stack(const mrg_kfac *K) {
    int N = K->N, out = K->out, in = K->in;
    for (int i = 0; i < N; i++)
        for (int r = 0; r < out; r++)
            memcpy(K->Qs + ((size_t)i * out + r) * in, K->Q + (size_t)r * N * in + (size_t)i * in,
                   sizeof(float) * (size_t)in);
}

static void apply_kfac(const mrg_op *op, const float *W, float *Y) {
    const mrg_kfac *K = op->ctx;
    int N = K->N, out = K->out, in = K->in;
    /* Q (out x N*in) = W (out x in) Acat (in x N*in) */
    be_gemm(0, 0, out, N * in, in, 1.0f, W, in, K->Acat, N * in, 0.0f, K->Q, N * in);
    kfac_stack(K);
    /* Y (out x in) = Gcat (out x N*out) Qs (N*out x in) */
    be_gemm(0, 0, out, in, N * out, 1.0f, K->Gcat, N * out, K->Qs, in, 0.0f, Y, in);
}

void mrg_op_kfac(mrg_op *op, mrg_kfac *K) {
    op->n = (long)K->out * K->in;
    op->apply = apply_kfac;
    op->ctx = K;
}

void mrg_kfac_apply_naive(const mrg_kfac *K, const float *W, float *Y) {
    int N = K->N, out = K->out, in = K->in;
    float *T = mallocCheck(sizeof(float) * (size_t)out * in);
    for (int i = 0; i < N; i++) {
        /* T = G_i W; Y += T A_i */
        be_gemm(0, 0, out, in, out, 1.0f, K->Gcat + (size_t)i * out, N * out, W, in, 0.0f, T, in);
        be_gemm(0, 0, out, in, in, 1.0f, T, in, K->Acat + (size_t)i * in, N * in, i ? 1.0f : 0.0f,
                Y, in);
    }
    free(T);
}

void mrg_kfac_rhs(const mrg_kfac *K, const float *const *W, float *b) {
    int N = K->N, out = K->out, in = K->in;
    /* Q block i = W_i A_i, then b = Gcat Qs as in apply_kfac. */
    for (int i = 0; i < N; i++)
        be_gemm(0, 0, out, in, in, 1.0f, W[i], in, K->Acat + (size_t)i * in, N * in, 0.0f,
                K->Q + (size_t)i * in, N * in);
    kfac_stack(K);
    be_gemm(0, 0, out, in, N * out, 1.0f, K->Gcat, N * out, K->Qs, in, 0.0f, b, in);
}

/* ------------------------------------------------------------ WUDI */

int mrg_wudi_system(int N, int out, int in, const float *const *T, float *S, float *B, float *work) {
    size_t nn = (size_t)in * in, nb = (size_t)out * in;
    memset(S, 0, sizeof(float) * nn);
    memset(B, 0, sizeof(float) * nb);
    int used = 0;
    for (int i = 0; i < N; i++) {
        double sq = 0;
        for (size_t e = 0; e < nb; e++) sq += (double)T[i][e] * T[i][e];
        if (!(sq > 0)) continue;
        float w = (float)(1.0 / sq);
        be_syrk(1, in, out, 1.0f, T[i], in, 0.0f, work, in);                   /* T_i^T T_i */
        for (size_t e = 0; e < nn; e++) S[e] += w * work[e];
        be_gemm(0, 0, out, in, in, w, T[i], in, work, in, 1.0f, B, in);      /* B += w T_i (T_i^T T_i) */
        used++;
    }
    return used;
}

/* ------------------------------------------------------------ Kronecker preconditioner */

/* The preconditioner's factor for the symmetric PSD n x n mean `M`
 * (double, overwritten) as float: V f(L) V^T from M's eigendecomposition,
 * f(l) = 1/l for l >= MRG_KRON_RCOND lmax and 0 below.
 *
 * Grams of few or repetitive examples are of low rank or nearly so (the
 * first decoder layer may see a handful of distinct inputs). An inverse
 * with a tiny ridge is not positive definite once rounded to float and
 * multiplies the rounding noise of the residual in the (nearly) null
 * directions by up to 1/ridge^2: preconditioned CG broke down on 40 of 72
 * tensors of two t5-mini models and, where it did not, filled the merged
 * weights with values 10^5 times their size along directions no input
 * excites. The truncated pseudo-inverse leaves those directions at the
 * initial point. Returns the number of eigenvalues kept, or -1 if the
 * eigensolver failed. */
static int psd_pinv(int n, double *M, float *inv) {
    double *w = mallocCheck(sizeof(double) * (size_t)(n > 0 ? n : 1));
    if (be_dsyevd(n, M, n, w) != 0) {
        free(w);
        return -1;
    }
    double lmax = n > 0 && w[n - 1] > 0 && isfinite(w[n - 1]) ? w[n - 1] : 0;
    double cut = MRG_KRON_RCOND * lmax;
    /* rows of M are the eigenvectors: inv = M^T diag(f) M */
    double *S = mallocCheck(sizeof(double) * (size_t)n * n);
    int kept = 0;
    for (int j = 0; j < n; j++) {
        double f = lmax > 0 && w[j] >= cut ? 1.0 / w[j] : 0;
        kept += f > 0;
        for (int c = 0; c < n; c++) S[(size_t)j * n + c] = f * M[(size_t)j * n + c];
    }
    double *I = mallocCheck(sizeof(double) * (size_t)n * n);
    be_dgemm(1, 0, n, n, n, 1.0, M, n, S, n, 0.0, I, n);
    for (size_t j = 0; j < (size_t)n * n; j++) inv[j] = (float)I[j];
    free(I);
    free(S);
    free(w);
    return kept;
}

int mrg_kron_init(mrg_kron *P, const mrg_kfac *K) {
    int N = K->N, out = K->out, in = K->in;
    memset(P, 0, sizeof *P);
    P->N = N;
    P->out = out;
    P->in = in;
    double *Gm = callocCheck((size_t)out * out, sizeof(double));
    double *Am = callocCheck((size_t)in * in, sizeof(double));
    for (int i = 0; i < N; i++) {
        for (int r = 0; r < out; r++)
            for (int c = 0; c < out; c++)
                Gm[(size_t)r * out + c] += K->Gcat[(size_t)r * N * out + (size_t)i * out + c];
        for (int r = 0; r < in; r++)
            for (int c = 0; c < in; c++)
                Am[(size_t)r * in + c] += K->Acat[(size_t)r * N * in + (size_t)i * in + c];
    }
    for (size_t j = 0; j < (size_t)out * out; j++) Gm[j] /= N;
    for (size_t j = 0; j < (size_t)in * in; j++) Am[j] /= N;
    P->Ginv = mallocCheck(sizeof(float) * (size_t)out * out);
    P->Ainv = mallocCheck(sizeof(float) * (size_t)in * in);
    P->T = mallocCheck(sizeof(float) * (size_t)out * in);
    P->rank_g = psd_pinv(out, Gm, P->Ginv);
    P->rank_a = psd_pinv(in, Am, P->Ainv);
    free(Gm);
    free(Am);
    return P->rank_g < 0 || P->rank_a < 0 ? -1 : 0;
}

void mrg_kron_apply(const mrg_kron *P, const float *R, float *Z) {
    int out = P->out, in = P->in;
    /* T = Gbar^-1 R (out x in); Z = T Abar^-1 / N */
    be_gemm(0, 0, out, in, out, 1.0f, P->Ginv, out, R, in, 0.0f, P->T, in);
    be_gemm(0, 0, out, in, in, 1.0f / P->N, P->T, in, P->Ainv, in, 0.0f, Z, in);
}

void mrg_kron_free(mrg_kron *P) {
    free(P->Ginv);
    free(P->Ainv);
    free(P->T);
    memset(P, 0, sizeof *P);
}

/* ------------------------------------------------------------ CG */

static double dot(long n, const float *x, const float *y) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)x[i] * y[i];
    return s;
}

static double residual(const mrg_op *op, const float *b, const float *x, float *r) {
    op->apply(op, x, r);
    double s = 0;
    for (long i = 0; i < op->n; i++) {
        r[i] = b[i] - r[i];
        s += (double)r[i] * r[i];
    }
    return sqrt(s);
}

void mrg_cg(const mrg_op *op, const float *b, float *x, int maxit, double tol, double target,
            mrg_precond_fn pc, const void *pc_ctx, mrg_cg_result *res) {
    long n = op->n;
    double t0 = mc_now();
    float *r = mallocCheck(sizeof(float) * (size_t)n);
    float *p = mallocCheck(sizeof(float) * (size_t)n);
    float *q = mallocCheck(sizeof(float) * (size_t)n);
    float *z = pc ? mallocCheck(sizeof(float) * (size_t)n) : r;
    float *x0 = mallocCheck(sizeof(float) * (size_t)n);
    memcpy(x0, x, sizeof(float) * (size_t)n);

    memset(res, 0, sizeof *res);
    res->b_norm = sqrt(dot(n, b, b));
    double rnorm = residual(op, b, x, r);
    res->initial_residual = rnorm;
    double stop = tol * res->b_norm;
    if (target > 0 && target > stop) stop = target;
    res->status = MRG_CG_MAXITER;

    if (pc) pc(pc_ctx, r, z);
    memcpy(p, z, sizeof(float) * (size_t)n);
    double rz = pc ? dot(n, r, z) : rnorm * rnorm;
    int it = 0;
    for (; it < maxit; it++) {
        if (rnorm <= stop || rnorm == 0) {
            res->status = MRG_CG_CONVERGED;
            break;
        }
        op->apply(op, p, q);
        double pq = dot(n, p, q);
        double alpha = rz / pq;
        if (!(pq > 0) || !isfinite(alpha)) {
            res->status = MRG_CG_BREAKDOWN;
            break;
        }
        float a = (float)alpha;
        double rr = 0;
        for (long i = 0; i < n; i++) {
            x[i] += a * p[i];
            r[i] -= a * q[i];
            rr += (double)r[i] * r[i];
        }
        rnorm = sqrt(rr);
        double rz_new;
        if (pc) {
            pc(pc_ctx, r, z);
            rz_new = dot(n, r, z);
        } else {
            rz_new = rr;
        }
        double beta = rz_new / rz;
        /* Preconditioned, once what is left of r lies where the truncated
         * preconditioner is 0, z = M^+ r is rounding noise and r^T z falls
         * to about 1e-7 |r||z| (either sign); while CG makes progress the
         * cosine of r and z stays above 1/cond(M) (>= 1e-6 here). */
        double small = pc ? 1e-5 * rnorm * sqrt(dot(n, z, z)) : 0;
        if (!isfinite(beta) || !(rz_new > small)) {
            /* r (or M^-1 r) vanished: x is the solution to working
             * precision; or, preconditioned with r still above the
             * tolerance, the rest of r is where the preconditioner is 0. */
            it++;
            res->status = !isfinite(beta) || rz_new < -small ? MRG_CG_BREAKDOWN
                          : rnorm <= stop || !pc              ? MRG_CG_CONVERGED
                                                              : MRG_CG_STALLED;
            break;
        }
        float be = (float)beta;
        for (long i = 0; i < n; i++) p[i] = z[i] + be * p[i];
        rz = rz_new;
    }
    if (it == maxit && res->status == MRG_CG_MAXITER && (rnorm <= stop || rnorm == 0))
        res->status = MRG_CG_CONVERGED;
    res->iterations = it;
    res->final_residual = residual(op, b, x, q);
    if (res->status == MRG_CG_BREAKDOWN && !(res->final_residual <= res->initial_residual)) {
        memcpy(x, x0, sizeof(float) * (size_t)n);
        res->final_residual = res->initial_residual;
        res->reverted = 1;
    }
    res->seconds = mc_now() - t0;
    free(r);
    free(p);
    free(q);
    free(x0);
    if (pc) free(z);
}
