/* tokenize - SentencePiece vocabulary and `tokens` artifacts.
 *
 *   tokenize --vocab V --data E.msgpack -o T.msgpack        examples -> tokens
 *   tokenize --vocab V --corpus C.msgpack -o T.msgpack      corpus -> tokens
 *   tokenize --vocab V --jsonl FILE --task NAME [--split S] -o T.msgpack
 *   tokenize --train-vocab --corpus C.msgpack -o V.msgpack  run spm_train
 *   tokenize --vocab V --encode                 stdin lines -> ids (as spm_encode)
 *   tokenize --vocab V --export-model -o X.model            the .model bytes
 *   tokenize --vocab V --bench --corpus C.msgpack           speed vs spm_encode
 *   tokenize --dump T.msgpack             rows as "I ids..." and "C ids..." lines
 *   common: [--config FILE]... [--set k=v]...   (tokenize.*, vocab.*)
 *
 * V is a `vocab` artifact or any SentencePiece unigram `.model` file (such as
 * T5's spiece.model). Ids are exactly those of `spm_encode --output_format=id`
 * (lib/spm.c); every sequence then gets EOS (id 1 in T5's numbering: the
 * model's eos id) and is cut to tokenize.max_input / tokenize.max_choice
 * tokens, EOS kept.
 *
 * `tokens` artifacts (lib/tokens.h) hold input_ids, input_offsets,
 * choice_ids, choice_offsets, example_choices, label (corpus: input_ids and
 * input_offsets only, one row per line), ids as i32, offsets i64. Extra
 * tensors carried over from `examples`: template, example. meta: stage, task,
 * split, vocab (key), vocab_size, eos_id, pad_id, max_input, max_choice,
 * n_examples, n_truncated, label_names, templates.
 *
 * `vocab` artifacts: tensor `model` (u8, the .model bytes); meta: stage,
 * vocab_size (pieces + sentinels), spm_size, sentinels, pad_id, eos_id,
 * unk_id, extra_id_0 (= vocab_size - 1; <extra_id_k> = vocab_size - 1 - k),
 * spm_train (version line), options, corpus (key).
 *
 * JSON Lines: one object per line, {"input": str, "choices": [str, ...],
 * "label": int}; other keys are ignored; blank lines are skipped; a UTF-8
 * byte-order mark at the start of the file is skipped.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "config.h"
#include "datasrc.h"
#include "json.h"
#include "key.h"
#include "opts.h"
#include "progress.h"
#include "spm.h"
#include "tokens.h"
#include "val.h"

/* ------------------------------------------------------------ vocab input */

typedef struct {
    spm_model *m;
    char key[33];        /* vocab artifact key, or digest of the .model file */
    int vocab_size;      /* pieces + sentinels */
    int eos, pad;
} vocab;

static int has_msgpack_magic(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char b[6] = { 0 };
    size_t n = fread(b, 1, 6, f);
    fclose(f);
    return n == 6 && b[0] == 0x86 && !memcmp(b + 1, "\xa4mats", 5);
}

static void vocab_load(vocab *v, const char *path, int sentinels) {
    memset(v, 0, sizeof *v);
    if (has_msgpack_magic(path)) {
        art_file *a = art_open(path, "vocab");
        if (!a) die("%s", mc_error());
        /* tokenize --train-vocab names the tensor `model`; art import-hf
         * and import-spm name it after the file, `spiece.model`. */
        const art_tensor *t = art_find(a, "model");
        if (!t) t = art_find(a, "spiece.model");
        if (!t || t->dtype != ART_U8)
            die("%s: vocab artifact has no u8 tensor 'model' or 'spiece.model': rebuild it with tokenize --train-vocab or art import-spm", path);
        unsigned char *buf = mallocCheck(t->nbytes + 1);
        art_tensor_copy(t, buf);
        v->m = spm_load_buffer(buf, t->nbytes, path);
        free(buf);
        if (!v->m) die("%s", mc_error());
        snprintf(v->key, sizeof v->key, "%s", a->key);
        const mc_val *vs = val_get(a->meta, "vocab_size");
        if (vs && (vs->type != VAL_INT || vs->v.i < spm_size(v->m) || vs->v.i > INT32_MAX))
            die("%s: meta.vocab_size is not an integer from the model's %d pieces to 2^31 - 1: rebuild the "
                "vocabulary with tokenize --train-vocab or art import-spm", path, spm_size(v->m));
        v->vocab_size = vs ? (int)vs->v.i : spm_size(v->m) + sentinels;
        art_close(a);
        if (strlen(v->key) != 32) key_file_hex(path, v->key);
    } else {
        v->m = spm_load(path);
        if (!v->m) die("%s", mc_error());
        if (key_file_hex(path, v->key)) die("%s", mc_error());
        v->vocab_size = spm_size(v->m) + sentinels;
    }
    v->eos = spm_eos_id(v->m);
    v->pad = spm_pad_id(v->m);
    if (spm_check_t5_ids(v->m, path) < 0) die("%s", mc_error());
}

