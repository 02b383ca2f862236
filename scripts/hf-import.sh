#!/usr/bin/env bash
# hf-import.sh EXP_FILE OUT_DIR - import the checkpoints an `exp.source = hf`
# experiment names (configs/experiments/hf-example.conf documents the keys):
#
#   OUT_DIR/base.msgpack        the base model (art import-hf exp.base)
#   OUT_DIR/vocab.msgpack       the tokenizer (exp.tokenizer, default exp.base/spiece.model)
#   OUT_DIR/task-T.msgpack      task T's model: a `model` artifact (exp.mode full,
#                               checked to have the base's shapes) or an `ia3`
#                               artifact whose meta.base is the base's key (exp.mode ia3)
#   OUT_DIR/task-T.msgpack ...
#   OUT_DIR/multitask.msgpack   optional (exp.multitask_model), imported like a task model
#   OUT_DIR/tasks.txt           one line per task: NAME MODEL TRAIN VALIDATION TEST
#   OUT_DIR/imports.mk          the same as Make variables for the workflow, in
#                               its slot names (seed 1 = the given checkpoints):
#                                 HF_MODE HF_TASKS HF_VOCAB K_HF_VOCAB
#                                 A_pretrain K_pretrain
#                                 A_ft-MODE-T-s1 K_ft-MODE-T-s1
#                                 A_mt-MODE-s1 K_mt-MODE-s1 (with exp.multitask_model)
#                                 HF_JSONL_T_SPLIT K_HF_JSONL_T_SPLIT (xxh128 of the file)
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

# srcdesc SOURCE...: what an import was made from: each source's resolved
# path and its files' names, sizes and modification times, and the mode
srcdesc() {
    echo "mode $mode"
    local s
    for s in "$@"; do
        echo "source $(readlink -f "$s")"
        if [ -d "$s" ]; then find "$s" -maxdepth 1 -type f -printf '%f %s %T@\n' | sort
        elif [ -e "$s" ]; then stat -c '%s %Y' "$s"; fi
    done
}
# fresh ART SOURCE...: ART exists and was imported from these same sources
# (ART.src records them: another checkpoint, even an older one, re-imports)
fresh() {
    local a=$1; shift
    [ -e "$a" ] && [ -e "$a.src" ] && [ "$(cat "$a.src")" = "$(srcdesc "$@")" ]
}
# record ART SOURCE...: after a successful import
record() { local a=$1; shift; srcdesc "$@" > "$a.src"; }
keyof() { "$ART" key "$1"; }

if ! fresh "$out/base.msgpack" "$base"; then
    "$ART" import-hf "$base" -o "$out/base.msgpack" --no-vocab || exit 1
    record "$out/base.msgpack" "$base"
fi
echo "base  $out/base.msgpack  $(keyof "$out/base.msgpack")"
if ! fresh "$out/vocab.msgpack" "$tok" "$base/tokenizer_config.json"; then
    extra=()
    if [ -f "$base/tokenizer_config.json" ]; then
        n=$(grep -o '"extra_ids": *[0-9]*' "$base/tokenizer_config.json" | grep -o '[0-9]*$' || true)
        [ -n "$n" ] && extra=(--extra-ids "$n")
    fi
    "$ART" import-spm "$tok" -o "$out/vocab.msgpack" "${extra[@]}" || exit 1
    record "$out/vocab.msgpack" "$tok" "$base/tokenizer_config.json"
fi
echo "vocab $out/vocab.msgpack  $(keyof "$out/vocab.msgpack")"

: > "$out/tasks.txt.tmp"
mk="$out/imports.mk.tmp"
{
    echo "# written by scripts/hf-import.sh from $conf"
    echo "HF_MODE := $mode"
    echo "HF_TASKS := $tasks"
    echo "HF_VOCAB := $out/vocab.msgpack"
    echo "K_HF_VOCAB := $(keyof "$out/vocab.msgpack")"
    echo "A_pretrain := $out/base.msgpack"
    echo "K_pretrain := $(keyof "$out/base.msgpack")"
} > "$mk"
import_task() { # NAME DIR ARTIFACT
    if [ "$mode" = full ]; then
        fresh "$3" "$2" "$out/base.msgpack" ||
            { "$ART" import-hf "$2" -o "$3" --like "$out/base.msgpack" --no-vocab || exit 1; record "$3" "$2" "$out/base.msgpack"; }
    else
        [ -f "$2/adapter_config.json" ] || die "$1 = $2: exp.mode is ia3 but there is no adapter_config.json"
        fresh "$3" "$2" "$out/base.msgpack" ||
            { "$ART" import-hf "$2" --base "$out/base.msgpack" -o "$3" || exit 1; record "$3" "$2" "$out/base.msgpack"; }
    fi
}
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
    import_task "exp.task.$t.model" "$m" "$a"
    k=$(keyof "$a")
    echo "task  $t  $a  $k"
    echo "$t $a $(get "exp.task.$t.train") $(get "exp.task.$t.validation") $(get "exp.task.$t.test")" >> "$out/tasks.txt.tmp"
    { echo "A_ft-$mode-$t-s1 := $a"; echo "K_ft-$mode-$t-s1 := $k"; } >> "$mk"
    for split in train validation test; do
        f=$(get "exp.task.$t.$split")
        echo "HF_JSONL_${t}_$split := $f"
        echo "K_HF_JSONL_${t}_$split := $("$KEY" --file "$f" | cut -d' ' -f1)"
    done >> "$mk"
done
mt=$(get exp.multitask_model)
if [ -n "$mt" ]; then
    [ -d "$mt" ] || die "exp.multitask_model = $mt: not a directory"
    import_task exp.multitask_model "$mt" "$out/multitask.msgpack"
    k=$(keyof "$out/multitask.msgpack")
    echo "multitask  $out/multitask.msgpack  $k"
    { echo "A_mt-$mode-s1 := $out/multitask.msgpack"; echo "K_mt-$mode-s1 := $k"; } >> "$mk"
fi
mv "$out/tasks.txt.tmp" "$out/tasks.txt"
mv "$mk" "$out/imports.mk"
