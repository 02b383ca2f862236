#!/usr/bin/env bash
# Command lines (lib/opts.h): strict numbers and declared ranges, repeated
# and stray arguments, --help everywhere, and the checks that run before any
# work: a cache key that is not hex, an output that cannot be written or is
# not a regular file, an output that is one of the stage's own inputs.
# Also: absurd model.* values name their key, a UTF-8 byte-order mark is
# skipped, export-hf refuses NaN weights, art diff never hides a NaN.
# Each failure is one line on stderr, exit 1, and leaves the inputs as they
# were. MATS_BIN=DIR runs the programs of another build (to see these tests
# fail on the code before them).
set -u
source "$(dirname "$0")/lib.sh" test_options
export MATS_THREADS=1 MATS_PROGRESS_SECONDS=1000
B=${MATS_BIN:-build/bin}
build/tests/test_t5_data --write "$T" || { fail data "could not write test data"; exit 1; }
build/tests/test_opts --write-corpus "$T/corpus.msgpack" || { fail corpus "could not write a corpus"; exit 1; }
MICRO=(--config configs/models/t5-micro.conf --set train.steps=1 --set train.batch_size=4)
M=$T/model.msgpack
$B/train "${MICRO[@]}" --data "$T/train.msgpack" -o "$M" 2>"$T/log" || { fail model "$(tail -2 "$T/log")"; exit 1; }
$B/mkrandom --kind model --preset tiny -o "$T/p.msgpack" &&
    $B/mkrandom --kind model --like "$T/p.msgpack" --seed 1 -o "$T/a.msgpack" &&
    $B/mkrandom --kind model --like "$T/p.msgpack" --seed 2 -o "$T/b.msgpack" || { fail mkrandom; exit 1; }
$B/eval --model "$M" --data "$T/test.msgpack" -o "$T/metrics.msgpack" >/dev/null 2>"$T/log" ||
    { fail metrics "$(tail -1 "$T/log")"; exit 1; }
for i in $(seq 1 200); do echo "the quick brown fox jumps over the lazy dog, line $i"; done > "$T/spm.txt"
spm_train --input="$T/spm.txt" --model_prefix="$T/spm" --vocab_size=60 --model_type=unigram \
    --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 >/dev/null 2>&1 || { fail spm "spm_train failed"; exit 1; }
echo '{"input": "a quick fox", "choices": ["x", "y"], "label": 0}' > "$T/one.jsonl"
MERGE=(--pretrained "$T/p.msgpack" --models "$T/a.msgpack,$T/b.msgpack")

# expect NAME WORD COMMAND...: exit 1, exactly one stderr line, containing WORD
expect() {
    local name=$1 word=$2; shift 2
    "$@" >"$T/stdout" 2>"$T/err"
    local rc=$? n
    n=$(grep -c . "$T/err")
    if [ $rc -eq 1 ] && [ "$n" -eq 1 ] && grep -qF -- "$word" "$T/err"; then ok "$name"
    else fail "$name" "exit $rc, $n lines, want one naming '$word': $(head -3 "$T/err" | tr '\n' '|')"; fi
}
# expect_kept NAME FILE WORD COMMAND...: expect, and FILE is byte for byte what it was
expect_kept() {
    local name=$1 file=$2 word=$3; shift 3
    cp -a "$file" "$T/kept"
    expect "$name" "$word" "$@"
    cmp -s "$file" "$T/kept" || fail "${name}_input_kept" "$file was changed"
}

# ---------------------------------------------------------------- numbers
expect iterations_fraction_refused "--iterations: '1.5' is not an integer" \
    $B/merge --method cg_average "${MERGE[@]}" --iterations 1.5 -o "$T/out.msgpack"
expect iterations_overflow_refused "--iterations: '1e10' is not an integer" \
    $B/merge --method cg_average "${MERGE[@]}" --iterations 1e10 -o "$T/out.msgpack"
expect threads_out_of_range_refused "--threads: 100000 is outside" \
    $B/merge --method average "${MERGE[@]}" --threads 100000 -o "$T/out.msgpack"
