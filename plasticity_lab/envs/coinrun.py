"""ProcGen's CoinRun, batched over population members × environment copies (PROTOCOL §3, "CoinRun").

The settings are the study's:

* ProcGen ``coinrun``, distribution mode ``"easy"``, backgrounds on, velocity information painted on; the 64×64 RGB
  frame comes back as a float tensor ``[3, 64, 64]`` scaled to ``[0, 1]``;
* the first :data:`N_ACTIONS` (9) of ProcGen's 15 actions, the movement combinations; each agent action is
  repeated :data:`ACTION_REPEAT` (2) times; every agent step costs :data:`STEP_PENALTY` (0.01) on top of the game's
  own reward (10 for the coin); an episode ends when the game ends it (coin or death) or after
  :data:`EPISODE_LENGTH` (200) agent steps;
* level pools (:func:`coinrun_level_range`): the train levels of round 1 are ``[0, 100)`` and the test levels
  ``[10 000, 10 100)``; *window* and *expand* move both bounds by the pool size exactly as in the gridworld
  (:func:`plasticity_lab.shifts.level_range`), *permute* and *none* keep them;
* *permute* (:func:`permute_patches`): the frame is cut into a 16×16 grid of 4×4-pixel patches and the patches are
  reordered by a seed-derived permutation σ, composed once more at each shift. As in the gridworld, round 1 already
  sees σ (:func:`patch_mapping` is :func:`plasticity_lab.shifts.permute_mapping` over the 256 patches).

Episodes run in lockstep, like the gridworld's: :meth:`CoinRunPopulation.reset` starts a new episode in every
copy, each on a level drawn uniformly from its member's pool (ProcGen draws it, from a seed taken from the caller's
``torch.Generator``, so a run is reproducible), and :meth:`~CoinRunPopulation.step` reports, per copy, whether its
episode is over. A copy whose episode is over stays over until the next reset: its later steps have reward 0 and
must not be recorded (ProcGen itself would already have started a new episode behind it). The authors' release
draws the start level per reset in a way that offsets the effective level set; this module implements the
documented intent, levels uniformly from the pool.

ProcGen is an optional dependency with an old API (gym3); install it as the README's "Optional extras" says. This
module wraps it behind the same ``[members, copies, ...]`` interface as
:class:`~plasticity_lab.envs.population.GridworldPopulation`.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .. import streams
from ..schema import SPLITS, check_choice, check_int, check_round
from ..shifts import DEFAULT_POOL_SIZE, SHIFTS, permute_mapping, pool_from

__all__ = [
    "IMAGE_SIZE",
    "PATCH_SIZE",
    "N_PATCHES",
    "N_ACTIONS",
    "ACTION_REPEAT",
    "STEP_PENALTY",
    "EPISODE_LENGTH",
    "TRAIN_LEVEL_START",
    "TEST_LEVEL_START",
    "coinrun_level_range",
    "patch_mapping",
    "permute_patches",
    "pixel_mapping",
    "procgen_available",
    "CoinRunPopulation",
]

IMAGE_SIZE = 64
CHANNELS = 3
PATCH_SIZE = 4
PATCHES_PER_SIDE = IMAGE_SIZE // PATCH_SIZE  # 16
N_PATCHES = PATCHES_PER_SIDE * PATCHES_PER_SIDE  # 256
N_ACTIONS = 9  # ProcGen's first 9 actions: the movement combinations (left/none/right × down/none/up)
ACTION_REPEAT = 2
STEP_PENALTY = 0.01
EPISODE_LENGTH = 200  # agent steps (400 game frames with the action repeat)
TRAIN_LEVEL_START = 0
TEST_LEVEL_START = 10_000
PROCGEN_INSTALL = ("pip install --no-deps procgen-mirror==0.10.7 gym3==0.3.3 gym==0.26.2 gym-notices && "
                   "pip install cffi imageio")


def coinrun_level_range(kind: str, round: int, split: str = "train",  # noqa: A002
                        pool_size: int = DEFAULT_POOL_SIZE) -> range:
    """The CoinRun level pool ``[lo, hi)`` of ``split`` for shift ``kind`` in (1-based) ``round``.

    ``start`` is :data:`TRAIN_LEVEL_START` (0) for ``"train"`` and :data:`TEST_LEVEL_START` (10 000) for
    ``"test"``, the same for every seed; with ``k = pool_size``: *window* ``[start + (r−1)k, start + rk)``, *expand*
    ``[start, start + rk)``, *permute* and *none* ``[start, start + k)``. The test pool never meets the train pool
    while ``r·k ≤ 10 000``.
    """
    kind = check_choice("shift", kind, SHIFTS)
    split = check_choice("split", split, SPLITS)
    round = check_round(round)
    k = check_int("pool_size", pool_size, 1, "valid: an integer >= 1")
    return pool_from(kind, TEST_LEVEL_START if split == "test" else TRAIN_LEVEL_START, round, k)


def patch_mapping(seed: int, round: int) -> np.ndarray:  # noqa: A002
    """The patch order of the *permute* shift for ``seed`` in (1-based) ``round``: σ composed ``round`` times over
    the 256 patches, applied as ``out patch i = in patch mapping[i]`` (:func:`permute_patches`)."""
    return permute_mapping(seed, round, N_PATCHES)


def permute_patches(images: torch.Tensor, mapping: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Reorder the 4×4-pixel patches of ``images`` ``[..., C, 64, 64]``: output patch ``i`` is input patch
    ``mapping[i]``, patches numbered row-major over the 16×16 grid (patch ``p`` covers rows ``4(p // 16)…+3`` and
    columns ``4(p % 16)…+3``).

    ``mapping`` is ``[256]`` (one order for every image) or ``[N, 256]`` (one per image of ``images [N, C, 64,
    64]``). Returns a new tensor.
    """
    if images.dim() < 3 or tuple(images.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must be [..., C, {IMAGE_SIZE}, {IMAGE_SIZE}], got {tuple(images.shape)}")
    mapping = torch.as_tensor(mapping, device=images.device).long()
    if mapping.shape[-1] != N_PATCHES or mapping.dim() not in (1, 2):
        raise ValueError(f"mapping must be [{N_PATCHES}] or [N, {N_PATCHES}], got {tuple(mapping.shape)}")
    lead, c, s, p = images.shape[:-3], images.shape[-3], PATCHES_PER_SIDE, PATCH_SIZE
    # [..., C, 16, 4, 16, 4] -> [..., C, 16·16 patches, 4·4 pixels]
    patches = images.reshape(*lead, c, s, p, s, p).transpose(-3, -2).reshape(*lead, c, N_PATCHES, p * p)
    if mapping.dim() == 1:
        moved = patches.index_select(-2, mapping)
    else:
        if images.dim() != 4 or images.shape[0] != mapping.shape[0]:
            raise ValueError(f"a per-image mapping {tuple(mapping.shape)} needs images [{mapping.shape[0]}, C, "
                             f"{IMAGE_SIZE}, {IMAGE_SIZE}], got {tuple(images.shape)}")
        index = mapping[:, None, :, None].expand(-1, c, -1, p * p)
        moved = torch.gather(patches, 2, index)
    return moved.reshape(*lead, c, s, s, p, p).transpose(-3, -2).reshape(images.shape)


def pixel_mapping(mapping: torch.Tensor | np.ndarray) -> torch.Tensor:
    """A patch mapping (``[256]`` or ``[N, 256]``, as :func:`permute_patches` takes it) as the pixel numbers it moves:
    ``[..., 4096]``, output pixel ``q`` (row-major over 64×64) is input pixel ``index[q]``."""
    mapping = torch.as_tensor(mapping).long()
    p, s = PATCH_SIZE, PATCHES_PER_SIDE
    rows = torch.arange(IMAGE_SIZE, device=mapping.device)
    out_patch = (rows // p).view(-1, 1) * s + (rows // p).view(1, -1)  # the patch each output pixel lies in
    within_row, within_col = (rows % p).view(-1, 1), (rows % p).view(1, -1)
    source = mapping[..., out_patch]  # [..., 64, 64]: the input patch each output pixel comes from
    index = ((source // s) * p + within_row) * IMAGE_SIZE + (source % s) * p + within_col
    return index.reshape(*mapping.shape[:-1], IMAGE_SIZE * IMAGE_SIZE)


def procgen_available() -> bool:
    """Whether ProcGen (the ``procgen`` module) can be imported here."""
    try:
        import procgen  # noqa: F401
    except ImportError:
        return False
    return True


def _procgen_factory(num: int, start_level: int, num_levels: int, rand_seed: int):
    try:
        # ProcGen imports the old ``gym`` package only for its registry, and gym prints a notice about its own
        # maintenance to stderr on import; the games do not use gym, so the notice would only clutter a chapter.
        with contextlib.redirect_stderr(io.StringIO()):
            from procgen import ProcgenGym3Env
    except ImportError as error:
        raise ImportError(f"CoinRun needs ProcGen, which is not installed ({error}); install it with: "
                          f"{PROCGEN_INSTALL}") from None
    return ProcgenGym3Env(num=num, env_name="coinrun", distribution_mode="easy", start_level=start_level,
                          num_levels=num_levels, paint_vel_info=True, use_backgrounds=True, rand_seed=rand_seed)


#: ``(num, start_level, num_levels, rand_seed) -> env`` with gym3's ``act``/``observe``/``get_info``; ProcGen's
#: by default (tests pass a scripted one).
EnvFactory = Callable[[int, int, int, int], Any]


class CoinRunPopulation:
    """``members × copies`` CoinRun games; observations ``[M, E, 3, 64, 64]``, rewards and flags ``[M, E]``.

    Each member has its own ProcGen vector environment of ``copies`` games, re-created at each :meth:`reset` with a
    seed drawn from the caller's generator, so that every copy starts a new episode on a level
    drawn uniformly from its member's pool.
    """

    episode_length = EPISODE_LENGTH
    #: An episode ends when the game ends it (coin or death), or at the cut: collection watches ``over``.
    episodes_end = True
    obs_shape = (CHANNELS, IMAGE_SIZE, IMAGE_SIZE)
    num_actions = N_ACTIONS

    def __init__(self, members: int, copies: int, device="cpu", make_env: EnvFactory | None = None):
        self.members = check_int("members", members, 1, "valid: an integer >= 1")
        self.copies = check_int("copies", copies, 1, "valid: an integer >= 1")
        self.device = torch.device(device)
        self._make_env = make_env or _procgen_factory
        self.envs: list[Any] = []
        self.set_distributions([coinrun_level_range("none", 1)] * self.members, [None] * self.members)

    def set_distributions(self, level_pools: Sequence[range], mappings: Sequence[np.ndarray | None]) -> None:
        """Give each member its pool of levels and patch mapping (``None``: frames as they are); they take effect
        at the next :meth:`reset`."""
        if len(level_pools) != self.members or len(mappings) != self.members:
            raise ValueError(f"need one level pool and one mapping per member ({self.members}), got "
                             f"{len(level_pools)} pools and {len(mappings)} mappings")
        for pool in level_pools:
            if not isinstance(pool, range) or pool.step != 1 or len(pool) < 1 or pool.start < 0:
                raise ValueError(f"a level pool must be a non-empty range of levels >= 0 with step 1, got {pool!r}")
        self.level_pools = list(level_pools)
        if all(m is None for m in mappings):
            self.mapping = None
        else:
            identity = np.arange(N_PATCHES)
            rows = np.stack([identity if m is None else np.asarray(m) for m in mappings])
            if rows.shape != (self.members, N_PATCHES) or not (np.sort(rows, axis=1) == identity).all():
                raise ValueError(f"each mapping must be a permutation of 0..{N_PATCHES - 1}")
            self.mapping = torch.as_tensor(rows, device=self.device)  # [M, 256]
            # the same reordering as pixel numbers of the 64×64 frame, for one gather on the raw frames
            self.pixel_index = pixel_mapping(self.mapping)  # [M, 4096]

    def _observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every game's last reward and episode-start flag ``[M, E]`` and frame ``[M·E, 64, 64, 3]`` (uint8)."""
        rewards, frames, firsts = zip(*(env.observe() for env in self.envs))
        frames = np.concatenate([ob["rgb"] for ob in frames])
        return np.stack(rewards).astype(np.float32), np.stack(firsts).astype(bool), frames

    def _to_obs(self, frames: np.ndarray) -> torch.Tensor:
        raw = torch.from_numpy(frames).to(self.device)  # [M·E, 64, 64, 3] uint8
        if self.mapping is not None:  # what permute_patches does, as one gather of whole pixels, before the floats
            pixels = raw.view(self.members, self.copies, IMAGE_SIZE * IMAGE_SIZE, CHANNELS)
            index = self.pixel_index.view(self.members, 1, -1, 1).expand(-1, self.copies, -1, CHANNELS)
            raw = pixels.gather(2, index).view(-1, IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
        images = raw.permute(0, 3, 1, 2).float().div_(255.0)
        return images.reshape(self.members, self.copies, *self.obs_shape)

    def reset(self, generator: torch.Generator) -> torch.Tensor:
        """Start a new episode in every copy; returns the first observations."""
        seeds = streams.integers(generator, self.members, 2**31 - 1).tolist()
        for env in self.envs:
            if hasattr(env, "close"):
                env.close()
        self.envs = [self._make_env(self.copies, pool.start, len(pool), int(seed))
                     for pool, seed in zip(self.level_pools, seeds)]
        self.steps = np.zeros((self.members, self.copies), dtype=np.int64)
        self.over = np.zeros((self.members, self.copies), dtype=bool)
        return self._to_obs(self._observe()[2])

    def levels(self) -> np.ndarray:
        """The level each copy is playing now, ``[M, E]`` (ProcGen's ``level_seed``)."""
        return np.array([[info["level_seed"] for info in env.get_info()] for env in self.envs], dtype=np.int64)

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Play ``actions`` ``[M, E]`` (integers in ``[0, 9)``) for :data:`ACTION_REPEAT` frames each.

        Returns the observations, the rewards of this agent step (the game's minus :data:`STEP_PENALTY`; 0 for a
        copy whose episode was already over) and ``over`` ``[M, E]``: whether the copy's episode has ended, at this
        step or before. A copy's transition at this step belongs to its episode exactly when it was not over before
        the step.
        """
        actions = torch.as_tensor(actions)
        if tuple(actions.shape) != (self.members, self.copies):
            raise ValueError(f"actions must be [{self.members}, {self.copies}], got {tuple(actions.shape)}")
        acts = actions.detach().cpu().numpy().astype(np.int32)
        if acts.size and (acts.min() < 0 or acts.max() >= N_ACTIONS):
            raise ValueError(f"actions must lie in [0, {N_ACTIONS}); got values from {acts.min()} to {acts.max()}")
        running = ~self.over
        reward = np.zeros((self.members, self.copies), dtype=np.float32)
        ended = np.zeros_like(self.over)
        for _ in range(ACTION_REPEAT):
            for m, env in enumerate(self.envs):
                env.act(acts[m])
            game_reward, first, frames = self._observe()
            live = running & ~ended  # a frame after the episode ended belongs to ProcGen's next episode
            reward += np.where(live, game_reward, 0.0)
            ended |= live & first
        self.steps += running
        ended |= running & (self.steps >= EPISODE_LENGTH)
        reward -= np.where(running, STEP_PENALTY, 0.0).astype(np.float32)
        self.over |= ended
        to = self.device
        return self._to_obs(frames), torch.from_numpy(reward).to(to), torch.from_numpy(self.over.copy()).to(to)
