/* t5.h - T5 encoder-decoder in C: parameters, IA3 vectors, forward and
 * backward. Two layouts, chosen by the config (t5_config.ffn, .tied):
 *   - T5 v1.1 / LM-adapt / flan-t5 / mT5: gated-GELU feed-forward (wi_0,
 *     wi_1, wo), untied lm_head;
 *   - the original T5 (t5-small/base/large): ReLU feed-forward (wi, wo),
 *     the head tied to shared.weight, the decoder output multiplied by
 *     d_model^-0.5 before it (transformers' T5ForConditionalGeneration with
 *     tie_word_embeddings true; scale_decoder_outputs true in 5.x).
 * The two choices are independent of each other.
 *
 * Memory layout (llm.c style)
 *   - All parameters live in one float block `params`, described by a table
 *     of named tensors (Hugging Face's T5 names) in a fixed order and
 *     reachable through the pointer table `p` (t5_params, shapes in
 *     comments). `grads` (when allocated) has the same layout, so optimizers
 *     and statistics are flat loops over `n_params` floats.
 *   - IA3 vectors live in a second block `ia3` with its own table `ia`
 *     (and `ia3_grads` / `iag`), names `X.ia3_vector` for X.weight of every
 *     k and v projection (self and cross), scaling their outputs, and one
 *     feed-forward vector per block: wi_1's output (gated-GELU; named
 *     `...wi_1.ia3_vector`) or wo's input, the ReLU output (ReLU; named
 *     `...wo.ia3_vector`), which is where PEFT's IA3 puts its feedforward
 *     vector.
 *   - Activations of the last forward and the gradients of the last backward
 *     live in two blocks sized once by t5_alloc_acts for the largest batch;
 *     every intermediate of every layer is kept, addressable by layer.
 *
 * Batches. Encoder rows b in [0,B) of length Te, decoder rows in [0,Bd) of
 * length Td, ids row-major. Token n of the encoder stream is b*Te + t, of the
 * decoder stream b*Td + t. Pad id 0: an encoder token is real iff
 * enc_ids[n] != 0, a decoder token iff targets[n] != 0. In training Bd == B
 * and decoder row b belongs to example b; eval scores several choices of one
 * input by pointing decoder rows at encoder rows (dec_enc).
 *
 * Masks: encoder self-attention and cross-attention ignore padded keys; the
 * decoder self-attention is causal only (padded target positions come after
 * EOS, so they never influence real ones), exactly as HF with
 * attention_mask given and decoder_attention_mask absent.
 *
 * Loss: per-token cross-entropy over non-pad targets. t5_backward seeds
 * dlogits with one weight per decoder token: T5_LOSS_MEAN (the mean over all
 * real target tokens of the batch, HF's loss) or T5_LOSS_EXAMPLE_MEAN (the
 * sum over decoder rows of that row's mean token loss: the gradient of row b
 * alone is the per-example gradient of MaTS's Fisher), each times `scale`.
 *
 * Linear layers for statistics (Fisher / Gram). After t5_forward
 * and t5_backward on a batch, t5_linears() lists every linear layer with:
 *   name   "encoder.block.0.layer.0.SelfAttention.q.weight", ..., "lm_head.weight"
 *          (a tied head is not listed: its weight is shared.weight, whose
 *          gradient also collects the embedding's; the statistics treat it
 *          as the embedding, stats.h)
 *   w, dw  weight (out,in) and its gradient (dw NULL without grads)
 *   in, out
 *   stream T5_ENC or T5_DEC: the token set of the rows of x and g (cross-
 *          attention k and v read encoder outputs, so they are T5_ENC)
 *   x      (ntok, in): the input of the linear in the last forward
 *   g      (ntok, out): dLoss/d(output of the linear) in the last backward,
 *          with the loss weights given to t5_backward; the raw output, i.e.
 *          before any IA3 scaling. For lm_head g = dlogits.
 * The per-example weight gradient of linear L for example b is
 * sum over the tokens t of b of g[t]^T x[t] (rows b*T .. b*T+T-1).
 * IA3 gradients per example come from the kept activations too: for the
 * vector s scaling the raw output y of a linear, ds = sum over the example's
 * tokens of dy_scaled[t] * y[t], with y = a.enc[l].k (raw) and dy_scaled =
 * da.enc[l].ks (gradient wrt the scaled output), likewise v, ck, cv, h1.
 */
#ifndef MC_T5_H
#define MC_T5_H

#include <stddef.h>
#include <stdint.h>

