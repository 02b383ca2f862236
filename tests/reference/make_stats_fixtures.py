"""Write tests/fixtures/t5_stats.bin: Fisher and Gram statistics of t5-micro
computed by a per-example autograd loop (one example at a time, no padding),
the reference for the batched C stages fisher and gram.

Reads the micro model (param/*, ia3/*) from tests/fixtures/t5_micro.bin
(or, given tests/fixtures/t5_original.bin, the original-layout model, whose
layout the fixture's config entry carries; its tied head is not a linear:
no Gram, and its gradient is part of shared.weight's Fisher).
Run with `make fixtures-t5` (after make_fixtures.py).
"""
import sys

import numpy as np
import torch

import t5_ref as R
from rng_ref import M64, splitmix64 as hash64

torch.set_num_threads(1)


def sample_choice(scores, seed, idx):
    """The true-Fisher label: softmax over choice scores, inverse CDF at a
    uniform from hash(seed*1000003 + idx) (stages/fisher.c)."""
    s = np.asarray(scores, dtype=np.float64)
    e = np.exp(s - s.max())
    u = (hash64((seed * 1000003 + idx) & M64) >> 11) * 2.0 ** -53 * e.sum()
    c = np.searchsorted(np.cumsum(e), u, side='right')
    return int(min(c, len(s) - 1))


def main(micro_path, out_path):
    fx = R.read_fixture(micro_path)
    cfg = R.micro_config()
    if len(fx['config']) >= 11:  # the original layout (make_fixtures.py --original)
        cfg = R.micro_original_config()
        assert [int(R.is_relu(cfg)), int(R.is_tied(cfg))] == [int(v) for v in fx['config'][9:11]]
    P0 = {k[len('param/'):]: torch.tensor(np.array(v)) for k, v in fx.items() if k.startswith('param/')}
    IA0 = {k[len('ia3/'):]: torch.tensor(np.array(v)) for k, v in fx.items() if k.startswith('ia3/')}
    V = cfg['vocab_size']
    gen = torch.Generator().manual_seed(99)
    fx = R.Fixture()
    put = fx.put

    # 7 examples, 2-4 choices of 1-5 tokens, inputs of 3-19 tokens
    inputs, choices, ex_choices, labels = R.random_task(gen, V, 7, (3, 20), (2, 5), (1, 6), 3)
    fx.put_tokens('', inputs, choices, ex_choices, labels)
    seed = 5

    def targets(IA, true):
        out = []
        for i, inp in enumerate(inputs):
            chs = choices[ex_choices[i]:ex_choices[i + 1]]
            if true:
                with torch.no_grad():
                    sc = [R.choice_logprob(P0, cfg, inp, ch, IA).item() for ch in chs]
                out.append(chs[sample_choice(sc, seed, i)])
            else:
                out.append(chs[labels[i]])
        return out

    def example_loss(Pm, IA, inp, tgt):
        enc = torch.tensor([inp])
        t = torch.tensor([tgt])
        logits = R.forward(Pm, cfg, enc, R.shift_right(t), IA)
        return R.loss_fn(logits, t)  # mean over the target's tokens (all real)

    n = len(inputs)
    for true in (0, 1):
        tg = targets(None, true)
        # full model: diagonal Fisher of every parameter
        diag = {k: torch.zeros_like(v) for k, v in P0.items()}
        for i in range(n):
            P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
            example_loss(P, None, inputs[i], tg[i]).backward()
            for k in P:
                diag[k] += P[k].grad ** 2
        for k, v in diag.items():
            put(f'fisher_full_{true}/{k}', (v / n).numpy(), 0)
        # IA3: diagonal and blockwise
        tg = targets(IA0, true)
        put(f'true_targets_ia3_{true}', [choices.index(t) if t in choices else -1 for t in tg], 1)
        d_ia3 = {k: torch.zeros_like(v) for k, v in IA0.items()}
        b_ia3 = {k: torch.zeros(v.numel(), v.numel()) for k, v in IA0.items()}
        for i in range(n):
            IA = {k: v.clone().requires_grad_(True) for k, v in IA0.items()}
            example_loss(P0, IA, inputs[i], tg[i]).backward()
            for k in IA:
                g = IA[k].grad
                d_ia3[k] += g ** 2
                b_ia3[k] += torch.outer(g, g)
        for k in IA0:
            put(f'fisher_ia3_{true}/{k}', (d_ia3[k] / n).numpy(), 0)
            put(f'block_ia3_{true}/{k}', (b_ia3[k] / n).numpy(), 0)

    # Gram matrices (gold targets), per-example loss gradients
    tg = targets(None, 0)
    gin, gout = {}, {}
    n_enc = sum(len(x) for x in inputs)
    n_dec = sum(len(t) for t in tg)
    for i in range(n):
        R.REC = {}
        P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
        example_loss(P, None, inputs[i], tg[i]).backward()
        for name, (x, y) in R.REC.items():
            x2 = x.detach().reshape(-1, x.shape[-1])
            g2 = y.grad.reshape(-1, y.shape[-1])
            gin[name] = gin.get(name, 0) + x2.t() @ x2
            if name != 'lm_head.weight':
                gout[name] = gout.get(name, 0) + g2.t() @ g2
        R.REC = None
    for name in gin:
        enc_side = name.startswith('encoder.') or '.EncDecAttention.k.' in name or '.EncDecAttention.v.' in name
        cnt = n_enc if enc_side else n_dec
        base = name[:-len('.weight')]
        put(f'gram/{base}.input_gram', (gin[name] / cnt).numpy(), 0)
        if name in gout:
            put(f'gram/{base}.output_grad_gram', (gout[name] / cnt).numpy(), 0)
    put('gram_tokens', [n_enc, n_dec], 1)

    fx.write(out_path)


if __name__ == '__main__':
    main(sys.argv[1] if len(sys.argv) > 1 else 'tests/fixtures/t5_micro.bin',
         sys.argv[2] if len(sys.argv) > 2 else 'tests/fixtures/t5_stats.bin')
