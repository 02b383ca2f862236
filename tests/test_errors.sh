#!/usr/bin/env bash
# Bad input to every stage: an unknown option, a missing input file, a
# corrupt or truncated artifact, an artifact of the wrong kind, a NaN. Each
# must exit with status 1 (not a crash), print exactly one line on stderr,
# name the offending option or file in it, and leave no output behind.
set -u
source "$(dirname "$0")/lib.sh" test_errors
export MATS_THREADS=1 MATS_PROGRESS_SECONDS=1000
B=build/bin
build/tests/test_t5_data --write "$T" || { fail data "could not write test data"; exit 1; }
M=$T/model.msgpack
$B/train --config configs/models/t5-micro.conf --set train.steps=1 --set train.batch_size=4 \
    --data "$T/train.msgpack" -o "$M" 2>"$T/log" || { fail model "$(tail -2 "$T/log")"; exit 1; }
size=$(stat -c %s "$M")
# corrupt: one byte flipped in the middle; truncated: the first half
cp "$M" "$T/flip.msgpack"
printf '\x5a' | dd of="$T/flip.msgpack" bs=1 seek=$((size / 2)) conv=notrunc status=none
head -c $((size / 2)) "$M" > "$T/trunc.msgpack"
$B/mkrandom --kind gram --like "$M" --seed 1 -o "$T/gram.msgpack" 2>/dev/null || { fail gram "mkrandom"; exit 1; }
printf 'ia3\tties\t1\ttest\t1\t%s/missing-metrics.msgpack\n' "$T" > "$T/manifest.tsv"


for s in train eval fisher gram merge tokenize report prepare auxtask; do
    expect "${s}_unknown_option" "--bogus" $B/$s --bogus
done
D="--data $T/train.msgpack"
expect train_missing_data nope.msgpack $B/train --config configs/models/t5-micro.conf --data "$T/nope.msgpack" -o "$T/out.msgpack"
expect train_corrupt_init flip.msgpack $B/train --config configs/models/t5-micro.conf --init "$T/flip.msgpack" $D -o "$T/out.msgpack"
expect eval_missing_model nope.msgpack $B/eval --model "$T/nope.msgpack" --data "$T/test.msgpack" -o "$T/out.msgpack"
expect eval_corrupt_model flip.msgpack $B/eval --model "$T/flip.msgpack" --data "$T/test.msgpack" -o "$T/out.msgpack"
expect eval_truncated_model trunc.msgpack $B/eval --model "$T/trunc.msgpack" --data "$T/test.msgpack" -o "$T/out.msgpack"
expect eval_nan_model nan_model.msgpack $B/eval --model "$T/nan_model.msgpack" --data "$T/test.msgpack" -o "$T/out.msgpack"
expect eval_model_as_data model.msgpack $B/eval --model "$M" --data "$M" -o "$T/out.msgpack"
expect fisher_missing_model nope.msgpack $B/fisher --model "$T/nope.msgpack" $D --type diagonal -o "$T/out.msgpack"
expect fisher_corrupt_model flip.msgpack $B/fisher --model "$T/flip.msgpack" $D --type diagonal -o "$T/out.msgpack"
expect fisher_nan_model nan_model.msgpack $B/fisher --model "$T/nan_model.msgpack" $D --type diagonal -o "$T/out.msgpack"
expect gram_missing_data nope.msgpack $B/gram --model "$M" --data "$T/nope.msgpack" -o "$T/out.msgpack"
expect gram_truncated_model trunc.msgpack $B/gram --model "$T/trunc.msgpack" $D -o "$T/out.msgpack"
expect gram_nan_model nan_model.msgpack $B/gram --model "$T/nan_model.msgpack" $D -o "$T/out.msgpack"
expect merge_missing_model nope.msgpack $B/merge --method average --pretrained "$M" --models "$M,$T/nope.msgpack" -o "$T/out.msgpack"
expect merge_corrupt_model flip.msgpack $B/merge --method average --pretrained "$M" --models "$M,$T/flip.msgpack" -o "$T/out.msgpack"
expect merge_truncated_gram trunc.msgpack $B/merge --method regmean --pretrained "$M" --models "$M,$M" \
    --gram "$T/gram.msgpack,$T/trunc.msgpack" -o "$T/out.msgpack"
