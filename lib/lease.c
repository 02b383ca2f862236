/* lease.c - stages side by side lend each other idle cores (lease.h).
 *
 * The leases are lock files in one directory: core-0 .. core-(C-1) for the
 * C cores this process may run on, and `want`. A stage takes an exclusive
 * flock on one core file per thread it was given (its base), and may take
 * more, non-blocking, when they are free (a borrow). A stage that starts and
 * finds too few core files free holds a shared lock on `want` until it has
 * its base; a borrower that sees `want` held hands its borrowed cores back.
 * A thread of the stage does it all, every 20 ms, whatever the stage is
 * doing, and a lock dies with its process, so a killed stage lends nothing
 * and blocks nothing. No byte depends on it: the pool's split may change
 * between two loops, never inside one, and every caller's results are
 * independent of the split (pool.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "lease.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pool.h"

#define LEASE_TICK_MS 20    /* a borrower hands a core back within a tick */
#define LEASE_BORROW_TICKS 10 /* and looks for an idle one every 10 ticks */

static struct {
    int want, cores, base, spare, lent;
    int fd[POOL_MAX_THREADS];
    char held[POOL_MAX_THREADS];
    double started, lent_since, lent_s; /* seconds lent, for the closing line */
    int lent_max, handed_back;
    pthread_mutex_t mu; /* the lease thread's tick against the closing line's reads */
} L = {.want = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void nap_ms(int ms) {
    struct timespec t = {0, ms * 1000000L};
    while (nanosleep(&t, &t) != 0 && errno == EINTR) {
    }
}

static int lock_nb(int fd) { return flock(fd, LOCK_EX | LOCK_NB) == 0; }

/* one free core file locked: its index, or -1 */
static int take_free(void) {
    for (int i = 0; i < L.cores; i++)
        if (!L.held[i] && lock_nb(L.fd[i])) {
            L.held[i] = 1;
            return i;
        }
    return -1;
}

static void give_back_lent(void) {
    pool_set_limit(L.base); /* the next loop runs on the base threads */
    for (int i = 0, n = L.lent; i < L.cores && n > 0; i++)
        if (L.held[i] == 2) flock(L.fd[i], LOCK_UN), L.held[i] = 0, n--;
    L.lent_s += now_s() - L.lent_since;
    L.lent = 0;
}

static void *lease_thread(void *arg) {
    (void)arg;
    /* the base: announced by `want` while it is not all ours */
    int got = 0, nap = 1;
    while (got < L.base) {
        int i = take_free();
        if (i >= 0) {
            got++;
            continue;
        }
        if (nap == 1) flock(L.want, LOCK_SH);
        nap_ms(nap);
        if (nap < LEASE_TICK_MS) nap *= 2;
    }
    if (nap > 1) flock(L.want, LOCK_UN);
    for (long tick = 1;; tick++) {
        nap_ms(LEASE_TICK_MS);
        pthread_mutex_lock(&L.mu); /* no call below blocks: the locks are tried, never waited for */
        if (L.lent) {
            if (!lock_nb(L.want)) give_back_lent(), L.handed_back++; /* a stage waits for a core */
            else flock(L.want, LOCK_UN);
        } else if (L.spare && tick % LEASE_BORROW_TICKS == 0 && lock_nb(L.want)) {
            for (int i; L.lent < L.spare && (i = take_free()) >= 0;) L.held[i] = 2, L.lent++;
            flock(L.want, LOCK_UN);
            if (L.lent) {
                L.lent_since = now_s();
                int n = pool_set_limit(L.base + L.lent);
                if (n - L.base > L.lent_max) L.lent_max = n - L.base;
            }
        }
        pthread_mutex_unlock(&L.mu);
    }
    return NULL;
}

/* on a successful exit only (a failing stage's last line is its error), and
 * for a second or more lent (a core lent between two stages for a moment is
 * no news) */
static void lease_report(int status, void *arg) {
    (void)arg;
    if (status != 0) return;
    pthread_mutex_lock(&L.mu);
    double lent = L.lent_s + (L.lent ? now_s() - L.lent_since : 0);
    int most = L.lent_max, back = L.handed_back;
    pthread_mutex_unlock(&L.mu);
    if (lent >= 1.0)
        fprintf(stderr, "leases: %d idle core%s lent to this run for %.1f of its %.1f s, handed back %d time%s (%s)\n",
                most, most == 1 ? "" : "s", lent, now_s() - L.started, back, back == 1 ? "" : "s",
                getenv("MATS_LEASE_DIR"));
}

int lease_cores(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void lease_start(int base) {
    static int started;
    const char *dir = getenv("MATS_LEASE_DIR");
    if (started || !dir || !*dir) return;
    started = 1;
    int cores = lease_cores();
    if (cores > POOL_MAX_THREADS) cores = POOL_MAX_THREADS;
    const char *ops = getenv("MATS_OPS_THREADS");
    if (base < 1 || base >= cores || (ops && *ops)) return; /* nothing to lend it, or its own count */
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "leases: cannot make %s (%s): running on %d thread%s, lending nothing\n", dir,
                strerror(errno), base, base == 1 ? "" : "s");
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/want", dir);
    int want = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    int ok = want >= 0;
    for (int i = 0; ok && i < cores; i++) {
        snprintf(path, sizeof path, "%s/core-%d", dir, i);
        ok = (L.fd[i] = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) >= 0;
    }
    if (!ok) {
        fprintf(stderr, "leases: cannot open %s (%s): running on %d thread%s, lending nothing\n", path,
                strerror(errno), base, base == 1 ? "" : "s");
        return; /* the files opened stay open: the process is short */
    }
    L.want = want, L.cores = cores, L.base = base, L.started = now_s();
    L.spare = pool_set_spare(cores - base) == 0 ? cores - base : 0; /* 0: a pool started before */
    pool_threads(); /* started here, before the lease thread may change its count */
    pthread_t t;
    if (pthread_create(&t, NULL, lease_thread, NULL) != 0) return;
    pthread_detach(t);
    on_exit(lease_report, NULL);
}
