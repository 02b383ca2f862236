/* ops.c - the T5 layer functions of ops.h: C loops plus be_gemm calls. */
#include "ops.h"

#include <math.h>
#include <string.h>

#include "backend.h"

void op_embed_forward(float *out, const int *ids, const float *table, int N, int D) {
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * D, table + (size_t)ids[n] * D, sizeof(float) * D);
}

void op_embed_backward(float *dtable, const float *dout, const int *ids, int N, int D) {
    for (int n = 0; n < N; n++) {
        float *dt = dtable + (size_t)ids[n] * D;
        const float *d = dout + (size_t)n * D;
        for (int i = 0; i < D; i++) dt[i] += d[i];
    }
}

void op_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                        float eps) {
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D;
        float *on = out + (size_t)n * D;
        float ss = 0;
        for (int i = 0; i < D; i++) ss += xn[i] * xn[i];
        float r = 1.0f / sqrtf(ss / D + eps);
        rstd[n] = r;
        for (int i = 0; i < D; i++) on[i] = xn[i] * r * w[i];
    }
}

void op_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         const float *rstd, int N, int D) {
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * D, *dn = dout + (size_t)n * D;
        float r = rstd[n];
        float dot = 0;
        for (int i = 0; i < D; i++) dot += dn[i] * w[i] * xn[i];
        float c = dot * r * r * r / D;
        if (dx) {
            float *dxn = dx + (size_t)n * D;
            for (int i = 0; i < D; i++) dxn[i] += r * w[i] * dn[i] - xn[i] * c;
        }
        if (dw)
            for (int i = 0; i < D; i++) dw[i] += dn[i] * xn[i] * r;
    }
}

void op_linear_forward(float *out, const float *x, const float *w, int N, int I, int O) {
    be_gemm(0, 1, N, O, I, 1.0f, x, I, w, I, 0.0f, out, O);
}

void op_linear_forward_naive(float *out, const float *x, const float *w, int N, int I, int O) {
    for (int n = 0; n < N; n++)
        for (int o = 0; o < O; o++) {
            double s = 0;
            for (int i = 0; i < I; i++) s += (double)x[(size_t)n * I + i] * w[(size_t)o * I + i];
            out[(size_t)n * O + o] = (float)s;
        }
}

void op_linear_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                        int N, int I, int O) {
    if (dx) be_gemm(0, 0, N, I, O, 1.0f, dout, O, w, I, 1.0f, dx, I);
    if (dw) be_gemm(1, 0, O, I, N, 1.0f, dout, O, x, I, 1.0f, dw, I);
}

void op_ia3_forward(float *out, const float *x, const float *s, int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *xn = x + (size_t)n * C;
        float *on = out + (size_t)n * C;
        for (int c = 0; c < C; c++) on[c] = xn[c] * s[c];
    }
}

void op_ia3_backward(float *dx, float *ds, const float *dout, const float *x, const float *s,
                     int N, int C) {
    for (int n = 0; n < N; n++) {
        const float *dn = dout + (size_t)n * C, *xn = x + (size_t)n * C;
        if (dx) {
            float *dxn = dx + (size_t)n * C;
            for (int c = 0; c < C; c++) dxn[c] += dn[c] * s[c];
        }
        if (ds)
            for (int c = 0; c < C; c++) ds[c] += dn[c] * xn[c];
    }
}

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

/* tanh through expf: 1 - 2/(exp(2u)+1). glibc's tanhf goes through expm1f
 * and costs several times more; the absolute error here stays near float
 * rounding (1e-7), which is all gelu_new needs (it uses 1 + tanh). */
static inline float fast_tanh(float u) { return 1.0f - 2.0f / (expf(2.0f * u) + 1.0f); }

float op_gelu_new(float x) { return 0.5f * x * (1.0f + fast_tanh(GELU_C * (x + GELU_A * x * x * x))); }

void op_gated_gelu_forward(float *out, const float *h0, const float *h1, long n) {
    for (long i = 0; i < n; i++) out[i] = op_gelu_new(h0[i]) * h1[i];
}

