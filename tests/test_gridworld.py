"""Tests of the gather gridworld against the authors' release (tests/fixtures/gridworld_reference.json)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

import plasticity_lab.envs  # noqa: F401  (registers plasticity_lab/Gather-v0)
from plasticity_lab.envs import GatherEnv, GridworldBatch, LevelLayout, level_layout
from plasticity_lab.envs import gridworld as gw

FIXTURE = Path(__file__).parent / "fixtures" / "gridworld_reference.json"
REF = json.loads(FIXTURE.read_text())
REF_LEVELS = REF["levels"]
LEVEL_IDS = [entry["level"] for entry in REF_LEVELS]
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


def _cells(pairs) -> list[list[int]]:
    return [[int(x), int(y)] for x, y in pairs]


def _nonzero(obs: np.ndarray) -> dict:
    idx = np.flatnonzero(obs)
    return {"idx": idx.tolist(), "val": obs[idx].tolist()}


# ---------------------------------------------------------------------- fixture: layouts
def test_fixture_covers_expected_levels():
    assert LEVEL_IDS == [0, 1, 2, 7, 42]
    assert REF["meta"]["obs_layout"].startswith("obs index = (x*11 + y)*3 + c")


@pytest.mark.parametrize("entry", REF_LEVELS, ids=[f"level{lv}" for lv in LEVEL_IDS])
def test_layout_matches_release(entry):
    layout = level_layout(entry["level"])
    assert isinstance(layout, LevelLayout)
    assert layout.level == entry["level"]
    assert list(layout.start) == entry["agent_start"]
    assert _cells(layout.walls) == entry["interior_walls_in_placement_order"]
    assert _cells(layout.pits) == entry["pits_in_placement_order"]
    assert _cells(layout.gems) == entry["gems_in_placement_order"]
    assert layout.pit_reward == entry["pit_reward"]
    assert layout.gem_reward == entry["gem_reward"]
    walls = layout.wall_grid()
    assert walls.dtype == bool and walls.shape == (11, 11)
    assert int(walls.sum()) == entry["num_outer_wall_cells"] + len(entry["interior_walls_in_placement_order"])
    rewards = layout.reward_grid()
    assert rewards.dtype == np.float32
    for x, y in entry["pits_in_placement_order"]:
        assert rewards[x, y] == entry["pit_reward"]
    for x, y in entry["gems_in_placement_order"]:
        assert rewards[x, y] == entry["gem_reward"]
    assert np.count_nonzero(rewards) == 10
    # The layout's own reset observation agrees with the release.
    np.testing.assert_array_equal(layout.observation(), np.asarray(entry["obs_reset_full"], dtype=np.float32))


# ---------------------------------------------------------------------- fixture: dynamics, batched
@pytest.mark.parametrize("device", DEVICES)
def test_batch_reproduces_release_trajectories(device):
    """All five fixture levels in one batch: reset obs, every step's reward/position/obs, final obs."""
    env = GridworldBatch(len(REF_LEVELS), device=device)
    obs = env.reset(torch.tensor(LEVEL_IDS, dtype=torch.long, device=device))
    assert obs.shape == (5, 363) and obs.dtype == torch.float32 and obs.device.type == device
    expected_reset = np.asarray([e["obs_reset_full"] for e in REF_LEVELS], dtype=np.float32)
    np.testing.assert_array_equal(obs.cpu().numpy(), expected_reset)
    assert env.agent_pos.cpu().tolist() == [e["agent_start"] for e in REF_LEVELS]

    actions = np.asarray([e["actions"] for e in REF_LEVELS])  # [5, T]
    for t in range(actions.shape[1]):
        obs, reward = env.step(torch.as_tensor(actions[:, t], device=device))
        assert obs.shape == (5, 363) and reward.shape == (5,) and reward.dtype == torch.float32
        obs_np, reward_np, pos = obs.cpu().numpy(), reward.cpu().numpy(), env.agent_pos.cpu().tolist()
        for b, entry in enumerate(REF_LEVELS):
            step = entry["steps"][t]
            assert step["action"] == actions[b, t]
            assert reward_np[b] == step["reward"], (entry["level"], t)
            assert pos[b] == step["agent_pos"], (entry["level"], t)
            assert _nonzero(obs_np[b]) == step["obs_nonzero"], (entry["level"], t)
            assert step["done"] is False
    assert env.step_count == actions.shape[1]
    expected_final = np.asarray([e["obs_after_actions_full"] for e in REF_LEVELS], dtype=np.float32)
    np.testing.assert_array_equal(obs.cpu().numpy(), expected_final)
    for b, entry in enumerate(REF_LEVELS):
        assert _nonzero(expected_final[b]) == entry["obs_after_actions_nonzero"]


