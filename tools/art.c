/* art - look inside mats-c artifacts.
 *
 *   art show FILE [--all]     kind, key, meta, and a table of tensors
 *   art verify FILE...        check every file; one line each; exit 1 if any is bad
 *   art diff A B [--tol X]    max abs / rel difference per tensor; with --tol,
 *                             exit 1 when any difference exceeds X (relative)
 *   art corr A B              Pearson correlation of each tensor of A with B's
 *                             tensor of that name, their mean, minimum, and the
 *                             correlation over all elements pooled
 *   art import-hf DIR -o MODEL.msgpack [--vocab VOCAB.msgpack | --no-vocab] [--like BASE.msgpack] [--key HEX]
 *                             a Hugging Face T5 checkpoint directory (config.json,
 *                             model.safetensors or shards + index, spiece.model)
 *                             -> `model` artifact, and when DIR has spiece.model a
 *                             `vocab` artifact (default MODEL.vocab.msgpack); --like:
 *                             refuse a checkpoint shaped unlike BASE
 *   art key FILE...           the key each (verified) artifact was written under
 *   art import-spm SPIECE.model -o VOCAB.msgpack [--extra-ids N]
 *                             a SentencePiece model -> `vocab` artifact (N sentinel
 *                             ids after its pieces; default 100 unless it has
 *                             <extra_id_0>)
 *   art import-hf ADAPTER_DIR --base MODEL.msgpack -o A.msgpack [--key HEX]
 *                             a PEFT IA3 adapter (adapter_config.json,
 *                             adapter_model.safetensors) -> `ia3` artifact
 *   art export-hf MODEL.msgpack [--ia3 A.msgpack --fold|--adapter]
 *                 [--dtype f32|bf16|f16] [--vocab VOCAB.msgpack] [--tied] DIR
 *                             -> DIR/config.json, DIR/model.safetensors (and
 *                             DIR/ia3-adapter/ with --adapter), loadable by
 *                             transformers' T5ForConditionalGeneration (lib/hf.h)
 *   art from-checkpoint CKPT --like MODEL.msgpack -o OUT.msgpack
 *                             the weights of a train checkpoint (a run in
 *                             progress, or one stopped) as a `model` artifact
 *                             shaped like MODEL: to evaluate a long run midway
 *   art round-bf16 MODEL.msgpack --key HEX -o OUT.msgpack
 *                             every f32 tensor rounded to the nearest bfloat16
 *                             (ties to even), still stored as f32: the low 16
 *                             bits of each value are zero, so the file
 *                             compresses to about half (release/, docs/base.md)
 *   art export-jsonl EXAMPLES.msgpack -o OUT.jsonl
 *                             an `examples` artifact (prepare's: one task and
 *                             split) -> our JSON Lines, one {"input", "choices",
 *                             "label"} object per example, as tokenize --jsonl
 *                             and recipes read them
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "common.h"
#include "hf.h"
#include "json.h"
#include "opts.h"
#include "t5.h"
#include "val.h"

static const char USAGE[] =
    "art show FILE [--all]\n"
    "       art verify FILE...\n"
    "       art diff A B [--tol X]\n"
    "       art corr A B\n"
    "       art import-hf DIR -o MODEL.msgpack [--vocab VOCAB.msgpack | --no-vocab] [--like BASE.msgpack] [--key HEX]\n"
    "       art import-hf ADAPTER_DIR --base MODEL.msgpack -o IA3.msgpack [--key HEX]\n"
    "       art export-hf MODEL.msgpack [--ia3 A.msgpack --fold|--adapter] [--dtype f32|bf16|f16]\n"
    "                     [--vocab VOCAB.msgpack] [--tied] DIR\n"
    "       art import-spm SPIECE.model -o VOCAB.msgpack [--extra-ids N]\n"
    "       art export-jsonl EXAMPLES.msgpack -o OUT.jsonl\n"
    "       art from-checkpoint CKPT --like MODEL.msgpack -o OUT.msgpack\n"
    "       art round-bf16 MODEL.msgpack --key HEX -o OUT.msgpack\n"
    "       art key FILE...\n"
    "       art COMMAND --help: that command's options";

static void shape_str(const art_tensor *t, char *out, size_t n) {
    size_t p = snprintf(out, n, "[");
    for (int i = 0; i < t->ndim && p < n; i++) p += snprintf(out + p, n - p, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (p < n) snprintf(out + p, n - p, "]");
}

/* Square statistic matrices ([d, d] blocks and Grams) also get their trace
 * and diagonal range. */
