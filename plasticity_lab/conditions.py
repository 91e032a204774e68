"""The study's conditions (interventions), as small objects that plug into the training loop.

A condition acts only through these hooks, each called by the run loop on the :class:`~plasticity_lab.ppo.Population`:

===========================  ==================================================================================
hook                          when
===========================  ==================================================================================
``network_options()``         at construction: architecture switches (``layernorm``, ``crelu``)
``setup(population)``         once, after the population is built (e.g. set a weight decay)
``extra_loss(population)``    in every minibatch: a per-member term ``[M]`` added to the PPO loss
``after_optimizer_step(...)`` after every AdamW step
``at_shift(...)``             at every round boundary, after the distribution changes and before AdamW is re-created
``after_epoch(...)``          after every epoch's update
===========================  ==================================================================================

Conditions compose with ``+``: ``parse_condition("soft_shrink_perturb+layernorm")`` runs both sets of hooks.
The optimizer is re-created at every shift in every condition, warm-start included — that is the run loop's
job, not a condition's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch


class Condition:
    """Base class: every hook does nothing."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

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

    def after_epoch(self, population, epoch: int, generator: torch.Generator) -> None:
        pass

    def parameters(self) -> dict:
        """The condition's coefficients, by name (empty for conditions without any)."""
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}


@dataclass
class WarmStart(Condition):
    name: ClassVar[str] = "warm_start"
    description: ClassVar[str] = "Keep training the same network across shifts (only AdamW is re-created)."


@dataclass
class ResetAll(Condition):
    name: ClassVar[str] = "reset_all"
    description: ClassVar[str] = "At each shift, re-draw every parameter from a fresh PyTorch default initialisation."

    @torch.no_grad()
    def at_shift(self, population, generator):
        fresh = population.fresh_params(generator)
        for name, p in population.params.items():
            p.copy_(fresh[name])


class Composite(Condition):
    """Several conditions applied together, in the order given."""

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
        for part in self.parts:
            part.at_shift(population, generator)

    def after_epoch(self, population, epoch, generator):
        for part in self.parts:
            part.after_epoch(population, epoch, generator)

    def parameters(self):
        return {f"{part.name}.{k}": v for part in self.parts for k, v in part.parameters().items()}


CONDITIONS: dict[str, type[Condition]] = {c.name: c for c in (WarmStart, ResetAll)}


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


def parse_condition(spec: str, params: dict | None = None) -> Condition:
    """Build the condition named by ``spec`` (``"a"`` or ``"a+b"``) with coefficient overrides ``params``.

    ``params`` maps a coefficient name (or ``"part.name"`` for a combination) to its value; an unknown name is
    an error that lists the valid ones.
    """
    parts = condition_names(spec)
    params = dict(params or {})
    built = []
    for part in parts:
        cls = CONDITIONS[part]
        valid = [f.name for f in fields(cls)] if hasattr(cls, "__dataclass_fields__") else []
        kwargs = {}
        for key in list(params):
            owner, _, coeff = key.rpartition(".")
            if (owner in ("", part)) and coeff in valid:
                kwargs[coeff] = params.pop(key)
        built.append(cls(**kwargs))
    if params:
        valid = sorted({f"{p}.{f.name}" for p in parts for f in fields(CONDITIONS[p])}
                       if any(hasattr(CONDITIONS[p], "__dataclass_fields__") for p in parts) else set())
        raise ValueError(f"unknown parameter(s) {sorted(params)} for condition {spec!r}; "
                         f"valid: {', '.join(valid) or 'none'}")
    return built[0] if len(built) == 1 else Composite(built)
