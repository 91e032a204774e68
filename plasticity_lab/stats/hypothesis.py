"""Conditions compared: the paper's t-tests against reset-all (PROTOCOL, "Statistics"), and beyond the paper the
power of each test, one gap read at several scales, a 2 x 2 ablation's interaction, and studies ranked.

Every test reads a run summary, one value per seed (:func:`~plasticity_lab.stats.run_summary`, or the release's,
:func:`~plasticity_lab.stats.release_summary`, with ``readout="release"``); :func:`condition_ttests` and
:func:`interaction_test` also take the per-epoch table and summarise it themselves.  The module is named
``hypothesis`` rather than ``tests`` so that it is not mistaken for the test suite.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..schema import SPLITS
from .readouts import as_run_summary, resolve_at
from .tables import DEFAULT_BY, by_group, identity_keys, require_columns


def condition_ttests(
    df_or_summary: pd.DataFrame,
    baseline: str = "reset_all",
    at: str | None = "mean",
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    readout: str = "project",
) -> pd.DataFrame:
    """Two-sample equal-variance t-test of each condition against ``baseline`` (PROTOCOL, "Statistics").

    Per (env, shift) — and any extra identity column such as ``variant`` — and per split (train/test), the
    per-seed values of a run summary are compared with ``scipy.stats.ttest_ind(equal_var=True)``, as the release
    does.  The per-seed value depends on ``readout``:

    * ``"project"`` (default): :func:`~plasticity_lab.stats.run_summary` — with the default ``at="mean"``, each run's
      mean over rounds 2..R of normalised reward read from smoothed curves (the reasons are given there and in
      :func:`~plasticity_lab.stats.round_readout`); ``at="final"``: round R's.
    * ``"release"``: :func:`~plasticity_lab.stats.release_summary` — the release's value, the mean of the unsmoothed
      read-outs of rounds 1..R−1 relative to round 1 (round 1's zero in, round R out), the test curve stretched as the
      release stretches it.  ``at`` must be ``"mean"`` (or None) and ``window`` None.

    SIGN CONVENTION — READ THIS: ``t = ttest_ind(baseline_values, condition_values).statistic``, i.e.
    t ∝ mean(baseline) − mean(condition).  A condition with a HIGHER normalised reward than the baseline gets
    a NEGATIVE t.  "Negative t = better than reset-all", as in the paper (and the release's ``run_ttests``).

    Accepts the per-epoch table or a run summary (a :func:`~plasticity_lab.stats.run_summary` with the same ``at``; for
    ``readout="release"`` a :func:`~plasticity_lab.stats.release_summary` or a per-round table holding the release's
    read-outs, such as a stored study's ``rounds``).  A :func:`~plasticity_lab.stats.release_summary` is tested as given
    whatever ``readout`` says. Columns: identity (minus seed), ``condition, split, t, p, dof, mean, baseline_mean, n,
    n_baseline`` with ``dof = n + n_baseline − 2``.  Seeds with a NaN value are dropped; groups without the baseline or
    with fewer than 2 values on a side get NaN t and p.  ``.attrs`` holds baseline, at, readout.
    """
    at = resolve_at(at, readout, default="mean", window=window)
    s = as_run_summary(df_or_summary, at, window, offset, by, "condition_ttests", readout)
    require_columns(s, ["condition", "seed", "normalised_train_return", "normalised_test_return"], "condition_ttests")
    conditions = list(pd.unique(s["condition"]))
    if baseline not in conditions:
        raise ValueError(f"baseline={baseline!r} is not in the table; conditions present: {tuple(conditions)!r}")
    gkeys = [c for c in identity_keys(s, by) if c not in ("condition", "seed")]
    rows = []
    for ident, g in by_group(s, gkeys):
        for split in SPLITS:
            col = f"normalised_{split}_return"
            b = g.loc[g["condition"] == baseline, col].dropna().to_numpy(float)
            for cond in conditions:
                if cond == baseline or not (g["condition"] == cond).any():
                    continue
                x = g.loc[g["condition"] == cond, col].dropna().to_numpy(float)
                if len(x) >= 2 and len(b) >= 2:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        res = stats.ttest_ind(b, x, equal_var=True)
                    t, p = float(res.statistic), float(res.pvalue)
                else:
                    t = p = np.nan
                rows.append(
                    {
                        **ident,
                        "condition": cond,
                        "split": split,
                        "t": t,
                        "p": p,
                        "dof": len(x) + len(b) - 2,
                        "mean": float(np.mean(x)) if len(x) else np.nan,
                        "baseline_mean": float(np.mean(b)) if len(b) else np.nan,
                        "n": len(x),
                        "n_baseline": len(b),
                    }
                )
    cols = gkeys + ["condition", "split", "t", "p", "dof", "mean", "baseline_mean", "n", "n_baseline"]
    out = pd.DataFrame(rows, columns=cols)
    out.attrs.update(baseline=baseline, at=at, readout=s.attrs.get("readout", "project"),
                     sign="t < 0 means the condition beats the baseline")
    return out


def ttest_power(tests: pd.DataFrame, alpha: float = 0.05, power: float = 0.8) -> pd.DataFrame:
    """How much the seeds of :func:`condition_ttests` can show: effect sizes, power and seeds needed.

    For each row of a :func:`condition_ttests` table, adds

    * ``effect_size`` — Cohen's d of the gap, recovered from the equal-variance t statistic as
      ``t · sqrt(1/n + 1/n_baseline)``; the same sign convention as ``t`` (positive: the condition is below the
      baseline);
    * ``power`` — the probability that a two-sided test at level ``alpha`` with the row's group sizes rejects
      when the true effect is ``effect_size`` (``statsmodels``' noncentral-t power);
    * ``seeds_needed`` — seeds per condition (both groups equal) for a test at level ``alpha`` to reach
      ``power`` against that effect; NaN where the effect is zero or undefined.

    These are planning figures: an effect size estimated from a handful of seeds is itself noisy, and the power
    computed from it ("observed power") says nothing the p-value does not. What they do show is how many seeds a
    study needs to detect an effect of a given size.
    """
    from statsmodels.stats.power import TTestIndPower

    for name, value in (("alpha", alpha), ("power", power)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"invalid {name} {value!r}; it must be a number strictly between 0 and 1")
    require_columns(tests, ["t", "n", "n_baseline"], "ttest_power")
    solver = TTestIndPower()
    out = tests.copy()
    d = out["t"].to_numpy(float) * np.sqrt(1 / out["n"].to_numpy(float) + 1 / out["n_baseline"].to_numpy(float))
    powers, needed = [], []
    for effect, n, nb in zip(d, out["n"], out["n_baseline"]):
        if not np.isfinite(effect):
            powers.append(np.nan)
            needed.append(np.nan)
            continue
        powers.append(float(solver.power(effect_size=abs(effect), nobs1=n, alpha=alpha, ratio=nb / n)))
        if abs(effect) < 1e-12:
            needed.append(np.nan)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n_needed = solver.solve_power(effect_size=abs(effect), power=power, alpha=alpha, ratio=1.0)
        needed.append(float(np.ceil(np.asarray(n_needed, float).item())))
    out["effect_size"] = d
    out["power"] = powers
    out["seeds_needed"] = needed
    out.attrs.update(tests.attrs, alpha=alpha, target_power=power)
    return out


def gap_by_scale(
    runs_by_scale: Mapping[Any, pd.DataFrame],
    condition: str = "warm_start",
    baseline: str = "reset_all",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """One comparison read at several scales, e.g. warm-start against reset-all in studies whose rounds differ in
    length: per scale (the mapping's keys, e.g. epochs per round), shift and split, the gap in mean normalised
    reward ``condition − baseline`` with its confidence interval, the paper's t-test and its power.

    ``runs_by_scale`` maps each scale to a run summary (:func:`~plasticity_lab.stats.run_summary` or a stored study's
    ``runs("mean")``; other conditions in it are ignored). The interval is that of the difference of means under the
    equal-variance t-test (``scipy.stats.ttest_ind(...).confidence_interval``); ``t``, ``p`` and ``effect_size`` follow
    :func:`condition_ttests` and :func:`ttest_power` (positive: the condition is below the baseline).
    Columns: ``scale``, ``shift``, ``split``, ``mean``, ``baseline_mean``, ``gap``, ``ci_low``, ``ci_high``,
    ``t``, ``p``, ``dof``, ``n``, ``n_baseline``, ``effect_size``, ``power``.
    """
    if not runs_by_scale:
        raise ValueError("gap_by_scale needs at least one scale: a mapping of scales to run summaries")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence!r}")
    rows = []
    for scale, runs in runs_by_scale.items():
        require_columns(runs, ["shift", "condition", "normalised_train_return", "normalised_test_return"],
                        "gap_by_scale")
        present = set(runs["condition"])
        missing = [c for c in (condition, baseline) if c not in present]
        if missing:
            raise ValueError(f"gap_by_scale: the runs of scale {scale!r} lack {missing}; "
                             f"conditions present: {sorted(present)}")
        for shift, part in runs.groupby("shift", sort=False):
            for split in SPLITS:
                column = f"normalised_{split}_return"
                x = part.loc[part["condition"] == condition, column].dropna().to_numpy(float)
                b = part.loc[part["condition"] == baseline, column].dropna().to_numpy(float)
                row = {"scale": scale, "shift": shift, "split": split, "mean": float(np.mean(x)),
                       "baseline_mean": float(np.mean(b)), "gap": float(np.mean(x) - np.mean(b)),
                       "ci_low": np.nan, "ci_high": np.nan, "t": np.nan, "p": np.nan,
                       "dof": len(x) + len(b) - 2, "n": len(x), "n_baseline": len(b)}
                if len(x) >= 2 and len(b) >= 2:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        result = stats.ttest_ind(x, b, equal_var=True)
                        interval = result.confidence_interval(confidence)
                    row.update(ci_low=float(interval.low), ci_high=float(interval.high),
                               t=-float(result.statistic), p=float(result.pvalue))
                rows.append(row)
    table = ttest_power(pd.DataFrame(rows))
    table = table.drop(columns="seeds_needed")
    table.attrs.update(condition=condition, baseline=baseline, confidence=confidence)
    return table


def interaction_test(
    df_or_summary: pd.DataFrame,
    first: str = "soft_shrink_perturb",
    second: str = "layernorm",
    neither: str = "warm_start",
    at: str = "mean",
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
) -> pd.DataFrame:
    """A 2 × 2 ablation of two conditions that combine with ``+``: does ``first+second`` do better (or worse) than
    the two gains of ``first`` and ``second`` over ``neither`` added up?

    Per (env, shift) — and any extra identity column — and per split, the per-seed normalised rewards of the four
    cells (``neither``, ``first``, ``second``, ``first+second``) are fitted by ordinary least squares
    (``statsmodels.api.OLS``) on a constant, an indicator of ``first``, one of ``second`` and their product. The
    product's coefficient is the interaction contrast ``both − first − second + neither`` of the cell means, and
    its t-test (pooled within-cell variance, ``dof = n − 4``) is the two-way ANOVA's test of interaction.
    Positive: the combination does better than the sum of the separate gains; 0: the gains simply add up.

    Columns: identity (minus seed), ``split``, the four cell means (named by their conditions), ``interaction,
    std_err, t, p, dof, n``. A group missing a cell, or with no residual degrees of freedom, gets NaN
    ``std_err``, ``t`` and ``p``.
    """
    import statsmodels.api as sm

    both = f"{first}+{second}"
    cells = (neither, first, second, both)
    s = as_run_summary(df_or_summary, at, window, offset, by, "interaction_test")
    require_columns(s, ["condition", "seed", "normalised_train_return", "normalised_test_return"],
                    "interaction_test")
    present = set(s["condition"])
    missing = [c for c in cells if c not in present]
    if missing:
        raise ValueError(
            f"interaction_test needs the conditions {list(cells)}; missing: {missing}; "
            f"conditions present: {tuple(pd.unique(s['condition']))!r}"
        )
    s = s[s["condition"].isin(cells)]
    gkeys = [c for c in identity_keys(s, by) if c not in ("condition", "seed")]
    rows = []
    for ident, g in by_group(s, gkeys):
        for split in SPLITS:
            col = f"normalised_{split}_return"
            d = g[["condition", col]].dropna()
            means = {c: float(d.loc[d["condition"] == c, col].mean()) for c in cells}
            row = {**ident, "split": split, **means,
                   "interaction": means[both] - means[first] - means[second] + means[neither],
                   "std_err": np.nan, "t": np.nan, "p": np.nan, "dof": len(d) - 4, "n": len(d)}
            has_first = d["condition"].isin((first, both)).to_numpy(float)
            has_second = d["condition"].isin((second, both)).to_numpy(float)
            if len(d) > 4 and all((d["condition"] == c).any() for c in cells):
                X = np.column_stack([np.ones(len(d)), has_first, has_second, has_first * has_second])
                fit = sm.OLS(d[col].to_numpy(float), X).fit()
                # the product's coefficient is the contrast of the cell means already in the row
                row.update(std_err=float(fit.bse[3]), t=float(fit.tvalues[3]), p=float(fit.pvalues[3]))
            rows.append(row)
    cols = gkeys + ["split", *cells, "interaction", "std_err", "t", "p", "dof", "n"]
    out = pd.DataFrame(rows, columns=cols)
    out.attrs.update(at=at, first=first, second=second, neither=neither,
                     sign="interaction > 0 means the combination beats the sum of the separate gains")
    return out


def condition_ranking(summary: pd.DataFrame) -> pd.DataFrame:
    """Conditions ordered by their mean normalised reward over every run, shift and split (train and test
    pooled with equal weight per run), as the paper's "best overall" reads a study.

    ``summary`` is a run summary (:func:`~plasticity_lab.stats.run_summary`, or a stored study's ``runs("mean")``).
    Columns: ``condition``, ``mean``, ``rank`` (1 = the highest mean; ties share the lower rank), ``runs``.
    """
    require_columns(summary, ["condition", "normalised_train_return", "normalised_test_return"],
                    "condition_ranking")
    if summary.empty:
        raise ValueError("condition_ranking needs at least one run; the table is empty")
    values = summary[["condition", "normalised_train_return", "normalised_test_return"]]
    pooled = values.melt(id_vars=["condition"], value_name="value")
    table = (pooled.groupby("condition", sort=False)["value"].mean().rename("mean").to_frame()
             .join(values.groupby("condition", sort=False).size().rename("runs")))
    table = table.sort_values("mean", ascending=False, kind="stable").reset_index()
    table.insert(2, "rank", table["mean"].rank(ascending=False, method="min").astype(int))
    return table


def ranking_agreement(first: pd.DataFrame, second: pd.DataFrame) -> dict:
    """How far two studies order their conditions alike: Kendall's τ-b (``scipy.stats.kendalltau``) between
    the :func:`condition_ranking` means of the conditions both contain, with its p-value.

    τ = 1: the same order; −1: the reverse; around 0: unrelated. Returns ``{"tau", "p", "conditions",
    "only_first", "only_second"}``; at least three shared conditions are needed.
    """
    a = condition_ranking(first).set_index("condition")["mean"]
    b = condition_ranking(second).set_index("condition")["mean"]
    shared = [c for c in a.index if c in b.index]
    if len(shared) < 3:
        raise ValueError(f"ranking_agreement needs at least 3 conditions in both studies; shared: {shared}")
    tau, p = stats.kendalltau(a[shared].to_numpy(), b[shared].to_numpy())
    return {"tau": float(tau), "p": float(p), "conditions": len(shared),
            "only_first": sorted(set(a.index) - set(shared)), "only_second": sorted(set(b.index) - set(shared))}
