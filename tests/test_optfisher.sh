#!/usr/bin/env bash
# train --optimizer-fisher end to end on synthetic tokens (t5-micro): the
# artifact has the Fisher pass's names, shapes and provenance; on a batch of
# one at the first step (lr 0) it is that example's squared gradient, the
# Fisher pass's value, for AdamW (bias-corrected) and for Adafactor's
# unfactored vectors; the model's bytes and key do not change; with early
# stopping it is the best step's; a resumed run writes the same bytes;
# merge takes it for fisher (full and IA3) and refuses it where it does not
# belong; bad uses are one-line errors. The moments' arithmetic itself is
# tests/test_optfisher.c (against torch's AdamW).
set -u
source "$(dirname "$0")/t5_data_env.sh" test_optfisher "train.steps = 12" "train.batch_size = 8" "train.lr = 3e-3" \
    "train.ckpt_every = 0"
meta() { build/bin/art show "$1" | awk -v k="\"$2\":" '$1 == k { v = $2; sub(",", "", v); gsub("\"", "", v); print v; exit }'; }
key_of() { build/bin/art key "$1" | awk '{ print $NF }'; }
# within: art diff A B says every tensor agrees to relative TOL
within() { build/bin/art diff "$1" "$2" --tol "$3" > "$T/diff" 2>&1; }

# 1. one example, batch 1, lr 0: the optimizer's v after step 1 is g^2 of
# that example at the (unchanged) weights, which is what the Fisher pass
# averages over its one example: full model (AdamW) and IA3 (AdamW, and
# Adafactor, whose vectors are unfactored)
one="--set train.steps=1 --set train.batch_size=1 --set train.lr=0 --data $T/one.msgpack"
if build/bin/train --config "$T/exp.conf" $one -o "$T/m0.msgpack" --optimizer-fisher "$T/f0.msgpack" 2>"$T/log" &&
   build/bin/fisher --model "$T/m0.msgpack" --data "$T/one.msgpack" --type diagonal --examples 1 -o "$T/p0.msgpack" 2>>"$T/log" &&
   within "$T/f0.msgpack" "$T/p0.msgpack" 1e-4; then
    ok "full_adamw_equals_fisher_pass_on_one_example ($(tail -1 "$T/diff"))"
else fail full_adamw_equals_fisher_pass_on_one_example "$(cat "$T/log" "$T/diff" 2>/dev/null | tail -8)"; fi
for opt in adamw adafactor; do
    if build/bin/train --config "$T/exp.conf" $one --set train.optimizer=$opt --mode ia3 --init "$T/m0.msgpack" \
         -o "$T/a0-$opt.msgpack" --optimizer-fisher "$T/fa0-$opt.msgpack" 2>"$T/log" &&
       build/bin/fisher --model "$T/m0.msgpack" --ia3 "$T/a0-$opt.msgpack" --data "$T/one.msgpack" --type diagonal \
         --examples 1 -o "$T/pa0-$opt.msgpack" 2>>"$T/log" &&
       within "$T/fa0-$opt.msgpack" "$T/pa0-$opt.msgpack" 1e-4 && [ "$(meta "$T/fa0-$opt.msgpack" fisher)" = "optimizer:$opt" ]; then
        ok "ia3_${opt}_equals_fisher_pass_on_one_example ($(tail -1 "$T/diff"))"
    else fail "ia3_${opt}_equals_fisher_pass_on_one_example" "$(cat "$T/log" "$T/diff" 2>/dev/null | tail -8)"; fi
done

# 2. a real run with validation and early stopping: the model's bytes and
# key are those of a run without the option; the Fisher has the pass's
# names and shapes (art corr refuses anything else), is of the best step,
# names the model as `fisher` would (meta.inputs.model = its key) and has
# the key of stage optfisher on the run's key
es="--set train.steps=40 --set train.eval_every=4 --set train.patience=2 --set train.lr=3e-2 --set train.valid_examples=16
    --valid $T/valid.msgpack"
if build/bin/train --config "$T/exp.conf" $es --data "$T/train.msgpack" -o "$T/plain.msgpack" 2>"$T/log" &&
   build/bin/train --config "$T/exp.conf" $es --data "$T/train.msgpack" -o "$T/full.msgpack" \
     --optimizer-fisher "$T/ffull.msgpack" 2>>"$T/log" &&
   build/bin/art diff "$T/plain.msgpack" "$T/full.msgpack" --tol 0 >/dev/null && [ "$(key_of "$T/plain.msgpack")" = "$(key_of "$T/full.msgpack")" ]; then
    ok model_bytes_and_key_unchanged_by_the_option
else fail model_bytes_and_key_unchanged_by_the_option "$(tail -5 "$T/log")"; fi
bs=$(meta "$T/full.msgpack" best_step) st=$(meta "$T/full.msgpack" steps) os=$(meta "$T/ffull.msgpack" optimizer_step)
mk=$(key_of "$T/full.msgpack")
if build/bin/fisher --model "$T/full.msgpack" --data "$T/train.msgpack" --type diagonal --examples 64 -o "$T/pfull.msgpack" 2>"$T/log" &&
   build/bin/art corr "$T/ffull.msgpack" "$T/pfull.msgpack" > "$T/corr" 2>&1 &&
   [ "$(meta "$T/ffull.msgpack" model)" = "$mk" ] &&
   [ "$(key_of "$T/ffull.msgpack")" = "$(build/bin/key --stage optfisher --input train="$mk")" ] &&
   [ "$(build/bin/art show "$T/ffull.msgpack" | awk '$1 == "kind" { print $2 }')" = fisher_diag ] &&
   [ -n "$bs" ] && [ "$os" = "$bs" ] && [ "$(meta "$T/ffull.msgpack" weights)" = best ] && [ "$bs" -lt "$st" ]; then
    ok "optfisher_is_of_the_best_step (best $bs of $st steps; $(tail -1 "$T/corr"))"