/* ------------------------------------------------------------ id buffers */

typedef struct {
    int32_t *ids;
    size_t n, cap;
    int64_t *off;
    size_t rows, ocap;
} idrag;

static void idr_row(idrag *r, const int32_t *ids, size_t n, int eos, size_t max, size_t *trunc) {
    if (max && n + 1 > max) { n = max - 1; (*trunc)++; }
    if (r->n + n + 1 > r->cap) {
        r->cap = (r->n + n + 1) * 2;
        r->ids = reallocCheck(r->ids, r->cap * sizeof *r->ids);
    }
    if (n) memcpy(r->ids + r->n, ids, n * sizeof *ids);
    r->n += n;
    r->ids[r->n++] = eos;
    if (r->rows + 2 > r->ocap) {
        r->ocap = (r->rows + 2) * 2;
        r->off = reallocCheck(r->off, r->ocap * sizeof *r->off);
    }
    r->off[0] = 0;
    r->off[++r->rows] = (int64_t)r->n;
}

static void idr_free(idrag *r) { free(r->ids); free(r->off); memset(r, 0, sizeof *r); }

static void write_idr(art_writer *w, const char *ids_name, const char *off_name, const idrag *r,
                      const char *path) {
    if (art_writer_ragged(w, ids_name, ART_I32, r->ids, (int64_t)r->n, off_name, r->off, (int64_t)r->rows))
        die("%s: %s", path, mc_error());
}

/* Open a tokens artifact of n examples with n_tensors tensors and write its
 * first six: the inputs, the choices (ragged), example_choices and label.
 * Dies naming `out` on an error. */
static art_writer *open_tokens(const char *out, const char *key, const mc_val *meta, size_t n_tensors,
                               const idrag *inputs, const idrag *choices, const int64_t *exch, const int32_t *label,
                               int64_t n) {
    art_writer *w = art_writer_open(out, "tokens", key, meta, n_tensors);
    if (!w) die("%s", mc_error());
    write_idr(w, "input_ids", "input_offsets", inputs, out);
    write_idr(w, "choice_ids", "choice_offsets", choices, out);
    if (art_writer_rows(w, exch, label, n)) die("%s: %s", out, mc_error());
    return w;
}

/* ------------------------------------------------------------ reading ragged text */

typedef struct {
    const char *bytes;
    int64_t *off;
    int64_t n;    /* rows */
} textrag;

static void textrag_get(const art_file *a, const char *tname, const char *oname, textrag *r) {
    if (art_read_text(a, tname, oname, &r->bytes, &r->off, &r->n) < 0) die("%s", mc_error());
}

/* ------------------------------------------------------------ keys */

/* --key HEX: the key the workflow computed (recorded as given). */
static const char *key_override;

static void stage_key(const char *stage, mc_cfg *cfg, const char *ns, const char *const *roles,
                      const char *const *hexes, int n, char out[33]) {
    if (key_override) {
        snprintf(out, 33, "%s", key_override);
        return;
    }
    mc_key *k = key_new_self(stage, cfg, (const char *[]){ns, NULL});
    for (int i = 0; i < n; i++)
        if (key_input(k, roles[i], hexes[i])) die("input %s: key '%s' is not 32 hex digits", roles[i], hexes[i]);
    key_digest(k, out);
    key_free(k);
}

/* ------------------------------------------------------------ examples -> tokens */

typedef struct {
    long max_input, max_choice;
} limits;

static void put_common_meta(mc_val *meta, const vocab *v, const limits *lim) {
    val_set_str(meta, "stage", "tokenize");
    val_set_str(meta, "vocab", v->key);
    val_set_int(meta, "vocab_size", v->vocab_size);
    val_set_int(meta, "eos_id", v->eos);
    val_set_int(meta, "pad_id", v->pad < 0 ? 0 : v->pad);
    val_set_int(meta, "max_input", lim->max_input);
    val_set_int(meta, "max_choice", lim->max_choice);
}

