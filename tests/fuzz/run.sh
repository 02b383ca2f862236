#!/usr/bin/env bash
# Run the artifact-reader fuzzer for N seconds (default 60) from a seed corpus
# of real artifacts; print executions and crashes; exit 1 on a crash.
set -u
secs=${1:-60}
cd "$(dirname "$0")/../.."
corpus=tests/fuzz/corpus
rm -rf build/fuzz/crashes; mkdir -p "$corpus" build/fuzz/crashes
for k in model gram tokens; do build/tests/test_art --write "$corpus/seed-$k.msgpack" "$k" 2>/dev/null; done
# Seeds without their trailer: the target appends a valid one.
for f in "$corpus"/seed-*.msgpack; do head -c -23 "$f" > "${f%.msgpack}.body"; done
log=build/fuzz/last.log
build/fuzz/fuzz_art -max_total_time="$secs" -print_final_stats=1 -artifact_prefix=build/fuzz/crashes/ \
    -rss_limit_mb=2048 -max_len=4096 "$corpus" >"$log" 2>&1
rc=$?
execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
crashes=$(ls build/fuzz/crashes 2>/dev/null | wc -l)
echo "fuzz_art: ${execs:-?} executions in ${secs}s, $crashes crash files (build/fuzz/crashes), libFuzzer exit $rc"
if [ $rc -ne 0 ] || [ "$crashes" -ne 0 ]; then tail -n 30 "$log"; exit 1; fi
