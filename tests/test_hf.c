/* test_hf.c - lib/json and lib/hf against the PyTorch reference's fixtures
 * (tests/reference/hf_ref.py -> tests/fixtures/hf/):
 *   - JSON: values, escapes, numbers, errors with line and column, duplicate
 *     members, depth limit; the writer reproduces Python's json.dumps(indent=2);
 *   - BF16/F16 -> f32 and f32 -> BF16/F16 bit for bit against torch;
 *   - the parameter table equals lib/t5.c's;
 *   - imports: F32 exact, BF16 / F16 (sharded) equal torch's roundings of the
 *     F32 model bit for bit; rank-classification scores of every imported
 *     variant (and of IA3 from a PEFT adapter, and folded into the weights on
 *     export) match the reference's;
 *   - malformed inputs fail with one line naming the file.
 *
 *   build/tests/test_hf                      run the tests
 *   build/tests/test_hf --write-tokens OUT   write scores.json's examples as a
 *                                            `tokens` artifact (for test_hf.sh)
 *   build/tests/test_hf --compare-scores METRICS VARIANT
 *                                            eval's choice_scores vs the reference's
 *                                            (VARIANT: f32 bf16 f16 f32_ia3)
 */
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "harness.h"
#include "hf.h"
#include "json.h"
#include "t5.h"
#include "tokens.h"

#define FIX "tests/fixtures/hf"

static char tmpdir[256];

