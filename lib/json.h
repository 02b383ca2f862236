/* json.h - a small, strict JSON (RFC 8259) reader and writer over mc_val trees.
 *
 * Used for Hugging Face `config.json`, `model.safetensors.index.json`, the
 * safetensors header, PEFT's `adapter_config.json` and the JSON Lines tasks
 * of `tokenize --jsonl`.
 *
 * Reading maps JSON onto val.h types:
 *   object -> VAL_MAP (member order kept; a repeated member name is an error,
 *             since a safetensors header with two entries for one tensor is
 *             ambiguous), array -> VAL_ARRAY, string -> VAL_STR (UTF-8,
 *             escapes decoded, \u0000 rejected), true/false -> VAL_BOOL,
 *             null -> VAL_NIL, a number without fraction or exponent that fits
 *             int64 -> VAL_INT (uint64 -> VAL_UINT), any other number ->
 *             VAL_FLOAT (strtod, so correctly rounded).
 * Nesting deeper than JSON_MAX_DEPTH is refused (no stack exhaustion on
 * hostile input). Text after the value other than whitespace is an error.
 *
 * Errors are one line: "NAME: JSON error at line L, column C: what".
 */
#ifndef MC_JSON_H
#define MC_JSON_H

#include <stddef.h>

#include "common.h"
#include "val.h"

#define JSON_MAX_DEPTH 64

/* Parse n bytes. Returns a new tree (caller frees with val_free) or NULL with
 * mc_error() set; `name` (a file name) starts the message. */
mc_val *json_parse(const char *text, size_t n, const char *name);

/* Parse line `line` (from 1) of a JSON Lines file: errors read
 * "FILE:LINE: JSON error at column C: what". */
mc_val *json_parse_line(const char *text, size_t n, const char *file, long line);

/* Read and parse a file. NULL with mc_error() naming the file. */
mc_val *json_parse_file(const char *path);

/* A growable byte buffer for writing. */
typedef struct {
    char *s;        /* NUL-terminated, owned */
    size_t len, cap;
} json_buf;

void jb_free(json_buf *b);
void jb_putn(json_buf *b, const char *s, size_t n);
void jb_puts(json_buf *b, const char *s);
void jb_printf(json_buf *b, const char *fmt, ...) MC_PRINTF(2, 3);
/* A JSON string literal: quotes, escapes for " \ and control bytes. */
void jb_str(json_buf *b, const char *s, size_t n);
/* The shortest decimal text that reads back as exactly d (or, when d is a
 * float32 value, as exactly that float: 1e-06 rather than
 * 9.9999999747524271e-07). Non-finite values become null. */
void jb_double(json_buf *b, double d);

/* Serialise a tree. indent 0: compact ("{"a":1,"b":[2,3]}"); indent > 0:
 * one member or element per line, nested `indent` spaces, byte for byte as
 * Python's json.dumps(v, indent=N) for ASCII text and floats of ordinary
 * magnitude (Python escapes non-ASCII as \uXXXX; this writer keeps UTF-8).
 * VAL_BIN is written as a string. */
void json_write(json_buf *b, const mc_val *v, int indent);

#endif
