/* comm.c - the ranks of a data-parallel run (comm.h): MPI for host memory
 * and the CPU, NCCL (comm_nccl.cu) for device memory on cuda. Built with
 * MC_MPI=1 when the Makefile's MPI=1 (the default; Debian libopenmpi-dev),
 * as one rank only otherwise. */
#include "comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "common.h"
#include "device.h"

#ifndef MC_MPI
#define MC_MPI 0
#endif
#ifndef MC_GPU
#define MC_GPU 0
#endif
#if MC_MPI
#include <mpi.h>
#endif

/* NCCL (lib/comm_nccl.cu, GPU=1 builds): the id is NCCL_UNIQUE_ID_BYTES */
#if MC_GPU
#define NCCL_ID_BYTES 128
void comm_nccl_get_id(void *id);
void comm_nccl_init(const void *id, int rank, int size);
void comm_nccl_group(int start);
void comm_nccl_send(const float *x, long n, int peer);
void comm_nccl_recv(float *x, long n, int peer);
void comm_nccl_bcast(float *x, long n, int root);
void comm_nccl_free(void);
#endif

static int g_rank = 0, g_size = 1, g_local_rank = 0, g_local_size = 1, g_mpi = 0, g_nccl = 0;
static float *g_scratch; /* rank 0's receive buffer of comm_sum_ordered: (size-1) chunks */
static const struct mc_ops *g_scratch_ops;

/* floats per message of comm_sum_ordered; bytes per MPI call (int counts) */
#define SUM_CHUNK (1L << 20)
#define MPI_BYTES_MAX (1L << 30)

int comm_rank(void) { return g_rank; }
int comm_size(void) { return g_size; }
int comm_local_rank(void) { return g_local_rank; }
int comm_local_size(void) { return g_local_size; }
int comm_built_with_mpi(void) { return MC_MPI; }

const char *comm_describe(void) {
    static char s[64];
    snprintf(s, sizeof s, "%d rank%s%s", g_size, g_size == 1 ? "" : "s",
             g_nccl ? " (MPI + NCCL)" : g_mpi ? " (MPI)" : "");
    return s;
}

/* The number of ranks the launcher announces in the environment and this
 * process's rank among them (0 and 0 when none does). srun sets
 * SLURM_STEP_NUM_TASKS for every job step (1 for the workflow's one-task
 * jobs). */
static int env_ranks(const char **which, int *rank) {
    static const char *const vars[][2] = {{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"},
                                          {"PMI_SIZE", "PMI_RANK"},
                                          {"SLURM_STEP_NUM_TASKS", "SLURM_PROCID"}};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i][0]), *r = getenv(vars[i][1]);
        if (v && *v) {
            *which = vars[i][0];
            *rank = r ? atoi(r) : 0;
            return atoi(v);
        }
    }
    return 0;
}

/* Ranks r > 0 let rank 0 speak first: an error every rank meets (a bad
 * option, a missing file) is printed once, by rank 0, whose exit makes the
 * launcher stop the rest during this pause. An error of rank r alone is
 * printed after it. */
static void quiet_follower(void) {
    if (g_size > 1 && g_rank > 0) sleep(3);
}

#if MC_MPI
static void mpi_check(int rc, const char *what) {
    if (rc != MPI_SUCCESS) {
        char msg[MPI_MAX_ERROR_STRING];
        int len = 0;
        MPI_Error_string(rc, msg, &len);
        die("rank %d: %s failed: %.*s", g_rank, what, len, msg);
    }
}
#endif

void comm_init(int *argc, char ***argv) {
    const char *var = NULL;
    int env_rank = 0, n = env_ranks(&var, &env_rank);
    if (n <= 1) return;
    g_size = n, g_rank = env_rank; /* until MPI says */
    mc_at_die(quiet_follower);
    if (!strcmp(var, "SLURM_STEP_NUM_TASKS") && !getenv("PMIX_RANK") && !getenv("PMI_RANK") && !getenv("PMI_FD"))
        die("srun started %d tasks without an MPI plugin: give srun --mpi=pmix (or pmi2), or launch with mpirun -n %d",
            n, n);
#if MC_MPI
    mpi_check(MPI_Init(argc, argv), "MPI_Init");
    g_mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_size != n)
        die("the launcher announces %d ranks (%s) but MPI joined %d: under srun give --mpi=pmix (or pmi2), "
            "or launch with mpirun -n %d", n, var, g_size, n);
    MPI_Comm node;
    mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &node),
              "MPI_Comm_split_type");
    MPI_Comm_rank(node, &g_local_rank);
    MPI_Comm_size(node, &g_local_size);
    MPI_Comm_free(&node);
    /* one GPU per rank on a node, unless the user chose */
    if (!getenv("MATS_GPU")) {
        char s[16];
        snprintf(s, sizeof s, "%d", g_local_rank);
        setenv("MATS_GPU", s, 1);
    }
#else
    (void)argc, (void)argv;
    die("launched as one of %d ranks (%s=%d) but this build has no MPI: install libopenmpi-dev "
        "(scripts/install-deps.sh) and rebuild with make MPI=1, or run one rank", n, var, n);
