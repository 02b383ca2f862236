/* merge_svd.c - the SVD methods of the merge stage: Iso-C, Iso-CTS, TSV-M
 * (merge.h says what each computes). Every factorisation and product is
 * in double; the task vectors come in and the merged one goes out as float. */
#include "merge.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"

/* A thin SVD: U m x r, S r, Vt r x n (row-major), r = min(m, n). */
typedef struct {
    int m, n, r;
    double *U, *S, *Vt;
} svd_t;

static void svd_free(svd_t *d) {
    free(d->U);
    free(d->S);
    free(d->Vt);
    memset(d, 0, sizeof *d);
}

/* d <- the SVD of A (m x n, destroyed), small components dropped. 0 or -1. */
static int svd_of(svd_t *d, int m, int n, double *A) {
    d->m = m, d->n = n, d->r = m < n ? m : n;
    d->U = mallocCheck(sizeof(double) * (size_t)m * d->r);
    d->S = mallocCheck(sizeof(double) * (size_t)d->r);
    d->Vt = mallocCheck(sizeof(double) * (size_t)d->r * n);
    if (mrg_svd(m, n, A, d->U, d->S, d->Vt) < 0) {
        svd_free(d);
        return -1;
    }
    return 0;
}

/* Component j of d -> component c of the concatenation (U m x K, S K, Vt K x n). */
static void put_component(const svd_t *d, int j, double *U, double *S, double *Vt, int K, int c) {
    for (int i = 0; i < d->m; i++) U[(size_t)i * K + c] = d->U[(size_t)i * d->r + j];
    S[c] = d->S[j];
    memcpy(Vt + (size_t)c * d->n, d->Vt + (size_t)j * d->n, sizeof(double) * (size_t)d->n);
}

int mrg_svd(int m, int n, double *A, double *U, double *S, double *Vt) {
    int r = m < n ? m : n;
    if (be_dgesdd(m, n, A, U, S, Vt) != 0) return -1;
    double cut = r > 0 ? MRG_SVD_RCOND * S[0] : 0;
    int kept = 0;
    for (int j = 0; j < r; j++) {
        if (S[j] > cut) {
            kept++;
            continue;
        }
        S[j] = 0;
        for (int i = 0; i < m; i++) U[(size_t)i * r + j] = 0;
        memset(Vt + (size_t)j * n, 0, sizeof(double) * (size_t)n);
    }
    return kept;
}

int mrg_polar(int m, int n, double *A) {
    svd_t d;
    if (svd_of(&d, m, n, A) < 0) return -1;
    /* the dropped components are zero in U and Vt: U Vt sums the kept ones */
    be_dgemm(0, 0, m, n, d.r, 1.0, d.U, d.r, d.Vt, n, 0.0, A, n);
    svd_free(&d);
    return 0;
}

/* res (m x n float) = U diag(s) Vt for U m x K, Vt K x n; U is scaled in place. */
static void usv(int m, int n, int K, double *U, const double *s, const double *Vt, float *res) {
    for (int i = 0; i < m; i++)
        for (int c = 0; c < K; c++) U[(size_t)i * K + c] *= s[c];
    double *R = mallocCheck(sizeof(double) * (size_t)m * n);
    be_dgemm(0, 0, m, n, K, 1.0, U, K, Vt, n, 0.0, R, n);
    for (size_t e = 0; e < (size_t)m * n; e++) res[e] = (float)R[e];
    free(R);
}

/* A new double copy of the sum of the N task vectors (m x n). */
static double *sum_of(int N, size_t mn, const float *const *tau) {
    double *A = callocCheck(mn ? mn : 1, sizeof(double));
    for (int i = 0; i < N; i++)
        for (size_t e = 0; e < mn; e++) A[e] += tau[i][e];
    return A;
}

static double *copy_of(size_t mn, const float *x) {
    double *A = mallocCheck(sizeof(double) * (mn ? mn : 1));
    for (size_t e = 0; e < mn; e++) A[e] = x[e];
    return A;
}

static double mean_of(const double *S, int r) {
    double s = 0;
    for (int j = 0; j < r; j++) s += S[j];
    return r > 0 ? s / r : 0;
}