expect sentinels_overflow_refused "--sentinels: 99999999999 is outside [0, 10000]" \
    $B/tokenize --vocab "$T/spm.model" --jsonl "$T/one.jsonl" --task t --sentinels 99999999999 -o "$T/out.msgpack"
expect sentinels_junk_refused "--sentinels: 'abc' is not an integer" \
    $B/tokenize --vocab "$T/spm.model" --jsonl "$T/one.jsonl" --task t --sentinels abc -o "$T/out.msgpack"
expect scale_nan_refused "--scale: 'nan' is not a finite number" \
    $B/mkrandom --kind model --like "$T/p.msgpack" --scale nan -o "$T/out.msgpack"
printf 'full\tties\t1\tvalidation\tabc\t%s\n' "$T/metrics.msgpack" > "$T/lambda.tsv"
expect report_lambda_junk_refused "lambda 'abc' is not a number" $B/report --manifest "$T/lambda.tsv" -o "$T/out.md" --no-plots
expect argmax_lambda_junk_refused "LAMBDA 'abc' is not a number" $B/report --argmax "abc=$T/metrics.msgpack"

# ---------------------------------------------------------------- repeats, strays, lists
expect method_twice_refused "--method is given twice" \
    $B/merge --method average --method ties "${MERGE[@]}" -o "$T/out.msgpack"
expect output_twice_refused "-o is given twice" \
    $B/merge --method average "${MERGE[@]}" -o "$T/out.msgpack" -o "$T/out2.msgpack"
if $B/merge --method average --pretrained "$T/p.msgpack" --models "$T/a.msgpack" --models "$T/b.msgpack" \
        -o "$T/two.msgpack" 2>"$T/err" >/dev/null &&
   $B/art show "$T/two.msgpack" | grep -qF "$($B/art key "$T/a.msgpack")" &&
   $B/art show "$T/two.msgpack" | grep -qF "$($B/art key "$T/b.msgpack")"; then ok models_repeated_merges_all
else fail models_repeated_merges_all "a repeated --models (a list) must add to the list: $(tail -1 "$T/err")"; fi
expect data_empty_element_refused "an empty element" \
    $B/train "${MICRO[@]}" --data "$T/train.msgpack," -o "$T/out.msgpack"
expect show_stray_argument_refused "unexpected argument 'extra'" $B/art show "$M" extra
expect eval_stray_argument_refused "unexpected argument 'extra'" \
    $B/eval --model "$M" --data "$T/test.msgpack" -o "$T/out.msgpack" extra
expect keys_unknown_set_refused "unknown key 'data.bogus'" \
    $B/prepare --config configs/data.conf --set data.bogus=1 --keys
long=$(printf 'g%.0s' $(seq 1 40))
printf '%s\tties\t1\ttest\t-\t%s\n' "$long" "$T/metrics.msgpack" > "$T/group.tsv"
expect group_name_too_long_refused "group name '$long' is longer than 31" \
    $B/report --manifest "$T/group.tsv" -o "$T/out.md" --no-plots

# --help: the usage on stdout, exit 0, for every program and art command
for p in train eval fisher gram merge tokenize report prepare auxtask art key mkrandom bench_merge \
         "art show" "art verify" "art diff" "art key" "art import-hf" "art import-spm" "art export-hf"; do
    set -- $p
    prog=$1; shift
    if $B/$prog "$@" --help >"$T/help" 2>"$T/err" && grep -q '^usage: ' "$T/help"; then ok "help_${p// /_}"
    else fail "help_${p// /_}" "exit $?: $(head -2 "$T/err" | tr '\n' '|')"; fi
done

# ---------------------------------------------------------------- before any work
expect key_not_hex_before_training "--key 'nothex' is not 32 lowercase hex digits" \
    $B/train "${MICRO[@]}" --data "$T/train.msgpack" --key nothex -o "$T/out.msgpack"
expect unwritable_directory_before_training "cannot create files in directory /proc" \
    $B/train "${MICRO[@]}" --data "$T/train.msgpack" -o /proc/mats-test/out.msgpack
expect output_under_a_file_refused "is a regular file, not a directory" \
    $B/gram --model "$M" --data "$T/train.msgpack" -o "$T/train.msgpack/out.msgpack"
