/* fuzz_art.c - libFuzzer target for the artifact reader.
 *
 * Each input is tried twice: as it is (exercising the trailer and checksum
 * checks), and with a correct checksum trailer appended, so that the fuzzer
 * reaches the msgpack parser and every structural check behind the checksum.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "art.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    art_file *a = art_open_buffer(data, size, "fuzz", NULL);
    art_close(a);

    static const unsigned char pre[7] = {0xa4, 'x', 'x', 'h', '3', 0xc4, 0x10};
    uint8_t *b = malloc(size + ART_TRAILER);
    if (!b) return 0;
    memcpy(b, data, size);
    memcpy(b + size, pre, 7);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(b, size));
    memcpy(b + size + 7, c.digest, 16);
    a = art_open_buffer(b, size + ART_TRAILER, "fuzz", NULL);
    if (a) {
        /* Touch everything a stage would. */
        for (size_t i = 0; i < a->n_tensors; i++) {
            float *f = art_tensor_f32(&a->tensors[i]);
            free(f);
        }
    }
    art_close(a);
    free(b);
    return 0;
}
