"""The collection step and the minibatch update, each compiled into one graph: ``RunConfig(execution="graphs")``.

Eager PyTorch launches one kernel per operation, and the gridworld's network is small: on a GPU an epoch is
thousands of launches that each do little, and the device waits on Python. Here the pieces an epoch repeats are
handed to ``torch.compile`` whole, with ``fullgraph=True`` (a graph break is an error, not a silent split):

* :meth:`GraphedSteps.collection_step` — every member's network on its observations, the action draw from the
  members' own streams (:class:`~plasticity_lab.streams.MemberStreams`, whose counters are tensors: a generator
  object cannot enter a graph), the log-probabilities, and the environment's move (``env.transition``, the
  gridworld's tensor work without its Python step counter);
* :meth:`GraphedSteps.advantages` — GAE's recursion over an episode's steps;
* :meth:`GraphedSteps.minibatch_update` — the loss with the condition's extra term, the backward pass (traced into the graph: ``torch._dynamo.config.trace_autograd_ops``), per-member gradient
  clipping and weight decay, AdamW, and the condition's per-step action (soft shrink+perturb's fresh draw).

On a GPU the graphs are compiled with ``mode="reduce-overhead"``, which replays them as CUDA graphs. Compiled
kernels fuse operations and round differently from eager ones, so a graphed run agrees with an eager one to float
rounding, not bit for bit: eager stays the default, and the run's config records which ran.

What it needs, checked when it is built: fixed-length episodes (the gridworld; an environment whose episodes end
steps partly outside PyTorch), members with their own random streams (``randomness="member"``), and a PyTorch whose
compiler can trace a backward pass. The first call of each graph compiles it (seconds to a minute); where that
fails (no C++ compiler for the CPU backend, an operation the compiler lacks) the population goes back to eager for
good and :attr:`GraphedSteps.fallback` says why — a speed path never stops a run.
"""

from __future__ import annotations

import weakref

import torch

from .metrics import dead_unit_fraction
from .ppo import log_prob_and_entropy, ppo_loss, sample_actions
from .streams import MemberStreams

#: How a population's epochs run (``RunConfig.execution``).
EXECUTIONS = ("eager", "graphs")


def backward_traceable() -> bool:
    """Whether this PyTorch can trace a backward pass into a graph (``torch._dynamo.config.trace_autograd_ops``,
    PyTorch 2.11 and later)."""
    return hasattr(torch._dynamo.config, "trace_autograd_ops")


def graphs_unavailable(population, env=None, source=None) -> str | None:
    """Why :class:`GraphedSteps` cannot serve this population (with this environment and random source), or None."""
    if population.episodes_end or (env is not None and (env.episodes_end or not hasattr(env, "transition"))):
        return "episodes that end at different times step partly outside PyTorch: graphs need fixed-length episodes"
    if source is not None and not isinstance(source, MemberStreams):
        return "a torch.Generator cannot enter a graph: graphs need each member's own streams (randomness='member')"
    return None


