/* merge.h - the numerical core of the merge stage (stages/merge.c).
 *
 * Everything here works on plain float / double buffers; artifact handling
 * lives in the stage. Matrix products go through backend.h.
 *
 * Conventions
 *  - A linear weight W is [out, in] row-major, as stored in artifacts. The
 *    MaTS reference code works on V = W^T; we keep W and write every system
 *    in W-space, which needs no transposes:
 *        RegMean:  V -> (sum_i A_i) V          is  W -> W (sum_i A_i)
 *        K-FAC:    V -> sum_i A_i V G_i        is  W -> sum_i G_i W A_i
 *    (A_i input Gram [in,in], G_i output-gradient Gram [out,out], both
 *    symmetric.)
 *  - lambda scaling of a Gram / Fisher block: M~ = lambda M + (1-lambda) diag(M).
 *  - CG vectors are float32; dot products accumulate in double.
 */
#ifndef MC_MERGE_H
#define MC_MERGE_H

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------ small kernels */

/* M (n x n, row-major) <- lambda M + (1 - lambda) diag(M), in place. */
void mrg_scale_offdiag(float *M, int n, float lambda);

/* 1 if all n values are finite, else 0 and *bad = first bad index. */
int mrg_all_finite(const float *x, long n, long *bad);

/* Order-preserving map of |x| to uint32: the IEEE bits of |x| (finite x). */
static inline uint32_t mrg_absbits(float x) {
    union { float f; uint32_t u; } v = {x};
    return v.u & 0x7fffffffu;
}
static inline float mrg_bits_float(uint32_t u) {
    union { uint32_t u; float f; } v = {u};
    return v.f;
}

/* ------------------------------------------------------------ TIES selection
 *
 * The global magnitude threshold of one task vector, found with two
 * histogram passes over its entries (streamed tensor by tensor) instead of
 * holding the vector: pass 1 counts the high 16 bits of |x|, pass 2 the low
 * 16 bits of the entries in the chosen high bin. The result is the exact
 * rank-th smallest |x| (1-based), as torch.kthvalue gives it. */
typedef struct {
    uint64_t hi[65536];
    uint64_t lo[65536];
    uint64_t total;     /* entries seen in pass 1 */
    uint64_t rank;      /* wanted 1-based rank among the smallest */
    uint64_t below;     /* entries in high bins below the chosen one */
    int pass;           /* 1, 2, then 3 = done */
    uint32_t hibin;
    float value;        /* the answer once pass == 3 */
} mrg_select;

void mrg_select_init(mrg_select *s);
/* Feed entries: in pass 1 every entry, in pass 2 the same entries again. */
void mrg_select_feed(mrg_select *s, const float *x, long n);
/* Close pass 1 (choose the high bin for `rank`) or pass 2 (the value). */
void mrg_select_next(mrg_select *s, uint64_t rank);

/* TIES threshold rank for d entries keeping `percent` %: the reference
 * keeps |x| >= kthvalue(d - floor(d * percent/100)); returns that 1-based
 * rank, or 0 meaning "keep everything". */
uint64_t mrg_ties_rank(uint64_t d, double percent);

/* ------------------------------------------------------------ DARE random mask
 *
 * Counter-based: keep(seed, model, tensor, i) depends only on its
 * arguments, so passes over the data in any order give the same mask. */
uint64_t mrg_hash_name(const char *s);
/* 1 with probability 1 - p (keep), 0 with probability p (drop). */
int mrg_dare_keep(uint64_t seed, uint64_t model, uint64_t tensor_hash, uint64_t i, double p);
/* The same in two steps: the per-(seed, model, tensor) stream once, then
 * one hash per entry. mrg_dare_keep(s,m,t,i,p) ==
 * mrg_dare_keep_at(mrg_dare_stream(s,m,t), i, p). */
uint64_t mrg_dare_stream(uint64_t seed, uint64_t model, uint64_t tensor_hash);
int mrg_dare_keep_at(uint64_t stream, uint64_t i, double p);

