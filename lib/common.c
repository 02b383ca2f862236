/* common.c - see common.h. */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *progname = "mats";
static char errbuf[1024];

void mc_set_progname(const char *argv0) {
    const char *s = strrchr(argv0, '/');
    progname = s ? s + 1 : argv0;
}

const char *mc_progname(void) { return progname; }

static void (*die_hooks[8])(void);
static int n_die_hooks;

void mc_at_die(void (*fn)(void)) {
    for (int i = 0; i < n_die_hooks; i++)
        if (die_hooks[i] == fn) return;
    if (n_die_hooks < 8) die_hooks[n_die_hooks++] = fn;
}

long mc_nonfinite_at(const float *x, long n) {
    for (long i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

void die(const char *fmt, ...) {
    va_list ap;
    for (int i = n_die_hooks - 1; i >= 0; i--) die_hooks[i]();
    fflush(stdout);
    fprintf(stderr, "%s: ", progname);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

const char *mc_error(void) { return errbuf; }

int mc_fail(const char *fmt, ...) {
    /* Format into a local buffer first: callers may pass mc_error() itself
     * as an argument ("%s: %s", path, mc_error()). */
    char tmp[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(errbuf, tmp, sizeof errbuf);
    return -1;
}

static void oom(size_t n, const char *file, int line) {
    fprintf(stderr, "%s: out of memory allocating %zu bytes at %s:%d\n", progname, n, file, line);
    exit(1);
}

void *mc_malloc_(size_t n, const char *file, int line) {
    void *p = malloc(n ? n : 1);
    if (!p) oom(n, file, line);
    return p;
}

void *mc_calloc_(size_t n, size_t sz, const char *file, int line) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) oom(n * sz, file, line);
    return p;
}

void *mc_realloc_(void *p, size_t n, const char *file, int line) {
    void *q = realloc(p, n ? n : 1);
    if (!q) oom(n, file, line);
    return q;
}

char *mc_strdup_(const char *s, const char *file, int line) {
    size_t n = strlen(s) + 1;
    char *p = mc_malloc_(n, file, line);
    memcpy(p, s, n);
    return p;
}

int mc_read_file(const char *path, unsigned char **out, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return mc_fail("%s: cannot open: %s", path, strerror(errno));
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = mallocCheck(cap);
    for (;;) {
        if (n == cap) buf = reallocCheck(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        return mc_fail("%s: read error", path);
    }
    *out = buf;
    *len = n;
    return 0;
}

double mc_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

size_t mc_peak_rss(void) {
    FILE *f = fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kb = strtoull(line + 6, NULL, 10);
    fclose(f);
    return kb * 1024;
}

int mc_mkdir_parents(const char *path) {
    char *p = strdupCheck(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = 0;
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            mc_fail("%s: cannot create directory: %s", p, strerror(e));
            free(p);
            return -1;
        }
        *s = '/';
    }
    free(p);
    return 0;
}

int mc_output_ok(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0)
        return errno == ENOENT ? 0 : mc_fail("%s: cannot check the output path: %s", path, strerror(errno));
    if (S_ISREG(st.st_mode)) return 0;
    const char *what = S_ISDIR(st.st_mode) ? "a directory" : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device"
                       : S_ISFIFO(st.st_mode) ? "a pipe" : S_ISSOCK(st.st_mode) ? "a socket" : "not a regular file";
    return mc_fail("%s: the output exists and is %s; refusing to replace it: give the path of a regular file", path,
                   what);
}

FILE *mc_create_new(const char *path) {
    if (unlink(path) != 0 && errno != ENOENT) {
        mc_fail("%s: cannot remove the stale file: %s", path, strerror(errno));
        return NULL;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0666);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        mc_fail("%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
    }
    return f;
}

/* The end of an atomic write to path through tmp (f open on it, ok: the
 * writes went well): flush, fsync, close, check path again, rename. */
int mc_finish_atomic(FILE *f, int ok, const char *tmp, const char *path) {
    ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
    ok = fclose(f) == 0 && ok;
    if (ok && mc_output_ok(path) < 0) { /* again: it may have changed meanwhile */
        unlink(tmp);
        return -1;
    }
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return mc_fail("%s: write failed: %s", path, strerror(e));
    }
    return 0;
}

/* Write a whole file through FILE.tmp.<pid>, fsync, rename. */
int mc_write_atomic(const char *path, const void *data, size_t n) {
    if (mc_output_ok(path) < 0) return -1;
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = mc_create_new(tmp);
    if (!f) return -1;
    return mc_finish_atomic(f, fwrite(data, 1, n, f) == n, tmp, path);
}
