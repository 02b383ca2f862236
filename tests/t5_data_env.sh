# Sourced by the shell tests of the training stages (test_t5_stages.sh,
# test_optfisher.sh, test_shard.sh) as `source tests/t5_data_env.sh NAME`: cd to the
# repository; $T, a temporary directory /tmp/NAME.* removed on exit, holding
# the synthetic tokens artifacts of build/tests/test_t5_data --write; ok and
# fail; one BLAS thread and no progress lines; $T/exp.conf, t5-micro with
# the lengths of that data, to which the caller appends its train.* values.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
T=$(mktemp -d "/tmp/$1.XXXXXX")
trap 'rm -rf "$T"' EXIT
ok() { echo "ok $1"; }
fail() { echo "FAIL $1${2:+: $2}"; }
build/tests/test_t5_data --write "$T" || { fail data "could not write test data"; exit 1; }
export MATS_THREADS=1 MATS_PROGRESS_SECONDS=1000
cat > "$T/exp.conf" <<CONF
include $PWD/configs/models/t5-micro.conf
train.max_input_len = 32
train.max_target_len = 8
CONF
