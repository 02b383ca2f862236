/* config.h - `key = value` configuration files.
 *
 * Syntax: UTF-8 text (a byte-order mark at the start is skipped); one
 * `key = value` per line; `#` starts a comment (anywhere outside
 * the value's text is fine: "lr = 1e-3  # comment"); blank lines ignored;
 * `include other.conf` reads another file (path relative to the including
 * file's directory) at that point. Later values override earlier ones.
 * Command-line overrides (`--set k=v`) come last and win.
 *
 * Keys are namespaced by their first dotted component (`model.d_model`,
 * `train.lr`, ...). A stage reads its namespaces with the typed getters,
 * which remember what was read; cfg_check_unknown() then rejects any key in
 * those namespaces that no getter asked for ("FILE:LINE: unknown key ...").
 * The key of a stage (key.h) is made of every entry in its namespaces, so Make
 * can compute it from the files without running the stage.
 */
#ifndef MC_CONFIG_H
#define MC_CONFIG_H

#include <stddef.h>

#include "opts.h"

typedef struct mc_cfg mc_cfg;

mc_cfg *cfg_new(void);
void cfg_free(mc_cfg *c);

/* Read a file (and its includes). -1 with mc_error() "FILE:LINE: why". */
int cfg_load(mc_cfg *c, const char *path);
/* Parse text as if it were the file `name` (for tests). */
int cfg_load_text(mc_cfg *c, const char *text, const char *name);
/* Apply "key=value" (source recorded as "--set"). -1 on a malformed arg. */
int cfg_set(mc_cfg *c, const char *kv);

/* Number of entries and access by index (sorted by key). */
size_t cfg_count(const mc_cfg *c);
const char *cfg_key_at(const mc_cfg *c, size_t i);
const char *cfg_value_at(const mc_cfg *c, size_t i);
/* Where an entry was last set: "FILE:LINE" or "--set". NULL if absent. */
const char *cfg_where(const mc_cfg *c, const char *key);
/* Raw lookup without marking as read; NULL if absent. */
const char *cfg_peek(const mc_cfg *c, const char *key);

/* Typed getters. Each marks `key` as read. When the key is absent the
 * default is returned (`required` variants fail instead). A value that does
 * not parse or is out of [min, max] fails with "FILE:LINE: key = value: why".
 * The cfg_get_* forms return -1 with mc_error(); the short forms die(). */
int cfg_get_str(mc_cfg *c, const char *key, const char *def, const char **out);
int cfg_get_int(mc_cfg *c, const char *key, long def, long min, long max, long *out);
int cfg_get_float(mc_cfg *c, const char *key, double def, double min, double max, double *out);
int cfg_get_bool(mc_cfg *c, const char *key, int def, int *out);
/* One of a fixed set of words; returns the index into `choices` (NULL-ended). */
int cfg_get_enum(mc_cfg *c, const char *key, const char *def, const char *const *choices, int *out);

const char *cfg_str(mc_cfg *c, const char *key, const char *def);  /* def NULL: required */
long cfg_int(mc_cfg *c, const char *key, long def, long min, long max);
double cfg_float(mc_cfg *c, const char *key, double def, double min, double max);
int cfg_bool(mc_cfg *c, const char *key, int def);
int cfg_enum(mc_cfg *c, const char *key, const char *def, const char *const *choices);

/* Fail on the first entry whose namespace is in `namespaces` (NULL-ended,
 * e.g. {"train", "model", NULL}) and that was never read. -1 + mc_error(). */
int cfg_check_unknown(const mc_cfg *c, const char *const *namespaces);

/* Option rows (opts.h) that feed a config: `call`s with o->dst the mc_cfg.
 * cfg_opt_load: --config FILE; cfg_opt_set: --set KEY=VALUE; cfg_opt_key:
 * the value as config entry o->key (train --seed N is --set train.seed=N). */
int cfg_opt_load(const opt_spec *o, const char *path);
int cfg_opt_set(const opt_spec *o, const char *kv);
int cfg_opt_key(const opt_spec *o, const char *value);

/* The --config and --set rows of a stage reading config `cfg`. */
#define OPT_ROWS_CONFIG(cfg)                                                                       \
    {.name = "--config", .kind = OPT_STR, .dst = (cfg), .arg = "FILE", .call = cfg_opt_load,       \
     .flags = OPT_REPEAT | OPT_INPUT, .help = "read configuration (key = value lines); later files win"}, \
    {.name = "--set", .kind = OPT_STR, .dst = (cfg), .arg = "KEY=VALUE", .call = cfg_opt_set,      \
     .flags = OPT_REPEAT, .help = "one configuration value, over the files"}

#endif
