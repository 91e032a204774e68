"""The study's conditions (interventions), as small objects that plug into the training loop.

A condition acts only through these hooks, each called by the run loop on the :class:`~plasticity_lab.ppo.Population`:

=============================  ==================================================================================
hook                           when
=============================  ==================================================================================
``network_options()``          at construction: architecture switches (``layernorm``, ``crelu``)
``setup(population)``          once, after the population is built (e.g. set a weight decay)
``extra_loss(population)``     in every minibatch: a per-member term ``[M]`` added to the PPO loss
``after_optimizer_step(...)``   after every AdamW step
``at_shift(...)``              at every round boundary, after the distribution changes and before AdamW is re-created
``after_epoch(...)``           after every epoch's update (may return diagnostics to log instead of the update's)
=============================  ==================================================================================

The conditions of PROTOCOL §4:

====================  ====================================================================  ==================
name                  rule                                                                   coefficients
====================  ====================================================================  ==================
warm_start            nothing (AdamW is still re-created at each shift)                      —
reset_all             at a shift every parameter ← fresh init                                —
reset_final           at a shift the policy and value heads ← fresh init                    —
shrink_perturb        at a shift θ ← shrink·θ + perturb·θ_fresh                             perturb=0.5
soft_shrink_perturb   after every optimizer step θ ← shrink·θ + perturb·θ_fresh             perturb=1e-6
l2                    decoupled weight decay in AdamW                                        coef=1e-3
regen_l2              loss += coef·‖θ − θ₀‖₂ (not squared)                                   coef=1e-2
regen_w2              loss += coef·‖sort(θ) − sort(θ₀)‖₂, sorted within each tensor          coef=1e-2
layernorm             LayerNorm (GroupNorm after convolutions) before each activation        —
crelu                 activation cat(relu(x), relu(−x)), half-width pre-activations          —
injection             at a shift each head h → h + a − b (a fresh, b a frozen copy of a)    —
redo                  every ``period`` epochs re-initialise dormant units (score ≤ τ)        tau=0.025, period=10
====================  ====================================================================  ==================

"Fresh init" is always :meth:`Population.fresh_params <plasticity_lab.ppo.Population.fresh_params>`: a newly drawn
PyTorch default initialisation of the current architecture, for every member, drawn anew at each use (LayerNorm and
GroupNorm: gain 1, bias 0).

**Coefficients** are dataclass fields with PROTOCOL's defaults. Each numeric coefficient is either one number or a
sequence of one number per population member, so that a population can sweep a coefficient (e.g.
``condition_params={"perturb": [1e-6, 1e-5, 1e-4]}`` with three seeds). A bad value raises one ``ValueError`` that
names it and the valid range; a sequence whose length is not the number of members fails in ``setup``.

**Composition.** Conditions compose with ``+``: ``parse_condition("soft_shrink_perturb+layernorm")`` runs both
sets of hooks, in the order given — except at a shift, where architecture-changing actions (``injection``) run after
the others, so that e.g. ``injection+reset_final`` first re-draws the heads and then injects on top of them.
The optimizer is re-created at every shift in every condition, warm-start included — that is the run loop's job,
not a condition's.

Every condition is written against modules — :class:`~plasticity_lab.nets.Block` (``.layer``, ``.norm``,
``.activation``), ``nn.Linear``, ``nn.Conv2d``, the network's ``heads()`` — so the same code serves the MLP and the
CNN encoder.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar, Union

import torch
from torch import nn

from .metrics import SCORES, dormant_scores
from .nets import CReLU, fresh_parameters

#: A coefficient: one number for every member, or one number per member.
Coefficient = Union[float, Sequence[float]]


class Condition:
    """Base class: every hook does nothing."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Inside a combination, at-shift actions run in increasing ``shift_order`` (stable): 0 for actions on the
    #: parameters, 1 for actions that change the architecture (plasticity injection).
    shift_order: ClassVar[int] = 0

    def network_options(self) -> dict:
        return {}

    def setup(self, population) -> None:
        pass

    def extra_loss(self, population) -> torch.Tensor | None:
        return None

    def after_optimizer_step(self, population, generator: torch.Generator) -> None:
        pass

    def at_shift(self, population, generator: torch.Generator) -> None:
        pass

    def after_epoch(self, population, epoch: int, generator: torch.Generator) -> dict[str, torch.Tensor] | None:
        """Act after the epoch's update. May return diagnostics (``[M]`` tensors by name) that the run loop logs
        for this epoch instead of the update's own (ReDo's ``log_weights="after"``); None leaves them."""
        return None

    def parameters(self) -> dict:
        """The condition's coefficients, by name (empty for conditions without any)."""
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}


