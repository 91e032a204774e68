"""Small, direct demonstrations of what the interventions do to a network — the computations behind the book's
chapters on resets and plasticity injection and on regularisation.

Nothing here re-implements a condition: every function calls the condition's own code in
:mod:`plasticity_lab.conditions` (its ``at_shift`` action, its ``extra_loss``) on a population, or on a bare set
of parameters, and reports what changed.

At a shift (resets, shrink+perturb, injection)

* :func:`copy_population`, :func:`apply_at_shift` — try a condition's at-shift action on a copy of a population.
* :func:`layer_rms`, :func:`expected_fresh_rms` — the root-mean-square of each layer's parameters, measured and (for
  a fresh initialisation) predicted.
* :func:`at_shift_table`, :func:`at_shift_outputs`, :func:`output_change` — per condition, what its at-shift action
  does to each layer's weights and to the network's outputs.
* :func:`injection_head_updates` — after an injection, how far the original head and the injected copy moved.

Regularisers (L2, regenerative L2, Wasserstein-2)

* :class:`ParameterSet` — a bare stack of parameters and their initial values, enough for the regularisers.
* :func:`regulariser_terms`, :func:`regulariser_directions`, :func:`regulariser_field` — the quantities the
  regularisers shrink, and the direction each moves the parameters.
* :func:`relabel_units`, :func:`shuffle_within_tensors` — parameter changes that the Wasserstein-2 penalty does not
  see.

Architecture (LayerNorm, CReLU) and soft shrink+perturb on it

* :func:`architecture_table` — each condition's network, layer by layer, with its parameter counts.
* :func:`unit_activity` — per hidden layer: zero outputs, units never active, dormant units, units no gradient
  reaches, and the fewest units active on any one input.
* :func:`apply_after_steps` — a condition's after-every-step hook (soft shrink+perturb) applied n times to a copy.
* :func:`two_by_two` — a 2 × 2 ablation of two conditions that combine (soft shrink+perturb and LayerNorm).

ReDo (dormant units and their recycling)

* :func:`unit_scores` — every hidden output's ReDo score next to the fraction of inputs on which it is 0.
* :func:`recycle`, :func:`recycling_table` — one ReDo step on a copy, and what it changed, read off the weights.
* :func:`silence_units` — the same units' outgoing weights zeroed and nothing else: the network without them.
* :func:`run_redo` — a ReDo run that logs how many units each recycling step took.

Stored studies and figures

* :func:`random_walk_observations` — inputs to evaluate a network on.
* :func:`study_path` — where the book looks up a stored study (``../data``, or the folder named by the environment
  variable ``PLASTICITY_LAB_STUDY_DIR``).
* :func:`load_study` — a stored study, or ``None`` while it is still being computed (on Colab, downloaded
  from the repository first).
* :func:`read_runs` — a study of one ``plasticity-lab run`` folder per condition, each condition's table and manifest
  (on Colab, downloaded from the repository first).
* :func:`study_section`, :class:`StudySection` — what a chapter's section on a stored study can show of a study
  that may hold only some of its conditions so far, and the note that says so.
* :func:`compare_conditions`, :func:`tally` — t-tests of conditions against warm-start and reset-all, counted.

Soft shrink+perturb

* :func:`soft_shrink_perturb_trajectory` — the rule alone, applied step after step, measured against its closed form.

Their figures are :func:`plasticity_lab.plots.condition_summary_figure`,
:func:`plasticity_lab.plots.regulariser_field_figure` and :func:`plasticity_lab.plots.unit_scores_figure`; this
module imports no plotting library.
"""

from __future__ import annotations

import copy
import dataclasses
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .conditions import Condition, InjectedHead, ReDo, RegenL2, RegenW2, effective_params, parse_condition
from .experiment import population_seed
from .metrics import member_norm
from .nets import CReLU
from .ppo import Population

__all__ = [
    "BASELINES",
    "ParameterSet",
    "STUDY_DIR_VARIABLE",
    "StudySection",
    "apply_after_steps",
    "apply_at_shift",
    "architecture_table",
    "at_shift_outputs",
    "at_shift_table",
    "compare_conditions",
    "copy_population",
    "describe_gaps",
    "expected_fresh_rms",
    "injection_head_updates",
    "layer_of",
    "layer_rms",
    "load_study",
    "output_change",
    "random_walk_observations",
    "read_runs",
    "recycle",
    "recycling_table",
    "regulariser_directions",
    "regulariser_field",
    "regulariser_terms",
    "relabel_units",
    "run_redo",
    "shuffle_within_tensors",
    "silence_units",
    "study_path",
    "study_section",
    "tally",
    "two_by_two",
    "unit_activity",
    "unit_scores",
]

#: The regularisers of :func:`regulariser_directions`, with their default coefficients (PROTOCOL §4).
REGULARISERS: dict[str, float] = {"l2": 1e-3, "regen_l2": 1e-2, "regen_w2": 1e-2}


# ---------------------------------------------------------------------------------------------------------------
# Layers and their size
# ---------------------------------------------------------------------------------------------------------------


def layer_of(name: str) -> str:
    """The layer a parameter belongs to: its name without the last part (``"encoder.0.layer.weight"`` →
    ``"encoder.0.layer"``)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def layer_rms(params: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Root-mean-square ``sqrt(Σθ² / N)`` of each layer's parameters (weight and bias together), per member.

    ``params`` maps names to stacked tensors ``[M, ...]`` (a population's ``params``, or
    :func:`~plasticity_lab.conditions.effective_params`). Returns one row per layer, in the order of ``params``,
    then ``"all"`` (every parameter: the study's weight magnitude); one column per member (0 … M−1).
    """
    if not params:
        raise ValueError("layer_rms needs at least one parameter")
    groups: dict[str, list[torch.Tensor]] = {}
    for name, value in params.items():
        groups.setdefault(layer_of(name), []).append(value.detach())
    rows = {}
    for layer, tensors in [*groups.items(), ("all", [t for ts in groups.values() for t in ts])]:
        count = sum(t[0].numel() for t in tensors)
        rows[layer] = (member_norm(tensors) / count**0.5).cpu().numpy()
    return pd.DataFrame(rows).T.rename_axis("layer")


def expected_fresh_rms(population: Population) -> pd.Series:
    """The RMS each layer has, on average, right after a fresh PyTorch default initialisation.

    A linear (or convolution) layer draws weight and bias from U(−b, b) with b = 1/√fan_in, whose RMS is
    b/√3 = 1/√(3·fan_in); a LayerNorm or GroupNorm starts at gain 1 and bias 0. ``"all"`` combines the layers by
    their parameter counts. Computed from the architecture alone, independently of any draw.
    """
    squares: dict[str, float] = {}
    counts: dict[str, int] = {}
    for name, module in population.template.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        n = sum(p.numel() for p in own.values())
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            fan_in = module.weight[0].numel()
            mean_square = 1.0 / (3.0 * fan_in)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
            mean_square = module.weight.numel() / n  # gains 1, biases 0
        else:
            raise TypeError(f"no known fresh initialisation for {type(module).__name__} ({name!r})")
        squares[name], counts[name] = mean_square * n, n
    out = {name: (squares[name] / counts[name]) ** 0.5 for name in squares}
    out["all"] = (sum(squares.values()) / sum(counts.values())) ** 0.5
    return pd.Series(out, name="fresh RMS (expected)").rename_axis("layer")


# ---------------------------------------------------------------------------------------------------------------
# At a shift
# ---------------------------------------------------------------------------------------------------------------


