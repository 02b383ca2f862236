#!/usr/bin/env bash
# `art import-hf` / `art export-hf` on the PyTorch reference's checkpoints
# (tests/reference/hf_ref.py -> tests/fixtures/hf/):
#   - import -> export reproduces model.safetensors and config.json byte for
#     byte (F32 with the tied embed_tokens copies asked for; BF16 and the
#     default F32 without them, as save_pretrained writes);
#   - checkpoints as transformers 5 saves them (T5 v1.1 and mT5) import as
#     the same model; PEFT adapters with regular-expression targets, and with
#     wi_1 targeted beside wo, import as PEFT applies them;
#   - import -> export -> import gives a byte-identical artifact (F16, sharded);
#   - the tokenizer and the PEFT IA3 adapter files round-trip byte for byte;
#   - with the eval stage built: its choice_scores on an imported model match
#     the reference's scores;
#   - the original T5 layout (ReLU, lm_head tied to shared.weight and scaled):
#     import -> export reproduces its files and its PEFT adapter byte for byte;
#     as transformers 4, 5 and the hub write it, the same model; the export
#     passes hf_check.py (what transformers 4 and 5 load) with the reference's
#     scores; eval on it and on its adapter gives the reference's scores;
#   - bad input: one line on stderr naming the file, exit status 1.
set -u
source "$(dirname "$0")/lib.sh" test_hf
F=tests/fixtures/hf
ART=build/bin/art
q() { "$@" 2>"$T/err" >/dev/null; }

# F32: bytes in, same bytes out
if q $ART import-hf $F/tiny-f32 -o "$T/f32.msgpack" --vocab "$T/vocab.msgpack" &&
   q $ART export-hf "$T/f32.msgpack" --vocab "$T/vocab.msgpack" --tied "$T/out32"; then
    if cmp -s "$T/out32/model.safetensors" $F/tiny-f32/model.safetensors &&
       cmp -s "$T/out32/config.json" $F/tiny-f32/config.json; then
        ok hf_roundtrip_f32_bytes; else fail hf_roundtrip_f32_bytes "model.safetensors or config.json differ"; fi
    if cmp -s "$T/out32/spiece.model" $F/tiny-f32/spiece.model &&
       cmp -s "$T/out32/tokenizer_config.json" $F/tiny-f32/tokenizer_config.json; then
        ok hf_roundtrip_tokenizer; else fail hf_roundtrip_tokenizer "spiece.model or tokenizer_config.json differ"; fi
    # and back: the same artifact, byte for byte (the key derives from the input bytes)
    q $ART import-hf "$T/out32" -o "$T/f32b.msgpack" && cmp -s "$T/f32.msgpack" "$T/f32b.msgpack" &&
        ok hf_reimport_same_artifact || fail hf_reimport_same_artifact "$(cat "$T/err")"
    # without --vocab the tokenizer lands beside the model
    $ART verify "$T/f32b.vocab.msgpack" 2>/dev/null | grep -q "(vocab, 1 tensors)" &&
        cmp -s "$T/f32b.vocab.msgpack" "$T/vocab.msgpack" && ok hf_vocab_beside_model ||
        fail hf_vocab_beside_model "no identical f32b.vocab.msgpack"
else
    fail hf_roundtrip_f32_bytes "$(cat "$T/err")"
fi

# by default no tied copies: shared.weight only, as save_pretrained writes
# (tiny-v5 holds the f32 model so); the config loads untied and unscaled
# under transformers 4 (tie_word_embeddings false) and 5 (scale_decoder_outputs false)
if q $ART export-hf "$T/f32.msgpack" "$T/out32u"; then
    cmp -s "$T/out32u/model.safetensors" $F/tiny-v5/model.safetensors &&
        grep -q '"tie_word_embeddings": false' "$T/out32u/config.json" &&
        grep -q '"scale_decoder_outputs": false' "$T/out32u/config.json" && ok hf_export_untied_by_default ||
        fail hf_export_untied_by_default "model.safetensors differs from tiny-v5's, or the config's flags"
else
    fail hf_export_untied_by_default "$(cat "$T/err")"
fi

# transformers 5 saves: tie_word_embeddings forced true; v1.1 says
# scale_decoder_outputs false, mT5 nothing (it never scales)
for v in v5 mt5-v5; do
    if q $ART import-hf $F/tiny-$v -o "$T/$v.msgpack" --no-vocab; then
        $ART diff "$T/f32.msgpack" "$T/$v.msgpack" --tol 0 >/dev/null && ok "hf_import_transformers5_$v" ||
            fail "hf_import_transformers5_$v" "tensors differ from the f32 import"
    else
        fail "hf_import_transformers5_$v" "$(cat "$T/err")"
    fi
