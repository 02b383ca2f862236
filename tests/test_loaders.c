/* test_loaders.c - loaders and writers facing hostile files (issue 25).
 *
 * A checksum proves a file whole, not sane: every artifact here has a valid
 * checksum and hostile contents (a choice id of -100000000, an offset past
 * the end, a label past its example's choices, meta.config numbers that do
 * not fit or do not describe the file, a [d, d] statistic that is not
 * square, a dtype the readers copy into a buffer sized for another). Each
 * must be refused at load with one line naming the file, the tensor and the
 * element. Writers must refuse an output that exists and is not a regular
 * file, and never write through a link planted at their temporary path.
 *
 *   test_loaders                          run the tests
 *   test_loaders --poke IN OUT EDIT...    copy artifact IN to OUT with edits,
 *                                         for tests/test_hostile.sh:
 *       NAME[I]=V    element I of tensor NAME set to the integer V (in its dtype)
 *       NAME:DTYPE   tensor NAME converted to DTYPE (f32 f64 i32 i64 u8)
 *       -NAME        tensor NAME dropped
 *       meta.A.B=V   the integer V at meta path A.B (maps made as needed)
 *   test_loaders --write-samples DIR      DIR/tokens.msgpack, DIR/corpus.msgpack
 *                                         (valid; the sources for --poke)
 */
#include <errno.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "harness.h"
#include "hf.h"
#include "t5.h"
#include "tokens.h"

static char dir[256];

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

/* ------------------------------------------------------------ poke */

typedef struct {
    char *name;
    art_dtype dtype;
    int ndim;
    int64_t shape[ART_MAX_DIMS];
    int64_t numel;
    unsigned char *data;
    int drop;
} ptensor;

static int64_t get_int(const ptensor *t, int64_t i) {
    const unsigned char *p = t->data + (size_t)i * art_dtype_size(t->dtype);
    switch (t->dtype) {
    case ART_F32: { float v; memcpy(&v, p, 4); return (int64_t)v; }
    case ART_F64: { double v; memcpy(&v, p, 8); return (int64_t)v; }
    case ART_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case ART_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case ART_U8: return p[0];
    }
    return 0;
}

/* Store v in element i as the tensor's dtype stores it (a cast). */
static void put_int(ptensor *t, int64_t i, int64_t v) {
    unsigned char *p = t->data + (size_t)i * art_dtype_size(t->dtype);
    switch (t->dtype) {
    case ART_F32: { float x = (float)v; memcpy(p, &x, 4); break; }
    case ART_F64: { double x = (double)v; memcpy(p, &x, 8); break; }
    case ART_I32: { int32_t x = (int32_t)(uint32_t)(uint64_t)v; memcpy(p, &x, 4); break; }
    case ART_I64: memcpy(p, &v, 8); break;
    case ART_U8: p[0] = (unsigned char)v; break;
    }
}

static ptensor *find_pt(ptensor *t, size_t n, const char *name, size_t len) {
    for (size_t i = 0; i < n; i++)
        if (strlen(t[i].name) == len && !strncmp(t[i].name, name, len)) return &t[i];
    return NULL;
}

