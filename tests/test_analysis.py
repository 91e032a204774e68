"""Tests for plasticity_lab.stats — expectations computed by hand or with plain numpy, never captured."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from plasticity_lab import stats as A

DIAGS = A.DIAGNOSTICS


def make_run(env="gridworld", shift="permute", condition="warm_start", seed=0, rounds=3, E=10,
             train=None, test=None, test_interval=None, diag=None):
    """Per-epoch table for one run. ``train``/``test``/``diag[name]`` are functions (round, epoch_in_round)."""
    rows = []
    for r in range(1, rounds + 1):
        for e in range(E):
            row = {
                "env": env, "shift": shift, "condition": condition, "seed": seed,
                "round": r, "epoch": (r - 1) * E + e, "epoch_in_round": e,
                "train_return": train(r, e) if train else 0.0,
                "test_return": np.nan,
            }
            if test is not None and (test_interval is None or e % test_interval == 0):
                row["test_return"] = test(r, e)
            for d in DIAGS:
                row[d] = diag[d](r, e) if diag and d in diag else 0.0
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- readout
@pytest.mark.parametrize("E, expected", [(5000, (20, 50)), (300, (20, 20)), (10, (1, 1))])
def test_readout_defaults_examples(E, expected):
    assert A.readout_defaults(E) == expected


@pytest.mark.parametrize("E", [1, 2, 3, 5, 10, 20, 50, 99, 300, 1000, 5000, 20000])
def test_readout_defaults_stay_inside_round(E):
    w, o = A.readout_defaults(E)
    read = E - o
    assert w >= 1 and 1 <= o <= E
    assert E == 1 or read >= 1  # never the first epoch after a shift
    # pandas' centred window at index i covers [i - w//2, i + (w-1)//2]
    assert read - w // 2 >= 0 and read + (w - 1) // 2 <= E - 1


def test_readout_defaults_bad_input():
    with pytest.raises(ValueError, match="epochs_per_round"):
        A.readout_defaults(0)


def test_round_readout_centred_smoothing_on_ramp():
    # train = 100*r + e; window 4, offset 3 -> read at epoch 7; centred window of 4 at 7 covers epochs 5..8
    df = make_run(train=lambda r, e: 100.0 * r + e)
    out = A.round_readout(df, "train_return", window=4, offset=3)
    assert list(out["round"]) == [1, 2, 3]
    for r, v in zip(out["round"], out["train_return"]):
        assert v == pytest.approx(100 * r + (5 + 6 + 7 + 8) / 4)
    assert out.attrs["read_epoch"] == 7


def test_round_readout_window_truncated_at_round_edge():
    # window 5 at epoch 9 (offset 1) sees only epochs 7, 8, 9 of this round — never the next round
    df = make_run(train=lambda r, e: 1000.0 * r + e)
    out = A.round_readout(df, "train_return", window=5, offset=1)
    assert out["train_return"].tolist() == pytest.approx([1000 * r + 8.0 for r in (1, 2, 3)])
    # window 3 at epoch 0 (offset = E) sees epochs 0, 1 only
    out0 = A.round_readout(df, "train_return", window=3, offset=10)
    assert out0["train_return"].tolist() == pytest.approx([1000 * r + 0.5 for r in (1, 2, 3)])


def test_round_readout_default_is_unsmoothed_at_E10():
    df = make_run(train=lambda r, e: 10.0 * r + e * e)
    out = A.round_readout(df, "train_return")  # E=10 -> window 1, read at epoch 9
    assert out["train_return"].tolist() == pytest.approx([10.0 * r + 81 for r in (1, 2, 3)])


def test_round_readout_test_forward_fill():
    # test evaluated at epochs 0, 4, 8 with value 10*r + e. Read at epoch 7 with window 3 (epochs 6, 7, 8):
    # ffilled values are 4 (from e=4), 4, 8 -> mean 16/3 (+10r)
    df = make_run(test=lambda r, e: 10.0 * r + e, test_interval=4)
    out = A.round_readout(df, "test_return", window=3, offset=3)
    assert out["test_return"].tolist() == pytest.approx([10 * r + 16 / 3 for r in (1, 2, 3)])


def test_round_readout_test_ffill_does_not_cross_rounds():
    # evaluations only at epoch 5 of each round; read at epoch 2 (before the round's first evaluation) -> NaN
    df = make_run(test=lambda r, e: float(r), test_interval=None)
    df.loc[df["epoch_in_round"] != 5, "test_return"] = np.nan
    out = A.round_readout(df, "test_return", window=1, offset=8)
    assert out["test_return"].isna().all()
    out2 = A.round_readout(df, "test_return", window=1, offset=4)  # epoch 6 -> value of epoch 5
    assert out2["test_return"].tolist() == [1.0, 2.0, 3.0]


def test_round_readout_sparse_with_window_mixing_nan():
    # eval at epochs 3 and 6; read at epoch 4 with window 5 (epochs 2..6): ffilled = NaN, 3, 3, 3, 6 -> 15/4
    df = make_run(test=lambda r, e: float(e), test_interval=None)
    df.loc[~df["epoch_in_round"].isin([3, 6]), "test_return"] = np.nan
    out = A.round_readout(df, "test_return", window=5, offset=6)
    assert out["test_return"].tolist() == pytest.approx([15 / 4] * 3)


def test_round_readout_row_order_independent():
    df = make_run(train=lambda r, e: 100.0 * r + e)
    shuffled = df.sample(frac=1.0, random_state=0)
    a = A.round_readout(df, "train_return", window=4, offset=3)
    b = A.round_readout(shuffled, "train_return", window=4, offset=3)
    np.testing.assert_allclose(a["train_return"], b["train_return"])


# ------------------------------------------------------------------------------------------- normalised reward
def test_normalised_reward_piecewise_constant():
    c = {1: 0.3, 2: 0.7, 3: -0.2}
    tc = {1: 1.0, 2: 0.5, 3: 2.0}
    df = make_run(train=lambda r, e: c[r], test=lambda r, e: tc[r], test_interval=2)
    out = A.normalised_reward(df)
    assert out.loc[out["round"] == 1, "normalised_train_return"].iloc[0] == 0.0
    assert out.loc[out["round"] == 1, "normalised_test_return"].iloc[0] == 0.0
    assert out["normalised_train_return"].tolist() == pytest.approx([0.0, 0.7 - 0.3, -0.2 - 0.3])
    assert out["normalised_test_return"].tolist() == pytest.approx([0.0, 0.5 - 1.0, 2.0 - 1.0])
    assert out["train_readout"].tolist() == pytest.approx([0.3, 0.7, -0.2])


def test_normalised_reward_round1_exact_zero_with_noise_and_several_runs():
    rng = np.random.default_rng(1)
    runs = []
    for seed in range(3):
        noise = rng.normal(size=(4, 10))
        runs.append(make_run(seed=seed, rounds=4, train=lambda r, e, n=noise: float(n[r - 1, e]),
                             test=lambda r, e, n=noise: float(n[r - 1, e]) * 3, test_interval=3))
    out = A.normalised_reward(pd.concat(runs), window=3, offset=2)
    r1 = out[out["round"] == 1]
    assert (r1["normalised_train_return"] == 0).all() and (r1["normalised_test_return"] == 0).all()
    assert len(out) == 12


def test_duplicate_identity_is_an_error_and_by_accepts_variant():
    a = make_run(train=lambda r, e: 1.0).assign(variant="a")
    b = make_run(train=lambda r, e: 2.0 * r).assign(variant="b")
    df = pd.concat([a, b])
    with pytest.raises(ValueError, match="variant"):
        A.normalised_reward(df)
    out = A.normalised_reward(df, by=("env", "shift", "condition", "seed", "variant"))
    got = out.set_index(["variant", "round"])["normalised_train_return"]
    assert got[("a", 3)] == 0.0 and got[("b", 3)] == pytest.approx(4.0)


# ------------------------------------------------------------------------------------------- run summary
def test_run_summary_mean_and_final():
    c = {1: 1.0, 2: 2.0, 3: 4.0}
    df = make_run(train=lambda r, e: c[r], test=lambda r, e: -c[r], test_interval=1,
                  diag={"entropy": lambda r, e: float(e), "weight_magnitude": lambda r, e: float(r)})
    m = A.run_summary(df, at="mean")
    assert len(m) == 1
    assert m["normalised_train_return"].iloc[0] == pytest.approx(((2 - 1) + (4 - 1)) / 2)
    assert m["normalised_test_return"].iloc[0] == pytest.approx(((-2 + 1) + (-4 + 1)) / 2)
    assert m["entropy"].iloc[0] == pytest.approx(np.mean(np.arange(10)))  # mean over epochs of rounds 2..3
    assert m["weight_magnitude"].iloc[0] == pytest.approx(2.5)
    f = A.run_summary(df, at="final")
    assert f["normalised_train_return"].iloc[0] == pytest.approx(3.0)
    assert f["entropy"].iloc[0] == pytest.approx(9.0)  # readout at epoch 9, window 1 (E=10)
    assert f["weight_magnitude"].iloc[0] == pytest.approx(3.0)
    assert f["n_rounds"].iloc[0] == 3


# ------------------------------------------------------------------------------------------- t-tests
def summary_table(values: dict[str, list[float]], test_values=None, shift="permute", env="gridworld"):
    rows = []
    for cond, vals in values.items():
        for s, v in enumerate(vals):
            tv = test_values[cond][s] if test_values else v
            rows.append({"env": env, "shift": shift, "condition": cond, "seed": s,
                         "normalised_train_return": v, "normalised_test_return": tv})
    return pd.DataFrame(rows)


def pooled_t(b, x):
    b, x = np.asarray(b, float), np.asarray(x, float)
    n1, n2 = len(b), len(x)
    sp2 = ((n1 - 1) * b.var(ddof=1) + (n2 - 1) * x.var(ddof=1)) / (n1 + n2 - 2)
    return (b.mean() - x.mean()) / np.sqrt(sp2 * (1 / n1 + 1 / n2)), n1 + n2 - 2


def test_ttest_matches_pooled_formula_and_sign():
    from scipy.stats import t as tdist

    base = [0.0, 0.1, -0.1, 0.05, -0.02]
    better = [0.5, 0.7, 0.4, 0.6, 0.55]
    worse = [-0.6, -0.4, -0.8, -0.5, -0.3, -0.45]
    s = summary_table({"reset_all": base, "l2": better, "warm_start": worse})
    out = A.condition_ttests(s)
    row = out[(out["condition"] == "l2") & (out["split"] == "train")].iloc[0]
    t_hand, dof = pooled_t(base, better)
    assert row["t"] == pytest.approx(t_hand)
    assert row["p"] == pytest.approx(2 * tdist.sf(abs(t_hand), dof))
    assert row["dof"] == 8 and row["n"] == 5 and row["n_baseline"] == 5
    assert row["t"] < 0  # better than reset_all -> negative t
    assert row["mean"] == pytest.approx(np.mean(better))
    assert row["baseline_mean"] == pytest.approx(np.mean(base))
    w = out[(out["condition"] == "warm_start") & (out["split"] == "train")].iloc[0]
    assert w["t"] > 0 and w["dof"] == 5 + 6 - 2
    assert w["t"] == pytest.approx(pooled_t(base, worse)[0])
    assert set(out["split"]) == {"train", "test"}
    assert "reset_all" not in set(out["condition"])


# --------------------------------------------------------------------------------------------- ttest_power


def test_ttest_power_effect_size_is_cohens_d_with_the_t_sign():
    base = [0.0, 0.1, -0.1, 0.05, -0.02]
    worse = [-0.6, -0.4, -0.8, -0.5, -0.3, -0.45]
    tests = A.ttest_power(A.condition_ttests(summary_table({"reset_all": base, "warm_start": worse})))
    row = tests[tests["split"] == "train"].iloc[0]
    b, x = np.asarray(base), np.asarray(worse)
    pooled_sd = math.sqrt((4 * b.var(ddof=1) + 5 * x.var(ddof=1)) / 9)
    assert row["effect_size"] == pytest.approx((b.mean() - x.mean()) / pooled_sd)
    assert row["effect_size"] > 0  # below the baseline, as t


@pytest.mark.parametrize("d, seeds", [(0.5, 64), (0.8, 26), (1.0, 17)])
def test_ttest_power_seeds_needed_match_cohens_table(d, seeds):
    # Cohen (1988), two-sided alpha = 0.05, power 0.8: n per group for a medium, large and d = 1 effect.
    n = 5
    tests = pd.DataFrame({"t": [-d / math.sqrt(2 / n)], "n": [n], "n_baseline": [n]})
    assert A.ttest_power(tests)["seeds_needed"].iloc[0] == seeds


@pytest.mark.parametrize("d, n, nb", [(1.45, 5, 5), (1.0, 4, 6)])
def test_ttest_power_matches_simulated_rejection_rate(d, n, nb):
    rng = np.random.default_rng(0)
    sims = 40_000
    base = rng.normal(0.0, 1.0, (sims, nb))
    cond = rng.normal(-d, 1.0, (sims, n))
    rejected = stats.ttest_ind(base, cond, axis=1).pvalue < 0.05
    tests = pd.DataFrame({"t": [d / math.sqrt(1 / n + 1 / nb)], "n": [n], "n_baseline": [nb]})
    assert A.ttest_power(tests)["power"].iloc[0] == pytest.approx(rejected.mean(), abs=0.012)


def test_ttest_power_undefined_and_bad_input():
    tests = pd.DataFrame({"t": [np.nan, 0.0], "n": [5, 5], "n_baseline": [5, 5]})
    out = A.ttest_power(tests)
    assert np.isnan(out["power"].iloc[0]) and np.isnan(out["seeds_needed"].iloc[0])
    assert out["power"].iloc[1] == pytest.approx(0.05) and np.isnan(out["seeds_needed"].iloc[1])
    with pytest.raises(ValueError, match="invalid alpha 1.5"):
        A.ttest_power(tests, alpha=1.5)
    with pytest.raises(ValueError, match="invalid power 0"):
        A.ttest_power(tests, power=0)
    with pytest.raises(ValueError, match="n_baseline"):
        A.ttest_power(tests.drop(columns="n_baseline"))


def test_ttest_test_split_uses_test_values_and_groups_by_shift():
    s1 = summary_table({"reset_all": [0, 1, 2], "l2": [1, 2, 3]},
                       test_values={"reset_all": [5, 6, 8], "l2": [0, 1, 1]}, shift="permute")
    s2 = summary_table({"reset_all": [0, 1, 2], "l2": [4, 5, 9]}, shift="noise")
    out = A.condition_ttests(pd.concat([s1, s2]))
    assert len(out) == 4
    r = out[(out["shift"] == "permute") & (out["split"] == "test")].iloc[0]
    assert r["t"] == pytest.approx(pooled_t([5, 6, 8], [0, 1, 1])[0]) and r["t"] > 0
    r2 = out[(out["shift"] == "noise") & (out["split"] == "train")].iloc[0]
    assert r2["t"] == pytest.approx(pooled_t([0, 1, 2], [4, 5, 9])[0])


def test_ttest_from_per_epoch_table():
    # two conditions x 3 seeds; constant-per-round returns so the summary is known exactly
    runs = []
    for s in range(3):
        runs.append(make_run(condition="reset_all", seed=s, train=lambda r, e, s=s: 0.1 * s,
                             test=lambda r, e: 0.0, test_interval=1))
        runs.append(make_run(condition="l2", seed=s, train=lambda r, e, s=s: r * (1 + 0.1 * s),
                             test=lambda r, e: 0.0, test_interval=1))
    out = A.condition_ttests(pd.concat(runs), at="final")
    r = out[out["split"] == "train"].iloc[0]
    l2_final = [2 * (1 + 0.1 * s) for s in range(3)]  # r=3 minus r=1
    assert r["t"] == pytest.approx(pooled_t([0, 0, 0], l2_final)[0])
    assert r["mean"] == pytest.approx(np.mean(l2_final))


# ------------------------------------------------------------------------------------------- correlations
def points_table(n_seeds=2, rng=None, noise=0.0, y_of=None):
    shifts = ["permute", "window", "noise"]
    rows = []
    rng = rng or np.random.default_rng(0)
    for i, sh in enumerate(shifts):
        for j, cond in enumerate(A.ANALYSIS_CONDITIONS):
            for s in range(n_seeds):
                d = {k: rng.normal() for k in DIAGS}
                y = y_of(d) if y_of else rng.normal()
                rows.append({"env": "gridworld", "shift": sh, "condition": cond, "seed": s, **d,
                             "normalised_train_return": y + noise * rng.normal(),
                             "normalised_test_return": -y + noise * rng.normal()})
    return pd.DataFrame(rows)


def test_correlations_exact_line_gives_r2_one():
    # per-seed values on the line y = 2*weight_magnitude + 1 -> means over seeds also on the line
    s = points_table(y_of=lambda d: 2 * d["weight_magnitude"] + 1)
    s.attrs["at"] = "final"
    out = A.diagnostic_correlations(s).set_index("diagnostic")
    row = out.loc["weight_magnitude"]
    assert row["n_points"] == 27
    assert row["r2"] == pytest.approx(1.0) and row["r"] == pytest.approx(1.0)
    assert row["slope"] == pytest.approx(2.0) and row["intercept"] == pytest.approx(1.0)
    assert row["significant"]
    assert list(out.index) == list(DIAGS)


def test_correlations_match_numpy_on_known_data():
    from scipy.stats import t as tdist

    s = points_table(rng=np.random.default_rng(3), y_of=lambda d: 0.3 * d["dead_units"], noise=0.2)
    out = A.diagnostic_correlations(s, split="train").set_index("diagnostic")
    means = s.groupby(["shift", "condition"])[list(DIAGS) + ["normalised_train_return"]].mean()
    y = means["normalised_train_return"].to_numpy()
    for d in DIAGS:
        x = means[d].to_numpy()
        r = np.corrcoef(x, y)[0, 1]
        slope, intercept = np.polyfit(x, y, 1)
        n = len(x)
        tstat = r * np.sqrt((n - 2) / (1 - r * r))
        p = 2 * tdist.sf(abs(tstat), n - 2)
        assert out.loc[d, "r"] == pytest.approx(r)
        assert out.loc[d, "r2"] == pytest.approx(r * r)
        assert out.loc[d, "slope"] == pytest.approx(slope)
        assert out.loc[d, "intercept"] == pytest.approx(intercept)
        assert out.loc[d, "p"] == pytest.approx(p)
        assert out.loc[d, "significant"] == (p < 0.05)


def test_correlations_condition_filter():
    s = points_table()
    s = pd.concat([s, s.assign(condition="something_else")])
    out = A.diagnostic_correlations(s)
    assert (out["n_points"] == 27).all()
    out2 = A.diagnostic_correlations(s, conditions=["l2", "redo", "warm_start"])
    assert (out2["n_points"] == 9).all()


# ------------------------------------------------------------------------------------------- GLM
def ols_reference(X, y):
    n, k = X.shape
    beta = np.linalg.lstsq(X, y, rcond=None)[0]
    resid = y - X @ beta
    scale = resid @ resid / (n - k)
    se = np.sqrt(np.diag(scale * np.linalg.inv(X.T @ X)))
    return beta, se, resid @ resid


@pytest.mark.parametrize("unit", ["condition", "seed"])
def test_glm_matches_lstsq(unit):
    from scipy.stats import norm

    rng = np.random.default_rng(7)
    s = points_table(n_seeds=3, rng=rng,
                     y_of=lambda d: 0.5 - 1.5 * d["weight_magnitude"] + 0.8 * d["dead_units"], noise=0.3)
    out = A.diagnostics_glm(s, unit=unit)
    if unit == "condition":
        pts = s.groupby(["shift", "condition"])[list(DIAGS) + ["normalised_train_return"]].mean()
    else:
        pts = s
    X = np.column_stack([np.ones(len(pts))] + [pts[d].to_numpy() for d in DIAGS])
    y = pts["normalised_train_return"].to_numpy()
    beta, se, rss = ols_reference(X, y)
    assert list(out.index) == ["const"] + list(DIAGS)
    np.testing.assert_allclose(out["coef"].to_numpy(), beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(out["std_err"].to_numpy(), se, rtol=1e-8)
    np.testing.assert_allclose(out["z"].to_numpy(), beta / se, rtol=1e-8)
    np.testing.assert_allclose(out["p"].to_numpy(), 2 * norm.sf(np.abs(beta / se)), rtol=1e-6)
    np.testing.assert_allclose(out["ci_low"].to_numpy(), beta - norm.ppf(0.975) * se, rtol=1e-8)
    np.testing.assert_allclose(out["ci_high"].to_numpy(), beta + norm.ppf(0.975) * se, rtol=1e-8)
    assert out.attrs["n"] == (27 if unit == "condition" else 81)
    assert out.attrs["deviance"] == pytest.approx(rss)


def test_glm_test_split():
    s = points_table(n_seeds=2, rng=np.random.default_rng(9), y_of=lambda d: d["entropy"], noise=0.1)
    assert s["normalised_test_return"].ne(-s["normalised_train_return"]).all()
    out = A.diagnostics_glm(s, split="test")
    pts = s.groupby(["shift", "condition"])[list(DIAGS) + ["normalised_test_return"]].mean()
    X = np.column_stack([np.ones(len(pts))] + [pts[d].to_numpy() for d in DIAGS])
    beta, _, _ = ols_reference(X, pts["normalised_test_return"].to_numpy())
    np.testing.assert_allclose(out["coef"].to_numpy(), beta, rtol=1e-8, atol=1e-10)


def test_glm_multiple_envs_requires_env():
    s = pd.concat([points_table(), points_table().assign(env="coinrun")])
    with pytest.raises(ValueError, match="env="):
        A.diagnostics_glm(s)
    assert A.diagnostics_glm(s, env="coinrun").attrs["n"] == 27


# ------------------------------------------------------------------------------------------- bootstrap
VALUES = {"a": [5.0, 1.0, 9.0, 3.0, 7.0, 2.0, 8.0, 4.0, 6.5, 100.0], "b": [0.0, 1.0, 2.0, 3.0]}


def hand_iqm(v):
    v = np.sort(np.asarray(v))
    k = int(0.25 * len(v))  # drop floor(25%) from each end
    return v[k:len(v) - k].mean()


@pytest.mark.parametrize("backend", ["scipy", "rliable"])
def test_aggregate_ci_iqm(backend):
    if backend == "rliable" and not A.rliable_available():
        pytest.skip("rliable not importable")
    out = A.aggregate_ci(VALUES, statistic="iqm", reps=2000, seed=1, backend=backend).set_index("condition")
    assert out.loc["a", "estimate"] == pytest.approx((3 + 4 + 5 + 6.5 + 7 + 8) / 6)
    assert out.loc["a", "estimate"] == pytest.approx(hand_iqm(VALUES["a"]))
    assert out.loc["b", "estimate"] == pytest.approx(1.5)
    for c in VALUES:
        assert out.loc[c, "ci_low"] <= out.loc[c, "estimate"] <= out.loc[c, "ci_high"]
        assert out.loc[c, "ci_low"] < out.loc[c, "ci_high"]
        assert out.loc[c, "ci_low"] >= min(VALUES[c]) and out.loc[c, "ci_high"] <= max(VALUES[c])
    again = A.aggregate_ci(VALUES, statistic="iqm", reps=2000, seed=1, backend=backend).set_index("condition")
    pd.testing.assert_frame_equal(out, again)
    cont = {"c": np.random.default_rng(0).normal(size=20)}
    one = A.aggregate_ci(cont, reps=2000, seed=1, backend=backend)
    other = A.aggregate_ci(cont, reps=2000, seed=2, backend=backend)
    assert not np.allclose(one[["ci_low", "ci_high"]], other[["ci_low", "ci_high"]])
    pd.testing.assert_frame_equal(one, A.aggregate_ci(cont, reps=2000, seed=1, backend=backend))
    # a condition's CI does not depend on the other conditions passed
    alone = A.aggregate_ci({"a": VALUES["a"]}, reps=2000, seed=1, backend=backend)
    assert alone["ci_low"].iloc[0] == out.loc["a", "ci_low"]
    assert out.attrs["backend"] == backend


@pytest.mark.parametrize("backend", ["scipy", "rliable"])
def test_aggregate_ci_mean_median_and_dataframe(backend):
    if backend == "rliable" and not A.rliable_available():
        pytest.skip("rliable not importable")
    df = pd.DataFrame({"condition": ["x"] * 5 + ["y"] * 3, "v": [1, 2, 3, 4, 10, 0, 0, 3]})
    m = A.aggregate_ci(df, statistic="mean", value="v", reps=500, backend=backend).set_index("condition")
    assert m.loc["x", "estimate"] == pytest.approx(4.0) and m.loc["y", "estimate"] == pytest.approx(1.0)
    assert m.loc["x", "n"] == 5
    md = A.aggregate_ci(df, statistic="median", value="v", reps=500, backend=backend).set_index("condition")
    assert md.loc["x", "estimate"] == pytest.approx(3.0) and md.loc["y", "estimate"] == pytest.approx(0.0)
    for t in (m, md):
        assert (t["ci_low"] <= t["estimate"]).all() and (t["estimate"] <= t["ci_high"]).all()


@pytest.mark.parametrize("backend", ["scipy", "rliable"])
def test_aggregate_ci_strata_resample_runs_within_each_task(backend):
    if backend == "rliable" and not A.rliable_available():
        pytest.skip("rliable not importable")
    # Two tasks whose runs agree within each task: every stratified resample holds three runs of each, so the
    # mean is always (0 + 10) / 2 = 5 and the interval collapses onto it; resampling the six runs as one pool
    # draws unbalanced mixes, and its interval is wide.
    df = pd.DataFrame({"condition": "x", "shift": ["a"] * 3 + ["b"] * 3, "v": [0.0] * 3 + [10.0] * 3})
    kwargs = dict(statistic="mean", value="v", reps=1000, seed=0, backend=backend)
    stratified = A.aggregate_ci(df, strata="shift", **kwargs).iloc[0]
    pooled = A.aggregate_ci(df, **kwargs).iloc[0]
    assert stratified["estimate"] == pooled["estimate"] == pytest.approx(5.0)
    assert stratified["ci_low"] == pytest.approx(5.0) and stratified["ci_high"] == pytest.approx(5.0)
    assert pooled["ci_high"] - pooled["ci_low"] > 3.0
    assert stratified["n"] == 6
    # IQM over all runs of all tasks at once (rliable's aggregate_iqm): the middle half of the pooled values
    rng = np.random.default_rng(3)
    tasks = pd.DataFrame({"condition": "y", "shift": np.repeat(["a", "b", "c"], 4),
                          "v": np.concatenate([rng.normal(m, 1.0, 4) for m in (0.0, 5.0, 20.0)])})
    iqm = A.aggregate_ci(tasks, strata="shift", value="v", reps=500, backend=backend).iloc[0]
    assert iqm["estimate"] == pytest.approx(hand_iqm(tasks["v"]))
    assert iqm["ci_low"] <= iqm["estimate"] <= iqm["ci_high"]


def test_aggregate_ci_strata_bad_input():
    with pytest.raises(ValueError, match="strata= needs a DataFrame"):
        A.aggregate_ci({"a": [1.0, 2.0]}, strata="shift")
    df = pd.DataFrame({"condition": "x", "v": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="shift"):
        A.aggregate_ci(df, value="v", strata="shift")
    if A.rliable_available():
        uneven = pd.DataFrame({"condition": "x", "shift": ["a", "a", "b", "b", "b"], "v": [1.0, 2, 3, 4, 5]})
        with pytest.raises(ValueError, match=r"same number of runs.*\[2, 3\]"):
            A.aggregate_ci(uneven, value="v", strata="shift", backend="rliable")
        assert A.aggregate_ci(uneven, value="v", strata="shift", backend="scipy", reps=200)["n"].iloc[0] == 5
        assert A.aggregate_ci(uneven, value="v", strata="shift", reps=200).attrs["backend"] == "scipy"


def test_aggregate_ci_leaves_global_rng_alone():
    np.random.seed(123)
    expected = np.random.random_sample(3)
    np.random.seed(123)
    A.aggregate_ci({"a": [1.0, 2.0, 5.0, 7.0]}, reps=200, seed=9)
    np.testing.assert_array_equal(np.random.random_sample(3), expected)


def test_aggregate_ci_single_value_gives_nan_ci():
    out = A.aggregate_ci({"a": [1.0, np.nan]}, reps=100)
    assert out["estimate"].iloc[0] == 1.0 and np.isnan(out["ci_low"].iloc[0]) and out["n"].iloc[0] == 1


# ------------------------------------------------------------------------------------------- validation
def test_bad_inputs():
    df = make_run(train=lambda r, e: float(r), test=lambda r, e: 0.0, test_interval=2)
    with pytest.raises(ValueError, match="train_return"):
        A.normalised_reward(df.drop(columns="train_return"))
    with pytest.raises(ValueError, match="nonexistent"):
        A.round_readout(df, "nonexistent")
    with pytest.raises(ValueError, match=r"at='last'.*'mean', 'final'"):
        A.run_summary(df, at="last")
    with pytest.raises(ValueError, match=r"baseline='nope'.*warm_start"):
        A.condition_ttests(df, baseline="nope")
    s = points_table()
    with pytest.raises(ValueError, match=r"split='val'.*'train', 'test'"):
        A.diagnostic_correlations(s, split="val")
    with pytest.raises(ValueError, match=r"unit='run'.*'condition', 'seed'"):
        A.diagnostics_glm(s, unit="run")
    with pytest.raises(ValueError, match=r"statistic='mode'.*'iqm'"):
        A.aggregate_ci(VALUES, statistic="mode")
    with pytest.raises(ValueError, match="offset"):
        A.round_readout(df, "train_return", offset=11)
    with pytest.raises(ValueError, match="zzz"):
        A.diagnostic_correlations(s, conditions=["zzz"])
    with pytest.raises(ValueError, match=r"missing required column.*dead_units"):
        A.diagnostic_correlations(s.drop(columns="dead_units"))
    with pytest.raises(ValueError, match=r"built with at='mean'"):
        A.diagnostic_correlations(A.run_summary(df, at="mean"), conditions=["warm_start"], at="final")


def test_module_imports_no_torch_or_plotting():
    """The stats package (loaded without the package __init__, which imports torch) pulls in no torch / plotting:
    its modules import no forbidden library at top level, and relative imports reach only each other and
    plasticity_lab.schema."""
    import ast
    import pathlib

    package = pathlib.Path(A.__file__).parent
    forbidden = ("torch", "matplotlib", "seaborn", "plotly", "plasticity_lab", "rliable")
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text())
        top_level = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        names = [a.name for n in top_level if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in top_level if isinstance(n, ast.ImportFrom) and n.level == 0]
        assert not [m for m in names if m.split(".")[0] in forbidden], path.name
        relative = [(n.level, n.module) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level > 0]
        assert all(level == 1 or (level == 2 and module == "schema") for level, module in relative), path.name
    code = (
        "import importlib, sys, types; "
        "root = types.ModuleType('plasticity_lab'); "
        f"root.__path__ = [{str(package.parent)!r}]; "
        "sys.modules['plasticity_lab'] = root; "
        "importlib.import_module('plasticity_lab.stats'); "
        "bad = [k for k in ('torch', 'matplotlib', 'seaborn', 'plotly', 'rliable') if k in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# --------------------------------------------------------------------------------------------- interaction_test
def _two_by_two_runs(values):
    rows = []
    for shift, cells in values.items():
        for condition, seeds in cells.items():
            for seed, v in enumerate(seeds):
                rows.append({"env": "gridworld", "shift": shift, "condition": condition, "seed": seed,
                             "normalised_train_return": v, "normalised_test_return": 2 * v})
    return pd.DataFrame(rows)


def test_interaction_test_by_hand():
    # cells (two seeds each): neither {0, 0.2}, first {1, 1}, second {0.5, 0.7}, both {3, 3}
    runs = _two_by_two_runs({"permute": {
        "warm_start": (0.0, 0.2), "soft_shrink_perturb": (1.0, 1.0), "layernorm": (0.5, 0.7),
        "soft_shrink_perturb+layernorm": (3.0, 3.0)}})
    table = A.interaction_test(runs).set_index("split")
    # contrast of the cell means: 3 − 1 − 0.6 + 0.1
    assert table.loc["train", "interaction"] == pytest.approx(1.5)
    # pooled within-cell variance: (0.02 + 0 + 0.02 + 0) / (8 − 4) = 0.01; SE = sqrt(0.01 · (1/2 · 4)) = sqrt(0.02)
    se = math.sqrt(0.02)
    assert table.loc["train", "std_err"] == pytest.approx(se)
    assert table.loc["train", "t"] == pytest.approx(1.5 / se)
    assert table.loc["train", "dof"] == 4
    assert table.loc["train", "p"] == pytest.approx(2 * stats.t.sf(1.5 / se, 4))
    # the test split doubles every value: same t, twice the contrast
    assert table.loc["test", "interaction"] == pytest.approx(3.0)
    assert table.loc["test", "t"] == pytest.approx(1.5 / se)


def test_interaction_test_additive_effects_give_zero():
    # each cell = neither + gain(first) + gain(second) exactly, seed noise identical across cells
    noise = (-0.1, 0.05, 0.05)
    cells = {"warm_start": 0.0, "soft_shrink_perturb": 0.4, "layernorm": -0.3,
             "soft_shrink_perturb+layernorm": 0.1}
    runs = _two_by_two_runs({"window": {c: tuple(m + e for e in noise) for c, m in cells.items()}})
    table = A.interaction_test(runs)
    assert table["interaction"].abs().max() < 1e-12
    assert (table["p"] > 0.999).all()


def test_interaction_test_unbalanced_matches_anova():
    # unequal cells: the interaction's t² equals the F of the 1-df interaction term in a two-way ANOVA on the
    # same data (computed independently from residual sums of squares of the full and the additive model)
    rng = np.random.default_rng(0)
    sizes = {"warm_start": 5, "soft_shrink_perturb": 4, "layernorm": 5, "soft_shrink_perturb+layernorm": 3}
    runs = _two_by_two_runs({"expand": {c: tuple(rng.normal(i * 0.3, 1.0, n)) for i, (c, n) in
                                        enumerate(sizes.items())}})
    table = A.interaction_test(runs).set_index("split")
    d = runs.copy()
    y = d["normalised_train_return"].to_numpy()
    a = d["condition"].isin(["soft_shrink_perturb", "soft_shrink_perturb+layernorm"]).to_numpy(float)
    b = d["condition"].isin(["layernorm", "soft_shrink_perturb+layernorm"]).to_numpy(float)
    full_rss = sum(((y[d["condition"] == c] - y[d["condition"] == c].mean()) ** 2).sum() for c in sizes)
    X = np.column_stack([np.ones_like(y), a, b])
    additive_rss = float(np.sum((y - X @ np.linalg.lstsq(X, y, rcond=None)[0]) ** 2))
    dof = len(y) - 4
    f = (additive_rss - full_rss) / (full_rss / dof)
    assert table.loc["train", "t"] ** 2 == pytest.approx(f)
    assert table.loc["train", "p"] == pytest.approx(stats.f.sf(f, 1, dof))
    assert table.loc["train", "dof"] == dof


def test_interaction_test_names_a_missing_cell():
    runs = _two_by_two_runs({"permute": {"warm_start": (0, 1), "soft_shrink_perturb": (0, 1),
                                         "layernorm": (0, 1)}})
    with pytest.raises(ValueError, match=r"missing: \['soft_shrink_perturb\+layernorm'\]"):
        A.interaction_test(runs)


# ---- rankings of conditions, and how far two studies agree on them ------------------------------------------------
def _ranked_runs(means: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """Two seeds per condition at each (train, test) mean: offsets ±0.1 cancel in the condition's mean."""
    return pd.DataFrame([{"shift": "permute", "condition": c, "seed": s, "normalised_train_return": tr + o,
                          "normalised_test_return": te + o}
                         for c, (tr, te) in means.items() for s, o in enumerate((-0.1, 0.1))])


