/* stats.c - per-example Fisher and Gram statistics (see stats.h). */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "common.h"
#include "device.h"
#include "ops.h"
#include "pool.h"

/* rows of example b in a stream */
static void rows_of(const t5_batch *bt, int stream, int b, long *r0, int *T) {
    *T = stream == T5_ENC ? bt->Te : bt->Td;
    *r0 = (long)b * *T;
}

/* per-example norm weight gradient: out (D) = sum_t dout*x*rstd over rows */
static void norm_grad(float *out, const float *dout, const float *x, const float *rstd, long r0,
                      int T, int D) {
    memset(out, 0, sizeof(float) * D);
    for (long t = r0; t < r0 + T; t++) {
        const float *d = dout + t * D, *xx = x + t * D;
        float r = rstd[t];
        for (int i = 0; i < D; i++) out[i] += d[i] * xx[i] * r;
    }
}

static void relb_grad(float *out, const float *dscores_b, const int *buckets, int H, int T) {
    long TT = (long)T * T;
    for (int h = 0; h < H; h++)
        for (long ij = 0; ij < TT; ij++) out[buckets[ij] * H + h] += dscores_b[h * TT + ij];
}

typedef struct {
    float *acc;
    const float *g;
} sq_ctx;

static void sq_range(void *p, long lo, long hi) {
    sq_ctx *c = p;
    for (long i = lo; i < hi; i++) c->acc[i] += c->g[i] * c->g[i];
}

/* The linears' per-example squares, a batch at once: acc[o,i] += G_b[o,i]^2
 * for the examples b in order, G_b = g_b^T x_b over example b's T rows.
 * The rows of every linear are cut into blocks, and the blocks of all the
 * linears are one parallel loop; a block's rows of acc take every
 * example's squares while they sit in the caches. Each element gets the
 * same adds in the same order as from a per-example loop, so the bytes are
 * its bytes.
 *   - few rows per example (the decoder side, targets of a few tokens):
 *     G's row is summed directly (v += g[t,o] x[t,:], t < T), never stored;
 *   - otherwise G's block is a product on the calling thread
 *     (be_gemm_local: be_gemm's bytes) into a buffer of the thread's, where
 *     be_gemm_local_parallel() says the products are our own kernels; with
 *     the BLAS instead, the per-example loop below. */
#define FUSE_MAX_T 8
#define FUSE_MAX_IN 8192
#define BLOCK_FLOATS 65536 /* a product block's rows x in, at most (256 KiB) */
typedef struct {
    float *acc;         /* the linear's, from row 0 */
    const float *g, *x; /* the batch's rows: example b's T rows from b * T */
    int in, out, T;
    int r0, rows; /* the block */
    int direct;   /* 1: summed row by row; 0: a product */
} fsq_item;
typedef struct {
    const fsq_item *it;
    long n;    /* items */
    long next; /* the next item to take (atomic): the items' costs differ by 100x */
    int B;
} fsq_ctx;

/* v[i] += gt * x[i] (a multiply, then an add), i < n */
static void axpy_c(float *v, float gt, const float *x, int n) {
    for (int i = 0; i < n; i++) v[i] += gt * x[i];
}
/* a[i] += v[i] * v[i], i < n */
static void sqadd_c(float *a, const float *v, long n) {
    for (long i = 0; i < n; i++) a[i] += v[i] * v[i];
}
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "simd.h"
#define STATS_AVX512 1
/* the same operations 16 lanes at a time (no fused multiply-add) */
__attribute__((target("avx512f"))) static void axpy16(float *v, float gt, const float *x, int n) {
    __m512 s = _mm512_set1_ps(gt);
    for (int i = 0; i < n; i += 16) {
        __mmask16 k = simd_mask16(n - i);
        _mm512_mask_storeu_ps(v + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, v + i),
                                                      _mm512_mul_ps(s, _mm512_maskz_loadu_ps(k, x + i))));
    }
}
__attribute__((target("avx512f"))) static void sqadd16(float *a, const float *v, long n) {
    for (long i = 0; i < n; i += 16) {
        __mmask16 k = simd_mask16(n - i);
        __m512 x = _mm512_maskz_loadu_ps(k, v + i);
        _mm512_mask_storeu_ps(a + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_mul_ps(x, x)));
    }
}
#else
#define STATS_AVX512 0
#endif

