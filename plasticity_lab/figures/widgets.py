"""Interactive explorers for a live kernel (Jupyter, Colab), built with ipywidgets.

Each explorer is a function returning an ``ipywidgets`` container: display it (leave it as a cell's last
expression). Moving a control recomputes the picture in the kernel. The pictures are PNGs drawn with matplotlib
and shown in an ``ipywidgets.Image``: a PNG is part of the widget's saved state, so the book's static pages show
the explorer's first picture even without a kernel (its controls move there, but nothing is recomputed — each
chapter pairs an explorer with a plotly figure that has its own slider).

* :func:`shift_explorer`, :func:`shift_picture` — a shift's training distribution, round by round (chapter 3).
* :func:`soft_shrink_perturb_explorer`, :func:`soft_shrink_perturb_picture` — soft shrink+perturb's two
  coefficients, and a short live run with them (chapter 8).
* :func:`regression_explorer`, :func:`regression_tables` — the regression of normalised reward on the diagnostics,
  refitted for the split, shift and diagnostics picked (chapter 12).

Works with ipywidgets 7.6+ (Colab) and 8.x.
"""

from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure  # drawn off-screen, without pyplot: the session's backend is left alone

from ..envs.gridworld import level_layout, render_rgb
from ..schema import DIAGNOSTICS
from ..shifts import apply_mapping, level_range, permute_mapping
from .environment import CHANNELS, observation_grid
from .style import SHIFT_COLORS

__all__ = ["regression_explorer", "regression_tables", "shift_explorer", "shift_picture",
           "soft_shrink_perturb_explorer", "soft_shrink_perturb_picture"]


_STRIP_CMAP = ListedColormap(["#f2f2f2", "#9ecae1", "#08519c"])  # not in any pool / other rounds / this round


def _describe(shift: str, seed: int, round_: int, pool_size: int) -> str:
    train = level_range(shift, seed, round_, "train", pool_size)
    test = level_range(shift, seed, round_, "test", pool_size)
    if shift == "permute":
        mapping = permute_mapping(seed, round_)
        moved = int((mapping != np.arange(mapping.size)).sum())
        inputs = f"inputs reordered by σ<sup>{round_}</sup> ({moved} of {mapping.size} entries moved)"
    else:
        inputs = "inputs not reordered"
    return (f"<b>{shift}, round {round_}</b>: train levels {train.start:,} … {train.stop - 1:,} "
            f"({len(train)}), test levels {test.start:,} … {test.stop - 1:,} ({len(test)}); {inputs}.")


