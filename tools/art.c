/* art - look inside mats-c artifacts.
 *
 *   art show FILE [--all]     kind, key, meta, and a table of tensors
 *   art verify FILE...        check every file; one line each; exit 1 if any is bad
 *   art diff A B [--tol X]    max abs / rel difference per tensor; with --tol,
 *                             exit 1 when any difference exceeds X (relative)
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
 *                 [--dtype f32|bf16|f16] [--vocab VOCAB.msgpack] [--no-tied] DIR
 *                             -> DIR/config.json, DIR/model.safetensors (and
 *                             DIR/ia3-adapter/ with --adapter), loadable by
 *                             transformers' T5ForConditionalGeneration (lib/hf.h)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "common.h"
#include "hf.h"

static void usage(void) {
    fprintf(stderr,
            "usage: art show FILE [--all]\n"
            "       art verify FILE...\n"
            "       art diff A B [--tol X]\n"
            "       art import-hf DIR -o MODEL.msgpack [--vocab VOCAB.msgpack | --no-vocab] [--like BASE.msgpack] [--key HEX]\n"
            "       art import-hf ADAPTER_DIR --base MODEL.msgpack -o IA3.msgpack [--key HEX]\n"
            "       art export-hf MODEL.msgpack [--ia3 A.msgpack --fold|--adapter] [--dtype f32|bf16|f16]\n"
            "                     [--vocab VOCAB.msgpack] [--no-tied] DIR\n"
            "       art import-spm SPIECE.model -o VOCAB.msgpack [--extra-ids N]\n"
            "       art key FILE...\n");
    exit(2);
}

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
    if (argc < 1) usage();
    int all = argc > 1 && !strcmp(argv[1], "--all");
    art_file *a = art_open(argv[0], NULL);
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
    if (argc < 1) usage();
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

static int cmd_diff(int argc, char **argv) {
    if (argc < 2) usage();
    double tol = -1;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--tol") && i + 1 < argc) tol = atof(argv[++i]);
        else usage();
    }
    art_file *a = art_open(argv[0], NULL);
    if (!a) die("%s", mc_error());
    art_file *b = art_open(argv[1], NULL);
    if (!b) die("%s", mc_error());
    int differ = 0;
    if (strcmp(a->kind, b->kind)) { printf("kind: %s vs %s\n", a->kind, b->kind); differ = 1; }
    size_t w = 4;
    for (size_t i = 0; i < a->n_tensors; i++)
        if (strlen(a->tensors[i].name) > w) w = strlen(a->tensors[i].name);
    if (w > 72) w = 72;
    printf("%-*s %12s %12s\n", (int)w, "tensor", "max abs", "max rel");
    double worst = 0;
    for (size_t i = 0; i < a->n_tensors; i++) {
        const art_tensor *ta = &a->tensors[i], *tb = art_find(b, ta->name);
        if (!tb) { printf("%-*s only in %s\n", (int)w, ta->name, a->path); differ = 1; continue; }
        int same_shape = ta->ndim == tb->ndim;
        for (int d = 0; same_shape && d < ta->ndim; d++) same_shape = ta->shape[d] == tb->shape[d];
        if (!same_shape) { printf("%-*s shapes differ\n", (int)w, ta->name); differ = 1; continue; }
        float *x = art_tensor_f32(ta), *y = art_tensor_f32(tb);
        double mabs = 0, mrel = 0, scale = 0;
        for (int64_t j = 0; j < ta->numel; j++) if (fabs(y[j]) > scale) scale = fabs(y[j]);
        for (int64_t j = 0; j < ta->numel; j++) {
            double d = fabs((double)x[j] - y[j]);
            if (!(d <= mabs)) mabs = d;  /* NaN propagates */
        }
        mrel = scale > 0 ? mabs / scale : mabs;
        if (!(mrel <= worst)) worst = mrel;
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

