"""The helpers of ``benchmarks/population_speed.py`` (the benchmark itself prints timings and is not a test)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "population_speed.py"
_spec = importlib.util.spec_from_file_location("population_speed", _path)
population_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(population_speed)


def test_median_run_is_a_real_run_with_the_range_of_all():
    runs = [{"s_per_agent_epoch": t, "gflops": 1 / t} for t in (0.05, 0.03, 0.04)]
    row = population_speed.median_run(runs)
    assert row["s_per_agent_epoch"] == 0.04 and row["gflops"] == 1 / 0.04  # the middle run, all of its columns
    assert (row["fastest"], row["slowest"]) == (0.03, 0.05)
    even = population_speed.median_run(runs + [{"s_per_agent_epoch": 0.06, "gflops": 0.0}])
    assert even["s_per_agent_epoch"] == 0.05  # the slower of the two middle runs


def test_computing_ops_counts_arithmetic_not_views_nor_numbers_made_tensors():
    a = torch.randn(4, 4)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        b = a @ a                            # 1: mm (matmul only dispatches to it)
        c = torch.relu(b)                    # 1: clamp_min (relu dispatches to it)
        c.view(16)                           # 0: a view
        c + 1                                # 1: add (the 1 made a tensor does not count)
        c.transpose(0, 1).contiguous()       # 1: the copy (transpose is a view, contiguous allocates and copies)
    assert population_speed.computing_ops(prof.events()) == 4


def test_computing_ops_counts_a_native_operation_once_whatever_it_calls():
    from plasticity_lab.backends import native

    ops = native.member_ops()
    if ops is None:
        pytest.skip(f"native operators unavailable: {native.unavailable_reason()}")
    x, weight_t, bias = torch.randn(2, 5, 8), torch.randn(2, 8, 64), torch.randn(2, 64)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y = ops.sparse_input_linear(x, weight_t, bias)  # 1: whatever it calls
        torch.relu(y)                                                                          # 1
    assert population_speed.computing_ops(prof.events()) == 2


@pytest.mark.parametrize("choice", [None, "blas"], ids=["from_environment", "set_to_blas"])
def test_the_benchmark_prints_a_row_for_the_default_path_and_honours_the_environments_choice(choice):
    env = dict(os.environ)
    if choice:
        env["PLASTICITY_LAB_CPU_MATMUL"] = choice
    chosen = env.get("PLASTICITY_LAB_CPU_MATMUL", "auto")
    done = subprocess.run([sys.executable, str(_path), "--sizes", "1", "--epochs", "1", "--threads", "1"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["members", "matmul"])
    row = lines[header + 1].split()
    assert row[0] == "1" and row[3] == "eager" and float(row[4]) > 0  # members, …, execution, s/pop-epoch
    # the path is the environment's choice, or auto's resolution named as such, and the reason is printed
    if chosen == "auto":
        assert row[1].startswith("auto→") and row[1].removeprefix("auto→") in ("onednn+sparse", "onednn", "blas")
    else:
        assert row[1] == chosen
    assert any(line.startswith(f"{row[1]}: ") for line in lines)


def test_the_benchmark_refuses_an_unknown_path_in_one_line():
    done = subprocess.run([sys.executable, str(_path), "--cpu-matmul", "mkl"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(
        "error: unknown CPU matmul 'mkl' (--cpu-matmul); valid: auto, onednn, onednn+sparse, blas")