done
if q $ART export-hf "$T/mt5-v5.msgpack" "$T/outmt5" && grep -q '"model_type": "mt5"' "$T/outmt5/config.json" &&
   grep -q MT5ForConditionalGeneration "$T/outmt5/config.json"; then ok hf_export_mt5_config
else fail hf_export_mt5_config "$(cat "$T/err") $(head -c 300 "$T/outmt5/config.json" 2>/dev/null)"; fi

# BF16 without the tied copies
if q $ART import-hf $F/tiny-bf16 -o "$T/bf16.msgpack" &&
   q $ART export-hf "$T/bf16.msgpack" --dtype bf16 --no-tied "$T/outbf"; then
    cmp -s "$T/outbf/model.safetensors" $F/tiny-bf16/model.safetensors && ok hf_roundtrip_bf16_bytes ||
        fail hf_roundtrip_bf16_bytes "model.safetensors differs"
    grep -q '"torch_dtype": "bfloat16"' "$T/outbf/config.json" && ok hf_export_config_dtype ||
        fail hf_export_config_dtype "torch_dtype not bfloat16"
else
    fail hf_roundtrip_bf16_bytes "$(cat "$T/err")"
fi

# F16 sharded: import, export as one F16 file, import again: same tensors
if q $ART import-hf $F/tiny-f16-sharded -o "$T/f16.msgpack" &&
   q $ART export-hf "$T/f16.msgpack" --dtype f16 "$T/out16" &&
   q $ART import-hf "$T/out16" -o "$T/f16b.msgpack"; then
    $ART diff "$T/f16.msgpack" "$T/f16b.msgpack" --tol 0 >/dev/null && ok hf_roundtrip_f16_sharded ||
        fail hf_roundtrip_f16_sharded "tensors differ"
else
    fail hf_roundtrip_f16_sharded "$(cat "$T/err")"
fi

# PEFT IA3 adapter: in as an ia3 artifact, out again as the same bytes
if q $ART import-hf $F/tiny-ia3-peft --base "$T/f32.msgpack" -o "$T/ia3.msgpack" &&
   q $ART export-hf "$T/f32.msgpack" --ia3 "$T/ia3.msgpack" --adapter "$T/outad"; then
    cmp -s "$T/outad/ia3-adapter/adapter_model.safetensors" $F/tiny-ia3-peft/adapter_model.safetensors &&
        grep -q '"peft_type": "IA3"' "$T/outad/ia3-adapter/adapter_config.json" &&
        cmp -s "$T/outad/model.safetensors" $F/tiny-v5/model.safetensors &&
        ok hf_roundtrip_ia3_adapter || fail hf_roundtrip_ia3_adapter "adapter files differ"
else
    fail hf_roundtrip_ia3_adapter "$(cat "$T/err")"
fi

# PEFT targets as regular expressions: the same vectors
if q $ART import-hf $F/tiny-ia3-regex --base "$T/f32.msgpack" -o "$T/ia3re.msgpack"; then
    $ART diff "$T/ia3.msgpack" "$T/ia3re.msgpack" --tol 0 >/dev/null && ok hf_import_ia3_regex_targets ||
        fail hf_import_ia3_regex_targets "vectors differ from the list-target adapter's"
else
    fail hf_import_ia3_regex_targets "$(cat "$T/err")"
fi
# wi_1 (not feedforward) and wo (feedforward) of one block: the scores say
# they multiply (below); a wi_1 listed as feedforward scales an input MaTS
# has no vector for
q $ART import-hf $F/tiny-ia3-mt5 --base "$T/f32.msgpack" -o "$T/ia3mt5.msgpack" || fail hf_import_ia3_wi1 "$(cat "$T/err")"
mkdir -p "$T/ia3ff"; cp $F/tiny-ia3-mt5/adapter_model.safetensors "$T/ia3ff/"
sed 's/"wo"$/"wo", "wi_1"/' $F/tiny-ia3-mt5/adapter_config.json > "$T/ia3ff/adapter_config.json"
$ART import-hf "$T/ia3ff" --base "$T/f32.msgpack" -o "$T/ia3ff.msgpack" 2>"$T/err" >/dev/null; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "scales the input (feedforward_modules) of .*DenseReluDense.wi_1" "$T/err" &&
    [ ! -e "$T/ia3ff.msgpack" ] && ok hf_import_ia3_wi1_feedforward_refused ||
    fail hf_import_ia3_wi1_feedforward_refused "rc=$rc $(cat "$T/err")"

