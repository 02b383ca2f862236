/* merge_dev_shim.c - the merge stage, unmodified, with its K-FAC operator on
 * the GPU (for scripts/gpu-check.sh: mats on GPU against CPU).
 *
 * recipes/gpu.mk makes build/gpu/merge_gpu from build/obj/stages/merge.o with
 * objcopy --redefine-sym mrg_op_kfac=dv_mrg_op_kfac and
 * mrg_kfac_free=dv_mrg_kfac_free. The stage builds each tensor's K-FAC
 * statistics on the host as usual (mrg_kfac_set), and at mrg_op_kfac this
 * shim uploads them once and hands mrg_cg an operator whose apply runs
 * gpu_kfac_apply (two cuBLAS calls) on the device: a drop-in for merge.h's
 * operator, which is also how stages/merge.c can adopt the GPU (README). */
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "gpu.h"
#include "merge.h"

/* One K-FAC system is alive at a time in the stage (tensor by tensor). */
static const mrg_kfac *cur_host;
static gpu_kfac cur_dev;

static void apply_dev(const mrg_op *op, const float *x, float *y) {
    gpu_kfac_apply_host((const gpu_kfac *)op->ctx, x, y);
}

void dv_mrg_op_kfac(mrg_op *op, mrg_kfac *K) {
    static int ready;
    if (!ready) {
        if (gpu_init(-1) < 0) die("%s", mc_error());
        const char *m = getenv("MATS_GPU_MATH");
        if (m && *m) {
            int mode = gpu_math_parse(m);
            if (mode < 0) die("MATS_GPU_MATH=%s is not one of fp32, tf32, bf16", m);
            gpu_set_math(mode);
        }
        ready = 1;
    }
    if (cur_host) die("merge_gpu: two K-FAC operators alive at once");
    gpu_kfac_init(&cur_dev, K->N, K->out, K->in);
    gpu_kfac_upload_cat(&cur_dev, K->Acat, K->Gcat);
    cur_host = K;
    op->n = (long)K->out * K->in;
    op->apply = apply_dev;
    op->ctx = &cur_dev;
}

void dv_mrg_kfac_free(mrg_kfac *K) {
    if (K == cur_host) {
        gpu_kfac_free(&cur_dev);
        cur_host = NULL;
    }
    mrg_kfac_free(K);
}
