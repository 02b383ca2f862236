#!/usr/bin/env bash
# lib/spm.c against spm_encode on models trained here from synthetic text
# (no data packages needed): the normaliser and encoder options a `.model` can
# carry - nmt_nfkc / identity rules, no dummy prefix, kept extra whitespace,
# whitespace as suffix, user-defined symbols, byte fallback, split digits.
set -u
source "$(dirname "$0")/lib.sh" test_tokenize_spm

# synthetic text: words, digits, punctuation, NFKC-relevant and rare characters
awk 'BEGIN { srand(11);
  n = split("the of and to a in that is was he for it with as his on be at by had not are but from or have an they which one you were all her she there would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three", W, " ");
  split("é ﬁ Ａ ① Ⅻ ™ … ß ǅ 中 文 😀 ½ ㎏ Å", R, " ");
  for (i = 0; i < 6000; i++) { s = ""; m = 3 + int(rand() * 20);
    for (j = 0; j < m; j++) { r = rand(); w = W[1 + int(rand() * n)];
      if (r < 0.05) w = int(rand() * 100000);
      else if (r < 0.08) w = R[1 + int(rand() * 15)] w;
      else if (r < 0.1) w = toupper(substr(w, 1, 1)) substr(w, 2) ",";
      else if (r < 0.12) w = w "<sep>" W[1 + int(rand() * n)];
      s = s (j ? (rand() < 0.05 ? "   " : " ") : "") w }
    print s } }' > "$T/train.txt"
awk 'BEGIN { srand(5);
  n = split("a b c . , 1 9 é ﬁ Ａ ① Ⅻ ™ … ß ǅ 中 😀 ㎏ <sep> the of", al, " ");
  for (i = 0; i < 2000; i++) { s = ""; m = int(rand() * 25);
    for (j = 0; j < m; j++) { r = rand();
      if (r < 0.06) s = s sprintf("%c", 128 + int(rand() * 127));
      else if (r < 0.15) s = s "  ";
      else if (r < 0.18) s = s "\t";
      else s = s al[1 + int(rand() * n)]; }
    print s } }' > "$T/hostile.txt"
cat "$T/hostile.txt" "$T/train.txt" > "$T/test.txt"

variant() {   # NAME spm_train options...
    local name=$1; shift
    if ! (cd "$T" && spm_train --input=train.txt --model_prefix="$name" --vocab_size=400 --pad_id=0 --eos_id=1 \
            --unk_id=2 --bos_id=-1 --num_threads=1 --minloglevel=2 "$@" >/dev/null 2>&1); then
        fail "spm_$name" "spm_train $* failed"; return
    fi
    build/bin/tokenize --vocab "$T/$name.model" --encode < "$T/test.txt" > "$T/mine" || { fail "spm_$name" "tokenize failed"; return; }
    spm_encode --model="$T/$name.model" --output_format=id < "$T/test.txt" > "$T/ref"
    if cmp -s "$T/mine" "$T/ref"; then ok "spm_$name"
    else fail "spm_$name" "$(diff "$T/mine" "$T/ref" | head -3 | tr '\n' ' ')"; fi
}
variant default
variant identity --normalization_rule_name=identity
variant nfkc --normalization_rule_name=nfkc
variant no_dummy_prefix --add_dummy_prefix=false
variant keep_spaces --remove_extra_whitespaces=false
variant ws_suffix --treat_whitespace_as_suffix=true
variant user_symbols --user_defined_symbols='<sep>,ab,the of'
variant byte_fallback --byte_fallback=true --character_coverage=0.98
variant split_digits --split_digits=true
variant low_coverage --character_coverage=0.995
