#!/usr/bin/env bash
# The stages on the original T5 layout (t5-micro's shapes with
# model.feed_forward_proj = relu and model.tie_word_embeddings = true: ReLU
# feed-forward, head tied to shared.weight and scaled by d_model^-0.5):
# full fine-tuning learns, span-corruption pretraining, IA3 on that base
# learns, eval, the diagonal Fisher (full, IA3), the blockwise IA3 Fisher and
# the Grams hold finite values of the layout's tensors (wi, wo.ia3_vector; no
# lm_head), and task arithmetic, fisher, regmean, mats, regmean_pp and ties
# merge two task models into a finite model of the same layout that
# evaluates; a merged IA3 pair too. Bad config values are one line naming the key.
set -u
source "$(dirname "$0")/t5_data_env.sh" test_t5_original_stages "train.steps = 150" "train.batch_size = 16" \
    "train.lr = 3e-3" "model.feed_forward_proj = relu" "model.tie_word_embeddings = true"
B=build/bin
# acc METRICS TASK: the task's accuracy (meta.accuracy), a number in [0, 1]
acc() {
    $B/art show "$1" | awk -v t="\"$2\":" '
        $1 == "\"accuracy\":" { inacc = 1; next }
        inacc && $1 ~ /^}/ { exit 1 }
        inacc && $1 == t { v = $2; sub(",", "", v); if (v ~ /^[0-9.e+-]+$/ && v + 0 >= 0 && v + 0 <= 1) { print v; found = 1 }; exit }
        END { exit !found }'
}
ge() { [ -n "$1" ] && awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 >= b + 0) }'; }
# finite FILE KIND [NAME_PATTERN]: a KIND artifact whose every tensor's norm,
# min and max (art show) are finite, and that names a tensor matching the
# pattern
finite() {
    $B/art show "$1" >"$T/show" 2>&1 && grep -q "^kind    $2\$" "$T/show" &&
        sed -n '/^tensors/,$p' "$T/show" | awk 'NR > 2 && NF > 4 { for (i = 4; i <= NF; i++) if ($i ~ /nan|inf/) bad = 1; n++ }
            END { exit bad || n == 0 }' &&
        { [ -z "${3:-}" ] || grep -q -- "$3" "$T/show"; }
}
layout() { # MODEL: meta.config names relu and tied
    $B/art show "$1" | grep -q '"feed_forward_proj": "relu"' && $B/art show "$1" | grep -q '"tie_word_embeddings": true'
}

# full fine-tuning learns; the artifact is the original layout
if $B/train --config "$T/exp.conf" --data "$T/train.msgpack" -o "$T/full.msgpack" 2>"$T/log1" &&
   $B/eval --model "$T/full.msgpack" --data "$T/test.msgpack" -o "$T/m1.msgpack" >"$T/table1" 2>&1 &&
   a=$(acc "$T/m1.msgpack" has7) && ge "$a" 0.9 && layout "$T/full.msgpack" &&
   $B/art show "$T/full.msgpack" | grep -q "DenseReluDense.wi.weight" && ! $B/art show "$T/full.msgpack" | grep -q lm_head; then
    ok "original_train_full_learns (has7 $a)"
else fail original_train_full_learns "accuracy ${a:-?} (majority 0.56)"; cat "$T/log1" "$T/table1" 2>/dev/null; fi

# span-corruption pretraining, then IA3 (wo's input vectors) on that base
if $B/train --config "$T/exp.conf" --objective span_corruption --set train.steps=120 \
     --set train.max_target_len=16 --data "$T/corpus.msgpack" -o "$T/base.msgpack" 2>"$T/log2" &&
   l=$($B/art show "$T/base.msgpack" | awk '$1 == "\"final_loss\":" { sub(",", "", $2); print $2 }') &&
   [ -n "$l" ] && awk -v l="$l" 'BEGIN { exit !(l + 0 < 3.5) }'; then
    ok "original_pretrain_span_corruption (loss $l)"
else fail original_pretrain_span_corruption "final loss ${l:-?} (ln 128 = 4.85)"; cat "$T/log2"; fi
ia3=(--config "$T/exp.conf" --mode ia3 --set train.lr=3e-2 --set train.steps=200 --init "$T/base.msgpack")
if $B/train "${ia3[@]}" --data "$T/train.msgpack" -o "$T/ia3a.msgpack" 2>"$T/log3" &&
   $B/art show "$T/ia3a.msgpack" | grep -q "DenseReluDense.wo.ia3_vector" &&
   $B/eval --model "$T/base.msgpack" --ia3 "$T/ia3a.msgpack" --data "$T/test.msgpack" -o "$T/m3.msgpack" >/dev/null 2>&1 &&
   $B/eval --model "$T/base.msgpack" --data "$T/test.msgpack" -o "$T/m0.msgpack" >/dev/null 2>&1 &&
   a=$(acc "$T/m3.msgpack" has7) && b=$(acc "$T/m0.msgpack" has7) && ge "$a" "$(awk -v b="$b" 'BEGIN{print b + 0.1}')"; then
    ok "original_train_ia3 (has7 $a, base $b)"
else fail original_train_ia3 "ia3 ${a:-?} vs base ${b:-?}"; cat "$T/log3"; fi

# two task models from the base, full and IA3, and their statistics
ft=(--config "$T/exp.conf" --init "$T/base.msgpack")
$B/train "${ft[@]}" --data "$T/train.msgpack" -o "$T/fa.msgpack" 2>"$T/log4" &&
    $B/train "${ft[@]}" --data "$T/other.msgpack" -o "$T/fb.msgpack" 2>>"$T/log4" &&
    $B/train "${ia3[@]}" --data "$T/other.msgpack" -o "$T/ia3b.msgpack" 2>>"$T/log4" ||
    { fail original_task_models "$(tail -2 "$T/log4")"; }
