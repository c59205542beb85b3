#!/usr/bin/env bash
# Everything the kernels work needs from one H100, in one run of <= 8 minutes:
#   1. the gpu-marked kernel tests (each kernel vs its fp32 definition, bf16 and fp32 bounds; the
#      20-step triton-vs-torch loss-curve parity of the llama3.2-1b model),
#   2. whole-model throughput, llama3.2-1b at seq 4096: megatron-core kernels=torch / triton and
#      HF transformers with and without Liger, same data, same run,
#   3. per-kernel forward+backward vs torch eager, torch.compile and Liger (GB/s vs copy bandwidth),
#   4. a summary table (printed last) and machine-readable results under $OUT.
# A part that fails or runs out of time does not stop the others; each prints what it measured.
#
#   OUT=/some/dir bash benchmarks/gpu_kernels.sh      (the device tool provides $OUT)
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/runs/gpu_kernels}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONWARNINGS=ignore KERNELS_RESULTS_DIR=$OUT
PY=${PYTHON:-python}
BUDGET=${BUDGET_S:-465}
START=$(date +%s)

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# part NAME CAP_SECONDS CMD...: run CMD with min(CAP, time left) seconds; log to $OUT/NAME.log
part() {
    local name=$1 cap=$2 left
    shift 2
    left=$(remaining)
    if ((left < 25)); then
        echo "== $name: skipped (${left}s left)" | tee -a "$OUT/parts.txt"
        return
    fi
    ((cap > left)) && cap=$left
    echo "== $name (limit ${cap}s)"
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$cap" "$@" 2>&1 | tee "$OUT/$name.log" | grep -v -i "warn" | tail -n 40
    local rc=${PIPESTATUS[0]}
    echo "== $name: rc=$rc in $(($(date +%s) - t0))s" | tee -a "$OUT/parts.txt"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
    $PY - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
for name in ("triton", "transformers", "megatron.core", "liger_kernel", "flash_attn", "transformer_engine"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as err:
        print(name, "unavailable:", type(err).__name__)
EOF
} 2>&1 | tee "$OUT/env.txt"

# 1. correctness on the device
part tests 150 $PY -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/tests.xml" tests/kernels

# 2. whole model, llama3.2-1b, seq 4096, micro-batch 2, 4 micro-batches per step; the essential
#    comparison first, then per-kernel numbers, then the ablations while time is left.
MODEL=(benchmarks/kernels_model.py throughput --seq 4096 --accum 4 --warmup 2 --steps 4 --out "$OUT/model.jsonl")
part model_mcore_triton 70 $PY "${MODEL[@]}" --mb 2 --system mcore --kernels triton
part model_hf_liger 70 $PY "${MODEL[@]}" --mb 2 --system hf --liger
part model_mcore_torch 70 $PY "${MODEL[@]}" --mb 2 --system mcore --kernels torch

# 3. per kernel (torch.compile last within each op; results are appended as they come)
part ops 140 $PY benchmarks/kernels_ops.py --out "$OUT/kernels_ops.jsonl"

part model_hf 60 $PY "${MODEL[@]}" --mb 2 --system hf
part model_mcore_triton_no_wgrad_fusion 60 $PY "${MODEL[@]}" --mb 2 --system mcore --kernels triton --no-wgrad-fusion
part model_mcore_triton_mb4 60 $PY "${MODEL[@]}" --mb 4 --accum 2 --system mcore --kernels triton
part model_mcore_triton_no_fused_adam 60 $PY "${MODEL[@]}" --mb 2 --system mcore --kernels triton --no-fused-adam
part model_mcore_triton_selective_recompute 60 $PY "${MODEL[@]}" --mb 2 --system mcore --kernels triton \
    --recompute selective

# 4. the table
$PY benchmarks/kernels_summary.py "$OUT" 2>&1 | tee "$OUT/summary.txt"
echo "total $(($(date +%s) - START))s; results in $OUT"
