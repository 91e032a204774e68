"""The project's read-out: a curve read once per round, the normalised reward, and a run summarised.

This module implements the PROTOCOL's "Metrics" section (the normalised-reward rule) as this project reads it, each
rule stated with its reason where it is applied: curves smoothed within a round before they are read, the sparse test
curve forward-filled within its round, a run summarised over rounds 2..R (or at round R), diagnostics taken as
levels.  The authors' release reads the same curves its own way (:mod:`plasticity_lab.stats.release`); the
statistics choose between the two with ``readout=``, and :func:`run_summary` / :func:`as_run_summary` hand the
release's summary on when it is asked for.

The input is the runner's tidy per-epoch table, one row per (run, epoch), with columns

* run identity — ``env, shift, condition, seed`` by default (pass ``by=`` to add e.g. ``variant``; only the
  names present in the table are used),
* ``round`` (1-based), ``epoch`` (0-based, global), ``epoch_in_round`` (0-based),
* ``train_return``, ``test_return`` (NaN on epochs with no test evaluation),
* the diagnostics ``entropy, weight_magnitude, weight_difference, grad_norm, dead_units``.

Every round has the same number of epochs ``E`` (inferred as ``max(epoch_in_round) + 1``).  Smoothing works
on rows in ``epoch_in_round`` order, so the table must hold one row per epoch (no sub-sampling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..schema import DIAGNOSTICS, SPLITS, TIME_COLUMNS
from .release import as_release_summary, release_summary
from .tables import (
    AT_CHOICES,
    DEFAULT_BY,
    READOUTS,
    check_option,
    check_unique,
    epochs_per_round,
    identity_keys,
    is_summary,
    require_columns,
)


def readout_defaults(epochs_per_round: int) -> tuple[int, int]:
    """Return ``(window, offset)`` for reading a curve once per round, scaled from paper scale.

    The PROTOCOL ("Metrics", normalised reward) smooths each curve with a 20-epoch moving average and reads it
    50 epochs before each shift (and 50 before the end) at paper scale, E = 5000 epochs per round, and says to
    scale with the preset.  Scaling both numbers linearly would shrink the window to a single epoch at small
    scale, so the window keeps a useful floor::

        window = max(round(20 * E / 5000), min(20, max(1, E // 10)))
        offset = max(round(50 * E / 5000), window)

    The read point is ``epoch_in_round = E - offset``.  Clamps, so that the read point and the centred window
    stay inside the round: the offset is at most ``E - 1`` (the read point is never epoch 0 of a round, i.e.
    never the first epoch after a shift), and the window is at most ``E`` and at most ``2 * offset`` (so the
    centred window, which reaches ``window // 2`` epochs past the read point, ends inside the round).  With the
    formula above the clamps only bind at tiny E; E = 1 gives ``(1, 1)`` (reading the single epoch).

    Examples: E = 5000 -> (20, 50); E = 300 -> (20, 20); E = 10 -> (1, 1).
    """
    E = int(epochs_per_round)
    if E < 1:
        raise ValueError(f"epochs_per_round must be >= 1, got {epochs_per_round!r}")
    window = max(round(20 * E / 5000), min(20, max(1, E // 10)))
    offset = max(round(50 * E / 5000), window)
    offset = min(offset, max(E - 1, 1))
    window = max(1, min(window, E, 2 * offset))
    return int(window), int(offset)


def _resolve_window_offset(E: int, window: int | None, offset: int | None) -> tuple[int, int]:
    dw, do = readout_defaults(E)
    window = dw if window is None else int(window)
    offset = do if offset is None else int(offset)
    if window < 1:
        raise ValueError(f"window must be >= 1 epoch, got {window}")
    if not 1 <= offset <= E:
        raise ValueError(f"offset must be in [1, E={E}] so the read point E - offset lies in the round, got {offset}")
    return window, offset


def _smoothed(df: pd.DataFrame, metric: str, keys: list[str], window: int, ffill: bool) -> pd.Series:
    """Centred moving average of ``metric`` within each run x round (``df`` must be sorted)."""
    groups = keys + ["round"]
    values = df[metric].astype(float)
    if ffill:
        values = values.groupby([df[g] for g in groups], dropna=False, sort=False).ffill()
    return values.groupby([df[g] for g in groups], dropna=False, sort=False).transform(
        lambda s: s.rolling(window, center=True, min_periods=1).mean()
    )


def round_readout(
    df: pd.DataFrame,
    metric: str,
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    ffill: bool | None = None,
) -> pd.DataFrame:
    """Read ``metric`` once per run x round, as the PROTOCOL's normalised-reward rule ("Metrics") prescribes.

    Within each round (never across a shift) the curve is smoothed by a **centred** moving average of
    ``window`` epochs with ``min_periods=1`` — at the round's edges the average uses the epochs that exist
    inside the round — and read at ``epoch_in_round = E - offset`` ("offset epochs before the shift / end").
    ``window`` and ``offset`` default to :func:`readout_defaults` of the table's E.

    Why smooth: one epoch's return is the mean of a handful of episodes (about 11 in the gridworld), so a single
    epoch is a noisy read-out; the PROTOCOL's normalised-reward rule smooths.  (The authors' release smooths only
    its figures and tests single-epoch values: :func:`~plasticity_lab.stats.release_readouts`.)

    ``test_return`` is sparse (evaluated every test interval), so it is first forward-filled within the round:
    an epoch's value is the most recent test evaluation of that round, and epochs before the round's first
    evaluation stay NaN.  ``ffill`` overrides this (default: True for ``test_return`` only).  Why: a read-out
    taken before a shift must describe that round's agent on that round's test levels, so nothing evaluated
    after the shift may enter it.  (The release stretches the sparse curve over the whole run with
    ``np.linspace``, which mixes the evaluation just after a shift into the read-out before it:
    :func:`~plasticity_lab.stats.release_readouts`.)

    Returns one row per run x round with the identity columns, ``round`` and the readout under the metric's
    name (NaN if the read epoch is absent, e.g. an unfinished round).  ``.attrs`` holds window, offset,
    read_epoch and epochs_per_round.
    """
    keys = identity_keys(df, by)
    require_columns(df, list(TIME_COLUMNS) + [metric], "round_readout")
    if "epochs_averaged" in df.columns and (df["epochs_averaged"] > 1).any():
        raise ValueError("round_readout: this table holds subsampled curves (epochs_averaged > 1), whose smoothing "
                         "windows would be wrong; use a stored study's rounds / runs(at) tables instead")
    E = epochs_per_round(df)
    window, offset = _resolve_window_offset(E, window, offset)
    if ffill is None:
        ffill = metric == "test_return"
    check_unique(df, keys)
    d = df.sort_values(keys + list(TIME_COLUMNS), kind="stable").reset_index(drop=True)
    smooth = _smoothed(d, metric, keys, window, ffill)
    read_epoch = E - offset
    runs = d[keys + ["round"]].drop_duplicates().reset_index(drop=True)
    at_read = d.loc[d["epoch_in_round"] == read_epoch, keys + ["round"]].assign(**{metric: smooth})
    out = runs.merge(at_read, on=keys + ["round"], how="left")
    out = out.sort_values(keys + ["round"], kind="stable").reset_index(drop=True)
    out.attrs.update(window=window, offset=offset, read_epoch=read_epoch, epochs_per_round=E, metric=metric)
    return out


def normalised_reward(
    df: pd.DataFrame,
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
) -> pd.DataFrame:
    """Normalised reward per run x round (PROTOCOL, "Metrics": normalised reward).

    ``normalised_<split>_return(round r) = readout(round r) - readout(round 1)`` of the same run, with the
    readout of :func:`round_readout` (smoothed, read ``offset`` epochs before the shift/end).  It is a
    **difference, not a ratio**: round 1 is exactly 0, positive = better than after round 1 (plasticity kept),
    negative = plasticity lost.  Columns: identity, ``round``, ``train_readout``, ``test_readout``,
    ``normalised_train_return``, ``normalised_test_return``.  A run without a round-1 readout gets NaN.
    """
    require_columns(df, list(TIME_COLUMNS) + ["train_return", "test_return"], "normalised_reward")
    keys = identity_keys(df, by)
    tr = round_readout(df, "train_return", window, offset, by=keys)
    te = round_readout(df, "test_return", window, offset, by=keys)
    out = tr.rename(columns={"train_return": "train_readout"}).merge(
        te.rename(columns={"test_return": "test_readout"}), on=keys + ["round"], how="outer"
    )
    for split in SPLITS:
        col = f"{split}_readout"
        base = out.loc[out["round"] == 1, keys + [col]].rename(columns={col: "_base"})
        if keys:
            b = out[keys].merge(base, on=keys, how="left")["_base"].to_numpy()
        else:
            b = np.full(len(out), base["_base"].iloc[0] if len(base) else np.nan)
        out[f"normalised_{split}_return"] = out[col].to_numpy() - b
    out = out.sort_values(keys + ["round"], kind="stable").reset_index(drop=True)
    out.attrs.update(tr.attrs)
    out.attrs.pop("metric", None)
    return out


def run_summary(
    df: pd.DataFrame,
    at: str | None = "mean",
    window: int | None = None,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    diagnostics: Sequence[str] = DIAGNOSTICS,
    readout: str = "project",
) -> pd.DataFrame:
    """One row per run: normalised reward and diagnostics summarised over the run (PROTOCOL, "Statistics").

    ``readout="project"`` (default), on the read-outs of :func:`normalised_reward`:

    * ``at="mean"`` — the PROTOCOL's "mean over rounds of normalised reward" as this project reads it: each
      normalised reward averaged over rounds 2..R.  Round 1 is left out because it is 0 by construction in every
      run (it would only scale every value by (R − 1)/R); round R is in, because the last round is where a loss
      of plasticity has had longest to show.  Each diagnostic is its mean over all epochs of rounds 2..R: every
      logged value rather than one read-out, and a *level*, not a change from round 1, because the paper's
      explanations are about levels (large weights, many dead units).
    * ``at="final"`` — the paper's words "after ten rounds": the normalised reward of round R, and each
      diagnostic's read-out (same smoothing/read point as the reward) in round R, again a level.

    ``readout="release"`` is :func:`~plasticity_lab.stats.release_summary` (the release's per-seed t-test value; ``at``
    must be ``"mean"`` or None, ``window`` None; it holds no diagnostics, which the release summarises only inside its
    correlation: :func:`~plasticity_lab.stats.release_points`).

    R is the run's last round present in the table (column ``n_rounds``).  Diagnostics absent from the table
    are skipped.  Columns: identity, ``n_rounds``, ``normalised_train_return``, ``normalised_test_return``,
    then the diagnostics.  A single-round run has NaN under ``at="mean"``.
    """
    at = resolve_at(at, readout, default="mean", window=window)
    if readout == "release":
        return release_summary(df, offset=offset, by=by)
    keys = identity_keys(df, by)
    nr = normalised_reward(df, window, offset, by=keys)
    window, offset = nr.attrs["window"], nr.attrs["offset"]
    diags = [c for c in diagnostics if c in df.columns]
    last = nr.groupby(keys, dropna=False, sort=True)["round"].max().rename("n_rounds") if keys else None
    if keys:
        nr = nr.merge(last.reset_index(), on=keys, how="left")
    else:
        nr["n_rounds"] = nr["round"].max()
    cols = ["normalised_train_return", "normalised_test_return"]
    if at == "mean":
        sel = nr[nr["round"] >= 2]
        rew = _group_mean(sel, keys, cols)
        d = df[df["round"] >= 2]
        diag = _group_mean(d, keys, diags)
    else:
        sel = nr[nr["round"] == nr["n_rounds"]]
        rew = sel[keys + cols]
        diag_parts = []
        for c in diags:
            r = round_readout(df, c, window, offset, by=keys)
            diag_parts.append(r)
        if diag_parts:
            dd = diag_parts[0]
            for part in diag_parts[1:]:
                dd = dd.merge(part, on=keys + ["round"], how="outer")
            if keys:
                dd = dd.merge(last.reset_index(), on=keys, how="left")
            else:
                dd["n_rounds"] = nr["round"].max()
            diag = dd[dd["round"] == dd["n_rounds"]][keys + diags]
        else:
            diag = None
    runs = nr[keys + ["n_rounds"]].drop_duplicates().reset_index(drop=True)
    out = runs if keys else runs.iloc[:1].copy()
    for part in (rew, diag):
        if part is None:
            continue
        if keys:
            out = out.merge(part, on=keys, how="left")
        else:
            for c in part.columns:
                out[c] = part[c].iloc[0] if len(part) else np.nan
    for c in cols + diags:
        if c not in out.columns:
            out[c] = np.nan
    out = out[keys + ["n_rounds"] + cols + diags].sort_values(keys, kind="stable").reset_index(drop=True)
    out.attrs.update(at=at, window=window, offset=offset)
    return out


def _group_mean(d: pd.DataFrame, keys: list[str], cols: list[str]) -> pd.DataFrame:
    if not cols:
        return None
    if keys:
        return d.groupby(keys, dropna=False, sort=True)[cols].mean().reset_index()
    return d[cols].mean().to_frame().T


def resolve_at(at: str | None, readout: str, default: str, window: int | None = None) -> str:
    """Check ``readout`` (first, so a bad value is the one error reported) and return the run summary to use:
    ``at`` (``default`` when None) for the project's read-out, the release's own mean for the release's."""
    check_option("readout", readout, READOUTS)
    if readout == "release":
        if at not in (None, "mean"):
            raise ValueError(f"readout='release' has one run summary, the release's own mean over rounds; "
                             f"at={at!r} does not apply (pass at='mean' or leave at out)")
        if window is not None:
            raise ValueError("readout='release' reads single epochs, unsmoothed (the release smooths only its "
                             f"figures); window={window!r} applies to readout='project' only")
        return "mean"
    at = default if at is None else at
    check_option("at", at, AT_CHOICES)
    return at


def as_run_summary(df: pd.DataFrame, at: str, window: int | None, offset: int | None, by: Sequence[str], what: str,
                   readout: str = "project") -> pd.DataFrame:
    """The run summary a statistic tests, from a per-epoch table or a run summary (:func:`run_summary`; for
    ``readout="release"`` also a per-round table with the release's read-outs, or a
    :func:`~plasticity_lab.stats.release_summary`); ``what`` names the statistic in errors.

    A run summary is used as it is: one made by :func:`~plasticity_lab.stats.release_summary` may be passed with
    either ``readout`` (its values are the release's whatever is asked; the result's ``attrs['readout']`` says so),
    but the release's values cannot be made from a project summary, and a project summary must have been built with
    the ``at`` asked for."""
    check_option("at", at, AT_CHOICES)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame, got {type(df).__name__}")
    if readout == "release":
        return as_release_summary(df, offset, by, what)
    if is_summary(df):
        if df.attrs.get("at", at) != at:
            raise ValueError(
                f"{what}: the summary was built with at={df.attrs['at']!r} but at={at!r} was requested; "
                "pass the per-epoch table or a summary built with the same 'at'"
            )
        return df
    return run_summary(df, at=at, window=window, offset=offset, by=by)
