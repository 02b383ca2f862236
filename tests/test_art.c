/* test_art.c - artifact writer/reader: round trips, corruption, truncation,
 * version and kind checks, and atomicity of a killed writer. */
#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "art.h"
#include "common.h"
#include "harness.h"

static char dir[256];

static void path_in(char *out, size_t n, const char *name) { snprintf(out, n, "%s/%s", dir, name); }

/* A small artifact with one tensor of every dtype and a nested meta. */
static int write_sample(const char *path, const char *kind) {
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "test");
    val_set_float(meta, "lambda", 0.25);
    val_set_int(meta, "n", -7);
    mc_val *cfg = val_set_map(meta, "config");
    val_set_int(cfg, "d_model", 32);
    mc_val *arr = val_set_array(meta, "list");
    val_push(arr, val_str("a"));
    val_push(arr, val_bool(1));
    art_writer *w = art_writer_open(path, kind, "0123456789abcdef0123456789abcdef", meta, 6);
    val_free(meta);
    if (!w) return -1;
    float f[6] = {1.5f, -2, 3e-8f, 0, 1e30f, -0.0f};
    double d[3] = {1.0 / 3, -1e300, 2};
    int32_t i32[4] = {1, -2, INT32_MAX, INT32_MIN};
    int64_t i64[2] = {INT64_MAX, -5};
    uint8_t u8[5] = {0, 1, 127, 128, 255};
    int64_t s23[2] = {2, 3}, s3[1] = {3}, s4[1] = {4}, s2[1] = {2}, s5[1] = {5}, s0[2] = {0, 4};
    if (art_writer_tensor(w, "w.f32", ART_F32, 2, s23, f) || art_writer_tensor(w, "w.f64", ART_F64, 1, s3, d) ||
        art_writer_tensor(w, "w.i32", ART_I32, 1, s4, i32) || art_writer_tensor(w, "w.i64", ART_I64, 1, s2, i64)) {
        art_writer_abort(w);
        return -1;
    }
    /* streamed in chunks */
    if (art_writer_tensor_begin(w, "w.u8", ART_U8, 1, s5) || art_writer_tensor_data(w, u8, 2) ||
        art_writer_tensor_data(w, u8 + 2, 3) || art_writer_tensor(w, "empty", ART_F32, 2, s0, NULL)) {
        art_writer_abort(w);
        return -1;
    }
    return art_writer_close(w);
}

