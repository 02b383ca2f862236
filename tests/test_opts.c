/* test_opts.c - the strict number parser, the option table parser, the
 * output check (lib/opts.h), the statistic check of merge (mrg_check_psd)
 * and the bounds of T5 config values (lib/t5.c). Error paths of whole
 * programs are in tests/test_options.sh. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "config.h"
#include "harness.h"
#include "merge.h"
#include "opts.h"
#include "t5.h"
#include "val.h"

static char dir[256];

static void test_int_rejects_fractions_overflow_and_junk(void) {
    long v = 7;
    CHECK(opts_parse_int("42", 0, 100, &v) == 0 && v == 42, "42: %s", mc_error());
    CHECK(opts_parse_int("-3", -5, 5, &v) == 0 && v == -3, "-3");
    CHECK(opts_parse_int("+3", -5, 5, &v) == 0 && v == 3, "+3");
    v = 7;
    CHECK(opts_parse_int("1.5", 0, 100, &v) < 0 && v == 7, "1.5 accepted");
    CHECK(strstr(mc_error(), "'1.5' is not an integer"), "message: %s", mc_error());
    CHECK(opts_parse_int("1e10", 0, 0, &v) < 0, "1e10 accepted");
    CHECK(opts_parse_int("99999999999999999999", 0, 0, &v) < 0, "overflow accepted");
    CHECK(strstr(mc_error(), "too large"), "overflow message: %s", mc_error());
    CHECK(opts_parse_int("12abc", 0, 0, &v) < 0, "trailing junk accepted");
    CHECK(opts_parse_int("abc", 0, 0, &v) < 0, "abc accepted");
    CHECK(opts_parse_int("", 0, 0, &v) < 0, "empty accepted");
    CHECK(opts_parse_int(" 5", 0, 0, &v) < 0, "leading blank accepted");
    CHECK(opts_parse_int("-", 0, 0, &v) < 0, "a sign alone accepted");
    CHECK(opts_parse_int("100000", 0, 1024, &v) < 0, "out of range accepted");
    CHECK(strstr(mc_error(), "100000 is outside [0, 1024]"), "range message: %s", mc_error());
    CHECK(opts_parse_int("1024", 0, 1024, &v) == 0 && v == 1024, "the bound itself");
}

static void test_float_rejects_junk_and_nonfinite(void) {
    double x = 0;
    CHECK(opts_parse_float("0.25", 0, 1, 0, &x) == 0 && x == 0.25, "0.25");
    CHECK(opts_parse_float("1e-5", 0, 0, 0, &x) == 0 && x == 1e-5, "1e-5");
    CHECK(opts_parse_float("-2", 0, 0, 0, &x) == 0 && x == -2, "-2 with no bounds");
    CHECK(opts_parse_float("abc", 0, 0, 0, &x) < 0, "abc accepted");
    CHECK(opts_parse_float("1.5x", 0, 0, 0, &x) < 0, "trailing junk accepted");
    CHECK(opts_parse_float("", 0, 0, 0, &x) < 0, "empty accepted");
    CHECK(opts_parse_float("nan", 0, 0, 0, &x) < 0, "nan accepted");
    CHECK(strstr(mc_error(), "not a finite number"), "nan message: %s", mc_error());
    CHECK(opts_parse_float("inf", 0, 0, 0, &x) < 0, "inf accepted");
    CHECK(opts_parse_float("1e999", 0, 0, 0, &x) < 0, "overflow to inf accepted");
    CHECK(opts_parse_float("nan", 0, 0, 1, &x) == 0 && isnan(x), "nan refused where allowed");
    CHECK(opts_parse_float("101", 0, 100, 0, &x) < 0, "out of range accepted");
}

static void test_config_values_use_the_same_parser(void) {
    mc_cfg *c = cfg_new();
    long v;
    double d;
    CHECK(cfg_set(c, "train.steps=1.5") == 0 && cfg_get_int(c, "train.steps", 1, 1, 100, &v) < 0, "1.5 steps");
    CHECK(cfg_set(c, "train.steps=1e10") == 0 && cfg_get_int(c, "train.steps", 1, 1, 100, &v) < 0, "1e10 steps");
    CHECK(cfg_set(c, "train.lr=nan") == 0 && cfg_get_float(c, "train.lr", 1, 0, 1, &d) < 0, "nan lr");
    CHECK(cfg_set(c, "train.lr=3e-4") == 0 && cfg_get_float(c, "train.lr", 1, 0, 1, &d) == 0 && d == 3e-4, "3e-4");
    cfg_free(c);
}

static void test_config_file_with_byte_order_mark(void) {
    char p[400];
    snprintf(p, sizeof p, "%s/bom.conf", dir);
    FILE *f = fopen(p, "w");
    fputs("\xEF\xBB\xBFmodel.d_model = 32\n", f);
    fclose(f);
    mc_cfg *c = cfg_new();
    CHECK(cfg_load(c, p) == 0, "a config with a BOM: %s", mc_error());
    CHECK(cfg_peek(c, "model.d_model") && !strcmp(cfg_peek(c, "model.d_model"), "32"), "the first key lost its BOM");
    cfg_free(c);
}

static void test_table_parses_lists_choices_positionals(void) {
    const char *o = NULL, *model = NULL;
    long n = 0;
    double x = 0;
    int flag = 0, choice = -1;
    opt_list l = {0}, pos = {0};
    static const char *const ch[] = {"red", "green", NULL};
    opt_spec rows[] = {
        {.name = "--n", .kind = OPT_INT, .dst = &n, .lo = 0, .hi = 10},
        {.name = "--x", .kind = OPT_FLOAT, .dst = &x},
        {.name = "--flag", .kind = OPT_FLAG, .dst = &flag},
        {.name = "--color", .kind = OPT_CHOICE, .dst = &choice, .choices = ch},
        {.name = "--list", .kind = OPT_LIST, .dst = &l},
        {.name = "--model", .kind = OPT_STR, .dst = &model, .flags = OPT_INPUT},
        {.name = "FILE", .kind = OPT_LIST, .dst = &pos},
        {.name = "-o", .kind = OPT_STR, .dst = &o},
        {0}};
    const opt_prog p = {.name = "t", .opts = rows};
    char *argv[] = {"--n", "3", "a,b", "--x", "-0.5", "--list", "p,q", "--flag", "--color", "green",
                    "--list", "r", "c", "--model", "m", "-o", "out", NULL};
    opts_parse(&p, 17, argv);
    CHECK(n == 3 && x == -0.5 && flag == 1 && choice == 1, "n %ld x %g flag %d choice %d", n, x, flag, choice);
    CHECK(l.n == 3 && !strcmp(l.v[0], "p") && !strcmp(l.v[2], "r"), "a repeated list appends: %d", l.n);
    CHECK(pos.n == 2 && !strcmp(pos.v[0], "a,b") && !strcmp(pos.v[1], "c"), "positionals are whole: %d", pos.n);
    CHECK(!strcmp(model, "m") && !strcmp(o, "out"), "strings");
    CHECK(opts_given(&p, "--list") == 2 && opts_given(&p, "--x") == 1 && opts_given(&p, "--color") == 1, "counts");
}

/* opts_check_output on path `out` against input `in` (NULL: none) */
static int out_ok(const char *out, int is_dir, const char *in, int in_is_dir) {
    opt_input i = {"--in", in, in_is_dir};
    return opts_check_output("-o", out, is_dir, &i, in ? 1 : 0);
}

