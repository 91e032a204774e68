"""The hooks every condition implements, the checking of its coefficients, combinations, and the registry.

The package's docstring (:mod:`plasticity_lab.conditions`) is the reference for what each hook is for and when the
run loop calls it; this module holds what every kind of condition shares, so that the kind modules need only it
(and, for plasticity injection's effective parameters, :mod:`~plasticity_lab.conditions.injection`).

The registry :data:`CONDITIONS` is filled by :func:`register`, which ``plasticity_lab/conditions/__init__.py``
calls once with every condition class in the order the study lists them. Importing any module of the package runs
that ``__init__`` first, so the registry is complete before :func:`parse_condition` can be called, and this module
imports none of the kind modules.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import fields
from typing import ClassVar, Union

import torch

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
        for this epoch instead of the update's own (ReDo's ``log_weights="after"``); None leaves them, and so does
        NaN in a member's row (a mixed population's groups revise only their own members)."""
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


def member_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[M]`` → ``[M, 1, 1, ...]`` to broadcast against a stacked parameter ``like [M, ...]``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def head_names(population) -> list[str]:
    """Names of the network's output heads (policy and value), as the template lists them."""
    return list(population.template.heads())


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



#: Every condition class by its ``name``, in the order the study lists them; filled by :func:`register`.
CONDITIONS: dict[str, type[Condition]] = {}


def register(*classes: type[Condition]) -> None:
    """Add condition classes to :data:`CONDITIONS` under their ``name``, in the order given. A class without a
    name, or a name already taken by another class, is an error."""
    for cls in classes:
        if not cls.name:
            raise ValueError(f"{cls.__name__} has no name to register under")
        if CONDITIONS.get(cls.name, cls) is not cls:
            raise ValueError(f"condition name {cls.name!r} is taken by {CONDITIONS[cls.name].__name__}")
        CONDITIONS[cls.name] = cls



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


def shift_only_conditions(spec: str) -> list[str]:
    """The parts of condition ``spec`` that act at a shift and nowhere else (resets, shrink+perturb, injection): in
    an environment without shifts each would be warm start under another name."""
    other_hooks = ("network_options", "extra_loss", "after_optimizer_step", "after_epoch")
    out = []
    for name in condition_names(spec):
        cls = CONDITIONS[name]
        if cls.at_shift is not Condition.at_shift and all(getattr(cls, h) is getattr(Condition, h)
                                                             for h in other_hooks):
            out.append(name)
    return out


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
