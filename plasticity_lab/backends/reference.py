"""The reference backend: plain PyTorch, for any network and any device.

Every member's network is the template module called with its own slice of the stacked parameters, batched over
members by ``torch.func.vmap``; the optimizer steps as PyTorch's AdamW does. It is the backend every faster one must
equal (up to float rounding), and the one that runs the networks the batched backend does not know on a GPU (the
CNN; on the CPU the member loop computes it faster).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call, vmap

from . import cpu_kernels


class ReferenceBackend:
    """``vmap(functional_call)`` over the members; parameters kept as built; ``optimizer.step()``."""

    name = "reference"

    def supports(self, template: nn.Module) -> bool:
        return True

    def prepare(self, template: nn.Module, params: dict[str, torch.Tensor], frozen=frozenset()
                ) -> dict[str, torch.Tensor]:
        return params

    def forward(self, template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                obs: torch.Tensor, return_hidden: bool = False):
        def one(p, b, x):
            return functional_call(template, (p, b), (x,), {"return_hidden": return_hidden})

        return vmap(one)(params, buffers, obs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, per_member: bool = False) -> None:
        if per_member:  # each member's slice on its own (see cpu_kernels.fused_adamw_step; any device)
            cpu_kernels.fused_adamw_step(optimizer, per_member=True)
        else:
            optimizer.step()