/* ------------------------------------------------------------ breadcrumbs
 *
 * Per tensor: keep entries whose magnitude lies in [lo, hi], where lo is the
 * (floor(n*bottom/100)+1)-th smallest |x| and hi the (floor(n*top/100)+1)-th
 * largest; others are set to 0. `work` holds n floats. */
void mrg_breadcrumbs(float *x, long n, double top_percent, double bottom_percent, float *work);

/* ------------------------------------------------------------ Model Stock, slerp */

/* Model Stock's ratio for one tensor of N >= 2 task vectors (n entries
 * each): c = the mean over pairs i < j of cos(tau_i, tau_j) (0 where
 * either is zero; clamped to [-1, 1]), t = N c / (1 + (N - 1) c). 0 with
 * *t and *c, or -1 when t is undefined: N < 2, or 1 + (N - 1) c <= 1e-6
 * (the task vectors cancel). Products in double. */
int mrg_model_stock_t(int N, long n, const float *const *tau, double *t, double *c);

/* mergekit's slerp of two tensors a, b (n entries) at t, into out (may be
 * a or b): each is normalised when its norm exceeds 1e-8; d = the dot of
 * the normalised pair; |d| > 0.9995: (1 - t) a + t b; else with
 * w = acos(d), sin((1 - t) w) / sin(w) a + sin(t w) / sin(w) b. */
#define MRG_SLERP_EPS 1e-8
#define MRG_SLERP_DOT_THRESHOLD 0.9995
void mrg_slerp(long n, double t, const float *a, const float *b, float *out);

/* ------------------------------------------------------------ SVD methods
 *
 * Iso-C, Iso-CTS and TSV-M on the N task vectors tau[i] of one 2-d weight
 * (m x n row-major float), each writing the merged task vector (m x n)
 * into res; every factorisation in double (backend.h, be_dgesdd).
 *
 * Components of an SVD whose singular value is at most MRG_SVD_RCOND times
 * the largest are dropped (value, left and right vector set to 0): a
 * rank-deficient matrix has no unique singular vectors there, and the
 * methods would otherwise put weight on arbitrary directions. The polar
 * factor of a matrix is then sum_j p_j q_j^T over its kept components
 * (for a matrix of full rank, the usual polar factor). */
#define MRG_SVD_RCOND 1e-6

/* Thin SVD of A (m x n, destroyed): U m x r, S r (descending), Vt r x n,
 * r = min(m, n), with the small components dropped as above. The number
 * kept, or -1 if LAPACK failed. */
int mrg_svd(int m, int n, double *A, double *U, double *S, double *Vt);
/* A (m x n) <- its polar factor (above). 0, or -1 if LAPACK failed. */
int mrg_polar(int m, int n, double *A);
/* Iso-C: M = sum_i tau_i = U S V^T; res = mean(S) U V^T (the mean over all
 * min(m, n) singular values, dropped ones as 0). 0 or -1 (LAPACK). */
int mrg_iso_c(int N, int m, int n, const float *const *tau, float *res);
/* Iso-CTS (Marczak et al. 2025), r = min(m, n): k0 = floor(r frac);
 * T = N round((r - k0) / N) (half to even; less N if above r) task-specific
 * directions, s = T / N per task, k = r - T common ones: the top k of
 * M = sum_i tau_i = U S V^T; task i adds the top s of
 * (I - U_k U_k^T) tau_i; the r directions (left and right, each set
 * replaced by its polar factor) carry the mean of their r singular values:
 * res = mean * U' V'^T. 0 or -1 (LAPACK). */
int mrg_iso_cts(int N, int m, int n, const float *const *tau, double frac, float *res);
/* TSV-M (Gargiulo et al. 2025): k = max(1, floor(min(m, n) / N)); the top
 * k of each tau_i = U_i S_i V_i^T, concatenated: U = [U_1k ... U_Nk],
 * S = diag(S_1k ... S_Nk), V likewise; res = polar(U) S polar(V)^T.
 * 0 or -1 (LAPACK). */
