"""The project's one RNG (lib/rng.h) in Python, for the references:
splitmix64, whose finaliser is mc_hash64."""

M64 = (1 << 64) - 1


def splitmix64(x):
    """splitmix64 of x: the state advanced once, then mixed (mc_hash64)."""
    x = (x + 0x9e3779b97f4a7c15) & M64
    x = ((x ^ (x >> 30)) * 0xbf58476d1ce4e5b9) & M64
    x = ((x ^ (x >> 27)) * 0x94d049bb133111eb) & M64
    return x ^ (x >> 31)
