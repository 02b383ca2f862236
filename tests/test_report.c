/* test_report.c - the report stage: mean ± std over seeds, majority rows from
 * tokens artifacts, lambda curves, single-class detection and the findings
 * under each table. */
#include <sys/stat.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "harness.h"

static char dir[256];

static void write_metrics(const char *name, double a, double b, const int32_t *pred, int n) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mc_val *m = val_map();
    mc_val *acc = val_set_map(m, "accuracy");
    val_set_float(acc, "alpha", a);
    val_set_float(acc, "beta", b);
    val_set_float(m, "average", (a + b) / 2);
    mc_val *ex = val_set_map(m, "n_examples");
    val_set_int(ex, "alpha", n / 2);
    val_set_int(ex, "beta", n - n / 2);
    art_writer *w = art_writer_open(p, "metrics", "", m, 1);
    int64_t s[1] = {n};
    art_writer_tensor(w, "prediction", ART_I32, 1, s, pred);
    if (art_writer_close(w) != 0) die("%s", mc_error());
    val_free(m);
}

static void write_metrics1(const char *name, const char *task, double a) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mc_val *m = val_map();
    val_set_float(val_set_map(m, "accuracy"), task, a);
    val_set_float(m, "average", a);
    art_writer *w = art_writer_open(p, "metrics", "", m, 0);
    if (art_writer_close(w) != 0) die("%s", mc_error());
    val_free(m);
}

static void write_tokens(const char *name, const char *task, const int32_t *labels, int n) {
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mc_val *m = val_map();
    val_set_str(m, "task", task);
    val_set_str(m, "split", "test");
    art_writer *w = art_writer_open(p, "tokens", "", m, 2);
    int64_t s[1] = {n}, s1[1] = {n + 1};
    int64_t off[16];
    for (int i = 0; i <= n; i++) off[i] = 3 * i; /* three choices each: labels 0 to 2 */
    art_writer_tensor(w, "example_choices", ART_I64, 1, s1, off);
    art_writer_tensor(w, "label", ART_I32, 1, s, labels);
    if (art_writer_close(w) != 0) die("%s", mc_error());
    val_free(m);
}

static char *slurp(const char *p) {
    unsigned char *b;
    size_t n;
    if (mc_read_file(p, &b, &n) != 0) return NULL;
    b = realloc(b, n + 1);
    b[n] = 0;
    return (char *)b;
}

/* build/bin/report [flags] on a manifest of `lines` ('@' stands for dir)
 * into dir/NAME.md: its text (the caller frees it), NULL if it failed. */
static char *report_of(const char *name, const char *lines, const char *flags) {
    char man[400], out[400], cmd[1400];
    snprintf(man, sizeof man, "%s/%s.tsv", dir, name);
    snprintf(out, sizeof out, "%s/%s.md", dir, name);
    FILE *f = fopen(man, "w");
    if (!f) die("%s: cannot write", man);
    for (const char *c = lines; *c; c++)
        if (*c == '@') fputs(dir, f);
        else fputc(*c, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "build/bin/report --manifest %s -o %s %s 2>/dev/null", man, out, flags);
    CHECK(system(cmd) == 0, "report failed");
    return slurp(out);
}

static void test_table(void) {
    int32_t mixed[4] = {0, 1, 1, 0}, single[4] = {0, 0, 1, 1}; /* single: each task one class */
    write_metrics("i1.msgpack", 0.8, 0.6, mixed, 4);
    write_metrics("i2.msgpack", 0.6, 0.6, mixed, 4);
    write_metrics("t1v0.msgpack", 0.5, 0.5, mixed, 4);
    write_metrics("t1v1.msgpack", 0.7, 0.5, mixed, 4);
    write_metrics("t1.msgpack", 0.7, 0.5, single, 4);
    int32_t la[5] = {0, 0, 0, 1, 2}, lb[4] = {1, 1, 0, 0};
    write_tokens("a.msgpack", "alpha", la, 5);
    write_tokens("b.msgpack", "beta", lb, 4);
    char *md = report_of("results", "# group row seed split lambda path\n"
                                    "ia3\tmajority\t-\ttest\t-\t@/a.msgpack,@/b.msgpack\n"
                                    "ia3\tindividual\t1\ttest\t-\t@/i1.msgpack\n"
                                    " ia3\tindividual\t2\ttest\t-\t@/i2.msgpack\n" /* spaces around fields are ignored */
                                    "ia3\tties\t1\tvalidation\t0\t@/t1v0.msgpack\n"
                                    "ia3\tties\t1\tvalidation\t1\t@/t1v1.msgpack\n"
                                    "ia3\tties\t1\ttest\t1\t@/t1.msgpack\n",
                         "");
    CHECK(md != NULL, "no output");
    if (!md) return;
    CHECK(strstr(md, "| method | alpha | beta | **average** | of gap | λ | 1-class |") != NULL, "header:\n%s", md);
    CHECK(strstr(md, "| majority | 60.0 | 50.0 | **55.0** | – | – | – |") != NULL, "majority row:\n%s", md);
    /* individual alpha: 80, 60 -> 70 ± 14.1; beta 60 ± 0; average 70, 60 -> 65 ± 7.1 */
    CHECK(strstr(md, "| individual | 70.0 ± 14.1 | 60.0 ± 0.0 | **65.0 ± 7.1** | – | – | 0 |") != NULL, "individual row:\n%s", md);
    CHECK(strstr(md, "| ties | 70.0 | 50.0 | **60.0** | 50% | 1 | 2 |") != NULL, "ties row:\n%s", md);
    char png[500];
    snprintf(png, sizeof png, "%s/results-lambda-ia3.png", dir);
    CHECK(access(png, F_OK) == 0, "no lambda plot");
    snprintf(png, sizeof png, "%s/results-tasks-ia3.png", dir);
    CHECK(access(png, F_OK) == 0, "no task plot");
    free(md);
}

