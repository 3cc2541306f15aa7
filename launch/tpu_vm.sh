#!/usr/bin/env bash
# Trains srgan_jax on a Cloud TPU VM: one host (v4-8, v5litepod-8, v6e-8, ...) or a
# pod slice (v4-32, v5litepod-32, ...), where every worker runs the same command and
# srgan_jax.main joins them with jax.distributed.initialize().
#
# Usage: launch/tpu_vm.sh [--dry-run] COMMAND
#   create   create the TPU VM (QUEUED=1: request it as a queued resource, with a
#            startup script that installs and trains at every boot of every worker)
#   install  copy this checkout to every worker (or git clone REPO_URL there),
#            pip install it with jax[tpu] into ~/srgan_venv, import the VGG19 weights
#   train    start training in the background on every worker (log: ~/srgan_train.log),
#            with SRGAN_CLOUD_TPU=1: srgan_jax starts JAX's distributed runtime, which
#            reads the pod's workers from the VM metadata
#   logs [--worker=N|all]
#            follow worker N's log (default 0); all: every worker's, each line
#            prefixed with the worker's hostname
#   stop     send SIGTERM to the training job on every worker and wait until it has
#            saved a checkpoint and ended (train, or a queued VM's reboot, resumes it)
#   delete   delete the TPU VM (QUEUED=1: the queued resource and its VM)
#   recreate delete, then create (after a Spot preemption; QUEUED=1: the new VM
#            installs and resumes training from WORKDIR by itself)
#   all      create, install, train (QUEUED=1: create; the startup script does the rest)
#
# Variables (environment):
#   TPU_NAME          required. Name of the TPU VM.
#   ZONE              required. A zone offering ACCELERATOR_TYPE
#                     (https://cloud.google.com/tpu/docs/regions-zones).
#   PROJECT           Google Cloud project; default: gcloud's core/project.
#   ACCELERATOR_TYPE  default v5litepod-8.
#   RUNTIME_VERSION   TPU software version; default from ACCELERATOR_TYPE:
#                     v6e -> v2-alpha-tpuv6e, v5p -> v2-alpha-tpuv5,
#                     v5litepod/v5e -> v2-alpha-tpuv5-lite, v2/v3/v4 -> tpu-ubuntu2204-base.
#   SPOT              1: create a Spot TPU VM (--spot); default 0.
#   QUEUED            1: create through a queued resource (`gcloud compute tpus
#                     queued-resources create`, as Google recommends for Spot TPUs)
#                     whose startup script, run as root at every boot of every worker,
#                     installs REPO_URL and starts training (resuming from WORKDIR);
#                     needs REPO_URL, WORKDIR and TFDS_DATA_DIR at create. The job then
#                     belongs to root: install, train, logs and stop run as root too.
#                     Default 0.
#   PREEMPTIBLE       1: create a (legacy) preemptible TPU VM (--preemptible); default 0.
#   CONFIG            config file, relative to the repository root; default configs/x4.py.
#   WORKDIR           required by train and all. gs:// directory for checkpoints and
#                     summaries: shared by all workers, outlives the VM, so a new VM
#                     with the same WORKDIR resumes from its latest checkpoint.
#   TFDS_DATA_DIR     required by train and all. gs:// TFDS data directory, which every
#                     worker reads (--config.data.tfds_data_dir); or the word config to
#                     keep the config's data settings (a config that reads no TFDS).
#   EXTRA_ARGS        more flags for srgan_jax.main, e.g. '--config.batch_size=32';
#                     split into words like a shell does (quotes respected, nothing
#                     expanded).
#   REPO_URL          if set, install git-clones it on the workers instead of copying
#                     this checkout (tracked and non-ignored files as they are now).
#   REPO_REF          branch, tag or commit of REPO_URL; default: its default branch.
#   VGG_SOURCE        --source of `python -m srgan_jax.vgg19 import` run by install on
#                     every worker; default keras (downloads); empty: skip.
#   DRY_RUN           1 (or --dry-run): print the gcloud commands, one per line
#                     prefixed '+ ', instead of running them.
set -euo pipefail

