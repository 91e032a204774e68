"""The batched backend: the actor-critic evaluated for a whole population at once, one batched matrix product per
layer, on any device.

``torch.func.vmap`` over ``functional_call`` runs any network on stacked parameters, but for the small MLP of the
gridworld its batching rules cost as much as the arithmetic: every linear layer is rewritten with transposes
that the backward pass then copies. This module evaluates the same network with one batched matrix product per
layer and nothing else. For training minibatches it uses a *feature-major* layout: a layer's activations are
``[M, units, B]``, so that ``W [M, out, in] @ h [M, in, B]`` uses the stored weights as they are and the weight
gradient ``dh [M, out, B] @ h [M, B, in]`` comes out in the weights' own layout, with no copy in either
direction. For a few rows at a time (acting in the environment copies) the usual batch-major ``[M, B, units]``
is faster: a matrix product with so few columns is slow in the feature-major order.

It knows the modules of :mod:`plasticity_lab.nets` (``Block`` with ``Linear``, ``LayerNorm`` or no norm, ``ReLU``
or ``CReLU``), linear heads, and any module that declares its output a signed sum of known children with
``signed_terms()`` (the injected head of plasticity injection does). :func:`supports` says whether a template
qualifies; anything else (the CNN) goes to the reference backend. Results equal the reference's
``vmap(functional_call)`` up to float rounding.

On the CPU the products can go to oneDNN, one member at a time, and the first layer to the native kernels, which
skip the observation's zeros (about 58 of the gridworld's 363 inputs are non-zero, 40 of them the border walls that
every row shares): :mod:`~plasticity_lab.backends.fastpath` decides which, and proves a fast path on the machine at
hand before it is used; :mod:`~plasticity_lab.backends.cpu_kernels` holds those kernels. All are float32 throughout; they round
differently, so a run repeats bit for bit only with the same path on the same machine.
"""

from __future__ import annotations

import torch
from torch import nn

from ..nets import ActorCritic, Block, CReLU
from . import cpu_kernels, fastpath


def supports(template: nn.Module) -> bool:
    """Whether :func:`forward` can evaluate ``template`` (an MLP actor-critic of known modules)."""
    if not isinstance(template, ActorCritic) or any(True for _ in template.buffers()):
        return False
    if template.spec.value_outputs != 1:  # forward returns one value per row
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


def compiling() -> bool:
    """Whether ``torch.compile`` is tracing this call (:mod:`plasticity_lab.graphs`): the CPU fast path's kernels
    are eager-only (oneDNN's per-member products and our native operators cannot enter a graph), so a traced call
    takes the plain batched products, which the compiler then fuses with their neighbours."""
    return torch.compiler.is_compiling()


def _training_minibatch(rows: int) -> bool:
    return torch.is_grad_enabled() and rows >= FEATURE_MAJOR_FROM


def layout(rows: int, device: torch.device | str = "cpu") -> int:
    """The layout :func:`forward` uses for ``rows`` rows per member on ``device``: feature-major for a training
    minibatch (gradients enabled and at least :data:`FEATURE_MAJOR_FROM` rows) computed with batched products,
    batch-major otherwise. Without the backward pass the feature-major layout gains nothing, and at the 55 rows of
    an evaluation it is slower (measured on 15 gridworld members, one thread).
    oneDNN's products are batch-major."""
    if not _training_minibatch(rows):
        return BATCH_MAJOR
    if compiling():  # a compiled graph computes plain products, which train fastest feature-major
        return FEATURE_MAJOR
    if torch.device(device).type == "cpu" and fastpath.cpu_matmul() in ("onednn", "onednn+sparse"):
        return BATCH_MAJOR
    return FEATURE_MAJOR


def _per_feature(t: torch.Tensor, features_axis: int) -> torch.Tensor:
    """A ``[M, F]`` parameter shaped to broadcast against activations of the given layout."""
    return t.unsqueeze(-1) if features_axis == FEATURE_MAJOR else t.unsqueeze(1)


def linear(params: dict[str, torch.Tensor], prefix: str, x: torch.Tensor, features_axis: int,
           first: bool = False) -> torch.Tensor:
    """``W x + b`` per member: ``[M, in, B] -> [M, out, B]`` (feature-major) or ``[M, B, in] -> [M, B, out]``.
    ``first``: the network's first layer, whose input is the observation."""
    weight = params[f"{prefix}weight"]
    bias = params.get(f"{prefix}bias")
    if features_axis == BATCH_MAJOR and x.device.type == "cpu" and not compiling():
        fast = cpu_kernels.linear(x, weight, bias, first, _training_minibatch(x.shape[1]))
        if fast is not None:
            return fast
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


class BatchedBackend:
    """One batched product per layer (:func:`forward`), the CPU fast path's kernels where they were proved, and the
    parameter layout and optimizer step those kernels need."""

    name = "batched"

    def supports(self, template: nn.Module) -> bool:
        return supports(template)

    def prepare(self, template: nn.Module, params: dict[str, torch.Tensor], frozen=frozenset()
                ) -> dict[str, torch.Tensor]:
        return cpu_kernels.prepare(template, params, frozen)

    def forward(self, template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                obs: torch.Tensor, return_hidden: bool = False):
        return forward(template, params, obs, return_hidden)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, per_member: bool = False) -> None:
        cpu_kernels.fused_adamw_step(optimizer, per_member)
