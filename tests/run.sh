#!/usr/bin/env bash
# Run every test program given on the command line; count "ok NAME",
# "FAIL NAME" and "skip NAME: reason" lines (a test that cannot run here, not
# a pass); a program that exits non-zero without printing a FAIL line counts
# as one failure. Lists the skips, then closes with "N passed, N failed".
set -u
# Tests run their own makes: independent of how this one was called (-jN's
# jobserver, GPU=1 on its command line)
unset MAKEFLAGS MFLAGS MAKELEVEL GPU MATS_CPU_MATH
pass=0 fail=0
failed=() skipped=()
for t in "$@"; do
    [ -e "$t" ] || continue
    log=$(mktemp)
    start=$(date +%s.%N)
    if [[ $t == *.sh ]]; then bash "$t" >"$log" 2>&1; rc=$?; else "./$t" >"$log" 2>&1; rc=$?; fi
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    p=$(grep -c '^ok ' "$log"); f=$(grep -c '^FAIL ' "$log")
    while IFS= read -r l; do skipped+=("${l#skip }"); done < <(grep '^skip ' "$log")
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "FAIL $t (exit $rc)" >>"$log"; fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && ! grep -q '^skip ' "$log"; then f=1; echo "FAIL $t (ran no test)" >>"$log"; fi
    pass=$((pass + p)); fail=$((fail + f))
    if [ "$f" -gt 0 ]; then
        failed+=("$t"); echo "--- $t: $p passed, $f failed (${secs}s)"; cat "$log"
    else
        echo "--- $t: $p passed (${secs}s)"
    fi
    rm -f "$log"
done
for s in "${skipped[@]}"; do echo "skipped: $s"; done
[ ${#failed[@]} -gt 0 ] && echo "failing: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
