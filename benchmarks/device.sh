#!/usr/bin/env bash
# Issue 18's GPU check as one short script for a device machine (the session tool `run`: `bash benchmarks/device.sh`;
# see benchmarks/README.md "On a GPU"). One `run.py table` answers everything: FC, CNTK-V, CNTK-GAP and DEQ on
# both paths (K(X, X) and K(X, Y)) at sizes where a GPU is in steady state, with the machine's GEMM and copy peak
# measured in the same run; against neural-tangents where its venv (benchmarks/.venv-nt) exists on the machine,
# else ours only (the ratios then against the CPU peer numbers in benchmarks/README.md). Then the trace operator.
# The machine has no network: it uses the image's python3 (JAX with CUDA) and the kernels from src/ (jax, numpy
# and scipy only). Results: JSON and markdown in $OUT (the device tool brings them back), else benchmarks/results.
# About 3-5 minutes with compilation; ROUNDS=1 halves it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEST=${OUT:-benchmarks/results}
mkdir -p "$DEST"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
PEER_FLAG=()
[ -x benchmarks/.venv-nt/bin/python ] || PEER_FLAG=(--no-peer)
timeout 420 "$PY" benchmarks/run.py table --n 16384 --n-vanilla 2048 --n-gap 32 --n-deq 16384 --gemm-n 4096 \
  --repeats "${ROUNDS:-3}" ${PEER_FLAG[@]+"${PEER_FLAG[@]}"} --results-dir "$DEST"
timeout 90 "$PY" benchmarks/run.py trace --n-trace 64 --no-peer --results-dir "$DEST" || true