static void tpath(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", tmpdir, name); }

/* ------------------------------------------------------------------ JSON */

static void test_json_values(void) {
    const char *s = "{\"a\": [1, -2, 3.5, 1e-06, 18446744073709551615, -9223372036854775808],"
                    " \"s\": \"x\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\","
                    " \"t\": true, \"f\": false, \"n\": null, \"o\": {}, \"e\": []}";
    mc_val *v = json_parse(s, strlen(s), "t");
    CHECK(v != NULL, "parse: %s", mc_error());
    if (!v) return;
    const mc_val *a = val_get(v, "a");
    CHECK(a && a->type == VAL_ARRAY && a->v.c.n == 6, "array");
    if (a && a->v.c.n == 6) {
        CHECK(a->v.c.items[0]->type == VAL_INT && a->v.c.items[0]->v.i == 1, "int");
        CHECK(a->v.c.items[1]->type == VAL_INT && a->v.c.items[1]->v.i == -2, "neg int");
        CHECK(a->v.c.items[2]->type == VAL_FLOAT && a->v.c.items[2]->v.f == 3.5, "float");
        CHECK(a->v.c.items[3]->type == VAL_FLOAT && a->v.c.items[3]->v.f == 1e-6, "exp");
        CHECK(a->v.c.items[4]->type == VAL_UINT && a->v.c.items[4]->v.u == UINT64_MAX, "uint64");
        CHECK(a->v.c.items[5]->type == VAL_INT && a->v.c.items[5]->v.i == INT64_MIN, "int64 min");
    }
    const char *want = "x\"\\/\b\f\n\r\t\xc3\xa9\xf0\x9f\x98\x80";
    const char *got = val_get_str(v, "s", "");
    CHECK(!strcmp(got, want), "escapes: got %s", got);
    CHECK(val_get(v, "t")->type == VAL_BOOL && val_get(v, "t")->v.b == 1, "true");
    CHECK(val_get(v, "f")->type == VAL_BOOL && val_get(v, "f")->v.b == 0, "false");
    CHECK(val_get(v, "n")->type == VAL_NIL, "null");
    CHECK(val_get(v, "o")->type == VAL_MAP && val_get(v, "e")->type == VAL_ARRAY, "empty containers");
    /* compact writer round trip */
    json_buf b = {0};
    json_write(&b, v, 0);
    mc_val *w = json_parse(b.s, b.len, "again");
    CHECK(w != NULL, "reparse: %s", mc_error());
    json_buf b2 = {0};
    if (w) json_write(&b2, w, 0);
    CHECK(w && !strcmp(b.s, b2.s), "write(parse(write(v))) differs:\n%s\n%s", b.s, b2.s);
    jb_free(&b);
    jb_free(&b2);
    val_free(w);
    val_free(v);
}

static void expect_json_error(const char *text, const char *want) {
    mc_val *v = json_parse(text, strlen(text), "bad.json");
    CHECK(v == NULL, "accepted: %s", text);
    val_free(v);
    if (v) return;
    const char *e = mc_error();
    CHECK(strstr(e, "bad.json: JSON error at line") && strstr(e, want) && !strchr(e, '\n'),
          "for %s: message '%s' lacks '%s'", text, e, want);
}

static void test_json_errors(void) {
    expect_json_error("{\"a\": 1,}", "line 1, column 9: expected a member name");
    expect_json_error("{\"a\": 1\n \"b\": 2}", "line 2, column 2: expected ',' or '}'");
    expect_json_error("[1, 2", "expected ',' or ']'");
    expect_json_error("{\"a\": 1, \"a\": 2}", "appears twice");
    expect_json_error("\"abc", "unterminated string");
    expect_json_error("\"a\nb\"", "control byte");
    expect_json_error("\"\\x\"", "invalid escape");
    expect_json_error("\"\\ud800\"", "surrogate");
    expect_json_error("01", "leading zero");
    expect_json_error("1.", "digit expected");
    expect_json_error("-", "malformed number");
    expect_json_error("tru", "unexpected 't'");
    expect_json_error("{} x", "after the end");
    expect_json_error("", "end of input");
    char deep[200];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    expect_json_error(deep, "nested deeper");
}

/* The indented writer gives Python's json.dumps(indent=2) bytes. */
static void test_json_python_format(void) {
    const char *files[] = {FIX "/scores.json", FIX "/tiny-f32/config.json", FIX "/tiny-ia3-peft/adapter_config.json",
                           FIX "/tiny-f16-sharded/model.safetensors.index.json"};
    for (int i = 0; i < 4; i++) {
        unsigned char *buf;
        size_t n;
        if (mc_read_file(files[i], &buf, &n) < 0) { CHECK(0, "%s", mc_error()); continue; }
        mc_val *v = json_parse((const char *)buf, n, files[i]);
        CHECK(v != NULL, "%s", mc_error());
        json_buf b = {0};
        json_write(&b, v, 2);
        jb_puts(&b, "\n");
        CHECK(b.len == n && !memcmp(b.s, buf, n), "%s: rewritten text differs from Python's", files[i]);
        jb_free(&b);
        val_free(v);
        free(buf);
    }
}

/* ------------------------------------------------------------------ conversions */

/* How many of the 16-bit values `bits` widen to other float32 bits than
 * torch's `want`; the first `show` are printed. */
static int widen_differs(const char *what, const st_tensor *bits, const st_tensor *want, float (*widen)(uint16_t),
                         int show) {
    int bad = 0;
    for (int64_t i = 0; i < bits->numel; i++) {
        uint16_t h;
        uint32_t w, got;
        memcpy(&h, bits->data + 2 * i, 2);
        memcpy(&w, want->data + 4 * i, 4);
        float g = widen(h);
        memcpy(&got, &g, 4);
        if (got != w && bad++ < show) printf("  %s %04x -> %08x, torch %08x\n", what, h, got, w);
    }
    return bad;
}

static void test_conversions_match_torch(void) {
    st_file *f = st_open(FIX "/convert.safetensors");
    CHECK(f != NULL, "%s", mc_error());
    if (!f) return;
    const st_tensor *bb = st_find(f, "bf16_bits"), *bf = st_find(f, "bf16_as_f32"), *hb = st_find(f, "f16_bits"),
                    *hf = st_find(f, "f16_as_f32"), *src = st_find(f, "f32_src"), *tb = st_find(f, "f32_to_bf16"),
                    *th = st_find(f, "f32_to_f16");
    CHECK(bb && bf && hb && hf && src && tb && th, "fixture tensors missing");
    if (!(bb && bf && hb && hf && src && tb && th)) { st_close(f); return; }
    int bad = 0;
    bad += widen_differs("bf16", bb, bf, hf_bf16_to_f32, 5 - bad);
    bad += widen_differs("f16", hb, hf, hf_f16_to_f32, 10 - bad);
    for (int64_t i = 0; i < src->numel; i++) {
        float x;
        uint16_t wb, wh;
        memcpy(&x, src->data + 4 * i, 4);
        memcpy(&wb, tb->data + 2 * i, 2);
        memcpy(&wh, th->data + 2 * i, 2);
        uint16_t gb = hf_f32_to_bf16(x), gh = hf_f32_to_f16(x);
        uint32_t xb;
        memcpy(&xb, &x, 4);
        if (x != x) {
            /* NaN: torch's vectorised f32->bf16 gives 0xffff, its scalar path
             * 0x7fc0; any NaN is right, the payload is not part of the contract */
            CHECK((gb & 0x7f80) == 0x7f80 && (gb & 0x7f) && (gh & 0x7c00) == 0x7c00 && (gh & 0x3ff),
                  "NaN -> bf16 %04x, f16 %04x: not NaN", gb, gh);
            continue;
        }
        if (gb != wb && bad++ < 15) printf("  f32 %08x (%g) -> bf16 %04x, torch %04x\n", xb, x, gb, wb);
        if (gh != wh && bad++ < 20) printf("  f32 %08x (%g) -> f16 %04x, torch %04x\n", xb, x, gh, wh);
    }
    CHECK(bad == 0, "%d conversions differ from torch", bad);
    CHECK(bb->numel > 2000 && src->numel > 3000, "fixture too small");
    st_close(f);
}

/* ------------------------------------------------------------------ tables */

/* config.json -> t5_config -> meta.config -> t5_config is the identity (one
 * mapping, lib/t5.c), and the table import and export walk without a model
 * is the model's own. */
static void test_config_one_mapping(void) {
    mc_val *j = json_parse_file(FIX "/tiny-f16-sharded/config.json");
    CHECK(j != NULL, "%s", mc_error());
    if (!j) return;
    t5_config c, back;
    hf_head h;
    CHECK(hf_config_from_json(&c, &h, j, "config.json") == 0, "%s", mc_error());
    c.num_decoder_layers = 3; /* unlike num_layers: a default must not fill it */
    strcpy(c.model_type, "mt5");
    c.extra_id_0 = c.vocab_size - 5;
    mc_val *meta = t5_config_to_val(&c);
    CHECK(t5_config_from_val(&back, meta) == 0, "t5 rejects its own meta.config: %s", mc_error());
    CHECK(t5_config_equal(&c, &back) && !strcmp(back.model_type, "mt5") && back.extra_id_0 == c.extra_id_0,
          "meta.config round trip changed the config");
    t5_tensor *p;
    int n = t5_param_table(&c, &p);
    t5_model *m = t5_new(&c, 0, 0);
    CHECK(m->n_tensors == n, "%d tensors vs the model's %d", n, m->n_tensors);
    for (int i = 0; i < n && i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        CHECK(!strcmp(p[i].name, t->name) && p[i].ndim == t->ndim && p[i].shape[0] == t->shape[0] &&
                  p[i].shape[1] == t->shape[1] && p[i].offset == t->offset,
              "entry %d: %s vs the model's %s", i, p[i].name, t->name);
    }
    t5_free(m);
    val_free(meta);
    val_free(j);
    free(p);
}

/* ------------------------------------------------------------------ imports */

static int import(const char *dir, const char *name, char *out, size_t n) {
    tpath(out, n, name);
    hf_import_opts o = {NULL, NULL, 0, NULL};
    int r = hf_import(dir, out, &o);
    CHECK(r == 0, "import %s: %s", dir, mc_error());
    return r;
}

static void test_import_exact(void) {
    char p32[300], pbf[300], p16[300];
    if (import(FIX "/tiny-f32", "f32.msgpack", p32, sizeof p32) || import(FIX "/tiny-bf16", "bf16.msgpack", pbf, sizeof pbf) ||
        import(FIX "/tiny-f16-sharded", "f16.msgpack", p16, sizeof p16))
        return;
    art_file *a = art_open(p32, "model"), *b = art_open(pbf, "model"), *h = art_open(p16, "model");
    st_file *s = st_open(FIX "/tiny-f32/model.safetensors");
    CHECK(a && b && h && s, "open: %s", mc_error());
    if (!(a && b && h && s)) goto out;
    CHECK(a->n_tensors == 38 && b->n_tensors == 38 && h->n_tensors == 38, "tensor counts %zu %zu %zu", a->n_tensors,
          b->n_tensors, h->n_tensors);
    CHECK(!strcmp(val_get_str(b->meta, "hf_dtype", ""), "BF16"), "meta.hf_dtype");
    long bad32 = 0, badbf = 0, bad16 = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *t = &a->tensors[i], *tb = art_find(b, t->name), *th = art_find(h, t->name);
        const st_tensor *st = st_find(s, t->name);
        CHECK(t->dtype == ART_F32 && st && tb && th, "%s", t->name);
        if (!(st && tb && th)) continue;
        bad32 += memcmp(t->data, st->data, t->nbytes) != 0;
        for (int64_t j = 0; j < t->numel; j++) {
            float x, yb, yh;
            memcpy(&x, t->data + 4 * j, 4);
            memcpy(&yb, tb->data + 4 * j, 4);
            memcpy(&yh, th->data + 4 * j, 4);
            float rb = hf_bf16_to_f32(hf_f32_to_bf16(x)), rh = hf_f16_to_f32(hf_f32_to_f16(x));
            badbf += memcmp(&rb, &yb, 4) != 0;
            bad16 += memcmp(&rh, &yh, 4) != 0;
        }
    }
    CHECK(bad32 == 0, "%ld f32 tensors differ from the file's bytes", bad32);
    CHECK(badbf == 0 && bad16 == 0, "%ld bf16 / %ld f16 values differ from the rounded f32 model", badbf, bad16);
    /* the config */
    t5_config tc;
    CHECK(t5_config_from_val(&tc, val_get(b->meta, "config")) == 0, "%s", mc_error());
    CHECK(tc.vocab_size == 64 && tc.d_model == 16 && tc.d_kv == 4 && tc.d_ff == 24 && tc.num_heads == 2 &&
              tc.num_layers == 2 && tc.num_decoder_layers == 1 && tc.num_buckets == 8 && tc.max_distance == 16 &&
              tc.eps == 1e-6f,
          "config values");
out:
    art_close(a);
    art_close(b);
    art_close(h);
    st_close(s);
}

