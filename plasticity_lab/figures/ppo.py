"""PPO's two formulas drawn from the package's own code (chapter 2): the clipped surrogate objective and GAE.

Each curve is computed by :mod:`plasticity_lab.ppo` itself — :func:`~plasticity_lab.ppo.clipped_surrogate` and
:func:`~plasticity_lab.ppo.gae` — so the figure shows the loss the study trains with, not a re-derivation of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..ppo import clipped_surrogate, gae
from .style import BASELINE_COLOR, TEMPLATE, TRAIN_COLOR

__all__ = ["clipped_objective_figure", "gae_figure"]


def clipped_objective_figure(clip: float = 0.2, ratios: np.ndarray | None = None) -> go.Figure:
    """PPO's clipped surrogate objective per sample, ``min(r·A, clip(r, 1−ε, 1+ε)·A)``, against the probability
    ratio ``r = π_new(a|s) / π_old(a|s)``, for an advantage ``A = +1`` and ``A = −1``.

    Each point is ``−clipped_surrogate(r, A, ε)`` from :mod:`plasticity_lab.ppo` (the loss is the negative of the
    objective), so the curve is the package's loss, not a re-derivation. Dashed: the unclipped ``r·A``.
    """
    ratios = np.linspace(0.0, 2.0, 201) if ratios is None else np.asarray(ratios, dtype=np.float64)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("advantage A = +1 (a better action than expected)",
                                                        "advantage A = −1 (a worse action than expected)"),
                        horizontal_spacing=0.1)
    for col, a in ((1, 1.0), (2, -1.0)):
        adv = torch.tensor([a], dtype=torch.float64)
        objective = [-float(clipped_surrogate(torch.tensor([r], dtype=torch.float64), adv, clip)) for r in ratios]
        fig.add_vrect(x0=1 - clip, x1=1 + clip, fillcolor="#dddddd", opacity=0.45, line_width=0, row=1, col=col)
        fig.add_trace(go.Scatter(x=ratios, y=ratios * a, mode="lines", name="unclipped r·A",
                                 line=dict(color=BASELINE_COLOR, dash="dash"), showlegend=col == 1,
                                 hovertemplate="r=%{x:.2f}<br>r·A=%{y:.2f}<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(x=ratios, y=objective, mode="lines", name="clipped objective (PPO)",
                                 line=dict(color=TRAIN_COLOR, width=3), showlegend=col == 1,
                                 hovertemplate="r=%{x:.2f}<br>objective=%{y:.2f}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="probability ratio r", row=1, col=col)
    fig.update_yaxes(title_text="objective (to maximise)", row=1, col=1)
    fig.update_layout(template=TEMPLATE, height=380, margin=dict(l=60, r=20, t=50, b=50),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    fig.update_annotations(font_size=13)
    return fig


def gae_figure(rewards: Sequence[float], values: Sequence[float] | None = None, gamma: float = 0.99,
               lambdas: Sequence[float] = (0.0, 0.95, 1.0)) -> go.Figure:
    """Advantages from :func:`plasticity_lab.ppo.gae` on one toy episode, for several values of GAE's λ.

    ``rewards`` (and ``values``, default all 0) are one episode; the episode is cut after the last step and
    nothing is bootstrapped past it, as in the study. Bars: rewards; lines: the advantage at each step.
    """
    r = torch.tensor(rewards, dtype=torch.float64)
    v = torch.zeros_like(r) if values is None else torch.tensor(values, dtype=torch.float64)
    t = np.arange(len(r))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=t, y=r.numpy(), name="reward", marker_color="#bbbbbb",
                         hovertemplate="t=%{x}<br>reward=%{y:.2f}<extra></extra>"))
    palette = ["#fdae61", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b"]
    for i, lam in enumerate(lambdas):
        adv = gae(r.unsqueeze(1), v.unsqueeze(1), gamma, lam).squeeze(1).numpy()
        fig.add_trace(go.Scatter(x=t, y=adv, mode="lines+markers", name=f"advantage, λ = {lam:g}",
                                 line=dict(color=palette[i % len(palette)]),
                                 hovertemplate=f"λ={lam:g}<br>t=%{{x}}<br>A=%{{y:.3f}}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, height=400, xaxis_title="time step t", yaxis_title="value",
                      margin=dict(l=60, r=20, t=20, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0))
    return fig
