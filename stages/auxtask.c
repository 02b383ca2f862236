/* auxtask - supervised tasks made from the pretraining corpus, for the
 * base model's second phase (T0-style multitask training on tasks that are
 * disjoint from the eight benchmark tasks).
 *
 *   auxtask --corpus C.msgpack --task source|order|continuation
 *           [--config EXP.conf] [--set auxtask.k=v]... [--key HEX] -o E.msgpack
 *
 * Reads the `corpus` artifact of prepare (whose lines never contain a
 * validation or test text of any task) and writes an `examples` artifact of
 * one task's train split, in the format prepare writes (tokenize takes it
 * as it is):
 *
 *   source        which kind of text a line is: a review, an email, the
 *                 Bible, a quotation, a dictionary or a novel (the corpus
 *                 sources, classes balanced);
 *   order         whether a line is in its original word order or a window
 *                 of four words was shuffled (yes / no, balanced);
 *   continuation  which of four candidates continues the first half of a
 *                 line (the true second half, cut to auxtask.choice_words
 *                 words, and three of other lines of the same kind).
 *
 * Config (auxtask.*): examples (per task, 20000), seed (1), max_words
 * (words of a line used as input, 60), choice_words (8). Each example uses
 * one of the task's templates in turn. The examples are a pure function of
 * the corpus, the task and the config.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "common.h"
#include "config.h"
#include "device.h"
#include "key.h"
#include "opts.h"
#include "t5.h"
#include "val.h"

/* ------------------------------------------------------------ growing text */

typedef struct {
    char *p;
    int64_t len, cap;
    int64_t *off;
    int64_t n, ocap;
} rag;

static void buf_put(rag *r, const char *s, size_t n) {
    if (r->len + (int64_t)n + 1 > r->cap) {
        while (r->len + (int64_t)n + 1 > r->cap) r->cap = r->cap ? r->cap * 2 : 1 << 16;
        r->p = reallocCheck(r->p, (size_t)r->cap);
    }
    memcpy(r->p + r->len, s, n);
    r->len += (int64_t)n;
}
static void rag_end(rag *r) { /* close the current row */
    if (r->n + 2 > r->ocap) {
        r->ocap = r->ocap ? r->ocap * 2 : 1024;
        r->off = reallocCheck(r->off, sizeof(int64_t) * (size_t)r->ocap);
    }
    if (r->n == 0) r->off[0] = 0;
    r->off[++r->n] = r->len;
}
static void rag_row(rag *r, const char *s, size_t n) { buf_put(r, s, n), rag_end(r); }
static int rag_write(art_writer *w, const char *tname, const char *oname, const rag *r) {
    return art_writer_ragged(w, tname, ART_U8, r->p, r->len, oname, r->off, r->n);
}

/* ---------------------------------------------------------------- words */

/* The words of line [s, s+n): start offsets and lengths, at most max. */
static int split_words(const char *s, int64_t n, int64_t *ws, int *wl, int max) {
    int k = 0;
    for (int64_t i = 0; i < n && k < max;) {
        while (i < n && s[i] == ' ') i++;
        if (i >= n) break;
        int64_t j = i;
        while (j < n && s[j] != ' ') j++;
        ws[k] = i, wl[k] = (int)(j - i), k++;
        i = j;
    }
    return k;
}
static void put_words(rag *r, const char *s, const int64_t *ws, const int *wl, const int *idx, int a, int b) {
    for (int k = a; k < b; k++) {
        if (k > a) buf_put(r, " ", 1);
        int w = idx ? idx[k] : k;
        buf_put(r, s + ws[w], (size_t)wl[w]);
    }
}

/* --------------------------------------------------------------- sources */

/* The corpus sources (prepare's names) and the kind each one is. */
static const char *const KINDS[] = {"a review", "an email", "the Bible", "a quotation", "a dictionary", "a novel"};
enum { N_KINDS = 6 };
static const struct { const char *source; int kind; } SOURCE_KIND[] = {
    {"reviews", 0}, {"emails", 1}, {"kjv", 2}, {"web", 2}, {"fortunes", 3},
    {"gcide", 4}, {"wordnet", 4}, {"austen", 5},
};

typedef struct {
    const char *text;
    const int64_t *off;
    int64_t n;
    int *kind;           /* per line */
    int64_t *by_kind[N_KINDS];
    int64_t n_kind[N_KINDS];
} corpus;

