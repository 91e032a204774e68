"""ReDo (chapter 10): the units it calls dormant, what one recycling step changes, the network without those units,
and a ReDo run that logs every recycling step.

Every step is ReDo's own (:class:`~plasticity_lab.conditions.ReDo`, its ``recycle``), run on a copy of the
population; what it changed is read off the weights, not from ReDo's bookkeeping.

* :func:`unit_scores`, :func:`unit_scores_figure` — every hidden output's ReDo score next to the fraction of inputs
  on which it is 0, and the two drawn against each other (plotly).
* :func:`recycle`, :func:`recycling_table` — one ReDo step on a copy, and what it changed, read off the weights.
* :func:`silence_units` — the same units' outgoing weights zeroed and nothing else: the network without them.
* :func:`run_redo` — a ReDo run that logs how many units each recycling step took.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from ..conditions import Composite, ReDo
from ..experiment import Experiment, population_seed
from ..metrics import dormant_scores
from ..nets import CReLU
from ..population import Population
from .architecture import dense_blocks, stacked_observations
from .resets import copy_population
from .style import TEMPLATE, figure_title, top_margin

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["recycle", "recycling_table", "run_redo", "silence_units", "unit_scores", "unit_scores_figure"]


def unit_scores(population: Population, obs: torch.Tensor) -> pd.DataFrame:
    """Every hidden output of ``population`` scored on the inputs ``obs`` (``[N, 363]`` or ``[M, N, 363]``), one
    row per member × encoder block × output: ``score`` (ReDo's :func:`~plasticity_lab.metrics.dormant_scores`),
    ``zero_fraction`` (the fraction of the inputs on which the output is exactly 0 — the unit's share in the
    dead-units diagnostic) and ``mean_activation`` (its mean absolute output)."""
    with torch.no_grad():
        hidden = population.forward(stacked_observations(population, obs), return_hidden=True)[3]
    names = [name for name, _, _ in ReDo().consumers(population)]
    frames = []
    for name, a in zip(names, hidden):
        scores = dormant_scores(a).cpu()
        zero = (a == 0).float().mean(1).cpu()
        mean = a.abs().mean(1).cpu()
        members, outputs = scores.shape
        frames.append(pd.DataFrame({"member": np.repeat(np.arange(members), outputs), "layer": name,
                                    "unit": np.tile(np.arange(outputs), members),
                                    "score": scores.reshape(-1).numpy(), "zero_fraction": zero.reshape(-1).numpy(),
                                    "mean_activation": mean.reshape(-1).numpy()}))
    return pd.concat(frames, ignore_index=True)


def recycle(population: Population, obs: torch.Tensor, redo: ReDo | None = None, seed: int | None = None
            ) -> tuple[Population, list[torch.Tensor]]:
    """What one ReDo step does to ``population`` when it scores its units on ``obs`` (``[N, 363]`` for every
    member, or ``[M, N, 363]``): ReDo's own :meth:`~plasticity_lab.conditions.ReDo.recycle` on a copy. Returns the
    copy and, per encoder block, the recycled pre-activation units (``[M, units]`` masks). The population itself is
    left untouched; ``redo`` defaults to ``ReDo()`` (τ = 0.025, all consumers), ``seed`` as in
    :func:`~plasticity_lab.figures.resets.apply_at_shift`."""
    redo = redo if redo is not None else ReDo()
    twin = copy_population(population)
    redo.setup(twin)
    twin.last_minibatch_obs = stacked_observations(twin, obs)
    if seed is None:
        seed = population_seed(population.member_seeds)
    units = redo.recycle(twin, torch.Generator(device=twin.device).manual_seed(int(seed)))
    return twin, units


def _output_columns(mask: torch.Tensor, crelu: bool) -> torch.Tensor:
    """Pre-activation units ``[M, W]`` → the block's output columns they own (``[M, 2W]`` with CReLU)."""
    return torch.cat([mask, mask], dim=1) if crelu else mask


def silence_units(population: Population, units: Sequence[torch.Tensor], outgoing: str = "all",
                  params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The parameters with the outgoing weights of ``units`` set to 0 and nothing else changed: per encoder block a
    ``[M, units]`` mask (as :func:`recycle` returns), whose units' columns are zeroed in every module that reads
    the block (the next block; after the last one the heads — only the policy head with
    ``outgoing="policy_only"``). Returns new parameters; ``params`` (default: the population's own) is not
    changed. This is ReDo's second step without its first (fresh incoming weights): the network without those
    units' contributions. Dense encoders only.
    """
    params = {k: v.detach().clone() for k, v in (params if params is not None else population.params).items()}
    layers = ReDo(outgoing=outgoing).consumers(population)
    dense_blocks(population)
    if len(units) != len(layers):
        raise ValueError(f"units needs one mask per encoder block ({len(layers)}); got {len(units)}")
    for (name, block, readers), mask in zip(layers, units):
        mask = torch.as_tensor(mask, dtype=torch.bool, device=population.device)
        if mask.shape != (population.members, block.layer.out_features):
            raise ValueError(f"the mask for {name} must have shape {(population.members, block.layer.out_features)}; "
                             f"got {tuple(mask.shape)}")
        columns = _output_columns(mask, isinstance(block.activation, CReLU))
        for reader in readers:
            key = f"{reader}.weight"
            params[key] = params[key].masked_fill(columns[:, None, :], 0.0)
    return params


def recycling_table(before: Population, after: Population, units: Sequence[torch.Tensor]) -> pd.DataFrame:
    """What a ReDo step changed, read off the parameters (not from ReDo's own bookkeeping): one row per member ×
    encoder block × module reading the block (every reader, whatever ReDo's ``outgoing`` option was).

    Columns: ``units`` (the block's pre-activation units), ``recycled`` (units in ``units``' mask),
    ``incoming_changed`` (units whose incoming weights changed — not counting the input columns of the previous
    block's recycled units, which ReDo zeroes in every row), ``changed_not_recycled`` (units outside the mask whose
    incoming weights changed, counted the same way), ``bias_changed`` (units whose bias changed), ``outgoing_zero``
    (recycled units whose every outgoing weight into this reader is exactly 0) and ``zero_not_recycled`` (other
    units whose outgoing weights into this reader are all 0).
    """
    layers = dense_blocks(before)
    if len(units) != len(layers):
        raise ValueError(f"units needs one mask per encoder block ({len(layers)}); got {len(units)}")
    rows = []
    upstream = None  # the previous block's recycled output columns [M, inputs]
    for (name, block, readers), mask in zip(layers, units):
        mask = torch.as_tensor(mask, dtype=torch.bool).cpu()
        crelu = isinstance(block.activation, CReLU)
        w0, w1 = before.params[f"{name}.weight"].detach().cpu(), after.params[f"{name}.weight"].detach().cpu()
        b0, b1 = before.params[f"{name}.bias"].detach().cpu(), after.params[f"{name}.bias"].detach().cpu()
        differs = w0 != w1  # [M, units, inputs]
        if upstream is not None:
            differs = differs & ~upstream[:, None, :]
        incoming = differs.any(-1)  # [M, units]
        bias = b0 != b1
        upstream = _output_columns(mask, crelu)
        for reader in readers:
            zero_columns = (after.params[f"{reader}.weight"].detach().cpu() == 0).all(1)  # [M, outputs]
            if crelu:
                width = zero_columns.shape[1] // 2
                zero_units = zero_columns[:, :width] & zero_columns[:, width:]
            else:
                zero_units = zero_columns
            for m in range(mask.shape[0]):
                rows.append({"member": m, "layer": name, "reader": reader, "units": int(mask.shape[1]),
                             "recycled": int(mask[m].sum()), "incoming_changed": int(incoming[m].sum()),
                             "changed_not_recycled": int((incoming[m] & ~mask[m]).sum()),
                             "bias_changed": int(bias[m].sum()),
                             "outgoing_zero": int((zero_units[m] & mask[m]).sum()),
                             "zero_not_recycled": int((zero_units[m] & ~mask[m]).sum())})
    return pd.DataFrame(rows).set_index(["member", "layer", "reader"])


def run_redo(configs) -> tuple:
    """Train a population whose condition contains ReDo (``configs``: :class:`~plasticity_lab.RunConfig` s of one
    population, as for :func:`plasticity_lab.run`) and log every recycling step.

    Returns the finished :class:`~plasticity_lab.experiment.Experiment` (``.table()`` is :func:`plasticity_lab.run`'s
    table; ``.population`` the trained networks) and a table with one row per ReDo step × member × encoder block:
    ``condition``, ``shift``, ``seed``, ``epoch`` (the epoch after whose update ReDo acted), ``round``, ``layer``,
    ``units`` and ``recycled`` — what the condition's own ``recycle`` returned.
    """
    experiment = Experiment(configs)
    condition = experiment.condition
    parts = condition.parts if isinstance(condition, Composite) else [condition]
    redo = next((p for p in parts if isinstance(p, ReDo)), None)
    if redo is None:
        raise ValueError(f"run_redo needs a condition with ReDo; got {condition.name!r}")
    records = []
    original = redo.recycle

    def logged(population, generator, acting=None):
        recycled = original(population, generator, acting)
        names = [name for name, _, _ in redo.consumers(population)]
        for name, mask in zip(names, recycled):
            for m, cfg in enumerate(experiment.configs):
                if acting is None or bool(acting[m]):
                    records.append({"condition": cfg.label, "shift": cfg.shift, "seed": cfg.seed,
                                    "epoch": experiment.epoch,
                                    "round": experiment.epoch // cfg.epochs_per_round + 1, "layer": name,
                                    "units": int(mask.shape[1]), "recycled": int(mask[m].sum())})
        return recycled

    redo.recycle = logged
    try:
        while not experiment.finished:
            experiment.train_epoch()
    finally:
        del redo.recycle  # the instance attribute hid the method; removing it restores ReDo's own
    columns = ["condition", "shift", "seed", "epoch", "round", "layer", "units", "recycled"]
    return experiment, pd.DataFrame(records, columns=columns)


def unit_scores_figure(scores: pd.DataFrame, tau: float = 0.025, by: str | None = "network", floor: float = 1e-3,
                       title: str | None = None) -> go.Figure:
    """Every hidden output of :func:`plasticity_lab.figures.redo.unit_scores` as one dot: the fraction of the inputs on
    which it is exactly 0 (x; its share in the dead-units diagnostic) against its ReDo score (y, log scale), one
    panel per encoder block, one colour per value of the column ``by`` (e.g. fresh and trained networks).

    Outputs with a score below ``floor`` — in practice those that are 0 on every input, score exactly 0 — are
    drawn at ``floor`` (the hover text gives the true score). The dashed line is ReDo's threshold ``tau``: every
    dot on or below it is dormant; the panel titles count them.
    """
    # plotly is imported here, by the figure alone: the computations of this module run without it
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    needed = ["layer", "score", "zero_fraction", *([by] if by is not None else [])]
    missing = [c for c in needed if c not in scores.columns]
    if missing:
        raise ValueError(f"unit_scores_figure needs column(s) {missing}; the table has {list(scores.columns)}")
    if not floor > 0:
        raise ValueError(f"floor must be positive (the score axis is logarithmic); got {floor!r}")
    groups = list(pd.unique(scores[by])) if by is not None else [None]
    layers = list(pd.unique(scores["layer"]))
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    colors = {g: palette[i % len(palette)] for i, g in enumerate(groups)}
    titles = []
    for layer in layers:
        part = scores[scores["layer"] == layer]
        counts = []
        for g in groups:
            rows = part if g is None else part[part[by] == g]
            counts.append(f"{'' if g is None else f'{g} '}{int((rows['score'] <= tau).sum())} of {len(rows)}")
        titles.append(f"{layer} — dormant: " + ", ".join(counts))
    fig = make_subplots(rows=1, cols=len(layers), shared_yaxes=True, horizontal_spacing=0.05, subplot_titles=titles)
    for j, layer in enumerate(layers):
        part = scores[scores["layer"] == layer]
        for g in groups:
            rows = part if g is None else part[part[by] == g]
            y = np.maximum(rows["score"].to_numpy(np.float64), floor)
            fig.add_trace(go.Scatter(
                x=rows["zero_fraction"].to_numpy(np.float64), y=y, mode="markers",
                marker=dict(color=colors[g], size=6, opacity=0.55), name=str(g) if g is not None else "units",
                legendgroup=str(g), showlegend=j == 0, customdata=rows["score"].to_numpy(np.float64),
                hovertemplate="zero on %{x:.0%} of the inputs<br>score %{customdata:.4f}<extra></extra>"),
                row=1, col=j + 1)
        fig.add_hline(y=tau, line=dict(color="#555555", width=1.5, dash="dash"), row=1, col=j + 1)
        fig.update_xaxes(title_text="fraction of inputs with output exactly 0", range=[-0.03, 1.03],
                         row=1, col=j + 1)
    fig.update_yaxes(type="log", title_text=f"ReDo score (log scale; dashed: τ = {tau:g})", row=1, col=1)
    fig.update_yaxes(type="log")
    fig.update_annotations(font_size=12)
    top = top_margin(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=460 + top, title=figure_title(title, above=30),
                      margin=dict(l=80, r=20, t=top, b=110),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig
