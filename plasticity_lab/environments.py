"""What the ``env`` field of a run selects: its games, its network and its training distributions per round.

One entry per environment of :data:`plasticity_lab.config.ENVS`. Nothing below the config names an environment:
:class:`~plasticity_lab.experiment.Experiment` asks :func:`environment` for the games (batched over members ×
copies), the network's shape and each round's level pools and observation mapping, and collection follows the
games' own rule (``episodes_end``).

* ``gridworld`` (PROTOCOL §3): the MLP on 363-d symbolic observations, 4 actions, 100-step episodes; level pools
  start at ``seed·10 000`` (train) and ``1 000 000 + seed·10 000`` (test); *permute* reorders the 363 entries.
* ``coinrun`` (PROTOCOL §3): the CNN on 3×64×64 frames, 9 actions, episodes that end (coin, death, or the cut at
  200 agent steps); level pools start at 0 (train) and 10 000 (test) for every seed; *permute* reorders the 256
  4×4-pixel patches. Needs ProcGen (an optional extra).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .envs.coinrun import N_ACTIONS as COINRUN_ACTIONS
from .envs.coinrun import CoinRunPopulation, coinrun_level_range, patch_mapping
from .envs.gridworld import N_ACTIONS as GRIDWORLD_ACTIONS
from .envs.gridworld import OBS_DIM
from .envs.population import GridworldPopulation
from .nets import NetworkSpec
from .schema import check_choice
from .shifts import distribution


@dataclass(frozen=True)
class RoundDistribution:
    """One member's training distribution in one round: train and test level pools, and the observation mapping
    (``None``: observations as they are)."""

    train_levels: range
    test_levels: range
    mapping: np.ndarray | None


@dataclass(frozen=True)
class Environment:
    """How to build one environment's games and network, and its distribution per round."""

    name: str
    #: ``(members, copies, device, reward_magnitude) -> games`` batched over members × copies
    make_games: Callable[[int, int, torch.device, float], object]
    #: the network's shape (NetworkSpec fields other than the conditions' ``layernorm`` / ``crelu``)
    network: dict
    #: ``(shift, seed, round, pool_size) -> RoundDistribution``
    round_distribution: Callable[[str, int, int, int], RoundDistribution]

    def network_spec(self, **options) -> NetworkSpec:
        """The network, with a condition's architectural options (``layernorm``, ``crelu``)."""
        return NetworkSpec(**self.network, **options)


def _gridworld_distribution(shift: str, seed: int, round_: int, pool_size: int) -> RoundDistribution:
    d = distribution(shift, seed, round_, pool_size=pool_size)
    return RoundDistribution(d.train_levels, d.test_levels, d.mapping)


def _coinrun_distribution(shift: str, seed: int, round_: int, pool_size: int) -> RoundDistribution:
    return RoundDistribution(coinrun_level_range(shift, round_, "train", pool_size),
                             coinrun_level_range(shift, round_, "test", pool_size),
                             patch_mapping(seed, round_) if shift == "permute" else None)


ENVIRONMENTS: dict[str, Environment] = {
    "gridworld": Environment(
        "gridworld",
        lambda members, copies, device, reward: GridworldPopulation(members, copies, device, reward),
        {"encoder": "mlp", "obs_dim": OBS_DIM, "n_actions": GRIDWORLD_ACTIONS},
        _gridworld_distribution,
    ),
    "coinrun": Environment(
        "coinrun",
        lambda members, copies, device, reward: CoinRunPopulation(members, copies, device),
        {"encoder": "cnn", "n_actions": COINRUN_ACTIONS},
        _coinrun_distribution,
    ),
}


def environment(name: str) -> Environment:
    """The environment named ``name`` (one of :data:`ENVIRONMENTS`)."""
    return ENVIRONMENTS[check_choice("env", name, list(ENVIRONMENTS))]