static int is_square_stat(const art_file *a, const art_tensor *t) {
    return t->ndim == 2 && t->shape[0] == t->shape[1] &&
           (!strcmp(a->kind, "gram") || !strcmp(a->kind, "fisher_block"));
}

static int cmd_show(int argc, char **argv) {
    const char *file = NULL;
    int all = 0;
    opt_spec rows[] = {
        {.name = "FILE", .kind = OPT_STR, .dst = &file, .flags = OPT_REQUIRED, .help = "the artifact"},
        {.name = "--all", .kind = OPT_FLAG, .dst = &all, .help = "every tensor (default: the first 200)"},
        {0}};
    const opt_prog prog = {.name = "art show", .opts = rows,
                           .about = "prints kind, key, meta and a table of tensors (dtype, shape, norm, min, max; "
                                    "trace and diagonal range of Grams and Fisher blocks)"};
    opts_parse(&prog, argc, argv);
    art_file *a = art_open(file, NULL);
    if (!a) die("%s", mc_error());
    char hex[33];
    art_hex(a->digest, hex);
    printf("file    %s\nkind    %s\nkey     %s\nxxh3    %s\nmeta    ", a->path, a->kind,
           a->key[0] ? a->key : "(none)", hex);
    val_print(a->meta, stdout, 8);
    printf("\ntensors %zu\n", a->n_tensors);
    int stat = 0;
    for (size_t i = 0; i < a->n_tensors; i++) stat |= is_square_stat(a, &a->tensors[i]);
    size_t w = 4;
    for (size_t i = 0; i < a->n_tensors; i++)
        if (strlen(a->tensors[i].name) > w) w = strlen(a->tensors[i].name);
    if (w > 72) w = 72;
    printf("  %-*s %-5s %-18s %12s %12s %12s%s\n", (int)w, "name", "dtype", "shape", "norm", "min", "max",
           stat ? "        trace    diag min    diag max" : "");
    size_t shown = 0;
    double total = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *t = &a->tensors[i];
        total += t->numel;
        if (!all && shown >= 200) continue;
        shown++;
        float *x = art_tensor_f32(t);
        double ss = 0, mn = INFINITY, mx = -INFINITY;
        for (int64_t j = 0; j < t->numel; j++) {
            ss += (double)x[j] * x[j];
            if (x[j] < mn) mn = x[j];
            if (x[j] > mx) mx = x[j];
        }
        char sh[64];
        shape_str(t, sh, sizeof sh);
        if (t->numel == 0) { mn = mx = NAN; }
        printf("  %-*s %-5s %-18s %12.5g %12.5g %12.5g", (int)w, t->name, art_dtype_name(t->dtype), sh,
               sqrt(ss), mn, mx);
        if (is_square_stat(a, t)) {
            int64_t d = t->shape[0];
            double tr = 0, dmn = INFINITY, dmx = -INFINITY;
            for (int64_t j = 0; j < d; j++) {
                double v = x[j * d + j];
                tr += v;
                if (v < dmn) dmn = v;
                if (v > dmx) dmx = v;
            }
            printf(" %12.5g %11.4g %11.4g", tr, dmn, dmx);
        }
        printf("\n");
        free(x);
    }
    if (shown < a->n_tensors) printf("  ... %zu more (art show FILE --all)\n", a->n_tensors - shown);
    printf("elements %.0f\n", total);
    art_close(a);
    return 0;
}

static int cmd_verify(int argc, char **argv) {
    opt_list files = {0};
    opt_spec rows[] = {{.name = "FILE", .kind = OPT_LIST, .dst = &files, .flags = OPT_REQUIRED, .help = "artifacts"}, {0}};
    const opt_prog prog = {.name = "art verify", .opts = rows,
                           .about = "checks every file's checksum and structure; one line each; exit 1 if any is bad"};
    opts_parse(&prog, argc, argv);
    argc = files.n, argv = files.v;
    int bad = 0;
    for (int i = 0; i < argc; i++) {
        art_file *a = art_open(argv[i], NULL);
        if (!a) {
            fprintf(stderr, "art: %s\n", mc_error());
            bad = 1;
            continue;
        }
        printf("ok %s (%s, %zu tensors)\n", argv[i], a->kind, a->n_tensors);
        art_close(a);
    }
    return bad;
}

/* A tensor's values as doubles (f64 exactly); caller frees. */
static double *as_f64(const art_tensor *t) {
    double *x = mallocCheck(sizeof(double) * (size_t)(t->numel ? t->numel : 1));
    if (t->dtype == ART_F64) {
        art_tensor_copy(t, x);
        return x;
    }
    float *f = art_tensor_f32(t);
    for (int64_t j = 0; j < t->numel; j++) x[j] = f[j];
    free(f);
    return x;
}

