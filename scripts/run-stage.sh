#!/usr/bin/env bash
# run-stage.sh SLOT OUT KEYTEXT -- COMMAND...
# run-stage.sh --check
#
# Run one stage of the workflow: print a start line, run COMMAND with its
# output also logged to OUT's .log, print an end line with the elapsed time.
# KEYTEXT is a file holding the canonical key text (or -); it is kept beside
# the artifact (OUT with .key) and as the slot's last-built key (make explain).
# Every run is appended to $MATS_RUN_LOG when set (the workflow tests read it).
# A run that resumes from its checkpoint (train's OUT.ckpt, or OUT.model.msgpack.ckpt
# for an optimizer Fisher's run) keeps the log of the tries before it: each
# try's log is set aside in OUT's .log.before when the next starts, and put
# before the last try's log when the run ends, if that try resumed (train's
# "resuming" line); a try that started afresh drops them.
#
# Executors (docs/cluster.md). MATS_EXECUTOR=local (the default) runs
# COMMAND here. MATS_EXECUTOR=slurm runs it as one Slurm job through srun,
# named mats-<stage>-<first 8 hex of the key>, with the resources of the
# experiment's slurm.* entries ($MATS_EXEC_CONF):
#   slurm.cpus  slurm.mem  slurm.time  slurm.partition  slurm.gres   every stage
#   slurm.<stage>.cpus ...                                           one stage
# (<stage>: prepare vocab tokenize auxtask train eval fisher gram merge).
# cpus defaults to 2, the stages' thread count (MATS_THREADS when set: the
# job gets this environment, and the thread count changes the last bits of
# some sums, so it is never taken from the allocation); mem, time and partition default to
# the site's; a run on the GPU (--device cuda, DEVICE=cuda or <stage>.device
# = cuda) asks for gres gpu:1 unless slurm.[<stage>.]gres says otherwise
# ("none": no gres). $SLURM_ARGS (word-split) carries site flags such as
# --account and --qos. srun relays the job's output, so the .log is written
# here as for a local run; a failed, cancelled or timed-out job is one
# FAILED line naming the slot, stage, key, Slurm job id and log. None of
# this enters a key: make computes the keys before any executor is asked.
#
# Every finished run appends one line to CACHE/times.tsv (CACHE: the
# directory above OUT's stage directory), which `make plan` reads:
#   end(UTC)  experiment  slot  stage  key  run_s  wall_s  status  executor  node  job
# run_s is the stage's own running time (for a Slurm job: measured inside
# the job, so without the queue wait, which wall_s includes); status is ok,
# failed, cancelled, timeout or refused (Slurm did not take the job).
#
# --check validates the executor settings and prints nothing when they are
# good (the workflow calls it before any stage runs), else one line.
set -u
STAGES="prepare vocab tokenize auxtask train eval fisher gram merge"
RESOURCES="cpus mem time partition gres"
executor=${MATS_EXECUTOR:-local}

