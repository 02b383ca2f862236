#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS] [TARGET...]: run each libFuzzer target
# (build/fuzz/TARGET; default fuzz_art fuzz_loaders) for SECONDS (default 60)
# from its corpus, and print one line per target: executions, crash files,
# libFuzzer's exit status. Exit 1 if any target crashed.
#   fuzz_art      seeds: real artifacts (build/tests/test_art --write) with
#                 and without their trailer; corpus tests/fuzz/corpus
#   fuzz_hf       seeds: the committed Hugging Face fixtures; build/fuzz/hf-corpus
#   fuzz_loaders  builds its artifacts from recipes; build/fuzz/loaders-corpus
# A crash's input is kept in build/fuzz/crashes-TARGET/ (rerun it with
# build/fuzz/TARGET FILE); the full log in build/fuzz/TARGET.log.
set -u
secs=${1:-60}
shift
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(fuzz_art fuzz_loaders)
cd "$(dirname "$0")/../.."
rc_all=0
for t in "${targets[@]}"; do
    case $t in
        fuzz_art)
            corpus=tests/fuzz/corpus max_len=4096
            mkdir -p "$corpus"
            for k in model gram tokens; do build/tests/test_art --write "$corpus/seed-$k.msgpack" "$k" 2>/dev/null; done
            # seeds without their trailer: the target appends a valid one
            for f in "$corpus"/seed-*.msgpack; do [ -e "$f" ] && head -c -23 "$f" > "${f%.msgpack}.body"; done ;;
        fuzz_hf)
            corpus=build/fuzz/hf-corpus max_len=16384
            mkdir -p "$corpus"
            for f in tests/fixtures/hf/tiny-ia3-peft/* tests/fixtures/hf/tiny-f16-sharded/*.json \
                     tests/fixtures/hf/tiny-bf16/config.json tests/fixtures/hf/tiny-f16-sharded/model-00001-of-00002.safetensors; do
                cp "$f" "$corpus/seed-$(echo "$f" | tr / -)"
            done ;;
        *) corpus=build/fuzz/${t#fuzz_}-corpus max_len=4096; mkdir -p "$corpus" ;;
    esac
    crashes=build/fuzz/crashes-$t log=build/fuzz/$t.log
    rm -rf "$crashes"; mkdir -p "$crashes"
    build/fuzz/$t -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$crashes/" \
        -rss_limit_mb=2048 -max_len=$max_len "$corpus" >"$log" 2>&1
    rc=$?
    execs=$(grep -m1 'stat::number_of_executed_units' "$log" | awk '{print $2}')
    n=$(ls "$crashes" | wc -l)
    echo "$t: ${execs:-?} executions in ${secs}s, $n crash files ($crashes), libFuzzer exit $rc"
    if [ $rc -ne 0 ] || [ "$n" -ne 0 ]; then tail -n 30 "$log"; rc_all=1; fi
done
exit $rc_all
