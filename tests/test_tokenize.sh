#!/usr/bin/env bash
# The SentencePiece encoder in C (lib/spm.c, stages/tokenize.c) against
# Debian's spm_encode: identical ids on every task input and choice, on a
# 10,000-line corpus sample, on hostile bytes, with a byte-fallback model;
# the tokens artifacts (EOS, truncation, layout); the vocab artifact's ids;
# JSON Lines input and its one-line errors; the vocabulary is reproducible.
set -u
source "$(dirname "$0")/lib.sh" test_tokenize
FX_NAME=tokenize_fixture
source tests/data_fixture.sh

# same ids as spm_encode for a text file (one line per text)
same_ids() {   # NAME OUR_VOCAB MODEL FILE
    build/bin/tokenize --vocab "$2" --encode < "$4" > "$T/mine" || { fail "$1" "tokenize --encode failed"; return; }
    spm_encode --model="$3" --output_format=id < "$4" > "$T/ref" || { fail "$1" "spm_encode failed"; return; }
    local n; n=$(wc -l < "$4")
    if cmp -s "$T/mine" "$T/ref" && [ "$n" -gt 0 ]; then ok "$1 ($n lines)"
    else fail "$1" "ids differ from spm_encode: $(diff "$T/mine" "$T/ref" | head -3 | tr '\n' ' ')"; fi
}

# 1. every task input and choice of every split
: > "$T/all_text"
for t in $FX_TASKS; do
    for s in train validation test; do
        build/bin/prepare --dump "$(fx_part "$t" "$s")" | grep -E '^(I|C|G)	' | cut -f2- >> "$T/all_text"
    done
done
same_ids spm_equal_task_inputs "$FX_VOCAB" "$FX_MODEL" "$T/all_text"

# 2. a 10,000-line sample of the corpus (every k-th line)
build/bin/prepare --dump "$FX_CORPUS" > "$T/corpus.txt"
n=$(wc -l < "$T/corpus.txt")
awk -v k=$(( n / 10000 )) 'k < 1 || NR % k == 0' "$T/corpus.txt" | head -10000 > "$T/sample.txt"
same_ids spm_equal_corpus_sample "$FX_VOCAB" "$FX_MODEL" "$T/sample.txt"

# 3. hostile input: invalid UTF-8, controls, NFKC-relevant characters, spaces
awk 'BEGIN { srand(7);
  n = split("a b c x 1 . , \" \047 é ﬁ Ａ ① Ⅻ ™ … ß ǅ 😀 中 \t", al, " ");
  for (i = 0; i < 3000; i++) { s = ""; m = int(rand() * 30);
    for (j = 0; j < m; j++) { r = rand();
      if (r < 0.08) s = s sprintf("%c", 128 + int(rand() * 127));
      else if (r < 0.2) s = s "  ";
      else if (r < 0.25) s = s "\342\200\213";
      else s = s al[1 + int(rand() * n)]; }
    print s } }' > "$T/hostile.txt"
same_ids spm_equal_hostile_bytes "$FX_MODEL" "$FX_MODEL" "$T/hostile.txt"

# 4. a byte-fallback model (unknown characters become <0xXX> pieces)
(cd "$T" && head -20000 sample.txt > bf.txt && spm_train --input=bf.txt --model_prefix=bf --vocab_size=1000 \
    --byte_fallback=true --pad_id=0 --eos_id=1 --unk_id=2 --bos_id=-1 --character_coverage=0.99 \
    --num_threads=1 --minloglevel=2 >/dev/null 2>&1)
if [ -f "$T/bf.model" ]; then
    cat "$T/hostile.txt" "$T/sample.txt" > "$T/bf_in.txt"
    same_ids spm_equal_byte_fallback "$T/bf.model" "$T/bf.model" "$T/bf_in.txt"
else
    fail spm_equal_byte_fallback "spm_train could not build the byte-fallback model"
fi

# 5. tokens artifacts: ids = spm_encode ids cut to max - 1, then EOS
check_tokens() {   # NAME PART MAXIN MAXCH
    local e=$2 out="$T/tok.msgpack"
    build/bin/tokenize --config configs/data.conf --set tokenize.max_input=$3 --set tokenize.max_choice=$4 \
        --vocab "$FX_VOCAB" --data "$e" -o "$out" 2>/dev/null || { fail "$1" "tokenize --data failed"; return; }
    build/bin/prepare --dump "$e" | grep -E '^(I|C|G)	' > "$T/ex"
    cut -f2- "$T/ex" | spm_encode --model="$FX_MODEL" --output_format=id > "$T/ref_ids"
    paste -d' ' <(cut -c1 "$T/ex" | sed 's/G/C/') "$T/ref_ids" |
        awk -v mi=$3 -v mc=$4 '{ k = $1; m = (k == "I") ? mi : mc; n = NF - 1; if (n > m - 1) n = m - 1;
            s = k; for (i = 2; i <= n + 1; i++) s = s " " $i; print s " 1" }' > "$T/want"
    build/bin/tokenize --dump "$out" > "$T/got"
    if cmp -s "$T/want" "$T/got"; then ok "$1"; else fail "$1" "$(diff "$T/want" "$T/got" | head -3 | tr '\n' ' ')"; fi
}
check_tokens tokens_artifact_sentiment_test "$(fx_part sentiment test)" 256 16
check_tokens tokens_truncation_keeps_eos "$(fx_part topic validation)" 8 2
out=$(build/bin/art show "$T/tok.msgpack" 2>&1)
if grep -q '^kind *tokens' <<<"$out" && grep -q '"task": "topic"' <<<"$out" && grep -q '"split": "validation"' <<<"$out" &&
   grep -q 'example_choices' <<<"$out" && grep -q 'label *i32' <<<"$out"; then ok tokens_meta_and_layout
