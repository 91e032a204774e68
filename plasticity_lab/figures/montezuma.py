"""Montezuma's Revenge drawn: the game, the frames its agent sees, what random network distillation rewards, and a
stored study's curves.

Every picture comes from the game itself (:class:`plasticity_lab.envs.montezuma.MontezumaEmulators`) and every
number from the package's RND code (:class:`plasticity_lab.rnd.RNDNetworks`) or from a stored study. Needs ale-py.

* :func:`game_figure` — the console's screen and the four stacked 84×84 frames the network is given.
* :func:`room_frames` — frames of the start room the player walks around, and of rooms it has not reached.
* :func:`novelty_trace` / :func:`novelty_figure` — RND's intrinsic reward while its predictor learns the start room:
  it falls on the start room's frames, seen or not, and stays high on the rooms never seen.
* :func:`study_curves_figure` — a stored Montezuma study's score, curiosity, rooms and diagnostics over agent steps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..envs.montezuma import MontezumaEmulators
from ..rnd import RNDConfig, RNDNetworks
from .environment import image_grid_figure
from .style import TEMPLATE, condition_colors, rgba

__all__ = ["game_figure", "novelty_figure", "novelty_trace", "room_frames", "study_curves_figure"]


def _walk(env: MontezumaEmulators, steps: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = []
    for _ in range(steps):
        obs, _, _ = env.step(torch.randint(0, env.n_actions, (env.members, env.copies), generator=generator))
        frames.append(obs)
    return frames


def game_figure(seed: int = 0, steps: int = 30) -> go.Figure:
    """One game after ``steps`` random steps: the screen as a player sees it (210×160, colour) and the agent's
    observation, four grayscale 84×84 frames, the oldest first (each one step, 4 emulator frames, apart)."""
    env = MontezumaEmulators([seed], 1)
    env.reset()
    obs = _walk(env, steps, seed)[-1][0, 0].numpy()
    images = {"the screen (210 × 160)": env.screen_rgb()}
    for k in range(obs.shape[0]):
        images[f"frame t−{obs.shape[0] - 1 - k} (84 × 84)" if k < obs.shape[0] - 1 else "frame t (84 × 84)"] = (
            np.repeat(obs[k][..., None], 3, axis=2))
    env.close()
    return image_grid_figure(images, cols=5, panel_px=150,
                             title=f"Montezuma's Revenge after {steps} random steps: what a player sees, and what "
                                   "the agent is given")


def room_frames(seed: int = 0, walk: int = 256, rooms: Sequence[int] = (0, 4, 5, 6, 7, 10, 11, 12)
                ) -> dict[str, torch.Tensor]:
    """Observations ``[N, 4, 84, 84]`` uint8 of three kinds: ``"start room, seen"`` and ``"start room, unseen"`` —
    two random walks in the start room (room 1) from different seeds — and ``"rooms never reached"``, one per
    room of ``rooms``, the player put there by writing the room byte
    (:meth:`~plasticity_lab.envs.montezuma.MontezumaEmulators.move_to_room`) and the game left to draw it."""
    out = {}
    for name, s in (("start room, seen", seed), ("start room, unseen", seed + 1)):
        env = MontezumaEmulators([s], 2)
        env.reset()
        out[name] = torch.cat([f[0] for f in _walk(env, walk // 2, s)])
    env = MontezumaEmulators([seed], len(rooms))
    env.reset()
    for copy, room in enumerate(rooms):
        env.move_to_room(room, copy=copy)
    noop = torch.zeros(1, len(rooms), dtype=torch.long)
    for _ in range(4):  # a full frame stack of the new room
        obs = env.step(noop)[0]
    out["rooms never reached"] = obs[0]
    return out


def novelty_trace(frames: dict[str, torch.Tensor], updates: int = 60, seed: int = 0,
                  config: RNDConfig = RNDConfig()) -> pd.DataFrame:
    """RND's intrinsic reward (the predictor's error on a frame, :meth:`~plasticity_lab.rnd.RNDNetworks.
    intrinsic_reward`) for each kind of ``frames`` while its predictor learns the first kind: ``updates`` Adam
    steps at the agent's learning rate on minibatches of those frames, the observation statistics taken from
    them first. Returns one row per update (0: before any) and kind: ``update``, ``kind``, ``reward`` (the mean
    over the kind's frames)."""
    torch.manual_seed(seed)
    rnd = RNDNetworks([seed], config)
    kinds = list(frames)
    trained = frames[kinds[0]][None]  # [1, N, 4, 84, 84]
    rnd.update_obs_stats(trained)
    optimizer = torch.optim.Adam(list(rnd.predictor_params.values()), lr=config.lr * 10)
    draws = torch.Generator().manual_seed(seed)
    rows = []
    for update in range(updates + 1):
        with torch.no_grad():
            for kind in kinds:
                reward = rnd.intrinsic_reward(frames[kind][None]).mean().item()
                rows.append({"update": update, "kind": kind, "reward": reward})
        if update < updates:
            picked = torch.randint(0, trained.shape[1], (64,), generator=draws)
            optimizer.zero_grad()
            rnd.predictor_loss(trained[:, picked], draws).sum().backward()
            optimizer.step()
    return pd.DataFrame(rows)


def novelty_figure(trace: pd.DataFrame) -> go.Figure:
    """:func:`novelty_trace` drawn: each kind's mean intrinsic reward against the predictor's updates."""
    fig = go.Figure()
    colours = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd"]
    for colour, (kind, part) in zip(colours, trace.groupby("kind", sort=False)):
        fig.add_trace(go.Scatter(x=part["update"], y=part["reward"], name=kind, mode="lines",
                                 line=dict(color=colour, width=2.5)))
    fig.update_layout(template=TEMPLATE, height=380, xaxis_title="predictor updates on the start room's frames",
                      yaxis_title="intrinsic reward (predictor's error)", yaxis_type="log",
                      title=dict(text="What RND rewards: the frames it has not learned", x=0.01),
                      legend=dict(orientation="h", y=-0.25))
    return fig


#: The columns :func:`study_curves_figure` draws by default, with their axis titles.
CURVES = {"extrinsic_return": "game score (episodes that ended)", "intrinsic_reward": "intrinsic reward",
          "rooms_visited": "rooms visited", "dead_units": "dead units (fraction)",
          "weight_magnitude": "weight magnitude"}


def study_curves_figure(epochs: pd.DataFrame, columns: dict[str, str] | None = None, title: str | None = None
                        ) -> go.Figure:
    """A stored Montezuma study's per-iteration table (``Results.epochs()``) as curves against agent steps, one
    panel per column: each condition's mean over its seeds, with a band from the lowest to the highest seed."""
    columns = dict(columns or CURVES)
    conditions = list(dict.fromkeys(epochs["condition"]))
    colours = condition_colors(conditions)
    fig = make_subplots(rows=len(columns), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=list(columns.values()))
    for row, column in enumerate(columns, 1):
        for condition in conditions:
            part = epochs[epochs["condition"] == condition].groupby("agent_steps")[column]
            mean, low, high = part.mean(), part.min(), part.max()
            x = list(mean.index)
            fig.add_trace(go.Scatter(x=x + x[::-1], y=list(high) + list(low)[::-1], fill="toself", mode="lines",
                                     line=dict(width=0), fillcolor=rgba(colours[condition], 0.15),
                                     hoverinfo="skip", showlegend=False, legendgroup=condition), row=row, col=1)
            fig.add_trace(go.Scatter(x=x, y=list(mean), name=condition, mode="lines", legendgroup=condition,
                                     showlegend=row == 1, line=dict(color=colours[condition], width=2),
                                     connectgaps=True), row=row, col=1)
    fig.update_xaxes(title_text="agent steps per run", row=len(columns), col=1)
    fig.update_layout(template=TEMPLATE, height=230 * len(columns) + 80,
                      title=dict(text=title, x=0.01) if title else None,
                      margin=dict(t=90 if title else 50), legend=dict(orientation="h", y=1.02, yanchor="bottom"))
    return fig
