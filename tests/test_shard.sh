#!/usr/bin/env bash
# Sharded statistics (lib/shard.h): fisher and gram with --shard I/N and
# --reduce give the unsharded statistic to float32 rounding, in bytes that
# depend on N alone; wrong shards fail with one line. t5-micro, synthetic
# tokens.
set -u
source "$(dirname "$0")/t5_data_env.sh" test_shard "train.steps = 20" "train.batch_size = 8" "train.lr = 3e-3" \
    "fisher.batch_size = 4" "gram.batch_size = 4"
C=(--config "$T/exp.conf")
if ! build/bin/train "${C[@]}" --data "$T/train.msgpack" -o "$T/m.msgpack" 2>"$T/log" ||
   ! build/bin/train "${C[@]}" --mode ia3 --init "$T/m.msgpack" --data "$T/train.msgpack" -o "$T/a.msgpack" 2>>"$T/log"; then
    fail shard_setup "training the test models failed"; cat "$T/log"; exit 1
fi
D=(--data "$T/train.msgpack" --examples 37)

# stat NAME STAGE ARGS...: unsharded, then 3 shards (the last first: order
# of the runs does not matter) reduced, twice from separately computed shards
stat() {
    local name=$1 stage=$2; shift 2
    build/bin/$stage "$@" "${C[@]}" -o "$T/$name.full.msgpack" 2>"$T/$name.log" || { fail "${name}_sharded" "unsharded run failed"; cat "$T/$name.log"; return; }
    for i in 3 1 2; do
        build/bin/$stage "$@" "${C[@]}" --shard $i/3 -o "$T/$name.s$i.msgpack" 2>>"$T/$name.log" || { fail "${name}_sharded" "shard $i/3 failed"; cat "$T/$name.log"; return; }
    done
    build/bin/$stage --reduce "$T/$name.s1.msgpack,$T/$name.s2.msgpack,$T/$name.s3.msgpack" -o "$T/$name.red.msgpack" 2>>"$T/$name.log" &&
    build/bin/$stage --reduce "$T/$name.s1.msgpack" --reduce "$T/$name.s2.msgpack,$T/$name.s3.msgpack" -o "$T/$name.red2.msgpack" 2>>"$T/$name.log" ||
        { fail "${name}_sharded" "reduce failed"; cat "$T/$name.log"; return; }
    local kind
    kind=$(build/bin/art show "$T/$name.red.msgpack" | awk '$1 == "kind" { print $2 }')
    if [ "$kind" = "$(build/bin/art show "$T/$name.full.msgpack" | awk '$1 == "kind" { print $2 }')" ] &&
       build/bin/art diff "$T/$name.red.msgpack" "$T/$name.full.msgpack" --tol 2e-6 > "$T/$name.diff" 2>&1; then
        ok "${name}_sharded_equals_unsharded"
    else fail "${name}_sharded_equals_unsharded" "kind '$kind'"; cat "$T/$name.diff"; fi
    if cmp -s "$T/$name.red.msgpack" "$T/$name.red2.msgpack"; then ok "${name}_reduce_bytes_fixed"
    else fail "${name}_reduce_bytes_fixed" "two reduces of the same shards differ"; fi
}
stat gram gram --model "$T/m.msgpack" "${D[@]}"
stat fdiag fisher --model "$T/m.msgpack" "${D[@]}" --type diagonal
stat fia3 fisher --model "$T/m.msgpack" --ia3 "$T/a.msgpack" "${D[@]}" --type diagonal
stat fblock fisher --model "$T/m.msgpack" --ia3 "$T/a.msgpack" "${D[@]}" --type blockwise
stat ftrue fisher --model "$T/m.msgpack" "${D[@]}" --type diagonal --true --seed 7

# shards cover the examples exactly once: the shards' counts sum to 37
n=$(for i in 1 2 3; do build/bin/art show "$T/gram.s$i.msgpack" | awk '$1 == "\"n_examples\":" { sub(",", "", $2); print $2 }'; done | paste -sd+ | bc)
if [ "$n" = 37 ]; then ok shard_counts_sum; else fail shard_counts_sum "got '$n'"; fi

# one line, non-zero exit, nothing written
bad() { # NAME EXPECT CMD...
    local name=$1 want=$2; shift 2
    rm -f "$T/bad.msgpack"
    if "$@" -o "$T/bad.msgpack" > "$T/bad.log" 2>&1; then fail "$name" "succeeded"; return; fi
    if [ "$(wc -l < "$T/bad.log")" -eq 1 ] && grep -q -- "$want" "$T/bad.log" && [ ! -e "$T/bad.msgpack" ]; then ok "$name"
    else fail "$name" "$(cat "$T/bad.log")"; fi
}
G="$T/gram.s1.msgpack,$T/gram.s2.msgpack,$T/gram.s3.msgpack"
bad reduce_missing_shard "give all 3 shards" build/bin/gram --reduce "$T/gram.s1.msgpack,$T/gram.s2.msgpack"
bad reduce_out_of_order "in order" build/bin/gram --reduce "$T/gram.s2.msgpack,$T/gram.s1.msgpack,$T/gram.s3.msgpack"
bad reduce_repeated "in order" build/bin/gram --reduce "$T/gram.s1.msgpack,$T/gram.s1.msgpack,$T/gram.s3.msgpack"
bad reduce_mixed_inputs "other inputs or settings" build/bin/fisher --reduce "$T/fdiag.s1.msgpack,$T/ftrue.s2.msgpack,$T/fdiag.s3.msgpack"
bad reduce_not_a_shard "not a shard" build/bin/gram --reduce "$T/gram.full.msgpack"
bad reduce_other_stage "not a shard" build/bin/gram --reduce "$T/fdiag.s1.msgpack,$T/fdiag.s2.msgpack,$T/fdiag.s3.msgpack"
bad reduce_with_model "takes the shards alone" build/bin/gram --reduce "$G" --model "$T/m.msgpack"
bad shard_zero "--shard '0/3'" build/bin/gram --model "$T/m.msgpack" "${D[@]}" --shard 0/3
bad shard_above "--shard '4/3'" build/bin/gram --model "$T/m.msgpack" "${D[@]}" --shard 4/3
bad shard_junk "not I/N" build/bin/gram --model "$T/m.msgpack" "${D[@]}" --shard 3
bad shard_empty "is empty" build/bin/fisher --model "$T/m.msgpack" --data "$T/train.msgpack" --examples 2 --type diagonal --shard 1/3
bad shard_needs_model "are required" build/bin/gram --data "$T/train.msgpack"
# a shard is not the statistic: merge refuses it by its kind
if build/bin/merge --method regmean --pretrained "$T/m.msgpack" --models "$T/m.msgpack,$T/m.msgpack" \
     --gram "$T/gram.s1.msgpack,$T/gram.s1.msgpack" -o "$T/bad.msgpack" > "$T/bad.log" 2>&1; then
    fail merge_refuses_shard "merged a shard"
elif grep -q gram_shard "$T/bad.log" && [ ! -e "$T/bad.msgpack" ]; then ok merge_refuses_shard
else fail merge_refuses_shard "$(cat "$T/bad.log")"; fi
