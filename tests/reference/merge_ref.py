#!/usr/bin/python3
"""Independent PyTorch reference for the merge stage: writes
tests/reference/merge_fixture.txt, which tests/test_merge.c reads (so
`make test` needs no torch).

Regenerate with:  /usr/bin/python3 tests/reference/merge_ref.py

The inputs are small random tensors (rounded to float32, the artifacts'
dtype); the expected outputs are computed here in float64 with torch, from
the method definitions (the MaTS paper and its reference code r-three/mats):

  average          mean of the models
  task_arithmetic  pre + lam * sum_i (theta_i - pre)
  ties             flattened task vectors; keep |tau| >= kthvalue(d - int(d*K));
                   sign = sign(sum of trimmed), zeros -> sign of the sum of signs;
                   disjoint mean of entries agreeing with the sign; pre + lam * merged
  fisher           sum_i F_i theta_i / sum_i F_i, F clamped at 1e-8
  regmean          W = ((sum A~_i)^-1 sum A~_i W_i^T)^T per linear (lm_head too),
                   A~ = lam A + (1-lam) diag(A); other tensors averaged
  mats             W solves sum_i G~_i W A~_i = sum_i G~_i W_i A~_i (dense Kronecker
                   solve) per linear with both Grams; lm_head and the rest averaged;
                   IA3: v = (sum F~_i)^-1 sum F~_i v_i
  dare_linear      pre + lam * sum_i mask_i * tau_i / (1 - p), mask_i[j] = u >= p with
                   u = (splitmix64(stream_i ^ j) >> 11) / 2^53 and stream_i from the seed,
                   the model index and the FNV-1a hash of the tensor name (the merge
                   stage's documented hash, re-implemented here)
  dare_ties        ties without trimming over the dropped and rescaled task vectors
  breadcrumbs      per tensor and task vector keep lo <= |tau| <= hi (lo the
                   (floor(n b)+1)-th smallest, hi the (floor(n t)+1)-th largest);
                   pre + lam * sum

File format: blocks of
  tensor GROUP NAME NDIM D0 [D1]
  v v v ...            (one line of values, float32-exact for inputs)
"""
import os
import torch

torch.manual_seed(1234)
D = torch.float64
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "merge_fixture.txt")
N = 3

SHAPES = [
    ("shared.weight", (6, 4)),
    ("encoder.block.0.layer.0.SelfAttention.q.weight", (3, 4)),
    ("encoder.block.0.layer.0.SelfAttention.o.weight", (4, 3)),
    ("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight", (5, 2)),
    ("encoder.final_layer_norm.weight", (4,)),
    ("lm_head.weight", (6, 4)),
]
LINEARS = ["encoder.block.0.layer.0.SelfAttention.q.weight",
           "encoder.block.0.layer.0.SelfAttention.o.weight", "lm_head.weight"]
KFAC = LINEARS[:2]
IA3 = [("encoder.block.0.layer.0.SelfAttention.q.ia3_vector", 3),
       ("encoder.block.0.layer.0.SelfAttention.o.ia3_vector", 4)]


def f32(x):
    return x.to(torch.float32).to(D)


def pd(d):
    x = torch.randn(d, 2 * d, dtype=D)
    return f32(x @ x.T / (2 * d) + 0.1 * torch.eye(d, dtype=D))


def scale(M, lam):
    return lam * M + (1 - lam) * torch.diag(torch.diagonal(M))


blocks = []


def emit(group, name, t):
    t = t.to(D)
    shape = list(t.shape)
    blocks.append(f"tensor {group} {name} {len(shape)} {' '.join(map(str, shape))}\n" +
                  " ".join(repr(float(v)) for v in t.flatten()) + "\n")


# ---------------------------------------------------------------- full models
pre = {n: f32(torch.randn(s, dtype=D)) for n, s in SHAPES}
models = [{n: f32(pre[n] + 0.3 * torch.randn(s, dtype=D)) for n, s in SHAPES} for _ in range(N)]
grams = []
for i in range(N):
    g = {}
    for n in LINEARS:
        out, inn = dict(SHAPES)[n]
        g[n[:-7] + ".input_gram"] = pd(inn)
        if n in KFAC:
            g[n[:-7] + ".output_grad_gram"] = pd(out)
    grams.append(g)
fishers = []
for i in range(N):
    f = {n: f32(torch.exp(torch.randn(s, dtype=D) - 3)) for n, s in SHAPES}
    f["encoder.final_layer_norm.weight"][0] = 0.0   # all-zero entry: exercises the clamp
    fishers.append(f)

for n, _ in SHAPES:
    emit("pre", n, pre[n])
for i in range(N):
    for n, _ in SHAPES:
        emit(f"model.{i}", n, models[i][n])
    for n, t in grams[i].items():
        emit(f"gram.{i}", n, t)
    for n, _ in SHAPES:
        emit(f"fisher.{i}", n, fishers[i][n])

names = [n for n, _ in SHAPES]
avg = {n: sum(m[n] for m in models) / N for n in names}
for n in names:
    emit("expect.average", n, avg[n])

