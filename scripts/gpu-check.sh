#!/usr/bin/env bash
# scripts/gpu-check.sh - check the CUDA backend on a machine with an NVIDIA GPU
# (issue 9): every GPU op against the CPU op (normalised error and tolerance
# per op), one t5-base training step on GPU vs CPU, then timings (GEMM, ops,
# Fisher/Gram, CG per iteration on t5-large-sized K-FAC statistics, training
# tokens/s). Exits 0 when every row passes, 1 when one fails, 2 without a GPU.
#
#   bash scripts/gpu-check.sh [--no-t5] [--no-timing]
#
# Builds build/gpu/gpu_check with `make GPU=1` when it is missing; a full run
# takes about two minutes on an H100 and is cut off after GPU_CHECK_TIMEOUT
# seconds (default 290).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU visible (nvidia-smi finds none); run it on a machine with one" >&2
    exit 2
fi
if [ ! -x build/gpu/gpu_check ]; then
    make GPU=1 build/gpu/gpu_check >&2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
exec timeout "${GPU_CHECK_TIMEOUT:-290}" build/gpu/gpu_check "$@"
