"""Static statistical panels drawn with seaborn: the paper's regressions of normalised reward on each diagnostic,
the correlations between the diagnostics, and interval estimates of the reward each condition keeps (chapter 12).

They complement the interactive plotly figures of :mod:`~plasticity_lab.figures.comparisons`, which show one thing
at a time behind a menu: a panel shows every diagnostic (or condition) side by side, as one image that reads the
same in a notebook, on the web page, on paper and offline. Each function returns a :class:`PanelFigure`, a
matplotlib ``Figure`` made without pyplot: a notebook shows it exactly once, as an image, where it is displayed
(whatever matplotlib backend is active), and a script can ``fig.savefig(...)`` it.

The numbers on a panel are those of :mod:`plasticity_lab.stats` for the same table: the regressions' points are
:func:`~plasticity_lab.stats.analysis_points` and their R² and p those of
:func:`~plasticity_lab.stats.diagnostic_correlations`; the intervals are :func:`~plasticity_lab.stats.aggregate_ci`'s
(rliable when it is installed).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .. import stats
from ..schema import DIAGNOSTICS
from .style import CONDITION_COLORS, SHIFT_COLORS, condition_colors

__all__ = ["PanelFigure", "correlation_heatmap", "interval_estimates_panel", "regression_panels"]


_STYLE = "whitegrid"


_SHORT_LABELS = {
    "entropy": "policy entropy",
    "weight_magnitude": "weight magnitude",
    "weight_difference": "weight change",
    "grad_norm": "gradient norm",
    "dead_units": "dead units",
    "normalised_train_return": "normalised train reward",
    "normalised_test_return": "normalised test reward",
}


class PanelFigure(Figure):
    """A matplotlib ``Figure`` that displays itself as a PNG image in a notebook (``display(fig)`` or the last
    line of a cell), with or without pyplot and its inline backend."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=120, bbox_inches="tight", facecolor="white")
        return buffer.getvalue()


def _short(column: str) -> str:
    return _SHORT_LABELS.get(column, column.replace("_", " "))


def _one_env(table: pd.DataFrame, what: str) -> None:
    if "env" in table.columns and table["env"].nunique() > 1:
        raise ValueError(f"{what} draws one env at a time; the table has {sorted(table['env'].unique())}: filter it")


