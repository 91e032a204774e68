"""scripts/train_within.py: named conditions trained within a time limit into one study folder, keeping only whole
populations; what it stores is what a sweep stores; bad input is one clear error."""

import importlib.util
import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

from plasticity_lab.results import load_results
from plasticity_lab.sweep import Sweep, run_sweep

_path = Path(__file__).resolve().parent.parent / "scripts" / "train_within.py"
_spec = importlib.util.spec_from_file_location("train_within", _path)
train_within = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(train_within)

ARGS = ["--conditions", "warm_start,reset_all,layernorm", "--preset", "smoke", "--shifts", "permute",
        "--seeds", "0-1", "--override", "rounds=2", "--override", "epochs_per_round=2",
        "--override", "test_episodes=11"]


def test_everything_finishes_within_a_generous_limit_and_equals_a_sweep(tmp_path, capsys):
    out = tmp_path / "within"
    assert train_within.main([*ARGS, "--seconds", "3600", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "2 of 2 populations stored" in printed and "MiB" in printed
    stored = load_results(out)
    assert sorted(stored.runs()["condition"].unique()) == ["layernorm", "reset_all", "warm_start"]
    assert stored.manifest["sweep"]["mix_conditions"] is True
    # the same sweep trained by the sweep runner stores the same tables
    sweep = Sweep.from_dict({**stored.manifest["sweep"], "study": "by-sweep"})
    reference = run_sweep(sweep, root=tmp_path, threads=1, progress=False)
    keys = ["shift", "condition", "seed", "round"]
    pd.testing.assert_frame_equal(stored.rounds.sort_values(keys).reset_index(drop=True),
                                  reference.rounds.sort_values(keys).reset_index(drop=True))
    assert set(stored.manifest["populations"]) == set(reference.manifest["populations"])
    # run again: nothing is trained twice
    assert train_within.main([*ARGS, "--seconds", "1", "--out", str(out)]) == 0
    assert "already stored" in capsys.readouterr().out


def test_a_population_projected_past_the_limit_is_dropped_and_nothing_of_it_is_kept(tmp_path):
    ticks = itertools.count(0, 100)  # a clock that moves 100 s at every reading

    def clock():
        return float(next(ticks))

    sweep = Sweep.from_dict({"study": "dropped", "conditions": ["warm_start", "layernorm"], "preset": "smoke",
                             "shifts": ["permute"], "seeds": [0], "mix_conditions": True,
                             "overrides": {"rounds": 2, "epochs_per_round": 2, "test_episodes": 11}})
    said = []
    fates = train_within.train_within(sweep, tmp_path / "dropped", seconds=250, probe=1, clock=clock, say=said.append)
    first, second = fates.values()
    # start 0, the first population begins at 100; after its first epoch (200) 3 more are projected to end at 500
    assert first.startswith("dropped after 1 of 4 epochs: projected to end 500 s after the start, past the limit of "
                            "250 s")
    assert second == "dropped: no time left"  # it would begin at 300
    assert len(said) == 2
    assert not any((tmp_path / "dropped" / "populations").iterdir())
    manifest = json.loads((tmp_path / "dropped" / "manifest.json").read_text())
    assert manifest["populations"] == {}


@pytest.mark.parametrize("change, message", [
    (["--conditions", "warm_start,nope"], "unknown condition 'nope'"),
    (["--seconds", "0"], "the time limit must be positive; got 0.0 s"),
    (["--override", "epochs_per_round"], "bad --override 'epochs_per_round'; use FIELD=VALUE"),
    (["--max-mib", "-1"], "--max-mib must be positive; got -1.0"),
    (["--override", "randomness=\"population\""], "mix_conditions needs every run's own random streams"),
    (["--threads", "0"], "--threads must be at least 1; got 0"),
])
def test_bad_arguments_are_one_clear_error_and_write_nothing(tmp_path, capsys, change, message):
    args = [*ARGS, "--seconds", "60", "--out", str(tmp_path / "bad")]
    for flag, value in zip(change[::2], change[1::2]):
        if flag in args and flag != "--override":
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    assert train_within.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_folder_made_by_another_sweep_is_refused(tmp_path, capsys):
    out = tmp_path / "other"
    assert train_within.main([*ARGS, "--seconds", "3600", "--out", str(out)]) == 0
    assert train_within.main([*ARGS, "--seconds", "60", "--out", str(out), "--seeds", "0-2"]) == 2
    assert "was made by a different sweep" in capsys.readouterr().err


def test_the_gpu_wrapper_installs_nothing_here_and_stores_the_study(tmp_path):
    import os
    import subprocess

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OUT": str(tmp_path), "DEVICE": "cpu", "PRESET": "smoke", "SHIFTS": "permute",
           "SEEDS": "0", "CONDITIONS": "warm_start,reset_all", "THREADS": "1", "SECONDS_LIMIT": "600"}
    done = subprocess.run(["bash", "benchmarks/gpu_study.sh"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    study = tmp_path / "gridworld-smoke-warm_start_reset_all"
    assert len(load_results(study).runs()) == 2
    assert "1 of 1 populations stored" in (tmp_path / "train.log").read_text()
    env.pop("CONDITIONS")
    missing = subprocess.run(["bash", "benchmarks/gpu_study.sh"], cwd=root, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "name the conditions" in missing.stderr


def test_montezuma_trains_a_population_per_condition_and_reads_its_scale(tmp_path, capsys):
    pytest.importorskip("ale_py")
    out = tmp_path / "mz"
    rnd = json.dumps({"rollout_length": 8, "init_steps": 4, "epochs": 1, "minibatches": 2})
    assert train_within.main(["--conditions", "warm_start,regen_l2", "--env", "montezuma", "--preset", "smoke",
                              "--seeds", "0", "--seconds", "600", "--out", str(out), "--override", f"rnd={rnd}",
                              "--override", "epochs_per_round=1", "--override", "num_envs=1"]) == 0
    results = load_results(out)
    assert sorted(results.rounds["condition"]) == ["regen_l2", "warm_start"] and len(results.populations) == 2
    assert results.describe() == ("study mz, preset smoke with its scale overridden (1 iterations × 1 games × 8 "
                                  "steps), 1 seed")
