/* device.h - choosing the backend at run time: DEVICE=cpu|cuda.
 *
 * Compiles with and without CUDA. A stage resolves its device once:
 *
 *     int dev = dev_resolve(cfg, "train.device");   // dies with one line on error
 *     const mc_ops *ops = dev_ops(dev);
 *
 * Precedence: the environment variable DEVICE (set by `make DEVICE=cuda`,
 * which recipes/gpu.mk exports) wins over the config key, which wins over the
 * default `cpu`. Asking for cuda from a binary built without GPU=1, or on a
 * machine where the CUDA runtime finds no device, is a one-line error; there
 * is no silent fallback to the CPU.
 *
 * The precision of GPU matrix products comes from the key given to
 * dev_resolve with ".device" replaced by ".gpu_math" (e.g. train.gpu_math),
 * overridden by $MATS_GPU_MATH: fp32 (default), tf32 or bf16 (see gpu.h).
 *
 * mc_ops is the dispatch table a model or stage holds instead of calling
 * op_* / gpu_* directly: the same signatures as ops.h and backend.h, plus
 * memory functions. On the CPU table "device memory" is host memory and
 * upload / download are memcpy, so code written against the table runs
 * unchanged on both: t5_model holds one (t5.h: t5_to_device), and so do
 * the optimizer (optim.h: opt_to_device) and the Gram accumulators
 * (stats.h), which is how train, eval, fisher and gram run on cuda.
 *
 * Backward entries follow ops.h: parameter gradients (dw, ds, dtable, dbias)
 * are accumulated; activation gradients (dx, dq, dk, dv, dh0, dh1) are
 * accumulated when `acc` is 1 and overwritten when it is 0 (relu_backward's dx too). ops.h's
 * ops_zero and ops_copy are the byte-sized `zero` and `copy` entries here.
 */
#ifndef MC_DEVICE_H
#define MC_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum { MC_DEV_CPU = 0, MC_DEV_CUDA = 1 };

/* 1 if this binary carries the CUDA backend (built with GPU=1). */
int dev_built_with_cuda(void);

/* Parse a device name ("cpu", "cuda"); -1 with mc_error() otherwise. */
int dev_parse(const char *name, const char *where);

/* Make device `dev` usable: for cuda, check the build and the hardware and
 * initialise the runtime (gpu_init) with precision `math` ("fp32", "tf32",
 * "bf16" or NULL for fp32). 0, or -1 with a one-line mc_error(). */
int dev_open(int dev, const char *math);

/* DEVICE / config / default as described above, then dev_open. `key` may be
 * NULL (environment and default only). Returns MC_DEV_*; -1 with mc_error(). */
int dev_select(mc_cfg *cfg, const char *key);
/* dev_select that dies with the message. */
int dev_resolve(mc_cfg *cfg, const char *key);

/* A stage's --device option: checks the name (dies with one line naming
 * the option) and makes it win over DEVICE and the config by setting
 * DEVICE for this process. */
void dev_option(const char *name);

/* The --device row of a stage's option table (opts.h): dev_option on its
 * value. */
int dev_opt(const opt_spec *o, const char *name);
#define OPT_ROW_DEVICE(help_)                                                                      \
    {.name = "--device", .kind = OPT_STR, .arg = "cpu|cuda", .call = dev_opt, .help = (help_)}

/* The device's part of a stage's key: for cuda, `key`=cuda (e.g.
 * train.device=cuda) unless the config holds it already, and the matching
 * gpu_math entry when the precision in use differs from the config's (as
 * with MATS_GPU_MATH); nothing on the CPU, so CPU keys do not change. */
struct mc_key;
void dev_key(struct mc_key *k, mc_cfg *cfg, const char *key, int dev);

/* "cpu" or "cuda (NVIDIA H100 80GB HBM3, tf32)"; owned by the library. */
const char *dev_describe(int dev);

