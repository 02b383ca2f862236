/* test_t5_stats.c - the fisher and gram stages against the per-example
 * PyTorch loop of tests/reference/make_stats_fixtures.py
 * (tests/fixtures/t5_stats.bin), on t5-micro: diagonal Fisher of every
 * parameter and of the IA3 vectors, blockwise IA3 Fisher, empirical and
 * true, and the input / output-gradient Gram of every linear. The stages run
 * with batches of 3 examples, so padding and a partial last batch are
 * exercised; relative error is measured against each tensor's largest
 * entry. The tests named original_* do the same on the original T5 layout
 * (tests/fixtures/t5_original.bin, t5_original_stats.bin): ReLU, and a
 * head tied to shared.weight, whose Fisher holds the head's gradient and
 * the embedding's together and which has no Gram of its own. */
#include <math.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "art.h"
#include "harness.h"
#include "t5.h"
#include "test_t5_fixture.h"

static fx_file *FM, *FS;
static char dir[256];
static char model_path[300], ia3_path[300], data_path[300];

static void write_inputs(void) {
    t5_config c = fx_config(FM);
    t5_model *m = t5_new(&c, 0, 1);
    fx_fill_model(FM, m, 1);
    if (t5_save_model(m, model_path, "", NULL) < 0) die("%s", mc_error());
    if (t5_save_ia3(m, ia3_path, "", "", NULL) < 0) die("%s", mc_error());
    t5_free(m);
    const char *names[] = {"input_ids", "input_offsets", "choice_ids", "choice_offsets", "example_choices", "label"};
    mc_val *meta = val_map();
    val_set_str(meta, "task", "stats");
    val_set_str(meta, "split", "train");
    art_writer *w = art_writer_open(data_path, "tokens", "", meta, 6);
    val_free(meta);
    for (int i = 0; i < 6; i++) {
        fx_entry *e = fx_get(FS, names[i]);
        int64_t sh[1] = {e->numel};
        if (i == 5) {
            art_writer_tensor(w, names[i], ART_I32, 1, sh, e->data);
        } else {
            int64_t *v = mallocCheck(sizeof(int64_t) * e->numel);
            for (int64_t j = 0; j < e->numel; j++) v[j] = ((int *)e->data)[j];
            art_writer_tensor(w, names[i], ART_I64, 1, sh, v);
            free(v);
        }
    }
    if (art_writer_close(w) < 0) die("%s", mc_error());
}

static int run(const char *args, const char *out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s >%s/log 2>&1", args, dir);
    int rc = system(cmd);
    if (rc != 0) {
        printf("  command failed (%d): %s\n", rc, args);
        snprintf(cmd, sizeof cmd, "cat %s/log", dir);
        if (system(cmd) != 0) printf("  (no log)\n");
    }
    (void)out;
    return rc;
}

/* compare every tensor of artifact `path` with fixture entries prefix/name;
 * counts must agree too */
static void compare(const char *path, const char *kind, const char *prefix, int expect_tensors) {
    art_file *f = art_open(path, kind);
    CHECK(f != NULL, "%s", mc_error());
    if (!f) return;
    CHECK((int)f->n_tensors == expect_tensors, "%s: %zu tensors, expected %d", path, f->n_tensors, expect_tensors);
    double worst = 0;
    const char *worst_name = "";
    for (size_t i = 0; i < f->n_tensors; i++) {
        char nm[200];
        snprintf(nm, sizeof nm, "%s/%s", prefix, f->tensors[i].name);
        fx_entry *e = fx_get(FS, nm);
        CHECK(e->numel == f->tensors[i].numel, "%s: %lld vs %lld values", nm, (long long)f->tensors[i].numel,
              (long long)e->numel);
        if (e->numel != f->tensors[i].numel) continue;
        float *a = art_tensor_f32(&f->tensors[i]);
        const float *b = e->data;
        double mx = 0, err = 0;
        for (int64_t j = 0; j < e->numel; j++) mx = fmax(mx, fabs(b[j]));
        for (int64_t j = 0; j < e->numel; j++) err = fmax(err, fabs(a[j] - b[j]));
        double rel = mx > 0 ? err / mx : err;
        if (rel > worst) worst = rel, worst_name = f->tensors[i].name;
        if (rel > 1e-4) t_close(nm, a, b, e->numel, 1e-4, 1e-4 * mx);
        free(a);
    }
    printf("  %s: %zu tensors, max error relative to each tensor's max %.3g (%s)\n", prefix, f->n_tensors,
           worst, worst_name);
    CHECK(worst <= 1e-4, "%s: relative error %.3g", prefix, worst);
    art_close(f);
}

/* The fixture model's number of parameter tensors (ia3 0) or IA3 vectors (1). */
static int n_tensors_of(int ia3) {
    t5_config c = fx_config(FM);
    t5_model *m = t5_new(&c, 0, 1);
    int n = ia3 ? m->n_ia3_tensors : m->n_tensors;
    t5_free(m);
    return n;
}

static void test_fisher_full(void) {
    for (int tr = 0; tr < 2; tr++) {
        char cmd[2048], out[300], pre[64];
        snprintf(out, sizeof out, "%s/fd%d.msgpack", dir, tr);
        snprintf(cmd, sizeof cmd, "build/bin/fisher --model %s --data %s --type diagonal %s --seed 5 "
                 "--set fisher.batch_size=3 -o %s", model_path, data_path, tr ? "--true" : "", out);
        CHECK(run(cmd, out) == 0, "fisher failed");
        snprintf(pre, sizeof pre, "fisher_full_%d", tr);
        compare(out, "fisher_diag", pre, n_tensors_of(0));
    }
}