/* Apply one edit (see the usage at the top). -1 with mc_error(). */
static int apply_edit(const char *e, mc_val *meta, ptensor *t, size_t n) {
    const char *eq = strchr(e, '='), *br = strchr(e, '['), *colon = strrchr(e, ':');
    if (!strncmp(e, "meta.", 5) && eq) {
        mc_val *m = meta;
        const char *p = e + 5;
        for (const char *dot; (dot = strchr(p, '.')) && dot < eq; p = dot + 1) {
            char k[128];
            snprintf(k, sizeof k, "%.*s", (int)(dot - p), p);
            mc_val *child = (mc_val *)val_get(m, k);
            m = child && child->type == VAL_MAP ? child : val_set_map(m, k);
        }
        char k[128];
        snprintf(k, sizeof k, "%.*s", (int)(eq - p), p);
        val_set_int(m, k, strtoll(eq + 1, NULL, 0));
        return 0;
    }
    if (e[0] == '-') {
        ptensor *x = find_pt(t, n, e + 1, strlen(e + 1));
        if (!x) return mc_fail("%s: no such tensor", e);
        x->drop = 1;
        return 0;
    }
    if (br && eq) {
        ptensor *x = find_pt(t, n, e, (size_t)(br - e));
        int64_t i = strtoll(br + 1, NULL, 0);
        if (!x || i < 0 || i >= x->numel) return mc_fail("%s: no such tensor element", e);
        put_int(x, i, strtoll(eq + 1, NULL, 0));
        return 0;
    }
    if (colon) {
        ptensor *x = find_pt(t, n, e, (size_t)(colon - e));
        int d = art_dtype_parse(colon + 1, strlen(colon + 1));
        if (!x || d < 0) return mc_fail("%s: no such tensor or dtype", e);
        ptensor y = *x;
        y.dtype = (art_dtype)d;
        y.data = mallocCheck((size_t)(x->numel ? x->numel : 1) * art_dtype_size(y.dtype));
        for (int64_t i = 0; i < x->numel; i++) put_int(&y, i, get_int(x, i));
        free(x->data);
        *x = y;
        return 0;
    }
    return mc_fail("%s: not an edit (NAME[I]=V, NAME:DTYPE, -NAME, meta.PATH=V)", e);
}

/* Copy the artifact `in` to `out` with the edits applied, under a valid
 * checksum. -1 with mc_error(). */
static int poke(const char *in, const char *out, const char *const *edits, int n_edits) {
    art_file *a = art_open(in, NULL);
    if (!a) return -1;
    mc_val *meta = val_clone(a->meta);
    ptensor *t = callocCheck(a->n_tensors ? a->n_tensors : 1, sizeof *t);
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *s = &a->tensors[i];
        t[i] = (ptensor){strdupCheck(s->name), s->dtype, s->ndim, {0}, s->numel, mallocCheck(s->nbytes + 1), 0};
        memcpy(t[i].shape, s->shape, sizeof t[i].shape);
        art_tensor_copy(s, t[i].data);
    }
    int rc = 0;
    for (int k = 0; k < n_edits && rc == 0; k++) rc = apply_edit(edits[k], meta, t, a->n_tensors);
    size_t kept = 0;
    for (size_t i = 0; i < a->n_tensors; i++) kept += !t[i].drop;
    art_writer *w = rc ? NULL : art_writer_open(out, a->kind, a->key, meta, kept);
    if (!w) rc = -1;
    for (size_t i = 0; i < a->n_tensors && rc == 0; i++)
        if (!t[i].drop) rc = art_writer_tensor(w, t[i].name, t[i].dtype, t[i].ndim, t[i].shape, t[i].data);
    if (w) rc = rc ? (art_writer_abort(w), -1) : art_writer_close(w);
    for (size_t i = 0; i < a->n_tensors; i++) free(t[i].name), free(t[i].data);
    free(t);
    val_free(meta);
    art_close(a);
    return rc;
}

/* ------------------------------------------------------------ fixtures */

/* Two examples: inputs [5 6 1] and [7 1]; choices [8 1] [9 1] | [3 1]
 * [4 4 1] [2 1]; labels 1 and 2. */
static void write_tokens(const char *path) {
    int64_t ids[5] = {5, 6, 1, 7, 1}, ioff[3] = {0, 3, 5};
    int64_t cids[10] = {8, 1, 9, 1, 3, 1, 4, 4, 1, 2}, coff[6] = {0, 2, 4, 6, 9, 10};
    int64_t ec[3] = {0, 2, 5};
    int32_t lab[2] = {1, 2};
    mc_val *meta = val_map();
    val_set_str(meta, "task", "t");
    art_writer *w = art_writer_open(path, "tokens", "", meta, 6);
    val_free(meta);
    int64_t s5 = 5, s3 = 3, s10 = 10, s6 = 6, s2 = 2;
    int rc = !w || art_writer_tensor(w, "input_ids", ART_I64, 1, &s5, ids) ||
             art_writer_tensor(w, "input_offsets", ART_I64, 1, &s3, ioff) ||
             art_writer_tensor(w, "choice_ids", ART_I64, 1, &s10, cids) ||
             art_writer_tensor(w, "choice_offsets", ART_I64, 1, &s6, coff) ||
             art_writer_tensor(w, "example_choices", ART_I64, 1, &s3, ec) ||
             art_writer_tensor(w, "label", ART_I32, 1, &s2, lab) || art_writer_close(w);
    if (rc) die("%s", mc_error());
}

