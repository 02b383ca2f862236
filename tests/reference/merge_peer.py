#!/usr/bin/python3
"""The benchmark peer of `merge --method mats`: scipy's cg over the K-FAC
operator in torch, computed the way the MaTS reference code computes it
(r-three/mats, src/merging/conjugateGradient_fisherMerging.py,
cg_forwardBackward): per linear, V = W^T [in, out], the operator
v -> sum_i A~_i V G~_i evaluated pair by pair with torch.matmul inside a
scipy LinearOperator, b = sum_i A~_i V_i G~_i, x0 = the average.

It reads the same artifacts as the C stage (with a small msgpack reader:
no msgpack module is needed) and prints seconds per CG iteration (one
iteration = one operator application on every linear) and the GFLOP/s of
its operator. With --compare OUT.msgpack (a `merge --method mats` output
from the same inputs, iterations and init) it also prints how far the C
result is from the peer's.

usage: merge_peer.py --models A,B,... --gram GA,GB,... [--lambda X]
                     [--iterations K] [--threads T] [--compare OUT.msgpack]
"""
import argparse
import mmap
import os
import struct
import sys
import time

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator, cg

import peer_threads


class Bin:
    __slots__ = ("off", "n")

    def __init__(self, off, n):
        self.off, self.n = off, n


def _count(buf, p, b, fix_last, b16):
    """The element count of a map or array whose type byte b was just read:
    in b (fix types up to fix_last), or a big-endian u16 (b16) or u32 after
    it -> (count, next p)."""
    if b <= fix_last:
        return b & 0x0f, p
    if b == b16:
        return struct.unpack_from(">H", buf, p)[0], p + 2
    return struct.unpack_from(">I", buf, p)[0], p + 4


def _read(buf, p):
    """One msgpack value at p -> (value, next p); bins become Bin(offset, len)."""
    b = buf[p]
    p += 1
    if b <= 0x7f:
        return b, p
    if 0x80 <= b <= 0x8f or b in (0xde, 0xdf):
        n, p = _count(buf, p, b, 0x8f, 0xde)
        d = {}
        for _ in range(n):
            k, p = _read(buf, p)
            v, p = _read(buf, p)
            d[k] = v
        return d, p
    if 0x90 <= b <= 0x9f or b in (0xdc, 0xdd):
        n, p = _count(buf, p, b, 0x9f, 0xdc)
        a = []
        for _ in range(n):
            v, p = _read(buf, p)
            a.append(v)
        return a, p
    if 0xa0 <= b <= 0xbf or b in (0xd9, 0xda, 0xdb):
        if b <= 0xbf:
            n = b & 0x1f
        else:
            w = {0xd9: 1, 0xda: 2, 0xdb: 4}[b]
            n = int.from_bytes(buf[p:p + w], "big"); p += w
        return bytes(buf[p:p + n]).decode(), p + n
    if b in (0xc4, 0xc5, 0xc6):
        w = {0xc4: 1, 0xc5: 2, 0xc6: 4}[b]
        n = int.from_bytes(buf[p:p + w], "big"); p += w
        return Bin(p, n), p + n
    if b == 0xc0:
        return None, p
    if b in (0xc2, 0xc3):
        return b == 0xc3, p
    if b == 0xca:
        return struct.unpack_from(">f", buf, p)[0], p + 4
    if b == 0xcb:
        return struct.unpack_from(">d", buf, p)[0], p + 8
    if b in (0xcc, 0xcd, 0xce, 0xcf):
        w = {0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8}[b]
        return int.from_bytes(buf[p:p + w], "big"), p + w
    if b in (0xd0, 0xd1, 0xd2, 0xd3):
        w = {0xd0: 1, 0xd1: 2, 0xd2: 4, 0xd3: 8}[b]
        return int.from_bytes(buf[p:p + w], "big", signed=True), p + w
    if b >= 0xe0:
        return b - 256, p
    raise ValueError(f"msgpack byte 0x{b:02x} not supported")


