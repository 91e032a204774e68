"""Several conditions in one population: each acts on its own contiguous group of members.

The conditions of the study mostly differ in what they do to the parameters (resets, shrink+perturb, regularisers,
ReDo), not in the network's shape, so runs of many conditions can train as one batched computation. Each group's
condition is handed :meth:`Population.member_slice` of its members — a population of its own whose parameters are
views of the whole's — and, where it draws random numbers, its members' own streams
(:class:`~plasticity_lab.streams.MemberStreams`). Its code runs unchanged, and its members train exactly as they
would in a population of that condition alone (``tests/test_member_groups.py`` checks this end to end).

What cannot share a population: conditions with different network options (LayerNorm, CReLU: the groups must all
have the same ones), and plasticity injection, whose shift changes the architecture of the members it acts on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import torch

from ..streams import MemberStreams
from .base import Composite, Condition


def _parts(condition: Condition) -> list[Condition]:
    return list(condition.parts) if isinstance(condition, Composite) else [condition]


def _injects(condition: Condition) -> bool:
    return any(part.name == "injection" for part in _parts(condition))


def population_key(condition: Condition) -> str:
    """Runs of conditions with the same key can share a population: the network the condition builds, or the
    condition itself where its shift changes the architecture (injection)."""
    if _injects(condition):
        return f"on its own: {condition.name}"
    return json.dumps(condition.network_options(), sort_keys=True)


class MemberGroups(Condition):
    """``groups``: ``(condition, start, stop)`` triples covering members ``0 … M − 1`` in order, without gaps.

    Random numbers must come from :class:`~plasticity_lab.streams.MemberStreams` (``RunConfig(randomness=
    "member")``): with one shared generator a group's draws would shift every other group's.
    """

    def __init__(self, groups: Sequence[tuple[Condition, int, int]]):
        groups = list(groups)
        if not groups:
            raise ValueError("MemberGroups needs at least one (condition, start, stop) group")
        expected = 0
        for condition, start, stop in groups:
            if start != expected or stop <= start:
                raise ValueError(f"member groups must cover the members in order without gaps: "
                                 f"{[(c.name, a, b) for c, a, b in groups]}")
            expected = stop
            if _injects(condition):
                raise ValueError(f"condition {condition.name!r} changes the architecture at each shift (injection) "
                                 f"and cannot share a population with other conditions; train it on its own")
        options = [c.network_options() for c, _, _ in groups]
        if any(o != options[0] for o in options[1:]):
            shown = "; ".join(f"{c.name}: {o or 'plain'}" for (c, _, _), o in zip(groups, options))
            raise ValueError(f"conditions in one population must build the same network; got {shown}")
        self.groups = groups
        self.members = expected
        self.name = "|".join(c.name for c, _, _ in groups)  # type: ignore[misc]
        self._slices: tuple | None = None  # (population, its member slices): conditions cache per population

    def network_options(self) -> dict:
        return self.groups[0][0].network_options()

    def parameters(self) -> dict:
        return {f"{c.name}[{a}:{b}].{k}": v for c, a, b in self.groups for k, v in c.parameters().items()}

    def _each(self, population, generator=None):
        """Each group's condition, its member slice and (if given) its members' streams."""
        if population.members != self.members:
            raise ValueError(f"these member groups cover {self.members} members; the population has "
                             f"{population.members}")
        if generator is not None and not isinstance(generator, MemberStreams):
            raise ValueError("a population of several conditions draws its random numbers from each member's own "
                             "streams: use RunConfig(randomness='member')")
        if self._slices is None or self._slices[0] is not population:
            self._slices = (population, [population.member_slice(a, b) for _, a, b in self.groups])
        for (condition, start, stop), view in zip(self.groups, self._slices[1]):
            yield condition, view, None if generator is None else generator.subset(start, stop)

    def setup(self, population):
        for condition, view, _ in self._each(population):
            condition.setup(view)

    def extra_loss(self, population):
        terms, any_term = [], False
        for condition, view, _ in self._each(population):
            term = condition.extra_loss(view)
            any_term = any_term or term is not None
            terms.append(torch.zeros(view.members, device=population.device) if term is None else term)
        return torch.cat(terms) if any_term else None

    def after_optimizer_step(self, population, generator):
        for condition, view, streams in self._each(population, generator):
            condition.after_optimizer_step(view, streams)

    def at_shift(self, population, generator):
        for condition, view, streams in self._each(population, generator):
            condition.at_shift(view, streams)

    def after_epoch(self, population, epoch, generator):
        """Each group's revised diagnostics in its own rows; NaN elsewhere, where the update's values stand (see
        :meth:`Condition.after_epoch`)."""
        revised: dict[str, list] = {}
        groups = list(self._each(population, generator))
        for index, (condition, view, streams) in enumerate(groups):
            for key, value in (condition.after_epoch(view, epoch, streams) or {}).items():
                revised.setdefault(key, [None] * len(groups))[index] = value
        if not revised:
            return None
        nan = [torch.full((view.members,), float("nan"), device=population.device) for _, view, _ in groups]
        return {key: torch.cat([v if v is not None else nan[i] for i, v in enumerate(values)])
                for key, values in revised.items()}