/* A tiny T5 (2 + 1 layers) written by t5_save_model. */
static void write_model(const char *path) {
    t5_config c = {.vocab_size = 16, .d_model = 4, .d_kv = 2, .d_ff = 6, .num_heads = 2, .num_layers = 2,
                   .num_decoder_layers = 1, .num_buckets = 8, .max_distance = 16, .eps = 1e-6f};
    t5_model *m = t5_new(&c, 0, 0);
    t5_init_random(m, 1);
    if (t5_save_model(m, path, "", NULL) < 0) die("%s", mc_error());
    t5_free(m);
}

/* u8 text "abcdef" cut into rows [ab][cde][f]. */
static void write_corpus(const char *path) {
    int64_t off[4] = {0, 2, 5, 6}, s6 = 6, s4 = 4;
    art_writer *w = art_writer_open(path, "corpus", "", NULL, 2);
    if (!w || art_writer_tensor(w, "text", ART_U8, 1, &s6, "abcdef") ||
        art_writer_tensor(w, "offsets", ART_I64, 1, &s4, off) || art_writer_close(w))
        die("%s", mc_error());
}

/* Poke `edits` into a copy of `src`; the copy's path in out. */
static void poked(const char *src, const char *name, char *out, size_t n, const char *const *edits, int ne) {
    path_in(out, n, name);
    if (poke(src, out, edits, ne) < 0) die("poke %s: %s", name, mc_error());
}

/* The refusal names every word of `want` (NULL-terminated). */
static int names_all(const char *const *want) {
    for (int i = 0; want[i]; i++)
        if (!strstr(mc_error(), want[i])) return 0;
    return !strchr(mc_error(), '\n');
}

/* tok_load(path, 1) refuses, naming every word of want. */
#define TOKENS_REFUSED(path, ...)                                                             \
    do {                                                                                      \
        tok_set *s_ = tok_load((path), 1);                                                    \
        CHECK(s_ == NULL, "%s loaded", (path));                                              \
        CHECK(names_all((const char *const[]){__VA_ARGS__, NULL}), "message: %s", mc_error()); \
        tok_free(s_);                                                                         \
    } while (0)

static char tokens_path[300];

/* ------------------------------------------------------------ tokens */

static void test_valid_tokens_load(void) {
    tok_set *s = tok_load(tokens_path, 1);
    CHECK(s != NULL, "%s", mc_error());
    if (!s) return;
    CHECK(s->n == 2 && s->n_choices == 5 && s->max_id == 9 && s->label[1] == 2, "n %lld choices %lld max %d",
          (long long)s->n, (long long)s->n_choices, s->max_id);
    tok_free(s);
}

/* One hostile element each (the cases first), refused with one line
 * naming the file, the tensor, the element and the value. */
static void test_hostile_token_elements_refused(void) {
    static const struct { const char *edit, *words[4]; } cases[] = {
        {"choice_ids[3]=-100000000", {"choice_ids", "element 3", "-100000000"}}, /* eval, fisher, gram: exit 139 */
        {"choice_ids[0]=-7", {"choice_ids", "element 0", "-7"}},                 /* read out of bounds, exit 0 */
        {"input_ids[1]=4294967301", {"input_ids", "element 1", "4294967301"}},   /* read as 5 */
        {"input_offsets[1]=99", {"input_offsets", "element 1", "99", "input_ids"}},
        {"choice_offsets[2]=-3", {"choice_offsets", "element 2", "-3"}},
        {"input_offsets[0]=1", {"input_offsets", "element 0"}},
        {"example_choices[2]=7", {"example_choices", "element 2", "choice_offsets"}},
        {"label[0]=2", {"label", "element 0", "2 choices"}},
        {"label[1]=-1", {"label", "element 1"}},
        {"choice_ids:f32", {"choice_ids", "dtype f32"}},
    };
    char p[300];
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        poked(tokens_path, "hostile.msgpack", p, sizeof p, &cases[i].edit, 1);
        tok_set *s = tok_load(p, 1);
        int named = !strchr(mc_error(), '\n') && strstr(mc_error(), "hostile.msgpack");
        for (int w = 0; w < 4 && cases[i].words[w]; w++) named = named && strstr(mc_error(), cases[i].words[w]);
        CHECK(s == NULL && named, "%s: %s", cases[i].edit, s ? "loaded" : mc_error());
        tok_free(s);
    }
}

