#!/usr/bin/env bash
# A short bounded pass of the fuzzers in every `make test` (CI included):
# fuzz_art (raw bytes into the artifact reader) and fuzz_loaders
# (checksum-valid artifacts of every kind with hostile contents into the
# loaders), FUZZ_TEST_SECONDS (default 5) each, under ASan and UBSan, from
# the corpora earlier runs kept in build/fuzz/. `make fuzz` is the long run.
# Skipped where clang cannot link a libFuzzer target (scripts/install-deps.sh
# installs clang and libclang-rt-dev).
set -u
cd "$(dirname "$0")/.."
secs=${FUZZ_TEST_SECONDS:-5}
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' > "$probe/p.c"
if ! ${FUZZ_CC:-clang} -fsanitize=fuzzer,address,undefined -o "$probe/p" "$probe/p.c" >/dev/null 2>&1; then
    echo "skip fuzz: ${FUZZ_CC:-clang} cannot link a libFuzzer target here (install clang and libclang-rt-dev)"
    exit 0
fi
if ! make --no-print-directory build/fuzz/fuzz_art build/fuzz/fuzz_loaders build/tests/test_art >"$probe/build.log" 2>&1; then
    tail -20 "$probe/build.log"
    echo "FAIL fuzz_build"
    exit 1
fi
for t in fuzz_art fuzz_loaders; do
    if line=$(bash tests/fuzz/run.sh "$secs" "$t"); then
        echo "ok ${t}_${secs}s (${line#*: })"
    else
        echo "$line"
        echo "FAIL ${t}_${secs}s"
    fi
done
