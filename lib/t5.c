/* t5.c - the T5 model (v1.1 and original layouts, t5.h): tables, init,
 * forward, backward, artifacts. */
#include "t5.h"
#include "key.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "device.h"
#include "ops.h"

/* every op, zeroing and copy of model memory goes through the model's table */
#define OPS (m->ops)
#define FZERO(p, n) OPS->zero((p), sizeof(float) * (size_t)(n))
#define FCOPY(d, s, n) OPS->copy((d), (s), sizeof(float) * (size_t)(n))

/* ------------------------------------------------------------------ config */

int t5_config_check(const t5_config *c) {
    if (c->vocab_size < 8 || c->d_model < 1 || c->d_kv < 1 || c->d_ff < 1 || c->num_heads < 1 ||
        c->num_layers < 1 || c->num_decoder_layers < 1 || c->num_buckets < 2 ||
        c->max_distance < 2 || !(c->eps > 0) || !isfinite(c->eps) || (int64_t)c->num_heads * c->d_kv > (1 << 30))
        return mc_fail("model config out of range (vocab_size %d, d_model %d, d_kv %d, d_ff %d, "
                       "num_heads %d, layers %d+%d, buckets %d, max_distance %d, epsilon %g; "
                       "num_heads x d_kv at most 2^30)",
                       c->vocab_size, c->d_model, c->d_kv, c->d_ff, c->num_heads, c->num_layers,
                       c->num_decoder_layers, c->num_buckets, c->max_distance, (double)c->eps);
    /* the largest tensors stay within what one tensor may hold (int indexing) */
    if ((int64_t)c->vocab_size * c->d_model > INT32_MAX || (int64_t)c->d_ff * c->d_model > INT32_MAX ||
        (int64_t)c->num_heads * c->d_kv * c->d_model > INT32_MAX)
        return mc_fail("model config: vocab_size %d, d_ff %d, num_heads %d x d_kv %d, each times d_model %d: a "
                       "tensor of more than 2^31 - 1 elements; check these values", c->vocab_size, c->d_ff,
                       c->num_heads, c->d_kv, c->d_model);
    /* the relative-position buckets (op_relpos_bucket) need an exact range
     * of at least one position and a log range above it */
    if (c->num_buckets < 4 || c->max_distance <= c->num_buckets / 2)
        return mc_fail("model config: relative_attention_num_buckets = %d and _max_distance = %d: need at "
                       "least 4 buckets and a max distance above half the buckets (T5: 32 and 128)",
                       c->num_buckets, c->max_distance);
    return 0;
}

/* The integer fields of t5_config by their HF config.json names, one row
 * each: what configs (model.NAME) and artifacts (meta.config.NAME) may hold.
 * The bounds are far above any T5 (t5-11b: d_ff 65536, 128 heads; mT5:
 * 250112 ids) and keep absurd values (num_heads = 1000000) an error naming
 * the key rather than an allocation failure. def: -1 required, -2 the value
 * of num_layers. */
static const struct {
    const char *name;
    size_t off;
    long def, lo, hi;
} T5_INT_FIELDS[] = {
    {"vocab_size", offsetof(t5_config, vocab_size), -1, 8, 1L << 22},
    {"d_model", offsetof(t5_config, d_model), -1, 1, 1L << 16},
    {"d_kv", offsetof(t5_config, d_kv), -1, 1, 1L << 14},
    {"d_ff", offsetof(t5_config, d_ff), -1, 1, 1L << 18},
    {"num_heads", offsetof(t5_config, num_heads), -1, 1, 1L << 10},
    {"num_layers", offsetof(t5_config, num_layers), -1, 1, 1L << 10},
    {"num_decoder_layers", offsetof(t5_config, num_decoder_layers), -2, 1, 1L << 10},
    {"relative_attention_num_buckets", offsetof(t5_config, num_buckets), 32, 2, 1L << 12},
    {"relative_attention_max_distance", offsetof(t5_config, max_distance), 128, 2, 1L << 20},
};
#define N_T5_INT_FIELDS (sizeof T5_INT_FIELDS / sizeof T5_INT_FIELDS[0])
#define T5_FIELD(c, i) (*(int *)((char *)(c) + T5_INT_FIELDS[i].off))

float t5_head_scale(const t5_config *c) { return (float)(1.0 / sqrt((double)c->d_model)); }

const char *t5_ffn_name(int ffn) { return ffn == T5_FFN_RELU ? "relu" : "gated-gelu"; }

int t5_ffn_parse(const char *name) {
    return !strcmp(name, "gated-gelu") ? T5_FFN_GATED_GELU : !strcmp(name, "relu") ? T5_FFN_RELU : -1;
}

int t5_config_diff(const t5_config *a, const t5_config *b, char *buf, size_t cap) {
    for (size_t i = 0; i < N_T5_INT_FIELDS; i++) {
        int x = T5_FIELD(a, i), y = T5_FIELD(b, i);
        if (x != y) {
            snprintf(buf, cap, "%s %d vs %d", T5_INT_FIELDS[i].name, x, y);
            return 1;
        }
    }
    if (a->eps != b->eps) {
        snprintf(buf, cap, "layer_norm_epsilon %g vs %g", a->eps, b->eps);
        return 1;
    }
    if (a->ffn != b->ffn) {
        snprintf(buf, cap, "feed_forward_proj %s vs %s", t5_ffn_name(a->ffn), t5_ffn_name(b->ffn));
        return 1;
    }
    if (a->tied != b->tied) {
        snprintf(buf, cap, "tie_word_embeddings %s vs %s", a->tied ? "true" : "false", b->tied ? "true" : "false");
        return 1;
    }
    return 0;
}

int t5_config_equal(const t5_config *a, const t5_config *b) {
    char buf[128];
    return !t5_config_diff(a, b, buf, sizeof buf);
}

int t5_config_from_cfg(t5_config *c, mc_cfg *cfg) {
    long v;
    double d;
    const char *s;
    int t;
    char key[96];
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < N_T5_INT_FIELDS; i++) {
        long def = T5_INT_FIELDS[i].def == -2 ? c->num_layers : T5_INT_FIELDS[i].def;
        snprintf(key, sizeof key, "model.%s", T5_INT_FIELDS[i].name);
        if (def == -1 && !cfg_peek(cfg, key))
            return mc_fail("model config incomplete: %s is required (model.vocab_size, model.d_model, model.d_kv, "
                           "model.d_ff, model.num_heads, model.num_layers: include a configs/models/*.conf)", key);
        if (cfg_get_int(cfg, key, def, T5_INT_FIELDS[i].lo, T5_INT_FIELDS[i].hi, &v) < 0) return -1;
        T5_FIELD(c, i) = (int)v;
    }
    if (cfg_get_float(cfg, "model.layer_norm_epsilon", 1e-6, 1e-12, 1.0, &d) < 0) return -1;
    c->eps = (float)d;
    if (cfg_get_str(cfg, "model.feed_forward_proj", "gated-gelu", &s) < 0) return -1;
    if ((c->ffn = t5_ffn_parse(s)) < 0)
        return mc_fail("%s: model.feed_forward_proj = %s: gated-gelu (T5 v1.1) or relu (the original T5)",
                       cfg_where(cfg, "model.feed_forward_proj"), s);
    if (cfg_get_bool(cfg, "model.tie_word_embeddings", 0, &t) < 0) return -1;
    c->tied = t;
    return t5_config_check(c);
}

int t5_config_ints(t5_config *c, const mc_val *v, const char *where) {
    for (size_t i = 0; i < N_T5_INT_FIELDS; i++) {
        const char *name = T5_INT_FIELDS[i].name;
        const mc_val *x = val_get(v, name);
        if (x && x->type == VAL_NIL) x = NULL; /* JSON null: HF's default */
        long def = T5_INT_FIELDS[i].def == -2 ? c->num_layers : T5_INT_FIELDS[i].def;
        if (!x && def == -1) return mc_fail("%s%s missing", where, name);
        int64_t n = !x ? def : x->type == VAL_INT ? x->v.i : INT64_MIN;
        if (n == INT64_MIN) return mc_fail("%s%s is not an integer", where, name);
        if (n < T5_INT_FIELDS[i].lo || n > T5_INT_FIELDS[i].hi)
            return mc_fail("%s%s = %lld: must be in [%ld, %ld]", where, name, (long long)n, T5_INT_FIELDS[i].lo,
                           T5_INT_FIELDS[i].hi);
        T5_FIELD(c, i) = (int)n;
    }
    return 0;
}

int t5_config_from_val(t5_config *c, const mc_val *v) {
    memset(c, 0, sizeof *c);
    if (!v || v->type != VAL_MAP) return mc_fail("meta.config missing or not a map");
    if (t5_config_ints(c, v, "meta.config.") < 0) return -1;
    c->eps = (float)val_get_float(v, "layer_norm_epsilon", 1e-6);
    const char *ff = val_get_str(v, "feed_forward_proj", "gated-gelu");
    if ((c->ffn = t5_ffn_parse(ff)) < 0)
        return mc_fail("meta.config.feed_forward_proj = %s: gated-gelu (T5 v1.1) or relu (the original T5)", ff);
    const mc_val *tie = val_get(v, "tie_word_embeddings");
    if (tie && tie->type != VAL_BOOL) return mc_fail("meta.config.tie_word_embeddings must be true or false");
    c->tied = tie && tie->v.b;
    const char *mt = val_get_str(v, "model_type", "t5");
    if (strcmp(mt, "t5") && strcmp(mt, "mt5"))
        return mc_fail("meta.config.model_type = %s: t5 or mt5", mt);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    const mc_val *e0 = val_get(v, "extra_id_0");
    if (e0) {
        int64_t x = e0->type == VAL_INT ? e0->v.i : -1;
        if (x < 3 || x >= c->vocab_size)
            return mc_fail("meta.config.extra_id_0 must be an id in [3, vocab_size %d)", c->vocab_size);
        c->extra_id_0 = (int)x;
    }
    return t5_config_check(c);
}

