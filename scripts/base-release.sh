#!/usr/bin/env bash
# base-release.sh - the released base model and vocabulary (release/).
#
#   scripts/base-release.sh check            the released files verify, and the
#                                            recipe recorded beside them is what
#                                            the repository's configs say now
#   scripts/base-release.sh compare          after `make pretrain EXP=$CONF`: the
#                                            rebuilt base and vocabulary against
#                                            the released ones (bytes, loss curve)
#   scripts/base-release.sh install          copy the rebuilt base and vocabulary
#                                            into release/ with their recipe
#   scripts/base-release.sh stage-data DIR VOCAB TOKENS-KEY
#                                            the recipe of the corpus tokens
#                                            TOKENS-KEY (made here, with VOCAB)
#                                            and the vocabulary into DIR
#   scripts/base-release.sh install-from DIR a base trained elsewhere on those
#                                            tokens (DIR/base.msgpack, .key,
#                                            .log) into release/ with DIR's recipe
#   scripts/base-release.sh run              the path of $CONF's base run in the
#                                            cache (stdout) and where it stands
#   scripts/base-release.sh carry-out [DIR]  a stopped, unfinished run of
#                                            $CONF's base: its checkpoint, key
#                                            text and log into DIR (default
#                                            release/carry), to commit
#   scripts/base-release.sh carry-in [DIR]   on another machine: DIR's checkpoint
#                                            into the cache, where `make
#                                            base-release` resumes it
#   scripts/base-release.sh heldout [FILE...] the span-corruption loss of models
#                                            or train checkpoints on held-out
#                                            text and on the corpus (default:
#                                            the released base and $CONF's run)
#   scripts/base-release.sh carry-auto [DIR] carry-in if DIR holds this run's
#                                            checkpoint (`make base-release`
#                                            runs it first)
#
# carry-out and carry-in take a long CPU run across machines that keep
# nothing but the repository (docs/base.md): the checkpoint is the train
# stage's own (weights, optimizer state, counters), so the resumed run writes
# the bytes of an unbroken one, provided the train binary is the same (its
# digest is in the run's key; carry-in names the commit to build).
# `install` removes release/carry once the run it carried is installed.
# The recipe is the chain prepare (corpus) -> vocab -> tokenize (corpus) ->
# train (span corruption): release/recipe/<part>.key holds the canonical key
# text of each run (stage, binary digest, every config value of its
# namespaces, the keys of its inputs), release/recipe/base.log the training
# log. `check` recomputes every key text from the configs in the repository
# with the recorded binary digests and input keys, and checks that the chain
# links up: corpus -> vocab -> corpus tokens -> base, ending in the keys the
# released artifacts carry. Environment: RELEASE (default release),
# CONF (default configs/experiments/base-release.conf), MATS_CACHE.
# With `exp.release_round = bf16` in CONF the released base is the recipe's
# base with every weight rounded to bfloat16 and stored as f32 (`art
# round-bf16`: the file compresses to about half in git), keyed by one more
# step of the chain, release/recipe/round.key (base -> rounded base).
set -euo pipefail
cd "$(dirname "$0")/.."
RELEASE=${RELEASE:-release}
CONF=${CONF:-configs/experiments/base-release.conf}
KEY=build/bin/key
ART=build/bin/art
die() { echo "base-release: $*" >&2; exit 1; }
# the temporary directory of this run (compare, install, heldout), removed on exit
TMPD=""
tmpdir() { [ -n "$TMPD" ] || { TMPD=$(mktemp -d) && trap 'rm -rf "$TMPD"' EXIT; }; }
[ -x $KEY ] && [ -x $ART ] || die "build the tools first: make"
[ -f "$CONF" ] || die "$CONF: no such recipe config"
PRE=$($KEY --config "$CONF" --get-path exp.pretrain)
[ -n "$PRE" ] || die "$CONF sets no exp.pretrain"

