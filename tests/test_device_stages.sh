#!/usr/bin/env bash
# test_device_stages.sh - the stages' device choice: --device,
# <stage>.device and DEVICE reach train, eval, fisher, gram and merge; cuda
# that cannot be had (a build without GPU=1, or no GPU) fails with one line
# saying what to do; --device cpu changes neither the key nor the bytes.
set -u
source "$(dirname "$0")/lib.sh" test_device_stages
build/tests/test_t5_data --write "$T" || { fail data "could not write test data"; exit 1; }
export MATS_THREADS=1 MATS_PROGRESS_SECONDS=1000
unset DEVICE MATS_GPU_MATH
cat > "$T/exp.conf" <<CONF
include $PWD/configs/models/t5-micro.conf
train.steps = 5
train.batch_size = 8
train.max_input_len = 32
train.max_target_len = 8
CONF
B=build/bin
if ! $B/train --config "$T/exp.conf" --data "$T/train.msgpack" -o "$T/m.msgpack" 2>"$T/log"; then
    cat "$T/log"; fail train_default; exit 1
fi

# one line, non-zero exit, and what to do (GPU=1 when the build lacks CUDA);
# where cuda can be had (a GPU=1 build on a machine with a GPU) the same
# commands must run on it instead
cuda_here=0
grep -q 'GPU=1' build/flags 2>/dev/null && command -v nvidia-smi >/dev/null 2>&1 &&
    nvidia-smi -L >/dev/null 2>&1 && cuda_here=1
one_line_cuda() { # name command...
    local name=$1 rc
    shift
    if [ $cuda_here = 1 ]; then
        if "$@" >/dev/null 2>"$T/err"; then ok "$name (runs on cuda)"; else fail "$name" "on cuda: $(tail -1 "$T/err")"; fi
        rm -f "$T/x.msgpack"
        return
    fi
    "$@" >/dev/null 2>"$T/err"
    rc=$?
    if [ $rc -ne 0 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q -- "--device cpu" "$T/err" &&
       { ! grep -q "built without" "$T/err" || grep -q "make GPU=1" "$T/err"; }; then
        ok "$name"
    else
        fail "$name" "exit $rc: $(cat "$T/err")"
    fi
}
one_line_cuda train_device_cuda $B/train --config "$T/exp.conf" --data "$T/train.msgpack" --device cuda -o "$T/x.msgpack"
one_line_cuda train_config_cuda $B/train --config "$T/exp.conf" --set train.device=cuda --data "$T/train.msgpack" -o "$T/x.msgpack"
one_line_cuda train_env_cuda env DEVICE=cuda $B/train --config "$T/exp.conf" --data "$T/train.msgpack" -o "$T/x.msgpack"
one_line_cuda eval_device_cuda $B/eval --model "$T/m.msgpack" --data "$T/test.msgpack" --device cuda -o "$T/x.msgpack"
one_line_cuda fisher_device_cuda $B/fisher --model "$T/m.msgpack" --data "$T/train.msgpack" --type diagonal --device cuda -o "$T/x.msgpack"
one_line_cuda gram_device_cuda $B/gram --model "$T/m.msgpack" --data "$T/train.msgpack" --device cuda -o "$T/x.msgpack"
one_line_cuda merge_device_cuda $B/merge --method average --pretrained "$T/m.msgpack" --models "$T/m.msgpack" --device cuda -o "$T/x.msgpack"
if [ $cuda_here = 1 ]; then echo "skip no_output_on_refusal: cuda is available here"
else [ -e "$T/x.msgpack" ] && fail no_output_on_refusal "an artifact was written" || ok no_output_on_refusal; fi

# a bad name names the option
if ! $B/gram --model "$T/m.msgpack" --data "$T/train.msgpack" --device gpu -o "$T/x.msgpack" 2>"$T/err" &&
   [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q -- "--device: device 'gpu' is not one of cpu, cuda" "$T/err"; then
    ok device_bad_name
else fail device_bad_name "$(cat "$T/err")"; fi

# --device cpu (and DEVICE=cpu over a config asking for cuda) gives the same
# key and bytes as no device at all
if $B/train --config "$T/exp.conf" --data "$T/train.msgpack" --device cpu -o "$T/m_cpu.msgpack" 2>/dev/null &&
   cmp -s "$T/m.msgpack" "$T/m_cpu.msgpack"; then
    ok train_device_cpu_same_bytes
else fail train_device_cpu_same_bytes; fi
if $B/gram --model "$T/m.msgpack" --data "$T/train.msgpack" --examples 16 -o "$T/g.msgpack" 2>/dev/null &&
   DEVICE=cpu $B/gram --model "$T/m.msgpack" --data "$T/train.msgpack" --examples 16 --set gram.device=cuda \
     -o "$T/g_cpu.msgpack" 2>/dev/null; then
    k1=$($B/art show "$T/g.msgpack" | awk '$1 == "key" { print $2 }')
    k2=$($B/art show "$T/g_cpu.msgpack" | awk '$1 == "key" { print $2 }')
    if $B/art diff "$T/g.msgpack" "$T/g_cpu.msgpack" --tol 0 >/dev/null 2>&1; then
        ok gram_env_cpu_over_config
    else
        fail gram_env_cpu_over_config "tensors differ"
    fi
    # the config entry gram.device=cuda is part of the key (it is config), the run itself is cpu
    [ -n "$k1" ] && [ "$k1" != "$k2" ] && ok gram_device_config_in_key || fail gram_device_config_in_key "$k1 $k2"
else fail gram_env_cpu_over_config "gram failed"; fi
