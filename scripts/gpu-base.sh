#!/usr/bin/env bash
# gpu-base.sh - pretrain a base on a GPU machine that has no task data and no
# Debian packages, in one call of a few minutes, and install it here.
#
#   scripts/gpu-base.sh pack               here: the corpus tokens of the recipe
#                                          (make data with CONF) into .gpu/corpus.msgpack.xz,
#                                          with the vocabulary and the data's recipe
#                                          (base-release.sh stage-data)
#   scripts/gpu-base.sh run SECONDS [--fit]
#                                          there (a GPU build, `make GPU=1`): time the
#                                          recipe's step (train --bench); if the whole run
#                                          fits in SECONDS, train it and write the base,
#                                          its key text and log under $OUT (in parts of
#                                          15 MiB); else say what would fit and stop, or
#                                          with --fit train that many steps (a multiple of
#                                          100; the recipe's train.steps must then say so
#                                          before `install`)
#   scripts/gpu-base.sh collect DIR        here: reassemble DIR's parts into .gpu/base.msgpack
#                                          (.key, .log beside it), verified
#   scripts/gpu-base.sh install            here: .gpu/base.msgpack into release/ with its
#                                          recipe (base-release.sh install-from)
#
# The recipe is CONF (default configs/experiments/base-release-gpu.conf: the
# released base's data, model and vocabulary, pretrained by
# configs/train/pretrain-base-gpu.conf). The base is trained by the train
# stage itself, keyed as the workflow keys it (its key text is written
# beside it and checked against the artifact's own key), so base-release.sh
# check verifies the installed release as it verifies a CPU-built one.
#
# Environment: CONF, OUT (run: where the parts go), GPU_BASE_DIR (default
# .gpu, git-ignored: what `run` reads, travelling with the working tree),
# GPU_BASE_WORK (run: scratch, default /tmp/gpu-base), MATS_CACHE (pack).
set -euo pipefail
cd "$(dirname "$0")/.."
CONF=${CONF:-configs/experiments/base-release-gpu.conf}
DIR=${GPU_BASE_DIR:-.gpu}
die() { echo "gpu-base: $*" >&2; exit 1; }
[ -f "$CONF" ] || die "$CONF: no such recipe config"
PART=15M

# The train run of the recipe: its arguments (after the data and output).
recipe_args() {
    local pre
    pre=$(build/bin/key --config "$CONF" --get-path exp.pretrain)
    [ -n "$pre" ] || die "$CONF sets no exp.pretrain"
    printf '%s\n' --config "$CONF" --config "$pre" --objective span_corruption --mode full
}
# The key tool's arguments for the same run (the workflow's slot).
key_args() { # BINARY-DIGEST DATA-KEY
    local pre
    pre=$(build/bin/key --config "$CONF" --get-path exp.pretrain)
    printf '%s\n' --stage train --binary-digest "$1" --config "$CONF" --config "$pre" --ns model,train \
        --set train.objective=span_corruption --set train.mode=full --input "data=$2"
}

pack() {
    [ -x build/bin/art ] || die "build the tools first: make"
    local corpus vocab paths
    make --no-print-directory -s data DATA_CONF="$CONF" >&2 || die "make data DATA_CONF=$CONF failed"
    paths=$(make --no-print-directory -s data-paths DATA_CONF="$CONF" 2>/dev/null)
    corpus=$(sed -n 's/^corpus //p' <<<"$paths")
    vocab=$(sed -n 's/^vocab //p' <<<"$paths")
    [ -n "$corpus" ] && [ -s "$corpus" ] && [ -s "$vocab" ] || die "no corpus tokens or vocabulary after make data DATA_CONF=$CONF"
    build/bin/art verify "$corpus" >/dev/null || die "$corpus does not verify"
    # the recipe of the data (corpus, vocabulary, corpus tokens), recorded now
    CONF=$CONF bash scripts/base-release.sh stage-data "$DIR" "$vocab" "$(build/bin/art key "$corpus")"
    xz -T2 -6 -c "$corpus" > "$DIR/corpus.msgpack.xz.tmp" && mv "$DIR/corpus.msgpack.xz.tmp" "$DIR/corpus.msgpack.xz"
    echo "gpu-base: $DIR/corpus.msgpack.xz ($(du -h "$DIR/corpus.msgpack.xz" | cut -f1), corpus tokens $(build/bin/art key "$corpus")); carry $DIR to the GPU machine"
}

