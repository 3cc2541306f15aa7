#!/usr/bin/env bash
# Trains srgan_jax on the GPUs of this machine. One process drives every visible GPU
# (the batch is sharded over all of them), so one GPU or all GPUs of the host need no
# multi-process setup. The commands run from the repository root.
#
# Usage: launch/gpu_local.sh [--dry-run]
#
# Variables (environment):
#   WORKDIR        required. Checkpoints and summaries: a local directory or gs://...;
#                  a restart with the same WORKDIR resumes from its latest checkpoint.
#   CONFIG         config file, relative to the repository root; default configs/x4.py.
#   GPUS           GPUs to use, e.g. 0 or 0,1 (sets CUDA_VISIBLE_DEVICES);
#                  default: all visible GPUs.
#   MEM_FRACTION   fraction of each GPU's memory JAX preallocates, in (0, 1]
#                  (sets XLA_PYTHON_CLIENT_MEM_FRACTION); default: JAX's (0.75).
#   TFDS_DATA_DIR  TFDS data directory (local or gs://); default: the config's.
#   EXTRA_ARGS     more flags for srgan_jax.main, e.g. '--config.batch_size=32';
#                  split into words like a shell does (quotes respected, nothing
#                  expanded).
#   PYTHON         Python interpreter (>= 3.11, e.g. a virtual environment's);
#                  default python3.
#   INSTALL        1: first `pip install -e ".[gpu]"` (jax[cuda12]) into PYTHON's
#                  environment and import the VGG19 weights; default 0.
#   VGG_SOURCE     --source of `python -m srgan_jax.vgg19 import` run when INSTALL=1;
#                  default keras (downloads); empty: skip.
#   DRY_RUN        1 (or --dry-run): print the commands, one per line prefixed '+ ',
#                  instead of running them.
set -euo pipefail

: "${WORKDIR:=}" "${CONFIG:=configs/x4.py}" "${GPUS:=}" "${MEM_FRACTION:=}"
: "${TFDS_DATA_DIR:=}" "${EXTRA_ARGS:=}" "${PYTHON:=python3}" "${INSTALL:=0}"
: "${VGG_SOURCE=keras}" "${DRY_RUN:=0}"

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
  local arg
  for arg in "$@"; do
    case $arg in
      --dry-run) DRY_RUN=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      *)
        usage >&2
        die "unknown argument '$arg'"
        ;;
    esac
  done
  [[ $DRY_RUN == 0 || $DRY_RUN == 1 ]] || die "DRY_RUN must be 0 or 1, got '$DRY_RUN'"
  [[ $INSTALL == 0 || $INSTALL == 1 ]] || die "INSTALL must be 0 or 1, got '$INSTALL'"
  [[ -n $WORKDIR ]] || die "missing required variable WORKDIR (see $0 --help)"
  [[ -n $CONFIG ]] || die "CONFIG must not be empty (see $0 --help)"
  if [[ -n $MEM_FRACTION && ! $MEM_FRACTION =~ ^(0?\.[0-9]*[1-9][0-9]*|1|1\.0*)$ ]]; then
    die "MEM_FRACTION must be a number in (0, 1], got '$MEM_FRACTION'"
  fi
  [[ $GPUS != *[[:space:]]* ]] || die "GPUS must be comma-separated without spaces, got '$GPUS'"

  local -a environment=() extra=()
  if [[ -n $GPUS ]]; then environment+=("CUDA_VISIBLE_DEVICES=$GPUS"); fi
  if [[ -n $MEM_FRACTION ]]; then environment+=("XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION"); fi
  if [[ -n $TFDS_DATA_DIR ]]; then extra+=("--config.data.tfds_data_dir=$TFDS_DATA_DIR"); fi
  # xargs splits EXTRA_ARGS the way a shell would, without expanding anything.
  if [[ $EXTRA_ARGS =~ [^[:space:]] ]]; then
    local words word
    words=$(printf '%s' "$EXTRA_ARGS" | xargs printf '%s\n') ||
      die "cannot split EXTRA_ARGS (unbalanced quotes?)"
    while IFS= read -r word; do extra+=("$word"); done <<<"$words"
  fi

  cd "$(dirname "$0")/.."
  if [[ $INSTALL == 1 ]]; then
    run "$PYTHON" -m pip install -e '.[gpu]'
    if [[ -n $VGG_SOURCE ]]; then
      run "$PYTHON" -m srgan_jax.vgg19 import "--source=$VGG_SOURCE"
    fi
  fi
  local -a train=(env "${environment[@]}" "$PYTHON" -m srgan_jax.main
    "--config=$CONFIG" "--workdir=$WORKDIR" "${extra[@]}")
  show "${train[@]}"
  # exec: the job itself gets the signals sent to this script, so SIGTERM from a
  # scheduler or `kill` reaches it and it saves a checkpoint before exiting.
  if [[ $DRY_RUN == 0 ]]; then exec "${train[@]}"; fi
}

main "$@"
