/* json.c - see json.h. A recursive-descent parser over a byte range with a
 * depth limit, and a writer into a growable buffer. */
#include "json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ------------------------------------------------------------------ reader */

typedef struct {
    const char *s, *end, *p;
    const char *name;
    long line0; /* > 0: the text is line line0 of file `name` (json_parse_line) */
    int failed;
} jparser;

static mc_val *jp_fail(jparser *j, const char *fmt, ...) MC_PRINTF(2, 3);
static mc_val *jp_fail(jparser *j, const char *fmt, ...) {
    if (j->failed) return NULL;
    j->failed = 1;
    long line = 1, col = 1;
    for (const char *q = j->s; q < j->p && q < j->end; q++) {
        if (*q == '\n') { line++; col = 1; }
        else col++;
    }
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    /* quoted input can hold control bytes: keep the message one line */
    for (char *q = why; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
    if (j->line0 > 0) mc_fail("%s:%ld: JSON error at column %ld: %s", j->name, j->line0 + line - 1, col, why);
    else mc_fail("%s: JSON error at line %ld, column %ld: %s", j->name, line, col, why);
    return NULL;
}

static void jp_ws(jparser *j) {
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

/* Describe the byte at p for messages. */
static const char *jp_what(jparser *j, char buf[16]) {
    if (j->p >= j->end) return "end of input";
    unsigned char c = (unsigned char)*j->p;
    if (c >= 0x20 && c < 0x7f) snprintf(buf, 16, "'%c'", c);
    else snprintf(buf, 16, "byte 0x%02x", c);
    return buf;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int jp_hex4(jparser *j, unsigned *out) {
    if (j->end - j->p < 4) return -1;
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval((unsigned char)j->p[i]);
        if (h < 0) return -1;
        v = v * 16 + (unsigned)h;
    }
    j->p += 4;
    *out = v;
    return 0;
}

static void put_utf8(json_buf *b, unsigned cp) {
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xc0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3f)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f)); n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)); u[3] = (char)(0x80 | (cp & 0x3f)); n = 4;
    }
    jb_putn(b, u, n);
}

