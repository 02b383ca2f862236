/* merge.c - merge fine-tuned models (full `model` artifacts or `ia3`
 * artifacts) into one, by any method of the MaTS paper plus DARE,
 * breadcrumbs and the task-vector methods (Iso-C, Iso-CTS, TSV-M, WUDI,
 * Model Stock, slerp). `merge --help` gives the command line;
 * `merge --list-methods` the methods.
 *
 * The methods are the rows of lib/merge_methods.def (lib/merge_methods.h):
 * what each reads and needs, checked and keyed from its row; its kernel is
 * k_<name> below (KERNELS binds them).
 *
 * Memory: streaming methods (the rows' run = MM_STREAM: average,
 * task_arithmetic, ties, dare_*, breadcrumbs, fisher) go tensor by tensor:
 * every input is opened with art_open (a file mapping), one tensor at a time
 * is converted to f32, the pages of a tensor already used are handed back
 * to the kernel (madvise), and the output goes through the streaming
 * writer. TIES finds each task vector's global magnitude threshold with two
 * histogram passes (mrg_select) instead of holding the task vectors, and
 * keeps the elected signs as one byte per parameter (a quarter of a model)
 * so the merge pass reads each model once. iso_c, iso_cts, tsv_m and
 * model_stock stream too but hold the N task vectors of one tensor. Solver
 * methods (CG methods, wudi among them, and regmean) keep the merged model
 * in memory because their per-tensor residuals go into the output's meta,
 * which the writer puts before the tensors.
 *
 * Which tensors are linears (full models): a tensor X.weight with 2 dims
 * whose Gram artifacts carry X.input_gram, except shared.weight (the
 * embedding) and any relative_attention_bias. regmean / cg_regmean solve
 * every linear (lm_head included); mats solves every linear that also has
 * X.output_grad_gram (all but lm_head) and averages the rest. wudi solves
 * every 2-d X.weight but shared.weight and relative_attention_bias (no
 * Grams needed); iso_c, iso_cts and tsv_m take every 2-d tensor but
 * relative_attention_bias, the embedding included.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "art.h"
#include "backend.h"
#include "common.h"
#include "key.h"
#include "merge.h"
#include "merge_methods.h"
#include "merge_pp.h"
#include "device.h"
#include "opts.h"
#include "progress.h"
#include "t5.h"
#include "tokens.h"
#include "val.h"
#include "merge_rules.h"

#define FISHER_MIN 1e-8f

typedef struct {
    const char *pretrained, *out, *init, *key, *precond, *rules, *vector_cache;
    char **models, **fishers, **grams, **data;
    int n, nf, ng, nd;
    double lambda, topk, init_lambda, cg_tol, drop_rate, bc_top, bc_bottom, csf;
    long iterations, threads, seed, examples;
    int allow_mismatch;
} opts_t;

static opts_t O; /* the defaults: the option table in main */
static mr_rules RULES; /* --rules, parsed (merge_rules.h) */
static const opt_prog *PROG; /* that table, parsed */

/* The method: its row of lib/merge_methods.def, and the statistic it needs
 * for the models given (its row's stat of their mode). */
static const mm_method *METHOD;
static mm_stat STAT;

/* Inputs. */
static art_file *PRE, **MODELS, **FISH, **GRAM, *INIT;
static tok_set **DATA; /* --data: each model's task examples (regmean_pp) */
static int IS_IA3;
/* --device / DEVICE: cuda runs the K-FAC operator of mats on full models on
 * the GPU (everything else stays on the CPU) */
static int DEV = MC_DEV_CPU;

/* ------------------------------------------------------------ helpers */

static int is_linear_name(const char *name) {
    size_t n = strlen(name);
    if (n < 7 || strcmp(name + n - 7, ".weight")) return 0;
    if (!strcmp(name, "shared.weight")) return 0;
    if (strstr(name, "relative_attention_bias")) return 0;
    return 1;
}

/* "X.weight" -> "X.<suffix>" */
static char *stat_name(const char *weight, const char *suffix) {
    size_t n = strlen(weight) - 7;
    char *s = mallocCheck(n + strlen(suffix) + 2);
    memcpy(s, weight, n);
    sprintf(s + n, ".%s", suffix);
    return s;
}

static void shape_str(const art_tensor *t, char *buf, size_t len) {
    size_t o = 0;
    o += snprintf(buf + o, len - o, "[");
    for (int d = 0; d < t->ndim && o < len; d++)
        o += snprintf(buf + o, len - o, "%s%lld", d ? "," : "", (long long)t->shape[d]);
    if (o < len) snprintf(buf + o, len - o, "]");
}

/* Hand the pages of t back to the kernel (mapped files only): the data stay
 * in the page cache and fault back in if touched again, but no longer count
 * towards this process's resident set. */
static void release(const art_file *a, const art_tensor *t) {
    if (!a->mapped || t->nbytes == 0) return;
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t s = (uintptr_t)t->data, e = s + t->nbytes;
    s = (s + pg - 1) & ~(uintptr_t)(pg - 1); /* whole pages inside the tensor only */
    e &= ~(uintptr_t)(pg - 1);
    if (e > s) madvise((void *)s, e - s, MADV_DONTNEED);
}

static void release_all(const art_file *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_tensors; i++) release(a, &a->tensors[i]);
}

/* A tensor of `a` as f32 (caller frees), checked to be finite. */
static float *load(const art_file *a, const art_tensor *t) {
    float *x = art_tensor_f32(t);
    long bad;
    if (!mrg_all_finite(x, t->numel, &bad))
        die("tensor '%s' in %s has a non-finite value at index %ld: the input is broken, "
            "recompute it", t->name, a->path, bad);
    release(a, t);
    return x;
}

static const art_tensor *need(const art_file *a, const char *name, int ndim, const int64_t *shape,
                              const char *what) {
    const art_tensor *t = art_find(a, name);
    if (!t) die("%s %s has no tensor '%s' (needed for %s)", a->kind, a->path, name, what);
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        char got[128];
        shape_str(t, got, sizeof got);
        char want[128];
        art_tensor tmp = {.ndim = ndim};
        memcpy(tmp.shape, shape, sizeof(int64_t) * ndim);
        shape_str(&tmp, want, sizeof want);
        die("tensor '%s' in %s has shape %s but %s needs %s", name, a->path, got, what, want);
    }
    if (t->dtype != ART_F32 && t->dtype != ART_F64)
        die("tensor '%s' in %s has dtype %s; merge reads f32 or f64", name, a->path,
            art_dtype_name(t->dtype));
    return t;
}

static art_file *open_or_die(const char *path, const char *kind) {
    art_file *a = art_open(path, kind);
    if (!a) die("%s", mc_error());
    return a;
}

/* ------------------------------------------------------------ output */

typedef struct {
    art_writer *w;
    const art_file *like; /* names, dtypes, shapes */
} out_t;

static void out_tensor(out_t *o, const art_tensor *t, const float *x) {
    if (t->dtype == ART_F32) {
        if (art_writer_tensor(o->w, t->name, ART_F32, t->ndim, t->shape, x) < 0) die("%s", mc_error());
        return;
    }
    if (art_writer_tensor_begin(o->w, t->name, ART_F64, t->ndim, t->shape) < 0) die("%s", mc_error());
    enum { CH = 8192 };
    double buf[CH];
    for (int64_t i = 0; i < t->numel; i += CH) {
        int64_t m = t->numel - i < CH ? t->numel - i : CH;
        for (int64_t j = 0; j < m; j++) buf[j] = x[i + j];
        if (art_writer_tensor_data(o->w, buf, sizeof(double) * (size_t)m) < 0) die("%s", mc_error());
    }
}

/* ------------------------------------------------------------ checks */

/* What the method needs for these models (STAT, set once their mode is known). */
static int needs_fisher(void) { return STAT == MM_STAT_FISHER_DIAG || STAT == MM_STAT_FISHER_BLOCK; }
static int needs_gram(void) { return STAT == MM_STAT_GRAM || STAT == MM_STAT_KFAC; }
static int needs_data(void) { return STAT == MM_STAT_DATA; }

static void check_inputs(void) {
    const art_file *m0 = MODELS[0];
    for (int i = 0; i < O.n; i++) {
        const art_file *m = MODELS[i];
        if (strcmp(m->kind, m0->kind))
            die("%s is a '%s' artifact but %s is '%s': merge models of one kind", m->path, m->kind,
                m0->path, m0->kind);
        if (m->n_tensors != m0->n_tensors)
            die("%s has %zu tensors but %s has %zu: the models do not match", m->path, m->n_tensors,
                m0->path, m0->n_tensors);
        for (size_t j = 0; j < m0->n_tensors; j++) {
            const art_tensor *t = &m0->tensors[j];
            const art_tensor *u = art_find(m, t->name);
            if (!u) die("tensor '%s' is in %s but not in %s", t->name, m0->path, m->path);
            need(m, t->name, t->ndim, t->shape, "merging");
            if (u->dtype != t->dtype)
                die("tensor '%s' is %s in %s but %s in %s", t->name, art_dtype_name(t->dtype),
                    m0->path, art_dtype_name(u->dtype), m->path);
        }
        if (IS_IA3) {
            const char *base = val_get_str(m->meta, "base", NULL);
            if (!base) die("ia3 %s has no meta.base: it does not say which model it adapts", m->path);
            if (strcmp(base, PRE->key))
                die("ia3 %s adapts base model %s but --pretrained %s has key %s", m->path, base,
                    PRE->path, PRE->key[0] ? PRE->key : "\"\"");
        }
    }
    if (IS_IA3) {
        for (size_t j = 0; j < m0->n_tensors; j++) {
            const art_tensor *t = &m0->tensors[j];
            size_t L = strlen(t->name);
            if (t->ndim != 1 || L < 11 || strcmp(t->name + L - 11, ".ia3_vector"))
                die("ia3 %s holds '%s', which is not a 1-d X.ia3_vector", m0->path, t->name);
            char *w = mallocCheck(L + 8);
            memcpy(w, t->name, L - 11);
            strcpy(w + L - 11, ".weight");
            const art_tensor *lin = art_find(PRE, w);
            /* k, v, wi_1 scale their outputs; wo (the ReLU layout, t5.h) its input */
            int in = L >= 28 && !strcmp(t->name + L - 28, "DenseReluDense.wo.ia3_vector");
            if (!lin || lin->ndim != 2 || lin->shape[in] != t->shape[0])
                die("ia3 vector '%s' [%lld] has no matching linear '%s' with %lld %s in %s", t->name,
                    (long long)t->shape[0], w, (long long)t->shape[0], in ? "inputs" : "outputs", PRE->path);
            free(w);
        }
    } else {
        if (strcmp(m0->kind, "model"))
            die("%s is a '%s' artifact: merge takes 'model' or 'ia3' artifacts", m0->path, m0->kind);
        for (size_t j = 0; j < m0->n_tensors; j++) {
            const art_tensor *t = &m0->tensors[j];
            if (!art_find(PRE, t->name))
                die("tensor '%s' is in %s but not in --pretrained %s", t->name, m0->path, PRE->path);
            need(PRE, t->name, t->ndim, t->shape, "the pretrained model");
        }
    }
    if (INIT) {
        if (strcmp(INIT->kind, m0->kind))
            die("--init %s is a '%s' artifact but the models are '%s'", INIT->path, INIT->kind, m0->kind);
        for (size_t j = 0; j < m0->n_tensors; j++) {
            const art_tensor *t = &m0->tensors[j];
            need(INIT, t->name, t->ndim, t->shape, "--init");
        }
    }
    if (needs_fisher()) {
        int block = STAT == MM_STAT_FISHER_BLOCK;
        for (int i = 0; i < O.n; i++) {
            const art_file *f = FISH[i];
            for (size_t j = 0; j < m0->n_tensors; j++) {
                const art_tensor *t = &m0->tensors[j];
                if (block) {
                    int64_t sh[2] = {t->shape[0], t->shape[0]};
                    need(f, t->name, 2, sh, "a Fisher block");
                } else {
                    need(f, t->name, t->ndim, t->shape, "a diagonal Fisher");
                }
            }
        }
    }
    if (needs_gram()) {
        for (int i = 0; i < O.n; i++) {
            const art_file *g = GRAM[i];
            for (size_t j = 0; j < m0->n_tensors; j++) {
                const art_tensor *t = &m0->tensors[j];
                if (t->ndim != 2 || !is_linear_name(t->name)) continue;
                char *an = stat_name(t->name, "input_gram");
                char *gn = stat_name(t->name, "output_grad_gram");
                int has_a = art_find(GRAM[0], an) != NULL;
                if (has_a) {
                    int64_t sa[2] = {t->shape[1], t->shape[1]};
                    need(g, an, 2, sa, "an input Gram");
                }
                if (STAT == MM_STAT_KFAC && has_a) {
                    int has_g = art_find(GRAM[0], gn) != NULL;
                    if (has_g) {
                        int64_t sg[2] = {t->shape[0], t->shape[0]};
                        need(g, gn, 2, sg, "an output-gradient Gram");
                    } else if (art_find(g, gn)) {
                        die("gram %s has '%s' but %s does not: compute all Grams the same way", g->path,
                            gn, GRAM[0]->path);
                    }
                }
                free(an);
                free(gn);
            }
        }
    }
}

