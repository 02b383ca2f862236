"""The project's one RNG (lib/rng.h) in Python, for the references:
splitmix64, whose finaliser is mc_hash64."""

M64 = (1 << 64) - 1


def splitmix64(x):
    """splitmix64 of x: the state advanced once, then mixed (mc_hash64)."""
    x = (x + 0x9e3779b97f4a7c15) & M64
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M64
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)


def fnv1a(name):
    """FNV-1a of a tensor name (lib/merge_ops.c's mrg_hash_name)."""
    h = 1469598103934665603
    for ch in name.encode():
        h = ((h ^ ch) * 1099511628211) & M64
    return h


def dare_mask(seed, model, name, n, p):
    """The merge stage's DARE keep mask: 1 where
    (splitmix64(stream ^ j) >> 11) / 2^53 >= p, the stream from the seed, the
    model index and the tensor name's hash."""
    import torch
    stream = splitmix64(splitmix64(splitmix64(seed ^ 0x6a09e667f3bcc909) ^ model) ^ fnv1a(name))
    return torch.tensor([(splitmix64(stream ^ j) >> 11) / 2.0 ** 53 >= p for j in range(n)], dtype=torch.float64)
