#!/usr/bin/python3
"""Independent PyTorch reference for the task-vector merge methods of the
merge stage: writes tests/reference/merge_tv_fixture.txt, which
tests/test_merge.c reads (so `make test` needs no torch).

Regenerate with:  /usr/bin/python3 tests/reference/merge_ref_tv.py

Written from the methods' definitions (docs/merging.md, the papers, and
mergekit's documented slerp and model_stock formulas), in float64 with
torch; tau_i = theta_i - pre, N models:

  iso_c        2-d weights but relative_attention_bias: M = sum tau_i = U S V^T,
               merged = mean(S) U V^T; other tensors: mean tau; pre + lam * merged
  iso_cts      r = min(out, in); k0 = int(r * frac); T = round((r - k0) / N) * N
               (Python's round; less N if above r); k = r - T common directions
               (top k of M), s = T / N per task (top s of (I - U_k U_k^T) tau_i);
               U, V of the r directions each replaced by its polar factor;
               merged = mean(their singular values) U' V'^T
  tsv_m        k = max(1, r // N); top k of each tau_i concatenated; U, V replaced
               by their polar factors; merged = U' S V'^T
  wudi         per linear (2-d X.weight but shared and relative_attention_bias)
               the minimum-norm minimiser of sum_i ||(X - tau_i) tau_i^T||^2 / ||tau_i||^2:
               X = B S^+, S = sum tau_i^T tau_i / ||tau_i||^2,
               B = sum tau_i tau_i^T tau_i / ||tau_i||^2 (zero tau_i left out);
               other tensors: the average; pre + X (no lambda)
  model_stock  per tensor c = mean pairwise cosine (0 with a zero vector), t = N c / (1 + (N-1) c),
               pre + t * mean tau (no lambda)
  slerp        two models, per tensor: normalise each (if its norm > 1e-8); d = dot;
               |d| > 0.9995: lerp; else w = acos d, sin((1-t) w)/sin w a + sin(t w)/sin w b

Every SVD drops the components whose singular value is at most 1e-6 of the
largest (value and vectors zero), and a polar factor is P Q^T over the kept
components of P diag(s) Q^T: a rank-deficient matrix has no unique singular
vectors there (docs/merging.md).

Sets (the group prefix): `tv` three random full models and three IA3 ones;
edge cases on smaller tensors: `one` (N = 1), `zero` (model 1 is the
pretrained model: a zero task vector), `rank` (task vectors of rank 1, 2 and
1, exact in float32), `same` (two identical models).

File format: blocks of
  tensor GROUP NAME NDIM D0 [D1]
  v v v ...            (one line of values; inputs are float32 values)
"""
import os
import torch

torch.manual_seed(20250214)
D = torch.float64
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "merge_tv_fixture.txt")
RCOND = 1e-6

P = "encoder.block.0.layer."
FULL = [
    ("shared.weight", (10, 6)),
    (P + "0.SelfAttention.q.weight", (12, 10)),
    (P + "0.SelfAttention.o.weight", (8, 12)),
    (P + "1.DenseReluDense.wi_0.weight", (12, 12)),
    (P + "0.SelfAttention.relative_attention_bias.weight", (6, 2)),
    ("encoder.final_layer_norm.weight", (10,)),
    ("lm_head.weight", (10, 6)),
]
IA3 = [(P + "0.SelfAttention.q.ia3_vector", 12), (P + "0.SelfAttention.o.ia3_vector", 8)]
EDGE = [
    (P + "0.SelfAttention.q.weight", (8, 6)),
    (P + "0.SelfAttention.o.weight", (6, 10)),
    (P + "0.SelfAttention.relative_attention_bias.weight", (4, 2)),
    ("encoder.final_layer_norm.weight", (6,)),
]

blocks = []


def f32(x):
    return x.to(torch.float32).to(D)


def emit(group, name, t):
    t = t.to(D)
    shape = list(t.shape)
    blocks.append(f"tensor {group} {name} {len(shape)} {' '.join(map(str, shape))}\n" +
                  " ".join("%.9g" % float(v) for v in t.flatten()) + "\n")


# ---------------------------------------------------------------- the methods