static void test_example_choices_rows_checked(void) {
    /* one example_choices row per input row: two inputs, one example */
    char p[300];
    path_in(p, sizeof p, "ecrows.msgpack");
    int64_t ids[5] = {5, 6, 1, 7, 1}, ioff[3] = {0, 3, 5}, cids[2] = {8, 1}, coff[2] = {0, 2}, ec[2] = {0, 1};
    int32_t lab[1] = {0};
    int64_t s5 = 5, s3 = 3, s2 = 2, s1 = 1;
    art_writer *w = art_writer_open(p, "tokens", "", NULL, 6);
    CHECK(w && !art_writer_tensor(w, "input_ids", ART_I64, 1, &s5, ids) &&
              !art_writer_tensor(w, "input_offsets", ART_I64, 1, &s3, ioff) &&
              !art_writer_tensor(w, "choice_ids", ART_I64, 1, &s2, cids) &&
              !art_writer_tensor(w, "choice_offsets", ART_I64, 1, &s2, coff) &&
              !art_writer_tensor(w, "example_choices", ART_I64, 1, &s2, ec) &&
              !art_writer_tensor(w, "label", ART_I32, 1, &s1, lab) && !art_writer_close(w),
          "write: %s", mc_error());
    TOKENS_REFUSED(p, "ecrows.msgpack", "example_choices", "input_offsets", "one per row");
    /* and a task needs them at all */
    poked(tokens_path, "noec.msgpack", p, sizeof p, (const char *[]){"-example_choices"}, 1);
    TOKENS_REFUSED(p, "noec.msgpack", "example_choices", "needed");
}

/* ------------------------------------------------------------ other kinds */

static void test_corpus_offsets_past_the_text_refused(void) {
    char src[300], p[300];
    path_in(src, sizeof src, "corpus.msgpack");
    write_corpus(src);
    art_file *a = art_open(src, "corpus");
    CHECK(a != NULL, "valid corpus: %s", mc_error());
    art_close(a);
    poked(src, "corpus_off.msgpack", p, sizeof p, (const char *[]){"offsets[2]=60"}, 1);
    CHECK(art_open(p, "corpus") == NULL, "corpus with an offset past its text opened");
    CHECK(names_all((const char *const[]){"corpus_off.msgpack", "offsets", "element 2", "60", NULL}), "message: %s",
          mc_error());
    /* art show and verify read it too: the check is the kind's, not the caller's */
    CHECK(art_open(p, NULL) == NULL, "opened without naming the kind");
}

