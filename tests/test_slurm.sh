#!/usr/bin/env bash
# The Slurm executor on a real one-node cluster on localhost
# (tests/slurm_cluster.sh: munged, slurmctld and slurmd as root, a config in
# a temporary directory, jobcomp/filetxt). On the smoke experiment:
# make plan lists what a cold make merge runs; a cold make merge
# EXECUTOR=slurm -j2 runs every stage as a Slurm job (the job completion
# log) with the experiment's slurm.* resources and SLURM_ARGS, and gives the
# same files and bytes as a local run (the resources enter no key); a bad resource key stops
# make before anything runs; a run on the GPU asks for gpu:1; a job Slurm
# refuses and a job cancelled
# mid-run (scancel) each fail the make with one line naming the slot,
# stage, key, Slurm job id and log, leave no artifact that looks complete,
# and the rerun completes, the cancelled training resuming from its
# checkpoint. With exp.stats.shards = 3, each Gram runs as three shard jobs
# and a reduce job, and equals the local unsharded Gram. exp.train.ranks = 2
# trains on 2 ranks per job (srun --mpi=pmix) to the bytes of 1 rank. A
# machine where the cluster cannot start prints
# "skip slurm_executor: why".
set -u
source "$(dirname "$0")/lib.sh" mats-slurm-test
t_cleanup() { bash tests/slurm_cluster.sh stop "$T/cluster"; }
T0=$(date +%s)  # seconds since the start, printed with each result
ok() { echo "ok $1 [$(($(date +%s) - T0)) s]"; }

why=
for b in srun scancel squeue slurmctld slurmd munged; do
    command -v $b >/dev/null || { why="$b is not installed (scripts/install-deps.sh --slurm)"; break; }
done
[ -z "$why" ] && [ "$(id -u)" -ne 0 ] && why="the test cluster's daemons run as root, and this is uid $(id -u)"
if [ -z "$why" ]; then started=$(bash tests/slurm_cluster.sh start "$T/cluster") || why=$started; fi
if [ -n "$why" ]; then echo "skip slurm_executor: $why"; exit 0; fi
export SLURM_CONF=$T/cluster/slurm.conf
JOBCOMP=$T/cluster/jobcomp.log

LOCALF=$T/local.conf
echo "include $REPO/configs/experiments/smoke.conf" > "$LOCALF"
# resources in the experiment: one CPU a job, so that -j2 runs two at a
# time on a 2-core node (the stages still use their own thread count)
SLURMF=$T/cluster.conf
printf '%s\n' "include $REPO/configs/experiments/smoke.conf" "slurm.cpus = 1" "slurm.train.mem = 1G" \
    "slurm.merge.time = 10" "slurm.eval.partition = debug" > "$SLURMF"

# mk OUT CACHE ARGS...: make with the stages that ran in $T/ran
mk() {
    local out=$1 cache=$2; shift 2
    : > "$T/ran"
    MATS_RUN_LOG=$T/ran MATS_CACHE=$cache make --no-print-directory "$@" > "$out" 2>&1
}
slots() { awk '{print $2}' "$1" | sort; }

# make plan on a cold cache lists the runs that make then runs
L=$T/local
mk "$T/plan.out" "$L" plan EXP="$LOCALF" METHOD=ties
awk '$NF ~ /\.msgpack$/ {print $(NF - 1)}' "$T/plan.out" | sort > "$T/plan.slots"
if mk "$T/local.out" "$L" merge EXP="$LOCALF" METHOD=ties -j2 && grep -q '^| ties |' "$T/local.out"; then
    slots "$T/ran" > "$T/local.slots"
    if [ -s "$T/plan.slots" ] && cmp -s "$T/plan.slots" "$T/local.slots" && grep -q '^critical path: ' "$T/plan.out"; then
        ok "plan_lists_what_make_runs ($(wc -l < "$T/plan.slots") runs)"
    else fail plan_lists_what_make_runs "$(diff "$T/plan.slots" "$T/local.slots" | head -5 | tr '\n' ' ')"; fi
else fail local_merge "$(tail -5 "$T/local.out")"; exit 1; fi
# a new lambda: its merges and evaluations, estimated from the runs of
# their kind that were just recorded; N nodes never beat the critical path
mk "$T/plan2.out" "$L" plan EXP="$LOCALF" METHOD=ties LAMBDA=0.5
n=$(awk '$NF ~ /\.msgpack$/' "$T/plan2.out" | wc -l); like=$(awk '$NF ~ /\.msgpack$/ && $(NF - 3) ~ /^like:/' "$T/plan2.out" | wc -l)
cp=$(sed -n 's/^critical path: \([0-9.]*\) s .*/\1/p' "$T/plan2.out")
last=$(awk '/^ *[0-9]+  /{t=$2} END{print t}' "$T/plan2.out")
if [ "$n" -eq 6 ] && [ "$like" -eq 6 ] && [ -n "$cp" ] && [ "$last" = "$cp" ]; then ok plan_estimates_from_recorded_runs
else fail plan_estimates_from_recorded_runs "$n runs, $like from records, critical path '$cp', last N line '$last'"; cat "$T/plan2.out"; fi