struct optim;
typedef struct mc_ops {
    const char *name;
    /* memory: buffers of this device */
    void *(*alloc)(size_t bytes);           /* never NULL for bytes > 0; zeroed */
    void (*release)(void *p);
    void (*upload)(void *dst, const void *host_src, size_t bytes);
    void (*download)(void *host_dst, const void *src, size_t bytes);
    void (*copy)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *p, size_t bytes);
    void (*sync)(void);
    /* backend.h */
    void (*gemm)(int transA, int transB, int m, int n, int k, float alpha, const float *A, int lda,
                 const float *B, int ldb, float beta, float *C, int ldc);
    void (*gemm_sbatched)(int transA, int transB, int m, int n, int k, float alpha,
                          const float *A, int lda, long strideA, const float *B, int ldb,
                          long strideB, float beta, float *C, int ldc, long strideC, int batch);
    void (*syrk)(int trans, int n, int k, float alpha, const float *A, int lda, float beta,
                 float *C, int ldc);
    /* ops.h */
    void (*embed_forward)(float *out, const int *ids, const float *table, int N, int D);
    void (*embed_backward)(float *dtable, const float *dout, const int *ids, int N, int D);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *x, const float *w, int N, int D,
                            float eps);
    void (*rmsnorm_backward)(float *dx, float *dw, const float *dout, const float *x,
                             const float *w, const float *rstd, int N, int D, int acc);
    void (*linear_forward)(float *out, const float *x, const float *w, int N, int I, int O);
    void (*linear_backward)(float *dx, float *dw, const float *dout, const float *x,
                            const float *w, int N, int I, int O, int acc);
    void (*ia3_forward)(float *out, const float *x, const float *s, int N, int C);
    void (*ia3_backward)(float *dx, float *ds, const float *dout, const float *x, const float *s,
                         int N, int C, int acc);
    void (*gated_gelu_forward)(float *out, const float *h0, const float *h1, long n);
    void (*gated_gelu_backward)(float *dh0, float *dh1, const float *dout, const float *h0,
                                const float *h1, long n, int acc);
    void (*relu_forward)(float *out, const float *x, long n);
    void (*relu_backward)(float *dx, const float *dout, const float *x, long n, int acc);
    void (*relpos_buckets)(int *buckets, int Tq, int Tk, int bidirectional, int num_buckets,
                           int max_distance);
    void (*relpos_bias_forward)(float *bias, const float *table, const int *buckets, int H,
                                int Tq, int Tk);
    void (*relpos_bias_backward)(float *dtable, const float *dbias, const int *buckets, int H,
                                 int Tq, int Tk);
    /* kv_index is a host array on every device */
    void (*attention_forward)(float *out, float *probs, const float *q, const float *k,
                              const float *v, const float *bias, const uint8_t *key_mask,
                              const int *kv_index, int flags, int B, int Tq, int Tk, int H,
                              int K); /* flags: ops.h ATT_* */
    void (*attention_backward)(float *dq, float *dk, float *dv, float *dbias, float *scratch,
                               const float *dout, const float *q, const float *k, const float *v,
                               const float *probs, int B, int Tq, int Tk, int H, int K,
                               int acc);
    void (*crossentropy_forward)(float *loss, float *lse, const float *logits, const int *targets,
                                 int N, int V);
    void (*crossentropy_backward)(float *dlogits, const float *logits, const float *lse,
                                  const int *targets, const float *weight, int N, int V);
    void (*add_inplace)(float *y, const float *x, long n);
    /* vectors (stats.c, optim.c): acc += alpha x^2; x . y (in double); x *= a */
    void (*sq_accumulate)(float *acc, const float *x, long n, float alpha);
    double (*dot)(long n, const float *x, const float *y);
    void (*scale)(long n, float a, float *x);
    /* opt_step (optim.h) of the state in this device's memory, scratch one
     * tensor's floats; NULL on the CPU, where optim.c steps on the host */
    void (*opt_step)(struct optim *o, float *params, const float *grads, float *state, float *scratch);
    /* merge.h's K-FAC operator of N models (Acat, Gcat as mrg_kfac holds
     * them, host) held on this device, applied to host vectors: y = K x for
     * x and y of out*in floats; NULL on the CPU, where merge applies
     * mrg_kfac on the host */
    void *(*kfac_new)(int N, int out, int in, const float *Acat_host, const float *Gcat_host);
    void (*kfac_apply_host)(const void *k, const float *x_host, float *y_host);
    void (*kfac_free)(void *k);
} mc_ops;

/* The table of device `dev` (MC_DEV_*); dies if dev is cuda in a binary
 * without the CUDA backend (dev_open reports that case gracefully first). */
const mc_ops *dev_ops(int dev);

#endif
