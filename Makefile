# mats-c - model merging by Matching Models in Task Subspaces, in C.
# `make help` lists the targets. The build is flat: lib/*.c -> build/lib/libmats.a,
# stages/*.c and tools/*.c -> build/bin/<name>, tests/test_*.c -> build/tests/<name>.
MAKEFLAGS += -rR --no-print-directory
.DELETE_ON_ERROR:
.SECONDARY:
.SUFFIXES:
SHELL := /bin/bash
.DEFAULT_GOAL := all

CC      ?= cc
ifeq ($(origin CC),default)
CC      := cc
endif
OPT     ?= -O2
CFLAGS  ?= $(OPT) -g
# -ffile-prefix-map keeps the clone's path out of the binaries: a stage's
# digest is part of every cache key (lib/key.h), so the same sources
# must give the same bytes in any directory. For the same reason no flag may
# depend on what is installed when make parses this file (a pkg-config call
# gave a different -I before and after the first dependency install, hence
# other debug paths, other digests and an orphaned cache): cblas.h is the
# Debian alternative /usr/include/x86_64-linux-gnu/cblas.h (DEPS_FILES).
MC_CFLAGS := -std=c11 -Wall -Wextra -MMD -MP -fno-strict-aliasing -D_GNU_SOURCE \
             -ffile-prefix-map=$(CURDIR)=. -Ilib
LDLIBS  := -lopenblas -lmsgpackc -lxxhash -lz -llzma -lm -lpthread
GPU     ?= 0
# MPI=1 (the default): train runs on N ranks under mpirun / srun (lib/comm.h),
# with Debian's Open MPI, which scripts/install-deps.sh installs. The header
# is the Debian alternative /usr/include/x86_64-linux-gnu/mpi (fixed, as
# cblas.h: no flag may depend on what make finds installed). MPI=0 builds
# without it: then train on N > 1 ranks is a one-line error. Only train
# links libmpi (MPI_LIBS, with NCCL under GPU=1); no other stage starts it.
MPI     ?= 1
MPI_LIBS :=
ifeq ($(MPI),1)
MC_CFLAGS += -DMC_MPI=1 -I/usr/include/x86_64-linux-gnu/mpi
MPI_LIBS  := -lmpi
endif

# --- dependencies ---------------------------------------------------------------
# Installed by scripts/install-deps.sh through a stamp, re-run when a needed
# header, library or tool is missing.
DEPS_STAMP := build/.deps-ok
DEPS_FILES := /usr/include/msgpack.h /usr/include/xxhash.h /usr/include/lzma.h \
              /usr/include/zlib.h /usr/bin/xxh128sum /usr/bin/spm_train \
              /usr/include/x86_64-linux-gnu/cblas.h /usr/include/yaml.h \
              $(if $(filter 1,$(MPI)),/usr/include/x86_64-linux-gnu/mpi/mpi.h /usr/bin/mpirun)
$(DEPS_STAMP): scripts/install-deps.sh | build/
	@missing=0; for f in $(DEPS_FILES); do [ -e $$f ] || missing=1; done; \
	 if [ $$missing = 1 ] || [ ! -e $@ ]; then bash scripts/install-deps.sh; fi
	@touch $@
deps: ; @bash scripts/install-deps.sh && mkdir -p build && touch $(DEPS_STAMP)
ifneq ($(words $(wildcard $(DEPS_FILES))),$(words $(DEPS_FILES)))
$(shell rm -f $(DEPS_STAMP))
endif

# --- flags file: rebuild everything when flags change (git's GIT-CFLAGS) -------
FLAGS_FILE := build/flags
FLAGS_NOW := $(CC) $(CFLAGS) $(MC_CFLAGS) $(LDLIBS) $(MPI_LIBS) GPU=$(GPU) MPI=$(MPI)
$(FLAGS_FILE): FORCE | build/
	@t=$@.tmp.$$$$; echo '$(FLAGS_NOW)' > $$t; if cmp -s $@ $$t; then rm -f $$t; else mv -f $$t $@; fi

