"""The helpers of ``benchmarks/population_speed.py`` (the benchmark itself prints timings and is not a test)."""

import importlib.util
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
    from plasticity_lab import native

    ops = native.member_ops()
    if ops is None:
        pytest.skip(f"native operators unavailable: {native.unavailable_reason()}")
    x, weight, bias = torch.randn(2, 5, 8), torch.randn(2, 6, 8), torch.randn(2, 6)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y = ops.member_linear(x, weight, bias)   # 1: its bias copy inside is part of it
        torch.relu(y)                            # 1
    assert population_speed.computing_ops(prof.events()) == 2
