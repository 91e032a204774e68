"""Chapter 13's pictures of Montezuma's Revenge: what they compute, checked by hand or against the game."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

pytest.importorskip("ale_py")
pytest.importorskip("plotly")

from plasticity_lab.figures import montezuma as mz  # noqa: E402


def test_the_study_curves_are_each_conditions_mean_with_a_band_from_its_lowest_to_its_highest_seed():
    rows = [{"condition": c, "seed": s, "agent_steps": 16 * (i + 1), "dead_units": v}
            for c, base in (("warm_start", 0.0), ("regen_l2", 10.0)) for s in (0, 1)
            for i, v in enumerate(base + np.array([1.0, 2.0, 4.0]) * (s + 1))]
    fig = mz.study_curves_figure(pd.DataFrame(rows), columns={"dead_units": "dead units"})
    lines = {t.name: t for t in fig.data if t.mode == "lines" and t.fill is None}
    bands = [t for t in fig.data if t.fill == "toself"]
    assert list(lines["warm_start"].y) == [1.5, 3.0, 6.0] and list(lines["regen_l2"].y) == [11.5, 13.0, 16.0]
    assert list(lines["warm_start"].x) == [16, 32, 48]
    # the band goes out along the highest seed and back along the lowest
    assert list(bands[0].y) == [2.0, 4.0, 8.0, 4.0, 2.0, 1.0] and list(bands[0].x) == [16, 32, 48, 48, 32, 16]


def test_rooms_never_reached_look_unlike_the_start_room_and_rnd_learns_only_what_it_sees():
    frames = mz.room_frames(seed=0, walk=16, rooms=(0, 4))
    assert list(frames) == ["start room, seen", "start room, unseen", "rooms never reached"]
    assert frames["start room, seen"].shape == (16, 4, 84, 84) and frames["rooms never reached"].shape == (2, 4, 84, 84)
    start, other = frames["start room, seen"][-1, -1].float(), frames["rooms never reached"][:, -1].float()
    assert all((room - start).abs().mean() > 10 for room in other)  # another screen, not the start room's
    trace = mz.novelty_trace(frames, updates=5)
    assert len(trace) == 6 * 3 and (trace["reward"] > 0).all()
    reward = trace.pivot(index="update", columns="kind", values="reward")
    assert reward.loc[5, "start room, seen"] < 0.5 * reward.loc[0, "start room, seen"]  # learned: it falls
    assert reward.loc[5, "rooms never reached"] > 10 * reward.loc[5, "start room, seen"]  # unseen: stays high


def test_the_game_figure_shows_the_screen_and_the_four_frames():
    fig = mz.game_figure(seed=0, steps=4)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == "the screen (210 × 160)" and len(titles) == 5 and titles[-1] == "frame t (84 × 84)"