mc_val *t5_config_to_val(const t5_config *c) {
    mc_val *m = val_map();
    for (size_t i = 0; i < N_T5_INT_FIELDS; i++) val_set_int(m, T5_INT_FIELDS[i].name, T5_FIELD(c, i));
    val_set_float(m, "layer_norm_epsilon", c->eps);
    val_set_str(m, "feed_forward_proj", t5_ffn_name(c->ffn));
    val_set(m, "tie_word_embeddings", val_bool(c->tied));
    val_set_str(m, "model_type", !strcmp(c->model_type, "mt5") ? "mt5" : "t5");
    /* only where it differs from the default, so that models of the
     * built-in tokenizer keep their bytes */
    if (c->extra_id_0 > 0 && c->extra_id_0 != c->vocab_size - 1) val_set_int(m, "extra_id_0", c->extra_id_0);
    return m;
}

/* ------------------------------------------------------------------ tables */

/* Walk the parameters in their fixed order. With `tab` non-NULL, record
 * names and shapes; with P non-NULL, point P's fields into base. Returns the
 * total number of floats. */
typedef struct {
    t5_tensor *tab;
    int n;
    size_t off;
    float *base;
} walker;

static float *w_add(walker *w, const char *name, int64_t d0, int64_t d1) {
    size_t numel = (size_t)d0 * (d1 > 0 ? d1 : 1);
    if (w->tab) {
        t5_tensor *t = &w->tab[w->n];
        snprintf(t->name, sizeof t->name, "%s", name);
        t->ndim = d1 > 0 ? 2 : 1;
        t->shape[0] = d0;
        t->shape[1] = d1 > 0 ? d1 : 0;
        t->offset = w->off;
        t->numel = numel;
    }
    float *p = w->base ? w->base + w->off : NULL;
    w->n++;
    w->off += numel;
    return p;
}

static size_t param_layout(const t5_config *c, t5_params *P, float *base, t5_tensor *tab, int *n) {
    walker w = {tab, 0, 0, base};
    t5_params dummy;
    if (!P) {
        P = &dummy;
        P->enc = P->dec = NULL;
    }
    int D = c->d_model, HK = c->num_heads * c->d_kv, F = c->d_ff, V = c->vocab_size;
    char nm[96];
    t5_block_params scratch;
    P->shared = w_add(&w, "shared.weight", V, D);
    for (int s = 0; s < 2; s++) {
        const char *st = s ? "decoder" : "encoder";
        int L = s ? c->num_decoder_layers : c->num_layers;
        for (int l = 0; l < L; l++) {
            t5_block_params *b = (s ? P->dec : P->enc) ? &(s ? P->dec : P->enc)[l] : &scratch;
            memset(b, 0, sizeof *b);
            const char *f = s ? "2" : "1"; /* the feed-forward's layer index */
#define A(field, fmt, d0, d1)                                                   \
    snprintf(nm, sizeof nm, "%s.block.%d." fmt, st, l);                         \
    b->field = w_add(&w, nm, d0, d1);
#define AF(field, fmt, d0, d1) /* a feed-forward tensor: fmt takes f */         \
    snprintf(nm, sizeof nm, "%s.block.%d." fmt, st, l, f);                      \
    b->field = w_add(&w, nm, d0, d1);
            A(sa_q, "layer.0.SelfAttention.q.weight", HK, D);
            A(sa_k, "layer.0.SelfAttention.k.weight", HK, D);
            A(sa_v, "layer.0.SelfAttention.v.weight", HK, D);
            A(sa_o, "layer.0.SelfAttention.o.weight", D, HK);
            if (l == 0) {
                snprintf(nm, sizeof nm, "%s.block.0.layer.0.SelfAttention.relative_attention_bias.weight", st);
                float *rb = w_add(&w, nm, c->num_buckets, c->num_heads);
                if (s) P->dec_relb = rb;
                else P->enc_relb = rb;
            }
            A(sa_ln, "layer.0.layer_norm.weight", D, 0);
            if (s) {
                A(ca_q, "layer.1.EncDecAttention.q.weight", HK, D);
                A(ca_k, "layer.1.EncDecAttention.k.weight", HK, D);
                A(ca_v, "layer.1.EncDecAttention.v.weight", HK, D);
                A(ca_o, "layer.1.EncDecAttention.o.weight", D, HK);
                A(ca_ln, "layer.1.layer_norm.weight", D, 0);
            }
            if (c->ffn == T5_FFN_RELU) {
                AF(wi0, "layer.%s.DenseReluDense.wi.weight", F, D);
            } else {
                AF(wi0, "layer.%s.DenseReluDense.wi_0.weight", F, D);
                AF(wi1, "layer.%s.DenseReluDense.wi_1.weight", F, D);
            }
            AF(wo, "layer.%s.DenseReluDense.wo.weight", D, F);
            AF(ff_ln, "layer.%s.layer_norm.weight", D, 0);
#undef A
#undef AF
        }
        snprintf(nm, sizeof nm, "%s.final_layer_norm.weight", st);
        float *ln = w_add(&w, nm, D, 0);
        if (s) P->dec_ln = ln;
        else P->enc_ln = ln;
    }
    P->lm_head = c->tied ? NULL : w_add(&w, "lm_head.weight", V, D);
    if (n) *n = w.n;
    return w.off;
}

/* The table alone of a layout (tab NULL: count only) */
static size_t param_table_of(const t5_config *c, t5_tensor *tab, int *n) { return param_layout(c, NULL, NULL, tab, n); }

/* A table of its own: count, allocate, fill. */
static int table_new(size_t (*layout)(const t5_config *, t5_tensor *, int *), const t5_config *c, t5_tensor **out) {
    int n = 0;
    layout(c, NULL, &n);
    t5_tensor *tab = callocCheck((size_t)n, sizeof *tab);
    layout(c, tab, &n);
    *out = tab;
    return n;
}

int t5_param_table(const t5_config *c, t5_tensor **out) { return table_new(param_table_of, c, out); }

static size_t ia3_layout(const t5_config *c, t5_ia3 *P, float *base, t5_tensor *tab, int *n) {
    walker w = {tab, 0, 0, base};
    int HK = c->num_heads * c->d_kv, F = c->d_ff;
    char nm[96];
    t5_block_ia3 scratch;
    for (int s = 0; s < 2; s++) {
        const char *st = s ? "decoder" : "encoder";
        int L = s ? c->num_decoder_layers : c->num_layers;
        for (int l = 0; l < L; l++) {
            t5_block_ia3 *b = (P && (s ? P->dec : P->enc)) ? &(s ? P->dec : P->enc)[l] : &scratch;
            memset(b, 0, sizeof *b);
            const char *f = s ? "2" : "1"; /* the feed-forward's layer index */
#define A(field, fmt, d0)                                                       \
    snprintf(nm, sizeof nm, "%s.block.%d." fmt, st, l);                         \
    b->field = w_add(&w, nm, d0, 0);
#define AF(field, fmt, d0)                                                      \
    snprintf(nm, sizeof nm, "%s.block.%d." fmt, st, l, f);                      \
    b->field = w_add(&w, nm, d0, 0);
            A(sa_k, "layer.0.SelfAttention.k.ia3_vector", HK);
            A(sa_v, "layer.0.SelfAttention.v.ia3_vector", HK);
            if (s) {
                A(ca_k, "layer.1.EncDecAttention.k.ia3_vector", HK);
                A(ca_v, "layer.1.EncDecAttention.v.ia3_vector", HK);
            }
            if (c->ffn == T5_FFN_RELU) {
                AF(ff, "layer.%s.DenseReluDense.wo.ia3_vector", F);
            } else {
                AF(ff, "layer.%s.DenseReluDense.wi_1.ia3_vector", F);
            }
#undef A
#undef AF
        }
    }
    if (n) *n = w.n;
    return w.off;
}

static size_t ia3_table_of(const t5_config *c, t5_tensor *tab, int *n) { return ia3_layout(c, NULL, NULL, tab, n); }

int t5_ia3_table(const t5_config *c, t5_tensor **out) { return table_new(ia3_table_of, c, out); }

