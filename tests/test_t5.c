/* test_t5.c - the C T5 against the PyTorch reference fixtures
 * (tests/fixtures/t5_micro.bin, from tests/reference/make_fixtures.py), plus
 * finite differences and properties of the batch / span helpers; the
 * original T5 layout (ReLU, tied and scaled head) against its own fixture
 * (tests/fixtures/t5_original.bin): the tests named original_*. */
#include <math.h>

#include "backend.h"
#include "harness.h"
#include "ops.h"
#include "optim.h"
#include "rank.h"
#include "t5.h"
#include "test_t5_fixture.h"
#include "tokens.h"

#define FIXTURE "tests/fixtures/t5_micro.bin"
#define FIXTURE_ORIGINAL "tests/fixtures/t5_original.bin"

static fx_file *F;
static t5_config C;
static t5_batch Bt;

static float maxabs(const float *x, long n) {
    float m = 0;
    for (long i = 0; i < n; i++)
        if (fabsf(x[i]) > m) m = fabsf(x[i]);
    return m;
}

static void test_buckets(void) {
    int nbs[2] = {32, 16}, mds[2] = {128, 40};
    char nm[64];
    for (int s = 0; s < 2; s++)
        for (int bi = 1; bi >= 0; bi--) {
            snprintf(nm, sizeof nm, "buckets/%d/%d/%d", nbs[s], mds[s], bi);
            int *ref = fx_i32(F, nm);
            int bad = 0;
            for (int rp = -300; rp <= 300; rp++) {
                int b = op_relpos_bucket(rp, bi, nbs[s], mds[s]);
                if (b != ref[rp + 300]) {
                    if (bad < 5) printf("  %s rp %d: %d vs reference %d\n", nm, rp, b, ref[rp + 300]);
                    bad++;
                }
            }
            CHECK(bad == 0, "%s: %d buckets differ", nm, bad);
        }
}

static void test_linear_naive(void) {
    int N = 37, I = 29, O = 23;
    float *x = mallocCheck(sizeof(float) * N * I), *w = mallocCheck(sizeof(float) * O * I);
    float *a = mallocCheck(sizeof(float) * N * O), *b = mallocCheck(sizeof(float) * N * O);
    mc_rng r;
    mc_rng_seed(&r, 5);
    for (int i = 0; i < N * I; i++) x[i] = mc_rng_normal(&r);
    for (int i = 0; i < O * I; i++) w[i] = mc_rng_normal(&r);
    op_linear_forward(a, x, w, N, I, O);
    op_linear_forward_naive(b, x, w, N, I, O);
    t_close("linear blas vs naive", a, b, (long)N * O, 1e-5, 1e-5);
    free(x), free(w), free(a), free(b);
}

static t5_model *micro(int grads, int ia3) {
    t5_model *m = t5_new(&C, grads, ia3);
    fx_fill_model(F, m, ia3);
    t5_alloc_acts(m, Bt.B, Bt.Te, Bt.Bd, Bt.Td, 1);
    return m;
}

/* micro(1, 0) after a forward and backward pass over the fixture batch */
static t5_model *micro_backward(void) {
    t5_model *m = micro(1, 0);
    t5_zero_grad(m);
    t5_forward(m, &Bt);
    t5_backward(m, &Bt, T5_LOSS_MEAN, 1.0f);
    return m;
}

static void test_forward_full(void) {
    t5_model *m = micro(1, 0);
    float loss = t5_forward(m, &Bt);
    long n = (long)Bt.Bd * Bt.Td * C.vocab_size;
    t_close("logits", m->a.logits, fx_f32(F, "logits"), n, 1e-4, 1e-5 * maxabs(fx_f32(F, "logits"), n));
    t_close("loss", &loss, fx_f32(F, "loss"), 1, 1e-5, 0);
    t5_free(m);
}

/* t5_forward_layer, one layer after another on states the caller keeps,
 * is t5_forward to the bit (RegMean++ relies on it), on the fixture batch. */
static void test_forward_layers(void) {
    t5_model *m = micro(0, 0);
    long nl = (long)Bt.Bd * Bt.Td * C.vocab_size, ne = (long)Bt.B * Bt.Te * C.d_model;
    float loss = t5_forward(m, &Bt);
    float *want = mallocCheck(sizeof(float) * nl), *enc = mallocCheck(sizeof(float) * ne);
    memcpy(want, m->a.logits, sizeof(float) * nl);
    memcpy(enc, m->a.enc_out, sizeof(float) * ne);
    int L = C.num_layers, Ld = C.num_decoder_layers;
    float *h = NULL, *e = NULL;
    for (int l = 0; l <= L + Ld; l++) {
        long rows = l < L ? (long)Bt.B * Bt.Te : (long)Bt.Bd * Bt.Td;
        float *y = l < L + Ld ? mallocCheck(sizeof(float) * rows * C.d_model) : NULL;
        t5_forward_layer(m, &Bt, l, h, e, y);
        free(h);
        h = y;
        if (l == L - 1) e = h, h = NULL;
    }
    CHECK(e && !memcmp(e, enc, sizeof(float) * ne), "the encoder output differs");
    CHECK(!memcmp(m->a.logits, want, sizeof(float) * nl), "the logits differ");
    CHECK(m->last_loss == loss, "loss %.9g, t5_forward's %.9g", m->last_loss, loss);
    free(e), free(want), free(enc);
    t5_free(m);
}

