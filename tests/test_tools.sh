#!/usr/bin/env bash
# The user tools: `key` agrees with xxh128sum; `art show|verify|diff` work on
# artifacts and reject corrupt ones with one line and a non-zero exit.
set -u
source "$(dirname "$0")/lib.sh" test_tools

build/tests/test_art --write "$T/a.msgpack" model || { fail write "could not write sample"; exit 1; }
build/tests/test_art --write "$T/b.msgpack" model

# key: the digest is xxh128sum of the canonical text
printf 'a.x = 1\nb.y = 2\n' > "$T/k.conf"
text=$(build/bin/key --stage train --config "$T/k.conf" --ns a --set a.z=3 --input data=@"$T/a.msgpack" --text)
want=$'stage train\nbinary -\nconfig a.x=1\nconfig a.z=3\ninput data 0123456789abcdef0123456789abcdef'
if [ "$text" == "$want" ]; then ok key_text; else fail key_text "got: $text"; fi
k=$(build/bin/key --stage train --config "$T/k.conf" --ns a --set a.z=3 --input data=@"$T/a.msgpack")
x=$(printf '%s\n' "$text" | xxh128sum | cut -d' ' -f1)
if [ "$k" == "$x" ] && [ ${#k} -eq 32 ]; then ok key_equals_xxh128sum; else fail key_equals_xxh128sum "$k vs $x"; fi
k2=$(build/bin/key --stage train --config "$T/k.conf" --ns a,b --set a.z=3 --input data=@"$T/a.msgpack")
[ "$k" != "$k2" ] && ok key_namespaces || fail key_namespaces "namespace b did not change the key"
fk=$(build/bin/key --file "$T/a.msgpack" | cut -d' ' -f1); fx=$(xxh128sum "$T/a.msgpack" | cut -d' ' -f1)
[ "$fk" == "$fx" ] && ok key_file || fail key_file "$fk vs $fx"

bd=$(build/bin/key --file build/bin/key | cut -d' ' -f1)
ka=$(build/bin/key --stage s --binary build/bin/key --set a.x=1 --ns a); kb=$(build/bin/key --stage s --binary-digest "$bd" --set a.x=1 --ns a)
[ "$ka" == "$kb" ] && ok key_binary_digest || fail key_binary_digest "$ka vs $kb"
g=$(build/bin/key --config "$T/k.conf" --set b.y=5 --get a.x b.y c.none | tr '\n' ' ')
[ "$g" == "1 5  " ] && ok key_get || fail key_get "got '$g'"

b=$(build/bin/key --batch --stage s --binary build/bin/key --set a.x=1 --ns a :: --stage t --set a.x=2 --ns a :: --config "$T/k.conf" --get a.x | tr '\n' ' ')
want="$ka $(build/bin/key --stage t --set a.x=2 --ns a) 1 "
[ "$b" == "$want" ] && ok key_batch || fail key_batch "got '$b' want '$want'"

mkdir -p "$T/sub"; printf 'exp.p = x/y.conf\nexp.q = /abs.conf\n' > "$T/sub/e.conf"; echo "include sub/e.conf" > "$T/top.conf"
g=$(build/bin/key --config "$T/top.conf" --get-path exp.p exp.q | tr '\n' ' ')
[ "$g" == "$T/sub/x/y.conf /abs.conf " ] && ok key_get_path || fail key_get_path "got '$g'"

# art show
out=$(build/bin/art show "$T/a.msgpack")
if grep -q '^kind    model' <<<"$out" && grep -q 'w.f32 *f32 *\[2, 3\]' <<<"$out" && grep -q '"d_model": 32' <<<"$out"; then
    ok art_show; else fail art_show "$out"; fi
# art verify
build/bin/art verify "$T/a.msgpack" "$T/b.msgpack" >/dev/null && ok art_verify || fail art_verify "rejected good files"
# art diff: identical files differ by 0
d=$(build/bin/art diff "$T/a.msgpack" "$T/b.msgpack" --tol 0) && grep -q 'max rel difference 0' <<<"$d" && ok art_diff_same || fail art_diff_same "$d"

# corrupt: flip one byte in the middle
cp "$T/a.msgpack" "$T/bad.msgpack"
size=$(stat -c %s "$T/bad.msgpack")
perl -e 'open(F, "+<", $ARGV[0]) or die; seek(F, $ARGV[1], 0); read(F, $c, 1); seek(F, $ARGV[1], 0); print F chr(ord($c) ^ 0x20); close F' "$T/bad.msgpack" $((size / 2))
cmp -s "$T/a.msgpack" "$T/bad.msgpack" && echo "FAIL corrupt_setup: byte not flipped"
for cmd in "show $T/bad.msgpack" "verify $T/a.msgpack $T/bad.msgpack" "diff $T/a.msgpack $T/bad.msgpack"; do
    err=$(build/bin/art $cmd 2>&1 >/dev/null); rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l <<<"$err")" -eq 1 ] && grep -q "bad.msgpack: checksum mismatch" <<<"$err"; then
        ok "art_${cmd%% *}_corrupt"; else fail "art_${cmd%% *}_corrupt" "rc=$rc err=$err"; fi
done
# truncated and missing
head -c 40 "$T/a.msgpack" > "$T/short.msgpack"
err=$(build/bin/art verify "$T/short.msgpack" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "short.msgpack" <<<"$err" && ok art_truncated || fail art_truncated "$err"
err=$(build/bin/art show "$T/none.msgpack" 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "none.msgpack: cannot open" <<<"$err" && ok art_missing || fail art_missing "$err"
err=$(build/bin/art frobnicate 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "unknown command" <<<"$err" && ok art_unknown_command || fail art_unknown_command "$err"
# export-jsonl: an examples artifact only; the output never over an input
err=$(build/bin/art export-jsonl "$T/a.msgpack" -o "$T/x.jsonl" 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <<<"$err")" -eq 1 ] && grep -q "a.msgpack" <<<"$err" && grep -q "examples" <<<"$err" && [ ! -e "$T/x.jsonl" ] &&
    ok art_export_jsonl_kind || fail art_export_jsonl_kind "rc=$rc err=$err"
err=$(build/bin/art export-jsonl "$T/a.msgpack" -o "$T/a.msgpack" 2>&1); rc=$?
[ $rc -ne 0 ] && [ "$(wc -l <<<"$err")" -eq 1 ] && build/bin/art verify "$T/a.msgpack" >/dev/null 2>&1 &&
    ok art_export_jsonl_no_overwrite || fail art_export_jsonl_no_overwrite "rc=$rc err=$err"
