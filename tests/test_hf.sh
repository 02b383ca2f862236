#!/usr/bin/env bash
# `art import-hf` / `art export-hf` on the PyTorch reference's checkpoints
# (tests/reference/hf_ref.py -> tests/fixtures/hf/):
#   - import -> export reproduces model.safetensors and config.json byte for
#     byte (F32 with the tied embed_tokens copies; BF16 without them);
#   - import -> export -> import gives a byte-identical artifact (F16, sharded);
#   - the tokenizer and the PEFT IA3 adapter files round-trip byte for byte;
#   - with the eval stage built: its choice_scores on an imported model match
#     the reference's scores;
#   - bad input: one line on stderr naming the file, exit status 1.
set -u
cd "$(dirname "$0")/.."
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
F=tests/fixtures/hf
ART=build/bin/art
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; }
q() { "$@" 2>"$T/err" >/dev/null; }

# F32: bytes in, same bytes out
if q $ART import-hf $F/tiny-f32 -o "$T/f32.msgpack" --vocab "$T/vocab.msgpack" &&
   q $ART export-hf "$T/f32.msgpack" --vocab "$T/vocab.msgpack" "$T/out32"; then
    if cmp -s "$T/out32/model.safetensors" $F/tiny-f32/model.safetensors &&
       cmp -s "$T/out32/config.json" $F/tiny-f32/config.json; then
        ok hf_roundtrip_f32_bytes; else fail hf_roundtrip_f32_bytes "model.safetensors or config.json differ"; fi
    if cmp -s "$T/out32/spiece.model" $F/tiny-f32/spiece.model &&
       cmp -s "$T/out32/tokenizer_config.json" $F/tiny-f32/tokenizer_config.json; then
        ok hf_roundtrip_tokenizer; else fail hf_roundtrip_tokenizer "spiece.model or tokenizer_config.json differ"; fi
    # and back: the same artifact, byte for byte (the key derives from the input bytes)
    q $ART import-hf "$T/out32" -o "$T/f32b.msgpack" && cmp -s "$T/f32.msgpack" "$T/f32b.msgpack" &&
        ok hf_reimport_same_artifact || fail hf_reimport_same_artifact "$(cat "$T/err")"
else
    fail hf_roundtrip_f32_bytes "$(cat "$T/err")"
fi

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
        cmp -s "$T/outad/model.safetensors" $F/tiny-f32/model.safetensors &&
        ok hf_roundtrip_ia3_adapter || fail hf_roundtrip_ia3_adapter "adapter files differ"
else
    fail hf_roundtrip_ia3_adapter "$(cat "$T/err")"
fi

# the eval stage on an imported model gives the reference's scores
if [ -x build/bin/eval ]; then
    build/tests/test_hf --write-tokens "$T/tokens.msgpack" &&
    if q build/bin/eval --model "$T/bf16.msgpack" --data "$T/tokens.msgpack" -o "$T/metrics.msgpack"; then
        res=$(build/tests/test_hf --compare-scores "$T/metrics.msgpack" bf16 2>&1) && ok hf_eval_scores ||
            fail hf_eval_scores "$res"
    else
        fail hf_eval_scores "eval failed: $(cat "$T/err")"
    fi
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
