/* report - tables and plots from metrics artifacts.
 *
 *   report --manifest FILE -o OUT.md [--title TEXT] [--no-plots]
 *
 * The manifest (written by the workflow, recipes/report.mk) is a text file of
 * tab-separated lines; '#' starts a comment:
 *
 *   GROUP  ROW  SEED  SPLIT  LAMBDA  PATH[,PATH...]
 *
 *   GROUP   a table section, e.g. "ia3" or "full"
 *   ROW     "majority", "individual", "multitask" or a merge method name
 *   SEED    the fine-tuning seed (rows are averaged over seeds: mean ± std)
 *   SPLIT   "test" rows fill the table; "validation" rows with a LAMBDA are
 *           the points of the validation-accuracy-against-lambda plot
 *   LAMBDA  the merge lambda, or "-"
 *   PATH    a `metrics` artifact; for ROW "majority", the test `tokens`
 *           artifacts of the tasks (the majority class's share of each);
 *           or, in a resolved manifest, "=" and what report reads from them:
 *           =single=N;key=K[+K...];TASK=ACC;TASK=ACC... (N: tasks predicted
 *           as one class, -1 unknown; K: the artifacts' keys, for the record;
 *           ACC: the accuracy, to the last bit)
 *
 *   report --manifest FILE --resolve OUT.tsv
 *
 * writes the manifest resolved: each line with its artifacts' numbers in
 * place of their paths, so that it reports the same without them (the parts
 * of a report made on machines that do not share a cache, joined by the
 * workflow's `make report-join`).
 *
 *   report --argmax LAMBDA=METRICS [LAMBDA=METRICS...]
 *
 * prints the LAMBDA whose metrics artifact has the highest meta.average (the
 * first one on ties): the lambda chosen on validation.
 *
 * Writes OUT.md (one Markdown table per group, like the paper's) and, unless
 * --no-plots, gnuplot scripts, data and PNGs beside it: OUT-lambda-GROUP.png
 * (validation average against lambda, one line per method) and
 * OUT-tasks-GROUP.png (test accuracy per task for the rows of the table).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "art.h"
#include "common.h"
#include "opts.h"

#define MAXT 64
#define PLOT_BEST 5 /* merges in the per-task bars */

typedef struct {
    char group[32], row[64], split[16];
    char seed[16];
    double lambda;      /* NAN when "-" */
    double acc[MAXT];   /* NAN where the task is absent */
    double avg;
    int single;         /* tasks predicted as a single class (-1 unknown) */
    char src[1024];     /* the keys of the artifacts read, '+'-joined (--resolve) */
} result;

static char tasks[MAXT][64];
static int ntasks;

static int task_index(const char *t) {
    for (int i = 0; i < ntasks; i++)
        if (!strcmp(tasks[i], t)) return i;
    if (ntasks == MAXT) die("more than %d tasks", MAXT);
    if (strlen(t) >= sizeof tasks[0])
        die("task name '%s' is longer than %zu characters: give it a shorter name", t, sizeof tasks[0] - 1);
    snprintf(tasks[ntasks], sizeof tasks[0], "%s", t);
    return ntasks++;
}

/* Count tasks whose predictions are all one value, using the optional
 * meta.n_examples map (task -> count, in --data order) that eval writes. */
static int single_class_tasks(const art_file *a) {
    const mc_val *ex = val_get(a->meta, "n_examples");
    const art_tensor *p = art_find(a, "prediction");
    if (!ex || ex->type != VAL_MAP || !p || p->dtype != ART_I32) return -1;
    int32_t *pred = mallocCheck(p->nbytes + 4);
    art_tensor_copy(p, pred);
    int64_t off = 0;
    int single = 0;
    for (size_t i = 0; i < ex->v.c.n; i++) {
        int64_t n = ex->v.c.items[i]->type == VAL_INT ? ex->v.c.items[i]->v.i : 0;
        if (n <= 0 || n > p->numel - off) { free(pred); return -1; }
        int same = 1;
        for (int64_t j = off + 1; j < off + n; j++) same &= pred[j] == pred[off];
        single += same && n > 1;
        off += n;
    }
    free(pred);
    return single;
}

static void add_src(result *r, const art_file *a) {
    size_t n = strlen(r->src);
    snprintf(r->src + n, sizeof r->src - n, "%s%s", n ? "+" : "", a->key[0] ? a->key : "-");
}

