/* spm.c - SentencePiece `.model` reader, normaliser and unigram encoder.
 * See spm.h for the file format. The algorithms follow SentencePiece's
 * documented behaviour (normalizer: longest-match charsmap rules, heading /
 * trailing / repeated whitespace removal, dummy prefix, U+2581 escaping;
 * unigram: Viterbi over the pieces that prefix each character position, an
 * unknown piece of score min_score - 10 for characters no piece covers), and
 * float arithmetic in the same order, so ties resolve the same way.
 */
#include "spm.h"

#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

/* ------------------------------------------------------------ byte trie */

/* Pieces live in a trie whose edges are kept in one open-addressing hash
 * table keyed by (node, byte); the root's 256 edges are a plain table. */
typedef struct {
    int32_t *value;       /* per node: piece id or -1 */
    int32_t n_nodes, cap_nodes;
    uint32_t *hkey;       /* (node << 8 | byte) + 1, 0 = empty */
    int32_t *hval;        /* child node */
    uint32_t hmask;
    int32_t root[256];    /* child of the root per byte, 0 = none */
    uint32_t n_edges;
} trie;

static uint32_t trie_hash(uint32_t k) { return (k * 2654435761u) ^ (k >> 15); }

static int32_t trie_child(const trie *t, int32_t node, unsigned char b) {
    if (node == 0) return t->root[b];
    if (!t->hkey) return 0;
    uint32_t k = ((uint32_t)node << 8 | b) + 1;
    for (uint32_t h = trie_hash(k) & t->hmask;; h = (h + 1) & t->hmask) {
        if (t->hkey[h] == k) return t->hval[h];
        if (t->hkey[h] == 0) return 0;
    }
}

static void trie_grow(trie *t) {
    uint32_t ncap = t->hmask ? (t->hmask + 1) * 2 : 1024;
    uint32_t *nk = callocCheck(ncap, sizeof *nk);
    int32_t *nv = mallocCheck(ncap * sizeof *nv);
    for (uint32_t i = 0; t->hmask && i <= t->hmask; i++) {
        if (!t->hkey[i]) continue;
        uint32_t h = trie_hash(t->hkey[i]) & (ncap - 1);
        while (nk[h]) h = (h + 1) & (ncap - 1);
        nk[h] = t->hkey[i];
        nv[h] = t->hval[i];
    }
    free(t->hkey);
    free(t->hval);
    t->hkey = nk;
    t->hval = nv;
    t->hmask = ncap - 1;
}

static int32_t trie_new_node(trie *t) {
    if (t->n_nodes == t->cap_nodes) {
        t->cap_nodes = t->cap_nodes ? t->cap_nodes * 2 : 1024;
        t->value = reallocCheck(t->value, (size_t)t->cap_nodes * sizeof *t->value);
    }
    t->value[t->n_nodes] = -1;
    return t->n_nodes++;
}

/* Insert key -> id; the first id given for a key wins (returns 0 then). */
static int trie_insert(trie *t, const char *key, size_t n, int32_t id) {
    if (t->n_nodes == 0) trie_new_node(t);
    int32_t node = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)key[i];
        int32_t c = trie_child(t, node, b);
        if (!c) {
            c = trie_new_node(t);
            if (node == 0) {
                t->root[b] = c;
            } else {
                if ((t->n_edges + 1) * 2 > t->hmask) trie_grow(t);
                uint32_t k = ((uint32_t)node << 8 | b) + 1;
                uint32_t h = trie_hash(k) & t->hmask;
                while (t->hkey[h]) h = (h + 1) & t->hmask;
                t->hkey[h] = k;
                t->hval[h] = c;
                t->n_edges++;
            }
        }
        node = c;
    }
    if (t->value[node] >= 0) return 0;
    t->value[node] = id;
    return 1;
}

