"""LayerNorm and CReLU (chapter 9): the networks they build, how alive their hidden units stay, soft
shrink+perturb applied to them, and the 2 × 2 ablation of soft shrink+perturb and LayerNorm.

* :func:`architecture_table` — each condition's network, layer by layer, with its parameter counts.
* :func:`unit_activity` — per hidden layer: zero outputs, units never active, dormant units, units no gradient
  reaches, and the fewest units active on any one input.
* :func:`apply_after_steps` — a condition's after-every-step hook (soft shrink+perturb) applied n times to a copy.
* :func:`two_by_two` — a 2 × 2 ablation of two conditions that combine (soft shrink+perturb and LayerNorm).
* :func:`dense_blocks`, :func:`stacked_observations` — the encoder's dense blocks as ReDo sees them, and inputs
  stacked for every member: what chapter 10's :mod:`~plasticity_lab.figures.redo` reads too.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from ..conditions import Condition, ReDo, parse_condition
from ..experiment import population_seed
from ..metrics import dormant_scores
from ..nets import CReLU, NetworkSpec
from ..population import Population
from .resets import copy_population

__all__ = ["apply_after_steps", "architecture_table", "dense_blocks", "stacked_observations", "two_by_two",
           "unit_activity"]


def architecture_table(conditions: Sequence[str] = ("warm_start", "layernorm", "crelu")) -> pd.DataFrame:
    """The gridworld network each condition trains, layer by layer, built from the condition's own
    ``network_options()`` (so ``"soft_shrink_perturb+layernorm"`` gives the LayerNorm network).

    One row per condition × layer (the encoder's blocks, then the two heads): ``inputs`` (the
    layer's input width), ``units`` (its linear map's outputs: the pre-activation units), ``outputs`` (the width
    after the activation — twice ``units`` with CReLU), ``norm`` and ``activation`` (class names, ``"—"`` for
    none) and ``parameters`` (the layer's own, its norm's gain and bias included). Counts come from the built
    modules, not from a formula; their sum over a condition's rows is the whole network's.
    """
    rows = []
    for condition in conditions:
        spec = NetworkSpec(**parse_condition(condition).network_options())
        network = spec.build()
        names = {id(m): n for n, m in network.named_modules()}
        layers = [(names[id(b)], b.layer, b.norm, b.activation) for b in network.blocks()]
        layers += [(name, head, None, None) for name, head in network.heads().items()]
        for name, layer, norm, activation in layers:
            units = layer.out_features
            outputs = units if activation is None else int(activation(torch.ones(1, units)).shape[-1])
            count = sum(p.numel() for p in layer.parameters())
            if norm is not None:
                count += sum(p.numel() for p in norm.parameters())
            has_norm = norm is not None and not isinstance(norm, nn.Identity)
            rows.append({"condition": condition, "layer": name, "inputs": layer.in_features, "units": units,
                         "outputs": outputs, "norm": type(norm).__name__ if has_norm else "—",
                         "activation": type(activation).__name__ if activation is not None else "—",
                         "parameters": count})
    return pd.DataFrame(rows).set_index(["condition", "layer"])


def stacked_observations(population: Population, obs: torch.Tensor) -> torch.Tensor:
    """``obs`` for every member: ``[N, ...]`` (the same inputs for all) becomes ``[M, N, ...]``; ``[M, N, ...]``
    stays as it is. On the population's device."""
    obs = obs.to(population.device)
    return obs.unsqueeze(0).expand(population.members, *obs.shape) if obs.dim() == 2 else obs


def dense_blocks(population: Population) -> list[tuple[str, nn.Module, list[str]]]:
    """ReDo's view of the encoder — (layer name, block, the modules reading the block) — for dense blocks only."""
    layers = ReDo().consumers(population)
    for name, block, _ in layers:
        if not isinstance(block.layer, nn.Linear):
            raise ValueError(f"only dense (MLP) encoders are supported; {name} is {type(block.layer).__name__}")
    return layers


def _active_units(outputs: torch.Tensor, crelu: bool) -> torch.Tensor:
    """Whether each pre-activation unit passes its input on (and gradient back): ``[M, N, outputs] → [M, N, units]``.

    A ReLU unit does so where its output is positive; a CReLU unit ``i`` feeds outputs ``i`` and ``i + W`` and does
    so where either is non-zero, i.e. wherever its pre-activation is not exactly 0."""
    positive = outputs != 0
    if crelu:
        width = positive.shape[-1] // 2
        return positive[..., :width] | positive[..., width:]
    return positive