static __thread float *fsq_buf; /* a worker's product block (BLOCK_FLOATS, or one row up to FUSE_MAX_IN) */

/* one worker: items taken one at a time until none is left (which thread
 * squares which rows does not change a byte) */
static void fsq_range(void *p, long lo, long hi) {
    (void)lo, (void)hi;
    fsq_ctx *c = p;
    void (*axpy)(float *, float, const float *, int) = axpy_c;
    void (*sqadd)(float *, const float *, long) = sqadd_c;
#if STATS_AVX512
    if (ops_simd_lanes() == 16) axpy = axpy16, sqadd = sqadd16;
#endif
    if (!fsq_buf) fsq_buf = mallocCheck(sizeof(float) * (BLOCK_FLOATS > FUSE_MAX_IN ? BLOCK_FLOATS : FUSE_MAX_IN));
    float *v = fsq_buf;
    for (long k; (k = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED)) < c->n;) {
        const fsq_item *L = &c->it[k];
        if (!L->direct) {
            float *a = L->acc + (size_t)L->r0 * L->in;
            for (int b = 0; b < c->B; b++) {
                be_gemm_local(1, 0, L->rows, L->in, L->T, 1.0f, L->g + (size_t)b * L->T * L->out + L->r0, L->out,
                              L->x + (size_t)b * L->T * L->in, L->in, 0.0f, v, L->in);
                sqadd(a, v, (long)L->rows * L->in);
            }
            continue;
        }
        for (long o = L->r0; o < L->r0 + L->rows; o++) {
            float *a = L->acc + o * L->in;
            for (int b = 0; b < c->B; b++) {
                memset(v, 0, sizeof(float) * L->in);
                for (int t = b * L->T; t < (b + 1) * L->T; t++) {
                    float gt = L->g[(size_t)t * L->out + o];
                    if (gt == 0.0f) continue;
                    axpy(v, gt, L->x + (size_t)t * L->in, L->in);
                }
                sqadd(a, v, L->in);
            }
        }
    }
}

/* linears = 0: everything but the linear layers' weights (left to
 * st_fisher_linears_dev) */