/* ------------------------------------------------------------------ scores */

typedef struct {
    int n;
    int *len_in, **in, *n_ch, **len_ch, ***ch;
} examples;

static mc_val *load_scores(void) {
    mc_val *v = json_parse_file(FIX "/scores.json");
    CHECK(v != NULL, "%s", mc_error());
    return v;
}

/* Summed log-likelihood of every choice of every example under model+ia3
 * (NULL), computed with lib/t5 the way eval does (dec_enc points all choices
 * at the one encoded input). Returns a malloc'd array in example order. */
static float *score_model(const char *model, const char *ia3, const mc_val *exs, int *n_out) {
    char key[33];
    t5_model *m = t5_load_model(model, 0, ia3 != NULL, key);
    CHECK(m != NULL, "load %s: %s", model, mc_error());
    if (!m) return NULL;
    if (ia3 && t5_load_ia3(m, ia3, key) < 0) {
        CHECK(0, "load ia3: %s", mc_error());
        t5_free(m);
        return NULL;
    }
    int total = 0, maxTe = 1, maxBd = 1, maxTd = 1;
    for (size_t e = 0; e < exs->v.c.n; e++) {
        const mc_val *ex = exs->v.c.items[e], *in = val_get(ex, "input"), *ch = val_get(ex, "choices");
        if ((int)in->v.c.n > maxTe) maxTe = (int)in->v.c.n;
        if ((int)ch->v.c.n > maxBd) maxBd = (int)ch->v.c.n;
        for (size_t c = 0; c < ch->v.c.n; c++)
            if ((int)ch->v.c.items[c]->v.c.n > maxTd) maxTd = (int)ch->v.c.items[c]->v.c.n;
        total += (int)ch->v.c.n;
    }
    t5_alloc_acts(m, 1, maxTe, maxBd, maxTd, 0);
    float *out = mallocCheck((size_t)total * sizeof *out);
    int *enc = callocCheck((size_t)maxTe, sizeof *enc), *dec = callocCheck((size_t)maxBd * maxTd, sizeof *dec),
        *tgt = callocCheck((size_t)maxBd * maxTd, sizeof *tgt), *de = callocCheck((size_t)maxBd, sizeof *de);
    int k = 0;
    for (size_t e = 0; e < exs->v.c.n; e++) {
        const mc_val *ex = exs->v.c.items[e], *in = val_get(ex, "input"), *ch = val_get(ex, "choices");
        int Te = (int)in->v.c.n, Bd = (int)ch->v.c.n, Td = 1;
        for (int c = 0; c < Bd; c++)
            if ((int)ch->v.c.items[c]->v.c.n > Td) Td = (int)ch->v.c.items[c]->v.c.n;
        for (int t = 0; t < Te; t++) enc[t] = (int)in->v.c.items[t]->v.i;
        memset(tgt, 0, sizeof(int) * (size_t)Bd * Td);
        memset(dec, 0, sizeof(int) * (size_t)Bd * Td);
        for (int c = 0; c < Bd; c++) {
            const mc_val *cv = ch->v.c.items[c];
            for (size_t t = 0; t < cv->v.c.n; t++) tgt[c * Td + (int)t] = (int)cv->v.c.items[t]->v.i;
            for (int t = 1; t < Td; t++) dec[c * Td + t] = tgt[c * Td + t - 1];
        }
        t5_batch b = {1, Te, Bd, Td, enc, dec, tgt, de};
        t5_forward(m, &b);
        t5_row_logprob(m, out + k);
        k += Bd;
    }
    free(enc);
    free(dec);
    free(tgt);
    free(de);
    t5_free(m);
    *n_out = total;
    return out;
}

static float *ref_scores(const mc_val *v, const char *variant, int *n) {
    const mc_val *s = val_get(val_get(v, "scores"), variant);
    int total = 0;
    for (size_t e = 0; e < s->v.c.n; e++) total += (int)s->v.c.items[e]->v.c.n;
    float *r = mallocCheck((size_t)total * sizeof *r);
    int k = 0;
    for (size_t e = 0; e < s->v.c.n; e++)
        for (size_t c = 0; c < s->v.c.items[e]->v.c.n; c++) r[k++] = (float)s->v.c.items[e]->v.c.items[c]->v.f;
    *n = total;
    return r;
}

static void check_scores(const char *label, const char *model, const char *ia3, const char *variant) {
    mc_val *v = load_scores();
    if (!v) return;
    int n = 0, nr = 0;
    float *got = score_model(model, ia3, val_get(v, "examples"), &n);
    float *want = ref_scores(v, variant, &nr);
    CHECK(got && n == nr, "%s: %d scores vs %d", label, got ? n : -1, nr);
    /* float32 forward vs the float64 reference: log-likelihoods of a few
     * tokens, magnitudes ~10 */
    if (got && n == nr) t_close(label, got, want, n, 1e-5, 1e-4);
    free(got);
    free(want);
    val_free(v);
}

static void test_scores_f32(void) {
    char p[300];
    if (!import(FIX "/tiny-f32", "s32.msgpack", p, sizeof p)) check_scores("scores_f32", p, NULL, "f32");
}