/* ------------------------------------------------------------ provenance */

/* meta.inputs.ROLE of artifact a (the key of what it was computed from), or
 * NULL when it does not say: other tools write statistics without it. */
static const char *made_from(const art_file *a, const char *role) {
    const char *k = val_get_str(val_get(a->meta, "inputs"), role, NULL);
    return k && *k ? k : NULL;
}

/* Which input has key k, in words. */
static void whose(const char *k, char *buf, size_t cap) {
    for (int i = 0; i < O.n; i++)
        if (!strcmp(k, MODELS[i]->key)) {
            snprintf(buf, cap, "model %d of --models (%s)", i + 1, MODELS[i]->path);
            return;
        }
    if (!strcmp(k, PRE->key)) snprintf(buf, cap, "--pretrained %s", PRE->path);
    else snprintf(buf, cap, "the model of key %s, none of the inputs", k);
}

/* Statistic number i (of option opt) must have been computed on the input
 * of key `want` (meta.inputs.ROLE), described as want_what. */
static void check_made_from(const char *opt, int i, const art_file *st, const char *role, const char *want,
                            const char *want_what) {
    const char *k = made_from(st, role);
    if (!k || !*want || !strcmp(k, want)) return;
    char who[600];
    whose(k, who, sizeof who);
    die("%s %s (number %d) was computed on %s (meta.inputs.%s) but goes with %s: give one statistic per model, in "
        "--models order, each computed on its model (or --allow-mismatch)", opt, st->path, i + 1, who, role,
        want_what);
}

/* Each statistic is of the model it is paired with, and every model is of
 * the base's config; --allow-mismatch skips this. */
static void check_provenance(void) {
    char what[600], base[600];
    snprintf(base, sizeof base, "--pretrained %s", PRE->path);
    for (int i = 0; i < O.n; i++) {
        snprintf(what, sizeof what, "model %d of --models (%s)", i + 1, MODELS[i]->path);
        if (needs_gram()) check_made_from("--gram", i, GRAM[i], "model", MODELS[i]->key, what);
        if (needs_fisher() && IS_IA3) { /* fisher --model BASE --ia3 A */
            check_made_from("--fisher", i, FISH[i], "ia3", MODELS[i]->key, what);
            check_made_from("--fisher", i, FISH[i], "model", PRE->key, base);
        } else if (needs_fisher()) {
            check_made_from("--fisher", i, FISH[i], "model", MODELS[i]->key, what);
        }
    }
    const mc_val *pc = val_get(PRE->meta, "config");
    for (int i = 0; i < O.n && !IS_IA3 && pc; i++) {
        const mc_val *mc = val_get(MODELS[i]->meta, "config");
        if (!mc) continue;
        t5_config a, b;
        char diff[160] = "the maps differ";
        int same = t5_config_from_val(&a, pc) == 0 && t5_config_from_val(&b, mc) == 0
                       ? !t5_config_diff(&a, &b, diff, sizeof diff)
                       : val_equal(pc, mc);
        if (!same)
            die("model %d of --models (%s) has a meta.config unlike --pretrained %s's (%s: base vs model): it was "
                "not fine-tuned from this base (or --allow-mismatch)", i + 1, MODELS[i]->path, PRE->path, diff);
    }
}

/* ------------------------------------------------------------ tensor kinds */

typedef enum { T_PLAIN = 0, T_LINEAR = 1, T_KFAC = 2, T_BLOCK = 3 } tkind;

static tkind tensor_kind(const art_tensor *t) {
    if (STAT == MM_STAT_FISHER_BLOCK) return T_BLOCK;
    if (!needs_gram() || t->ndim != 2 || !is_linear_name(t->name)) return T_PLAIN;
    char *an = stat_name(t->name, "input_gram");
    char *gn = stat_name(t->name, "output_grad_gram");
    tkind k = T_PLAIN;
    if (art_find(GRAM[0], an)) {
        k = T_LINEAR;
        if (STAT == MM_STAT_KFAC) k = art_find(GRAM[0], gn) ? T_KFAC : T_PLAIN;
    }
    free(an);
    free(gn);
    return k;
}

/* Statistics (Grams, Fisher blocks) are symmetric positive semi-definite
 * within this tolerance (mrg_check_psd): one rule for every method that
 * uses them, checked for every statistic before any merging. */
#define STAT_TOL 1e-3

static void check_stat(const art_file *a, const char *name, int n) {
    float *M = load(a, art_find(a, name));
    if (mrg_check_psd(M, n, STAT_TOL) < 0)
        die("%s '%s' in %s is %s (tolerance %g): the statistic is broken; recompute it", a->kind, name, a->path,
            mc_error(), STAT_TOL);
    free(M);
}

static void check_statistics(void) {
    if (!needs_gram() && STAT != MM_STAT_FISHER_BLOCK) return; /* no Grams, no Fisher blocks */
    const art_file *m0 = MODELS[0];
    mc_progress pr;
    progress_init(&pr, "check statistics", (int64_t)m0->n_tensors, "tensors");
    for (size_t j = 0; j < m0->n_tensors; j++) {
        const art_tensor *t = &m0->tensors[j];
        tkind kind = tensor_kind(t);
        for (int i = 0; i < O.n && kind != T_PLAIN; i++) {
            if (kind == T_BLOCK) {
                check_stat(FISH[i], t->name, (int)t->shape[0]);
                continue;
            }
            char *an = stat_name(t->name, "input_gram");
            check_stat(GRAM[i], an, (int)t->shape[1]);
            free(an);
            if (kind == T_KFAC) {
                char *gn = stat_name(t->name, "output_grad_gram");
                check_stat(GRAM[i], gn, (int)t->shape[0]);
                free(gn);
            }
        }
        progress_update(&pr, (int64_t)j + 1, NULL);
    }
    progress_finish(&pr, NULL);
}

/* The pretrained value of a tensor (IA3: ones). Caller frees. */
static float *load_pre(const art_tensor *t) {
    if (IS_IA3) {
        float *x = mallocCheck(sizeof(float) * (size_t)t->numel);
        for (int64_t i = 0; i < t->numel; i++) x[i] = 1.0f;
        return x;
    }
    return load(PRE, art_find(PRE, t->name));
}

static float *load_model(int i, const char *name) { return load(MODELS[i], art_find(MODELS[i], name)); }

/* ------------------------------------------------------------ --rules */

static void append(char *buf, size_t cap, const char *fmt, const char *a, const char *b);
static const char *readers(int opt);

/* Model i's (0-based; -1: the model-less rules only) value of p for tensor
 * `name`: its rule, else the rule for every model, else dflt. */
static double rule(mr_param p, int i, const char *name, double dflt) {
    double v;
    return mr_value(&RULES, p, i + 1, name, &v) ? v : dflt;
}

/* lambda for tensor `name` */
static float lambda_of(const char *name) { return (float)rule(MR_LAMBDA, -1, name, O.lambda); }

/* Model i's weight for tensor `name` (1 without a rule). */
static float weight_of(int i, const char *name) { return (float)rule(MR_WEIGHT, i, name, 1); }

/* Model i's density for tensor `name` when a rule gives one: 1 and *d. */
static int density_of(int i, const char *name, double *d) {
    if (!mr_value(&RULES, MR_DENSITY, i + 1, name, d)) return 0;
    if (!(*d > 0 && *d <= 1)) die("--rules: density %g for model %d, tensor '%s': not in (0, 1]", *d, i + 1, name);
    return 1;
}

/* Breadcrumbs' top and bottom percentages for model i and tensor `name`:
 * the options, or mergekit's density and gamma of a rule (keep density,
 * drop the top gamma). */
static void crumbs_of(int i, const char *name, double *top, double *bottom) {
    double d, g;
    int has_d = density_of(i, name, &d), has_g = mr_value(&RULES, MR_GAMMA, i + 1, name, &g);
    *top = O.bc_top, *bottom = O.bc_bottom;
    if (!has_d && !has_g) return;
    if (!has_d) d = 1 - (O.bc_top + O.bc_bottom) / 100;
    if (!has_g) g = O.bc_top / 100;
    if (!(g >= 0 && d + g <= 1))
        die("--rules: gamma %g and density %g for model %d, tensor '%s': gamma >= 0 and density + gamma <= 1", g, d,
            i + 1, name);
    *top = 100 * g, *bottom = 100 * (1 - d - g);
}

/* slerp's t for tensor `name` */
static double slerp_t(const char *name) {
    double t = rule(MR_LAMBDA, -1, name, O.lambda);
    if (!(t >= 0 && t <= 1)) die("--rules: lambda %g for tensor '%s' is not in [0, 1]: slerp's t", t, name);
    return t;
}

