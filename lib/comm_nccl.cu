/* comm_nccl.cu - NCCL for comm.c on cuda (GPU=1 builds): point-to-point
 * sends and receives and a broadcast of device memory, queued on the GPU
 * backend's stream (gpu_stream) so they order with the model's kernels.
 * comm.c does the ordered adds itself; no NCCL reduction is used, so the
 * sums do not depend on NCCL's algorithm choice. */
#include <nccl.h>

#include "gpu_impl.cuh"

static ncclComm_t g_comm;
static int g_open;

#define ncclCheck(x)                                                                             \
    do {                                                                                         \
        ncclResult_t r_ = (x);                                                                   \
        if (r_ != ncclSuccess) die("%s:%d: %s failed: %s", __FILE__, __LINE__, #x, ncclGetErrorString(r_)); \
    } while (0)

static_assert(sizeof(ncclUniqueId) == 128, "comm.c sends 128 bytes of NCCL id");

extern "C" {

void comm_nccl_get_id(void *id) {
    ncclUniqueId u;
    ncclCheck(ncclGetUniqueId(&u));
    memcpy(id, &u, sizeof u);
}

void comm_nccl_init(const void *id, int rank, int size) {
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    gpu_stream(); /* the device of gpu_init is current */
    ncclCheck(ncclCommInitRank(&g_comm, size, u, rank));
    g_open = 1;
}

void comm_nccl_group(int start) {
    if (start) ncclCheck(ncclGroupStart());
    else ncclCheck(ncclGroupEnd());
}

void comm_nccl_send(const float *x, long n, int peer) {
    ncclCheck(ncclSend(x, (size_t)n, ncclFloat, peer, g_comm, gpu_stream()));
}

void comm_nccl_recv(float *x, long n, int peer) {
    ncclCheck(ncclRecv(x, (size_t)n, ncclFloat, peer, g_comm, gpu_stream()));
}

void comm_nccl_bcast(float *x, long n, int root) {
    ncclCheck(ncclBroadcast(x, x, (size_t)n, ncclFloat, root, g_comm, gpu_stream()));
}

void comm_nccl_free(void) {
    if (!g_open) return;
    cudaCheck(cudaStreamSynchronize(gpu_stream()));
    ncclCheck(ncclCommDestroy(g_comm));
    g_open = 0;
}
}