t5_model *t5_new(const t5_config *c, int with_grads, int with_ia3) {
    t5_model *m = callocCheck(1, sizeof *m);
    m->c = *c;
    m->ops = dev_ops(MC_DEV_CPU);
    int n = 0;
    m->n_params = param_layout(c, NULL, NULL, NULL, &n);
    m->n_tensors = n;
    m->tensors = callocCheck(n, sizeof *m->tensors);
    m->params = callocCheck(m->n_params, sizeof(float));
    m->p.enc = callocCheck(c->num_layers, sizeof(t5_block_params));
    m->p.dec = callocCheck(c->num_decoder_layers, sizeof(t5_block_params));
    param_layout(c, &m->p, m->params, m->tensors, NULL);
    if (with_grads) {
        m->grads = callocCheck(m->n_params, sizeof(float));
        m->g.enc = callocCheck(c->num_layers, sizeof(t5_block_params));
        m->g.dec = callocCheck(c->num_decoder_layers, sizeof(t5_block_params));
        param_layout(c, &m->g, m->grads, NULL, NULL);
    }
    if (with_ia3) {
        m->n_ia3 = ia3_layout(c, NULL, NULL, NULL, &n);
        m->n_ia3_tensors = n;
        m->ia3_tensors = callocCheck(n, sizeof *m->ia3_tensors);
        m->ia3 = mallocCheck(m->n_ia3 * sizeof(float));
        for (size_t i = 0; i < m->n_ia3; i++) m->ia3[i] = 1.0f;
        m->ia3_grads = callocCheck(m->n_ia3, sizeof(float));
        m->ia.enc = callocCheck(c->num_layers, sizeof(t5_block_ia3));
        m->ia.dec = callocCheck(c->num_decoder_layers, sizeof(t5_block_ia3));
        m->iag.enc = callocCheck(c->num_layers, sizeof(t5_block_ia3));
        m->iag.dec = callocCheck(c->num_decoder_layers, sizeof(t5_block_ia3));
        ia3_layout(c, &m->ia, m->ia3, m->ia3_tensors, NULL);
        ia3_layout(c, &m->iag, m->ia3_grads, NULL, NULL);
    }
    return m;
}

static void free_acts(t5_model *m) {
    const mc_ops *o = m->ops;
    o->release(m->act_mem);
    o->release(m->grad_mem);
    o->release(m->lse);
    if (!t5_on_host(m)) {
        o->release(m->d_enc_buckets);
        o->release(m->d_dec_buckets);
        o->release(m->d_enc_mask);
        o->release(m->d_tok_loss);
        o->release(m->d_tok_w);
        o->release(m->d_ids);
    }
    free(m->enc_buckets);
    free(m->dec_buckets);
    free(m->enc_mask);
    free(m->tok_loss);
    free(m->tok_w);
    m->act_mem = m->grad_mem = m->lse = m->d_tok_loss = m->d_tok_w = NULL;
    m->enc_buckets = m->dec_buckets = m->d_enc_buckets = m->d_dec_buckets = m->d_ids = NULL;
    m->enc_mask = m->d_enc_mask = NULL;
    m->tok_loss = m->tok_w = NULL;
}

void t5_freeze_params(t5_model *m) {
    if (m->frozen || !t5_on_host(m)) return;
    be_freeze(m->params, sizeof(float) * m->n_params);
    m->frozen = 1;
}

void t5_free(t5_model *m) {
    if (!m) return;
    if (m->frozen) be_thaw(m->params);
    free_acts(m);
    m->ops->release(m->params);
    m->ops->release(m->grads);
    free(m->tensors);
    free(m->p.enc);
    free(m->p.dec);
    free(m->g.enc);
    free(m->g.dec);
    m->ops->release(m->ia3);
    m->ops->release(m->ia3_grads);
    free(m->ia3_tensors);
    free(m->ia.enc);
    free(m->ia.dec);
    free(m->iag.enc);
    free(m->iag.dec);
    free(m->a.enc);
    free(m->a.dec);
    free(m->da.enc);
    free(m->da.dec);
    free(m);
}

int t5_on_host(const t5_model *m) { return m->ops == dev_ops(MC_DEV_CPU); }

void t5_download(const t5_model *m, float *host, const float *src, size_t n) {
    m->ops->download(host, src, n * sizeof(float));
}

void t5_upload(const t5_model *m, float *dst, const float *host, size_t n) {
    m->ops->upload(dst, host, n * sizeof(float));
}

static float *move_block(const mc_ops *o, float *host, size_t n) {
    if (!host) return NULL;
    float *d = o->alloc(n * sizeof(float));
    o->upload(d, host, n * sizeof(float));
    free(host);
    return d;
}

void t5_to_device(t5_model *m, const mc_ops *ops) {
    if (ops == m->ops) return;
    if (!t5_on_host(m)) die("t5_to_device: the model is on %s already", m->ops->name);
    if (m->act_mem) die("t5_to_device: move the model before t5_alloc_acts");
    m->params = move_block(ops, m->params, m->n_params);
    m->grads = move_block(ops, m->grads, m->n_params);
    m->ia3 = move_block(ops, m->ia3, m->n_ia3);
    m->ia3_grads = move_block(ops, m->ia3_grads, m->n_ia3);
    m->ops = ops;
    param_layout(&m->c, &m->p, m->params, NULL, NULL);
    if (m->grads) param_layout(&m->c, &m->g, m->grads, NULL, NULL);
    if (m->ia3) {
        ia3_layout(&m->c, &m->ia, m->ia3, NULL, NULL);
        ia3_layout(&m->c, &m->iag, m->ia3_grads, NULL, NULL);
    }
}

float *t5_param(const t5_model *m, const char *name, const t5_tensor **info) {
    for (int i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) {
            if (info) *info = &m->tensors[i];
            return m->params + m->tensors[i].offset;
        }
    return NULL;
}

float *t5_ia3_param(const t5_model *m, const char *name, const t5_tensor **info) {
    for (int i = 0; i < m->n_ia3_tensors; i++)
        if (strcmp(m->ia3_tensors[i].name, name) == 0) {
            if (info) *info = &m->ia3_tensors[i];
            return m->ia3 + m->ia3_tensors[i].offset;
        }
    return NULL;
}

/* -------------------------------------------------------------------- init */

/* HF T5PreTrainedModel._init_weights with factor 1.0:
 *   shared                N(0, 1)
 *   q                     N(0, (d_model * d_kv)^-1/2)
 *   k, v                  N(0, d_model^-1/2)
 *   o                     N(0, (heads * d_kv)^-1/2)
 *   wi_0, wi_1, wi        N(0, d_model^-1/2)
 *   wo                    N(0, d_ff^-1/2)
 *   relative_attention_bias N(0, d_model^-1/2)
 *   layer norms           1
 * and one departure: lm_head N(0, d_model^-1/2) instead of HF's N(0, 1).
 * The decoder's final RMSNorm gives rows of rms 1, so HF's std 1 makes
 * logits of std sqrt(d_model) and a first loss near 40 for d_model 256
 * (measured on t5-mini); std d_model^-1/2 gives logits of std 1 and a first loss near
 * ln(vocab), the scale original T5 reaches by rescaling tied embeddings by
 * d_model^-1/2 (a tied model, t5.h, has no lm_head and gets exactly HF's
 * init). Each tensor draws from its own stream seeded by
 * (seed, tensor index), so the values do not depend on the order of calls. */
void t5_init_random(t5_model *m, uint64_t seed) {
    const t5_config *c = &m->c;
    int host = t5_on_host(m);
    float *base = host ? m->params : mallocCheck(sizeof(float) * m->n_params);
    for (int i = 0; i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        float *p = base + t->offset;
        const char *nm = t->name;
        double std;
        size_t ln = strlen(nm);
#define ENDS(s) (ln >= strlen(s) && strcmp(nm + ln - strlen(s), s) == 0)
        if (ENDS("layer_norm.weight")) {
            for (size_t j = 0; j < t->numel; j++) p[j] = 1.0f;
            continue;
        } else if (strcmp(nm, "shared.weight") == 0) std = 1.0;
        else if (strcmp(nm, "lm_head.weight") == 0) std = pow(c->d_model, -0.5);
        else if (ENDS(".q.weight")) std = pow((double)c->d_model * c->d_kv, -0.5);
        else if (ENDS(".k.weight") || ENDS(".v.weight")) std = pow(c->d_model, -0.5);
        else if (ENDS(".o.weight")) std = pow((double)c->num_heads * c->d_kv, -0.5);
        else if (ENDS("wi_0.weight") || ENDS("wi_1.weight") || ENDS(".wi.weight")) std = pow(c->d_model, -0.5);
        else if (ENDS("wo.weight")) std = pow(c->d_ff, -0.5);
        else if (ENDS("relative_attention_bias.weight")) std = pow(c->d_model, -0.5);
        else die("t5_init_random: no init rule for %s", nm);
#undef ENDS
        mc_rng r;
        mc_rng_seed(&r, seed * 1000003ULL + (uint64_t)i);
        for (size_t j = 0; j < t->numel; j++) p[j] = (float)(std * mc_rng_normal(&r));
    }
    if (!host) {
        t5_upload(m, m->params, base, m->n_params);
        free(base);
    }
    if (m->ia3) {
        float *ones = host ? m->ia3 : mallocCheck(sizeof(float) * m->n_ia3);
        for (size_t i = 0; i < m->n_ia3; i++) ones[i] = 1.0f;
        if (!host) {
            t5_upload(m, m->ia3, ones, m->n_ia3);
            free(ones);
        }
    }
}

/* ------------------------------------------------------------- activations */

static float *take(size_t *off, float *base, size_t n) {
    float *p = base ? base + *off : NULL;
    *off += n;
    return p;
}

