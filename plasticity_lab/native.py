"""Native operators, compiled on first use: oneDNN's float32 products with a matrix per population member, and a
first layer that skips the zeros of its input.

PyTorch's batched products on the CPU call MKL, which runs its AVX2 code on CPUs that are not Intel's, and its
Python API reaches oneDNN's float32 matmul only one matrix at a time. ``csrc/member_matmul.cpp`` calls oneDNN's
batched matmul (a weight per batch entry) through ``at::native::mkldnn_matmul``, which PyTorch exports from
``libtorch_cpu`` but does not bind. It gives the same numbers as a loop of oneDNN products over members, one call
for all of them: on the AMD EPYC (Zen 5) this project develops on, one thread, a 15-member forward of the
gridworld's first layer takes 1.0 ms against 2.1 ms through MKL and 2.6 ms looping over members.

``sparse_input_linear`` and ``sparse_input_weight_grad`` compute a first layer whose input is mostly zeros, with
its weight input-major (``[M, in, out]``): per member, the input columns that every row shares (the gridworld's 40
border walls) are added to the bias once, and each row adds only the weight rows of its other non-zeros (about 18
of 363). Measured as above, hot in cache: 0.21 ms against 0.94 ms for oneDNN's dense forward of 64 rows, and
0.43 ms against 0.87 ms for the weight gradient. They use AVX-512 where the CPU has it (``sparse_kernels_vectorized()``) and portable loops elsewhere, which
are several times slower than oneDNN's dense product (``PLASTICITY_LAB_NATIVE_PORTABLE=1``, read when the library
loads, runs them anyway).

The source is compiled by ``torch.utils.cpp_extension`` the first time a process asks for it (about 30 s; it
needs a C++ compiler and ``ninja``) and cached in ``$TORCH_EXTENSIONS_DIR`` (default
``~/.cache/torch_extensions``), so later processes only load it. Where it cannot be built, :func:`member_ops`
returns ``None`` and :func:`unavailable_reason` says why; ``PLASTICITY_LAB_NATIVE=0`` turns it off.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import torch

NATIVE_VARIABLE = "PLASTICITY_LAB_NATIVE"  # "0" turns the native operators off (they are never built)
EXTENSION_NAME = "plasticity_lab_member_matmul"
SOURCE = Path(__file__).resolve().parent / "csrc" / "member_matmul.cpp"

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
    """``torch.ops.plasticity_lab`` with ``member_matmul(a [M, R, K], b [M, K, C])``,
    ``member_linear(x [M, B, in], weight [M, out, in], bias [M, out] | None)``,
    ``sparse_input_linear(x [M, B, in], weight_t [M, in, out], bias [M, out] | None)`` and
    ``sparse_input_weight_grad(x [M, B, in], grad [M, B, out]) -> [M, in, out]`` and
    ``sparse_kernels_vectorized()``, built and loaded on the first call; ``None`` where they cannot be built (see :func:`unavailable_reason`)."""
    global _loaded, _reason
    if _loaded is None:
        with _lock:
            if _loaded is None:
                if os.environ.get(NATIVE_VARIABLE, "1") == "0":
                    _loaded, _reason = False, f"turned off by {NATIVE_VARIABLE}=0"
                elif not torch.backends.mkldnn.is_available():
                    _loaded, _reason = False, "this PyTorch is built without oneDNN"
                else:
                    try:
                        _build()
                        _loaded = True
                    except Exception as error:  # no compiler, no ninja, a failed compile or link: all mean "none"
                        _loaded, _reason = False, f"the native operators could not be built: {_summary(error)}"
    return torch.ops.plasticity_lab if _loaded else None


def unavailable_reason() -> str:
    """Why :func:`member_ops` returned ``None`` (``""`` if it has not, or has not been called)."""
    return _reason
