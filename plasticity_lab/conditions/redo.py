"""ReDo, recycling dormant neurons: the project's method and the authors' release's variant of each step."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Union

import torch
from torch import nn

from ..metrics import SCORES, dormant_scores
from ..nets import CReLU
from .base import Coefficient, Condition, check_coefficient, check_option, per_member, per_member_option


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
            self._reset_moments(population, key, mask)
        # 2. zero outgoing weights in every consumer
        for _, readers, _, outputs, spatial in plans:
            for reader in readers:
                key = f"{reader}.weight"
                w = params[key]
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
                self._reset_moments(population, key, mask)
        return [units for _, _, units, _, _ in plans]

    def _reset_moments(self, population, name: str, mask: torch.Tensor) -> None:
        resets = per_member_option(self.reset_optimizer_state, population, self.name, "reset_optimizer_state")
        if not any(resets):
            return
        if not all(resets):
            chosen = torch.tensor(resets, device=mask.device).view(-1, *([1] * (mask.dim() - 1)))
            mask = mask & chosen
        for moment in population.optimizer_moments(name).values():
            moment.masked_fill_(mask, 0.0)
