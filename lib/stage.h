/* stage.h - what the stages that run a model on tokens artifacts share
 * (eval, fisher, gram): opening the device, loading the model (with its IA3
 * vectors) and the tokens with their checks, the examples of a shard, and
 * the end of a run's key. Every function dies with one line on bad input
 * (the stages' way: nothing is written yet).
 */
#ifndef MC_STAGE_H
#define MC_STAGE_H

#include <stdint.h>

#include "config.h"
#include "device.h"
#include "key.h"
#include "shard.h"
#include "t5.h"
#include "tokens.h"

/* The option rows of a statistic `ns_` ("fisher", "gram") after its own:
 * --examples (into a long), --shard (a string), --reduce (an opt_list), the
 * config, --device, --key and -o (kind_, the artifact written). */
#define STAGE_ROWS_STATISTIC(ns_, kind_, examples_, shard_, reduce_, cfg_, key_, out_)                       \
    {.name = "--examples", .kind = OPT_INT, .dst = (examples_), .arg = "N", .lo = 1, .hi = 1e12, .def = "1000", \
     .key = ns_ ".examples", .help = "the first N examples of --data"},                                    \
    {.name = "--shard", .kind = OPT_STR, .dst = (shard_), .arg = "I/N", .key = ns_ ".shard",              \
     .help = "compute shard I of N of the examples (a *_shard artifact, for --reduce)"},                  \
    {.name = "--reduce", .kind = OPT_LIST, .dst = (reduce_), .arg = "S1,...,SN", .flags = OPT_INPUT,       \
     .key = ns_ ".shards", .help = "add the shard artifacts of shards 1..N (in order) into the " ns_},    \
    OPT_ROWS_CONFIG(cfg_),                                                                                 \
    OPT_ROW_DEVICE("where the model runs; default: DEVICE, else " ns_ ".device, else cpu"),               \
    OPT_ROW_KEY(key_), OPT_ROW_OUT(out_, "OUT.msgpack", "the " kind_ " artifact")

/* A statistic's run: config `ns`.batch_size (16), `ns`.max_input_len
 * (512), `ns`.max_target_len (128), the usage text STAGE_ABOUT_STATISTIC
 * says so. */
#define STAGE_ABOUT_STATISTIC(ns_) \
    "config: " ns_ ".batch_size (16), " ns_ ".max_input_len (512), " ns_ ".max_target_len (128)"
typedef struct {
    const mc_ops *ops;
    int dev;
    long batch, max_in, max_tgt;
    t5_model *m;                          /* stage_load_model's */
    tok_set *s;                           /* stage_load_tokens' */
    char model_key[33], ia3_key[33];      /* "" when not given */
    int64_t n, lo, hi;                    /* examples sharded; this shard's [lo, hi) */
    int64_t *order;                       /* [lo, hi) by input length, ties by id: the batching order */
    long long enc_rows, enc_tokens;       /* stage_fill's encoder rows (B x Te) and real tokens among them */
    char shard_text[48];                  /* "I/N" */
} stage_run;

/* The start of a statistic's run, once its options are checked: shard
 * `shard_arg` ("I/N"; NULL: the whole), the backend's threads, the lengths,
 * stage_device, the model (with `ia3` when not NULL) and the tokens at
 * `data`, and the shard's examples among the first `examples`. */
void stage_open_statistic(stage_run *r, mc_cfg *cfg, const char *ns, const char *model, const char *ia3,
                          const char *data, const char *shard_arg, long examples);
/* Fill tb with the B examples r->order[p0 .. p0+B-1] of r->s, each with
 * its choice pick[i] (an index among the example's choices; NULL: the gold
 * label) as the target. A statistic walks its shard in r->order, so that a
 * batch holds inputs of similar length and pads little (eval batches so
 * too); its sums run in that order. */
void stage_fill(stage_run *r, tok_batch *tb, int64_t p0, int B, const int *pick);
/* The share of stage_fill's encoder rows that were padding, in percent. */
double stage_padding(const stage_run *r);
/* Free what stage_open_statistic made. */
void stage_close(stage_run *r);

/* The stage's device (`ns`.device, as dev_resolve) into *dev, and its ops
 * table; the config must hold no key of `ns` the stage does not read (its
 * config values are read before this call). */
const mc_ops *stage_device(mc_cfg *cfg, const char *ns, int *dev);

/* The model at `model` (a full model; the base of `ia3` when given) with
 * its key in model_key and the IA3 vectors' in ia3_key ("" without). The
 * caller frees it with t5_free. */
t5_model *stage_load_model(const char *model, const char *ia3, char model_key[33], char ia3_key[33]);

/* The tokens artifact at `path` (with choices), which holds examples and no
 * token id outside m's vocabulary. The caller frees it with tok_free. */
tok_set *stage_load_tokens(const char *path, const t5_model *m);

/* Shard sh (given as shard_arg, NULL for the whole) of the first `examples`
 * examples of s: [*lo, *hi), never empty; returns the number of examples
 * sharded (min(examples, s->n)) and writes "I/N" into shard_text. */
int64_t stage_shard_range(const mc_shard *sh, const char *shard_arg, long examples, const tok_set *s, int64_t *lo,
                          int64_t *hi, char shard_text[48]);

/* The last entries of a statistic's key: `ns`.shard = shard ("I/N", when
 * not NULL), `ns`.shards = shards (when > 0), the inputs model, ia3 and
 * data (those not ""), the device (dev_key on `ns`.device); then the digest
 * into out and k freed. */
void stage_key_finish(mc_key *k, mc_cfg *cfg, const char *ns, const char *shard, int shards, const char *model,
                      const char *ia3, const char *data, int dev, char out[33]);

#endif
