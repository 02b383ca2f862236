#!/usr/bin/env bash
# Checksum-valid artifacts with hostile contents, given to the stages, and
# outputs that are not regular files (issue 25). Each case must exit with
# status 1 (not a crash, not a silent success), print one line on stderr
# naming the file and the tensor or value, and leave the output alone. The
# hostile files are valid ones with one edit (build/tests/test_loaders
# --poke); tests/test_loaders.c checks the loaders themselves.
#
# The output cases use a FIFO, never /dev/null: before the fix a writer
# renamed its temporary file over whatever was there (as root, /dev/null
# became a regular file), and a regression must not break the machine.
set -u
source "$(dirname "$0")/lib.sh" test_hostile
export MATS_THREADS=1 MATS_PROGRESS_SECONDS=1000
B=build/bin
P=build/tests/test_loaders
build/tests/test_t5_data --write "$T" || { fail data "could not write test data"; exit 1; }
$P --write-samples "$T" || { fail samples "could not write samples"; exit 1; }
M=$T/model.msgpack
$B/train --config configs/models/t5-micro.conf --set train.steps=1 --set train.batch_size=4 \
    --data "$T/train.msgpack" -o "$M" 2>"$T/log" || { fail model "$(tail -2 "$T/log")"; exit 1; }

# poke NAME SRC EDIT...: $T/NAME.msgpack, a copy of SRC with the edits
poke() { local n=$1 s=$2; shift 2; $P --poke "$s" "$T/$n.msgpack" "$@" || fail "poke_$n" "could not write"; }


# 1. choice ids of -100000000 crashed eval, fisher and gram (exit 139) and
#    passed train; -7 read out of bounds everywhere and exited 0
poke cid_1e8 "$T/test.msgpack" 'choice_ids[3]=-100000000'
poke cid_7 "$T/test.msgpack" 'choice_ids[0]=-7'
for c in cid_1e8 cid_7; do
    v=$([ $c = cid_7 ] && echo -7 || echo -100000000)
    W="$c.msgpack|choice_ids|element|$v"
    expect "eval_${c}" "$W" $B/eval --model "$M" --data "$T/$c.msgpack" -o "$T/out.msgpack"
    expect "fisher_${c}" "$W" $B/fisher --model "$M" --data "$T/$c.msgpack" --type diagonal -o "$T/out.msgpack"
    expect "gram_${c}" "$W" $B/gram --model "$M" --data "$T/$c.msgpack" -o "$T/out.msgpack"
    expect "train_${c}" "$W" $B/train --config configs/models/t5-micro.conf --set train.steps=1 \
        --data "$T/$c.msgpack" -o "$T/out.msgpack"
done
# an i64 id past int32 was cut to a small one
poke id_big "$T/test.msgpack" 'input_ids:i64' 'input_ids[2]=4294967301'
expect eval_input_id_past_int32 "id_big.msgpack|input_ids|element 2|4294967301" \
    $B/eval --model "$M" --data "$T/id_big.msgpack" -o "$T/out.msgpack"
# a label past its example's choices
poke label "$T/test.msgpack" 'label[1]=9'
expect eval_label_past_choices "label.msgpack|label|element 1" $B/eval --model "$M" --data "$T/label.msgpack" -o "$T/out.msgpack"

# 2. tokenize --dump segfaulted on offsets out of range
poke ioff "$T/tokens.msgpack" 'input_offsets[1]=1000000'
poke coff "$T/tokens.msgpack" 'choice_offsets[3]=-5'
poke ecoff "$T/tokens.msgpack" 'example_choices[1]=40'
expect dump_input_offsets_out_of_range "ioff.msgpack|input_offsets|element 1|1000000" $B/tokenize --dump "$T/ioff.msgpack"
expect dump_choice_offsets_out_of_range "coff.msgpack|choice_offsets|element 3" $B/tokenize --dump "$T/coff.msgpack"
expect dump_example_choices_out_of_range "ecoff.msgpack|example_choices|element 1" $B/tokenize --dump "$T/ecoff.msgpack"
# valid input dumps as before
if $B/tokenize --dump "$T/tokens.msgpack" > "$T/dump.txt" 2>"$T/err" &&
   [ "$(tr '\n' '/' < "$T/dump.txt")" = "I 5 6 1/C 8 1/C 9 1/I 7 1/C 3 1/C 4 4 1/C 2/" ]; then
    ok dump_valid_tokens
