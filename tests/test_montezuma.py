"""The Montezuma's Revenge adapters: shapes, frame stacking, sticky actions, episode ends and seeding, checked on the
game itself (ale-py ships its ROM), for both ways of playing it; the emulators against the vector environment, the
room byte of the RAM, and saved games."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("ale_py")

from plasticity_lab.envs.montezuma import (AtariSettings, MontezumaEmulators, MontezumaPopulation,  # noqa: E402
                                           copy_seed)

GAMES = {"emulators": MontezumaEmulators, "vector": MontezumaPopulation}
both = pytest.mark.parametrize("games", sorted(GAMES))

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


@both
def test_observations_are_four_stacked_84_by_84_frames_that_shift_by_one_each_step(games):
    env = GAMES[games]([0, 1], 2)
    frames, rewards, ends = _play(env, 30, generator=torch.Generator().manual_seed(0))
    assert frames.shape == (31, 2, 2, 4, 84, 84) and frames.dtype == torch.uint8
    assert rewards.shape == ends.shape == (30, 2, 2) and rewards.dtype == torch.float32 and ends.dtype == torch.bool
    assert not ends.any()  # 30 steps: no game over, no cut
    # each step drops the oldest frame and appends a new one
    assert torch.equal(frames[1:, :, :, :3], frames[:-1, :, :, 1:])
    assert frames[1:].float().std() > 0


@both
def test_without_sticky_actions_the_game_is_deterministic_and_with_them_it_is_not(games):
    # two members with different seeds take the same actions
    same = GAMES[games]([5, 6], 1, settings=AtariSettings(repeat_action_probability=0.0))
    sticky = GAMES[games]([5, 6], 1)
    fixed = torch.randint(0, 18, (120,), generator=torch.Generator().manual_seed(4))
    runs = {}
    for name, env in (("same", same), ("sticky", sticky)):
        obs = [env.reset()]
        for a in fixed:
            obs.append(env.step(torch.full((2, 1), int(a)))[0])
        runs[name] = torch.stack(obs)
    assert torch.equal(runs["same"][:, 0], runs["same"][:, 1])  # no randomness left without sticky actions
    assert not torch.equal(runs["sticky"][:, 0], runs["sticky"][:, 1])  # the seeds' sticky repeats differ


@both
def test_an_episode_is_cut_at_the_frame_limit_and_the_next_one_starts_at_once(games):
    env = GAMES[games]([0], 3, settings=AtariSettings(max_frames_per_episode=400))  # 100 steps of 4 frames
    frames, rewards, ends = _play(env, 130, action=NOOP)  # standing still: no lives lost
    first_end = ends[:, 0].to(torch.int8).argmax(0)
    assert first_end.tolist() == [99, 99, 99] and int(ends.sum()) == 3  # the 100th step ends each copy's episode
    # the step that ended it returns the next episode's first observation: the game's start screen again
    torch.testing.assert_close(frames[100, 0, :, -1].float(), frames[0, 0, :, -1].float(), atol=0, rtol=0)
    assert env.episode_returns() == [[0.0, 0.0, 0.0]] and env.episode_returns() == [[]]


@both
def test_a_members_games_depend_on_its_seed_only(games):
    alone = GAMES[games]([7], 2)
    among = GAMES[games]([3, 7], 2)
    steps = torch.randint(0, 18, (60, 2), generator=torch.Generator().manual_seed(1))
    first, second = [alone.reset()], [among.reset()]
    for a in steps:
        first.append(alone.step(a.view(1, 2))[0])
        second.append(among.step(torch.stack([a, a]))[0])
    assert torch.equal(torch.stack(first)[:, 0], torch.stack(second)[:, 1])
    assert copy_seed(7, 0) != copy_seed(7, 1) != copy_seed(8, 0)


@both
def test_a_wrong_number_of_actions_is_refused_by_name(games):
    env = GAMES[games]([0], 2)
    env.reset()
    with pytest.raises(ValueError, match=r"one action per copy \(1 × 2\); got \(3,\)"):
        env.step(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="copies must be an integer >= 1; got 0"):
        GAMES[games]([0], 0)


def test_without_sticky_actions_the_emulators_play_the_vector_environments_games():
    """The same actions: the same rewards and episode ends exactly (game overs included) and the same frames but
    for the resize's rounding."""
    plain = AtariSettings(repeat_action_probability=0.0)
    emulators, vector = MontezumaEmulators([5, 6], 3, settings=plain), MontezumaPopulation([5, 6], 3, settings=plain)
    assert torch.equal(emulators.reset(), vector.reset())
    generator = torch.Generator().manual_seed(0)
    worst, pixels = 0, 0
    for _ in range(400):
        actions = torch.randint(0, 18, (2, 3), generator=generator)
        (a, reward_a, end_a), (b, reward_b, end_b) = emulators.step(actions), vector.step(actions)
        assert torch.equal(reward_a, reward_b) and torch.equal(end_a, end_b)
        difference = (a.int() - b.int()).abs()
        worst, pixels = max(worst, int(difference.max())), max(pixels, int((difference > 0).sum()))
    assert worst <= 1 and pixels <= 24  # of 2 × 3 × 4 × 84 × 84 = 169 344 values per step
    finished = emulators.episode_returns()
    assert finished == vector.episode_returns() and sum(map(len, finished)) >= 1


