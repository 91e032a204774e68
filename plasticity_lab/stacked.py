"""The actor-critic evaluated for a whole population at once, straight from its stacked parameters.

``torch.func.vmap`` over ``functional_call`` runs any network on stacked parameters, but for the small MLP of the
gridworld its batching rules cost as much as the arithmetic: every linear layer is rewritten with transposes
that the backward pass then copies. This module evaluates the same network with one batched matrix product per
layer and nothing else. For training minibatches it uses a *feature-major* layout: a layer's activations are
``[M, units, B]``, so that ``W [M, out, in] @ h [M, in, B]`` uses the stored weights as they are and the weight
gradient ``dh [M, out, B] @ h [M, B, in]`` comes out in the weights' own layout, with no copy in either
direction. For a few rows at a time (acting in the environment copies) the usual batch-major ``[M, B, units]``
is faster: a matrix product with so few columns is slow in the feature-major order.

It knows the modules of :mod:`plasticity_lab.nets` (``Block`` with ``Linear``, ``LayerNorm`` or no norm, ``ReLU``
or ``CReLU``), linear heads, and any module that defines ``stacked_forward(params, prefix, x, features_axis)`` (the injected
head of plasticity injection does). :func:`supports` says whether a template qualifies; the population falls
back to ``vmap`` for anything else (the CNN). Results equal ``vmap(functional_call)`` up to float rounding.

On an AMD CPU the matrix products go to oneDNN instead (:func:`set_cpu_matmul`): PyTorch's batched products
call MKL, which runs its AVX2 code on CPUs that are not Intel's, while oneDNN's kernels use whatever vector width
the CPU has. Measured on the 2-core AMD EPYC (Zen 5) this project develops on, one thread: a 2048² float32 product
runs at 95 GFLOP/s through MKL and 220 through oneDNN. PyTorch's Python API has no oneDNN product with a weight per
member; :mod:`plasticity_lab.native` compiles one (oneDNN's batched matmul) on first use, and where it cannot be
built this path loops over members instead, with the same numbers (:class:`_OneDNNLinear`). oneDNN works
batch-major. With ``"onednn+sparse"`` the first layer, whose input is the observation (about 58 of the gridworld's
363 inputs are non-zero, 40 of them the border walls that every row shares), is computed by
:mod:`plasticity_lab.native`'s kernels, which skip the zeros (:class:`_SparseInputLinear`). All are float32
throughout; they round differently, so a run repeats bit for bit only with the same choice on the same machine.
"""

from __future__ import annotations

import functools
import os
import platform

import torch
from torch import nn

from . import native
from .nets import ActorCritic, Block, CReLU


def supports(template: nn.Module) -> bool:
    """Whether :func:`forward` can evaluate ``template`` (an MLP actor-critic of known modules)."""
    if not isinstance(template, ActorCritic) or any(True for _ in template.buffers()):
        return False
    modules = list(template.encoder) + list(template.heads().values())
    return all(_known(m) for m in modules)


def _known(module: nn.Module) -> bool:
    if isinstance(module, Block):
        return (isinstance(module.layer, nn.Linear) and isinstance(module.norm, (nn.LayerNorm, nn.Identity))
                and isinstance(module.activation, (nn.ReLU, CReLU)))
    if isinstance(module, nn.LayerNorm):
        return len(module.normalized_shape) == 1
    return isinstance(module, (nn.Linear, nn.ReLU, CReLU, nn.Identity)) or hasattr(module, "stacked_forward")


FEATURE_MAJOR, BATCH_MAJOR = 1, 2  # the axis of the activations that holds the features
FEATURE_MAJOR_FROM = 32  # rows per member from which the feature-major layout is the faster one (measured)
ONEDNN_MIN_OUTPUTS = 8  # narrower layers (the heads) stay one batched product: a loop over members costs more

CPU_MATMUL_CHOICES = ("auto", "onednn", "onednn+sparse", "blas")
SPARSE_LANES = 64  # the sparse first layer's outputs must be a multiple of this (its kernel's register block)
CPU_MATMUL_VARIABLE = "PLASTICITY_LAB_CPU_MATMUL"  # the default choice, inherited by a sweep's worker processes
_cpu_matmul: str | None = None  # None: the environment variable decides


