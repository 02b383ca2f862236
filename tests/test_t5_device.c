/* test_t5_device.c - the device paths of lib/t5.c, lib/stats.c and
 * lib/optim.c run on the CPU.
 *
 * A "fake device" is the CPU table of device.h under another identity: its
 * memory is host memory and its ops are the CPU ops, but t5_on_host() is 0
 * for a model moved to it, so every device-only branch runs: uploads of the
 * batch ids, padding mask and position buckets, download of the token
 * losses, upload of the loss weights, host copies for saving, the host view
 * of the activations for the Fisher, Gram accumulation in device memory,
 * activation blocks regrown on the device. Results must equal the plain CPU
 * model bit for bit (same ops, same order), so any step that reads a stale
 * or host-side buffer where the device copy was meant (or the reverse) shows
 * up as a difference. The fake also counts transfers, to check that the
 * batch really travels through upload.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common.h"
#include "device.h"
#include "harness.h"
#include "stats.h"
#include "t5.h"

static mc_ops FAKE;
static long n_up, n_down;

static void fake_upload(void *dst, const void *src, size_t bytes) {
    n_up++;
    dev_ops(MC_DEV_CPU)->upload(dst, src, bytes);
}

static void fake_download(void *dst, const void *src, size_t bytes) {
    n_down++;
    dev_ops(MC_DEV_CPU)->download(dst, src, bytes);
}

static t5_config C = {.vocab_size = 64, .d_model = 16, .d_kv = 4, .d_ff = 24, .num_heads = 4,
                      .num_layers = 2, .num_decoder_layers = 2, .num_buckets = 8,
                      .max_distance = 16, .eps = 1e-6f};

enum { B = 3, TE = 9, TD = 5 };
static int enc[B * TE], dec[B * TD], tgt[B * TD];
static t5_batch BT = {.B = B, .Te = TE, .Bd = B, .Td = TD, .enc_ids = enc, .dec_ids = dec,
                      .targets = tgt};

static void make_batch(void) {
    mc_rng r;
    mc_rng_seed(&r, 5);
    for (int b = 0; b < B; b++) {
        int le = TE - 2 * b, lt = TD - b; /* padding differs per row */
        for (int t = 0; t < TE; t++)
            enc[b * TE + t] = t < le - 1 ? 3 + (int)mc_rng_below(&r, C.vocab_size - 3) : t == le - 1 ? T5_EOS : 0;
        for (int t = 0; t < TD; t++)
            tgt[b * TD + t] = t < lt - 1 ? 3 + (int)mc_rng_below(&r, C.vocab_size - 3) : t == lt - 1 ? T5_EOS : 0;
        for (int t = 0; t < TD; t++) dec[b * TD + t] = t ? tgt[b * TD + t - 1] : 0;
    }
}

/* a model on the CPU and the same model on the fake device */
static void pair(t5_model **cpu, t5_model **dev, int grads, int ia3) {
    *cpu = t5_new(&C, grads, ia3);
    t5_init_random(*cpu, 11);
    *dev = t5_new(&C, grads, ia3);
    t5_init_random(*dev, 11);
    if (ia3) /* IA3 vectors away from 1, the same on both */
        for (size_t i = 0; i < (*cpu)->n_ia3; i++)
            (*cpu)->ia3[i] = (*dev)->ia3[i] = 1.0f + 0.01f * (float)(i % 7);
    t5_to_device(*dev, &FAKE);
}

static int same(const float *a, const float *b, size_t n) { return !memcmp(a, b, n * sizeof(float)); }

static void test_init_on_device(void) {
    t5_model *a = t5_new(&C, 0, 1), *b = t5_new(&C, 0, 1);
    t5_to_device(b, &FAKE);
    CHECK(!t5_on_host(b) && t5_on_host(a), "the fake device is not the host");
    t5_init_random(a, 3);
    t5_init_random(b, 3);
    CHECK(same(a->params, b->params, a->n_params), "t5_init_random uploads the same values");
    CHECK(same(a->ia3, b->ia3, a->n_ia3), "IA3 vectors start at 1 on the device too");
    t5_free(a);
    t5_free(b);
}