/* The larger of a and b, NaN when either is NaN (a NaN is never "smaller"). */
static double max_nan(double a, double b) { return isnan(a) || isnan(b) ? NAN : b > a ? b : a; }

/* The two positional rows of a command on artifacts A and B. */
#define PAIR_ROWS(pa, pb, b_help)                                                                     \
    {.name = "A", .kind = OPT_STR, .dst = (pa), .flags = OPT_REQUIRED, .help = "an artifact"},       \
    {.name = "B", .kind = OPT_STR, .dst = (pb), .flags = OPT_REQUIRED, .help = (b_help)}

/* Parse a command whose rows start with PAIR_ROWS(pa, pb, ...) and open
 * both artifacts (any kind) or die; *w: the width of the tensor column for
 * a's names (at least min_w, at most 72). */
static void open_pair(const opt_prog *prog, int argc, char **argv, const char **pa, const char **pb, art_file **a,
                      art_file **b, size_t min_w, size_t *w) {
    opts_parse(prog, argc, argv);
    if (!(*a = art_open(*pa, NULL))) die("%s", mc_error());
    if (!(*b = art_open(*pb, NULL))) die("%s", mc_error());
    *w = min_w;
    for (size_t i = 0; i < (*a)->n_tensors; i++)
        if (strlen((*a)->tensors[i].name) > *w) *w = strlen((*a)->tensors[i].name);
    if (*w > 72) *w = 72;
}

static int cmd_diff(int argc, char **argv) {
    const char *pa = NULL, *pb = NULL;
    double tol = -1;
    opt_spec rows[] = {
        PAIR_ROWS(&pa, &pb, "the artifact to compare it with"),
        {.name = "--tol", .kind = OPT_FLOAT, .dst = &tol, .arg = "X", .lo = 0, .hi = 1e300,
         .help = "exit 1 when a relative difference is above X (a NaN always is)"},
        {0}};
    const opt_prog prog = {.name = "art diff", .opts = rows,
                           .about = "prints the max abs / rel difference per tensor (rel: to the tensor's max |B|); "
                                    "nan when either tensor holds a NaN"};
    art_file *a, *b;
    size_t w;
    open_pair(&prog, argc, argv, &pa, &pb, &a, &b, 4, &w);
    int differ = 0;
    if (strcmp(a->kind, b->kind)) { printf("kind: %s vs %s\n", a->kind, b->kind); differ = 1; }
    printf("%-*s %12s %12s\n", (int)w, "tensor", "max abs", "max rel");
    double worst = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *ta = &a->tensors[i], *tb = art_find(b, ta->name);
        if (!tb) { printf("%-*s only in %s\n", (int)w, ta->name, a->path); differ = 1; continue; }
        int same_shape = ta->ndim == tb->ndim;
        for (int d = 0; same_shape && d < ta->ndim; d++) same_shape = ta->shape[d] == tb->shape[d];
        if (!same_shape) { printf("%-*s shapes differ\n", (int)w, ta->name); differ = 1; continue; }
        double *x = as_f64(ta), *y = as_f64(tb);
        double mabs = 0, mrel = 0, scale = 0;
        for (int64_t j = 0; j < ta->numel; j++) if (fabs(y[j]) > scale) scale = fabs(y[j]);
        for (int64_t j = 0; j < ta->numel; j++) {
            /* equal values (infinities too) differ by 0; a NaN in either
             * tensor makes its difference NaN for good, itself included */
            if (x[j] == y[j]) continue;
            mabs = max_nan(mabs, fabs(x[j] - y[j]));
        }
        mrel = scale > 0 ? mabs / scale : mabs;
        worst = max_nan(worst, mrel);
        printf("%-*s %12.4g %12.4g%s\n", (int)w, ta->name, mabs, mrel,
               ta->dtype != tb->dtype ? "  (dtypes differ)" : "");
        free(x);
        free(y);
    }
    for (size_t i = 0; i < b->n_tensors; i++)
        if (!art_find(a, b->tensors[i].name)) { printf("%-*s only in %s\n", (int)w, b->tensors[i].name, b->path); differ = 1; }
    printf("max rel difference %.4g (relative to each tensor's max |B|)\n", worst);
    art_close(a);
    art_close(b);
    if (tol >= 0 && (differ || !(worst <= tol))) return 1;
    return 0;
}

/* Centered sums of a pair of tensors: count, means, sums of squares and of
 * products about the means. */
typedef struct {
    double n, mx, my, sxx, syy, sxy;
} co_sums;

