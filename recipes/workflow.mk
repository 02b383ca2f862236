# recipes/workflow.mk - the everyday entry points (issue 7 fills these in).
METHOD ?= ties
EXP ?= default

## merge          merge the task models with METHOD=<method> and evaluate (EXP=default|smoke)
merge: | $(DEPS_STAMP)
	@bash scripts/install-deps.sh --data
	@missing=""; for s in prepare tokenize train eval merge; do [ -x build/bin/$$s ] || missing="$$missing $$s"; done; \
	 if [ -n "$$missing" ]; then echo "make merge: not built yet: the stages$$missing do not exist in this version (dependencies are installed)"; exit 1; fi

.PHONY: merge