static void trie_free(trie *t) {
    free(t->value);
    free(t->hkey);
    free(t->hval);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------ the model */

struct spm_model {
    char *name;
    int n;                 /* pieces */
    char **piece;
    float *score;
    unsigned char *type;
    int unk_id, bos_id, eos_id, pad_id;
    int model_type, byte_fallback, ws_suffix;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    float min_score, max_score;
    int byte_id[256];
    trie pieces;           /* NORMAL, USER_DEFINED, UNUSED pieces */
    trie all;              /* every piece, for spm_piece_id */
    trie user;             /* USER_DEFINED pieces (normaliser's matcher) */
    int n_user;
    /* charsmap */
    unsigned char *charsmap; size_t charsmap_len;
    const unsigned char *da;  /* double array units (u32 LE) */
    size_t da_units;
    const char *repl;         /* replacement strings */
    size_t repl_len;
    /* ASCII fast path: for byte b < 128 whose charsmap lookup cannot be
     * longer than one byte, ascii_len[b] bytes at ascii_out[b] replace it. */
    unsigned char ascii_fast[128];
    const char *ascii_out[128];
    unsigned char ascii_len[128];
};

/* ------------------------------------------------------------ protobuf */

typedef struct {
    const unsigned char *p, *end;
    int bad;
} pb;

static uint64_t pb_varint(pb *r) {
    uint64_t v = 0;
    for (int s = 0; s < 64; s += 7) {
        if (r->p >= r->end) { r->bad = 1; return 0; }
        unsigned char b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << s;
        if (!(b & 0x80)) return v;
    }
    r->bad = 1;
    return 0;
}

/* Read one field header; returns 0 at the end of the message. */
static int pb_next(pb *r, uint32_t *field, int *wire) {
    if (r->p >= r->end || r->bad) return 0;
    uint64_t k = pb_varint(r);
    *field = (uint32_t)(k >> 3);
    *wire = (int)(k & 7);
    return !r->bad;
}

/* Length-delimited payload. */
static pb pb_sub(pb *r) {
    pb s = { 0, 0, 0 };
    uint64_t n = pb_varint(r);
    if (r->bad || n > (uint64_t)(r->end - r->p)) { r->bad = 1; s.bad = 1; return s; }
    s.p = r->p;
    s.end = r->p + n;
    r->p += n;
    return s;
}

static uint32_t pb_fixed32(pb *r) {
    if (r->end - r->p < 4) { r->bad = 1; return 0; }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static void pb_skip(pb *r, int wire) {
    switch (wire) {
    case 0: pb_varint(r); break;
    case 1: if (r->end - r->p < 8) r->bad = 1; else r->p += 8; break;
    case 2: pb_sub(r); break;
    case 5: pb_fixed32(r); break;
    default: r->bad = 1;
    }
}

/* ------------------------------------------------------------ darts */

static uint32_t da_unit(const spm_model *m, size_t i) {
    const unsigned char *u = m->da + 4 * i;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}
static uint32_t da_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static uint32_t da_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
static int da_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t da_value(uint32_t u) { return u & ((1u << 31) - 1); }

/* Longest charsmap rule that prefixes s[0..n): its length (0 if none) and
 * the offset of its replacement in m->repl. `walk_only` asks whether any
 * key continues past the whole of s (returns 1 if the path exists). */
static size_t da_longest(const spm_model *m, const unsigned char *s, size_t n, uint32_t *value,
                         int *path_exists) {
    size_t best = 0;
    if (path_exists) *path_exists = 0;
    if (!m->da_units) return 0;
    size_t pos = da_offset(da_unit(m, 0));
    for (size_t i = 0; i < n; i++) {
        pos ^= s[i];
        if (pos >= m->da_units) return best;
        uint32_t u = da_unit(m, pos);
        if (da_label(u) != s[i]) return best;
        pos ^= da_offset(u);
        if (pos >= m->da_units) return best;
        if (da_has_leaf(u)) {
            uint32_t v = da_value(da_unit(m, pos));
            if (v < m->repl_len) { best = i + 1; *value = v; }
        }
    }
    if (path_exists) *path_exists = 1;
    return best;
}

/* ------------------------------------------------------------ UTF-8 */

static size_t one_char_len(unsigned char c) {
    static const unsigned char len[16] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4 };
    return len[c >> 4];
}

/* Length of a valid UTF-8 character at s (n bytes left), 0 if invalid.
 * U+FFFD written out (EF BF BD) counts as valid, as in SentencePiece. */
static size_t utf8_valid_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    uint32_t cp;
    if (n >= 2 && (c & 0xE0) == 0xC0) {
        cp = (c & 0x1F) << 6 | (s[1] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && cp >= 0x80) return 2;
    } else if (n >= 3 && (c & 0xF0) == 0xE0) {
        cp = (c & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && cp >= 0x800 &&
            (cp < 0xD800 || cp >= 0xE000))
            return 3;
    } else if (n >= 4 && (c & 0xF8) == 0xF0) {
        cp = (c & 0x07) << 18 | (s[1] & 0x3F) << 12 | (s[2] & 0x3F) << 6 | (s[3] & 0x3F);
        if ((s[1] & 0xC0) == 0x80 && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 &&
            cp >= 0x10000 && cp <= 0x10FFFF)
            return 4;
    }
    return 0;
}