static void tokenize_examples(const vocab *v, const limits *lim, const char *in, const char *out,
                              mc_cfg *cfg) {
    art_file *a = art_open(in, "examples");
    if (!a) die("%s", mc_error());
    textrag inp, ch;
    textrag_get(a, "input_text", "input_offsets", &inp);
    textrag_get(a, "choice_text", "choice_offsets", &ch);
    int64_t *exch;
    int32_t *label;
    if (art_read_rows(a, inp.n, &exch, &label) < 0) die("%s", mc_error());
    spm_ws w = { 0 };
    idrag ri = { 0 }, rc = { 0 };
    size_t trunc_i = 0, trunc_c = 0;
    mc_progress pr;
    progress_init(&pr, "tokenize", inp.n, "ex");
    for (int64_t i = 0; i < inp.n; i++) {
        spm_encode(v->m, inp.bytes + inp.off[i], (size_t)(inp.off[i + 1] - inp.off[i]), &w);
        idr_row(&ri, w.ids, w.n_ids, v->eos, (size_t)lim->max_input, &trunc_i);
        if ((i & 1023) == 0) progress_update(&pr, i, NULL);
    }
    for (int64_t i = 0; i < ch.n; i++) {
        spm_encode(v->m, ch.bytes + ch.off[i], (size_t)(ch.off[i + 1] - ch.off[i]), &w);
        idr_row(&rc, w.ids, w.n_ids, v->eos, (size_t)lim->max_choice, &trunc_c);
    }
    progress_finish(&pr, NULL);
    const char *task = val_get_str(a->meta, "task", "");
    const char *split = val_get_str(a->meta, "split", "");
    const char *roles[2] = { "data", "vocab" };
    const char *hex[2] = { a->key, v->key };
    char in_key[33];
    if (strlen(a->key) != 32) { key_file_hex(in, in_key); hex[0] = in_key; }
    char key[33];
    stage_key("tokenize", cfg, "tokenize", roles, hex, 2, key);
    mc_val *meta = val_map();
    val_set_str(meta, "task", task);
    val_set_str(meta, "split", split);
    put_common_meta(meta, v, lim);
    val_set_str(meta, "data", hex[0]);
    val_set_int(meta, "n_examples", inp.n);
    val_set_int(meta, "n_truncated_inputs", (int64_t)trunc_i);
    val_set_int(meta, "n_truncated_choices", (int64_t)trunc_c);
    const mc_val *ln = val_get(a->meta, "label_names");
    if (ln) val_set(meta, "label_names", val_clone(ln));
    const mc_val *tp = val_get(a->meta, "templates");
    if (tp) val_set(meta, "templates", val_clone(tp));
    const art_tensor *tt = art_find(a, "template"), *te = art_find(a, "example");
    int extra = (tt && tt->dtype == ART_I32 && tt->numel == inp.n) +
                (te && te->dtype == ART_I32 && te->numel == inp.n);
    int64_t nl = inp.n;
    art_writer *wr = open_tokens(out, key, meta, 6 + (size_t)extra, &ri, &rc, exch, label, nl);
    const art_tensor *ex[2] = { tt, te };
    for (int k = 0; k < 2; k++) {
        if (!ex[k] || ex[k]->dtype != ART_I32 || ex[k]->numel != inp.n) continue;
        int32_t *buf = mallocCheck(ex[k]->nbytes + 4);
        art_tensor_copy(ex[k], buf);
        if (art_writer_tensor(wr, ex[k]->name, ART_I32, 1, &nl, buf)) die("%s: %s", out, mc_error());
        free(buf);
    }
    if (art_writer_close(wr)) die("%s", mc_error());
    fprintf(stderr, "tokenize: %s.%s %lld examples, %zu input and %zu choice tokens "
            "(%zu inputs, %zu choices truncated) -> %s\n", task, split, (long long)inp.n, ri.n,
            rc.n, trunc_i, trunc_c, out);
    val_free(meta);
    idr_free(&ri);
    idr_free(&rc);
    spm_ws_free(&w);
    free(inp.off);
    free(ch.off);
    free(exch);
    free(label);
    art_close(a);
}

/* ------------------------------------------------------------ corpus -> tokens */

static void tokenize_corpus(const vocab *v, const limits *lim, const char *in, const char *out,
                            mc_cfg *cfg) {
    art_file *a = art_open(in, "corpus");
    if (!a) die("%s", mc_error());
    textrag t;
    textrag_get(a, "text", "offsets", &t);
    spm_ws w = { 0 };
    idrag r = { 0 };
    size_t trunc = 0;
    mc_progress pr;
    progress_init(&pr, "tokenize corpus", t.n, "lines");
    for (int64_t i = 0; i < t.n; i++) {
        spm_encode(v->m, t.bytes + t.off[i], (size_t)(t.off[i + 1] - t.off[i]), &w);
        idr_row(&r, w.ids, w.n_ids, v->eos, 0, &trunc);
        if ((i & 8191) == 0) progress_update(&pr, i, NULL);
    }
    progress_finish(&pr, NULL);
    const char *roles[2] = { "data", "vocab" };
    const char *hex[2] = { a->key, v->key };
    char key[33];
    stage_key("tokenize", cfg, "tokenize", roles, hex, 2, key);
    mc_val *meta = val_map();
    val_set_str(meta, "task", "corpus");
    val_set_str(meta, "split", "train");
    put_common_meta(meta, v, lim);
    val_set_str(meta, "data", a->key);
    val_set_int(meta, "n_examples", t.n);
    val_set_int(meta, "n_tokens", (int64_t)r.n);
    art_writer *wr = art_writer_open(out, "tokens", key, meta, 2);
    if (!wr) die("%s", mc_error());
    write_idr(wr, "input_ids", "input_offsets", &r, out);
    if (art_writer_close(wr)) die("%s", mc_error());
    fprintf(stderr, "tokenize: corpus %lld lines, %zu tokens -> %s\n", (long long)t.n, r.n, out);
    val_free(meta);
    idr_free(&r);
    spm_ws_free(&w);
    free(t.off);
    art_close(a);
}

