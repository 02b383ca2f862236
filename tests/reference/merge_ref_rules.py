#!/usr/bin/python3
"""Independent PyTorch reference for `merge --rules`: per-model weights and
per-tensor values (mergekit's layer gradients and filters). Writes
tests/reference/merge_rules_fixture.txt, which tests/test_merge.c reads:
its `# case METHOD RULES FLAGS` lines are the merges to run, the tensors of
group rules.expect.METHOD their results.

Regenerate with:  /usr/bin/python3 tests/reference/merge_ref_rules.py

Written from mergekit's documented semantics (its config reader and
generalized task arithmetic), in float64:

  value(param, model i, tensor T): the first of model i's rules whose filter
      is a substring of T, else the first model-less rule that matches, else
      the option's default; a list v_0..v_{K-1} is a gradient evaluated at
      t = I / (L - 1) for encoder.block.I / decoder.block.I (L the stack's
      blocks; 1 when L = 1) and t = 0 for every other tensor:
      s = t (K - 1), i = int(s), j = min(K - 1, i + 1), (1 - (s - i)) v_i + (s - i) v_j
  average          sum w_i theta_i / sum w_i
  task_arithmetic  pre + lam(T) sum w_i tau_i
  dare_linear      pre + lam(T) sum w_i drop_p(tau_i), p = 1 - density_i(T)
  breadcrumbs      pre + lam(T) sum w_i crumbs(tau_i), top = gamma_i(T), bottom = 1 - density_i(T) - gamma_i(T)
  ties             per model its own global top-k (k = density_i of the whole
                   task vector); sign = sign(sum w_i trimmed_i) (zeros: the sign of
                   the sum of signs); sum w_i x_i / sum w_i over the agreeing
                   entries; pre + lam(T) that
  dare_ties        the same over the DARE-dropped task vectors, no trimming
  fisher           sum w_i F_i theta_i / sum w_i F_i (F clamped at 1e-8)
  slerp            mergekit's slerp at t = lam(T)
  iso_c            pre + lam(T) mean(S) U V^T of sum tau_i (2-d weights but
                   relative_attention_bias; others the mean task vector)

The DARE mask is the merge stage's documented counter-based hash
(rng_ref.dare_mask).
"""
import os
import torch

from rng_ref import dare_mask

torch.manual_seed(20261206)
D = torch.float64
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "merge_rules_fixture.txt")
N = 3

SHAPES = [("shared.weight", (7, 5))]
for s, L in (("encoder", 3), ("decoder", 2)):
    for b in range(L):
        P = f"{s}.block.{b}.layer."
        SHAPES += [(P + "0.SelfAttention.q.weight", (4, 5)), (P + "0.SelfAttention.o.weight", (5, 4)),
                   (P + "1.DenseReluDense.wo.weight", (5, 6)), (P + "0.layer_norm.weight", (5,))]
SHAPES += [("encoder.final_layer_norm.weight", (5,)), ("lm_head.weight", (7, 5))]
NAMES = [n for n, _ in SHAPES]
LAYERS = {"encoder": 3, "decoder": 2}

blocks = []


def f32(x):
    return x.to(torch.float32).to(D)


def emit(group, name, t):
    shape = list(t.shape)
    blocks.append(f"tensor rules.{group} {name} {len(shape)} {' '.join(map(str, shape))}\n" +
                  " ".join(repr(float(v)) for v in t.to(D).flatten()) + "\n")


# ---------------------------------------------------------------- rules

def parse(text):
    """[(param, model or 0, filter or None, [values])] in order."""
    out = []
    for r in text.split("/") if text else []:
        head, vals = r.split(":")
        filt = None
        if "@" in head:
            head, filt = head.split("@")
        model = 0
        if "." in head:
            head, m = head.split(".")
            model = int(m)
        out.append((head, model, filt, [float(v) for v in vals.split(",")]))
    return out


def position(name):
    for s, L in LAYERS.items():
        pre = s + ".block."
        if name.startswith(pre):
            i = int(name[len(pre):].split(".")[0])
            return i / (L - 1) if L > 1 else 1.0
    return 0.0


