/* key.h - cache keys: what names a stage run's artifact.
 *
 * A stage's key is XXH3-128 over a canonical text, printed as 32 lowercase
 * hex digits exactly as `xxh128sum` prints the digest of that text:
 *
 *   stage <name>\n
 *   binary <32 hex: XXH3-128 of the stage binary's bytes>\n
 *   config <key>=<value>\n      one line per config value, sorted by key
 *   input <role> <32 hex>\n     one line per input artifact, sorted by role
 *
 * The same text is produced by `build/bin/key` (which Make calls) and by the
 * stages themselves, so both agree byte for byte.
 */
#ifndef MC_KEY_H
#define MC_KEY_H

#include <stddef.h>

typedef struct mc_key mc_key;

mc_key *key_new(const char *stage);
void key_free(mc_key *k);
/* Digest of the file at path (the stage binary). -1 with mc_error(). */
int key_binary_file(mc_key *k, const char *path);
/* Use a known binary digest (32 hex). */
void key_binary_hex(mc_key *k, const char *hex);
/* Add a config value; a later value for the same key replaces it. */
void key_config(mc_key *k, const char *name, const char *value);
/* Add an input artifact's key by role; -1 if `hex` is not 32 hex digits. */
int key_input(mc_key *k, const char *role, const char *hex);
/* The canonical text (owned by k, valid until the next call that changes k). */
const char *key_text(mc_key *k);
/* The key: 32 lowercase hex + NUL. */
void key_digest(mc_key *k, char out[33]);

/* The key of the running stage binary: key_new(stage) with the digest of
 * /proc/self/exe and every entry of `cfg` whose namespace (the part before
 * the first '.') is in `namespaces` (NULL-ended). What the stages compute
 * when no --key is given; the same as `key --stage ... --ns ...`. Dies on
 * an unreadable binary. */
struct mc_cfg;
mc_key *key_new_self(const char *stage, const struct mc_cfg *cfg, const char *const *namespaces);

/* The names of n inputs of one kind among a key's roles, as the workflow
 * names them (model.<task>, data.<task>): out[i] = names[i] when every name
 * is a role word (1 to 47 characters of [A-Za-z0-9_-]) and no two are
 * equal, else every out[i] is the position i ("0", "1", ...). names[i] may
 * be NULL. */
void key_role_names(const char *const *names, int n, char (*out)[48]);

/* 1 if s is exactly 32 lowercase hex digits. */
int key_is_hex(const char *s);

/* XXH3-128 of a file / buffer, as 32 lowercase hex. */
int key_file_hex(const char *path, char out[33]);
void key_buf_hex(const void *p, size_t n, char out[33]);

#endif