def test_condition_ranking_pools_train_and_test_and_ranks_by_hand():
    ranking = A.condition_ranking(_ranked_runs({"a": (0.0, 0.4), "b": (0.5, 0.5), "c": (-1.0, 0.0),
                                                       "d": (0.3, -0.1)}))
    # pooled means: a 0.2, b 0.5, c -0.5, d 0.1
    assert list(ranking["condition"]) == ["b", "a", "d", "c"]
    assert ranking["mean"].tolist() == pytest.approx([0.5, 0.2, 0.1, -0.5])
    assert ranking["rank"].tolist() == [1, 2, 3, 4] and ranking["runs"].tolist() == [2, 2, 2, 2]
    with pytest.raises(ValueError, match="normalised_test_return"):
        A.condition_ranking(pd.DataFrame({"condition": ["a"], "normalised_train_return": [0.0]}))


def test_ranking_agreement_is_kendalls_tau_over_the_shared_conditions():
    first = _ranked_runs({"a": (4, 4), "b": (3, 3), "c": (2, 2), "d": (1, 1), "only_first": (0, 0)})
    same = _ranked_runs({"a": (40, 40), "b": (30, 30), "c": (20, 20), "d": (10, 10)})
    reverse = _ranked_runs({"a": (1, 1), "b": (2, 2), "c": (3, 3), "d": (4, 4), "only_second": (9, 9)})
    one_swap = _ranked_runs({"a": (4, 4), "b": (2, 2), "c": (3, 3), "d": (1, 1)})
    assert A.ranking_agreement(first, same)["tau"] == pytest.approx(1.0)
    result = A.ranking_agreement(first, reverse)
    assert result["tau"] == pytest.approx(-1.0) and result["conditions"] == 4
    assert result["only_first"] == ["only_first"] and result["only_second"] == ["only_second"]
    # one discordant pair of 6: τ = (5 − 1) / 6
    assert A.ranking_agreement(first, one_swap)["tau"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="at least 3 conditions in both studies; shared: \\['a', 'b'\\]"):
        A.ranking_agreement(first, _ranked_runs({"a": (1, 1), "b": (0, 0)}))


