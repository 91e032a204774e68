#!/usr/bin/env bash
# The speed checks that need a GPU, as one command for a fresh machine with CUDA PyTorch: the CUDA tests, the
# benchmark table on the GPU (one process, then 12 at once) and a real chunk of the paper-scale grid (its 12
# populations, 12 worker processes, the first CHUNK_EPOCHS epochs). Logs go to $OUT (or /tmp/gpu-check).
#
#   bash benchmarks/gpu_wheels.sh      # where pip reaches a registry, if the GPU machine lacks gymnasium
#                                      # (COINRUN=1: ProcGen too, for the CoinRun step)
#   bash benchmarks/gpu_check.sh       # on the GPU machine, with .whl/ carried along; over 10 minutes in all:
#   ONLY=eager bash benchmarks/gpu_check.sh    # the eager table and grid chunk (about 6–8 minutes)
#   ONLY=graphs bash benchmarks/gpu_check.sh   # the compiled steps against eager (about 8 minutes; the CUDA tests
#                                              # include graphed against eager on the device)
#
# DEVICE, SIZES, EPOCHS, WORKERS and CHUNK_EPOCHS override the defaults (DEVICE=cpu SIZES=1 EPOCHS=1 WORKERS=2
# CHUNK_EPOCHS=1 tries the script on a CPU). Each step has its own time limit, so that one slow step still
# leaves the others their turn.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
device=${DEVICE:-cuda}
sizes=${SIZES:-15,45,180}
epochs=${EPOCHS:-10}
workers=${WORKERS:-12}
chunk=${CHUNK_EPOCHS:-200}
mkdir -p "$out"
source benchmarks/gpu_env.sh

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA available:', torch.cuda.is_available())"
} | tee "$out/machine.txt"
timeout 300 python3 -m pytest -q -p no:cacheprovider -k "cuda or device" \
    tests/test_device.py tests/test_gridworld.py tests/test_shifts.py 2>&1 | tee "$out/tests.log"
if [[ "${ONLY:-all}" != graphs ]]; then
timeout 240 python3 benchmarks/population_speed.py --device "$device" --sizes "$sizes" --epochs "$epochs" \
    --processes 1 --threads 1 2>&1 | tee "$out/table.log"
timeout 180 python3 benchmarks/population_speed.py --device "$device" --sizes 15 --epochs "$epochs" \
    --processes "$workers" --threads 1 2>&1 | tee -a "$out/table.log"
timeout 240 python3 benchmarks/population_speed.py --grid-chunk "$chunk" --device "$device" \
    --processes "$workers" --threads 1 2>&1 | tee "$out/chunk.log"
fi
if [[ "${ONLY:-all}" != eager ]]; then
# the compiled steps (plasticity_lab.graphs, CUDA graphs on a GPU) against eager, each run with its own streams: the
# table, the kernels and launches of one epoch, and a mixed chunk of the grid
timeout 300 python3 benchmarks/population_speed.py --device "$device" --sizes "${GRAPH_SIZES:-15,180}" \
    --epochs "$epochs" --randomness member --execution eager,graphs --threads 1 2>&1 | tee "$out/graphs.log"
timeout 180 python3 benchmarks/population_speed.py --device "$device" --profile "${PROFILE_SIZE:-180}" \
    --epochs 3 --execution graphs --threads 1 2>&1 | tee -a "$out/graphs.log"
timeout 240 python3 benchmarks/population_speed.py --grid-chunk "$chunk" --device "$device" --mix \
    --max-members 180 --execution graphs --processes 2 --threads 1 2>&1 | tee -a "$out/graphs.log"
fi
# CoinRun, where ProcGen is installed (`COINRUN=1 bash benchmarks/gpu_wheels.sh` carries it): the CNN population on
# the device, the games on the CPU
if python3 -c "import procgen" 2>/dev/null; then
    timeout 240 python3 benchmarks/coinrun_speed.py --device "$device" --sizes "${COINRUN_SIZES:-5,15}" --epochs 2 \
        --threads 1 --env-sizes 15x11 --json "$out/coinrun.json" 2>&1 | tee "$out/coinrun.log"
fi
