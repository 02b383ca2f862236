#!/usr/bin/env bash
# The released base (release/, scripts/base-release.sh, exp.release):
# - the committed release verifies and its recorded recipe is what the
#   repository's configs say now;
# - on the smoke experiment: a release made by `scripts/base-release.sh
#   install` is used by `make merge` with no pretraining, and its key is the
#   one the fine-tunes start from; the recipe check catches a changed config;
#   a corrupt or missing released file stops make before any stage runs, with
#   one line naming the file and the command that rebuilds it.
set -u
source "$(dirname "$0")/lib.sh" mats-release
export MATS_CACHE=$T/cache

# --- the committed release
if out=$(bash scripts/base-release.sh check 2>&1); then ok committed_release_verifies_and_matches_recipe
else fail committed_release_verifies_and_matches_recipe "$out"; fi
# default.conf uses it, and the vocabulary's key is the released one
dv=$(make --no-print-directory -s data-paths 2>/dev/null | sed -n 's/^vocab //p')
[ "$dv" = release/vocab.msgpack ] && ok default_experiment_uses_released_vocabulary ||
    fail default_experiment_uses_released_vocabulary "data-paths says vocab '$dv'"

# --- a smoke-sized release
REC=$T/smoke-release.conf REL=$T/rel USE=$T/smoke-use.conf
printf 'include %s/configs/experiments/smoke.conf\n' "$REPO" > "$REC"
# the experiment that starts from it: no supervised phase, so the released
# base is the base every fine-tune starts from
printf 'include %s/configs/experiments/smoke.conf\nexp.release = %s\nexp.base_phase =\n' "$REPO" "$REL" > "$USE"
if make --no-print-directory pretrain EXP="$REC" > "$T/pre.out" 2>&1 &&
   RELEASE=$REL CONF=$REC bash scripts/base-release.sh install > "$T/inst.out" 2>&1; then
    ok smoke_release_installs
else fail smoke_release_installs "$(tail -3 "$T/pre.out" "$T/inst.out")"; exit 1; fi
for f in base.msgpack vocab.msgpack recipe/corpus.key recipe/vocab.key recipe/tokens.key recipe/base.key recipe/base.log; do
    [ -s "$REL/$f" ] || fail release_has_its_recipe "$f missing"
done
ok release_has_its_recipe

