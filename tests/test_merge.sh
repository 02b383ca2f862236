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

# --vector-cache: the methods that scale one merged task vector by lambda
# keep it on the first lambda and read it on the next, and the bytes are
# those of a merge without it on both lambdas (the eight t5-mini full and
# IA3 models of the default report gave the same bytes as the binary before
# the cache, on every such method); other methods write nothing there
VC=$T/vectors
vc=""
for m in $(awk '/ lambda=yes run=streaming / {print $1}' "$T/list"); do
    sets="A"; grep -q "^$m .* modes=ia3" "$T/list" && sets="A I"
    for set in $sets; do
        args=${!set}
        [ $m = slerp ] && args="--pretrained $T/p.msgpack --models $T/a0.msgpack,$T/a1.msgpack"
        rm -rf "$VC"
        for l in 0.7 0.3; do
            $B/merge --method $m --lambda $l $args -o "$T/vr$l.msgpack" 2>"$T/vc.log" >/dev/null &&
            $B/merge --method $m --lambda $l $args --vector-cache "$VC" -o "$T/vc$l.msgpack" 2>"$T/vc$l.log" >/dev/null ||
                { vc+=" $m $set: failed at $l ($(tail -1 "$T/vc.log") $(tail -1 "$T/vc$l.log"));"; continue 2; }
            cmp -s "$T/vr$l.msgpack" "$T/vc$l.msgpack" || vc+=" $m $set: bytes differ at lambda $l;"
        done
        cmp -s "$T/vr0.7.msgpack" "$T/vr0.3.msgpack" && vc+=" $m $set: lambda 0.7 and 0.3 merged alike;"
        n=$(ls "$VC"/*.msgpack 2>/dev/null | wc -l)
        if [ $m = slerp ]; then [ "$n" -eq 0 ] || vc+=" slerp: wrote $n files;"; continue; fi
        [ "$n" -eq 1 ] || vc+=" $m $set: $n files kept, not 1;"
        grep -q "task vectors kept" "$T/vc0.7.log" || vc+=" $m $set: lambda 0.7 kept nothing;"
        grep -q "task vectors of every lambda, cached" "$T/vc0.3.log" || vc+=" $m $set: lambda 0.3 did not read the cache;"
    done
done
rm -rf "$VC"
$B/merge --method mats --lambda 0.9 $A $G --vector-cache "$VC" -o "$T/vcm.msgpack" 2>/dev/null >/dev/null &&
    [ -z "$(ls "$VC" 2>/dev/null)" ] || vc+=" mats: failed, or wrote into the cache;"
[ -z "$vc" ] && ok "vector_cache_same_bytes" || fail vector_cache_same_bytes "$vc"

# other models (mkrandom's have no keys), or the same in another order, are
# another entry: each merge keeps the bytes it has without the cache
rm -rf "$VC"
vo=""
for ms in a0,a1,a2 a1,a2,a0 a0,a1,a1; do
    mm="--pretrained $T/p.msgpack --models $T/${ms//,/.msgpack,$T/}.msgpack"
    $B/merge --method ties --lambda 0.5 $mm -o "$T/vo.msgpack" 2>/dev/null >/dev/null &&
    $B/merge --method ties --lambda 0.5 $mm --vector-cache "$VC" -o "$T/vo_c.msgpack" 2>/dev/null >/dev/null &&
        cmp -s "$T/vo.msgpack" "$T/vo_c.msgpack" || vo+=" $ms: differs or failed;"
done
[ "$(ls "$VC"/*.msgpack | wc -l)" -eq 3 ] || vo+=" $(ls "$VC"/*.msgpack | wc -l) entries, not 3;"
[ -z "$vo" ] && ok vector_cache_per_models || fail vector_cache_per_models "$vo"

# the cache is read, and refused whole when it is not what its name says
rm -rf "$VC"
$B/merge --method ties --lambda 0.3 $A --vector-cache "$VC" -o "$T/vt.msgpack" 2>/dev/null >/dev/null
$B/merge --method task_arithmetic --lambda 0.3 $A --vector-cache "$VC" -o "$T/vta.msgpack" 2>/dev/null >/dev/null
tv=$(for f in "$VC"/*.msgpack; do $B/art show "$f" | grep -q '"method": *"ties"' && echo "$f"; done)
ta=$(for f in "$VC"/*.msgpack; do [ "$f" != "$tv" ] && echo "$f"; done)
cp "$tv" "$T/tv.keep"
if [ -n "$tv" ] && [ -n "$ta" ]; then
    build/tests/test_loaders --poke "$T/tv.keep" "$tv" 'shared.weight[0]=1000'
    $B/merge --method ties --lambda 0.3 $A --vector-cache "$VC" -o "$T/vt2.msgpack" 2>/dev/null >/dev/null
    cmp -s "$T/vt.msgpack" "$T/vt2.msgpack" && fail vector_cache_read "an edited vector changed nothing" || ok vector_cache_read
    W="--vector-cache|delete it"
    for e in 'shared.weight:f64' '-shared.weight' 'meta.begin=1'; do
        build/tests/test_loaders --poke "$T/tv.keep" "$tv" "$e"
        expect "vector_cache_refuses_${e//[^a-z0-9]/_}" "$(basename "$tv")|$W" \
            $B/merge --method ties --lambda 0.3 $A --vector-cache "$VC" -o "$T/out.msgpack"
    done
    head -c 1000 "$T/tv.keep" > "$tv"
    expect vector_cache_refuses_truncated "$(basename "$tv")|$W" \
        $B/merge --method ties --lambda 0.3 $A --vector-cache "$VC" -o "$T/out.msgpack"
    cp "$ta" "$tv"
    expect vector_cache_refuses_another_merge "$(basename "$tv")|not the task vectors of this merge" \
        $B/merge --method ties --lambda 0.3 $A --vector-cache "$VC" -o "$T/out.msgpack"
    cp "$T/tv.keep" "$tv"
    expect vector_cache_output_is_the_cache "-o|$(basename "$tv")" \
        $B/merge --method ties --lambda 0.3 $A --vector-cache "$VC" -o "$tv"
    cmp -s "$T/tv.keep" "$tv" && ok vector_cache_left_alone || fail vector_cache_left_alone "the cache file changed"
    # a merge that finds the entry missing and its lock held (another λ of
    # the sweep writing it, side by side) waits, then reads what was written
    rm -f "$tv" "$T/locked"
    ( flock -x "${tv%.msgpack}.lock" -c "touch '$T/locked'; sleep 2; cp '$T/tv.keep' '$tv'" ) & lp=$!
    for _ in $(seq 100); do [ -e "$T/locked" ] && break; sleep 0.1; done
    $B/merge --method ties --lambda 0.7 $A --vector-cache "$VC" -o "$T/vw.msgpack" 2>"$T/vw.log" >/dev/null; rc=$?
    wait $lp
    $B/merge --method ties --lambda 0.7 $A -o "$T/vw_ref.msgpack" 2>/dev/null >/dev/null
    if [ $rc -eq 0 ] && grep -q "waiting for another merge that writes the task vectors" "$T/vw.log" &&
       grep -q "task vectors of every lambda, cached" "$T/vw.log" && cmp -s "$T/vw.msgpack" "$T/vw_ref.msgpack"; then
        ok vector_cache_waits_for_the_writer
    else fail vector_cache_waits_for_the_writer "rc $rc: $(tr '\n' ' ' < "$T/vw.log" | tail -c 300)"; fi
else fail vector_cache_files "ties and task_arithmetic did not each keep one file: $(ls "$VC")"; fi

[ $fails -eq 0 ] || KEEP=1 # the files stay for a look
exit $((fails > 0))