mkfifo "$T/fifo"
expect output_fifo_refused "exists and is a named pipe" $B/merge --method average "${MERGE[@]}" -o "$T/fifo"
[ -p "$T/fifo" ] || fail output_fifo_kept "the named pipe was replaced"
mkdir "$T/adir"
expect output_directory_refused "exists and is a directory" $B/eval --model "$M" --data "$T/test.msgpack" -o "$T/adir"

# the output is one of the stage's own inputs (also through a link)
expect_kept eval_output_is_model "$M" "is the input --model" $B/eval --model "$M" --data "$T/test.msgpack" -o "$M"
ln -s "$T/a.msgpack" "$T/a-link.msgpack"
expect_kept merge_output_is_model "$T/a.msgpack" "is the input --models" \
    $B/merge --method average "${MERGE[@]}" -o "$T/a-link.msgpack"
expect_kept tokenize_output_is_jsonl "$T/one.jsonl" "is the input --jsonl" \
    $B/tokenize --vocab "$T/spm.model" --jsonl "$T/one.jsonl" --task t -o "$T/one.jsonl"
expect_kept train_output_is_data "$T/train.msgpack" "is the input --data" \
    $B/train "${MICRO[@]}" --data "$T/train.msgpack" -o "$T/train.msgpack"
expect_kept fisher_output_is_data "$T/train.msgpack" "is the input --data" \
    $B/fisher --model "$M" --data "$T/train.msgpack" --type diagonal --examples 4 -o "$T/train.msgpack"
expect_kept gram_output_is_model "$M" "is the input --model" \
    $B/gram --model "$M" --data "$T/train.msgpack" --examples 4 -o "$M"
expect_kept auxtask_output_is_corpus "$T/corpus.msgpack" "is the input --corpus" \
    $B/auxtask --corpus "$T/corpus.msgpack" --task order --set auxtask.examples=10 -o "$T/corpus.msgpack"
printf 'full\tties\t1\ttest\t-\t%s\n' "$T/metrics.msgpack" > "$T/m.tsv"
expect_kept report_output_is_manifest "$T/m.tsv" "is the input --manifest" \
    $B/report --manifest "$T/m.tsv" -o "$T/m.tsv" --no-plots
expect_kept report_output_is_metrics "$T/metrics.msgpack" "listed in --manifest" \
    $B/report --manifest "$T/m.tsv" -o "$T/metrics.msgpack" --no-plots
expect_kept report_resolve_output_is_metrics "$T/metrics.msgpack" "listed in --manifest" \
    $B/report --manifest "$T/m.tsv" --resolve "$T/metrics.msgpack"
expect report_resolve_and_o_refused "give -o OUT.md or --resolve OUT.tsv, not both" \
    $B/report --manifest "$T/m.tsv" --resolve "$T/r.tsv" -o "$T/out.md"
# a resolved manifest (report --resolve) reports as its artifacts did; its
# numbers are checked as a metrics artifact's are
if $B/report --manifest "$T/m.tsv" --resolve "$T/r.tsv" 2>/dev/null && $B/report --manifest "$T/m.tsv" -o "$T/a.md" --no-plots 2>/dev/null &&
   $B/report --manifest "$T/r.tsv" -o "$T/b.md" --no-plots 2>/dev/null && cmp -s "$T/a.md" "$T/b.md"; then ok report_resolved_reports_the_same
else fail report_resolved_reports_the_same "$(diff "$T/a.md" "$T/b.md" 2>&1 | head -3)"; fi
# each hostile resolved entry (SPEC) and the words of its one-line refusal
long=$(printf 'x%.0s' $(seq 1 80))
while IFS='|' read -r name spec word; do
    printf 'full\tties\t1\ttest\t-\t=%s\n' "$spec" > "$T/rr.tsv"
    expect "report_resolved_$name" "$word" $B/report --manifest "$T/rr.tsv" -o "$T/out.md" --no-plots
