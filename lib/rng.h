/* rng.h - the one deterministic random number generator of the project.
 *
 * mc_hash64 is the splitmix64 finaliser of x + 0x9e3779b97f4a7c15 (one step
 * of splitmix64 from state x); mc_splitmix64 steps a splitmix64 state;
 * mc_rng is xoshiro256** seeded by four splitmix64 steps. Every stream of
 * random numbers (initialisation, data order, span corruption, DARE masks,
 * the benchmark's sampling, random models) is one of these, so the same seed
 * gives the same bytes on every machine.
 */
#ifndef MC_RNG_H
#define MC_RNG_H

#include <stdint.h>

#define MC_GOLDEN64 0x9e3779b97f4a7c15ull

static inline uint64_t mc_hash64(uint64_t x) {
    x += MC_GOLDEN64;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* The next splitmix64 output of state *s (then advanced). */
static inline uint64_t mc_splitmix64(uint64_t *s) {
    uint64_t r = mc_hash64(*s);
    *s += MC_GOLDEN64;
    return r;
}

typedef struct { uint64_t s[4]; } mc_rng;
/* s[i] = the i-th splitmix64 output of state `seed`'s successive hashes:
 * s[0] = h(seed), s[1] = h(s[0]), ... */
void mc_rng_seed(mc_rng *r, uint64_t seed);
/* The state set directly from a splitmix64 state (s[i] = its i-th output). */
void mc_rng_seed_splitmix(mc_rng *r, uint64_t state);
uint64_t mc_rng_next(mc_rng *r);
double mc_rng_uniform(mc_rng *r);            /* [0,1), 53 bits */
float mc_rng_normal(mc_rng *r);              /* Box-Muller, one value per two uniforms */
uint64_t mc_rng_below(mc_rng *r, uint64_t n); /* [0,n), unbiased */

#endif