static void fisher_diag(t5_model *m, float *acc, float *scratch, int linears) {
    const t5_config *c = &m->c;
    const t5_batch *bt = &m->last;
    const t5_acts *a = &m->a, *da = &m->da;
    int D = c->d_model, H = c->num_heads;
    int nl = t5_n_linears(m);
    t5_linear *L = mallocCheck(sizeof *L * nl);
    t5_linears(m, L);
    if (m->tensors[0].offset != 0 || m->params + m->tensors[0].offset != m->p.shared)
        die("st_fisher_diag_full: shared.weight is expected first in the table");
    /* which tensors are squared from scratch: all but shared and the fused
     * linears; as maximal runs of consecutive floats */
    char *fused = callocCheck(m->n_tensors, 1);
    int *lin_fused = callocCheck(nl, sizeof(int));
    for (int i = 0; i < nl; i++) {
        int T = L[i].stream == T5_ENC ? bt->Te : bt->Td;
        if (!linears || (T <= FUSE_MAX_T && L[i].in <= FUSE_MAX_IN) ||
            (be_gemm_local_parallel() && 12L * L[i].in <= BLOCK_FLOATS)) {
            lin_fused[i] = 1;
            for (int ti = 0; ti < m->n_tensors; ti++)
                if (m->params + m->tensors[ti].offset == L[i].w) fused[ti] = 1;
        }
    }
    size_t *run_lo = mallocCheck(sizeof(size_t) * (m->n_tensors + 1)), *run_hi = mallocCheck(sizeof(size_t) * (m->n_tensors + 1));
    int nrun = 0;
    for (int ti = 1; ti < m->n_tensors; ti++) {
        if (fused[ti]) continue;
        size_t lo = m->tensors[ti].offset, hi = lo + m->tensors[ti].numel;
        if (nrun && run_hi[nrun - 1] == lo) run_hi[nrun - 1] = hi;
        else run_lo[nrun] = lo, run_hi[nrun] = hi, nrun++;
    }
#define OFF(ptr) (scratch + ((ptr) - m->params))
    if (linears) { /* the fused linears, every example at once */
        int cap = 0, ni = 0;
        for (int i = 0; i < nl; i++) cap += lin_fused[i] ? L[i].out : 0; /* at most a block per row */
        fsq_item *it = mallocCheck(sizeof *it * (cap > 0 ? cap : 1));
        for (int i = 0; i < nl; i++) {
            if (!lin_fused[i]) continue;
            int T = L[i].stream == T5_ENC ? bt->Te : bt->Td;
            int direct = T <= FUSE_MAX_T && L[i].in <= FUSE_MAX_IN;
            /* direct: 32 rows a block; a product: as many rows as fit the
             * buffer, in multiples of 12 (the AVX-512 kernel's) */
            int br = direct ? 32 : BLOCK_FLOATS / L[i].in / 12 * 12;
            for (int r0 = 0; r0 < L[i].out; r0 += br)
                it[ni++] = (fsq_item){acc + (L[i].w - m->params), L[i].g, L[i].x, L[i].in, L[i].out, T, r0,
                                      L[i].out - r0 < br ? L[i].out - r0 : br, direct};
        }
        fsq_ctx fc = {it, ni, 0, bt->B};
        pool_parallel_for(pool_threads(), 1, fsq_range, &fc);
        free(it);
    }
    for (int b = 0; b < bt->B; b++) {
        long re, rd;
        int Te, Td;
        rows_of(bt, T5_ENC, b, &re, &Te);
        rows_of(bt, T5_DEC, b, &rd, &Td);
        /* linears: G = g^T x over the example's rows (fused: squared at once) */
        for (int i = 0; i < nl; i++) {
            long r0 = L[i].stream == T5_ENC ? re : rd;
            int T = L[i].stream == T5_ENC ? Te : Td;
            if (!linears || lin_fused[i]) continue; /* fused: squared above */
            be_gemm(1, 0, L[i].out, L[i].in, T, 1.0f, L[i].g + r0 * L[i].out, L[i].out,
                    L[i].x + r0 * L[i].in, L[i].in, 0.0f, OFF(L[i].w), L[i].in);
        }
        /* norms */
        for (int l = 0; l < c->num_layers; l++) {
            const float *x = l ? a->enc[l - 1].out : a->enc_emb;
            norm_grad(OFF(m->p.enc[l].sa_ln), da->enc[l].sa_lnx, x, a->enc[l].sa_rstd, re, Te, D);
            norm_grad(OFF(m->p.enc[l].ff_ln), da->enc[l].ff_lnx, a->enc[l].x1, a->enc[l].ff_rstd, re, Te, D);
        }
        norm_grad(OFF(m->p.enc_ln), da->enc_out, a->enc[c->num_layers - 1].out, a->enc_rstd, re, Te, D);
        for (int l = 0; l < c->num_decoder_layers; l++) {
            const float *x = l ? a->dec[l - 1].out : a->dec_emb;
            norm_grad(OFF(m->p.dec[l].sa_ln), da->dec[l].sa_lnx, x, a->dec[l].sa_rstd, rd, Td, D);
            norm_grad(OFF(m->p.dec[l].ca_ln), da->dec[l].ca_lnx, a->dec[l].x1, a->dec[l].ca_rstd, rd, Td, D);
            norm_grad(OFF(m->p.dec[l].ff_ln), da->dec[l].ff_lnx, a->dec[l].x2, a->dec[l].ff_rstd, rd, Td, D);
        }
        norm_grad(OFF(m->p.dec_ln), da->dec_out, a->dec[c->num_decoder_layers - 1].out, a->dec_rstd, rd, Td, D);
        /* relative position tables: this example's dScores of every layer */
        float *re_t = OFF(m->p.enc_relb), *rd_t = OFF(m->p.dec_relb);
        memset(re_t, 0, sizeof(float) * c->num_buckets * H);
        memset(rd_t, 0, sizeof(float) * c->num_buckets * H);
        for (int l = 0; l < c->num_layers; l++)
            relb_grad(re_t, da->enc[l].probs + (size_t)b * H * Te * Te, m->enc_buckets, H, Te);
        for (int l = 0; l < c->num_decoder_layers; l++)
            relb_grad(rd_t, da->dec[l].probs + (size_t)b * H * Td * Td, m->dec_buckets, H, Td);
        /* shared embedding: rows of the ids this example uses (encoder and
         * decoder inputs); zero only those rows before and after. A tied
         * head (t5.h) adds its gradient g^T x over the example's decoder
         * rows to every row: the whole tensor is written and squared. */
        float *sh = OFF(m->p.shared);
        if (c->tied) {
            int V = c->vocab_size;
            be_gemm(1, 0, V, D, Td, 1.0f, da->logits + rd * V, V, a->dec_out + rd * D, D, 0.0f, sh, D);
        } else {
            for (int t = 0; t < Te; t++) memset(sh + (size_t)bt->enc_ids[re + t] * D, 0, sizeof(float) * D);
            for (int t = 0; t < Td; t++) memset(sh + (size_t)bt->dec_ids[rd + t] * D, 0, sizeof(float) * D);
        }
        for (int t = 0; t < Te; t++) {
            float *row = sh + (size_t)bt->enc_ids[re + t] * D;
            const float *d = da->enc_emb + (re + t) * D;
            for (int i = 0; i < D; i++) row[i] += d[i];
        }
        for (int t = 0; t < Td; t++) {
            float *row = sh + (size_t)bt->dec_ids[rd + t] * D;
            const float *d = da->dec_emb + (rd + t) * D;
            for (int i = 0; i < D; i++) row[i] += d[i];
        }
        /* square and add the tensors written to scratch above */
        for (int r = 0; r < nrun; r++) {
            sq_ctx sc = {acc + run_lo[r], scratch + run_lo[r]};
            pool_parallel_for((long)(run_hi[r] - run_lo[r]), 1 << 14, sq_range, &sc);
        }
        /* shared: only the touched rows (each once: square after all adds);
         * tied, all of it */
        if (c->tied) {
            sq_ctx sc = {acc + (sh - scratch), sh};
            pool_parallel_for((long)c->vocab_size * D, 1 << 14, sq_range, &sc);
        }
        for (int pass = 0; pass < 2 && !c->tied; pass++) {
            int T = pass ? Td : Te;
            const int *ids = pass ? bt->dec_ids + rd : bt->enc_ids + re;
            for (int t = 0; t < T; t++) {
                float *row = sh + (size_t)ids[t] * D, *ac = acc + (sh - scratch) + (size_t)ids[t] * D;
                if (row[0] != row[0]) continue; /* NaN marks a row already squared */
                for (int i = 0; i < D; i++) ac[i] += row[i] * row[i];
                row[0] = __builtin_nanf("");
            }
        }
    }
#undef OFF
    free(L);
    free(fused);
    free(lin_fused);
    free(run_lo);
    free(run_hi);
}

