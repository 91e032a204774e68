"""The authors' read-out: their public release's analysis, step by step, its quirks included.

``readout="release"`` follows ``analyze.ipynb`` with ``shared/plotting.py`` of github.com/awjuliani/deep-rl-plasticity:
:func:`release_readouts` reads each curve the release's way (unsmoothed, the sparse test curve stretched over the
run), :func:`release_summary` makes the per-seed value of its t-tests and :func:`release_points` the points of its
correlations and GLM.  ``tests/test_readout_release.py`` checks them against numbers computed by an independent
transcription of the release's steps (``tests/fixtures/make_release_readout.py``).  The project's own read-out is
:mod:`plasticity_lab.stats.readouts`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..schema import DIAGNOSTICS, SPLITS, TIME_COLUMNS
from .tables import (
    DEFAULT_BY,
    by_group,
    check_option,
    check_unique,
    epochs_per_round,
    identity_keys,
    require_columns,
    select_conditions,
)


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
    :func:`~plasticity_lab.stats.readout_defaults`, because the release reads one unsmoothed epoch, so no smoothing
    window has to fit before the read point; and because the test interval scales the same way (every E / 50 epochs),
    linear scaling keeps the release's test-curve mixing (:func:`release_readouts`) about as large as at paper scale.
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
    does not (:func:`~plasticity_lab.stats.round_readout`):

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
    keys = identity_keys(df, by)
    require_columns(df, list(TIME_COLUMNS) + ["train_return", "test_return"], "release_readouts")
    if "epochs_averaged" in df.columns and (df["epochs_averaged"] > 1).any():
        raise ValueError("release_readouts: this table holds subsampled curves (epochs_averaged > 1), not single "
                         "epochs; use the per-epoch table, or a stored study's rounds table")
    E = epochs_per_round(df)
    offset = release_offset(E) if offset is None else int(offset)
    if not 1 <= offset <= E:
        raise ValueError(f"offset must be in [1, E={E}] so the read point E - offset lies in the round, got {offset}")
    check_unique(df, keys)
    read_epoch = E - offset
    metrics = ["train_return", *[c for c in diagnostics if c in df.columns]]
    d = df.sort_values(keys + list(TIME_COLUMNS), kind="stable").reset_index(drop=True)
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
    require_columns(df, ["round"], what)
    keys = identity_keys(df, by)
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
    return [run.sort_values("round")[column].to_numpy(float) for _, run in by_group(rounds, keys)]


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
    the end.  (The project averages rounds 2..R: :func:`~plasticity_lab.stats.run_summary`.)  R is the experiment's last
    round (the largest of the run's env x shift); a run that ends earlier gets NaN, as the release skips curves shorter
    than the experiment.  A one-round experiment (no shift) gives NaN.

    Accepts a per-epoch table or a per-round table holding the release's read-outs (a stored study's
    ``rounds``).  Columns: identity, ``n_rounds`` (the run's last round), ``normalised_train_return``,
    ``normalised_test_return``; ``.attrs``: ``readout="release"``, ``at="mean"``, ``offset``.
    """
    rounds = _release_rounds(df, offset, by, (), "release_summary")
    read_at = rounds.attrs.get("offset")
    keys = identity_keys(rounds, by)
    rows = []
    for ident, run in by_group(rounds.assign(_complete=_complete_runs(rounds, keys)), keys):
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




def as_release_summary(df: pd.DataFrame, offset: int | None, by: Sequence[str], what: str) -> pd.DataFrame:
    """The run summary a statistic asked for ``readout="release"`` tests: :func:`release_summary` of a per-epoch
    table or of a per-round table holding the release's read-outs, or a :func:`release_summary` as given (its
    ``attrs['readout']`` says so).  A project run summary is refused (``what`` names the statistic): the release's
    values cannot be made from it."""
    if "epoch_in_round" in df.columns or _has_release_readouts(df):
        return release_summary(df, offset=offset, by=by)
    if df.attrs.get("readout") == "release":
        return df
    raise ValueError(_no_release_readouts(what))


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
       (``conditions``; by default :data:`~plasticity_lab.stats.ANALYSIS_CONDITIONS`, which is the release's list and
       order), reading first the condition's reward curves, then its diagnostic curves, one per seed (here in seed
       order; the release takes its files in the order the file system lists them).  The list of read points (the R − 1
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
    check_option("split", split, SPLITS)
    return release_points_for(df, split, conditions, diagnostics, offset, by, "release_points")


def release_points_for(df, split, conditions, diagnostics, offset, by, what: str) -> pd.DataFrame:
    """:func:`release_points` for a statistic that fits them (``what`` names it in errors); ``split`` is checked by
    the caller."""
    rounds = _release_rounds(df, offset, by, diagnostics, what)
    require_columns(rounds, ["condition", _release_column(f"{split}_return")]
                    + [_release_column(d) for d in diagnostics], what)
    conds = select_conditions(list(pd.unique(rounds["condition"])), conditions, what)
    keys = identity_keys(rounds, by)
    rounds = rounds[_complete_runs(rounds, keys) & rounds["condition"].isin(conds)]
    experiment = [k for k in keys if k not in ("condition", "seed")]
    point_keys = [k for k in keys if k not in experiment and k != "seed"]  # condition and e.g. variant
    ycol = f"normalised_{split}_return"
    rows = []
    for ident, part in by_group(rounds, experiment):
        read = 0  # curves read so far in this experiment's pass: the j-th curve gets j copies of round R
        for condition in conds:
            for point, runs in by_group(part[part["condition"] == condition], point_keys):
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
