/* shard.h - statistics in shards: `--shard I/N` and `--reduce` of fisher and
 * gram (docs/cluster.md).
 *
 * A statistic is a mean over examples (Fisher) or over tokens (Gram). Shard
 * I of N covers examples [floor((I-1) n / N), floor(I n / N)) of the first n,
 * and writes the mean over its share as an artifact of kind `<kind>_shard`
 * (fisher_diag_shard, fisher_block_shard, gram_shard), so that no reader of
 * the unsharded kind can take a part for the whole. Its meta holds
 * "shard": "I/N" and what the stage records of an unsharded run.
 *
 * The reduce reads shards 1..N in that order and writes, per tensor,
 *   sum_i w_i x_i / sum_i w_i
 * with w_i the count the shard's mean is over (the stage says which, per
 * tensor), summed in double in shard order and rounded once to float32. The
 * bytes therefore depend on N alone, and equal the unsharded statistic to
 * float32 rounding.
 */
#ifndef MC_SHARD_H
#define MC_SHARD_H

#include <stdint.h>

#include "art.h"
#include "opts.h"

typedef struct {
    long i, n; /* shard i of n, 1 <= i <= n; {1, 1}: the whole */
} mc_shard;

/* Parse "I/N" (1 <= I <= N <= 1000000). 0, or -1 with a one-line mc_error(). */
int shard_parse(const char *s, mc_shard *out);

/* Shard sh's examples among the first n: [*lo, *hi). */
void shard_range(const mc_shard *sh, int64_t n, int64_t *lo, int64_t *hi);

/* The kind of a shard of `kind` ("gram" -> "gram_shard") in buf. */
const char *shard_kind(const char *kind, char *buf, size_t cap);

/* The shards of one statistic, opened and checked: every path verifies,
 * all have the same kind `<kind>_shard` (kinds: the allowed unsharded
 * kinds, NULL-ended), meta.shard is "1/N" .. "N/N" in the order given, and
 * all agree on meta.inputs and on every tensor's name, dtype (f32) and
 * shape. Dies with one line naming the shard and what to do. *kind_out gets
 * the unsharded kind (a pointer into `kinds`). */
art_file **shard_open_all(const opt_list *paths, const char *const *kinds, const char **kind_out);
void shard_close_all(art_file **a, int n);

/* The weight of shard a's tensor `name` (the count its mean is over). */
typedef double (*shard_weight_fn)(const art_file *a, const char *name, void *ctx);

/* Write every tensor of the shards, reduced as above, to w (opened by the
 * caller with the unsharded kind); non-finite results die naming the
 * tensor. 0, or -1 with mc_error() (w then aborted). */
int shard_reduce(art_file **a, int n, shard_weight_fn weight, void *ctx, art_writer *w);

/* Open `out` as `kind` with key and meta (meta freed), reduce the shards
 * into it and close it, then close the shards (shard_close_all); dies with
 * one line on any error, leaving nothing at `out`. Prints what it wrote on
 * stderr. */
void shard_write(const char *out, const char *kind, const char *key, mc_val *meta, art_file **a, int n,
                 shard_weight_fn weight, void *ctx);

#endif