/* Parse a string literal at p (which is '"') into b. -1 on error. */
static int jp_string(jparser *j, json_buf *b) {
    j->p++;
    for (;;) {
        const char *run = j->p;
        while (j->p < j->end && *j->p != '"' && *j->p != '\\' && (unsigned char)*j->p >= 0x20) j->p++;
        jb_putn(b, run, (size_t)(j->p - run));
        if (j->p >= j->end) { jp_fail(j, "unterminated string"); return -1; }
        unsigned char c = (unsigned char)*j->p;
        if (c == '"') { j->p++; return 0; }
        if (c < 0x20) { jp_fail(j, "control byte 0x%02x inside a string (escape it)", c); return -1; }
        j->p++; /* backslash */
        if (j->p >= j->end) { jp_fail(j, "unterminated string"); return -1; }
        char e = *j->p++;
        switch (e) {
        case '"': jb_putn(b, "\"", 1); break;
        case '\\': jb_putn(b, "\\", 1); break;
        case '/': jb_putn(b, "/", 1); break;
        case 'b': jb_putn(b, "\b", 1); break;
        case 'f': jb_putn(b, "\f", 1); break;
        case 'n': jb_putn(b, "\n", 1); break;
        case 'r': jb_putn(b, "\r", 1); break;
        case 't': jb_putn(b, "\t", 1); break;
        case 'u': {
            unsigned cp;
            if (jp_hex4(j, &cp) < 0) { jp_fail(j, "\\u needs four hex digits"); return -1; }
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (j->end - j->p < 2 || j->p[0] != '\\' || j->p[1] != 'u') {
                    jp_fail(j, "unpaired UTF-16 surrogate \\u%04x", cp);
                    return -1;
                }
                j->p += 2;
                if (jp_hex4(j, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff) {
                    jp_fail(j, "unpaired UTF-16 surrogate \\u%04x", cp);
                    return -1;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                jp_fail(j, "unpaired UTF-16 surrogate \\u%04x", cp);
                return -1;
            }
            if (cp == 0) { jp_fail(j, "\\u0000 inside a string is not supported"); return -1; }
            put_utf8(b, cp);
            break;
        }
        default: {
            char w[16];
            j->p--;
            jp_fail(j, "invalid escape: backslash before %s", jp_what(j, w));
            return -1;
        }
        }
    }
}

static mc_val *jp_number(jparser *j) {
    const char *start = j->p;
    int is_int = 1;
    if (j->p < j->end && *j->p == '-') j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jp_fail(j, "malformed number");
    if (*j->p == '0') {
        j->p++;
        if (j->p < j->end && *j->p >= '0' && *j->p <= '9') return jp_fail(j, "number with a leading zero");
    } else {
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && *j->p == '.') {
        is_int = 0;
        j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jp_fail(j, "malformed number: digit expected after '.'");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
        is_int = 0;
        j->p++;
        if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
        if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jp_fail(j, "malformed number: digit expected in exponent");
        while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
    }
    size_t n = (size_t)(j->p - start);
    char buf[128];
    if (n >= sizeof buf) {
        if (is_int) { j->p = start; return jp_fail(j, "integer too long"); }
        /* a long decimal: copy to the heap for strtod */
        char *h = mallocCheck(n + 1);
        memcpy(h, start, n);
        h[n] = 0;
        double d = strtod(h, NULL);
        free(h);
        return val_float(d);
    }
    memcpy(buf, start, n);
    buf[n] = 0;
    if (is_int) {
        errno = 0;
        if (buf[0] == '-') {
            long long v = strtoll(buf, NULL, 10);
            if (errno == 0) return val_int(v);
        } else {
            unsigned long long v = strtoull(buf, NULL, 10);
            if (errno == 0) {
                if (v <= (unsigned long long)INT64_MAX) return val_int((int64_t)v);
                mc_val *u = val_int(0);
                u->type = VAL_UINT;
                u->v.u = v;
                return u;
            }
        }
        /* out of 64-bit range: keep it as a double */
    }
    return val_float(strtod(buf, NULL));
}

static mc_val *jp_value(jparser *j, int depth);

static mc_val *jp_object(jparser *j, int depth) {
    mc_val *m = val_map();
    json_buf key = {0};
    j->p++; /* { */
    jp_ws(j);
    if (j->p < j->end && *j->p == '}') { j->p++; jb_free(&key); return m; }
    for (;;) {
        char w[16];
        jp_ws(j);
        if (j->p >= j->end || *j->p != '"') { jp_fail(j, "expected a member name (a string), found %s", jp_what(j, w)); goto fail; }
        key.len = 0;
        const char *kpos = j->p;
        if (jp_string(j, &key) < 0) goto fail;
        jb_putn(&key, "", 0);
        if (val_get(m, key.s)) {
            j->p = kpos;
            jp_fail(j, "member \"%.80s\" appears twice", key.s);
            goto fail;
        }
        jp_ws(j);
        if (j->p >= j->end || *j->p != ':') { jp_fail(j, "expected ':' after a member name, found %s", jp_what(j, w)); goto fail; }
        j->p++;
        mc_val *v = jp_value(j, depth + 1);
        if (!v) goto fail;
        val_set(m, key.s, v);
        jp_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == '}') { j->p++; break; }
        jp_fail(j, "expected ',' or '}' in an object, found %s", jp_what(j, w));
        goto fail;
    }
    jb_free(&key);
    return m;
fail:
    jb_free(&key);
    val_free(m);
    return NULL;
}

static mc_val *jp_array(jparser *j, int depth) {
    mc_val *a = val_array();
    j->p++; /* [ */
    jp_ws(j);
    if (j->p < j->end && *j->p == ']') { j->p++; return a; }
    for (;;) {
        char w[16];
        mc_val *v = jp_value(j, depth + 1);
        if (!v) { val_free(a); return NULL; }
        val_push(a, v);
        jp_ws(j);
        if (j->p < j->end && *j->p == ',') { j->p++; continue; }
        if (j->p < j->end && *j->p == ']') { j->p++; return a; }
        jp_fail(j, "expected ',' or ']' in an array, found %s", jp_what(j, w));
        val_free(a);
        return NULL;
    }
}

static int jp_word(jparser *j, const char *w) {
    size_t n = strlen(w);
    if ((size_t)(j->end - j->p) >= n && !memcmp(j->p, w, n)) { j->p += n; return 1; }
    return 0;
}

static mc_val *jp_value(jparser *j, int depth) {
    char w[16];
    if (depth > JSON_MAX_DEPTH) return jp_fail(j, "nested deeper than %d levels", JSON_MAX_DEPTH);
    jp_ws(j);
    if (j->p >= j->end) return jp_fail(j, "unexpected end of input, a value was expected");
    switch (*j->p) {
    case '{': return jp_object(j, depth);
    case '[': return jp_array(j, depth);
    case '"': {
        json_buf b = {0};
        if (jp_string(j, &b) < 0) { jb_free(&b); return NULL; }
        mc_val *v = val_strn(b.s ? b.s : "", b.len);
        jb_free(&b);
        return v;
    }
    case 't': if (jp_word(j, "true")) return val_bool(1); break;
    case 'f': if (jp_word(j, "false")) return val_bool(0); break;
    case 'n': if (jp_word(j, "null")) return val_nil(); break;
    default:
        if (*j->p == '-' || (*j->p >= '0' && *j->p <= '9')) return jp_number(j);
    }
    return jp_fail(j, "unexpected %s, a value was expected", jp_what(j, w));
}

