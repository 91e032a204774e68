"""``benchmarks/release_speed.py`` (its harness, not its timings) and the chapter's reader of its stored runs,
:mod:`plasticity_lab.figures.speed`."""

import importlib.util
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plasticity_lab.figures import speed

ROOT = Path(__file__).resolve().parent.parent
_path = ROOT / "benchmarks" / "release_speed.py"
_spec = importlib.util.spec_from_file_location("release_speed", _path)
release_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(release_speed)

STORED = ROOT / "data" / "benchmarks" / "release-speed" / "speed.json"


def pl_status():
    """What a worker that flushes denormals records on this machine."""
    from plasticity_lab.backends import denormals

    with denormals.flushed(True):
        return "on" if denormals.flushing_now() else "unsupported"


def _row(name, members, seconds, fastest, slowest):
    return {"row": name, "members": members, "median_s_per_agent_epoch": seconds, "fastest": fastest,
            "slowest": slowest, "repeats": 3, "paper_grid_h": seconds * 50_000 * 165 / 3600}


def _write(path, rows, manifest=None):
    path.write_text(json.dumps({"manifest": manifest or {"processor": "x"}, "rows": rows}))
    return path


def test_a_stored_run_reads_with_speed_ups_against_the_release_and_each_rows_kind(tmp_path):
    run = speed.load_speed(_write(tmp_path / "s.json", [
        _row("authors' release", 1, 0.4, 0.38, 0.45),
        _row("plasticity-lab, population of 15", 15, 0.025, 0.02, 0.03),
        _row("matrix products at a large product's speed", None, 0.016, 0.015, 0.017),
    ]))
    assert list(run.table["kind"]) == ["release", "plasticity-lab", "limit"]
    assert list(run.table["speed_up"]) == pytest.approx([1.0, 16.0, 25.0])
    fig = speed.speed_figure(run, title="t")
    bars, grid = fig.data
    # the figure lists the rows top-down in the file's order (plotly draws its first bar at the bottom)
    assert list(bars.y) == ["matrix products at a large product's speed<br>25.0× the release",
                            "plasticity-lab, population of 15<br>16.0× the release", "authors' release<br>1.0× the release"]
    assert list(bars.x) == pytest.approx([0.016, 0.025, 0.4])
    assert list(bars.error_x.arrayminus) == pytest.approx([0.001, 0.005, 0.02])
    assert list(bars.error_x.array) == pytest.approx([0.001, 0.005, 0.05])
    assert list(grid.y) == list(bars.y)
    assert list(grid.text) == ["37 h", "57 h", "917 h"]
    assert list(grid.x) == pytest.approx([0.016 * 50_000 * 165 / 3600, 0.025 * 50_000 * 165 / 3600,
                                          0.4 * 50_000 * 165 / 3600])


def test_without_the_release_there_is_no_speed_up(tmp_path):
    run = speed.load_speed(_write(tmp_path / "s.json", [_row("plasticity-lab, population of 1", 1, 0.06, 0.05,
                                                              0.07)]))
    assert math.isnan(run.table["speed_up"].iloc[0])
    assert list(speed.speed_figure(run).data[0].y) == ["plasticity-lab, population of 1"]


def test_a_missing_malformed_or_incomplete_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no stored speed run at"):
        speed.load_speed(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="is not a speed run's JSON"):
        speed.load_speed(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match="needs 'rows'"):
        speed.load_speed(tmp_path / "list.json")
    row = _row("authors' release", 1, 0.4, 0.38, 0.45)
    del row["fastest"]
    with pytest.raises(ValueError, match=r"lack \['fastest'\]"):
        speed.load_speed(_write(tmp_path / "short.json", [row]))


def test_the_stored_run_measured_every_row_in_one_sitting_from_a_clean_commit():
    run = speed.load_speed(STORED)
    manifest = run.manifest
    assert manifest["benchmark"] == "benchmarks/release_speed.py"
    assert manifest["git_commit"] and not manifest["git_commit"].endswith("-dirty")
    assert manifest["release_commit"] == "75f0d5af374e3b429316765928351234384ef261"  # the release's fixtures' commit
    assert set(run.table["kind"]) == {"release", "plasticity-lab", "limit"}
    assert (run.table["repeats"] == manifest["arguments"]["repeats"]).all()
    assert (run.table["fastest"] <= run.table["median_s_per_agent_epoch"]).all()
    assert (run.table["median_s_per_agent_epoch"] <= run.table["slowest"]).all()
    # the limit is a lower bound of every implementation measured beside it
    limit = run.table.loc[run.table["kind"] == "limit", "median_s_per_agent_epoch"].iloc[0]
    assert (run.table.loc[run.table["kind"] != "limit", "median_s_per_agent_epoch"] > limit).all()


