"""The book's stored-study sections on a study that holds only some of its conditions so far.

The book's study is computed one population per condition over several days, and each finished population is
committed as it lands, so chapters 4–11 meet every stage of it: nothing yet, only the baselines, some of a
chapter's conditions, all of them.

* :func:`plasticity_lab.figures.studies.study_section` is checked against expectations written out by hand: which
  subsets of a chapter's conditions can be shown, what the note says, how many shift × condition points a fit gets.
* A small real study (the sweep runner at the smoke preset, 7 conditions × 2 shifts × 2 seeds) is cut into
  partial copies by copying population folders, and each of chapters 4–11 is executed in smoke mode (papermill,
  ``smoke = True``, as in ``test_book.py``) with its stored-study section repeated once per copy, each copy
  pointed at through ``PLASTICITY_LAB_STUDY_DIR``: one kernel per chapter sees every stage of the study.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plasticity_lab import stats
from plasticity_lab.figures import studies as book_studies
from plasticity_lab.sweep import Sweep, run_sweep

try:
    import jupytext
    import nbformat
    import papermill
except ImportError as error:  # not a skip: the book is part of the product
    raise ImportError(f"{error}; the book's tests need the book extra: "
                      "source scripts/setup.sh dev,stats,book") from None

BOOK = Path(__file__).resolve().parent.parent / "book"
STUDY = "gridworld-book"
BASELINES = ["warm_start", "reset_all"]
RESETS = ["warm_start", "reset_all", "reset_final", "shrink_perturb", "injection"]  # chapter 6
NINE = list(stats.ANALYSIS_CONDITIONS)
DIAGNOSTIC_VALUES = {"entropy": 1.3, "weight_magnitude": 0.03, "weight_difference": 0.002, "grad_norm": 0.4,
                     "dead_units": 0.5}


def _runs(conditions, shifts=("permute", "window", "expand"), seeds=(0, 1, 2)) -> pd.DataFrame:
    """A run summary with one row per condition × shift × seed; values differ between conditions and seeds."""
    rng = np.random.default_rng(0)
    rows = []
    for k, condition in enumerate(conditions):
        for shift in shifts:
            for seed in seeds:
                rows.append({"env": "gridworld", "shift": shift, "condition": condition, "seed": seed,
                             "normalised_train_return": 0.1 * k + 0.05 * seed,
                             "normalised_test_return": -0.1 * k + 0.02 * seed,
                             **{d: v * (1 + 0.1 * k) + rng.normal(0, 0.01 * v) for d, v in DIAGNOSTIC_VALUES.items()}})
    return pd.DataFrame(rows)


# ---- where the chapters look -----------------------------------------------------------------------------------

def test_study_path_is_under_data_unless_the_environment_names_another_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("PLASTICITY_LAB_STUDY_DIR", raising=False)
    assert book_studies.study_path("gridworld-book") == Path("../data/gridworld-book")
    monkeypatch.setenv("PLASTICITY_LAB_STUDY_DIR", str(tmp_path))
    assert book_studies.study_path("gridworld-book") == tmp_path / "gridworld-book"
    monkeypatch.setenv("PLASTICITY_LAB_STUDY_DIR", "")  # set but empty: as if unset
    assert book_studies.study_path("x", default="elsewhere") == Path("elsewhere/x")


# ---- the decision, by hand -------------------------------------------------------------------------------------

def test_nothing_stored_yet_says_so_and_adds_the_aside():
    section = book_studies.study_section(None, RESETS, study=Path("../data/gridworld-book"), aside="See above.")
    assert not section.available and section.shown == () and section.missing == tuple(RESETS)
    assert section.message == ("The study gridworld-book is still being computed: its results are not in this "
                               "copy of the repository yet, so this section has nothing to show. See above.")
    assert '<p class="admonition-title">Not yet available</p>' in section.note()
    assert section._repr_html_() == section.note() and str(section) == section.message


@pytest.mark.parametrize("held", [c for n in range(len(RESETS) + 1) for c in itertools.combinations(RESETS, n)],
                         ids=lambda held: "+".join(held) or "none")
def test_every_subset_of_a_chapters_conditions(held):
    """Chapter 6's section against every subset of its conditions (plus one it does not show)."""
    runs = _runs([*held, "l2"]) if held else _runs(["l2"])
    section = book_studies.study_section(runs, RESETS, study="gridworld-book")
    own_held = [c for c in ("reset_final", "shrink_perturb", "injection") if c in held]
    baseline_held = [c for c in BASELINES if c in held]
    assert section.available == bool(own_held and baseline_held)
    assert section.shown == tuple(c for c in RESETS if c in held)  # the chapter's order, l2 never
    assert section.missing == tuple(c for c in RESETS if c not in held)
    assert section.pending == section.missing  # a bare run table does not say what is still to come
    text = section.message
    for condition in section.missing:
        assert condition in text.split("Not in this study (yet): ")[1]
    if section.available:
        assert text.startswith("Shown here: ")
        comparisons = stats.compare_conditions(runs, [c for c in section.shown if c != "reset_all"])
        counts = stats.tally(comparisons)
        expected = {(c, b) for b in baseline_held for c in section.shown if c != b and c != "reset_all"}
        assert set(counts.index) == expected
        title = "Partly available" if section.missing else None
    else:
        # it names everything the study holds, then what the section needs
        holds = text.split(" so far")[0]
        assert holds.startswith("The study gridworld-book holds ") and all(c in holds for c in [*held, "l2"])
        assert "compares reset_final, shrink_perturb or injection with warm_start or reset_all" in text
        title = "Not yet available"
    note = section.note()
    if title is None:
        assert note.startswith("<p>Shown here: <code>") and "admonition" not in note
    else:
        assert f'<p class="admonition-title">{title}</p>' in note


