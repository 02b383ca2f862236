/* recipe - mergekit-style YAML recipes over Hugging Face T5 checkpoints
 * (docs/recipes.md).
 *
 *   recipe RECIPE.yml -o DIR       merge as the recipe says, write DIR as
 *                                  transformers loads it: runs
 *                                  `make merge RECIPE=RECIPE.yml OUT=DIR` in
 *                                  this checkout (the tool's ../..)
 *   recipe RECIPE.yml --experiment EXP.conf [--out DIR]
 *                                  translate only: write the experiment the
 *                                  recipe means (exp.source = hf) and print
 *                                  what recipes/recipe.mk runs, as shell
 *                                  assignments (RECIPE_METHOD=..., ...)
 *   recipe --methods               the recipe's method names and the merge
 *                                  method each runs, one per line
 *
 * The schema is mergekit's (one document, a map):
 *
 *   merge_method: NAME        mergekit's linear task_arithmetic ties dare_ties
 *                             dare_linear breadcrumbs slerp model_stock, or
 *                             any of `merge --list-methods` (fisher, regmean,
 *                             mats, cg_*, ...)
 *   base_model: DIR           the checkpoint the models were fine-tuned from
 *                             (optional for linear: the first model)
 *   models:                   a list of
 *     - model: DIR            a checkpoint directory, or a PEFT IA3 adapter
 *       parameters:           (all models full fine-tunes or all adapters)
 *         weight: W           task_arithmetic, dare_linear, breadcrumbs scale
 *                             the task vectors by it; linear, ties, dare_ties
 *                             take the weighted mean; fisher weighs the Fishers
 *         density: D          ties: keep the top D of each task vector;
 *                             dare_*: keep D (drop 1 - D); breadcrumbs: keep D
 *         gamma: G            breadcrumbs: drop the top G
 *         data: FILE.jsonl    this model's task (our JSON Lines): the
 *                             statistics of fisher / regmean / mats, and the
 *                             evaluation every merge gets
 *         validation: FILE    test: FILE   other splits (default: data)
 *   parameters:               global: lambda, t (slerp), normalize (true),
 *                             int8_mask (no effect: a memory option of
 *                             mergekit's), rescale (true), weight, density,
 *                             gamma, data, and ours: iterations, cg_tol,
 *                             init, init_lambda, precondition, seed,
 *                             common_space_fraction, examples, max_input,
 *                             max_choice
 *   dtype: float32|bfloat16|float16     out_dtype: the same (wins)
 *
 * A models entry equal to base_model is skipped, as mergekit does, except
 * for linear and slerp (slerp goes from base_model, t = 0, to the other).
 * weight, density, gamma, lambda and t may also be a layer gradient (a list
 * of numbers) or a list of filter: / value: entries, as mergekit's; with
 * weights that differ they become merge.rules (add_rules). Anything else,
 * and a list where one number is read, is a one-line error naming the key
 * and its line. Relative paths are relative to RECIPE_CWD (default: the current
 * directory), the directory a user ran the merge from.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "common.h"
#include "config.h"
#include "merge_rules.h"

static const char *FILE_NAME; /* the recipe, for messages */

/* ------------------------------------------------------------ methods */

/* mergekit's names where ours differ or options follow from its
 * parameters; every other name must be one of merge --list-methods. */
enum {
    P_DENSITY_TOPK = 1,  /* density -> merge.topk_percent */
    P_DENSITY_DROP = 2,  /* density -> merge.drop_rate = 1 - density */
    P_BREADCRUMBS = 4,   /* density, gamma -> merge.breadcrumbs_top / _bottom */
    P_WEIGHT_SCALES = 8, /* the (equal) weight scales the task vectors: lambda *= weight; normalize false */
    P_KEEP_BASE = 16,    /* a models entry equal to base_model stays */
    P_NORMALIZED = 32,   /* mergekit normalizes the weights (normalize true): equal weights cancel */
};
static const struct {
    const char *name, *ours;
    int params;
} RECIPE_METHODS[] = {
    {"linear", "average", P_KEEP_BASE | P_NORMALIZED},
    {"task_arithmetic", "task_arithmetic", P_WEIGHT_SCALES},
    {"ties", "ties", P_DENSITY_TOPK | P_NORMALIZED},
    {"dare_ties", "dare_ties", P_DENSITY_DROP | P_NORMALIZED},
    {"dare_linear", "dare_linear", P_DENSITY_DROP | P_WEIGHT_SCALES},
    {"breadcrumbs", "breadcrumbs", P_BREADCRUMBS | P_WEIGHT_SCALES},
    {"slerp", "slerp", P_KEEP_BASE},
    {"model_stock", "model_stock", 0},
};
#define N_RECIPE_METHODS (sizeof RECIPE_METHODS / sizeof RECIPE_METHODS[0])

/* The merge stage's table (merge --list-methods), read once. */
typedef struct {
    char name[32];
    int lambda;          /* reads --lambda */
    char modes[32];      /* "ia3,full" */
    char options[128];   /* "topk_percent", "iterations,init,..." or "none" */
} merge_row;
static merge_row *ROWS;
static int N_ROWS;