def copy_population(population: Population) -> Population:
    """An independent copy of ``population``: its architecture, parameters (frozen ones stay frozen), initial
    parameters and weight decay, with a fresh AdamW. Changing the copy leaves the original untouched."""
    twin = copy.copy(population)
    twin.set_network(population.template, {k: v.detach() for k, v in population.params.items()},
                     frozen=population.frozen)
    twin.buffers = {k: v.clone() for k, v in population.buffers.items()}
    twin.initial_params = {k: v.detach().clone() for k, v in population.initial_params.items()}
    twin.weight_decay = population.weight_decay.clone()
    twin.new_optimizer()
    return twin


def _condition(condition: str | Condition) -> Condition:
    return parse_condition(condition) if isinstance(condition, str) else condition


def apply_at_shift(population: Population, condition: str | Condition, seed: int | None = None) -> Population:
    """What ``condition`` does to ``population`` at a shift: a copy of the population after the condition's
    at-shift action, with AdamW re-created as the run loop does. The population itself is left untouched.

    ``condition`` is a name (``"shrink_perturb"``, ``"reset_final+injection"`` …) or a condition object (e.g.
    ``ShrinkPerturb(perturb=0.2)``). ``seed`` seeds the generator its fresh draws come from, so two calls with
    the same seed draw the same fresh parameters. By default it is the seed a run of these members uses for the
    randomness they share (:func:`plasticity_lab.experiment.population_seed`) — not a member's own seed: a
    generator seeded with member ``s``'s seed would draw exactly that member's initial parameters θ₀ again.
    """
    cond = _condition(condition)
    twin = copy_population(population)
    cond.setup(twin)
    if seed is None:
        seed = population_seed(population.member_seeds)
    cond.at_shift(twin, torch.Generator(device=twin.device).manual_seed(int(seed)))
    twin.new_optimizer()
    return twin


def _condition_name(condition: str | Condition) -> str:
    return condition if isinstance(condition, str) else _condition(condition).name


def at_shift_table(population: Population, conditions: Sequence[str | Condition],
                   seed: int | None = None) -> pd.DataFrame:
    """For each condition, what its at-shift action does to each layer of ``population``.

    One row per condition × layer (``"all"`` last): ``rms_before`` and ``rms_after`` (the layer's RMS, see
    :func:`layer_rms`) and ``rms_change`` (the RMS of after − before), each the mean over members. The layers are
    those of the *effective* network (:func:`~plasticity_lab.conditions.effective_params`): an injected head
    ``h + a − b`` counts as the single layer it computes.
    """
    before = effective_params(population)
    rms_before = layer_rms(before).mean(axis=1)
    rows = []
    for condition in conditions:
        after = effective_params(apply_at_shift(population, condition, seed))
        if set(after) != set(before):
            raise ValueError(f"{_condition_name(condition)} changed the network's effective layers")
        change = {k: after[k].detach() - before[k].detach() for k in before}
        rms_after, rms_change = layer_rms(after).mean(axis=1), layer_rms(change).mean(axis=1)
        for layer in rms_before.index:
            rows.append({"condition": _condition_name(condition), "layer": layer,
                         "rms_before": float(rms_before[layer]), "rms_after": float(rms_after[layer]),
                         "rms_change": float(rms_change[layer])})
    return pd.DataFrame(rows)