static void test_backward_full(void) {
    t5_model *m = micro_backward();
    char nm[160];
    double worst = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        snprintf(nm, sizeof nm, "grad/%s", t->name);
        const float *ref = fx_f32(F, nm), *g = m->grads + t->offset;
        float scale = maxabs(ref, t->numel);
        double e = 0;
        for (size_t j = 0; j < t->numel; j++) {
            double d = fabs(g[j] - ref[j]) / (scale + 1e-30);
            if (d > e) e = d;
        }
        if (e > worst) worst = e;
        /* elementwise: |a-b| <= 1e-4 |b| + 2e-5 max|b| */
        if (e > 2e-5) t_close(nm, g, ref, t->numel, 1e-4, 2e-5 * scale);
    }
    printf("  %d gradient tensors: max error relative to each tensor's max |grad|: %.3g\n",
           m->n_tensors, worst);
    CHECK(worst < 2e-5, "worst normalised gradient error %.3g", worst);
    t5_free(m);
}

static void test_ia3(void) {
    t5_model *m = micro(0, 1);
    t5_zero_grad(m);
    float loss = t5_forward(m, &Bt);
    long n = (long)Bt.Bd * Bt.Td * C.vocab_size;
    t_close("ia3 logits", m->a.logits, fx_f32(F, "ia3_logits"), n, 1e-4, 1e-5 * maxabs(fx_f32(F, "ia3_logits"), n));
    t_close("ia3 loss", &loss, fx_f32(F, "ia3_loss"), 1, 1e-5, 0);
    for (int mode = 0; mode < 2; mode++) {
        t5_zero_grad(m);
        t5_backward(m, &Bt, mode ? T5_LOSS_EXAMPLE_MEAN : T5_LOSS_MEAN, 1.0f);
        char nm[160];
        for (int i = 0; i < m->n_ia3_tensors; i++) {
            const t5_tensor *t = &m->ia3_tensors[i];
            snprintf(nm, sizeof nm, "%s/%s", mode ? "ia3grad_ex" : "ia3grad", t->name);
            const float *ref = fx_f32(F, nm);
            t_close(nm, m->ia3_grads + t->offset, ref, t->numel, 1e-4, 2e-5 * maxabs(ref, t->numel));
        }
    }
    t5_free(m);
}

/* Ten optimizer steps of `o` on the fixture batch from the micro model's
 * weights, checked against the reference losses `ref_name`; with sched >= 0
 * the lr follows that schedule (3 warmup steps of 10) from base_lr. */
static void steps_vs_ref(t5_model *m, optim *o, const char *ref_name, int sched, double base_lr) {
    float losses[10];
    for (int s = 0; s < 10; s++) {
        t5_zero_grad(m);
        losses[s] = t5_forward(m, &Bt);
        t5_backward(m, &Bt, T5_LOSS_MEAN, 1.0f);
        if (sched >= 0) o->lr = (float)(base_lr * opt_schedule(sched, s, 3, 10));
        opt_step(o, m->params, m->grads);
    }
    const float *ref = fx_f32(F, ref_name);
    for (int s = 0; s < 10; s++) printf("  step %d loss %.6f reference %.6f\n", s, losses[s], ref[s]);
    CHECK(losses[9] < losses[0] - 0.1f, "%s: loss did not go down: %f -> %f", ref_name, losses[0], losses[9]);
    t_close(ref_name, losses, ref, 10, 2e-5, 0);
}

/* One optimizer configuration from the micro model's weights: ten steps
 * against the reference losses `ref_name`. */
static t5_model *optimizer_case(int kind, float lr, float wd, int scale, const char *ref_name, int sched) {
    t5_model *m = micro(1, 0);
    optim *o = opt_new(kind, lr, m->n_params, m->tensors, m->n_tensors);
    o->weight_decay = wd;
    o->scale_parameter = scale;
    steps_vs_ref(m, o, ref_name, sched, lr);
    opt_free(o);
    return m;
}

static void test_adamw_steps(void) { t5_free(optimizer_case(OPT_ADAMW, 3e-3f, 0, 0, "adamw_losses", -1)); }

static void test_adafactor_steps(void) { t5_free(optimizer_case(OPT_ADAFACTOR, 1e-2f, 0, 0, "adafactor_losses", -1)); }

/* AdamW with decoupled weight decay under warmup + cosine (train.schedule
 * = cosine, train.warmup_steps = 3 over 10 steps), against torch's AdamW
 * driven by LambdaLR; the final embedding checks the decay itself. */