static void test_roundtrip_every_dtype(void) {
    char p[300];
    path_in(p, sizeof p, "sample.msgpack");
    CHECK(write_sample(p, "model") == 0, "write: %s", mc_error());
    art_file *a = art_open(p, "model");
    CHECK(a != NULL, "read: %s", mc_error());
    if (!a) return;
    CHECK(!strcmp(a->kind, "model"), "kind %s", a->kind);
    CHECK(!strcmp(a->key, "0123456789abcdef0123456789abcdef"), "key %s", a->key);
    CHECK(a->n_tensors == 6, "n %zu", a->n_tensors);
    CHECK(!strcmp(val_get_str(a->meta, "stage", ""), "test"), "meta stage");
    CHECK(val_get_float(a->meta, "lambda", 0) == 0.25, "meta lambda");
    CHECK(val_get_int(a->meta, "n", 0) == -7, "meta n");
    CHECK(val_get_int(val_get(a->meta, "config"), "d_model", 0) == 32, "meta nested");
    CHECK(val_path(a->meta, "config.d_model") != NULL, "val_path");
    const art_tensor *t = art_find(a, "w.f32");
    CHECK(t && t->dtype == ART_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "f32 header");
    if (t) {
        float f[6];
        art_tensor_copy(t, f);
        float want[6] = {1.5f, -2, 3e-8f, 0, 1e30f, -0.0f};
        CHECK(memcmp(f, want, sizeof f) == 0, "f32 bytes differ");
    }
    t = art_find(a, "w.f64");
    if (t) {
        double d[3];
        art_tensor_copy(t, d);
        CHECK(d[0] == 1.0 / 3 && d[1] == -1e300 && d[2] == 2, "f64 values");
    } else CHECK(0, "f64 missing");
    t = art_find(a, "w.i32");
    if (t) {
        int32_t v[4];
        art_tensor_copy(t, v);
        CHECK(v[2] == INT32_MAX && v[3] == INT32_MIN, "i32 values");
        float *fv = art_tensor_f32(t);
        CHECK(fv[1] == -2.0f, "i32->f32");
        free(fv);
    } else CHECK(0, "i32 missing");
    t = art_find(a, "w.i64");
    if (t) {
        int64_t v[2];
        art_tensor_copy(t, v);
        CHECK(v[0] == INT64_MAX && v[1] == -5, "i64 values");
    } else CHECK(0, "i64 missing");
    t = art_find(a, "w.u8");
    if (t) {
        CHECK(t->nbytes == 5 && t->data[3] == 128 && t->data[4] == 255, "u8 values");
    } else CHECK(0, "u8 missing");
    t = art_find(a, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0, "empty tensor");
    CHECK(art_find(a, "nope") == NULL, "absent tensor found");
    art_close(a);
    /* Same inputs, same bytes. */
    char q[300];
    path_in(q, sizeof q, "sample2.msgpack");
    write_sample(q, "model");
    unsigned char *b1, *b2;
    size_t l1, l2;
    mc_read_file(p, &b1, &l1);
    mc_read_file(q, &b2, &l2);
    CHECK(l1 == l2 && memcmp(b1, b2, l1) == 0, "writer is not deterministic");
    /* The trailer holds the XXH3-128 of everything before it. */
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(b1, l1 - ART_TRAILER));
    CHECK(memcmp(c.digest, b1 + l1 - 16, 16) == 0, "checksum is not XXH3-128 of the prefix");
    CHECK(b1[0] == 0x86, "top level is not a fixmap of 6");
    free(b1);
    free(b2);
}

static void test_wrong_kind_rejected(void) {
    char p[300];
    path_in(p, sizeof p, "sample.msgpack");
    art_file *a = art_open(p, "gram");
    CHECK(a == NULL, "wrong kind accepted");
    CHECK(strstr(mc_error(), "sample.msgpack") && strstr(mc_error(), "'model'"), "message: %s", mc_error());
    art_close(a);
}

/* The bytes of the sample artifact (the caller frees them). */
static unsigned char *sample_bytes(size_t *n) {
    char p[300];
    path_in(p, sizeof p, "sample.msgpack");
    unsigned char *b = NULL;
    if (mc_read_file(p, &b, n) < 0) die("%s", mc_error());
    return b;
}

static void rehash(unsigned char *b, size_t n) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(b, n - ART_TRAILER));
    memcpy(b + n - 16, c.digest, 16);
}

static void test_unknown_version_rejected(void) {
    size_t n;
    unsigned char *b = sample_bytes(&n);
    CHECK(b[6] == 0x01, "version byte at offset 6 is %02x", b[6]);
    b[6] = 0x02;
    rehash(b, n);
    art_file *a = art_open_buffer(b, n, "v2.msgpack", NULL);
    CHECK(a == NULL, "version 2 accepted");
    CHECK(strstr(mc_error(), "version") != NULL, "message: %s", mc_error());
    art_close(a);
    /* and the unmodified buffer still reads */
    b[6] = 0x01;
    rehash(b, n);
    a = art_open_buffer(b, n, "v1.msgpack", NULL);
    CHECK(a != NULL, "v1: %s", mc_error());
    art_close(a);
    free(b);
}

static void test_every_flipped_byte_rejected(void) {
    size_t n;
    unsigned char *b = sample_bytes(&n);
    size_t accepted = 0;
    for (size_t i = 0; i < n; i++)
        for (int bit = 0; bit < 8; bit += 3) {
            b[i] ^= (unsigned char)(1 << bit);
            art_file *a = art_open_buffer(b, n, "flip", NULL);
            if (a) accepted++;
            art_close(a);
            b[i] ^= (unsigned char)(1 << bit);
        }
    CHECK(accepted == 0, "%zu single-bit flips accepted out of %zu bytes", accepted, n);
    free(b);
}