def _outputs(population: Population, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    obs = obs.to(population.device)
    if obs.dim() == 2:  # the same inputs for every member
        obs = obs.unsqueeze(0).expand(population.members, *obs.shape)
    with torch.no_grad():
        logits, value, _ = population.forward(obs)
    return logits, value


def _output_change(population: Population, twin: Population, obs: torch.Tensor) -> dict:
    logits, value = _outputs(population, obs)
    new_logits, new_value = _outputs(twin, obs)
    return {
        "max_logit_change": float((new_logits - logits).abs().max()),
        "max_value_change": float((new_value - value).abs().max()),
        "policy_tv": float(0.5 * (new_logits.softmax(-1) - logits.softmax(-1)).abs().sum(-1).mean()),
    }


def output_change(population: Population, params: Mapping[str, torch.Tensor], obs: torch.Tensor) -> pd.Series:
    """How much the network's outputs change on the inputs ``obs`` (``[N, ...]``, the same for every member, or
    ``[M, N, ...]``) when ``population``'s parameters are replaced by ``params`` (same names and shapes):
    ``max_logit_change`` and ``max_value_change`` (the largest absolute change of a policy logit / of the value
    over inputs and members) and ``policy_tv`` (the total-variation distance between the two policies, averaged
    over inputs and members: 0 = the same action probabilities, 1 = disjoint)."""
    if set(params) != set(population.params):
        differ = sorted(set(params) ^ set(population.params))
        raise ValueError(f"params must have the population's parameter names; these differ: {differ}")
    twin = copy_population(population)
    twin.params = {k: v.detach() for k, v in params.items()}
    return pd.Series(_output_change(population, twin, obs))


def at_shift_outputs(population: Population, conditions: Sequence[str | Condition], obs: torch.Tensor,
                     seed: int | None = None) -> pd.DataFrame:
    """For each condition, what its at-shift action does to the network's *outputs* on the inputs ``obs``.

    One row per condition with the columns of :func:`output_change`, and the number of parameters each member
    stores before and after (``params_before``, ``params_after``).
    """
    stored = sum(v[0].numel() for v in population.params.values())
    rows = []
    for condition in conditions:
        twin = apply_at_shift(population, condition, seed)
        rows.append({"condition": _condition_name(condition), **_output_change(population, twin, obs),
                     "params_before": stored, "params_after": sum(v[0].numel() for v in twin.params.values())})
    return pd.DataFrame(rows).set_index("condition")


def injection_head_updates(population: Population, before: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """After an injection, how far each head's original layer and its injected copy have moved.

    ``before`` holds the parameters as they were at the moment of injection — either the injected population's
    own ``params`` (names ``<head>.base.weight`` …) or those of the plain network just before the shift
    (``<head>.weight`` …). For each injected head and parameter: ``base_change`` (RMS of the change of the original
    layer ``h``), ``added_change`` (RMS of ``a − b``: how far the fresh copy ``a`` has moved from its starting
    value, which the frozen ``b`` keeps), and ``max_difference`` (the largest absolute difference between the
    two changes).
    """
    rows = []
    params = population.params
    for head_name, head in population.template.heads().items():
        if not isinstance(head, InjectedHead):
            continue
        for p_name, _ in head.base.named_parameters():
            key = f"{head_name}.base.{p_name}"
            start = before[key] if key in before else before[f"{head_name}.{p_name}"]
            base = params[key].detach() - start.detach()
            added = params[f"{head_name}.added.{p_name}"].detach() - params[f"{head_name}.subtracted.{p_name}"].detach()
            rows.append({"parameter": f"{head_name}.{p_name}",
                         "base_change": float(base.pow(2).mean().sqrt()),
                         "added_change": float(added.pow(2).mean().sqrt()),
                         "max_difference": float((base - added).abs().max())})
    if not rows:
        raise ValueError("the population holds no injected head (run the injection condition's at-shift action first)")
    return pd.DataFrame(rows).set_index("parameter")


# ---------------------------------------------------------------------------------------------------------------
# Regularisers
# ---------------------------------------------------------------------------------------------------------------


class _NoHeads(nn.Module):
    """A template without heads: :func:`~plasticity_lab.conditions.effective_params` then returns the parameters
    as they are."""

    def heads(self) -> dict[str, nn.Module]:
        return {}


class ParameterSet:
    """A bare stack of parameters ``[M, ...]`` and their initial values θ₀ — the part of a
    :class:`~plasticity_lab.ppo.Population` that the regularisers read. Lets the conditions' own ``extra_loss`` run
    on any tensors (a toy pair of numbers, or a network's parameters changed by hand).

    ``params`` become leaf tensors that require gradients; ``template`` (default: no heads) is the population's
    template when the names are a network's and may include injected heads.
    """

    def __init__(self, params: Mapping[str, torch.Tensor], initial_params: Mapping[str, torch.Tensor],
                 template: nn.Module | None = None):
        if not params or set(params) != set(initial_params):
            raise ValueError("params and initial_params must name the same, non-empty set of tensors")
        self.params = {k: v.detach().clone().float().requires_grad_(True) for k, v in params.items()}
        self.initial_params = {k: v.detach().clone().float() for k, v in initial_params.items()}
        first = next(iter(self.params.values()))
        self.members = first.shape[0]
        self.device = first.device
        self.template = template if template is not None else _NoHeads()


def _parameter_set(source, params: Mapping[str, torch.Tensor] | None) -> ParameterSet:
    if isinstance(source, ParameterSet) and params is None:
        return source
    return ParameterSet(params if params is not None else source.params, source.initial_params, source.template)


def regulariser_terms(source: Population | ParameterSet, params: Mapping[str, torch.Tensor] | None = None
                      ) -> pd.DataFrame:
    """What each regulariser measures, per member (one row each):

    * ``weight_norm`` — ‖θ‖₂ over all parameters, which L2 weight decay shrinks;
    * ``l2_to_init`` — ‖θ − θ₀‖₂, regenerative L2's term (:class:`~plasticity_lab.conditions.RegenL2` with
      coefficient 1);
    * ``w2_to_init`` — ‖sort(θ) − sort(θ₀)‖₂, sorting within each tensor, the Wasserstein-2 term
      (:class:`~plasticity_lab.conditions.RegenW2` with coefficient 1).

    The two regenerative terms come from the conditions' own ``extra_loss``; training adds ``coef`` times them to
    the loss. ``params`` (default: ``source.params``) are compared with ``source.initial_params``.
    """
    pset = _parameter_set(source, params)
    with torch.no_grad():
        values = {
            "weight_norm": member_norm(list(effective_params(pset).values())),
            "l2_to_init": RegenL2(coef=1.0).extra_loss(pset),
            "w2_to_init": RegenW2(coef=1.0).extra_loss(pset),
        }
    return pd.DataFrame({k: v.cpu().numpy() for k, v in values.items()}).rename_axis("member")


def regulariser_directions(source: Population | ParameterSet, params: Mapping[str, torch.Tensor] | None = None,
                           coefs: Mapping[str, float] | None = None) -> dict[str, dict[str, torch.Tensor]]:
    """The direction in which each regulariser moves the parameters, per unit of learning rate.

    * ``"l2"`` — decoupled weight decay multiplies θ by ``1 − lr·coef`` before each AdamW step, a displacement of
      ``−coef·θ`` per unit of learning rate (it never enters the gradient);
    * ``"regen_l2"``, ``"regen_w2"`` — minus the gradient of the condition's ``extra_loss``, computed by autograd
      through the package's own code. In training this gradient is added to PPO's before gradient clipping and
      Adam's per-coordinate scaling, so the step actually taken is not this vector.

    ``coefs`` overrides the coefficients of :data:`REGULARISERS` (PROTOCOL's defaults). Returns
    ``{regulariser: {parameter name: tensor [M, ...]}}``, keyed like ``params`` (default: ``source.params``).
    """
    coefs = {**REGULARISERS, **(coefs or {})}
    unknown = sorted(set(coefs) - set(REGULARISERS))
    if unknown:
        raise ValueError(f"unknown regulariser(s) {unknown}; valid: {', '.join(REGULARISERS)}")
    pset = _parameter_set(source, params)
    names = list(pset.params)
    out = {"l2": {k: -coefs["l2"] * pset.params[k].detach() for k in names}}
    for name, cls in (("regen_l2", RegenL2), ("regen_w2", RegenW2)):
        loss = cls(coef=coefs[name]).extra_loss(pset).sum()
        grads = torch.autograd.grad(loss, [pset.params[k] for k in names], allow_unused=True)
        out[name] = {k: (-g if g is not None else torch.zeros_like(pset.params[k])).detach()
                     for k, g in zip(names, grads)}
    return out


def regulariser_field(theta0: Sequence[float] = (0.6, -0.3), extent: float = 1.0, points: int = 9,
                      coefs: Mapping[str, float] | None = None) -> pd.DataFrame:
    """The three regularisers on the smallest possible network: one tensor of two values θ = (x, y), with
    initial value ``theta0``, on a ``points`` × ``points`` grid over [−extent, extent]².

    Every grid point is one member of a :class:`ParameterSet`, so the conditions' own code computes all of them at
    once. Columns: ``regulariser`` (``l2``, ``regen_l2``, ``regen_w2``), ``x``, ``y``, ``dx``, ``dy`` (the
    direction of :func:`regulariser_directions`, per unit of learning rate) and ``value`` — the quantity the
    regulariser reduces there (‖θ‖ for ``l2``, ‖θ − θ₀‖ for ``regen_l2``, ‖sort θ − sort θ₀‖ for ``regen_w2``).
    """
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(f"points must be an integer of at least 2; got {points!r}")
    theta0 = torch.as_tensor(theta0, dtype=torch.float32)
    if theta0.shape != (2,):
        raise ValueError(f"theta0 must be two numbers; got {tuple(theta0.tolist())}")
    axis = torch.linspace(-float(extent), float(extent), points)
    xs, ys = torch.meshgrid(axis, axis, indexing="xy")
    grid = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # [points², 2]
    pset = ParameterSet({"w": grid}, {"w": theta0.expand_as(grid)})
    terms = regulariser_terms(pset)
    directions = regulariser_directions(pset, coefs=coefs)
    value_of = {"l2": "weight_norm", "regen_l2": "l2_to_init", "regen_w2": "w2_to_init"}
    frames = []
    for name, column in value_of.items():
        d = directions[name]["w"].detach()
        frames.append(pd.DataFrame({"regulariser": name, "x": grid[:, 0].numpy(), "y": grid[:, 1].numpy(),
                                    "dx": d[:, 0].numpy(), "dy": d[:, 1].numpy(),
                                    "value": terms[column].to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def relabel_units(population: Population, permutation: Sequence[int] | torch.Tensor, block: int = 0,
                  params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The same function with the hidden units of one encoder block relabelled.

    Unit ``permutation[i]`` becomes unit ``i`` (for every member): the block's rows — its layer's weight rows and
    bias, and its norm's gain and bias if it has one — and the matching input columns of every layer that reads
    the block (the next block, or both heads after the last one) are permuted together, so the network computes
    exactly the same outputs (up to float rounding). Returns new parameters; ``params`` (default: the
    population's own) is not changed. Dense blocks with ReLU only (not CReLU, not convolutions).
    """
    params = {k: v.detach().clone() for k, v in (params if params is not None else population.params).items()}
    layers = ReDo().consumers(population)
    if not 0 <= block < len(layers):
        raise ValueError(f"block must be in [0, {len(layers) - 1}]; got {block}")
    layer_name, module, readers = layers[block]
    if isinstance(module.activation, CReLU) or not isinstance(module.layer, nn.Linear):
        raise ValueError("relabel_units handles dense blocks with a ReLU (not CReLU, not convolutions)")
    width = module.layer.out_features
    perm = torch.as_tensor(permutation, dtype=torch.long)
    if sorted(perm.tolist()) != list(range(width)):
        raise ValueError(f"permutation must be a permutation of 0..{width - 1}")
    owner = layer_name.rsplit(".", 1)[0]
    rows = [f"{layer_name}.weight", f"{layer_name}.bias", f"{owner}.norm.weight", f"{owner}.norm.bias"]
    for key in rows:
        if key in params:
            params[key] = params[key][:, perm]
    for reader in readers:
        key = f"{reader}.weight"
        params[key] = params[key][:, :, perm]
    return params


def shuffle_within_tensors(params: Mapping[str, torch.Tensor], generator: torch.Generator
                           ) -> dict[str, torch.Tensor]:
    """Every tensor's values shuffled at random, separately for each tensor and member: the same values in each
    tensor — so the same distribution per tensor — but in random places, hence in general a different function."""
    out = {}
    for name, value in params.items():
        flat = value.detach().reshape(value.shape[0], -1)
        order = torch.rand(flat.shape, generator=generator, device=generator.device).argsort(dim=1).to(flat.device)
        out[name] = flat.gather(1, order).reshape(value.shape)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Inputs and stored studies
# ---------------------------------------------------------------------------------------------------------------


def random_walk_observations(levels: Sequence[int], steps: int = 200, seed: int = 0,
                             mapping: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """``steps`` observations ``[steps, 363]`` of a uniformly random walk through ``levels`` (a new level from the
    pool every 100 steps), as the network would receive them: permuted by ``mapping`` if given (see
    :func:`plasticity_lab.shifts.apply_mapping`)."""
    import gymnasium as gym

    from .envs import GATHER_ENV_ID
    from .shifts import apply_mapping

    env = gym.make(GATHER_ENV_ID, levels=levels)
    env.action_space.seed(int(seed))
    obs, _ = env.reset(seed=int(seed))
    out = []
    for _ in range(int(steps)):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
    batch = torch.as_tensor(np.stack(out))
    return apply_mapping(batch, mapping) if mapping is not None else batch


#: The conditions the book compares every other condition with: doing nothing (warm-start) and the paper's
#: reference (reset-all).
BASELINES: tuple[str, ...] = ("warm_start", "reset_all")

#: The environment variable that names the folder in which :func:`study_path` looks up stored studies.
STUDY_DIR_VARIABLE = "PLASTICITY_LAB_STUDY_DIR"


def study_path(name: str, default: str | Path = "../data") -> Path:
    """The folder of the stored study ``name``: ``<studies>/<name>``, where ``<studies>`` is the folder named by the
    environment variable ``PLASTICITY_LAB_STUDY_DIR`` when it is set, and ``default`` otherwise — ``../data``, the
    repository's ``data/`` as the chapters in ``book/`` see it. Setting the variable shows every chapter the
    studies of another folder (the tests point it at small studies of their own) without editing a chapter."""
    return Path(os.environ.get(STUDY_DIR_VARIABLE) or default) / name


def load_study(path: str | Path, fetch: bool | None = None):
    """A stored study (:func:`plasticity_lab.load_results`), or ``None`` while it is still being computed: when
    the folder does not exist yet, or holds no finished population yet. A damaged study still raises.

    Where the folder does not exist and ``fetch`` is true — by default only on Colab, which opens a chapter
    without the repository — the study is downloaded once into ``data/<name>`` of the working folder
    (:func:`plasticity_lab.results.fetch_study`) and loaded from there; a failed download prints why and gives
    ``None``.
    """
    import sys

    from .results import fetch_study, load_results

    path = Path(path)
    if not path.is_dir():
        if fetch is None:
            fetch = "google.colab" in sys.modules
        if not fetch:
            return None
        local = Path("data") / path.name
        if not local.is_dir():
            try:
                fetch_study(path.name, local)
            except OSError as error:
                print(f"the stored study {path.name} could not be downloaded ({error}); "
                      "its results are on the book's web pages")
                return None
        path = local
    try:
        return load_results(path)
    except ValueError as error:
        if "no finished results" in str(error):
            return None
        raise


def read_runs(path: str | Path, conditions: Sequence[str], fetch: bool | None = None,
              base_url: str | None = None) -> dict[str, tuple[pd.DataFrame, dict]]:
    """A study stored as one ``plasticity-lab run`` folder per condition (``path/<condition>/``, each with
    ``epochs.parquet`` and ``manifest.json``): condition → (its per-epoch table, its manifest), as
    :func:`plasticity_lab.results.read_run` reads them.

    Where ``path`` does not exist and ``fetch`` is true — by default only on Colab, which opens a chapter without
    the repository — the conditions' folders are downloaded once into ``data/<name>`` of the working folder, from
    ``base_url/<name>`` (default: :data:`plasticity_lab.results.DATA_URL`, or the URL in
    ``$PLASTICITY_LAB_DATA_URL``), and read from there. The files land in a temporary folder that is renamed into
    place once all have arrived, so a failed download leaves nothing behind and raises its ``OSError``.
    """
    import shutil
    import sys
    import tempfile
    import urllib.request

    from .results import DATA_URL, DATA_URL_VARIABLE, read_run

    path = Path(path)
    if not path.is_dir():
        if fetch is None:
            fetch = "google.colab" in sys.modules
        if not fetch:
            raise FileNotFoundError(f"no study folder at {path}")
        local = Path("data") / path.name
        if not local.is_dir():
            base = (base_url or os.environ.get(DATA_URL_VARIABLE) or DATA_URL).rstrip("/") + f"/{path.name}"
            local.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=local.parent, prefix=f".{local.name}."))
            try:
                for condition in conditions:
                    (staging / condition).mkdir()
                    for name in ("manifest.json", "epochs.parquet"):
                        with urllib.request.urlopen(f"{base}/{condition}/{name}", timeout=60) as response:
                            (staging / condition / name).write_bytes(response.read())
                os.replace(staging, local)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        path = local
    return {condition: read_run(path / condition) for condition in conditions}


def _names(names: Sequence[str], markup: bool, last: str = "and") -> str:
    """``a, b and c`` (or ``a, b or c``); each name in ``<code>`` when ``markup``."""
    shown = [f"<code>{html.escape(n)}</code>" if markup else n for n in names]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} {last} {shown[-1]}"


@dataclasses.dataclass(frozen=True)
class StudySection:
    """What a section of the book can show of a stored study that may hold only some of its conditions so far;
    made by :func:`study_section`.

    Fields: ``study`` (the study's folder name), ``conditions`` (those the section is about, baselines included,
    in the order it shows them), ``baselines`` (those it compares the others with; empty: no comparison),
    ``present`` (every condition the study holds so far; empty while it holds no finished population),
    ``planned`` (the conditions the study's sweep computes, ``None`` when the study does not record them),
    ``points`` (the shift × condition points of the shown conditions with every value present), ``min_points``
    (the fewest points the section needs) and ``aside`` (a sentence added when there is nothing to show).
    Derived from them:

    * ``available`` — whether the section has something to show: the study holds at least one of the section's
      own conditions (those that are not baselines), at least one baseline to compare it with, and at least
      ``min_points`` points;
    * ``shown`` — the section's conditions that the study holds, in the section's order (then any baseline the
      study holds that the section did not list);
    * ``missing`` — the section's conditions the study does not hold; ``pending`` are those still to be computed
      (named by the study's sweep; every missing one when the study does not record its sweep), the others are
      not part of the study;
    * ``message`` — all of this in words, naming the conditions.

    Displayed in a notebook it shows the message as a note: a "Not yet available" admonition when the section has
    nothing to show ("Not available" when nothing it needs is still to come), a "Partly available" admonition when
    some of its conditions are still being computed, and a plain line naming what is shown otherwise.
    """

    study: str
    conditions: tuple[str, ...]
    baselines: tuple[str, ...]
    present: tuple[str, ...]
    planned: tuple[str, ...] | None
    points: int
    min_points: int = 0
    aside: str = ""

    @property
    def own(self) -> tuple[str, ...]:
        """The section's conditions that are not baselines."""
        return tuple(c for c in self.conditions if c not in self.baselines)

    @property
    def shown(self) -> tuple[str, ...]:
        listed = [c for c in self.conditions if c in self.present]
        return (*listed, *(b for b in self.baselines if b not in self.conditions and b in self.present))

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(c for c in self.conditions if c not in self.present)

    @property
    def pending(self) -> tuple[str, ...]:
        if self.planned is None:
            return self.missing
        return tuple(c for c in self.missing if c in self.planned)

    @property
    def available(self) -> bool:
        has_own = not self.own or any(c in self.present for c in self.own)
        has_baseline = not self.baselines or any(b in self.present for b in self.baselines)
        return bool(self.present) and has_own and has_baseline and self.points >= self.min_points

    @property
    def message(self) -> str:
        """The note's text, without markup."""
        return self._text(markup=False)

    def _text(self, markup: bool) -> str:
        study = f"<code>{html.escape(self.study)}</code>" if markup else self.study
        aside = [html.escape(self.aside) if markup else self.aside] if self.aside else []
        if not self.present:
            return " ".join([f"The study {study} is still being computed: its results are not in this copy of the "
                             "repository yet, so this section has nothing to show.", *aside])
        sentences = []
        so_far = ""
        if self.planned is not None and len(self.present) < len(self.planned):
            so_far = f" ({len(self.present)} of the {len(self.planned)} conditions it computes)"
        if not self.available:
            sentences.append(f"The study {study} holds {_names(self.present, markup)} so far{so_far}.")
            subject = "This section"
            if self.own and self.baselines:
                sentences.append(f"This section compares {_names(self.own, markup, 'or')} with "
                                 f"{_names(self.baselines, markup, 'or')} and needs at least one of each.")
                subject = "It also"
            if self.min_points:
                sentences.append(f"{subject} fits the shift × condition points of "
                                 f"{_names(self.conditions, markup)} and needs at least {self.min_points} of "
                                 f"them; the study has {self.points} so far.")
            elif self.own and not self.baselines:
                sentences.append(f"This section needs at least one of {_names(self.own, markup, 'or')}.")
        else:
            if so_far:
                sentences.append(f"The study {study} holds {len(self.present)} of the {len(self.planned)} "
                                 "conditions it computes so far.")
            sentences.append(f"Shown here: {_names(self.shown, markup)}.")
        absent = [c for c in self.missing if c not in self.pending]
        if self.pending:
            label = "Not in this study (yet)" if self.planned is None else "Still being computed"
            sentences.append(f"{label}: {_names(self.pending, markup)}.")
        if absent:
            sentences.append(f"Not part of this study: {_names(absent, markup)}.")
        if not self.available:
            sentences.extend(aside)
        return " ".join(sentences)

    def note(self) -> str:
        """The message as HTML, in the book's admonition style (see the class description)."""
        if self.available and not self.pending:
            return f"<p>{self._text(markup=True)}</p>"
        if self.available:
            title = "Partly available"
        else:
            title = "Not yet available" if not self.present or self.pending else "Not available"
        return (f'<div class="admonition note"><p class="admonition-title">{title}</p>'
                f"<p>{self._text(markup=True)}</p></div>")

    def lacks_points(self, minimum: int, what: str) -> str | None:
        """``None`` when the study has at least ``minimum`` shift × condition points of the shown conditions;
        otherwise a line saying that ``what`` (e.g. ``"the GLM"``) was not computed and why."""
        if self.points >= minimum:
            return None
        return (f"not computed: {what} needs at least {minimum} shift × condition points; "
                f"the study has {self.points} so far")

    def _repr_html_(self) -> str:
        return self.note()

    def __str__(self) -> str:
        return self.message


def _complete_points(runs: pd.DataFrame, conditions: Sequence[str]) -> int:
    """The shift × condition means over seeds of ``runs`` for ``conditions`` with no missing value: the points the
    correlations and the GLM of :mod:`plasticity_lab.analysis` fit."""
    from .analysis import DIAGNOSTICS

    part = runs[runs["condition"].isin(conditions)]
    if part.empty:
        return 0
    keys = [k for k in ("env", "shift", "condition") if k in part.columns]
    values = [c for c in ("normalised_train_return", "normalised_test_return", *DIAGNOSTICS) if c in part.columns]
    return int(part.groupby(keys)[values].mean().notna().all(axis=1).sum())


def _planned_conditions(manifest: dict) -> tuple[str, ...] | None:
    """The condition labels a study's sweep computes (coefficient values included), or ``None`` if the manifest
    does not record a sweep it can read."""
    from .sweep import Sweep

    if "sweep" not in manifest:
        return None
    try:
        configs = Sweep.from_dict(manifest["sweep"]).configs()
    except ValueError:  # a sweep of an older or newer package: its plan is unknown here
        return None
    return tuple(dict.fromkeys(c.label for c in configs))


def study_section(results, conditions: Sequence[str], baselines: Sequence[str] = BASELINES, *,
                  study: str | Path | None = None, min_points: int = 0, at: str = "mean",
                  aside: str = "") -> StudySection:
    """Whether a section of the book can show a stored study that may hold only some of its conditions so far,
    and the note that says what it shows and what it still lacks (:class:`StudySection`).

    ``results`` is what :func:`load_study` returned — a :class:`~plasticity_lab.results.Results`, or ``None`` while
    the study holds no finished population — or a run summary (a ``runs(at)`` table). ``conditions`` are those the
    section is about, baselines included, in the order it shows them; it needs at least one of them that is not a
    baseline, next to at least one of ``baselines`` to compare it with (``baselines=()``: no comparison, any one of
    ``conditions`` will do). ``min_points`` asks in addition for that many shift × condition points of the
    section's conditions with every value present — what a fit across them needs (a line's p-value: 3) — counted
    on ``results.runs(at)``.

    ``study`` names the study in the note (default: the folder of ``results``); ``aside`` is a sentence added to
    the note when the section has nothing to show, e.g. where else the chapter shows the same thing. The
    conditions the study's sweep will compute are read from its manifest, so the note can tell the conditions
    still being computed from those that are not part of the study.
    """
    from .results import Results

    conditions, baselines = tuple(conditions), tuple(baselines)
    if not conditions:
        raise ValueError("study_section needs at least one condition")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 0:
        raise ValueError(f"min_points must be a non-negative integer; got {min_points!r}")
    planned = None
    if results is None:
        runs = None
    elif isinstance(results, Results):
        runs = results.runs(at)
        planned = _planned_conditions(results.manifest)
        study = results.path.name if study is None else study
    elif isinstance(results, pd.DataFrame):
        runs = results
    else:
        raise TypeError(f"results must be a stored study (Results), a run summary or None; "
                        f"got {type(results).__name__}")
    name = Path(study).name if study is not None else "this study"
    if runs is None or runs.empty:
        present = ()
    else:
        found = list(pd.unique(runs["condition"]))
        order = {c: i for i, c in enumerate(planned or ())}
        present = tuple(sorted(found, key=lambda c: (order.get(c, len(order)), found.index(c))))
    section = StudySection(study=name, conditions=conditions, baselines=baselines, present=present,
                           planned=planned, points=0, min_points=min_points, aside=aside)
    if present:
        section = dataclasses.replace(section, points=_complete_points(runs, section.shown))
    return section


def compare_conditions(runs: pd.DataFrame, conditions: Sequence[str],
                       baselines: Sequence[str] = ("warm_start", "reset_all")) -> pd.DataFrame:
    """Each of ``conditions`` against each baseline present in ``runs`` (a run summary: a stored study's
    ``runs(at)`` or :func:`plasticity_lab.analysis.run_summary`), per shift and split: the rows of
    :func:`plasticity_lab.analysis.condition_ttests` with a ``baseline`` column.

    Warm-start is "doing nothing"; reset-all is the paper's reference. The sign of ``t`` is that of
    ``condition_ttests``: negative = the condition's normalised reward is higher than the baseline's.
    """
    from .analysis import condition_ttests

    present = set(runs["condition"])
    frames = []
    for baseline in baselines:
        if baseline not in present:
            continue
        others = [c for c in conditions if c in present and c != baseline]
        if not others:
            continue
        table = condition_ttests(runs[runs["condition"].isin([*others, baseline])], baseline=baseline)
        frames.append(table.assign(baseline=baseline))
    if not frames:
        raise ValueError(f"none of the baselines {list(baselines)} is in the table with another condition; "
                         f"present: {sorted(present)}")
    return pd.concat(frames, ignore_index=True)


def tally(comparisons: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Count :func:`compare_conditions`' rows per condition and baseline: ``comparisons`` (shift × split pairs),
    ``above`` / ``below`` (the condition's mean normalised reward is higher / lower than the baseline's), and how
    many of those differences are significant (``p < alpha``): ``significantly_above``, ``significantly_below``."""
    rows = []
    for (condition, baseline), part in comparisons.groupby(["condition", "baseline"], sort=False):
        above, below = part["mean"] > part["baseline_mean"], part["mean"] < part["baseline_mean"]
        significant = part["p"] < alpha
        rows.append({"condition": condition, "baseline": baseline, "comparisons": len(part),
                     "above": int(above.sum()), "below": int(below.sum()),
                     "significantly_above": int((above & significant).sum()),
                     "significantly_below": int((below & significant).sum())})
    return pd.DataFrame(rows).set_index(["condition", "baseline"])


def describe_gaps(tests: pd.DataFrame, baseline: str = "reset_all", alpha: float = 0.05) -> str:
    """The rows of :func:`~plasticity_lab.analysis.condition_ttests` in words, a Markdown bullet per shift:
    on each split, whether the condition's mean normalised reward is below or above that of ``baseline`` (the
    tests' baseline, named in the words), and whether the difference is significant (``p < alpha``), with both
    means and ``p``.

    The book prints this instead of describing a stored study's gaps in fixed prose, so that the words stay true
    of whatever study the chapter reads.
    """
    missing = sorted({"condition", "split", "mean", "baseline_mean", "p"} - set(tests.columns))
    if missing:
        raise ValueError(f"describe_gaps needs condition_ttests' columns; missing: {missing}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha!r}")
    shifts = tests["shift"] if "shift" in tests.columns else pd.Series("all shifts", index=tests.index)
    lines = []
    for shift in dict.fromkeys(shifts):
        parts = []
        for row in tests[shifts == shift].itertuples():
            side = ("below" if row.mean < row.baseline_mean
                    else "above" if row.mean > row.baseline_mean else "level with")
            weight = "significantly " if row.p < alpha and side != "level with" else ""
            p_text = "p < 0.001" if row.p < 0.001 else f"p = {row.p:.3f}"
            parts.append(f"{row.split}: {row.condition} {weight}{side} {baseline} "
                         f"({row.mean:+.3f} against {row.baseline_mean:+.3f}, {p_text})")
        lines.append(f"* *{shift}* — " + "; ".join(parts) + ".")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Soft shrink+perturb without learning
# ---------------------------------------------------------------------------------------------------------------


def soft_shrink_perturb_trajectory(shrink: float, perturb: float, steps: int = 500, seed: int = 0,
                                   every: int = 10) -> pd.DataFrame:
    """Apply soft shrink+perturb (the condition's own ``after_optimizer_step``) ``steps`` times to a freshly
    initialised gridworld network, with no learning in between, and record the RMS of all its parameters every
    ``every`` steps, next to its prediction.

    Each step is θ ← αθ + βθ_fresh with an independent zero-mean fresh draw, so the mean square follows
    ``m_n = α²·m_{n−1} + β²·f`` (f: the fresh initialisation's mean square, from :func:`expected_fresh_rms`):
    ``m_n = α^{2n}·m_0 + β²·f·(1 − α^{2n}) / (1 − α²)``, tending to ``β²f/(1 − α²)``. Left alone, the weights
    settle at RMS ``β/√(1 − α²)`` times a fresh network's; with the default α = 1 − β that is ≈ √(β/2) of it
    (e.g. 0.07 % for β = 10⁻⁶): between gradient steps the rule pulls every weight toward zero, and gradients
    must hold it up. Columns: ``step``, ``rms`` (measured), ``predicted``.
    """
    from .conditions import SoftShrinkPerturb
    from .nets import NetworkSpec

    condition = SoftShrinkPerturb(perturb=perturb, shrink=shrink)
    population = Population(NetworkSpec(), [seed])
    condition.setup(population)
    generator = torch.Generator().manual_seed(population_seed([seed]) + 1)
    fresh = float(expected_fresh_rms(population)["all"]) ** 2
    alpha, beta = float(shrink), float(perturb)

    def rms() -> float:
        return float(layer_rms(population.params).loc["all"].iloc[0])

    start = rms() ** 2
    rows = [{"step": 0, "rms": start**0.5, "predicted": start**0.5}]
    with torch.no_grad():
        for n in range(1, steps + 1):
            condition.after_optimizer_step(population, generator)
            if n % every == 0 or n == steps:
                decay = alpha ** (2 * n)
                stationary = beta**2 * fresh * (n if alpha == 1 else (1 - decay) / (1 - alpha**2))
                rows.append({"step": n, "rms": rms(), "predicted": (decay * start + stationary) ** 0.5})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# Architecture: LayerNorm and CReLU
# ---------------------------------------------------------------------------------------------------------------


def architecture_table(conditions: Sequence[str] = ("warm_start", "layernorm", "crelu")) -> pd.DataFrame:
    """The gridworld network each condition trains, layer by layer, built from the condition's own
    ``network_options()`` (so ``"soft_shrink_perturb+layernorm"`` gives the LayerNorm network).

    One row per condition × layer (the encoder's blocks, then the two heads): ``inputs`` (the
    layer's input width), ``units`` (its linear map's outputs: the pre-activation units), ``outputs`` (the width
    after the activation — twice ``units`` with CReLU), ``norm`` and ``activation`` (class names, ``"—"`` for
    none) and ``parameters`` (the layer's own, its norm's gain and bias included). Counts come from the built
    modules, not from a formula; their sum over a condition's rows is the whole network's.
    """
    from .nets import NetworkSpec

    rows = []
    for condition in conditions:
        spec = NetworkSpec(**parse_condition(condition).network_options())
        network = spec.build()
        names = {id(m): n for n, m in network.named_modules()}
        layers = [(names[id(b)], b.layer, b.norm, b.activation) for b in network.blocks()]
        layers += [(name, head, None, None) for name, head in network.heads().items()]
        for name, layer, norm, activation in layers:
            units = layer.out_features
            outputs = units if activation is None else int(activation(torch.ones(1, units)).shape[-1])
            count = sum(p.numel() for p in layer.parameters())
            if norm is not None:
                count += sum(p.numel() for p in norm.parameters())
            has_norm = norm is not None and not isinstance(norm, nn.Identity)
            rows.append({"condition": condition, "layer": name, "inputs": layer.in_features, "units": units,
                         "outputs": outputs, "norm": type(norm).__name__ if has_norm else "—",
                         "activation": type(activation).__name__ if activation is not None else "—",
                         "parameters": count})
    return pd.DataFrame(rows).set_index(["condition", "layer"])


def _stacked_obs(population: Population, obs: torch.Tensor) -> torch.Tensor:
    obs = obs.to(population.device)
    return obs.unsqueeze(0).expand(population.members, *obs.shape) if obs.dim() == 2 else obs


def _dense_blocks(population: Population) -> list[tuple[str, nn.Module, list[str]]]:
    """ReDo's view of the encoder — (layer name, block, the modules reading the block) — for dense blocks only."""
    layers = ReDo().consumers(population)
    for name, block, _ in layers:
        if not isinstance(block.layer, nn.Linear):
            raise ValueError(f"only dense (MLP) encoders are supported; {name} is {type(block.layer).__name__}")
    return layers


def _active_units(outputs: torch.Tensor, crelu: bool) -> torch.Tensor:
    """Whether each pre-activation unit passes its input on (and gradient back): ``[M, N, outputs] → [M, N, units]``.

    A ReLU unit does so where its output is positive; a CReLU unit ``i`` feeds outputs ``i`` and ``i + W`` and does
    so where either is non-zero, i.e. wherever its pre-activation is not exactly 0."""
    positive = outputs != 0
    if crelu:
        width = positive.shape[-1] // 2
        return positive[..., :width] | positive[..., width:]
    return positive


def unit_activity(population: Population, obs: torch.Tensor, tau: float = 0.025, seed: int = 0) -> pd.DataFrame:
    """How alive each hidden layer of ``population`` is on the inputs ``obs`` (``[N, 363]`` for every member, or
    ``[M, N, 363]``). One row per member × encoder block:

    * ``units`` — pre-activation units (half the outputs with CReLU);
    * ``zero_fraction`` — the fraction of exactly-zero outputs over inputs × outputs; for the last block this is the
      study's *dead units* diagnostic (:func:`~plasticity_lab.metrics.dead_unit_fraction`);
    * ``never_active`` — the fraction of units that pass nothing on for any of the inputs (a ReLU unit whose output
      is 0 on every input; a CReLU unit whose two outputs are both 0 on every input);
    * ``dormant`` — the fraction of units ReDo would recycle at threshold ``tau``
      (:func:`~plasticity_lab.metrics.dormant_scores` ≤ τ; with CReLU both outputs must be);
    * ``no_gradient`` — the fraction of units whose incoming weights get an exactly zero gradient from a loss on
      these inputs (a fixed random mix, seeded by ``seed``, of every logit and value, so no gradient cancels by
      construction): units the gradient cannot reach, however the loss is chosen;
    * ``fewest_active`` — the smallest number of units passing their input on, over the inputs.
    """
    from .metrics import dormant_scores

    layers = _dense_blocks(population)
    x = _stacked_obs(population, obs)
    trainable = [f"{name}.weight" for name, _, _ in layers]
    with torch.enable_grad():
        logits, value, _, hidden = population.forward(x, return_hidden=True)
        generator = torch.Generator().manual_seed(int(seed))
        mix = torch.randn(logits.shape, generator=generator).to(logits.device)
        loss = (logits * mix).sum() + (value * torch.randn(value.shape, generator=generator).to(value.device)).sum()
        grads = torch.autograd.grad(loss, [population.params[k] for k in trainable], allow_unused=True)
    rows = []
    for (name, block, _), outputs, grad in zip(layers, hidden, grads):
        outputs = outputs.detach()
        crelu = isinstance(block.activation, CReLU)
        active = _active_units(outputs, crelu)  # [M, N, units]
        dormant = dormant_scores(outputs) <= tau
        if crelu:
            width = dormant.shape[1] // 2
            dormant = dormant[:, :width] & dormant[:, width:]
        silent = (grad == 0).all(-1) if grad is not None else torch.ones_like(dormant)
        zero = (outputs == 0).float().reshape(outputs.shape[0], -1).mean(1)
        for m in range(population.members):
            rows.append({"member": m, "layer": name, "units": active.shape[-1],
                         "zero_fraction": float(zero[m]),
                         "never_active": float((~active[m].any(0)).float().mean()),
                         "dormant": float(dormant[m].float().mean()),
                         "no_gradient": float(silent[m].float().mean()),
                         "fewest_active": int(active[m].sum(-1).min())})
    return pd.DataFrame(rows).set_index(["member", "layer"])


def apply_after_steps(population: Population, condition: str | Condition, steps: int, seed: int | None = None
                      ) -> Population:
    """A copy of ``population`` after ``steps`` calls of ``condition``'s ``after_optimizer_step`` hook (the one soft
    shrink+perturb uses) with no learning in between. The population itself is left untouched; ``seed`` as in
    :func:`apply_at_shift` (default: the seed a run of these members shares, plus one)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
    cond = _condition(condition)
    twin = copy_population(population)
    cond.setup(twin)
    if seed is None:
        seed = population_seed(population.member_seeds) + 1
    generator = torch.Generator(device=twin.device).manual_seed(int(seed))
    with torch.no_grad():
        for _ in range(steps):
            cond.after_optimizer_step(twin, generator)
    return twin


def two_by_two(runs: pd.DataFrame, first: str = "soft_shrink_perturb", second: str = "layernorm",
               neither: str = "warm_start") -> pd.DataFrame:
    """A 2 × 2 ablation of two conditions that combine: the mean normalised reward (over seeds) of ``neither``,
    ``first`` alone, ``second`` alone and ``first+second``, per shift and split; ``interaction`` =
    both − first − second + neither (0 when the two effects simply add up; positive when together they do better
    than the sum of their separate gains over ``neither``), with the ``t`` and ``p`` of its test
    (:func:`plasticity_lab.analysis.interaction_test`, the two-way ANOVA's test of interaction on the per-seed
    values).

    ``runs`` is a run summary (a stored study's ``runs(at)`` or :func:`plasticity_lab.analysis.run_summary`);
    every one of the four conditions must be in it.
    """
    from .analysis import interaction_test

    tests = interaction_test(runs, first, second, neither)
    index = [k for k in ("env", "shift") if k in tests.columns and (k != "env" or tests["env"].nunique() > 1)]
    columns = [neither, first, second, f"{first}+{second}", "interaction", "t", "p"]
    return tests.set_index(index + ["split"])[columns]


# ---------------------------------------------------------------------------------------------------------------
# ReDo: dormant units and their recycling
# ---------------------------------------------------------------------------------------------------------------


def unit_scores(population: Population, obs: torch.Tensor) -> pd.DataFrame:
    """Every hidden output of ``population`` scored on the inputs ``obs`` (``[N, 363]`` or ``[M, N, 363]``), one
    row per member × encoder block × output: ``score`` (ReDo's :func:`~plasticity_lab.metrics.dormant_scores`),
    ``zero_fraction`` (the fraction of the inputs on which the output is exactly 0 — the unit's share in the
    dead-units diagnostic) and ``mean_activation`` (its mean absolute output)."""
    from .metrics import dormant_scores

    with torch.no_grad():
        hidden = population.forward(_stacked_obs(population, obs), return_hidden=True)[3]
    names = [name for name, _, _ in ReDo().consumers(population)]
    frames = []
    for name, a in zip(names, hidden):
        scores = dormant_scores(a).cpu()
        zero = (a == 0).float().mean(1).cpu()
        mean = a.abs().mean(1).cpu()
        members, outputs = scores.shape
        frames.append(pd.DataFrame({"member": np.repeat(np.arange(members), outputs), "layer": name,
                                    "unit": np.tile(np.arange(outputs), members),
                                    "score": scores.reshape(-1).numpy(), "zero_fraction": zero.reshape(-1).numpy(),
                                    "mean_activation": mean.reshape(-1).numpy()}))
    return pd.concat(frames, ignore_index=True)


def recycle(population: Population, obs: torch.Tensor, redo: ReDo | None = None, seed: int | None = None
            ) -> tuple[Population, list[torch.Tensor]]:
    """What one ReDo step does to ``population`` when it scores its units on ``obs`` (``[N, 363]`` for every
    member, or ``[M, N, 363]``): ReDo's own :meth:`~plasticity_lab.conditions.ReDo.recycle` on a copy. Returns the
    copy and, per encoder block, the recycled pre-activation units (``[M, units]`` masks). The population itself is
    left untouched; ``redo`` defaults to ``ReDo()`` (τ = 0.025, all consumers), ``seed`` as in
    :func:`apply_at_shift`."""
    redo = redo if redo is not None else ReDo()
    twin = copy_population(population)
    redo.setup(twin)
    twin.last_minibatch_obs = _stacked_obs(twin, obs)
    if seed is None:
        seed = population_seed(population.member_seeds)
    units = redo.recycle(twin, torch.Generator(device=twin.device).manual_seed(int(seed)))
    return twin, units


def _output_columns(mask: torch.Tensor, crelu: bool) -> torch.Tensor:
    """Pre-activation units ``[M, W]`` → the block's output columns they own (``[M, 2W]`` with CReLU)."""
    return torch.cat([mask, mask], dim=1) if crelu else mask


def silence_units(population: Population, units: Sequence[torch.Tensor], outgoing: str = "all",
                  params: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """The parameters with the outgoing weights of ``units`` set to 0 and nothing else changed: per encoder block a
    ``[M, units]`` mask (as :func:`recycle` returns), whose units' columns are zeroed in every module that reads
    the block (the next block; after the last one the heads — only the policy head with
    ``outgoing="policy_only"``). Returns new parameters; ``params`` (default: the population's own) is not
    changed. This is ReDo's second step without its first (fresh incoming weights): the network without those
    units' contributions. Dense encoders only.
    """
    params = {k: v.detach().clone() for k, v in (params if params is not None else population.params).items()}
    layers = ReDo(outgoing=outgoing).consumers(population)
    _dense_blocks(population)
    if len(units) != len(layers):
        raise ValueError(f"units needs one mask per encoder block ({len(layers)}); got {len(units)}")
    for (name, block, readers), mask in zip(layers, units):
        mask = torch.as_tensor(mask, dtype=torch.bool, device=population.device)
        if mask.shape != (population.members, block.layer.out_features):
            raise ValueError(f"the mask for {name} must have shape {(population.members, block.layer.out_features)}; "
                             f"got {tuple(mask.shape)}")
        columns = _output_columns(mask, isinstance(block.activation, CReLU))
        for reader in readers:
            key = f"{reader}.weight"
            params[key] = params[key].masked_fill(columns[:, None, :], 0.0)
    return params


def recycling_table(before: Population, after: Population, units: Sequence[torch.Tensor]) -> pd.DataFrame:
    """What a ReDo step changed, read off the parameters (not from ReDo's own bookkeeping): one row per member ×
    encoder block × module reading the block (every reader, whatever ReDo's ``outgoing`` option was).

    Columns: ``units`` (the block's pre-activation units), ``recycled`` (units in ``units``' mask),
    ``incoming_changed`` (units whose incoming weights changed — not counting the input columns of the previous
    block's recycled units, which ReDo zeroes in every row), ``changed_not_recycled`` (units outside the mask whose
    incoming weights changed, counted the same way), ``bias_changed`` (units whose bias changed), ``outgoing_zero``
    (recycled units whose every outgoing weight into this reader is exactly 0) and ``zero_not_recycled`` (other
    units whose outgoing weights into this reader are all 0).
    """
    layers = _dense_blocks(before)
    if len(units) != len(layers):
        raise ValueError(f"units needs one mask per encoder block ({len(layers)}); got {len(units)}")
    rows = []
    upstream = None  # the previous block's recycled output columns [M, inputs]
    for (name, block, readers), mask in zip(layers, units):
        mask = torch.as_tensor(mask, dtype=torch.bool).cpu()
        crelu = isinstance(block.activation, CReLU)
        w0, w1 = before.params[f"{name}.weight"].detach().cpu(), after.params[f"{name}.weight"].detach().cpu()
        b0, b1 = before.params[f"{name}.bias"].detach().cpu(), after.params[f"{name}.bias"].detach().cpu()
        differs = w0 != w1  # [M, units, inputs]
        if upstream is not None:
            differs = differs & ~upstream[:, None, :]
        incoming = differs.any(-1)  # [M, units]
        bias = b0 != b1
        upstream = _output_columns(mask, crelu)
        for reader in readers:
            zero_columns = (after.params[f"{reader}.weight"].detach().cpu() == 0).all(1)  # [M, outputs]
            if crelu:
                width = zero_columns.shape[1] // 2
                zero_units = zero_columns[:, :width] & zero_columns[:, width:]
            else:
                zero_units = zero_columns
            for m in range(mask.shape[0]):
                rows.append({"member": m, "layer": name, "reader": reader, "units": int(mask.shape[1]),
                             "recycled": int(mask[m].sum()), "incoming_changed": int(incoming[m].sum()),
                             "changed_not_recycled": int((incoming[m] & ~mask[m]).sum()),
                             "bias_changed": int(bias[m].sum()),
                             "outgoing_zero": int((zero_units[m] & mask[m]).sum()),
                             "zero_not_recycled": int((zero_units[m] & ~mask[m]).sum())})
    return pd.DataFrame(rows).set_index(["member", "layer", "reader"])


def run_redo(configs) -> tuple:
    """Train a population whose condition contains ReDo (``configs``: :class:`~plasticity_lab.RunConfig` s of one
    population, as for :func:`plasticity_lab.run`) and log every recycling step.

    Returns the finished :class:`~plasticity_lab.experiment.Experiment` (``.table()`` is :func:`plasticity_lab.run`'s
    table; ``.population`` the trained networks) and a table with one row per ReDo step × member × encoder block:
    ``condition``, ``shift``, ``seed``, ``epoch`` (the epoch after whose update ReDo acted), ``round``, ``layer``,
    ``units`` and ``recycled`` — what the condition's own ``recycle`` returned.
    """
    from .conditions import Composite
    from .experiment import Experiment

    experiment = Experiment(configs)
    condition = experiment.condition
    parts = condition.parts if isinstance(condition, Composite) else [condition]
    redo = next((p for p in parts if isinstance(p, ReDo)), None)
    if redo is None:
        raise ValueError(f"run_redo needs a condition with ReDo; got {condition.name!r}")
    records = []
    original = redo.recycle

    def logged(population, generator, acting=None):
        recycled = original(population, generator, acting)
        names = [name for name, _, _ in redo.consumers(population)]
        for name, mask in zip(names, recycled):
            for m, cfg in enumerate(experiment.configs):
                if acting is None or bool(acting[m]):
                    records.append({"condition": cfg.label, "shift": cfg.shift, "seed": cfg.seed,
                                    "epoch": experiment.epoch,
                                    "round": experiment.epoch // cfg.epochs_per_round + 1, "layer": name,
                                    "units": int(mask.shape[1]), "recycled": int(mask[m].sum())})
        return recycled

    redo.recycle = logged
    try:
        while not experiment.finished:
            experiment.train_epoch()
    finally:
        del redo.recycle  # the instance attribute hid the method; removing it restores ReDo's own
    columns = ["condition", "shift", "seed", "epoch", "round", "layer", "units", "recycled"]
    return experiment, pd.DataFrame(records, columns=columns)