static void test_adamw_wd_cosine_steps(void) {
    t5_model *m = optimizer_case(OPT_ADAMW, 3e-3f, 0.1f, 0, "adamw_wd_cosine_losses", SCHED_COSINE);
    const t5_tensor *t = NULL;
    const float *w = t5_param(m, "shared.weight", &t);
    CHECK(w != NULL, "no shared.weight");
    if (w) {
        const float *rw = fx_f32(F, "adamw_wd_cosine_final/shared.weight");
        t_close("adamw wd cosine shared.weight", w, rw, t->numel, 1e-4, 1e-5 * maxabs(rw, t->numel));
    }
    t5_free(m);
}

/* Adafactor with parameter scaling and weight decay (train.scale_parameter
 * = 1, train.weight_decay), against the reference written out in torch. */
static void test_adafactor_scaled_steps(void) {
    t5_free(optimizer_case(OPT_ADAFACTOR, 1e-2f, 0.01f, 1, "adafactor_scaled_losses", -1));
}

/* The schedule factors at their defining points. */
static void test_schedule(void) {
    CHECK(opt_schedule(SCHED_CONSTANT, 0, 0, 10) == 1.0 && opt_schedule(SCHED_CONSTANT, 9, 0, 10) == 1.0,
          "constant is not 1");
    CHECK(fabs(opt_schedule(SCHED_CONSTANT, 0, 4, 10) - 0.25) < 1e-12, "warmup step 0 is not 1/4");
    CHECK(fabs(opt_schedule(SCHED_LINEAR, 3, 4, 10) - 1.0) < 1e-12, "linear warmup does not reach 1");
    CHECK(fabs(opt_schedule(SCHED_LINEAR, 4, 4, 10) - 1.0) < 1e-12, "linear does not start at 1 after warmup");
    CHECK(fabs(opt_schedule(SCHED_LINEAR, 7, 4, 10) - 0.5) < 1e-12, "linear midpoint is not 1/2");
    CHECK(fabs(opt_schedule(SCHED_COSINE, 7, 4, 10) - 0.5) < 1e-12, "cosine midpoint is not 1/2");
    CHECK(fabs(opt_schedule(SCHED_COSINE, 5, 4, 10) - 0.5 * (1 + cos(M_PI / 6))) < 1e-12, "cosine at 1/6");
    CHECK(opt_schedule(SCHED_COSINE, 20, 4, 10) == 0.0, "cosine past the end is not 0");
    CHECK(fabs(opt_schedule(SCHED_RSQRT, 15, 4, 100) - 0.5) < 1e-12, "rsqrt at 4x warmup is not 1/2");
    CHECK(fabs(opt_schedule(SCHED_RSQRT, 0, 0, 100) - 1.0) < 1e-12, "rsqrt without warmup does not start at 1");
}

/* Gradient clipping as torch.nn.utils.clip_grad_norm_: scale by
 * max_norm / (norm + 1e-6) when the global norm exceeds max_norm, else leave
 * the gradient alone; the returned norm is the one before clipping. */
static void test_clip(void) {
    float g[2] = {3, 4};
    float n = opt_clip_grad_norm(g, 2, 10);
    CHECK(n == 5.0f && g[0] == 3 && g[1] == 4, "under the limit: norm %g, g %g %g", n, g[0], g[1]);
    n = opt_clip_grad_norm(g, 2, 1);
    double c = 1.0 / (5.0 + 1e-6);
    CHECK(n == 5.0f && fabs(g[0] - 3 * c) < 1e-7 && fabs(g[1] - 4 * c) < 1e-7, "clipped to 1: %g %g", g[0], g[1]);
    enum { N = 100003 };
    float *x = mallocCheck(sizeof(float) * N), *y = mallocCheck(sizeof(float) * N);
    double s = 0;
    for (int i = 0; i < N; i++) x[i] = y[i] = (float)sin(0.37 * i) * (1 + i % 7), s += (double)x[i] * x[i];
    n = opt_clip_grad_norm(y, N, 2.5f);
    double after = 0, cos_num = 0;
    for (int i = 0; i < N; i++) after += (double)y[i] * y[i], cos_num += (double)x[i] * y[i];
    CHECK(fabs(n - sqrt(s)) < 1e-6 * sqrt(s), "norm %g vs %g", n, sqrt(s));
    CHECK(fabs(sqrt(after) - 2.5) < 1e-5, "norm after clipping %g, want 2.5", sqrt(after));
    CHECK(fabs(cos_num / (sqrt(s) * sqrt(after)) - 1) < 1e-6, "direction changed");
    free(x), free(y);
}

/* Central differences in float32 on the largest-gradient entries of a few
 * tensors; the loss is recomputed from scratch each time. */
