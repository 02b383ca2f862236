/* hf.h - Hugging Face T5 checkpoints in and out: safetensors files, config.json,
 * name mapping, IA3 folding and PEFT IA3 adapters.
 *
 * safetensors, byte by byte (the format the `safetensors` library writes):
 *
 *   u64 LE  N          length of the header in bytes
 *   N bytes            a JSON object, UTF-8, possibly padded with trailing
 *                      spaces (writers pad N to a multiple of 8):
 *                        {"__metadata__": {"format": "pt"},          optional, str -> str
 *                         "NAME": {"dtype": "F32", "shape": [2, 3],
 *                                  "data_offsets": [BEGIN, END]}, ...}
 *   data               the tensors' bytes, little-endian, row-major; BEGIN and
 *                      END are offsets into this section (not the file), END -
 *                      BEGIN = prod(shape) * size(dtype), and the tensors tile
 *                      the section with no gap and no overlap.
 *
 * dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL (and U16 U32 U64 F8_E4M3
 * F8_E5M2, sizes known so a file holding them is still validated). Import
 * converts F32, F16 and BF16 to f32 exactly (every F16/BF16 value is an f32
 * value); any other dtype in a T5 parameter is an error.
 *
 * Writers here (export) emit a canonical form: tensors sorted by name
 * (bytewise), data in that order, header compact JSON with "__metadata__"
 * first, padded with spaces to a multiple of 8 - what the safetensors library
 * produces for a single-dtype state dict - so import -> export reproduces
 * such a file byte for byte.
 *
 * A checkpoint directory (what `save_pretrained` writes):
 *   config.json                         T5Config fields (HF defaults apply to
 *                                       absent fields: feed_forward_proj
 *                                       "relu", tie_word_embeddings true)
 *   model.safetensors                   or, sharded:
 *   model.safetensors.index.json        {"metadata": {...}, "weight_map": {NAME: FILE}}
 *   model-00001-of-00002.safetensors ...
 *   spiece.model                        SentencePiece model (optional)
 *   tokenizer_config.json               optional; "extra_ids" (default 100)
 *
 * Name mapping is the identity (t5.h uses HF's names) except:
 *   encoder.embed_tokens.weight, decoder.embed_tokens.weight: the same tensor
 *     as shared.weight in HF T5; dropped on import (after checking they equal
 *     shared.weight), written as copies of it on export;
 *   decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight:
 *     present in some old conversions, unused; HF ignores it, so does import.
 *
 * PEFT IA3 adapters (adapter_config.json + adapter_model.safetensors) use
 * "base_model.model.<module>.ia3_l": for k and v (output scaling) a
 * [out, 1] tensor, for wo (a "feedforward" module: input scaling) a [1, in]
 * tensor. Scaling wo's input elementwise is exactly MaTS's scaling of wi_1's
 * output (wo(gelu(wi_0 x) * (s * wi_1 x)) = wo(s * (gelu(wi_0 x) * wi_1 x))),
 * so our `...wi_1.ia3_vector` maps to PEFT's `...wo.ia3_l`.
 */
#ifndef MC_HF_H
#define MC_HF_H

#include <stddef.h>
#include <stdint.h>

#include "art.h"
#include "val.h"

/* ------------------------------------------------------------ conversions */

float hf_bf16_to_f32(uint16_t h);
float hf_f16_to_f32(uint16_t h);
/* Round to nearest, ties to even; NaN stays NaN (quiet), overflow -> inf. */
uint16_t hf_f32_to_bf16(float f);
uint16_t hf_f32_to_f16(float f);

/* ------------------------------------------------------------ safetensors */

typedef enum {
    ST_F32 = 0,
    ST_F16 = 1,
    ST_BF16 = 2,
    ST_OTHER = 3, /* a valid safetensors dtype this project does not convert */
} st_dtype;

