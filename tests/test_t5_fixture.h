/* test_t5_fixture.h - reader of tests/fixtures/t5_micro.bin (and
 * t5_original.bin), written by
 * tests/reference/make_fixtures.py (format documented there). */
#ifndef TEST_T5_FIXTURE_H
#define TEST_T5_FIXTURE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "t5.h"

typedef struct {
    char name[128];
    int dtype; /* 0 f32, 1 i32 */
    int ndim;
    int64_t shape[4];
    int64_t numel;
    void *data;
} fx_entry;

typedef struct {
    int n;
    fx_entry *e;
} fx_file;

static inline fx_file *fx_load(const char *path) {
    unsigned char *buf;
    size_t len;
    if (mc_read_file(path, &buf, &len) < 0) die("%s (regenerate with make fixtures-t5)", mc_error());
    if (len < 10 || memcmp(buf, "MCFX1\n", 6) != 0) die("%s: not a fixture file", path);
    size_t p = 6;
    uint32_t cnt;
    memcpy(&cnt, buf + p, 4);
    p += 4;
    fx_file *f = callocCheck(1, sizeof *f);
    f->e = callocCheck(cnt, sizeof *f->e);
    for (uint32_t i = 0; i < cnt; i++) {
        fx_entry *e = &f->e[i];
        uint16_t nl;
        if (p + 2 > len) die("%s: truncated", path);
        memcpy(&nl, buf + p, 2);
        p += 2;
        if (nl >= sizeof e->name || p + nl + 2 > len) die("%s: bad entry %u", path, i);
        memcpy(e->name, buf + p, nl);
        p += nl;
        e->dtype = buf[p++];
        e->ndim = buf[p++];
        if (e->ndim > 4 || p + 8 * e->ndim > len) die("%s: bad entry %s", path, e->name);
        e->numel = 1;
        for (int d = 0; d < e->ndim; d++) {
            memcpy(&e->shape[d], buf + p, 8);
            p += 8;
            e->numel *= e->shape[d];
        }
        size_t nb = (size_t)e->numel * 4;
        if (p + nb > len) die("%s: truncated at %s", path, e->name);
        e->data = mallocCheck(nb ? nb : 1);
        memcpy(e->data, buf + p, nb);
        p += nb;
        f->n++;
    }
    free(buf);
    return f;
}

static inline fx_entry *fx_get(fx_file *f, const char *name) {
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->e[i].name, name) == 0) return &f->e[i];
    die("fixture entry %s missing (regenerate with make fixtures-t5)", name);
}

static inline float *fx_f32(fx_file *f, const char *name) { return (float *)fx_get(f, name)->data; }
static inline int *fx_i32(fx_file *f, const char *name) { return (int *)fx_get(f, name)->data; }

static inline void fx_free(fx_file *f) {
    for (int i = 0; i < f->n; i++) free(f->e[i].data);
    free(f->e);
    free(f);
}

/* The micro config as written by the reference (with the layout, feed-
 * forward and tie, when the entry has 11 values: t5_original.bin). */
static inline t5_config fx_config(fx_file *f) {
    int *c = fx_i32(f, "config");
    t5_config cfg = {.vocab_size = c[0], .d_model = c[1], .d_kv = c[2], .d_ff = c[3], .num_heads = c[4],
                     .num_layers = c[5], .num_decoder_layers = c[6], .num_buckets = c[7],
                     .max_distance = c[8], .eps = 1e-6f};
    if (fx_get(f, "config")->numel >= 11) cfg.ffn = c[9] ? T5_FFN_RELU : T5_FFN_GATED_GELU, cfg.tied = c[10];
    return cfg;
}

/* Copy every param/<name> entry into m's parameters (all must be present);
 * with ia3, also ia3/<name>. */
static inline void fx_fill_model(fx_file *f, t5_model *m, int ia3) {
    char nm[160];
    for (int i = 0; i < m->n_tensors; i++) {
        const t5_tensor *t = &m->tensors[i];
        snprintf(nm, sizeof nm, "param/%s", t->name);
        fx_entry *e = fx_get(f, nm);
        if ((size_t)e->numel != t->numel) die("fixture %s has %lld values, model %zu", nm, (long long)e->numel, t->numel);
        memcpy(m->params + t->offset, e->data, t->numel * 4);
    }
    if (ia3)
        for (int i = 0; i < m->n_ia3_tensors; i++) {
            const t5_tensor *t = &m->ia3_tensors[i];
            snprintf(nm, sizeof nm, "ia3/%s", t->name);
            fx_entry *e = fx_get(f, nm);
            memcpy(m->ia3 + t->offset, e->data, t->numel * 4);
        }
}

#endif
