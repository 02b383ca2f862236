#!/usr/bin/env bash
# train and eval end to end on synthetic tokens artifacts (t5-micro):
# fine-tuning learns, multitask, span-corruption pretraining, IA3 on top,
# resume after a kill gives the same bytes, bad input fails with one line.
set -u
source "$(dirname "$0")/t5_data_env.sh" test_t5_stages "train.steps = 150" "train.batch_size = 16" "train.lr = 3e-3"
# acc METRICS TASK: the task's accuracy, read inside meta.accuracy (n_examples
# has the same keys); fails unless it is a number in [0, 1]
acc() {
    build/bin/art show "$1" | awk -v t="\"$2\":" '
        $1 == "\"accuracy\":" { inacc = 1; next }
        inacc && $1 ~ /^}/ { exit 1 }
        inacc && $1 == t { v = $2; sub(",", "", v); if (v ~ /^[0-9.e+-]+$/ && v + 0 >= 0 && v + 0 <= 1) { print v; found = 1 }; exit }
        END { exit !found }'
}
ge() { [ -n "$1" ] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }

# 1. full fine-tuning with validation / early stopping
if build/bin/train --config "$T/exp.conf" --set train.eval_every=50 --set train.patience=2 \
     --data "$T/train.msgpack" --valid "$T/valid.msgpack" -o "$T/full.msgpack" 2>"$T/log1" &&
   build/bin/eval --model "$T/full.msgpack" --data "$T/test.msgpack" -o "$T/m1.msgpack" >"$T/table1" 2>&1 &&
   a=$(acc "$T/m1.msgpack" has7) && ge "$a" 0.9; then
    ok train_full_learns
else fail train_full_learns "accuracy ${a:-?} (majority 0.56)"; cat "$T/log1" "$T/table1" 2>/dev/null; fi

# 2. multitask mixture: both tasks learned by one model
if build/bin/train --config "$T/exp.conf" --set train.steps=300 \
     --data "$T/train.msgpack,$T/other.msgpack" -o "$T/multi.msgpack" 2>"$T/log2" &&
   build/bin/eval --model "$T/multi.msgpack" --data "$T/test.msgpack,$T/other_test.msgpack" -o "$T/m2.msgpack" >"$T/table2" 2>&1 &&
   a=$(acc "$T/m2.msgpack" has7) && b=$(acc "$T/m2.msgpack" has9or5) && ge "$a" 0.85 && ge "$b" 0.7; then
    ok train_multitask
else fail train_multitask "has7 ${a:-?} has9or5 ${b:-?}"; cat "$T/log2" "$T/table2" 2>/dev/null; fi

# 3. span-corruption pretraining, then IA3 on that base
if build/bin/train --config "$T/exp.conf" --objective span_corruption --set train.steps=120 \
     --set train.max_target_len=16 --data "$T/corpus.msgpack" -o "$T/base.msgpack" 2>"$T/log3" &&
   l=$(build/bin/art show "$T/base.msgpack" | awk '$1 == "\"final_loss\":" { sub(",", "", $2); print $2 }') &&
   [ -n "$l" ] && awk -v l="$l" 'BEGIN { exit !(l + 0 < 3.5) }'; then
    ok pretrain_span_corruption
else fail pretrain_span_corruption "final loss ${l:-?} (ln 128 = 4.85)"; cat "$T/log3"; fi
base_key=$(build/bin/art show "$T/base.msgpack" | awk '$1 == "key" { print $2 }')
if build/bin/train --config "$T/exp.conf" --mode ia3 --set train.lr=3e-2 --set train.steps=200 \
     --init "$T/base.msgpack" --data "$T/train.msgpack" -o "$T/ia3.msgpack" 2>"$T/log4" &&
   build/bin/art show "$T/ia3.msgpack" | grep -q "\"base\": \"$base_key\"" &&
   build/bin/eval --model "$T/base.msgpack" --ia3 "$T/ia3.msgpack" --data "$T/test.msgpack" -o "$T/m4.msgpack" >"$T/table4" 2>&1 &&
   build/bin/eval --model "$T/base.msgpack" --data "$T/test.msgpack" -o "$T/m5.msgpack" >/dev/null 2>&1 &&
   a=$(acc "$T/m4.msgpack" has7) && b=$(acc "$T/m5.msgpack" has7) && ge "$a" "$(awk -v b="$b" 'BEGIN{print b + 0.1}')"; then
    ok train_ia3
