"""The regularisers of chapter 7 — L2, regenerative L2 and Wasserstein-2 — on their own: what each measures, the
direction it moves the parameters, and the parameter changes that the Wasserstein-2 penalty does not see.

Every quantity comes from the conditions' own code (:class:`~plasticity_lab.conditions.RegenL2`,
:class:`~plasticity_lab.conditions.RegenW2` and their ``extra_loss``), run on a :class:`ParameterSet`: a bare stack
of parameters, from a toy pair of numbers to a network's weights changed by hand.

* :class:`ParameterSet` — a bare stack of parameters and their initial values, enough for the regularisers.
* :func:`regulariser_terms`, :func:`regulariser_directions`, :func:`regulariser_field` — the quantities the
  regularisers shrink, and the direction each moves the parameters.
* :func:`regulariser_field_figure` — :func:`regulariser_field` drawn (plotly).
* :func:`relabel_units`, :func:`shuffle_within_tensors` — parameter changes that the Wasserstein-2 penalty does not
  see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..conditions import ReDo, RegenL2, RegenW2, effective_params
from ..metrics import member_norm
from ..nets import CReLU
from ..population import Population
from .style import TEMPLATE

__all__ = ["REGULARISERS", "ParameterSet", "regulariser_directions", "regulariser_field", "regulariser_field_figure",
           "regulariser_terms", "relabel_units", "shuffle_within_tensors"]


#: The regularisers of :func:`regulariser_directions`, with their default coefficients (PROTOCOL §4).
REGULARISERS: dict[str, float] = {"l2": 1e-3, "regen_l2": 1e-2, "regen_w2": 1e-2}


class _NoHeads(nn.Module):
    """A template without heads: :func:`~plasticity_lab.conditions.effective_params` then returns the parameters
    as they are."""

    def heads(self) -> dict[str, nn.Module]:
        return {}


class ParameterSet:
    """A bare stack of parameters ``[M, ...]`` and their initial values θ₀ — the part of a
    :class:`~plasticity_lab.population.Population` that the regularisers read. Lets the conditions' own
    ``extra_loss`` run on any tensors (a toy pair of numbers, or a network's parameters changed by hand).

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


def regulariser_field_figure(field: pd.DataFrame, theta0: Sequence[float]):
    """:func:`regulariser_field` drawn: one panel per regulariser, the quantity it reduces as a contour map and its
    direction as arrows (each panel's arrows scaled to its longest, so the *lengths* compare within a panel only);
    the star marks θ₀ and, in the Wasserstein-2 panel, the diamond its mirror image (θ₀ with its two values
    swapped)."""
    # plotly is imported here, by the figure alone: the computations of this module run without it
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = {"l2": "L2 (weight decay): toward 0", "regen_l2": "regenerative L2: toward θ₀",
              "regen_w2": "Wasserstein-2: toward θ₀ or its mirror"}
    names = [n for n in titles if n in set(field["regulariser"])]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=[titles[n] for n in names],
                        horizontal_spacing=0.06)
    x0, y0 = (float(v) for v in theta0)
    for j, name in enumerate(names):
        part = field[field["regulariser"] == name]
        xs, ys = np.sort(part["x"].unique()), np.sort(part["y"].unique())
        z = part.pivot(index="y", columns="x", values="value").loc[ys, xs].to_numpy()
        fig.add_trace(go.Contour(x=xs, y=ys, z=z, colorscale="Blues", reversescale=True, showscale=False,
                                 contours=dict(showlabels=True, labelfont=dict(size=9)), opacity=0.6,
                                 line=dict(smoothing=1.3),
                                 hovertemplate="θ = (%{x:.2f}, %{y:.2f})<br>value %{z:.3f}<extra></extra>"),
                      row=1, col=j + 1)
        length = np.hypot(part["dx"], part["dy"]).max()
        spacing = (xs[1] - xs[0]) if len(xs) > 1 else 1.0
        scale = 0.8 * spacing / length if length > 0 else 0.0
        ex, ey = part["x"] + scale * part["dx"], part["y"] + scale * part["dy"]
        nan = np.full(len(part), np.nan)
        line_x = np.column_stack([part["x"], ex, nan]).ravel()
        line_y = np.column_stack([part["y"], ey, nan]).ravel()
        head = np.tile([0, 7, 0], len(part))  # an arrowhead at the end of each segment only
        fig.add_trace(go.Scatter(x=line_x, y=line_y, mode="lines+markers", line=dict(color="#222222", width=1.2),
                                 marker=dict(symbol="arrow", angleref="previous", size=head, color="#222222"),
                                 hoverinfo="skip", showlegend=False), row=1, col=j + 1)
        fig.add_trace(go.Scatter(x=[x0], y=[y0], mode="markers", marker=dict(symbol="star", size=14, color="#d62728"),
                                 name="θ₀", showlegend=j == 0, hovertemplate="θ₀<extra></extra>"), row=1, col=j + 1)
        if name == "regen_w2":
            fig.add_trace(go.Scatter(x=[y0], y=[x0], mode="markers",
                                     marker=dict(symbol="diamond", size=11, color="#d62728"),
                                     name="θ₀ mirrored (values swapped)",
                                     hovertemplate="(θ₀[1], θ₀[0])<extra></extra>"),
                          row=1, col=j + 1)
        fig.update_xaxes(title_text="θ[0]", row=1, col=j + 1)
        fig.update_yaxes(title_text="θ[1]" if j == 0 else None, row=1, col=j + 1)
    fig.update_layout(template=TEMPLATE, height=430, margin=dict(l=60, r=20, t=60, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig
