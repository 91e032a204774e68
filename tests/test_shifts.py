"""Tests of the distribution shifts against the authors' release (tests/fixtures/gridworld_reference.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from plasticity_lab import shifts
from plasticity_lab.shifts import (
    SHIFTS,
    Distribution,
    apply_mapping,
    distribution,
    level_range,
    permute_mapping,
)

FIXTURE = Path(__file__).parent / "fixtures" / "gridworld_reference.json"
REF = json.loads(FIXTURE.read_text())
MAPPINGS = REF["permute_obs_mappings"]["seed0"]
POOL_SIZE_OF_TASK = {"gather-vis": 10, "gather-vis_10": 10, "gather-vis_100": 100}


def test_shift_names():
    assert SHIFTS == ("permute", "window", "expand", "none")


# ---------------------------------------------------------------------- permute
@pytest.mark.parametrize("shifts_applied", [0, 1, 2])
def test_permute_mapping_matches_release(shifts_applied):
    expected = np.asarray(MAPPINGS[f"after_{shifts_applied}_shifts"])
    got = permute_mapping(0, shifts_applied + 1)
    assert got.shape == (363,) and got.dtype == np.int64
    np.testing.assert_array_equal(got, expected)


def test_round_one_is_already_shuffled_and_powers_compose():
    sigma = permute_mapping(0, 1)
    assert not np.array_equal(sigma, np.arange(363))  # the release permutes from round 1 on
    ref = np.arange(363)
    np.random.RandomState(0).shuffle(ref)
    np.testing.assert_array_equal(sigma, ref)
    power = np.arange(363)
    for r in range(1, 8):
        power = power[sigma]
        np.testing.assert_array_equal(permute_mapping(0, r), power)


@pytest.mark.parametrize("seed", [0, 1, 4, 123])
@pytest.mark.parametrize("rnd", [1, 2, 10])
def test_permute_mapping_is_a_permutation(seed, rnd):
    m = permute_mapping(seed, rnd)
    np.testing.assert_array_equal(np.sort(m), np.arange(363))
    assert permute_mapping(seed, rnd, size=20).shape == (20,)


def test_permute_mapping_differs_by_seed_and_is_not_aliased():
    a = permute_mapping(1, 1)
    assert not np.array_equal(a, permute_mapping(2, 1))
    a[:] = 0  # the caller may write into the result; the cached σ must be unaffected
    assert not np.array_equal(permute_mapping(1, 1), a)
    np.testing.assert_array_equal(np.sort(permute_mapping(1, 1)), np.arange(363))


def test_permute_mapping_does_not_touch_global_numpy_state():
    np.random.seed(5)
    expected = np.random.rand(2)
    np.random.seed(5)
    permute_mapping(777, 3)
    np.testing.assert_array_equal(np.random.rand(2), expected)


# ---------------------------------------------------------------------- apply_mapping
def test_apply_mapping_shared_matches_numpy_fancy_indexing():
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(7, 363, generator=gen)
    m = permute_mapping(0, 2)
    out = apply_mapping(raw, torch.as_tensor(m))
    np.testing.assert_array_equal(out.numpy(), raw.numpy()[:, m])
    # obs[i] = raw[mapping[i]] on a single vector, with a NumPy mapping
    np.testing.assert_array_equal(apply_mapping(raw[0], m).numpy(), raw[0].numpy()[m])
    # extra leading dims
    raw3 = torch.randn(3, 4, 363, generator=gen)
    np.testing.assert_array_equal(apply_mapping(raw3, torch.as_tensor(m)).numpy(), raw3.numpy()[..., m])


def test_apply_mapping_per_copy_matches_numpy_fancy_indexing():
    gen = torch.Generator().manual_seed(1)
    seeds = [0, 1, 2, 3, 4]
    maps = np.stack([permute_mapping(s, 3) for s in seeds])  # [B, D]
    raw = torch.randn(len(seeds), 363, generator=gen)
    out = apply_mapping(raw, torch.as_tensor(maps))
    expected = np.stack([raw.numpy()[b, maps[b]] for b in range(len(seeds))])
    np.testing.assert_array_equal(out.numpy(), expected)
    # a time axis in front: [T, B, D]
    raw_t = torch.randn(6, len(seeds), 363, generator=gen)
    out_t = apply_mapping(raw_t, torch.as_tensor(maps))
    expected_t = np.take_along_axis(raw_t.numpy(), np.broadcast_to(maps, raw_t.shape), axis=-1)
    np.testing.assert_array_equal(out_t.numpy(), expected_t)
    np.testing.assert_array_equal(out_t[2, 3].numpy(), raw_t[2, 3].numpy()[maps[3]])


def test_apply_mapping_shape_errors():
    with pytest.raises(ValueError, match="length 10"):
        apply_mapping(torch.zeros(2, 363), torch.arange(10))
    with pytest.raises(ValueError, match=r"\(3, 363\)"):
        apply_mapping(torch.zeros(2, 363), torch.zeros(3, 363, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_apply_mapping_cuda():
    raw = torch.randn(5, 363, device="cuda")
    maps = torch.as_tensor(np.stack([permute_mapping(s, 2) for s in range(5)]), device="cuda")
    out = apply_mapping(raw, maps)
    assert out.device.type == "cuda"
    expected = np.stack([raw.cpu().numpy()[b, maps[b].cpu().numpy()] for b in range(5)])
    np.testing.assert_array_equal(out.cpu().numpy(), expected)


# ---------------------------------------------------------------------- level ranges
def _fixture_range_cases():
    for key, entries in REF["level_ranges"].items():
        task, seed_part, kind, split = key.split("|")
        for entry in entries:
            yield pytest.param(task, int(seed_part.removeprefix("seed")), kind, split, entry, id=f"{key}|r{entry['round']}")


@pytest.mark.parametrize("task, seed, kind, split, entry", list(_fixture_range_cases()))
def test_level_range_matches_release(task, seed, kind, split, entry):
    assert entry["round"] == entry["shifts_applied"] + 1
    got = level_range(kind, seed, entry["round"], split, pool_size=POOL_SIZE_OF_TASK[task])
    assert isinstance(got, range)
    assert (got.start, got.stop, len(got)) == (entry["start"], entry["end_exclusive"], entry["count"])


def test_fixture_level_ranges_cover_all_tasks():
    keys = set(REF["level_ranges"])
    assert len(keys) == 12
    assert {k.split("|")[0] for k in keys} == set(POOL_SIZE_OF_TASK)


@pytest.mark.parametrize("kind", ["permute", "none"])
def test_fixed_pools(kind):
    for rnd in (1, 2, 10):
        assert level_range(kind, 3, rnd, "train") == range(30_000, 30_100)
        assert level_range(kind, 3, rnd, "test") == range(1_030_000, 1_030_100)


def test_window_and_expand_other_seed():
    assert level_range("window", 2, 4, "train", 100) == range(20_300, 20_400)
    assert level_range("expand", 2, 4, "test", 100) == range(1_020_000, 1_020_400)
    # window blocks are disjoint; expand pools are nested
    windows = [set(level_range("window", 1, r)) for r in range(1, 11)]
    assert all(not (windows[i] & windows[j]) for i in range(10) for j in range(i + 1, 10))
    expands = [set(level_range("expand", 1, r)) for r in range(1, 11)]
    assert all(expands[i] < expands[i + 1] for i in range(9))


# ---------------------------------------------------------------------- distribution
def test_distribution_combines_rules():
    d = distribution("permute", 0, 3)
    assert d.train_levels == range(0, 100) and d.test_levels == range(1_000_000, 1_000_100)
    np.testing.assert_array_equal(d.mapping, np.asarray(MAPPINGS["after_2_shifts"]))
    w = distribution("window", 0, 3, pool_size=10)
    assert w.train_levels == range(20, 30) and w.test_levels == range(1_000_020, 1_000_030) and w.mapping is None
    e = distribution("expand", 1, 2)
    assert e.train_levels == range(10_000, 10_200) and e.mapping is None
    n = distribution("none", 4, 9)
    assert n.train_levels == range(40_000, 40_100) and n.mapping is None
    assert distribution("permute", 0, 3) == d and distribution("permute", 0, 2) != d
    assert distribution("none", 4, 9) == n and hash(distribution("none", 4, 9)) == hash(n)
    assert isinstance(d, Distribution)
    assert distribution("permute", 0, 1, obs_size=12).mapping.shape == (12,)


# ---------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: level_range("permut", 0, 1), "unknown shift 'permut'; valid: permute, window, expand, none"),
        (lambda: distribution("shuffle", 0, 1), "unknown shift 'shuffle'; valid: permute, window, expand, none"),
        (lambda: level_range("window", 0, 1, split="val"), "unknown split 'val'; valid: train, test"),
        (lambda: level_range("window", 0, 0), "invalid round 0"),
        (lambda: permute_mapping(0, 0), "invalid round 0"),
        (lambda: permute_mapping(0, 1.5), "invalid round 1.5"),
        (lambda: level_range("window", 0, 1, pool_size=0), "invalid pool_size 0"),
        (lambda: distribution("expand", 0, 1, pool_size=-3), "invalid pool_size -3"),
        (lambda: level_range("window", -1, 1), "invalid seed -1"),
        (lambda: permute_mapping(-2, 1), "invalid seed -2"),
        (lambda: distribution("permute", 0, 1, obs_size=0), "invalid size 0"),
    ],
)
def test_validation_names_bad_value(call, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        call()


def test_validation_lists_valid_values():
    with pytest.raises(ValueError) as err:
        level_range("window", 0, -4)
    assert "-4" in str(err.value) and ">= 1" in str(err.value)
    assert shifts.SPLITS == ("train", "test")