else fail train_ia3 "ia3 ${a:-?} vs base ${b:-?}"; cat "$T/log4" "$T/table4" 2>/dev/null; fi
if ! build/bin/eval --model "$T/full.msgpack" --ia3 "$T/ia3.msgpack" --data "$T/test.msgpack" -o "$T/m6.msgpack" 2>"$T/err6" >/dev/null &&
   [ "$(wc -l <"$T/err6")" -eq 1 ] && grep -q "another base" "$T/err6"; then
    ok eval_ia3_wrong_base
else fail eval_ia3_wrong_base "$(cat "$T/err6")"; fi

# eval batches examples by input length: one example per batch (no
# padding, no sorting) gives the same predictions and scores up to rounding
if build/bin/eval --model "$T/full.msgpack" --data "$T/test.msgpack" --set eval.batch_size=1 \
     -o "$T/m1b.msgpack" >/dev/null 2>&1 &&
   build/bin/art diff "$T/m1.msgpack" "$T/m1b.msgpack" >"$T/diff1" 2>&1;
   awk '$1 == "prediction" && $2 == 0 { p = 1 } $1 == "choice_scores" && $3 + 0 < 1e-5 { s = 1 }
        END { exit !(p && s) }' "$T/diff1"; then
    ok eval_length_order
else fail eval_length_order "$(cat "$T/diff1")"; fi
# eval.max_examples: only the first N examples of each set
if build/bin/eval --model "$T/full.msgpack" --data "$T/test.msgpack,$T/other_test.msgpack" --set eval.max_examples=7 \
     -o "$T/m7.msgpack" >/dev/null 2>&1 &&
   build/bin/art show "$T/m7.msgpack" >"$T/show7" &&
   grep -Eq '"has7": 7,?$' "$T/show7" && grep -Eq 'prediction +i32 +\[14\]' "$T/show7"; then
    ok eval_max_examples
else fail eval_max_examples "$(cat "$T/show7" 2>/dev/null | head -30)"; fi

# 4. resume after SIGKILL: same bytes as an uninterrupted run (under a
# warmup + cosine schedule with weight decay, so the schedule's position
# must resume too)
args=(--config "$T/exp.conf" --set train.steps=400 --set train.ckpt_every=10 --set train.eval_every=100
      --set train.schedule=cosine --set train.warmup_steps=40 --set train.weight_decay=0.01
      --data "$T/train.msgpack" --valid "$T/valid.msgpack")
build/bin/train "${args[@]}" -o "$T/a.msgpack" 2>"$T/log6" || fail train_resume_uninterrupted "$(tail -1 "$T/log6")"
# killed right after the checkpoint of step 150 (a test hook in train), then
# rerun; and once more at a random checkpoint (seed printed)
had_ckpt=0
for at in 150 $((10 * (1 + ${MATS_KILL_SEED:-$RANDOM} % 39))); do
    rm -f "$T/b.msgpack" "$T/b.msgpack.ckpt"
    MATS_TEST_KILL_AFTER_CKPT=$at build/bin/train "${args[@]}" -o "$T/b.msgpack" 2>/dev/null &
    wait $! 2>/dev/null
    rc=$?
    [ $rc -eq 137 ] && [ -e "$T/b.msgpack.ckpt" ] && [ ! -e "$T/b.msgpack" ] && had_ckpt=$((had_ckpt + 1))
    build/bin/train "${args[@]}" -o "$T/b.msgpack" 2>"$T/log7"
    if [ -s "$T/a.msgpack" ] && [ ! -e "$T/b.msgpack.ckpt" ] && grep -q "resuming .* from step $at\$" "$T/log7" &&
       cmp -s "$T/a.msgpack" "$T/b.msgpack"; then
        ok "train_resume_same_bytes (killed at step $at)"
    else fail train_resume_same_bytes "killed at $at (exit $rc); $(grep resuming "$T/log7")"; cmp "$T/a.msgpack" "$T/b.msgpack"; fi
