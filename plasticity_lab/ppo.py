"""Proximal Policy Optimisation, as the study runs it, readable top to bottom.

The study's settings (PROTOCOL §2) live in :class:`PPOConfig`. The algorithm, for one agent:

1. **Collect** whole episodes from ``num_envs`` copies of the environment (:func:`collect_episodes`).
2. **Advantages** with GAE per complete episode, bootstrapping 0 at the episode cut (:func:`gae`); the value
   target is advantage + old value.
3. **Update**: ``epochs`` passes over the buffer in shuffled minibatches of ``minibatch_size``; each minibatch
   normalises its own advantages and takes one AdamW step on the clipped loss (:func:`ppo_loss`), with the
   gradient clipped to a global norm of ``max_grad_norm``.

Many agents are trained as one computation (:class:`Population`): each agent's parameters are stacked along a
leading *member* axis. The network runs on all members at once (:mod:`plasticity_lab.stacked`: one batched
matrix product per layer; ``torch.func.vmap`` over the module for networks it does not know), and the loss
reduces over the last axis only, so the same :func:`ppo_loss` is one agent's loss on ``[B]`` tensors and every
member's on ``[M, B]``. Summing the members' losses keeps their gradients apart (each member's loss depends
only on its own slice), and AdamW acts element-wise, so one optimizer over stacked tensors is exactly one AdamW
per member. Gradient clipping is the one step that mixes elements, so it is done per member by hand.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from . import stacked
from .metrics import dead_unit_fraction, member_norm, weight_difference, weight_magnitude
from .nets import NetworkSpec, fresh_parameters


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
# The single-agent pieces
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
# Collection
# --------------------------------------------------------------------------------------------------------------


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

    def episode_returns(self) -> torch.Tensor:
        """Undiscounted return of each episode, ``[M, E]``."""
        return self.rewards.sum(0)

    def flat(self) -> dict[str, torch.Tensor]:
        """Per-member flat batches ``[M, T·E, ...]`` for the update."""

        def flatten(x: torch.Tensor) -> torch.Tensor:
            x = x.movedim(0, 1)  # [M, T, E, ...]
            return x.reshape(x.shape[0], -1, *x.shape[3:])

        return {
            "obs": flatten(self.obs),
            "actions": flatten(self.actions),
            "log_probs": flatten(self.log_probs),
            "advantages": flatten(self.advantages),
            "returns": flatten(self.returns),
        }


def sample_actions(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One categorical sample per row of ``logits [..., A]``."""
    probs = torch.softmax(logits.reshape(-1, logits.shape[-1]), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


def _episode_steps(population: "Population", env: PopulationEnv, generator: torch.Generator):
    """One whole episode in every copy of ``env`` with the population's sampling policies, a step at a time:
    yields ``(obs, logits, values, actions, rewards)``. The one place that draws an episode's random numbers, so
    that collecting and evaluating draw them alike."""
    obs = env.reset(generator)
    for _ in range(env.episode_length):
        logits, values, _ = population.forward(obs)
        actions = sample_actions(logits, generator)
        next_obs, rewards = env.step(actions)
        yield obs, logits, values, actions, rewards
        obs = next_obs


@torch.no_grad()
def collect_episodes(
    population: "Population", env: PopulationEnv, generator: torch.Generator, advantages: bool = True
) -> Rollout:
    """Run one whole episode in every copy of ``env`` with the population's current (sampling) policies.

    With ``advantages=True`` the rollout also gets GAE advantages and value targets, ready for an update.
    """
    buffers: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "actions", "log_probs", "values", "rewards")}
    for obs, logits, values, actions, rewards in _episode_steps(population, env, generator):
        log_probs, _ = log_prob_and_entropy(logits, actions)
        for key, value in zip(buffers, (obs, actions, log_probs, values, rewards)):
            buffers[key].append(value)
    rollout = Rollout(**{k: torch.stack(v) for k, v in buffers.items()})
    if not advantages:
        return rollout
    cfg = population.ppo
    rollout.advantages = gae(rollout.rewards, rollout.values, cfg.gamma, cfg.gae_lambda)
    rollout.returns = rollout.advantages + rollout.values
    return rollout


