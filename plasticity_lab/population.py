"""Many agents trained as one batched computation, wrapping :mod:`plasticity_lab.ppo`'s pieces.

Each agent's parameters are stacked along a leading *member* axis. The network runs on all members at once (the
backend decides how: :mod:`plasticity_lab.backends`), and :func:`~plasticity_lab.ppo.ppo_loss` reduces over the
last axis only, so the same loss is every member's on ``[M, B]`` tensors. Summing the members' losses keeps their
gradients apart (each member's loss depends only on its own slice), and AdamW acts element-wise, so one optimizer
over stacked tensors is exactly one AdamW per member. Gradient clipping and weight decay are the steps that are
not element-wise over the stack, so they are done per member by hand.

Collection needs nothing batched of its own: :func:`~plasticity_lab.ppo.collect_episodes` runs any agent whose
forward takes the environment's ``[M, E, ...]`` observations, a population included.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import backends
from .metrics import dead_unit_fraction, member_norm, weight_difference, weight_magnitude
from .nets import NetworkSpec, fresh_parameters
from .ppo import PPOConfig, Rollout, ppo_loss


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
        self.backend = backends.backend_for(self.template)
        self.frozen = frozenset(frozen)
        params = {k: v.detach().clone().requires_grad_(k not in self.frozen) for k, v in params.items()}
        # the layout the backend computes on; every in-place edit (a condition's) keeps it
        self.params = self.backend.prepare(self.template, params, self.frozen)
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

    @property
    def batched(self) -> bool:
        """Whether the backend evaluates the network with batched products (else plain PyTorch's ``vmap``)."""
        return self.backend.name == "batched"

    def forward(self, obs: torch.Tensor, return_hidden: bool = False):
        """Every member on its own observations: ``obs [M, N, ...] -> (logits, value, features[, hidden])``."""
        return self.backend.forward(self.template, self.params, self.buffers, obs, return_hidden)

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
        rows = MemberRows(rollout, self.device, generator.device)
        totals: dict[str, torch.Tensor] = {}
        steps = 0
        for _ in range(self.ppo.epochs):
            # An independent shuffle per member (the draw ppo.Agent makes for one); a partial minibatch is dropped.
            order = torch.rand(members, n, generator=generator, device=generator.device).argsort(dim=1)
            for start in range(0, n - size + 1, size):
                minibatch = rows.take(order[:, start:start + size])
                losses, stats = self._losses(*minibatch)
                total = losses.sum()  # the members' losses are independent: their sum keeps gradients apart
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
        """One AdamW step, as the backend takes it for the layout it stores the parameters in."""
        self.backend.optimizer_step(self.optimizer)

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


class MemberRows:
    """A rollout's buffers seen as one long list of rows, from which each member's minibatch is taken.

    Rows are picked straight from the time-major buffers ``[T, M, E, ...]`` flattened to row
    ``(t·members + m)·copies + e``: one ``index_select`` per buffer is several times faster than indexing
    ``[member, row]`` (``benchmarks/population_speed.py --profile`` shows the update's share), and no member-major
    copy is made.
    """

    def __init__(self, rollout: Rollout, device: torch.device, index_device: torch.device):
        """``device``: where the buffers are; ``index_device``: where the row numbers passed to :meth:`take` are
        (the shuffle lives on the generator's device)."""
        _, self.members, self.copies = rollout.actions.shape
        self.device = device
        self.rows = {k: getattr(rollout, k).flatten(0, 2) for k in Rollout.UPDATE_KEYS}
        self.offset = (torch.arange(self.members, device=index_device) * self.copies).unsqueeze(1)

    def take(self, picked: torch.Tensor) -> list[torch.Tensor]:
        """``picked [M, B]``: each member's row numbers within its own ``t·copies + e`` numbering (as in
        ``rollout.flat()``) → the buffers in ``Rollout.UPDATE_KEYS`` order, each ``[M, B, ...]``."""
        members, copies = self.members, self.copies
        index = (picked // copies * (members * copies) + picked % copies + self.offset).reshape(-1)
        index = index.to(self.device)
        return [self.rows[k].index_select(0, index).view(members, picked.shape[1], *self.rows[k].shape[1:])
                for k in Rollout.UPDATE_KEYS]