def test_gap_by_scale_reads_one_comparison_at_each_scale_with_a_hand_computed_interval():
    def runs(warm, reset):
        return pd.DataFrame([{"shift": "permute", "condition": c, "seed": s, "normalised_train_return": v,
                              "normalised_test_return": -v}
                             for c, values in (("warm_start", warm), ("reset_all", reset))
                             for s, v in enumerate(values)])

    table = A.gap_by_scale({200: runs([0.0, 1.0, 2.0], [2.0, 3.0, 4.0]), 300: runs([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])})
    assert list(table["scale"]) == [200, 200, 300, 300] and list(table["split"]) == ["train", "test"] * 2
    row = table.iloc[0]
    # by hand: gap −2, pooled sd 1, se = sqrt(1/3 + 1/3), t(4) two-sided 97.5 % point 2.7764
    se = np.sqrt(2 / 3)
    assert row["gap"] == pytest.approx(-2.0) and row["t"] == pytest.approx(2 / se)  # positive: warm-start below
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((-2 - 2.7764451 * se, -2 + 2.7764451 * se))
    assert row["effect_size"] == pytest.approx(2.0)  # Cohen's d: the gap over the pooled sd
    # the test split mirrors the train split; equal groups: no gap, an interval around zero
    assert table.iloc[1]["gap"] == pytest.approx(2.0) and table.iloc[1]["t"] == pytest.approx(-2 / se)
    same = table.iloc[2]
    assert same["gap"] == 0 and same["ci_low"] == pytest.approx(-same["ci_high"]) and same["p"] == pytest.approx(1)
    # the same t and p as the paper's test of each study
    paper = A.condition_ttests(runs([0.0, 1.0, 2.0], [2.0, 3.0, 4.0]))
    assert paper.iloc[0]["p"] == pytest.approx(row["p"]) and paper.iloc[0]["t"] == pytest.approx(row["t"])
    with pytest.raises(ValueError, match="the runs of scale 300 lack \\['reset_all'\\]"):
        A.gap_by_scale({300: runs([1.0, 2.0], [0.0, 1.0]).replace("reset_all", "l2")})
    with pytest.raises(ValueError, match="at least one scale"):
        A.gap_by_scale({})


