"""Sweeps and the study store: grid expansion, populations, storage and loading, resume after SIGKILL, Ray, and
bad input (unknown keys, corrupt files, newer formats, a different sweep in the same folder)."""

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import plasticity_lab as pl
from plasticity_lab.results import TABLES, curve_table, load_results, summarise
from plasticity_lab.sweep import Sweep, run_sweep

SMALL = {
    "study": "small",
    "preset": "smoke",
    "shifts": ["permute"],
    "conditions": ["warm_start", "reset_all"],
    "seeds": "0-2",
    "max_members": 3,
    "overrides": {"rounds": 2, "epochs_per_round": 4, "test_episodes": 11, "test_interval": 2},
}


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    results = run_sweep(Sweep.from_dict(SMALL), root=root, threads=1, progress=False)
    return root / "small", results


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- the sweep file ---------------------------------------------------------------------------------------------

def test_grid_expands_every_combination_into_populations():
    sweep = Sweep.from_dict({"study": "s", "conditions": ["warm_start", "soft_shrink_perturb"],
                             "params": {"soft_shrink_perturb": {"perturb": [1e-6, 1e-5]}}})
    configs = sweep.configs()
    # warm_start: 3 shifts x 5 seeds; soft S+P: 2 values x 3 x 5
    assert len(configs) == 15 + 30
    tasks = sweep.populations()
    assert [len(t.configs) for t in tasks] == [15, 15, 15]
    assert {c.label for c in tasks[1].configs} | {c.label for c in tasks[2].configs} == {
        "soft_shrink_perturb[perturb=1e-06]", "soft_shrink_perturb[perturb=1e-05]"}
    # the same sweep forms the same populations with the same names; another grid other names
    assert [t.name for t in Sweep.from_dict(sweep.to_dict()).populations()] == [t.name for t in tasks]
    other = Sweep.from_dict({"study": "s", "conditions": ["warm_start"], "seeds": [0, 1, 2, 3, 5]})
    assert other.populations()[0].name != tasks[0].name
    # chunks are balanced: 16 runs with at most 15 per population -> 8 + 8
    sixteen = Sweep.from_dict({"study": "s", "conditions": ["l2"], "seeds": "0-15", "shifts": ["window"]})
    assert [len(t.configs) for t in sixteen.populations()] == [8, 8]


def test_populations_train_in_turns_across_conditions_so_a_stopped_study_holds_every_condition():
    from plasticity_lab.sweep import training_order
    sweep = Sweep.from_dict({"study": "s", "conditions": ["warm_start", "reset_all"], "shifts": ["permute"],
                             "seeds": "0-2", "max_members": 1})
    tasks = sweep.populations()
    # formed condition by condition: warm_start 0, 1, 2, then reset_all 0, 1, 2
    assert [(t.configs[0].condition, t.configs[0].seed) for t in tasks] == [
        ("warm_start", 0), ("warm_start", 1), ("warm_start", 2), ("reset_all", 0), ("reset_all", 1), ("reset_all", 2)]
    ordered = training_order(tasks)
    assert [(t.configs[0].condition, t.configs[0].seed) for t in ordered] == [
        ("warm_start", 0), ("reset_all", 0), ("warm_start", 1), ("reset_all", 1), ("warm_start", 2), ("reset_all", 2)]
    # coefficient values are conditions of their own, each with its turn
    grid = Sweep.from_dict({"study": "s", "conditions": ["warm_start", "soft_shrink_perturb"], "shifts": ["window"],
                            "seeds": "0-1", "max_members": 1,
                            "params": {"soft_shrink_perturb": {"perturb": [1e-6, 1e-5]}}})
    order = [t.configs[0].label for t in training_order(grid.populations())]
    assert order == ["warm_start", "soft_shrink_perturb[perturb=1e-06]", "soft_shrink_perturb[perturb=1e-05]"] * 2
    assert sorted(t.name for t in training_order(grid.populations())) == sorted(t.name for t in grid.populations())
    # one run per population under several shifts: seed 0 of every condition and shift first, then seed 1
    shifted = Sweep.from_dict({"study": "s", "conditions": ["warm_start", "reset_all"], "shifts": ["permute", "window"],
                               "seeds": "0-1", "max_members": 1})
    assert [(t.configs[0].seed, t.configs[0].shift, t.configs[0].condition)
            for t in training_order(shifted.populations())] == [
        (0, "permute", "warm_start"), (0, "window", "warm_start"), (0, "permute", "reset_all"),
        (0, "window", "reset_all"), (1, "permute", "warm_start"), (1, "window", "warm_start"),
        (1, "permute", "reset_all"), (1, "window", "reset_all")]
    # populations that hold every shift (the gridworld's 15 members) keep one turn per condition
    whole = Sweep.from_dict({"study": "s", "conditions": ["warm_start", "reset_all"], "seeds": "0-4",
                             "max_members": 15})
    assert [t.configs[0].condition for t in training_order(whole.populations())] == ["warm_start", "reset_all"]


