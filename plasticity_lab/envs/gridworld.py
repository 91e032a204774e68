"""The "gather" gridworld of Juliani & Ash (NeurIPS 2024), level-exact with the authors' release.

The paper's gridworld comes from the NeuroNav library's ``GridEnv`` with a symbolic observation. This module
re-implements it in three layers:

* :func:`level_layout` — the level generator. A level is an integer; its layout (10 interior walls, 5 pits,
  5 gems) is drawn from NumPy's *legacy* Mersenne-Twister stream seeded with the level index, exactly as the
  release does, so level ``L`` here is level ``L`` in the paper's code (``tests/fixtures`` checks this).
* :class:`GridworldBatch` — ``B`` independent copies stepped at once with torch tensors (CPU or CUDA). This is
  what training uses; a step is a handful of tensor ops and has no Python loop over copies.
* :class:`GatherEnv` — a standard ``gymnasium.Env`` (one copy, with an ``rgb_array`` renderer) built on
  ``GridworldBatch(1)``, so there is a single implementation of the dynamics.

Conventions (PROTOCOL §3): positions are ``(x, y) = (row, column)`` in the 11×11 array; the outer ring is wall;
action 0 = up (row − 1), 1 = right (column + 1), 2 = down (row + 1), 3 = left (column − 1); a move into a wall
leaves the agent in place; a reward is collected on *entering* its cell and then disappears; rewards never end
the episode and there is no time penalty; episodes last exactly 100 steps (the caller resets).

The observation is the 11×11×3 grid flattened row-major with the channel last, i.e. entry
``(x * 11 + y) * 3 + c`` with channel ``c = 0`` agent one-hot, ``c = 1`` value of the reward still lying in the
cell (``+m`` gem, ``−m`` pit, ``m = 0.75`` by default), ``c = 2`` wall (1 for interior *and* border walls).
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium
import numpy as np
import torch
from gymnasium import spaces

__all__ = [
    "GRID_SIZE",
    "OBS_DIM",
    "N_ACTIONS",
    "EPISODE_LENGTH",
    "START",
    "DEFAULT_REWARD",
    "N_WALLS",
    "N_PITS",
    "N_GEMS",
    "ACTION_DELTAS",
    "LevelLayout",
    "level_layout",
    "check_level",
    "check_reward_magnitude",
    "GridworldBatch",
    "GatherEnv",
]

GRID_SIZE = 11
N_CHANNELS = 3
OBS_DIM = GRID_SIZE * GRID_SIZE * N_CHANNELS  # 363
N_ACTIONS = 4
EPISODE_LENGTH = 100
START = (5, 5)
DEFAULT_REWARD = 0.75

N_WALLS = 10
N_PITS = 5
N_GEMS = 5
# Ranges of the legacy ``randint(low, high)`` draws (high exclusive), as in the release.
X_RANGE = (2, 9)
Y_RANGE = (1, 10)
# (d_row, d_col) for actions 0..3: up, right, down, left.
ACTION_DELTAS = ((-1, 0), (0, 1), (1, 0), (0, -1))

_CH_AGENT, _CH_REWARD, _CH_WALL = 0, 1, 2
_MAX_LEVEL = 2**32 - 1  # NumPy's legacy seed must fit in 32 bits


@dataclass(frozen=True)
class LevelLayout:
    """The layout of one gridworld level.

    ``walls`` are the 10 interior walls, ``pits`` and ``gems`` the 5 cells of each, all in the order in which the
    generator placed them (the order matters only for bit-exact comparison with the release). The 40 border cells
    are walls too; they are not listed in ``walls`` but are set in :meth:`wall_grid`.
    """

    level: int
    start: tuple[int, int]
    walls: tuple[tuple[int, int], ...]
    pits: tuple[tuple[int, int], ...]
    gems: tuple[tuple[int, int], ...]
    pit_reward: float
    gem_reward: float

    def wall_grid(self) -> np.ndarray:
        """Bool array ``[11, 11]``: True on the 40 border cells and the 10 interior walls."""
        grid = np.zeros((GRID_SIZE, GRID_SIZE), dtype=bool)
        grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = True
        for x, y in self.walls:
            grid[x, y] = True
        return grid

    def reward_grid(self) -> np.ndarray:
        """Float32 array ``[11, 11]``: ``pit_reward`` on pits, ``gem_reward`` on gems, 0 elsewhere."""
        grid = np.zeros((GRID_SIZE, GRID_SIZE), dtype=np.float32)
        for x, y in self.pits:
            grid[x, y] = self.pit_reward
        for x, y in self.gems:
            grid[x, y] = self.gem_reward
        return grid

    def observation(self) -> np.ndarray:
        """The raw (unpermuted) reset observation, float32 ``[363]``, agent on ``start``."""
        obs = np.zeros((GRID_SIZE, GRID_SIZE, N_CHANNELS), dtype=np.float32)
        obs[self.start[0], self.start[1], _CH_AGENT] = 1.0
        obs[..., _CH_REWARD] = self.reward_grid()
        obs[..., _CH_WALL] = self.wall_grid()
        return obs.reshape(OBS_DIM)


def check_level(level: Any) -> int:
    """``level`` as an int, or one error naming it and the valid range (it seeds NumPy's legacy generator)."""
    if (
        isinstance(level, bool)
        or not isinstance(level, numbers.Integral)
        or not 0 <= int(level) <= _MAX_LEVEL
    ):
        raise ValueError(
            f"invalid level {level!r}; a level must be an integer in [0, 2**32 - 1] "
            "(it seeds NumPy's legacy generator)"
        )
    return int(level)


def check_reward_magnitude(reward_magnitude: Any) -> float:
    """``reward_magnitude`` as a float, or one error naming it and the valid values."""
    try:
        value = float(reward_magnitude)
    except (TypeError, ValueError):
        value = float("nan")
    if isinstance(reward_magnitude, bool) or not np.isfinite(value) or value <= 0:
        raise ValueError(
            f"invalid reward_magnitude {reward_magnitude!r}; it must be a finite number > 0 "
            f"(default {DEFAULT_REWARD}, the release; 1.0 for the paper caption's ±1)"
        )
    return value


def level_layout(level: int, reward_magnitude: float = DEFAULT_REWARD) -> LevelLayout:
    """Generate level ``level`` exactly as the authors' release does.

    The release seeds NumPy's legacy global generator with the level index (``np.random.seed(level)``) and draws
    every coordinate with ``np.random.randint(low, high)`` (high exclusive), x (row) first, then y (column),
    x from [2, 9) and y from [1, 10). Here a private ``np.random.RandomState(level)`` is used instead: it produces
    the identical stream without touching the caller's global NumPy state. The draws, in order:

    1. 10 interior walls; a candidate equal to an already placed wall or to the start (5, 5) is redrawn.
    2. 5 pits (reward ``-reward_magnitude``), then
    3. 5 gems (reward ``+reward_magnitude``); for both, a candidate on a cell that already holds a reward
       (pit *or* gem), a wall, or the start is redrawn.

    Every rejected candidate consumes its two draws, which is why the rejection rule must be reproduced
    exactly for later objects to land where the release puts them. Note x never reaches row 1 or row 9 while y
    covers columns 1..9 — an asymmetry of the release, kept on purpose.

    ``reward_magnitude`` only scales the reward values (0.75 in the release; 1.0 matches the paper's caption);
    the positions do not depend on it. Results are cached.
    """
    return _level_layout(check_level(level), check_reward_magnitude(reward_magnitude))


@functools.lru_cache(maxsize=65536)
def _level_layout(level: int, reward_magnitude: float) -> LevelLayout:
    rng = np.random.RandomState(level)

    def draw() -> tuple[int, int]:
        x = int(rng.randint(*X_RANGE))
        y = int(rng.randint(*Y_RANGE))
        return x, y

    walls: list[tuple[int, int]] = []
    while len(walls) < N_WALLS:
        cell = draw()
        if cell == START or cell in walls:
            continue
        walls.append(cell)

    wall_set = set(walls)
    rewards: list[tuple[int, int]] = []
    while len(rewards) < N_PITS + N_GEMS:
        cell = draw()
        if cell == START or cell in wall_set or cell in rewards:
            continue
        rewards.append(cell)

    return LevelLayout(
        level=level,
        start=START,
        walls=tuple(walls),
        pits=tuple(rewards[:N_PITS]),
        gems=tuple(rewards[N_PITS:]),
        pit_reward=-reward_magnitude,
        gem_reward=reward_magnitude,
    )


class GridworldBatch:
    """``num_envs`` independent copies of the gridworld, stepped together with torch tensors.

    The whole state of the batch is the observation tensor itself (agent, remaining rewards and walls are its
    three channels) plus the agent's flat position, so :meth:`step` is a few gathers/scatters:

    >>> env = GridworldBatch(3)
    >>> obs = env.reset([0, 1, 2])            # [3, 363] float32, raw (unpermuted)
    >>> obs, reward = env.step(torch.tensor([0, 1, 2]))

    The env neither counts towards nor ends episodes: the caller steps exactly ``EPISODE_LENGTH`` times and then
    calls :meth:`reset` (``step_count`` counts steps since the last reset, for convenience).

    Reset observations of every level seen so far are kept in a *level bank* on the device (a stacked tensor plus
    a sorted index of level ids), so a reset of hundreds of copies is one ``searchsorted`` and one gather once the
    levels are cached. New levels are generated together (:mod:`~plasticity_lab.envs.levels`, exactly as
    :func:`level_layout` makes each), and :meth:`prepare_levels` generates a whole pool before its first reset.

    Returned tensors are fresh (never views of the internal state), so they may be stored in a rollout buffer.
    """

    def __init__(
        self,
        num_envs: int,
        device: str | torch.device = "cpu",
        reward_magnitude: float = DEFAULT_REWARD,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, numbers.Integral) or num_envs < 1:
            raise ValueError(f"invalid num_envs {num_envs!r}; it must be an integer >= 1")
        self.num_envs = int(num_envs)
        self.device = torch.device(device)
        self.reward_magnitude = check_reward_magnitude(reward_magnitude)
        dev = self.device
        # Flat observation offset of each action: 3 * (d_row * 11 + d_col).
        self._delta3 = torch.tensor(
            [N_CHANNELS * (dx * GRID_SIZE + dy) for dx, dy in ACTION_DELTAS], dtype=torch.long, device=dev
        )
        self._start3 = N_CHANNELS * (START[0] * GRID_SIZE + START[1])
        # Level bank: reset observations, sorted level ids and the bank row of each sorted id.
        self._bank = torch.empty(0, OBS_DIM, dtype=torch.float32, device=dev)
        self._bank_size = 0
        self._keys = torch.empty(0, dtype=torch.long, device=dev)
        self._key_rows = torch.empty(0, dtype=torch.long, device=dev)
        # State: observation [B, 363] and the flat index of the agent's channel-0 entry, [B, 1].
        self._obs = torch.zeros(self.num_envs, OBS_DIM, dtype=torch.float32, device=dev)
        self._p3 = torch.full((self.num_envs, 1), self._start3, dtype=torch.long, device=dev)
        self._levels = torch.full((self.num_envs,), -1, dtype=torch.long, device=dev)
        self._is_reset = False
        self.step_count = 0

    # ------------------------------------------------------------------ level bank
    def _add_levels(self, new_levels: Sequence[int]) -> None:
        from .levels import level_observations  # many levels at once, exactly as level_layout makes each

        rows = level_observations(new_levels, self.reward_magnitude)
        n_new = len(rows)
        needed = self._bank_size + n_new
        if needed > self._bank.shape[0]:  # grow geometrically so appends are amortised O(1)
            capacity = max(needed, 2 * self._bank.shape[0], 64)
            bank = torch.empty(capacity, OBS_DIM, dtype=torch.float32, device=self.device)
            bank[: self._bank_size] = self._bank[: self._bank_size]
            self._bank = bank
        self._bank[self._bank_size : needed] = torch.from_numpy(rows).to(self.device)
        keys = torch.cat([self._keys, torch.tensor(list(new_levels), dtype=torch.long, device=self.device)])
        key_rows = torch.cat(
            [self._key_rows, torch.arange(self._bank_size, needed, dtype=torch.long, device=self.device)]
        )
        order = torch.argsort(keys)
        self._keys, self._key_rows = keys[order], key_rows[order]
        self._bank_size = needed

    def _lookup(self, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (bank rows, found mask) of ``levels`` (a long tensor on the device)."""
        if self._keys.numel() == 0:
            return levels, torch.zeros_like(levels, dtype=torch.bool)
        pos = torch.searchsorted(self._keys, levels).clamp_(max=self._keys.numel() - 1)
        return self._key_rows[pos], self._keys[pos] == levels

    def _bank_missing(self, levels: torch.Tensor) -> None:
        """Generate and bank those of ``levels`` (a long tensor on the device) not in the bank yet, each once."""
        _, found = self._lookup(levels)
        missing = torch.unique(levels[~found]).tolist()
        bad = [lv for lv in missing if not 0 <= lv <= _MAX_LEVEL]
        if bad:
            raise ValueError(f"invalid level {bad[0]!r}; a level must be an integer in [0, 2**32 - 1]")
        if missing:
            self._add_levels(missing)

    def prepare_levels(self, levels: Sequence[int] | range) -> None:
        """Put every level of ``levels`` not yet in the level bank there, all in one vectorised generation
        (:func:`~plasticity_lab.envs.levels.level_observations`), so that no later reset generates one. Resets
        give the same observations either way."""
        self._bank_missing(torch.as_tensor(np.asarray(levels, dtype=np.int64), device=self.device).reshape(-1))

    @property
    def num_cached_levels(self) -> int:
        """Number of levels held in the level bank."""
        return self._bank_size

    # ------------------------------------------------------------------ API
    def reset(self, levels: torch.Tensor | Sequence[int], banked: bool = False) -> torch.Tensor:
        """Reset every copy: copy ``b`` starts level ``levels[b]``. Returns raw observations ``[B, 363]``.

        ``banked=True``: the caller knows every level is already in the level bank (:meth:`prepare_levels` made
        its pool), so the reset skips the check for missing ones — a check whose answer the host must wait for,
        on a GPU once every episode."""
        levels_t = torch.as_tensor(levels, device=self.device)
        if levels_t.dtype.is_floating_point or levels_t.dtype == torch.bool or levels_t.is_complex():
            raise ValueError(f"invalid levels dtype {levels_t.dtype}; levels must be integers")
        levels_t = levels_t.to(torch.long).reshape(-1)
        if levels_t.numel() != self.num_envs:
            raise ValueError(
                f"reset got {levels_t.numel()} levels for a batch of {self.num_envs} copies; pass one per copy"
            )
        rows, found = self._lookup(levels_t)
        if not banked and not bool(found.all()):
            self._bank_missing(levels_t[~found])
            rows, _ = self._lookup(levels_t)
        torch.index_select(self._bank, 0, rows, out=self._obs)
        self._p3.fill_(self._start3)
        self._levels = levels_t.clone()
        self._is_reset = True
        self.step_count = 0
        return self._obs.clone()

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move every copy by ``actions`` (long ``[B]``, 0 up, 1 right, 2 down, 3 left).

        Returns ``(obs [B, 363] float32, reward [B] float32)``. A move into a wall keeps the agent in place; the
        reward of the entered cell is paid and removed.
        """
        if not self._is_reset:
            raise RuntimeError("GridworldBatch.step called before reset")
        if not isinstance(actions, torch.Tensor):
            actions = torch.as_tensor(actions, dtype=torch.long, device=self.device)
        obs, reward = self.move(actions)
        self.step_count += 1
        return obs, reward

    def move(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step`'s tensor work alone (long ``actions [B]`` on the device, after a reset): it touches no
        Python number, so a compiled collection step can take it into its graph (a Python counter read there would
        compile the step again for each of its values)."""
        obs, p3 = self._obs, self._p3
        cand = p3 + self._delta3[actions.reshape(-1, 1)]  # [B, 1] agent-channel index of the target cell
        blocked = obs.gather(1, cand + _CH_WALL) > 0
        new = torch.where(blocked, p3, cand)
        reward_idx = new + _CH_REWARD
        reward = obs.gather(1, reward_idx)
        # Clear the old agent entry and the collected reward, then place the agent (in that order, so an agent
        # that did not move ends up set).
        obs.scatter_(1, torch.cat([p3, reward_idx], dim=1), 0.0)
        obs.scatter_(1, new, 1.0)
        self._p3.copy_(new)  # in place: the state tensors keep their storage from step to step
        return obs.clone(), reward.view(-1)

    def state_tensors(self) -> list[torch.Tensor]:
        """The state :meth:`move` changes in place (observations and agent positions), in storage that lasts as long
        as the batch."""
        return [self._obs, self._p3]

    @property
    def agent_pos(self) -> torch.Tensor:
        """Agent positions ``[B, 2]`` long, as ``(x, y) = (row, column)``."""
        cell = self._p3.view(-1) // N_CHANNELS
        return torch.stack([cell // GRID_SIZE, cell % GRID_SIZE], dim=1)

    @property
    def levels(self) -> torch.Tensor:
        """Level index of each copy since the last reset (``-1`` before the first reset)."""
        return self._levels.clone()

    @property
    def state(self) -> torch.Tensor:
        """A copy of the current raw observations ``[B, 363]`` (without stepping)."""
        return self._obs.clone()


# ---------------------------------------------------------------------- rendering
_CELL_PX = 24
_COLORS = {
    "background": (244, 242, 236),
    "grid": (222, 219, 210),
    "wall": (72, 72, 76),
    "gem": (46, 160, 67),
    "gem_edge": (24, 100, 40),
    "pit": (200, 50, 45),
    "pit_edge": (120, 25, 22),
    "agent": (40, 95, 200),
    "agent_edge": (18, 45, 110),
}


def _cell_masks(px: int) -> dict[str, np.ndarray]:
    """Boolean [px, px] shape masks for one cell (coordinates at pixel centres)."""
    c = (np.arange(px) + 0.5) / px - 0.5  # in (-0.5, 0.5)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    r = np.sqrt(xx**2 + yy**2)
    diamond = np.abs(xx) + np.abs(yy)
    square = np.maximum(np.abs(xx), np.abs(yy))
    return {
        "agent": r <= 0.34,
        "agent_edge": r <= 0.40,
        "gem": diamond <= 0.30,
        "gem_edge": diamond <= 0.38,
        "pit": square <= 0.26,
        "pit_edge": square <= 0.33,
    }


def render_rgb(obs: np.ndarray | torch.Tensor, cell_px: int = _CELL_PX) -> np.ndarray:
    """Render one raw observation (``[363]``) as an RGB ``uint8`` image ``[11·px, 11·px, 3]``.

    Walls are dark grey squares, gems green diamonds, pits red squares, the agent a blue disc, on a light
    background with a faint grid.
    """
    if isinstance(obs, torch.Tensor):
        obs = obs.detach().cpu().numpy()
    grid = np.asarray(obs, dtype=np.float32).reshape(GRID_SIZE, GRID_SIZE, N_CHANNELS)
    px = int(cell_px)
    masks = _cell_masks(px)
    img = np.empty((GRID_SIZE * px, GRID_SIZE * px, 3), dtype=np.uint8)
    img[...] = _COLORS["background"]
    # faint grid lines on the cell borders
    img[::px, :] = _COLORS["grid"]
    img[:, ::px] = _COLORS["grid"]
    img[-1, :] = _COLORS["grid"]
    img[:, -1] = _COLORS["grid"]

    def paint(x: int, y: int, mask: np.ndarray, color: tuple[int, int, int]) -> None:
        tile = img[x * px : (x + 1) * px, y * px : (y + 1) * px]
        tile[mask] = color

    for x in range(GRID_SIZE):
        for y in range(GRID_SIZE):
            if grid[x, y, _CH_WALL] > 0:
                img[x * px : (x + 1) * px, y * px : (y + 1) * px] = _COLORS["wall"]
                continue
            value = grid[x, y, _CH_REWARD]
            if value > 0:
                paint(x, y, masks["gem_edge"], _COLORS["gem_edge"])
                paint(x, y, masks["gem"], _COLORS["gem"])
            elif value < 0:
                paint(x, y, masks["pit_edge"], _COLORS["pit_edge"])
                paint(x, y, masks["pit"], _COLORS["pit"])
            if grid[x, y, _CH_AGENT] > 0:
                paint(x, y, masks["agent_edge"], _COLORS["agent_edge"])
                paint(x, y, masks["agent"], _COLORS["agent"])
    return img


# ---------------------------------------------------------------------- gymnasium
class GatherEnv(gymnasium.Env):
    """The gather gridworld as a single ``gymnasium`` environment (registered as ``plasticity_lab/Gather-v0``).

    ``reset`` draws a level uniformly from ``levels`` with ``self.np_random`` (seed it with ``reset(seed=...)``),
    unless ``options={"level": L}`` names one. ``info`` holds ``{"level": L, "agent_pos": (x, y)}``. Episodes
    never terminate; ``truncated`` becomes True after ``max_steps`` steps (100 in the paper). Observations are the
    raw 363-d vector (float32). ``render_mode="rgb_array"`` gives a ``uint8`` picture of the grid.

    The dynamics are those of :class:`GridworldBatch` with one copy.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(
        self,
        levels: Sequence[int] = range(0, 100),
        reward_magnitude: float = DEFAULT_REWARD,
        render_mode: str | None = None,
        max_steps: int = EPISODE_LENGTH,
    ) -> None:
        super().__init__()
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"unsupported render_mode {render_mode!r}; valid: None, {', '.join(self.metadata['render_modes'])}"
            )
        if isinstance(max_steps, bool) or not isinstance(max_steps, numbers.Integral) or max_steps < 1:
            raise ValueError(f"invalid max_steps {max_steps!r}; it must be an integer >= 1")
        self._level_pool = levels if isinstance(levels, range) else tuple(levels)
        if len(self._level_pool) == 0:
            raise ValueError(f"invalid levels {levels!r}; the level pool must not be empty")
        for lv in (self._level_pool[0], self._level_pool[-1]) if isinstance(levels, range) else self._level_pool:
            check_level(lv)
        self.reward_magnitude = check_reward_magnitude(reward_magnitude)
        self.render_mode = render_mode
        self.max_steps = int(max_steps)
        high = max(1.0, self.reward_magnitude)
        self.observation_space = spaces.Box(-high, high, shape=(OBS_DIM,), dtype=np.float32)
        self.action_space = spaces.Discrete(N_ACTIONS)
        self._batch = GridworldBatch(1, "cpu", self.reward_magnitude)
        self._level: int | None = None
        self._t = 0

    def _info(self) -> dict[str, Any]:
        x, y = self._batch.agent_pos[0].tolist()
        return {"level": self._level, "agent_pos": (int(x), int(y))}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options is not None and "level" in options:
            level = check_level(options["level"])
        else:
            level = int(self._level_pool[int(self.np_random.integers(len(self._level_pool)))])
        self._level = level
        self._t = 0
        obs = self._batch.reset([level])
        return obs[0].numpy(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._level is None:
            raise RuntimeError("GatherEnv.step called before reset")
        a = int(action)
        if not 0 <= a < N_ACTIONS:
            raise ValueError(f"invalid action {action!r}; valid: 0 (up), 1 (right), 2 (down), 3 (left)")
        obs, reward = self._batch.step(torch.tensor([a], dtype=torch.long))
        self._t += 1
        truncated = self._t >= self.max_steps
        return obs[0].numpy(), float(reward[0]), False, truncated, self._info()

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._level is None:
            raise RuntimeError("GatherEnv.render called before reset")
        return render_rgb(self._batch._obs[0])
