/* tokens.c - tokens artifacts, batches, span corruption, rank classification. */
#include "tokens.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "common.h"
#include "key.h"

/* A copy of an i64 or i32 tensor (art_open allows no other dtype for the
 * tensors of a tokens artifact) as int64; NULL when absent. */
static int64_t *load_i64(const art_file *f, const char *name, int64_t *n) {
    const art_tensor *t = art_find(f, name);
    if (!t) return NULL;
    int64_t *out = mallocCheck(sizeof(int64_t) * (t->numel ? t->numel : 1));
    if (t->dtype == ART_I64) {
        art_tensor_copy(t, out);
    } else {
        int32_t *tmp = mallocCheck(sizeof(int32_t) * (t->numel ? t->numel : 1));
        art_tensor_copy(t, tmp);
        for (int64_t i = 0; i < t->numel; i++) out[i] = tmp[i];
        free(tmp);
    }
    *n = t->numel;
    return out;
}

/* The same as int: ids and labels, which art_open bounded to 0..INT32_MAX. */
static int *load_int(const art_file *f, const char *name, int64_t *n) {
    int64_t *v = load_i64(f, name, n);
    if (!v) return NULL;
    int *out = mallocCheck(sizeof(int) * (*n ? *n : 1));
    for (int64_t i = 0; i < *n; i++) out[i] = (int)v[i];
    free(v);
    return out;
}

tok_set *tok_load(const char *path, int need_choices) {
    /* art_open checks every id, offset and label of a tokens artifact
     * against its bound (art.c, CONTENTS); what is left here is which
     * tensors a task needs and that every choice holds a token */
    art_file *f = art_open(path, "tokens");
    if (!f) return NULL;
    tok_set *s = callocCheck(1, sizeof *s);
    s->path = strdupCheck(path);
    snprintf(s->key, sizeof s->key, "%s", f->key);
    snprintf(s->task, sizeof s->task, "%s", val_get_str(f->meta, "task", ""));
    snprintf(s->split, sizeof s->split, "%s", val_get_str(f->meta, "split", ""));
    int64_t n_ids = 0, n_off = 0, n_cids = 0, n_coff = 0, n_ex = 0, n_lab = 0;
    s->input_ids = load_int(f, "input_ids", &n_ids);
    s->input_off = load_i64(f, "input_offsets", &n_off);
    if (!s->input_ids || !s->input_off) {
        mc_fail("%s: input_ids / input_offsets missing (not a tokens artifact?)", path);
        goto fail;
    }
    s->n = n_off - 1;
    for (int64_t i = 0; i < n_ids; i++)
        if (s->input_ids[i] > s->max_id) s->max_id = s->input_ids[i];
    if (art_find(f, "choice_ids") || need_choices) {
        s->choice_ids = load_int(f, "choice_ids", &n_cids);
        s->choice_off = load_i64(f, "choice_offsets", &n_coff);
        s->ex_choices = load_i64(f, "example_choices", &n_ex);
        s->label = load_int(f, "label", &n_lab);
        if (!s->choice_ids || !s->choice_off || !s->ex_choices || !s->label) {
            mc_fail("%s: choice_ids, choice_offsets, example_choices and label are needed "
                    "(this looks like a corpus, not a task)", path);
            goto fail;
        }
        s->n_choices = n_coff - 1;
        for (int64_t c = 0; c < s->n_choices; c++)
            if (tok_choice_len(s, c) < 1) {
                mc_fail("%s: choice %lld is empty (every sequence ends with EOS)", path, (long long)c);
                goto fail;
            }
        for (int64_t i = 0; i < n_cids; i++)
            if (s->choice_ids[i] > s->max_id) s->max_id = s->choice_ids[i];
    }
    art_close(f);
    return s;
fail:
    art_close(f);
    tok_free(s);
    return NULL;
}

