/* harness.h - the C test harness.
 *
 *   static void test_roundtrip(void) { CHECK(x == 1, "x was %d", x); }
 *   int main(void) { RUN(test_roundtrip); return t_done(); }
 *
 * Each RUN prints "ok NAME" or "FAIL NAME" (after the failing checks, each
 * with file:line), or "skip NAME: reason" when the test called T_SKIP (it
 * could not run here, e.g. no GPU); t_done() prints "# N passed, N failed"
 * and returns the exit status. tests/run.sh counts the ok/FAIL/skip lines of
 * every test program.
 */
#ifndef MC_HARNESS_H
#define MC_HARNESS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_failed_checks, t_pass, t_fail;
static const char *t_skip_reason;

/* Leave the current test: it cannot run on this machine (not a pass). */
#define T_SKIP(reason)                                                          \
    do {                                                                        \
        t_skip_reason = (reason);                                               \
        return;                                                                 \
    } while (0)

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            t_failed_checks++;                                                  \
            fprintf(stdout, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stdout, __VA_ARGS__);                                       \
            fputc('\n', stdout);                                                \
        }                                                                       \
    } while (0)

#define RUN(fn)                                                                 \
    do {                                                                        \
        int before_ = t_failed_checks;                                          \
        t_skip_reason = NULL;                                                   \
        fn();                                                                   \
        if (t_failed_checks != before_) { t_fail++; printf("FAIL %s\n", #fn); } \
        else if (t_skip_reason) printf("skip %s: %s\n", #fn, t_skip_reason);    \
        else { t_pass++; printf("ok %s\n", #fn); }                              \
        fflush(stdout);                                                         \
    } while (0)

static inline int t_done(void) {
    printf("# %d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}

/* A tool mode of a test program (`test_x --write ...`, for the shell
 * tests): when `cond` holds, main runs `call` (0, or nonzero with
 * mc_error() set, which it prints) and ends. */
#define T_TOOL_MODE(cond, call)                                                 \
    do {                                                                        \
        if (cond) {                                                             \
            if ((call) != 0) {                                                  \
                fprintf(stderr, "%s\n", mc_error());                            \
                return 1;                                                       \
            }                                                                   \
            return 0;                                                           \
        }                                                                       \
    } while (0)

/* A fresh folder for a test's files, /tmp/NAME.XXXXXX, into dir (size
 * bytes); exits with a FAIL line when it cannot be made. */
static inline void t_tmpdir(char *dir, size_t size, const char *name) {
    snprintf(dir, size, "/tmp/%s.XXXXXX", name);
    if (!mkdtemp(dir)) {
        printf("FAIL cannot make the temporary folder %s\n", dir);
        exit(1);
    }
}

/* Remove the folder of t_tmpdir (rm -rf) and close with t_done(): the
 * last line of a test's main. */
static inline int t_done_rm(const char *dir) {
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return t_done();
}

/* Compare two float arrays the llm.c way: print the first mismatches and the
 * max error; pass when |a-b| <= atol + rtol*|b| everywhere. Returns 1 if ok. */
static inline int t_close(const char *label, const float *a, const float *b, long n,
                          double rtol, double atol) {
    double maxabs = 0, maxrel = 0;
    long bad = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        double r = d / (fabs((double)b[i]) + 1e-30);
        if (d > maxabs) maxabs = d;
        if (r > maxrel && fabs((double)b[i]) > atol) maxrel = r;
        if (!(d <= atol + rtol * fabs((double)b[i]))) {
            if (bad < 5) printf("  %s[%ld]: %.9g vs reference %.9g\n", label, i, a[i], b[i]);
            bad++;
        }
    }
    printf("  %s: n=%ld max abs err %.3g, max rel err %.3g%s\n", label, n, maxabs, maxrel,
           bad ? " MISMATCH" : "");
    if (bad) t_failed_checks++;
    return bad == 0;
}

#endif
