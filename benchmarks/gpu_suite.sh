#!/usr/bin/env bash
# Everything that needs the GPU, in one device-tool call (carry .whl: megatron-core, liger-kernel):
#   bash benchmarks/gpu_suite.sh [tests|throughput|all]
# Prints the environment and the resolved fusions of every model.kernels backend first
# (benchmarks/resolved_fusions.py). `tests` runs the gpu-marked training tests with pytest, or,
# where pytest is not installed, the kernels' self-check (`python -m megatron_infi.kernels.selfcheck`,
# still a correctness verdict). Writes $OUT/gpu_tests.log (or $OUT/kernels_selfcheck.json),
# $OUT/fusions.jsonl and $OUT/throughput.jsonl; prints a table last. Every process of the run shares
# one Triton cache (TRITON_CACHE_DIR, default under /tmp), so each kernel compiles once.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-suite}
mkdir -p "$OUT"
WHAT=${1:-all}
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 WANDB_MODE=offline
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-${TMPDIR:-/tmp}/megatron-infi-triton-cache}
mkdir -p "$TRITON_CACHE_DIR"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch, megatron.core as m; print('torch', torch.__version__, 'mcore', m.__version__)"
echo "== resolved fusions (llama3.2-1b, bf16)"
$PY benchmarks/resolved_fusions.py --preset llama3.2-1b 2>/dev/null | tee "$OUT/fusions.jsonl"

if [ "$WHAT" = tests ] || [ "$WHAT" = all ]; then
  if $PY -c "import pytest" 2>/dev/null; then
    # GPU-marked tests of the modules that are importable there (no datatrove / TRL on the device).
    timeout 300 $PY -m pytest -q -m gpu -p no:cacheprovider tests/training ${GPU_TEST_PATHS:-} 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
  else
    echo "pytest is not installed: the kernels' self-check gives the correctness verdict"
    timeout 300 $PY -m megatron_infi.kernels.selfcheck --out "$OUT" 2>&1 | grep -v -i warn
    echo "self-check rc=${PIPESTATUS[0]}"
  fi
fi

if [ "$WHAT" = throughput ] || [ "$WHAT" = all ]; then
  bench() {  # label impl [overrides...]
    local label=$1 impl=$2; shift 2
    timeout 240 $PY benchmarks/train_throughput.py --impl "$impl" --label "$label" \
      --preset llama3.2-1b --seq 4096 --mbs 2 ${BENCH_ARGS:-} "$@" 2>"$OUT/$label.err" | tail -1 >> "$OUT/throughput.jsonl" \
      || echo "{\"label\": \"$label\", \"error\": \"exit $? (see $label.err)\"}" >> "$OUT/throughput.jsonl"
  }
  bench hf-sdpa hf
  bench hf-liger hf-liger
  bench mcore-local-sdpa mcore model.kernels=torch
  for extra in ${EXTRA_BENCHES:-}; do bench "mcore-${extra//[=.]/-}" mcore ${extra//,/ }; done
  $PY benchmarks/print_table.py "$OUT/throughput.jsonl"
fi
