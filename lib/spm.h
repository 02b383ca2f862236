/* spm.h - SentencePiece models in C: a minimal protobuf reader for `.model`
 * files, the model's normaliser (precompiled charsmap) and the unigram
 * Viterbi encoder. The ids equal `spm_encode --output_format=id` (tested on
 * every task input and a corpus sample in tests/test_tokenize.sh).
 *
 * The `.model` file is a serialized sentencepiece.ModelProto (proto2):
 *
 *   ModelProto      1 pieces (repeated SentencePiece)  2 trainer_spec
 *                   3 normalizer_spec                  4 self_test_data
 *   SentencePiece   1 piece (string)  2 score (float, wire type 5)
 *                   3 type (varint: 1 NORMAL 2 UNKNOWN 3 CONTROL
 *                     4 USER_DEFINED 5 UNUSED 6 BYTE; default NORMAL)
 *   TrainerSpec     3 model_type (1 UNIGRAM 2 BPE 3 WORD 4 CHAR)
 *                   4 vocab_size  24 treat_whitespace_as_suffix
 *                   35 byte_fallback  40 unk_id 41 bos_id 42 eos_id 43 pad_id
 *   NormalizerSpec  1 name  2 precompiled_charsmap (bytes)
 *                   3 add_dummy_prefix (default true)
 *                   4 remove_extra_whitespaces (default true)
 *                   5 escape_whitespaces (default true)
 *
 * Every other field is skipped by wire type. A precompiled charsmap is
 *   u32 LE trie_size | darts-clone double array (trie_size bytes, u32 units)
 *   | NUL-separated replacement strings, indexed by the trie's values.
 *
 * Only unigram models are encoded (spm_load rejects the others with a
 * message); T5's spiece.model is a unigram model.
 */
#ifndef MC_SPM_H
#define MC_SPM_H

#include <stddef.h>
#include <stdint.h>

enum {
    SPM_NORMAL = 1,
    SPM_UNKNOWN = 2,
    SPM_CONTROL = 3,
    SPM_USER_DEFINED = 4,
    SPM_UNUSED = 5,
    SPM_BYTE = 6,
};

typedef struct spm_model spm_model;

/* Load a `.model` file / buffer. Returns NULL with mc_error() set to a line
 * naming the file. spm_free releases everything. The buffer is copied. */
spm_model *spm_load(const char *path);
spm_model *spm_load_buffer(const void *buf, size_t len, const char *name);
void spm_free(spm_model *m);

int spm_size(const spm_model *m);                 /* number of pieces */
const char *spm_piece(const spm_model *m, int id); /* NUL-terminated, owned by m */
float spm_score(const spm_model *m, int id);
int spm_type(const spm_model *m, int id);
int spm_unk_id(const spm_model *m);
/* Ids from trainer_spec (-1 when disabled). */
int spm_eos_id(const spm_model *m);
int spm_pad_id(const spm_model *m);
int spm_bos_id(const spm_model *m);
int spm_byte_fallback(const spm_model *m);
/* T5's special ids: pad 0, eos 1, unk 2. The model code (lib/t5.c) treats
 * id 0 as padding and 1 as EOS, so a model laid out otherwise (spm_train's
 * default is unk 0, bos 1, eos 2) would have its unknown pieces masked as
 * padding: -1 (mc_fail naming `name`) unless the ids are T5's. */
int spm_check_t5_ids(const spm_model *m, const char *name);
/* Id of a piece, or -1 when absent. */
int spm_piece_id(const spm_model *m, const char *piece);

/* Scratch space for encoding; one per thread. */
typedef struct {
    char *norm;          /* normalised text */
    size_t norm_cap;
    float *score;        /* best path score ending at byte i */
    int32_t *from;       /* start byte of that best piece, -1 unset */
    int32_t *id;         /* its id */
    size_t path_cap;
    int32_t *ids;        /* result */
    size_t n_ids, ids_cap;
} spm_ws;

void spm_ws_free(spm_ws *w);

/* Normalise n bytes of text as the model's normaliser does; the result is
 * w->norm (NUL-terminated), its length is returned. */
size_t spm_normalize(const spm_model *m, const char *text, size_t n, spm_ws *w);

/* Encode n bytes of text: the ids land in w->ids[0..w->n_ids). Returns
 * w->n_ids. Never fails on any byte string (invalid UTF-8 becomes U+FFFD as
 * in SentencePiece). */
size_t spm_encode(const spm_model *m, const char *text, size_t n, spm_ws *w);

#endif
