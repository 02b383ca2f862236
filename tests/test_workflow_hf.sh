#!/usr/bin/env bash
# The workflow on imported Hugging Face checkpoints (exp.source = hf): the
# tiny fixture checkpoints of tests/fixtures/hf as base and task models, JSON
# Lines tasks; `make merge METHOD=mats MODE=full` imports, tokenizes, computes
# the Gram statistics, merges and evaluates; the merged model exports back to
# a transformers directory.
set -u
source "$(dirname "$0")/lib.sh" mats-wfhf
t_cleanup() { rm -f reports/results-hf.md reports/results-hf-*; }
for t in a b; do for s in train validation test; do
    for i in 0 1 2 3 4 5 6 7 8 9; do
        printf '{"input": "the %s cat %d sat on the %s mat", "choices": ["yes", "no"], "label": %d}\n' "$t" "$i" "$s" $((i % 2))
    done > "$T/$t-$s.jsonl"
done; done
cat > "$T/hf.conf" <<CONF
exp.source = hf
exp.mode = full
exp.base = $REPO/tests/fixtures/hf/tiny-f32
exp.tasks = a,b
exp.task.a.model = $REPO/tests/fixtures/hf/tiny-bf16
exp.task.b.model = $REPO/tests/fixtures/hf/tiny-f16-sharded
exp.stats.examples = 8
tokenize.max_input = 32
tokenize.max_choice = 8
merge.iterations = 10
exp.methods = average,ties,mats,regmean
exp.lambda_grid = 0.5,1
CONF
for t in a b; do for s in train validation test; do echo "exp.task.$t.$s = $T/$t-$s.jsonl" >> "$T/hf.conf"; done; done

export MATS_CACHE=$T/cache
: > "$T/ran"
if MATS_RUN_LOG=$T/ran make --no-print-directory merge METHOD=mats MODE=full EXP="$T/hf.conf" > "$T/out" 2>&1; then
    st=$(cut -d' ' -f1 "$T/ran" | sort -u | tr '\n' ' ')
    if [ "$st" == "eval gram merge tokenize " ] && grep -q '| mats |' "$T/out"; then ok hf_merge_mats
    else fail hf_merge_mats "ran: $st"; tail -20 "$T/out"; fi
else fail hf_merge_mats "make failed"; tail -30 "$T/out"; fi
merged=$(sed -n 's/^merged artifacts: //p' "$T/out")
if [ -n "$merged" ] && build/bin/art export-hf "$merged" "$T/export" >/dev/null 2>&1 && [ -s "$T/export/model.safetensors" ]; then
    ok hf_merged_exports; else fail hf_merged_exports "export of '$merged' failed"; fi
: > "$T/ran"
if MATS_RUN_LOG=$T/ran make --no-print-directory merge METHOD=mats MODE=full EXP="$T/hf.conf" > "$T/out" 2>&1 &&
   grep -q '| mats |' "$T/out" && [ ! -s "$T/ran" ]; then ok hf_warm_runs_nothing
else fail hf_warm_runs_nothing "ran: $(cat "$T/ran"); $(tail -3 "$T/out")"; fi
if make --no-print-directory report EXP="$T/hf.conf" > "$T/out" 2>&1 && grep -q '| mats |' "$T/out" && grep -q '| ties |' "$T/out"; then
    ok hf_report_one_mode; else fail hf_report_one_mode "$(tail -5 "$T/out")"; fi
# without exp.mode the experiment is full (as hf-import reads it), and the
# report covers that mode
grep -v '^exp.mode' "$T/hf.conf" > "$T/hfnomode.conf"
if make --no-print-directory report EXP="$T/hfnomode.conf" > "$T/out2" 2>&1 && grep -q '^## full' reports/results-hfnomode.md &&
   grep -q '| mats |' reports/results-hfnomode.md; then ok hf_report_mode_defaults_to_full
else fail hf_report_mode_defaults_to_full "$(tail -3 "$T/out2")"; fi
rm -f reports/results-hfnomode.md reports/results-hfnomode-*
err=$(make --no-print-directory merge METHOD=mats MODE=ia3 EXP="$T/hf.conf" 2>&1 >/dev/null); rc=$?
# one line on stderr (make's own "*** [...] Error 2" lines from the
# sub-makes aside)
if [ $rc -ne 0 ] && [ "$(grep -v 'Error [0-9]' <<<"$err" | grep -c .)" -eq 1 ] && grep -q "exp.mode = full: run with MODE=full" <<<"$err"; then
    ok hf_mode_mismatch_one_line; else fail hf_mode_mismatch_one_line "rc $rc: $err"; fi
