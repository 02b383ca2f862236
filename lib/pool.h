/* pool.h - the CPU thread pool every parallel loop of lib/ runs on.
 *
 * The bottom of lib/: it depends on nothing else here. The elementwise
 * layers (ops.c), the AMX and float32 kernels (amx.c, f32gemm.c), the
 * optimizers and the statistics split their loops with pool_parallel_for;
 * the CPU backend (backend_cpu.c) tells the pool its thread count in be_init,
 * so the loops use as many threads as the BLAS.
 */
#ifndef MC_POOL_H
#define MC_POOL_H

/* Run fn(ctx, lo, hi) over a split of [0, n) on the pool; ranges smaller
 * than `grain` items per thread run on the caller alone. Returns when all
 * parts are done. The split is a pure function of n and the thread count:
 * part i of P is [n*i/P, n*(i+1)/P). */
typedef void (*pool_range_fn)(void *ctx, long lo, long hi);
void pool_parallel_for(long n, long grain, pool_range_fn fn, void *ctx);

/* The number of threads (the caller included) the pool's loops use when it
 * starts, on its first use: MATS_OPS_THREADS when set, else the last
 * pool_set_threads(n), else the online CPUs; at most POOL_MAX_THREADS.
 * pool_set_spare(s), before that (else it returns -1), starts s workers
 * more, idle until pool_set_limit lends them to the loops (lease.c: cores
 * another stage left idle). */
#define POOL_MAX_THREADS 16
void pool_set_threads(int n);
int pool_set_spare(int n);
/* The threads the next loop will use (starting the pool if needed). */
int pool_threads(void);
/* Loops from now on use n threads, clamped to [1, threads started];
 * returns the count set. Any thread may call it; a loop in flight keeps
 * its count. Which thread computes what changes, never a byte: callers
 * keep their results independent of the split. */
int pool_set_limit(int n);

/* Flush denormal floats to zero in the calling thread (x86 FTZ and DAZ; a
 * no-op elsewhere). The pool's workers do it when they start. */
void pool_flush_denormals(void);

#endif
