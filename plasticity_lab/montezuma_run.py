"""Montezuma's Revenge runs: a population of RND agents (:mod:`plasticity_lab.rnd_agent`) trained on the game and
logged per iteration.

The study's third environment has no rounds and no shifts (PROTOCOL §3): each of its runs is a condition and a seed,
trained for a number of iterations (one rollout of :attr:`~plasticity_lab.rnd.RNDConfig.rollout_length` steps in
every copy, then one update), and the paper compares conditions by the game's score over time.
:func:`run_montezuma` trains the seeds of one condition as one population and returns the table.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from .conditions import parse_condition
from .envs.montezuma import AtariSettings, MontezumaPopulation
from .experiment import population_seed
from .population import Population
from .rnd import RNDConfig, RNDNetworks
from .rnd_agent import RNDAgent, atari_network_spec

#: The per-iteration columns of a Montezuma's Revenge table, after the run keys and the iteration counters.
MONTEZUMA_COLUMNS = ("extrinsic_return", "episodes", "intrinsic_reward", "predictor_loss", "policy_loss",
                     "value_loss", "entropy", "grad_norm", "dead_units", "weight_magnitude")


def run_montezuma(seeds: Sequence[int], condition: str = "warm_start", iterations: int = 10, copies: int = 8,
                  config: RNDConfig = RNDConfig(), condition_params: dict | None = None,
                  settings: AtariSettings = AtariSettings(), device: str = "cpu", progress=None) -> pd.DataFrame:
    """Train one condition's seeds (one population) for ``iterations`` iterations of ``copies`` games each, after
    :attr:`RNDConfig.init_steps` random steps that start the observation statistics.

    Returns one row per seed and iteration: ``env`` ("montezuma"), ``shift`` ("none"), ``condition``, ``seed``,
    ``iteration`` (0-based), ``agent_steps`` and ``frames`` (cumulative, per seed, the random start excluded), then
    :data:`MONTEZUMA_COLUMNS` — ``extrinsic_return`` is the mean score of the episodes that ended during the
    iteration (NaN where none did), ``episodes`` how many ended. ``progress(n)``, if given, hears of each iteration.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one; got {seeds}")
    for name, value in (("iterations", iterations), ("copies", copies)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {value!r}")
    cond = parse_condition(condition, condition_params or {})
    population = Population(atari_network_spec(**cond.network_options()), seeds, condition=cond, device=device)
    cond.setup(population)
    agent = RNDAgent(population, RNDNetworks(seeds, config, device), config)
    env = MontezumaPopulation(seeds, copies, device, settings)
    # the population's one generator (actions, minibatch order, the predictor's share), as the other environments'
    generator = torch.Generator(device=device).manual_seed(population_seed(seeds))
    try:
        obs = agent.initialise_observation_stats(env, env.reset(), generator)
        env.episode_returns()  # the random start's episodes are not the agent's
        rows = []
        for iteration in range(iterations):
            stats, obs = agent.iterate(env, obs, generator)
            steps = (iteration + 1) * config.rollout_length * copies
            for m, seed in enumerate(seeds):
                rows.append({"env": "montezuma", "shift": "none", "condition": condition, "seed": seed,
                             "iteration": iteration, "agent_steps": steps, "frames": steps * settings.frameskip,
                             **{k: float(stats[k][m]) for k in MONTEZUMA_COLUMNS}})
            if progress is not None:
                progress(1)
    finally:
        env.close()
    return pd.DataFrame(rows)