static void test_scores_bf16(void) {
    char p[300];
    if (!import(FIX "/tiny-bf16", "sbf.msgpack", p, sizeof p)) check_scores("scores_bf16", p, NULL, "bf16");
}

static void test_scores_f16_sharded(void) {
    char p[300];
    if (!import(FIX "/tiny-f16-sharded", "s16.msgpack", p, sizeof p)) check_scores("scores_f16", p, NULL, "f16");
}

/* The PEFT adapter ADAPTER on the imported BASE gives the reference's
 * scores VARIANT, and so does the model it exports folded: which scaled
 * exactly the rows of k, v and wi_1 and the columns of wo (the ReLU
 * layout's vector, on wo's input) that have a vector, `want_scaled`
 * tensors, and nothing else. TAG names the files. */
static void peft_and_folded(const char *base, const char *adapter, const char *tag, const char *variant,
                            long want_scaled) {
    char ia[300], dir[300], folded[300], nm[40];
    snprintf(nm, sizeof nm, "%s-ia3.msgpack", tag);
    tpath(ia, sizeof ia, nm);
    CHECK(hf_import_ia3(adapter, base, ia, NULL) == 0, "import peft: %s", mc_error());
    snprintf(nm, sizeof nm, "scores_%s_peft", tag);
    check_scores(nm, base, ia, variant);
    snprintf(nm, sizeof nm, "%s-folded", tag);
    tpath(dir, sizeof dir, nm);
    hf_export_opts o = {ia, HF_IA3_FOLD, ST_F32, NULL, 0};
    CHECK(hf_export(base, dir, &o) == 0, "export fold: %s", mc_error());
    snprintf(nm, sizeof nm, "%s-folded.msgpack", tag);
    if (import(dir, nm, folded, sizeof folded)) return;
    snprintf(nm, sizeof nm, "scores_%s_folded", tag);
    check_scores(nm, folded, NULL, variant);
    art_file *a = art_open(base, "model"), *b = art_open(folded, "model"), *v = art_open(ia, "ia3");
    CHECK(a && b && v, "%s", mc_error());
    long bad = 0, scaled = 0;
    for (size_t i = 0; a && b && v && i < a->n_tensors; i++) {
        const art_tensor *t = &a->tensors[i], *u = art_find(b, t->name);
        char vn[160];
        snprintf(vn, sizeof vn, "%.*s.ia3_vector", (int)(strlen(t->name) - 7), t->name);
        const art_tensor *sv = art_find(v, vn);
        int col = strstr(t->name, "DenseReluDense.wo.") != NULL;
        float *x = art_tensor_f32(t), *y = art_tensor_f32(u), *s = sv ? art_tensor_f32(sv) : NULL;
        int64_t cols = t->ndim == 2 ? t->shape[1] : 1;
        for (int64_t j = 0; j < t->numel; j++) {
            float want = s ? x[j] * s[col ? j % cols : j / cols] : x[j];
            bad += memcmp(&want, &y[j], 4) != 0;
        }
        scaled += s != NULL;
        free(x), free(y), free(s);
    }
    CHECK(bad == 0 && scaled == want_scaled, "%ld values differ; %ld tensors scaled, want %ld", bad, scaled, want_scaled);
    art_close(a);
    art_close(b);
    art_close(v);
}

/* 2 encoder layers of k, v, wi_1 and 1 decoder layer of k, v, cross k, v, wi_1 */
static void test_scores_ia3_peft_and_folded(void) {
    char p[300];
    if (!import(FIX "/tiny-f32", "base.msgpack", p, sizeof p))
        peft_and_folded(p, FIX "/tiny-ia3-peft", "v11", "f32_ia3", 2 * 3 + 1 * 5);
}

static void expect_import_error(const char *dir, const char *file_in_msg, const char *want);
static int config_variant(const char *src, const char *name, const char *from, const char *to, char *dir, size_t dn);

/* The original T5 layout (tiny-orig*: ReLU, head tied to shared.weight
 * and scaled) as transformers 4 and 5 and the hub write it: one model, the
 * reference's scores; its PEFT adapter (wo's input) gives the IA3 scores,
 * and folded into the weights scales wo's columns. */
static void test_scores_original(void) {
    const char *dirs[] = {"tiny-orig", "tiny-orig-v4", "tiny-orig-hub", "tiny-orig-v5"};
    char p[300], first[300] = "";
    for (int i = 0; i < 4; i++) {
        char src[200], name[64];
        snprintf(src, sizeof src, FIX "/%s", dirs[i]);
        snprintf(name, sizeof name, "%s.msgpack", dirs[i]);
        if (import(src, name, p, sizeof p)) continue;
        t5_model *m = t5_load_model(p, 0, 0, NULL);
        CHECK(m && m->c.ffn == T5_FFN_RELU && m->c.tied && !t5_param(m, "lm_head.weight", NULL),
              "%s: not imported as the original layout", dirs[i]);
        t5_free(m);
        check_scores(dirs[i], p, NULL, "orig");
        if (!i) snprintf(first, sizeof first, "%s", p);
    }
    /* wo's columns: 2 encoder layers of k, v, wo, 1 decoder layer of k, v,
     * cross k, v, wo */
    if (*first) peft_and_folded(first, FIX "/tiny-ia3-orig", "orig", "orig_ia3", 2 * 3 + 1 * 5);
}

/* Heads transformers 4 and 5 would compute differently from one file, or
 * that neither layout has, are refused naming the field. */