expect tokenize_missing_vocab nope.msgpack $B/tokenize --vocab "$T/nope.msgpack" --data "$T/train.msgpack" -o "$T/out.msgpack"
expect tokenize_model_as_vocab model.msgpack $B/tokenize --vocab "$M" --data "$T/train.msgpack" -o "$T/out.msgpack"
expect report_missing_metrics missing-metrics.msgpack $B/report --manifest "$T/manifest.tsv" -o "$T/out.md" --no-plots
expect auxtask_corrupt_corpus flip.msgpack $B/auxtask --corpus "$T/flip.msgpack" --task order -o "$T/out.msgpack"
expect prepare_missing_config nope.conf $B/prepare --config "$T/nope.conf" -o "$T/out.d"
# relative-position buckets that would index outside the bias table
expect train_bad_buckets "relative_attention_num_buckets = 32 and _max_distance = 8" $B/train --config configs/models/t5-micro.conf \
    --set model.relative_attention_max_distance=8 --data "$T/train.msgpack" -o "$T/out.msgpack"
# a SentencePiece model with spm_train's default ids (unk 0, eos 2): id 0
# would be taken for padding
for i in $(seq 1 200); do echo "the quick brown fox jumps over the lazy dog, line $i"; done > "$T/spm.txt"
if spm_train --input="$T/spm.txt" --model_prefix="$T/spmdef" --vocab_size=60 --model_type=unigram >/dev/null 2>&1; then
    echo '{"input": "a b", "choices": ["x", "y"], "label": 0}' > "$T/one.jsonl"
    expect tokenize_non_t5_ids "spmdef.model: special ids pad -1, eos 2, unk 0" $B/tokenize --vocab "$T/spmdef.model" \
        --jsonl "$T/one.jsonl" --task t -o "$T/out.msgpack"
    expect import_spm_non_t5_ids "spmdef.model: special ids" build/bin/art import-spm "$T/spmdef.model" -o "$T/out.msgpack"
else fail spm_train "could not train a SentencePiece model"; fi
# JSONL tasks: a label that is not an integer index
if spm_train --input="$T/spm.txt" --model_prefix="$T/spmt5" --vocab_size=60 --model_type=unigram \
       --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 >/dev/null 2>&1; then
    printf '{"input": "a b", "choices": ["x", "y"], "label": 1.5}\n' > "$T/float.jsonl"
    printf '{"input": "a b", "choices": ["x", "y"], "label": 2}\n' > "$T/range.jsonl"
    printf '{"input": "a b", "choices": ["x", "y"], "label": 1' > "$T/cut.jsonl"
    expect jsonl_label_float "is not an integer" $B/tokenize --vocab "$T/spmt5.model" --jsonl "$T/float.jsonl" --task t -o "$T/out.msgpack"
    expect jsonl_label_range "is not an index" $B/tokenize --vocab "$T/spmt5.model" --jsonl "$T/range.jsonl" --task t -o "$T/out.msgpack"
    expect jsonl_truncated cut.jsonl $B/tokenize --vocab "$T/spmt5.model" --jsonl "$T/cut.jsonl" --task t -o "$T/out.msgpack"
else fail spm_train_t5 "could not train a SentencePiece model with T5 ids"; fi
# a merge that meets a NaN after it has opened its output leaves no
# temporary file; Fisher and Gram of a model whose logits overflow write nothing
expect_last merge_nan_midway nan_model.msgpack $B/merge --method average --pretrained "$T/huge_model.msgpack" \
    --models "$T/huge_model.msgpack,$T/nan_model.msgpack" -o "$T/out.msgpack"
expect_last fisher_overflow "not finite" $B/fisher --model "$T/huge_model.msgpack" $D --type diagonal -o "$T/out.msgpack"
expect_last gram_overflow "not finite" $B/gram --model "$T/huge_model.msgpack" $D -o "$T/out.msgpack"
expect eval_same_task_twice "both task 'has7'" $B/eval --model "$M" --data "$T/test.msgpack,$T/train.msgpack" -o "$T/out.msgpack"
