/* merge_methods.c - the table of merge methods (merge_methods.h). */
#include "merge_methods.h"

#include "merge_rules.h"

#include <string.h>

const mm_method mm_methods[] = {
#define MM(name_, ...) {.name = #name_, __VA_ARGS__},
#include "merge_methods.def"
#undef MM
    {0}};

const char *const mm_names[] = {
#define MM(name_, ...) #name_,
#include "merge_methods.def"
#undef MM
    NULL};

const char *const mm_option_names[MM_OPT_COUNT] = {
#define MM_OPT_NAME(e, name) [MM_OPT_##e] = #name,
    MM_OPTIONS(MM_OPT_NAME)
#undef MM_OPT_NAME
};

const mm_method *mm_find(const char *name) {
    for (const mm_method *m = mm_methods; m->name; m++)
        if (!strcmp(m->name, name)) return m;
    return NULL;
}

int mm_reads(const mm_method *m, mm_opt o) { return o == MM_OPT_RULES ? m->rules != 0 : (m->options >> o) & 1u; }

int mm_is_cg(const mm_method *m) { return mm_reads(m, MM_OPT_ITERATIONS); }

const char *mm_mode_name(mm_mode mode) { return mode == MM_MODE_IA3 ? "ia3" : "full"; }

static const struct {
    const char *role, *kind, *option;
} STATS[] = {
    [MM_STAT_NONE] = {NULL, NULL, NULL},
    [MM_STAT_FISHER_DIAG] = {"fisher-diagonal", "fisher_diag", "--fisher"},
    [MM_STAT_FISHER_BLOCK] = {"fisher-blockwise", "fisher_block", "--fisher"},
    [MM_STAT_GRAM] = {"gram", "gram", "--gram"},
    [MM_STAT_KFAC] = {"gram", "gram", "--gram"},
    [MM_STAT_DATA] = {"data", "tokens", "--data"},
};

const char *mm_stat_role(mm_stat s) { return STATS[s].role; }
const char *mm_stat_kind(mm_stat s) { return STATS[s].kind; }
const char *mm_stat_option(mm_stat s) { return STATS[s].option; }

void mm_print_row(const mm_method *m, FILE *f) {
    fprintf(f, "%s lambda=%s run=%s modes=", m->name, m->lambda ? "yes" : "no",
            m->run == MM_STREAM ? "streaming" : "solver");
    const char *sep = "";
    for (int d = 0; d < MM_MODES; d++)
        if (m->modes & (1u << d)) fprintf(f, "%s%s", sep, mm_mode_name((mm_mode)d)), sep = ",";
    for (int d = 0; d < MM_MODES; d++)
        if (m->modes & (1u << d))
            fprintf(f, " stats.%s=%s", mm_mode_name((mm_mode)d), m->stat[d] ? mm_stat_role(m->stat[d]) : "none");
    fputs(" options=", f);
    sep = "";
    for (int o = 0; o < MM_OPT_COUNT; o++)
        if (mm_reads(m, (mm_opt)o)) fprintf(f, "%s%s", sep, mm_option_names[o]), sep = ",";
    if (!*sep) fputs("none", f);
    int lo = m->min_models > 1 ? m->min_models : 1;
    if (m->max_models == lo) fprintf(f, " models=%d", lo);
    else fprintf(f, " models=%d+", lo);
    fprintf(f, " # %s\n", m->about);
}