def test_toml_and_yaml_files_give_the_same_sweep(tmp_path):
    toml = tmp_path / "a.toml"
    toml.write_text('study = "x"\nconditions = ["warm_start"]\nseeds = "0-1"\n[overrides]\nepochs_per_round = 7\n'
                    '[params.warm_start]\n')
    yml = tmp_path / "a.yaml"
    yml.write_text("study: x\nconditions: [warm_start]\nseeds: 0-1\noverrides:\n  epochs_per_round: 7\n")
    a, b = Sweep.from_file(toml), Sweep.from_file(yml)
    assert a.configs() == b.configs() and a.seeds == (0, 1) and a.configs()[0].resolved().epochs_per_round == 7


@pytest.mark.parametrize("change, message", [
    ({"epochs": 3}, "unknown sweep key(s) ['epochs']; valid: study, envs"),
    ({"conditions": ["warm_start", "magic"]}, "unknown condition 'magic'"),
    ({"shifts": ["permute", "shuffle"]}, "unknown shift 'shuffle'; valid: permute, window, expand"),
    ({"preset": "huge"}, "unknown preset 'huge'; valid: paper, book, smoke"),
    ({"overrides": {"epochs": 3}}, "unknown override(s) ['epochs']; valid:"),
    ({"overrides": {"rounds": 0}}, "rounds must be a positive integer; got 0"),
    ({"params": {"l2": {"coef": [1e-3]}}}, "params given for condition(s) ['l2'] that the sweep does not run"),
    ({"params": {"warm_start": {"perturb": [0.1]}}}, "unknown parameter(s) ['perturb'] for condition 'warm_start'"),
    ({"seeds": "4-1"}, "bad seeds '4-1'"),
    ({"max_members": 0}, "'max_members' must be a positive integer; got 0"),
    ({"study": "../up"}, "study must be a folder name"),
    ({"keep_epochs": "yes"}, "sweep key 'keep_epochs' must be true or false; got 'yes'"),
])
def test_bad_sweep_gives_one_clear_error(change, message):
    with pytest.raises(ValueError) as error:
        Sweep.from_dict({**SMALL, **change})
    assert message in str(error.value)


def test_bad_sweep_file_is_rejected_before_any_work(tmp_path, capsys):
    from plasticity_lab.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text('study = "x"\nconditions = ["warm_start"]\ncolour = "red"\n')
    assert main(["sweep", str(bad), "--root", str(tmp_path / "data")]) == 2
    assert "unknown sweep key(s) ['colour']" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
    broken = tmp_path / "broken.toml"
    broken.write_text('study = "x\n')
    assert main(["sweep", str(broken)]) == 2
    assert "cannot parse" in capsys.readouterr().err


# ---- storing and loading ----------------------------------------------------------------------------------------

