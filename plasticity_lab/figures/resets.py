"""What a reset, shrink+perturb or a plasticity injection does at a shift (chapter 6), measured on a copy of a
trained population.

Nothing here re-implements a condition: every function calls the condition's own ``at_shift`` action
(:mod:`plasticity_lab.conditions`) on a copy of the population and reports what changed, in the weights and in the
network's outputs. The later chapters reuse :func:`copy_population` and :func:`output_change` for their own
interventions.

* :func:`copy_population`, :func:`apply_at_shift` — try a condition's at-shift action on a copy of a population.
* :func:`layer_rms`, :func:`expected_fresh_rms` — the root-mean-square of each layer's parameters, measured and (for
  a fresh initialisation) predicted.
* :func:`at_shift_table`, :func:`at_shift_outputs`, :func:`output_change` — per condition, what its at-shift action
  does to each layer's weights and to the network's outputs.
* :func:`injection_head_updates` — after an injection, how far the original head and the injected copy moved.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from ..conditions import Condition, InjectedHead, effective_params, parse_condition
from ..experiment import population_seed
from ..metrics import member_norm
from ..population import Population

__all__ = ["apply_at_shift", "at_shift_outputs", "at_shift_table", "copy_population", "expected_fresh_rms",
           "injection_head_updates", "layer_of", "layer_rms", "output_change"]


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
