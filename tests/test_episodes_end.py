"""Episodes that end (CoinRun's rule, PROTOCOL §1): collection until enough transitions, GAE with ends, and an update
in which members hold different numbers of transitions — each member trained exactly as it would be alone."""

import pytest
import torch

import plasticity_lab.population as population_module
import plasticity_lab.ppo as ppo_module
from plasticity_lab.member_adamw import MemberAdamW
from plasticity_lab.conditions import parse_condition
from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population
from plasticity_lab.ppo import Agent, PPOConfig, Rollout, collect_episodes, gae


# ---- GAE with episode ends --------------------------------------------------------------------------------------


def test_gae_bootstraps_zero_at_an_episode_end_and_leaves_the_steps_after_it_at_zero():
    # One copy, γ = 0.9, λ = 0.8; the episode ends at t = 1 (valid T, T, F, F); values after it are garbage.
    # t=1: δ = 2 − 0.25 = 1.75 (nothing after the end)                    -> A = 1.75
    # t=0: δ = 1 + 0.9·0.25 − 0.5 = 0.725                                  -> A = 0.725 + 0.72·1.75 = 1.985
    rewards = torch.tensor([1.0, 2.0, 0.0, 0.0])
    values = torch.tensor([0.5, 0.25, 9.0, -9.0])
    valid = torch.tensor([True, True, False, False])
    adv = gae(rewards, values, 0.9, 0.8, valid)
    torch.testing.assert_close(adv, torch.tensor([1.985, 1.75, 0.0, 0.0]))


def test_gae_of_episodes_that_all_run_to_the_cut_is_bit_identical_with_or_without_the_mask():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(100, 3, 11, generator=g), torch.randn(100, 3, 11, generator=g)
    full = torch.ones(100, 3, 11, dtype=torch.bool)
    assert torch.equal(gae(rewards, values, 0.99, 0.95, full), gae(rewards, values, 0.99, 0.95))


def test_gae_treats_each_column_as_its_own_episode():
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    valid = torch.tensor([[1, 1], [1, 1], [1, 1], [1, 0], [0, 0], [0, 0]], dtype=torch.bool)
    adv = gae(rewards, values, 0.99, 0.95, valid)
    torch.testing.assert_close(adv[:3, 1], gae(rewards[:3, 1], values[:3, 1], 0.99, 0.95))
    torch.testing.assert_close(adv[:4, 0], gae(rewards[:4, 0], values[:4, 0], 0.99, 0.95))
    assert adv[3:, 1].eq(0).all() and adv[4:, 0].eq(0).all()


# ---- collection -------------------------------------------------------------------------------------------------


class EndingGames:
    """``members × copies`` games whose episodes end after a fixed number of steps per member (``lengths``); each
    step pays 1 and the observation is (member, step, copy) so that rows can be told apart."""

    episodes_end = True

    def __init__(self, lengths: list[int], copies: int, episode_length: int = 10):
        self.lengths, self.members, self.copies, self.episode_length = lengths, len(lengths), copies, episode_length
        self.resets = 0

    def _obs(self):
        m = torch.arange(self.members, dtype=torch.float32).view(-1, 1, 1).expand(-1, self.copies, 1)
        e = torch.arange(self.copies, dtype=torch.float32).view(1, -1, 1).expand(self.members, -1, 1)
        t = torch.full((self.members, self.copies, 1), float(self.t))
        return torch.cat([m, t, e], dim=2)

    def reset(self, generator):
        self.resets += 1
        self.t = 0
        self.over = torch.zeros(self.members, self.copies, dtype=torch.bool)
        return self._obs()

    def step(self, actions):
        running = ~self.over
        self.t += 1
        ends = torch.tensor(self.lengths).view(-1, 1).expand(-1, self.copies) <= self.t
        self.over = self.over | ends | (self.t >= self.episode_length)
        return self._obs(), running.float(), self.over.clone()


def _population(members: int, ppo: PPOConfig, condition=None, seeds=None) -> Population:
    spec = NetworkSpec(encoder="mlp", obs_dim=3, n_actions=2, hidden=8)
    pop = Population(spec, seeds or list(range(members)), ppo, condition, episodes_end=True)
    if condition is not None:
        condition.setup(pop)
    return pop


