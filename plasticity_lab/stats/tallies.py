"""The t-tests of several conditions against the two reference points, and their counts: how a chapter reads a
study at a glance.

Warm-start is "doing nothing"; reset-all, a network that starts fresh every round, is the paper's reference.
:func:`compare_conditions` tests each condition against both, per shift and split, and :func:`tally` counts in how
many of those pairs a condition is above or below each reference, and significantly so.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .hypothesis import condition_ttests


def compare_conditions(runs: pd.DataFrame, conditions: Sequence[str],
                       baselines: Sequence[str] = ("warm_start", "reset_all")) -> pd.DataFrame:
    """Each of ``conditions`` against each baseline present in ``runs`` (a run summary: a stored study's
    ``runs(at)`` or :func:`~plasticity_lab.stats.run_summary`), per shift and split: the rows of
    :func:`~plasticity_lab.stats.condition_ttests` with a ``baseline`` column.

    The sign of ``t`` is that of ``condition_ttests``: negative = the condition's normalised reward is higher than
    the baseline's.
    """
    present = set(runs["condition"])
    frames = []
    for baseline in baselines:
        if baseline not in present:
            continue
        others = [c for c in conditions if c in present and c != baseline]
        if not others:
            continue
        table = condition_ttests(runs[runs["condition"].isin([*others, baseline])], baseline=baseline)
        frames.append(table.assign(baseline=baseline))
    if not frames:
        raise ValueError(f"none of the baselines {list(baselines)} is in the table with another condition; "
                         f"present: {sorted(present)}")
    return pd.concat(frames, ignore_index=True)


def tally(comparisons: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Count :func:`compare_conditions`' rows per condition and baseline: ``comparisons`` (shift × split pairs),
    ``above`` / ``below`` (the condition's mean normalised reward is higher / lower than the baseline's), and how
    many of those differences are significant (``p < alpha``): ``significantly_above``, ``significantly_below``."""
    rows = []
    for (condition, baseline), part in comparisons.groupby(["condition", "baseline"], sort=False):
        above, below = part["mean"] > part["baseline_mean"], part["mean"] < part["baseline_mean"]
        significant = part["p"] < alpha
        rows.append({"condition": condition, "baseline": baseline, "comparisons": len(part),
                     "above": int(above.sum()), "below": int(below.sum()),
                     "significantly_above": int((above & significant).sum()),
                     "significantly_below": int((below & significant).sum())})
    return pd.DataFrame(rows).set_index(["condition", "baseline"])