void tok_free(tok_set *s) {
    if (!s) return;
    free(s->path);
    free(s->input_ids);
    free(s->input_off);
    free(s->choice_ids);
    free(s->choice_off);
    free(s->ex_choices);
    free(s->label);
    free(s);
}

void tok_key_inputs(struct mc_key *k, const char *prefix, tok_set *const *sets, int n, int bare_one) {
    const char **names = mallocCheck(sizeof(char *) * (size_t)(n ? n : 1));
    char(*role)[48] = mallocCheck(sizeof *role * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) names[i] = sets[i]->task;
    key_role_names(names, n, role);
    for (int i = 0; i < n; i++) {
        char name[128];
        if (bare_one && n == 1) snprintf(name, sizeof name, "%s", prefix);
        else snprintf(name, sizeof name, "%s.%s", prefix, role[i]);
        if (*sets[i]->key && key_input(k, name, sets[i]->key) < 0) die("%s", mc_error());
    }
    free(role);
    free(names);
}

void tok_batch_init(tok_batch *tb, int maxB, int maxTe, int maxBd, int maxTd) {
    memset(tb, 0, sizeof *tb);
    tb->maxB = maxB, tb->maxTe = maxTe, tb->maxBd = maxBd, tb->maxTd = maxTd;
    tb->enc = mallocCheck(sizeof(int) * maxB * maxTe);
    tb->dec = mallocCheck(sizeof(int) * maxBd * maxTd);
    tb->tgt = mallocCheck(sizeof(int) * maxBd * maxTd);
    tb->dec_enc = mallocCheck(sizeof(int) * maxBd);
}

void tok_batch_free(tok_batch *tb) {
    free(tb->enc), free(tb->dec), free(tb->tgt), free(tb->dec_enc);
    memset(tb, 0, sizeof *tb);
}

void tok_batch_examples(tok_batch *tb, const tok_set *s, const int64_t *order, int64_t e0, int B, const int *pick) {
    const int **ins = mallocCheck(sizeof(int *) * B), **outs = mallocCheck(sizeof(int *) * B);
    int *nins = mallocCheck(sizeof(int) * B), *nouts = mallocCheck(sizeof(int) * B);
    for (int i = 0; i < B; i++) {
        int64_t e = order ? order[e0 + i] : e0 + i, c = s->ex_choices[e] + (pick ? pick[i] : s->label[e]);
        ins[i] = tok_input(s, e);
        nins[i] = tok_input_len(s, e);
        outs[i] = tok_choice(s, c);
        nouts[i] = tok_choice_len(s, c);
    }
    tok_batch_fill(tb, B, ins, nins, B, outs, nouts, NULL, 0, 0);
    free(ins), free(outs), free(nins), free(nouts);
}

/* Copy seq (length n) into row (length T), cut to T keeping the final EOS,
 * pad with 0. */
static void put_row(int *row, int T, const int *seq, int n) {
    if (n > T) {
        memcpy(row, seq, sizeof(int) * (T - 1));
        row[T - 1] = T5_EOS;
    } else {
        memcpy(row, seq, sizeof(int) * n);
        for (int t = n; t < T; t++) row[t] = T5_PAD;
    }
}