#include "art.h"
#include "config.h"
#include "rng.h"
#include "val.h"

#define T5_PAD 0
#define T5_EOS 1
#define T5_UNK 2
/* <extra_id_k> is top - k, where top is t5_extra_id_0(): vocab_size - 1 for
 * the built-in tokenizer; for a Hugging Face vocabulary the last of the
 * pieces + extra ids (32099 for 32000 pieces + 100 extra ids in a 32128-row
 * embedding), below the padding rows. */
#define T5_SENTINEL(top, k) ((top) - (k))

typedef struct {
    int vocab_size, d_model, d_kv, d_ff, num_heads;
    int num_layers, num_decoder_layers;
    int num_buckets, max_distance; /* relative_attention_num_buckets / _max_distance */
    float eps;                     /* layer_norm_epsilon */
    int extra_id_0;                /* id of <extra_id_0>; 0: vocab_size - 1 (meta.config.extra_id_0) */
    char model_type[8];            /* "t5" (default, also when empty) or "mt5" (meta.config.model_type) */
    int ffn;                       /* T5_FFN_*: feed_forward_proj (meta.config.feed_forward_proj) */
    int tied;                      /* tie_word_embeddings: no lm_head; logits = (d_model^-0.5 y) shared^T */
} t5_config;

/* model.feed_forward_proj: "gated-gelu" (T5 v1.1, the default) or "relu"
 * (the original T5). */
enum { T5_FFN_GATED_GELU = 0, T5_FFN_RELU = 1 };
/* The config name of a T5_FFN_* value; and back (-1 for another name). */
const char *t5_ffn_name(int ffn);
int t5_ffn_parse(const char *name);

/* The factor on the decoder output before a tied head: (float) d_model^-0.5. */
float t5_head_scale(const t5_config *c);

/* The id of <extra_id_0>, the first sentinel of span corruption. */
static inline int t5_extra_id_0(const t5_config *c) { return c->extra_id_0 > 0 ? c->extra_id_0 : c->vocab_size - 1; }

/* Read model.* keys (HF config.json names) from a config; dies on errors
 * through the config getters' messages. */
int t5_config_from_cfg(t5_config *c, mc_cfg *cfg);
/* From / to a model artifact's meta.config (HF names). This is the one
 * mapping of a T5 config to metadata: lib/hf.c reads config.json through
 * t5_config_ints and writes artifacts through t5_config_to_val. */
int t5_config_from_val(t5_config *c, const mc_val *config);
mc_val *t5_config_to_val(const t5_config *c);
/* The integer fields (vocab_size ... relative_attention_max_distance) from
 * a map with HF config.json names: required ones, HF's defaults for the
 * others (num_decoder_layers = num_layers, 32 buckets, max distance 128),
 * each checked against its bounds. Messages start with `where` and name the
 * field ("meta.config.d_model missing", "PATH: d_model missing"): `where`
 * ends with '.' or ": ". */
int t5_config_ints(t5_config *c, const mc_val *map, const char *where);
/* Check ranges; -1 with mc_error(). */
int t5_config_check(const t5_config *c);
int t5_config_equal(const t5_config *a, const t5_config *b);
/* 0 if a and b are the same T5; else 1 and buf says the first difference
 * ("d_model 32 vs 64"). */
int t5_config_diff(const t5_config *a, const t5_config *b, char *buf, size_t cap);

/* Parameters of one block. Encoder blocks leave the ca_* fields NULL. */
typedef struct {
    float *sa_ln;               /* (D)      layer.0.layer_norm */
    float *sa_q, *sa_k, *sa_v;  /* (HK,D)   layer.0.SelfAttention.{q,k,v} */
    float *sa_o;                /* (D,HK)   layer.0.SelfAttention.o */
    float *ca_ln;               /* (D)      layer.1.layer_norm (decoder) */
    float *ca_q, *ca_k, *ca_v;  /* (HK,D)   layer.1.EncDecAttention.{q,k,v} */
    float *ca_o;                /* (D,HK) */
    float *ff_ln;               /* (D)      layer.{1,2}.layer_norm */
    float *wi0, *wi1;           /* (F,D)    DenseReluDense.wi_0, wi_1; ReLU: wi0 is
                                   DenseReluDense.wi and wi1 NULL */
    float *wo;                  /* (D,F)    DenseReluDense.wo */
} t5_block_params;

