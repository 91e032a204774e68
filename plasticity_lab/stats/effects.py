"""Effect sizes: how far apart two conditions are in units of the spread between their seeds.

Cohen's d, ``(mean_condition − mean_baseline) / s_pooled`` with
``s_pooled² = ((n₁−1)s₁² + (n₂−1)s₂²) / (n₁+n₂−2)`` (sample variances over seeds), read round by round: a
p-value says whether a gap is there at all, d how large it is against the noise between seeds, which is what
tells whether a figure's separation is worth reading.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def cohens_d(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Cohen's d of ``x`` against ``y`` with the pooled sample standard deviation (positive: ``x`` is higher); NaN
    below 2 values a side or without any spread."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or len(y) < 2:
        return np.nan
    pooled = ((len(x) - 1) * x.var(ddof=1) + (len(y) - 1) * y.var(ddof=1)) / (len(x) + len(y) - 2)
    return (x.mean() - y.mean()) / np.sqrt(pooled) if pooled > 0 else np.nan


def cohens_d_by_round(per_round: pd.DataFrame, metrics: Sequence[str], condition: str,
                      baseline: str) -> pd.DataFrame:
    """:func:`cohens_d` of ``condition`` against ``baseline`` per round: ``per_round`` has one row per run x round
    (e.g. a stored study's ``rounds``, or :func:`~plasticity_lab.stats.round_table`) with ``round``, ``condition``
    and the ``metrics``; NaN values are left out.  Returns one row per round (the index), one column per metric;
    ``.attrs`` holds condition and baseline."""
    rows = {}
    for round_, g in per_round.groupby("round", sort=True):
        a, b = g[g["condition"] == condition], g[g["condition"] == baseline]
        rows[round_] = {m: cohens_d(a[m].dropna().to_numpy(float), b[m].dropna().to_numpy(float))
                        for m in metrics}
    out = pd.DataFrame.from_dict(rows, orient="index")[list(metrics)]
    out.index.name = "round"
    out.attrs.update(condition=condition, baseline=baseline)
    return out