/* ------------------------------------------------------------ loading */

static int parse_piece(spm_model *m, pb r) {
    const unsigned char *s = NULL;
    size_t n = 0;
    float score = 0;
    int type = SPM_NORMAL;
    uint32_t f;
    int w;
    while (pb_next(&r, &f, &w)) {
        if (f == 1 && w == 2) {
            pb sub = pb_sub(&r);
            s = sub.p;
            n = (size_t)(sub.end - sub.p);
        } else if (f == 2 && w == 5) {
            uint32_t bits = pb_fixed32(&r);
            memcpy(&score, &bits, 4);
        } else if (f == 3 && w == 0) {
            type = (int)pb_varint(&r);
        } else {
            pb_skip(&r, w);
        }
    }
    if (r.bad) return -1;
    if (type < SPM_NORMAL || type > SPM_BYTE) type = SPM_NORMAL;
    int i = m->n++;
    m->piece = reallocCheck(m->piece, (size_t)m->n * sizeof *m->piece);
    m->score = reallocCheck(m->score, (size_t)m->n * sizeof *m->score);
    m->type = reallocCheck(m->type, (size_t)m->n);
    m->piece[i] = mallocCheck(n + 1);
    if (n) memcpy(m->piece[i], s, n);
    m->piece[i][n] = 0;
    m->score[i] = score;
    m->type[i] = (unsigned char)type;
    return 0;
}

static int parse_trainer(spm_model *m, pb r) {
    uint32_t f;
    int w;
    while (pb_next(&r, &f, &w)) {
        if (w != 0) { pb_skip(&r, w); continue; }
        int64_t v = (int64_t)pb_varint(&r);
        switch (f) {
        case 3: m->model_type = (int)v; break;
        case 24: m->ws_suffix = v != 0; break;
        case 35: m->byte_fallback = v != 0; break;
        case 40: m->unk_id = (int32_t)v; break;
        case 41: m->bos_id = (int32_t)v; break;
        case 42: m->eos_id = (int32_t)v; break;
        case 43: m->pad_id = (int32_t)v; break;
        default: break;
        }
    }
    return r.bad ? -1 : 0;
}

static int parse_normalizer(spm_model *m, pb r) {
    uint32_t f;
    int w;
    while (pb_next(&r, &f, &w)) {
        if (f == 2 && w == 2) {
            pb sub = pb_sub(&r);
            if (r.bad) break;
            m->charsmap_len = (size_t)(sub.end - sub.p);
            m->charsmap = mallocCheck(m->charsmap_len + 1);
            memcpy(m->charsmap, sub.p, m->charsmap_len);
        } else if (w == 0 && (f == 3 || f == 4 || f == 5)) {
            int v = pb_varint(&r) != 0;
            if (f == 3) m->add_dummy_prefix = v;
            else if (f == 4) m->remove_extra_ws = v;
            else m->escape_ws = v;
        } else {
            pb_skip(&r, w);
        }
    }
    return r.bad ? -1 : 0;
}

