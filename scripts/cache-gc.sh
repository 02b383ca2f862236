#!/usr/bin/env bash
# cache-gc.sh: delete cached artifacts that no current configuration reaches.
# "Current configuration": every experiment in configs/experiments/, both
# modes, every method of its exp.methods over its lambda grid, with today's
# binaries. Artifacts of other keys (old configs, old binaries) and leftover
# temporary files are deleted with their .log and .key files.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${MATS_CACHE:-cache}
case "$cache" in *[[:space:]]*)
    echo "cache-gc: MATS_CACHE '$cache' contains white space, which make cannot carry: use a path without it" >&2
    exit 1 ;;
esac
[ -d "$cache" ] || { echo "cache-gc: no cache at $cache"; exit 0; }
keep=$(mktemp); trap 'rm -f "$keep"' EXIT
for conf in configs/experiments/*.conf; do
    exp=$(basename "$conf" .conf)
    modes="ia3 full"
    if [ "$(build/bin/key --config "$conf" --get exp.source)" = hf ]; then
        # an experiment on imported checkpoints: nothing of it can be cached
        # before `make hf-import` wrote its imports.mk
        [ -f "$cache/import/$exp/imports.mk" ] || continue
        modes=$(build/bin/key --config "$conf" --get exp.mode); modes=${modes:-full}  # as hf-import.sh
    fi
    for mode in $modes; do
        # the listing sees only the experiment's own configuration: no
        # variables of the calling make (SEEDS=1 would drop seeds 2 and 3)
        if ! env -u SEEDS -u METHOD -u LAMBDA -u MODE -u METHODS -u DEVICE -u MATS_GPU_MATH -u MATS_CPU_MATH -u FISHER_SOURCE \
                MAKEFLAGS= MFLAGS= MAKELEVEL= MAKEOVERRIDES= \
                make --no-print-directory WF=1 DATA_KEYS=1 DATA_CONF="$conf" EXP="$exp" MODE="$mode" MATS_CACHE="$cache" \
                cache-gc-list >>"$keep" 2>"$keep.err" || [ -s "$keep.err" ]; then
            echo "cache-gc: could not list what experiment $exp ($mode) reaches, so nothing was deleted: $(tail -1 "$keep.err")" >&2
            rm -f "$keep.err"
            exit 1
        fi
    done
done
rm -f "$keep.err"
sort -u -o "$keep" "$keep"
n=0 bytes=0
for f in "$cache"/*/*.msgpack "$cache"/*/*.tmp.* "$cache"/*/*.msgpack.ckpt; do
    [ -e "$f" ] || continue
    case "$f" in "$cache"/download/*|"$cache"/runs/*|"$cache"/slots/*|"$cache"/test-data/*|"$cache"/import/*) continue ;; esac
    if [[ $f == *.tmp.* ]]; then
        # a writer's temporary file (FILE.tmp.<pid>): only once its process is gone
        pid=${f##*.tmp.}
        [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && continue
    elif [[ $f == *.ckpt ]]; then
        # a training checkpoint: kept while its run is still reachable
        grep -qxF "${f%.ckpt}" "$keep" && continue
    elif grep -qxF "$f" "$keep"; then
        continue
    fi
    s=$(stat -c %s "$f"); bytes=$((bytes + s)); n=$((n + 1))
    rm -f "$f"
    [[ $f == *.msgpack ]] && rm -f "${f%.msgpack}.log" "${f%.msgpack}.log.before" "${f%.msgpack}.key" "$f.ckpt" "$f.keytext"
    # an unfinished run's checkpoint: its log and key text too
    [[ $f == *.msgpack.ckpt ]] && rm -f "${f%.msgpack.ckpt}.log" "${f%.msgpack.ckpt}.log.before" "${f%.ckpt}.keytext"
done
# stage locks (scripts/run-stage.sh) left by a killed make: those nobody holds
for f in "$cache"/*/*.lock; do
    [ -e "$f" ] || continue
    flock -n "$f" true 2>/dev/null && rm -f "$f"
done
echo "cache-gc: deleted $n files, $((bytes / 1048576)) MiB; kept $(wc -l <"$keep") reachable artifacts"
