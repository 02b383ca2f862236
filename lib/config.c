/* config.c - see config.h. */
#include "config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

typedef struct {
    char *key, *value, *where;
    int read;
} entry;

struct mc_cfg {
    entry *e;
    size_t n, cap;
    int sorted;
};

mc_cfg *cfg_new(void) { return callocCheck(1, sizeof(mc_cfg)); }

void cfg_free(mc_cfg *c) {
    if (!c) return;
    for (size_t i = 0; i < c->n; i++) {
        free(c->e[i].key);
        free(c->e[i].value);
        free(c->e[i].where);
    }
    free(c->e);
    free(c);
}

static entry *find(const mc_cfg *c, const char *key) {
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->e[i].key, key) == 0) return &c->e[i];
    return NULL;
}

static void put(mc_cfg *c, const char *key, const char *value, const char *where) {
    entry *e = find(c, key);
    if (e) {
        free(e->value);
        free(e->where);
    } else {
        if (c->n == c->cap) c->e = reallocCheck(c->e, (c->cap = c->cap ? 2 * c->cap : 32) * sizeof(entry));
        e = &c->e[c->n++];
        e->key = strdupCheck(key);
        e->read = 0;
        c->sorted = 0;
    }
    e->value = strdupCheck(value);
    e->where = strdupCheck(where);
}

static int valid_key(const char *k) {
    if (!*k) return 0;
    for (const char *p = k; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '.' || *p == '-')) return 0;
    return 1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = 0;
    return s;
}

static int load_text(mc_cfg *c, const char *text, const char *name, int depth);

static int load_file(mc_cfg *c, const char *path, int depth) {
    if (depth > 16) return mc_fail("%s: includes nested more than 16 deep (a cycle?)", path);
    unsigned char *buf;
    size_t len;
    if (mc_read_file(path, &buf, &len) != 0) return -1;
    /* a UTF-8 byte-order mark (what some editors put first) is not text */
    size_t skip = len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3) ? 3 : 0;
    char *text = mallocCheck(len - skip + 1);
    memcpy(text, buf + skip, len - skip);
    text[len - skip] = 0;
    free(buf);
    int rc = load_text(c, text, path, depth);
    free(text);
    return rc;
}

static int load_text(mc_cfg *c, const char *text, const char *name, int depth) {
    char *copy = strdupCheck(text);
    char *save = NULL, *line;
    int lineno = 0, rc = 0;
    char where[1200];
    /* strtok_r would skip empty lines and shift numbering: split by hand. */
    for (line = copy; line; line = save) {
        char *nl = strchr(line, '\n');
        save = nl ? nl + 1 : NULL;
        if (nl) *nl = 0;
        lineno++;
        char *hash = strchr(line, '#');
        if (hash) *hash = 0;
        char *s = trim(line);
        if (!*s) continue;
        snprintf(where, sizeof where, "%s:%d", name, lineno);
        if (strncmp(s, "include", 7) == 0 && isspace((unsigned char)s[7])) {
            char *inc = trim(s + 7);
            char path[1100];
            const char *slash = strrchr(name, '/');
            if (inc[0] == '/' || !slash) snprintf(path, sizeof path, "%s", inc);
            else snprintf(path, sizeof path, "%.*s/%s", (int)(slash - name), name, inc);
            if (load_file(c, path, depth + 1) != 0) {
                char inner[1024];
                snprintf(inner, sizeof inner, "%s", mc_error());
                rc = mc_fail("%s: in include: %s", where, inner);
                break;
            }
            continue;
        }
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = mc_fail("%s: expected 'key = value' or 'include FILE', got '%s'", where, s);
            break;
        }
        *eq = 0;
        char *k = trim(s), *v = trim(eq + 1);
        if (!valid_key(k)) {
            rc = mc_fail("%s: invalid key '%s' (letters, digits, '_', '-', '.')", where, k);
            break;
        }
        put(c, k, v, where);
    }
    free(copy);
    return rc;
}

int cfg_load(mc_cfg *c, const char *path) { return load_file(c, path, 0); }
int cfg_load_text(mc_cfg *c, const char *text, const char *name) { return load_text(c, text, name, 0); }

int cfg_set(mc_cfg *c, const char *kv) {
    const char *eq = strchr(kv, '=');
    if (!eq) return mc_fail("--set '%s': expected key=value", kv);
    char *k = strdupCheck(kv);
    k[eq - kv] = 0;
    char *key = trim(k);
    if (!valid_key(key)) {
        free(k);
        return mc_fail("--set '%s': invalid key", kv);
    }
    if (strchr(eq + 1, '\n')) {
        free(k);
        return mc_fail("--set: the value of %.*s contains a newline", (int)(eq - kv), kv);
    }
    char *v = strdupCheck(eq + 1);
    put(c, key, trim(v), "--set");
    free(v);
    free(k);
    return 0;
}

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const entry *)a)->key, ((const entry *)b)->key);
}

static void sort(const mc_cfg *cc) {
    mc_cfg *c = (mc_cfg *)cc;
    if (!c->sorted && c->n > 1) qsort(c->e, c->n, sizeof(entry), entry_cmp); /* c->e is NULL when empty */
    c->sorted = 1;
}