def test_study_holds_what_the_runner_computes(small_study):
    folder, results = small_study
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sweep"]["conditions"] == ["warm_start", "reset_all"] and manifest["seeds"] == [0, 1, 2]
    for key in ("package_version", "git_commit", "torch", "platform", "cpu_count", "cpu_matmul", "cpu_matmul_reason",
                "wall_time_s", "populations"):
        assert key in manifest
    assert len(manifest["populations"]) == 2
    # each population's tables equal those computed from a direct pl.run of its configs
    sweep = Sweep.from_dict(SMALL)
    for task in sweep.populations():
        direct = summarise(pl.run(list(task.configs)), stride=2)
        for name in TABLES:
            stored = pd.read_parquet(folder / "populations" / task.name / f"{name}.parquet")
            pd.testing.assert_frame_equal(stored, direct[name], check_dtype=False)
    assert len(results.runs()) == 6 and len(results.rounds) == 12
    assert results.describe() == ("study small, preset smoke with its scale overridden (2 rounds × 4 epochs, "
                                  "10-level pool), 3 seeds")
    assert not any((folder / "checkpoints").iterdir())  # finished populations leave no checkpoint behind


def test_every_epoch_is_kept_only_where_the_sweep_asks(small_study, tmp_path):
    """A sweep stores the tables; with keep_epochs also every epoch, which Results.epochs reads (and which a study
    without them refuses in one clear error)."""
    folder, results = small_study
    assert not list((folder / "populations").glob("*/epochs.parquet"))
    with pytest.raises(ValueError, match="^study small: its populations did not keep every epoch"):
        results.epochs()
    with pytest.raises(ValueError, match="^study small: the populations of reset_all did not keep every epoch"):
        results.epochs(["reset_all"])
    kept = run_sweep(Sweep.from_dict({**SMALL, "keep_epochs": True}), root=tmp_path, threads=1, progress=False)
    for task in Sweep.from_dict(SMALL).populations():  # the tables of either study come from the epochs kept
        tables = summarise(kept.epochs([task.configs[0].label]), stride=2)
        for name in TABLES:
            stored = pd.read_parquet(folder / "populations" / task.name / f"{name}.parquet")
            pd.testing.assert_frame_equal(stored, tables[name], check_dtype=False)
    pd.testing.assert_frame_equal(kept.epochs(), pd.concat([kept.epochs(["reset_all"]), kept.epochs(["warm_start"])],
                                                           ignore_index=True))
    with pytest.raises(ValueError, match="^study small holds no condition 'l2'; it holds: reset_all, warm_start"):
        kept.epochs(["warm_start", "l2"])
    # keeping every epoch or not is part of what a study is: the other choice is another sweep
    with pytest.raises(ValueError, match="made by a different sweep \\(differs in keep_epochs\\)"):
        run_sweep(Sweep.from_dict(SMALL), root=tmp_path, progress=False)


def test_curves_are_block_means_within_rounds():
    df = pd.DataFrame({"env": "gridworld", "shift": "permute", "condition": "warm_start", "seed": 0,
                       "round": [1] * 5 + [2] * 5, "epoch": range(10), "epoch_in_round": list(range(5)) * 2,
                       "train_return": [1.0, 2, 3, 4, 5, 10, 20, 30, 40, 50],
                       "test_return": [np.nan, 1, np.nan, 3, 5, np.nan, np.nan, np.nan, 7, np.nan]})
    curves = curve_table(df, stride=2)
    # blocks per round: {0,1}, {2,3}, {4}
    assert curves["epoch"].tolist() == [1, 3, 4, 6, 8, 9]
    assert curves["epochs_averaged"].tolist() == [2, 2, 1, 2, 2, 1]
    assert curves["train_return"].tolist() == [1.5, 3.5, 5.0, 15.0, 35.0, 50.0]
    np.testing.assert_array_equal(curves["test_return"], [1.0, 3.0, 5.0, np.nan, 7.0, np.nan])
    with pytest.raises(ValueError, match="subsampled curves"):
        pl.stats.normalised_reward(curves)