/* One metrics file per task and seed (the individual models) combine into
 * one result per seed: the average is over tasks first, then over seeds. */
static void test_per_task_lines_combine(void) {
    write_metrics1("a1.msgpack", "alpha", 0.9);
    write_metrics1("b1.msgpack", "beta", 0.5);
    write_metrics1("a2.msgpack", "alpha", 0.7);
    write_metrics1("b2.msgpack", "beta", 0.5);
    char *md = report_of("r2", "full\tindividual\t1\ttest\t-\t@/a1.msgpack\n"
                               "full\tindividual\t1\ttest\t-\t@/b1.msgpack\n"
                               "full\tindividual\t2\ttest\t-\t@/a2.msgpack\n"
                               "full\tindividual\t2\ttest\t-\t@/b2.msgpack\n",
                         "--no-plots");
    char out[400], cmd[2400];
    /* seed averages 70 and 60: 65 ± 7.1 */
    CHECK(md && strstr(md, "| individual | 80.0 ± 14.1 | 50.0 ± 0.0 | **65.0 ± 7.1** | – | – | – |"), "row:\n%s", md ? md : "");
    free(md);
    /* argmax over lambda: the highest average, the first on ties */
    snprintf(cmd, sizeof cmd, "build/bin/report --argmax 0.1=%s/b1.msgpack 0.2=%s/a2.msgpack 0.3=%s/a1.msgpack 0.4=%s/a1.msgpack > %s/best.txt",
             dir, dir, dir, dir, dir);
    CHECK(system(cmd) == 0, "argmax failed");
    snprintf(out, sizeof out, "%s/best.txt", dir);
    md = slurp(out);
    CHECK(md && !strcmp(md, "0.3\n"), "argmax printed '%s'", md ? md : "");
    free(md);
}


/* The findings under a table: the best merge and its share of the gap,
 * MaTS against every other merge (twice the larger seed std), the merges
 * that predict one class on more than one task, the individual models'
 * least margin over the majority class, the multitask row. */
