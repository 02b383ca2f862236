/* art.c - artifact writer and reader; the format is documented in art.h. */
#include "art.h"

#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "common.h"

static const unsigned char TRAILER_PREFIX[7] = {0xa4, 'x', 'x', 'h', '3', 0xc4, 0x10};

static const char *const DTYPE_NAMES[] = {"f32", "f64", "i32", "i64", "u8"};
static const size_t DTYPE_SIZES[] = {4, 8, 4, 8, 1};

const char *art_dtype_name(art_dtype t) { return (unsigned)t < 5 ? DTYPE_NAMES[t] : "?"; }
size_t art_dtype_size(art_dtype t) { return (unsigned)t < 5 ? DTYPE_SIZES[t] : 0; }

int art_dtype_parse(const char *s, size_t n) {
    for (int i = 0; i < 5; i++)
        if (strlen(DTYPE_NAMES[i]) == n && memcmp(DTYPE_NAMES[i], s, n) == 0) return i;
    return -1;
}

void art_hex(const unsigned char d[16], char out[33]) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) {
        out[2 * i] = hx[d[i] >> 4];
        out[2 * i + 1] = hx[d[i] & 15];
    }
    out[32] = 0;
}

static int is_key_hex(const char *s, size_t n) {
    if (n == 0) return 1;
    if (n != 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

/* ================================================================ writer */

struct art_writer {
    char *path, *tmp;
    FILE *f;
    XXH3_state_t *xx;
    msgpack_packer pk;
    unsigned char *buf;
    size_t used, cap;
    int err;                /* errno of the first write error */
    size_t n_tensors, written;
    size_t remaining;       /* data bytes still owed by the current tensor */
};

static void wflush(art_writer *w) {
    if (w->used && !w->err) {
        XXH3_128bits_update(w->xx, w->buf, w->used);
        if (fwrite(w->buf, 1, w->used, w->f) != w->used) w->err = errno ? errno : EIO;
    }
    w->used = 0;
}

static int wcallback(void *data, const char *p, size_t n) {
    art_writer *w = data;
    if (n == 0) return 0; /* an empty bin's body: p may be NULL */
    if (n >= w->cap) {
        wflush(w);
        if (!w->err) {
            XXH3_128bits_update(w->xx, p, n);
            if (fwrite(p, 1, n, w->f) != n) w->err = errno ? errno : EIO;
        }
        return 0;
    }
    if (w->used + n > w->cap) wflush(w);
    memcpy(w->buf + w->used, p, n);
    w->used += n;
    return 0;
}

static void pack_cstr(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_val(msgpack_packer *pk, const mc_val *v) {
    switch (v->type) {
    case VAL_NIL: msgpack_pack_nil(pk); break;
    case VAL_BOOL: v->v.b ? msgpack_pack_true(pk) : msgpack_pack_false(pk); break;
    case VAL_INT: msgpack_pack_int64(pk, v->v.i); break;
    case VAL_UINT: msgpack_pack_uint64(pk, v->v.u); break;
    case VAL_FLOAT: msgpack_pack_double(pk, v->v.f); break;
    case VAL_STR:
        msgpack_pack_str(pk, v->v.str.len);
        msgpack_pack_str_body(pk, v->v.str.s, v->v.str.len);
        break;
    case VAL_BIN:
        msgpack_pack_bin(pk, v->v.str.len);
        msgpack_pack_bin_body(pk, v->v.str.s, v->v.str.len);
        break;
    case VAL_ARRAY:
        msgpack_pack_array(pk, v->v.c.n);
        for (size_t i = 0; i < v->v.c.n; i++) pack_val(pk, v->v.c.items[i]);
        break;
    case VAL_MAP:
        msgpack_pack_map(pk, v->v.c.n);
        for (size_t i = 0; i < v->v.c.n; i++) {
            pack_cstr(pk, v->v.c.keys[i]);
            pack_val(pk, v->v.c.items[i]);
        }
        break;
    }
}

/* Writers not yet closed or aborted: die() removes their temporary files
 * (a stage that dies mid-write leaves nothing behind). */
#define MAX_OPEN_WRITERS 16
static art_writer *open_writers[MAX_OPEN_WRITERS];

static void writers_cleanup(void) {
    for (int i = 0; i < MAX_OPEN_WRITERS; i++)
        if (open_writers[i]) {
            unlink(open_writers[i]->tmp);
            open_writers[i] = NULL;
        }
}

static void writer_track(art_writer *w, int on) {
    for (int i = 0; i < MAX_OPEN_WRITERS; i++)
        if (on ? !open_writers[i] : open_writers[i] == w) {
            open_writers[i] = on ? w : NULL;
            break;
        }
    if (on) mc_at_die(writers_cleanup);
}

art_writer *art_writer_open(const char *path, const char *kind, const char *key,
                            const mc_val *meta, size_t n_tensors) {
    if (!key) key = "";
    if (!is_key_hex(key, strlen(key))) {
        mc_fail("%s: key '%s' is not 32 lowercase hex digits", path, key);
        return NULL;
    }
    if (meta && meta->type != VAL_MAP) {
        mc_fail("%s: meta must be a map", path);
        return NULL;
    }
    if (mc_output_ok(path) != 0 || mc_mkdir_parents(path) != 0) return NULL;
    art_writer *w = callocCheck(1, sizeof *w);
    w->path = strdupCheck(path);
    size_t tl = strlen(path) + 32;
    w->tmp = mallocCheck(tl);
    snprintf(w->tmp, tl, "%s.tmp.%ld", path, (long)getpid());
    w->f = mc_create_new(w->tmp);
    if (!w->f) {
        free(w->tmp);
        free(w->path);
        free(w);
        return NULL;
    }
    writer_track(w, 1);
    w->xx = XXH3_createState();
    XXH3_128bits_reset(w->xx);
    w->cap = 1 << 16; /* tensor data beyond it is written straight through */
    w->buf = mallocCheck(w->cap);
    w->n_tensors = n_tensors;
    msgpack_packer_init(&w->pk, w, wcallback);

    msgpack_pack_map(&w->pk, 6);
    pack_cstr(&w->pk, "mats");
    msgpack_pack_uint32(&w->pk, ART_VERSION);
    pack_cstr(&w->pk, "kind");
    pack_cstr(&w->pk, kind);
    pack_cstr(&w->pk, "key");
    pack_cstr(&w->pk, key);
    pack_cstr(&w->pk, "meta");
    if (meta) pack_val(&w->pk, meta);
    else msgpack_pack_map(&w->pk, 0);
    pack_cstr(&w->pk, "tensors");
    msgpack_pack_array(&w->pk, n_tensors);
    return w;
}

int art_writer_tensor_begin(art_writer *w, const char *name, art_dtype dtype, int ndim,
                            const int64_t *shape) {
    if (w->remaining) return mc_fail("%s: tensor before the previous one's data was complete", w->path);
    if (w->written == w->n_tensors)
        return mc_fail("%s: more tensors than the %zu announced", w->path, w->n_tensors);
    if (ndim < 0 || ndim > ART_MAX_DIMS || art_dtype_size(dtype) == 0)
        return mc_fail("%s: tensor '%s': bad dtype or rank", w->path, name);
    size_t n = art_dtype_size(dtype);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) return mc_fail("%s: tensor '%s': negative dimension", w->path, name);
        n *= (size_t)shape[i];
    }
    msgpack_pack_map(&w->pk, 4);
    pack_cstr(&w->pk, "name");
    pack_cstr(&w->pk, name);
    pack_cstr(&w->pk, "dtype");
    pack_cstr(&w->pk, art_dtype_name(dtype));
    pack_cstr(&w->pk, "shape");
    msgpack_pack_array(&w->pk, ndim);
    for (int i = 0; i < ndim; i++) msgpack_pack_uint64(&w->pk, (uint64_t)shape[i]);
    pack_cstr(&w->pk, "data");
    msgpack_pack_bin(&w->pk, n);
    w->remaining = n;
    w->written++;
    return 0;
}

int art_writer_tensor_data(art_writer *w, const void *data, size_t nbytes) {
    if (nbytes > w->remaining)
        return mc_fail("%s: %zu bytes of tensor data given where %zu remain", w->path, nbytes, w->remaining);
    msgpack_pack_bin_body(&w->pk, data, nbytes);
    w->remaining -= nbytes;
    return 0;
}

int art_writer_tensor(art_writer *w, const char *name, art_dtype dtype, int ndim,
                      const int64_t *shape, const void *data) {
    if (art_writer_tensor_begin(w, name, dtype, ndim, shape) != 0) return -1;
    return art_writer_tensor_data(w, data, w->remaining);
}

static void writer_free(art_writer *w) {
    writer_track(w, 0);
    if (w->f) fclose(w->f);
    XXH3_freeState(w->xx);
    free(w->buf);
    free(w->tmp);
    free(w->path);
    free(w);
}

void art_writer_abort(art_writer *w) {
    if (!w) return;
    unlink(w->tmp);
    writer_free(w);
}

int art_writer_ragged(art_writer *w, const char *vname, art_dtype dtype, const void *vals, int64_t n_vals,
                      const char *oname, const int64_t *off, int64_t n_rows) {
    static const int64_t zero = 0;
    int64_t no = n_rows + 1;
    if (art_writer_tensor(w, vname, dtype, 1, &n_vals, vals ? vals : (const void *)"") < 0) return -1;
    return art_writer_tensor(w, oname, ART_I64, 1, &no, off ? off : &zero);
}

int art_read_text(const art_file *a, const char *text, const char *offs, const char **bytes, int64_t **off,
                  int64_t *rows) {
    const art_tensor *t = art_find(a, text), *o = art_find(a, offs);
    if (!t || !o || t->dtype != ART_U8 || o->dtype != ART_I64 || o->numel < 1)
        return mc_fail("%s: missing or mistyped %s (u8) / %s (i64): not an examples or corpus artifact from "
                       "prepare", a->path, text, offs);
    *bytes = (const char *)t->data;
    *rows = o->numel - 1;
    *off = mallocCheck(o->nbytes);
    art_tensor_copy(o, *off);
    return 0;
}

int art_read_rows(const art_file *a, int64_t n_rows, int64_t **exch, int32_t **label) {
    const art_tensor *ec = art_find(a, "example_choices"), *lb = art_find(a, "label");
    if (!ec || ec->dtype != ART_I64 || ec->numel != n_rows + 1 || !lb || lb->dtype != ART_I32 || lb->numel != n_rows)
        return mc_fail("%s: example_choices (i64, n+1) or label (i32, n) missing or mis-sized", a->path);
    *exch = mallocCheck(ec->nbytes);
    *label = mallocCheck(lb->nbytes ? lb->nbytes : 1);
    art_tensor_copy(ec, *exch);
    art_tensor_copy(lb, *label);
    return 0;
}

int art_writer_rows(art_writer *w, const int64_t *exch, const int32_t *label, int64_t n_rows) {
    int64_t ne = n_rows + 1;
    if (art_writer_tensor(w, "example_choices", ART_I64, 1, &ne, exch) < 0) return -1;
    return art_writer_tensor(w, "label", ART_I32, 1, &n_rows, label);
}

int art_writer_close(art_writer *w) {
    if (w->remaining || w->written != w->n_tensors) {
        mc_fail("%s: %zu of %zu tensors written, %zu data bytes missing", w->path, w->written,
                w->n_tensors, w->remaining);
        goto fail;
    }
    wflush(w);
    XXH128_hash_t h = XXH3_128bits_digest(w->xx);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    /* The trailer is not part of the hash: write it directly. */
    if (!w->err && (fwrite(TRAILER_PREFIX, 1, 7, w->f) != 7 || fwrite(c.digest, 1, 16, w->f) != 16))
        w->err = errno ? errno : EIO;
    if (!w->err && fflush(w->f) != 0) w->err = errno;
    if (!w->err && fsync(fileno(w->f)) != 0) w->err = errno;
    if (w->err) {
        mc_fail("%s: write failed: %s", w->tmp, strerror(w->err));
        goto fail;
    }
    if (fclose(w->f) != 0) {
        w->f = NULL;
        mc_fail("%s: close failed: %s", w->tmp, strerror(errno));
        goto fail;
    }
    w->f = NULL;
    /* checked again: the run may have been long */
    if (mc_output_ok(w->path) != 0) goto fail;
    if (rename(w->tmp, w->path) != 0) {
        mc_fail("%s: cannot rename into place: %s", w->path, strerror(errno));
        goto fail;
    }
    writer_free(w);
    return 0;
fail:
    art_writer_abort(w);
    return -1;
}

/* ================================================================ reader */

static int bad(art_file *a, const char *why) {
    return mc_fail("%s: %s", a->path, why);
}

static int obj_is_str(const msgpack_object *o, const char *s) {
    size_t n = strlen(s);
    return o->type == MSGPACK_OBJECT_STR && o->via.str.size == n && memcmp(o->via.str.ptr, s, n) == 0;
}

static mc_val *to_val(const msgpack_object *o, int depth, int *err) {
    if (depth > 64) { *err = 1; return val_nil(); }
    switch (o->type) {
    case MSGPACK_OBJECT_NIL: return val_nil();
    case MSGPACK_OBJECT_BOOLEAN: return val_bool(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        if (o->via.u64 > (uint64_t)INT64_MAX) {
            mc_val *v = val_int(0);
            v->type = VAL_UINT;
            v->v.u = o->via.u64;
            return v;
        }
        return val_int((int64_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER: return val_int(o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64: return val_float(o->via.f64);
    case MSGPACK_OBJECT_STR: return val_strn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_BIN: return val_bin(o->via.bin.ptr, o->via.bin.size);
    case MSGPACK_OBJECT_EXT: return val_bin(o->via.ext.ptr, o->via.ext.size);
    case MSGPACK_OBJECT_ARRAY: {
        mc_val *a = val_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            val_push(a, to_val(&o->via.array.ptr[i], depth + 1, err));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        mc_val *m = val_map();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object_kv *kv = &o->via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR) { *err = 1; continue; }
            char *k = mallocCheck(kv->key.via.str.size + 1);
            memcpy(k, kv->key.via.str.ptr, kv->key.via.str.size);
            k[kv->key.via.str.size] = 0;
            val_set(m, k, to_val(&kv->val, depth + 1, err));
            free(k);
        }
        return m;
    }
    }
    *err = 1;
    return val_nil();
}

static int parse_tensor(art_file *a, const msgpack_object *o, art_tensor *t) {
    if (o->type != MSGPACK_OBJECT_MAP) return bad(a, "a tensor entry is not a map");
    const msgpack_object *name = NULL, *dtype = NULL, *shape = NULL, *data = NULL;
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (obj_is_str(&kv->key, "name")) name = &kv->val;
        else if (obj_is_str(&kv->key, "dtype")) dtype = &kv->val;
        else if (obj_is_str(&kv->key, "shape")) shape = &kv->val;
        else if (obj_is_str(&kv->key, "data")) data = &kv->val;
    }
    if (!name || name->type != MSGPACK_OBJECT_STR) return bad(a, "a tensor has no string 'name'");
    t->name = mallocCheck(name->via.str.size + 1);
    memcpy(t->name, name->via.str.ptr, name->via.str.size);
    t->name[name->via.str.size] = 0;
    if (strlen(t->name) != name->via.str.size)
        return mc_fail("%s: a tensor name contains a NUL byte", a->path);
    if (!dtype || dtype->type != MSGPACK_OBJECT_STR)
        return mc_fail("%s: tensor '%s' has no string 'dtype'", a->path, t->name);
    int dt = art_dtype_parse(dtype->via.str.ptr, dtype->via.str.size);
    if (dt < 0) return mc_fail("%s: tensor '%s' has an unknown dtype", a->path, t->name);
    t->dtype = (art_dtype)dt;
    if (!shape || shape->type != MSGPACK_OBJECT_ARRAY || shape->via.array.size > ART_MAX_DIMS)
        return mc_fail("%s: tensor '%s' has no valid 'shape' (array of at most %d uints)", a->path,
                       t->name, ART_MAX_DIMS);
    t->ndim = (int)shape->via.array.size;
    uint64_t numel = 1;
    for (int i = 0; i < t->ndim; i++) {
        const msgpack_object *d = &shape->via.array.ptr[i];
        if (d->type != MSGPACK_OBJECT_POSITIVE_INTEGER || d->via.u64 > ((uint64_t)1 << 40))
            return mc_fail("%s: tensor '%s': bad dimension %d", a->path, t->name, i);
        t->shape[i] = (int64_t)d->via.u64;
        if (d->via.u64 && numel > ((uint64_t)1 << 50) / d->via.u64)
            return mc_fail("%s: tensor '%s': shape too large", a->path, t->name);
        numel *= d->via.u64;
    }
    t->numel = (int64_t)numel;
    t->nbytes = (size_t)numel * art_dtype_size(t->dtype);
    if (!data || data->type != MSGPACK_OBJECT_BIN)
        return mc_fail("%s: tensor '%s' has no binary 'data'", a->path, t->name);
    if (data->via.bin.size != t->nbytes)
        return mc_fail("%s: tensor '%s': %u data bytes for shape needing %zu", a->path, t->name,
                       data->via.bin.size, t->nbytes);
    t->data = (const unsigned char *)data->via.bin.ptr;
    return 0;
}

static int name_cmp(const void *x, const void *y) {
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Walk the msgpack encoding of buf without building anything and check that
 * it is exactly one complete value and that no container announces more
 * elements than bytes remain. msgpack-c allocates a container's element array
 * from its announced count before reading the elements, so this check keeps
 * a crafted count from asking for gigabytes. Returns 0 if plausible. */
static int mp_plausible(const unsigned char *b, size_t len) {
    enum { MAXD = 64 };
    uint64_t todo[MAXD];
    int depth = 0;
    size_t p = 0;
    todo[0] = 1;
#define NEED(n) do { if ((uint64_t)(n) > len - p) return -1; } while (0)
#define BE(k) ({ uint64_t v_ = 0; NEED(k); for (int i_ = 0; i_ < (k); i_++) v_ = v_ << 8 | b[p++]; v_; })
    for (;;) {
        while (todo[depth] == 0) {
            if (depth == 0) return p == len ? 0 : -1;
            depth--;
        }
        todo[depth]--;
        NEED(1);
        unsigned c = b[p++];
        uint64_t skip = 0, count = 0;
        int container = 0;
        if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3) continue;
        if (c >= 0x80 && c <= 0x8f) { count = 2 * (c & 15); container = 1; }
        else if (c >= 0x90 && c <= 0x9f) { count = c & 15; container = 1; }
        else if (c >= 0xa0 && c <= 0xbf) skip = c & 31;
        else switch (c) {
        case 0xc4: case 0xd9: skip = BE(1); break;
        case 0xc5: case 0xda: skip = BE(2); break;
        case 0xc6: case 0xdb: skip = BE(4); break;
        case 0xc7: skip = BE(1) + 1; break;
        case 0xc8: skip = BE(2) + 1; break;
        case 0xc9: skip = BE(4) + 1; break;
        case 0xca: skip = 4; break;
        case 0xcb: skip = 8; break;
        case 0xcc: case 0xd0: skip = 1; break;
        case 0xcd: case 0xd1: skip = 2; break;
        case 0xce: case 0xd2: skip = 4; break;
        case 0xcf: case 0xd3: skip = 8; break;
        case 0xd4: skip = 2; break;
        case 0xd5: skip = 3; break;
        case 0xd6: skip = 5; break;
        case 0xd7: skip = 9; break;
        case 0xd8: skip = 17; break;
        case 0xdc: count = BE(2); container = 1; break;
        case 0xdd: count = BE(4); container = 1; break;
        case 0xde: count = 2 * BE(2); container = 1; break;
        case 0xdf: count = 2 * BE(4); container = 1; break;
        default: return -1; /* 0xc1 is never used */
        }
        if (container) {
            NEED(count);
            if (depth + 1 >= MAXD) return -1;
            todo[++depth] = count;
        } else {
            NEED(skip);
            p += skip;
        }
    }
#undef NEED
#undef BE
}

/* ================================================================ contents */

/* A checksum proves a file whole, not sane (STYLE.md, "Untrusted input"):
 * before any reader sees an artifact, every tensor its kind's readers index
 * with is checked against its bound. One row per tensor; a row whose tensor
 * is absent is skipped (readers say which tensors they require), and a bound
 * whose tensor is absent is not checked. Rows come in dependency order: a
 * tensor is checked before the rows that bound themselves by it. */
typedef enum {
    CK_DTYPE = 0,   /* the dtype only */
    CK_IDS = 1,     /* token ids: 0 <= id <= INT32_MAX */
    CK_OFFSETS = 2, /* row offsets into `of`: 1-d, from 0, non-decreasing, ending at
                       the count of `of` (its rows, when `of` holds offsets itself) */
    CK_LABEL = 3,   /* per row of the offsets `of`: an index below that row's length */
    CK_PER_ROW = 4, /* one entry per row of the offsets `of` */
    CK_SQUARE = 5,  /* a [d, d] matrix */
} ck_rule;

#define DT(t) (1u << ART_##t)
#define INTS (DT(I32) | DT(I64))
#define FLOATS (DT(F32) | DT(F64))

typedef struct {
    const char *kind;
    const char *name;   /* a tensor name, "*" for every tensor, "*SUFFIX" for names ending so */
    unsigned dtypes;    /* allowed: DT() bits */
    ck_rule rule;
    const char *of;     /* the tensor the rule bounds this one by */
    const char *rows;   /* CK_OFFSETS: offsets with one row per row of this one */
} ck_row;

static const ck_row CONTENTS[] = {
    {"tokens", "input_ids", INTS, CK_IDS, NULL, NULL},
    {"tokens", "input_offsets", INTS, CK_OFFSETS, "input_ids", NULL},
    {"tokens", "choice_ids", INTS, CK_IDS, NULL, NULL},
    {"tokens", "choice_offsets", INTS, CK_OFFSETS, "choice_ids", NULL},
    {"tokens", "example_choices", INTS, CK_OFFSETS, "choice_offsets", "input_offsets"},
    {"tokens", "label", INTS, CK_LABEL, "example_choices", NULL},
    {"examples", "input_text", DT(U8), CK_DTYPE, NULL, NULL},
    {"examples", "input_offsets", DT(I64), CK_OFFSETS, "input_text", NULL},
    {"examples", "choice_text", DT(U8), CK_DTYPE, NULL, NULL},
    {"examples", "choice_offsets", DT(I64), CK_OFFSETS, "choice_text", NULL},
    {"examples", "example_choices", DT(I64), CK_OFFSETS, "choice_offsets", "input_offsets"},
    {"examples", "label", DT(I32), CK_LABEL, "example_choices", NULL},
    {"examples", "template", DT(I32), CK_PER_ROW, "input_offsets", NULL},
    {"examples", "example", DT(I32), CK_PER_ROW, "input_offsets", NULL},
    {"examples", "source_text", DT(U8), CK_DTYPE, NULL, NULL},
    {"examples", "source_offsets", DT(I64), CK_OFFSETS, "source_text", "input_offsets"},
    {"corpus", "text", DT(U8), CK_DTYPE, NULL, NULL},
    {"corpus", "offsets", DT(I64), CK_OFFSETS, "text", NULL},
    {"vocab", "model", DT(U8), CK_DTYPE, NULL, NULL},
    {"vocab", "spiece.model", DT(U8), CK_DTYPE, NULL, NULL},
    {"metrics", "prediction", DT(I32), CK_DTYPE, NULL, NULL},
    {"metrics", "choice_scores", FLOATS, CK_DTYPE, NULL, NULL},
    {"fisher_block", "*", FLOATS, CK_SQUARE, NULL, NULL},
    {"gram", "*.input_gram", FLOATS, CK_SQUARE, NULL, NULL},
    {"gram", "*.output_grad_gram", FLOATS, CK_SQUARE, NULL, NULL},
    {"fisher_block_shard", "*", FLOATS, CK_SQUARE, NULL, NULL},
    {"gram_shard", "*.input_gram", FLOATS, CK_SQUARE, NULL, NULL},
    {"gram_shard", "*.output_grad_gram", FLOATS, CK_SQUARE, NULL, NULL},
    {"train_checkpoint", "*", DT(F32), CK_DTYPE, NULL, NULL},
};

static int name_matches(const char *pattern, const char *name) {
    if (pattern[0] != '*') return !strcmp(pattern, name);
    size_t p = strlen(pattern + 1), n = strlen(name);
    return n >= p && !strcmp(name + n - p, pattern + 1);
}

static int is_offsets(const char *kind, const char *name) {
    for (size_t i = 0; i < sizeof CONTENTS / sizeof *CONTENTS; i++)
        if (CONTENTS[i].rule == CK_OFFSETS && !strcmp(CONTENTS[i].kind, kind) && !strcmp(CONTENTS[i].name, name))
            return 1;
    return 0;
}

/* Element i of an i32 or i64 tensor. */
static int64_t int_at(const art_tensor *t, int64_t i) {
    if (t->dtype == ART_I32) {
        int32_t v;
        memcpy(&v, t->data + 4 * i, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, t->data + 8 * i, 8);
    return v;
}

#define CK_FIX "the artifact is corrupt or was not written by mats-c; rebuild it with the stage that wrote it"

static int check_offsets(const art_file *a, const ck_row *r, const art_tensor *t, const art_tensor *of) {
    if (t->ndim != 1 || t->numel < 1)
        return mc_fail("%s: tensor %s is not a list of row offsets (1-d, at least one entry); " CK_FIX, a->path,
                       t->name);
    /* what the rows cut: elements, or the rows of other offsets */
    int of_rows = of && is_offsets(a->kind, of->name);
    int64_t end = !of ? -1 : of_rows ? of->numel - 1 : of->numel;
    int64_t prev = 0;
    for (int64_t i = 0; i < t->numel; i++) {
        int64_t v = int_at(t, i);
        if ((i == 0 && v != 0) || v < prev || v - prev > INT32_MAX)
            return mc_fail("%s: tensor %s element %lld is %lld: row offsets start at 0 and grow by 0 to 2^31 - 1; " CK_FIX,
                           a->path, t->name, (long long)i, (long long)v);
        if (end >= 0 && v > end)
            return mc_fail("%s: tensor %s element %lld is %lld, past the %lld %s of %s; " CK_FIX, a->path, t->name,
                           (long long)i, (long long)v, (long long)end, of_rows ? "rows" : "elements", of->name);
        prev = v;
    }
    if (end >= 0 && prev != end)
        return mc_fail("%s: tensor %s ends at %lld but %s has %lld %s; " CK_FIX, a->path, t->name, (long long)prev,
                       of->name, (long long)end, of_rows ? "rows" : "elements");
    const art_tensor *rows = r->rows ? art_find(a, r->rows) : NULL;
    if (rows && rows->numel != t->numel)
        return mc_fail("%s: tensor %s has %lld entries but %s has %lld: both need one per row; " CK_FIX, a->path,
                       t->name, (long long)t->numel, rows->name, (long long)rows->numel);
    return 0;
}

static int check_tensor(const art_file *a, const ck_row *r, const art_tensor *t) {
    if (!(r->dtypes >> t->dtype & 1)) {
        char ok[64] = "";
        for (int d = 0; d < 5; d++)
            if (r->dtypes >> d & 1) snprintf(ok + strlen(ok), sizeof ok - strlen(ok), "%s%s", *ok ? " or " : "", art_dtype_name(d));
        return mc_fail("%s: tensor %s has dtype %s where a '%s' artifact holds %s; " CK_FIX, a->path, t->name,
                       art_dtype_name(t->dtype), a->kind, ok);
    }
    const art_tensor *of = r->of ? art_find(a, r->of) : NULL;
    switch (r->rule) {
    case CK_DTYPE: return 0;
    case CK_SQUARE:
        if (t->ndim != 2 || t->shape[0] != t->shape[1])
            return mc_fail("%s: tensor %s is not a square [d, d] matrix (%d dims, first %lld); " CK_FIX, a->path,
                           t->name, t->ndim, (long long)(t->ndim ? t->shape[0] : 0));
        return 0;
    case CK_IDS:
        for (int64_t i = 0; i < t->numel; i++) {
            int64_t v = int_at(t, i);
            if (v < 0 || v > INT32_MAX)
                return mc_fail("%s: tensor %s element %lld is %lld, not a token id (0 to 2147483647); " CK_FIX, a->path,
                               t->name, (long long)i, (long long)v);
        }
        return 0;
    case CK_OFFSETS: return check_offsets(a, r, t, of);
    case CK_LABEL:
    case CK_PER_ROW:
        if (of && t->numel != of->numel - 1)
            return mc_fail("%s: tensor %s has %lld entries for the %lld rows of %s; " CK_FIX, a->path, t->name,
                           (long long)t->numel, (long long)(of->numel - 1), of->name);
        for (int64_t i = 0; r->rule == CK_LABEL && i < t->numel; i++) {
            int64_t v = int_at(t, i), n = of ? int_at(of, i + 1) - int_at(of, i) : INT64_MAX;
            if (v < 0 && !of)
                return mc_fail("%s: tensor %s element %lld is %lld, not an index; " CK_FIX, a->path, t->name,
                               (long long)i, (long long)v);
            if (v < 0 || v >= n)
                return mc_fail("%s: tensor %s element %lld is %lld, not an index into the %lld choices of example "
                               "%lld; " CK_FIX, a->path, t->name, (long long)i, (long long)v, (long long)n, (long long)i);
        }
        return 0;
    }
    return 0;
}

/* Every row of CONTENTS for a->kind, over every tensor it names. */
static int check_contents(const art_file *a) {
    for (size_t i = 0; i < sizeof CONTENTS / sizeof *CONTENTS; i++) {
        const ck_row *r = &CONTENTS[i];
        if (strcmp(r->kind, a->kind)) continue;
        for (size_t j = 0; j < a->n_tensors; j++)
            if (name_matches(r->name, a->tensors[j].name) && check_tensor(a, r, &a->tensors[j]) != 0) return -1;
    }
    return 0;
}

/* Parse and check everything after the checksum was verified. */
static int art_parse(art_file *a, const char *want_kind) {
    static const char *const order[6] = {"mats", "kind", "key", "meta", "tensors", "xxh3"};
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    int rc = -1;
    if (mp_plausible(a->buf, a->len) != 0) {
        bad(a, "not a valid msgpack document (corrupt artifact)");
        goto done;
    }
    msgpack_unpack_return r = msgpack_unpack_next(&up, (const char *)a->buf, a->len, &off);
    if (r != MSGPACK_UNPACK_SUCCESS || off != a->len) {
        bad(a, "not a valid msgpack document (corrupt artifact)");
        goto done;
    }
    const msgpack_object *root = &up.data;
    if (root->type != MSGPACK_OBJECT_MAP) { bad(a, "top level is not a map"); goto done; }
    const msgpack_object *field[6] = {0};
    int last = -1;
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const msgpack_object_kv *kv = &root->via.map.ptr[i];
        for (int j = 0; j < 6; j++)
            if (obj_is_str(&kv->key, order[j])) {
                if (field[j] || j < last) { bad(a, "top-level keys repeated or out of order"); goto done; }
                field[j] = &kv->val;
                last = j;
            }
    }
    for (int j = 0; j < 6; j++)
        if (!field[j]) { mc_fail("%s: missing top-level key '%s'", a->path, order[j]); goto done; }
    if (field[0]->type != MSGPACK_OBJECT_POSITIVE_INTEGER || field[0]->via.u64 != ART_VERSION) {
        mc_fail("%s: unknown artifact format version (this mats-c reads version %d); HINT: rebuild it with this version of the stage that wrote it",
                a->path, ART_VERSION);
        goto done;
    }
    if (field[1]->type != MSGPACK_OBJECT_STR || field[1]->via.str.size >= sizeof a->kind ||
        field[1]->via.str.size == 0) { bad(a, "'kind' is not a short string"); goto done; }
    memcpy(a->kind, field[1]->via.str.ptr, field[1]->via.str.size);
    a->kind[field[1]->via.str.size] = 0;
    if (field[2]->type != MSGPACK_OBJECT_STR || !is_key_hex(field[2]->via.str.ptr, field[2]->via.str.size)) {
        bad(a, "'key' is not 32 lowercase hex digits or empty");
        goto done;
    }
    memcpy(a->key, field[2]->via.str.ptr, field[2]->via.str.size);
    a->key[field[2]->via.str.size] = 0;
    if (field[3]->type != MSGPACK_OBJECT_MAP) { bad(a, "'meta' is not a map"); goto done; }
    int verr = 0;
    a->meta = to_val(field[3], 0, &verr);
    if (verr) { bad(a, "'meta' has a non-string key or is nested too deeply"); goto done; }
    if (field[4]->type != MSGPACK_OBJECT_ARRAY) { bad(a, "'tensors' is not an array"); goto done; }
    a->n_tensors = field[4]->via.array.size;
    a->tensors = callocCheck(a->n_tensors ? a->n_tensors : 1, sizeof(art_tensor));
    for (size_t i = 0; i < a->n_tensors; i++)
        if (parse_tensor(a, &field[4]->via.array.ptr[i], &a->tensors[i]) != 0) goto done;
    if (a->n_tensors > 1) {
        char **names = mallocCheck(a->n_tensors * sizeof(char *));
        for (size_t i = 0; i < a->n_tensors; i++) names[i] = a->tensors[i].name;
        qsort(names, a->n_tensors, sizeof(char *), name_cmp);
        for (size_t i = 1; i < a->n_tensors; i++)
            if (strcmp(names[i - 1], names[i]) == 0) {
                mc_fail("%s: tensor name '%s' appears twice", a->path, names[i]);
                free(names);
                goto done;
            }
        free(names);
    }
    if (want_kind && strcmp(want_kind, a->kind) != 0) {
        mc_fail("%s: is a '%s' artifact where a '%s' artifact is needed; HINT: check which file was passed",
                a->path, a->kind, want_kind);
        goto done;
    }
    if (check_contents(a) != 0) goto done;
    rc = 0;
done:
    msgpack_unpacked_destroy(&up);
    return rc;
}

/* Verify the trailer and the checksum of a->buf. */
static int art_verify(art_file *a) {
    if (a->len < ART_TRAILER + 1)
        return bad(a, "too short to be an artifact (truncated or not a mats file)");
    const unsigned char *tr = a->buf + a->len - ART_TRAILER;
    if (memcmp(tr, TRAILER_PREFIX, 7) != 0)
        return bad(a, "no checksum trailer: the file is truncated, corrupt or not a mats artifact; delete it and rerun the stage that wrote it");
    XXH128_hash_t h = XXH3_128bits(a->buf, a->len - ART_TRAILER);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    if (memcmp(c.digest, tr + 7, 16) != 0)
        return bad(a, "checksum mismatch: the file is corrupt or was modified; delete it and rerun the stage that wrote it");
    memcpy(a->digest, tr + 7, 16);
    return 0;
}

art_file *art_open(const char *path, const char *want_kind) {
    art_file *a = callocCheck(1, sizeof *a);
    a->path = strdupCheck(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        mc_fail("%s: cannot open: %s", path, strerror(errno));
        art_close(a);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        mc_fail("%s: not a regular file", path);
        close(fd);
        art_close(a);
        return NULL;
    }
    a->len = (size_t)st.st_size;
    if (a->len > 0) {
        void *p = mmap(NULL, a->len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            mc_fail("%s: cannot map: %s", path, strerror(errno));
            close(fd);
            art_close(a);
            return NULL;
        }
        a->buf = p;
        a->mapped = 1;
    }
    close(fd);
    if (art_verify(a) != 0 || art_parse(a, want_kind) != 0) {
        art_close(a);
        return NULL;
    }
    return a;
}

art_file *art_open_buffer(const void *buf, size_t len, const char *name, const char *want_kind) {
    art_file *a = callocCheck(1, sizeof *a);
    a->path = strdupCheck(name);
    a->buf = mallocCheck(len);
    if (len) memcpy(a->buf, buf, len);
    a->len = len;
    if (art_verify(a) != 0 || art_parse(a, want_kind) != 0) {
        art_close(a);
        return NULL;
    }
    return a;
}

void art_close(art_file *a) {
    if (!a) return;
    for (size_t i = 0; i < a->n_tensors; i++) free(a->tensors[i].name);
    free(a->tensors);
    val_free(a->meta);
    if (a->mapped) munmap(a->buf, a->len);
    else free(a->buf);
    free(a->path);
    free(a);
}

const art_tensor *art_find(const art_file *a, const char *name) {
    for (size_t i = 0; i < a->n_tensors; i++)
        if (strcmp(a->tensors[i].name, name) == 0) return &a->tensors[i];
    return NULL;
}

void art_tensor_copy(const art_tensor *t, void *dst) { memcpy(dst, t->data, t->nbytes); }

float *art_tensor_f32(const art_tensor *t) {
    float *out = mallocCheck((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    const unsigned char *p = t->data;
    for (int64_t i = 0; i < t->numel; i++) {
        switch (t->dtype) {
        case ART_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case ART_F64: { double d; memcpy(&d, p + 8 * i, 8); out[i] = (float)d; break; }
        case ART_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); out[i] = (float)v; break; }
        case ART_I64: { int64_t v; memcpy(&v, p + 8 * i, 8); out[i] = (float)v; break; }
        case ART_U8: out[i] = p[i]; break;
        }
    }
    return out;
}
