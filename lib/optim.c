/* optim.c - AdamW and Adafactor (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "device.h"
#include "ops.h"

optim *opt_new(int kind, float lr, size_t n, const t5_tensor *tensors, int n_tensors) {
    optim *o = callocCheck(1, sizeof *o);
    o->kind = kind;
    o->lr = lr;
    o->beta1 = 0.9f, o->beta2 = 0.999f, o->eps = 1e-8f, o->weight_decay = 0.0f;
    o->decay_rate = -0.8f, o->clip_threshold = 1.0f, o->eps1 = 1e-30f, o->eps2 = 1e-3f;
    o->n = n;
    o->tensors = tensors;
    o->n_tensors = n_tensors;
    if (kind == OPT_ADAMW) {
        o->n_state = 2 * n;
    } else {
        o->state_off = mallocCheck(sizeof(size_t) * (n_tensors + 1));
        size_t off = 0;
        for (int i = 0; i < n_tensors; i++) {
            o->state_off[i] = off;
            const t5_tensor *t = &tensors[i];
            off += t->ndim == 2 ? (size_t)(t->shape[0] + t->shape[1]) : t->numel;
        }
        o->state_off[n_tensors] = off;
        o->n_state = off;
        size_t maxn = 1;
        for (int i = 0; i < n_tensors; i++)
            if (tensors[i].numel > maxn) maxn = tensors[i].numel;
        o->scratch = mallocCheck(sizeof(float) * maxn);
    }
    o->state = callocCheck(o->n_state ? o->n_state : 1, sizeof(float));
    return o;
}

double opt_schedule(int sched, long step, long warmup, long total) {
    double t = (double)step;
    if (warmup > 0 && step < warmup) return (t + 1.0) / (double)warmup; /* every schedule warms up linearly */
    double span = (double)(total - warmup), done = t - (double)warmup;
    double frac = span > 0 ? done / span : 1.0;
    if (frac > 1.0) frac = 1.0;
    switch (sched) {
    case SCHED_LINEAR: return 1.0 - frac;
    case SCHED_COSINE: return 0.5 * (1.0 + cos(M_PI * frac));
    case SCHED_RSQRT: return sqrt((double)(warmup > 0 ? warmup : 1) / (t + 1.0));
    default: return 1.0;
    }
}

void opt_free(optim *o) {
    if (!o) return;
    if (o->ops) {
        o->ops->release(o->dstate);
        o->ops->release(o->dscratch);
    }
    free(o->state);
    free(o->state_off);
    free(o->scratch);
    free(o);
}

/* torch.optim.AdamW (non-fused, single tensor path):
 *   p *= 1 - lr*wd ; m = b1 m + (1-b1) g ; v = b2 v + (1-b2) g^2
 *   p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)
 * Elementwise, so it runs on the ops thread pool. */
typedef struct {
    float *p, *m, *v;
    const float *g;
    float b1, b2, step_size, bc2_sqrt, eps, decay;
    int wd;
} adamw_ctx;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "simd.h"
#define ADAMW16 1
/* adamw_range's loop on 16 lanes (ops_simd_lanes): every lane does the
 * scalar loop's operations in its order (sqrt and division are exact in
 * both), so the bytes are the same */
__attribute__((target("avx512f"))) static void adamw16(adamw_ctx *c, long lo, long hi) {
    __m512 b1 = _mm512_set1_ps(c->b1), b2 = _mm512_set1_ps(c->b2), ob1 = _mm512_set1_ps(1.0f - c->b1),
           ob2 = _mm512_set1_ps(1.0f - c->b2), bc2 = _mm512_set1_ps(c->bc2_sqrt), eps = _mm512_set1_ps(c->eps),
           ss = _mm512_set1_ps(c->step_size), decay = _mm512_set1_ps(c->decay);
    for (long i = lo; i < hi; i += 16) {
        __mmask16 k = simd_mask16(hi - i);
        __m512 g = _mm512_maskz_loadu_ps(k, c->g + i), p = _mm512_maskz_loadu_ps(k, c->p + i);
        if (c->wd) p = _mm512_mul_ps(p, decay);
        __m512 m = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, c->m + i), b1), _mm512_mul_ps(ob1, g));
        __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, c->v + i), b2),
                                 _mm512_mul_ps(_mm512_mul_ps(ob2, g), g));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(v), bc2), eps);
        p = _mm512_sub_ps(p, _mm512_mul_ps(ss, _mm512_div_ps(m, denom)));
        _mm512_mask_storeu_ps(c->m + i, k, m);
        _mm512_mask_storeu_ps(c->v + i, k, v);
        _mm512_mask_storeu_ps(c->p + i, k, p);
    }
}
#endif