static size_t acts_layout(const t5_model *m, t5_acts *A, float *base, int B, int Te, int Bd, int Td) {
    const t5_config *c = &m->c;
    size_t D = c->d_model, HK = (size_t)c->num_heads * c->d_kv, F = c->d_ff, H = c->num_heads;
    size_t Ne = (size_t)B * Te, Nd = (size_t)Bd * Td;
    int ia3 = m->ia3 != NULL;
    size_t off = 0;
    A->enc_emb = take(&off, base, Ne * D);
    A->enc_out = take(&off, base, Ne * D);
    A->enc_rstd = take(&off, base, Ne);
    A->dec_emb = take(&off, base, Nd * D);
    A->dec_out = take(&off, base, Nd * D);
    A->dec_rstd = take(&off, base, Nd);
    A->logits = take(&off, base, Nd * c->vocab_size);
    A->enc_bias = take(&off, base, H * Te * Te);
    A->dec_bias = take(&off, base, H * Td * Td);
    for (int s = 0; s < 2; s++) {
        int L = s ? c->num_decoder_layers : c->num_layers;
        size_t N = s ? Nd : Ne, T = s ? Td : Te, Bs = s ? Bd : B;
        t5_block_acts *blocks = s ? A->dec : A->enc;
        for (int l = 0; l < L; l++) {
            t5_block_acts *b = &blocks[l];
            if (m->lean && l > 0) { /* block 0's buffers; the outputs alternate */
                *b = blocks[0];
                if (l == 1) b->out = take(&off, base, N * D);
                else b->out = blocks[l - 2].out;
                continue;
            }
            memset(b, 0, sizeof *b);
            b->sa_lnx = take(&off, base, N * D);
            b->sa_rstd = take(&off, base, N);
            b->q = take(&off, base, N * HK);
            b->k = take(&off, base, N * HK);
            b->v = take(&off, base, N * HK);
            b->ks = ia3 ? take(&off, base, N * HK) : b->k;
            b->vs = ia3 ? take(&off, base, N * HK) : b->v;
            b->probs = take(&off, base, Bs * H * T * T);
            b->att = take(&off, base, N * HK);
            b->x1 = take(&off, base, N * D);
            if (s) {
                b->ca_lnx = take(&off, base, Nd * D);
                b->ca_rstd = take(&off, base, Nd);
                b->cq = take(&off, base, Nd * HK);
                b->ck = take(&off, base, Ne * HK);
                b->cv = take(&off, base, Ne * HK);
                b->cks = ia3 ? take(&off, base, Ne * HK) : b->ck;
                b->cvs = ia3 ? take(&off, base, Ne * HK) : b->cv;
                b->cprobs = take(&off, base, Bd * H * Td * Te);
                b->catt = take(&off, base, Nd * HK);
                b->x2 = take(&off, base, Nd * D);
            }
            b->ff_lnx = take(&off, base, N * D);
            b->ff_rstd = take(&off, base, N);
            b->h0 = take(&off, base, N * F);
            b->h1 = take(&off, base, N * F);
            b->h1s = ia3 ? take(&off, base, N * F) : b->h1;
            b->hg = c->ffn == T5_FFN_RELU ? b->h1s : take(&off, base, N * F);
            b->out = take(&off, base, N * D);
        }
    }
    return off;
}

void t5_alloc_acts(t5_model *m, int maxB, int maxTe, int maxBd, int maxTd, int with_grads) {
    int lean = with_grads == T5_ACTS_SCORE;
    if (lean) with_grads = 0;
    if (m->act_mem && maxB <= m->maxB && maxTe <= m->maxTe && maxBd <= m->maxBd &&
        maxTd <= m->maxTd && (!with_grads || m->grad_mem) && (lean || !m->lean))
        return;
    if (m->act_mem) { /* grow to cover both the old and new sizes */
        lean &= m->lean;
        if (m->maxB > maxB) maxB = m->maxB;
        if (m->maxTe > maxTe) maxTe = m->maxTe;
        if (m->maxBd > maxBd) maxBd = m->maxBd;
        if (m->maxTd > maxTd) maxTd = m->maxTd;
        with_grads |= m->grad_mem != NULL;
    }
    free_acts(m);
    const mc_ops *o = m->ops;
    const t5_config *c = &m->c;
    if (!m->a.enc) {
        m->a.enc = callocCheck(c->num_layers, sizeof(t5_block_acts));
        m->a.dec = callocCheck(c->num_decoder_layers, sizeof(t5_block_acts));
        m->da.enc = callocCheck(c->num_layers, sizeof(t5_block_acts));
        m->da.dec = callocCheck(c->num_decoder_layers, sizeof(t5_block_acts));
    }
    m->maxB = maxB, m->maxTe = maxTe, m->maxBd = maxBd, m->maxTd = maxTd;
    m->lean = lean;
    m->act_floats = acts_layout(m, &m->a, NULL, maxB, maxTe, maxBd, maxTd);
    m->act_mem = o->alloc(m->act_floats * sizeof(float));
    acts_layout(m, &m->a, m->act_mem, maxB, maxTe, maxBd, maxTd);
    if (with_grads) {
        m->grad_floats = m->act_floats;
        m->grad_mem = o->alloc(m->grad_floats * sizeof(float));
        acts_layout(m, &m->da, m->grad_mem, maxB, maxTe, maxBd, maxTd);
    }
    size_t ne = (size_t)maxB * maxTe, nd = (size_t)maxBd * maxTd;
    m->enc_buckets = mallocCheck(sizeof(int) * maxTe * maxTe);
    m->dec_buckets = mallocCheck(sizeof(int) * maxTd * maxTd);
    m->enc_mask = mallocCheck(ne);
    m->tok_loss = mallocCheck(sizeof(float) * nd);
    m->tok_w = mallocCheck(sizeof(float) * nd);
    m->lse = o->alloc(sizeof(float) * nd);
    if (t5_on_host(m)) {
        m->d_enc_buckets = m->enc_buckets, m->d_dec_buckets = m->dec_buckets;
        m->d_enc_mask = m->enc_mask;
        m->d_tok_loss = m->tok_loss, m->d_tok_w = m->tok_w;
        m->d_ids = NULL;
    } else {
        m->d_enc_buckets = o->alloc(sizeof(int) * maxTe * maxTe);
        m->d_dec_buckets = o->alloc(sizeof(int) * maxTd * maxTd);
        m->d_enc_mask = o->alloc(ne);
        m->d_tok_loss = o->alloc(sizeof(float) * nd);
        m->d_tok_w = o->alloc(sizeof(float) * nd);
        m->d_ids = o->alloc(sizeof(int) * (ne + 2 * nd));
    }
}

void t5_host_view(const t5_model *m, t5_model **view) {
    if (t5_on_host(m)) {
        *view = (t5_model *)m;
        return;
    }
    t5_model *v = *view;
    if (!v) {
        v = callocCheck(1, sizeof *v);
        v->a.enc = callocCheck(m->c.num_layers, sizeof(t5_block_acts));
        v->a.dec = callocCheck(m->c.num_decoder_layers, sizeof(t5_block_acts));
        v->da.enc = callocCheck(m->c.num_layers, sizeof(t5_block_acts));
        v->da.dec = callocCheck(m->c.num_decoder_layers, sizeof(t5_block_acts));
        *view = v;
    }
    /* the view's own blocks (act_floats / grad_floats: their capacities,
     * grown with m's) and tables; everything else comes from m */
    const t5_batch *b = &m->last;
    size_t used = acts_layout(m, &v->a, NULL, b->B, b->Te, b->Bd, b->Td);
    if (v->act_floats < used) {
        free(v->act_mem);
        v->act_mem = mallocCheck(sizeof(float) * used);
        v->act_floats = used;
    }
    if (m->grad_mem && v->grad_floats < used) {
        free(v->grad_mem);
        v->grad_mem = mallocCheck(sizeof(float) * used);
        v->grad_floats = used;
    }
    t5_acts a = v->a, da = v->da;
    float *act = v->act_mem, *grad = v->grad_mem;
    size_t cap_a = v->act_floats, cap_g = v->grad_floats;
    *v = *m;
    v->a = a, v->da = da, v->act_mem = act, v->grad_mem = m->grad_mem ? grad : NULL;
    v->act_floats = cap_a, v->grad_floats = cap_g;
    acts_layout(m, &v->a, v->act_mem, b->B, b->Te, b->Bd, b->Td);
    t5_download(m, v->act_mem, m->act_mem, used);
    if (m->grad_mem) {
        acts_layout(m, &v->da, v->grad_mem, b->B, b->Te, b->Bd, b->Td);
        t5_download(m, v->grad_mem, m->grad_mem, used);
    }
    /* host arrays (buckets, mask, losses) are m's own host arrays */
    v->d_enc_buckets = m->enc_buckets, v->d_dec_buckets = m->dec_buckets;
    v->d_enc_mask = m->enc_mask, v->d_tok_loss = m->tok_loss, v->d_tok_w = m->tok_w;
    v->lse = NULL, v->d_ids = NULL;
    v->ops = dev_ops(MC_DEV_CPU);
}

void t5_host_view_free(const t5_model *m, t5_model *view) {
    if (!view || view == m) return;
    free(view->act_mem);
    free(view->grad_mem);
    free(view->a.enc);
    free(view->a.dec);
    free(view->da.enc);
    free(view->da.dec);
    free(view);
}

/* ----------------------------------------------------------------- forward */

/* Self-attention + FFN part shared by encoder and decoder blocks. */
static void self_attn_forward(t5_model *m, t5_block_acts *a, const t5_block_params *P,
                              const t5_block_ia3 *IA, const float *x, const float *bias,
                              const uint8_t *mask, int att_flags, int B, int T) {
    const t5_config *c = &m->c;
    int D = c->d_model, H = c->num_heads, K = c->d_kv, HK = H * K, N = B * T;
    OPS->rmsnorm_forward(a->sa_lnx, a->sa_rstd, x, P->sa_ln, N, D, c->eps);
    OPS->linear_forward(a->q, a->sa_lnx, P->sa_q, N, D, HK);
    OPS->linear_forward(a->k, a->sa_lnx, P->sa_k, N, D, HK);
    OPS->linear_forward(a->v, a->sa_lnx, P->sa_v, N, D, HK);
    if (IA) {
        OPS->ia3_forward(a->ks, a->k, IA->sa_k, N, HK);
        OPS->ia3_forward(a->vs, a->v, IA->sa_v, N, HK);
    }
    OPS->attention_forward(a->att, a->probs, a->q, a->ks, a->vs, bias, mask, NULL, att_flags, B, T, T, H, K);
    OPS->linear_forward(a->x1, a->att, P->sa_o, N, HK, D);
    OPS->add_inplace(a->x1, x, (long)N * D);
}

