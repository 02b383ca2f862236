/* device.c - DEVICE=cpu|cuda selection and the mc_ops dispatch tables (see
 * device.h). Builds without CUDA; the cuda table exists only with MC_GPU. */
#include "device.h"
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "key.h"
#include "ops.h"
#ifdef MC_GPU
#include "gpu.h"
#endif

int dev_built_with_cuda(void) {
#ifdef MC_GPU
    return 1;
#else
    return 0;
#endif
}

int dev_parse(const char *name, const char *where) {
    if (name && !strcmp(name, "cpu")) return MC_DEV_CPU;
    if (name && !strcmp(name, "cuda")) return MC_DEV_CUDA;
    return mc_fail("%s: device '%s' is not one of cpu, cuda", where ? where : "DEVICE",
                   name ? name : "");
}

int dev_open(int dev, const char *math) {
    if (dev == MC_DEV_CPU) return 0;
    if (dev != MC_DEV_CUDA) return mc_fail("unknown device %d", dev);
#ifdef MC_GPU
    int mode = GPU_MATH_FP32;
    if (math && *math && (mode = gpu_math_parse(math)) < 0)
        return mc_fail("gpu_math '%s' is not one of fp32, tf32, bf16", math);
    if (!gpu_available())
        return mc_fail("device cuda asked for (--device, DEVICE or a .device key) but no CUDA device "
                       "is present (driver or GPU missing); use --device cpu or DEVICE=cpu");
    if (gpu_init(-1) < 0) return -1;
    gpu_set_math(mode);
    return 0;
#else
    (void)math;
    return mc_fail("device cuda asked for (--device, DEVICE or a .device key) but this binary was "
                   "built without the CUDA backend: rebuild with `make GPU=1`, or use --device cpu "
                   "or DEVICE=cpu");
#endif
}

/* "<stage>.NAME" from "<stage>.device" (or NAME alone for a bare key) */
static int sibling_key(char *out, size_t cap, const char *key, const char *name) {
    const char *dot = strrchr(key, '.');
    size_t pre = dot ? (size_t)(dot - key) : 0;
    if (pre + 1 + strlen(name) + 1 > cap) return mc_fail("config key too long: %s", key);
    memcpy(out, key, pre);
    snprintf(out + pre, cap - pre, pre ? ".%s" : "%s", name);
    return 0;
}

/* `key` from the config (default `def`), or from the environment variable
 * `env` when set; *where names the source for messages ("FILE: key",
 * the variable, or `fallback`). */
static int setting(mc_cfg *cfg, const char *key, const char *def, const char *env, const char **value,
                   const char **where, char *buf, size_t cap, const char *fallback) {
    *value = def;
    *where = fallback;
    if (cfg && key) {
        if (cfg_get_str(cfg, key, def, value) < 0) return -1;
        const char *w = cfg_where(cfg, key);
        if (w) {
            snprintf(buf, cap, "%s: %s", w, key);
            *where = buf;
        }
    }
    const char *e = getenv(env);
    if (e && *e) *value = e, *where = env;
    return 0;
}

/* The CPU's product precision: MATS_CPU_MATH, else <stage>.cpu_math, else
 * fp32. Only stages with a config (train, eval, fisher, gram) read it. */
static int cpu_math_select(mc_cfg *cfg, const char *key) {
    char mkey[256], where_buf[320];
    const char *math, *where;
    if (sibling_key(mkey, sizeof mkey, key, "cpu_math") < 0) return -1;
    if (setting(cfg, mkey, "fp32", "MATS_CPU_MATH", &math, &where, where_buf, sizeof where_buf, mkey) < 0)
        return -1;
    int mode = be_math_parse(math);
    if (mode < 0) return mc_fail("%s: cpu_math '%s' is not one of fp32, bf16", where, math);
    if (be_set_cpu_math(mode) < 0) {
        char why[512];
        snprintf(why, sizeof why, "%s", mc_error());
        return mc_fail("%s: %s", where, why);
    }
    return 0;
}