/* ------------------------------------------------------------ JSON Lines */

MC_NORETURN static void jfail(const char *file, size_t line, const char *what) {
    die("%s:%zu: %s: each line must be {\"input\": \"...\", \"choices\": [\"...\", ...], "
        "\"label\": N}", file, line, what);
}

static void tokenize_jsonl(const vocab *v, const limits *lim, const char *in, const char *task,
                           const char *split, const char *out, mc_cfg *cfg) {
    unsigned char *buf;
    size_t len;
    if (mc_read_file(in, &buf, &len)) die("%s: cannot read the JSON Lines file: check the path", in);
    spm_ws w = { 0 };
    idrag ri = { 0 }, rc = { 0 };
    int64_t *exch = mallocCheck(sizeof *exch);
    int32_t *label = NULL;
    size_t n = 0, trunc_i = 0, trunc_c = 0;
    exch[0] = 0;
    const char *p = (const char *)buf, *end = (const char *)buf + len;
    /* a UTF-8 byte-order mark (what some editors put first) is not text */
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) p += 3;
    for (size_t line = 1; p < end; line++) {
        const char *le = memchr(p, '\n', (size_t)(end - p));
        if (!le) le = end;
        const char *q = p;
        while (q < le && isspace((unsigned char)*q)) q++;
        if (q == le) { p = le + 1; continue; } /* a blank line */
        mc_val *ex = json_parse_line(p, (size_t)(le - p), in, (long)line);
        if (!ex) die("%s", mc_error());
        if (ex->type != VAL_MAP) jfail(in, line, "not a JSON object");
        const mc_val *input = val_get(ex, "input"), *choices = val_get(ex, "choices"), *lab = val_get(ex, "label");
        if (!input || !choices || !lab)
            jfail(in, line, !input ? "missing \"input\"" : !choices ? "missing \"choices\"" : "missing \"label\"");
        if (input->type != VAL_STR) jfail(in, line, "\"input\" is not a string");
        if (choices->type != VAL_ARRAY) jfail(in, line, "\"choices\" is not an array");
        size_t nch = choices->v.c.n;
        if (nch < 1) jfail(in, line, "\"choices\" is empty");
        for (size_t c = 0; c < nch; c++)
            if (choices->v.c.items[c]->type != VAL_STR) jfail(in, line, "a choice is not a string");
        if (lab->type != VAL_INT && lab->type != VAL_UINT) jfail(in, line, "\"label\" is not an integer");
        if (lab->type == VAL_UINT || lab->v.i < 0 || lab->v.i >= (int64_t)nch) jfail(in, line, "\"label\" is not an index into \"choices\"");
        spm_encode(v->m, input->v.str.s, input->v.str.len, &w);
        idr_row(&ri, w.ids, w.n_ids, v->eos, (size_t)lim->max_input, &trunc_i);
        for (size_t c = 0; c < nch; c++) {
            spm_encode(v->m, choices->v.c.items[c]->v.str.s, choices->v.c.items[c]->v.str.len, &w);
            idr_row(&rc, w.ids, w.n_ids, v->eos, (size_t)lim->max_choice, &trunc_c);
        }
        exch = reallocCheck(exch, (n + 2) * sizeof *exch);
        label = reallocCheck(label, (n + 1) * sizeof *label);
        exch[n + 1] = exch[n] + (int64_t)nch;
        label[n] = (int32_t)lab->v.i;
        n++;
        val_free(ex);
        p = le + 1;
    }
    if (n == 0) die("%s: no examples: the file is empty", in);
    char fkey[33], okey[33];
    if (key_file_hex(in, fkey)) die("%s", mc_error());
    const char *roles[2] = { "data", "vocab" };
    const char *hex[2] = { fkey, v->key };
    stage_key("tokenize", cfg, "tokenize", roles, hex, 2, okey);
    mc_val *meta = val_map();
    val_set_str(meta, "task", task);
    val_set_str(meta, "split", split);
    put_common_meta(meta, v, lim);
    val_set_str(meta, "data", fkey);
    val_set_str(meta, "source", in);
    val_set_int(meta, "n_examples", (int64_t)n);
    val_set_int(meta, "n_truncated_inputs", (int64_t)trunc_i);
    val_set_int(meta, "n_truncated_choices", (int64_t)trunc_c);
    art_writer *wr = open_tokens(out, okey, meta, 6, &ri, &rc, exch, label, (int64_t)n);
    if (art_writer_close(wr)) die("%s", mc_error());
    fprintf(stderr, "tokenize: %s (%s.%s) %zu examples -> %s\n", in, task, split, n, out);
    val_free(meta);
    idr_free(&ri);
    idr_free(&rc);
    spm_ws_free(&w);
    free(exch);
    free(label);
    free(buf);
}

