# tests/lib.sh - the start of every shell test, sourced as
#   source "$(dirname "$0")/lib.sh" NAME
# It cds to the repository (REPO, its path) and makes T, a fresh folder
# /tmp/NAME.XXXXXX, removed on exit after t_cleanup runs (when the test
# defines one); KEEP=1 keeps it. ok NAME and fail NAME [WHY] print the lines
# tests/run.sh counts.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
T=$(mktemp -d "/tmp/${1:-mats-test}.XXXXXX")
trap 'declare -F t_cleanup >/dev/null && t_cleanup; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
ok() { echo "ok $1"; }
fail() { echo "FAIL $1${2:+: $2}"; }

# expect NAME WORDS COMMAND...: a refusal: status 1, one stderr line holding
# each |-separated word, nothing at $T/out.*
expect() {
    local name=$1 words=$2; shift 2
    rm -f "$T"/out.*
    "$@" >/dev/null 2>"$T/err"
    local rc=$? n w miss=
    n=$(grep -c . "$T/err")
    IFS='|' read -ra ws <<< "$words"
    for w in "${ws[@]}"; do grep -qF -- "$w" "$T/err" || miss="$miss '$w'"; done
    if [ $rc -eq 1 ] && [ "$n" -eq 1 ] && [ -z "$miss" ] && [ -z "$(ls "$T"/out.* 2>/dev/null)" ]; then
        ok "$name"
    else
        fail "$name" "exit $rc, $n lines, missing$miss: $(head -3 "$T/err" | tr '\n' '|')"
    fi
}

# expect_last NAME WORDS COMMAND...: the same for a refusal after the run
# started (its header or progress lines come first): status 1, the last
# stderr line holds each word, nothing at $T/out.* (no temporary file either)
expect_last() {
    local name=$1 words=$2; shift 2
    rm -f "$T"/out.*
    "$@" >/dev/null 2>"$T/err"
    local rc=$? w miss=
    IFS='|' read -ra ws <<< "$words"
    for w in "${ws[@]}"; do tail -1 "$T/err" | grep -qF -- "$w" || miss="$miss '$w'"; done
    if [ $rc -eq 1 ] && [ -z "$miss" ] && [ -z "$(ls "$T"/out.* 2>/dev/null)" ]; then ok "$name"
    else fail "$name" "exit $rc, missing$miss: $(tail -2 "$T/err" | tr '\n' '|') $(ls "$T"/out.* 2>/dev/null)"; fi
}