/* Gated GELU: hg = gelu(wi_0 x) * (s * wi_1 x). ReLU: hg = h1s =
 * s * relu(wi x). Then out = x + wo hg. */
static void ffn_forward(t5_model *m, t5_block_acts *a, const t5_block_params *P,
                        const t5_block_ia3 *IA, const float *x, int N) {
    const t5_config *c = &m->c;
    int D = c->d_model, F = c->d_ff;
    OPS->rmsnorm_forward(a->ff_lnx, a->ff_rstd, x, P->ff_ln, N, D, c->eps);
    OPS->linear_forward(a->h0, a->ff_lnx, P->wi0, N, D, F);
    if (c->ffn == T5_FFN_RELU) {
        OPS->relu_forward(a->h1, a->h0, (long)N * F);
        if (IA) OPS->ia3_forward(a->h1s, a->h1, IA->ff, N, F);
    } else {
        OPS->linear_forward(a->h1, a->ff_lnx, P->wi1, N, D, F);
        if (IA) OPS->ia3_forward(a->h1s, a->h1, IA->ff, N, F);
        OPS->gated_gelu_forward(a->hg, a->h0, a->h1s, (long)N * F);
    }
    OPS->linear_forward(a->out, a->hg, P->wo, N, F, D);
    OPS->add_inplace(a->out, x, (long)N * D);
}

/* The forward's set-up for batch b: activations laid out for its dims,
 * padding mask, position buckets and biases; the ids as the ops read them
 * (on the device when the model lives there). */
typedef struct {
    const int *enc, *dec, *targets;
} fwd_ids;

static fwd_ids forward_setup(t5_model *m, const t5_batch *b) {
    const t5_config *c = &m->c;
    if (!m->act_mem || b->B > m->maxB || b->Te > m->maxTe || b->Bd > m->maxBd || b->Td > m->maxTd)
        t5_alloc_acts(m, b->B, b->Te, b->Bd, b->Td, m->lean ? T5_ACTS_SCORE : 0);
    int H = c->num_heads, Te = b->Te, Td = b->Td, Ne = b->B * Te, Nd = b->Bd * Td;
    /* re-derive the activation pointers for these dims: buffers are packed
     * for the current batch inside blocks sized for the largest one */
    acts_layout(m, &m->a, m->act_mem, b->B, Te, b->Bd, Td);
    if (m->grad_mem) acts_layout(m, &m->da, m->grad_mem, b->B, Te, b->Bd, Td);
    m->last = *b;
    t5_acts *a = &m->a;

    /* host side: padding mask and position buckets, uploaded with the ids
     * when the model lives on a device */
    for (int n = 0; n < Ne; n++) m->enc_mask[n] = b->enc_ids[n] != T5_PAD;
    op_relpos_buckets(m->enc_buckets, Te, Te, 1, c->num_buckets, c->max_distance);
    op_relpos_buckets(m->dec_buckets, Td, Td, 0, c->num_buckets, c->max_distance);
    fwd_ids id = {b->enc_ids, b->dec_ids, b->targets};
    if (!t5_on_host(m)) {
        int *d = m->d_ids;
        OPS->upload(d, b->enc_ids, sizeof(int) * Ne);
        OPS->upload(d + Ne, b->dec_ids, sizeof(int) * Nd);
        if (b->targets) OPS->upload(d + Ne + Nd, b->targets, sizeof(int) * Nd);
        id.enc = d, id.dec = d + Ne, id.targets = b->targets ? d + Ne + Nd : NULL;
        OPS->upload(m->d_enc_mask, m->enc_mask, (size_t)Ne);
        OPS->upload(m->d_enc_buckets, m->enc_buckets, sizeof(int) * Te * Te);
        OPS->upload(m->d_dec_buckets, m->dec_buckets, sizeof(int) * Td * Td);
    }
    OPS->relpos_bias_forward(a->enc_bias, m->p.enc_relb, m->d_enc_buckets, H, Te, Te);
    OPS->relpos_bias_forward(a->dec_bias, m->p.dec_relb, m->d_dec_buckets, H, Td, Td);
    return id;
}

static int att_pad(const t5_batch *b) { return b->pad_invariant ? ATT_PAD_INVARIANT : 0; }

/* Encoder block l on x (B*Te rows); its output is a->enc[l].out. */
static void enc_block_forward(t5_model *m, const t5_batch *b, int l, const float *x) {
    t5_block_acts *ba = &m->a.enc[l];
    const t5_block_ia3 *IA = m->ia3 ? &m->ia.enc[l] : NULL;
    self_attn_forward(m, ba, &m->p.enc[l], IA, x, m->a.enc_bias, m->d_enc_mask, att_pad(b), b->B, b->Te);
    ffn_forward(m, ba, &m->p.enc[l], IA, ba->x1, b->B * b->Te);
}

/* Decoder block l on x (Bd*Td rows) reading the encoder output enc; its
 * output is a->dec[l].out. */
static void dec_block_forward(t5_model *m, const t5_batch *b, int l, const float *x, const float *enc) {
    const t5_config *c = &m->c;
    int D = c->d_model, H = c->num_heads, K = c->d_kv, HK = H * K;
    int Ne = b->B * b->Te, Nd = b->Bd * b->Td;
    t5_block_acts *ba = &m->a.dec[l];
    const t5_block_params *P = &m->p.dec[l];
    const t5_block_ia3 *IA = m->ia3 ? &m->ia.dec[l] : NULL;
    self_attn_forward(m, ba, P, IA, x, m->a.dec_bias, NULL, ATT_CAUSAL | att_pad(b), b->Bd, b->Td);
    OPS->rmsnorm_forward(ba->ca_lnx, ba->ca_rstd, ba->x1, P->ca_ln, Nd, D, c->eps);
    OPS->linear_forward(ba->cq, ba->ca_lnx, P->ca_q, Nd, D, HK);
    OPS->linear_forward(ba->ck, enc, P->ca_k, Ne, D, HK);
    OPS->linear_forward(ba->cv, enc, P->ca_v, Ne, D, HK);
    if (IA) {
        OPS->ia3_forward(ba->cks, ba->ck, IA->ca_k, Ne, HK);
        OPS->ia3_forward(ba->cvs, ba->cv, IA->ca_v, Ne, HK);
    }
    OPS->attention_forward(ba->catt, ba->cprobs, ba->cq, ba->cks, ba->cvs, NULL, m->d_enc_mask, b->dec_enc, att_pad(b),
                           b->Bd, b->Td, b->Te, H, K);
    OPS->linear_forward(ba->x2, ba->catt, P->ca_o, Nd, HK, D);
    OPS->add_inplace(ba->x2, ba->x1, (long)Nd * D);
    ffn_forward(m, ba, P, IA, ba->x2, Nd);
}

/* The decoder's final norm (scaled for a tied head), lm_head and the loss
 * from the last decoder block's output x. scored_only (t5_score, on the
 * host): lm_head and the loss only on the rows with a target, gathered to
 * the front (a padded row's logits are never read there); each row's
 * product and loss are computed as over every row, so the bytes are the
 * same (the kernels' sums do not depend on the rows beside them). */
static float head_forward(t5_model *m, const t5_batch *b, const float *x, const int *targets, int scored_only) {
    const t5_config *c = &m->c;
    int D = c->d_model, V = c->vocab_size, Nd = b->Bd * b->Td;
    t5_acts *a = &m->a;
    OPS->rmsnorm_forward(a->dec_out, a->dec_rstd, x, m->p.dec_ln, Nd, D, c->eps);
    if (c->tied) OPS->scale((long)Nd * D, t5_head_scale(c), a->dec_out);
    int nr = Nd, *rows = NULL, *tg = NULL;
    if (scored_only && b->targets && t5_on_host(m)) {
        rows = mallocCheck(sizeof(int) * (size_t)Nd * 2), tg = rows + Nd, nr = 0;
        for (int n = 0; n < Nd; n++)
            if (b->targets[n] > 0) {
                if (nr != n) memcpy(a->dec_out + (size_t)nr * D, a->dec_out + (size_t)n * D, sizeof(float) * D);
                tg[nr] = b->targets[n], rows[nr++] = n;
            }
        targets = tg;
    }
    OPS->linear_forward(a->logits, a->dec_out, c->tied ? m->p.shared : m->p.lm_head, nr, D, V);

    m->last_loss = 0;
    m->n_real_targets = 0;
    if (b->targets) {
        OPS->crossentropy_forward(m->d_tok_loss, m->lse, a->logits, targets, nr, V);
        if (!t5_on_host(m)) OPS->download(m->tok_loss, m->d_tok_loss, sizeof(float) * Nd);
        if (rows) { /* back to each row's place, from the last (rows[i] >= i) */
            for (int i = nr - 1, n = Nd - 1; n >= 0; n--)
                m->tok_loss[n] = i >= 0 && rows[i] == n ? m->tok_loss[i--] : 0.0f;
        }
        double s = 0;
        int cnt = 0;
        for (int n = 0; n < Nd; n++)
            if (b->targets[n] > 0) s += m->tok_loss[n], cnt++;
        m->n_real_targets = cnt;
        m->last_loss = cnt ? (float)(s / cnt) : 0.0f;
    }
    free(rows);
    return m->last_loss;
}

