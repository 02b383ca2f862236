#!/usr/bin/env bash
# scripts/gpu-check.sh - check the CUDA backend on a machine with an NVIDIA GPU
# (issue 9):
#   1. build/gpu/gpu_check: every GPU op against the CPU op (normalised error
#      and tolerance per op), one t5-base training step (lib/t5.c with its
#      ops on the GPU) against the CPU, then timings: GEMM, ops, Fisher/Gram,
#      CG per iteration on t5-large-sized K-FAC statistics, training tokens/s;
#   2. a `mats` merge of random t5-small-shaped artifacts with the merge
#      stage on the CPU (build/bin/merge) and with its K-FAC operator on the
#      GPU (build/gpu/merge_gpu), compared with `art diff`.
# Exits 0 when everything passes, 1 when something fails, 2 without a GPU.
#
#   bash scripts/gpu-check.sh [--no-t5] [--no-timing]     (options go to gpu_check)
#
# Builds what is missing with `make GPU=1`. About a minute and a half on an
# H100; each part is cut off after GPU_CHECK_TIMEOUT seconds (default 200).
set -uo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU visible (nvidia-smi finds none); run it on a machine with one" >&2
    exit 2
fi
for b in build/gpu/gpu_check build/gpu/merge_gpu build/bin/merge build/bin/mkrandom build/bin/art; do
    [ -x $b ] || { make GPU=1 all >&2 || exit 1; break; }
done
T=${GPU_CHECK_TIMEOUT:-200}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
timeout "$T" build/gpu/gpu_check "$@"
rc=$?

echo
echo "mats merge, GPU vs CPU: t5-small shapes (d_model 512, d_ff 1024, 8+8 layers, vocab 1000),"
echo "3 task models with K-FAC Grams (mkrandom --spread 0: well conditioned, so 20 CG iterations"
echo "converge and the two solutions must agree; with the default spread 0.5 a 1e-7 change of"
echo "lambda alone moves the CPU result by 4% after 20 iterations), --cg-tol 0, lambda 0.9"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
B=build/bin
mk() { $B/mkrandom "$@" >/dev/null 2>&1 || { echo "gpu-check: mkrandom $* failed" >&2; exit 1; }; }
mk --kind model --preset small --vocab 1000 --seed 1 -o "$tmp/pre.msgpack"
models= grams=
for s in 2 3 4; do
    mk --kind model --like "$tmp/pre.msgpack" --scale 0.01 --seed $s -o "$tmp/m$s.msgpack"
    mk --kind gram --like "$tmp/m$s.msgpack" --seed $s --spread 0 -o "$tmp/g$s.msgpack"
    models="$models${models:+,}$tmp/m$s.msgpack" grams="$grams${grams:+,}$tmp/g$s.msgpack"
done
args=(--method mats --pretrained "$tmp/pre.msgpack" --models "$models" --gram "$grams"
      --lambda 0.9 --iterations 20 --cg-tol 0)
run() { # label binary out [env]
    local label=$1 bin=$2 out=$3 t0 t1
    t0=$(date +%s.%N)
    if ! timeout "$T" env ${4:-MATS_GPU_MATH=fp32} "$bin" "${args[@]}" -o "$out" 2>"$tmp/log"; then
        cat "$tmp/log"; echo "  $label: FAIL (merge exited non-zero)"; return 1
    fi
    t1=$(date +%s.%N)
    printf '  %-22s %6.2f s  %s; %s\n' "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
        "$(grep -o '[0-9.]*s in CG, [0-9.]*s per iteration, K-FAC [0-9.]* GFLOP/s' "$tmp/log")" \
        "$(grep -o 'worst relative residual [0-9.e+-]*' "$tmp/log")"
}
run "cpu (OpenBLAS)" $B/merge "$tmp/cpu.msgpack" || rc=1
run "gpu fp32" build/gpu/merge_gpu "$tmp/gpu.msgpack" || rc=1
run "gpu tf32" build/gpu/merge_gpu "$tmp/tf32.msgpack" MATS_GPU_MATH=tf32 || rc=1
if [ -e "$tmp/cpu.msgpack" ] && [ -e "$tmp/gpu.msgpack" ]; then
    d=$($B/art diff "$tmp/cpu.msgpack" "$tmp/gpu.msgpack" --tol 1e-4 2>&1); drc=$?
    echo "  gpu fp32 vs cpu: $(printf '%s\n' "$d" | grep '^max rel difference')  (tolerance 1e-4)  $([ $drc = 0 ] && echo ok || echo FAIL)"
    [ $drc = 0 ] || rc=1
fi
if [ -e "$tmp/cpu.msgpack" ] && [ -e "$tmp/tf32.msgpack" ]; then
    d=$($B/art diff "$tmp/cpu.msgpack" "$tmp/tf32.msgpack" 2>&1)
    echo "  gpu tf32 vs cpu: $(printf '%s\n' "$d" | grep '^max rel difference')  (information)"
fi
echo
[ $rc = 0 ] && echo "gpu-check: all passed" || echo "gpu-check: FAILED"
exit $rc