def svd(A):
    U, S, Vh = torch.linalg.svd(A, full_matrices=False)
    drop = S <= RCOND * S[0]
    S, U, Vh = S.clone(), U.clone(), Vh.clone()
    S[drop] = 0
    U[:, drop] = 0
    Vh[drop, :] = 0
    return U, S, Vh


def polar(A):
    U, _, Vh = svd(A)
    return U @ Vh


def is_svd_tensor(name, shape):
    return len(shape) == 2 and "relative_attention_bias" not in name


def is_linear(name, shape):
    return len(shape) == 2 and name != "shared.weight" and "relative_attention_bias" not in name


def iso_c(taus):
    U, S, Vh = svd(sum(taus))
    return S.mean() * (U @ Vh)


def iso_cts(taus, frac):
    N = len(taus)
    m, n = taus[0].shape
    r = min(m, n)
    k0 = int(r * frac)
    T = round((r - k0) / N) * N
    if T > r:
        T -= N
    k, s = r - T, T // N
    Uc, Sc, Vc = svd(sum(taus))
    Uc, Sc, Vc = Uc[:, :k], Sc[:k], Vc[:k, :]
    Us, Ss, Vs = [Uc], [Sc], [Vc]
    for tau in taus if s > 0 else []:
        U, S, Vh = svd(tau - Uc @ (Uc.T @ tau))
        Us.append(U[:, :s]), Ss.append(S[:s]), Vs.append(Vh[:s, :])
    U, S, Vh = torch.cat(Us, 1), torch.cat(Ss), torch.cat(Vs, 0)
    assert S.numel() == r
    return S.mean() * (polar(U) @ polar(Vh))


