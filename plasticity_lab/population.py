"""Many agents trained as one batched computation, wrapping :mod:`plasticity_lab.ppo`'s pieces.

Each agent's parameters are stacked along a leading *member* axis. The network runs on all members at once (the
backend decides how: :mod:`plasticity_lab.backends`), and :func:`~plasticity_lab.ppo.ppo_loss` reduces over the
last axis only, so the same loss is every member's on ``[M, B]`` tensors. Summing the members' losses keeps their
gradients apart (each member's loss depends only on its own slice), and AdamW acts element-wise, so one optimizer
over stacked tensors is exactly one AdamW per member. Gradient clipping and weight decay are the steps that are
not element-wise over the stack, so they are done per member by hand.

Collection needs nothing batched of its own: :func:`~plasticity_lab.ppo.collect_episodes` runs any agent whose
forward takes the environment's ``[M, E, ...]`` observations, a population included.

Where episodes end at different times (CoinRun), members collect different numbers of transitions, so an epoch holds
a different number of minibatches per member. The members then step together while each has a minibatch left; a
member without one is left exactly as it is (its loss counts 0, it takes no weight decay, no optimizer step — its own
step count, :class:`~plasticity_lab.member_adamw.MemberAdamW` — and no per-step intervention: ``stepping``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import backends
from .member_adamw import MemberAdamW
from .metrics import dead_unit_fraction, member_norm, weight_difference, weight_magnitude
from .nets import NetworkSpec, fresh_parameters
from .ppo import PPOConfig, Rollout, minibatch_order, ppo_loss
from .streams import MemberStreams


class Population:
    """``members`` agents of the same architecture, trained as one batched computation.

    ``params`` maps each parameter name of the network to a leaf tensor ``[M, *shape]``. Conditions edit
    ``params`` in place (under ``torch.no_grad()``) or replace the architecture with :meth:`set_network`.
    Hooks are called on ``self.condition`` (see :mod:`plasticity_lab.conditions`).

    ``episodes_end=True`` (an environment whose episodes end at different times) lets members train on different
    numbers of transitions per epoch: the optimizer is then a :class:`~plasticity_lab.member_adamw.MemberAdamW`, and
    during an update ``stepping`` (``[M]`` bool, else ``None``) names the members that take the current step.

    ``size_invariant=True`` keeps every member's arithmetic independent of how many members there are, so that a
    run trained beside others (``RunConfig(randomness="member")``) gives the table it gives alone: AdamW's fused
    kernel then steps each member's slice as a tensor of its own (the backend's ``optimizer_step(...,
    per_member=True)``), because over the stacked tensor it rounds an element differently depending on where it
    falls in its vector loop (once in a few thousand steps, and then training drifts apart).
    """

    def __init__(
        self,
        spec: NetworkSpec,
        member_seeds: list[int],
        ppo: PPOConfig = PPOConfig(),
        condition=None,
        device: str | torch.device = "cpu",
        episodes_end: bool = False,
        size_invariant: bool = False,
    ):
        self.ppo = ppo
        self.episodes_end = bool(episodes_end)
        self.size_invariant = bool(size_invariant)
        #: The members taking the current optimizer step, ``[M]`` bool, or ``None`` when all of them do.
        self.stepping: torch.Tensor | None = None
        self.device = torch.device(device)
        self.member_seeds = list(member_seeds)
        self.members = len(self.member_seeds)
        self.condition = condition
        #: Keep the parameters as they were before the last update (``update_start``), for
        #: :meth:`weight_statistics`; a condition that logs the weights after its own changes sets it in ``setup``.
        self.keep_update_start = False
        self.update_start: list[torch.Tensor] | None = None
        #: The compiled collection step and minibatch update (:class:`plasticity_lab.graphs.GraphedSteps`), or
        #: None: eager PyTorch (the default).
        self.graphs = None
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
        self.backend = backends.backend_for(self.template, device=self.device)
        self.frozen = frozenset(frozen)
        params = {k: v.detach().clone().requires_grad_(k not in self.frozen) for k, v in params.items()}
        # the layout the backend computes on; every in-place edit (a condition's) keeps it
        self.params = self.backend.prepare(self.template, params, self.frozen)
        self.buffers = {k: v.to(self.device).unsqueeze(0).expand(self.members, *v.shape).clone()
                        for k, v in module.named_buffers()}

    @property
    def weight_decay(self) -> torch.Tensor:
        """Each member's decoupled weight decay ``[M]``, applied before every optimizer step (see
        :meth:`decay_weights`). Assign a new tensor to change it: an in-place edit is not seen."""
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
        if self.episodes_end:  # members may take different numbers of steps: each counts its own
            self.optimizer = MemberAdamW(list(self.trainable().values()), lr=self.ppo.lr, eps=self.ppo.adam_eps)
            return
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
        generators = generator if isinstance(generator, MemberStreams) else [generator] * self.members
        return {k: v.to(self.device) for k, v in fresh_parameters(self.template, generators).items()}

    # ---- forward ----------------------------------------------------------------------------------------

    @property
    def batched(self) -> bool:
        """Whether the backend evaluates the network with batched products (else plain PyTorch's ``vmap``)."""
        return self.backend.name == "batched"

    def forward(self, obs: torch.Tensor, return_hidden: bool = False):
        """Every member on its own observations: ``obs [M, N, ...] -> (logits, value, features[, hidden])``.

        A single member of a size-invariant population is computed as the first of two identical ones: PyTorch
        multiplies a batch of one matrix by another routine than a batch of several (for a one-column product, the
        value head, they round differently), and a run must compute alike alone and beside others. The
        observations are expanded, not copied: a copy would lose their memory format (CoinRun's frames are
        channels-last), and a convolution rounds differently in the other format."""
        params, buffers = self.params, self.buffers
        if not (self.size_invariant and self.members == 1):
            return self.backend.forward(self.template, params, buffers, obs, return_hidden)
        twice = {k: torch.cat([v, v.detach()]) for k, v in params.items()}
        out = self.backend.forward(self.template, twice, {k: torch.cat([v, v]) for k, v in buffers.items()},
                                   obs.expand(2, *obs.shape[1:]), return_hidden)
        first = [t[:1] for t in out[:3]]
        return (*first, [h[:1] for h in out[3]]) if return_hidden else tuple(first)

    # ---- update -----------------------------------------------------------------------------------------

    def _losses(self, obs, actions, log_probs, advantages, returns):
        logits, values, features = self.forward(obs)
        losses, stats = ppo_loss(logits, values, actions, log_probs, advantages, returns, self.ppo)
        stats["dead_units"] = dead_unit_fraction(features)
        return losses, stats

    def update(self, rollout: Rollout, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """PPO's epochs of minibatch updates; returns per-member diagnostics ``[M]`` averaged over minibatches.

        The observations of each member's last minibatch stay in ``self.last_minibatch_obs`` (``[M, B, ...]``):
        ReDo scores its units on them.
        """
        members = rollout.actions.shape[1]
        size = self.ppo.minibatch_size
        before = [p.detach().clone() for p in self.params.values()]
        rows = MemberRows(rollout, self.device, generator.device)
        uneven = rows.counts is not None
        if uneven and not self.episodes_end:
            raise ValueError("this rollout has episode ends (members with different numbers of transitions): "
                             "build the population with episodes_end=True")
        if uneven and bool((rows.counts < size).any()):
            raise ValueError(f"a member collected fewer transitions ({int(rows.counts.min())}) than one minibatch "
                             f"({size})")
        totals: dict[str, torch.Tensor] = {}
        steps: int | torch.Tensor = 0
        for _ in range(self.ppo.epochs):
            # An independent shuffle per member (the draw ppo.Agent makes for one); a partial minibatch is dropped.
            order = minibatch_order(members, rows.longest, generator, rows.counts)
            for start in range(0, rows.longest - size + 1, size):
                picked = order[:, start:start + size]
                stats = None if self.graphs is None or uneven else self.graphs.minibatch_update(rows, picked, generator)
                if stats is not None:  # the same step, compiled into one graph (plasticity_lab.graphs)
                    minibatch = None
                    for key, value in stats.items():
                        totals[key] = totals.get(key, 0) + value
                    steps += 1
                    continue
                minibatch = rows.take(picked)
                losses, stats = self._losses(*minibatch)
                if uneven:  # the members with a minibatch left at this step; the others stay exactly as they are
                    self.stepping = rows.counts >= start + size
                    weight = self.stepping.to(losses.dtype)
                    losses = losses * weight
                stats["grad_norm"] = self.optimise(losses, generator, weight if uneven else None)
                for key, value in stats.items():
                    value = value.detach() * weight if uneven else value.detach()
                    totals[key] = totals.get(key, 0) + value
                steps = steps + weight if uneven else steps + 1
                if uneven:
                    self.stepping = None
        self.last_minibatch_obs = rows.last_minibatches(order, size) if uneven else (
            minibatch[0] if minibatch is not None else rows.take(picked)[0])
        self.update_start = before if self.keep_update_start else None
        out = {k: v / steps for k, v in totals.items()}
        after = [p.detach() for p in self.params.values()]
        out["weight_magnitude"] = weight_magnitude(after, self.size_invariant)
        out["weight_difference"] = weight_difference(before, after, self.size_invariant)
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
        return {"weight_magnitude": weight_magnitude(now, self.size_invariant),
                "weight_difference": weight_difference(self.update_start, now, self.size_invariant)}

    def optimizer_moments(self, name: str) -> dict[str, torch.Tensor]:
        """AdamW's moment estimates of parameter ``name`` (``[M, ...]`` each, by their state names; empty before
        its first step), for a condition that edits them in place (ReDo)."""
        state = self.optimizer.state.get(self.params[name], {})
        return {k: state[k] for k in MOMENTS if k in state}

    def member_slice(self, start: int, stop: int) -> "MemberSlice":
        """Members ``start … stop − 1`` as a population of their own whose edits are this population's
        (:class:`MemberSlice`): how a condition acts on its members of a mixed population."""
        return MemberSlice(self, start, stop)

    def optimise(self, losses: torch.Tensor, generator, weight: torch.Tensor | None = None,
                 optimizer_step=None) -> torch.Tensor:
        """One optimizer step on the members' ``losses [M]``: the condition's extra loss added (times ``weight``,
        the members taking this step, where some have none left), gradients from their sum (the members' losses
        are independent, so the sum keeps their gradients apart), clipped per member, weight decay, AdamW, then the
        condition's per-step action (drawing from ``generator``). Returns the gradient norms before clipping,
        ``[M]``. Every learner of the study takes its steps here: PPO's :meth:`update`, its compiled graph
        (:mod:`plasticity_lab.graphs`, which passes its own ``optimizer_step`` and clears the gradients outside the
        graph) and the RND agent.
        """
        total = losses.sum()
        if self.condition is not None:
            extra = self.condition.extra_loss(self)
            if extra is not None:
                total = total + (extra * weight if weight is not None else extra).sum()
        if optimizer_step is None:
            self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        norms = self.clip_gradients()
        self.decay_weights()
        (optimizer_step or self._optimizer_step)()
        if self.condition is not None:
            self.condition.after_optimizer_step(self, generator)
        return norms

    def _optimizer_step(self) -> None:
        """One AdamW step, as the backend takes it for the layout it stores the parameters in; with members that
        count their own steps, for the ``stepping`` ones only."""
        if isinstance(self.optimizer, MemberAdamW):
            self.optimizer.step(self.stepping)
        else:
            self.backend.optimizer_step(self.optimizer, per_member=self.size_invariant)

    def clip_gradients(self) -> torch.Tensor:
        """Clip each member's gradient to ``max_grad_norm`` (as ``clip_grad_norm_`` would); returns the norms."""
        grads = [p.grad for p in self.trainable().values() if p.grad is not None]
        norms = member_norm(grads, self.size_invariant)
        scale = (self.ppo.max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))
        return norms

    @torch.no_grad()
    def decay_weights(self) -> None:
        """Decoupled weight decay θ ← θ·(1 − lr·wd), per member, applied before the Adam step as AdamW does (to the
        ``stepping`` members only)."""
        if not self._any_weight_decay:
            return
        decay = self.weight_decay if self.stepping is None else self.weight_decay * self.stepping
        factor = 1.0 - self.ppo.lr * decay
        for p in self.trainable().values():
            p.mul_(factor.view(-1, *([1] * (p.dim() - 1))))


#: AdamW's per-parameter moment estimates (``max_exp_avg_sq`` with amsgrad).
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


class MemberSlice:
    """Members ``start … stop − 1`` of a :class:`Population`, seen as a population of their own: what a condition
    of a mixed population (:class:`plasticity_lab.conditions.MemberGroups`) is given, so that every condition's code
    works unchanged on its own members.

    Everything is a view of the parent's: editing ``params`` in place edits the parent's members, a loss computed
    from them sends its gradient to the parent's parameters, ``weight_decay`` and ``keep_update_start`` set the
    parent's, and ``stepping``, ``initial_params``, ``last_minibatch_obs`` and AdamW's moments are the parent's rows.
    Fresh initialisations need a source whose draws are the members' own (:class:`~plasticity_lab.streams.
    MemberStreams`, given as the members' subset by the caller). The architecture cannot change here: it is the
    parent's, shared by every group.
    """

    def __init__(self, parent: Population, start: int, stop: int):
        if not 0 <= start < stop <= parent.members:
            raise ValueError(f"a slice of {parent.members} members must satisfy 0 <= start < stop <= "
                             f"{parent.members}; got {start}, {stop}")
        self.parent, self.start, self.stop = parent, start, stop
        self.members = stop - start
        self.member_seeds = parent.member_seeds[start:stop]

    def _rows(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v[self.start:self.stop] for k, v in tensors.items()}

    # what every condition reads from a population, as the parent has it
    ppo = property(lambda self: self.parent.ppo)
    device = property(lambda self: self.parent.device)
    template = property(lambda self: self.parent.template)
    backend = property(lambda self: self.parent.backend)
    frozen = property(lambda self: self.parent.frozen)
    episodes_end = property(lambda self: self.parent.episodes_end)
    size_invariant = property(lambda self: self.parent.size_invariant)
    params = property(lambda self: self._rows(self.parent.params))
    buffers = property(lambda self: self._rows(self.parent.buffers))
    initial_params = property(lambda self: self._rows(self.parent.initial_params))

    @property
    def stepping(self) -> torch.Tensor | None:
        stepping = self.parent.stepping
        return None if stepping is None else stepping[self.start:self.stop]

    @property
    def last_minibatch_obs(self) -> torch.Tensor:
        return self.parent.last_minibatch_obs[self.start:self.stop]

    @property
    def update_start(self) -> list[torch.Tensor] | None:
        start = self.parent.update_start
        return None if start is None else [p[self.start:self.stop] for p in start]

    @property
    def keep_update_start(self) -> bool:
        return self.parent.keep_update_start

    @keep_update_start.setter
    def keep_update_start(self, value: bool) -> None:
        # another group may need it: a slice can ask for it, never turn it off
        self.parent.keep_update_start = self.parent.keep_update_start or bool(value)

    @property
    def weight_decay(self) -> torch.Tensor:
        return self.parent.weight_decay[self.start:self.stop]

    @weight_decay.setter
    def weight_decay(self, value: torch.Tensor) -> None:
        decay = self.parent.weight_decay.clone()
        decay[self.start:self.stop] = value
        self.parent.weight_decay = decay

    # the population's own code, on these members' views
    trainable = Population.trainable
    forward = Population.forward
    weight_statistics = Population.weight_statistics

    def fresh_params(self, generator: MemberStreams) -> dict[str, torch.Tensor]:
        if not isinstance(generator, MemberStreams) or generator.members != self.members:
            raise ValueError(f"a member slice draws fresh parameters from its {self.members} members' own streams "
                             f"(MemberStreams of {self.members} members); got {generator!r}")
        return {k: v.to(self.device) for k, v in fresh_parameters(self.template, generator).items()}

    def optimizer_moments(self, name: str) -> dict[str, torch.Tensor]:
        return self._rows(self.parent.optimizer_moments(name))

    def set_network(self, *args, **kwargs) -> None:
        raise ValueError("a condition that changes the architecture at a shift (injection) cannot share a "
                         "population with other conditions: train it in a population of its own")

    def new_optimizer(self) -> None:
        raise ValueError("the optimizer belongs to the whole mixed population; a group cannot re-create it")


class MemberRows:
    """A rollout's transitions seen as one long list of rows, from which each member's minibatch is taken.

    Every step a transition (``rollout.valid`` is None): rows are picked straight from the time-major buffers
    ``[T, M, E, ...]`` flattened to row ``(t·members + m)·copies + e``: one ``index_select`` per buffer is several
    times faster than indexing ``[member, row]`` (``benchmarks/population_speed.py --profile`` shows the update's
    share), and no member-major copy is made. Each member numbers its own rows ``t·copies + e``, as
    ``rollout.flat()`` does; ``counts`` is None and ``longest`` is ``T·copies``.

    With episode ends, the rows are the transitions only, in ``(t, m, e)`` order (as the rollout stores their
    observations), ``counts [M]`` says how many each member has, and member ``m`` numbers its own ``0 ..
    counts[m] − 1`` in ``(t, e)`` order, through a table of their places among all rows.
    """

    def __init__(self, rollout: Rollout, device: torch.device, index_device: torch.device):
        """``device``: where the buffers are; ``index_device``: where the row numbers passed to :meth:`take` are
        (the shuffle lives on the generator's device)."""
        length, self.members, self.copies = rollout.actions.shape
        self.device = device
        if rollout.valid is None:
            self.rows = {k: getattr(rollout, k).flatten(0, 2) for k in Rollout.UPDATE_KEYS}
            self.offset = (torch.arange(self.members, device=index_device) * self.copies).unsqueeze(1)
            self.counts, self.table, self.longest = None, None, length * self.copies
            return
        valid = rollout.valid.flatten()  # (t, m, e) order
        self.rows = {k: getattr(rollout, k) if k == "obs" else getattr(rollout, k).flatten(0, 2)[valid]
                     for k in Rollout.UPDATE_KEYS}
        place = torch.cumsum(valid, 0) - 1  # each transition's row among all transitions
        by_member = rollout.valid.transpose(0, 1).reshape(self.members, -1)  # [M, T·E], (t, e) order
        place = place.view(length, self.members, self.copies).transpose(0, 1).reshape(self.members, -1)
        self.counts = rollout.transitions().to(device)
        self.longest = int(self.counts.max())
        # member m's k-th row is the k-th True of by_member[m]: sort the True places first, stably
        first = torch.argsort((~by_member).to(torch.int8), dim=1, stable=True)[:, :self.longest]
        table = place.gather(1, first)
        table = table.masked_fill(torch.arange(self.longest, device=table.device) >= self.counts.to(table.device)
                                  .unsqueeze(1), 0)  # past a member's rows: any real row (never used)
        self.table = table.to(index_device)

    def take(self, picked: torch.Tensor) -> list[torch.Tensor]:
        """``picked [M, B]``: each member's own row numbers → the buffers in ``Rollout.UPDATE_KEYS`` order, each
        ``[M, B, ...]``."""
        members, copies = self.members, self.copies
        if self.table is None:
            index = (picked // copies * (members * copies) + picked % copies + self.offset).reshape(-1)
        else:
            index = self.table.gather(1, picked).reshape(-1)
        index = index.to(self.device)
        return [self.rows[k].index_select(0, index).view(members, picked.shape[1], *self.rows[k].shape[1:])
                for k in Rollout.UPDATE_KEYS]

    def last_minibatches(self, order: torch.Tensor, size: int) -> torch.Tensor:
        """The observations of each member's last whole minibatch of a pass shuffled as ``order`` (``[M, size,
        ...]``): member ``m``'s last one starts at ``(counts[m] // size − 1)·size``."""
        starts = (self.counts // size - 1) * size
        picked = starts.to(order.device).unsqueeze(1) + torch.arange(size, device=order.device)
        return self.take(order.gather(1, picked))[0]
