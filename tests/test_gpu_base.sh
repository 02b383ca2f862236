#!/usr/bin/env bash
# scripts/gpu-base.sh on the smoke experiment, with the CPU standing in for
# the GPU (the recipe's train.device = cpu; the GPU machine runs the same
# script with `make GPU=1` and the recipe's cuda): pack the corpus tokens and
# the data's recipe, run the pretraining in a time budget (a budget it
# cannot fit stops before training, saying what would fit), collect the
# parts, install them as a release that base-release.sh check verifies; the
# base is the workflow's own `make pretrain` of that recipe, byte for byte
# and key for key. Bad parts are refused in one line.
set -u
source "$(dirname "$0")/lib.sh" mats-gpu-base
export MATS_CACHE=$T/cache
PRE=$T/pre.conf REC=$T/recipe.conf G=$T/gpu OUT=$T/out
printf 'include %s/configs/train/smoke-pretrain.conf\ntrain.steps = 40\ntrain.device = cpu\n' "$REPO" > "$PRE"
printf 'include %s/configs/experiments/smoke.conf\nexp.pretrain = %s\n' "$REPO" "$PRE" > "$REC"
gb() { CONF=$REC GPU_BASE_DIR=$G GPU_BASE_WORK=$T/work GPU_BASE_MAKE= OUT=$OUT bash scripts/gpu-base.sh "$@"; }
mkdir -p "$OUT"

if gb pack > "$T/pack.out" 2>&1 && [ -s "$G/corpus.msgpack.xz" ] && [ -s "$G/vocab.msgpack" ] &&
   [ -s "$G/recipe/tokens.key" ]; then ok pack_corpus_and_recipe
else fail pack_corpus_and_recipe "$(tail -3 "$T/pack.out")"; fi

# a budget too small for the run: stops after the bench, naming what fits;
# with --fit it trains what fits, records it in the key text, and the
# install refuses it until the recipe says so
gb run 1 > "$T/short.out" 2>&1
rc=$?
if [ $rc -eq 3 ] && grep -q "does not fit" "$T/short.out" && [ -z "$(ls "$OUT" | grep part)" ]; then ok run_budget_too_small
else fail run_budget_too_small "exit $rc: $(tail -2 "$T/short.out")"; fi

# (no periodic checkpoints: --fit sizes the run by train --bench, which
# writes none, and a fast CPU fits so many of the smoke model's tiny steps
# that a checkpoint every 10 of them outlasts the budget)
printf 'include %s\ntrain.steps = 100000\ntrain.ckpt_every = 0\n' "$PRE" > "$T/long.conf"
printf 'include %s/configs/experiments/smoke.conf\nexp.pretrain = %s\n' "$REPO" "$T/long.conf" > "$T/long-recipe.conf"
rm -rf "$OUT" && mkdir -p "$OUT"
CONF=$T/long-recipe.conf GPU_BASE_DIR=$G GPU_BASE_WORK=$T/work-fit GPU_BASE_MAKE= OUT=$OUT \
    bash scripts/gpu-base.sh run 120 --fit > "$T/fit.out" 2>&1
rc=$?
fit=$(sed -n 's/^gpu-base: --fit: \([0-9]*\) steps.*/\1/p' "$T/fit.out")
if [ $rc -eq 0 ] && [ -n "$fit" ] && [ "$fit" -ge 100 ] && [ "$fit" -lt 100000 ] && grep -qx "config train.steps=$fit" "$OUT/base.key" &&
   CONF=$T/long-recipe.conf GPU_BASE_DIR=$G bash scripts/gpu-base.sh collect "$OUT" > /dev/null 2>&1 &&
   ! CONF=$T/long-recipe.conf GPU_BASE_DIR=$G RELEASE=$T/relfit bash scripts/gpu-base.sh install > "$T/fitinst.out" 2>&1 &&
   grep -q "train.steps=100000" "$T/fitinst.out"; then ok run_fit_records_steps
else fail run_fit_records_steps "exit $rc, fit '${fit:-?}': $(tail -3 "$T/fit.out") $(tail -2 "$T/fitinst.out" 2>/dev/null)"; fi

rm -rf "$OUT" && mkdir -p "$OUT"
if gb run 600 > "$T/run.out" 2>&1 && ls "$OUT"/base.msgpack.part* >/dev/null 2>&1 &&
   grep -q "tokens/s" "$T/run.out"; then ok run_trains_and_writes_parts
else fail run_trains_and_writes_parts "$(tail -3 "$T/run.out")"; fi

# a part that is not the trained bytes
mkdir -p "$T/bad" && cp "$OUT"/* "$T/bad/" && printf 'x' >> "$(ls "$T"/bad/base.msgpack.part* | head -n 1)"
if ! out=$(CONF=$REC GPU_BASE_DIR=$T/badg bash scripts/gpu-base.sh collect "$T/bad" 2>&1) &&
   [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "do not add up" <<<"$out" && [ ! -e "$T/badg/base.msgpack" ]; then
    ok collect_refuses_bad_parts
else fail collect_refuses_bad_parts "$out"; fi

if gb collect "$OUT" > "$T/coll.out" 2>&1 && [ -s "$G/base.msgpack" ] &&
   RELEASE=$T/rel gb install > "$T/inst.out" 2>&1 && grep -q "verify; their recipe is" "$T/inst.out"; then
    ok collect_install_check
else fail collect_install_check "$(tail -3 "$T/coll.out" "$T/inst.out" 2>/dev/null)"; fi

# the workflow's own pretraining of the same recipe: the same key and bytes
wf=$(make --no-print-directory -s pretrain EXP="$REC" 2>/dev/null | sed -n 's/^pretrain: \([^ ]*\).*/\1/p')
if [ -n "$wf" ] && [ -s "$wf" ] && cmp -s "$wf" "$T/rel/base.msgpack" &&
   [ "$(build/bin/art key "$wf")" = "$(build/bin/art key "$T/rel/base.msgpack")" ]; then
    ok same_base_as_workflow
else fail same_base_as_workflow "workflow '$wf' against $T/rel/base.msgpack"; fi
