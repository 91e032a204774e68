"""Many levels at once (:mod:`plasticity_lab.envs.levels`) against the one-level generator, NumPy's own legacy
generator and the authors' release's fixtures."""

import json
from pathlib import Path

import numpy as np
import pytest

from plasticity_lab.envs import gridworld, levels
from plasticity_lab.envs.gridworld import _level_layout, level_layout

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "gridworld_reference.json"


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 10_000, 1_000_000, 123_456_789, 2**31, 2**32 - 1])
def test_the_first_block_is_numpys_legacy_generator_word_for_word(seed):
    block = levels.mt19937_first_block(np.array([seed, 3]))
    expected = np.random.RandomState(seed).randint(0, 2**32, size=624, dtype=np.uint32)
    assert block.dtype == np.uint32 and block.shape == (2, 624)
    assert np.array_equal(block[0], expected)
    assert np.array_equal(block[1], np.random.RandomState(3).randint(0, 2**32, size=624, dtype=np.uint32))
    assert np.array_equal(levels.mt19937_first_block(np.array([seed]), 227)[0], expected[:227])


def test_a_block_longer_than_the_generators_state_is_refused():
    with pytest.raises(ValueError, match=r"words must be in \[1, 624\], got 625"):
        levels.mt19937_first_block(np.array([1]), 625)


def _cells(rows):
    return [tuple(int(v) for v in cell) for cell in rows]


def test_layouts_equal_the_one_level_generator_in_placement_order():
    # the first levels of the training and test pools of seeds 0..2, and some scattered large indices
    chosen = [*range(0, 300), *range(10_000, 10_100), *range(1_000_000, 1_000_100), *range(1_020_000, 1_020_050),
              2**32 - 1, 4_000_000_000, 31_337]
    arrays = levels.level_arrays(chosen)
    assert list(arrays.levels) == chosen
    for i, level in enumerate(chosen):
        layout = _level_layout(level, 0.75)
        assert _cells(arrays.walls[i]) == list(layout.walls), level
        assert _cells(arrays.pits[i]) == list(layout.pits), level
        assert _cells(arrays.gems[i]) == list(layout.gems), level


@pytest.mark.parametrize("magnitude", [0.75, 1.0])
def test_observations_equal_the_one_level_generators_bit_for_bit(magnitude):
    chosen = np.r_[np.arange(0, 2_000), np.arange(50_000, 50_500), np.array([2**32 - 2, 5, 5])]  # repeats too
    obs = levels.level_observations(chosen, magnitude)
    expected = np.stack([level_layout(int(lv), magnitude).observation() for lv in chosen])
    assert obs.dtype == np.float32 and obs.shape == (len(chosen), gridworld.OBS_DIM)
    assert np.array_equal(obs, expected)


def test_the_releases_fixture_levels_come_out_as_the_release_made_them():
    reference = json.loads(FIXTURES.read_text())
    fixture_levels = reference["levels"]
    indices = [entry["level"] for entry in fixture_levels]
    arrays = levels.level_arrays(indices)
    obs = levels.level_observations(indices)
    for i, entry in enumerate(fixture_levels):
        assert _cells(arrays.walls[i]) == [tuple(c) for c in entry["interior_walls_in_placement_order"]]
        assert _cells(arrays.pits[i]) == [tuple(c) for c in entry["pits_in_placement_order"]]
        assert _cells(arrays.gems[i]) == [tuple(c) for c in entry["gems_in_placement_order"]]
        assert np.array_equal(obs[i], np.asarray(entry["obs_reset_full"], dtype=np.float32))


def test_a_level_past_the_first_block_of_words_falls_back_to_the_exact_generator(monkeypatch):
    # Let the vectorised placement read only 40 words, so that every level runs out of words part-way.
    monkeypatch.setattr(levels, "_WORDS", 40)
    chosen = list(range(20))
    expected = np.stack([level_layout(lv).observation() for lv in chosen])
    assert np.array_equal(levels.level_observations(chosen), expected)


def test_no_levels_is_an_empty_array_and_a_bad_level_or_magnitude_is_one_clear_error():
    assert levels.level_observations([]).shape == (0, gridworld.OBS_DIM)
    assert levels.level_arrays([]).walls.shape == (0, gridworld.N_WALLS, 2)
    with pytest.raises(ValueError, match=r"invalid level -1; a level must be an integer in \[0, 2\*\*32 - 1\]"):
        levels.level_arrays([3, -1])
    with pytest.raises(ValueError, match="invalid level 4294967296"):
        levels.level_observations([2**32])
    with pytest.raises(ValueError, match="invalid level 1.5"):
        levels.level_arrays([1.5])
    with pytest.raises(ValueError, match="invalid reward_magnitude 0"):
        levels.level_observations([1], 0)


def test_a_prepared_pool_resets_to_the_same_observations_without_generating_again(monkeypatch):
    import torch

    from plasticity_lab.envs.gridworld import GridworldBatch

    batch = GridworldBatch(4)
    batch.prepare_levels(range(100, 140))
    assert batch.num_cached_levels == 40
    batch.prepare_levels([120, 139, 100])  # all banked already: nothing added
    assert batch.num_cached_levels == 40

    def no_generation(*args, **kwargs):
        raise AssertionError("a prepared level was generated again")

    monkeypatch.setattr(levels, "level_observations", no_generation)
    obs = batch.reset(torch.tensor([100, 139, 117, 117]))
    expected = np.stack([level_layout(lv).observation() for lv in (100, 139, 117, 117)])
    assert np.array_equal(obs.numpy(), expected)
    with pytest.raises(ValueError, match=r"invalid level -3; a level must be an integer in \[0, 2\*\*32 - 1\]"):
        batch.prepare_levels([5, -3])


def test_a_population_generates_each_round_pool_whole_before_its_first_reset():
    from plasticity_lab.envs.population import GridworldPopulation
    from plasticity_lab.shifts import distribution

    env = GridworldPopulation(3, 2)
    dists = [distribution("window", seed, 2, pool_size=25) for seed in range(3)]
    env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
    assert env.batch.num_cached_levels == 1 + 3 * 25  # the starting pool [0, 1) and three pools of 25
    env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
    assert env.batch.num_cached_levels == 1 + 3 * 25


def test_the_levels_benchmark_compares_both_generators_on_the_same_levels(capsys):
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "levels_speed.py"
    spec = importlib.util.spec_from_file_location("levels_speed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--levels", "40", "--repeats", "1"])
    assert set(result) == {"one level at a time", "all levels at once"}
    assert all(seconds > 0 for seconds in result.values())
    assert "40 levels, 1 run(s) each" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--levels and --repeats must be at least 1, got 0 and 1"):
        module.main(["--levels", "0", "--repeats", "1"])
