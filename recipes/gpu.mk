# recipes/gpu.mk - the CUDA backend's check program and the DEVICE variable
# Included by the Makefile; everything here is inert without GPU=1.

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
# build/gpu/gpu_check: every GPU op against the CPU, a t5-base step of
# lib/t5.c moved to the device (t5_to_device), timings.
GPU_CHECK     := build/gpu/gpu_check
GPU_CHECK_OBJ := build/obj/gpu/gpu_check.o

all: $(GPU_CHECK)

build/obj/gpu/%.o: tools/gpu/%.c $(FLAGS_FILE) | $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(MC_CFLAGS) -Itools/gpu -c $< -o $@

$(GPU_CHECK): $(GPU_CHECK_OBJ) build/lib/libmats.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $(GPU_CHECK_OBJ) build/lib/libmats.a $(LDLIBS)
endif

## gpu-check      build with GPU=1 and run scripts/gpu-check.sh (needs an NVIDIA GPU)
gpu-check:
	@$(MAKE) GPU=1 all
	@bash scripts/gpu-check.sh

.PHONY: gpu-check