static mc_val *parse(const char *text, size_t n, const char *name, long line0) {
    jparser j = {text, text + n, text, name ? name : "(json)", line0, 0};
    mc_val *v = jp_value(&j, 0);
    if (!v) return NULL;
    jp_ws(&j);
    if (j.p < j.end) {
        char w[16];
        jp_fail(&j, "unexpected %s after the end of the value", jp_what(&j, w));
        val_free(v);
        return NULL;
    }
    return v;
}

mc_val *json_parse(const char *text, size_t n, const char *name) { return parse(text, n, name, 0); }

mc_val *json_parse_line(const char *text, size_t n, const char *file, long line) {
    return parse(text, n, file, line > 0 ? line : 1);
}

mc_val *json_parse_file(const char *path) {
    unsigned char *buf;
    size_t len;
    if (mc_read_file(path, &buf, &len) < 0) return NULL;
    mc_val *v = json_parse((const char *)buf, len, path);
    free(buf);
    return v;
}

/* ------------------------------------------------------------------ writer */

void jb_free(json_buf *b) {
    free(b->s);
    b->s = NULL;
    b->len = b->cap = 0;
}

void jb_putn(json_buf *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->s = reallocCheck(b->s, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

void jb_puts(json_buf *b, const char *s) { jb_putn(b, s, strlen(s)); }

void jb_printf(json_buf *b, const char *fmt, ...) {
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof small) { jb_putn(b, small, (size_t)n); return; }
    char *big = mallocCheck((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    jb_putn(b, big, (size_t)n);
    free(big);
}

void jb_str(json_buf *b, const char *s, size_t n) {
    jb_putn(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        jb_putn(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': jb_puts(b, "\\\""); break;
        case '\\': jb_puts(b, "\\\\"); break;
        case '\n': jb_puts(b, "\\n"); break;
        case '\t': jb_puts(b, "\\t"); break;
        case '\r': jb_puts(b, "\\r"); break;
        default: jb_printf(b, "\\u%04x", c);
        }
    }
    jb_putn(b, s + run, n - run);
    jb_putn(b, "\"", 1);
}

void jb_double(json_buf *b, double d) {
    if (!isfinite(d)) { jb_puts(b, "null"); return; }
    char buf[40];
    float f = (float)d;
    int as_float = (double)f == d;
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, d);
        double back = strtod(buf, NULL);
        if (as_float ? (float)back == f : back == d) break;
    }
    /* keep it a JSON float ("1.0", not "1") so readers see a float */
    if (!strpbrk(buf, ".eEn")) strcat(buf, ".0");
    jb_puts(b, buf);
}

static void nl(json_buf *b, int indent, int level) {
    if (indent <= 0) return;
    jb_putn(b, "\n", 1);
    for (int i = 0; i < indent * level; i++) jb_putn(b, " ", 1);
}

static void jw(json_buf *b, const mc_val *v, int indent, int level) {
    if (!v) { jb_puts(b, "null"); return; }
    switch (v->type) {
    case VAL_NIL: jb_puts(b, "null"); break;
    case VAL_BOOL: jb_puts(b, v->v.b ? "true" : "false"); break;
    case VAL_INT: jb_printf(b, "%" PRId64, v->v.i); break;
    case VAL_UINT: jb_printf(b, "%" PRIu64, v->v.u); break;
    case VAL_FLOAT: jb_double(b, v->v.f); break;
    case VAL_STR:
    case VAL_BIN: jb_str(b, v->v.str.s, v->v.str.len); break;
    case VAL_ARRAY:
    case VAL_MAP: {
        int map = v->type == VAL_MAP;
        jb_puts(b, map ? "{" : "[");
        for (size_t i = 0; i < v->v.c.n; i++) {
            if (i) jb_puts(b, ",");
            nl(b, indent, level + 1);
            if (map) {
                jb_str(b, v->v.c.keys[i], strlen(v->v.c.keys[i]));
                jb_puts(b, indent > 0 ? ": " : ":");
            }
            jw(b, v->v.c.items[i], indent, level + 1);
        }
        if (v->v.c.n) nl(b, indent, level);
        jb_puts(b, map ? "}" : "]");
        break;
    }
    }
}

void json_write(json_buf *b, const mc_val *v, int indent) { jw(b, v, indent, 0); }