static void load_metrics(result *r, const char *path) {
    art_file *a = art_open(path, "metrics");
    if (!a) die("%s", mc_error());
    add_src(r, a);
    const mc_val *acc = val_get(a->meta, "accuracy");
    if (!acc || acc->type != VAL_MAP || acc->v.c.n == 0)
        die("%s: metrics artifact has no meta.accuracy map", path);
    for (size_t i = 0; i < acc->v.c.n; i++) {
        const mc_val *v = acc->v.c.items[i];
        double x = v->type == VAL_FLOAT ? v->v.f : v->type == VAL_INT ? (double)v->v.i : NAN;
        if (!(x >= 0 && x <= 1)) die("%s: accuracy of task '%s' is not in [0, 1]", path, acc->v.c.keys[i]);
        r->acc[task_index(acc->v.c.keys[i])] = x;
    }
    r->single = single_class_tasks(a);
    art_close(a);
}

/* Majority-class accuracy of each test tokens artifact. */
static void load_majority(result *r, char *paths) {
    for (char *p = strtok(paths, ","); p; p = strtok(NULL, ",")) {
        art_file *a = art_open(p, "tokens");
        if (!a) die("%s", mc_error());
        add_src(r, a);
        const art_tensor *lab = art_find(a, "label");
        const art_tensor *off = art_find(a, "example_choices");
        const char *task = val_get_str(a->meta, "task", NULL);
        if (!lab || lab->dtype != ART_I32 || !task || !off)
            die("%s: a tokens artifact needs 'label', 'example_choices' and meta.task", p);
        int32_t *l = mallocCheck(lab->nbytes + 4);
        art_tensor_copy(lab, l);
        int64_t cnt[256] = {0}, best = 0;
        for (int64_t i = 0; i < lab->numel; i++)
            if (l[i] >= 0 && l[i] < 256 && ++cnt[l[i]] > best) best = cnt[l[i]];
        if (lab->numel == 0) die("%s: no examples", p);
        r->acc[task_index(task)] = (double)best / lab->numel;
        free(l);
        art_close(a);
    }
    r->single = -1;
}

/* A resolved line's numbers (after its '='): single=N;key=K;TASK=ACC;... */
static void load_resolved(result *r, char *spec, const char *manifest, int lineno) {
    int have_single = 0;
    for (char *item = strtok(spec, ";"); item; item = strtok(NULL, ";")) {
        char *eq = strchr(item, '=');
        if (!eq || eq == item) die("%s:%d: resolved entry '%s' is not NAME=VALUE", manifest, lineno, item);
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(item, "key")) {
            snprintf(r->src, sizeof r->src, "%s", v);
        } else if (!strcmp(item, "single")) {
            char *end;
            long n = strtol(v, &end, 10);
            if (*end || end == v || n < -1 || n > MAXT) die("%s:%d: single=%s is not a task count", manifest, lineno, v);
            r->single = (int)n, have_single = 1;
        } else {
            double x;
            if (opts_parse_float(v, 0, 0, 0, &x) < 0 || !(x >= 0 && x <= 1))
                die("%s:%d: accuracy '%s' of task '%s' is not in [0, 1]", manifest, lineno, v, item);
            int t = task_index(item);
            if (!isnan(r->acc[t])) die("%s:%d: task '%s' given twice", manifest, lineno, item);
            r->acc[t] = x;
        }
    }
    if (!have_single) die("%s:%d: a resolved line needs single=N", manifest, lineno);
}

/* The manifest's lines with their numbers (report --resolve). */
static void write_resolved(const char *out, const result *rs, int nr) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) die("%s: cannot write", tmp);
    fprintf(f, "# resolved by report --resolve: GROUP ROW SEED SPLIT LAMBDA =single=N;key=K;TASK=ACC...\n");
    for (int i = 0; i < nr; i++) {
        const result *r = &rs[i];
        fprintf(f, "%s\t%s\t%s\t%s\t", r->group, r->row, r->seed, r->split);
        if (isnan(r->lambda)) fprintf(f, "-");
        else fprintf(f, "%.17g", r->lambda);
        fprintf(f, "\t=single=%d;key=%s", r->single, r->src[0] ? r->src : "-");
        for (int t = 0; t < ntasks; t++) {
            if (isnan(r->acc[t])) continue;
            if (strpbrk(tasks[t], "=;\t "))
                die("task name '%s' holds one of '=', ';', a tab or a space: a resolved manifest cannot carry it", tasks[t]);
            fprintf(f, ";%s=%.17g", tasks[t], r->acc[t]);
        }
        fprintf(f, "\n");
    }
    if (fclose(f) != 0 || rename(tmp, out) != 0) {
        unlink(tmp);
        die("%s: write failed", out);
    }
    fprintf(stderr, "report: resolved %d lines into %s\n", nr, out);
}

