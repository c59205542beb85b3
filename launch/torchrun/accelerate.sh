#!/bin/bash
# The post-training launcher (TRL SFT / DPO through accelerate), single node or many, once per node.
#   launch/torchrun/accelerate.sh megatron_infi.posttrain.sft --config launch/configs/posttrain/infialign_sft.yaml
#   ACCEL_CONFIG=launch/accelerate/fsdp2_multinode.yaml launch/torchrun/accelerate.sh megatron_infi.posttrain.dpo --config X
# ACCEL_CONFIG: an accelerate config (default: DeepSpeed ZeRO-3, launch/accelerate/zero3_multinode.yaml);
# node layout from the environment or SLURM exactly as run.sh (see env.sh). The config is validated
# with --dry-run first. Resuming is the stage's own: rerun the same command and it continues from its
# last complete checkpoint.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULE=${1:?usage: launch/torchrun/accelerate.sh MODULE --config X.yaml [k=v ...]}
shift
# shellcheck source=launch/torchrun/env.sh
source "$HERE/env.sh"
PYTHON=${PYTHON:-python}
ACCELERATE=${ACCELERATE:-accelerate}
ACCEL_CONFIG=${ACCEL_CONFIG:-$HERE/../accelerate/zero3_multinode.yaml}

if [[ ${INFI_CONFIG_CHECKED:-0} != 1 ]] && ! INFI_REQUIRE_INPUTS=1 "$PYTHON" -m "$MODULE" "$@" --dry-run >/dev/null; then
  echo "accelerate.sh: $MODULE rejected its config (above); nothing was launched" >&2
  exit 2
fi

cmd=("$ACCELERATE" launch --config_file "$ACCEL_CONFIG"
  --num_machines "$NNODES" --machine_rank "$NODE_RANK" --num_processes $((NNODES * NPROC_PER_NODE))
  --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" -m "$MODULE" "$@")

infi_start_log "${MODULE##*.}"
echo "[launch] ${cmd[*]}"
infi_run_child "${cmd[@]}"
echo "[launch] $(date -Is) exit code $INFI_RC"
infi_end_log
exit "$INFI_RC"