static void read_merge_table(const char *merge_bin) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "'%s' --list-methods", merge_bin);
    FILE *p = popen(cmd, "r");
    if (!p) die("cannot run %s --list-methods: %s", merge_bin, strerror(errno));
    char line[1024];
    while (fgets(line, sizeof line, p)) {
        ROWS = reallocCheck(ROWS, (size_t)(N_ROWS + 1) * sizeof *ROWS);
        merge_row *r = &ROWS[N_ROWS];
        memset(r, 0, sizeof *r);
        if (sscanf(line, "%31s", r->name) != 1) continue;
        const char *l = strstr(line, " lambda="), *m = strstr(line, " modes="), *o = strstr(line, " options=");
        if (!l || !m || !o) continue;
        r->lambda = !strncmp(l + 8, "yes", 3);
        sscanf(m + 7, "%31s", r->modes);
        sscanf(o + 9, "%127s", r->options);
        N_ROWS++;
    }
    if (pclose(p) != 0 || N_ROWS == 0) die("%s --list-methods failed: build the stages first (make)", merge_bin);
}

static const merge_row *merge_method(const char *name) {
    for (int i = 0; i < N_ROWS; i++)
        if (!strcmp(ROWS[i].name, name)) return &ROWS[i];
    return NULL;
}

static int has_word(const char *list, const char *w) {
    size_t n = strlen(w);
    for (const char *p = list; (p = strstr(p, w)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

/* ------------------------------------------------------------ YAML */

static yaml_document_t DOC;

static int line_of(const yaml_node_t *n) { return (int)n->start_mark.line + 1; }

MC_NORETURN static void fail_at(const yaml_node_t *n, const char *fmt, ...) MC_PRINTF(2, 3);
static void fail_at(const yaml_node_t *n, const char *fmt, ...) {
    char m[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (n) die("%s:%d: %s", FILE_NAME, line_of(n), m);
    die("%s: %s", FILE_NAME, m);
}

static yaml_node_t *node(int id) { return yaml_document_get_node(&DOC, id); }

static const char *scalar(const yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

/* n is a map whose keys are among `allowed` (NULL-ended), each once; the
 * error names the allowed keys, then `more` (NULL: nothing) */
static void check_keys(const yaml_node_t *n, const char *where, const char *const *allowed, const char *more) {
    if (!n || n->type != YAML_MAPPING_NODE) fail_at(n, "%s must be a map of keys", where);
    char hint[512] = "";
    for (int i = 0; allowed[i]; i++)
        snprintf(hint + strlen(hint), sizeof hint - strlen(hint), "%s%s", i ? ", " : "", allowed[i]);
    if (more) snprintf(hint + strlen(hint), sizeof hint - strlen(hint), "; %s", more);
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        const yaml_node_t *k = node(p->key);
        const char *ks = scalar(k);
        if (!ks) fail_at(k, "%s: a key that is not a plain name", where);
        int ok = 0;
        for (int i = 0; allowed[i] && !ok; i++) ok = !strcmp(allowed[i], ks);
        if (!ok) fail_at(k, "%s%s%s: not a key mats-c reads here (%s)", where, *where ? "." : "", ks, hint);
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++)
            if (scalar(node(q->key)) && !strcmp(scalar(node(q->key)), ks))
                fail_at(k, "%s%s%s: given twice", where, *where ? "." : "", ks);
    }
}

static const yaml_node_t *get(const yaml_node_t *map, const char *key) {
    if (!map || map->type != YAML_MAPPING_NODE) return NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        const char *ks = scalar(node(p->key));
        if (ks && !strcmp(ks, key)) return node(p->value);
    }
    return NULL;
}

static const char *get_str(const yaml_node_t *map, const char *key, const char *where) {
    const yaml_node_t *v = get(map, key);
    if (!v) return NULL;
    const char *s = scalar(v);
    if (!s || !*s) fail_at(v, "%s.%s must be a string", where, key);
    return s;
}

static double num_of(const yaml_node_t *v, const char *where, const char *key) {
    const char *s = scalar(v);
    char *end;
    double x = s ? strtod(s, &end) : NAN;
    if (!s || !*s || *end || !isfinite(x)) fail_at(v, "%s.%s = %s: not a number", where, key, s ? s : "(not a scalar)");
    return x;
}

/* A number, or NAN when absent. A list (a layer gradient or filter entries)
 * is refused: only weight, density, gamma, lambda and t take one
 * (add_rules). */
static double get_num(const yaml_node_t *map, const char *key, const char *where) {
    const yaml_node_t *v = get(map, key);
    if (!v) return NAN;
    if (v->type == YAML_SEQUENCE_NODE)
        fail_at(v, "%s.%s: a list of values (a layer gradient or filter entries) is taken by weight, density, gamma, "
                   "lambda and t only; give one number", where, key);
    return num_of(v, where, key);
}

static int is_list(const yaml_node_t *v) { return v && v->type == YAML_SEQUENCE_NODE; }

/* ------------------------------------------------------------ rules
 *
 * Weights that differ, layer gradients and filters go to the merge stage
 * as merge.rules (merge --rules, lib/merge_rules.h): one rule
 * PARAM[.MODEL][@FILTER]:V[,V...] per value or filter entry, in the
 * recipe's order, joined by '/'. */

static char *RULES_BUF;
static size_t RULES_LEN;

static void rules_add(const char *fmt, ...) MC_PRINTF(1, 2);
static void rules_add(const char *fmt, ...) {
    char m[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof m) die("recipe: a rule too long");
    RULES_BUF = reallocCheck(RULES_BUF, RULES_LEN + (size_t)n + 2);
    if (RULES_LEN) RULES_BUF[RULES_LEN++] = '/';
    memcpy(RULES_BUF + RULES_LEN, m, (size_t)n + 1);
    RULES_LEN += (size_t)n;
}

/* One value of a setting: a number or a gradient (a list of numbers), as
 * V[,V...] into buf. */
static void values_of(const yaml_node_t *v, const char *where, const char *key, char *buf, size_t cap) {
    buf[0] = 0;
    if (v->type == YAML_SCALAR_NODE) { /* the number as written (strtod took all of it) */
        num_of(v, where, key);
        snprintf(buf, cap, "%s", scalar(v));
        return;
    }
    if (v->type != YAML_SEQUENCE_NODE || v->data.sequence.items.start == v->data.sequence.items.top)
        fail_at(v, "%s.%s: a number, a list of numbers (a layer gradient) or a list of filter: / value: entries",
                where, key);
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        size_t n = strlen(buf);
        if (node(*it)->type != YAML_SCALAR_NODE)
            fail_at(node(*it), "%s.%s: a gradient is a list of numbers", where, key);
        num_of(node(*it), where, key);
        snprintf(buf + n, cap - n, "%s%s", n ? "," : "", scalar(node(*it)));
    }
}

/* The rules of one mergekit setting v of `param` (mergekit's name: weight,
 * density, gamma, lambda; t is slerp's lambda) for model `model`
 * (1-based; 0: every model): a number, a gradient, or a list of
 * {filter, value} entries (filter absent or "*": every tensor). */
static void add_rules(const yaml_node_t *v, const char *param, int model, const char *where, const char *key) {
    char head[64], vals[400];
    snprintf(head, sizeof head, "%s", !strcmp(param, "t") ? "lambda" : param);
    if (model) snprintf(head + strlen(head), sizeof head - strlen(head), ".%d", model);
    int entries = is_list(v) && v->data.sequence.items.start < v->data.sequence.items.top &&
                  node(*v->data.sequence.items.start)->type == YAML_MAPPING_NODE;
    if (!entries) {
        values_of(v, where, key, vals, sizeof vals);
        rules_add("%s:%s", head, vals);
        return;
    }
    static const char *const FK[] = {"filter", "value", NULL};
    for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
        const yaml_node_t *e = node(*it);
        check_keys(e, key, FK, NULL);
        const yaml_node_t *val = get(e, "value");
        if (!val) fail_at(e, "%s.%s: an entry without value:", where, key);
        const char *fl = get_str(e, "filter", key);
        if (fl && !strcmp(fl, "*")) fl = NULL;
        if (fl && !mr_filter_ok(fl))
            fail_at(get(e, "filter"), "%s.%s: filter %s: a part of a tensor name (letters, digits, '.', '_', "
                    "'-'), or *", where, key, fl);
        values_of(val, where, key, vals, sizeof vals);
        rules_add("%s%s%s:%s", head, fl ? "@" : "", fl ? fl : "", vals);
    }
}

