"""Random network distillation's pieces against independent expectations: NumPy's statistics, hand-computed
discounted sums, and the behaviour RND exists for (a repeated observation stops being rewarding, new ones do not)."""

from __future__ import annotations

import numpy as np
import torch

from plasticity_lab.rnd import RewardForwardFilter, RNDConfig, RNDNetworks, RunningMeanStd


def test_running_statistics_merged_batch_by_batch_equal_numpys_over_all_the_data():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(2, 1000, 5)) * np.array([1.0, 10.0])[:, None, None]
    stats = RunningMeanStd(2, (5,))
    for start, stop in ((0, 1), (1, 300), (300, 301), (301, 1000)):  # uneven batches, one of a single sample
        stats.update(torch.from_numpy(data[:, start:stop]))
    np.testing.assert_allclose(stats.mean.numpy(), data.mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats.var.numpy(), data.var(1), rtol=1e-10)  # population variance, as RND uses
    assert stats.count.tolist() == [1000, 1000]


def test_the_forward_filter_discounts_without_episode_ends():
    gamma = 0.5
    f = RewardForwardFilter(gamma)
    rewards = [torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 4.0]])]
    outs = [f.update(r).clone() for r in rewards]
    # by hand: 1; 0.5·1 + 2 = 2.5; 0.5·2.5 + 0 = 1.25 — and the other copy 0, 0, 4
    assert [o.tolist() for o in outs] == [[[1.0, 0.0]], [[2.5, 0.0]], [[1.25, 4.0]]]


def test_whitened_frames_use_the_last_frame_and_are_clipped():
    rnd = RNDNetworks([0], RNDConfig(observation_clip=5.0))
    frames = torch.zeros(1, 3, 4, 84, 84, dtype=torch.uint8)
    frames[:, :, -1] = torch.tensor([10, 20, 30], dtype=torch.uint8).view(1, 3, 1, 1)
    frames[:, :, 0] = 255  # earlier frames do not count
    rnd.update_obs_stats(frames)
    out = rnd.normalised(frames)
    assert out.shape == (1, 3, 1, 84, 84)
    expected = (np.array([10.0, 20.0, 30.0]) - 20.0) / np.sqrt(200.0 / 3.0)  # mean 20, population variance 200/3
    np.testing.assert_allclose(out[0, :, 0, 0, 0].numpy(), expected, rtol=1e-5)
    far = frames.clone()
    far[:, :, -1] = 255
    assert torch.all(rnd.normalised(far) == 5.0)


def test_a_repeated_observation_stops_being_rewarding_while_new_ones_stay_so():
    torch.manual_seed(0)
    rnd = RNDNetworks([0, 1], RNDConfig(update_proportion=1.0))
    pixels = torch.Generator().manual_seed(1)

    def frames(n):
        return torch.randint(0, 256, (2, n, 4, 84, 84), generator=pixels, dtype=torch.uint8)

    rnd.update_obs_stats(frames(64))
    seen = frames(1).expand(2, 16, 4, 84, 84)  # one observation, again and again
    optimizer = torch.optim.Adam(rnd.predictor_params.values(), lr=1e-3)
    before_seen = rnd.intrinsic_reward(seen[:, :1]).mean().item()
    update = torch.Generator().manual_seed(2)
    for _ in range(60):
        optimizer.zero_grad()
        rnd.predictor_loss(seen, update).sum().backward()
        optimizer.step()
    after_seen = rnd.intrinsic_reward(seen[:, :1])  # [M, 1]
    novel = rnd.intrinsic_reward(frames(32))  # [M, 32]
    assert (after_seen[:, 0] < 0.1 * before_seen).all()
    assert (novel.min(1).values > 10 * after_seen[:, 0]).all()


def test_members_draw_their_own_networks_and_keep_their_own_statistics():
    a = RNDNetworks([3, 4])
    b = RNDNetworks([4])
    for key in a.target_params:
        assert torch.equal(a.target_params[key][1], b.target_params[key][0])  # a member's networks are its seed's
        assert not torch.equal(a.target_params[key][0], a.target_params[key][1])
    frames = torch.zeros(2, 2, 4, 84, 84)
    frames[1] += 100
    a.update_obs_stats(frames)
    assert a.obs_stats.mean[0].max() == 0 and a.obs_stats.mean[1].min() == 100


def test_extrinsic_advantages_bootstrap_the_rollouts_end_but_not_an_episodes():
    from plasticity_lab.rnd import bootstrapped_gae

    rewards = torch.tensor([[1.0], [0.0], [2.0]])
    values = torch.tensor([[0.5], [1.0], [0.25]])
    ends = torch.tensor([[False], [True], [False]])
    # gamma 0.5, lambda 1: the advantage is the discounted return (cut at an end, bootstrapped after the last step
    # with next_value 4) minus the value
    adv = bootstrapped_gae(rewards, values, torch.tensor([4.0]), 0.5, 1.0, ends)
    # t=2: 2 + 0.5·4 − 0.25 = 3.75;  t=1 ended its episode: 0 − 1 = −1;  t=0: 1 + 0.5·0 − 0.5 = 0.5
    assert adv[:, 0].tolist() == [0.5, -1.0, 3.75]
    endless = bootstrapped_gae(rewards, values, torch.tensor([4.0]), 0.5, 1.0)
    # t=2: 3.75; t=1: 0 + 0.5·(2 + 0.5·4) − 1 = 1;  t=0: 1 + 0.5·0 + 0.25·2 + 0.125·4 − 0.5 = 1.5
    assert endless[:, 0].tolist() == [1.5, 1.0, 3.75]
    # lambda 0: one-step temporal differences
    td = bootstrapped_gae(rewards, values, torch.tensor([4.0]), 0.5, 0.0)
    assert td[:, 0].tolist() == [1.0 + 0.5 * 1.0 - 0.5, 0.0 + 0.5 * 0.25 - 1.0, 2.0 + 0.5 * 4.0 - 0.25]


def test_intrinsic_rewards_are_divided_by_the_spread_of_their_discounted_sum():
    from plasticity_lab.rnd import normalised_intrinsic_rewards

    rewards = torch.tensor([[[1.0, 2.0]], [[3.0, 0.0]]])  # [T=2, M=1, E=2]
    out = normalised_intrinsic_rewards(rewards, RewardForwardFilter(0.5), RunningMeanStd(1))
    sums = np.array([1.0, 2.0, 0.5 * 1 + 3.0, 0.5 * 2 + 0.0])  # the filter's values, by hand
    np.testing.assert_allclose(out.numpy().ravel(), rewards.numpy().ravel() / np.std(sums), rtol=1e-6)
