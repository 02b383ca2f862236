/* fisher - diagonal Fisher of a full model or of IA3 vectors, and the
 * blockwise (one dense [d,d] block per IA3 vector) Fisher of IA3 vectors
 * (a `fisher_diag` or `fisher_block` artifact).
 *
 *   fisher --model M.msgpack [--ia3 A.msgpack] --data T.msgpack --type diagonal|blockwise
 *          [--true] [--examples N] [--seed S] [--config EXP.conf] [--set fisher.k=v]...
 *          [--shard I/N] [--device cpu|cuda] [--key HEX] -o F.msgpack
 *   fisher --reduce S1.msgpack,...,SN.msgpack [--config EXP.conf] [--key HEX] -o F.msgpack
 *
 * For each of the first N examples (default 1000) of T: the gradient of the
 * example's loss (the mean cross-entropy over its target's tokens, EOS
 * included) with respect to the parameters (or the IA3 vectors with --ia3);
 * the target is the gold choice (empirical Fisher) or, with --true, a choice
 * sampled from the model's own distribution over the answer choices
 * (softmax of the rank-classification scores) with a uniform drawn from
 * hash(seed, example index). diagonal: the mean over examples of the squared
 * gradient; blockwise: the mean of g g^T per IA3 vector.
 *
 * --shard I/N computes shard I's share of the examples into a
 * fisher_diag_shard or fisher_block_shard artifact; --reduce adds shards
 * 1..N, each weighted by its examples, into the fisher_diag or fisher_block
 * artifact (lib/shard.h). A --true shard samples exactly what the unsharded
 * run samples for its examples (the uniform is drawn from the example's
 * index in --data).
 *
 * Batched: one forward and one backward per batch of examples with the
 * per-example loss (lib/stats.h), no batch-of-one loop.
 *
 * Config: fisher.batch_size (16), fisher.max_input_len (512),
 * fisher.max_target_len (128).
 *
 * --device cpu|cuda (else DEVICE, else fisher.device, else cpu): where the
 * model runs. cuda needs a `make GPU=1` build and a GPU (one-line error
 * otherwise); it enters the run's key as fisher.device=cuda, so CPU keys are
 * unchanged. On cuda the forward and backward and the
 * accumulation of the linear layers' Fisher and of the IA3 Fisher run on
 * the GPU; the per-example gradients of norms, position tables, embedding
 * and IA3 vectors are formed on the host from a copy of the activations.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "backend.h"
#include "common.h"
#include "config.h"
#include "device.h"
#include "key.h"
#include "opts.h"
#include "progress.h"
#include "rank.h"
#include "stage.h"
#include "shard.h"
#include "stats.h"
#include "t5.h"
#include "tokens.h"

static size_t nw_of(const t5_model *m, const char *ia3) { return ia3 ? m->n_ia3 : m->n_params; }

/* The sampled choice of example `idx` for the true Fisher: softmax over the
 * choices' summed log-likelihoods, inverse CDF at u = hash(seed, idx). */
int fisher_sample_choice(const float *scores, int nc, uint64_t seed, int64_t idx) {
    double mx = -INFINITY, z = 0;
    for (int c = 0; c < nc; c++)
        if (scores[c] > mx) mx = scores[c];
    for (int c = 0; c < nc; c++) z += exp(scores[c] - mx);
    uint64_t h = mc_hash64(seed * 1000003ULL + (uint64_t)idx);
    double u = (h >> 11) * 0x1.0p-53 * z, cum = 0;
    for (int c = 0; c < nc; c++) {
        cum += exp(scores[c] - mx);
        if (u < cum) return c;
    }
    return nc - 1;
}

/* the weight of a shard's tensor: its examples */
static double shard_examples(const art_file *a, const char *name, void *ctx) {
    (void)name, (void)ctx;
    return (double)val_get_int(a->meta, "n_examples", 0);
}

/* The run's key into out: key_arg (the workflow's), else computed as the
 * workflow keys it (fisher.seed only when a seed was given: seed < 0 when
 * not); shard "I/N" for a shard, shards N for a reduce. */
static void fisher_key(mc_cfg *cfg, const char *type, int truef, long n, long seed, const char *shard, int shards,
                       const char *model, const char *ia3, const char *data, int dev, const char *key_arg,
                       char out[33]) {
    if (key_arg) {
        snprintf(out, 33, "%s", key_arg);
        return;
    }
    mc_key *k = key_new_self("fisher", cfg, (const char *[]){"fisher", NULL});
    char v[64];
    key_config(k, "fisher.type", type);
    key_config(k, "fisher.true", truef ? "1" : "0");
    snprintf(v, sizeof v, "%ld", n);
    key_config(k, "fisher.examples", v);
    if (seed >= 0) {
        snprintf(v, sizeof v, "%ld", seed);
        key_config(k, "fisher.seed", v);
    }
    stage_key_finish(k, cfg, "fisher", shard, shards, model, ia3, data, dev, out);
}