/* Parse and check --rules against the method (before any input is read). */
static void check_rules(void) {
    if (!opts_given(PROG, "--rules")) return;
    if (!mm_reads(METHOD, MM_OPT_RULES)) die("--rules applies to --method %s only", readers(MM_OPT_RULES));
    if (mr_parse(O.rules, O.n, &RULES) < 0) die("%s", mc_error());
    for (int i = 0; i < RULES.n; i++) {
        mr_param p = RULES.r[i].param;
        if (METHOD->rules & MR_P(p)) continue;
        char takes[64] = "";
        for (int k = 0; k < MR_NPARAMS; k++)
            if (METHOD->rules & MR_P(k)) append(takes, sizeof takes, "%s%s", *takes ? ", " : "", mr_param_names[k]);
        die("--rules %s: --method %s takes no %s rules (it takes: %s)", mr_param_names[p], METHOD->name,
            mr_param_names[p], takes);
    }
    if (!strcmp(METHOD->name, "ties") && mr_has(&RULES, MR_DENSITY, 1))
        die("--rules density: ties keeps the top density of each whole task vector (one threshold per model): "
            "give each model one value, without a filter or gradient (dare_ties and breadcrumbs take them per tensor)");
}

/* Place the models' tensors for the gradients, and evaluate every rule on
 * every tensor once, so that a value out of range stops the run before it
 * starts. */
static void place_rules(void) {
    if (!RULES.n) return;
    const art_file *m0 = MODELS[0];
    const char **names = mallocCheck(sizeof(char *) * (m0->n_tensors + 1));
    for (size_t j = 0; j < m0->n_tensors; j++) names[j] = m0->tensors[j].name;
    mr_set_layers(&RULES, names, (int)m0->n_tensors);
    free(names);
    int normalizes = !strcmp(METHOD->name, "average") || !strcmp(METHOD->name, "fisher");
    for (size_t j = 0; j < m0->n_tensors; j++) {
        const char *name = m0->tensors[j].name;
        double ws = 0, d, top, bottom;
        for (int i = 0; i < O.n; i++) {
            ws += weight_of(i, name);
            density_of(i, name, &d);
            crumbs_of(i, name, &top, &bottom);
        }
        if (normalizes && ws == 0)
            die("--rules: the weights of tensor '%s' sum to 0: their weighted mean is undefined", name);
        if (METHOD->unit_lambda) slerp_t(name);
    }
}

/* The weighted mean sum_i w_i theta_i / sum_i w_i of tensor t (place_rules
 * refused weights that sum to 0). */
static float *weighted_mean(const art_tensor *t, const float *w) {
    long n = t->numel;
    double ws = 0;
    for (int i = 0; i < O.n; i++) ws += w[i];
    float *acc = callocCheck((size_t)n, sizeof(float));
    for (int i = 0; i < O.n; i++) {
        float *x = load_model(i, t->name);
        for (long j = 0; j < n; j++) acc[j] += w[i] * x[j];
        free(x);
    }
    float s = (float)ws;
    for (long j = 0; j < n; j++) acc[j] /= s;
    return acc;
}

/* The mean of the models (weighted where --rules weights differ). */
static float *mean_of_models(const art_tensor *t) {
    long n = t->numel;
    if (RULES.n) {
        float *w = mallocCheck(sizeof(float) * (size_t)O.n);
        int same = 1;
        for (int i = 0; i < O.n; i++) w[i] = weight_of(i, t->name), same &= w[i] == w[0];
        float *r = same ? NULL : weighted_mean(t, w);
        free(w);
        if (r) return r;
    }
    float *acc = callocCheck((size_t)n, sizeof(float));
    for (int i = 0; i < O.n; i++) {
        float *x = load_model(i, t->name);
        for (long j = 0; j < n; j++) acc[j] += x[j];
        free(x);
    }
    float s = 1.0f / O.n;
    for (long j = 0; j < n; j++) acc[j] *= s;
    return acc;
}

/* ------------------------------------------------------------ task vectors */

/* Sparsify the task vector x of model i for tensor t, in place. */
typedef void (*sparsify_fn)(int i, const art_tensor *t, float *x);

/* The task vector of model i for tensor t, sparsified by sp (NULL: whole).
 * Caller frees. */
static float *sparse_tv(int i, const art_tensor *t, const float *pre, sparsify_fn sp) {
    long n = t->numel;
    float *x = load_model(i, t->name);
    for (long j = 0; j < n; j++) x[j] -= pre[j];
    if (sp) sp(i, t, x);
    return x;
}

/* sum_i w_i sp(tau_i) for tensor t, w_i the weights (caller frees). */
static float *sparse_sum(const art_tensor *t, const float *pre, sparsify_fn sp) {
    long n = t->numel;
    float *sum = callocCheck((size_t)n, sizeof(float));
    for (int i = 0; i < O.n; i++) {
        float *x = sparse_tv(i, t, pre, sp);
        float w = weight_of(i, t->name);
        for (long e = 0; e < n; e++) sum[e] += w * x[e];
        free(x);
    }
    return sum;
}

/* The TIES state: each model's global magnitude threshold (ties only; a
 * negative one keeps all), the elected signs of every parameter in tensor
 * order (one byte each, a quarter of a model, so the merge pass reads each
 * model once), how far the merge pass has got in them, and the majority
 * sign that resolves an elected sign of 0. */
static struct {
    float *thr;
    int8_t *signs;
    size_t off;
    int64_t majority;
} TIES;

/* ties: keep |tau| >= the model's threshold */
static void sp_ties(int i, const art_tensor *t, float *x) {
    if (!TIES.thr || TIES.thr[i] < 0) return;
    uint32_t tb = mrg_absbits(TIES.thr[i]);
    for (long j = 0; j < t->numel; j++)
        if (mrg_absbits(x[j]) < tb) x[j] = 0;
}

/* DARE: drop each entry with probability --drop-rate (1 - a density rule),
 * rescale the rest */
static void sp_dare(int i, const art_tensor *t, float *x) {
    uint64_t st = mrg_dare_stream(O.seed, (uint64_t)i, mrg_hash_name(t->name));
    double d, p = density_of(i, t->name, &d) ? 1 - d : O.drop_rate;
    float sc = (float)(1.0 / (1.0 - p));
    for (long j = 0; j < t->numel; j++) x[j] = mrg_dare_keep_at(st, (uint64_t)j, p) ? x[j] * sc : 0.0f;
}

/* breadcrumbs: drop the top and bottom magnitudes of the tensor */
static void sp_breadcrumbs(int i, const art_tensor *t, float *x) {
    double top, bottom;
    crumbs_of(i, t->name, &top, &bottom);
    float *work = mallocCheck(sizeof(float) * (size_t)t->numel);
    mrg_breadcrumbs(x, t->numel, top, bottom, work);
    free(work);
}

/* ------------------------------------------------------------ meta and key */

/* The option row of the table whose key is merge.<name>. */
static const opt_spec *option_row(const char *name) {
    for (const opt_spec *o = PROG->opts; o->name; o++)
        if (o->key && !strncmp(o->key, "merge.", 6) && !strcmp(o->key + 6, name)) return o;
    die("internal: no option row for merge.%s", name);
}

/* meta.<name> = the value of option row o */
static void meta_option(mc_val *m, const char *name, const opt_spec *o) {
    switch (o->kind) {
    case OPT_FLOAT: val_set_float(m, name, *(const double *)o->dst); break;
    case OPT_INT: val_set_int(m, name, (int64_t) * (const long *)o->dst); break;
    case OPT_STR: val_set_str(m, name, *(const char *const *)o->dst); break;
    case OPT_CHOICE: val_set_str(m, name, o->choices[*(const int *)o->dst]); break;
    default: die("internal: merge.%s is not a value option", name);
    }
}

static mc_val *base_meta(void) {
    mc_val *m = val_map();
    val_set_str(m, "stage", "merge");
    val_set_str(m, "method", METHOD->name);
    if (IS_IA3) val_set_str(m, "base", PRE->key);
    const mc_val *cfg = val_get(MODELS[0]->meta, "config");
    if (!cfg) cfg = val_get(PRE->meta, "config");
    if (cfg) val_set(m, "config", val_clone(cfg));
    if (METHOD->lambda) val_set_float(m, "lambda", O.lambda);
    for (int o = 0; o < MM_OPT_COUNT; o++) {
        if (!mm_reads(METHOD, (mm_opt)o)) continue;
        /* --init-lambda is the lambda of --init task_arithmetic only */
        if (o == MM_OPT_INIT_LAMBDA && strcmp(O.init, "task_arithmetic")) continue;
        if (o == MM_OPT_RULES && !RULES.n) continue;
        meta_option(m, mm_option_names[o], option_row(mm_option_names[o]));
    }
    if (STAT == MM_STAT_FISHER_DIAG) val_set_float(m, "fisher_min", FISHER_MIN);
    mc_val *in = val_set_map(m, "inputs");
    val_set_str(in, "pretrained", PRE->key);
    mc_val *a = val_set_array(in, "models");
    for (int i = 0; i < O.n; i++) val_push(a, val_str(MODELS[i]->key));
    if (needs_fisher()) {
        a = val_set_array(in, "fisher");
        for (int i = 0; i < O.n; i++) val_push(a, val_str(FISH[i]->key));
    }
    if (needs_gram()) {
        a = val_set_array(in, "gram");
        for (int i = 0; i < O.n; i++) val_push(a, val_str(GRAM[i]->key));
    }
    if (needs_data()) {
        a = val_set_array(in, "data");
        for (int i = 0; i < O.n; i++) val_push(a, val_str(DATA[i]->key));
    }
    if (INIT) val_set_str(in, "init", INIT->key);
    return m;
}

/* The names of the models among the key's inputs (model.<task>, as the
 * workflow names them): each model's task, meta.tasks (key_role_names:
 * their positions unless every model names one task of its own). */
static void model_roles(char (*role)[48]) {
    const char **names = mallocCheck(sizeof(char *) * (size_t)O.n);
    for (int i = 0; i < O.n; i++) {
        const mc_val *ts = val_get(MODELS[i]->meta, "tasks");
        int one = ts && ts->type == VAL_ARRAY && ts->v.c.n == 1 && ts->v.c.items[0]->type == VAL_STR;
        names[i] = one ? ts->v.c.items[0]->v.str.s : NULL;
    }
    key_role_names(names, O.n, role);
    free(names);
}

static const char *key_of(const art_file *a) { return a->key[0] ? a->key : "00000000000000000000000000000000"; }

/* input `name` = the hex of file a's checksum */
static void key_digest_input(mc_key *k, const char *name, const art_file *a) {
    char hex[33];
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", a->digest[i]);
    key_input(k, name, hex);
}

/* The run's key: the one --key gives, else computed as the workflow
 * computes it (recipes/workflow.mk): merge.method; merge.lambda, the value
 * as given for a method that reads it, else 1; merge.<option> for each
 * option the method reads that was given, as given (--init FILE: "file",
 * and the file as input "init"); the inputs pretrained, model.<role> and
 * <statistic role>.<role> (model_roles, mm_stat_role). */