def test_collection_goes_on_until_each_member_has_enough_and_keeps_no_batch_beyond():
    # member 0's episodes last 3 steps, member 1's one step; 2 copies; at least 10 transitions each:
    # member 0 keeps 2 batches (12 transitions), member 1 five (10); five batches are played.
    games = EndingGames([3, 1], copies=2)
    pop = _population(2, PPOConfig(min_transitions=10))
    rollout = collect_episodes(pop, games, torch.Generator().manual_seed(0))
    assert games.resets == 5
    assert rollout.transitions().tolist() == [12, 10]
    assert rollout.kept.tolist() == [[True, True], [True, True], [False, True], [False, True], [False, True]]
    # the observations of the transitions only, in (t, m, e) order: batch 1 holds 2 steps of member 0, 1 of member 1
    assert rollout.obs.shape == (22, 3)
    assert rollout.obs[:4].tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]]
    # each kept episode pays 1 per step: returns 3 and 1
    torch.testing.assert_close(rollout.mean_episode_return(), torch.tensor([3.0, 1.0]))
    # advantages are 0 wherever a step is no transition
    assert rollout.advantages[~rollout.valid].eq(0).all()


def test_games_whose_episodes_never_end_early_collect_whole_batches_without_a_mask():
    class FixedGames(EndingGames):
        episodes_end = False

    games = FixedGames([10, 10], copies=2, episode_length=10)
    pop = _population(2, PPOConfig(min_transitions=50))
    rollout = collect_episodes(pop, games, torch.Generator().manual_seed(0))
    assert games.resets == 3 and rollout.valid is None and rollout.kept is None  # 3 × 20 ≥ 50
    assert rollout.actions.shape == (30, 2, 2) and rollout.transitions().tolist() == [60, 60]
    # GAE restarts at each batch: the last step of every batch bootstraps 0
    last = rollout.rewards[9] - rollout.values[9]
    torch.testing.assert_close(rollout.advantages[9], last)


# ---- the update with uneven members -----------------------------------------------------------------------------


def _uneven_rollout(counts_per_copy: list[list[int]], T: int = 12, obs_dim: int = 3, seed: int = 0) -> Rollout:
    """A rollout of ``[T, M, E]`` steps in which copy ``e`` of member ``m`` has ``counts_per_copy[m][e]``
    transitions."""
    g = torch.Generator().manual_seed(seed)
    members, copies = len(counts_per_copy), len(counts_per_copy[0])
    valid = torch.zeros(T, members, copies, dtype=torch.bool)
    for m, row in enumerate(counts_per_copy):
        for e, n in enumerate(row):
            valid[:n, m, e] = True
    dense = torch.randn(T, members, copies, obs_dim, generator=g)
    rewards = torch.randn(T, members, copies, generator=g) * valid
    values = torch.randn(T, members, copies, generator=g) * 0.1
    rollout = Rollout(obs=dense[valid], actions=torch.randint(0, 2, (T, members, copies), generator=g),
                      log_probs=torch.log(torch.rand(T, members, copies, generator=g) * 0.5 + 0.1),
                      values=values, rewards=rewards, valid=valid)
    rollout.advantages = gae(rewards, values, 0.99, 0.95, valid)
    rollout.returns = rollout.advantages + values
    rollout.dense_obs = dense
    return rollout


def _member_rollout(rollout: Rollout, m: int) -> Rollout:
    valid = rollout.valid[:, m:m + 1]
    part = Rollout(obs=rollout.dense_obs[:, m:m + 1][valid], actions=rollout.actions[:, m:m + 1],
                   log_probs=rollout.log_probs[:, m:m + 1], values=rollout.values[:, m:m + 1],
                   rewards=rollout.rewards[:, m:m + 1], valid=valid)
    part.advantages, part.returns = rollout.advantages[:, m:m + 1], rollout.returns[:, m:m + 1]
    return part


class FixedOrders:
    """Stands in for ``minibatch_order``: the same permutation of each member's rows, pass after pass, for the
    population (one call for all members) and for each member trained alone."""

    def __init__(self, counts: list[int], seed: int = 3):
        g = torch.Generator().manual_seed(seed)
        self.perms = [torch.randperm(n, generator=g) for n in counts]

    def __call__(self, members, rows, generator, counts=None):
        if members == 1:
            (perm,) = [p for p in self.perms if len(p) == rows]
            return perm.unsqueeze(0)
        return torch.stack([torch.cat([p, torch.arange(len(p), rows)]) for p in self.perms])


