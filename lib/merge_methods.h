/* merge_methods.h - the merge methods as one table: a row per method
 * (lib/merge_methods.def), and everything about a method derives from it.
 *
 * A row says: the method's name; whether it reads --lambda; whether it
 * streams tensor by tensor or solves with the merged model in memory; the
 * modes it merges (ia3 artifacts, full models); the statistic it needs in
 * each mode; the options it reads beyond --lambda; a one-line description.
 * Its kernel is the function stages/merge.c names after it (k_<name>).
 *
 * `merge --list-methods` prints the table (mm_print_row), one line a method:
 *
 *   NAME lambda=yes|no run=streaming|solver modes=M[,M] stats.M=S... options=O[,O...]|none models=K[+] # about
 *
 * with one stats.M field per mode M in modes (ia3, full), S the key role of
 * the statistic (mm_stat_role: fisher-diagonal, fisher-blockwise, gram, data) or
 * none, and O the option names as merge's key and meta spell them
 * (merge.O in the key, --O with '_' as '-' on the command line), and K the
 * number of models it merges (K+: K or more). The workflow
 * (recipes/workflow.mk) reads these lines instead of keeping lists.
 */
#ifndef MC_MERGE_METHODS_H
#define MC_MERGE_METHODS_H

#include <stdio.h>

typedef enum { MM_STREAM = 0, MM_SOLVER = 1 } mm_run;

/* The statistic artifacts a method needs, one per model. */
typedef enum {
    MM_STAT_NONE = 0,
    MM_STAT_FISHER_DIAG = 1,  /* fisher_diag, --fisher */
    MM_STAT_FISHER_BLOCK = 2, /* fisher_block, --fisher */
    MM_STAT_GRAM = 3,         /* gram: input Grams of the linears, --gram */
    MM_STAT_KFAC = 4,         /* gram: input and output-gradient Grams, --gram */
    MM_STAT_DATA = 5,         /* tokens: each model's own task data, --data (the
                                 method measures what it needs while it merges) */
} mm_stat;

typedef enum { MM_MODE_IA3 = 0, MM_MODE_FULL = 1, MM_MODES = 2 } mm_mode;
enum { MM_IA3 = 1 << MM_MODE_IA3, MM_FULL = 1 << MM_MODE_FULL };

/* The options a method may read beyond --lambda, as (ENUM, key name): this
 * order is the order of the meta fields and of --list-methods. */
#define MM_OPTIONS(X)                                                                                        \
    X(TOPK_PERCENT, topk_percent) X(DROP_RATE, drop_rate) X(SEED, seed)                                     \
    X(BREADCRUMBS_TOP, breadcrumbs_top) X(BREADCRUMBS_BOTTOM, breadcrumbs_bottom) X(ITERATIONS, iterations) \
    X(INIT, init) X(INIT_LAMBDA, init_lambda) X(CG_TOL, cg_tol) X(PRECONDITION, precondition)              \
    X(COMMON_SPACE_FRACTION, common_space_fraction) X(EXAMPLES, examples) X(RULES, rules)
typedef enum {
#define MM_OPT_ENUM(e, name) MM_OPT_##e,
    MM_OPTIONS(MM_OPT_ENUM)
#undef MM_OPT_ENUM
    MM_OPT_COUNT
} mm_opt;
#define MM_O(x) (1u << MM_OPT_##x)
/* what every conjugate-gradient method reads */
#define MM_CG (MM_O(ITERATIONS) | MM_O(INIT) | MM_O(INIT_LAMBDA) | MM_O(CG_TOL))

typedef struct {
    const char *name;
    int lambda;               /* 1: reads --lambda (what it means: docs/merging.md) */
    int unit_lambda;          /* 1: --lambda is an interpolation t and must lie in [0, 1] */
    mm_run run;
    unsigned modes;           /* MM_IA3 | MM_FULL */
    mm_stat stat[MM_MODES];   /* the statistic needed, by mode */
    unsigned options;         /* MM_O(...) bits (never RULES: it follows from .rules) */
    unsigned rules;           /* the parameters merge --rules may set (MR_P bits of
                                 merge_rules.h); 0: the method reads no --rules */
    int min_models;           /* it merges at least this many models (0: 1) */
    int max_models;           /* 0 (any number), or min_models (exactly that many) */
    const char *init;         /* CG methods: the start without --init (NULL: average) */
    const char *about;        /* one line */
} mm_method;

/* The rows, in table order, ended by a row whose name is NULL. */
extern const mm_method mm_methods[];
/* Their names, NULL-ended (an OPT_CHOICE list). */
extern const char *const mm_names[];
/* Option names as keys and meta spell them ("topk_percent"), by mm_opt. */
extern const char *const mm_option_names[MM_OPT_COUNT];

/* The row named `name`, or NULL. */
const mm_method *mm_find(const char *name);
/* 1 if m reads option o. */
int mm_reads(const mm_method *m, mm_opt o);
/* 1 if m runs on conjugate gradient (it reads --iterations). */
int mm_is_cg(const mm_method *m);
/* "ia3", "full". */
const char *mm_mode_name(mm_mode mode);
/* The key role of statistic s ("fisher-diagonal", "fisher-blockwise",
 * "gram"; the workflow's slot names too), its artifact kind ("fisher_diag",
 * "fisher_block", "gram"; "data", "tokens" for MM_STAT_DATA) and merge's
 * option that takes it ("--fisher", "--gram", "--data"); NULL for
 * MM_STAT_NONE. */
const char *mm_stat_role(mm_stat s);
const char *mm_stat_kind(mm_stat s);
const char *mm_stat_option(mm_stat s);
/* m's line of --list-methods (format above), newline included. */
void mm_print_row(const mm_method *m, FILE *f);

#endif
