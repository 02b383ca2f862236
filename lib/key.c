/* key.c - see key.h. */
#include "key.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "art.h"
#include "common.h"
#include "config.h"

typedef struct { char *a, *b; } pair;

struct mc_key {
    char *stage;
    char binary[33];
    pair *cfg, *in;
    size_t ncfg, nin, capcfg, capin;
    char *text;
};

mc_key *key_new(const char *stage) {
    mc_key *k = callocCheck(1, sizeof *k);
    k->stage = strdupCheck(stage);
    return k;
}

void key_free(mc_key *k) {
    if (!k) return;
    for (size_t i = 0; i < k->ncfg; i++) { free(k->cfg[i].a); free(k->cfg[i].b); }
    for (size_t i = 0; i < k->nin; i++) { free(k->in[i].a); free(k->in[i].b); }
    free(k->cfg);
    free(k->in);
    free(k->text);
    free(k->stage);
    free(k);
}

static void add(pair **v, size_t *n, size_t *cap, const char *a, const char *b) {
    for (size_t i = 0; i < *n; i++)
        if (strcmp((*v)[i].a, a) == 0) {
            free((*v)[i].b);
            (*v)[i].b = strdupCheck(b);
            return;
        }
    if (*n == *cap) *v = reallocCheck(*v, (*cap = *cap ? 2 * *cap : 16) * sizeof(pair));
    (*v)[*n].a = strdupCheck(a);
    (*v)[(*n)++].b = strdupCheck(b);
}

int key_file_hex(const char *path, char out[33]) {
    unsigned char *buf;
    size_t len;
    if (mc_read_file(path, &buf, &len) != 0) return -1;
    key_buf_hex(buf, len, out);
    free(buf);
    return 0;
}

void key_buf_hex(const void *p, size_t n, char out[33]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
    art_hex(c.digest, out);
}

int key_binary_file(mc_key *k, const char *path) { return key_file_hex(path, k->binary); }

void key_binary_hex(mc_key *k, const char *hex) { snprintf(k->binary, sizeof k->binary, "%s", hex); }

void key_config(mc_key *k, const char *name, const char *value) {
    add(&k->cfg, &k->ncfg, &k->capcfg, name, value);
}

int key_input(mc_key *k, const char *role, const char *hex) {
    if (!key_is_hex(hex)) return mc_fail("input '%s': '%s' is not a 32-hex-digit key", role, hex);
    add(&k->in, &k->nin, &k->capin, role, hex);
    return 0;
}

static int pair_cmp(const void *x, const void *y) {
    return strcmp(((const pair *)x)->a, ((const pair *)y)->a);
}

const char *key_text(mc_key *k) {
    /* the arrays are NULL while empty: qsort may not be handed NULL */
    if (k->ncfg > 1) qsort(k->cfg, k->ncfg, sizeof(pair), pair_cmp);
    if (k->nin > 1) qsort(k->in, k->nin, sizeof(pair), pair_cmp);
    size_t len = strlen(k->stage) + 64;
    for (size_t i = 0; i < k->ncfg; i++) len += strlen(k->cfg[i].a) + strlen(k->cfg[i].b) + 10;
    for (size_t i = 0; i < k->nin; i++) len += strlen(k->in[i].a) + strlen(k->in[i].b) + 10;
    free(k->text);
    k->text = mallocCheck(len);
    char *p = k->text;
    p += sprintf(p, "stage %s\nbinary %s\n", k->stage, k->binary[0] ? k->binary : "-");
    for (size_t i = 0; i < k->ncfg; i++) p += sprintf(p, "config %s=%s\n", k->cfg[i].a, k->cfg[i].b);
    for (size_t i = 0; i < k->nin; i++) p += sprintf(p, "input %s %s\n", k->in[i].a, k->in[i].b);
    return k->text;
}

void key_digest(mc_key *k, char out[33]) {
    const char *t = key_text(k);
    key_buf_hex(t, strlen(t), out);
}

mc_key *key_new_self(const char *stage, const struct mc_cfg *cfg, const char *const *namespaces) {
    mc_key *k = key_new(stage);
    if (key_binary_file(k, "/proc/self/exe") < 0) die("%s", mc_error());
    for (size_t i = 0; cfg && i < cfg_count(cfg); i++) {
        const char *name = cfg_key_at(cfg, i);
        const char *dot = strchr(name, '.');
        size_t n = dot ? (size_t)(dot - name) : strlen(name);
        for (int j = 0; namespaces[j]; j++)
            if (strlen(namespaces[j]) == n && !strncmp(namespaces[j], name, n)) {
                key_config(k, name, cfg_value_at(cfg, i));
                break;
            }
    }
    return k;
}

void key_role_names(const char *const *names, int n, char (*out)[48]) {
    static const char word[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";
    int named = 1;
    for (int i = 0; i < n && named; i++) {
        const char *s = names[i] ? names[i] : "";
        size_t len = strlen(s);
        named = len > 0 && len < sizeof out[i] && strspn(s, word) == len;
        for (int j = 0; j < i && named; j++) named = strcmp(s, names[j]) != 0;
    }
    for (int i = 0; i < n; i++) {
        if (named) snprintf(out[i], sizeof out[i], "%s", names[i]);
        else snprintf(out[i], sizeof out[i], "%d", i);
    }
}

int key_is_hex(const char *s) {
    size_t n = strlen(s);
    if (n != 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}
