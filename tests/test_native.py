"""The native operators (oneDNN's batched products with a matrix per member) against float64 references."""

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from plasticity_lab import native, stacked

BUILDABLE = (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
             and shutil.which(os.environ.get("CXX", "c++")) is not None)


@pytest.fixture(scope="module")
def ops():
    if not BUILDABLE:
        pytest.skip("needs an x86 CPU, a PyTorch with oneDNN and a C++ compiler")
    built = native.member_ops()
    # where a compiler is present the operators must build: a silent fallback would hide a broken build
    assert built is not None, native.unavailable_reason()
    return built


def _operand(members, rows, cols, transposed, g):
    """A [members, rows, cols] operand, stored contiguous or as the transpose of a contiguous tensor."""
    if transposed:
        return torch.randn(members, cols, rows, generator=g).transpose(1, 2)
    return torch.randn(members, rows, cols, generator=g)


@pytest.mark.parametrize("a_transposed", [False, True])
@pytest.mark.parametrize("b_transposed", [False, True])
def test_member_matmul_equals_a_float64_product_per_member(ops, a_transposed, b_transposed):
    g = torch.Generator().manual_seed(0)
    a = _operand(4, 37, 29, a_transposed, g)
    b = _operand(4, 29, 19, b_transposed, g)
    out = ops.member_matmul(a, b)
    assert out.shape == (4, 37, 19) and out.is_contiguous()
    want = torch.stack([a[m].double() @ b[m].double() for m in range(4)])
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("with_bias", [True, False])
def test_member_linear_equals_a_float64_layer_per_member(ops, with_bias):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 11, 24, generator=g)
    weight = torch.randn(3, 16, 24, generator=g)
    bias = torch.randn(3, 16, generator=g) if with_bias else None
    out = ops.member_linear(x, weight, bias)
    for m in range(3):
        want = x[m].double() @ weight[m].double().T + (bias[m].double() if with_bias else 0)
        torch.testing.assert_close(out[m].double(), want, rtol=1e-5, atol=1e-5)


def test_batched_products_repeat_the_per_member_loop_bit_for_bit(ops):
    # the batched product is a faster route to the same numbers, so a run does not depend on whether it built
    g = torch.Generator().manual_seed(2)
    x = torch.randn(5, 64, 363, generator=g)
    weight = torch.randn(5, 256, 363, generator=g) / 20
    bias = torch.randn(5, 256, generator=g)
    grad = torch.randn(5, 64, 256, generator=g)
    members = range(5)
    loop_out = torch.stack([stacked.onednn_linear(x[m], weight[m], bias[m]) for m in members])
    assert torch.equal(ops.member_linear(x, weight, bias), loop_out)
    loop_dx = torch.stack([stacked.onednn_linear(grad[m], weight[m].t()) for m in members])
    assert torch.equal(ops.member_matmul(grad, weight), loop_dx)
    grad_t = grad.transpose(1, 2).contiguous()
    loop_dw = torch.stack([stacked.onednn_linear(grad_t[m], x[m].t()) for m in members])
    assert torch.equal(ops.member_matmul(grad.transpose(1, 2), x), loop_dw)


