#!/usr/bin/env bash
# merge_bench.sh - what `make bench-merge` runs (recipes/merge.mk).
#
# 1. t5-small shapes (d_model 512, d_ff 1024, 6x64 heads, 8+8 layers, vocab
#    32128), N random models with random positive-definite Grams and
#    positive diagonal Fishers (build/bin/mkrandom): wall time and peak RSS
#    of every method (slerp: the first two models; regmean_pp on
#    BENCH_MERGE_PP_EXAMPLES random examples per model, inputs of 8..64
#    tokens, its forward passes included); CG methods run exactly
#    ITERS iterations (--cg-tol 0). Only mats has a peer (part 2): the
#    other methods are timed alone.
# 2. mats seconds per CG iteration and GFLOP/s, beside the scipy/torch peer
#    (tests/reference/merge_peer.py) on the same artifacts, and the
#    backend's measured sgemm peak.
#    Because the machine is shared, also best-of-REPEAT timings of C and
#    peer on the block-0 linears, interleaved with sgemm peak measurements.
# 3. Plain vs Kronecker-preconditioned CG: iterations to reach the residual
#    of 100 plain iterations, on the linears of block 0 (bench_merge precond).
# 4. Peak RSS of the streaming methods on N models of t5-base size.
#
# Knobs (environment): BENCH_MERGE_DIR (build/bench-merge), BENCH_MERGE_N (8),
# BENCH_MERGE_PRESET (small; tiny for a smoke run), BENCH_MERGE_ITERS (5),
# BENCH_MERGE_REPEAT (3), BENCH_MERGE_PP_EXAMPLES (32), BENCH_MERGE_BASE (1; 0 skips part 4, which writes
# ~9 GB), MATS_THREADS. Generated inputs are kept and reused.
set -euo pipefail
DIR=${BENCH_MERGE_DIR:-build/bench-merge}
N=${BENCH_MERGE_N:-8}
ITERS=${BENCH_MERGE_ITERS:-5}
REPEAT=${BENCH_MERGE_REPEAT:-3}
PP_EX=${BENCH_MERGE_PP_EXAMPLES:-32}
BASE=${BENCH_MERGE_BASE:-1}
B=build/bin
PY=/usr/bin/python3

gen_set() { # preset dir stats(0/1)
    local preset=$1 d=$2 stats=$3
    mkdir -p "$d"
    [ -s "$d/pre.msgpack" ] || $B/mkrandom --kind model --preset "$preset" --seed 0 -o "$d/pre.msgpack"
    for ((i = 0; i < N; i++)); do
        [ -s "$d/m$i.msgpack" ] || $B/mkrandom --kind model --like "$d/pre.msgpack" --scale 0.01 --seed $((i + 1)) -o "$d/m$i.msgpack"
        if [ "$stats" = 1 ]; then
            [ -s "$d/t$i.msgpack" ] || $B/mkrandom --kind tokens --preset "$preset" --examples "$PP_EX" --seed $((i + 1)) -o "$d/t$i.msgpack"
            [ -s "$d/g$i.msgpack" ] || $B/mkrandom --kind gram --like "$d/m$i.msgpack" --seed $((i + 1)) -o "$d/g$i.msgpack"
            [ -s "$d/f$i.msgpack" ] || $B/mkrandom --kind fisher_diag --like "$d/m$i.msgpack" --seed $((i + 1)) -o "$d/f$i.msgpack"
        fi
    done
}
list() { local d=$1 p=$2 s=""; for ((i = 0; i < N; i++)); do s+="${s:+,}$d/$p$i.msgpack"; done; echo "$s"; }

# run_method LABEL DIR ARGS... : prints "LABEL seconds peakMiB" and keeps the log
run_method() {
    local label=$1 d=$2; shift 2
    local log="$d/$label.log"
    /usr/bin/time -f "TIME %e %M" $B/merge "$@" -o "$d/out_$label.msgpack" 2>"$log" >/dev/null ||
        { echo "merge $label failed:"; tail -3 "$log"; exit 1; }
    local t m
    read -r t m < <(awk '/^TIME/ {print $2, $3}' "$log")
    printf "%-22s %9.2f s %10.1f MiB\n" "$label" "$t" "$(awk -v m="$m" 'BEGIN{print m/1024}')"
}