# --- sources ---------------------------------------------------------------------
LIB_SRC    := $(sort $(wildcard lib/*.c))
LIB_OBJ    := $(LIB_SRC:lib/%.c=build/obj/lib/%.o)
STAGE_SRC  := $(sort $(wildcard stages/*.c))
TOOL_SRC   := $(sort $(wildcard tools/*.c))
TEST_SRC   := $(sort $(wildcard tests/test_*.c))
STAGES     := $(STAGE_SRC:stages/%.c=build/bin/%)
TOOLS      := $(TOOL_SRC:tools/%.c=build/bin/%)
TESTS      := $(TEST_SRC:tests/%.c=build/tests/%)
CU_SRC     := $(sort $(wildcard lib/*.cu))

NVCC ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
ifeq ($(GPU),1)
ifeq ($(NVCC),)
$(error GPU=1 asks for the CUDA backend but nvcc was not found: install the CUDA toolkit or build without GPU=1)
endif
CUDA_HOME  := $(patsubst %/bin/nvcc,%,$(NVCC))
CU_OBJ     := $(CU_SRC:lib/%.cu=build/obj/lib/%.cu.o)
NVCCFLAGS  := -O2 -std=c++17 -Ilib -gencode arch=compute_90,code=sm_90 \
              -gencode arch=compute_90,code=compute_90 -Xcompiler -Wall,-Wextra \
              -Xcompiler -ffile-prefix-map=$(CURDIR)=.
MC_CFLAGS  += -DMC_GPU=1 -I$(CUDA_HOME)/include
LDLIBS     += -L$(CUDA_HOME)/lib64 -lcublas -lcudart -lstdc++ -Wl,-rpath,$(CUDA_HOME)/lib64
# NCCL (the CUDA toolkit's) moves train's gradients between GPUs
# (lib/comm_nccl.cu); only train links it
MPI_LIBS   += -lnccl
endif

all: $(DEPS_STAMP) $(STAGES) $(TOOLS)
	@echo "built: $(notdir $(STAGES) $(TOOLS))$(if $(filter 1,$(GPU)), (with CUDA backend))$(if $(filter 1,$(MPI)), (train with MPI))"

build/ build/bin/ build/tests/ build/obj/lib/ build/obj/stages/ build/obj/tools/ build/obj/tests/:
	@mkdir -p $@

build/obj/lib/%.o: lib/%.c $(FLAGS_FILE) | build/obj/lib/ $(DEPS_STAMP)
	$(CC) $(CFLAGS) $(MC_CFLAGS) -c $< -o $@
build/obj/lib/%.cu.o: lib/%.cu $(FLAGS_FILE) | build/obj/lib/
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@
build/obj/stages/%.o: stages/%.c $(FLAGS_FILE) | build/obj/stages/ $(DEPS_STAMP)
	$(CC) $(CFLAGS) $(MC_CFLAGS) -c $< -o $@
build/obj/tools/%.o: tools/%.c $(FLAGS_FILE) | build/obj/tools/ $(DEPS_STAMP)
	$(CC) $(CFLAGS) $(MC_CFLAGS) -c $< -o $@
build/obj/tests/%.o: tests/%.c $(FLAGS_FILE) | build/obj/tests/ $(DEPS_STAMP)
	$(CC) $(CFLAGS) $(MC_CFLAGS) -Itests -c $< -o $@

build/lib/libmats.a: $(LIB_OBJ) $(CU_OBJ)
	@mkdir -p $(@D)
	@rm -f $@ && ar rcD $@ $^

build/bin/train: LDLIBS += $(MPI_LIBS)
build/bin/%: build/obj/stages/%.o build/lib/libmats.a | build/bin/
	$(CC) $(CFLAGS) -o $@ $< build/lib/libmats.a $(LDLIBS)
build/bin/%: build/obj/tools/%.o build/lib/libmats.a | build/bin/
	$(CC) $(CFLAGS) -o $@ $< build/lib/libmats.a $(LDLIBS)
# libyaml only where recipes are read: the stages' bytes, hence their cache
# keys, stay as they are
build/bin/recipe: LDLIBS += -lyaml
build/tests/%: build/obj/tests/%.o build/lib/libmats.a | build/tests/
	$(CC) $(CFLAGS) -o $@ $< build/lib/libmats.a $(LDLIBS)

-include $(wildcard build/obj/*/*.d)

# --- tests -----------------------------------------------------------------------
# tests/run.sh runs every build/tests/test_* binary and tests/test_*.sh script,
# counts their "ok"/"FAIL" lines and closes with "N passed, N failed".
# `make SAN=1 test` instead runs the suite on an ASan + UBSan build of a copy
# of the sources under build/san/ (scripts/san-test.sh): build/ and the
# normal binaries, hence their bytes and cache keys, stay as they are.
# -ffp-contract=off: the arithmetic of the normal build (gcc, ISO C mode), which
# the SIMD-width and reference tests compare bit for bit; clang would fuse.
SAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all -ffp-contract=off
# `make SAN=thread test`: ThreadSanitizer on the tests that run the thread
# pool, the core leases, the products, the stages and the merges on several
# threads (SAN_TESTS names others); its reports go to build/san/reports too,
# OpenBLAS's own threads suppressed (tests/tsan.supp).
TSAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread -ffp-contract=off
TSAN_TESTS := tests/test_leases.sh build/tests/test_kernels build/tests/test_t5 build/tests/test_t5_stats \
              tests/test_t5_stages.sh tests/test_merge.sh build/tests/test_merge
ifeq ($(SAN),1)
test:
	@SAN_CFLAGS='$(SAN_CFLAGS)' bash scripts/san-test.sh
else ifeq ($(SAN),thread)
test:
	@SAN_CFLAGS='$(TSAN_CFLAGS)' SAN_TESTS='$(or $(SAN_TESTS),$(TSAN_TESTS))' bash scripts/san-test.sh
else
test: all $(TESTS)
	@bash tests/run.sh $(TESTS) $(sort $(wildcard tests/test_*.sh))
endif

# --- fuzzing ---------------------------------------------------------------------
# libFuzzer targets under AddressSanitizer and UBSan, linked against the
# library compiled again by clang into build/fuzz/obj/ (build/ is untouched):
#   fuzz_art      raw bytes into the artifact reader (a valid checksum appended)
#   fuzz_loaders  checksum-valid artifacts of every kind with hostile contents
#                 into the loaders the stages use (structure-aware)
#   fuzz_hf       the safetensors and JSON readers (make fuzz-hf)
# tests/test_fuzz.sh runs fuzz_art and fuzz_loaders for a few seconds in
# `make test`.
FUZZ_SECONDS ?= 60
FUZZ_CC ?= clang
FUZZ_CFLAGS := -O1 -g -std=c11 -D_GNU_SOURCE -fno-strict-aliasing -ffile-prefix-map=$(CURDIR)=. -Ilib \
               -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_OBJ := $(LIB_SRC:lib/%.c=build/fuzz/obj/%.o)
build/fuzz/obj/%.o: lib/%.c | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@
build/fuzz/libmats.a: $(FUZZ_OBJ)
	@rm -f $@ && ar rcD $@ $^
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c build/fuzz/libmats.a
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP -o $@ $< build/fuzz/libmats.a $(LDLIBS)
-include $(wildcard build/fuzz/obj/*.d build/fuzz/*.d)
fuzz: build/fuzz/fuzz_art build/fuzz/fuzz_loaders build/tests/test_art
	@bash tests/fuzz/run.sh $(FUZZ_SECONDS) fuzz_art fuzz_loaders

## bench          every benchmark: bench-gemm, bench-train, bench-stats, bench-merge, bench-tokenize, bench-ranks
bench: bench-gemm bench-train bench-stats bench-merge bench-tokenize bench-ranks

## bench-gemm     the CPU and its products: our GEMM kernels (AVX-512, AVX2, AMX, AVX512_BF16) against OpenBLAS on t5-mini/small/base shapes, and the attention's per-row products
BENCH_GEMM_THREADS ?= 2
bench-gemm: build/bin/bench_gemm
	@MATS_THREADS=$(BENCH_GEMM_THREADS) build/bin/bench_gemm machine
	@MATS_THREADS=$(BENCH_GEMM_THREADS) build/bin/bench_gemm shapes
	@MATS_THREADS=$(BENCH_GEMM_THREADS) build/bin/bench_gemm attention

clean:
	rm -rf build

help:
	@sed -n 's/^## //p' Makefile recipes/*.mk 2>/dev/null | sort -u

## all            build every stage and tool into build/bin/ (GPU=1 adds the CUDA backend and NCCL; MPI=0 leaves out MPI)
## deps           install the Debian packages the project needs (scripts/install-deps.sh)
## test           build and run every test; closes with "N passed, N failed" (SAN=1: on an ASan + UBSan build, in build/san/; SAN=thread: the threaded tests under ThreadSanitizer)
## fuzz           fuzz the artifact reader and the loaders of every kind for FUZZ_SECONDS (default 60) each
## clean          remove build/

.PHONY: all deps test fuzz bench bench-gemm clean help FORCE
FORCE:

# `make merge RECIPE=...` is recipes/recipe.mk's merge, which runs the
# workflow's (recipes/workflow.mk) in a sub-make without RECIPE.
include $(sort $(filter-out $(if $(RECIPE),recipes/workflow.mk),$(wildcard recipes/*.mk)))