def gradient(vals, t):
    if len(vals) == 1:
        return vals[0]
    s = t * (len(vals) - 1)
    i = int(s)
    j = min(len(vals) - 1, i + 1)
    return (1 - (s - i)) * vals[i] + (s - i) * vals[j]


def value(rules, param, model, name, default):
    for want in ([model] if model else []) + [0]:
        for p, m, f, v in rules:
            if p == param and m == want and (f is None or f in name):
                return gradient(v, position(name))
    return default


# ---------------------------------------------------------------- methods

def weights(rules, name):
    return [value(rules, "weight", i + 1, name, 1.0) for i in range(N)]


def average(rules, pre, models, fishers, opts):
    out = {}
    for n in NAMES:
        w = weights(rules, n)
        out[n] = sum(wi * m[n] for wi, m in zip(w, models)) / sum(w)
    return out


def dare(rules, i, n, tau, opts):
    p = 1 - value(rules, "density", i + 1, n, 1 - opts["drop_rate"])
    mask = dare_mask(opts["seed"], i, n, tau.numel(), p).reshape(tau.shape)
    return mask * tau / (1 - p)


def crumbs(rules, i, n, tau, opts):
    d = value(rules, "density", i + 1, n, 1 - (opts["top"] + opts["bottom"]) / 100)
    g = value(rules, "gamma", i + 1, n, opts["top"] / 100)
    top, bottom = g, 1 - d - g
    x = tau.flatten()
    s = x.abs().sort().values
    cnt = x.numel()
    lo, hi = s[int(cnt * bottom)], s[cnt - 1 - int(cnt * top)]
    return (x * ((x.abs() >= lo) & (x.abs() <= hi))).reshape(tau.shape)


def summed(sparsify):
    def run(rules, pre, models, fishers, opts):
        out = {}
        for n in NAMES:
            w = weights(rules, n)
            acc = torch.zeros_like(pre[n])
            for i, m in enumerate(models):
                tau = m[n] - pre[n]
                acc += w[i] * (sparsify(rules, i, n, tau, opts) if sparsify else tau)
            out[n] = pre[n] + value(rules, "lambda", 0, n, opts["lambda"]) * acc
        return out
    return run


def ties_family(trim):
    def run(rules, pre, models, fishers, opts):
        sizes = [pre[n].numel() for n in NAMES]
        tv = []
        for i, m in enumerate(models):
            x = torch.cat([(dare(rules, i, n, m[n] - pre[n], opts) if not trim else m[n] - pre[n]).flatten()
                           for n in NAMES])
            if trim:
                K = value(rules, "density", i + 1, "", opts["topk"] / 100)
                k = x.numel() - int(x.numel() * K)
                if k > 0:
                    x = x * (x.abs() >= x.abs().kthvalue(k).values)
            tv.append(x)
        tv = torch.stack(tv)
        W = torch.cat([torch.tensor([weights(rules, n)] * s, dtype=D).T for n, s in zip(NAMES, sizes)], dim=1)
        sign = torch.sign((W * tv).sum(0))
        sign[sign == 0] = torch.sign(sign.sum())
        keep = torch.where(sign[None] > 0, tv > 0, tv < 0)
        num = (W * tv * keep).sum(0)
        den = (W * keep).sum(0)
        merged = num / torch.where(den != 0, den, torch.ones_like(den))
        out, o = {}, 0
        for n, s in zip(NAMES, sizes):
            out[n] = pre[n] + value(rules, "lambda", 0, n, opts["lambda"]) * merged[o:o + s].reshape(pre[n].shape)
            o += s
        return out
    return run


def fisher(rules, pre, models, fishers, opts):
    out = {}
    for n in NAMES:
        w = weights(rules, n)
        F = [wi * torch.clamp(f[n], min=1e-8) for wi, f in zip(w, fishers)]
        out[n] = sum(Fi * m[n] for Fi, m in zip(F, models)) / sum(F)
    return out


