#!/usr/bin/env bash
# `make SAN=1 test`: the whole test suite on binaries built with
# AddressSanitizer and UndefinedBehaviorSanitizer.
#
# The sources are copied to build/san/src (what git tracks and the files it
# does not ignore; without git, everything but build/ and cache/) and
# `make test` runs there with the sanitizer flags in CFLAGS, exported so that
# the tests' own makes (the workflow tests) build the same way. build/, the
# normal binaries, their bytes and so every cache key derived from them are
# untouched. The copy's artifacts go to build/san/src/cache, which shares
# only cache/download (fetched data sources, which have no key) with the
# normal cache ($MATS_CACHE or cache/).
#
# SAN_TESTS="build/tests/test_art tests/test_errors.sh" runs only those.
#
# Sanitizer reports go to files under build/san/reports (a test that expects
# a failure cannot swallow one); the run fails when any exists. Leak checking
# is off: stages exit through die() holding their buffers, which is not a
# memory error.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
san=$root/build/san
src=$san/src
mkdir -p "$src"
# the copy, afresh but for its build/ and cache/ (kept: incremental builds)
find "$src" -mindepth 1 -maxdepth 1 ! -name build ! -name cache -exec rm -rf {} +
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf - | tar -xf - -C "$src"
else
    tar --exclude=./build --exclude=./cache -cf - . | tar -xf - -C "$src"
fi
main_cache=$(realpath -m "${MATS_CACHE:-cache}")
mkdir -p "$main_cache/download" "$src/cache"
ln -sfn "$main_cache/download" "$src/cache/download"
unset MATS_CACHE MAKEFLAGS MFLAGS MAKELEVEL SAN

reports=$san/reports
rm -rf "$reports"
mkdir -p "$reports"
# clang: its runtimes honour log_path for UBSan reports too (gcc's print them
# on stderr only, and exit 1 as an ordinary error would)
export CC=${SAN_CC:-clang}
export CFLAGS="${SAN_CFLAGS:?SAN_CFLAGS is set by make SAN=1 test}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:log_path=$reports/asan"
# tests whose bounds are the normal build's (peak RSS) skip them on this
export MATS_SANITIZED=1
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$reports/ubsan"
# make SAN=thread test: every race reported, each to a file
# (OpenBLAS's own threads, uninstrumented, suppressed: tests/tsan.supp)
export TSAN_OPTIONS="halt_on_error=0:log_path=$reports/tsan:suppressions=$root/tests/tsan.supp"
echo "san-test: sources copied to $src; building with CC=$CC CFLAGS=$CFLAGS" >&2
set +e
if [ -n "${SAN_TESTS:-}" ]; then
    # a subset, e.g. SAN_TESTS="build/tests/test_art tests/test_errors.sh"
    make -C "$src" --no-print-directory -j"${SAN_JOBS:-2}" all $(for t in $SAN_TESTS; do [[ $t == build/* ]] && echo "$t"; done) &&
        (cd "$src" && bash tests/run.sh $SAN_TESTS)
else
    make -C "$src" --no-print-directory -j"${SAN_JOBS:-2}" test
fi
rc=$?
set -e
n=$(find "$reports" -type f | wc -l)
if [ "$n" -gt 0 ]; then
    for f in $(find "$reports" -type f | head -5); do echo "--- $f"; head -30 "$f"; done
    echo "san-test: $n sanitizer reports in $reports"
    exit 1
fi
echo "san-test: no sanitizer reports"
exit $rc
