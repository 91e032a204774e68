"""The stored studies a chapter reads, and what its section on a study can show while the study is still being
computed.

The book's main study is computed one population per condition over several days, and each finished population is
committed as it lands, so a chapter may meet a study that holds nothing yet, only its baselines, or some of its
conditions. Every chapter reads its studies through these functions, which say in the page what is shown and what
is still to come instead of failing or showing an empty figure.

* :func:`study_path` — where the book looks up a stored study (``../data``, or the folder named by the environment
  variable ``PLASTICITY_LAB_STUDY_DIR``).
* :func:`load_study` — a stored study, or ``None`` while it is still being computed (on Colab, downloaded from the
  repository first).
* :func:`read_runs` — every epoch of some conditions of a study that kept them (one written by ``plasticity-lab
  run``), each condition's table and manifest (on Colab, downloaded from the repository first).
* :func:`study_section`, :class:`StudySection` — what a chapter's section on a stored study can show of a study that
  may hold only some of its conditions so far, and the note that says so.
* :func:`describe_gaps` — t-tests against a baseline in words, so the prose stays true of whatever study is read.
* :func:`substitute_condition` — a study's run table with one condition's runs taken from another study (the same
  condition at another coefficient), so that every statistic can be read with either.
"""

from __future__ import annotations

import dataclasses
import html
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from ..config import RunConfig
from ..schema import DIAGNOSTICS

__all__ = ["BASELINES", "STUDY_DIR_VARIABLE", "StudySection", "describe_gaps", "load_study", "read_runs",
           "study_path", "study_section", "substitute_condition"]


#: The conditions the book compares every other condition with: doing nothing (warm-start) and the paper's
#: reference (reset-all).
BASELINES: tuple[str, ...] = ("warm_start", "reset_all")


#: The environment variable that names the folder in which :func:`study_path` looks up stored studies.
STUDY_DIR_VARIABLE = "PLASTICITY_LAB_STUDY_DIR"


def study_path(name: str, default: str | Path = "../data") -> Path:
    """The folder of the stored study ``name``: ``<studies>/<name>``, where ``<studies>`` is the folder named by the
    environment variable ``PLASTICITY_LAB_STUDY_DIR`` when it is set, and ``default`` otherwise — ``../data``, the
    repository's ``data/`` as the chapters in ``book/`` see it. Setting the variable shows every chapter the
    studies of another folder (the tests point it at small studies of their own) without editing a chapter."""
    return Path(os.environ.get(STUDY_DIR_VARIABLE) or default) / name


def load_study(path: str | Path, fetch: bool | None = None):
    """A stored study (:func:`plasticity_lab.load_results`), or ``None`` while it is still being computed: when
    the folder does not exist yet, or holds no finished population yet. A damaged study still raises.

    Where the folder does not exist and ``fetch`` is true — by default only on Colab, which opens a chapter
    without the repository — the study is downloaded once into ``data/<name>`` of the working folder
    (:func:`plasticity_lab.results.fetch_study`) and loaded from there; a failed download prints why and gives
    ``None``.
    """
    import sys

    from ..results import fetch_study, load_results

    path = Path(path)
    if not path.is_dir():
        if fetch is None:
            fetch = "google.colab" in sys.modules
        if not fetch:
            return None
        local = Path("data") / path.name
        if not local.is_dir():
            try:
                fetch_study(path.name, local)
            except OSError as error:
                print(f"the stored study {path.name} could not be downloaded ({error}); "
                      "its results are on the book's web pages")
                return None
        path = local
    try:
        return load_results(path)
    except ValueError as error:
        if "no finished results" in str(error):
            return None
        raise