else fail dump_valid_tokens "$(tr '\n' '/' < "$T/dump.txt") $(head -2 "$T/err")"; fi
# prepare --dump read a corpus's text through its offsets
poke corpus_off "$T/corpus.msgpack" 'offsets[2]=99'
expect prepare_dump_corpus_offsets "corpus_off.msgpack|offsets|element 2|99" $B/prepare --dump "$T/corpus_off.msgpack"

# 3. meta.config numbers that do not fit or do not describe the file
poke cfg_trunc "$M" 'meta.config.d_model=4294967328'
poke cfg_layers "$M" 'meta.config.num_layers=1073741824'
expect eval_config_d_model_truncated "cfg_trunc.msgpack|d_model" $B/eval --model "$T/cfg_trunc.msgpack" --data "$T/test.msgpack" -o "$T/out.msgpack"
expect eval_config_layers_unbacked "cfg_layers.msgpack|layers" $B/eval --model "$T/cfg_layers.msgpack" --data "$T/test.msgpack" -o "$T/out.msgpack"
expect export_config_layers_unbacked "cfg_layers.msgpack|layers" $B/art export-hf "$T/cfg_layers.msgpack" "$T/out.hf"

# 4. outputs that are not regular files: refused, left as they were
mkfifo "$T/fifo"
ln -s "$T/fifo" "$T/link"
for o in fifo link; do
    expect_last "merge_output_${o}_refused" "$o|pipe|regular file" $B/merge --method average --pretrained "$M" \
        --models "$M,$M" -o "$T/$o"
    [ -p "$T/fifo" ] && [ -L "$T/link" ] && ok "merge_output_${o}_left_alone" || fail "merge_output_${o}_left_alone" "replaced"
done
mkdir -p "$T/out.hf2"
mkfifo "$T/out.hf2/config.json"
$B/art export-hf "$M" "$T/out.hf2" >/dev/null 2>"$T/err"
if [ $? -eq 1 ] && [ "$(grep -c . "$T/err")" -eq 1 ] && grep -q "config.json.*pipe" "$T/err" &&
   [ -p "$T/out.hf2/config.json" ] && [ ! -e "$T/out.hf2/model.safetensors" ]; then
    ok export_output_fifo_refused_before_writing
else fail export_output_fifo_refused_before_writing "$(head -2 "$T/err" | tr '\n' '|') $(ls "$T/out.hf2")"; fi
rm -rf "$T/out.hf2"

# 5. a training checkpoint (OUT.ckpt, resumed when its meta.run matches):
#    its step indexes the data order, its weights are copied into a buffer
#    of n floats
TC=(--config configs/models/t5-micro.conf --set train.steps=3 --set train.batch_size=4 --set train.ckpt_every=1
    --data "$T/train.msgpack")
rm -f "$T/ck.msgpack" "$T/ck.msgpack.ckpt"
{ MATS_TEST_KILL_AFTER_CKPT=1 $B/train "${TC[@]}" -o "$T/ck.msgpack" >/dev/null 2>&1; } 2>/dev/null # killed after step 1
if [ -s "$T/ck.msgpack.ckpt" ]; then
    poke ckpt_step "$T/ck.msgpack.ckpt" 'meta.step=-5'
    cp "$T/ckpt_step.msgpack" "$T/ck.msgpack.ckpt"
    expect train_checkpoint_negative_step "ck.msgpack.ckpt|step -5|delete it" $B/train "${TC[@]}" -o "$T/ck.msgpack"
    poke ckpt_f64 "$T/ckpt_step.msgpack" 'meta.step=1' 'weights:f64'
    cp "$T/ckpt_f64.msgpack" "$T/ck.msgpack.ckpt"
    if $B/train "${TC[@]}" -o "$T/ck.msgpack" >/dev/null 2>"$T/err" && grep -q "ignoring unreadable checkpoint.*weights.*f64" "$T/err" &&
       ! grep -q "resuming" "$T/err"; then
        ok train_checkpoint_f64_weights_not_resumed
    else fail train_checkpoint_f64_weights_not_resumed "$(head -3 "$T/err" | tr '\n' '|')"; fi
else fail train_checkpoint "no checkpoint after a kill at step 1"; fi