static int get_bool(const yaml_node_t *map, const char *key, const char *where, int def) {
    const yaml_node_t *v = get(map, key);
    if (!v) return def;
    const char *s = scalar(v);
    if (s && (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "yes"))) return 1;
    if (s && (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "no"))) return 0;
    fail_at(v, "%s.%s must be true or false", where, key);
}

/* ------------------------------------------------------------ paths */

static const char *CWD;

/* ------------------------------------------------------------ the benchmark's tasks
 *
 * `data: benchmark:TASK` names a task of the built-in benchmark
 * (configs/data.conf's data.tasks): recipes/recipe.mk writes its splits as
 * JSON Lines (art export-jsonl of prepare's examples) into BENCH_DIR, and
 * the experiment reads them there: `data` the train split, `validation` and
 * `test` theirs. */
static const char *REPO;       /* this checkout */
static char BENCH_DIR[PATH_MAX];
static char BENCH_TASKS[1024]; /* the ones used, space separated */

static int is_benchmark(const char *v) { return !strncmp(v, "benchmark:", 10); }

/* The JSON Lines path of benchmark value v (benchmark:TASK) for split s. */
static char *benchmark_path(const yaml_node_t *at, const char *v, const char *what, const char *split) {
    const char *task = v + 10;
    static char *tasks; /* configs/data.conf's data.tasks, read once */
    if (!tasks) {
        char conf[PATH_MAX];
        snprintf(conf, sizeof conf, "%s/configs/data.conf", REPO);
        mc_cfg *c = cfg_new();
        if (cfg_load(c, conf) < 0) die("%s", mc_error());
        tasks = strdupCheck(cfg_str(c, "data.tasks", ""));
        cfg_free(c);
    }
    size_t n = strlen(task);
    int ok = n > 0;
    for (const char *t = task; *t; t++) ok &= isalnum((unsigned char)*t) || *t == '_' || *t == '-';
    const char *p = tasks;
    int found = 0;
    while (ok && !found && (p = strstr(p, task))) {
        found = (p == tasks || p[-1] == ',') && (p[n] == ',' || !p[n]);
        p += n;
    }
    if (!found) fail_at(at, "%s = %s: not a task of the built-in benchmark (%s)", what, v, tasks);
    char w[128], padded[sizeof BENCH_TASKS + 2]; /* each task once */
    snprintf(w, sizeof w, " %s ", task);
    snprintf(padded, sizeof padded, " %s ", BENCH_TASKS);
    if (!strstr(padded, w))
        snprintf(BENCH_TASKS + strlen(BENCH_TASKS), sizeof BENCH_TASKS - strlen(BENCH_TASKS), "%s%s",
                 *BENCH_TASKS ? " " : "", task);
    size_t len = strlen(BENCH_DIR) + n + strlen(split) + 16;
    char *path = mallocCheck(len);
    snprintf(path, len, "%s/%s.%s.jsonl", BENCH_DIR, task, split);
    return path;
}

