#!/usr/bin/env bash
# cache-gc.sh: delete cached artifacts that no current configuration reaches.
# "Current configuration": every experiment in configs/experiments/, both
# modes, every method of its exp.methods over its lambda grid, with today's
# binaries. Artifacts of other keys (old configs, old binaries) and leftover
# temporary files are deleted with their .log and .key files.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${MATS_CACHE:-cache}
[ -d "$cache" ] || { echo "cache-gc: no cache at $cache"; exit 0; }
keep=$(mktemp); trap 'rm -f "$keep"' EXIT
for conf in configs/experiments/*.conf; do
    exp=$(basename "$conf" .conf)
    modes="ia3 full"
    if [ "$(build/bin/key --config "$conf" --get exp.source)" = hf ]; then
        # an experiment on imported checkpoints: nothing of it can be cached
        # before `make hf-import` wrote its imports.mk
        [ -f "$cache/import/$exp/imports.mk" ] || continue
        modes=$(build/bin/key --config "$conf" --get exp.mode)
    fi
    for mode in $modes; do
        if ! make --no-print-directory WF=1 DATA_KEYS=1 DATA_CONF="$conf" EXP="$exp" MODE="$mode" MATS_CACHE="$cache" \
                cache-gc-list >>"$keep" 2>"$keep.err"; then
            echo "cache-gc: could not list what experiment $exp ($mode) reaches, so nothing was deleted: $(tail -1 "$keep.err")" >&2
            rm -f "$keep.err"
            exit 1
        fi
    done
done
rm -f "$keep.err"
sort -u -o "$keep" "$keep"
n=0 bytes=0
for f in "$cache"/*/*.msgpack "$cache"/*/*.tmp.*; do
    [ -e "$f" ] || continue
    case "$f" in "$cache"/download/*|"$cache"/runs/*|"$cache"/slots/*|"$cache"/test-data/*|"$cache"/import/*) continue ;; esac
    if [[ $f == *.tmp.* ]] || ! grep -qxF "$f" "$keep"; then
        s=$(stat -c %s "$f"); bytes=$((bytes + s)); n=$((n + 1))
        rm -f "$f" "${f%.msgpack}.log" "${f%.msgpack}.key" "${f%.msgpack}.ckpt"
    fi
done
echo "cache-gc: deleted $n files, $((bytes / 1048576)) MiB; kept $(wc -l <"$keep") reachable artifacts"