# The runs of the chain: part, stage, namespaces, sets, configs.
#   corpus  prepare   data      data.part=corpus
#   vocab   vocab     vocab
#   tokens  tokenize  tokenize
#   base    train     model,train  train.objective=span_corruption train.mode=full (+ exp.pretrain)
key_args() { # PART DIGEST INPUTS... -> the key tool's arguments
    local part=$1 digest=$2; shift 2
    local a=(--binary-digest "$digest" --config "$CONF")
    case $part in
    corpus) a=(--stage prepare "${a[@]}" --ns data --set data.part=corpus) ;;
    vocab) a=(--stage vocab "${a[@]}" --ns vocab) ;;
    tokens) a=(--stage tokenize "${a[@]}" --ns tokenize) ;;
    base) a=(--stage train "${a[@]}" --config "$PRE" --ns model,train --set train.objective=span_corruption --set train.mode=full) ;;
    round) a=(--stage round "${a[@]}" --ns round --set "round.dtype=$ROUND") ;;
    esac
    for i in "$@"; do a+=(--input "$i"); done
    printf '%s\n' "${a[@]}"
}
field() { awk -v f="$1" '$1 == "binary" && f == "binary" {print $2} $1 == "input" && $2 == f {print $3}' "$2"; }
PARTS="corpus vocab tokens base"
ROUND=$($KEY --config "$CONF" --get exp.release_round)
case "$ROUND" in "" | bf16) ;; *) die "$CONF: exp.release_round = $ROUND: give bf16, or nothing for the weights as trained" ;; esac
inputs_of() { # PART KEYTEXT -> ROLE=KEY lines, from the recorded text
    case $1 in
    corpus) ;;
    vocab) echo "corpus=$(field corpus "$2")" ;;
    tokens) echo "data=$(field data "$2")"; echo "vocab=$(field vocab "$2")" ;;
    base) echo "data=$(field data "$2")" ;;
    round) echo "model=$(field model "$2")" ;;
    esac
}

check() {
    local rec=$RELEASE/recipe bad=0 parts=$PARTS
    for f in base vocab; do
        $ART verify "$RELEASE/$f.msgpack" >/dev/null || die "$RELEASE/$f.msgpack does not verify: restore it with 'git checkout -- $RELEASE' or rebuild it with 'make base-release'"
    done
    if [ -n "$ROUND" ]; then
        [ -f "$rec/round.key" ] || die "$CONF rounds the released base (exp.release_round = $ROUND) but $rec/round.key is missing: install the base again (docs/base.md)"
        parts="$PARTS round"
    elif [ -f "$rec/round.key" ]; then
        die "$RELEASE/base.msgpack is rounded ($rec/round.key) but $CONF sets no exp.release_round: set it as the release was made, or install the base again"
    fi
    declare -A K
    for p in $parts; do
        [ -f "$rec/$p.key" ] || die "$rec/$p.key missing: the release has no recorded recipe for its $p"
        mapfile -t args < <(key_args $p "$(field binary "$rec/$p.key")" $(inputs_of $p "$rec/$p.key"))
        if ! diff -u "$rec/$p.key" <($KEY "${args[@]}" --text) > /tmp/base-release.$$.diff; then
            echo "base-release: the recorded recipe of the $p ($rec/$p.key) differs from what $CONF says now:" >&2
            grep '^[-+][a-z]' /tmp/base-release.$$.diff >&2 || true
            bad=1
        fi
        rm -f /tmp/base-release.$$.diff
        K[$p]=$(xxh128sum < "$rec/$p.key" | cut -d' ' -f1)
    done
    [ $bad = 0 ] || die "the recipe in $CONF no longer makes the released base: revert the config, or rebuild and install a new release (docs/base.md)"
    # the chain links up, and ends in the released artifacts' own keys
    [ "$(field corpus "$rec/vocab.key")" = "${K[corpus]}" ] || die "$rec/vocab.key: its corpus is not the recorded corpus"
    [ "$(field data "$rec/tokens.key")" = "${K[corpus]}" ] || die "$rec/tokens.key: its data is not the recorded corpus"
    [ "$(field vocab "$rec/tokens.key")" = "${K[vocab]}" ] || die "$rec/tokens.key: its vocabulary is not the recorded vocabulary"
    [ "$(field data "$rec/base.key")" = "${K[tokens]}" ] || die "$rec/base.key: its data is not the recorded corpus tokens"
    [ "$($ART key "$RELEASE/vocab.msgpack")" = "${K[vocab]}" ] || die "$RELEASE/vocab.msgpack was not made by $rec/vocab.key"
    local made=base from
    from=$(meta_of "$RELEASE/base.msgpack" rounded_from)
    if [ -n "$ROUND" ]; then
        [ "$(field model "$rec/round.key")" = "${K[base]}" ] || die "$rec/round.key: it rounds another base than $rec/base.key records"
        [ "$from" = "${K[base]}" ] || die "$RELEASE/base.msgpack is not the rounding of the base $rec/base.key records (its meta.rounded_from is '$from'): install the base again"
        made=round
    else
        [ -z "$from" ] || die "$RELEASE/base.msgpack is a rounded base (meta.rounded_from $from) but $CONF sets no exp.release_round: set it as the release was made, or install the base again"
    fi
    [ "$($ART key "$RELEASE/base.msgpack")" = "${K[$made]}" ] || die "$RELEASE/base.msgpack was not made by $rec/$made.key"
    echo "base-release: $RELEASE/base.msgpack (${K[$made]}${ROUND:+, the base ${K[base]} rounded to $ROUND}) and $RELEASE/vocab.msgpack (${K[vocab]}) verify; their recipe is $CONF + $PRE"
}

