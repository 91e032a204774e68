"""PPO with random network distillation for a population: the study's Montezuma's Revenge agent, top to bottom.

Each iteration (the RND paper's Algorithm 1, one population of agents at once):

1. **Rollout** (:meth:`RNDAgent.collect`): ``rollout_length`` steps in every copy of the game with the sampling
   policy, keeping the frames as bytes, the actions, their log-probabilities, both value estimates (extrinsic and
   intrinsic: the network's value head has one output per stream), the game's rewards and where episodes ended.
   Afterwards, in one batched pass, the intrinsic reward of every step: the predictor's error on the frame the step
   led to. The observation statistics then take in the rollout's frames.
2. **Advantages** (:meth:`RNDAgent.advantages`): the extrinsic stream with rewards clipped to ``[-1, 1]``, discount
   0.999, cut at episode ends; the intrinsic stream with rewards divided by the spread of their discounted sum
   (:func:`~plasticity_lab.rnd.normalised_intrinsic_rewards`), discount 0.99, never cut; both bootstrapped from
   the values after the rollout. The policy's advantage is ``2 · A_ext + 1 · A_int``.
3. **Update** (:meth:`RNDAgent.update`): ``epochs`` passes over each member's rows in ``minibatches`` shuffled
   minibatches. Loss per member: PPO's clipped policy loss on the combined advantage (normalised within the
   minibatch), half the sum of both streams' value errors, minus ``entropy_coef`` × entropy; the condition's extra
   term. Gradients are clipped per member, then the population's AdamW steps and the condition acts (regenerative
   L2's pull, soft shrink+perturb's draw: they act on the agent's network, not on RND's). The predictor takes its
   own AdamW step on the same minibatch (:meth:`~plasticity_lab.rnd.RNDNetworks.predictor_loss`). Weight magnitude
   and the weights' change over the update are measured after it, as the gridworld's are.

There are no rounds and no shifts: the non-stationarity is RND's own, the intrinsic reward that moves as the
predictor learns (PROTOCOL §3).
"""

from __future__ import annotations

import numpy as np
import torch

from .metrics import dead_unit_fraction
from .nets import NetworkSpec
from .ppo import clipped_surrogate, log_prob_and_entropy, normalise, sample_actions
from .rnd import (RewardForwardFilter, RNDConfig, RNDNetworks, RunningMeanStd, bootstrapped_gae,
                  normalised_intrinsic_rewards)