: "${TPU_NAME:=}" "${ZONE:=}" "${PROJECT:=}"
: "${ACCELERATOR_TYPE:=v5litepod-8}" "${RUNTIME_VERSION:=}"
: "${SPOT:=0}" "${PREEMPTIBLE:=0}"
: "${CONFIG:=configs/x4.py}" "${WORKDIR:=}" "${TFDS_DATA_DIR:=}" "${EXTRA_ARGS:=}"
: "${REPO_URL:=}" "${REPO_REF:=HEAD}" "${VGG_SOURCE=keras}" "${DRY_RUN:=0}" "${QUEUED:=0}"
WORKER=''  # logs --worker=N|all.

# Where things live on every worker: the tilde is for the workers' shell to expand.
# shellcheck disable=SC2088
readonly REMOTE_REPO='~/srgan_jax' REMOTE_VENV='~/srgan_venv'
# shellcheck disable=SC2088
readonly REMOTE_LOG='~/srgan_train.log' REMOTE_PID='~/srgan_train.pid'
STAGE_DIR='' STARTUP_SCRIPT=''

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }

# shellcheck source=launch/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# Fails, naming all of them, unless every variable named is non-empty.
require() {
  local name missing=''
  for name in "$@"; do
    [[ -n ${!name} ]] || missing+=" $name"
  done
  [[ -z $missing ]] || die "missing required variable(s):$missing (see $0 --help)"
}

# gcloud compute tpus tpu-vm ARGS..., in ZONE and PROJECT.
tpu_vm() {
  run gcloud compute tpus tpu-vm "$@" --zone="$ZONE" ${PROJECT:+"--project=$PROJECT"}
}

# gcloud compute tpus queued-resources ARGS..., in ZONE and PROJECT.
queued_resources() {
  run gcloud compute tpus queued-resources "$@" --zone="$ZONE" ${PROJECT:+"--project=$PROJECT"}
}

# A remote command as the job's owner: with QUEUED=1 the startup script runs the job
# as root (in /root), so the commands that reach its files run as root too.
as_job_owner() {
  if [[ $QUEUED == 1 ]]; then
    printf 'sudo -H bash -c %q' "$1"
  else
    printf '%s' "$1"
  fi
}

# Runs a remote command on every worker (or --worker=$2), as the job's owner.
on_workers() {
  local remote
  remote=$(as_job_owner "$1")
  tpu_vm ssh "$TPU_NAME" --worker="${2:-all}" --command="$remote"
}

default_runtime_version() {
  case $ACCELERATOR_TYPE in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    *)
      die "no default RUNTIME_VERSION for ACCELERATOR_TYPE=$ACCELERATOR_TYPE; set RUNTIME_VERSION"
      ;;
  esac
}

# EXTRA_ARGS as shell-quoted words, each preceded by a space. xargs splits it the way
# a shell would, without expanding anything, so the workers get exactly these words.
quoted_extra_args() {
  [[ $EXTRA_ARGS =~ [^[:space:]] ]] || return 0
  local words word
  words=$(printf '%s' "$EXTRA_ARGS" | xargs printf '%s\n') ||
    die "cannot split EXTRA_ARGS (unbalanced quotes?)"
  while IFS= read -r word; do
    printf ' %q' "$word"
  done <<<"$words"
}