static co_sums co_of(const double *x, const double *y, int64_t n) {
    co_sums c = {.n = (double)n};
    for (int64_t j = 0; j < n; j++) c.mx += x[j], c.my += y[j];
    c.mx /= (double)(n ? n : 1), c.my /= (double)(n ? n : 1);
    for (int64_t j = 0; j < n; j++) {
        double dx = x[j] - c.mx, dy = y[j] - c.my;
        c.sxx += dx * dx, c.syy += dy * dy, c.sxy += dx * dy;
    }
    return c;
}

/* a and b as one sample (the pairwise combination of centered sums) */
static co_sums co_join(co_sums a, co_sums b) {
    co_sums c = {.n = a.n + b.n};
    if (c.n == 0) return c;
    double dx = b.mx - a.mx, dy = b.my - a.my, f = a.n * b.n / c.n;
    c.mx = a.mx + dx * b.n / c.n, c.my = a.my + dy * b.n / c.n;
    c.sxx = a.sxx + b.sxx + dx * dx * f, c.syy = a.syy + b.syy + dy * dy * f, c.sxy = a.sxy + b.sxy + dx * dy * f;
    return c;
}

/* Pearson's r; NaN when either side is constant */
static double co_r(co_sums c) { return c.sxx > 0 && c.syy > 0 ? c.sxy / sqrt(c.sxx * c.syy) : NAN; }

static int cmd_corr(int argc, char **argv) {
    const char *pa = NULL, *pb = NULL;
    art_file *a, *b;
    size_t w;
    opt_spec rows[] = {PAIR_ROWS(&pa, &pb, "an artifact with A's tensor names and shapes (e.g. two Fishers of one model)"),
                       {0}};
    const opt_prog prog = {.name = "art corr", .opts = rows,
                           .about = "prints Pearson's r of each tensor of A with B's of that name (nan: a constant "
                                    "tensor), then their mean and minimum and r over all elements pooled"};
    open_pair(&prog, argc, argv, &pa, &pb, &a, &b, 6, &w);
    printf("%-*s %12s %10s\n", (int)w, "tensor", "elements", "pearson");
    co_sums all = {0};
    double sum_r = 0, min_r = INFINITY;
    int nr = 0;
    const char *min_name = "-";
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *ta = &a->tensors[i], *tb = art_find(b, ta->name);
        if (!tb) die("tensor '%s' of %s is not in %s: give two artifacts of one model", ta->name, pa, pb);
        int same_shape = ta->ndim == tb->ndim;
        for (int d = 0; same_shape && d < ta->ndim; d++) same_shape = ta->shape[d] == tb->shape[d];
        if (!same_shape) die("tensor '%s' has another shape in %s than in %s: give two artifacts of one model", ta->name, pa, pb);
        double *x = as_f64(ta), *y = as_f64(tb);
        co_sums c = co_of(x, y, ta->numel);
        free(x), free(y);
        double r = co_r(c);
        all = co_join(all, c);
        printf("%-*s %12lld %10.4f\n", (int)w, ta->name, (long long)ta->numel, r);
        if (isnan(r)) continue;
        sum_r += r, nr++;
        if (r < min_r) min_r = r, min_name = ta->name;
    }
    if (a->n_tensors != b->n_tensors)
        die("%s has %zu tensors and %s %zu: give two artifacts of one model", pa, a->n_tensors, pb, b->n_tensors);
    printf("pearson over %d tensors: mean %.4f, min %.4f (%s); all %.0f elements pooled %.4f\n", nr,
           nr ? sum_r / nr : NAN, nr ? min_r : NAN, min_name, all.n, co_r(all));
    art_close(a);
    art_close(b);
    return 0;
}