# ---------------------------------------------------------------------------------------------------------------
# Coefficients: validation and per-member broadcasting
# ---------------------------------------------------------------------------------------------------------------


def _is_number(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _range_text(lo: float, hi: float, integer: bool) -> str:
    if integer:
        return "a positive integer" if lo == 1 and hi == math.inf else f"an integer in [{lo:g}, {hi:g}]"
    return f"a number in [{lo:g}, {'inf)' if hi == math.inf else f'{hi:g}]'}"


def check_coefficient(condition: str, name: str, value, lo: float = 0.0, hi: float = math.inf,
                      integer: bool = False, allow_none: bool = False):
    """Validate a coefficient: a number in ``[lo, hi]`` or a non-empty sequence of such numbers (one per member).

    Returns it normalised (a ``float``/``int``, or a tuple of them); raises one ``ValueError`` naming the value
    and the valid range.
    """
    if value is None and allow_none:
        return None

    def ok(x) -> bool:
        if not _is_number(x) or not math.isfinite(float(x)) or not lo <= float(x) <= hi:
            return False
        return not integer or float(x) == int(x)

    def norm(x):
        return int(x) if integer else float(x)

    if _is_number(value) and ok(value):
        return norm(value)
    if not _is_number(value) and not isinstance(value, (str, bytes, dict)) and value is not None:
        try:
            items = list(value.tolist() if hasattr(value, "tolist") else value)
        except TypeError:
            items = None
        if items and all(ok(x) for x in items):
            return tuple(norm(x) for x in items)
    extra = " or None" if allow_none else ""
    raise ValueError(f"{condition}: {name} must be {_range_text(lo, hi, integer)}{extra}, or a list of one such "
                     f"value per population member; got {value!r}")


def check_option(condition: str, name: str, value, valid: Sequence):
    """Validate a named option: one of ``valid`` (strings, or ``True``/``False``), or a non-empty sequence of them
    (one per member). Returns it normalised (the value, or a tuple of values); raises one ``ValueError`` naming the
    value and the valid ones."""

    def ok(x) -> bool:
        # True == 1 in Python: compare types too, so that 1 is not taken for true nor "1" for anything
        return any(type(x) is type(v) and x == v for v in valid)

    if ok(value):
        return value
    if not isinstance(value, (str, bytes, dict, bool)) and value is not None:
        try:
            items = list(value)
        except TypeError:
            items = None
        if items and all(ok(x) for x in items):
            return tuple(items)
    shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in valid)
    raise ValueError(f"{condition}: {name} must be one of {shown}, or a list of one such value per population "
                     f"member; got {value!r}")


def per_member_option(value, population, condition: str, name: str) -> list:
    """An option (one value, or one per member) as a list of ``population.members`` values."""
    members = population.members
    if isinstance(value, tuple):
        if len(value) != members:
            raise ValueError(f"{condition}: {name} has {len(value)} values {list(value)!r} but the population has "
                             f"{members} member(s); give one value, or exactly one per member")
        return list(value)
    return [value] * members


def per_member(value, population, condition: str = "", name: str = "coefficient") -> torch.Tensor:
    """Broadcast a coefficient (a number, or one number per member) to a float tensor ``[M]`` on the
    population's device; a sequence must have exactly ``population.members`` entries."""
    members = population.members
    if isinstance(value, (tuple, list)):
        if len(value) != members:
            raise ValueError(f"{condition}: {name} has {len(value)} values {list(value)!r} but the population has "
                             f"{members} member(s); give one number, or exactly one per member")
        return torch.tensor([float(v) for v in value], dtype=torch.float32, device=population.device)
    return torch.full((members,), float(value), dtype=torch.float32, device=population.device)


