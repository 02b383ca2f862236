/* merge_rules.h - per-model and per-tensor merge parameters: mergekit's
 * weights, layer gradients and filters, as `merge --rules`.
 *
 * A rule list is RULE[/RULE...], each rule
 *
 *     PARAM[.MODEL][@FILTER]:V[,V...]
 *
 *   PARAM   weight | density | gamma | lambda
 *   MODEL   1-based index into --models: the rule is that model's (weight,
 *           density, gamma); without it the rule is everyone's
 *   FILTER  the rule applies to tensors whose name contains FILTER
 *           (mergekit's `filter:`: a substring); without it, to every tensor
 *   V,...   one value, or a layer gradient: values spread evenly over the
 *           layers of each stack and interpolated linearly between them
 *
 * The value of PARAM for model i and tensor T (mr_value), as mergekit's
 * ConfigReader gives it: the first rule of model i whose filter matches T,
 * else the first model-less rule that matches, else none (the option's
 * default). A gradient is evaluated at T's position in its stack,
 *     t = I / (L - 1)   for encoder.block.I.* and decoder.block.I.* (L the
 *                       blocks of that stack; t = 1 when L = 1),
 *     t = 0             for every other tensor (embeddings, final norms,
 *                       lm_head), as mergekit's T5 architecture places them;
 * with K values v_0..v_{K-1}: s = t (K - 1), i = floor(s), j = min(K-1, i+1),
 * value = (1 - (s - i)) v_i + (s - i) v_j, in double.
 *
 * The characters of a rule list are those a make variable and a shell word
 * carry unquoted; a tensor name never holds '/', ':' or '@'. */
#ifndef MC_MERGE_RULES_H
#define MC_MERGE_RULES_H

typedef enum { MR_WEIGHT = 0, MR_DENSITY = 1, MR_GAMMA = 2, MR_LAMBDA = 3, MR_NPARAMS = 4 } mr_param;
#define MR_P(p) (1u << (p))

extern const char *const mr_param_names[MR_NPARAMS];

typedef struct {
    mr_param param;
    int model;      /* 1-based; 0: every model (or a global parameter) */
    char *filter;   /* NULL: every tensor */
    int nv;         /* values: 1, or a gradient of nv >= 2 */
    double *v;
} mr_rule;

typedef struct {
    int n;
    mr_rule *r;
    int layers[2]; /* blocks of the encoder and decoder stacks (mr_set_layers) */
} mr_rules;

/* 1 if s can be a FILTER: a non-empty part of a tensor name (letters,
 * digits, '.', '_', '-'), else 0. */
int mr_filter_ok(const char *s);

/* Parse a rule list for n_models models ("" or NULL: none). 0, or -1 with
 * mc_error() naming the rule and what is wrong. Values must be finite. */
int mr_parse(const char *s, int n_models, mr_rules *out);
void mr_free(mr_rules *R);

/* The encoder and decoder stacks' blocks, from the tensor names (the
 * largest encoder.block.I / decoder.block.I plus one). */
void mr_set_layers(mr_rules *R, const char *const *names, int n);

/* t of tensor `name` (above). */
double mr_position(const mr_rules *R, const char *name);

/* The value of `param` for model i (1-based; 0 asks for the model-less
 * rules only) and tensor `name`: 1 and *out set when a rule gives it, 0
 * when none does. */
int mr_value(const mr_rules *R, mr_param param, int model, const char *name, double *out);

/* Does any rule set `param`? With `varying`, only rules with a filter or a
 * gradient count (those that make the value differ between tensors). */
int mr_has(const mr_rules *R, mr_param param, int varying);

#endif
