"""The collection step and the minibatch update, each compiled into one graph: ``RunConfig(execution="graphs")``.

Eager PyTorch launches one kernel per operation, and the gridworld's network is small: on a GPU an epoch is
thousands of launches that each do little, and the device waits on Python. Here the two pieces an epoch repeats are
handed to ``torch.compile`` whole, with ``fullgraph=True`` (a graph break is an error, not a silent split):

* :meth:`GraphedSteps.collection_step` — every member's network on its observations, the action draw from the
  members' own streams (:class:`~plasticity_lab.streams.MemberStreams`, whose counters are tensors: a generator
  object cannot enter a graph), the log-probabilities, and the environment's move (``env.transition``, the
  gridworld's tensor work without its Python step counter);
* :meth:`GraphedSteps.minibatch_update` — the minibatch taken from the rollout, the loss with the condition's extra
  term, the backward pass (traced into the graph: ``torch._dynamo.config.trace_autograd_ops``), per-member gradient
  clipping and weight decay, AdamW, and the condition's per-step action (soft shrink+perturb's fresh draw).

On a GPU the graphs are compiled with ``mode="reduce-overhead"``, which replays them as CUDA graphs. Compiled
kernels fuse operations and round differently from eager ones, so a graphed run agrees with an eager one to float
rounding, not bit for bit: eager stays the default, and the manifest records which ran.

What it needs, checked when it is built: fixed-length episodes (the gridworld; an environment whose episodes end
steps partly outside PyTorch), members with their own random streams (``randomness="member"``), and a PyTorch whose
compiler can trace a backward pass. The first call of each graph compiles it (seconds to a minute); where that
fails (no C++ compiler for the CPU backend, an operation the compiler lacks) the population goes back to eager for
good and :attr:`GraphedSteps.fallback` says why — a speed path never stops a run.
"""

from __future__ import annotations

import torch

from .metrics import dead_unit_fraction
from .ppo import log_prob_and_entropy, ppo_loss, sample_actions
from .streams import MemberStreams

#: How a population's epochs run (``RunConfig.execution``).
EXECUTIONS = ("eager", "graphs")


def graphs_unavailable(population, env=None, source=None) -> str | None:
    """Why :class:`GraphedSteps` cannot serve this population (with this environment and random source), or None."""
    if not hasattr(torch._dynamo.config, "trace_autograd_ops"):
        return (f"torch {torch.__version__} cannot trace a backward pass into a graph "
                "(torch._dynamo.config.trace_autograd_ops needs torch >= 2.11)")
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
        if reason is not None:
            raise ValueError(f"execution 'graphs' is not available here: {reason}")
        self.population = population
        if mode is None and population.device.type == "cuda":
            mode = "reduce-overhead"
        self.backend, self.mode = backend, mode
        #: Why the population went back to eager, or None while the graphs serve it.
        self.fallback: str | None = None
        options = dict(fullgraph=True, dynamic=False, backend=backend, mode=mode)
        self._collect = torch.compile(self._collection_step, **options)
        self._update = torch.compile(self._minibatch_update, **options)

    # ---- the two graphs ---------------------------------------------------------------------------------

    def _collection_step(self, env, obs: torch.Tensor, source: MemberStreams):
        logits, values, _ = self.population.forward(obs)
        actions = sample_actions(logits, source)
        log_probs, _ = log_prob_and_entropy(logits, actions)
        next_obs, rewards = env.transition(actions)
        return logits, values, actions, log_probs, next_obs, rewards

    def _minibatch_update(self, rows, picked: torch.Tensor, source: MemberStreams) -> dict[str, torch.Tensor]:
        population = self.population
        obs, actions, log_probs, advantages, returns = rows.take(picked)
        logits, values, features = population.forward(obs)
        losses, stats = ppo_loss(logits, values, actions, log_probs, advantages, returns, population.ppo)
        stats["dead_units"] = dead_unit_fraction(features)
        total = losses.sum()
        extra = population.condition.extra_loss(population) if population.condition is not None else None
        if extra is not None:
            total = total + extra.sum()
        trainable = list(population.trainable().values())
        for p in trainable:
            p.grad = None
        total.backward()
        stats["grad_norm"] = population.clip_gradients()
        population.decay_weights()
        with torch.no_grad():
            adamw_step_(population.optimizer, trainable)
        if population.condition is not None:
            population.condition.after_optimizer_step(population, source)
        return {k: v.detach() for k, v in stats.items()}

    # ---- calls, with the way back to eager --------------------------------------------------------------

    def collection_step(self, env, obs: torch.Tensor, source: MemberStreams):
        """``(logits, values, actions, log_probs, next_obs, rewards)`` of one step of every copy (the caller counts
        the step: ``env.count_step()``); None once the graphs have fallen back to eager."""
        return self._call(self._collect, env, obs, source)

    def minibatch_update(self, rows, picked: torch.Tensor, source: MemberStreams) -> dict[str, torch.Tensor] | None:
        """One minibatch step of every member (``rows``: a :class:`~plasticity_lab.population.MemberRows`;
        ``picked [M, B]``: each member's rows); the minibatch's diagnostics ``[M]``, or None once the graphs have
        fallen back to eager."""
        initialise_adamw_state(self.population.optimizer)  # a new optimizer (every shift) starts without state
        return self._call(self._update, rows, picked, source)

    def _call(self, compiled, *args):
        if self.fallback is not None:
            return None
        reason = graphs_unavailable(self.population, args[0] if compiled is self._collect else None, args[-1])
        if reason is not None:
            self.fallback = reason
            return None
        try:
            with torch._dynamo.config.patch(trace_autograd_ops=True):
                return compiled(*args)
        except Exception as error:  # a compiler missing or failing here must not stop the run: eager computes it
            self.fallback = _root_cause(error)
            return None


def _root_cause(error: BaseException) -> str:
    """The first line of the innermost error behind ``error`` (the compiler wraps the real one), with its type."""
    while True:
        inner = getattr(error, "inner_exception", None) or error.__cause__
        if inner is None:
            break
        error = inner
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"[:300]


def adamw_step_(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """AdamW's update of ``params`` written out in tensor operations a graph can hold, on ``optimizer``'s own state
    (the same ``step``, ``exp_avg``, ``exp_avg_sq`` tensors PyTorch's AdamW keeps, created as it creates them), so
    that eager and graphed steps can follow one another. One group, no amsgrad; the population applies weight decay
    itself (its AdamW's own is 0)."""
    group = optimizer.param_groups[0]
    if len(optimizer.param_groups) > 1 or group["amsgrad"] or group["maximize"] or group["weight_decay"] != 0:
        raise ValueError("a graphed AdamW step needs one group without amsgrad, maximize or weight decay")
    lr, eps = group["lr"], group["eps"]
    beta1, beta2 = group["betas"]
    for p in params:
        if p.grad is None:
            continue
        state = optimizer.state[p]
        step, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
        step.add_(1)
        exp_avg.lerp_(p.grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        denom = (exp_avg_sq.sqrt() / bias_correction2.sqrt()).add_(eps)
        p.sub_(exp_avg / denom * (lr / bias_correction1))


def initialise_adamw_state(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter of ``optimizer`` the state PyTorch's fused AdamW creates at its first step (a float32
    step count on the parameter's device, zero moments in its layout), so that a graph starts from tensors that
    already exist: a graph cannot create state that outlives it."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
