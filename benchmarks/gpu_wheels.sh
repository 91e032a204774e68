#!/usr/bin/env bash
# Fetch into .whl/ the wheels that the package needs on a GPU machine whose Python already holds PyTorch, NumPy,
# pandas, SciPy, statsmodels, pyarrow, PyYAML and tqdm but cannot reach a package registry. Run it where pip can,
# then carry .whl/ along with benchmarks/gpu_check.sh, which installs whatever .whl/ holds. Both are pure Python,
# so one wheel serves every Python version and platform.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --no-deps --only-binary=:all: -d .whl gymnasium==1.4.0 farama-notifications==0.0.6
ls .whl