# ------------------------------------------------------------------------------------------- rounds_summary
def _rounds_table(n_rounds, seeds=(0, 1), conditions=("warm_start", "reset_all")):
    """A per-round table whose values encode (condition, seed, round), so window means can be worked out by hand:
    normalised train = round + 10·seed (+100 for reset-all), test = −that, dead_units = round / 100."""
    rows = []
    for c in conditions:
        for s in seeds:
            for r in range(1, n_rounds + 1):
                v = r + 10 * s + (100 if c == "reset_all" else 0)
                rows.append({"env": "gridworld", "shift": "permute", "condition": c, "seed": s, "round": r,
                             "normalised_train_return": float(v), "normalised_test_return": float(-v),
                             "dead_units": r / 100})
    return pd.DataFrame(rows)


def test_rounds_summary_averages_the_window_of_rounds_per_run():
    table = _rounds_table(20)
    late = A.rounds_summary(table, first=11, last=20)
    assert len(late) == 4 and set(late["n_rounds"]) == {20}
    row = late[(late["condition"] == "warm_start") & (late["seed"] == 1)].iloc[0]
    # rounds 11..20 of warm-start seed 1: mean(r) = 15.5, plus 10 for the seed
    assert row["normalised_train_return"] == pytest.approx(25.5)
    assert row["normalised_test_return"] == pytest.approx(-25.5)
    assert row["dead_units"] == pytest.approx(0.155)
    early = A.rounds_summary(table, last=10)  # rounds 2..10: mean(r) = 6
    row = early[(early["condition"] == "reset_all") & (early["seed"] == 0)].iloc[0]
    assert row["normalised_train_return"] == pytest.approx(106.0) and row["n_rounds"] == 10


