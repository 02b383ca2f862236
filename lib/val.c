/* val.c - see val.h. */
#include "val.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static mc_val *val_new(val_type t) {
    mc_val *v = callocCheck(1, sizeof *v);
    v->type = t;
    return v;
}

mc_val *val_nil(void) { return val_new(VAL_NIL); }
mc_val *val_bool(int b) { mc_val *v = val_new(VAL_BOOL); v->v.b = !!b; return v; }
mc_val *val_int(int64_t i) { mc_val *v = val_new(VAL_INT); v->v.i = i; return v; }
mc_val *val_float(double f) { mc_val *v = val_new(VAL_FLOAT); v->v.f = f; return v; }
mc_val *val_array(void) { return val_new(VAL_ARRAY); }
mc_val *val_map(void) { return val_new(VAL_MAP); }

mc_val *val_strn(const char *s, size_t n) {
    mc_val *v = val_new(VAL_STR);
    v->v.str.s = mallocCheck(n + 1);
    memcpy(v->v.str.s, s, n);
    v->v.str.s[n] = 0;
    v->v.str.len = n;
    return v;
}

mc_val *val_str(const char *s) { return val_strn(s, strlen(s)); }

mc_val *val_bin(const void *p, size_t n) {
    mc_val *v = val_strn(p, n);
    v->type = VAL_BIN;
    return v;
}

void val_free(mc_val *v) {
    if (!v) return;
    if (v->type == VAL_STR || v->type == VAL_BIN) free(v->v.str.s);
    if (v->type == VAL_ARRAY || v->type == VAL_MAP) {
        for (size_t i = 0; i < v->v.c.n; i++) {
            val_free(v->v.c.items[i]);
            if (v->v.c.keys) free(v->v.c.keys[i]);
        }
        free(v->v.c.items);
        free(v->v.c.keys);
    }
    free(v);
}

mc_val *val_clone(const mc_val *v) {
    if (!v) return NULL;
    switch (v->type) {
    case VAL_STR: return val_strn(v->v.str.s, v->v.str.len);
    case VAL_BIN: return val_bin(v->v.str.s, v->v.str.len);
    case VAL_ARRAY: {
        mc_val *a = val_array();
        for (size_t i = 0; i < v->v.c.n; i++) val_push(a, val_clone(v->v.c.items[i]));
        return a;
    }
    case VAL_MAP: {
        mc_val *m = val_map();
        for (size_t i = 0; i < v->v.c.n; i++) val_set(m, v->v.c.keys[i], val_clone(v->v.c.items[i]));
        return m;
    }
    default: {
        mc_val *c = val_new(v->type);
        c->v = v->v;
        return c;
    }
    }
}

static void grow(mc_val *c) {
    if (c->v.c.n < c->v.c.cap) return;
    c->v.c.cap = c->v.c.cap ? c->v.c.cap * 2 : 8;
    c->v.c.items = reallocCheck(c->v.c.items, c->v.c.cap * sizeof(mc_val *));
    if (c->type == VAL_MAP) c->v.c.keys = reallocCheck(c->v.c.keys, c->v.c.cap * sizeof(char *));
}

mc_val *val_push(mc_val *arr, mc_val *item) {
    if (arr->type != VAL_ARRAY) { fprintf(stderr, "val_push on a non-array\n"); abort(); }
    grow(arr);
    arr->v.c.items[arr->v.c.n++] = item;
    return item;
}

mc_val *val_set(mc_val *map, const char *key, mc_val *item) {
    if (map->type != VAL_MAP) { fprintf(stderr, "val_set on a non-map\n"); abort(); }
    for (size_t i = 0; i < map->v.c.n; i++)
        if (strcmp(map->v.c.keys[i], key) == 0) {
            val_free(map->v.c.items[i]);
            map->v.c.items[i] = item;
            return item;
        }
    grow(map);
    map->v.c.keys[map->v.c.n] = strdupCheck(key);
    map->v.c.items[map->v.c.n++] = item;
    return item;
}

void val_set_str(mc_val *m, const char *k, const char *s) { val_set(m, k, val_str(s)); }
void val_set_int(mc_val *m, const char *k, int64_t i) { val_set(m, k, val_int(i)); }
void val_set_float(mc_val *m, const char *k, double f) { val_set(m, k, val_float(f)); }
mc_val *val_set_map(mc_val *m, const char *k) { return val_set(m, k, val_map()); }
mc_val *val_set_array(mc_val *m, const char *k) { return val_set(m, k, val_array()); }

