#!/usr/bin/env bash
# Everything the kernels work needs from one H100 / H200, in one run of <= 8 minutes:
#   0. the environment and the resolved fusions of every model.kernels backend
#      (benchmarks/resolved_fusions.py: modules, attention, TransformerConfig fusions, AdamW kernel),
#   1. correctness: the gpu-marked kernel tests (each kernel vs its fp32 definition; the 20-step
#      kernels=triton vs kernels=torch parity of llama3.2-1b, judged on the step-0 loss and grad
#      norm and the mean loss difference), or, where pytest is not installed, the kernels'
#      self-check (`python -m megatron_infi.kernels.selfcheck`: the same comparison per kernel),
#   2. whole-model throughput, llama3.2-1b at seq 4096, micro-batch 2, 4 micro-batches per step,
#      through the Foundation's harness (benchmarks/train_throughput.py: the real Trainer; HF and
#      HF + Liger in pure bf16): kernels=triton, HF + Liger, kernels=torch, HF,
#   3. per-kernel forward+backward vs torch eager, torch.compile and Liger (GB/s vs copy bandwidth),
#   4. ablations while time is left (foreach AdamW, no wgrad fusion, micro-batch 4, selective recompute),
#   5. a summary table (printed last) and machine-readable results under $OUT.
# A part that fails or runs out of time does not stop the others; each prints what it measured.
#
#   OUT=/some/dir bash benchmarks/gpu_kernels.sh      (the device tool provides $OUT)
#
# Needs python3 with torch (CUDA) and triton; megatron-core, liger-kernel (and pytest, optional)
# either installed or carried as wheels in .whl/, which are installed to /tmp/site first.
# Environment: PYTHON (default python3), BUDGET_S (default 465), PARTS (default all; a subset of
# "env correctness model ops ablations summary"), TRITON_CACHE_DIR (default a directory under /tmp
# shared by every process of the run, so each kernel compiles once).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/runs/gpu_kernels}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-465}
PARTS=${PARTS:-all}
START=$(date +%s)
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || echo "wheel install failed"
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore HF_HUB_OFFLINE=1 WANDB_MODE=offline KERNELS_RESULTS_DIR=$OUT
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-${TMPDIR:-/tmp}/megatron-infi-triton-cache}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-${TMPDIR:-/tmp}/megatron-infi-inductor-cache}
mkdir -p "$TRITON_CACHE_DIR"

wanted() { [[ $PARTS == all || " $PARTS " == *" $1 "* ]]; }
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
    return $rc
}

# bench LABEL CAP IMPL [train_throughput args / overrides]: one row of $OUT/throughput.jsonl
bench() {
    local label=$1 cap=$2 impl=$3
    shift 3
    part "$label" "$cap" $PY benchmarks/train_throughput.py --impl "$impl" --label "$label" \
        --preset llama3.2-1b --seq 4096 --mbs 2 --gbs 8 --warmup 2 --steps 4 "$@"
    local row
    row=$(grep '^{' "$OUT/$label.log" 2>/dev/null | tail -1)
    if [[ -z $row ]]; then
        row="{\"label\": \"$label\", \"error\": \"no result (see $label.log)\"}"
    fi
    echo "$row" >>"$OUT/throughput.jsonl"
}

if wanted env; then
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
        $PY - <<'EOF'
import importlib, torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "(no CUDA device)")
for name in ("triton", "transformers", "megatron.core", "liger_kernel", "flash_attn", "transformer_engine", "pytest"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"))
    except Exception as err:
        print(name, "unavailable:", type(err).__name__)
EOF
        echo "TRITON_CACHE_DIR=$TRITON_CACHE_DIR (shared by this run's processes)"
    } 2>&1 | tee "$OUT/env.txt"
    echo "== resolved fusions (llama3.2-1b, bf16)"
    $PY benchmarks/resolved_fusions.py --preset llama3.2-1b 2>/dev/null | tee "$OUT/fusions.jsonl"
fi

# 1. correctness on the device: pytest where installed, else the self-check (still a verdict)
if wanted correctness; then
    if $PY -c "import pytest" 2>/dev/null; then
        part tests 150 $PY -m pytest -q -m gpu -p no:cacheprovider --junitxml="$OUT/tests.xml" tests/kernels
    else
        echo "pytest is not installed: the kernels' self-check gives the correctness verdict"
        part selfcheck 150 $PY -m megatron_infi.kernels.selfcheck --out "$OUT"
    fi
fi

# 2. whole model: the comparison the issue asks for
if wanted model; then
    bench mcore-triton 75 mcore model.kernels=triton
    bench hf-liger 75 hf-liger
    bench mcore-torch 75 mcore model.kernels=torch
fi

# 3. per kernel (torch.compile last within each op; results are appended as they come)
if wanted ops; then
    part ops 140 $PY benchmarks/kernels_ops.py --out "$OUT/kernels_ops.jsonl"
fi

# 4. more rows and ablations while time is left (the trainer's default is fused AdamW on GPU)
if wanted ablations; then
    bench hf 60 hf
    MODEL=(benchmarks/kernels_model.py throughput --seq 4096 --mb 2 --accum 4 --warmup 2 --steps 4 --system mcore
        --kernels triton --out "$OUT/model.jsonl")
    part ablation_foreach_adamw 60 $PY "${MODEL[@]}" --no-fused-adam
    part ablation_no_wgrad_fusion 60 $PY "${MODEL[@]}" --no-wgrad-fusion
    bench mcore-triton-mbs4 60 mcore --mbs 4 model.kernels=triton
    bench mcore-triton-selective 60 mcore model.kernels=triton model.recompute=selective
fi

# 5. the table
if wanted summary; then
    $PY benchmarks/kernels_summary.py "$OUT" 2>&1 | tee "$OUT/summary.txt"
fi
echo "total $(($(date +%s) - START))s; results in $OUT"