def read_runs(path: str | Path, conditions: Sequence[str], fetch: bool | None = None,
              base_url: str | None = None) -> dict[str, tuple[pd.DataFrame, dict]]:
    """Every epoch of ``conditions`` in a stored study that kept them (:meth:`plasticity_lab.results.Results.epochs`;
    a study written by ``plasticity-lab run``): condition → (its per-epoch table, its population's manifest).
    Where a condition's runs were trained as several populations, its manifest lists all their ``configs``, adds
    up their ``wall_time_s``, names them in ``populations`` and keeps the entries on which they agree.

    Where ``path`` does not exist and ``fetch`` is true — by default only on Colab, which opens a chapter without
    the repository — the study manifest and the conditions' populations are downloaded once into ``data/<name>``
    of the working folder (:func:`plasticity_lab.results.fetch_study`, from ``base_url/<name>``; default:
    :data:`plasticity_lab.results.DATA_URL`, or the URL in ``$PLASTICITY_LAB_DATA_URL``), and read from there.
    The files land in a temporary folder that is renamed into place once all have arrived, so a failed download
    leaves nothing behind and raises an ``OSError`` that says so in one line (the chapters that read whole runs
    cannot go on without them).
    """
    import sys

    from ..results import fetch_study, load_results

    path = Path(path)
    if not path.is_dir():
        if fetch is None:
            fetch = "google.colab" in sys.modules
        if not fetch:
            raise FileNotFoundError(f"no study folder at {path}")
        local = Path("data") / path.name
        if not local.is_dir():
            try:
                fetch_study(path.name, local, base_url=base_url, conditions=conditions)
            except OSError as error:  # one line for the reader, not the download's whole traceback
                raise OSError(f"the stored study {path.name} could not be downloaded ({error}); its results are "
                              f"on the book's web pages, or in a clone of the repository") from None
        path = local
    results = load_results(path)
    df = results.epochs(conditions)
    runs = {}
    for condition in conditions:
        owners = [m for m in results.populations
                  if any(RunConfig.from_dict(c).label == condition for c in m["configs"])]
        table = df[df["condition"] == condition].reset_index(drop=True)
        runs[condition] = (table, owners[0] if len(owners) == 1 else _merged(owners))
    return runs


def _merged(manifests: list[dict]) -> dict:
    """One manifest for the populations of one condition: see :func:`read_runs`."""
    shared = {k: v for k, v in manifests[0].items() if all(m.get(k) == v for m in manifests[1:])}
    return {**shared, "configs": [c for m in manifests for c in m["configs"]],
            "wall_time_s": round(sum(m["wall_time_s"] for m in manifests), 3),
            "populations": [m["population"] for m in manifests]}


def _names(names: Sequence[str], markup: bool, last: str = "and") -> str:
    """``a, b and c`` (or ``a, b or c``); each name in ``<code>`` when ``markup``."""
    shown = [f"<code>{html.escape(n)}</code>" if markup else n for n in names]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} {last} {shown[-1]}"


