"""Regularisers: decoupled weight decay (L2) and the regenerative pulls towards the initial parameters (L2 and
Wasserstein-2). The regenerative losses compare the *effective* parameters (:func:`effective_params`, from
:mod:`plasticity_lab.conditions.injection`) with θ₀, so an injected head is seen as the layer it stands for."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Coefficient, Condition, check_coefficient, per_member
from .injection import effective_params

__all__ = ["L2", "RegenL2", "RegenW2", "effective_params"]


@dataclass
class L2(Condition):
    """L2: decoupled weight decay in AdamW (Loshchilov & Hutter), ``θ ← θ·(1 − lr·coef)`` before each Adam step.

    PROTOCOL §4 and §2: weight decay is 0 in every other condition and ``coef`` = 1e-3 here (the paper tuned it per
    environment; treat it as a default for sweeps). The population applies it per member
    (``Population.weight_decay``), so ``coef`` may be one number per member. Frozen parameters (plasticity
    injection's subtracted copy) are not decayed.
    """

    name: ClassVar[str] = "l2"
    description: ClassVar[str] = "Decoupled weight decay (AdamW) with coefficient coef."
    coef: Coefficient = 1e-3

    def __post_init__(self):
        self.coef = check_coefficient(self.name, "coef", self.coef, 0.0)

    def setup(self, population):
        decay = per_member(self.coef, population, self.name, "coef")
        if bool((decay * population.ppo.lr > 1).any()):
            raise ValueError(f"{self.name}: coef must be at most 1/lr = {1 / population.ppo.lr:g} (the decay factor "
                             f"1 − lr·coef would be negative); got {self.coef!r}")
        population.weight_decay = decay


def _zero_safe_norm(squares: torch.Tensor) -> torch.Tensor:
    """``sqrt(squares)`` whose gradient is 0 (not NaN) where ``squares`` is 0."""
    positive = squares > 0
    return torch.where(positive, torch.where(positive, squares, torch.ones_like(squares)).sqrt(),
                       torch.zeros_like(squares))


def _effective_checked(population, condition: str) -> dict[str, torch.Tensor]:
    """:func:`effective_params`, checked to have exactly the names of ``population.initial_params``."""
    current = effective_params(population)
    initial = population.initial_params
    if set(current) != set(initial):
        raise ValueError(f"{condition}: the network's parameters {sorted(set(current) ^ set(initial))} have no "
                         f"initial value θ₀ (the architecture changed in a way {condition} does not know)")
    return current


@dataclass
class _Regenerative(Condition):
    """A pull towards the initial parameters: ``loss += coef·‖view(θ) − view(θ₀)‖₂`` per member, one Euclidean
    norm (not squared) over all of the member's tensors, zero-safe at θ = θ₀. ``view`` flattens each tensor per
    member; subclasses choose what else it does."""

    coef: Coefficient = 1e-2

    def __post_init__(self):
        self.coef = check_coefficient(self.name, "coef", self.coef, 0.0)
        self._cache = None

    @staticmethod
    def _view(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], -1)

    def setup(self, population):
        self._cache = None
        self._state(population)

    def _state(self, population):
        """Per-member coefficients and the viewed θ₀, computed once per population."""
        if self._cache is None or self._cache[0] is not population:
            targets = {k: self._view(v.detach()) for k, v in population.initial_params.items()}
            self._cache = (population, per_member(self.coef, population, self.name, "coef"), targets)
        return self._cache[1], self._cache[2]

    def extra_loss(self, population):
        coef, targets = self._state(population)
        current = _effective_checked(population, self.name)
        squares = sum((self._view(current[k]) - target).pow(2).sum(1) for k, target in targets.items())
        return coef * _zero_safe_norm(squares)


@dataclass
class RegenL2(_Regenerative):
    """Regenerative L2 (Kumar et al., 2023): ``loss += coef·‖θ − θ₀‖₂`` per member, the Euclidean norm over **all**
    of a member's parameters at once — the norm, not its square (PROTOCOL §4) — with θ₀ =
    ``population.initial_params``, the member's own initial parameters.

    Its gradient is ``coef·(θ − θ₀)/‖θ − θ₀‖`` — a pull of constant size towards θ₀; at θ = θ₀ (the first step) the
    gradient is taken as 0, not NaN. ``coef`` = 1e-2 by PROTOCOL; the paper's gridworld analysis may have used
    1e-4 — set ``coef`` (or sweep it, one value per member).

    With plasticity injection the head's effective layer ``base + added − subtracted`` is compared with the head's
    θ₀ (see :func:`effective_params`), so the regulariser sees the same function-level parameters before and after
    an injection; its gradient reaches ``base`` and ``added`` alike (``subtracted`` is frozen).
    """

    name: ClassVar[str] = "regen_l2"
    description: ClassVar[str] = "Loss += coef·‖θ − θ₀‖₂ (norm, not squared) towards the initial parameters."


@dataclass
class RegenW2(_Regenerative):
    """Regenerative Wasserstein-2 (Lewandowski et al., 2024), the study's extra regulariser:
    ``loss += coef·‖sort(θ) − sort(θ₀)‖₂`` per member, where each parameter tensor is flattened and sorted on its
    own (within each tensor, per member), and one Euclidean norm (not squared) is taken over all tensors.

    It pulls each tensor's *distribution* of values towards that of its initialisation, not each weight towards its
    own initial value, so it is invariant to permuting the values within a tensor. Zero-safe at θ = θ₀ like
    :class:`RegenL2`; with injection it acts on the effective heads the same way. ``coef`` = 1e-2 (PROTOCOL §4).
    """

    name: ClassVar[str] = "regen_w2"
    description: ClassVar[str] = "Loss += coef·‖sort(θ) − sort(θ₀)‖₂, sorting within each tensor (Wasserstein-2)."

    @staticmethod
    def _view(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], -1).sort(dim=1).values