void st_fisher_diag_full(t5_model *m, float *acc, float *scratch) { fisher_diag(m, acc, scratch, 1); }

void st_fisher_diag_nonlinear(t5_model *m, float *acc, float *scratch) {
    fisher_diag(m, acc, scratch, 0);
}

void st_fisher_linears_dev(const t5_model *m, float *acc, float *scratch) {
    const t5_batch *bt = &m->last;
    int nl = t5_n_linears(m);
    t5_linear *L = mallocCheck(sizeof *L * nl);
    t5_linears(m, L);
    for (int b = 0; b < bt->B; b++)
        for (int i = 0; i < nl; i++) {
            long r0;
            int T;
            rows_of(bt, L[i].stream, b, &r0, &T);
            m->ops->gemm(1, 0, L[i].out, L[i].in, T, 1.0f, L[i].g + r0 * L[i].out, L[i].out,
                         L[i].x + r0 * L[i].in, L[i].in, 0.0f, scratch, L[i].in);
            m->ops->sq_accumulate(acc + (L[i].w - m->params), scratch, (long)L[i].out * L[i].in, 1.0f);
        }
    free(L);
}

size_t st_fisher_linear_scratch_floats(const t5_model *m) {
    int nl = t5_n_linears(m);
    t5_linear *L = mallocCheck(sizeof *L * nl);
    t5_linears(m, L);
    size_t mx = 1;
    for (int i = 0; i < nl; i++)
        if ((size_t)L[i].out * L[i].in > mx) mx = (size_t)L[i].out * L[i].in;
    free(L);
    return mx;
}

/* IA3 sites: (raw output y, gradient wrt scaled output, stream, vector) */
typedef struct {
    const float *y, *dys;
    int stream, C;
    size_t off; /* into the IA3 block */
} ia3_site;

