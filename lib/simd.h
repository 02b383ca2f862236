/* simd.h - AVX-512 helpers shared by our kernels (amx.c, f32gemm.c, ops.c,
 * optim.c). The includer has checked the CPU (amx_available,
 * f32gemm_available, ops_simd_lanes); the functions carry their own target
 * attribute where they need one, so the files build without -mavx512f. */
#ifndef MC_SIMD_H
#define MC_SIMD_H

#include <immintrin.h>

/* the first `left` of 16 lanes (none for left <= 0, all for left >= 16):
 * the mask of a loop's tail */
static inline __mmask16 simd_mask16(long left) {
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1u);
}

/* r[x] = column x of the 16 x 16 matrix of 32-bit words whose rows were
 * r[0..15]: unpack pairs, then quads, then 128-bit lanes twice */
__attribute__((target("avx512f"))) static inline void simd_transpose16(__m512i *r) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_i32x4(r[8 * i + j], r[8 * i + 4 + j], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_i32x4(t[j], t[8 + j], 0xdd);
    }
}

#endif
