"""How a population's numbers are computed: the backends, behind one small interface.

A backend answers three questions for :class:`~plasticity_lab.population.Population`, and nothing outside this
package imports a backend's internals:

* ``prepare(template, params, frozen)``: the layout the parameters are stored in;
* ``forward(template, params, buffers, obs, return_hidden)``: every member's network on its own observations;
* ``optimizer_step(optimizer, per_member=False)``: one AdamW step over the stacked parameters (``per_member``: each
  member's slice stepped as a tensor of its own, rounded alike whatever the number of members).

Three backends exist:

* ``"reference"`` (:mod:`~plasticity_lab.backends.reference`): plain PyTorch, ``vmap(functional_call)``; any network,
  any device. Every other backend must equal it.
* ``"member_loop"`` (:mod:`~plasticity_lab.backends.member_loop`): plain PyTorch, each member's network called on
  its own; any network, any device; faster than ``vmap`` for convolutional networks on the CPU.
* ``"batched"`` (:mod:`~plasticity_lab.backends.batched`): one batched matrix product per layer for the MLPs of
  :mod:`plasticity_lab.nets`, on any device; on the CPU its products may go to oneDNN and its first layer to our
  sparse kernels (:mod:`~plasticity_lab.backends.cpu_kernels`), but only along a path that
  :mod:`~plasticity_lab.backends.fastpath` has proved on the machine at hand (see :func:`cpu_matmul`).

:func:`backend_for` picks ``"batched"`` where it supports the network, else ``"member_loop"`` for a convolutional
network on the CPU, else ``"reference"``; ``PLASTICITY_LAB_BACKEND=reference`` forces the reference (to check a
result against plain PyTorch). Manifests record the backend and the CPU path with the reason for it.

Training flushes denormal floats to zero (:mod:`~plasticity_lab.backends.denormals`, ``denormals.flushed``), since
the CPU computes with them many times slower; manifests record that too.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from . import denormals
from .batched import BatchedBackend
from .fastpath import CHOICES as CPU_MATMUL_CHOICES
from .fastpath import VARIABLE as CPU_MATMUL_VARIABLE
from .fastpath import cpu_info, cpu_matmul, cpu_matmul_reason, set_cpu_matmul
from .member_loop import MemberLoopBackend
from .native import sparse_kernels_isa
from .reference import ReferenceBackend

BACKENDS = {"batched": BatchedBackend(), "member_loop": MemberLoopBackend(), "reference": ReferenceBackend()}
#: ``auto`` (the default: see :func:`backend_for`), or one backend everywhere.
BACKEND_VARIABLE = "PLASTICITY_LAB_BACKEND"
BACKEND_CHOICES = ("auto", *BACKENDS)


def backend_for(template: nn.Module, choice: str | None = None, device: str | torch.device = "cpu"):
    """The backend that computes ``template``'s population on ``device``: ``choice`` (``"auto"``, ``"batched"``,
    ``"member_loop"``, ``"reference"``; default: ``$PLASTICITY_LAB_BACKEND`` or ``"auto"``). ``"auto"`` is
    ``"batched"`` where it supports the network, else ``"member_loop"`` for a network with convolutions on the CPU,
    else ``"reference"``; ``"batched"`` for a network it does not support is an error."""
    if choice is None:
        choice = os.environ.get(BACKEND_VARIABLE) or "auto"
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {choice!r}; valid: {', '.join(BACKEND_CHOICES)}")
    batched = BACKENDS["batched"]
    if choice == "auto":
        if batched.supports(template):
            return batched
        convolutional = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) for m in template.modules())
        on_cpu = torch.device(device).type == "cpu"
        return BACKENDS["member_loop"] if convolutional and on_cpu else BACKENDS["reference"]
    if choice == "batched" and not batched.supports(template):
        raise ValueError(f"backend 'batched' cannot compute a {type(template).__name__} of these modules; "
                         "valid here: auto, member_loop, reference")
    return BACKENDS[choice]


__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "BACKEND_VARIABLE",
    "CPU_MATMUL_CHOICES",
    "CPU_MATMUL_VARIABLE",
    "backend_for",
    "denormals",
    "cpu_info",
    "cpu_matmul",
    "cpu_matmul_reason",
    "set_cpu_matmul",
    "sparse_kernels_isa",
]
