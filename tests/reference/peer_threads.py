"""Thread splits for the PyTorch peers of the benchmarks.

Debian's torch calls the system OpenBLAS (the pthreads build), which starts
its own threads for every GEMM; torch.set_num_threads(T) on top of it runs
T torch threads that each call a T-thread BLAS, oversubscribing T cores.
Measured on t5-mini training with 2 cores: torch 2 x BLAS 2 took 1813 ms
per step against 1396 ms for torch 2 x BLAS 1, and the K-FAC operator of
merge_peer.py 0.91 s per CG iteration against 0.41 s for torch 1 x BLAS 2.
A fair peer is the faster split of the same T cores, so the benchmarks
time every split and report each one and the best.
"""
import ctypes

import torch

_blas = None


def _openblas():
    global _blas
    if _blas is None:
        _blas = False
        for name in ("libopenblas.so.0", "libopenblas.so", "libblas.so.3"):
            try:
                lib = ctypes.CDLL(name)
            except OSError:
                continue
            if hasattr(lib, "openblas_set_num_threads"):
                _blas = lib
                break
    return _blas


def splits(threads):
    """(label, torch threads, BLAS threads) for every split of `threads`
    cores: all to torch or all to OpenBLAS (one split if there is no
    OpenBLAS to set, or one thread)."""
    if threads <= 1:
        return [("torch 1 x BLAS 1", 1, 1)]
    if not _openblas():
        return [(f"torch {threads}", threads, None)]
    return [(f"torch {threads} x BLAS 1", threads, 1), (f"torch 1 x BLAS {threads}", 1, threads)]


def use(split):
    """Apply one split of splits()."""
    _, tt, bt = split
    torch.set_num_threads(tt)
    if bt is not None and _openblas():
        _openblas().openblas_set_num_threads(bt)