static void test_finite_differences(void) {
    t5_model *m = micro(1, 1);
    /* perturb IA3 away from the fixture values too */
    t5_zero_grad(m);
    t5_forward(m, &Bt);
    t5_backward(m, &Bt, T5_LOSS_MEAN, 1.0f);
    int relu = C.ffn == T5_FFN_RELU;
    /* the original layout: its wi and the tied head (shared.weight takes
     * both the embedding's and the head's gradient) */
    const char *names[] = {"shared.weight", "encoder.block.0.layer.0.SelfAttention.q.weight",
                           "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                           "decoder.block.1.layer.1.EncDecAttention.k.weight",
                           relu ? "decoder.block.0.layer.2.DenseReluDense.wi.weight"
                                : "decoder.block.0.layer.2.DenseReluDense.wi_0.weight",
                           relu ? "encoder.block.1.layer.1.DenseReluDense.wo.weight" : "lm_head.weight",
                           "encoder.final_layer_norm.weight", C.tied ? "decoder.final_layer_norm.weight" : NULL,
                           NULL};
    int checked = 0, bad = 0;
    double worst = 0;
    for (int k = 0; names[k]; k++) {
        const t5_tensor *t;
        float *p = t5_param(m, names[k], &t);
        CHECK(p != NULL, "no tensor %s", names[k]);
        if (!p) continue;
        const float *g = m->grads + t->offset;
        size_t best = 0;
        for (size_t j = 0; j < t->numel; j++)
            if (fabsf(g[j]) > fabsf(g[best])) best = j;
        float h = 1e-2f * (fabsf(p[best]) > 0.1f ? fabsf(p[best]) : 0.1f), orig = p[best];
        p[best] = orig + h;
        double lp = t5_forward(m, &Bt);
        p[best] = orig - h;
        double lm = t5_forward(m, &Bt);
        p[best] = orig;
        double fd = (lp - lm) / (2 * h), an = g[best];
        double err = fabs(fd - an) / (fabs(an) + 1e-4);
        if (err > worst) worst = err;
        checked++;
        if (err > 2e-2) {
            bad++;
            printf("  %s[%zu]: analytic %.6g, finite difference %.6g\n", names[k], best, an, fd);
        }
    }
    /* an IA3 vector */
    const t5_tensor *t;
    float *s = t5_ia3_param(m, relu ? "decoder.block.1.layer.2.DenseReluDense.wo.ia3_vector"
                                    : "decoder.block.1.layer.2.DenseReluDense.wi_1.ia3_vector", &t);
    const float *gs = m->ia3_grads + t->offset;
    size_t best = 0;
    for (size_t j = 0; j < t->numel; j++)
        if (fabsf(gs[j]) > fabsf(gs[best])) best = j;
    float orig = s[best], h = 1e-2f;
    s[best] = orig + h;
    double lp = t5_forward(m, &Bt);
    s[best] = orig - h;
    double lm = t5_forward(m, &Bt);
    s[best] = orig;
    double fd = (lp - lm) / (2 * h), err = fabs(fd - gs[best]) / (fabs(gs[best]) + 1e-4);
    if (err > worst) worst = err;
    checked++;
    if (err > 2e-2) bad++, printf("  ia3 %s: analytic %.6g, finite difference %.6g\n", t->name, gs[best], fd);
    printf("  %d finite differences, max relative error %.3g\n", checked, worst);
    CHECK(bad == 0, "%d finite-difference mismatches", bad);
    t5_free(m);
}

/* Per-example weight gradients from the kept x and g (what the Gram/Fisher
 * stage uses) add up to the batch gradient. */
static void test_linears_xg(void) {
    t5_model *m = micro_backward();
    int n = t5_n_linears(m);
    t5_linear *L = callocCheck(n, sizeof *L);
    CHECK(t5_linears(m, L) == n, "count");
    int ok = 0;
    for (int i = 0; i < n; i++) {
        int ntok = L[i].stream == T5_ENC ? Bt.B * Bt.Te : Bt.Bd * Bt.Td;
        float *dw = callocCheck((size_t)L[i].in * L[i].out, sizeof(float));
        be_gemm(1, 0, L[i].out, L[i].in, ntok, 1.0f, L[i].g, L[i].out, L[i].x, L[i].in, 0.0f, dw, L[i].in);
        long cnt = (long)L[i].in * L[i].out;
        float sc = maxabs(L[i].dw, cnt);
        double e = 0;
        for (long j = 0; j < cnt; j++) e = fmax(e, fabs(dw[j] - L[i].dw[j]) / (sc + 1e-30));
        if (e < 1e-5) ok++;
        else printf("  %s: sum g^T x differs from dw by %.3g\n", L[i].name, e);
        free(dw);
    }
    CHECK(ok == n, "%d of %d linears consistent", ok, n);
    /* a tied head is not a linear of its own (t5.h) */
    const char *last = C.tied ? "decoder.block.1.layer.2.DenseReluDense.wo.weight" : "lm_head.weight";
    CHECK(strcmp(L[n - 1].name, last) == 0, "last linear %s, want %s", L[n - 1].name, last);
    int ff = 0;
    for (int i = 0; i < n; i++) ff += strstr(L[i].name, "DenseReluDense.wi") != NULL;
    CHECK(ff == (C.ffn == T5_FFN_RELU ? 1 : 2) * (C.num_layers + C.num_decoder_layers), "%d wi linears", ff);
    free(L);
    t5_free(m);
}

