"""The Montezuma chapter's stored-study section on a study at each stage of being trained in sittings.

The book's Montezuma study is stored a few runs per sitting, so the section meets it with nothing yet, with the
baseline alone, with one seed of some conditions, and complete. Here the section's own cells (and the scale
section's) run against copies of a tiny study trained by the package's sweep, holding each of those subsets of its
populations, and what they show is checked: the note, whether a figure is drawn, and the dead-unit comparison's
numbers recomputed by hand from the per-iteration table.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jupytext
import pandas as pd
import plotly.graph_objects as go
import pytest
from IPython.display import Markdown

from plasticity_lab.sweep import Sweep, run_sweep

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "13_montezuma.md"
STUDY = "montezuma-book"
CONDITIONS = ["warm_start", "regen_l2", "soft_shrink_perturb"]
TINY = {"study": STUDY, "envs": ["montezuma"], "conditions": CONDITIONS, "seeds": [0, 1], "max_members": 1,
        "keep_epochs": True,
        "overrides": {"epochs_per_round": 3, "num_envs": 1,
                      "rnd": {"rollout_length": 8, "init_steps": 4, "epochs": 1, "minibatches": 2}}}
#: stage → the (condition, seed) runs it holds
STAGES = {
    "nothing": [],
    "baseline": [("warm_start", 0), ("warm_start", 1)],
    "first seeds": [("warm_start", 0), ("regen_l2", 0)],
    "complete": [(c, s) for c in CONDITIONS for s in (0, 1)],
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory) -> dict[str, Path]:
    """Stage → a folder of studies holding ``montezuma-book`` with only that stage's runs (none for
    ``nothing``); the study manifest is the whole sweep's, as in a study still being trained."""
    root = tmp_path_factory.mktemp("montezuma")
    run_sweep(Sweep.from_dict(TINY), root=root / "full", threads=1, progress=False)
    source = root / "full" / STUDY
    out = {}
    for stage, held in STAGES.items():
        out[stage] = root / stage.replace(" ", "-")
        out[stage].mkdir()
        if not held:
            continue
        target = out[stage] / STUDY
        (target / "populations").mkdir(parents=True)
        shutil.copy2(source / "manifest.json", target / "manifest.json")
        for folder in (source / "populations").iterdir():
            config = json.loads((folder / "manifest.json").read_text())["configs"][0]
            if (config["condition"], config["seed"]) in held:
                shutil.copytree(folder, target / "populations" / folder.name)
    return out


def _cells(*headings: str) -> list[str]:
    """The code cells of the chapter's sections with these headings, in order."""
    cells, inside = [], False
    for cell in jupytext.read(CHAPTER).cells:
        if cell.cell_type == "markdown":
            titles = re.findall(r"^## (.+?)\s*$", cell.source, re.M)
            if titles:
                inside = titles[0] in headings
        elif inside:
            cells.append(cell.source)
    assert len(cells) >= 4, f"the chapter has no sections {headings} with their cells"
    return cells


def _run(folder: Path, monkeypatch, capsys) -> tuple[dict, list, str]:
    """Run the stored-study and scale sections with the chapter's names, studies looked up in ``folder``; returns
    the namespace, what the cells displayed, and what they printed."""
    import plasticity_lab as pl
    from plasticity_lab.figures import montezuma as mz
    from plasticity_lab.figures import studies
    from plasticity_lab.figures.style import study_caption

    monkeypatch.setenv("PLASTICITY_LAB_STUDY_DIR", str(folder))
    shown = []
    namespace = dict(pd=pd, pl=pl, mz=mz, studies=studies, study_caption=study_caption, Markdown=Markdown,
                     display=shown.append)
    capsys.readouterr()
    for source in _cells("The stored study", "Scale: what this can and cannot show"):
        exec(compile(source, str(CHAPTER), "exec"), namespace)  # noqa: S102
    return namespace, shown, capsys.readouterr().out


@pytest.mark.parametrize("stage", ["nothing", "baseline"])
def test_without_an_intervention_to_compare_the_section_says_what_is_missing_and_draws_nothing(
        stage, stages, monkeypatch, capsys):
    namespace, shown, printed = _run(stages[stage], monkeypatch, capsys)
    section = namespace["section"]
    assert not section.available and namespace["results"] is None
    assert shown == [section] and printed == ""  # the note alone: no figure, no table, no t-test
    note = section.note()
    assert '<p class="admonition-title">Not yet available</p>' in note and STUDY in note
    if stage == "baseline":
        assert section.pending == ("regen_l2", "soft_shrink_perturb")
        assert "Still being computed: regen_l2 and soft_shrink_perturb." in section.message


def test_one_seed_of_an_intervention_is_shown_without_a_t_test(stages, monkeypatch, capsys):
    namespace, shown, printed = _run(stages["first seeds"], monkeypatch, capsys)
    section = namespace["section"]
    assert section.available and section.incomplete and (section.runs, section.planned_runs) == (2, 4)
    assert '<p class="admonition-title">Partly available</p>' in section.note()
    figures = [item for item in shown if isinstance(item, go.Figure)]
    assert len(figures) == 1 and all(trace.y is not None and len(trace.y) for trace in figures[0].data)
    # the dead units of each run's last tenth of 3 iterations — its last iteration — from the per-iteration table
    epochs = namespace["results"].epochs()
    last = epochs[epochs["epoch"] == 2].set_index("condition")["dead_units"]
    line = next(text for text in printed.splitlines() if text.startswith("regen_l2: dead units"))
    assert line == (f"regen_l2: dead units {last['regen_l2']:.3f} against warm_start's {last['warm_start']:.3f} "
                    f"(no t-test yet: too few seeds; 1 seed)")
    assert "seeds per condition: regen_l2 1, warm_start 1" in printed


def test_the_complete_study_is_shown_with_its_t_tests(stages, monkeypatch, capsys):
    from scipy import stats as scipy_stats

    namespace, shown, printed = _run(stages["complete"], monkeypatch, capsys)
    section = namespace["section"]
    assert section.available and not section.incomplete and not section.missing
    epochs = namespace["results"].epochs()
    last = epochs[epochs["epoch"] == 2]
    baseline = last[last["condition"] == "warm_start"]["dead_units"]
    for condition in ("regen_l2", "soft_shrink_perturb"):
        values = last[last["condition"] == condition]["dead_units"]
        t, p = scipy_stats.ttest_ind(values, baseline)  # positive t: the condition above the baseline
        line = next(text for text in printed.splitlines() if text.startswith(f"{condition}: dead units"))
        assert line == (f"{condition}: dead units {values.mean():.3f} against warm_start's {baseline.mean():.3f} "
                        f"(t = {t:.2f}, p = {p:.3g}; 2 seeds)")
    steps = 3 * 1 * 8  # iterations × games × rollout length
    assert (f"per run: {steps:,} agent steps = {4 * steps:,} frames, 1/{2e9 / (4 * steps):,.0f} of RND's two "
            f"billion; seeds per condition: regen_l2 2, soft_shrink_perturb 2, warm_start 2") in printed
