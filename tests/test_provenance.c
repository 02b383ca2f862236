/* test_provenance.c - merge checks what its statistics were computed from.
 *
 * Artifacts from build/bin/mkrandom, rewritten here with the meta the
 * stages record (a gram's or fisher's meta.inputs.model / .ia3, a model's
 * meta.config) or with negated statistics, and given to build/bin/merge:
 * statistics in the wrong order, twice the same, of the base model, of
 * another base, a model of another config, and statistics that are not
 * positive semi-definite are refused with one line, by every method that
 * uses them; --allow-mismatch merges anyway; statistics that do not say
 * what they were computed on (meta.inputs is optional) are taken. The
 * same with statistics the fisher and gram stages wrote (micro models
 * fine-tuned from one base): what merge checks is what they record.
 * MATS_BIN=DIR runs another build's programs. */
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "harness.h"
#include "val.h"

static char dir[256], err[4096];
static const char *bin = "build/bin";

static const char *P(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s.msgpack", dir, name);
    return buf[k];
}

/* The variable arguments after fmt, formatted into the array buf. */
#define VFMT(buf, fmt)                                                                             \
    do {                                                                                           \
        va_list ap_;                                                                               \
        va_start(ap_, fmt);                                                                        \
        vsnprintf(buf, sizeof buf, fmt, ap_);                                                      \
        va_end(ap_);                                                                               \
    } while (0)

/* Run a shell command; its exit status. */
static int sh(const char *fmt, ...) MC_PRINTF(1, 2);
static int sh(const char *fmt, ...) {
    char cmd[4096];
    VFMT(cmd, fmt);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* merge ARGS -o DIR/out.msgpack; its exit status, its stderr in err. */
static int merge(const char *fmt, ...) MC_PRINTF(1, 2);
static int merge(const char *fmt, ...) {
    char args[3000];
    VFMT(args, fmt);
    int rc = sh("%s/merge %s -o %s/out.msgpack >/dev/null 2>%s/err", bin, args, dir, dir);
    char p[600];
    snprintf(p, sizeof p, "%s/err", dir);
    FILE *f = fopen(p, "r");
    size_t n = f ? fread(err, 1, sizeof err - 1, f) : 0;
    err[n] = 0;
    if (f) fclose(f);
    return rc;
}

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void key_of(const char *path, char out[33]) {
    art_file *a = art_open(path, NULL);
    snprintf(out, 33, "%s", a ? a->key : "");
    if (a) art_close(a);
}

/* Copy artifact `in` to `out` with meta.inputs.model / .ia3 set (NULL: as
 * they were), meta.config.d_model set (d_model > 0), and every tensor
 * negated (negate). */
static void rewrite(const char *in, const char *out, const char *model, const char *ia3, long d_model, int negate) {
    art_file *a = art_open(in, NULL);
    if (!a) die("%s", mc_error());
    mc_val *meta = val_clone(a->meta);
    if (model || ia3) {
        mc_val *inputs = val_set_map(meta, "inputs");
        if (model) val_set_str(inputs, "model", model);
        if (ia3) val_set_str(inputs, "ia3", ia3);
    }
    if (d_model > 0) {
        mc_val *c = val_clone(val_get(meta, "config"));
        val_set_int(c, "d_model", d_model);
        val_set(meta, "config", c);
    }
    art_writer *w = art_writer_open(out, a->kind, a->key, meta, a->n_tensors);
    val_free(meta);
    if (!w) die("%s", mc_error());
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *t = &a->tensors[i];
        float *x = art_tensor_f32(t);
        for (int64_t j = 0; negate && j < t->numel; j++) x[j] = -x[j];
        if (art_writer_tensor(w, t->name, ART_F32, t->ndim, t->shape, x) < 0) die("%s", mc_error());
        free(x);
    }
    if (art_writer_close(w) < 0) die("%s", mc_error());
    art_close(a);
}

static char kp[33], ka[33], kb[33], kia[33], kib[33];
static char FULL[1500], IA3[1500];

