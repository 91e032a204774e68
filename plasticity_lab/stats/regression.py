"""Normalised reward related to the diagnostics (PROTOCOL, "Statistics"): a straight line per diagnostic across
shift x condition points, and the Gaussian GLM on all of them at once.

The paper's headline is that weight magnitude and dead units are significant predictors of the reward a condition
keeps.  A point is a shift x condition mean over seeds (27 in the paper's gridworld analysis: 3 shifts x the nine
:data:`~plasticity_lab.stats.ANALYSIS_CONDITIONS`) or, with ``unit="seed"``, one run; ``readout="release"`` fits
the release's points instead (:func:`~plasticity_lab.stats.release_points`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..schema import DIAGNOSTICS, SPLITS
from .readouts import as_run_summary, resolve_at
from .release import release_points_for
from .tables import (
    DEFAULT_BY,
    READOUTS,
    by_group,
    check_option,
    identity_keys,
    require_columns,
    select_conditions,
)

#: Unit of observation for the GLM: shift x condition means, or individual runs (seeds).
UNITS: tuple[str, ...] = ("condition", "seed")


def _points(
    df: pd.DataFrame,
    split: str,
    at: str | None,
    unit: str,
    conditions: Sequence[str] | None,
    diagnostics: Sequence[str],
    window,
    offset,
    by,
    what: str,
    readout: str = "project",
) -> tuple[pd.DataFrame, list[str], str, str]:
    """``(points, group keys, reward column, at)``: per-run rows (unit="seed") or shift x condition means over
    seeds (unit="condition") for the project's read-out; the release's points
    (:func:`~plasticity_lab.stats.release_points`) for its."""
    at = resolve_at(at, readout, default="final", window=window)
    check_option("split", split, SPLITS)
    check_option("unit", unit, UNITS)
    ycol = f"normalised_{split}_return"
    if readout == "release":
        if unit != "condition":
            raise ValueError(f"{what}: readout='release' fits the release's shift x condition points; "
                             f"unit={unit!r} has no release counterpart (use unit='condition')")
        points = release_points_for(df, split, conditions, diagnostics, offset, by, what)
        keys = identity_keys(points, by)
        return points, [k for k in keys if k not in ("shift", "condition", "seed")], ycol, at
    s = as_run_summary(df, at, window, offset, by, what)
    require_columns(s, ["condition", ycol] + list(diagnostics), what)
    conds = select_conditions(list(pd.unique(s["condition"])), conditions, what)
    s = s[s["condition"].isin(conds)]
    keys = identity_keys(s, by)
    if unit == "condition":
        mkeys = [k for k in keys if k != "seed"]
        s = s.groupby(mkeys, dropna=False, sort=True)[[ycol] + list(diagnostics)].mean().reset_index()
    return s.reset_index(drop=True), [k for k in keys if k not in ("shift", "condition", "seed")], ycol, at


def analysis_points(
    df: pd.DataFrame,
    split: str = "train",
    at: str | None = None,
    unit: str = "condition",
    conditions: Sequence[str] | None = None,
    diagnostics: Sequence[str] = DIAGNOSTICS,
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    readout: str = "project",
) -> pd.DataFrame:
    """The points that :func:`diagnostic_correlations` and :func:`diagnostics_glm` fit: one row per shift x
    condition (``unit="condition"``, means over seeds) or per run (``unit="seed"``), with the run-identity
    columns, ``normalised_<split>_return`` and the diagnostics.  Arguments as in :func:`diagnostics_glm`;
    ``readout="release"`` gives :func:`~plasticity_lab.stats.release_points`.
    """
    points, _, _, at = _points(df, split, at, unit, conditions, diagnostics, window, offset, by, "analysis_points",
                               readout)
    points.attrs.update(at=at, split=split, unit=unit, readout=readout)
    return points


def diagnostic_correlations(
    df: pd.DataFrame,
    at: str | None = None,
    conditions: Sequence[str] | None = None,
    diagnostics: Sequence[str] = DIAGNOSTICS,
    split: str = "train",
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    readout: str = "project",
) -> pd.DataFrame:
    """Linear fit of normalised reward on each diagnostic across shift x condition points (PROTOCOL, "Statistics").

    Points are shift x condition means over seeds — 3 shifts x 9 conditions = 27 in the paper's gridworld
    analysis.  ``conditions`` defaults to :data:`~plasticity_lab.stats.ANALYSIS_CONDITIONS` (those present).  What a
    point holds depends on ``readout``:

    * ``"project"`` (default): the means of :func:`~plasticity_lab.stats.run_summary` — diagnostics as levels.  ``at``
      defaults to ``"final"``, the paper's words "after ten rounds" (round R's read-outs); ``"mean"`` is the project's
      clean mean over rounds 2..R, each round once.
    * ``"release"``: :func:`~plasticity_lab.stats.release_points` — diagnostics relative to round 1 like reward,
      unsmoothed read-outs, the test curve stretched, and the release's "mean over rounds", which over-weights round R
      more the later a condition comes in ``conditions`` (so the order of ``conditions`` matters).  ``at`` must be
      ``"mean"`` (or None) and ``window`` None.

    For each diagnostic: ``scipy.stats.linregress`` slope and intercept, Pearson ``r`` and two-sided ``p``
    (``scipy.stats.pearsonr``), ``r2 = r**2`` (the release's R² of its ``np.polyfit`` line is the same number),
    ``n_points`` and ``significant = p < 0.05`` (the paper's bold).  Points with NaN are dropped per diagnostic;
    fewer than 3 points or a constant diagnostic give NaN statistics.  With several envs (or other identity
    columns besides shift/condition/seed) one fit per env is returned.  Accepts a per-epoch table or a run
    summary (``readout="release"``: a per-epoch table or a per-round table holding the release's read-outs).
    """
    pts, gkeys, ycol, at = _points(
        df, split, at, "condition", conditions, diagnostics, window, offset, by, "diagnostic_correlations", readout
    )
    rows = []
    for ident, g in by_group(pts, gkeys):
        for diag in diagnostics:
            xy = g[[diag, ycol]].dropna()
            x, y = xy[diag].to_numpy(float), xy[ycol].to_numpy(float)
            row = {**ident, "split": split, "diagnostic": diag, "n_points": len(x)}
            if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
                lr = stats.linregress(x, y)
                pr = stats.pearsonr(x, y)
                r, p = float(pr.statistic), float(pr.pvalue)
                row.update(slope=float(lr.slope), intercept=float(lr.intercept), r=r, r2=r * r, p=p)
            else:
                row.update(slope=np.nan, intercept=np.nan, r=np.nan, r2=np.nan, p=np.nan)
            row["significant"] = bool(row["p"] < 0.05) if np.isfinite(row["p"]) else False
            rows.append(row)
    cols = gkeys + ["split", "diagnostic", "slope", "intercept", "r", "r2", "p", "n_points", "significant"]
    out = pd.DataFrame(rows, columns=cols)
    out.attrs.update(at=at, split=split, readout=readout)
    return out


def diagnostics_glm(
    df: pd.DataFrame,
    split: str = "train",
    at: str | None = None,
    unit: str = "condition",
    conditions: Sequence[str] | None = None,
    diagnostics: Sequence[str] = DIAGNOSTICS,
    env: str | None = None,
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    readout: str = "project",
) -> pd.DataFrame:
    """Gaussian GLM (identity link) of normalised reward on a constant + the diagnostics (PROTOCOL, "Statistics").

    Fitted with ``statsmodels.api.GLM(y, X, family=Gaussian())``; the scale is statsmodels' default Pearson
    chi²/(n − k) (= residual sum of squares / (n − k)), so coefficients equal OLS and standard errors are the
    OLS ones; z and p use the normal distribution, CI is 95% (the release fits ``sm.GLM`` with its default,
    Gaussian, family).  ``unit="condition"`` fits the shift x condition means over seeds (27 points in the
    paper), ``unit="seed"`` fits one point per run.  The paper's headline: weight magnitude and dead units are
    significant (p < 0.05) predictors.

    ``readout`` and ``at`` as in :func:`diagnostic_correlations`: ``"project"`` with ``at="final"`` by default
    (diagnostic levels), or ``"release"`` (:func:`~plasticity_lab.stats.release_points`; ``unit="condition"`` only, as
    in the release).

    Fit one env at a time: if the table has several envs (or other identity groups), pass ``env=`` or filter.
    Rows with NaN are dropped.  Returns a DataFrame indexed by term (``const`` then each diagnostic) with
    columns ``coef, std_err, z, p, ci_low, ci_high``; ``.attrs`` holds ``n`` (observations), ``df_resid``,
    ``deviance``, ``scale``, ``llf``, ``aic``, ``split``, ``at``, ``unit``.
    """
    import statsmodels.api as sm

    check_option("readout", readout, READOUTS)
    if env is not None:
        require_columns(df, ["env"], "diagnostics_glm")
        if env not in set(df["env"]):
            raise ValueError(f"env={env!r} is not in the table; envs present: {tuple(pd.unique(df['env']))!r}")
        df = df[df["env"] == env]
    pts, gkeys, ycol, at = _points(df, split, at, unit, conditions, diagnostics, window, offset, by,
                                   "diagnostics_glm", readout)
    if gkeys and len(pts[gkeys].drop_duplicates()) > 1:
        found = pts[gkeys].drop_duplicates().to_dict("records")
        raise ValueError(f"diagnostics_glm fits one group at a time; the table has {found}: pass env= or filter it")
    data = pts[[ycol] + list(diagnostics)].dropna()
    k = len(diagnostics) + 1
    if len(data) <= k:
        raise ValueError(f"diagnostics_glm needs more than {k} complete points, got {len(data)}")
    X = sm.add_constant(data[list(diagnostics)].astype(float), has_constant="add")
    res = sm.GLM(data[ycol].astype(float), X, family=sm.families.Gaussian()).fit()
    ci = res.conf_int(alpha=0.05)
    out = pd.DataFrame(
        {
            "coef": res.params,
            "std_err": res.bse,
            "z": res.tvalues,
            "p": res.pvalues,
            "ci_low": ci.iloc[:, 0],
            "ci_high": ci.iloc[:, 1],
        }
    )
    out.index.name = "term"
    out.attrs.update(
        n=int(res.nobs),
        df_resid=float(res.df_resid),
        deviance=float(res.deviance),
        scale=float(res.scale),
        llf=float(res.llf),
        aic=float(res.aic),
        split=split,
        at=at,
        unit=unit,
        readout=readout,
    )
    return out
