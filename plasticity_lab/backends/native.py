"""Native operators, compiled on first use: a first linear layer that skips the zeros of its input.

The gridworld's observation has 363 inputs of which about 58 are non-zero, and 40 of those are the border walls,
the same in every row. ``sparse_input_linear`` and ``sparse_input_weight_grad`` compute such a layer with its
weight input-major (``[M, in, out]``): per member, the columns that every row shares are added to the bias once,
and each row adds only the weight rows of its other non-zeros. Their inner loop runs AVX-512, AVX2 with FMA, or
portable C++, whichever the CPU has (:func:`sparse_kernels_isa`); ``PLASTICITY_LAB_NATIVE_ISA`` (``avx512``,
``avx2`` or ``portable``, read when the library loads) caps it, so every version can be tested on one machine.

``csrc/sparse_input.cpp`` uses only PyTorch's public C++ extension API. It is compiled by
``torch.utils.cpp_extension`` the first time a process asks for it (10–30 s; it needs a C++ compiler and
``ninja``) and cached in ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), so later processes
only load it. Where it cannot be built, :func:`member_ops` returns ``None`` and :func:`unavailable_reason` says
why; ``PLASTICITY_LAB_NATIVE=0`` turns it off. Building says nothing about whether the operators compute the
right numbers here: :mod:`plasticity_lab.backends.fastpath` runs them on a small problem before any run uses them.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import torch

NATIVE_VARIABLE = "PLASTICITY_LAB_NATIVE"  # "0" turns the native operators off (they are never built)
NATIVE_ISA_VARIABLE = "PLASTICITY_LAB_NATIVE_ISA"  # caps the kernels' instruction set: avx512, avx2 or portable
NATIVE_ISA_CHOICES = ("avx512", "avx2", "portable")
EXTENSION_NAME = "plasticity_lab_sparse_input"
SOURCE = Path(__file__).resolve().parent / "csrc" / "sparse_input.cpp"

_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet in this process
_reason = ""


def _find_ninja() -> None:
    """Put the ``ninja`` of the ``ninja`` Python package on ``PATH`` when no other is there (a virtual environment
    used without activating it), since ``torch.utils.cpp_extension`` looks for it on ``PATH``."""
    if shutil.which("ninja"):
        return
    try:
        import ninja
    except ImportError:
        return
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _build() -> None:
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if not shutil.which(compiler):
        raise RuntimeError(f"no C++ compiler: {compiler!r} is not on PATH (set CXX to choose one)")
    _find_ninja()
    if not shutil.which("ninja"):
        raise RuntimeError("ninja is not on PATH (pip install ninja)")
    cpp_extension.load(name=EXTENSION_NAME, sources=[str(SOURCE)], extra_cflags=["-O3"],
                       is_python_module=False, verbose=False)


def _summary(error: Exception) -> str:
    """The line of a build's error that says what went wrong: the compiler's first error, else the last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
    return next((line for line in lines if "error:" in line), lines[-1])


def member_ops():
    """``torch.ops.plasticity_lab`` with ``sparse_input_linear(x [M, B, in], weight_t [M, in, out], bias [M, out] |
    None) -> [M, B, out]``, ``sparse_input_weight_grad(x [M, B, in], grad [M, B, out]) -> [M, in, out]`` and
    ``sparse_kernels_isa()``, built and loaded on the first call; ``None`` where they cannot be built (see
    :func:`unavailable_reason`)."""
    global _loaded, _reason
    if _loaded is None:
        with _lock:
            if _loaded is None:
                cap = os.environ.get(NATIVE_ISA_VARIABLE)
                if os.environ.get(NATIVE_VARIABLE, "1") == "0":
                    _loaded, _reason = False, f"turned off by {NATIVE_VARIABLE}=0"
                elif cap is not None and cap not in NATIVE_ISA_CHOICES:
                    raise ValueError(f"unknown {NATIVE_ISA_VARIABLE}={cap!r}; valid: {', '.join(NATIVE_ISA_CHOICES)}")
                else:
                    try:
                        _build()
                        _loaded = True
                    except Exception as error:  # no compiler, no ninja, a failed compile or link: all mean "none"
                        _loaded, _reason = False, f"the native operators could not be built: {_summary(error)}"
    return torch.ops.plasticity_lab if _loaded else None


def sparse_kernels_isa() -> str | None:
    """The instruction set the sparse kernels run here (``"avx512"``, ``"avx2"`` or ``"portable"``), or ``None``
    where the native operators are unavailable."""
    ops = member_ops()
    return None if ops is None else ops.sparse_kernels_isa()


def unavailable_reason() -> str:
    """Why :func:`member_ops` returned ``None`` (``""`` if it has not, or has not been called)."""
    return _reason