static int setup(void) {
    const char *mk = "%s/mkrandom %s >/dev/null 2>&1";
    char a[1024];
#define MK(...) (snprintf(a, sizeof a, __VA_ARGS__), sh(mk, bin, a))
    if (MK("--kind model --preset tiny -o %s", P("p")) || MK("--kind model --like %s --seed 1 -o %s", P("p"), P("a")) ||
        MK("--kind model --like %s --seed 2 -o %s", P("p"), P("b")) ||
        MK("--kind gram --like %s --seed 1 -o %s", P("a"), P("ga0")) ||
        MK("--kind gram --like %s --seed 2 -o %s", P("b"), P("gb0")) ||
        MK("--kind gram --like %s --seed 3 -o %s", P("p"), P("gp0")) ||
        MK("--kind ia3 --base %s --scale 0.1 --seed 1 -o %s", P("p"), P("ia")) ||
        MK("--kind ia3 --base %s --scale 0.1 --seed 2 -o %s", P("p"), P("ib")) ||
        MK("--kind fisher_block --like %s --seed 1 -o %s", P("ia"), P("fa0")) ||
        MK("--kind fisher_block --like %s --seed 2 -o %s", P("ib"), P("fb0")))
        return -1;
#undef MK
    key_of(P("p"), kp), key_of(P("a"), ka), key_of(P("b"), kb), key_of(P("ia"), kia), key_of(P("ib"), kib);
    /* what gram --model A and fisher --model P --ia3 IA record */
    rewrite(P("ga0"), P("ga"), ka, NULL, 0, 0);
    rewrite(P("gb0"), P("gb"), kb, NULL, 0, 0);
    rewrite(P("gp0"), P("gp"), kp, NULL, 0, 0);
    rewrite(P("gb0"), P("gbneg"), kb, NULL, 0, 1);
    rewrite(P("fa0"), P("fa"), kp, kia, 0, 0);
    rewrite(P("fb0"), P("fb"), kp, kib, 0, 0);
    rewrite(P("fb0"), P("fbneg"), kp, kib, 0, 1);
    rewrite(P("fb0"), P("fbother"), "0123456789abcdef0123456789abcdef", kib, 0, 0);
    rewrite(P("b"), P("bcfg"), NULL, NULL, 32, 0);
    snprintf(FULL, sizeof FULL, "--pretrained %s --models %s,%s", P("p"), P("a"), P("b"));
    snprintf(IA3, sizeof IA3, "--pretrained %s --models %s,%s", P("p"), P("ia"), P("ib"));
    return 0;
}

/* Micro models fine-tuned from one base p (full: s1, s2; IA3: i1, i2), and
 * the statistics of the fisher and gram stages: g1, g2, gp (of p), f1, f2
 * (diagonal), b1, b2 (IA3 blocks). */
static char SFULL[1500], SIA3[1500];

static int setup_stages(void) {
    const char *micro = "--config configs/models/t5-micro.conf --set train.steps=1 --set train.batch_size=4";
    char data[600];
    snprintf(data, sizeof data, "--data %s/train.msgpack", dir);
    if (sh("build/tests/test_t5_data --write %s >/dev/null", dir) ||
        sh("%s/train %s %s -o %s 2>/dev/null", bin, micro, data, P("sp")) ||
        sh("%s/gram --model %s %s --examples 4 -o %s 2>/dev/null", bin, P("sp"), data, P("sgp")))
        return -1;
    for (int s = 1; s <= 2; s++) {
        char m[8], i[8], g[8], f[8], b[8];
        snprintf(m, sizeof m, "s%d", s), snprintf(i, sizeof i, "si%d", s), snprintf(g, sizeof g, "sg%d", s);
        snprintf(f, sizeof f, "sf%d", s), snprintf(b, sizeof b, "sb%d", s);
        if (sh("%s/train %s %s --init %s --seed %d -o %s 2>/dev/null", bin, micro, data, P("sp"), s, P(m)) ||
            sh("%s/gram --model %s %s --examples 4 -o %s 2>/dev/null", bin, P(m), data, P(g)) ||
            sh("%s/fisher --model %s %s --type diagonal --examples 4 -o %s 2>/dev/null", bin, P(m), data, P(f)) ||
            sh("%s/train %s %s --mode ia3 --init %s --seed %d -o %s 2>/dev/null", bin, micro, data, P("sp"), s, P(i)) ||
            sh("%s/fisher --model %s --ia3 %s %s --type blockwise --examples 4 -o %s 2>/dev/null", bin, P("sp"), P(i),
               data, P(b)))
            return -1;
    }
    snprintf(SFULL, sizeof SFULL, "--pretrained %s --models %s,%s", P("sp"), P("s1"), P("s2"));
    snprintf(SIA3, sizeof SIA3, "--pretrained %s --models %s,%s", P("sp"), P("si1"), P("si2"));
    return 0;
}

/* one refusal: exit 1, one line, naming `word` */
#define REFUSED(rc, word) CHECK((rc) == 1 && lines(err) == 1 && strstr(err, word), "rc %d, want one line naming '%s': %s", rc, word, err)
/* a merge (the arguments of merge()) that must succeed; `what` names it */
#define ACCEPTED(what, ...)                                                                        \
    do {                                                                                           \
        int rc_ = merge(__VA_ARGS__);                                                              \
        CHECK(rc_ == 0, "%s: %s", what, err);                                                      \
    } while (0)
/* a test whose merge (the arguments of merge()) is one such refusal */
#define REFUSAL_TEST(name, word, ...)                                                              \
    static void name(void) {                                                                       \
        int rc = merge(__VA_ARGS__);                                                               \
        REFUSED(rc, word);                                                                         \
    }

static void test_paired_statistics_accepted(void) {
    ACCEPTED("regmean", "--method regmean %s --gram %s,%s", FULL, P("ga"), P("gb"));
    ACCEPTED("mats", "--method mats --iterations 5 %s --gram %s,%s", FULL, P("ga"), P("gb"));
    ACCEPTED("ia3 mats", "--method mats --iterations 5 %s --fisher %s,%s", IA3, P("fa"), P("fb"));
}

