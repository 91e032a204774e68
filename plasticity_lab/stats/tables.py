"""What every statistic of :mod:`plasticity_lab.stats` shares: the vocabulary of its arguments and the checks and
groupings of the tables it reads.

A table is identified run by run by its identity columns (``by=``, :data:`DEFAULT_BY` unless a caller adds e.g.
``variant``); only the identity columns present in a table are used, so the same call works on a table of one env
or of several.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd

from ..schema import RUN_KEYS, TIME_COLUMNS

#: Default run-identity columns (only those present in a table are used).
DEFAULT_BY: tuple[str, ...] = RUN_KEYS
#: The nine conditions of the paper's correlation / GLM analysis (3 shifts x 9 conditions = 27 points), in the
#: order of the release's list (its correlation's weighting depends on it:
#: :func:`~plasticity_lab.stats.release_points`).
ANALYSIS_CONDITIONS: tuple[str, ...] = (
    "warm_start",
    "reset_all",
    "shrink_perturb",
    "soft_shrink_perturb",
    "regen_l2",
    "l2",
    "reset_final",
    "injection",
    "redo",
)
#: How a run is summarised (``readout="project"``): the mean over rounds 2..R, which is how this project reads the
#: PROTOCOL's "mean over rounds" (round 1 is 0 by construction), or round R only (the paper's words "after ten
#: rounds").  ``readout="release"`` has its own summaries, the release's
#: (:func:`~plasticity_lab.stats.release_summary`, :func:`~plasticity_lab.stats.release_points`).
AT_CHOICES: tuple[str, ...] = ("mean", "final")
#: How per-round values are read: this project's rules or the authors' release's, step by step
#: (:mod:`plasticity_lab.stats`).
READOUTS: tuple[str, ...] = ("project", "release")
#: A column only a run summary has (a per-epoch table has ``epoch_in_round`` as well).
SUMMARY_MARKER = "normalised_train_return"


def check_option(name: str, value: Any, valid: Sequence[Any]) -> None:
    """Refuse an argument outside ``valid`` with one ``ValueError``: ``unknown name='value'; valid values are (...)``.

    The statistics keep this wording, with the value as ``name=value`` and the choices as a tuple, rather than
    :func:`plasticity_lab.schema.check_choice`'s, because their callers (the report, the tests) match it."""
    if value not in valid:
        raise ValueError(f"unknown {name}={value!r}; valid values are {tuple(valid)!r}")


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Refuse anything but a DataFrame holding ``columns``, naming the missing ones and those the table has."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: missing required column(s) {missing}; the table has columns {list(df.columns)}"
        )


def identity_keys(df: pd.DataFrame, by: Sequence[str] | str) -> list[str]:
    """The identity columns of ``by`` that ``df`` has, in ``by``'s order."""
    if isinstance(by, str):
        by = (by,)
    return [c for c in by if c in df.columns]


def epochs_per_round(df: pd.DataFrame) -> int:
    """E, the number of epochs of every round of a per-epoch table: ``max(epoch_in_round) + 1``."""
    if len(df) == 0:
        raise ValueError("the per-epoch table is empty")
    return int(df["epoch_in_round"].max()) + 1


def check_unique(df: pd.DataFrame, keys: list[str]) -> None:
    """Refuse a per-epoch table with several rows for one run's epoch: its identity columns ``keys`` miss one."""
    dup = df.duplicated(subset=keys + list(TIME_COLUMNS))
    if dup.any():
        row = df.loc[dup, keys + list(TIME_COLUMNS)].iloc[0].to_dict()
        raise ValueError(
            f"the table has several rows for the same run/round/epoch_in_round (e.g. {row}) with identity "
            f"columns by={tuple(keys)}; add the missing identity column(s) (e.g. 'variant') to by="
        )


def by_group(df: pd.DataFrame, keys: list[str]) -> Iterator[tuple[dict, pd.DataFrame]]:
    """``(identity dict, rows)`` for each group of ``df`` by ``keys`` (the whole table once when there are none)."""
    if not keys:
        yield {}, df
        return
    for values, rows in df.groupby(keys, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values)), rows


def is_summary(df: pd.DataFrame) -> bool:
    """Whether ``df`` is a run summary (one row per run) rather than a per-epoch table."""
    return SUMMARY_MARKER in df.columns and "epoch_in_round" not in df.columns


def select_conditions(present: Sequence[str], conditions: Sequence[str] | str | None, what: str) -> list[str]:
    """The analysis conditions to fit: ``conditions`` in its order (checked), else :data:`ANALYSIS_CONDITIONS`
    in its order, those present."""
    if conditions is None:
        conds = [c for c in ANALYSIS_CONDITIONS if c in present]
        if not conds:
            raise ValueError(
                f"{what}: none of the analysis conditions {ANALYSIS_CONDITIONS!r} is in the table "
                f"(conditions present: {tuple(present)!r}); pass conditions= explicitly"
            )
        return conds
    conds = [conditions] if isinstance(conditions, str) else list(conditions)
    bad = [c for c in conds if c not in present]
    if bad:
        raise ValueError(f"{what}: condition(s) {bad} not in the table; conditions present: {tuple(present)!r}")
    return conds

