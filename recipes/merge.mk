# recipes/merge.mk - the merge stage's benchmark.

## bench-merge    time every merge method on 8 random t5-small models, mats vs a scipy/torch peer, RSS on t5-base
bench-merge: all build/bin/bench_merge build/bin/bench_gemm
	@build/bin/bench_gemm machine
	@bash tests/reference/merge_bench.sh

.PHONY: bench-merge
