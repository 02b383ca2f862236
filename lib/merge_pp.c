/* merge_pp.c - RegMean++ (merge_pp.h). */
#include "merge_pp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "merge.h"
#include "progress.h"
#include "rank.h"
#include "stats.h"

int mrg_pp_layer(const t5_config *c, const char *name) {
    int j;
    if (!strcmp(name, "shared.weight")) return -1;
    if (sscanf(name, "encoder.block.%d.", &j) == 1) return j;
    if (!strncmp(name, "encoder.", 8)) return c->num_layers - 1; /* final_layer_norm */
    if (sscanf(name, "decoder.block.%d.", &j) == 1) return c->num_layers + j;
    return c->num_layers + c->num_decoder_layers; /* decoder.final_layer_norm, lm_head */
}

typedef struct {
    const t5_config *c;
    int layer;
} layer_ctx;

static int in_layer(const char *name, void *ctx) {
    const layer_ctx *l = ctx;
    return mrg_pp_layer(l->c, name) == l->layer;
}

/* dst = the models' mean of tensor t */
static void mean_tensor(t5_model *const *models, int N, const t5_tensor *t, float *dst) {
    memset(dst, 0, sizeof(float) * t->numel);
    for (int i = 0; i < N; i++) {
        const float *x = models[i]->params + t->offset;
        for (size_t e = 0; e < t->numel; e++) dst[e] += x[e] / N;
    }
}

/* Each task's examples in batches (in order of input length, as the
 * statistics take them, so that a batch pads little), and the hidden state
 * each batch has reached: the output of the merged layers so far (NULL
 * before the first layer of a stack: the embedding), and the merged
 * encoder's output once the encoder is merged. */
typedef struct {
    const tok_set *s;
    int64_t *order;   /* the first examples, by input length */
    int nb;           /* batches */
    float **h, **enc; /* per batch: the state, the encoder output */
} pp_task;

static void pp_task_init(pp_task *t, const tok_set *s, const mrg_pp_opts *o) {
    int64_t n = o->examples < s->n ? o->examples : s->n;
    t->s = s;
    t->order = tok_length_order_range(s, 0, n);
    t->nb = (int)((n + o->batch - 1) / o->batch);
    t->h = callocCheck((size_t)t->nb, sizeof(float *));
    t->enc = callocCheck((size_t)t->nb, sizeof(float *));
}

static void pp_task_free(pp_task *t) {
    for (int k = 0; k < t->nb; k++) free(t->h[k]), free(t->enc[k]);
    free(t->h), free(t->enc), free(t->order);
}

/* Batch k of task t into tb. */
static void pp_batch(const pp_task *t, int k, const mrg_pp_opts *o, tok_batch *tb) {
    int64_t n = o->examples < t->s->n ? o->examples : t->s->n, e0 = (int64_t)k * o->batch;
    tok_batch_examples(tb, t->s, t->order, e0, (int)(n - e0 < o->batch ? n - e0 : o->batch), NULL);
}

/* H's parameters: merged's, with `layer` from mi (mi NULL: merged's). */
static void pp_params(t5_model *H, const t5_model *merged, const t5_model *mi, int layer) {
    memcpy(H->params, merged->params, sizeof(float) * H->n_params);
    for (int j = 0; mi && j < H->n_tensors; j++) {
        const t5_tensor *t = &H->tensors[j];
        if (mrg_pp_layer(&H->c, t->name) == layer)
            memcpy(H->params + t->offset, mi->params + t->offset, sizeof(float) * t->numel);
    }
}

/* The input Grams of `layer`'s linears for model i: task i's states run
 * through model i's own layer; mean over each stream's real tokens. */
static st_gram *layer_grams(t5_model *H, const t5_model *merged, const t5_model *mi, const pp_task *t, int layer,
                            const mrg_pp_opts *o, tok_batch *tb, float *scratch, int *ng) {
    pp_params(H, merged, mi, layer);
    st_gram *g = st_gram_new(H, ng);
    layer_ctx lc = {&H->c, layer};
    st_gram_keep(g, *ng, in_layer, &lc);
    long n_enc = 0, n_dec = 0;
    for (int k = 0; k < t->nb; k++) {
        pp_batch(t, k, o, tb);
        t5_forward_layer(H, &tb->b, layer, t->h[k], t->enc[k], NULL);
        st_gram_accum(H, g, *ng, scratch, &n_enc, &n_dec);
    }
    for (int k = 0; k < *ng; k++) {
        if (!g[k].in_gram) continue;
        long cnt = g[k].stream == T5_ENC ? n_enc : n_dec;
        if (cnt < 1) die("regmean_pp: task set %s has no real tokens for %s", t->s->path, g[k].name);
        for (size_t e = 0; e < (size_t)g[k].in * g[k].in; e++) g[k].in_gram[e] /= (float)cnt;
    }
    return g;
}

