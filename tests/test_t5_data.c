/* test_t5_data.c - synthetic `tokens` artifacts for the train/eval tests.
 *
 *   test_t5_data            check tok_load on freshly written artifacts
 *   test_t5_data --write DIR  write DIR/{train,valid,test,corpus,other,one,...}.msgpack
 *                           for tests/test_t5_stages.sh and test_optfisher.sh
 *   test_t5_data --write-bench DIR  DIR/bench.msgpack (1000 t5-mini-sized
 *                           examples) for make bench-stats
 *
 * The task ("has7"): input = 4..16 random ids in [3,100) + EOS; the answer is
 * "yes" (ids 11 1) when id 7 occurs in the input, else "no" (ids 10 1); half
 * of the examples get a 7. A second task ("first") asks whether the first id
 * is below 50 (choices 12 1 / 13 1 / 14 1, a 3-way task whose third choice is
 * never right). The corpus repeats short patterns so span corruption can learn
 * something.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "harness.h"
#include "t5.h"
#include "tokens.h"

/* Write a tokens artifact of n examples from the arrays (in: n_in ids,
 * ch: n_ch ids, coff: n_coff offsets; ioff and ec n + 1, lab n), which it
 * frees. 0, or -1 with mc_error(). */
static int write_tokens(const char *path, const char *task, const char *split, int n, int64_t *in, int64_t n_in,
                        int64_t *ioff, int64_t *ch, int64_t n_ch, int64_t *coff, int64_t n_coff, int64_t *ec,
                        int32_t *lab) {
    mc_val *meta = val_map();
    val_set_str(meta, "task", task);
    val_set_str(meta, "split", split);
    art_writer *w = art_writer_open(path, "tokens", "", meta, 6);
    val_free(meta);
    int64_t s_in[1] = {n_in}, s_ex[1] = {n + 1}, s_ch[1] = {n_ch}, s_coff[1] = {n_coff}, s_lab[1] = {n};
    int rc = !w ? -1
                : art_writer_tensor(w, "input_ids", ART_I64, 1, s_in, in) |
                      art_writer_tensor(w, "input_offsets", ART_I64, 1, s_ex, ioff) |
                      art_writer_tensor(w, "choice_ids", ART_I64, 1, s_ch, ch) |
                      art_writer_tensor(w, "choice_offsets", ART_I64, 1, s_coff, coff) |
                      art_writer_tensor(w, "example_choices", ART_I64, 1, s_ex, ec) |
                      art_writer_tensor(w, "label", ART_I32, 1, s_lab, lab);
    free(in), free(ioff), free(ch), free(coff), free(ec), free(lab);
    if (rc < 0) {
        if (w) art_writer_abort(w);
        return -1;
    }
    return art_writer_close(w);
}

static int write_task(const char *path, const char *task, const char *split, int n, uint64_t seed,
                      int kind) {
    mc_rng r;
    mc_rng_seed(&r, seed);
    int64_t *in = mallocCheck(sizeof(int64_t) * n * 20), *ioff = mallocCheck(sizeof(int64_t) * (n + 1));
    int nc = kind == 0 ? 2 : 3;
    if (kind == 2) nc = 3;
    int64_t *ch = mallocCheck(sizeof(int64_t) * n * nc * 4), *coff = mallocCheck(sizeof(int64_t) * (n * nc + 1));
    int64_t cp = 0; /* choice tokens written */
    int64_t *ec = mallocCheck(sizeof(int64_t) * (n + 1));
    int32_t *lab = mallocCheck(sizeof(int32_t) * n);
    int64_t p = 0, q = 0;
    ioff[0] = 0, coff[0] = 0, ec[0] = 0;
    for (int i = 0; i < n; i++) {
        int len = 4 + (int)mc_rng_below(&r, 13), has = 0;
        for (int t = 0; t < len; t++) {
            int v = 3 + (int)mc_rng_below(&r, 97);
            if (v == 7) v = 8;
            in[p + t] = v;
        }
        int label;
        if (kind == 0) {
            if (mc_rng_below(&r, 2)) {
                in[p + mc_rng_below(&r, len)] = 7;
                has = 1;
            }
            label = has;
        } else {
            for (int t = 0; t < len; t++)
                if (in[p + t] == 9 || in[p + t] == 5) in[p + t] = 4;
            label = (int)mc_rng_below(&r, 3);
            if (label < 2) in[p + mc_rng_below(&r, len)] = label == 0 ? 9 : 5;
        }
        if (kind == 2) in[p] = 500; /* outside t5-micro's vocabulary */
        p += len;
        in[p++] = T5_EOS;
        ioff[i + 1] = p;
        for (int c = 0; c < nc; c++) {
            /* kind 3: choice c is c + 1 copies of its id, so targets differ in length */
            for (int k = 0; k < (kind == 3 ? c + 1 : 1); k++) ch[cp++] = (kind == 0 ? 10 : 12) + c;
            ch[cp++] = T5_EOS;
            q++;
            coff[q] = cp;
        }
        ec[i + 1] = (int64_t)(i + 1) * nc;
        lab[i] = label;
    }
    return write_tokens(path, task, split, n, in, p, ioff, ch, cp, coff, q + 1, ec, lab);
}

