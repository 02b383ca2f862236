/* eval - rank classification of tokens artifacts into a `metrics` artifact.
 *
 *   eval --model M.msgpack [--ia3 A.msgpack] --data T1.msgpack[,T2...]
 *        [--config EXP.conf] [--set eval.k=v]... [--device cpu|cuda] [--key HEX] -o METRICS.msgpack
 *
 * Each choice is scored by its summed log-likelihood given the input (every
 * target token including EOS, no length normalisation); the prediction is
 * the argmax (the first on ties). Each input is encoded once and all its
 * choices are scored in one batched decoder pass (decoder rows point at
 * their example's encoder row). Writes a `metrics` artifact: meta.accuracy
 * (task -> accuracy), meta.average, meta.n_examples (task -> count), tensors
 * choice_scores (f32, concatenated in --data order) and prediction (i32);
 * prints a per-task table on stdout.
 *
 * Config (all optional): eval.batch_size (examples per encoder pass, 32),
 * eval.batch_choices (decoder rows per pass, 256), eval.max_input_len (512),
 * eval.max_target_len (128), eval.max_examples (score only the first N
 * examples of each set; 0, the default, all). Longer sequences are cut
 * keeping their EOS. Examples are batched in order of input length (ties by
 * position), so a batch pads little; the outputs are in the sets' order.
 *
 * --device cpu|cuda (else DEVICE, else eval.device, else cpu): where the
 * model runs. cuda needs a `make GPU=1` build and a GPU (one-line error
 * otherwise); it enters the run's key as eval.device=cuda, so CPU keys are
 * unchanged. The scores come back to the host per batch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "backend.h"
#include "common.h"
#include "config.h"
#include "device.h"
#include "key.h"
#include "opts.h"
#include "progress.h"
#include "stage.h"
#include "rank.h"
#include "t5.h"
#include "tokens.h"

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    const char *model = NULL, *ia3 = NULL, *out = NULL, *key_arg = NULL;
    opt_list data = {0};
    mc_cfg *cfg = cfg_new();
    opt_spec rows[] = {
        {.name = "--model", .kind = OPT_STR, .dst = &model, .arg = "M.msgpack", .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "the model (the base model with --ia3)"},
        {.name = "--ia3", .kind = OPT_STR, .dst = &ia3, .arg = "A.msgpack", .flags = OPT_INPUT,
         .help = "IA3 vectors applied to --model"},
        {.name = "--data", .kind = OPT_LIST, .dst = &data, .arg = "T1.msgpack[,T2...]", .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "tokens artifacts, one per task"},
        OPT_ROWS_CONFIG(cfg),
        OPT_ROW_DEVICE("where the model runs; default: DEVICE, else eval.device, else cpu"),
        OPT_ROW_KEY(&key_arg),
        OPT_ROW_OUT(&out, "METRICS.msgpack", "the metrics artifact"),
        {0}};
    const opt_prog prog = {.name = "eval", .opts = rows,
                           .about = "config: eval.batch_size (32), eval.batch_choices (256), eval.max_input_len (512),\n"
                                    "eval.max_target_len (128), eval.max_examples (0: all)"};
    opts_parse(&prog, argc - 1, argv + 1);
    be_init_default(2);
    long bs = cfg_int(cfg, "eval.batch_size", 32, 1, 1 << 20);
    long bc = cfg_int(cfg, "eval.batch_choices", 256, 1, 1 << 20);
    long max_in = cfg_int(cfg, "eval.max_input_len", 512, 4, 1 << 16);
    long max_tgt = cfg_int(cfg, "eval.max_target_len", 128, 2, 1 << 16);
    long max_ex = cfg_int(cfg, "eval.max_examples", 0, 0, 1L << 40);
    int dev;
    const mc_ops *ops = stage_device(cfg, "eval", &dev);

    char model_key[33], ia3_key[33];
    t5_model *m = stage_load_model(model, ia3, model_key, ia3_key);

    int nd = data.n;
    char **paths = data.v;
    tok_set **sets = mallocCheck(sizeof(tok_set *) * nd);
    int64_t total_ex = 0, total_ch = 0;
    int max_choices = 1;
    for (int i = 0; i < nd; i++) {
        tok_set *s = sets[i] = stage_load_tokens(paths[i], m);
        if (!*s->task) snprintf(s->task, sizeof s->task, "%s", paths[i]);
        for (int k = 0; k < i; k++)
            if (!strcmp(sets[k]->task, s->task))
                die("%s and %s are both task '%s': the metrics are per task, so give each task once",
                    sets[k]->path, s->path, s->task);
        if (max_ex > 0 && s->n > max_ex) {
            s->n = max_ex;
            s->n_choices = s->ex_choices[max_ex];
        }
        total_ex += s->n;
        total_ch += s->n_choices;
        for (int64_t e = 0; e < s->n; e++) {
            int nc = (int)(s->ex_choices[e + 1] - s->ex_choices[e]);
            if (nc > max_choices) max_choices = nc;
        }
    }
    if (bc < max_choices) bc = max_choices;

    char run_key[33];
    if (key_arg) {
        snprintf(run_key, sizeof run_key, "%s", key_arg);
    } else {
        mc_key *k = key_new_self("eval", cfg, (const char *[]){"eval", NULL});
        if (*model_key) key_input(k, "model", model_key);
        if (*ia3_key) key_input(k, "ia3", ia3_key);
        tok_key_inputs(k, "data", sets, nd, 0);
        dev_key(k, cfg, "eval.device", dev);
        key_digest(k, run_key);
        key_free(k);
    }

    tok_batch tb;
    tok_batch_init(&tb, (int)bs, (int)max_in, (int)bc, (int)max_tgt);
    t5_to_device(m, ops);
    t5_freeze_params(m); /* the weights stay as loaded: their packed form is kept */
    t5_alloc_acts(m, (int)bs, (int)max_in, (int)bc, (int)max_tgt, T5_ACTS_SCORE);
    float *scores = mallocCheck(sizeof(float) * (total_ch + 1));
    int *pred = mallocCheck(sizeof(int) * (total_ex + 1));
    double *acc = mallocCheck(sizeof(double) * nd);
    mc_progress pr;
    progress_init(&pr, "eval", total_ex, "examples");
    int64_t eo = 0, co = 0;
    for (int i = 0; i < nd; i++) {
        tok_set *s = sets[i];
        int64_t right = 0;
        int64_t *order = tok_length_order(s);
        for (int64_t e = 0; e < s->n; e += bs) {
            int64_t cnt = s->n - e < bs ? s->n - e : bs;
            /* scores by the set's own choice numbers, predictions by example */
            tok_rank_order(m, s, order, e, cnt, &tb, scores + co, pred + eo);
            progress_update(&pr, eo + e + cnt, NULL);
        }
        free(order);
        for (int64_t e = 0; e < s->n; e++) right += pred[eo + e] == s->label[e];
        acc[i] = (double)right / s->n;
        eo += s->n;
        co += s->n_choices;
    }
    progress_finish(&pr, NULL);

    mc_val *meta = val_map();
    val_set_str(meta, "stage", "eval");
    mc_val *am = val_set_map(meta, "accuracy"), *nm = val_set_map(meta, "n_examples");
    double avg = 0;
    for (int i = 0; i < nd; i++) {
        val_set_float(am, sets[i]->task, acc[i]);
        val_set_int(nm, sets[i]->task, sets[i]->n);
        avg += acc[i];
    }
    avg /= nd;
    val_set_float(meta, "average", avg);
    mc_val *inputs = val_set_map(meta, "inputs");
    val_set_str(inputs, "model", model_key);
    if (ia3) val_set_str(inputs, "ia3", ia3_key);
    mc_val *dl = val_set_array(inputs, "data");
    for (int i = 0; i < nd; i++) val_push(dl, val_str(sets[i]->key));
    art_writer *w = art_writer_open(out, "metrics", run_key, meta, 2);
    val_free(meta);
    if (!w) die("%s", mc_error());
    int64_t sc[1] = {total_ch}, sp[1] = {total_ex};
    if (art_writer_tensor(w, "choice_scores", ART_F32, 1, sc, scores) < 0 ||
        art_writer_tensor(w, "prediction", ART_I32, 1, sp, pred) < 0) {
        art_writer_abort(w);
        die("%s", mc_error());
    }
    if (art_writer_close(w) < 0) die("%s", mc_error());

    printf("%-24s %9s %9s %9s\n", "task", "examples", "accuracy", "majority");
    for (int i = 0; i < nd; i++) {
        tok_set *s = sets[i];
        /* majority: the most frequent gold label index */
        int64_t best = 0;
        int64_t *cnt = callocCheck(max_choices, sizeof(int64_t));
        for (int64_t e = 0; e < s->n; e++) cnt[s->label[e]]++;
        for (int c = 0; c < max_choices; c++)
            if (cnt[c] > best) best = cnt[c];
        free(cnt);
        printf("%-24s %9lld %9.4f %9.4f\n", s->task, (long long)s->n, acc[i], (double)best / s->n);
    }
    printf("%-24s %9lld %9.4f\n", "average", (long long)total_ex, avg);

    free(scores), free(pred), free(acc);
    tok_batch_free(&tb);
    for (int i = 0; i < nd; i++) tok_free(sets[i]);
    free(sets);
    t5_free(m);
    cfg_free(cfg);
    return 0;
}