def test_member_operators_reject_bad_operands_with_one_clear_error(ops):
    a, b = torch.randn(2, 3, 4), torch.randn(2, 5, 6)
    with pytest.raises(RuntimeError, match=r"member_matmul: shapes do not match: \[2, 3, 4\] and \[2, 5, 6\]"):
        ops.member_matmul(a, b)
    with pytest.raises(RuntimeError, match=r"member_matmul: operands must be"):
        ops.member_matmul(torch.randn(3, 4), torch.randn(4, 5))
    with pytest.raises(RuntimeError, match=r"member_matmul: float32 only"):
        ops.member_matmul(a.double(), torch.randn(2, 4, 6, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"member_linear: bias must be \[members, out\] = 2x5; got \[2, 4\]"):
        ops.member_linear(torch.randn(2, 3, 4), torch.randn(2, 5, 4), torch.randn(2, 4))


def test_native_operators_can_be_turned_off_and_say_why():
    code = ("from plasticity_lab import native, stacked; "
            "assert native.member_ops() is None and not stacked.onednn_batched(); print(native.unavailable_reason())")
    env = {**os.environ, native.NATIVE_VARIABLE: "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "turned off by PLASTICITY_LAB_NATIVE=0"


def test_a_failed_build_falls_back_and_keeps_its_reason(monkeypatch):
    calls = []

    def broken_build():
        calls.append(1)
        raise RuntimeError("Error building extension 'plasticity_lab_member_matmul'\nc++: command not found")

    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setattr(native, "_reason", "")
    monkeypatch.setattr(native, "_build", broken_build)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    assert native.member_ops() is None
    assert native.unavailable_reason() == "the native operators could not be built: c++: command not found"
    assert native.member_ops() is None
    assert len(calls) == 1  # tried once per process


@pytest.mark.parametrize("condition", ["soft_shrink_perturb+layernorm", "crelu", "injection"])
def test_a_run_with_onednn_is_the_same_whether_its_products_are_batched_or_looped(ops, condition, monkeypatch):
    import pandas as pd

    import plasticity_lab as pl
    from plasticity_lab.experiment import Experiment

    configs = [pl.RunConfig(condition=condition, shift="permute", seed=seed, preset="smoke", rounds=2,
                            epochs_per_round=2) for seed in (0, 1)]
    stacked.set_cpu_matmul("onednn")
    try:
        tables = []
        for batched in (True, False):
            if not batched:
                monkeypatch.setattr(native, "member_ops", lambda: None)
            assert stacked.onednn_batched() is batched
            experiment = Experiment(configs)
            experiment.train_to_end()
            tables.append((experiment.table(), {k: v.clone() for k, v in experiment.population.params.items()}))
    finally:
        stacked.set_cpu_matmul(None)
    (batched_table, batched_params), (loop_table, loop_params) = tables
    pd.testing.assert_frame_equal(batched_table, loop_table, check_exact=True)
    assert all(torch.equal(batched_params[k], loop_params[k]) for k in batched_params)


def test_a_failed_build_is_summed_up_by_the_compilers_first_error():
    log = ("Error building extension 'plasticity_lab_member_matmul': [1/2] c++ -c member_matmul.cpp\n"
           "member_matmul.cpp:18:6: error: 'mkldnn_matmul' was not declared\n"
           "member_matmul.cpp:40:1: error: expected ';'\nninja: build stopped: subcommand failed.")
    assert native._summary(RuntimeError(log)) == "member_matmul.cpp:18:6: error: 'mkldnn_matmul' was not declared"
    assert native._summary(RuntimeError("ld: cannot find -ltorch_cpu\n")) == "ld: cannot find -ltorch_cpu"


def test_a_missing_compiler_is_named_without_trying_to_build(monkeypatch):
    monkeypatch.setenv("CXX", "/nowhere/c++")
    with pytest.raises(RuntimeError, match=r"no C\+\+ compiler: '/nowhere/c\+\+' is not on PATH"):
        native._build()


def _observation_like(members, rows, inputs, g):
    """Mostly zeros, in the gridworld's values, with a column that every row shares (a border wall), a column
    that is zero everywhere, and a row that is zero outside the shared columns."""
    values = torch.tensor([-0.75, 0.75, 1.0])
    x = values[torch.randint(0, 3, (members, rows, inputs), generator=g)]
    x *= torch.rand(members, rows, inputs, generator=g) < 0.15
    if rows > 1:
        x[:, -1, :] = 0.0
    x[:, :, 3] = 1.0      # shared by every row: added once per member
    x[:, :, 5] = 0.0
    x[1, :, 7] = -0.75    # shared in member 1 only
    return x


@pytest.mark.parametrize("rows", [1, 11, 40])
@pytest.mark.parametrize("with_bias", [True, False])
def test_sparse_input_layer_and_its_weight_gradient_equal_a_float64_reference(ops, rows, with_bias):
    g = torch.Generator().manual_seed(3)
    x = _observation_like(3, rows, 37, g)  # 37 inputs: not a multiple of the 16-wide vectors
    weight = torch.randn(3, 128, 37, generator=g)
    bias = torch.randn(3, 128, generator=g) if with_bias else None
    grad = torch.randn(3, rows, 128, generator=g)
    out = ops.sparse_input_linear(x, weight.transpose(1, 2).contiguous(), bias)
    want = torch.einsum("mbi,moi->mbo", x.double(), weight.double())
    if with_bias:
        want += bias.double().unsqueeze(1)
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    grad_t = ops.sparse_input_weight_grad(x, grad)  # input-major: [M, in, out]
    torch.testing.assert_close(grad_t.double(), torch.einsum("mbi,mbo->mio", x.double(), grad.double()),
                               rtol=1e-5, atol=1e-5)


def test_sparse_input_operators_reject_bad_operands_with_one_clear_error(ops):
    x = torch.zeros(2, 4, 10)
    with pytest.raises(RuntimeError, match=r"sparse_input_linear: outputs must be a multiple of 64; got 32"):
        ops.sparse_input_linear(x, torch.zeros(2, 10, 32), None)
    with pytest.raises(RuntimeError, match=r"sparse_input_linear: weight_t must be \[members, in, out\] with in = 10"):
        ops.sparse_input_linear(x, torch.zeros(2, 64, 10), None)
    with pytest.raises(RuntimeError, match=r"sparse_input_weight_grad: rows do not match"):
        ops.sparse_input_weight_grad(x, torch.zeros(2, 5, 64))
    with pytest.raises(RuntimeError, match=r"sparse_input_linear: bias must be \[members, out\] = 2x64; got \[2, 32\]"):
        ops.sparse_input_linear(x, torch.zeros(2, 10, 64), torch.zeros(2, 32))


def test_the_portable_loops_compute_what_the_vector_code_computes(ops):
    # machines without AVX-512 run the portable loops: run them here too, in a process of their own
    code = """
import torch
from plasticity_lab import native
ops = native.member_ops()
g = torch.Generator().manual_seed(5)
x = (torch.rand(2, 9, 37, generator=g) < 0.2) * torch.randn(2, 9, 37, generator=g)
x[:, :, 2] = 0.75
weight_t, bias, grad = torch.randn(2, 37, 64, generator=g), torch.randn(2, 64, generator=g), torch.randn(2, 9, 64, generator=g)
torch.save((x, weight_t, bias, grad, ops.sparse_input_linear(x, weight_t, bias), ops.sparse_input_weight_grad(x, grad)), OUT)
print(ops.sparse_kernels_vectorized())
"""
    results = []
    for portable in (False, True):
        out = Path(tempfile.mkdtemp()) / "out.pt"
        env = {k: v for k, v in os.environ.items() if k != "PLASTICITY_LAB_NATIVE_PORTABLE"}
        if portable:
            env["PLASTICITY_LAB_NATIVE_PORTABLE"] = "1"
        done = subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + code], env=env, check=True,
                              capture_output=True, text=True)
        if portable:
            assert done.stdout.strip() == "False"  # the portable loops ran
        results.append(torch.load(out))
    (x, weight_t, bias, grad, *vector), (_, _, _, _, *portable) = results
    want = torch.einsum("mbi,mio->mbo", x.double(), weight_t.double()) + bias.double().unsqueeze(1)
    want_grad = torch.einsum("mbi,mbo->mio", x.double(), grad.double())
    for got in (vector, portable):
        torch.testing.assert_close(got[0].double(), want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1].double(), want_grad, rtol=1e-5, atol=1e-5)