typedef struct {
    float *shared;              /* (V,D) */
    float *enc_relb;            /* (NB,H) encoder.block.0...relative_attention_bias */
    float *enc_ln;              /* (D)    encoder.final_layer_norm */
    float *dec_relb;            /* (NB,H) */
    float *dec_ln;              /* (D)    decoder.final_layer_norm */
    float *lm_head;             /* (V,D); NULL when tied (the head is shared) */
    t5_block_params *enc;       /* [num_layers] */
    t5_block_params *dec;       /* [num_decoder_layers] */
} t5_params;

/* IA3 vectors of one block (encoder blocks: ca_* NULL). */
typedef struct {
    float *sa_k, *sa_v;         /* (HK) */
    float *ca_k, *ca_v;         /* (HK) decoder only */
    float *ff;                  /* (F) wi_1's output (gated) or wo's input (ReLU) */
} t5_block_ia3;

typedef struct {
    t5_block_ia3 *enc, *dec;
} t5_ia3;

/* A named tensor of a block: offset into the block, shape. */
typedef struct {
    char name[96];
    int ndim;
    int64_t shape[2];
    size_t offset, numel;
} t5_tensor;

/* The parameter table of a model of this config (names, shapes, offsets
 * into one block, in the fixed order) without allocating the model; the
 * caller frees *out. Returns the count. */
int t5_param_table(const t5_config *c, t5_tensor **out);
/* The same for the IA3 vectors of a model of this config. */
int t5_ia3_table(const t5_config *c, t5_tensor **out);

/* Activations of one block (and, in the gradient block, their gradients:
 * the same field holds dLoss/d(that activation)). ks/vs alias k/v when the
 * model has no IA3 vectors, and h1s aliases h1. Sizes: N = B*T of the block's
 * stream, Ne = encoder tokens, Nd = decoder tokens. */
typedef struct {
    float *sa_lnx, *sa_rstd;    /* (N,D), (N)  rmsnorm out / 1/rms */
    float *q, *k, *v;           /* (N,HK)  raw projections */
    float *ks, *vs;             /* (N,HK)  after IA3 */
    float *probs;               /* (B,H,T,T) softmax; in grads: dScores */
    float *att;                 /* (N,HK)  attention output = input of o */
    float *x1;                  /* (N,D)   residual after self-attention */
    float *ca_lnx, *ca_rstd;    /* (Nd,D), (Nd) decoder */
    float *cq;                  /* (Nd,HK) */
    float *ck, *cv;             /* (Ne_enc,HK) from the encoder output */
    float *cks, *cvs;           /* (Ne_enc,HK) after IA3 */
    float *cprobs;              /* (Bd,H,Td,Te) */
    float *catt;                /* (Nd,HK) */
    float *x2;                  /* (Nd,D)  residual after cross-attention */
    float *ff_lnx, *ff_rstd;    /* (N,D), (N) */
    float *h0, *h1, *h1s;       /* (N,F)   wi_0 out, wi_1 out, after IA3; ReLU: wi out,
                                   relu(h0), after IA3 */
    float *hg;                  /* (N,F)   gelu(h0)*h1s = input of wo; ReLU: aliases h1s */
    float *out;                 /* (N,D)   block output */
} t5_block_acts;

typedef struct {
    float *enc_emb;             /* (Ne,D) */
    float *enc_out, *enc_rstd;  /* (Ne,D) final-normed encoder output, (Ne) */
    float *dec_emb;             /* (Nd,D) */
    float *dec_out, *dec_rstd;  /* (Nd,D), (Nd); tied: times d_model^-0.5, the head's
                                   input (in grads: dLoss/d(the norm's output)) */
    float *logits;              /* (Nd,V); in grads: dlogits */
    float *enc_bias, *dec_bias; /* (H,Te,Te), (H,Td,Td) position bias; grads: dbias */
    t5_block_acts *enc, *dec;
} t5_acts;

typedef struct {
    int B, Te;                  /* encoder rows, length */
    int Bd, Td;                 /* decoder rows, length */
    const int *enc_ids;         /* (B,Te) */
    const int *dec_ids;         /* (Bd,Td) decoder input: target shifted right */
    const int *targets;         /* (Bd,Td) 0 = pad; NULL for no loss */
    const int *dec_enc;         /* (Bd) encoder row of each decoder row; NULL = identity */
    int pad_invariant;          /* 1: each row's results as in a batch without padding, to
                                   the bit on the CPU (ops.h ATT_PAD_INVARIANT; rank
                                   classification sets it; training does not, its bytes
                                   being those the released report was made with) */
} t5_batch;