# the original T5 layout: bytes in, same bytes out (config.json with both
# flags true, no lm_head); the layouts transformers 4, 5 and the hub write
# are the same model; its PEFT adapter (wo's input) round-trips byte for byte
if q $ART import-hf $F/tiny-orig -o "$T/orig.msgpack" --vocab "$T/origvocab.msgpack" &&
   q $ART export-hf "$T/orig.msgpack" --vocab "$T/origvocab.msgpack" "$T/outorig"; then
    cmp -s "$T/outorig/model.safetensors" $F/tiny-orig/model.safetensors &&
        cmp -s "$T/outorig/config.json" $F/tiny-orig/config.json &&
        cmp -s "$T/outorig/spiece.model" $F/tiny-orig/spiece.model && ok hf_roundtrip_original_bytes ||
        fail hf_roundtrip_original_bytes "model.safetensors, config.json or spiece.model differ"
    q $ART import-hf "$T/outorig" -o "$T/origb.msgpack" && cmp -s "$T/orig.msgpack" "$T/origb.msgpack" &&
        ok hf_reimport_original_same_artifact || fail hf_reimport_original_same_artifact "$(cat "$T/err")"
    for v in v4 hub v5; do
        q $ART import-hf $F/tiny-orig-$v -o "$T/orig-$v.msgpack" && $ART diff "$T/orig.msgpack" "$T/orig-$v.msgpack" --tol 0 >/dev/null &&
            ok "hf_import_original_$v" || fail "hf_import_original_$v" "$(cat "$T/err")"
    done
    if q $ART import-hf $F/tiny-ia3-orig --base "$T/orig.msgpack" -o "$T/ia3orig.msgpack" &&
       q $ART export-hf "$T/orig.msgpack" --ia3 "$T/ia3orig.msgpack" --adapter "$T/outorigad"; then
        cmp -s "$T/outorigad/ia3-adapter/adapter_model.safetensors" $F/tiny-ia3-orig/adapter_model.safetensors &&
            ok hf_roundtrip_original_ia3_adapter || fail hf_roundtrip_original_ia3_adapter "adapter files differ"
        if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
            echo "skip hf_export_original_loads: python3-torch not installed (scripts/install-deps.sh --reference)"
        else
            /usr/bin/python3 tests/reference/hf_check.py "$T/outorigad" --scores orig_ia3 >"$T/chk" 2>&1 &&
                /usr/bin/python3 tests/reference/hf_check.py "$T/outorig" --scores orig >>"$T/chk" 2>&1 &&
                ok hf_export_original_loads || fail hf_export_original_loads "$(tail -3 "$T/chk")"
        fi
    else
        fail hf_roundtrip_original_ia3_adapter "$(cat "$T/err")"
    fi
else
    fail hf_roundtrip_original_bytes "$(cat "$T/err")"
fi

# the eval stage on imported models (F32, BF16, F16 sharded, transformers 5's
# T5 and mT5, and the base + the imported PEFT IA3 adapters) gives the
# reference's scores and predictions
if [ -x build/bin/eval ]; then
    build/tests/test_hf --write-tokens "$T/tokens.msgpack"
    for v in f32:f32.msgpack: bf16:bf16.msgpack: f16:f16.msgpack: f32_ia3:f32.msgpack:ia3.msgpack \
             f32:v5.msgpack: f32:mt5-v5.msgpack: f32_ia3_mt5:f32.msgpack:ia3mt5.msgpack \
             orig:orig.msgpack: orig:orig-hub.msgpack: orig_ia3:orig.msgpack:ia3orig.msgpack; do
        IFS=: read -r variant model ia3 <<<"$v"
        if q build/bin/eval --model "$T/$model" ${ia3:+--ia3 "$T/$ia3"} --data "$T/tokens.msgpack" -o "$T/metrics-$variant-$model"; then
            res=$(build/tests/test_hf --compare-scores "$T/metrics-$variant-$model" "$variant" 2>&1) &&
                ok "hf_eval_scores_${variant}_${model%.msgpack}" || fail "hf_eval_scores_${variant}_${model%.msgpack}" "$res"
        else
            fail "hf_eval_scores_${variant}_${model%.msgpack}" "eval failed: $(cat "$T/err")"
        fi
    done
