/* test_progress.c - the progress line's rate and ETA, fresh and resumed. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../lib/common.h"
#include "../lib/progress.h"
#include "harness.h"

/* One progress line of a run 10 s old at `done` of 1000 steps, started at
 * `start` (0: a fresh run). */
static void line(int64_t start, int64_t done, char *out, size_t n) {
    mc_progress p;
    progress_init(&p, "train", 1000, "steps");
    p.tty = 0;
    p.interval = 0;
    if (start) progress_resume(&p, start);
    char path[] = "/tmp/test_progress.XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        snprintf(out, n, "mkstemp failed");
        return;
    }
    int saved = dup(2);
    dup2(fd, 2);
    p.t0 = mc_now() - 10.0; /* the run began 10 s ago (and a few microseconds) */
    progress_update(&p, done, "loss 1.0");
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    lseek(fd, 0, SEEK_SET);
    ssize_t k = read(fd, out, n - 1);
    out[k > 0 ? k : 0] = 0;
    close(fd);
    unlink(path);
}

static void test_fresh_rate(void) {
    char s[256];
    line(0, 20, s, sizeof s);
    CHECK(strstr(s, "20/1000 steps  2.0 steps/s") != NULL, "line %s", s);
    CHECK(strstr(s, "eta 8m10s") != NULL || strstr(s, "eta 8m11s") != NULL, "line %s", s); /* 980 steps at 2/s */
}

/* A run resumed at step 250 that has done 10 more steps in 10 s: 1 step/s,
 * not 26 (the steps of earlier runs are not this run's) */
static void test_resumed_rate(void) {
    char s[256];
    line(250, 260, s, sizeof s);
    CHECK(strstr(s, "260/1000 steps  1.0 steps/s") != NULL, "line %s", s);
    CHECK(strstr(s, "eta 12m20s") != NULL || strstr(s, "eta 12m21s") != NULL, "line %s", s); /* 740 at 1/s */
}

int main(void) {
    RUN(test_fresh_rate);
    RUN(test_resumed_rate);
    return t_done();
}
