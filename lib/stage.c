/* stage.c - see stage.h */
#include "stage.h"

#include <stdio.h>
#include <stdlib.h>

#include "backend.h"
#include "common.h"
#include "rank.h"

const mc_ops *stage_device(mc_cfg *cfg, const char *ns, int *dev) {
    char key[64];
    snprintf(key, sizeof key, "%s.device", ns);
    *dev = dev_resolve(cfg, key);
    const mc_ops *ops = dev_ops(*dev);
    if (cfg_check_unknown(cfg, (const char *[]){ns, NULL}) < 0) die("%s", mc_error());
    return ops;
}

t5_model *stage_load_model(const char *model, const char *ia3, char model_key[33], char ia3_key[33]) {
    model_key[0] = ia3_key[0] = '\0';
    t5_model *m = t5_load_model(model, 0, ia3 != NULL, model_key);
    if (!m) die("%s", mc_error());
    if (ia3 && t5_load_ia3_key(m, ia3, model_key, ia3_key) < 0) die("%s", mc_error());
    return m;
}

tok_set *stage_load_tokens(const char *path, const t5_model *m) {
    tok_set *s = tok_load(path, 1);
    if (!s) die("%s", mc_error());
    if (s->n < 1) die("%s: no examples (empty split?)", path);
    if (s->max_id >= m->c.vocab_size)
        die("%s: token id %d is outside the model's vocabulary of %d (another tokenizer?)", path, s->max_id,
            m->c.vocab_size);
    return s;
}

int64_t stage_shard_range(const mc_shard *sh, const char *shard_arg, long examples, const tok_set *s, int64_t *lo,
                          int64_t *hi, char shard_text[48]) {
    int64_t n = examples < s->n ? examples : s->n;
    shard_range(sh, n, lo, hi);
    if (*lo >= *hi)
        die("--shard %s of %lld examples is empty: use at most %lld shards", shard_arg, (long long)n, (long long)n);
    snprintf(shard_text, 48, "%ld/%ld", sh->i, sh->n);
    return n;
}

void stage_key_finish(mc_key *k, mc_cfg *cfg, const char *ns, const char *shard, int shards, const char *model,
                      const char *ia3, const char *data, int dev, char out[33]) {
    char name[64], v[32];
    snprintf(name, sizeof name, "%s.shard", ns);
    if (shard) key_config(k, name, shard);
    snprintf(name, sizeof name, "%s.shards", ns);
    snprintf(v, sizeof v, "%d", shards);
    if (shards) key_config(k, name, v);
    if (*model) key_input(k, "model", model);
    if (*ia3) key_input(k, "ia3", ia3);
    if (*data) key_input(k, "data", data);
    snprintf(name, sizeof name, "%s.device", ns);
    dev_key(k, cfg, name, dev);
    key_digest(k, out);
    key_free(k);
}

void stage_open_statistic(stage_run *r, mc_cfg *cfg, const char *ns, const char *model, const char *ia3,
                          const char *data, const char *shard_arg, long examples) {
    mc_shard sh = {1, 1};
    if (shard_arg && shard_parse(shard_arg, &sh) < 0) die("%s", mc_error());
    be_init_default(2);
    char k[3][64];
    snprintf(k[0], sizeof k[0], "%s.batch_size", ns);
    snprintf(k[1], sizeof k[1], "%s.max_input_len", ns);
    snprintf(k[2], sizeof k[2], "%s.max_target_len", ns);
    r->batch = cfg_int(cfg, k[0], 16, 1, 1 << 16);
    r->max_in = cfg_int(cfg, k[1], 512, 4, 1 << 16);
    r->max_tgt = cfg_int(cfg, k[2], 128, 2, 1 << 16);
    r->ops = stage_device(cfg, ns, &r->dev);
    r->m = stage_load_model(model, ia3, r->model_key, r->ia3_key);
    r->s = stage_load_tokens(data, r->m);
    r->n = stage_shard_range(&sh, shard_arg, examples, r->s, &r->lo, &r->hi, r->shard_text);
    r->order = tok_length_order_range(r->s, r->lo, r->hi);
    r->enc_rows = r->enc_tokens = 0;
}

void stage_fill(stage_run *r, tok_batch *tb, int64_t p0, int B, const int *pick) {
    tok_batch_examples(tb, r->s, r->order, p0, B, pick);
    r->enc_rows += (long long)tb->b.B * tb->b.Te;
    r->enc_tokens += tb->real_in;
}

double stage_padding(const stage_run *r) {
    return r->enc_rows ? 100.0 * (double)(r->enc_rows - r->enc_tokens) / (double)r->enc_rows : 0.0;
}

void stage_close(stage_run *r) {
    free(r->order);
    tok_free(r->s);
    t5_free(r->m);
}
