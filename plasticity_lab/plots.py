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

Rounds and conditions (tables of several conditions × seeds, e.g. a stored study)

* :func:`study_caption` — the line that says which study, preset and seeds produced a figure.
* :func:`smoothed` — a per-epoch column smoothed inside each run and round (the read-out's smoothing).
* :func:`rounds_curve_figure` — train/test return over all rounds per condition, with a band over seeds.
* :func:`readout_figure` — how the normalised reward is read from one run's curve.
* :func:`normalised_reward_figure` — normalised reward per round, per condition and seed.
* :func:`diagnostics_figure` — the diagnostics over all rounds, with a dropdown menu (works on a static page).
* :func:`after_shift_figure` — the first epochs after a shift against those of round 1.
* :func:`round_separation`, :func:`separation_figure` — per round, how many seed standard deviations apart two
  conditions are in each diagnostic and in normalised reward.
* :func:`ranking_comparison_figure` — two studies' rankings of their conditions against each other.
* :func:`gap_by_scale_figure` — one comparison's gap, with its interval, at several scales (round lengths).

Units

* :func:`unit_scores_figure` — every hidden output's ReDo (dormant) score against the fraction of inputs on which it
  is exactly 0 (:func:`plasticity_lab.demos.unit_scores`).
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

from .analysis import DIAGNOSTICS, normalised_reward, round_readout
from .config import PRESETS
from .envs.gridworld import DEFAULT_REWARD, GRID_SIZE, N_CHANNELS, OBS_DIM, level_layout, render_rgb
from .ppo import clipped_surrogate, gae
from .shifts import SHIFTS, apply_mapping, level_range, permute_mapping

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
    # rounds and conditions
    "BANDS",
    "CONDITION_COLORS",
    "METRIC_LABELS",
    "after_shift_figure",
    "diagnostics_figure",
    "normalised_reward_figure",
    "readout_figure",
    "round_means_figure",
    "round_separation",
    "rounds_curve_figure",
    "separation_figure",
    "shift_separation",
    "smoothed",
    "study_caption",
    "study_curves_figure",
    # conditions compared, regularisers, coefficient sweeps
    "SWEEP_PANELS",
    "coefficient_sweep_figure",
    "condition_summary_figure",
    "regulariser_field_figure",
    "diagnostic_scatter_figure",
    # units
    "unit_scores_figure",
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
                      yaxis_title="return per episode", margin=dict(l=60, r=20, t=_top(title, 40), b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), title=_title(title))
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


# --------------------------------------------------------------------------------------- rounds and conditions
# These figures draw tables from :func:`plasticity_lab.run` (or stored studies read with
# :func:`plasticity_lab.results.read_run`) with several conditions and seeds: one line per condition (the mean over
# seeds) and a band for the spread between seeds. They assume one environment and one shift per table.

#: One colour per condition, the same in every figure of the book; its order is the default order of the
#: conditions in a figure. Other conditions (and coefficient values) take the colours of a fixed palette in order
#: of appearance, skipping those of the conditions shown beside them.
CONDITION_COLORS = {
    "warm_start": "#e6550d", "reset_all": "#3182bd", "reset_final": "#17becf", "shrink_perturb": "#31a354",
    "injection": "#8c564b", "l2": "#e6ab02", "regen_l2": "#e7298a", "regen_w2": "#bcbd22",
    "soft_shrink_perturb": "#756bb1", "redo": "#d62728", "layernorm": "#7f7f7f", "crelu": "#66a61e",
    "soft_shrink_perturb+layernorm": "#000000",
}
_PALETTE = ("#31a354", "#756bb1", "#e7298a", "#66a61e", "#a6761d", "#17becf", "#bcbd22", "#8c564b", "#d62728",
            "#1b9e77", "#e6ab02", "#7f7f7f")
#: Axis labels of the per-epoch columns (a column not listed is labelled with its own name).
METRIC_LABELS = {
    "train_return": "train return",
    "test_return": "test return (unseen levels)",
    "entropy": "policy entropy (nats)",
    "weight_magnitude": "weight magnitude (RMS of all weights)",
    "weight_difference": "weight change per epoch (RMS)",
    "grad_norm": "gradient norm (before clipping)",
    "dead_units": "dead units (fraction of zero activations)",
    "normalised_train_return": "normalised train reward",
    "normalised_test_return": "normalised test reward",
}
#: Ways to draw the spread between seeds: mean ± sample standard deviation, the range, or no band.
BANDS = ("std", "minmax", "none")
_SEED_KEYS = ("env", "shift", "condition", "seed")


def _label(column: str) -> str:
    return METRIC_LABELS.get(column, column.replace("_", " "))