def test_members_with_different_numbers_of_transitions_each_train_as_they_would_alone(monkeypatch):
    """Member 0 has 28 transitions (3 minibatches of 8 per pass), member 1 has 17 (2): the population's member 1
    takes no step, no weight decay and no moment update while member 0 takes its third — as the readable
    single-agent update (``ppo.Agent``, PyTorch's own AdamW) does for each alone."""
    rollout = _uneven_rollout([[9, 12, 7], [5, 4, 8]])
    counts = [28, 17]
    orders = FixedOrders(counts)
    monkeypatch.setattr(population_module, "minibatch_order", orders)
    monkeypatch.setattr(ppo_module, "minibatch_order", orders)
    ppo = PPOConfig(minibatch_size=8, epochs=3, weight_decay=0.1, adam_eps=1e-6)
    pop = _population(2, ppo)
    start = {k: v.detach().clone() for k, v in pop.params.items()}
    stats = pop.update(rollout, torch.Generator().manual_seed(0))
    for m in range(2):
        net = NetworkSpec(encoder="mlp", obs_dim=3, n_actions=2, hidden=8).build()
        net.load_state_dict({k: v[m] for k, v in start.items()})
        alone = Agent(net, ppo)
        alone_stats = alone.update(_member_rollout(rollout, m), torch.Generator().manual_seed(0))
        for name, p in net.named_parameters():
            torch.testing.assert_close(pop.params[name][m].detach(), p.detach(), rtol=1e-5, atol=1e-6)
            assert not torch.allclose(p.detach(), start[name][m], atol=1e-5)  # it trained
        for key in ("policy_loss", "value_loss", "entropy", "grad_norm"):
            torch.testing.assert_close(stats[key][m], alone_stats[key].to(stats[key].dtype), rtol=1e-5, atol=1e-6)
    steps = pop.optimizer.state[pop.params["value_head.bias"]]["member_steps"]
    assert steps.tolist() == [9.0, 6.0]  # 3 passes × 3 and × 2 minibatches
    # ReDo scores each member on its own last minibatch of the last pass
    for m, n in enumerate(counts):
        last = orders.perms[m][(n // 8 - 1) * 8:(n // 8) * 8]
        expected = rollout.obs[population_module.MemberRows(rollout, "cpu", "cpu").table[m, last]]
        assert torch.equal(pop.last_minibatch_obs[m], expected)


def test_a_member_without_a_minibatch_is_not_shrunk_or_perturbed(monkeypatch):
    """Soft shrink+perturb acts after each of a member's own optimizer steps: with shrink 0.5 and perturb 0 (and a
    vanishing learning rate) a member's weights halve once per step it takes — 6 for member 0, 3 for member 1."""
    rollout = _uneven_rollout([[9, 12, 7], [5, 4, 8]])  # 28 and 17 transitions: 2 and 1 minibatches of 12
    condition = parse_condition("soft_shrink_perturb", {"shrink": 0.5, "perturb": 0.0})
    pop = _population(2, PPOConfig(minibatch_size=12, epochs=3, lr=1e-12), condition)
    start = {k: v.detach().clone() for k, v in pop.params.items()}
    pop.update(rollout, torch.Generator().manual_seed(0))
    for name, p in pop.params.items():
        torch.testing.assert_close(p[0].detach(), start[name][0] * 0.5 ** 6, rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(p[1].detach(), start[name][1] * 0.5 ** 3, rtol=1e-4, atol=1e-9)


def test_an_uneven_rollout_needs_a_population_built_for_it_and_a_minibatch_per_member():
    rollout = _uneven_rollout([[9, 12, 7], [5, 4, 8]])
    even = Population(NetworkSpec(encoder="mlp", obs_dim=3, n_actions=2, hidden=8), [0, 1], PPOConfig(minibatch_size=8))
    with pytest.raises(ValueError, match="episodes_end=True"):
        even.update(rollout, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"fewer transitions \(17\) than one minibatch \(18\)"):
        _population(2, PPOConfig(minibatch_size=18)).update(rollout, torch.Generator().manual_seed(0))


# ---- AdamW per member -------------------------------------------------------------------------------------------


def test_member_adamw_equals_one_torch_adamw_per_member_including_skipped_steps():
    g = torch.Generator().manual_seed(0)
    stacked = torch.randn(3, 4, 5, generator=g).requires_grad_()
    alone = [torch.nn.Parameter(stacked[m].detach().clone()) for m in range(3)]
    ours = MemberAdamW([stacked], lr=1e-2, eps=1e-8)
    theirs = [torch.optim.AdamW([p], lr=1e-2, eps=1e-8, weight_decay=0.0) for p in alone]
    plan = [None, torch.tensor([True, False, True]), torch.tensor([False, False, True]), None,
            torch.tensor([True, True, False])]
    for stepping in plan:
        grads = torch.randn(3, 4, 5, generator=g)
        stacked.grad = grads.clone()
        ours.step(stepping)
        for m in range(3):
            if stepping is None or stepping[m]:
                alone[m].grad = grads[m].clone()
                theirs[m].step()
    for m in range(3):
        # float32 rounding of the same arithmetic in another order; one step moves a weight by about lr = 1e-2
        torch.testing.assert_close(stacked[m].detach(), alone[m].detach(), rtol=1e-5, atol=1e-6)
    assert ours.state[stacked]["member_steps"].tolist() == [4.0, 3.0, 4.0]


def test_member_adamw_refuses_bad_settings():
    with pytest.raises(ValueError, match="lr > 0"):
        MemberAdamW([torch.zeros(2, 1, requires_grad=True)], lr=0.0)