typedef struct {
    char *name;
    char dtype_name[12];
    st_dtype dtype;
    size_t esize;
    int ndim;
    int64_t shape[ART_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;            /* into the data section */
    const unsigned char *data;      /* into the mapping; unaligned */
} st_tensor;

typedef struct {
    char *path;
    unsigned char *map;             /* the whole file, mmap'd read-only */
    size_t size;
    uint64_t header_len;
    mc_val *metadata;               /* "__metadata__" or NULL */
    size_t n;
    st_tensor *t;                   /* in header order */
} st_file;

/* Map and validate a safetensors file. NULL with mc_error() "PATH: why". */
st_file *st_open(const char *path);
void st_close(st_file *f);
const st_tensor *st_find(const st_file *f, const char *name);
/* Convert elements [start, start+n) of an F32/F16/BF16 tensor to f32. */
void st_read_f32(const st_tensor *t, int64_t start, int64_t n, float *dst);

const char *st_dtype_name(st_dtype d);
/* "f32"/"F32"/"float32" ... -> dtype; -1 if not F32, F16 or BF16. */
int st_dtype_parse(const char *s);

/* ------------------------------------------------------------ T5 config */

typedef struct {
    int64_t vocab_size, d_model, d_kv, d_ff, num_heads, num_layers, num_decoder_layers;
    int64_t num_buckets, max_distance;  /* relative_attention_num_buckets / _max_distance */
    double eps;                         /* layer_norm_epsilon */
    char model_type[16];                /* "t5" or "mt5" */
} hf_config;

/* From a parsed config.json (HF T5Config semantics and defaults); rejects
 * what the C model does not implement (relu FFN, tied lm_head, other special
 * token ids) with a line naming `path` and the field. */
int hf_config_from_json(hf_config *c, const mc_val *json, const char *path);
/* From a model artifact's meta.config. */
int hf_config_from_meta(hf_config *c, const mc_val *config, const char *path);
/* meta.config of a model artifact (t5_config_to_val's fields + model_type). */
mc_val *hf_config_to_meta(const hf_config *c);
/* 1 if the two configs describe the same parameter shapes and eps. */
int hf_config_same(const hf_config *a, const hf_config *b);
/* A config.json for T5ForConditionalGeneration. */
mc_val *hf_config_to_json(const hf_config *c, const char *torch_dtype);

/* The parameters of a T5 v1.1 model with this config, in the canonical order
 * (lib/t5.c's table order). Caller frees *out. Returns the count. */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
} hf_param;
int hf_t5_params(const hf_config *c, hf_param **out);

/* ------------------------------------------------------------ import / export */

typedef struct {
    const char *key;        /* artifact key; NULL: XXH3-128 of the input files (see hf.c) */
    const char *vocab_out;  /* write spiece.model as a `vocab` artifact here; NULL: none */
    int verbose;            /* one line per file on stderr */
    const char *like;       /* a model artifact whose meta.config this checkpoint must match
                               (task models of one experiment share the base's shapes); NULL: any */
} hf_import_opts;

/* DIR (checkpoint directory) -> `model` artifact at out. -1 with mc_error(). */
int hf_import(const char *dir, const char *out, const hf_import_opts *o);

/* A PEFT IA3 adapter directory -> `ia3` artifact (meta.base = the base model
 * artifact's key; vectors of modules the adapter does not target are 1.0). */
int hf_import_ia3(const char *dir, const char *base_model, const char *out, const char *key);

/* spiece.model -> `vocab` artifact (tensor "spiece.model", u8). extra_ids:
 * sentinel tokens a T5 tokenizer appends after the model's pieces (-1: 100
 * unless the model already has <extra_id_0>). */
int hf_write_vocab(const char *spm_path, const char *out, int extra_ids, int64_t model_vocab);

enum { HF_IA3_NONE = 0, HF_IA3_FOLD = 1, HF_IA3_ADAPTER = 2 };

typedef struct {
    const char *ia3;        /* ia3 artifact or NULL */
    int ia3_mode;           /* HF_IA3_FOLD or HF_IA3_ADAPTER when ia3 is set */
    st_dtype dtype;         /* of the written tensors */
    const char *vocab;      /* vocab artifact: write spiece.model + tokenizer_config.json */
    int no_tied;            /* omit encoder/decoder.embed_tokens.weight */
} hf_export_opts;

/* model artifact -> DIR/config.json, DIR/model.safetensors (and with an
 * adapter DIR/ia3-adapter/{adapter_config.json,adapter_model.safetensors}). */
int hf_export(const char *model, const char *dir, const hf_export_opts *o);

#endif