class Artifact:
    DT = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64, "u8": np.uint8}

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        top, _ = _read(self.buf, 0)
        self.kind, self.key, self.meta = top["kind"], top["key"], top["meta"]
        self.tensors = {t["name"]: t for t in top["tensors"]}

    def get(self, name):
        t = self.tensors[name]
        a = np.frombuffer(self.buf, dtype=self.DT[t["dtype"]], count=int(np.prod(t["shape"])),
                          offset=t["data"].off)
        return torch.from_numpy(a.reshape(t["shape"]).astype(np.float32))


def scale_nondiag(M, lam):
    return lam * M + (1 - lam) * torch.diag_embed(torch.diagonal(M))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--gram", required=True)
    ap.add_argument("--lambda", dest="lam", type=float, default=1.0)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("MATS_THREADS", os.cpu_count())))
    ap.add_argument("--compare")
    ap.add_argument("--filter", default="", help="only linears whose name contains this")
    ap.add_argument("--repeat", type=int, default=1, help="best of R runs per linear")
    args = ap.parse_args()
    models = [Artifact(p) for p in args.models.split(",")]
    grams = [Artifact(p) for p in args.gram.split(",")]
    ours = Artifact(args.compare) if args.compare else None
    N = len(models)

    tot_time = tot_flops = per_iter = cpu_per_iter = 0.0
    worst = (0.0, "")
    linears = [n for n in models[0].tensors
               if n.endswith(".weight") and n[:-7] + ".output_grad_gram" in grams[0].tensors
               and args.filter in n]
    for name in linears:
        stem = name[:-7]
        A = [scale_nondiag(g.get(stem + ".input_gram"), args.lam) for g in grams]
        G = [scale_nondiag(g.get(stem + ".output_grad_gram"), args.lam) for g in grams]
        V = [m.get(name).T for m in models]
        shape = V[0].shape                         # [in, out]
        with torch.no_grad():
            b = sum(torch.matmul(torch.matmul(a, v), g) for a, v, g in zip(A, V, G)).flatten()
        x0 = (sum(V) / N).flatten().numpy()
        calls = [0]

        def matvec(vector):
            calls[0] += 1
            reshaped = torch.from_numpy(vector).reshape(shape).float()
            out = None
            for a, g in zip(A, G):
                if out is None:
                    out = torch.matmul(torch.matmul(a, reshaped), g)
                else:
                    out += torch.matmul(torch.matmul(a, reshaped), g)
            return out.flatten().numpy()

        op = LinearOperator((shape.numel(), shape.numel()), matvec=matvec, dtype=np.float32)
        best = best_cpu = None
        for split, _ in ((sp, r) for sp in peer_threads.splits(args.threads) for r in range(args.repeat)):
            peer_threads.use(split)
            calls[0] = 0
            t0, c0 = time.perf_counter(), time.process_time()
            x, info = cg(op, b.numpy(), x0=x0.copy(), maxiter=args.iterations, tol=0.0, atol=0.0)
            dt, dc = time.perf_counter() - t0, time.process_time() - c0
            if best is None or dt / calls[0] < best:
                best = dt / calls[0]
            if best_cpu is None or dc / calls[0] < best_cpu:
                best_cpu = dc / calls[0]
        cpu_per_iter += best_cpu
        inn, out = shape
        flops = 2.0 * N * inn * out * (inn + out)
        tot_time += best
        tot_flops += flops
        per_iter += best
        if ours is not None:
            peer_w = torch.from_numpy(x.astype(np.float32)).reshape(shape).T
            c = ours.get(name)
            rel = float((c - peer_w).abs().max() / peer_w.abs().max())
            worst = max(worst, (rel, name))
    print(f"peer: {len(linears)} linears matching '{args.filter}', {N} models, {args.iterations} "
          f"iterations, best of {args.repeat} in each split of {args.threads} cores "
          f"({'; '.join(sp[0] for sp in peer_threads.splits(args.threads))})")
    print(f"peer_seconds_per_iteration {per_iter:.4f}")
    print(f"peer_kfac_gflops {tot_flops / tot_time * 1e-9:.1f}")
    print(f"peer_cpu_seconds_per_iteration {cpu_per_iter:.4f} "
          f"({tot_flops / cpu_per_iter * 1e-9:.1f} GFLOP/s per CPU-second)")
    if ours is not None:
        print(f"peer_vs_c_max_relative_difference {worst[0]:.3g} ({worst[1]})")


if __name__ == "__main__":
    sys.exit(main())