/* the fixture's rank-classification set; io, co, ec: its offsets */
static tok_set rank_set(int64_t io[16], int64_t co[32], int64_t ec[16]) {
    tok_set s = {0};
    s.path = "fixture";
    fx_entry *e = fx_get(F, "rank/input_offsets");
    s.n = e->numel - 1;
    s.input_ids = fx_i32(F, "rank/input_ids");
    s.choice_ids = fx_i32(F, "rank/choice_ids");
    s.label = fx_i32(F, "rank/label");
    for (int64_t i = 0; i <= s.n; i++) io[i] = fx_i32(F, "rank/input_offsets")[i];
    fx_entry *ce = fx_get(F, "rank/choice_offsets");
    s.n_choices = ce->numel - 1;
    for (int64_t i = 0; i <= s.n_choices; i++) co[i] = ((int *)ce->data)[i];
    for (int64_t i = 0; i <= s.n; i++) ec[i] = fx_i32(F, "rank/example_choices")[i];
    s.input_off = io, s.choice_off = co, s.ex_choices = ec;
    return s;
}

/* t5_score (lm_head and the loss on the rows with a target only) on a model
 * whose layers share their activations (T5_ACTS_SCORE) gives the scores of
 * t5_forward and t5_row_logprob on a model that keeps every layer's, to the
 * bit, on a batch with padded decoder rows */
static void test_score_same_bytes(void) {
    t5_model *m = t5_new(&C, 0, 0), *lean = t5_new(&C, 0, 0);
    fx_fill_model(F, m, 0);
    fx_fill_model(F, lean, 0);
    int64_t io[16], co[32], ec[16];
    tok_set s = rank_set(io, co, ec);
    const int *ins[16], *outs[32];
    int nins[16], nouts[32], map[32], nd = 0;
    for (int64_t e = 0; e < s.n; e++) {
        ins[e] = tok_input(&s, e), nins[e] = tok_input_len(&s, e);
        for (int64_t c = ec[e]; c < ec[e + 1]; c++)
            outs[nd] = tok_choice(&s, c), nouts[nd] = tok_choice_len(&s, c), map[nd++] = (int)e;
    }
    tok_batch tb;
    tok_batch_init(&tb, 16, 64, 32, 16);
    tok_batch_fill(&tb, (int)s.n, ins, nins, nd, outs, nouts, map, 0, 0);
    tb.b.pad_invariant = 1; /* as rank classification runs both */
    int padded = 0;
    for (int i = 0; i < nd * tb.b.Td; i++) padded += tb.b.targets[i] <= 0;
    CHECK(padded > 0 && padded < nd * tb.b.Td, "%d of %d decoder positions padded", padded, nd * tb.b.Td);
    t5_alloc_acts(m, 16, 64, 32, 16, 0);
    t5_alloc_acts(lean, 16, 64, 32, 16, T5_ACTS_SCORE);
    CHECK(lean->act_floats < m->act_floats, "scoring layout %zu floats, full %zu", lean->act_floats, m->act_floats);
    float full[32], sc[32], sc2[32];
    t5_forward(m, &tb.b);
    t5_row_logprob(m, full);
    t5_score(lean, &tb.b, sc);
    t5_score(m, &tb.b, sc2);
    CHECK(memcmp(full, sc, sizeof(float) * nd) == 0, "t5_score on the scoring layout differs from t5_forward");
    CHECK(memcmp(full, sc2, sizeof(float) * nd) == 0, "t5_score differs from t5_forward on the same model");
    tok_batch_free(&tb);
    t5_free(m);
    t5_free(lean);
}

/* the scores of examples [0, n) of s in batches of `group` examples taken
 * in `order` (NULL: file order), pad_invariant as given, by choice id */
static void scores_in_batches(t5_model *m, const tok_set *s, const int64_t *order, int group, int pad_invariant,
                              float *out) {
    tok_batch tb;
    tok_batch_init(&tb, group, 64, 32, 16);
    const int *ins[16], *outs[32];
    int nins[16], nouts[32], map[32];
    int64_t cid[32];
    float row[32];
    for (int64_t i = 0; i < s->n; i += group) {
        int ne = 0, nd = 0;
        for (; ne < group && i + ne < s->n; ne++) {
            int64_t e = order ? order[i + ne] : i + ne;
            ins[ne] = tok_input(s, e), nins[ne] = tok_input_len(s, e);
            for (int64_t c = s->ex_choices[e]; c < s->ex_choices[e + 1]; c++)
                outs[nd] = tok_choice(s, c), nouts[nd] = tok_choice_len(s, c), map[nd] = ne, cid[nd++] = c;
        }
        tok_batch_fill(&tb, ne, ins, nins, nd, outs, nouts, map, 0, 0);
        tb.b.pad_invariant = pad_invariant;
        t5_score(m, &tb.b, row);
        for (int k = 0; k < nd; k++) out[cid[k]] = row[k];
    }
    tok_batch_free(&tb);
}

/* rank classification's scores do not depend on the batch: each example
 * alone (no encoder padding), all at once, in threes, and in reverse order
 * give the same bytes, and so do tok_rank and tok_rank_order; without
 * pad_invariant (the training path's softmax) the same comparison differs,
 * so the examples' lengths do exercise the padding */