spm_model *spm_load_buffer(const void *buf, size_t len, const char *name) {
    spm_model *m = callocCheck(1, sizeof *m);
    m->name = strdupCheck(name);
    m->unk_id = 0; m->bos_id = 1; m->eos_id = 2; m->pad_id = -1;   /* proto defaults */
    m->model_type = 1;
    m->add_dummy_prefix = m->remove_extra_ws = m->escape_ws = 1;
    pb r = { buf, (const unsigned char *)buf + len, 0 };
    uint32_t f;
    int w;
    while (pb_next(&r, &f, &w)) {
        if (w == 2 && (f == 1 || f == 2 || f == 3)) {
            pb sub = pb_sub(&r);
            if (r.bad) break;
            int rc = f == 1 ? parse_piece(m, sub) : f == 2 ? parse_trainer(m, sub)
                                                           : parse_normalizer(m, sub);
            if (rc) { r.bad = 1; break; }
        } else {
            pb_skip(&r, w);
        }
    }
    if (r.bad || m->n == 0) {
        mc_fail("%s: not a SentencePiece model (protobuf %s): pass a .model file written by spm_train",
                name, r.bad ? "is malformed" : "has no pieces");
        spm_free(m);
        return NULL;
    }
    if (m->model_type != 1) {
        mc_fail("%s: SentencePiece model type %d is not unigram: only unigram models "
                "(T5's kind) are supported", name, m->model_type);
        spm_free(m);
        return NULL;
    }
    /* Pieces. The unknown piece's id comes from its type, as SentencePiece does. */
    m->min_score = FLT_MAX;
    m->max_score = FLT_MIN;
    int unk = -1;
    for (int i = 0; i < 256; i++) m->byte_id[i] = -1;
    for (int i = 0; i < m->n; i++) {
        const char *p = m->piece[i];
        size_t pl = strlen(p);
        int t = m->type[i];
        if (pl == 0) {
            mc_fail("%s: piece %d is empty: the model file is damaged", name, i);
            spm_free(m);
            return NULL;
        }
        if (!trie_insert(&m->all, p, pl, i)) {
            mc_fail("%s: piece '%s' (id %d) is defined twice: the model file is damaged",
                    name, p, i);
            spm_free(m);
            return NULL;
        }
        if (t == SPM_NORMAL || t == SPM_USER_DEFINED || t == SPM_UNUSED)
            trie_insert(&m->pieces, p, pl, i);
        if (t == SPM_USER_DEFINED) { trie_insert(&m->user, p, pl, i); m->n_user++; }
        if (t == SPM_UNKNOWN) unk = i;
        if (t == SPM_NORMAL) {
            if (m->score[i] < m->min_score) m->min_score = m->score[i];
            if (m->score[i] > m->max_score) m->max_score = m->score[i];
        }
        if (t == SPM_BYTE && pl == 6 && p[0] == '<' && p[1] == '0' && p[2] == 'x' && p[5] == '>') {
            unsigned v = (unsigned)strtoul(p + 3, NULL, 16);
            if (v < 256) m->byte_id[v] = i;
        }
    }
    if (unk < 0) {
        mc_fail("%s: the model has no unknown piece: the model file is damaged", name);
        spm_free(m);
        return NULL;
    }
    m->unk_id = unk;
    if (m->byte_fallback) {
        for (int b = 0; b < 256; b++)
            if (m->byte_id[b] < 0) {
                mc_fail("%s: byte_fallback is set but piece <0x%02X> is missing", name, b);
                spm_free(m);
                return NULL;
            }
    }
    /* Charsmap. */
    if (m->charsmap_len) {
        if (m->charsmap_len <= 4) goto bad_map;
        uint32_t tsize = (uint32_t)m->charsmap[0] | (uint32_t)m->charsmap[1] << 8 |
                         (uint32_t)m->charsmap[2] << 16 | (uint32_t)m->charsmap[3] << 24;
        if (tsize >= m->charsmap_len - 4 || tsize % 4) goto bad_map;
        m->da = m->charsmap + 4;
        m->da_units = tsize / 4;
        m->repl = (const char *)m->charsmap + 4 + tsize;
        m->repl_len = m->charsmap_len - 4 - tsize;
        m->charsmap[m->charsmap_len] = 0;   /* the last replacement string ends */
    }
    for (int b = 0; b < 128; b++) {
        unsigned char s[2] = { (unsigned char)b, 0 };
        uint32_t v = 0;
        int exists = 0;
        size_t l = da_longest(m, s, 1, &v, &exists);
        int longer = 0;
        if (exists)
            for (int c = 0; c < 256 && !longer; c++) {
                s[1] = (unsigned char)c;
                int e2 = 0;
                uint32_t v2;
                da_longest(m, s, 2, &v2, &e2);
                longer = e2;
            }
        m->ascii_fast[b] = !longer;
        if (l) {
            m->ascii_out[b] = m->repl + v;
            m->ascii_len[b] = (unsigned char)strlen(m->repl + v);
        } else {
            static char ident[128];
            ident[b] = (char)b;
            m->ascii_out[b] = &ident[b];
            m->ascii_len[b] = 1;
        }
    }
    return m;
bad_map:
    mc_fail("%s: the normaliser's precompiled charsmap is malformed: the model file is damaged",
            name);
    spm_free(m);
    return NULL;
}

