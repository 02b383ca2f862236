/* merge.c - merge fine-tuned models (full `model` artifacts or `ia3`
 * artifacts) into one, by any method of the MaTS paper plus DARE and
 * breadcrumbs. Command line: DESIGN.md section 6; `merge --help` lists all.
 *
 * Memory: methods that need no statistics beyond the weights (average,
 * task_arithmetic, ties, dare_*, breadcrumbs, fisher) stream tensor by
 * tensor: every input is opened with art_open (a file mapping), one tensor
 * at a time is converted to f32, the pages of a tensor already used are
 * handed back to the kernel (madvise), and the output goes through the
 * streaming writer. TIES finds each task vector's global magnitude
 * threshold with two histogram passes (mrg_select) instead of holding the
 * task vectors, and keeps the elected signs as one byte per parameter (a
 * quarter of a model) so the merge pass reads each model once. CG methods and regmean keep the merged model in memory
 * because their per-tensor residuals go into the output's meta, which the
 * writer puts before the tensors.
 *
 * Which tensors are linears (full models): a tensor X.weight with 2 dims
 * whose Gram artifacts carry X.input_gram, except shared.weight (the
 * embedding) and any relative_attention_bias. regmean / cg_regmean solve
 * every linear (lm_head included); mats solves every linear that also has
 * X.output_grad_gram (all but lm_head) and averages the rest.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "art.h"
#include "backend.h"
#include "common.h"
#include "key.h"
#include "merge.h"
#include "device.h"
#ifdef MC_GPU
#include "gpu.h"
#endif
#include "opts.h"
#include "progress.h"
#include "t5.h"
#include "val.h"

typedef enum {
    M_AVERAGE = 0,
    M_TASK_ARITHMETIC = 1,
    M_TIES = 2,
    M_FISHER = 3,
    M_REGMEAN = 4,
    M_CG_AVERAGE = 5,
    M_CG_FISHER = 6,
    M_CG_REGMEAN = 7,
    M_MATS = 8,
    M_DARE_TIES = 9,
    M_DARE_LINEAR = 10,
    M_BREADCRUMBS = 11,
    M_COUNT
} method_t;

static const char *const method_names[M_COUNT + 1] = {
    "average", "task_arithmetic", "ties",   "fisher",    "regmean",     "cg_average",
    "cg_fisher", "cg_regmean",    "mats",   "dare_ties", "dare_linear", "breadcrumbs",
};

#define FISHER_MIN 1e-8f

typedef struct {
    method_t method;
    const char *pretrained, *out, *init, *key, *precond;
    char **models, **fishers, **grams;
    int n, nf, ng;
    double lambda, topk, init_lambda, cg_tol, drop_rate, bc_top, bc_bottom;
    long iterations, threads, seed;
    int allow_mismatch;
} opts_t;

static opts_t O; /* the defaults: the option table in main */

/* Inputs. */
static art_file *PRE, **MODELS, **FISH, **GRAM, *INIT;
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

