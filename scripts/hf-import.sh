#!/usr/bin/env bash
# hf-import.sh EXP_FILE OUT_DIR - import the checkpoints an `exp.source = hf`
# experiment names (configs/experiments/hf-example.conf documents the keys):
#
#   OUT_DIR/base.msgpack        the base model (art import-hf exp.base)
#   OUT_DIR/vocab.msgpack       the tokenizer (exp.tokenizer, default exp.base/spiece.model)
#   OUT_DIR/task-T.msgpack      task T's model: a `model` artifact (exp.mode full,
#                               checked to have the base's shapes) or an `ia3`
#                               artifact whose meta.base is the base's key (exp.mode ia3)
#   OUT_DIR/tasks.txt           one line per task: NAME MODEL TRAIN VALIDATION TEST
#
# An artifact is re-imported only when a file of its source is newer (Make's
# rule); its key is derived from the source bytes, so the stages downstream
# are keyed by content. Prints one line per artifact; any problem is one line
# naming the key and the file, and exit status 1.
set -euo pipefail
conf=${1:?usage: hf-import.sh EXP_FILE OUT_DIR}
out=${2:?usage: hf-import.sh EXP_FILE OUT_DIR}
cd "$(dirname "$0")/.."
ART=build/bin/art KEY=build/bin/key
die() { echo "hf-import: $conf: $*" >&2; exit 1; }
[ -f "$conf" ] || die "no such experiment file"
get() { "$KEY" --config "$conf" --get "$1"; }

source=$(get exp.source)
[ "$source" = hf ] || die "exp.source is '${source}', not hf: this experiment does not name checkpoints"
mode=$(get exp.mode); mode=${mode:-full}
[ "$mode" = full ] || [ "$mode" = ia3 ] || die "exp.mode = $mode: use full or ia3"
base=$(get exp.base)
[ -n "$base" ] || die "exp.base missing: the pretrained checkpoint directory"
[ -d "$base" ] || die "exp.base = $base: not a directory"
tok=$(get exp.tokenizer); tok=${tok:-$base/spiece.model}
[ -f "$tok" ] || die "exp.tokenizer = $tok: no such file (the base has no spiece.model: set exp.tokenizer)"
tasks=$(get exp.tasks | tr ',' ' ')
[ -n "$tasks" ] || die "exp.tasks missing: a comma-separated list of task names"
mkdir -p "$out"

# fresh ART SOURCE...: ART exists and no file of the sources is newer
fresh() {
    local a=$1; shift
    [ -e "$a" ] || return 1
    local s
    for s in "$@"; do
        if [ -d "$s" ]; then [ -z "$(find "$s" -maxdepth 1 -type f -newer "$a" -print -quit)" ] || return 1
        else [ ! "$s" -nt "$a" ] || return 1; fi
    done
}
keyof() { "$ART" key "$1"; }

if ! fresh "$out/base.msgpack" "$base"; then "$ART" import-hf "$base" -o "$out/base.msgpack"; fi
echo "base  $out/base.msgpack  $(keyof "$out/base.msgpack")"
if ! fresh "$out/vocab.msgpack" "$tok" "$base/tokenizer_config.json"; then
    extra=()
    if [ -f "$base/tokenizer_config.json" ]; then
        n=$(grep -o '"extra_ids": *[0-9]*' "$base/tokenizer_config.json" | grep -o '[0-9]*$' || true)
        [ -n "$n" ] && extra=(--extra-ids "$n")
    fi
    "$ART" import-spm "$tok" -o "$out/vocab.msgpack" "${extra[@]}"
fi
echo "vocab $out/vocab.msgpack  $(keyof "$out/vocab.msgpack")"

: > "$out/tasks.txt.tmp"
for t in $tasks; do
    [[ $t =~ ^[A-Za-z0-9_-]+$ ]] || die "exp.tasks: task name '$t' (letters, digits, _ and - only)"
    m=$(get "exp.task.$t.model")
    [ -n "$m" ] || die "exp.task.$t.model missing"
    [ -d "$m" ] || die "exp.task.$t.model = $m: not a directory"
    for split in train validation test; do
        f=$(get "exp.task.$t.$split")
        [ -n "$f" ] || die "exp.task.$t.$split missing: a JSON Lines file"
        [ -f "$f" ] || die "exp.task.$t.$split = $f: no such file"
    done
    a="$out/task-$t.msgpack"
    if [ "$mode" = full ]; then
        fresh "$a" "$m" "$out/base.msgpack" || "$ART" import-hf "$m" -o "$a" --like "$out/base.msgpack"
    else
        [ -f "$m/adapter_config.json" ] || die "exp.task.$t.model = $m: exp.mode is ia3 but there is no adapter_config.json"
        fresh "$a" "$m" "$out/base.msgpack" || "$ART" import-hf "$m" --base "$out/base.msgpack" -o "$a"
    fi
    echo "task  $t  $a  $(keyof "$a")"
    echo "$t $a $(get "exp.task.$t.train") $(get "exp.task.$t.validation") $(get "exp.task.$t.test")" >> "$out/tasks.txt.tmp"
done
mv "$out/tasks.txt.tmp" "$out/tasks.txt"
