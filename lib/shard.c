/* shard.c - see shard.h */
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "val.h"

int shard_parse(const char *s, mc_shard *out) {
    const char *slash = strchr(s, '/');
    if (!slash) return mc_fail("--shard '%s' is not I/N (shard I of N, 1 <= I <= N)", s);
    char head[32];
    size_t hl = (size_t)(slash - s);
    if (hl == 0 || hl >= sizeof head) return mc_fail("--shard '%s' is not I/N (shard I of N, 1 <= I <= N)", s);
    memcpy(head, s, hl);
    head[hl] = 0;
    long i, n;
    if (opts_parse_int(slash + 1, 1, 1000000, &n) < 0) return mc_fail("--shard '%s': N: %s", s, mc_error());
    if (opts_parse_int(head, 1, (double)n, &i) < 0) return mc_fail("--shard '%s': I: %s", s, mc_error());
    out->i = i, out->n = n;
    return 0;
}

void shard_range(const mc_shard *sh, int64_t n, int64_t *lo, int64_t *hi) {
    *lo = (int64_t)((__int128)(sh->i - 1) * n / sh->n);
    *hi = (int64_t)((__int128)sh->i * n / sh->n);
}

const char *shard_kind(const char *kind, char *buf, size_t cap) {
    snprintf(buf, cap, "%s_shard", kind);
    return buf;
}

/* meta equal but for what each shard counts for itself */
static int same_settings(const mc_val *a, const mc_val *b) {
    static const char *const own[] = {"shard", "n_examples", "n_encoder_tokens", "n_decoder_tokens", NULL};
    if (a->type != VAL_MAP || b->type != VAL_MAP) return 0;
    const mc_val *x = a, *y = b;
    for (int pass = 0; pass < 2; pass++, x = b, y = a)
        for (size_t i = 0; i < x->v.c.n; i++) {
            int skip = 0;
            for (int k = 0; own[k]; k++) skip |= !strcmp(x->v.c.keys[i], own[k]);
            const mc_val *other = val_get(y, x->v.c.keys[i]);
            if (!skip && (!other || !val_equal(x->v.c.items[i], other))) return 0;
        }
    return 1;
}

static int same_tensors(const art_file *a, const art_file *b) {
    if (a->n_tensors != b->n_tensors) return 0;
    for (size_t j = 0; j < a->n_tensors; j++) {
        const art_tensor *x = &a->tensors[j], *y = &b->tensors[j];
        if (strcmp(x->name, y->name) || x->dtype != y->dtype || x->ndim != y->ndim) return 0;
        for (int d = 0; d < x->ndim; d++)
            if (x->shape[d] != y->shape[d]) return 0;
    }
    return 1;
}

art_file **shard_open_all(const opt_list *paths, const char *const *kinds, const char **kind_out) {
    int n = paths->n;
    art_file **a = callocCheck(n, sizeof *a);
    const char *kind = NULL;
    for (int i = 0; i < n; i++) {
        const char *p = paths->v[i];
        if (!(a[i] = art_open(p, NULL))) die("%s", mc_error());
        if (!kind) {
            char buf[80];
            for (int k = 0; kinds[k] && !kind; k++)
                if (!strcmp(a[i]->kind, shard_kind(kinds[k], buf, sizeof buf))) kind = kinds[k];
            if (!kind)
                die("%s: a %s artifact, not a shard of this stage's statistics (made with --shard I/N): give the "
                    "shards in order 1..N", p, a[i]->kind);
        } else if (strcmp(a[i]->kind, a[0]->kind)) {
            die("%s: a %s artifact among %s shards: every shard must be of the same statistic", p, a[i]->kind,
                a[0]->kind);
        }
        mc_shard sh;
        const char *s = val_get_str(a[i]->meta, "shard", NULL);
        if (!s || shard_parse(s, &sh) < 0)
            die("%s: meta.shard is missing or not I/N: not a shard written by this version; rebuild it", p);
        if (sh.n != n)
            die("%s is shard %s, but %d shards were given: give all %ld shards of that run, in order", p, s, n,
                sh.n);
        if (sh.i != i + 1)
            die("%s is shard %s where shard %d/%d belongs: give the shards in order 1..%d, each once", p, s, i + 1,
                n, n);
        if (i && !same_settings(a[i]->meta, a[0]->meta))
            die("%s was computed from other inputs or settings than %s (their meta differ beyond the shard's own "
                "counts): shards of one statistic share model, data and settings", p, paths->v[0]);
        if (i && !same_tensors(a[i], a[0]))
            die("%s has other tensors (names, dtypes or shapes) than %s: shards of one statistic have the same "
                "tensors", p, paths->v[0]);
        for (size_t j = 0; j < a[i]->n_tensors; j++)
            if (a[i]->tensors[j].dtype != ART_F32)
                die("%s: tensor %s is %s, not f32: not a shard written by this version; rebuild it", p,
                    a[i]->tensors[j].name, art_dtype_name(a[i]->tensors[j].dtype));
    }
    *kind_out = kind;
    return a;
}

void shard_close_all(art_file **a, int n) {
    for (int i = 0; i < n; i++) art_close(a[i]);
    free(a);
}

int shard_reduce(art_file **a, int n, shard_weight_fn weight, void *ctx, art_writer *w) {
    double *wt = mallocCheck(sizeof(double) * n);
    for (size_t j = 0; j < a[0]->n_tensors; j++) {
        const art_tensor *t0 = &a[0]->tensors[j];
        double total = 0;
        for (int i = 0; i < n; i++) total += (wt[i] = weight(a[i], t0->name, ctx));
        int64_t ne = t0->numel;
        double *sum = callocCheck(ne ? ne : 1, sizeof(double));
        float *x = mallocCheck(sizeof(float) * (ne ? ne : 1));
        for (int i = 0; i < n; i++) {
            art_tensor_copy(&a[i]->tensors[j], x);
            for (int64_t e = 0; e < ne; e++) sum[e] += wt[i] * (double)x[e];
        }
        for (int64_t e = 0; e < ne; e++) x[e] = total > 0 ? (float)(sum[e] / total) : 0.0f;
        long bad = mc_nonfinite_at(x, ne);
        free(sum);
        if (bad >= 0) {
            free(x), free(wt);
            art_writer_abort(w);
            return mc_fail("the reduced %s is not finite (element %ld): a shard holds an overflowed value", t0->name,
                           bad);
        }
        int rc = art_writer_tensor(w, t0->name, ART_F32, t0->ndim, t0->shape, x);
        free(x);
        if (rc < 0) {
            free(wt);
            art_writer_abort(w);
            return -1;
        }
    }
    free(wt);
    return 0;
}

void shard_write(const char *out, const char *kind, const char *key, mc_val *meta, art_file **a, int n,
                 shard_weight_fn weight, void *ctx) {
    art_writer *w = art_writer_open(out, kind, key, meta, (int)a[0]->n_tensors);
    val_free(meta);
    if (!w || shard_reduce(a, n, weight, ctx, w) < 0 || art_writer_close(w) < 0) die("%s", mc_error());
    fprintf(stderr, "%s: wrote %s (%s reduced from %d shards, %zu tensors)\n", mc_progname(), out, kind, n,
            a[0]->n_tensors);
    shard_close_all(a, n);
}
