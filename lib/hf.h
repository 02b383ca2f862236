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
 *     shared.weight), written as copies of it on export only when asked
 *     (hf_export_opts.tied);
 *   decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight:
 *     present in some old conversions, unused; HF ignores it, so does import.
 *
 * PEFT IA3 adapters (adapter_config.json + adapter_model.safetensors) use
 * "base_model.model.<module>.ia3_l": for k and v (output scaling) a
 * [out, 1] tensor, for wo (a "feedforward" module: input scaling) a [1, in]
 * tensor. Scaling wo's input elementwise is exactly MaTS's scaling of wi_1's
 * output (wo(gelu(wi_0 x) * (s * wi_1 x)) = wo(s * (gelu(wi_0 x) * wi_1 x))),
 * so our `...wi_1.ia3_vector` maps to PEFT's `...wo.ia3_l`. PEFT may
 * also target wi_1 itself (not feedforward: an [d_ff, 1] output scale, its
 * default for mT5); an adapter with both multiplies them. On the original
 * layout (ReLU, t5.h) the feed-forward vector is wo's input itself, our
 * `...wo.ia3_vector` = PEFT's `...wo.ia3_l` (PEFT's default for t5: k, v,
 * wo with wo feedforward); wi's output is refused (relu(s z) = s relu(z)
 * only for s >= 0). Folding an IA3 artifact into the weights (--fold)
 * scales the rows of k, v and wi_1 and the columns of wo. target_modules
 * and feedforward_modules may be lists or regular expressions (hf.c).
 *
 * The original T5 layout (t5-small/base/large and their fine-tunes:
 * feed_forward_proj "relu", lm_head tied to shared.weight, the decoder
 * output scaled by d_model^-0.5) imports as a tied model (t5.h); a file's
 * lm_head.weight must then equal shared.weight (dropped like the
 * embed_tokens copies), and export writes none, with tie_word_embeddings
 * and scale_decoder_outputs both true.
 *
 * Sentinels. A T5 tokenizer appends extra_ids sentinels after its pieces
 * (tokenizer_config.json "extra_ids", default 100): <extra_id_0> is
 * pieces + extra_ids - 1 (32099 for t5's 32000 + 100), and the embedding
 * may have padding rows above (32128). Import records that id as
 * meta.config.extra_id_0 when spiece.model is in the directory and it is
 * not the last row (t5_extra_id_0, lib/t5.h); the import's key then covers
 * spiece.model and tokenizer_config.json too.
 */
#ifndef MC_HF_H
#define MC_HF_H

#include <stddef.h>
#include <stdint.h>

#include "art.h"
#include "t5.h"
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

/* What a config.json says about the output layer. transformers 4.x ties
 * lm_head to shared.weight and scales the decoder output by d_model^-0.5
 * before it when tie_word_embeddings is true (its default); T5 v1.1,
 * flan-t5 and mT5 say false and store lm_head.weight. transformers 5.x
 * forces tie_word_embeddings to true for t5 and mt5, loads a stored
 * lm_head.weight as it is, and scales by scale_decoder_outputs, which it
 * writes (false for v1.1 / flan-t5); its mT5 never scales. So: */
typedef struct {
    int tie;    /* tie_word_embeddings as written (absent: true) */
    int scale;  /* scale_decoder_outputs; absent: false for an mt5 config of
                   transformers >= 5 (transformers_version), else tie */
    int v5;     /* transformers_version >= 5 */
} hf_head;

/* From a parsed config.json (HF T5Config semantics and defaults: absent
 * feed_forward_proj is "relu"; dense_act_fn and is_gated_act, when present,
 * override what feed_forward_proj implies): the shapes and the feed-forward
 * into c (meta.config is then t5_config_to_val(c), lib/t5.h: the one
 * mapping), the output layer into h. Rejects what the C model does not
 * implement (a feed-forward other than gated gelu_new or plain relu, other
 * special token ids) with a line naming `path` and the field; hf_import
 * decides on h with the weights at hand: untied and unscaled (lm_head in
 * the file) or tied and scaled (c->tied); a head transformers 4 and 5
 * would read differently, or tied and unscaled, or untied and scaled, is
 * refused. */
int hf_config_from_json(t5_config *c, hf_head *h, const mc_val *json, const char *path);
/* A config.json for T5ForConditionalGeneration (MT5... for model_type mt5)
 * that transformers 4.x and 5.x both load as this model: untied, unscaled
 * (tie_word_embeddings false, scale_decoder_outputs false), or, for a tied
 * model (the original T5), both true; feed_forward_proj, dense_act_fn and
 * is_gated_act of its feed-forward. */
mc_val *hf_config_to_json(const t5_config *c, const char *torch_dtype);

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
    int tied;               /* also write encoder/decoder.embed_tokens.weight, copies of
                               shared.weight (save_pretrained writes only shared.weight, and
                               some transformers 5 builds refuse the copies) */
} hf_export_opts;

/* model artifact -> DIR/config.json, DIR/model.safetensors (and with an
 * adapter DIR/ia3-adapter/{adapter_config.json,adapter_model.safetensors}). */
int hf_export(const char *model, const char *dir, const hf_export_opts *o);

#endif