static void test_every_truncation_rejected(void) {
    size_t n;
    unsigned char *b = sample_bytes(&n);
    size_t accepted = 0;
    for (size_t len = 0; len < n; len++) {
        art_file *a = art_open_buffer(b, len, "trunc", NULL);
        if (a) accepted++;
        art_close(a);
    }
    CHECK(accepted == 0, "%zu truncations accepted", accepted);
    /* appended garbage is rejected too */
    unsigned char *c = malloc(n + 1);
    memcpy(c, b, n);
    c[n] = 0;
    art_file *a = art_open_buffer(c, n + 1, "extra", NULL);
    CHECK(a == NULL, "trailing byte accepted");
    art_close(a);
    free(c);
    free(b);
}

static void test_missing_file_message(void) {
    art_file *a = art_open("/nonexistent/dir/x.msgpack", NULL);
    CHECK(a == NULL && strstr(mc_error(), "/nonexistent/dir/x.msgpack"), "message: %s", mc_error());
}

static void test_writer_misuse(void) {
    char p[300];
    path_in(p, sizeof p, "misuse.msgpack");
    art_writer *w = art_writer_open(p, "model", "nothex", NULL, 1);
    CHECK(w == NULL, "bad key accepted");
    w = art_writer_open(p, "model", "", NULL, 2);
    int64_t s[1] = {4};
    float x[4] = {0};
    CHECK(art_writer_tensor(w, "a", ART_F32, 1, s, x) == 0, "tensor");
    CHECK(art_writer_close(w) != 0, "close with a tensor missing succeeded");
    CHECK(access(p, F_OK) != 0, "incomplete artifact left at final path");
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    CHECK(access(tmp, F_OK) != 0, "temporary file left behind");
}

/* A writer killed mid-write leaves nothing at the final path. */
static void test_killed_writer_leaves_nothing(void) {
    char p[300];
    path_in(p, sizeof p, "killed.msgpack");
    int fds[2];
    if (pipe(fds) != 0) { CHECK(0, "pipe"); return; }
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        art_writer *w = art_writer_open(p, "model", "", NULL, 100);
        int64_t s[1] = {1 << 18};
        float *x = calloc(1 << 18, sizeof(float));
        for (int i = 0; i < 100; i++) {
            art_writer_tensor_begin(w, i == 0 ? "t0" : "tn", ART_F32, 1, s);
            art_writer_tensor_data(w, x, (size_t)1 << 19);
            if (i == 3) { if (write(fds[1], "x", 1) != 1) _exit(3); }
            if (i >= 3) pause();
        }
        _exit(0);
    }
    close(fds[1]);
    char c;
    CHECK(read(fds[0], &c, 1) == 1, "child did not start writing");
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    close(fds[0]);
    CHECK(WIFSIGNALED(st), "child was not killed");
    CHECK(access(p, F_OK) != 0, "a killed writer left a file at the final path");
    char tmp[400];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)pid);
    struct stat sb;
    CHECK(stat(tmp, &sb) == 0 && sb.st_size > 0, "expected the partial temp file to exist");
    CHECK(art_open(tmp, NULL) == NULL, "partial temp file reads as an artifact");
    unlink(tmp);
}

int main(int argc, char **argv) {
    /* `test_art --write PATH KIND`: write the sample artifact (for shell tests). */
    T_TOOL_MODE(argc == 4 && !strcmp(argv[1], "--write"), write_sample(argv[2], argv[3]));
    t_tmpdir(dir, sizeof dir, "mats-test-art");
    RUN(test_roundtrip_every_dtype);
    RUN(test_wrong_kind_rejected);
    RUN(test_unknown_version_rejected);
    RUN(test_every_flipped_byte_rejected);
    RUN(test_every_truncation_rejected);
    RUN(test_missing_file_message);
    RUN(test_writer_misuse);
    RUN(test_killed_writer_leaves_nothing);
    return t_done_rm(dir);
}