static void corpus_load(corpus *c, art_file *a, const char *path) {
    const art_tensor *t = art_find(a, "text"), *o = art_find(a, "offsets");
    if (!t || t->dtype != ART_U8 || !o || o->dtype != ART_I64 || o->numel < 1)
        die("%s: a corpus needs text (u8) and offsets (i64): rebuild it with make data", path);
    char *text = mallocCheck((size_t)t->nbytes + 1);
    int64_t *off = mallocCheck((size_t)o->nbytes);
    art_tensor_copy(t, text);
    art_tensor_copy(o, off);
    c->text = text, c->off = off, c->n = o->numel - 1;
    if (off[0] != 0 || off[c->n] != t->numel) die("%s: offsets do not cover the text", path);
    for (int64_t i = 0; i < c->n; i++)
        if (off[i] > off[i + 1]) die("%s: offsets decrease at line %lld", path, (long long)i);
    /* prepare writes the sources' lines one source after another, in the
     * order of meta.sources */
    const mc_val *sm = val_get(a->meta, "sources");
    if (!sm || sm->type != VAL_MAP) die("%s: meta.sources missing: rebuild the corpus with make data", path);
    c->kind = mallocCheck(sizeof(int) * (size_t)(c->n + 1));
    int64_t line = 0;
    for (size_t s = 0; s < sm->v.c.n; s++) {
        int kind = -1;
        for (size_t k = 0; k < sizeof SOURCE_KIND / sizeof *SOURCE_KIND; k++)
            if (!strcmp(SOURCE_KIND[k].source, sm->v.c.keys[s])) kind = SOURCE_KIND[k].kind;
        if (kind < 0) die("%s: source '%s' has no kind in auxtask: add it to SOURCE_KIND", path, sm->v.c.keys[s]);
        const mc_val *cnt = sm->v.c.items[s];
        if (cnt->type != VAL_INT || cnt->v.i < 0 || cnt->v.i > c->n - line)
            die("%s: meta.sources.%s does not fit the %lld lines", path, sm->v.c.keys[s], (long long)c->n);
        for (int64_t i = 0; i < cnt->v.i; i++) c->kind[line++] = kind;
    }
    if (line != c->n) die("%s: meta.sources counts %lld lines, the corpus has %lld", path, (long long)line, (long long)c->n);
    for (int k = 0; k < N_KINDS; k++) c->by_kind[k] = mallocCheck(sizeof(int64_t) * (size_t)(c->n + 1));
    for (int64_t i = 0; i < c->n; i++) c->by_kind[c->kind[i]][c->n_kind[c->kind[i]]++] = i;
    for (int k = 0; k < N_KINDS; k++)
        if (c->n_kind[k] < 4) die("%s: fewer than 4 lines of %s", path, KINDS[k]);
}

/* A random line of kind k with at least min_words words. */
static int64_t pick_line(const corpus *c, mc_rng *r, int k, int min_words, int64_t *ws, int *wl, int max_words,
                         int *nw) {
    for (int tries = 0; tries < 1000; tries++) {
        int64_t i = c->by_kind[k][mc_rng_below(r, (uint64_t)c->n_kind[k])];
        *nw = split_words(c->text + c->off[i], c->off[i + 1] - c->off[i], ws, wl, max_words);
        if (*nw >= min_words) return i;
    }
    die("the corpus has no line of %s with %d words or more", KINDS[k], min_words);
    return -1;
}

/* ---------------------------------------------------------------- main */

enum { T_SOURCE, T_ORDER, T_CONT };
static const char *const TASKS[] = {"source", "order", "continuation", NULL};
static const char *const TEMPLATES[3][2] = {
    {"{input} Where is this text from: a review, an email, the Bible, a quotation, a dictionary or a novel?",
     "Text: {input} Source:"},
    {"{input} Are these words in their original order? yes or no?", "Text: {input} Original word order:"},
    {"{input} ... How does this text go on?", "Beginning: {input} Continuation:"},
};

static void render(rag *in, const char *tpl, const char *s, const int64_t *ws, const int *wl, const int *idx,
                   int a, int b) {
    const char *p = strstr(tpl, "{input}");
    buf_put(in, tpl, (size_t)(p - tpl));
    put_words(in, s, ws, wl, idx, a, b);
    buf_put(in, p + 7, strlen(p + 7));
    rag_end(in);
}

