"""The native operators (a first layer that skips its input's zeros) against float64 references, in each of the
instruction sets their inner loop has."""

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from plasticity_lab.backends import native

BUILDABLE = shutil.which(os.environ.get("CXX", "c++")) is not None and os.environ.get(native.NATIVE_VARIABLE) != "0"


@pytest.fixture(scope="module")
def ops():
    if not BUILDABLE:
        pytest.skip(f"the native operators are not built here: {native.unavailable_reason() or 'no C++ compiler'}")
    built = native.member_ops()
    # where a compiler is present the operators must build: a silent fallback would hide a broken build
    assert built is not None, native.unavailable_reason()
    return built


def test_native_operators_can_be_turned_off_and_say_why():
    code = ("from plasticity_lab.backends import fastpath, native; assert native.member_ops() is None; "
            "print(native.unavailable_reason()); print(fastpath.probe('onednn+sparse'))")
    env = {**os.environ, native.NATIVE_VARIABLE: "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == ["turned off by PLASTICITY_LAB_NATIVE=0"] * 2  # the probe says why too


def test_a_failed_build_falls_back_and_keeps_its_reason(monkeypatch):
    monkeypatch.delenv(native.NATIVE_VARIABLE, raising=False)  # the build path, even in a run that turns it off
    calls = []

    def broken_build():
        calls.append(1)
        raise RuntimeError("Error building extension 'plasticity_lab_sparse_input'\nc++: command not found")

    monkeypatch.setattr(native, "_loaded", None)
    monkeypatch.setattr(native, "_reason", "")
    monkeypatch.setattr(native, "_build", broken_build)
    assert native.member_ops() is None
    assert native.unavailable_reason() == "the native operators could not be built: c++: command not found"
    assert native.member_ops() is None
    assert len(calls) == 1  # tried once per process


def test_a_failed_build_is_summed_up_by_the_compilers_first_error():
    log = ("Error building extension 'plasticity_lab_sparse_input': [1/2] c++ -c sparse_input.cpp\n"
           "sparse_input.cpp:18:6: error: 'at::parallel_for' was not declared\n"
           "sparse_input.cpp:40:1: error: expected ';'\nninja: build stopped: subcommand failed.")
    assert native._summary(RuntimeError(log)) == "sparse_input.cpp:18:6: error: 'at::parallel_for' was not declared"
    assert native._summary(RuntimeError("ld: cannot find -ltorch_cpu\n")) == "ld: cannot find -ltorch_cpu"


def test_a_missing_compiler_is_named_without_trying_to_build(monkeypatch):
    monkeypatch.delenv(native.NATIVE_VARIABLE, raising=False)  # the build path, even in a run that turns it off
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


@pytest.mark.parametrize("isa", native.NATIVE_ISA_CHOICES)
def test_every_instruction_set_of_the_kernels_computes_the_float64_reference(ops, isa):
    # CPUs without AVX-512 run the AVX2 or the portable loops: run each here too, in a process of its own
    code = """
import torch
from plasticity_lab.backends import native
ops = native.member_ops()
g = torch.Generator().manual_seed(5)
x = (torch.rand(2, 9, 37, generator=g) < 0.2) * torch.randn(2, 9, 37, generator=g)
x[:, :, 2] = 0.75
weight_t, bias, grad = torch.randn(2, 37, 128, generator=g), torch.randn(2, 128, generator=g), torch.randn(2, 9, 128, generator=g)
torch.save((x, weight_t, bias, grad, ops.sparse_input_linear(x, weight_t, bias), ops.sparse_input_weight_grad(x, grad)), OUT)
print(ops.sparse_kernels_isa())
"""
    out = Path(tempfile.mkdtemp()) / "out.pt"
    env = {**os.environ, native.NATIVE_ISA_VARIABLE: isa}
    done = subprocess.run([sys.executable, "-c", f"OUT = {str(out)!r}\n" + code], env=env, check=True,
                          capture_output=True, text=True)
    ran = done.stdout.strip()
    if ran != isa:  # a cap above what the CPU has runs the best it has
        assert native.NATIVE_ISA_CHOICES.index(ran) > native.NATIVE_ISA_CHOICES.index(isa)
        pytest.skip(f"this CPU has no {isa}: the kernels ran {ran}")
    x, weight_t, bias, grad, got, got_grad = torch.load(out)
    want = torch.einsum("mbi,mio->mbo", x.double(), weight_t.double()) + bias.double().unsqueeze(1)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad.double(), torch.einsum("mbi,mbo->mio", x.double(), grad.double()),
                               rtol=1e-5, atol=1e-5)


def test_an_unknown_instruction_set_cap_is_one_clear_error():
    code = "from plasticity_lab.backends import native; native.member_ops()"
    env = {**os.environ, native.NATIVE_ISA_VARIABLE: "sse9"}
    env.pop(native.NATIVE_VARIABLE, None)  # the cap is read where the operators would be built
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == (
        "ValueError: unknown PLASTICITY_LAB_NATIVE_ISA='sse9'; valid: avx512, avx2, portable")