static float forward(t5_model *m, const t5_batch *b, int scored_only) {
    const t5_config *c = &m->c;
    int D = c->d_model, Ne = b->B * b->Te, Nd = b->Bd * b->Td;
    fwd_ids id = forward_setup(m, b);
    t5_acts *a = &m->a;
    OPS->embed_forward(a->enc_emb, id.enc, m->p.shared, Ne, D);
    const float *x = a->enc_emb;
    for (int l = 0; l < c->num_layers; l++) {
        enc_block_forward(m, b, l, x);
        x = a->enc[l].out;
    }
    OPS->rmsnorm_forward(a->enc_out, a->enc_rstd, x, m->p.enc_ln, Ne, D, c->eps);
    OPS->embed_forward(a->dec_emb, id.dec, m->p.shared, Nd, D);
    x = a->dec_emb;
    for (int l = 0; l < c->num_decoder_layers; l++) {
        dec_block_forward(m, b, l, x, a->enc_out);
        x = a->dec[l].out;
    }
    return head_forward(m, b, x, id.targets, scored_only);
}

float t5_forward(t5_model *m, const t5_batch *b) { return forward(m, b, 0); }

void t5_score(t5_model *m, const t5_batch *b, float *scores) {
    forward(m, b, 1);
    t5_row_logprob(m, scores);
}

void t5_forward_layer(t5_model *m, const t5_batch *b, int layer, const float *in, const float *enc, float *out) {
    const t5_config *c = &m->c;
    int D = c->d_model, L = c->num_layers, Ld = c->num_decoder_layers, Ne = b->B * b->Te, Nd = b->Bd * b->Td;
    if (layer < 0 || layer > L + Ld) die("t5_forward_layer: layer %d of %d", layer, L + Ld + 1);
    if (m->lean) die("t5_forward_layer: the activations were sized for scoring only (T5_ACTS_SCORE)");
    fwd_ids id = forward_setup(m, b);
    t5_acts *a = &m->a;
    if (layer < L) {
        if (!in) OPS->embed_forward(a->enc_emb, id.enc, m->p.shared, Ne, D), in = a->enc_emb;
        enc_block_forward(m, b, layer, in);
        const float *y = a->enc[layer].out;
        if (layer == L - 1) OPS->rmsnorm_forward(a->enc_out, a->enc_rstd, y, m->p.enc_ln, Ne, D, c->eps), y = a->enc_out;
        if (out) OPS->copy(out, y, sizeof(float) * (size_t)Ne * D);
        return;
    }
    if (layer < L + Ld) {
        if (!in) OPS->embed_forward(a->dec_emb, id.dec, m->p.shared, Nd, D), in = a->dec_emb;
        /* where the cross-attention's k and v read it (t5_linears) */
        if (enc != a->enc_out) OPS->copy(a->enc_out, enc, sizeof(float) * (size_t)Ne * D);
        dec_block_forward(m, b, layer - L, in, a->enc_out);
        if (out) OPS->copy(out, a->dec[layer - L].out, sizeof(float) * (size_t)Nd * D);
        return;
    }
    head_forward(m, b, in, id.targets, 0);
}

void t5_row_logprob(const t5_model *m, float *scores) {
    const t5_batch *b = &m->last;
    for (int r = 0; r < b->Bd; r++) {
        double s = 0;
        for (int t = 0; t < b->Td; t++)
            if (b->targets[r * b->Td + t] > 0) s += m->tok_loss[r * b->Td + t];
        scores[r] = (float)-s;
    }
}

/* ---------------------------------------------------------------- backward */

/* Backward of self_attn_forward: given da->x1 (complete), accumulate into dx
 * (the gradient of the block input; NULL = not needed). */
/* Backward of self_attn_forward: given da->x1 (complete), produce dx, the
 * gradient of the block input (NULL = not needed). dx is written here first
 * (the residual), then accumulated. */
static void self_attn_backward(t5_model *m, t5_block_acts *da, const t5_block_acts *a,
                               const t5_block_params *P, t5_block_params *G,
                               const t5_block_ia3 *IA, t5_block_ia3 *IG, const float *x,
                               float *dx, float *dbias, int B, int T) {
    const t5_config *c = &m->c;
    int D = c->d_model, H = c->num_heads, K = c->d_kv, HK = H * K, N = B * T;
    if (dx) FCOPY(dx, da->x1, (long)N * D);
    OPS->linear_backward(da->att, G ? G->sa_o : NULL, da->x1, a->att, P->sa_o, N, HK, D, 0);
    OPS->attention_backward(da->q, da->ks, da->vs, dbias, da->probs, da->att, a->q, a->ks, a->vs,
                          a->probs, B, T, T, H, K, 0);
    if (IA) {
        OPS->ia3_backward(da->k, IG->sa_k, da->ks, a->k, IA->sa_k, N, HK, 0);
        OPS->ia3_backward(da->v, IG->sa_v, da->vs, a->v, IA->sa_v, N, HK, 0);
    }
    if (!dx && !G) return; /* block 0 with a frozen base: nothing below needs it */
    OPS->linear_backward(da->sa_lnx, G ? G->sa_q : NULL, da->q, a->sa_lnx, P->sa_q, N, D, HK, 0);
    OPS->linear_backward(da->sa_lnx, G ? G->sa_k : NULL, da->k, a->sa_lnx, P->sa_k, N, D, HK, 1);
    OPS->linear_backward(da->sa_lnx, G ? G->sa_v : NULL, da->v, a->sa_lnx, P->sa_v, N, D, HK, 1);
    OPS->rmsnorm_backward(dx, G ? G->sa_ln : NULL, da->sa_lnx, x, P->sa_ln, a->sa_rstd, N, D, 1);
}

/* Backward of ffn_forward: given da->out (complete), write dx, the gradient
 * of the FFN input as far as this sub-layer goes (residual + norm path). */
static void ffn_backward(t5_model *m, t5_block_acts *da, const t5_block_acts *a,
                         const t5_block_params *P, t5_block_params *G, const t5_block_ia3 *IA,
                         t5_block_ia3 *IG, const float *x, float *dx, int N) {
    const t5_config *c = &m->c;
    int D = c->d_model, F = c->d_ff;
    FCOPY(dx, da->out, (long)N * D);
    OPS->linear_backward(da->hg, G ? G->wo : NULL, da->out, a->hg, P->wo, N, F, D, 0);
    if (c->ffn == T5_FFN_RELU) { /* da->hg is da->h1s */
        if (IA) OPS->ia3_backward(da->h1, IG->ff, da->h1s, a->h1, IA->ff, N, F, 0);
        OPS->relu_backward(da->h0, da->h1, a->h0, (long)N * F, 0);
        OPS->linear_backward(da->ff_lnx, G ? G->wi0 : NULL, da->h0, a->ff_lnx, P->wi0, N, D, F, 0);
    } else {
        OPS->gated_gelu_backward(da->h0, da->h1s, da->hg, a->h0, a->h1s, (long)N * F, 0);
        if (IA) OPS->ia3_backward(da->h1, IG->ff, da->h1s, a->h1, IA->ff, N, F, 0);
        OPS->linear_backward(da->ff_lnx, G ? G->wi0 : NULL, da->h0, a->ff_lnx, P->wi0, N, D, F, 0);
        OPS->linear_backward(da->ff_lnx, G ? G->wi1 : NULL, da->h1, a->ff_lnx, P->wi1, N, D, F, 1);
    }
    OPS->rmsnorm_backward(dx, G ? G->ff_ln : NULL, da->ff_lnx, x, P->ff_ln, a->ff_rstd, N, D, 1);
}

/* Layer l of the decoder (dec 1) or the encoder for the backward pass: its
 * activations and their gradients, its parameters and (full) their
 * gradients, its IA3 vectors and (ia3) theirs; NULL where not kept. */
typedef struct {
    t5_block_acts *dba;
    const t5_block_acts *ba;
    const t5_block_params *P;
    t5_block_params *G;
    const t5_block_ia3 *IA;
    t5_block_ia3 *IG;
} layer_bwd;

static layer_bwd layer_of(t5_model *m, int dec, int l, int full, int ia3) {
    layer_bwd v = {dec ? &m->da.dec[l] : &m->da.enc[l], dec ? &m->a.dec[l] : &m->a.enc[l],
                   dec ? &m->p.dec[l] : &m->p.enc[l], NULL, NULL, NULL};
    if (full) v.G = dec ? &m->g.dec[l] : &m->g.enc[l];
    if (ia3) v.IA = dec ? &m->ia.dec[l] : &m->ia.enc[l], v.IG = dec ? &m->iag.dec[l] : &m->iag.enc[l];
    return v;
}

void t5_zero_grad(t5_model *m) {
    if (m->grads) FZERO(m->grads, m->n_params);
    if (m->ia3_grads) FZERO(m->ia3_grads, m->n_ia3);
}