static void test_output_check(void) {
    char f[400], g[400], lnk[400], hard[400], fifo[400], sub[400], deep[400];
    snprintf(f, sizeof f, "%s/in.bin", dir);
    snprintf(g, sizeof g, "%s/other.bin", dir);
    snprintf(lnk, sizeof lnk, "%s/link.bin", dir);
    snprintf(hard, sizeof hard, "%s/hard.bin", dir);
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(sub, sizeof sub, "%s/in.bin/x.msgpack", dir);
    snprintf(deep, sizeof deep, "%s/new/deeper/x.msgpack", dir);
    FILE *h = fopen(f, "w");
    fputs("x", h);
    fclose(h);
    h = fopen(g, "w");
    fclose(h);
    CHECK(symlink(f, lnk) == 0 && link(f, hard) == 0 && mkfifo(fifo, 0600) == 0, "setup");
    CHECK(out_ok(g, 0, f, 0) == 0, "another existing file: %s", mc_error());
    CHECK(out_ok(deep, 0, f, 0) == 0, "missing directories the writer makes: %s", mc_error());
    CHECK(out_ok(f, 0, f, 0) < 0 && strstr(mc_error(), "is the input --in"), "the input itself: %s", mc_error());
    CHECK(out_ok(lnk, 0, f, 0) < 0, "a symlink to the input");
    CHECK(out_ok(f, 0, lnk, 0) < 0, "the input through a symlink");
    CHECK(out_ok(hard, 0, f, 0) < 0, "a hard link to the input");
    CHECK(out_ok(fifo, 0, NULL, 0) < 0 && strstr(mc_error(), "a named pipe"), "a fifo: %s", mc_error());
    CHECK(out_ok(dir, 0, NULL, 0) < 0 && strstr(mc_error(), "a directory"), "a directory as file: %s", mc_error());
    CHECK(out_ok("/dev/null", 0, NULL, 0) < 0 && strstr(mc_error(), "character device"), "/dev/null: %s", mc_error());
    CHECK(out_ok(sub, 0, NULL, 0) < 0 && strstr(mc_error(), "not a directory"), "under a file: %s", mc_error());
    CHECK(out_ok("/proc/mats-test-out.msgpack", 0, NULL, 0) < 0 && strstr(mc_error(), "cannot create"),
          "a directory that takes no files: %s", mc_error());
    CHECK(out_ok(dir, 1, NULL, 0) == 0, "a directory as directory: %s", mc_error());
    CHECK(out_ok(f, 1, NULL, 0) < 0, "a file as directory");
    CHECK(out_ok(g, 0, dir, 1) < 0 && strstr(mc_error(), "a file of the input directory"), "a file in an input dir: %s",
          mc_error());
    CHECK(out_ok(deep, 0, dir, 1) == 0, "a new file outside it: %s", mc_error());
    CHECK(out_ok("", 0, NULL, 0) < 0, "an empty path");
    /* the probe leaves nothing behind */
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -a %s | grep -q probe", dir);
    CHECK(system(cmd) != 0, "a probe file was left in %s", dir);
}

