#!/usr/bin/env bash
# explain.sh SLOT ARTIFACT NOW.key LAST.key
# Say in words why SLOT would (or would not) rerun: compare the canonical key
# text it has now with the one it was last built under.
slot=$1 art=$2 now=$3 last=$4
if [ -f "$art" ]; then
    echo "$slot: cache hit, nothing to rerun ($art)"
    exit 0
fi
echo "$slot: would run: $art does not exist"
if [ ! -f "$last" ]; then
    echo "  it has never been built in this cache (no $last)"
    exit 0
fi
awk '
    function id(line,   f, a) {
        split(line, f, " ")
        if (f[1] == "config") { split(f[2], a, "="); return "config " a[1] }
        if (f[1] == "input") return "input " f[2]
        return f[1]
    }
    FNR == NR { old[id($0)] = $0; next }
    { now[id($0)] = $0 }
    END {
        for (k in now) {
            if (!(k in old)) { print "  new:     " now[k]; continue }
            if (old[k] != now[k]) {
                split(k, p, " ")
                if (p[1] == "binary") print "  the stage binary changed (its sources or build flags): " old[k] " -> " now[k]
                else if (p[1] == "config") print "  config changed: " substr(old[k], 8) "  ->  " substr(now[k], 8)
                else if (p[1] == "input") print "  input \"" p[2] "\" changed: its own key is new (explain the stage that makes it)"
                else print "  changed: " old[k] " -> " now[k]
            }
        }
        for (k in old) if (!(k in now)) print "  removed: " old[k]
    }' "$last" "$now" | sort