void op_gated_gelu_backward(float *dh0, float *dh1, const float *dout, const float *h0,
                            const float *h1, long n) {
    for (long i = 0; i < n; i++) {
        float x = h0[i];
        float t = fast_tanh(GELU_C * (x + GELU_A * x * x * x));
        float g = 0.5f * x * (1.0f + t);
        float dg = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_A * x * x);
        dh0[i] += dout[i] * h1[i] * dg;
        dh1[i] += dout[i] * g;
    }
}

/* HF T5Attention._relative_position_bucket: half the buckets for each sign
 * when bidirectional; in the causal case only keys before the query count
 * (rp = -min(rp, 0)). Positions below max_exact = nb/2 get their own bucket;
 * larger ones are binned logarithmically up to max_distance. PyTorch
 * evaluates the log in float32, then truncates; we do the same so bucket
 * boundaries agree exactly. */
int op_relpos_bucket(int rp, int bidirectional, int num_buckets, int max_distance) {
    int bucket = 0, nb = num_buckets;
    if (bidirectional) {
        nb /= 2;
        if (rp > 0) bucket += nb;
        rp = rp < 0 ? -rp : rp;
    } else {
        rp = rp < 0 ? -rp : 0;
    }
    int max_exact = nb / 2;
    if (rp < max_exact) return bucket + rp;
    float l = logf((float)rp / (float)max_exact) / (float)log((double)max_distance / max_exact);
    int large = max_exact + (int)(l * (float)(nb - max_exact));
    if (large > nb - 1) large = nb - 1;
    return bucket + large;
}

void op_relpos_buckets(int *buckets, int Tq, int Tk, int bidirectional, int num_buckets,
                       int max_distance) {
    for (int i = 0; i < Tq; i++)
        for (int j = 0; j < Tk; j++)
            buckets[i * Tk + j] = op_relpos_bucket(j - i, bidirectional, num_buckets, max_distance);
}

void op_relpos_bias_forward(float *bias, const float *table, const int *buckets, int H, int Tq,
                            int Tk) {
    for (int h = 0; h < H; h++)
        for (int ij = 0; ij < Tq * Tk; ij++) bias[(size_t)h * Tq * Tk + ij] = table[buckets[ij] * H + h];
}

void op_relpos_bias_backward(float *dtable, const float *dbias, const int *buckets, int H, int Tq,
                             int Tk) {
    for (int h = 0; h < H; h++)
        for (int ij = 0; ij < Tq * Tk; ij++) dtable[buckets[ij] * H + h] += dbias[(size_t)h * Tq * Tk + ij];
}

void op_attention_forward(float *out, float *probs, const float *q, const float *k,
                          const float *v, const float *bias, const uint8_t *key_mask,
                          const int *kv_index, int causal, int B, int Tq, int Tk, int H, int K) {
    int HK = H * K;
    long TT = (long)Tq * Tk;
    for (int b = 0; b < B; b++) {
        int bk = kv_index ? kv_index[b] : b;
        const float *qb = q + (size_t)b * Tq * HK;
        const float *kb = k + (size_t)bk * Tk * HK;
        const float *vb = v + (size_t)bk * Tk * HK;
        float *pb = probs + (size_t)b * H * TT;
        const uint8_t *mask = key_mask ? key_mask + (size_t)bk * Tk : NULL;
        /* scores (H: Tq,Tk) = Q_h K_h^T */
        be_gemm_sbatched(0, 1, Tq, Tk, K, 1.0f, qb, HK, K, kb, HK, K, 0.0f, pb, Tk, TT, H);
        for (int h = 0; h < H; h++)
            for (int i = 0; i < Tq; i++) {
                float *row = pb + h * TT + (size_t)i * Tk;
                const float *brow = bias ? bias + h * TT + (size_t)i * Tk : NULL;
                int jmax = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
                float mx = -INFINITY;
                for (int j = 0; j < jmax; j++) {
                    if (mask && !mask[j]) continue;
                    float s = row[j] + (brow ? brow[j] : 0.0f);
                    row[j] = s;
                    if (s > mx) mx = s;
                }
                float sum = 0;
                for (int j = 0; j < Tk; j++) {
                    if (j >= jmax || (mask && !mask[j])) {
                        row[j] = 0;
                        continue;
                    }
                    float e = expf(row[j] - mx);
                    row[j] = e;
                    sum += e;
                }
                float inv = sum > 0 ? 1.0f / sum : 0.0f;
                for (int j = 0; j < jmax; j++) row[j] *= inv;
            }
        /* out_h (Tq,K) = P_h V_h */
        be_gemm_sbatched(0, 0, Tq, K, Tk, 1.0f, pb, Tk, TT, vb, HK, K, 0.0f,
                         out + (size_t)b * Tq * HK, HK, K, H);
    }
}