static void test_psd_check(void) {
    float I[9] = {1, 0, 0, 0, 2, 0, 0, 0, 3};
    CHECK(mrg_check_psd(I, 3, 1e-3) == 0, "diagonal: %s", mc_error());
    float R[9] = {1, 2, 3, 2, 4, 6, 3, 6, 9}; /* rank 1: v v^T, singular but PSD */
    CHECK(mrg_check_psd(R, 3, 1e-3) == 0, "rank one: %s", mc_error());
    float N[9];
    for (int i = 0; i < 9; i++) N[i] = -R[i];
    CHECK(mrg_check_psd(N, 3, 1e-3) < 0 && strstr(mc_error(), "positive semi-definite"), "negated: %s", mc_error());
    float A[9] = {1, 0.5f, 0, 0.2f, 1, 0, 0, 0, 1};
    CHECK(mrg_check_psd(A, 3, 1e-3) < 0 && strstr(mc_error(), "not symmetric"), "asymmetric: %s", mc_error());
    float S[4] = {1, 2, 2, 1}; /* eigenvalues 3 and -1 */
    CHECK(mrg_check_psd(S, 2, 1e-3) < 0, "indefinite with a positive diagonal");
    float T[4] = {1, 1.0000001f, 1.0000001f, 1}; /* least eigenvalue -1e-7: rounding, within tolerance */
    CHECK(mrg_check_psd(T, 2, 1e-3) == 0, "rounding below zero: %s", mc_error());
    float Z[4] = {0, 0, 0, 0};
    CHECK(mrg_check_psd(Z, 2, 1e-3) == 0, "zero: %s", mc_error());
    float Zo[4] = {0, 1, 1, 0};
    CHECK(mrg_check_psd(Zo, 2, 1e-3) < 0, "zero diagonal, nonzero off it");
}