def _member_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[M]`` → ``[M, 1, 1, ...]`` to broadcast against a stacked parameter ``like [M, ...]``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _head_names(population) -> list[str]:
    return list(population.template.heads())


# ---------------------------------------------------------------------------------------------------------------
# Resets at a shift
# ---------------------------------------------------------------------------------------------------------------


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
        _reset(population, generator, prefixes=tuple(f"{h}." for h in _head_names(population)))


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
        p.mul_(_member_view(shrink, p)).addcmul_(fresh[name], _member_view(perturb, p))


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
    each of the 51 minibatch steps of an epoch, so it draws one stacked fresh tensor per parameter and updates in
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
        _shrink_and_perturb(population, generator, *self._coefficients(population))


# ---------------------------------------------------------------------------------------------------------------
# Regularisers
# ---------------------------------------------------------------------------------------------------------------


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


def effective_params(population) -> dict[str, torch.Tensor]:
    """The population's parameters as the original architecture would hold them (differentiably).

    Plasticity injection turns a head ``X`` into ``X.base``, ``X.added`` and ``X.subtracted``; its effective layer is
    ``X.base + (X.added − X.subtracted)``, under the original names ``X.weight`` / ``X.bias``. Everything else is
    returned as is. The regenerative regularisers compare these with ``population.initial_params``.
    """
    params = dict(population.params)
    for head_name, head in population.template.heads().items():
        if isinstance(head, InjectedHead):
            for p_name, _ in head.base.named_parameters():
                base = params.pop(f"{head_name}.base.{p_name}")
                added = params.pop(f"{head_name}.added.{p_name}")
                subtracted = params.pop(f"{head_name}.subtracted.{p_name}")
                params[f"{head_name}.{p_name}"] = base + (added - subtracted)
    return params


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


# ---------------------------------------------------------------------------------------------------------------
# Architecture
# ---------------------------------------------------------------------------------------------------------------


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


class InjectedHead(nn.Module):
    """A head after plasticity injection: ``base(x) + (added(x) − subtracted(x))``.

    ``added`` is trained; ``subtracted`` is a frozen copy of ``added``'s initial value, so at the moment of
    injection the difference is exactly zero and the output is ``base(x)``. Lives here, not in ``nets``: the
    network knows nothing of the conditions that edit it.
    """

    def __init__(self, base: nn.Module, added: nn.Module, subtracted: nn.Module):
        super().__init__()
        self.base = base
        self.added = added
        self.subtracted = subtracted

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.added(x) - self.subtracted(x))

    def signed_terms(self) -> tuple[tuple[str, float], ...]:
        """The output as a signed sum of child modules: how a batched backend evaluates this head for a whole
        population without knowing the condition behind it."""
        return (("base", 1.0), ("added", 1.0), ("subtracted", -1.0))


@torch.no_grad()
def fold_injections(population) -> bool:
    """Fold every injected head back into one linear layer, ``W = W_base + (W_added − W_subtracted)`` (same for
    the bias), restoring the original architecture. Returns whether anything was folded.

    The output is unchanged up to float rounding. Call ``population.new_optimizer()`` afterwards (the run loop
    does so after every shift).
    """
    heads = population.template.heads()
    if not any(isinstance(h, InjectedHead) for h in heads.values()):
        return False
    module = copy.deepcopy(population.template)
    for head_name, head in heads.items():
        if isinstance(head, InjectedHead):
            setattr(module, head_name, copy.deepcopy(head.base))
    params = effective_params(population)
    population.set_network(module, {k: params[k] for k, _ in module.named_parameters()})
    return True


def injected_heads(population) -> list[str]:
    """Names of the heads that currently hold an injection (what a checkpoint needs to rebuild the network)."""
    return [name for name, head in population.template.heads().items() if isinstance(head, InjectedHead)]


