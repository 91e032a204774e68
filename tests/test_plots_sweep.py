"""The static coefficient slider: one slider step per swept value, showing exactly that value's traces, whose points
are the per-round means over seeds of the stored study."""

import numpy as np
import pandas as pd
import pytest

from plasticity_lab.figures import comparisons
from plasticity_lab.sweep import Sweep, run_sweep

GRID = {"study": "grid", "preset": "smoke", "shifts": ["permute"], "conditions": ["soft_shrink_perturb"],
        "seeds": "0-1", "overrides": {"rounds": 2, "epochs_per_round": 3, "test_episodes": 11},
        "params": {"soft_shrink_perturb": {"perturb": [0.0, 1e-3], "shrink": [1.0, 0.999]}}}


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    return run_sweep(Sweep.from_dict(GRID), root=tmp_path_factory.mktemp("s"), threads=1, progress=False)


def test_condition_params_lists_the_grid(grid):
    params = grid.condition_params().set_index("condition")
    assert len(params) == 4
    assert params.loc["soft_shrink_perturb[perturb=0.001,shrink=0.999]", "perturb"] == 1e-3
    assert params.loc["soft_shrink_perturb[perturb=0,shrink=1]", "shrink"] == 1.0


def test_slider_steps_show_one_value_each_with_the_seed_means(grid):
    fig = comparisons.coefficient_sweep_figure(grid, title=grid.describe())
    panels = len(comparisons.SWEEP_PANELS)
    assert len(fig.data) == 2 * 2 * panels
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == ["0", "0.001"]
    second = steps[1].args[0]["visible"]
    assert second == [False] * (2 * panels) + [True] * (2 * panels)
    # the weight-magnitude trace of perturb=0.001, shrink=0.999 = mean over the two seeds per round
    trace = next(t for t in fig.data if "perturb=0.001, shrink=0.999" in t.hovertemplate
                 and "weight magnitude" in t.hovertemplate)
    rounds = grid.rounds[grid.rounds["condition"] == "soft_shrink_perturb[perturb=0.001,shrink=0.999]"]
    expected = [rounds.loc[rounds["round"] == r, "weight_magnitude"].mean() for r in (1, 2)]
    np.testing.assert_allclose(trace.y, expected)
    assert len(rounds["seed"].unique()) == 2


def test_unswept_coefficient_is_named_in_the_error(grid):
    with pytest.raises(ValueError, match="does not sweep 'coef'; its coefficients: perturb, shrink"):
        comparisons.coefficient_sweep_figure(grid, slider="coef")


def test_diagnostic_scatter_has_a_dropdown_and_the_least_squares_line(grid):
    from plasticity_lab import stats

    runs = grid.runs("final")
    points = runs.groupby(["shift", "condition"])[
        ["normalised_train_return", "normalised_test_return", *stats.DIAGNOSTICS]].mean().reset_index()
    fig = comparisons.diagnostic_scatter_figure(points, split="train")
    buttons = fig.layout.updatemenus[0].buttons
    assert len(buttons) == len(stats.DIAGNOSTICS) and len(fig.data) == 2 * len(stats.DIAGNOSTICS)
    i = list(stats.DIAGNOSTICS).index("weight_magnitude")
    assert buttons[i].args[0]["visible"] == [j in (2 * i, 2 * i + 1) for j in range(len(fig.data))]
    scatter, line = fig.data[2 * i], fig.data[2 * i + 1]
    np.testing.assert_allclose(sorted(scatter.x), sorted(points["weight_magnitude"]))
    x, y = points["weight_magnitude"].to_numpy(), points["normalised_train_return"].to_numpy()
    slope, intercept = np.polyfit(x, y, 1)
    np.testing.assert_allclose(line.y, intercept + slope * np.asarray(line.x), rtol=1e-6, atol=1e-9)
    r2 = np.corrcoef(x, y)[0, 1] ** 2
    assert f"R² = {r2:.2f}" in line.name


def test_regression_tables_report_the_fits_or_why_not(grid):
    from plasticity_lab.figures import widgets

    html = widgets.regression_tables(grid.runs("final"), split="test")
    assert "4 shift × condition points" in html
    assert "GLM: diagnostics_glm needs more than 6 complete points, got 4" in html
    assert "weight_magnitude" in html and "<table" in html


def test_ranking_comparison_figure_places_each_shared_condition_at_its_two_means():
    from plasticity_lab.figures.comparisons import ranking_comparison_figure

    first = pd.DataFrame({"condition": ["a", "b", "only_first"], "mean": [0.5, -0.2, 0.0], "rank": [1, 3, 2]})
    second = pd.DataFrame({"condition": ["b", "a"], "mean": [0.3, 0.1], "rank": [1, 2]})
    fig = ranking_comparison_figure(first, second, labels=("long", "short"))
    dots = {t.name: (t.x[0], t.y[0]) for t in fig.data if t.mode == "markers+text"}
    assert dots == {"a": (0.5, 0.1), "b": (-0.2, 0.3)}  # only the shared conditions, at (first, second)
    diagonal = [t for t in fig.data if t.mode == "lines"][0]
    assert list(diagonal.x) == list(diagonal.y) and diagonal.x[0] < -0.2 and diagonal.x[1] > 0.5
    assert fig.layout.xaxis.title.text.endswith("long") and fig.layout.yaxis.title.text.endswith("short")
    with pytest.raises(ValueError, match="the second lacks \\['rank'\\]"):
        ranking_comparison_figure(first, second.drop(columns="rank"))
    with pytest.raises(ValueError, match="share no condition"):
        ranking_comparison_figure(first, second.assign(condition=["x", "y"]))


def test_gap_by_scale_figure_draws_each_gap_with_its_interval_and_fills_the_significant_ones():
    from plasticity_lab.figures.comparisons import gap_by_scale_figure

    table = pd.DataFrame({"scale": [200, 300, 200, 300], "shift": "permute",
                          "split": ["train", "train", "test", "test"],
                          "gap": [-0.2, -0.1, -0.3, 0.05], "ci_low": [-0.3, -0.4, -0.35, -0.1],
                          "ci_high": [-0.1, 0.2, -0.25, 0.2], "p": [0.01, 0.6, 0.001, 0.7],
                          "effect_size": [1.5, 0.2, 2.0, -0.1]})
    fig = gap_by_scale_figure(table)
    train, test = fig.data
    assert list(train.x) == ["200", "300"] and list(train.y) == [-0.2, -0.1]
    assert list(train.error_y.array) == pytest.approx([0.1, 0.3]) and list(train.error_y.arrayminus) == pytest.approx(
        [0.1, 0.3])
    assert list(test.y) == [-0.3, 0.05]
    filled = [c != "white" for c in train.marker.color] + [c != "white" for c in test.marker.color]
    assert filled == [True, False, True, False]  # p < 0.05 only
    with pytest.raises(ValueError, match="missing column\\(s\\) \\['ci_low', 'ci_high'\\]"):
        gap_by_scale_figure(table.drop(columns=["ci_low", "ci_high"]))