static int cmd_import_hf(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *vocab = NULL, *key = NULL, *base = NULL, *like = NULL;
    int no_vocab = 0;
    opt_spec rows[] = {
        {.name = "DIR", .kind = OPT_STR, .dst = &dir, .flags = OPT_REQUIRED | OPT_INPUT_DIR,
         .help = "a Hugging Face T5 checkpoint (config.json, model.safetensors or shards, spiece.model) or a PEFT "
                 "IA3 adapter (adapter_config.json, adapter_model.safetensors)"},
        OPT_ROW_OUT(&out, "MODEL.msgpack", "the model (or ia3) artifact"),
        {.name = "--vocab", .kind = OPT_STR, .dst = &vocab, .arg = "VOCAB.msgpack", .flags = OPT_OUTPUT,
         .help = "where the tokenizer's vocab artifact goes (default: MODEL.vocab.msgpack when DIR has spiece.model)"},
        {.name = "--no-vocab", .kind = OPT_FLAG, .dst = &no_vocab, .help = "write no vocab artifact"},
        {.name = "--like", .kind = OPT_STR, .dst = &like, .arg = "BASE.msgpack", .flags = OPT_INPUT,
         .help = "refuse a checkpoint shaped unlike BASE"},
        {.name = "--base", .kind = OPT_STR, .dst = &base, .arg = "MODEL.msgpack", .flags = OPT_INPUT,
         .help = "a PEFT adapter's base model (its key goes into meta.base)"},
        OPT_ROW_KEY(&key),
        {0}};
    const opt_prog prog = {.name = "art import-hf", .opts = rows,
                           .usage = "art import-hf DIR -o MODEL.msgpack [--vocab VOCAB.msgpack | --no-vocab] "
                                    "[--like BASE.msgpack] [--key HEX]\n"
                                    "       art import-hf ADAPTER_DIR --base MODEL.msgpack -o IA3.msgpack [--key HEX]"};
    opts_parse(&prog, argc, argv);
    char adapter[4200];
    snprintf(adapter, sizeof adapter, "%s/adapter_config.json", dir);
    FILE *f = fopen(adapter, "rb");
    if (f) {
        fclose(f);
        if (!base) die("%s: a PEFT adapter: give its base model with --base MODEL.msgpack", dir);
        if (vocab) die("%s: a PEFT adapter has no tokenizer: drop --vocab", dir);
        if (hf_import_ia3(dir, base, out, key) < 0) die("%s", mc_error());
        fprintf(stderr, "import-hf: IA3 adapter %s -> %s\n", dir, out);
        return 0;
    }
    if (base) die("%s: --base is for PEFT IA3 adapters, and there is no adapter_config.json here (--like BASE checks a full fine-tune's shapes)", dir);
    /* the tokenizer goes beside the model unless told otherwise:
     * MODEL.msgpack -> MODEL.vocab.msgpack */
    char vpath[4200];
    if (vocab && no_vocab) die("import-hf: --vocab and --no-vocab contradict each other");
    snprintf(adapter, sizeof adapter, "%s/spiece.model", dir);
    f = fopen(adapter, "rb");
    if (f) fclose(f);
    if (!vocab && !no_vocab && f) {
        size_t n = strlen(out);
        if (n > 8 && !strcmp(out + n - 8, ".msgpack")) n -= 8;
        snprintf(vpath, sizeof vpath, "%.*s.vocab.msgpack", (int)n, out);
        vocab = vpath;
        opt_input in = {"DIR", dir, 1};
        if (opts_check_output("the vocab beside -o", vocab, 0, &in, 1) < 0) die("%s", mc_error());
    }
    hf_import_opts o = {key, vocab, 1, like};
    if (hf_import(dir, out, &o) < 0) die("%s", mc_error());
    return 0;
}

static int cmd_key(int argc, char **argv) {
    opt_list files = {0};
    opt_spec rows[] = {{.name = "FILE", .kind = OPT_LIST, .dst = &files, .flags = OPT_REQUIRED, .help = "artifacts"}, {0}};
    const opt_prog prog = {.name = "art key", .opts = rows, .about = "prints the key each (verified) artifact was written under"};
    opts_parse(&prog, argc, argv);
    argc = files.n, argv = files.v;
    for (int i = 0; i < argc; i++) {
        art_file *a = art_open(argv[i], NULL);
        if (!a) die("%s", mc_error());
        printf("%s\n", a->key);
        art_close(a);
    }
    return 0;
}

static int cmd_import_spm(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    long extra = -1;
    opt_spec rows[] = {
        {.name = "SPIECE.model", .kind = OPT_STR, .dst = &in, .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "a SentencePiece model"},
        OPT_ROW_OUT(&out, "VOCAB.msgpack", "the vocab artifact"),
        {.name = "--extra-ids", .kind = OPT_INT, .dst = &extra, .arg = "N", .lo = 0, .hi = 10000,
         .help = "sentinel ids after the pieces; default 100 unless the model has <extra_id_0>"},
        {0}};
    const opt_prog prog = {.name = "art import-spm", .opts = rows};
    opts_parse(&prog, argc, argv);
    if (hf_write_vocab(in, out, (int)extra, 0) < 0) die("%s", mc_error());
    fprintf(stderr, "import-spm: %s -> %s\n", in, out);
    return 0;
}

/* Die, naming the tensor and element, if artifact `path` holds a NaN or an
 * infinity in a float tensor: an exported checkpoint is for others to load. */
