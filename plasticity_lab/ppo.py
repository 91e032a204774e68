"""Proximal Policy Optimisation as the study runs it, for one agent, readable top to bottom.

1. **Settings** (PROTOCOL §2): :class:`PPOConfig`.
2. **Rollout**: whole episodes from ``num_envs`` copies of the environment with the current (sampling) policy,
   batch after batch until at least ``min_transitions`` transitions are gathered (:func:`collect_episodes`).
3. **Advantages**: GAE per complete episode, bootstrapping 0 at the episode's end or cut (:func:`gae`); the value
   target is advantage + old value.
4. **Loss**: the clipped policy loss, the value error and the entropy bonus (:func:`ppo_loss`).
5. **Update**: ``epochs`` passes over whatever the epoch collected, in shuffled minibatches of ``minibatch_size``
   (:func:`minibatch_order`); each minibatch normalises its own advantages and takes one AdamW step, with the
   gradient clipped to a global norm of ``max_grad_norm`` (:class:`Agent`).

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

from . import streams
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
    #: Collection goes on, a batch of one episode per environment copy at a time, until at least this many
    #: transitions are gathered (PROTOCOL §1: the gridworld's 11 × 100 = 1 100 is one batch).
    min_transitions: int = 1024


# --------------------------------------------------------------------------------------------------------------
# 2. Rollout
# --------------------------------------------------------------------------------------------------------------


class Policy(Protocol):
    """What collection needs from an agent: its settings and a forward pass ``obs -> (logits, value, features)``
    over any leading axes (one agent's ``[E, ...]``, a population's ``[M, E, ...]``)."""

    ppo: PPOConfig

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...


class PopulationEnv(Protocol):
    """What collection needs from an environment batched over ``members × copies``.

    ``step`` returns ``over [M, E]``: whether each copy's episode has ended, at this step or before (a copy whose
    episode is over keeps stepping with reward 0 until the next ``reset``, and those steps are not transitions).
    ``episodes_end`` says whether an episode can end before ``episode_length`` steps; where it cannot (the
    gridworld), collection never has to look at ``over`` and every step of a batch is a transition.
    """

    members: int
    copies: int
    episode_length: int
    episodes_end: bool

    def reset(self, generator: torch.Generator) -> torch.Tensor: ...  # -> obs [M, E, ...]

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...  # obs, reward, over


@dataclass
class Rollout:
    """One epoch's collection: time-major buffers ``[T, M, E]`` (``T`` the steps of all its batches, one after the
    other), plus GAE results.

    ``valid [T, M, E]`` marks the steps that are transitions (``None``: all of them, as in the gridworld, whose
    episodes never end early). With ``valid``, ``obs`` holds only those steps' observations, ``[R, ...]`` in
    ``(t, m, e)`` order (``R = valid.sum()``), because the steps after an episode's end would otherwise fill most of
    the memory; without it, ``obs`` is ``[T, M, E, ...]`` like the other buffers.

    ``episode_return [B, M, E]`` is the undiscounted return of each episode of each batch; ``kept [B, M]`` says
    which batches each member keeps (``None``: all): a member that already has ``min_transitions`` plays the
    batches the others still need without keeping them, as an agent trained alone would not have played them.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor
    advantages: torch.Tensor | None = None
    returns: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    episode_return: torch.Tensor | None = None
    kept: torch.Tensor | None = None

    #: The buffers an update reads, in the order the loss takes them.
    UPDATE_KEYS: ClassVar[tuple[str, ...]] = ("obs", "actions", "log_probs", "advantages", "returns")

    def __post_init__(self):
        if self.episode_return is None:  # one batch of whole episodes
            if self.valid is None:  # every step a transition
                self.episode_return = self.rewards.sum(0).unsqueeze(0)
            else:  # the steps after an episode's end pay 0; summed exactly (float64), however many there are
                self.episode_return = self.rewards.to(torch.float64).sum(0).to(self.rewards.dtype).unsqueeze(0)

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[M, B·E]`` (batch-major); NaN for the episodes of a batch the
        member does not keep."""
        returns = self.episode_return
        if self.kept is not None:
            returns = returns.masked_fill(~self.kept.unsqueeze(-1), float("nan"))
        return returns.transpose(0, 1).reshape(returns.shape[1], -1)

    def mean_episode_return(self) -> torch.Tensor:
        """Mean return of the episodes each member keeps, ``[M]``: the study's train return. Where episodes end
        (members may keep different batches) it is summed in float64, which holds these sums exactly: a member's
        mean then does not depend on how many batches the other members needed."""
        if self.valid is None:  # fixed-length episodes: every member keeps the one batch
            return self.episode_returns().mean(1)
        kept = (torch.ones(self.episode_return.shape[:2], dtype=torch.bool, device=self.episode_return.device)
                if self.kept is None else self.kept)
        kept = kept.to(torch.float64).unsqueeze(-1).expand_as(self.episode_return)
        mean = (self.episode_return.to(torch.float64) * kept).sum((0, 2)) / kept.sum((0, 2))
        return mean.to(self.episode_return.dtype)

    def transitions(self) -> torch.Tensor:
        """How many transitions each member collected, ``[M]``."""
        T, members, copies = self.actions.shape
        if self.valid is None:
            return torch.full((members,), T * copies, device=self.actions.device)
        return self.valid.sum((0, 2))

    def flat(self) -> dict[str, torch.Tensor]:
        """Per-member flat batches ``[M, T·E, ...]`` for the update (every step a transition: ``valid`` is None)."""
        if self.valid is not None:
            raise ValueError("flat() needs a rollout whose every step is a transition; this one has episode ends "
                             "(use population.MemberRows)")

        def flatten(x: torch.Tensor) -> torch.Tensor:
            x = x.movedim(0, 1)  # [M, T, E, ...]
            return x.reshape(x.shape[0], -1, *x.shape[3:])

        return {key: flatten(getattr(self, key)) for key in self.UPDATE_KEYS}

    @classmethod
    def concatenate(cls, batches: list["Rollout"]) -> "Rollout":
        """The batches of one epoch as one rollout, in order (each batch's GAE already computed on its own: no
        episode runs across a batch's end)."""
        if len(batches) == 1:
            return batches[0]
        if any(b.valid is None for b in batches) and any(b.valid is not None for b in batches):
            raise ValueError("cannot concatenate batches with and without episode ends")
        joined = {}
        for key in ("obs", "actions", "log_probs", "values", "rewards", "advantages", "returns", "valid",
                    "episode_return"):
            parts = [getattr(b, key) for b in batches]
            joined[key] = None if parts[0] is None else torch.cat(parts)
        kept = [b.kept if b.kept is not None else torch.ones(b.episode_return.shape[:2], dtype=torch.bool,
                                                             device=b.episode_return.device) for b in batches]
        joined["kept"] = None if all(b.kept is None for b in batches) else torch.cat(kept)
        return cls(**joined)


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One categorical sample per row of ``logits [..., A]``."""
    return streams.categorical(torch.softmax(logits, dim=-1), generator)


def _episode_steps(agent: Policy, env: PopulationEnv, generator: torch.Generator):
    """One whole episode in every copy of ``env`` with the agent's sampling policy, a step at a time:
    yields ``(obs, logits, values, actions, log_probs, rewards, running)``, ``running [M, E]`` whether the step belongs to the
    copy's episode (``None`` where episodes cannot end early: every step does). Stops when every copy's episode is
    over. The one place that draws an episode's random numbers, so that collecting and evaluating draw them alike."""
    obs = env.reset(generator)
    running = None
    graphs = getattr(agent, "graphs", None)
    for _ in range(env.episode_length):
        step = None if graphs is None else graphs.collection_step(env, obs, generator)
        if step is not None:  # the same step compiled into one graph (plasticity_lab.graphs; fixed-length episodes)
            logits, values, actions, log_probs, next_obs, rewards = step
            env.count_step()
        else:
            logits, values, _ = agent.forward(obs)
            actions = sample_actions(logits, generator)
            log_probs, _ = log_prob_and_entropy(logits, actions)
            next_obs, rewards, over = env.step(actions)
        yield obs, logits, values, actions, log_probs, rewards, running
        if env.episodes_end:
            running = ~over
            if not bool(running.any()):
                break
        obs = next_obs


def _batch(agent: Policy, env: PopulationEnv, generator: torch.Generator, keep: torch.Tensor | None,
           advantages: bool) -> Rollout:
    """One episode in every copy; ``keep [M]``: the members that keep this batch (``None``: all)."""
    buffers: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "actions", "log_probs", "values", "rewards")}
    valid: list[torch.Tensor] = []
    for obs, logits, values, actions, log_probs, rewards, running in _episode_steps(agent, env, generator):
        if env.episodes_end:
            step_valid = torch.ones_like(rewards, dtype=torch.bool) if running is None else running
            if keep is not None:
                step_valid = step_valid & keep.unsqueeze(1)
            valid.append(step_valid)
            obs = obs[step_valid]  # keep only the transitions' observations (in (m, e) order)
        for key, value in zip(buffers, (obs, actions, log_probs, values, rewards)):
            buffers[key].append(value)
    stacked = {k: torch.cat(v) if k == "obs" and env.episodes_end else torch.stack(v) for k, v in buffers.items()}
    mask = torch.stack(valid) if env.episodes_end else None
    rollout = Rollout(**stacked, valid=mask, kept=None if keep is None else keep.unsqueeze(0))
    if advantages:
        cfg = agent.ppo
        graphs = getattr(agent, "graphs", None)
        advantages = None if graphs is None or mask is not None else graphs.advantages(
            rollout.rewards, rollout.values, cfg.gamma, cfg.gae_lambda)  # the same recursion as one graph
        rollout.advantages = (gae(rollout.rewards, rollout.values, cfg.gamma, cfg.gae_lambda, mask)
                              if advantages is None else advantages)
        rollout.returns = rollout.advantages + rollout.values
    return rollout


