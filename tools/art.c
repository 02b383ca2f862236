/* art - look inside mats-c artifacts.
 *
 *   art show FILE [--all]     kind, key, meta, and a table of tensors
 *   art verify FILE...        check every file; one line each; exit 1 if any is bad
 *   art diff A B [--tol X]    max abs / rel difference per tensor; with --tol,
 *                             exit 1 when any difference exceeds X (relative)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "art.h"
#include "common.h"

static void usage(void) {
    fprintf(stderr,
            "usage: art show FILE [--all]\n"
            "       art verify FILE...\n"
            "       art diff A B [--tol X]\n");
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

int main(int argc, char **argv) {
    mc_set_progname(argv[0]);
    if (argc < 2) usage();
    if (!strcmp(argv[1], "show")) return cmd_show(argc - 2, argv + 2);
    if (!strcmp(argv[1], "verify")) return cmd_verify(argc - 2, argv + 2);
    if (!strcmp(argv[1], "diff")) return cmd_diff(argc - 2, argv + 2);
    fprintf(stderr, "art: unknown command '%s'\n", argv[1]);
    usage();
    return 2;
}
