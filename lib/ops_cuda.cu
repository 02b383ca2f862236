/* ops_cuda.cu - CUDA kernels for every op of ops.h (gpu_<op>, same
 * arguments, device pointers; see gpu.h), plus the AdamW and Adafactor
 * steps. Matrix products go through gpu_gemm / gpu_gemm_sbatched
 * (backend_cuda.cu); each kernel here has its CPU reference in ops.c, and
 * tools/gpu/gpu_check.c compares the two.
 *
 * Reductions over a row (RMSNorm, softmax, cross-entropy) use one block or
 * one warp per row; reductions over rows into a per-column result (RMSNorm
 * dw, IA3 ds) use a column kernel with a fixed order, so gradients are the
 * same bytes on every run. Only embedding backward scatters with atomics
 * (token ids repeat), so its sums may differ in the last bit between runs.
 *
 * Backwards take ops.h's `acc`: activation gradients are added to (acc 1)
 * or written over (acc 0, the old values are never read: kernels store,
 * GEMMs run with beta 0); parameter gradients are always added to.
 */
#include "gpu_impl.cuh"

#include <math.h>
#include <string.h>

extern "C" {
#include "ops.h"
extern "C" {
#include "optim.h"
}
}

#define EW_THREADS 256
#define GRID_LOOP(i, n) \
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < (n); i += (long)gridDim.x * blockDim.x)

/* ------------------------------------------------------------ helpers */

__device__ static inline float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ static inline float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum (MAX false) or maximum (MAX true) over the block (blockDim.x a
 * multiple of 32, at most 1024); every thread gets the result. */
template <bool MAX> __device__ static float block_reduce(float v) {
    __shared__ float sh[32];
    __shared__ float total;
    v = MAX ? warp_max(v) : warp_sum(v);
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float s = lane < (int)(blockDim.x >> 5) ? sh[lane] : MAX ? -INFINITY : 0.0f;
        s = MAX ? warp_max(s) : warp_sum(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

__device__ static float block_sum(float v) { return block_reduce<false>(v); }
__device__ static float block_max(float v) { return block_reduce<true>(v); }

static int row_threads(int D) {
    int t = 32;
    while (t < D && t < 1024) t <<= 1;
    return t;
}

/* Column sums out[c] += sum_n a[n,c] * b[n,c] * (rs ? rs[n] : 1), rows in
 * a fixed order: block (32, 32) covers 32 columns, thread row y takes rows
 * y, y+32, ..., then the 32 partials are added in order. */
__global__ static void colsum_prod_kernel(float *out, const float *a, const float *b,
                                          const float *rs, int N, int C) {
    __shared__ float sh[32][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < C)
        for (int n = threadIdx.y; n < N; n += 32) {
            float v = a[(size_t)n * C + c] * b[(size_t)n * C + c];
            s += rs ? v * rs[n] : v;
        }
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
        float t = 0.0f;
        for (int y = 0; y < 32; y++) t += sh[y][threadIdx.x];
        out[c] += t;
    }
}

static void colsum_prod(float *out, const float *a, const float *b, const float *rs, int N, int C) {
    dim3 block(32, 32), grid((C + 31) / 32);
    colsum_prod_kernel<<<grid, block, 0, gpu_stream()>>>(out, a, b, rs, N, C);
    launchCheck();
}

/* ------------------------------------------------------------ embedding */

__global__ static void embed_fwd_kernel(float *out, const int *ids, const float *table, int N, int D) {
    GRID_LOOP(idx, (long)N * D) {
        long n = idx / D, i = idx % D;
        out[idx] = table[(size_t)ids[n] * D + i];
    }
}

void gpu_embed_forward(float *out, const int *ids, const float *table, int N, int D) {
    if ((long)N * D <= 0) return;
    embed_fwd_kernel<<<gpu_blocks((long)N * D, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(out, ids, table, N, D);
    launchCheck();
}

__global__ static void embed_bwd_kernel(float *dtable, const float *dout, const int *ids, int N, int D) {
    GRID_LOOP(idx, (long)N * D) {
        long n = idx / D, i = idx % D;
        atomicAdd(&dtable[(size_t)ids[n] * D + i], dout[idx]);
    }
}

void gpu_embed_backward(float *dtable, const float *dout, const int *ids, int N, int D) {
    if ((long)N * D <= 0) return;
    embed_bwd_kernel<<<gpu_blocks((long)N * D, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(dtable, dout, ids, N, D);
    launchCheck();
}

/* ------------------------------------------------------------ RMSNorm */

__global__ static void rmsnorm_fwd_kernel(float *out, float *rstd, const float *x, const float *w,
                                          int D, float eps) {
    int n = blockIdx.x;
    const float *xn = x + (size_t)n * D;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) ss += xn[i] * xn[i];
    ss = block_sum(ss);
    float r = 1.0f / sqrtf(ss / D + eps);
    if (threadIdx.x == 0) rstd[n] = r;
    float *on = out + (size_t)n * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) on[i] = xn[i] * r * w[i];
}

void gpu_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                         float eps) {
    if (N <= 0) return;
    rmsnorm_fwd_kernel<<<N, row_threads(D), 0, gpu_stream()>>>(out, rstd, x, w, D, eps);
    launchCheck();
}