static void test_score_any_batch(void) {
    t5_model *m = t5_new(&C, 0, 0);
    fx_fill_model(F, m, 0);
    t5_alloc_acts(m, 16, 64, 32, 16, T5_ACTS_SCORE);
    int64_t io[16], co[32], ec[16];
    tok_set s = rank_set(io, co, ec);
    int lmin = 1 << 30, lmax = 0;
    for (int64_t e = 0; e < s.n; e++) {
        int l = tok_input_len(&s, e);
        lmin = l < lmin ? l : lmin, lmax = l > lmax ? l : lmax;
    }
    CHECK(lmin < lmax, "the fixture's inputs all have %d tokens: nothing is padded", lmax);
    int64_t rev[16];
    for (int64_t e = 0; e < s.n; e++) rev[e] = s.n - 1 - e;
    float alone[32], all[32], threes[32], back[32], ranked[32], ordered[32], raw_alone[32], raw_all[32];
    scores_in_batches(m, &s, NULL, 1, 1, alone);
    scores_in_batches(m, &s, NULL, 16, 1, all);
    scores_in_batches(m, &s, NULL, 3, 1, threes);
    scores_in_batches(m, &s, rev, 16, 1, back);
    size_t bytes = sizeof(float) * (size_t)s.n_choices;
    CHECK(memcmp(alone, all, bytes) == 0, "scores alone and in one batch differ");
    CHECK(memcmp(alone, threes, bytes) == 0, "scores alone and in batches of three differ");
    CHECK(memcmp(alone, back, bytes) == 0, "scores alone and in reverse order differ");
    tok_batch tb;
    int pred[16];
    tok_batch_init(&tb, 5, 64, 32, 16);
    tok_rank(m, &s, 0, s.n, &tb, ranked, pred);
    int64_t *order = tok_length_order_range(&s, 0, s.n);
    tok_rank_order(m, &s, order, 0, s.n, &tb, ordered, pred);
    free(order);
    tok_batch_free(&tb);
    CHECK(memcmp(alone, ranked, bytes) == 0, "tok_rank's scores differ from each example's alone");
    CHECK(memcmp(alone, ordered, bytes) == 0, "tok_rank_order's scores differ from each example's alone");
    scores_in_batches(m, &s, NULL, 1, 0, raw_alone);
    scores_in_batches(m, &s, NULL, 16, 0, raw_all);
    CHECK(memcmp(raw_alone, raw_all, bytes) != 0, "without pad_invariant the batch did not change a score: no test");
    t5_free(m);
}

static void test_rank(void) {
    t5_model *m = t5_new(&C, 0, 0);
    fx_fill_model(F, m, 0);
    int64_t io[16], co[32], ec[16];
    tok_set s = rank_set(io, co, ec);
    const float *ref = fx_f32(F, "rank/scores");
    /* two batch shapes: everything at once, and 4 decoder rows (splits) */
    for (int v = 0; v < 2; v++) {
        tok_batch tb;
        tok_batch_init(&tb, v ? 2 : 8, 64, v ? 4 : 16, 16);
        float scores[32];
        int pred[16];
        tok_rank(m, &s, 0, s.n, &tb, scores, pred);
        t_close(v ? "rank scores (split batches)" : "rank scores", scores, ref, s.n_choices, 1e-4, 1e-5);
        for (int64_t i = 0; i < s.n; i++) {
            int best = 0;
            for (int64_t c = ec[i]; c < ec[i + 1]; c++)
                if (ref[c] > ref[ec[i] + best]) best = (int)(c - ec[i]);
            CHECK(pred[i] == best, "example %lld: prediction %d, reference %d", (long long)i, pred[i], best);
        }
        tok_batch_free(&tb);
    }
    t5_free(m);
}

static void test_span_corruption(void) {
    int toks[200], in[256], tg[256], nin, ntg;
    for (int i = 0; i < 200; i++) toks[i] = 3 + i % 90;
    int L = tok_span_raw_length(128, 32, 0.15, 3.0);
    CHECK(L > 100 && L <= 200, "raw length %d", L);
    for (uint64_t seed = 0; seed < 50; seed++) {
        tok_span_corrupt(toks, L, seed, 0.15, 3.0, 127, in, &nin, tg, &ntg);
        CHECK(nin <= 128 && ntg <= 32, "lengths %d %d", nin, ntg);
        CHECK(in[nin - 1] == T5_EOS && tg[ntg - 1] == T5_EOS, "EOS");
        /* reconstruct: replace sentinel k in the input by target span k */
        int rec[256], r = 0, spans = 0;
        for (int i = 0; i < nin - 1; i++) {
            if (in[i] > 100) { /* sentinels are 127, 126, ...; tokens 3..92 */
                int k = 127 - in[i];
                CHECK(k == spans, "sentinel order %d %d", k, spans);
                int j = 0;
                while (tg[j] != in[i]) j++;
                for (j++; j < ntg - 1 && tg[j] <= 100; j++) rec[r++] = tg[j];
                spans++;
            } else {
                rec[r++] = in[i];
            }
        }
        CHECK(r == L && memcmp(rec, toks, sizeof(int) * L) == 0, "reconstruction (seed %llu, %d of %d)",
              (unsigned long long)seed, r, L);
        int noise = ntg - 1 - spans;
        CHECK(abs(noise - (int)lround(L * 0.15)) == 0, "noise tokens %d", noise);
    }
}