int mrg_tsv_m(int N, int m, int n, const float *const *tau, float *res);

/* ------------------------------------------------------------ SPD solves */

/* Solve S X = B (S n x n symmetric, B n x nrhs; X overwrites B) by Cholesky
 * in double. If S is not positive definite, retry with S + r I and
 * B + r * prior (a ridge pulling towards `prior`, n x nrhs; zero if NULL),
 * r = 1e-6, 1e-5, ..., 1 times the mean diagonal of S (1 if that is not
 * positive). S is overwritten by the factor. Returns the ridge used (0 if
 * none), or -1 if even the largest ridge failed. */
double mrg_spd_solve(int n, int nrhs, double *S, double *B, const double *prior);
/* The same with B and prior given transposed (nrhs x n row-major: one
 * right-hand side per row); X^T overwrites Bt. RegMean's W-space layout. */
double mrg_spd_solve_t(int n, int nrhs, double *S, double *Bt, const double *prior_t);
/* RegMean's closed form for one linear: out (rows x k) with out S = B, for S
 * (k x k) the summed (lambda-scaled) input Grams and B = sum_i W_i S_i; in
 * double. A singular S gets a ridge towards prior (rows x k, the models'
 * mean). Returns the ridge (0: none), or < 0 if S is not positive
 * semi-definite even with one (out untouched). */
double mrg_regmean_closed(int rows, int k, const float *S, const float *B, const float *prior, float *out);

/* Is the n x n statistic M (a Gram or a Fisher block) symmetric positive
 * semi-definite within tol? Symmetric: |M_ij - M_ji| <= tol s for all i, j,
 * where s is the largest |M_ii|; PSD: no eigenvalue below -tol s (Cholesky
 * of the symmetrised M + tol s I, in double). 0, or -1 with mc_error()
 * saying which fails and where ("not symmetric: entry [3,5] ..."). */
int mrg_check_psd(const float *M, int n, double tol);

/* ------------------------------------------------------------ operators */

typedef struct mrg_op mrg_op;
struct mrg_op {
    long n;                                                  /* unknowns */
    void (*apply)(const mrg_op *op, const float *x, float *y);  /* y = A x */
    void *ctx;
};

/* y = x */
void mrg_op_identity(mrg_op *op, long n);
/* y = d .* x; d must outlive op. */
void mrg_op_diag(mrg_op *op, long n, const float *d);

/* W (rows x k) -> W S with S (k x k) symmetric. rows = 1 gives S x for a
 * vector (IA3 Fisher blocks). S must outlive op. */
typedef struct {
    int rows, k;
    const float *S;
} mrg_rmul;
void mrg_op_rmul(mrg_op *op, mrg_rmul *ctx, int rows, int k, const float *S);

/* K-FAC operator W (out x in) -> sum_i G_i W A_i over N pairs.
 * Fast path: two GEMMs per application,
 *   Q      = W [A_1 ... A_N]                 (out x N*in)
 *   Qstack = [Q_1; ...; Q_N]                 (N*out x in, a block copy)
 *   Y      = [G_1 ... G_N] Qstack            (out x in)
 * so BLAS sees k = in and k = N*out instead of 2N small products. */
typedef struct {
    int N, out, in;
    float *Acat;     /* in x N*in: [A_1 ... A_N] */
    float *Gcat;     /* out x N*out: [G_1 ... G_N] */
    float *Q;        /* out x N*in work */
    float *Qs;       /* N*out x in work */
} mrg_kfac;

/* Allocate for N pairs of the given shape; fill with mrg_kfac_set. */
void mrg_kfac_init(mrg_kfac *K, int N, int out, int in);
/* Copy pair i: A (in x in) and G (out x out), each lambda-scaled here. */
void mrg_kfac_set(mrg_kfac *K, int i, const float *A, const float *G, float lambda);
void mrg_kfac_free(mrg_kfac *K);
void mrg_op_kfac(mrg_op *op, mrg_kfac *K);
/* Y = sum_i G_i W A_i computed pair by pair (2N GEMMs), as the MaTS code
 * does: the reference the fast path is tested against. */
