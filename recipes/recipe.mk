# recipes/recipe.mk - mergekit-style YAML recipes (docs/design.md: recipes,
# docs/recipes.md):
#
#   make merge RECIPE=recipe.yml OUT=DIR
#
# build/bin/recipe translates the recipe into an experiment on imported
# checkpoints (exp.source = hf) at $(MATS_CACHE)/recipes/NAME.conf; the
# workflow's `make merge` (a sub-make without RECIPE) imports what changed,
# runs the keyed stages with their cache and prints the table; the merged
# model then goes to DIR as transformers loads it (config.json,
# model.safetensors, spiece.model; an IA3 merge folded into the base).
# A model whose `data:` is `benchmark:TASK` reads the built-in benchmark's
# task: `make data-examples` builds its examples and `art export-jsonl`
# writes each split as JSON Lines beside the experiment (rewritten only when
# they change, so their keys stay). Its scratch files carry the make's
# process id (what is left of them goes when it ends): two makes of one
# recipe at once share none. The Makefile leaves recipes/workflow.mk
# out when RECIPE is set: this file's `merge` is the only one.

ifneq ($(RECIPE),)
RECIPE_CACHE := $(or $(MATS_CACHE),cache)
RECIPE_NAME  := recipe-$(basename $(notdir $(RECIPE)))
RECIPE_CONF  := $(RECIPE_CACHE)/recipes/$(RECIPE_NAME).conf
RECIPE_CWD   ?= $(CURDIR)
export RECIPE_CWD
$(foreach v,RECIPE OUT RECIPE_CACHE,$(if $(word 2,$($(v))),$(error $(v) '$($(v))' contains white space, which make cannot carry)))

## merge RECIPE=recipe.yml OUT=DIR  merge as a mergekit-style recipe says; DIR gets the merged checkpoint (docs/recipes.md)
merge: all
	@[ -n "$(OUT)" ] || { echo "make merge RECIPE=$(RECIPE): say where the merged checkpoint goes: OUT=DIR" >&2; exit 1; }
	@[ -f "$(RECIPE)" ] || { echo "make merge: RECIPE=$(RECIPE): no such file" >&2; exit 1; }
	@mkdir -p $(RECIPE_CACHE)/recipes
	@set -o pipefail; w=$(RECIPE_CACHE)/recipes/$(RECIPE_NAME); b=$(RECIPE_CACHE)/recipes/benchmark; \
	 trap 'rm -f $$w.*.$$$$ $$b/*.tmp.$$$$' EXIT; \
	 build/bin/recipe $(RECIPE) --experiment $$w.conf.tmp.$$$$ --out $(OUT) > $$w.vars.tmp.$$$$ || exit 1; \
	 cmp -s $$w.conf.tmp.$$$$ $(RECIPE_CONF) || mv $$w.conf.tmp.$$$$ $(RECIPE_CONF); \
	 . $$w.vars.tmp.$$$$; mv $$w.vars.tmp.$$$$ $$w.vars; \
	 if [ -n "$$RECIPE_BENCHMARK" ]; then \
	   mkdir -p $$b; \
	   $(MAKE) --no-print-directory data-examples RECIPE= OUT= MATS_CACHE=$(RECIPE_CACHE) > $$w.examples.$$$$ || exit 1; \
	   for t in $$RECIPE_BENCHMARK; do for s in train validation test; do \
	     ex=$$(sed -n "s/^examples $$t.$$s //p" $$w.examples.$$$$); j=$$b/$$t.$$s.jsonl; \
	     [ -n "$$ex" ] || { echo "make merge RECIPE=$(RECIPE): no examples for benchmark task $$t ($$s)" >&2; exit 1; }; \
	     build/bin/art export-jsonl $$ex -o $$j.tmp.$$$$ 2>/dev/null || exit 1; \
	     cmp -s $$j.tmp.$$$$ $$j || mv $$j.tmp.$$$$ $$j; \
	   done; done; mv $$w.examples.$$$$ $$w.examples; \
	 fi; \
	 $(MAKE) --no-print-directory merge RECIPE= OUT= EXP=$(RECIPE_CONF) METHOD=$$RECIPE_METHOD MODE=$$RECIPE_MODE \
	   $${RECIPE_LAMBDA:+LAMBDA=$$RECIPE_LAMBDA} MATS_CACHE=$(RECIPE_CACHE) | tee $$w.log.$$$$ || { mv $$w.log.$$$$ $$w.log; exit 1; }; \
	 merged=$$(sed -n 's/^merged artifacts: //p' $$w.log.$$$$); mv $$w.log.$$$$ $$w.log; \
	 [ -n "$$merged" ] && [ -f "$$merged" ] || { echo "make merge RECIPE=$(RECIPE): the workflow named no merged artifact ($$w.log)" >&2; exit 1; }; \
	 vocab=$(RECIPE_CACHE)/import/$(RECIPE_NAME)/vocab.msgpack; \
	 if [ "$$RECIPE_MODE" = ia3 ]; then \
	   build/bin/art export-hf $(RECIPE_CACHE)/import/$(RECIPE_NAME)/base.msgpack --ia3 $$merged --fold --vocab $$vocab --dtype $$RECIPE_DTYPE $(OUT); \
	 else build/bin/art export-hf $$merged --vocab $$vocab --dtype $$RECIPE_DTYPE $(OUT); fi

.PHONY: merge
endif
