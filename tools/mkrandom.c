/* mkrandom.c - write random artifacts of T5 shapes for tests and benchmarks:
 * `model`, `ia3`, `gram`, `fisher_diag`, `fisher_block`, with
 * positive-definite statistics.
 *
 *   mkrandom --kind model [--preset tiny|small|base] [--layout v1.1|original] [--seed S] -o PRE.msgpack
 *   mkrandom --kind model --like PRE.msgpack --scale 0.01 --seed S -o A.msgpack
 *   mkrandom --kind ia3 --base PRE.msgpack [--scale 0.1] --seed S -o IA3.msgpack
 *   mkrandom --kind gram --like A.msgpack --seed S -o GA.msgpack
 *   mkrandom --kind fisher_diag --like A.msgpack|IA3.msgpack --seed S -o FA.msgpack
 *   mkrandom --kind fisher_block --like IA3.msgpack --seed S -o FA.msgpack
 *   mkrandom --kind tokens [--preset P | --vocab N] [--examples N] --seed S -o T.msgpack
 *            (a task's tokens: inputs of 8..64 ids, two choices of 1..4, EOS-ended)
 *
 * Presets: tiny (tests), small (t5-v1.1-small: d_model 512, d_ff 1024,
 * 6 heads of 64, 8+8 layers, vocab 32128) and base (768, 2048, 12x64,
 * 12+12). --vocab N overrides the vocabulary size. --layout original makes
 * the original T5 layout of those shapes (ReLU wi / wo, head tied to
 * shared.weight: no lm_head).
 *
 * Statistics: a Gram is Z Z^T / m + 1e-3 mean(diag) I with Z (d x m,
 * m = 2d) Gaussian whose rows are scaled by exp(spread * g), g ~ N(0,1)
 * (--spread, default 0.5), so it is positive definite with a spread of
 * eigenvalues. Diagonal Fishers are exp(N(-9, 1)) (positive, Fisher-like
 * magnitudes). Keys are the XXH3-128 of the generating command's values.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "backend.h"
#include "common.h"
#include "key.h"
#include "rng.h"
#include "opts.h"
#include "t5.h"
#include "val.h"

/* ------------------------------------------------------------ RNG (xoshiro256**) */

static mc_rng R;
static void seed_rng(uint64_t seed, const char *salt) {
    uint64_t x = seed ^ MC_GOLDEN64;
    for (const char *p = salt; *p; p++) x = (x ^ (unsigned char)*p) * 0x100000001b3ull;
    mc_rng_seed_splitmix(&R, x);
}
static double uniform(void) { return ((mc_rng_next(&R) >> 11) + 0.5) * 0x1.0p-53; }
static void gauss(float *x, long n, double mean, double sd) {
    for (long i = 0; i < n; i += 2) {
        double u = uniform(), v = uniform();
        double r = sqrt(-2.0 * log(u));
        x[i] = (float)(mean + sd * r * cos(2 * M_PI * v));
        if (i + 1 < n) x[i + 1] = (float)(mean + sd * r * sin(2 * M_PI * v));
    }
}

/* ------------------------------------------------------------ T5 shapes */

typedef struct {
    int vocab, d_model, d_kv, d_ff, heads, layers, dec_layers, buckets;
} cfg_t;

/* The T5 config of a preset (the original layout: ReLU, tied head, when
 * original); its meta.config and parameter table are lib/t5's. */
static t5_config t5_cfg(const cfg_t *c, int original) {
    t5_config t = {.vocab_size = c->vocab, .d_model = c->d_model, .d_kv = c->d_kv, .d_ff = c->d_ff,
                   .num_heads = c->heads, .num_layers = c->layers, .num_decoder_layers = c->dec_layers,
                   .num_buckets = c->buckets, .max_distance = 128, .eps = 1e-6f,
                   .ffn = original ? T5_FFN_RELU : T5_FFN_GATED_GELU, .tied = original};
    return t;
}

static int is_linear(const char *name, int ndim) {
    size_t n = strlen(name);
    return ndim == 2 && n > 7 && !strcmp(name + n - 7, ".weight") && strcmp(name, "shared.weight") &&
           !strstr(name, "relative_attention_bias");
}

/* ------------------------------------------------------------ statistics */