stats_ok=1
for m in a b; do
    data=$([ $m = a ] && echo train || echo other)
    $B/fisher --model "$T/f$m.msgpack" --data "$T/$data.msgpack" --type diagonal -o "$T/fd$m.msgpack" 2>"$T/log5" &&
        $B/fisher --model "$T/base.msgpack" --ia3 "$T/ia3$m.msgpack" --data "$T/$data.msgpack" --type blockwise \
            -o "$T/fbk$m.msgpack" 2>>"$T/log5" &&
        $B/fisher --model "$T/base.msgpack" --ia3 "$T/ia3$m.msgpack" --data "$T/$data.msgpack" --type diagonal \
            -o "$T/fdi$m.msgpack" 2>>"$T/log5" &&
        $B/gram --model "$T/f$m.msgpack" --data "$T/$data.msgpack" -o "$T/g$m.msgpack" 2>>"$T/log5" || stats_ok=0
done
if [ $stats_ok = 1 ] && finite "$T/fda.msgpack" fisher_diag "shared.weight" && finite "$T/fdb.msgpack" fisher_diag "DenseReluDense.wi.weight" &&
   finite "$T/fbka.msgpack" fisher_block "DenseReluDense.wo.ia3_vector" && finite "$T/fdib.msgpack" fisher_diag "wo.ia3_vector" &&
   finite "$T/ga.msgpack" gram "DenseReluDense.wi.input_gram" && finite "$T/gb.msgpack" gram "wo.output_grad_gram" &&
   ! grep -q "lm_head" "$T/show"; then
    ok original_fisher_gram_finite
else fail original_fisher_gram_finite "$(tail -3 "$T/log5")"; head -20 "$T/show"; fi

# merges: full models (task arithmetic, fisher, regmean, mats, regmean_pp
# (layer by layer through the model), ties), an IA3 pair (mats)
for spec in "task_arithmetic:--method task_arithmetic --lambda 0.5" "fisher:--method fisher --fisher $T/fda.msgpack,$T/fdb.msgpack" \
            "regmean:--method regmean --gram $T/ga.msgpack,$T/gb.msgpack" "mats:--method mats --gram $T/ga.msgpack,$T/gb.msgpack" \
            "regmean_pp:--method regmean_pp --data $T/train.msgpack,$T/other.msgpack" "ties:--method ties --lambda 0.7"; do
    name=${spec%%:*}
    # shellcheck disable=SC2086
    if $B/merge --pretrained "$T/base.msgpack" --models "$T/fa.msgpack,$T/fb.msgpack" ${spec#*:} -o "$T/$name.msgpack" 2>"$T/logm" &&
       finite "$T/$name.msgpack" model "DenseReluDense.wi.weight" && layout "$T/$name.msgpack" &&
       $B/eval --model "$T/$name.msgpack" --data "$T/test.msgpack,$T/other_test.msgpack" -o "$T/mm-$name.msgpack" >/dev/null 2>"$T/loge" &&
       a=$(acc "$T/mm-$name.msgpack" has7) && b=$(acc "$T/mm-$name.msgpack" has9or5); then
        ok "original_merge_$name (has7 $a, has9or5 $b)"
    else fail "original_merge_$name" "$(tail -2 "$T/logm") $(tail -1 "$T/loge" 2>/dev/null)"; fi
done
if $B/merge --pretrained "$T/base.msgpack" --models "$T/ia3a.msgpack,$T/ia3b.msgpack" --method mats \
       --fisher "$T/fbka.msgpack,$T/fbkb.msgpack" -o "$T/mats-ia3.msgpack" 2>"$T/logm" &&
   finite "$T/mats-ia3.msgpack" ia3 "DenseReluDense.wo.ia3_vector" &&
   $B/eval --model "$T/base.msgpack" --ia3 "$T/mats-ia3.msgpack" --data "$T/test.msgpack,$T/other_test.msgpack" \
       -o "$T/mm-ia3.msgpack" >/dev/null 2>"$T/loge" && a=$(acc "$T/mm-ia3.msgpack" has7); then
    ok "original_merge_mats_ia3 (has7 $a)"
else fail original_merge_mats_ia3 "$(tail -2 "$T/logm") $(tail -1 "$T/loge" 2>/dev/null)"; fi

# bad input: one line naming the key
check_err() { # name, expected words, command...
    local name=$1 want=$2; shift 2
    if "$@" >/dev/null 2>"$T/err"; then fail "$name" "exit 0"; return; fi
    if [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "$want" "$T/err"; then ok "$name"; else fail "$name" "$(cat "$T/err")"; fi
}
check_err original_unknown_feed_forward "model.feed_forward_proj = gated-silu: gated-gelu (T5 v1.1) or relu" \
    $B/train --config "$T/exp.conf" --set model.feed_forward_proj=gated-silu --data "$T/train.msgpack" -o "$T/x.msgpack"
check_err original_bad_tie "model.tie_word_embeddings" \
    $B/train --config "$T/exp.conf" --set model.tie_word_embeddings=maybe --data "$T/train.msgpack" -o "$T/x.msgpack"
# a v1.1 model is not a fine-tune of an original-layout base
check_err original_layout_mismatch "feed_forward_proj" \
    $B/train --config "$T/exp.conf" --set model.feed_forward_proj=gated-gelu --set model.tie_word_embeddings=false \
        --init "$T/base.msgpack" --data "$T/train.msgpack" -o "$T/x.msgpack"
