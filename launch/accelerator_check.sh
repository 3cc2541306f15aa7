#!/usr/bin/env bash
# One device check of srgan_jax on a fresh GPU machine, in at most 9 minutes: the
# GPU-relevant tests, the benchmark (SRResNet step, full SRGAN step, inference; at
# batch 16 and a device-filling batch; float32 and bfloat16; 1 and K steps per call;
# against PyTorch at the same precision), a few minutes of paper-size SRResNet
# training on T91 + BSD200 with the device data source, and its Set5 evaluation.
#
# Usage: launch/accelerator_check.sh [--tiny] [OUTPUT_FOLDER]
#
#   OUTPUT_FOLDER  where everything goes; default $OUT, else runs/accelerator_check.
#   --tiny         the same stages on the CPU with tiny sizes (about a minute on an
#                  idle machine): what tests/system/launch_test.py runs.
#
# Variables (environment): PYTHON (default python), SRGAN_DATASETS (holding Set5 and
# the training sets; default ../shared/datasets), TRAIN_SETS (default 'T91 BSD200'),
# BATCHES (default 16,128), K (steps per call beside 1; default 20), and each stage's
# budget in seconds, BUDGET_<STAGE> (see below).
#
# Writes, under OUTPUT_FOLDER: summary.json (each stage: exit status, seconds, budget,
# whether its budget ran out), environment.json, tests.xml (JUnit), benchmark_*.json,
# train/ (the run's workdir: config.json, checkpoint, TensorBoard events),
# eval_set5.json, and logs/<stage>.log. A stage that fails or runs out of time is
# recorded and the next one starts: no stage can eat another's time.
set -uo pipefail

TINY=0
if [[ "${1:-}" == --tiny ]]; then TINY=1; shift; fi
OUTPUT="${1:-${OUT:-runs/accelerator_check}}"
: "${PYTHON:=python}" "${BATCHES:=16,128}" "${K:=20}" "${TRAIN_SETS:=T91 BSD200}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
mkdir -p "$OUTPUT/logs" || exit 1
OUTPUT="$(cd "$OUTPUT" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Compiled programs kept between the stages (and reruns on a warm machine), not in OUTPUT.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/srgan_jax_xla_cache}"
DATASETS="${SRGAN_DATASETS:-$PWD/../shared/datasets}"
export SRGAN_DATASETS="$DATASETS"
TRAIN_FOLDERS="($(for name in $TRAIN_SETS; do printf "'%s', " "$DATASETS/$name"; done))"

if (( TINY )); then
  export JAX_PLATFORMS=cpu
  BATCHES=8 K=2
  # num_blocks,features of the generator, crop, inference side; training stops by itself.
  BENCH_SIZE=(--widths=1,8 --crop_size=32 --inference_sizes=8 --steps=1 --warmup=0)
  TRAIN_SIZE=(--config.generator.num_blocks=1 --config.generator.features=8
              --config.generator.upsample_features=32 --config.data.crop_size=32
              --config.batch_size=8 --config.srresnet.num_steps=4 --config.log_every_steps=2)
  TESTS=(tests/unit/training/multi_step_test.py -k calls_stop)
  # Budgets that only guard against hangs: on a loaded CPU (CI, a shared machine)
  # importing JAX and torch alone has taken 2 minutes.
  : "${BUDGET_ENV:=1800}" "${BUDGET_TESTS:=1800}" "${BUDGET_BENCH:=1800}"
  : "${BUDGET_BENCH_SRGAN:=1800}" "${BUDGET_TRAIN:=1800}" "${BUDGET_EVAL:=1800}"
else
  BENCH_SIZE=(--inference_sizes=64,128 --steps=10 --warmup=2)
  # The paper's SRResNet, cut by its budget: SIGTERM makes it save a checkpoint at the
  # end of the current call and exit 75 (preempted), then Set5 evaluates that checkpoint.
  TRAIN_SIZE=(--config.srresnet.num_steps=1000000)
  # One GPU: the 8-simulated-device tests are for the CPU (tests/conftest.py).
  TESTS=(tests/unit/training/steps_test.py tests/unit/training/multi_step_test.py
         tests/unit/data/on_device_test.py tests/unit/nn/conv_test.py
         tests/unit/nn/models_test.py -k 'not eight_devices')
  # Guesses for an H100 (compilation included), 525 s in all; summary.json says which
  # ran out, and a rerun on the same warm machine finds the compiled programs cached.
  : "${BUDGET_ENV:=30}" "${BUDGET_TESTS:=60}" "${BUDGET_BENCH:=25}" "${BUDGET_BENCH_SRGAN:=45}"
  : "${BUDGET_TRAIN:=80}" "${BUDGET_EVAL:=25}"
