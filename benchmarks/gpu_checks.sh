#!/usr/bin/env bash
# The GPU measurements of issue 12 in one run: bench_official.py and bench_epoch.py on CUDA with bf16 autocast.
#
#   bash benchmarks/gpu_checks.sh OFFICIAL_SRC OUT_DIR
#
# OFFICIAL_SRC: a checkout of the paper's public code (has src/). OUT_DIR receives the JSON results, the logs and a
# copy of docs/performance.md with the two CUDA sections rewritten (copy it back over docs/performance.md).
# Each step has its own time limit and is interrupted with SIGINT, so that it still writes what it measured.
# Durations seen on one H200: bench_official ~7 minutes; bench_epoch ~1 minute for ABMIL+NG, ~3.5 minutes for their
# TransMIL+NG epoch alone. Where one command may run 10 minutes at most, run the two apart: SKIP_EPOCH=1 first, copy
# OUT_DIR/performance.md over docs/performance.md, then SKIP_OFFICIAL=1.
set -u
official=${1:?usage: gpu_checks.sh OFFICIAL_SRC OUT_DIR}
out=${2:?usage: gpu_checks.sh OFFICIAL_SRC OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
cp docs/performance.md "$out/performance.md"
if [ -z "${SKIP_OFFICIAL:-}" ]; then
    timeout -s INT "${OFFICIAL_LIMIT:-480}" python3 benchmarks/bench_official.py --official-src "$official" \
        --device cuda --amp bf16 --also-padded --threads 4 --rounds 3 --batches 4 \
        --write-docs --docs "$out/performance.md" --out "$out/official_cuda.json" 2>&1 | tee "$out/official_cuda.log"
fi
if [ -z "${SKIP_EPOCH:-}" ]; then
    timeout -s INT "${EPOCH_LIMIT:-480}" python3 benchmarks/bench_epoch.py --official-src "$official" \
        --device cuda --amp bf16 --also-fp32 --also-pageable --workers 4 --rounds 1 \
        --workdir "${WORKDIR:-/tmp/monai_ng_bench}" \
        --write-docs --docs "$out/performance.md" --out "$out/epoch_cuda.json" 2>&1 | tee "$out/epoch_cuda.log"
fi