/* ------------------------------------------------------------ corpus text */

/* Write the corpus lines to path (one per line). Returns line count. */
static int64_t corpus_to_text(const char *corpus, const char *path, char key_out[33]) {
    art_file *a = art_open(corpus, "corpus");
    if (!a) die("%s", mc_error());
    textrag t;
    textrag_get(a, "text", "offsets", &t);
    FILE *f = fopen(path, "wb");
    if (!f) die("%s: cannot write: %s", path, strerror(errno));
    for (int64_t i = 0; i < t.n; i++) {
        fwrite(t.bytes + t.off[i], 1, (size_t)(t.off[i + 1] - t.off[i]), f);
        fputc('\n', f);
    }
    if (fclose(f)) die("%s: write failed: %s", path, strerror(errno));
    if (key_out) snprintf(key_out, 33, "%s", a->key);
    int64_t n = t.n;
    free(t.off);
    art_close(a);
    return n;
}

static int run_cmd(char *const argv[], const char *dir, const char *log) {
    pid_t pid = fork();
    if (pid < 0) die("fork: %s", strerror(errno));
    if (pid == 0) {
        if (log) {   /* before chdir: log may be a relative path */
            FILE *f = freopen(log, "w", stderr);
            if (f) dup2(fileno(f), 1);
        }
        if (dir && chdir(dir)) _exit(126);
        execvp(argv[0], argv);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void train_vocab(const char *corpus, const char *out, mc_cfg *cfg) {
    long size = cfg_int(cfg, "vocab.size", 8000, 200, 1 << 22);
    long sent = cfg_int(cfg, "vocab.sentinels", 100, 0, 10000);
    double cov = cfg_float(cfg, "vocab.character_coverage", 0.9995, 0.5, 1.0);
    long iss = cfg_int(cfg, "vocab.input_sentence_size", 200000, 0, 1L << 40);
    long seed = cfg_int(cfg, "vocab.seed", 1, 0, 4294967294L);
    int bf = cfg_bool(cfg, "vocab.byte_fallback", 0);
    long thr = cfg_int(cfg, "vocab.threads", 2, 1, 256);
    const char *const ns[] = { "vocab", NULL };
    if (cfg_check_unknown(cfg, ns)) die("%s", mc_error());
    if (size - sent < 200) die("vocab.size = %ld leaves fewer than 200 pieces after %ld sentinels", size, sent);
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s.spm.%d", out, (int)getpid());
    if (mc_mkdir_parents(out)) die("%s", mc_error());
    if (mkdir(tmpl, 0777) && errno != EEXIST) die("%s: mkdir: %s", tmpl, strerror(errno));
    char txt[4200], model[4300], log[4300];
    snprintf(txt, sizeof txt, "%s/corpus.txt", tmpl);
    snprintf(model, sizeof model, "%s/spm.model", tmpl);
    snprintf(log, sizeof log, "%s/spm_train.log", tmpl);
    char corpus_key[33];
    int64_t lines = corpus_to_text(corpus, txt, corpus_key);
    char a_in[4300], a_pre[4300], a_vs[64], a_cov[64], a_iss[64], a_seed[64], a_bf[64], a_thr[64];
    snprintf(a_thr, sizeof a_thr, "--num_threads=%ld", thr);
    /* spm_train records --input and --model_prefix in the model: run it in
     * the temporary directory with fixed relative names, so the model bytes
     * do not depend on the output path. */
    snprintf(a_in, sizeof a_in, "--input=corpus.txt");
    snprintf(a_pre, sizeof a_pre, "--model_prefix=spm");
    snprintf(a_vs, sizeof a_vs, "--vocab_size=%ld", size - sent);
    snprintf(a_cov, sizeof a_cov, "--character_coverage=%g", cov);
    snprintf(a_iss, sizeof a_iss, "--input_sentence_size=%ld", iss);
    snprintf(a_seed, sizeof a_seed, "--random_seed=%ld", seed);
    snprintf(a_bf, sizeof a_bf, "--byte_fallback=%s", bf ? "true" : "false");
    /* spm_train splits the EM work into fixed per-thread shards and sums them
     * in thread order, so a fixed thread count (vocab.threads) and seed give
     * the same model bytes. */
    char *argv[] = { "spm_train", a_in, a_pre, a_vs, "--model_type=unigram", "--pad_id=0",
                     "--eos_id=1", "--unk_id=2", "--bos_id=-1", a_cov, a_iss,
                     "--shuffle_input_sentence=true", a_seed, a_bf, a_thr,
                     "--minloglevel=1", NULL };
    fprintf(stderr, "tokenize: spm_train on %lld lines, %ld pieces + %ld sentinels\n",
            (long long)lines, size - sent, sent);
    double t0 = mc_now();
    int rc = run_cmd(argv, tmpl, log);
    if (rc == 127) die("spm_train not found: install the Debian package sentencepiece (scripts/install-deps.sh)");
    if (rc) die("spm_train failed (exit %d); its log: %s", rc, log);
    unsigned char *mb;
    size_t ml;
    if (mc_read_file(model, &mb, &ml)) die("%s: spm_train wrote no model (log: %s)", model, log);
    spm_model *m = spm_load_buffer(mb, ml, model);
    if (!m) die("%s", mc_error());
    if (spm_pad_id(m) != 0 || spm_eos_id(m) != 1 || spm_unk_id(m) != 2)
        die("%s: ids pad %d eos %d unk %d, not T5's 0 1 2", model, spm_pad_id(m), spm_eos_id(m), spm_unk_id(m));
    const char *roles[1] = { "corpus" };
    const char *hex[1] = { corpus_key };
    char key[33];
    stage_key("vocab", cfg, "vocab", roles, hex, 1, key);
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "vocab");
    val_set_int(meta, "vocab_size", spm_size(m) + sent);
    val_set_int(meta, "spm_size", spm_size(m));
    val_set_int(meta, "sentinels", sent);
    val_set_int(meta, "pad_id", 0);
    val_set_int(meta, "eos_id", 1);
    val_set_int(meta, "unk_id", 2);
    val_set_int(meta, "extra_id_0", spm_size(m) + sent - 1);
    val_set_str(meta, "corpus", corpus_key);
    val_set_str(meta, "spm_train", "sentencepiece unigram (Debian spm_train)");
    mc_val *opt = val_set_array(meta, "options");
    for (int i = 1; argv[i]; i++)
        if (strncmp(argv[i], "--input=", 8) && strncmp(argv[i], "--model_prefix=", 15)) val_push(opt, val_str(argv[i]));
    art_writer *w = art_writer_open(out, "vocab", key, meta, 1);
    if (!w) die("%s", mc_error());
    int64_t n = (int64_t)ml;
    if (art_writer_tensor(w, "model", ART_U8, 1, &n, mb) || art_writer_close(w)) die("%s: %s", out, mc_error());
    fprintf(stderr, "tokenize: vocabulary of %d pieces + %ld sentinels in %.1fs -> %s\n", spm_size(m), sent,
            mc_now() - t0, out);
    spm_free(m);
    free(mb);
    val_free(meta);
    unlink(txt);
    unlink(model);
    snprintf(log, sizeof log, "%s/spm.vocab", tmpl);
    unlink(log);
    snprintf(log, sizeof log, "%s/spm_train.log", tmpl);
    unlink(log);
    rmdir(tmpl);
}

/* ------------------------------------------------------------ encode / bench */

static void encode_stdin(const vocab *v) {
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    spm_ws w = { 0 };
    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n && line[n - 1] == '\n') n--;
        spm_encode(v->m, line, (size_t)n, &w);
        for (size_t i = 0; i < w.n_ids; i++) printf(i ? " %d" : "%d", w.ids[i]);
        putchar('\n');
    }
    free(line);
    spm_ws_free(&w);
}

