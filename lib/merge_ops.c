/* merge_ops.c - elementwise pieces of the merge methods: lambda scaling of
 * Grams, TIES threshold selection, the DARE mask, breadcrumbs trimming,
 * Model Stock's ratio, slerp. */
#include "merge.h"
#include "common.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void mrg_scale_offdiag(float *M, int n, float lambda) {
    for (int r = 0; r < n; r++)
        for (int c = 0; c < n; c++)
            if (r != c) M[(size_t)r * n + c] *= lambda;
}

int mrg_all_finite(const float *x, long n, long *bad) {
    long i = mc_nonfinite_at(x, n);
    if (i >= 0 && bad) *bad = i;
    return i < 0;
}

/* ------------------------------------------------------------ selection */

void mrg_select_init(mrg_select *s) {
    memset(s, 0, sizeof *s);
    s->pass = 1;
}

void mrg_select_feed(mrg_select *s, const float *x, long n) {
    if (s->pass == 1) {
        for (long i = 0; i < n; i++) s->hi[mrg_absbits(x[i]) >> 16]++;
        s->total += (uint64_t)n;
    } else if (s->pass == 2) {
        for (long i = 0; i < n; i++) {
            uint32_t u = mrg_absbits(x[i]);
            if (u >> 16 == s->hibin) s->lo[u & 0xffffu]++;
        }
    }
}

void mrg_select_next(mrg_select *s, uint64_t rank) {
    if (rank < 1) rank = 1;
    if (rank > s->total) rank = s->total;
    s->rank = rank;
    if (s->pass == 1) {
        uint64_t cum = 0;
        uint32_t b = 0;
        for (; b < 65535; b++) {
            if (cum + s->hi[b] >= rank) break;
            cum += s->hi[b];
        }
        s->hibin = b;
        s->below = cum;
        s->pass = 2;
    } else if (s->pass == 2) {
        uint64_t cum = s->below;
        uint32_t b = 0;
        for (; b < 65535; b++) {
            if (cum + s->lo[b] >= rank) break;
            cum += s->lo[b];
        }
        s->value = mrg_bits_float(s->hibin << 16 | b);
        s->pass = 3;
    }
}

uint64_t mrg_ties_rank(uint64_t d, double percent) {
    /* torch reference: K = percent/100; k = d - int(d*K); kthvalue(k). */
    uint64_t keep = (uint64_t)((double)d * (percent / 100.0));
    if (keep > d) keep = d;
    return d - keep; /* 0: keep everything */
}

/* ------------------------------------------------------------ DARE */

uint64_t mrg_hash_name(const char *s) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

uint64_t mrg_dare_stream(uint64_t seed, uint64_t model, uint64_t tensor_hash) {
    return mc_hash64(mc_hash64(mc_hash64(seed ^ 0x6a09e667f3bcc909ull) ^ model) ^ tensor_hash);
}

int mrg_dare_keep_at(uint64_t stream, uint64_t i, double p) {
    double u = (double)(mc_hash64(stream ^ i) >> 11) * 0x1.0p-53;
    return u >= p;
}

int mrg_dare_keep(uint64_t seed, uint64_t model, uint64_t tensor_hash, uint64_t i, double p) {
    return mrg_dare_keep_at(mrg_dare_stream(seed, model, tensor_hash), i, p);
}

/* ------------------------------------------------------------ breadcrumbs */

/* The k-th smallest (0-based) of a[0..n-1]; reorders a. */
static float quickselect(float *a, long n, long k) {
    long lo = 0, hi = n - 1;
    while (hi > lo) {
        long mid = lo + (hi - lo) / 2;
        /* median of three as pivot */
        float x = a[lo], y = a[mid], z = a[hi];
        float piv = x < y ? (y < z ? y : (x < z ? z : x)) : (x < z ? x : (y < z ? z : y));
        long i = lo, j = hi;
        while (i <= j) {
            while (a[i] < piv) i++;
            while (a[j] > piv) j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else return a[k];
    }
    return a[k];
}

void mrg_breadcrumbs(float *x, long n, double top_percent, double bottom_percent, float *work) {
    if (n <= 0) return;
    long nb = (long)((double)n * (bottom_percent / 100.0));
    long nt = (long)((double)n * (top_percent / 100.0));
    long ilo = nb, ihi = n - 1 - nt;
    if (ilo > n - 1 || ihi < 0 || ilo > ihi) {
        memset(x, 0, sizeof(float) * (size_t)n);
        return;
    }
    for (long i = 0; i < n; i++) work[i] = fabsf(x[i]);
    float lo = quickselect(work, n, ilo);
    for (long i = 0; i < n; i++) work[i] = fabsf(x[i]);
    float hi = quickselect(work, n, ihi);
    for (long i = 0; i < n; i++) {
        float m = fabsf(x[i]);
        if (!(m >= lo && m <= hi)) x[i] = 0;
    }
}

/* ------------------------------------------------------------ Model Stock */

static double dot_d(long n, const float *x, const float *y) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)x[i] * y[i];
    return s;
}

int mrg_model_stock_t(int N, long n, const float *const *tau, double *t, double *c) {
    if (N < 2) return -1;
    double *norm = mallocCheck(sizeof(double) * (size_t)N);
    for (int i = 0; i < N; i++) norm[i] = sqrt(dot_d(n, tau[i], tau[i]));
    double sum = 0;
    for (int i = 0; i < N; i++)
        for (int j = i + 1; j < N; j++) {
            double cs = norm[i] > 0 && norm[j] > 0 ? dot_d(n, tau[i], tau[j]) / (norm[i] * norm[j]) : 0;
            sum += fmin(1.0, fmax(-1.0, cs));
        }
    free(norm);
    *c = sum / (0.5 * N * (N - 1));
    double den = 1 + (N - 1) * *c;
    if (!(den > 1e-6)) return -1;
    *t = N * *c / den;
    return 0;
}

/* ------------------------------------------------------------ slerp */

void mrg_slerp(long n, double t, const float *a, const float *b, float *out) {
    double na = sqrt(dot_d(n, a, a)), nb = sqrt(dot_d(n, b, b));
    double d = dot_d(n, a, b) / ((na > MRG_SLERP_EPS ? na : 1) * (nb > MRG_SLERP_EPS ? nb : 1));
    double s0 = 1 - t, s1 = t;
    if (fabs(d) <= MRG_SLERP_DOT_THRESHOLD) {
        double w = acos(d), sw = sin(w);
        s0 = sin(w - t * w) / sw;
        s1 = sin(t * w) / sw;
    }
    for (long i = 0; i < n; i++) out[i] = (float)(s0 * a[i] + s1 * b[i]);
}