/* An absolute, resolved path of an existing file or directory. Caller frees. */
static char *resolve(const yaml_node_t *at, const char *p, const char *what, int want_dir) {
    char joined[PATH_MAX];
    if (p[0] == '/') snprintf(joined, sizeof joined, "%s", p);
    else snprintf(joined, sizeof joined, "%s/%s", CWD, p);
    char *r = realpath(joined, NULL);
    struct stat st;
    if (!r || stat(r, &st) != 0)
        fail_at(at, "%s = %s: no such %s%s", what, p, want_dir ? "directory" : "file",
                want_dir ? " (mats-c reads local checkpoint directories: download a hub model first)" : "");
    if (want_dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
        fail_at(at, "%s = %s: not a %s", what, p, want_dir ? "directory" : "regular file");
    /* make carries words: a path with white space or a quote would split */
    for (const char *c = r; *c; c++)
        if (*c == ' ' || *c == '\t' || *c == '\n' || *c == '\'' || *c == '"' || *c == '$' || *c == '\\')
            fail_at(at, "%s = %s: the path holds a blank, a quote, '$' or '\\', which make cannot carry", what, r);
    return r;
}

static int is_adapter(const char *dir) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/adapter_config.json", dir);
    return access(p, F_OK) == 0;
}

/* ------------------------------------------------------------ translate */

typedef struct {
    char *dir;
    const yaml_node_t *at;
    char name[64];
    char *split[3]; /* train validation test */
    const yaml_node_t *set[3]; /* its own weight, density, gamma settings (NULL: none) */
} model;

static void shell_assign(FILE *f, const char *k, const char *v) {
    fprintf(f, "%s='", k);
    for (const char *c = v; *c; c++)
        if (*c == '\'') fputs("'\\''", f);
        else fputc(*c, f);
    fputs("'\n", f);
}

static const char *dtype_of(const yaml_node_t *root, const char *key) {
    const char *s = get_str(root, key, "");
    if (!s) return NULL;
    if (!strcmp(s, "float32") || !strcmp(s, "fp32")) return "f32";
    if (!strcmp(s, "bfloat16") || !strcmp(s, "bf16")) return "bf16";
    if (!strcmp(s, "float16") || !strcmp(s, "fp16")) return "f16";
    fail_at(get(root, key), "%s = %s: float32, bfloat16 or float16", key, s);
}

/* our own global parameters: the config key each sets, and the merge
 * option (merge --list-methods) a method must read for it (NULL: any) */
static const struct { const char *param, *key, *opt; } OPT[] = {
    {"iterations", "merge.iterations", "iterations"},    {"cg_tol", "merge.cg_tol", "cg_tol"},
    {"init", "merge.init", "init"},                      {"init_lambda", "merge.init_lambda", "init_lambda"},
    {"precondition", "merge.precondition", "precondition"}, {"seed", "merge.seed", "seed"},
    {"common_space_fraction", "merge.common_space_fraction", "common_space_fraction"},
    {"examples", "exp.stats.examples", NULL},            {"max_input", "tokenize.max_input", NULL},
    {"max_choice", "tokenize.max_choice", NULL},
};

