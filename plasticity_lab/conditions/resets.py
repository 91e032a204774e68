"""Conditions that act on the parameters: warm-start (which does nothing), the resets and shrink+perturb at a
shift, and soft shrink+perturb after every optimizer step.

The at-shift actions fold any plasticity injection first (:func:`~plasticity_lab.conditions.fold_injections`), so
they act on the plain network; soft shrink+perturb acts on the injected network as it is, frozen copy included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Coefficient, Condition, check_coefficient, head_names, member_view, per_member
from .injection import fold_injections


@dataclass
class WarmStart(Condition):
    """Warm-start: the baseline. The same network keeps training across shifts; nothing is re-initialised.

    As in every condition, AdamW is created anew at each shift (PROTOCOL §1), so its moment estimates do not
    carry over — the paper's warm-start re-creates the optimizer too.
    """

    name: ClassVar[str] = "warm_start"
    description: ClassVar[str] = "Keep training the same network across shifts (only AdamW is re-created)."


@dataclass
class ResetAll(Condition):
    """Reset-all: at each shift every parameter is replaced by a fresh PyTorch default initialisation.

    The upper reference of the study (a network that has never trained on anything, PROTOCOL §4): the t-tests of
    §6 compare every condition with it. Combined with plasticity injection it first folds any injected heads back
    into plain layers, so the result is a fresh network of the original architecture.
    """

    name: ClassVar[str] = "reset_all"
    description: ClassVar[str] = "At each shift, re-draw every parameter from a fresh PyTorch default initialisation."

    def at_shift(self, population, generator):
        _reset(population, generator)


@dataclass
class ResetFinal(Condition):
    """Reset-final: at each shift only the output layers — the policy head and the value head — are replaced by a
    fresh PyTorch default initialisation; the encoder keeps its weights (PROTOCOL §4).

    The heads are the network's ``heads()`` (``policy_head.*`` and ``value_head.*``). With plasticity injection the
    injected heads are folded back into plain layers first, so each head is one freshly drawn layer.
    """

    name: ClassVar[str] = "reset_final"
    description: ClassVar[str] = "At each shift, re-draw only the policy and value output layers."

    def at_shift(self, population, generator):
        _reset(population, generator, prefixes=tuple(f"{h}." for h in head_names(population)))


@torch.no_grad()
def _reset(population, generator, prefixes: tuple[str, ...] = ("",)) -> None:
    """Fold any injected heads, then replace the parameters whose names start with one of ``prefixes`` (all of
    them by default) with a fresh PyTorch default initialisation."""
    fold_injections(population)
    fresh = population.fresh_params(generator)
    for name, p in population.params.items():
        if name.startswith(prefixes):
            p.copy_(fresh[name])


def _shrink_perturb_coefficients(condition, population) -> tuple[torch.Tensor, torch.Tensor]:
    """(shrink, perturb) as tensors ``[M]``; ``shrink=None`` means α = 1 − β, per member."""
    perturb = per_member(condition.perturb, population, condition.name, "perturb")
    if condition.shrink is None:
        return 1.0 - perturb, perturb
    return per_member(condition.shrink, population, condition.name, "shrink"), perturb


@torch.no_grad()
def _shrink_and_perturb(population, generator, shrink: torch.Tensor, perturb: torch.Tensor) -> None:
    """θ ← shrink·θ + perturb·θ_fresh for every parameter (frozen ones included), per member."""
    fresh = population.fresh_params(generator)
    for name, p in population.params.items():
        p.mul_(member_view(shrink, p)).addcmul_(fresh[name], member_view(perturb, p))


@dataclass
class ShrinkPerturb(Condition):
    """Shrink+perturb (Ash & Adams, 2020): at each shift every parameter becomes
    ``θ ← shrink·θ + perturb·θ_fresh``, with θ_fresh a newly drawn fresh initialisation.

    PROTOCOL §4: β (``perturb``) = 0.5 and α (``shrink``) = 1 − β. That α = 1 − β is the paper's default, not a
    law: ``shrink`` can be set independently (``shrink=None`` means 1 − perturb). ``perturb=1`` (hence
    ``shrink=0``) is exactly reset-all. The paper tuned β per environment on the permute shift (its Table 1);
    treat 0.5 as a default for sweeps. Both coefficients may be one number per population member.
    """

    name: ClassVar[str] = "shrink_perturb"
    description: ClassVar[str] = "At each shift, θ ← shrink·θ + perturb·θ_fresh (shrink = 1 − perturb by default)."
    perturb: Coefficient = 0.5
    shrink: Coefficient | None = None

    def __post_init__(self):
        self.perturb = check_coefficient(self.name, "perturb", self.perturb, 0.0, 1.0)
        self.shrink = check_coefficient(self.name, "shrink", self.shrink, 0.0, 1.0, allow_none=True)

    def setup(self, population):
        self._coefficients(population)

    def _coefficients(self, population) -> tuple[torch.Tensor, torch.Tensor]:
        return _shrink_perturb_coefficients(self, population)

    def at_shift(self, population, generator):
        fold_injections(population)
        _shrink_and_perturb(population, generator, *self._coefficients(population))


@dataclass
class SoftShrinkPerturb(Condition):
    """Soft shrink+perturb (the paper's proposal): after **every** optimizer step,
    ``θ ← shrink·θ + perturb·θ_fresh`` with a new θ_fresh drawn each time; the optimizer state is left untouched.

    PROTOCOL §4: β (``perturb``) = 1e-6 — the one tuned coefficient the paper states for certain — and
    α (``shrink``) = 1 − β by default (``shrink=None``); both are settable independently. It acts on every
    parameter, LayerNorm/GroupNorm gains and biases included (their fresh values are 1 and 0, so they are shrunk
    towards them), which is the paper's best condition together with LayerNorm (``soft_shrink_perturb+layernorm``).
    With plasticity injection it also acts on the frozen subtracted copy, so the effective head ``h + a − b`` is
    shrunk as a whole.

    Without gradients a parameter contracts in expectation as αⁿ after n steps (θ_fresh has mean 0). It runs after
    each of a member's own optimizer steps (members with fewer transitions take fewer, ``population.stepping``) —
    the gridworld's 51 minibatch steps of an epoch, so it draws one stacked fresh tensor per parameter and updates in
    place.
    """

    name: ClassVar[str] = "soft_shrink_perturb"
    description: ClassVar[str] = ("After every optimizer step, θ ← shrink·θ + perturb·θ_fresh "
                                  "(a new fresh draw each step; optimizer state untouched).")
    perturb: Coefficient = 1e-6
    shrink: Coefficient | None = None

    def __post_init__(self):
        self.perturb = check_coefficient(self.name, "perturb", self.perturb, 0.0, 1.0)
        self.shrink = check_coefficient(self.name, "shrink", self.shrink, 0.0, 1.0, allow_none=True)
        self._cache = None

    def setup(self, population):
        self._cache = None
        self._coefficients(population)

    def _coefficients(self, population) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cache is None or self._cache[0] is not population:
            self._cache = (population, *_shrink_perturb_coefficients(self, population))
        return self._cache[1], self._cache[2]

    def after_optimizer_step(self, population, generator):
        shrink, perturb = self._coefficients(population)
        stepping = population.stepping
        if stepping is not None:  # a member that took no step this time (it had no minibatch left) stays as it is
            shrink = torch.where(stepping, shrink, torch.ones_like(shrink))
            perturb = torch.where(stepping, perturb, torch.zeros_like(perturb))
        _shrink_and_perturb(population, generator, shrink, perturb)