static void test_forward_backward(int ia3) {
    t5_model *a, *b;
    pair(&a, &b, !ia3, ia3);
    t5_alloc_acts(a, B, TE, B, TD, 1);
    t5_alloc_acts(b, B, TE, B, TD, 1);
    for (int step = 0; step < 2; step++) { /* twice: buffers reused, grads re-zeroed */
        long up0 = n_up;
        float la = t5_forward(a, &BT), lb = t5_forward(b, &BT);
        CHECK(n_up - up0 >= 3, "the batch ids were uploaded (%ld uploads)", n_up - up0);
        CHECK(la == lb && isfinite(la), "loss cpu %.9g device %.9g", la, lb);
        t5_zero_grad(a);
        t5_zero_grad(b);
        t5_backward(a, &BT, T5_LOSS_MEAN, 0.5f);
        t5_backward(b, &BT, T5_LOSS_MEAN, 0.5f);
        if (ia3) CHECK(same(a->ia3_grads, b->ia3_grads, a->n_ia3), "IA3 gradients equal");
        else CHECK(same(a->grads, b->grads, a->n_params), "parameter gradients equal");
        float sa[B], sb[B];
        t5_row_logprob(a, sa);
        t5_row_logprob(b, sb);
        CHECK(same(sa, sb, B), "row log-probabilities equal");
    }
    t5_free(a);
    t5_free(b);
}

static void test_full(void) { test_forward_backward(0); }
static void test_ia3(void) { test_forward_backward(1); }

/* eval's shape: decoder rows pointing at encoder rows, and a batch larger
 * than the first allocation (the blocks regrow on the device) */
static void test_eval_regrow(void) {
    t5_model *a, *b;
    pair(&a, &b, 0, 0);
    t5_alloc_acts(a, 1, 4, 1, 2, 0);
    t5_alloc_acts(b, 1, 4, 1, 2, 0);
    int de[B] = {0, 0, 1};
    t5_batch e = BT;
    e.dec_enc = de;
    e.B = 2;
    t5_forward(a, &e);
    t5_forward(b, &e);
    float sa[B], sb[B];
    t5_row_logprob(a, sa);
    t5_row_logprob(b, sb);
    CHECK(same(sa, sb, B) && isfinite(sa[0]), "scores with shared encoder rows equal");
    t5_free(a);
    t5_free(b);
}

static void test_stats(void) {
    /* Fisher of all parameters through the host view */
    t5_model *a, *b;
    pair(&a, &b, 0, 0);
    a->all_act_grads = b->all_act_grads = 1;
    t5_alloc_acts(a, B, TE, B, TD, 1);
    t5_alloc_acts(b, B, TE, B, TD, 1);
    float *fa = callocCheck(a->n_params, sizeof(float)), *fb = callocCheck(a->n_params, sizeof(float));
    float *sa = callocCheck(a->n_params, sizeof(float)), *sb = callocCheck(a->n_params, sizeof(float));
    t5_model *view = NULL, *va = NULL;
    for (int rep = 0; rep < 2; rep++) {
        t5_forward(a, &BT);
        t5_backward(a, &BT, T5_LOSS_EXAMPLE_MEAN, 1.0f);
        t5_forward(b, &BT);
        t5_backward(b, &BT, T5_LOSS_EXAMPLE_MEAN, 1.0f);
        long down0 = n_down;
        t5_host_view(a, &va);
        t5_host_view(b, &view);
        CHECK(va == a, "a host model is its own view");
        CHECK(view != b && n_down - down0 >= 2, "the device model's view downloads its activations");
        st_fisher_diag_full(va, fa, sa);
        st_fisher_diag_full(view, fb, sb);
    }
    CHECK(same(fa, fb, a->n_params), "diagonal Fisher of all parameters equal");
    /* the split used on the GPU: everything but the linears on the host */
    float *fn = callocCheck(a->n_params, sizeof(float)), *f1 = callocCheck(a->n_params, sizeof(float));
    st_fisher_diag_nonlinear(view, fn, sb);
    st_fisher_diag_full(view, f1, sb);
    int nl = t5_n_linears(a), bad = 0, nonzero = 0;
    t5_linear *L = mallocCheck(sizeof *L * nl);
    t5_linears(a, L);
    for (int ti = 0; ti < a->n_tensors; ti++) {
        const t5_tensor *t = &a->tensors[ti];
        int lin = 0;
        for (int i = 0; i < nl; i++) lin |= L[i].w == a->params + t->offset;
        for (size_t j = 0; j < t->numel; j++) {
            float want = lin ? 0.0f : f1[t->offset + j];
            bad += fn[t->offset + j] != want;
            nonzero += !lin && want != 0;
        }
    }
    CHECK(!bad && nonzero > 0, "non-linear split: %d entries differ (%d non-linear nonzero)", bad, nonzero);
    free(L), free(fn), free(f1);

    /* Gram in device memory */
    int na = 0, nb = 0;
    st_gram *ga = st_gram_new(a, &na), *gb = st_gram_new(b, &nb);
    float *xa = mallocCheck(sizeof(float) * st_gram_scratch_floats(a));
    float *xb = FAKE.alloc(sizeof(float) * st_gram_scratch_floats(b));
    long ea = 0, da = 0, eb = 0, db = 0;
    st_gram_accum(a, ga, na, xa, &ea, &da);
    st_gram_accum(b, gb, nb, xb, &eb, &db);
    st_gram_to_host(gb, nb);
    int ok = na == nb && ea == eb && da == db && ea > 0;
    for (int i = 0; ok && i < na; i++) {
        ok = same(ga[i].in_gram, gb[i].in_gram, (size_t)ga[i].in * ga[i].in) &&
             (!ga[i].out_gram || same(ga[i].out_gram, gb[i].out_gram, (size_t)ga[i].out * ga[i].out));
        ok = ok && gb[i].ops == dev_ops(MC_DEV_CPU);
    }
    CHECK(ok, "Gram matrices and token counts equal");
    st_gram_free(ga, na);
    st_gram_free(gb, nb);
    free(xa);
    FAKE.release(xb);
    t5_host_view_free(a, va);
    t5_host_view_free(b, view);
    free(fa), free(fb), free(sa), free(sb);
    t5_free(a);
    t5_free(b);

    /* per-example IA3 gradients through the view */
    pair(&a, &b, 0, 1);
    t5_alloc_acts(a, B, TE, B, TD, 1);
    t5_alloc_acts(b, B, TE, B, TD, 1);
    t5_forward(a, &BT);
    t5_backward(a, &BT, T5_LOSS_EXAMPLE_MEAN, 1.0f);
    t5_forward(b, &BT);
    t5_backward(b, &BT, T5_LOSS_EXAMPLE_MEAN, 1.0f);
    view = NULL;
    t5_host_view(b, &view);
    float *Ea = mallocCheck(sizeof(float) * B * a->n_ia3), *Eb = mallocCheck(sizeof(float) * B * a->n_ia3);
    st_ia3_example_grads(a, Ea);
    st_ia3_example_grads(view, Eb);
    CHECK(same(Ea, Eb, B * a->n_ia3), "per-example IA3 gradients equal");
    free(Ea), free(Eb);
    t5_host_view_free(b, view);
    t5_free(a);
    t5_free(b);
}