static void key_with_lambda(char out[33], const char *lambda, int digests) {
    mc_key *k = key_new("merge");
    if (key_binary_file(k, "/proc/self/exe") < 0) die("%s", mc_error());
    key_config(k, "merge.method", METHOD->name);
    key_config(k, "merge.lambda", lambda);
    for (int o = 0; o < MM_OPT_COUNT; o++) {
        if (!mm_reads(METHOD, (mm_opt)o)) continue;
        const opt_spec *row = option_row(mm_option_names[o]);
        if (!opts_given(PROG, row->name)) continue;
        key_config(k, row->key, o == MM_OPT_INIT && INIT ? "file" : opts_text(PROG, row->name));
    }
    key_input(k, "pretrained", key_of(PRE));
    char(*role)[48] = mallocCheck(sizeof *role * (size_t)O.n);
    model_roles(role);
    for (int i = 0; i < O.n; i++) {
        char name[80];
        snprintf(name, sizeof name, "model.%s", role[i]);
        key_input(k, name, key_of(MODELS[i]));
        if (STAT) {
            snprintf(name, sizeof name, "%s.%s", mm_stat_role(STAT), role[i]);
            key_input(k, name, needs_data() ? DATA[i]->key : key_of(needs_fisher() ? FISH[i] : GRAM[i]));
        }
    }
    free(role);
    if (INIT) key_input(k, "init", key_of(INIT));
    if (digests) { /* the files' own checksums too: keys may be empty or repeated */
        key_digest_input(k, "digest.pretrained", PRE);
        for (int i = 0; i < O.n; i++) {
            char name[40];
            snprintf(name, sizeof name, "digest.model.%d", i);
            key_digest_input(k, name, MODELS[i]);
        }
        if (INIT) key_digest_input(k, "digest.init", INIT);
    }
    dev_key(k, NULL, "merge.device", DEV);
    key_digest(k, out);
    key_free(k);
}

static void compute_key(char out[33]) {
    if (O.key) { /* checked by its option row: 32 hex digits */
        memcpy(out, O.key, 33);
        return;
    }
    key_with_lambda(out, METHOD->lambda ? opts_text(PROG, "--lambda") : "1", 0);
}

/* The key of the merged task vector that --vector-cache keeps: the run's
 * key text with merge.lambda "vector", a text no --lambda has, and the
 * checksums of the input files in --models order, so it names every run
 * that differs from this one in lambda alone. (The vector methods read no
 * statistics.) */
static void vector_key(char out[33]) { key_with_lambda(out, "vector", 1); }

/* ------------------------------------------------------------ output */

static out_t open_out(const mc_val *meta, const char *key) {
    out_t o = {.like = MODELS[0]};
    o.w = art_writer_open(O.out, MODELS[0]->kind, key, meta, MODELS[0]->n_tensors);
    if (!o.w) die("%s", mc_error());
    return o;
}

static void close_out(out_t *o) {
    if (art_writer_close(o->w) < 0) die("%s", mc_error());
}

/* ------------------------------------------------------------ kernels
 *
 * Each method's kernel is k_<name>, bound to its row of
 * lib/merge_methods.def (KERNELS below). `begin`, if any, runs once before
 * the first tensor and may add to the output's meta (for streaming methods
 * the output opens after it); `tensor` returns the merged values of one
 * tensor (caller frees). Streaming kernels read one tensor of each input at
 * a time; solver kernels record their CG results in SOLVE.
 *
 * The methods that scale one merged task vector by lambda (pre + lambda *
 * v: task_arithmetic, ties, dare_*, breadcrumbs, iso_c, iso_cts, tsv_m)
 * give `vector` instead of `tensor`: v of one tensor, which lambda does not
 * change, from the base's values `pre`; run_streaming scales and adds it,
 * and with --vector-cache keeps every v (and what `begin` added to the
 * meta) for the other lambdas of a sweep. */
typedef struct {
    void (*begin)(mc_val *meta);
    float *(*tensor)(const art_tensor *t);
    float *(*vector)(const art_tensor *t, const float *pre);
} kernel;

/* ---- average */
static const kernel k_average = {.tensor = mean_of_models};

/* ---- task_arithmetic, dare_linear, breadcrumbs: v = sum_i sp(tau_i) */
static float *task_arithmetic_vector(const art_tensor *t, const float *pre) { return sparse_sum(t, pre, NULL); }
static float *dare_linear_vector(const art_tensor *t, const float *pre) { return sparse_sum(t, pre, sp_dare); }
static float *breadcrumbs_vector(const art_tensor *t, const float *pre) {
    return sparse_sum(t, pre, sp_breadcrumbs);
}
static const kernel k_task_arithmetic = {.vector = task_arithmetic_vector};
static const kernel k_dare_linear = {.vector = dare_linear_vector};
static const kernel k_breadcrumbs = {.vector = breadcrumbs_vector};

/* ---- ties, dare_ties */
/* Global TIES thresholds, one per model (thr[i] = kth smallest |tau_i|; a
 * negative value means keep all). Two histogram passes over every model. */
static float *ties_thresholds(void) {
    const art_file *m0 = MODELS[0];
    float *thr = mallocCheck(sizeof(float) * O.n);
    mrg_select *sel = mallocCheck(sizeof(mrg_select) * O.n);
    for (int i = 0; i < O.n; i++) mrg_select_init(&sel[i]);
    uint64_t d = 0, *rank = mallocCheck(sizeof(uint64_t) * O.n), any = 0;
    for (size_t j = 0; j < m0->n_tensors; j++) d += (uint64_t)m0->tensors[j].numel;
    for (int i = 0; i < O.n; i++) { /* --topk-percent, or the model's density rule */
        double de, topk = density_of(i, "", &de) ? 100 * de : O.topk;
        rank[i] = mrg_ties_rank(d, topk);
        any |= rank[i];
    }
    if (!any) {
        for (int i = 0; i < O.n; i++) thr[i] = -1;
        free(sel), free(rank);
        return thr;
    }
    for (int pass = 1; pass <= 2; pass++) {
        mc_progress pr;
        progress_init(&pr, pass == 1 ? "ties threshold 1/2" : "ties threshold 2/2",
                      (int64_t)m0->n_tensors, "tensors");
        for (size_t j = 0; j < m0->n_tensors; j++) {
            const art_tensor *t = &m0->tensors[j];
            float *pre = load_pre(t);
            for (int i = 0; i < O.n; i++) {
                float *x = load_model(i, t->name);
                for (long e = 0; e < t->numel; e++) x[e] -= pre[e];
                mrg_select_feed(&sel[i], x, t->numel);
                free(x);
            }
            free(pre);
            progress_update(&pr, (int64_t)j + 1, NULL);
        }
        progress_finish(&pr, NULL);
        for (int i = 0; i < O.n; i++)
            if (rank[i]) mrg_select_next(&sel[i], rank[i]);
    }
    for (int i = 0; i < O.n; i++) thr[i] = rank[i] ? sel[i].value : -1;
    free(sel), free(rank);
    return thr;
}

/* Elect the sign of every parameter, sign(sum_i w_i sp(tau_i)) (zeros left 0),
 * into TIES.signs, and the majority sign for the elected zeros. */
static void elect_signs(mc_val *meta, sparsify_fn sp) {
    const art_file *m0 = MODELS[0];
    size_t total = 0;
    for (size_t j = 0; j < m0->n_tensors; j++) total += (size_t)m0->tensors[j].numel;
    TIES.signs = mallocCheck(total);
    int64_t pos = 0, neg = 0;
    mc_progress pr;
    progress_init(&pr, "elect signs", (int64_t)m0->n_tensors, "tensors");
    for (size_t j = 0, off = 0; j < m0->n_tensors; j++) {
        const art_tensor *t = &m0->tensors[j];
        long n = t->numel;
        float *pre = load_pre(t);
        float *sum = sparse_sum(t, pre, sp);
        for (long e = 0; e < n; e++) {
            int sg = (sum[e] > 0) - (sum[e] < 0);
            TIES.signs[off + e] = (int8_t)sg;
            pos += sg > 0, neg += sg < 0;
        }
        off += (size_t)n;
        free(sum);
        free(pre);
        progress_update(&pr, (int64_t)j + 1, NULL);
    }
    progress_finish(&pr, NULL);
    TIES.majority = (pos > neg) - (pos < neg);
    val_set_int(meta, "majority_sign", TIES.majority);
}

/* v = the disjoint mean of the entries of sp(tau_i) that agree with the
 * elected sign, weighted (sum w_i x_i / sum w_i over them). A sign of 0 (all
 * signs tied, majority tied) selects negatives, as
 * torch.where(sign > 0, x > 0, x < 0) does. */
static float *ties_merge(const art_tensor *t, const float *pre, sparsify_fn sp) {
    long n = t->numel;
    float *acc = mallocCheck(sizeof(float) * (size_t)n); /* the elected sign, zeros resolved */
    for (long e = 0; e < n; e++) {
        int8_t sg = TIES.signs[TIES.off + e];
        acc[e] = sg ? (float)sg : (float)TIES.majority;
    }
    TIES.off += (size_t)n;
    float *sum = callocCheck((size_t)n, sizeof(float)), *ws = callocCheck((size_t)n, sizeof(float));
    for (int i = 0; i < O.n; i++) {
        float *x = sparse_tv(i, t, pre, sp);
        float w = weight_of(i, t->name);
        for (long e = 0; e < n; e++) {
            int keep = acc[e] > 0 ? x[e] > 0 : x[e] < 0;
            if (keep) sum[e] += w * x[e], ws[e] += w;
        }
        free(x);
    }
    for (long e = 0; e < n; e++) acc[e] = sum[e] / (ws[e] != 0 ? ws[e] : 1);
    free(ws);
    free(sum);
    return acc;
}

static void ties_begin(mc_val *meta) {
    TIES.thr = ties_thresholds();
    mc_val *a = val_set_array(meta, "ties_thresholds");
    for (int i = 0; i < O.n; i++) val_push(a, val_float(TIES.thr[i]));
    elect_signs(meta, sp_ties);
}
static void dare_ties_begin(mc_val *meta) { elect_signs(meta, sp_dare); }
static float *ties_vector(const art_tensor *t, const float *pre) { return ties_merge(t, pre, sp_ties); }
static float *dare_ties_vector(const art_tensor *t, const float *pre) { return ties_merge(t, pre, sp_dare); }
static const kernel k_ties = {.begin = ties_begin, .vector = ties_vector};
static const kernel k_dare_ties = {.begin = dare_ties_begin, .vector = dare_ties_vector};

/* ---- fisher, cg_fisher: the clamped Fishers' sum F and sum F theta */
static void fisher_sums(const art_tensor *t, float *f_sum, float *ftheta_sum) {
    long n = t->numel;
    for (int i = 0; i < O.n; i++) {
        float *x = load_model(i, t->name);
        float *f = load(FISH[i], art_find(FISH[i], t->name));
        float w = weight_of(i, t->name);
        for (long e = 0; e < n; e++) {
            float fi = w * (f[e] < FISHER_MIN ? FISHER_MIN : f[e]);
            ftheta_sum[e] += fi * x[e];
            f_sum[e] += fi;
        }
        free(x);
        free(f);
    }
}

static float *fisher_tensor(const art_tensor *t) {
    long n = t->numel;
    float *acc = callocCheck((size_t)n, sizeof(float)), *den = callocCheck((size_t)n, sizeof(float));
    fisher_sums(t, den, acc);
    for (long e = 0; e < n; e++) acc[e] /= den[e];
    free(den);
    return acc;
}
static const kernel k_fisher = {.tensor = fisher_tensor};

/* ------------------------------------------------------------ solver kernels */

typedef struct {
    const mrg_kron *P;
} pc_ctx;

static void pc_kron(const void *ctx, const float *r, float *z) {
    const pc_ctx *c = ctx;
    mrg_kron_apply(c->P, r, z);
}