fi

SUMMARY="$OUTPUT/stages.jsonl"
: > "$SUMMARY"
# stage NAME BUDGET_SECONDS COMMAND...: runs COMMAND under `timeout` (SIGTERM, then
# SIGKILL 15 s later), its output in logs/NAME.log, and records how it went.
stage() {
  local name=$1 budget=$2 start rc
  shift 2
  echo "== $name (budget ${budget} s)"
  start=$(date +%s%N)
  timeout --signal=TERM --kill-after=15 "$budget" "$@" > "$OUTPUT/logs/$name.log" 2>&1
  rc=$?
  printf '{"stage": "%s", "rc": %d, "seconds": %d.%03d, "budget_s": %d, "timed_out": %s}\n' \
    "$name" "$rc" $(( ($(date +%s%N) - start) / 1000000000 )) \
    $(( ($(date +%s%N) - start) / 1000000 % 1000 )) "$budget" \
    "$([[ $rc == 124 || $rc == 137 ]] && echo true || echo false)" >> "$SUMMARY"
  tail -n 3 "$OUTPUT/logs/$name.log"
}

stage environment "$BUDGET_ENV" "$PYTHON" -c "
import json, jax, sys
try:
  import torch
  torch_info = {'torch': torch.__version__, 'cuda': torch.cuda.is_available()}
except ImportError:
  torch_info = {'torch': None}
json.dump({'python': sys.version, 'jax': jax.__version__, 'backend': jax.default_backend(),
           'devices': [str(d) for d in jax.devices()],
           'device_kind': jax.devices()[0].device_kind, **torch_info},
          open('$OUTPUT/environment.json', 'w'), indent=2)
print(open('$OUTPUT/environment.json').read())"

stage tests "$BUDGET_TESTS" "$PYTHON" -m pytest -q -p no:cacheprovider \
  --junitxml="$OUTPUT/tests.xml" "${TESTS[@]}"

# One stage per line group, so that one slow compilation loses only its own lines.
for dtype in float32 bfloat16; do
  for run in srresnet srgan; do
    budget=$BUDGET_BENCH
    [[ $run == srgan ]] && budget=$BUDGET_BENCH_SRGAN
    for batch in ${BATCHES//,/ }; do
      stage "benchmark_${run}_${batch}_$dtype" "$budget" "$PYTHON" -m srgan_jax.benchmark \
        --run=$run --dtype=$dtype --batch_sizes="$batch" --steps_per_call="1,$K" \
        --compare=torch "${BENCH_SIZE[@]}" --json="$OUTPUT/benchmark_${run}_${batch}_$dtype.json"
    done
  done
  stage "benchmark_inference_$dtype" "$BUDGET_BENCH" "$PYTHON" -m srgan_jax.benchmark \
    --run=inference --dtype=$dtype --compare=torch "${BENCH_SIZE[@]}" \
    --json="$OUTPUT/benchmark_inference_$dtype.json"
done

stage train "$BUDGET_TRAIN" "$PYTHON" -m srgan_jax.main --config=srgan_jax/configs/default.py \
  --workdir="$OUTPUT/train" --config.data.source=device --config.srgan.num_steps=0 \
  --config.steps_per_call="$K" --config.keep_checkpoints=1 --config.profile_steps=0 \
  --config.data.folders="$TRAIN_FOLDERS" --config.eval_folders="('$DATASETS/Set5',)" \
  --config.eval_metrics="()" \
  "${TRAIN_SIZE[@]}"

stage eval_set5 "$BUDGET_EVAL" "$PYTHON" -m srgan_jax.evaluate --workdir="$OUTPUT/train" \
  --data="$DATASETS/Set5" --metrics= --output="$OUTPUT/eval_set5.json"

"$PYTHON" -c "
import json
stages = [json.loads(line) for line in open('$SUMMARY')]
json.dump({'tiny': bool($TINY), 'output': '$OUTPUT', 'stages': stages},
          open('$OUTPUT/summary.json', 'w'), indent=2)
for s in stages:
  print(f\"{s['stage']:28s} rc={s['rc']:<4d} {s['seconds']:7.1f} s of {s['budget_s']}\")
"
rm -f "$SUMMARY"
