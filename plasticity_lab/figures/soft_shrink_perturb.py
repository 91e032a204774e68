"""Soft shrink+perturb without learning (chapter 8): what the rule alone does to a network's weights, step after
step, measured against its closed form.

The rule is the condition's own ``after_optimizer_step`` (:class:`~plasticity_lab.conditions.SoftShrinkPerturb`);
the chapter's live explorer (:func:`plasticity_lab.figures.widgets.soft_shrink_perturb_explorer`) draws the same
trajectory for the coefficients a reader picks.
"""

from __future__ import annotations

import pandas as pd
import torch

from ..conditions import SoftShrinkPerturb
from ..experiment import population_seed
from ..nets import NetworkSpec
from ..population import Population
from .resets import expected_fresh_rms, layer_rms

__all__ = ["soft_shrink_perturb_trajectory"]


def soft_shrink_perturb_trajectory(shrink: float, perturb: float, steps: int = 500, seed: int = 0,
                                   every: int = 10) -> pd.DataFrame:
    """Apply soft shrink+perturb (the condition's own ``after_optimizer_step``) ``steps`` times to a freshly
    initialised gridworld network, with no learning in between, and record the RMS of all its parameters every
    ``every`` steps, next to its prediction.

    Each step is θ ← αθ + βθ_fresh with an independent zero-mean fresh draw, so the mean square follows
    ``m_n = α²·m_{n−1} + β²·f`` (f: the fresh initialisation's mean square, from
    :func:`~plasticity_lab.figures.resets.expected_fresh_rms`):
    ``m_n = α^{2n}·m_0 + β²·f·(1 − α^{2n}) / (1 − α²)``, tending to ``β²f/(1 − α²)``. Left alone, the weights
    settle at RMS ``β/√(1 − α²)`` times a fresh network's; with the default α = 1 − β that is ≈ √(β/2) of it
    (e.g. 0.07 % for β = 10⁻⁶): between gradient steps the rule pulls every weight toward zero, and gradients
    must hold it up. Columns: ``step``, ``rms`` (measured), ``predicted``.
    """
    condition = SoftShrinkPerturb(perturb=perturb, shrink=shrink)
    population = Population(NetworkSpec(), [seed])
    condition.setup(population)
    generator = torch.Generator().manual_seed(population_seed([seed]) + 1)
    fresh = float(expected_fresh_rms(population)["all"]) ** 2
    alpha, beta = float(shrink), float(perturb)

    def rms() -> float:
        return float(layer_rms(population.params).loc["all"].iloc[0])

    start = rms() ** 2
    rows = [{"step": 0, "rms": start**0.5, "predicted": start**0.5}]
    with torch.no_grad():
        for n in range(1, steps + 1):
            condition.after_optimizer_step(population, generator)
            if n % every == 0 or n == steps:
                decay = alpha ** (2 * n)
                stationary = beta**2 * fresh * (n if alpha == 1 else (1 - decay) / (1 - alpha**2))
                rows.append({"step": n, "rms": rms(), "predicted": (decay * start + stationary) ** 0.5})
    return pd.DataFrame(rows)
