#!/usr/bin/env bash
# Create .venv (if needed) and install plasticity-lab with the extras named in $1 (comma-separated).
# Safe to source repeatedly: it reinstalls only when pyproject.toml or the extras change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-dev}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"
stamp="$root/.venv/.plasticity-lab-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    python -m pip install -q --upgrade pip
    # The CPU build of torch first: a bare `torch` requirement could otherwise resolve a multi-GB CUDA build.
    python -m pip install -q "torch==2.13.0"
    # ProcGen (CoinRun) without its dependencies: its numpy<2 pin is spurious and would downgrade numpy.
    if [[ ",$extras," == *,procgen,* ]]; then
        python -m pip install -q --no-deps procgen-mirror==0.10.7 gym3==0.3.3 gym==0.26.2 gym-notices
    fi
    python -m pip install -q -e "$root[$extras]"
    echo "$want" > "$stamp"
fi