: > "$T/ran"
if MATS_RUN_LOG=$T/ran make --no-print-directory merge EXP="$USE" METHOD=average > "$T/merge.out" 2>&1 && grep -q '| average |' "$T/merge.out"; then
    if grep -q ' pretrain ' "$T/ran" || grep -q '^vocab ' "$T/ran"; then
        fail merge_from_release_runs_no_pretraining "ran: $(cut -d' ' -f2 "$T/ran" | tr '\n' ' ')"
    else ok merge_from_release_runs_no_pretraining; fi
    rk=$(build/bin/art key "$REL/base.msgpack")
    # a fine-tune (the cache also holds the smoke release's own pretraining)
    ft=$(grep -l '^config train.objective=seq2seq$' "$MATS_CACHE"/train/*.key | head -n 1)
    grep -q "^input init $rk\$" "$ft" && ok finetunes_start_from_released_key ||
        fail finetunes_start_from_released_key "$ft: $(grep '^input init' "$ft")"
    vk=$(build/bin/art key "$REL/vocab.msgpack")
    tok=$(make --no-print-directory -s data-paths DATA_CONF="$USE" | awk '$1 == "topic.train" {print $2}')
    tv=$(build/bin/art show "$tok" 2>/dev/null | sed -n 's/^ *"vocab": "\([0-9a-f]*\)",*$/\1/p')
    [ -n "$vk" ] && [ "$tv" = "$vk" ] && ok tokens_use_released_vocabulary ||
        fail tokens_use_released_vocabulary "$tok: vocab '$tv', released '$vk'"
else fail merge_from_release_runs_no_pretraining "make merge failed: $(tail -5 "$T/merge.out")"; fi

# recipe check: a config value that differs from the recorded recipe is named
cp "$REC" "$T/changed.conf"
echo "model.layer_norm_epsilon = 1e-5" >> "$T/changed.conf"
out=$(RELEASE=$REL CONF=$T/changed.conf bash scripts/base-release.sh check 2>&1)
[ $? -ne 0 ] && grep -q 'model.layer_norm_epsilon' <<<"$out" && ok recipe_check_names_changed_value ||
    fail recipe_check_names_changed_value "$out"
printf 'include %s\nvocab.size = 300\n' "$REC" > "$T/vocab-changed.conf"
out=$(RELEASE=$REL CONF=$T/vocab-changed.conf bash scripts/base-release.sh check 2>&1)
[ $? -ne 0 ] && grep -q 'vocab.size' <<<"$out" && ok recipe_check_covers_the_vocabulary ||
    fail recipe_check_covers_the_vocabulary "$out"

# a corrupt or missing released file: one line, the file, the rebuild command; nothing runs
bad_release() { # NAME FILE
    : > "$T/ran"
    MATS_RUN_LOG=$T/ran make --no-print-directory merge EXP="$USE" METHOD=average > "$T/bad.out" 2>&1
    local rc=$? lines
    # make's one error line names the file and the rebuild (the calling
    # make adds its own "Error 2" line after it)
    lines=$(grep -c "\*\*\* $2: " "$T/bad.out")
    if [ $rc -ne 0 ] && [ ! -s "$T/ran" ] && [ "$lines" -eq 1 ] && grep "\*\*\* $2: " "$T/bad.out" | grep -q "make base-release"; then
        ok "$1"; else fail "$1" "rc $rc, ran '$(cat "$T/ran")': $(cat "$T/bad.out")"; fi
}
cp "$REL/base.msgpack" "$T/base.good"
printf '\x5a' | dd of="$REL/base.msgpack" bs=1 seek=5000 conv=notrunc 2>/dev/null
bad_release corrupt_released_base_stops_make "$REL/base.msgpack"
cp "$T/base.good" "$REL/base.msgpack"
mv "$REL/vocab.msgpack" "$T/vocab.good"
bad_release missing_released_vocabulary_stops_make "$REL/vocab.msgpack"
mv "$T/vocab.good" "$REL/vocab.msgpack"
out=$(RELEASE=$REL CONF=$REC bash scripts/base-release.sh check 2>&1) && ok restored_release_checks_again ||
    fail restored_release_checks_again "$out"

# --- carrying an unfinished run to another machine (carry-out, carry-in):
# the smoke recipe's pretraining killed right after its checkpoint of step
# 20, carried out of that cache and into an empty one, resumes there and
# ends in the bytes of the unbroken run above, with the log of both tries
C2=$T/cache2 C3=$T/cache3 CAR=$T/carry
key=$(basename "$(MATS_CACHE=$C2 CONF=$REC bash scripts/base-release.sh run 2>/dev/null)" .msgpack)
[ "$(MATS_CACHE=$MATS_CACHE CONF=$REC bash scripts/base-release.sh run 2>&1 >/dev/null)" = "base-release: built" ] &&
    [ -s "$MATS_CACHE/train/$key.msgpack" ] && ok release_run_names_the_built_run ||
    fail release_run_names_the_built_run "key '$key'"

MATS_TEST_KILL_AFTER_CKPT=20 MATS_CACHE=$C2 make --no-print-directory pretrain EXP="$REC" > "$T/killed.out" 2>&1
if [ -s "$C2/train/$key.msgpack.ckpt" ] && [ ! -e "$C2/train/$key.msgpack" ]; then ok carry_run_killed_after_checkpoint
else fail carry_run_killed_after_checkpoint "$(tail -3 "$T/killed.out")"; fi
if out=$(MATS_CACHE=$C2 CONF=$REC bash scripts/base-release.sh carry-out "$CAR" 2>&1) && grep -q 'carried step 20 of 30' <<<"$out" &&
   [ -s "$CAR/base.ckpt" ] && [ -s "$CAR/base.log" ] && [ -s "$CAR/base.keytext" ] && [ -s "$CAR/commit" ]; then
    ok carry_out_writes_checkpoint_log_and_key
else fail carry_out_writes_checkpoint_log_and_key "$out; $(ls "$CAR" 2>&1)"; fi
# another recipe's run: refused, one line naming the checkpoint
printf 'include %s\nmodel.layer_norm_epsilon = 1e-5\n' "$REC" > "$T/other.conf"
out=$(MATS_CACHE=$C3 CONF=$T/other.conf bash scripts/base-release.sh carry-in "$CAR" 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q "base.ckpt is of run $key" <<<"$out" && [ ! -d "$C3/train" ] &&
    ok carry_in_refuses_another_runs_checkpoint || fail carry_in_refuses_another_runs_checkpoint "$out"
# ... and when the carried key text is gone or names another train binary
cp -r "$CAR" "$T/carry-nokey" && rm "$T/carry-nokey/base.keytext"
out=$(MATS_CACHE=$C3 CONF=$T/other.conf bash scripts/base-release.sh carry-in "$T/carry-nokey" 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'recipe or its data changed' <<<"$out" &&
    ok carry_in_without_key_text_says_why || fail carry_in_without_key_text_says_why "$out"
cp -r "$CAR" "$T/carry-bin" && sed -i 's/^binary .*/binary 0123456789abcdef0123456789abcdef/' "$T/carry-bin/base.keytext"
out=$(MATS_CACHE=$C3 CONF=$T/other.conf bash scripts/base-release.sh carry-in "$T/carry-bin" 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'train binary of digest 0123456789abcdef0123456789abcdef' <<<"$out" &&
    grep -q 'git worktree add' <<<"$out" && ok carry_in_names_the_binary_to_build || fail carry_in_names_the_binary_to_build "$out"
# a make that holds the run's lock (training it): neither carry touches it
# (the lock on a descriptor of this shell: the carries open their own)
mkdir -p "$C3/train"
exec 8>"$C3/train/$key.msgpack.lock"; flock 8
out=$(MATS_CACHE=$C3 CONF=$REC bash scripts/base-release.sh carry-in "$CAR" 2>&1)
[ $? -ne 0 ] && grep -q 'is held' <<<"$out" && [ ! -e "$C3/train/$key.msgpack.ckpt" ] && ok carry_in_refuses_while_training ||
    fail carry_in_refuses_while_training "$out"
exec 8>&-
exec 8>"$C2/train/$key.msgpack.lock"; flock 8
out=$(MATS_CACHE=$C2 CONF=$REC bash scripts/base-release.sh carry-out "$T/carry-held" 2>&1)
[ $? -ne 0 ] && grep -q 'is held' <<<"$out" && [ ! -e "$T/carry-held/base.ckpt" ] && ok carry_out_refuses_while_training ||
    fail carry_out_refuses_while_training "$out"
exec 8>&-
out=$(MATS_CACHE=$C2 CONF=$REC bash scripts/base-release.sh run 2>&1 >/dev/null)
[ "$out" = "base-release: checkpoint of step 20 of 30" ] && ok release_run_names_the_checkpoints_step ||
    fail release_run_names_the_checkpoints_step "$out"
if out=$(MATS_CACHE=$C3 CONF=$REC bash scripts/base-release.sh carry-in "$CAR" 2>&1) && [ -s "$C3/train/$key.msgpack.ckpt" ] &&
   out2=$(MATS_CACHE=$C3 CONF=$REC bash scripts/base-release.sh carry-in "$CAR" 2>&1) && grep -q 'kept' <<<"$out2" &&
   MATS_CACHE=$C3 make --no-print-directory pretrain EXP="$REC" > "$T/resumed.out" 2>&1; then
    if grep -q 'resuming .* from step 20' "$T/resumed.out" && cmp -s "$MATS_CACHE/train/$key.msgpack" "$C3/train/$key.msgpack"; then
        ok carried_run_resumes_to_unbroken_bytes
    else fail carried_run_resumes_to_unbroken_bytes "$(grep -c resuming "$T/resumed.out") resume lines; cmp: $(cmp "$MATS_CACHE/train/$key.msgpack" "$C3/train/$key.msgpack" 2>&1)"; fi
    # the log: both tries' opening lines, the first try's before the resume
    n=$(grep -c ' 30 steps of ' "$C3/train/$key.log")
    first=$(grep -n -m1 ' 30 steps of ' "$C3/train/$key.log" | cut -d: -f1)
    res=$(grep -n -m1 'resuming' "$C3/train/$key.log" | cut -d: -f1)
    [ "$n" -eq 2 ] && [ -n "$res" ] && [ "$first" -lt "$res" ] && [ ! -e "$C3/train/$key.log.before" ] &&
        ok resumed_log_keeps_the_first_try || fail resumed_log_keeps_the_first_try "$n opening lines, first at $first, resume at $res"
else fail carried_run_resumes_to_unbroken_bytes "$out $(tail -3 "$T/resumed.out")"; fi
out=$(MATS_CACHE=$C3 CONF=$REC bash scripts/base-release.sh carry-out "$T/carry2" 2>&1)
[ $? -ne 0 ] && grep -q 'is built' <<<"$out" && [ ! -e "$T/carry2" ] && ok carry_out_of_finished_run_refused ||
    fail carry_out_of_finished_run_refused "$out"
# installing another run leaves the carry alone; installing the run that
# was carried removes it
mkdir -p "$T/rel3" && cp -r "$CAR" "$T/rel3/carry"
if MATS_CACHE=$C3 make --no-print-directory pretrain EXP="$T/other.conf" > "$T/other.out" 2>&1 &&
   out=$(RELEASE=$T/rel3 MATS_CACHE=$C3 CONF=$T/other.conf bash scripts/base-release.sh install 2>&1) && [ -s "$T/rel3/carry/base.ckpt" ]; then
    ok install_of_another_run_keeps_carry
else fail install_of_another_run_keeps_carry "$out $(tail -2 "$T/other.out")"; fi
mkdir -p "$T/rel2" && cp -r "$CAR" "$T/rel2/carry"
if out=$(RELEASE=$T/rel2 MATS_CACHE=$C3 CONF=$REC bash scripts/base-release.sh install 2>&1) && [ ! -e "$T/rel2/carry" ] &&
   cmp -s "$T/rel2/base.msgpack" "$REL/base.msgpack" && grep -q 'resuming' "$T/rel2/recipe/base.log"; then
    ok install_of_carried_run_removes_carry
else fail install_of_carried_run_removes_carry "$out"; fi

# --- a run in progress, measured: art from-checkpoint reads the step-20
# checkpoint as a model (the smoke recipe's schedule is constant, so a
# 20-step run of it ends in the same weights), and heldout gives both the
# same losses, leaving its inputs as they were
printf 'include %s/configs/train/smoke-pretrain.conf\ntrain.steps = 20\n' "$REPO" > "$T/pre20.conf"
printf 'include %s\nexp.pretrain = %s\n' "$REC" "$T/pre20.conf" > "$T/rec20.conf"
if MATS_CACHE=$C3 make --no-print-directory pretrain EXP="$T/rec20.conf" > "$T/pre20.out" 2>&1 &&
   m20=$(MATS_CACHE=$C3 CONF=$T/rec20.conf bash scripts/base-release.sh run 2>/dev/null) &&
   build/bin/art from-checkpoint "$CAR/base.ckpt" --like "$REL/base.msgpack" -o "$T/s20.msgpack" 2>/dev/null &&
   build/bin/art diff "$T/s20.msgpack" "$m20" --tol 0 > "$T/diff20.out" 2>&1; then
    ok checkpoint_reads_as_the_model_of_its_step
else fail checkpoint_reads_as_the_model_of_its_step "$(tail -2 "$T/pre20.out" "$T/diff20.out" 2>&1)"; fi
out=$(build/bin/art from-checkpoint "$CAR/base.ckpt" --like release/base.msgpack -o "$T/wrong.msgpack" 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'give --like a model of the run' <<<"$out" && [ ! -e "$T/wrong.msgpack" ] &&
    ok checkpoint_of_another_size_refused || fail checkpoint_of_another_size_refused "$out"
cp "$CAR/base.ckpt" "$T/in.ckpt"
out=$(build/bin/art from-checkpoint "$T/in.ckpt" --like "$REL/base.msgpack" -o "$T/in.ckpt" 2>&1)
[ $? -ne 0 ] && cmp -s "$T/in.ckpt" "$CAR/base.ckpt" && ok checkpoint_output_over_input_refused ||
    fail checkpoint_output_over_input_refused "$out"
sum0=$(md5sum "$m20" "$CAR/base.ckpt")
if out=$(RELEASE=$REL MATS_CACHE=$C3 CONF=$REC bash scripts/base-release.sh heldout "$m20" "$CAR/base.ckpt" 2>&1); then
    a=$(awk 'NR == 2 {print $3, $4}' <<<"$out") b=$(awk 'NR == 3 {print $3, $4}' <<<"$out")
    # losses of a trained model: positive, held-out and corpus both printed
    [ "$(wc -l <<<"$out")" -eq 3 ] && [ "$a" = "$b" ] && awk '{exit !($1 > 0 && $2 > 0)}' <<<"$a" &&
        [ "$(awk 'NR == 3 {print $2}' <<<"$out")" = 20 ] && ok heldout_measures_checkpoint_and_model_alike ||
        fail heldout_measures_checkpoint_and_model_alike "$out"
else fail heldout_measures_checkpoint_and_model_alike "$out"; fi
[ "$(md5sum "$m20" "$CAR/base.ckpt")" = "$sum0" ] && ok heldout_leaves_its_inputs ||
    fail heldout_leaves_its_inputs "$(md5sum "$m20" "$CAR/base.ckpt")"
out=$(RELEASE=$REL MATS_CACHE=$C3 CONF=$REC bash scripts/base-release.sh heldout "$T/none.msgpack" 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'none.msgpack: no such file' <<<"$out" &&
    ok heldout_of_missing_file_refused || fail heldout_of_missing_file_refused "$out"

# --- a rounded release (exp.release_round = bf16): the same run's base with
# every weight rounded to bfloat16, keyed by one more step of the recipe
printf 'include %s\nexp.release_round = bf16\n' "$REC" > "$T/round.conf"
if out=$(RELEASE=$T/relr CONF=$T/round.conf bash scripts/base-release.sh install 2>&1) &&
   grep -q 'rounded to bf16' <<<"$out" && [ -s "$T/relr/recipe/round.key" ]; then
    ok rounded_release_installs_and_checks
else fail rounded_release_installs_and_checks "$out"; fi
rk=$(build/bin/art key "$T/relr/base.msgpack") bk=$(build/bin/art key "$REL/base.msgpack")
[ -n "$rk" ] && [ "$rk" != "$bk" ] && grep -q "^input model $bk\$" "$T/relr/recipe/round.key" &&
    ok rounded_release_has_its_own_key || fail rounded_release_has_its_own_key "rounded $rk, as trained $bk"
# within bfloat16's rounding of the weights as trained, and not equal to them
d=$(build/bin/art diff "$REL/base.msgpack" "$T/relr/base.msgpack" 2>&1 | sed -n 's/^max rel difference \([^ ]*\) .*/\1/p')
awk -v d="$d" 'BEGIN {exit !(d > 0 && d <= 2^-8)}' && ok rounded_release_within_bf16_rounding ||
    fail rounded_release_within_bf16_rounding "max rel difference '$d'"
# every value is a bfloat16: through the exporter's own bf16 conversion and back, unchanged
if build/bin/art export-hf "$T/relr/base.msgpack" --dtype bf16 "$T/relr-hf" > /dev/null 2>&1 &&
   build/bin/art import-hf "$T/relr-hf" --no-vocab -o "$T/relr-back.msgpack" > /dev/null 2>&1 &&
   build/bin/art diff "$T/relr/base.msgpack" "$T/relr-back.msgpack" --tol 0 > /dev/null 2>&1; then
    ok rounded_release_values_are_bfloat16
else fail rounded_release_values_are_bfloat16 "$(build/bin/art diff "$T/relr/base.msgpack" "$T/relr-back.msgpack" 2>&1 | tail -1)"; fi
out=$(RELEASE=$T/relr CONF=$T/round.conf bash scripts/base-release.sh compare 2>&1)
grep -q 'weights: identical to the release' <<<"$out" && ok rounded_release_compares_identical ||
    fail rounded_release_compares_identical "$out"
out=$(build/bin/art round-bf16 "$T/relr/base.msgpack" --key "$rk" -o "$T/twice.msgpack" 2>&1)
[ $? -ne 0 ] && grep -q 'rounded already' <<<"$out" && [ ! -e "$T/twice.msgpack" ] && ok rounding_twice_refused ||
    fail rounding_twice_refused "$out"
out=$(RELEASE=$T/relr CONF=$REC bash scripts/base-release.sh check 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'sets no exp.release_round' <<<"$out" &&
    ok rounded_release_needs_the_recipe_to_say_so || fail rounded_release_needs_the_recipe_to_say_so "$out"
out=$(RELEASE=$REL CONF=$T/round.conf bash scripts/base-release.sh check 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'round.key is missing' <<<"$out" &&
    ok unrounded_release_refused_by_rounding_recipe || fail unrounded_release_refused_by_rounding_recipe "$out"
printf 'include %s\nexp.release_round = f16\n' "$REC" > "$T/round-f16.conf"
out=$(RELEASE=$T/relr CONF=$T/round-f16.conf bash scripts/base-release.sh check 2>&1)
[ $? -ne 0 ] && grep -q 'give bf16' <<<"$out" && ok unknown_rounding_refused || fail unknown_rounding_refused "$out"
# a finite weight beyond bfloat16's range (3.4e38 rounds to infinity), put
# into the smoke base through the Hugging Face files: refused, nothing written
if build/bin/art export-hf "$REL/base.msgpack" "$T/huge-hf" > /dev/null 2>&1 &&
   python3 - "$T/huge-hf/model.safetensors" <<'PY' &&
import json, struct, sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
name = sorted(k for k in h if k != "__metadata__")[0]
o = 8 + n + h[name]["data_offsets"][0]
b[o:o + 4] = struct.pack("<f", 3.4e38)
open(p, "wb").write(b)
PY
   build/bin/art import-hf "$T/huge-hf" --no-vocab -o "$T/huge.msgpack" > /dev/null 2>&1; then
    out=$(build/bin/art round-bf16 "$T/huge.msgpack" --key "$rk" -o "$T/huge-r.msgpack" 2>&1)
    [ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'round to infinity' <<<"$out" &&
        [ -z "$(ls "$T" | grep '^huge-r')" ] && ok rounding_beyond_bf16_range_refused ||
        fail rounding_beyond_bf16_range_refused "$out; $(ls "$T" | grep '^huge-r')"
else fail rounding_beyond_bf16_range_refused "could not make the model with a huge weight"; fi
out=$(build/bin/art round-bf16 "$REL/base.msgpack" --key "$bk" -o "$T/ownkey.msgpack" 2>&1)
[ $? -ne 0 ] && grep -q "own key" <<<"$out" && [ ! -e "$T/ownkey.msgpack" ] && ok rounding_under_the_inputs_key_refused ||
    fail rounding_under_the_inputs_key_refused "$out"
# a rounded file put in place of the release whose recipe has no rounding step
mkdir -p "$T/relx" && cp -r "$REL/recipe" "$REL/vocab.msgpack" "$T/relx/" && cp "$T/relr/base.msgpack" "$T/relx/base.msgpack"
out=$(RELEASE=$T/relx CONF=$REC bash scripts/base-release.sh check 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'base.msgpack' <<<"$out" &&
    ok rounded_file_in_unrounded_release_refused || fail rounded_file_in_unrounded_release_refused "$out"
