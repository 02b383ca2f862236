#!/usr/bin/env bash
# train on 2 MPI ranks (a real mpirun, t5-micro): the artifact is byte for
# byte the one rank's with train.grad_accum micro-batches (seq2seq with
# ragged targets, validation, early stopping, clipping and the optimizer
# Fisher; 2 rounds per rank; span corruption); the weights are the same on
# every rank (MATS_CHECK_RANKS, which does catch a rank that differs); only
# rank 0 writes; a run killed after a checkpoint resumes on 2 ranks (and on
# 1) to the same bytes; bad set-ups are one-line errors; the workflow's
# exp.train.ranks keeps the keys and the bytes.
set -u
source "$(dirname "$0")/t5_data_env.sh" test_ranks
printf 'train.%s\n' "steps = 24" "batch_size = 8" "grad_accum = 2" "lr = 3e-3" "ckpt_every = 0" >> "$T/exp.conf"
if ! command -v mpirun >/dev/null; then echo "skip ranks: no mpirun (scripts/install-deps.sh installs openmpi-bin)"; exit 0; fi
if ! ldd build/bin/train | grep -q libmpi; then echo "skip ranks: build/bin/train was built with MPI=0"; exit 0; fi
# -q: no banners from mpirun, so a failing rank's one line is all stderr
# holds; --oversubscribe: 2 ranks on a machine with fewer cores
mpi() { local n=$1; shift; mpirun -q --oversubscribe --allow-run-as-root -n "$n" -x MATS_THREADS -x MATS_PROGRESS_SECONDS "$@"; }
export MATS_CHECK_RANKS=1
one_line() { [ "$(wc -l <"$1")" -eq 1 ]; }

# 1. the bytes of one rank accumulating: per case, 1 rank vs 2 ranks
same=0 cases=0
check_same() { # NAME ARGS...: 1 rank and 2 ranks give the same model (and Fisher when asked)
    local name=$1; shift
    cases=$((cases + 1))
    rm -f "$T"/r1* "$T"/r2*
    if build/bin/train --config "$T/exp.conf" "$@" -o "$T/r1.msgpack" --optimizer-fisher "$T/r1f.msgpack" 2>"$T/log1" &&
       mpi 2 build/bin/train --config "$T/exp.conf" "$@" -o "$T/r2.msgpack" --optimizer-fisher "$T/r2f.msgpack" 2>"$T/log2" &&
       cmp "$T/r1.msgpack" "$T/r2.msgpack" && cmp "$T/r1f.msgpack" "$T/r2f.msgpack" &&
       grep -q "2 ranks (MPI)" "$T/log2" && [ "$(grep -c 'wrote .*r2.msgpack' "$T/log2")" -eq 1 ]; then
        ok "ranks_same_bytes_as_accumulation ($name)"
        same=$((same + 1))
    else fail "ranks_same_bytes_as_accumulation ($name)" "$(tail -2 "$T/log1" "$T/log2" 2>/dev/null)"; fi
}
check_same "seq2seq, ragged targets, validation, clip" --data "$T/ragged.msgpack" --valid "$T/valid.msgpack" \
    --set train.eval_every=6 --set train.clip=0.5
check_same "4 micro-batches: 2 rounds per rank, early stop" --data "$T/train.msgpack" --valid "$T/valid.msgpack" \
    --set train.grad_accum=4 --set train.eval_every=4 --set train.patience=1 --set train.steps=200
check_same "span corruption" --objective span_corruption --set train.max_target_len=16 \
    --data "$T/corpus.msgpack"
# the sum is a real one: 2 ranks differ from 1 rank without accumulation
if build/bin/train --config "$T/exp.conf" --set train.grad_accum=1 --data "$T/ragged.msgpack" -o "$T/acc1.msgpack" 2>/dev/null &&
   mpi 2 build/bin/train --config "$T/exp.conf" --data "$T/ragged.msgpack" -o "$T/acc2.msgpack" 2>/dev/null &&
   build/bin/art diff "$T/acc1.msgpack" "$T/acc2.msgpack" --tol 1e-3 >/dev/null 2>&1 &&
   ! cmp -s "$T/acc1.msgpack" "$T/acc2.msgpack"; then
    ok ranks_sum_rounds_differently_from_one_pass
else fail ranks_sum_rounds_differently_from_one_pass "the 2-rank run should agree with one pass to 1e-3 but not bit for bit"; fi

# 2. only rank 0 writes: the output directory holds the artifact and nothing
# else (no second writer's temporary file, no checkpoint left)
mkdir -p "$T/only"
if mpi 2 build/bin/train --config "$T/exp.conf" --set train.ckpt_every=5 --data "$T/train.msgpack" \
       -o "$T/only/m.msgpack" 2>"$T/logo" &&
   [ "$(ls -A "$T/only")" = "m.msgpack" ] && [ "$(grep -c '^train: wrote' "$T/logo")" -eq 1 ]; then
    ok ranks_only_rank0_writes