done
[ $had_ckpt -eq 2 ] || fail train_kill_hook "the kill hook left no checkpoint ($had_ckpt of 2)"
# a stop signal (SIGTERM, as scancel and preemption send; SIGUSR1) ends the
# run after the step in progress with a checkpoint of that step, then by
# the signal (status 128 + it); the rerun resumes there to the same bytes.
# No periodic checkpoints here, so the resume can only be from the stop's.
sargs=("${args[@]}" --set train.ckpt_every=0)
build/bin/train "${sargs[@]}" -o "$T/a0.msgpack" 2>/dev/null
for sig in TERM USR1; do
    rm -f "$T/c.msgpack" "$T/c.msgpack.ckpt"
    MATS_PROGRESS_SECONDS=0 build/bin/train "${sargs[@]}" -o "$T/c.msgpack" 2>"$T/log8" &
    pid=$!
    for _ in $(seq 400); do grep -Eq '\] ([3-9]|[1-9][0-9]+)/400 steps' "$T/log8" && break; sleep 0.02; done
    kill -$sig $pid
    { wait $pid; } 2>/dev/null
    rc=$?
    at=$(sed -n 's/.*stopped by signal [0-9]* ([^)]*) after step \([0-9]*\) of 400.*/\1/p' "$T/log8")
    build/bin/train "${sargs[@]}" -o "$T/c.msgpack" 2>"$T/log9"
    want=$((128 + $(kill -l $sig)))
    if [ "$rc" -eq "$want" ] && [ -n "$at" ] && [ "$at" -lt 400 ] && grep -q "resuming .* from step $at\$" "$T/log9" &&
       [ ! -e "$T/c.msgpack.ckpt" ] && cmp -s "$T/a0.msgpack" "$T/c.msgpack"; then
        ok "train_stop_signal_resumes (SIG$sig after step $at)"
    else fail train_stop_signal_resumes "SIG$sig: exit $rc (want $want), stopped at '${at}'; $(grep -E 'stopped|resuming' "$T/log8" "$T/log9" | tr '\n' '|')"; fi
done

# the schedule and the decay each act: the weights differ from those of a
# constant-lr run without decay (art diff runs, then exceeds the tolerance)
differs() { build/bin/art diff "$1" "$2" >/dev/null 2>&1 && ! build/bin/art diff "$1" "$2" --tol 1e-3 >/dev/null 2>&1; }
base=(--config "$T/exp.conf" --set train.steps=400 --set train.ckpt_every=0 --set train.eval_every=100
      --data "$T/train.msgpack" --valid "$T/valid.msgpack")
if build/bin/train "${base[@]}" -o "$T/c.msgpack" 2>/dev/null &&
   build/bin/train "${base[@]}" --set train.schedule=cosine --set train.warmup_steps=40 -o "$T/d.msgpack" 2>"$T/log8" &&
   build/bin/train "${base[@]}" --set train.weight_decay=0.01 -o "$T/e.msgpack" 2>/dev/null &&
   differs "$T/c.msgpack" "$T/d.msgpack" && differs "$T/c.msgpack" "$T/e.msgpack" && grep -q "cosine, warmup 40" "$T/log8"; then
    ok train_schedule_and_decay_act
else fail train_schedule_and_decay_act "$(head -1 "$T/log8")"; fi

# early stopping keeps the best weights: the run stops after `patience`
# evaluations without improvement, and its output is exactly the weights of
# a run that trains to its best step (constant lr; validation draws nothing)
pa=(--config "$T/exp.conf" --set train.ckpt_every=0 --data "$T/train.msgpack")
if build/bin/train "${pa[@]}" --set train.steps=1000 --set train.eval_every=20 --set train.patience=2 \
       --valid "$T/valid.msgpack" -o "$T/p.msgpack" 2>"$T/logp" &&
   bs=$(build/bin/art show "$T/p.msgpack" | awk '$1 == "\"best_step\":" { sub(",", "", $2); print $2 }') &&
   st=$(build/bin/art show "$T/p.msgpack" | awk '$1 == "\"steps\":" { sub(",", "", $2); print $2 }') &&
   [ -n "$bs" ] && [ -n "$st" ] && [ "$bs" -gt 0 ] && [ "$st" -lt 1000 ] && [ "$bs" -lt "$st" ] &&
   grep -q "early stop" "$T/logp" &&
   build/bin/train "${pa[@]}" --set train.steps="$bs" -o "$T/pb.msgpack" 2>/dev/null &&
   build/bin/train "${pa[@]}" --set train.steps="$st" -o "$T/ps.msgpack" 2>/dev/null &&
   build/bin/art diff "$T/p.msgpack" "$T/pb.msgpack" --tol 0 >/dev/null 2>&1 && differs "$T/p.msgpack" "$T/ps.msgpack"; then
    ok "train_early_stop_keeps_best (best step $bs, stopped at $st)"
