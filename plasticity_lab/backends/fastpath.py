"""Which code computes the CPU's float32 matrix products, and the probe that proves a fast path before it is used.

A population's products can go three ways on the CPU (see :func:`set_cpu_matmul`): ``"blas"``, PyTorch's own
batched products (MKL on x86, the platform's BLAS elsewhere), which work on every CPU; ``"onednn"``, oneDNN's
float32 linear one member at a time; ``"onednn+sparse"``, the same with the first layer computed by
:mod:`plasticity_lab.backends.native`'s kernels, which skip the observation's zeros. The two fast paths pay off only on
some machines and can fail on others: a library that builds and loads may still refuse to compute on the CPU at
hand (a oneDNN route inside PyTorch, for one, refused float32 work on CPUs without AVX-512). So a fast path is
used only after :func:`probe` has *run* it here, forward and backward on a small network, and matched plain
PyTorch computing in float64. ``"auto"`` falls back to ``"blas"`` when its preferred path fails the probe, with
one warning line naming the reason; an explicit choice that fails it is an error naming the choice, the reason
and the choices that work here. :func:`cpu_matmul_reason` says which path a run used and why; manifests record
both.

``"auto"`` takes a fast path only where one was measured to beat BLAS: an AMD CPU with AVX-512, one thread per
process (how a sweep's workers run). There MKL runs its AVX2 code while oneDNN and the sparse kernels use the full
vector width; on Intel's CPUs MKL runs its AVX-512 code itself, and on a CPU without AVX-512 no path has a wider
vector to gain. With two or more threads in one process, BLAS shares the members out between threads and a loop
over members does not.
"""

from __future__ import annotations

import functools
import logging
import os
import platform

import torch

from . import native

CHOICES = ("auto", "onednn", "onednn+sparse", "blas")
PATHS = ("onednn+sparse", "onednn", "blas")  # what a choice resolves to, fastest first where all can run
VARIABLE = "PLASTICITY_LAB_CPU_MATMUL"  # the default choice, inherited by a sweep's worker processes
PROBE_TOLERANCE = 1e-4  # float32 against float64 on sums of at most 64 terms of order one: ~1e-6 is typical

log = logging.getLogger("plasticity_lab")

_choice: tuple[str, str] | None = None  # (choice, where it came from) set by set_cpu_matmul; None: the variable
_probes: dict[str, str] = {}  # path -> "" where its probe passed, else why it failed
_resolved: dict[tuple, tuple[str, str]] = {}  # (choice, source, threads) -> (path, why)
_probing: str | None = None  # the path being probed: cpu_matmul() answers it while the probe runs


@functools.cache
def cpu_vendor() -> str:
    """The CPU's vendor string (``"AuthenticAMD"``, ``"GenuineIntel"``, …), or ``""`` where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    processor = platform.processor()  # e.g. "AMD64 Family 26 Model 2 Stepping 1, AuthenticAMD" on Windows
    return processor.rsplit(",", 1)[-1].strip() if "," in processor else ""


VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "avx_ne_convert", "amx_tile",
                "amx_bf16", "asimd", "fphp", "asimdhp", "sve", "sve2", "bf16", "i8mm")


@functools.cache
def cpu_info() -> dict:
    """The CPU's model, vendor and vector extensions (those of :data:`VECTOR_FLAGS` it has), and the widest
    vector code PyTorch's own kernels run here (:func:`torch_cpu_capability`), for manifests."""
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    if not model and platform.system() == "Darwin":
        import subprocess

        try:
            model = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                   timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return {
        "cpu_model": model or platform.processor() or platform.machine(),
        "cpu_vendor": cpu_vendor(),
        "cpu_arch": platform.machine(),
        "cpu_vector_extensions": [f for f in VECTOR_FLAGS if f in flags],
        "torch_cpu_capability": torch_cpu_capability(),
    }


def torch_cpu_capability() -> str:
    """The widest vector code PyTorch's own kernels run here (``"AVX512"``, ``"AVX2"``, ``"DEFAULT"``, …; it honours
    ``ATEN_CPU_CAPABILITY``), or ``""`` in a PyTorch too old to say."""
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return get() if get is not None else ""


def _avx512() -> bool:
    capability = torch_cpu_capability()
    if capability:
        return capability == "AVX512"
    return "avx512f" in cpu_info()["cpu_vector_extensions"]


