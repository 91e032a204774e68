"""The run x round table: one row per run and round, built once from every epoch, and what is read from it.

:func:`round_table` is the table a stored study keeps as its ``rounds`` (:attr:`plasticity_lab.results.Results.rounds`,
written by :func:`plasticity_lab.results.summarise` before the curves are subsampled, because the read-outs need every
epoch): the project's read-outs and normalised rewards, the round means of the returns and diagnostics, the
diagnostics' read-outs and the release's read-outs.  :func:`round_summary` is the same table in the compact shape of
a run's printout (``plasticity_lab.round_summary``), and :func:`rounds_summary` averages a window of its rounds per
run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..schema import DIAGNOSTICS, TIME_COLUMNS
from .readouts import normalised_reward, round_readout
from .release import release_readouts
from .tables import DEFAULT_BY, identity_keys, require_columns


def round_table(
    df: pd.DataFrame,
    by: Sequence[str] = DEFAULT_BY,
    diagnostics: Sequence[str] = DIAGNOSTICS,
) -> pd.DataFrame:
    """One row per run x round of a per-epoch table, with everything the statistics and figures read per round.

    Columns, after the identity columns and ``round``:

    * ``train_readout``, ``test_readout``, ``normalised_train_return``, ``normalised_test_return`` — the project's
      read-outs and normalised rewards (:func:`~plasticity_lab.stats.normalised_reward`);
    * ``train_mean``, ``test_mean`` — each return's mean over the round's epochs (the test return's over its
      evaluations);
    * each diagnostic, its mean over the round's epochs, then each ``<diagnostic>_readout``, read as the reward is
      (:func:`~plasticity_lab.stats.round_readout`);
    * ``train_release_readout``, ``test_release_readout`` and ``<diagnostic>_release_readout`` — the authors'
      release's unsmoothed read-outs (:func:`~plasticity_lab.stats.release_readouts`), which ``readout="release"``
      reads from a stored study.

    Every read-out needs single epochs, so this is built from the per-epoch table (a stored study builds it before
    subsampling its curves).  Diagnostics absent from the table are skipped.
    """
    require_columns(df, list(TIME_COLUMNS) + ["train_return", "test_return"], "round_table")
    keys = identity_keys(df, by)
    diags = [d for d in diagnostics if d in df.columns]
    out = normalised_reward(df, by=keys)
    means = df.groupby([*keys, "round"])[["train_return", "test_return", *diags]].mean().reset_index()
    out = out.merge(means.rename(columns={"train_return": "train_mean", "test_return": "test_mean"}),
                    on=[*keys, "round"])
    for metric in diags:
        readout = round_readout(df, metric, by=keys).rename(columns={metric: f"{metric}_readout"})
        out = out.merge(readout, on=[*keys, "round"])
    return out.merge(release_readouts(df, by=keys, diagnostics=diags), on=[*keys, "round"])


def round_summary(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run and round of a per-epoch table (what :func:`plasticity_lab.run` returns): the round's mean
    train and test return, the normalised rewards and the round's mean diagnostics.

    A view of :func:`round_table`, in the shape of a run's printout: its round means under the per-epoch table's
    names (``train_return``, ``test_return`` and the diagnostics) and the normalised rewards, without the read-outs.
    """
    table = round_table(df)
    keys = identity_keys(table, DEFAULT_BY)
    table = table.rename(columns={"train_mean": "train_return", "test_mean": "test_return"})
    columns = ["train_return", "test_return", "normalised_train_return", "normalised_test_return",
               *[d for d in DIAGNOSTICS if d in table.columns]]
    return table[[*keys, "round", *columns]]


def rounds_summary(
    rounds: pd.DataFrame,
    first: int = 2,
    last: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    diagnostics: Sequence[str] = DIAGNOSTICS,
) -> pd.DataFrame:
    """One row per run, its rounds ``first..last`` averaged: :func:`~plasticity_lab.stats.run_summary`'s
    ``at="mean"`` over a window of rounds, read from a run x round table (:func:`round_table`, which a stored study
    keeps as :attr:`plasticity_lab.results.Results.rounds`).

    Each normalised reward is the mean of its per-round read-outs over the window; each diagnostic the mean of
    its per-round means (every round has the same number of epochs, so this is its mean over the window's epochs).
    With ``first=2`` and ``last`` the run's last round this is the stored ``runs("mean")`` table; a window such
    as rounds 11..20 of a 20-round study asks whether a gap seen in the first ten rounds persists.
    ``last=None`` means each run's last round. Runs that end before ``last`` are an error, not a shorter window.
    Columns as :func:`~plasticity_lab.stats.run_summary`: identity, ``n_rounds`` (the window's last round), both
    normalised rewards, then the diagnostics present.
    """
    if not isinstance(rounds, pd.DataFrame):
        raise ValueError(f"rounds_summary expects a pandas DataFrame, got {type(rounds).__name__}")
    require_columns(rounds, ["round", "normalised_train_return", "normalised_test_return"], "rounds_summary")
    keys = identity_keys(rounds, by)
    if isinstance(first, bool) or not isinstance(first, (int, np.integer)) or first < 1:
        raise ValueError(f"first must be a round number >= 1; got {first!r}")
    ends = rounds.groupby(keys, dropna=False, sort=True)["round"].max() if keys else rounds["round"].max()
    if last is not None:
        if isinstance(last, bool) or not isinstance(last, (int, np.integer)) or last < first:
            raise ValueError(f"last must be a round number >= first ({first}); got {last!r}")
        short = int(np.min(ends))
        if short < last:
            raise ValueError(f"last={last} but some runs end at round {short}; valid: {first}..{short}")
    cols = ["normalised_train_return", "normalised_test_return"] + [c for c in diagnostics if c in rounds.columns]
    part = rounds[(rounds["round"] >= first) & (rounds["round"] <= (np.inf if last is None else last))]
    if part.empty:
        raise ValueError(f"no run has rounds {first}..{last if last is not None else 'its last'}")
    if keys:
        out = part.groupby(keys, dropna=False, sort=True)[cols].mean()
        out.insert(0, "n_rounds", ends.reindex(out.index) if last is None else last)
        out = out.reset_index()
    else:
        out = part[cols].mean().to_frame().T
        out.insert(0, "n_rounds", int(ends) if last is None else last)
    out.attrs.update(at="mean", first=first, last=last)
    return out