static float *cg_init(const art_tensor *t) {
    long n = t->numel;
    if (INIT) return load(INIT, art_find(INIT, t->name));
    if (!strcmp(O.init, "average")) return mean_of_models(t);
    float *pre = load_pre(t);
    if (!strcmp(O.init, "pretrained")) return pre;
    /* task_arithmetic */
    float *acc = callocCheck((size_t)n, sizeof(float));
    for (int i = 0; i < O.n; i++) {
        float *x = load_model(i, t->name);
        for (long e = 0; e < n; e++) acc[e] += x[e] - pre[e];
        free(x);
    }
    float lam = (float)O.init_lambda;
    for (long e = 0; e < n; e++) acc[e] = pre[e] + lam * acc[e];
    free(pre);
    return acc;
}

/* lambda-scaled statistic `name` of artifact a as f32 (n x n). */
static float *load_scaled(const art_file *a, const char *name, int n) {
    float *M = load(a, art_find(a, name));
    mrg_scale_offdiag(M, n, (float)O.lambda);
    return M;
}

typedef struct {
    double seconds;
    long applies, tensors, iters_min, iters_max, iters_sum;
    double worst_rel;
    const char *worst;
    long breakdowns;
    const char *first_breakdown;
} cg_stats;

/* mrg_op apply of the K-FAC operator on the device (host x and y) */
static void kfac_apply_dev(const mrg_op *op, const float *x, float *y) {
    dev_ops(DEV)->kfac_apply_host(op->ctx, x, y);
}

static void record_cg(mc_val *cgmeta, cg_stats *st, const char *name, const mrg_cg_result *r) {
    mc_val *e = val_set_map(cgmeta, name);
    val_set_int(e, "iterations", r->iterations);
    val_set_float(e, "b_norm", r->b_norm);
    val_set_float(e, "initial_residual", r->initial_residual);
    val_set_float(e, "final_residual", r->final_residual);
    val_set_str(e, "status", r->status == MRG_CG_CONVERGED ? "converged"
                             : r->status == MRG_CG_BREAKDOWN ? "breakdown"
                             : r->status == MRG_CG_STALLED   ? "stalled"
                                                             : "max_iterations");
    if (r->reverted) val_set_int(e, "reverted", 1);
    if (r->status == MRG_CG_BREAKDOWN) {
        if (st->breakdowns == 0) st->first_breakdown = strdupCheck(name);
        st->breakdowns++;
    }
    st->seconds += r->seconds;
    st->applies += r->iterations + 2;
    if (st->tensors == 0 || r->iterations < st->iters_min) st->iters_min = r->iterations;
    if (r->iterations > st->iters_max) st->iters_max = r->iterations;
    st->iters_sum += r->iterations;
    st->tensors++;
    double rel = r->b_norm > 0 ? r->final_residual / r->b_norm : r->final_residual;
    if (rel > st->worst_rel || !st->worst) {
        free((void *)st->worst);
        st->worst_rel = rel;
        st->worst = strdupCheck(name);
    }
}

/* What the solver kernels record for the output's meta. */
static struct {
    mc_val *meta;     /* the output's */
    mc_val *cg;       /* meta.cg: per-tensor CG results (CG methods) */
    mc_val *ridges;   /* meta.ridge: RegMean ridges, made when first needed */
    mc_val *averaged; /* linears averaged for want of statistics */
    cg_stats st;
    double kfac_flops;
} SOLVE;

/* ---- cg_average */
static float *cg_average_tensor(const art_tensor *t) {
    mrg_cg_result cr;
    float *b = mean_of_models(t);
    float *x = cg_init(t);
    mrg_op op;
    mrg_op_identity(&op, t->numel);
    mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
    record_cg(SOLVE.cg, &SOLVE.st, t->name, &cr);
    free(b);
    return x;
}
static const kernel k_cg_average = {.tensor = cg_average_tensor};

/* ---- cg_fisher */
static float *cg_fisher_tensor(const art_tensor *t) {
    long n = t->numel;
    mrg_cg_result cr;
    float *d = callocCheck((size_t)n, sizeof(float));
    float *b = callocCheck((size_t)n, sizeof(float));
    fisher_sums(t, d, b);
    float *x = cg_init(t);
    mrg_op op;
    mrg_op_diag(&op, n, d);
    mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
    record_cg(SOLVE.cg, &SOLVE.st, t->name, &cr);
    free(d);
    free(b);
    return x;
}
static const kernel k_cg_fisher = {.tensor = cg_fisher_tensor};

/* ---- regmean, cg_regmean, mats */

/* A tensor without statistics: the mean of the models (a linear among them
 * is listed in meta.averaged_linears). */
static float *solve_plain(const art_tensor *t) {
    if (!IS_IA3 && t->ndim == 2 && is_linear_name(t->name)) val_push(SOLVE.averaged, val_str(t->name));
    return mean_of_models(t);
}

/* A closed RegMean solve's ridge (mrg_regmean_closed) into meta.ridge. */
static void record_ridge(const char *name, double ridge) {
    if (ridge < 0)
        die("regmean: the summed Gram of '%s' is not positive semi-definite even with a "
            "ridge of its mean diagonal: the Grams are broken", name);
    if (ridge == 0) return;
    if (!SOLVE.ridges) SOLVE.ridges = val_set_map(SOLVE.meta, "ridge");
    val_set_float(SOLVE.ridges, name, ridge);
    fprintf(stderr, "merge: %s: summed Gram of %s is singular; solved with a ridge "
            "%.3g (towards the average of the models)\n", METHOD->name, name, ridge);
}

/* W (rows x k) -> W S with S = sum_i M~_i: RegMean (M = input Gram, rows =
 * out) or an IA3 Fisher block (rows = 1); closed: by Cholesky (regmean),
 * else by CG. */
static float *solve_summed(const art_tensor *t, tkind kind, int closed) {
    long n = t->numel;
    mrg_cg_result cr;
    float *res;
    int rows = kind == T_LINEAR ? (int)t->shape[0] : 1;
    int k = kind == T_LINEAR ? (int)t->shape[1] : (int)t->shape[0];
    char *sn = kind == T_LINEAR ? stat_name(t->name, "input_gram") : strdupCheck(t->name);
    float *S = callocCheck((size_t)k * k, sizeof(float));
    float *b = callocCheck((size_t)n, sizeof(float));
    float *avg = closed ? callocCheck((size_t)n, sizeof(float)) : NULL;
    for (int i = 0; i < O.n; i++) {
        const art_file *st_file = kind == T_LINEAR ? GRAM[i] : FISH[i];
        float *M = load_scaled(st_file, sn, k);
        float *Wi = load_model(i, t->name);
        for (size_t e = 0; e < (size_t)k * k; e++) S[e] += M[e];
        be_gemm(0, 0, rows, k, k, 1.0f, Wi, k, M, k, 1.0f, b, k); /* b += W_i M_i */
        if (avg)
            for (long e = 0; e < n; e++) avg[e] += Wi[e] / O.n;
        free(M);
        free(Wi);
    }
    if (closed) {
        /* (sum M~) W^T = sum M~ W_i^T; a singular system gets a ridge
         * pulling towards the average of the models. */
        record_ridge(t->name, mrg_regmean_closed(rows, k, S, b, avg, avg));
        res = avg;
    } else {
        res = cg_init(t);
        mrg_rmul rc;
        mrg_op op;
        mrg_op_rmul(&op, &rc, rows, k, S);
        mrg_cg(&op, b, res, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
        record_cg(SOLVE.cg, &SOLVE.st, t->name, &cr);
    }
    free(S);
    free(b);
    free(sn);
    return res;
}

/* CG on sum_i G~_i W A~_i = sum_i G~_i W_i A~_i (K-FAC, both Grams). */
static float *solve_kfac(const art_tensor *t) {
    long n = t->numel;
    mrg_cg_result cr;
    int out = (int)t->shape[0], in = (int)t->shape[1];
    char *an = stat_name(t->name, "input_gram");
    char *gn = stat_name(t->name, "output_grad_gram");
    mrg_kfac K;
    mrg_kfac_init(&K, O.n, out, in);
    float **W = mallocCheck(sizeof(float *) * O.n);
    for (int i = 0; i < O.n; i++) {
        float *A = load(GRAM[i], art_find(GRAM[i], an));
        float *G = load(GRAM[i], art_find(GRAM[i], gn));
        mrg_kfac_set(&K, i, A, G, (float)O.lambda);
        free(A);
        free(G);
        W[i] = load_model(i, t->name);
    }
    float *b = mallocCheck(sizeof(float) * (size_t)n);
    mrg_kfac_rhs(&K, (const float *const *)W, b);
    for (int i = 0; i < O.n; i++) free(W[i]);
    free(W);
    float *x = cg_init(t);
    mrg_op op;
    const mc_ops *ops = dev_ops(DEV);
    void *dk = NULL;
    if (ops->kfac_new) { /* the statistics go up once; CG applies on the device */
        dk = ops->kfac_new(K.N, K.out, K.in, K.Acat, K.Gcat);
        op.n = (long)out * in, op.apply = kfac_apply_dev, op.ctx = dk;
    } else {
        mrg_op_kfac(&op, &K);
    }
    if (O.precond) {
        mrg_kron P;
        if (mrg_kron_init(&P, &K) < 0)
            die("mats: the eigensolver failed on the mean Grams of '%s' (non-finite "
                "statistics?): check the gram artifacts or drop --precondition",
                t->name);
        pc_ctx pc = {&P};
        mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, pc_kron, &pc, &cr);
        mrg_kron_free(&P);
    } else {
        mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
    }
    record_cg(SOLVE.cg, &SOLVE.st, t->name, &cr);
    SOLVE.kfac_flops += mrg_kfac_flops(&K) * (cr.iterations + 2);
    if (dk) ops->kfac_free(dk);
    mrg_kfac_free(&K);
    free(b);
    free(an);
    free(gn);
    return x;
}

static float *solve_statistics(const art_tensor *t, int closed) {
    tkind kind = tensor_kind(t);
    if (kind == T_PLAIN) return solve_plain(t);
    if (kind == T_KFAC) return solve_kfac(t);
    return solve_summed(t, kind, closed);
}
static float *regmean_tensor(const art_tensor *t) { return solve_statistics(t, 1); }
static float *cg_statistics_tensor(const art_tensor *t) { return solve_statistics(t, 0); }
static const kernel k_regmean = {.tensor = regmean_tensor};

/* ---- regmean_pp: the whole merge at begin (lib/merge_pp.h), then each
 * tensor from the merged model */
static t5_model *PP;

static void regmean_pp_begin(mc_val *meta) {
    (void)meta;
    PP = t5_load_model(O.pretrained, 0, 0, NULL);
    if (!PP) die("%s", mc_error());
    t5_model **models = mallocCheck(sizeof(t5_model *) * O.n);
    for (int i = 0; i < O.n; i++)
        if (!(models[i] = t5_load_model(O.models[i], 0, 0, NULL))) die("%s", mc_error());
    /* the gram stage's defaults: batches of 16, inputs cut at 512 tokens, targets at 128 */
    mrg_pp_opts po = {.examples = O.examples, .batch = 16, .max_in = 512, .max_tgt = 128,
                      .lambda = (float)O.lambda, .ridge = record_ridge};
    mrg_regmean_pp(PP, models, O.n, DATA, &po);
    for (int i = 0; i < O.n; i++) t5_free(models[i]);
    free(models);
}

