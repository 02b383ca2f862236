#!/usr/bin/env bash
# run-stage.sh SLOT OUT KEYTEXT -- COMMAND...
#
# Run one stage of the workflow: print a start line, run COMMAND with its
# output also logged to OUT's .log, print an end line with the elapsed time.
# KEYTEXT is a file holding the canonical key text (or -); it is kept beside
# the artifact (OUT with .key) and as the slot's last-built key (make explain).
# Every run is appended to $MATS_RUN_LOG when set (the workflow tests read it).
set -u
slot=$1 out=$2 keytext=$3
shift 3
[ "${1:-}" = "--" ] && shift
stage=$(basename "$(dirname "$out")")
base=${out%.msgpack}
mkdir -p "$(dirname "$out")"
# Two makes that need the same artifact (make -j2 merge sweep, two
# terminals) run its stage once: the second waits for the first and then
# finds the artifact built.
# (The lock file goes when its holder ends; a make that still waits on it
# then finds the artifact, or, after a failure, runs the stage itself.)
exec 9>"$out.lock"
flock 9
trap 'rm -f "$out.lock"' EXIT
if [ -s "$out" ]; then
    printf '[%s] hit   %-28s %s/%s (built by another make)\n' "$(date +%H:%M:%S)" "$slot" "$stage" "$(basename "$base")" >&2
    exit 0
fi
start=$(date +%s.%N)
printf '[%s] start %-28s %s/%s\n' "$(date +%H:%M:%S)" "$slot" "$stage" "$(basename "$base")" >&2
set -o pipefail
"$@" 2>&1 | tee "$base.log" >&2
rc=$?
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
if [ $rc -ne 0 ] || [ ! -s "$out" ]; then
    printf '[%s] FAILED %-27s after %ss (exit %d); log: %s.log\n' "$(date +%H:%M:%S)" "$slot" "$secs" "$rc" "$base" >&2
    rm -f "$out"
    exit 1
fi
if [ "$keytext" != - ]; then
    cp "$keytext" "$base.key"
    if [ -n "${MATS_SLOTS:-}" ]; then mkdir -p "$MATS_SLOTS"; cp "$keytext" "$MATS_SLOTS/$slot.key"; fi
fi
[ -n "${MATS_RUN_LOG:-}" ] && echo "$stage $slot $(basename "$base")" >> "$MATS_RUN_LOG"
printf '[%s] done  %-28s in %ss\n' "$(date +%H:%M:%S)" "$slot" "$secs" >&2