static void test_t5_config_bounds_name_the_key(void) {
    mc_cfg *c = cfg_new();
    const char *kv[] = {"model.vocab_size=64", "model.d_model=16", "model.d_kv=4", "model.d_ff=24",
                        "model.num_heads=1000000", "model.num_layers=2", NULL};
    for (int i = 0; kv[i]; i++) cfg_set(c, kv[i]);
    t5_config tc;
    CHECK(t5_config_from_cfg(&tc, c) < 0 && strstr(mc_error(), "model.num_heads"), "num_heads 1e6: %s", mc_error());
    cfg_set(c, "model.num_heads=2");
    CHECK(t5_config_from_cfg(&tc, c) == 0, "a small config: %s", mc_error());
    cfg_free(c);
    mc_val *v = t5_config_to_val(&tc);
    val_set_int(v, "num_heads", 1000000);
    CHECK(t5_config_from_val(&tc, v) < 0 && strstr(mc_error(), "meta.config.num_heads"), "meta: %s", mc_error());
    val_set_int(v, "num_heads", 2);
    val_set_int(v, "vocab_size", 1 << 21);
    val_set_int(v, "d_model", 1 << 12);
    CHECK(t5_config_from_val(&tc, v) < 0 && strstr(mc_error(), "2^31"), "a 2^33-element embedding: %s", mc_error());
    val_free(v);
}

/* `test_opts --write-corpus PATH`: a small `corpus` artifact as prepare
 * writes it (text, offsets, meta.sources), 20 lines per source, for the
 * shell tests of auxtask. */
static int write_corpus(const char *path) {
    static const char *const sources[] = {"reviews", "emails", "kjv", "fortunes", "gcide", "austen"};
    static const char *const words[] = {"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
                                        "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"};
    char *text = mallocCheck(1 << 16);
    int64_t off[121], len = 0;
    off[0] = 0;
    for (int l = 0; l < 120; l++) {
        for (int w = 0; w < 14; w++) len += sprintf(text + len, "%s%s", w ? " " : "", words[(l * 7 + w * 3) % 16]);
        off[l + 1] = len;
    }
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "prepare");
    mc_val *sm = val_set_map(meta, "sources");
    for (int s = 0; s < 6; s++) val_set_int(sm, sources[s], 20);
    art_writer *w = art_writer_open(path, "corpus", "", meta, 2);
    val_free(meta);
    if (!w) return -1;
    int64_t st[1] = {len}, so[1] = {121};
    if (art_writer_tensor(w, "text", ART_U8, 1, st, text) < 0 || art_writer_tensor(w, "offsets", ART_I64, 1, so, off) < 0) {
        art_writer_abort(w);
        return -1;
    }
    free(text);
    return art_writer_close(w);
}

int main(int argc, char **argv) {
    T_TOOL_MODE(argc == 3 && !strcmp(argv[1], "--write-corpus"), write_corpus(argv[2]));
    t_tmpdir(dir, sizeof dir, "test_opts");
    RUN(test_int_rejects_fractions_overflow_and_junk);
    RUN(test_float_rejects_junk_and_nonfinite);
    RUN(test_config_values_use_the_same_parser);
    RUN(test_config_file_with_byte_order_mark);
    RUN(test_table_parses_lists_choices_positionals);
    RUN(test_output_check);
    RUN(test_psd_check);
    RUN(test_t5_config_bounds_name_the_key);
    return t_done_rm(dir);
}
