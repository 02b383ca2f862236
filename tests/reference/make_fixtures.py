"""Write tests/fixtures/t5_micro.bin: reference values for the C T5 tests;
with --original, tests/fixtures/t5_original.bin: the same values for the
micro shapes in the original T5 layout (ReLU feed-forward, head tied to
shared.weight and scaled by d_model**-0.5), whose `config` entry carries two
more ints: feed_forward_proj (0 gated-gelu, 1 relu) and tie_word_embeddings.

Run with Debian's python3-torch: `make fixtures-t5` (= /usr/bin/python3
tests/reference/make_fixtures.py tests/fixtures/t5_micro.bin, and with
--original tests/fixtures/t5_original.bin).

File format (read by tests/fixture.h): magic "MCFX1\\n", u32 count, then per
entry: u16 name length, name, u8 dtype (0 f32, 1 i32), u8 ndim, ndim x i64
shape, little-endian data.
"""
import math
import sys

import numpy as np
import torch

import t5_ref as R

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def main(out_path, original=False):
    cfg = R.micro_original_config() if original else R.micro_config()
    gen = torch.Generator().manual_seed(1234)
    V = cfg['vocab_size']
    fx = R.Fixture()
    put = fx.put

    layout = [int(R.is_relu(cfg)), int(R.is_tied(cfg))] if original else []
    put('config', [V, cfg['d_model'], cfg['d_kv'], cfg['d_ff'], cfg['num_heads'], cfg['num_layers'],
                   cfg['num_decoder_layers'], cfg['relative_attention_num_buckets'],
                   cfg['relative_attention_max_distance']] + layout, 1)

    # relative-position buckets over a wide range, for two bucket settings
    rel = torch.arange(-300, 301)
    for nb, md in ((32, 128), (16, 40)):
        for bi in (1, 0):
            put(f'buckets/{nb}/{md}/{bi}', R.rel_bucket(rel, bool(bi), nb, md).numpy(), 1)

    # a batch with padding: encoder lengths 20, 13, 7; target lengths 9, 5, 3
    B, Te, Td = 3, 20, 9
    enc = torch.zeros(B, Te, dtype=torch.long)
    tgt = torch.zeros(B, Td, dtype=torch.long)
    for b, (le, lt) in enumerate(((20, 9), (13, 5), (7, 3))):
        enc[b, :le - 1] = torch.randint(3, V, (le - 1,), generator=gen)
        enc[b, le - 1] = 1
        tgt[b, :lt - 1] = torch.randint(3, V, (lt - 1,), generator=gen)
        tgt[b, lt - 1] = 1
    dec = R.shift_right(tgt)
    put('enc_ids', enc.numpy(), 1)
    put('targets', tgt.numpy(), 1)
    put('dec_ids', dec.numpy(), 1)

    def put_loss_grads(prefix, grad_prefix, leaves, P, IA=None):
        """logits and loss of P (with IA) as PREFIXlogits, PREFIXloss; the
        gradient of each of leaves as GRAD_PREFIX<name>"""
        logits = R.forward(P, cfg, enc, dec, IA)
        loss = R.loss_fn(logits, tgt)
        loss.backward()
        put(prefix + 'logits', logits.detach().numpy(), 0)
        put(prefix + 'loss', [loss.item()], 0)
        for k, v in leaves.items():
            put(grad_prefix + k, v.grad.numpy(), 0)

    P0 = R.random_params(cfg, gen)
    for k, v in P0.items():
        put('param/' + k, v.numpy(), 0)

    # full model: logits, loss, every gradient
    P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
    put_loss_grads('', 'grad/', P, P)

    # IA3: vectors around 1, base frozen
    IA0 = {k: (1.0 + 0.2 * torch.randn(s, generator=gen)).float() for k, s in R.ia3_shapes(cfg).items()}
    for k, v in IA0.items():
        put('ia3/' + k, v.numpy(), 0)
    IA = {k: v.clone().requires_grad_(True) for k, v in IA0.items()}
    put_loss_grads('ia3_', 'ia3grad/', IA, P0, IA)
    # per-example-mean loss (the Fisher's per-example objective, summed)
    IA = {k: v.clone().requires_grad_(True) for k, v in IA0.items()}
    R.example_mean_loss(R.forward(P0, cfg, enc, dec, IA), tgt).backward()
    for k, v in IA.items():
        put('ia3grad_ex/' + k, v.grad.numpy(), 0)

    def torch_steps(P, opt, sched=None):
        """ten steps of a torch optimizer on the batch; the losses before each"""
        losses = []
        for _ in range(10):
            opt.zero_grad()
            loss = R.loss_fn(R.forward(P, cfg, enc, dec), tgt)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            losses.append(loss.item())
        return losses

    def adafactor_steps(P, scale_parameter, weight_decay):
        """ten Adafactor steps (HF transformers semantics with a fixed lr 1e-2,
        written out here from the algorithm: factored second moments for
        matrices, decay rate -0.8, update clipping at RMS 1, no momentum;
        with scale_parameter the lr is times max(1e-3, RMS(p)) taken before
        the update, and weight decay is p -= wd * lr * p as HF does it)"""
        state = {}
        losses = []
        for step in range(1, 11):
            for v in P.values():
                v.grad = None
            loss = R.loss_fn(R.forward(P, cfg, enc, dec), tgt)
            loss.backward()
            losses.append(loss.item())
            with torch.no_grad():
                beta2t = 1.0 - step ** -0.8
                for k, p in P.items():
                    g = p.grad
                    lr = 1e-2
                    if scale_parameter:
                        lr *= max(1e-3, (p.norm() / p.numel() ** 0.5).item())
                    upd = g * g + 1e-30
                    if g.dim() >= 2:
                        row, col = state.setdefault(k, [torch.zeros(g.shape[0]), torch.zeros(g.shape[1])])
                        row.mul_(beta2t).add_(upd.mean(-1) * (1 - beta2t))
                        col.mul_(beta2t).add_(upd.mean(-2) * (1 - beta2t))
                        u = (row / row.mean()).rsqrt()[:, None] * col.rsqrt()[None, :] * g
                    else:
                        v2 = state.setdefault(k, [torch.zeros_like(g)])[0]
                        v2.mul_(beta2t).add_(upd * (1 - beta2t))
                        u = v2.rsqrt() * g
                    rms = u.norm() / u.numel() ** 0.5
                    u = u / max(1.0, rms.item())
                    if weight_decay:
                        p.add_(p, alpha=-weight_decay * lr)
                    p.sub_(lr * u)
        return losses

    def fresh():
        return {k: v.clone().requires_grad_(True) for k, v in P0.items()}

    # ten AdamW steps (MaTS: eps 1e-8, no weight decay, constant lr) on this batch
    P = fresh()
    opt = torch.optim.AdamW(list(P.values()), lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    put('adamw_losses', torch_steps(P, opt), 0)

    put('adafactor_losses', adafactor_steps(fresh(), False, 0.0), 0)

    # ten AdamW steps with decoupled weight decay 0.1 under a 3-step linear
    # warmup then a cosine to zero at step 10, driven by torch's own LambdaLR
    # (the factor written out from the formula, independently of the C code)
    def warmup_cosine(t, warm=3, total=10):
        if t < warm:
            return (t + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (t - warm) / (total - warm)))
    P = fresh()
    opt = torch.optim.AdamW(list(P.values()), lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    put('adamw_wd_cosine_losses', torch_steps(P, opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine)), 0)
    put('adamw_wd_cosine_final/shared.weight', P['shared.weight'].detach().numpy(), 0)

    put('adafactor_scaled_losses', adafactor_steps(fresh(), True, 0.01), 0)

    # rank classification: 3 examples, 2-3 choices each, scored one by one
    inputs, choices, ex_choices, labels, scores = [], [], [0], [], []
    for n_in, lens, label in ((6, (3, 2), 1), (11, (2, 4, 3), 2), (4, (5, 2), 0)):
        inp = torch.randint(3, V, (n_in - 1,), generator=gen).tolist() + [1]
        inputs.append(inp)
        for lc in lens:
            ch = torch.randint(3, V, (lc - 1,), generator=gen).tolist() + [1]
            choices.append(ch)
            with torch.no_grad():
                scores.append(R.choice_logprob(P0, cfg, inp, ch).item())
        ex_choices.append(ex_choices[-1] + len(lens))
        labels.append(label)
    fx.put_tokens('rank/', inputs, choices, ex_choices, labels)
    put('rank/scores', scores, 0)

    fx.write(out_path)


if __name__ == '__main__':
    args = [a for a in sys.argv[1:] if a != '--original']
    main(args[0] if args else 'tests/fixtures/t5_micro.bin', '--original' in sys.argv[1:])
