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
#   VENV           the virtual environment, relative to the repository root; default
#                  .venv. INSTALL=1 creates it (with the newest of python3.13,
#                  python3.12, python3.11, python3 that is >= 3.11); training uses its
#                  python when it exists.
#   PYTHON         Python interpreter to train with (>= 3.11) instead of VENV's;
#                  with INSTALL=1, the interpreter VENV is created with.
#   INSTALL        1: first create VENV and `pip install -e ".[gpu]"` into it (JAX's
#                  CUDA 13 wheels: NVIDIA driver >= 580; CUDA=12 for drivers >= 525),
#                  then import the VGG19 weights; default 0.
#   CUDA           13 (default) or 12: the CUDA wheels INSTALL=1 installs.
#   VGG_SOURCE     --source of `python -m srgan_jax.vgg19 import` run when INSTALL=1;
#                  default keras (downloads); empty: skip.
#   DRY_RUN        1 (or --dry-run): print the commands, one per line prefixed '+ ',
#                  instead of running them.
set -euo pipefail

: "${WORKDIR:=}" "${CONFIG:=configs/x4.py}" "${GPUS:=}" "${MEM_FRACTION:=}"
: "${TFDS_DATA_DIR:=}" "${EXTRA_ARGS:=}" "${VENV:=.venv}" "${PYTHON:=}" "${INSTALL:=0}"
: "${CUDA:=13}" "${VGG_SOURCE=keras}" "${DRY_RUN:=0}"

# JAX's own requirement (and setup.py's python_requires).
readonly MIN_PYTHON='3.11'

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Whether the interpreter $1 runs and is at least MIN_PYTHON. Dry runs ask too: it
# changes nothing, and the commands printed depend on it.
python_ok() {
  "$1" -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$MIN_PYTHON'.split('.'))))" \
    >/dev/null 2>&1
}

# The interpreter to create VENV with: PYTHON, else the newest suitable python3.x.
base_python() {
  local candidate
  if [[ -n $PYTHON ]]; then
    python_ok "$PYTHON" || die "PYTHON=$PYTHON is not Python >= $MIN_PYTHON, which JAX needs"
    echo "$PYTHON"
    return
  fi
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null && python_ok "$candidate"; then
      echo "$candidate"
      return
    fi
  done
  die "no Python >= $MIN_PYTHON found (JAX needs it) to create $VENV: install one" \
    "(Ubuntu 22.04: sudo apt install python3.11 python3.11-venv) or set PYTHON"
}

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
  [[ $CUDA == 13 || $CUDA == 12 ]] || die "CUDA must be 13 or 12, got '$CUDA'"
  [[ -n $VENV ]] || die "VENV must not be empty (see $0 --help)"

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
  local python=$PYTHON
  if [[ $INSTALL == 1 ]]; then
    local base package_extra=gpu
    base=$(base_python) || exit 1
    if [[ $CUDA == 12 ]]; then package_extra=gpu-cuda12; fi
    # A virtual environment: Debian and Ubuntu >= 23.04 refuse pip installs into the
    # system Python (PEP 668), and Ubuntu 22.04's python3 is 3.10.
    if [[ ! -x $VENV/bin/python ]]; then
      run "$base" -m venv "$VENV" || die "cannot create the virtual environment $VENV with" \
        "$base (Debian/Ubuntu: sudo apt install $base-venv)"
    fi
    python=$VENV/bin/python
    run "$python" -m pip install -U pip
    run "$python" -m pip install -e ".[$package_extra]"
    if [[ -n $VGG_SOURCE ]]; then
      run "$python" -m srgan_jax.vgg19 import "--source=$VGG_SOURCE"
    fi
  else
    if [[ -z $python ]]; then
      python=python3
      if [[ -x $VENV/bin/python ]]; then python=$VENV/bin/python; fi
    fi
    python_ok "$python" || die "$python is not Python >= $MIN_PYTHON (JAX needs it): run" \
      "with INSTALL=1 to create $VENV, or set PYTHON"
  fi
  local -a train=(env "${environment[@]}" "$python" -m srgan_jax.main
    "--config=$CONFIG" "--workdir=$WORKDIR" "${extra[@]}")
  show "${train[@]}"
  # exec: the job itself gets the signals sent to this script, so SIGTERM from a
  # scheduler or `kill` reaches it and it saves a checkpoint before exiting.
  if [[ $DRY_RUN == 0 ]]; then exec "${train[@]}"; fi
}

main "$@"