def _condition_colors(conditions: Sequence[str]) -> dict[str, str]:
    taken = {CONDITION_COLORS[c] for c in conditions if c in CONDITION_COLORS}
    free = [c for c in _PALETTE if c not in taken] or list(_PALETTE)
    spare = iter(free * (1 + len(conditions) // len(free)))
    return {c: CONDITION_COLORS.get(c) or next(spare) for c in conditions}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _check_table(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame (a table from plasticity_lab.run), got {type(df).__name__}")
    missing = [c for c in ("condition", "seed", *columns) if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing}; the table has {list(df.columns)}")
    for key in ("env", "shift"):
        if key in df.columns and df[key].nunique() > 1:
            raise ValueError(f"{what} draws one {key} at a time; the table has {sorted(df[key].unique())}: filter it")


def _pick_conditions(df: pd.DataFrame, conditions: Sequence[str] | None) -> list[str]:
    present = list(pd.unique(df["condition"]))
    if conditions is None:  # the conditions with a fixed colour first, in its order; then the table's order
        known = [c for c in CONDITION_COLORS if c in present]
        return known + [c for c in present if c not in known]
    conditions = [conditions] if isinstance(conditions, str) else list(conditions)
    missing = [c for c in conditions if c not in present]
    if missing:
        raise ValueError(f"condition(s) {missing} are not in the table; present: {present}")
    return conditions


def _run_keys(df: pd.DataFrame) -> list[str]:
    return [k for k in _SEED_KEYS if k in df.columns]


def smoothed(df: pd.DataFrame, metric: str, window: int, ffill: bool | None = None) -> pd.Series:
    """``metric`` smoothed by a centred moving average of ``window`` epochs inside each run and round — never
    across a shift — aligned with ``df``'s index.

    At a round's edges the average takes the epochs the round has (``min_periods=1``). Sparse columns (``ffill``,
    default: ``test_return`` only) are first carried forward from each test to the next inside the round, so an
    epoch's value is the round's latest test. This is the smoothing of the normalised-reward read-out
    (:func:`plasticity_lab.analysis.round_readout`): with the read-out's window, the curve passes through its read
    points.
    """
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be at least 1 epoch, got {window}")
    ffill = metric == "test_return" if ffill is None else ffill
    order = df.sort_values([*_run_keys(df), "round", "epoch_in_round"], kind="stable")
    groups = [order[k] for k in (*_run_keys(order), "round")]
    values = order[metric].astype(float)
    if ffill:
        values = values.groupby(groups, sort=False).ffill()
    out = values.groupby(groups, sort=False).transform(lambda s: s.rolling(window, center=True, min_periods=1).mean())
    return out.reindex(df.index)


def _over_seeds(values: pd.DataFrame, x: str, band: str) -> pd.DataFrame:
    """Per ``x``: the mean of ``value`` over seeds and the band's bounds (``lo``, ``hi``)."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")
    g = values.dropna(subset=["value"]).groupby(x, sort=True)["value"]
    out = pd.DataFrame({"mean": g.mean(), "n": g.count()})
    if band == "std":
        std = g.std(ddof=1).fillna(0.0)
        out["lo"], out["hi"] = out["mean"] - std, out["mean"] + std
    elif band == "minmax":
        out["lo"], out["hi"] = g.min(), g.max()
    return out


def _band_and_mean(fig: go.Figure, stats: pd.DataFrame, condition: str, color: str, metric: str, band: str,
                   row: int | None = None, col: int | None = None, showlegend: bool = True, dash: str = "solid",
                   name: str | None = None, hover_x: str = "epoch") -> None:
    """Add a condition's seed band (two traces: upper bound, then lower bound filled up to it) and its mean line."""
    where = {"row": row, "col": col} if row is not None else {}
    x = stats.index.to_numpy(np.float32)  # float32 halves what the page carries; epochs stay exact
    name = name or condition
    if band != "none":
        for bound in ("hi", "lo"):
            fig.add_trace(go.Scatter(
                x=x, y=stats[bound].to_numpy(np.float32), mode="lines", line=dict(width=0, color=color),
                fill="tonexty" if bound == "lo" else None, fillcolor=_rgba(color, 0.18), hoverinfo="skip",
                showlegend=False, legendgroup=name, name=f"{name} ({band} over seeds)",
                meta={"condition": condition, "metric": metric, "role": f"band_{bound}"}), **where)
    fig.add_trace(go.Scatter(
        x=x, y=stats["mean"].to_numpy(np.float32), mode="lines", line=dict(color=color, width=2, dash=dash),
        name=name, legendgroup=name, showlegend=showlegend, customdata=stats["n"].to_numpy(),
        meta={"condition": condition, "metric": metric, "role": "mean"},
        hovertemplate=f"{name}<br>{hover_x} %{{x}}<br>{_label(metric)} %{{y:.3f}}"
                      f"<br>mean of %{{customdata}} seeds<extra></extra>"), **where)


def _shift_lines(fig: go.Figure, df: pd.DataFrame, rows: int | None = None) -> None:
    """Dotted vertical lines at the shifts, in each of ``rows`` stacked panels (None: a figure without subplots)."""
    starts = df.groupby("round")["epoch"].min().sort_index().to_numpy()[1:]
    line = dict(color="#777777", dash="dot", width=1)
    for x in starts:
        if rows is None:
            fig.add_vline(x=float(x) - 0.5, line=line)
        else:
            for r in range(1, rows + 1):
                fig.add_vline(x=float(x) - 0.5, line=line, row=r, col=1)


#: A title line holds about this many characters at the title's 13 px on the book's page (≈ 660 px wide) and takes
#: ``_TITLE_LINE_PX``; the title starts ``_MODEBAR_PX`` below the figure's top edge, under the modebar (the toolbar at
#: the top right).
_TITLE_CHARS, _TITLE_LINE_PX, _MODEBAR_PX = 88, 18, 46


def _wrap(text: str, width: int = _TITLE_CHARS) -> list[str]:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


def _title(title: str | None, above: int = 0) -> dict | None:
    """A figure title at the top left of the figure, under the modebar's row, wrapped (long study captions would
    otherwise run off the figure). It hangs down from the figure's top edge, so whatever sits between it and the
    plot area — subplot titles, a dropdown — has the room that :func:`_top` leaves (``above``: as there)."""
    if not title:
        return None
    return dict(text="<br>".join(_wrap(title)), x=0, xref="container", xanchor="left", y=1, yref="container",
                yanchor="top", pad=dict(l=12, t=_MODEBAR_PX), font=dict(size=13))


def _top(title: str | None, base: int, above: int = 0) -> int:
    """The top margin that fits ``base`` pixels (modebar, menus) plus the wrapped title and ``above`` (e.g. subplot
    titles or a dropdown between the title and the plot area)."""
    return base + above + (len(_wrap(title)) * _TITLE_LINE_PX + _MODEBAR_PX - 20 if title else 0)


def _group_menu(fig: go.Figure, owner: Sequence[str], groups: Sequence[str], label=str,
                axis_title: bool = False, pad: int = 0) -> dict:
    """A dropdown that shows one group of traces at a time: ``owner[i]`` is the group of ``fig.data[i]``; the first
    group starts visible. With ``axis_title`` each entry also sets the y-axis title to its label."""
    for trace, group in zip(fig.data, owner):
        trace.visible = group == groups[0]
    def args(group):
        visible = {"visible": [o == group for o in owner]}
        return [visible, {"yaxis.title.text": label(group)}] if axis_title else [visible]

    buttons = [dict(label=label(g), method="update", args=args(g)) for g in groups]
    return dict(type="dropdown", buttons=buttons, active=0, direction="down", showactive=True,
                x=0, xanchor="left", y=1, yanchor="bottom", pad=dict(b=pad))


def study_caption(source, study: str | None = None) -> str:
    """One line saying which runs produced a figure, for its title or caption — e.g. ``"study:
    gridworld-permute-warm-vs-reset — gridworld, permute; warm_start, reset_all; preset book with its scale
    overridden (10 rounds × 300 epochs, pool 10), 5 seeds (0–4)"`` (runs made before the preset moved to 10 × 200).

    ``source`` is a manifest (the dict :func:`plasticity_lab.results.read_run` returns), several manifests (a list,
    or a mapping name → manifest), or one or more :class:`plasticity_lab.RunConfig` (for a live run). Everything is
    read from the runs' resolved configurations; a setting that differs between runs lists its values joined by
    "/". A preset whose scale (rounds, epochs per round, pool) the runs do not have as
    :data:`plasticity_lab.config.PRESETS` defines it now is said to be overridden, as in
    :meth:`plasticity_lab.results.Results.describe`. ``study`` (e.g. the study folder's name) is put in front.
    """
    if isinstance(source, Mapping) and "configs" in source:
        manifests = [source]
    elif isinstance(source, Mapping):
        manifests = list(source.values())
    else:
        manifests = list(source) if isinstance(source, Sequence) else [source]
    configs = []
    for item in manifests:
        if isinstance(item, Mapping):
            if "configs" not in item:
                raise ValueError("study_caption: a manifest needs its 'configs' (as written by results.write_run)")
            configs.extend(item["configs"])
        elif hasattr(item, "resolved"):
            configs.append(item.resolved().to_dict())
        else:
            raise ValueError(f"study_caption takes manifests or RunConfigs, got {type(item).__name__}")
    if not configs:
        raise ValueError("study_caption: no runs in the source")

    def values(key: str) -> list:
        return list(dict.fromkeys(c[key] for c in configs))

    def joined(key: str) -> str:
        return "/".join(f"{v:,}" if isinstance(v, int) else str(v) for v in values(key))

    seeds = sorted(set(values("seed")))
    contiguous = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
    seed_text = f"{seeds[0]}–{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))
    n = len(seeds)
    scale = f"{joined('rounds')} rounds × {joined('epochs_per_round')} epochs, pool {joined('pool_size')}"
    # Checked against the presets of today: a stored study outlives a preset that moves.
    as_preset = all(PRESETS.get(c["preset"]) == {k: c[k] for k in ("rounds", "epochs_per_round", "pool_size")}
                    for c in configs)
    scale = f"preset {joined('preset')}{'' if as_preset else ' with its scale overridden'} ({scale})"
    text = (f"{joined('env')}, {joined('shift')}; {', '.join(map(str, values('condition')))}; "
            f"{scale}, {n} seed{'s' if n != 1 else ''} ({seed_text})")
    return f"study: {study} — {text}" if study else text


def rounds_curve_figure(df: pd.DataFrame, metrics: Sequence[str] = ("train_return", "test_return"),
                        conditions: Sequence[str] | None = None, smooth: int = 20, band: str = "std",
                        title: str | None = None, panel_height: int = 300) -> go.Figure:
    """Learning curves over all rounds, one panel per metric (default: train and test return), one colour per
    condition: each seed's curve is smoothed (:func:`smoothed`, ``smooth`` epochs, inside each round), then the
    mean over seeds is drawn as a line and the spread between seeds as a band (``band``: ``"std"`` = mean ± sample
    standard deviation, ``"minmax"`` = the range, ``"none"``). Dotted lines mark the shifts.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    _check_table(df, ["round", "epoch", "epoch_in_round", *metrics], "rounds_curve_figure")
    conditions = _pick_conditions(df, conditions)
    colors = _condition_colors(conditions)
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.08 if len(metrics) > 1 else 0)
    for i, metric in enumerate(metrics):
        values = df.assign(value=smoothed(df, metric, smooth))
        for cond in conditions:
            stats = _over_seeds(values[values["condition"] == cond], "epoch", band)
            _band_and_mean(fig, stats, cond, colors[cond], metric, band, row=i + 1, col=1, showlegend=i == 0)
        fig.update_yaxes(title_text=_label(metric), row=i + 1, col=1)
    _shift_lines(fig, df, rows=len(metrics))
    fig.update_xaxes(title_text="epoch (dotted lines: shifts)", row=len(metrics), col=1)
    top = _top(title, 30)
    fig.update_layout(template=TEMPLATE, height=panel_height * len(metrics) + top + 110,
                      margin=dict(l=70, r=20, t=top, b=110), title=_title(title),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def study_curves_figure(curves: pd.DataFrame, metrics: Sequence[str] = ("train_return", "weight_magnitude"),
                        conditions: Sequence[str] | None = None, band: str = "std",
                        title: str | None = None) -> go.Figure:
    """A stored study's curves over all rounds (:attr:`plasticity_lab.results.Results.curves`, which may hold
    several shifts), drawn as :func:`rounds_curve_figure` draws one shift, with a menu that picks the shift. Every
    shift is stored in the figure, so the menu works on a static page.

    The curves are drawn as stored, without further smoothing: each point is already the mean of a block of
    ``epochs_averaged`` epochs (said in the title). ``conditions`` defaults to every condition in the table; one
    absent from a shift is left out of that shift's panels.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    needed = ["shift", "round", "epoch", "epoch_in_round", *metrics]
    _check_table(curves.drop(columns="shift", errors="ignore"), [c for c in needed if c != "shift"],
                 "study_curves_figure")
    if "shift" not in curves.columns:
        raise ValueError(f"study_curves_figure needs a 'shift' column (a stored study's curves table); "
                         f"the table has {list(curves.columns)}")
    if "env" in curves.columns and curves["env"].nunique() > 1:
        raise ValueError(f"study_curves_figure draws one env at a time; the table has "
                         f"{sorted(curves['env'].unique())}: filter it")
    conditions = _pick_conditions(curves, conditions)
    shifts = _shifts_in_order(curves)
    blocks = sorted({int(b) for b in curves["epochs_averaged"].dropna()}) if "epochs_averaged" in curves else []
    if blocks:
        what = "each point: the mean of a block of " + "/".join(map(str, blocks)) + " epoch(s)"
        title = f"{title} — {what}" if title else what
    fig, owner = None, []
    for shift in shifts:
        part = curves[curves["shift"] == shift]
        present = [c for c in conditions if c in set(part["condition"])]
        one = rounds_curve_figure(part, metrics=metrics, conditions=present, smooth=1, band=band, title=title)
        for trace in one.data:
            trace.meta = {**trace.meta, "shift": shift}
        if fig is None:
            fig = one
        else:
            fig.add_traces(list(one.data))
        owner += [shift] * len(one.data)
    top = fig.layout.margin.t + 40
    fig.update_layout(margin=dict(t=top), height=fig.layout.height + 40,
                      updatemenus=[_group_menu(fig, owner, shifts, pad=top - 40)])
    return fig


def _normalised(df: pd.DataFrame, window: int | None, offset: int | None) -> pd.DataFrame:
    """The per run × round normalised reward: computed from a per-epoch table, or taken as given."""
    if "epoch_in_round" in df.columns:
        keep = [c for c in df.columns if not c.startswith("normalised_")]  # recomputed, never read back
        return normalised_reward(df[keep], window=window, offset=offset)
    if window is not None or offset is not None:
        raise ValueError("window/offset apply to a per-epoch table; this table is already normalised")
    return df


def normalised_reward_figure(df: pd.DataFrame, splits: Sequence[str] = ("train", "test"),
                             conditions: Sequence[str] | None = None, window: int | None = None,
                             offset: int | None = None, title: str | None = None) -> go.Figure:
    """Normalised reward per round (PROTOCOL §5), one panel per split, one colour per condition: a dot per seed
    and a line through the mean over seeds. Round 1 is 0 by construction; below 0 = worse than after round 1.

    ``df`` is a per-epoch table (the normalised reward is then computed with
    :func:`plasticity_lab.analysis.normalised_reward`, ``window``/``offset`` passed on, any stored
    ``normalised_*`` column ignored) or that function's output.
    """
    splits = [splits] if isinstance(splits, str) else list(splits)
    nr = _normalised(df, window, offset)
    columns = [f"normalised_{s}_return" for s in splits]
    _check_table(nr, ["round", *columns], "normalised_reward_figure")
    conditions = _pick_conditions(nr, conditions)
    colors = _condition_colors(conditions)
    fig = make_subplots(rows=1, cols=len(splits), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[_label(c) for c in columns])
    nudge = 0.08
    for j, column in enumerate(columns):
        for k, cond in enumerate(conditions):
            part = nr[nr["condition"] == cond].dropna(subset=[column])
            dx = (k - (len(conditions) - 1) / 2) * nudge
            fig.add_trace(go.Scatter(
                x=part["round"] + dx, y=part[column].to_numpy(np.float32), mode="markers",
                marker=dict(color=colors[cond], size=6, opacity=0.45), name=f"{cond}, one seed",
                legendgroup=cond, showlegend=False, customdata=part["seed"].to_numpy(),
                meta={"condition": cond, "metric": column, "role": "seed"},
                hovertemplate=f"{cond}, seed %{{customdata}}<br>round %{{x:.0f}}<br>%{{y:.3f}}<extra></extra>"),
                row=1, col=j + 1)
            mean = part.groupby("round")[column].mean()
            fig.add_trace(go.Scatter(
                x=mean.index.to_numpy() + dx, y=mean.to_numpy(np.float32), mode="lines+markers",
                line=dict(color=colors[cond], width=2.5), marker=dict(size=8), name=cond, legendgroup=cond,
                showlegend=j == 0, meta={"condition": cond, "metric": column, "role": "mean"},
                hovertemplate=f"{cond}: mean over seeds<br>round %{{x:.0f}}<br>%{{y:.3f}}<extra></extra>"),
                row=1, col=j + 1)
        fig.add_hline(y=0, line=dict(color="#777777", width=1, dash="dot"), row=1, col=j + 1)
        fig.update_xaxes(title_text="round", dtick=1, row=1, col=j + 1)
    fig.update_yaxes(title_text="normalised reward (round r − round 1)", row=1, col=1)
    top = _top(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=380 + top, margin=dict(l=70, r=20, t=top, b=90),
                      title=_title(title, above=30),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def readout_figure(df: pd.DataFrame, condition: str | None = None, seed: int | None = None,
                   metric: str = "train_return", window: int | None = None, offset: int | None = None,
                   title: str | None = None) -> go.Figure:
    """How the normalised reward is read from one run's curve (PROTOCOL §5).

    Faint: ``metric`` per epoch; bold: the curve smoothed inside each round (:func:`smoothed`); diamonds: the
    read-outs of :func:`plasticity_lab.analysis.round_readout` (``offset`` epochs before each shift and before the
    end); dashed: round 1's read-out. The normalised reward of round r is the height of its diamond above the
    dashed line (hover). ``condition``/``seed`` pick the run (default: the table's first).
    """
    _check_table(df, ["round", "epoch", "epoch_in_round", metric], "readout_figure")
    condition = df["condition"].iloc[0] if condition is None else condition
    seed = int(df.loc[df["condition"] == condition, "seed"].iloc[0]) if seed is None else seed
    run = df[(df["condition"] == condition) & (df["seed"] == seed)]
    if run.empty:
        raise ValueError(f"no run with condition={condition!r} and seed={seed!r} in the table")
    run = run.drop(columns=[c for c in run.columns if c.startswith("normalised_")]).sort_values("epoch")
    reads = round_readout(run, metric, window=window, offset=offset)
    window, offset = reads.attrs["window"], reads.attrs["offset"]
    read_epoch = reads.attrs["read_epoch"]
    first = run.groupby("round")["epoch"].min()
    x_read = reads["round"].map(first).to_numpy() + read_epoch
    base = float(reads.loc[reads["round"] == 1, metric].iloc[0])
    color = _condition_colors([condition])[condition]
    raw = run.dropna(subset=[metric])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=raw["epoch"], y=raw[metric].to_numpy(np.float32), mode="lines",
                             line=dict(color=color, width=1), opacity=0.3, name=f"{_label(metric)}, per epoch",
                             meta={"role": "raw"}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=run["epoch"], y=smoothed(run, metric, window).to_numpy(np.float32), mode="lines",
                             line=dict(color=color, width=2.5), name=f"centred mean over {window} epochs",
                             meta={"role": "smoothed"},
                             hovertemplate="epoch %{x}<br>smoothed %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x_read, y=reads[metric].to_numpy(np.float32), mode="markers",
                             marker=dict(symbol="diamond", size=11, color="#222222"),
                             name=f"read-out, {offset} epochs before each shift",
                             customdata=np.stack([reads["round"], reads[metric] - base], axis=1),
                             meta={"role": "readout"},
                             hovertemplate="round %{customdata[0]:.0f}: read-out %{y:.3f}<br>normalised reward "
                                           "%{customdata[1]:+.3f}<extra></extra>"))
    fig.add_hline(y=base, line=dict(color="#222222", dash="dash", width=1.2))
    _shift_lines(fig, run)
    top = _top(title, 30)
    fig.update_layout(template=TEMPLATE, height=390 + top, xaxis_title="epoch (dotted lines: shifts)",
                      yaxis_title=_label(metric), title=_title(title),
                      margin=dict(l=70, r=20, t=top, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def diagnostics_figure(df: pd.DataFrame, metrics: Sequence[str] | None = None,
                       conditions: Sequence[str] | None = None, smooth: int = 20, band: str = "std",
                       title: str | None = None) -> go.Figure:
    """The diagnostics over all rounds, with a dropdown menu that picks which one is shown — it works on a static
    page (every diagnostic is stored in the figure; the menu only switches which traces are visible).

    ``metrics`` defaults to the five diagnostics of PROTOCOL §5 (any per-epoch column can be added, e.g.
    ``train_return``). Each is drawn as in :func:`rounds_curve_figure`: per condition, the mean over seeds of the
    smoothed curves and a band for the spread between seeds; dotted lines mark the shifts.
    """
    metrics = list(DIAGNOSTICS) if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    if not metrics:
        raise ValueError("diagnostics_figure needs at least one metric")
    _check_table(df, ["round", "epoch", "epoch_in_round", *metrics], "diagnostics_figure")
    conditions = _pick_conditions(df, conditions)
    colors = _condition_colors(conditions)
    fig = go.Figure()
    owner = []  # the metric each trace belongs to
    for metric in metrics:
        values = df.assign(value=smoothed(df, metric, smooth))
        for cond in conditions:
            before = len(fig.data)
            _band_and_mean(fig, _over_seeds(values[values["condition"] == cond], "epoch", band), cond,
                           colors[cond], metric, band)
            owner += [metric] * (len(fig.data) - before)
    _shift_lines(fig, df)
    fig.update_layout(
        template=TEMPLATE, height=440 + _top(title, 70), xaxis_title="epoch (dotted lines: shifts)",
        yaxis_title=_label(metrics[0]), title=_title(title), margin=dict(l=70, r=20, t=_top(title, 70), b=90),
        legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0),
        updatemenus=[_group_menu(fig, owner, metrics, _label, axis_title=True, pad=_top(title, 8))])
    return fig


def after_shift_figure(df: pd.DataFrame, metrics: Sequence[str] = ("entropy", "train_return"), first: int = 30,
                       conditions: Sequence[str] | None = None, band: str = "std",
                       title: str | None = None) -> go.Figure:
    """The first ``first`` epochs of a round, one panel per metric: solid, the mean over rounds 2…R (the rounds
    that begin with a shift); dashed, round 1 (every network fresh). Per condition and seed the rounds are
    averaged epoch by epoch; then the line is the mean over seeds and the band the spread between seeds. No
    smoothing (sparse columns such as ``test_return`` show the epochs where they were measured).
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    _check_table(df, ["round", "epoch_in_round", *metrics], "after_shift_figure")
    if int(first) < 1:
        raise ValueError(f"first must be at least 1 epoch, got {first}")
    conditions = _pick_conditions(df, conditions)
    colors = _condition_colors(conditions)
    early = df[df["epoch_in_round"] < int(first)]
    keys = _run_keys(early)
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.1,
                        subplot_titles=[_label(m) for m in metrics])
    for j, metric in enumerate(metrics):
        for cond in conditions:
            part = early[early["condition"] == cond]
            for rounds, dash, suffix in ((part["round"] >= 2, "solid", "rounds 2…R"),
                                         (part["round"] == 1, "dash", "round 1")):
                sel = part[rounds]
                if sel.empty:
                    continue
                per_seed = (sel.groupby([*keys, "epoch_in_round"])[metric].mean().rename("value").reset_index())
                _band_and_mean(fig, _over_seeds(per_seed, "epoch_in_round", band), cond, colors[cond], metric,
                               band if dash == "solid" else "none", row=1, col=j + 1, showlegend=j == 0,
                               dash=dash, name=f"{cond}, {suffix}", hover_x="epoch in round")
        fig.update_xaxes(title_text="epochs since the round began", row=1, col=j + 1)
    top = _top(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=360 + top, title=_title(title, above=30),
                      margin=dict(l=60, r=20, t=top, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def round_separation(df: pd.DataFrame, metrics: Sequence[str] | None = None, condition: str = "warm_start",
                     baseline: str = "reset_all", window: int | None = None,
                     offset: int | None = None) -> pd.DataFrame:
    """How far apart two conditions are in each round, in units of the spread between seeds: Cohen's d,
    ``(mean_condition − mean_baseline) / s_pooled`` with ``s_pooled² = ((n₁−1)s₁² + (n₂−1)s₂²) / (n₁+n₂−2)``
    (sample variances over seeds).

    A run's value in a round is the mean over the round's epochs for a per-epoch column (the diagnostics,
    default), and the normalised reward (:func:`plasticity_lab.analysis.normalised_reward`) for
    ``normalised_train_return`` / ``normalised_test_return``. Returns a table indexed by round with one column per
    metric; NaN where either side has fewer than 2 seeds or neither has any spread between seeds (e.g. the
    normalised reward of round 1, which is 0 for every run).
    """
    metrics = list(DIAGNOSTICS) if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    rewards = [m for m in metrics if m.startswith("normalised_")]
    plain = [m for m in metrics if m not in rewards]
    _check_table(df, ["round", "epoch_in_round", *plain], "round_separation")
    _pick_conditions(df, [condition, baseline])
    keys = _run_keys(df)
    per_round = df.groupby([*keys, "round"])[plain].mean().reset_index()
    if rewards:
        nr = _normalised(df, window, offset)
        per_round = per_round.merge(nr[[*keys, "round", *rewards]], on=[*keys, "round"], how="outer")
    return _cohens_d_by_round(per_round, metrics, condition, baseline)


def _cohens_d(x: np.ndarray, y: np.ndarray) -> float:
    """Cohen's d of two samples with the pooled sample standard deviation; NaN below 2 values a side or without
    any spread."""
    if len(x) < 2 or len(y) < 2:
        return np.nan
    pooled = ((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2)
    return (x.mean() - y.mean()) / np.sqrt(pooled) if pooled > 0 else np.nan


def _cohens_d_by_round(per_round: pd.DataFrame, metrics: Sequence[str], condition: str,
                       baseline: str) -> pd.DataFrame:
    """One row per round of ``per_round`` (one row per run × round), one column of Cohen's d per metric."""
    rows = {}
    for round_, g in per_round.groupby("round", sort=True):
        a, b = g[g["condition"] == condition], g[g["condition"] == baseline]
        rows[round_] = {m: _cohens_d(a[m].dropna().to_numpy(float), b[m].dropna().to_numpy(float))
                        for m in metrics}
    out = pd.DataFrame.from_dict(rows, orient="index")[list(metrics)]
    out.index.name = "round"
    out.attrs.update(condition=condition, baseline=baseline)
    return out


def _check_rounds(rounds: pd.DataFrame, metrics: Sequence[str], what: str) -> None:
    if not isinstance(rounds, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame (a stored study's rounds table), "
                         f"got {type(rounds).__name__}")
    missing = [c for c in ("shift", "condition", "seed", "round", *metrics) if c not in rounds.columns]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing} (a stored study's `rounds` table, "
                         f"plasticity_lab.load_results(...).rounds); the table has {list(rounds.columns)}")


def _shifts_in_order(table: pd.DataFrame) -> list[str]:
    """The shifts of a table, in the order of :data:`plasticity_lab.shifts.SHIFTS`, then any others."""
    present = list(pd.unique(table["shift"]))
    return [s for s in SHIFTS if s in present] + [s for s in present if s not in SHIFTS]


def shift_separation(rounds: pd.DataFrame, metrics: Sequence[str] | None = None, condition: str = "warm_start",
                     baseline: str = "reset_all") -> pd.DataFrame:
    """:func:`round_separation` for every shift of a stored study, from its ``rounds`` table (one row per run ×
    round, :attr:`plasticity_lab.results.Results.rounds`): Cohen's d of ``condition`` against ``baseline`` per
    shift and round, on the round means of the diagnostics and on the normalised rewards as stored.

    Returns a table indexed by (shift, round) with one column per metric (default: the five diagnostics and both
    normalised rewards); NaN where either side has fewer than 2 seeds or there is no spread between seeds.
    """
    if metrics is None:
        metrics = [*DIAGNOSTICS, "normalised_train_return", "normalised_test_return"]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    _check_rounds(rounds, metrics, "shift_separation")
    _pick_conditions(rounds, [condition, baseline])
    parts = {shift: _cohens_d_by_round(rounds[rounds["shift"] == shift], metrics, condition, baseline)
             for shift in _shifts_in_order(rounds)}
    out = pd.concat(parts, names=["shift", "round"])
    out.attrs.update(condition=condition, baseline=baseline)
    return out


def round_means_figure(rounds: pd.DataFrame, metrics: Sequence[str] | None = None,
                       conditions: Sequence[str] | None = None, band: str = "std",
                       title: str | None = None) -> go.Figure:
    """Per-round values of a stored study, one panel per shift, with a dropdown menu that picks the metric (it
    works on a static page: every metric is stored in the figure).

    ``rounds`` is a study's ``rounds`` table (:attr:`plasticity_lab.results.Results.rounds`): a diagnostic's value
    in a round is its mean over the round's epochs, a normalised reward its read-out. ``metrics`` defaults to the
    five diagnostics and both normalised rewards. Per condition: the mean over seeds and a band for the spread
    between seeds (``band``: ``std``, ``minmax`` or ``none``).
    """
    if metrics is None:
        metrics = [*DIAGNOSTICS, "normalised_train_return", "normalised_test_return"]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("round_means_figure needs at least one metric")
    _check_rounds(rounds, metrics, "round_means_figure")
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")
    conditions = _pick_conditions(rounds, conditions)
    colors = _condition_colors(conditions)
    shifts = _shifts_in_order(rounds)
    fig = make_subplots(rows=1, cols=len(shifts), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=list(shifts))
    owner = []
    for metric in metrics:
        for j, shift in enumerate(shifts):
            for cond in conditions:
                part = rounds[(rounds["shift"] == shift) & (rounds["condition"] == cond)]
                if part.empty:
                    continue
                before = len(fig.data)
                _band_and_mean(fig, _over_seeds(part.assign(value=part[metric]), "round", band), cond,
                               colors[cond], metric, band, row=1, col=j + 1, showlegend=j == 0,
                               hover_x=f"{shift}, round")
                owner += [metric] * (len(fig.data) - before)
    fig.update_xaxes(dtick=1, title_text="round")
    top = _top(title, 70, above=30)
    fig.update_layout(
        template=TEMPLATE, height=400 + top, yaxis_title=_label(metrics[0]), title=_title(title, above=30),
        margin=dict(l=70, r=20, t=top, b=90),
        legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0),
        updatemenus=[_group_menu(fig, owner, metrics, _label, axis_title=True,
                                 pad=_top(title, 8, above=30))])
    return fig


def separation_figure(df: pd.DataFrame, metrics: Sequence[str] | None = None, condition: str = "warm_start",
                      baseline: str = "reset_all", window: int | None = None, offset: int | None = None,
                      title: str | None = None) -> go.Figure:
    """:func:`round_separation` per round as lines: the diagnostics in the top panel, the normalised rewards in the
    bottom one (their scales differ by an order of magnitude or more).

    ``metrics`` defaults to the five diagnostics and both normalised rewards. Above 0: ``condition`` is higher
    than ``baseline`` in that round; ``|d| = 1`` means the means differ by one (pooled) standard deviation between
    seeds, and the grey band marks ``|d| < 1``.
    """
    if metrics is None:
        metrics = [*DIAGNOSTICS, "normalised_train_return", "normalised_test_return"]
    table = round_separation(df, metrics, condition, baseline, window, offset)
    palette = dict(zip(DIAGNOSTICS, ("#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")))
    reward_colors = {"normalised_train_return": _TRAIN_COLOR, "normalised_test_return": _TEST_COLOR}
    panels = [[m for m in table.columns if m not in reward_colors], [m for m in table.columns if m in reward_colors]]
    panels = [p for p in panels if p]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=["diagnostics" if p[0] not in reward_colors else "normalised reward"
                                        for p in panels])
    for row, names in enumerate(panels, start=1):
        for i, m in enumerate(names):
            color = reward_colors.get(m) or palette.get(m) or _PALETTE[i % len(_PALETTE)]
            fig.add_trace(go.Scatter(
                x=table.index.to_numpy(), y=table[m].to_numpy(np.float64), mode="lines+markers", name=_label(m),
                line=dict(color=color, width=2.5), marker=dict(size=7), meta={"metric": m},
                hovertemplate=f"{_label(m)}<br>round %{{x}}<br>d = %{{y:.2f}}<extra></extra>"), row=row, col=1)
        # after the traces: plotly leaves shapes out of subplots that are still empty
        fig.add_hrect(y0=-1, y1=1, fillcolor="#cccccc", opacity=0.35, line_width=0, layer="below", row=row, col=1)
        fig.add_hline(y=0, line=dict(color="#777777", width=1), row=row, col=1)
        fig.update_yaxes(title_text="Cohen's d", row=row, col=1)
    fig.update_xaxes(dtick=1)
    fig.update_xaxes(title_text=f"round — d = ({condition} − {baseline}) / pooled standard deviation between seeds",
                     row=len(panels), col=1)
    top = _top(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=300 * len(panels) + top + 110, title=_title(title, above=30),
                      margin=dict(l=70, r=20, t=top, b=130),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


# --------------------------------------------------------------------------------------------------------------
# Coefficient sweeps: a static slider over a stored grid of coefficient values
# --------------------------------------------------------------------------------------------------------------

SWEEP_PANELS = (("normalised_train_return", "normalised train reward"), ("weight_magnitude", "weight magnitude"),
                ("dead_units", "dead units"))


def coefficient_sweep_figure(results, slider: str = "perturb", lines: str = "shrink",
                             panels: Sequence[tuple[str, str]] = SWEEP_PANELS, title: str | None = None) -> go.Figure:
    """Per-round results of a stored coefficient sweep, with a plotly **slider** over one coefficient (works on a
    static page: every value's traces are in the figure, the slider shows one value's).

    ``results`` is a :class:`~plasticity_lab.results.Results` of a sweep over (at least) the coefficients named
    by ``slider`` and ``lines``; each panel shows one column of ``results.rounds`` per round, as the mean over
    seeds, with one line per value of ``lines``.
    """
    params = results.condition_params()
    for name in (slider, lines):
        if name not in params.columns:
            raise ValueError(f"the study does not sweep {name!r}; its coefficients: "
                             f"{', '.join(c for c in params.columns if c not in ('condition', 'base_condition'))}")
    rounds = results.rounds.merge(params[["condition", slider, lines]], on="condition")
    for column, _ in panels:
        _check_table(rounds, [column], "coefficient_sweep_figure")
    means = rounds.groupby([slider, lines, "round"])[[c for c, _ in panels]].mean().reset_index()
    slider_values = sorted(means[slider].unique())
    line_values = sorted(means[lines].unique())
    colors = _condition_colors([f"{lines}={v:g}" for v in line_values])
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[label for _, label in panels])
    for s_value in slider_values:
        for l_value in line_values:
            part = means[(means[slider] == s_value) & (means[lines] == l_value)]
            name = f"{lines}={l_value:g}"
            for row, (column, label) in enumerate(panels, start=1):
                fig.add_trace(go.Scatter(
                    x=part["round"], y=part[column], mode="lines+markers", name=name, legendgroup=name,
                    showlegend=row == 1, visible=bool(s_value == slider_values[0]),
                    line={"color": colors[name]},
                    hovertemplate=f"{slider}={s_value:g}, {name}<br>round %{{x}}: %{{y:.3f}}<extra>{label}</extra>"),
                    row=row, col=1)
    per_value = len(line_values) * len(panels)
    steps = []
    for i, s_value in enumerate(slider_values):
        visible = [False] * len(fig.data)
        visible[i * per_value:(i + 1) * per_value] = [True] * per_value
        steps.append({"method": "update", "label": f"{s_value:g}", "args": [{"visible": visible}]})
    fig.update_layout(
        sliders=[{"active": 0, "currentvalue": {"prefix": f"{slider} = "}, "pad": {"t": 40}, "steps": steps}],
        template=TEMPLATE, height=260 * len(panels) + 60 + _top(title, 60, 10),
        margin={"t": _top(title, 60, 10)}, title=_title(title, above=10),
        legend={"title": {"text": lines}})
    fig.update_xaxes(title_text="round", row=len(panels), col=1)
    return fig