lam = 0.7
for n in names:
    emit("expect.task_arithmetic", n, pre[n] + lam * sum(m[n] - pre[n] for m in models))


def ties(pre_d, models_d, names, K, lam):
    tv = torch.stack([torch.cat([(m[n] - pre_d[n]).flatten() for n in names]) for m in models_d])
    d = tv.shape[1]
    k = d - int(d * K)
    if k > 0:
        kth = tv.abs().kthvalue(k, dim=1, keepdim=True).values
        tv = tv * (tv.abs() >= kth)
    sign = torch.sign(tv.sum(0))
    sign[sign == 0] = torch.sign(sign.sum())
    keep = torch.where(sign[None] > 0, tv > 0, tv < 0)
    sel = tv * keep
    merged = sel.sum(0) / torch.clamp((sel != 0).sum(0).to(D), min=1)
    flat = torch.cat([pre_d[n].flatten() for n in names]) + lam * merged
    outd, o = {}, 0
    for n in names:
        outd[n] = flat[o:o + pre_d[n].numel()].reshape(pre_d[n].shape)
        o += pre_d[n].numel()
    return outd


t = ties(pre, models, names, 0.4, 0.9)
for n in names:
    emit("expect.ties", n, t[n])

for n in names:
    F = [torch.clamp(f[n], min=1e-8) for f in fishers]
    emit("expect.fisher", n, sum(Fi * m[n] for Fi, m in zip(F, models)) / sum(F))

lam = 0.8
for n in names:
    if n in LINEARS:
        A = [scale(g[n[:-7] + ".input_gram"], lam) for g in grams]
        rhs = sum(Ai @ m[n].T for Ai, m in zip(A, models))
        emit("expect.regmean", n, torch.linalg.solve(sum(A), rhs).T)
    else:
        emit("expect.regmean", n, avg[n])

for n in names:
    if n in KFAC:
        out, inn = dict(SHAPES)[n]
        A = [scale(g[n[:-7] + ".input_gram"], lam) for g in grams]
        G = [scale(g[n[:-7] + ".output_grad_gram"], lam) for g in grams]
        # row-major vec(G W A) = (G kron A^T) vec(W); A symmetric
        M = sum(torch.kron(Gi, Ai) for Ai, Gi in zip(A, G))
        b = sum((Gi @ m[n] @ Ai).flatten() for Ai, Gi, m in zip(A, G, models))
        emit("expect.mats", n, torch.linalg.solve(M, b).reshape(out, inn))
    else:
        emit("expect.mats", n, avg[n])

lam, top, bottom = 0.6, 10.0, 30.0
for n in names:
    acc = torch.zeros_like(pre[n])
    for m in models:
        tau = (m[n] - pre[n]).flatten()
        s = tau.abs().sort().values
        cnt = tau.numel()
        nb, nt = int(cnt * bottom / 100), int(cnt * top / 100)
        lo, hi = s[nb], s[cnt - 1 - nt]
        keep = (tau.abs() >= lo) & (tau.abs() <= hi)
        acc += (tau * keep).reshape(pre[n].shape)
    emit("expect.breadcrumbs", n, pre[n] + lam * acc)

# ---------------------------------------------------------------- IA3
ia3 = [{n: f32(1 + 0.2 * torch.randn(d, dtype=D)) for n, d in IA3} for _ in range(N)]
fblocks = [{n: pd(d) for n, d in IA3} for _ in range(N)]
for i in range(N):
    for n, _ in IA3:
        emit(f"ia3.{i}", n, ia3[i][n])
        emit(f"fblock.{i}", n, fblocks[i][n])
ones = {n: torch.ones(d, dtype=D) for n, d in IA3}
inames = [n for n, _ in IA3]
lam = 0.7
for n in inames:
    F = [scale(fb[n], lam) for fb in fblocks]
    emit("expect.ia3_mats", n, torch.linalg.solve(sum(F), sum(Fi @ v[n] for Fi, v in zip(F, ia3))))
t = ties(ones, ia3, inames, 0.5, 1.0)
for n in inames:
    emit("expect.ia3_ties", n, t[n])
for n in inames:
    emit("expect.ia3_task_arithmetic", n, 1 + 0.5 * sum(v[n] - 1 for v in ia3))

# ---------------------------------------------------------------- DARE
from rng_ref import dare_mask

DARE_P, DARE_SEED = 0.3, 11
dropped = []
for i, m in enumerate(models):
    dropped.append({n: pre[n] + (dare_mask(DARE_SEED, i, n, m[n].numel(), DARE_P).reshape(m[n].shape) *
                                 (m[n] - pre[n]) / (1 - DARE_P)) for n in names})
for n in names:
    emit("expect.dare_linear", n, pre[n] + 0.7 * sum(m[n] - pre[n] for m in dropped))
t = ties(pre, dropped, names, 1.0, 0.9)
for n in names:
    emit("expect.dare_ties", n, t[n])

with open(OUT, "w") as fh:
    fh.write("# generated by tests/reference/merge_ref.py; do not edit\n")
    fh.writelines(blocks)
print(f"wrote {OUT}: {len(blocks)} tensors")