def onednn_available() -> bool:
    """Whether this PyTorch has oneDNN's float32 linear for this machine (an x86 CPU, oneDNN built in). Whether it
    computes correctly here is :func:`probe`'s question."""
    return (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _requirements(path: str) -> str:
    """Why ``path`` cannot even be tried here (``""`` if it can)."""
    if path == "blas":
        return ""
    if not onednn_available():
        return "it needs an x86 CPU and a PyTorch built with oneDNN"
    if path == "onednn+sparse" and native.member_ops() is None:
        return native.unavailable_reason()
    return ""


def _probe_problem():
    """A small population (2 members of a 50 -> 64 -> 64 MLP) and inputs shaped like the gridworld's: mostly
    zeros, one column shared by every row, values ±0.75 and 1."""
    from ..nets import NetworkSpec, fresh_parameters

    generator = torch.Generator().manual_seed(0)
    template = NetworkSpec(obs_dim=50, hidden=64, n_actions=4).build().to("meta")
    params = fresh_parameters(template, [torch.Generator().manual_seed(m) for m in range(2)])
    values = torch.tensor([-0.75, 0.75, 1.0])

    def observations(rows):
        x = values[torch.randint(0, 3, (2, rows, 50), generator=generator)]
        x = x * (torch.rand(2, rows, 50, generator=generator) < 0.2)
        x[:, :, 7] = 1.0
        return x

    return template, params, observations(5), observations(40)


def _compute(template, params, acting_obs, training_obs):
    """What a population computes: an acting forward pass without a graph, and a training minibatch's forward
    and backward pass. Returns every output and gradient, in float64."""
    from . import batched, cpu_kernels

    sparse = cpu_kernels.sparse_input_weight(template)
    if sparse in params and cpu_matmul() == "onednn+sparse":  # the layout its first layer reads and writes
        params = {**params, sparse: cpu_kernels.input_major(params[sparse])}
    with torch.no_grad():
        acting = batched.forward(template, params, acting_obs)[:2]
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    logits, value, _ = batched.forward(template, leaves, training_obs)
    (logits.square().sum() + value.sum()).backward()
    outputs = [*acting, logits, value] + [leaves[k].grad for k in sorted(leaves)]
    return [t.detach().double() for t in outputs]


def probe(path: str) -> str:
    """Run ``path`` here on a small problem and compare it with plain PyTorch in float64: ``""`` if it computes
    the same numbers (within :data:`PROBE_TOLERANCE`), else why not (its error's first line, or the size of the
    difference). Cached per process."""
    global _probing
    if path not in PATHS:
        raise ValueError(f"unknown CPU matmul path {path!r}; valid: {', '.join(PATHS)}")
    if path not in _probes:
        reason = _requirements(path)
        if not reason:
            template, params, acting, training = _probe_problem()
            previous = _probing
            try:
                _probing = "blas"
                want = _compute(template, {k: v.double() for k, v in params.items()}, acting.double(),
                                training.double())
                _probing = path
                got = _compute(template, params, acting, training)
                worst = max(float((g - w).abs().max() / (1 + w.abs().max())) for g, w in zip(got, want))
                if not worst <= PROBE_TOLERANCE:  # also catches NaN
                    reason = (f"its results differ from plain PyTorch's by {worst:.2g} (relative), more than "
                              f"{PROBE_TOLERANCE:g}")
            except Exception as error:  # whatever a library raises here means "not on this machine"
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                reason = f"{type(error).__name__}: {lines[0] if lines else 'no message'}"
            finally:
                _probing = previous
        _probes[path] = reason
    return _probes[path]


def checked_cpu_matmul(kind: str, source: str) -> str:
    """``kind`` if it is a choice that can run here, else one ``ValueError`` naming ``source``, the reason and the
    choices that work here. A fast path is probed (:func:`probe`) before it is accepted."""
    if kind not in CHOICES:
        raise ValueError(f"unknown CPU matmul {kind!r} ({source}); valid: {', '.join(CHOICES)}")
    if kind != "auto":
        reason = probe(kind)
        if reason:
            valid = ["auto"] + [p for p in PATHS if p != kind and not probe(p)]
            raise ValueError(f"CPU matmul {kind!r} ({source}) cannot run here: {reason}; valid here: "
                             f"{', '.join(valid)}")
    return kind


def set_cpu_matmul(kind: str | None) -> None:
    """Choose how the float32 matrix products run on the CPU, in this process.

    ``"blas"``: PyTorch's batched products, one per layer for all members (MKL in PyTorch's x86 builds),
    feature-major for training minibatches; it works everywhere. ``"onednn"``: oneDNN's float32 linear for every
    layer of at least ``stacked.ONEDNN_MIN_OUTPUTS`` outputs, one product per member, batch-major (the narrow heads
    of a training minibatch stay batched products). ``"onednn+sparse"``: the same, except for a first linear layer
    of a multiple of ``stacked.SPARSE_LANES`` outputs stored input-major (a population on the CPU stores it so
    when it is created under this choice), which :mod:`plasticity_lab.backends.native` computes by skipping the zeros of
    the observation. ``"auto"``: see the module's docstring. The three round differently, so a run repeats bit for
    bit only with the same path on the same machine.

    An explicit fast path is probed first (:func:`probe`); one that cannot run here raises ``ValueError``.
    ``None`` returns to the default: the environment variable ``PLASTICITY_LAB_CPU_MATMUL`` (which a sweep's worker
    processes inherit), else ``"auto"``. The GPU path does not depend on it.
    """
    global _choice
    _choice = None if kind is None else (checked_cpu_matmul(kind, "set_cpu_matmul"), "set_cpu_matmul")


def _auto() -> tuple[str, str]:
    """The path ``"auto"`` takes here, and why."""
    vendor = cpu_vendor() or "an unknown vendor's"
    if "AMD" not in vendor:
        return "blas", f"auto: blas on {vendor} CPU (fast paths are taken only on AMD CPUs with AVX-512)"
    if not _avx512():
        return "blas", "auto: blas on an AMD CPU without AVX-512 (no wider vectors for a fast path to use)"
    threads = torch.get_num_threads()
    if threads != 1:
        return "blas", f"auto: blas at {threads} threads per process (fast paths are taken at one thread)"
    failed = []
    for path in ("onednn+sparse", "onednn"):
        if path == "onednn+sparse" and native.sparse_kernels_isa() not in (None, "avx512"):
            failed.append(f"'{path}' skipped: its sparse kernels would run {native.sparse_kernels_isa()} code")
            continue
        reason = probe(path)
        if not reason:
            why = f"auto: {path} on an AMD CPU with AVX-512 at one thread, probe passed"
            probe_failures = [f for f in failed if "failed its probe" in f]
            if probe_failures:
                log.warning("plasticity_lab: CPU matmul falls back to %s: %s", path, "; ".join(probe_failures))
            return path, why + "".join(f"; {f}" for f in failed)
        failed.append(f"'{path}' failed its probe: {reason}")
    why = "auto: blas, since " + "; ".join(failed)
    log.warning("plasticity_lab: CPU matmul falls back to plain PyTorch (blas): %s", "; ".join(failed))
    return "blas", why


def _resolve() -> tuple[str, str]:
    if _probing is not None:
        return _probing, "probe"
    choice, source = _choice or (os.environ.get(VARIABLE, "auto"), VARIABLE)
    key = (choice, source, torch.get_num_threads() if choice == "auto" else 0)
    if key not in _resolved:
        if choice == "auto":
            _resolved[key] = _auto()
        else:
            checked_cpu_matmul(choice, source if source != VARIABLE else f"{VARIABLE}={choice}")
            _resolved[key] = (choice, f"{choice}: chosen by {source}, probe passed" if choice != "blas"
                              else f"blas: chosen by {source}")
    return _resolved[key]


def cpu_matmul() -> str:
    """The path the CPU's products take now: ``"onednn+sparse"``, ``"onednn"`` or ``"blas"`` (see
    :func:`set_cpu_matmul`)."""
    return _resolve()[0]


def cpu_matmul_reason() -> str:
    """Why :func:`cpu_matmul` is what it is: the choice, where it came from, and the probes' verdicts."""
    return _resolve()[1]


def reset() -> None:
    """Forget every probe and resolution (for tests that change what the machine seems to offer)."""
    global _choice
    _choice = None
    _probes.clear()
    _resolved.clear()
