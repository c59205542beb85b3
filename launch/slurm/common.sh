# Sourced by every launch/slurm/*.sbatch: environment, config check, the job step, and preemption.
# Submit from the repository root (sbatch copies the script away, so the repo is found through
# SLURM_SUBMIT_DIR; INFI_ROOT overrides it), after `mkdir -p logs` (SLURM does not create the dir of
# --output, and a job whose log cannot be opened fails without a word).
#
# Preemption and time limits: each sbatch asks for `--signal=B:USR1@180 --requeue`, so 180 s before
# the end SLURM sends USR1 to this batch shell, and infi_step reacts by its SIGNAL_MODE:
#   forward  the stage checkpoints on SIGUSR1 and exits 0 (megatron_infi.train; infi sft / dpo through
#            megatron_infi/posttrain/preemption.py): the signal goes to the
#            job step (srun hands it to every task; run.sh hands it to the ranks); when the step has
#            exited cleanly the job is requeued and the next run auto-resumes from that checkpoint.
#   requeue  the stage resumes by itself from its last checkpoint / cache (generation, datatrove):
#            requeue at once; SLURM stops this run and starts the job again.
#   none     ignore it (short jobs).
# Environment: VENV (default .venv; used when it has bin/activate, else the python on PATH),
# PYTHON (default python), LOG_DIR (default logs).
# shellcheck shell=bash

INFI_ROOT=${INFI_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$INFI_ROOT"
export INFI_ROOT
VENV=${VENV:-.venv}
if [[ -f $VENV/bin/activate ]]; then
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
fi
export PYTHON=${PYTHON:-python}
export LOG_DIR=${LOG_DIR:-logs}
mkdir -p "$LOG_DIR"
# Since SLURM 22.05 srun no longer inherits --cpus-per-task from the allocation.
if [[ -n ${SLURM_CPUS_PER_TASK:-} ]]; then
  export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK
fi

infi_log() {
  echo "[sbatch] $(date -Is) $*"
}

infi_banner() {
  infi_log "job ${SLURM_JOB_NAME:-?} ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0})" \
    "nodes ${SLURM_NNODES:-1} [${SLURM_JOB_NODELIST:-$(hostname)}] in $INFI_ROOT" \
    "commit $(git -C "$INFI_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  infi_log "command: $*"
}

# infi_check_config MODULE --config X.yaml [k=v ...]: print the resolved config into the job log, or
# stop the job (exit 2) before any node is touched. The launchers then skip their own check.
infi_check_config() {
  local module=$1
  shift
  # INFI_REQUIRE_INPUTS: the stage runs now, so an input still to be produced is an error here
  if ! INFI_REQUIRE_INPUTS=1 "$PYTHON" -m "$module" "$@" --dry-run; then
    infi_log "config rejected by $module (above): nothing was launched"
    exit 2
  fi
  export INFI_CONFIG_CHECKED=1
}

# infi_step MODE srun-args... : run one job step, handle the preemption signal by MODE, requeue when
# due, and exit with the step's exit code.
infi_step() {
  INFI_SIGNAL_MODE=$1
  shift
  INFI_REQUEUE=0
  srun --kill-on-bad-exit=1 "$@" &
  INFI_STEP_PID=$!
  trap infi_on_signal USR1
  local rc
  while true; do
    set +e
    wait "$INFI_STEP_PID"
    rc=$?
    set -e
    if ((rc > 128)) && kill -0 "$INFI_STEP_PID" 2>/dev/null; then
      continue  # a trapped signal interrupted wait; the step is still running
    fi
    break
  done
  trap - USR1
  infi_log "step exited with code $rc"
  if ((INFI_REQUEUE)); then
    if ((rc == 0)); then
      infi_requeue
    else
      infi_log "not requeueing: the step failed after the signal (see above)"
    fi
  fi
  exit "$rc"
}

infi_on_signal() {
  case $INFI_SIGNAL_MODE in
    forward)
      infi_log "USR1 (time limit or preemption near): asking the step to checkpoint and exit"
      INFI_REQUEUE=1
      kill -USR1 "$INFI_STEP_PID" 2>/dev/null || true
      ;;
    requeue)
      infi_log "USR1 (time limit or preemption near): requeueing; the stage resumes from its last checkpoint"
      infi_requeue
      ;;
    *)
      infi_log "USR1 ignored (SIGNAL_MODE=$INFI_SIGNAL_MODE)"
      ;;
  esac
}

infi_requeue() {
  if scontrol requeue "${SLURM_JOB_ID:?}"; then
    infi_log "requeued job $SLURM_JOB_ID"
  else
    infi_log "scontrol requeue failed (JobRequeue disabled on this cluster?): resubmit the same command to resume"
  fi
}
