/* test_amx.c - the AMX bf16 products (lib/amx.c) against a double-precision
 * reference on the same bf16-rounded inputs, every transpose, shapes that
 * are not multiples of the 32 x 32 blocks, strided batches, alpha and beta;
 * bytes independent of the thread count; the backend's cpu_math switch. */
#include <stdint.h>
#include <unistd.h>

#include "amx.h"
#include "backend.h"
#include "harness.h"
#include "ops.h"

static uint64_t rng = 88172645463325252ull;
static float urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
/* round to bfloat16, nearest even: what the tile unit multiplies */
static float bf(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

/* reference: C = alpha op(A) op(B) + beta C in double over bf16 inputs */
static void ref(int ta, int tb, int m, int n, int k, float alpha, const float *A, int lda, const float *B,
                int ldb, float beta, float *C, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int q = 0; q < k; q++) {
                float a = ta ? A[(size_t)q * lda + i] : A[(size_t)i * lda + q];
                float b = tb ? B[(size_t)j * ldb + q] : B[(size_t)q * ldb + j];
                s += (double)bf(a) * bf(b);
            }
            C[(size_t)i * ldc + j] = (float)(alpha * s + (beta != 0 ? beta * (double)C[(size_t)i * ldc + j] : 0));
        }
}

static float *rnd(size_t n) {
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = urand();
    return x;
}

static void test_shapes(void) {
    if (!amx_available()) T_SKIP(amx_unavailable_reason());
    const int shapes[][3] = {{1, 1, 1},   {5, 7, 3},     {32, 32, 32}, {33, 31, 65},
                             {64, 96, 40}, {100, 17, 129}, {16, 48, 0},  {257, 130, 300}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int ab = 0; ab < 2; ab++) {
                    int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                    int lda = (ta ? m : k) + 3, ldb = (tb ? k : n) + 5, ldc = n + 2;
                    float alpha = ab ? 0.5f : 1.0f, beta = ab ? -1.5f : 0.0f;
                    float *A = rnd((size_t)(ta ? k : m) * lda + 1), *B = rnd((size_t)(tb ? n : k) * ldb + 1);
                    float *C = rnd((size_t)m * ldc), *R = malloc(sizeof(float) * (size_t)m * ldc);
                    if (!ab)
                        for (size_t i = 0; i < (size_t)m * ldc; i++) C[i] = NAN; /* beta 0: C is not read */
                    memcpy(R, C, sizeof(float) * (size_t)m * ldc);
                    amx_gemm_batched(ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
                    ref(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, R, ldc);
                    char label[96];
                    snprintf(label, sizeof label, "%dx%dx%d ta%d tb%d %s", m, n, k, ta, tb, ab ? "alpha,beta" : "plain");
                    /* float32 accumulation of k products: a few ulps of sqrt(k) */
                    for (int i = 0; i < m; i++) /* padding columns of C untouched */
                        for (int j = n; j < ldc; j++)
                            CHECK(memcmp(&C[(size_t)i * ldc + j], &R[(size_t)i * ldc + j], 4) == 0, "%s: C[%d][%d] written", label, i, j);
                    float *c2 = malloc(sizeof(float) * (size_t)m * n), *r2 = malloc(sizeof(float) * (size_t)m * n);
                    for (int i = 0; i < m; i++) {
                        memcpy(c2 + (size_t)i * n, C + (size_t)i * ldc, sizeof(float) * n);
                        memcpy(r2 + (size_t)i * n, R + (size_t)i * ldc, sizeof(float) * n);
                    }
                    t_close(label, c2, r2, (long)m * n, 1e-5, 1e-6 * (k + 1));
                    free(A), free(B), free(C), free(R), free(c2), free(r2);
                }
}

/* the attention's layout: heads side by side in rows of H*K, batch = heads */
static void test_batched(void) {
    if (!amx_available()) T_SKIP(amx_unavailable_reason());
    int T = 45, K = 24, H = 3, HK = H * K;
    float *q = rnd((size_t)T * HK), *kk = rnd((size_t)T * HK), *S = malloc(sizeof(float) * H * T * T),
          *R = malloc(sizeof(float) * H * T * T);
    amx_gemm_batched(0, 1, T, T, K, 1.0f, q, HK, K, kk, HK, K, 0.0f, S, T, (long)T * T, H);
    for (int h = 0; h < H; h++)
        ref(0, 1, T, T, K, 1.0f, q + h * K, HK, kk + h * K, HK, 0.0f, R + (size_t)h * T * T, T);
    t_close("scores", S, R, (long)H * T * T, 1e-5, 1e-4);
    /* and back: out_h (T,K) = S_h V_h written into the (T, H*K) layout */
    float *O = malloc(sizeof(float) * T * HK), *RO = malloc(sizeof(float) * T * HK);
    amx_gemm_batched(0, 0, T, K, T, 1.0f, S, T, (long)T * T, kk, HK, K, 0.0f, O, HK, K, H);
    for (int h = 0; h < H; h++) ref(0, 0, T, K, T, 1.0f, S + (size_t)h * T * T, T, kk + h * K, HK, 0.0f, RO + h * K, HK);
    t_close("context", O, RO, (long)T * HK, 1e-5, 1e-4);
    free(q), free(kk), free(S), free(R), free(O), free(RO);
}

/* --dump FILE: one product written to FILE (test_threads runs it under
 * MATS_OPS_THREADS=1 and =2) */
static int dump(const char *path) {
    int m = 300, n = 200, k = 270;
    float *A = rnd((size_t)m * k), *B = rnd((size_t)k * n), *C = malloc(sizeof(float) * m * n);
    amx_gemm_batched(0, 1, m, n, k, 1.0f, A, k, 0, B, k, 0, 0.0f, C, n, 0, 1);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(C, sizeof(float), (size_t)m * n, f) != (size_t)m * n || fclose(f)) return 1;
    return 0;
}

static const char *self;

static void test_threads(void) {
    if (!amx_available()) T_SKIP(amx_unavailable_reason());
    char cmd[4096], p1[64], p2[64];
    snprintf(p1, sizeof p1, "/tmp/test_amx.%d.1", (int)getpid());
    snprintf(p2, sizeof p2, "/tmp/test_amx.%d.2", (int)getpid());
    snprintf(cmd, sizeof cmd, "MATS_OPS_THREADS=1 %s --dump %s && MATS_OPS_THREADS=2 %s --dump %s", self, p1, self, p2);
    CHECK(system(cmd) == 0, "%s failed", cmd);
    FILE *a = fopen(p1, "rb"), *b = fopen(p2, "rb");
    CHECK(a && b, "no dump files");
    if (a && b) {
        static float x[300 * 200], y[300 * 200];
        size_t na = fread(x, sizeof(float), 300 * 200, a), nb = fread(y, sizeof(float), 300 * 200, b);
        CHECK(na == 300 * 200 && nb == na, "short dumps: %zu %zu", na, nb);
        CHECK(memcmp(x, y, sizeof x) == 0, "1 and 2 threads give different bytes");
    }
    if (a) fclose(a);
    if (b) fclose(b);
    remove(p1), remove(p2);
}

int main(int argc, char **argv) {
    self = argv[0];
    be_init(2);
    if (argc == 3 && !strcmp(argv[1], "--dump")) return amx_available() ? dump(argv[2]) : 1;
    RUN(test_shapes);
    RUN(test_batched);
    RUN(test_threads);
    return t_done();
}