def test_the_notes_in_words():
    only_baselines = book_studies.study_section(_runs(BASELINES), RESETS, study="gridworld-book")
    assert only_baselines.message == (
        "The study gridworld-book holds warm_start and reset_all so far. This section compares reset_final, "
        "shrink_perturb or injection with warm_start or reset_all and needs at least one of each. "
        "Not in this study (yet): reset_final, shrink_perturb and injection.")
    no_baseline = book_studies.study_section(_runs(["injection"]), RESETS, study="s")
    assert not no_baseline.available
    assert no_baseline.message.startswith("The study s holds injection so far. This section compares")
    partly = book_studies.study_section(_runs(["warm_start", "reset_final"]), RESETS, study="s")
    assert partly.message == ("Shown here: warm_start and reset_final. "
                              "Not in this study (yet): reset_all, shrink_perturb and injection.")
    assert "<code>reset_final</code>" in partly.note()


def test_a_study_that_records_its_sweep_tells_pending_from_absent():
    planned = ("warm_start", "reset_all", "shrink_perturb", "l2")
    regularisers = ("warm_start", "reset_all", "l2", "regen_l2")

    def section(present, conditions=regularisers):
        return book_studies.StudySection(study="s", conditions=conditions, baselines=("warm_start", "reset_all"),
                                         present=present, planned=planned, points=0)

    waiting = section(("warm_start", "reset_all"))
    assert not waiting.available and waiting.pending == ("l2",) and waiting.missing == ("l2", "regen_l2")
    assert waiting.message.startswith("The study s holds warm_start and reset_all so far (2 of the 4 conditions "
                                      "it computes).")
    assert waiting.message.endswith("Still being computed: l2. Not part of this study: regen_l2.")
    assert "Not yet available" in waiting.note()
    never = section(("warm_start", "reset_all"), conditions=("warm_start", "reset_all", "regen_l2"))
    assert not never.available and never.pending == ()
    assert '<p class="admonition-title">Not available</p>' in never.note()
    done = section(planned)
    assert done.available and done.missing == ("regen_l2",) and done.pending == ()
    assert done.message == "Shown here: warm_start, reset_all and l2. Not part of this study: regen_l2."
    assert "admonition" not in done.note()