#endif
}

void comm_open_device(int dev) {
    if (g_size == 1 || dev == MC_DEV_CPU) return;
#if MC_GPU && MC_MPI
    unsigned char id[NCCL_ID_BYTES];
    if (g_rank == 0) comm_nccl_get_id(id);
    comm_bcast(id, sizeof id, 0);
    comm_nccl_init(id, g_rank, g_size);
    g_nccl = 1;
#else
    die("training on %d ranks on cuda needs NCCL: build with make GPU=1", g_size);
#endif
}

void comm_bcast(void *buf, size_t bytes, int root) {
    if (g_size == 1) return;
#if MC_MPI
    for (size_t off = 0; off < bytes; off += MPI_BYTES_MAX) {
        size_t len = bytes - off < (size_t)MPI_BYTES_MAX ? bytes - off : (size_t)MPI_BYTES_MAX;
        mpi_check(MPI_Bcast((char *)buf + off, (int)len, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
#else
    (void)buf, (void)bytes, (void)root;
#endif
}

void comm_gather(void *all, const void *mine, size_t bytes) {
    if (g_size == 1) {
        memcpy(all, mine, bytes);
        return;
    }
#if MC_MPI
    if (bytes > (size_t)MPI_BYTES_MAX) die("comm_gather: %zu bytes per rank is more than one message takes", bytes);
    mpi_check(MPI_Gather(mine, (int)bytes, MPI_BYTE, all, (int)bytes, MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Gather");
#else
    (void)all;
#endif
}

void comm_bcast_dev(const struct mc_ops *ops, float *buf, long n, int root) {
    if (g_size == 1) return;
#if MC_GPU
    if (g_nccl) {
        comm_nccl_bcast(buf, n, root);
        return;
    }
#endif
    if (ops != dev_ops(MC_DEV_CPU)) die("comm_bcast_dev: device memory without NCCL (comm_open_device first)");
    comm_bcast(buf, sizeof(float) * (size_t)n, root);
}

void comm_sum_ordered(const struct mc_ops *ops, float *acc, const float *x, long n, int first) {
    for (long off = 0; off < n; off += SUM_CHUNK) {
        long len = n - off < SUM_CHUNK ? n - off : SUM_CHUNK;
        if (g_rank == 0) {
            if (first) ops->copy(acc + off, x + off, sizeof(float) * (size_t)len);
            else ops->add_inplace(acc + off, x + off, len);
        }
        if (g_size == 1) continue;
#if MC_MPI
        if (g_rank == 0 && !g_scratch) {
            g_scratch_ops = ops;
            g_scratch = ops->alloc(sizeof(float) * (size_t)SUM_CHUNK * (size_t)(g_size - 1));
        }
        if (g_nccl) {
#if MC_GPU
            comm_nccl_group(1);
            if (g_rank == 0)
                for (int r = 1; r < g_size; r++) comm_nccl_recv(g_scratch + (long)(r - 1) * SUM_CHUNK, len, r);
            else
                comm_nccl_send(x + off, len, 0);
            comm_nccl_group(0);
#endif
        } else if (g_rank == 0) {
            MPI_Request req[64];
            for (int r0 = 1; r0 < g_size; r0 += 64) { /* at most 64 receives in flight */
                int k = 0;
                for (int r = r0; r < g_size && k < 64; r++, k++)
                    mpi_check(MPI_Irecv(g_scratch + (long)(r - 1) * SUM_CHUNK, (int)len, MPI_FLOAT, r, 7,
                                        MPI_COMM_WORLD, &req[k]), "MPI_Irecv");
                mpi_check(MPI_Waitall(k, req, MPI_STATUSES_IGNORE), "MPI_Waitall");
            }
        } else {
            mpi_check(MPI_Send(x + off, (int)len, MPI_FLOAT, 0, 7, MPI_COMM_WORLD), "MPI_Send");
        }
        if (g_rank == 0)
            for (int r = 1; r < g_size; r++) ops->add_inplace(acc + off, g_scratch + (long)(r - 1) * SUM_CHUNK, len);
#endif
    }
}

void comm_check_same(const void *buf, size_t bytes, const char *what) {
    if (g_size == 1) return;
    XXH128_canonical_t mine, *all = g_rank == 0 ? mallocCheck(sizeof mine * (size_t)g_size) : NULL;
    XXH128_canonicalFromHash(&mine, XXH3_128bits(buf, bytes));
    comm_gather(all, &mine, sizeof mine);
    if (g_rank == 0) {
        for (int r = 1; r < g_size; r++)
            if (memcmp(&all[r], &all[0], sizeof mine) != 0)
                die("ranks disagree: rank %d's %s differ from rank 0's (%zu bytes)", r, what, bytes);
        free(all);
    }
}

void comm_finalize(void) {
#if MC_GPU
    if (g_nccl) comm_nccl_free();
#endif
    if (g_scratch) g_scratch_ops->release(g_scratch);
    g_scratch = NULL;
#if MC_MPI
    if (g_mpi) MPI_Finalize();
#endif
    g_mpi = g_nccl = 0;
}