else fail train_early_stop_keeps_best "best_step ${bs:-?} steps ${st:-?}; $(grep -c 'early stop' "$T/logp") early-stop lines"; fi

# gradient accumulation: batch 16 in one pass, in 2 and in 4 micro-batches
# give the same weights to float rounding, on targets of 2, 3 and 4 tokens
# (so micro-batches hold different numbers of target tokens and a plain mean
# of their means would differ: 6-8% before train weighted them); batch 8
# (other examples) does not
ga=(--config "$T/exp.conf" --set train.steps=30 --set train.ckpt_every=0 --data "$T/ragged.msgpack")
if build/bin/train "${ga[@]}" -o "$T/g1.msgpack" 2>/dev/null &&
   build/bin/train "${ga[@]}" --set train.grad_accum=2 -o "$T/g2.msgpack" 2>/dev/null &&
   build/bin/train "${ga[@]}" --set train.grad_accum=4 -o "$T/g4.msgpack" 2>/dev/null &&
   build/bin/train "${ga[@]}" --set train.batch_size=8 -o "$T/g8.msgpack" 2>/dev/null &&
   build/bin/art diff "$T/g1.msgpack" "$T/g2.msgpack" --tol 1e-4 >"$T/gd2" 2>&1 &&
   build/bin/art diff "$T/g1.msgpack" "$T/g4.msgpack" --tol 1e-4 >"$T/gd4" 2>&1 &&
   ! build/bin/art diff "$T/g1.msgpack" "$T/g8.msgpack" --tol 1e-3 >/dev/null 2>&1; then
    ok "train_grad_accum_same_weights ($(tail -1 "$T/gd2" | grep -o 'difference [^ ]*'), $(tail -1 "$T/gd4" | grep -o 'difference [^ ]*'))"
else fail train_grad_accum_same_weights "$(tail -1 "$T/gd2" 2>/dev/null); $(tail -1 "$T/gd4" 2>/dev/null)"; fi

# the multitask mixture: examples-proportional (400 : 300 -> 57.1 %), and
# train.mixture_cap = 100 caps both sets to equal rates; the examples drawn
# over the run follow the rates (2400 draws: 3 standard errors is 3 points)
drawn() { sed -n 's/.*drawn over 2400 examples: has7 \([0-9.]*\)%.*/\1/p' "$1"; }
mx=(--config "$T/exp.conf" --set train.steps=150 --set train.ckpt_every=0 --data "$T/train.msgpack,$T/other.msgpack")
if build/bin/train "${mx[@]}" -o "$T/mx1.msgpack" 2>"$T/logm1" &&
   build/bin/train "${mx[@]}" --set train.mixture_cap=100 -o "$T/mx2.msgpack" 2>"$T/logm2" &&
   d1=$(drawn "$T/logm1") && d2=$(drawn "$T/logm2") && [ -n "$d1" ] && [ -n "$d2" ] &&
   grep -q "has7 57.1% (400), has9or5 42.9% (300)" "$T/logm1" && grep -q "has7 50.0% (400), has9or5 50.0% (300)" "$T/logm2" &&
   awk -v a="$d1" -v b="$d2" 'BEGIN { exit !(a > 54.1 && a < 60.1 && b > 47 && b < 53) }'; then
    ok "train_mixture_rates (drew has7 ${d1}% uncapped, ${d2}% capped)"
else fail train_mixture_rates "drew ${d1:-?} / ${d2:-?}; $(grep mixture "$T/logm1" "$T/logm2")"; fi