/* Move task t's states through the merged `layer` (H holds the merge). */
static void advance(t5_model *H, pp_task *t, int layer, const mrg_pp_opts *o, tok_batch *tb) {
    const t5_config *c = &H->c;
    int D = c->d_model;
    for (int k = 0; k < t->nb; k++) {
        pp_batch(t, k, o, tb);
        const t5_batch *b = &tb->b;
        size_t rows = layer < c->num_layers ? (size_t)b->B * b->Te : (size_t)b->Bd * b->Td;
        float *y = mallocCheck(sizeof(float) * rows * D);
        t5_forward_layer(H, b, layer, t->h[k], t->enc[k], y);
        free(t->h[k]);
        t->h[k] = y;
        if (layer == c->num_layers - 1) t->enc[k] = y, t->h[k] = NULL; /* the decoder starts from its embedding */
    }
}

/* RegMean of one linear from the models' weights and their (scaled) Grams. */
static void solve_linear(t5_model *merged, t5_model *const *models, int N, st_gram *const *G, int k,
                         const mrg_pp_opts *o) {
    const t5_tensor *info;
    const char *name = G[0][k].name;
    float *W = t5_param(merged, name, &info);
    int rows = G[0][k].out, in = G[0][k].in;
    size_t kk = (size_t)in * in, n = (size_t)rows * in;
    float *S = callocCheck(kk, sizeof(float)), *B = callocCheck(n, sizeof(float));
    float *avg = mallocCheck(sizeof(float) * n);
    mean_tensor(models, N, info, avg);
    for (int i = 0; i < N; i++) {
        float *M = G[i][k].in_gram;
        mrg_scale_offdiag(M, in, o->lambda);
        for (size_t e = 0; e < kk; e++) S[e] += M[e];
        be_gemm(0, 0, rows, in, in, 1.0f, t5_param(models[i], name, NULL), in, M, in, 1.0f, B, in);
    }
    double ridge = mrg_regmean_closed(rows, in, S, B, avg, W);
    if (ridge != 0 && o->ridge) o->ridge(name, ridge);
    if (ridge < 0) die("regmean_pp: the summed Gram of '%s' is not positive semi-definite", name);
    free(S);
    free(B);
    free(avg);
}

void mrg_regmean_pp(t5_model *merged, t5_model *const *models, int N, tok_set *const *data,
                    const mrg_pp_opts *o) {
    const t5_config *c = &merged->c;
    int layers = c->num_layers + c->num_decoder_layers + 1;
    t5_model *H = t5_new(c, 0, 0);
    t5_alloc_acts(H, o->batch, o->max_in, o->batch, o->max_tgt, 0);
    float *scratch = mallocCheck(sizeof(float) * st_gram_scratch_floats(H));
    tok_batch tb;
    tok_batch_init(&tb, o->batch, o->max_in, o->batch, o->max_tgt);
    st_gram **G = mallocCheck(sizeof(st_gram *) * N);
    pp_task *T = mallocCheck(sizeof(pp_task) * N);
    for (int i = 0; i < N; i++) pp_task_init(&T[i], data[i], o);
    for (int j = 0; j < merged->n_tensors; j++) { /* the embedding first */
        const t5_tensor *t = &merged->tensors[j];
        if (mrg_pp_layer(c, t->name) == -1) mean_tensor(models, N, t, merged->params + t->offset);
    }
    mc_progress pr;
    progress_init(&pr, "regmean_pp", (int64_t)layers * N, "layer passes");
    for (int l = 0; l < layers; l++) {
        int ng = 0;
        for (int i = 0; i < N; i++) {
            G[i] = layer_grams(H, merged, models[i], &T[i], l, o, &tb, scratch, &ng);
            progress_update(&pr, (int64_t)l * N + i + 1, NULL);
        }
        for (int k = 0; k < ng; k++)
            if (G[0][k].in_gram) solve_linear(merged, models, N, G, k, o);
        for (int j = 0; j < merged->n_tensors; j++) { /* the layer's other tensors: the mean */
            const t5_tensor *t = &merged->tensors[j];
            if (mrg_pp_layer(c, t->name) != l) continue;
            int linear = 0;
            for (int k = 0; k < ng && !linear; k++) linear = G[0][k].in_gram && !strcmp(G[0][k].name, t->name);
            if (!linear) mean_tensor(models, N, t, merged->params + t->offset);
        }
        for (int i = 0; i < N; i++) st_gram_free(G[i], ng);
        if (l + 1 < layers) { /* every task's states through the merged layer */
            pp_params(H, merged, NULL, l);
            for (int i = 0; i < N; i++) advance(H, &T[i], l, o, &tb);
        }
    }
    progress_finish(&pr, NULL);
    for (int i = 0; i < N; i++) pp_task_free(&T[i]);
    free(T);
    free(G);
    free(scratch);
    tok_batch_free(&tb);
    t5_free(H);
}