const mc_val *val_get(const mc_val *map, const char *key) {
    if (!map || map->type != VAL_MAP) return NULL;
    for (size_t i = 0; i < map->v.c.n; i++)
        if (strcmp(map->v.c.keys[i], key) == 0) return map->v.c.items[i];
    return NULL;
}

int val_equal(const mc_val *a, const mc_val *b) {
    if (!a || !b) return a == b;
    if (a->type != b->type) return 0;
    switch (a->type) {
    case VAL_NIL: return 1;
    case VAL_BOOL: return !a->v.b == !b->v.b;
    case VAL_INT: return a->v.i == b->v.i;
    case VAL_UINT: return a->v.u == b->v.u;
    case VAL_FLOAT: return a->v.f == b->v.f;
    case VAL_STR:
    case VAL_BIN: return a->v.str.len == b->v.str.len && !memcmp(a->v.str.s, b->v.str.s, a->v.str.len);
    case VAL_ARRAY:
    case VAL_MAP:
        if (a->v.c.n != b->v.c.n) return 0;
        for (size_t i = 0; i < a->v.c.n; i++) {
            if (a->type == VAL_MAP && strcmp(a->v.c.keys[i], b->v.c.keys[i])) return 0;
            if (!val_equal(a->v.c.items[i], b->v.c.items[i])) return 0;
        }
        return 1;
    }
    return 0;
}

const mc_val *val_path(const mc_val *map, const char *dotted) {
    char part[256];
    const mc_val *v = map;
    while (v && *dotted) {
        const char *dot = strchr(dotted, '.');
        size_t n = dot ? (size_t)(dot - dotted) : strlen(dotted);
        if (n >= sizeof part) return NULL;
        memcpy(part, dotted, n);
        part[n] = 0;
        v = val_get(v, part);
        dotted += n + (dot ? 1 : 0);
    }
    return v;
}

const char *val_get_str(const mc_val *m, const char *k, const char *def) {
    const mc_val *v = val_get(m, k);
    return v && v->type == VAL_STR ? v->v.str.s : def;
}

int64_t val_get_int(const mc_val *m, const char *k, int64_t def) {
    const mc_val *v = val_get(m, k);
    if (v && v->type == VAL_INT) return v->v.i;
    if (v && v->type == VAL_UINT) return (int64_t)v->v.u;
    return def;
}

double val_get_float(const mc_val *m, const char *k, double def) {
    const mc_val *v = val_get(m, k);
    if (!v) return def;
    if (v->type == VAL_FLOAT) return v->v.f;
    if (v->type == VAL_INT) return (double)v->v.i;
    if (v->type == VAL_UINT) return (double)v->v.u;
    return def;
}

static void print_str(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
    fputc('"', f);
}

void val_print(const mc_val *v, void *file, int indent) {
    FILE *f = file;
    if (!v) { fputs("null", f); return; }
    switch (v->type) {
    case VAL_NIL: fputs("null", f); break;
    case VAL_BOOL: fputs(v->v.b ? "true" : "false", f); break;
    case VAL_INT: fprintf(f, "%" PRId64, v->v.i); break;
    case VAL_UINT: fprintf(f, "%" PRIu64, v->v.u); break;
    case VAL_FLOAT: fprintf(f, "%.9g", v->v.f); break;
    case VAL_STR: print_str(f, v->v.str.s, v->v.str.len); break;
    case VAL_BIN: fprintf(f, "<bin %zu bytes>", v->v.str.len); break;
    case VAL_ARRAY: {
        /* Short arrays of scalars on one line. */
        fputc('[', f);
        for (size_t i = 0; i < v->v.c.n; i++) {
            if (i) fputs(", ", f);
            if (i == 32 && v->v.c.n > 40) { fprintf(f, "... (%zu items)", v->v.c.n); break; }
            val_print(v->v.c.items[i], f, indent);
        }
        fputc(']', f);
        break;
    }
    case VAL_MAP: {
        if (v->v.c.n == 0) { fputs("{}", f); break; }
        fputs("{\n", f);
        for (size_t i = 0; i < v->v.c.n; i++) {
            fprintf(f, "%*s", indent + 2, "");
            print_str(f, v->v.c.keys[i], strlen(v->v.c.keys[i]));
            fputs(": ", f);
            val_print(v->v.c.items[i], f, indent + 2);
            fputs(i + 1 < v->v.c.n ? ",\n" : "\n", f);
        }
        fprintf(f, "%*s}", indent, "");
        break;
    }
    }
}
