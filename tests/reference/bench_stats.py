"""The PyTorch side of `make bench-stats`: the per-example autograd loop
(one example per backward, as the MaTS code computes Fisher and Gram
statistics) on t5-mini-sized random examples (inputs of 64..128 tokens,
targets of 2..4), timed over --examples examples and projected to 1000. Each statistic is
timed in every split of the cores between torch and OpenBLAS
(peer_threads.py) and the best split is the peer's figure.

  /usr/bin/python3 bench_stats.py --config ../../configs/models/t5-mini.conf --threads 2 --examples 20
"""
import argparse
import resource
import time

import torch

import peer_threads
import t5_ref as R


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--config', required=True)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--examples', type=int, default=20)
    a = ap.parse_args()
    cfg = R.read_conf(a.config)
    gen = torch.Generator().manual_seed(3)
    V = cfg['vocab_size']
    ex = []
    for _ in range(a.examples):
        n_in = int(torch.randint(64, 129, (1,), generator=gen))
        n_t = int(torch.randint(2, 5, (1,), generator=gen))
        inp = torch.randint(3, V - 100, (1, n_in), generator=gen)
        inp[0, -1] = 1
        tgt = torch.randint(3, V - 100, (1, n_t), generator=gen)
        tgt[0, -1] = 1
        ex.append((inp, tgt))
    P0 = R.random_params(cfg, gen, ln_noise=0.0, relb_std=cfg['d_model'] ** -0.5)
    IA0 = {k: torch.ones(s) for k, s in R.ia3_shapes(cfg).items()}
    print(f'bench-stats: PyTorch {torch.__version__}, {a.threads} cores, per-example loop over {a.examples} examples')

    def timed(label, fn):
        best = None
        for split in peer_threads.splits(a.threads):
            peer_threads.use(split)
            t0 = time.perf_counter()
            fn()
            dt = (time.perf_counter() - t0) / a.examples
            if best is None or dt < best[0]:
                best = (dt, split[0])
        dt = best[0]
        print(f'bench-stats: PyTorch {label:28s} {dt * 1e3:8.1f} ms/example, {dt * 1000:7.1f} s per 1000 examples'
              f' (best split {best[1]})')

    def diag_full():
        acc = {k: torch.zeros_like(v) for k, v in P0.items()}
        for inp, tgt in ex:
            P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
            R.loss_fn(R.forward(P, cfg, inp, R.shift_right(tgt)), tgt).backward()
            for k in P:
                acc[k] += P[k].grad ** 2

    def block_ia3():
        acc = {k: torch.zeros(v.numel(), v.numel()) for k, v in IA0.items()}
        for inp, tgt in ex:
            IA = {k: v.clone().requires_grad_(True) for k, v in IA0.items()}
            R.loss_fn(R.forward(P0, cfg, inp, R.shift_right(tgt), IA), tgt).backward()
            for k in IA:
                acc[k] += torch.outer(IA[k].grad, IA[k].grad)

    def gram():
        gin, gout = {}, {}
        for inp, tgt in ex:
            R.REC = {}
            P = {k: v.clone().requires_grad_(True) for k, v in P0.items()}
            R.loss_fn(R.forward(P, cfg, inp, R.shift_right(tgt)), tgt).backward()
            for name, (x, y) in R.REC.items():
                x2 = x.detach().reshape(-1, x.shape[-1])
                gin[name] = gin.get(name, 0) + x2.t() @ x2
                if name != 'lm_head.weight':
                    g2 = y.grad.reshape(-1, y.shape[-1])
                    gout[name] = gout.get(name, 0) + g2.t() @ g2
            R.REC = None

    timed('diagonal Fisher (full)', diag_full)
    timed('blockwise Fisher (IA3)', block_ia3)
    timed('Gram (input + output grad)', gram)
    print(f'bench-stats: PyTorch peak resident memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB')


if __name__ == '__main__':
    main()
