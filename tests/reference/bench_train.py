"""The PyTorch side of `make bench-train`: the same training step as
`train --bench` (forward, backward, AdamW) of the reference T5 on CPU, at the
same shapes and thread count, full and IA3. The cores are split between
torch's threads and OpenBLAS's in every way peer_threads.py knows; each
split is printed and the best one is the peer's figure. A figure is the
median of the timed steps (after one warm-up step), as on the C side.

  /usr/bin/python3 bench_train.py --config ../../configs/models/t5-mini.conf \
      --threads 2 --steps 3 [--batch 32 --input 128 --target 32] [--bf16]
"""
import argparse
import resource
import statistics
import time

import torch

import peer_threads
import t5_ref as R


def step_time(P0, cfg, enc, dec, tgt, mode, steps, bf16=False):
    """Median seconds of one AdamW step (forward, backward, update) after a
    warm-up step, and the last loss; bf16: the forward under
    torch.autocast('cpu', bfloat16), PyTorch's mixed precision."""
    if mode == 'full':
        P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
        IA = None
        train = list(P.values())
    else:
        P = P0
        IA = {k: torch.ones(s, requires_grad=True) for k, s in R.ia3_shapes(cfg).items()}
        train = list(IA.values())
    opt = torch.optim.AdamW(train, lr=1e-4, eps=1e-8, weight_decay=0.0)
    times = []
    for s in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            loss = R.loss_fn(R.forward(P, cfg, enc, dec, IA), tgt)
        loss.backward()
        opt.step()
        if s > 0:
            times.append(time.perf_counter() - t0)
    return statistics.median(times), loss.item()  # the median step, as train --bench reports


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--config', required=True)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--steps', type=int, default=3)
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--input', type=int, default=128)
    ap.add_argument('--target', type=int, default=32)
    ap.add_argument('--bf16', action='store_true', help='also time the step under bfloat16 autocast')
    a = ap.parse_args()
    cfg = R.read_conf(a.config)
    gen = torch.Generator().manual_seed(1)
    V = cfg['vocab_size']
    B, Te, Td = a.batch, a.input, a.target
    enc = torch.randint(3, V, (B, Te), generator=gen)
    tgt = torch.randint(3, V, (B, Td), generator=gen)
    enc[:, -1] = 1
    tgt[:, -1] = 1
    dec = R.shift_right(tgt)
    P0 = R.random_params(cfg, gen, ln_noise=0.0, relb_std=cfg['d_model'] ** -0.5)
    print(f'bench-train: PyTorch {torch.__version__}, {a.threads} cores')
    for prec in (('fp32', 'bf16') if a.bf16 else ('fp32',)):
        tag = '' if prec == 'fp32' else ' bf16 autocast'
        for mode in ('full', 'IA3'):
            best = None
            for split in peer_threads.splits(a.threads):
                peer_threads.use(split)
                per, loss = step_time(P0, cfg, enc, dec, tgt, mode, a.steps, prec == 'bf16')
                print(f'bench-train: PyTorch {mode:4s}{tag} ({split[0]}): {B * (Te + Td) / per:7.0f} tokens/s, '
                      f'{per * 1e3:7.1f} ms/step, loss {loss:.3f}')
                if best is None or per < best[0]:
                    best = (per, split[0])
            print(f'bench-train: PyTorch {mode:4s}{tag}: {B * (Te + Td) / best[0]:7.0f} tokens/s (input+target), '
                  f'{best[0] * 1e3:7.1f} ms/step, best split {best[1]}')
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f'bench-train: PyTorch peak resident memory {rss:.0f} MiB')


if __name__ == '__main__':
    main()