spm_model *spm_load(const char *path) {
    unsigned char *buf;
    size_t len;
    if (mc_read_file(path, &buf, &len)) {
        mc_fail("%s: cannot read the SentencePiece model: check the path", path);
        return NULL;
    }
    spm_model *m = spm_load_buffer(buf, len, path);
    free(buf);
    return m;
}

void spm_free(spm_model *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) free(m->piece[i]);
    free(m->piece);
    free(m->score);
    free(m->type);
    free(m->charsmap);
    free(m->name);
    trie_free(&m->pieces);
    trie_free(&m->all);
    trie_free(&m->user);
    free(m);
}

int spm_size(const spm_model *m) { return m->n; }
const char *spm_piece(const spm_model *m, int id) { return id >= 0 && id < m->n ? m->piece[id] : NULL; }
float spm_score(const spm_model *m, int id) { return m->score[id]; }
int spm_type(const spm_model *m, int id) { return m->type[id]; }
int spm_unk_id(const spm_model *m) { return m->unk_id; }
int spm_eos_id(const spm_model *m) { return m->eos_id; }
int spm_pad_id(const spm_model *m) { return m->pad_id; }
int spm_bos_id(const spm_model *m) { return m->bos_id; }
int spm_byte_fallback(const spm_model *m) { return m->byte_fallback; }

int spm_check_t5_ids(const spm_model *m, const char *name) {
    if (m->pad_id != 0 || m->eos_id != 1 || m->unk_id != 2)
        return mc_fail("%s: special ids pad %d, eos %d, unk %d; T5 needs pad 0, eos 1, unk 2 (train it with "
                       "--pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1, as tokenize --train-vocab does)",
                       name, m->pad_id, m->eos_id, m->unk_id);
    return 0;
}

int spm_piece_id(const spm_model *m, const char *piece) {
    int32_t node = 0;
    if (!m->all.n_nodes) return -1;
    for (const unsigned char *p = (const unsigned char *)piece; *p; p++)
        if (!(node = trie_child(&m->all, node, *p))) return -1;
    return m->all.value[node];
}

/* ------------------------------------------------------------ normaliser */