static void test_examples_rows_checked(void) {
    /* an examples artifact built from the tokens one's shape: text columns
     * of one byte per id */
    char src[300], p[300];
    path_in(src, sizeof src, "ex.msgpack");
    int64_t ioff[3] = {0, 3, 5}, coff[6] = {0, 2, 4, 6, 9, 10}, ec[3] = {0, 2, 5}, s5 = 5, s3 = 3, s10 = 10, s6 = 6,
            s2 = 2;
    int32_t lab[2] = {1, 2}, tpl[2] = {0, 1};
    art_writer *w = art_writer_open(src, "examples", "", NULL, 8);
    int rc = !w || art_writer_tensor(w, "input_text", ART_U8, 1, &s5, "abcde") ||
             art_writer_tensor(w, "input_offsets", ART_I64, 1, &s3, ioff) ||
             art_writer_tensor(w, "choice_text", ART_U8, 1, &s10, "0123456789") ||
             art_writer_tensor(w, "choice_offsets", ART_I64, 1, &s6, coff) ||
             art_writer_tensor(w, "example_choices", ART_I64, 1, &s3, ec) ||
             art_writer_tensor(w, "label", ART_I32, 1, &s2, lab) ||
             art_writer_tensor(w, "template", ART_I32, 1, &s2, tpl) ||
             art_writer_tensor(w, "source_offsets", ART_I64, 1, &s3, ioff) || art_writer_close(w);
    CHECK(rc == 0, "write: %s", mc_error());
    art_file *a = art_open(src, "examples");
    CHECK(a != NULL, "valid examples: %s", mc_error());
    art_close(a);
    struct { const char *edit, *want; } cases[] = {
        {"choice_offsets[4]=11", "choice_offsets"}, {"example_choices[1]=6", "example_choices"},
        {"label[1]=3", "label"}, {"-source_offsets", NULL}, {"template:i64", "template"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        poked(src, "ex_bad.msgpack", p, sizeof p, (const char *[]){cases[i].edit}, 1);
        a = art_open(p, "examples");
        if (cases[i].want) CHECK(a == NULL && strstr(mc_error(), cases[i].want), "%s: %s", cases[i].edit, mc_error());
        else CHECK(a != NULL, "%s: an absent optional tensor refused: %s", cases[i].edit, mc_error());
        art_close(a);
    }
    /* template must have one entry per row: a tensor one shorter */
    path_in(p, sizeof p, "ex_tpl.msgpack");
    w = art_writer_open(p, "examples", "", NULL, 3);
    int64_t s1 = 1;
    rc = !w || art_writer_tensor(w, "input_text", ART_U8, 1, &s5, "abcde") ||
         art_writer_tensor(w, "input_offsets", ART_I64, 1, &s3, ioff) ||
         art_writer_tensor(w, "template", ART_I32, 1, &s1, tpl) || art_writer_close(w);
    CHECK(rc == 0, "write: %s", mc_error());
    CHECK(art_open(p, "examples") == NULL && strstr(mc_error(), "template"), "short template: %s", mc_error());
}

/* train reads a checkpoint's weights into a buffer of n floats */
static void test_checkpoint_dtype_refused(void) {
    char p[300];
    path_in(p, sizeof p, "ckpt.msgpack");
    double x[4] = {1, 2, 3, 4};
    int64_t s4 = 4;
    art_writer *w = art_writer_open(p, "train_checkpoint", "", NULL, 1);
    CHECK(w && art_writer_tensor(w, "weights", ART_F64, 1, &s4, x) == 0 && art_writer_close(w) == 0, "write");
    CHECK(art_open(p, "train_checkpoint") == NULL && names_all((const char *const[]){"weights", "f64", NULL}),
          "message: %s", mc_error());
}

/* the [d, d] statistics, and dtypes readers copy into buffers of their own */
static void test_kind_rules(void) {
    char p[300];
    float x[6] = {0};
    int64_t sq[2] = {2, 3}, s2[1] = {2};
    const struct { const char *kind, *name, *want; art_dtype dt; int ndim; const int64_t *shape; } cases[] = {
        {"fisher_block", "a.ia3_vector", "square", ART_F32, 2, sq},
        {"gram", "a.input_gram", "square", ART_F32, 2, sq},
        {"gram", "a.output_grad_gram", "square", ART_F32, 2, sq},
        {"vocab", "model", "i32", ART_I32, 1, s2},
        {"vocab", "spiece.model", "f32", ART_F32, 1, s2},
        {"metrics", "choice_scores", "i32", ART_I32, 1, s2},
        {"metrics", "prediction", "f32", ART_F32, 1, s2},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        path_in(p, sizeof p, "rule.msgpack");
        art_writer *w = art_writer_open(p, cases[k].kind, "", NULL, 1);
        CHECK(w && art_writer_tensor(w, cases[k].name, cases[k].dt, cases[k].ndim, cases[k].shape, x) == 0 &&
                  art_writer_close(w) == 0,
              "write");
        CHECK(art_open(p, cases[k].kind) == NULL &&
                  names_all((const char *const[]){"rule.msgpack", cases[k].name, cases[k].want, NULL}),
              "%s %s: %s", cases[k].kind, cases[k].name, mc_error());
    }
}

/* ------------------------------------------------------------ models */

static char model_path[300];

static void test_model_config_checked_before_allocating(void) {
    char p[300];
    t5_model *m = t5_load_model(model_path, 0, 0, NULL);
    CHECK(m != NULL, "valid model: %s", mc_error());
    t5_free(m);
    /* d_model 2^32 + 4 was cut to 4 and matched the tensors */
    poked(model_path, "m_trunc.msgpack", p, sizeof p, (const char *[]){"meta.config.d_model=4294967300"}, 1);
    CHECK(t5_load_model(p, 0, 0, NULL) == NULL && names_all((const char *const[]){"m_trunc.msgpack", "d_model", NULL}),
          "message: %s", mc_error());
    /* 2^30 layers: the tables alone would take hundreds of GB */
    poked(model_path, "m_layers.msgpack", p, sizeof p, (const char *[]){"meta.config.num_layers=1073741824"}, 1);
    CHECK(t5_load_model(p, 0, 0, NULL) == NULL && names_all((const char *const[]){"m_layers.msgpack", "layers", NULL}),
          "message: %s", mc_error());
    /* a config that is in range but is not this file's */
    poked(model_path, "m_dff.msgpack", p, sizeof p, (const char *[]){"meta.config.d_ff=100000"}, 1);
    CHECK(t5_load_model(p, 0, 0, NULL) == NULL &&
              names_all((const char *const[]){"m_dff.msgpack", "DenseReluDense.wi_0.weight", "shape", NULL}),
          "message: %s", mc_error());
    /* num_heads x d_kv past int */
    poked(model_path, "m_hk.msgpack", p, sizeof p,
          (const char *[]){"meta.config.num_heads=65536", "meta.config.d_kv=65536"}, 2);
    CHECK(t5_load_model(p, 0, 0, NULL) == NULL, "num_heads x d_kv = 2^32 accepted");
}

/* the parameter table is sized by the layer counts: 8 + 16 * 2^31 in an int */
static void test_export_config_checked(void) {
    char p[300], out[300];
    path_in(out, sizeof out, "export");
    poked(model_path, "m_exp.msgpack", p, sizeof p,
          (const char *[]){"meta.config.num_layers=1073741824", "meta.config.num_decoder_layers=1073741824"}, 2);
    CHECK(hf_export(p, out, NULL) < 0 && names_all((const char *const[]){"m_exp.msgpack", "layers", NULL}),
          "message: %s", mc_error());
    poked(model_path, "m_exp2.msgpack", p, sizeof p, (const char *[]){"meta.config.d_model=1099511627776"}, 1);
    CHECK(hf_export(p, out, NULL) < 0 && names_all((const char *const[]){"m_exp2.msgpack", "d_model", NULL}),
          "message: %s", mc_error());
}

/* ------------------------------------------------------------ writers */

static int is_fifo(const char *p) {
    struct stat st;
    return lstat(p, &st) == 0 && S_ISFIFO(st.st_mode);
}

static void test_writer_refuses_what_is_not_a_regular_file(void) {
    char p[300], link[300];
    path_in(p, sizeof p, "fifo");
    unlink(p);
    CHECK(mkfifo(p, 0666) == 0, "mkfifo: %s", strerror(errno));
    CHECK(mc_output_ok(p) < 0 && names_all((const char *const[]){"fifo", "pipe", NULL}), "message: %s", mc_error());
    art_writer *w = art_writer_open(p, "model", "", NULL, 0);
    CHECK(w == NULL, "a writer opened over a FIFO");
    if (w) art_writer_close(w);
    CHECK(is_fifo(p), "the FIFO was replaced");
    /* through a link: what it points to counts */
    path_in(link, sizeof link, "link-to-fifo");
    unlink(link);
    CHECK(symlink(p, link) == 0, "symlink");
    CHECK(art_writer_open(link, "model", "", NULL, 0) == NULL, "a writer opened over a link to a FIFO");
    CHECK(mc_output_ok(dir) < 0 && strstr(mc_error(), "directory"), "a directory accepted: %s", mc_error());
    CHECK(mc_output_ok("/dev/null") < 0 && strstr(mc_error(), "device"), "/dev/null accepted: %s", mc_error());
    path_in(p, sizeof p, "missing/deeper.msgpack");
    CHECK(mc_output_ok(p) == 0, "a path that does not exist yet refused: %s", mc_error());
    CHECK(mc_output_ok(tokens_path) == 0, "a regular file refused: %s", mc_error());
}

/* the target became a FIFO while the writer ran: the rename is refused */
static void test_writer_checks_again_at_close(void) {
    char p[300], tmp[400];
    path_in(p, sizeof p, "late.msgpack");
    unlink(p);
    art_writer *w = art_writer_open(p, "model", "", NULL, 0);
    CHECK(w != NULL, "open: %s", mc_error());
    if (!w) return;
    CHECK(mkfifo(p, 0666) == 0, "mkfifo");
    CHECK(art_writer_close(w) < 0 && strstr(mc_error(), "pipe"), "close over a FIFO: %s", mc_error());
    CHECK(is_fifo(p), "the FIFO was replaced");
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    CHECK(access(tmp, F_OK) != 0, "temporary file left behind");
}

/* a link planted at the temporary path is replaced, never written through */
static void test_writer_does_not_follow_a_planted_link(void) {
    char p[300], tmp[400], victim[300];
    path_in(p, sizeof p, "planted.msgpack");
    path_in(victim, sizeof victim, "victim.txt");
    FILE *f = fopen(victim, "w");
    fputs("keep", f);
    fclose(f);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    unlink(tmp);
    CHECK(symlink(victim, tmp) == 0, "symlink");
    art_writer *w = art_writer_open(p, "model", "", NULL, 0);
    CHECK(w && art_writer_close(w) == 0, "write: %s", mc_error());
    unsigned char *b;
    size_t n;
    CHECK(mc_read_file(victim, &b, &n) == 0 && n == 4 && !memcmp(b, "keep", 4), "the link's target was written");
    free(b);
    art_file *a = art_open(p, "model");
    CHECK(a != NULL, "the artifact: %s", mc_error());
    art_close(a);
}

static void test_export_refuses_before_writing(void) {
    char out[300], p[300];
    path_in(out, sizeof out, "export2");
    mkdir(out, 0777);
    path_in(p, sizeof p, "export2/config.json");
    unlink(p);
    CHECK(mkfifo(p, 0666) == 0, "mkfifo");
    CHECK(hf_export(model_path, out, NULL) < 0 && names_all((const char *const[]){"config.json", "pipe", NULL}),
          "message: %s", mc_error());
    path_in(p, sizeof p, "export2/model.safetensors");
    CHECK(access(p, F_OK) != 0, "model.safetensors written before the refusal");
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    T_TOOL_MODE(argc >= 4 && !strcmp(argv[1], "--poke"), poke(argv[2], argv[3], (const char *const *)argv + 4, argc - 4));
    if (argc == 3 && !strcmp(argv[1], "--write-samples")) {
        snprintf(dir, sizeof dir, "%s", argv[2]);
        path_in(tokens_path, sizeof tokens_path, "tokens.msgpack");
        write_tokens(tokens_path);
        path_in(tokens_path, sizeof tokens_path, "corpus.msgpack");
        write_corpus(tokens_path);
        return 0;
    }
    t_tmpdir(dir, sizeof dir, "test_loaders");
    path_in(tokens_path, sizeof tokens_path, "tokens.msgpack");
    write_tokens(tokens_path);
    path_in(model_path, sizeof model_path, "model.msgpack");
    write_model(model_path);
    RUN(test_valid_tokens_load);
    RUN(test_hostile_token_elements_refused);
    RUN(test_example_choices_rows_checked);
    RUN(test_corpus_offsets_past_the_text_refused);
    RUN(test_examples_rows_checked);
    RUN(test_checkpoint_dtype_refused);
    RUN(test_kind_rules);
    RUN(test_model_config_checked_before_allocating);
    RUN(test_export_config_checked);
    RUN(test_writer_refuses_what_is_not_a_regular_file);
    RUN(test_writer_checks_again_at_close);
    RUN(test_writer_does_not_follow_a_planted_link);
    RUN(test_export_refuses_before_writing);
    return t_done_rm(dir);
}