static double row_avg(const result *r) {
    double s = 0;
    int n = 0;
    for (int t = 0; t < ntasks; t++)
        if (!isnan(r->acc[t])) { s += r->acc[t]; n++; }
    return n ? s / n : NAN;
}

typedef struct { double mean, sd; int n; } stat;

static stat summarize(const double *x, int n) {
    stat s = {0, 0, 0};
    for (int i = 0; i < n; i++) if (!isnan(x[i])) { s.mean += x[i]; s.n++; }
    if (!s.n) { s.mean = NAN; return s; }
    s.mean /= s.n;
    for (int i = 0; i < n; i++) if (!isnan(x[i])) s.sd += (x[i] - s.mean) * (x[i] - s.mean);
    s.sd = s.n > 1 ? sqrt(s.sd / (s.n - 1)) : 0;
    return s;
}

static void cell(FILE *f, stat s, int bold) {
    const char *b = bold ? "**" : "";
    if (isnan(s.mean)) fprintf(f, " – |");
    else if (s.n > 1) fprintf(f, " %s%.1f ± %.1f%s |", b, 100 * s.mean, 100 * s.sd, b);
    else fprintf(f, " %s%.1f%s |", b, 100 * s.mean, b);
}

/* The test rows of `row` in `group`: task t's accuracy (t = ntasks: the
 * average) over seeds, and the most single-class tasks of a seed (-1:
 * unknown). */
static stat row_stat(const result *rs, int nr, const char *group, const char *row, int t, int *worst) {
    double xs[256];
    int n = 0;
    if (worst) *worst = -1;
    for (int j = 0; j < nr && n < 256; j++)
        if (!strcmp(rs[j].group, group) && !strcmp(rs[j].row, row) && !strcmp(rs[j].split, "test")) {
            xs[n++] = t < ntasks ? rs[j].acc[t] : rs[j].avg;
            if (worst && rs[j].single > *worst) *worst = rs[j].single;
        }
    return summarize(xs, n);
}

static int is_merge_row(const char *row) {
    return strcmp(row, "majority") && strcmp(row, "individual") && strcmp(row, "multitask");
}

/* The findings under a group's table, in numbers: the best merge and its
 * share of the gap; whether MaTS beats every other merge by more than
 * twice the seed std (the larger of the two rows' stds); the merges that
 * predict one class on more than one task; the individual models' smallest
 * margin over the majority class; the multitask row against the
 * individual one. */