def test_report_prints_the_paper_tables(small_study, capsys):
    from plasticity_lab.cli import main

    folder, results = small_study
    assert main(["report", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "t-tests against reset_all" in out and "warm_start" in out and "GLM" in out
    expected = pl.stats.condition_ttests(results.runs(), baseline="reset_all")
    t_train = expected.loc[expected["split"] == "train", "t"].iloc[0]
    assert f"{t_train:.4g}" in out
    # the paper's conclusions, each with its verdict; this study holds only warm-start and reset-all
    assert "The paper's conclusions (PROTOCOL §7)" in out
    assert "[not testable] Reset-final can be worse than doing nothing." in out
    assert out.count("[not testable]") == 6
    # beyond the paper: the interquartile mean of each condition's runs, inside its interval
    from scipy import stats

    from plasticity_lab.report import interval_table

    table = interval_table(results, reps=200).set_index("condition")
    runs = results.runs()
    for condition in ("warm_start", "reset_all"):
        values = runs.loc[runs["condition"] == condition, "normalised_test_return"].to_numpy()
        row = table.loc[condition]
        assert row["runs"] == len(values) == 3
        assert row["test IQM"] == pytest.approx(stats.trim_mean(values, 0.25))  # 3 runs: trims none
        assert row["test low"] <= row["test IQM"] <= row["test high"]
    assert "Beyond the paper: interquartile mean" in out
    # the 2 × 2 ablation needs four conditions this study lacks: the section says which
    assert "soft shrink+perturb and LayerNorm apart and together" in out
    assert "(not computed: interaction_test needs the conditions" in out and "missing: ['soft_shrink_perturb'" in out


def test_rerun_skips_stored_populations_and_refuses_a_different_sweep(small_study, monkeypatch):
    folder, _ = small_study
    before = _digest(folder / "populations")
    import plasticity_lab.experiment as experiment

    monkeypatch.setattr(experiment.Experiment, "train_epoch", lambda self: pytest.fail("trained again"))
    run_sweep(Sweep.from_dict(SMALL), root=folder.parent, progress=False)
    assert _digest(folder / "populations") == before
    with pytest.raises(ValueError, match="made by a different sweep \\(differs in seeds\\)"):
        run_sweep(Sweep.from_dict({**SMALL, "seeds": "0-3"}), root=folder.parent, progress=False)
    assert _digest(folder / "populations") == before


def test_a_study_made_before_its_preset_changed_is_refused_not_mixed(small_study, monkeypatch):
    """The same sweep file after a preset moved would form new populations beside the stored ones."""
    from plasticity_lab import config

    folder, _ = small_study
    before = _digest(folder / "populations")
    monkeypatch.setitem(config.PRESETS["smoke"], "pool_size", 5)
    with pytest.raises(ValueError, match="holds 2 population\\(s\\) that this sweep no longer produces "
                                         "\\(pool_size: stored 10, now 5\\)"):
        run_sweep(Sweep.from_dict(SMALL), root=folder.parent, progress=False)
    assert _digest(folder / "populations") == before


def test_a_study_renamed_or_restated_with_its_scale_spelled_out_is_the_same_sweep(small_study, monkeypatch,
                                                                                   tmp_path):
    """After a preset moves, a stored study stays extendable by a file that spells out its old scale."""
    import shutil

    from plasticity_lab import config
    import plasticity_lab.experiment as experiment

    folder = tmp_path / "renamed"
    shutil.copytree(small_study[0], folder)
    before = _digest(folder / "populations")
    # the record of the session that trained the study, as another machine would have left it
    manifest = json.loads((folder / "manifest.json").read_text())
    trained_by = {"git_commit": "0123abc", "platform": "another-machine", "last_session_started": "2026-01-02T03:04:05"}
    (folder / "manifest.json").write_text(json.dumps({**manifest, **trained_by}))
    monkeypatch.setattr(experiment.Experiment, "train_epoch", lambda self: pytest.fail("trained again"))
    monkeypatch.setitem(config.PRESETS["smoke"], "pool_size", 5)
    restated = {**SMALL, "study": "renamed", "overrides": {**SMALL["overrides"], "pool_size": 10}}
    run_sweep(Sweep.from_dict(restated), out=folder, progress=False)
    assert _digest(folder / "populations") == before
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sweep"]["study"] == manifest["study"] == "renamed"  # the file now in use
    # nothing was trained: the manifest still says which code and machine trained the study, and when
    assert {key: manifest[key] for key in trained_by} == trained_by
    # restating is no loophole: a different scale is still a different sweep
    rescaled = {**restated, "overrides": {**restated["overrides"], "epochs_per_round": 5}}
    with pytest.raises(ValueError, match="made by a different sweep \\(differs in overrides\\)"):
        run_sweep(Sweep.from_dict(rescaled), out=folder, progress=False)
    assert _digest(folder / "populations") == before


def test_corrupt_or_newer_files_give_one_clear_error(small_study, tmp_path):
    import shutil

    folder, _ = small_study
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    part = next((copy / "populations").glob("*/rounds.parquet"))
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"cannot read {part}: corrupt or truncated"):
        load_results(copy)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["format"] = 7
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="has format 7, newer than this package reads"):
        load_results(copy)
    (copy / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        load_results(copy)
    with pytest.raises(ValueError, match="no results folder"):
        load_results(tmp_path / "nowhere")


# ---- resume ---------------------------------------------------------------------------------------------------

RESUME = {**SMALL, "study": "killed", "conditions": ["warm_start", "injection"], "seeds": "0-1",
          "overrides": {"rounds": 3, "epochs_per_round": 4, "test_episodes": 11, "test_interval": 2}}


def test_sweep_killed_at_random_moments_resumes_to_identical_results(tmp_path):
    sweep_file = tmp_path / "sweep.json.yaml"
    sweep_file.write_text(json.dumps(RESUME))  # JSON is valid YAML
    command = [sys.executable, "-m", "plasticity_lab.cli", "sweep", str(sweep_file), "--root", str(tmp_path / "data"),
               "--threads", "1", "--checkpoint-every", "1", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(pl.__file__).parent.parent)}
    rng = random.Random(7)
    kills = 0
    for _ in range(4):
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        # kill mid-training: a random moment after the study's first checkpoint is written (start-up takes a few
        # seconds, more on a loaded machine, so a fixed delay could kill every process before it trained at all)
        deadline = time.monotonic() + 120
        checkpoints = tmp_path / "data" / "killed" / "checkpoints"
        while (process.poll() is None and time.monotonic() < deadline
               and not (checkpoints.is_dir() and any(checkpoints.rglob("*.pt")))):
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 3.0))
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            kills += 1
        process.wait()
    assert kills >= 2
    finish = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    resumed = load_results(tmp_path / "data" / "killed")
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "data/killed/populations").glob("*/manifest.json")]
    assert any(m["resumed_from_epoch"] > 0 for m in manifests)  # at least one population continued a checkpoint

    whole = run_sweep(Sweep.from_dict({**RESUME, "study": "whole"}), root=tmp_path / "data", threads=1,
                      progress=False)
    for name in ("curves", "rounds"):
        pd.testing.assert_frame_equal(getattr(resumed, name).sort_values(["condition", "seed", "round"] + (
            ["epoch"] if name == "curves" else [])).reset_index(drop=True),
            getattr(whole, name).sort_values(["condition", "seed", "round"] + (
                ["epoch"] if name == "curves" else [])).reset_index(drop=True))