static void export_model(const char *vpath, const char *out) {
    art_file *a = art_open(vpath, "vocab");
    if (!a) die("%s", mc_error());
    const art_tensor *t = art_find(a, "model");
    if (!t) die("%s: no 'model' tensor", vpath);
    FILE *f = fopen(out, "wb");
    if (!f || fwrite(t->data, 1, t->nbytes, f) != t->nbytes || fclose(f))
        die("%s: cannot write: %s", out, strerror(errno));
    art_close(a);
}

/* The shortest of three runs of the shell command cmd, in seconds; dies
 * with `fail` when a run fails. */
static double best_of_3(const char *cmd, const char *fail) {
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mc_now();
        if (system(cmd) != 0) die("%s", fail);
        double dt = mc_now() - t0;
        if (dt < best) best = dt;
    }
    return best;
}

static void bench(const vocab *v, const char *vpath, const char *corpus) {
    char dir[] = "/tmp/mats-bench-XXXXXX";
    if (!mkdtemp(dir)) die("mkdtemp: %s", strerror(errno));
    char txt[128], model[128], outp[128];
    snprintf(txt, sizeof txt, "%s/corpus.txt", dir);
    snprintf(model, sizeof model, "%s/m.model", dir);
    snprintf(outp, sizeof outp, "%s/ids.txt", dir);
    int64_t lines = corpus_to_text(corpus, txt, NULL);
    if (has_msgpack_magic(vpath)) export_model(vpath, model);
    else snprintf(model, sizeof model, "%s", vpath);
    unsigned char *buf;
    size_t len;
    if (mc_read_file(txt, &buf, &len)) die("%s: cannot read", txt);
    /* ours: encode every line (in memory, as the stage does) */
    spm_ws w = { 0 };
    size_t ntok = 0;
    double best = 1e30;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = mc_now();
        ntok = 0;
        for (size_t i = 0; i < len;) {
            const char *s = (const char *)buf + i;
            const char *e = memchr(s, '\n', len - i);
            size_t n = e ? (size_t)(e - s) : len - i;
            ntok += spm_encode(v->m, s, n, &w);
            i += n + 1;
        }
        double dt = mc_now() - t0;
        if (dt < best) best = dt;
    }
    /* spm_encode: the same lines, ids to a file */
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "spm_encode --model=%s --output_format=id < %s > %s", model, txt, outp);
    double sbest = best_of_3(cmd, "spm_encode failed: install sentencepiece");
    /* ours, end to end like spm_encode: read the file, write ids as text */
    snprintf(cmd, sizeof cmd, "/proc/%d/exe --vocab %s --encode < %s > %s.mine", (int)getpid(), vpath, txt, outp);
    double ebest = best_of_3(cmd, "tokenize --encode failed");
    char cmp[512];
    snprintf(cmp, sizeof cmp, "cmp -s %s %s.mine", outp, outp);
    int same = system(cmp) == 0;
    printf("corpus: %lld lines, %.1f MB, %zu tokens\n", (long long)lines, len / 1e6, ntok);
    printf("mats encoder (in memory):     %.3f s  %.2f MB/s\n", best, len / 1e6 / best);
    printf("mats tokenize --encode (text): %.3f s  %.2f MB/s\n", ebest, len / 1e6 / ebest);
    printf("spm_encode --output_format=id: %.3f s  %.2f MB/s\n", sbest, len / 1e6 / sbest);
    printf("speed ratio (spm_encode time / ours): %.2fx in memory, %.2fx end to end\n", sbest / best,
           sbest / ebest);
    printf("ids identical to spm_encode on the whole corpus: %s\n", same ? "yes" : "NO");
    free(buf);
    spm_ws_free(&w);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "tokenize: could not remove %s\n", dir);
    if (!same) exit(1);
}