enum { T5_LOSS_MEAN = 0, T5_LOSS_EXAMPLE_MEAN = 1 };
enum { T5_ENC = 0, T5_DEC = 1 };

struct mc_ops;

typedef struct {
    t5_config c;
    /* Where the model lives (device.h): every parameter, gradient and
     * activation block below is memory of this device and every op runs
     * through its table. t5_new / t5_load_model give the CPU table;
     * t5_to_device moves a model. The host-side arrays enc_buckets,
     * enc_mask, tok_loss and tok_w (masks, buckets and loss weights are made
     * on the host) are host memory on every device; d_* are their device
     * copies (the same pointers on the CPU). */
    const struct mc_ops *ops;

    size_t n_params;
    float *params;              /* owned */
    int frozen;                 /* t5_freeze_params: the products keep the packed weights */
    float *grads;               /* owned; NULL when the base is frozen */
    t5_params p, g;
    int n_tensors;
    t5_tensor *tensors;

    size_t n_ia3;               /* 0 when the model has no IA3 vectors */
    float *ia3, *ia3_grads;
    t5_ia3 ia, iag;
    int n_ia3_tensors;
    t5_tensor *ia3_tensors;

    /* activations (t5_alloc_acts) */
    int maxB, maxTe, maxBd, maxTd;
    int lean;                   /* T5_ACTS_SCORE: the layers share their activations */
    float *act_mem, *grad_mem;
    size_t act_floats, grad_floats;
    t5_acts a, da;
    int *enc_buckets, *dec_buckets; /* (Te,Te), (Td,Td) for the current lengths; host */
    uint8_t *enc_mask;          /* (B,Te) host */
    float *tok_loss, *tok_w;    /* (Nd) host */
    float *lse;                 /* (Nd) model memory */
    int *d_enc_buckets, *d_dec_buckets;
    uint8_t *d_enc_mask;
    float *d_tok_loss, *d_tok_w;
    int *d_ids;                 /* device: the batch's enc ids, dec ids, targets (NULL on CPU) */
    int all_act_grads;          /* backward fills every activation gradient (down to the
                                   embeddings) even without parameter gradients */
    t5_batch last;              /* dims of the last forward */
    float last_loss;
    int n_real_targets;
} t5_model;

/* New model with zeroed parameters. with_grads: allocate parameter
 * gradients (full fine-tuning); with_ia3: add IA3 vectors set to 1.0 and
 * their gradients. Caller frees with t5_free. */
t5_model *t5_new(const t5_config *c, int with_grads, int with_ia3);
void t5_free(t5_model *m);
/* Promise that the model's parameters will not change until t5_free (IA3
 * training, eval, Fisher, Gram): on the CPU their products keep the packed
 * weights across calls (f32gemm_freeze: the same bytes, without packing
 * them again); on a device nothing. Writing the parameters after it is an
 * error that MATS_CHECK_FROZEN=1 catches. */
void t5_freeze_params(t5_model *m);

/* Move a model (made by t5_new or t5_load_model, before t5_alloc_acts) to
 * the device of `ops` (device.h's dev_ops). Afterwards m->params, grads,
 * ia3, ia3_grads, the activation blocks and every pointer of the tables p,
 * g, ia, iag and of t5_linears / t5_param are device memory: read them with
 * t5_download. t5_forward / t5_backward / t5_row_logprob keep taking and
 * giving host data (batch ids, losses). A no-op for the model's own ops. */
void t5_to_device(t5_model *m, const struct mc_ops *ops);
/* 1 if the model's memory is host memory (the CPU table). */
int t5_on_host(const t5_model *m);
/* n floats between model memory and the host (memcpy on the CPU). */
void t5_download(const t5_model *m, float *host, const float *src, size_t n);
void t5_upload(const t5_model *m, float *dst, const float *host, size_t n);
/* Host copy of the activations and activation gradients of the last
 * forward / backward, for the host-side statistics of stats.h: *view is a
 * shallow copy of m (allocated on the first call, refreshed on later ones)
 * whose a / da point into host blocks; its parameter pointers stay m's
 * (stats use them only as offsets). On a host model *view is m itself.
 * Free with t5_host_view_free. */
void t5_host_view(const t5_model *m, t5_model **view);
void t5_host_view_free(const t5_model *m, t5_model *view);

/* Random init (documented in t5.c): HF's T5 scheme except lm_head, which is
 * drawn with std d_model^-0.5 instead of 1.0. Deterministic in seed. */