# ---- backends ---------------------------------------------------------------------------------------------------

def test_local_processes_and_ray_store_the_same_study(small_study, tmp_path):
    ray = pytest.importorskip("ray")
    folder, results = small_study
    in_processes = run_sweep(Sweep.from_dict(SMALL), root=tmp_path / "p", workers=2, threads=1, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run_sweep(Sweep.from_dict(SMALL), root=tmp_path / "r", backend="ray", threads=1, progress=False)
    finally:
        ray.shutdown()
    for other in (in_processes, on_ray):
        pd.testing.assert_frame_equal(other.rounds, results.rounds)
        pd.testing.assert_frame_equal(other.curves, results.curves)


def test_bad_backend_options_are_rejected(tmp_path):
    sweep = Sweep.from_dict(SMALL)
    with pytest.raises(ValueError, match="unknown backend 'slurm'; valid: local, ray"):
        run_sweep(sweep, root=tmp_path, backend="slurm")
    with pytest.raises(ValueError, match="workers must be a positive integer; got 0"):
        run_sweep(sweep, root=tmp_path, workers=0)
    assert not (tmp_path / "small").exists()


REPO_SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.mark.parametrize("path", sorted(REPO_SWEEPS.glob("*.toml")), ids=lambda p: p.stem)
def test_the_repository_sweep_files_load(path):
    sweep = Sweep.from_file(path)
    tasks = sweep.populations()
    assert tasks and all(task.configs for task in tasks)
    # every run of the grid is in exactly one population
    runs = [(c.shift, c.condition, tuple(sorted(c.condition_params.items())), c.seed) for t in tasks for c in t.configs]
    assert len(runs) == len(set(runs)) == len(sweep.configs())


@pytest.mark.parametrize("name, epochs", [("gridworld-book", 200), ("gridworld-book-e300", 300)])
def test_the_book_sweeps_hold_what_their_files_say(name, epochs):
    book = Sweep.from_file(REPO_SWEEPS / f"{name}.toml").populations()
    # 12 conditions, one population each of 3 shifts × 5 seeds, 10 rounds of E epochs
    assert len(book) == 12 and {len(t.configs) for t in book} == {15}
    assert {(c.resolved().rounds, c.resolved().epochs_per_round) for t in book for c in t.configs} == {(10, epochs)}
    assert sorted({c.shift for t in book for c in t.configs}) == ["expand", "permute", "window"]


#: Each stored sweep study and the sweep file that made it (the preset search's studies sit under one folder).
STORED_SWEEPS = {
    "gridworld-book": "gridworld-book",
    "gridworld-book-e300": "gridworld-book-e300",
    "gridworld-book-v2": "gridworld-book-v2",
    "gridworld-soft-sp-coefficients": "gridworld-soft-sp-coefficients",
    "gridworld-regen-l2-release-coefficient": "gridworld-regen-l2-release-coefficient",
    "gridworld-long-rounds": "gridworld-long-rounds",
    "gridworld-permute-warm-vs-reset": "gridworld-permute-warm-vs-reset",
    "montezuma-pilot": "montezuma-pilot",
    "coinrun-pilot": "coinrun-pilot",
    "coinrun-shifts": "coinrun-shifts",
    "montezuma-book": "montezuma-book",
    **{f"gridworld-preset-search-{e}": f"gridworld-preset-search/epochs-{e}"
       for e in ("150", "200", "500", "1000", "300-seeds-5-9")},
}


@pytest.mark.parametrize("name", sorted(STORED_SWEEPS))
def test_each_stored_study_is_what_its_sweep_file_produces_today(name):
    """A preset or a condition's defaults moved under a stored study would make its sweep file refuse to extend it
    and make the study's provenance a lie; the stored runs must be the runs the file names."""
    from plasticity_lab.sweep import check_study

    study = REPO_SWEEPS.parent / "data" / STORED_SWEEPS[name]
    if not (study / "manifest.json").exists():
        pytest.skip(f"{study} is not stored in this checkout")
    sweep = Sweep.from_file(REPO_SWEEPS / f"{name}.toml")
    check_study(study, sweep)  # raises if the stored runs differ from what the file produces
    stored = {p.parent.name for p in (study / "populations").glob("*/manifest.json")}
    assert stored <= {t.name for t in sweep.populations()}
    # the study's manifest lists exactly the populations stored (an unfinished study lists fewer than its sweep has)
    assert set(json.loads((study / "manifest.json").read_text())["populations"]) == stored
    # and a re-run of the file trains none of them again (settings added since compare at their earlier behaviour)
    from plasticity_lab.results import population_complete

    tasks = {t.name: t for t in sweep.populations()}
    assert [n for n in sorted(stored) if not population_complete(study / "populations" / n, tasks[n].configs)] == []


def test_twenty_rounds_begin_with_the_ten_rounds_of_the_same_seeds():
    """A population's random stream is decided by its members' seeds alone, so the long-rounds study (20 rounds of
    200 epochs) must repeat, in its first ten rounds, the preset search's study at E = 200 (10 rounds, the same
    seeds), which another process trained at another time from another commit."""
    data = REPO_SWEEPS.parent / "data"
    long_study, short_study = data / "gridworld-long-rounds", data / "gridworld-preset-search" / "epochs-200"
    if not (long_study / "manifest.json").exists():
        pytest.skip(f"{long_study} is not stored in this checkout")
    keys = ["condition", "seed", "round"]
    # Training alone: the test returns come from episodes on other levels, played with other code since then.
    columns = ["train_mean", "train_readout", "normalised_train_return", "weight_magnitude", "dead_units",
               "grad_norm", "entropy"]
    long_rounds = load_results(long_study).rounds.set_index(keys).sort_index()
    short_rounds = load_results(short_study).rounds.set_index(keys).sort_index()
    assert sorted(long_rounds.index.get_level_values("round").unique()) == list(range(1, 21))
    first_ten = long_rounds[long_rounds.index.get_level_values("round") <= 10]
    pd.testing.assert_frame_equal(first_ten[columns], short_rounds[columns])


@pytest.mark.parametrize("name, epochs, seeds", [
    ("gridworld-preset-search-150", 150, range(5)),
    ("gridworld-preset-search-200", 200, range(5)),
    ("gridworld-preset-search-500", 500, range(5)),
    ("gridworld-preset-search-1000", 1000, range(5)),
    ("gridworld-preset-search-300-seeds-5-9", 300, range(5, 10)),
])
def test_the_preset_search_sweeps_hold_what_their_names_say(name, epochs, seeds):
    search = Sweep.from_file(REPO_SWEEPS / f"{name}.toml").populations()
    assert sorted(t.configs[0].condition for t in search) == ["reset_all", "warm_start"]
    assert {(c.shift, c.resolved().epochs_per_round, c.resolved().rounds) for t in search for c in t.configs} == {
        ("permute", epochs, 10)}
    assert sorted(c.seed for t in search for c in t.configs) == sorted([*seeds, *seeds])


def test_report_against_another_study_compares_the_conditions_both_hold(small_study, capsys):
    from types import SimpleNamespace

    from plasticity_lab.cli import main
    from plasticity_lab.report import comparison_table

    folder, _ = small_study
    assert main(["report", str(folder), "--against", str(folder)]) == 0
    out = capsys.readouterr().out
    # the small study holds two conditions: too few to rank, said and not hidden
    assert "## Against study small" in out
    assert "(not computed: a comparison needs at least 3 conditions in both studies; shared: ['reset_all', " \
           "'warm_start'])" in out

    def study(name, means):  # a stand-in with what comparison_table reads: runs(at) and path
        rows = [{"env": "gridworld", "shift": shift, "condition": c, "seed": s, "normalised_train_return": m + o,
                 "normalised_test_return": m - o}
                for c, m in means.items() for shift in ("permute", "window", "expand")
                for s, o in enumerate((-0.01, 0.01))]
        return SimpleNamespace(runs=lambda at="mean": pd.DataFrame(rows), path=Path(name))

    long = study("long", {"warm_start": -0.5, "reset_all": 0.0, "layernorm": 0.3, "only_long": 1.0})
    short = study("short", {"warm_start": 0.0, "reset_all": -0.5, "layernorm": 0.3})
    ranks, agreement = comparison_table(long, short)
    assert list(ranks["condition"]) == ["layernorm", "reset_all", "warm_start"]  # in the first study's order
    assert ranks["rank short"].tolist() == [1, 3, 2] and ranks["mean long"].tolist() == pytest.approx([0.3, 0, -0.5])
    # orders (1, 2, 3) and (1, 3, 2): one discordant pair of three, τ = 1/3
    assert agreement["tau"] == pytest.approx(1 / 3) and agreement["conditions"] == 3
    assert list(agreement["claims"].columns) == ["long", "short"]
    assert agreement["claims"].loc["warm-start loses plasticity"].tolist() == ["agrees", "disagrees"]
    # the two orders, as the figure takes them: only the shared conditions, each study's own ranks
    assert agreement["names"] == ("long", "short")
    assert [list(r["condition"]) for r in agreement["rankings"]] == [["layernorm", "reset_all", "warm_start"],
                                                                     ["layernorm", "warm_start", "reset_all"]]