def test_points_for_the_fits():
    # two shifts: each condition is two shift × condition points
    one = book_studies.study_section(_runs(["warm_start"], shifts=("permute", "window")), NINE, baselines=(),
                                     min_points=3, study="s")
    assert one.points == 2 and not one.available
    assert "fits the shift × condition points of warm_start, reset_all, shrink_perturb" in one.message
    assert "needs at least 3 of them; the study has 2 so far." in one.message
    two = book_studies.study_section(_runs(["warm_start", "layernorm", "reset_all"], shifts=("permute", "window")),
                                     NINE, baselines=(), min_points=3, study="s")
    assert two.available and two.points == 4 and two.shown == ("warm_start", "reset_all")  # layernorm: not a point
    assert two.lacks_points(7, "the GLM") == ("not computed: the GLM needs at least 7 shift × condition points; "
                                              "the study has 4 so far")
    # a point with a value missing for every seed cannot be fitted
    runs = _runs(["warm_start", "reset_all", "l2", "redo"], shifts=("permute", "window"))
    runs.loc[(runs.condition == "l2") & (runs["shift"] == "window"), "dead_units"] = np.nan
    assert book_studies.study_section(runs, NINE, baselines=(), study="s").points == 7


@pytest.mark.parametrize("conditions", [1, 2, 3, 4])
def test_lacks_points_agrees_with_what_the_glm_can_fit(conditions):
    runs = _runs(NINE[:conditions], shifts=("permute", "window"))
    section = book_studies.study_section(runs, NINE, baselines=(), study="s")
    note = section.lacks_points(len(stats.DIAGNOSTICS) + 2, "the GLM")
    if note is None:
        assert stats.diagnostics_glm(runs, split="train").attrs["n"] == section.points
    else:
        with pytest.raises(ValueError, match="needs more than"):
            stats.diagnostics_glm(runs, split="train")


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="at least one condition"):
        book_studies.study_section(None, [])
    with pytest.raises(ValueError, match="min_points"):
        book_studies.study_section(None, RESETS, min_points=-1)
    with pytest.raises(TypeError, match="Results"):
        book_studies.study_section({"condition": ["warm_start"]}, RESETS)


# ---- a real partial study ----------------------------------------------------------------------------------------

TINY = {
    "study": STUDY,
    "preset": "smoke",
    "shifts": ["permute", "window"],
    "conditions": ["warm_start", "reset_all", "shrink_perturb", "l2", "soft_shrink_perturb", "layernorm", "redo"],
    "seeds": "0-1",
    "max_members": 4,
    "overrides": {"rounds": 2, "epochs_per_round": 2, "test_episodes": 11, "test_interval": 1},
}

#: Copies of the study as it stands at several stages (the folder that PLASTICITY_LAB_STUDY_DIR names), in the
#: order the chapters run them.
SUBSETS = {
    "nothing": [],
    "warm_start": ["warm_start"],
    "baselines": ["warm_start", "reset_all"],
    "no_baseline": ["shrink_perturb", "l2", "soft_shrink_perturb", "layernorm", "redo"],
    "partial": TINY["conditions"],
}


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> dict[str, Path]:
    """Subset name → a folder holding ``gridworld-book`` with only those conditions' populations (no folder for
    ``nothing``). The study manifest is the whole sweep's, as in a study still being computed."""
    root = tmp_path_factory.mktemp("studies")
    run_sweep(Sweep.from_dict(TINY), root=root / "full", threads=1, progress=False)
    source = root / "full" / STUDY
    out = {}
    for name, conditions in SUBSETS.items():
        out[name] = root / name
        out[name].mkdir()
        if not conditions:
            continue
        target = out[name] / STUDY
        (target / "populations").mkdir(parents=True)
        shutil.copy2(source / "manifest.json", target / "manifest.json")
        for folder in sorted((source / "populations").iterdir()):
            stored = {c["condition"] for c in json.loads((folder / "manifest.json").read_text())["configs"]}
            if stored <= set(conditions):
                shutil.copytree(folder, target / "populations" / folder.name)
    return out