@torch.no_grad()
def play_episodes(population: "Population", env: PopulationEnv, generator: torch.Generator) -> torch.Tensor:
    """Undiscounted return ``[M, E]`` of one episode in every copy of ``env``, for evaluation.

    The same episodes as :func:`collect_episodes` with the same generator (both step through
    ``_episode_steps``), without keeping the buffers a PPO update needs: at 55 test episodes those are ~120 MB
    of observations per evaluation.
    """
    returns = None
    for *_, rewards in _episode_steps(population, env, generator):
        returns = rewards.clone() if returns is None else returns.add_(rewards)
    return returns


# --------------------------------------------------------------------------------------------------------------
# The population: stacked parameters, one optimizer, the update
# --------------------------------------------------------------------------------------------------------------


class Population:
    """``members`` agents of the same architecture, trained as one batched computation.

    ``params`` maps each parameter name of the network to a leaf tensor ``[M, *shape]``. Conditions edit
    ``params`` in place (under ``torch.no_grad()``) or replace the architecture with :meth:`set_network`.
    Hooks are called on ``self.condition`` (see :mod:`plasticity_lab.conditions`).
    """

    def __init__(
        self,
        spec: NetworkSpec,
        member_seeds: list[int],
        ppo: PPOConfig = PPOConfig(),
        condition=None,
        device: str | torch.device = "cpu",
    ):
        self.ppo = ppo
        self.device = torch.device(device)
        self.member_seeds = list(member_seeds)
        self.members = len(self.member_seeds)
        self.condition = condition
        #: Keep the parameters as they were before the last update (``update_start``), for
        #: :meth:`weight_statistics`; a condition that logs the weights after its own changes sets it in ``setup``.
        self.keep_update_start = False
        self.update_start: list[torch.Tensor] | None = None
        self.weight_decay = torch.full((self.members,), ppo.weight_decay, device=self.device)
        module = spec.build()
        # Each member's initial weights come from its own seed, so they do not depend on the population.
        generators = [torch.Generator().manual_seed(int(s)) for s in self.member_seeds]
        params = fresh_parameters(module, generators)
        self.set_network(module, {k: v.to(self.device) for k, v in params.items()})
        self.initial_params = {k: v.detach().clone() for k, v in self.params.items()}
        self.new_optimizer()

    # ---- structure --------------------------------------------------------------------------------------

    def set_network(self, module: nn.Module, params: dict[str, torch.Tensor], frozen=()) -> None:
        """Install an architecture (a template module) and its stacked parameters ``[M, ...]``.

        Parameters named in ``frozen`` take no gradient, no optimizer step and no weight decay (plasticity
        injection freezes its subtracted copy). Call :meth:`new_optimizer` afterwards.
        """
        self.template = copy.deepcopy(module).to("meta")
        self.stacked = stacked.supports(self.template)
        self.frozen = frozenset(frozen)
        self.params = {k: v.detach().clone().requires_grad_(k not in self.frozen) for k, v in params.items()}
        sparse = stacked.sparse_input_weight(self.template) if self.stacked else None
        if sparse in self.params and self.device.type == "cpu" and stacked.cpu_matmul() == "onednn+sparse":
            # the layout the sparse first layer reads and writes; edits in place keep it
            self.params[sparse] = stacked.input_major(self.params[sparse].detach()).requires_grad_(
                sparse not in self.frozen)
        self.buffers = {k: v.to(self.device).unsqueeze(0).expand(self.members, *v.shape).clone()
                        for k, v in module.named_buffers()}

    @property
    def weight_decay(self) -> torch.Tensor:
        """Each member's decoupled weight decay ``[M]``, applied before every optimizer step (see
        :meth:`_decay_weights`). Assign a new tensor to change it: an in-place edit is not seen."""
        return self._weight_decay

    @weight_decay.setter
    def weight_decay(self, value: torch.Tensor) -> None:
        self._weight_decay = value
        # Whether any member decays, read once here rather than before every step: on a GPU, reading a value
        # of a tensor waits for the device to finish its queued work.
        self._any_weight_decay = bool((value != 0).any())

    def trainable(self) -> dict[str, torch.Tensor]:
        """The parameters the optimizer updates (all but the frozen ones)."""
        return {k: v for k, v in self.params.items() if k not in self.frozen}

    def new_optimizer(self) -> None:
        """A fresh AdamW (empty moment estimates). The study does this at every shift, in every condition."""
        # The fused kernel makes one pass over the (large, stacked) parameters instead of one per Adam
        # operation; the update is the same AdamW.
        self.optimizer = torch.optim.AdamW(
            list(self.trainable().values()), lr=self.ppo.lr, eps=self.ppo.adam_eps, weight_decay=0.0, fused=True
        )

    def member_params(self, member: int) -> dict[str, torch.Tensor]:
        """One member's parameters (views), e.g. to load into an ordinary ``nn.Module``."""
        return {k: v[member] for k, v in self.params.items()}

    def fresh_params(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """A newly drawn PyTorch-default initialisation of the current architecture, for every member."""
        generators = [generator] * self.members
        return {k: v.to(self.device) for k, v in fresh_parameters(self.template, generators).items()}

    # ---- forward ----------------------------------------------------------------------------------------

    def _call(self, params, buffers, obs, return_hidden=False):
        return functional_call(self.template, (params, buffers), (obs,), {"return_hidden": return_hidden})

    def forward(self, obs: torch.Tensor, return_hidden: bool = False):
        """Every member on its own observations: ``obs [M, N, ...] -> (logits, value, features[, hidden])``."""
        if self.stacked:
            return stacked.forward(self.template, self.params, obs, return_hidden)
        fn = lambda p, b, x: self._call(p, b, x, return_hidden)  # noqa: E731
        return vmap(fn)(self.params, self.buffers, obs)

    # ---- update -----------------------------------------------------------------------------------------

    def _losses(self, obs, actions, log_probs, advantages, returns):
        logits, values, features = self.forward(obs)
        losses, stats = ppo_loss(logits, values, actions, log_probs, advantages, returns, self.ppo)
        stats["dead_units"] = dead_unit_fraction(features)
        return losses, stats

    def update(self, rollout: Rollout, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """PPO's epochs of minibatch updates; returns per-member diagnostics ``[M]`` averaged over minibatches.

        The observations of the last minibatch stay in ``self.last_minibatch_obs`` (``[M, B, ...]``): ReDo
        scores its units on them.
        """
        length, members, copies = rollout.actions.shape
        n = length * copies  # rows per member, numbered as in ``rollout.flat()``: t·copies + e
        size = self.ppo.minibatch_size
        before = [p.detach().clone() for p in self.params.values()]
        # Minibatch rows are picked straight from the time-major buffers seen as one long list of rows: one
        # ``index_select`` per buffer is several times faster than indexing ``[member, row]`` (measured: 52 µs
        # against 294 µs for the observations of 15 gridworld members), and no member-major copy is made.
        keys = ("obs", "actions", "log_probs", "advantages", "returns")
        rows = {k: getattr(rollout, k).flatten(0, 2) for k in keys}  # row (t·members + m)·copies + e
        member_offset = (torch.arange(members, device=generator.device) * copies).unsqueeze(1)
        totals: dict[str, torch.Tensor] = {}
        steps = 0
        for _ in range(self.ppo.epochs):
            # An independent shuffle per member; a trailing partial minibatch is dropped.
            order = torch.rand(members, n, generator=generator, device=generator.device).argsort(dim=1)
            for start in range(0, n - size + 1, size):
                # The shuffle lives on the generator's device; the buffers on the population's.
                picked = order[:, start:start + size]
                index = (picked // copies * (members * copies) + picked % copies + member_offset).reshape(-1)
                index = index.to(self.device)
                minibatch = [rows[k].index_select(0, index).view(members, size, *rows[k].shape[1:]) for k in keys]
                losses, stats = self._losses(*minibatch)
                total = losses.sum()
                if self.condition is not None:
                    extra = self.condition.extra_loss(self)
                    if extra is not None:
                        total = total + extra.sum()
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                stats["grad_norm"] = self._clip_gradients()
                self._decay_weights()
                self._optimizer_step()
                if self.condition is not None:
                    self.condition.after_optimizer_step(self, generator)
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0) + value.detach()
                steps += 1
        self.last_minibatch_obs = minibatch[0]
        self.update_start = before if self.keep_update_start else None
        out = {k: v / steps for k, v in totals.items()}
        after = [p.detach() for p in self.params.values()]
        out["weight_magnitude"] = weight_magnitude(after)
        out["weight_difference"] = weight_difference(before, after)
        return out

    def weight_statistics(self) -> dict[str, torch.Tensor]:
        """``weight_magnitude`` and ``weight_difference`` (``[M]`` each) of the parameters as they are now, the
        difference against the parameters before the last update: what :meth:`update` logs, measured again after
        a condition changed the weights (ReDo's ``log_weights="after"``). Needs ``keep_update_start``."""
        if self.update_start is None:
            raise RuntimeError("weight_statistics needs the parameters before the last update: set "
                               "keep_update_start before calling update")
        now = [p.detach() for p in self.params.values()]
        if len(now) != len(self.update_start):
            raise RuntimeError("the network's parameters changed since the last update")
        return {"weight_magnitude": weight_magnitude(now),
                "weight_difference": weight_difference(self.update_start, now)}

    def _optimizer_step(self) -> None:
        """``self.optimizer.step()``, except for parameters stored input-major (see
        :func:`plasticity_lab.stacked.input_major`): PyTorch's fused AdamW copies a tensor that is not contiguous
        into a contiguous one and back (parameter, gradient and both moments, every step). AdamW is element-wise,
        so the same fused kernel on their contiguous transposes computes the same update, without the copies."""
        group = self.optimizer.param_groups[0]
        transposed = {id(p) for p in group["params"] if p.grad is not None and stacked.is_input_major(p)
                      and not p.is_contiguous()}
        if (not transposed or not hasattr(torch, "_fused_adamw_") or len(self.optimizer.param_groups) > 1
                or group["amsgrad"] or not group["fused"]):
            self.optimizer.step()
            return
        tensors: list[list[torch.Tensor]] = [[], [], [], [], []]  # params, grads, exp_avgs, exp_avg_sqs, steps
        with torch.no_grad():
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.optimizer.state[p]
                if not state:  # as torch.optim.Adam initialises a fused group's state
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                four = [p, p.grad, state["exp_avg"], state["exp_avg_sq"]]
                if id(p) in transposed and all(t.stride() == p.stride() for t in four):
                    four = [t.transpose(1, 2) for t in four]
                for bucket, t in zip(tensors, four + [state["step"]]):
                    bucket.append(t)
            beta1, beta2 = group["betas"]
            torch._foreach_add_(tensors[4], 1)
            torch._fused_adamw_(*tensors[:4], [], tensors[4], amsgrad=group["amsgrad"], lr=group["lr"], beta1=beta1,
                                beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"],
                                maximize=group["maximize"], grad_scale=None, found_inf=None)

    def _clip_gradients(self) -> torch.Tensor:
        """Clip each member's gradient to ``max_grad_norm`` (as ``clip_grad_norm_`` would); returns the norms."""
        grads = [p.grad for p in self.trainable().values() if p.grad is not None]
        norms = member_norm(grads)
        scale = (self.ppo.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        return norms

    @torch.no_grad()
    def _decay_weights(self) -> None:
        """Decoupled weight decay θ ← θ·(1 − lr·wd), per member, applied before the Adam step as AdamW does."""
        if not self._any_weight_decay:
            return
        factor = 1.0 - self.ppo.lr * self.weight_decay
        for p in self.trainable().values():
            p.mul_(factor.view(-1, *([1] * (p.dim() - 1))))