void t5_backward(t5_model *m, const t5_batch *b, int loss_mode, float scale) {
    const t5_config *c = &m->c;
    if (b->dec_enc) die("t5_backward: decoder rows sharing encoder rows (dec_enc) are not supported");
    if (!b->targets) die("t5_backward: batch has no targets");
    if (m->lean) die("t5_backward: the activations were sized for scoring only (T5_ACTS_SCORE)");
    if (!m->grad_mem) {
        die("t5_backward: activation gradients were not allocated before the forward pass "
            "(call t5_alloc_acts with with_grads=1)");
    }
    int D = c->d_model, H = c->num_heads, K = c->d_kv, HK = H * K, V = c->vocab_size;
    int B = b->B, Te = b->Te, Bd = b->Bd, Td = b->Td, Ne = B * Te, Nd = Bd * Td;
    (void)K;
    const t5_acts *a = &m->a;
    t5_acts *da = &m->da;
    const int ia3 = m->ia3 != NULL, full = m->grads != NULL;

    /* no zeroing of the activation-gradient block: the first op writing each
     * buffer overwrites it (ops.h); only the position-bias gradients, which
     * every layer adds to, start at zero; only full fine-tuning trains the
     * position-bias tables (IA3 skips their gradients: dbias NULL) */
    acts_layout(m, da, m->grad_mem, B, Te, Bd, Td);
    float *denc_bias = full ? da->enc_bias : NULL, *ddec_bias = full ? da->dec_bias : NULL;
    if (full) FZERO(da->enc_bias, (long)H * Te * Te), FZERO(da->dec_bias, (long)H * Td * Td);
    /* the batch's ids on the model's device (uploaded by t5_forward) */
    int host = t5_on_host(m);
    const int *enc_ids = host ? b->enc_ids : m->d_ids;
    const int *dec_ids = host ? b->dec_ids : m->d_ids + Ne;
    const int *targets = host ? b->targets : m->d_ids + Ne + Nd;

    /* loss weights */
    for (int r = 0; r < Bd; r++) {
        int cnt = 0;
        for (int t = 0; t < Td; t++) cnt += b->targets[r * Td + t] > 0;
        for (int t = 0; t < Td; t++) {
            int n = r * Td + t;
            float w = 0;
            if (b->targets[n] > 0) {
                if (loss_mode == T5_LOSS_EXAMPLE_MEAN) w = scale / cnt;
                else w = m->n_real_targets ? scale / m->n_real_targets : 0.0f;
            }
            m->tok_w[n] = w;
        }
    }
    if (!host) OPS->upload(m->d_tok_w, m->tok_w, sizeof(float) * Nd);
    OPS->crossentropy_backward(da->logits, a->logits, m->lse, targets, m->d_tok_w, Nd, V);
    if (c->tied) { /* the head is shared.weight, its input the scaled norm output */
        OPS->linear_backward(da->dec_out, full ? m->g.shared : NULL, da->logits, a->dec_out, m->p.shared, Nd, D,
                             V, 0);
        OPS->scale((long)Nd * D, t5_head_scale(c), da->dec_out);
    } else {
        OPS->linear_backward(da->dec_out, full ? m->g.lm_head : NULL, da->logits, a->dec_out, m->p.lm_head, Nd, D,
                             V, 0);
    }
    int Ld = c->num_decoder_layers, Le = c->num_layers;
    OPS->rmsnorm_backward(da->dec[Ld - 1].out, full ? m->g.dec_ln : NULL, da->dec_out,
                        a->dec[Ld - 1].out, m->p.dec_ln, a->dec_rstd, Nd, D, 0);

    for (int l = Ld - 1; l >= 0; l--) {
        layer_bwd v = layer_of(m, 1, l, full, ia3);
        ffn_backward(m, v.dba, v.ba, v.P, v.G, v.IA, v.IG, v.ba->x2, v.dba->x2, Nd);
        /* cross-attention: x2 = x1 + o(catt) */
        FCOPY(v.dba->x1, v.dba->x2, (long)Nd * D);
        OPS->linear_backward(v.dba->catt, v.G ? v.G->ca_o : NULL, v.dba->x2, v.ba->catt, v.P->ca_o, Nd, HK, D,
                             0);
        OPS->attention_backward(v.dba->cq, v.dba->cks, v.dba->cvs, NULL, v.dba->cprobs, v.dba->catt,
                                v.ba->cq, v.ba->cks, v.ba->cvs, v.ba->cprobs, Bd, Td, Te, H, c->d_kv, 0);
        if (v.IA) {
            OPS->ia3_backward(v.dba->ck, v.IG->ca_k, v.dba->cks, v.ba->ck, v.IA->ca_k, Ne, HK, 0);
            OPS->ia3_backward(v.dba->cv, v.IG->ca_v, v.dba->cvs, v.ba->cv, v.IA->ca_v, Ne, HK, 0);
        }
        OPS->linear_backward(v.dba->ca_lnx, v.G ? v.G->ca_q : NULL, v.dba->cq, v.ba->ca_lnx, v.P->ca_q, Nd, D,
                             HK, 0);
        /* the encoder output's gradient collects every decoder layer's k and v */
        OPS->linear_backward(da->enc_out, v.G ? v.G->ca_k : NULL, v.dba->ck, a->enc_out, v.P->ca_k, Ne, D, HK,
                             l != Ld - 1);
        OPS->linear_backward(da->enc_out, v.G ? v.G->ca_v : NULL, v.dba->cv, a->enc_out, v.P->ca_v, Ne, D, HK,
                             1);
        OPS->rmsnorm_backward(v.dba->x1, v.G ? v.G->ca_ln : NULL, v.dba->ca_lnx, v.ba->x1, v.P->ca_ln,
                              v.ba->ca_rstd, Nd, D, 1);
        /* self-attention */
        const float *x = l ? a->dec[l - 1].out : a->dec_emb;
        float *dx = l ? da->dec[l - 1].out : (full || m->all_act_grads ? da->dec_emb : NULL);
        self_attn_backward(m, v.dba, v.ba, v.P, v.G, v.IA, v.IG, x, dx, ddec_bias, Bd, Td);
    }
    if (full) {
        OPS->embed_backward(m->g.shared, da->dec_emb, dec_ids, Nd, D);
        OPS->relpos_bias_backward(m->g.dec_relb, da->dec_bias, m->d_dec_buckets, H, Td, Td);
    }

    OPS->rmsnorm_backward(da->enc[Le - 1].out, full ? m->g.enc_ln : NULL, da->enc_out,
                        a->enc[Le - 1].out, m->p.enc_ln, a->enc_rstd, Ne, D, 0);
    for (int l = Le - 1; l >= 0; l--) {
        layer_bwd v = layer_of(m, 0, l, full, ia3);
        ffn_backward(m, v.dba, v.ba, v.P, v.G, v.IA, v.IG, v.ba->x1, v.dba->x1, Ne);
        const float *x = l ? a->enc[l - 1].out : a->enc_emb;
        float *dx = l ? da->enc[l - 1].out : (full || m->all_act_grads ? da->enc_emb : NULL);
        self_attn_backward(m, v.dba, v.ba, v.P, v.G, v.IA, v.IG, x, dx, denc_bias, B, Te);
    }
    if (full) {
        OPS->embed_backward(m->g.shared, da->enc_emb, enc_ids, Ne, D);
        OPS->relpos_bias_backward(m->g.enc_relb, da->enc_bias, m->d_enc_buckets, H, Te, Te);
    }
}

/* ----------------------------------------------------------------- linears */

int t5_n_linears(const t5_model *m) {
    int ff = m->c.ffn == T5_FFN_RELU ? 2 : 3; /* wi, wo or wi_0, wi_1, wo */
    return !m->c.tied + (4 + ff) * m->c.num_layers + (8 + ff) * m->c.num_decoder_layers;
}

