"""The CoinRun chapter's stored-study section, run on a small synthetic CoinRun study.

The stored CoinRun study may still hold only some of its runs, so here the section's own cells run against a
complete study written the way ``plasticity-lab sweep`` writes one (the per-epoch table of
``tests/fixtures/make_release_readout.py``, its conditions renamed to the chapter's), and what they compute is checked
against means, smoothed curves and t-tests done by hand with pandas and scipy.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import jupytext
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from IPython.display import Markdown
from scipy import stats as scipy_stats

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = ROOT / "book" / "11_coinrun.md"
FIXTURES = Path(__file__).parent / "fixtures"
_spec = importlib.util.spec_from_file_location("make_release_readout", FIXTURES / "make_release_readout.py")
maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maker)
RENAMED = {"l2": "soft_shrink_perturb+layernorm"}  # the fixture's third condition, as the chapter's


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    """A folder of studies: a synthetic ``coinrun-shifts`` (3 shifts × 3 conditions × 3 seeds, 10 rounds of 20
    epochs, every epoch kept) and the repository's ``gridworld-book`` beside it, which the section compares it
    with."""
    from rollouts import store_synthetic_study

    root = tmp_path_factory.mktemp("studies")
    epochs = maker.synthetic_epochs().assign(env="coinrun")
    epochs["condition"] = epochs["condition"].replace(RENAMED)
    store_synthetic_study(root / "coinrun-shifts", epochs, {
        "envs": ["coinrun"], "conditions": [RENAMED.get(c, c) for c in maker.CONDITIONS],
        "shifts": list(maker.SHIFTS), "seeds": list(maker.SEEDS),
        "overrides": {"rounds": maker.ROUNDS, "epochs_per_round": maker.EPOCHS_PER_ROUND,
                      "test_interval": maker.TEST_INTERVAL}}, keep_epochs=True)
    grid = ROOT / "data" / "gridworld-book"
    if (grid / "manifest.json").exists():
        (root / "gridworld-book").symlink_to(grid)
    return root


def _section_cells() -> list[str]:
    """The code cells of the chapter's section "The stored study", in order."""
    cells, inside = [], False
    for cell in jupytext.read(CHAPTER).cells:
        if cell.cell_type == "markdown":
            titles = re.findall(r"^## (.+?)\s*$", cell.source, re.M)
            if titles:
                inside = titles[0] == "The stored study"
        elif inside:
            cells.append(cell.source)
    assert len(cells) >= 3, "the chapter has no section 'The stored study' with its cells"
    return cells


def _run_section(folder: Path, monkeypatch) -> tuple[dict, list]:
    """Run the section's cells with the chapter's names, its studies looked up in ``folder``; returns the cells'
    namespace and what they displayed, in order."""
    import plasticity_lab as pl
    from plasticity_lab import stats
    from plasticity_lab.figures import comparisons, curves, studies

    monkeypatch.setenv("PLASTICITY_LAB_STUDY_DIR", str(folder))
    shown = []
    namespace = dict(pd=pd, pl=pl, stats=stats, comparisons=comparisons, curves=curves, studies=studies,
                     Markdown=Markdown, display=shown.append)
    for source in _section_cells():
        exec(compile(source, str(CHAPTER), "exec"), namespace)  # noqa: S102
    return namespace, shown