else
    echo "skip hf_eval_scores: build/bin/eval not built in this tree (test_hf checks the scores through lib/t5)"
fi

# bad input: one line naming the file, exit 1
mkdir -p "$T/bad"
cp $F/tiny-f32/config.json "$T/bad/"
printf '\xff\xff\xff\xff\x00\x00\x00\x00{}' > "$T/bad/model.safetensors"
$ART import-hf "$T/bad" -o "$T/x.msgpack" 2>"$T/err" >/dev/null; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "bad/model.safetensors: header length" "$T/err" &&
    [ ! -e "$T/x.msgpack" ] && ok hf_cli_bad_header || fail hf_cli_bad_header "rc=$rc $(cat "$T/err")"
$ART export-hf "$T/nothere.msgpack" "$T/o" 2>"$T/err" >/dev/null; rc=$?
[ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q "nothere.msgpack" "$T/err" && ok hf_cli_missing_model ||
    fail hf_cli_missing_model "rc=$rc $(cat "$T/err")"
$ART export-hf "$T/f32.msgpack" --ia3 "$T/ia3.msgpack" "$T/o" 2>"$T/err" >/dev/null; rc=$?
[ $rc -eq 1 ] && grep -q "needs --fold" "$T/err" && ok hf_cli_ia3_mode || fail hf_cli_ia3_mode "rc=$rc $(cat "$T/err")"
$ART import-hf $F/tiny-ia3-peft -o "$T/y.msgpack" 2>"$T/err" >/dev/null; rc=$?
[ $rc -eq 1 ] && grep -q "tiny-ia3-peft: a PEFT adapter: give its base model with --base" "$T/err" && ok hf_cli_adapter_needs_base ||
    fail hf_cli_adapter_needs_base "rc=$rc $(cat "$T/err")"
# an IA3 artifact for another base model is refused
$ART export-hf "$T/bf16.msgpack" --ia3 "$T/ia3.msgpack" --fold "$T/o" 2>"$T/err" >/dev/null; rc=$?
[ $rc -eq 1 ] && grep -q "belong to another base model" "$T/err" && ok hf_cli_ia3_wrong_base ||
    fail hf_cli_ia3_wrong_base "rc=$rc $(cat "$T/err")"

# make hf-import: an `exp.source = hf` experiment's base, tokenizer and task models
mkdir -p "$T/data"
for s in train validation test; do echo '{"input": "a b", "choices": ["x", "y"], "label": 0}' > "$T/data/$s.jsonl"; done
FA=$PWD/$F
expfile() { # MODE MODEL_ONE MODEL_TWO
    printf '%s\n' "exp.source = hf" "exp.mode = $1" "exp.base = $FA/tiny-f32" "exp.tasks = one,two" \
        "exp.task.one.model = $2" "exp.task.two.model = $3"
    for t in one two; do for s in train validation test; do echo "exp.task.$t.$s = $T/data/$s.jsonl"; done; done
}
expfile full "$FA/tiny-bf16" "$FA/tiny-f16-sharded" > "$T/full.conf"
if make -s hf-import EXP="$T/full.conf" HF_IMPORT_DIR="$T/imp" >"$T/out" 2>"$T/err"; then
    k=$($ART key "$T/imp/task-two.msgpack")
    kb=$($ART key "$T/f16.msgpack")
    [ -n "$k" ] && [ "$k" = "$kb" ] && [ "$(wc -l <"$T/imp/tasks.txt")" -eq 2 ] && grep -q "^vocab" "$T/out" &&
        ok hf_import_experiment || fail hf_import_experiment "keys $k vs $kb; $(cat "$T/out")"
    make -s hf-import EXP="$T/full.conf" HF_IMPORT_DIR="$T/imp" >/dev/null 2>"$T/err"
    [ ! -s "$T/err" ] && ok hf_import_experiment_nothing_twice || fail hf_import_experiment_nothing_twice "$(cat "$T/err")"
    # another checkpoint for task two, not newer than the import: re-imported
    expfile full "$FA/tiny-bf16" "$FA/tiny-bf16" > "$T/full.conf"
    kbf=$($ART key "$T/bf16.msgpack")
    if make -s hf-import EXP="$T/full.conf" HF_IMPORT_DIR="$T/imp" >/dev/null 2>"$T/err" &&
       k2=$($ART key "$T/imp/task-two.msgpack") && [ -n "$kbf" ] && [ "$k2" = "$kbf" ]; then ok hf_import_notices_another_checkpoint
    else fail hf_import_notices_another_checkpoint "task two key ${k2:-?}, the bf16 checkpoint's ${kbf:-?}"; fi
else
    fail hf_import_experiment "$(cat "$T/err")"
fi
expfile ia3 "$FA/tiny-ia3-peft" "$FA/tiny-ia3-peft" > "$T/ia3.conf"
if make -s hf-import EXP="$T/ia3.conf" HF_IMPORT_DIR="$T/imp3" >"$T/out" 2>"$T/err"; then
    cmp -s <($ART show "$T/imp3/task-one.msgpack" | sed -n '/^tensors/,$p') <($ART show "$T/ia3.msgpack" | sed -n '/^tensors/,$p') &&
        grep -q "\"base\": \"$($ART key "$T/imp3/base.msgpack")\"" <($ART show "$T/imp3/task-one.msgpack") &&
        ok hf_import_experiment_ia3 || fail hf_import_experiment_ia3 "ia3 artifact differs"
else
    fail hf_import_experiment_ia3 "$(cat "$T/err")"
fi
# a task model shaped unlike the base; a missing JSONL file
mkdir -p "$T/wide"; cp $F/tiny-f32/model.safetensors "$T/wide/"
sed 's/"d_model": 16/"d_model": 32/' $F/tiny-f32/config.json > "$T/wide/config.json"
expfile full "$FA/tiny-bf16" "$T/wide" > "$T/wide.conf"
make -s hf-import EXP="$T/wide.conf" HF_IMPORT_DIR="$T/impw" >/dev/null 2>"$T/err"; rc=$?
[ $rc -ne 0 ] && grep -q "wide/config.json: describes another model than .*base.msgpack (d_model 32 vs 16" "$T/err" &&
    ok hf_import_experiment_shapes || fail hf_import_experiment_shapes "rc=$rc $(cat "$T/err")"
expfile full "$FA/tiny-bf16" "$FA/tiny-bf16" | sed "s|exp.task.two.test = .*|exp.task.two.test = $T/nope.jsonl|" > "$T/nojsonl.conf"
make -s hf-import EXP="$T/nojsonl.conf" HF_IMPORT_DIR="$T/impn" >/dev/null 2>"$T/err"; rc=$?
[ $rc -ne 0 ] && grep -q "exp.task.two.test = .*nope.jsonl: no such file" "$T/err" &&
    ok hf_import_experiment_missing_file || fail hf_import_experiment_missing_file "rc=$rc $(cat "$T/err")"
# imports.mk: the workflow's slot variables for the imported artifacts
if [ -f "$T/imp/imports.mk" ] && grep -qx "K_pretrain := $($ART key "$T/imp/base.msgpack")" "$T/imp/imports.mk" &&
   grep -qx "A_ft-full-two-s1 := $T/imp/task-two.msgpack" "$T/imp/imports.mk" &&
   grep -qx "K_HF_JSONL_one_test := $(build/bin/key --file "$T/data/test.jsonl" | cut -d' ' -f1)" "$T/imp/imports.mk"; then
    ok hf_import_experiment_makefile; else fail hf_import_experiment_makefile "imports.mk missing or wrong"; fi

# the point of it all: imported checkpoints merge, and the merged model goes
# back out as a checkpoint that comes in again unchanged and evaluates
if [ -x build/bin/merge ] && [ -x build/bin/eval ]; then
    if q build/bin/merge --method ties --lambda 0.7 --pretrained "$T/imp/base.msgpack" \
           --models "$T/imp/task-one.msgpack,$T/imp/task-two.msgpack" -o "$T/merged.msgpack" &&
       q $ART export-hf "$T/merged.msgpack" --dtype f32 "$T/merged-hf" &&
       q $ART import-hf "$T/merged-hf" -o "$T/merged-back.msgpack" &&
       q build/bin/eval --model "$T/merged-back.msgpack" --data "$T/tokens.msgpack" -o "$T/merged-metrics.msgpack"; then
        $ART diff "$T/merged.msgpack" "$T/merged-back.msgpack" --tol 0 >/dev/null && ok hf_merge_export_reimport ||
            fail hf_merge_export_reimport "the re-imported merge differs"
    else
        fail hf_merge_export_reimport "$(cat "$T/err")"
    fi
else
    echo "skip hf_merge_export_reimport: build/bin/merge or build/bin/eval not built in this tree"
fi
