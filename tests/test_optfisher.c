/* test_optfisher - the optimizer Fisher (lib/optim.h opt_moments_copy,
 * opt_fisher_tensor; train --optimizer-fisher) against
 * tests/reference/optfisher_fixture.txt (tests/reference/optfisher_ref.py):
 * AdamW's bias-corrected v equals torch.optim.AdamW's state on the same
 * gradients, Adafactor's reconstruction R C / mean(R) (vectors: v) equals
 * the algorithm written out, both to 1e-6 relative; no update gives zeros. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "harness.h"
#include "optim.h"

#define FX "tests/reference/optfisher_fixture.txt"
#define MAXT 8

static int n_tensors, steps;
static double scale;
static t5_tensor tensors[MAXT];
static size_t n_params;
static float *grads;            /* [steps][n_params] */
static float *want[2];          /* adamw, adafactor: [n_params] */

static int tensor_index(const char *name) {
    for (int i = 0; i < n_tensors; i++)
        if (!strcmp(tensors[i].name, name)) return i;
    return -1;
}

/* numel values of tensor `name` into base + its offset */
static int read_values(FILE *f, const char *name, float *base) {
    int i = tensor_index(name);
    if (i < 0) return -1;
    for (size_t j = 0; j < tensors[i].numel; j++) {
        double v;
        if (fscanf(f, "%lf", &v) != 1) return -1;
        base[tensors[i].offset + j] = (float)v;
    }
    return 0;
}

/* the fixture's records (see optfisher_ref.py); -1 on anything unexpected */
static int load_fixture(void) {
    FILE *f = fopen(FX, "r");
    if (!f) return -1;
    char word[64], name[96];
    int rc = 0;
    while (rc == 0 && fscanf(f, "%63s", word) == 1) {
        if (word[0] == '#') {
            if (fscanf(f, "%*[^\n]") < 0) rc = -1;
        } else if (!strcmp(word, "steps")) {
            if (fscanf(f, "%d scale %lf", &steps, &scale) != 2 || steps < 1 || steps > 100) rc = -1;
        } else if (!strcmp(word, "tensor")) {
            t5_tensor *t = &tensors[n_tensors];
            if (n_tensors == MAXT || fscanf(f, "%95s %d", t->name, &t->ndim) != 2 || t->ndim < 1 || t->ndim > 2) {
                rc = -1;
                continue;
            }
            t->numel = 1;
            for (int d = 0; d < t->ndim; d++) {
                long s;
                if (fscanf(f, "%ld", &s) != 1 || s < 1 || s > 64) rc = -1;
                t->shape[d] = s;
                t->numel *= (size_t)s;
            }
            t->offset = n_params;
            n_params += t->numel;
            n_tensors++;
        } else if (!strcmp(word, "grad")) {
            int s;
            if (!grads) grads = callocCheck((size_t)steps * n_params, sizeof(float));
            if (fscanf(f, "%d %95s", &s, name) != 2 || s < 0 || s >= steps ||
                read_values(f, name, grads + (size_t)s * n_params) < 0)
                rc = -1;
        } else if (!strcmp(word, "adamw") || !strcmp(word, "adafactor")) {
            int k = !strcmp(word, "adafactor");
            if (!want[k]) want[k] = callocCheck(n_params, sizeof(float));
            if (fscanf(f, "%95s", name) != 1 || read_values(f, name, want[k]) < 0) rc = -1;
        } else {
            rc = -1;
        }
    }
    fclose(f);
    return rc == 0 && n_tensors && grads && want[0] && want[1] ? 0 : -1;
}

/* `steps` updates of optimizer `kind` from the fixture's gradients, then
 * each tensor's optimizer Fisher against the reference */
static void check_kind(int kind) {
    optim *o = opt_new(kind, 1e-2f, n_params, tensors, n_tensors);
    o->weight_decay = 0.01f;
    float *p = callocCheck(n_params, sizeof(float)), *out = mallocCheck(sizeof(float) * n_params);
    for (int s = 0; s < steps; s++) opt_step(o, p, grads + (size_t)s * n_params);
    float *mom = mallocCheck(sizeof(float) * opt_moments_floats(o));
    opt_moments_copy(o, mom);
    for (int i = 0; i < n_tensors; i++) {
        char label[1200];
        snprintf(label, sizeof label, "%s %s", kind == OPT_ADAMW ? "adamw" : "adafactor", tensors[i].name);
        opt_fisher_tensor(o, mom, o->step, i, (float)scale, out + tensors[i].offset);
        t_close(label, out + tensors[i].offset, want[kind] + tensors[i].offset, (long)tensors[i].numel, 1e-6, 0);
    }
    /* before any update: zeros, whatever the state holds */
    opt_fisher_tensor(o, mom, 0, 0, (float)scale, out);
    for (size_t j = 0; j < tensors[0].numel; j++) CHECK(out[j] == 0.0f, "step 0: element %zu is %g", j, out[j]);
    free(mom), free(out), free(p);
    opt_free(o);
}

static void test_adamw_v_matches_torch(void) { check_kind(OPT_ADAMW); }
static void test_adafactor_reconstruction_matches_reference(void) { check_kind(OPT_ADAFACTOR); }

/* the moments' size: AdamW's v (n floats), Adafactor's whole state */
static void test_moment_sizes(void) {
    optim *a = opt_new(OPT_ADAMW, 1e-2f, n_params, tensors, n_tensors);
    optim *f = opt_new(OPT_ADAFACTOR, 1e-2f, n_params, tensors, n_tensors);
    CHECK(opt_moments_floats(a) == n_params, "adamw: %zu moments for %zu parameters", opt_moments_floats(a), n_params);
    CHECK(opt_moments_floats(f) == f->n_state && f->n_state < n_params, "adafactor: %zu moments, state %zu",
          opt_moments_floats(f), f->n_state);
    opt_free(a);
    opt_free(f);
}

int main(void) {
    if (load_fixture() < 0) {
        printf("FAIL cannot read %s (run from the repository root; make fixtures-optfisher rewrites it)\n", FX);
        return 1;
    }
    RUN(test_adamw_v_matches_torch);
    RUN(test_adafactor_reconstruction_matches_reference);
    RUN(test_moment_sizes);
    return t_done();
}