static int translate(const char *conf_out, const char *out_dir) {
    const yaml_node_t *root = yaml_document_get_root_node(&DOC);
    if (!root) fail_at(NULL, "empty: a recipe is a map with merge_method, models, ...");
    static const char *const TOP[] = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", NULL};
    check_keys(root, "", TOP, "slices, tokenizer_source and the like are not supported");
    const char *mname = get_str(root, "merge_method", "");
    if (!mname) fail_at(root, "merge_method missing: one of `recipe --methods`");
    const char *ours = NULL;
    int params = 0;
    for (size_t i = 0; i < N_RECIPE_METHODS; i++)
        if (!strcmp(RECIPE_METHODS[i].name, mname)) ours = RECIPE_METHODS[i].ours, params = RECIPE_METHODS[i].params;
    if (!ours) ours = mname;
    const merge_row *row = merge_method(ours);
    if (!row) fail_at(get(root, "merge_method"), "merge_method = %s: not a method mats-c runs (recipe --methods lists them)", mname);

    /* global parameters */
    static const char *const MKP[] = {"lambda", "t", "normalize", "int8_mask", "rescale", "weight", "density", "gamma",
                                      "data"};
    const char *GP[sizeof MKP / sizeof MKP[0] + sizeof OPT / sizeof OPT[0] + 1];
    size_t ngp = 0;
    for (size_t i = 0; i < sizeof MKP / sizeof MKP[0]; i++) GP[ngp++] = MKP[i];
    for (size_t i = 0; i < sizeof OPT / sizeof OPT[0]; i++) GP[ngp++] = OPT[i].param;
    GP[ngp] = NULL;
    const yaml_node_t *gp = get(root, "parameters");
    if (gp) check_keys(gp, "parameters", GP, NULL);
    if (gp && get(gp, "normalize")) {
        int nz = get_bool(gp, "normalize", "parameters", 1);
        if (!(params & (P_NORMALIZED | P_WEIGHT_SCALES)) || nz != !!(params & P_NORMALIZED))
            fail_at(get(gp, "normalize"), "parameters.normalize = %s: %s %s", nz ? "true" : "false", mname,
                    params & P_NORMALIZED ? "here always normalizes the (equal) weights"
                    : params & P_WEIGHT_SCALES ? "here scales the task vectors by the weight, unnormalized"
                    : "does not read it");
    }
    if (gp && !get_bool(gp, "rescale", "parameters", 1))
        fail_at(get(gp, "rescale"), "parameters.rescale = false: DARE here always rescales by 1 / density");
    if (gp) get_bool(gp, "int8_mask", "parameters", 0);

    /* the models */
    const yaml_node_t *ms = get(root, "models");
    if (!ms || ms->type != YAML_SEQUENCE_NODE || ms->data.sequence.items.top == ms->data.sequence.items.start)
        fail_at(ms ? ms : root, "models must be a non-empty list of `- model: DIR` entries");
    const char *base_s = get_str(root, "base_model", "");
    char *base = base_s ? resolve(get(root, "base_model"), base_s, "base_model", 1) : NULL;
    if (base && is_adapter(base)) fail_at(get(root, "base_model"), "base_model = %s: a PEFT adapter, not a model", base_s);
    int nm = 0, mode_ia3 = -1;
    model *mv = callocCheck((size_t)(ms->data.sequence.items.top - ms->data.sequence.items.start) + 1, sizeof *mv);
    double weight = NAN, density = NAN, gamma = NAN;
    const yaml_node_t *weight_at = NULL;
    /* weights that differ, or any gradient or filter list: merge.rules */
    static const char *const SET[3] = {"weight", "density", "gamma"};
    int w_rules = gp && is_list(get(gp, "weight")), d_rules = gp && (is_list(get(gp, "density")) || is_list(get(gp, "gamma")));
    static const char *const MK[] = {"model", "parameters", NULL};
    static const char *const MP[] = {"weight", "density", "gamma", "data", "validation", "test", NULL};
    for (yaml_node_item_t *it = ms->data.sequence.items.start; it < ms->data.sequence.items.top; it++) {
        int idx = (int)(it - ms->data.sequence.items.start);
        char where[64], pw[96], what[128];
        snprintf(where, sizeof where, "models[%d]", idx);
        snprintf(pw, sizeof pw, "%s.parameters", where);
        const yaml_node_t *e = node(*it);
        check_keys(e, where, MK, NULL);
        const char *d = get_str(e, "model", where);
        if (!d) fail_at(e, "%s.model missing: a checkpoint directory", where);

        snprintf(what, sizeof what, "%s.model", where);
        char *dir = resolve(get(e, "model"), d, what, 1);
        const yaml_node_t *p = get(e, "parameters");
        if (p) check_keys(p, pw, MP, NULL);
        /* per-model values, else the global ones (lists: rules) */
        const yaml_node_t *own[3];
        for (int k = 0; k < 3; k++) own[k] = p ? get(p, SET[k]) : NULL;
        w_rules |= is_list(own[0]), d_rules |= is_list(own[1]) || is_list(own[2]);
        double w = own[0] && !is_list(own[0]) ? get_num(p, "weight", pw) : NAN,
               de = own[1] && !is_list(own[1]) ? get_num(p, "density", pw) : NAN,
               g = own[2] && !is_list(own[2]) ? get_num(p, "gamma", pw) : NAN;
        if (isnan(w) && !own[0] && gp && !is_list(get(gp, "weight"))) w = get_num(gp, "weight", "parameters");
        if (isnan(de) && !own[1] && gp && !is_list(get(gp, "density"))) de = get_num(gp, "density", "parameters");
        if (isnan(g) && !own[2] && gp && !is_list(get(gp, "gamma"))) g = get_num(gp, "gamma", "parameters");
        int is_base = base && !strcmp(base, dir);
        if (is_base && !(params & P_KEEP_BASE)) { /* mergekit: the base has no task vector */
            free(dir);
            continue;
        }
        const yaml_node_t *wat = p && get(p, "weight") ? get(p, "weight") : e;
        if (isnan(w)) w = 1;
        if (!isnan(weight) && w != weight) w_rules = 1;
        weight = w, weight_at = wat;
        if ((!isnan(de) || is_list(own[1])) && !(params & (P_DENSITY_TOPK | P_DENSITY_DROP | P_BREADCRUMBS)))
            fail_at(p && get(p, "density") ? get(p, "density") : gp, "density: %s does not read it", mname);
        if ((!isnan(g) || is_list(own[2])) && !(params & P_BREADCRUMBS))
            fail_at(p && get(p, "gamma") ? get(p, "gamma") : gp, "gamma: %s does not read it", mname);
        /* one density and gamma for all, or rules */
        if (nm > 0 && (isnan(density) != isnan(de) || isnan(gamma) != isnan(g) || (!isnan(de) && de != density) ||
                       (!isnan(g) && g != gamma)))
            d_rules = 1;
        density = de, gamma = g;
        int ad = is_adapter(dir);
        if (mode_ia3 >= 0 && ad != mode_ia3)
            fail_at(get(e, "model"), "%s.model = %s is %s but an earlier model is %s: all full fine-tunes or all "
                    "PEFT IA3 adapters", where, d, ad ? "an adapter" : "a full model", ad ? "a full model" : "an adapter");
        mode_ia3 = ad;
        model *m = &mv[nm++];
        m->dir = dir;
        m->at = e;
        for (int k = 0; k < 3; k++) m->set[k] = own[k];
        /* a task name from the directory's name */
        const char *b = strrchr(dir, '/');
        b = b ? b + 1 : dir;
        size_t k = 0;
        for (; *b && k < 40; b++) m->name[k++] = (isalnum((unsigned char)*b) || *b == '-' || *b == '_') ? *b : '_';
        snprintf(m->name + k, sizeof m->name - k, "%s", k ? "" : "m");
        for (int j = 0; j < nm - 1; j++)
            if (!strcmp(mv[j].name, m->name)) snprintf(m->name + k, sizeof m->name - k, "-%d", idx);
        /* data */
        const char *keys[3] = {"data", "validation", "test"};
        const char *ds = p ? get_str(p, "data", pw) : NULL;
        const yaml_node_t *dat = p && ds ? get(p, "data") : NULL;
        if (!ds && gp) ds = get_str(gp, "data", "parameters"), dat = get(gp, "data");
        if (!ds)
            fail_at(e, "%s.data missing: each model's task as our JSON Lines ({\"input\", \"choices\", \"label\"} per "
                       "line): mats-c evaluates every merge on it, and fisher, regmean and mats take their statistics "
                       "from it (or give parameters.data for all)", pw);
        snprintf(what, sizeof what, "%s.data", pw);
        static const char *const SPLIT[3] = {"train", "validation", "test"};
        m->split[0] = is_benchmark(ds) ? benchmark_path(dat, ds, what, SPLIT[0]) : resolve(dat, ds, what, 0);
        for (int s = 1; s < 3; s++) {
            const char *o = p ? get_str(p, keys[s], pw) : NULL;
            snprintf(what, sizeof what, "%s.%s", pw, keys[s]);
            m->split[s] = o ? (is_benchmark(o) ? benchmark_path(get(p, keys[s]), o, what, SPLIT[s])
                                               : resolve(get(p, keys[s]), o, what, 0))
                        : is_benchmark(ds) ? benchmark_path(dat, ds, what, SPLIT[s]) /* the task's own split */
                                           : strdupCheck(m->split[0]);
        }
    }
    if (nm == 0) fail_at(ms, "models: every entry is base_model: nothing to merge");
    if (mode_ia3 && !base) fail_at(root, "base_model missing: PEFT IA3 adapters need the model they adapt");
    if (!base && !(params & P_KEEP_BASE))
        fail_at(root, "base_model missing: %s merges task vectors, the models minus their base", mname);
    if (!strcmp(ours, "slerp")) {
        /* from the base (t = 0) to the other model */
        if (!base) fail_at(root, "base_model missing: slerp goes from base_model (t = 0) to the other model");
        int bi = -1;
        for (int i = 0; i < nm; i++)
            if (!strcmp(mv[i].dir, base)) bi = i;
        if (nm != 2 || bi < 0)
            fail_at(ms, "slerp: models must be base_model and exactly one other (it has %d, %s base_model)", nm,
                    bi < 0 ? "without" : "with");
        if (bi == 1) {
            model t = mv[0];
            mv[0] = mv[1], mv[1] = t;
        }
    }
    if (!base) base = strdupCheck(mv[0].dir);
    const char *mode = mode_ia3 ? "ia3" : "full";
    if (!has_word(row->modes, mode))
        fail_at(get(root, "merge_method"), "merge_method = %s merges %s models; these are %s", mname, row->modes,
                mode_ia3 ? "PEFT IA3 adapters" : "full fine-tunes");

    /* weights that differ, gradients, filters: merge.rules (add_rules) */
    int slerp = !strcmp(ours, "slerp"), takes_rules = has_word(row->options, "rules");
    const char *lname = slerp ? "t" : "lambda";
    const yaml_node_t *gl = gp ? get(gp, lname) : NULL;
    if (w_rules) {
        if (!(params & (P_NORMALIZED | P_WEIGHT_SCALES)) && strcmp(ours, "fisher"))
            fail_at(weight_at, "weight: weights that differ between models, or a gradient or filter list: %s merges "
                    "with equal weights (linear, task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs and fisher "
                    "take them)", mname);
        for (int i = 0; i < nm; i++)
            if (mv[i].set[0]) add_rules(mv[i].set[0], "weight", i + 1, "models[].parameters", "weight");
        if (gp && get(gp, "weight")) add_rules(get(gp, "weight"), "weight", 0, "parameters", "weight");
        weight = 1;
    }
    if (d_rules) {
        for (int k = 1; k < 3; k++) {
            for (int i = 0; i < nm; i++) {
                if (!mv[i].set[k]) continue;
                if ((params & P_DENSITY_TOPK) && is_list(mv[i].set[k]))
                    fail_at(mv[i].set[k], "density: ties keeps the top density of each whole task vector: one number "
                            "per model (dare_ties and breadcrumbs take gradients and filters)");
                add_rules(mv[i].set[k], SET[k], i + 1, "models[].parameters", SET[k]);
            }
            const yaml_node_t *g = gp ? get(gp, SET[k]) : NULL;
            if (g && (params & P_DENSITY_TOPK) && is_list(g))
                fail_at(g, "parameters.density: ties keeps the top density of each whole task vector: one number");
            if (g) add_rules(g, SET[k], 0, "parameters", SET[k]);
        }
        /* the options: the global numbers (rules override them) */
        density = gp && get(gp, "density") && !is_list(get(gp, "density")) ? get_num(gp, "density", "parameters") : NAN;
        gamma = gp && get(gp, "gamma") && !is_list(get(gp, "gamma")) ? get_num(gp, "gamma", "parameters") : NAN;
    }
    if (is_list(gl)) {
        if (!row->lambda || !takes_rules)
            fail_at(gl, "parameters.%s: a gradient or filter list: %s takes one value for every tensor", lname, mname);
        add_rules(gl, lname, 0, "parameters", lname);
    }

    /* lambda: parameters.lambda (t for slerp) times the weight where it
     * scales the task vectors */
    double lambda = gp && !is_list(gl) ? get_num(gp, lname, "parameters") : NAN;
    const yaml_node_t *other = gp ? get(gp, !strcmp(ours, "slerp") ? "lambda" : "t") : NULL;
    if (other) fail_at(other, "parameters.%s: %s reads parameters.%s", !strcmp(ours, "slerp") ? "lambda" : "t", mname,
                       !strcmp(ours, "slerp") ? "t" : "lambda");
    if (!isnan(lambda) && !row->lambda)
        fail_at(get(gp, "lambda"), "parameters.lambda: %s does not read it", mname);
    if (slerp && isnan(lambda) && !is_list(gl)) fail_at(gp ? gp : root, "parameters.t missing: slerp's t in [0, 1]");
    if (isnan(lambda)) lambda = 1;
    if (params & P_WEIGHT_SCALES) lambda *= weight;
    else if (weight != 1 && !(params & P_NORMALIZED) && strcmp(ours, "slerp"))
        fail_at(weight_at, "weight = %g: %s does not scale by it (leave it out or 1)", weight, mname);

    /* options of the merge stage */
    FILE *f = fopen(conf_out, "w");
    if (!f) die("%s: cannot write: %s", conf_out, strerror(errno));
    fprintf(f, "# written by build/bin/recipe from %s: do not edit, edit the recipe\n", FILE_NAME);
    fprintf(f, "exp.source = hf\nexp.mode = %s\nexp.base = %s\nexp.tasks = ", mode, base);
    for (int i = 0; i < nm; i++) fprintf(f, "%s%s", i ? "," : "", mv[i].name);
    fprintf(f, "\n");
    const char *sp[3] = {"train", "validation", "test"};
    for (int i = 0; i < nm; i++) {
        fprintf(f, "exp.task.%s.model = %s\n", mv[i].name, mv[i].dir);
        for (int s = 0; s < 3; s++) fprintf(f, "exp.task.%s.%s = %s\n", mv[i].name, sp[s], mv[i].split[s]);
    }
    fprintf(f, "exp.stats.split = train\n");
    if (RULES_LEN) fprintf(f, "merge.rules = %s\n", RULES_BUF);
    if (!isnan(density)) {
        if (!(density > 0 && density <= 1)) fail_at(ms, "density = %g: in (0, 1]", density);
        if (params & P_DENSITY_TOPK) fprintf(f, "merge.topk_percent = %.17g\n", 100 * density);
        if (params & P_DENSITY_DROP) fprintf(f, "merge.drop_rate = %.17g\n", 1 - density);
    }
    if (params & P_BREADCRUMBS) {
        double de = isnan(density) ? 0.9 : density, g = isnan(gamma) ? 0.01 : gamma;
        if (!(g >= 0 && de + g <= 1)) fail_at(ms, "breadcrumbs: gamma %g and density %g must sum to at most 1", g, de);
        fprintf(f, "merge.breadcrumbs_top = %.17g\nmerge.breadcrumbs_bottom = %.17g\n", 100 * g, 100 * (1 - de - g));
    }
    /* ours, by name: where the method reads the option */
    for (size_t i = 0; gp && i < sizeof OPT / sizeof OPT[0]; i++) {
        const yaml_node_t *v = get(gp, OPT[i].param);
        if (!v) continue;
        if (OPT[i].opt && !has_word(row->options, OPT[i].opt))
            fail_at(v, "parameters.%s: %s does not read it (its options: %s)", OPT[i].param, mname, row->options);
        if (v->type == YAML_SEQUENCE_NODE) get_num(gp, OPT[i].param, "parameters"); /* the gradient message */
        const char *s = scalar(v);
        if (!s || !*s || strpbrk(s, "\n#=")) fail_at(v, "parameters.%s: one value", OPT[i].param);
        fprintf(f, "%s = %s\n", OPT[i].key, s);
    }
    if (fclose(f) != 0) die("%s: write failed", conf_out);

    /* what recipes/recipe.mk runs */
    char num[64];
    shell_assign(stdout, "RECIPE_METHOD", ours);
    shell_assign(stdout, "RECIPE_MODE", mode);
    snprintf(num, sizeof num, "%.17g", lambda);
    shell_assign(stdout, "RECIPE_LAMBDA", row->lambda ? num : "");
    const char *dt = dtype_of(root, "out_dtype");
    if (!dt) dt = dtype_of(root, "dtype");
    shell_assign(stdout, "RECIPE_DTYPE", dt ? dt : "f32");
    shell_assign(stdout, "RECIPE_BASE", base);
    shell_assign(stdout, "RECIPE_BENCHMARK", BENCH_TASKS);
    /* the output must not be, nor hold, an input */
    if (out_dir) {
        char *o = realpath(out_dir, NULL);
        for (int i = -1; o && i < nm; i++) {
            const char *in = i < 0 ? base : mv[i].dir;
            size_t n = strlen(o);
            if (!strncmp(in, o, n) && (in[n] == 0 || in[n] == '/'))
                die("%s: OUT = %s holds an input checkpoint (%s): give a new directory", FILE_NAME, out_dir, in);
        }
        free(o);
    }
    for (int i = 0; i < nm; i++) {
        free(mv[i].dir);
        for (int s = 0; s < 3; s++) free(mv[i].split[s]);
    }
    free(mv);
    free(base);
    return 0;
}

