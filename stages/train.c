/* train - pretrain or fine-tune the T5 (full or IA3), single task or a
 * multitask mixture, with validation, early stopping and resumable
 * checkpoints.
 *
 *   train --config EXP.conf [--set k=v]... [--objective span_corruption|seq2seq]
 *         [--mode full|ia3] --data A.msgpack[,B.msgpack...] [--valid V.msgpack[,...]]
 *         [--init MODEL.msgpack] [--seed N] [--device cpu|cuda] [--key HEX] -o OUT.msgpack
 *         [--optimizer-fisher F.msgpack]
 *   train --config EXP.conf [--set k=v]... [--device cpu|cuda] --bench STEPS
 *
 * --objective, --mode and --seed are shorthands for --set train.objective=,
 * train.mode=, train.seed= (so they enter the cache key like any config
 * value). Several --data files train on their examples-proportional mixture
 * (rate of task t = min(n_t, train.mixture_cap)). One --data file trains
 * in epochs; with train.length_window = W each epoch's shuffled order is cut
 * into windows of W batches, each window sorted by input length and its
 * batches shuffled, so a batch pads its inputs less (W = 0, the default:
 * no sorting); a mixture sorts each window of W batches of its draws the
 * same way. --init is required for
 * IA3 and optional for full training (random init otherwise, see
 * t5_init_random). Output: a `model` artifact (full) or an `ia3` artifact
 * whose meta.base is the --init model's key.
 *
 * --optimizer-fisher F: also write the optimizer's second-moment estimates
 * as a `fisher_diag` artifact of the output ("Fishers for free", arXiv
 * 2507.18807; lib/optim.h opt_fisher_tensor): one tensor per trained
 * parameter (IA3: per vector), named and shaped as `fisher` writes them,
 * times train.batch_size, with meta.fisher "optimizer:adamw" or
 * "optimizer:adafactor" and meta.inputs as `fisher` has them, so merge
 * takes it for that model's Fisher. With validation (best weights kept) it
 * is the state of the step whose weights are written (meta.weights "best",
 * meta.optimizer_step), else of the last step. It does not enter the key
 * and leaves the model's bytes alone. F is written before OUT, under the
 * key of stage "optfisher" with input "train" = this run's key.
 *
 * Resume: every train.ckpt_every steps the state (trainable weights,
 * optimizer state, best weights, counters) goes to OUT.ckpt through the
 * atomic artifact writer. Rerun with the same arguments, train continues from
 * it and writes the same bytes as an uninterrupted run. The checkpoint is
 * removed once OUT is written. SIGTERM, SIGINT or SIGUSR1 (a scheduler's
 * warning before it ends a job: Slurm's scancel, preemption, `--signal`)
 * stop the run at the end of the step in progress with a checkpoint of that
 * step, whatever train.ckpt_every says, then end it by that signal (status
 * 128 + the signal): rerun to resume. A second signal ends it at once. On N
 * ranks rank 0's signal decides, and every rank ends after its checkpoint.
 * For the tests, MATS_TEST_KILL_AFTER_CKPT=N makes train SIGKILL itself
 * right after writing the checkpoint of step N (a kill at a known moment).
 *
 * --bench STEPS: time STEPS training steps of the configured model on random
 * full-length batches (train.batch_size x train.max_input_len inputs,
 * train.max_target_len targets), full and IA3, after one warm-up step, and
 * the sgemm peak; each figure (the step, its forward, backward and
 * optimizer) is the median over the timed steps; and after each timed step
 * two 2048^3 products of the same kind (4096^3 on a GPU): the step's
 * fraction of the faster, the median of these pairs, is steady on a machine
 * whose speed drifts (and the median step against the best of them);
 * writes nothing.
 *
 * --device cpu|cuda (else DEVICE, else train.device, else cpu): where the
 * model runs. cuda needs a `make GPU=1` build and a GPU (one-line error
 * otherwise); it enters the run's key as train.device=cuda, so CPU keys are
 * unchanged. On cuda the weights, gradients, activations
 * and optimizer state live on the GPU (the optimizer step runs there);
 * checkpoints and the output are written from host copies.
 *
 * Ranks (lib/comm.h; docs/ranks.md): under `mpirun -n N` or `srun -n N`
 * the train.grad_accum = K micro-batches of a step are shared out, K / N
 * per rank (K must be a multiple of N), and their gradients are summed on
 * rank 0 in micro-batch order, as one rank accumulating K micro-batches
 * sums them; the sum is broadcast and every rank takes the same optimizer
 * step. So the output has the bytes (and the key) of the one-rank run: N
 * is no config value. Every rank starts from rank 0's weights (and its
 * checkpoint on a resume); rank 0 alone validates, checkpoints and writes.
 * MATS_CHECK_RANKS=1 compares the weights of every rank with rank 0's
 * after each step (a debug mode: one line naming the rank if they differ).
 * On cuda each rank takes one GPU (MATS_GPU: the rank on its node) and the
 * gradients move by NCCL. The --bench steps run the same way.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "art.h"
#include "backend.h"
#include "comm.h"
#include "common.h"
#include "config.h"
#include "device.h"
#include "key.h"
#include "optim.h"
#include "opts.h"
#include "progress.h"
#include "rank.h"
#include "t5.h"
#include "tokens.h"

typedef struct {
    int objective; /* 0 seq2seq, 1 span_corruption */
    int mode;      /* 0 full, 1 ia3 */
    long seed, steps, batch, accum, max_in, max_tgt, eval_every, patience, ckpt_every, valid_examples;
    long mixture_cap, length_window;
    int optimizer, schedule, scale_parameter;
    long warmup;
    double lr, clip, density, mean_span, weight_decay;
} train_opts;

/* ---------------------------------------------------------------- data streams */

typedef struct {
    /* seq2seq */
    int n_sets;
    tok_set **sets;
    double *cum_rate;   /* cumulative mixture rates, n_sets */
    int64_t *perm;      /* single task: the current epoch's order; a mixture with a length
                         * window: the current window's picks (idx * n_sets + task) */
    int64_t perm_epoch; /* the epoch (or mixture window) perm holds */
    int64_t window, batch; /* examples per length window (0: none), per batch */
    /* span corruption */
    int *stream;        /* concatenated corpus tokens (EOS dropped) */
    int64_t stream_len, n_chunks;
    int raw_len;
    uint64_t seed;
} data_stream;

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static void shuffle(int64_t *perm, int64_t n, uint64_t seed) {
    mc_rng r;
    mc_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++) perm[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)mc_rng_below(&r, (uint64_t)i + 1);
        int64_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
}

/* An example as perm holds it: idx * n_sets + task (idx alone for one task). */
static int pick_len(const data_stream *d, int64_t code) {
    return tok_input_len(d->sets[code % d->n_sets], code / d->n_sets);
}

/* train.length_window: in each window of perm (d->window examples, whole
 * batches of d->batch), the examples sorted by input length (ties by their
 * place), then the window's whole batches in an order shuffled from seed (a
 * partial batch at the end of the epoch stays last). */
static void bucket_by_length(const data_stream *d, int64_t *perm, int64_t n, uint64_t seed) {
    int64_t w = d->window, b = d->batch;
    uint64_t *key = mallocCheck(sizeof(uint64_t) * (size_t)w);
    int64_t *tmp = mallocCheck(sizeof(int64_t) * (size_t)w);
    for (int64_t w0 = 0; w0 < n; w0 += w) {
        int64_t m = n - w0 < w ? n - w0 : w, nb = m / b;
        for (int64_t i = 0; i < m; i++) key[i] = (uint64_t)pick_len(d, perm[w0 + i]) << 32 | (uint64_t)i;
        qsort(key, (size_t)m, sizeof *key, cmp_u64);
        for (int64_t i = 0; i < m; i++) tmp[i] = perm[w0 + (int64_t)(key[i] & 0xffffffffu)];
        int64_t *order = (int64_t *)key; /* batch order, reusing key's room */
        shuffle(order, nb, mc_hash64(seed ^ mc_hash64((uint64_t)w0 + 1)));
        for (int64_t k = 0; k < nb; k++) memcpy(perm + w0 + k * b, tmp + order[k] * b, sizeof(int64_t) * (size_t)b);
        memcpy(perm + w0 + nb * b, tmp + nb * b, sizeof(int64_t) * (size_t)(m - nb * b));
    }
    free(key), free(tmp);
}

/* Draw j of a mixture: the task from the mixture rates, the example
 * uniformly within it, both from hash(seed, j). */
