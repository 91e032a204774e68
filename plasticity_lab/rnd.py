"""Random network distillation (Burda, Edwards, Storkey & Klimov, 2018): the exploration bonus of the study's
Montezuma's Revenge agent, for a population of agents at once.

A *target* network with random weights is never trained; a *predictor* network learns to match its output on the
observations the agent sees. Where the agent has often been the predictor has caught up, and its error is small;
a new observation gives a large error. That error is the *intrinsic reward*. Every function here works on tensors
with a leading member axis ``[M, ...]``: each member has its own target, predictor and statistics.

The pieces, in the order an update uses them (the RND paper's section 2.2 and its appendix A):

1. **Observation normalisation** (:class:`RunningMeanStd`): each pixel of the last frame is whitened by running
   statistics of the observations seen, then clipped to ``[-5, 5]``; the statistics start from frames of a random
   agent (:attr:`RNDConfig.init_steps`). Without it a random network's output barely varies across frames.
2. **The networks** (:class:`RNDNetworks`): the target is three convolutions and one dense layer; the predictor has
   the same convolutions and three dense layers. Leaky ReLU after each convolution, ReLU between the predictor's
   dense layers (the RND paper's code).
3. **The intrinsic reward** (:meth:`RNDNetworks.intrinsic_reward`): the mean squared difference of the two outputs
   per observation.
4. **Reward normalisation** (:class:`RewardForwardFilter` and :class:`RunningMeanStd`): intrinsic rewards are divided
   by the running standard deviation of the discounted intrinsic return, so the bonus keeps one scale while the
   predictor improves.
5. **The predictor's loss** (:meth:`RNDNetworks.predictor_loss`): the same squared error, on a random share
   (:attr:`RNDConfig.update_proportion`) of each minibatch, so that it does not learn faster than the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn
from torch.func import functional_call, vmap

from .nets import fresh_parameters
from .ppo import PPOConfig


@dataclass(frozen=True)
class RNDConfig:
    """RND's and its PPO's settings for Atari, each from the RND paper (Burda et al., 2018: Table 5 and appendix A.4,
    the run that explored Montezuma's Revenge) unless said otherwise."""

    gamma_extrinsic: float = 0.999  # episodic extrinsic returns
    gamma_intrinsic: float = 0.99  # non-episodic intrinsic returns
    extrinsic_coef: float = 2.0  # advantage = 2 · extrinsic + 1 · intrinsic
    intrinsic_coef: float = 1.0
    lr: float = 1e-4
    entropy_coef: float = 1e-3
    clip: float = 0.1
    gae_lambda: float = 0.95
    rollout_length: int = 128  # steps per copy between updates
    epochs: int = 4
    minibatches: int = 4
    #: The share of each minibatch the predictor trains on: the paper's code keeps 32 environments' worth of every
    #: batch however many environments run (``32 / num_envs``: 0.25 with its 128).
    update_proportion: float = 0.25
    #: Random-agent steps per copy that start the observation statistics (the paper's code: 50 rollouts of 128).
    init_steps: int = 50 * 128
    observation_clip: float = 5.0
    feature_dim: int = 512
    #: The agent's gradients are clipped to this norm per member (CleanRL's ``ppo_rnd_envpool.py``; the RND paper
    #: does not list one).
    max_grad_norm: float = 0.5

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"RNDConfig.{f.name} must be a non-negative number; got {value!r}")
        for name in ("rollout_length", "epochs", "minibatches", "feature_dim"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"RNDConfig.{name} must be an integer >= 1; got {getattr(self, name)!r}")
        if not 0 < self.update_proportion <= 1:
            raise ValueError(f"RNDConfig.update_proportion must be in (0, 1]; got {self.update_proportion!r}")

    def ppo_settings(self) -> PPOConfig:
        """The agent population's optimizer settings (:class:`~plasticity_lab.population.Population` reads the
        learning rate, gradient clipping and Adam's epsilon from a :class:`~plasticity_lab.ppo.PPOConfig`)."""
        return PPOConfig(lr=self.lr, max_grad_norm=self.max_grad_norm, clip=self.clip, gamma=self.gamma_extrinsic,
                         gae_lambda=self.gae_lambda, entropy_coef=self.entropy_coef, epochs=self.epochs)


