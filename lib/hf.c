/* hf.c - see hf.h. */
#include "hf.h"
#include "spm.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "json.h"
#include "key.h"

/* Messages quote names and values read from files, which may hold control
 * bytes (JSON escapes): rewrite the last error as one printable line. */
static int one_line_error(void) {
    char m[1024];
    snprintf(m, sizeof m, "%s", mc_error());
    for (char *q = m; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
    return mc_fail("%s", m);
}

/* ------------------------------------------------------------ conversions */

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float hf_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

float hf_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0x1f) /* inf, or NaN made quiet as the F16C instructions do */
        return u2f(sign | 0x7f800000 | (m ? 0x400000 | (m << 13) : 0));
    if (e == 0) {
        if (m == 0) return u2f(sign);
        /* subnormal: m * 2^-24; normalise */
        int ex = -14;
        while (!(m & 0x400)) { m <<= 1; ex--; }
        m &= 0x3ff;
        return u2f(sign | (uint32_t)(ex + 127) << 23 | m << 13);
    }
    return u2f(sign | (e - 15 + 127) << 23 | m << 13);
}

uint16_t hf_f32_to_bf16(float f) {
    uint32_t x = f2u(f);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

uint16_t hf_f32_to_f16(float f) {
    uint32_t x = f2u(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x >= 0x7f800000) return sign | (x > 0x7f800000 ? (uint16_t)(0x7e00 | ((x >> 13) & 0x3ff)) : 0x7c00);
    if (x >= 0x477ff000) return sign | 0x7c00; /* rounds past 65504 */
    if (x < 0x38800000) {                       /* below 2^-14: subnormal or zero */
        if (x <= 0x33000000) return sign;       /* <= 2^-25 rounds (ties to even) to 0 */
        uint32_t e = x >> 23, m = (x & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e;               /* m * 2^(e-150) in units of 2^-24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t h = ((x >> 23) - 112) << 10 | ((x >> 13) & 0x3ff);
    uint32_t rem = x & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

/* ------------------------------------------------------------ safetensors */

static const struct { const char *name; size_t size; st_dtype d; } st_types[] = {
    {"F32", 4, ST_F32},     {"F16", 2, ST_F16},     {"BF16", 2, ST_BF16},   {"F64", 8, ST_OTHER},
    {"I64", 8, ST_OTHER},   {"I32", 4, ST_OTHER},   {"I16", 2, ST_OTHER},   {"I8", 1, ST_OTHER},
    {"U64", 8, ST_OTHER},   {"U32", 4, ST_OTHER},   {"U16", 2, ST_OTHER},   {"U8", 1, ST_OTHER},
    {"BOOL", 1, ST_OTHER},  {"F8_E4M3", 1, ST_OTHER}, {"F8_E5M2", 1, ST_OTHER},
};

const char *st_dtype_name(st_dtype d) {
    return d == ST_F32 ? "F32" : d == ST_F16 ? "F16" : d == ST_BF16 ? "BF16" : "?";
}

int st_dtype_parse(const char *s) {
    if (!strcasecmp(s, "f32") || !strcmp(s, "float32")) return ST_F32;
    if (!strcasecmp(s, "f16") || !strcasecmp(s, "fp16") || !strcmp(s, "float16")) return ST_F16;
    if (!strcasecmp(s, "bf16") || !strcmp(s, "bfloat16")) return ST_BF16;
    return -1;
}

#define ST_MAX_HEADER (100u << 20) /* the safetensors library's limit */

void st_close(st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    val_free(f->metadata);
    if (f->map) munmap(f->map, f->size);
    free(f->path);
    free(f);
}

static int cmp_begin(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* A JSON integer >= 0. */
static int get_u64(const mc_val *v, uint64_t *out) {
    if (!v) return -1;
    if (v->type == VAL_INT && v->v.i >= 0) { *out = (uint64_t)v->v.i; return 0; }
    if (v->type == VAL_UINT) { *out = v->v.u; return 0; }
    return -1;
}

st_file *st_open(const char *path) {
    st_file *f = callocCheck(1, sizeof *f);
    f->path = strdupCheck(path);
    st_tensor **order = NULL;
    mc_val *hdr = NULL;
    int fd = open(path, O_RDONLY);
    if (fd < 0) { mc_fail("%s: cannot open: %s", path, strerror(errno)); goto fail; }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        mc_fail("%s: not a regular file", path);
        close(fd);
        goto fail;
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        mc_fail("%s: %zu bytes is too short for a safetensors file (8-byte header length first)", path, f->size);
        close(fd);
        goto fail;
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        f->map = NULL;
        mc_fail("%s: cannot map: %s", path, strerror(errno));
        goto fail;
    }
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | f->map[i];
    f->header_len = hl;
    if (hl > f->size - 8) {
        mc_fail("%s: header length %" PRIu64 " exceeds the file's %zu bytes: truncated, or not a safetensors file",
                path, hl, f->size);
        goto fail;
    }
    if (hl > ST_MAX_HEADER || hl < 2) {
        mc_fail("%s: implausible header length %" PRIu64 ": not a safetensors file", path, hl);
        goto fail;
    }
    char hname[1100];
    snprintf(hname, sizeof hname, "%s (safetensors header)", path);
    hdr = json_parse((const char *)f->map + 8, (size_t)hl, hname);
    if (!hdr) goto fail;
    if (hdr->type != VAL_MAP) { mc_fail("%s: the safetensors header is not a JSON object", path); goto fail; }
    size_t data_len = f->size - 8 - (size_t)hl;
    const unsigned char *data = f->map + 8 + hl;
    f->t = callocCheck(hdr->v.c.n ? hdr->v.c.n : 1, sizeof *f->t);
    for (size_t i = 0; i < hdr->v.c.n; i++) {
        const char *name = hdr->v.c.keys[i];
        const mc_val *e = hdr->v.c.items[i];
        if (!strcmp(name, "__metadata__")) {
            if (e->type != VAL_MAP) { mc_fail("%s: __metadata__ is not a JSON object", path); goto fail; }
            f->metadata = val_clone(e);
            continue;
        }
        st_tensor *t = &f->t[f->n];
        t->name = strdupCheck(name);
        f->n++;
        if (e->type != VAL_MAP) { mc_fail("%s: header entry %s is not a JSON object", path, name); goto fail; }
        const mc_val *dt = val_get(e, "dtype"), *sh = val_get(e, "shape"), *off = val_get(e, "data_offsets");
        if (!dt || dt->type != VAL_STR) { mc_fail("%s: tensor %s: \"dtype\" missing or not a string", path, name); goto fail; }
        size_t k = 0, nk = sizeof st_types / sizeof st_types[0];
        while (k < nk && strcmp(st_types[k].name, dt->v.str.s)) k++;
        if (k == nk) {
            mc_fail("%s: tensor %s: unknown dtype \"%.20s\" (safetensors knows F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL ...)",
                    path, name, dt->v.str.s);
            goto fail;
        }
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", st_types[k].name);
        t->dtype = st_types[k].d;
        t->esize = st_types[k].size;
        if (!sh || sh->type != VAL_ARRAY || sh->v.c.n > ART_MAX_DIMS) {
            mc_fail("%s: tensor %s: \"shape\" missing, not an array, or more than %d dimensions", path, name, ART_MAX_DIMS);
            goto fail;
        }
        t->ndim = (int)sh->v.c.n;
        t->numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            uint64_t s;
            if (get_u64(sh->v.c.items[d], &s) < 0 || s > (uint64_t)INT64_MAX) {
                mc_fail("%s: tensor %s: shape entry %d is not a non-negative integer", path, name, d);
                goto fail;
            }
            t->shape[d] = (int64_t)s;
            if (s && (uint64_t)t->numel > (uint64_t)INT64_MAX / 8 / s) {
                mc_fail("%s: tensor %s: shape too large", path, name);
                goto fail;
            }
            t->numel *= (int64_t)s;
        }
        uint64_t b, en;
        if (!off || off->type != VAL_ARRAY || off->v.c.n != 2 || get_u64(off->v.c.items[0], &b) < 0 ||
            get_u64(off->v.c.items[1], &en) < 0) {
            mc_fail("%s: tensor %s: \"data_offsets\" must be [begin, end], two non-negative integers", path, name);
            goto fail;
        }
        if (b > en || en > data_len) {
            mc_fail("%s: tensor %s: data_offsets [%" PRIu64 ", %" PRIu64 "] outside the %zu data bytes (truncated file?)",
                    path, name, b, en, data_len);
            goto fail;
        }
        if (en - b != (uint64_t)t->numel * t->esize) {
            mc_fail("%s: tensor %s: data_offsets span %" PRIu64 " bytes but shape and dtype %s need %" PRIu64,
                    path, name, en - b, t->dtype_name, (uint64_t)t->numel * t->esize);
            goto fail;
        }
        t->begin = b;
        t->end = en;
        t->data = data + b;
    }
    /* the tensors must tile the data section exactly, as the library requires */
    order = mallocCheck((f->n ? f->n : 1) * sizeof *order);
    for (size_t i = 0; i < f->n; i++) order[i] = &f->t[i];
    qsort(order, f->n, sizeof *order, cmp_begin);
    uint64_t pos = 0;
    for (size_t i = 0; i < f->n; i++) {
        if (order[i]->begin != pos) {
            mc_fail("%s: tensor %s starts at data byte %" PRIu64 " but the previous tensor ends at %" PRIu64
                    " (overlapping or missing data)", path, order[i]->name, order[i]->begin, pos);
            goto fail;
        }
        pos = order[i]->end;
    }
    if (pos != data_len) {
        mc_fail("%s: %zu data bytes but the tensors cover %" PRIu64 " (the file has trailing bytes)", path,
                data_len, pos);
        goto fail;
    }
    free(order);
    val_free(hdr);
    return f;
fail:
    one_line_error();
    free(order);
    val_free(hdr);
    st_close(f);
    return NULL;
}

const st_tensor *st_find(const st_file *f, const char *name) {
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->t[i].name, name)) return &f->t[i];
    return NULL;
}

void st_read_f32(const st_tensor *t, int64_t start, int64_t n, float *dst) {
    const unsigned char *p = t->data + (size_t)start * t->esize;
    switch (t->dtype) {
    case ST_F32: memcpy(dst, p, (size_t)n * 4); break;
    case ST_BF16:
        for (int64_t i = 0; i < n; i++) dst[i] = hf_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    case ST_F16:
        for (int64_t i = 0; i < n; i++) dst[i] = hf_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        break;
    default: fprintf(stderr, "st_read_f32: dtype %s\n", t->dtype_name); abort();
    }
}

/* ------------------------------------------------------------ config */

/* transformers_version "5.0.0" -> 5; absent or unreadable: 4 (every config
 * written before 5.x reads as 4.x's). */
static int tf_major(const mc_val *j) {
    const char *v = val_get_str(j, "transformers_version", "");
    return *v >= '0' && *v <= '9' ? atoi(v) : 4;
}

/* A JSON bool field: 1/0, def when absent or null, -1 (with mc_fail) else. */
static int json_bool(const mc_val *j, const char *key, int def, const char *path) {
    const mc_val *v = val_get(j, key);
    if (!v || v->type == VAL_NIL) return def;
    if (v->type != VAL_BOOL) return mc_fail("%s: \"%s\" must be true or false", path, key);
    return v->v.b;
}

int hf_config_from_json(t5_config *c, hf_head *h, const mc_val *j, const char *path) {
    memset(c, 0, sizeof *c);
    memset(h, 0, sizeof *h);
    if (!j || j->type != VAL_MAP) return mc_fail("%s: not a JSON object", path);
    const char *mt = val_get_str(j, "model_type", "t5");
    if (strcmp(mt, "t5") && strcmp(mt, "mt5"))
        return mc_fail("%s: model_type \"%s\": only T5 (t5, mt5) checkpoints can be imported", path, mt);
    snprintf(c->model_type, sizeof c->model_type, "%s", mt);
    char where[1100];
    snprintf(where, sizeof where, "%s: ", path);
    if (t5_config_ints(c, j, where) < 0) return -1;
    const mc_val *e = val_get(j, "layer_norm_epsilon");
    c->eps = 1e-6f;
    if (e && e->type != VAL_NIL) {
        if (e->type != VAL_FLOAT && e->type != VAL_INT) return mc_fail("%s: \"layer_norm_epsilon\" must be a number", path);
        double x = e->type == VAL_FLOAT ? e->v.f : (double)e->v.i;
        if (!(x > 0 && x < 1)) return mc_fail("%s: layer_norm_epsilon must be in (0, 1)", path);
        c->eps = (float)x;
    }
    /* The feed-forward, as T5Config derives it: feed_forward_proj "ACT" or
     * "gated-ACT" (default "relu") gives is_gated_act and dense_act_fn
     * ("gated-gelu" means gelu_new, the tanh approximation); a
     * dense_act_fn or is_gated_act in the file overrides what
     * feed_forward_proj implied (transformers sets the file's fields after
     * deriving). The C model is gated gelu_new (T5 v1.1) or plain relu
     * (the original T5). */
    const mc_val *ffv = val_get(j, "feed_forward_proj");
    if (ffv && ffv->type != VAL_NIL && ffv->type != VAL_STR) return mc_fail("%s: \"feed_forward_proj\" must be a string", path);
    const char *ff = val_get_str(j, "feed_forward_proj", "relu");
    const char *dash = strchr(ff, '-');
    int gated = dash && (size_t)(dash - ff) == 5 && !strncmp(ff, "gated", 5);
    if ((dash && !gated) || (gated && strchr(dash + 1, '-')))
        return mc_fail("%s: feed_forward_proj \"%s\" is not ACT or gated-ACT", path, ff);
    char act[64];
    snprintf(act, sizeof act, "%s", !strcmp(ff, "gated-gelu") ? "gelu_new" : gated ? dash + 1 : ff);
    const mc_val *da = val_get(j, "dense_act_fn");
    if (da && da->type != VAL_NIL) {
        if (da->type != VAL_STR) return mc_fail("%s: \"dense_act_fn\" must be a string", path);
        snprintf(act, sizeof act, "%s", da->v.str.s);
    }
    if ((gated = json_bool(j, "is_gated_act", gated, path)) < 0) return -1;
    if (gated && (!strcmp(act, "gelu_new") || !strcmp(act, "gelu_pytorch_tanh")))
        c->ffn = T5_FFN_GATED_GELU;
    else if (!gated && !strcmp(act, "relu"))
        c->ffn = T5_FFN_RELU;
    else
        return mc_fail("%s: a %s feed-forward (%s) with activation \"%s\" (%s): T5 v1.1's gated gelu_new "
                       "(feed_forward_proj \"gated-gelu\") and the original T5's plain relu (\"relu\") are "
                       "implemented", path, gated ? "gated" : "plain",
                       val_get(j, "is_gated_act") ? "is_gated_act" : "feed_forward_proj", act,
                       da && da->type == VAL_STR ? "dense_act_fn" : "feed_forward_proj");
    /* The output layer: see hf.h */
    h->v5 = tf_major(j) >= 5;
    if ((h->tie = json_bool(j, "tie_word_embeddings", 1, path)) < 0) return -1;
    int def_scale = !strcmp(mt, "mt5") && h->v5 ? 0 : h->tie;
    if ((h->scale = json_bool(j, "scale_decoder_outputs", def_scale, path)) < 0) return -1;
    const struct { const char *k; int64_t want; } ids[] = {
        {"pad_token_id", 0}, {"eos_token_id", 1}, {"decoder_start_token_id", 0}};
    for (int i = 0; i < 3; i++) {
        const mc_val *v = val_get(j, ids[i].k);
        if (v && v->type != VAL_NIL && (v->type != VAL_INT || v->v.i != ids[i].want))
            return mc_fail("%s: \"%s\" must be %" PRId64 " (the C model uses T5's pad 0 / eos 1)", path, ids[i].k,
                           ids[i].want);
    }
    const mc_val *ed = val_get(j, "is_encoder_decoder");
    if (ed && ed->type == VAL_BOOL && !ed->v.b) return mc_fail("%s: is_encoder_decoder is false", path);
    if (t5_config_check(c) < 0) return mc_fail("%s: %s", path, mc_error());
    return 0;
}

/* meta.config of a model artifact, the message naming the file. */
static int meta_config(t5_config *c, const art_file *a, const char *path) {
    if (t5_config_from_val(c, val_get(a->meta, "config")) < 0) return mc_fail("%s: %s", path, mc_error());
    return 0;
}

mc_val *hf_config_to_json(const t5_config *c, const char *torch_dtype) {
    /* keys sorted, as transformers writes them */
    mc_val *m = val_map();
    int mt5 = !strcmp(c->model_type, "mt5");
    mc_val *arch = val_set_array(m, "architectures");
    val_push(arch, val_str(mt5 ? "MT5ForConditionalGeneration" : "T5ForConditionalGeneration"));
    val_set_int(m, "d_ff", c->d_ff);
    val_set_int(m, "d_kv", c->d_kv);
    val_set_int(m, "d_model", c->d_model);
    val_set_int(m, "decoder_start_token_id", 0);
    int relu = c->ffn == T5_FFN_RELU;
    val_set_str(m, "dense_act_fn", relu ? "relu" : "gelu_new");
    val_set_float(m, "dropout_rate", 0.1);
    val_set_int(m, "eos_token_id", 1);
    val_set_str(m, "feed_forward_proj", t5_ffn_name(c->ffn));
    val_set_float(m, "initializer_factor", 1.0);
    val_set(m, "is_encoder_decoder", val_bool(1));
    val_set(m, "is_gated_act", val_bool(!relu));
    val_set_float(m, "layer_norm_epsilon", c->eps);
    val_set_str(m, "model_type", mt5 ? "mt5" : "t5");
    val_set_int(m, "num_decoder_layers", c->num_decoder_layers);
    val_set_int(m, "num_heads", c->num_heads);
    val_set_int(m, "num_layers", c->num_layers);
    val_set_int(m, "pad_token_id", 0);
    val_set_int(m, "relative_attention_max_distance", c->max_distance);
    val_set_int(m, "relative_attention_num_buckets", c->num_buckets);
    /* untied: 4.x reads untied and unscaled from tie_word_embeddings false;
     * 5.x forces the flag true, keeps the stored lm_head and reads the
     * scaling here. Tied (the original T5): both flags true, no lm_head in
     * the weights; 4.x ties and scales, 5.x too */
    val_set(m, "scale_decoder_outputs", val_bool(c->tied));
    val_set(m, "tie_word_embeddings", val_bool(c->tied));
    val_set_str(m, "torch_dtype", torch_dtype);
    val_set(m, "use_cache", val_bool(1));
    val_set_int(m, "vocab_size", c->vocab_size);
    return m;
}

/* ------------------------------------------------------------ parameter table */

/* t5_param_table sizes its table by the layer counts: a config with more
 * layers than the file it came with has tensors cannot be that file's, and
 * is refused before the table is made. */
static int layers_fit(const t5_config *c, size_t n_tensors, const char *path) {
    if ((size_t)c->num_layers + (size_t)c->num_decoder_layers > n_tensors)
        return mc_fail("%s: the config has %d encoder and %d decoder layers but the file holds "
                       "%zu tensors: they do not belong together", path, c->num_layers, c->num_decoder_layers,
                       n_tensors);
    return 0;
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* An IA3 vector of t5.h scales its weight's output (k, v, wi_1) or, for
 * wo (the ReLU layout's feed-forward vector), its input. */
static int ia3_scales_input(const char *vector_name) { return ends_with(vector_name, "DenseReluDense.wo.ia3_vector"); }

/* "X.ia3_vector" -> "X.weight" into out (cap bytes); -1 if not so named. */
static int ia3_weight_name(const char *vector_name, char *out, size_t cap) {
    size_t L = strlen(vector_name);
    if (L < 11 || strcmp(vector_name + L - 11, ".ia3_vector") || L - 11 + 8 >= cap) return -1;
    snprintf(out, cap, "%.*s.weight", (int)(L - 11), vector_name);
    return 0;
}

static void shape_text(int ndim, const int64_t *shape, char *out, size_t n) {
    size_t p = (size_t)snprintf(out, n, "[");
    for (int i = 0; i < ndim && p < n; i++)
        p += (size_t)snprintf(out + p, n - p, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (p < n) snprintf(out + p, n - p, "]");
}

/* ------------------------------------------------------------ files */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = mallocCheck(n);
    snprintf(p, n, "%s%s%s", dir, (*dir && dir[strlen(dir) - 1] == '/') ? "" : "/", name);
    return p;
}

static int file_exists(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int write_json_file(const char *path, const mc_val *v) {
    json_buf b = {0};
    json_write(&b, v, 2);
    jb_puts(&b, "\n");
    int r = mc_write_atomic(path, b.s, b.len);
    jb_free(&b);
    return r;
}

/* ------------------------------------------------------------ vocab */

static int pb_varint(const unsigned char **p, const unsigned char *end, uint64_t *v) {
    uint64_t x = 0;
    for (int s = 0; s < 64; s += 7) {
        if (*p >= end) return -1;
        unsigned char b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return -1;
}

/* Walk one protobuf message: for each field call back; -1 on malformed. */
typedef int (*pb_fn)(void *ctx, uint64_t field, int wt, const unsigned char *p, uint64_t len);
static int pb_walk(const unsigned char *p, const unsigned char *end, pb_fn fn, void *ctx) {
    while (p < end) {
        uint64_t key, v;
        if (pb_varint(&p, end, &key) < 0) return -1;
        int wt = (int)(key & 7);
        const unsigned char *s = p;
        uint64_t len = 0;
        switch (wt) {
        case 0: if (pb_varint(&p, end, &v) < 0) return -1; len = v; break;
        case 1: if (end - p < 8) return -1; p += 8; len = 8; break;
        case 2: if (pb_varint(&p, end, &len) < 0 || len > (uint64_t)(end - p)) return -1; s = p; p += len; break;
        case 5: if (end - p < 4) return -1; p += 4; len = 4; break;
        default: return -1;
        }
        if (fn && fn(ctx, key >> 3, wt, s, len) < 0) return -1;
    }
    return 0;
}

typedef struct { int64_t n; int has_sentinel; } spm_scan;

static int piece_field(void *ctx, uint64_t f, int wt, const unsigned char *p, uint64_t len) {
    if (f == 1 && wt == 2 && len == 12 && !memcmp(p, "<extra_id_0>", 12)) ((spm_scan *)ctx)->has_sentinel = 1;
    return 0;
}

static int model_field(void *ctx, uint64_t f, int wt, const unsigned char *p, uint64_t len) {
    if (f != 1) return 0;
    if (wt != 2) return -1;
    ((spm_scan *)ctx)->n++;
    return pb_walk(p, p + len, piece_field, ctx);
}

/* The number of pieces of a SentencePiece model, and whether it has
 * <extra_id_0> itself. */
static int spm_scan_buf(const unsigned char *b, size_t n, const char *path, spm_scan *sc) {
    memset(sc, 0, sizeof *sc);
    if (pb_walk(b, b + n, model_field, sc) < 0 || sc->n == 0)
        return mc_fail("%s: not a SentencePiece model (malformed protobuf or no pieces)", path);
    return 0;
}

static int spm_pieces(const char *path, int64_t *n_pieces, int *has_sentinel) {
    unsigned char *b;
    size_t n;
    spm_scan sc;
    if (mc_read_file(path, &b, &n) < 0) return -1;
    int r = spm_scan_buf(b, n, path, &sc);
    free(b);
    *n_pieces = sc.n;
    *has_sentinel = sc.has_sentinel;
    return r;
}

/* tokenizer_config.json's "extra_ids" (-1 when the file or the field is
 * absent). */
static int tokenizer_extra_ids(const char *path, int *extra) {
    *extra = -1;
    if (!file_exists(path)) return 0;
    mc_val *tj = json_parse_file(path);
    if (!tj) return -1;
    const mc_val *e = val_get(tj, "extra_ids");
    int r = 0;
    if (e && e->type != VAL_NIL) {
        if (e->type == VAL_INT && e->v.i >= 0 && e->v.i <= 100000) *extra = (int)e->v.i;
        else r = mc_fail("%s: \"extra_ids\" must be a count of sentinel tokens", path);
    }
    val_free(tj);
    return r;
}

int hf_write_vocab(const char *spm_path, const char *out, int extra_ids, int64_t model_vocab) {
    unsigned char *b;
    size_t n;
    if (mc_read_file(spm_path, &b, &n) < 0) return -1;
    spm_scan sc;
    if (spm_scan_buf(b, n, spm_path, &sc) < 0) {
        free(b);
        return -1;
    }
    spm_model *sm = spm_load_buffer(b, n, spm_path);
    if (!sm || spm_check_t5_ids(sm, spm_path) < 0) {
        if (sm) spm_free(sm);
        free(b);
        return -1;
    }
    spm_free(sm);
    if (extra_ids < 0) extra_ids = sc.has_sentinel ? 0 : 100;
    if (model_vocab > 0 && sc.n + extra_ids > model_vocab) {
        free(b);
        return mc_fail("%s: %" PRId64 " pieces + %d extra ids exceed the model's vocab_size %" PRId64
                       " (wrong tokenizer for this model?)", spm_path, sc.n, extra_ids, model_vocab);
    }
    mc_val *meta = val_map();
    val_set_str(meta, "source", "hf");
    val_set_int(meta, "vocab_size", sc.n + extra_ids);
    val_set_int(meta, "n_pieces", sc.n);
    val_set_int(meta, "extra_ids", extra_ids);
    val_set_int(meta, "extra_id_0", sc.n + extra_ids - 1);
    if (model_vocab > 0) val_set_int(meta, "model_vocab_size", model_vocab);
    val_set_int(meta, "pad_id", 0);
    val_set_int(meta, "eos_id", 1);
    val_set_int(meta, "unk_id", 2);
    char key[33];
    key_buf_hex(b, n, key);
    int64_t shape[1] = {(int64_t)n};
    art_writer *w = art_writer_open(out, "vocab", key, meta, 1);
    val_free(meta);
    int r = -1;
    if (w) {
        if (art_writer_tensor(w, "spiece.model", ART_U8, 1, shape, b) < 0) art_writer_abort(w);
        else r = art_writer_close(w);
    }
    free(b);
    return r;
}

/* ------------------------------------------------------------ import */

typedef struct {
    const char *name;       /* into the st_file */
    st_file *file;
    const st_tensor *t;
} src_tensor;

typedef struct {
    st_file **files;
    size_t n_files;
    src_tensor *src;
    size_t n_src;
} checkpoint;

static void ckpt_free(checkpoint *c) {
    for (size_t i = 0; i < c->n_files; i++) st_close(c->files[i]);
    free(c->files);
    free(c->src);
    memset(c, 0, sizeof *c);
}

static const src_tensor *ckpt_find(const checkpoint *c, const char *name) {
    for (size_t i = 0; i < c->n_src; i++)
        if (!strcmp(c->src[i].name, name)) return &c->src[i];
    return NULL;
}

static int ckpt_add_file(checkpoint *c, const char *path) {
    st_file *f = st_open(path);
    if (!f) return -1;
    c->files = reallocCheck(c->files, (c->n_files + 1) * sizeof *c->files);
    c->files[c->n_files++] = f;
    c->src = reallocCheck(c->src, (c->n_src + f->n) * sizeof *c->src);
    for (size_t i = 0; i < f->n; i++) {
        const src_tensor *dup = ckpt_find(c, f->t[i].name);
        if (dup) return mc_fail("%s: tensor %s is also in %s", path, f->t[i].name, dup->file->path);
        c->src[c->n_src++] = (src_tensor){f->t[i].name, f, &f->t[i]};
    }
    return 0;
}

/* Open model.safetensors, or the shards an index names. `weights` names
 * what was read, for messages. */
static int ckpt_open(checkpoint *c, const char *dir, char *weights, size_t wn) {
    char *single = path_join(dir, "model.safetensors"), *index = path_join(dir, "model.safetensors.index.json");
    int r = -1;
    mc_val *ix = NULL;
    if (file_exists(single)) {
        snprintf(weights, wn, "%s", single);
        r = ckpt_add_file(c, single);
        goto done;
    }
    if (!file_exists(index)) {
        char *bin = path_join(dir, "pytorch_model.bin");
        if (file_exists(bin))
            mc_fail("%s: only pytorch_model.bin, no model.safetensors: convert it first, e.g. with transformers: "
                    "T5ForConditionalGeneration.from_pretrained(DIR).save_pretrained(OUT, safe_serialization=True)", dir);
        else
            mc_fail("%s: no model.safetensors or model.safetensors.index.json (is this a Hugging Face checkpoint directory?)", dir);
        free(bin);
        goto done;
    }
    snprintf(weights, wn, "%s", index);
    ix = json_parse_file(index);
    if (!ix) goto done;
    const mc_val *wm = val_get(ix, "weight_map");
    if (!wm || wm->type != VAL_MAP || wm->v.c.n == 0) {
        mc_fail("%s: \"weight_map\" missing, empty or not an object", index);
        goto done;
    }
    /* open each shard once, in the order they first appear */
    for (size_t i = 0; i < wm->v.c.n; i++) {
        const mc_val *fv = wm->v.c.items[i];
        if (fv->type != VAL_STR || !fv->v.str.len || strchr(fv->v.str.s, '/') || fv->v.str.s[0] == '.') {
            mc_fail("%s: weight_map entry for %s must name a file in the same directory", index, wm->v.c.keys[i]);
            goto done;
        }
        int seen = 0;
        for (size_t k = 0; k < i && !seen; k++) seen = !strcmp(wm->v.c.items[k]->v.str.s, fv->v.str.s);
        if (seen) continue;
        char *sp = path_join(dir, fv->v.str.s);
        int ok = ckpt_add_file(c, sp);
        free(sp);
        if (ok < 0) goto done;
    }
    for (size_t i = 0; i < wm->v.c.n; i++) {
        const src_tensor *s = ckpt_find(c, wm->v.c.keys[i]);
        const char *want = wm->v.c.items[i]->v.str.s;
        const char *base = s ? strrchr(s->file->path, '/') : NULL;
        base = base ? base + 1 : s ? s->file->path : NULL;
        if (!s || strcmp(base, want)) {
            char *sp = path_join(dir, want);
            mc_fail("%s: tensor %s, which %s lists for this file, is not in it", sp, wm->v.c.keys[i], index);
            free(sp);
            goto done;
        }
    }
    r = 0;
done:
    val_free(ix);
    free(single);
    free(index);
    return r;
}

/* Compare two tensors' values after conversion to f32 (bitwise; -0 != +0 is
 * tolerated as HF compares values). 1 if equal. */
static int same_values(const st_tensor *a, const st_tensor *b) {
    if (a->numel != b->numel) return 0;
    enum { CH = 1 << 14 };
    float *x = mallocCheck(CH * sizeof *x), *y = mallocCheck(CH * sizeof *y);
    int eq = 1;
    for (int64_t s = 0; s < a->numel && eq; s += CH) {
        int64_t n = a->numel - s < CH ? a->numel - s : CH;
        st_read_f32(a, s, n, x);
        st_read_f32(b, s, n, y);
        for (int64_t i = 0; i < n && eq; i++) eq = x[i] == y[i] || (x[i] != x[i] && y[i] != y[i]);
    }
    free(x);
    free(y);
    return eq;
}

static int convertible(const st_tensor *t, const char *path) {
    if (t->dtype == ST_OTHER)
        return mc_fail("%s: tensor %s has dtype %s: only F32, F16 and BF16 parameters can be imported", path,
                       t->name, t->dtype_name);
    return 0;
}

/* The output layer (hf.h): into c->tied, from what config.json says (h)
 * and whether the weights hold an lm_head.weight equal to shared.weight.
 * Untied and unscaled (T5 v1.1, flan-t5, mT5) or tied and scaled (the
 * original T5) are the two heads transformers 4 and 5 both compute the
 * same from a file; a config the two versions read differently, or a head
 * of neither kind, is refused naming the field. */
static int output_layer(t5_config *c, const hf_head *h, const checkpoint *ck, const char *cpath,
                        const char *weights) {
    const src_tensor *lm = ckpt_find(ck, "lm_head.weight"), *sh = ckpt_find(ck, "shared.weight");
    if ((lm && convertible(lm->t, lm->file->path) < 0) || (sh && convertible(sh->t, sh->file->path) < 0)) return -1;
    int lm_is_shared = lm && sh && same_values(lm->t, sh->t);
    if (h->tie && !h->v5) { /* 4.x ties lm_head to shared.weight and scales */
        if (!h->scale)
            return mc_fail("%s: tie_word_embeddings is true but scale_decoder_outputs false: transformers 4 scales "
                           "a tied head by d_model^-0.5, 5 would not", cpath);
        if (lm && !lm_is_shared)
            return mc_fail("%s: lm_head.weight differs from shared.weight, but tie_word_embeddings is true "
                           "(transformers 4.x ties lm_head to shared.weight): the checkpoint is inconsistent",
                           lm->file->path);
        c->tied = 1;
        return 0;
    }
    if (!h->scale) { /* untied and unscaled: the file's lm_head.weight */
        if (!lm)
            return mc_fail("%s: no lm_head.weight, and %s says scale_decoder_outputs false: a tied head without "
                           "the d_model^-0.5 scaling is not implemented (T5 v1.1 and mT5 store lm_head.weight)",
                           weights, cpath);
        c->tied = 0;
        return 0;
    }
    /* scaled: 5.x ties lm_head to shared.weight (a stored copy must equal
     * it); 4.x with tie_word_embeddings false would neither tie nor scale */
    if (!h->v5 || (lm && !lm_is_shared))
        return mc_fail("%s: scale_decoder_outputs is true with %s: an untied head scaled by d_model^-0.5 is not "
                       "implemented (the original T5 ties it: tie_word_embeddings true)", cpath,
                       !h->v5 ? "tie_word_embeddings false (transformers 4 would not scale)"
                              : "an lm_head.weight that differs from shared.weight");
    c->tied = 1;
    return 0;
}

int hf_import(const char *dir, const char *out, const hf_import_opts *o) {
    hf_import_opts dflt = {0};
    if (!o) o = &dflt;
    checkpoint ck = {0};
    t5_tensor *par = NULL;
    mc_val *cj = NULL, *meta = NULL;
    art_writer *w = NULL;
    float *buf = NULL;
    int r = -1;
    char *cpath = path_join(dir, "config.json"), *spm = path_join(dir, "spiece.model");
    char *tcpath = path_join(dir, "tokenizer_config.json");
    char weights[4200];
    t5_config c;
    hf_head hd;
    int extra = -1;

    struct stat sb;
    if (mc_output_ok(out) < 0 || (o->vocab_out && mc_output_ok(o->vocab_out) < 0)) goto done;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        mc_fail("%s: not a directory (give the checkpoint directory holding config.json and model.safetensors)", dir);
        goto done;
    }
    if (!(cj = json_parse_file(cpath))) goto done;
    if (hf_config_from_json(&c, &hd, cj, cpath) < 0) goto done;
    if (ckpt_open(&ck, dir, weights, sizeof weights) < 0 || layers_fit(&c, ck.n_src, cpath) < 0) goto done;
    /* every file tensor must be a parameter (lm_head.weight included: the
     * table of the untied model, c.tied still 0), a tied copy or the
     * ignored key */
    static const char *tied[] = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"};
    static const char *ignored = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight";
    int np = t5_param_table(&c, &par);
    for (size_t i = 0; i < ck.n_src; i++) {
        const char *nm = ck.src[i].name;
        int known = !strcmp(nm, ignored);
        for (int k = 0; k < np && !known; k++) known = !strcmp(par[k].name, nm);
        if (!known && strcmp(nm, tied[0]) && strcmp(nm, tied[1])) {
            mc_fail("%s: unexpected tensor %s: not a parameter of the T5 model config.json describes "
                    "(num_layers %d, num_decoder_layers %d, feed_forward_proj %s)",
                    ck.src[i].file->path, nm, c.num_layers, c.num_decoder_layers, t5_ffn_name(c.ffn));
            goto done;
        }
    }
    free(par);
    par = NULL;
    if (output_layer(&c, &hd, &ck, cpath, weights) < 0) goto done;
    np = t5_param_table(&c, &par);
    int n_tied = c.tied ? 3 : 2; /* a tied model's lm_head.weight is a copy of shared.weight */
    if (o->like) {
        art_file *lk = art_open(o->like, "model");
        t5_config lc;
        char diff[160];
        int same = lk && meta_config(&lc, lk, o->like) == 0;
        if (same && t5_config_diff(&c, &lc, diff, sizeof diff)) {
            mc_fail("%s: describes another model than %s (%s): task models must be fine-tunes of the base", cpath,
                    o->like, diff);
            same = 0;
        }
        art_close(lk);
        if (!same) goto done;
    }

    const char *dtype_seen = NULL;
    for (int k = 0; k < np; k++) {
        const src_tensor *s = ckpt_find(&ck, par[k].name);
        if (!s) {
            mc_fail("%s: tensor %s missing", weights, par[k].name);
            goto done;
        }
        if (convertible(s->t, s->file->path) < 0) goto done;
        int ok = s->t->ndim == par[k].ndim;
        for (int d = 0; ok && d < par[k].ndim; d++) ok = s->t->shape[d] == par[k].shape[d];
        if (!ok) {
            char a[64], b[64];
            shape_text(s->t->ndim, s->t->shape, a, sizeof a);
            shape_text(par[k].ndim, par[k].shape, b, sizeof b);
            mc_fail("%s: tensor %s has shape %s but config.json implies %s", s->file->path, par[k].name, a, b);
            goto done;
        }
        const char *dn = st_dtype_name(s->t->dtype);
        dtype_seen = !dtype_seen || !strcmp(dtype_seen, dn) ? dn : "mixed";
    }
    const src_tensor *sh = ckpt_find(&ck, "shared.weight");
    for (int i = 0; i < n_tied; i++) {
        const src_tensor *s = ckpt_find(&ck, tied[i]);
        if (!s) continue;
        if (convertible(s->t, s->file->path) < 0) goto done;
        if (!same_values(s->t, sh->t)) {
            mc_fail("%s: %s differs from shared.weight, but HF T5 ties them (one tensor): the checkpoint is inconsistent",
                    s->file->path, tied[i]);
            goto done;
        }
    }

    /* the sentinels (hf.h): the tokenizer beside the weights says where
     * <extra_id_0> is */
    int have_spm = file_exists(spm);
    if (have_spm) {
        int64_t n_pieces;
        int has_sentinel;
        if (tokenizer_extra_ids(tcpath, &extra) < 0 || spm_pieces(spm, &n_pieces, &has_sentinel) < 0) goto done;
        int e = extra >= 0 ? extra : has_sentinel ? 0 : 100;
        if (n_pieces + e > c.vocab_size) {
            mc_fail("%s: %" PRId64 " pieces + %d extra ids exceed the model's vocab_size %d (wrong tokenizer for "
                    "this model?)", spm, n_pieces, e, c.vocab_size);
            goto done;
        }
        if (n_pieces + e - 1 >= 3 && n_pieces + e < c.vocab_size) c.extra_id_0 = (int)(n_pieces + e - 1);
    }

    /* key: given, or XXH3-128 over the names and digests of the inputs */
    char key[33] = "";
    if (o->key) {
        snprintf(key, sizeof key, "%s", o->key);
    } else {
        mc_key *k = key_new("import-hf");
        char hex[33];
        unsigned char *cb;
        size_t cl;
        if (mc_read_file(cpath, &cb, &cl) < 0) { key_free(k); goto done; }
        key_buf_hex(cb, cl, hex);
        free(cb);
        key_config(k, "config.json", hex);
        const char *tok[] = {spm, tcpath}; /* what the sentinel ids came from */
        for (int i = 0; i < 2 && have_spm; i++) {
            if (!file_exists(tok[i])) continue;
            if (mc_read_file(tok[i], &cb, &cl) < 0) { key_free(k); goto done; }
            key_buf_hex(cb, cl, hex);
            free(cb);
            key_config(k, i ? "tokenizer_config.json" : "spiece.model", hex);
        }
        for (size_t i = 0; i < ck.n_files; i++) {
            const char *base = strrchr(ck.files[i]->path, '/');
            key_buf_hex(ck.files[i]->map, ck.files[i]->size, hex);
            key_config(k, base ? base + 1 : ck.files[i]->path, hex);
        }
        key_digest(k, key);
        key_free(k);
    }

    meta = val_map();
    val_set(meta, "config", t5_config_to_val(&c));
    val_set_str(meta, "source", "hf");
    val_set_str(meta, "hf_dtype", dtype_seen ? dtype_seen : "F32");
    if (!(w = art_writer_open(out, "model", key, meta, (size_t)np))) goto done;
    enum { CH = 1 << 16 };
    buf = mallocCheck(CH * sizeof *buf);
    for (int k = 0; k < np; k++) {
        const st_tensor *t = ckpt_find(&ck, par[k].name)->t;
        if (art_writer_tensor_begin(w, par[k].name, ART_F32, par[k].ndim, par[k].shape) < 0) goto done;
        for (int64_t s = 0; s < t->numel; s += CH) {
            int64_t n = t->numel - s < CH ? t->numel - s : CH;
            st_read_f32(t, s, n, buf);
            if (art_writer_tensor_data(w, buf, (size_t)n * sizeof *buf) < 0) goto done;
        }
    }
    art_writer *wc = w;
    w = NULL;
    if (art_writer_close(wc) < 0) goto done;
    if (o->verbose)
        fprintf(stderr, "import-hf: %s (%s, %zu file%s, %d tensors) -> %s\n", dir, dtype_seen ? dtype_seen : "F32",
                ck.n_files, ck.n_files == 1 ? "" : "s", np, out);

    if (o->vocab_out) {
        if (!have_spm) {
            mc_fail("%s: no spiece.model, so no vocab artifact can be written (drop --vocab, or copy the tokenizer's spiece.model there)", dir);
            goto done;
        }
        if (hf_write_vocab(spm, o->vocab_out, extra, c.vocab_size) < 0) goto done;
        if (o->verbose) fprintf(stderr, "import-hf: spiece.model -> %s\n", o->vocab_out);
    }
    r = 0;
done:
    if (r < 0) one_line_error();
    if (w) art_writer_abort(w);
    free(buf);
    val_free(meta);
    val_free(cj);
    free(par);
    ckpt_free(&ck);
    free(cpath);
    free(spm);
    free(tcpath);
    return r;
}

/* ------------------------------------------------------------ export */

typedef struct {
    char name[192];
    int ndim;
    int64_t shape[2];
    const float *src;       /* f32 values (aligned copy or NULL) */
    const art_tensor *at;   /* or straight from the artifact (f32, unaligned) */
    const float *rowscale;  /* multiply row i by rowscale[i] (IA3 folding: an output scale) */
    const float *colscale;  /* multiply column j by colscale[j] (IA3 folding: an input scale) */
    int64_t numel;
} out_tensor;

static int cmp_out(const void *a, const void *b) {
    return strcmp(((const out_tensor *)a)->name, ((const out_tensor *)b)->name);
}

/* Write a safetensors file in the canonical form (hf.h). */
static int st_write(const char *path, out_tensor *ts, size_t n, st_dtype dt) {
    if (mc_output_ok(path) < 0) return -1;
    qsort(ts, n, sizeof *ts, cmp_out);
    size_t es = dt == ST_F32 ? 4 : 2;
    json_buf h = {0};
    jb_puts(&h, "{\"__metadata__\":{\"format\":\"pt\"}");
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        jb_puts(&h, ",");
        jb_str(&h, ts[i].name, strlen(ts[i].name));
        jb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(dt));
        for (int d = 0; d < ts[i].ndim; d++) jb_printf(&h, "%s%" PRId64, d ? "," : "", ts[i].shape[d]);
        uint64_t nb = (uint64_t)ts[i].numel * es;
        jb_printf(&h, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + nb);
        off += nb;
    }
    jb_puts(&h, "}");
    while (h.len % 8) jb_puts(&h, " ");

    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = mc_create_new(tmp);
    if (!f) { jb_free(&h); return -1; }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int ok = fwrite(len8, 1, 8, f) == 8 && fwrite(h.s, 1, h.len, f) == h.len;
    jb_free(&h);
    enum { CH = 1 << 16 };
    float *x = mallocCheck(CH * sizeof *x);
    uint16_t *y = mallocCheck(CH * sizeof *y);
    for (size_t i = 0; i < n && ok; i++) {
        const out_tensor *t = &ts[i];
        int64_t cols = t->ndim == 2 ? t->shape[1] : t->numel;
        for (int64_t s = 0; s < t->numel && ok; s += CH) {
            int64_t m = t->numel - s < CH ? t->numel - s : CH;
            if (t->src) memcpy(x, t->src + s, (size_t)m * 4);
            else memcpy(x, t->at->data + (size_t)s * 4, (size_t)m * 4);
            if (t->rowscale)
                for (int64_t j = 0; j < m; j++) x[j] *= t->rowscale[(s + j) / cols];
            if (t->colscale)
                for (int64_t j = 0; j < m; j++) x[j] *= t->colscale[(s + j) % cols];
            if (dt == ST_F32) {
                ok = fwrite(x, 4, (size_t)m, f) == (size_t)m;
            } else {
                for (int64_t j = 0; j < m; j++) y[j] = dt == ST_BF16 ? hf_f32_to_bf16(x[j]) : hf_f32_to_f16(x[j]);
                ok = fwrite(y, 2, (size_t)m, f) == (size_t)m;
            }
        }
    }
    free(x);
    free(y);
    return mc_finish_atomic(f, ok, tmp, path);
}

/* f32 data of an artifact tensor: NULL when it can be read in place (f32),
 * else a converted copy the caller frees. */
static float *f32_copy_if_needed(const art_tensor *t) {
    return t->dtype == ART_F32 ? NULL : art_tensor_f32(t);
}

int hf_export(const char *model, const char *dir, const hf_export_opts *o) {
    hf_export_opts dflt = {0};
    if (!o) o = &dflt;
    int r = -1, np = 0;
    t5_tensor *par = NULL;
    art_file *m = NULL, *ia = NULL, *vo = NULL;
    out_tensor *ot = NULL, *ad = NULL;
    float **owned = NULL;
    size_t n_owned = 0, n_ot = 0, n_ad = 0;
    float **scale = NULL;
    char *p = NULL, *adir = NULL;
    mc_val *cfg = NULL;
    t5_config c;

    if (!(m = art_open(model, "model"))) goto done;
    if (meta_config(&c, m, model) < 0 || layers_fit(&c, m->n_tensors, model) < 0) goto done;
    np = t5_param_table(&c, &par);
    if (o->ia3) {
        if (o->ia3_mode != HF_IA3_FOLD && o->ia3_mode != HF_IA3_ADAPTER) {
            mc_fail("%s: say how to export the IA3 vectors: --fold or --adapter", o->ia3);
            goto done;
        }
        if (!(ia = art_open(o->ia3, "ia3"))) goto done;
        const char *base = val_get_str(ia->meta, "base", "");
        if (*base && m->key[0] && strcmp(base, m->key)) {
            mc_fail("%s: meta.base = %s but %s has key %s: these IA3 vectors belong to another base model", o->ia3,
                    base, model, m->key);
            goto done;
        }
    }
    if (o->vocab && !(vo = art_open(o->vocab, "vocab"))) goto done;
    /* every file the export writes, checked before the work */
    const char *outs[] = {"model.safetensors", "config.json", o->vocab ? "spiece.model" : NULL,
                          o->vocab ? "tokenizer_config.json" : NULL,
                          ia && o->ia3_mode == HF_IA3_ADAPTER ? "ia3-adapter/adapter_model.safetensors" : NULL,
                          ia && o->ia3_mode == HF_IA3_ADAPTER ? "ia3-adapter/adapter_config.json" : NULL};
    for (size_t i = 0; i < sizeof outs / sizeof *outs; i++) {
        if (!outs[i]) continue;
        free(p);
        p = path_join(dir, outs[i]);
        if (mc_output_ok(p) < 0) goto done;
    }

    owned = callocCheck((size_t)np + 2, sizeof *owned);
    scale = callocCheck((size_t)np, sizeof *scale);
    ot = callocCheck((size_t)np + 2, sizeof *ot);
    const art_tensor *shared = NULL;
    for (int k = 0; k < np; k++) {
        const art_tensor *t = art_find(m, par[k].name);
        if (!t) { mc_fail("%s: tensor %s missing (is this a T5 v1.1 model artifact?)", model, par[k].name); goto done; }
        int ok = t->ndim == par[k].ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = t->shape[d] == par[k].shape[d];
        if (!ok) {
            char a[64], b[64];
            shape_text(t->ndim, t->shape, a, sizeof a);
            shape_text(par[k].ndim, par[k].shape, b, sizeof b);
            mc_fail("%s: tensor %s has shape %s but meta.config implies %s", model, par[k].name, a, b);
            goto done;
        }
        out_tensor *x = &ot[n_ot++];
        snprintf(x->name, sizeof x->name, "%s", par[k].name);
        x->ndim = par[k].ndim;
        memcpy(x->shape, par[k].shape, sizeof x->shape);
        x->numel = t->numel;
        x->at = t;
        if ((x->src = owned[n_owned] = f32_copy_if_needed(t))) n_owned++;
        if (!strcmp(par[k].name, "shared.weight")) shared = t;
    }
    /* IA3 vectors: check every one is a vector of this model's IA3 table
     * (t5.h: k, v, and wi_1 or, ReLU, wo) */
    if (ia) {
        ad = callocCheck(ia->n_tensors ? ia->n_tensors : 1, sizeof *ad);
        t5_tensor *vt = NULL;
        int nvt = t5_ia3_table(&c, &vt);
        size_t i; /* < n_tensors after a break: an error */
        for (i = 0; i < ia->n_tensors; i++) {
            const art_tensor *v = &ia->tensors[i];
            char wname[128];
            if (ia3_weight_name(v->name, wname, sizeof wname) < 0) {
                mc_fail("%s: tensor %s is not an IA3 vector (NAME.ia3_vector)", o->ia3, v->name);
                break;
            }
            int j = 0, k = 0;
            while (j < nvt && strcmp(vt[j].name, v->name)) j++;
            while (k < np && strcmp(par[k].name, wname)) k++;
            if (j == nvt || k == np) {
                mc_fail("%s: %s scales %s, which is not a k, v or %s weight of %s", o->ia3, v->name, wname,
                        c.ffn == T5_FFN_RELU ? "wo" : "wi_1", model);
                break;
            }
            int in = ia3_scales_input(v->name);
            if (v->numel != (int64_t)vt[j].numel) {
                mc_fail("%s: %s has %" PRId64 " entries but %s has %" PRId64 " %s", o->ia3, v->name, v->numel,
                        wname, (int64_t)vt[j].numel, in ? "input columns" : "output rows");
                break;
            }
            if (scale[k]) { mc_fail("%s: two vectors for %s", o->ia3, wname); break; }
            scale[k] = art_tensor_f32(v);
            if (o->ia3_mode == HF_IA3_FOLD) {
                if (in) ot[k].colscale = scale[k];
                else ot[k].rowscale = scale[k];
            } else {
                /* PEFT: k / v scale outputs ([out, 1]); the feed-forward
                 * vector is the input scale of wo ([1, d_ff]): ours on wo
                 * (ReLU) or on wi_1's output, the same entries (hf.h) */
                out_tensor *x = &ad[n_ad++];
                int ff = in || ends_with(wname, "DenseReluDense.wi_1.weight");
                char mod[128];
                snprintf(mod, sizeof mod, "%.*s", (int)(strlen(wname) - 7), wname);
                if (ff && !in) {
                    char *q = strstr(mod, "wi_1");
                    memcpy(q, "wo", 2);
                    memmove(q + 2, q + 4, strlen(q + 4) + 1);
                }
                snprintf(x->name, sizeof x->name, "base_model.model.%s.ia3_l", mod);
                x->ndim = 2;
                x->shape[0] = ff ? 1 : v->numel;
                x->shape[1] = ff ? v->numel : 1;
                x->numel = v->numel;
                x->src = scale[k];
            }
        }
        free(vt);
        if (i < ia->n_tensors) goto done;
    }
    if (o->tied) {
        const char *tied[] = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"};
        for (int i = 0; i < 2; i++) {
            out_tensor *x = &ot[n_ot++];
            *x = ot[0]; /* shared.weight is first in the table */
            snprintf(x->name, sizeof x->name, "%s", tied[i]);
            x->at = shared;
        }
    }

    if (mc_mkdir_parents(dir) < 0) goto done;
    if (mkdir(dir, 0777) < 0 && errno != EEXIST) { mc_fail("%s: cannot create: %s", dir, strerror(errno)); goto done; }
    const char *torch_dtype = o->dtype == ST_F32 ? "float32" : o->dtype == ST_BF16 ? "bfloat16" : "float16";
    free(p);
    p = path_join(dir, "model.safetensors");
    if (st_write(p, ot, n_ot, o->dtype) < 0) goto done;
    free(p);
    p = path_join(dir, "config.json");
    cfg = hf_config_to_json(&c, torch_dtype);
    if (write_json_file(p, cfg) < 0) goto done;
    val_free(cfg);
    cfg = NULL;

    if (ia && o->ia3_mode == HF_IA3_ADAPTER) {
        adir = path_join(dir, "ia3-adapter");
        if (mkdir(adir, 0777) < 0 && errno != EEXIST) { mc_fail("%s: cannot create: %s", adir, strerror(errno)); goto done; }
        free(p);
        p = path_join(adir, "adapter_model.safetensors");
        if (st_write(p, ad, n_ad, o->dtype) < 0) goto done;
        cfg = val_map();
        val_set(cfg, "auto_mapping", val_nil());
        val_set_str(cfg, "base_model_name_or_path", dir);
        val_set(cfg, "fan_in_fan_out", val_bool(0));
        mc_val *ffm = val_set_array(cfg, "feedforward_modules");
        val_push(ffm, val_str("wo"));
        val_set(cfg, "inference_mode", val_bool(1));
        val_set(cfg, "init_ia3_weights", val_bool(1));
        val_set(cfg, "modules_to_save", val_nil());
        val_set_str(cfg, "peft_type", "IA3");
        val_set(cfg, "revision", val_nil());
        mc_val *tm = val_set_array(cfg, "target_modules");
        val_push(tm, val_str("k"));
        val_push(tm, val_str("v"));
        val_push(tm, val_str("wo"));
        val_set_str(cfg, "task_type", "SEQ_2_SEQ_LM");
        free(p);
        p = path_join(adir, "adapter_config.json");
        if (write_json_file(p, cfg) < 0) goto done;
    }
    if (vo) {
        const art_tensor *sp = art_find(vo, "spiece.model");
        if (!sp || sp->dtype != ART_U8) { mc_fail("%s: no u8 tensor spiece.model", o->vocab); goto done; }
        free(p);
        p = path_join(dir, "spiece.model");
        unsigned char *bytes = mallocCheck(sp->nbytes ? sp->nbytes : 1);
        art_tensor_copy(sp, bytes);
        int wr = mc_write_atomic(p, bytes, sp->nbytes);
        free(bytes);
        if (wr < 0) goto done;
        val_free(cfg);
        cfg = val_map();
        val_set_str(cfg, "eos_token", "</s>");
        val_set_int(cfg, "extra_ids", val_get_int(vo->meta, "extra_ids", 0));
        val_set_int(cfg, "model_max_length", 512);
        val_set_str(cfg, "pad_token", "<pad>");
        val_set_str(cfg, "tokenizer_class", "T5Tokenizer");
        val_set_str(cfg, "unk_token", "<unk>");
        free(p);
        p = path_join(dir, "tokenizer_config.json");
        if (write_json_file(p, cfg) < 0) goto done;
    }
    r = 0;
done:
    if (r < 0) one_line_error();
    val_free(cfg);
    free(p);
    free(adir);
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    for (int k = 0; k < np && scale; k++) free(scale[k]);
    free(scale);
    free(ot);
    free(ad);
    free(par);
    art_close(m);
    art_close(ia);
    art_close(vo);
    return r;
}

/* ------------------------------------------------------------ PEFT IA3 import */

/* PEFT's module matching (tuners/ia3/model.py): target_modules as a string
 * is a regular expression the whole module name must match (re.fullmatch),
 * as a list it matches a module named as an entry or ending in "." + entry;
 * feedforward_modules likewise, except that a list entry matches any name
 * ending in it. Module names are the base model's ("encoder.block.0.layer.0
 * .SelfAttention.k"). Python's patterns are read as POSIX extended regular
 * expressions: the ones adapters carry (alternation, groups, ".*", "\.")
 * mean the same in both; one that does not compile is an error. */
typedef struct {
    const mc_val *list;     /* or */
    regex_t re;
    int is_re;
} peft_match;

static int peft_match_init(peft_match *m, const mc_val *v, const char *field, const char *path) {
    memset(m, 0, sizeof *m);
    if (!v || v->type == VAL_NIL) return 0; /* matches nothing */
    if (v->type == VAL_STR) {
        size_t n = v->v.str.len + 8;
        char *pat = mallocCheck(n);
        snprintf(pat, n, "^(%s)$", v->v.str.s);
        int e = regcomp(&m->re, pat, REG_EXTENDED | REG_NOSUB);
        free(pat);
        if (e) return mc_fail("%s: %s \"%s\" is not a regular expression this importer reads (POSIX extended)",
                              path, field, v->v.str.s);
        m->is_re = 1;
        return 0;
    }
    if (v->type != VAL_ARRAY) return mc_fail("%s: %s must be a list of module names or a regular expression", path, field);
    for (size_t i = 0; i < v->v.c.n; i++)
        if (v->v.c.items[i]->type != VAL_STR) return mc_fail("%s: %s[%zu] is not a string", path, field, i);
    m->list = v;
    return 0;
}

static void peft_match_free(peft_match *m) {
    if (m->is_re) regfree(&m->re);
}

/* dot: a list entry must be the name or its last dotted components
 * (target_modules); else any suffix (feedforward_modules). */
static int peft_matches(const peft_match *m, const char *module, int dot) {
    if (m->is_re) return regexec(&m->re, module, 0, NULL, 0) == 0;
    size_t n = strlen(module);
    for (size_t i = 0; m->list && i < m->list->v.c.n; i++) {
        const char *t = m->list->v.c.items[i]->v.str.s;
        size_t k = strlen(t);
        if (k > n || strcmp(module + n - k, t)) continue;
        if (!dot || k == n || module[n - k - 1] == '.') return 1;
    }
    return 0;
}

int hf_import_ia3(const char *dir, const char *base_model, const char *out, const char *key) {
    int r = -1, np = 0;
    char *cp = path_join(dir, "adapter_config.json"), *wp = path_join(dir, "adapter_model.safetensors");
    mc_val *cj = NULL, *meta = NULL;
    st_file *sf = NULL;
    art_file *bm = NULL;
    t5_tensor *vt = NULL;
    float **vec = NULL;
    float *tmp = NULL;
    t5_config c;
    peft_match tm, ffm;
    memset(&tm, 0, sizeof tm);
    memset(&ffm, 0, sizeof ffm);

    if (mc_output_ok(out) < 0 || !(cj = json_parse_file(cp))) goto done;
    const char *pt = val_get_str(cj, "peft_type", "");
    if (strcmp(pt, "IA3")) { mc_fail("%s: peft_type \"%s\": only IA3 adapters can be imported", cp, pt); goto done; }
    const mc_val *tmv = val_get(cj, "target_modules");
    if (!tmv || tmv->type == VAL_NIL) {
        mc_fail("%s: target_modules missing: a list of module names (k, v, wo) or a regular expression", cp);
        goto done;
    }
    if (peft_match_init(&tm, tmv, "target_modules", cp) < 0 ||
        peft_match_init(&ffm, val_get(cj, "feedforward_modules"), "feedforward_modules", cp) < 0)
        goto done;
    if (!(bm = art_open(base_model, "model"))) goto done;
    if (meta_config(&c, bm, base_model) < 0 || layers_fit(&c, bm->n_tensors, base_model) < 0) goto done;
    np = t5_ia3_table(&c, &vt);
    if (!(sf = st_open(wp))) goto done;
    vec = callocCheck((size_t)np, sizeof *vec);
    int relu = c.ffn == T5_FFN_RELU;
    const char *pre = "base_model.model.";
    size_t pl = strlen(pre);
    for (size_t i = 0; i < sf->n; i++) {
        const st_tensor *t = &sf->t[i];
        size_t L = strlen(t->name);
        char mod[160], vname[176];
        if (L < pl + 7 || strncmp(t->name, pre, pl) || strcmp(t->name + L - 6, ".ia3_l") || L - pl - 6 >= sizeof mod) {
            mc_fail("%s: unexpected tensor %s (PEFT IA3 names are base_model.model.MODULE.ia3_l)", wp, t->name);
            goto done;
        }
        snprintf(mod, sizeof mod, "%.*s", (int)(L - pl - 6), t->name + pl);
        if (!peft_matches(&tm, mod, 1)) {
            mc_fail("%s: %s scales module %s, which target_modules does not name", wp, t->name, mod);
            goto done;
        }
        /* k, v (any attention) and wi_1 scale their outputs; wo, a
         * feedforward module, its input: the same d_ff entries as wi_1's
         * output (hf.h), so both land on wi_1's vector and multiply. On the
         * ReLU layout wo's input is our vector itself; wi's output is not
         * (relu(s x) is s relu(x) only for s >= 0), nor is there a wi_1 */
        int ff = peft_matches(&ffm, mod, 0);
        int kv = ends_with(mod, "Attention.k") || ends_with(mod, "Attention.v");
        int wi1 = ends_with(mod, "DenseReluDense.wi_1"), wo = ends_with(mod, "DenseReluDense.wo");
        if (!((kv && !ff) || (wi1 && !ff && !relu) || (wo && ff))) {
            mc_fail("%s: %s scales the %s of %s: MaTS's IA3 scales the outputs of k, v%s and the input of "
                    "wo (a feedforward module) only", wp, t->name, ff ? "input (feedforward_modules)" : "output", mod,
                    relu ? "" : " and wi_1");
            goto done;
        }
        snprintf(vname, sizeof vname, "%.*s%s.ia3_vector", (int)(wo && !relu ? strlen(mod) - 2 : strlen(mod)), mod,
                 wo && !relu ? "wi_1" : "");
        int k = 0;
        while (k < np && strcmp(vt[k].name, vname)) k++;
        if (k == np) {
            mc_fail("%s: %s scales %s, which %s does not have", wp, t->name, mod, base_model);
            goto done;
        }
        if (convertible(t, wp) < 0) goto done;
        int64_t want = (int64_t)vt[k].numel;
        int shape_ok = t->numel == want && (t->ndim == 1 || (t->ndim == 2 && (t->shape[0] == 1 || t->shape[1] == 1)));
        if (!shape_ok) {
            char a[64];
            shape_text(t->ndim, t->shape, a, sizeof a);
            mc_fail("%s: %s has shape %s, expected %" PRId64 " entries", wp, t->name, a, want);
            goto done;
        }
        if (!vec[k]) {
            vec[k] = mallocCheck((size_t)want * sizeof **vec);
            st_read_f32(t, 0, want, vec[k]);
        } else {
            tmp = reallocCheck(tmp, (size_t)want * sizeof *tmp);
            st_read_f32(t, 0, want, tmp);
            for (int64_t j = 0; j < want; j++) vec[k][j] *= tmp[j];
        }
    }
    meta = val_map();
    val_set_str(meta, "base", bm->key);
    val_set(meta, "config", t5_config_to_val(&c));
    val_set_str(meta, "source", "hf-peft");
    char kbuf[33];
    if (!key) {
        mc_key *kk = key_new("import-hf-ia3");
        char hex[33];
        key_buf_hex(sf->map, sf->size, hex);
        key_config(kk, "adapter_model.safetensors", hex);
        key_input(kk, "base", bm->key[0] ? bm->key : "00000000000000000000000000000000");
        key_digest(kk, kbuf);
        key_free(kk);
        key = kbuf;
    }
    art_writer *w = art_writer_open(out, "ia3", key, meta, (size_t)np);
    if (!w) goto done;
    for (int k = 0; k < np; k++) {
        int64_t n = (int64_t)vt[k].numel;
        if (!vec[k]) {
            vec[k] = mallocCheck((size_t)n * sizeof **vec);
            for (int64_t i = 0; i < n; i++) vec[k][i] = 1.0f;
        }
        if (art_writer_tensor(w, vt[k].name, ART_F32, 1, &n, vec[k]) < 0) { art_writer_abort(w); goto done; }
    }
    if (art_writer_close(w) < 0) goto done;
    r = 0;
done:
    if (r < 0) one_line_error();
    for (int k = 0; vec && k < np; k++) free(vec[k]);
    free(vec);
    free(tmp);
    peft_match_free(&tm);
    peft_match_free(&ffm);
    free(vt);
    val_free(meta);
    val_free(cj);
    st_close(sf);
    art_close(bm);
    free(cp);
    free(wp);
    return r;
}