# Paths of the rebuilt artifacts (after `make pretrain EXP=$CONF`).
rebuilt() {
    NEW_BASE=$(make --no-print-directory -s pretrain EXP="$CONF" 2>/dev/null | sed -n 's/^pretrain: \([^ ]*\).*/\1/p')
    NEW_VOCAB=$(make --no-print-directory -s data-paths DATA_CONF="$CONF" 2>/dev/null | sed -n 's/^vocab //p')
    [ -n "$NEW_BASE" ] && [ -s "$NEW_BASE" ] || die "no rebuilt base: run 'make base-release' first"
    [ -n "$NEW_VOCAB" ] && [ -s "$NEW_VOCAB" ] || die "no rebuilt vocabulary: run 'make base-release' first"
}

# The key text of rounding the base MODEL, and the rounded model into OUT
# (exp.release_round; nothing to do without it).
round_text() { # MODEL
    local a
    mapfile -t a < <(key_args round "$($KEY --file $ART | cut -d' ' -f1)" "model=$($ART key "$1")")
    $KEY "${a[@]}" --text
}
round_to() { # MODEL KEYTEXT OUT: round MODEL under the key of KEYTEXT (round_text's)
    local err
    err=$($ART round-bf16 "$1" --key "$(xxh128sum < "$2" | cut -d' ' -f1)" -o "$3" 2>&1 >/dev/null) ||
        die "cannot round $1: $(tail -n 1 <<<"$err")"
}

# The loss curve of a training log: "STEP LOSS" per progress line.
curve() { sed -n 's/.* \([0-9][0-9]*\)\/[0-9]* steps .* loss \([0-9.]*\) .*/\1 \2/p' "$1"; }