static int cpu_only(const opt_spec *o, const char *v) {
    (void)o, (void)v;
    return mc_fail("auxtask runs on the CPU only: drop --device");
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    const char *corpus_path = NULL, *out = NULL, *key_arg = NULL;
    int task = -1;
    mc_cfg *cfg = cfg_new();
    opt_spec rows[] = {
        {.name = "--corpus", .kind = OPT_STR, .dst = &corpus_path, .arg = "C.msgpack", .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "the corpus artifact of prepare"},
        {.name = "--task", .kind = OPT_CHOICE, .dst = &task, .arg = "source|order|continuation", .choices = TASKS,
         .flags = OPT_REQUIRED, .key = "auxtask.task", .help = "which task to make"},
        OPT_ROWS_CONFIG(cfg),
        {.name = "--device", .kind = OPT_STR, .arg = "DEV", .call = cpu_only, .help = "refused: auxtask runs on the CPU"},
        OPT_ROW_KEY(&key_arg),
        OPT_ROW_OUT(&out, "E.msgpack", "the examples artifact"),
        {0}};
    const opt_prog prog = {.name = "auxtask", .opts = rows,
                           .about = "config: auxtask.examples (20000), auxtask.seed (1), auxtask.max_words (60), "
                                    "auxtask.choice_words (8)"};
    opts_parse(&prog, argc - 1, argv + 1);
    const char *task_name = TASKS[task];
    long n_ex = cfg_int(cfg, "auxtask.examples", 20000, 1, 1L << 30);
    long seed = cfg_int(cfg, "auxtask.seed", 1, 0, 1L << 40);
    long max_words = cfg_int(cfg, "auxtask.max_words", 60, 8, 4096);
    long choice_words = cfg_int(cfg, "auxtask.choice_words", 8, 1, 256);
    if (cfg_check_unknown(cfg, (const char *[]){"auxtask", NULL}) < 0) die("%s", mc_error());

    art_file *a = art_open(corpus_path, "corpus");
    if (!a) die("%s", mc_error());
    corpus c = {0};
    corpus_load(&c, a, corpus_path);

    char run_key[33];
    if (key_arg) {
        snprintf(run_key, sizeof run_key, "%s", key_arg);
    } else {
        mc_key *k = key_new_self("auxtask", cfg, (const char *[]){"auxtask", NULL});
        key_config(k, "auxtask.task", task_name);
        if (strlen(a->key) == 32) key_input(k, "corpus", a->key);
        key_digest(k, run_key);
        key_free(k);
    }

    mc_rng r;
    mc_rng_seed(&r, mc_hash64((uint64_t)seed * 1000003ULL + (uint64_t)task * 7919ULL + 17));
    int64_t *ws = mallocCheck(sizeof(int64_t) * (size_t)max_words), *ws2 = mallocCheck(sizeof(int64_t) * (size_t)max_words);
    int *wl = mallocCheck(sizeof(int) * (size_t)max_words), *wl2 = mallocCheck(sizeof(int) * (size_t)max_words);
    int *idx = mallocCheck(sizeof(int) * (size_t)max_words);
    rag in = {0}, ch = {0}, src = {0};
    int64_t *exch = mallocCheck(sizeof(int64_t) * (size_t)(n_ex + 1));
    int32_t *label = mallocCheck(sizeof(int32_t) * (size_t)n_ex), *tpl = mallocCheck(sizeof(int32_t) * (size_t)n_ex),
            *exi = mallocCheck(sizeof(int32_t) * (size_t)n_ex);
    exch[0] = 0;
    int n_choices = task == T_SOURCE ? N_KINDS : task == T_ORDER ? 2 : 4;
    for (long e = 0; e < n_ex; e++) {
        int tp = (int)(e % 2), nw;
        int kind = task == T_SOURCE ? (int)(e % N_KINDS) : (int)mc_rng_below(&r, N_KINDS);
        int min_words = task == T_SOURCE ? 4 : task == T_ORDER ? 8 : (int)(2 * choice_words + 4);
        if (min_words > max_words) die("auxtask.max_words %ld is too small for auxtask.choice_words %ld", max_words, choice_words);
        int64_t line = pick_line(&c, &r, kind, min_words, ws, wl, (int)max_words, &nw);
        const char *s = c.text + c.off[line];
        rag_row(&src, s, (size_t)(c.off[line + 1] - c.off[line]));
        if (task == T_SOURCE) {
            render(&in, TEMPLATES[task][tp], s, ws, wl, NULL, 0, nw);
            for (int k = 0; k < N_KINDS; k++) rag_row(&ch, KINDS[k], strlen(KINDS[k]));
            label[e] = kind;
        } else if (task == T_ORDER) {
            for (int k = 0; k < nw; k++) idx[k] = k;
            label[e] = (int)mc_rng_below(&r, 2); /* 0 yes: original, 1 no: shuffled */
            /* a shuffled window of four words that changes the text (a
             * window of equal words cannot: another one is tried) */
            for (int tries = 0; label[e] == 1 && tries < 50; tries++) {
                int at = (int)mc_rng_below(&r, (uint64_t)(nw - 3));
                for (int k = 3; k > 0; k--) {
                    int j = (int)mc_rng_below(&r, (uint64_t)k + 1), t = idx[at + k];
                    idx[at + k] = idx[at + j], idx[at + j] = t;
                }
                int changed = 0;
                for (int k = at; k < at + 4; k++)
                    changed |= wl[idx[k]] != wl[k] || memcmp(s + ws[idx[k]], s + ws[k], (size_t)wl[k]) != 0;
                if (changed) break;
                for (int k = at; k < at + 4; k++) idx[k] = k;
                if (tries == 49) label[e] = 0; /* no window changes it: an original */
            }
            render(&in, TEMPLATES[task][tp], s, ws, wl, idx, 0, nw);
            rag_row(&ch, "yes", 3);
            rag_row(&ch, "no", 2);
        } else {
            int cut = nw / 2;
            render(&in, TEMPLATES[task][tp], s, ws, wl, NULL, 0, cut);
            label[e] = (int)mc_rng_below(&r, 4);
            for (int k = 0; k < 4; k++) {
                if (k == label[e]) {
                    put_words(&ch, s, ws, wl, NULL, cut, cut + (int)choice_words);
                } else {
                    int nw2;
                    int64_t other;
                    int tries = 0;
                    do other = pick_line(&c, &r, kind, min_words, ws2, wl2, (int)max_words, &nw2);
                    while (other == line && ++tries < 1000);
                    if (other == line)
                        die("the corpus has one line of %s with %d words or more: the continuation task needs "
                            "others for its wrong choices (more text, or a smaller auxtask.choice_words)",
                            KINDS[kind], min_words);
                    const char *s2 = c.text + c.off[other];
                    put_words(&ch, s2, ws2, wl2, NULL, nw2 / 2, nw2 / 2 + (int)choice_words);
                }
                rag_end(&ch);
            }
        }
        exch[e + 1] = exch[e] + n_choices;
        tpl[e] = tp;
        exi[e] = (int32_t)e;
    }

    mc_val *meta = val_map();
    val_set_str(meta, "stage", "auxtask");
    val_set_str(meta, "task", task_name);
    val_set_str(meta, "split", "train");
    char part[64];
    snprintf(part, sizeof part, "%s.train", task_name);
    val_set_str(meta, "part", part);
    val_set_str(meta, "source", "the pretraining corpus (no validation or test text of any task)");
    mc_val *ta = val_set_array(meta, "templates");
    for (int k = 0; k < 2; k++) val_push(ta, val_str(TEMPLATES[task][k]));
    mc_val *la = val_set_array(meta, "label_names");
    if (task == T_SOURCE)
        for (int k = 0; k < N_KINDS; k++) val_push(la, val_str(KINDS[k]));
    else if (task == T_ORDER)
        val_push(la, val_str("yes")), val_push(la, val_str("no"));
    val_set_int(meta, "n_examples", n_ex);
    val_set_int(meta, "n_source_examples", n_ex);
    val_set_int(meta, "n_classes", n_choices);
    val_set_int(meta, "seed", seed);
    mc_val *inp = val_set_map(meta, "inputs");
    val_set_str(inp, "corpus", a->key);
    art_writer *w = art_writer_open(out, "examples", run_key, meta, 10);
    val_free(meta);
    if (!w) die("%s", mc_error());
    int64_t nr = n_ex;
    if (rag_write(w, "input_text", "input_offsets", &in) || rag_write(w, "choice_text", "choice_offsets", &ch) ||
        art_writer_rows(w, exch, label, nr) || art_writer_tensor(w, "template", ART_I32, 1, &nr, tpl) ||
        art_writer_tensor(w, "example", ART_I32, 1, &nr, exi) || rag_write(w, "source_text", "source_offsets", &src))
        die("%s: %s", out, mc_error());
    if (art_writer_close(w) < 0) die("%s", mc_error());
    fprintf(stderr, "auxtask: %-12s %ld examples, %d choices each -> %s\n", task_name, n_ex, n_choices, out);
    free(in.p), free(in.off), free(ch.p), free(ch.off), free(src.p), free(src.off);
    free(exch), free(label), free(tpl), free(exi), free(ws), free(ws2), free(wl), free(wl2), free(idx);
    for (int k = 0; k < N_KINDS; k++) free(c.by_kind[k]);
    free(c.kind), free((void *)c.text), free((void *)c.off);
    art_close(a);
    cfg_free(cfg);
    return 0;
}