else fail ranks_only_rank0_writes "$(ls -A "$T/only" | tr '\n' ' '); $(grep -c 'wrote' "$T/logo") wrote lines"; fi

# 3. the debug check catches a rank whose weights differ (one ulp of one
# weight on rank 1 after step 1): its one error line closes the log
if ! MATS_TEST_SKEW_RANK=1 mpi 2 -x MATS_TEST_SKEW_RANK build/bin/train --config "$T/exp.conf" \
       --data "$T/train.msgpack" -o "$T/skew.msgpack" 2>"$T/logs" >/dev/null &&
   [ "$(grep -c 'disagree' "$T/logs")" -eq 1 ] &&
   tail -1 "$T/logs" | grep -q "^train: ranks disagree: rank 1's weights after step 1 differ from rank 0's" &&
   [ ! -e "$T/skew.msgpack" ]; then
    ok ranks_check_catches_a_differing_rank
else fail ranks_check_catches_a_differing_rank "$(head -3 "$T/logs")"; fi

# 4. resume after a kill on 2 ranks: rank 0 SIGKILLs itself right after the
# checkpoint of step 10 (the test hook), mpirun stops rank 1; rerun on 2
# ranks, and once more on 1 rank: both give the uninterrupted run's bytes
ra=(--config "$T/exp.conf" --set train.steps=30 --set train.ckpt_every=5 --set train.schedule=cosine
    --set train.warmup_steps=6 --data "$T/train.msgpack" --valid "$T/valid.msgpack" --set train.eval_every=10)
build/bin/train "${ra[@]}" -o "$T/ref.msgpack" 2>/dev/null
for resume_on in 2 1; do
    rm -f "$T/k.msgpack" "$T/k.msgpack.ckpt"
    MATS_TEST_KILL_AFTER_CKPT=10 mpi 2 -x MATS_TEST_KILL_AFTER_CKPT build/bin/train "${ra[@]}" -o "$T/k.msgpack" \
        >/dev/null 2>&1
    rc=$?
    if [ "$resume_on" = 2 ]; then mpi 2 build/bin/train "${ra[@]}" -o "$T/k.msgpack" 2>"$T/logr"
    else build/bin/train "${ra[@]}" -o "$T/k.msgpack" 2>"$T/logr"; fi
    if [ $rc -ne 0 ] && grep -q "resuming .* from step 10$" "$T/logr" && [ ! -e "$T/k.msgpack.ckpt" ] &&
       cmp -s "$T/ref.msgpack" "$T/k.msgpack"; then
        ok "ranks_resume_after_kill_same_bytes (killed on 2 ranks, resumed on $resume_on)"
    else fail ranks_resume_after_kill_same_bytes "resumed on $resume_on; kill exit $rc; $(grep -E 'resuming|FAIL' "$T/logr")"; fi
done

# 4b. a stop signal to rank 0 alone stops every rank after the same step,
# with rank 0's checkpoint of it (no periodic ones); the rerun on 2 ranks
# resumes there
sa=(--config "$T/exp.conf" --set train.steps=300 --set train.ckpt_every=0 --data "$T/train.msgpack")
build/bin/train "${sa[@]}" -o "$T/sref.msgpack" 2>/dev/null
rm -f "$T/s.msgpack" "$T/s.msgpack.ckpt"
MATS_PROGRESS_SECONDS=0 timeout 300 mpirun -q --oversubscribe --allow-run-as-root -n 2 -x MATS_THREADS \
    -x MATS_PROGRESS_SECONDS build/bin/train "${sa[@]}" -o "$T/s.msgpack" 2>"$T/logs1" >/dev/null &
mp=$! # the ranks' parent's shell; rank 0 found by its environment
r0=
for _ in $(seq 500); do
    if [ -z "$r0" ]; then
        for p in $(pgrep -f -- "-o $T/s.msgpack"); do
            tr '\0' '\n' < /proc/$p/environ 2>/dev/null | grep -qx 'OMPI_COMM_WORLD_RANK=0' && r0=$p
        done
    fi
    [ -n "$r0" ] && grep -Eq '\] ([3-9]|[1-9][0-9]+)/300 steps' "$T/logs1" && break
    sleep 0.02
done
[ -n "$r0" ] && kill -TERM "$r0"
wait $mp
rc=$?
at=$(sed -n 's/.*stopped by signal [0-9]* ([^)]*) after step \([0-9]*\) of 300.*/\1/p' "$T/logs1")
timeout 300 mpirun -q --oversubscribe --allow-run-as-root -n 2 -x MATS_THREADS build/bin/train "${sa[@]}" \
    -o "$T/s.msgpack" 2>"$T/logs2"