else fail optfisher_is_of_the_best_step "best $bs, recorded $os, steps $st, model $mk: $(tail -3 "$T/corr" "$T/log")"; fi

# 3. killed after a checkpoint (the best weights' moments in it), rerun:
# the same Fisher tensors as the uninterrupted run
rargs=(--config "$T/exp.conf" $es --set train.ckpt_every=4 --data "$T/train.msgpack" -o "$T/res.msgpack"
       --optimizer-fisher "$T/fres.msgpack")
MATS_TEST_KILL_AFTER_CKPT=8 build/bin/train "${rargs[@]}" >/dev/null 2>&1 &
wait $! 2>/dev/null
rc=$?
if [ $rc -eq 137 ] && [ -f "$T/res.msgpack.ckpt" ] && [ ! -e "$T/fres.msgpack" ] &&
   build/bin/train "${rargs[@]}" 2>"$T/log" && grep -q "resuming .* from step 8$" "$T/log" &&
   build/bin/art diff "$T/ffull.msgpack" "$T/fres.msgpack" --tol 0 >/dev/null; then
    ok optfisher_resume_same_tensors
else fail optfisher_resume_same_tensors "exit $rc; $(tail -3 "$T/log")"; fi

# 4. merge --method fisher takes optimizer Fishers: two full models and two
# IA3 models on one base (other seeds: other keys, as the test data has none)
ft() { # NAME DATA MODE SEED: fine-tune from m0 with an optimizer Fisher
    build/bin/train --config "$T/exp.conf" --data "$T/$2.msgpack" --init "$T/m0.msgpack" --mode "$3" --seed "$4" \
        -o "$T/$1.msgpack" --optimizer-fisher "$T/f$1.msgpack" 2>>"$T/log"
}
: > "$T/log"
if ft fa train full 1 && ft fb other full 2 && ft ia other ia3 3 && ft ib train ia3 4 &&
   build/bin/merge --method fisher --pretrained "$T/m0.msgpack" --models "$T/fa.msgpack,$T/fb.msgpack" \
     --fisher "$T/ffa.msgpack,$T/ffb.msgpack" -o "$T/mfull.msgpack" 2>>"$T/log" &&
   build/bin/merge --method cg_fisher --pretrained "$T/m0.msgpack" --models "$T/ia.msgpack,$T/ib.msgpack" \
     --fisher "$T/fia.msgpack,$T/fib.msgpack" -o "$T/mia3.msgpack" 2>>"$T/log" &&
   [ "$(meta "$T/mfull.msgpack" method)" = fisher ] && [ "$(meta "$T/mia3.msgpack" method)" = cg_fisher ]; then
    ok merge_takes_optimizer_fishers_full_and_ia3
else fail merge_takes_optimizer_fishers_full_and_ia3 "$(tail -5 "$T/log")"; fi

# 5. bad uses: one line each, naming the thing
check_err() { # name, expected words, command...
    local name=$1 want=$2; shift 2
    if "$@" >/dev/null 2>"$T/err"; then fail "$name" "succeeded"; return; fi
    if [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$want" "$T/err"; then ok "$name"; else fail "$name" "$(cat "$T/err")"; fi
}
run1="build/bin/train --config $T/exp.conf --set train.steps=1 --data $T/train.msgpack"
check_err optfisher_path_is_the_model "is the model output" $run1 -o "$T/x.msgpack" --optimizer-fisher "$T/./x.msgpack"
check_err optfisher_path_is_the_checkpoint "is the checkpoint" $run1 -o "$T/x.msgpack" --optimizer-fisher "$T/x.msgpack.ckpt"
check_err optfisher_path_is_an_input "replace that input" $run1 -o "$T/x.msgpack" --optimizer-fisher "$T/train.msgpack"
check_err optfisher_with_bench "drop --optimizer-fisher" build/bin/train --config "$T/exp.conf" --bench 1 --optimizer-fisher "$T/x.msgpack"
check_err merge_full_with_ia3_optfisher "diagonal Fisher" build/bin/merge --method fisher --pretrained "$T/m0.msgpack" \
    --models "$T/fa.msgpack,$T/fb.msgpack" --fisher "$T/fia.msgpack,$T/fib.msgpack" -o "$T/bad.msgpack"
check_err merge_optfisher_of_another_model "meta.inputs.model" build/bin/merge --method fisher --pretrained "$T/m0.msgpack" \
    --models "$T/fa.msgpack,$T/fb.msgpack" --fisher "$T/ffb.msgpack,$T/ffa.msgpack" -o "$T/bad.msgpack"
check_err merge_ia3_optfisher_of_another_vector "meta.inputs.ia3" build/bin/merge --method fisher --pretrained "$T/m0.msgpack" \
    --models "$T/ia.msgpack,$T/ib.msgpack" --fisher "$T/fib.msgpack,$T/fia.msgpack" -o "$T/bad.msgpack"
[ ! -e "$T/x.msgpack" ] && [ ! -e "$T/bad.msgpack" ] && ok bad_uses_write_nothing || fail bad_uses_write_nothing "$(ls "$T")"
