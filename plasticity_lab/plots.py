"""The book's figures: plotly figures built from the package's own objects.

Every function returns a ``plotly.graph_objects.Figure`` (call ``.show()`` or leave it as a cell's last
expression); none of them trains anything or reads files — they draw what they are given, or what a pure function
of the package (a level layout, a shift's mapping or level pool, a PPO loss term) computes. The figures are
self-contained HTML/JSON, so they stay interactive on the book's static pages (built with
``PLOTLY_RENDERER=plotly_mimetype+notebook``) and in Colab.

This module (with :mod:`plasticity_lab.widgets`) is the only part of the package that imports plotly; the rest of
the package imports without any plotting library.

Gridworld pictures

* :func:`level_image`, :func:`levels_figure` — levels drawn as pictures (the environment's ``rgb_array`` renderer).
* :func:`observation_grid`, :func:`observation_figure` — the 363-d observation as its three 11×11 channels.

PPO

* :func:`clipped_objective_figure` — the clipped surrogate of :func:`plasticity_lab.ppo.clipped_surrogate`.
* :func:`gae_figure` — advantages of :func:`plasticity_lab.ppo.gae` on a toy episode, for several λ.
* :func:`learning_curve_figure` — train/test return per epoch of a :func:`plasticity_lab.run` table.

Shifts

* :func:`pool_strip` — which levels are in the pool in a round (and which were trained on before).
* :func:`level_pools_figure` — the level pool of every round, for every shift.
* :func:`shift_rounds_figure` — a figure with a slider over rounds (works on a static page: no kernel needed).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .envs.gridworld import DEFAULT_REWARD, GRID_SIZE, N_CHANNELS, OBS_DIM, level_layout, render_rgb
from .ppo import clipped_surrogate, gae
from .shifts import apply_mapping, level_range, permute_mapping

__all__ = [
    "CHANNELS",
    "SHIFT_COLORS",
    "clipped_objective_figure",
    "gae_figure",
    "learning_curve_figure",
    "level_image",
    "level_pools_figure",
    "levels_figure",
    "observation_figure",
    "observation_grid",
    "pool_strip",
    "shift_rounds_figure",
]

#: Names of the observation's three channels, in order (PROTOCOL §3).
CHANNELS = ("agent", "reward", "wall")
#: One colour per shift, used by every figure that compares shifts.
SHIFT_COLORS = {"permute": "#7b3294", "window": "#e66101", "expand": "#1b7837", "none": "#666666"}
TEMPLATE = "plotly_white"
_TRAIN_COLOR, _TEST_COLOR, _BASELINE_COLOR = "#1f77b4", "#d62728", "#7f7f7f"
# Observation values: -0.75 (pit) … 0 … 1 (agent, wall), gems +0.75. A diverging scale centred on 0.
_OBS_COLORSCALE = [[0.0, "#b2182b"], [0.5, "#f7f7f7"], [1.0, "#2166ac"]]
# Pool strip values: 0 = never in the pool so far, 1 = trained on in an earlier round only, 2 = in this round's pool.
_STRIP_COLORSCALE = [
    [0.0, "#f2f2f2"], [0.3333, "#f2f2f2"],
    [0.3333, "#9ecae1"], [0.6667, "#9ecae1"],
    [0.6667, "#08519c"], [1.0, "#08519c"],
]


# ------------------------------------------------------------------------------------------------ gridworld
def level_image(level: int, reward_magnitude: float = DEFAULT_REWARD, cell_px: int = 24) -> np.ndarray:
    """Level ``level`` at its start state as an RGB ``uint8`` image ``[11·cell_px, 11·cell_px, 3]``.

    The same picture as ``gymnasium.make("plasticity_lab/Gather-v0", render_mode="rgb_array")`` gives after
    ``reset(options={"level": level})``: walls dark grey, gems green diamonds, pits red squares, the agent a blue disc.
    """
    return render_rgb(level_layout(level, reward_magnitude).observation(), cell_px=cell_px)


def _png_data_uri(image: np.ndarray) -> str:
    from PIL import Image  # pillow comes with matplotlib (the book extra)

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_grid_figure(images: Mapping[str, np.ndarray], cols: int = 4, panel_px: int = 160,
                      title: str | None = None) -> go.Figure:
    """RGB images (name → ``[H, W, 3]`` uint8) in a grid of subplots, each titled with its name.

    The images travel as compact PNGs inside the figure (``go.Image(source=...)``), not as arrays of numbers.
    The figure takes the width of the page; ``panel_px`` sets the height of each row.
    """
    names = list(images)
    if not names:
        raise ValueError("image_grid_figure needs at least one image")
    cols = max(1, min(cols, len(names)))
    rows = -(-len(names) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.02,
                        vertical_spacing=0.08 / rows)
    for i, name in enumerate(names):
        fig.add_trace(go.Image(source=_png_data_uri(images[name]), hoverinfo="skip"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(template=TEMPLATE, height=rows * (panel_px + 30) + (75 if title else 55),
                      margin=dict(l=10, r=10, t=75 if title else 55, b=10),
                      title=dict(text=title, x=0.01) if title else None)
    return fig


def levels_figure(levels: Sequence[int], cols: int = 4, reward_magnitude: float = DEFAULT_REWARD,
                  title: str | None = None) -> go.Figure:
    """Pictures of ``levels`` (their start states) in a grid with ``cols`` columns."""
    return image_grid_figure({f"level {lv:,}": level_image(lv, reward_magnitude) for lv in levels},
                             cols=cols, title=title)


def observation_grid(obs: np.ndarray | torch.Tensor) -> np.ndarray:
    """A 363-d observation as ``[3, 11, 11]``: channel (agent, reward, wall), row, column.

    Entry ``(x·11 + y)·3 + c`` of the vector goes to ``[c, x, y]`` — the layout the environment writes
    (PROTOCOL §3). A *permuted* observation reshaped the same way shows what the network's inputs look like after
    the shift: the numbers are the same, their places are not.
    """
    if isinstance(obs, torch.Tensor):
        obs = obs.detach().cpu().numpy()
    obs = np.asarray(obs, dtype=np.float32)
    if obs.shape != (OBS_DIM,):
        raise ValueError(f"expected one observation of shape ({OBS_DIM},), got {obs.shape}")
    return obs.reshape(GRID_SIZE, GRID_SIZE, N_CHANNELS).transpose(2, 0, 1)


def _hover_obs(name: str, channel: str) -> str:
    return f"{name}<br>{channel} channel<br>row %{{y}}, column %{{x}}<br>value %{{z:.2f}}<extra></extra>"


def observation_figure(observations: Mapping[str, np.ndarray | torch.Tensor] | np.ndarray | torch.Tensor,
                       title: str | None = None, panel_px: int = 150) -> go.Figure:
    """The three channels of one or more observations as 11×11 heatmaps: one row per channel, one column per
    observation (name → 363-d vector; a bare vector is shown alone).

    Colours: blue positive (agent 1, wall 1, gem +0.75), red negative (pit −0.75), white 0. Hover shows the value.
    The figure takes the width of the page; ``panel_px`` sets the height of each row.
    """
    if not isinstance(observations, Mapping):
        observations = {"observation": observations}
    names = list(observations)
    grids = {name: observation_grid(observations[name]) for name in names}
    n = len(names)
    titles = [f"{name}: {ch}" if n > 1 else ch for ch in CHANNELS for name in names] if n > 1 else list(CHANNELS)
    rows, cols = (N_CHANNELS, n) if n > 1 else (1, N_CHANNELS)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.03,
                        vertical_spacing=0.07)
    for j, name in enumerate(names):
        for c, channel in enumerate(CHANNELS):
            row, col = (c + 1, j + 1) if n > 1 else (1, c + 1)
            fig.add_trace(go.Heatmap(z=grids[name][c], zmin=-1, zmax=1, colorscale=_OBS_COLORSCALE,
                                     showscale=False, xgap=1, ygap=1, hovertemplate=_hover_obs(name, channel)),
                          row=row, col=col)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                     scaleanchor="x", constrain="domain")
    for i in range(2, rows * cols + 1):  # square cells in every panel
        fig.layout[f"yaxis{i}"].scaleanchor = f"x{i}"
    fig.update_annotations(font_size=12)
    fig.update_layout(template=TEMPLATE, height=rows * (panel_px + 25) + (80 if title else 55),
                      margin=dict(l=10, r=10, t=80 if title else 55, b=10),
                      title=dict(text=title, x=0.01) if title else None)
    return fig


# ------------------------------------------------------------------------------------------------------ PPO
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
                                 line=dict(color=_BASELINE_COLOR, dash="dash"), showlegend=col == 1,
                                 hovertemplate="r=%{x:.2f}<br>r·A=%{y:.2f}<extra></extra>"), row=1, col=col)
        fig.add_trace(go.Scatter(x=ratios, y=objective, mode="lines", name="clipped objective (PPO)",
                                 line=dict(color=_TRAIN_COLOR, width=3), showlegend=col == 1,
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


def learning_curve_figure(df: pd.DataFrame, baselines: Mapping[str, float] | None = None,
                          title: str | None = None, smooth: int = 5) -> go.Figure:
    """Train and test return per epoch of a :func:`plasticity_lab.run` table (one run, or the mean over runs).

    ``train_return`` is the mean return of each epoch's training episodes: drawn faintly per epoch and, bold, as a
    trailing moving average over ``smooth`` epochs (restarted at every round, so no average straddles a shift;
    ``smooth=1`` draws the raw curve only). ``test_return`` (drawn at the epochs where it was measured) is the
    mean over the test episodes on unseen levels. ``baselines`` (label → return) are drawn as dashed horizontal
    lines, e.g. a random policy's return. Round boundaries (shifts) are dotted vertical lines.
    """
    for column in ("epoch", "round", "train_return", "test_return"):
        if column not in df.columns:
            raise ValueError(f"learning_curve_figure needs column {column!r} (a table from plasticity_lab.run)")
    per_epoch = df.groupby("epoch", sort=True)[["train_return", "test_return", "round"]].mean()
    tested = per_epoch["test_return"].dropna()
    fig = go.Figure()
    smooth = max(1, int(smooth))
    fig.add_trace(go.Scatter(x=per_epoch.index, y=per_epoch["train_return"], mode="lines",
                             name="train return" if smooth == 1 else "train return, per epoch",
                             line=dict(color=_TRAIN_COLOR, width=2 if smooth == 1 else 1),
                             opacity=1.0 if smooth == 1 else 0.35,
                             hovertemplate="epoch %{x}<br>train return %{y:.2f}<extra></extra>"))
    if smooth > 1:
        smoothed = per_epoch.groupby("round")["train_return"].transform(
            lambda x: x.rolling(smooth, min_periods=1).mean())
        fig.add_trace(go.Scatter(x=per_epoch.index, y=smoothed, mode="lines",
                                 name=f"train return, mean of last {smooth} epochs",
                                 line=dict(color=_TRAIN_COLOR, width=3),
                                 hovertemplate="epoch %{x}<br>smoothed train return %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=tested.index, y=tested.values, mode="lines+markers",
                             name="test return (unseen levels)", line=dict(color=_TEST_COLOR, width=2),
                             marker=dict(size=5),
                             hovertemplate="epoch %{x}<br>test return %{y:.2f}<extra></extra>"))
    for i, (label, value) in enumerate((baselines or {}).items()):
        fig.add_trace(go.Scatter(x=[per_epoch.index.min(), per_epoch.index.max()], y=[value, value],
                                 mode="lines", name=label,
                                 line=dict(color=_BASELINE_COLOR, dash=["dash", "dot", "dashdot"][i % 3]),
                                 hovertemplate=f"{label}: {value:.2f}<extra></extra>"))
    starts = per_epoch.index[per_epoch["round"].diff().fillna(0) > 0]
    for x in starts:
        fig.add_vline(x=x - 0.5, line=dict(color="#555555", dash="dot", width=1.5))
    fig.update_layout(template=TEMPLATE, height=460, xaxis_title="epoch (one epoch = 11 episodes of 100 steps)",
                      yaxis_title="return per episode", margin=dict(l=60, r=20, t=75 if title else 40, b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0),
                      # the title sits just above the plot, below the toolbar (modebar) at the top right
                      title=dict(text=title, x=0, xref="paper", y=1, yref="paper", yanchor="bottom", pad=dict(b=8),
                                 font=dict(size=14)) if title else None)
    return fig


# --------------------------------------------------------------------------------------------------- shifts
def pool_strip(shift: str, seed: int, round: int, rounds: int, pool_size: int,  # noqa: A002
               split: str = "train") -> np.ndarray:
    """Which of the levels ``start … start + rounds·pool_size − 1`` are in play in ``round``, as an int array:
    2 = in this round's pool, 1 = trained on in an earlier round but not now, 0 = not (yet) in any pool.

    ``start`` is the first level of ``seed``'s ``split`` (see :func:`plasticity_lab.shifts.level_range`).
    """
    first = level_range(shift, seed, 1, split, pool_size).start
    strip = np.zeros(rounds * pool_size, dtype=np.int64)
    for r in range(1, round + 1):
        pool = level_range(shift, seed, r, split, pool_size)
        value = 2 if r == round else 1
        lo, hi = pool.start - first, pool.stop - first
        strip[lo:hi] = np.maximum(strip[lo:hi], value) if value == 1 else value
    return strip


def level_pools_figure(seed: int = 0, rounds: int = 10, pool_size: int = 10, split: str = "train",
                       shifts: Sequence[str] = ("permute", "window", "expand")) -> go.Figure:
    """The level pool of every round under each shift: one panel per shift, one bar per round spanning the
    levels ``[lo, hi)`` that round draws from (:func:`plasticity_lab.shifts.level_range`)."""
    fig = make_subplots(rows=len(shifts), cols=1, shared_xaxes=True, vertical_spacing=0.07,
                        subplot_titles=[f"{s}" for s in shifts])
    for i, shift in enumerate(shifts):
        pools = [level_range(shift, seed, r, split, pool_size) for r in range(1, rounds + 1)]
        fig.add_trace(go.Bar(
            y=[f"round {r}" for r in range(1, rounds + 1)], x=[len(p) for p in pools],
            base=[p.start for p in pools], orientation="h", marker_color=SHIFT_COLORS.get(shift, "#333333"),
            name=shift, showlegend=False,
            customdata=[[p.start, p.stop - 1, len(p)] for p in pools],
            hovertemplate=f"{shift}, %{{y}}<br>levels %{{customdata[0]:,}} … %{{customdata[1]:,}}"
                          f"<br>(%{{customdata[2]}} levels)<extra></extra>"), row=i + 1, col=1)
        fig.update_yaxes(autorange="reversed", tickfont_size=10, row=i + 1, col=1)
    start = level_range(shifts[0], seed, 1, split, pool_size).start
    fig.update_xaxes(range=[start - 0.5, start + rounds * pool_size + 0.5])
    fig.update_xaxes(title_text=f"{split} level index", row=len(shifts), col=1)
    fig.update_layout(template=TEMPLATE, height=230 * len(shifts) + 40, bargap=0.25,
                      margin=dict(l=70, r=20, t=40, b=50))
    fig.update_annotations(font_size=13, x=0.0, xanchor="left")
    return fig


def _permuted_channels(level: int, seed: int, round: int) -> np.ndarray:  # noqa: A002
    raw = torch.as_tensor(level_layout(level).observation())
    return observation_grid(apply_mapping(raw, permute_mapping(seed, round)))


def shift_rounds_figure(seed: int = 0, rounds: int = 10, pool_size: int = 10, level: int | None = None,
                        shifts: Sequence[str] = ("permute", "window", "expand")) -> go.Figure:
    """One figure with a slider over rounds, for a reader without a kernel (it works on a static page).

    Top row: the observation of ``level`` (default: ``seed``'s first training level) as the network receives it
    in the chosen round under *permute* — its three channels after the round's mapping σ^r. Bottom: a strip per
    shift over the first ``rounds·pool_size`` training levels: dark = in this round's pool, light = trained on in an
    earlier round, grey = not yet seen. Dragging the slider swaps the data of these four heatmaps (plotly
    ``restyle``; every round is precomputed into the figure).
    """
    level = level_range("permute", seed, 1, "train", pool_size).start if level is None else level
    first = level_range(shifts[0], seed, 1, "train", pool_size).start
    fig = make_subplots(rows=2, cols=3, specs=[[{}, {}, {}], [{"colspan": 3}, None, None]],
                        row_heights=[0.62, 0.38], vertical_spacing=0.14, horizontal_spacing=0.04,
                        subplot_titles=[f"permute — {c} channel" for c in CHANNELS]
                        + ["level pools (training levels) — dark: this round, light: earlier rounds"])

    def frame(r: int):
        obs = _permuted_channels(level, seed, r)
        strip = np.stack([pool_strip(s, seed, r, rounds, pool_size) for s in shifts])
        return [obs[0], obs[1], obs[2], strip]

    z = frame(1)
    for c, channel in enumerate(CHANNELS):
        fig.add_trace(go.Heatmap(z=z[c], zmin=-1, zmax=1, colorscale=_OBS_COLORSCALE, showscale=False,
                                 xgap=1, ygap=1, hovertemplate=_hover_obs("permuted", channel)), row=1, col=c + 1)
    levels_axis = np.arange(first, first + rounds * pool_size)
    fig.add_trace(go.Heatmap(z=z[3], x=levels_axis, y=list(shifts), zmin=0, zmax=2,
                             colorscale=_STRIP_COLORSCALE, showscale=False, xgap=1, ygap=3,
                             hovertemplate="%{y}: level %{x:,}<br>state %{z} (2 = this round, 1 = earlier, "
                                           "0 = not yet)<extra></extra>"), row=2, col=1)
    for i in (1, 2, 3):
        fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, constrain="domain", row=1, col=i)
        fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed",
                         constrain="domain", scaleanchor=f"x{i}" if i > 1 else "x", row=1, col=i)
    fig.update_xaxes(title_text="training level index", row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=2, col=1)

    steps = []
    for r in range(1, rounds + 1):
        z = frame(r)
        steps.append(dict(method="restyle", label=str(r),
                          args=[{"z": [z[0].tolist(), z[1].tolist(), z[2].tolist(), z[3].tolist()]},
                                [0, 1, 2, 3]]))
    fig.update_layout(
        template=TEMPLATE, height=640, margin=dict(l=70, r=20, t=50, b=40),
        sliders=[dict(active=0, steps=steps, x=0.0, len=1.0, y=-0.02, yanchor="top", pad=dict(t=40),
                      currentvalue=dict(prefix="round ", font=dict(size=14)))],
    )
    fig.update_annotations(font_size=12)
    return fig