static int uses_lambda(method_t m) {
    return m == M_TASK_ARITHMETIC || m == M_TIES || m == M_DARE_TIES || m == M_DARE_LINEAR ||
           m == M_BREADCRUMBS || m == M_REGMEAN || m == M_CG_REGMEAN || m == M_MATS;
}
static int is_cg(method_t m) {
    return m == M_CG_AVERAGE || m == M_CG_FISHER || m == M_CG_REGMEAN || m == M_MATS;
}
static int needs_fisher(method_t m) {
    return m == M_FISHER || m == M_CG_FISHER || (m == M_MATS && IS_IA3);
}
static int needs_gram(method_t m) {
    return m == M_REGMEAN || m == M_CG_REGMEAN || (m == M_MATS && !IS_IA3);
}

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
            if (!lin || lin->ndim != 2 || lin->shape[0] != t->shape[0])
                die("ia3 vector '%s' [%lld] has no matching linear '%s' with %lld outputs in %s",
                    t->name, (long long)t->shape[0], w, (long long)t->shape[0], PRE->path);
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
    if (needs_fisher(O.method)) {
        int block = O.method == M_MATS;
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
    if (needs_gram(O.method)) {
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
                if (O.method == M_MATS && has_a) {
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
        if (needs_gram(O.method)) check_made_from("--gram", i, GRAM[i], "model", MODELS[i]->key, what);
        if (needs_fisher(O.method) && IS_IA3) { /* fisher --model BASE --ia3 A */
            check_made_from("--fisher", i, FISH[i], "ia3", MODELS[i]->key, what);
            check_made_from("--fisher", i, FISH[i], "model", PRE->key, base);
        } else if (needs_fisher(O.method)) {
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
    if (IS_IA3) return O.method == M_MATS ? T_BLOCK : T_PLAIN;
    if (!(O.method == M_REGMEAN || O.method == M_CG_REGMEAN || O.method == M_MATS)) return T_PLAIN;
    if (t->ndim != 2 || !is_linear_name(t->name)) return T_PLAIN;
    char *an = stat_name(t->name, "input_gram");
    char *gn = stat_name(t->name, "output_grad_gram");
    tkind k = T_PLAIN;
    if (art_find(GRAM[0], an)) {
        k = T_LINEAR;
        if (O.method == M_MATS) k = art_find(GRAM[0], gn) ? T_KFAC : T_PLAIN;
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
    if (!needs_gram(O.method) && !(IS_IA3 && O.method == M_MATS)) return; /* no Grams, no Fisher blocks */
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

static float *mean_of_models(const art_tensor *t) {
    long n = t->numel;
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

/* ------------------------------------------------------------ TIES / DARE */

/* The task vector of model i for tensor t, sparsified as the method says:
 * ties: |tau| >= thr[i]; dare: random drop + rescale; breadcrumbs: band. */
static float *sparse_tv(int i, const art_tensor *t, const float *pre, const float *thr, float *work) {
    long n = t->numel;
    float *x = load_model(i, t->name);
    for (long j = 0; j < n; j++) x[j] -= pre[j];
    if (O.method == M_TIES) {
        if (thr && thr[i] >= 0) {
            uint32_t tb = mrg_absbits(thr[i]);
            for (long j = 0; j < n; j++)
                if (mrg_absbits(x[j]) < tb) x[j] = 0;
        }
    } else if (O.method == M_DARE_TIES || O.method == M_DARE_LINEAR) {
        uint64_t st = mrg_dare_stream(O.seed, (uint64_t)i, mrg_hash_name(t->name));
        float sc = (float)(1.0 / (1.0 - O.drop_rate));
        for (long j = 0; j < n; j++) x[j] = mrg_dare_keep_at(st, (uint64_t)j, O.drop_rate) ? x[j] * sc : 0.0f;
    } else if (O.method == M_BREADCRUMBS) {
        mrg_breadcrumbs(x, n, O.bc_top, O.bc_bottom, work);
    }
    return x;
}

/* Elected signs of one tensor: sign(sum_i tv_i), zeros left 0. */
static void elect_signs(const art_tensor *t, const float *pre, const float *thr, float *sum) {
    long n = t->numel;
    memset(sum, 0, sizeof(float) * (size_t)n);
    for (int i = 0; i < O.n; i++) {
        float *x = sparse_tv(i, t, pre, thr, NULL);
        for (long j = 0; j < n; j++) sum[j] += x[j];
        free(x);
    }
}

/* ------------------------------------------------------------ meta */

static mc_val *base_meta(void) {
    mc_val *m = val_map();
    val_set_str(m, "stage", "merge");
    val_set_str(m, "method", method_names[O.method]);
    if (IS_IA3) val_set_str(m, "base", PRE->key);
    const mc_val *cfg = val_get(MODELS[0]->meta, "config");
    if (!cfg) cfg = val_get(PRE->meta, "config");
    if (cfg) val_set(m, "config", val_clone(cfg));
    if (uses_lambda(O.method)) val_set_float(m, "lambda", O.lambda);
    if (O.method == M_TIES) val_set_float(m, "topk_percent", O.topk);
    if (O.method == M_DARE_TIES || O.method == M_DARE_LINEAR) {
        val_set_float(m, "drop_rate", O.drop_rate);
        val_set_int(m, "seed", (int64_t)O.seed);
    }
    if (O.method == M_BREADCRUMBS) {
        val_set_float(m, "breadcrumbs_top", O.bc_top);
        val_set_float(m, "breadcrumbs_bottom", O.bc_bottom);
    }
    if (is_cg(O.method)) {
        val_set_int(m, "iterations", O.iterations);
        val_set_str(m, "init", O.init);
        if (!strcmp(O.init, "task_arithmetic")) val_set_float(m, "init_lambda", O.init_lambda);
        val_set_float(m, "cg_tol", O.cg_tol);
        val_set_str(m, "precondition", O.precond ? O.precond : "none");
    }
    if (O.method == M_FISHER || O.method == M_CG_FISHER) val_set_float(m, "fisher_min", FISHER_MIN);
    mc_val *in = val_set_map(m, "inputs");
    val_set_str(in, "pretrained", PRE->key);
    mc_val *a = val_set_array(in, "models");
    for (int i = 0; i < O.n; i++) val_push(a, val_str(MODELS[i]->key));
    if (needs_fisher(O.method)) {
        a = val_set_array(in, "fisher");
        for (int i = 0; i < O.n; i++) val_push(a, val_str(FISH[i]->key));
    }
    if (needs_gram(O.method)) {
        a = val_set_array(in, "gram");
        for (int i = 0; i < O.n; i++) val_push(a, val_str(GRAM[i]->key));
    }
    if (INIT) val_set_str(in, "init", INIT->key);
    return m;
}

static void compute_key(char out[33]) {
    if (O.key) { /* checked by its option row: 32 hex digits */
        memcpy(out, O.key, 33);
        return;
    }
    mc_key *k = key_new("merge");
    if (key_binary_file(k, "/proc/self/exe") < 0) die("%s", mc_error());
    char buf[64];
    key_config(k, "method", method_names[O.method]);
#define CFG(name, fmt, v) (snprintf(buf, sizeof buf, fmt, v), key_config(k, name, buf))
    if (uses_lambda(O.method)) CFG("lambda", "%.9g", O.lambda);
    if (O.method == M_TIES) CFG("topk_percent", "%.9g", O.topk);
    if (O.method == M_DARE_TIES || O.method == M_DARE_LINEAR) {
        CFG("drop_rate", "%.9g", O.drop_rate);
        CFG("seed", "%llu", (unsigned long long)O.seed);
    }
    if (O.method == M_BREADCRUMBS) {
        CFG("breadcrumbs_top", "%.9g", O.bc_top);
        CFG("breadcrumbs_bottom", "%.9g", O.bc_bottom);
    }
    if (is_cg(O.method)) {
        CFG("iterations", "%ld", O.iterations);
        key_config(k, "init", INIT ? "file" : O.init);
        if (!strcmp(O.init, "task_arithmetic")) CFG("init_lambda", "%.9g", O.init_lambda);
        CFG("cg_tol", "%.9g", O.cg_tol);
        key_config(k, "precondition", O.precond ? O.precond : "none");
    }
#undef CFG
    key_input(k, "pretrained", PRE->key[0] ? PRE->key : "00000000000000000000000000000000");
    for (int i = 0; i < O.n; i++) {
        char role[32];
        snprintf(role, sizeof role, "model.%03d", i);
        key_input(k, role, MODELS[i]->key[0] ? MODELS[i]->key : "00000000000000000000000000000000");
        if (needs_fisher(O.method)) {
            snprintf(role, sizeof role, "fisher.%03d", i);
            key_input(k, role, FISH[i]->key[0] ? FISH[i]->key : "00000000000000000000000000000000");
        }
        if (needs_gram(O.method)) {
            snprintf(role, sizeof role, "gram.%03d", i);
            key_input(k, role, GRAM[i]->key[0] ? GRAM[i]->key : "00000000000000000000000000000000");
        }
    }
    if (INIT) key_input(k, "init", INIT->key[0] ? INIT->key : "00000000000000000000000000000000");
    dev_key(k, NULL, "merge.device", DEV);
    key_digest(k, out);
    key_free(k);
}

/* ------------------------------------------------------------ streaming methods */

static out_t open_out(const mc_val *meta, const char *key) {
    out_t o = {.like = MODELS[0]};
    o.w = art_writer_open(O.out, MODELS[0]->kind, key, meta, MODELS[0]->n_tensors);
    if (!o.w) die("%s", mc_error());
    return o;
}

static void close_out(out_t *o) {
    if (art_writer_close(o->w) < 0) die("%s", mc_error());
}

/* Global TIES thresholds, one per model (thr[i] = kth smallest |tau_i|; a
 * negative value means keep all). Two histogram passes over every model. */
static float *ties_thresholds(void) {
    const art_file *m0 = MODELS[0];
    float *thr = mallocCheck(sizeof(float) * O.n);
    mrg_select *sel = mallocCheck(sizeof(mrg_select) * O.n);
    for (int i = 0; i < O.n; i++) mrg_select_init(&sel[i]);
    uint64_t d = 0;
    for (size_t j = 0; j < m0->n_tensors; j++) d += (uint64_t)m0->tensors[j].numel;
    uint64_t rank = mrg_ties_rank(d, O.topk);
    if (rank == 0) {
        for (int i = 0; i < O.n; i++) thr[i] = -1;
        free(sel);
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
        for (int i = 0; i < O.n; i++) mrg_select_next(&sel[i], rank);
    }
    for (int i = 0; i < O.n; i++) thr[i] = sel[i].value;
    free(sel);
    return thr;
}

static void run_streaming(const char *key) {
    const art_file *m0 = MODELS[0];
    mc_val *meta = base_meta();
    float *thr = NULL;
    int ties_like = O.method == M_TIES || O.method == M_DARE_TIES;
    int64_t majority = 0;
    int8_t *signs = NULL;
    size_t sign_off = 0;
    if (O.method == M_TIES) {
        thr = ties_thresholds();
        mc_val *a = val_set_array(meta, "ties_thresholds");
        for (int i = 0; i < O.n; i++) val_push(a, val_float(thr[i]));
    }
    size_t maxn = 0;
    for (size_t j = 0; j < m0->n_tensors; j++)
        if ((size_t)m0->tensors[j].numel > maxn) maxn = (size_t)m0->tensors[j].numel;
    if (ties_like) {
        /* Majority sign over all entries, for entries whose elected sign is 0. */
        /* The elected signs are kept (one byte per parameter, a quarter of
         * a model) so the merge pass reads every model once. */
        float *sum = mallocCheck(sizeof(float) * (maxn ? maxn : 1));
        size_t total = 0;
        for (size_t j = 0; j < m0->n_tensors; j++) total += (size_t)m0->tensors[j].numel;
        signs = mallocCheck(total ? total : 1);
        int64_t pos = 0, neg = 0;
        mc_progress pr;
        progress_init(&pr, "elect signs", (int64_t)m0->n_tensors, "tensors");
        for (size_t j = 0, off = 0; j < m0->n_tensors; j++) {
            const art_tensor *t = &m0->tensors[j];
            float *pre = load_pre(t);
            elect_signs(t, pre, thr, sum);
            for (long e = 0; e < t->numel; e++) {
                int sg = (sum[e] > 0) - (sum[e] < 0);
                signs[off + e] = (int8_t)sg;
                pos += sg > 0, neg += sg < 0;
            }
            off += (size_t)t->numel;
            free(pre);
            progress_update(&pr, (int64_t)j + 1, NULL);
        }
        progress_finish(&pr, NULL);
        free(sum);
        majority = (pos > neg) - (pos < neg);
        val_set_int(meta, "majority_sign", majority);
    }
    out_t o = open_out(meta, key);
    float *acc = mallocCheck(sizeof(float) * (maxn ? maxn : 1));
    float *aux = mallocCheck(sizeof(float) * (maxn ? maxn : 1));
    mc_progress pr;
    progress_init(&pr, method_names[O.method], (int64_t)m0->n_tensors, "tensors");
    for (size_t j = 0; j < m0->n_tensors; j++) {
        const art_tensor *t = &m0->tensors[j];
        long n = t->numel;
        switch (O.method) {
        case M_AVERAGE: {
            float *x = mean_of_models(t);
            memcpy(acc, x, sizeof(float) * n);
            free(x);
        } break;
        case M_TASK_ARITHMETIC:
        case M_DARE_LINEAR:
        case M_BREADCRUMBS: {
            float *pre = load_pre(t);
            memset(aux, 0, sizeof(float) * n);
            float *work = O.method == M_BREADCRUMBS ? mallocCheck(sizeof(float) * n) : NULL;
            for (int i = 0; i < O.n; i++) {
                float *x = sparse_tv(i, t, pre, NULL, work);
                for (long e = 0; e < n; e++) aux[e] += x[e];
                free(x);
            }
            free(work);
            float lam = (float)O.lambda;
            for (long e = 0; e < n; e++) acc[e] = pre[e] + lam * aux[e];
            free(pre);
        } break;
        case M_TIES:
        case M_DARE_TIES: {
            float *pre = load_pre(t);
            for (long e = 0; e < n; e++) { /* acc = elected sign, zeros resolved */
                int8_t sg = signs[sign_off + e];
                acc[e] = sg ? (float)sg : (float)majority;
            }
            sign_off += (size_t)n;
            /* Disjoint mean: entries agreeing with the elected sign. A sign
             * of 0 (all signs tied, majority tied) selects negatives, as
             * torch.where(sign > 0, x > 0, x < 0) does. */
            memset(aux, 0, sizeof(float) * n);
            uint16_t *cnt = callocCheck((size_t)n, sizeof(uint16_t));
            for (int i = 0; i < O.n; i++) {
                float *x = sparse_tv(i, t, pre, thr, NULL);
                for (long e = 0; e < n; e++) {
                    int keep = acc[e] > 0 ? x[e] > 0 : x[e] < 0;
                    if (keep) aux[e] += x[e], cnt[e]++;
                }
                free(x);
            }
            float lam = (float)O.lambda;
            for (long e = 0; e < n; e++) acc[e] = pre[e] + lam * (aux[e] / (cnt[e] ? cnt[e] : 1));
            free(cnt);
            free(pre);
        } break;
        case M_FISHER: {
            memset(acc, 0, sizeof(float) * n);
            memset(aux, 0, sizeof(float) * n);
            for (int i = 0; i < O.n; i++) {
                float *x = load_model(i, t->name);
                float *f = load(FISH[i], art_find(FISH[i], t->name));
                for (long e = 0; e < n; e++) {
                    float fi = f[e] < FISHER_MIN ? FISHER_MIN : f[e];
                    acc[e] += fi * x[e];
                    aux[e] += fi;
                }
                free(x);
                free(f);
            }
            for (long e = 0; e < n; e++) acc[e] /= aux[e];
        } break;
        default:
            die("internal: %s is not a streaming method", method_names[O.method]);
        }
        out_tensor(&o, t, acc);
        progress_update(&pr, (int64_t)j + 1, NULL);
    }
    progress_finish(&pr, NULL);
    close_out(&o);
    free(acc);
    free(aux);
    free(thr);
    free(signs);
    val_free(meta);
}

/* ------------------------------------------------------------ CG / regmean */

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

#ifdef MC_GPU
/* mrg_op apply of the K-FAC operator on the device (host x and y) */
static void kfac_apply_dev(const mrg_op *op, const float *x, float *y) {
    gpu_kfac_apply_host((const gpu_kfac *)op->ctx, x, y);
}
#endif

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

static void run_solvers(const char *key) {
    const art_file *m0 = MODELS[0];
    size_t nt = m0->n_tensors;
    float **res = callocCheck(nt, sizeof(float *));
    mc_val *meta = base_meta();
    mc_val *cgmeta = is_cg(O.method) ? val_set_map(meta, "cg") : NULL;
    mc_val *ridges = NULL;
    mc_val *averaged = val_array();
    cg_stats st = {0};
    double kfac_flops = 0;
    mc_progress pr;
    progress_init(&pr, method_names[O.method], (int64_t)nt, "tensors");
    for (size_t j = 0; j < nt; j++) {
        const art_tensor *t = &m0->tensors[j];
        long n = t->numel;
        tkind kind = tensor_kind(t);
        mrg_cg_result cr;
        if (O.method == M_CG_AVERAGE) {
            float *b = mean_of_models(t);
            float *x = cg_init(t);
            mrg_op op;
            mrg_op_identity(&op, n);
            mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
            record_cg(cgmeta, &st, t->name, &cr);
            free(b);
            res[j] = x;
        } else if (O.method == M_CG_FISHER) {
            float *d = callocCheck((size_t)n, sizeof(float));
            float *b = callocCheck((size_t)n, sizeof(float));
            for (int i = 0; i < O.n; i++) {
                float *x = load_model(i, t->name);
                float *f = load(FISH[i], art_find(FISH[i], t->name));
                for (long e = 0; e < n; e++) {
                    float fi = f[e] < FISHER_MIN ? FISHER_MIN : f[e];
                    d[e] += fi;
                    b[e] += fi * x[e];
                }
                free(x);
                free(f);
            }
            float *x = cg_init(t);
            mrg_op op;
            mrg_op_diag(&op, n, d);
            mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
            record_cg(cgmeta, &st, t->name, &cr);
            free(d);
            free(b);
            res[j] = x;
        } else if (kind == T_PLAIN) {
            res[j] = mean_of_models(t);
            if (!IS_IA3 && t->ndim == 2 && is_linear_name(t->name)) val_push(averaged, val_str(t->name));
        } else if (kind == T_LINEAR || kind == T_BLOCK) {
            /* W (rows x k) -> W S with S = sum_i M~_i: RegMean (M = input
             * Gram, rows = out) or an IA3 Fisher block (rows = 1). */
            int rows = kind == T_LINEAR ? (int)t->shape[0] : 1;
            int k = kind == T_LINEAR ? (int)t->shape[1] : (int)t->shape[0];
            char *sn = kind == T_LINEAR ? stat_name(t->name, "input_gram") : strdupCheck(t->name);
            float *S = callocCheck((size_t)k * k, sizeof(float));
            float *b = callocCheck((size_t)n, sizeof(float));
            float *avg = O.method == M_REGMEAN ? callocCheck((size_t)n, sizeof(float)) : NULL;
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
            if (O.method == M_REGMEAN) {
                /* (sum M~) W^T = sum M~ W_i^T, in double; a singular system
                 * gets a ridge pulling towards the average of the models. */
                double *Sd = mallocCheck(sizeof(double) * (size_t)k * k);
                double *Bd = mallocCheck(sizeof(double) * (size_t)n);
                double *Pd = mallocCheck(sizeof(double) * (size_t)n);
                for (size_t e = 0; e < (size_t)k * k; e++) Sd[e] = S[e];
                for (long e = 0; e < n; e++) Bd[e] = b[e], Pd[e] = avg[e];
                double ridge = mrg_spd_solve_t(k, rows, Sd, Bd, Pd);
                if (ridge < 0)
                    die("regmean: the summed Gram of '%s' is not positive semi-definite even with a "
                        "ridge of its mean diagonal: the Grams are broken", t->name);
                if (ridge > 0) {
                    if (!ridges) ridges = val_set_map(meta, "ridge");
                    val_set_float(ridges, t->name, ridge);
                    fprintf(stderr, "merge: regmean: summed Gram of %s is singular; solved with a ridge "
                            "%.3g (towards the average of the models)\n", t->name, ridge);
                }
                float *x = avg; /* reuse */
                for (long e = 0; e < n; e++) x[e] = (float)Bd[e];
                free(Sd);
                free(Bd);
                free(Pd);
                res[j] = x;
            } else {
                float *x = cg_init(t);
                mrg_rmul rc;
                mrg_op op;
                mrg_op_rmul(&op, &rc, rows, k, S);
                mrg_cg(&op, b, x, O.iterations, O.cg_tol, 0, NULL, NULL, &cr);
                record_cg(cgmeta, &st, t->name, &cr);
                res[j] = x;
            }
            free(S);
            free(b);
            free(sn);
        } else { /* T_KFAC */
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
#ifdef MC_GPU
            gpu_kfac GK;
            if (DEV == MC_DEV_CUDA) { /* the statistics go up once; CG applies on the device */
                gpu_kfac_init(&GK, K.N, K.out, K.in);
                gpu_kfac_upload_cat(&GK, K.Acat, K.Gcat);
                op.n = (long)out * in, op.apply = kfac_apply_dev, op.ctx = &GK;
            } else
#endif
                mrg_op_kfac(&op, &K);
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
            record_cg(cgmeta, &st, t->name, &cr);
            kfac_flops += mrg_kfac_flops(&K) * (cr.iterations + 2);
#ifdef MC_GPU
            if (DEV == MC_DEV_CUDA) gpu_kfac_free(&GK);
#endif
            mrg_kfac_free(&K);
            free(b);
            free(an);
            free(gn);
            res[j] = x;
        }
        progress_update(&pr, (int64_t)j + 1, NULL);
    }
    progress_finish(&pr, NULL);
    if (averaged->v.c.n) {
        val_set(meta, "averaged_linears", averaged);
        fprintf(stderr, "merge: %zu linear(s) without the statistics for %s were averaged (first: %s)\n",
                averaged->v.c.n, method_names[O.method], averaged->v.c.items[0]->v.str.s);
    } else {
        val_free(averaged);
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
                st.worst, st.seconds, per_iter, kfac_flops > 0 ? "" : "\n");
        if (kfac_flops > 0) fprintf(stderr, ", K-FAC %.1f GFLOP/s\n", kfac_flops / st.seconds * 1e-9);
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

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    int method = -1, precond;
    opt_list models = {0}, fishers = {0}, grams = {0};
    static const char *const preconds[] = {"none", "kron", NULL};
    opt_spec rows[] = {
        {.name = "--method", .kind = OPT_CHOICE, .dst = &method, .arg = "M", .choices = method_names,
         .flags = OPT_REQUIRED, .key = "method", .help = "the merge method"},
        {.name = "--pretrained", .kind = OPT_STR, .dst = &O.pretrained, .arg = "PRE.msgpack",
         .flags = OPT_REQUIRED | OPT_INPUT, .help = "the base model the inputs were trained from"},
        {.name = "--models", .kind = OPT_LIST, .dst = &models, .arg = "A.msgpack,B.msgpack,...",
         .flags = OPT_REQUIRED | OPT_INPUT, .help = "the model or ia3 artifacts to merge"},
        {.name = "--fisher", .kind = OPT_LIST, .dst = &fishers, .arg = "FA,FB,...", .flags = OPT_INPUT,
         .help = "one per model, in --models order: fisher_diag (fisher, cg_fisher) or fisher_block (mats on ia3)"},
        {.name = "--gram", .kind = OPT_LIST, .dst = &grams, .arg = "GA,GB,...", .flags = OPT_INPUT,
         .help = "one gram artifact per model, in --models order (regmean, cg_regmean, mats on full models)"},
        {.name = "--lambda", .kind = OPT_FLOAT, .dst = &O.lambda, .arg = "X", .def = "1", .key = "lambda",
         .help = "task-vector scale (task_arithmetic ties dare_* breadcrumbs) or off-diagonal scale of Grams / "
                 "Fisher blocks (regmean cg_regmean mats)"},
        {.name = "--topk-percent", .kind = OPT_FLOAT, .dst = &O.topk, .arg = "P", .lo = 0, .hi = 100, .def = "20",
         .key = "topk_percent", .help = "ties: keep the top P% of each task vector by magnitude"},
        {.name = "--iterations", .kind = OPT_INT, .dst = &O.iterations, .arg = "N", .lo = 0, .hi = 1e8,
         .def = "100", .key = "iterations", .help = "CG iterations per tensor at most"},
        {.name = "--init", .kind = OPT_STR, .dst = &O.init, .arg = "I", .def = "average", .key = "init",
         .help = "CG start: average | pretrained | task_arithmetic | FILE (an artifact like the models)"},
        {.name = "--init-lambda", .kind = OPT_FLOAT, .dst = &O.init_lambda, .arg = "X", .def = "1",
         .key = "init_lambda", .help = "lambda of --init task_arithmetic"},
        {.name = "--cg-tol", .kind = OPT_FLOAT, .dst = &O.cg_tol, .arg = "R", .lo = 0, .hi = 1, .def = "1e-5",
         .key = "cg_tol", .help = "CG stops once ||r|| <= R ||b|| (relative); 0 = never early"},
        {.name = "--precondition", .kind = OPT_CHOICE, .dst = &precond, .arg = "kron|none", .choices = preconds,
         .def = "none", .key = "precondition", .help = "mats (full models): Kronecker preconditioner of the mean Grams"},
        {.name = "--drop-rate", .kind = OPT_FLOAT, .dst = &O.drop_rate, .arg = "P", .lo = 0, .hi = 1,
         .flags = OPT_OPEN_HI, .def = "0.9", .key = "drop_rate", .help = "dare_*: drop probability"},
        {.name = "--seed", .kind = OPT_INT, .dst = &O.seed, .arg = "S", .lo = 0, .hi = 1099511627776.0, .def = "0",
         .key = "seed", .help = "dare_*: random seed"},
        {.name = "--breadcrumbs-top", .kind = OPT_FLOAT, .dst = &O.bc_top, .arg = "T", .lo = 0, .hi = 100,
         .def = "1", .key = "breadcrumbs_top", .help = "breadcrumbs: drop the top T% magnitudes per tensor"},
        {.name = "--breadcrumbs-bottom", .kind = OPT_FLOAT, .dst = &O.bc_bottom, .arg = "B", .lo = 0, .hi = 100,
         .def = "90", .key = "breadcrumbs_bottom", .help = "breadcrumbs: drop the bottom B% magnitudes per tensor"},
        {.name = "--threads", .kind = OPT_INT, .dst = &O.threads, .arg = "N", .lo = 0, .hi = 1024,
         .help = "BLAS threads (0: MATS_THREADS, else OpenBLAS's choice)"},
        {.name = "--allow-mismatch", .kind = OPT_FLAG, .dst = &O.allow_mismatch,
         .help = "merge even when a statistic's meta.inputs names another model, or a model's meta.config "
                 "differs from --pretrained's"},
        OPT_ROW_DEVICE("mats on full models: the K-FAC operator on the GPU (make GPU=1); default: DEVICE or cpu"),
        OPT_ROW_KEY(&O.key),
        OPT_ROW_OUT(&O.out, "OUT.msgpack", "the merged model or ia3 artifact"),
        {0}};
    const opt_prog prog = {.name = "merge", .opts = rows};
    opts_parse(&prog, argc - 1, argv + 1);
    O.method = (method_t)method;
    const char *method_name = method_names[O.method];
    O.precond = precond ? "kron" : NULL;
    if (O.precond && O.method != M_MATS) die("--precondition kron applies to --method mats only");
    be_init((int)O.threads);
    DEV = dev_resolve(NULL, NULL);

    O.models = models.v, O.n = models.n;
    O.fishers = fishers.v, O.nf = fishers.n;
    O.grams = grams.v, O.ng = grams.n;

    if (is_cg(O.method) && strcmp(O.init, "average") && strcmp(O.init, "pretrained") &&
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
    if (O.precond && IS_IA3) die("--precondition kron applies to full-model mats (K-FAC), not ia3");
    if ((O.method == M_REGMEAN || O.method == M_CG_REGMEAN) && IS_IA3)
        die("%s merges linear weights with input Grams; ia3 vectors have none: use mats "
            "(Fisher blocks) or fisher", method_names[O.method]);
    if (needs_fisher(O.method)) {
        if (!O.nf) die("--method %s needs --fisher (one %s per model)", method_name,
                          O.method == M_MATS ? "fisher_block" : "fisher_diag");
        if (O.nf != O.n) die("--fisher lists %d files but --models %d: give one per model", O.nf, O.n);
        FISH = mallocCheck(sizeof(art_file *) * O.n);
        for (int i = 0; i < O.n; i++) {
            FISH[i] = open_or_die(O.fishers[i], O.method == M_MATS ? "fisher_block" : "fisher_diag");
            release_all(FISH[i]);
        }
    }
    if (needs_gram(O.method)) {
        if (!O.ng) die("--method %s needs --gram (one gram artifact per model)", method_name);
        if (O.ng != O.n) die("--gram lists %d files but --models %d: give one per model", O.ng, O.n);
        GRAM = mallocCheck(sizeof(art_file *) * O.n);
        for (int i = 0; i < O.n; i++) {
            GRAM[i] = open_or_die(O.grams[i], "gram");
            release_all(GRAM[i]);
        }
    }
    check_inputs();
    if (!O.allow_mismatch) check_provenance();
    check_statistics();
    char key[33];
    compute_key(key);

    double t0 = mc_now();
    fprintf(stderr, "merge: %s of %d %s artifacts -> %s\n", method_name, O.n, MODELS[0]->kind, O.out);
    switch (O.method) {
    case M_AVERAGE:
    case M_TASK_ARITHMETIC:
    case M_TIES:
    case M_FISHER:
    case M_DARE_TIES:
    case M_DARE_LINEAR:
    case M_BREADCRUMBS: run_streaming(key); break;
    default: run_solvers(key); break;
    }
    fprintf(stderr, "merge: done in %.2fs, peak RSS %.1f MiB, key %s\n", mc_now() - t0,
            mc_peak_rss() / 1048576.0, key);

    art_close(PRE);
    for (int i = 0; i < O.n; i++) {
        art_close(MODELS[i]);
        if (FISH) art_close(FISH[i]);
        if (GRAM) art_close(GRAM[i]);
        free(O.models[i]);
    }
    if (INIT) art_close(INIT);
    return 0;
}
