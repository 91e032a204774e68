"""The gridworld and its shifts drawn: levels, observations, level pools, and the inputs a network sees.

Chapters 2 and 3 show what an agent is trained on, and how a shift changes it; later chapters evaluate networks on
:func:`random_walk_observations`. Every picture comes from the environment's own code (its level layouts and
``rgb_array`` renderer) and from :mod:`plasticity_lab.shifts` (a round's mapping and level pool), so it shows what
the study trains on, not a re-drawing of it.

* :func:`level_image`, :func:`levels_figure`, :func:`image_grid_figure` — levels drawn as pictures.
* :func:`observation_grid`, :func:`observation_figure` — the 363-d observation as its three 11×11 channels.
* :func:`pool_strip`, :func:`level_pools_figure` — which levels are in the pool in a round, for every shift.
* :func:`shift_rounds_figure` — a figure with a slider over rounds (works on a static page: no kernel needed).
* :func:`random_walk_observations` — inputs to evaluate a network on, as a round presents them.

The figures are plotly figures: self-contained HTML/JSON, so they stay interactive on the book's static pages
(built with ``PLOTLY_RENDERER=plotly_mimetype+notebook``) and in Colab.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..envs.gridworld import DEFAULT_REWARD, GRID_SIZE, N_CHANNELS, OBS_DIM, level_layout, render_rgb
from ..shifts import apply_mapping, level_range, permute_mapping
from .style import SHIFT_COLORS, TEMPLATE

__all__ = [
    "CHANNELS",
    "image_grid_figure",
    "level_image",
    "level_pools_figure",
    "levels_figure",
    "observation_figure",
    "observation_grid",
    "pool_strip",
    "random_walk_observations",
    "shift_rounds_figure",
]

#: Names of the observation's three channels, in order (PROTOCOL §3).
CHANNELS = ("agent", "reward", "wall")
# Observation values: -0.75 (pit) … 0 … 1 (agent, wall), gems +0.75. A diverging scale centred on 0.
_OBS_COLORSCALE = [[0.0, "#b2182b"], [0.5, "#f7f7f7"], [1.0, "#2166ac"]]
# Pool strip values: 0 = never in the pool so far, 1 = trained on in an earlier round only, 2 = in this round's pool.
_STRIP_COLORSCALE = [
    [0.0, "#f2f2f2"], [0.3333, "#f2f2f2"],
    [0.3333, "#9ecae1"], [0.6667, "#9ecae1"],
    [0.6667, "#08519c"], [1.0, "#08519c"],
]


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


def random_walk_observations(levels: Sequence[int], steps: int = 200, seed: int = 0,
                             mapping: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """``steps`` observations ``[steps, 363]`` of a uniformly random walk through ``levels`` (a new level from the
    pool every 100 steps), as the network would receive them: permuted by ``mapping`` if given (see
    :func:`plasticity_lab.shifts.apply_mapping`)."""
    import gymnasium as gym

    from ..envs import GATHER_ENV_ID

    env = gym.make(GATHER_ENV_ID, levels=levels)
    env.action_space.seed(int(seed))
    obs, _ = env.reset(seed=int(seed))
    out = []
    for _ in range(int(steps)):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    batch = torch.as_tensor(np.stack(out))
    return apply_mapping(batch, mapping) if mapping is not None else batch