class RNDAgent:
    """A population's PPO + RND learner. ``population``: a :class:`~plasticity_lab.population.Population` whose
    network has a two-output value head (``NetworkSpec(encoder="atari", value_outputs=2)``); ``rnd``: the members'
    :class:`~plasticity_lab.rnd.RNDNetworks`."""

    def __init__(self, population, rnd: RNDNetworks, config: RNDConfig = RNDConfig()):
        if population.members != rnd.members:
            raise ValueError(f"the population has {population.members} members and RND {rnd.members}")
        self.population, self.rnd, self.config = population, rnd, config
        members = population.members
        # RND's predictor learns beside the policy, with the same learning rate (one AdamW over stacked members'
        # tensors is one AdamW per member: it acts element by element)
        self.predictor_optimizer = torch.optim.AdamW(list(rnd.predictor_params.values()), lr=config.lr,
                                                     weight_decay=0.0)
        self.reward_filter = RewardForwardFilter(config.gamma_intrinsic)
        self.reward_stats = RunningMeanStd(members, device=population.device)

    # ---- 1. rollout -------------------------------------------------------------------------------------

    @torch.no_grad()
    def initialise_observation_stats(self, env, obs: torch.Tensor, generator: torch.Generator,
                                     steps: int | None = None) -> torch.Tensor:
        """Play ``steps`` (default :attr:`RNDConfig.init_steps`) uniformly random actions in every copy and start
        the observation statistics from their frames (the RND paper: without it the first intrinsic rewards are
        noise). Returns the observation to continue from."""
        steps = self.config.init_steps if steps is None else steps
        frames = []
        for _ in range(steps):
            actions = torch.randint(0, env.n_actions, (env.members, env.copies), generator=generator,
                                    device=generator.device)
            obs, _, _ = env.step(actions)
            frames.append(obs)
            if len(frames) == self.config.rollout_length:  # in rollout-sized pieces, to bound the memory
                self.rnd.update_obs_stats(torch.stack(frames, 1).flatten(1, 2))
                frames = []
        if frames:
            self.rnd.update_obs_stats(torch.stack(frames, 1).flatten(1, 2))
        return obs

    @torch.no_grad()
    def collect(self, env, obs: torch.Tensor, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One rollout of :attr:`RNDConfig.rollout_length` steps from ``obs`` (``[M, E, 4, 84, 84]``); returns the
        rollout's buffers (time-major ``[T, M, E, ...]``, plus ``next_values [M, E, 2]``) and the observation to
        continue from."""
        buffers: dict[str, list[torch.Tensor]] = {k: [] for k in ("obs", "actions", "log_probs", "values", "rewards",
                                                                   "ends", "next_obs")}
        for _ in range(self.config.rollout_length):
            logits, values, _ = self.population.forward(obs)
            actions = sample_actions(logits, generator)
            log_probs, _ = log_prob_and_entropy(logits, actions)
            next_obs, rewards, ends = env.step(actions)
            for key, value in zip(buffers, (obs, actions, log_probs, values, rewards, ends, next_obs)):
                buffers[key].append(value)
            obs = next_obs
        rollout = {k: torch.stack(v) for k, v in buffers.items()}
        rollout["next_values"] = self.population.forward(obs)[1]
        # the intrinsic reward of a step is the novelty of where it led; the statistics then take in the frames
        next_frames = rollout.pop("next_obs").transpose(0, 1)  # [M, T, E, ...]
        flat = next_frames.flatten(1, 2)
        rollout["intrinsic"] = self.rnd.intrinsic_reward(flat).view(next_frames.shape[:3]).transpose(0, 1)
        self.rnd.update_obs_stats(flat)
        return rollout, obs

    # ---- 2. advantages ----------------------------------------------------------------------------------

    def advantages(self, rollout: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``advantages [T, M, E]`` (the policy's), and ``returns [T, M, E, 2]`` (each value head's target)."""
        c = self.config
        values, next_values = rollout["values"], rollout["next_values"]
        extrinsic = rollout["rewards"].clamp(-1.0, 1.0)
        intrinsic = normalised_intrinsic_rewards(rollout["intrinsic"], self.reward_filter, self.reward_stats)
        a_ext = bootstrapped_gae(extrinsic, values[..., 0], next_values[..., 0], c.gamma_extrinsic, c.gae_lambda,
                                 rollout["ends"])
        a_int = bootstrapped_gae(intrinsic, values[..., 1], next_values[..., 1], c.gamma_intrinsic, c.gae_lambda)
        returns = torch.stack([a_ext + values[..., 0], a_int + values[..., 1]], -1)
        return {"advantages": c.extrinsic_coef * a_ext + c.intrinsic_coef * a_int, "returns": returns}

    # ---- 3. update --------------------------------------------------------------------------------------

    def _losses(self, obs, actions, old_log_probs, advantages, returns) -> tuple[torch.Tensor, dict]:
        logits, values, features = self.population.forward(obs)
        log_probs, entropy = log_prob_and_entropy(logits, actions)
        ratio = (log_probs - old_log_probs).exp()
        policy_loss = clipped_surrogate(ratio, normalise(advantages), self.config.clip)
        value_loss = 0.5 * (values - returns).square().mean(1).sum(-1)  # both streams' mean squared errors
        entropy = entropy.mean(-1)
        loss = policy_loss + value_loss - self.config.entropy_coef * entropy
        return loss, {"policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(),
                      "entropy": entropy.detach(), "dead_units": dead_unit_fraction(features.detach())}

    def update(self, rollout: dict[str, torch.Tensor], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """:attr:`RNDConfig.epochs` passes of :attr:`RNDConfig.minibatches` minibatches; the diagnostics per member
        ``[M]``, averaged over minibatches."""
        population, c = self.population, self.config
        targets = self.advantages(rollout)
        T, M, E = rollout["actions"].shape
        rows = T * E

        def member_major(x: torch.Tensor) -> torch.Tensor:  # [T, M, E, ...] -> [M, T·E, ...]
            return x.transpose(0, 1).reshape(M, rows, *x.shape[3:])

        data = [member_major(x) for x in (rollout["obs"], rollout["actions"], rollout["log_probs"],
                                          targets["advantages"], targets["returns"])]
        size = rows // c.minibatches
        if size < 2:
            raise ValueError(f"a rollout of {rows} rows per member cannot make {c.minibatches} minibatches of at least "
                             "2 rows (the advantages are normalised within one)")
        totals: dict[str, torch.Tensor] = {}
        steps = 0
        before = [p.detach().clone() for p in population.params.values()]  # for the weight difference
        for _ in range(c.epochs):
            order = torch.rand(M, rows, generator=generator, device=generator.device).argsort(1)
            for start in range(0, rows - size + 1, size):
                picked = order[:, start:start + size].to(population.device)
                minibatch = [x.gather(1, picked.view(M, size, *([1] * (x.dim() - 2))).expand(M, size, *x.shape[2:]))
                             for x in data]
                loss, stats = self._losses(*minibatch)
                stats["grad_norm"] = population.optimise(loss, generator)  # the condition's term and action too
                predictor_loss = self.rnd.predictor_loss(minibatch[0], generator)
                self.predictor_optimizer.zero_grad(set_to_none=True)
                predictor_loss.sum().backward()
                self.predictor_optimizer.step()
                stats["predictor_loss"] = predictor_loss.detach()
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0) + value
                steps += 1
        out = {k: v / steps for k, v in totals.items()}
        # what a condition acting after the update reads (ReDo scores units on the last minibatch, and may log the
        # weights again after it recycles)
        population.update_start = before
        population.last_minibatch_obs = minibatch[0]
        out.update(population.weight_statistics())
        out["intrinsic_reward"] = rollout["intrinsic"].mean((0, 2))
        return out

    def iterate(self, env, obs: torch.Tensor, generator: torch.Generator) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One rollout and one update: the diagnostics ``[M]`` with ``extrinsic_return`` (the mean score of the
        episodes that ended during the rollout, NaN for a member none of whose episodes ended), and the observation
        to continue from."""
        rollout, obs = self.collect(env, obs, generator)
        stats = self.update(rollout, generator)
        scores = env.episode_returns()
        stats["extrinsic_return"] = torch.tensor([float(np.mean(s)) if s else float("nan") for s in scores])
        stats["episodes"] = torch.tensor([float(len(s)) for s in scores])
        return stats, obs


def atari_network_spec(**options):
    """The agent's network: the ``atari`` encoder, 18 actions, 448 features, one value per reward stream; ``options``:
    a condition's architectural ones (``layernorm``, ``crelu``)."""
    return NetworkSpec(encoder="atari", n_actions=18, hidden=448, value_outputs=2, **options)


__all__ = ["RNDAgent", "atari_network_spec"]