static int write_corpus(const char *path, int n, uint64_t seed) {
    mc_rng r;
    mc_rng_seed(&r, seed);
    int64_t *ids = mallocCheck(sizeof(int64_t) * n * 64), *off = mallocCheck(sizeof(int64_t) * (n + 1));
    int64_t p = 0;
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        int len = 20 + (int)mc_rng_below(&r, 40), base = 3 + (int)mc_rng_below(&r, 60);
        for (int t = 0; t < len; t++) ids[p++] = base + (t % 5) * 7 % 40;
        ids[p++] = T5_EOS;
        off[i + 1] = p;
    }
    mc_val *meta = val_map();
    val_set_str(meta, "task", "corpus");
    val_set_str(meta, "split", "train");
    art_writer *w = art_writer_open(path, "tokens", "", meta, 2);
    val_free(meta);
    if (!w) return -1;
    int64_t s1[1] = {p}, s2[1] = {n + 1};
    int rc = art_writer_tensor(w, "input_ids", ART_I64, 1, s1, ids) | art_writer_tensor(w, "input_offsets", ART_I64, 1, s2, off);
    free(ids), free(off);
    if (rc < 0) {
        art_writer_abort(w);
        return -1;
    }
    return art_writer_close(w);
}

/* A t5-micro-like model with lm_head element 5 set to `bad`: NaN (loaders
 * must reject it) or a huge finite value (the logits overflow, so training
 * from it must stop on a non-finite loss). */
static int write_bad_model(const char *path, float bad) {
    t5_config c = {.vocab_size = 128, .d_model = 32, .d_kv = 8, .d_ff = 64, .num_heads = 4,
                   .num_layers = 2, .num_decoder_layers = 2, .num_buckets = 32, .max_distance = 128,
                   .eps = 1e-6f};
    t5_model *m = t5_new(&c, 0, 0);
    t5_init_random(m, 3);
    if (isnan(bad)) m->p.lm_head[5] = bad;
    else
        for (int i = 0; i < c.d_model; i++) m->p.lm_head[i] = bad; /* a whole row: its logit overflows */
    int rc = t5_save_model(m, path, "", NULL);
    t5_free(m);
    return rc;
}

static int write_all(const char *dir) {
    char p[1024];
#define W(name, call)                                                           \
    snprintf(p, sizeof p, "%s/%s.msgpack", dir, name);                          \
    if ((call) < 0) return -1;
    W("train", write_task(p, "has7", "train", 400, 1, 0));
    W("valid", write_task(p, "has7", "validation", 64, 2, 0));
    W("test", write_task(p, "has7", "test", 100, 3, 0));
    W("other", write_task(p, "has9or5", "train", 300, 4, 1));
    W("one", write_task(p, "has7", "train", 1, 9, 0)); /* one example: a batch of one is the whole set */
    W("other_test", write_task(p, "has9or5", "test", 60, 5, 1));
    W("ragged", write_task(p, "ragged", "train", 300, 8, 3)); /* has9or5 with targets of 2, 3 and 4 tokens */
    W("bigvocab", write_task(p, "big", "test", 10, 7, 2));
    W("nan_model", write_bad_model(p, NAN));
    W("huge_model", write_bad_model(p, 3e37f));
    W("corpus", write_corpus(p, 300, 6));
#undef W
    return 0;
}

static char dir[256];