else fail tokens_meta_and_layout "$out"; fi

# 6. corpus tokens: one row per line, EOS-terminated, no choices
build/bin/tokenize --vocab "$FX_VOCAB" --corpus "$FX_CORPUS" -o "$T/ctok.msgpack" 2>/dev/null
rows=$(build/bin/tokenize --dump "$T/ctok.msgpack" | wc -l)
bad=$(build/bin/tokenize --dump "$T/ctok.msgpack" | awk '$NF != 1 || $1 != "I"' | wc -l)
[ "$rows" -eq "$n" ] && [ "$bad" -eq 0 ] && ok corpus_tokens_rows || fail corpus_tokens_rows "$rows rows for $n lines, $bad without EOS"

# 7. vocab artifact: T5 ids and sentinels at the top
spm_export_vocab --model="$FX_MODEL" > "$T/vocab.txt" 2>/dev/null
first=$(head -3 "$T/vocab.txt" | cut -f1 | tr '\n' ' ')
meta=$(build/bin/art show "$FX_VOCAB")
pieces=$(wc -l < "$T/vocab.txt")
vs=$(grep -o '"vocab_size": [0-9]*' <<<"$meta" | grep -o '[0-9]*$')
e0=$(grep -o '"extra_id_0": [0-9]*' <<<"$meta" | grep -o '[0-9]*$')
if [ "$first" == "<pad> </s> <unk> " ] && [ "$vs" == $((pieces + 100)) ] && [ "$e0" == $((vs - 1)) ]; then ok vocab_t5_ids
else fail vocab_t5_ids "first pieces '$first', vocab_size $vs, pieces $pieces, extra_id_0 $e0"; fi

# 8. JSON Lines: a valid file, then malformed lines (one line naming file:line)
cat > "$T/ok.jsonl" <<'EOF'
{"input": "Is the sky blue?", "choices": ["yes", "no"], "label": 0}

{"label": 1, "extra": {"a": [1, 2.5, null, true]}, "input": "Caf\u00e9 \ud83d\ude00 \"quoted\"\ttab", "choices": ["x", "y", "z"]}
EOF
if build/bin/tokenize --vocab "$FX_VOCAB" --jsonl "$T/ok.jsonl" --task mine -o "$T/j.msgpack" 2>/dev/null; then
    printf '%s\n' 'Is the sky blue?' yes no "$(printf 'Café 😀 "quoted"\ttab')" x y z |
        spm_encode --model="$FX_MODEL" --output_format=id | awk '{ print $0 " 1" }' > "$T/jwant"
    build/bin/tokenize --dump "$T/j.msgpack" | cut -c3- > "$T/jgot"
    cmp -s "$T/jwant" "$T/jgot" && ok jsonl_tokenize || fail jsonl_tokenize "$(diff "$T/jwant" "$T/jgot" | head -4 | tr '\n' ' ')"
else
    fail jsonl_tokenize "valid JSONL rejected"
fi
i=0
while IFS= read -r bad; do
    i=$((i + 1))
    printf '{"input": "fine", "choices": ["a", "b"], "label": 1}\n%s\n' "$bad" > "$T/bad$i.jsonl"
    rm -f "$T/bad.msgpack"
    err=$(build/bin/tokenize --vocab "$FX_VOCAB" --jsonl "$T/bad$i.jsonl" --task t -o "$T/bad.msgpack" 2>&1 >/dev/null)
    rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l <<<"$err")" -eq 1 ] && grep -q "bad$i.jsonl:2:" <<<"$err" && [ ! -e "$T/bad.msgpack" ]; then
        ok "jsonl_error_$i"
    else
        fail "jsonl_error_$i" "rc $rc, message: $err"
    fi
done <<'EOF'
not json
{"input": "x", "choices": ["a"]}
{"input": "x", "choices": ["a", "b"], "label": 2}
{"input": "x\q", "choices": ["a"], "label": 0}
{"input": "x", "choices": ["a",], "label": 0}
{"input": "x", "choices": ["a"], "label": 0} trailing
{"input": "x", "choices": [], "label": 0}
{"input": "x", "choices": ["a"], "label": 0.5}
EOF

# 9. a damaged model file: one line naming it
head -c 1000 "$FX_MODEL" > "$T/cut.model"
err=$(build/bin/tokenize --vocab "$T/cut.model" --encode < /dev/null 2>&1)
[ $? -ne 0 ] && [ "$(wc -l <<<"$err")" -eq 1 ] && grep -q "cut.model" <<<"$err" && ok damaged_model_error || fail damaged_model_error "$err"

# 10. the vocabulary is the same bytes when trained again (spm_train with a
#     fixed thread count and seed, run under fixed file names)
build/bin/tokenize --config configs/data.conf "${FX_VSETS[@]}" --train-vocab --corpus "$FX_CORPUS" -o "$T/v2.msgpack" 2>/dev/null
cmp -s "$T/v2.msgpack" "$FX_VOCAB" && ok vocab_same_bytes_every_run || fail vocab_same_bytes_every_run "retrained vocab differs"
