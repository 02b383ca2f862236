# bench_train_ratios.awk - the ratios of `make bench-train`'s output: each C
# figure (tokens/s) over the PyTorch peer's in the same precision, and the
# bf16 figures also over the float32 reference. Reads the lines the C bench
# and bench_train.py print; prints nothing for a peer that did not run.
/^bench-train: C (full|IA3 )( bf16)?:/ {
    mode = $3 ~ /^full/ ? "full" : "IA3"
    prec = $4 == "bf16:" ? "bf16" : "fp32"
    for (i = 1; i <= NF; i++) if ($(i + 1) == "tokens/s") { c[mode, prec] = $i; break }
}
/^bench-train: PyTorch (full|IA3 ) *(bf16 autocast)?:/ {
    mode = $3 ~ /^full/ ? "full" : "IA3"
    prec = $0 ~ /bf16 autocast:/ ? "bf16" : "fp32"
    for (i = 1; i <= NF; i++) if ($(i + 1) == "tokens/s") { t[mode, prec] = $i; break }
}
END {
    split("full IA3", modes, " ")
    for (m = 1; m <= 2; m++) {
        mode = modes[m]
        if ((mode, "fp32") in c && (mode, "fp32") in t)
            printf "bench-train: ratio %-4s float32 / PyTorch float32: %.2fx\n", mode, c[mode, "fp32"] / t[mode, "fp32"]
        if ((mode, "bf16") in c && (mode, "bf16") in t)
            printf "bench-train: ratio %-4s bf16 / PyTorch bf16 autocast: %.2fx\n", mode, c[mode, "bf16"] / t[mode, "bf16"]
        if ((mode, "bf16") in c && (mode, "fp32") in t)
            printf "bench-train: ratio %-4s bf16 / PyTorch float32 (the reference): %.2fx\n", mode, c[mode, "bf16"] / t[mode, "fp32"]
    }
}
