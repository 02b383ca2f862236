/* t5_dev_shim.c - what the renamed calls of build/gpu/t5_dev.o land on (see
 * t5_dev.h): the ops of ops.h forwarded to their gpu_ kernels, and an
 * allocator of CUDA managed memory. */
#include <cuda_runtime_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gpu.h"
#include "ops.h"
#include "t5_dev.h"

int dv_sync_each = 1;

void dv_init(void) {
    int dev = 0, concurrent = 0;
    if (cudaGetDevice(&dev) == cudaSuccess &&
        cudaDeviceGetAttribute(&concurrent, cudaDevAttrConcurrentManagedAccess, dev) == cudaSuccess)
        dv_sync_each = !concurrent;
}

void *dv_managed(size_t bytes) {
    void *p = NULL;
    cudaError_t e = cudaMallocManaged(&p, bytes ? bytes : 16, cudaMemAttachGlobal);
    if (e != cudaSuccess) die("cudaMallocManaged of %zu bytes: %s", bytes, cudaGetErrorString(e));
    return p;
}

static int is_managed(const void *p) {
    struct cudaPointerAttributes a;
    if (!p || cudaPointerGetAttributes(&a, p) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return a.type == cudaMemoryTypeManaged;
}

/* The allocator of common.h, renamed in t5_dev.o. */
void *dv_malloc_(size_t n, const char *file, int line) {
    (void)file, (void)line;
    return dv_managed(n);
}

void *dv_calloc_(size_t n, size_t sz, const char *file, int line) {
    (void)file, (void)line;
    void *p = dv_managed(n * sz);
    if (n * sz >= (1u << 20)) {
        gpu_memset0(p, n * sz); /* large blocks are zeroed where they will live */
        gpu_sync();
    } else {
        gpu_sync();
        memset(p, 0, n * sz);
    }
    return p;
}

void dv_free(void *p) {
    if (!p) return;
    if (is_managed(p)) {
        gpu_sync();
        cudaFree(p);
    } else {
        free(p);
    }
}

void *dv_memset(void *p, int c, size_t n) {
    if (c == 0 && n >= 4096 && is_managed(p)) {
        gpu_memset0(p, n); /* queued: ordered with the kernels around it */
        if (dv_sync_each) gpu_sync();
        return p;
    }
    gpu_sync();
    return memset(p, c, n);
}

void *dv_memcpy(void *d, const void *s, size_t n) {
    gpu_sync();
    return memcpy(d, s, n);
}

/* Fortified builds (Ubuntu's default _FORTIFY_SOURCE) may call these. */
void *dv_memset_chk(void *p, int c, size_t n, size_t destlen) {
    if (n > destlen) die("t5_dev: memset of %zu bytes into %zu", n, destlen);
    return dv_memset(p, c, n);
}

void *dv_memcpy_chk(void *d, const void *s, size_t n, size_t destlen) {
    if (n > destlen) die("t5_dev: memcpy of %zu bytes into %zu", n, destlen);
    return dv_memcpy(d, s, n);
}

#define AFTER() \
    do {        \
        if (dv_sync_each) gpu_sync(); \
    } while (0)

/* ops.h's parallel zeroing (of the activation-gradient block): on the
 * device, queued like a kernel, so the block never travels to the host. */
void dv_ops_zero(float *x, long n) {
    if (n >= 1024 && is_managed(x)) {
        gpu_memset0(x, sizeof(float) * (size_t)n);
        AFTER();
        return;
    }
    gpu_sync();
    ops_zero(x, n);
}

void dv_op_embed_forward(float *out, const int *ids, const float *table, int N, int D) {
    gpu_embed_forward(out, ids, table, N, D);
    AFTER();
}
void dv_op_embed_backward(float *dtable, const float *dout, const int *ids, int N, int D) {
    gpu_embed_backward(dtable, dout, ids, N, D);
    AFTER();
}
void dv_op_rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, int N, int D,
                           float eps) {
    gpu_rmsnorm_forward(out, rstd, x, w, N, D, eps);
    AFTER();
}
void dv_op_rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x,
                            const float *w, const float *rstd, int N, int D) {
    gpu_rmsnorm_backward(dx, dw, dout, x, w, rstd, N, D);
    AFTER();
}
void dv_op_linear_forward(float *out, const float *x, const float *w, int N, int I, int O) {
    gpu_linear_forward(out, x, w, N, I, O);
    AFTER();
}
void dv_op_linear_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                           int N, int I, int O) {
    gpu_linear_backward(dx, dw, dout, x, w, N, I, O);
    AFTER();
}
void dv_op_ia3_forward(float *out, const float *x, const float *s, int N, int C) {
    gpu_ia3_forward(out, x, s, N, C);
    AFTER();
}
void dv_op_ia3_backward(float *dx, float *ds, const float *dout, const float *x, const float *s,
                        int N, int C) {
    gpu_ia3_backward(dx, ds, dout, x, s, N, C);
    AFTER();
}
void dv_op_gated_gelu_forward(float *out, const float *h0, const float *h1, long n) {
    gpu_gated_gelu_forward(out, h0, h1, n);
    AFTER();
}
void dv_op_gated_gelu_backward(float *dh0, float *dh1, const float *dout, const float *h0,
                               const float *h1, long n) {
    gpu_gated_gelu_backward(dh0, dh1, dout, h0, h1, n);
    AFTER();
}
/* Buckets are made on the host (op_relpos_bucket) straight into managed memory. */
void dv_op_relpos_buckets(int *buckets, int Tq, int Tk, int bidirectional, int num_buckets,
                          int max_distance) {
    gpu_sync();
    op_relpos_buckets(buckets, Tq, Tk, bidirectional, num_buckets, max_distance);
}
void dv_op_relpos_bias_forward(float *bias, const float *table, const int *buckets, int H, int Tq,
                               int Tk) {
    gpu_relpos_bias_forward(bias, table, buckets, H, Tq, Tk);
    AFTER();
}
void dv_op_relpos_bias_backward(float *dtable, const float *dbias, const int *buckets, int H,
                                int Tq, int Tk) {
    gpu_relpos_bias_backward(dtable, dbias, buckets, H, Tq, Tk);
    AFTER();
}
void dv_op_attention_forward(float *out, float *probs, const float *q, const float *k,
                             const float *v, const float *bias, const uint8_t *key_mask,
                             const int *kv_index, int causal, int B, int Tq, int Tk, int H, int K) {
    gpu_attention_forward(out, probs, q, k, v, bias, key_mask, kv_index, causal, B, Tq, Tk, H, K);
    AFTER();
}
void dv_op_attention_backward(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                              const float *dout, const float *q, const float *k, const float *v,
                              const float *probs, int B, int Tq, int Tk, int H, int K) {
    gpu_attention_backward(dq, dk, dv, dbias, scratch, dout, q, k, v, probs, B, Tq, Tk, H, K);
    AFTER();
}
/* The model sums the per-token losses on the host right after this one. */
void dv_op_crossentropy_forward(float *loss, float *lse, const float *logits, const int *targets,
                                int N, int V) {
    gpu_crossentropy_forward(loss, lse, logits, targets, N, V);
    gpu_sync();
}
void dv_op_crossentropy_backward(float *dlogits, const float *logits, const float *lse,
                                 const int *targets, const float *weight, int N, int V) {
    gpu_crossentropy_backward(dlogits, logits, lse, targets, weight, N, V);
    AFTER();
}
void dv_op_add_inplace(float *y, const float *x, long n) {
    gpu_add_inplace(y, x, n);
    AFTER();
}
