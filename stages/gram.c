/* gram - input and output-gradient Gram matrices of every linear layer of a
 * full model, for RegMean and MaTS: a `gram` artifact.
 *
 *   gram --model M.msgpack --data T.msgpack [--examples N] [--shard I/N] [--config EXP.conf]
 *        [--set gram.k=v]... [--device cpu|cuda] [--key HEX] -o G.msgpack
 *   gram --reduce S1.msgpack,...,SN.msgpack [--config EXP.conf] [--key HEX] -o G.msgpack
 *
 * For every linear X.weight (lib/t5.h's t5_linears: a head tied to
 * shared.weight is not one): X.input_gram [in,in] = mean over real (non-pad)
 * tokens of x x^T, and (all but lm_head) X.output_grad_gram [out,out] = mean
 * over real tokens of g g^T, g the gradient of the example's loss (mean
 * cross-entropy over its gold target's tokens, EOS included) with respect to
 * the linear's output. Encoder linears and the cross-attention k and v (which
 * read encoder outputs) average over encoder tokens, the others over decoder
 * (target) tokens. SYRK updates over each batch's real rows (lib/stats.h).
 *
 * --shard I/N computes shard I's share of the examples into a gram_shard
 * artifact; --reduce adds shards 1..N into the gram artifact (lib/shard.h:
 * each tensor weighted by the real tokens of its stream in each shard, so
 * the shard's meta lists the encoder-token tensors).
 *
 * Config: gram.batch_size (16), gram.max_input_len (512), gram.max_target_len (128).
 *
 * --device cpu|cuda (else DEVICE, else gram.device, else cpu): where the
 * model runs. cuda needs a `make GPU=1` build and a GPU (one-line error
 * otherwise); it enters the run's key as gram.device=cuda, so CPU keys are
 * unchanged. On cuda the whole accumulation (row
 * compaction and SYRK) runs on the GPU; the Grams come back once at the end.
 */
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
#include "stage.h"
#include "shard.h"
#include "stats.h"
#include "t5.h"
#include "tokens.h"

/* x *= inv; a non-finite Gram is not written (one line naming it) */
static void scale_finite(float *x, long n, float inv, const char *what, const char *name, const char *data) {
    for (long j = 0; j < n; j++) x[j] *= inv;
    long bad = mc_nonfinite_at(x, n);
    if (bad >= 0)
        die("the %s of %s is not finite (element %ld): the model overflowed on %s; nothing written", what, name,
            bad, data);
}

/* the weight of a shard's tensor: the real tokens of its stream */
static double stream_tokens(const art_file *a, const char *name, void *ctx) {
    (void)ctx;
    const mc_val *enc = val_get(a->meta, "encoder_tensors");
    for (size_t i = 0; enc && enc->type == VAL_ARRAY && i < enc->v.c.n; i++)
        if (enc->v.c.items[i]->type == VAL_STR && !strcmp(enc->v.c.items[i]->v.str.s, name))
            return (double)val_get_int(a->meta, "n_encoder_tokens", 0);
    return (double)val_get_int(a->meta, "n_decoder_tokens", 0);
}

/* The run's key into out: key_arg (the workflow's), else computed as the
 * workflow keys it; shard "I/N" for a shard, shards N for a reduce. */
static void gram_key(mc_cfg *cfg, long n, const char *shard, int shards, const char *model, const char *data, int dev,
                     const char *key_arg, char out[33]) {
    if (key_arg) {
        snprintf(out, 33, "%s", key_arg);
        return;
    }
    mc_key *k = key_new_self("gram", cfg, (const char *[]){"gram", NULL});
    char v[32];
    snprintf(v, sizeof v, "%ld", n);
    key_config(k, "gram.examples", v);
    stage_key_finish(k, cfg, "gram", shard, shards, model, "", data, dev, out);
}

