"""Proximal Policy Optimisation as the study runs it, for one agent, readable top to bottom.

1. **Settings** (PROTOCOL §2): :class:`PPOConfig`.
2. **Rollout**: whole episodes from ``num_envs`` copies of the environment with the current (sampling) policy
   (:func:`collect_episodes`).
3. **Advantages**: GAE per complete episode, bootstrapping 0 at the episode's end (:func:`gae`); the value
   target is advantage + old value.
4. **Loss**: the clipped policy loss, the value error and the entropy bonus (:func:`ppo_loss`).
5. **Update**: ``epochs`` passes over the buffer in shuffled minibatches of ``minibatch_size``; each minibatch
   normalises its own advantages and takes one AdamW step, with the gradient clipped to a global norm of
   ``max_grad_norm`` (:class:`Agent`).

The study trains many agents at once: :class:`plasticity_lab.population.Population` wraps these same pieces and
batches them over a leading *member* axis. Every function here reduces over the last axis only, so it computes
one agent's quantity on ``[B]`` tensors and every member's on ``[M, B]``; collection works on any leading axes of
the environment's batch. :class:`Agent` is the plain single-agent update the population must equal (its tests
train both on the same minibatches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .metrics import dead_unit_fraction, weight_difference, weight_magnitude


# --------------------------------------------------------------------------------------------------------------
# 1. Settings
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (defaults = PROTOCOL §2)."""

    lr: float = 5e-4
    weight_decay: float = 0.0
    minibatch_size: int = 64
    epochs: int = 3  # passes over the buffer per PPO iteration
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    entropy_coef: float = 0.02
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    adam_eps: float = 1e-8


# --------------------------------------------------------------------------------------------------------------
# 2. Rollout
# --------------------------------------------------------------------------------------------------------------


class Policy(Protocol):
    """What collection needs from an agent: its settings and a forward pass ``obs -> (logits, value, features)``
    over any leading axes (one agent's ``[E, ...]``, a population's ``[M, E, ...]``)."""

    ppo: PPOConfig

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class PopulationEnv(Protocol):
    """What collection needs from an environment batched over ``members × copies``."""

    members: int
    copies: int
    episode_length: int

    def reset(self, generator: torch.Generator) -> torch.Tensor: ...  # -> obs [M, E, ...]

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...  # -> obs, reward [M, E]


