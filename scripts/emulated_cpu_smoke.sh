#!/usr/bin/env bash
# A smoke run of the default path on an emulated CPU without AVX-512 (default: an AMD EPYC Zen 3, "EPYC-Milan"),
# through Debian's qemu-user: every fast path's probe, what `auto` resolves to and why, and a one-epoch run.
# Slow (a few minutes: everything is emulated). Usage: bash scripts/emulated_cpu_smoke.sh [qemu CPU model]
# Needs `qemu-x86_64` (apt-get install qemu-user) and the package installed in .venv (scripts/setup.sh). The
# native kernels are compiled natively first, since a compiler run under the emulator would take far longer.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cpu="${1:-EPYC-Milan}"
if ! command -v qemu-x86_64 >/dev/null; then
    echo "qemu-x86_64 is not installed (Debian: apt-get install qemu-user)" >&2
    exit 2
fi
python="$root/.venv/bin/python"
"$python" -c "from plasticity_lab.backends import native; native.member_ops()"  # build (or load) the kernels natively
qemu-x86_64 -cpu "$cpu" "$python" - <<'PY' 2> >(grep -v "TCG doesn't support" >&2)
import time

start = time.time()
import torch

import plasticity_lab as pl
from plasticity_lab.backends import fastpath, native

print(f"emulated CPU: PyTorch's kernels run {torch.backends.cpu.get_cpu_capability()}; "
      f"native kernels: {native.sparse_kernels_isa() or native.unavailable_reason()}")
for path in fastpath.PATHS:
    print(f"probe {path}: {fastpath.probe(path) or 'passed'}")
print(f"auto -> {pl.cpu_matmul()} ({pl.cpu_matmul_reason()})")
table = pl.run(pl.RunConfig(seed=0, preset="smoke", rounds=1, epochs_per_round=1))
print(f"default run: {len(table)} epoch(s), train return {table['train_return'].iloc[-1]:.3f}; "
      f"{time.time() - start:.0f} s in all")
PY