REFUSAL_TEST(test_swapped_grams_refused, "was computed on model 2 of --models",
             "--method regmean %s --gram %s,%s", FULL, P("gb"), P("ga"))

REFUSAL_TEST(test_same_gram_twice_refused, "(number 2) was computed on model 1 of --models",
             "--method cg_regmean --iterations 5 %s --gram %s,%s", FULL, P("ga"), P("ga"))

REFUSAL_TEST(test_base_model_grams_refused, "was computed on --pretrained",
             "--method mats --iterations 5 %s --gram %s,%s", FULL, P("gp"), P("gp"))

REFUSAL_TEST(test_ia3_fisher_block_of_another_base_refused, "none of the inputs (meta.inputs.model)",
             "--method mats --iterations 5 %s --fisher %s,%s", IA3, P("fa"), P("fbother"))

REFUSAL_TEST(test_ia3_fisher_blocks_swapped_refused, "(meta.inputs.ia3)",
             "--method mats --iterations 5 %s --fisher %s,%s", IA3, P("fb"), P("fa"))

REFUSAL_TEST(test_model_of_another_config_refused, "d_model 16 vs 32",
             "--method average --pretrained %s --models %s,%s", P("p"), P("a"), P("bcfg"))

static void test_allow_mismatch_merges_anyway(void) {
    ACCEPTED("swapped grams", "--method regmean %s --gram %s,%s --allow-mismatch", FULL, P("gb"), P("ga"));
    ACCEPTED("config",
             "--method average --pretrained %s --models %s,%s --allow-mismatch", P("p"), P("a"), P("bcfg"));
}

static void test_negated_statistics_refused_by_every_method(void) {
    const char *methods[] = {"regmean", "cg_regmean", "mats", NULL};
    for (int m = 0; methods[m]; m++) {
        int rc = merge("--method %s --iterations 5 %s --gram %s,%s", methods[m], FULL, P("ga"), P("gbneg"));
        REFUSED(rc, "is not positive semi-definite");
    }
    int rc = merge("--method mats --iterations 5 %s --fisher %s,%s", IA3, P("fa"), P("fbneg"));
    REFUSED(rc, "is not positive semi-definite");
}

static void test_statistics_that_do_not_say_accepted(void) {
    ACCEPTED("statistics without meta.inputs (mkrandom's)",
             "--method regmean %s --gram %s,%s", FULL, P("gb0"), P("ga0"));
}

static void test_stage_statistics_in_order_accepted(void) {
    ACCEPTED("regmean", "--method regmean %s --gram %s,%s", SFULL, P("sg1"), P("sg2"));
    ACCEPTED("fisher", "--method fisher %s --fisher %s,%s", SFULL, P("sf1"), P("sf2"));
    ACCEPTED("ia3 mats", "--method mats --iterations 3 %s --fisher %s,%s", SIA3, P("sb1"), P("sb2"));
}

static void test_stage_statistics_mismatched_refused(void) {
    int rc = merge("--method regmean %s --gram %s,%s", SFULL, P("sg2"), P("sg1"));
    REFUSED(rc, "(number 1) was computed on model 2 of --models");
    rc = merge("--method mats --iterations 3 %s --gram %s,%s", SFULL, P("sgp"), P("sgp"));
    REFUSED(rc, "was computed on --pretrained");
    rc = merge("--method fisher %s --fisher %s,%s", SFULL, P("sf1"), P("sf1"));
    REFUSED(rc, "(number 2) was computed on model 1 of --models");
    rc = merge("--method mats --iterations 3 %s --fisher %s,%s", SIA3, P("sb2"), P("sb1"));
    REFUSED(rc, "(meta.inputs.ia3)");
    ACCEPTED("--allow-mismatch", "--method regmean %s --gram %s,%s --allow-mismatch", SFULL, P("sg2"), P("sg1"));
}

int main(void) {
    if (getenv("MATS_BIN")) bin = getenv("MATS_BIN");
    t_tmpdir(dir, sizeof dir, "test_provenance");
    setenv("MATS_THREADS", "1", 1);
    setenv("MATS_PROGRESS_SECONDS", "1000", 1);
    if (setup() < 0 || setup_stages() < 0) {
        printf("FAIL setup: mkrandom or a stage failed\n");
        return 1;
    }
    RUN(test_paired_statistics_accepted);
    RUN(test_swapped_grams_refused);
    RUN(test_same_gram_twice_refused);
    RUN(test_base_model_grams_refused);
    RUN(test_ia3_fisher_block_of_another_base_refused);
    RUN(test_ia3_fisher_blocks_swapped_refused);
    RUN(test_model_of_another_config_refused);
    RUN(test_allow_mismatch_merges_anyway);
    RUN(test_negated_statistics_refused_by_every_method);
    RUN(test_statistics_that_do_not_say_accepted);
    RUN(test_stage_statistics_in_order_accepted);
    RUN(test_stage_statistics_mismatched_refused);
    return t_done_rm(dir);
}