# slurm_resources STAGE: set cpus mem time partition gres from the
# experiment's slurm.* entries (stage entries over global ones); 1 with a
# message in $why on an entry that names no stage or resource.
slurm_resources() {
    local st=$1 k v s f
    cpus=2 mem= time= partition= gres=
    local -A g=() o=()
    [ -n "${MATS_EXEC_CONF:-}" ] || return 0
    local list
    list=$(build/bin/key --config "$MATS_EXEC_CONF" --list slurm. 2>&1) || { why=$list; return 1; }
    while IFS= read -r kv; do
        [ -n "$kv" ] || continue
        k=${kv%%=*} v=${kv#*=}
        if [[ $k == *.* ]]; then s=${k%%.*} f=${k#*.}
            [[ " $STAGES " == *" $s "* ]] || { why="$MATS_EXEC_CONF: slurm.$k: '$s' is not a stage ($STAGES)"; return 1; }
        else s= f=$k; fi
        [[ " $RESOURCES " == *" $f "* ]] || { why="$MATS_EXEC_CONF: slurm.$k: '$f' is not a Slurm resource ($RESOURCES)"; return 1; }
        if [ "$f" = cpus ] && ! [[ $v =~ ^[1-9][0-9]*$ ]]; then why="$MATS_EXEC_CONF: slurm.$k = '$v': cpus is a positive whole number"; return 1; fi
        if [ -z "$s" ]; then g[$f]=$v; elif [ "$s" = "$st" ]; then o[$f]=$v; fi
    done <<<"$list"
    for f in $RESOURCES; do
        if [ -n "${o[$f]+x}" ]; then printf -v "$f" '%s' "${o[$f]}"
        elif [ -n "${g[$f]+x}" ]; then printf -v "$f" '%s' "${g[$f]}"; fi
    done
    return 0
}

if [ "${1:-}" = --check ]; then
    case "$executor" in
        local) exit 0 ;;
        slurm) ;;
        *) echo "executor '$executor' is not one of local, slurm (EXECUTOR=, exp.executor)"; exit 1 ;;
    esac
    command -v srun >/dev/null && command -v scontrol >/dev/null || { echo "EXECUTOR=slurm but srun is not on PATH: install the Slurm client (scripts/install-deps.sh --slurm) or use EXECUTOR=local"; exit 1; }
    if ! ping=$(scontrol ping 2>&1) || ! grep -q 'is UP' <<<"$ping"; then
        echo "EXECUTOR=slurm but the Slurm controller does not answer (scontrol ping: $(tail -1 <<<"$ping")): check SLURM_CONF and the cluster, or use EXECUTOR=local"
        exit 1
    fi
    why=
    slurm_resources train || { echo "$why"; exit 1; }
    exit 0
fi

slot=$1 out=$2 keytext=$3
shift 3
[ "${1:-}" = "--" ] && shift
stage=$(basename "$(dirname "$out")")
base=${out%.msgpack}
key=$(basename "$base")
cachedir=$(dirname "$(dirname "$out")")
mkdir -p "$(dirname "$out")"
# Two makes that need the same artifact (make -j2 merge sweep, two
# terminals) run its stage once: the second waits for the first and then
# finds the artifact built.
# (The lock file goes when its holder ends; a make that still waits on it
# then finds the artifact, or, after a failure, runs the stage itself. A
# lock won on a file its holder has just removed is taken again on the file
# now there, so that a third make, which opens a new one, cannot run the
# stage beside it.)
# The lock is taken here, where make runs, also for Slurm jobs: one
# controlling make needs no lock that works across nodes (docs/cluster.md).
while :; do
    exec 9>"$out.lock"
    if ! lockerr=$(flock 9 2>&1); then
        echo "run-stage: cannot lock $out.lock (${lockerr:-flock failed}): put MATS_CACHE on a filesystem with flock (Lustre: mount with -o flock or -o localflock; docs/cluster.md)" >&2
        exit 1
    fi
    [ "$(stat -c %d:%i "$out.lock" 2>/dev/null)" = "$(stat -L -c %d:%i /proc/$$/fd/9 2>/dev/null)" ] && break
done
trap 'rm -f "$out.lock"' EXIT
if [ -s "$out" ]; then
    printf '[%s] hit   %-28s %s/%s (built by another make)\n' "$(date +%H:%M:%S)" "$slot" "$stage" "$(basename "$base")" >&2
    exit 0
fi

record() {  # STATUS RUN_S WALL_S NODE JOB
    local f=$cachedir/times.tsv
    [ -e "$f" ] || printf '# end\texperiment\tslot\tstage\tkey\trun_s\twall_s\tstatus\texecutor\tnode\tjob\n' >> "$f"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${MATS_EXP:--}" \
        "$slot" "$stage" "$key" "$2" "$3" "$1" "$executor" "$4" "$5" >> "$f"
}

if [ -e "$out.ckpt" ] || [ -e "$base.model.msgpack.ckpt" ]; then
    if [ -s "$base.log" ] && ! cat "$base.log" >> "$base.log.before"; then
        echo "run-stage: cannot set the last try's log aside in $base.log.before (disk full?)" >&2
        exit 1
    fi
