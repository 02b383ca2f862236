/* common.h - error reporting, checked allocation and small helpers shared by
 * every stage and tool of mats-c.
 *
 * Conventions (see ../shared/STYLE.md):
 *  - library functions that can fail on user input return -1 / NULL and set a
 *    one-line message readable with mc_error(); stages turn it into die().
 *  - programming errors and out-of-memory abort through the *Check macros,
 *    which carry __FILE__/__LINE__.
 */
#ifndef MC_COMMON_H
#define MC_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>

#if defined(__GNUC__)
#define MC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define MC_NORETURN __attribute__((noreturn))
#else
#define MC_PRINTF(a, b)
#define MC_NORETURN
#endif

/* The program name used as the prefix of every error line ("train: ..."). */
void mc_set_progname(const char *argv0);
const char *mc_progname(void);

/* Print "PROG: message" on stderr and exit(1). */
MC_NORETURN void die(const char *fmt, ...) MC_PRINTF(1, 2);
/* Run `fn` when die() is about to exit (at most 8 hooks; the artifact writer
 * removes the temporary files of writers still open). */
void mc_at_die(void (*fn)(void));
/* Index of the first NaN or infinity in x[0..n), or -1 when all are finite. */
long mc_nonfinite_at(const float *x, long n);

/* Last library error (one line, no trailing newline). Owned by the library;
 * valid until the next failing call. */
const char *mc_error(void);
/* Set the last error; always returns -1 so callers can `return mc_fail(...)`. */
int mc_fail(const char *fmt, ...) MC_PRINTF(1, 2);

/* Allocation that never returns NULL (aborts with file:line on failure). */
void *mc_malloc_(size_t n, const char *file, int line);
void *mc_calloc_(size_t n, size_t sz, const char *file, int line);
void *mc_realloc_(void *p, size_t n, const char *file, int line);
char *mc_strdup_(const char *s, const char *file, int line);
#define mallocCheck(n) mc_malloc_((n), __FILE__, __LINE__)
#define callocCheck(n, sz) mc_calloc_((n), (sz), __FILE__, __LINE__)
#define reallocCheck(p, n) mc_realloc_((p), (n), __FILE__, __LINE__)
#define strdupCheck(s) mc_strdup_((s), __FILE__, __LINE__)

/* Read a whole file into a malloc'd buffer (caller frees). -1 on error. */
int mc_read_file(const char *path, unsigned char **out, size_t *len);

/* Monotonic wall clock in seconds. */
double mc_now(void);

/* Peak resident set size of this process in bytes (from /proc/self/status). */
size_t mc_peak_rss(void);

/* Make every directory on the way to `path`'s parent. -1 on error. */
int mc_mkdir_parents(const char *path);

/* 0 when `path` may be replaced as a whole file (a temporary file renamed
 * over it): it does not exist yet, or it is a regular file (through any
 * symbolic link: the rename replaces the link, never what it points to).
 * -1 with mc_error() naming the path when it is a directory, a device, a
 * pipe or a socket: renaming over /dev/null, as root, would turn the device
 * into a regular file. Writers call it when they open; stages may call it
 * on their output paths before any work. */
int mc_output_ok(const char *path);

/* Create `path` for writing, exclusively: a stale file or symbolic link of
 * that name (a temporary file of a dead process with the same pid) is
 * removed first, so the data never goes through a link planted there. NULL
 * with mc_error() on failure. */
FILE *mc_create_new(const char *path);

/* The end of an atomic write to `path` through `tmp` (f open on it, made by
 * mc_create_new; ok: the writes went well): flush, fsync, close, check
 * path again (mc_output_ok), rename. 0, or -1 with mc_error(); tmp is gone
 * either way. */
int mc_finish_atomic(FILE *f, int ok, const char *tmp, const char *path);
/* Write a whole file through PATH.tmp.<pid>, fsync, rename. 0 or -1. */
int mc_write_atomic(const char *path, const void *data, size_t n);

#endif