/* ------------------------------------------------------------ main */

static void load(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) die("%s: cannot open: %s", path, strerror(errno));
    yaml_parser_t ps;
    if (!yaml_parser_initialize(&ps)) die("libyaml: cannot initialize");
    yaml_parser_set_input_file(&ps, f);
    if (!yaml_parser_load(&ps, &DOC))
        die("%s:%d: YAML error: %s%s%s", path, (int)ps.problem_mark.line + 1, ps.problem ? ps.problem : "malformed",
            ps.context ? " " : "", ps.context ? ps.context : "");
    yaml_document_t more;
    if (yaml_parser_load(&ps, &more)) {
        int extra = yaml_document_get_root_node(&more) != NULL;
        yaml_document_delete(&more);
        if (extra) die("%s: more than one YAML document: a recipe is one", path);
    }
    yaml_parser_delete(&ps);
    fclose(f);
}

/* This checkout: the directory two levels above the binary. */
static char *repo_dir(void) {
    char *exe = realpath("/proc/self/exe", NULL);
    if (!exe) die("cannot find this program's path: %s", strerror(errno));
    for (int i = 0; i < 3; i++) {
        char *s = strrchr(exe, '/');
        if (s) *s = 0;
    }
    return exe;
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    const char *usage = "usage: recipe RECIPE.yml -o DIR | recipe RECIPE.yml --experiment EXP.conf [--out DIR] | recipe --methods";
    char *repo = repo_dir();
    char merge_bin[PATH_MAX];
    snprintf(merge_bin, sizeof merge_bin, "%s/build/bin/merge", repo);
    if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        printf("%s\n  -o DIR                 merge as the recipe says; DIR gets config.json, model.safetensors, "
               "spiece.model (make merge RECIPE=... OUT=DIR)\n  --experiment EXP.conf  translate only (recipes/recipe.mk)\n"
               "  --methods              the method names a recipe may use\ndocs/recipes.md has the schema.\n", usage);
        return 0;
    }
    if (argc == 2 && !strcmp(argv[1], "--methods")) {
        read_merge_table(merge_bin);
        for (size_t i = 0; i < N_RECIPE_METHODS; i++) printf("%s %s\n", RECIPE_METHODS[i].name, RECIPE_METHODS[i].ours);
        for (int i = 0; i < N_ROWS; i++) {
            int named = 0; /* mergekit's name already printed it */
            for (size_t k = 0; k < N_RECIPE_METHODS; k++) named |= !strcmp(RECIPE_METHODS[k].name, ROWS[i].name);
            if (!named) printf("%s %s\n", ROWS[i].name, ROWS[i].name);
        }
        return 0;
    }
    if (argc == 4 && !strcmp(argv[2], "-o")) {
        /* the Makefile does the work: every stage keyed and cached */
        char *rp = realpath(argv[1], NULL);
        if (!rp) die("%s: %s", argv[1], strerror(errno));
        char out[PATH_MAX + 2], cwd[PATH_MAX], rv[PATH_MAX + 8], ov[PATH_MAX + 8], cv[PATH_MAX + 16];
        if (!getcwd(cwd, sizeof cwd)) die("getcwd: %s", strerror(errno));
        if (argv[3][0] == '/') snprintf(out, sizeof out, "%s", argv[3]);
        else snprintf(out, sizeof out, "%s/%s", cwd, argv[3]);
        snprintf(rv, sizeof rv, "RECIPE=%s", rp);
        snprintf(ov, sizeof ov, "OUT=%s", out);
        snprintf(cv, sizeof cv, "RECIPE_CWD=%s", cwd);
        execlp("make", "make", "--no-print-directory", "-C", repo, "merge", rv, ov, cv, (char *)NULL);
        die("cannot run make: %s", strerror(errno));
    }
    if ((argc != 4 && argc != 6) || strcmp(argv[2], "--experiment") || (argc == 6 && strcmp(argv[4], "--out")))
        die("%s", usage);
    FILE_NAME = argv[1];
    CWD = getenv("RECIPE_CWD");
    char cwd[PATH_MAX];
    if (!CWD || !*CWD) CWD = getcwd(cwd, sizeof cwd);
    read_merge_table(merge_bin);
    REPO = repo;
    { /* BENCH_DIR: beside the experiment, absolute */
        char d[PATH_MAX];
        snprintf(d, sizeof d, "%s", argv[3]);
        char *sl = strrchr(d, '/');
        if (sl) *sl = 0;
        else snprintf(d, sizeof d, ".");
        char *r = realpath(d, NULL);
        if (!r) die("%s: %s", d, strerror(errno));
        snprintf(BENCH_DIR, sizeof BENCH_DIR, "%s/benchmark", r);
        free(r);
    }
    load(argv[1]);
    translate(argv[3], argc == 6 ? argv[5] : NULL);
    yaml_document_delete(&DOC);
    free(repo);
    return 0;
}