__global__ static void rmsnorm_bwd_kernel(float *dx, const float *dout, const float *x,
                                          const float *w, const float *rstd, int D, int acc) {
    int n = blockIdx.x;
    const float *xn = x + (size_t)n * D, *dn = dout + (size_t)n * D;
    float r = rstd[n];
    float dot = 0.0f;
    for (int i = threadIdx.x; i < D; i += blockDim.x) dot += dn[i] * w[i] * xn[i];
    dot = block_sum(dot);
    float c = dot * r * r * r / D;
    float *dxn = dx + (size_t)n * D;
    for (int i = threadIdx.x; i < D; i += blockDim.x) {
        float g = r * w[i] * dn[i] - xn[i] * c;
        dxn[i] = acc ? dxn[i] + g : g;
    }
}

void gpu_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                          const float *rstd, int N, int D, int acc) {
    if (N <= 0) return;
    if (dx) {
        rmsnorm_bwd_kernel<<<N, row_threads(D), 0, gpu_stream()>>>(dx, dout, x, w, rstd, D, acc);
        launchCheck();
    }
    if (dw) colsum_prod(dw, dout, x, rstd, N, D);
}

/* ------------------------------------------------------------ linear */

void gpu_linear_forward(float *out, const float *x, const float *w, int N, int I, int O) {
    gpu_gemm(0, 1, N, O, I, 1.0f, x, I, w, I, 0.0f, out, O);
}

void gpu_linear_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                         int N, int I, int O, int acc) {
    if (dx) gpu_gemm(0, 0, N, I, O, 1.0f, dout, O, w, I, acc ? 1.0f : 0.0f, dx, I);
    if (dw) gpu_gemm(1, 0, O, I, N, 1.0f, dout, O, x, I, 1.0f, dw, I);
}

/* ------------------------------------------------------------ IA3 */

__global__ static void ia3_fwd_kernel(float *out, const float *x, const float *s, int N, int C) {
    GRID_LOOP(idx, (long)N * C) out[idx] = x[idx] * s[idx % C];
}