compare() {
    rebuilt
    local new=$NEW_BASE
    echo "rebuilt base: $NEW_BASE"
    echo "released:     $RELEASE/base.msgpack"
    if [ -n "$ROUND" ]; then
        tmpdir
        new=$TMPD/rounded.msgpack
        round_text "$NEW_BASE" > "$TMPD/round.key"
        round_to "$NEW_BASE" "$TMPD/round.key" "$new"
        echo "(the rebuilt base rounded to $ROUND, as the release is: exp.release_round)"
    fi
    if $ART diff "$RELEASE/base.msgpack" "$new" --tol 0 >/dev/null 2>&1; then
        echo "weights: identical to the release (every tensor, bit for bit)"
    else
        echo "weights: differ from the release (largest differences per tensor):"
        $ART diff "$RELEASE/base.msgpack" "$new" 2>&1 | awk 'NF == 3 && $1 != "tensor"' | sort -k3 -g | tail -n 5 | sed 's/^/  /'
    fi
    if $ART diff "$RELEASE/vocab.msgpack" "$NEW_VOCAB" --tol 0 >/dev/null 2>&1; then
        echo "vocabulary: identical to the release"
    else
        echo "vocabulary: differs from the release (another spm_train?): the tokens, and so the base, differ too"
    fi
    echo "loss curve (training loss, running mean), released against rebuilt:"
    join -j1 <(curve "$RELEASE/recipe/base.log" | awk '{printf "%06d %s\n", int($1 / 500) * 500, $2}' | sort -u -k1,1) \
             <(curve "${NEW_BASE%.msgpack}.log" | awk '{printf "%06d %s\n", int($1 / 500) * 500, $2}' | sort -u -k1,1) |
        awk 'BEGIN { printf "  %6s  %8s  %8s\n", "step", "released", "rebuilt" } { printf "  %6d  %8s  %8s\n", $1, $2, $3 }'
}

# The recipe of the data a base was trained on, into DIR: the key texts of
# the corpus, the vocabulary and the corpus tokens (made by the binaries
# here now), and the vocabulary; the chain must end in the tokens' own key.
stage_data() { # DIR VOCAB TOKENS-KEY
    local dir=$1 vocab=$2 tk=$3 pk vk dp dt
    mkdir -p "$dir/recipe"
    pk=$($KEY --stage prepare --binary build/bin/prepare --config "$CONF" --ns data --set data.part=corpus)
    vk=$($ART key "$vocab")
    dp=$($KEY --file build/bin/prepare | cut -d' ' -f1)
    dt=$($KEY --file build/bin/tokenize | cut -d' ' -f1)
    mapfile -t a < <(key_args corpus "$dp"); $KEY "${a[@]}" --text > "$dir/recipe/corpus.key"
    mapfile -t a < <(key_args vocab "$dt" "corpus=$pk"); $KEY "${a[@]}" --text > "$dir/recipe/vocab.key"
    mapfile -t a < <(key_args tokens "$dt" "data=$pk" "vocab=$vk"); $KEY "${a[@]}" --text > "$dir/recipe/tokens.key"
    [ "$(xxh128sum < "$dir/recipe/tokens.key" | cut -d' ' -f1)" = "$tk" ] ||
        die "the corpus tokens $tk were not made by this build's prepare and tokenize from $CONF: make them again (make data DATA_CONF=$CONF)"
    cp "$vocab" "$dir/vocab.msgpack"
}

