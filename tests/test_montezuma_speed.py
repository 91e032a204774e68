"""The helpers of ``benchmarks/montezuma_speed.py`` (the benchmark itself prints timings and is not a test)."""

import importlib.util
from pathlib import Path

import pytest

_path = Path(__file__).resolve().parent.parent / "benchmarks" / "montezuma_speed.py"
_spec = importlib.util.spec_from_file_location("montezuma_speed", _path)
montezuma_speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(montezuma_speed)


def test_the_preset_plans_count_the_steps_of_a_run():
    book = montezuma_speed.preset_plan("book")
    assert (book["iterations"], book["games"], book["rollout_length"]) == (200, 8, 128)
    assert book["agent_steps"] == 200 * 8 * 128 and book["frames"] == 4 * 200 * 8 * 128
    assert book["init_steps"] == 50 * 128 * 8  # the RND paper's random start, per game
    assert montezuma_speed.preset_plan("paper")["agent_steps"] == 3000 * 128 * 128


def test_a_projection_adds_the_random_start_and_the_training_steps():
    plan = {"preset": "x", "agent_steps": 1000, "init_steps": 100}
    p = montezuma_speed.project({"members": 4, "s_per_agent_step": 0.036, "init_s_per_agent_step": 0.0036},
                                plan, grid_runs=10)
    assert p["run_h"] == pytest.approx((1000 * 0.036 + 100 * 0.0036) / 3600)
    assert p["population_h"] == pytest.approx(4 * p["run_h"])
    assert p["grid_h"] == pytest.approx(10 * p["run_h"]) and p["paper_grid_h"] == pytest.approx(60 * p["run_h"])


@pytest.mark.parametrize("text", ["", "0", "1,1", "a"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ValueError, match="bad --sizes"):
        montezuma_speed.parse_sizes(text)