/* gram --reduce: shards 1..N into one gram artifact */
static void reduce_main(const opt_list *paths, mc_cfg *cfg, const char *key_arg, const char *out) {
    static const char *const kinds[] = {"gram", NULL};
    const char *kind;
    art_file **a = shard_open_all(paths, kinds, &kind);
    int n = paths->n;
    long n_ex = 0, n_enc = 0, n_dec = 0;
    for (int i = 0; i < n; i++) {
        n_ex += val_get_int(a[i]->meta, "n_examples", 0);
        n_enc += val_get_int(a[i]->meta, "n_encoder_tokens", 0);
        n_dec += val_get_int(a[i]->meta, "n_decoder_tokens", 0);
    }
    const mc_val *inp = val_get(a[0]->meta, "inputs");
    char run_key[33];
    gram_key(cfg, n_ex, NULL, n, val_get_str(inp, "model", ""), val_get_str(inp, "data", ""),
             dev_resolve(cfg, "gram.device"), key_arg, run_key);
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "gram");
    val_set_int(meta, "n_examples", n_ex);
    val_set_int(meta, "n_encoder_tokens", n_enc);
    val_set_int(meta, "n_decoder_tokens", n_dec);
    val_set_str(meta, "split", val_get_str(a[0]->meta, "split", ""));
    val_set_str(meta, "task", val_get_str(a[0]->meta, "task", ""));
    val_set(meta, "inputs", val_clone(inp));
    val_set_int(meta, "shards", n);
    shard_write(out, kind, run_key, meta, a, n, stream_tokens, NULL);
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    double t_start = mc_now();
    const char *model = NULL, *data = NULL, *out = NULL, *key_arg = NULL, *shard_arg = NULL;
    long examples; /* its default: the row below */
    opt_list reduce = {0};
    mc_cfg *cfg = cfg_new();
    opt_spec rows[] = {
        {.name = "--model", .kind = OPT_STR, .dst = &model, .arg = "M.msgpack", .flags = OPT_INPUT,
         .help = "the full model (required unless --reduce)"},
        {.name = "--data", .kind = OPT_STR, .dst = &data, .arg = "T.msgpack", .flags = OPT_INPUT,
         .help = "the tokens artifact (required unless --reduce)"},
        STAGE_ROWS_STATISTIC("gram", "gram", &examples, &shard_arg, &reduce, cfg, &key_arg, &out),
        {0}};
    const opt_prog prog = {.name = "gram", .opts = rows, .about = STAGE_ABOUT_STATISTIC("gram")};
    opts_parse(&prog, argc - 1, argv + 1);
    if (reduce.n) {
        if (model || data || shard_arg || opts_given(&prog, "--examples"))
            die("--reduce takes the shards alone: drop --model, --data, --examples and --shard (the shards name theirs)");
        reduce_main(&reduce, cfg, key_arg, out);
        cfg_free(cfg);
        return 0;
    }
    if (!model || !data) die("--model and --data are required (or --reduce S1,...,SN to add shards)");
    stage_run r;
    stage_open_statistic(&r, cfg, "gram", model, NULL, data, shard_arg, examples);
    const mc_ops *ops = r.ops;
    t5_model *m = r.m;
    tok_set *s = r.s;
    long bs = r.batch;

    char run_key[33];
    gram_key(cfg, (long)r.n, shard_arg ? r.shard_text : NULL, 0, r.model_key, s->key, r.dev, key_arg, run_key);

    tok_batch tb;
    tok_batch_init(&tb, (int)bs, (int)r.max_in, (int)bs, (int)r.max_tgt);
    t5_to_device(m, ops);
    t5_freeze_params(m); /* the weights stay as loaded: their packed form is kept */
    t5_alloc_acts(m, (int)bs, (int)r.max_in, (int)bs, (int)r.max_tgt, 1);
    int ng = 0;
    st_gram *g = st_gram_new(m, &ng);
    float *scratch = ops->alloc(sizeof(float) * st_gram_scratch_floats(m));
    long n_enc = 0, n_dec = 0;
    mc_progress pr;
    progress_init(&pr, "gram", r.hi - r.lo, "examples");
    for (int64_t p0 = 0; p0 < r.hi - r.lo; p0 += bs) {
        int B = (int)(r.hi - r.lo - p0 < bs ? r.hi - r.lo - p0 : bs);
        stage_fill(&r, &tb, p0, B, NULL);
        t5_forward(m, &tb.b);
        t5_backward(m, &tb.b, T5_LOSS_EXAMPLE_MEAN, 1.0f);
        st_gram_accum(m, g, ng, scratch, &n_enc, &n_dec);
        progress_update(&pr, p0 + B, NULL);
    }
    progress_finish(&pr, NULL);
    st_gram_to_host(g, ng);

    mc_val *meta = val_map();
    val_set_str(meta, "stage", "gram");
    val_set_int(meta, "n_examples", r.hi - r.lo);
    val_set_int(meta, "n_encoder_tokens", n_enc);
    val_set_int(meta, "n_decoder_tokens", n_dec);
    val_set_str(meta, "split", s->split);
    val_set_str(meta, "task", s->task);
    mc_val *inp = val_set_map(meta, "inputs");
    val_set_str(inp, "model", r.model_key);
    val_set_str(inp, "data", s->key);
    char name[128], kind[32] = "gram";
    if (shard_arg) {
        val_set_str(meta, "shard", r.shard_text);
        mc_val *enc = val_set_array(meta, "encoder_tensors");
        for (int i = 0; i < ng; i++) {
            if (g[i].stream != T5_ENC) continue;
            size_t base = strlen(g[i].name) - strlen(".weight");
            snprintf(name, sizeof name, "%.*s.input_gram", (int)base, g[i].name);
            val_push(enc, val_str(name));
            snprintf(name, sizeof name, "%.*s.output_grad_gram", (int)base, g[i].name);
            if (g[i].out_gram) val_push(enc, val_str(name));
        }
        shard_kind("gram", kind, sizeof kind);
    }
    int nt = 0;
    for (int i = 0; i < ng; i++) nt += g[i].out_gram ? 2 : 1;
    art_writer *w = art_writer_open(out, kind, run_key, meta, nt);
    val_free(meta);
    if (!w) die("%s", mc_error());
    for (int i = 0; i < ng; i++) {
        float inv = 1.0f / (float)(g[i].stream == T5_ENC ? n_enc : n_dec);
        size_t base = strlen(g[i].name) - strlen(".weight");
        int64_t si[2] = {g[i].in, g[i].in}, so[2] = {g[i].out, g[i].out};
        scale_finite(g[i].in_gram, (long)g[i].in * g[i].in, inv, "input Gram", g[i].name, data);
        snprintf(name, sizeof name, "%.*s.input_gram", (int)base, g[i].name);
        int rc = art_writer_tensor(w, name, ART_F32, 2, si, g[i].in_gram);
        if (rc == 0 && g[i].out_gram) {
            scale_finite(g[i].out_gram, (long)g[i].out * g[i].out, inv, "output-gradient Gram", g[i].name, data);
            snprintf(name, sizeof name, "%.*s.output_grad_gram", (int)base, g[i].name);
            rc = art_writer_tensor(w, name, ART_F32, 2, so, g[i].out_gram);
        }
        if (rc < 0) {
            art_writer_abort(w);
            die("%s", mc_error());
        }
    }
    if (art_writer_close(w) < 0) die("%s", mc_error());
    fprintf(stderr,
            "%s: wrote %s (%d linears, %lld examples, %ld encoder / %ld decoder tokens, %.1f %% of the encoder rows "
            "padding; %.1f s, peak memory %.0f MiB)\n",
            mc_progname(), out, ng, (long long)(r.hi - r.lo), n_enc, n_dec, stage_padding(&r), mc_now() - t_start,
            mc_peak_rss() / 1048576.0);

    st_gram_free(g, ng);
    ops->release(scratch);
    tok_batch_free(&tb);
    stage_close(&r);
    cfg_free(cfg);
    return 0;
}
