"""The CPU fast path's kernels: oneDNN's products one member at a time, the sparse first layer, and the layout and
optimizer step they need.

:mod:`plasticity_lab.backends.fastpath` decides whether any of this runs (only where a probe proved it on the
machine at hand); :mod:`plasticity_lab.backends.batched` calls :func:`linear` for each layer and uses this module's
answer where it gives one. The sparse first layer reads and writes its weight *input-major* (see
:func:`input_major`); every in-place edit of a parameter (``copy_``, ``mul_``, ``add_``) keeps a tensor's layout,
so the conditions that edit weights need not know of it, and :func:`fused_adamw_step` steps such weights without
copying them.
"""

from __future__ import annotations

import torch

from . import fastpath, native

ONEDNN_MIN_OUTPUTS = 8  # narrower layers (the heads) stay one batched product: a loop over members costs more
SPARSE_LANES = 64  # the sparse first layer's outputs must be a multiple of this (its kernel's register block)


def uses_onednn(x: torch.Tensor) -> bool:
    """Whether the products on activations ``x`` go to oneDNN (float32 on the CPU, with a oneDNN path chosen)."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and fastpath.cpu_matmul() in ("onednn", "onednn+sparse")


def sparse_input_weight(template) -> str | None:
    """The name of the weight that ``"onednn+sparse"`` computes sparsely in ``template``: its first layer's, when
    that is a linear layer of a multiple of :data:`SPARSE_LANES` outputs; else ``None``."""
    encoder = getattr(template, "encoder", None)
    first = encoder[0] if encoder is not None and len(encoder) else None
    if (isinstance(getattr(first, "layer", None), torch.nn.Linear)
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


def prepare(template, params: dict[str, torch.Tensor], frozen=frozenset()) -> dict[str, torch.Tensor]:
    """``params`` with the sparse first layer's weight stored input-major when ``"onednn+sparse"`` is the path:
    the layout its kernels read and write. Other paths keep the parameters as they are."""
    sparse = sparse_input_weight(template)
    if sparse not in params or fastpath.cpu_matmul() != "onednn+sparse" or params[sparse].device.type != "cpu":
        return params
    return {**params, sparse: input_major(params[sparse].detach()).requires_grad_(sparse not in frozen)}


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """oneDNN's float32 ``x W^T + b`` for one ``x [B, in]`` and ``W [out, in]`` (see :func:`~plasticity_lab.backends.fastpath.onednn_available`)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class OneDNNLinear(torch.autograd.Function):
    """``x W^T + b`` per member through oneDNN, one product per member: ``x [M, B, in]``, ``W [M, out, in]``,
    ``b [M, out]`` or ``None``."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return onednn_members(x, weight, bias)

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


def onednn_members(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.stack([onednn_linear(x[m], weight[m], None if bias is None else bias[m])
                        for m in range(weight.shape[0])])


class SparseInputLinear(torch.autograd.Function):
    """``x W^T + b`` per member for an input ``x [M, B, in]`` that needs no gradient and is mostly zeros (the
    observation), ``W [M, out, in]`` stored input-major: :mod:`plasticity_lab.backends.native`'s sparse kernels. The weight
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


class NarrowLinear(torch.autograd.Function):
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


def uses_sparse_input(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the first layer on observations ``x`` goes to the sparse kernels."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad
            and weight.shape[1] % SPARSE_LANES == 0 and is_input_major(weight)
            and fastpath.cpu_matmul() == "onednn+sparse")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, first: bool,
           training_minibatch: bool) -> torch.Tensor | None:
    """``x W^T + b`` per member, batch-major (``x [M, B, in]``), on the fast path where it applies; ``None`` where
    it does not (the caller then uses batched products). ``first``: the network's first layer, whose input is the
    observation; ``training_minibatch``: a minibatch whose backward pass will follow."""
    if first and uses_sparse_input(x, weight):
        if not torch.is_grad_enabled():
            return native.member_ops().sparse_input_linear(x, weight.transpose(1, 2), bias)
        return SparseInputLinear.apply(x, weight, bias)
    if uses_onednn(x):
        if weight.shape[1] >= ONEDNN_MIN_OUTPUTS:
            if not torch.is_grad_enabled():  # acting and evaluating: no graph to record
                return onednn_members(x, weight, bias)
            return OneDNNLinear.apply(x, weight, bias)
        if training_minibatch:
            return NarrowLinear.apply(x, weight, bias)
    return None


def fused_adamw_step(optimizer: torch.optim.Optimizer, per_member: bool = False) -> None:
    """``optimizer.step()``, except for parameters stored input-major (see :func:`input_major`): PyTorch's fused AdamW copies a tensor that is not contiguous
    into a contiguous one and back (parameter, gradient and both moments, every step). AdamW is element-wise,
    so the same fused kernel on their contiguous transposes computes the same update, without the copies.

    ``per_member=True`` (an AdamW over stacked ``[M, ...]`` parameters, ``fused=True``, one group, no amsgrad) passes
    every member's slice to the fused kernel as a tensor of its own: the same update, rounded the same for a member
    whatever the number of members (over the stacked tensor the kernel rounds an element differently in its vector
    loop and its scalar tail, and where a member's elements fall depends on the members before it)."""
    group = optimizer.param_groups[0]
    transposed = {id(p) for p in group["params"] if p.grad is not None and is_input_major(p)
                  and not p.is_contiguous()}
    plain = len(optimizer.param_groups) > 1 or group["amsgrad"] or group["maximize"] or not group["fused"]
    if per_member and plain:
        raise ValueError("a per-member AdamW step needs one group with fused=True, amsgrad and maximize off")
    if not per_member and (not transposed or not hasattr(torch, "_fused_adamw_") or plain):
        optimizer.step()
        return
    tensors: list[list[torch.Tensor]] = [[], [], [], [], []]  # params, grads, exp_avgs, exp_avg_sqs, steps
    steps = []  # each parameter's one step count (listed once per member in tensors[4])
    with torch.no_grad():
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if not state:  # as torch.optim.Adam initialises a fused group's state
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            four = [p, p.grad, state["exp_avg"], state["exp_avg_sq"]]
            if id(p) in transposed and all(t.stride() == p.stride() for t in four):
                four = [t.transpose(1, 2) for t in four]
            steps.append(state["step"])
            for part in zip(*(t.unbind(0) for t in four)) if per_member else [four]:
                for bucket, t in zip(tensors, [*part, state["step"]]):
                    bucket.append(t)
        beta1, beta2 = group["betas"]
        torch._foreach_add_(steps, 1)
        torch._fused_adamw_(*tensors[:4], [], tensors[4], amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1,
                            beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                            maximize=group["maximize"], grad_scale=None, found_inf=None)