def slerp_pair(t, a, b):
    an, bn = a.norm(), b.norm()
    ua = a / an if an > 1e-8 else a
    ub = b / bn if bn > 1e-8 else b
    d = float((ua * ub).sum())
    if abs(d) > 0.9995:
        return (1 - t) * a + t * b
    w = torch.acos(torch.tensor(d, dtype=D))
    return torch.sin((1 - t) * w) / torch.sin(w) * a + torch.sin(t * w) / torch.sin(w) * b


def slerp(rules, pre, models, fishers, opts):
    return {n: slerp_pair(value(rules, "lambda", 0, n, opts["lambda"]), models[0][n], models[1][n]) for n in NAMES}


def iso_c(rules, pre, models, fishers, opts):
    out = {}
    for n in NAMES:
        taus = [m[n] - pre[n] for m in models]
        M = sum(taus)
        if M.dim() == 2 and "relative_attention_bias" not in n:
            U, S, Vh = torch.linalg.svd(M, full_matrices=False)
            merged = S.mean() * (U @ Vh)
        else:
            merged = M / N
        out[n] = pre[n] + value(rules, "lambda", 0, n, opts["lambda"]) * merged
    return out


# ---------------------------------------------------------------- the cases
pre = {n: f32(torch.randn(s, dtype=D)) for n, s in SHAPES}
models = [{n: f32(pre[n] + 0.1 * torch.randn(s, dtype=D)) for n, s in SHAPES} for _ in range(N)]
fishers = [{n: f32(torch.rand(s, dtype=D) ** 2) for n, s in SHAPES} for _ in range(N)]
for n in NAMES:
    emit("pre", n, pre[n])
for i in range(N):
    for n in NAMES:
        emit(f"model.{i}", n, models[i][n])
        emit(f"fisher.{i}", n, fishers[i][n])

BASE = {"lambda": 1.0, "drop_rate": 0.9, "seed": 0, "topk": 20.0, "top": 1.0, "bottom": 90.0}
# name, method, rules, options (as merge's flags), reference
CASES = [
    ("average", "weight.1:1/weight.2:2/weight.3:0.5", {}, average),
    ("task_arithmetic", "lambda:0.2,1/weight.2@SelfAttention:0.5,1.5,0.3/weight:0.8", {"lambda": 0.7},
     summed(None)),
    ("ties", "weight.1:2/density.2:0.5/lambda@DenseReluDense:0.5", {"topk": 30.0, "lambda": 0.9},
     ties_family(True)),
    ("dare_ties", "weight.1:0.5/density.3@decoder:0.6", {"drop_rate": 0.3, "seed": 11}, ties_family(False)),
    ("dare_linear", "density@q.weight:0.3,0.9/weight.3:0.5", {"drop_rate": 0.2, "seed": 5, "lambda": 0.8},
     summed(dare)),
    ("breadcrumbs", "density.1:0.8/gamma@wo:0.05", {"top": 10.0, "bottom": 20.0, "lambda": 0.6}, summed(crumbs)),
    ("fisher", "weight.2:3/weight.3@decoder:0.25", {}, fisher),
    ("slerp", "lambda@encoder:0,1", {"lambda": 0.4}, slerp),
    ("iso_c", "lambda:0.5,1,0.5", {"lambda": 0.7}, iso_c),
]
lines = []
for method, rules, opts, ref in CASES:
    o = dict(BASE, **opts)
    ms = models[:2] if method == "slerp" else models
    res = ref(parse(rules), pre, ms, fishers, o)
    for n in NAMES:
        emit(f"expect.{method}", n, res[n])
    flags = {"lambda": "--lambda", "drop_rate": "--drop-rate", "seed": "--seed", "topk": "--topk-percent",
             "top": "--breadcrumbs-top", "bottom": "--breadcrumbs-bottom"}
    lines.append(f"# case {method} {rules} " + " ".join(f"{flags[k]} {v!r}" for k, v in opts.items()) + "\n")

with open(OUT, "w") as fh:
    fh.write("# generated by tests/reference/merge_ref_rules.py; do not edit\n")
    fh.writelines(lines)
    fh.writelines(blocks)
print(f"wrote {OUT}: {len(lines)} cases, {len(blocks)} tensors")