int t5_linears(const t5_model *m, t5_linear *out) {
    if (m->lean && out) die("t5_linears: the activations were sized for scoring only (T5_ACTS_SCORE)");
    int n = 0;
    const t5_config *c = &m->c;
    int D = c->d_model, HK = c->num_heads * c->d_kv, F = c->d_ff;
    const t5_acts *a = &m->a, *da = m->grad_mem ? &m->da : NULL;
    char nm[96];
#define L(wp, gp, IN, OUT, ST, X, Gd, fmt, ...)                                  \
    do {                                                                         \
        if (out) {                                                               \
            t5_linear *o = &out[n];                                              \
            snprintf(nm, sizeof nm, fmt, __VA_ARGS__);                           \
            snprintf(o->name, sizeof o->name, "%s", nm);                         \
            o->w = (wp);                                                         \
            o->dw = m->grads ? (gp) : NULL;                                      \
            o->in = IN, o->out = OUT, o->stream = ST;                            \
            o->x = (X);                                                          \
            o->g = da ? (Gd) : NULL;                                             \
        }                                                                        \
        n++;                                                                     \
    } while (0)
    for (int s = 0; s < 2; s++) {
        const char *st = s ? "decoder" : "encoder";
        int Lc = s ? c->num_decoder_layers : c->num_layers;
        for (int l = 0; l < Lc; l++) {
            const t5_block_params *P = s ? &m->p.dec[l] : &m->p.enc[l];
            const t5_block_params *G = m->grads ? (s ? &m->g.dec[l] : &m->g.enc[l]) : NULL;
            const t5_block_acts *ba = s ? &a->dec[l] : &a->enc[l];
            const t5_block_acts *dba = da ? (s ? &da->dec[l] : &da->enc[l]) : NULL;
            int S = s ? T5_DEC : T5_ENC;
            const char *f = s ? "2" : "1";
            L(P->sa_q, G->sa_q, D, HK, S, ba->sa_lnx, dba->q, "%s.block.%d.layer.0.SelfAttention.q.weight", st, l);
            L(P->sa_k, G->sa_k, D, HK, S, ba->sa_lnx, dba->k, "%s.block.%d.layer.0.SelfAttention.k.weight", st, l);
            L(P->sa_v, G->sa_v, D, HK, S, ba->sa_lnx, dba->v, "%s.block.%d.layer.0.SelfAttention.v.weight", st, l);
            L(P->sa_o, G->sa_o, HK, D, S, ba->att, dba->x1, "%s.block.%d.layer.0.SelfAttention.o.weight", st, l);
            if (s) {
                L(P->ca_q, G->ca_q, D, HK, T5_DEC, ba->ca_lnx, dba->cq, "%s.block.%d.layer.1.EncDecAttention.q.weight", st, l);
                L(P->ca_k, G->ca_k, D, HK, T5_ENC, a->enc_out, dba->ck, "%s.block.%d.layer.1.EncDecAttention.k.weight", st, l);
                L(P->ca_v, G->ca_v, D, HK, T5_ENC, a->enc_out, dba->cv, "%s.block.%d.layer.1.EncDecAttention.v.weight", st, l);
                L(P->ca_o, G->ca_o, HK, D, T5_DEC, ba->catt, dba->x2, "%s.block.%d.layer.1.EncDecAttention.o.weight", st, l);
            }
            if (c->ffn == T5_FFN_RELU) {
                L(P->wi0, G->wi0, D, F, S, ba->ff_lnx, dba->h0, "%s.block.%d.layer.%s.DenseReluDense.wi.weight", st, l, f);
            } else {
                L(P->wi0, G->wi0, D, F, S, ba->ff_lnx, dba->h0, "%s.block.%d.layer.%s.DenseReluDense.wi_0.weight", st, l, f);
                L(P->wi1, G->wi1, D, F, S, ba->ff_lnx, dba->h1, "%s.block.%d.layer.%s.DenseReluDense.wi_1.weight", st, l, f);
            }
            L(P->wo, G->wo, F, D, S, ba->hg, dba->out, "%s.block.%d.layer.%s.DenseReluDense.wo.weight", st, l, f);
        }
    }
    if (!c->tied)
        L(m->p.lm_head, m->g.lm_head, D, c->vocab_size, T5_DEC, a->dec_out, da->logits, "%s", "lm_head.weight");
#undef L
    return n;
}

/* --------------------------------------------------------------- artifacts */

/* Every tensor the config implies is in the file with its shape: checked
 * on the table alone, before t5_new allocates what meta.config asks for, so
 * a config that does not describe the file cannot ask for more memory than
 * the file backs. */
static int check_layout(const art_file *f, const t5_config *c) {
    /* every layer has several tensors: more layers than tensors is not this file */
    if ((size_t)c->num_layers + (size_t)c->num_decoder_layers > f->n_tensors)
        return mc_fail("%s: meta.config has %d encoder and %d decoder layers but the file holds %zu tensors",
                       f->path, c->num_layers, c->num_decoder_layers, f->n_tensors);
    int rc = 0;
    t5_tensor *tab;
    int n = t5_param_table(c, &tab);
    for (int i = 0; i < n && rc == 0; i++) {
        const t5_tensor *t = &tab[i];
        const art_tensor *at = art_find(f, t->name);
        if (!at)
            rc = mc_fail("%s: tensor %s missing (is this a T5 model artifact of the layout meta.config names?)", f->path, t->name);
        else if (at->ndim != t->ndim || at->shape[0] != t->shape[0] || (t->ndim == 2 && at->shape[1] != t->shape[1]))
            rc = mc_fail("%s: tensor %s has shape [%lld%s%lld], the config implies [%lld%s%lld]", f->path,
                         t->name, (long long)(at->ndim ? at->shape[0] : 0), at->ndim > 1 ? "," : "",
                         at->ndim > 1 ? (long long)at->shape[1] : 0LL, (long long)t->shape[0],
                         t->ndim > 1 ? "," : "", t->ndim > 1 ? (long long)t->shape[1] : 0LL);
    }
    free(tab);
    return rc;
}

t5_model *t5_load_model(const char *path, int with_grads, int with_ia3, char key_out[33]) {
    art_file *f = art_open(path, "model");
    if (!f) return NULL;
    t5_config c;
    if (t5_config_from_val(&c, val_get(f->meta, "config")) < 0) {
        mc_fail("%s: %s", path, mc_error());
        art_close(f);
        return NULL;
    }
    if (check_layout(f, &c) < 0) {
        art_close(f);
        return NULL;
    }
    t5_model *m = t5_new(&c, with_grads, with_ia3);
    for (int i = 0; i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        const art_tensor *at = art_find(f, t->name);
        if (at->dtype == ART_F32) {
            art_tensor_copy(at, m->params + t->offset);
        } else {
            float *tmp = art_tensor_f32(at);
            memcpy(m->params + t->offset, tmp, t->numel * sizeof(float));
            free(tmp);
        }
        const float *x = m->params + t->offset;
        long j = mc_nonfinite_at(x, (long)t->numel);
        if (j >= 0) {
            mc_fail("%s: tensor %s holds %s at element %ld: not a usable model (retrain or re-merge it)", path,
                    t->name, isnan(x[j]) ? "a NaN" : "an infinite value", j);
            goto fail;
        }
    }
    if (key_out) snprintf(key_out, 33, "%s", f->key);
    art_close(f);
    return m;
fail:
    art_close(f);
    t5_free(m);
    return NULL;
}

int t5_load_ia3(t5_model *m, const char *path, const char *want_base_key) {
    return t5_load_ia3_key(m, path, want_base_key, NULL);
}

int t5_load_ia3_key(t5_model *m, const char *path, const char *want_base_key, char key_out[33]) {
    if (!m->ia3) return mc_fail("%s: model has no IA3 vectors", path);
    art_file *f = art_open(path, "ia3");
    if (!f) return -1;
    if (key_out) {
        snprintf(key_out, 33, "%s", f->key);
        if (!*key_out && key_file_hex(path, key_out) < 0) {
            art_close(f);
            return -1;
        }
    }
    const char *base = val_get_str(f->meta, "base", "");
    if (want_base_key && *want_base_key && *base && strcmp(base, want_base_key) != 0) {
        mc_fail("%s: meta.base = %s but the model's key is %s: these IA3 vectors were trained on "
                "another base model", path, base, want_base_key);
        art_close(f);
        return -1;
    }
    for (int i = 0; i < m->n_ia3_tensors; i++) {
        const t5_tensor *t = &m->ia3_tensors[i];
        const art_tensor *at = art_find(f, t->name);
        if (!at || at->numel != (int64_t)t->numel) {
            mc_fail("%s: IA3 vector %s %s", path, t->name, at ? "has the wrong size" : "missing");
            art_close(f);
            return -1;
        }
        float *tmp = art_tensor_f32(at);
        long j = mc_nonfinite_at(tmp, (long)t->numel);
        if (j >= 0) {
            mc_fail("%s: IA3 vector %s holds %s at element %ld: not usable (retrain it)", path, t->name,
                    isnan(tmp[j]) ? "a NaN" : "an infinite value", j);
            free(tmp);
            art_close(f);
            return -1;
        }
        t5_upload(m, m->ia3 + t->offset, tmp, t->numel);
        free(tmp);
    }
    art_close(f);
    return 0;
}

/* model memory readable on the host: the block itself on the CPU, else a
 * downloaded copy (the caller frees it when it differs) */
static float *host_copy(const t5_model *m, float *p, size_t n) {
    if (t5_on_host(m)) return p;
    float *h = mallocCheck(sizeof(float) * n);
    t5_download(m, h, p, n);
    return h;
}

static int write_tensors(art_writer *w, const t5_tensor *tab, int n, const float *base) {
    for (int i = 0; i < n; i++) {
        const t5_tensor *t = &tab[i];
        if (art_writer_tensor(w, t->name, ART_F32, t->ndim, t->shape, base + t->offset) < 0) return -1;
    }
    return 0;
}

/* Write an artifact of `kind`: meta mm (taken: freed here) with
 * meta.config added, the n tensors of tab in the block p (np floats). */
static int save_block(const t5_model *m, const char *path, const char *kind, const char *key, mc_val *mm,
                      const t5_tensor *tab, int n, float *p, size_t np) {
    val_set(mm, "config", t5_config_to_val(&m->c));
    art_writer *w = art_writer_open(path, kind, key, mm, n);
    val_free(mm);
    if (!w) return -1;
    float *hp = host_copy(m, p, np);
    int rc = write_tensors(w, tab, n, hp);
    if (hp != p) free(hp);
    if (rc < 0) {
        art_writer_abort(w);
        return -1;
    }
    return art_writer_close(w);
}

int t5_save_model(const t5_model *m, const char *path, const char *key, const mc_val *meta) {
    mc_val *mm = meta ? val_clone(meta) : val_map();
    return save_block(m, path, "model", key, mm, m->tensors, m->n_tensors, m->params, m->n_params);
}

int t5_save_ia3(const t5_model *m, const char *path, const char *key, const char *base_key,
                const mc_val *meta) {
    if (!m->ia3) return mc_fail("t5_save_ia3: model has no IA3 vectors");
    mc_val *mm = meta ? val_clone(meta) : val_map();
    val_set_str(mm, "base", base_key ? base_key : "");
    return save_block(m, path, "ia3", key, mm, m->ia3_tensors, m->n_ia3_tensors, m->ia3, m->n_ia3);
}
