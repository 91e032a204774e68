"""The gridworld batched over population members × environment copies.

Each member has its own training distribution (its seed decides its level pool and, under *permute*, its
observation permutation), so this wrapper keeps per-member level pools and mappings and applies them to one
:class:`~plasticity_lab.envs.gridworld.GridworldBatch` of ``members × copies`` environments.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import streams
from ..shifts import apply_mapping
from .gridworld import EPISODE_LENGTH, OBS_DIM, GridworldBatch


class GridworldPopulation:
    """``members × copies`` gridworlds; observations and rewards come back shaped ``[M, E, ...]``."""

    episode_length = EPISODE_LENGTH
    #: Every episode lasts exactly ``episode_length`` steps (PROTOCOL §3): collection need not watch for ends.
    episodes_end = False
    obs_dim = OBS_DIM

    def __init__(self, members: int, copies: int, device="cpu", reward_magnitude: float = 0.75):
        self.members, self.copies = members, copies
        self.device = torch.device(device)
        self.batch = GridworldBatch(members * copies, device=self.device, reward_magnitude=reward_magnitude)
        self.set_distributions([range(0, 1)] * members, [None] * members)

    def set_distributions(self, level_pools: Sequence[range], mappings: Sequence[np.ndarray | None]) -> None:
        """Give each member its pool of levels (drawn uniformly at each reset) and observation mapping."""
        if len(level_pools) != self.members or len(mappings) != self.members:
            raise ValueError(f"need one level pool and one mapping per member ({self.members})")
        # every level of every pool generated at once, before the first reset needs one
        self.batch.prepare_levels(np.concatenate([np.arange(p.start, p.stop) for p in level_pools]))
        self.level_start = torch.tensor([p.start for p in level_pools], device=self.device).unsqueeze(1)
        self.level_count = torch.tensor([len(p) for p in level_pools], device=self.device).unsqueeze(1)
        if all(m is None for m in mappings):
            self.mapping = None
        else:
            identity = np.arange(self.obs_dim)
            stacked = np.stack([identity if m is None else np.asarray(m) for m in mappings])
            self.mapping = torch.as_tensor(stacked, device=self.device).unsqueeze(1)  # [M, 1, D]

    def _observe(self, raw: torch.Tensor) -> torch.Tensor:
        if self.mapping is not None:
            raw = apply_mapping(raw, self.mapping.expand(-1, self.copies, -1).reshape(-1, self.obs_dim))
        return raw.view(self.members, self.copies, self.obs_dim)

    def reset(self, generator: torch.Generator) -> torch.Tensor:
        """Start a new episode in every copy, each on a level drawn uniformly from its member's pool."""
        u = streams.uniform(generator, self.members, (self.copies,)).to(self.device)
        offset = torch.minimum((u * self.level_count).long(), self.level_count - 1)
        self.levels = self.level_start + offset
        self.steps = 0
        return self._observe(self.batch.reset(self.levels.reshape(-1), banked=True))  # set_distributions banked them

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Play ``actions [M, E]``; returns the observations, the rewards and ``over [M, E]`` (the same for every
        copy: True from the episode's last step, the ``episode_length``-th)."""
        obs, reward = self.transition(actions)
        self.count_step()
        over = torch.full((self.members, self.copies), self.steps >= self.episode_length, device=self.device)
        return obs, reward, over

    def transition(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`step` without counting the step: observations and rewards only, from tensor work alone, which a
        compiled collection step takes into its graph (:mod:`plasticity_lab.graphs`); the caller counts the step
        with :meth:`count_step`."""
        obs, reward = self.batch.move(actions.reshape(-1))
        return self._observe(obs), reward.view(self.members, self.copies)

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors :meth:`transition` changes in place; they keep their storage for the environment's life, so a
        CUDA graph of a step can replay on them."""
        return self.batch.state_tensors()

    def count_step(self) -> None:
        """Count a step played through :meth:`transition`."""
        self.steps += 1
        self.batch.step_count += 1
