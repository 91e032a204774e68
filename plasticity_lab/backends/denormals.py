"""Denormal floats flushed to zero while a population trains on the CPU.

Why: once a unit stops firing, the gradients of its weights are exactly zero, and AdamW's moments of those weights
decay geometrically (by 0.9 and 0.999 a step) until they fall below float32's smallest normal number (about
1.2e-38). x86 CPUs compute with such *denormal* numbers many times slower than with normal ones, so a population in
which units die slows down epoch after epoch within a round (the optimizer, re-created at each shift, starts again
from zeros). ``benchmarks/release_speed.py --keep-denormals`` measures the difference.

Flushing them to zero (the CPU's flush-to-zero and denormals-are-zero modes, :func:`torch.set_flush_denormal`)
changes nothing that matters to training — AdamW's ``eps`` is 1e-8, and every value flushed is below 1e-38 — but
it does change the rounding of those values, so a run repeats a stored one bit for bit only under the same
setting. Manifests record it (``flush_denormals``); studies stored before this setting existed were trained with
denormals kept (``PLASTICITY_LAB_FLUSH_DENORMALS=0`` trains with their arithmetic).

The mode is a property of the calling thread. :func:`flushed` turns it on around an epoch and restores what it
found, so code outside training keeps its own arithmetic; with several torch threads the other threads keep theirs,
and a sweep's ``--threads 1`` gets the whole benefit. Where the CPU cannot flush (``torch.set_flush_denormal``
returns False) nothing changes and manifests say ``unsupported``.
"""

from __future__ import annotations

import contextlib
import os

import torch

#: ``1`` (the default) flushes denormals while training on the CPU; ``0`` keeps them.
VARIABLE = "PLASTICITY_LAB_FLUSH_DENORMALS"
_VALUES = {"1": True, "0": False}


def wanted() -> bool:
    """Whether training should flush denormals: ``$PLASTICITY_LAB_FLUSH_DENORMALS`` (``1`` or ``0``; default
    ``1``)."""
    value = os.environ.get(VARIABLE, "").strip()
    if value == "":
        return True
    if value not in _VALUES:
        raise ValueError(f"{VARIABLE}={value!r} is not a valid setting; valid: 1 (flush denormals while training, "
                         f"the default) or 0 (keep them)")
    return _VALUES[value]


def flushing_now() -> bool:
    """Whether this thread flushes denormals right now, read from arithmetic: a normal number scaled into the
    denormal range comes out as exactly zero only when flushing is on."""
    return (torch.tensor(2e-38, dtype=torch.float32) * 0.25).item() == 0.0


@contextlib.contextmanager
def flushed(enabled: bool | None = None):
    """Train with denormals flushed to zero (``enabled``; default :func:`wanted`), then restore this thread's mode
    as it was."""
    enabled = wanted() if enabled is None else bool(enabled)
    before = flushing_now()
    changed = enabled != before and torch.set_flush_denormal(enabled)
    try:
        yield
    finally:
        if changed:
            torch.set_flush_denormal(before)


def status() -> str:
    """For manifests: ``"on"`` (training flushes denormals), ``"off"`` (it keeps them, as asked), or
    ``"unsupported"`` (asked, but this CPU cannot)."""
    if not wanted():
        return "off"
    with flushed(True):
        return "on" if flushing_now() else "unsupported"