static void refuse_nonfinite(const char *what, const char *path) {
    art_file *a = art_open(path, NULL);
    if (!a) die("%s", mc_error());
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *t = &a->tensors[i];
        if (t->dtype != ART_F32 && t->dtype != ART_F64) continue;
        float *x = art_tensor_f32(t);
        long bad = mc_nonfinite_at(x, (long)t->numel);
        float v = bad >= 0 ? x[bad] : 0;
        free(x);
        if (bad >= 0)
            die("export-hf: %s %s: tensor '%s' holds %g at element %ld: a checkpoint for others must be finite; "
                "recompute it", what, path, t->name, v, bad);
    }
    art_close(a);
}

static int cmd_export_hf(int argc, char **argv) {
    const char *model = NULL, *dir = NULL;
    hf_export_opts o = {0};
    int fold = 0, adapter = 0, dtype, no_tied = 0;
    static const char *const dtypes[] = {"f32", "bf16", "f16", NULL};
    opt_spec rows[] = {
        {.name = "MODEL.msgpack", .kind = OPT_STR, .dst = &model, .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "the model artifact"},
        {.name = "DIR", .kind = OPT_STR, .dst = &dir, .flags = OPT_REQUIRED | OPT_OUTPUT_DIR,
         .help = "gets config.json and model.safetensors (and ia3-adapter/ with --adapter)"},
        {.name = "--ia3", .kind = OPT_STR, .dst = &o.ia3, .arg = "A.msgpack", .flags = OPT_INPUT,
         .help = "IA3 vectors: with --fold or --adapter"},
        {.name = "--fold", .kind = OPT_FLAG, .dst = &fold, .help = "scale by --ia3 in place: the rows of k, v and wi_1 (on the original T5 layout wo's columns)"},
        {.name = "--adapter", .kind = OPT_FLAG, .dst = &adapter, .help = "write --ia3 as PEFT IA3 files"},
        {.name = "--dtype", .kind = OPT_CHOICE, .dst = &dtype, .arg = "f32|bf16|f16", .choices = dtypes, .def = "f32",
         .help = "the weights' dtype"},
        {.name = "--vocab", .kind = OPT_STR, .dst = &o.vocab, .arg = "VOCAB.msgpack", .flags = OPT_INPUT,
         .help = "write its SentencePiece model as spiece.model"},
        {.name = "--tied", .kind = OPT_FLAG, .dst = &o.tied,
         .help = "also write encoder/decoder.embed_tokens.weight, copies of shared.weight (save_pretrained "
                 "writes only shared.weight)"},
        {.name = "--no-tied", .kind = OPT_FLAG, .dst = &no_tied,
         .help = "omit those copies: the default (kept for scripts that say it)"},
        {0}};
    const opt_prog prog = {.name = "art export-hf", .opts = rows};
    opts_parse(&prog, argc, argv);
    if (fold && adapter) die("export-hf: --fold and --adapter exclude each other: give one");
    if (o.tied && no_tied) die("export-hf: --tied and --no-tied contradict each other: give one");
    o.ia3_mode = fold ? HF_IA3_FOLD : adapter ? HF_IA3_ADAPTER : o.ia3_mode;
    int d = st_dtype_parse(dtypes[dtype]);
    if (d < 0) die("export-hf: --dtype %s is not known to the exporter", dtypes[dtype]);
    o.dtype = (st_dtype)d;
    if (o.ia3_mode && !o.ia3) die("export-hf: --fold and --adapter need --ia3 A.msgpack");
    if (o.ia3 && !o.ia3_mode) die("export-hf: --ia3 needs --fold (scale k, v, wi_1 or wo in place) or --adapter (PEFT IA3 files)");
    refuse_nonfinite("MODEL", model);
    if (o.ia3) refuse_nonfinite("--ia3", o.ia3);
    if (hf_export(model, dir, &o) < 0) die("%s", mc_error());
    fprintf(stderr, "export-hf: %s%s%s -> %s (%s)\n", model, o.ia3 ? " + " : "", o.ia3 ? o.ia3 : "", dir,
            st_dtype_name(o.dtype));
    return 0;
}

/* A train checkpoint's weights (the flat parameter block, in the model's
 * table order) written as a `model` artifact with the configuration of the
 * --like model, which fixes the tensor table and so the split of the block. */