def test_batch_reset_returns_fresh_tensors_and_resets_state():
    env = GridworldBatch(5)
    levels = torch.tensor(LEVEL_IDS)
    first = env.reset(levels)
    kept = first.clone()
    obs1, _ = env.step(torch.full((5,), 0))
    obs1_kept = obs1.clone()
    for _ in range(4):
        env.step(torch.full((5,), 1))
    # returned observations are not views of the internal state
    np.testing.assert_array_equal(first.numpy(), kept.numpy())
    np.testing.assert_array_equal(obs1.numpy(), obs1_kept.numpy())
    again = env.reset(levels)  # rewards collected before must be back, agent at the start
    np.testing.assert_array_equal(again.numpy(), kept.numpy())
    assert env.step_count == 0
    assert env.levels.tolist() == LEVEL_IDS


def test_batch_reset_mixed_cached_and_new_levels():
    env = GridworldBatch(4)
    env.reset([7, 0, 7, 42])
    assert env.num_cached_levels == 3
    obs = env.reset([1, 42, 2, 0])  # two new, two cached, out of order
    assert env.num_cached_levels == 5
    by_level = {e["level"]: np.asarray(e["obs_reset_full"], dtype=np.float32) for e in REF_LEVELS}
    np.testing.assert_array_equal(obs.numpy(), np.stack([by_level[lv] for lv in (1, 42, 2, 0)]))


def test_batch_input_validation():
    with pytest.raises(ValueError, match="num_envs"):
        GridworldBatch(0)
    with pytest.raises(ValueError, match="reward_magnitude"):
        GridworldBatch(2, reward_magnitude=0)
    env = GridworldBatch(2)
    with pytest.raises(ValueError, match="3 levels"):
        env.reset([0, 1, 2])
    with pytest.raises(ValueError, match="-1"):
        env.reset([0, -1])
    with pytest.raises(RuntimeError, match="before reset"):
        env.step(torch.tensor([0, 0]))


# ---------------------------------------------------------------------- independent reference generator
def _reference_layout(level: int):
    """A from-scratch transcription of the release's rule on NumPy's *global* legacy API."""
    state = np.random.get_state()
    try:
        np.random.seed(level)
        start = (5, 5)
        walls = []
        while len(walls) < 10:
            x = np.random.randint(2, 9)
            y = np.random.randint(1, 10)
            if (x, y) != start and (x, y) not in walls:
                walls.append((x, y))
        objects = []
        for _ in range(10):  # 5 pits then 5 gems
            while True:
                x = np.random.randint(2, 9)
                y = np.random.randint(1, 10)
                if (x, y) != start and (x, y) not in walls and (x, y) not in objects:
                    objects.append((x, y))
                    break
        return walls, objects[:5], objects[5:]
    finally:
        np.random.set_state(state)


@pytest.mark.parametrize("levels", [range(0, 200), range(1_000_000, 1_000_050), range(30_000, 30_050)])
def test_layout_matches_independent_reference(levels):
    for level in levels:
        walls, pits, gems = _reference_layout(level)
        layout = level_layout(level)
        assert _cells(layout.walls) == _cells(walls), level
        assert _cells(layout.pits) == _cells(pits), level
        assert _cells(layout.gems) == _cells(gems), level


def test_level_layout_does_not_touch_global_numpy_state():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    level_layout(987_654)  # uncached level
    np.testing.assert_array_equal(np.random.rand(3), expected)