void mrg_kfac_apply_naive(const mrg_kfac *K, const float *W, float *Y);
/* b = sum_i G_i W_i A_i for the N models' weights W_i (out x in each). */
void mrg_kfac_rhs(const mrg_kfac *K, const float *const *W, float *b);
/* Flops of one application (2 N out in (in + out)). */
double mrg_kfac_flops(const mrg_kfac *K);

/* WUDI's system for one linear (out x in) from its N task vectors T_i:
 * the minimiser X of sum_i ||(X - T_i) T_i^T||_F^2 / ||T_i||_F^2 solves
 * X S = B (so mrg_op_rmul applies S) with
 *   S = sum_i T_i^T T_i / ||T_i||^2 (in x in),  B = sum_i T_i (T_i^T T_i) / ||T_i||^2 (out x in);
 * a zero T_i (its term is 0 whatever X is) is left out. S and B are
 * overwritten; work holds in x in floats. Returns how many T_i were used. */
int mrg_wudi_system(int N, int out, int in, const float *const *T, float *S, float *B, float *work);

/* Kronecker preconditioner for the K-FAC system: P = N (Gbar (x) Abar) with
 * Gbar, Abar the means of the (scaled) Grams, so that
 *   P^+ R = Gbar^+ R Abar^+ / N.
 * Each factor is a truncated pseudo-inverse formed once per tensor from the
 * mean's eigendecomposition (double): eigenvalues below MRG_KRON_RCOND of
 * the largest are dropped. Directions the preconditioner drops stay where
 * the initial point put them (as plain CG leaves the system's null space),
 * and the float factors stay positive semidefinite with condition number
 * at most 1/MRG_KRON_RCOND. Each application is two GEMMs, 1/N of the
 * operator's flops. */
#define MRG_KRON_RCOND 1e-3
typedef struct {
    int N, out, in;
    float *Ginv, *Ainv; /* out x out, in x in */
    float *T;           /* out x in work */
    int rank_g, rank_a; /* eigenvalues kept in each factor */
} mrg_kron;
/* -1 if the eigensolver failed on a mean Gram. */
int mrg_kron_init(mrg_kron *P, const mrg_kfac *K);
void mrg_kron_apply(const mrg_kron *P, const float *R, float *Z);
void mrg_kron_free(mrg_kron *P);

/* ------------------------------------------------------------ CG */

typedef enum {
    MRG_CG_MAXITER = 0,     /* ran all iterations */
    MRG_CG_CONVERGED = 1,   /* ||r|| <= tol ||b|| */
    MRG_CG_BREAKDOWN = 2,   /* p^T A p <= 0 or a non-finite step: stopped */
    MRG_CG_STALLED = 3,     /* the preconditioned residual vanished with ||r|| above
                               tol: what is left of r lies where the preconditioner is 0 */
} mrg_cg_status;

typedef struct {
    int iterations;
    double b_norm;
    double initial_residual;   /* ||b - A x0|| */
    double final_residual;     /* ||b - A x|| recomputed at the end */
    mrg_cg_status status;
    int reverted;              /* broke down worse than x0: x is x0 again */
    double seconds;
} mrg_cg_result;

/* Preconditioner callback: z = M^-1 r. */
typedef void (*mrg_precond_fn)(const void *ctx, const float *r, float *z);

/* Conjugate gradient on op x = b from x (in: x0, out: solution), at most
 * maxit iterations, stopping once ||r|| <= tol * ||b|| (tol = 0: never
 * early, except at an exactly zero residual), or at `target` absolute
 * residual when target > 0. pc may be NULL. If it breaks down with a
 * final residual larger than the initial one, x is put back to x0 and
 * `reverted` set. Work: 5n floats (allocated). */
void mrg_cg(const mrg_op *op, const float *b, float *x, int maxit, double tol, double target,
            mrg_precond_fn pc, const void *pc_ctx, mrg_cg_result *res);

#endif