def restore_network(population, heads: list[str], params: dict[str, torch.Tensor], frozen=()) -> None:
    """Install stored parameters into ``population``, first rebuilding the injected ``heads`` around the
    original architecture (the inverse of :func:`injected_heads` + the parameters)."""
    module = copy.deepcopy(population.template)
    current = module.heads()
    for head_name in heads:
        head = current.get(head_name)
        if not isinstance(head, nn.Linear):
            raise ValueError(f"cannot restore an injection into head {head_name!r}; heads: {', '.join(current)}")
        setattr(module, head_name, InjectedHead(head, copy.deepcopy(head), copy.deepcopy(head)))
    names = [k for k, _ in module.named_parameters()]
    if sorted(names) != sorted(params):
        raise ValueError(f"stored parameters {sorted(set(params) ^ set(names))} do not match the network")
    population.set_network(module, {k: params[k] for k in names}, frozen=frozen)


@dataclass
class Injection(Condition):
    """Plasticity injection, as the study runs it (PROTOCOL §4): at each shift each head ``h`` (policy and value)
    becomes ``h(x) + a(x) − b(x)``, where ``a`` is a fresh layer of the head's shape and ``b`` a frozen copy of
    ``a``, so the output is unchanged at the moment of injection (exactly: ``a(x) − b(x)`` is computed first and is
    0). ``h`` and ``a`` train; ``b`` never does.

    At later shifts the previous sum is first folded back into one linear layer (``W = W_h + W_a − W_b``, likewise
    the bias; output unchanged to float rounding) and then injected again, so there is only ever one injected level
    and the parameter count stays at (network + two head copies). Unlike Nikishin et al. (2023) the original head is
    **not** frozen. The run loop re-creates AdamW right after the shift, so the new parameters get an optimizer.

    Other conditions see the injected network as it is: soft shrink+perturb also shrinks ``b`` (the effective head
    is shrunk as a whole); L2 decays ``h`` and ``a`` but not the frozen ``b``; ReDo zeroes outgoing columns in
    ``h``, ``a`` and ``b`` alike; the regenerative losses compare the effective head ``h + a − b`` with the head's
    θ₀. At a shift, parameter resets (reset_all, reset_final, shrink_perturb) fold first and act on the plain
    network; inside a combination injection then runs after them.
    """

    name: ClassVar[str] = "injection"
    description: ClassVar[str] = ("At each shift, each head h → h + a − b (a fresh, b a frozen copy of a); "
                                  "the previous injection is folded back first.")
    shift_order: ClassVar[int] = 1

    @torch.no_grad()
    def at_shift(self, population, generator):
        fold_injections(population)
        module = copy.deepcopy(population.template)
        params = dict(population.params)
        frozen = set()
        generators = [generator] * population.members
        for head_name, head in module.heads().items():
            if not isinstance(head, nn.Linear):
                raise TypeError(f"injection needs linear heads; {head_name} is {type(head).__name__}")
            added, subtracted = copy.deepcopy(head), copy.deepcopy(head)
            setattr(module, head_name, InjectedHead(head, added, subtracted))
            fresh = fresh_parameters(added, generators)
            for p_name, value in fresh.items():
                params[f"{head_name}.base.{p_name}"] = params.pop(f"{head_name}.{p_name}")
                params[f"{head_name}.added.{p_name}"] = value.to(population.device)
                params[f"{head_name}.subtracted.{p_name}"] = value.to(population.device)
                frozen.add(f"{head_name}.subtracted.{p_name}")
        population.set_network(module, {k: params[k] for k, _ in module.named_parameters()}, frozen=frozen)


