"""The member-loop backend: every member's network called on its own observations, one member after another.

The reference backend's ``vmap`` turns a convolution over stacked members into one grouped convolution, which a CPU
computes more slowly than the members' own convolutions one after another (the README's "Speed" section has the
measurements). On a GPU the opposite holds (one launch per member and layer), so :func:`plasticity_lab.backends.backend_for` takes this backend for convolutional networks on the CPU
only. It is plain PyTorch (``functional_call`` per member), so it runs wherever PyTorch does and equals the
reference up to float rounding (``tests/test_backends.py``).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from .reference import ReferenceBackend


class MemberLoopBackend(ReferenceBackend):
    """The reference backend with another forward: ``functional_call`` once per member on its slice of the stacked
    parameters (layout and optimizer step as the reference's)."""

    name = "member_loop"

    def forward(self, template: nn.Module, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                obs: torch.Tensor, return_hidden: bool = False):
        # unbind, not indexing: its backward stacks the members' gradients once, instead of one full-size zero
        # tensor per member
        own = {k: v.unbind(0) for k, v in params.items()}
        own_buffers = {k: v.unbind(0) for k, v in buffers.items()}
        outputs = [functional_call(template, ({k: v[m] for k, v in own.items()},
                                              {k: v[m] for k, v in own_buffers.items()}),
                                   (obs[m],), {"return_hidden": return_hidden})
                   for m in range(obs.shape[0])]
        logits, value, features = (torch.stack(parts) for parts in zip(*(o[:3] for o in outputs)))
        if not return_hidden:
            return logits, value, features
        hidden = [torch.stack(layer) for layer in zip(*(o[3] for o in outputs))]
        return logits, value, features, hidden