int mrg_iso_c(int N, int m, int n, const float *const *tau, float *res) {
    double *A = sum_of(N, (size_t)m * n, tau);
    svd_t d;
    int rc = svd_of(&d, m, n, A);
    free(A);
    if (rc < 0) return -1;
    double *flat = mallocCheck(sizeof(double) * (size_t)d.r);
    double mean = mean_of(d.S, d.r);
    for (int j = 0; j < d.r; j++) flat[j] = mean; /* dropped components are zero in U */
    usv(m, n, d.r, d.U, flat, d.Vt, res);
    free(flat);
    svd_free(&d);
    return 0;
}

int mrg_iso_cts(int N, int m, int n, const float *const *tau, double frac, float *res) {
    int r = m < n ? m : n;
    int k0 = (int)(r * frac);
    int T = (int)rint((double)(r - k0) / N) * N; /* rint: half to even, as Python's round */
    if (T > r) T -= N;
    int k = r - T, s = T / N;
    /* the r directions: task i's at [i s, (i + 1) s), the common ones after */
    double *U = callocCheck((size_t)m * r, sizeof(double));
    double *S = callocCheck((size_t)r, sizeof(double));
    double *Vt = callocCheck((size_t)r * n, sizeof(double));
    int rc = 0;
    svd_t c = {0};
    if (k > 0) {
        double *A = sum_of(N, (size_t)m * n, tau);
        rc = svd_of(&c, m, n, A);
        free(A);
        for (int j = 0; rc == 0 && j < k; j++) put_component(&c, j, U, S, Vt, r, T + j);
    }
    double *P = k > 0 && s > 0 ? mallocCheck(sizeof(double) * (size_t)k * n) : NULL;
    for (int i = 0; rc == 0 && s > 0 && i < N; i++) {
        double *W = copy_of((size_t)m * n, tau[i]);
        if (k > 0) { /* W -= U_k (U_k^T W): the part outside the common subspace */
            be_dgemm(1, 0, k, n, m, 1.0, c.U, c.r, W, n, 0.0, P, n);
            be_dgemm(0, 0, m, n, k, -1.0, c.U, c.r, P, n, 1.0, W, n);
        }
        svd_t d;
        rc = svd_of(&d, m, n, W);
        free(W);
        for (int j = 0; rc == 0 && j < s; j++) put_component(&d, j, U, S, Vt, r, i * s + j);
        if (rc == 0) svd_free(&d);
    }
    free(P);
    svd_free(&c);
    if (rc == 0) rc = mrg_polar(m, r, U);
    if (rc == 0) rc = mrg_polar(r, n, Vt); /* polar(V)^T = polar(V^T) */
    if (rc == 0) {
        double mean = mean_of(S, r);
        for (int j = 0; j < r; j++) S[j] = mean;
        usv(m, n, r, U, S, Vt, res);
    }
    free(U);
    free(S);
    free(Vt);
    return rc;
}

int mrg_tsv_m(int N, int m, int n, const float *const *tau, float *res) {
    int r = m < n ? m : n;
    int k = r / N > 1 ? r / N : 1, K = N * k;
    double *U = mallocCheck(sizeof(double) * (size_t)m * K);
    double *S = mallocCheck(sizeof(double) * (size_t)K);
    double *Vt = mallocCheck(sizeof(double) * (size_t)K * n);
    int rc = 0;
    for (int i = 0; rc == 0 && i < N; i++) {
        double *W = copy_of((size_t)m * n, tau[i]);
        svd_t d;
        rc = svd_of(&d, m, n, W);
        free(W);
        for (int j = 0; rc == 0 && j < k; j++) put_component(&d, j, U, S, Vt, K, i * k + j);
        if (rc == 0) svd_free(&d);
    }
    if (rc == 0) rc = mrg_polar(m, K, U);
    if (rc == 0) rc = mrg_polar(K, n, Vt);
    if (rc == 0) usv(m, n, K, U, S, Vt, res);
    free(U);
    free(S);
    free(Vt);
    return rc;
}
