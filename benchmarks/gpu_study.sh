#!/usr/bin/env bash
# Data from a lent GPU in one command: the carried wheels installed (benchmarks/gpu_env.sh), then the named
# conditions trained to the end within a time limit by scripts/train_within.py (whole populations only; conditions
# of one network share a population, each run with its own random streams), stored as one study folder under $OUT.
#
#   bash benchmarks/gpu_wheels.sh                                  # where pip reaches a registry
#   CONDITIONS=warm_start,reset_all SECONDS_LIMIT=480 bash benchmarks/gpu_study.sh   # on the GPU machine
#
# CONDITIONS (required), STUDY (default gridworld-paper-<conditions>), PRESET (paper), ENV (gridworld),
# SHIFTS (permute,window,expand), SEEDS (0-4), DEVICE (cuda), THREADS (torch's choice), SECONDS_LIMIT (480: leaves a
# 10-minute call time to start and to copy the folder back), MAX_MIB (64), EXECUTION (eager; graphs: the compiled
# steps of plasticity_lab.graphs, once gpu_check.sh has shown them faster and in agreement on the device),
# OVERRIDES (space-separated FIELD=VALUE RunConfig fields for every run, e.g. "epochs_per_round=300 num_envs=64").
# ENV=montezuma (carry ale-py: ATARI=1 bash benchmarks/gpu_wheels.sh) trains one population per condition and ignores
# SHIFTS; its paper preset is days per run, so name a scale in OVERRIDES.
# DEVICE=cpu PRESET=smoke tries it on a CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${CONDITIONS:?name the conditions, e.g. CONDITIONS=warm_start,reset_all}"
out=${OUT:-/tmp/gpu-study}
study=${STUDY:-${ENV:-gridworld}-${PRESET:-paper}-${CONDITIONS//[,+]/_}}
mkdir -p "$out"
source benchmarks/gpu_env.sh
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA available:', torch.cuda.is_available())"
} | tee "$out/machine.txt"
python3 scripts/train_within.py --conditions "$CONDITIONS" --env "${ENV:-gridworld}" --preset "${PRESET:-paper}" \
    --shifts "${SHIFTS:-permute,window,expand}" --seeds "${SEEDS:-0-4}" --device "${DEVICE:-cuda}" \
    ${THREADS:+--threads "$THREADS"} ${EXECUTION:+--override "execution=$EXECUTION"} \
    $(for o in ${OVERRIDES:-}; do printf -- '--override %s ' "$o"; done) --seconds "${SECONDS_LIMIT:-480}" --max-mib "${MAX_MIB:-64}" --out "$out/$study" 2>&1 | tee "$out/train.log"
exit "${PIPESTATUS[0]}"