static int is_hex32(const char *s) {
    if (strlen(s) != 32) return 0;
    for (int i = 0; i < 32; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
    return 1;
}

static int cmd_import_hf(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *vocab = NULL, *key = NULL, *base = NULL, *like = NULL;
    int no_vocab = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--vocab") && i + 1 < argc) vocab = argv[++i];
        else if (!strcmp(a, "--key") && i + 1 < argc) key = argv[++i];
        else if (!strcmp(a, "--base") && i + 1 < argc) base = argv[++i];
        else if (!strcmp(a, "--like") && i + 1 < argc) like = argv[++i];
        else if (!strcmp(a, "--no-vocab")) no_vocab = 1;
        else if (a[0] == '-') die("import-hf: unknown option %s", a);
        else if (!dir) dir = a;
        else die("import-hf: one checkpoint directory, got %s and %s", dir, a);
    }
    if (!dir || !out) usage();
    if (key && !is_hex32(key)) die("import-hf: --key %s: 32 lowercase hex digits expected", key);
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
    }
    hf_import_opts o = {key, vocab, 1, like};
    if (hf_import(dir, out, &o) < 0) die("%s", mc_error());
    return 0;
}

static int cmd_key(int argc, char **argv) {
    if (argc < 1) usage();
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
    int extra = -1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--extra-ids") && i + 1 < argc) extra = atoi(argv[++i]);
        else if (argv[i][0] == '-') die("import-spm: unknown option %s", argv[i]);
        else in = argv[i];
    }
    if (!in || !out || extra < -1) usage();
    if (hf_write_vocab(in, out, extra, 0) < 0) die("%s", mc_error());
    fprintf(stderr, "import-spm: %s -> %s\n", in, out);
    return 0;
}

static int cmd_export_hf(int argc, char **argv) {
    const char *model = NULL, *dir = NULL;
    hf_export_opts o = {0};
    o.dtype = ST_F32;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--ia3") && i + 1 < argc) o.ia3 = argv[++i];
        else if (!strcmp(a, "--fold")) o.ia3_mode = HF_IA3_FOLD;
        else if (!strcmp(a, "--adapter")) o.ia3_mode = HF_IA3_ADAPTER;
        else if (!strcmp(a, "--vocab") && i + 1 < argc) o.vocab = argv[++i];
        else if (!strcmp(a, "--no-tied")) o.no_tied = 1;
        else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            int d = st_dtype_parse(argv[++i]);
            if (d < 0) die("export-hf: --dtype %s: use f32, bf16 or f16", argv[i]);
            o.dtype = (st_dtype)d;
        } else if (a[0] == '-') die("export-hf: unknown option %s", a);
        else if (!model) model = a;
        else if (!dir) dir = a;
        else die("export-hf: unexpected argument %s", a);
    }
    if (!model || !dir) usage();
    if (o.ia3_mode && !o.ia3) die("export-hf: --fold and --adapter need --ia3 A.msgpack");
    if (o.ia3 && !o.ia3_mode) die("export-hf: --ia3 needs --fold (scale k, v, wi_1 in place) or --adapter (PEFT IA3 files)");
    if (hf_export(model, dir, &o) < 0) die("%s", mc_error());
    fprintf(stderr, "export-hf: %s%s%s -> %s (%s)\n", model, o.ia3 ? " + " : "", o.ia3 ? o.ia3 : "", dir,
            st_dtype_name(o.dtype));
    return 0;
}

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    if (argc < 2) usage();
    if (!strcmp(argv[1], "show")) return cmd_show(argc - 2, argv + 2);
    if (!strcmp(argv[1], "verify")) return cmd_verify(argc - 2, argv + 2);
    if (!strcmp(argv[1], "diff")) return cmd_diff(argc - 2, argv + 2);
    if (!strcmp(argv[1], "import-hf")) return cmd_import_hf(argc - 2, argv + 2);
    if (!strcmp(argv[1], "export-hf")) return cmd_export_hf(argc - 2, argv + 2);
    if (!strcmp(argv[1], "import-spm")) return cmd_import_spm(argc - 2, argv + 2);
    if (!strcmp(argv[1], "key")) return cmd_key(argc - 2, argv + 2);
    fprintf(stderr, "art: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
