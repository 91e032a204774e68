#!/usr/bin/env bash
# Create .venv (if needed) and install plasticity-lab with the extras named in $1 (comma-separated).
# Safe to source repeatedly: it installs only when pyproject.toml changed or an extra is missing. It remembers every
# extra it installed, so the scripts that need fewer (build_book.sh, demo.sh) run after test.sh without installing
# anything, and test.sh after them installs only what they lacked.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-dev}"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi
# shellcheck disable=SC1091
source "$root/.venv/bin/activate"
stamp="$root/.venv/.plasticity-lab-installed"  # "<hash of pyproject.toml>-<extras installed>"
hash="$(sha256sum < "$root/pyproject.toml" | cut -c1-16)"
installed="" missing=1
if [ -f "$stamp" ]; then
    installed="$(cut -d- -f2- < "$stamp")"
    if [ "$(cut -d- -f1 < "$stamp")" = "$hash" ]; then
        missing=0
        for extra in ${extras//,/ }; do
            [[ ",$installed," == *",$extra,"* ]] || missing=1
        done
    fi
fi
if [ "$missing" = 1 ]; then
    # Install what is wanted now and what was installed before: a later call with either set finds it all there.
    extras="$(echo "${installed:+$installed,}$extras" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
    python -m pip install -q --upgrade pip
    # The CPU build of torch first: a bare `torch` requirement could otherwise resolve a multi-GB CUDA build.
    python -m pip install -q "torch==2.13.0"
    python -m pip install -q -e "$root[$extras]"
    # ProcGen (CoinRun) last and without its dependencies: its numpy<2 pin is spurious and would downgrade numpy.
    # Installed after everything else, pip has nothing left to check against its pins (else it prints a harmless
    # but alarming "ERROR: pip's dependency resolver ..." about gym3 and procgen-mirror).
    if [[ ",$extras," == *,procgen,* ]]; then
        python -m pip install -q --no-deps procgen-mirror==0.10.7 gym3==0.3.3 gym==0.26.2 gym-notices
    fi
    echo "$hash-$extras" > "$stamp"
fi