/* ------------------------------------------------------------ dump */

/* Print a tokens artifact: "I id id ..." per input row, then "C id ..." per
 * choice of that row (corpus artifacts: "I" rows only). tok_load checks
 * every offset and id before a row is printed. */
static void dump_tokens(const char *path) {
    tok_set *s = tok_load(path, 0);
    if (!s) die("%s", mc_error());
    static char obuf[1 << 16];
    setvbuf(stdout, obuf, _IOFBF, sizeof obuf);
    for (int64_t r = 0; r < s->n; r++) {
        fputc('I', stdout);
        for (int j = 0; j < tok_input_len(s, r); j++) printf(" %d", tok_input(s, r)[j]);
        fputc('\n', stdout);
        if (!s->choice_ids) continue;
        for (int64_t c = s->ex_choices[r]; c < s->ex_choices[r + 1]; c++) {
            fputc('C', stdout);
            for (int j = 0; j < tok_choice_len(s, c); j++) printf(" %d", tok_choice(s, c)[j]);
            fputc('\n', stdout);
        }
    }
    tok_free(s);
}

/* ------------------------------------------------------------ main */

/* A missing required option: one line, not the usage text. */
static void need(const char *what, const char *mode) {
    die("%s needs %s (see tokenize --help)", mode, what);
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    mc_cfg *cfg = cfg_new();
    const char *vpath = NULL, *data = NULL, *corpus = NULL, *jsonl = NULL, *task = NULL,
               *split, *out = NULL, *dump = NULL;
    int train = 0, enc = 0, exp = 0, bch = 0;
    long sentinels;
    opt_spec rows[] = {
        {.name = "--vocab", .kind = OPT_STR, .dst = &vpath, .arg = "V", .flags = OPT_INPUT,
         .help = "a vocab artifact or a SentencePiece .model file"},
        {.name = "--data", .kind = OPT_STR, .dst = &data, .arg = "E.msgpack", .flags = OPT_INPUT,
         .help = "an examples artifact to tokenize"},
        {.name = "--corpus", .kind = OPT_STR, .dst = &corpus, .arg = "C.msgpack", .flags = OPT_INPUT,
         .help = "a corpus artifact (to tokenize, for --train-vocab, or for --bench)"},
        {.name = "--jsonl", .kind = OPT_STR, .dst = &jsonl, .arg = "F", .flags = OPT_INPUT,
         .help = "JSON Lines: {\"input\": str, \"choices\": [str, ...], \"label\": int} per line"},
        {.name = "--task", .kind = OPT_STR, .dst = &task, .arg = "NAME", .help = "--jsonl: the task's name (meta.task)"},
        {.name = "--split", .kind = OPT_STR, .dst = &split, .arg = "S", .def = "test",
         .help = "--jsonl: the split's name (meta.split)"},
        {.name = "--sentinels", .kind = OPT_INT, .dst = &sentinels, .arg = "N", .lo = 0, .hi = 10000, .def = "100",
         .help = "sentinel ids added after the pieces of a plain .model file"},
        {.name = "--train-vocab", .kind = OPT_FLAG, .dst = &train, .help = "train a vocabulary on --corpus (spm_train)"},
        {.name = "--encode", .kind = OPT_FLAG, .dst = &enc, .help = "stdin lines -> ids, as spm_encode"},
        {.name = "--export-model", .kind = OPT_FLAG, .dst = &exp, .help = "write the .model bytes inside --vocab to -o"},
        {.name = "--bench", .kind = OPT_FLAG, .dst = &bch, .help = "time the encoder against spm_encode on --corpus"},
        {.name = "--dump", .kind = OPT_STR, .dst = &dump, .arg = "T.msgpack", .flags = OPT_INPUT,
         .help = "print a tokens artifact as \"I ids...\" / \"C ids...\" lines"},
        OPT_ROWS_CONFIG(cfg),
        OPT_ROW_KEY(&key_override),
        {.name = "-o", .kind = OPT_STR, .dst = &out, .arg = "OUT", .flags = OPT_OUTPUT, .help = "the output"},
        {0}};
    const opt_prog prog = {
        .name = "tokenize", .opts = rows,
        .usage = "tokenize --vocab V (--data E.msgpack | --corpus C.msgpack | --jsonl F --task T [--split S]) [--key HEX] -o OUT\n"
                 "       tokenize --train-vocab --corpus C.msgpack -o V.msgpack\n"
                 "       tokenize --vocab V --encode | --export-model -o X.model | --bench --corpus C\n"
                 "       tokenize --dump T.msgpack\n"
                 "       options: [--config FILE]... [--set k=v]... [--sentinels N]",
        .about = "config: tokenize.max_input (256), tokenize.max_choice (16); vocab.* for --train-vocab"};
    opts_parse(&prog, argc - 1, argv + 1);
    if (dump) {
        dump_tokens(dump);
        return 0;
    }
    if (train) {
        if (!corpus) need("--corpus C.msgpack", "--train-vocab");
        if (!out) need("-o V.msgpack", "--train-vocab");
        train_vocab(corpus, out, cfg);
        cfg_free(cfg);
        return 0;
    }
    if (!vpath) die("--vocab V.msgpack is required (see tokenize --help)");
    if (exp) {
        if (!out) need("-o X.model", "--export-model");
        export_model(vpath, out);
        return 0;
    }
    vocab v;
    vocab_load(&v, vpath, (int)sentinels);
    if (enc) { encode_stdin(&v); spm_free(v.m); return 0; }
    if (bch) {
        if (!corpus) need("--corpus C.msgpack", "--bench");
        bench(&v, vpath, corpus);
        spm_free(v.m);
        return 0;
    }
    limits lim;
    lim.max_input = cfg_int(cfg, "tokenize.max_input", 256, 2, 1 << 24);
    lim.max_choice = cfg_int(cfg, "tokenize.max_choice", 16, 2, 1 << 24);
    const char *const ns[] = { "tokenize", NULL };
    if (cfg_check_unknown(cfg, ns)) die("%s", mc_error());
    if (!out) die("-o OUT is required (see tokenize --help)");
    if (data) tokenize_examples(&v, &lim, data, out, cfg);
    else if (corpus) tokenize_corpus(&v, &lim, corpus, out, cfg);
    else if (jsonl) {
        if (!task) die("--jsonl needs --task NAME (it becomes meta.task)");
        tokenize_jsonl(&v, &lim, jsonl, task, split, out, cfg);
    } else die("nothing to tokenize: give --data, --corpus or --jsonl (see tokenize --help)");
    spm_free(v.m);
    cfg_free(cfg);
    return 0;
}
