"""Aggregate statistics per condition with percentile-bootstrap confidence intervals, for aggregate plots and the
report: the interquartile mean (IQM), mean or median of the runs, with ``rliable`` where it imports and
``scipy.stats.bootstrap`` otherwise.

``rliable`` is optional (the ``stats`` extra) and imported only when a bootstrap runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .tables import check_option, require_columns

#: Aggregate statistics offered by :func:`aggregate_ci`.
STATISTICS: tuple[str, ...] = ("iqm", "mean", "median")


def rliable_available() -> bool:
    """True if ``rliable`` (and its ``arch`` dependency) imports in this environment."""
    try:
        import rliable.library  # noqa: F401
        import rliable.metrics  # noqa: F401
    except Exception:
        return False
    return True


def aggregate_ci(
    values_by_condition: Mapping[str, Sequence[float]] | pd.DataFrame,
    statistic: str = "iqm",
    confidence: float = 0.95,
    reps: int = 10_000,
    seed: int | None = 0,
    value: str | None = None,
    group: str | Sequence[str] = "condition",
    backend: str = "auto",
    strata: str | None = None,
) -> pd.DataFrame:
    """Point estimate and percentile-bootstrap CI of an aggregate statistic, per condition.

    ``statistic``: ``"iqm"`` (interquartile mean = 25% trimmed mean, ``scipy.stats.trim_mean(x, 0.25)``),
    ``"mean"`` or ``"median"``.  ``values_by_condition`` is a mapping ``condition -> per-run values`` or a
    DataFrame (e.g. :func:`~plasticity_lab.stats.run_summary`) with a ``value`` column grouped by ``group``.  NaNs are
    dropped.

    ``backend="auto"`` uses ``rliable`` (``library.get_interval_estimates`` with ``metrics.aggregate_iqm`` /
    ``aggregate_mean`` / ``aggregate_median``, stratified bootstrap over runs, percentile method) when it
    imports, else ``scipy.stats.bootstrap`` (percentile method) on the same statistic; ``"rliable"`` or
    ``"scipy"`` forces one.  Deterministic given ``seed``: each condition is bootstrapped with a fresh RNG
    seeded with ``seed`` (``default_rng`` for scipy; for rliable, whose resampling draws from NumPy's global
    legacy generator, the global state is seeded for the call and restored afterwards), so a condition's CI
    does not depend on which other conditions are passed and the caller's global RNG is left untouched.  Fewer than 2
    values give NaN CI.

    ``strata`` (a DataFrame column, e.g. ``"shift"``) pools the runs of several tasks the way rliable does: the
    statistic is taken over every run of every task at once, and the bootstrap resamples runs *within* each task
    (a stratified bootstrap: rliable's ``StratifiedBootstrap`` over a runs × tasks matrix, or
    ``scipy.stats.bootstrap`` with one sample per task, each resampled on its own).  rliable needs the same
    number of runs in every task: ``backend="auto"`` uses scipy when they differ.
    Returns columns ``<group>, statistic, estimate, ci_low, ci_high, n``; ``.attrs['backend']`` says which
    library ran.
    """
    check_option("statistic", statistic, STATISTICS)
    check_option("backend", backend, ("auto", "rliable", "scipy"))
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if int(reps) < 1:
        raise ValueError(f"reps must be >= 1, got {reps}")
    gcols = [group] if isinstance(group, str) else list(group)
    if strata is not None and not isinstance(values_by_condition, pd.DataFrame):
        raise ValueError("aggregate_ci with strata= needs a DataFrame with that column")
    if isinstance(values_by_condition, pd.DataFrame):
        if value is None:
            raise ValueError("aggregate_ci with a DataFrame needs value= (the column to aggregate)")
        require_columns(values_by_condition, gcols + [value] + ([strata] if strata else []), "aggregate_ci")

        def samples(g: pd.DataFrame) -> list[np.ndarray]:
            if strata is None:
                return [g[value].to_numpy(float)]
            return [t[value].to_numpy(float) for _, t in g.groupby(strata, sort=True)]

        items = [
            (k, samples(g))
            for k, g in values_by_condition.groupby(gcols if len(gcols) > 1 else gcols[0], sort=False)
        ]
    elif isinstance(values_by_condition, Mapping):
        items = [(k, [np.asarray(v, dtype=float).ravel()]) for k, v in values_by_condition.items()]
    else:
        raise ValueError(
            f"aggregate_ci expects a mapping condition -> values or a DataFrame, got {type(values_by_condition).__name__}"
        )
    items = [(key, [x for x in (part[np.isfinite(part)] for part in parts) if len(x)]) for key, parts in items]
    if backend == "auto":
        # rliable takes a runs × tasks matrix: strata of unequal sizes go to scipy
        even = all(len({len(part) for part in parts}) <= 1 for _, parts in items)
        backend = "rliable" if rliable_available() and even else "scipy"
    elif backend == "rliable" and not rliable_available():
        raise ValueError("backend='rliable' requested but rliable does not import; valid here: ('auto', 'scipy')")

    rows = []
    for key, parts in items:
        x = np.concatenate(parts) if parts else np.array([])
        est, lo, hi = np.nan, np.nan, np.nan
        if len(x):
            est = float(_SCIPY_STATS[statistic](x, axis=0))
        if all(len(part) >= 2 for part in parts) and len(x) >= 2:
            if backend == "rliable":
                if len({len(part) for part in parts}) > 1:
                    raise ValueError(f"aggregate_ci: rliable needs the same number of runs in every stratum; "
                                     f"{key!r} has {[len(part) for part in parts]} (use backend='scipy')")
                est, lo, hi = _rliable_ci(np.stack(parts, axis=1), statistic, confidence, int(reps), seed)
            else:
                lo, hi = _scipy_ci(parts, statistic, confidence, int(reps), seed)
        ident = dict(zip(gcols, key if isinstance(key, tuple) else (key,)))
        rows.append({**ident, "statistic": statistic, "estimate": est, "ci_low": lo, "ci_high": hi, "n": len(x)})
    out = pd.DataFrame(rows, columns=gcols + ["statistic", "estimate", "ci_low", "ci_high", "n"])
    out.attrs.update(backend=backend, confidence=confidence, reps=int(reps), seed=seed, method="percentile",
                     strata=strata)
    return out


def _iqm(x, axis=0):
    return stats.trim_mean(x, 0.25, axis=axis)


_SCIPY_STATS = {"iqm": _iqm, "mean": np.mean, "median": np.median}


def _scipy_ci(parts: list[np.ndarray], statistic: str, confidence: float, reps: int, seed) -> tuple[float, float]:
    """``parts``: one sample per stratum, each resampled on its own (``paired=False``); the statistic is taken
    over all of them together."""
    def pooled(*samples, axis=-1):
        return _SCIPY_STATS[statistic](np.concatenate(samples, axis=axis), axis=axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate samples (all equal) warn; the interval is still returned
        res = stats.bootstrap(
            tuple(parts),
            pooled,
            n_resamples=reps,
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            axis=-1,
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _rliable_ci(x: np.ndarray, statistic: str, confidence: float, reps: int, seed) -> tuple[float, float, float]:
    """``x``: a runs × tasks matrix; runs are resampled within each task."""
    from rliable import library as rly
    from rliable import metrics

    # rliable's aggregate_mean / aggregate_median are the mean / median over *tasks* of per-task means over runs;
    # with a single task both would be the run mean, so the per-run median is taken with np.median instead.
    agg = {"iqm": metrics.aggregate_iqm, "mean": metrics.aggregate_mean, "median": np.median}[statistic]
    # rliable 1.2's StratifiedBootstrap.update_indices draws from NumPy's *global* legacy generator (it ignores
    # random_state), so the global state is seeded for the call and restored afterwards.
    saved = np.random.get_state()
    try:
        np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # arch's FutureWarning about RandomState
            point, interval = rly.get_interval_estimates(
                {"x": x},  # (num_runs, num_tasks)
                lambda s: np.array([agg(s)]),
                method="percentile",
                reps=reps,
                confidence_interval_size=confidence,
                random_state=np.random.RandomState(seed),
            )
    finally:
        np.random.set_state(saved)
    return float(point["x"][0]), float(interval["x"][0, 0]), float(interval["x"][1, 0])
