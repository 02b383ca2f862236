#!/usr/bin/env bash
# test_merge.sh - the merge stage on artifacts written by build/bin/mkrandom:
# streaming methods keep peak RSS within three models plus one tensor for 8
# models; every method runs end to end on random full and IA3 inputs.
set -u
source "$(dirname "$0")/lib.sh" test_merge_sh
B=build/bin
fails=0
fail() { echo "FAIL $1: $2"; fails=$((fails + 1)); }

# 8 models with two large tensors (shared, lm_head: 100000 x 16 f32 = 6.1 MiB each)
$B/mkrandom --kind model --preset tiny --vocab 100000 -o "$T/pre.msgpack" || exit 1
models=""
for i in 0 1 2 3 4 5 6 7; do
    $B/mkrandom --kind model --like "$T/pre.msgpack" --scale 0.02 --seed $((i + 1)) -o "$T/m$i.msgpack" || exit 1
    models+="${models:+,}$T/m$i.msgpack"
done
msize=$(stat -c %s "$T/m0.msgpack")
tensor=$((100000 * 16 * 4))
# three models + one tensor + what the process itself takes (libraries,
# buffers: measured on a merge of two small models, since a GPU=1 build
# maps cuBLAS into every stage) + 16 MiB
$B/mkrandom --kind model --preset tiny --vocab 100 -o "$T/small.msgpack" || exit 1
/usr/bin/time -f "RSS %M" $B/merge --method average --pretrained "$T/small.msgpack" \
    --models "$T/small.msgpack,$T/small.msgpack" -o "$T/small_out.msgpack" 2>"$T/log" >/dev/null ||
    { fail stream_baseline "merge of two small models failed: $(tail -1 "$T/log")"; exit 1; }
base_kib=$(awk '/^RSS/ {print $2}' "$T/log")
limit_kib=$(((3 * msize + tensor) / 1024 + base_kib + 16 * 1024))
for m in average task_arithmetic ties dare_ties dare_linear breadcrumbs; do
    if ! /usr/bin/time -f "RSS %M" $B/merge --method $m --pretrained "$T/pre.msgpack" --models "$models" \
        -o "$T/out.msgpack" 2>"$T/log" >/dev/null; then
        fail "stream_$m" "merge failed: $(tail -1 "$T/log")"; continue
    fi
    rss=$(awk '/^RSS/ {print $2}' "$T/log")
    # (make SAN=1 test: AddressSanitizer's shadow memory and quarantine are
    # not the stage's; the merge still has to run)
    if [ -n "${MATS_SANITIZED:-}" ]; then echo "skip stream_$m: peak RSS is not the stage's own under AddressSanitizer"
    elif [ "$rss" -le "$limit_kib" ]; then ok "stream_$m  # peak RSS $rss KiB, limit $limit_kib KiB (process alone $base_kib KiB)"
    else fail "stream_$m" "peak RSS ${rss} KiB > ${limit_kib} KiB (8 models of $((msize / 1024)) KiB)"; fi
done

# every method end to end on random full models with statistics
$B/mkrandom --kind model --preset tiny -o "$T/p.msgpack"
for i in 0 1 2; do
    $B/mkrandom --kind model --like "$T/p.msgpack" --scale 0.05 --seed $((i + 1)) -o "$T/a$i.msgpack"
    $B/mkrandom --kind gram --like "$T/a$i.msgpack" --seed $((i + 1)) -o "$T/g$i.msgpack"
    $B/mkrandom --kind fisher_diag --like "$T/a$i.msgpack" --seed $((i + 1)) -o "$T/f$i.msgpack"
    $B/mkrandom --kind ia3 --base "$T/p.msgpack" --scale 0.1 --seed $((i + 1)) -o "$T/i$i.msgpack"
    $B/mkrandom --kind fisher_block --like "$T/i$i.msgpack" --seed $((i + 1)) -o "$T/b$i.msgpack"
    $B/mkrandom --kind fisher_diag --like "$T/i$i.msgpack" --seed $((i + 1)) -o "$T/d$i.msgpack"
    $B/mkrandom --kind tokens --examples 12 --seed $((i + 1)) -o "$T/t$i.msgpack"