# 4b. cpu_math = bf16 (AMX products, or vdpbf16ps without AMX): learns as
# float32 does, the same bytes on one thread and on two, MATS_CPU_MATH equal
# to the config key, and a key apart from float32's
if grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo; then
    bf=(--config "$T/exp.conf" --data "$T/train.msgpack")
    if MATS_THREADS=1 build/bin/train "${bf[@]}" --set train.cpu_math=bf16 -o "$T/bf1.msgpack" 2>"$T/logb1" &&
       MATS_THREADS=2 build/bin/train "${bf[@]}" --set train.cpu_math=bf16 -o "$T/bf2.msgpack" 2>"$T/logb2" &&
       MATS_THREADS=2 MATS_CPU_MATH=bf16 build/bin/train "${bf[@]}" -o "$T/bf3.msgpack" 2>"$T/logb3" &&
       build/bin/train "${bf[@]}" -o "$T/fp.msgpack" 2>"$T/logb4" &&
       build/bin/eval --model "$T/bf2.msgpack" --data "$T/test.msgpack" -o "$T/mb.msgpack" >"$T/tableb" 2>&1 &&
       a=$(acc "$T/mb.msgpack" has7) && ge "$a" 0.9; then
        kb=$(build/bin/art show "$T/bf2.msgpack" | awk '$1 == "key" { print $2 }')
        ke=$(build/bin/art show "$T/bf3.msgpack" | awk '$1 == "key" { print $2 }')
        kf=$(build/bin/art show "$T/fp.msgpack" | awk '$1 == "key" { print $2 }')
        if ! cmp -s "$T/bf1.msgpack" "$T/bf2.msgpack"; then fail train_bf16 "1 and 2 threads gave different bytes"
        elif [ -z "$kb" ] || [ "$kb" = "$kf" ]; then fail train_bf16 "bf16 key '$kb' equals float32's"
        elif cmp -s "$T/bf2.msgpack" "$T/fp.msgpack"; then fail train_bf16 "bf16 run gave float32's bytes"
        elif [ "$kb" != "$ke" ]; then fail train_bf16 "MATS_CPU_MATH key $ke differs from the config's $kb"
        else ok "train_bf16 (has7 accuracy $a, same bytes on 1 and 2 threads)"; fi
    else fail train_bf16 "accuracy ${a:-?}"; cat "$T/logb1" "$T/logb2" "$T/logb3" "$T/tableb" 2>/dev/null; fi
else echo "skip train_bf16: neither AMX-BF16 nor AVX512_BF16 on this CPU"; fi

# 4b. train --bench: both modes print tokens/s; make bench-train's ratios
# (tests/reference/bench_train_ratios.awk) divide them by the peer's lines
if build/bin/train --config "$T/exp.conf" --bench 1 > "$T/bench" 2>&1; then
    cf=$(awk '/^bench-train: C full:/ {print $4}' "$T/bench"); ci=$(awk '/^bench-train: C IA3 :/ {print $5}' "$T/bench")
    printf '%s\n' "bench-train: PyTorch full:    1000 tokens/s (input+target),  1.0 ms/step" \
        "bench-train: PyTorch IA3 :    2000 tokens/s (input+target),  1.0 ms/step" \
        "bench-train: PyTorch full bf16 autocast:    4000 tokens/s (input+target),  1.0 ms/step" >> "$T/bench"
    r=$(awk -f tests/reference/bench_train_ratios.awk "$T/bench")
    want=$(awk -v f="$cf" -v i="$ci" 'BEGIN { printf "bench-train: ratio full float32 / PyTorch float32: %.2fx\nbench-train: ratio IA3  float32 / PyTorch float32: %.2fx", f / 1000, i / 2000 }')
    if [ -n "$cf" ] && [ -n "$ci" ] && [ "$r" = "$want" ]; then ok "train_bench (full $cf, IA3 $ci tokens/s)"
    else fail train_bench "ratios '$r', want '$want'"; cat "$T/bench"; fi
else fail train_bench "exit status"; cat "$T/bench"; fi

# 4b. train.length_window: each epoch's order sorted by input length in
# windows of batches, so batches pad less (the closing log line says how
# much); the model still learns, a rerun gives the same bytes
pad() { sed -n 's/.* \([0-9]*\)% padding).*/\1/p' "$1"; }
lw=(--config "$T/exp.conf" --set train.length_window=4 --set train.eval_every=50 --set train.patience=2
    --data "$T/train.msgpack" --valid "$T/valid.msgpack")
