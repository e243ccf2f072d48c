#!/usr/bin/env bash
# The GPU studies of issue 4, as one short script for a device machine (the session tool `run`; see
# benchmarks/README.md "On a GPU"). The machine has no network: it uses the image's python3 (JAX with CUDA)
# and the kernels from src/ (they need only jax, numpy and scipy). neural-tangents is not there, so the
# peer is skipped (--no-peer): compare with the CPU peer numbers recorded in the README.
# Results: JSON files in $OUT (the device tool brings them back), else benchmarks/results.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
"$PY" benchmarks/run.py trace --n-trace 64 --no-peer --results-dir "$DEST"
"$PY" benchmarks/run.py cntk --n-vanilla 4096 --n-gap 64 --no-peer --results-dir "$DEST"
"$PY" benchmarks/run.py fc --no-peer --results-dir "$DEST"
"$PY" benchmarks/run.py deq --no-peer --results-dir "$DEST"
