"""Conditions that change the architecture the network is built with: LayerNorm and CReLU. They act only through
``network_options()``; :class:`~plasticity_lab.nets.NetworkSpec` builds the layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Condition


@dataclass
class LayerNorm(Condition):
    """LayerNorm (PROTOCOL §4): MLP hidden layers become Linear → LayerNorm → ReLU; in the CNN a GroupNorm(1, C)
    follows each convolution and a LayerNorm the 256-unit dense layer; the heads get none. Gains start at 1,
    biases at 0. The network builds it (``NetworkSpec(layernorm=True)``); combine with ``+``, e.g. the paper's best
    condition ``soft_shrink_perturb+layernorm``.
    """

    name: ClassVar[str] = "layernorm"
    description: ClassVar[str] = "Normalise each hidden layer before its activation (LayerNorm; GroupNorm in convs)."

    def network_options(self):
        return {"layernorm": True}


@dataclass
class CReLUActivation(Condition):
    """CReLU (Abbas et al., 2023; PROTOCOL §4): the activation is ``cat(relu(x), relu(−x))``. The pre-activation
    layers are built at half width so every layer's output keeps its width (256, or the CNN's channel counts); the
    network builds it (``NetworkSpec(crelu=True)``).
    """

    name: ClassVar[str] = "crelu"
    description: ClassVar[str] = "Concatenated ReLU activations, cat(relu(x), relu(-x)), at half width."

    def network_options(self):
        return {"crelu": True}
