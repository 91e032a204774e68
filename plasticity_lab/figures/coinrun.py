"""CoinRun drawn: the frames an agent sees on train and test levels, and what the *permute* shift makes of them.

Every picture is the environment's own first observation of a level (:class:`plasticity_lab.envs.CoinRunPopulation`
on a pool of that one level, with the round's patch mapping where one is asked for), turned back into an RGB image:
the frame the network is given, not a re-drawing of it. Needs ProcGen.

* :func:`level_frame` — one level's first frame, as the network sees it in a round of a shift.
* :func:`coinrun_levels_figure` — train and test levels side by side, and a level under *permute*.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import torch

from ..envs.coinrun import CoinRunPopulation, TEST_LEVEL_START, patch_mapping
from .environment import image_grid_figure

__all__ = ["coinrun_levels_figure", "level_frame"]


def level_frame(level: int, seed: int | None = None, round: int = 1) -> np.ndarray:  # noqa: A002
    """The first frame of CoinRun level ``level`` as an RGB ``uint8`` image ``[64, 64, 3]``.

    With ``seed``, the frame as the *permute* shift of that seed presents it in ``round`` (its 4×4-pixel patches
    reordered by σ composed ``round`` times, :func:`plasticity_lab.envs.patch_mapping`); without, as it is.
    """
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or level < 0:
        raise ValueError(f"level must be a non-negative integer; got {level!r}")
    games = CoinRunPopulation(1, 1)
    games.set_distributions([range(int(level), int(level) + 1)],
                            [None if seed is None else patch_mapping(seed, round)])
    obs = games.reset(torch.Generator().manual_seed(0))[0, 0]  # [3, 64, 64] in [0, 1]
    return (obs.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)


def coinrun_levels_figure(train_levels: Sequence[int] = (0, 1, 2), test_levels: Sequence[int] = (TEST_LEVEL_START,),
                          permuted: int | None = 0, seed: int = 0, rounds: Sequence[int] = (1, 2),
                          title: str | None = None, cols: int = 4) -> go.Figure:
    """First frames of ``train_levels`` and ``test_levels`` (round 1's pools start at 0 and 10 000), then level
    ``permuted`` as the *permute* shift of ``seed`` presents it in each of ``rounds``."""
    images = {f"train level {lv:,}": level_frame(lv) for lv in train_levels}
    images.update({f"test level {lv:,}": level_frame(lv) for lv in test_levels})
    if permuted is not None:
        images.update({f"level {permuted:,}, permute round {r}": level_frame(permuted, seed, r) for r in rounds})
    return image_grid_figure(images, cols=cols, title=title)