@dataclass
class Rollout:
    """Time-major buffers ``[T, M, E, ...]`` of one collection, plus GAE results."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None

    #: The buffers an update reads, in the order the loss takes them.
    UPDATE_KEYS: ClassVar[tuple[str, ...]] = ("obs", "actions", "log_probs", "advantages", "returns")

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[M, E]``."""
        return self.rewards.sum(0)

    def flat(self) -> dict[str, torch.Tensor]:
        """Per-member flat batches ``[M, T·E, ...]`` for the update."""

        def flatten(x: torch.Tensor) -> torch.Tensor:
            x = x.movedim(0, 1)  # [M, T, E, ...]
            return x.reshape(x.shape[0], -1, *x.shape[3:])

        return {key: flatten(getattr(self, key)) for key in self.UPDATE_KEYS}


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One categorical sample per row of ``logits [..., A]``."""
    probs = torch.softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


def _episode_steps(agent: Policy, env: PopulationEnv, generator: torch.Generator):
    """One whole episode in every copy of ``env`` with the agent's sampling policy, a step at a time:
    yields ``(obs, logits, values, actions, rewards)``. The one place that draws an episode's random numbers, so
    that collecting and evaluating draw them alike."""
    obs = env.reset(generator)
    for _ in range(env.episode_length):
        logits, values, _ = agent.forward(obs)
        actions = sample_actions(logits, generator)
        next_obs, rewards = env.step(actions)
        yield obs, logits, values, actions, rewards
        obs = next_obs


@torch.no_grad()
def collect_episodes(
    agent: Policy, env: PopulationEnv, generator: torch.Generator, advantages: bool = True
) -> Rollout:
    """Run one whole episode in every copy of ``env`` with the agent's current (sampling) policy.

    With ``advantages=True`` the rollout also gets GAE advantages and value targets, ready for an update.
    """
    buffers: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "actions", "log_probs", "values", "rewards")}
    for obs, logits, values, actions, rewards in _episode_steps(agent, env, generator):
        log_probs, _ = log_prob_and_entropy(logits, actions)
        for key, value in zip(buffers, (obs, actions, log_probs, values, rewards)):
            buffers[key].append(value)
    rollout = Rollout(**{k: torch.stack(v) for k, v in buffers.items()})
    if not advantages:
        return rollout
    cfg = agent.ppo
    rollout.advantages = gae(rollout.rewards, rollout.values, cfg.gamma, cfg.gae_lambda)
    rollout.returns = rollout.advantages + rollout.values
    return rollout


@torch.no_grad()
def play_episodes(agent: Policy, env: PopulationEnv, generator: torch.Generator) -> torch.Tensor:
    """Undiscounted return ``[M, E]`` of one episode in every copy of ``env``, for evaluation.

    The same episodes as :func:`collect_episodes` with the same generator (both step through
    ``_episode_steps``), without keeping the buffers a PPO update needs: at 55 test episodes those are ~120 MB
    of observations per evaluation.
    """
    returns = None
    for *_, rewards in _episode_steps(agent, env, generator):
        returns = rewards.clone() if returns is None else returns.add_(rewards)
    return returns


# --------------------------------------------------------------------------------------------------------------
# 3. Advantages and 4. the loss
# --------------------------------------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates for episodes that all end at the last time step.

    ``rewards`` and ``values`` are time-major ``[T, ...]``. The episode is cut at ``T`` and the value after
    the cut is taken as 0 (the study's episodes are complete: nothing is bootstrapped across the cut).
    """
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    next_value = torch.zeros_like(values[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
        next_value = values[t]
    return advantages


def normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero mean, unit (unbiased) standard deviation over the last axis: PPO's per-minibatch advantage
    normalisation."""
    return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + eps)


def log_prob_and_entropy(logits: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``actions`` and entropy of the categorical policy given by ``logits``."""
    log_p = F.log_softmax(logits, dim=-1)
    chosen = log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    entropy = -(log_p.exp() * log_p).sum(-1)
    return chosen, entropy


def clipped_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped policy loss (to minimise): ``mean(max(-A·r, -A·clip(r, 1-ε, 1+ε)))`` over the last axis."""
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped).mean(-1)


def ppo_loss(
    logits: torch.Tensor,
    values: torch.Tensor,
    actions: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    cfg: PPOConfig,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of one agent on one minibatch (tensors ``[B]``), and its diagnostics; with a leading member
    axis (``[M, B]``, logits ``[M, B, A]``) every member's, each reduced over its own minibatch only.

    ``loss = clipped policy loss + value_coef · MSE(value, return) − entropy_coef · entropy``
    (plain MSE, no value clipping; advantages normalised within the minibatch).
    """
    log_probs, entropy = log_prob_and_entropy(logits, actions)
    log_ratio = log_probs - old_log_probs
    ratio = log_ratio.exp()
    policy_loss = clipped_surrogate(ratio, normalise(advantages), cfg.clip)
    value_loss = (values - returns).pow(2).mean(-1)
    entropy = entropy.mean(-1)
    loss = policy_loss + cfg.value_coef * value_loss - cfg.entropy_coef * entropy
    stats = {
        "policy_loss": policy_loss.detach(),
        "value_loss": value_loss.detach(),
        "entropy": entropy.detach(),
        "approx_kl": ((ratio - 1) - log_ratio).mean(-1).detach(),
        "clip_fraction": ((ratio - 1).abs() > cfg.clip).float().mean(-1).detach(),
    }
    return loss, stats


# --------------------------------------------------------------------------------------------------------------
# 5. The update
# --------------------------------------------------------------------------------------------------------------


class Agent:
    """One actor-critic and its AdamW, updated the plain way: ``nn.Module``, ``loss.backward()``,
    ``clip_grad_norm_``, ``optimizer.step()``.

    This is the algorithm as it reads; :class:`~plasticity_lab.population.Population` computes the same update for
    many agents at once. Interventions (conditions) act on populations only.
    """

    def __init__(self, network: nn.Module, ppo: PPOConfig = PPOConfig()):
        self.network = network
        self.ppo = ppo
        self.new_optimizer()

    def new_optimizer(self) -> None:
        """A fresh AdamW (empty moment estimates). The study does this at every shift."""
        self.optimizer = torch.optim.AdamW(self.network.parameters(), lr=self.ppo.lr, eps=self.ppo.adam_eps,
                                           weight_decay=self.ppo.weight_decay)

    def forward(self, obs: torch.Tensor):
        return self.network(obs)

    def update(self, rollout: Rollout, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """PPO's epochs of minibatch updates on one rollout; returns the diagnostics averaged over minibatches.

        ``rollout``'s buffers are time-major ``[T, *batch]``; their rows are taken in the order ``t`` first, then
        the batch axes, and each epoch shuffles them with one ``torch.rand(1, rows)`` draw (the draw a population
        of one makes, so that both train on the same minibatches).
        """
        cfg = self.ppo
        batch = {k: getattr(rollout, k).flatten(0, rollout.actions.dim() - 1) for k in Rollout.UPDATE_KEYS}
        rows = batch["actions"].shape[0]
        before = [p.detach().clone() for p in self.network.parameters()]
        totals: dict[str, float] = {}
        steps = 0
        for _ in range(cfg.epochs):
            order = torch.rand(1, rows, generator=generator, device=generator.device).argsort(dim=1)[0]
            for start in range(0, rows - cfg.minibatch_size + 1, cfg.minibatch_size):  # a partial one is dropped
                picked = order[start:start + cfg.minibatch_size].to(batch["obs"].device)
                mb = {k: v[picked] for k, v in batch.items()}
                logits, values, features = self.network(mb["obs"])
                loss, stats = ppo_loss(logits, values, mb["actions"], mb["log_probs"], mb["advantages"],
                                       mb["returns"], cfg)
                self.optimizer.zero_grad()
                loss.backward()
                stats["grad_norm"] = nn.utils.clip_grad_norm_(self.network.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                stats["dead_units"] = dead_unit_fraction(features.detach().unsqueeze(0))[0]
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value)
                steps += 1
        out = {k: torch.tensor(v / steps) for k, v in totals.items()}
        after = [p.detach().unsqueeze(0) for p in self.network.parameters()]
        out["weight_magnitude"] = weight_magnitude(after)[0]
        out["weight_difference"] = weight_difference([p.unsqueeze(0) for p in before], after)[0]
        return out
