#!/usr/bin/env bash
# Fetch into .whl/ the wheels that the package needs on a GPU machine whose Python already holds PyTorch, NumPy,
# pandas, SciPy, statsmodels, pyarrow, PyYAML and tqdm but cannot reach a package registry. Run it where pip can,
# then carry .whl/ along with benchmarks/gpu_check.sh, which installs whatever .whl/ holds. Both are pure Python,
# so one wheel serves every Python version and platform.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl gymnasium==1.4.0 farama-notifications==0.0.6
# CoinRun (COINRUN=1): ProcGen and what it imports, for the GPU machine's Python (PYTHON_VERSION, default 3.12); gym
# ships no wheel, so one is built here (pure Python). About 50 MB in all.
if [ "${COINRUN:-0}" = 1 ]; then
    version=${PYTHON_VERSION:-3.12}
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
        procgen-mirror==0.10.7 gym3==0.3.3 gym-notices cffi pycparser imageio pillow
    python3 -m pip wheel --quiet --no-deps -w .whl gym==0.26.2
fi
# Montezuma's Revenge (ATARI=1): ale-py, which ships the game's ROM, for the GPU machine's Python (about 5 MB).
if [ "${ATARI:-0}" = 1 ]; then
    version=${PYTHON_VERSION:-3.12}
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$version" \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl \
        ale-py==0.12.1
fi
ls .whl