static void findings(FILE *md, const result *rs, int nr, const char *group, const char (*rows)[64], int nrow) {
    stat maj = row_stat(rs, nr, group, "majority", ntasks, NULL), ind = row_stat(rs, nr, group, "individual", ntasks, NULL);
    double gap = ind.mean - maj.mean;
    fprintf(md, "\n### Findings (%s)\n\n", group);
    int best = -1, mats = -1;
    stat bs = {NAN, NAN, 0}, ms = {NAN, NAN, 0};
    for (int k = 0; k < nrow; k++) {
        if (!is_merge_row(rows[k])) continue;
        stat st = row_stat(rs, nr, group, rows[k], ntasks, NULL);
        if (!isnan(st.mean) && (best < 0 || st.mean > bs.mean)) best = k, bs = st;
        if (!strcmp(rows[k], "mats")) mats = k, ms = st;
    }
    if (best >= 0) {
        fprintf(md, "- Best merge: **%s**, %.1f ± %.1f", rows[best], 100 * bs.mean, 100 * bs.sd);
        if (!isnan(gap) && gap != 0)
            fprintf(md, ": %.0f%% of the gap from the majority class (%.1f) to the individual models (%.1f)",
                    100 * (bs.mean - maj.mean) / gap, 100 * maj.mean, 100 * ind.mean);
        fprintf(md, ".\n");
    }
    if (mats >= 0 && !isnan(ms.mean)) {
        int beats = 1, close = -1;
        double margin = INFINITY, need = 0;
        for (int k = 0; k < nrow; k++) {
            if (!is_merge_row(rows[k]) || k == mats) continue;
            stat st = row_stat(rs, nr, group, rows[k], ntasks, NULL);
            if (isnan(st.mean)) continue;
            double d = ms.mean - st.mean, two = 2 * (st.sd > ms.sd ? st.sd : ms.sd);
            if (d - two < margin) margin = d - two, close = k, need = two;
            if (!(d > two)) beats = 0;
        }
        if (close >= 0) {
            stat cs = row_stat(rs, nr, group, rows[close], ntasks, NULL);
            fprintf(md, "- MaTS beats every other merge by more than twice the seed std: **%s**. MaTS %.1f ± %.1f; "
                        "the closest, %s, %.1f ± %.1f: MaTS %s by %.1f points, twice the larger std is %.1f.\n",
                    beats ? "yes" : "no", 100 * ms.mean, 100 * ms.sd, rows[close], 100 * cs.mean, 100 * cs.sd,
                    ms.mean >= cs.mean ? "ahead" : "behind", 100 * fabs(ms.mean - cs.mean), 100 * need);
        }
    }
    char one[2048] = "";
    int n_one = 0;
    for (int k = 0; k < nrow; k++) {
        int worst;
        if (!is_merge_row(rows[k])) continue;
        row_stat(rs, nr, group, rows[k], ntasks, &worst);
        if (worst > 1) {
            size_t l = strlen(one);
            snprintf(one + l, sizeof one - l, "%s%.63s (%d)", n_one ? ", " : "", rows[k], worst);
            n_one++;
        }
    }
    fprintf(md, "- Merges that predict one class on more than one task (worst seed): %s.\n", n_one ? one : "none");
    double low = INFINITY;
    int lt = -1;
    for (int t = 0; t < ntasks; t++) {
        stat a = row_stat(rs, nr, group, "individual", t, NULL), b = row_stat(rs, nr, group, "majority", t, NULL);
        if (!isnan(a.mean) && !isnan(b.mean) && a.mean - b.mean < low) low = a.mean - b.mean, lt = t;
    }
    if (lt >= 0)
        fprintf(md, "- Individual models over the majority class: at least %.1f points on every task (the least: %s).\n",
                100 * low, tasks[lt]);
    stat mt = row_stat(rs, nr, group, "multitask", ntasks, NULL);
    if (!isnan(mt.mean) && !isnan(ind.mean))
        fprintf(md, "- Multitask: %.1f ± %.1f, %.1f points %s the individual models.\n", 100 * mt.mean, 100 * mt.sd,
                100 * fabs(ind.mean - mt.mean), mt.mean <= ind.mean ? "below" : "above");
}

/* Copy manifest field `f` into dst (cap bytes), refusing what does not fit. */
static void field(char *dst, size_t cap, const char *f, const char *what, const char *manifest, int lineno) {
    if (strlen(f) >= cap)
        die("%s:%d: %s '%s' is longer than %zu characters: give a shorter one", manifest, lineno, what, f, cap - 1);
    memcpy(dst, f, strlen(f) + 1);
}

/* report --argmax: the LAMBDA of the metrics with the best meta.average */
static int argmax(const opt_list *pairs) {
    double best = -1;
    const char *arg = NULL;
    for (int i = 0; i < pairs->n; i++) {
        char *eq = strchr(pairs->v[i], '=');
        if (!eq) die("--argmax: '%s' is not LAMBDA=METRICS", pairs->v[i]);
        *eq = 0;
        double lambda;
        if (opts_parse_float(pairs->v[i], 0, 0, 0, &lambda) < 0) die("--argmax: LAMBDA %s", mc_error());
        *eq = '=';
    }
    for (int i = 0; i < pairs->n; i++) {
        const char *path = strchr(pairs->v[i], '=') + 1;
        art_file *a = art_open(path, "metrics");
        if (!a) die("%s", mc_error());
        const mc_val *v = val_get(a->meta, "average");
        if (!v || (v->type != VAL_FLOAT && v->type != VAL_INT)) die("%s: no meta.average", path);
        double x = val_get_float(a->meta, "average", 0);
        if (x > best) { best = x; arg = pairs->v[i]; }
        art_close(a);
    }
    printf("%.*s\n", (int)(strchr(arg, '=') - arg), arg);
    return 0;
}

/* OUT (NAME.md) as NAME-WHAT-GROUP.EXT into path, opened for writing (dies
 * if it cannot be); png (when not NULL) gets NAME-WHAT-GROUP.png. */
static FILE *plot_open(char *path, size_t cap, char *png, size_t png_cap, const char *out, const char *what,
                       const char *group, const char *ext) {
    int stem = (int)(strlen(out) - 3);
    snprintf(path, cap, "%.*s-%s-%s.%s", stem, out, what, group, ext);
    if (png) snprintf(png, png_cap, "%.*s-%s-%s.png", stem, out, what, group);
    FILE *f = fopen(path, "w");
    if (!f) die("%s: cannot write", path);
    return f;
}