# cold make merge through Slurm
S=$T/slurm
if mk "$T/slurm.out" "$S" merge EXP="$SLURMF" METHOD=ties EXECUTOR=slurm SLURM_ARGS='--account=matstest --comment=mats' -j2 &&
   grep -q '^| ties |' "$T/slurm.out"; then
    cp "$T/ran" "$T/slurm.ran"
    missing=0 n=0
    while read -r stage slot key; do
        n=$((n + 1))
        grep -q "Name=mats-$stage-${key:0:8} JobState=COMPLETED " "$JOBCOMP" || { missing=$((missing + 1)); echo "  no completed job for $slot ($stage $key)"; }
    done < "$T/slurm.ran"
    jobs=$(grep -c 'Name=mats-' "$JOBCOMP")
    # the resources and SLURM_ARGS reached the jobs
    res=$(awk '/Name=mats-/ && !/ Account=matstest / {print "account: " $0}
               / Name=mats-train-/ && !/mem=1G/ {print "train mem: " $0}
               / Name=mats-merge-/ && !/ TimeLimit=10 / {print "merge time: " $0}' "$JOBCOMP" | head -3)
    [ -z "$res" ] || { missing=$((missing + 1)); echo "  $res"; }
    stages=$(awk '{print $1}' "$T/slurm.ran" | sort -u | tr '\n' ' ')
    if [ $missing -eq 0 ] && [ "$n" -eq "$jobs" ] && [ "$n" -eq "$(wc -l < "$T/local.slots")" ] &&
       [ "$stages" = "auxtask eval merge prepare tokenize train vocab " ]; then
        ok "every_stage_ran_as_a_slurm_job ($n jobs: $stages)"
    else fail every_stage_ran_as_a_slurm_job "$n runs, $jobs jobs, $missing without a completed job; stages: $stages"; fi
else fail slurm_merge "$(tail -5 "$T/slurm.out")"; exit 1; fi

diffs=0 n=0
[ "$(cd "$L" && ls */*.msgpack)" = "$(cd "$S" && ls */*.msgpack)" ] || { diffs=1; echo "  the artifact lists differ"; }
for f in $(cd "$L" && ls */*.msgpack); do
    n=$((n + 1)); cmp -s "$L/$f" "$S/$f" || { diffs=$((diffs + 1)); echo "  differs or missing: $f"; }
done
# no key text holds the executor or its resources
grep -l -E '^config (slurm|exp)\.' "$S"/*/*.key && diffs=$((diffs + 1))
[ $diffs -eq 0 ] && [ $n -gt 30 ] && ok "slurm_artifacts_byte_identical_to_local ($n artifacts, same keys)" ||
    fail slurm_artifacts_byte_identical_to_local "$diffs of $n differ"
recs=$(awk -F'\t' '$8 == "ok" && $9 == "slurm" && $11 ~ /^[0-9]+$/' "$S/times.tsv" | wc -l)
[ "$recs" -eq "$(wc -l < "$T/slurm.ran")" ] && grep -q '^run-stage: slurm job [0-9]* on ' "$S"/train/*.log &&
    ok "runs_recorded_with_job_ids ($recs)" || fail runs_recorded_with_job_ids "$recs records"

# sharded statistics through Slurm: exp.stats.shards = 3 fans each Gram out
# into three shard jobs and a reduce job; every reduced Gram equals the
# local unsharded one to float32 rounding (sums over thousands of tokens:
# up to 2.6e-6 of the largest value with our SYRK kernel, under 2e-6 with
# OpenBLAS's, whose summation order differs)
SHF=$T/shards.conf
printf '%s\n' "include $SLURMF" "exp.stats.shards = 3" > "$SHF"
if mk "$T/local-rm.out" "$L" merge EXP="$LOCALF" METHOD=regmean MODE=full SEEDS=1 -j2 && cp "$T/ran" "$T/local-rm.ran" &&
   mk "$T/shard.out" "$S" merge EXP="$SHF" METHOD=regmean MODE=full SEEDS=1 EXECUTOR=slurm -j2; then
    bad=0 grams=0
    while read -r stage slot key; do
        [ "$stage" = gram ] || continue
        case $slot in *-sh[123]) ;; *)
            grams=$((grams + 1))
            for i in 1 2 3; do
                sk=$(awk -v s="$slot-sh$i" '$2 == s {print $3}' "$T/ran")
                [ -n "$sk" ] && grep -q "Name=mats-gram-${sk:0:8} JobState=COMPLETED " "$JOBCOMP" || { bad=$((bad + 1)); echo "  no completed shard job $slot-sh$i"; }
            done
            grep -q "Name=mats-gram-${key:0:8} JobState=COMPLETED " "$JOBCOMP" || { bad=$((bad + 1)); echo "  no completed reduce job for $slot"; }
            uk=$(awk -v s="$slot" '$2 == s {print $3}' "$T/local-rm.ran")
            build/bin/art diff "$S/gram/$key.msgpack" "$L/gram/$uk.msgpack" --tol 5e-6 > "$T/gdiff" 2>&1 || { bad=$((bad + 1)); echo "  $slot: reduced and unsharded differ"; tail -2 "$T/gdiff"; }
        esac
    done < "$T/ran"
    if [ $bad -eq 0 ] && [ $grams -eq 2 ]; then ok "sharded_statistics_through_slurm_equal_unsharded ($grams Grams, 3 shards each)"
    else fail sharded_statistics_through_slurm_equal_unsharded "$bad problems, $grams reduced Grams"; fi
else fail sharded_statistics_through_slurm_equal_unsharded "$(tail -3 "$T/local-rm.out" "$T/shard.out")"; fi

# a resource key that names no resource stops make before anything runs
cp "$SLURMF" "$T/bad.conf"; echo "slurm.train.cpu = 2" >> "$T/bad.conf"
if ! mk "$T/bad.out" "$S" merge EXP="$T/bad.conf" METHOD=ties LAMBDA=0.5 EXECUTOR=slurm &&
   grep -q "slurm.train.cpu: 'cpu' is not a Slurm resource" "$T/bad.out" && [ ! -s "$T/ran" ]; then
    ok bad_resource_key_refused_before_running
else fail bad_resource_key_refused_before_running "$(tail -3 "$T/bad.out")"; fi

# a job Slurm refuses (no such partition): one line, no artifact
cp "$SLURMF" "$T/nopart.conf"; echo "slurm.eval.partition = nosuch" >> "$T/nopart.conf"
mk "$T/nopart.out" "$S" merge EXP="$T/nopart.conf" METHOD=ties LAMBDA=0.5 SEEDS=1 EXECUTOR=slurm; rc=$?
line=$(grep 'FAILED ' "$T/nopart.out")
key=$(sed -n 's/.*(stage eval, key \([0-9a-f]\{32\}\)).*/\1/p' <<<"$line")
if [ $rc -ne 0 ] && [ "$(grep -c 'FAILED ' "$T/nopart.out")" -eq 1 ] && [ -n "$key" ] && [ ! -e "$S/eval/$key.msgpack" ] &&
   grep -q "Slurm refused the job (.*[Pp]artition.*) after [0-9.]*s; log: $S/eval/$key.log\$" <<<"$line"; then
    ok refused_job_fails_with_one_line
else fail refused_job_fails_with_one_line "rc $rc: $line"; fi

# a run on the GPU asks for gres gpu:1, which this node has not got
cp "$SLURMF" "$T/gpu.conf"; echo "fisher.device = cuda" >> "$T/gpu.conf"
mk "$T/gpu.out" "$S" merge EXP="$T/gpu.conf" METHOD=fisher SEEDS=1 EXECUTOR=slurm; rc=$?
line=$(grep 'FAILED ' "$T/gpu.out")
if [ $rc -ne 0 ] && grep -q "^\[[0-9:]*\] FAILED fisher-.* (stage fisher, key [0-9a-f]*): Slurm refused the job (.*gres.*)" <<<"$line"; then
    ok gpu_run_asks_for_a_gpu
else fail gpu_run_asks_for_a_gpu "rc $rc: $line"; fi

# cancelled mid-run: a longer IA3 training of topic, seed 1 (checkpoints
# every 10 steps), exp.executor = slurm in the experiment instead of EXECUTOR=
C=$T/cancel.conf
cp "$SLURMF" "$C"
printf '%s\n' "exp.executor = slurm" "task.topic.ia3.train.steps = 200" "task.topic.ia3.train.ckpt_every = 10" \
    "task.topic.ia3.train.eval_every = 100" "task.topic.ia3.train.patience = 10" >> "$C"
: > "$T/ran"
( MATS_RUN_LOG=$T/ran MATS_CACHE=$S setsid make --no-print-directory merge EXP="$C" METHOD=ties SEEDS=1 -j2 > "$T/cancel.out" 2>&1 ) & mpid=$!
key=
for _ in $(seq 600); do
    f=$(ls "$S"/train/*.msgpack.ckpt 2>/dev/null | head -1)
    if [ -n "$f" ]; then key=$(basename "$f" .msgpack.ckpt); break; fi
    kill -0 $mpid 2>/dev/null || break
    sleep 0.2
done
job=
[ -n "$key" ] && job=$(squeue -h -o '%i %j' | awk -v n="mats-train-${key:0:8}" '$2 == n {print $1}')
[ -n "$job" ] && scancel "$job"
wait $mpid; rc=$?
line=$(grep 'FAILED ' "$T/cancel.out")
if [ -n "$job" ] && [ $rc -ne 0 ] && [ "$(grep -c 'FAILED ' "$T/cancel.out")" -eq 1 ] &&
   grep -q "^\[[0-9:]*\] FAILED ft-ia3-topic-s1 (stage train, key $key): Slurm job $job was cancelled after [0-9.]*s; log: $S/train/$key.log\$" <<<"$line" &&
   grep -q "^JobId=$job .*Name=mats-train-${key:0:8} JobState=CANCELLED " "$JOBCOMP" && [ ! -e "$S/train/$key.msgpack" ]; then
    ok "cancelled_job_fails_make_with_one_line (job $job)"
else fail cancelled_job_fails_make_with_one_line "key '$key', job '$job', rc $rc: $line"; tail -5 "$T/cancel.out"; fi
bad=0
for f in "$S"/*/*.msgpack; do build/bin/art verify "$f" >/dev/null 2>&1 || { bad=$((bad + 1)); echo "  does not verify: $f"; }; done
mk "$T/rerun.out" "$S" merge EXP="$C" METHOD=ties SEEDS=1 -j2; rc=$?
if [ $rc -eq 0 ] && [ $bad -eq 0 ] && [ -n "$key" ] && [ -s "$S/train/$key.msgpack" ] && grep -q "resuming .* from step [1-9]" "$S/train/$key.log" &&
   grep -q '^| ties |' "$T/rerun.out" && grep -q "ft-ia3-topic-s1 $key" "$T/ran"; then
    ok "rerun_resumes_from_checkpoint_and_completes ($(grep -o 'from step [0-9]*' "$S/train/$key.log" | head -1))"
else fail rerun_resumes_from_checkpoint_and_completes "rc $rc, $bad corrupt: $(tail -3 "$T/rerun.out")"; fi

# train on 2 ranks under Slurm: exp.train.ranks = 2 makes each train run of
# make pretrain one job of 2 tasks (srun --mpi=pmix: Debian's Slurm and Open
# MPI together); the models are byte for byte those a local make trains on
# 1 rank under the same keys (docs/ranks.md)
if ldd build/bin/train | grep -q libmpi; then
    R=$T/ranks.conf
    printf '%s\n' "include $REPO/configs/experiments/smoke.conf" "train.grad_accum = 2" "exp.train.ranks = 2" > "$R"
    mk "$T/ranks.out" "$S" pretrain EXP="$R" EXECUTOR=slurm; rc=$?
    keys=$(awk '$1 == "train" {print $3}' "$T/ran" | sort | tr '\n' ' ')
    mk "$T/ranks1.out" "$L" pretrain EXP="$R" RANKS=1; rc1=$?
    keys1=$(awk '$1 == "train" {print $3}' "$T/ran" | sort | tr '\n' ' ')
    good=0
    for k in $keys; do
        grep -q "2 ranks (MPI)" "$S/train/$k.log" && [ "$(grep -c '^run-stage: slurm job [0-9]* on ' "$S/train/$k.log")" -eq 2 ] &&
            cmp -s "$S/train/$k.msgpack" "$L/train/$k.msgpack" && good=$((good + 1))
    done
    if [ $rc -eq 0 ] && [ $rc1 -eq 0 ] && [ "$(wc -w <<<"$keys")" -eq 2 ] && [ "$keys" = "$keys1" ] && [ $good -eq 2 ]; then
        ok "train_on_2_ranks_under_slurm_same_bytes (2 runs)"
    else fail train_on_2_ranks_under_slurm_same_bytes "rc $rc/$rc1, keys '$keys' / '$keys1', $good of 2 equal: $(tail -3 "$T/ranks.out")"; fi
else echo "skip train_on_2_ranks_under_slurm: build/bin/train was built with MPI=0"; fi