@dataclasses.dataclass(frozen=True)
class StudySection:
    """What a section of the book can show of a stored study that may hold only some of its conditions so far;
    made by :func:`study_section`.

    Fields: ``study`` (the study's folder name), ``conditions`` (those the section is about, baselines included,
    in the order it shows them), ``baselines`` (those it compares the others with; empty: no comparison),
    ``present`` (every condition the study holds so far; empty while it holds no finished population),
    ``planned`` (the conditions the study's sweep computes, ``None`` when the study does not record them),
    ``points`` (the shift × condition points of the shown conditions with every value present), ``min_points``
    (the fewest points the section needs), ``aside`` (a sentence added when there is nothing to show), ``runs`` (the
    runs of the shown conditions the study holds) and ``planned_runs`` (the runs its sweep computes for them;
    ``None`` when the study does not record its sweep). Derived from them:

    * ``available`` — whether the section has something to show: the study holds at least one of the section's
      own conditions (those that are not baselines), at least one baseline to compare it with, and at least
      ``min_points`` points;
    * ``shown`` — the section's conditions that the study holds, in the section's order (then any baseline the
      study holds that the section did not list);
    * ``missing`` — the section's conditions the study does not hold; ``pending`` are those still to be computed
      (named by the study's sweep; every missing one when the study does not record its sweep), the others are
      not part of the study;
    * ``incomplete`` — whether the shown conditions still lack some of their runs (seeds still being computed:
      their means average fewer seeds than the study will);
    * ``message`` — all of this in words, naming the conditions.

    Displayed in a notebook it shows the message as a note: a "Not yet available" admonition when the section has
    nothing to show ("Not available" when nothing it needs is still to come), a "Partly available" admonition when
    some of its conditions or of their runs are still being computed, and a plain line naming what is shown
    otherwise.
    """

    study: str
    conditions: tuple[str, ...]
    baselines: tuple[str, ...]
    present: tuple[str, ...]
    planned: tuple[str, ...] | None
    points: int
    min_points: int = 0
    aside: str = ""
    runs: int = 0
    planned_runs: int | None = None

    @property
    def own(self) -> tuple[str, ...]:
        """The section's conditions that are not baselines."""
        return tuple(c for c in self.conditions if c not in self.baselines)

    @property
    def shown(self) -> tuple[str, ...]:
        listed = [c for c in self.conditions if c in self.present]
        return (*listed, *(b for b in self.baselines if b not in self.conditions and b in self.present))

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(c for c in self.conditions if c not in self.present)

    @property
    def pending(self) -> tuple[str, ...]:
        if self.planned is None:
            return self.missing
        return tuple(c for c in self.missing if c in self.planned)

    @property
    def incomplete(self) -> bool:
        return self.planned_runs is not None and self.runs < self.planned_runs

    @property
    def available(self) -> bool:
        has_own = not self.own or any(c in self.present for c in self.own)
        has_baseline = not self.baselines or any(b in self.present for b in self.baselines)
        return bool(self.present) and has_own and has_baseline and self.points >= self.min_points

    @property
    def message(self) -> str:
        """The note's text, without markup."""
        return self._text(markup=False)

    def _text(self, markup: bool) -> str:
        study = f"<code>{html.escape(self.study)}</code>" if markup else self.study
        aside = [html.escape(self.aside) if markup else self.aside] if self.aside else []
        if not self.present:
            return " ".join([f"The study {study} is still being computed: its results are not in this copy of the "
                             "repository yet, so this section has nothing to show.", *aside])
        sentences = []
        so_far = ""
        if self.planned is not None and len(self.present) < len(self.planned):
            so_far = f" ({len(self.present)} of the {len(self.planned)} conditions it computes)"
        if not self.available:
            sentences.append(f"The study {study} holds {_names(self.present, markup)} so far{so_far}.")
            subject = "This section"
            if self.own and self.baselines:
                sentences.append(f"This section compares {_names(self.own, markup, 'or')} with "
                                 f"{_names(self.baselines, markup, 'or')} and needs at least one of each.")
                subject = "It also"
            if self.min_points:
                sentences.append(f"{subject} fits the shift × condition points of "
                                 f"{_names(self.conditions, markup)} and needs at least {self.min_points} of "
                                 f"them; the study has {self.points} so far.")
            elif self.own and not self.baselines:
                sentences.append(f"This section needs at least one of {_names(self.own, markup, 'or')}.")
        else:
            if so_far:
                sentences.append(f"The study {study} holds {len(self.present)} of the {len(self.planned)} "
                                 "conditions it computes so far.")
            sentences.append(f"Shown here: {_names(self.shown, markup)}.")
            if self.incomplete:
                sentences.append(f"They hold {self.runs} of the {self.planned_runs} runs the study computes for "
                                 "them so far; the rest are still being computed.")
        absent = [c for c in self.missing if c not in self.pending]
        if self.pending:
            label = "Not in this study (yet)" if self.planned is None else "Still being computed"
            sentences.append(f"{label}: {_names(self.pending, markup)}.")
        if absent:
            sentences.append(f"Not part of this study: {_names(absent, markup)}.")
        if not self.available:
            sentences.extend(aside)
        return " ".join(sentences)

    def note(self) -> str:
        """The message as HTML, in the book's admonition style (see the class description)."""
        if self.available and not self.pending and not self.incomplete:
            return f"<p>{self._text(markup=True)}</p>"
        if self.available:
            title = "Partly available"
        else:
            title = "Not yet available" if not self.present or self.pending else "Not available"
        return (f'<div class="admonition note"><p class="admonition-title">{title}</p>'
                f"<p>{self._text(markup=True)}</p></div>")

    def lacks_points(self, minimum: int, what: str) -> str | None:
        """``None`` when the study has at least ``minimum`` shift × condition points of the shown conditions;
        otherwise a line saying that ``what`` (e.g. ``"the GLM"``) was not computed and why."""
        if self.points >= minimum:
            return None
        return (f"not computed: {what} needs at least {minimum} shift × condition points; "
                f"the study has {self.points} so far")

    def _repr_html_(self) -> str:
        return self.note()

    def __str__(self) -> str:
        return self.message