# DIR (base.msgpack, base.key, base.log, vocab.msgpack, recipe/{corpus,
# vocab,tokens}.key) into the release, then check it.
install_dir() {
    local dir=$1 rec=$RELEASE/recipe p
    for p in base.msgpack base.key base.log vocab.msgpack recipe/corpus.key recipe/vocab.key recipe/tokens.key; do
        [ -s "$dir/$p" ] || die "$dir/$p missing: not a base to install"
    done
    [ "$(field data "$dir/base.key")" = "$(xxh128sum < "$dir/recipe/tokens.key" | cut -d' ' -f1)" ] ||
        die "$dir/base.key: the base was trained on other corpus tokens than $dir/recipe/tokens.key records"
    mkdir -p "$rec"
    cp "$dir"/recipe/corpus.key "$dir"/recipe/vocab.key "$dir"/recipe/tokens.key "$rec/"
    cp "$dir/base.key" "$rec/base.key"
    cp "$dir/base.log" "$rec/base.log"
    local base=$dir/base.msgpack
    if [ -n "$ROUND" ]; then # rounded first: a failure leaves the release as it was
        tmpdir
        round_text "$base" > "$TMPD/round.key"
        round_to "$base" "$TMPD/round.key" "$TMPD/rounded.msgpack"
        cp "$TMPD/round.key" "$rec/round.key"
        base=$TMPD/rounded.msgpack
    else
        rm -f "$rec/round.key"
    fi
    cp "$base" "$RELEASE/base.msgpack.tmp" && mv "$RELEASE/base.msgpack.tmp" "$RELEASE/base.msgpack"
    cp "$dir/vocab.msgpack" "$RELEASE/vocab.msgpack.tmp" && mv "$RELEASE/vocab.msgpack.tmp" "$RELEASE/vocab.msgpack"
    check
}

install() {
    rebuilt
    local tk tmp
    tk=$(field data "${NEW_BASE%.msgpack}.key")
    [ -n "$tk" ] || die "${NEW_BASE%.msgpack}.key: no key text beside the rebuilt base"
    tmpdir
    tmp=$TMPD/install
    stage_data "$tmp" "$NEW_VOCAB" "$tk"
    cp "$NEW_BASE" "$tmp/base.msgpack"
    cp "${NEW_BASE%.msgpack}.key" "$tmp/base.key"
    cp "${NEW_BASE%.msgpack}.log" "$tmp/base.log"
    install_dir "$tmp"
}