done <<EOF2
nan_refused|single=0;t=nan|accuracy 'nan' of task 't' is not in [0, 1]
out_of_range_refused|single=0;t=1.5|accuracy '1.5' of task 't' is not in [0, 1]
without_single_refused|t=0.5|rr.tsv:1: a resolved line needs single=N
single_junk_refused|single=99;t=0.5|single=99 is not a task count
task_twice_refused|single=0;t=0.5;t=0.25|task 't' given twice
not_name_value_refused|single=0;t|resolved entry 't' is not NAME=VALUE
long_task_refused|single=0;$long=0.5|is longer than 63 characters
EOF2
cp -r tests/fixtures/hf/tiny-f32 "$T/hf"
expect_kept import_hf_output_in_checkpoint "$T/hf/spiece.model" "a file of the input directory" \
    $B/art import-hf "$T/hf" -o "$T/hf/spiece.model"

# ---------------------------------------------------------------- what the values mean
expect init_bogus_names_option_and_choices "--init 'bogus' is not average, pretrained or task_arithmetic" \
    $B/merge --method cg_average "${MERGE[@]}" --init bogus -o "$T/out.msgpack"
# (under a 4 GiB address-space limit: a build that tried would fail fast, not
# take the machine; not under AddressSanitizer, whose shadow memory needs
# terabytes of address space: make SAN=1 test sets MATS_SANITIZED)
LIMIT_VM=4194304
[ -n "${MATS_SANITIZED:-}" ] && LIMIT_VM=unlimited
expect num_heads_absurd_names_key "model.num_heads = 1000000: must be in" \
    bash -c 'ulimit -v "$0"; exec "$@"' "$LIMIT_VM" \
    $B/train "${MICRO[@]}" --set model.num_heads=1000000 --data "$T/train.msgpack" -o "$T/out.msgpack"
printf '\xEF\xBB\xBFexp.x = 7\n' > "$T/bom.conf"
v=$($B/key --config "$T/bom.conf" --get exp.x 2>"$T/err")
[ "$v" = 7 ] && ok config_byte_order_mark_skipped || fail config_byte_order_mark_skipped "got '$v': $(head -1 "$T/err")"
printf '\xEF\xBB\xBF' | cat - "$T/one.jsonl" > "$T/bom.jsonl"
if $B/tokenize --vocab "$T/spm.model" --jsonl "$T/bom.jsonl" --task t -o "$T/bom.msgpack" 2>"$T/err" &&
   $B/tokenize --vocab "$T/spm.model" --jsonl "$T/one.jsonl" --task t -o "$T/nobom.msgpack" 2>>"$T/err" &&
   [ "$($B/tokenize --dump "$T/bom.msgpack")" = "$($B/tokenize --dump "$T/nobom.msgpack")" ]; then
    ok jsonl_byte_order_mark_skipped
else fail jsonl_byte_order_mark_skipped "$(tail -1 "$T/err")"; fi
expect export_hf_nan_refused "nan_model.msgpack: tensor" $B/art export-hf "$T/nan_model.msgpack" "$T/hfout"
[ -e "$T/hfout/model.safetensors" ] && fail export_hf_nan_wrote_nothing "model.safetensors written"

# art diff: a NaN is never "no difference"; --tol is a number
if ! $B/art diff "$T/nan_model.msgpack" "$T/nan_model.msgpack" --tol 1e30 >"$T/out" 2>&1 &&
   grep -q '^max rel difference nan' "$T/out"; then ok diff_nan_not_hidden
else fail diff_nan_not_hidden "$(tail -1 "$T/out")"; fi
expect diff_tol_nan_refused "--tol: 'nan' is not a finite number" $B/art diff "$T/a.msgpack" "$T/b.msgpack" --tol nan
expect diff_tol_junk_refused "--tol: 'abc' is not a number" $B/art diff "$T/a.msgpack" "$T/b.msgpack" --tol abc
if $B/art diff "$T/a.msgpack" "$T/a.msgpack" --tol 0 >/dev/null && ! $B/art diff "$T/a.msgpack" "$T/b.msgpack" --tol 0 >/dev/null
then ok diff_tol_still_works; else fail diff_tol_still_works "same files must pass --tol 0, different ones fail"; fi
