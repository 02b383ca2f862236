/* pool.c - the CPU thread pool (pool.h). */
#include "pool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

/* Denormal floats make x86 float arithmetic up to 100x slower per
 * operation; a trained model's attention puts many probabilities there
 * (training from a pretrained T5 ran 3.8x slower before this): flush them to
 * zero (FTZ) and read them as zero (DAZ). */
void pool_flush_denormals(void) {
#if defined(__x86_64__) || defined(__i386__)
    _mm_setcsr(_mm_getcsr() | 0x8040);
#endif
}

static struct {
    int n;      /* threads started, the caller included; 0 = not started */
    int wanted; /* pool_set_threads; 0 = unset */
    int spare;  /* pool_set_spare: workers started beyond `wanted`, idle until lent */
    int limit;  /* the threads a loop may use now (pool_set_limit), 1..n */
    int act;    /* the threads of the loop in flight */
    pthread_mutex_t mu;
    pthread_cond_t start[POOL_MAX_THREADS], done;
    long gen;
    int pending;
    pool_range_fn fn;
    void *ctx;
    long items;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .done = PTHREAD_COND_INITIALIZER};

static void part(long n, int parts, int i, long *lo, long *hi) {
    *lo = (long)((__int128)n * i / parts);
    *hi = (long)((__int128)n * (i + 1) / parts);
}

/* Between two parallel loops a worker, and the caller waiting for one, spin
 * for a few microseconds before sleeping on the condition variable: most
 * loops follow one another closely (the AMX products run three in a row), and
 * a sleep and wake-up costs a context switch each. */
#define POOL_SPINS 2000

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* A worker waits on its own condition variable, so a loop on fewer threads
 * than the pool has (pool_set_limit) wakes only the workers it uses: an idle
 * worker sleeps through it, off the core another process now runs on. */
static void *pool_worker(void *arg) {
    int id = (int)(intptr_t)arg;
    long seen = 0;
    pool_flush_denormals();
    for (;;) {
        for (int s = 0; s < POOL_SPINS && __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE) == seen &&
                        id < __atomic_load_n(&pool.limit, __ATOMIC_RELAXED);
             s++)
            cpu_relax();
        pthread_mutex_lock(&pool.mu);
        while (pool.gen == seen || id >= pool.act) pthread_cond_wait(&pool.start[id], &pool.mu);
        seen = pool.gen;
        pool_range_fn fn = pool.fn;
        void *ctx = pool.ctx;
        long n = pool.items;
        int act = pool.act;
        pthread_mutex_unlock(&pool.mu);
        long lo, hi;
        part(n, act, id, &lo, &hi);
        if (lo < hi) fn(ctx, lo, hi);
        pthread_mutex_lock(&pool.mu);
        if (__atomic_sub_fetch(&pool.pending, 1, __ATOMIC_RELEASE) == 0) pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.mu);
    }
    return NULL;
}

void pool_set_threads(int n) { pool.wanted = n > 0 ? n : 0; }
int pool_set_spare(int n) {
    if (pool.n) return -1;
    pool.spare = n > 0 ? n : 0;
    return 0;
}

static void pool_start(void) {
    int n = pool.wanted;
    if (n <= 0) n = (int)sysconf(_SC_NPROCESSORS_ONLN);
    const char *e = getenv("MATS_OPS_THREADS");
    if (e && *e) n = atoi(e);
    if (n < 1) n = 1;
    if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
    int total = n + pool.spare > POOL_MAX_THREADS ? POOL_MAX_THREADS : n + pool.spare;
    pool.n = total, pool.limit = n;
    for (int i = 0; i < total; i++) pthread_cond_init(&pool.start[i], NULL);
    for (int i = 1; i < total; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, pool_worker, (void *)(intptr_t)i) != 0) {
            pool.n = i; /* run with what we have */
            if (pool.limit > i) pool.limit = i;
            break;
        }
        pthread_detach(t);
    }
}

int pool_threads(void) {
    if (!pool.n) pool_start();
    return __atomic_load_n(&pool.limit, __ATOMIC_RELAXED);
}

int pool_set_limit(int n) {
    if (!pool.n) pool_start();
    if (n < 1) n = 1;
    if (n > pool.n) n = pool.n;
    __atomic_store_n(&pool.limit, n, __ATOMIC_RELAXED);
    return n;
}

void pool_parallel_for(long n, long grain, pool_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (!pool.n) pool_start();
    int act = __atomic_load_n(&pool.limit, __ATOMIC_RELAXED);
    if (act == 1 || n < 2 * (grain > 0 ? grain : 1)) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&pool.mu);
    pool.fn = fn, pool.ctx = ctx, pool.items = n, pool.pending = act - 1, pool.act = act;
    __atomic_add_fetch(&pool.gen, 1, __ATOMIC_RELEASE);
    for (int i = 1; i < act; i++) pthread_cond_signal(&pool.start[i]);
    pthread_mutex_unlock(&pool.mu);
    long lo, hi;
    part(n, act, 0, &lo, &hi);
    fn(ctx, lo, hi);
    for (int s = 0; s < POOL_SPINS && __atomic_load_n(&pool.pending, __ATOMIC_ACQUIRE) > 0; s++) cpu_relax();
    pthread_mutex_lock(&pool.mu);
    while (pool.pending > 0) pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
}