void op_attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                           const float *dout, const float *q, const float *k, const float *v,
                           const float *probs, int B, int Tq, int Tk, int H, int K) {
    int HK = H * K;
    long TT = (long)Tq * Tk;
    for (int b = 0; b < B; b++) {
        size_t oq = (size_t)b * Tq * HK, ok = (size_t)b * Tk * HK;
        const float *pb = probs + (size_t)b * H * TT;
        float *sb = scratch + (size_t)b * H * TT;
        /* dP_h = dO_h V_h^T */
        be_gemm_sbatched(0, 1, Tq, Tk, K, 1.0f, dout + oq, HK, K, v + ok, HK, K, 0.0f, sb, Tk, TT, H);
        /* dV_h += P_h^T dO_h */
        if (dv) be_gemm_sbatched(1, 0, Tk, K, Tq, 1.0f, pb, Tk, TT, dout + oq, HK, K, 1.0f, dv + ok, HK, K, H);
        /* dS = P * (dP - sum_j P dP) */
        for (long r = 0; r < (long)H * Tq; r++) {
            const float *p = pb + r * Tk;
            float *d = sb + r * Tk;
            float dot = 0;
            for (int j = 0; j < Tk; j++) dot += p[j] * d[j];
            for (int j = 0; j < Tk; j++) d[j] = p[j] * (d[j] - dot);
        }
        if (dbias)
            for (long i = 0; i < H * TT; i++) dbias[i] += sb[i];
        /* dQ_h += dS_h K_h ; dK_h += dS_h^T Q_h */
        if (dq) be_gemm_sbatched(0, 0, Tq, K, Tk, 1.0f, sb, Tk, TT, k + ok, HK, K, 1.0f, dq + oq, HK, K, H);
        if (dk) be_gemm_sbatched(1, 0, Tk, K, Tq, 1.0f, sb, Tk, TT, q + oq, HK, K, 1.0f, dk + ok, HK, K, H);
    }
}

void op_crossentropy_forward(float *loss, float *lse, const float *logits, const int *targets,
                             int N, int V) {
    for (int n = 0; n < N; n++) {
        const float *l = logits + (size_t)n * V;
        float mx = -INFINITY;
        for (int i = 0; i < V; i++)
            if (l[i] > mx) mx = l[i];
        double s = 0;
        for (int i = 0; i < V; i++) s += expf(l[i] - mx);
        float z = mx + (float)log(s);
        lse[n] = z;
        loss[n] = targets[n] > 0 ? z - l[targets[n]] : 0.0f;
    }
}

void op_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                              const int *targets, const float *weight, int N, int V) {
    for (int n = 0; n < N; n++) {
        float *d = dlogits + (size_t)n * V;
        float w = weight[n];
        if (w == 0.0f || targets[n] <= 0) {
            memset(d, 0, sizeof(float) * V);
            continue;
        }
        const float *l = logits + (size_t)n * V;
        float z = lse[n];
        for (int i = 0; i < V; i++) d[i] = w * expf(l[i] - z);
        d[targets[n]] -= w;
    }
}

void op_add_inplace(float *y, const float *x, long n) {
    for (long i = 0; i < n; i++) y[i] += x[i];
}
