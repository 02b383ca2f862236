/* merge_pp.h - RegMean++ (merge --method regmean_pp): RegMean, layer by
 * layer, on Grams measured through the layers already merged.
 *
 * RegMean merges each linear W from the N models' weights W_i and the Grams
 * G_i of its inputs on task i's data, all measured on model i. RegMean++
 * measures them on the merge as it grows. The model is cut into layers, in
 * the order the forward pass runs them:
 *
 *   encoder.block.0 .. encoder.block.{L-1} (the last with
 *   encoder.final_layer_norm), decoder.block.0 .. decoder.block.{Ld-1},
 *   then decoder.final_layer_norm with lm_head.
 *
 * shared.weight (the embedding) is the models' mean before the first layer.
 * For layer l and each model i, task i's examples run through a model made
 * of the merge for every layer before l and model i's own layer l: the
 * input Grams of layer l's linears come from there (so a linear inside the
 * layer sees what model i's layer makes of the merged features: RegMean++'s
 * intra- and cross-layer dependencies). Layer l's linears are then solved as
 * RegMean solves them (Grams' off-diagonals scaled by lambda, each Gram the
 * mean over its stream's real tokens, the summed system in double, a ridge
 * towards the models' mean where it is singular); its other tensors (norms,
 * the relative position tables of block 0) are the models' mean. The
 * decoder layers read the merged encoder's output.
 *
 * Each task's hidden states are kept between layers (t5_forward_layer):
 * per layer and model, model i's layer runs once on its task's states for
 * the Grams and the merged layer once more to move them on, so the whole
 * merge costs about 2 N forward passes (RegMean's Grams: N), and holds
 * examples x input length x d_model floats per task. The result is that of
 * a full forward per layer and model, to the bit.
 */
#ifndef MC_MERGE_PP_H
#define MC_MERGE_PP_H

#include "t5.h"
#include "tokens.h"
#include "val.h"

typedef struct {
    long examples;      /* the first `examples` of each task set (fewer if it has fewer) */
    int batch, max_in, max_tgt;
    float lambda;       /* off-diagonal scale of the Grams */
    /* called with each linear's ridge (> 0) where its summed Gram was
     * singular, and < 0 where it is not positive semi-definite */
    void (*ridge)(const char *name, double ridge);
} mrg_pp_opts;

/* The RegMean++ merge of models[0..N) (full models on the CPU, one config)
 * with data[i] model i's task examples, written into merged's parameters
 * (a model of the same config; what it holds on entry is not read). */
void mrg_regmean_pp(t5_model *merged, t5_model *const *models, int N, tok_set *const *data,
                    const mrg_pp_opts *o);

/* The layer of a parameter by the order above: -1 for shared.weight, else
 * 0 .. L + Ld. */
int mrg_pp_layer(const t5_config *c, const char *name);

#endif
