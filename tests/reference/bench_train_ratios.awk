# bench_train_ratios.awk - the ratios of `make bench-train`'s output: each C
# figure (tokens/s) over the PyTorch peer's in the same precision, and the
# bf16 figures also over the float32 reference; C bf16 over C float32; and
# the float32 step's GFLOP/s over the peaks `bench_gemm machine` measured
# in the same run (our kernels' best, and OpenBLAS's). Reads the lines the
# C bench, bench_gemm and bench_train.py print; prints nothing for a figure
# that did not run.
/^bench-train: C (full|IA3 )( bf16)?:/ {
    mode = $3 ~ /^full/ ? "full" : "IA3"
    prec = $4 == "bf16:" ? "bf16" : "fp32"
    for (i = 1; i <= NF; i++) if ($(i + 1) == "tokens/s") { c[mode, prec] = $i; break }
    for (i = 1; i <= NF; i++) if ($(i + 1) == "GFLOP/s") { gf[mode, prec] = $i; break }
}
/^peak (openblas|avx2|avx512) / {
    if ($2 == "openblas") blas = $4
    else if ($4 > ours) { ours = $4; ours_name = $2 }
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
        if ((mode, "bf16") in c && (mode, "fp32") in c)
            printf "bench-train: ratio %-4s bf16 / C float32: %.2fx\n", mode, c[mode, "bf16"] / c[mode, "fp32"]
        if ((mode, "fp32") in gf && ours > 0 && blas > 0)
            printf "bench-train: %-4s float32 step %.1f GFLOP/s = %.0f%% of our sgemm peak (%s, %.1f), %.0f%% of OpenBLAS's (%.1f)\n",
                mode, gf[mode, "fp32"], 100 * gf[mode, "fp32"] / ours, ours_name, ours, 100 * gf[mode, "fp32"] / blas, blas
    }
}