static void adamw_range(void *ctx, long lo, long hi) {
    adamw_ctx *c = ctx;
#ifdef ADAMW16
    if (ops_simd_lanes() == 16) {
        adamw16(c, lo, hi);
        return;
    }
#endif
    for (long i = lo; i < hi; i++) {
        float gi = c->g[i];
        if (c->wd) c->p[i] *= c->decay;
        c->m[i] = c->m[i] * c->b1 + (1.0f - c->b1) * gi;
        c->v[i] = c->v[i] * c->b2 + (1.0f - c->b2) * gi * gi;
        float denom = sqrtf(c->v[i]) / c->bc2_sqrt + c->eps;
        c->p[i] -= c->step_size * (c->m[i] / denom);
    }
}

static void adamw_step(optim *o, float *p, const float *g) {
    o->step++;
    double bc1 = 1.0 - pow(o->beta1, (double)o->step);
    double bc2 = 1.0 - pow(o->beta2, (double)o->step);
    adamw_ctx c = {.p = p, .m = o->state, .v = o->state + o->n, .g = g, .b1 = o->beta1, .b2 = o->beta2,
                   .step_size = (float)(o->lr / bc1), .bc2_sqrt = (float)sqrt(bc2), .eps = o->eps,
                   .decay = 1.0f - o->lr * o->weight_decay, .wd = o->weight_decay != 0.0f};
    pool_parallel_for((long)o->n, 1 << 14, adamw_range, &c);
}

static double rms(const float *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    return sqrt(s / (n ? n : 1));
}

/* HF transformers Adafactor with relative_step=False, beta1=None. */
static void adafactor_step(optim *o, float *params, const float *grads) {
    o->step++;
    float beta2t = 1.0f - powf((float)o->step, o->decay_rate);
    float *u = o->scratch;
    for (int i = 0; i < o->n_tensors; i++) {
        const t5_tensor *t = &o->tensors[i];
        float *p = params + t->offset;
        const float *g = grads + t->offset;
        float *st = o->state + o->state_off[i];
        size_t n = t->numel;
        float lr = o->lr;
        if (o->scale_parameter) {
            double r = rms(p, n);
            lr *= (float)(r > o->eps2 ? r : o->eps2);
        }
        if (t->ndim == 2) {
            size_t R = t->shape[0], C = t->shape[1];
            float *row = st, *col = st + R;
            for (size_t r = 0; r < R; r++) {
                double s = 0;
                for (size_t c = 0; c < C; c++) s += (double)g[r * C + c] * g[r * C + c] + o->eps1;
                row[r] = beta2t * row[r] + (1.0f - beta2t) * (float)(s / C);
            }
            for (size_t c = 0; c < C; c++) {
                double s = 0;
                for (size_t r = 0; r < R; r++) s += (double)g[r * C + c] * g[r * C + c] + o->eps1;
                col[c] = beta2t * col[c] + (1.0f - beta2t) * (float)(s / R);
            }
            double rm = 0;
            for (size_t r = 0; r < R; r++) rm += row[r];
            rm /= R;
            for (size_t r = 0; r < R; r++) {
                float rf = 1.0f / sqrtf((float)(row[r] / rm));
                for (size_t c = 0; c < C; c++) u[r * C + c] = rf / sqrtf(col[c]) * g[r * C + c];
            }
        } else {
            for (size_t j = 0; j < n; j++) {
                st[j] = beta2t * st[j] + (1.0f - beta2t) * (g[j] * g[j] + o->eps1);
                u[j] = g[j] / sqrtf(st[j]);
            }
        }
        double ur = rms(u, n) / o->clip_threshold;
        float div = (float)(ur > 1.0 ? ur : 1.0);
        for (size_t j = 0; j < n; j++) {
            if (o->weight_decay != 0.0f) p[j] -= p[j] * o->weight_decay * lr;
            p[j] -= lr * (u[j] / div);
        }
    }
}

