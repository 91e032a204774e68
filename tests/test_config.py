"""Run configuration: presets, overrides and clear errors for bad input."""

import pytest

from plasticity_lab import RunConfig, parse_seeds
from plasticity_lab.config import PRESETS


def test_presets_fill_unset_fields_and_explicit_fields_win():
    paper = RunConfig(preset="paper").resolved()
    assert (paper.rounds, paper.epochs_per_round, paper.pool_size, paper.test_interval) == (10, 5000, 100, 100)
    custom = RunConfig(preset="paper", epochs_per_round=500, pool_size=10).resolved()
    assert (custom.rounds, custom.epochs_per_round, custom.pool_size, custom.test_interval) == (10, 500, 10, 10)
    assert RunConfig(preset="smoke", test_interval=3).resolved().test_interval == 3
    assert set(PRESETS) == {"paper", "book", "smoke"}


def test_config_round_trips_through_a_dict():
    c = RunConfig(shift="window", condition="reset_all", seed=3, preset="smoke").resolved()
    assert RunConfig.from_dict(c.to_dict()) == c


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"env": "atari"}, r"unknown env 'atari'; valid: gridworld"),
        ({"shift": "permut"}, r"unknown shift 'permut'; valid: permute, window, expand"),
        ({"condition": "warm"}, r"unknown condition 'warm'; valid: warm_start, reset_all, reset_final"),
        ({"condition": "warm_start+resett_all"}, r"unknown condition 'resett_all'"),
        ({"preset": "huge"}, r"unknown preset 'huge'; valid: paper, book, smoke"),
        ({"rounds": 0}, r"rounds must be a positive integer; got 0"),
        ({"epochs_per_round": -5}, r"epochs_per_round must be a positive integer; got -5"),
        ({"pool_size": 2.5}, r"pool_size must be a positive integer; got 2.5"),
        ({"num_envs": 0}, r"num_envs must be a positive integer; got 0"),
        ({"seed": -1}, r"seed must be a non-negative integer; got -1"),
        ({"condition_params": {"beta": 0.1}}, r"unknown parameter\(s\) \['beta'\]"),
        ({"device": "tpu"}, r"unknown device 'tpu'"),
    ],
)
def test_bad_input_raises_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**kwargs)


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("0,3,7") == [0, 3, 7]
    assert parse_seeds("2") == [2]
    for bad in ("4-0", "a", "1,1", "-3", ""):
        with pytest.raises(ValueError, match="seeds"):
            parse_seeds(bad)
