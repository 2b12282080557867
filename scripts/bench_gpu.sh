#!/usr/bin/env bash
# posenc-bench on a CUDA machine, its JSON and printed table written to a folder.
#
#   scripts/bench_gpu.sh OUT_DIR [posenc-bench options, e.g. --only paper-rope --profile]
#
# Needs posenc-jax installed with a CUDA jax (README, "Running a study": pip install -e .
# "jax[cuda13]"). Writes OUT_DIR/bench.json, OUT_DIR/bench.txt (the table) and OUT_DIR/gpu.csv
# (nvidia-smi's name, memory and driver). The whole suite is meant to take under 5 minutes on
# one H100/H200, compilation included (not yet measured: see README, Performance).
set -euo pipefail
out="${1:?usage: scripts/bench_gpu.sh OUT_DIR [posenc-bench options]}"
shift
mkdir -p "$out"
if ! python -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'; then
    echo "bench_gpu.sh: JAX sees no GPU here ($(python -c 'import jax; print(jax.devices())'))." \
         "Install a CUDA jax: pip install -e . \"jax[cuda13]\"" >&2
    exit 2
fi
# Take GPU memory as needed, not 75% up front: the cases run one after another.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.csv" || true
posenc-bench --json "$out/bench.json" "$@" | tee "$out/bench.txt"