# ---------------------------------------------------------------------------------------------------------------
# ReDo
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ReDo(Condition):
    """ReDo — recycling dormant neurons (Sokar et al., 2023), as PROTOCOL §4 specifies it, with the authors'
    release's variant of each step available as a named option.

    Every ``period`` epochs, after that epoch's update, on the observations of the last minibatch, each encoder
    layer's units are scored on their activations ``a`` (the output of each :class:`~plasticity_lab.nets.Block`)::

        score_i = mean_batch(a_i) / mean_units(mean_batch(a))          (metrics.dormant_scores, score="project")

    (for a convolution a unit is a channel, and spatial positions count as batch). A unit with ``score ≤ tau`` is
    dormant: its incoming weights (its row of the block's ``layer`` weight, or its output channel of a convolution)
    are re-drawn from a fresh initialisation while its **bias is kept**, and its outgoing weights are set to 0 in
    every consumer — the next block's layer input columns (input channels of a convolution; after the last
    convolution, the 16 columns ``c·16 … c·16+15`` of channel ``c`` in the Linear after the flatten), or, after the
    last block, the input columns of both heads. All scores are computed before anything changes; all incoming
    weights are re-drawn before the outgoing ones are zeroed, so a recycled unit's outgoing weights are 0 even into
    a unit of the next layer that was recycled too. A norm layer's gain and bias are left alone.

    Options — each default is this project's choice; the other value is what the authors' release
    (github.com/awjuliani/deep-rl-plasticity) does, read from its ``shared/modules.py`` (``redo_reset``,
    ``calculate_s_scores_multilayer``, ``reinitialize_weights``) and ``algos/ppo/trainer.py`` (``update_model``,
    ``train``):

    * ``score``: ``"project"`` (default) is the ReDo paper's ratio of batch means above; ``"release"`` is the
      release's batch mean of the per-sample ratio ``a_i(x) / mean_units a(x)``. Under ``"release"`` a sample whose
      whole layer is 0 makes the score 0/0 = NaN for every unit of that layer, and then **no unit of that layer is
      recycled** in that member at that step (``NaN ≤ tau`` is false); see
      :func:`~plasticity_lab.metrics.dormant_scores`.
    * ``timing``: ``"project"`` (default) acts after the update of epochs ``period − 1, 2·period − 1, …``
      (0-based epochs counted over the whole run; when ``period`` divides the round length, the last epoch of
      every round is among them); ``"release"`` acts after epochs ``period, 2·period, …`` (the release's
      ``epoch % redo_freq == 0 and epoch > 0``; then the first epoch of every round but the first is among them,
      right after the shift's first update).
    * ``reset_optimizer_state``: ``True`` (default) zeroes AdamW's moment estimates (``exp_avg``, ``exp_avg_sq``)
      of every touched weight, as the ReDo paper does; ``False`` leaves them, as the release does (AdamW is
      re-created at each shift anyway).
    * ``log_weights``: ``"before"`` (default) logs the epoch's weight magnitude and weight difference as the update
      left them, before ReDo recycles; ``"after"`` logs them after it (the weight difference then includes the
      recycling), as the release does, which measures both after ``update_model`` returns with ReDo done. Only
      these two diagnostics move: the others are measured during the update in both.
    * ``outgoing``: ``"all"`` (default) is the documented method; ``"policy_only"`` reproduces the release, which
      zeroes the last layer's outgoing weights only toward the policy head, not the value head.

    ReDo as released is therefore ``condition_params={"score": "release", "timing": "release",
    "reset_optimizer_state": False, "log_weights": "after", "outgoing": "policy_only"}``. (The release's ReDo also
    finds no ReLU to score behind a LayerNorm and none in its CReLU, so there it never acts; here it does.)

    * CReLU: a pre-activation unit ``i`` feeds outputs ``i`` and ``i + W``; one of them is non-zero whenever its
      input is, so the unit counts as dormant only when **both** outputs score ``≤ tau``; its outgoing columns are
      those of both outputs.
    * ``tau`` = 0.025 (PROTOCOL §4; the paper tuned it per environment) and ``period`` = 10 may each be one value per
      member, and so may ``score``, ``timing``, ``reset_optimizer_state`` and ``log_weights`` (a sweep over them
      trains as one population); members that do not act at a given epoch are left untouched. ``outgoing`` is one
      value for the whole population.
    """

    name: ClassVar[str] = "redo"
    description: ClassVar[str] = ("Every `period` epochs, re-initialise dormant units (score ≤ tau): fresh incoming "
                                  "weights, bias kept, zero outgoing weights.")
    tau: Coefficient = 0.025
    period: Union[int, Sequence[int]] = 10
    outgoing: str = "all"
    reset_optimizer_state: Union[bool, Sequence[bool]] = True
    score: Union[str, Sequence[str]] = "project"
    timing: Union[str, Sequence[str]] = "project"
    log_weights: Union[str, Sequence[str]] = "before"

    OUTGOING: ClassVar[tuple[str, ...]] = ("all", "policy_only")
    SCORES: ClassVar[tuple[str, ...]] = SCORES
    TIMINGS: ClassVar[tuple[str, ...]] = ("project", "release")
    LOG_WEIGHTS: ClassVar[tuple[str, ...]] = ("before", "after")

    def __post_init__(self):
        self.tau = check_coefficient(self.name, "tau", self.tau, 0.0, 1.0)
        self.period = check_coefficient(self.name, "period", self.period, 1, math.inf, integer=True)
        if self.outgoing not in self.OUTGOING:
            raise ValueError(f"{self.name}: outgoing must be one of {', '.join(self.OUTGOING)}; got {self.outgoing!r}")
        self.reset_optimizer_state = check_option(self.name, "reset_optimizer_state", self.reset_optimizer_state,
                                                  (True, False))
        self.score = check_option(self.name, "score", self.score, self.SCORES)
        self.timing = check_option(self.name, "timing", self.timing, self.TIMINGS)
        self.log_weights = check_option(self.name, "log_weights", self.log_weights, self.LOG_WEIGHTS)

    def setup(self, population):
        per_member(self.tau, population, self.name, "tau")
        per_member(self.period, population, self.name, "period")
        for name in ("reset_optimizer_state", "score", "timing"):
            per_member_option(getattr(self, name), population, self.name, name)
        logged = per_member_option(self.log_weights, population, self.name, "log_weights")
        # "after" needs the parameters as they were before the update (weight difference): the population keeps them.
        population.keep_update_start = population.keep_update_start or "after" in logged

    def _acting(self, population, epoch: int) -> torch.Tensor:
        periods = per_member_option(self.period, population, self.name, "period")
        timings = per_member_option(self.timing, population, self.name, "timing")
        acting = [(epoch + 1) % p == 0 if t == "project" else epoch > 0 and epoch % p == 0
                  for p, t in zip(periods, timings)]
        return torch.tensor(acting, device=population.device)

    def after_epoch(self, population, epoch, generator):
        """Recycle in the members whose epoch it is. With ``log_weights="after"`` returns the weight magnitude and
        weight difference measured after recycling (``[M]`` each, for the run loop to log instead of the update's);
        otherwise None."""
        acting = self._acting(population, epoch)
        if not bool(acting.any()):
            return None
        logged = per_member_option(self.log_weights, population, self.name, "log_weights")
        after = torch.tensor([v == "after" for v in logged], device=population.device)
        before = population.weight_statistics() if bool(after.any()) and not bool(after.all()) else None
        self.recycle(population, generator, acting)
        if not bool(after.any()):
            return None
        now = population.weight_statistics()
        if before is None:
            return now
        return {k: torch.where(after, now[k], before[k]) for k in now}

    def consumers(self, population) -> list[tuple[str, nn.Module, list[str]]]:
        """For each encoder block: (name of its ``layer``, the block, names of the modules that read its output)."""
        template = population.template
        names = {id(m): n for n, m in template.named_modules()}
        blocks = template.blocks()
        out = []
        for k, block in enumerate(blocks):
            if k + 1 < len(blocks):
                readers = [names[id(blocks[k + 1].layer)]]
            else:
                heads = template.heads()
                if self.outgoing == "policy_only":
                    heads = {"policy_head": heads["policy_head"]}
                readers = [names[id(m)] for h in heads.values() for m in h.modules()
                           if isinstance(m, (nn.Linear, nn.Conv2d))]
            out.append((names[id(block.layer)], block, readers))
        return out

    def _scores(self, population, a: torch.Tensor) -> torch.Tensor:
        kinds = per_member_option(self.score, population, self.name, "score")
        if len(set(kinds)) == 1:
            return dormant_scores(a, kinds[0])
        release = torch.tensor([k == "release" for k in kinds], device=a.device)
        return torch.where(release[:, None], dormant_scores(a, "release"), dormant_scores(a, "project"))

    @torch.no_grad()
    def recycle(self, population, generator, acting: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Score every unit on ``population.last_minibatch_obs`` and recycle the dormant ones of the members in
        ``acting`` (all by default). Returns each block's recycled pre-activation units, ``[M, W]`` masks."""
        obs = getattr(population, "last_minibatch_obs", None)
        if obs is None:
            raise RuntimeError("redo scores units on the last minibatch of an update; call population.update first")
        members = population.members
        if acting is None:
            acting = torch.ones(members, dtype=torch.bool, device=population.device)
        tau = per_member(self.tau, population, self.name, "tau")
        hidden = population.forward(obs, return_hidden=True)[3]
        layers = self.consumers(population)
        if len(hidden) != len(layers):
            raise RuntimeError(f"redo: the network returned {len(hidden)} hidden layers for {len(layers)} blocks")

        plans = []
        for (layer_name, block, readers), a in zip(layers, hidden):
            dormant = self._scores(population, a) <= tau[:, None]  # [M, outputs]; a NaN score is never dormant
            if isinstance(block.activation, CReLU):
                width = dormant.shape[1] // 2
                units = dormant[:, :width] & dormant[:, width:]
                outputs = torch.cat([units, units], dim=1)
            else:
                units, outputs = dormant, dormant
            units = units & acting[:, None]
            outputs = outputs & acting[:, None]
            spatial = a[0, 0, 0].numel() if a.dim() == 5 else 1
            plans.append((layer_name, readers, units, outputs, spatial))

        if not any(bool(units.any()) for _, _, units, _, _ in plans):
            return [units for _, _, units, _, _ in plans]
        fresh = population.fresh_params(generator)
        params = population.params
        # 1. fresh incoming weights (bias kept)
        for layer_name, _, units, _, _ in plans:
            key = f"{layer_name}.weight"
            w = params[key]
            if units.shape[1] != w.shape[1]:
                raise RuntimeError(f"redo: {units.shape[1]} units scored for {key} of shape {tuple(w.shape[1:])}")
            mask = units.view(*units.shape, *([1] * (w.dim() - 2)))
            w.copy_(torch.where(mask, fresh[key], w))
            self._reset_moments(population, w, mask)
        # 2. zero outgoing weights in every consumer
        for _, readers, _, outputs, spatial in plans:
            for reader in readers:
                w = params[f"{reader}.weight"]
                fan_in = w.shape[2]
                if fan_in == outputs.shape[1]:
                    columns = outputs
                elif fan_in == outputs.shape[1] * spatial:  # Linear after Flatten of [C, H, W]: channel-major
                    columns = outputs.repeat_interleave(spatial, dim=1)
                else:
                    raise RuntimeError(f"redo: cannot match {outputs.shape[1]} outputs to the {fan_in} inputs "
                                       f"of {reader}")
                mask = columns.view(members, 1, fan_in, *([1] * (w.dim() - 3)))
                w.masked_fill_(mask, 0.0)
                self._reset_moments(population, w, mask)
        return [units for _, _, units, _, _ in plans]

    def _reset_moments(self, population, param: torch.Tensor, mask: torch.Tensor) -> None:
        resets = per_member_option(self.reset_optimizer_state, population, self.name, "reset_optimizer_state")
        if not any(resets):
            return
        if not all(resets):
            chosen = torch.tensor(resets, device=mask.device).view(-1, *([1] * (mask.dim() - 1)))
            mask = mask & chosen
        state = population.optimizer.state.get(param, {})
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in state:
                state[key].masked_fill_(mask, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Combinations and the registry
# ---------------------------------------------------------------------------------------------------------------


class Composite(Condition):
    """Several conditions applied together, in the order given (at a shift, in increasing ``shift_order``)."""

    def __init__(self, parts: list[Condition]):
        self.parts = parts
        self.name = "+".join(p.name for p in parts)  # type: ignore[misc]

    def network_options(self):
        options: dict = {}
        for part in self.parts:
            options.update(part.network_options())
        return options

    def setup(self, population):
        for part in self.parts:
            part.setup(population)

    def extra_loss(self, population):
        terms = [t for t in (part.extra_loss(population) for part in self.parts) if t is not None]
        return sum(terms) if terms else None

    def after_optimizer_step(self, population, generator):
        for part in self.parts:
            part.after_optimizer_step(population, generator)

    def at_shift(self, population, generator):
        for part in sorted(self.parts, key=lambda p: p.shift_order):
            part.at_shift(population, generator)

    def after_epoch(self, population, epoch, generator):
        revised: dict = {}
        for part in self.parts:
            revised.update(part.after_epoch(population, epoch, generator) or {})
        return revised or None

    def parameters(self):
        return {f"{part.name}.{k}": v for part in self.parts for k, v in part.parameters().items()}


CONDITIONS: dict[str, type[Condition]] = {c.name: c for c in (
    WarmStart, ResetAll, ResetFinal, ShrinkPerturb, SoftShrinkPerturb, L2, RegenL2, RegenW2, LayerNorm,
    CReLUActivation, Injection, ReDo)}


def condition_names(spec: str) -> list[str]:
    """Split ``"a+b"`` into its parts and check each is a known condition."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"condition must be a non-empty string like 'warm_start' or 'a+b'; got {spec!r}")
    parts = [p.strip() for p in spec.split("+")]
    for part in parts:
        if part not in CONDITIONS:
            raise ValueError(f"unknown condition {part!r}; valid: {', '.join(CONDITIONS)} (combine with '+')")
    if len(set(parts)) != len(parts):
        raise ValueError(f"condition {spec!r} names a part twice")
    return parts


def _coefficient_names(cls) -> list[str]:
    return [f.name for f in fields(cls)] if hasattr(cls, "__dataclass_fields__") else []


def parse_condition(spec: str, params: dict | None = None) -> Condition:
    """Build the condition named by ``spec`` (``"a"`` or ``"a+b"``) with coefficient overrides ``params``.

    ``params`` maps a coefficient name (or ``"part.name"`` for a combination) to its value, e.g.
    ``{"perturb": 1e-5}`` or ``{"soft_shrink_perturb.perturb": 1e-5}``. An unknown name is an error that lists the
    valid ones; a bare name that two parts share (``l2+regen_l2`` both have ``coef``) must be qualified; a bad value
    is an error that names it and its valid range.
    """
    parts = condition_names(spec)
    params = dict(params or {})
    valid = {part: _coefficient_names(CONDITIONS[part]) for part in parts}
    for key in params:
        owner, _, coeff = str(key).rpartition(".")
        if owner == "":
            owners = [p for p in parts if coeff in valid[p]]
            if len(owners) > 1:
                raise ValueError(f"parameter {key!r} is ambiguous in {spec!r} (it belongs to "
                                 f"{' and '.join(owners)}); write e.g. '{owners[0]}.{coeff}'")
    built = []
    for part in parts:
        kwargs = {}
        for key in list(params):
            owner, _, coeff = str(key).rpartition(".")
            if owner in ("", part) and coeff in valid[part]:
                kwargs[coeff] = params.pop(key)
        built.append(CONDITIONS[part](**kwargs))
    if params:
        names = sorted({f"{p}.{n}" if len(parts) > 1 else n for p in parts for n in valid[p]})
        raise ValueError(f"unknown parameter(s) {sorted(params)} for condition {spec!r}; "
                         f"valid: {', '.join(names) or 'none'}")
    return built[0] if len(built) == 1 else Composite(built)