def test_the_room_byte_is_the_room_the_game_draws():
    """The game starts in room 1, a random player stays there, and writing another room into the byte makes the
    game draw another screen: the byte is the room."""
    env = MontezumaEmulators([0], 2)
    start = env.reset()
    for _ in range(50):
        env.step(torch.randint(0, 18, (1, 2), generator=torch.Generator().manual_seed(1)))
    assert env.rooms_visited() == [[1]]
    env.move_to_room(0)
    moved = env.step(torch.zeros(1, 2, dtype=torch.long))[0]
    assert env.room(0, 0) == 0 and env.room(0, 1) == 1 and env.rooms_visited() == [[0, 1]]
    with pytest.raises(ValueError, match="room must be 0–23"):
        env.move_to_room(24)
    # the screen of room 0 is not room 1's (the other copy, still in room 1, differs from its start far less)
    changed = (moved[0, 0, -1].float() - start[0, 0, -1].float()).abs().mean()
    unchanged = (moved[0, 1, -1].float() - start[0, 1, -1].float()).abs().mean()
    assert changed > 10 * max(float(unchanged), 0.1)


def test_saved_games_go_on_exactly_as_they_would_have():
    env = MontezumaEmulators([3], 2)
    env.reset()
    generator = torch.Generator().manual_seed(2)
    for _ in range(30):
        env.step(torch.randint(0, 18, (1, 2), generator=generator))
    saved, actions = env.state_dict(), torch.randint(0, 18, (40, 1, 2), generator=generator)
    expected = [env.step(a) for a in actions]
    again = MontezumaEmulators([3], 2)
    again.load_state_dict(saved)
    for a, (obs, reward, ended) in zip(actions, expected):
        got = again.step(a)
        assert torch.equal(got[0], obs) and torch.equal(got[1], reward) and torch.equal(got[2], ended)
    with pytest.raises(ValueError, match="the saved games are 2, these 3"):
        MontezumaEmulators([3], 3).load_state_dict(saved)


def test_the_emulators_refuse_settings_they_do_not_play():
    with pytest.raises(ValueError, match="games 'emulators' play without noop_max .*got noop_max=30"):
        MontezumaEmulators([0], 1, settings=AtariSettings(noop_max=30))


class _Recorder:
    """An emulator that notes the action each frame was played with."""

    def __init__(self, ale):
        self.ale, self.played = ale, []

    def act(self, action):
        self.played.append(action.value)
        return self.ale.act(action)

    def __getattr__(self, name):
        return getattr(self.ale, name)


def test_a_sticky_frame_repeats_the_frame_befores_action_a_quarter_of_the_time():
    env = MontezumaEmulators([0], 4)
    env.reset()
    env._ales = [_Recorder(ale) for ale in env._ales]
    actions = env._actions
    asked = []
    for t in range(300):  # UP and DOWN in turn: a repeated frame shows as the other one
        a = 2 if t % 2 == 0 else 5
        asked.append(actions[a].value)
        env.step(torch.full((1, 4), a))
    repeated = chances = 0
    for recorder in env._ales:
        played = recorder.played[:4 * 150]  # before any game over could cut a step short
        wanted = [w for w in asked[:150] for _ in range(4)]
        for i in range(1, len(played)):
            if played[i - 1] != wanted[i]:  # a frame whose sticky repeat would show
                chances += 1
                repeated += played[i] == played[i - 1]
            else:
                assert played[i] == wanted[i]
    assert chances > 500 and 0.2 < repeated / chances < 0.3
