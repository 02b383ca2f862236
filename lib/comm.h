/* comm.h - the ranks of a data-parallel run: one small interface over MPI
 * (host memory, the CPU build: Debian's Open MPI) and NCCL (device memory,
 * `make GPU=1`: one GPU per rank, NCCL's id sent through MPI).
 *
 *     comm_init(&argc, &argv);          first thing in main
 *     ... comm_rank(), comm_size() ...
 *     comm_open_device(dev);            after dev_resolve: NCCL on cuda
 *     comm_finalize();                  before a normal exit
 *
 * A process is one of several ranks when a launcher says so in its
 * environment (mpirun: OMPI_COMM_WORLD_SIZE; srun: SLURM_STEP_NUM_TASKS, or
 * PMI_SIZE / PMIX_RANK); only then is MPI initialised, so a plain run never
 * touches it. A binary built without MPI (make MPI=0) that finds itself on
 * N > 1 ranks dies with one line.
 *
 * Determinism: no collective here adds in an order MPI or NCCL choose.
 * comm_sum_ordered gathers the ranks' buffers on rank 0 and adds them there
 * in rank order, chunk by chunk, with the device's add (ops->add_inplace);
 * broadcast and gather move bytes unchanged. So N ranks that each hold one
 * micro-batch's gradient give rank 0 exactly the sum one rank forms when
 * it accumulates those micro-batches in the same order.
 *
 * Errors: every function dies with one line on a failure. Once MPI runs,
 * die() on rank r > 0 waits a moment before it prints (comm_init registers
 * the hook): when every rank meets the same bad input, the launcher stops
 * the others as soon as rank 0 exits, and only rank 0's line is printed.
 */
#ifndef MC_COMM_H
#define MC_COMM_H

#include <stddef.h>

struct mc_ops;

/* Join the ranks the launcher started (MPI_Init) or, without a launcher,
 * be rank 0 of 1. Dies with one line when the environment names several
 * ranks and this binary has no MPI. */
void comm_init(int *argc, char ***argv);
int comm_rank(void);
int comm_size(void);
/* ranks on this node, and this rank's index among them (the GPU it takes) */
int comm_local_size(void);
int comm_local_rank(void);
/* 1 if this binary carries MPI (built with MPI=1). */
int comm_built_with_mpi(void);
/* "1 rank", "2 ranks (MPI)", "2 ranks (MPI + NCCL)"; owned by the library */
const char *comm_describe(void);

/* The device the buffers of comm_sum_ordered / comm_bcast_dev live on
 * (MC_DEV_*). On cuda with several ranks it opens NCCL, one GPU per rank
 * (the device was chosen by $MATS_GPU, which comm_init sets to the local
 * rank when it is unset); dies with one line when the build has no NCCL. */
void comm_open_device(int dev);

/* Copy `bytes` of host memory from rank `root` to every rank. */
void comm_bcast(void *buf, size_t bytes, int root);
/* Rank 0 receives every rank's `bytes` of host memory, rank order, into
 * all (comm_size() * bytes; only read on rank 0, may be NULL elsewhere). */
void comm_gather(void *all, const void *mine, size_t bytes);
/* comm_bcast of n floats of device memory (the device of comm_open_device). */
void comm_bcast_dev(const struct mc_ops *ops, float *buf, long n, int root);

/* One round of an ordered sum. Every rank holds x (n floats, device
 * memory). On rank 0: acc = x_0 (first round) or acc += x_0, then
 * acc += x_1, ..., acc += x_{N-1}, each add elementwise (ops->add_inplace);
 * acc is only touched on rank 0 (may be NULL elsewhere). x is left as it was. */
void comm_sum_ordered(const struct mc_ops *ops, float *acc, const float *x, long n, int first);

/* Debug check: dies with one line naming `what` and the first rank whose
 * `bytes` of host memory differ from rank 0's (compared by XXH3-128). */
void comm_check_same(const void *buf, size_t bytes, const char *what);

/* Leave MPI (and NCCL). Safe to call on one rank. */
void comm_finalize(void);

#endif
