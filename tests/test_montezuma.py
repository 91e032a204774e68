"""The Montezuma's Revenge adapter: shapes, frame stacking, sticky actions, episode ends and seeding, checked on the
game itself (ale-py ships its ROM)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ale_py")

from plasticity_lab.envs.montezuma import AtariSettings, MontezumaPopulation, copy_seed  # noqa: E402

NOOP = 0


def _play(env: MontezumaPopulation, steps: int, action=None, generator=None):
    frames = [env.reset()]
    rewards, ends = [], []
    for _ in range(steps):
        if action is None:
            actions = torch.randint(0, env.n_actions, (env.members, env.copies), generator=generator)
        else:
            actions = torch.full((env.members, env.copies), action)
        obs, reward, ended = env.step(actions)
        frames.append(obs)
        rewards.append(reward)
        ends.append(ended)
    return torch.stack(frames), torch.stack(rewards), torch.stack(ends)


def test_observations_are_four_stacked_84_by_84_frames_that_shift_by_one_each_step():
    env = MontezumaPopulation([0, 1], 2)
    frames, rewards, ends = _play(env, 30, generator=torch.Generator().manual_seed(0))
    assert frames.shape == (31, 2, 2, 4, 84, 84) and frames.dtype == torch.uint8
    assert rewards.shape == ends.shape == (30, 2, 2) and rewards.dtype == torch.float32 and ends.dtype == torch.bool
    assert not ends.any()  # 30 steps: no game over, no cut
    # each step drops the oldest frame and appends a new one
    assert torch.equal(frames[1:, :, :, :3], frames[:-1, :, :, 1:])
    assert frames[1:].float().std() > 0


def test_without_sticky_actions_the_game_is_deterministic_and_with_them_it_is_not():
    # two members with different seeds take the same actions
    same = MontezumaPopulation([5, 6], 1, settings=AtariSettings(repeat_action_probability=0.0))
    sticky = MontezumaPopulation([5, 6], 1)
    fixed = torch.randint(0, 18, (120,), generator=torch.Generator().manual_seed(4))
    runs = {}
    for name, env in (("same", same), ("sticky", sticky)):
        obs = [env.reset()]
        for a in fixed:
            obs.append(env.step(torch.full((2, 1), int(a)))[0])
        runs[name] = torch.stack(obs)
    assert torch.equal(runs["same"][:, 0], runs["same"][:, 1])  # no randomness left without sticky actions
    assert not torch.equal(runs["sticky"][:, 0], runs["sticky"][:, 1])  # the seeds' sticky repeats differ


def test_an_episode_is_cut_at_the_frame_limit_and_the_next_one_starts_at_once():
    env = MontezumaPopulation([0], 3, settings=AtariSettings(max_frames_per_episode=400))  # 100 steps of 4 frames
    frames, rewards, ends = _play(env, 130, action=NOOP)  # standing still: no lives lost
    first_end = ends[:, 0].to(torch.int8).argmax(0)
    assert first_end.tolist() == [99, 99, 99] and int(ends.sum()) == 3  # the 100th step ends each copy's episode
    # the step that ended it returns the next episode's first observation: the game's start screen again
    torch.testing.assert_close(frames[100, 0, :, -1].float(), frames[0, 0, :, -1].float(), atol=0, rtol=0)
    assert env.episode_returns() == [[0.0, 0.0, 0.0]] and env.episode_returns() == [[]]


def test_a_members_games_depend_on_its_seed_only():
    alone = MontezumaPopulation([7], 2)
    among = MontezumaPopulation([3, 7], 2)
    steps = torch.randint(0, 18, (60, 2), generator=torch.Generator().manual_seed(1))
    first, second = [alone.reset()], [among.reset()]
    for a in steps:
        first.append(alone.step(a.view(1, 2))[0])
        second.append(among.step(torch.stack([a, a]))[0])
    assert torch.equal(torch.stack(first)[:, 0], torch.stack(second)[:, 1])
    assert copy_seed(7, 0) != copy_seed(7, 1) != copy_seed(8, 0)


def test_a_wrong_number_of_actions_is_refused_by_name():
    env = MontezumaPopulation([0], 2)
    env.reset()
    with pytest.raises(ValueError, match=r"one action per copy \(1 × 2\); got \(3,\)"):
        env.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="copies must be an integer >= 1; got 0"):
        MontezumaPopulation([0], 0)