def regression_panels(df: pd.DataFrame, split: str = "train", at: str = "final",
                      conditions: Sequence[str] | None = None,
                      diagnostics: Sequence[str] = DIAGNOSTICS, title: str | None = None,
                      n_boot: int = 1000, seed: int = 0, columns: int = 3) -> Figure:
    """One panel per diagnostic: normalised reward against it over the shift × condition points (means over seeds,
    coloured by shift), with the least-squares line and its 95 % bootstrap band (``seaborn.regplot``, ``n_boot``
    resamples of the points drawn from ``seed``). Each panel's title gives R² and Pearson p of
    :func:`~plasticity_lab.stats.diagnostic_correlations`, in bold where p < 0.05 (the paper's bold). The
    panels fill rows of ``columns``; a free cell in the last row holds the legend.

    ``df`` is a per-epoch table or a run summary; ``split``, ``at`` and ``conditions`` as in
    :func:`~plasticity_lab.stats.diagnostic_correlations`.
    """
    _one_env(df, "regression_panels")
    if not diagnostics:
        raise ValueError("regression_panels needs at least one diagnostic")
    # a per-epoch table is summarised once, for the points and the fits alike
    summary = stats.as_run_summary(df, at, None, None, stats.DEFAULT_BY, "regression_panels")
    points = stats.analysis_points(summary, split=split, at=at, conditions=conditions, diagnostics=diagnostics)
    fits = stats.diagnostic_correlations(summary, at=at, conditions=conditions, diagnostics=diagnostics,
                                         split=split).set_index("diagnostic")
    y = f"normalised_{split}_return"
    present = list(pd.unique(points["shift"])) if "shift" in points.columns else []
    shifts = [s for s in SHIFT_COLORS if s in present] + [s for s in present if s not in SHIFT_COLORS]
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns must be a positive integer; got {columns!r}")
    columns = min(columns, len(diagnostics))
    rows = -(-len(diagnostics) // columns)
    fig = PanelFigure(figsize=(2.6 * columns + 0.4, 2.5 * rows + 0.6), layout="constrained")
    with sns.axes_style(_STYLE):
        grid = fig.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    axes, spare = grid[:len(diagnostics)], grid[len(diagnostics):]
    for i, (ax, diagnostic) in enumerate(zip(axes, diagnostics)):
        data = points[[diagnostic, y, *(["shift"] if shifts else [])]].dropna()
        fit = fits.loc[diagnostic]
        if np.isfinite(fit["p"]):
            sns.regplot(data=data, x=diagnostic, y=y, ax=ax, scatter=False, ci=95, n_boot=n_boot, seed=seed,
                        color="black", line_kws={"linewidth": 1.2})
            ax.set_title(f"R² = {fit['r2']:.2f}, p = {fit['p']:.2g}", fontsize=10,
                         fontweight="bold" if fit["significant"] else "normal")
        else:
            ax.set_title("no fit: too few points", fontsize=10)
        sns.scatterplot(data=data, x=diagnostic, y=y, ax=ax, s=36, edgecolor="white", linewidth=0.5,
                        hue="shift" if shifts else None, hue_order=shifts or None,
                        palette={s: SHIFT_COLORS.get(s, "#333333") for s in shifts} if shifts else None,
                        legend=i == 0 and bool(shifts))
        ax.set_xlabel(_short(diagnostic))
        ax.set_ylabel(_short(y) if i % columns == 0 else "")
        ax.axhline(0, color="#999999", linewidth=0.8, linestyle=":", zorder=0)
    for ax in spare:
        ax.axis("off")
    if shifts:
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].get_legend().remove()
        where = spare[0] if len(spare) else axes[0]
        where.legend(handles, labels, title="shift", fontsize=8, title_fontsize=8,
                     loc="center" if len(spare) else "best")
    what = "last round" if at == "final" else "mean over rounds 2..R"
    heading = f"{_short(y)} ({what}) against each diagnostic,\none point per shift × condition ({len(points)})"
    fig.suptitle(heading if title is None else f"{title}\n{heading}", fontsize=10)
    return fig


def correlation_heatmap(points: pd.DataFrame, columns: Sequence[str] | None = None,
                        title: str | None = None) -> Figure:
    """Pearson correlations between ``columns`` of ``points`` (default: the five diagnostics and whichever
    normalised rewards it has) as an annotated lower-triangle heatmap (``seaborn.heatmap``): large values off
    the diagonal mean that a regression on several of them at once cannot tell them apart."""
    if columns is None:
        columns = [c for c in (*DIAGNOSTICS, "normalised_train_return", "normalised_test_return")
                   if c in points.columns]
    columns = list(columns)
    missing = [c for c in columns if c not in points.columns]
    if missing:
        raise ValueError(f"correlation_heatmap needs column(s) {missing}; the table has {list(points.columns)}")
    if len(columns) < 2:
        raise ValueError(f"correlation_heatmap needs at least two columns; got {columns}")
    corr = points[columns].astype(float).corr()
    corr.index = corr.columns = [_short(c) for c in columns]
    size = 0.75 * len(columns) + 2.2
    fig = PanelFigure(figsize=(size + 1.0, size), layout="constrained")
    with sns.axes_style("white"):
        ax = fig.subplots()
    sns.heatmap(corr, ax=ax, mask=np.triu(np.ones(corr.shape, dtype=bool), k=1), annot=True, fmt=".2f",
                vmin=-1, vmax=1, cmap="RdBu_r", square=True, linewidths=0.5,
                cbar_kws={"label": "Pearson r", "shrink": 0.8})
    heading = f"correlations over {len(points)} points"
    ax.set_title(heading if title is None else f"{title}\n{heading}", fontsize=10)
    return fig