static void test_batch_fill(void) {
    tok_batch tb;
    tok_batch_init(&tb, 2, 4, 2, 3);
    int a[] = {5, 6, 7, 8, 9, 1}, b[] = {5, 1}, c[] = {7, 8, 1}, d[] = {9, 9, 9, 1};
    const int *ins[] = {a, b}, *outs[] = {c, d};
    int nins[] = {6, 2}, nouts[] = {3, 4};
    tok_batch_fill(&tb, 2, ins, nins, 2, outs, nouts, NULL, 0, 0);
    int enc[] = {5, 6, 7, 1, 5, 1, 0, 0}, tgt[] = {7, 8, 1, 9, 9, 1}, dec[] = {0, 7, 8, 0, 9, 9};
    CHECK(tb.b.Te == 4 && tb.b.Td == 3, "dims %d %d", tb.b.Te, tb.b.Td);
    CHECK(memcmp(tb.enc, enc, sizeof enc) == 0, "encoder rows cut/padded");
    CHECK(memcmp(tb.tgt, tgt, sizeof tgt) == 0, "targets");
    CHECK(memcmp(tb.dec, dec, sizeof dec) == 0, "decoder inputs shifted right");
    tok_batch_free(&tb);
}

/* |a - b| / |b| (L2) */
static double l2_err(const float *a, const float *b, long n) {
    double e = 0, s = 0;
    for (long i = 0; i < n; i++) e += ((double)a[i] - b[i]) * ((double)a[i] - b[i]), s += (double)b[i] * b[i];
    return sqrt(e / (s + 1e-300));
}

/* max |a - b| / max |b| */
static double norm_err(const float *a, const float *b, long n) {
    double e = 0, s = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > e) e = d;
        if (fabs(b[i]) > s) s = fabs(b[i]);
    }
    return e / (s + 1e-30);
}

/* cpu_math bf16 (AMX): the same model, loss, gradients and ten AdamW steps
 * within bfloat16's rounding of the float32 reference (8 significant bits:
 * 2^-9 = 2e-3 relative per input), and measurably not float32 */
static void test_bf16_products(void) {
    if (be_set_cpu_math(BE_MATH_BF16) < 0) T_SKIP(mc_error());
    t5_model *m = micro(1, 0);
    t5_zero_grad(m);
    float loss = t5_forward(m, &Bt);
    long n = (long)Bt.Bd * Bt.Td * C.vocab_size;
    double el = norm_err(m->a.logits, fx_f32(F, "logits"), n);
    printf("  bf16 logits: max error %.3g of max |logit|; loss %.6f reference %.6f\n", el, loss,
           fx_f32(F, "loss")[0]);
    CHECK(el < 2e-2 && el > 1e-5, "bf16 logits error %.3g not in (1e-5, 2e-2)", el);
    CHECK(fabs(loss - fx_f32(F, "loss")[0]) < 1e-2 * fabs(fx_f32(F, "loss")[0]), "bf16 loss %f", loss);
    t5_backward(m, &Bt, T5_LOSS_MEAN, 1.0f);
    /* ReLU: a pre-activation that bf16 moves across 0 switches its whole
     * gradient row on or off, so single elements of wi's gradient move by
     * up to 18% of its largest; the error over the tensor (relative L2
     * norm, 5.4% at worst on the fixture, wi's) is what is bounded there */
    int relu = C.ffn == T5_FFN_RELU;
    double worst = 0;
    char nm[160];
    for (int i = 0; i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        snprintf(nm, sizeof nm, "grad/%s", t->name);
        const float *g = m->grads + t->offset, *ref = fx_f32(F, nm);
        double e = relu ? l2_err(g, ref, (long)t->numel) : norm_err(g, ref, (long)t->numel);
        if (e > worst) worst = e;
    }
    printf("  bf16 gradients: worst tensor error %.3g of its %s\n", worst, relu ? "L2 norm" : "max |grad|");
    double bound = relu ? 1e-1 : 5e-2;
    CHECK(worst < bound && worst > 1e-5, "bf16 gradient error %.3g not in (1e-5, %g)", worst, bound);
    t5_free(m);
    m = micro(1, 0);
    optim *o = opt_new(OPT_ADAMW, 3e-3f, m->n_params, m->tensors, m->n_tensors);
    float losses[10];
    for (int s = 0; s < 10; s++) {
        t5_zero_grad(m);
        losses[s] = t5_forward(m, &Bt);
        t5_backward(m, &Bt, T5_LOSS_MEAN, 1.0f);
        opt_step(o, m->params, m->grads);
    }
    const float *ref = fx_f32(F, "adamw_losses");
    printf("  bf16 AdamW: step 9 loss %.6f reference %.6f\n", losses[9], ref[9]);
    t_close("bf16 adamw_losses", losses, ref, 10, 1e-2, 0);
    opt_free(o);
    t5_free(m);
    be_set_cpu_math(BE_MATH_FP32);
}

