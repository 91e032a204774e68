"""Compact views of a per-epoch results table."""

from __future__ import annotations

import pandas as pd

from .schema import RUN_KEYS


def round_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and round: mean train/test return over the round, the normalised rewards and the
    round's mean diagnostics."""
    keys = [k for k in RUN_KEYS if k in df.columns] + ["round"]
    value_columns = [c for c in ("train_return", "test_return", "normalised_train_return", "normalised_test_return",
                                 "entropy", "weight_magnitude", "dead_units") if c in df.columns]
    return df.groupby(keys, sort=True)[value_columns].mean().reset_index()