void spm_ws_free(spm_ws *w) {
    free(w->norm), free(w->score), free(w->from), free(w->id), free(w->ids);
    memset(w, 0, sizeof *w);
}

static void ws_reserve(spm_ws *w, size_t need) {
    if (need + 8 > w->norm_cap) {
        w->norm_cap = (need + 8) * 2;
        w->norm = reallocCheck(w->norm, w->norm_cap);
    }
}

/* Longest user-defined symbol prefixing s (0 if none). */
static size_t user_match(const spm_model *m, const unsigned char *s, size_t n) {
    int32_t node = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(node = trie_child(&m->user, node, s[i]))) break;
        if (m->user.value[node] >= 0) best = i + 1;
    }
    return best;
}

/* One normalisation step at s: the replacement text (out, olen) and the
 * number of input bytes consumed. */
static size_t norm_prefix(const spm_model *m, const unsigned char *s, size_t n, const char **out,
                          size_t *olen) {
    if (m->n_user) {
        size_t l = user_match(m, s, n);
        if (l) { *out = (const char *)s; *olen = l; return l; }
    }
    if (s[0] < 0x80 && m->ascii_fast[s[0]]) {
        *out = m->ascii_out[s[0]];
        *olen = m->ascii_len[s[0]];
        return 1;
    }
    uint32_t v = 0;
    size_t l = da_longest(m, s, n, &v, NULL);
    if (l) {
        *out = m->repl + v;
        *olen = strlen(*out);
        return l;
    }
    size_t cl = utf8_valid_len(s, n);
    if (!cl) {
        *out = "\xEF\xBF\xBD";
        *olen = 3;
        return 1;
    }
    *out = (const char *)s;
    *olen = cl;
    return cl;
}

size_t spm_normalize(const spm_model *m, const char *text, size_t n, spm_ws *w) {
    const unsigned char *s = (const unsigned char *)text;
    size_t len = 0;
    ws_reserve(w, 3 * n + 3);
    w->norm[0] = 0;
    if (n == 0) return 0;
    const char *o;
    size_t ol;
    if (m->remove_extra_ws) {
        while (n) {
            size_t c = norm_prefix(m, s, n, &o, &ol);
            if (!(ol == 1 && o[0] == ' ')) break;
            s += c;
            n -= c;
        }
    }
    if (n == 0) return 0;
    static const char space_sym[3] = { '\xe2', '\x96', '\x81' };
    char *d = w->norm;
    if (!m->ws_suffix && m->add_dummy_prefix) {
        if (m->escape_ws) { memcpy(d, space_sym, 3); len = 3; }
        else d[len++] = ' ';
    }
    int prev_space = m->remove_extra_ws;
    while (n) {
        size_t c = norm_prefix(m, s, n, &o, &ol);
        if (prev_space)
            while (ol && *o == ' ') { o++; ol--; }
        if (ol) {
            /* a replacement can be longer than 3x its source: grow */
            if (len + 3 * ol + 8 > w->norm_cap) {
                w->norm_cap = (len + 3 * ol + 3 * n + 8) * 2;
                w->norm = reallocCheck(w->norm, w->norm_cap);
                d = w->norm;
            }
            for (size_t i = 0; i < ol; i++) {
                if (m->escape_ws && o[i] == ' ') { memcpy(d + len, space_sym, 3); len += 3; }
                else d[len++] = o[i];
            }
            prev_space = o[ol - 1] == ' ';
        }
        s += c;
        n -= c;
        if (!m->remove_extra_ws) prev_space = 0;
    }
    if (m->remove_extra_ws) {
        if (m->escape_ws)
            while (len >= 3 && memcmp(d + len - 3, space_sym, 3) == 0) len -= 3;
        else
            while (len >= 1 && d[len - 1] == ' ') len--;
    }
    if (m->ws_suffix && m->add_dummy_prefix) {
        if (len + 4 > w->norm_cap) {
            w->norm_cap = len + 16;
            w->norm = reallocCheck(w->norm, w->norm_cap);
            d = w->norm;
        }
        if (m->escape_ws) { memcpy(d + len, space_sym, 3); len += 3; }
        else d[len++] = ' ';
    }
    d[len] = 0;
    return len;
}

