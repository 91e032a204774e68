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
or ``CReLU``), linear heads, and any module that declares its output a signed sum of known children with ``signed_terms()`` (the
injected head of plasticity injection does). :func:`supports` says whether a template qualifies; the population falls
back to ``vmap`` for anything else (the CNN). Results equal ``vmap(functional_call)`` up to float rounding.

On the CPU the products can go to oneDNN, one member at a time, and the first layer to
:mod:`plasticity_lab.native`'s kernels, which skip the observation's zeros (about 58 of the gridworld's 363
inputs are non-zero, 40 of them the border walls that every row shares): :mod:`plasticity_lab.fastpath` decides
which, and proves a fast path on the machine at hand before it is used. All are float32 throughout; they round
differently, so a run repeats bit for bit only with the same path on the same machine.
"""

from __future__ import annotations

import torch
from torch import nn

from . import fastpath, native
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
    if hasattr(module, "signed_terms"):
        return all(_known(getattr(module, name)) for name, _ in module.signed_terms())
    return isinstance(module, (nn.Linear, nn.ReLU, CReLU, nn.Identity))


FEATURE_MAJOR, BATCH_MAJOR = 1, 2  # the axis of the activations that holds the features
FEATURE_MAJOR_FROM = 32  # rows per member from which the feature-major layout is the faster one (measured)
ONEDNN_MIN_OUTPUTS = 8  # narrower layers (the heads) stay one batched product: a loop over members costs more

SPARSE_LANES = 64  # the sparse first layer's outputs must be a multiple of this (its kernel's register block)

# The choice of path lives in fastpath; these names stay here, where the layers that use them are.
CPU_MATMUL_CHOICES = fastpath.CHOICES
CPU_MATMUL_VARIABLE = fastpath.VARIABLE
cpu_matmul = fastpath.cpu_matmul
cpu_matmul_reason = fastpath.cpu_matmul_reason
set_cpu_matmul = fastpath.set_cpu_matmul
checked_cpu_matmul = fastpath.checked_cpu_matmul
onednn_available = fastpath.onednn_available


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
    """``x W^T + b`` per member through oneDNN, one product per member: ``x [M, B, in]``, ``W [M, out, in]``,
    ``b [M, out]`` or ``None``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _onednn_members(x, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        members = range(weight.shape[0])
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_x = grad_weight = None
        # dx = grad W and dW = grad^T x, each as oneDNN's "input times transposed weight". oneDNN copies an input
        # that is not contiguous, so grad^T is made contiguous once for all members.
        if need_x:
            grad_x = torch.stack([onednn_linear(grad[m], weight[m].t()) for m in members])
        if need_weight:
            grad_t = grad.transpose(1, 2).contiguous()
            grad_weight = torch.stack([onednn_linear(grad_t[m], x[m].t()) for m in members])
        grad_bias = grad.sum(1) if need_bias else None
        return grad_x, grad_weight, grad_bias


def _onednn_members(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.stack([onednn_linear(x[m], weight[m], None if bias is None else bias[m])
                        for m in range(weight.shape[0])])


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
            if not torch.is_grad_enabled():  # acting and evaluating: no graph to record
                return _onednn_members(x, weight, bias)
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
    if hasattr(module, "signed_terms"):  # e.g. an injected head: base + (added − subtracted)
        return _signed_sum(module, params, prefix, x, features_axis)
    raise TypeError(f"no stacked evaluation for module {type(module).__name__}")


def _signed_sum(module: nn.Module, params, prefix: str, x: torch.Tensor, features_axis: int) -> torch.Tensor:
    """``first + (second ± third ± …)`` over ``module.signed_terms()`` (the first term positive): the order in which
    the module's own forward adds them, so that both round alike."""
    (first, _), *rest = module.signed_terms()
    out = apply(getattr(module, first), params, f"{prefix}{first}.", x, features_axis)
    tail = None
    for name, sign in rest:
        term = apply(getattr(module, name), params, f"{prefix}{name}.", x, features_axis)
        tail = (term if sign > 0 else -term) if tail is None else (tail + term if sign > 0 else tail - term)
    return out if tail is None else out + tail


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