done
A="--pretrained $T/p.msgpack --models $T/a0.msgpack,$T/a1.msgpack,$T/a2.msgpack"
I="--pretrained $T/p.msgpack --models $T/i0.msgpack,$T/i1.msgpack,$T/i2.msgpack"
G="--gram $T/g0.msgpack,$T/g1.msgpack,$T/g2.msgpack"
F="--fisher $T/f0.msgpack,$T/f1.msgpack,$T/f2.msgpack"
run() { # name args...
    local n=$1; shift
    if $B/merge "$@" -o "$T/$n.msgpack" 2>"$T/$n.log" >/dev/null && $B/art verify "$T/$n.msgpack" >/dev/null; then ok "e2e_$n"
    else fail "e2e_$n" "$(tail -1 "$T/$n.log")"; fi
}
for m in average task_arithmetic ties dare_ties dare_linear breadcrumbs cg_average; do run "$m" --method $m $A; done
run fisher --method fisher $A $F
run cg_fisher --method cg_fisher $A $F
run regmean --method regmean --lambda 0.9 $A $G
run cg_regmean --method cg_regmean --lambda 0.9 $A $G
run mats --method mats --lambda 0.9 $A $G
run mats_kron --method mats --lambda 0.9 --precondition kron $A $G
run mats_init_file --method mats --init "$T/regmean.msgpack" $A $G
run regmean_pp --method regmean_pp --lambda 0.9 $A --data $T/t0.msgpack,$T/t1.msgpack,$T/t2.msgpack
# mkrandom's tokens are what it says and the same for the same seed
$B/mkrandom --kind tokens --examples 12 --seed 1 -o "$T/t0b.msgpack"
if cmp -s "$T/t0.msgpack" "$T/t0b.msgpack" && $B/art show "$T/t0.msgpack" | grep -q "label *i32 *\[12\]"; then ok mkrandom_tokens
else fail mkrandom_tokens "two runs differ, or not 12 labels"; fi
run ia3_mats --method mats --lambda 0.9 $I --fisher $T/b0.msgpack,$T/b1.msgpack,$T/b2.msgpack
run ia3_fisher --method fisher $I --fisher $T/d0.msgpack,$T/d1.msgpack,$T/d2.msgpack
run ia3_ties --method ties $I
for m in iso_c iso_cts tsv_m; do run "$m" --method $m --lambda 0.5 $A; done
run iso_cts_half --method iso_cts --common-space-fraction 0.5 $A
run wudi --method wudi $A
run wudi_init_file --method wudi --init "$T/iso_c.msgpack" $A
run model_stock --method model_stock $A
run slerp --method slerp --lambda 0.5 --pretrained "$T/p.msgpack" --models "$T/a0.msgpack,$T/a1.msgpack"
run ia3_model_stock --method model_stock $I
run ia3_slerp --method slerp --lambda 0.5 --pretrained "$T/p.msgpack" --models "$T/i0.msgpack,$T/i1.msgpack"
# slerp at t = 0 and 1 gives its two models back
run slerp0 --method slerp --lambda 0 --pretrained "$T/p.msgpack" --models "$T/a0.msgpack,$T/a1.msgpack"
run slerp1 --method slerp --lambda 1 --pretrained "$T/p.msgpack" --models "$T/a0.msgpack,$T/a1.msgpack"
if $B/art diff --tol 1e-6 "$T/slerp0.msgpack" "$T/a0.msgpack" >/dev/null 2>&1 && $B/art diff --tol 1e-6 "$T/slerp1.msgpack" "$T/a1.msgpack" >/dev/null 2>&1; then ok slerp_ends
else fail slerp_ends "$($B/art diff --tol 1e-6 "$T/slerp0.msgpack" "$T/a0.msgpack" 2>&1 | tail -1)"; fi
# wudi is a CG method: its per-tensor results are in meta.cg
if $B/art show "$T/wudi.msgpack" | grep -q '"cg_summary"'; then ok meta_wudi_cg
else fail meta_wudi_cg "no cg_summary in wudi's meta"; fi
# slerp of three models, model_stock of one: one line, exit 1
for a in "slerp $A" "model_stock --pretrained $T/p.msgpack --models $T/a0.msgpack"; do
    if $B/merge --method $a -o "$T/bad.msgpack" 2>"$T/bad.log" >/dev/null; then fail "models_count_${a%% *}" "accepted"
    elif [ "$(wc -l < "$T/bad.log")" -eq 1 ] && grep -q "models" "$T/bad.log" && [ ! -e "$T/bad.msgpack" ]; then ok "models_count_${a%% *}"
    else fail "models_count_${a%% *}" "$(cat "$T/bad.log")"; fi