/* A d x d positive-definite Gram. */
static void random_gram(float *G, int d, double spread) {
    int m = 2 * d;
    float *Z = mallocCheck(sizeof(float) * (size_t)d * m);
    gauss(Z, (long)d * m, 0, 1);
    for (int r = 0; r < d; r++) {
        float g;
        gauss(&g, 1, 0, 1);
        float s = (float)exp(spread * g);
        for (int c = 0; c < m; c++) Z[(size_t)r * m + c] *= s;
    }
    be_syrk(0, d, m, 1.0f / m, Z, m, 0.0f, G, d);
    double md = 0;
    for (int i = 0; i < d; i++) md += G[(size_t)i * d + i];
    md /= d;
    for (int i = 0; i < d; i++) G[(size_t)i * d + i] += (float)(1e-3 * md);
    free(Z);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    const char *like = NULL, *base = NULL, *out = NULL;
    static const char *const kinds[] = {"model", "ia3", "gram", "fisher_diag", "fisher_block", "tokens", NULL};
    static const char *const presets[] = {"tiny", "small", "base", NULL};
    static const char *const layouts[] = {"v1.1", "original", NULL};
    int kind_i = 0, preset_i, layout_i;
    double scale, spread; /* defaults: the rows below */
    long seed, vocab = -1, examples;
    opt_spec rows[] = {
        {.name = "--kind", .kind = OPT_CHOICE, .dst = &kind_i, .arg = "K", .choices = kinds, .flags = OPT_REQUIRED,
         .help = "what to write"},
        {.name = "--preset", .kind = OPT_CHOICE, .dst = &preset_i, .arg = "tiny|small|base", .choices = presets,
         .def = "tiny", .help = "model shapes (tiny: tests; small, base: t5-v1.1's)"},
        {.name = "--layout", .kind = OPT_CHOICE, .dst = &layout_i, .arg = "v1.1|original", .choices = layouts,
         .def = "v1.1", .help = "model: T5 v1.1 (gated-GELU, lm_head) or the original T5 (ReLU, tied head)"},
        {.name = "--vocab", .kind = OPT_INT, .dst = &vocab, .arg = "N", .lo = 8, .hi = 1 << 22,
         .help = "the vocabulary size instead of the preset's"},
        {.name = "--like", .kind = OPT_STR, .dst = &like, .arg = "A.msgpack", .flags = OPT_INPUT,
         .help = "model: this model plus noise; statistics: of this model's (or ia3's) shapes"},
        {.name = "--base", .kind = OPT_STR, .dst = &base, .arg = "PRE.msgpack", .flags = OPT_INPUT,
         .help = "ia3: the base model (meta.base)"},
        {.name = "--scale", .kind = OPT_FLOAT, .dst = &scale, .arg = "X", .lo = 0, .hi = 1e6, .def = "0.01",
         .help = "the standard deviation of the noise"},
        {.name = "--spread", .kind = OPT_FLOAT, .dst = &spread, .arg = "X", .lo = 0, .hi = 100, .def = "0.5",
         .help = "the spread of a Gram's eigenvalues"},
        {.name = "--examples", .kind = OPT_INT, .dst = &examples, .arg = "N", .lo = 1, .hi = 1 << 24, .def = "64",
         .help = "tokens: the number of examples"},
        {.name = "--seed", .kind = OPT_INT, .dst = &seed, .arg = "S", .lo = 0, .hi = 1099511627776.0, .def = "0",
         .help = "the random seed"},
        OPT_ROW_OUT(&out, "OUT.msgpack", "the artifact"),
        {0}};
    const opt_prog prog = {.name = "mkrandom", .opts = rows};
    opts_parse(&prog, argc - 1, argv + 1);
    const char *kind = kinds[kind_i], *preset = presets[preset_i];
    be_init(0);

    cfg_t c;
    if (!strcmp(preset, "tiny")) c = (cfg_t){64, 16, 4, 24, 2, 2, 2, 8};
    else if (!strcmp(preset, "small")) c = (cfg_t){32128, 512, 64, 1024, 6, 8, 8, 32};
    else if (!strcmp(preset, "base")) c = (cfg_t){32128, 768, 64, 2048, 12, 12, 12, 32};
    else die("internal: preset '%s'", preset);
    if (vocab > 0) c.vocab = (int)vocab;

    art_file *L = like ? art_open(like, NULL) : NULL;
    if (like && !L) die("%s", mc_error());
    art_file *B = base ? art_open(base, "model") : NULL;
    if (base && !B) die("%s", mc_error());

    char text[1024], key[33], ex_text[48];
    snprintf(text, sizeof text, "mkrandom kind=%s preset=%s vocab=%d seed=%ld scale=%.9g spread=%.9g like=%s base=%s%s%s",
             kind, preset, c.vocab, seed, scale, spread, L ? L->key : "-", B ? B->key : "-",
             strcmp(kind, "tokens") ? "" : (snprintf(ex_text, sizeof ex_text, " examples=%ld", examples), ex_text),
             layout_i ? " layout=original" : "");
    key_buf_hex(text, strlen(text), key);
    seed_rng((uint64_t)seed, kind);

    mc_val *meta = val_map();
    val_set_str(meta, "stage", "mkrandom");
    val_set_str(meta, "generator", text);
    art_writer *w = NULL;

    if (!strcmp(kind, "model")) {
        if (L && strcmp(L->kind, "model")) die("--like %s is not a model", like);
        t5_tensor *tab = NULL;
        int ntab = 0;
        if (L) {
            const mc_val *cfg = val_get(L->meta, "config");
            if (cfg) val_set(meta, "config", val_clone(cfg));
        } else {
            t5_config tc = t5_cfg(&c, layout_i);
            val_set(meta, "config", t5_config_to_val(&tc));
            ntab = t5_param_table(&tc, &tab);
        }
        size_t nt = L ? L->n_tensors : (size_t)ntab;
        w = art_writer_open(out, "model", key, meta, nt);
        if (!w) die("%s", mc_error());
        for (size_t j = 0; j < nt; j++) {
            if (L) {
                const art_tensor *t = &L->tensors[j];
                float *x = art_tensor_f32(t);
                float *e = mallocCheck(sizeof(float) * (size_t)t->numel);
                gauss(e, t->numel, 0, scale);
                for (int64_t i = 0; i < t->numel; i++) x[i] += e[i];
                if (art_writer_tensor(w, t->name, ART_F32, t->ndim, t->shape, x) < 0) die("%s", mc_error());
                free(x);
                free(e);
            } else {
                const t5_tensor *s = &tab[j];
                long n = (long)s->numel;
                float *x = mallocCheck(sizeof(float) * (size_t)n);
                if (s->ndim == 1) for (long i = 0; i < n; i++) x[i] = 1.0f;
                else gauss(x, n, 0, 1.0 / sqrt((double)s->shape[1]));
                if (art_writer_tensor(w, s->name, ART_F32, s->ndim, s->shape, x) < 0) die("%s", mc_error());
                free(x);
            }
        }
        free(tab);
    } else if (!strcmp(kind, "ia3")) {
        if (!B) die("--kind ia3 needs --base MODEL (its key goes into meta.base)");
        val_set_str(meta, "base", B->key);
        /* the base's IA3 table (lib/t5: k, v and wi_1, or wo on ReLU) */
        t5_config bc;
        if (t5_config_from_val(&bc, val_get(B->meta, "config")) < 0) die("%s: %s", base, mc_error());
        t5_tensor *tab;
        int nv = t5_ia3_table(&bc, &tab);
        w = art_writer_open(out, "ia3", key, meta, (size_t)nv);
        if (!w) die("%s", mc_error());
        for (int j = 0; j < nv; j++) {
            float *x = mallocCheck(sizeof(float) * tab[j].numel);
            gauss(x, (long)tab[j].numel, 1.0, scale);
            int64_t sh[1] = {(int64_t)tab[j].numel};
            if (art_writer_tensor(w, tab[j].name, ART_F32, 1, sh, x) < 0) die("%s", mc_error());
            free(x);
        }
        free(tab);
    } else if (!strcmp(kind, "gram")) {
        if (!L || strcmp(L->kind, "model")) die("--kind gram needs --like MODEL");
        val_set_int(meta, "n_examples", 1000);
        size_t nt = 0;
        for (size_t j = 0; j < L->n_tensors; j++)
            if (is_linear(L->tensors[j].name, L->tensors[j].ndim))
                nt += strcmp(L->tensors[j].name, "lm_head.weight") ? 2 : 1;
        w = art_writer_open(out, "gram", key, meta, nt);
        if (!w) die("%s", mc_error());
        for (size_t j = 0; j < L->n_tensors; j++) {
            const art_tensor *t = &L->tensors[j];
            if (!is_linear(t->name, t->ndim)) continue;
            for (int which = 0; which < 2; which++) {
                if (which == 1 && !strcmp(t->name, "lm_head.weight")) continue;
                int d = (int)(which ? t->shape[0] : t->shape[1]);
                char name[256];
                snprintf(name, sizeof name, "%.*s.%s", (int)(strlen(t->name) - 7), t->name,
                         which ? "output_grad_gram" : "input_gram");
                float *G = mallocCheck(sizeof(float) * (size_t)d * d);
                random_gram(G, d, spread);
                int64_t sh[2] = {d, d};
                if (art_writer_tensor(w, name, ART_F32, 2, sh, G) < 0) die("%s", mc_error());
                free(G);
            }
        }
    } else if (!strcmp(kind, "fisher_diag") || !strcmp(kind, "fisher_block")) {
        int block = !strcmp(kind, "fisher_block");
        if (!L) die("--kind %s needs --like MODEL_OR_IA3", kind);
        if (block && strcmp(L->kind, "ia3")) die("--kind fisher_block needs --like IA3");
        val_set_str(meta, "fisher", "empirical");
        val_set_int(meta, "n_examples", 1000);
        val_set_str(meta, "split", "train");
        w = art_writer_open(out, kind, key, meta, L->n_tensors);
        if (!w) die("%s", mc_error());
        for (size_t j = 0; j < L->n_tensors; j++) {
            const art_tensor *t = &L->tensors[j];
            if (block) {
                int d = (int)t->shape[0];
                float *G = mallocCheck(sizeof(float) * (size_t)d * d);
                random_gram(G, d, spread);
                int64_t sh[2] = {d, d};
                if (art_writer_tensor(w, t->name, ART_F32, 2, sh, G) < 0) die("%s", mc_error());
                free(G);
            } else {
                float *x = mallocCheck(sizeof(float) * (size_t)t->numel);
                gauss(x, t->numel, -9, 1);
                for (int64_t i = 0; i < t->numel; i++) x[i] = expf(x[i]);
                if (art_writer_tensor(w, t->name, ART_F32, t->ndim, t->shape, x) < 0) die("%s", mc_error());
                free(x);
            }
        }
    } else if (!strcmp(kind, "tokens")) {
        /* inputs of 8..64 ids, two choices of 1..4, ids in [2, vocab), each ending in EOS (1) */
        int64_t n = examples, nin = 0, nch = 0, cap_in = n * 64, cap_ch = n * 8;
        int32_t *in = mallocCheck(sizeof(int32_t) * cap_in), *ch = mallocCheck(sizeof(int32_t) * cap_ch);
        int64_t *in_off = mallocCheck(sizeof(int64_t) * (n + 1)), *ch_off = mallocCheck(sizeof(int64_t) * (2 * n + 1));
        int64_t *exch = mallocCheck(sizeof(int64_t) * (n + 1));
        int32_t *label = mallocCheck(sizeof(int32_t) * n);
        in_off[0] = ch_off[0] = 0;
        for (int64_t e = 0; e < n; e++) {
            for (int part = 0; part < 3; part++) { /* the input, then two choices */
                int len = part ? 1 + (int)mc_rng_below(&R, 4) : 8 + (int)mc_rng_below(&R, 57);
                int32_t *dst = part ? ch + nch : in + nin;
                for (int i = 0; i < len - 1; i++) dst[i] = 2 + (int32_t)mc_rng_below(&R, (uint64_t)c.vocab - 2);
                dst[len - 1] = 1;
                if (part) nch += len, ch_off[2 * e + part] = nch;
                else nin += len, in_off[e + 1] = nin;
            }
            exch[e] = 2 * e;
            label[e] = (int32_t)mc_rng_below(&R, 2);
        }
        exch[n] = 2 * n;
        val_set_str(meta, "task", "random");
        val_set_str(meta, "split", "train");
        w = art_writer_open(out, "tokens", key, meta, 6);
        if (!w || art_writer_ragged(w, "input_ids", ART_I32, in, nin, "input_offsets", in_off, n) < 0 ||
            art_writer_ragged(w, "choice_ids", ART_I32, ch, nch, "choice_offsets", ch_off, 2 * n) < 0 ||
            art_writer_rows(w, exch, label, n) < 0)
            die("%s", mc_error());
        free(in), free(ch), free(in_off), free(ch_off), free(exch), free(label);
    } else {
        die("unknown --kind '%s'", kind);
    }
    if (art_writer_close(w) < 0) die("%s", mc_error());
    val_free(meta);
    if (L) art_close(L);
    if (B) art_close(B);
    return 0;
}