static void test_original_heads_refused(void) {
    const struct { const char *src, *from, *to, *want; } cases[] = {
        /* tied but unscaled: 4.x would scale (it ignores the flag), 5.x not */
        {"tiny-orig", "\"scale_decoder_outputs\": true", "\"scale_decoder_outputs\": false",
         "tie_word_embeddings is true but scale_decoder_outputs false"},
        /* 5.x, unscaled, no lm_head: a tied unscaled head */
        {"tiny-orig-v5", "\"scale_decoder_outputs\": true", "\"scale_decoder_outputs\": false",
         "no lm_head.weight"},
        /* 4.x untied but scaled, no lm_head to be untied with */
        {"tiny-orig", "\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false",
         "scale_decoder_outputs is true with tie_word_embeddings false"},
        /* a gated ReLU (is_gated_act overrides feed_forward_proj) is neither layout */
        {"tiny-orig", "\"is_gated_act\": false", "\"is_gated_act\": true",
         "a gated feed-forward (is_gated_act) with activation \"relu\" (dense_act_fn)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char d[300], name[32];
        snprintf(name, sizeof name, "orighead%zu", i);
        if (config_variant(cases[i].src, name, cases[i].from, cases[i].to, d, sizeof d) < 0) continue;
        strcat(name, "/");
        expect_import_error(d, name, cases[i].want);
    }
}

/* A model written by lib/t5 (what train and merge write) exports and comes
 * back with the same tensors and config; with a key, IA3 vectors whose
 * meta.base names it export against it. Both layouts. */
static void test_t5_model_roundtrip(void) {
    for (int orig = 0; orig < 2; orig++) {
        t5_config tc = {.vocab_size = 40, .d_model = 8, .d_kv = 3, .d_ff = 12, .num_heads = 2, .num_layers = 1,
                        .num_decoder_layers = 2, .num_buckets = 6, .max_distance = 10, .eps = 1e-6f,
                        .ffn = orig ? T5_FFN_RELU : T5_FFN_GATED_GELU, .tied = orig};
        t5_model *m = t5_new(&tc, 0, 1);
        t5_init_random(m, 7);
        for (size_t i = 0; i < m->n_ia3; i++) m->ia3[i] = 1.0f + 0.01f * (float)(i % 17);
        char p[300], ia[300], dir[300], back[300];
        tpath(p, sizeof p, orig ? "t5o.msgpack" : "t5.msgpack");
        tpath(ia, sizeof ia, orig ? "t5o-ia3.msgpack" : "t5-ia3.msgpack");
        tpath(dir, sizeof dir, orig ? "t5o-export" : "t5-export");
        tpath(back, sizeof back, orig ? "t5o-back.msgpack" : "t5-back.msgpack");
        const char *key = "00112233445566778899aabbccddeeff";
        CHECK(t5_save_model(m, p, key, NULL) == 0, "%s", mc_error());
        CHECK(t5_save_ia3(m, ia, "", key, NULL) == 0, "%s", mc_error());
        hf_export_opts o = {ia, HF_IA3_ADAPTER, ST_F32, NULL, 0};
        CHECK(hf_export(p, dir, &o) == 0, "export: %s", mc_error());
        hf_import_opts io = {NULL, NULL, 0, p};
        CHECK(hf_import(dir, back, &io) == 0, "import: %s", mc_error());
        char k2[33];
        t5_model *b = t5_load_model(back, 0, 0, k2);
        CHECK(b != NULL, "t5_load_model on the re-import: %s", mc_error());
        if (b) {
            CHECK(t5_config_equal(&m->c, &b->c), "config changed in the round trip");
            CHECK(b->n_params == m->n_params && !memcmp(b->params, m->params, m->n_params * sizeof(float)),
                  "parameters changed in the round trip");
            t5_free(b);
        }
        /* the adapter comes back as the same vectors */
        char adir[400], ia2[300];
        snprintf(adir, sizeof adir, "%s/ia3-adapter", dir);
        tpath(ia2, sizeof ia2, orig ? "t5o-ia3-back.msgpack" : "t5-ia3-back.msgpack");
        CHECK(hf_import_ia3(adir, p, ia2, NULL) == 0, "import adapter: %s", mc_error());
        t5_model *c = t5_load_model(p, 0, 1, k2);
        if (c) {
            CHECK(t5_load_ia3(c, ia2, k2) == 0, "%s", mc_error());
            CHECK(!memcmp(c->ia3, m->ia3, m->n_ia3 * sizeof(float)), "IA3 vectors changed in the round trip");
            t5_free(c);
        }
        t5_free(m);
    }
}

/* ------------------------------------------------------------------ malformed */

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void copy_file(const char *from, const char *to) {
    unsigned char *b;
    size_t n;
    if (mc_read_file(from, &b, &n) == 0) {
        write_bytes(to, b, n);
        free(b);
    }
}

/* A checkpoint dir with the f32 fixture's config.json and a model.safetensors
 * of the given header (padded) + data bytes. */
static void make_ckpt(const char *dir, const char *header, const void *data, size_t n) {
    char p[400];
    mkdir(dir, 0777);
    snprintf(p, sizeof p, "%s/config.json", dir);
    copy_file(FIX "/tiny-f32/config.json", p);
    size_t hl = strlen(header);
    unsigned char *b = mallocCheck(8 + hl + n + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    if (n) memcpy(b + 8 + hl, data, n);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    write_bytes(p, b, 8 + hl + n);
    free(b);
}

static void expect_import_error(const char *dir, const char *file_in_msg, const char *want) {
    char out[300];
    tpath(out, sizeof out, "bad.msgpack");
    hf_import_opts o = {NULL, NULL, 0, NULL};
    int r = hf_import(dir, out, &o);
    CHECK(r < 0, "%s: accepted", dir);
    if (r == 0) return;
    const char *e = mc_error();
    CHECK(strstr(e, file_in_msg) && strstr(e, want) && !strchr(e, '\n'), "message '%s' lacks '%s' / '%s'", e,
          file_in_msg, want);
    CHECK(access(out, F_OK) != 0, "a failed import left %s", out);
}

/* The f32 fixture's safetensors with its header text rewritten. */
static void variant(const char *name, const char *from, const char *to, char *dir, size_t dn) {
    unsigned char *b;
    size_t n;
    snprintf(dir, dn, "%s/%s", tmpdir, name);
    if (mc_read_file(FIX "/tiny-f32/model.safetensors", &b, &n) < 0) return;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
    char *h = mallocCheck(hl + 1);
    memcpy(h, b + 8, hl);
    h[hl] = 0;
    char *at = strstr(h, from);
    CHECK(at != NULL, "variant %s: '%s' not in the header", name, from);
    if (at) {
        size_t nh = hl - strlen(from) + strlen(to);
        char *h2 = mallocCheck(nh + 1);
        snprintf(h2, nh + 1, "%.*s%s%s", (int)(at - h), h, to, at + strlen(from));
        make_ckpt(dir, h2, b + 8 + hl, n - 8 - hl);
        free(h2);
    }
    free(h);
    free(b);
}

static void test_malformed(void) {
    char d[300], p[400];
    /* header length beyond the file */
    snprintf(d, sizeof d, "%s/hlen", tmpdir);
    mkdir(d, 0777);
    snprintf(p, sizeof p, "%s/config.json", d);
    copy_file(FIX "/tiny-f32/config.json", p);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    unsigned char junk[16] = {0xff, 0xff, 0xff, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(p, junk, sizeof junk);
    expect_import_error(d, "hlen/model.safetensors", "header length");
    write_bytes(p, junk, 5);
    expect_import_error(d, "hlen/model.safetensors", "too short");
    /* truncated data */
    snprintf(d, sizeof d, "%s/trunc", tmpdir);
    mkdir(d, 0777);
    snprintf(p, sizeof p, "%s/config.json", d);
    copy_file(FIX "/tiny-f32/config.json", p);
    unsigned char *b;
    size_t n;
    if (mc_read_file(FIX "/tiny-f32/model.safetensors", &b, &n) == 0) {
        snprintf(p, sizeof p, "%s/model.safetensors", d);
        write_bytes(p, b, n - 100);
        free(b);
        expect_import_error(d, "trunc/model.safetensors", "outside the");
    }
    /* JSON error in the header */
    variant("json", "\"dtype\":\"F32\"", "\"dtype\" \"F32\"", d, sizeof d);
    expect_import_error(d, "json/model.safetensors (safetensors header): JSON error at line 1", "expected ':'");
    /* unknown and unsupported dtypes */
    variant("dtype", "{\"dtype\":\"F32\"", "{\"dtype\":\"Q4\"", d, sizeof d);
    expect_import_error(d, "dtype/model.safetensors", "unknown dtype \"Q4\"");
    variant("i32", "\"decoder.block.0.layer.0.SelfAttention.k.weight\":{\"dtype\":\"F32\"",
            "\"decoder.block.0.layer.0.SelfAttention.k.weight\":{\"dtype\":\"I32\"", d, sizeof d);
    expect_import_error(d, "i32/model.safetensors", "has dtype I32: only F32, F16 and BF16");
    /* a tensor missing: rename it away */
    variant("missing", "\"lm_head.weight\"", "\"lm_head.weigh\"", d, sizeof d);
    expect_import_error(d, "missing/model.safetensors", "unexpected tensor lm_head.weigh");
    /* shape mismatch (same byte count, transposed) */
    variant("shape", "\"decoder.block.0.layer.0.SelfAttention.k.weight\":{\"dtype\":\"F32\",\"shape\":[8,16]",
            "\"decoder.block.0.layer.0.SelfAttention.k.weight\":{\"dtype\":\"F32\",\"shape\":[16,8]", d, sizeof d);
    expect_import_error(d, "shape/model.safetensors", "SelfAttention.k.weight has shape [16, 8] but config.json implies [8, 16]");
    /* offsets that overlap */
    variant("overlap", "\"data_offsets\":[512,1024]", "\"data_offsets\":[0,512]", d, sizeof d);
    expect_import_error(d, "overlap/model.safetensors", "overlapping or missing data");
    /* size mismatch between shape and offsets */
    variant("span", "\"shape\":[8,16],\"data_offsets\":[0,512]", "\"shape\":[8,15],\"data_offsets\":[0,512]", d, sizeof d);
    expect_import_error(d, "span/model.safetensors", "need 480");
}

/* A copy of fixture SRC (config.json and model.safetensors) in tmpdir/NAME
 * with `from` replaced by `to` in config.json; the directory in dir. */
static int config_variant(const char *src, const char *name, const char *from, const char *to, char *dir, size_t dn) {
    char p[400], f[300];
    unsigned char *cj;
    size_t cn;
    snprintf(dir, dn, "%s/%s", tmpdir, name);
    mkdir(dir, 0777);
    snprintf(f, sizeof f, FIX "/%s/model.safetensors", src);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    copy_file(f, p);
    snprintf(f, sizeof f, FIX "/%s/config.json", src);
    if (mc_read_file(f, &cj, &cn) < 0) { CHECK(0, "%s", mc_error()); return -1; }
    char *text = mallocCheck(cn + 1);
    memcpy(text, cj, cn);
    text[cn] = 0;
    free(cj);
    char *at = strstr(text, from);
    CHECK(at != NULL, "%s: '%s' not in %s", name, from, f);
    if (!at) { free(text); return -1; }
    size_t nn = cn - strlen(from) + strlen(to);
    char *t2 = mallocCheck(nn + 1);
    snprintf(t2, nn + 1, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    snprintf(p, sizeof p, "%s/config.json", dir);
    write_bytes(p, t2, strlen(t2));
    free(t2);
    free(text);
    return 0;
}

static void test_malformed_configs(void) {
    const struct { const char *from, *to, *want; } cases[] = {
        /* dense_act_fn and is_gated_act override what feed_forward_proj implies */
        {"\"dense_act_fn\": \"gelu_new\"", "\"dense_act_fn\": \"gelu\"", "activation \"gelu\" (dense_act_fn)"},
        {"\"is_gated_act\": true", "\"is_gated_act\": false", "a plain feed-forward (is_gated_act) with activation \"gelu_new\""},
        {"\"tie_word_embeddings\": false", "\"tie_word_embeddings\": true", "tie_word_embeddings is true"},
        {"\"scale_decoder_outputs\": false", "\"scale_decoder_outputs\": true", "scale_decoder_outputs is true"},
        {"\"d_model\": 16,", "", "d_model missing"},
        {"\"d_kv\": 4", "\"d_kv\": 4.5", "d_kv is not an integer"},
        {"\"eos_token_id\": 1", "\"eos_token_id\": 2", "\"eos_token_id\" must be 1"},
        {"\"model_type\": \"t5\"", "\"model_type\": \"bart\"", "model_type \"bart\""},
        {"\"d_ff\": 24,", "\"d_ff\": 24", "expected ',' or '}'"},
        {"\"d_model\": 16", "\"d_model\": 32", "config.json implies"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char d[300], name[32];
        snprintf(name, sizeof name, "cfg%zu", i);
        if (config_variant("tiny-f32", name, cases[i].from, cases[i].to, d, sizeof d) < 0) continue;
        strcat(name, "/");
        expect_import_error(d, name, cases[i].want);
    }
}

/* The feed-forward as transformers derives it: a dense_act_fn in the file
 * overrides feed_forward_proj (a gated-silu config whose dense_act_fn says
 * gelu_new is T5 v1.1's); without one, "relu" is the original T5's, which
 * then wants wi, not v1.1's wi_0 / wi_1; "gated-silu" is not implemented
 * and says so naming the key. */
static void test_feed_forward_fields(void) {
    char d[300], out[300], ref[300];
    if (config_variant("tiny-f32", "ffsilu", "\"feed_forward_proj\": \"gated-gelu\"",
                       "\"feed_forward_proj\": \"gated-silu\"", d, sizeof d) == 0 &&
        import(d, "ffsilu.msgpack", out, sizeof out) == 0 && import(FIX "/tiny-f32", "ffref.msgpack", ref, sizeof ref) == 0) {
        art_file *a = art_open(out, "model"), *b = art_open(ref, "model");
        CHECK(a && b && a->n_tensors == b->n_tensors, "%s", mc_error());
        for (size_t i = 0; a && b && i < a->n_tensors && i < b->n_tensors; i++)
            CHECK(a->tensors[i].nbytes == b->tensors[i].nbytes &&
                      !memcmp(a->tensors[i].data, b->tensors[i].data, a->tensors[i].nbytes),
                  "tensor %s differs", a->tensors[i].name);
        art_close(a);
        art_close(b);
    }
    if (config_variant("tiny-bf16", "ffrelu", "\"feed_forward_proj\": \"gated-gelu\"", "\"feed_forward_proj\": \"relu\"",
                       d, sizeof d) == 0)
        expect_import_error(d, "ffrelu/model.safetensors", "unexpected tensor decoder.block.0.layer.2.DenseReluDense.wi_0.weight");
    if (config_variant("tiny-bf16", "ffgsilu", "\"feed_forward_proj\": \"gated-gelu\"",
                       "\"feed_forward_proj\": \"gated-silu\"", d, sizeof d) == 0)
        expect_import_error(d, "ffgsilu/config.json", "activation \"silu\" (feed_forward_proj)");
}

/* <extra_id_0> of an imported model is where the tokenizer beside it puts
 * it: the last of its pieces + extra ids, below the embedding's padding
 * rows (32099 in t5's 32128 rows); span corruption counts down from there.
 * Without a tokenizer it is the last row. */
static void test_sentinels_from_tokenizer(void) {
    char out[300], voc[300], plain[300];
    tpath(out, sizeof out, "sent.msgpack");
    tpath(voc, sizeof voc, "sent.vocab.msgpack");
    hf_import_opts o = {NULL, voc, 0, NULL};
    CHECK(hf_import(FIX "/tiny-f32", out, &o) == 0, "%s", mc_error());
    art_file *v = art_open(voc, "vocab");
    t5_model *m = t5_load_model(out, 0, 0, NULL);
    CHECK(v && m, "%s", mc_error());
    if (v && m) {
        int64_t want = val_get_int(v->meta, "n_pieces", -1) + val_get_int(v->meta, "extra_ids", -1) - 1;
        CHECK(want > 3 && want < m->c.vocab_size - 1, "the fixture's tokenizer fills the embedding (%lld)", (long long)want);
        CHECK(t5_extra_id_0(&m->c) == want && val_get_int(v->meta, "extra_id_0", -1) == want,
              "<extra_id_0> = %d (vocab meta %lld), the tokenizer's is %lld", t5_extra_id_0(&m->c),
              (long long)val_get_int(v->meta, "extra_id_0", -1), (long long)want);
        int toks[40], in[48], tg[48], nin, ntg;
        for (int i = 0; i < 40; i++) toks[i] = 3 + i;
        tok_span_corrupt(toks, 40, 7, 0.15, 3.0, t5_extra_id_0(&m->c), in, &nin, tg, &ntg);
        CHECK(tg[0] == want, "span corruption's first sentinel %d, want %lld", tg[0], (long long)want);
    }
    t5_free(m);
    art_close(v);
    if (import(FIX "/tiny-bf16", "sent-plain.msgpack", plain, sizeof plain) == 0) {
        m = t5_load_model(plain, 0, 0, NULL);
        CHECK(m && t5_extra_id_0(&m->c) == m->c.vocab_size - 1, "no tokenizer: not the last row");
        t5_free(m);
    }
}

static void test_malformed_dirs(void) {
    char d[300], p[400];
    expect_import_error("/nonexistent/ckpt", "/nonexistent/ckpt", "not a directory");
    snprintf(d, sizeof d, "%s/empty", tmpdir);
    mkdir(d, 0777);
    expect_import_error(d, "empty/config.json", "cannot open");
    snprintf(p, sizeof p, "%s/config.json", d);
    copy_file(FIX "/tiny-f32/config.json", p);
    expect_import_error(d, "empty", "no model.safetensors or model.safetensors.index.json");
    /* an index that names a tensor in the wrong shard */
    snprintf(d, sizeof d, "%s/shards", tmpdir);
    mkdir(d, 0777);
    const char *files[] = {"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"};
    for (int i = 0; i < 3; i++) {
        char from[300];
        snprintf(from, sizeof from, FIX "/tiny-f16-sharded/%s", files[i]);
        snprintf(p, sizeof p, "%s/%s", d, files[i]);
        copy_file(from, p);
    }
    unsigned char *ix;
    size_t n;
    if (mc_read_file(FIX "/tiny-f16-sharded/model.safetensors.index.json", &ix, &n) == 0) {
        char *t = mallocCheck(n + 1);
        memcpy(t, ix, n);
        t[n] = 0;
        char *at = strstr(t, "\"lm_head.weight\": \"model-0000");
        if (at) at[strlen("\"lm_head.weight\": \"model-0000")] ^= 3; /* 1 <-> 2 */
        snprintf(p, sizeof p, "%s/model.safetensors.index.json", d);
        write_bytes(p, t, n);
        free(t);
        free(ix);
        expect_import_error(d, "shards/model-0000", "tensor lm_head.weight, which");
    }
    /* a tied copy that differs from shared.weight */
    snprintf(d, sizeof d, "%s/tied", tmpdir);
    unsigned char *b;
    if (mc_read_file(FIX "/tiny-f32/model.safetensors", &b, &n) == 0) {
        uint64_t hl = 0;
        for (int i = 7; i >= 0; i--) hl = hl << 8 | b[i];
        char *h = mallocCheck(hl + 1);
        memcpy(h, b + 8, hl);
        h[hl] = 0;
        char *e = strstr(h, "\"encoder.embed_tokens.weight\"");
        char *o = e ? strstr(e, "\"data_offsets\":[") : NULL;
        if (o) {
            unsigned long long off = strtoull(o + 16, NULL, 10);
            b[8 + hl + off + 4] ^= 0x40;
            make_ckpt(d, h, b + 8 + hl, n - 8 - hl);
            expect_import_error(d, "tied/model.safetensors", "encoder.embed_tokens.weight differs from shared.weight");
        } else {
            CHECK(0, "embed_tokens not in the fixture");
        }
        free(h);
        free(b);
    }
}

/* ------------------------------------------------------------------ tokens for test_hf.sh */

static int write_tokens(const char *out) {
    mc_val *v = json_parse_file(FIX "/scores.json");
    if (!v) die("%s", mc_error());
    const mc_val *exs = val_get(v, "examples");
    size_t ne = exs->v.c.n, nin = 0, nch = 0, nct = 0;
    for (size_t e = 0; e < ne; e++) {
        const mc_val *ex = exs->v.c.items[e], *ch = val_get(ex, "choices");
        nin += val_get(ex, "input")->v.c.n;
        nch += ch->v.c.n;
        for (size_t c = 0; c < ch->v.c.n; c++) nct += ch->v.c.items[c]->v.c.n;
    }
    int64_t *ii = mallocCheck(nin * 8), *io = mallocCheck((ne + 1) * 8), *ci = mallocCheck(nct * 8),
            *co = mallocCheck((nch + 1) * 8), *ec = mallocCheck((ne + 1) * 8);
    int32_t *lab = mallocCheck(ne * 4);
    size_t a = 0, c2 = 0, k = 0;
    io[0] = co[0] = ec[0] = 0;
    for (size_t e = 0; e < ne; e++) {
        const mc_val *ex = exs->v.c.items[e], *in = val_get(ex, "input"), *ch = val_get(ex, "choices");
        for (size_t t = 0; t < in->v.c.n; t++) ii[a++] = in->v.c.items[t]->v.i;
        io[e + 1] = (int64_t)a;
        for (size_t c = 0; c < ch->v.c.n; c++) {
            const mc_val *cv = ch->v.c.items[c];
            for (size_t t = 0; t < cv->v.c.n; t++) ci[c2++] = cv->v.c.items[t]->v.i;
            co[++k] = (int64_t)c2;
        }
        ec[e + 1] = (int64_t)k;
        lab[e] = (int32_t)val_get_int(ex, "label", 0);
    }
    mc_val *meta = val_map();
    val_set_str(meta, "task", "hf_tiny");
    val_set_str(meta, "split", "test");
    val_set_int(meta, "n_examples", (int64_t)ne);
    art_writer *w = art_writer_open(out, "tokens", "", meta, 6);
    val_free(meta);
    if (!w) die("%s", mc_error());
    int64_t s[6] = {(int64_t)nin, (int64_t)ne + 1, (int64_t)nct, (int64_t)nch + 1, (int64_t)ne + 1, (int64_t)ne};
    if (art_writer_tensor(w, "input_ids", ART_I64, 1, &s[0], ii) || art_writer_tensor(w, "input_offsets", ART_I64, 1, &s[1], io) ||
        art_writer_tensor(w, "choice_ids", ART_I64, 1, &s[2], ci) || art_writer_tensor(w, "choice_offsets", ART_I64, 1, &s[3], co) ||
        art_writer_tensor(w, "example_choices", ART_I64, 1, &s[4], ec) || art_writer_tensor(w, "label", ART_I32, 1, &s[5], lab) ||
        art_writer_close(w))
        die("%s", mc_error());
    free(ii); free(io); free(ci); free(co); free(ec); free(lab);
    val_free(v);
    return 0;
}

/* metrics artifact's choice_scores vs the reference's scores of `variant`. */
static int compare_scores(const char *metrics, const char *variant) {
    mc_val *v = json_parse_file(FIX "/scores.json");
    if (!v) die("%s", mc_error());
    art_file *m = art_open(metrics, "metrics");
    if (!m) die("%s", mc_error());
    const art_tensor *cs = art_find(m, "choice_scores");
    if (!cs) die("%s: no choice_scores", metrics);
    int n;
    float *want = ref_scores(v, variant, &n), *got = art_tensor_f32(cs);
    if (cs->numel != n) die("%s: %lld choice scores, the reference has %d", metrics, (long long)cs->numel, n);
    int ok = t_close(variant, got, want, n, 1e-5, 1e-4);
    /* predictions: the argmax of the reference's scores of each example */
    const art_tensor *pr = art_find(m, "prediction");
    const mc_val *sv = val_get(val_get(v, "scores"), variant);
    if (!pr || pr->numel != (int64_t)sv->v.c.n) die("%s: prediction missing or of the wrong length", metrics);
    int32_t *pred = mallocCheck(sv->v.c.n * sizeof *pred);
    art_tensor_copy(pr, pred);
    int right = 0;
    for (size_t e = 0; e < sv->v.c.n; e++) {
        const mc_val *row = sv->v.c.items[e];
        int best = 0;
        for (size_t c = 0; c < row->v.c.n; c++)
            if (row->v.c.items[c]->v.f > row->v.c.items[best]->v.f) best = (int)c;
        if (pred[e] != best) { printf("  example %zu: prediction %d, reference argmax %d\n", e, pred[e], best); ok = 0; }
        right += best == (int)val_get_int(val_get(v, "examples")->v.c.items[e], "label", -1);
    }
    /* accuracy and average: the fraction of examples whose reference argmax
     * is the label (one task, so both are that fraction) */
    double want_acc = (double)right / (double)sv->v.c.n;
    double acc = val_get_float(val_get(m->meta, "accuracy"), "hf_tiny", -1), avg = val_get_float(m->meta, "average", -1);
    if (fabs(acc - want_acc) > 1e-9 || fabs(avg - want_acc) > 1e-9) {
        printf("  accuracy %g, average %g; the reference's argmax is right on %d of %zu (%g)\n", acc, avg, right,
               sv->v.c.n, want_acc);
        ok = 0;
    }
    free(pred);
    free(want);
    free(got);
    art_close(m);
    val_free(v);
    return ok ? 0 : 1;
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    if (argc == 3 && !strcmp(argv[1], "--write-tokens")) return write_tokens(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "--compare-scores")) return compare_scores(argv[2], argv[3]);
    t_tmpdir(tmpdir, sizeof tmpdir, "test_hf");
    RUN(test_json_values);
    RUN(test_json_errors);
    RUN(test_json_python_format);
    RUN(test_conversions_match_torch);
    RUN(test_config_one_mapping);
    RUN(test_import_exact);
    RUN(test_scores_f32);
    RUN(test_scores_bf16);
    RUN(test_scores_f16_sharded);
    RUN(test_scores_ia3_peft_and_folded);
    RUN(test_scores_original);
    RUN(test_original_heads_refused);
    RUN(test_t5_model_roundtrip);
    RUN(test_malformed);
    RUN(test_malformed_configs);
    RUN(test_feed_forward_fields);
    RUN(test_sentinels_from_tokenizer);
    RUN(test_malformed_dirs);
    return t_done_rm(tmpdir);
}