def tsv_m(taus):
    N = len(taus)
    m, n = taus[0].shape
    k = max(1, min(m, n) // N)
    Us, Ss, Vs = [], [], []
    for tau in taus:
        U, S, Vh = svd(tau)
        Us.append(U[:, :k]), Ss.append(S[:k]), Vs.append(Vh[:k, :])
    U, S, Vh = torch.cat(Us, 1), torch.cat(Ss), torch.cat(Vs, 0)
    return polar(U) @ torch.diag(S) @ polar(Vh)


def wudi(taus):
    n = taus[0].shape[1]
    S = torch.zeros(n, n, dtype=D)
    B = torch.zeros_like(taus[0])
    for tau in taus:
        sq = (tau * tau).sum()
        if sq == 0:
            continue
        S += tau.T @ tau / sq
        B += tau @ tau.T @ tau / sq
    # the minimum-norm solution of X S = B: rows of X in the range of S
    return B @ torch.linalg.pinv(S, hermitian=True, rtol=1e-10)


def model_stock_t(taus):
    N = len(taus)
    cs = []
    for i in range(N):
        for j in range(i + 1, N):
            a, b = taus[i].flatten(), taus[j].flatten()
            na, nb = a.norm(), b.norm()
            cs.append(0.0 if na == 0 or nb == 0 else float(torch.clamp(a @ b / (na * nb), -1, 1)))
    c = sum(cs) / len(cs)
    return N * c / (1 + (N - 1) * c)


def slerp(t, a, b):
    na, nb = a.norm(), b.norm()
    d = float((a * b).sum() / ((na if na > 1e-8 else 1) * (nb if nb > 1e-8 else 1)))
    if abs(d) > 0.9995:
        return (1 - t) * a + t * b
    w = torch.acos(torch.tensor(d, dtype=D))
    return torch.sin((1 - t) * w) / torch.sin(w) * a + torch.sin(t * w) / torch.sin(w) * b


def merge(method, pre, models, shapes, lam=1.0, frac=0.8):
    out = {}
    for name, shape in shapes:
        taus = [m[name] - pre[name] for m in models]
        mean = sum(taus) / len(taus)
        if method in ("iso_c", "iso_cts", "tsv_m"):
            if is_svd_tensor(name, shape):
                merged = {"iso_c": lambda: iso_c(taus), "iso_cts": lambda: iso_cts(taus, frac),
                          "tsv_m": lambda: tsv_m(taus)}[method]()
            else:
                merged = mean
            out[name] = pre[name] + lam * merged
        elif method == "wudi":
            out[name] = pre[name] + (wudi(taus) if is_linear(name, shape) else mean)
        elif method == "model_stock":
            out[name] = pre[name] + model_stock_t(taus) * mean
        elif method == "slerp":
            out[name] = slerp(lam, models[0][name], models[1][name])
    return out


def emit_set(group, tensors, shapes):
    for name, _ in shapes:
        emit(group, name, tensors[name])


# ---------------------------------------------------------------- tv: random
pre = {n: f32(torch.randn(s, dtype=D)) for n, s in FULL}
models = [{n: f32(pre[n] + 0.3 * torch.randn(s, dtype=D)) for n, s in FULL} for _ in range(3)]
emit_set("tv.pre", pre, FULL)
for i, m in enumerate(models):
    emit_set(f"tv.model.{i}", m, FULL)
emit_set("expect.tv.iso_c", merge("iso_c", pre, models, FULL, lam=0.7), FULL)
emit_set("expect.tv.iso_cts", merge("iso_cts", pre, models, FULL, lam=0.7), FULL)
emit_set("expect.tv.iso_cts_half", merge("iso_cts", pre, models, FULL, lam=0.7, frac=0.5), FULL)
emit_set("expect.tv.tsv_m", merge("tsv_m", pre, models, FULL, lam=0.7), FULL)
emit_set("expect.tv.wudi", merge("wudi", pre, models, FULL), FULL)
emit_set("expect.tv.model_stock", merge("model_stock", pre, models, FULL), FULL)
emit_set("expect.tv.slerp", merge("slerp", pre, models[:2], FULL, lam=0.3), FULL)

ones = {n: torch.ones(d, dtype=D) for n, d in IA3}
ia3 = [{n: f32(1 + 0.2 * torch.randn(d, dtype=D)) for n, d in IA3} for _ in range(3)]
ia3_shapes = [(n, (d,)) for n, d in IA3]
for i, v in enumerate(ia3):
    emit_set(f"tv.ia3.{i}", v, ia3_shapes)
emit_set("expect.tv.ia3_model_stock", merge("model_stock", ones, ia3, ia3_shapes), ia3_shapes)
emit_set("expect.tv.ia3_slerp", merge("slerp", ones, ia3[:2], ia3_shapes, lam=0.6), ia3_shapes)

# ---------------------------------------------------------------- edge cases
def grid(shape, lo, hi, den):
    """float32-exact values k / den, k uniform in [lo, hi]"""
    return torch.randint(lo, hi + 1, shape).to(D) / den


epre = {n: grid(s, -64, 64, 64) for n, s in EDGE}


def low_rank(shape, rank):
    """an exact rank-`rank` matrix of multiples of 1/64 (u_j, v_j in multiples of 1/8)"""
    m, n = shape
    x = torch.zeros(m, n, dtype=D)
    for _ in range(rank):
        x += grid((m, 1), -8, 8, 8) @ grid((1, n), -8, 8, 8)
    return x


def edge_model(rank=None):
    m = {}
    for n, s in EDGE:
        if rank is not None and len(s) == 2:
            m[n] = epre[n] + low_rank(s, rank)
        else:
            m[n] = epre[n] + grid(s, -32, 32, 64)
    return m


edge = {
    "one": [edge_model()],
    "zero": [edge_model(), dict(epre), edge_model()],
    "rank": [edge_model(1), edge_model(2), edge_model(1)],
}
edge["same"] = [edge["one"][0], dict(edge["one"][0])]
for n, s in EDGE:
    if len(s) == 2:
        for i, r in ((0, 1), (1, 2)):
            assert torch.linalg.matrix_rank(edge["rank"][i][n] - epre[n]) == r
emit_set("edge.pre", epre, EDGE)
for case, ms in edge.items():
    for i, m in enumerate(ms):
        emit_set(f"{case}.model.{i}", m, EDGE)
    for method in ("iso_c", "iso_cts", "tsv_m", "wudi", "model_stock", "slerp"):
        if (method == "model_stock" and len(ms) < 2) or (method == "slerp" and len(ms) < 2):
            continue
        emit_set(f"expect.{case}.{method}", merge(method, epre, ms[:2] if method == "slerp" else ms, EDGE,
                                                   lam=0.3 if method == "slerp" else 0.7), EDGE)

with open(OUT, "w") as fh:
    fh.write("# generated by tests/reference/merge_ref_tv.py; do not edit\n")
    fh.writelines(blocks)
print(f"wrote {OUT}: {len(blocks)} tensors")
