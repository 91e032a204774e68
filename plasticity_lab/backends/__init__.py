"""How a population's numbers are computed: the backends, behind one small interface.

A backend answers three questions for :class:`~plasticity_lab.population.Population`, and nothing outside this
package imports a backend's internals:

* ``prepare(template, params, frozen)``: the layout the parameters are stored in;
* ``forward(template, params, buffers, obs, return_hidden)``: every member's network on its own observations;
* ``optimizer_step(optimizer)``: one AdamW step over the stacked parameters.

Two backends exist:

* ``"reference"`` (:mod:`~plasticity_lab.backends.reference`): plain PyTorch, ``vmap(functional_call)``; any network,
  any device. Every other backend must equal it.
* ``"batched"`` (:mod:`~plasticity_lab.backends.batched`): one batched matrix product per layer for the MLPs of
  :mod:`plasticity_lab.nets`, on any device; on the CPU its products may go to oneDNN and its first layer to our
  sparse kernels (:mod:`~plasticity_lab.backends.cpu_kernels`), but only along a path that
  :mod:`~plasticity_lab.backends.fastpath` has proved on the machine at hand (see :func:`cpu_matmul`).

:func:`backend_for` picks ``"batched"`` where it supports the network, else ``"reference"``;
``PLASTICITY_LAB_BACKEND=reference`` forces the reference (to check a result against plain PyTorch). Manifests
record the backend and the CPU path with the reason for it.
"""

from __future__ import annotations

import os

from torch import nn

from .batched import BatchedBackend
from .fastpath import CHOICES as CPU_MATMUL_CHOICES
from .fastpath import VARIABLE as CPU_MATMUL_VARIABLE
from .fastpath import cpu_info, cpu_matmul, cpu_matmul_reason, set_cpu_matmul
from .native import sparse_kernels_isa
from .reference import ReferenceBackend

BACKENDS = {"batched": BatchedBackend(), "reference": ReferenceBackend()}
#: ``batched`` where it supports the network (the default), or ``reference`` everywhere.
BACKEND_VARIABLE = "PLASTICITY_LAB_BACKEND"
BACKEND_CHOICES = ("auto", *BACKENDS)


def backend_for(template: nn.Module, choice: str | None = None):
    """The backend that computes ``template``'s population: ``choice`` (``"auto"``, ``"batched"``, ``"reference"``;
    default: ``$PLASTICITY_LAB_BACKEND`` or ``"auto"``). ``"auto"`` is ``"batched"`` where it supports the network,
    else ``"reference"``; ``"batched"`` for a network it does not support is an error."""
    if choice is None:
        choice = os.environ.get(BACKEND_VARIABLE) or "auto"
    if choice not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {choice!r}; valid: {', '.join(BACKEND_CHOICES)}")
    batched = BACKENDS["batched"]
    if choice == "auto":
        return batched if batched.supports(template) else BACKENDS["reference"]
    if choice == "batched" and not batched.supports(template):
        raise ValueError(f"backend 'batched' cannot compute a {type(template).__name__} of these modules; "
                         "valid here: auto, reference")
    return BACKENDS[choice]


__all__ = [
    "BACKENDS",
    "BACKEND_CHOICES",
    "BACKEND_VARIABLE",
    "CPU_MATMUL_CHOICES",
    "CPU_MATMUL_VARIABLE",
    "backend_for",
    "cpu_info",
    "cpu_matmul",
    "cpu_matmul_reason",
    "set_cpu_matmul",
    "sparse_kernels_isa",
]