def _complete_points(runs: pd.DataFrame, conditions: Sequence[str]) -> int:
    """The shift × condition means over seeds of ``runs`` for ``conditions`` with no missing value: the points the
    correlations and the GLM of :mod:`plasticity_lab.stats` fit."""
    part = runs[runs["condition"].isin(conditions)]
    if part.empty:
        return 0
    keys = [k for k in ("env", "shift", "condition") if k in part.columns]
    values = [c for c in ("normalised_train_return", "normalised_test_return", *DIAGNOSTICS) if c in part.columns]
    return int(part.groupby(keys)[values].mean().notna().all(axis=1).sum())


def study_section(results, conditions: Sequence[str], baselines: Sequence[str] = BASELINES, *,
                  study: str | Path | None = None, min_points: int = 0, at: str = "mean",
                  aside: str = "") -> StudySection:
    """Whether a section of the book can show a stored study that may hold only some of its conditions so far,
    and the note that says what it shows and what it still lacks (:class:`StudySection`).

    ``results`` is what :func:`load_study` returned — a :class:`~plasticity_lab.results.Results`, or ``None`` while
    the study holds no finished population — or a run summary (a ``runs(at)`` table). ``conditions`` are those the
    section is about, baselines included, in the order it shows them; it needs at least one of them that is not a
    baseline, next to at least one of ``baselines`` to compare it with (``baselines=()``: no comparison, any one of
    ``conditions`` will do). ``min_points`` asks in addition for that many shift × condition points of the
    section's conditions with every value present — what a fit across them needs (a line's p-value: 3) — counted
    on ``results.runs(at)``.

    ``study`` names the study in the note (default: the folder of ``results``); ``aside`` is a sentence added to
    the note when the section has nothing to show, e.g. where else the chapter shows the same thing. The
    conditions the study's sweep will compute are read from its manifest, so the note can tell the conditions
    still being computed from those that are not part of the study, and can say when the conditions shown still lack
    some of their runs (a sweep that trains a population per seed, stopped part-way).
    """
    from ..results import Results

    conditions, baselines = tuple(conditions), tuple(baselines)
    if not conditions:
        raise ValueError("study_section needs at least one condition")
    if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 0:
        raise ValueError(f"min_points must be a non-negative integer; got {min_points!r}")
    planned = labels = None
    if results is None:
        runs = None
    elif isinstance(results, Results):
        runs = results.runs(at)
        labels = results.planned_labels
        planned = None if labels is None else tuple(dict.fromkeys(labels))
        study = results.path.name if study is None else study
    elif isinstance(results, pd.DataFrame):
        runs = results
    else:
        raise TypeError(f"results must be a stored study (Results), a run summary or None; "
                        f"got {type(results).__name__}")
    name = Path(study).name if study is not None else "this study"
    if runs is None or runs.empty:
        present = ()
    else:
        found = list(pd.unique(runs["condition"]))
        order = {c: i for i, c in enumerate(planned or ())}
        present = tuple(sorted(found, key=lambda c: (order.get(c, len(order)), found.index(c))))
    section = StudySection(study=name, conditions=conditions, baselines=baselines, present=present,
                           planned=planned, points=0, min_points=min_points, aside=aside)
    if present:
        shown = section.shown
        section = dataclasses.replace(section, points=_complete_points(runs, shown),
                                      runs=int(runs["condition"].isin(shown).sum()),
                                      planned_runs=None if labels is None else sum(l in shown for l in labels))
    return section


