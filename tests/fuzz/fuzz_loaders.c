/* fuzz_loaders.c - structure-aware libFuzzer target for the loaders of every
 * artifact kind (`make fuzz`, and a short pass in tests/test_fuzz.sh).
 *
 * fuzz_art.c feeds the reader raw bytes; this target instead reads its input
 * as a recipe: the first byte picks a kind, the next ones the sizes of a
 * well-formed artifact of that kind (ragged token rows, a tiny T5 config, a
 * SentencePiece protobuf, ...), and the rest a list of hostile edits (an id
 * or offset set to an edge value, a dtype changed, a tensor dropped or cut,
 * a shape or meta.config entry replaced). The result is written by the
 * artifact writer (so its checksum is valid; to a tmpfs file, where fsync
 * costs nothing) and handed, by path, to the loaders the stages use:
 * tok_load, t5_load_model, t5_load_ia3_key, art_open with the kind,
 * spm_load_buffer for vocabularies. (Bytes that are not a well-formed
 * artifact are fuzz_art.c's.) Under ASan + UBSan any
 * out-of-bounds access, overflow or huge allocation is a crash; a loader
 * that accepts what it should have refused trips the oracle checks below
 * (abort). Every refusal must be one line.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "spm.h"
#include "t5.h"
#include "tokens.h"
#include "val.h"

/* ------------------------------------------------------------ the recipe */

typedef struct {
    const uint8_t *p;
    size_t n;
} fz;

/* nbytes little-endian bytes of the recipe; 0 once it is used up. */
static uint64_t take(fz *f, int nbytes) {
    uint64_t v = 0;
    for (int i = 0; i < nbytes && f->n; i++, f->p++, f->n--) v |= (uint64_t)*f->p << (8 * i);
    return v;
}
static uint64_t below(fz *f, uint64_t n) { return n ? take(f, n <= 256 ? 1 : n <= 65536 ? 2 : 4) % n : 0; }
/* true with probability k/256 while the recipe lasts */
static int chance(fz *f, unsigned k) { return f->n && take(f, 1) < k; }

static const int64_t EDGES[] = {
    0, 1, -1, 2, 3, -7, -100000000, 255, 256, 65535, 65536, INT32_MAX, (int64_t)INT32_MAX + 1,
    INT32_MIN, (int64_t)INT32_MIN - 1, (int64_t)1 << 32, (int64_t)1 << 40, (int64_t)1 << 62,
    INT64_MAX, INT64_MIN, INT64_MIN + 1,
};
#define N_EDGES (sizeof EDGES / sizeof *EDGES)

/* A value near `near`, an edge value, or any 64 bits. */
static int64_t hostile(fz *f, int64_t near) {
    switch (below(f, 4)) {
    case 0: return EDGES[below(f, N_EDGES)];
    case 1: return (int64_t)((uint64_t)near + below(f, 7) - 3); /* wraps at the edges */
    case 2: return (int64_t)take(f, 8);
    default: return -(int64_t)below(f, 4) - 1;
    }
}

/* ------------------------------------------------------------ artifacts */

#define MAX_TENSORS 160

typedef struct {
    char name[128];
    art_dtype dtype;
    int ndim;
    int64_t shape[ART_MAX_DIMS];
    unsigned char *data;
    size_t nbytes;
} ftensor;

typedef struct {
    char kind[32];
    mc_val *meta;
    int n;
    ftensor t[MAX_TENSORS];
} fart;

static size_t dsize(art_dtype d) { return art_dtype_size(d); }