static void test_fisher_ia3(void) {
    for (int tr = 0; tr < 2; tr++)
        for (int blk = 0; blk < 2; blk++) {
            char cmd[2048], out[300], pre[64];
            snprintf(out, sizeof out, "%s/fi%d%d.msgpack", dir, tr, blk);
            snprintf(cmd, sizeof cmd, "build/bin/fisher --model %s --ia3 %s --data %s --type %s %s --seed 5 "
                     "--set fisher.batch_size=3 -o %s", model_path, ia3_path, data_path,
                     blk ? "blockwise" : "diagonal", tr ? "--true" : "", out);
            CHECK(run(cmd, out) == 0, "fisher failed");
            snprintf(pre, sizeof pre, "%s_ia3_%d", blk ? "block" : "fisher", tr);
            compare(out, blk ? "fisher_block" : "fisher_diag", pre, n_tensors_of(1));
        }
}

static void test_true_differs(void) {
    /* the sampled labels must differ from the gold ones somewhere, or the
     * true-Fisher test would not test sampling */
    fx_entry *t = fx_get(FS, "true_targets_ia3_1"), *l = fx_get(FS, "label"), *ec = fx_get(FS, "example_choices");
    int diff = 0;
    for (int64_t i = 0; i < l->numel; i++)
        diff += ((int *)t->data)[i] != ((int *)ec->data)[i] + ((int *)l->data)[i];
    CHECK(diff > 0, "true targets equal the gold ones");
}

static void test_gram(void) {
    char cmd[2048], out[300];
    snprintf(out, sizeof out, "%s/g.msgpack", dir);
    snprintf(cmd, sizeof cmd, "build/bin/gram --model %s --data %s --set gram.batch_size=3 -o %s", model_path,
             data_path, out);
    CHECK(run(cmd, out) == 0, "gram failed");
    t5_config c = fx_config(FM);
    t5_model *m = t5_new(&c, 0, 0);
    int nl = t5_n_linears(m);
    t5_free(m);
    CHECK(nl == (c.ffn == T5_FFN_RELU ? 6 : 7) * c.num_layers + (c.ffn == T5_FFN_RELU ? 10 : 11) * c.num_decoder_layers + !c.tied,
          "%d linears", nl);
    compare(out, "gram", "gram", 2 * nl - !c.tied); /* lm_head has no output-gradient Gram */
    art_file *f = art_open(out, "gram");
    if (f) {
        int *tok = fx_i32(FS, "gram_tokens");
        CHECK(val_get_int(f->meta, "n_encoder_tokens", -1) == tok[0] && val_get_int(f->meta, "n_decoder_tokens", -1) == tok[1],
              "token counts %lld %lld vs %d %d", (long long)val_get_int(f->meta, "n_encoder_tokens", -1),
              (long long)val_get_int(f->meta, "n_decoder_tokens", -1), tok[0], tok[1]);
        art_close(f);
    }
}

/* exit status 1 and one stderr line containing `word` */
static void expect_one_line(const char *cmd, const char *word, const char *what) {
    char full[2400], ep[300];
    snprintf(ep, sizeof ep, "%s/err.txt", dir);
    snprintf(full, sizeof full, "%s 2>%s >/dev/null", cmd, ep);
    int rc = system(full);
    unsigned char *buf = NULL;
    size_t len = 0;
    char *msg = mc_read_file(ep, &buf, &len) == 0 ? (char *)reallocCheck(buf, len + 1) : NULL;
    if (msg) msg[len] = 0;
    const char *nl = msg ? strchr(msg, '\n') : NULL;
    CHECK(rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 1 && msg && strstr(msg, word) && nl && !nl[1],
          "%s: exit %d, stderr '%s' (want one line naming '%s')", what, rc, msg ? msg : "", word);
    free(msg);
}

static void test_bad_input(void) {
    char cmd[2048], out[300];
    snprintf(out, sizeof out, "%s/x.msgpack", dir);
    snprintf(cmd, sizeof cmd, "build/bin/fisher --model %s --data %s --type blockwise -o %s", model_path, data_path, out);
    expect_one_line(cmd, "--ia3", "blockwise without --ia3");
    snprintf(cmd, sizeof cmd, "build/bin/gram --model %s --data %s -o %s", data_path, data_path, out);
    expect_one_line(cmd, data_path, "tokens as model");
    CHECK(access(out, F_OK) != 0, "failed stage left %s", out);
}

/* the fixtures and the stages' inputs of one layout */
static void use_fixtures(const char *micro, const char *stats) {
    if (FM) fx_free(FM), fx_free(FS);
    FM = fx_load(micro);
    FS = fx_load(stats);
    write_inputs();
}

static void original_fisher_full(void) { test_fisher_full(); }
static void original_fisher_ia3(void) { test_fisher_ia3(); }
static void original_gram(void) { test_gram(); }

int main(void) {
    t_tmpdir(dir, sizeof dir, "test_t5_stats");
    snprintf(model_path, sizeof model_path, "%s/model.msgpack", dir);
    snprintf(ia3_path, sizeof ia3_path, "%s/ia3.msgpack", dir);
    snprintf(data_path, sizeof data_path, "%s/data.msgpack", dir);
    use_fixtures("tests/fixtures/t5_micro.bin", "tests/fixtures/t5_stats.bin");
    RUN(test_fisher_full);
    RUN(test_fisher_ia3);
    RUN(test_true_differs);
    RUN(test_gram);
    RUN(test_bad_input);
    use_fixtures("tests/fixtures/t5_original.bin", "tests/fixtures/t5_original_stats.bin");
    RUN(original_fisher_full);
    RUN(original_fisher_ia3);
    RUN(original_gram);
    fx_free(FM);
    fx_free(FS);
    return t_done_rm(dir);
}
