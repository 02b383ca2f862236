# recipes/interop.mk - Hugging Face checkpoints in and out (lib/hf.h,
# `art import-hf`, `art export-hf`) and the fixtures of its tests.

## hf-fixtures    regenerate tests/fixtures/hf/ from the PyTorch reference (needs python3-torch, spm_train)
hf-fixtures: | $(DEPS_STAMP)
	/usr/bin/python3 tests/reference/hf_ref.py

## import-hf      HF=DIR OUT=MODEL.msgpack: import a T5 checkpoint directory (and its spiece.model as MODEL.vocab.msgpack)
import-hf: build/bin/art
	@[ -n "$(HF)" ] && [ -n "$(OUT)" ] || { echo "usage: make import-hf HF=checkpoint-dir OUT=model.msgpack"; exit 1; }
	build/bin/art import-hf $(HF) -o $(OUT)

## export-hf      MODEL=M.msgpack OUT=DIR [IA3=A.msgpack IA3_MODE=fold|adapter] [DTYPE=f32|bf16|f16]: write a transformers checkpoint
export-hf: build/bin/art
	@[ -n "$(MODEL)" ] && [ -n "$(OUT)" ] || { echo "usage: make export-hf MODEL=model.msgpack OUT=dir [IA3=a.msgpack IA3_MODE=fold|adapter] [DTYPE=bf16]"; exit 1; }
	build/bin/art export-hf $(MODEL) $(if $(IA3),--ia3 $(IA3) --$(or $(IA3_MODE),fold)) --dtype $(or $(DTYPE),f32) $(OUT)

## hf-check       DIR=exported-dir [SCORES=f32|bf16|f16|f32_ia3]: check an export-hf directory as transformers would load it (python3-torch)
hf-check:
	@[ -n "$(DIR)" ] || { echo "usage: make hf-check DIR=exported-dir [SCORES=variant]"; exit 1; }
	/usr/bin/python3 tests/reference/hf_check.py $(DIR) $(if $(SCORES),--scores $(SCORES))

.PHONY: hf-fixtures import-hf export-hf hf-check

# --- experiments on your own checkpoints (configs/experiments/hf-example.conf) ---
# HF_IMPORT_DIR: where the imported artifacts of EXP go (re-imported only when a
# source file is newer; their keys derive from the source bytes).
HF_EXP_FILE   ?= $(if $(filter %.conf,$(EXP)),$(EXP),configs/experiments/$(EXP).conf)
HF_IMPORT_DIR ?= $(or $(MATS_CACHE),cache)/import/$(basename $(notdir $(HF_EXP_FILE)))

## hf-import      EXP=name: import the base, tokenizer and task checkpoints an `exp.source = hf` experiment names
hf-import: build/bin/art build/bin/key
	@bash scripts/hf-import.sh $(HF_EXP_FILE) $(HF_IMPORT_DIR)

.PHONY: hf-import

# --- fuzzing the safetensors / JSON readers (build/fuzz/fuzz_hf: the Makefile's fuzz rules) ---
## fuzz-hf        fuzz the safetensors and JSON readers for FUZZ_SECONDS (default 60), seeded with tests/fixtures/hf
fuzz-hf: build/fuzz/fuzz_hf
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS) fuzz_hf

.PHONY: fuzz-hf