echo "== merge benchmark: $N models, threads ${MATS_THREADS:-default}, $(date -u +%FT%TZ)"
S=$DIR/${BENCH_MERGE_PRESET:-small}
echo "-- generating t5-small inputs in $S (kept for reuse)"
gen_set "${BENCH_MERGE_PRESET:-small}" "$S" 1
M="--pretrained $S/pre.msgpack --models $(list "$S" m)"
G="--gram $(list "$S" g)"
F="--fisher $(list "$S" f)"
CG="--iterations $ITERS --cg-tol 0"
msize=$(stat -c %s "$S/m0.msgpack")
echo "-- ${BENCH_MERGE_PRESET:-small}, one model = $((msize / 1048576)) MiB; CG methods run $ITERS iterations"
printf "%-22s %11s %14s\n" method wall "peak RSS"
run_method average "$S" --method average $M
run_method task_arithmetic "$S" --method task_arithmetic --lambda 0.3 $M
run_method ties "$S" --method ties --lambda 1 $M
run_method dare_ties "$S" --method dare_ties --lambda 1 $M
run_method dare_linear "$S" --method dare_linear --lambda 0.3 $M
run_method breadcrumbs "$S" --method breadcrumbs --lambda 0.3 $M
run_method fisher "$S" --method fisher $M $F
run_method regmean "$S" --method regmean --lambda 0.9 $M $G
run_method cg_average "$S" --method cg_average $CG $M
run_method cg_fisher "$S" --method cg_fisher $CG $M $F
run_method cg_regmean "$S" --method cg_regmean --lambda 0.9 $CG $M $G
run_method mats "$S" --method mats --lambda 0.9 $CG $M $G
run_method mats_kron "$S" --method mats --lambda 0.9 --precondition kron $CG $M $G
run_method regmean_pp "$S" --method regmean_pp --lambda 0.9 --examples "$PP_EX" $M --data "$(list "$S" t)"
run_method iso_c "$S" --method iso_c --lambda 0.3 $M
run_method iso_cts "$S" --method iso_cts --lambda 0.3 $M
run_method tsv_m "$S" --method tsv_m --lambda 0.3 $M
run_method wudi "$S" --method wudi $CG $M
run_method model_stock "$S" --method model_stock $M
run_method slerp_2_models "$S" --method slerp --lambda 0.5 --pretrained "$S/pre.msgpack" --models "$S/m0.msgpack,$S/m1.msgpack"

echo "-- mats per CG iteration, whole model (144 linears; lm_head is averaged), one run each:"
grep -h "merge: cg:" "$S/mats.log" | sed 's/^/   C stage: /'
$PY tests/reference/merge_peer.py --models "$(list "$S" m)" --gram "$(list "$S" g)" --lambda 0.9 \
    --iterations "$ITERS" --compare "$S/out_mats.msgpack" | sed 's/^/   /'
# The machine is shared: the robust comparison is best-of-R on the block-0
# linears (every linear shape of the model), C and peer interleaved, with
# the sgemm peak measured in between.
echo "-- best of $REPEAT, block-0 linears (all 7 shapes), interleaved C / peer / sgemm, twice:"
for round in 1 2; do
    $B/bench_merge speed --models "$(list "$S" m)" --gram "$(list "$S" g)" --lambda 0.9 --filter .block.0. \
        --iterations "$ITERS" --repeat "$REPEAT" | sed "s/^/   [$round] /"
    $PY tests/reference/merge_peer.py --models "$(list "$S" m)" --gram "$(list "$S" g)" --lambda 0.9 \
        --filter .block.0. --iterations "$ITERS" --repeat "$REPEAT" | sed "s/^/   [$round] /"
    $B/bench_merge sgemm | tail -1 | sed "s/^/   [$round] /"
done
echo "-- the same with one thread each (per-core efficiency, least sensitive to other load):"
MATS_THREADS=1 $B/bench_merge speed --models "$(list "$S" m)" --gram "$(list "$S" g)" --lambda 0.9 --filter .block.0. \
    --iterations "$ITERS" --repeat "$REPEAT" | sed "s/^/   [1t] /"
$PY tests/reference/merge_peer.py --models "$(list "$S" m)" --gram "$(list "$S" g)" --lambda 0.9 \
    --filter .block.0. --iterations "$ITERS" --repeat "$REPEAT" --threads 1 | sed "s/^/   [1t] /"
MATS_THREADS=1 $B/bench_merge sgemm | tail -1 | sed "s/^/   [1t] /"
echo "-- Kronecker preconditioner: iterations to the residual of 100 plain iterations (block-0 linears, lambda 0.9)"
$B/bench_merge precond --models "$(list "$S" m)" --gram "$(list "$S" g)" --lambda 0.9 --filter .block.0. \
    --iterations 100 | sed 's/^/   /'

if [ "$BASE" = 1 ]; then
    T=$DIR/base
    echo "-- generating t5-base inputs in $T"
    gen_set base "$T" 0
    MB="--pretrained $T/pre.msgpack --models $(list "$T" m)"
    bsize=$(stat -c %s "$T/m0.msgpack")
    big=$((32128 * 768 * 4))
    echo "-- t5-base streaming: one model = $((bsize / 1048576)) MiB, largest tensor $((big / 1048576)) MiB," \
         "3 models + 1 tensor = $(((3 * bsize + big) / 1048576)) MiB"
    printf "%-22s %11s %14s\n" method wall "peak RSS"
    run_method average "$T" --method average $MB
    run_method task_arithmetic "$T" --method task_arithmetic --lambda 0.3 $MB
    run_method ties "$T" --method ties $MB
    run_method dare_ties "$T" --method dare_ties $MB
    rm -f "$T"/out_*.msgpack
fi
