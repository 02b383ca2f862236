/* test_device.c - DEVICE=cpu|cuda selection (device.h): names, precedence,
 * one-line errors where CUDA is missing, and the CPU dispatch table. Runs
 * with and without GPU=1; where a GPU is present, cuda must open. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "config.h"
#include "device.h"
#include "harness.h"
#include "ops.h"
#ifdef MC_GPU
#include "gpu.h"
#endif

static int cuda_expected(void) {
#ifdef MC_GPU
    return gpu_available();
#else
    return 0;
#endif
}

static void test_parse(void) {
    CHECK(dev_parse("cpu", NULL) == MC_DEV_CPU, "cpu");
    CHECK(dev_parse("cuda", NULL) == MC_DEV_CUDA, "cuda");
    CHECK(dev_parse("gpu", "x.conf:3: train.device") < 0, "gpu is not a device name");
    CHECK(strstr(mc_error(), "x.conf:3: train.device") && strstr(mc_error(), "'gpu'"),
          "error names where and what: %s", mc_error());
    CHECK(dev_parse(NULL, NULL) < 0, "NULL name");
}

static void test_default_and_env(void) {
    unsetenv("DEVICE");
    unsetenv("MATS_GPU_MATH");
    CHECK(dev_select(NULL, NULL) == MC_DEV_CPU, "default is cpu");
    setenv("DEVICE", "tpu", 1);
    CHECK(dev_select(NULL, NULL) < 0, "DEVICE=tpu rejected");
    CHECK(strstr(mc_error(), "DEVICE") && strstr(mc_error(), "tpu"), "message: %s", mc_error());
    setenv("DEVICE", "", 1);
    CHECK(dev_select(NULL, NULL) == MC_DEV_CPU, "empty DEVICE means unset");
    unsetenv("DEVICE");
}

static void test_config_key(void) {
    unsetenv("DEVICE");
    mc_cfg *c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = cpu\ntrain.gpu_math = tf32\n", "t.conf") == 0, "load");
    CHECK(dev_select(c, "train.device") == MC_DEV_CPU, "config cpu");
    const char *ns[] = {"train", NULL};
    CHECK(cfg_check_unknown(c, ns) == 0, "device and gpu_math keys are read: %s", mc_error());
    cfg_free(c);

    c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = cuda\n", "t.conf") == 0, "load");
    int dev = dev_select(c, "train.device");
    if (cuda_expected()) {
        CHECK(dev == MC_DEV_CUDA, "a GPU is present, cuda must open: %s", mc_error());
    } else {
        CHECK(dev < 0, "cuda without backend or GPU must fail");
        const char *e = mc_error();
        CHECK(!strchr(e, '\n'), "one line: %s", e);
        CHECK(strstr(e, "DEVICE=cpu"), "tells what to do: %s", e);
        if (!dev_built_with_cuda()) CHECK(strstr(e, "GPU=1"), "names the build flag: %s", e);
    }
    /* the environment wins over the config */
    setenv("DEVICE", "cpu", 1);
    CHECK(dev_select(c, "train.device") == MC_DEV_CPU, "DEVICE=cpu overrides train.device = cuda");
    unsetenv("DEVICE");
    cfg_free(c);

    c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = metal\n", "t.conf") == 0, "load");
    CHECK(dev_select(c, "train.device") < 0, "unknown device in config");
    CHECK(strstr(mc_error(), "t.conf:1") && strstr(mc_error(), "metal"), "names file and line: %s",
          mc_error());
    cfg_free(c);
}

static void test_bad_math(void) {
    unsetenv("DEVICE");
    mc_cfg *c = cfg_new();
    CHECK(cfg_load_text(c, "train.device = cuda\ntrain.gpu_math = fp8\n", "t.conf") == 0, "load");
    int dev = dev_select(c, "train.device");
    CHECK(dev < 0, "fp8 rejected (or no cuda)");
    if (dev_built_with_cuda()) CHECK(strstr(mc_error(), "fp8"), "names the value: %s", mc_error());
    cfg_free(c);
}

/* The CPU table runs the ops of ops.h: same bytes as calling them directly. */
static void test_cpu_table(void) {
    const mc_ops *o = dev_ops(MC_DEV_CPU);
    CHECK(!strcmp(o->name, "cpu"), "name");
    int N = 3, D = 5;
    float *x = o->alloc(sizeof(float) * N * D), *w = o->alloc(sizeof(float) * D);
    for (int i = 0; i < D; i++) CHECK(w[i] == 0.0f, "alloc zeroes");
    float hx[15], hw[5];
    for (int i = 0; i < N * D; i++) hx[i] = (float)(i % 7) - 3.0f;
    for (int i = 0; i < D; i++) hw[i] = 0.5f + i;
    o->upload(x, hx, sizeof hx);
    o->upload(w, hw, sizeof hw);
    float out1[15], rs1[3], out2[15], rs2[3];
    o->rmsnorm_forward(out1, rs1, x, w, N, D, 1e-6f);
    op_rmsnorm_forward(out2, rs2, hx, hw, N, D, 1e-6f);
    CHECK(!memcmp(out1, out2, sizeof out1) && !memcmp(rs1, rs2, sizeof rs1), "table = direct call");
    float y[15];
    o->download(y, x, sizeof y);
    CHECK(!memcmp(y, hx, sizeof y), "download");
    o->zero(x, sizeof hx);
    CHECK(x[7] == 0.0f, "zero");
    o->release(x);
    o->release(w);
    CHECK(!strcmp(dev_describe(MC_DEV_CPU), "cpu"), "describe");
}

int main(int argc, char **argv) {
    (void)argc;
    mc_set_progname(argv[0]);
    RUN(test_parse);
    RUN(test_default_and_env);
    RUN(test_config_key);
    RUN(test_bad_math);
    RUN(test_cpu_table);
    return t_done();
}
