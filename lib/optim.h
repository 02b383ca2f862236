/* optim.h - optimizers over one flat float block described by a tensor table.
 *
 * AdamW as the MaTS code uses it (torch.optim.AdamW with eps 1e-8, no
 * weight decay, constant learning rate, bias correction) and Adafactor as
 * HF transformers implements it with a fixed learning rate (no momentum,
 * factored second moments for matrices, update clipping at RMS 1.0, decay
 * rate -0.8, optional parameter scaling). fp32 master weights throughout.
 *
 * The state (o->state, o->n_state floats, and o->step) is everything a
 * checkpoint needs to resume bit for bit.
 */
#ifndef MC_OPTIM_H
#define MC_OPTIM_H

#include <stddef.h>

#include "t5.h"

enum { OPT_ADAMW = 0, OPT_ADAFACTOR = 1 };

/* Learning-rate schedules (train.schedule): the factor on the base lr. */
enum { SCHED_CONSTANT = 0, SCHED_LINEAR = 1, SCHED_COSINE = 2, SCHED_RSQRT = 3 };

typedef struct optim {
    int kind;
    float lr;
    float beta1, beta2, eps, weight_decay;      /* AdamW */
    float decay_rate, clip_threshold, eps1, eps2; /* Adafactor */
    int scale_parameter;
    long step;
    size_t n;                  /* parameters */
    size_t n_state;
    float *state;              /* AdamW: m (n) then v (n); Adafactor: per tensor row+col or full */
    int n_tensors;
    const t5_tensor *tensors;  /* not owned */
    size_t *state_off;         /* Adafactor: per tensor offset into state */
    float *scratch;            /* Adafactor: one tensor's update */
    /* opt_to_device: the state and scratch on the device of `ops`, where
     * opt_step then runs (the table's opt_step); `state` above is the host copy
     * that checkpoints read and write (opt_sync_host / opt_sync_device). */
    const struct mc_ops *ops;
    float *dstate, *dscratch;
} optim;

/* New optimizer with default hyper-parameters for `kind` and learning rate
 * lr over n floats laid out as `tensors` (shapes decide Adafactor's
 * factoring). Caller frees with opt_free. */
optim *opt_new(int kind, float lr, size_t n, const t5_tensor *tensors, int n_tensors);
void opt_free(optim *o);

/* The factor on the base learning rate for update number `step` (0-based)
 * of `total`: a linear warmup from 1/warmup to 1 over the first `warmup`
 * updates, then constant (SCHED_CONSTANT), linear to 0 at `total`
 * (SCHED_LINEAR), half a cosine to 0 at `total` (SCHED_COSINE), or
 * sqrt(warmup / (step + 1)) (SCHED_RSQRT, T5's inverse square root; warmup
 * 0 counts as 1). */
double opt_schedule(int sched, long step, long warmup, long total);

/* One update of params with grads (both n floats). */
void opt_step(optim *o, float *params, const float *grads);

struct mc_ops;
/* Keep the state on the device of `ops` (device.h) from now on: params and
 * grads given to opt_step are then that device's memory. A no-op for the
 * CPU table. Uploads the current host state. */
void opt_to_device(optim *o, const struct mc_ops *ops);
/* Host state <- device state (before writing a checkpoint) and the reverse
 * (after reading one). No-ops on the CPU. */
void opt_sync_host(optim *o);
void opt_sync_device(optim *o);

/* The second moments as a diagonal Fisher ("Fishers for free", Li, Dangel,
 * Tam, Raffel 2025, arXiv 2507.18807: the squared-gradient accumulator
 * recycled as the Fisher diagonal; train --optimizer-fisher).
 *
 * opt_moments_floats: the floats of the second-moment part of the state
 * (AdamW: v, n floats; Adafactor: every tensor's row and column factors, or
 * its full v when unfactored: the whole state). opt_moments_copy: that part
 * of the current state into host memory dst (downloaded when the state is
 * on a device). */
size_t opt_moments_floats(const optim *o);
void opt_moments_copy(const optim *o, float *dst);

/* Tensor i's estimate of E[g^2] from `mom` (an opt_moments_copy taken after
 * `step` updates), times `scale`, into out (the tensor's numel floats):
 *   AdamW       v / (1 - beta2^step): bias-corrected, so that runs of
 *               different lengths (early stopping) are on one scale;
 *   Adafactor   factored (2-d) tensors: R_r C_c / mean(R), the v-hat its
 *               update divides by (R, C: the EMAs of the row and column
 *               means of g^2 + eps1); 1-d tensors: its v. Its decay
 *               1 - step^-0.8 is 0 at step 1, so v is already a weighted
 *               mean of g^2: no correction.
 * step < 1 (no update yet) gives zeros. The caller owns out. */
void opt_fisher_tensor(const optim *o, const float *mom, long step, int i, float scale, float *out);

/* opt_clip_grad_norm for grads in memory of `ops` (NULL: the CPU). */
float opt_clip_grad_norm_on(const struct mc_ops *ops, float *grads, size_t n, float max_norm);

/* Global L2 norm of grads; when max_norm > 0 and the norm exceeds it,
 * scale grads down to max_norm (torch.nn.utils.clip_grad_norm_). */
float opt_clip_grad_norm(float *grads, size_t n, float max_norm);

#endif
