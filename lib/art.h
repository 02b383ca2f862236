/* art.h - mats-c artifacts: one msgpack map per file, checksummed.
 *
 * File layout (fixed: readers and other tools rely on it), byte by byte:
 *
 *   86                      fixmap with 6 entries
 *   a4 "mats"   01          format version 1 (positive fixint)
 *   a4 "kind"   <str>       vocab, tokens, model, ia3, fisher_diag, ...
 *   a3 "key"    <str>       32 lowercase hex digits, or ""
 *   a4 "meta"   <map>       str keys -> any msgpack value
 *   a7 "tensors" <array>    of maps {name: str, dtype: str, shape: [uint..], data: bin}
 *   a4 "xxh3"   c4 10 <16>  XXH3-128 of every byte before this "xxh3" key,
 *                           canonical (big-endian) order
 *
 * The last 23 bytes of every artifact are therefore
 *   a4 78 78 68 33 c4 10 <16 digest bytes>
 * and the checksum covers bytes [0, size - 23).
 *
 * Tensor data is little-endian, row-major, exactly prod(shape)*sizeof(dtype)
 * bytes. Readers keep `data` pointing into the file's buffer: it is not
 * aligned, so copy it out with art_tensor_copy()/art_tensor_f32().
 *
 * Writers stream: meta first, then each tensor's header and data in chunks,
 * hashing as they write to FILE.tmp.<pid>; art_writer_close() fsyncs and
 * renames over FILE. A writer that is never closed (killed, or aborted with
 * art_writer_abort) leaves nothing at FILE.
 */
#ifndef MC_ART_H
#define MC_ART_H

#include <stddef.h>
#include <stdint.h>

#include "val.h"

#define ART_VERSION 1
#define ART_MAX_DIMS 8
#define ART_TRAILER 23

typedef enum {
    ART_F32 = 0,
    ART_F64 = 1,
    ART_I32 = 2,
    ART_I64 = 3,
    ART_U8 = 4,
} art_dtype;

const char *art_dtype_name(art_dtype t);
size_t art_dtype_size(art_dtype t);
/* Parse a dtype name of length n; -1 if unknown. */
int art_dtype_parse(const char *s, size_t n);

/* ---------------------------------------------------------------- writing */

typedef struct art_writer art_writer;

/* Start writing `path` (through path.tmp.<pid>). `key` is 32 hex digits or
 * "" / NULL. `meta` must be a VAL_MAP or NULL (written as an empty map); the
 * writer does not take ownership. `n_tensors` is the exact number of tensors
 * that will follow. Returns NULL and sets mc_error() on failure, among
 * others when `path` exists and is not a regular file (mc_output_ok; checked
 * again before the rename). */
art_writer *art_writer_open(const char *path, const char *kind, const char *key,
                            const mc_val *meta, size_t n_tensors);

/* Write one whole tensor. shape has ndim entries. -1 on error. */
int art_writer_tensor(art_writer *w, const char *name, art_dtype dtype, int ndim,
                      const int64_t *shape, const void *data);

/* Streaming form: begin, then any number of data chunks whose sizes add up to
 * exactly prod(shape)*sizeof(dtype), then the next begin or close. */
int art_writer_tensor_begin(art_writer *w, const char *name, art_dtype dtype, int ndim,
                            const int64_t *shape);
int art_writer_tensor_data(art_writer *w, const void *data, size_t nbytes);

/* The row tensors of an `examples` or `tokens` artifact, written in this
 * order: a ragged pair, `vname` (n_vals values of dtype) and `oname`
 * (n_rows + 1 i64 offsets; NULL when n_rows is 0: one 0 is written). */
int art_writer_ragged(art_writer *w, const char *vname, art_dtype dtype, const void *vals, int64_t n_vals,
                      const char *oname, const int64_t *off, int64_t n_rows);
/* ... and the per-row pair: example_choices (n_rows + 1 i64: each row's
 * first choice, then the total) and label (n_rows i32). -1 on error. */
int art_writer_rows(art_writer *w, const int64_t *exch, const int32_t *label, int64_t n_rows);

/* Finish: write the checksum, fsync, rename to the final path, free w.
 * On failure the temporary file is removed and -1 returned. */
int art_writer_close(art_writer *w);

/* Give up: remove the temporary file and free w. */
void art_writer_abort(art_writer *w);

/* ---------------------------------------------------------------- reading */

typedef struct {
    char *name;                 /* NUL-terminated copy */
    art_dtype dtype;
    int ndim;
    int64_t shape[ART_MAX_DIMS];
    int64_t numel;
    size_t nbytes;
    const unsigned char *data;  /* into the file buffer; unaligned */
} art_tensor;

typedef struct {
    char *path;
    char kind[64];
    char key[33];
    mc_val *meta;               /* VAL_MAP, owned */
    size_t n_tensors;
    art_tensor *tensors;
    unsigned char digest[16];
    /* private */
    unsigned char *buf;
    size_t len;
    int mapped;
} art_file;

/* Read and verify `path`. want_kind: required kind, or NULL for any.
 * Returns a new art_file (free with art_close) or NULL with mc_error() set to
 * a one-line message naming the file.
 *
 * Beyond the checksum and the structure, the contents its readers index
 * with are checked for every kind that has such tensors (the table CONTENTS
 * in art.c): `tokens` (ids within 0..INT32_MAX; input_offsets,
 * choice_offsets and example_choices start at 0, never decrease and end at
 * the length of what they cut, one example_choices row per input row; each
 * label indexes its example's choices), `examples` and `corpus` (the same
 * for their text columns, plus one label, template, example and source row
 * per input row), the dtypes of `vocab`, `metrics` and `train_checkpoint`
 * tensors, and the [d, d] shape of `fisher_block` and Gram matrices. A
 * tensor that is absent is not required here (readers say what they need);
 * one that is present must pass. */
art_file *art_open(const char *path, const char *want_kind);

/* Same checks on a buffer in memory (copied); `name` is used in messages. */
art_file *art_open_buffer(const void *buf, size_t len, const char *name, const char *want_kind);

void art_close(art_file *a);

/* Find a tensor by name; NULL if absent. */
const art_tensor *art_find(const art_file *a, const char *name);
/* A ragged text pair of artifact a: `text` (u8) cut into rows by `offs`
 * (i64, rows + 1; art_open checked that they do): the text's bytes in
 * place and a copy of the offsets (caller frees). 0, or -1 with mc_error()
 * naming a and the pair when either is missing or mistyped. */
int art_read_text(const art_file *a, const char *text, const char *offs, const char **bytes, int64_t **off,
                  int64_t *rows);
/* The reader's side of art_writer_rows: a copy of artifact a's example_choices (n_rows + 1
 * i64) and label (n_rows i32), as it wrote them (art_open
 * bounded them). 0, or -1 with mc_error() naming a and the tensor when
 * either is missing or mis-sized. */
int art_read_rows(const art_file *a, int64_t n_rows, int64_t **exch, int32_t **label);

/* Copy a tensor's data into dst (nbytes bytes). */
void art_tensor_copy(const art_tensor *t, void *dst);

/* A new malloc'd float array holding the tensor converted to f32 (from any
 * dtype). Caller frees. */
float *art_tensor_f32(const art_tensor *t);

/* Format a 16-byte digest as 32 lowercase hex + NUL. */
void art_hex(const unsigned char d[16], char out[33]);

#endif
