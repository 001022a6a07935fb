#!/usr/bin/env bash
# The device check for the lent GPU: batched-vs-sequential agreement on CUDA (float32 and
# bfloat16), then the throughput benchmark. Expects wheels of the packages the GPU image lacks
# in .whl/ (gymnasium, wordfreq and their pure-Python needs); writes everything under $OUT.
# Every step runs even when an earlier one fails (a device run is one shot); the exit status
# says whether any failed.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" MNMS_CACHE_DIR=/tmp/mnms-cache PYTHONUNBUFFERED=1
failed=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 benchmarks/agreement.py --device cuda --tasks digits wine --per-task 20 --seed 1 \
    --out "$OUT" 2>&1 | tee "$OUT/agreement_log.txt" || failed=1
# One measurement per rate: a GPU run is quiet, and the hashed-text rows take minutes each.
# --profile: which kernels take the device time of one epoch at K=1024, per precision.
python3 benchmarks/throughput.py --out "$OUT" --repeats 1 --profile "$@" 2>&1 \
    | tee "$OUT/throughput_log.txt" || failed=1
# The same dense rows with TF32 matrix products allowed, for comparison.
python3 benchmarks/throughput.py --out "$OUT" --workloads dense --ks 1 256 1024 --repeats 1 \
    --precisions fp32 --matmul-precision high 2>&1 | tee "$OUT/throughput_tf32_log.txt" \
    || failed=1
exit "$failed"
