"""CoinRun (PROTOCOL §3): level pools, the patch permutation, and the episode rules of CoinRunPopulation.

The rules (action repeat, step penalty, episode end, nothing recorded after it) are checked against a scripted
stand-in for ProcGen whose rewards and episode ends are chosen by the test; ProcGen itself is then checked for
shapes, level pools, reproducibility and the permutation of its frames.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from plasticity_lab.envs.coinrun import (
    ACTION_REPEAT,
    EPISODE_LENGTH,
    N_PATCHES,
    STEP_PENALTY,
    CoinRunPopulation,
    coinrun_level_range,
    patch_mapping,
    permute_patches,
    procgen_available,
)
from plasticity_lab.shifts import permute_mapping


# ------------------------------------------------------------------------------------------- level pools
@pytest.mark.parametrize("kind, round_, split, expected", [
    ("permute", 1, "train", range(0, 100)),
    ("permute", 7, "train", range(0, 100)),
    ("none", 4, "test", range(10_000, 10_100)),
    ("window", 1, "train", range(0, 100)),
    ("window", 2, "train", range(100, 200)),
    ("window", 10, "test", range(10_900, 11_000)),
    ("expand", 3, "train", range(0, 300)),
    ("expand", 3, "test", range(10_000, 10_300)),
])
def test_level_pools(kind, round_, split, expected):
    assert coinrun_level_range(kind, round_, split) == expected


def test_level_pool_size_and_bad_input():
    assert coinrun_level_range("window", 3, pool_size=10) == range(20, 30)
    with pytest.raises(ValueError, match="unknown shift 'rotate'; valid: permute, window, expand, none"):
        coinrun_level_range("rotate", 1)
    with pytest.raises(ValueError, match="invalid round 0"):
        coinrun_level_range("window", 0)


# -------------------------------------------------------------------------------------- patch permutation
def _patch(images: torch.Tensor, p: int) -> torch.Tensor:
    row, col = divmod(p, 16)
    return images[..., 4 * row:4 * row + 4, 4 * col:4 * col + 4]


def test_permute_patches_moves_whole_patches():
    images = torch.rand(2, 3, 64, 64)
    mapping = np.random.RandomState(3).permutation(N_PATCHES)
    out = permute_patches(images, mapping)
    for i in (0, 1, 15, 16, 100, 255):
        assert torch.equal(_patch(out, i), _patch(images, mapping[i]))
    # nothing lost or duplicated: every pixel value is still there
    assert torch.equal(out.flatten().sort().values, images.flatten().sort().values)
    assert torch.equal(permute_patches(images, np.arange(N_PATCHES)), images)


def test_permute_patches_per_image_mapping_and_inverse():
    images = torch.rand(3, 3, 64, 64)
    rows = np.stack([np.random.RandomState(s).permutation(N_PATCHES) for s in range(3)])
    out = permute_patches(images, rows)
    for n in range(3):
        assert torch.equal(out[n], permute_patches(images[n], rows[n]))
    inverse = np.argsort(rows, axis=1)
    assert torch.equal(permute_patches(out, inverse), images)


def test_patch_mapping_composes_sigma_each_round():
    sigma = permute_mapping(5, 1, N_PATCHES)
    assert sorted(sigma) == list(range(N_PATCHES)) and not np.array_equal(sigma, np.arange(N_PATCHES))
    np.testing.assert_array_equal(patch_mapping(5, 1), sigma)
    np.testing.assert_array_equal(patch_mapping(5, 3), sigma[sigma][sigma])
    assert not np.array_equal(patch_mapping(5, 1), patch_mapping(6, 1))


def test_permute_patches_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"images must be \[..., C, 64, 64\]"):
        permute_patches(torch.zeros(3, 32, 32), np.arange(N_PATCHES))
    with pytest.raises(ValueError, match=r"mapping must be \[256\]"):
        permute_patches(torch.zeros(3, 64, 64), np.arange(10))


# ---------------------------------------------------------------------------------- episode rules (scripted)
class ScriptedGame:
    """A stand-in for ProcGen's gym3 vector env: per act, copy ``i`` gets ``script[i][k]`` = (reward, first)
    on its ``k``-th frame (default: reward 0, the episode goes on). Frames are filled with the frame count."""

    made: list[ScriptedGame] = []

    def __init__(self, num, start_level, num_levels, rand_seed, script=None):
        self.num, self.start_level, self.num_levels, self.rand_seed = num, start_level, num_levels, rand_seed
        self.script = script or {}
        self.frames = 0
        self.acts: list[np.ndarray] = []
        self.last = (np.zeros(num, np.float32), np.ones(num, bool))
        ScriptedGame.made.append(self)

    def act(self, actions):
        self.acts.append(np.array(actions))
        self.frames += 1
        reward = np.zeros(self.num, np.float32)
        first = np.zeros(self.num, bool)
        for i in range(self.num):
            reward[i], first[i] = self.script.get(i, {}).get(self.frames, (0.0, False))
        self.last = (reward, first)

    def observe(self):
        rgb = np.full((self.num, 64, 64, 3), self.frames % 256, np.uint8)
        return self.last[0], {"rgb": rgb}, self.last[1]

    def get_info(self):
        return [{"level_seed": self.start_level + i % self.num_levels} for i in range(self.num)]


def _scripted(script_per_member):
    ScriptedGame.made = []
    calls = iter(script_per_member)

    def make(num, start_level, num_levels, rand_seed):
        return ScriptedGame(num, start_level, num_levels, rand_seed, next(calls))

    return make


def test_each_action_is_repeated_and_each_step_pays_the_penalty():
    pop = CoinRunPopulation(1, 2, make_env=_scripted([{0: {1: (1.0, False), 2: (2.0, False)}}]))
    pop.reset(torch.Generator().manual_seed(0))
    obs, reward, over = pop.step(torch.tensor([[3, 8]]))
    game = ScriptedGame.made[0]
    assert len(game.acts) == ACTION_REPEAT and all(np.array_equal(a, [3, 8]) for a in game.acts)
    assert reward[0].tolist() == pytest.approx([1.0 + 2.0 - STEP_PENALTY, -STEP_PENALTY])
    assert over.tolist() == [[False, False]]
    assert obs.shape == (1, 2, 3, 64, 64) and obs.dtype == torch.float32
    assert torch.allclose(obs, torch.full_like(obs, 2 / 255))  # the frame after both repeats


def test_an_episode_ending_on_the_first_repeat_ignores_the_second():
    # copy 0: the coin (10) on frame 3, i.e. the first repeat of agent step 2; frame 4 belongs to a new episode
    script = {0: {3: (10.0, True), 4: (5.0, False), 6: (7.0, False)}}
    pop = CoinRunPopulation(1, 2, make_env=_scripted([script]))
    pop.reset(torch.Generator().manual_seed(0))
    _, r1, o1 = pop.step(torch.zeros(1, 2, dtype=torch.long))
    _, r2, o2 = pop.step(torch.zeros(1, 2, dtype=torch.long))
    _, r3, o3 = pop.step(torch.zeros(1, 2, dtype=torch.long))
    assert r1[0].tolist() == pytest.approx([-STEP_PENALTY, -STEP_PENALTY])
    assert r2[0].tolist() == pytest.approx([10.0 - STEP_PENALTY, -STEP_PENALTY]) and o2.tolist() == [[True, False]]
    assert r3[0].tolist() == pytest.approx([0.0, -STEP_PENALTY]) and o3.tolist() == [[True, False]]
    assert o1.tolist() == [[False, False]]


def test_episodes_are_cut_after_200_agent_steps():
    pop = CoinRunPopulation(2, 1, make_env=_scripted([{}, {0: {2 * 50: (0.0, True)}}]))
    pop.reset(torch.Generator().manual_seed(0))
    returns = torch.zeros(2, 1)
    for step in range(1, EPISODE_LENGTH + 3):
        _, reward, over = pop.step(torch.zeros(2, 1, dtype=torch.long))
        returns += reward
        assert bool(over[0, 0]) == (step >= EPISODE_LENGTH), step
        assert bool(over[1, 0]) == (step >= 50), step
    assert returns[:, 0].tolist() == pytest.approx([-STEP_PENALTY * EPISODE_LENGTH, -STEP_PENALTY * 50])


def test_reset_makes_each_member_a_game_over_its_pool_with_a_seed_from_the_generator():
    pools = [coinrun_level_range("window", 1), coinrun_level_range("window", 4)]
    pop = CoinRunPopulation(2, 3, make_env=_scripted([{}, {}, {}, {}]))
    pop.set_distributions(pools, [None, None])
    pop.reset(torch.Generator().manual_seed(7))
    first = [(g.start_level, g.num_levels, g.num, g.rand_seed) for g in ScriptedGame.made]
    assert [f[:3] for f in first] == [(0, 100, 3), (300, 100, 3)]
    pop.reset(torch.Generator().manual_seed(7))
    assert [(g.start_level, g.num_levels, g.num, g.rand_seed) for g in ScriptedGame.made[2:]] == first
    assert first[0][3] != first[1][3]  # members draw different games


def test_bad_input_is_one_clear_error():
    pop = CoinRunPopulation(2, 3, make_env=_scripted([{}, {}]))
    with pytest.raises(ValueError, match=r"one level pool and one mapping per member \(2\)"):
        pop.set_distributions([range(0, 100)], [None])
    with pytest.raises(ValueError, match="permutation of 0..255"):
        pop.set_distributions([range(0, 100)] * 2, [np.zeros(N_PATCHES, int), None])
    pop.reset(torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"actions must lie in \[0, 9\); got values from 0 to 9"):
        pop.step(torch.tensor([[0, 1, 9], [0, 0, 0]]))
    with pytest.raises(ValueError, match=r"actions must be \[2, 3\]"):
        pop.step(torch.zeros(3, 2, dtype=torch.long))


# ------------------------------------------------------------------------------------------- ProcGen itself
needs_procgen = pytest.mark.skipif(not procgen_available(), reason="ProcGen is not installed (README: extras)")


@needs_procgen
def test_procgen_frames_levels_and_rewards():
    pools = [coinrun_level_range("window", 1), coinrun_level_range("window", 3, "test")]
    pop = CoinRunPopulation(2, 4)
    pop.set_distributions(pools, [None, None])
    obs = pop.reset(torch.Generator().manual_seed(0))
    assert obs.shape == (2, 4, 3, 64, 64) and obs.dtype == torch.float32
    assert 0.0 <= obs.min() and obs.max() <= 1.0 and obs.std() > 0.05  # a drawn frame, scaled to [0, 1]
    levels = pop.levels()
    assert all(lvl in pools[0] for lvl in levels[0]) and all(lvl in pools[1] for lvl in levels[1]), levels
    g = torch.Generator().manual_seed(1)
    returns, steps = torch.zeros(2, 4), 0
    while not pop.over.all():
        _, reward, _ = pop.step(torch.randint(0, 9, (2, 4), generator=g))
        returns += reward
        steps += 1
    assert steps <= EPISODE_LENGTH
    # CoinRun's only rewards are the coin's 10 and the step penalty: each return is 10·coin − 0.01·length
    lengths = torch.as_tensor(pop.steps, dtype=torch.float32)
    coins = (returns + STEP_PENALTY * lengths) / 10
    assert torch.allclose(coins, coins.round(), atol=1e-4) and set(coins.round().flatten().tolist()) <= {0.0, 1.0}


@needs_procgen
def test_procgen_is_reproducible_and_permute_moves_its_patches():
    mapping = patch_mapping(3, 2)

    def play(mappings):
        pop = CoinRunPopulation(2, 2)
        pop.set_distributions([coinrun_level_range("permute", 1)] * 2, mappings)
        frames = [pop.reset(torch.Generator().manual_seed(11))]
        actions = torch.Generator().manual_seed(12)
        for _ in range(5):
            frames.append(pop.step(torch.randint(0, 9, (2, 2), generator=actions))[0])
        return torch.stack(frames)

    plain, again, shuffled = play([None, None]), play([None, None]), play([mapping, None])
    assert torch.equal(plain, again)
    assert torch.equal(shuffled[:, 0], permute_patches(plain[:, 0], mapping))
    assert torch.equal(shuffled[:, 1], plain[:, 1])


def test_pixel_mapping_moves_the_pixels_exactly_as_permute_patches_moves_the_patches():
    from plasticity_lab.envs.coinrun import pixel_mapping

    mappings = torch.as_tensor(np.stack([patch_mapping(3, 2), patch_mapping(5, 1)]))
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    index = pixel_mapping(mappings)
    assert index.shape == (2, 4096) and torch.equal(index.sort(1).values, torch.arange(4096).expand(2, -1))
    moved = images.reshape(2, 3, 4096).gather(2, index[:, None, :].expand(-1, 3, -1)).reshape(images.shape)
    assert torch.equal(moved, permute_patches(images, mappings))
    # one patch by hand: output patch 0 (rows 0-3, columns 0-3) is input patch mapping[0]
    src = int(mappings[0, 0])
    r, c = 4 * (src // 16), 4 * (src % 16)
    assert torch.equal(moved[0, :, :4, :4], images[0, :, r:r + 4, c:c + 4])