@functools.cache
def onednn_available() -> bool:
    """Whether this PyTorch can run oneDNN's float32 linear on this machine (an x86 CPU with oneDNN built in)."""
    return (platform.machine().lower() in ("x86_64", "amd64") and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


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


def checked_cpu_matmul(kind: str, source: str) -> str:
    """``kind`` if it is a valid choice here, else one ``ValueError`` naming ``source`` and the valid choices."""
    if kind not in CPU_MATMUL_CHOICES:
        raise ValueError(f"unknown CPU matmul {kind!r} ({source}); valid: {', '.join(CPU_MATMUL_CHOICES)}")
    if kind in ("onednn", "onednn+sparse") and not onednn_available():
        raise ValueError(f"CPU matmul {kind!r} ({source}) needs an x86 CPU and a PyTorch built with oneDNN; "
                         "valid here: auto, blas")
    if kind == "onednn+sparse" and native.member_ops() is None:
        raise ValueError(f"CPU matmul 'onednn+sparse' ({source}) needs plasticity_lab.native, and here "
                         f"{native.unavailable_reason()}; valid here: auto, onednn, blas")
    return kind


def set_cpu_matmul(kind: str | None) -> None:
    """Choose the library for the float32 matrix products on the CPU, in this process.

    ``"onednn"``: oneDNN, batch-major, for every layer of at least :data:`ONEDNN_MIN_OUTPUTS` outputs (acting,
    evaluating and training), as one batched product over members where :func:`onednn_batched`, else one product
    per member, with the same numbers. The narrow heads of a training minibatch stay batched products.
    ``"onednn+sparse"``: the same, except for a first linear layer of a multiple of :data:`SPARSE_LANES` outputs
    whose weight is stored input-major (:func:`input_major`; a population on the CPU stores it so when it is
    created under this choice), which :mod:`plasticity_lab.native`'s kernels compute by skipping the zeros of the
    observation (about 300 of the gridworld's 363 inputs) and adding the inputs that every row of a member shares
    (its border walls) once. It needs :mod:`plasticity_lab.native`, and rounds differently from
    ``"onednn"``. ``"blas"``: one batched product (MKL in PyTorch's x86 builds), feature-major for training
    minibatches. ``"auto"``: on an AMD CPU where :func:`onednn_available`, ``"onednn+sparse"`` where
    :mod:`plasticity_lab.native` builds and its sparse kernels run their AVX-512 code (their portable loops are
    several times slower than oneDNN's dense product), else ``"onednn"`` where the native operators build or
    PyTorch runs one thread per process; BLAS otherwise.
    On Intel's CPUs MKL runs its AVX-512 code, which is what oneDNN gains elsewhere, so BLAS keeps its batched
    product there. Looping over members gives oneDNN little to share between threads, while BLAS shares the members
    out (measured on 2 threads, 15 members: an epoch takes 0.73 s with the loop, 0.66 s with BLAS); oneDNN's
    batched product and the sparse kernels share them out too. ``None`` returns to the default: the environment
    variable ``PLASTICITY_LAB_CPU_MATMUL`` (which a sweep's worker processes inherit), else ``"auto"``. The GPU
    path does not depend on it.
    """
    global _cpu_matmul
    _cpu_matmul = None if kind is None else checked_cpu_matmul(kind, "set_cpu_matmul")


def onednn_batched() -> bool:
    """Whether oneDNN's products run as one batched product over members here (:mod:`plasticity_lab.native`
    built), not one per member. Both give the same numbers."""
    return onednn_available() and native.member_ops() is not None


def cpu_matmul() -> str:
    """The library the CPU's products use now: ``"onednn"``, ``"onednn+sparse"`` or ``"blas"`` (see
    :func:`set_cpu_matmul`)."""
    kind = _cpu_matmul
    if kind is None:
        kind = checked_cpu_matmul(os.environ.get(CPU_MATMUL_VARIABLE, "auto"), CPU_MATMUL_VARIABLE)
    if kind == "auto":
        amd = "AMD" in cpu_vendor()
        if amd and onednn_available() and onednn_batched() and native.member_ops().sparse_kernels_vectorized():
            return "onednn+sparse"
        if amd and onednn_available() and (torch.get_num_threads() == 1 or onednn_batched()):
            return "onednn"
        return "blas"
    return kind


def _training_minibatch(rows: int) -> bool:
    return torch.is_grad_enabled() and rows >= FEATURE_MAJOR_FROM


def _uses_onednn(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and cpu_matmul() in ("onednn", "onednn+sparse")


def sparse_input_weight(template: nn.Module) -> str | None:
    """The name of the weight that ``"onednn+sparse"`` computes sparsely in ``template``: its first layer's, when
    that is a linear layer of a multiple of :data:`SPARSE_LANES` outputs; else ``None``."""
    first = template.encoder[0] if isinstance(template, ActorCritic) and len(template.encoder) else None
    if (isinstance(first, Block) and isinstance(first.layer, nn.Linear)
            and first.layer.out_features % SPARSE_LANES == 0):
        return "encoder.0.layer.weight"
    return None


def input_major(weight: torch.Tensor) -> torch.Tensor:
    """``weight [M, out, in]`` with the same values, stored input-major (a transposed view of a contiguous
    ``[M, in, out]``): the layout the sparse first layer of ``"onednn+sparse"`` reads and writes."""
    return weight.transpose(1, 2).contiguous().transpose(1, 2)


def is_input_major(weight: torch.Tensor) -> bool:
    """Whether ``weight [M, out, in]`` is stored input-major (see :func:`input_major`)."""
    return weight.dim() == 3 and weight.transpose(1, 2).is_contiguous()


def _uses_sparse_input(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad
            and weight.shape[1] % SPARSE_LANES == 0 and is_input_major(weight) and cpu_matmul() == "onednn+sparse")


def layout(rows: int, device: torch.device | str = "cpu") -> int:
    """The layout :func:`forward` uses for ``rows`` rows per member on ``device``: feature-major for a training
    minibatch (gradients enabled and at least :data:`FEATURE_MAJOR_FROM` rows) computed with batched products,
    batch-major otherwise. Without the backward pass the feature-major layout gains nothing, and at the 55 rows of
    an evaluation it is slower (measured: 7.8 ms against 6.1 ms per forward of 15 gridworld members on one thread).
    oneDNN's products (:func:`set_cpu_matmul`) are batch-major."""
    if not _training_minibatch(rows):
        return BATCH_MAJOR
    if torch.device(device).type == "cpu" and cpu_matmul() in ("onednn", "onednn+sparse"):
        return BATCH_MAJOR
    return FEATURE_MAJOR


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """oneDNN's float32 ``x W^T + b`` for one ``x [B, in]`` and ``W [out, in]`` (see :func:`onednn_available`)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """``x W^T + b`` per member through oneDNN: ``x [M, B, in]``, ``W [M, out, in]``, ``b [M, out]`` or ``None``.

    One batched product for all members where :func:`onednn_batched`, else one product per member; each member's
    result is the same either way."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ops = native.member_ops()
        if ops is not None:
            return ops.member_linear(x, weight, bias)
        return torch.stack([onednn_linear(x[m], weight[m], None if bias is None else bias[m])
                            for m in range(weight.shape[0])])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        members = range(weight.shape[0])
        need_x, need_weight, need_bias = ctx.needs_input_grad
        ops = native.member_ops()
        grad_x = grad_weight = None
        if ops is not None:  # oneDNN reads grad^T as a transposed view, without a copy
            if need_x:
                grad_x = ops.member_matmul(grad, weight)
            if need_weight:
                grad_weight = ops.member_matmul(grad.transpose(1, 2), x)
        else:
            # dx = grad W and dW = grad^T x, each as oneDNN's "input times transposed weight". oneDNN copies an
            # input that is not contiguous, so grad^T is made contiguous once for all members.
            if need_x:
                grad_x = torch.stack([onednn_linear(grad[m], weight[m].t()) for m in members])
            if need_weight:
                grad_t = grad.transpose(1, 2).contiguous()
                grad_weight = torch.stack([onednn_linear(grad_t[m], x[m].t()) for m in members])
        grad_bias = grad.sum(1) if need_bias else None
        return grad_x, grad_weight, grad_bias


class _SparseInputLinear(torch.autograd.Function):
    """``x W^T + b`` per member for an input ``x [M, B, in]`` that needs no gradient and is mostly zeros (the
    observation), ``W [M, out, in]`` stored input-major: :mod:`plasticity_lab.native`'s sparse kernels. The weight
    gradient comes out input-major too, so it accumulates into the weight without a copy."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x)
        return native.member_ops().sparse_input_linear(x, weight.transpose(1, 2), bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        _, need_weight, need_bias = ctx.needs_input_grad
        grad_weight = native.member_ops().sparse_input_weight_grad(x, grad).transpose(1, 2) if need_weight else None
        grad_bias = grad.sum(1) if need_bias else None
        return None, grad_weight, grad_bias


def _per_feature(t: torch.Tensor, features_axis: int) -> torch.Tensor:
    """A ``[M, F]`` parameter shaped to broadcast against activations of the given layout."""
    return t.unsqueeze(-1) if features_axis == FEATURE_MAJOR else t.unsqueeze(1)


class _NarrowLinear(torch.autograd.Function):
    """``x W^T + b`` per member for a layer of a few outputs (a head), batch-major, by batched products.

    The same as ``baddbmm`` with autograd, except for the weight gradient: autograd would compute it as
    ``x^T grad`` (``[in, B] @ [B, out]``, a product with a handful of columns, slow in MKL) and transpose it; this
    computes ``grad^T x`` (``[out, B] @ [B, in]``) directly.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        if bias is None:
            return torch.bmm(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = torch.bmm(grad, weight) if need_x else None
        grad_weight = torch.bmm(grad.transpose(1, 2), x) if need_weight else None
        grad_bias = grad.sum(1) if need_bias else None
        return grad_x, grad_weight, grad_bias


def linear(params: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, features_axis: int,
           first: bool = False) -> torch.Tensor:
    """``W x + b`` per member: ``[M, in, B] -> [M, out, B]`` (feature-major) or ``[M, B, in] -> [M, B, out]``.
    ``first``: the network's first layer, whose input is the observation."""
    weight = params[f"{prefix}weight"]
    bias = params.get(f"{prefix}bias")
    if first and features_axis == BATCH_MAJOR and _uses_sparse_input(x, weight):
        if not torch.is_grad_enabled():
            return native.member_ops().sparse_input_linear(x, weight.transpose(1, 2), bias)
        return _SparseInputLinear.apply(x, weight, bias)
    if features_axis == BATCH_MAJOR and _uses_onednn(x):
        if weight.shape[1] >= ONEDNN_MIN_OUTPUTS:
            ops = native.member_ops()
            if ops is not None and not torch.is_grad_enabled():  # acting and evaluating: no graph to record
                return ops.member_linear(x, weight, bias)
            return _OneDNNLinear.apply(x, weight, bias)
        if _training_minibatch(x.shape[1]):
            return _NarrowLinear.apply(x, weight, bias)
    if features_axis == FEATURE_MAJOR:
        a, b = weight, x
    else:
        a, b = x, weight.transpose(1, 2)
    if bias is None:
        return torch.bmm(a, b)
    return torch.baddbmm(_per_feature(bias, features_axis), a, b)


def _layer_norm(module: nn.LayerNorm, params, prefix: str, x: torch.Tensor, features_axis: int) -> torch.Tensor:
    mean = x.mean(features_axis, keepdim=True)
    var = x.var(features_axis, unbiased=False, keepdim=True)
    y = (x - mean) * torch.rsqrt(var + module.eps)
    if module.elementwise_affine:
        y = y * _per_feature(params[f"{prefix}weight"], features_axis)
        if f"{prefix}bias" in params:
            y = y + _per_feature(params[f"{prefix}bias"], features_axis)
    return y


def apply(module: nn.Module, params: dict[str, torch.Tensor], prefix: str, x: torch.Tensor,
          features_axis: int, first: bool = False) -> torch.Tensor:
    """One module of the template on activations whose ``features_axis`` (1 or 2) holds the features; ``first``:
    the network's first module, applied to the observation."""
    if isinstance(module, Block):
        x = apply(module.layer, params, f"{prefix}layer.", x, features_axis, first)
        x = apply(module.norm, params, f"{prefix}norm.", x, features_axis)
        return apply(module.activation, params, f"{prefix}activation.", x, features_axis)
    if isinstance(module, nn.Linear):
        return linear(params, prefix, x, features_axis, first)
    if isinstance(module, nn.LayerNorm):
        return _layer_norm(module, params, prefix, x, features_axis)
    if isinstance(module, nn.ReLU):
        return torch.relu(x)
    if isinstance(module, CReLU):
        return torch.cat([torch.relu(x), torch.relu(-x)], dim=features_axis)
    if isinstance(module, nn.Identity):
        return x
    if hasattr(module, "stacked_forward"):
        return module.stacked_forward(params, prefix, x, features_axis)
    raise TypeError(f"no stacked evaluation for module {type(module).__name__}")


def forward(template: ActorCritic, params: dict[str, torch.Tensor], obs: torch.Tensor, return_hidden: bool = False):
    """``template.forward`` for every member: ``obs [M, B, obs_dim] -> (logits [M, B, A], value [M, B],
    features [M, B, H][, hidden])``, each member with its own slice of ``params`` (``[M, *shape]`` each).

    In the feature-major layout (see :func:`layout`) ``features`` and ``hidden`` are transposed views of the
    activations.
    """
    axis = layout(obs.shape[1], obs.device)

    def batch_major(t: torch.Tensor) -> torch.Tensor:
        return t.transpose(1, 2) if axis == FEATURE_MAJOR else t

    x = batch_major(obs)
    hidden = []
    for index, module in enumerate(template.encoder):
        x = apply(module, params, f"encoder.{index}.", x, axis, first=index == 0)
        if isinstance(module, Block):
            hidden.append(batch_major(x))
    logits = batch_major(apply(template.policy_head, params, "policy_head.", x, axis))
    value = batch_major(apply(template.value_head, params, "value_head.", x, axis))[..., 0]
    features = batch_major(x)
    if return_hidden:
        return logits, value, features, hidden
    return logits, value, features