def test_rounds_summary_of_rounds_two_to_the_end_is_the_stored_mean_summary():
    """The stored runs("mean") table is computed from per-epoch curves by run_summary; averaging the per-round
    table over rounds 2..R must give the same numbers."""
    from pathlib import Path

    import plasticity_lab as pl

    study = Path(__file__).resolve().parents[1] / "data" / "gridworld-preset-search" / "epochs-200"
    if not (study / "manifest.json").exists():
        pytest.skip("the stored preset-search study is not in this checkout")
    results = pl.load_results(study)
    stored = results.runs("mean").sort_values(list(A.DEFAULT_BY)).reset_index(drop=True)
    window = A.rounds_summary(results.rounds)
    assert list(window.columns) == list(stored.columns)
    pd.testing.assert_frame_equal(window, stored, check_dtype=False, rtol=1e-6)


def test_rounds_summary_names_a_window_that_runs_do_not_reach():
    table = _rounds_table(10)
    with pytest.raises(ValueError, match=r"last=20 but some runs end at round 10; valid: 2\.\.10"):
        A.rounds_summary(table, first=2, last=20)
    with pytest.raises(ValueError, match="last must be a round number >= first"):
        A.rounds_summary(table, first=5, last=3)
    with pytest.raises(ValueError, match="first must be a round number >= 1"):
        A.rounds_summary(table, first=0)