else
    rm -f "$base.log.before"
fi
start=$(date +%s.%N)
# (MATS_THREADS, where set, as the workflow sets it when it runs stages side
# by side: recipes/workflow.mk's WF_PAR)
thr=
[ "$executor" = local ] && [ -n "${MATS_THREADS:-}" ] && thr=" (MATS_THREADS=$MATS_THREADS)"
printf '[%s] start %-28s %s/%s%s\n' "$(date +%H:%M:%S)" "$slot" "$stage" "$(basename "$base")" "$thr" >&2
set -o pipefail
case "$executor" in
local)
    "$@" 2>&1 | tee "$base.log" >&2
    rc=$? ;;
slurm)
    why=
    # an optimizer Fisher's run (recipes/workflow.mk) is a train run
    rstage=$stage; [ "$stage" = optfisher ] && rstage=train
    slurm_resources "$rstage" || { echo "run-stage: $why" >&2; exit 1; }
    # The device the stage will use, as it decides: --device, else DEVICE,
    # else <stage>.device in its --config files and --set entries.
    dev= prev= cfgargs=()
    for a in "$@"; do
        case "$prev" in --device) dev=$a ;; --config|--set) cfgargs+=("$prev" "$a") ;; esac
        case "$a" in --device=*) dev=${a#--device=} ;; esac
        prev=$a
    done
    [ -n "$dev" ] || dev=${DEVICE:-}
    if [ -z "$dev" ] && [ ${#cfgargs[@]} -gt 0 ]; then
        dev=$(build/bin/key "${cfgargs[@]}" --get "$rstage.device" 2>/dev/null)
    fi
    [ -z "$gres" ] && [ "$dev" = cuda ] && gres=gpu:1
    [ "$gres" = none ] && gres=
    # train on N ranks (exp.train.ranks, MATS_TRAIN_RANKS): N tasks of one
    # node with PMIx for MPI, the cpus shared among them; a failing rank
    # ends the others (docs/ranks.md)
    ntasks=1
    [ "$rstage" = train ] && [ "${MATS_TRAIN_RANKS:-1}" -gt 1 ] && ntasks=$MATS_TRAIN_RANKS &&
        cpus=$(( cpus / ntasks > 1 ? cpus / ntasks : 1 ))
    sargs=(--job-name="mats-$stage-${key:0:8}" --nodes=1 --ntasks="$ntasks" --cpus-per-task="$cpus"
           --input=none --quit-on-interrupt)
    [ "$ntasks" -gt 1 ] && sargs+=(--mpi=pmix --kill-on-bad-exit=1)
    [ -n "$mem" ] && sargs+=(--mem="$mem")
    [ -n "$time" ] && sargs+=(--time="$time")
    [ -n "$partition" ] && sargs+=(--partition="$partition")
    [ -n "$gres" ] && sargs+=(--gres="$gres")
    # SLURM_ARGS is a list of flags: split on white space, on purpose
    # shellcheck disable=SC2206
    sargs+=(${SLURM_ARGS:-})
    # In the job: say which job and node, run the stage, say how long it
    # ran (the record's run_s). A make inside an
    # allocation still gives each stage a job of its own.
    env -u SLURM_JOB_ID -u SLURM_JOBID srun "${sargs[@]}" bash -c '
        printf "run-stage: slurm job %s on %s\n" "$SLURM_JOB_ID" "$(hostname)" >&2
        s=$(date +%s.%N)
        "$@"; rc=$?
        printf "run-stage: slurm job %s ran %s s, exit %d\n" "$SLURM_JOB_ID" \
            "$(awk -v a="$s" -v b="$(date +%s.%N)" "BEGIN{printf \"%.1f\", b-a}")" "$rc" >&2
        exit $rc' mats-stage "$@" 2>&1 | tee "$base.log" >&2
    rc=$?
    # A file renamed into place on another node can take the attribute
    # cache's time to show here (NFS): wait for it before calling it missing.
    if [ $rc -eq 0 ] && [ ! -s "$out" ]; then
        for _ in $(seq "${MATS_FS_WAIT:-60}"); do ls "$(dirname "$out")" >/dev/null 2>&1; [ -s "$out" ] && break; sleep 1; done
    fi ;;
*)
    echo "run-stage: executor '$executor' is not one of local, slurm (EXECUTOR=, exp.executor)" >&2
    exit 1 ;;
esac
end=$(date +%s.%N)
secs=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
run_s=$secs node=$(hostname) job=-
if [ "$executor" = slurm ]; then
    # the job id and node from the job's first line, else from srun's own
    # lines (a job cancelled before it started); its running time from the last
    job=$(sed -n 's/^run-stage: slurm job \([0-9][0-9]*\) on .*/\1/p' "$base.log" | head -1)
    [ -n "$job" ] || job=$(grep -o -E '(job|allocation|STEP|JOB) [0-9]+' "$base.log" | head -1 | grep -o -E '[0-9]+$')
    node=$(sed -n 's/^run-stage: slurm job [0-9]* on \(.*\)/\1/p' "$base.log" | head -1)
    r=$(sed -n 's/^run-stage: slurm job [0-9]* ran \([0-9.]*\) s, exit .*/\1/p' "$base.log" | tail -1)
    [ -n "$r" ] && run_s=$r
fi
if [ $rc -ne 0 ] || [ ! -s "$out" ]; then
    rm -f "$out"
    if [ "$executor" = slurm ]; then
        jw="Slurm job ${job:-(no id)}" status=failed what="failed (exit $rc)"
        if grep -q 'DUE TO TIME LIMIT' "$base.log"; then status=timeout what="ran out of its time limit${time:+ of $time} (raise slurm.$stage.time)"
        elif grep -q -E 'CANCELLED|Job has been cancelled|has been revoked' "$base.log"; then status=cancelled what="was cancelled"
        elif [ $rc -eq 0 ]; then what="ended but $out did not appear within MATS_FS_WAIT=${MATS_FS_WAIT:-60} s"
        elif e=$(grep -E '^srun: error: ' "$base.log" | grep -v ': task [0-9]*: ' | tail -1) && [ -n "$e" ] && [ -z "$job" ]; then
            status=refused jw="Slurm refused the job" what="(${e#srun: error: })"
        fi
        record "$status" "$run_s" "$secs" "${node:--}" "${job:--}"
        printf '[%s] FAILED %s (stage %s, key %s): %s %s after %ss; log: %s.log\n' "$(date +%H:%M:%S)" \
            "$slot" "$stage" "$key" "$jw" "$what" "$secs" "$base" >&2
    else
        record failed "$run_s" "$secs" "$node" -
        printf '[%s] FAILED %-27s after %ss (exit %d); log: %s.log\n' "$(date +%H:%M:%S)" "$slot" "$secs" "$rc" "$base" >&2
    fi
    exit 1
fi
if [ -e "$base.log.before" ]; then
    if ! grep -q 'resuming .* from step' "$base.log"; then
        rm -f "$base.log.before"
    elif { cat "$base.log.before" "$base.log" > "$base.log.tmp.$$" && mv "$base.log.tmp.$$" "$base.log"; }; then
        rm -f "$base.log.before"
    else
        rm -f "$base.log.tmp.$$"
        echo "run-stage: could not join the earlier tries' log $base.log.before to $base.log; both are kept" >&2
    fi
fi
if [ "$keytext" != - ]; then
    cp "$keytext" "$base.key"
    if [ -n "${MATS_SLOTS:-}" ]; then mkdir -p "$MATS_SLOTS"; cp "$keytext" "$MATS_SLOTS/$slot.key"; fi
fi
record ok "$run_s" "$secs" "${node:--}" "$job"
[ -n "${MATS_RUN_LOG:-}" ] && echo "$stage $slot $(basename "$base")" >> "$MATS_RUN_LOG"
via=
[ "$executor" = slurm ] && via=" (Slurm job $job on ${node:-?}, ${run_s}s running)"
printf '[%s] done  %-28s in %ss%s\n' "$(date +%H:%M:%S)" "$slot" "$secs" "$via" >&2