static int ia3_sites(const t5_model *m, ia3_site *s) {
    const t5_config *c = &m->c;
    int HK = c->num_heads * c->d_kv, F = c->d_ff, n = 0;
    const t5_acts *a = &m->a, *da = &m->da;
#define S(Y, DY, ST, CC, V) s[n++] = (ia3_site){Y, DY, ST, CC, (size_t)((V) - m->ia3)}
    for (int l = 0; l < c->num_layers; l++) {
        S(a->enc[l].k, da->enc[l].ks, T5_ENC, HK, m->ia.enc[l].sa_k);
        S(a->enc[l].v, da->enc[l].vs, T5_ENC, HK, m->ia.enc[l].sa_v);
        S(a->enc[l].h1, da->enc[l].h1s, T5_ENC, F, m->ia.enc[l].ff);
    }
    for (int l = 0; l < c->num_decoder_layers; l++) {
        S(a->dec[l].k, da->dec[l].ks, T5_DEC, HK, m->ia.dec[l].sa_k);
        S(a->dec[l].v, da->dec[l].vs, T5_DEC, HK, m->ia.dec[l].sa_v);
        S(a->dec[l].ck, da->dec[l].cks, T5_ENC, HK, m->ia.dec[l].ca_k);
        S(a->dec[l].cv, da->dec[l].cvs, T5_ENC, HK, m->ia.dec[l].ca_v);
        S(a->dec[l].h1, da->dec[l].h1s, T5_DEC, F, m->ia.dec[l].ff);
    }
#undef S
    return n;
}

void st_ia3_example_grads(const t5_model *m, float *E) {
    const t5_batch *bt = &m->last;
    ia3_site s[5 * 256];
    if (m->c.num_layers + m->c.num_decoder_layers > 256) die("st_ia3_example_grads: too many layers");
    int ns = ia3_sites(m, s);
    for (int b = 0; b < bt->B; b++) {
        float *e = E + (size_t)b * m->n_ia3;
        for (int k = 0; k < ns; k++) {
            long r0;
            int T;
            rows_of(bt, s[k].stream, b, &r0, &T);
            float *out = e + s[k].off;
            int C = s[k].C;
            memset(out, 0, sizeof(float) * C);
            for (long t = r0; t < r0 + T; t++) {
                const float *y = s[k].y + t * C, *d = s[k].dys + t * C;
                for (int i = 0; i < C; i++) out[i] += d[i] * y[i];
            }
        }
    }
}

void st_diag_accum(const float *E, int B, size_t n, float *acc) {
    for (int b = 0; b < B; b++) {
        const float *e = E + (size_t)b * n;
        for (size_t i = 0; i < n; i++) acc[i] += e[i] * e[i];
    }
}

void st_ia3_block_accum(const t5_model *m, const float *E, int B, float **blocks) {
    for (int i = 0; i < m->n_ia3_tensors; i++) {
        const t5_tensor *t = &m->ia3_tensors[i];
        int d = (int)t->numel;
        m->ops->syrk(1, d, B, 1.0f, E + t->offset, (int)m->n_ia3, 1.0f, blocks[i], d);
    }
}

void st_diag_accum_dev(const t5_model *m, const float *E, int B, size_t n, float *acc) {
    for (int b = 0; b < B; b++) m->ops->sq_accumulate(acc, E + (size_t)b * n, (long)n, 1.0f);
}

st_gram *st_gram_new(const t5_model *m, int *n) {
    int nl = t5_n_linears(m);
    t5_linear *L = mallocCheck(sizeof *L * nl);
    t5_linears(m, L);
    st_gram *g = callocCheck(nl, sizeof *g);
    for (int i = 0; i < nl; i++) {
        snprintf(g[i].name, sizeof g[i].name, "%s", L[i].name);
        g[i].in = L[i].in, g[i].out = L[i].out, g[i].stream = L[i].stream;
        g[i].ops = m->ops;
        g[i].in_gram = m->ops->alloc(sizeof(float) * L[i].in * L[i].in);
        if (strcmp(L[i].name, "lm_head.weight") != 0)
            g[i].out_gram = m->ops->alloc(sizeof(float) * L[i].out * L[i].out);
    }
    free(L);
    *n = nl;
    return g;
}

