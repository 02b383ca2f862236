/* rng.c - xoshiro256** (rng.h). */
#include "rng.h"

#include <math.h>

void mc_rng_seed(mc_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) {
        seed = mc_hash64(seed);
        r->s[i] = seed;
    }
}

void mc_rng_seed_splitmix(mc_rng *r, uint64_t state) {
    for (int i = 0; i < 4; i++) r->s[i] = mc_splitmix64(&state);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t mc_rng_next(mc_rng *r) {
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double mc_rng_uniform(mc_rng *r) { return (mc_rng_next(r) >> 11) * 0x1.0p-53; }

float mc_rng_normal(mc_rng *r) {
    double u1 = mc_rng_uniform(r), u2 = mc_rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t mc_rng_below(mc_rng *r, uint64_t n) {
    if (n <= 1) return 0;
    uint64_t lim = UINT64_MAX - UINT64_MAX % n, x;
    do x = mc_rng_next(r);
    while (x >= lim);
    return x % n;
}
