/* t5_dev.h - lib/t5.c, unmodified, running on the GPU (for gpu_check only).
 *
 * recipes/gpu.mk makes build/gpu/t5_dev.o from build/obj/lib/t5.o with
 * objcopy --redefine-sym: every t5_X becomes t5dev_X, every op_X call becomes
 * dv_op_X (t5_dev_shim.c: the gpu_X kernels), and the allocator and
 * memset/memcpy/free calls go to the shim, which hands out CUDA managed
 * memory. So the same compiled model code runs its ops on the device while
 * its few host loops (masks, loss weights, loss sums) still read and write
 * the buffers directly. This is a test harness that proves the ops compose
 * into the real forward/backward; the production path is the mc_ops table
 * of device.h (see the README's GPU section).
 */
#ifndef MC_T5_DEV_H
#define MC_T5_DEV_H

#include <stddef.h>
#include <stdint.h>

#include "t5.h"

t5_model *t5dev_new(const t5_config *c, int with_grads, int with_ia3);
void t5dev_free(t5_model *m);
void t5dev_init_random(t5_model *m, uint64_t seed);
void t5dev_alloc_acts(t5_model *m, int maxB, int maxTe, int maxBd, int maxTd, int with_grads);
float t5dev_forward(t5_model *m, const t5_batch *b);
void t5dev_backward(t5_model *m, const t5_batch *b, int loss_mode, float scale);
void t5dev_zero_grad(t5_model *m);

/* Shim controls (t5_dev_shim.c). */
/* Managed allocation as the shimmed model gets it (for batch arrays). */
void *dv_managed(size_t bytes);
/* 1: synchronise after every op (needed where the device cannot share
 * managed memory with a running kernel); set by dv_init from the device's
 * concurrentManagedAccess attribute. */
extern int dv_sync_each;
void dv_init(void);
/* free() as the shimmed model sees it: managed or host. */
void dv_free(void *p);

#endif
