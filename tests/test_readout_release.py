"""``readout="release"`` against the authors' release's own arithmetic.

``tests/fixtures/make_release_readout.py`` builds a small synthetic study (3 shifts × 3 conditions × 3 seeds,
10 rounds of 20 epochs, a test every 4 epochs, one run stopping after round 7) and computes, apart from
``plasticity_lab.stats`` and in the release's own data layout, what the release's analysis would print for it;
``release_readout.json`` holds those numbers. Here ``plasticity_lab.stats`` must reproduce them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from plasticity_lab import stats as A

FIXTURES = Path(__file__).parent / "fixtures"
FIXTURE = json.loads((FIXTURES / "release_readout.json").read_text())
_spec = importlib.util.spec_from_file_location("make_release_readout", FIXTURES / "make_release_readout.py")
maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maker)
DIAGS = list(maker.DIAGNOSTICS)
TOL = dict(rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def epochs() -> pd.DataFrame:
    df = maker.synthetic_epochs()
    assert maker.checksum(df) == pytest.approx(FIXTURE["checksum"], rel=1e-12)  # the study of the fixture
    return df


def _numbers(offset):
    """The fixture's numbers for ``offset`` (None: the default read point, 1 epoch at E = 20)."""
    return FIXTURE["offsets"][str(offset or A.release_offset(maker.EPOCHS_PER_ROUND))]


def _leaves(tree, path=()):
    """``{path: value}`` for every number or string of a JSON tree."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _leaves(sub, (*path, key)).items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _leaves(sub, (*path, i)).items()}
    return {path: tree}


def test_the_fixture_is_what_its_script_computes():
    """The stored numbers are those the independent script gives today (no stale fixture)."""
    curves = maker.synthetic_curves()
    for offset in maker.OFFSETS:
        fresh = _leaves(json.loads(json.dumps(maker.release_numbers(curves, offset))))
        stored = _leaves(FIXTURE["offsets"][str(offset)])
        assert fresh.keys() == stored.keys()
        for path, value in stored.items():
            assert fresh[path] == (pytest.approx(value, rel=1e-9) if isinstance(value, float) else value), path


def test_release_offset_scales_the_releases_50_of_5000_epochs():
    assert [A.release_offset(E) for E in (5000, 20000, 300, 200, 60, 20, 1)] == [50, 200, 3, 2, 1, 1, 1]
    assert A.release_offset(maker.EPOCHS_PER_ROUND) == 1
    with pytest.raises(ValueError, match="epochs_per_round"):
        A.release_offset(0)


@pytest.mark.parametrize("offset", [None, 3])
def test_readouts_are_the_releases_unsmoothed_values_and_stretched_test_curve(epochs, offset):
    readouts = A.release_readouts(epochs, offset=offset)
    for name, expected in _numbers(offset)["readouts"].items():
        shift, condition, seed = name.split("/")
        run = readouts[(readouts["shift"] == shift) & (readouts["condition"] == condition)
                       & (readouts["seed"] == int(seed))].sort_values("round")
        assert run["round"].tolist() == list(range(1, 11))
        for metric, values in expected.items():
            column = f"{metric}_release_readout"
            assert run[column].tolist() == pytest.approx(values, **TOL), (name, metric)


def test_the_test_readout_before_a_shift_mixes_in_the_evaluation_after_it(epochs):
    """The stretch's arithmetic on one run: at E = 20 with a test every 4 epochs, round 1 is read at epoch 19, which
    the stretched curve places at 19·49/199 evaluations: 0.678 of the way from round 1's last evaluation to round
    2's first."""
    run = epochs[(epochs["shift"] == "permute") & (epochs["condition"] == "warm_start") & (epochs["seed"] == 0)]
    tests = run["test_return"].dropna().to_numpy()
    weight = 19 * 49 / 199 - 4
    expected = (1 - weight) * tests[4] + weight * tests[5]
    readouts = A.release_readouts(run)
    assert readouts["test_release_readout"].iloc[0] == pytest.approx(expected, **TOL)
    # the project's read-out never reaches past the shift
    assert A.round_readout(run, "test_return", window=1, offset=1)["test_return"].iloc[0] == tests[4]


