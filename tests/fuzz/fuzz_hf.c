/* fuzz_hf.c - libFuzzer target for the safetensors reader and the JSON parser
 * (lib/hf.c, lib/json.c): any input must give a value or a one-line error,
 * never a crash, a hang or an out-of-bounds read. The input goes through a
 * memfd so st_open maps it exactly as it maps a file. `make fuzz-hf`. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"
#include "hf.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mc_val *v = json_parse((const char *)data, size, "fuzz");
    if (v) {
        json_buf b = {0};
        json_write(&b, v, 2);
        mc_val *w = json_parse(b.s, b.len, "rewritten");
        if (!w) abort(); /* the writer must produce parseable JSON */
        val_free(w);
        jb_free(&b);
        val_free(v);
    } else if (strchr(mc_error(), '\n')) {
        abort();
    }
    int fd = memfd_create("st", 0);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) { close(fd); return 0; }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    st_file *f = st_open(path);
    if (f) {
        float buf[256];
        for (size_t i = 0; i < f->n; i++) {
            const st_tensor *t = &f->t[i];
            if (t->dtype == ST_OTHER) continue;
            for (int64_t s = 0; s < t->numel; s += 256) st_read_f32(t, s, t->numel - s < 256 ? t->numel - s : 256, buf);
        }
        st_close(f);
    } else if (strchr(mc_error(), '\n')) {
        abort();
    }
    close(fd);
    return 0;
}
