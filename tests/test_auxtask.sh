#!/usr/bin/env bash
# The auxtask stage (the base model's supervised phase): examples made from
# the corpus are deterministic, balanced and right (the gold answer of
# `order` is "yes" exactly when the words are in their original order, the
# gold continuation is the text that follows), tokenize takes them, and bad
# input fails with one line.
set -u
source "$(dirname "$0")/lib.sh" test_auxtask
FX_NAME=auxtask_fixture
source tests/data_fixture.sh
SETS=(--set auxtask.examples=600 --set auxtask.max_words=40 --set auxtask.choice_words=6)

for t in source order continuation; do
    if build/bin/auxtask --corpus "$FX_CORPUS" --task "$t" "${SETS[@]}" -o "$T/$t.msgpack" 2>"$T/log" &&
       build/bin/auxtask --corpus "$FX_CORPUS" --task "$t" "${SETS[@]}" -o "$T/$t.again.msgpack" 2>>"$T/log" &&
       cmp -s "$T/$t.msgpack" "$T/$t.again.msgpack" &&
       build/bin/auxtask --corpus "$FX_CORPUS" --task "$t" "${SETS[@]}" --set auxtask.seed=2 -o "$T/$t.s2.msgpack" 2>>"$T/log" &&
       ! cmp -s "$T/$t.msgpack" "$T/$t.s2.msgpack" &&
       build/bin/prepare --dump "$T/$t.msgpack" > "$T/$t.txt" &&
       [ "$(grep -c '^I' "$T/$t.txt")" -eq 600 ]; then
        ok "auxtask_${t}_deterministic"
    else fail "auxtask_${t}_deterministic" "$(tail -3 "$T/log")"; fi
done

# source: six kinds, 100 examples each
counts=$(awk -F'\t' '$1 == "G" { n[$2]++ } END { for (k in n) print n[k] }' "$T/source.txt" | sort -u | tr '\n' ' ')
kinds=$(awk -F'\t' '$1 == "G" { n[$2]++ } END { print length(n) }' "$T/source.txt")
[ "$counts" == "100 " ] && [ "$kinds" -eq 6 ] && ok auxtask_source_balanced ||
    fail auxtask_source_balanced "kinds $kinds, counts per kind: $counts"

# order: the input's words are the source's words; "yes" exactly when in order
if awk -F'\t' '
    function words(s, n) { n = split(s, w, " "); return n }
    $1 == "I" { inp = $2; sub(/ Are these words in their original order\? yes or no\?$/, "", inp); sub(/^Text: /, "", inp); sub(/ Original word order:$/, "", inp) }
    $1 == "G" { gold = $2 }
    $1 == "S" {
        n = split(inp, a, " "); split($2, b, " "); same = 1; for (i = 1; i <= n; i++) if (a[i] != b[i]) same = 0
        delete ca; delete cb; for (i = 1; i <= n; i++) { ca[a[i]]++; cb[b[i]]++ }
        for (k in ca) if (ca[k] != cb[k]) { print "words differ: " inp; bad++ }
        if ((gold == "yes") != same) { print "gold " gold " but in order = " same ": " inp; bad++ }
        yes += gold == "yes"; total++
    }
    END { if (total != 600) { print total " examples checked, not 600"; bad++ }
          if (yes < total * 0.4 || yes > total * 0.6) { print "yes " yes " of " total; bad++ } exit bad > 0 }' "$T/order.txt" > "$T/order.err"; then
    ok auxtask_order_gold_right
else fail auxtask_order_gold_right "$(head -3 "$T/order.err")"; fi

# continuation: the gold choice is the text that follows the input in the
# source line; four choices each
if awk -F'\t' '
    $1 == "I" { inp = $2; sub(/ \.\.\. How does this text go on\?$/, "", inp); sub(/^Beginning: /, "", inp); sub(/ Continuation:$/, "", inp); nc = 0 }
    $1 == "C" || $1 == "G" { nc++ }
    $1 == "G" { gold = $2 }
    $1 == "S" {
        n = split($2, w, " "); s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? " " : "") w[i]
        if (index(s, inp " " gold) != 1) { print "not a continuation: [" inp "] + [" gold "]"; bad++ }
        if (nc != 4) { print nc " choices"; bad++ }
        total++
    }
    END { if (total != 600) { print total " examples checked, not 600"; bad++ } exit bad > 0 }' "$T/continuation.txt" > "$T/cont.err"; then
    ok auxtask_continuation_gold_right
else fail auxtask_continuation_gold_right "$(head -3 "$T/cont.err")"; fi

# tokenize takes the examples as it takes a task's
if build/bin/tokenize --vocab "$FX_VOCAB" --data "$T/order.msgpack" -o "$T/order.tok.msgpack" 2>"$T/tlog" &&
   build/bin/art show "$T/order.tok.msgpack" | grep -q '"task": "order"'; then
    ok auxtask_tokenizes
else fail auxtask_tokenizes "$(tail -1 "$T/tlog")"; fi

check_err() { # NAME WANT CMD...
    local name=$1 want=$2; shift 2
    if "$@" >/dev/null 2>"$T/err"; then fail "$name" "exit 0"; return; fi
    if [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q -- "$want" "$T/err"; then ok "$name"; else fail "$name" "$(cat "$T/err")"; fi
}
check_err auxtask_unknown_task "--task 'nope' is not one of source, order, continuation" build/bin/auxtask --corpus "$FX_CORPUS" --task nope -o "$T/x.msgpack"
check_err auxtask_missing_corpus "nope.msgpack" build/bin/auxtask --corpus "$T/nope.msgpack" --task order -o "$T/x.msgpack"
check_err auxtask_not_a_corpus "corpus" build/bin/auxtask --corpus "$T/order.msgpack" --task order -o "$T/x.msgpack"
check_err auxtask_unknown_key "auxtask.examplez" build/bin/auxtask --corpus "$FX_CORPUS" --task order --set auxtask.examplez=3 -o "$T/x.msgpack"
check_err auxtask_words_too_few "auxtask.max_words" build/bin/auxtask --corpus "$FX_CORPUS" --task continuation --set auxtask.max_words=10 -o "$T/x.msgpack"
[ ! -e "$T/x.msgpack" ] && ok auxtask_errors_write_nothing || fail auxtask_errors_write_nothing "x.msgpack exists"