/* gnuplot on the script gp, then the image png in md as "![ALT, GROUP](png)" */
static void plot_run(FILE *md, const char *gp, const char *alt, const char *group, const char *png) {
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "gnuplot '%s'", gp);
    if (system(cmd) != 0) die("gnuplot failed on %s (is gnuplot installed? scripts/install-deps.sh)", gp);
    fprintf(md, "\n![%s, %s](%s)\n", alt, group, strrchr(png, '/') ? strrchr(png, '/') + 1 : png);
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    const char *manifest = NULL, *out = NULL, *title, *resolve = NULL;
    int no_plots = 0, argmax_mode = 0;
    opt_list pairs = {0};
    opt_spec rows[] = {
        {.name = "--manifest", .kind = OPT_STR, .dst = &manifest, .arg = "FILE", .flags = OPT_INPUT,
         .help = "lines of GROUP ROW SEED SPLIT LAMBDA PATH[,PATH...], tab-separated"},
        {.name = "-o", .kind = OPT_STR, .dst = &out, .arg = "OUT.md", .flags = OPT_OUTPUT,
         .help = "the Markdown tables (plots beside it)"},
        {.name = "--title", .kind = OPT_STR, .dst = &title, .arg = "T", .def = "Results", .help = "the page's title"},
        {.name = "--no-plots", .kind = OPT_FLAG, .dst = &no_plots, .help = "write the tables only"},
        {.name = "--resolve", .kind = OPT_STR, .dst = &resolve, .arg = "OUT.tsv", .flags = OPT_OUTPUT,
         .help = "instead of -o: the manifest with each line's numbers in place of its paths"},
        {.name = "--argmax", .kind = OPT_FLAG, .dst = &argmax_mode,
         .help = "print the LAMBDA whose metrics have the best meta.average (the first on ties)"},
        {.name = "LAMBDA=METRICS", .kind = OPT_LIST, .dst = &pairs, .help = "--argmax: a lambda and its metrics artifact"},
        {0}};
    const opt_prog prog = {.name = "report", .opts = rows,
                           .usage = "report --manifest FILE -o OUT.md [--title T] [--no-plots]\n"
                                    "       report --manifest FILE --resolve OUT.tsv\n"
                                    "       report --argmax LAMBDA=METRICS..."};
    opts_parse(&prog, argc - 1, argv + 1);
    if (argmax_mode) {
        if (!pairs.n) die("--argmax needs LAMBDA=METRICS arguments (see report --help)");
        if (manifest || out || resolve) die("--argmax only prints: drop --manifest, -o and --resolve");
        return argmax(&pairs);
    }
    if (pairs.n) die("unexpected argument '%s' (LAMBDA=METRICS pairs go with --argmax)", pairs.v[0]);
    if (out && resolve) die("give -o OUT.md or --resolve OUT.tsv, not both");
    if (!manifest || !(out || resolve)) die("give --manifest FILE and -o OUT.md or --resolve OUT.tsv (see report --help)");
    if (!out) out = resolve;
    int plots = !no_plots;
    double t0 = mc_now();
    FILE *mf = fopen(manifest, "r");
    if (!mf) die("%s: cannot open the manifest", manifest);
    result *rs = NULL;
    char **rpaths = NULL;
    int *rlines = NULL; /* each result's manifest line */
    int nr = 0, cap = 0, lineno = 0;
    char line[16384];
    while (fgets(line, sizeof line, mf)) {
        lineno++;
        char *h = strchr(line, '#');
        if (h) *h = 0;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[strspn(line, " \t")]) continue;
        char *f[6];
        int nf = 0;
        for (char *s = strtok(line, "\t"); s && nf < 6; s = strtok(NULL, "\t")) {
            while (*s == ' ') s++;
            char *e = s + strlen(s);
            while (e > s && e[-1] == ' ') *--e = 0;
            f[nf++] = s;
        }
        if (nf != 6) die("%s:%d: expected 6 tab-separated fields (group row seed split lambda path)", manifest, lineno);
        if (nr == cap) {
            cap = cap ? 2 * cap : 64;
            rs = reallocCheck(rs, cap * sizeof(result));
            rpaths = reallocCheck(rpaths, cap * sizeof(char *));
        }
        result *r = &rs[nr];
        rlines = reallocCheck(rlines, cap * sizeof(int));
        rlines[nr] = lineno;
        rpaths[nr++] = strdupCheck(f[5]);
        memset(r, 0, sizeof *r);
        for (int t = 0; t < MAXT; t++) r->acc[t] = NAN;
        field(r->group, sizeof r->group, f[0], "group name", manifest, lineno);
        field(r->row, sizeof r->row, f[1], "row name", manifest, lineno);
        field(r->seed, sizeof r->seed, f[2], "seed", manifest, lineno);
        field(r->split, sizeof r->split, f[3], "split", manifest, lineno);
        if (strcmp(r->split, "test") && strcmp(r->split, "validation"))
            die("%s:%d: split must be test or validation, not '%s'", manifest, lineno, r->split);
        r->lambda = NAN;
        if (strcmp(f[4], "-") && opts_parse_float(f[4], 0, 0, 0, &r->lambda) < 0)
            die("%s:%d: lambda %s (give a number, or - for none)", manifest, lineno, mc_error());
    }
    fclose(mf);
    if (nr == 0) die("%s: no results listed", manifest);
    /* the output may not be the manifest nor anything it lists */
    opt_input *in = mallocCheck(sizeof(opt_input) * (size_t)(nr + 1));
    int nin = 0;
    in[nin++] = (opt_input){"--manifest", manifest, 0};
    for (int i = 0; i < nr; i++) {
        if (rpaths[i][0] == '=') continue; /* resolved: no file */
        char *first = strdupCheck(rpaths[i]);
        for (char *p = strtok(first, ","); p; p = strtok(NULL, ",")) {
            in = reallocCheck(in, sizeof(opt_input) * (size_t)(nin + 1));
            in[nin++] = (opt_input){"listed in --manifest", strdupCheck(p), 0};
        }
        free(first);
    }
    if (opts_check_output(resolve ? "--resolve" : "-o", out, 0, in, nin) < 0) die("%s", mc_error());
    for (int i = 1; i < nin; i++) free((char *)in[i].path);
    free(in);
    for (int i = 0; i < nr; i++) {
        if (rpaths[i][0] == '=') load_resolved(&rs[i], rpaths[i] + 1, manifest, rlines[i]);
        else if (!strcmp(rs[i].row, "majority")) load_majority(&rs[i], rpaths[i]);
        else load_metrics(&rs[i], rpaths[i]);
        free(rpaths[i]);
    }
    free(rpaths), free(rlines);
    if (resolve) {
        write_resolved(resolve, rs, nr);
        free(rs);
        return 0;
    }
    /* Lines of the same group, row, seed, split and lambda are one result:
     * e.g. the individual models, one metrics file per task. */
    int nm = 0;
    for (int i = 0; i < nr; i++) {
        int j = 0;
        while (j < nm && !(!strcmp(rs[j].group, rs[i].group) && !strcmp(rs[j].row, rs[i].row) &&
                           !strcmp(rs[j].seed, rs[i].seed) && !strcmp(rs[j].split, rs[i].split) &&
                           ((isnan(rs[j].lambda) && isnan(rs[i].lambda)) || rs[j].lambda == rs[i].lambda)))
            j++;
        if (j == nm) { if (j != i) rs[j] = rs[i]; nm++; continue; }
        for (int t = 0; t < MAXT; t++)
            if (!isnan(rs[i].acc[t])) {
                if (!isnan(rs[j].acc[t])) die("%s: task '%s' listed twice for %s %s seed %s %s", manifest, tasks[t], rs[i].group, rs[i].row, rs[i].seed, rs[i].split);
                rs[j].acc[t] = rs[i].acc[t];
            }
        if (rs[i].single >= 0) rs[j].single = (rs[j].single < 0 ? 0 : rs[j].single) + rs[i].single;
    }
    nr = nm;
    for (int i = 0; i < nr; i++) rs[i].avg = row_avg(&rs[i]);

    FILE *md = fopen(out, "w");
    if (!md) die("%s: cannot write", out);
    fprintf(md, "# %s\n\nTest accuracy (%%), mean ± std over fine-tuning seeds. Of gap: how much of the "
                "way from the majority row's average to the individual row's a row goes, (average - majority) "
                "/ (individual - majority), from the mean averages. λ: the merge λ chosen on validation (mean "
                "over seeds). 1-class: tasks on which a model predicted a single class (worst seed).\n",
            title);
    /* groups and rows in order of first appearance */
    char groups[16][32];
    int ng = 0;
    for (int i = 0; i < nr; i++) {
        int k = 0;
        while (k < ng && strcmp(groups[k], rs[i].group)) k++;
        if (k == ng && ng == 16) die("%s: more than 16 groups", manifest);
        if (k == ng) snprintf(groups[ng++], 32, "%s", rs[i].group);
    }
    for (int g = 0; g < ng; g++) {
        fprintf(md, "\n## %s\n\n| method |", groups[g]);
        for (int t = 0; t < ntasks; t++) fprintf(md, " %s |", tasks[t]);
        fprintf(md, " **average** | of gap | λ | 1-class |\n|---|");
        for (int t = 0; t <= ntasks + 3; t++) fprintf(md, "---|");
        fprintf(md, "\n");
        /* the mean test averages of the majority and individual rows */
        double ends[2];
        for (int e = 0; e < 2; e++) ends[e] = row_stat(rs, nr, groups[g], e ? "individual" : "majority", ntasks, NULL).mean;
        char done[128][64];
        int nd = 0;
        for (int i = 0; i < nr; i++) {
            result *r = &rs[i];
            if (strcmp(r->group, groups[g]) || strcmp(r->split, "test")) continue;
            int seen = 0;
            for (int d = 0; d < nd; d++) seen |= !strcmp(done[d], r->row);
            if (seen || nd == 128) continue;
            snprintf(done[nd++], 64, "%s", r->row);
            int worst = -1;
            stat avg_st = {NAN, NAN, 0};
            fprintf(md, "| %s |", r->row);
            for (int t = 0; t <= ntasks; t++) {
                stat st = row_stat(rs, nr, groups[g], r->row, t, t == ntasks ? &worst : NULL);
                cell(md, st, t == ntasks);
                if (t == ntasks) avg_st = st;
            }
            double lam[256];
            int n = 0;
            for (int j = 0; j < nr && n < 256; j++)
                if (!strcmp(rs[j].group, groups[g]) && !strcmp(rs[j].row, r->row) && !strcmp(rs[j].split, "test"))
                    lam[n++] = rs[j].lambda;
            int is_end = !strcmp(r->row, "majority") || !strcmp(r->row, "individual");
            if (is_end || isnan(ends[0]) || isnan(ends[1]) || !(ends[1] != ends[0]) || isnan(avg_st.mean))
                fprintf(md, " – |");
            else
                fprintf(md, " %.0f%% |", 100 * (avg_st.mean - ends[0]) / (ends[1] - ends[0]));
            stat ls = summarize(lam, n);
            if (isnan(ls.mean)) fprintf(md, " – |");
            else fprintf(md, " %.2g |", ls.mean);
            if (worst < 0) fprintf(md, " – |\n");
            else fprintf(md, " %d |\n", worst);
        }
        findings(md, rs, nr, groups[g], (const char(*)[64])done, nd);
    }

    if (plots) {
        for (int g = 0; g < ng; g++) {
            /* lambda curves: method -> lambda -> mean validation average */
            char dat[1024], gp[1024], png[1024];
            FILE *d = plot_open(dat, sizeof dat, png, sizeof png, out, "lambda", groups[g], "dat");
            char methods[64][64];
            int nm = 0;
            for (int i = 0; i < nr; i++) {
                result *r = &rs[i];
                if (strcmp(r->group, groups[g]) || strcmp(r->split, "validation") || isnan(r->lambda)) continue;
                int k = 0;
                while (k < nm && strcmp(methods[k], r->row)) k++;
                if (k < nm || nm == 64) continue;
                snprintf(methods[nm++], 64, "%s", r->row);
                fprintf(d, "# %s\n", r->row);
                double lams[64];
                int nl = 0;
                for (int j = 0; j < nr; j++)
                    if (!strcmp(rs[j].group, groups[g]) && !strcmp(rs[j].row, r->row) &&
                        !strcmp(rs[j].split, "validation") && !isnan(rs[j].lambda)) {
                        int s = 0;
                        while (s < nl && lams[s] != rs[j].lambda) s++;
                        if (s == nl && nl < 64) lams[nl++] = rs[j].lambda;
                    }
                for (int a = 1; a < nl; a++)
                    for (int b = a; b > 0 && lams[b - 1] > lams[b]; b--) { double t = lams[b]; lams[b] = lams[b - 1]; lams[b - 1] = t; }
                for (int s = 0; s < nl; s++) {
                    double xs[256];
                    int n = 0;
                    for (int j = 0; j < nr && n < 256; j++)
                        if (!strcmp(rs[j].group, groups[g]) && !strcmp(rs[j].row, r->row) &&
                            !strcmp(rs[j].split, "validation") && rs[j].lambda == lams[s]) xs[n++] = rs[j].avg;
                    stat st = summarize(xs, n);
                    fprintf(d, "%g %g %g\n", lams[s], 100 * st.mean, 100 * st.sd);
                }
                fprintf(d, "\n\n");
            }
            fclose(d);
            if (nm) {
                FILE *s = plot_open(gp, sizeof gp, NULL, 0, out, "lambda", groups[g], "gp");
                fprintf(s, "set terminal pngcairo size 900,560 noenhanced\nset output '%s'\nset title 'Validation accuracy against lambda (%s)'\n"
                           "set xlabel 'lambda'\nset ylabel 'average validation accuracy (%%)'\nset key outside right\nset grid\nplot ",
                        png, groups[g]);
                for (int m = 0; m < nm; m++)
                    fprintf(s, "%s'%s' index %d using 1:2 with linespoints title '%s'", m ? ", " : "", dat, m, methods[m]);
                fprintf(s, "\n");
                fclose(s);
                plot_run(md, gp, "validation accuracy against lambda", groups[g], png);
            }
            /* per-task bars (means over seeds) of the reference rows and the
             * PLOT_BEST merges with the best average: twenty bars a task
             * could not be told apart */
            d = plot_open(dat, sizeof dat, png, sizeof png, out, "tasks", groups[g], "dat");
            char rows[64][64];
            double avg[64];
            int nrow = 0;
            for (int i = 0; i < nr; i++) {
                if (strcmp(rs[i].group, groups[g]) || strcmp(rs[i].split, "test")) continue;
                int k = 0;
                while (k < nrow && strcmp(rows[k], rs[i].row)) k++;
                if (k == nrow && nrow < 64) {
                    snprintf(rows[nrow], 64, "%s", rs[i].row);
                    avg[nrow++] = row_stat(rs, nr, groups[g], rs[i].row, ntasks, NULL).mean;
                }
            }
            { /* the reference rows in table order, then the best merges */
                char sel[64][64];
                int ns = 0;
                for (int k = 0; k < nrow; k++)
                    if (!is_merge_row(rows[k])) memcpy(sel[ns++], rows[k], 64);
                for (int b = 0; b < PLOT_BEST; b++) {
                    int best = -1;
                    for (int k = 0; k < nrow; k++)
                        if (rows[k][0] && is_merge_row(rows[k]) && !isnan(avg[k]) && (best < 0 || avg[k] > avg[best]))
                            best = k;
                    if (best < 0) break;
                    memcpy(sel[ns++], rows[best], 64);
                    rows[best][0] = 0; /* taken */
                }
                memcpy(rows, sel, sizeof sel[0] * ns);
                nrow = ns;
            }
            fprintf(d, "task");
            for (int k = 0; k < nrow; k++) fprintf(d, " %s", rows[k]);
            fprintf(d, "\n");
            for (int t = 0; t < ntasks; t++) {
                fprintf(d, "%s", tasks[t]);
                for (int k = 0; k < nrow; k++) {
                    double xs[256];
                    int n = 0;
                    for (int j = 0; j < nr && n < 256; j++)
                        if (!strcmp(rs[j].group, groups[g]) && !strcmp(rs[j].row, rows[k]) && !strcmp(rs[j].split, "test"))
                            xs[n++] = rs[j].acc[t];
                    stat st = summarize(xs, n);
                    fprintf(d, " %g", isnan(st.mean) ? 0 : 100 * st.mean);
                }
                fprintf(d, "\n");
            }
            fclose(d);
            if (nrow) {
                FILE *s = plot_open(gp, sizeof gp, NULL, 0, out, "tasks", groups[g], "gp");
                fprintf(s, "set terminal pngcairo size 1100,560 noenhanced\nset output '%s'\nset title 'Test accuracy per task (%s): the reference rows and the best merges'\n"
                           "set style data histograms\nset style histogram clustered gap 1\nset style fill solid 0.8 border -1\n"
                           "set ylabel 'test accuracy (%%)'\nset yrange [0:100]\nset key outside right\nset grid ytics\nset xtics rotate by -30\n"
                           "plot for [i=2:%d] '%s' using i:xtic(1) title columnheader(i)\n",
                        png, groups[g], nrow + 1, dat);
                fclose(s);
                plot_run(md, gp, "test accuracy per task", groups[g], png);
            }
        }
    }
    if (fclose(md) != 0) die("%s: write failed", out);
    fprintf(stderr, "report: wrote %s (%d results, %d tasks) in %.1fs\n", out, nr, ntasks, mc_now() - t0);
    return 0;
}