static float *regmean_pp_tensor(const art_tensor *t) {
    const float *x = t5_param(PP, t->name, NULL);
    if (!x) die("regmean_pp: the model has no tensor '%s'", t->name);
    float *r = mallocCheck(sizeof(float) * (size_t)t->numel);
    memcpy(r, x, sizeof(float) * (size_t)t->numel);
    return r;
}
static const kernel k_regmean_pp = {.begin = regmean_pp_begin, .tensor = regmean_pp_tensor};
static const kernel k_cg_regmean = {.tensor = cg_statistics_tensor};
static const kernel k_mats = {.tensor = cg_statistics_tensor};

/* ------------------------------------------------------------ task-vector kernels
 *
 * iso_c, iso_cts, tsv_m, model_stock and wudi read the N task vectors of
 * a tensor at once (N tensors in memory; the SVD methods also hold double
 * copies and factors of one), slerp the two models' tensors. */

/* The N task vectors of tensor t (caller frees them with free_vectors). */
static float **task_vectors(const art_tensor *t, const float *pre) {
    float **tau = mallocCheck(sizeof(float *) * O.n);
    for (int i = 0; i < O.n; i++) tau[i] = sparse_tv(i, t, pre, NULL);
    return tau;
}

static void free_vectors(float **v) {
    for (int i = 0; i < O.n; i++) free(v[i]);
    free(v);
}

/* ---- iso_c, iso_cts, tsv_m: v merged from the SVDs for a 2-d tensor other
 * than relative_attention_bias, else the mean of the task vectors */
typedef int (*svd_method_fn)(int N, int m, int n, const float *const *tau, float *res);

static float *svd_method_vector(const art_tensor *t, const float *pre, svd_method_fn fn) {
    long n = t->numel;
    float **tau = task_vectors(t, pre);
    float *merged = callocCheck((size_t)n, sizeof(float));
    if (t->ndim == 2 && !strstr(t->name, "relative_attention_bias")) {
        if (fn(O.n, (int)t->shape[0], (int)t->shape[1], (const float *const *)tau, merged) < 0)
            die("%s: LAPACK's SVD did not converge on the task vectors of '%s': check the models for "
                "extreme values", METHOD->name, t->name);
    } else {
        for (int i = 0; i < O.n; i++)
            for (long e = 0; e < n; e++) merged[e] += tau[i][e] / O.n;
    }
    free_vectors(tau);
    return merged;
}
static int iso_cts_fn(int N, int m, int n, const float *const *tau, float *res) {
    return mrg_iso_cts(N, m, n, tau, O.csf, res);
}
static float *iso_c_vector(const art_tensor *t, const float *pre) { return svd_method_vector(t, pre, mrg_iso_c); }
static float *iso_cts_vector(const art_tensor *t, const float *pre) {
    return svd_method_vector(t, pre, iso_cts_fn);
}
static float *tsv_m_vector(const art_tensor *t, const float *pre) { return svd_method_vector(t, pre, mrg_tsv_m); }
static const kernel k_iso_c = {.vector = iso_c_vector};
static const kernel k_iso_cts = {.vector = iso_cts_vector};
static const kernel k_tsv_m = {.vector = tsv_m_vector};

/* ---- model_stock: pre + t * mean task vector, per tensor */
static float *model_stock_tensor(const art_tensor *t) {
    long n = t->numel;
    float *pre = load_pre(t);
    float **tau = task_vectors(t, pre);
    double ratio, c;
    if (mrg_model_stock_t(O.n, n, (const float *const *)tau, &ratio, &c) < 0)
        die("model_stock: the task vectors of '%s' cancel (mean pairwise cosine %.6g, 1 + (N-1) c <= 1e-6): "
            "its ratio t is undefined; merge these models with another method", t->name, c);
    for (int i = 0; i < O.n; i++)
        for (long e = 0; e < n; e++) pre[e] += (float)(ratio / O.n) * tau[i][e];
    free_vectors(tau);
    return pre;
}
static const kernel k_model_stock = {.tensor = model_stock_tensor};

/* ---- slerp: model 0 to model 1 at t = lambda */
static float *slerp_tensor(const art_tensor *t) {
    float *a = load_model(0, t->name), *b = load_model(1, t->name);
    mrg_slerp(t->numel, slerp_t(t->name), a, b, a);
    free(b);
    return a;
}
static const kernel k_slerp = {.tensor = slerp_tensor};

/* ---- wudi: per linear, CG on X S = B (mrg_wudi_system) for the merged
 * task vector X, from --init (task_arithmetic by default) less pre */
static float *wudi_tensor(const art_tensor *t) {
    if (t->ndim != 2 || !is_linear_name(t->name)) return mean_of_models(t);
    long n = t->numel;
    int out = (int)t->shape[0], in = (int)t->shape[1];
    float *pre = load_pre(t);
    float **tau = task_vectors(t, pre);
    float *S = mallocCheck(sizeof(float) * (size_t)in * in), *work = mallocCheck(sizeof(float) * (size_t)in * in);
    float *b = mallocCheck(sizeof(float) * (size_t)n);
    mrg_wudi_system(O.n, out, in, (const float *const *)tau, S, b, work);
    free(work);
    free_vectors(tau);
    float *x = cg_init(t);
    for (long e = 0; e < n; e++) x[e] -= pre[e];
    mrg_rmul rc;
    mrg_op op;
    mrg_cg_result cr;
    mrg_op_rmul(&op, &rc, out, in, S);
    mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
    record_cg(SOLVE.cg, &SOLVE.st, t->name, &cr);
    for (long e = 0; e < n; e++) x[e] += pre[e];
    free(S);
    free(b);
    free(pre);
    return x;
}
static const kernel k_wudi = {.tensor = wudi_tensor};

/* Each row's kernel, in the table's order. */
static const kernel *const KERNELS[] = {
#define MM(name_, ...) &k_##name_,
#include "merge_methods.def"
#undef MM
};

/* ------------------------------------------------------------ running */

/* --vector-cache DIR: a vector kernel's merged task vectors, kept in
 * DIR/<vector_key>.msgpack, a `task_vector` artifact: one f32 tensor per
 * tensor of the models, named and shaped as theirs, and meta.begin, what
 * the kernel's begin added to the output's meta. The first run of a sweep
 * writes it (FILE.tmp.<pid>, renamed when whole), holding an flock on
 * DIR/<vector_key>.lock meanwhile: a run that finds the entry missing and
 * the lock held (two λ of a sweep side by side, make -j2) waits for it and
 * then reads the entry rather than compute the same vectors at once. The
 * others read it and skip the kernel. The cache enters no key, and an
 * output made from it has the bytes of one made without it
 * (tests/test_merge.sh). */
typedef struct {
    char key[33], *path;
    art_file *hit;  /* the vectors, read */
    art_writer *w;  /* or the vectors, being written (NULL once given up) */
    int lock;       /* the entry's lock while this run writes it, else -1 */
    char *lock_path;
} vcache;

static vcache VC = {.lock = -1}; /* --vector-cache, opened before the merge starts */

#define VC_FIX "(a --vector-cache file): delete it, and the next merge writes it again"

/* The entry's lock, taken when the entry is missing: 1 when the entry
 * appeared while this run waited for another that held it (read it then),
 * 0 when this run holds the lock (or could not open it: then it goes on
 * without, as two runs at once each write the same bytes). */
