#!/usr/bin/env bash
# Create .venv and install mnms-env with every extra. Idempotent; safe to re-run.
# TORCH_SPEC picks the PyTorch build: the default is the CPU wheel; on a CUDA machine use
# e.g. TORCH_SPEC="torch" (or the index URL of your CUDA version).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e '.[encoder,baselines,dev]'
