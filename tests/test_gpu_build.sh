#!/usr/bin/env bash
# test_gpu_build.sh - the CUDA backend keeps compiling and linking:
# where nvcc exists, build a copy of the sources with `make GPU=1` (every
# stage, tool and build/gpu/gpu_check) and fail on any compiler warning.
# Runs in a temporary copy so the main build/ keeps its flags. No GPU needed.
set -u
cd "$(dirname "$0")/.."
nvcc=$(command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar --exclude=./build --exclude=./cache --exclude=./.git -cf - . | tar -xf - -C "$tmp"
log="$tmp/build.log"
if [ -z "$nvcc" ]; then
    echo "skip gpu_build: no nvcc on this machine"
elif env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$tmp" GPU=1 -j2 all >"$log" 2>&1; then
    if grep -E -i -q "warning:|error:" "$log"; then
        grep -E -i "warning:|error:" "$log" | head -20
        echo "FAIL gpu_build (warnings)"
    elif [ -x "$tmp/build/gpu/gpu_check" ]; then
        echo "ok gpu_build"
    else
        echo "FAIL gpu_build (build/gpu/gpu_check missing)"
    fi
else
    tail -30 "$log"
    echo "FAIL gpu_build"
fi
# Without GPU=1, DEVICE=cuda is refused by make with one line.
if out=$(env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$tmp" DEVICE=cuda -n all 2>&1); then
    echo "FAIL device_cuda_needs_gpu (make accepted DEVICE=cuda without GPU=1)"
elif [ "$(printf '%s\n' "$out" | grep -c 'GPU=1')" -ge 1 ]; then
    echo "ok device_cuda_needs_gpu"
else
    printf '%s\n' "$out" | tail -3
    echo "FAIL device_cuda_needs_gpu"
fi
