#!/usr/bin/env bash
# The device check for the lent GPU: batched-vs-sequential agreement on CUDA, then the
# throughput benchmark. Expects wheels of the packages the GPU image lacks in .whl/ (gymnasium,
# wordfreq and their pure-Python needs); writes everything under $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD:$PWD/tests" MNMS_CACHE_DIR=/tmp/mnms-cache PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'PY' 2>&1 | tee "$OUT/gpu_equivalence.txt"
import numpy as np
from test_batched import random_requests
from mnms_env import SequentialEvaluator
from mnms_env.batched import BatchedEvaluator
requests = [r for r in random_requests(["digits", "wine"], per_task=20, seed=1)]
seq = SequentialEvaluator(device="cuda").evaluate(requests)
for precision in ("fp32", "bf16"):
    bat = BatchedEvaluator(device="cuda", precision=precision).evaluate(requests)
    diff = np.array([b.val_accuracy - s.val_accuracy for s, b in zip(seq, bat)])
    print(f"cuda {precision} batched vs fp32 sequential over {len(diff)} configs: mean |diff| "
          f"{100 * np.abs(diff).mean():.2f} points, signed {100 * diff.mean():+.2f} points, "
          f"devices {set(b.device for b in bat)}")
PY
# One measurement per rate: a GPU run is quiet, and the hashed-text rows take minutes each.
python3 benchmarks/throughput.py --out "$OUT" --repeats 1 "$@" 2>&1 | tee "$OUT/throughput_log.txt"
# The same dense rows with TF32 matrix products allowed, for comparison.
python3 benchmarks/throughput.py --out "$OUT" --workloads dense --ks 1 256 1024 --repeats 1 \
    --precisions fp32 --matmul-precision high 2>&1 | tee "$OUT/throughput_tf32_log.txt"