@torch.no_grad()
def collect_episodes(
    agent: Policy, env: PopulationEnv, generator: torch.Generator, advantages: bool = True,
    min_transitions: int | None = None,
) -> Rollout:
    """Collect one epoch's transitions with the agent's current (sampling) policy (PROTOCOL §1): a batch of one whole
    episode in every copy of ``env``, again and again until each member has at least ``min_transitions``
    (default: ``agent.ppo.min_transitions``; 1 for a single batch).

    Where episodes cannot end early every member needs the same number of batches, known in advance. Where they
    can, members reach the target after different batches; a member that has it keeps none of the later batches,
    which the others play on. With ``advantages=True`` the rollout also gets GAE advantages and value targets,
    ready for an update.
    """
    target = agent.ppo.min_transitions if min_transitions is None else int(min_transitions)
    if target < 1:
        raise ValueError(f"min_transitions must be >= 1; got {target}")
    if not env.episodes_end:
        per_batch = env.copies * env.episode_length
        batches = [_batch(agent, env, generator, None, advantages) for _ in range(-(-target // per_batch))]
        return Rollout.concatenate(batches)
    batches = [_batch(agent, env, generator, None, advantages)]
    counts = batches[0].transitions()
    while bool((counts < target).any()):
        keep = counts < target
        batches.append(_batch(agent, env, generator, keep, advantages))
        counts = counts + batches[-1].transitions()
    return Rollout.concatenate(batches)


@torch.no_grad()
def play_episodes(agent: Policy, env: PopulationEnv, generator: torch.Generator) -> torch.Tensor:
    """Undiscounted return ``[M, E]`` of one episode in every copy of ``env``, for evaluation.

    The same episodes as :func:`collect_episodes`'s first batch with the same generator (both step through
    ``_episode_steps``), without keeping the buffers a PPO update needs: at 55 test episodes those are ~120 MB
    of observations per evaluation. (The environment already pays 0 after an episode's end.)
    """
    returns = None
    for *_, rewards, _ in _episode_steps(agent, env, generator):
        returns = rewards.clone() if returns is None else returns.add_(rewards)
    return returns


# --------------------------------------------------------------------------------------------------------------
# 3. Advantages and 4. the loss
# --------------------------------------------------------------------------------------------------------------


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float,
        valid: torch.Tensor | None = None) -> torch.Tensor:
    """Generalised advantage estimates of whole episodes, time-major ``[T, ...]``.

    Without ``valid`` every episode runs to the last step ``T − 1``; with it (``[T, ...]`` bool, True while a copy's
    episode runs: a run of True from ``t = 0``, then False) an episode ends at its last valid step. Either way the
    value after an episode's end, or after its cut at ``T``, is taken as 0: nothing is bootstrapped past an episode
    (the protocol's episodes are complete, or cut at a fixed length as part of the game). Advantages of the steps
    after an end are 0.
    """
    # continues[t]: step t + 1 belongs to the same episode as step t (0 at an end and at the cut). Multiplying by
    # 1.0 is exact, so episodes without ends get the same numbers as a recursion without the factor.
    continues = torch.zeros_like(rewards)
    continues[:-1] = 1.0 if valid is None else valid[1:].to(rewards.dtype)
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    next_value = torch.zeros_like(values[0])
    for t in reversed(range(rewards.shape[0])):
        delta = rewards[t] + gamma * next_value * continues[t] - values[t]
        running = delta + gamma * lam * continues[t] * running
        advantages[t] = running
        next_value = values[t]
    return advantages if valid is None else advantages * valid.to(rewards.dtype)


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


def minibatch_order(members: int, rows: int, generator: torch.Generator,
                    counts: torch.Tensor | None = None) -> torch.Tensor:
    """One pass's shuffle of each agent's rows, ``[members, rows]``: row ``m`` is a random permutation of
    ``0 .. rows − 1``, from one ``torch.rand(members, rows)`` draw.

    With ``counts [members]`` (agents that collected different numbers of transitions, ``rows`` the largest),
    agent ``m``'s first ``counts[m]`` entries are a random permutation of its own rows ``0 .. counts[m] − 1`` and
    the rest point past them (never a minibatch of that agent's: see ``Population.update``).
    """
    keys = streams.permutation_keys(generator, members, rows)
    if counts is not None:
        past = torch.arange(rows, device=keys.device) >= counts.to(keys.device).unsqueeze(1)
        # after every real row: rand lies in [0, 1), member streams' integer keys in [0, 2³²)
        keys = keys.masked_fill(past, 2.0 if keys.is_floating_point() else 2**32)
    return keys.argsort(dim=1)


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

        ``rollout``'s buffers are time-major ``[T, *batch]``; their rows (the transitions, where the rollout has
        episode ends) are taken in the order ``t`` first, then the batch axes, and each epoch shuffles them with
        :func:`minibatch_order` (the draw a population of one makes, so that both train on the same minibatches).
        """
        cfg = self.ppo
        if rollout.valid is None:
            batch = {k: getattr(rollout, k).flatten(0, rollout.actions.dim() - 1) for k in Rollout.UPDATE_KEYS}
        else:  # the observations are stored for the transitions only, in the same order
            batch = {k: getattr(rollout, k) if k == "obs" else getattr(rollout, k)[rollout.valid]
                     for k in Rollout.UPDATE_KEYS}
        rows = batch["actions"].shape[0]
        before = [p.detach().clone() for p in self.network.parameters()]
        totals: dict[str, float] = {}
        steps = 0
        for _ in range(cfg.epochs):
            order = minibatch_order(1, rows, generator)[0]
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