done
# the kron preconditioner needs fewer iterations than plain CG on these
it_plain=$(grep -o 'iterations [0-9]*\.\.[0-9]* (mean [0-9.]*' "$T/mats.log" | grep -o 'mean [0-9.]*' | cut -d' ' -f2)
it_kron=$(grep -o 'iterations [0-9]*\.\.[0-9]* (mean [0-9.]*' "$T/mats_kron.log" | grep -o 'mean [0-9.]*' | cut -d' ' -f2)
if [ -n "$it_kron" ] && [ -n "$it_plain" ] && awk -v a="$it_kron" -v b="$it_plain" 'BEGIN{exit !(a + 0 < b + 0)}'; then ok "kron_fewer_iterations  # mean $it_kron vs $it_plain"
else fail kron_fewer_iterations "kron mean $it_kron vs plain $it_plain"; fi
# the output's meta names the method and keeps the config; ia3 keeps meta.base
if $B/art show "$T/mats.msgpack" | grep -q '"method": *"mats"' && $B/art show "$T/mats.msgpack" | grep -q d_model; then ok meta_mats
else fail meta_mats "$($B/art show "$T/mats.msgpack" | head -5)"; fi
$B/merge --help >/dev/null 2>&1 && ok help || fail help "merge --help failed"
# --list-methods: one line a method in the documented form (docs/merging.md),
# each name a --method; every method's --help line; no other argument
if $B/merge --list-methods > "$T/list" 2>"$T/list.err"; then
    bad=$(grep -v -E '^[a-z0-9_]+ lambda=(yes|no) run=(streaming|solver) modes=(ia3|full)(,(ia3|full))?( stats\.(ia3|full)=(none|fisher-diagonal|fisher-blockwise|gram|data))+ options=([a-z_]+(,[a-z_]+)*) models=[1-9][0-9]*\+? # .+$' "$T/list")
    help=$($B/merge --help)
    for m in $(cut -d' ' -f1 "$T/list"); do
        grep -q "^  $m " <<<"$help" || bad+=" $m: not in --help;"
        $B/merge --method "$m" 2>&1 | grep -q "is not one of" && bad+=" $m: not a --method;"
    done
    for m in iso_c iso_cts tsv_m wudi model_stock slerp; do grep -q "^$m " "$T/list" || bad+=" $m: not listed;"; done
    grep -q '^slerp .* models=2 ' "$T/list" || bad+=" slerp: not models=2;"
    grep -q '^model_stock .* models=2+ ' "$T/list" || bad+=" model_stock: not models=2+;"
    [ -z "$bad" ] && [ "$(wc -l < "$T/list")" -ge 18 ] && ok "list_methods ($(wc -l < "$T/list") methods)" || fail list_methods "$bad"
else fail list_methods "exit $?: $(cat "$T/list.err")"; fi
$B/merge --list-methods --method ties > /dev/null 2>&1 && fail list_methods_alone "took another argument" || ok list_methods_alone

# the thread count never changes a byte: every method of --list-methods on 1
# and 3 threads (the eight t5-mini full models of the default report gave the
# same bytes on 1 and 2 threads for fifteen methods, LAPACK's SVDs included)
same_threads=""
for m in $(cut -d' ' -f1 "$T/list"); do
    case $m in
        fisher|cg_fisher) args="$A $F" ;;
        regmean|cg_regmean|mats) args="--lambda 0.9 $A $G" ;;
        regmean_pp) args="--lambda 0.9 $A --data $T/t0.msgpack,$T/t1.msgpack,$T/t2.msgpack" ;;
        slerp) args="--lambda 0.5 --pretrained $T/p.msgpack --models $T/a0.msgpack,$T/a1.msgpack" ;;
        *) args="$A" ;;
    esac
    for t in 1 3; do
        $B/merge --method $m $args --threads $t -o "$T/thr$t.msgpack" 2>"$T/thr.log" >/dev/null ||
            { same_threads+=" $m: failed on $t threads ($(tail -1 "$T/thr.log"));"; continue 2; }
    done
    cmp -s "$T/thr1.msgpack" "$T/thr3.msgpack" || same_threads+=" $m: 1 and 3 threads differ;"
done
[ "$(wc -l < "$T/list")" -ge 18 ] || same_threads+=" --list-methods gave too few methods;"
[ -z "$same_threads" ] && ok "threads_same_bytes ($(wc -l < "$T/list") methods, 1 and 3 threads)" || fail threads_same_bytes "$same_threads"

[ $fails -eq 0 ] || KEEP=1 # the files stay for a look
exit $((fails > 0))
