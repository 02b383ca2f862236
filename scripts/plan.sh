#!/usr/bin/env bash
# plan.sh TARGET "REPORT_MODES" WF_VARS...   (make plan TARGET=... runs it)
#
# The stage runs that `make TARGET` would execute now (those whose artifact
# is not cached), each with an estimated time, then the total, the critical
# path and what N nodes would buy: max(total / N, critical path).
#
# Which runs: make itself says, by a dry run (make -n) of the workflow
# sub-make(s) of TARGET with PLAN=1; every line that would call
# scripts/run-stage.sh is a run, and a run depends on the planned runs whose
# artifacts its command line names. The test evaluations of a sweep at the
# best lambda are known only once the validation evaluations have run: for
# each method and seed whose validation runs are planned, one test
# evaluation "l?" is counted (PLAN=1 makes the sub-make choose the lambdas
# whose validation evaluations are all cached, as wf-best would).
#
# Estimates, best first:
#   last     the run time this slot of this experiment took when it last ran
#            (CACHE/times.tsv, written by scripts/run-stage.sh)
#   like:N   the median of N earlier runs of its kind in this experiment: the
#            same slot with any seed and lambda (ft-ia3-topic-s*)
#   model    a cost model: model FLOPs (from model.*) times the tokens the
#            stage processes (train: steps x batch x lengths, x3 for the
#            backward pass; eval, fisher, gram: examples x lengths), at
#            per-stage rates measured on the 2-core development machine
#            (docs/cluster.md); merges by the bytes they read; data stages
#            by fixed times. Rough: a train run that stops early takes less.
set -u
target=$1 report_modes=$2
shift 2
vars=("$@")
cd "$(dirname "$0")/.."
cache=cache exp_conf= exp= mode=ia3
for v in "${vars[@]}"; do
    case "$v" in MATS_CACHE=*) cache=${v#*=} ;; DATA_CONF=*) exp_conf=${v#*=} ;; EXP=*) exp=${v#*=} ;; MODE=*) mode=${v#*=} ;; esac
done
exp_name=$(basename "$exp_conf" .conf)

case "$target" in
    merge|sweep|individual|multitask|pretrain) goals=("$mode:wf-$target") ;;
    report) goals=(); for m in $report_modes; do goals+=("$m:wf-report-part"); done ;;
    *) echo "make plan: TARGET=$target: use merge, sweep, report, individual, multitask or pretrain" >&2; exit 1 ;;
esac

T=$(mktemp -d /tmp/mats-plan.XXXXXX); trap 'rm -rf "$T"' EXIT
# The dry runs: make -n still runs the lines that call $(MAKE), and so the
# sweeps' second sub-make, with -n and PLAN=1 passed on.
ph=0
for g in "${goals[@]}"; do
    ph=$((ph + 10))
    if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -n --no-print-directory WF=1 PLAN=1 "${vars[@]}" MODE="${g%%:*}" "${g#*:}" \
            > "$T/dry" 2> "$T/err"; then
        echo "make plan: the dry run of ${g#*:} (MODE=${g%%:*}) failed: $(grep -v '^make' "$T/err" | tail -1)" >&2
        exit 1
    fi
    # one line per run: PHASE SLOT OUT COMMAND...; a phase is a sub-make,
    # which starts when the one before it has ended (wf-best, then the test
    # evaluations at the best lambdas)
    awk -v ph=$ph '/ WF=1 / && / wf-(sweep|report)-final/ { ph++ }
         { for (i = 1; i <= NF; i++) if ($i == "scripts/run-stage.sh") {
             line = ph " " $(i + 1) " " $(i + 2)
             for (j = i + 5; j <= NF; j++) line = line " " $j
             print line; break } }' "$T/dry" >> "$T/runs"
done
touch "$T/runs"
# An optimizer Fisher's own run (recipes/workflow.mk) trains only when its
# fine-tune is cached: where the fine-tune is planned too, that writes it.
awk 'NR == FNR { planned[$2] = 1; next }
     $2 ~ /^optfisher-/ { ft = $2; sub(/^optfisher-/, "ft-", ft); if (ft in planned) next }
     { print }' "$T/runs" "$T/runs" > "$T/runs.f" && mv "$T/runs.f" "$T/runs"