def test_a_stored_partial_study_knows_what_is_still_to_come(studies):
    results = book_studies.load_study(studies["baselines"] / STUDY)
    assert sorted(results.runs()["condition"].unique()) == ["reset_all", "warm_start"]
    section = book_studies.study_section(results, ["warm_start", "reset_all", "l2", "regen_l2", "regen_w2"])
    assert section.study == STUDY and section.planned == tuple(TINY["conditions"])
    assert not section.available and section.pending == ("l2",) and section.missing == ("l2", "regen_l2", "regen_w2")
    assert "(2 of the 7 conditions it computes)" in section.message
    assert section.message.endswith("Still being computed: l2. Not part of this study: regen_l2 and regen_w2.")
    fits = book_studies.study_section(results, NINE, baselines=(), min_points=3, at="final")
    assert fits.available and fits.points == 4  # 2 conditions × 2 shifts
    assert book_studies.load_study(studies["nothing"] / STUDY) is None


def test_a_study_with_some_seeds_of_each_condition_says_how_many_runs_it_holds(tmp_path):
    """A sweep of one population per run, stopped part-way (one of reset_all's two runs not stored yet)."""
    sweep = Sweep.from_dict({"study": "seeds", "preset": "smoke", "shifts": ["permute"], "seeds": "0-1",
                             "conditions": ["warm_start", "reset_all", "l2"], "max_members": 1,
                             "overrides": {"rounds": 2, "epochs_per_round": 2, "test_episodes": 11}})
    run_sweep(sweep, root=tmp_path, threads=1, progress=False)
    study = tmp_path / "seeds"
    late = next(t for t in sweep.populations() if t.configs[0].condition == "reset_all" and t.configs[0].seed == 1)
    shutil.rmtree(study / "populations" / late.name)
    results = book_studies.load_study(study)
    assert results.planned_labels == ["warm_start"] * 2 + ["reset_all"] * 2 + ["l2"] * 2
    section = book_studies.study_section(results, ["reset_all", "warm_start"], baselines=("reset_all",))
    # shown: warm_start (2 runs of 2) and reset_all (1 of 2); l2 is held but not shown, so not counted
    assert section.available and (section.runs, section.planned_runs) == (3, 4) and section.incomplete
    assert section.message == ("Shown here: reset_all and warm_start. They hold 3 of the 4 runs the study computes "
                               "for them so far; the rest are still being computed.")
    assert '<p class="admonition-title">Partly available</p>' in section.note()
    whole = book_studies.study_section(results, ["warm_start", "l2"], baselines=("warm_start",))
    assert (whole.runs, whole.planned_runs) == (4, 4) and not whole.incomplete
    assert whole.message == "Shown here: warm_start and l2." and "admonition" not in whole.note()
    # a bare run table does not record a plan: nothing is said of runs
    table = book_studies.study_section(results.runs(), ["reset_all", "warm_start"], baselines=("reset_all",))
    assert table.planned_runs is None and not table.incomplete and table.message == "Shown here: reset_all and warm_start."
    # the report says the same of the whole study, and names a condition with no run yet
    from plasticity_lab.report import report
    assert report(results).splitlines()[1].startswith("5 of the 6 runs its sweep computes (still being trained); ")
    for task in sweep.populations():
        if task.configs[0].condition == "l2":
            shutil.rmtree(study / "populations" / task.name)
    assert report(book_studies.load_study(study)).splitlines()[1].startswith(
        "3 of the 6 runs its sweep computes (still being trained; no run yet of l2); ")


# ---- the chapters on it --------------------------------------------------------------------------------------------

#: chapter → (the heading of its stored-study section, the conditions it needs one of, next to a baseline;
#: None: it fits shift × condition points of the paper's nine conditions and needs 3 of them[, the baselines
#: one of which it needs: default both])
CHAPTERS = {
    "04_plasticity_loss": ("All three shifts: the book's study", ["warm_start"], ["reset_all"]),
    "05_diagnostics": ("All three shifts: the book's study", ["warm_start"], ["reset_all"]),
    "06_resets_and_injection": ("Results from the stored study", ["reset_final", "shrink_perturb", "injection"]),
    "07_regularisation": ("Results from the stored study", ["l2", "regen_l2", "regen_w2"]),
    "08_soft_shrink_perturb": ("In the main study", ["soft_shrink_perturb", "soft_shrink_perturb+layernorm"]),
    "09_architecture": ("Results from the stored study",
                        ["layernorm", "crelu", "soft_shrink_perturb", "soft_shrink_perturb+layernorm"]),
    "10_redo": ("Results from the stored study", ["redo"]),
    "12_regression": ("The main study", None),
}
PLOTLY = "application/vnd.plotly.v1+json"