# The recipe's base run in this tree: the artifact path the workflow gives
# its span-corruption run (this build's binaries, CONF, DEVICE and
# MATS_CPU_MATH as make sees them), built or not; nothing runs.
run_out() {
    local out
    out=$(make --no-print-directory WF=1 DATA_KEYS=1 DATA_CONF="$CONF" EXP="$CONF" MATS_CACHE="${MATS_CACHE:-cache}" \
        wf-pretrain-path 2>&1) || die "cannot tell the base's run: $(tail -n 1 <<<"$out")"
    case "$out" in */train/*.msgpack) ;; *) die "$CONF pretrains nothing here (its base is '$out'): carry and run need a recipe that trains one" ;; esac
    echo "$out"
}
recipe_steps() { $KEY --config "$CONF" --config "$PRE" --get train.steps; }
meta_of() { $ART show "$1" 2>/dev/null | sed -n "s/^ *\"$2\": \"*\([^\",]*\)\"*,*\$/\1/p" | head -n 1; }
CARRY=$RELEASE/carry
# the cache's lock of a run (scripts/run-stage.sh): held here while a carry
# copies, so that no make trains it meanwhile
lock_run() { # OUT
    exec 9>"$1.lock" || die "cannot open $1.lock"
    flock -n 9 || die "the run is training ($1.lock is held by its make): stop it first with SIGTERM to its train process, which checkpoints the step in progress"
    [ "$(stat -c %d:%i "$1.lock" 2>/dev/null)" = "$(stat -L -c %d:%i /proc/$$/fd/9 2>/dev/null)" ] ||
        die "$1.lock was replaced while it was taken (a make starting the run?): try again"
}
# cp SRC DST through DST.tmp.<pid> (ignored by git, swept by cache-gc)
copy_in() { { cp "$1" "$2.tmp.$$" && mv "$2.tmp.$$" "$2"; } || { rm -f "$2.tmp.$$"; die "cannot copy $1 to $2 (disk full?)"; }; }

carry_out() {
    local dir=${1:-$CARRY} out ck step steps c others= rev
    out=$(run_out); ck=$out.ckpt
    [ -s "$out" ] && die "$out is built: the run is done, install it (make base-release-install) instead"
    if [ ! -s "$ck" ]; then
        for c in "$(dirname "$out")"/*.msgpack.ckpt; do
            [ -e "$c" ] && others+=" $c (step $(meta_of "$c" step))"
        done
        [ -n "$others" ] && die "$ck: no checkpoint of this run (this build's train binary and $CONF), but the cache holds$others: runs of another build or recipe; carry them from the tree that started them"
        die "$ck: no checkpoint of this run to carry (stop a running one with SIGTERM to its train process: it checkpoints the step in progress)"
    fi
    lock_run "$out"
    $ART verify "$ck" >/dev/null || die "$ck does not verify: rerun 'make base-release' to go on from the checkpoint before it"
    [ "$(meta_of "$ck" run)" = "$(basename "$out" .msgpack)" ] || die "$ck belongs to another run"
    step=$(meta_of "$ck" step)
    steps=$(recipe_steps)
    rev=$(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
    case "$rev" in *-dirty) echo "base-release: warning: the tree has uncommitted changes; the commit recorded ($rev) builds this train binary only if they leave its sources alone" >&2 ;; esac
    mkdir -p "$dir" || die "cannot make $dir"
    copy_in "$ck" "$dir/base.ckpt"
    [ -s "$out.keytext" ] && copy_in "$out.keytext" "$dir/base.keytext"
    [ -s "$out.keytext" ] || rm -f "$dir/base.keytext"
    { if [ -e "${out%.msgpack}.log.before" ]; then cat "${out%.msgpack}.log.before"; fi
      if [ -e "${out%.msgpack}.log" ]; then cat "${out%.msgpack}.log"; fi; } > "$dir/base.log.tmp.$$" &&
        mv "$dir/base.log.tmp.$$" "$dir/base.log" || die "cannot write $dir/base.log"
    echo "$rev" > "$dir/commit" || die "cannot write $dir/commit"
    echo "base-release: carried step $step of $steps of run $(basename "$out" .msgpack) into $dir ($(du -h "$dir/base.ckpt" | cut -f1), the train binary of commit $rev). Commit $dir; on the next machine, in a checkout of that commit: make base-release-carry-in, then make base-release"
}

carry_in() {
    local dir=${1:-$CARRY} out ck run want have d c tk
    [ -s "$dir/base.ckpt" ] || die "$dir/base.ckpt: no carried checkpoint (scripts/base-release.sh carry-out makes one)"
    $ART verify "$dir/base.ckpt" >/dev/null || die "$dir/base.ckpt does not verify: restore it with 'git checkout -- $dir'"
    out=$(run_out); ck=$out.ckpt
    run=$(meta_of "$dir/base.ckpt" run); want=$(basename "$out" .msgpack)
    if [ "$run" != "$want" ]; then
        d=$($KEY --file build/bin/train | cut -d' ' -f1)
        have=$(field binary "$dir/base.keytext" 2>/dev/null || true)
        c=$(git log -1 --format=%h -- "$dir" 2>/dev/null || true)
        if [ -n "$have" ] && [ "$have" != "$d" ]; then
            die "$dir/base.ckpt is of run $run, started by a train binary of digest $have; this build's is $d (run $want): build the sources it came from, commit $(cat "$dir/commit" 2>/dev/null || echo '(unrecorded)')${c:+ (or $c, which committed $dir)}, with this compiler: git worktree add ../base ${c:-COMMIT} && cd ../base && make base-release-carry-in"
        fi
        tk=$(make --no-print-directory -s data-paths DATA_CONF="$CONF" MATS_CACHE="${MATS_CACHE:-cache}" 2>/dev/null | awk '$1 == "corpus" {print $2}' || true)
        mapfile -t a < <(key_args base "$d" "data=$(basename "$tk" .msgpack)")
        c=$(diff <(cat "$dir/base.keytext" 2>/dev/null) <($KEY "${a[@]}" --text 2>/dev/null) | sed -n 's/^[<>] //p' | head -n 4 | tr '\n' ';' || true)
        die "$dir/base.ckpt is of run $run; $CONF makes run $want here, so the recipe or its data changed since${c:+ (carried against now: $c)}"
    fi
    [ -s "$out" ] && die "$out is already built: nothing to resume"
    mkdir -p "$(dirname "$out")" || die "cannot make $(dirname "$out")"
    lock_run "$out"
    if [ -s "$ck" ] && $ART verify "$ck" >/dev/null 2>&1 && [ "$(meta_of "$ck" step)" -ge "$(meta_of "$dir/base.ckpt" step)" ]; then
        echo "base-release: $ck is at step $(meta_of "$ck" step), not behind the carried step $(meta_of "$dir/base.ckpt" step): kept"
        return 0
    fi
    copy_in "$dir/base.ckpt" "$ck"
    rm -f "${out%.msgpack}.log.before"
    if [ -s "$dir/base.log" ]; then copy_in "$dir/base.log" "${out%.msgpack}.log"; fi
    echo "base-release: $ck holds step $(meta_of "$ck" step) of run $want: 'make base-release' resumes it"
}

# Before `make base-release`: a carried checkpoint of this very run goes into
# the cache (carry_in); one of another run is named and left alone.
carry_auto() {
    local dir=${1:-$CARRY} out run
    [ -s "$dir/base.ckpt" ] || return 0
    out=$(run_out); run=$(meta_of "$dir/base.ckpt" run)
    [ -s "$out" ] && return 0
    if [ "$run" = "$(basename "$out" .msgpack)" ]; then carry_in "$dir"
    else echo "base-release: $dir holds a checkpoint of run ${run:-(unreadable)}, not of this recipe's run $(basename "$out" .msgpack): left alone (make base-release-carry-in says why)"; fi
}

# After an install: the carried run (release/carry) is done when the
# installed base is its artifact.
carry_done() {
    [ -s "$CARRY/base.ckpt" ] || return 0
    if [ -f "$RELEASE/recipe/base.key" ] &&
        [ "$(meta_of "$CARRY/base.ckpt" run)" = "$(xxh128sum < "$RELEASE/recipe/base.key" | cut -d' ' -f1)" ]; then
        rm -rf "$CARRY"
        echo "base-release: $CARRY removed (its run is the installed base)"
    fi
}

# The span-corruption loss of each FILE (a model, or a train checkpoint of a
# run in progress, read as a model shaped like $RELEASE/base.msgpack) on
# held-out text, the inputs of every task's validation split (no corpus line
# contains them), and on the corpus the base was trained on. Where the
# corpus loss falls and the held-out loss does not, the base is learning its
# corpus rather than English (docs/base.md). Each is train's validation
# after one step at lr 0 (the weights stay as they are): 1,024 chunks in a
# fixed order with fixed noise, float32 products.
heldout() {
    if [ $# -eq 0 ]; then # the released base, and this recipe's run as far as it got
        local run
        run=$(run_out)
        set -- "$RELEASE/base.msgpack"
        if [ -s "$run" ]; then set -- "$@" "$run"; elif [ -s "$run.ckpt" ]; then set -- "$@" "$run.ckpt"; fi
    fi
    local data corpus held f m step h c vk tv out
    for f in "$@"; do [ -f "$f" ] || die "$f: no such file: give models or train checkpoints"; done
    data=$(make --no-print-directory WF=1 DATA_CONF="$CONF" EXP="$CONF" MATS_CACHE="${MATS_CACHE:-cache}" \
        wf-heldout-data 2>&1) || die "cannot build the held-out data: $(tail -n 1 <<<"$data")"
    corpus=$(sed -n 's/^corpus //p' <<<"$data")
    held=$(sed -n 's/^heldout //p' <<<"$data")
    [ -n "$corpus" ] && [ -n "$held" ] || die "$CONF names no corpus or validation tokens (wf-heldout-data): check its data config"
    # the models read the release's token ids: the data must be tokenized by its vocabulary
    vk=$($ART key "$RELEASE/vocab.msgpack") tv=$(meta_of "$corpus" vocab)
    [ "$tv" = "$vk" ] || die "$CONF's tokens are of vocabulary '$tv', not the release's ($vk): measure with the recipe that made the release"
    tmpdir
    # LOSS = the loss of MODEL (FILE's) on VALID
    loss() { # MODEL VALID FILE
        local out
        out=$(build/bin/train --config "$CONF" --config "$PRE" --objective span_corruption --mode full \
            --set train.steps=1 --set train.lr=0 --set train.eval_every=1 --set train.valid_examples=1024 \
            --set train.ckpt_every=0 --set train.batch_size=32 --set train.grad_accum=1 --set train.cpu_math=fp32 \
            --init "$1" --data "$corpus" --valid "$2" -o "$TMPD/out.msgpack" 2>&1) ||
            die "$3: train could not measure it: $(tail -n 1 <<<"$out")"
        LOSS=$(sed -n 's/.*validation -loss -\([0-9.]*\) .*/\1/p' <<<"$out" | head -n 1)
        [ -n "$LOSS" ] || die "$3: no validation loss in train's output (a NaN?): $(grep -m1 'validation' <<<"$out")"
    }
    printf '%-40s %7s %9s %9s %7s\n' file step held-out corpus gap
    for f in "$@"; do
        m=$f
        if [ "$($ART show "$f" 2>/dev/null | sed -n 's/^kind *//p')" = train_checkpoint ]; then
            m=$TMPD/model.msgpack
            out=$($ART from-checkpoint "$f" --like "$RELEASE/base.msgpack" -o "$m" 2>&1) ||
                die "$f: $(tail -n 1 <<<"$out" | sed 's/^art: //') (heldout reads a checkpoint as a model shaped like $RELEASE/base.msgpack)"
        fi
        step=$(meta_of "$m" step) # (the checkpoint's own, as read: a running run writes new ones)
        loss "$m" "$held" "$f"; h=$LOSS
        loss "$m" "$corpus" "$f"; c=$LOSS
        printf '%-40s %7s %9s %9s %7s\n' "$f" "${step:--}" "$h" "$c" "$(awk -v h="$h" -v c="$c" 'BEGIN {printf "%.4f", h - c}')"
        rm -f "$TMPD/model.msgpack" "$TMPD/out.msgpack"
    done
}