void gpu_ia3_forward(float *out, const float *x, const float *s, int N, int C) {
    if ((long)N * C <= 0) return;
    ia3_fwd_kernel<<<gpu_blocks((long)N * C, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(out, x, s, N, C);
    launchCheck();
}

__global__ static void ia3_bwd_dx_kernel(float *dx, const float *dout, const float *s, int N, int C,
                                         int acc) {
    GRID_LOOP(idx, (long)N * C) {
        float g = dout[idx] * s[idx % C];
        dx[idx] = acc ? dx[idx] + g : g;
    }
}

void gpu_ia3_backward(float *dx, float *ds, const float *dout, const float *x, const float *s,
                      int N, int C, int acc) {
    if ((long)N * C <= 0) return;
    if (dx) {
        ia3_bwd_dx_kernel<<<gpu_blocks((long)N * C, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(dx, dout, s, N, C, acc);
        launchCheck();
    }
    if (ds) colsum_prod(ds, dout, x, NULL, N, C);
}

/* ------------------------------------------------------------ gated GELU */

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_A 0.044715f

__global__ static void gated_gelu_fwd_kernel(float *out, const float *h0, const float *h1, long n) {
    GRID_LOOP(i, n) {
        float x = h0[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_C * (x + GELU_A * x * x * x))) * h1[i];
    }
}

void gpu_gated_gelu_forward(float *out, const float *h0, const float *h1, long n) {
    if (n <= 0) return;
    gated_gelu_fwd_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(out, h0, h1, n);
    launchCheck();
}

__global__ static void gated_gelu_bwd_kernel(float *dh0, float *dh1, const float *dout,
                                             const float *h0, const float *h1, long n, int acc) {
    GRID_LOOP(i, n) {
        float x = h0[i];
        float t = tanhf(GELU_C * (x + GELU_A * x * x * x));
        float g = 0.5f * x * (1.0f + t);
        float dg = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_C * (1.0f + 3.0f * GELU_A * x * x);
        float g0 = dout[i] * h1[i] * dg, g1 = dout[i] * g;
        dh0[i] = acc ? dh0[i] + g0 : g0;
        dh1[i] = acc ? dh1[i] + g1 : g1;
    }
}

void gpu_gated_gelu_backward(float *dh0, float *dh1, const float *dout, const float *h0,
                             const float *h1, long n, int acc) {
    if (n <= 0) return;
    gated_gelu_bwd_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(dh0, dh1, dout, h0, h1, n, acc);
    launchCheck();
}

/* ------------------------------------------------------------ ReLU */

__global__ static void relu_fwd_kernel(float *out, const float *x, long n) {
    GRID_LOOP(i, n) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void gpu_relu_forward(float *out, const float *x, long n) {
    if (n <= 0) return;
    relu_fwd_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(out, x, n);
    launchCheck();
}

__global__ static void relu_bwd_kernel(float *dx, const float *dout, const float *x, long n, int acc) {
    GRID_LOOP(i, n) {
        float g = x[i] > 0.0f ? dout[i] : 0.0f;
        dx[i] = acc ? dx[i] + g : g;
    }
}

void gpu_relu_backward(float *dx, const float *dout, const float *x, long n, int acc) {
    if (n <= 0) return;
    relu_bwd_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(dx, dout, x, n, acc);
    launchCheck();
}

/* ------------------------------------------------------------ relative position bias */

void gpu_relpos_buckets(int *buckets, int Tq, int Tk, int bidirectional, int num_buckets,
                        int max_distance) {
    size_t n = (size_t)Tq * Tk;
    int *h = (int *)mallocCheck(sizeof(int) * (n ? n : 1));
    op_relpos_buckets(h, Tq, Tk, bidirectional, num_buckets, max_distance);
    gpu_upload(buckets, h, sizeof(int) * n);
    free(h);
}

__global__ static void relpos_fwd_kernel(float *bias, const float *table, const int *buckets, int H,
                                         long TT) {
    GRID_LOOP(idx, (long)H * TT) {
        long h = idx / TT, ij = idx % TT;
        bias[idx] = table[(size_t)buckets[ij] * H + h];
    }
}

void gpu_relpos_bias_forward(float *bias, const float *table, const int *buckets, int H, int Tq,
                             int Tk) {
    long TT = (long)Tq * Tk;
    if (H * TT <= 0) return;
    relpos_fwd_kernel<<<gpu_blocks(H * TT, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(bias, table, buckets, H, TT);
    launchCheck();
}

/* One block per (bucket, head): a gather in a fixed order, no atomics. */
__global__ static void relpos_bwd_kernel(float *dtable, const float *dbias, const int *buckets,
                                         int H, long TT) {
    int bucket = blockIdx.x, h = blockIdx.y;
    const float *d = dbias + (size_t)h * TT;
    float s = 0.0f;
    for (long ij = threadIdx.x; ij < TT; ij += blockDim.x)
        if (buckets[ij] == bucket) s += d[ij];
    s = block_sum(s);
    if (threadIdx.x == 0) dtable[(size_t)bucket * H + h] += s;
}

void gpu_relpos_bias_backward(float *dtable, const float *dbias, const int *buckets, int H,
                              int Tq, int Tk) {
    long TT = (long)Tq * Tk;
    if (H * TT <= 0) return;
    /* the number of buckets is not an argument: find the largest in use */
    int *hb = (int *)mallocCheck(sizeof(int) * TT);
    gpu_download(hb, buckets, sizeof(int) * TT);
    int nb = 0;
    for (long i = 0; i < TT; i++)
        if (hb[i] + 1 > nb) nb = hb[i] + 1;
    free(hb);
    dim3 grid(nb, H);
    relpos_bwd_kernel<<<grid, 256, 0, gpu_stream()>>>(dtable, dbias, buckets, H, TT);
    launchCheck();
}

/* ------------------------------------------------------------ attention */

/* One warp per score row (h, i) of one batch row: add the bias, mask
 * (padding keys, causal), softmax in place. Masked entries become 0, and a
 * row with no visible key is all 0 (as op_attention_forward). */
__global__ static void softmax_rows_kernel(float *P, const float *bias, const uint8_t *mask,
                                           int causal, int H, int Tq, int Tk) {
    long row = blockIdx.x * (long)(blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= (long)H * Tq) return;
    int i = (int)(row % Tq);
    float *p = P + row * Tk;
    const float *b = bias ? bias + row * Tk : NULL; /* bias (H,Tq,Tk) rows line up */
    int jmax = causal ? (i + 1 < Tk ? i + 1 : Tk) : Tk;
    float mx = -INFINITY;
    for (int j = lane; j < jmax; j += 32) {
        if (mask && !mask[j]) continue;
        float s = p[j] + (b ? b[j] : 0.0f);
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < Tk; j += 32) {
        if (j >= jmax || (mask && !mask[j])) {
            p[j] = 0.0f;
            continue;
        }
        float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int j = lane; j < jmax; j += 32) p[j] *= inv;
}

void gpu_attention_forward(float *out, float *probs, const float *q, const float *k,
                           const float *v, const float *bias, const uint8_t *key_mask,
                           const int *kv_index, int flags, int B, int Tq, int Tk, int H, int K) {
    /* ATT_PAD_INVARIANT needs nothing here: a warp sums a row's visible
     * keys by their index, so the padded keys after them add nothing (the
     * scores as a whole are not padding-invariant on a GPU: cuBLAS may
     * choose its algorithm by the padded length) */
    int HK = H * K, causal = (flags & ATT_CAUSAL) != 0;
    long TT = (long)Tq * Tk;
    const int warps = 8;
    int blocks = (int)(((long)H * Tq + warps - 1) / warps);
    for (int b = 0; b < B; b++) {
        int bk = kv_index ? kv_index[b] : b;
        const float *qb = q + (size_t)b * Tq * HK;
        const float *kb = k + (size_t)bk * Tk * HK;
        const float *vb = v + (size_t)bk * Tk * HK;
        float *pb = probs + (size_t)b * H * TT;
        /* scores (H: Tq,Tk) = Q_h K_h^T */
        gpu_gemm_sbatched(0, 1, Tq, Tk, K, 1.0f, qb, HK, K, kb, HK, K, 0.0f, pb, Tk, TT, H);
        softmax_rows_kernel<<<blocks, warps * 32, 0, gpu_stream()>>>(
            pb, bias, key_mask ? key_mask + (size_t)bk * Tk : NULL, causal, H, Tq, Tk);
        launchCheck();
        /* out_h (Tq,K) = P_h V_h */
        gpu_gemm_sbatched(0, 0, Tq, K, Tk, 1.0f, pb, Tk, TT, vb, HK, K, 0.0f,
                          out + (size_t)b * Tq * HK, HK, K, H);
    }
}

/* dS = P * (dP - sum_j P dP), one warp per row, in place on dP. */
__global__ static void softmax_bwd_rows_kernel(float *dP, const float *P, long rows, int Tk) {
    long row = blockIdx.x * (long)(blockDim.x >> 5) + (threadIdx.x >> 5);
    int lane = threadIdx.x & 31;
    if (row >= rows) return;
    const float *p = P + row * Tk;
    float *d = dP + row * Tk;
    float dot = 0.0f;
    for (int j = lane; j < Tk; j += 32) dot += p[j] * d[j];
    dot = warp_sum(dot);
    for (int j = lane; j < Tk; j += 32) d[j] = p[j] * (d[j] - dot);
}

/* dbias (H*TT) += sum over b of dS_b, b in order. */
__global__ static void sum_batches_kernel(float *dbias, const float *dS, int B, long n) {
    GRID_LOOP(i, n) {
        float s = 0.0f;
        for (int b = 0; b < B; b++) s += dS[(size_t)b * n + i];
        dbias[i] += s;
    }
}

void gpu_attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                            const float *dout, const float *q, const float *k, const float *v,
                            const float *probs, int B, int Tq, int Tk, int H, int K, int acc) {
    int HK = H * K;
    long TT = (long)Tq * Tk;
    float beta = acc ? 1.0f : 0.0f; /* each (b, head) block of dq, dk, dv is written by one GEMM */
    for (int b = 0; b < B; b++) {
        size_t oq = (size_t)b * Tq * HK, ok = (size_t)b * Tk * HK;
        const float *pb = probs + (size_t)b * H * TT;
        float *sb = scratch + (size_t)b * H * TT;
        /* dP_h = dO_h V_h^T ; dV_h (+)= P_h^T dO_h */
        gpu_gemm_sbatched(0, 1, Tq, Tk, K, 1.0f, dout + oq, HK, K, v + ok, HK, K, 0.0f, sb, Tk, TT, H);
        if (dv) gpu_gemm_sbatched(1, 0, Tk, K, Tq, 1.0f, pb, Tk, TT, dout + oq, HK, K, beta, dv + ok, HK, K, H);
    }
    long rows = (long)B * H * Tq;
    const int warps = 8;
    softmax_bwd_rows_kernel<<<(int)((rows + warps - 1) / warps), warps * 32, 0, gpu_stream()>>>(
        scratch, probs, rows, Tk);
    launchCheck();
    if (dbias) {
        sum_batches_kernel<<<gpu_blocks(H * TT, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(
            dbias, scratch, B, H * TT);
        launchCheck();
    }
    for (int b = 0; b < B; b++) {
        size_t oq = (size_t)b * Tq * HK, ok = (size_t)b * Tk * HK;
        float *sb = scratch + (size_t)b * H * TT;
        /* dQ_h (+)= dS_h K_h ; dK_h (+)= dS_h^T Q_h */
        if (dq) gpu_gemm_sbatched(0, 0, Tq, K, Tk, 1.0f, sb, Tk, TT, k + ok, HK, K, beta, dq + oq, HK, K, H);
        if (dk) gpu_gemm_sbatched(1, 0, Tk, K, Tq, 1.0f, sb, Tk, TT, q + oq, HK, K, beta, dk + ok, HK, K, H);
    }
}

/* ------------------------------------------------------------ cross-entropy */

__global__ static void ce_fwd_kernel(float *loss, float *lse, const float *logits,
                                     const int *targets, int V) {
    int n = blockIdx.x;
    const float *l = logits + (size_t)n * V;
    float mx = -INFINITY;
    for (int i = threadIdx.x; i < V; i += blockDim.x) mx = fmaxf(mx, l[i]);
    mx = block_max(mx);
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += blockDim.x) s += expf(l[i] - mx);
    s = block_sum(s);
    if (threadIdx.x == 0) {
        float z = mx + logf(s);
        lse[n] = z;
        int t = targets[n];
        loss[n] = t > 0 ? z - l[t] : 0.0f;
    }
}

void gpu_crossentropy_forward(float *loss, float *lse, const float *logits, const int *targets,
                              int N, int V) {
    if (N <= 0) return;
    ce_fwd_kernel<<<N, 1024, 0, gpu_stream()>>>(loss, lse, logits, targets, V);
    launchCheck();
}

__global__ static void ce_bwd_kernel(float *dlogits, const float *logits, const float *lse,
                                     const int *targets, const float *weight, int V) {
    int n = blockIdx.x;
    float *d = dlogits + (size_t)n * V;
    float w = weight[n];
    int t = targets[n];
    if (w == 0.0f || t <= 0) {
        for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = 0.0f;
        return;
    }
    const float *l = logits + (size_t)n * V;
    float z = lse[n];
    for (int i = threadIdx.x; i < V; i += blockDim.x) d[i] = w * expf(l[i] - z) - (i == t ? w : 0.0f);
}

void gpu_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                               const int *targets, const float *weight, int N, int V) {
    if (N <= 0) return;
    ce_bwd_kernel<<<N, 1024, 0, gpu_stream()>>>(dlogits, logits, lse, targets, weight, V);
    launchCheck();
}

__global__ static void add_kernel(float *y, const float *x, long n) {
    GRID_LOOP(i, n) y[i] += x[i];
}

void gpu_add_inplace(float *y, const float *x, long n) {
    if (n <= 0) return;
    add_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(y, x, n);
    launchCheck();
}

/* ------------------------------------------------------------ AdamW */

/* The arithmetic of optim.c's adamw_step (torch.optim.AdamW, single-tensor
 * path), element by element. */
__global__ static void adamw_kernel(float *p, float *m, float *v, const float *grad, long n,
                                    float b1, float b2, float eps, float decay, int use_decay,
                                    float grad_scale, float step_size, float bc2_sqrt) {
    GRID_LOOP(i, n) {
        float gi = grad[i] * grad_scale;
        float pi = p[i];
        if (use_decay) pi *= decay;
        float mi = m[i] * b1 + (1.0f - b1) * gi;
        float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = pi - step_size * (mi / denom);
    }
}

void gpu_adamw_step(float *p, float *m, float *v, const float *grad, long n, float lr, float b1,
                    float b2, float eps, float wd, float grad_scale, int t) {
    if (n <= 0) return;
    double bc1 = 1.0 - pow((double)b1, (double)t);
    double bc2 = 1.0 - pow((double)b2, (double)t);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    adamw_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, gpu_stream()>>>(
        p, m, v, grad, n, b1, b2, eps, 1.0f - lr * wd, wd != 0.0f, grad_scale, step_size, bc2_sqrt);
    launchCheck();
}

/* ------------------------------------------------------------ Adafactor */

/* vr[r] = rho vr[r] + (1-rho) mean_c (g^2 + eps1), one block per row. */
__global__ static void af_rows_kernel(float *vr, const float *g, int cols, float rho, float eps1) {
    int r = blockIdx.x;
    const float *gr = g + (size_t)r * cols;
    float s = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += gr[c] * gr[c] + eps1;
    s = block_sum(s);
    if (threadIdx.x == 0) vr[r] = rho * vr[r] + (1.0f - rho) * (s / cols);
}

/* vc[c] = rho vc[c] + (1-rho) mean_r (g^2 + eps1), rows in a fixed order. */
__global__ static void af_cols_kernel(float *vc, const float *g, int rows, int cols, float rho,
                                      float eps1) {
    __shared__ float sh[32][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float s = 0.0f;
    if (c < cols)
        for (int r = threadIdx.y; r < rows; r += 32) {
            float x = g[(size_t)r * cols + c];
            s += x * x + eps1;
        }
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < cols) {
        float t = 0.0f;
        for (int y = 0; y < 32; y++) t += sh[y][threadIdx.x];
        vc[c] = rho * vc[c] + (1.0f - rho) * (t / rows);
    }
}

/* Partial sums (one per block, fixed grid) of x, or of x^2. */
#define AF_BLOCKS 128
__global__ static void af_partial_kernel(float *partials, const float *x, long n, int square) {
    float s = 0.0f;
    GRID_LOOP(i, n) s += square ? x[i] * x[i] : x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

/* out[0] = sum of the AF_BLOCKS partials, in order. */
__global__ static void af_finish_kernel(float *out, const float *partials) {
    if (threadIdx.x == 0) {
        float s = 0.0f;
        for (int i = 0; i < AF_BLOCKS; i++) s += partials[i];
        out[0] = s;
    }
}

/* vector case: v = rho v + (1-rho)(g^2 + eps1) ; u = g / sqrt(v) */
__global__ static void af_vec_kernel(float *u, float *v, const float *g, long n, float rho, float eps1) {
    GRID_LOOP(i, n) {
        float vi = rho * v[i] + (1.0f - rho) * (g[i] * g[i] + eps1);
        v[i] = vi;
        u[i] = g[i] / sqrtf(vi);
    }
}

/* matrix case: u = g / sqrt(vr_r / mean(vr)) / sqrt(vc_c); sums[0] = sum vr */
__global__ static void af_mat_kernel(float *u, const float *g, const float *vr, const float *vc,
                                     const float *sums, int rows, int cols) {
    float mean_vr = sums[0] / rows;
    GRID_LOOP(i, (long)rows * cols) {
        long r = i / cols, c = i % cols;
        float rf = 1.0f / sqrtf(vr[r] / mean_vr);
        u[i] = rf / sqrtf(vc[c]) * g[i];
    }
}

/* lr' = lr * max(eps2, rms(p)) when scale (sums[2] = sum p^2);
 * p -= lr' wd p ; p -= lr' u / max(1, rms(u) / clip) (sums[1] = sum u^2) */
__global__ static void af_apply_kernel(float *p, const float *u, const float *sums, long n, float lr,
                                       float clip, float wd, int scale, float eps2) {
    if (scale) lr *= fmaxf(sqrtf(sums[2] / n), eps2);
    float ur = sqrtf(sums[1] / n) / clip;
    float div = fmaxf(ur, 1.0f);
    GRID_LOOP(i, n) {
        float pi = p[i];
        if (wd != 0.0f) pi -= pi * wd * lr;
        p[i] = pi - lr * (u[i] / div);
    }
}

static float *af_scratch; /* device: AF_BLOCKS partials + 3 sums; lives until exit */

void gpu_adafactor_step(float *p, float *vr, float *vc, float *v, float *work, const float *grad,
                        int rows, int cols, float lr, float eps1, float clip, float decay_rate,
                        float wd, int scale_parameter, float eps2, int t) {
    long n = (long)rows * cols;
    if (n <= 0) return;
    cudaStream_t s = gpu_stream();
    if (!af_scratch) af_scratch = (float *)gpu_malloc(sizeof(float) * (AF_BLOCKS + 3));
    float *partials = af_scratch, *sums = af_scratch + AF_BLOCKS;
    float rho = 1.0f - powf((float)t, decay_rate);
    if (scale_parameter) {
        af_partial_kernel<<<AF_BLOCKS, 256, 0, s>>>(partials, p, n, 1);
        launchCheck();
        af_finish_kernel<<<1, 32, 0, s>>>(sums + 2, partials);
        launchCheck();
    }
    if (!vr) {
        af_vec_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(work, v, grad, n, rho, eps1);
        launchCheck();
    } else {
        af_rows_kernel<<<rows, row_threads(cols), 0, s>>>(vr, grad, cols, rho, eps1);
        launchCheck();
        dim3 block(32, 32), grid((cols + 31) / 32);
        af_cols_kernel<<<grid, block, 0, s>>>(vc, grad, rows, cols, rho, eps1);
        launchCheck();
        af_partial_kernel<<<AF_BLOCKS, 256, 0, s>>>(partials, vr, rows, 0);
        launchCheck();
        af_finish_kernel<<<1, 32, 0, s>>>(sums, partials);
        launchCheck();
        af_mat_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(work, grad, vr, vc, sums, rows, cols);
        launchCheck();
    }
    af_partial_kernel<<<AF_BLOCKS, 256, 0, s>>>(partials, work, n, 1);
    launchCheck();
    af_finish_kernel<<<1, 32, 0, s>>>(sums + 1, partials);
    launchCheck();
    af_apply_kernel<<<gpu_blocks(n, EW_THREADS), EW_THREADS, 0, s>>>(p, work, sums, n, lr, clip, wd,
                                                                     scale_parameter, eps2);
    launchCheck();
}

/* ------------------------------------------------------------ optim.h on the device */

void gpu_opt_step(optim *o, float *params, const float *grads, float *state, float *scratch) {
    o->step++;
    if (o->kind == OPT_ADAMW) {
        gpu_adamw_step(params, state, state + o->n, grads, (long)o->n, o->lr, o->beta1, o->beta2,
                       o->eps, o->weight_decay, 1.0f, (int)o->step);
        return;
    }
    for (int i = 0; i < o->n_tensors; i++) {
        const t5_tensor *t = &o->tensors[i];
        float *st = state + o->state_off[i];
        int mat = t->ndim == 2;
        int rows = mat ? (int)t->shape[0] : 1, cols = mat ? (int)t->shape[1] : (int)t->numel;
        gpu_adafactor_step(params + t->offset, mat ? st : NULL, mat ? st + rows : NULL,
                           mat ? NULL : st, scratch, grads + t->offset, rows, cols, o->lr, o->eps1,
                           o->clip_threshold, o->decay_rate, o->weight_decay, o->scale_parameter,
                           o->eps2, (int)o->step);
    }
}