void tok_batch_fill(tok_batch *tb, int nenc, const int *const *ins, const int *nins, int ndec,
                    const int *const *outs, const int *nouts, const int *dec_enc, int fixed_Te,
                    int fixed_Td) {
    if (nenc > tb->maxB || ndec > tb->maxBd) die("tok_batch_fill: %d/%d rows exceed the batch buffers", nenc, ndec);
    int Te = 1, Td = 1;
    for (int i = 0; i < nenc; i++)
        if (nins[i] > Te) Te = nins[i];
    for (int j = 0; j < ndec; j++)
        if (nouts[j] > Td) Td = nouts[j];
    if (Te > tb->maxTe) Te = tb->maxTe;
    if (Td > tb->maxTd) Td = tb->maxTd;
    if (fixed_Te > 0) Te = fixed_Te < tb->maxTe ? fixed_Te : tb->maxTe;
    if (fixed_Td > 0) Td = fixed_Td < tb->maxTd ? fixed_Td : tb->maxTd;
    tb->real_in = 0;
    for (int i = 0; i < nenc; i++) {
        put_row(tb->enc + i * Te, Te, ins[i], nins[i]);
        tb->real_in += nins[i] < Te ? nins[i] : Te;
    }
    for (int j = 0; j < ndec; j++) {
        int *tg = tb->tgt + j * Td, *dc = tb->dec + j * Td;
        put_row(tg, Td, outs[j], nouts[j]);
        dc[0] = T5_PAD;
        for (int t = 1; t < Td; t++) dc[t] = tg[t - 1];
        tb->dec_enc[j] = dec_enc ? dec_enc[j] : j;
    }
    tb->b.B = nenc, tb->b.Te = Te, tb->b.Bd = ndec, tb->b.Td = Td;
    tb->b.enc_ids = tb->enc, tb->b.dec_ids = tb->dec, tb->b.targets = tb->tgt;
    tb->b.dec_enc = dec_enc ? tb->dec_enc : NULL;
}

/* ---------------------------------------------------------- span corruption */

/* Split n items into k non-empty segments at random (k-1 distinct cuts
 * among the n-1 gaps, drawn in order by selection sampling); lens[k]. */
static void random_segmentation(mc_rng *r, int n, int k, int *lens) {
    int need = k - 1, last = 0, s = 0;
    for (int gap = 1; gap < n && need > 0; gap++) {
        int remaining = n - gap; /* gaps gap..n-1 */
        if (mc_rng_below(r, remaining) < (uint64_t)need) {
            lens[s++] = gap - last;
            last = gap;
            need--;
        }
    }
    lens[s++] = n - last;
}

#define MAX_SPANS 4096

void tok_span_corrupt(const int *tokens, int L, uint64_t seed, double density, double mean_len,
                      int extra_id_0, int *in, int *nin, int *tgt, int *ntgt) {
    int n_noise = (int)lround(L * density);
    if (n_noise < 1) n_noise = 1;
    if (n_noise > L - 1) n_noise = L - 1;
    int n_spans = (int)lround(n_noise / mean_len);
    if (n_spans < 1) n_spans = 1;
    int n_keep = L - n_noise;
    if (n_spans > n_keep) n_spans = n_keep;
    if (n_spans > MAX_SPANS) n_spans = MAX_SPANS;
    if (n_spans > n_noise) n_spans = n_noise;
    int noise_len[MAX_SPANS], keep_len[MAX_SPANS];
    mc_rng r;
    mc_rng_seed(&r, seed);
    random_segmentation(&r, n_noise, n_spans, noise_len);
    random_segmentation(&r, n_keep, n_spans, keep_len);
    int pos = 0, a = 0, b = 0;
    for (int s = 0; s < n_spans; s++) {
        for (int i = 0; i < keep_len[s]; i++) in[a++] = tokens[pos++];
        int sentinel = T5_SENTINEL(extra_id_0, s);
        in[a++] = sentinel;
        tgt[b++] = sentinel;
        for (int i = 0; i < noise_len[s]; i++) tgt[b++] = tokens[pos++];
    }
    in[a++] = T5_EOS;
    tgt[b++] = T5_EOS;
    *nin = a;
    *ntgt = b;
}

int tok_span_raw_length(int max_in, int max_tgt, double density, double mean_len) {
    int best = 2;
    for (int L = 2; L < 100000; L++) {
        int n_noise = (int)lround(L * density);
        if (n_noise < 1) n_noise = 1;
        if (n_noise > L - 1) n_noise = L - 1;
        int n_spans = (int)lround(n_noise / mean_len);
        if (n_spans < 1) n_spans = 1;
        int in = L - n_noise + n_spans + 1, tg = n_noise + n_spans + 1;
        if (in > max_in || tg > max_tgt) break;
        best = L;
    }
    return best;
}