case "${1:-}" in
check) check ;;
compare) compare ;;
install) install; carry_done ;;
run) out=$(run_out); echo "$out"
    if [ -s "$out" ]; then echo "base-release: built" >&2
    elif [ -s "$out.ckpt" ]; then echo "base-release: checkpoint of step $(meta_of "$out.ckpt" step) of $(recipe_steps)" >&2
    else echo "base-release: not started" >&2; fi ;;
carry-out) [ $# -le 2 ] || die "carry-out [DIR]"; carry_out "${2:-}" ;;
carry-in) [ $# -le 2 ] || die "carry-in [DIR]"; carry_in "${2:-}" ;;
carry-auto) [ $# -le 2 ] || die "carry-auto [DIR]"; carry_auto "${2:-}" ;;
heldout) shift; heldout "$@" ;;
stage-data) [ $# -eq 4 ] || die "stage-data DIR VOCAB.msgpack TOKENS-KEY"; stage_data "$2" "$3" "$4" ;;
install-from) [ $# -eq 2 ] || die "install-from DIR"; install_dir "$2" ;;
*) echo "usage: scripts/base-release.sh check|compare|install|stage-data DIR VOCAB TOKENS-KEY|install-from DIR|run|carry-out [DIR]|carry-in [DIR]|carry-auto [DIR]|heldout [FILE...]" >&2; exit 2 ;;
esac
