"""The command line: a run writes its study; bad input fails before any work with one clear message."""

import json
import shutil

import pandas as pd
import pytest

import plasticity_lab as pl
from plasticity_lab.cli import main
from plasticity_lab.results import TABLES, load_results, summarise
from plasticity_lab.sweep import Sweep

RUN = ["run", "--shift", "permute", "--condition", "warm_start,reset_all", "--seeds", "0-1", "--preset", "smoke",
       "--rounds", "2", "--epochs-per-round", "2", "--test-episodes", "11", "--no-progress"]


def _configs(condition: str) -> list:
    """The configs that RUN trains for ``condition``, as one population."""
    return [pl.RunConfig(shift="permute", condition=condition, seed=seed, preset="smoke", rounds=2,
                         epochs_per_round=2, test_episodes=11) for seed in (0, 1)]


def test_run_writes_results_and_manifest(tmp_path, capsys):
    out = tmp_path / "study"
    code = main([*RUN, "--out", str(out)])
    assert code == 0
    results = load_results(out)
    df = results.epochs()
    assert len(df) == 2 * 2 * 4  # conditions x seeds x epochs
    assert set(df["condition"]) == {"warm_start", "reset_all"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["presets"] == ["smoke"]
    assert {c["epochs_per_round"] for c in results.configs} == {2}
    for key in ("package_version", "git_commit", "torch", "platform", "cpu_count", "cpu_matmul", "wall_time_s"):
        assert key in manifest and all(key in population for population in results.populations)
    assert not (out / "checkpoints").exists()  # every population finished: nothing left to resume from
    printed = capsys.readouterr().out
    assert "warm_start" in printed and "reset_all" in printed and str(out) in printed
    # the table is explained: what the numbers are, what each row is, what each column is
    assert "Normalised reward: each round's return" in printed and "r2..R" not in printed
    assert "warm_start under permute: Keep training" in printed and "reset_all under permute:" in printed
    assert "Columns:" in printed and "round r: the normalised train reward" in printed


def test_run_stores_a_study_whose_every_epoch_and_tables_are_those_of_pl_run(tmp_path):
    """``run --out`` writes the one format there is, a study: its sweep is the command's arguments, one population
    per condition keeps every epoch exactly as :func:`plasticity_lab.run` returns it, and the tables beside it are
    :func:`~plasticity_lab.results.summarise` of that table."""
    out = tmp_path / "study"
    assert main([*RUN, "--out", str(out)]) == 0
    results = load_results(out)
    sweep = Sweep.from_dict(results.manifest["sweep"])
    assert sweep.keep_epochs and sweep.study == "study"
    assert [c.resolved() for c in sweep.configs()] == [c.resolved() for c in (*_configs("warm_start"),
                                                                                 *_configs("reset_all"))]
    assert sorted(p.name for p in (out / "populations").iterdir()) == sorted(t.name for t in sweep.populations())
    for condition in ("warm_start", "reset_all"):
        direct = pl.run(_configs(condition))
        pd.testing.assert_frame_equal(results.epochs([condition]), direct)
        (population,) = [p for p in results.populations if p["configs"][0]["condition"] == condition]
        folder = out / "populations" / population["population"]
        pd.testing.assert_frame_equal(pd.read_parquet(folder / "epochs.parquet"), direct)
        expected = summarise(direct, stride=_configs(condition)[0].resolved().test_interval)
        for name in TABLES:
            pd.testing.assert_frame_equal(pd.read_parquet(folder / f"{name}.parquet"), expected[name])
    # the same command again finds the study complete and trains nothing
    before = {p: p.read_bytes() for p in (out / "populations").rglob("*") if p.is_file()}
    assert main([*RUN, "--out", str(out)]) == 0
    assert {p: p.read_bytes() for p in (out / "populations").rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--env", "pong"], "unknown env 'pong'; valid: gridworld"),
        (["--shift", "permute,shuffle"], "unknown shift 'shuffle'; valid: permute, window, expand"),
        (["--condition", "warm_start,magic"], "unknown condition 'magic'"),
        (["--preset", "tiny"], "unknown preset 'tiny'; valid: paper, book, smoke"),
        (["--rounds", "0"], "rounds must be a positive integer; got 0"),
        (["--seeds", "5-2"], "bad seeds '5-2'"),
        (["--param", "perturb"], "bad --param 'perturb'"),
    ],
)
def test_bad_input_fails_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "never"
    assert main(["run", "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert not out.exists()


def test_conditions_lists_every_condition(capsys):
    from plasticity_lab import CONDITIONS

    assert main(["conditions"]) == 0
    printed = capsys.readouterr().out
    for name, cls in CONDITIONS.items():
        assert name in printed and cls.description in printed


def test_manifest_records_the_environment_from_before_training(tmp_path, monkeypatch):
    """A long run may outlive the checkout it started from: the commit recorded is the one that ran."""
    import plasticity_lab.experiment as experiment
    import plasticity_lab.sweep as sweep

    events = []
    real_info, real_train = sweep.environment_info, experiment.train
    monkeypatch.setattr(sweep, "environment_info", lambda: events.append("environment") or
                        {**real_info(), "git_commit": f"commit-at-call-{len(events)}"})
    monkeypatch.setattr(experiment, "train", lambda *a, **k: events.append("train") or real_train(*a, **k))
    out = tmp_path / "study"
    assert main(["run", "--preset", "smoke", "--rounds", "1", "--epochs-per-round", "1", "--test-episodes", "11",
                 "--out", str(out), "--no-progress"]) == 0
    # the study's session, then its one population, each read before anything trained
    assert events == ["environment", "environment", "train"]
    assert json.loads((out / "manifest.json").read_text())["git_commit"] == "commit-at-call-1"
    assert load_results(out).populations[0]["git_commit"] == "commit-at-call-2"


def test_the_commit_is_read_once_per_process_so_a_moving_checkout_does_not_relabel_later_results(monkeypatch):
    import subprocess

    import plasticity_lab.results as results

    heads = iter(["first-commit", "second-commit"])
    calls = []

    def fake_run(args, **kwargs):
        calls.append(args[1])
        out = next(heads) if args[1] == "rev-parse" else ""  # `git status`: a clean checkout
        return subprocess.CompletedProcess(args, 0, stdout=out + "\n", stderr="")

    results.git_commit.cache_clear()
    monkeypatch.setattr(results.subprocess, "run", fake_run)
    try:
        assert results.git_commit() == "first-commit"
        assert results.git_commit() == "first-commit"  # the checkout has moved on; the process's code has not
        assert calls == ["rev-parse", "status"]
    finally:
        results.git_commit.cache_clear()


def test_sweep_plan_lists_what_is_stored_and_what_is_left_and_writes_nothing(tmp_path, capsys):
    """A study trained in sittings: one population stored, one interrupted (its checkpoint present), the rest not
    begun; ``--plan`` tells them apart, counts what is left, and changes nothing on disk."""
    from plasticity_lab.sweep import run_sweep, sweep_plan, training_order

    file = tmp_path / "plan.toml"
    file.write_text('study = "plan"\npreset = "smoke"\nshifts = ["permute"]\nconditions = ["warm_start", "l2"]\n'
                    'seeds = "0-1"\nmax_members = 1\n[overrides]\nrounds = 2\nepochs_per_round = 2\n'
                    'test_episodes = 11\n')
    sweep = Sweep.from_file(file)
    order = training_order(sweep.populations())  # warm_start 0, l2 0, warm_start 1, l2 1
    # nothing there yet: all to train, and the study folder is not created
    assert main(["sweep", str(file), "--root", str(tmp_path / "data"), "--plan"]) == 0
    assert not (tmp_path / "data").exists()
    assert capsys.readouterr().out.splitlines()[-1] == (
        "plan: 0 of 4 populations stored (0 of 4 runs); 4 left, 0 of them from a checkpoint: 16 of 16 agent-epochs "
        "left")
    run_sweep(sweep, root=tmp_path / "data", threads=1, progress=False)
    study = tmp_path / "data" / "plan"
    for task in order[1:]:
        shutil.rmtree(study / "populations" / task.name)
    (study / "checkpoints" / f"{order[2].name}.pt").write_bytes(b"")  # as an interrupted population leaves it
    before = sorted((p, p.stat().st_mtime_ns) for p in study.rglob("*"))
    plan = sweep_plan(sweep, root=tmp_path / "data")
    assert list(plan["population"]) == [t.name for t in order]
    assert list(plan["state"]) == ["stored", "to train", "checkpoint", "to train"]
    assert list(plan["conditions"]) == ["warm_start", "l2", "warm_start", "l2"]
    assert list(plan["shifts"]) == ["permute"] * 4
    assert list(plan["agent_epochs"]) == [4] * 4  # 1 run × 2 rounds × 2 epochs
    wall = json.loads((study / "populations" / order[0].name / "manifest.json").read_text())["wall_time_s"]
    assert plan["wall_time_h"].iloc[0] == pytest.approx(wall / 3600) and plan["wall_time_h"].iloc[1:].isna().all()
    assert main(["sweep", str(file), "--root", str(tmp_path / "data"), "--plan"]) == 0
    # what is left at the stored population's pace: 12 agent-epochs at wall / 4 s each
    assert capsys.readouterr().out.splitlines()[-1] == (
        "plan: 1 of 4 populations stored (1 of 4 runs); 3 left, 1 of them from a checkpoint: 12 of 16 agent-epochs "
        f"left; at the stored populations' pace ({wall / 4:.3g} s per agent-epoch), about {12 * wall / 4 / 3600:.3g} "
        "h of one worker")
    assert sorted((p, p.stat().st_mtime_ns) for p in study.rglob("*")) == before
    # a study made by another sweep is refused, as a sweep refuses it
    other = tmp_path / "other.toml"
    other.write_text(file.read_text().replace('seeds = "0-1"', 'seeds = "0-2"'))
    assert main(["sweep", str(other), "--root", str(tmp_path / "data"), "--plan"]) == 2
    assert "was made by a different sweep (differs in seeds)" in capsys.readouterr().err


def test_a_resumed_sweep_goes_on_with_the_turn_it_stopped_in(tmp_path, monkeypatch):
    """Seed 0 of both conditions and seed 1 of the first stored: next come seed 1 of the second, then seed 2s."""
    import plasticity_lab.sweep as sweep_module
    from plasticity_lab.sweep import run_sweep, training_order

    sweep = Sweep.from_dict({"study": "turns", "preset": "smoke", "shifts": ["permute"], "seeds": "0-2",
                             "conditions": ["warm_start", "l2"], "max_members": 1,
                             "overrides": {"rounds": 2, "epochs_per_round": 2, "test_episodes": 11}})
    order = training_order(sweep.populations())  # ws0, l2 0, ws1, l2 1, ws2, l2 2
    trained = []
    real = sweep_module.train_population

    def first_three(task, **kwargs):
        trained.append(task.name)
        if len(trained) > 3:
            raise KeyboardInterrupt  # the sitting ends
        return real(task, **kwargs)

    monkeypatch.setattr(sweep_module, "train_population", first_three)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, root=tmp_path, threads=1, progress=False)
    assert trained == [t.name for t in order[:4]]
    # the next sitting begins with l2 seed 1, the turn it stopped in, not warm_start seed 2
    trained.clear()
    run_sweep(sweep, root=tmp_path, threads=1, progress=False)
    assert trained == [t.name for t in order[3:]]


def test_a_grown_sweep_adopts_a_pilots_runs_and_trains_only_the_rest(tmp_path, capsys, monkeypatch):
    """A pilot (one shift) grown into a study of two shifts: ``--adopt`` copies the pilot's populations unchanged
    (same runs, same names), records where they came from, trains nothing; the grown sweep then trains only the
    new shift. A sweep whose runs differ adopts nothing, and bad sources are refused with one clear message."""
    import hashlib

    import plasticity_lab.sweep as sweep_module
    from plasticity_lab.sweep import adopt_populations, run_sweep

    text = ('preset = "smoke"\nconditions = ["warm_start", "l2"]\nseeds = "0-1"\nmax_members = 1\n'
            '[overrides]\nrounds = 2\nepochs_per_round = 2\ntest_episodes = 11\n')
    pilot_file, grown_file = tmp_path / "pilot.toml", tmp_path / "grown.toml"
    pilot_file.write_text('study = "pilot"\nshifts = ["permute"]\n' + text)
    grown_file.write_text('study = "grown"\nshifts = ["permute", "window"]\n' + text)
    root = tmp_path / "data"
    run_sweep(Sweep.from_file(pilot_file), root=root, threads=1, progress=False)
    pilot = root / "pilot" / "populations"

    def digest(folder):
        return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(folder.rglob("*")) if p.is_file()}

    names = sorted(p.name for p in pilot.iterdir())
    assert len(names) == 4  # 2 conditions × 2 seeds, one run each
    trained = []
    monkeypatch.setattr(sweep_module, "train_population", lambda task, **kw: trained.append(task.name))
    assert main(["sweep", str(grown_file), "--root", str(root), "--adopt", str(root / "pilot")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"adopted 4 population(s) from {root / 'pilot'}")
    assert out.splitlines()[-1].startswith("grown: 4 of 8 populations stored (4 of 8 runs); 4 left")
    assert trained == []
    grown = root / "grown"
    assert digest(grown / "populations") == digest(pilot)  # copied byte for byte, nothing else
    assert not [p for p in grown.iterdir() if p.name.startswith(".")]  # no staging folder left
    manifest = json.loads((grown / "manifest.json").read_text())
    assert sorted(manifest["populations"]) == names
    assert {e["adopted_from"] for e in manifest["populations"].values()} == {"pilot"}
    pilot_manifest = json.loads((root / "pilot" / "manifest.json").read_text())
    assert sum(e["wall_time_s"] for e in manifest["populations"].values()) == pytest.approx(
        pilot_manifest["wall_time_s"], abs=1e-3)
    # adopting again copies nothing and changes nothing
    before = sorted((p, p.stat().st_mtime_ns) for p in grown.rglob("*"))
    assert adopt_populations(Sweep.from_file(grown_file), root / "pilot", root=root) == []
    assert sorted((p, p.stat().st_mtime_ns) for p in grown.rglob("*")) == before
    # the grown sweep trains only the window runs, and its permute runs are the pilot's
    monkeypatch.undo()
    trained_names = []
    real = sweep_module.train_population

    def recording(task, **kw):
        trained_names.append(task.name)
        return real(task, **kw)

    monkeypatch.setattr(sweep_module, "train_population", recording)
    results = run_sweep(Sweep.from_file(grown_file), root=root, threads=1, progress=False)
    assert len(trained_names) == 4 and not set(trained_names) & set(names)
    runs = results.runs()
    assert sorted(runs["shift"].unique()) == ["permute", "window"] and len(runs) == 8
    pilot_runs = load_results(root / "pilot").runs().sort_values(["condition", "seed"]).reset_index(drop=True)
    permute = runs[runs["shift"] == "permute"].sort_values(["condition", "seed"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(permute[pilot_runs.columns], pilot_runs)
    # another scale forms other runs: nothing to adopt
    other = tmp_path / "other.toml"
    other.write_text(grown_file.read_text().replace('study = "grown"', 'study = "other"')
                     .replace("epochs_per_round = 2", "epochs_per_round = 3"))
    assert adopt_populations(Sweep.from_file(other), root / "pilot", root=root) == []
    assert not (root / "other").exists()
    # bad sources: one clear message each, nothing written
    assert main(["sweep", str(other), "--root", str(root), "--adopt", str(tmp_path / "nowhere")]) == 2
    assert f"{tmp_path / 'nowhere'} is not a stored study (it has no manifest.json)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="is the sweep's own study"):
        adopt_populations(Sweep.from_file(grown_file), grown, root=root)
    assert not (root / "other").exists()