def test_the_release_worker_times_only_the_epochs_after_the_warm_up_of_the_releases_own_trainer(tmp_path):
    # A stand-in release: gen_trainer records what it was given; its trainer's first epoch is slow, as the
    # release's is (it tests at epoch 0), and every later one sleeps 10 ms.
    release = tmp_path / "release"
    (release / "shared").mkdir(parents=True)
    (release / "shared" / "__init__.py").write_text("")
    (release / "hyperparams.yaml").write_text(textwrap.dedent("""\
        environment: {name: procgen, task: coinrun_100, shift_type: permute, obs_type: conv64, env_copies: 11}
        ppo_trainer: {buffer_size: 1024, test_interval: 100}
        """))
    (release / "shared" / "runner.py").write_text(textwrap.dedent("""\
        import json, time
        class Trainer:
            def train(self, epoch):
                print("epoch", epoch)  # the release prints every epoch: the worker must keep stdout clean
                time.sleep(0.5 if epoch == 0 else 0.01)
        def gen_trainer(hyperparams, seed, descriptor, base_path):
            with open("%s", "w") as f:
                json.dump({"environment": hyperparams["environment"], "seed": seed}, f)
            return Trainer()
        """) % (tmp_path / "given.json"))
    job = {"kind": "release", "release": str(release), "neuronav": None, "epochs": 5, "warmup": 1,
           "threads": 1, "seed": 0}
    done = subprocess.run([sys.executable, str(_path), "--worker", json.dumps(job)], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(done.stdout.strip().splitlines()) == 1
    assert 0.01 <= result["s_per_agent_epoch"] < 0.1  # the slow first epoch is not in the mean
    assert result["members"] == 1 and result["epochs"] == 5
    given = json.loads((tmp_path / "given.json").read_text())
    assert given["environment"] == release_speed.RELEASE_ENVIRONMENT and given["seed"] == 0
    assert result["torchvision_stand_ins"] is not None


def test_the_torchvision_stand_ins_are_constructible_but_never_callable(monkeypatch):
    pytest.importorskip("torch")
    for name in ("torchvision", "torchvision.transforms", "torchvision.datasets"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: the benchmark uses it and needs no stand-ins")
    monkeypatch.setattr(sys, "modules", dict(sys.modules))  # the stand-ins leave with this test
    assert release_speed._stand_in_torchvision() is True
    from torchvision import transforms
    from torchvision.datasets import MNIST

    resize = transforms.Resize((64, 64), interpolation=transforms.functional.InterpolationMode.NEAREST)
    with pytest.raises(RuntimeError, match="stand-in"):
        resize(None)
    with pytest.raises(RuntimeError, match="stand-in"):
        MNIST("root")


def test_plasticity_labs_own_rows_run_and_write_a_manifest(tmp_path):
    out = tmp_path / "speed.json"
    release_speed.main(["--sizes", "2", "--epochs", "2", "--warmup", "1", "--keep-denormals", "--json", str(out)])
    run = speed.load_speed(out)
    assert list(run.table["row"]) == ["plasticity-lab, population of 2",
                                      "plasticity-lab, population of 2, denormals kept",
                                      "matrix products at a large product's speed"]
    assert list(run.table["kind"]) == ["plasticity-lab", "plasticity-lab", "limit"]
    assert list(run.table["flush_denormals"].iloc[:2]) == [pl_status(), "off"]
    assert run.table["median_s_per_agent_epoch"].notna().all()
    assert run.table.loc[2, "median_s_per_agent_epoch"] > 0
    assert run.manifest["arguments"]["sizes"] == "2" and run.manifest["release_commit"] is None
    assert run.manifest["flop_per_agent_epoch"] == release_speed.FLOP_PER_AGENT_EPOCH


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "0"], "--sizes must be a comma-separated list of positive population sizes, got '0'"),
    (["--sizes", "a,b"], "got 'a,b'"),
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--warmup", "0"], "--warmup must be at least 1"),
    (["--release", "/nonexistent"], "is not a checkout of the authors' release"),
])
def test_bad_arguments_are_one_clear_error(argv, message):
    with pytest.raises(SystemExit, match=message):
        release_speed.main(argv)


def test_plasticity_labs_rows_train_the_papers_settings_whatever_the_measured_length():
    for epochs in (1, 21, 120):
        configs = [c.resolved() for c in release_speed.ours_configs(3, epochs)]
        assert [c.seed for c in configs] == [0, 1, 2]
        for c in configs:
            assert (c.env, c.shift, c.condition, c.rounds, c.epochs_per_round) == (
                "gridworld", "permute", "warm_start", 1, epochs)
            assert (c.test_interval, c.pool_size, c.num_envs, c.test_episodes) == (100, 100, 11, 55)