static ftensor *add_tensor(fart *a, const char *name, art_dtype dtype, int ndim, const int64_t *shape) {
    if (a->n == MAX_TENSORS) return NULL;
    ftensor *t = &a->t[a->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dtype;
    t->ndim = ndim;
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= (size_t)(t->shape[i] = shape[i]);
    t->nbytes = numel * dsize(dtype);
    t->data = calloc(t->nbytes ? t->nbytes : 1, 1);
    return t;
}

static int64_t get_elem(const ftensor *t, size_t i) {
    const unsigned char *p = t->data + i * dsize(t->dtype);
    switch (t->dtype) {
    case ART_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case ART_I64: { int64_t v; memcpy(&v, p, 8); return v; }
    case ART_F32: { float v; memcpy(&v, p, 4); return isfinite(v) && fabsf(v) < 9e18f ? (int64_t)v : 0; }
    case ART_F64: { double v; memcpy(&v, p, 8); return isfinite(v) && fabs(v) < 9e18 ? (int64_t)v : 0; }
    case ART_U8: return p[0];
    }
    return 0;
}

/* Store v in element i, in the tensor's dtype (truncating as a cast does). */
static void set_elem(ftensor *t, size_t i, int64_t v) {
    unsigned char *p = t->data + i * dsize(t->dtype);
    switch (t->dtype) {
    case ART_I32: { int32_t x = (int32_t)(uint32_t)(uint64_t)v; memcpy(p, &x, 4); break; }
    case ART_I64: memcpy(p, &v, 8); break;
    case ART_F32: { float x = (float)v; memcpy(p, &x, 4); break; }
    case ART_F64: { double x = (double)v; memcpy(p, &x, 8); break; }
    case ART_U8: p[0] = (unsigned char)v; break;
    }
}

static ftensor *add_ints(fart *a, const char *name, art_dtype dtype, const int64_t *v, size_t n) {
    int64_t sh[1] = {(int64_t)n};
    ftensor *t = add_tensor(a, name, dtype, 1, sh);
    if (t)
        for (size_t i = 0; i < n; i++) set_elem(t, i, v[i]);
    return t;
}

static ftensor *add_floats(fart *a, fz *f, const char *name, int ndim, const int64_t *shape) {
    ftensor *t = add_tensor(a, name, ART_F32, ndim, shape);
    if (!t) return NULL;
    for (size_t i = 0; i < t->nbytes / 4; i++) {
        float x = (float)((int)below(f, 200) - 100) / 50.0f;
        memcpy(t->data + 4 * i, &x, 4);
    }
    return t;
}

static void drop_tensor(fart *a, int i) {
    free(a->t[i].data);
    memmove(&a->t[i], &a->t[i + 1], (size_t)(a->n - i - 1) * sizeof a->t[0]);
    a->n--;
}

static void fart_free(fart *a) {
    for (int i = 0; i < a->n; i++) free(a->t[i].data);
    val_free(a->meta);
    a->n = 0;
    a->meta = NULL;
}

/* Re-type a tensor, converting its values. */
static void retype(ftensor *t, art_dtype dtype) {
    size_t n = t->nbytes / dsize(t->dtype);
    ftensor u = *t;
    u.dtype = dtype;
    u.nbytes = n * dsize(dtype);
    u.data = calloc(u.nbytes ? u.nbytes : 1, 1);
    for (size_t i = 0; i < n; i++) set_elem(&u, i, get_elem(t, i));
    free(t->data);
    *t = u;
}

/* A hostile value for a meta entry. */
static mc_val *hostile_val(fz *f) {
    switch (below(f, 6)) {
    case 0: return val_float((double)hostile(f, 0) / (double)(1 + below(f, 3)));
    case 1: return val_str("x");
    case 2: return val_nil();
    case 3: { mc_val *v = val_int(0); v->type = VAL_UINT; v->v.u = (uint64_t)INT64_MAX + 1 + take(f, 4); return v; }
    case 4: return val_float(below(f, 2) ? NAN : INFINITY);
    default: return val_int(hostile(f, 1));
    }
}

/* Apply up to 4 hostile edits picked by the recipe. `meta_map` is the map
 * whose entries an edit may replace (meta itself or meta.config). */
static void mutate(fz *f, fart *a, mc_val *meta_map) {
    int rounds = (int)below(f, 5);
    for (int r = 0; r < rounds && a->n; r++) {
        ftensor *t = &a->t[below(f, (uint64_t)a->n)];
        size_t numel = t->nbytes / dsize(t->dtype);
        switch (below(f, 8)) {
        case 0: case 1: case 2: /* poke an element */
            if (numel) {
                size_t i = (size_t)below(f, numel);
                set_elem(t, i, hostile(f, get_elem(t, i)));
            }
            break;
        case 3: /* another dtype, same values */
            retype(t, (art_dtype)below(f, 5));
            break;
        case 4: /* drop a tensor */
            drop_tensor(a, (int)(t - a->t));
            break;
        case 5: /* one element fewer or more (shape kept consistent) */
            if (t->ndim == 1) {
                size_t es = dsize(t->dtype);
                size_t m = below(f, 2) && numel ? numel - 1 : numel + 1;
                t->data = realloc(t->data, m * es + 1);
                if (m > numel) memset(t->data + numel * es, 0, es);
                t->shape[0] = m;
                t->nbytes = m * es;
            }
            break;
        case 6: /* another shape for the same elements */
            if (numel >= 2 && numel % 2 == 0) {
                t->ndim = 2;
                t->shape[0] = 2;
                t->shape[1] = (int64_t)(numel / 2);
            } else {
                t->ndim = 1;
                t->shape[0] = (int64_t)numel;
            }
            break;
        default: /* a meta entry */
            if (meta_map && meta_map->v.c.n) {
                size_t k = (size_t)below(f, meta_map->v.c.n);
                val_free(meta_map->v.c.items[k]);
                meta_map->v.c.items[k] = hostile_val(f);
            }
            break;
        }
    }
}

static char apath[256];

static void remove_apath(void) {
    unlink(apath);
    char *slash = strrchr(apath, '/');
    if (slash) *slash = 0;
    rmdir(apath);
}

/* Write the artifact with the artifact writer (a valid checksum) to apath. */
static void write_art(const fart *a) {
    art_writer *w = art_writer_open(apath, a->kind, "", a->meta, (size_t)a->n);
    for (int i = 0; w && i < a->n; i++) {
        const ftensor *t = &a->t[i];
        if (art_writer_tensor(w, t->name, t->dtype, t->ndim, t->shape, t->data) < 0) {
            art_writer_abort(w);
            w = NULL;
        }
    }
    if (!w || art_writer_close(w) < 0) {
        fprintf(stderr, "fuzz_loaders: cannot write %s: %s\n", apath, mc_error());
        abort();
    }
}

/* A refusal must be one line naming the artifact. */
static void check_error(void) {
    const char *e = mc_error();
    if (strchr(e, '\n') || !*e) {
        fprintf(stderr, "refusal is not one line: '%s'\n", e);
        abort();
    }
}

#define ORACLE(cond)                                                                       \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: a loader accepted what it must refuse: %s\n", __FILE__, \
                    __LINE__, #cond);                                                      \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* Ragged rows: n rows of lengths in [lo, hi]; offsets (n+1). */
static int64_t *ragged_offsets(fz *f, size_t n, int lo, int hi, int64_t *total) {
    int64_t *off = malloc(sizeof *off * (n + 1));
    off[0] = 0;
    for (size_t i = 0; i < n; i++) off[i + 1] = off[i] + lo + (int64_t)below(f, (uint64_t)(hi - lo + 1));
    *total = off[n];
    return off;
}

/* ------------------------------------------------------------ tokens */

static void gen_tokens(fz *f, fart *a) {
    snprintf(a->kind, sizeof a->kind, "tokens");
    a->meta = val_map();
    val_set_str(a->meta, "task", "t");
    val_set_str(a->meta, "split", "test");
    art_dtype idt = below(f, 2) ? ART_I32 : ART_I64;
    size_t n = (size_t)below(f, 6);
    int64_t nid, nch = 0, ncid;
    int64_t *ioff = ragged_offsets(f, n, 1, 5, &nid);
    int64_t *ids = malloc(sizeof *ids * (size_t)(nid + 1));
    for (int64_t i = 0; i < nid; i++) ids[i] = 2 + (int64_t)below(f, 30);
    for (size_t i = 0; i < n; i++) ids[ioff[i + 1] - 1] = T5_EOS;
    add_ints(a, "input_ids", idt, ids, (size_t)nid);
    add_ints(a, "input_offsets", ART_I64, ioff, n + 1);
    if (!chance(f, 32)) { /* a task, not a corpus */
        int64_t *ec = ragged_offsets(f, n, 1, 3, &nch);
        int64_t *coff = ragged_offsets(f, (size_t)nch, 1, 3, &ncid);
        int64_t *cids = malloc(sizeof *cids * (size_t)(ncid + 1));
        for (int64_t i = 0; i < ncid; i++) cids[i] = 2 + (int64_t)below(f, 30);
        int64_t *lab = malloc(sizeof *lab * (n + 1));
        for (size_t i = 0; i < n; i++) lab[i] = (int64_t)below(f, (uint64_t)(ec[i + 1] - ec[i]));
        add_ints(a, "choice_ids", idt, cids, (size_t)ncid);
        add_ints(a, "choice_offsets", ART_I64, coff, (size_t)nch + 1);
        add_ints(a, "example_choices", ART_I64, ec, n + 1);
        add_ints(a, "label", ART_I32, lab, n);
        free(ec), free(coff), free(cids), free(lab);
    }
    free(ioff), free(ids);
}

/* Everything a stage reads of a loaded tok_set, checked. */
static void use_tokens(const tok_set *s) {
    ORACLE(s->n >= 0 && s->input_off[0] == 0);
    for (int64_t i = 0; i < s->n; i++) {
        ORACLE(s->input_off[i + 1] >= s->input_off[i]);
        const int *x = tok_input(s, i);
        for (int j = 0; j < tok_input_len(s, i); j++) ORACLE(x[j] >= 0 && x[j] <= s->max_id);
    }
    if (!s->choice_ids) return;
    ORACLE(s->ex_choices[0] == 0 && s->ex_choices[s->n] == s->n_choices);
    for (int64_t c = 0; c < s->n_choices; c++) {
        ORACLE(tok_choice_len(s, c) >= 1);
        const int *y = tok_choice(s, c);
        for (int j = 0; j < tok_choice_len(s, c); j++) ORACLE(y[j] >= 0 && y[j] <= s->max_id);
    }
    tok_batch tb;
    tok_batch_init(&tb, 2, 8, 8, 4);
    for (int64_t i = 0; i < s->n; i++) {
        int64_t c0 = s->ex_choices[i], nc = s->ex_choices[i + 1] - c0;
        ORACLE(nc >= 1 && c0 >= 0 && c0 + nc <= s->n_choices);
        ORACLE(s->label[i] >= 0 && s->label[i] < nc);
        /* one example and up to 8 of its choices, as tok_rank batches them */
        const int *ins[1] = {tok_input(s, i)};
        int nins[1] = {tok_input_len(s, i)};
        const int *outs[8];
        int nouts[8], de[8];
        int nd = nc < 8 ? (int)nc : 8;
        for (int k = 0; k < nd; k++) {
            outs[k] = tok_choice(s, c0 + k);
            nouts[k] = tok_choice_len(s, c0 + k);
            de[k] = 0;
        }
        tok_batch_fill(&tb, 1, ins, nins, nd, outs, nouts, de, 0, 0);
    }
    tok_batch_free(&tb);
}

/* ------------------------------------------------------------ T5 kinds */

static void tiny_config(fz *f, t5_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 8 + (int)below(f, 8);
    c->d_model = 1 + (int)below(f, 4);
    c->d_kv = 1 + (int)below(f, 2);
    c->d_ff = 1 + (int)below(f, 4);
    c->num_heads = 1 + (int)below(f, 2);
    c->num_layers = 1 + (int)below(f, 2);
    c->num_decoder_layers = 1 + (int)below(f, 2);
    c->num_buckets = 4 + (int)below(f, 4);
    c->max_distance = c->num_buckets / 2 + 1 + (int)below(f, 4);
    c->eps = 1e-6f;
}

static void gen_model(fz *f, fart *a, const t5_config *c) {
    snprintf(a->kind, sizeof a->kind, "model");
    a->meta = val_map();
    val_set(a->meta, "config", t5_config_to_val(c));
    t5_model *m = t5_new(c, 0, 0);
    for (int i = 0; i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        int64_t sh[2] = {t->shape[0], t->shape[1]};
        add_floats(a, f, t->name, t->ndim, sh);
    }
    t5_free(m);
}

static void gen_ia3(fz *f, fart *a, const t5_model *m) {
    snprintf(a->kind, sizeof a->kind, "ia3");
    a->meta = val_map();
    val_set_str(a->meta, "base", below(f, 4) ? "" : "0123456789abcdef0123456789abcdef");
    for (int i = 0; i < m->n_ia3_tensors; i++) {
        const t5_tensor *t = &m->ia3_tensors[i];
        int64_t sh[1] = {t->numel};
        add_floats(a, f, t->name, 1, sh);
    }
}

/* Statistics shaped like the parameters of a model: fisher_diag (same
 * shapes), fisher_block ([d, d] per IA3 vector), gram ([in, in] and
 * [out, out] per linear). */
static void gen_stat(fz *f, fart *a, const t5_model *m, int which) {
    static const char *const KIND[3] = {"fisher_diag", "fisher_block", "gram"};
    snprintf(a->kind, sizeof a->kind, "%s", KIND[which]);
    a->meta = val_map();
    val_set_int(a->meta, "n_examples", 4);
    const t5_tensor *tab = which == 1 ? m->ia3_tensors : m->tensors;
    int nt = which == 1 ? m->n_ia3_tensors : m->n_tensors;
    for (int i = 0; i < nt; i++) {
        const t5_tensor *t = &tab[i];
        if (which == 0) {
            int64_t sh[2] = {t->shape[0], t->shape[1]};
            add_floats(a, f, t->name, t->ndim, sh);
        } else if (which == 1) {
            int64_t sh[2] = {t->numel, t->numel};
            add_floats(a, f, t->name, 2, sh);
        } else if (t->ndim == 2 && !strstr(t->name, "relative_attention_bias") && strcmp(t->name, "shared.weight")) {
            char nm[160];
            size_t base = strlen(t->name) - strlen(".weight");
            int64_t si[2] = {t->shape[1], t->shape[1]};
            int64_t so[2] = {t->shape[0], t->shape[0]};
            snprintf(nm, sizeof nm, "%.*s.input_gram", (int)base, t->name);
            add_floats(a, f, nm, 2, si);
            snprintf(nm, sizeof nm, "%.*s.output_grad_gram", (int)base, t->name);
            add_floats(a, f, nm, 2, so);
        }
    }
}

/* ------------------------------------------------------------ text kinds */

/* A u8 text column and its offsets: n rows of words. */
static void add_text(fz *f, fart *a, const char *tname, const char *oname, size_t n) {
    int64_t total;
    int64_t *off = ragged_offsets(f, n, 0, 6, &total);
    int64_t sh[1] = {total};
    ftensor *t = add_tensor(a, tname, ART_U8, 1, sh);
    for (int64_t i = 0; t && i < total; i++) t->data[i] = (unsigned char)("ab c\n\xe2\x96\x81"[below(f, 7)]);
    add_ints(a, oname, ART_I64, off, n + 1);
    free(off);
}

static void gen_examples(fz *f, fart *a) {
    snprintf(a->kind, sizeof a->kind, "examples");
    a->meta = val_map();
    val_set_str(a->meta, "task", "t");
    size_t n = (size_t)below(f, 5);
    int64_t nch;
    int64_t *ec = ragged_offsets(f, n, 1, 3, &nch);
    int64_t *lab = malloc(sizeof *lab * (n + 1)), *tpl = malloc(sizeof *tpl * (n + 1));
    for (size_t i = 0; i < n; i++) {
        lab[i] = (int64_t)below(f, (uint64_t)(ec[i + 1] - ec[i]));
        tpl[i] = (int64_t)below(f, 3);
    }
    add_text(f, a, "input_text", "input_offsets", n);
    add_text(f, a, "choice_text", "choice_offsets", (size_t)nch);
    add_ints(a, "example_choices", ART_I64, ec, n + 1);
    add_ints(a, "label", ART_I32, lab, n);
    add_ints(a, "template", ART_I32, tpl, n);
    add_ints(a, "example", ART_I32, tpl, n);
    add_text(f, a, "source_text", "source_offsets", n);
    free(ec), free(lab), free(tpl);
}

static void gen_corpus(fz *f, fart *a) {
    snprintf(a->kind, sizeof a->kind, "corpus");
    a->meta = val_map();
    val_set_int(a->meta, "n_lines", 3);
    add_text(f, a, "text", "offsets", (size_t)below(f, 6));
}

/* The i64 offsets `oname` must cut the tensor `tname` (of `count` entries)
 * into rows: what prepare --dump, tokenize and auxtask index with. */
static const int64_t *rows_of(const art_file *a, const char *oname, int64_t count, int64_t *n) {
    const art_tensor *o = art_find(a, oname);
    if (!o) return NULL;
    ORACLE(o->dtype == ART_I64 && o->ndim == 1 && o->numel >= 1);
    int64_t *off = malloc((size_t)o->nbytes);
    art_tensor_copy(o, off);
    ORACLE(off[0] == 0);
    for (int64_t i = 0; i + 1 < o->numel; i++) ORACLE(off[i] <= off[i + 1]);
    ORACLE(count < 0 || off[o->numel - 1] == count);
    *n = o->numel - 1;
    return off;
}

static int64_t numel_of(const art_file *a, const char *name) {
    const art_tensor *t = art_find(a, name);
    return t ? t->numel : -1;
}

static void use_text_kind(const art_file *a) {
    int64_t n = 0, m = 0, k = 0;
    if (!strcmp(a->kind, "corpus")) {
        free((void *)rows_of(a, "offsets", numel_of(a, "text"), &n));
        return;
    }
    const int64_t *io = rows_of(a, "input_offsets", numel_of(a, "input_text"), &n);
    const int64_t *co = rows_of(a, "choice_offsets", numel_of(a, "choice_text"), &m);
    const int64_t *so = rows_of(a, "source_offsets", numel_of(a, "source_text"), &k);
    const int64_t *ec = rows_of(a, "example_choices", co ? m : -1, &k);
    const art_tensor *lb = art_find(a, "label");
    if (io && so) ORACLE(numel_of(a, "source_offsets") == n + 1);
    if (io && ec) ORACLE(k == n);
    if (ec && lb) {
        ORACLE(lb->dtype == ART_I32 && lb->numel == k);
        for (int64_t i = 0; i < k; i++) {
            int32_t l;
            memcpy(&l, lb->data + 4 * i, 4);
            ORACLE(l >= 0 && l < ec[i + 1] - ec[i]);
        }
    }
    const char *per_row[2] = {"template", "example"};
    for (int j = 0; j < 2 && io; j++)
        if (art_find(a, per_row[j])) ORACLE(numel_of(a, per_row[j]) == n);
    free((void *)io), free((void *)co), free((void *)so), free((void *)ec);
}

/* ------------------------------------------------------------ vocabularies */

typedef struct {
    unsigned char *b;
    size_t n, cap;
} pbuf;

static void pb_put(pbuf *p, const void *s, size_t n) {
    if (p->n + n > p->cap) p->b = realloc(p->b, p->cap = (p->n + n) * 2 + 64);
    memcpy(p->b + p->n, s, n);
    p->n += n;
}
static void pb_var(pbuf *p, uint64_t v) {
    unsigned char b[10];
    int k = 0;
    do { b[k] = (unsigned char)(v & 0x7f); v >>= 7; if (v) b[k] |= 0x80; k++; } while (v);
    pb_put(p, b, (size_t)k);
}
static void pb_key(pbuf *p, unsigned field, unsigned wire) { pb_var(p, field << 3 | wire); }
static void pb_bytes(pbuf *p, unsigned field, const void *s, size_t n) {
    pb_key(p, field, 2);
    pb_var(p, n);
    pb_put(p, s, n);
}

/* A SentencePiece ModelProto (lib/spm.h): T5's special pieces, a few
 * pieces over a small alphabet, a trainer_spec whose ids the recipe may
 * make hostile, and a precompiled charsmap built from recipe bytes. */
static void gen_spm(fz *f, pbuf *out) {
    static const char *const SPECIAL[3] = {"<pad>", "</s>", "<unk>"};
    static const int SPECIAL_TYPE[3] = {SPM_CONTROL, SPM_CONTROL, SPM_UNKNOWN};
    int np = 3 + (int)below(f, 12);
    for (int i = 0; i < np; i++) {
        pbuf pc = {0};
        char s[16];
        int type;
        if (i < 3) {
            snprintf(s, sizeof s, "%s", SPECIAL[i]);
            type = SPECIAL_TYPE[i];
        } else if (chance(f, 16)) {
            snprintf(s, sizeof s, "<0x%02X>", (unsigned)below(f, 256));
            type = SPM_BYTE;
        } else {
            int len = 1 + (int)below(f, 3);
            for (int k = 0; k < len; k++) s[k] = "abc "[below(f, 4)];
            s[len] = 0;
            type = chance(f, 16) ? (int)below(f, 8) : SPM_NORMAL;
        }
        pb_bytes(&pc, 1, s, strlen(s));
        pb_key(&pc, 2, 5);
        float sc = -(float)below(f, 100) / 10.0f;
        pb_put(&pc, &sc, 4);
        pb_key(&pc, 3, 0);
        pb_var(&pc, (uint64_t)type);
        pb_bytes(out, 1, pc.b, pc.n);
        free(pc.b);
    }
    pbuf ts = {0};
    static const unsigned ID_FIELDS[4] = {40, 41, 42, 43};
    static const int64_t T5_IDS[4] = {2, -1, 1, 0};
    pb_key(&ts, 3, 0);
    pb_var(&ts, chance(f, 8) ? below(f, 5) : 1);
    for (int k = 0; k < 4; k++) {
        pb_key(&ts, ID_FIELDS[k], 0);
        pb_var(&ts, (uint64_t)(chance(f, 32) ? hostile(f, T5_IDS[k]) : T5_IDS[k]));
    }
    if (chance(f, 16)) { pb_key(&ts, 35, 0); pb_var(&ts, 1); }
    pb_bytes(out, 2, ts.b, ts.n);
    free(ts.b);
    if (chance(f, 128)) {
        /* u32 trie size | double-array units | NUL-separated replacements */
        pbuf cm = {0}, ns = {0};
        uint32_t units = (uint32_t)below(f, 24);
        uint32_t tsize = chance(f, 16) ? (uint32_t)take(f, 4) : 4 * units;
        pb_put(&cm, &tsize, 4);
        for (uint32_t u = 0; u < units; u++) {
            uint32_t x = (uint32_t)take(f, 4);
            pb_put(&cm, &x, 4);
        }
        size_t nr = (size_t)below(f, 12);
        for (size_t r = 0; r < nr; r++) {
            char ch = "ab \0"[below(f, 4)];
            pb_put(&cm, &ch, 1);
        }
        pb_bytes(&ns, 2, cm.b, cm.n);
        pb_bytes(out, 3, ns.b, ns.n);
        free(cm.b), free(ns.b);
    }
}

/* 1 when the vocabulary's SentencePiece model loaded. */
static int use_spm(fz *f, const art_file *a) {
    const art_tensor *t = art_find(a, "model");
    if (!t) t = art_find(a, "spiece.model");
    if (!t) return 0;
    ORACLE(t->dtype == ART_U8);
    spm_model *m = spm_load_buffer(t->data, t->nbytes, a->path);
    if (!m) { check_error(); return 0; }
    if (spm_check_t5_ids(m, a->path) < 0) check_error();
    char text[32];
    size_t n = (size_t)below(f, sizeof text);
    for (size_t i = 0; i < n; i++) text[i] = "ab c\xe2\x96\x81\xff"[below(f, 8)];
    spm_ws w = {0};
    spm_encode(m, text, n, &w);
    for (size_t i = 0; i < w.n_ids; i++) ORACLE(w.ids[i] >= 0 && w.ids[i] < spm_size(m));
    spm_ws_free(&w);
    spm_free(m);
    return 1;
}

/* ------------------------------------------------------------ the target */

/* Every tensor of a loaded artifact, as a stage converts it. */
static void touch(const art_file *a) {
    for (size_t i = 0; i < a->n_tensors; i++) free(art_tensor_f32(&a->tensors[i]));
}

enum { K_TOKENS, K_MODEL, K_IA3, K_FDIAG, K_FBLOCK, K_GRAM, K_METRICS, K_VOCAB, K_EXAMPLES, K_CORPUS, K_CKPT, K_N };
static const char *const KIND_NAMES[K_N] = {"tokens", "model", "ia3", "fisher_diag", "fisher_block", "gram",
                                            "metrics", "vocab", "examples", "corpus", "train_checkpoint"};

/* Runs and acceptances per kind, printed at exit when FUZZ_LOADERS_STATS
 * is set (is every kind reached, and do its loaders sometimes accept?). */
static long n_runs[K_N], n_accepted[K_N];
static void print_stats(void) {
    for (int k = 0; k < K_N; k++)
        fprintf(stderr, "fuzz_loaders: %-16s %8ld runs, %8ld accepted\n", KIND_NAMES[k], n_runs[k], n_accepted[k]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!apath[0]) { /* tmpfs where there is one: the writer's fsync is free there */
        struct stat st;
        const char *d = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
        snprintf(apath, sizeof apath, "%s/fuzz_loaders.%ld/a.msgpack", d, (long)getpid());
        atexit(remove_apath);
        if (getenv("FUZZ_LOADERS_STATS")) atexit(print_stats);
    }
    fz f = {data, size};
    int kind = (int)below(&f, K_N);
    fart a;
    memset(&a, 0, sizeof a);
    t5_config c;
    tiny_config(&f, &c);
    t5_model *m = NULL;
    mc_val *edit = NULL;
    switch (kind) {
    case K_TOKENS: gen_tokens(&f, &a); break;
    case K_MODEL:
        gen_model(&f, &a, &c);
        edit = (mc_val *)val_get(a.meta, "config");
        break;
    case K_IA3: case K_FDIAG: case K_FBLOCK: case K_GRAM:
        m = t5_new(&c, 0, 1);
        if (kind == K_IA3) gen_ia3(&f, &a, m);
        else gen_stat(&f, &a, m, kind - K_FDIAG);
        break;
    case K_METRICS: {
        snprintf(a.kind, sizeof a.kind, "metrics");
        a.meta = val_map();
        val_set_float(val_set_map(a.meta, "accuracy"), "t", 0.5);
        val_set_float(a.meta, "average", 0.5);
        size_t n = (size_t)below(&f, 6);
        val_set_int(val_set_map(a.meta, "n_examples"), "t", (int64_t)n);
        int64_t pred[8] = {0};
        int64_t sh[1] = {(int64_t)(2 * n)};
        add_ints(&a, "prediction", ART_I32, pred, n);
        add_floats(&a, &f, "choice_scores", 1, sh);
        break;
    }
    case K_VOCAB: {
        snprintf(a.kind, sizeof a.kind, "vocab");
        a.meta = val_map();
        val_set_int(a.meta, "vocab_size", 200);
        pbuf p = {0};
        gen_spm(&f, &p);
        int64_t sh[1] = {(int64_t)p.n};
        ftensor *t = add_tensor(&a, below(&f, 2) ? "model" : "spiece.model", ART_U8, 1, sh);
        if (t && p.n) memcpy(t->data, p.b, p.n);
        free(p.b);
        break;
    }
    case K_EXAMPLES: gen_examples(&f, &a); break;
    case K_CORPUS: gen_corpus(&f, &a); break;
    default: {
        snprintf(a.kind, sizeof a.kind, "train_checkpoint");
        a.meta = val_map();
        val_set_int(a.meta, "step", 3);
        int64_t sh[1] = {(int64_t)below(&f, 8)};
        add_floats(&a, &f, "weights", 1, sh);
        add_floats(&a, &f, "optimizer", 1, sh);
        break;
    }
    }
    mutate(&f, &a, edit ? edit : a.meta);
    write_art(&a);

    art_file *af = art_open(apath, a.kind);
    if (!af) check_error();
    int accepted = af != NULL;
    switch (kind) {
    case K_TOKENS:
        for (int need = 0; need < 2; need++) {
            tok_set *s = tok_load(apath, need);
            if (s) use_tokens(s);
            else check_error();
            accepted = s != NULL;
            tok_free(s);
        }
        break;
    case K_MODEL: {
        char key[33];
        t5_model *lm = t5_load_model(apath, 0, 0, key);
        accepted = lm != NULL;
        if (lm) {
            ORACLE(lm->c.d_model >= 1 && lm->c.vocab_size >= 8);
            for (int i = 0; i < lm->n_tensors; i++) ORACLE(mc_nonfinite_at(lm->params + lm->tensors[i].offset, (long)lm->tensors[i].numel) < 0);
        } else {
            check_error();
        }
        t5_free(lm);
        break;
    }
    case K_IA3: {
        char key[33];
        accepted = t5_load_ia3_key(m, apath, "0123456789abcdef0123456789abcdef", key) == 0;
        if (accepted) ORACLE(mc_nonfinite_at(m->ia3, (long)m->n_ia3) < 0);
        else check_error();
        break;
    }
    case K_VOCAB:
        accepted = af && use_spm(&f, af);
        break;
    case K_EXAMPLES: case K_CORPUS:
        if (af) use_text_kind(af);
        break;
    case K_FBLOCK: case K_GRAM:
        for (size_t i = 0; af && i < af->n_tensors; i++) {
            const art_tensor *t = &af->tensors[i];
            if (kind == K_GRAM && !strstr(t->name, "_gram")) continue;
            ORACLE(t->ndim == 2 && t->shape[0] == t->shape[1]);
        }
        break;
    case K_CKPT:
        for (size_t i = 0; af && i < af->n_tensors; i++) ORACLE(af->tensors[i].dtype == ART_F32);
        break;
    default: break;
    }
    n_runs[kind]++;
    n_accepted[kind] += accepted;
    if (af) touch(af);
    art_close(af);
    t5_free(m);
    fart_free(&a);
    return 0;
}