if [ -n "$r0" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && [ -n "$at" ] && [ "$at" -lt 300 ] &&
   grep -q "resuming .* from step $at\$" "$T/logs2" && [ ! -e "$T/s.msgpack.ckpt" ] && cmp -s "$T/sref.msgpack" "$T/s.msgpack"; then
    ok "ranks_stop_signal_resumes (SIGTERM to rank 0 after step $at)"
else fail ranks_stop_signal_resumes "rank 0 pid '${r0}', exit $rc, stopped at '${at}'; $(grep -E 'stopped|resuming|rror' "$T/logs1" "$T/logs2" | head -4 | tr '\n' '|')"; fi

# 5. errors are one line, named, non-zero
if ! mpi 2 build/bin/train --config "$T/exp.conf" --set train.grad_accum=1 --data "$T/train.msgpack" \
       -o "$T/e1.msgpack" 2>"$T/loge" >/dev/null &&
   one_line "$T/loge" && grep -q "train.grad_accum = 1 is not a multiple of the 2 ranks" "$T/loge"; then
    ok ranks_accum_not_a_multiple_one_line
else fail ranks_accum_not_a_multiple_one_line "$(head -3 "$T/loge")"; fi
if ! mpi 2 build/bin/train --config "$T/exp.conf" --data "$T/missing.msgpack" -o "$T/e2.msgpack" 2>"$T/loge" >/dev/null &&
   one_line "$T/loge" && grep -q "missing.msgpack" "$T/loge"; then
    ok ranks_bad_input_one_line_from_rank0
else fail ranks_bad_input_one_line_from_rank0 "$(head -3 "$T/loge")"; fi
# a train without MPI: the same stage object linked with lib/comm.c compiled
# as MPI=0 builds it (with the build's compiler and flags: a sanitizer build,
# make SAN=1 test, links its runtime)
if ${CC:-cc} ${CFLAGS:-} -std=c11 -D_GNU_SOURCE -Ilib -c lib/comm.c -o "$T/comm0.o" 2>"$T/logc" &&
   ${CC:-cc} ${CFLAGS:-} -o "$T/train0" build/obj/stages/train.o "$T/comm0.o" build/lib/libmats.a \
      -lopenblas -lmsgpackc -lxxhash -lz -llzma -lm -lpthread 2>>"$T/logc" &&
   ! ldd "$T/train0" | grep -q libmpi &&
   "$T/train0" --config "$T/exp.conf" --data "$T/train.msgpack" -o "$T/e3a.msgpack" 2>/dev/null &&
   ! mpi 2 "$T/train0" --config "$T/exp.conf" --data "$T/train.msgpack" -o "$T/e3.msgpack" 2>"$T/loge" >/dev/null &&
   one_line "$T/loge" && grep -q "one of 2 ranks .* but this build has no MPI" "$T/loge" && [ ! -e "$T/e3.msgpack" ]; then
    ok ranks_without_mpi_one_line
else fail ranks_without_mpi_one_line "$(head -3 "$T/logc" "$T/loge")"; fi

# 6. the workflow: exp.train.ranks = 2 runs every train stage of `make
# pretrain` (span corruption, then the supervised base phase) under mpirun;
# RANKS=1 retrains them under the same keys (no key holds N) to the same bytes
printf '%s\n' "include $PWD/configs/experiments/smoke.conf" "train.grad_accum = 2" "exp.train.ranks = 2" > "$T/wf.conf"
wf() { : > "$T/ran"; MATS_RUN_LOG=$T/ran MATS_CACHE=$T/cache make --no-print-directory pretrain EXP="$T/wf.conf" "$@" > "$T/wfout" 2>&1; }
trained() { awk '$1 == "train" { print $3 }' "$T/ran" | sort | tr '\n' ' '; }
# ran_on_2 KEYS: each run's log says 2 ranks; set its artifact aside
ran_on_2() { local k; for k in $1; do grep -q "2 ranks (MPI)" "$T/cache/train/$k.log" && mv "$T/cache/train/$k.msgpack" "$T/aside/" || return 1; done; }
# same_as_aside KEYS: each run (on 1 rank) rebuilt the set-aside bytes
same_as_aside() { local k; for k in $1; do ! grep -q "ranks (MPI)" "$T/cache/train/$k.log" && cmp -s "$T/cache/train/$k.msgpack" "$T/aside/$k.msgpack" || return 1; done; }
mkdir -p "$T/aside"
if wf && k2=$(trained) && [ "$(wc -w <<<"$k2")" -eq 2 ] && ran_on_2 "$k2" &&
   wf RANKS=1 && [ "$(trained)" = "$k2" ] && same_as_aside "$k2" && wf && [ ! -s "$T/ran" ]; then
    ok "ranks_workflow_same_keys_and_bytes (2 train runs)"
else fail ranks_workflow_same_keys_and_bytes "trained: ${k2:-?} / $(trained); $(tail -3 "$T/wfout")"; fi