static void mixture_draw(const data_stream *d, int64_t j, int *task, int64_t *idx) {
    uint64_t h = mc_hash64(d->seed ^ mc_hash64((uint64_t)j * 2 + 1));
    double u = (h >> 11) * 0x1.0p-53 * d->cum_rate[d->n_sets - 1];
    int t = 0;
    while (t < d->n_sets - 1 && u >= d->cum_rate[t]) t++;
    *task = t;
    *idx = (int64_t)(mc_hash64(h + 0x51ed27ULL) % (uint64_t)d->sets[t]->n);
}

/* Example j of the infinite training stream. seq2seq: (task, index) with the
 * gold choice as target. One task: epochs without replacement, each a fresh
 * shuffle seeded by (seed, epoch). Several tasks: draw j (mixture_draw), so
 * the stream is a pure function of j and resuming needs no sampler state;
 * with a length window, window k holds draws k*w .. k*w+w-1 reordered by
 * bucket_by_length with a seed of (seed, k): still a function of j. */
static void seq2seq_example(data_stream *d, int64_t j, int *task, int64_t *idx) {
    if (d->n_sets == 1) {
        int64_t n = d->sets[0]->n, e = j / n;
        if (e != d->perm_epoch) {
            uint64_t es = mc_hash64(d->seed * 7919ULL + (uint64_t)e);
            shuffle(d->perm, n, es);
            if (d->window) bucket_by_length(d, d->perm, n, es);
            d->perm_epoch = e;
        }
        *task = 0;
        *idx = d->perm[j % n];
        return;
    }
    if (!d->window) {
        mixture_draw(d, j, task, idx);
        return;
    }
    int64_t w = d->window, k = j / w;
    if (k != d->perm_epoch) {
        for (int64_t i = 0; i < w; i++) {
            int t;
            int64_t x;
            mixture_draw(d, k * w + i, &t, &x);
            d->perm[i] = x * d->n_sets + t;
        }
        bucket_by_length(d, d->perm, w, mc_hash64(d->seed * 7919ULL + (uint64_t)k));
        d->perm_epoch = k;
    }
    int64_t code = d->perm[j % w];
    *task = (int)(code % d->n_sets);
    *idx = code / d->n_sets;
}

/* Span corruption: chunk j % n_chunks of the epoch's shuffled order, noise
 * drawn from hash(seed, j). */
static void span_example(data_stream *d, int64_t j, int extra_id_0, double density, double mean_span,
                         int *in, int *nin, int *tg, int *ntg) {
    int64_t e = j / d->n_chunks;
    if (e != d->perm_epoch) {
        shuffle(d->perm, d->n_chunks, mc_hash64(d->seed * 7919ULL + (uint64_t)e));
        d->perm_epoch = e;
    }
    int64_t c = d->perm[j % d->n_chunks];
    tok_span_corrupt(d->stream + c * d->raw_len, d->raw_len, mc_hash64(d->seed ^ (uint64_t)j * 0x9e37ULL),
                     density, mean_span, extra_id_0, in, nin, tg, ntg);
}

static void build_stream(data_stream *d, tok_set **sets, int n_sets, const train_opts *o) {
    memset(d, 0, sizeof *d);
    d->sets = sets;
    d->n_sets = n_sets;
    d->seed = (uint64_t)o->seed;
    d->perm_epoch = -1;
    if (o->objective == 1) {
        int64_t total = 0;
        for (int s = 0; s < n_sets; s++) total += sets[s]->input_off[sets[s]->n];
        d->stream = mallocCheck(sizeof(int) * (total ? total : 1));
        for (int s = 0; s < n_sets; s++)
            for (int64_t i = 0; i < sets[s]->n; i++) {
                int len = tok_input_len(sets[s], i);
                const int *x = tok_input(sets[s], i);
                if (len > 0 && x[len - 1] == T5_EOS) len--;
                memcpy(d->stream + d->stream_len, x, sizeof(int) * len);
                d->stream_len += len;
            }
        d->raw_len = tok_span_raw_length((int)o->max_in, (int)o->max_tgt, o->density, o->mean_span);
        d->n_chunks = d->stream_len / d->raw_len;
        if (d->n_chunks < 1)
            die("the corpus has %lld tokens, fewer than one span-corruption chunk of %d: give more text",
                (long long)d->stream_len, d->raw_len);
        d->perm = mallocCheck(sizeof(int64_t) * d->n_chunks);
    } else {
        d->cum_rate = mallocCheck(sizeof(double) * n_sets);
        double c = 0;
        int64_t maxn = 1;
        for (int s = 0; s < n_sets; s++) {
            if (sets[s]->n < 1) die("%s: no examples", sets[s]->path);
            c += (double)(sets[s]->n < o->mixture_cap ? sets[s]->n : o->mixture_cap);
            d->cum_rate[s] = c;
            if (sets[s]->n > maxn) maxn = sets[s]->n;
        }
        if (o->length_window > 0) d->window = o->length_window * o->batch, d->batch = o->batch;
        d->perm = mallocCheck(sizeof(int64_t) * (maxn > d->window ? maxn : d->window));
    }
}

static void free_stream(data_stream *d) {
    free(d->cum_rate);
    free(d->perm);
    free(d->stream);
}

/* Micro-batch of mb examples starting at stream index j0: fills the input
 * and target pointers (span corruption writes into in / tg) and returns the
 * number of real target tokens tok_batch_fill will put in (a target longer
 * than maxTd is cut to maxTd, keeping its EOS). */
static long fill_micro(data_stream *ds, tok_set **sets, const train_opts *o, int extra_id_0, int64_t j0, int mb,
                       int maxTd, int *in, int *tg, const int **ins, int *nins, const int **outs, int *nouts) {
    long n_tg = 0;
    for (int i = 0; i < mb; i++) {
        int64_t j = j0 + i;
        if (o->objective == 1) {
            span_example(ds, j, extra_id_0, o->density, o->mean_span, in + i * (o->max_in + 1), &nins[i],
                         tg + i * (o->max_tgt + 1), &nouts[i]);
            ins[i] = in + i * (o->max_in + 1);
            outs[i] = tg + i * (o->max_tgt + 1);
        } else {
            int t;
            int64_t idx;
            seq2seq_example(ds, j, &t, &idx);
            tok_set *s = sets[t];
            ins[i] = tok_input(s, idx);
            nins[i] = tok_input_len(s, idx);
            int64_t c = s->ex_choices[idx] + s->label[idx];
            outs[i] = tok_choice(s, c);
            nouts[i] = tok_choice_len(s, c);
        }
        n_tg += nouts[i] < maxTd ? nouts[i] : maxTd;
    }
    return n_tg;
}

/* ----------------------------------------------------------------- validation */

/* seq2seq: mean rank-classification accuracy over the valid sets (higher is
 * better). span corruption: minus the mean loss over the first chunks of the
 * valid corpus. */
static double validate(t5_model *m, tok_set **vs, int nv, const train_opts *o, tok_batch *vtb,
                       data_stream *vstream, tok_batch *tb, int *in, int *tg) {
    if (o->objective == 1) {
        int64_t n = o->valid_examples > 0 ? o->valid_examples : 256;
        if (n > vstream->n_chunks) n = vstream->n_chunks;
        double s = 0;
        int mb = tb->maxB, cnt = 0;
        const int *ins[1024], *outs[1024];
        int nins[1024], nouts[1024];
        for (int64_t j = 0; j < n;) {
            int k = 0;
            for (; k < mb && k < 1024 && j + k < n; k++) {
                /* fixed: chunk j+k, epoch 0 order, noise from the seed */
                span_example(vstream, j + k, t5_extra_id_0(&m->c), o->density, o->mean_span,
                             in + k * (o->max_in + 1), &nins[k], tg + k * (o->max_tgt + 1), &nouts[k]);
                ins[k] = in + k * (o->max_in + 1);
                outs[k] = tg + k * (o->max_tgt + 1);
            }
            tok_batch_fill(tb, k, ins, nins, k, outs, nouts, NULL, 0, 0);
            s += t5_forward(m, &tb->b);
            cnt++;
            j += k;
        }
        return cnt ? -s / cnt : 0;
    }
    double acc = 0;
    for (int v = 0; v < nv; v++) {
        tok_set *s = vs[v];
        int64_t n = o->valid_examples > 0 && o->valid_examples < s->n ? o->valid_examples : s->n;
        float *scores = mallocCheck(sizeof(float) * (s->n_choices + 1));
        int *pred = mallocCheck(sizeof(int) * (n + 1));
        /* in order of input length, as eval takes them: little padding, and
         * the same scores as in any other order (rank.c) */
        int64_t *order = tok_length_order_range(s, 0, n);
        tok_rank_order(m, s, order, 0, n, vtb, scores, pred);
        free(order);
        int64_t right = 0;
        for (int64_t i = 0; i < n; i++) right += pred[i] == s->label[i];
        acc += (double)right / n;
        free(scores);
        free(pred);
    }
    return nv ? acc / nv : 0;
}