static int vcache_lock(vcache *c) {
    size_t len = strlen(c->path) + 8;
    c->lock_path = mallocCheck(len);
    snprintf(c->lock_path, len, "%s/%s.lock", O.vector_cache, c->key);
    c->lock = open(c->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (c->lock < 0) return 0;
    if (flock(c->lock, LOCK_EX | LOCK_NB) < 0) {
        fprintf(stderr, "merge: waiting for another merge that writes the task vectors %s\n", c->path);
        while (flock(c->lock, LOCK_EX) < 0 && errno == EINTR) {}
    }
    if (access(c->path, F_OK) != 0) return 0;
    close(c->lock);
    c->lock = -1;
    return 1;
}

/* done writing (or given up): the lock file goes, as run-stage.sh's do; a
 * run that waits on it then finds the entry, or (given up) writes it */
static void vcache_unlock(vcache *c) {
    if (c->lock >= 0) {
        unlink(c->lock_path);
        close(c->lock);
    }
    c->lock = -1;
    free(c->lock_path);
    c->lock_path = NULL;
}

/* The cache entry of this run, read and checked whole if it is there. */
static void vcache_open(vcache *c) {
    vector_key(c->key);
    size_t len = strlen(O.vector_cache) + 48;
    c->path = mallocCheck(len);
    c->lock = -1;
    snprintf(c->path, len, "%s/%s.msgpack", O.vector_cache, c->key);
    if (access(c->path, F_OK) != 0) {
        if (mc_mkdir_parents(c->path) < 0) die("--vector-cache %s: %s", O.vector_cache, mc_error());
        if (!vcache_lock(c)) return;
    }
    if (!(c->hit = art_open(c->path, "task_vector"))) die("%s " VC_FIX, mc_error());
    opt_input in = {"--vector-cache", c->path, 0};
    if (opts_check_output("-o", O.out, 0, &in, 1) < 0) die("%s", mc_error());
    const mc_val *b = val_get(c->hit->meta, "begin");
    if (strcmp(c->hit->key, c->key) || !b || b->type != VAL_MAP || c->hit->n_tensors != MODELS[0]->n_tensors)
        die("%s: not the task vectors of this merge (its key, meta.begin or tensor count) " VC_FIX, c->path);
    for (size_t j = 0; j < MODELS[0]->n_tensors; j++) {
        const art_tensor *t = &MODELS[0]->tensors[j], *v = art_find(c->hit, t->name);
        if (!v || v->dtype != ART_F32 || v->ndim != t->ndim ||
            memcmp(v->shape, t->shape, sizeof(int64_t) * (size_t)t->ndim))
            die("%s: no f32 tensor '%s' shaped as the models' " VC_FIX, c->path, t->name);
        for (int64_t e = 0; e < v->numel; e++) {
            float x;
            memcpy(&x, v->data + sizeof(float) * (size_t)e, sizeof x);
            if (!isfinite(x)) die("%s: tensor '%s' element %lld is not finite " VC_FIX, c->path, t->name, (long long)e);
        }
    }
}

/* v of tensor t from the cache (checked by vcache_open) */
static float *vcache_tensor(const vcache *c, const art_tensor *t) {
    const art_tensor *v = art_find(c->hit, t->name);
    float *x = mallocCheck(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
    memcpy(x, v->data, sizeof(float) * (size_t)t->numel);
    return x;
}

/* a write of the cache failed (mc_error() says why): the merge goes on
 * without it */
static void vcache_give_up(vcache *c) {
    fprintf(stderr, "merge: warning: the task vectors are not kept in %s: %s\n", c->path, mc_error());
    if (c->w) art_writer_abort(c->w);
    c->w = NULL;
}

/* pre + lambda * v of tensor t, v from the kernel or the cache (kept there
 * when the cache is being written) */
static float *scaled_vector(const kernel *kern, vcache *c, const art_tensor *t) {
    float *pre = load_pre(t);
    float *v = c->hit ? vcache_tensor(c, t) : kern->vector(t, pre);
    if (c->w && art_writer_tensor(c->w, t->name, ART_F32, t->ndim, t->shape, v) < 0) vcache_give_up(c);
    float lam = lambda_of(t->name);
    for (int64_t e = 0; e < t->numel; e++) pre[e] = pre[e] + lam * v[e];
    free(v);
    return pre;
}

/* Streaming methods: the output opens after the kernel's begin, and each
 * tensor is written as soon as it is merged. */
static void run_streaming(const kernel *kern, const char *key) {
    const art_file *m0 = MODELS[0];
    mc_val *meta = base_meta();
    vcache *c = &VC;
    if (kern->vector) {
        /* begin's entries come last in the meta, from the cache or from begin */
        mc_val *added = c->hit ? val_clone(val_get(c->hit->meta, "begin")) : val_map();
        if (!c->hit && kern->begin) kern->begin(added);
        for (size_t i = 0; i < added->v.c.n; i++) val_set(meta, added->v.c.keys[i], val_clone(added->v.c.items[i]));
        if (O.vector_cache && !c->hit) {
            mc_val *vm = val_map();
            val_set_str(vm, "stage", "merge");
            val_set_str(vm, "method", METHOD->name);
            val_set(vm, "begin", added);
            added = NULL;
            if (!(c->w = art_writer_open(c->path, "task_vector", c->key, vm, m0->n_tensors))) vcache_give_up(c);
            val_free(vm);
        }
        val_free(added);
        if (c->hit) fprintf(stderr, "merge: the task vectors of every lambda, cached: %s\n", c->path);
    } else if (kern->begin) {
        kern->begin(meta);
    }
    out_t o = open_out(meta, key);
    mc_progress pr;
    progress_init(&pr, METHOD->name, (int64_t)m0->n_tensors, "tensors");
    for (size_t j = 0; j < m0->n_tensors; j++) {
        const art_tensor *t = &m0->tensors[j];
        float *x = kern->vector ? scaled_vector(kern, c, t) : kern->tensor(t);
        out_tensor(&o, t, x);
        free(x);
        progress_update(&pr, (int64_t)j + 1, NULL);
    }
    progress_finish(&pr, NULL);
    if (c->w) {
        int rc = art_writer_close(c->w); /* frees the writer either way */
        c->w = NULL;
        if (rc < 0) vcache_give_up(c);
        else fprintf(stderr, "merge: the task vectors kept for the other lambdas: %s\n", c->path);
    }
    vcache_unlock(c);
    if (c->hit) art_close(c->hit);
    free(c->path);
    close_out(&o);
    free(TIES.thr);
    free(TIES.signs);
    val_free(meta);
}

/* Solver methods hold the merged model: the per-tensor results go into the
 * meta, which the writer puts before the tensors. */
static void run_solvers(const kernel *kern, const char *key) {
    const art_file *m0 = MODELS[0];
    size_t nt = m0->n_tensors;
    float **res = callocCheck(nt, sizeof(float *));
    mc_val *meta = base_meta();
    SOLVE.meta = meta;
    if (kern->begin) kern->begin(meta);
    SOLVE.cg = mm_is_cg(METHOD) ? val_set_map(meta, "cg") : NULL;
    SOLVE.averaged = val_array();
    mc_progress pr;
    progress_init(&pr, METHOD->name, (int64_t)nt, "tensors");
    for (size_t j = 0; j < nt; j++) {
        res[j] = kern->tensor(&m0->tensors[j]);
        progress_update(&pr, (int64_t)j + 1, NULL);
    }
    progress_finish(&pr, NULL);
    const cg_stats st = SOLVE.st;
    if (SOLVE.averaged->v.c.n) {
        val_set(meta, "averaged_linears", SOLVE.averaged);
        fprintf(stderr, "merge: %zu linear(s) without the statistics for %s were averaged (first: %s)\n",
                SOLVE.averaged->v.c.n, METHOD->name, SOLVE.averaged->v.c.items[0]->v.str.s);
    } else {
        val_free(SOLVE.averaged);
    }
    if (st.tensors) {
        /* One "iteration" of the whole model: every tensor's CG takes one
         * step; each tensor also spends two extra applications (initial
         * and final residual), counted in `applies`. */
        double per_iter = st.seconds / ((double)st.applies / st.tensors);
        mc_val *sm = val_set_map(meta, "cg_summary");
        val_set_int(sm, "tensors", st.tensors);
        val_set_int(sm, "iterations_min", st.iters_min);
        val_set_int(sm, "iterations_max", st.iters_max);
        /* no timings in meta: same inputs give the same bytes */
        val_set_str(sm, "worst_tensor", st.worst);
        val_set_float(sm, "worst_relative_residual", st.worst_rel);
        fprintf(stderr,
                "merge: cg: %ld tensors, iterations %ld..%ld (mean %.1f), worst relative residual "
                "%.3g (%s), %.2fs in CG, %.4fs per iteration%s",
                st.tensors, st.iters_min, st.iters_max, (double)st.iters_sum / st.tensors, st.worst_rel,
                st.worst, st.seconds, per_iter, SOLVE.kfac_flops > 0 ? "" : "\n");
        if (SOLVE.kfac_flops > 0) fprintf(stderr, ", K-FAC %.1f GFLOP/s\n", SOLVE.kfac_flops / st.seconds * 1e-9);
        if (st.breakdowns) {
            val_set_int(sm, "breakdowns", st.breakdowns);
            fprintf(stderr,
                    "merge: warning: CG broke down on %ld of %ld tensors (first: %s; each keeps its "
                    "last iterate, or its initial point where that was better): the statistics are "
                    "nearly singular; each tensor's residuals are in the output's meta.cg\n",
                    st.breakdowns, st.tensors, st.first_breakdown);
        }
        free((void *)st.worst);
        free((void *)st.first_breakdown);
    }
    out_t o = open_out(meta, key);
    for (size_t j = 0; j < nt; j++) {
        out_tensor(&o, &m0->tensors[j], res[j]);
        free(res[j]);
    }
    close_out(&o);
    free(res);
    val_free(meta);
}
/* ------------------------------------------------------------ main */

/* Append to buf (cap bytes, NUL-terminated) what fmt says; truncates. */
static void append(char *buf, size_t cap, const char *fmt, const char *a, const char *b) {
    size_t n = strlen(buf);
    if (n + 1 < cap) snprintf(buf + n, cap - n, fmt, a, b);
}

/* The names of the methods that read option opt (-1: --lambda), space
 * separated, from the table. Owned by a static buffer per opt. */
static const char *readers(int opt) {
    static char buf[MM_OPT_COUNT + 1][512];
    char *b = buf[opt + 1];
    b[0] = 0;
    for (const mm_method *m = mm_methods; m->name; m++)
        if (opt < 0 ? m->lambda : mm_reads(m, (mm_opt)opt)) append(b, sizeof buf[0], "%s%s", *b ? " " : "", m->name);
    return b;
}

/* The help of an option row: what, and the methods that read it. */
static const char *help_of(const char *what, int opt) {
    static char buf[MM_OPT_COUNT + 1][640];
    snprintf(buf[opt + 1], sizeof buf[0], "%s (read by: %s)", what, readers(opt));
    return buf[opt + 1];
}

/* The help of --fisher / --gram: per artifact kind, the methods that take
 * it there (with the mode, where the method takes it in one mode only). */
static const char *help_stats(const char *opt) {
    static char buf[3][512];
    char *b = buf[!strcmp(opt, "--fisher") ? 0 : !strcmp(opt, "--gram") ? 1 : 2];
    snprintf(b, sizeof buf[0], "one per model, in --models order:");
    const char *kind_done = "";
    for (int s = MM_STAT_FISHER_DIAG; s <= MM_STAT_DATA; s++) {
        const char *kind = mm_stat_kind((mm_stat)s);
        if (strcmp(mm_stat_option((mm_stat)s), opt) || !strcmp(kind, kind_done)) continue;
        kind_done = kind;
        append(b, sizeof buf[0], "%s %s for", b[strlen(b) - 1] == ':' ? "" : ";", kind);
        for (const mm_method *m = mm_methods; m->name; m++) {
            int in[MM_MODES], all = 1, any = 0;
            for (int d = 0; d < MM_MODES; d++) {
                in[d] = (m->modes >> d & 1) && m->stat[d] && !strcmp(mm_stat_kind(m->stat[d]), kind);
                any |= in[d];
                if (m->modes >> d & 1) all &= in[d];
            }
            if (!any) continue;
            append(b, sizeof buf[0], " %s%s", m->name, "");
            for (int d = 0; d < MM_MODES && !all; d++)
                if (in[d]) append(b, sizeof buf[0], " (%s)%s", mm_mode_name((mm_mode)d), "");
        }
    }
    return b;
}

/* The end of --help: every method and what it does. */
static const char *about_methods(void) {
    static char buf[4096];
    snprintf(buf, sizeof buf, "methods (merge --list-methods: with what each reads and needs; docs/merging.md):");
    for (const mm_method *m = mm_methods; m->name; m++) {
        char line[256];
        snprintf(line, sizeof line, "\n  %-26s", m->name);
        append(buf, sizeof buf, "%s%s", line, m->about);
    }
    return buf;
}

/* Open --data: one tokens artifact per model, its own task's examples. */
static tok_set **open_data(void) {
    if (!O.nd) die("--method %s needs --data (one tokens artifact per model: its task's training examples)",
                   METHOD->name);
    if (O.nd != O.n) die("--data lists %d files but --models %d: give one per model", O.nd, O.n);
    tok_set **d = mallocCheck(sizeof(tok_set *) * O.n);
    for (int i = 0; i < O.n; i++) {
        if (!(d[i] = tok_load(O.data[i], 1))) die("%s", mc_error());
        if (d[i]->n < 1) die("--data %s has no examples (an empty split?)", O.data[i]);
    }
    t5_config c;
    if (t5_config_from_val(&c, val_get(PRE->meta, "config")) < 0)
        die("--pretrained %s: %s (regmean_pp runs the model)", PRE->path, mc_error());
    for (int i = 0; i < O.n; i++)
        if (d[i]->max_id >= c.vocab_size)
            die("--data %s: token id %d is outside the models' vocabulary of %d", O.data[i], d[i]->max_id,
                c.vocab_size);
    return d;
}

/* Open the statistic artifacts named by option opt (one per model). */
static art_file **open_stats(const char *opt, char **paths, int n) {
    if (!n) die("--method %s needs %s (one %s artifact per model)", METHOD->name, opt, mm_stat_kind(STAT));
    if (n != O.n) die("%s lists %d files but --models %d: give one per model", opt, n, O.n);
    art_file **a = mallocCheck(sizeof(art_file *) * O.n);
    for (int i = 0; i < O.n; i++) {
        a[i] = open_or_die(paths[i], mm_stat_kind(STAT));
        release_all(a[i]);
    }
    return a;
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--list-methods")) continue;
        if (argc != 2) die("--list-methods takes no other argument");
        for (const mm_method *m = mm_methods; m->name; m++) mm_print_row(m, stdout);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    int method = -1, precond, list = 0;
    opt_list models = {0}, fishers = {0}, grams = {0}, data = {0};
    static const char *const preconds[] = {"none", "kron", NULL};
    opt_spec rows[] = {
        {.name = "--method", .kind = OPT_CHOICE, .dst = &method, .arg = "M", .choices = mm_names,
         .flags = OPT_REQUIRED, .key = "merge.method", .help = "the merge method (below)"},
        {.name = "--list-methods", .kind = OPT_FLAG, .dst = &list,
         .help = "print every method with what it reads and needs, one per line (docs/merging.md), and exit"},
        {.name = "--pretrained", .kind = OPT_STR, .dst = &O.pretrained, .arg = "PRE.msgpack",
         .flags = OPT_REQUIRED | OPT_INPUT, .help = "the base model the inputs were trained from"},
        {.name = "--models", .kind = OPT_LIST, .dst = &models, .arg = "A.msgpack,B.msgpack,...",
         .flags = OPT_REQUIRED | OPT_INPUT, .help = "the model or ia3 artifacts to merge"},
        {.name = "--fisher", .kind = OPT_LIST, .dst = &fishers, .arg = "FA,FB,...", .flags = OPT_INPUT,
         .help = help_stats("--fisher")},
        {.name = "--gram", .kind = OPT_LIST, .dst = &grams, .arg = "GA,GB,...", .flags = OPT_INPUT,
         .help = help_stats("--gram")},
        {.name = "--data", .kind = OPT_LIST, .dst = &data, .arg = "TA,TB,...", .flags = OPT_INPUT,
         .help = help_stats("--data")},
        {.name = "--lambda", .kind = OPT_FLOAT, .dst = &O.lambda, .arg = "X", .def = "1", .key = "merge.lambda",
         .help = help_of("task-vector scale, off-diagonal scale of Grams / Fisher blocks, or slerp's t in [0, 1]", -1)},
        {.name = "--topk-percent", .kind = OPT_FLOAT, .dst = &O.topk, .arg = "P", .lo = 0, .hi = 100, .def = "20",
         .key = "merge.topk_percent",
         .help = help_of("keep the top P% of each task vector by magnitude", MM_OPT_TOPK_PERCENT)},
        {.name = "--iterations", .kind = OPT_INT, .dst = &O.iterations, .arg = "N", .lo = 0, .hi = 1e8,
         .def = "100", .key = "merge.iterations", .help = help_of("CG iterations per tensor at most", MM_OPT_ITERATIONS)},
        {.name = "--init", .kind = OPT_STR, .dst = &O.init, .arg = "I", .def = "average", .key = "merge.init",
         .help = help_of("CG start: average | pretrained | task_arithmetic | FILE (an artifact like the models); "
                         "wudi starts from task_arithmetic unless given",
                         MM_OPT_INIT)},
        {.name = "--init-lambda", .kind = OPT_FLOAT, .dst = &O.init_lambda, .arg = "X", .def = "1",
         .key = "merge.init_lambda", .help = help_of("lambda of --init task_arithmetic", MM_OPT_INIT_LAMBDA)},
        {.name = "--cg-tol", .kind = OPT_FLOAT, .dst = &O.cg_tol, .arg = "R", .lo = 0, .hi = 1, .def = "1e-5",
         .key = "merge.cg_tol",
         .help = help_of("CG stops once ||r|| <= R ||b|| (relative); 0 = never early", MM_OPT_CG_TOL)},
        {.name = "--precondition", .kind = OPT_CHOICE, .dst = &precond, .arg = "kron|none", .choices = preconds,
         .def = "none", .key = "merge.precondition",
         .help = help_of("Kronecker preconditioner of the mean Grams (full models)", MM_OPT_PRECONDITION)},
        {.name = "--drop-rate", .kind = OPT_FLOAT, .dst = &O.drop_rate, .arg = "P", .lo = 0, .hi = 1,
         .flags = OPT_OPEN_HI, .def = "0.9", .key = "merge.drop_rate",
         .help = help_of("DARE drop probability", MM_OPT_DROP_RATE)},
        {.name = "--seed", .kind = OPT_INT, .dst = &O.seed, .arg = "S", .lo = 0, .hi = 1099511627776.0, .def = "0",
         .key = "merge.seed", .help = help_of("DARE random seed", MM_OPT_SEED)},
        {.name = "--breadcrumbs-top", .kind = OPT_FLOAT, .dst = &O.bc_top, .arg = "T", .lo = 0, .hi = 100,
         .def = "1", .key = "merge.breadcrumbs_top",
         .help = help_of("drop the top T% magnitudes per tensor", MM_OPT_BREADCRUMBS_TOP)},
        {.name = "--breadcrumbs-bottom", .kind = OPT_FLOAT, .dst = &O.bc_bottom, .arg = "B", .lo = 0, .hi = 100,
         .def = "90", .key = "merge.breadcrumbs_bottom",
         .help = help_of("drop the bottom B% magnitudes per tensor", MM_OPT_BREADCRUMBS_BOTTOM)},
        {.name = "--common-space-fraction", .kind = OPT_FLOAT, .dst = &O.csf, .arg = "F", .lo = 0, .hi = 1,
         .def = "0.8", .key = "merge.common_space_fraction",
         .help = help_of("Iso-CTS: the share of the directions taken from the common subspace",
                         MM_OPT_COMMON_SPACE_FRACTION)},
        {.name = "--examples", .kind = OPT_INT, .dst = &O.examples, .arg = "N", .lo = 1, .hi = 1e12, .def = "256",
         .key = "merge.examples",
         .help = help_of("the first N examples of each --data set measure the Grams", MM_OPT_EXAMPLES)},
        {.name = "--rules", .kind = OPT_STR, .dst = &O.rules, .arg = "R[/R...]", .key = "merge.rules",
         .help = help_of("per-model and per-tensor values, mergekit's weights, layer gradients and filters: "
                         "R = PARAM[.MODEL][@FILTER]:V[,V...] (docs/merging.md)", MM_OPT_RULES)},
        {.name = "--vector-cache", .kind = OPT_STR, .dst = &O.vector_cache, .arg = "DIR",
         .help = "keep the merged task vector of task_arithmetic, ties, dare_*, breadcrumbs, iso_c, iso_cts or "
                 "tsv_m in DIR, keyed without --lambda, and take it from there on the next lambda of a sweep; "
                 "it enters no key and changes no byte; other methods ignore it"},
        {.name = "--threads", .kind = OPT_INT, .dst = &O.threads, .arg = "N", .lo = 0, .hi = 1024,
         .help = "threads (0: MATS_THREADS, else 2, as every stage)"},
        {.name = "--allow-mismatch", .kind = OPT_FLAG, .dst = &O.allow_mismatch,
         .help = "merge even when a statistic's meta.inputs names another model, or a model's meta.config "
                 "differs from --pretrained's"},
        OPT_ROW_DEVICE("mats on full models: the K-FAC operator on the GPU (make GPU=1); default: DEVICE or cpu"),
        OPT_ROW_KEY(&O.key),
        OPT_ROW_OUT(&O.out, "OUT.msgpack", "the merged model or ia3 artifact"),
        {0}};
    const opt_prog prog = {.name = "merge", .opts = rows, .about = about_methods()};
    PROG = &prog;
    opts_parse(&prog, argc - 1, argv + 1);
    METHOD = &mm_methods[method];
    O.precond = precond ? "kron" : NULL;
    if (O.precond && !mm_reads(METHOD, MM_OPT_PRECONDITION))
        die("--precondition kron applies to --method %s only", readers(MM_OPT_PRECONDITION));
    if (O.threads > 0) be_init((int)O.threads);
    else be_init_default(2);
    DEV = dev_resolve(NULL, NULL);

    O.models = models.v, O.n = models.n;
    int lo = METHOD->min_models > 1 ? METHOD->min_models : 1;
    if (O.n < lo || (METHOD->max_models && O.n > METHOD->max_models))
        die("--method %s merges %s%d models but --models lists %d (merge --list-methods: models=)", METHOD->name,
            METHOD->max_models == lo ? "exactly " : "at least ", lo, O.n);
    if (METHOD->unit_lambda && !(O.lambda >= 0 && O.lambda <= 1))
        die("--lambda %g is not in [0, 1]: it is the interpolation t of --method %s", O.lambda, METHOD->name);
    /* a CG method's own start when --init is not given (wudi: task_arithmetic) */
    if (mm_reads(METHOD, MM_OPT_INIT) && METHOD->init && !opts_given(PROG, "--init")) O.init = METHOD->init;
    check_rules();
    O.fishers = fishers.v, O.nf = fishers.n;
    O.grams = grams.v, O.ng = grams.n;
    O.data = data.v, O.nd = data.n;

    if (mm_reads(METHOD, MM_OPT_INIT) && strcmp(O.init, "average") && strcmp(O.init, "pretrained") &&
        strcmp(O.init, "task_arithmetic")) {
        if (!(INIT = art_open(O.init, NULL)))
            die("--init '%s' is not average, pretrained or task_arithmetic, and not an artifact (%s)", O.init,
                mc_error());
        opt_input in = {"--init", O.init, 0};
        if (opts_check_output("-o", O.out, 0, &in, 1) < 0) die("%s", mc_error());
        release_all(INIT);
    }
    PRE = open_or_die(O.pretrained, "model");
    release_all(PRE);
    MODELS = mallocCheck(sizeof(art_file *) * O.n);
    for (int i = 0; i < O.n; i++) {
        MODELS[i] = open_or_die(O.models[i], NULL);
        release_all(MODELS[i]);
    }
    IS_IA3 = !strcmp(MODELS[0]->kind, "ia3");
    mm_mode mode = IS_IA3 ? MM_MODE_IA3 : MM_MODE_FULL;
    if (O.precond && IS_IA3) die("--precondition kron applies to full-model mats (K-FAC), not ia3");
    if (!(METHOD->modes >> mode & 1))
        die("--method %s does not merge %s artifacts such as %s (merge --list-methods: the modes of each method)",
            METHOD->name, MODELS[0]->kind, O.models[0]);
    STAT = METHOD->stat[mode];
    if (needs_fisher()) FISH = open_stats("--fisher", O.fishers, O.nf);
    if (needs_gram()) GRAM = open_stats("--gram", O.grams, O.ng);
    if (needs_data()) DATA = open_data();
    check_inputs();
    place_rules();
    if (!O.allow_mismatch) check_provenance();
    check_statistics();
    char key[33];
    compute_key(key);

    const kernel *kern = KERNELS[METHOD - mm_methods];
    if (kern->vector && O.vector_cache) vcache_open(&VC);
    double t0 = mc_now();
    fprintf(stderr, "merge: %s of %d %s artifacts -> %s\n", METHOD->name, O.n, MODELS[0]->kind, O.out);
    if (METHOD->run == MM_STREAM) run_streaming(kern, key);
    else run_solvers(kern, key);
    fprintf(stderr, "merge: done in %.2fs, peak RSS %.1f MiB, key %s\n", mc_now() - t0,
            mc_peak_rss() / 1048576.0, key);

    art_close(PRE);
    for (int i = 0; i < O.n; i++) {
        art_close(MODELS[i]);
        if (FISH) art_close(FISH[i]);
        if (GRAM) art_close(GRAM[i]);
        if (DATA) tok_free(DATA[i]);
        free(O.models[i]);
    }
    if (INIT) art_close(INIT);
    return 0;
}
