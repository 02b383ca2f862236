#!/usr/bin/env bash
# scripts/gpu-check.sh - check the CUDA backend on a machine with an NVIDIA GPU
# (what it runs):
#   1. build/gpu/gpu_check: every GPU op against the CPU op (normalised error
#      and tolerance per op), one t5-base training step (lib/t5.c moved to
#      the GPU with t5_to_device) against the CPU, then timings: GEMM, ops,
#      Fisher/Gram, CG per iteration on t5-large-sized K-FAC statistics,
#      training tokens/s;
#   2. a `mats` merge of random t5-small-shaped artifacts with the merge
#      stage on the CPU and with --device cuda (its K-FAC operator on the
#      GPU), compared with `art diff`;
#   3. the real stages with --device cuda against --device cpu on the same
#      inputs (t5-mini, synthetic tokens): train (full, AdamW; IA3,
#      Adafactor), eval, fisher (diagonal full; blockwise IA3), gram, and a
#      mats merge of two trained models with their Grams; a table of the
#      largest relative difference per artifact (`art diff --tol`);
#   4. train on cuda under `mpirun -n 1` (and `-n 2` with NCCL where the
#      machine has two GPUs) against one process accumulating the same two
#      micro-batches: the same bytes (docs/ranks.md); skipped without mpirun.
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
for b in build/gpu/gpu_check build/bin/merge build/bin/mkrandom build/bin/art build/tests/test_t5_data; do
    [ -x $b ] || { make GPU=1 all build/tests/test_t5_data >&2 || exit 1; break; }
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
run() { # label device out [env]
    local label=$1 dev=$2 out=$3 t0 t1
    t0=$(date +%s.%N)
    if ! timeout "$T" env ${4:-MATS_GPU_MATH=fp32} $B/merge --device "$dev" "${args[@]}" -o "$out" 2>"$tmp/log"; then
        cat "$tmp/log"; echo "  $label: FAIL (merge exited non-zero)"; return 1
    fi
    t1=$(date +%s.%N)
    printf '  %-22s %6.2f s  %s; %s\n' "$label" "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
        "$(grep -o '[0-9.]*s in CG, [0-9.]*s per iteration, K-FAC [0-9.]* GFLOP/s' "$tmp/log")" \
        "$(grep -o 'worst relative residual [0-9.e+-]*' "$tmp/log")"
}
run "cpu (OpenBLAS)" cpu "$tmp/cpu.msgpack" || rc=1
run "gpu fp32" cuda "$tmp/gpu.msgpack" || rc=1
run "gpu tf32" cuda "$tmp/tf32.msgpack" MATS_GPU_MATH=tf32 || rc=1
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
echo "stages with --device cuda against --device cpu (t5-mini, synthetic tokens, fp32; every"
echo "stage reads the same CPU-made inputs, so each row is that stage's own difference)"
D=$tmp/stages
mkdir -p "$D"
build/tests/test_t5_data --write "$D" >/dev/null 2>&1 || { echo "gpu-check: test_t5_data --write failed"; exit 1; }
cat > "$D/exp.conf" <<CONF
include $PWD/configs/models/t5-mini.conf
train.steps = 4
train.batch_size = 8
train.lr = 1e-4
train.max_input_len = 32
train.max_target_len = 8
train.ckpt_every = 0
CONF
export MATS_PROGRESS_SECONDS=1000 MATS_GPU_MATH=fp32
K=0123456789abcdef0123456789abcdef
printf '  %-26s %8s %8s %12s %9s  %s\n' "stage" "cpu s" "cuda s" "max rel diff" "tolerance" "result"
stage() { # label tolerance output-name command... (run with --device cpu and cuda)
    local label=$1 tol=$2 name=$3 dev t0 t1 tc tg d res
    shift 3
    for dev in cpu cuda; do
        t0=$(date +%s.%N)
        if ! timeout "$T" "$@" --device $dev --key $K -o "$D/$name.$dev.msgpack" >"$D/$name.$dev.out" 2>"$D/$name.$dev.log"; then
            tail -3 "$D/$name.$dev.log"
            printf '  %-26s %s\n' "$label" "FAIL (--device $dev exited non-zero)"
            rc=1
            return 1
        fi
        t1=$(date +%s.%N)
        [ $dev = cpu ] && tc=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') ||
            tg=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
    done
    d=$($B/art diff "$D/$name.cuda.msgpack" "$D/$name.cpu.msgpack" --tol "$tol" 2>&1) && res=ok || { res=FAIL; rc=1; }
    # eval also prints its accuracy table: the same on both devices
    if [ $name = eval ] && ! diff -q "$D/$name.cpu.out" "$D/$name.cuda.out" >/dev/null; then
        diff "$D/$name.cpu.out" "$D/$name.cuda.out" | head -6
        res="FAIL (accuracy table differs)"
        rc=1
    fi
    printf '  %-26s %8s %8s %12s %9s  %s\n' "$label" "$tc" "$tg" \
        "$(printf '%s\n' "$d" | awk '/^max rel difference/ {print $4}')" "$tol" "$res"
}
C="--config $D/exp.conf"
# inputs made once on the CPU
$B/train $C --data "$D/train.msgpack" --device cpu -o "$D/full.msgpack" 2>/dev/null &&
$B/train $C --set train.seed=1 --data "$D/other.msgpack" --device cpu -o "$D/full2.msgpack" 2>/dev/null &&
$B/train $C --mode ia3 --set train.optimizer=adafactor --set train.lr=3e-3 --init "$D/full.msgpack" \
    --data "$D/train.msgpack" --device cpu -o "$D/ia3.msgpack" 2>/dev/null ||
    { echo "gpu-check: making the CPU inputs failed"; exit 1; }
