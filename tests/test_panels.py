"""The seaborn panels draw the numbers of the analysis: checked against values computed here by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

pytest.importorskip("seaborn")  # the book extra

from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from plasticity_lab.figures import panels, style  # noqa: E402
from plasticity_lab.stats import DIAGNOSTICS  # noqa: E402

SHIFTS = ("permute", "window", "expand")
CONDITIONS = ("warm_start", "reset_all", "l2")


def _runs(seeds: int = 3) -> pd.DataFrame:
    """A run summary in which weight magnitude predicts the train reward almost exactly and entropy not at all."""
    rng = np.random.default_rng(0)
    rows = []
    for i, shift in enumerate(SHIFTS):
        for j, condition in enumerate(CONDITIONS):
            for seed in range(seeds):
                magnitude = 0.05 + 0.01 * (3 * i + j) + 0.001 * seed
                rows.append({
                    "env": "gridworld", "shift": shift, "condition": condition, "seed": seed,
                    "normalised_train_return": 2.0 * magnitude + 0.0005 * rng.standard_normal(),
                    "normalised_test_return": rng.standard_normal(),
                    "entropy": rng.uniform(0.8, 1.2), "weight_magnitude": magnitude,
                    "weight_difference": rng.uniform(1e-4, 2e-3), "grad_norm": rng.uniform(1, 3),
                    "dead_units": rng.uniform(0.4, 0.9),
                })
    return pd.DataFrame(rows)


def _pearson(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    r = np.corrcoef(x, y)[0, 1]
    n = len(x)
    t = r * np.sqrt((n - 2) / (1 - r * r))
    return r * r, 2 * stats.t.sf(abs(t), n - 2)


def test_regression_panels_show_each_diagnostics_points_and_fit():
    runs = _runs()
    fig = panels.regression_panels(runs, split="train")
    assert len(fig.axes) == 6  # two rows of three: five diagnostics, and the legend in the free cell
    axes, spare = fig.axes[:5], fig.axes[5]
    assert not spare.axison and [t.get_text() for t in spare.get_legend().get_texts()] == list(SHIFTS)
    means = runs.groupby(["shift", "condition"])[["normalised_train_return", *DIAGNOSTICS]].mean()
    y = means["normalised_train_return"].to_numpy()
    for ax, diagnostic in zip(axes, DIAGNOSTICS):
        x = means[diagnostic].to_numpy()
        r2, p = _pearson(x, y)
        assert ax.get_title() == f"R² = {r2:.2f}, p = {p:.2g}"
        assert (ax.title.get_fontweight() == "bold") == (p < 0.05)
        # the points are the 9 shift × condition means over seeds, coloured by shift
        drawn = np.concatenate([c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)])
        assert len(drawn) == len(means)
        expected = sorted(zip(np.round(x, 12), np.round(y, 12)))
        assert sorted(map(tuple, np.round(drawn, 12))) == expected
    assert axes[1].title.get_fontweight() == "bold"  # weight magnitude: the planted relation
    # colours: each point has its shift's colour
    points = [c for c in axes[1].collections if isinstance(c, PathCollection)][0]
    by_x = dict(zip(np.round(points.get_offsets()[:, 0], 12), map(to_hex, points.get_facecolors())))
    for (shift, _), row in means.iterrows():
        assert by_x[round(row["weight_magnitude"], 12)] == style.SHIFT_COLORS[shift]


def test_correlation_heatmap_annotates_the_lower_triangle_with_pearson_r():
    points = _runs().groupby(["shift", "condition"])[[*DIAGNOSTICS, "normalised_train_return"]].mean()
    fig = panels.correlation_heatmap(points, columns=[*DIAGNOSTICS, "normalised_train_return"])
    heat = fig.axes[0]
    columns = [*DIAGNOSTICS, "normalised_train_return"]
    matrix = np.corrcoef(points[columns].to_numpy().T)
    expected = [f"{matrix[i, j]:.2f}" for i in range(len(columns)) for j in range(i + 1)]
    assert [t.get_text() for t in heat.texts] == expected


def test_interval_panel_marks_the_interquartile_mean_inside_its_interval():
    runs = _runs(seeds=4)
    fig = panels.interval_estimates_panel(runs, values=["normalised_test_return"], reps=500)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == list(CONDITIONS)  # the book's colour order: warm-start, reset-all, then the others
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == len(CONDITIONS)
    for row, condition in enumerate(CONDITIONS):
        values = runs.loc[runs["condition"] == condition, "normalised_test_return"].to_numpy()
        iqm = stats.trim_mean(values, 0.25)  # 12 runs: the mean of the middle 6
        assert iqm == pytest.approx(np.sort(values)[3:9].mean())
        tick = [line for line in ax.lines if to_hex(line.get_color()) == style.CONDITION_COLORS[condition]]
        assert len(tick) == 1 and tick[0].get_xdata()[0] == pytest.approx(iqm)
        assert tick[0].get_ydata().mean() == pytest.approx(row)
        bar = [b for b in bars if to_hex(b.get_facecolor()) == style.CONDITION_COLORS[condition]][0]
        assert bar.get_x() <= iqm <= bar.get_x() + bar.get_width()
        assert values.min() <= bar.get_x() and bar.get_x() + bar.get_width() <= values.max()


def test_panels_reject_bad_input_naming_the_bad_value():
    runs = _runs()
    with pytest.raises(ValueError, match=r"split='validation'.*'train', 'test'"):
        panels.regression_panels(runs, split="validation")
    with pytest.raises(ValueError, match=r"\['redo'\].*present"):
        panels.interval_estimates_panel(runs, conditions=["warm_start", "redo"])
    with pytest.raises(ValueError, match="needs column"):
        panels.correlation_heatmap(runs, columns=["entropy", "no_such_column"])
    two_envs = pd.concat([runs, runs.assign(env="coinrun")])
    with pytest.raises(ValueError, match="one env at a time"):
        panels.regression_panels(two_envs)


def test_a_panel_displays_itself_as_a_png_in_a_notebook():
    formatters = pytest.importorskip("IPython.core.formatters")
    fig = panels.correlation_heatmap(_runs(), columns=["entropy", "dead_units"])
    png = formatters.PNGFormatter()(fig)  # what IPython's display() puts in the notebook
    assert isinstance(fig, panels.PanelFigure) and png[:8] == b"\x89PNG\r\n\x1a\n"