def _conv_trunk() -> list[nn.Module]:
    """The RND paper's convolutions on one 84×84 frame: 8×8 stride 4, 4×4 stride 2, 3×3 stride 1 (the DQN trunk)."""
    return [nn.Conv2d(1, 32, 8, stride=4), nn.LeakyReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.LeakyReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.LeakyReLU(), nn.Flatten()]


def target_network(feature_dim: int = 512) -> nn.Sequential:
    """The fixed random network: the convolutions, then one dense layer to the features."""
    return nn.Sequential(*_conv_trunk(), nn.Linear(64 * 7 * 7, feature_dim))


def predictor_network(feature_dim: int = 512) -> nn.Sequential:
    """The trained network: the same convolutions, then three dense layers."""
    return nn.Sequential(*_conv_trunk(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, feature_dim))


class RunningMeanStd:
    """Running mean and variance per member of ``[M, *shape]`` batches, merged batch by batch with the parallel
    formula of Chan, Golub & LeVeque (1979), in float64 so that millions of frames do not erode it.

    ``update(x)`` takes ``x [M, N, *shape]``: N new samples for every member.
    """

    def __init__(self, members: int, shape: tuple[int, ...] = (), device: str | torch.device = "cpu"):
        self.mean = torch.zeros(members, *shape, dtype=torch.float64, device=device)
        self.var = torch.ones(members, *shape, dtype=torch.float64, device=device)
        self.count = torch.zeros(members, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        x = x.to(torch.float64)
        n = x.shape[1]
        batch_mean = x.mean(1)
        batch_var = x.var(1, unbiased=False)
        total = self.count + n
        view = (-1,) + (1,) * (self.mean.dim() - 1)
        share = (n / total).view(view)
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * share
        old = (self.count / total).view(view)
        # the merged second moment: both parts' own, plus the spread of their means
        self.var = self.var * old + batch_var * share + delta.square() * old * share
        self.count = total

    def std(self) -> torch.Tensor:
        return self.var.sqrt()


class RewardForwardFilter:
    """The discounted sum of intrinsic rewards as the steps arrive, ``R_t = γ·R_{t−1} + r_t`` per member and copy,
    never reset (intrinsic returns are non-episodic): its running standard deviation scales the intrinsic reward."""

    def __init__(self, gamma: float):
        self.gamma = gamma
        self.returns: torch.Tensor | None = None

    def update(self, rewards: torch.Tensor) -> torch.Tensor:
        """``rewards [M, E]`` of one step → the discounted sums ``[M, E]`` after it."""
        self.returns = rewards.clone() if self.returns is None else self.returns * self.gamma + rewards
        return self.returns


class RNDNetworks:
    """Each member's target and predictor (stacked ``[M, ...]`` parameters, drawn from each member's own
    generator) and its observation statistics.

    Only the last frame of a stacked observation enters the networks (the RND paper's choice), as ``[M, N, 1, 84,
    84]`` floats whitened by :attr:`obs_stats`.
    """

    def __init__(self, member_seeds: list[int], config: RNDConfig = RNDConfig(), device: str | torch.device = "cpu"):
        self.config = config
        self.members = len(member_seeds)
        self.device = torch.device(device)
        self.target = target_network(config.feature_dim).to("meta")
        self.predictor = predictor_network(config.feature_dim).to("meta")
        generators = [torch.Generator().manual_seed(int(s) + 1_000_003) for s in member_seeds]
        self.target_params = {k: v.to(self.device) for k, v in fresh_parameters(self.target, generators).items()}
        self.predictor_params = {k: v.to(self.device).requires_grad_(True)
                                 for k, v in fresh_parameters(self.predictor, generators).items()}
        self.obs_stats = RunningMeanStd(self.members, (1, 84, 84), self.device)

    def normalised(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames [M, N, 4, 84, 84]`` (any number type) → the last frame whitened and clipped, ``[M, N, 1, 84, 84]``
        float32."""
        last = frames[:, :, -1:].to(torch.float32)
        mean = self.obs_stats.mean.to(torch.float32).unsqueeze(1)
        std = self.obs_stats.std().to(torch.float32).unsqueeze(1)
        clip = self.config.observation_clip
        return ((last - mean) / (std + 1e-8)).clamp(-clip, clip)

    def update_obs_stats(self, frames: torch.Tensor) -> None:
        """Add ``frames [M, N, 4, 84, 84]``'s last frames to the observation statistics."""
        self.obs_stats.update(frames[:, :, -1:])

    @staticmethod
    def _apply(module: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """``module`` with each member's parameters on its own ``x [M, N, ...]`` → ``[M, N, features]``."""
        def one(p, xs):
            return functional_call(module, p, (xs,))

        return vmap(one)(params, x)

    def features(self, normalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Target and predictor outputs ``[M, N, feature_dim]`` of whitened frames (the target's without a graph)."""
        with torch.no_grad():
            target = self._apply(self.target, self.target_params, normalised)
        return target, self._apply(self.predictor, self.predictor_params, normalised)

    @torch.no_grad()
    def intrinsic_reward(self, frames: torch.Tensor) -> torch.Tensor:
        """The prediction error of ``frames [M, N, 4, 84, 84]``, ``[M, N]``: the mean over features of the squared
        difference (the RND paper's code), before any reward normalisation."""
        target, predicted = self.features(self.normalised(frames))
        return (predicted - target).square().mean(-1)

    def predictor_loss(self, frames: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The predictor's loss per member, ``[M]``: the squared error averaged over a random
        :attr:`RNDConfig.update_proportion` of the samples (each kept with that probability; the mean over those
        kept, 0 where none is)."""
        target, predicted = self.features(self.normalised(frames))
        error = (predicted - target).square().mean(-1)  # [M, N]
        keep = (torch.rand(error.shape, generator=generator, device=generator.device) <
                self.config.update_proportion).to(error.device, error.dtype)
        return (error * keep).sum(1) / keep.sum(1).clamp(min=1.0)


# ---------------------------------------------------------------------------------------------------------------
# Returns and advantages of fixed-length rollouts with two reward streams
# ---------------------------------------------------------------------------------------------------------------


def bootstrapped_gae(rewards: torch.Tensor, values: torch.Tensor, next_value: torch.Tensor, gamma: float,
                     lam: float, ends: torch.Tensor | None = None) -> torch.Tensor:
    """GAE of a rollout of fixed length ``T`` (time-major ``[T, ...]``) that stops mid-episode: the value after its
    last step, ``next_value [...]``, is bootstrapped. ``ends [T, ...]`` (bool): the step ended its episode (the
    observation after it starts the next one), so nothing is bootstrapped across it — RND's extrinsic stream.
    ``ends=None``: one endless stream, RND's intrinsic one (a game over does not end the novelty of what comes
    next)."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(next_value)
    following = next_value
    for t in reversed(range(rewards.shape[0])):
        carry = 1.0 if ends is None else (~ends[t]).to(rewards.dtype)
        delta = rewards[t] + gamma * following * carry - values[t]
        running = delta + gamma * lam * carry * running
        advantages[t] = running
        following = values[t]
    return advantages


def normalised_intrinsic_rewards(rewards: torch.Tensor, forward_filter: RewardForwardFilter,
                                 stats: RunningMeanStd) -> torch.Tensor:
    """RND's reward normalisation of one rollout's intrinsic rewards ``[T, M, E]``: run the non-episodic discounted
    sum through the rollout step by step, add its ``T·E`` values per member to ``stats``, and divide the rewards by
    each member's running standard deviation of that sum (not of the rewards: the scale of what the value head
    must predict is what matters)."""
    returns = torch.stack([forward_filter.update(r) for r in rewards])  # [T, M, E]
    stats.update(returns.transpose(0, 1).reshape(returns.shape[1], -1))
    std = stats.std().to(rewards.dtype).view(1, -1, 1)
    return rewards / (std + 1e-8)