/* ReLU against central differences of sum(dout * relu(x)) at points away
 * from the kink, and the accumulate flag. */
static void test_relu_op(void) {
    enum { N = 1000 };
    float x[N], d[N], y[N], dx[N], dx2[N];
    mc_rng r;
    mc_rng_seed(&r, 11);
    for (int i = 0; i < N; i++) {
        x[i] = (float)mc_rng_normal(&r), d[i] = (float)mc_rng_normal(&r);
        if (fabsf(x[i]) < 1e-2f) x[i] = 0.5f;
    }
    op_relu_forward(y, x, N);
    op_relu_backward(dx, d, x, N, 0);
    int bad = 0, pos = 0;
    for (int i = 0; i < N; i++) {
        pos += x[i] > 0;
        if (y[i] != (x[i] > 0 ? x[i] : 0.0f)) bad++;
        float h = 1e-3f, a = x[i] + h, b = x[i] - h;
        double fd = (d[i] * (a > 0 ? a : 0) - d[i] * (b > 0 ? b : 0)) / (2.0 * h);
        if (fabs(fd - dx[i]) > 1e-3 * (fabs(d[i]) + 1)) bad++;
        dx2[i] = 1.0f;
    }
    op_relu_backward(dx2, d, x, N, 1);
    for (int i = 0; i < N; i++) bad += dx2[i] != 1.0f + dx[i];
    CHECK(bad == 0 && pos > 300 && pos < 700, "%d mismatches (%d positive inputs)", bad, pos);
}

/* the globals for fixture `path` */
static void use_fixture(const char *path) {
    if (F) fx_free(F);
    F = fx_load(path);
    C = fx_config(F);
    fx_entry *e = fx_get(F, "enc_ids"), *t = fx_get(F, "targets");
    Bt = (t5_batch){.B = (int)e->shape[0], .Te = (int)e->shape[1], .Bd = (int)t->shape[0],
                    .Td = (int)t->shape[1], .enc_ids = fx_i32(F, "enc_ids"),
                    .dec_ids = fx_i32(F, "dec_ids"), .targets = fx_i32(F, "targets")};
}

/* The original layout (t5_original.bin): the same tests. */
static void original_layout(void) {
    CHECK(C.ffn == T5_FFN_RELU && C.tied, "the fixture is not the original layout");
    t5_model *m = t5_new(&C, 0, 1);
    CHECK(m->p.lm_head == NULL && t5_param(m, "lm_head.weight", NULL) == NULL, "a tied model has an lm_head");
    CHECK(t5_param(m, "encoder.block.0.layer.1.DenseReluDense.wi.weight", NULL) &&
              !t5_param(m, "encoder.block.0.layer.1.DenseReluDense.wi_0.weight", NULL),
          "wi / wi_0");
    CHECK(t5_ia3_param(m, "encoder.block.0.layer.1.DenseReluDense.wo.ia3_vector", NULL) != NULL, "no wo IA3 vector");
    t5_free(m);
}
static void original_forward_full(void) { test_forward_full(); }
static void original_backward_full(void) { test_backward_full(); }
static void original_ia3(void) { test_ia3(); }
static void original_adamw_steps(void) { test_adamw_steps(); }
static void original_adafactor_scaled_steps(void) { test_adafactor_scaled_steps(); }
static void original_finite_differences(void) { test_finite_differences(); }
static void original_linears_xg(void) { test_linears_xg(); }
static void original_rank(void) { test_rank(); }
static void original_bf16_products(void) { test_bf16_products(); }

int main(void) {
    be_init(2); /* exercise the threaded loops of ops.c */
    use_fixture(FIXTURE);
    RUN(test_buckets);
    RUN(test_linear_naive);
    RUN(test_forward_full);
    RUN(test_forward_layers);
    RUN(test_backward_full);
    RUN(test_ia3);
    RUN(test_adamw_steps);
    RUN(test_adafactor_steps);
    RUN(test_adamw_wd_cosine_steps);
    RUN(test_adafactor_scaled_steps);
    RUN(test_schedule);
    RUN(test_clip);
    RUN(test_finite_differences);
    RUN(test_linears_xg);
    RUN(test_rank);
    RUN(test_score_same_bytes);
    RUN(test_score_any_batch);
    RUN(test_span_corruption);
    RUN(test_batch_fill);
    RUN(test_bf16_products);
    RUN(test_relu_op);
    use_fixture(FIXTURE_ORIGINAL);
    RUN(original_layout);
    RUN(original_forward_full);
    RUN(original_backward_full);
    RUN(original_ia3);
    RUN(original_adamw_steps);
    RUN(original_adafactor_scaled_steps);
    RUN(original_finite_differences);
    RUN(original_linears_xg);
    RUN(original_rank);
    RUN(original_bf16_products);
    fx_free(F);
    return t_done();
}
