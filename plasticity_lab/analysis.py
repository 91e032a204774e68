"""Analysis of per-epoch results: normalised reward, t-tests, correlations, GLM, bootstrap CIs.

This module implements the PROTOCOL's "Metrics" section (the normalised-reward rule) and its "Statistics"
section (t-tests against reset-all, diagnostic correlations, the Gaussian GLM), plus bootstrap confidence
intervals for aggregate plots.  It works on pandas tables only: it never imports torch, the network, PPO or
a plotting library (``rliable``, when used by :func:`aggregate_ci`, is imported lazily at call time).

The input is the runner's tidy per-epoch table, one row per (run, epoch), with columns

* run identity — ``env, shift, condition, seed`` by default (pass ``by=`` to add e.g. ``variant``; only the
  names present in the table are used),
* ``round`` (1-based), ``epoch`` (0-based, global), ``epoch_in_round`` (0-based),
* ``train_return``, ``test_return`` (NaN on epochs with no test evaluation),
* the diagnostics ``entropy, weight_magnitude, weight_difference, grad_norm, dead_units``.

Every round has the same number of epochs ``E`` (inferred as ``max(epoch_in_round) + 1``).  Smoothing works
on rows in ``epoch_in_round`` order, so the table must hold one row per epoch (no sub-sampling).

Two read-outs.  :func:`condition_ttests`, :func:`diagnostic_correlations`, :func:`diagnostics_glm` (and
:func:`analysis_points`, :func:`run_summary`) take ``readout=``:

* ``"project"`` (default) — this project's rules, each stated with its reason where it is applied: curves smoothed
  within a round before they are read, the sparse test curve forward-filled within its round, a run summarised
  over rounds 2..R (or at round R), diagnostics taken as levels.
* ``"release"`` — the authors' public release (``analyze.ipynb`` with ``shared/plotting.py`` of
  github.com/awjuliani/deep-rl-plasticity) step by step, its quirks included: see :func:`release_readouts`,
  :func:`release_summary` and :func:`release_points`.  ``tests/test_readout_release.py`` checks it against
  numbers computed by an independent transcription of the release's steps
  (``tests/fixtures/make_release_readout.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "ANALYSIS_CONDITIONS",
    "AT_CHOICES",
    "DEFAULT_BY",
    "DIAGNOSTICS",
    "READOUTS",
    "SPLITS",
    "STATISTICS",
    "UNITS",
    "aggregate_ci",
    "analysis_points",
    "condition_ranking",
    "condition_ttests",
    "diagnostic_correlations",
    "diagnostics_glm",
    "gap_by_scale",
    "interaction_test",
    "normalised_reward",
    "ranking_agreement",
    "readout_defaults",
    "release_offset",
    "release_points",
    "release_readouts",
    "release_summary",
    "round_readout",
    "rliable_available",
    "rounds_summary",
    "run_summary",
    "ttest_power",
]

#: Default run-identity columns (only those present in a table are used).
DEFAULT_BY: tuple[str, ...] = ("env", "shift", "condition", "seed")
#: The two evaluation splits: training episodes and unseen test levels.
SPLITS: tuple[str, ...] = ("train", "test")
#: The five diagnostics the PROTOCOL's statistics relate to normalised reward.
DIAGNOSTICS: tuple[str, ...] = ("entropy", "weight_magnitude", "weight_difference", "grad_norm", "dead_units")
#: The nine conditions of the paper's correlation / GLM analysis (3 shifts x 9 conditions = 27 points).
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
#: rounds").  ``readout="release"`` has its own summaries, the release's (:func:`release_summary`,
#: :func:`release_points`).
AT_CHOICES: tuple[str, ...] = ("mean", "final")
#: How per-round values are read: this project's rules or the authors' release's, step by step (module docstring).
READOUTS: tuple[str, ...] = ("project", "release")
#: Unit of observation for the GLM: shift x condition means, or individual runs (seeds).
UNITS: tuple[str, ...] = ("condition", "seed")
#: Aggregate statistics offered by :func:`aggregate_ci`.
STATISTICS: tuple[str, ...] = ("iqm", "mean", "median")

_TIME_COLUMNS = ("round", "epoch_in_round")
_SUMMARY_MARKER = "normalised_train_return"


# --------------------------------------------------------------------------------------------- validation
def _check_choice(name: str, value: Any, valid: Sequence[Any]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name}={value!r}; valid values are {tuple(valid)!r}")


def _require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: missing required column(s) {missing}; the table has columns {list(df.columns)}"
        )


def _keys(df: pd.DataFrame, by: Sequence[str]) -> list[str]:
    if isinstance(by, str):
        by = (by,)
    return [c for c in by if c in df.columns]


def _epochs_per_round(df: pd.DataFrame) -> int:
    if len(df) == 0:
        raise ValueError("the per-epoch table is empty")
    return int(df["epoch_in_round"].max()) + 1


def _check_unique(df: pd.DataFrame, keys: list[str]) -> None:
    dup = df.duplicated(subset=keys + list(_TIME_COLUMNS))
    if dup.any():
        row = df.loc[dup, keys + list(_TIME_COLUMNS)].iloc[0].to_dict()
        raise ValueError(
            f"the table has several rows for the same run/round/epoch_in_round (e.g. {row}) with identity "
            f"columns by={tuple(keys)}; add the missing identity column(s) (e.g. 'variant') to by="
        )


def _by_group(df: pd.DataFrame, keys: list[str]):
    """``(identity dict, rows)`` for each group of ``df`` by ``keys`` (the whole table once when there are none)."""
    if not keys:
        yield {}, df
        return
    for values, rows in df.groupby(keys, dropna=False, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        yield dict(zip(keys, values)), rows


def _is_summary(df: pd.DataFrame) -> bool:
    return _SUMMARY_MARKER in df.columns and "epoch_in_round" not in df.columns


# --------------------------------------------------------------------------------------------- readout
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
    its figures and tests single-epoch values: :func:`release_readouts`.)

    ``test_return`` is sparse (evaluated every test interval), so it is first forward-filled within the round:
    an epoch's value is the most recent test evaluation of that round, and epochs before the round's first
    evaluation stay NaN.  ``ffill`` overrides this (default: True for ``test_return`` only).  Why: a read-out
    taken before a shift must describe that round's agent on that round's test levels, so nothing evaluated
    after the shift may enter it.  (The release stretches the sparse curve over the whole run with
    ``np.linspace``, which mixes the evaluation just after a shift into the read-out before it:
    :func:`release_readouts`.)

    Returns one row per run x round with the identity columns, ``round`` and the readout under the metric's
    name (NaN if the read epoch is absent, e.g. an unfinished round).  ``.attrs`` holds window, offset,
    read_epoch and epochs_per_round.
    """
    keys = _keys(df, by)
    _require_columns(df, list(_TIME_COLUMNS) + [metric], "round_readout")
    if "epochs_averaged" in df.columns and (df["epochs_averaged"] > 1).any():
        raise ValueError("round_readout: this table holds subsampled curves (epochs_averaged > 1), whose smoothing "
                         "windows would be wrong; use a stored study's rounds / runs(at) tables instead")
    E = _epochs_per_round(df)
    window, offset = _resolve_window_offset(E, window, offset)
    if ffill is None:
        ffill = metric == "test_return"
    _check_unique(df, keys)
    d = df.sort_values(keys + list(_TIME_COLUMNS), kind="stable").reset_index(drop=True)
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
    _require_columns(df, list(_TIME_COLUMNS) + ["train_return", "test_return"], "normalised_reward")
    keys = _keys(df, by)
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

    ``readout="release"`` is :func:`release_summary` (the release's per-seed t-test value; ``at`` must be
    ``"mean"`` or None, ``window`` None; it holds no diagnostics, which the release summarises only inside its
    correlation: :func:`release_points`).

    R is the run's last round present in the table (column ``n_rounds``).  Diagnostics absent from the table
    are skipped.  Columns: identity, ``n_rounds``, ``normalised_train_return``, ``normalised_test_return``,
    then the diagnostics.  A single-round run has NaN under ``at="mean"``.
    """
    at = _resolve_at(at, readout, default="mean", window=window)
    if readout == "release":
        return release_summary(df, offset=offset, by=by)
    keys = _keys(df, by)
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


def rounds_summary(
    rounds: pd.DataFrame,
    first: int = 2,
    last: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    diagnostics: Sequence[str] = DIAGNOSTICS,
) -> pd.DataFrame:
    """One row per run, its rounds ``first..last`` averaged: :func:`run_summary`'s ``at="mean"`` over a window of
    rounds, read from a stored study's per-round table (:attr:`plasticity_lab.results.Results.rounds`).

    Each normalised reward is the mean of its per-round read-outs over the window; each diagnostic the mean of
    its per-round means (every round has the same number of epochs, so this is its mean over the window's epochs).
    With ``first=2`` and ``last`` the run's last round this is the stored ``runs("mean")`` table; a window such
    as rounds 11..20 of a 20-round study asks whether a gap seen in the first ten rounds persists.
    ``last=None`` means each run's last round. Runs that end before ``last`` are an error, not a shorter window.
    Columns as :func:`run_summary`: identity, ``n_rounds`` (the window's last round), both normalised rewards,
    then the diagnostics present.
    """
    if not isinstance(rounds, pd.DataFrame):
        raise ValueError(f"rounds_summary expects a pandas DataFrame, got {type(rounds).__name__}")
    _require_columns(rounds, ["round", "normalised_train_return", "normalised_test_return"], "rounds_summary")
    keys = _keys(rounds, by)
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


def _group_mean(d: pd.DataFrame, keys: list[str], cols: list[str]) -> pd.DataFrame:
    if not cols:
        return None
    if keys:
        return d.groupby(keys, dropna=False, sort=True)[cols].mean().reset_index()
    return d[cols].mean().to_frame().T


def _resolve_at(at: str | None, readout: str, default: str, window: int | None = None) -> str:
    """Check ``readout`` (first, so a bad value is the one error reported) and return the run summary to use:
    ``at`` (``default`` when None) for the project's read-out, the release's own mean for the release's."""
    _check_choice("readout", readout, READOUTS)
    if readout == "release":
        if at not in (None, "mean"):
            raise ValueError(f"readout='release' has one run summary, the release's own mean over rounds; "
                             f"at={at!r} does not apply (pass at='mean' or leave at out)")
        if window is not None:
            raise ValueError("readout='release' reads single epochs, unsmoothed (the release smooths only its "
                             f"figures); window={window!r} applies to readout='project' only")
        return "mean"
    at = default if at is None else at
    _check_choice("at", at, AT_CHOICES)
    return at


def _summary(df: pd.DataFrame, at: str, window, offset, by, what: str, readout: str = "project") -> pd.DataFrame:
    """Accept a per-epoch table or a run summary (:func:`run_summary`; for ``readout="release"`` also a per-round
    table with the release's read-outs, or a :func:`release_summary`).

    A run summary is used as it is: one made by :func:`release_summary` may be passed with either ``readout``
    (its values are the release's whatever is asked; the result's ``attrs['readout']`` says so), but the
    release's values cannot be made from a project summary."""
    _check_choice("at", at, AT_CHOICES)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame, got {type(df).__name__}")
    if readout == "release":
        if "epoch_in_round" in df.columns or _has_release_readouts(df):
            return release_summary(df, offset=offset, by=by)
        if df.attrs.get("readout") == "release":
            return df
        raise ValueError(_no_release_readouts(what))
    if _is_summary(df):
        if df.attrs.get("at", at) != at:
            raise ValueError(
                f"{what}: the summary was built with at={df.attrs['at']!r} but at={at!r} was requested; "
                "pass the per-epoch table or a summary built with the same 'at'"
            )
        return df
    return run_summary(df, at=at, window=window, offset=offset, by=by)


# --------------------------------------------------------------------------------------------- the release's read-out
#: The release reads its curves 50 epochs before each shift (and before the end) of rounds of 5 000 epochs.
_RELEASE_OFFSET, _RELEASE_EPOCHS_PER_ROUND = 50, 5000


def _release_column(metric: str) -> str:
    """Where :func:`release_readouts` (and a stored study's ``rounds``) keeps a metric's release read-out."""
    return {"train_return": "train_release_readout", "test_return": "test_release_readout"}.get(
        metric, f"{metric}_release_readout")


def _has_release_readouts(df: pd.DataFrame) -> bool:
    return all(_release_column(m) in df.columns for m in ("train_return", "test_return"))


def _no_release_readouts(what: str) -> str:
    return (f"{what}: readout='release' needs the per-epoch table, or a per-round table holding the release's "
            f"read-outs (columns {_release_column('train_return')}, {_release_column('test_return')}, "
            f"<diagnostic>_release_readout: release_readouts(), or the rounds table of a study stored with them); "
            f"this table has neither (a run summary no longer holds the per-round values the release averages)")


def release_offset(epochs_per_round: int) -> int:
    """How many epochs before a shift (and before the end) ``readout="release"`` reads each round: the release's
    50 epochs of 5 000 (its ``hyperparams.yaml``: 50 000 epochs, a shift every 5 000) scaled linearly, at least 1
    and at most E: ``max(1, round(50 * E / 5000))``.

    Examples: E = 5000 -> 50; E = 200 -> 2; E = 60 -> 1.  Linear, unlike the project's
    :func:`readout_defaults`, because the release reads one unsmoothed epoch, so no smoothing window has to fit
    before the read point; and because the test interval scales the same way (every E / 50 epochs), linear
    scaling keeps the release's test-curve mixing (:func:`release_readouts`) about as large as at paper scale.
    """
    E = int(epochs_per_round)
    if E < 1:
        raise ValueError(f"epochs_per_round must be >= 1, got {epochs_per_round!r}")
    return int(min(E, max(1, round(_RELEASE_OFFSET * E / _RELEASE_EPOCHS_PER_ROUND))))


def _stretched_test_readouts(run: pd.DataFrame, E: int, read_epoch: int, rounds: np.ndarray) -> np.ndarray:
    """The release's read-outs of one run's sparse test curve (see :func:`release_readouts`, step 2)."""
    tests = run.loc[run["test_return"].notna(), ["epoch_in_round", "test_return"]]
    n = len(tests)
    if n == 0:
        return np.full(len(rounds), np.nan)
    interval = int(tests["epoch_in_round"].iloc[0]) + 1  # the first evaluation closes the first block of I epochs
    length = n * interval
    positions = np.linspace(0, n - 1, length)  # the release's stretch: n evaluations spread over n * I epochs
    stretched_at = (rounds.astype(int) - 1) * E + read_epoch  # the read epoch of each round, counted over the run
    values = np.full(len(rounds), np.nan)
    inside = stretched_at < length
    values[inside] = np.interp(positions[stretched_at[inside]], np.arange(n), tests["test_return"].to_numpy(float))
    return values


def release_readouts(
    df: pd.DataFrame,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
    diagnostics: Sequence[str] = DIAGNOSTICS,
) -> pd.DataFrame:
    """One row per run x round: the values the authors' release reads, before any of its summaries.

    The release (``shared/plotting.py`` of github.com/awjuliani/deep-rl-plasticity: ``plot_metrics_figure`` for
    its t-tests, ``calculate_correlation`` for its correlations and GLM) does two things here that the project
    does not (:func:`round_readout`):

    1. **No smoothing.**  Each curve is read at a single epoch, ``offset`` epochs before each shift and before the
       end: ``epoch_in_round = E - offset`` (default :func:`release_offset`, the release's "shift − 50").  The
       release smooths (a 20-epoch moving average) only the curves it draws.  Diagnostics are read the same way.
    2. **The sparse test curve stretched over the whole run.**  The release keeps a run's n test evaluations (one
       every I epochs) as one array and stretches it to n·I points with
       ``np.interp(np.linspace(0, n - 1, n * I), arange(n), tests)`` before reading epoch
       ``g = (round - 1) * E + E - offset`` of it.  Epoch g of the stretched curve sits at position
       g·(n − 1)/(n·I − 1) among the evaluations, between two of them, and the read-out ``offset`` epochs before
       a shift falls between the round's last evaluation and the *next* round's first one, taken after the shift
       (the position also drifts earlier, by about the fraction of the run already trained).  At paper scale
       (I = 100, 50 epochs before each shift) the evaluation after the shift weighs about 0.40, 0.30, 0.20, 0.10
       in rounds 1–4 (0.006 in round 5, nothing later): round 1's baseline is 40 % a post-shift evaluation.  The
       arithmetic is on evaluation indices, so it is the same for this project's evaluations (the end of every
       block of I epochs, and a round's last epoch) as for the release's (epochs 0, I, 2I, …).  I is read from
       the data, as the first evaluation's ``epoch_in_round`` + 1 (the release takes it from its settings, and in
       its correlation hard-codes I = 100 for its ReDo condition).  A read epoch beyond the stretched curve (a
       run with missing evaluations) gives NaN.

    Everything else — the subtraction of round 1, which rounds a run averages, the extra weight on the last
    round — is done by the summaries: :func:`release_summary` (t-tests) and :func:`release_points`
    (correlations and the GLM).

    Columns: identity, ``round``, ``train_release_readout``, ``test_release_readout`` and
    ``<diagnostic>_release_readout`` for the diagnostics present.  A stored study keeps these columns in its
    per-round table (``Results.rounds``), computed from every epoch before its curves are subsampled.
    ``.attrs`` holds offset, read_epoch, epochs_per_round.
    """
    keys = _keys(df, by)
    _require_columns(df, list(_TIME_COLUMNS) + ["train_return", "test_return"], "release_readouts")
    if "epochs_averaged" in df.columns and (df["epochs_averaged"] > 1).any():
        raise ValueError("release_readouts: this table holds subsampled curves (epochs_averaged > 1), not single "
                         "epochs; use the per-epoch table, or a stored study's rounds table")
    E = _epochs_per_round(df)
    offset = release_offset(E) if offset is None else int(offset)
    if not 1 <= offset <= E:
        raise ValueError(f"offset must be in [1, E={E}] so the read point E - offset lies in the round, got {offset}")
    _check_unique(df, keys)
    read_epoch = E - offset
    metrics = ["train_return", *[c for c in diagnostics if c in df.columns]]
    d = df.sort_values(keys + list(_TIME_COLUMNS), kind="stable").reset_index(drop=True)
    d["_run"] = d.groupby(keys, dropna=False, sort=True).ngroup() if keys else 0
    runs = d[keys + ["_run", "round"]].drop_duplicates()
    at_read = d.loc[d["epoch_in_round"] == read_epoch, ["_run", "round"] + metrics]
    tests = []
    for run_id, run in d.groupby("_run", sort=False):
        rounds = np.sort(run["round"].unique())
        tests.append(pd.DataFrame({"_run": run_id, "round": rounds,
                                   "test_return": _stretched_test_readouts(run, E, read_epoch, rounds)}))
    out = runs.merge(at_read, on=["_run", "round"], how="left").merge(pd.concat(tests), on=["_run", "round"])
    measured = ["train_return", "test_return", *metrics[1:]]
    out = out[keys + ["round"] + measured].rename(columns={m: _release_column(m) for m in measured})
    out = out.sort_values(keys + ["round"], kind="stable").reset_index(drop=True)
    out.attrs.update(offset=offset, read_epoch=read_epoch, epochs_per_round=E, readout="release")
    return out


def _release_rounds(df: pd.DataFrame, offset: int | None, by, diagnostics, what: str) -> pd.DataFrame:
    """The release's per-round read-outs of a per-epoch table, or a per-round table that already holds them."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{what} expects a pandas DataFrame, got {type(df).__name__}")
    if "epoch_in_round" in df.columns:
        return release_readouts(df, offset=offset, by=by, diagnostics=diagnostics)
    if not _has_release_readouts(df):
        raise ValueError(_no_release_readouts(what))
    if offset is not None:
        raise ValueError(f"{what}: this per-round table was read at a fixed offset when it was stored; offset= "
                         f"re-reads only a per-epoch table")
    _require_columns(df, ["round"], what)
    keys = _keys(df, by)
    if df.duplicated(subset=keys + ["round"]).any():
        raise ValueError(f"{what}: the per-round table has several rows for the same run and round with identity "
                         f"columns by={tuple(keys)}; add the missing identity column(s) to by=")
    return df


def _complete_runs(rounds: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Whether each row's run reaches its experiment's last round R (a boolean per row of ``rounds``).

    An experiment is what the release analyses at once: one env x shift (and any identity column other than
    condition and seed); R is its largest round.  The release skips a curve shorter than the experiment's
    epochs, so a run that ends before R counts nowhere."""
    experiment = [k for k in keys if k not in ("condition", "seed")]
    if experiment:
        last = rounds.groupby(experiment, dropna=False)["round"].transform("max")
    else:
        last = pd.Series(rounds["round"].max(), index=rounds.index)
    if keys:
        per_run = rounds.groupby(keys, dropna=False)["round"]
        count, top = per_run.transform("nunique"), per_run.transform("max")
    else:
        count, top = rounds["round"].nunique(), rounds["round"].max()
    return (count == last) & (top == last)


def _run_values(rounds: pd.DataFrame, keys: list[str], column: str) -> list[np.ndarray]:
    """Per run of a per-round table (in the order of its identity, so seed order within a condition), the values of
    ``column`` for rounds 1..R."""
    return [run.sort_values("round")[column].to_numpy(float) for _, run in _by_group(rounds, keys)]


def release_summary(
    df: pd.DataFrame,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
) -> pd.DataFrame:
    """One row per run: the per-seed value of the authors' release's t-tests (``plot_metrics_figure`` with
    ``ttest=True`` in the release's ``shared/plotting.py``, then its ``run_ttests``).

    Per run and split, from the read-outs of :func:`release_readouts` (unsmoothed; the test curve stretched):
    the read-outs at the R − 1 shifts, i.e. of rounds 1..R−1, each minus round 1's, averaged:

        value = mean over r = 1..R−1 of (x_r − x_1)

    Round 1's zero is one of the R − 1 terms averaged, and round R (read ``offset`` epochs before the end) is
    left out: the release's t-tests read only its list of shift points, to which only its correlation appends
    the end.  (The project averages rounds 2..R: :func:`run_summary`.)  R is the experiment's last round (the
    largest of the run's env x shift); a run that ends earlier gets NaN, as the release skips curves shorter
    than the experiment.  A one-round experiment (no shift) gives NaN.

    Accepts a per-epoch table or a per-round table holding the release's read-outs (a stored study's
    ``rounds``).  Columns: identity, ``n_rounds`` (the run's last round), ``normalised_train_return``,
    ``normalised_test_return``; ``.attrs``: ``readout="release"``, ``at="mean"``, ``offset``.
    """
    rounds = _release_rounds(df, offset, by, (), "release_summary")
    read_at = rounds.attrs.get("offset")
    keys = _keys(rounds, by)
    rows = []
    for ident, run in _by_group(rounds.assign(_complete=_complete_runs(rounds, keys)), keys):
        run = run.sort_values("round")
        row = {**ident, "n_rounds": int(run["round"].max())}
        usable = bool(run["_complete"].all()) and len(run) >= 2
        for split in SPLITS:
            x = run[_release_column(f"{split}_return")].to_numpy(float)
            row[f"normalised_{split}_return"] = float(np.mean(x[:-1] - x[0])) if usable else np.nan
        rows.append(row)
    out = pd.DataFrame(rows, columns=keys + ["n_rounds", "normalised_train_return", "normalised_test_return"])
    out = out.sort_values(keys, kind="stable").reset_index(drop=True)
    out.attrs.update(readout="release", at="mean", offset=read_at)
    return out


def _select_conditions(present: Sequence[str], conditions: Sequence[str] | str | None, what: str) -> list[str]:
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


def _mean_or_nan(values: list[float]) -> float:
    return float(np.mean(values)) if values else np.nan


def _release_mean(values: np.ndarray, copies: int) -> float:
    """The release's "mean over rounds" of one curve in its correlation pass: rounds 1..R−1 once each and round R
    ``copies`` times, all relative to round 1."""
    relative = values - values[0]
    return float((relative[:-1].sum() + copies * relative[-1]) / (len(values) - 1 + copies))


def release_points(
    df: pd.DataFrame,
    split: str = "train",
    conditions: Sequence[str] | None = None,
    diagnostics: Sequence[str] = DIAGNOSTICS,
    offset: int | None = None,
    by: Sequence[str] = DEFAULT_BY,
) -> pd.DataFrame:
    """The authors' release's points for its correlations and GLM: one per env x shift x condition, the
    normalised reward and each diagnostic (``calculate_correlation`` in the release's ``shared/plotting.py``,
    called by ``process_corrs`` and fitted by ``plot_corr_row`` in its ``analyze_helpers.py``).

    Steps, from the read-outs of :func:`release_readouts` (unsmoothed; the test curve stretched):

    1. **Diagnostics relative to round 1, like reward.**  Every curve read — the reward's and each diagnostic's —
       has its round-1 read-out subtracted.  (The project relates reward to diagnostic *levels*.)
    2. **A "mean over rounds" that over-weights round R, more for later conditions.**  For each experiment
       (env x shift) and each diagnostic the release makes one pass over the conditions in the order of its list
       (``conditions``; by default :data:`ANALYSIS_CONDITIONS`, which is the release's list and order), reading
       first the condition's reward curves, then its diagnostic curves, one per seed (here in seed order; the
       release takes its files in the order the file system lists them).  The list of read points (the R − 1
       shifts) is shared by the whole pass and the end point is appended to it once for every curve read, so
       the j-th curve of a pass averages rounds 1..R−1 once and round R j times:

           value_j = (sum over r < R of (x_r − x_1) + j · (x_R − x_1)) / (R − 1 + j)

       With 9 conditions of 5 seeds and R = 10, round R is 1/10 of warm-start's first reward value and about
       9/10 of ReDo's (the ninth).  A curve of a run that ends before R is skipped and not counted (the release
       skips it before appending).  Every pass counts the same curves, so the reward's values are the same in
       every diagnostic's pass, and the GLM (which in the release takes the last pass's reward) sees them too.
    3. A point is the mean over seeds of its curves' values: the reward's at its place in the pass, each
       diagnostic's at its own (after the condition's reward curves).

    Accepts a per-epoch table or a per-round table holding the release's read-outs (a stored study's
    ``rounds``).  Columns: the identity columns but ``seed``, ``normalised_<split>_return``, then the
    diagnostics; ``.attrs``: ``readout="release"``, ``at="mean"``, ``split``.
    """
    _check_choice("split", split, SPLITS)
    return _release_points(df, split, conditions, diagnostics, offset, by, "release_points")


def _release_points(df, split, conditions, diagnostics, offset, by, what: str) -> pd.DataFrame:
    rounds = _release_rounds(df, offset, by, diagnostics, what)
    _require_columns(rounds, ["condition", _release_column(f"{split}_return")]
                     + [_release_column(d) for d in diagnostics], what)
    conds = _select_conditions(list(pd.unique(rounds["condition"])), conditions, what)
    keys = _keys(rounds, by)
    rounds = rounds[_complete_runs(rounds, keys) & rounds["condition"].isin(conds)]
    experiment = [k for k in keys if k not in ("condition", "seed")]
    point_keys = [k for k in keys if k not in experiment and k != "seed"]  # condition and e.g. variant
    ycol = f"normalised_{split}_return"
    rows = []
    for ident, part in _by_group(rounds, experiment):
        read = 0  # curves read so far in this experiment's pass: the j-th curve gets j copies of round R
        for condition in conds:
            for point, runs in _by_group(part[part["condition"] == condition], point_keys):
                reward = _run_values(runs, keys, _release_column(f"{split}_return"))
                n = len(reward)
                row = {**ident, **point,
                       ycol: _mean_or_nan([_release_mean(v, read + j) for j, v in enumerate(reward, 1)])}
                for diag in diagnostics:  # read after the condition's n reward curves
                    values = _run_values(runs, keys, _release_column(diag))
                    row[diag] = _mean_or_nan([_release_mean(v, read + n + j) for j, v in enumerate(values, 1)])
                rows.append(row)
                read += 2 * n
    out = pd.DataFrame(rows, columns=experiment + point_keys + [ycol] + list(diagnostics))
    out.attrs.update(readout="release", at="mean", split=split)
    return out


# --------------------------------------------------------------------------------------------- t-tests
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

    * ``"project"`` (default): :func:`run_summary` — with the default ``at="mean"``, each run's mean over rounds
      2..R of normalised reward read from smoothed curves (the reasons are given there and in
      :func:`round_readout`); ``at="final"``: round R's.
    * ``"release"``: :func:`release_summary` — the release's value, the mean of the unsmoothed read-outs of
      rounds 1..R−1 relative to round 1 (round 1's zero in, round R out), the test curve stretched as the
      release stretches it.  ``at`` must be ``"mean"`` (or None) and ``window`` None.

    SIGN CONVENTION — READ THIS: ``t = ttest_ind(baseline_values, condition_values).statistic``, i.e.
    t ∝ mean(baseline) − mean(condition).  A condition with a HIGHER normalised reward than the baseline gets
    a NEGATIVE t.  "Negative t = better than reset-all", as in the paper (and the release's ``run_ttests``).

    Accepts the per-epoch table or a run summary (a :func:`run_summary` with the same ``at``; for
    ``readout="release"`` a :func:`release_summary` or a per-round table holding the release's read-outs, such as
    a stored study's ``rounds``).  A :func:`release_summary` is tested as given whatever ``readout`` says.
    Columns: identity (minus seed), ``condition, split, t, p, dof, mean, baseline_mean, n, n_baseline``
    with ``dof = n + n_baseline − 2``.  Seeds with a NaN value are dropped; groups without the baseline or
    with fewer than 2 values on a side get NaN t and p.  ``.attrs`` holds baseline, at, readout.
    """
    at = _resolve_at(at, readout, default="mean", window=window)
    s = _summary(df_or_summary, at, window, offset, by, "condition_ttests", readout)
    _require_columns(s, ["condition", "seed", "normalised_train_return", "normalised_test_return"], "condition_ttests")
    conditions = list(pd.unique(s["condition"]))
    if baseline not in conditions:
        raise ValueError(f"baseline={baseline!r} is not in the table; conditions present: {tuple(conditions)!r}")
    gkeys = [c for c in _keys(s, by) if c not in ("condition", "seed")]
    rows = []
    for ident, g in _by_group(s, gkeys):
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
    _require_columns(tests, ["t", "n", "n_baseline"], "ttest_power")
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

    ``runs_by_scale`` maps each scale to a run summary (:func:`run_summary` or a stored study's ``runs("mean")``;
    other conditions in it are ignored). The interval is that of the difference of means under the equal-variance
    t-test (``scipy.stats.ttest_ind(...).confidence_interval``); ``t``, ``p`` and ``effect_size`` follow
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
        _require_columns(runs, ["shift", "condition", "normalised_train_return", "normalised_test_return"],
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
    s = _summary(df_or_summary, at, window, offset, by, "interaction_test")
    _require_columns(s, ["condition", "seed", "normalised_train_return", "normalised_test_return"],
                     "interaction_test")
    present = set(s["condition"])
    missing = [c for c in cells if c not in present]
    if missing:
        raise ValueError(
            f"interaction_test needs the conditions {list(cells)}; missing: {missing}; "
            f"conditions present: {tuple(pd.unique(s['condition']))!r}"
        )
    s = s[s["condition"].isin(cells)]
    gkeys = [c for c in _keys(s, by) if c not in ("condition", "seed")]
    rows = []
    for ident, g in _by_group(s, gkeys):
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

    ``summary`` is a run summary (:func:`run_summary`, or a stored study's ``runs("mean")``). Columns:
    ``condition``, ``mean``, ``rank`` (1 = the highest mean; ties share the lower rank), ``runs``.
    """
    _require_columns(summary, ["condition", "normalised_train_return", "normalised_test_return"],
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


# --------------------------------------------------------------------------------------------- correlations / GLM
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
    seeds (unit="condition") for the project's read-out; the release's points (:func:`release_points`) for its."""
    at = _resolve_at(at, readout, default="final", window=window)
    _check_choice("split", split, SPLITS)
    _check_choice("unit", unit, UNITS)
    ycol = f"normalised_{split}_return"
    if readout == "release":
        if unit != "condition":
            raise ValueError(f"{what}: readout='release' fits the release's shift x condition points; "
                             f"unit={unit!r} has no release counterpart (use unit='condition')")
        points = _release_points(df, split, conditions, diagnostics, offset, by, what)
        keys = _keys(points, by)
        return points, [k for k in keys if k not in ("shift", "condition", "seed")], ycol, at
    s = _summary(df, at, window, offset, by, what)
    _require_columns(s, ["condition", ycol] + list(diagnostics), what)
    conds = _select_conditions(list(pd.unique(s["condition"])), conditions, what)
    s = s[s["condition"].isin(conds)]
    keys = _keys(s, by)
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
    ``readout="release"`` gives :func:`release_points`.
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
    analysis.  ``conditions`` defaults to :data:`ANALYSIS_CONDITIONS` (those present).  What a point holds
    depends on ``readout``:

    * ``"project"`` (default): the means of :func:`run_summary` — diagnostics as levels.  ``at`` defaults to
      ``"final"``, the paper's words "after ten rounds" (round R's read-outs); ``"mean"`` is the project's clean
      mean over rounds 2..R, each round once.
    * ``"release"``: :func:`release_points` — diagnostics relative to round 1 like reward, unsmoothed read-outs,
      the test curve stretched, and the release's "mean over rounds", which over-weights round R more the later
      a condition comes in ``conditions`` (so the order of ``conditions`` matters).  ``at`` must be ``"mean"``
      (or None) and ``window`` None.

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
    for ident, g in _by_group(pts, gkeys):
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
    (diagnostic levels), or ``"release"`` (:func:`release_points`; ``unit="condition"`` only, as in the release).

    Fit one env at a time: if the table has several envs (or other identity groups), pass ``env=`` or filter.
    Rows with NaN are dropped.  Returns a DataFrame indexed by term (``const`` then each diagnostic) with
    columns ``coef, std_err, z, p, ci_low, ci_high``; ``.attrs`` holds ``n`` (observations), ``df_resid``,
    ``deviance``, ``scale``, ``llf``, ``aic``, ``split``, ``at``, ``unit``.
    """
    import statsmodels.api as sm

    _check_choice("readout", readout, READOUTS)
    if env is not None:
        _require_columns(df, ["env"], "diagnostics_glm")
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


# --------------------------------------------------------------------------------------------- bootstrap
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
    DataFrame (e.g. :func:`run_summary`) with a ``value`` column grouped by ``group``.  NaNs are dropped.

    ``backend="auto"`` uses ``rliable`` (``library.get_interval_estimates`` with ``metrics.aggregate_iqm`` /
    ``aggregate_mean`` / ``aggregate_median``, stratified bootstrap over runs, percentile method) when it
    imports, else ``scipy.stats.bootstrap`` (percentile method) on the same statistic; ``"rliable"`` or
    ``"scipy"`` forces one.  Deterministic given ``seed``: each condition is bootstrapped with a fresh RNG
    seeded with ``seed`` (``default_rng`` for scipy; for rliable, whose resampling draws from NumPy's global
    legacy generator, the global state is seeded for the call and restored afterwards), so a condition's CI
    does not depend on which other conditions are passed and the caller's global RNG is left untouched.  Fewer than 2 values give NaN CI.

    ``strata`` (a DataFrame column, e.g. ``"shift"``) pools the runs of several tasks the way rliable does: the
    statistic is taken over every run of every task at once, and the bootstrap resamples runs *within* each task
    (a stratified bootstrap: rliable's ``StratifiedBootstrap`` over a runs × tasks matrix, or
    ``scipy.stats.bootstrap`` with one sample per task, each resampled on its own).  rliable needs the same
    number of runs in every task: ``backend="auto"`` uses scipy when they differ.
    Returns columns ``<group>, statistic, estimate, ci_low, ci_high, n``; ``.attrs['backend']`` says which
    library ran.
    """
    _check_choice("statistic", statistic, STATISTICS)
    _check_choice("backend", backend, ("auto", "rliable", "scipy"))
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
        _require_columns(values_by_condition, gcols + [value] + ([strata] if strata else []), "aggregate_ci")

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