run() {
    local budget=${1:-} fit_arg=${2:-}
    [[ $budget =~ ^[0-9]+$ ]] || die "run SECONDS [--fit]: the time the training may take"
    [ -z "$fit_arg" ] || [ "$fit_arg" = --fit ] || die "run SECONDS [--fit]: unknown option '$fit_arg'"
    [ -n "${OUT:-}" ] && [ -d "$OUT" ] || die "OUT: the folder for the base's parts is not set"
    [ -s "$DIR/corpus.msgpack.xz" ] || die "$DIR/corpus.msgpack.xz missing: run 'scripts/gpu-base.sh pack' here first and carry $DIR"
    local t0=$SECONDS W=${GPU_BASE_WORK:-/tmp/gpu-base}
    mkdir -p "$W"
    # The build needs only the libraries train links (no data tools, no MPI:
    # DEPS_FILES= keeps make from calling apt-get on a machine that cannot
    # fetch); what is missing is named before anything is compiled.
    local mk=${GPU_BASE_MAKE-GPU=1 MPI=0 DEPS_FILES=} miss=() h
    for h in msgpack.h xxhash.h lzma.h zlib.h; do [ -e /usr/include/$h ] || miss+=("$h"); done
    [ -e /usr/include/x86_64-linux-gnu/cblas.h ] || [ -e /usr/include/cblas.h ] || miss+=(cblas.h)
    [ ${#miss[@]} -eq 0 ] || die "this machine lacks ${miss[*]} (libmsgpack-dev, libxxhash-dev, liblzma-dev, zlib1g-dev, libopenblas-dev): install them or carry them"
    make --no-print-directory -s $mk build/bin/train build/bin/art build/bin/key >&2 || die "the build failed (make $mk)"
    if command -v xz >/dev/null; then xz -d -c "$DIR/corpus.msgpack.xz" > "$W/corpus.msgpack"
    else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
             "$DIR/corpus.msgpack.xz" "$W/corpus.msgpack"; fi
    build/bin/art verify "$W/corpus.msgpack" >/dev/null || die "$DIR/corpus.msgpack.xz: the corpus tokens do not verify"
    mapfile -t a < <(recipe_args)
    local steps batch tin ttg cke
    steps=$(build/bin/key "${a[@]:0:4}" --get train.steps)
    batch=$(build/bin/key "${a[@]:0:4}" --get train.batch_size)
    tin=$(build/bin/key "${a[@]:0:4}" --get train.max_input_len)
    ttg=$(build/bin/key "${a[@]:0:4}" --get train.max_target_len)
    cke=$(build/bin/key "${a[@]:0:4}" --get train.ckpt_every)
    # a checkpoint (weights and optimizer, written and fsynced) every cke
    # steps, which train --bench does not write: 2 s each in the estimates
    local ckpt_s
    ckpt_s=$(awk -v c="${cke:-0}" 'BEGIN { printf "%g", (c > 0 ? 2 / c : 0) }')
    # 1. the step's speed, on random batches of the recipe's shape
    build/bin/train "${a[@]:0:4}" --bench 30 > "$W/bench.txt" 2>&1 || { cat "$W/bench.txt" >&2; die "train --bench failed"; }
    local tps need
    tps=$(sed -n 's/^bench-train: C full[^:]*: *\([0-9]*\) tokens\/s.*/\1/p' "$W/bench.txt" | head -n 1)
    [ -n "$tps" ] && [ "$tps" -gt 0 ] || { cat "$W/bench.txt" >&2; die "no tokens/s in train --bench's output"; }
    need=$(awk -v s="$steps" -v b="$batch" -v i="$tin" -v g="$ttg" -v t="$tps" -v c="$ckpt_s" 'BEGIN { printf "%d", s * (b * (i + g) / t * 1.1 + c) + 30 }')
    local left=$((budget - (SECONDS - t0)))
    echo "gpu-base: $(grep -m1 'bench-train: T5' "$W/bench.txt" | sed 's/^bench-train: //')"
    echo "gpu-base: $tps tokens/s on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || echo 'this machine'): $steps steps of $batch x ($tin + $ttg) tokens need about $need s, $left s left"
    cp "$W/bench.txt" "$OUT/bench.txt"
    local sets=()
    if [ "$need" -gt "$left" ]; then
        local fit
        fit=$(awk -v l="$left" -v t="$tps" -v b="$batch" -v i="$tin" -v g="$ttg" -v c="$ckpt_s" 'BEGIN { f = (l - 30) / (b * (i + g) / t * 1.1 + c); f = int(f / 100) * 100; printf "%d", (f > 0 ? f : 0) }')
        if [ "$fit_arg" != --fit ] || [ "$fit" -lt 100 ]; then
            echo "gpu-base: the run does not fit: about $fit steps would in the $left s left; set train.steps in the recipe to that (or run with --fit), or give more time"
            exit 3
        fi
        echo "gpu-base: --fit: $fit steps instead of $steps (train.steps = $fit in the recipe before installing this base)"
        sets=(--set "train.steps=$fit")
    fi
    # 2. the run, as the workflow would run it
    local log="$W/base.log"
    if ! timeout -s KILL "$left" build/bin/train "${a[@]}" "${sets[@]}" --data "$W/corpus.msgpack" -o "$W/base.msgpack" 2> "$log"; then
        cp "$log" "$OUT/base.log"
        die "train did not finish (log: base.log under OUT)"
    fi
    local dig dk
    dig=$(build/bin/key --file build/bin/train | cut -d' ' -f1)
    dk=$(build/bin/art key "$W/corpus.msgpack")
    mapfile -t k < <(key_args "$dig" "$dk")
    k+=("${sets[@]}")
    build/bin/key "${k[@]}" --text > "$W/base.key"
    [ "$(build/bin/key "${k[@]}")" = "$(build/bin/art key "$W/base.msgpack")" ] ||
        die "the base's own key is not the recipe's (build/bin/key ${k[*]}): not written"
    split -b $PART -d "$W/base.msgpack" "$OUT/base.msgpack.part"
    cp "$W/base.key" "$log" "$OUT/"
    build/bin/key --file "$W/base.msgpack" | cut -d' ' -f1 > "$OUT/base.msgpack.xxh128"
    echo "gpu-base: trained in $((SECONDS - t0)) s; $(tr '\r' '\n' < "$log" | grep . | tail -n 1 | sed 's/^train: //')"
    echo "gpu-base: parts under OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
}

collect() {
    local from=${1:-}
    [ -n "$from" ] && [ -d "$from" ] || die "collect DIR: the folder the GPU run's files came back to"
    ls "$from"/base.msgpack.part* >/dev/null 2>&1 || die "$from holds no base.msgpack.part*: did the run finish? (see $from/base.log)"
    for f in base.key base.log base.msgpack.xxh128; do [ -s "$from/$f" ] || die "$from/$f missing"; done
    mkdir -p "$DIR"
    cat "$from"/base.msgpack.part* > "$DIR/base.msgpack.tmp"
    [ "$(build/bin/key --file "$DIR/base.msgpack.tmp" | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$from/base.msgpack.xxh128")" ] ||
        { rm -f "$DIR/base.msgpack.tmp"; die "$from: the parts do not add up to the base that was trained (xxh128 differs)"; }
    build/bin/art verify "$DIR/base.msgpack.tmp" >/dev/null || { rm -f "$DIR/base.msgpack.tmp"; die "$from: the base does not verify"; }
    cp "$from/base.key" "$from/base.log" "$DIR/"
    mv "$DIR/base.msgpack.tmp" "$DIR/base.msgpack"
    echo "gpu-base: $DIR/base.msgpack ($(build/bin/art key "$DIR/base.msgpack")); 'scripts/gpu-base.sh install' puts it in release/"
}

install() {
    [ -s "$DIR/base.msgpack" ] || die "$DIR/base.msgpack missing: collect a finished run first"
    CONF=$CONF bash scripts/base-release.sh install-from "$DIR"
}

case ${1:-} in
pack) pack ;;
run) run "${2:-}" "${3:-}" ;;
collect) collect "${2:-}" ;;
install) install ;;
*) die "usage: scripts/gpu-base.sh pack | run SECONDS [--fit] | collect DIR | install" ;;
esac