# ---------------------------------------------------------------------- invariants
INVARIANT_LEVELS = list(range(0, 301)) + [10_000, 10_000_123, 1_000_000, 1_000_099, 2**32 - 1]


def test_layout_invariants_many_levels():
    for level in INVARIANT_LEVELS:
        layout = level_layout(level)
        assert layout.start == (5, 5)
        assert len(layout.walls) == 10 and len(set(layout.walls)) == 10
        assert len(layout.pits) == 5 and len(layout.gems) == 5
        cells = list(layout.walls) + list(layout.pits) + list(layout.gems)
        assert len(set(cells)) == 20, level  # no overlaps at all
        assert (5, 5) not in cells
        for x, y in cells:
            assert 2 <= x < 9 and 1 <= y < 10, (level, x, y)
        assert layout.pit_reward == -0.75 and layout.gem_reward == 0.75


def test_reset_observation_invariants_many_levels():
    env = GridworldBatch(len(INVARIANT_LEVELS))
    obs = env.reset(INVARIANT_LEVELS).numpy().reshape(-1, 11, 11, 3)
    agent, reward, wall = obs[..., 0], obs[..., 1], obs[..., 2]
    assert (agent.sum(axis=(1, 2)) == 1).all()
    assert (agent[:, 5, 5] == 1).all()
    assert (wall.sum(axis=(1, 2)) == 50).all()
    assert (wall[:, 0, :] == 1).all() and (wall[:, -1, :] == 1).all()
    assert (wall[:, :, 0] == 1).all() and (wall[:, :, -1] == 1).all()
    assert (np.count_nonzero(reward, axis=(1, 2)) == 10).all()
    assert ((reward == 0.75).sum(axis=(1, 2)) == 5).all() and ((reward == -0.75).sum(axis=(1, 2)) == 5).all()
    assert not np.any((reward != 0) & (wall != 0))
    assert set(np.unique(obs).tolist()) <= {-0.75, 0.0, 0.75, 1.0}


def test_moving_into_a_wall_keeps_position_and_episode_reward_is_bounded():
    levels = list(range(0, 300))
    env = GridworldBatch(len(levels))
    obs = env.reset(levels)
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros(len(levels))
    gems_left = torch.full((len(levels),), 5)
    for _ in range(gw.EPISODE_LENGTH):
        before = env.agent_pos.clone()
        actions = torch.randint(0, 4, (len(levels),), generator=gen)
        grid = obs.view(-1, 11, 11, 3)
        delta = torch.tensor(gw.ACTION_DELTAS)[actions]
        target = before + delta
        target_is_wall = grid[torch.arange(len(levels)), target[:, 0], target[:, 1], 2] > 0
        target_reward = grid[torch.arange(len(levels)), target[:, 0], target[:, 1], 1]
        obs, reward = env.step(actions)
        after = env.agent_pos
        expected = torch.where(target_is_wall[:, None], before, target)
        assert torch.equal(after, expected)
        assert torch.equal(reward, torch.where(target_is_wall, torch.zeros(()), target_reward))
        grid_after = obs.view(-1, 11, 11, 3)
        assert (grid_after[..., 0].sum(dim=(1, 2)) == 1).all()
        assert torch.equal(grid_after[..., 2], grid[..., 2])  # walls never change
        assert (grid_after[torch.arange(len(levels)), after[:, 0], after[:, 1], 1] == 0).all()
        total += reward
        gems_left -= (reward > 0).long()
    assert (total <= 5 * 0.75 + 1e-6).all() and (total >= -5 * 0.75 - 1e-6).all()
    assert (gems_left >= 0).all()
    remaining = obs.view(-1, 11, 11, 3)[..., 1]
    assert torch.equal((remaining > 0).sum(dim=(1, 2)), gems_left)


def test_border_blocks_every_direction():
    # Level-independent: walk far in each direction; the agent must stay inside [1, 9].
    env = GridworldBatch(4)
    env.reset([3, 3, 3, 3])
    for _ in range(12):
        env.step(torch.tensor([0, 1, 2, 3]))
    pos = env.agent_pos
    assert ((pos >= 1) & (pos <= 9)).all()