def test_at_paper_scale_the_evaluation_after_a_shift_weighs_four_tenths_to_one_tenth_in_rounds_one_to_four():
    """E = 5000, a test every 100 epochs, read 50 epochs before each shift: with each evaluation's value set to its
    index, the stretched read-out is the position it interpolates at, and its excess over the round's last
    evaluation is the weight of the next round's first one."""
    E, interval, rounds = 5000, 100, 10
    epoch_in_round = np.tile(np.arange(E), rounds)
    tested = (epoch_in_round + 1) % interval == 0
    run = pd.DataFrame({"round": np.repeat(np.arange(1, rounds + 1), E), "epoch_in_round": epoch_in_round,
                        "train_return": 0.0, "test_return": np.where(tested, np.cumsum(tested) - 1.0, np.nan)})
    readouts = A.release_readouts(run, by=())
    assert readouts.attrs["offset"] == 50
    last_of_round = np.arange(1, rounds + 1) * (E // interval) - 1  # the index of each round's last evaluation
    weights = readouts["test_release_readout"].to_numpy() - last_of_round
    assert np.round(weights[:4], 2).tolist() == [0.40, 0.30, 0.20, 0.10]
    assert weights[4] == pytest.approx(0.006, abs=5e-4)  # round 5: 0.6 %
    assert np.all(weights[5:] < 0)  # from round 6 on the read-out stays inside its round


@pytest.mark.parametrize("offset", [None, 3])
def test_ttests_reproduce_the_release(epochs, offset):
    tests = A.condition_ttests(epochs, readout="release", offset=offset)
    assert tests.attrs["readout"] == "release"
    expected = pd.DataFrame(_numbers(offset)["ttests"])
    merged = expected.merge(tests, on=["shift", "condition", "split"], suffixes=("_release", ""))
    assert len(merged) == len(expected) == len(tests) == 3 * 2 * 2
    for column in ("t", "p", "mean", "baseline_mean"):
        assert merged[column].to_numpy() == pytest.approx(merged[f"{column}_release"].to_numpy(), **TOL), column
    for column in ("n", "n_baseline"):
        assert merged[column].tolist() == merged[f"{column}_release"].tolist()
    # the run that stops after round 7 is left out, as the release skips short curves
    short = merged[(merged["shift"] == "window") & (merged["condition"] == "l2")]
    assert set(short["n"]) == {2}


@pytest.mark.parametrize("offset", [None, 3])
@pytest.mark.parametrize("split", ["train", "test"])
def test_correlations_points_and_glm_reproduce_the_release(epochs, offset, split):
    expected = _numbers(offset)["fits"][split]
    points = A.analysis_points(epochs, split=split, diagnostics=DIAGS, offset=offset, readout="release")
    want = pd.DataFrame(expected["points"]).rename(columns={"y": f"normalised_{split}_return"})
    merged = want.merge(points, on=["shift", "condition"], suffixes=("_release", ""))
    assert len(merged) == len(want) == len(points) == 9
    for column in [f"normalised_{split}_return", *DIAGS]:
        assert merged[column].to_numpy() == pytest.approx(merged[f"{column}_release"].to_numpy(), **TOL), column

    fits = A.diagnostic_correlations(epochs, split=split, diagnostics=DIAGS, offset=offset,
                                     readout="release").set_index("diagnostic")
    for diag, numbers in expected["correlations"].items():
        for column, value in numbers.items():
            assert fits.loc[diag, column] == pytest.approx(value, rel=1e-7, abs=1e-12), (diag, column)
        assert fits.loc[diag, "significant"] == (numbers["p"] < 0.05)

    glm = A.diagnostics_glm(epochs, split=split, diagnostics=DIAGS, offset=offset, readout="release")
    assert glm.attrs["n"] == 9 and glm.attrs["readout"] == "release"
    for term, numbers in expected["glm"].items():
        for column, value in numbers.items():
            assert glm.loc[term, column] == pytest.approx(value, rel=1e-6), (term, column)


def test_the_release_weighting_depends_on_the_order_of_the_conditions(epochs):
    """The release's mean over rounds weights the last round more the later a condition is read: reading the
    conditions in the opposite order changes every point."""
    expected = FIXTURE["offsets"]["1"]["fits_reversed_order"]["train"]
    order = list(maker.CONDITIONS[::-1])
    points = A.release_points(epochs, conditions=order, diagnostics=DIAGS)
    want = pd.DataFrame(expected["points"])
    merged = want.merge(points, on=["shift", "condition"])
    assert merged["normalised_train_return"].to_numpy() == pytest.approx(merged["y"].to_numpy(), **TOL)
    forward = A.release_points(epochs, diagnostics=DIAGS).merge(points, on=["shift", "condition"])
    assert not np.allclose(forward["normalised_train_return_x"], forward["normalised_train_return_y"])
    fits = A.diagnostic_correlations(epochs, conditions=order, diagnostics=DIAGS, readout="release")
    assert fits.set_index("diagnostic").loc["entropy", "r2"] == pytest.approx(
        expected["correlations"]["entropy"]["r2"], rel=1e-7)


def test_the_release_reads_a_stored_studys_per_round_table_as_it_reads_the_epochs(epochs):
    """A stored study keeps the release's read-outs in its rounds table (they cannot be read from its subsampled
    curves); the statistics read from it are those of the per-epoch table."""
    from plasticity_lab.results import summarise

    rounds = summarise(epochs, stride=4)["rounds"]
    shuffled = epochs.sample(frac=1.0, random_state=0)
    for table in (rounds, shuffled):
        pd.testing.assert_frame_equal(A.condition_ttests(table, readout="release"),
                                      A.condition_ttests(epochs, readout="release"))
        pd.testing.assert_frame_equal(A.diagnostic_correlations(table, diagnostics=DIAGS, readout="release"),
                                      A.diagnostic_correlations(epochs, diagnostics=DIAGS, readout="release"))
    summary = A.release_summary(rounds)
    assert summary.attrs["readout"] == "release"
    # a release summary is tested as it is, whichever readout is asked for
    pd.testing.assert_frame_equal(A.condition_ttests(summary), A.condition_ttests(epochs, readout="release"),
                                  check_dtype=False)
    with pytest.raises(ValueError, match="fixed offset"):
        A.condition_ttests(rounds, readout="release", offset=3)


def test_project_readout_is_the_default_and_unchanged(epochs):
    """``readout="project"`` is today's computation: the same numbers as leaving the keyword out, and as the
    project's own building blocks."""
    default = A.condition_ttests(epochs)
    pd.testing.assert_frame_equal(default, A.condition_ttests(epochs, readout="project"))
    summary = A.run_summary(epochs)
    pd.testing.assert_frame_equal(default, A.condition_ttests(summary))
    fits = A.diagnostic_correlations(epochs, diagnostics=DIAGS)
    assert fits.attrs["at"] == "final"
    pd.testing.assert_frame_equal(fits, A.diagnostic_correlations(A.run_summary(epochs, at="final"), at="final",
                                                                  diagnostics=DIAGS, readout="project"))
    glm = A.diagnostics_glm(epochs, diagnostics=DIAGS)
    pd.testing.assert_frame_equal(glm, A.diagnostics_glm(epochs, at="final", diagnostics=DIAGS, readout="project"))
    # and it differs from the release's (smoothed, rounds 2..R, levels)
    release = A.condition_ttests(epochs, readout="release")
    assert not np.allclose(default["t"].to_numpy(), release["t"].to_numpy())


@pytest.mark.parametrize("call", [
    lambda df: A.condition_ttests(df, readout="paper"),
    lambda df: A.diagnostic_correlations(df, readout="paper"),
    lambda df: A.diagnostics_glm(df, readout="paper", env="gridworld"),
    lambda df: A.analysis_points(df, readout="paper"),
    lambda df: A.run_summary(df, readout="paper"),
])
def test_a_bad_readout_is_one_clear_error(epochs, call):
    with pytest.raises(ValueError) as error:
        call(epochs)
    assert str(error.value) == "unknown readout='paper'; valid values are ('project', 'release')"


def test_release_refuses_what_it_has_no_counterpart_for(epochs):
    with pytest.raises(ValueError, match=r"at='final' does not apply"):
        A.diagnostic_correlations(epochs, at="final", readout="release")
    with pytest.raises(ValueError, match=r"unsmoothed.*window=5"):
        A.condition_ttests(epochs, window=5, readout="release")
    with pytest.raises(ValueError, match=r"unit='seed' has no release counterpart"):
        A.diagnostics_glm(epochs, unit="seed", readout="release")
    with pytest.raises(ValueError, match=r"needs the per-epoch table.*run summary"):
        A.condition_ttests(A.run_summary(epochs), readout="release")


# ------------------------------------------------------------------------------------------- the report
@pytest.fixture(scope="module")
def run_folder(epochs, tmp_path_factory) -> Path:
    """The synthetic study stored as ``plasticity-lab run`` stores one: a study of one population per condition
    that keeps its every epoch, with its tables computed from them."""
    from rollouts import store_synthetic_study

    return store_synthetic_study(tmp_path_factory.mktemp("synthetic"), epochs, {
        "conditions": list(maker.CONDITIONS), "shifts": list(maker.SHIFTS), "seeds": list(maker.SEEDS),
        "overrides": {"rounds": maker.ROUNDS, "epochs_per_round": maker.EPOCHS_PER_ROUND,
                      "test_interval": maker.TEST_INTERVAL}})


def test_report_readout_release_prints_the_releases_tables(run_folder, capsys):
    from plasticity_lab.cli import main

    assert main(["report", str(run_folder), "--readout", "release"]) == 0
    out = capsys.readouterr().out
    assert "read-out: release" in out and "t-tests against reset_all (the release's read-out" in out
    for row in _numbers(None)["ttests"]:
        assert f"{row['t']:.4g}" in out
    for split in ("train", "test"):
        r2 = _numbers(None)["fits"][split]["correlations"]["entropy"]["r2"]
        assert f"{r2:.4g}" in out
    assert "GLM of normalised train reward on the diagnostics (gridworld, the release's read-out)" in out

    assert main(["report", str(run_folder)]) == 0  # the project's read-out by default
    project = capsys.readouterr().out
    assert "read-out: project" in project and "t-tests against reset_all (at=mean;" in project
    assert "Correlations of normalised train reward with each diagnostic (at=final" in project


@pytest.mark.parametrize("args, message", [
    (["--readout", "paper"], "unknown readout='paper'; valid values are ('project', 'release')"),
    (["--readout", "release", "--at", "final"], "readout='release' summarises runs only the release's way"),
    (["--readout", "release", "--fit-at", "final"], "fit_at='final' does not apply"),
    (["--at", "last"], "unknown at='last'; valid: mean, final"),
])
def test_report_bad_readout_arguments_are_one_clear_error(run_folder, capsys, args, message):
    from plasticity_lab.cli import main

    assert main(["report", str(run_folder), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1


def test_report_release_of_a_study_stored_without_its_readouts_says_so(run_folder):
    from plasticity_lab.report import report
    from plasticity_lab.results import load_results

    results = load_results(run_folder)
    results.rounds = results.rounds.drop(columns=[c for c in results.rounds if c.endswith("_release_readout")])
    with pytest.raises(ValueError, match=r"stored without the release's read-outs"):
        report(results, readout="release")


# ------------------------------------------------------------------------------------------- both ways at once
def _release_verdict_loses_plasticity(alpha):
    """The rule of the claim "warm-start loses plasticity" applied by hand to the fixture's release t-tests:
    significantly below reset-all in at least one split of every shift agrees, of some shifts partly, of none
    disagrees."""
    losing = {row["shift"] for row in _numbers(None)["ttests"]
              if row["condition"] == "warm_start" and row["mean"] < row["baseline_mean"] and row["p"] < alpha}
    return "agrees" if losing == set(maker.SHIFTS) else "partly" if losing else "disagrees"


@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_claims_both_ways_reads_the_release_column_from_the_releases_ttests(run_folder, alpha):
    from plasticity_lab.report import claims_both_ways
    from plasticity_lab.results import load_results

    results = load_results(run_folder)
    table = claims_both_ways(results, alpha)
    assert list(table.columns) == ["project", "release"]
    expected = _release_verdict_loses_plasticity(alpha)
    # the fixture's permute/train p is 0.079: partly at 0.05 (window and expand only), agrees at 0.1
    assert expected == {0.05: "partly", 0.1: "agrees"}[alpha]
    assert table.loc["warm-start loses plasticity", "release"] == expected
    # the study holds warm_start, reset_all and l2 only: the claims about other conditions cannot be tested either way
    for claim in ("injection can hurt", "CReLU helps sometimes", "soft S+P + LayerNorm is best"):
        assert tuple(table.loc[claim]) == ("not testable", "not testable")
    project = A.check_claims(results.runs("mean"), alpha).set_index("claim")["verdict"]
    assert table["project"].to_dict() == project.to_dict()


def test_diagnostics_both_ways_holds_the_releases_fits_and_the_projects_levels(run_folder):
    from scipy import stats as scipy_stats

    from plasticity_lab.report import diagnostics_both_ways
    from plasticity_lab.results import load_results

    results = load_results(run_folder)
    table = diagnostics_both_ways(results)
    assert list(table.columns) == ["r project", "p project", "GLM p project", "r release", "p release",
                                   "GLM p release"]
    assert len(table) == 2 * len(DIAGS)
    final = results.runs("final")
    for split in ("train", "test"):
        expected = _numbers(None)["fits"][split]
        points = final.groupby(["shift", "condition"])[[f"normalised_{split}_return", *DIAGS]].mean()
        for diag in DIAGS:
            row = table.loc[(split, diag)]
            fit = expected["correlations"][diag]  # the release prints R² and the line's slope: r is their sign × root
            assert row["r release"] == pytest.approx(np.sign(fit["slope"]) * np.sqrt(fit["r2"]), rel=1e-7)
            assert row["p release"] == pytest.approx(fit["p"], rel=1e-7)
            assert row["GLM p release"] == pytest.approx(expected["glm"][diag]["p"], rel=1e-6)
            # the project's: Pearson's r of the last round's levels over the 9 shift × condition means
            r, p = scipy_stats.pearsonr(points[diag], points[f"normalised_{split}_return"])
            assert (row["r project"], row["p project"]) == (pytest.approx(r, rel=1e-9), pytest.approx(p, rel=1e-9))
            assert 0 <= row["GLM p project"] <= 1


def test_the_report_reads_a_study_with_the_releases_readouts_both_ways(run_folder, capsys):
    from plasticity_lab.cli import main

    assert main(["report", str(run_folder)]) == 0
    out = capsys.readouterr().out
    assert "Read both ways: the paper's conclusions" in out and "Read both ways: each diagnostic's" in out
    section = out.split("Read both ways: the paper's conclusions")[1]
    line = next(x for x in section.splitlines() if x.startswith("warm-start loses plasticity"))
    assert line.split()[-1] == _release_verdict_loses_plasticity(0.05)


def test_both_ways_of_a_study_stored_without_the_releases_readouts_is_one_clear_error(run_folder):
    from plasticity_lab.report import claims_both_ways, diagnostics_both_ways
    from plasticity_lab.results import load_results

    results = load_results(run_folder)
    results.rounds = results.rounds.drop(columns=[c for c in results.rounds if c.endswith("_release_readout")])
    for call in (claims_both_ways, diagnostics_both_ways):
        with pytest.raises(ValueError, match=r"stored without the release's read-outs"):
            call(results)