# --------------------------------------------------------------------------------------------------------------
# Conditions compared, and the regularisers' fields (plasticity_lab.demos computes what these draw)
# --------------------------------------------------------------------------------------------------------------


def condition_summary_figure(runs: pd.DataFrame, conditions: Sequence[str] | None = None,
                             title: str | None = None):
    """Each run's normalised reward summarised over rounds (a stored study's ``runs(at)`` table, or
    :func:`plasticity_lab.analysis.run_summary`): one dot per seed and a bar for the mean over seeds, one column
    of panels per shift, train (top) and test (bottom), one colour per condition."""
    needed = ["shift", "condition", "seed", "normalised_train_return", "normalised_test_return"]
    missing = [c for c in needed if c not in runs.columns]
    if missing:
        raise ValueError(f"condition_summary_figure needs column(s) {missing}; the table has {list(runs.columns)}")
    present = list(pd.unique(runs["condition"]))
    conditions = present if conditions is None else [c for c in conditions if c in present]
    if not conditions:
        raise ValueError(f"none of the conditions are in the table; present: {present}")
    shifts = list(pd.unique(runs["shift"]))
    colors = _condition_colors(conditions)
    at = runs.attrs.get("at", "mean")
    what = "mean over rounds 2..R" if at == "mean" else "last round"
    fig = make_subplots(rows=2, cols=len(shifts), shared_yaxes="rows", horizontal_spacing=0.04,
                        vertical_spacing=0.1, subplot_titles=[f"{s}, train" for s in shifts] +
                        [f"{s}, test" for s in shifts])
    for j, shift in enumerate(shifts):
        for i, split in enumerate(("train", "test")):
            column = f"normalised_{split}_return"
            for k, cond in enumerate(conditions):
                part = runs[(runs["shift"] == shift) & (runs["condition"] == cond)].dropna(subset=[column])
                if part.empty:
                    continue
                first = i == 0 and j == 0
                fig.add_trace(go.Bar(x=[k], y=[float(part[column].mean())], marker_color=colors[cond],
                                     opacity=0.35, name=cond, legendgroup=cond, showlegend=first,
                                     hovertemplate=f"{cond}, {shift}, {split}<br>mean over seeds %{{y:.3f}}"
                                                   "<extra></extra>"), row=i + 1, col=j + 1)
                fig.add_trace(go.Scatter(x=np.full(len(part), k, dtype=float), y=part[column].to_numpy(np.float32),
                                         mode="markers", marker=dict(color=colors[cond], size=7),
                                         customdata=part["seed"].to_numpy(), legendgroup=cond, showlegend=False,
                                         hovertemplate=f"{cond}, seed %{{customdata}}<br>%{{y:.3f}}<extra></extra>"),
                              row=i + 1, col=j + 1)
            fig.add_hline(y=0, line=dict(color="#777777", width=1, dash="dot"), row=i + 1, col=j + 1)
            fig.update_xaxes(tickvals=list(range(len(conditions))), ticktext=conditions, tickangle=-45,
                             showticklabels=i == 1, row=i + 1, col=j + 1)
        fig.update_yaxes(title_text=f"normalised reward<br>({what})", row=1, col=1)
        fig.update_yaxes(title_text=f"normalised reward<br>({what})", row=2, col=1)
    top = _top(title, 60)
    fig.update_layout(template=TEMPLATE, height=700 + top, margin=dict(l=80, r=20, t=top, b=170), barmode="overlay",
                      title=_title(title),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def regulariser_field_figure(field: pd.DataFrame, theta0: Sequence[float]):
    """:func:`plasticity_lab.demos.regulariser_field` drawn: one panel per regulariser, the quantity it reduces as a contour map and its
    direction as arrows (each panel's arrows scaled to its longest, so the *lengths* compare within a panel only);
    the star marks θ₀ and, in the Wasserstein-2 panel, the diamond its mirror image (θ₀ with its two values
    swapped)."""
    titles = {"l2": "L2 (weight decay): toward 0", "regen_l2": "regenerative L2: toward θ₀",
              "regen_w2": "Wasserstein-2: toward θ₀ or its mirror"}
    names = [n for n in titles if n in set(field["regulariser"])]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[titles[n] for n in names],
                        horizontal_spacing=0.06)
    x0, y0 = (float(v) for v in theta0)
    for j, name in enumerate(names):
        part = field[field["regulariser"] == name]
        xs, ys = np.sort(part["x"].unique()), np.sort(part["y"].unique())
        z = part.pivot(index="y", columns="x", values="value").loc[ys, xs].to_numpy()
        fig.add_trace(go.Contour(x=xs, y=ys, z=z, colorscale="Blues", reversescale=True, showscale=False,
                                 contours=dict(showlabels=True, labelfont=dict(size=9)), opacity=0.6,
                                 line=dict(smoothing=1.3),
                                 hovertemplate="θ = (%{x:.2f}, %{y:.2f})<br>value %{z:.3f}<extra></extra>"),
                      row=1, col=j + 1)
        length = np.hypot(part["dx"], part["dy"]).max()
        spacing = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
        scale = 0.8 * spacing / length if length > 0 else 0.0
        ex, ey = part["x"] + scale * part["dx"], part["y"] + scale * part["dy"]
        nan = np.full(len(part), np.nan)
        line_x = np.column_stack([part["x"], ex, nan]).ravel()
        line_y = np.column_stack([part["y"], ey, nan]).ravel()
        head = np.tile([0, 7, 0], len(part))  # an arrowhead at the end of each segment only
        fig.add_trace(go.Scatter(x=line_x, y=line_y, mode="lines+markers", line=dict(color="#222222", width=1.2),
                                 marker=dict(symbol="arrow", angleref="previous", size=head, color="#222222"),
                                 hoverinfo="skip", showlegend=False), row=1, col=j + 1)
        fig.add_trace(go.Scatter(x=[x0], y=[y0], mode="markers", marker=dict(symbol="star", size=14, color="#d62728"),
                                 name="θ₀", showlegend=j == 0, hovertemplate="θ₀<extra></extra>"), row=1, col=j + 1)
        if name == "regen_w2":
            fig.add_trace(go.Scatter(x=[y0], y=[x0], mode="markers",
                                     marker=dict(symbol="diamond", size=11, color="#d62728"),
                                     name="θ₀ mirrored (values swapped)",
                                     hovertemplate="(θ₀[1], θ₀[0])<extra></extra>"),
                          row=1, col=j + 1)
        fig.update_xaxes(title_text="θ[0]", row=1, col=j + 1)
        fig.update_yaxes(title_text="θ[1]" if j == 0 else None, row=1, col=j + 1)
    fig.update_layout(template=TEMPLATE, height=430, margin=dict(l=60, r=20, t=60, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


# --------------------------------------------------------------------------------------------------------------
# Units: dormant scores against dead units (plasticity_lab.demos.unit_scores computes what this draws)
# --------------------------------------------------------------------------------------------------------------


def unit_scores_figure(scores: pd.DataFrame, tau: float = 0.025, by: str | None = "network", floor: float = 1e-3,
                       title: str | None = None) -> go.Figure:
    """Every hidden output of :func:`plasticity_lab.demos.unit_scores` as one dot: the fraction of the inputs on
    which it is exactly 0 (x; its share in the dead-units diagnostic) against its ReDo score (y, log scale), one
    panel per encoder block, one colour per value of the column ``by`` (e.g. fresh and trained networks).

    Outputs with a score below ``floor`` — in practice those that are 0 on every input, score exactly 0 — are
    drawn at ``floor`` (the hover text gives the true score). The dashed line is ReDo's threshold ``tau``: every
    dot on or below it is dormant; the panel titles count them.
    """
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
    top = _top(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=460 + top, title=_title(title, above=30), margin=dict(l=80, r=20, t=top, b=110),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def diagnostic_scatter_figure(points: pd.DataFrame, split: str = "train", diagnostics: Sequence[str] = DIAGNOSTICS,
                              title: str | None = None) -> go.Figure:
    """Normalised reward against each diagnostic, one point per row of ``points`` (e.g. shift × condition means
    of a run summary), with its least-squares line; a **dropdown** picks the diagnostic (it works on a static
    page: every diagnostic's traces are in the figure). The legend entry gives R² and Pearson p."""
    from scipy import stats

    y_column = f"normalised_{split}_return"
    missing = [c for c in (y_column, *diagnostics) if c not in points.columns]
    if missing:
        raise ValueError(f"diagnostic_scatter_figure needs column(s) {missing}; the table has {list(points.columns)}")
    label = points["condition"].astype(str) if "condition" in points.columns else pd.Series([""] * len(points))
    if "shift" in points.columns:
        label = points["shift"].astype(str) + ", " + label
    fig = go.Figure()
    for i, diagnostic in enumerate(diagnostics):
        data = points[[diagnostic, y_column]].assign(label=label).dropna()
        x, y = data[diagnostic].to_numpy(float), data[y_column].to_numpy(float)
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", text=data["label"], visible=i == 0, name="points",
                                 marker={"size": 9}, hovertemplate="%{text}<br>x %{x:.4g}, y %{y:.3f}<extra></extra>"))
        if len(x) >= 3 and np.ptp(x) > 0:
            fit = stats.linregress(x, y)
            xs = np.linspace(x.min(), x.max(), 2)
            name = f"fit: R² = {fit.rvalue ** 2:.2f}, p = {fit.pvalue:.2g}"
            fig.add_trace(go.Scatter(x=xs, y=fit.intercept + fit.slope * xs, mode="lines", visible=i == 0,
                                     name=name, line={"color": "black", "dash": "dash"}))
        else:
            fig.add_trace(go.Scatter(x=[], y=[], visible=i == 0, name="fit: too few points"))
    buttons = []
    for i, diagnostic in enumerate(diagnostics):
        visible = [False] * len(fig.data)
        visible[2 * i:2 * i + 2] = [True, True]
        buttons.append({"label": METRIC_LABELS.get(diagnostic, diagnostic), "method": "update",
                        "args": [{"visible": visible}, {"xaxis": {"title": {"text": diagnostic}}}]})
    fig.update_layout(updatemenus=[{"buttons": buttons, "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom"}],
                      template=TEMPLATE, height=480, margin={"t": _top(title, 60, 40)}, title=_title(title, above=40),
                      xaxis_title=diagnostics[0], yaxis_title=f"normalised {split} reward")
    return fig


def ranking_comparison_figure(first: pd.DataFrame, second: pd.DataFrame, labels: Sequence[str] = ("first", "second"),
                              title: str | None = None) -> go.Figure:
    """Two studies' :func:`plasticity_lab.analysis.condition_ranking` tables against each other: one dot per
    condition both contain, at its mean normalised reward (train and test pooled) in the first study (x) and in
    the second (y). On the dashed diagonal a condition did equally well in both; the two orders agree where the
    dots rise from left to right (:func:`plasticity_lab.analysis.ranking_agreement` puts a number on it)."""
    for name, table in (("first", first), ("second", second)):
        missing = [c for c in ("condition", "mean", "rank") if not isinstance(table, pd.DataFrame)
                   or c not in table.columns]
        if missing:
            raise ValueError(f"ranking_comparison_figure needs condition_ranking tables; the {name} lacks {missing}")
    if len(labels) != 2:
        raise ValueError(f"labels must name the two studies; got {list(labels)}")
    both = first.merge(second, on="condition", suffixes=("_first", "_second"))
    if both.empty:
        raise ValueError("the two rankings share no condition")
    colors = _condition_colors(list(both["condition"]))
    fig = go.Figure()
    for row in both.itertuples():
        fig.add_trace(go.Scatter(
            x=[row.mean_first], y=[row.mean_second], mode="markers+text", text=[row.condition],
            textposition="top center", textfont={"size": 10}, marker={"size": 10, "color": colors[row.condition]},
            name=row.condition, showlegend=False,
            hovertemplate=(f"{row.condition}<br>{labels[0]}: %{{x:+.3f}} (rank {row.rank_first})<br>"
                           f"{labels[1]}: %{{y:+.3f}} (rank {row.rank_second})<extra></extra>")))
    low = float(min(both["mean_first"].min(), both["mean_second"].min()))
    high = float(max(both["mean_first"].max(), both["mean_second"].max()))
    pad = 0.05 * (high - low or 1.0)
    fig.add_trace(go.Scatter(x=[low - pad, high + pad], y=[low - pad, high + pad], mode="lines", showlegend=False,
                             line={"color": _BASELINE_COLOR, "dash": "dash", "width": 1}, hoverinfo="skip"))
    fig.update_layout(template=TEMPLATE, height=560, margin={"t": _top(title, 40)}, title=_title(title),
                      xaxis_title=f"mean normalised reward: {labels[0]}",
                      yaxis_title=f"mean normalised reward: {labels[1]}")
    return fig


def gap_by_scale_figure(table: pd.DataFrame, scale_label: str = "epochs per round", title: str | None = None
                        ) -> go.Figure:
    """:func:`plasticity_lab.analysis.gap_by_scale` drawn: per split (left: train, right: test), the gap in mean
    normalised reward between the condition and its baseline at each scale, with its confidence interval; one
    colour per shift. A filled marker is a gap significant at the 5 % level; below the dotted line the condition
    did worse than its baseline."""
    needed = ["scale", "shift", "split", "gap", "ci_low", "ci_high", "p", "effect_size"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"gap_by_scale_figure needs gap_by_scale's table; missing column(s) {missing}")
    condition, baseline = table.attrs.get("condition", "condition"), table.attrs.get("baseline", "baseline")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=["train", "test on unseen levels"])
    shifts = list(pd.unique(table["shift"]))
    for k, shift in enumerate(shifts):
        color = _PALETTE[k % len(_PALETTE)]
        for col, split in enumerate(("train", "test"), start=1):
            part = table[(table["shift"] == shift) & (table["split"] == split)]
            significant = (part["p"] < 0.05).to_numpy()
            fig.add_trace(go.Scatter(
                x=part["scale"].astype(str), y=part["gap"],
                error_y=dict(type="data", symmetric=False, array=part["ci_high"] - part["gap"],
                             arrayminus=part["gap"] - part["ci_low"], color=color),
                mode="markers", name=shift, legendgroup=shift, showlegend=col == 1 and len(shifts) > 1,
                marker=dict(size=11, color=[color if s else "white" for s in significant],
                            line=dict(color=color, width=2)),
                customdata=np.column_stack([part["p"], part["effect_size"], part["ci_low"], part["ci_high"]]),
                hovertemplate=(f"{shift}, {split}, {scale_label} %{{x}}<br>{condition} − {baseline}: %{{y:+.3f}} "
                               "[%{customdata[2]:+.3f}, %{customdata[3]:+.3f}]<br>p = %{customdata[0]:.3f}, "
                               "d = %{customdata[1]:.2f}<extra></extra>")), row=1, col=col)
            fig.add_hline(y=0, line=dict(color=_BASELINE_COLOR, width=1, dash="dot"), row=1, col=col)
            fig.update_xaxes(title_text=scale_label, type="category", row=1, col=col)
    fig.update_yaxes(title_text=f"{condition} − {baseline}<br>mean normalised reward", row=1, col=1)
    fig.update_layout(template=TEMPLATE, height=440, margin={"t": _top(title, 50, 20)}, title=_title(title, above=20))
    return fig
