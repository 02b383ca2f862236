/* merge_rules.c - per-model and per-tensor merge parameters (merge_rules.h). */
#include "merge_rules.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

const char *const mr_param_names[MR_NPARAMS] = {"weight", "density", "gamma", "lambda"};

void mr_free(mr_rules *R) {
    for (int i = 0; i < R->n; i++) free(R->r[i].filter), free(R->r[i].v);
    free(R->r);
    R->r = NULL, R->n = 0;
}

int mr_filter_ok(const char *s) {
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '.' && *s != '_' && *s != '-') return 0;
    return 1;
}

/* One rule of length len at s (not NUL-terminated). */
static int parse_rule(const char *s, size_t len, int n_models, mr_rule *r) {
    char buf[1024];
    if (len == 0) return mc_fail("--rules: an empty rule (two '/' in a row, or one at an end)");
    if (len >= sizeof buf) return mc_fail("--rules: a rule of %zu characters (at most %zu)", len, sizeof buf - 1);
    memcpy(buf, s, len);
    buf[len] = 0;
    memset(r, 0, sizeof *r);
    char *colon = strchr(buf, ':');
    if (!colon) return mc_fail("--rules: '%s' has no ':' (PARAM[.MODEL][@FILTER]:V[,V...])", buf);
    *colon = 0;
    char *at = strchr(buf, '@');
    if (at) *at = 0;
    char *dot = strchr(buf, '.');
    if (dot) *dot = 0;
    int p = -1;
    for (int k = 0; k < MR_NPARAMS; k++)
        if (!strcmp(buf, mr_param_names[k])) p = k;
    if (p < 0) return mc_fail("--rules: '%s' is not a parameter (weight, density, gamma or lambda)", buf);
    r->param = (mr_param)p;
    if (dot) {
        char *end;
        long m = strtol(dot + 1, &end, 10);
        if (!dot[1] || *end || m < 1 || m > n_models)
            return mc_fail("--rules: %s.%s: the model must be 1 to %d (the position in --models)", buf, dot + 1,
                           n_models);
        if (p == MR_LAMBDA) return mc_fail("--rules: lambda.%s: lambda is one for every model (leave out .%s)",
                                           dot + 1, dot + 1);
        r->model = (int)m;
    }
    if (at) {
        if (!at[1]) return mc_fail("--rules: %s@: an empty filter (leave out '@' to match every tensor)", buf);
        if (!mr_filter_ok(at + 1))
            return mc_fail("--rules: filter '%s': only letters, digits, '.', '_' and '-' (a part of a tensor "
                           "name)", at + 1);
        r->filter = strdupCheck(at + 1);
    }
    const char *v = colon + 1;
    int nv = 1;
    for (const char *c = v; *c; c++) nv += *c == ',';
    r->v = mallocCheck(sizeof(double) * (size_t)nv);
    r->nv = nv;
    for (int k = 0; k < nv; k++) {
        char *end;
        double x = strtod(v, &end);
        if (end == v || (*end && *end != ',') || !isfinite(x)) {
            const char *e = strchr(v, ',');
            int l = e ? (int)(e - v) : (int)strlen(v);
            return mc_fail("--rules: %s: value '%.*s' is not a finite number", mr_param_names[p], l, v);
        }
        r->v[k] = x;
        v = *end ? end + 1 : end;
    }
    return 0;
}

int mr_parse(const char *s, int n_models, mr_rules *out) {
    memset(out, 0, sizeof *out);
    if (!s || !*s) return 0;
    int cap = 1;
    for (const char *c = s; *c; c++) cap += *c == '/';
    out->r = callocCheck((size_t)cap, sizeof(mr_rule));
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (parse_rule(p, len, n_models, &out->r[out->n]) < 0) {
            free(out->r[out->n].filter), free(out->r[out->n].v);
            mr_free(out);
            return -1;
        }
        out->n++;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* The stack (0 encoder, 1 decoder) and block index of a block tensor, or -1. */
static int block_of(const char *name, int *index) {
    static const char *const pre[2] = {"encoder.block.", "decoder.block."};
    for (int s = 0; s < 2; s++) {
        size_t n = strlen(pre[s]);
        if (strncmp(name, pre[s], n) || !isdigit((unsigned char)name[n])) continue;
        *index = atoi(name + n);
        return s;
    }
    return -1;
}

void mr_set_layers(mr_rules *R, const char *const *names, int n) {
    R->layers[0] = R->layers[1] = 0;
    for (int i = 0; i < n; i++) {
        int idx, s = block_of(names[i], &idx);
        if (s >= 0 && idx + 1 > R->layers[s]) R->layers[s] = idx + 1;
    }
}

double mr_position(const mr_rules *R, const char *name) {
    int idx, s = block_of(name, &idx);
    if (s < 0) return 0;
    int L = R->layers[s];
    return L > 1 ? (double)idx / (L - 1) : 1;
}

static double evaluate(const mr_rule *r, double t) {
    if (r->nv == 1) return r->v[0];
    double sc = t * (r->nv - 1);
    int i0 = (int)sc;
    if (i0 > r->nv - 1) i0 = r->nv - 1;
    int i1 = i0 + 1 < r->nv ? i0 + 1 : r->nv - 1;
    double f = sc - i0;
    return (1 - f) * r->v[i0] + f * r->v[i1];
}

int mr_value(const mr_rules *R, mr_param param, int model, const char *name, double *out) {
    for (int pass = model ? 0 : 1; pass < 2; pass++) {
        int want = pass == 0 ? model : 0;
        for (int i = 0; i < R->n; i++) {
            const mr_rule *r = &R->r[i];
            if (r->param != param || r->model != want) continue;
            if (r->filter && !strstr(name, r->filter)) continue;
            *out = evaluate(r, mr_position(R, name));
            return 1;
        }
    }
    return 0;
}

int mr_has(const mr_rules *R, mr_param param, int varying) {
    for (int i = 0; i < R->n; i++)
        if (R->r[i].param == param && (!varying || R->r[i].filter || R->r[i].nv > 1)) return 1;
    return 0;
}