void st_gram_keep(st_gram *g, int n, int (*keep)(const char *name, void *ctx), void *ctx) {
    for (int i = 0; i < n; i++) {
        g[i].ops->release(g[i].out_gram);
        g[i].out_gram = NULL;
        if (keep(g[i].name, ctx)) continue;
        g[i].ops->release(g[i].in_gram);
        g[i].in_gram = NULL;
    }
}

void st_gram_free(st_gram *g, int n) {
    for (int i = 0; i < n; i++) g[i].ops->release(g[i].in_gram), g[i].ops->release(g[i].out_gram);
    free(g);
}

static float *to_host(const mc_ops *o, float *d, size_t n) {
    if (!d) return NULL;
    float *h = mallocCheck(sizeof(float) * n);
    o->download(h, d, sizeof(float) * n);
    o->release(d);
    return h;
}

void st_gram_to_host(st_gram *g, int n) {
    const mc_ops *cpu = dev_ops(MC_DEV_CPU);
    for (int i = 0; i < n; i++) {
        if (g[i].ops == cpu) continue;
        g[i].in_gram = to_host(g[i].ops, g[i].in_gram, (size_t)g[i].in * g[i].in);
        g[i].out_gram = to_host(g[i].ops, g[i].out_gram, (size_t)g[i].out * g[i].out);
        g[i].ops = cpu;
    }
}

size_t st_gram_scratch_floats(const t5_model *m) {
    const t5_config *c = &m->c;
    size_t rows = (size_t)m->maxB * m->maxTe;
    if ((size_t)m->maxBd * m->maxTd > rows) rows = (size_t)m->maxBd * m->maxTd;
    size_t w = c->d_model;
    if ((size_t)c->d_ff > w) w = c->d_ff;
    if ((size_t)c->num_heads * c->d_kv > w) w = (size_t)c->num_heads * c->d_kv;
    return rows * w;
}

/* copy the real rows of src (rows x w) into dst, one copy per run of
 * consecutive real rows (ids are host, src and dst memory of `o`); returns
 * their count */
static int compact(const mc_ops *o, float *dst, const float *src, const int *ids, long rows, int w) {
    int k = 0;
    for (long r = 0; r < rows;) {
        if (ids[r] == T5_PAD) {
            r++;
            continue;
        }
        long r1 = r;
        while (r1 < rows && ids[r1] != T5_PAD) r1++;
        o->copy(dst + (size_t)k * w, src + (size_t)r * w, sizeof(float) * w * (size_t)(r1 - r));
        k += (int)(r1 - r);
        r = r1;
    }
    return k;
}

void st_gram_accum(const t5_model *m, st_gram *g, int n, float *scratch, long *n_enc, long *n_dec) {
    const t5_batch *bt = &m->last;
    int nl = t5_n_linears(m);
    if (n != nl) die("st_gram_accum: %d accumulators for %d linears", n, nl);
    t5_linear *L = mallocCheck(sizeof *L * nl);
    t5_linears(m, L);
    long Ne = (long)bt->B * bt->Te, Nd = (long)bt->Bd * bt->Td;
    for (int i = 0; i < nl; i++) {
        int enc = L[i].stream == T5_ENC;
        const int *ids = enc ? bt->enc_ids : bt->targets;
        long rows = enc ? Ne : Nd;
        if (g[i].ops != m->ops) die("st_gram_accum: accumulators and model on different devices");
        if (!g[i].in_gram) continue; /* a linear left out (st_gram_keep) */
        int k = compact(m->ops, scratch, L[i].x, ids, rows, L[i].in);
        m->ops->syrk(1, L[i].in, k, 1.0f, scratch, L[i].in, 1.0f, g[i].in_gram, L[i].in);
        if (g[i].out_gram) {
            k = compact(m->ops, scratch, L[i].g, ids, rows, L[i].out);
            m->ops->syrk(1, L[i].out, k, 1.0f, scratch, L[i].out, 1.0f, g[i].out_gram, L[i].out);
        }
    }
    for (long r = 0; r < Ne; r++) *n_enc += bt->enc_ids[r] != T5_PAD;
    for (long r = 0; r < Nd; r++) *n_dec += bt->targets[r] != T5_PAD;
    free(L);
}
