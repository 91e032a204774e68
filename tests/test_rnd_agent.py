"""The Montezuma's Revenge agent (PPO + RND): its advantages by hand, and every condition's smoke run on the game."""

from __future__ import annotations

import math

import pytest
import torch

from plasticity_lab.conditions import parse_condition
from plasticity_lab.population import Population
from plasticity_lab.rnd import RNDConfig, RNDNetworks
from plasticity_lab.rnd_agent import RNDAgent, atari_network_spec


def _agent(condition: str = "warm_start", seeds=(0, 1), **config) -> RNDAgent:
    cond = parse_condition(condition)
    population = Population(atari_network_spec(**cond.network_options()), list(seeds), condition=cond)
    cond.setup(population)
    return RNDAgent(population, RNDNetworks(list(seeds)), RNDConfig(**config))


def test_advantages_clip_the_game_reward_and_scale_the_novelty_by_its_spread():
    agent = _agent(seeds=(0,), gamma_extrinsic=0.5, gamma_intrinsic=0.5, gae_lambda=1.0)
    rollout = {  # one step, one member, two copies; every value 0 except the second copy's next extrinsic value
        "rewards": torch.tensor([[[5.0, -0.25]]]),
        "intrinsic": torch.tensor([[[1.0, 3.0]]]),
        "ends": torch.tensor([[[False, False]]]),
        "values": torch.zeros(1, 1, 2, 2),
        "next_values": torch.tensor([[[0.0, 0.0], [2.0, 0.0]]]),
    }
    out = agent.advantages(rollout)
    # extrinsic: clip(5) = 1, and −0.25 + 0.5·2 = 0.75; intrinsic: 1 and 3 over the spread of the filter's first
    # values (1 and 3: standard deviation 1); the policy's advantage is 2·extrinsic + 1·intrinsic
    assert out["advantages"][0, 0].tolist() == pytest.approx([2 * 1.0 + 1.0, 2 * 0.75 + 3.0], rel=1e-6)
    assert out["returns"][0, 0].flatten().tolist() == pytest.approx([1.0, 1.0, 0.75, 3.0], rel=1e-6)


def test_an_agent_iterates_on_the_game_and_its_predictor_learns():
    # every condition through a whole run: tests/test_montezuma_run.py
    pytest.importorskip("ale_py")
    from plasticity_lab.envs.montezuma import MontezumaPopulation

    agent = _agent("soft_shrink_perturb+layernorm", rollout_length=8, init_steps=8)
    env = MontezumaPopulation([0, 1], 2)
    generator = torch.Generator().manual_seed(0)
    obs = agent.initialise_observation_stats(env, env.reset(), generator)
    before = {k: v.detach().clone() for k, v in agent.rnd.predictor_params.items()}
    for _ in range(2):
        stats, obs = agent.iterate(env, obs, generator)
    for key in ("policy_loss", "value_loss", "entropy", "grad_norm", "predictor_loss", "weight_magnitude",
                "intrinsic_reward", "dead_units"):
        assert stats[key].shape == (2,) and torch.isfinite(stats[key]).all(), key
    assert stats["entropy"].max() <= math.log(18) + 1e-5  # 18 actions
    assert stats["episodes"].tolist() == [0.0, 0.0]  # 8 + 16 steps: no game over, no cut
    assert all(not torch.equal(before[k], agent.rnd.predictor_params[k]) for k in before)  # the predictor learns


def test_a_rollout_too_short_for_its_minibatches_is_refused():
    agent = _agent(rollout_length=1, minibatches=4)
    rollout = {"obs": torch.zeros(1, 2, 2, 4, 84, 84, dtype=torch.uint8), "actions": torch.zeros(1, 2, 2, dtype=torch.long),
               "log_probs": torch.zeros(1, 2, 2), "values": torch.zeros(1, 2, 2, 2), "rewards": torch.zeros(1, 2, 2),
               "ends": torch.zeros(1, 2, 2, dtype=torch.bool), "next_values": torch.zeros(2, 2, 2),
               "intrinsic": torch.ones(1, 2, 2)}
    with pytest.raises(ValueError, match="a rollout of 2 rows per member cannot make 4 minibatches"):
        agent.update(rollout, torch.Generator().manual_seed(0))
