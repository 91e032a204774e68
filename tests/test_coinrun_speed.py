"""The helpers of ``benchmarks/coinrun_speed.py`` (the benchmark itself prints timings and is not a test)."""

import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "coinrun_speed.py"
_spec = importlib.util.spec_from_file_location("coinrun_speed", _path)
coinrun_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(coinrun_speed)


@pytest.mark.parametrize("epochs, interval, expected", [(5000, 100, 50), (50, 10, 5), (2, 1, 2), (7, 3, 3), (1, 5, 1)])
def test_evaluations_per_round_counts_every_interval_and_the_last_epoch(epochs, interval, expected):
    assert coinrun_speed.evaluations_per_round(epochs, interval) == expected


def test_the_preset_plans_follow_the_resolved_config():
    from plasticity_lab.config import RunConfig

    for preset in coinrun_speed.PRESETS:
        cfg = RunConfig(env="coinrun", preset=preset).resolved()
        plan = coinrun_speed.preset_plan(preset)
        assert (plan["rounds"], plan["epochs_per_round"], plan["test_interval"]) == (
            cfg.rounds, cfg.epochs_per_round, cfg.test_interval)


def test_a_projection_adds_epochs_and_evaluations_per_agent():
    plan = {"preset": "x", "rounds": 2, "epochs_per_round": 10, "pool_size": 1, "test_interval": 5,
            "evaluations_per_round": 2}
    row = {"members": 4, "s_per_agent_epoch": 36.0, "eval_s_per_agent": 90.0}
    p = coinrun_speed.project(row, plan, grid_runs=10)
    assert p["run_h"] == pytest.approx((20 * 36 + 4 * 90) / 3600)
    assert p["population_h"] == pytest.approx(4 * p["run_h"])
    assert p["grid_h"] == pytest.approx(10 * p["run_h"])
    assert p["paper_grid_h"] == pytest.approx(165 * p["run_h"])


def test_environment_sizes_parse_and_bad_ones_are_refused():
    assert coinrun_speed.parse_env_sizes("1x11, 5X11,15") == [(1, 11), (5, 11), (15, 11)]
    with pytest.raises(ValueError, match="MEMBERSxCOPIES"):
        coinrun_speed.parse_env_sizes("5by11")
    with pytest.raises(ValueError, match=">= 1"):
        coinrun_speed.parse_env_sizes("0x11")


def test_the_timed_environment_adds_up_its_calls_and_passes_the_rest_through():
    class Games:
        copies, episodes_end = 3, True

        def reset(self, generator):
            return "obs"

        def step(self, actions):
            return actions

    timed = coinrun_speed.TimedEnv(Games())
    assert timed.reset(None) == "obs" and timed.step(7) == 7 and timed.step(8) == 8
    assert (timed.resets, timed.steps, timed.copies, timed.episodes_end) == (1, 2, 3, True)
    assert timed.seconds >= 0