static int cmd_from_checkpoint(int argc, char **argv) {
    const char *ckpt = NULL, *like = NULL, *out = NULL;
    opt_spec rows[] = {
        {.name = "CKPT", .kind = OPT_STR, .dst = &ckpt, .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "a train_checkpoint artifact (RUN.msgpack.ckpt in the cache's train/)"},
        {.name = "--like", .kind = OPT_STR, .dst = &like, .arg = "MODEL.msgpack", .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "a model of the run's configuration (e.g. the base it started from, or any model of that size)"},
        OPT_ROW_OUT(&out, "OUT.msgpack", "the model artifact"),
        {0}};
    const opt_prog prog = {.name = "art from-checkpoint", .opts = rows};
    opts_parse(&prog, argc, argv);
    char like_key[33];
    t5_model *m = t5_load_model(like, 0, 0, like_key);
    if (!m) die("%s", mc_error());
    art_file *a = art_open(ckpt, "train_checkpoint");
    if (!a) die("%s", mc_error());
    const art_tensor *t = art_find(a, "weights");
    if (!t || t->dtype != ART_F32)
        die("from-checkpoint: %s has no f32 tensor 'weights': not a checkpoint of a full run (an IA3 run's "
            "holds its vectors only)", ckpt);
    if ((size_t)t->numel != m->n_params)
        die("from-checkpoint: %s holds %lld weights, the model of %s has %zu: give --like a model of the "
            "run's configuration", ckpt, (long long)t->numel, like, m->n_params);
    art_tensor_copy(t, m->params);
    long bad = mc_nonfinite_at(m->params, (long)m->n_params);
    if (bad >= 0) die("from-checkpoint: %s: weight %ld is %g: the run diverged; take an earlier checkpoint", ckpt,
                      bad, m->params[bad]);
    mc_val *meta = val_map();
    val_set_str(meta, "from_checkpoint", val_get_str(a->meta, "run", ""));
    val_set_int(meta, "step", val_get_int(a->meta, "step", -1));
    long step = (long)val_get_int(a->meta, "step", -1);
    art_close(a);
    if (t5_save_model(m, out, "", meta) < 0) die("%s", mc_error());
    val_free(meta);
    t5_free(m);
    fprintf(stderr, "from-checkpoint: %s (step %ld) -> %s\n", ckpt, step, out);
    return 0;
}

/* Every f32 tensor of a model rounded to bfloat16 (hf_f32_to_bf16: to
 * nearest, ties to even) and widened back, exactly, to f32; the rest as it
 * is. The output is keyed by --key (the caller's key of the rounding, e.g.
 * scripts/base-release.sh's), meta.rounded_from names the input's key. */
static int cmd_round_bf16(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *key = NULL;
    opt_spec rows[] = {
        {.name = "MODEL.msgpack", .kind = OPT_STR, .dst = &in, .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "a model artifact"},
        {.name = "--key", .kind = OPT_STR, .dst = &key, .arg = "HEX", .flags = OPT_REQUIRED,
         .help = "the key to write the rounded model under (32 hex digits)"},
        OPT_ROW_OUT(&out, "OUT.msgpack", "the rounded model"),
        {0}};
    const opt_prog prog = {.name = "art round-bf16", .opts = rows};
    opts_parse(&prog, argc, argv);
    if (strlen(key) != 32 || strspn(key, "0123456789abcdef") != 32)
        die("round-bf16: --key '%s' is not 32 lowercase hex digits", key);
    art_file *a = art_open(in, "model");
    if (!a) die("%s", mc_error());
    if (val_get(a->meta, "rounded_from")) die("round-bf16: %s is rounded already (meta.rounded_from)", in);
    if (!strcmp(key, a->key))
        die("round-bf16: --key %s is %s's own key: the rounded model needs a key of its own (its rounding's)", key, in);
    mc_val *meta = val_clone(a->meta);
    val_set_str(meta, "rounded_from", a->key);
    val_set_str(meta, "rounding", "bf16");
    art_writer *w = art_writer_open(out, a->kind, key, meta, a->n_tensors);
    if (!w) die("%s", mc_error());
    long rounded = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *t = &a->tensors[i];
        void *x = mallocCheck(t->nbytes ? t->nbytes : 1);
        art_tensor_copy(t, x);
        if (t->dtype == ART_F32) {
            float *f = x;
            long bad = mc_nonfinite_at(f, (long)t->numel);
            if (bad >= 0) {
                art_writer_abort(w);
                die("round-bf16: %s: tensor '%s' holds %g at element %ld: round a finite model", in, t->name,
                    f[bad], bad);
            }
            for (int64_t j = 0; j < t->numel; j++) {
                float r = hf_bf16_to_f32(hf_f32_to_bf16(f[j]));
                if (isinf(r)) {
                    art_writer_abort(w);
                    die("round-bf16: %s: tensor '%s' holds %g at element %lld, beyond bfloat16's range: it would "
                        "round to infinity", in, t->name, f[j], (long long)j);
                }
                f[j] = r;
            }
            rounded += (long)t->numel;
        }
        if (art_writer_tensor(w, t->name, t->dtype, t->ndim, t->shape, x) < 0) {
            art_writer_abort(w);
            die("%s", mc_error());
        }
        free(x);
    }
    if (art_writer_close(w) < 0) die("%s", mc_error());
    fprintf(stderr, "round-bf16: %s -> %s (%ld values rounded to bfloat16, key %s)\n", in, out, rounded, key);
    val_free(meta);
    art_close(a);
    return 0;
}