void t5_init_random(t5_model *m, uint64_t seed);

/* Size activation blocks for batches up to these dims (grads only if the
 * model will run backward). Called again with larger dims it reallocates.
 * with_grads = T5_ACTS_SCORE: forward passes only, whose activations nobody
 * reads but the next layer (eval's t5_score): every block of the encoder
 * shares one set of buffers, and every block of the decoder another (the
 * block outputs alternate between two), a layer's memory instead of all of
 * them; t5_backward, t5_linears and t5_forward_layer refuse such a model.
 * The same bytes: only where the activations live changes. */
#define T5_ACTS_SCORE (-1)
void t5_alloc_acts(t5_model *m, int maxB, int maxTe, int maxBd, int maxTd, int with_grads);

/* Forward pass. Returns the mean loss over non-pad targets (0 if targets is
 * NULL or there are none); per-token losses in m->tok_loss. */
float t5_forward(t5_model *m, const t5_batch *b);
/* One layer of the forward, for passes that go layer by layer and keep the
 * hidden states themselves (RegMean++, lib/merge_pp.c). Layers in forward
 * order: encoder block l is layer l, decoder block j layer L + j, the head
 * (decoder final norm, lm_head, loss) layer L + Ld. It leaves the layer's
 * activations where t5_forward does (t5_linears reads them; no backward).
 *   encoder block l: in = its input (B*Te x D; NULL at l = 0: the
 *     embedding of b's ids); out = its output, after the encoder's final
 *     norm for the last block (the encoder output);
 *   decoder block j: in = its input (Bd*Td x D; NULL at j = 0: the
 *     embedding), enc = the encoder output, out = its output;
 *   the head: in = the last decoder block's output; out unused.
 * out may be NULL. The result of running every layer in turn is
 * t5_forward's, to the bit. */
void t5_forward_layer(t5_model *m, const t5_batch *b, int layer, const float *in, const float *enc, float *out);
/* Backward of the last forward (same batch). Accumulates into m->grads and
 * m->ia3_grads (whichever exist). loss_mode: T5_LOSS_MEAN or
 * T5_LOSS_EXAMPLE_MEAN; scale multiplies the loss (e.g. 1/accumulation
 * steps). dec_enc must be NULL. */
void t5_backward(t5_model *m, const t5_batch *b, int loss_mode, float scale);
void t5_zero_grad(t5_model *m);

/* Sum of log-probabilities of the targets of each decoder row of the last
 * forward: scores (Bd). */
void t5_row_logprob(const t5_model *m, float *scores);
/* t5_forward then t5_row_logprob, for rank classification: no backward may
 * follow (on the host the head skips the rows without a target, whose
 * logits it leaves unset; m->tok_loss and the scores are t5_forward's to
 * the bit). */
void t5_score(t5_model *m, const t5_batch *b, float *scores);

/* Linear layers (see the top of this file). Returns the count; fills `out`
 * when non-NULL (capacity t5_n_linears(m)). */
typedef struct {
    char name[96];
    float *w, *dw;
    int in, out;
    int stream;
    const float *x;
    const float *g;
} t5_linear;
int t5_n_linears(const t5_model *m);
int t5_linears(const t5_model *m, t5_linear *out);

/* Tensor lookup by name in the parameter / IA3 tables: pointer into the
 * block or NULL. */
float *t5_param(const t5_model *m, const char *name, const t5_tensor **info);
float *t5_ia3_param(const t5_model *m, const char *name, const t5_tensor **info);

/* Artifacts. t5_load_model reads a `model` artifact (every tensor of the
 * table must be present with the right shape). t5_load_ia3 copies an `ia3`
 * artifact's vectors into m (which must have IA3). */
t5_model *t5_load_model(const char *path, int with_grads, int with_ia3, char key_out[33]);
int t5_load_ia3(t5_model *m, const char *path, const char *want_base_key);
/* The same, also giving the ia3 artifact's key in key_out (an unkeyed
 * artifact is identified by the XXH3-128 of its bytes). */
int t5_load_ia3_key(t5_model *m, const char *path, const char *want_base_key, char key_out[33]);
/* Write the model (kind "model", meta.config + extra meta entries copied
 * from `meta` if non-NULL). */
int t5_save_model(const t5_model *m, const char *path, const char *key, const mc_val *meta);
/* Write only the IA3 vectors (kind "ia3", meta.base = base_key). */
int t5_save_ia3(const t5_model *m, const char *path, const char *key, const char *base_key,
                const mc_val *meta);


#endif
