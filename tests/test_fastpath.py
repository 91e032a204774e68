"""The CPU product path: validated choices, probes that run a fast path before it is used, and a default that falls
back instead of crashing — on this machine, on a CPU pretended to be another, and with the fast paths made to fail
as they fail on CPUs without AVX-512."""

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import plasticity_lab as pl
from plasticity_lab import results
from plasticity_lab.backends import batched, cpu_kernels, fastpath, native

ROOT = Path(__file__).resolve().parent.parent
# The error a oneDNN route inside torch 2.13 raised for float32 work on an AVX2-only AMD EPYC (Zen 3)
AVX2_ERROR = ("mkldnn_matmul: mkldnn_matmul bf16 path needs the cpu support avx_ne_convert or avx512bw,\n"
              "avx512vl and avx512dq, or AWS Graviton3")


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    """Each test starts with no probe or resolution remembered and no choice made, and leaves none behind."""
    monkeypatch.delenv(fastpath.VARIABLE, raising=False)
    threads = torch.get_num_threads()
    fastpath.reset()
    yield
    torch.set_num_threads(threads)
    fastpath.reset()


def _pretend(monkeypatch, vendor="AuthenticAMD", avx512=True, threads=1):
    monkeypatch.setattr(fastpath, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(fastpath, "_avx512", lambda: avx512)
    torch.set_num_threads(threads)


def _break_fast_paths(monkeypatch, how="raise"):
    """Make oneDNN's linear and the sparse kernels fail as they did on an AVX2-only CPU (``"raise"``) or compute
    slightly wrong numbers (``"wrong"``)."""
    onednn = cpu_kernels.onednn_linear

    def broken_onednn(*args, **kwargs):
        if how == "raise":
            raise RuntimeError(AVX2_ERROR)
        return onednn(*args, **kwargs) * 1.01

    def broken_sparse(*args):
        raise RuntimeError("illegal operand")

    monkeypatch.setattr(cpu_kernels, "onednn_linear", broken_onednn)
    ops = native.member_ops()
    if ops is not None:
        monkeypatch.setattr(native, "member_ops", lambda: SimpleNamespace(
            sparse_input_linear=broken_sparse, sparse_input_weight_grad=broken_sparse,
            sparse_kernels_isa=ops.sparse_kernels_isa))


def _expected_auto_path() -> str:
    """What auto must take on an AMD CPU with AVX-512 at one thread, from the probes' verdicts alone."""
    if native.sparse_kernels_isa() == "avx512" and not fastpath.probe("onednn+sparse"):
        return "onednn+sparse"
    return "onednn" if not fastpath.probe("onednn") else "blas"


def test_blas_always_passes_its_probe_and_an_unknown_path_is_refused():
    assert fastpath.probe("blas") == ""
    with pytest.raises(ValueError, match=r"unknown CPU matmul path 'mkl'; valid: onednn\+sparse, onednn, blas"):
        fastpath.probe("mkl")


def test_a_choice_is_validated_by_name_wherever_it_comes_from(monkeypatch):
    with pytest.raises(ValueError,
                       match=r"unknown CPU matmul 'mkl' \(set_cpu_matmul\); valid: auto, onednn, onednn\+sparse, blas"):
        fastpath.set_cpu_matmul("mkl")
    monkeypatch.setenv(fastpath.VARIABLE, "fast")
    with pytest.raises(ValueError, match=r"unknown CPU matmul 'fast' \(PLASTICITY_LAB_CPU_MATMUL=fast\); valid: "):
        fastpath.cpu_matmul()


def test_auto_takes_a_fast_path_only_on_an_amd_cpu_with_avx512_at_one_thread(monkeypatch):
    _pretend(monkeypatch, vendor="GenuineIntel")
    assert fastpath.cpu_matmul() == "blas"
    assert "GenuineIntel" in fastpath.cpu_matmul_reason()
    _pretend(monkeypatch, avx512=False)  # e.g. Zen 2 / Zen 3
    fastpath.reset()
    assert fastpath.cpu_matmul() == "blas"
    assert "without AVX-512" in fastpath.cpu_matmul_reason()
    _pretend(monkeypatch, threads=2)
    fastpath.reset()
    assert fastpath.cpu_matmul() == "blas"
    assert "2 threads" in fastpath.cpu_matmul_reason()
    torch.set_num_threads(1)  # the resolution follows the thread count
    assert fastpath.cpu_matmul() == _expected_auto_path()


def test_auto_falls_back_with_one_warning_line_when_the_fast_paths_raise(monkeypatch, caplog, tmp_path):
    _pretend(monkeypatch)
    _break_fast_paths(monkeypatch, "raise")
    with caplog.at_level(logging.WARNING, logger="plasticity_lab"):
        assert fastpath.cpu_matmul() == "blas"
        assert fastpath.cpu_matmul() == "blas"  # resolved once: one warning, not one per product
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert "falls back to plain PyTorch (blas)" in warnings[0].getMessage()
    assert "RuntimeError: mkldnn_matmul: mkldnn_matmul bf16 path needs" in warnings[0].getMessage()
    # the default path trains, and the manifest says which path it took and why
    table = pl.run(pl.RunConfig(seed=0, preset="smoke", rounds=1, epochs_per_round=2))
    assert len(table) == 2
    info = results.environment_info()
    assert info["cpu_matmul"] == "blas"
    assert "failed its probe: RuntimeError: mkldnn_matmul" in info["cpu_matmul_reason"]


def test_a_fast_path_that_computes_wrong_numbers_fails_its_probe(monkeypatch):
    _break_fast_paths(monkeypatch, "wrong")
    reason = fastpath.probe("onednn")
    if not fastpath.onednn_available():
        pytest.skip(f"onednn cannot run here at all: {reason}")
    assert reason.startswith("its results differ from plain PyTorch's by ")
    _pretend(monkeypatch)
    assert fastpath.cpu_matmul() == "blas"


def test_an_explicit_choice_that_cannot_run_is_one_clear_error(monkeypatch):
    _break_fast_paths(monkeypatch, "raise")
    monkeypatch.setenv(fastpath.VARIABLE, "onednn")
    with pytest.raises(ValueError) as error:
        fastpath.cpu_matmul()
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("CPU matmul 'onednn' (PLASTICITY_LAB_CPU_MATMUL=onednn) cannot run here: ")
    assert message.endswith("; valid here: auto, blas")
    with pytest.raises(ValueError, match=r"CPU matmul 'onednn\+sparse' \(set_cpu_matmul\) cannot run here: "):
        fastpath.set_cpu_matmul("onednn+sparse")


def test_an_explicit_choice_is_honoured_and_the_call_wins_over_the_variable(monkeypatch):
    reason = fastpath.probe("onednn")
    if reason:
        pytest.skip(f"onednn cannot run here: {reason}")
    monkeypatch.setenv(fastpath.VARIABLE, "onednn")
    assert fastpath.cpu_matmul() == "onednn"
    assert fastpath.cpu_matmul_reason() == "onednn: chosen by PLASTICITY_LAB_CPU_MATMUL, probe passed"
    fastpath.set_cpu_matmul("blas")
    assert fastpath.cpu_matmul() == "blas"
    fastpath.set_cpu_matmul(None)
    assert fastpath.cpu_matmul() == "onednn"


def test_the_manifest_names_the_cpu_its_vector_extensions_the_path_and_every_computing_library():
    info = results.environment_info()
    assert info["cpu_model"] and info["cpu_arch"]
    assert info["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert fastpath._avx512() == (info["torch_cpu_capability"] == "AVX512")
    assert isinstance(info["cpu_vector_extensions"], list)
    if Path("/proc/cpuinfo").exists() and " avx2 " in Path("/proc/cpuinfo").read_text():
        assert "avx2" in info["cpu_vector_extensions"]
    assert info["cpu_matmul"] in fastpath.PATHS and info["cpu_matmul_reason"]
    libraries = info["libraries"]
    assert set(results.COMPUTING_LIBRARIES) <= set(libraries)
    import numpy
    import scipy
    import statsmodels

    assert libraries["torch"] == torch.__version__.split("+")[0] or libraries["torch"] == torch.__version__
    assert (libraries["numpy"], libraries["scipy"], libraries["statsmodels"]) == (
        numpy.__version__, scipy.__version__, statsmodels.__version__)


# ------------------------------------------------------------------------------------------- portability
# The named subset that must pass however the CPU's products are computed: run (the API and the CLI), sweep,
# every condition, the benchmark's smoke row and one book chapter.
PORTABILITY_SUBSET = [
    "tests/test_cli.py::test_run_writes_results_and_manifest",
    "tests/test_experiment.py::test_same_config_and_seed_give_identical_results",
    "tests/test_experiment.py::test_population_runs_every_member_under_its_own_shift_and_seed",
    "tests/test_conditions.py::test_every_condition_runs_end_to_end_without_nans",
    "tests/test_sweep.py::test_study_holds_what_the_runner_computes",
    "tests/test_benchmark.py::test_the_benchmark_prints_a_row_for_the_default_path_and_honours_the_environments_choice",
    "tests/test_book.py::test_chapter_executes_in_smoke_mode[02_gridworld_ppo]",
]

AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2",
             native.NATIVE_ISA_VARIABLE: "avx2"}  # PyTorch's kernels, MKL, oneDNN and the sparse kernels
SETTINGS = {
    # as on a CPU without AVX-512 and without a C++ compiler, default settings: auto takes blas
    "native-off-avx2-auto": {**AVX2_ONLY, native.NATIVE_VARIABLE: "0"},
    # every library limited to AVX2, with the fast path forced
    "avx2-onednn+sparse": {**AVX2_ONLY, fastpath.VARIABLE: "onednn+sparse"},
}


@pytest.fixture(scope="module")
def subset_runs(tmp_path_factory):
    """The subset under every setting, started at once (two processes share the cores better than one after the
    other): setting -> (process, output file), or the reason it cannot run here."""
    runs = {}
    for setting, extra in SETTINGS.items():
        env = {**os.environ, **extra}
        env.pop("PYTEST_ADDOPTS", None)
        if fastpath.VARIABLE in extra:  # a forced path must first pass its probe under these settings
            probe = subprocess.run([sys.executable, "-c", "from plasticity_lab.backends import fastpath; "
                                    f"print(fastpath.probe({extra[fastpath.VARIABLE]!r}))"],
                                   env=env, capture_output=True, text=True, check=True, cwd=ROOT)
            if probe.stdout.strip():
                runs[setting] = f"{setting}: the path cannot run here: {probe.stdout.strip()}"
                continue
        output = tmp_path_factory.mktemp(setting) / "pytest.log"
        with open(output, "w") as sink:
            process = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-k",
                                        "not set_to_blas", *PORTABILITY_SUBSET], env=env, stdout=sink,
                                       stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        runs[setting] = (process, output)
    yield runs
    for run in runs.values():
        if isinstance(run, tuple) and run[0].poll() is None:
            run[0].kill()


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_the_named_subset_passes_with_the_fast_paths_limited(setting, subset_runs):
    run = subset_runs[setting]
    if isinstance(run, str):
        pytest.skip(run)
    process, output = run
    returncode = process.wait(timeout=1200)
    tail = "\n".join(output.read_text().splitlines()[-15:])
    assert returncode == 0, f"{setting}:\n{tail}"
    assert " passed" in tail and " failed" not in tail


def test_auto_takes_the_next_fast_path_with_one_warning_line_when_the_first_fails(monkeypatch, caplog):
    if fastpath.probe("onednn") or native.sparse_kernels_isa() != "avx512":
        pytest.skip("needs onednn and the AVX-512 sparse kernels to run here")
    _pretend(monkeypatch)
    ops = native.member_ops()

    def broken_sparse(*args):
        raise RuntimeError("illegal operand")

    monkeypatch.setattr(native, "member_ops", lambda: SimpleNamespace(
        sparse_input_linear=broken_sparse, sparse_input_weight_grad=broken_sparse,
        sparse_kernels_isa=ops.sparse_kernels_isa))
    with caplog.at_level(logging.WARNING, logger="plasticity_lab"):
        assert fastpath.cpu_matmul() == "onednn"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "RuntimeError: illegal operand" in warnings[0] and "falls back to onednn" in warnings[0]
    assert "'onednn+sparse' failed its probe: RuntimeError: illegal operand" in fastpath.cpu_matmul_reason()
