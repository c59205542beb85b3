# Sourced by launch/torchrun/run.sh and accelerate.sh: resolves where this process sits in a
# multi-node job and sets the runtime defaults. Every variable below is taken from the environment
# when set, else from SLURM's variables, else a single-node default, so the same launcher works under
# sbatch/srun, on a bare multi-node cluster (export the five variables on every node) and on a laptop.
#
#   NNODES         SLURM_NNODES, else 1
#   NODE_RANK      SLURM_NODEID, else 0
#   MASTER_ADDR    first host of SLURM_JOB_NODELIST (scontrol show hostnames), else 127.0.0.1
#   MASTER_PORT    20000 + SLURM_JOB_ID % 20000 (two jobs sharing a node do not collide), else 29500
#   GPUS_PER_NODE  SLURM_GPUS_PER_NODE ("h100:8" -> 8), SLURM_GPUS_ON_NODE, nvidia-smi's count, else 1
#   NPROC_PER_NODE processes per node (default GPUS_PER_NODE; e.g. 2 for a CPU run with TP=2)
#   LOG_DIR        where the per-node log goes (default logs/)
# shellcheck shell=bash

infi_count_gpus() {
  local value=${SLURM_GPUS_PER_NODE:-}
  if [[ -n $value ]]; then
    value=${value##*:}  # "h100:8" or "gpu:h100:8" -> "8"
    echo "${value%%(*}"  # "8(x2)" -> "8"
  elif [[ -n ${SLURM_GPUS_ON_NODE:-} ]]; then
    echo "$SLURM_GPUS_ON_NODE"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    nvidia-smi -L | grep -c '^GPU'
  else
    echo 1
  fi
}

infi_master_addr() {
  if [[ -n ${SLURM_JOB_NODELIST:-} ]] && command -v scontrol >/dev/null 2>&1; then
    scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1
  else
    echo 127.0.0.1
  fi
}

infi_master_port() {
  if [[ -n ${SLURM_JOB_ID:-} ]]; then
    echo $((20000 + SLURM_JOB_ID % 20000))
  else
    echo 29500
  fi
}

export NNODES=${NNODES:-${SLURM_NNODES:-1}}
export NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-0}}
export MASTER_ADDR=${MASTER_ADDR:-$(infi_master_addr)}
export MASTER_PORT=${MASTER_PORT:-$(infi_master_port)}
export GPUS_PER_NODE=${GPUS_PER_NODE:-$(infi_count_gpus)}
export NPROC_PER_NODE=${NPROC_PER_NODE:-$GPUS_PER_NODE}

# Runtime defaults; each is overridable by exporting it before the launch.
INFI_CPUS=${SLURM_CPUS_ON_NODE:-$(nproc)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$((INFI_CPUS / NPROC_PER_NODE > 0 ? INFI_CPUS / NPROC_PER_NODE : 1))}
# megatron-core orders tensor-parallel communication before compute on one CUDA stream.
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
# A failed collective tears the job down (and the sbatch fails) instead of hanging until the timeout.
export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}
export TOKENIZERS_PARALLELISM=${TOKENIZERS_PARALLELISM:-false}
export PYTHONUNBUFFERED=1
export LOG_DIR=${LOG_DIR:-logs}

# One log per job and node: <job name>-<job id>-node<rank>.log (a requeued job appends to its own).
infi_start_log() {
  local name=$1 job_id
  job_id=${SLURM_JOB_ID:-$(date +%Y%m%d-%H%M%S)-$$}
  mkdir -p "$LOG_DIR"
  INFI_LOG_FILE="$LOG_DIR/${SLURM_JOB_NAME:-$name}-${job_id}-node${NODE_RANK}.log"
  exec {INFI_ORIG_OUT}>&1 {INFI_ORIG_ERR}>&2
  # tee ignores the job's signals so that it keeps writing until the launcher itself is done.
  exec > >(trap '' INT TERM USR1; exec tee -a "$INFI_LOG_FILE") 2>&1
  INFI_TEE_PID=$!
  echo "[launch] $(date -Is) $(hostname) node ${NODE_RANK}/${NNODES} master ${MASTER_ADDR}:${MASTER_PORT}" \
    "nproc ${NPROC_PER_NODE} log ${INFI_LOG_FILE}"
}

# Close the pipe to tee and let it drain before the launcher exits.
infi_end_log() {
  exec 1>&"$INFI_ORIG_OUT" 2>&"$INFI_ORIG_ERR"
  wait "$INFI_TEE_PID" 2>/dev/null || true
}

# Run "$@" in the background with SIGUSR1 ignored (torchrun would die of it; the trainer installs its
# own handler, which replaces the inherited ignore), forward USR1 to the workers and TERM to the child,
# and wait for it. Sets INFI_RC. With INFI_FORWARD_TO=children, USR1 goes to the child's children (the
# ranks under torchrun / accelerate); with self, to the child.
infi_run_child() {
  (
    trap '' USR1
    exec "$@"
  ) &
  INFI_CHILD=$!
  trap 'infi_forward USR1' USR1
  trap 'infi_forward TERM' TERM
  while true; do
    set +e
    wait "$INFI_CHILD"
    INFI_RC=$?
    set -e
    # wait returns > 128 when a trapped signal interrupts it; the child may still be running.
    if ((INFI_RC > 128)) && kill -0 "$INFI_CHILD" 2>/dev/null; then
      continue
    fi
    break
  done
  trap - USR1 TERM
}

infi_forward() {
  local sig=$1 targets
  if [[ $sig == USR1 && ${INFI_FORWARD_TO:-children} == children ]]; then
    targets=$(pgrep -P "$INFI_CHILD" || true)
  else
    targets=$INFI_CHILD
  fi
  echo "[launch] $(date -Is) SIG${sig}: forwarding to ${targets:-nobody}"
  if [[ -n $targets ]]; then
    # shellcheck disable=SC2086  # one pid per word
    kill -s "$sig" $targets 2>/dev/null || true
  fi
}