int dev_select(mc_cfg *cfg, const char *key) {
    const char *name, *where;
    char where_buf[320];
    if (setting(cfg, key, "cpu", "DEVICE", &name, &where, where_buf, sizeof where_buf, "default") < 0)
        return -1;
    int dev = dev_parse(name, where);
    if (dev < 0) return -1;

    char mkey[256];
    const char *math, *mwhere;
    if (key && sibling_key(mkey, sizeof mkey, key, "gpu_math") < 0) return -1;
    if (setting(cfg, key ? mkey : NULL, "fp32", "MATS_GPU_MATH", &math, &mwhere, where_buf, sizeof where_buf,
                "default") < 0)
        return -1;
    if (dev_open(dev, math) < 0) return -1;
    if (dev == MC_DEV_CPU && cfg && key && cpu_math_select(cfg, key) < 0) return -1;
    return dev;
}

int dev_resolve(mc_cfg *cfg, const char *key) {
    int dev = dev_select(cfg, key);
    if (dev < 0) die("%s", mc_error());
    return dev;
}

void dev_option(const char *name) {
    if (dev_parse(name, "--device") < 0) die("%s", mc_error());
    setenv("DEVICE", name, 1);
}

int dev_opt(const opt_spec *o, const char *name) {
    (void)o;
    dev_option(name);
    return 0;
}

void dev_key(struct mc_key *k, mc_cfg *cfg, const char *key, int dev) {
    if (dev == MC_DEV_CPU) {
        /* the precision in use when it differs from the config's (MATS_CPU_MATH) */
        char mkey[256];
        if (sibling_key(mkey, sizeof mkey, key, "cpu_math") < 0) return;
        const char *math = be_math_name(be_cpu_math());
        const char *cm = cfg ? cfg_peek(cfg, mkey) : NULL;
        if (strcmp(math, cm ? cm : "fp32") != 0) key_config(k, mkey, math);
        return;
    }
    if (dev != MC_DEV_CUDA) return;
    const char *have = cfg ? cfg_peek(cfg, key) : NULL;
    if (!have || strcmp(have, "cuda") != 0) key_config(k, key, "cuda");
#ifdef MC_GPU
    char mkey[256];
    if (sibling_key(mkey, sizeof mkey, key, "gpu_math") < 0) return;
    const char *math = gpu_math_name(gpu_math());
    const char *cm = cfg ? cfg_peek(cfg, mkey) : NULL;
    if (strcmp(math, cm ? cm : "fp32") != 0) key_config(k, mkey, math); /* e.g. MATS_GPU_MATH */
#endif
}

const char *dev_describe(int dev) {
    static char buf[320];
    if (dev != MC_DEV_CUDA) return "cpu";
#ifdef MC_GPU
    snprintf(buf, sizeof buf, "cuda (%s, %s)", gpu_device_name(), gpu_math_name(gpu_math()));
#else
    snprintf(buf, sizeof buf, "cuda (not built)");
#endif
    return buf;
}

/* ------------------------------------------------------------ CPU table */

static void *cpu_alloc(size_t bytes) { return bytes ? callocCheck(1, bytes) : NULL; }
static void cpu_release(void *p) { free(p); }
/* float-sized, non-overlapping blocks take ops.h's parallel copy and zero
 * (the model's gradient blocks and residual copies); the bytes are the same */
static int float_block(const void *p, size_t bytes) {
    return bytes % sizeof(float) == 0 && (uintptr_t)p % sizeof(float) == 0;
}
static void cpu_copy(void *dst, const void *src, size_t bytes) {
    if (!bytes) return;
    const char *d = dst, *s = src;
    if (float_block(dst, bytes) && float_block(src, bytes) && (d + bytes <= s || s + bytes <= d))
        ops_copy(dst, src, (long)(bytes / sizeof(float)));
    else
        memmove(dst, src, bytes);
}
static void cpu_zero(void *p, size_t bytes) {
    if (!bytes) return;
    if (float_block(p, bytes)) ops_zero(p, (long)(bytes / sizeof(float)));
    else memset(p, 0, bytes);
}
static void cpu_sync(void) {}
static void cpu_sq_accumulate(float *acc, const float *x, long n, float alpha) {
    for (long i = 0; i < n; i++) acc[i] += alpha * x[i] * x[i];
}
static double cpu_dot(long n, const float *x, const float *y) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)x[i] * y[i];
    return s;
}
static void cpu_scale(long n, float a, float *x) {
    for (long i = 0; i < n; i++) x[i] *= a;
}

