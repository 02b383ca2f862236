# Sourced by the shell tests of the training stages (test_t5_stages.sh,
# test_optfisher.sh, test_shard.sh) as
#   source tests/t5_data_env.sh NAME ["key = value"]...
# tests/lib.sh's start (the repository, $T, ok and fail), then in $T the
# synthetic tokens artifacts of build/tests/test_t5_data --write, one BLAS
# thread and no progress lines, and $T/exp.conf: t5-micro with the lengths
# of that data and the lines given after NAME.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$1"
build/tests/test_t5_data --write "$T" || { fail data "could not write test data"; exit 1; }
export MATS_THREADS=1 MATS_PROGRESS_SECONDS=1000
cat > "$T/exp.conf" <<CONF
include $PWD/configs/models/t5-micro.conf
train.max_input_len = 32
train.max_target_len = 8
CONF
shift
printf '%s\n' "$@" >> "$T/exp.conf"