size_t cfg_count(const mc_cfg *c) { return c->n; }
const char *cfg_key_at(const mc_cfg *c, size_t i) { sort(c); return i < c->n ? c->e[i].key : NULL; }
const char *cfg_value_at(const mc_cfg *c, size_t i) { sort(c); return i < c->n ? c->e[i].value : NULL; }

const char *cfg_where(const mc_cfg *c, const char *key) {
    entry *e = find(c, key);
    return e ? e->where : NULL;
}

const char *cfg_peek(const mc_cfg *c, const char *key) {
    entry *e = find(c, key);
    return e ? e->value : NULL;
}

static entry *take(mc_cfg *c, const char *key) {
    entry *e = find(c, key);
    if (e) e->read = 1;
    return e;
}

int cfg_get_str(mc_cfg *c, const char *key, const char *def, const char **out) {
    entry *e = take(c, key);
    if (!e) {
        if (!def) return mc_fail("config key '%s' is required but not set; add 'key = value' to the experiment config or pass --set %s=...", key, key);
        *out = def;
        return 0;
    }
    *out = e->value;
    return 0;
}

int cfg_get_int(mc_cfg *c, const char *key, long def, long min, long max, long *out) {
    entry *e = take(c, key);
    if (!e) { *out = def; return 0; }
    long v;
    if (opts_parse_int(e->value, 0, 0, &v) < 0)
        return mc_fail("%s: %s = '%s': not an integer", e->where, key, e->value);
    if (v < min || v > max)
        return mc_fail("%s: %s = %ld: must be in [%ld, %ld]", e->where, key, v, min, max);
    *out = v;
    return 0;
}

int cfg_get_float(mc_cfg *c, const char *key, double def, double min, double max, double *out) {
    entry *e = take(c, key);
    if (!e) { *out = def; return 0; }
    double v;
    if (opts_parse_float(e->value, 0, 0, 0, &v) < 0)
        return mc_fail("%s: %s = '%s': not a finite number", e->where, key, e->value);
    if (v < min || v > max)
        return mc_fail("%s: %s = %g: must be in [%g, %g]", e->where, key, v, min, max);
    *out = v;
    return 0;
}

int cfg_get_bool(mc_cfg *c, const char *key, int def, int *out) {
    entry *e = take(c, key);
    if (!e) { *out = def; return 0; }
    const char *v = e->value;
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on")) *out = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off")) *out = 0;
    else return mc_fail("%s: %s = '%s': not a boolean (true/false)", e->where, key, v);
    return 0;
}

int cfg_get_enum(mc_cfg *c, const char *key, const char *def, const char *const *choices, int *out) {
    const char *v = NULL;
    if (cfg_get_str(c, key, def, &v) != 0) return -1;
    for (int i = 0; choices[i]; i++)
        if (strcmp(v, choices[i]) == 0) { *out = i; return 0; }
    char list[512] = "";
    for (int i = 0; choices[i]; i++) {
        if (i) strncat(list, ", ", sizeof list - strlen(list) - 1);
        strncat(list, choices[i], sizeof list - strlen(list) - 1);
    }
    const char *where = cfg_where(c, key);
    return mc_fail("%s: %s = '%s': must be one of %s", where ? where : "default", key, v, list);
}

const char *cfg_str(mc_cfg *c, const char *key, const char *def) {
    const char *v = NULL;
    if (cfg_get_str(c, key, def, &v) != 0) die("%s", mc_error());
    return v;
}

long cfg_int(mc_cfg *c, const char *key, long def, long min, long max) {
    long v;
    if (cfg_get_int(c, key, def, min, max, &v) != 0) die("%s", mc_error());
    return v;
}

double cfg_float(mc_cfg *c, const char *key, double def, double min, double max) {
    double v;
    if (cfg_get_float(c, key, def, min, max, &v) != 0) die("%s", mc_error());
    return v;
}

int cfg_bool(mc_cfg *c, const char *key, int def) {
    int v;
    if (cfg_get_bool(c, key, def, &v) != 0) die("%s", mc_error());
    return v;
}

int cfg_enum(mc_cfg *c, const char *key, const char *def, const char *const *choices) {
    int v;
    if (cfg_get_enum(c, key, def, choices, &v) != 0) die("%s", mc_error());
    return v;
}

int cfg_check_unknown(const mc_cfg *c, const char *const *namespaces) {
    sort(c);
    for (size_t i = 0; i < c->n; i++) {
        const entry *e = &c->e[i];
        if (e->read) continue;
        const char *dot = strchr(e->key, '.');
        size_t nl = dot ? (size_t)(dot - e->key) : strlen(e->key);
        for (int j = 0; namespaces[j]; j++)
            if (strlen(namespaces[j]) == nl && strncmp(namespaces[j], e->key, nl) == 0)
                return mc_fail("%s: unknown key '%s' (no stage reads it; check the spelling)", e->where, e->key);
    }
    return 0;
}

int cfg_opt_load(const opt_spec *o, const char *path) { return cfg_load(o->dst, path); }
int cfg_opt_set(const opt_spec *o, const char *kv) { return cfg_set(o->dst, kv); }

int cfg_opt_key(const opt_spec *o, const char *value) {
    size_t n = strlen(o->key) + strlen(value) + 2;
    char *kv = mallocCheck(n);
    snprintf(kv, n, "%s=%s", o->key, value);
    int rc = cfg_set(o->dst, kv);
    free(kv);
    return rc;
}