def test_the_stored_study_section_reads_a_coinrun_study(study_dir, monkeypatch):
    namespace, shown = _run_section(study_dir, monkeypatch)

    assert namespace["section"].available and not namespace["section"].missing
    runs = namespace["runs"]
    # the shift × condition table: the stored runs' means over seeds, recomputed from the per-epoch fixture's
    # read-outs is the stats module's business (tests/test_readout_release.py); here, that it is those runs' means
    table = next(item for item in shown if isinstance(item, pd.DataFrame) and item.index.nlevels == 2)
    assert len(table) == len(maker.SHIFTS) * len(maker.CONDITIONS)
    for (shift, condition), row in table.iterrows():
        mine = runs[(runs["shift"] == shift) & (runs["condition"] == condition)]
        assert len(mine) == len(maker.SEEDS) == row[("normalised_train_return", "count")]
        assert row[("normalised_train_return", "mean")] == pytest.approx(
            round(mine["normalised_train_return"].mean(), 3))

    # one curves figure per shift; its mean line is each run's train return smoothed inside each round by the
    # read-out's window — 2 epochs for rounds of 20, which centred on an even count is an epoch and the one before
    # it (the round's first epoch alone) — then averaged over seeds: recomputed here from the fixture with numpy
    assert namespace["window"] == 2
    figures = [item for item in shown if isinstance(item, go.Figure)]
    assert [f.layout.title.text.rsplit("shift ", 1)[1] for f in figures] == list(maker.SHIFTS)
    epochs = maker.synthetic_epochs()
    for figure, shift in zip(figures, maker.SHIFTS):
        line = next(t for t in figure.data if t.meta == {"condition": "warm_start", "metric": "train_return",
                                                         "role": "mean"})
        smoothed = []
        for seed in maker.SEEDS:
            run = epochs[(epochs["shift"] == shift) & (epochs["condition"] == "warm_start") & (epochs["seed"] == seed)]
            values = run["train_return"].to_numpy().reshape(maker.ROUNDS, maker.EPOCHS_PER_ROUND)
            before = np.pad(values, ((0, 0), (1, 0)), constant_values=np.nan)[:, :-1]  # no epoch before a round
            smoothed.append(np.nanmean(np.stack([before, values]), axis=0).ravel())
        np.testing.assert_allclose(line.y, np.mean(smoothed, axis=0), rtol=1e-5)

    # the t-tests the section prints: each condition's runs against reset-all's, pooled-variance t-tests by hand
    tests = namespace["tests"]
    assert set(tests["condition"]) == {"warm_start", "soft_shrink_perturb+layernorm"}
    for row in tests.itertuples():
        pick = runs[(runs["shift"] == row.shift)]
        column = f"normalised_{row.split}_return"
        a = pick.loc[pick["condition"] == row.condition, column].dropna()
        b = pick.loc[pick["condition"] == "reset_all", column].dropna()
        expected = scipy_stats.ttest_ind(b, a)  # the paper's sign: positive t = below reset-all
        assert (row.t, row.p) == (pytest.approx(expected.statistic, rel=1e-9), pytest.approx(expected.pvalue, rel=1e-9))
    words = [item.data for item in shown if isinstance(item, Markdown)]
    assert len(words) == 2 and all("against reset-all" in text for text in words)

    if (study_dir / "gridworld-book").exists():  # the two environments side by side
        table = next(item for item in shown if isinstance(item, pd.DataFrame) and "gridworld-book" in item.columns)
        assert list(table.columns) == ["coinrun-shifts", "gridworld-book"]
        coinrun_runs = runs[runs["condition"] == "warm_start"]
        pooled = pd.concat([coinrun_runs["normalised_train_return"], coinrun_runs["normalised_test_return"]])
        assert table.loc["warm_start", "coinrun-shifts"] == pytest.approx(round(pooled.mean(), 3), abs=1e-12)
        # the paper's two conclusions these conditions can test, checked in each study on the runs of the table
        verdicts = next(item for item in shown if isinstance(item, pd.DataFrame) and item.index.name == "claim")
        assert list(verdicts.index) == ["warm-start loses plasticity", "soft S+P + LayerNorm is best"]
        assert list(verdicts.columns) == ["coinrun-shifts", "gridworld-book"]
        from plasticity_lab.stats import check_claims
        grid_runs = namespace["grid"].runs("mean")
        grid_runs = grid_runs[grid_runs["condition"].isin(["reset_all", "warm_start", "soft_shrink_perturb+layernorm"])]
        for name, study_runs in (("coinrun-shifts", runs), ("gridworld-book", grid_runs)):
            expected = check_claims(study_runs).set_index("claim")["verdict"]
            assert verdicts[name].to_dict() == expected[verdicts.index].to_dict()


def test_without_a_study_the_section_says_so_and_shows_nothing(tmp_path, monkeypatch):
    namespace, shown = _run_section(tmp_path, monkeypatch)
    assert not namespace["section"].available
    assert len(shown) == 1 and "coinrun-shifts" in str(shown[0]) and "sweeps/coinrun-shifts.toml" in shown[0].aside


def test_the_report_reads_a_coinrun_study(study_dir, capsys):
    """``plasticity-lab report data/coinrun-shifts``, which the chapter points to, on the same study."""
    import warnings

    from plasticity_lab.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' power solver warns where no sample size reaches 80 %
        assert main(["report", str(study_dir / "coinrun-shifts")]) == 0
    out = capsys.readouterr().out
    assert "27 runs; conditions: reset_all, soft_shrink_perturb+layernorm, warm_start" in out
    assert "The paper's conclusions (PROTOCOL §7) against this study (coinrun, at=mean)" in out
    assert "[not testable] Plasticity injection can be worse than doing nothing." in out


def test_a_study_with_one_shift_so_far_is_compared_with_the_gridworld_under_that_shift(tmp_path, monkeypatch):
    """While the CoinRun study holds only its *permute* runs (the pilot's), the section shows that shift alone, and
    the gridworld's column beside it averages the gridworld's *permute* runs only, not all three shifts."""
    from rollouts import store_synthetic_study

    grid = ROOT / "data" / "gridworld-book"
    if not (grid / "manifest.json").exists():
        pytest.skip("the repository's gridworld-book study is not here")
    epochs = maker.synthetic_epochs().assign(env="coinrun")
    epochs = epochs[epochs["shift"] == "permute"].reset_index(drop=True)
    epochs["condition"] = epochs["condition"].replace(RENAMED)
    store_synthetic_study(tmp_path / "coinrun-shifts", epochs, {
        "envs": ["coinrun"], "conditions": [RENAMED.get(c, c) for c in maker.CONDITIONS], "shifts": ["permute"],
        "seeds": list(maker.SEEDS), "overrides": {"rounds": maker.ROUNDS, "epochs_per_round": maker.EPOCHS_PER_ROUND,
                                                  "test_interval": maker.TEST_INTERVAL}}, keep_epochs=True)
    (tmp_path / "gridworld-book").symlink_to(grid)
    _, shown = _run_section(tmp_path, monkeypatch)
    figures = [item for item in shown if isinstance(item, go.Figure)]
    assert [f.layout.title.text.rsplit("shift ", 1)[1] for f in figures] == ["permute"]
    table = next(item for item in shown if isinstance(item, pd.DataFrame) and "gridworld-book" in item.columns)
    grid_runs = pd.read_parquet(next((grid / "populations").glob("gridworld-warm_start-*/runs_mean.parquet")))
    grid_runs = grid_runs[grid_runs["shift"] == "permute"]
    assert len(grid_runs) == 5  # the gridworld study's 5 seeds under permute
    pooled = pd.concat([grid_runs["normalised_train_return"], grid_runs["normalised_test_return"]])
    assert table.loc["warm_start", "gridworld-book"] == pytest.approx(round(pooled.mean(), 3), abs=1e-12)
