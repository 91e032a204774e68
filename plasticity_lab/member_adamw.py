"""AdamW over stacked parameters ``[M, ...]`` in which each member counts its own steps.

A population whose members collected different numbers of transitions (episodes that end: CoinRun) takes a different
number of minibatch steps per member in an epoch. A member without a minibatch at some step must not move at all:
not its parameters, not its moment estimates, and not its step count, which sets Adam's bias correction and so the
size of every later step (AdamW is re-created at each shift, so the first steps of a round are the ones the
correction changes most). PyTorch's AdamW keeps one step count per tensor, shared by the members stacked in it;
this optimizer keeps one per member, and :meth:`MemberAdamW.step` takes the members that step.

With every member stepping it is the same update as ``torch.optim.AdamW`` (``weight_decay`` 0: the population applies
decoupled weight decay itself, per member), up to float rounding; ``tests/test_episodes_end.py`` checks both cases
against one ``torch.optim.AdamW`` per member.

(Every member stepping in a size-invariant population, the backends' ``optimizer_step(optimizer, per_member=True)``
steps each member's slice through PyTorch's fused kernel instead: see :mod:`plasticity_lab.backends`.)
"""

from __future__ import annotations

import torch


class MemberAdamW(torch.optim.Optimizer):
    """Adam's update (``weight_decay`` is left to the caller) on parameters whose first axis is the member.

    State per parameter: ``exp_avg`` and ``exp_avg_sq`` (PyTorch's names, which ReDo edits) and ``member_steps``
    ``[M]``, each member's step count.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        if not lr > 0 or not eps > 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"MemberAdamW needs lr > 0, eps > 0 and betas in [0, 1); got lr={lr!r}, eps={eps!r}, "
                             f"betas={betas!r}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, stepping: torch.Tensor | None = None, closure=None):
        """One step for the members in ``stepping`` (``[M]`` bool; ``None``: all of them). The others keep their
        parameters, moments and step counts exactly."""
        if closure is not None:
            raise ValueError("MemberAdamW takes no closure")
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                members = p.shape[0]
                if not state:
                    state["member_steps"] = torch.zeros(members, dtype=p.dtype, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                shape = (members, *([1] * (p.dim() - 1)))
                moves = (torch.ones(members, dtype=p.dtype, device=p.device) if stepping is None
                         else stepping.to(device=p.device, dtype=p.dtype))
                steps = state["member_steps"].add_(moves)
                grad = p.grad
                # m ← m + (1 − β1)(g − m) and v ← β2·v + (1 − β2)·g², for the stepping members only
                state["exp_avg"].lerp_(grad, ((1 - beta1) * moves).view(shape))
                weight = ((1 - beta2) * moves).view(shape)
                state["exp_avg_sq"].mul_(1 - weight).addcmul_(grad, grad * weight)
                # bias corrections per member; a member that has never stepped (count 0) does not move
                started = steps > 0
                correction1 = torch.where(started, 1 - beta1 ** steps, torch.ones_like(steps))
                correction2 = torch.where(started, 1 - beta2 ** steps, torch.ones_like(steps))
                step_size = (group["lr"] / correction1 * moves).view(shape)
                denom = (state["exp_avg_sq"].sqrt() / correction2.sqrt().view(shape)).add_(group["eps"])
                p.addcdiv_(state["exp_avg"] * step_size, denom, value=-1.0)
        return None