# AdamW's first steps and Adafactor on vectors move each entry by about
# lr * sign(g): an entry whose gradient is zero up to rounding may step the
# other way on the other device, 2 lr apart (2e-4 here, against tensors
# whose largest entry is 0.1 or more), hence 5e-3 for the training rows
stage "train full adamw 4 steps" 5e-3 train_full $B/train $C --set train.clip=1 --data "$D/train.msgpack"
stage "train ia3 adafactor" 5e-3 train_ia3 $B/train $C --mode ia3 --set train.optimizer=adafactor \
    --set train.lr=1e-4 --init "$D/full.msgpack" --data "$D/train.msgpack"
stage "eval full + ia3" 1e-4 eval $B/eval --model "$D/full.msgpack" --ia3 "$D/ia3.msgpack" \
    --data "$D/test.msgpack,$D/other_test.msgpack"
stage "fisher diagonal full" 1e-3 fisher_full $B/fisher --model "$D/full.msgpack" \
    --data "$D/train.msgpack" --type diagonal --examples 64
stage "fisher blockwise ia3" 1e-3 fisher_block $B/fisher --model "$D/full.msgpack" --ia3 "$D/ia3.msgpack" \
    --data "$D/train.msgpack" --type blockwise --examples 64
stage "gram" 1e-4 gram $B/gram --model "$D/full.msgpack" --data "$D/train.msgpack" --examples 64
$B/gram --model "$D/full2.msgpack" --data "$D/other.msgpack" --examples 64 --device cpu \
    -o "$D/gram2.cpu.msgpack" 2>/dev/null || { echo "gpu-check: gram of the second model failed"; rc=1; }
# The mats system of these 4-step models is nearly singular (the first
# decoder layer's input Gram has rank 7 of 256): after 50 CG iterations its
# result moves by about 1% when lambda moves by 1e-7, so float rounding
# alone separates any two machines by that much. The tolerance is therefore
# the CPU's own spread under that change of lambda (times 2, at least 1e-3),
# printed beside the row; part 2 checks the operator itself strictly.
MATS_ARGS=(--method mats --pretrained "$D/full.msgpack" --models "$D/full.msgpack,$D/full2.msgpack"
           --gram "$D/gram.cpu.msgpack,$D/gram2.cpu.msgpack" --iterations 50)
mats_row() { # label name extra-args...
    local label=$1 name=$2 spread tol=1e-3
    shift 2
    if $B/merge "${MATS_ARGS[@]}" "$@" --lambda 1 --device cpu -o "$D/$name.l1.msgpack" 2>/dev/null &&
       $B/merge "${MATS_ARGS[@]}" "$@" --lambda 0.9999999 --device cpu -o "$D/$name.l2.msgpack" 2>/dev/null; then
        spread=$($B/art diff "$D/$name.l1.msgpack" "$D/$name.l2.msgpack" | awk '/^max rel difference/ {print $4}')
        tol=$(awk -v s="$spread" 'BEGIN {t = 2 * s; print (t > 1e-3 ? t : 1e-3)}')
        echo "  ($label: the CPU's own result moves by $spread when lambda goes from 1 to 0.9999999)"
    else
        echo "  gpu-check: the CPU merges for the $label tolerance failed"; rc=1
    fi
    stage "$label" "$tol" "$name" $B/merge "${MATS_ARGS[@]}" "$@"
}
mats_row "mats merge (K-FAC CG)" mats
mats_row "mats merge, kron PCG" mats_kron --precondition kron
echo

# Ranks (docs/ranks.md): train on cuda under mpirun, one GPU per rank; the
# bytes must be those of one rank accumulating the same micro-batches. One
# rank against the plain run; two ranks (NCCL) where there are two GPUs.
ranks_row() { # label ranks output-name
    local label=$1 n=$2 name=$3
    if mpirun --allow-run-as-root -q --oversubscribe -n "$n" $B/train $C --set train.grad_accum=2 \
           --data "$D/train.msgpack" --device cuda --key $K -o "$D/$name.msgpack" 2>"$D/$name.log" &&
       cmp -s "$D/$name.msgpack" "$D/accum.cuda.msgpack"; then
        printf '  %-40s %s\n' "$label" "ok (the same bytes as 1 process accumulating 2 micro-batches)"
    else
        tail -3 "$D/$name.log"; printf '  %-40s %s\n' "$label" "FAIL"; rc=1
    fi
}
if ! command -v mpirun >/dev/null 2>&1; then
    echo "ranks on cuda: no mpirun on this machine; not checked"
elif ! $B/train $C --set train.grad_accum=2 --data "$D/train.msgpack" --device cuda --key $K \
        -o "$D/accum.cuda.msgpack" 2>"$D/accum.log"; then
    tail -3 "$D/accum.log"; echo "ranks on cuda: the 1-process run failed"; rc=1
else
    echo "ranks on cuda ($(nvidia-smi -L | wc -l) GPUs):"
    ranks_row "train, mpirun -n 1, cuda" 1 rank1
    if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then ranks_row "train, mpirun -n 2, cuda (NCCL)" 2 rank2
    else echo "  train on 2 ranks (NCCL): one GPU here; not checked"; fi
fi
echo
[ $rc = 0 ] && echo "gpu-check: all passed" || echo "gpu-check: FAILED"
exit $rc