check_variables() {
  local command=$1
  require TPU_NAME ZONE
  [[ $DRY_RUN == 0 || $DRY_RUN == 1 ]] || die "DRY_RUN must be 0 or 1, got '$DRY_RUN'"
  [[ $QUEUED == 0 || $QUEUED == 1 ]] || die "QUEUED must be 0 or 1, got '$QUEUED'"
  # Checked here, in this shell: the remote scripts are built inside $(...), where
  # a failure would not stop the script.
  quoted_extra_args >/dev/null
  [[ -z $WORKER || $command == logs ]] || die "--worker is for logs, not $command"
  [[ -z $WORKER || $WORKER == all || $WORKER =~ ^[0-9]+$ ]] ||
    die "--worker must be a worker number or all, got '$WORKER'"
  local creates=0
  if [[ $command == create || $command == all || $command == recreate ]]; then creates=1; fi
  if [[ $creates == 1 ]]; then
    require ACCELERATOR_TYPE
    [[ $SPOT == 0 || $SPOT == 1 ]] || die "SPOT must be 0 or 1, got '$SPOT'"
    [[ $PREEMPTIBLE == 0 || $PREEMPTIBLE == 1 ]] ||
      die "PREEMPTIBLE must be 0 or 1, got '$PREEMPTIBLE'"
    [[ $SPOT$PREEMPTIBLE != 11 ]] || die "set SPOT=1 or PREEMPTIBLE=1, not both"
    [[ -n $RUNTIME_VERSION ]] || RUNTIME_VERSION=$(default_runtime_version)
    # Queued resources take --spot, not --preemptible (gcloud's synopsis).
    [[ $QUEUED == 0 || $PREEMPTIBLE == 0 ]] || die "QUEUED=1 takes SPOT=1, not PREEMPTIBLE=1"
  fi
  # A (re)created queued VM has no copy of this checkout: its startup script clones
  # REPO_URL, as root; install does the same (a copy sent by scp would be the user's).
  if [[ $QUEUED == 1 && ($creates == 1 || $command == install) ]]; then require REPO_URL; fi
  if [[ $command == train || $command == all || ($QUEUED == 1 && $creates == 1) ]]; then
    require WORKDIR CONFIG TFDS_DATA_DIR
    # Local disks are per worker and vanish with a preempted VM; checkpoints must not.
    [[ $WORKDIR == gs://* ]] ||
      die "WORKDIR must be a gs:// path (shared by all workers, outlives the VM), got '$WORKDIR'"
    # Every worker of a pod reads its share of the data: from a bucket, not a local disk.
    [[ $TFDS_DATA_DIR == gs://* || $TFDS_DATA_DIR == config ]] ||
      die "TFDS_DATA_DIR must be a gs:// path (read by every worker) or 'config', got '$TFDS_DATA_DIR'"
  fi
}

# Copies what git would ship (tracked and untracked-but-not-ignored files, as they
# are in the working tree) to $STAGE_DIR/srgan_jax, leaving .git, virtual
# environments and run directories behind.
stage_checkout() {
  local repo file
  repo=$(cd "$(dirname "$0")/.." && pwd)
  git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 ||
    die "$repo is not a git checkout; set REPO_URL to install from a git remote"
  STAGE_DIR=$(mktemp -d)
  trap 'rm -rf "$STAGE_DIR"' EXIT
  mkdir "$STAGE_DIR/srgan_jax"
  git -C "$repo" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' file; do
      # Tracked files deleted from the working tree are not shipped.
      if [[ -e $repo/$file ]]; then printf '%s\0' "$file"; fi
    done |
    (cd "$repo" && tar --null -T - -cf -) | tar -C "$STAGE_DIR/srgan_jax" -xf -
}

# The remote script of install (after stage_checkout, unless REPO_URL is set).
install_script() {
  local remote='set -euo pipefail'
  if [[ -n $REPO_URL ]]; then
    # An earlier install's copy (no .git) is replaced: git clone needs an empty folder.
    remote+="; [ -d $REMOTE_REPO/.git ] || { rm -rf $REMOTE_REPO"
    remote+=" && git clone --quiet $(printf %q "$REPO_URL") $REMOTE_REPO; }"
    remote+="; git -C $REMOTE_REPO fetch --quiet origin $(printf %q "$REPO_REF")"
    remote+="; git -C $REMOTE_REPO checkout --quiet --detach FETCH_HEAD"
  fi
  # JAX needs Python >= 3.11; Ubuntu 22.04 TPU images have 3.10, newer ones more.
  remote+="; if python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'"
  remote+="; then py=python3; else py=python3.11; fi"
  # The apt lock may still be held by the VM's first-boot updates.
  remote+="; sudo apt-get -qq -o DPkg::Lock::Timeout=600 update"
  remote+="; sudo DEBIAN_FRONTEND=noninteractive"
  remote+=" apt-get -qq -o DPkg::Lock::Timeout=600 install -y \"\$py-venv\""
  remote+="; [ -x $REMOTE_VENV/bin/python ] || \"\$py\" -m venv $REMOTE_VENV"
  remote+="; $REMOTE_VENV/bin/pip install -q -U pip"
  remote+="; cd $REMOTE_REPO && $REMOTE_VENV/bin/pip install -q -e '.[tpu]'"
  if [[ -n $VGG_SOURCE ]]; then
    remote+="; $REMOTE_VENV/bin/python -m srgan_jax.vgg19 import --source=$(printf %q "$VGG_SOURCE")"
  fi
  printf '%s' "$remote"
}

# The remote script of train: starts the job in the background, unless one runs.
train_script() {
  local main
  main="$REMOTE_VENV/bin/python -m srgan_jax.main"
  main+=" --config=$(printf %q "$CONFIG") --workdir=$(printf %q "$WORKDIR")"
  if [[ $TFDS_DATA_DIR != config ]]; then
    main+=" --config.data.tfds_data_dir=$(printf %q "$TFDS_DATA_DIR")"
  fi
  main+=$(quoted_extra_args)
  local remote="set -eu; cd $REMOTE_REPO"
  # A second job would find the TPU busy and fail; say why instead.
  remote+="; if [ -f $REMOTE_PID ] && kill -0 \"\$(cat $REMOTE_PID)\" 2>/dev/null; then"
  remote+=" echo \"\$(hostname): already training, pid \$(cat $REMOTE_PID)\" >&2; exit 1; fi"
  # Unbuffered, so the log shows progress as it happens; all three streams
  # redirected, so the ssh session ends while the job runs on.
  # SRGAN_CLOUD_TPU=1: a Cloud TPU VM, so srgan_jax.runtime.distributed starts JAX's runtime
  # with no arguments (JAX reads the workers from the metadata), detection or not.
  remote+="; PYTHONUNBUFFERED=1 SRGAN_CLOUD_TPU=1 nohup $main >>$REMOTE_LOG 2>&1 </dev/null &"
  remote+=" echo \$! >$REMOTE_PID; echo \"\$(hostname): started pid \$!, log $REMOTE_LOG\""
  printf '%s' "$remote"
}

# Writes the startup script of a queued VM to $STARTUP_SCRIPT: install, then train, as
# root at every boot of every worker. A dry run leaves the file, for reading.
write_startup_script() {
  local install train
  # Assigned first: a failure inside $(...) (bad EXTRA_ARGS) then stops the script.
  install=$(install_script)
  train=$(train_script)
  STARTUP_SCRIPT=$(mktemp "${TMPDIR:-/tmp}/srgan_startup.XXXXXX")
  if [[ $DRY_RUN == 0 ]]; then trap 'rm -f "$STARTUP_SCRIPT"' EXIT; fi
  {
    echo '#!/bin/bash'
    echo '# srgan_jax (launch/tpu_vm.sh QUEUED=1): run by the VM as root at every boot of'
    echo '# every worker, so that a VM recreated after a preemption installs and resumes'
    echo '# training from the latest checkpoint in WORKDIR by itself.'
    echo 'export HOME=/root'
    echo 'cd "$HOME"'
    echo "rm -f $REMOTE_PID  # A job of an earlier boot: its pid may be reused now."
    echo "( $install )"
    echo "( $train )"
  } >"$STARTUP_SCRIPT"
}

cmd_create() {
  local flags=("--accelerator-type=$ACCELERATOR_TYPE")
  if [[ $QUEUED == 1 ]]; then
    write_startup_script
    flags+=("--runtime-version=$RUNTIME_VERSION" "--node-id=$TPU_NAME")
    if [[ $SPOT == 1 ]]; then flags+=(--spot); fi
    flags+=("--metadata-from-file=startup-script=$STARTUP_SCRIPT")
    queued_resources create "$TPU_NAME" "${flags[@]}"
    return
  fi
  flags+=("--version=$RUNTIME_VERSION")
  if [[ $SPOT == 1 ]]; then flags+=(--spot); fi
  if [[ $PREEMPTIBLE == 1 ]]; then flags+=(--preemptible); fi
  tpu_vm create "$TPU_NAME" "${flags[@]}"
}

cmd_install() {
  if [[ -z $REPO_URL ]]; then
    stage_checkout
    # Into the home directory: scp -r puts (or merges) the folder at ~/srgan_jax.
    tpu_vm scp --recurse "$STAGE_DIR/srgan_jax" "$TPU_NAME:" --worker=all
  fi
  local remote
  remote=$(install_script)
  on_workers "$remote"
}

cmd_train() {
  local remote
  remote=$(train_script)  # Assigned first: a bad EXTRA_ARGS stops the script here.
  on_workers "$remote"
}

cmd_logs() {
  local follow="tail -n 100 -F $REMOTE_LOG"
  if [[ $WORKER == all ]]; then
    # Each line prefixed with its worker's hostname: the workers' output interleaves.
    follow+=" 2>&1 | sed -u \"s/^/\$(hostname): /\""
  fi
  on_workers "$follow" "${WORKER:-0}"
}

# SIGTERM makes training save a checkpoint and exit 75 (every worker stops at one step).
cmd_stop() {
  local remote="set -u; if [ -f $REMOTE_PID ] && kill -0 \"\$(cat $REMOTE_PID)\" 2>/dev/null"
  remote+="; then pid=\$(cat $REMOTE_PID); kill -TERM \"\$pid\""
  remote+="; echo \"\$(hostname): SIGTERM sent to pid \$pid; waiting for its checkpoint\""
  remote+="; while kill -0 \"\$pid\" 2>/dev/null; do sleep 1; done"
  remote+="; echo \"\$(hostname): stopped\"; else echo \"\$(hostname): not training\"; fi"
  on_workers "$remote"
}

cmd_delete() {
  if [[ $QUEUED == 1 ]]; then
    queued_resources delete "$TPU_NAME" --force --quiet  # --force: its VM as well.
  else
    tpu_vm delete "$TPU_NAME" --quiet
  fi
}

main() {
  local arg command=''
  for arg in "$@"; do
    case $arg in
      --dry-run) DRY_RUN=1 ;;
      --worker=*) WORKER=${arg#--worker=} ;;
      -h | --help)
        usage
        exit 0
        ;;
      create | install | train | logs | stop | delete | recreate | all)
        [[ -z $command ]] || die "one command at a time, got '$command' and '$arg'"
        command=$arg
        ;;
      *)
        usage >&2
        die "unknown argument '$arg'"
        ;;
    esac
  done
  if [[ -z $command ]]; then
    usage >&2
    die "no command given"
  fi
  # Everything is checked before the first gcloud call, so that `all` cannot stop
  # half-way (with a VM running) over a missing variable.
  check_variables "$command"
  case $command in
    recreate)
      cmd_delete
      cmd_create
      ;;
    all)
      cmd_create
      # A queued VM comes later, and its startup script installs and trains.
      if [[ $QUEUED == 0 ]]; then
        cmd_install
        cmd_train
      fi
      ;;
    *) "cmd_$command" ;;
  esac
}

main "$@"
