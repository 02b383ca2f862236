# recipes/t5.mk - T5 model targets: reference fixtures and the training benchmark.

## fixtures-t5    regenerate tests/fixtures/t5_micro.bin with the PyTorch reference (python3-torch)
fixtures-t5:
	cd tests/reference && /usr/bin/python3 make_fixtures.py ../fixtures/t5_micro.bin

## bench-train    training tokens/s, ms/step and sgemm-peak fraction of t5-mini (full, IA3), beside PyTorch
BENCH_THREADS ?= 2
BENCH_STEPS ?= 3
bench-train: build/bin/bench_train
	MATS_THREADS=$(BENCH_THREADS) build/bin/bench_train --config configs/models/t5-mini.conf --steps $(BENCH_STEPS)
	@if /usr/bin/python3 -c 'import torch' 2>/dev/null; then \
	  cd tests/reference && /usr/bin/python3 bench_train.py --config ../../configs/models/t5-mini.conf \
	    --threads $(BENCH_THREADS) --steps $(BENCH_STEPS); \
	else echo "bench-train: python3-torch not installed; no PyTorch comparison (scripts/install-deps.sh --reference)"; fi

.PHONY: fixtures-t5 bench-train