if build/bin/train "${lw[@]}" -o "$T/lw1.msgpack" 2>"$T/loglw1" && build/bin/train "${lw[@]}" -o "$T/lw2.msgpack" 2>/dev/null &&
   cmp -s "$T/lw1.msgpack" "$T/lw2.msgpack" && ! cmp -s "$T/lw1.msgpack" "$T/full.msgpack" &&
   p0=$(pad "$T/log1") && p1=$(pad "$T/loglw1") && [ -n "$p0" ] && [ -n "$p1" ] && [ "$p1" -lt "$p0" ] &&
   build/bin/eval --model "$T/lw1.msgpack" --data "$T/test.msgpack" -o "$T/mlw.msgpack" >/dev/null 2>&1 &&
   a=$(acc "$T/mlw.msgpack" has7) && ge "$a" 0.9; then
    ok "train_length_window (padding ${p0}% -> ${p1}%)"
else fail train_length_window "padding ${p0:-?}% -> ${p1:-?}%, accuracy ${a:-?}; $(tail -1 "$T/loglw1")"; fi

# 4b'. a mixture with a length window: its draws sorted in windows, so less
# padding than the mixture without (log2); both tasks still learned; a
# kill after a checkpoint resumes to the bytes of an uninterrupted run
mw=(--config "$T/exp.conf" --set train.steps=300 --set train.length_window=4 --set train.ckpt_every=30
    --data "$T/train.msgpack,$T/other.msgpack")
rm -f "$T/mwb.msgpack" "$T/mwb.msgpack.ckpt"
if build/bin/train "${mw[@]}" -o "$T/mwa.msgpack" 2>"$T/logmw" &&
   { MATS_TEST_KILL_AFTER_CKPT=120 build/bin/train "${mw[@]}" -o "$T/mwb.msgpack" 2>/dev/null & wait $! 2>/dev/null; [ $? -eq 137 ]; } &&
   build/bin/train "${mw[@]}" -o "$T/mwb.msgpack" 2>"$T/logmwb" && grep -q "resuming .* from step 120" "$T/logmwb" &&
   cmp -s "$T/mwa.msgpack" "$T/mwb.msgpack" &&
   p0=$(pad "$T/log2") && p1=$(pad "$T/logmw") && [ -n "$p0" ] && [ -n "$p1" ] && [ "$p1" -lt "$p0" ] &&
   build/bin/eval --model "$T/mwa.msgpack" --data "$T/test.msgpack,$T/other_test.msgpack" -o "$T/mmw.msgpack" >/dev/null 2>&1 &&
   a=$(acc "$T/mmw.msgpack" has7) && b=$(acc "$T/mmw.msgpack" has9or5) && ge "$a" 0.85 && ge "$b" 0.7; then
    ok "train_mixture_length_window (padding ${p0}% -> ${p1}%, resumed to the same bytes)"
else fail train_mixture_length_window "padding ${p0:-?}% -> ${p1:-?}%, has7 ${a:-?} has9or5 ${b:-?}; $(tail -1 "$T/logmw")"; fi

# 4c. gram and fisher take their examples in order of input length: the
# statistic is that of one example per batch (no padding) up to rounding,
# and their batches pad less than train's shuffled ones (log1's share)
spad() { sed -n 's/.*, \([0-9.]*\) % of the encoder rows padding;.*/\1/p' "$1"; }
st_ok=1
for st in gram fisher; do
    sa=(--model "$T/full.msgpack" --data "$T/train.msgpack" --examples 96)
    [ "$st" = fisher ] && sa+=(--type diagonal)
    if build/bin/$st "${sa[@]}" -o "$T/$st-b16.msgpack" 2>"$T/log-$st" &&
       build/bin/$st "${sa[@]}" --set $st.batch_size=1 -o "$T/$st-b1.msgpack" 2>/dev/null &&
       build/bin/art diff "$T/$st-b16.msgpack" "$T/$st-b1.msgpack" --tol 1e-5 >"$T/diff-$st" 2>&1 &&
       sp=$(spad "$T/log-$st") && [ -n "$sp" ] && p0=$(pad "$T/log1") &&
       awk -v a="$sp" -v b="$p0" 'BEGIN { exit !(a * 2 < b + 0) }'; then :
    else st_ok=0; echo "$st: padding ${sp:-?} % against train's ${p0:-?} %; $(tail -3 "$T/diff-$st" 2>/dev/null) $(tail -1 "$T/log-$st")"; fi
done
if [ $st_ok = 1 ]; then ok "stats_length_order (padding $(spad "$T/log-gram") % against train's $(pad "$T/log1") %)"
else fail stats_length_order "see above"; fi