def unit_activity(population: Population, obs: torch.Tensor, tau: float = 0.025, seed: int = 0) -> pd.DataFrame:
    """How alive each hidden layer of ``population`` is on the inputs ``obs`` (``[N, 363]`` for every member, or
    ``[M, N, 363]``). One row per member × encoder block:

    * ``units`` — pre-activation units (half the outputs with CReLU);
    * ``zero_fraction`` — the fraction of exactly-zero outputs over inputs × outputs; for the last block this is the
      study's *dead units* diagnostic (:func:`~plasticity_lab.metrics.dead_unit_fraction`);
    * ``never_active`` — the fraction of units that pass nothing on for any of the inputs (a ReLU unit whose output
      is 0 on every input; a CReLU unit whose two outputs are both 0 on every input);
    * ``dormant`` — the fraction of units ReDo would recycle at threshold ``tau``
      (:func:`~plasticity_lab.metrics.dormant_scores` ≤ τ; with CReLU both outputs must be);
    * ``no_gradient`` — the fraction of units whose incoming weights get an exactly zero gradient from a loss on
      these inputs (a fixed random mix, seeded by ``seed``, of every logit and value, so no gradient cancels by
      construction): units the gradient cannot reach, however the loss is chosen;
    * ``fewest_active`` — the smallest number of units passing their input on, over the inputs.
    """
    layers = dense_blocks(population)
    x = stacked_observations(population, obs)
    trainable = [f"{name}.weight" for name, _, _ in layers]
    with torch.enable_grad():
        logits, value, _, hidden = population.forward(x, return_hidden=True)
        generator = torch.Generator().manual_seed(int(seed))
        mix = torch.randn(logits.shape, generator=generator).to(logits.device)
        loss = (logits * mix).sum() + (value * torch.randn(value.shape, generator=generator).to(value.device)).sum()
        grads = torch.autograd.grad(loss, [population.params[k] for k in trainable], allow_unused=True)
    rows = []
    for (name, block, _), outputs, grad in zip(layers, hidden, grads):
        outputs = outputs.detach()
        crelu = isinstance(block.activation, CReLU)
        active = _active_units(outputs, crelu)  # [M, N, units]
        dormant = dormant_scores(outputs) <= tau
        if crelu:
            width = dormant.shape[1] // 2
            dormant = dormant[:, :width] & dormant[:, width:]
        silent = (grad == 0).all(-1) if grad is not None else torch.ones_like(dormant)
        zero = (outputs == 0).float().reshape(outputs.shape[0], -1).mean(1)
        for m in range(population.members):
            rows.append({"member": m, "layer": name, "units": active.shape[-1],
                         "zero_fraction": float(zero[m]),
                         "never_active": float((~active[m].any(0)).float().mean()),
                         "dormant": float(dormant[m].float().mean()),
                         "no_gradient": float(silent[m].float().mean()),
                         "fewest_active": int(active[m].sum(-1).min())})
    return pd.DataFrame(rows).set_index(["member", "layer"])


def apply_after_steps(population: Population, condition: str | Condition, steps: int, seed: int | None = None
                      ) -> Population:
    """A copy of ``population`` after ``steps`` calls of ``condition``'s ``after_optimizer_step`` hook (the one soft
    shrink+perturb uses) with no learning in between. The population itself is left untouched; ``seed`` as in
    :func:`~plasticity_lab.figures.resets.apply_at_shift` (default: the seed a run of these members shares, plus
    one)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    cond = parse_condition(condition) if isinstance(condition, str) else condition
    twin = copy_population(population)
    cond.setup(twin)
    if seed is None:
        seed = population_seed(population.member_seeds) + 1
    generator = torch.Generator(device=twin.device).manual_seed(int(seed))
    with torch.no_grad():
        for _ in range(steps):
            cond.after_optimizer_step(twin, generator)
    return twin


def two_by_two(runs: pd.DataFrame, first: str = "soft_shrink_perturb", second: str = "layernorm",
               neither: str = "warm_start") -> pd.DataFrame:
    """A 2 × 2 ablation of two conditions that combine: the mean normalised reward (over seeds) of ``neither``,
    ``first`` alone, ``second`` alone and ``first+second``, per shift and split; ``interaction`` =
    both − first − second + neither (0 when the two effects simply add up; positive when together they do better
    than the sum of their separate gains over ``neither``), with the ``t`` and ``p`` of its test
    (:func:`plasticity_lab.stats.interaction_test`, the two-way ANOVA's test of interaction on the per-seed
    values).

    ``runs`` is a run summary (a stored study's ``runs(at)`` or :func:`plasticity_lab.stats.run_summary`);
    every one of the four conditions must be in it.
    """
    from ..stats import interaction_test

    tests = interaction_test(runs, first, second, neither)
    index = [k for k in ("env", "shift") if k in tests.columns and (k != "env" or tests["env"].nunique() > 1)]
    columns = [neither, first, second, f"{first}+{second}", "interaction", "t", "p"]
    return tests.set_index(index + ["split"])[columns]
