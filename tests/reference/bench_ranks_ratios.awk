# bench_ranks_ratios.awk - the closing lines of make bench-ranks: for full
# and IA3 training, the tokens/s of 2 ranks x 1 thread over those of 1 rank
# x 2 threads (one micro-batch, and accumulating 2: the 2 ranks' bytes),
# read from the lines "bench-ranks: SETUP: C MODE: N tokens/s ..." of one run.
/: C (full|IA3) *: +[0-9.]+ tokens\/s/ {
    setup = $0; sub(/^bench-ranks: /, "", setup); sub(/: C (full|IA3).*/, "", setup)
    mode = $0; sub(/.*: C /, "", mode); sub(/ *:.*/, "", mode)
    t = $0; sub(/.*: C (full|IA3) *: +/, "", t); sub(/ .*/, "", t)
    tok[setup, mode] = t + 0
    if (!(mode in seen)) { seen[mode] = 1; modes[++n] = mode }
}
END {
    one = "1 rank x 2 threads, 1 micro-batch"; acc = "1 rank x 2 threads, 2 micro-batches"; two = "2 ranks x 1 thread"
    for (i = 1; i <= n; i++) {
        m = modes[i]
        if (tok[one, m] > 0 && tok[acc, m] > 0 && tok[two, m] > 0)
            printf "bench-ranks: %s: 2 ranks x 1 thread run at %.2fx the tokens/s of 1 rank x 2 threads (%.2fx of 1 rank accumulating 2 micro-batches)\n", m, tok[two, m] / tok[one, m], tok[two, m] / tok[acc, m]
    }
}
