#!/usr/bin/env bash
# Everything that needs the GPU, in one device-tool call (carry .whl: megatron-core, liger-kernel):
#   bash benchmarks/gpu_suite.sh [tests|throughput|all]
# Writes $OUT/gpu_tests.log and $OUT/throughput.jsonl; prints a table last.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-suite}
mkdir -p "$OUT"
WHAT=${1:-all}
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, megatron.core as m; print('torch', torch.__version__, 'mcore', m.__version__)"

if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
  # GPU-marked tests of the modules that are importable there (no datatrove / TRL on the device).
  timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/training ${GPU_TEST_PATHS:-} 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
fi

if [ "$WHAT" = throughput ] || [ "$WHAT" = all ]; then
  bench() {  # label impl [overrides...]
    local label=$1 impl=$2; shift 2
    timeout 240 python3 benchmarks/train_throughput.py --impl "$impl" --label "$label" \
      --preset llama3.2-1b --seq 4096 --mbs 2 ${BENCH_ARGS:-} "$@" 2>"$OUT/$label.err" | tail -1 >> "$OUT/throughput.jsonl" \
      || echo "{\"label\": \"$label\", \"error\": \"exit $? (see $label.err)\"}" >> "$OUT/throughput.jsonl"
  }
  bench hf-sdpa hf
  bench hf-liger hf-liger
  bench mcore-local-sdpa mcore model.kernels=torch
  for extra in ${EXTRA_BENCHES:-}; do bench "mcore-${extra//[=.]/-}" mcore ${extra//,/ }; done
  python3 benchmarks/print_table.py "$OUT/throughput.jsonl"
fi