/* ---------------------------------------------------------------- checkpoint */

typedef struct {
    long step;          /* optimizer steps done */
    long best_step;
    double best_score;
    long bad;           /* validations without improvement */
    int stopped;
    double ema;         /* smoothed training loss */
} train_state;

/* best_mom (nmom floats, or NULL): the optimizer's second moments when the
 * best weights were kept (--optimizer-fisher records them) */
static int write_ckpt(const char *path, const char *run_key, const train_state *st, const float *w,
                      size_t n, const optim *o, const float *best, const float *best_mom, size_t nmom) {
    mc_val *meta = val_map();
    val_set_str(meta, "run", run_key);
    val_set_int(meta, "step", st->step);
    val_set_int(meta, "best_step", st->best_step);
    val_set_float(meta, "best_score", st->best_score);
    val_set_int(meta, "bad", st->bad);
    val_set_int(meta, "stopped", st->stopped);
    val_set_int(meta, "opt_step", o->step);
    val_set_float(meta, "ema", st->ema);
    art_writer *aw = art_writer_open(path, "train_checkpoint", "", meta, 2 + (best != NULL) + (best_mom != NULL));
    val_free(meta);
    if (!aw) return -1;
    int64_t sh[1] = {(int64_t)n}, so[1] = {(int64_t)o->n_state}, sm[1] = {(int64_t)nmom};
    if (art_writer_tensor(aw, "weights", ART_F32, 1, sh, w) < 0 ||
        art_writer_tensor(aw, "optimizer", ART_F32, 1, so, o->state) < 0 ||
        (best && art_writer_tensor(aw, "best", ART_F32, 1, sh, best) < 0) ||
        (best_mom && art_writer_tensor(aw, "best_moments", ART_F32, 1, sm, best_mom) < 0)) {
        art_writer_abort(aw);
        return -1;
    }
    return art_writer_close(aw);
}

/* Returns 1 if resumed, 0 if there is no checkpoint (or one of another run,
 * or one without the best weights' second moments that best_mom asks for,
 * which is reported and ignored). */
static int read_ckpt(const char *path, const char *run_key, train_state *st, float *w, size_t n,
                     optim *o, float *best, float *best_mom, size_t nmom) {
    if (access(path, F_OK) != 0) return 0;
    art_file *f = art_open(path, "train_checkpoint");
    if (!f) {
        fprintf(stderr, "%s: ignoring unreadable checkpoint: %s\n", mc_progname(), mc_error());
        return 0;
    }
    const char *run = val_get_str(f->meta, "run", "");
    if (strcmp(run, run_key) != 0) {
        fprintf(stderr, "%s: %s belongs to another run (%s, this run is %s): starting afresh\n",
                mc_progname(), path, run, run_key);
        art_close(f);
        return 0;
    }
    const art_tensor *tw = art_find(f, "weights"), *to = art_find(f, "optimizer"), *tb = art_find(f, "best"),
                     *tm = art_find(f, "best_moments");
    if (!tw || tw->numel != (int64_t)n || !to || to->numel != (int64_t)o->n_state || (best && !tb) ||
        (tb && tb->numel != (int64_t)n) || (tm && tm->numel != (int64_t)nmom))
        die("%s: checkpoint does not match this model/optimizer; delete it to start afresh", path);
    if (best_mom && !tm && val_get_int(f->meta, "best_step", -1) >= 0) { /* left by a run without --optimizer-fisher */
        fprintf(stderr, "%s: %s lacks the optimizer state of the best weights that --optimizer-fisher records: "
                "starting afresh\n", mc_progname(), path);
        art_close(f);
        return 0;
    }
    art_tensor_copy(tw, w);
    art_tensor_copy(to, o->state);
    if (best) art_tensor_copy(tb, best);
    if (best_mom && tm) art_tensor_copy(tm, best_mom);
    st->step = val_get_int(f->meta, "step", 0);
    st->best_step = val_get_int(f->meta, "best_step", -1);
    st->best_score = val_get_float(f->meta, "best_score", -INFINITY);
    st->bad = val_get_int(f->meta, "bad", 0);
    st->stopped = (int)val_get_int(f->meta, "stopped", 0);
    o->step = val_get_int(f->meta, "opt_step", 0);
    st->ema = val_get_float(f->meta, "ema", 0);
    /* the steps index the data order (step * batch): within train.steps' range */
    if (st->step < 0 || st->step > (1L << 40) || st->best_step < -1 || st->best_step > st->step || st->bad < 0 ||
        o->step < 0 || o->step > (1L << 40))
        die("%s: checkpoint meta (step %ld, best_step %ld, bad %ld, opt_step %ld) is out of range; delete it to "
            "start afresh", path, st->step, st->best_step, (long)st->bad, (long)o->step);
    art_close(f);
    return 1;
}

/* ---------------------------------------------------------------- signals */

/* the signal that asked the run to stop (0: none). The first of SIGTERM,
 * SIGINT, SIGUSR1 restores the default action of all three, so a second
 * signal (any of them) ends the process at once. SIGPIPE is ignored while
 * training: a log reader that died (a `tee` taken down by the same Ctrl-C)
 * must not kill the run before its checkpoint. */
static volatile sig_atomic_t stop_signal;
static struct sigaction default_action;
static const int stop_signals[] = {SIGTERM, SIGINT, SIGUSR1};

static void on_stop_signal(int sig) {
    stop_signal = sig;
    for (int i = 0; i < 3; i++) sigaction(stop_signals[i], &default_action, NULL);
}

