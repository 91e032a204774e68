"""The figures over rounds and conditions (plasticity_lab.figures: curves, comparisons, style): what they draw equals
what is computed by hand from a small synthetic per-epoch table — per-epoch means over seeds, bands, read-outs,
normalised reward, Cohen's d."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly")  # the book extra

import plasticity_lab as pl  # noqa: E402
from plasticity_lab.figures import comparisons, style  # noqa: E402
from plasticity_lab.figures import curves as curve_figures  # noqa: E402

CONDITIONS = ("warm_start", "reset_all")
SEEDS = (0, 1, 2)
ROUNDS = 3
EPOCHS = 4  # per round
TEST_EVERY = 2  # test_return is measured at epoch_in_round 1 and 3
METRICS = ("train_return", "entropy", "weight_magnitude", "weight_difference", "grad_norm", "dead_units")


def _table(seed: int = 0) -> pd.DataFrame:
    """A per-epoch table shaped like plasticity_lab.run's: 2 conditions × 3 seeds × 3 rounds × 4 epochs, random
    values (a different random draw per column), test_return only every second epoch."""
    rng = np.random.default_rng(seed)
    rows = []
    for condition in CONDITIONS:
        for s in SEEDS:
            for r in range(1, ROUNDS + 1):
                for e in range(EPOCHS):
                    row = {"env": "gridworld", "shift": "permute", "condition": condition, "seed": s,
                           "round": r, "epoch": (r - 1) * EPOCHS + e, "epoch_in_round": e}
                    row.update({m: float(rng.normal()) for m in METRICS})
                    row["test_return"] = float(rng.normal()) if (e + 1) % TEST_EVERY == 0 else np.nan
                    rows.append(row)
    return pd.DataFrame(rows)


def _traces(fig, **meta):
    return [t for t in fig.data if t.meta and all(t.meta.get(k) == v for k, v in meta.items())]


def _one(fig, **meta):
    found = _traces(fig, **meta)
    assert len(found) == 1, (meta, [t.meta for t in fig.data])
    return found[0]


def _value(df, condition, seed, round_, epoch_in_round, column):
    row = df[(df.condition == condition) & (df.seed == seed) & (df["round"] == round_)
             & (df.epoch_in_round == epoch_in_round)]
    assert len(row) == 1
    return float(row[column].iloc[0])


# ------------------------------------------------------------------------------------------------- smoothing
def test_smoothed_is_a_centred_mean_that_never_crosses_a_shift():
    df = _table()
    out = curve_figures.smoothed(df, "train_return", window=3)
    for condition in CONDITIONS:
        for s in SEEDS:
            for r in range(1, ROUNDS + 1):
                raw = [_value(df, condition, s, r, e, "train_return") for e in range(EPOCHS)]
                want = [np.mean(raw[max(0, e - 1):e + 2]) for e in range(EPOCHS)]  # the round's epochs only
                mask = (df.condition == condition) & (df.seed == s) & (df["round"] == r)
                got = out[mask].to_numpy()[np.argsort(df.loc[mask, "epoch_in_round"].to_numpy())]
                np.testing.assert_allclose(got, want, rtol=1e-12)


def test_smoothed_carries_a_sparse_test_return_forward_inside_a_round_only():
    df = _table()
    out = curve_figures.smoothed(df, "test_return", window=1)
    mask = (df.condition == "warm_start") & (df.seed == 1) & (df["round"] == 2)
    got = out[mask].to_numpy()
    t1 = _value(df, "warm_start", 1, 2, 1, "test_return")
    t3 = _value(df, "warm_start", 1, 2, 3, "test_return")
    assert np.isnan(got[0])  # before the round's first test: nothing from round 1 leaks in
    np.testing.assert_allclose(got[1:], [t1, t1, t3])


def test_smoothed_rejects_a_window_below_one():
    with pytest.raises(ValueError, match="window"):
        curve_figures.smoothed(_table(), "train_return", window=0)


# ------------------------------------------------------------------------------------------ rounds curves
def test_rounds_curve_lines_are_the_mean_over_seeds_and_bands_one_std():
    df = _table()
    fig = curve_figures.rounds_curve_figure(df, metrics=("train_return",), smooth=1, band="std")
    for condition in CONDITIONS:
        mean = _one(fig, condition=condition, metric="train_return", role="mean")
        hi = _one(fig, condition=condition, metric="train_return", role="band_hi")
        lo = _one(fig, condition=condition, metric="train_return", role="band_lo")
        assert len(mean.x) == ROUNDS * EPOCHS
        for i, epoch in enumerate(mean.x):
            values = [float(df[(df.condition == condition) & (df.seed == s) & (df.epoch == epoch)].train_return.iloc[0])
                      for s in SEEDS]
            m, sd = np.mean(values), np.std(values, ddof=1)
            assert mean.y[i] == pytest.approx(m, rel=1e-5, abs=1e-6)
            assert hi.y[i] == pytest.approx(m + sd, rel=1e-5, abs=1e-6)
            assert lo.y[i] == pytest.approx(m - sd, rel=1e-5, abs=1e-6)
        # the band is filled from its lower bound up to the trace drawn just before it: its upper bound
        i = list(fig.data).index(lo)
        assert lo.fill == "tonexty" and fig.data[i - 1] is hi


def test_rounds_curve_minmax_band_and_no_band():
    df = _table()
    fig = curve_figures.rounds_curve_figure(df, metrics="entropy", smooth=1, band="minmax", conditions=["reset_all"])
    hi = _one(fig, condition="reset_all", metric="entropy", role="band_hi")
    first = df[(df.condition == "reset_all") & (df.epoch == 0)].entropy
    assert hi.y[0] == pytest.approx(first.max(), rel=1e-6)
    assert not _traces(fig, condition="warm_start")
    bare = curve_figures.rounds_curve_figure(df, metrics="entropy", band="none")
    assert {t.meta["role"] for t in bare.data} == {"mean"}
    with pytest.raises(ValueError, match="band"):
        curve_figures.rounds_curve_figure(df, band="iqr")


def test_rounds_curve_marks_each_shift_once_per_panel():
    fig = curve_figures.rounds_curve_figure(_table(), metrics=("train_return", "test_return"))
    xs = sorted(s.x0 for s in fig.layout.shapes)
    assert xs == sorted([EPOCHS - 0.5, 2 * EPOCHS - 0.5] * 2)


def test_figures_refuse_tables_of_several_shifts_or_unknown_conditions():
    df = _table()
    mixed = pd.concat([df, df.assign(shift="window")])
    with pytest.raises(ValueError, match="shift"):
        curve_figures.rounds_curve_figure(mixed)
    with pytest.raises(ValueError, match="redo"):
        curve_figures.diagnostics_figure(df, conditions=["redo"])


def test_default_condition_order_puts_warm_start_first():
    df = _table()
    fig = curve_figures.rounds_curve_figure(df[::-1].reset_index(drop=True), metrics="entropy", band="none")
    assert [t.meta["condition"] for t in fig.data] == ["warm_start", "reset_all"]


# ------------------------------------------------------------------------------------------- read-out / normalised
def test_normalised_reward_figure_with_a_one_epoch_readout_is_last_epoch_minus_round_one():
    df = _table()
    fig = curve_figures.normalised_reward_figure(df, window=1, offset=1)  # read the raw value at epoch_in_round 3
    last = EPOCHS - 1
    for condition in CONDITIONS:
        for split in ("train", "test"):
            column = f"normalised_{split}_return"
            seeds = _one(fig, condition=condition, metric=column, role="seed")
            assert len(seeds.y) == len(SEEDS) * ROUNDS
            mean = _one(fig, condition=condition, metric=column, role="mean")
            for i, r in enumerate(range(1, ROUNDS + 1)):
                per_seed = [_value(df, condition, s, r, last, f"{split}_return")
                            - _value(df, condition, s, 1, last, f"{split}_return") for s in SEEDS]
                assert mean.y[i] == pytest.approx(np.mean(per_seed), abs=1e-6)
            assert mean.y[0] == 0


def test_normalised_reward_figure_ignores_stale_stored_columns():
    df = _table()
    stale = df.assign(normalised_train_return=99.0, normalised_test_return=99.0)
    a = curve_figures.normalised_reward_figure(df, window=1, offset=1)
    b = curve_figures.normalised_reward_figure(stale, window=1, offset=1)
    assert [list(t.y) for t in a.data] == [list(t.y) for t in b.data]


def test_readout_figure_places_one_diamond_per_round_at_the_read_epoch():
    df = _table()
    fig = curve_figures.readout_figure(df, condition="reset_all", seed=2, window=1, offset=2)
    reads = _traces(fig, role="readout")[0]
    read = EPOCHS - 2
    assert list(reads.x) == [(r - 1) * EPOCHS + read for r in range(1, ROUNDS + 1)]
    want = [_value(df, "reset_all", 2, r, read, "train_return") for r in range(1, ROUNDS + 1)]
    np.testing.assert_allclose(reads.y, want, rtol=1e-6)
    np.testing.assert_allclose(reads.customdata[:, 1], np.array(want) - want[0], rtol=1e-6, atol=1e-7)
    smooth = _traces(fig, role="smoothed")[0]
    at_reads = [float(smooth.y[list(smooth.x).index(x)]) for x in reads.x]  # the curve passes through them
    np.testing.assert_allclose(at_reads, reads.y, rtol=1e-6)
    with pytest.raises(ValueError, match="seed=7"):
        curve_figures.readout_figure(df, condition="reset_all", seed=7)


# --------------------------------------------------------------------------------------------- diagnostics
def test_diagnostics_dropdown_shows_exactly_the_chosen_metric():
    df = _table()
    metrics = ["entropy", "dead_units", "grad_norm"]
    fig = curve_figures.diagnostics_figure(df, metrics=metrics, smooth=1)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [style.METRIC_LABELS[m] for m in metrics]
    assert [bool(t.visible) for t in fig.data] == [t.meta["metric"] == "entropy" for t in fig.data]
    for metric, button in zip(metrics, buttons):
        visible = button.args[0]["visible"]
        assert len(visible) == len(fig.data)
        assert visible == [t.meta["metric"] == metric for t in fig.data]
        assert button.args[1]["yaxis.title.text"] == style.METRIC_LABELS[metric]
    mean = _one(fig, condition="warm_start", metric="dead_units", role="mean")
    want = df[df.condition == "warm_start"].groupby("epoch").dead_units.mean()
    np.testing.assert_allclose(mean.y, want.loc[list(mean.x)].to_numpy(), rtol=1e-5)


def test_diagnostics_figure_defaults_to_the_five_diagnostics():
    fig = curve_figures.diagnostics_figure(_table())
    assert len(fig.layout.updatemenus[0].buttons) == 5


def test_after_shift_figure_averages_rounds_two_on_then_seeds():
    df = _table()
    first = 3
    fig = curve_figures.after_shift_figure(df, metrics=("entropy",), first=first, band="none")
    for condition in CONDITIONS:
        later = _traces(fig, condition=condition, metric="entropy", role="mean")
        solid = next(t for t in later if t.line.dash == "solid")
        dashed = next(t for t in later if t.line.dash == "dash")
        assert list(solid.x) == list(range(first))
        for e in range(first):
            per_seed = [np.mean([_value(df, condition, s, r, e, "entropy") for r in range(2, ROUNDS + 1)])
                        for s in SEEDS]
            assert solid.y[e] == pytest.approx(np.mean(per_seed), rel=1e-5)
            assert dashed.y[e] == pytest.approx(np.mean([_value(df, condition, s, 1, e, "entropy")
                                                         for s in SEEDS]), rel=1e-5)
    with pytest.raises(ValueError, match="first"):
        curve_figures.after_shift_figure(df, first=0)


# ---------------------------------------------------------------------------------------------- separation
def test_round_separation_is_cohens_d_with_the_pooled_standard_deviation():
    df = _table()
    table = comparisons.round_separation(df, ["grad_norm", "normalised_train_return"], window=1, offset=1)
    assert list(table.index) == list(range(1, ROUNDS + 1))
    for r in range(1, ROUNDS + 1):
        a = [np.mean([_value(df, "warm_start", s, r, e, "grad_norm") for e in range(EPOCHS)]) for s in SEEDS]
        b = [np.mean([_value(df, "reset_all", s, r, e, "grad_norm") for e in range(EPOCHS)]) for s in SEEDS]
        pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)  # equal group sizes
        assert table.loc[r, "grad_norm"] == pytest.approx((np.mean(a) - np.mean(b)) / pooled, rel=1e-9)
    assert np.isnan(table.loc[1, "normalised_train_return"])  # 0 for every run: no spread
    last = EPOCHS - 1

    def normalised(condition, s, r):
        return _value(df, condition, s, r, last, "train_return") - _value(df, condition, s, 1, last, "train_return")

    a = [normalised("warm_start", s, 2) for s in SEEDS]
    b = [normalised("reset_all", s, 2) for s in SEEDS]
    pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    assert table.loc[2, "normalised_train_return"] == pytest.approx((np.mean(a) - np.mean(b)) / pooled, rel=1e-9)


def test_round_separation_needs_two_seeds_a_side():
    df = _table()
    one_seed = df[(df.condition == "reset_all") | (df.seed == 0)]
    assert one_seed[one_seed.condition == "warm_start"].seed.nunique() == 1
    assert comparisons.round_separation(one_seed, ["entropy"])["entropy"].isna().all()


def test_separation_figure_splits_diagnostics_from_rewards():
    fig = comparisons.separation_figure(_table(), window=1, offset=1)
    metrics = [t.meta["metric"] for t in fig.data]
    assert metrics == [*pl.DIAGNOSTICS, "normalised_train_return", "normalised_test_return"]
    assert {t.yaxis for t in fig.data[:5]} == {"y"} and {t.yaxis for t in fig.data[5:]} == {"y2"}


# ------------------------------------------------------------------------------ a stored study's rounds table
def _rounds(seed: int = 0) -> pd.DataFrame:
    """A rounds table shaped like a stored study's: 3 shifts (in a scrambled order) × 2 conditions × 3 seeds × 3
    rounds, random values."""
    rng = np.random.default_rng(seed)
    rows = []
    for shift in ("expand", "permute", "window"):
        for condition in CONDITIONS:
            for s in SEEDS:
                for r in range(1, ROUNDS + 1):
                    row = {"env": "gridworld", "shift": shift, "condition": condition, "seed": s, "round": r}
                    row.update({m: float(rng.normal()) for m in (*pl.DIAGNOSTICS, "normalised_train_return",
                                                                 "normalised_test_return")})
                    rows.append(row)
    return pd.DataFrame(rows)


def _cell(rounds, shift, condition, r, column):
    part = rounds[(rounds["shift"] == shift) & (rounds.condition == condition) & (rounds["round"] == r)]
    return part.sort_values("seed")[column].to_numpy()


def test_shift_separation_is_cohens_d_per_shift_and_round_in_the_shifts_order():
    rounds = _rounds()
    table = comparisons.shift_separation(rounds, ["dead_units", "normalised_test_return"])
    assert list(table.index.get_level_values("shift").unique()) == ["permute", "window", "expand"]
    assert list(table.columns) == ["dead_units", "normalised_test_return"]
    for shift in ("permute", "window", "expand"):
        for r in range(1, ROUNDS + 1):
            for m in table.columns:
                a, b = _cell(rounds, shift, "warm_start", r, m), _cell(rounds, shift, "reset_all", r, m)
                pooled = np.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)  # equal group sizes
                assert table.loc[(shift, r), m] == pytest.approx((a.mean() - b.mean()) / pooled, rel=1e-9)
    # reversing the comparison flips every sign
    flipped = comparisons.shift_separation(rounds, ["dead_units"], condition="reset_all", baseline="warm_start")
    np.testing.assert_allclose(flipped["dead_units"], -table["dead_units"], rtol=1e-12)


def test_shift_separation_refuses_a_table_without_rounds_or_an_absent_condition():
    with pytest.raises(ValueError, match="round"):
        comparisons.shift_separation(_rounds().drop(columns="round"))
    with pytest.raises(ValueError, match="crelu"):
        comparisons.shift_separation(_rounds(), condition="crelu")


def test_round_means_figure_has_one_panel_per_shift_and_a_menu_over_metrics():
    rounds = _rounds()
    metrics = ["weight_magnitude", "normalised_train_return"]
    fig = comparisons.round_means_figure(rounds, metrics=metrics, band="std")
    assert [a.text for a in fig.layout.annotations] == ["permute", "window", "expand"]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == [style.METRIC_LABELS[m] for m in metrics]
    assert [bool(t.visible) for t in fig.data] == [t.meta["metric"] == metrics[0] for t in fig.data]
    for metric, button in zip(metrics, buttons):
        assert button.args[0]["visible"] == [t.meta["metric"] == metric for t in fig.data]
    # the window column is the second panel: its traces sit on x2
    means = [t for t in _traces(fig, condition="reset_all", metric="normalised_train_return", role="mean")
             if t.xaxis == "x2"]
    assert len(means) == 1
    upper = [t for t in _traces(fig, condition="reset_all", metric="normalised_train_return", role="band_hi")
             if t.xaxis == "x2"][0]
    for i, r in enumerate(range(1, ROUNDS + 1)):
        values = _cell(rounds, "window", "reset_all", r, "normalised_train_return")
        assert means[0].y[i] == pytest.approx(values.mean(), rel=1e-5)
        assert upper.y[i] == pytest.approx(values.mean() + values.std(ddof=1), rel=1e-5)
    with pytest.raises(ValueError, match="band"):
        comparisons.round_means_figure(rounds, band="iqr")


def test_study_curves_figure_has_a_menu_over_shifts_and_draws_the_stored_points():
    permute, window = _table(seed=1), _table(seed=2)
    curves = pd.concat([window.assign(shift="window"), permute], ignore_index=True).assign(epochs_averaged=2)
    curves = curves[~((curves["shift"] == "window") & (curves.condition == "reset_all"))]  # absent from one shift
    fig = curve_figures.study_curves_figure(curves, metrics=("train_return",), title="a study")
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["permute", "window"]  # the shifts' own order, not the table's
    for shift, button in zip(("permute", "window"), buttons):
        assert button.args[0]["visible"] == [t.meta["shift"] == shift for t in fig.data]
    assert [bool(t.visible) for t in fig.data] == [t.meta["shift"] == "permute" for t in fig.data]
    assert {t.meta["condition"] for t in fig.data if t.meta["shift"] == "window"} == {"warm_start"}
    assert "a study" in fig.layout.title.text and "a block of 2 epoch(s)" in fig.layout.title.text
    mean = _one(fig, shift="window", condition="warm_start", metric="train_return", role="mean")
    for x, y in zip(mean.x, mean.y):  # drawn as stored: the mean over seeds, no smoothing
        want = np.mean([float(window[(window.condition == "warm_start") & (window.seed == s)
                                     & (window.epoch == int(x))].train_return.iloc[0]) for s in SEEDS])
        assert y == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="shift"):
        curve_figures.study_curves_figure(permute.drop(columns="shift"))


# --------------------------------------------------------------------------------------------------- caption
def _manifest(condition: str, seeds, preset="book", epochs=300):
    return {"configs": [pl.RunConfig(condition=condition, seed=s, preset=preset, epochs_per_round=epochs)
                        .resolved().to_dict() for s in seeds]}


def test_study_caption_reads_everything_from_the_manifests():
    epochs = pl.PRESETS["book"]["epochs_per_round"]
    text = style.study_caption({"warm_start": _manifest("warm_start", range(5), epochs=epochs),
                                "reset_all": _manifest("reset_all", range(5), epochs=epochs)}, study="my-study")
    assert text == ("study: my-study — gridworld, permute; warm_start, reset_all; preset book "
                    f"(10 rounds × {epochs} epochs, pool 10), 5 seeds (0–4)")


def test_study_caption_says_when_the_runs_do_not_have_their_presets_scale(monkeypatch):
    from plasticity_lab import config

    manifest = _manifest("warm_start", range(5), epochs=config.PRESETS["book"]["epochs_per_round"])
    assert "; preset book (10 rounds × " in style.study_caption(manifest)
    # the same stored runs after the preset moved
    monkeypatch.setitem(config.PRESETS["book"], "epochs_per_round", 123)
    assert "; preset book with its scale overridden (10 rounds × " in style.study_caption(manifest)
    # one field overridden is enough
    assert "preset smoke with its scale overridden (2 rounds × 6 epochs" in style.study_caption(
        [pl.RunConfig(preset="smoke", rounds=2)])


def test_study_caption_lists_settings_that_differ_and_takes_run_configs():
    text = style.study_caption([_manifest("warm_start", [0], epochs=300), _manifest("warm_start", [3], epochs=500)])
    assert "10 rounds × 300/500 epochs" in text and "2 seeds (0, 3)" in text and not text.startswith("study")
    configs = [pl.RunConfig(preset="smoke", seed=s, rounds=2, epochs_per_round=7) for s in (0, 1)]
    assert style.study_caption(configs).endswith(
        "preset smoke with its scale overridden (2 rounds × 7 epochs, pool 10), 2 seeds (0, 1)")
    with pytest.raises(ValueError, match="no runs"):
        style.study_caption([])
    with pytest.raises(ValueError, match="configs"):
        style.study_caption([{"seeds": [0]}])


# ------------------------------------------------------------------------------------------- colours
def test_every_condition_has_its_own_colour_in_every_figure():
    from plasticity_lab.conditions import CONDITIONS

    # each single condition, and the paper's best combination, has a fixed colour of its own
    named = [*CONDITIONS, "soft_shrink_perturb+layernorm"]
    assert set(named) <= set(style.CONDITION_COLORS)
    assert len(set(style.CONDITION_COLORS.values())) == len(style.CONDITION_COLORS)
    # the same colour whatever else a figure shows
    alone = style.condition_colors(["redo"])
    beside = style.condition_colors(["warm_start", "layernorm", "redo"])
    assert alone["redo"] == beside["redo"] == style.CONDITION_COLORS["redo"]
    # a name without a fixed colour never takes the colour of a condition shown beside it
    for known in named:
        colors = style.condition_colors([known, "perturb=1e-05", "perturb=0.0001"])
        assert len(set(colors.values())) == 3, (known, colors)