def describe_gaps(tests: pd.DataFrame, baseline: str = "reset_all", alpha: float = 0.05) -> str:
    """The rows of :func:`~plasticity_lab.stats.condition_ttests` in words, a Markdown bullet per shift:
    on each split, whether the condition's mean normalised reward is below or above that of ``baseline`` (the
    tests' baseline, named in the words), and whether the difference is significant (``p < alpha``), with both
    means and ``p`` (where there is none — fewer than two seeds on a side, as in a study still being trained — the
    words say so).

    The book prints this instead of describing a stored study's gaps in fixed prose, so that the words stay true
    of whatever study the chapter reads.
    """
    missing = sorted({"condition", "split", "mean", "baseline_mean", "p"} - set(tests.columns))
    if missing:
        raise ValueError(f"describe_gaps needs condition_ttests' columns; missing: {missing}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha!r}")
    shifts = tests["shift"] if "shift" in tests.columns else pd.Series("all shifts", index=tests.index)
    lines = []
    for shift in dict.fromkeys(shifts):
        parts = []
        for row in tests[shifts == shift].itertuples():
            side = ("below" if row.mean < row.baseline_mean
                    else "above" if row.mean > row.baseline_mean else "level with")
            weight = "significantly " if row.p < alpha and side != "level with" else ""
            # a t-test needs two seeds on either side (and some spread): a study still being trained may lack them
            p_text = ("no t-test: too few seeds" if pd.isna(row.p) else "p < 0.001" if row.p < 0.001
                      else f"p = {row.p:.3f}")
            parts.append(f"{row.split}: {row.condition} {weight}{side} {baseline} "
                         f"({row.mean:+.3f} against {row.baseline_mean:+.3f}, {p_text})")
        lines.append(f"* *{shift}* — " + "; ".join(parts) + ".")
    return "\n".join(lines)


def substitute_condition(runs: pd.DataFrame, replacement: pd.DataFrame, condition: str) -> pd.DataFrame:
    """``runs`` (a study's run or round table) with the rows of ``condition`` replaced by ``replacement``'s, which
    hold one condition under any label — the same condition trained at another coefficient, such as
    ``regen_l2[coef=0.0001]`` — relabelled ``condition``. The statistics then read the replacement wherever they
    read ``condition``: the claims' verdicts, the correlations and the GLM, with either coefficient.

    The replacement must cover the same shifts and seeds as ``condition``'s runs (else the comparison would change
    more than the coefficient); one error names what differs.
    """
    labels = sorted(replacement["condition"].unique()) if "condition" in replacement else []
    if len(labels) != 1:
        raise ValueError(f"the replacement must hold exactly one condition; it holds {labels}")
    if condition not in set(runs["condition"]):
        raise ValueError(f"condition {condition!r} is not in the runs; they hold {sorted(runs['condition'].unique())}")
    keys = [k for k in ("env", "shift", "seed") if k in runs.columns and k in replacement.columns]
    own = runs[runs["condition"] == condition]
    ours = set(map(tuple, own[keys].drop_duplicates().to_numpy().tolist()))
    theirs = set(map(tuple, replacement[keys].drop_duplicates().to_numpy().tolist()))
    if ours != theirs:
        raise ValueError(f"the replacement {labels[0]!r} covers other {'/'.join(keys)} than {condition!r}: only in "
                         f"the runs {sorted(ours - theirs)}, only in the replacement {sorted(theirs - ours)}")
    relabelled = replacement.assign(condition=condition)[runs.columns]
    return pd.concat([runs[runs["condition"] != condition], relabelled], ignore_index=True)