class GraphedSteps:
    """A population's collection step and minibatch update as compiled graphs (see the module's text).

    ``backend`` and ``mode`` go to ``torch.compile`` (default: ``"inductor"``, and ``"reduce-overhead"`` on CUDA);
    ``backend="aot_eager"`` traces and differentiates the same graphs but runs them with eager kernels, which is how
    the tests check them without a compiler's minutes.
    """

    def __init__(self, population, backend: str = "inductor", mode: str | None = None):
        reason = graphs_unavailable(population)
        if reason is not None:  # what the run asks for cannot be graphed anywhere
            raise ValueError(f"execution 'graphs' is not available here: {reason}")
        self.population = population
        if mode is None and population.device.type == "cuda":
            mode = "reduce-overhead"
        self.backend, self.mode = backend, mode
        #: Whether the graphs are replayed as CUDA graphs, whose outputs live in memory the next replay reuses.
        self.cuda_graphs = mode == "reduce-overhead"
        #: Why the population went back to eager, or None while the graphs serve it.
        self.fallback: str | None = None if backward_traceable() else (
            f"torch {torch.__version__} cannot trace a backward pass into a graph (it needs torch >= 2.11)")
        # Every tensor a graph changes in place keeps one storage from call to call and is marked static, so that a
        # CUDA graph can replay on it (the parameters, AdamW's state, the environment's state, the draw counters):
        self._static: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # id -> tensor, while it lives
        self._streams: MemberStreams | None = None
        self._moments: dict[str, dict[str, torch.Tensor]] = {}
        options = dict(fullgraph=True, dynamic=False, backend=backend, mode=mode)
        self._collect = torch.compile(self._collection_step, **options)
        self._update = torch.compile(self._minibatch_update, **options)
        self._gae = torch.compile(whole_episode_gae, **options)

    # ---- the two graphs ---------------------------------------------------------------------------------

    def _collection_step(self, env, obs: torch.Tensor, source: MemberStreams):
        logits, values, _ = self.population.forward(obs)
        actions = sample_actions(logits, source)
        log_probs, _ = log_prob_and_entropy(logits, actions)
        next_obs, rewards = env.transition(actions)
        return logits, values, actions, log_probs, next_obs, rewards

    def _minibatch_update(self, minibatch: list[torch.Tensor], source: MemberStreams) -> dict[str, torch.Tensor]:
        population = self.population
        obs, actions, log_probs, advantages, returns = minibatch
        logits, values, features = population.forward(obs)
        losses, stats = ppo_loss(logits, values, actions, log_probs, advantages, returns, population.ppo)
        stats["dead_units"] = dead_unit_fraction(features)
        # gradients are None on entry (minibatch_update clears them); AdamW written out in tensor operations
        stats["grad_norm"] = population.optimise(losses, source, optimizer_step=self._adamw_step)
        return {k: v.detach() for k, v in stats.items()}

    @torch.no_grad()
    def _adamw_step(self) -> None:
        names = list(self.population.trainable())
        adamw_step_([self.population.params[k] for k in names], [self._moments[k] for k in names],
                    **self._adamw_settings)

    # ---- calls, with the way back to eager --------------------------------------------------------------

    def collection_step(self, env, obs: torch.Tensor, source: MemberStreams):
        """``(logits, values, actions, log_probs, next_obs, rewards)`` of one step of every copy (the caller counts
        the step: ``env.count_step()``); None once the graphs have fallen back to eager."""
        if self.fallback is None and graphs_unavailable(self.population, env, source) is None:
            self._mark_static(env.state_tensors())
        return self._call(self._collect, env, obs, source)

    def advantages(self, rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float
                   ) -> torch.Tensor | None:
        """:func:`~plasticity_lab.ppo.gae` of a rollout whose every step is a transition, as one graph
        (:func:`whole_episode_gae`; the recursion is otherwise a few launches per step); None once the graphs have
        fallen back to eager."""
        if self.fallback is not None:
            return None
        return self._replay(lambda: self._gae(rewards, values, gamma, lam))

    def minibatch_update(self, rows, picked: torch.Tensor, source: MemberStreams) -> dict[str, torch.Tensor] | None:
        """One minibatch step of every member (``rows``: a :class:`~plasticity_lab.population.MemberRows`;
        ``picked [M, B]``: each member's rows); the minibatch's diagnostics ``[M]``, or None once the graphs have
        fallen back to eager. The minibatch is taken outside the graph: as a graph's input the whole rollout would
        be copied into a CUDA graph's memory at every step."""
        if self.fallback is not None:
            return None
        self._adopt_optimizer_state()
        for p in self.population.trainable().values():
            p.grad = None  # a graph traced with gradients present computes them wrongly when re-traced
        return self._call(self._update, rows.take(picked), source)

    def _call(self, compiled, *args):
        if self.fallback is not None:
            return None
        reason = graphs_unavailable(self.population, args[0] if compiled is self._collect else None, args[-1])
        if reason is not None:
            self.fallback = reason
            return None
        source = args[-1]
        self._mark_static(self.population.params.values())
        streams = self._persistent_streams(source)

        def call():
            with torch._dynamo.config.patch(trace_autograd_ops=True):
                return compiled(*args[:-1], streams)

        out = self._replay(call)
        if out is not None:
            source.counters.copy_(streams.counters)
        return out

    def _replay(self, call):
        """``call()`` (a compiled graph's run): its outputs, copied out of a CUDA graph's memory, which the next
        replay may reuse; None, with :attr:`fallback` naming why, where compiling or running fails — a compiler
        missing or failing here must not stop the run: eager computes it."""
        try:
            if self.cuda_graphs:  # the last replay's outputs were copied out: its memory may be reused
                torch.compiler.cudagraph_mark_step_begin()
            out = call()
        except Exception as error:
            self.fallback = _root_cause(error)
            return None
        if not self.cuda_graphs:
            return out
        if isinstance(out, dict):
            return {k: v.clone() for k, v in out.items()}
        return out.clone() if isinstance(out, torch.Tensor) else tuple(t.clone() for t in out)

    def _mark_static(self, tensors) -> None:
        for t in tensors:
            if self._static.get(id(t)) is not t:  # a new tensor (a freed one's id may come back)
                torch._dynamo.mark_static_address(t)
                self._static[id(t)] = t

    def _persistent_streams(self, source: MemberStreams) -> MemberStreams:
        """Streams with ``source``'s keys and counters in tensors that persist from call to call (a place's streams
        are new each epoch); the caller copies the counters back after the graph advanced them."""
        if self._streams is None or self._streams.members != source.members:
            self._streams = MemberStreams(source.keys.clone(), source.counters.clone())
            self._mark_static([self._streams.keys, self._streams.counters])
        self._streams.keys.copy_(source.keys)
        self._streams.counters.copy_(source.counters)
        return self._streams

    def _adopt_optimizer_state(self) -> None:
        """Give the population's AdamW this object's persistent state tensors, holding the values its state has
        (zeros for a new optimizer, made at every shift; a checkpoint's after a restore): what PyTorch's AdamW
        would create at its first step, but in storage that outlives the optimizer."""
        optimizer = self.population.optimizer
        group = optimizer.param_groups[0]
        if len(optimizer.param_groups) > 1 or group["amsgrad"] or group["maximize"] or group["weight_decay"] != 0:
            raise ValueError("graphed AdamW steps need one group without amsgrad, maximize or weight decay")
        self._adamw_settings = dict(lr=group["lr"], betas=tuple(group["betas"]), eps=group["eps"])
        for name, p in self.population.trainable().items():
            state = optimizer.state[p]
            mine = self._moments.get(name)
            if mine is None or mine["exp_avg"].shape != p.shape or mine["exp_avg"].stride() != p.stride():
                mine = {"step": torch.zeros((), dtype=torch.float32, device=p.device),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
                self._mark_static(mine.values())
                self._moments[name] = mine
            if state.get("exp_avg") is mine["exp_avg"]:
                continue
            with torch.no_grad():
                for key, buffer in mine.items():
                    buffer.copy_(state[key]) if key in state else buffer.zero_()
                    state[key] = buffer


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost error behind ``error`` (the compiler wraps the real one), with its type."""
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None:
            break
        error = inner
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def whole_episode_gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """:func:`~plasticity_lab.ppo.gae` of whole episodes that run to the last step (``[T, ...]``, nothing
    bootstrapped after it), as one matrix product instead of a recursion over the steps: ``A_t = Σ_{s≥t}
    (γλ)^{s−t} δ_s`` with ``δ_s = r_s + γ V_{s+1} − V_s`` (``V_T = 0``). The same sums added in another order, so it
    agrees with the recursion to float rounding; a graph of it compiles in moments, where the recursion unrolls
    into hundreds of operations."""
    T = rewards.shape[0]
    following = torch.cat([values[1:], torch.zeros_like(values[:1])])
    delta = (rewards + gamma * following - values).reshape(T, -1)
    steps = torch.arange(T, device=rewards.device, dtype=rewards.dtype)
    lag = steps.unsqueeze(0) - steps.unsqueeze(1)  # s − t
    weights = torch.where(lag >= 0, (gamma * lam) ** lag.clamp(min=0), torch.zeros_like(lag))
    return (weights @ delta).reshape(rewards.shape)


def adamw_step_(params: list[torch.Tensor], states: list[dict[str, torch.Tensor]], lr: float,
                betas: tuple[float, float], eps: float) -> None:
    """AdamW's update of ``params`` (without weight decay: the population decays weights itself) written out in
    tensor operations a graph can hold, on state dicts like PyTorch's AdamW keeps (``step``, ``exp_avg``,
    ``exp_avg_sq`` tensors, which must exist already): the same arithmetic as ``torch.optim.AdamW``'s, rounded
    within a few units of the last place of its fused kernel's."""
    beta1, beta2 = betas
    for p, state in zip(params, states):
        if p.grad is None:
            continue
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
        step.add_(1)
        exp_avg.lerp_(p.grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
        p.sub_(exp_avg / denom * (lr / bias_correction1))