static void test_save(void) {
    t5_model *a, *b;
    pair(&a, &b, 0, 1);
    char pa[64], pb[64];
    snprintf(pa, sizeof pa, "/tmp/test_t5_device_%d_a.msgpack", (int)getpid());
    snprintf(pb, sizeof pb, "/tmp/test_t5_device_%d_b.msgpack", (int)getpid());
    for (int k = 0; k < 2; k++) {
        int ra = k ? t5_save_ia3(a, pa, "", "", NULL) : t5_save_model(a, pa, "", NULL);
        int rb = k ? t5_save_ia3(b, pb, "", "", NULL) : t5_save_model(b, pb, "", NULL);
        size_t na = 0, nb = 0;
        unsigned char *ca = NULL, *cb = NULL;
        if (ra == 0 && mc_read_file(pa, &ca, &na) < 0) ca = NULL;
        if (rb == 0 && mc_read_file(pb, &cb, &nb) < 0) cb = NULL;
        CHECK(ca && cb && na == nb && !memcmp(ca, cb, na), "%s artifact bytes equal",
              k ? "ia3" : "model");
        free(ca), free(cb);
    }
    /* and back: IA3 vectors loaded into the device model */
    t5_model *c = t5_new(&C, 0, 1);
    t5_to_device(c, &FAKE);
    CHECK(t5_load_ia3(c, pb, NULL) == 0, "load ia3 on the device: %s", mc_error());
    CHECK(same(a->ia3, c->ia3, a->n_ia3), "loaded IA3 vectors equal");
    unlink(pa);
    unlink(pb);
    t5_free(a);
    t5_free(b);
    t5_free(c);
}

int main(void) {
    FAKE = *dev_ops(MC_DEV_CPU);
    FAKE.name = "fake";
    FAKE.upload = fake_upload;
    FAKE.download = fake_download;
    make_batch();
    RUN(test_init_on_device);
    RUN(test_full);
    RUN(test_ia3);
    RUN(test_eval_regrow);
    RUN(test_stats);
    RUN(test_save);
    return t_done();
}