void opt_to_device(optim *o, const mc_ops *ops) {
    if (ops == dev_ops(MC_DEV_CPU) || ops == o->ops) return;
    if (o->ops) die("opt_to_device: the optimizer is on %s already", o->ops->name);
    if (!ops->opt_step) die("opt_to_device: %s has no optimizer step (a CUDA build: make GPU=1)", ops->name);
    o->ops = ops;
    o->dstate = ops->alloc(sizeof(float) * (o->n_state ? o->n_state : 1));
    if (o->scratch) {
        size_t maxn = 1;
        for (int i = 0; i < o->n_tensors; i++)
            if (o->tensors[i].numel > maxn) maxn = o->tensors[i].numel;
        o->dscratch = ops->alloc(sizeof(float) * maxn);
    }
    opt_sync_device(o);
}

void opt_sync_host(optim *o) {
    if (o->ops) o->ops->download(o->state, o->dstate, sizeof(float) * o->n_state);
}

void opt_sync_device(optim *o) {
    if (o->ops) o->ops->upload(o->dstate, o->state, sizeof(float) * o->n_state);
}

void opt_step(optim *o, float *params, const float *grads) {
    if (o->ops) {
        o->ops->opt_step(o, params, grads, o->dstate, o->dscratch);
        return;
    }
    if (o->kind == OPT_ADAMW) adamw_step(o, params, grads);
    else adafactor_step(o, params, grads);
}

size_t opt_moments_floats(const optim *o) { return o->kind == OPT_ADAMW ? o->n : o->n_state; }

void opt_moments_copy(const optim *o, float *dst) {
    size_t off = o->kind == OPT_ADAMW ? o->n : 0, n = opt_moments_floats(o);
    if (o->ops) o->ops->download(dst, o->dstate + off, sizeof(float) * n);
    else memcpy(dst, o->state + off, sizeof(float) * n);
}

void opt_fisher_tensor(const optim *o, const float *mom, long step, int i, float scale, float *out) {
    const t5_tensor *t = &o->tensors[i];
    if (step < 1) {
        memset(out, 0, sizeof(float) * t->numel);
        return;
    }
    if (o->kind == OPT_ADAMW) {
        double c = scale / (1.0 - pow(o->beta2, (double)step));
        for (size_t j = 0; j < t->numel; j++) out[j] = (float)(mom[t->offset + j] * c);
        return;
    }
    const float *st = mom + o->state_off[i];
    if (t->ndim != 2) {
        for (size_t j = 0; j < t->numel; j++) out[j] = st[j] * scale;
        return;
    }
    size_t R = t->shape[0], C = t->shape[1];
    const float *row = st, *col = st + R;
    double rm = 0; /* as adafactor_step takes the row mean */
    for (size_t r = 0; r < R; r++) rm += row[r];
    rm /= R;
    for (size_t r = 0; r < R; r++)
        for (size_t c = 0; c < C; c++) out[r * C + c] = (float)(row[r] / rm * col[c] * scale);
}

float opt_clip_grad_norm(float *grads, size_t n, float max_norm) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)grads[i] * grads[i];
    float norm = (float)sqrt(s);
    if (max_norm > 0 && norm > max_norm) {
        float c = max_norm / (norm + 1e-6f);
        for (size_t i = 0; i < n; i++) grads[i] *= c;
    }
    return norm;
}

float opt_clip_grad_norm_on(const mc_ops *ops, float *grads, size_t n, float max_norm) {
    if (!ops || ops == dev_ops(MC_DEV_CPU)) return opt_clip_grad_norm(grads, n, max_norm);
    float norm = (float)sqrt(ops->dot((long)n, grads, grads));
    if (max_norm > 0 && norm > max_norm) ops->scale((long)n, max_norm / (norm + 1e-6f), grads);
    return norm;
}