/* fisher --reduce: shards 1..N into one fisher_diag or fisher_block artifact */
static void reduce_main(const opt_list *paths, mc_cfg *cfg, const char *key_arg, const char *out) {
    static const char *const kinds[] = {"fisher_diag", "fisher_block", NULL};
    const char *kind;
    art_file **a = shard_open_all(paths, kinds, &kind);
    int n = paths->n;
    long n_ex = 0;
    for (int i = 0; i < n; i++) n_ex += val_get_int(a[i]->meta, "n_examples", 0);
    const mc_val *m0 = a[0]->meta, *inp = val_get(m0, "inputs");
    char run_key[33];
    long seed = val_get_int(m0, "seed", 0); /* as the shards keyed it: 0, the default, was not given */
    fisher_key(cfg, val_get_str(m0, "type", ""), !strcmp(val_get_str(m0, "fisher", ""), "true"), n_ex,
               seed ? seed : -1, NULL, n, val_get_str(inp, "model", ""), val_get_str(inp, "ia3", ""),
               val_get_str(inp, "data", ""), dev_resolve(cfg, "fisher.device"), key_arg, run_key);
    mc_val *meta = val_map(); /* shard 1's, less its "shard", with the examples of all */
    for (size_t i = 0; i < m0->v.c.n; i++)
        if (strcmp(m0->v.c.keys[i], "shard")) val_set(meta, m0->v.c.keys[i], val_clone(m0->v.c.items[i]));
    val_set_int(meta, "n_examples", n_ex);
    val_set_int(meta, "shards", n);
    shard_write(out, kind, run_key, meta, a, n, shard_examples, NULL);
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    double t_start = mc_now();
    const char *model = NULL, *ia3 = NULL, *data = NULL, *out = NULL, *key_arg = NULL, *shard_arg = NULL;
    opt_list reduce = {0};
    static const char *const types[] = {"diagonal", "blockwise", NULL};
    int truef = 0, block = 0;
    long examples, seed; /* their defaults: the rows below */
    mc_cfg *cfg = cfg_new();
    opt_spec rows[] = {
        {.name = "--model", .kind = OPT_STR, .dst = &model, .arg = "M.msgpack", .flags = OPT_INPUT,
         .help = "the model (the base model with --ia3); required unless --reduce"},
        {.name = "--ia3", .kind = OPT_STR, .dst = &ia3, .arg = "A.msgpack", .flags = OPT_INPUT,
         .help = "the Fisher of these IA3 vectors instead of the model's parameters"},
        {.name = "--data", .kind = OPT_STR, .dst = &data, .arg = "T.msgpack", .flags = OPT_INPUT,
         .help = "the tokens artifact; required unless --reduce"},
        {.name = "--type", .kind = OPT_CHOICE, .dst = &block, .arg = "diagonal|blockwise", .choices = types,
         .key = "fisher.type", .help = "blockwise: one [d,d] block per IA3 vector (needs --ia3); required unless --reduce"},
        {.name = "--true", .kind = OPT_FLAG, .dst = &truef, .key = "fisher.true",
         .help = "the true Fisher: targets sampled from the model (default: the gold choice)"},
        {.name = "--seed", .kind = OPT_INT, .dst = &seed, .arg = "S", .lo = 0, .hi = 1099511627776.0, .def = "0",
         .key = "fisher.seed", .help = "the seed of --true's samples"},
        STAGE_ROWS_STATISTIC("fisher", "fisher_diag or fisher_block", &examples, &shard_arg, &reduce, cfg, &key_arg,
                             &out),
        {0}};
    const opt_prog prog = {.name = "fisher", .opts = rows, .about = STAGE_ABOUT_STATISTIC("fisher")};
    opts_parse(&prog, argc - 1, argv + 1);
    if (reduce.n) {
        if (model || ia3 || data || shard_arg || truef || opts_given(&prog, "--type") ||
            opts_given(&prog, "--examples") || opts_given(&prog, "--seed"))
            die("--reduce takes the shards alone: drop --model, --ia3, --data, --type, --true, --examples, --seed and "
                "--shard (the shards record theirs)");
        reduce_main(&reduce, cfg, key_arg, out);
        cfg_free(cfg);
        return 0;
    }
    if (!model || !data || !opts_given(&prog, "--type"))
        die("--model, --data and --type are required (or --reduce S1,...,SN to add shards)");
    const char *type = types[block];
    if (block && !ia3)
        die("--type blockwise is the Fisher of IA3 vectors: give --ia3 A.msgpack (full models: --type diagonal)");
    stage_run r;
    stage_open_statistic(&r, cfg, "fisher", model, ia3, data, shard_arg, examples);
    t5_model *m = r.m;
    m->all_act_grads = !ia3;
    const tok_set *s = r.s;
    const mc_ops *ops = r.ops;
    long bs = r.batch, max_in = r.max_in, max_tgt = r.max_tgt;
    int64_t lo = r.lo, hi = r.hi;
    int max_choices = 1;
    for (int64_t e = lo; e < hi; e++) {
        int nc = (int)(s->ex_choices[e + 1] - s->ex_choices[e]);
        if (nc > max_choices) max_choices = nc;
    }

    char run_key[33];
    fisher_key(cfg, type, truef, (long)r.n, opts_given(&prog, "--seed") ? seed : -1, shard_arg ? r.shard_text : NULL,
               0, r.model_key, r.ia3_key, s->key, r.dev, key_arg, run_key);

    int rbd = (int)bs * max_choices;
    tok_batch tb, rtb;
    tok_batch_init(&tb, (int)bs, (int)max_in, (int)bs, (int)max_tgt);
    tok_batch_init(&rtb, (int)bs, (int)max_in, rbd, (int)max_tgt);
    /* On cuda the forward and backward run on the device, and so do the
     * accumulations: the linear layers' per-example gradients and squares
     * (st_fisher_linears_dev), the IA3 squares and blocks (SYRK). What is
     * computed on the host (the per-example gradients of the norm weights,
     * position tables and embedding, and of the IA3 vectors) reads a host
     * copy of the activations (t5_host_view). */
    t5_to_device(m, ops);
    t5_freeze_params(m); /* the weights stay as loaded: their packed form is kept */
    t5_alloc_acts(m, (int)bs, (int)max_in, truef ? rbd : (int)bs, (int)max_tgt, 1);
    t5_model *hv = NULL;
    int host = t5_on_host(m);
    float *dacc = NULL, *dscr = NULL, *dE = NULL, **dblocks = NULL;
    if (!host) {
        dacc = ops->alloc(sizeof(float) * nw_of(m, ia3));
        if (!ia3) dscr = ops->alloc(sizeof(float) * st_fisher_linear_scratch_floats(m));
        else dE = ops->alloc(sizeof(float) * bs * m->n_ia3);
        if (block) {
            dblocks = mallocCheck(sizeof(float *) * m->n_ia3_tensors);
            for (int i = 0; i < m->n_ia3_tensors; i++)
                dblocks[i] = ops->alloc(sizeof(float) * m->ia3_tensors[i].numel * m->ia3_tensors[i].numel);
        }
    }
    size_t nw = ia3 ? m->n_ia3 : m->n_params;
    float *acc = callocCheck(nw, sizeof(float));
    float *scratch = ia3 ? mallocCheck(sizeof(float) * bs * m->n_ia3) : callocCheck(m->n_params, sizeof(float));
    float **blocks = NULL;
    if (block) {
        blocks = mallocCheck(sizeof(float *) * m->n_ia3_tensors);
        for (int i = 0; i < m->n_ia3_tensors; i++)
            blocks[i] = callocCheck(m->ia3_tensors[i].numel * m->ia3_tensors[i].numel, sizeof(float));
    }
    float *scores = mallocCheck(sizeof(float) * (s->n_choices + 1));
    int *pred = mallocCheck(sizeof(int) * (truef ? hi : 1)); /* by example id */
    int *pick = mallocCheck(sizeof(int) * bs);
    mc_progress pr;
    progress_init(&pr, "fisher", hi - lo, "examples");
    for (int64_t p0 = 0; p0 < hi - lo; p0 += bs) {
        int B = (int)(hi - lo - p0 < bs ? hi - lo - p0 : bs);
        if (truef) tok_rank_order(m, s, r.order, p0, B, &rtb, scores, pred);
        for (int i = 0; i < B; i++) {
            int64_t e = r.order[p0 + i], c0 = s->ex_choices[e];
            int nc = (int)(s->ex_choices[e + 1] - c0);
            pick[i] = truef ? fisher_sample_choice(scores + c0, nc, (uint64_t)seed, e) : s->label[e];
        }
        stage_fill(&r, &tb, p0, B, pick);
        t5_forward(m, &tb.b);
        t5_backward(m, &tb.b, T5_LOSS_EXAMPLE_MEAN, 1.0f);
        t5_host_view(m, &hv);
        if (host && !ia3) {
            st_fisher_diag_full(m, acc, scratch);
        } else if (host) {
            st_ia3_example_grads(m, scratch);
            if (block) st_ia3_block_accum(m, scratch, B, blocks);
            else st_diag_accum(scratch, B, m->n_ia3, acc);
        } else if (!ia3) {
            st_fisher_linears_dev(m, dacc, dscr);
            st_fisher_diag_nonlinear(hv, acc, scratch);
        } else {
            st_ia3_example_grads(hv, scratch);
            ops->upload(dE, scratch, sizeof(float) * B * m->n_ia3);
            if (block) st_ia3_block_accum(m, dE, B, dblocks);
            else st_diag_accum_dev(m, dE, B, m->n_ia3, dacc);
        }
        progress_update(&pr, p0 + B, NULL);
    }
    progress_finish(&pr, NULL);
    if (!host) { /* device sums into the host accumulators */
        if (block) {
            for (int i = 0; i < m->n_ia3_tensors; i++) {
                size_t dd = m->ia3_tensors[i].numel * m->ia3_tensors[i].numel;
                ops->download(blocks[i], dblocks[i], sizeof(float) * dd);
                ops->release(dblocks[i]);
            }
            free(dblocks);
        } else {
            size_t nacc = nw_of(m, ia3);
            float *t = mallocCheck(sizeof(float) * nacc);
            ops->download(t, dacc, sizeof(float) * nacc);
            for (size_t i = 0; i < nacc; i++) acc[i] += t[i];
            free(t);
        }
        ops->release(dacc), ops->release(dscr), ops->release(dE);
    }

    mc_val *meta = val_map();
    val_set_str(meta, "stage", "fisher");
    val_set_str(meta, "fisher", truef ? "true" : "empirical");
    val_set_str(meta, "type", block ? "blockwise" : "diagonal");
    val_set_int(meta, "n_examples", hi - lo);
    val_set_str(meta, "split", s->split);
    val_set_str(meta, "task", s->task);
    val_set_int(meta, "seed", seed);
    char kind[32];
    snprintf(kind, sizeof kind, "%s", block ? "fisher_block" : "fisher_diag");
    if (shard_arg) {
        val_set_str(meta, "shard", r.shard_text);
        shard_kind(block ? "fisher_block" : "fisher_diag", kind, sizeof kind);
    }
    mc_val *inp = val_set_map(meta, "inputs");
    val_set_str(inp, "model", r.model_key);
    if (ia3) val_set_str(inp, "ia3", r.ia3_key);
    val_set_str(inp, "data", s->key);
    const t5_tensor *tab = ia3 ? m->ia3_tensors : m->tensors;
    int nt = ia3 ? m->n_ia3_tensors : m->n_tensors;
    art_writer *w = art_writer_open(out, kind, run_key, meta, nt);
    val_free(meta);
    if (!w) die("%s", mc_error());
    float inv = 1.0f / (float)(hi - lo);
    for (int i = 0; i < nt; i++) {
        const t5_tensor *t = &tab[i];
        int rc;
        float *x = block ? blocks[i] : acc + t->offset;
        long nx = (long)(block ? t->numel * t->numel : t->numel), bad;
        for (long j = 0; j < nx; j++) x[j] *= inv;
        if ((bad = mc_nonfinite_at(x, nx)) >= 0)
            die("the Fisher of %s is not finite (element %ld): the gradients overflowed on %s; nothing written",
                t->name, bad, data);
        if (block) {
            int64_t sh[2] = {(int64_t)t->numel, (int64_t)t->numel};
            rc = art_writer_tensor(w, t->name, ART_F32, 2, sh, blocks[i]);
        } else {
            rc = art_writer_tensor(w, t->name, ART_F32, t->ndim, t->shape, acc + t->offset);
        }
        if (rc < 0) {
            art_writer_abort(w);
            die("%s", mc_error());
        }
    }
    if (art_writer_close(w) < 0) die("%s", mc_error());
    fprintf(stderr,
            "%s: wrote %s (%s %s Fisher of %s over %lld examples of %s, %.1f %% of the encoder rows padding; %.1f s, "
            "peak memory %.0f MiB)\n",
            mc_progname(), out, truef ? "true" : "empirical", block ? "blockwise" : "diagonal",
            ia3 ? "IA3 vectors" : "all parameters", (long long)(hi - lo), data, stage_padding(&r), mc_now() - t_start,
            mc_peak_rss() / 1048576.0);

    if (blocks) {
        for (int i = 0; i < m->n_ia3_tensors; i++) free(blocks[i]);
        free(blocks);
    }
    free(acc), free(scratch), free(scores), free(pred), free(pick);
    tok_batch_free(&tb);
    tok_batch_free(&rtb);
    t5_host_view_free(m, hv);
    stage_close(&r);
    cfg_free(cfg);
    return 0;
}
