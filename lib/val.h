/* val.h - a small tree of msgpack-like values, used for artifact `meta` maps.
 *
 * A value owns its children and strings; mc_val_free frees the whole tree.
 * Maps keep insertion order (msgpack maps are written in that order) and
 * setting an existing key replaces its value in place.
 */
#ifndef MC_VAL_H
#define MC_VAL_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    VAL_NIL = 0,
    VAL_BOOL = 1,
    VAL_INT = 2,    /* signed or unsigned integers that fit int64 */
    VAL_FLOAT = 3,
    VAL_STR = 4,
    VAL_ARRAY = 5,
    VAL_MAP = 6,
    VAL_BIN = 7,
    VAL_UINT = 8,   /* unsigned integers above INT64_MAX */
} val_type;

typedef struct mc_val mc_val;
struct mc_val {
    val_type type;
    union {
        int b;
        int64_t i;
        uint64_t u;
        double f;
        struct { char *s; size_t len; } str;      /* STR and BIN; str NUL-terminated */
        struct { mc_val **items; char **keys; size_t n, cap; } c; /* ARRAY (keys NULL) and MAP */
    } v;
};

mc_val *val_nil(void);
mc_val *val_bool(int b);
mc_val *val_int(int64_t i);
mc_val *val_float(double f);
mc_val *val_str(const char *s);
mc_val *val_strn(const char *s, size_t n);
mc_val *val_bin(const void *p, size_t n);
mc_val *val_array(void);
mc_val *val_map(void);
void val_free(mc_val *v);
mc_val *val_clone(const mc_val *v);

/* Append to an array / set in a map; both take ownership of `item` and
 * return it. */
mc_val *val_push(mc_val *arr, mc_val *item);
mc_val *val_set(mc_val *map, const char *key, mc_val *item);

/* Shorthands for map entries. */
void val_set_str(mc_val *map, const char *key, const char *s);
void val_set_int(mc_val *map, const char *key, int64_t i);
void val_set_float(mc_val *map, const char *key, double f);
mc_val *val_set_map(mc_val *map, const char *key);   /* new child map */
mc_val *val_set_array(mc_val *map, const char *key); /* new child array */

/* Lookup: NULL if absent or `map` is not a map. A dotted path "a.b.c" walks
 * nested maps in val_path. */
const mc_val *val_get(const mc_val *map, const char *key);
/* 1 if a and b hold the same values (maps: the same keys in the same order). */
int val_equal(const mc_val *a, const mc_val *b);
const mc_val *val_path(const mc_val *map, const char *dotted);
/* Typed lookups: return `def` when absent or of another type (ints convert
 * to double in val_get_float). */
const char *val_get_str(const mc_val *map, const char *key, const char *def);
int64_t val_get_int(const mc_val *map, const char *key, int64_t def);
double val_get_float(const mc_val *map, const char *key, double def);

/* Print as compact JSON-like text (for `art show`). */
void val_print(const mc_val *v, void *file /* FILE* */, int indent);

#endif
