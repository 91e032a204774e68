"""Plasticity injection: the injected head, folding it back, rebuilding it from a checkpoint, and the condition.

The effective parameters of an injected network (:func:`effective_params`) live here, next to the head whose
sum they compute: folding an injection installs them (the resets fold before they act) and the regenerative
regularisers compare them with θ₀, so the resets and the regularisers both depend on this module and it on neither.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..nets import fresh_parameters
from ..streams import MemberStreams
from .base import Condition


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


def effective_params(population) -> dict[str, torch.Tensor]:
    """The population's parameters as the original architecture would hold them (differentiably).

    Plasticity injection turns a head ``X`` into ``X.base``, ``X.added`` and ``X.subtracted``; its effective layer is
    ``X.base + (X.added − X.subtracted)``, under the original names ``X.weight`` / ``X.bias``. Everything else is
    returned as is. The regenerative regularisers compare these with ``population.initial_params``; folding an
    injection (:func:`fold_injections`) installs them.
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
        generators = generator if isinstance(generator, MemberStreams) else [generator] * population.members
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