/* ------------------------------------------------------------ encoder */

static void push_id(spm_ws *w, int32_t id) {
    if (w->n_ids == w->ids_cap) {
        w->ids_cap = w->ids_cap ? w->ids_cap * 2 : 256;
        w->ids = reallocCheck(w->ids, w->ids_cap * sizeof *w->ids);
    }
    w->ids[w->n_ids++] = id;
}

size_t spm_encode(const spm_model *m, const char *text, size_t n, spm_ws *w) {
    size_t len = spm_normalize(m, text, n, w);
    w->n_ids = 0;
    if (len == 0) return 0;
    if (len + 1 > w->path_cap) {
        w->path_cap = (len + 1) * 2;
        w->score = reallocCheck(w->score, w->path_cap * sizeof *w->score);
        w->from = reallocCheck(w->from, w->path_cap * sizeof *w->from);
        w->id = reallocCheck(w->id, w->path_cap * sizeof *w->id);
    }
    const unsigned char *s = (const unsigned char *)w->norm;
    float *best = w->score;
    int32_t *from = w->from, *bid = w->id;
    for (size_t i = 0; i <= len; i++) from[i] = -1;
    best[0] = 0.0f;
    const float unk_score = m->min_score - 10.0f;
    const trie *t = &m->pieces;
    size_t start = 0;
    while (start < len) {
        const float here = best[start];
        size_t mblen = one_char_len(s[start]);
        if (mblen > len - start) mblen = len - start;
        int single = 0;
        int32_t node = 0;
        for (size_t k = start; k < len; k++) {
            node = trie_child(t, node, s[k]);
            if (!node) break;
            int32_t id = t->value[node];
            if (id < 0) continue;
            int ty = m->type[id];
            if (ty == SPM_UNUSED) continue;
            size_t plen = k + 1 - start;
            /* SentencePiece's piece score here is a double (the user-defined
             * bonus `length * max_score - 0.1` makes the expression double), so
             * the candidate is compared in double and stored as float. */
            double cand;
            if (ty == SPM_USER_DEFINED)
                cand = ((float)plen * m->max_score - 0.1) + (double)here;
            else
                cand = (double)m->score[id] + (double)here;
            size_t e = k + 1;
            if (from[e] == -1 || cand > (double)best[e]) {
                best[e] = (float)cand;
                from[e] = (int32_t)start;
                bid[e] = id;
            }
            if (!single && plen == mblen) single = 1;
        }
        if (!single) {
            size_t e = start + mblen;
            float cand = unk_score + here;
            if (from[e] == -1 || cand > best[e]) {
                best[e] = cand;
                from[e] = (int32_t)start;
                bid[e] = m->unk_id;
            }
        }
        start += mblen;
    }
    /* Backtrack into ids (reversed), then reverse; unknown pieces become
     * bytes when the model has byte fallback, and consecutive unknown
     * pieces merge into one otherwise. */
    for (size_t e = len; e > 0;) {
        size_t b = (size_t)from[e];
        int32_t id = bid[e];
        if (id == m->unk_id && m->byte_fallback) {
            for (size_t j = e; j > b; j--) push_id(w, m->byte_id[s[j - 1]]);
        } else if (!(id == m->unk_id && w->n_ids && w->ids[w->n_ids - 1] == id)) {
            push_id(w, id);   /* a run of unknown pieces is one unknown, as in spm */
        }
        e = b;
    }
    for (size_t i = 0, j = w->n_ids; i + 1 < j; i++, j--) {
        int32_t x = w->ids[i];
        w->ids[i] = w->ids[j - 1];
        w->ids[j - 1] = x;
    }
    return w->n_ids;
}
