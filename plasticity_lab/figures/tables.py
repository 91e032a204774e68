"""What the figures over rounds and conditions check and pick in the tables they are given.

These figures draw tables from :func:`plasticity_lab.run` (or stored studies read with
:func:`plasticity_lab.load_results` and :meth:`~plasticity_lab.results.Results.epochs`) with several conditions and seeds:
one line per condition (the mean over seeds) and a band for the spread between seeds. They draw one environment
and one shift per table, name a missing column in their error, and order the conditions as the book's colours do
(:data:`~plasticity_lab.figures.style.CONDITION_COLORS`). The checks and the per-seed reductions they share are
here, so :mod:`~plasticity_lab.figures.curves` and :mod:`~plasticity_lab.figures.comparisons` agree on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..schema import RUN_KEYS
from ..shifts import SHIFTS
from ..stats import normalised_reward
from .style import BANDS, CONDITION_COLORS

__all__ = ["check_rounds", "check_table", "normalised_rounds", "over_seeds", "pick_conditions", "run_keys",
           "shifts_in_order"]


def check_table(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuse anything but a table of runs with ``condition``, ``seed`` and ``columns``, of one env and one
    shift: ``what`` (the figure) names itself in the error."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame (a table from plasticity_lab.run), "
                         f"got {type(df).__name__}")
    missing = [c for c in ("condition", "seed", *columns) if c not in df.columns]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing}; the table has {list(df.columns)}")
    for key in ("env", "shift"):
        if key in df.columns and df[key].nunique() > 1:
            raise ValueError(f"{what} draws one {key} at a time; the table has {sorted(df[key].unique())}: filter it")


def pick_conditions(df: pd.DataFrame, conditions: Sequence[str] | None) -> list[str]:
    """The conditions a figure draws: ``conditions`` (each must be in ``df``), or by default every condition of
    ``df``, those with a fixed colour first in that colour's order."""
    present = list(pd.unique(df["condition"]))
    if conditions is None:  # the conditions with a fixed colour first, in its order; then the table's order
        known = [c for c in CONDITION_COLORS if c in present]
        return known + [c for c in present if c not in known]
    conditions = [conditions] if isinstance(conditions, str) else list(conditions)
    missing = [c for c in conditions if c not in present]
    if missing:
        raise ValueError(f"condition(s) {missing} are not in the table; present: {present}")
    return conditions


def run_keys(df: pd.DataFrame) -> list[str]:
    """The columns of ``df`` that identify a run."""
    return [k for k in RUN_KEYS if k in df.columns]


def over_seeds(values: pd.DataFrame, x: str, band: str) -> pd.DataFrame:
    """Per ``x``: the mean of ``value`` over seeds and the band's bounds (``lo``, ``hi``)."""
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")
    g = values.dropna(subset=["value"]).groupby(x, sort=True)["value"]
    out = pd.DataFrame({"mean": g.mean(), "n": g.count()})
    if band == "std":
        std = g.std(ddof=1).fillna(0.0)
        out["lo"], out["hi"] = out["mean"] - std, out["mean"] + std
    elif band == "minmax":
        out["lo"], out["hi"] = g.min(), g.max()
    return out


def normalised_rounds(df: pd.DataFrame, window: int | None, offset: int | None) -> pd.DataFrame:
    """The per run × round normalised reward: computed from a per-epoch table, or taken as given."""
    if "epoch_in_round" in df.columns:
        keep = [c for c in df.columns if not c.startswith("normalised_")]  # recomputed, never read back
        return normalised_reward(df[keep], window=window, offset=offset)
    if window is not None or offset is not None:
        raise ValueError("window/offset apply to a per-epoch table; this table is already normalised")
    return df


def check_rounds(rounds: pd.DataFrame, metrics: Sequence[str], what: str) -> None:
    """Refuse anything but a stored study's ``rounds`` table with ``metrics``: ``what`` names the figure."""
    if not isinstance(rounds, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame (a stored study's rounds table), "
                         f"got {type(rounds).__name__}")
    missing = [c for c in ("shift", "condition", "seed", "round", *metrics) if c not in rounds.columns]
    if missing:
        raise ValueError(f"{what} needs column(s) {missing} (a stored study's `rounds` table, "
                         f"plasticity_lab.load_results(...).rounds); the table has {list(rounds.columns)}")


def shifts_in_order(table: pd.DataFrame) -> list[str]:
    """The shifts of a table, in the order of :data:`plasticity_lab.shifts.SHIFTS`, then any others."""
    present = list(pd.unique(table["shift"]))
    return [s for s in SHIFTS if s in present] + [s for s in present if s not in SHIFTS]
