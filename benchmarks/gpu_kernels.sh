#!/usr/bin/env bash
# Everything the kernels work needs from one H100, in one run of <= 8 minutes:
#   1. the gpu-marked kernel tests (each kernel vs its fp32 definition, bf16 and fp32 bounds; the
#      20-step kernels=triton vs kernels=torch loss-curve parity of the llama3.2-1b model),
#   2. whole-model throughput, llama3.2-1b at seq 4096, micro-batch 2, 4 micro-batches per step,
#      through the Foundation's harness (benchmarks/train_throughput.py: the real Trainer; HF and
#      HF + Liger in pure bf16): kernels=triton, HF + Liger, kernels=torch, HF,
#   3. per-kernel forward+backward vs torch eager, torch.compile and Liger (GB/s vs copy bandwidth),
#   4. ablations while time is left (fused AdamW, wgrad fusion, micro-batch 4, selective recompute),
#   5. a summary table (printed last) and machine-readable results under $OUT.
# A part that fails or runs out of time does not stop the others; each prints what it measured.
#
#   OUT=/some/dir bash benchmarks/gpu_kernels.sh      (the device tool provides $OUT)
# Carried wheels in .whl/ (megatron-core, liger-kernel) are installed to /tmp/site first, as
# benchmarks/gpu_suite.sh does.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/runs/gpu_kernels}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-465}
START=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "wheel install failed"
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 WANDB_MODE=offline KERNELS_RESULTS_DIR=$OUT

remaining() { echo $((BUDGET - ($(date +%s) - START))); }

# part NAME CAP_SECONDS CMD...: run CMD with min(CAP, time left) seconds; log to $OUT/NAME.log
part() {
    local name=$1 cap=$2 left
    shift 2
    left=$(remaining)
    if ((left < 25)); then
        echo "== $name: skipped (${left}s left)" | tee -a "$OUT/parts.txt"
        return 1
    fi
    ((cap > left)) && cap=$left
    echo "== $name (limit ${cap}s)"
    local t0=$(date +%s)
    timeout --signal=INT --kill-after=10 "$cap" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    grep -v -i "warn" "$OUT/$name.log" | tail -n 25
    echo "== $name: rc=$rc in $(($(date +%s) - t0))s" | tee -a "$OUT/parts.txt"
}

# bench LABEL CAP IMPL [train_throughput args / overrides]: one row of $OUT/throughput.jsonl
bench() {
    local label=$1 cap=$2 impl=$3
    shift 3
    part "$label" "$cap" $PY benchmarks/train_throughput.py --impl "$impl" --label "$label" \
        --preset llama3.2-1b --seq 4096 --mbs 2 --gbs 8 --warmup 2 --steps 4 "$@" || return
    local row
    row=$(grep '^{' "$OUT/$label.log" | tail -1)
    if [[ -z $row ]]; then
        row="{\"label\": \"$label\", \"error\": \"no result (see $label.log)\"}"
    fi
    echo "$row" >>"$OUT/throughput.jsonl"
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

# 2. whole model: the comparison the issue asks for
bench mcore-triton 75 mcore model.kernels=triton
bench hf-liger 75 hf-liger
bench mcore-torch 75 mcore model.kernels=torch

# 3. per kernel (torch.compile last within each op; results are appended as they come)
part ops 140 $PY benchmarks/kernels_ops.py --out "$OUT/kernels_ops.jsonl"

# 4. more rows and ablations while time is left
bench hf 60 hf
MODEL=(benchmarks/kernels_model.py throughput --seq 4096 --mb 2 --accum 4 --warmup 2 --steps 4 --system mcore
    --kernels triton --out "$OUT/model.jsonl")
part ablation_fused_adamw 60 $PY "${MODEL[@]}"
part ablation_no_wgrad_fusion 60 $PY "${MODEL[@]}" --no-fused-adam --no-wgrad-fusion
bench mcore-triton-mbs4 60 mcore --mbs 4 model.kernels=triton
bench mcore-triton-selective 60 mcore model.kernels=triton model.recompute=selective

# 5. the table
$PY benchmarks/kernels_summary.py "$OUT" 2>&1 | tee "$OUT/summary.txt"
echo "total $(($(date +%s) - START))s; results in $OUT"