def shift_picture(shift: str, round_: int, seed: int = 0, pool_size: int = 10, rounds: int = 10,
                  dpi: int = 90) -> bytes:
    """PNG bytes of what the training distribution of ``shift`` looks like in ``round_``.

    Left: one level of the round — the first of the block of ``pool_size`` levels that is newest in that round
    (under *permute*, whose pool never moves, the first level of the pool) — as a picture, then as the three input
    channels the network receives (permuted by σ^round under *permute*). Right: the training pools of rounds
    1 … ``rounds`` (rows) over the levels they draw from, the chosen round highlighted.
    """
    pool = level_range(shift, seed, round_, "train", pool_size)
    level = pool.stop - pool_size  # window: the pool itself; expand: the block added this round
    raw = level_layout(level).observation()
    obs = raw if shift != "permute" else apply_mapping(torch.as_tensor(raw), permute_mapping(seed, round_)).numpy()
    grid = observation_grid(obs)

    fig = Figure(figsize=(11.5, 3.4), dpi=dpi)
    gs = fig.add_gridspec(1, 6, width_ratios=[1, 1, 1, 1, 0.15, 3.2], wspace=0.15)
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(render_rgb(raw, cell_px=12))
    ax.set_title(f"level {level:,}", fontsize=10)
    ax.axis("off")
    norm = TwoSlopeNorm(vmin=-1, vcenter=0, vmax=1)
    for c, channel in enumerate(CHANNELS):
        ax = fig.add_subplot(gs[0, c + 1])
        ax.imshow(grid[c], cmap="RdBu", norm=norm)
        ax.set_title(f"input: {channel}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(gs[0, 5])
    start = level_range(shift, seed, 1, "train", pool_size).start
    rows = np.zeros((rounds, rounds * pool_size), dtype=np.int64)  # row r-1: the pool of round r
    for r in range(1, rounds + 1):
        p = level_range(shift, seed, r, "train", pool_size)
        rows[r - 1, p.start - start:p.stop - start] = 2 if r == round_ else 1
    ax.imshow(rows, aspect="auto", cmap=_STRIP_CMAP, vmin=0, vmax=2, interpolation="nearest",
              extent=(start - 0.5, start + rounds * pool_size - 0.5, rounds + 0.5, 0.5))
    ax.axhline(round_ - 0.5, color=SHIFT_COLORS[shift], lw=2)
    ax.axhline(round_ + 0.5, color=SHIFT_COLORS[shift], lw=2)
    ax.set_yticks(range(1, rounds + 1))
    ax.set_ylabel("round", fontsize=9)
    ax.set_xlabel("training level", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_title(f"{shift}: pools per round (dark: round {round_})", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def shift_explorer(seed: int = 0, pool_size: int = 10, rounds: int = 10, shift: str = "permute",
                   round_: int = 1) -> widgets.VBox:
    """A shift dropdown and a round slider over :func:`shift_picture`, with a one-line description of the round's
    train/test pools and observation mapping. Returns the widget (display it)."""
    shift_box = widgets.Dropdown(options=["permute", "window", "expand"], value=shift, description="shift")
    round_box = widgets.IntSlider(value=round_, min=1, max=rounds, step=1, description="round",
                                  continuous_update=False)
    text = widgets.HTML()
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))

    def redraw(_=None):
        text.value = _describe(shift_box.value, seed, round_box.value, pool_size)
        image.value = shift_picture(shift_box.value, round_box.value, seed, pool_size, rounds)

    shift_box.observe(redraw, names="value")
    round_box.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([shift_box, round_box]), text, image])


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def soft_shrink_perturb_picture(shrink: float, perturb: float, steps: int = 1000, seed: int = 0,
                                dpi: int = 90) -> bytes:
    """PNG bytes: the RMS of a network's weights under soft shrink+perturb alone (no learning) over ``steps``
    optimizer steps, measured and predicted
    (:func:`~plasticity_lab.figures.soft_shrink_perturb.soft_shrink_perturb_trajectory`)."""
    from .soft_shrink_perturb import soft_shrink_perturb_trajectory

    trajectory = soft_shrink_perturb_trajectory(shrink, perturb, steps=steps, seed=seed, every=max(1, steps // 50))
    fig = Figure(figsize=(6.5, 3.2), dpi=dpi)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(trajectory["step"], trajectory["rms"], lw=2.5, color="#3182bd", label="measured")
    ax.plot(trajectory["step"], trajectory["predicted"], lw=1.2, ls="--", color="black", label="predicted")
    ax.set_xlabel("optimizer steps (51 per epoch)")
    ax.set_ylabel("weight RMS")
    ax.set_ylim(0, 1.15 * float(max(trajectory["rms"].max(), trajectory["predicted"].max())))
    ax.set_title(f"no learning: shrink α = {shrink:.7g}, perturb β = {perturb:.2g}", fontsize=10)
    ax.legend(fontsize=8)
    return _png(fig)


def _training_picture(runs: dict, dpi: int = 90) -> bytes:
    fig = Figure(figsize=(11, 3.2), dpi=dpi)
    for i, (column, label) in enumerate((("train_return", "train return (5-epoch mean)"),
                                         ("weight_magnitude", "weight magnitude (RMS)"),
                                         ("dead_units", "dead units"))):
        ax = fig.add_subplot(1, 3, i + 1)
        for name, (df, color) in runs.items():
            values = df[column].rolling(5, min_periods=1).mean() if column == "train_return" else df[column]
            ax.plot(df["epoch"], values, color=color, lw=1.8, label=name)
        for boundary in df.loc[df["epoch_in_round"] == 0, "epoch"].iloc[1:]:
            ax.axvline(boundary, color="#999999", ls=":", lw=1)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        if i == 0:
            ax.legend(fontsize=8)
    return _png(fig)


def soft_shrink_perturb_explorer(perturb: float = 1e-6, one_minus_shrink: float = 1e-6, steps: int = 1000,
                                 rounds: int = 3, epochs_per_round: int = 20, seed: int = 0) -> widgets.VBox:
    """Sliders for soft shrink+perturb's two coefficients — ``perturb`` β and ``1 − shrink`` (α = 1 − value), both
    on a log scale. Moving them redraws what the rule alone does to the weights
    (:func:`soft_shrink_perturb_picture`); the button trains a short live run (``rounds`` × ``epochs_per_round``
    epochs, permute, one seed) with those coefficients next to warm-start and draws its train return, weight
    magnitude and dead units. Returns the widget (display it)."""
    from ..config import RunConfig
    from ..experiment import run

    perturb_box = widgets.FloatLogSlider(value=perturb, base=10, min=-8, max=-1, step=0.25,
                                         description="perturb β", readout_format=".1e", continuous_update=False)
    shrink_box = widgets.FloatLogSlider(value=one_minus_shrink, base=10, min=-8, max=-1, step=0.25,
                                        description="1 − shrink", readout_format=".1e", continuous_update=False)
    text = widgets.HTML()
    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
    button = widgets.Button(description="train with these", icon="play",
                            tooltip=f"{rounds} rounds × {epochs_per_round} epochs, permute, seed {seed}")
    # hidden until the first run: an empty image would show as a broken picture
    trained = widgets.Image(format="png", layout=widgets.Layout(max_width="100%", display="none"))
    baseline: dict = {}
    scale = dict(shift="permute", seed=seed, preset="smoke", rounds=rounds, epochs_per_round=epochs_per_round,
                 test_interval=epochs_per_round)

    def redraw(_=None):
        alpha, beta = 1.0 - shrink_box.value, perturb_box.value
        text.value = (f"θ ← <b>{alpha:.8g}</b>·θ + <b>{beta:.2g}</b>·θ<sub>fresh</sub> after every optimizer step; "
                      f"with no gradients the weights settle at {beta / max(1 - alpha**2, 1e-300) ** 0.5:.2g} × a "
                      f"fresh network's RMS.")
        image.value = soft_shrink_perturb_picture(alpha, beta, steps=steps, seed=seed)

    def train(_=None):
        button.disabled, button.description = True, "training…"
        try:
            if "warm_start" not in baseline:
                baseline["warm_start"] = run(RunConfig(condition="warm_start", **scale))
            params = {"perturb": perturb_box.value, "shrink": 1.0 - shrink_box.value}
            df = run(RunConfig(condition="soft_shrink_perturb", condition_params=params, **scale))
            trained.layout.display = None
            trained.value = _training_picture({"warm_start": (baseline["warm_start"], "#e6550d"),
                                               f"soft S+P (β={params['perturb']:.1e})": (df, "#31a354")})
        finally:
            button.disabled, button.description = False, "train with these"

    perturb_box.observe(redraw, names="value")
    shrink_box.observe(redraw, names="value")
    button.on_click(train)
    redraw()
    return widgets.VBox([widgets.HBox([perturb_box, shrink_box]), text, image, button, trained])


def regression_tables(runs, split: str = "train", shift: str = "all", diagnostics=None) -> str:
    """HTML: per-diagnostic correlations and the Gaussian GLM (:mod:`plasticity_lab.stats`) of normalised
    ``split`` reward over the shift × condition means of ``runs`` (a run summary), for one shift or ``"all"``."""
    from .. import stats

    diagnostics = list(diagnostics or DIAGNOSTICS)
    part = runs if shift == "all" else runs[runs["shift"] == shift]
    conditions = sorted(part["condition"].unique())
    at = runs.attrs.get("at", "mean")
    html = [f"<b>{split}, {'all shifts' if shift == 'all' else shift}</b>: "
            f"{len(part[['shift', 'condition']].drop_duplicates())} shift × condition points"]
    try:
        table = stats.diagnostic_correlations(part, at=at, conditions=conditions, diagnostics=diagnostics,
                                              split=split)
        html.append(table[["diagnostic", "slope", "r2", "p", "n_points", "significant"]]
                    .to_html(index=False, float_format=lambda v: f"{v:.3g}"))
    except ValueError as error:
        html.append(f"<p>correlations: {error}</p>")
    try:
        glm = stats.diagnostics_glm(part, split=split, at=at, conditions=conditions, diagnostics=diagnostics)
        html.append("<b>GLM</b> (normalised reward ~ 1 + " + " + ".join(diagnostics) + ")")
        html.append(glm.to_html(float_format=lambda v: f"{v:.3g}"))
    except ValueError as error:
        html.append(f"<p>GLM: {error}</p>")
    return "".join(html)


def regression_explorer(runs) -> widgets.VBox:
    """Dropdowns for the split and the shift and a multi-select of diagnostics over :func:`regression_tables`
    (correlations and GLM, recomputed in the kernel). Returns the widget (display it)."""
    split_box = widgets.Dropdown(options=["train", "test"], value="train", description="split")
    shift_box = widgets.Dropdown(options=["all", *sorted(runs["shift"].unique())], value="all", description="shift")
    diagnostics_box = widgets.SelectMultiple(options=list(DIAGNOSTICS), value=list(DIAGNOSTICS),
                                             description="diagnostics", rows=5)
    output = widgets.HTML()

    def redraw(_=None):
        chosen = list(diagnostics_box.value) or list(DIAGNOSTICS)
        output.value = regression_tables(runs, split_box.value, shift_box.value, chosen)

    for box in (split_box, shift_box, diagnostics_box):
        box.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([split_box, shift_box, diagnostics_box]), output])