static const mc_ops cpu_ops = {
    .name = "cpu",
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .sync = cpu_sync,
    .gemm = be_gemm,
    .gemm_sbatched = be_gemm_sbatched,
    .syrk = be_syrk,
    .embed_forward = op_embed_forward,
    .embed_backward = op_embed_backward,
    .rmsnorm_forward = op_rmsnorm_forward,
    .rmsnorm_backward = op_rmsnorm_backward,
    .linear_forward = op_linear_forward,
    .linear_backward = op_linear_backward,
    .ia3_forward = op_ia3_forward,
    .ia3_backward = op_ia3_backward,
    .gated_gelu_forward = op_gated_gelu_forward,
    .gated_gelu_backward = op_gated_gelu_backward,
    .relu_forward = op_relu_forward,
    .relu_backward = op_relu_backward,
    .relpos_buckets = op_relpos_buckets,
    .relpos_bias_forward = op_relpos_bias_forward,
    .relpos_bias_backward = op_relpos_bias_backward,
    .attention_forward = op_attention_forward,
    .attention_backward = op_attention_backward,
    .crossentropy_forward = op_crossentropy_forward,
    .crossentropy_backward = op_crossentropy_backward,
    .add_inplace = op_add_inplace,
    .sq_accumulate = cpu_sq_accumulate,
    .dot = cpu_dot,
    .scale = cpu_scale,
};

/* ------------------------------------------------------------ CUDA table */

#ifdef MC_GPU
static void *cuda_alloc(size_t bytes) {
    void *p = gpu_malloc(bytes);
    gpu_memset0(p, bytes);
    return p;
}

static void *cuda_kfac_new(int N, int out, int in, const float *Acat_host, const float *Gcat_host) {
    gpu_kfac *K = mallocCheck(sizeof *K);
    gpu_kfac_init(K, N, out, in);
    gpu_kfac_upload_cat(K, Acat_host, Gcat_host);
    return K;
}
static void cuda_kfac_apply_host(const void *k, const float *x, float *y) { gpu_kfac_apply_host(k, x, y); }
static void cuda_kfac_free(void *k) {
    gpu_kfac_free(k);
    free(k);
}

static const mc_ops cuda_ops = {
    .name = "cuda",
    .alloc = cuda_alloc,
    .release = gpu_free,
    .upload = gpu_upload,
    .download = gpu_download,
    .copy = gpu_copy,
    .zero = gpu_memset0,
    .sync = gpu_sync,
    .gemm = gpu_gemm,
    .gemm_sbatched = gpu_gemm_sbatched,
    .syrk = gpu_syrk,
    .embed_forward = gpu_embed_forward,
    .embed_backward = gpu_embed_backward,
    .rmsnorm_forward = gpu_rmsnorm_forward,
    .rmsnorm_backward = gpu_rmsnorm_backward,
    .linear_forward = gpu_linear_forward,
    .linear_backward = gpu_linear_backward,
    .ia3_forward = gpu_ia3_forward,
    .ia3_backward = gpu_ia3_backward,
    .gated_gelu_forward = gpu_gated_gelu_forward,
    .gated_gelu_backward = gpu_gated_gelu_backward,
    .relu_forward = gpu_relu_forward,
    .relu_backward = gpu_relu_backward,
    .relpos_buckets = gpu_relpos_buckets,
    .relpos_bias_forward = gpu_relpos_bias_forward,
    .relpos_bias_backward = gpu_relpos_bias_backward,
    .attention_forward = gpu_attention_forward,
    .attention_backward = gpu_attention_backward,
    .crossentropy_forward = gpu_crossentropy_forward,
    .crossentropy_backward = gpu_crossentropy_backward,
    .add_inplace = gpu_add_inplace,
    .sq_accumulate = gpu_sq_accumulate,
    .dot = gpu_dot,
    .scale = gpu_scale,
    .opt_step = gpu_opt_step,
    .kfac_new = cuda_kfac_new,
    .kfac_apply_host = cuda_kfac_apply_host,
    .kfac_free = cuda_kfac_free,
};
#endif

const mc_ops *dev_ops(int dev) {
    if (dev == MC_DEV_CPU) return &cpu_ops;
#ifdef MC_GPU
    if (dev == MC_DEV_CUDA) return &cuda_ops;
#endif
    die("dev_ops: device %d is not available in this build", dev);
}
