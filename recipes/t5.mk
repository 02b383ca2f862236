# recipes/t5.mk - T5 model targets: reference fixtures and the training benchmark.

## fixtures-t5    regenerate tests/fixtures/t5_{micro,stats,original,original_stats}.bin with the PyTorch reference (python3-torch)
fixtures-t5:
	cd tests/reference && /usr/bin/python3 make_fixtures.py ../fixtures/t5_micro.bin && \
	  /usr/bin/python3 make_fixtures.py --original ../fixtures/t5_original.bin && \
	  /usr/bin/python3 make_stats_fixtures.py ../fixtures/t5_micro.bin ../fixtures/t5_stats.bin && \
	  /usr/bin/python3 make_stats_fixtures.py ../fixtures/t5_original.bin ../fixtures/t5_original_stats.bin

## bench-train    training tokens/s, ms/step and GEMM-peak fraction of t5-mini (full, IA3; fp32, and bf16 on AMX or AVX512_BF16; medians of BENCH_STEPS steps), beside PyTorch; then the ratios
BENCH_THREADS ?= 2
BENCH_STEPS ?= 5
bench-train: SHELL := /bin/bash -o pipefail
bench-train: build/bin/train build/bin/bench_gemm
	@mkdir -p build
	@{ MATS_THREADS=$(BENCH_THREADS) build/bin/bench_gemm machine; \
	MATS_THREADS=$(BENCH_THREADS) MATS_CPU_MATH=fp32 build/bin/train --config configs/models/t5-mini.conf --bench $(BENCH_STEPS); \
	if grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo; then \
	  MATS_THREADS=$(BENCH_THREADS) MATS_CPU_MATH=bf16 build/bin/train --config configs/models/t5-mini.conf --bench $(BENCH_STEPS) | \
	    grep -v 'T5 d_model'; bf16=--bf16; \
	else echo "bench-train: neither AMX-BF16 nor AVX512_BF16 on this CPU; no bf16 figures"; bf16=; fi; \
	if /usr/bin/python3 -c 'import torch' 2>/dev/null; then \
	  cd tests/reference && /usr/bin/python3 bench_train.py --config ../../configs/models/t5-mini.conf \
	    --threads $(BENCH_THREADS) --steps $(BENCH_STEPS) $$bf16; \
	else echo "bench-train: python3-torch not installed; no PyTorch comparison (scripts/install-deps.sh --reference)"; fi; } | \
	  tee build/bench-train.txt
	@awk -f tests/reference/bench_train_ratios.awk build/bench-train.txt

## fixtures-optfisher  regenerate tests/reference/optfisher_fixture.txt (torch's AdamW state, Adafactor written out; python3-torch)
fixtures-optfisher:
	/usr/bin/python3 tests/reference/optfisher_ref.py tests/reference/optfisher_fixture.txt

.PHONY: fixtures-t5 fixtures-optfisher bench-train

## bench-stats    diagonal / blockwise Fisher and Gram on 1000 t5-mini examples, beside PyTorch's per-example loop
BENCH_STATS_DIR := build/bench-stats
BENCH_STATS_TORCH_EXAMPLES ?= 20
bench-stats: SHELL := /bin/bash -o pipefail
bench-stats: build/bin/train build/bin/fisher build/bin/gram build/tests/test_t5_data build/bin/bench_gemm
	@mkdir -p $(BENCH_STATS_DIR)
	@MATS_THREADS=$(BENCH_THREADS) build/bin/bench_gemm machine
	@build/tests/test_t5_data --write-bench $(BENCH_STATS_DIR)
	@MATS_THREADS=$(BENCH_THREADS) build/bin/train --config configs/models/t5-mini.conf --set train.steps=1 \
	  --set train.batch_size=4 --data $(BENCH_STATS_DIR)/bench.msgpack -o $(BENCH_STATS_DIR)/mini.msgpack 2>/dev/null
	@MATS_THREADS=$(BENCH_THREADS) build/bin/train --config configs/models/t5-mini.conf --mode ia3 --set train.steps=1 \
	  --set train.batch_size=4 --init $(BENCH_STATS_DIR)/mini.msgpack --data $(BENCH_STATS_DIR)/bench.msgpack \
	  -o $(BENCH_STATS_DIR)/ia3.msgpack 2>/dev/null
	@echo "bench-stats: C, $(BENCH_THREADS) threads, 1000 examples (inputs 64..128 tokens), t5-mini:"
	@MATS_THREADS=$(BENCH_THREADS) build/bin/fisher --model $(BENCH_STATS_DIR)/mini.msgpack --data $(BENCH_STATS_DIR)/bench.msgpack \
	  --type diagonal -o $(BENCH_STATS_DIR)/fd.msgpack 2>&1 | tail -1
	@MATS_THREADS=$(BENCH_THREADS) build/bin/fisher --model $(BENCH_STATS_DIR)/mini.msgpack --ia3 $(BENCH_STATS_DIR)/ia3.msgpack \
	  --data $(BENCH_STATS_DIR)/bench.msgpack --type blockwise -o $(BENCH_STATS_DIR)/fb.msgpack 2>&1 | tail -1
	@MATS_THREADS=$(BENCH_THREADS) build/bin/gram --model $(BENCH_STATS_DIR)/mini.msgpack --data $(BENCH_STATS_DIR)/bench.msgpack \
	  -o $(BENCH_STATS_DIR)/g.msgpack 2>&1 | tail -1
	@if /usr/bin/python3 -c 'import torch' 2>/dev/null; then \
	  cd tests/reference && /usr/bin/python3 bench_stats.py --config ../../configs/models/t5-mini.conf \
	    --threads $(BENCH_THREADS) --examples $(BENCH_STATS_TORCH_EXAMPLES); \
	else echo "bench-stats: python3-torch not installed; no PyTorch comparison"; fi

.PHONY: bench-stats

## bench-ranks    data-parallel training of t5-mini: tokens/s of 2 MPI ranks x 1 thread against 1 rank x 2 threads (and 1 rank accumulating 2 micro-batches, the 2 ranks' bytes); then the ratios
BENCH_RANKS_STEPS ?= 5
BENCH_RANKS := build/bin/train --config configs/models/t5-mini.conf --bench $(BENCH_RANKS_STEPS)
bench-ranks: SHELL := /bin/bash -o pipefail
bench-ranks: build/bin/train
	@command -v mpirun >/dev/null || { echo "bench-ranks: no mpirun (scripts/install-deps.sh installs openmpi-bin)"; exit 1; }
	@mkdir -p build
	@{ echo "bench-ranks: $$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $$(nproc) cores"; \
	  MATS_THREADS=2 MATS_CPU_MATH=fp32 $(BENCH_RANKS) | sed 's/^bench-train: /bench-ranks: 1 rank x 2 threads, 1 micro-batch: /'; \
	  MATS_THREADS=2 MATS_CPU_MATH=fp32 $(BENCH_RANKS) --set train.grad_accum=2 | sed 's/^bench-train: /bench-ranks: 1 rank x 2 threads, 2 micro-batches: /'; \
	  MATS_THREADS=1 MATS_CPU_MATH=fp32 mpirun -q --oversubscribe --bind-to none $(if $(filter 0,$(shell id -u)),--allow-run-as-root) -n 2 \
	    $(BENCH_RANKS) --set train.grad_accum=2 | sed 's/^bench-train: /bench-ranks: 2 ranks x 1 thread: /'; } | \
	  grep -v -e 'measured .* peak' -e 'T5 d_model' | tee build/bench-ranks.txt
	@awk -f tests/reference/bench_ranks_ratios.awk build/bench-ranks.txt

.PHONY: bench-ranks