def _staged_notebook(chapter: str, heading: str, roots: dict[str, Path]):
    """The whole chapter, with its stored-study section run once per study folder, each copy after a cell that
    points PLASTICITY_LAB_STUDY_DIR at that folder; the chapter's later sections see the last folder."""
    notebook = jupytext.read(BOOK / f"{chapter}.md")
    before, section, after, where = [], [], [], "before"
    for cell in notebook.cells:
        titles = re.findall(r"^## (.+?)\s*$", cell.source, re.M) if cell.cell_type == "markdown" else []
        if titles and titles[0] == heading:
            where = "section"
        elif titles and where == "section":
            where = "after"
        {"before": before, "section": section, "after": after}[where].append(cell)
    assert any("studies.study_path" in c.source for c in section), f"{chapter}: no stored-study section {heading!r}"
    staged = []
    for name, root in roots.items():
        point = nbformat.v4.new_code_cell(f'import os\nos.environ["PLASTICITY_LAB_STUDY_DIR"] = {str(root)!r}')
        for index, cell in enumerate([point, *section]):
            copy = nbformat.from_dict(json.loads(json.dumps(cell)))
            copy["id"] = f"{name}-{index}"  # cell ids must stay unique across the copies
            copy.metadata["tags"] = [*copy.metadata.get("tags", []), f"subset:{name}"]
            staged.append(copy)
    notebook.cells = [*before, *staged, *after]
    return notebook


def _outputs(cells) -> tuple[str, list[dict]]:
    """The text and HTML a group of executed cells showed, and its plotly figures."""
    text, figures = [], []
    for cell in cells:
        for output in cell.get("outputs", []):
            text.append("".join(output.get("text", "")))
            data = output.get("data", {})
            text.append("".join(data.get("text/html", "")))
            text.append("".join(data.get("text/markdown", "")))
            if PLOTLY in data:
                figures.append(data[PLOTLY])
    return "\n".join(text), figures


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_chapter_runs_on_every_stage_of_the_study(chapter, studies, tmp_path, monkeypatch):
    heading, own, *baselines = CHAPTERS[chapter]
    baselines = baselines[0] if baselines else BASELINES
    # nothing in the kernel reads the repository's data/ even before the first cell that points elsewhere
    monkeypatch.setenv("PLASTICITY_LAB_STUDY_DIR", str(studies["nothing"]))
    source = tmp_path / f"{chapter}.ipynb"
    nbformat.write(_staged_notebook(chapter, heading, studies), source)
    try:
        papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters={"smoke": True},
                                   kernel_name="python3", cwd=str(BOOK), progress_bar=False, log_output=False,
                                   execution_timeout=300)
    except papermill.PapermillExecutionError as error:
        pytest.fail(f"{chapter} failed in smoke mode at cell {error.exec_count}: {error.ename}: {error.evalue}")
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    assert not [o for c in executed["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    for name, held in SUBSETS.items():
        group = [c for c in executed["cells"] if f"subset:{name}" in c["metadata"].get("tags", [])]
        text, figures = _outputs(group)
        if own is None:
            points = 2 * len([c for c in held if c in NINE])  # two shifts
            available = points >= 3
        else:
            available = bool(set(held) & set(own)) and bool(set(held) & set(baselines))
        where = f"{chapter} on the study holding {held or 'nothing'}"
        if available:
            assert "Shown here:" in text and "Not yet available" not in text and "Not available" not in text, where
            assert figures, f"{where}: no figure"
            assert all(f["data"] for f in figures), f"{where}: an empty figure"
            if own is None:
                glm_skipped = "not computed: the GLM needs at least 7 shift × condition points" in text
                assert glm_skipped == (points < 7), where
        else:
            assert '<p class="admonition-title">Not yet available</p>' in text, where
            assert not figures, f"{where}: a figure although the section has nothing to show"
            for condition in held:
                assert f"<code>{condition}</code>" in text, f"{where}: the note does not name {condition}"