static void catch_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    memset(&default_action, 0, sizeof default_action);
    default_action.sa_handler = SIG_DFL;
    sigemptyset(&default_action.sa_mask);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; i++) sigaddset(&sa.sa_mask, stop_signals[i]);
    for (int i = 0; i < 3; i++) sigaction(stop_signals[i], &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* end the process by the signal that stopped it (its default action), so
 * that the caller sees a death by that signal (status 128 + sig) */
static void die_by_signal(int sig) {
    fflush(NULL);
    sigaction(sig, &default_action, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    raise(sig);
    _exit(128 + sig);
}

/* ---------------------------------------------------------------------- bench */

/* floating-point operations of the matrix products of one training step:
 * the forward's linears (lin) and attention products (att); the backward
 * takes both again for the input gradients and, in full fine-tuning, the
 * linears once more for the weight gradients; the attention's backward has
 * four products to the forward's two. IA3 (frozen base) skips the input
 * gradients of block 0's q, k, v projections (encoder and decoder): nothing
 * below them trains. */
static double gemm_flops_step(const t5_config *c, double B, double Te, double Td, int ia3) {
    double D = c->d_model, HK = (double)c->num_heads * c->d_kv, F = c->d_ff, V = c->vocab_size;
    double Ne = B * Te, Nd = B * Td, H = c->num_heads, K = c->d_kv;
    double lin = c->num_layers * (2 * Ne * D * HK * 4 + 2 * Ne * D * F * 3) +
                 c->num_decoder_layers * (2 * Nd * D * HK * 4 + 2 * Nd * D * HK * 2 + 2 * Ne * D * HK * 2 +
                                          2 * Nd * D * F * 3) +
                 2 * Nd * D * V;
    double att = c->num_layers * 4 * B * H * Te * Te * K +
                 c->num_decoder_layers * (4 * B * H * Td * Td * K + 4 * B * H * Td * Te * K);
    if (!ia3) return 3 * lin + 3 * att;
    return 2 * lin - 3 * 2 * (Ne + Nd) * D * HK + 3 * att;
}

/* an n^3 product as the stage runs it, on its device: be_gemm's float32
 * kernel or bf16 on the CPU; on cuda, cuBLAS in the precision in use */
typedef struct {
    const mc_ops *ops;
    int n;
    float *a, *b, *c;
} gemm_probe;

static void probe_open(gemm_probe *p, const mc_ops *ops, int n) {
    size_t bytes = sizeof(float) * (size_t)n * n;
    float *h = mallocCheck(bytes);
    p->ops = ops, p->n = n;
    p->a = ops->alloc(bytes), p->b = ops->alloc(bytes), p->c = ops->alloc(bytes);
    for (long i = 0; i < (long)n * n; i++) h[i] = (float)(i % 7) * 0.1f;
    ops->upload(p->a, h, bytes);
    for (long i = 0; i < (long)n * n; i++) h[i] = (float)(i % 5) * 0.1f;
    ops->upload(p->b, h, bytes);
    free(h);
}

/* one n^3 product, its GFLOP/s */
static double probe_run(const gemm_probe *p) {
    int n = p->n;
    double t0 = mc_now();
    p->ops->gemm(0, 0, n, n, n, 1.0f, p->a, n, p->b, n, 0.0f, p->c, n);
    p->ops->sync();
    return 2.0 * n * n * n / (mc_now() - t0) / 1e9;
}

static void probe_close(gemm_probe *p) { p->ops->release(p->a), p->ops->release(p->b), p->ops->release(p->c); }

/* the product's peak (the best of 5): 1536^3 on the CPU, 4096^3 on cuda,
 * so that the step's fraction is of that device's peak */
static double gemm_peak(const mc_ops *ops, int *n_out) {
    int cpu = ops == dev_ops(MC_DEV_CPU);
    gemm_probe p;
    probe_open(&p, ops, cpu ? 1536 : 4096);
    probe_run(&p);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double g = probe_run(&p);
        if (g > best) best = g;
    }
    probe_close(&p);
    *n_out = p.n;
    return best;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* the median of v[0..n) (sorts v) */
static double median(double *v, long n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* With train.grad_accum = K the batch goes in K micro-batches, on N ranks
 * K / N each, summed as training sums them (comm_sum_ordered); rank 0
 * prints the figures of the whole batch. */
static int bench(const t5_config *c, const train_opts *o, long steps, const mc_ops *ops) {
    int B = (int)o->batch, Te = (int)o->max_in, Td = (int)o->max_tgt;
    int K = (int)o->accum, N = comm_size(), R = K / N, mbB = B / K, lead = comm_rank() == 0;
    int pn, cpu = ops == dev_ops(MC_DEV_CPU);
    double peak = gemm_peak(ops, &pn);
    if (!lead && !freopen("/dev/null", "w", stdout)) die("rank %d: cannot silence its stdout", comm_rank());
    int bf16 = be_cpu_math() == BE_MATH_BF16 && cpu;
    char peak_name[160];
    snprintf(peak_name, sizeof peak_name, "%s GEMM", !cpu ? dev_describe(MC_DEV_CUDA) : bf16 ? be_bf16_kernel_name() : "sgemm");
    printf("bench-train: T5 d_model %d, %d+%d layers, %d heads x %d, d_ff %d, vocab %d; batch %d x %d input x %d target; %d BLAS threads\n",
           c->d_model, c->num_layers, c->num_decoder_layers, c->num_heads, c->d_kv, c->d_ff,
           c->vocab_size, B, Te, Td, be_threads());
    printf("bench-train: measured %s peak (%dx%dx%d): %.1f GFLOP/s\n", peak_name, pn, pn, pn, peak);
    if (K > 1 || N > 1)
        printf("bench-train: %s, %d micro-batches of %d (%d per rank), summed in order; GFLOP/s of the whole batch, "
               "%% of %d x the peak\n", comm_describe(), K, mbB, R, N);
    int *enc = mallocCheck(sizeof(int) * B * Te), *tgt = mallocCheck(sizeof(int) * B * Td),
        *dec = mallocCheck(sizeof(int) * B * Td);
    mc_rng r;
    mc_rng_seed(&r, 1);
    for (int i = 0; i < B * Te; i++) enc[i] = 3 + (int)mc_rng_below(&r, c->vocab_size - 3);
    for (int i = 0; i < B * Td; i++) tgt[i] = 3 + (int)mc_rng_below(&r, c->vocab_size - 3);
    for (int b = 0; b < B; b++) {
        enc[b * Te + Te - 1] = T5_EOS;
        tgt[b * Td + Td - 1] = T5_EOS;
        dec[b * Td] = 0;
        for (int t = 1; t < Td; t++) dec[b * Td + t] = tgt[b * Td + t - 1];
    }
    for (int mode = 0; mode < 2; mode++) {
        t5_model *m = t5_new(c, mode == 0, mode == 1);
        t5_init_random(m, 1);
        t5_to_device(m, ops);
        if (mode == 1) t5_freeze_params(m); /* as IA3 training does: the weights packed once */
        t5_alloc_acts(m, mbB, Te, mbB, Td, 1);
        optim *opt = mode == 0 ? opt_new(OPT_ADAMW, 1e-4f, m->n_params, m->tensors, m->n_tensors)
                               : opt_new(OPT_ADAMW, 1e-3f, m->n_ia3, m->ia3_tensors, m->n_ia3_tensors);
        opt_to_device(opt, ops);
        float *w = mode ? m->ia3 : m->params, *g = mode ? m->ia3_grads : m->grads;
        long nw = (long)(mode ? m->n_ia3 : m->n_params);
        float *acc = K > 1 && lead ? ops->alloc(sizeof(float) * nw) : NULL, *gs = acc ? acc : g;
        /* each step's times (total, forward, backward, optimizer, gradient
         * sum): the figures are their medians, steadier than means on a
         * shared machine */
        double *ts = mallocCheck(sizeof(double) * 5 * steps), loss = 0;
        /* after each timed step, two products of the peak's kind at 2048^3
         * on the CPU (4096^3 on a GPU): the step's fraction of the faster,
         * pair by pair, holds still when the machine's speed drifts between
         * the peak's measurement and the steps (a shared machine's other
         * load). The next step then starts with cold caches, as a step of
         * real training does after the data's and the optimizer's passes. */
        gemm_probe probe;
        probe_open(&probe, ops, cpu ? 2048 : 4096);
        probe_run(&probe);
        double *pr = mallocCheck(sizeof(double) * steps), *pg = mallocCheck(sizeof(double) * steps);
        double flops = gemm_flops_step(c, B, Te, Td, mode == 1);
        for (long s = -1; s < steps; s++) { /* one warm-up step */
            double t0 = mc_now(), f = 0, b = 0, cm = 0;
            for (int a = 0; a < R; a++) {
                int k = a * N + comm_rank();
                t5_batch bt = {.B = mbB, .Te = Te, .Bd = mbB, .Td = Td, .enc_ids = enc + k * mbB * Te,
                               .dec_ids = dec + k * mbB * Td, .targets = tgt + k * mbB * Td};
                double u0 = mc_now();
                t5_zero_grad(m);
                loss = t5_forward(m, &bt);
                double u1 = mc_now();
                t5_backward(m, &bt, T5_LOSS_MEAN, 1.0f / K);
                ops->sync();
                double u2 = mc_now();
                if (K > 1) comm_sum_ordered(ops, acc, g, nw, a == 0);
                ops->sync();
                f += u1 - u0, b += u2 - u1, cm += mc_now() - u2;
            }
            double u3 = mc_now();
            if (N > 1) comm_bcast_dev(ops, gs, nw, 0);
            ops->sync();
            double t2 = mc_now();
            cm += t2 - u3;
            opt_step(opt, w, gs);
            ops->sync();
            double t3 = mc_now();
            if (s >= 0) {
                double row[5] = {t3 - t0, f, b, t3 - t2, cm};
                for (int q = 0; q < 5; q++) ts[q * steps + s] = row[q];
                double g1 = probe_run(&probe), g2 = probe_run(&probe); /* the faster of two: warm caches */
                pg[s] = g1 > g2 ? g1 : g2;
                pr[s] = flops / (t3 - t0) / 1e9 / (pg[s] * N);
            }
        }
        probe_close(&probe);
        double pair_frac = median(pr, steps), pair_gemm = median(pg, steps), best_gemm = pg[steps - 1];
        free(pr), free(pg);
        double per = median(ts, steps), tf = median(ts + steps, steps), tb = median(ts + 2 * steps, steps);
        double to = median(ts + 3 * steps, steps), tc = median(ts + 4 * steps, steps);
        free(ts);
        printf("bench-train: C %-4s%s: %7.0f tokens/s (input+target), %7.1f ms/step (median of %ld; forward %.1f, backward %.1f, "
               "optimizer %.1f), %.1f GFLOP/s = %.0f%% of %s peak, loss %.3f\n",
               mode ? "IA3" : "full", bf16 ? " bf16" : "", B * (double)(Te + Td) / per, per * 1e3, steps, tf * 1e3,
               tb * 1e3, to * 1e3, flops / per / 1e9,
               100 * flops / per / 1e9 / (peak * N), peak_name, loss);
        printf("bench-train: C %-4s%s step at %.0f%% of the %s measured after each step (%dx%dx%d, the faster of "
               "two, median %.1f GFLOP/s; median of %ld pairs); at %.0f%% of the best of them (%.1f)\n",
               mode ? "IA3" : "full", bf16 ? " bf16" : "", 100 * pair_frac, peak_name, probe.n, probe.n, probe.n,
               pair_gemm, steps, 100 * flops / per / 1e9 / (best_gemm * N), best_gemm);
        if (K > 1 || N > 1)
            printf("bench-train: C %-4s: gradient sum%s %.1f ms/step\n", mode ? "IA3" : "full",
                   N > 1 ? " (gather, broadcast and the wait for the slowest rank)" : "", tc * 1e3);
        if (acc) ops->release(acc);
        opt_free(opt);
        t5_free(m);
    }
    printf("bench-train: C peak resident memory %.0f MiB\n", mc_peak_rss() / 1048576.0);
    free(enc), free(tgt), free(dec);
    return 0;
}

/* -------------------------------------------------------- optimizer Fisher */

/* path with its directory resolved (symbolic links, "..") when that exists,
 * else as given; caller frees */
static char *resolved_path(const char *path) {
    char *dir = strdupCheck(path), *slash = strrchr(dir, '/');
    const char *name = slash ? slash + 1 : path;
    if (slash) *slash = 0;
    char *rd = realpath(!slash ? "." : *dir ? dir : "/", NULL);
    size_t len = (rd ? strlen(rd) : strlen(dir)) + strlen(name) + 2;
    char *r = mallocCheck(len);
    snprintf(r, len, "%s/%s", rd ? rd : dir, name);
    free(rd), free(dir);
    return r;
}

/* Whether a and b name one file, existing or not: the same device and
 * inode when both exist, else the same resolved path. */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    int ea = stat(a, &sa) == 0, eb = stat(b, &sb) == 0;
    if (ea && eb) return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
    char *ra = resolved_path(a), *rb = resolved_path(b);
    int same = !strcmp(ra, rb);
    free(ra), free(rb);
    return same;
}

/* --optimizer-fisher F may be neither the model nor its checkpoint */
static void check_fisher_path(const char *f, const char *out) {
    size_t len = strlen(out) + 8;
    char *ck = mallocCheck(len);
    snprintf(ck, len, "%s.ckpt", out);
    if (same_file(f, out)) die("--optimizer-fisher %s is the model output -o %s: give the Fisher a path of its own", f, out);
    if (same_file(f, ck)) die("--optimizer-fisher %s is the checkpoint %s that train keeps: give the Fisher another path", f, ck);
    free(ck);
}

/* --optimizer-fisher: the second moments `mom` (opt_moments_copy after
 * `step` updates) as a fisher_diag artifact at `path` with the trained
 * tensors' names and shapes, times train.batch_size (v estimates the square
 * of a batch-mean gradient; where the per-example gradients are mostly noise
 * that is 1/B of the per-example square the Fisher pass averages).
 * meta.inputs are as `fisher` writes them for this output (model = this
 * run's key; IA3: model = the base, ia3 = this run's key), so merge's
 * provenance check pairs it with this model. Its key is its own, a function
 * of the run's: stage optfisher, input train = the run's key (what
 * `key --stage optfisher --input train=KEY` prints; recipes/workflow.mk). */
static void write_optimizer_fisher(const char *path, const char *run_key, const char *init_key, const optim *opt,
                                   const float *mom, long step, int at_best, const train_opts *o, tok_set **sets,
                                   int nd) {
    const char *name = o->optimizer ? "adafactor" : "adamw";
    char src[32];
    snprintf(src, sizeof src, "optimizer:%s", name);
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "train");
    val_set_str(meta, "fisher", src);
    val_set_str(meta, "type", "diagonal");
    val_set_int(meta, "n_examples", step * o->batch);
    val_set_str(meta, "split", sets[0]->split);
    if (nd == 1) val_set_str(meta, "task", sets[0]->task);
    val_set_int(meta, "optimizer_step", step);
    val_set_str(meta, "weights", at_best ? "best" : "last");
    val_set_float(meta, "scale", (double)o->batch);
    if (!o->optimizer) val_set_float(meta, "bias_correction", 1.0 / (1.0 - pow(opt->beta2, (double)step)));
    mc_val *inp = val_set_map(meta, "inputs");
    if (o->mode) {
        val_set_str(inp, "model", init_key);
        val_set_str(inp, "ia3", run_key);
    } else {
        val_set_str(inp, "model", run_key);
    }
    if (nd == 1) {
        val_set_str(inp, "data", sets[0]->key);
    } else {
        mc_val *dl = val_set_array(inp, "data");
        for (int i = 0; i < nd; i++) val_push(dl, val_str(sets[i]->key));
    }
    char fkey[33];
    mc_key *k = key_new("optfisher");
    if (key_input(k, "train", run_key) < 0) die("%s", mc_error());
    key_digest(k, fkey);
    key_free(k);
    art_writer *w = art_writer_open(path, "fisher_diag", fkey, meta, (size_t)opt->n_tensors);
    val_free(meta);
    if (!w) die("%s", mc_error());
    size_t maxn = 1;
    for (int i = 0; i < opt->n_tensors; i++)
        if (opt->tensors[i].numel > maxn) maxn = opt->tensors[i].numel;
    float *x = mallocCheck(sizeof(float) * maxn);
    for (int i = 0; i < opt->n_tensors; i++) {
        const t5_tensor *t = &opt->tensors[i];
        opt_fisher_tensor(opt, mom, step, i, (float)o->batch, x);
        long bad = mc_nonfinite_at(x, (long)t->numel);
        if (bad >= 0) {
            art_writer_abort(w);
            die("the optimizer's second moment of %s is not finite (element %ld): nothing written to %s", t->name,
                bad, path);
        }
        if (art_writer_tensor(w, t->name, ART_F32, t->ndim, t->shape, x) < 0) {
            art_writer_abort(w);
            die("%s", mc_error());
        }
    }
    free(x);
    if (art_writer_close(w) < 0) die("%s", mc_error());
    fprintf(stderr, "%s: wrote %s (the %s second moments of step %ld, %s weights%s, times batch %ld)\n",
            mc_progname(), path, name, step, at_best ? "the best" : "the last",
            o->optimizer ? "" : ", bias-corrected", o->batch);
}

/* ------------------------------------------------------------------------ main */

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    comm_init(&argc, &argv);
    const int rank = comm_rank(), nranks = comm_size(), lead = rank == 0;
    const char *out = NULL, *init = NULL, *key_arg = NULL, *ofisher = NULL;
    opt_list data = {0}, valid = {0};
    long bench_steps = 0;
    mc_cfg *cfg = cfg_new();
    static const char *const objectives[] = {"seq2seq", "span_corruption", NULL}, *const modes[] = {"full", "ia3", NULL};
    opt_spec rows[] = {
        OPT_ROWS_CONFIG(cfg),
        {.name = "--objective", .kind = OPT_CHOICE, .dst = cfg, .arg = "span_corruption|seq2seq", .choices = objectives,
         .call = cfg_opt_key, .key = "train.objective", .help = "what to train for"},
        {.name = "--mode", .kind = OPT_CHOICE, .dst = cfg, .arg = "full|ia3", .choices = modes, .call = cfg_opt_key,
         .key = "train.mode", .help = "every parameter, or IA3 vectors on --init"},
        {.name = "--data", .kind = OPT_LIST, .dst = &data, .arg = "A.msgpack[,B...]", .flags = OPT_INPUT,
         .help = "tokens artifacts; several: their examples-proportional mixture"},
        {.name = "--valid", .kind = OPT_LIST, .dst = &valid, .arg = "V.msgpack[,...]", .flags = OPT_INPUT,
         .help = "validation tokens (train.eval_every, train.patience)"},
        {.name = "--init", .kind = OPT_STR, .dst = &init, .arg = "MODEL.msgpack", .flags = OPT_INPUT,
         .help = "start from this model (required for --mode ia3; default: random init)"},
        {.name = "--seed", .kind = OPT_INT, .dst = cfg, .arg = "N", .lo = 0, .hi = 1099511627776.0, .call = cfg_opt_key,
         .key = "train.seed", .help = "the run's seed"},
        OPT_ROW_DEVICE("where the model trains; default: DEVICE, else train.device, else cpu"),
        OPT_ROW_KEY(&key_arg),
        {.name = "--bench", .kind = OPT_INT, .dst = &bench_steps, .arg = "STEPS", .lo = 1, .hi = 1e9,
         .help = "time STEPS steps on random batches; writes nothing"},
        {.name = "-o", .kind = OPT_STR, .dst = &out, .arg = "OUT.msgpack", .flags = OPT_OUTPUT,
         .help = "the model or ia3 artifact"},
        /* no key entry: the model's bytes and key are the same with it */
        {.name = "--optimizer-fisher", .kind = OPT_STR, .dst = &ofisher, .arg = "F.msgpack", .flags = OPT_OUTPUT,
         .help = "also write the optimizer's second moments as a fisher_diag artifact of the output"},
        {0}};
    const opt_prog prog = {
        .name = "train", .opts = rows,
        .usage = "train --config EXP.conf [--set k=v]... [--objective span_corruption|seq2seq] [--mode full|ia3]\n"
                 "             --data A.msgpack[,B...] [--valid V.msgpack[,...]] [--init MODEL.msgpack] [--seed N]\n"
                 "             [--device cpu|cuda] [--key HEX] -o OUT.msgpack [--optimizer-fisher F.msgpack]\n"
                 "       train --config EXP.conf [--set k=v]... [--device cpu|cuda] --bench STEPS"};
    opts_parse(&prog, argc - 1, argv + 1);
    /* two threads per process, or the node's two cores shared by its ranks */
    be_init_default(comm_local_size() < 2 ? 2 : 1);

    train_opts o;
    const char *opts[] = {"adamw", "adafactor", NULL};
    o.objective = cfg_enum(cfg, "train.objective", "seq2seq", objectives);
    o.mode = cfg_enum(cfg, "train.mode", "full", modes);
    o.seed = cfg_int(cfg, "train.seed", 0, 0, 1L << 40);
    o.steps = cfg_int(cfg, "train.steps", 1000, 1, 1L << 40);
    o.batch = cfg_int(cfg, "train.batch_size", 32, 1, 1 << 20);
    o.accum = cfg_int(cfg, "train.grad_accum", 1, 1, 1 << 20);
    o.max_in = cfg_int(cfg, "train.max_input_len", 128, 4, 1 << 16);
    o.max_tgt = cfg_int(cfg, "train.max_target_len", 32, 2, 1 << 16);
    o.optimizer = cfg_enum(cfg, "train.optimizer", "adamw", opts);
    o.lr = cfg_float(cfg, "train.lr", o.mode == 1 ? 3e-3 : 1e-4, 0, 10);
    const char *scheds[] = {"constant", "linear", "cosine", "rsqrt", NULL};
    o.schedule = cfg_enum(cfg, "train.schedule", "constant", scheds);
    o.warmup = cfg_int(cfg, "train.warmup_steps", 0, 0, 1L << 40);
    o.weight_decay = cfg_float(cfg, "train.weight_decay", 0, 0, 10);
    o.scale_parameter = (int)cfg_int(cfg, "train.scale_parameter", 0, 0, 1);
    o.clip = cfg_float(cfg, "train.clip", 0, 0, 1e9);
    o.eval_every = cfg_int(cfg, "train.eval_every", 0, 0, 1L << 40);
    o.patience = cfg_int(cfg, "train.patience", 0, 0, 1L << 40);
    o.valid_examples = cfg_int(cfg, "train.valid_examples", 0, 0, 1L << 40);
    o.ckpt_every = cfg_int(cfg, "train.ckpt_every", 200, 0, 1L << 40);
    o.mixture_cap = cfg_int(cfg, "train.mixture_cap", 500000, 1, 1L << 40);
    o.length_window = cfg_int(cfg, "train.length_window", 0, 0, 1L << 20);
    if (o.length_window * o.batch > (1L << 24))
        die("train.length_window %ld x train.batch_size %ld is more than 2^24 examples a window: use a smaller "
            "train.length_window", o.length_window, o.batch);
    o.density = cfg_float(cfg, "train.span_noise_density", 0.15, 0.01, 0.9);
    o.mean_span = cfg_float(cfg, "train.span_mean_length", 3.0, 1.0, 100.0);
    if (o.batch % o.accum != 0)
        die("%s: train.batch_size = %ld is not a multiple of train.grad_accum = %ld",
            cfg_where(cfg, "train.batch_size") ? cfg_where(cfg, "train.batch_size") : "config",
            o.batch, o.accum);
    if (o.accum % nranks != 0)
        die("train.grad_accum = %ld is not a multiple of the %d ranks: each rank takes whole micro-batches; set "
            "train.grad_accum to a multiple of %d (the bytes are those of one rank accumulating that many)",
            o.accum, nranks, nranks);

    t5_config mc;
    int have_model_cfg = cfg_peek(cfg, "model.d_model") != NULL;
    if (have_model_cfg && t5_config_from_cfg(&mc, cfg) < 0) die("%s", mc_error());
    int dev = dev_resolve(cfg, "train.device");
    const mc_ops *ops = dev_ops(dev);
    comm_open_device(dev);
    if (cfg_check_unknown(cfg, (const char *[]){"model", "train", NULL}) < 0) die("%s", mc_error());

    if (bench_steps > 0 && ofisher) die("--bench trains nothing it could keep: drop --optimizer-fisher");
    if (bench_steps > 0) {
        if (!have_model_cfg) die("--bench needs a model config (model.* keys, e.g. --config configs/models/t5-mini.conf)");
        if (dev != MC_DEV_CPU) printf("bench-train: device %s\n", dev_describe(dev));
        int rc = bench(&mc, &o, bench_steps, ops);
        comm_finalize();
        return rc;
    }
    if (!out) die("no output: give -o OUT.msgpack");
    if (ofisher) check_fisher_path(ofisher, out);
    if (!data.n) die("no training data: give --data A.msgpack[,B.msgpack...]");
    if (o.mode == 1 && !init) die("--mode ia3 trains IA3 vectors on a base model: give --init MODEL.msgpack");

    /* model */
    char init_key[33] = "";
    t5_model *m;
    if (init) {
        m = t5_load_model(init, o.mode == 0, o.mode == 1, init_key);
        if (!m) die("%s", mc_error());
        char diff[160];
        if (have_model_cfg && t5_config_diff(&m->c, &mc, diff, sizeof diff))
            die("%s: its meta.config differs from the model.* keys of the config; drop the model "
                "include or use a matching --init (%s)", init, diff);
    } else {
        if (!have_model_cfg)
            die("no model: give --init MODEL.msgpack or model.* keys (include configs/models/NAME.conf)");
        m = t5_new(&mc, 1, 0);
        t5_init_random(m, (uint64_t)o.seed);
    }

    /* data */
    int nd = data.n, nv = valid.n;
    char **dpaths = data.v, **vpaths = valid.v;
    tok_set **sets = mallocCheck(sizeof(tok_set *) * nd), **vsets = mallocCheck(sizeof(tok_set *) * (nv + 1));
    for (int i = 0; i < nd; i++)
        if (!(sets[i] = tok_load(dpaths[i], o.objective == 0))) die("%s", mc_error());
    for (int i = 0; i < nv; i++)
        if (!(vsets[i] = tok_load(vpaths[i], o.objective == 0))) die("%s", mc_error());
    for (int i = 0; i < nd + nv; i++) {
        tok_set *s = i < nd ? sets[i] : vsets[i - nd];
        if (s->max_id >= m->c.vocab_size)
            die("%s: token id %d is outside the model's vocabulary of %d (another tokenizer?)", s->path,
                s->max_id, m->c.vocab_size);
    }

    /* run identity: the cache key */
    char run_key[33];
    if (key_arg) {
        snprintf(run_key, sizeof run_key, "%s", key_arg);
    } else {
        mc_key *k = key_new_self("train", cfg, (const char *[]){"train", "model", NULL});
        tok_key_inputs(k, "data", sets, nd, 1);
        tok_key_inputs(k, "valid", vsets, nv, 1);
        if (*init_key && key_input(k, "init", init_key) < 0) die("%s", mc_error());
        dev_key(k, cfg, "train.device", dev);
        key_digest(k, run_key);
        key_free(k);
    }

    data_stream ds, vds;
    build_stream(&ds, sets, nd, &o);
    if (o.objective == 1 && nv) {
        build_stream(&vds, vsets, nv, &o);
        vds.seed = 12345; /* fixed validation noise */
    } else {
        memset(&vds, 0, sizeof vds);
    }

    int mb = (int)(o.batch / o.accum);
    tok_batch tb, vtb;
    tok_batch_init(&tb, mb, (int)o.max_in, mb, (int)o.max_tgt);
    int max_choices = 1;
    for (int v = 0; v < nv; v++)
        for (int64_t i = 0; i < vsets[v]->n && o.objective == 0; i++) {
            int nc = (int)(vsets[v]->ex_choices[i + 1] - vsets[v]->ex_choices[i]);
            if (nc > max_choices) max_choices = nc;
        }
    int vbd = mb > max_choices ? mb : max_choices;
    tok_batch_init(&vtb, mb, (int)o.max_in, vbd, (int)o.max_tgt);
    t5_to_device(m, ops);
    if (o.mode == 1) t5_freeze_params(m); /* IA3 trains its vectors: the weights stay, packed once */
    t5_alloc_acts(m, mb, (int)o.max_in, nv ? vbd : mb, (int)o.max_tgt, 1);

    /* w, g: model memory (the device's on cuda); hw: the host copy that
     * checkpoints and the best weights go through (w itself on the CPU) */
    float *w = o.mode ? m->ia3 : m->params, *g = o.mode ? m->ia3_grads : m->grads;
    size_t nw = o.mode ? m->n_ia3 : m->n_params;
    int host = t5_on_host(m);
    float *hw = host ? w : mallocCheck(sizeof(float) * nw);
    optim *opt = o.mode ? opt_new(o.optimizer, (float)o.lr, m->n_ia3, m->ia3_tensors, m->n_ia3_tensors)
                        : opt_new(o.optimizer, (float)o.lr, m->n_params, m->tensors, m->n_tensors);
    opt->weight_decay = (float)o.weight_decay;
    opt->scale_parameter = o.scale_parameter;
    opt_to_device(opt, ops);
    int use_valid = nv > 0 && o.eval_every > 0;
    /* ranks: rank 0 validates, keeps the best weights, checkpoints and writes */
    float *best = use_valid && lead ? mallocCheck(sizeof(float) * nw) : NULL;
    if (best) t5_download(m, best, w, nw);
    /* --optimizer-fisher with best weights kept: the second moments of the
     * step that made them (nmom floats), taken whenever best is */
    size_t nmom = opt_moments_floats(opt);
    float *best_mom = ofisher && best ? callocCheck(nmom ? nmom : 1, sizeof(float)) : NULL;
    train_state st = {.step = 0, .best_step = -1, .best_score = -INFINITY, .bad = 0, .stopped = 0};

    size_t plen = strlen(out) + 8;
    const char *ka = getenv("MATS_TEST_KILL_AFTER_CKPT");
    long kill_after = ka && *ka ? atol(ka) : 0;
    char *ckpt = mallocCheck(plen);
    snprintf(ckpt, plen, "%s.ckpt", out);
    int resumed = lead && read_ckpt(ckpt, run_key, &st, hw, nw, opt, best, best_mom, nmom);
    if (nranks > 1) { /* every rank starts from rank 0's weights (and its checkpoint) */
        comm_bcast(&resumed, sizeof resumed, 0);
        if (!resumed && !host) t5_download(m, hw, w, nw);
        comm_bcast(hw, sizeof(float) * nw, 0);
        if (resumed) {
            comm_bcast(&st, sizeof st, 0);
            comm_bcast(&opt->step, sizeof opt->step, 0);
            comm_bcast(opt->state, sizeof(float) * opt->n_state, 0);
        }
    }
    if ((resumed || nranks > 1) && !host) t5_upload(m, w, hw, nw);
    if (resumed) {
        opt_sync_device(opt);
        if (lead) fprintf(stderr, "%s: resuming %s from step %ld\n", mc_progname(), ckpt, st.step);
    }
    if (nranks > 1 && lead) fprintf(stderr, "%s: %s\n", mc_progname(), comm_describe());
    if (lead && dev != MC_DEV_CPU) fprintf(stderr, "%s: device %s\n", mc_progname(), dev_describe(dev));
    else if (lead && be_cpu_math() == BE_MATH_BF16)
        fprintf(stderr, "%s: cpu_math bf16: model products with bfloat16 inputs (%s)\n", mc_progname(), be_bf16_kernel_name());

    /* per-microbatch scratch (allocated once) */
    int *in = mallocCheck(sizeof(int) * mb * (o.max_in + 1)), *tg = mallocCheck(sizeof(int) * mb * (o.max_tgt + 1));
    int *vin = mallocCheck(sizeof(int) * 1024 * (o.max_in + 1)), *vtg = mallocCheck(sizeof(int) * 1024 * (o.max_tgt + 1));
    const int **ins = mallocCheck(sizeof(int *) * mb), **outs = mallocCheck(sizeof(int *) * mb);
    int *nins = mallocCheck(sizeof(int) * mb), *nouts = mallocCheck(sizeof(int) * mb);

    if (lead)
        fprintf(stderr, "%s: %s %s, %ld steps of %ld examples (%ld x %d), %s lr %g (%s, warmup %ld), %zu trainable floats, run %s\n",
            mc_progname(), o.objective ? "span_corruption" : "seq2seq", o.mode ? "ia3" : "full", o.steps,
            o.batch, o.accum, mb, o.optimizer ? "adafactor" : "adamw", o.lr, scheds[o.schedule], o.warmup, nw,
            run_key);
    if (lead && !o.objective && nd > 1) { /* the multitask mixture, one line */
        char mix[2048];
        size_t len = 0;
        double total = ds.cum_rate[nd - 1];
        for (int s = 0; s < nd && len < sizeof mix; s++) {
            double r = ds.cum_rate[s] - (s ? ds.cum_rate[s - 1] : 0);
            len += (size_t)snprintf(mix + len, sizeof mix - len, "%s%s %.1f%% (%lld)", s ? ", " : "",
                                    sets[s]->task[0] ? sets[s]->task : sets[s]->path, 100 * r / total,
                                    (long long)sets[s]->n);
        }
        fprintf(stderr, "%s: mixture (examples-proportional, cap %ld): %s\n", mc_progname(), o.mixture_cap, mix);
    }
    mc_progress pr;
    progress_init(&pr, "train", o.steps, "steps");
    if (resumed) progress_resume(&pr, st.step);
    double t_start = mc_now(), tokens = 0;
    char extra[160];
    /* Micro-batch k of a step (k < K = train.grad_accum) starts at stream
     * index step * batch + k * mb. With N ranks, rank r takes k = a N + r in
     * round a of the K / N rounds. Each micro-batch's gradient is computed
     * from zero and added to the step's sum in the order of k: by
     * comm_sum_ordered on rank 0 (one rank: acc = g_0, acc += g_1, ...), so
     * N ranks give the bytes of one rank accumulating K micro-batches. The
     * sum goes back to every rank (gs, where the optimizer reads it). */
    const long K = o.accum, rounds = K / nranks;
    float *acc = K > 1 && lead ? ops->alloc(sizeof(float) * nw) : NULL, *gs = acc ? acc : g;
    /* per round: the micro-batch's weighted loss and its tokens; rank 0
     * gathers them from every rank, rank order */
    double *part = mallocCheck(sizeof(double) * 2 * (size_t)rounds),
           *parts = lead ? mallocCheck(sizeof(double) * 2 * (size_t)K) : NULL;
    const char *cr = getenv("MATS_CHECK_RANKS");
    int check_ranks = nranks > 1 && cr && *cr && strcmp(cr, "0") != 0;
    double in_real = 0, in_rows = 0; /* input tokens and padded rows, for the log */
    catch_stop_signals();
    while (st.step < o.steps && !st.stopped) {
        if (K == 1) t5_zero_grad(m);
        /* The step's loss is the mean over all its real target tokens, as
         * one pass over the whole batch would take it: with micro-batches,
         * each one's mean is weighted by its share of those tokens (counted
         * first, by every rank; with one micro-batch the weight is exactly 1). */
        long step_tg = 0;
        if (K > 1)
            for (long k = 0; k < K; k++)
                step_tg += fill_micro(&ds, sets, &o, t5_extra_id_0(&m->c), st.step * o.batch + k * mb, mb, tb.maxTd, in, tg,
                                      ins, nins, outs, nouts);
        for (long a = 0; a < rounds; a++) {
            long k = a * nranks + rank;
            long micro_tg = fill_micro(&ds, sets, &o, t5_extra_id_0(&m->c), st.step * o.batch + k * mb, mb, tb.maxTd, in,
                                       tg, ins, nins, outs, nouts);
            if (K == 1) step_tg = micro_tg;
            tok_batch_fill(&tb, mb, ins, nins, mb, outs, nouts, NULL, 0, 0);
            in_real += (double)tb.real_in;
            in_rows += (double)mb * tb.b.Te;
            if (K > 1) t5_zero_grad(m);
            float l = t5_forward(m, &tb.b);
            if (!isfinite(l))
                die("step %ld: loss is %f: training diverged (lower train.lr or set train.clip)", st.step, l);
            if (m->n_real_targets != micro_tg)
                die("internal error: step %ld: %d real targets in the batch, %ld counted", st.step, m->n_real_targets,
                    micro_tg);
            float share = (float)micro_tg / (float)step_tg;
            t5_backward(m, &tb.b, T5_LOSS_MEAN, share);
            if (K > 1) comm_sum_ordered(ops, acc, g, (long)nw, a == 0);
            part[2 * a] = (double)l * share;
            part[2 * a + 1] = (double)tb.b.B * (tb.b.Te + tb.b.Td);
        }
        if (nranks > 1) comm_bcast_dev(ops, gs, (long)nw, 0);
        comm_gather(parts, part, sizeof(double) * 2 * (size_t)rounds);
        double loss = 0;
        if (lead)
            for (long k = 0; k < K; k++) { /* k = a N + r sits at parts[2 (r rounds + a)] */
                long a = k / nranks, r = k % nranks;
                loss += parts[2 * (r * rounds + a)];
                tokens += parts[2 * (r * rounds + a) + 1];
            }
        if (o.clip > 0) opt_clip_grad_norm_on(ops, gs, nw, (float)o.clip);
        opt->lr = (float)(o.lr * opt_schedule(o.schedule, st.step, o.warmup, o.steps));
        opt_step(opt, w, gs);
        st.step++;
        if (check_ranks) { /* debug: the weights are the same bytes on every rank */
            const char *skew = getenv("MATS_TEST_SKEW_RANK"); /* the tests' way to make them differ */
            if (skew && *skew && atoi(skew) == rank && st.step == 1) {
                if (!host) t5_download(m, hw, w, nw);
                hw[0] = nextafterf(hw[0], INFINITY);
                if (!host) t5_upload(m, w, hw, nw);
            }
            char what[64];
            snprintf(what, sizeof what, "weights after step %ld", st.step);
            if (!host) t5_download(m, hw, w, nw);
            comm_check_same(hw, sizeof(float) * nw, what);
        }
        st.ema = st.step == 1 ? loss : 0.95 * st.ema + 0.05 * loss;
        if (use_valid && st.step % o.eval_every == 0 && !lead) {
            comm_bcast(&st.stopped, sizeof st.stopped, 0);
        } else if (use_valid && st.step % o.eval_every == 0) {
            double score = validate(m, vsets, nv, &o, &vtb, &vds, &tb, vin, vtg);
            if (score > st.best_score) {
                st.best_score = score, st.best_step = st.step, st.bad = 0;
                t5_download(m, best, w, nw);
                if (best_mom) opt_moments_copy(opt, best_mom);
            } else if (o.patience > 0 && ++st.bad >= o.patience) {
                st.stopped = 1;
            }
            fprintf(stderr, "%s: step %ld: validation %s %.4f (best %.4f at step %ld)%s\n", mc_progname(),
                    st.step, o.objective ? "-loss" : "accuracy", score, st.best_score, st.best_step,
                    st.stopped ? ": early stop" : "");
            comm_bcast(&st.stopped, sizeof st.stopped, 0);
        }
        /* a stop signal: rank 0's decides for every rank, after a whole step */
        int stop = stop_signal;
        if (nranks > 1) comm_bcast(&stop, sizeof stop, 0);
        if (st.step >= o.steps || st.stopped) stop = 0; /* the run ends now anyway: it writes OUT */
        if (stop && !lead) {
            int written;
            comm_bcast(&written, sizeof written, 0); /* rank 0's checkpoint is on disk */
            comm_finalize();
            die_by_signal(stop);
        }
        if (!lead) continue;
        if ((o.ckpt_every > 0 && st.step % o.ckpt_every == 0 && st.step < o.steps && !st.stopped) || stop) {
            if (!host) t5_download(m, hw, w, nw);
            opt_sync_host(opt);
            if (write_ckpt(ckpt, run_key, &st, hw, nw, opt, best, best_mom, nmom) < 0) die("%s", mc_error());
            if (kill_after > 0 && st.step == kill_after) raise(SIGKILL);
        }
        if (stop) {
            fprintf(stderr, "%s: stopped by signal %d (%s) after step %ld of %ld; its checkpoint is %s: run the same "
                    "command again to resume\n", mc_progname(), stop, strsignal(stop), st.step, o.steps, ckpt);
            if (nranks > 1) {
                int written = 1;
                comm_bcast(&written, sizeof written, 0);
                comm_finalize();
            }
            die_by_signal(stop);
        }
        double el = mc_now() - t_start;
        snprintf(extra, sizeof extra, "loss %.4f  %.0f tok/s", st.ema, tokens / (el > 0 ? el : 1));
        progress_update(&pr, st.step, extra);
    }
    free(part), free(parts);
    if (acc) ops->release(acc);
    if (!lead) { /* rank 0 writes */
        comm_finalize();
        return 0;
    }
    progress_finish(&pr, extra);
    if (lead && !o.objective && nd > 1) { /* what the mixture drew over the whole run (a pure function of j) */
        int64_t *cnt = callocCheck((size_t)nd, sizeof(int64_t)), total = st.step * o.batch;
        for (int64_t j = 0; j < total; j++) {
            int t;
            int64_t idx;
            seq2seq_example(&ds, j, &t, &idx);
            cnt[t]++;
        }
        char drawn[2048];
        size_t len = 0;
        for (int s = 0; s < nd && len < sizeof drawn; s++)
            len += (size_t)snprintf(drawn + len, sizeof drawn - len, "%s%s %.1f%%", s ? ", " : "",
                                    sets[s]->task[0] ? sets[s]->task : sets[s]->path,
                                    total ? 100.0 * (double)cnt[s] / (double)total : 0.0);
        fprintf(stderr, "%s: drawn over %lld examples: %s\n", mc_progname(), (long long)total, drawn);
        free(cnt);
    }

    /* output: the best weights when validating, else the last */
    if (best && st.best_step >= 0) t5_upload(m, w, best, nw);
    mc_val *meta = val_map();
    val_set_str(meta, "stage", "train");
    val_set_str(meta, "objective", o.objective ? "span_corruption" : "seq2seq");
    val_set_str(meta, "mode", o.mode ? "ia3" : "full");
    val_set_int(meta, "seed", o.seed);
    val_set_int(meta, "steps", st.step);
    val_set_float(meta, "final_loss", st.ema);
    if (use_valid) {
        val_set_int(meta, "best_step", st.best_step);
        val_set_float(meta, "best_validation", st.best_score);
    }
    mc_val *inputs = val_set_map(meta, "inputs");
    mc_val *dl = val_set_array(inputs, "data");
    for (int i = 0; i < nd; i++) val_push(dl, val_str(sets[i]->key));
    if (nv) {
        mc_val *vl = val_set_array(inputs, "valid");
        for (int i = 0; i < nv; i++) val_push(vl, val_str(vsets[i]->key));
    }
    if (*init_key) val_set_str(inputs, "init", init_key);
    /* the Fisher first: once the model is there, so is its Fisher (the
     * workflow counts on it, recipes/workflow.mk) */
    if (ofisher) {
        int at_best = best_mom && st.best_step >= 0;
        float *last = at_best ? NULL : mallocCheck(sizeof(float) * (nmom ? nmom : 1));
        if (last) opt_moments_copy(opt, last);
        write_optimizer_fisher(ofisher, run_key, init_key, opt, at_best ? best_mom : last,
                               at_best ? st.best_step : st.step, at_best, &o, sets, nd);
        free(last);
    }
    mc_val *tasks = val_set_array(meta, "tasks");
    for (int i = 0; i < nd; i++) val_push(tasks, val_str(sets[i]->task));
    int rc = o.mode ? t5_save_ia3(m, out, run_key, init_key, meta) : t5_save_model(m, out, run_key, meta);
    if (rc < 0) die("%s", mc_error());
    val_free(meta);
    unlink(ckpt);
    fprintf(stderr, "%s: wrote %s (%ld steps, loss %.4f%s; this run's input rows %.0f%% tokens, %.0f%% padding)\n",
            mc_progname(), out, st.step, st.ema, use_valid ? ", best validation weights" : "",
            in_rows ? 100 * in_real / in_rows : 0, in_rows ? 100 * (1 - in_real / in_rows) : 0);

    free(in), free(tg), free(vin), free(vtg), free(ins), free(outs), free(nins), free(nouts), free(ckpt);
    free(best), free(best_mom);
    if (hw != w) free(hw);
    opt_free(opt);
    tok_batch_free(&tb);
    tok_batch_free(&vtb);
    free_stream(&ds);
    free_stream(&vds);
    for (int i = 0; i < nd; i++) tok_free(sets[i]);
    for (int i = 0; i < nv; i++) tok_free(vsets[i]);
    free(sets), free(vsets);
    t5_free(m);
    cfg_free(cfg);
    comm_finalize();
    return 0;
}
