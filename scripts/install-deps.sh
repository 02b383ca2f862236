#!/usr/bin/env bash
# Install the Debian packages mats-c needs. Idempotent: packages already
# present are skipped; the rest are named and installed with apt-get.
# Usage: scripts/install-deps.sh [--data] [--reference] [--slurm]
#   (no flag)    build and test dependencies
#   --data       also the packages that ship the built-in benchmark's text
#   --reference  also python3-torch and friends (regenerating test fixtures
#                and the PyTorch peers of the benchmarks)
#   --slurm      also Slurm and munge: tests/test_slurm.sh starts a one-node
#                cluster on localhost from them (docs/cluster.md); a cluster
#                node needs only the build dependencies and the data packages
set -euo pipefail

build_pkgs=(build-essential pkg-config libopenblas-dev libmsgpack-dev libxxhash-dev xxhash
            zlib1g-dev liblzma-dev sentencepiece clang libclang-rt-dev gnuplot-nox
            libopenmpi-dev openmpi-bin libyaml-dev)
# libyaml-dev: build/bin/recipe reads mergekit-style YAML recipes.
# libclang-rt-dev: libFuzzer and the sanitizer runtimes of make fuzz (only a
# Recommends of clang, which --no-install-recommends skips)
# libopenmpi-dev, openmpi-bin: train on N ranks (mpirun; make MPI=0 builds
# without them, docs/ranks.md)
data_pkgs=(wordnet-base fortunes dict-gcide sword-text-kjv sword-text-web
           r-cran-modeldata r-cran-janeaustenr npm)
ref_pkgs=(python3-torch python3-numpy python3-scipy)
# slurm-wlm: slurmctld, slurmd and the client (srun, sinfo, scancel);
# the daemons' services are not used (the test runs its own, as root)
slurm_pkgs=(slurm-wlm munge)

want=("${build_pkgs[@]}")
for a in "$@"; do
    case "$a" in
        --data) want+=("${data_pkgs[@]}") ;;
        --reference) want+=("${ref_pkgs[@]}") ;;
        --slurm) want+=("${slurm_pkgs[@]}") ;;
        --all) want+=("${data_pkgs[@]}" "${ref_pkgs[@]}" "${slurm_pkgs[@]}") ;;
        *) echo "install-deps.sh: unknown option '$a' (use --data, --reference, --slurm or --all)" >&2; exit 2 ;;
    esac
done

missing=()
for p in "${want[@]}"; do
    # npm may come from Node.js's own packages rather than Debian's npm.
    if [ "$p" = npm ] && command -v npm >/dev/null; then continue; fi
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#want[@]} packages present"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo
    else
        echo "install-deps: need root to install ${missing[*]}: run 'sudo scripts/install-deps.sh $*' or install them with apt-get" >&2
        exit 1
    fi
else SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists when they are missing or older than a day.
if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
    $SUDO apt-get update -qq || { echo "install-deps: apt-get update failed" >&2; exit 1; }
fi
log=$(mktemp /tmp/mats-install-deps.XXXXXX.log)
if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "install-deps: apt-get install failed for ${missing[*]} (log: $log)" >&2
    exit 1
fi
rm -f "$log"
echo "install-deps: installed ${missing[*]}"