/* Row r of a ragged text pair (art_read_text). */
static void text_row(const char *bytes, const int64_t *off, int64_t r, const char **s, size_t *n) {
    *s = bytes + off[r];
    *n = (size_t)(off[r + 1] - off[r]);
}

static int cmd_export_jsonl(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    opt_spec rows[] = {
        {.name = "EXAMPLES.msgpack", .kind = OPT_STR, .dst = &in, .flags = OPT_REQUIRED | OPT_INPUT,
         .help = "an examples artifact (prepare writes one per task and split)"},
        OPT_ROW_OUT(&out, "OUT.jsonl", "our JSON Lines: {\"input\": ..., \"choices\": [...], \"label\": i} per example"),
        {0}};
    const opt_prog prog = {.name = "art export-jsonl", .opts = rows};
    opts_parse(&prog, argc, argv);
    art_file *a = art_open(in, "examples");
    if (!a) die("%s", mc_error());
    const char *it, *ct;
    int64_t *io, *co, n, nc, *ex;
    int32_t *label;
    if (art_read_text(a, "input_text", "input_offsets", &it, &io, &n) < 0 ||
        art_read_text(a, "choice_text", "choice_offsets", &ct, &co, &nc) < 0 || art_read_rows(a, n, &ex, &label) < 0)
        die("export-jsonl: %s", mc_error());
    json_buf b = {0};
    for (int64_t e = 0; e < n; e++) {
        const char *s;
        size_t len;
        text_row(it, io, e, &s, &len);
        jb_puts(&b, "{\"input\": ");
        jb_str(&b, s, len);
        jb_puts(&b, ", \"choices\": [");
        for (int64_t c = ex[e]; c < ex[e + 1]; c++) {
            text_row(ct, co, c, &s, &len);
            if (c > ex[e]) jb_puts(&b, ", ");
            jb_str(&b, s, len);
        }
        if (label[e] < 0 || label[e] >= ex[e + 1] - ex[e])
            die("export-jsonl: %s: example %lld has label %d of %lld choices", in, (long long)e, label[e],
                (long long)(ex[e + 1] - ex[e]));
        jb_printf(&b, "], \"label\": %d}\n", label[e]);
    }
    if (mc_write_atomic(out, b.s ? b.s : "", b.len) < 0) die("%s", mc_error());
    fprintf(stderr, "export-jsonl: %s (%s %s, %lld examples) -> %s\n", in, val_get_str(a->meta, "task", "?"),
            val_get_str(a->meta, "split", "?"), (long long)n, out);
    jb_free(&b);
    free(io), free(co), free(ex), free(label);
    art_close(a);
    return 0;
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fprintf(argc < 2 ? stderr : stdout, "usage: %s\n", USAGE);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "show")) return cmd_show(argc - 2, argv + 2);
    if (!strcmp(argv[1], "verify")) return cmd_verify(argc - 2, argv + 2);
    if (!strcmp(argv[1], "diff")) return cmd_diff(argc - 2, argv + 2);
    if (!strcmp(argv[1], "corr")) return cmd_corr(argc - 2, argv + 2);
    if (!strcmp(argv[1], "import-hf")) return cmd_import_hf(argc - 2, argv + 2);
    if (!strcmp(argv[1], "export-hf")) return cmd_export_hf(argc - 2, argv + 2);
    if (!strcmp(argv[1], "export-jsonl")) return cmd_export_jsonl(argc - 2, argv + 2);
    if (!strcmp(argv[1], "import-spm")) return cmd_import_spm(argc - 2, argv + 2);
    if (!strcmp(argv[1], "key")) return cmd_key(argc - 2, argv + 2);
    if (!strcmp(argv[1], "round-bf16")) return cmd_round_bf16(argc - 2, argv + 2);
    if (!strcmp(argv[1], "from-checkpoint")) return cmd_from_checkpoint(argc - 2, argv + 2);
    die("unknown command '%s': show, verify, diff, corr, key, import-hf, import-spm, export-hf, export-jsonl, "
        "from-checkpoint or round-bf16 (see art --help)",
        argv[1]);
}