static void test_load_task(void) {
    char p[512];
    snprintf(p, sizeof p, "%s/train.msgpack", dir);
    tok_set *s = tok_load(p, 1);
    CHECK(s != NULL, "%s", mc_error());
    if (!s) return;
    CHECK(s->n == 400 && s->n_choices == 800, "n %lld choices %lld", (long long)s->n, (long long)s->n_choices);
    CHECK(strcmp(s->task, "has7") == 0 && strcmp(s->split, "train") == 0, "meta %s %s", s->task, s->split);
    int pos = 0;
    for (int64_t i = 0; i < s->n; i++) {
        const int *x = tok_input(s, i);
        int n = tok_input_len(s, i), has = 0;
        CHECK(x[n - 1] == T5_EOS, "EOS");
        for (int t = 0; t < n; t++) has |= x[t] == 7;
        CHECK(has == s->label[i], "label of %lld", (long long)i);
        pos += has;
    }
    CHECK(pos > 150 && pos < 250, "balance %d", pos);
    tok_free(s);
}

static void test_corpus_needs_choices(void) {
    char p[512];
    snprintf(p, sizeof p, "%s/corpus.msgpack", dir);
    tok_set *s = tok_load(p, 0);
    CHECK(s != NULL && s->n == 300 && s->n_choices == 0, "corpus as corpus");
    tok_free(s);
    s = tok_load(p, 1);
    CHECK(s == NULL && strstr(mc_error(), "corpus"), "corpus as task: %s", mc_error());
}

static void test_bad_kind(void) {
    char p[512];
    snprintf(p, sizeof p, "%s/bad.msgpack", dir);
    art_writer *w = art_writer_open(p, "model", "", NULL, 0);
    art_writer_close(w);
    tok_set *s = tok_load(p, 1);
    CHECK(s == NULL && strstr(mc_error(), "bad.msgpack"), "error names the file: %s", mc_error());
}

/* bench.msgpack for make bench-stats: n examples, inputs of 64..128 ids
 * below `vocab`, two choices of 2..4 tokens. */
static int write_bench(const char *path, int n, int vocab) {
    mc_rng r;
    mc_rng_seed(&r, 11);
    int64_t *in = mallocCheck(sizeof(int64_t) * n * 129), *ioff = mallocCheck(sizeof(int64_t) * (n + 1));
    int64_t *ch = mallocCheck(sizeof(int64_t) * n * 2 * 4), *coff = mallocCheck(sizeof(int64_t) * (2 * n + 1));
    int64_t *ec = mallocCheck(sizeof(int64_t) * (n + 1));
    int32_t *lab = mallocCheck(sizeof(int32_t) * n);
    int64_t p = 0, q = 0, k = 0;
    ioff[0] = coff[0] = ec[0] = 0;
    for (int i = 0; i < n; i++) {
        int len = 63 + (int)mc_rng_below(&r, 65);
        for (int t = 0; t < len; t++) in[p++] = 3 + (int64_t)mc_rng_below(&r, vocab - 103);
        in[p++] = T5_EOS;
        ioff[i + 1] = p;
        for (int c = 0; c < 2; c++) {
            int lc = 1 + (int)mc_rng_below(&r, 3);
            for (int t = 0; t < lc; t++) ch[q++] = 3 + (int64_t)mc_rng_below(&r, vocab - 103);
            ch[q++] = T5_EOS;
            coff[++k] = q;
        }
        ec[i + 1] = 2 * (i + 1);
        lab[i] = (int)mc_rng_below(&r, 2);
    }
    return write_tokens(path, "bench", "train", n, in, p, ioff, ch, q, coff, 2 * n + 1, ec, lab);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-bench")) {
        char p[1024];
        mkdir(argv[2], 0777);
        snprintf(p, sizeof p, "%s/bench.msgpack", argv[2]);
        if (write_bench(p, 1000, 8000) < 0) die("%s", mc_error());
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--write")) {
        mkdir(argv[2], 0777);
        if (write_all(argv[2]) < 0) die("%s", mc_error());
        return 0;
    }
    t_tmpdir(dir, sizeof dir, "test_t5_data");
    if (write_all(dir) < 0) die("%s", mc_error());
    RUN(test_load_task);
    RUN(test_corpus_needs_choices);
    RUN(test_bad_kind);
    return t_done_rm(dir);
}
