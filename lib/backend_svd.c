/* backend_svd.c - the CPU backend's SVD (backend.h, be_dgesdd), on the
 * LAPACK routine OpenBLAS ships. A file of its own so that only the
 * binaries that use it (merge) link it. */
#include "backend.h"

#include <stdlib.h>
#include <string.h>

/* LAPACK (Fortran, column-major) as exported by libopenblas. */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s,
                    double *u, const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork,
                    int *iwork, int *info);
extern void dgesvd_(const char *jobu, const char *jobvt, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt, double *work,
                    const int *lwork, int *info);

/* The row-major m x n A is, read column-major, A^T (n x m). LAPACK's thin
 * SVD of A^T = (V) diag(S) (U^T) returns, column-major, V as n x r (read
 * row-major: r x n, our Vt) and U^T as r x m (read row-major: m x r, our
 * U). So the roles of the two outputs swap and nothing is transposed. */
static int gesdd(int m, int n, double *A, double *U, double *S, double *Vt) {
    int info = 0, lwork = -1, r = m < n ? m : n;
    double wq = 0;
    int *iwork = malloc(sizeof(int) * 8 * (size_t)r);
    if (!iwork) abort();
    dgesdd_("S", &n, &m, A, &n, S, Vt, &n, U, &r, &wq, &lwork, iwork, &info); /* workspace query */
    if (info == 0) {
        lwork = (int)wq;
        double *work = malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
        if (!work) abort();
        dgesdd_("S", &n, &m, A, &n, S, Vt, &n, U, &r, work, &lwork, iwork, &info);
        free(work);
    }
    free(iwork);
    return info;
}

int be_dgesvd(int m, int n, double *A, double *U, double *S, double *Vt) {
    int info = 0, lwork = -1, r = m < n ? m : n;
    if (r <= 0) return 0;
    double wq = 0;
    dgesvd_("S", "S", &n, &m, A, &n, S, Vt, &n, U, &r, &wq, &lwork, &info); /* workspace query */
    if (info == 0) {
        lwork = (int)wq;
        double *work = malloc(sizeof(double) * (size_t)(lwork > 1 ? lwork : 1));
        if (!work) abort();
        dgesvd_("S", "S", &n, &m, A, &n, S, Vt, &n, U, &r, work, &lwork, &info);
        free(work);
    }
    return info;
}

/* dgesdd's divide and conquer can fail to converge (info > 0) on matrices
 * that dgesvd's QR iteration factors: the copy of A it keeps goes to
 * dgesvd then. The path depends only on A, so the same inputs give the
 * same bytes. */
int be_dgesdd(int m, int n, double *A, double *U, double *S, double *Vt) {
    int r = m < n ? m : n;
    if (r <= 0) return 0;
    size_t bytes = sizeof(double) * (size_t)m * (size_t)n;
    double *keep = malloc(bytes);
    if (!keep) abort();
    memcpy(keep, A, bytes);
    int info = gesdd(m, n, A, U, S, Vt);
    if (info > 0) {
        memcpy(A, keep, bytes);
        info = be_dgesvd(m, n, A, U, S, Vt);
    }
    free(keep);
    return info;
}