def test_reward_magnitude_option():
    layout = level_layout(0, reward_magnitude=1.0)
    assert layout.pit_reward == -1.0 and layout.gem_reward == 1.0
    assert layout.walls == level_layout(0).walls and layout.pits == level_layout(0).pits
    env = GridworldBatch(1, reward_magnitude=1.0)
    env.reset([0])
    _, reward = env.step(torch.tensor([0]))  # level 0: up from the start collects a gem
    assert reward.item() == 1.0


def test_level_layout_validation():
    for bad in (-1, 1.5, "3", True, 2**32):
        with pytest.raises(ValueError, match=re.escape(f"invalid level {bad!r}")):
            level_layout(bad)
    for bad in (0, -0.75, float("nan")):
        with pytest.raises(ValueError, match="reward_magnitude"):
            level_layout(0, reward_magnitude=bad)
    assert level_layout(np.int64(7)) == level_layout(7)


# ---------------------------------------------------------------------- gymnasium env
@pytest.mark.parametrize("entry", [REF_LEVELS[0], REF_LEVELS[-1]], ids=["level0", "level42"])
def test_gather_env_reproduces_release_trajectory(entry):
    env = GatherEnv()
    obs, info = env.reset(seed=0, options={"level": entry["level"]})
    assert info == {"level": entry["level"], "agent_pos": tuple(entry["agent_start"])}
    assert obs.dtype == np.float32 and obs.shape == (363,)
    np.testing.assert_array_equal(obs, np.asarray(entry["obs_reset_full"], dtype=np.float32))
    for step in entry["steps"]:
        obs, reward, terminated, truncated, info = env.step(step["action"])
        assert reward == step["reward"]
        assert list(info["agent_pos"]) == step["agent_pos"]
        assert _nonzero(obs) == step["obs_nonzero"]
        assert terminated is False and truncated is False
    np.testing.assert_array_equal(obs, np.asarray(entry["obs_after_actions_full"], dtype=np.float32))


def test_gymnasium_make_and_check_env():
    env = gymnasium.make("plasticity_lab/Gather-v0", render_mode="rgb_array")
    assert isinstance(env.unwrapped, GatherEnv)
    assert env.observation_space == gymnasium.spaces.Box(-1, 1, (363,), np.float32)
    assert env.action_space == gymnasium.spaces.Discrete(4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from gymnasium.utils.env_checker import check_env

        check_env(env.unwrapped)
        check_env(gymnasium.make("plasticity_lab/Gather-v0", levels=[5, 6], reward_magnitude=1.0).unwrapped)
    env.close()


def test_gather_env_truncates_at_max_steps_and_renders():
    env = gymnasium.make("plasticity_lab/Gather-v0", render_mode="rgb_array")
    obs, info = env.reset(seed=3)
    assert info["level"] in range(0, 100)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[0] == frame.shape[1] >= 11 * 8
    assert len(np.unique(frame.reshape(-1, 3), axis=0)) >= 4  # background, wall, gem, pit, agent colours
    for t in range(1, 101):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert terminated is False
        assert truncated is (t == 100)
    assert env.unwrapped.max_steps == 100


def test_gather_env_level_sampling_is_seeded_and_in_pool():
    env = GatherEnv(levels=range(500, 510))
    first = [env.reset(seed=11)[1]["level"]] + [env.reset()[1]["level"] for _ in range(30)]
    second = [env.reset(seed=11)[1]["level"]] + [env.reset()[1]["level"] for _ in range(30)]
    assert first == second
    assert set(first) <= set(range(500, 510)) and len(set(first)) > 3


def test_gather_env_validation():
    with pytest.raises(ValueError, match="render_mode 'human'"):
        GatherEnv(render_mode="human")
    with pytest.raises(ValueError, match="levels"):
        GatherEnv(levels=[])
    with pytest.raises(ValueError, match="max_steps 0"):
        GatherEnv(max_steps=0)
    env = GatherEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action 4"):
        env.step(4)


def test_registration_is_idempotent():
    import importlib

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        importlib.reload(plasticity_lab.envs)
    assert "plasticity_lab/Gather-v0" in gymnasium.envs.registry
