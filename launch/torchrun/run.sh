#!/bin/bash
# One launcher for the megatron-core stages, single node or many (run it once per node; srun does).
#   launch/torchrun/run.sh megatron_infi.train --config launch/configs/pretrain/infir_1b_pretrain.yaml [k=v ...]
#   launch/torchrun/run.sh megatron_infi.checkpoints_tools.from_hf --hf DIR --out CKPT --tp 1 --pp 1   # one process
#   launch/torchrun/run.sh megatron_infi.checkpoints_tools.to_hf --load CKPT --out DIR                  # one process
#   launch/torchrun/run.sh megatron_infi.checkpoints_tools.verify --load CKPT --hf DIR --tp 2           # tp x pp ranks
#   NPROC_PER_NODE=2 launch/torchrun/run.sh megatron_infi.train --config launch/configs/demo/pretrain.yaml ...
# Node layout comes from the environment or SLURM (see env.sh). A `--config` is validated with
# `--dry-run` before anything starts: a bad config exits 2 here, on every node, with the field named.
# SIGUSR1 / SIGTERM are forwarded to the training ranks, which checkpoint and exit cleanly.
# PYTHON / TORCHRUN name the interpreter and torchrun (default: the ones on PATH).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODULE=${1:?usage: launch/torchrun/run.sh MODULE [args...]}
shift
# shellcheck source=launch/torchrun/env.sh
source "$HERE/env.sh"
PYTHON=${PYTHON:-python}
TORCHRUN=${TORCHRUN:-torchrun}

# Value of --NAME N or --NAME=N in the arguments (default $2).
arg_value() {
  local name=$1 default=$2
  shift 2
  while (($#)); do
    case $1 in
      "$name") echo "${2:-$default}"; return ;;
      "$name"=*) echo "${1#*=}"; return ;;
    esac
    shift
  done
  echo "$default"
}

has_config=0
for arg in "$@"; do
  [[ $arg == --config || $arg == --config=* ]] && has_config=1
done
if ((has_config)) && [[ ${INFI_CONFIG_CHECKED:-0} != 1 ]]; then
  if ! INFI_REQUIRE_INPUTS=1 "$PYTHON" -m "$MODULE" "$@" --dry-run >/dev/null; then
    echo "run.sh: $MODULE rejected its config (above); nothing was launched" >&2
    exit 2
  fi
fi

case $MODULE in
  megatron_infi.checkpoints_tools.from_hf | megatron_infi.checkpoints_tools.to_hf)
    # The converters stream one model in one process; other nodes of a job have nothing to do.
    if ((NODE_RANK != 0)); then
      echo "run.sh: $MODULE runs on node 0 only"
      exit 0
    fi
    cmd=("$PYTHON" -m "$MODULE" "$@")
    INFI_FORWARD_TO=self
    ;;
  megatron_infi.checkpoints_tools.verify)
    NNODES=1
    NPROC_PER_NODE=$(($(arg_value --tp 1 "$@") * $(arg_value --pp 1 "$@")))
    cmd=("$TORCHRUN" --nnodes=1 --node-rank=0 --nproc-per-node="$NPROC_PER_NODE"
      --master-addr=127.0.0.1 --master-port="$MASTER_PORT" -m "$MODULE" "$@")
    ;;
  *)
    cmd=("$TORCHRUN" --nnodes="$NNODES" --node-rank="$NODE_RANK" --nproc-per-node="$NPROC_PER_NODE"
      --master-addr="$MASTER_ADDR" --master-port="$MASTER_PORT" -m "$MODULE" "$@")
    ;;
esac

infi_start_log "${MODULE##*.}"
echo "[launch] ${cmd[*]}"
infi_run_child "${cmd[@]}"
echo "[launch] $(date -Is) exit code $INFI_RC"
infi_end_log
exit "$INFI_RC"
