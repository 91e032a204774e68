"""The command line: a run writes its folder; bad input fails before any work with one clear message."""

import json

import pandas as pd
import pytest

from plasticity_lab.cli import main


def test_run_writes_results_and_manifest(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["run", "--shift", "permute", "--condition", "warm_start,reset_all", "--seeds", "0-1",
                 "--preset", "smoke", "--rounds", "2", "--epochs-per-round", "2", "--test-episodes", "11",
                 "--out", str(out), "--no-progress"])
    assert code == 0
    df = pd.read_parquet(out / "epochs.parquet")
    assert len(df) == 2 * 2 * 4  # conditions x seeds x epochs
    assert set(df["condition"]) == {"warm_start", "reset_all"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seeds"] == [0, 1] and manifest["presets"] == ["smoke"]
    assert {c["epochs_per_round"] for c in manifest["configs"]} == {2}
    for key in ("package_version", "git_commit", "torch", "platform", "cpu_count", "cpu_matmul", "wall_time_s"):
        assert key in manifest
    printed = capsys.readouterr().out
    assert "warm_start" in printed and "reset_all" in printed and str(out) in printed
    # the table is explained: what the numbers are, what each row is, what each column is
    assert "Normalised reward: each round's return" in printed and "r2..R" not in printed
    assert "warm_start under permute: Keep training" in printed and "reset_all under permute:" in printed
    assert "Columns:" in printed and "round r: the normalised train reward" in printed


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
    import plasticity_lab.results as results

    events = []
    real_info, real_run = results.environment_info, experiment.run
    monkeypatch.setattr(results, "environment_info", lambda: events.append("environment") or
                        {**real_info(), "git_commit": f"commit-at-call-{len(events)}"})
    monkeypatch.setattr(experiment, "run", lambda *a, **k: events.append("train") or real_run(*a, **k))
    out = tmp_path / "study"
    assert main(["run", "--preset", "smoke", "--rounds", "1", "--epochs-per-round", "1", "--test-episodes", "11",
                 "--out", str(out), "--no-progress"]) == 0
    assert events == ["environment", "train"]
    assert json.loads((out / "manifest.json").read_text())["git_commit"] == "commit-at-call-1"


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