static void test_findings(void) {
    int32_t mixed[4] = {0, 1, 1, 0}, single[4] = {0, 0, 1, 1};
    static const struct {
        const char *name;
        double a, b;
        int one;
    } M[] = {{"fi1", 0.8, 0.7, 0}, {"fi2", 0.6, 0.6, 0}, {"fm1", 0.7, 0.6, 0}, {"fm2", 0.6, 0.6, 0},
             {"ft1", 0.5, 0.5, 1}, {"ft2", 0.55, 0.55, 0}, {"fa1", 0.6, 0.6, 0}, {"fa2", 0.6, 0.6, 0},
             {"fmt", 0.6, 0.55, 0}};
    for (size_t i = 0; i < sizeof M / sizeof M[0]; i++) {
        char f[64];
        snprintf(f, sizeof f, "%s.msgpack", M[i].name);
        write_metrics(f, M[i].a, M[i].b, M[i].one ? single : mixed, 4);
    }
    int32_t la[5] = {0, 0, 0, 1, 2}, lb[4] = {1, 1, 0, 0};
    write_tokens("fa.msgpack", "alpha", la, 5);
    write_tokens("fb.msgpack", "beta", lb, 4);
    char *md = report_of("findings", "full\tmajority\t-\ttest\t-\t@/fa.msgpack,@/fb.msgpack\n"
                                     "full\tindividual\t1\ttest\t-\t@/fi1.msgpack\n"
                                     "full\tindividual\t2\ttest\t-\t@/fi2.msgpack\n"
                                     "full\tmultitask\t1\ttest\t-\t@/fmt.msgpack\n"
                                     "full\tmats\t1\ttest\t1\t@/fm1.msgpack\n"
                                     "full\tmats\t2\ttest\t1\t@/fm2.msgpack\n"
                                     "full\tties\t1\ttest\t1\t@/ft1.msgpack\n"
                                     "full\tties\t2\ttest\t1\t@/ft2.msgpack\n"
                                     "full\taverage\t1\ttest\t-\t@/fa1.msgpack\n"
                                     "full\taverage\t2\ttest\t-\t@/fa2.msgpack\n",
                         "--no-plots");
    CHECK(md != NULL, "no output");
    if (!md) return;
    /* majority 55; individual (75, 60) 67.5; mats (65, 60) 62.5 ± 3.5: 60% of 12.5 */
    CHECK(strstr(md, "### Findings (full)") != NULL, "no findings:\n%s", md);
    CHECK(strstr(md, "- Best merge: **mats**, 62.5 ± 3.5: 60% of the gap from the majority class (55.0) to the "
                     "individual models (67.5).") != NULL, "best merge:\n%s", md);
    /* ties 52.5 ± 3.5: 10 points > 7.1; average 60.0 ± 0.0: 2.5 points < 7.1 */
    CHECK(strstr(md, "- MaTS beats every other merge by more than twice the seed std: **no**. MaTS 62.5 ± 3.5; the "
                     "closest, average, 60.0 ± 0.0: MaTS ahead by 2.5 points, twice the larger std is 7.1.") != NULL,
          "mats line:\n%s", md);
    CHECK(strstr(md, "- Merges that predict one class on more than one task (worst seed): ties (2).") != NULL,
          "single class:\n%s", md);
    /* alpha 70 - 60, beta 65 - 50 */
    CHECK(strstr(md, "- Individual models over the majority class: at least 10.0 points on every task (the least: "
                     "alpha).") != NULL, "margin:\n%s", md);
    CHECK(strstr(md, "- Multitask: 57.5 ± 0.0, 10.0 points below the individual models.") != NULL, "multitask:\n%s",
          md);
    free(md);
    /* without the average row MaTS clears every other merge */
    md = report_of("findings2", "full\tmats\t1\ttest\t1\t@/fm1.msgpack\nfull\tmats\t2\ttest\t1\t@/fm2.msgpack\n"
                                "full\tties\t1\ttest\t1\t@/ft1.msgpack\nfull\tties\t2\ttest\t1\t@/ft2.msgpack\n",
                   "--no-plots");
    CHECK(md && strstr(md, "than twice the seed std: **yes**. MaTS 62.5 ± 3.5; the closest, ties, 52.5 ± 3.5: MaTS "
                           "ahead by 10.0 points, twice the larger std is 7.1."),
          "mats yes:\n%s", md ? md : "");
    free(md);
}

/* The per-task bars: the reference rows, then the five merges with the
 * best average, best first (seven merges here) */
static void test_task_plot_rows(void) {
    int32_t mixed[4] = {0, 1, 1, 0};
    char man[2048] = "# group row seed split lambda path\n"
                     "ia3\tindividual\t1\ttest\t-\t@/p_i.msgpack\n";
    write_metrics("p_i.msgpack", 0.9, 0.9, mixed, 4);
    const double acc[7] = {0.30, 0.70, 0.50, 0.20, 0.60, 0.40, 0.65};
    for (int k = 0; k < 7; k++) {
        char f[64], line[128];
        snprintf(f, sizeof f, "p_m%d.msgpack", k);
        write_metrics(f, acc[k], acc[k], mixed, 4);
        snprintf(line, sizeof line, "ia3\tm%d\t1\ttest\t1\t@/%s\n", k, f);
        strcat(man, line);
    }
    char *md = report_of("plotrows", man, "");
    CHECK(md != NULL, "no output");
    free(md);
    char dat[500];
    snprintf(dat, sizeof dat, "%s/plotrows-tasks-ia3.dat", dir);
    char *d = slurp(dat);
    CHECK(d && !strncmp(d, "task individual m1 m6 m4 m2 m5\n", 31), "task plot rows: %.60s", d ? d : "(no file)");
    free(d);
}

static void test_bad_manifest(void) {
    char man[400], cmd[1200];
    snprintf(man, sizeof man, "%s/bad.tsv", dir);
    FILE *f = fopen(man, "w");
    fprintf(f, "ia3\tties\t1\ttest\n");
    fclose(f);
    snprintf(cmd, sizeof cmd, "build/bin/report --manifest %s -o %s/x.md 2>%s/err.txt", man, dir, dir);
    CHECK(system(cmd) != 0, "bad manifest accepted");
    char ep[400];
    snprintf(ep, sizeof ep, "%s/err.txt", dir);
    char *e = slurp(ep);
    const char *nl = e ? strchr(e, '\n') : NULL;
    CHECK(e && strstr(e, "bad.tsv:1") && nl && !nl[1], "want one line naming bad.tsv:1: %s", e ? e : "");
    free(e);
}

int main(void) {
    t_tmpdir(dir, sizeof dir, "mats-test-report");
    RUN(test_table);
    RUN(test_per_task_lines_combine);
    RUN(test_findings);
    RUN(test_task_plot_rows);
    RUN(test_bad_manifest);
    return t_done_rm(dir);
}