# The config values the cost model reads, one `key --get` per distinct set
# of --config/--set arguments (merge reads none: the experiment's).
KEYS="model.vocab_size model.d_model model.d_kv model.d_ff model.num_heads model.num_layers model.num_decoder_layers
      model.feed_forward_proj model.tie_word_embeddings train.steps train.batch_size train.max_input_len
      train.max_target_len train.eval_every train.valid_examples tokenize.max_input tokenize.max_choice
      data.train data.validation data.test eval.max_examples eval.max_input_len merge.iterations vocab.size
      auxtask.examples"
declare -A cfg_id=()
n=0
: > "$T/cfg"; : > "$T/runs2"
while read -r phase slot out cmd; do
    args=() prev=
    for w in $cmd; do
        case "$prev" in --config|--set) args+=("$prev" "$w") ;; esac
        prev=$w
    done
    [ ${#args[@]} -gt 0 ] || args=(--config "$exp_conf")
    id=${cfg_id["${args[*]}"]:-}
    if [ -z "$id" ]; then
        n=$((n + 1)); id=c$n; cfg_id["${args[*]}"]=$id
        # shellcheck disable=SC2086
        vals=$(build/bin/key "${args[@]}" --get $KEYS 2>/dev/null | awk '{ printf "%s%s", (NR > 1 ? "|" : ""), ($0 == "" ? "-" : $0) }')
        echo "$id $vals" >> "$T/cfg"
    fi
    echo "$id $phase $slot $out $cmd" >> "$T/runs2"
done < "$T/runs"

times=$cache/times.tsv
[ -f "$times" ] || { times=$T/times.tsv; : > "$times"; }
awk -v expn="$exp_name" -v target="$target" -v keys="$(echo $KEYS)" '
function fmt(s) { if (s < 60) return sprintf("%.1f s", s)
                  if (s < 3600) return sprintf("%d min %02d s", int(s / 60), int(s % 60 + 0.5))
                  return sprintf("%d h %02d min", int(s / 3600), int((s % 3600) / 60 + 0.5)) }
function class(s) { gsub(/-s[0-9]+/, "-s*", s); gsub(/-l[0-9.?]+/, "-l*", s); return s }
function num(x, d) { return (x == "-" || x == "") ? d : x + 0 }
function median(list,   a, k, t, i, j) {
    k = split(list, a, " "); for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return (k % 2) ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2 }
# The cost model (see the head of this script). FLOPs per example: 2 x the
# encoder weights x input tokens plus 2 x (decoder + output layer) x target
# tokens; training x3 (full: forward, input and weight gradients) or x2
# (IA3: no weight gradients of the frozen model). The rates (FLOP/s) and the
# times of the data stages are fitted to the t5-mini runs of the default
# experiment on the 2-core development machine
# (docs/history/2026-11-27-first-bases.md): IA3 / full fine-tune 300 x 16
# 38-83 s / 85-105 s, pretrain 800 x 32 733 s, test eval of 8,000
# examples 41-44 s, Fisher and Gram of 1,000 examples 8-97 s, prepare 40 s,
# vocab 70 s.
function model(stage, slot, id, cmd,    V, d, dkv, dff, h, le, ld, g, P_enc, P_dec, P_lm, Li, Lt, Lc, fin, fout, fev, sp, nd, B, steps, it, pass) {
    split(cfgv[id], c, "|")
    V = num(c[1], 32128); d = num(c[2], 512); dkv = num(c[3], 64); dff = num(c[4], 1024); h = num(c[5], 8)
    le = num(c[6], 6); ld = num(c[7], le); g = (c[8] ~ /gated/) ? 3 : 2
    P_enc = le * (4 * d * h * dkv + g * d * dff); P_dec = ld * (8 * d * h * dkv + g * d * dff); P_lm = V * d
    Li = num(c[16], 256); Lc = num(c[17], 16)
    if (c[22] != "-") Li = c[22] + 0
    fin = 2 * P_enc * Li; fout = 2 * (P_dec + P_lm) * Lc
    fev = fin + 4 * fout   # an evaluated example: its input once, about four choices
    if (stage == "train" || stage == "optfisher") {
        steps = num(c[10], 1000); B = num(c[11], 16); Lt = num(c[13], 8)
        pass = (cmd ~ / --mode ia3/) ? 2 : 3
        nd = 0; if (match(cmd, / --valid [^ ]+/)) { vl = substr(cmd, RSTART, RLENGTH); nd = 1 + gsub(/,/, ",", vl) }
        return 3 + steps * B * pass * (2 * P_enc * num(c[12], 128) + 2 * (P_dec + P_lm) * Lt) / 120e9 \
                 + (steps / num(c[14], 100)) * nd * num(c[15], 100) * fev / 385e9 }
    if (stage == "eval") {
        sp = (slot ~ /-test$/) ? num(c[20], 1000) : num(c[19], 500)
        if (c[21] != "-" && c[21] + 0 < sp) sp = c[21] + 0
        vl = datas[slot]; nd = 1 + gsub(/,/, ",", vl)
        return 1 + nd * sp * fev / 385e9 }
    # (a shard, --shard I/N, covers its share of the examples)
    if (stage == "fisher" || stage == "gram") return 2 + num(ex_n[slot], 1000) / num(shards[slot], 1) * 3 * (fin + fout) / 230e9
    if (stage == "merge" && slot ~ /^merge-ia3-/) return 1
    if (stage == "merge") { it = (merge_m[slot] ~ /^(cg_|mats)/) ? num(c[23], 100) / 10 : 1
        return 1 + 4 * (P_enc + P_dec + 2 * P_lm) * (num(merge_n[slot], 2) + 1) / 3e8 * it }
    if (stage == "prepare") return 2 + 40 * num(c[18], 4000) / 4000
    if (stage == "vocab") return 2 + 70 * num(c[24], 8000) / 8000
    if (stage == "auxtask") return 1 + 10 * num(c[25], 20000) / 20000
    if (slot == "tokenize-corpus") return 5
    return 1 }
function finish(i,    k, a, j, f, m) {
    if (i in fin_at) return fin_at[i]
    m = 0; best_dep[i] = 0
    k = split(deps[i], a, " ")
    for (j = 1; j <= k; j++) { if (P[a[j]] != P[i]) continue; f = finish(a[j]); if (f > m) { m = f; best_dep[i] = a[j] } }
    fin_at[i] = m + est[i]; return fin_at[i] }
FILENAME ~ /times.tsv$/ { if ($0 ~ /^#/ || $8 != "ok" || $2 != expn) next
    last[$3] = $6; kind[class($3)] = kind[class($3)] " " $6; nkind[class($3)]++; next }
FILENAME ~ /cfg$/ { cfgv[$1] = $2; next }
{   id = $1; ph = $2; slot = $3; out = $4
    if (out in seen) next
    seen[out] = ++n; S[n] = slot; O[n] = out; C[n] = id; P[n] = ph; phases[ph] = 1
    st = out; sub(/\/[^\/]*$/, "", st); dir[n] = st; sub(/.*\//, "", st); stage[n] = st
    cmd = ""; for (j = 5; j <= NF; j++) cmd = cmd " " $j; CMD[n] = cmd
    if (match(cmd, / --data [^ ]*/)) datas[slot] = substr(cmd, RSTART + 8, RLENGTH - 8)
    if (match(cmd, / --examples [0-9]+/)) ex_n[slot] = substr(cmd, RSTART + 12, RLENGTH - 12)
    if (match(cmd, / --shard [0-9]+\/[0-9]+/)) { sh = substr(cmd, RSTART, RLENGTH); sub(/.*\//, "", sh); shards[slot] = sh }
    if (match(cmd, / --method [^ ]+/)) merge_m[slot] = substr(cmd, RSTART + 10, RLENGTH - 10)
    if (match(cmd, / --models [^ ]+/)) { ml = substr(cmd, RSTART, RLENGTH); merge_n[slot] = 1 + gsub(/,/, ",", ml) }
}
END {
    # dependencies: the planned runs whose artifacts a command names (a
    # prepare run writes every file of its directory)
    for (i = 1; i <= n; i++) if (stage[i] == "prepare") prep_dir[dir[i]] = i
    for (i = 1; i <= n; i++) {
        k = split(CMD[i], w, /[ ,=]/)
        for (j = 1; j <= k; j++) {
            p = 0
            if (w[j] in seen && seen[w[j]] != i) p = seen[w[j]]
            else if (w[j] ~ /\.msgpack$/) { dd = w[j]; sub(/\/[^\/]*$/, "", dd); if ((dd in prep_dir) && prep_dir[dd] != i) p = prep_dir[dd] }
            if (p && !((i, p) in has)) { has[i, p] = 1; deps[i] = deps[i] " " p }
        }
    }
    # the test evaluations at the best lambda, unknown until validation ran
    if (target == "sweep" || target == "report") {
        m0 = n; test_cfg = ""
        for (i = 1; i <= m0; i++) if (stage[i] == "eval" && S[i] ~ /-test$/ && test_cfg == "") test_cfg = C[i]
        for (i = 1; i <= m0; i++) if (S[i] ~ /^eval-merge-.*-l[0-9.]+-s[0-9]+-validation$/) {
            t = S[i]; sub(/-l[0-9.]+-/, "-l?-", t); sub(/-validation$/, "-test", t)
            if (!(t in pseudo)) { pseudo[t] = ++n; S[n] = t; stage[n] = "eval"; C[n] = test_cfg ? test_cfg : C[i]
                P[n] = P[i] + 1; phases[P[n]] = 1; O[n] = "(its lambda is chosen on validation)"
                datas[t] = datas[S[i]]; sub(/-validation$/, "-test", datas[t]) }
            deps[pseudo[t]] = deps[pseudo[t]] " " i
        }
    }
    total = 0
    for (i = 1; i <= n; i++) {
        if (S[i] in last) { est[i] = last[S[i]]; src[i] = "last" }
        else if (class(S[i]) in kind) { est[i] = median(substr(kind[class(S[i])], 2)); src[i] = "like:" nkind[class(S[i])] }
        else { est[i] = model(stage[i], S[i], C[i], CMD[i]); src[i] = "model" }
        total += est[i]; by_stage[stage[i]] += est[i]; cnt_stage[stage[i]]++; cnt_src[src[i] ~ /^like/ ? "like" : src[i]]++
    }
    if (n == 0) { print "make plan: nothing to run: every stage run of this target is cached"; exit 0 }
    printf "%-10s %-8s %-9s %-44s %s\n", "estimate", "source", "stage", "slot", "artifact"
    for (i = 1; i <= n; i++) printf "%-10s %-8s %-9s %-44s %s\n", fmt(est[i]), src[i], stage[i], S[i], O[i]
    print ""
    printf "%d stage runs (estimates: %d from this slot'\''s last run, %d from runs of its kind, %d from the cost model)\n", n, cnt_src["last"], cnt_src["like"], cnt_src["model"]
    for (s in by_stage) printf "  %-9s %5d runs  %s\n", s, cnt_stage[s], fmt(by_stage[s]) | "sort -k1,1"
    close("sort -k1,1")
    # per phase: its critical path (runs of earlier phases are done when it
    # starts) and its share of the total; make runs the phases one after
    # the other
    np = 0; for (p in phases) ph_list[++np] = p + 0
    for (i = 2; i <= np; i++) { t = ph_list[i]; for (j = i - 1; j >= 1 && ph_list[j] > t; j--) ph_list[j + 1] = ph_list[j]; ph_list[j + 1] = t }
    cp = 0; path = ""
    for (q = 1; q <= np; q++) {
        p = ph_list[q]; cpp = 0; endi = 0
        for (i = 1; i <= n; i++) if (P[i] == p) { tot_p[p] += est[i]; if (finish(i) > cpp) { cpp = finish(i); endi = i } }
        cp_p[p] = cpp; cp += cpp
        pp = S[endi]; for (i = best_dep[endi]; i; i = best_dep[i]) pp = S[i] " -> " pp
        path = path (path == "" ? "" : "; then ") pp
    }
    printf "total: %s of stage time, one run at a time\n", fmt(total)
    printf "critical path: %s (%s)\n", fmt(cp), path
    if (np > 1) printf "  (%d phases one after the other: the evaluations at the chosen lambdas start when every validation run of their mode has ended)\n", np
    printf "nodes  time (one run per node at a time: the sum over phases of max(phase total / N, its critical path))\n"
    for (N = 1; N <= 4096; N *= 2) {
        tN = 0; for (q = 1; q <= np; q++) { p = ph_list[q]; tN += (tot_p[p] / N > cp_p[p]) ? tot_p[p] / N : cp_p[p] }
        b = (tN <= cp + 1e-9)
        printf "%5d  %s%s\n", N, fmt(tN), b ? " (the critical path: more nodes buy nothing)" : ""
        if (b) break
    }
}' "$T/cfg" "$times" "$T/runs2"
