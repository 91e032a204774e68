"""Shared test helpers (importable from the tests: pytest puts this folder on sys.path)."""

import torch

from plasticity_lab.ppo import Rollout, gae


def random_rollout(members, T=20, E=11, obs_dim=363, seed=0):
    """A rollout of random sparse observations, rewards and actions for ``members`` agents, with GAE."""
    g = torch.Generator().manual_seed(seed)
    obs = (torch.rand(T, members, E, obs_dim, generator=g) < 0.1).float()
    rewards = torch.randn(T, members, E, generator=g) * 0.3
    values = torch.randn(T, members, E, generator=g) * 0.1
    actions = torch.randint(0, 4, (T, members, E), generator=g)
    log_probs = torch.log(torch.rand(T, members, E, generator=g) * 0.5 + 0.1)
    r = Rollout(obs, actions, log_probs, values, rewards)
    r.advantages = gae(rewards, values, 0.99, 0.95)
    r.returns = r.advantages + values
    return r