# 4d. the diagonal Fisher squares each linear's per-example gradients a
# batch at a time, in blocks of rows over the thread pool: the same bytes on
# one thread and on two, and with the AVX2 kernel where the CPU has it
fa=(--model "$T/full.msgpack" --data "$T/train.msgpack" --examples 40 --type diagonal)
fk=""
if MATS_THREADS=1 build/bin/fisher "${fa[@]}" -o "$T/ft1.msgpack" 2>/dev/null &&
   MATS_THREADS=2 build/bin/fisher "${fa[@]}" -o "$T/ft2.msgpack" 2>/dev/null && cmp -s "$T/ft1.msgpack" "$T/ft2.msgpack" &&
   { ! grep -q ' avx2 ' /proc/cpuinfo || ! grep -q ' fma ' /proc/cpuinfo ||
     { MATS_GEMM=avx2 build/bin/fisher "${fa[@]}" -o "$T/ft3.msgpack" 2>/dev/null && cmp -s "$T/ft1.msgpack" "$T/ft3.msgpack" && fk=", avx2"; }; }; then
    ok "fisher_diag_batched_same_bytes (1 and 2 threads$fk)"
else fail fisher_diag_batched_same_bytes "$(build/bin/art diff "$T/ft1.msgpack" "$T/ft2.msgpack" 2>&1 | tail -1)"; fi

# 5. bad input: one line, non-zero exit
check_err() { # name, expected words, command...
    local name=$1 want=$2; shift 2
    if "$@" >/dev/null 2>"$T/err"; then fail "$name" "exit 0"; return; fi
    if [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$want" "$T/err"; then ok "$name"; else fail "$name" "$(cat "$T/err")"; fi
}
check_err_last() { # the run had started (a header line), the error is the last line
    local name=$1 want=$2; shift 2
    if "$@" >/dev/null 2>"$T/err"; then fail "$name" "exit 0"; return; fi
    if tail -1 "$T/err" | grep -q "$want"; then ok "$name"; else fail "$name" "$(cat "$T/err")"; fi
}
check_err train_missing_data "nope.msgpack" build/bin/train --config "$T/exp.conf" --data "$T/nope.msgpack" -o "$T/x.msgpack"
check_err train_corpus_as_task "corpus" build/bin/train --config "$T/exp.conf" --data "$T/corpus.msgpack" -o "$T/x.msgpack"
check_err train_ia3_needs_init "init" build/bin/train --config "$T/exp.conf" --mode ia3 --data "$T/train.msgpack" -o "$T/x.msgpack"
check_err train_unknown_key "train.stepz" build/bin/train --config "$T/exp.conf" --set train.stepz=3 --data "$T/train.msgpack" -o "$T/x.msgpack"
check_err train_bad_cpu_math "cpu_math 'bf17' is not one of fp32, bf16" build/bin/train --config "$T/exp.conf" --set train.cpu_math=bf17 --data "$T/train.msgpack" -o "$T/x.msgpack"
check_err train_window_too_large "more than 2^24 examples a window" build/bin/train --config "$T/exp.conf" --set train.length_window=1000000 --set train.batch_size=32 --data "$T/train.msgpack,$T/other.msgpack" -o "$T/x.msgpack"
check_err train_unknown_schedule "train.schedule" build/bin/train --config "$T/exp.conf" --set train.schedule=warm --data "$T/train.msgpack" -o "$T/x.msgpack"
check_err_last train_nan_stops "diverged" build/bin/train --config "$T/exp.conf" --init "$T/huge_model.msgpack" --data "$T/train.msgpack" -o "$T/x.msgpack"
check_err train_nan_init_rejected "nan_model.msgpack: tensor lm_head.weight holds a NaN" build/bin/train --config "$T/exp.conf" --init "$T/nan_model.msgpack" --data "$T/train.msgpack" -o "$T/x.msgpack"
check_err eval_vocab_mismatch "vocabulary" build/bin/eval --model "$T/full.msgpack" --data "$T/bigvocab.msgpack" -o "$T/x.msgpack"
check_err eval_bad_option "eval.batch_size" build/bin/eval --model "$T/full.msgpack" --data "$T/test.msgpack" -o "$T/x.msgpack" --set eval.batch_size=0
