# recipes/slots.mk - the keyed runs of the workflow (recipes/workflow.mk) and
# of the data (recipes/data.mk): a run is a slot, its inputs are edges, and
# every key is computed before anything runs. Definitions only: nothing here
# runs until a recipe declares slots (recipes/data.mk includes this file
# first, so that its keys use it too).
ifndef SLOTS_MK
SLOTS_MK := 1
define nl


endef
comma := ,
commas = $(subst $(eval) ,$(comma),$(strip $(1)))

# $(call key_args,STAGE,CONFIG_FILES,NAMESPACES,SETS,INPUTS(role=key))
# Runs on the GPU (DEVICE=cuda, exported to the stages by recipes/gpu.mk) are
# keyed apart from CPU runs: <stage>.device=cuda (and the product precision
# when MATS_GPU_MATH is set) enter the keys of the stages that run on it.
# On the CPU, MATS_CPU_MATH (bf16: AMX products) enters the keys of the
# stages that read it (as <stage>.cpu_math in the experiment would).
GPU_STAGES := train eval fisher gram merge
CPU_MATH_STAGES := train eval fisher gram
device_sets = $(if $(and $(filter cuda,$(DEVICE)),$(filter $(1),$(GPU_STAGES))),--set $(1).device=cuda $(if $(MATS_GPU_MATH),--set $(1).gpu_math=$(MATS_GPU_MATH)),$(if $(and $(filter-out fp32,$(MATS_CPU_MATH)),$(filter $(1),$(CPU_MATH_STAGES))),--set $(1).cpu_math=$(MATS_CPU_MATH)))
key_args = --stage $(1) --binary-digest $(BIN_$(1)) $(foreach c,$(2),--config $(c)) --ns $(3) $(foreach s,$(4),--set $(s)) $(call device_sets,$(1)) $(foreach i,$(5),--input $(i))

# $(call slot,SLOT,STAGE,CONFIG_FILES,NAMESPACES,SETS,EDGES,COMMAND[,AFTER])
# declares a run; $(resolve) then computes the keys of every declared run
# with one `key --batch` process (a process per key made a no-op make slow)
# and defines their rules: A_SLOT = $(CACHE)/STAGE/KEY.msgpack, built by
# COMMAND --key KEY -o A_SLOT. EDGES are the run's inputs, one role=slot word
# each, and say each once: role=<the slot's key> enters the key, the slot is
# a prerequisite, and in COMMAND the word {role} is the slot's artifact and
# {group.*} the artifacts of the roles group.<anything>, in order, joined by
# commas.
# AFTER: slots that run first without being inputs (a reduce's shards).
# LAUNCH_STAGE, when set, starts the command of every run of STAGE (mpirun).
# Inputs must be resolved before a slot that uses their keys is declared,
# hence one resolve per level of the graph.
# (role=slot read as the path role/slot: dir is the role, notdir the slot)
edge_slots = $(notdir $(subst =,/,$(1)))
edge_keys = $(join $(subst /,=,$(dir $(subst =,/,$(1)))),$(foreach s,$(call edge_slots,$(1)),$(K_$(s))))
edge_paths = $(foreach s,$(call edge_slots,$(1)),$(A_$(s)))
# $(call edge_arg,EDGES,WORD): a word of a command, or the path(s) it names
edge_arg = $(or $(if $(filter {%.*},$(2)),$(call commas,$(call edge_paths,$(filter $(patsubst {%.*},%,$(2)).%,$(1)))),$(if $(filter {%},$(2)),$(call edge_paths,$(filter $(patsubst {%},%,$(2))=%,$(1))))),$(2))
edge_fill = $(foreach w,$(2),$(if $(findstring {,$(w)),$(call edge_arg,$(1),$(w)),$(w)))
define slot_decl
KA_$(1) := $(call key_args,$(2),$(3),$(4),$(5),$(call edge_keys,$(6)))
STAGE_$(1) := $(2)
PRE_$(1) := $(call edge_slots,$(6)) $(8)
CMD_$(1) := $(LAUNCH_$(2)) $(call edge_fill,$(6),$(7))
$$(if $$(filter {%},$$(CMD_$(1))),$$(error slot $(1): $$(filter {%},$$(CMD_$(1))) in its command is none of its edges: $(strip $(6))))
RULE_$(1) :=
PENDING += $(1)
endef
slot = $(eval $(call slot_decl,$(1),$(2),$(3),$(4),$(5),$(6),$(7),$(8)))
# $(call known,SLOT,KEY,ARTIFACT): a slot made outside the workflow (the
# release, an import), for edges to name
known = $(eval K_$(1) := $(2))$(eval A_$(1) := $(3))

define slot_rule
A_$(1) := $(CACHE)/$(STAGE_$(1))/$(K_$(1)).msgpack
SLOTS += $(1)
$(CACHE)/$(STAGE_$(1))/$(K_$(1)).msgpack: | $(foreach p,$(PRE_$(1)),$$(A_$(p)))
	@mkdir -p $$(@D)
	@build/bin/key $$(KA_$(1)) --text > $$@.keytext
	@scripts/run-stage.sh $(1) $$@ $$@.keytext -- $$(CMD_$(1)) --key $(K_$(1)) -o $$@
	@rm -f $$@.keytext
endef
# The jobs go through a file: a level can be larger than one command line.
# (made when first needed; $(slots_end) removes it)
KEY_BATCH = $(or $(KEY_BATCH_FILE),$(eval KEY_BATCH_FILE := $(shell mktemp /tmp/mats-keys.XXXXXX))$(KEY_BATCH_FILE))
slots_end = $(if $(KEY_BATCH_FILE),$(shell rm -f $(KEY_BATCH_FILE))$(eval KEY_BATCH_FILE :=))
define resolve_body
RESOLVED := $(shell build/bin/key --batch-file $(KEY_BATCH))
$$(if $$(filter $$(words $$(RESOLVED)),$(words $(PENDING))),,$$(error computing the keys of $(PENDING) failed))
endef
# A slot with RULE_<slot> set gets that template's rule instead of slot_rule's.
resolve = $(if $(PENDING),$(file >$(KEY_BATCH),$(foreach s,$(PENDING),$(KA_$(s))$(nl)))$(eval $(resolve_body))$(foreach s,$(PENDING),$(eval K_$(s) := $(firstword $(RESOLVED)))$(eval RESOLVED := $(wordlist 2,$(words $(RESOLVED)),$(RESOLVED)))$(eval $(call $(or $(RULE_$(s)),slot_rule),$(s))))$(eval PENDING :=))
endif
