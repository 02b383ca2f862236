# recipes/gpu.mk - the CUDA backend's check program and the DEVICE variable
# (issue 9). Included by the Makefile; everything here is inert without GPU=1.

# DEVICE=cpu|cuda picks the backend of every stage (lib/device.h): exported
# so that stages see it; it wins over the `<stage>.device` config keys.
ifdef DEVICE
export DEVICE
ifeq ($(DEVICE),cuda)
ifneq ($(GPU),1)
$(error DEVICE=cuda needs the CUDA backend: run make GPU=1 DEVICE=cuda (or DEVICE=cpu))
endif
else ifneq ($(DEVICE),cpu)
$(error DEVICE=$(DEVICE) is not one of cpu, cuda)
endif
endif

ifeq ($(GPU),1)
# build/gpu/gpu_check: every GPU op against the CPU, a t5-base step, timings.
# t5_dev.o is lib/t5.c's object with its op_* / ops_* calls and its allocator
# renamed to the shim in tools/gpu/t5_dev_shim.c (see tools/gpu/t5_dev.h). A
# new ops.h function called by t5.c shows up as an undefined dv_<name> at link
# time: add it to the shim. Direct BLAS (be_*) or allocation calls that the
# shim does not redirect stop the build here.
GPU_CHECK     := build/gpu/gpu_check
GPU_CHECK_OBJ := build/obj/gpu/gpu_check.o build/obj/gpu/t5_dev_shim.o build/gpu/t5_dev.o
GPU_SHIM_SYMS := mc_malloc_=dv_malloc_ mc_calloc_=dv_calloc_ free=dv_free memset=dv_memset \
                 memcpy=dv_memcpy __memset_chk=dv_memset_chk __memcpy_chk=dv_memcpy_chk

all: $(GPU_CHECK)

build/obj/gpu/%.o: tools/gpu/%.c $(FLAGS_FILE) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(MC_CFLAGS) -Itools/gpu -c $< -o $@

build/gpu/t5_dev.o: build/obj/lib/t5.o
	@mkdir -p $(@D)
	@syms="$$(nm -g --defined-only $< | awk '$$3 ~ /^t5_/ {printf " --redefine-sym %s=t5dev_%s", $$3, substr($$3, 4)}')"; \
	 syms="$$syms $$(nm -u $< | awk '$$2 ~ /^ops?_/ {printf " --redefine-sym %s=dv_%s", $$2, $$2}')"; \
	 for s in $(GPU_SHIM_SYMS); do syms="$$syms --redefine-sym $$s"; done; \
	 objcopy $$syms $< $@.tmp; \
	 left="$$(nm -u $@.tmp | awk '$$2 ~ /^(ops?_|be_|mc_malloc_|mc_calloc_|mc_realloc_|mc_strdup_|malloc|calloc|realloc|free|memset|memcpy|memmove|__mem)/ {print $$2}')"; \
	 if [ -n "$$left" ]; then echo "$@: lib/t5.c calls $$left, which tools/gpu/t5_dev_shim.c does not redirect; add it there and to GPU_SHIM_SYMS" >&2; rm -f $@.tmp; exit 1; fi; \
	 mv $@.tmp $@

$(GPU_CHECK): $(GPU_CHECK_OBJ) build/lib/libmats.a
	$(CC) $(CFLAGS) -o $@ $(GPU_CHECK_OBJ) build/lib/libmats.a $(LDLIBS)
endif

## gpu-check      build with GPU=1 and run scripts/gpu-check.sh (needs an NVIDIA GPU)
gpu-check:
	@$(MAKE) GPU=1 all
	@bash scripts/gpu-check.sh

.PHONY: gpu-check

ifeq ($(GPU),1)
# build/gpu/merge_gpu: stages/merge.c's object with its K-FAC operator on the
# GPU (tools/gpu/merge_dev_shim.c); gpu-check.sh compares it with build/bin/merge.
all: build/gpu/merge_gpu

build/gpu/merge_dev.o: build/obj/stages/merge.o
	@mkdir -p $(@D)
	objcopy --redefine-sym mrg_op_kfac=dv_mrg_op_kfac --redefine-sym mrg_kfac_free=dv_mrg_kfac_free $< $@

build/gpu/merge_gpu: build/gpu/merge_dev.o build/obj/gpu/merge_dev_shim.o build/lib/libmats.a
	$(CC) $(CFLAGS) -o $@ build/gpu/merge_dev.o build/obj/gpu/merge_dev_shim.o build/lib/libmats.a $(LDLIBS)
endif