def interval_estimates_panel(runs: pd.DataFrame,
                             values: Sequence[str] = ("normalised_train_return", "normalised_test_return"),
                             statistic: str = "iqm", conditions: Sequence[str] | None = None,
                             confidence: float = 0.95, reps: int = 2000, seed: int = 0,
                             title: str | None = None) -> Figure:
    """Per condition, an aggregate of each run's value over all of its runs (every shift and seed) with a
    percentile-bootstrap interval (:func:`~plasticity_lab.stats.aggregate_ci`, with rliable when it is
    installed): the interquartile mean by default, the estimator rliable recommends for a handful of runs. With
    several shifts the bootstrap is stratified — runs are resampled within each shift, as rliable does across
    tasks. One panel per column of ``values``; a bar spans the interval, a tick marks the estimate; the dotted
    line at 0 is "as good as round 1".

    ``runs`` is a run summary (a stored study's ``runs("mean")``); ``conditions`` picks and orders the rows
    (default: all, in the order of the book's colours).
    """
    _one_env(runs, "interval_estimates_panel")
    values = [values] if isinstance(values, str) else list(values)
    missing = [c for c in ("condition", *values) if c not in runs.columns]
    if missing:
        raise ValueError(f"interval_estimates_panel needs column(s) {missing}; the table has {list(runs.columns)}")
    present = list(pd.unique(runs["condition"]))
    if conditions is None:
        conditions = [c for c in CONDITION_COLORS if c in present] + [c for c in present if c not in CONDITION_COLORS]
    else:
        conditions = [conditions] if isinstance(conditions, str) else list(conditions)
        absent = [c for c in conditions if c not in present]
        if absent:
            raise ValueError(f"condition(s) {absent} are not in the table; present: {present}")
    colors = condition_colors(conditions)
    subset = runs[runs["condition"].isin(conditions)]
    # several shifts are several tasks: pool their runs, resample within each
    strata = "shift" if "shift" in subset.columns and subset["shift"].nunique() > 1 else None
    fig = PanelFigure(figsize=(4.2 * len(values) + 1.6, 0.42 * len(conditions) + 1.4), layout="constrained")
    with sns.axes_style(_STYLE):
        axes = fig.subplots(1, len(values), sharey=True, squeeze=False)[0]
    for ax, value in zip(axes, values):
        table = stats.aggregate_ci(subset, statistic=statistic, confidence=confidence, reps=reps, seed=seed,
                                   value=value, strata=strata)
        table = table.set_index("condition").reindex(conditions)
        rows = np.arange(len(conditions))
        for row, condition in zip(rows, conditions):
            low, high, estimate = table.loc[condition, ["ci_low", "ci_high", "estimate"]]
            color = colors[condition]
            if np.isfinite(low) and np.isfinite(high):
                ax.barh(row, high - low, left=low, height=0.6, color=color, alpha=0.55)
            ax.plot([estimate, estimate], [row - 0.3, row + 0.3], color=color, linewidth=2.5)
        ax.axvline(0, color="#666666", linewidth=0.9, linestyle=":")
        ax.set_yticks(rows, conditions)
        ax.set_xlabel(f"{statistic.upper() if statistic == 'iqm' else statistic} of {_short(value)}")
    axes[0].invert_yaxis()  # the first condition on top (once: the panels share the axis)
    n = subset.groupby("condition").size()
    runs_per = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
    stratified = f", resampled within each of {subset[strata].nunique()} shifts" if strata else ""
    heading = (f"{int(round(confidence * 100))} % bootstrap intervals over {runs_per} runs per condition"
               f"{stratified} ({table.attrs['backend']})")
    fig.suptitle(heading if title is None else f"{title}\n{heading}", fontsize=10)
    return fig
