#!/usr/bin/env bash
# Core leases (lib/lease.h): a stage on one thread borrows the cores no other
# stage holds and hands them back when one starts and needs a core, with the
# same bytes; a killed stage leaves no lease held; a lease directory it
# cannot use costs a warning, not the run.
set -u
source "$(dirname "$0")/t5_data_env.sh" test_leases "train.batch_size = 16" "train.lr = 3e-3" "train.ckpt_every = 0"
C=$(nproc)
L=$T/leases
tr_run() { # STEPS OUT [ENV...]: train t5-micro on one thread
    local steps=$1 out=$2; shift 2
    env MATS_THREADS=1 "$@" build/bin/train --config "$T/exp.conf" --set train.steps="$steps" \
        --data "$T/train.msgpack" -o "$out"
}
# every core file of $L locked by someone (a non-blocking try fails on each)
all_held() {
    local i
    for ((i = 0; i < C; i++)); do flock -n -x "$L/core-$i" true 2>/dev/null && return 1; done
    return 0
}
none_held() {
    local i
    for ((i = 0; i < C; i++)); do flock -n -x "$L/core-$i" true 2>/dev/null || return 1; done
    return 0
}
wait_for() { # SECONDS COMMAND...: poll every 50 ms
    local n=$(($1 * 20)); shift
    while ((n-- > 0)); do "$@" && return 0; sleep 0.05; done
    return 1
}

if [ "$C" -lt 2 ]; then
    echo "skip leases: one core, nothing to lend"
    exit 0
fi

# 1. alone, a one-thread stage borrows the idle cores: same bytes (a run
# long enough to be lent them for a second, which its closing line needs)
tr_run 2500 "$T/ref.msgpack" 2>/dev/null || fail lease_reference "train failed"
if tr_run 2500 "$T/lent.msgpack" MATS_LEASE_DIR="$L" 2>"$T/err1" &&
   grep -qE "^leases: $((C - 1)) idle cores? lent to this run for [0-9.]+ of its [0-9.]+ s, handed back 0 times" "$T/err1" &&
   cmp -s "$T/ref.msgpack" "$T/lent.msgpack"; then
    ok "lease_borrows_idle_cores_same_bytes ($(grep -o 'for [0-9.]* of its [0-9.]* s' "$T/err1"))"
else fail lease_borrows_idle_cores_same_bytes "$(tail -2 "$T/err1" | tr '\n' '|')"; fi

# 2. a stage that starts while another borrows gets its core back from it;
# both keep their bytes
tr_run 300 "$T/refb.msgpack" 2>/dev/null
tr_run 5000 "$T/a.msgpack" MATS_LEASE_DIR="$L" 2>"$T/erra" & pa=$!
if wait_for 10 all_held; then
    tr_run 300 "$T/b.msgpack" MATS_LEASE_DIR="$L" 2>"$T/errb"; rb=$?
    alive=0; kill -0 $pa 2>/dev/null && alive=1
    wait $pa; ra=$?
    tr_run 5000 "$T/refa.msgpack" 2>/dev/null
    if [ $ra -eq 0 ] && [ $rb -eq 0 ] && [ $alive -eq 1 ] &&
       grep -qE '^leases: .* handed back [1-9][0-9]* times?' "$T/erra" &&
       cmp -s "$T/a.msgpack" "$T/refa.msgpack" && cmp -s "$T/b.msgpack" "$T/refb.msgpack"; then
        ok "lease_handed_back_to_a_new_stage ($(grep -o 'lent to this run.*times\?' "$T/erra"))"
    else fail lease_handed_back_to_a_new_stage "rc $ra/$rb, borrower still running at the end: $alive; $(grep leases "$T/erra" "$T/errb" | tr '\n' '|')"; fi
else
    pkill -P $pa; wait $pa
    fail lease_handed_back_to_a_new_stage "the first stage never held every core"
fi

# 3. a stage killed while it borrows holds nothing afterwards
MATS_THREADS=1 MATS_LEASE_DIR="$L" build/bin/train --config "$T/exp.conf" --set train.steps=100000 \
    --data "$T/train.msgpack" -o "$T/k.msgpack" 2>/dev/null & pk=$!
if wait_for 10 all_held; then
    kill -9 $pk; wait $pk 2>/dev/null
    if wait_for 5 none_held; then ok lease_killed_stage_holds_nothing
    else fail lease_killed_stage_holds_nothing "core files still locked"; fi
else kill -9 $pk; wait $pk 2>/dev/null; fail lease_killed_stage_holds_nothing "it never held every core"; fi

# 4. a stage given every core leases nothing; an unusable lease directory
# is a warning and the run goes on, with the same bytes
if MATS_THREADS=$C MATS_LEASE_DIR="$T/none" build/bin/train --config "$T/exp.conf" --set train.steps=300 \
     --data "$T/train.msgpack" -o "$T/all.msgpack" 2>"$T/err4" && [ ! -e "$T/none" ] && ! grep -q '^leases' "$T/err4" &&
   cmp -s "$T/all.msgpack" "$T/refb.msgpack"; then
    ok lease_none_for_a_stage_on_every_core
else fail lease_none_for_a_stage_on_every_core "$(grep leases "$T/err4")"; fi
: > "$T/afile"
if tr_run 300 "$T/w.msgpack" MATS_LEASE_DIR="$T/afile/leases" 2>"$T/err5" &&
   grep -q "^leases: cannot make $T/afile/leases (Not a directory): running on 1 thread, lending nothing$" "$T/err5" &&
   cmp -s "$T/w.msgpack" "$T/refb.msgpack"; then
    ok lease_unusable_directory_warns
else fail lease_unusable_directory_warns "$(grep -c . "$T/err5") lines: $(grep leases "$T/err5")"; fi
