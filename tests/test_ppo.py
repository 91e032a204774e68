"""PPO pieces against hand-computed values and an independent single-agent implementation."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population
from plasticity_lab.ppo import (PPOConfig, clipped_surrogate, gae, log_prob_and_entropy,
                                normalise, ppo_loss)
from rollouts import random_rollout


def test_gae_short_episode_by_hand():
    # gamma = lam = 0.5; rewards [1, 0, 2], values [0.5, 1, 1]; bootstrap 0 after the last step.
    # t=2: delta = 2 - 1 = 1                         -> A = 1
    # t=1: delta = 0 + 0.5*1 - 1 = -0.5              -> A = -0.5 + 0.25*1 = -0.25
    # t=0: delta = 1 + 0.5*1 - 0.5 = 1               -> A = 1 + 0.25*(-0.25) = 0.9375
    adv = gae(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.5, 1.0, 1.0]), 0.5, 0.5)
    assert torch.allclose(adv, torch.tensor([0.9375, -0.25, 1.0]))


def test_gae_matches_discounted_sum_of_td_errors_over_batch_dims():
    rng = np.random.default_rng(0)
    T, gamma, lam = 100, 0.99, 0.95
    r, v = rng.normal(size=(T, 2, 3)), rng.normal(size=(T, 2, 3))
    nv = np.concatenate([v[1:], np.zeros((1, 2, 3))])
    delta = r + gamma * nv - v
    expected = np.stack([sum((gamma * lam) ** k * delta[t + k] for k in range(T - t)) for t in range(T)])
    got = gae(torch.tensor(r), torch.tensor(v), gamma, lam).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "ratio, adv, expected",
    [
        (1.1, 1.0, -1.1),  # inside the clip range: the plain surrogate
        (1.2, 1.0, -1.2),  # at the edge
        (1.5, 1.0, -1.2),  # beyond, positive advantage: clipped at 1 + eps
        (0.5, 1.0, -0.5),  # below, positive advantage: the pessimistic (unclipped) term
        (0.5, -1.0, 0.8),  # below, negative advantage: clipped at 1 - eps
        (1.5, -1.0, 1.5),  # above, negative advantage: unclipped
    ],
)
def test_clipped_surrogate_at_inside_and_beyond_the_clip(ratio, adv, expected):
    loss = clipped_surrogate(torch.tensor([ratio]), torch.tensor([adv]), 0.2)
    assert loss.item() == pytest.approx(expected)


def test_clipped_surrogate_has_no_gradient_beyond_the_clip():
    ratio = torch.tensor([1.5, 1.1], requires_grad=True)
    clipped_surrogate(ratio, torch.tensor([1.0, 1.0]), 0.2).backward()
    assert ratio.grad.tolist() == pytest.approx([0.0, -0.5])


def test_normalise_uses_the_minibatch_mean_and_unbiased_std():
    assert torch.allclose(normalise(torch.tensor([1.0, 2.0, 3.0])), torch.tensor([-1.0, 0.0, 1.0]), atol=1e-6)


def test_ppo_loss_by_hand():
    # Uniform policy over 4 actions, ratio 1; advantages [1, -1] normalise to ±1/sqrt(2) -> policy loss 0.
    # value MSE = mean((0-1)^2, (1-1)^2) = 0.5; entropy = ln 4.
    cfg = PPOConfig()
    logits = torch.zeros(2, 4)
    old = torch.full((2,), math.log(0.25))
    loss, stats = ppo_loss(logits, torch.tensor([0.0, 1.0]), torch.tensor([0, 3]), old,
                           torch.tensor([1.0, -1.0]), torch.tensor([1.0, 1.0]), cfg)
    assert stats["policy_loss"].item() == pytest.approx(0.0, abs=1e-7)
    assert stats["value_loss"].item() == pytest.approx(0.5)
    assert stats["entropy"].item() == pytest.approx(math.log(4))
    assert loss.item() == pytest.approx(0.5 * 0.5 - 0.02 * math.log(4))


def test_ppo_loss_advantage_normalisation_is_per_minibatch():
    cfg = PPOConfig()
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    actions = torch.arange(8) % 4
    old = torch.full((8,), -1.3)
    adv = torch.randn(8, generator=torch.Generator().manual_seed(1))
    a, _ = ppo_loss(logits, torch.zeros(8), actions, old, adv, torch.zeros(8), cfg)
    b, _ = ppo_loss(logits, torch.zeros(8), actions, old, 5 * adv + 3, torch.zeros(8), cfg)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)


def test_log_prob_and_entropy_match_torch_distributions():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    actions = torch.tensor([0, 1, 2, 3, 1])
    lp, ent = log_prob_and_entropy(logits, actions)
    dist = torch.distributions.Categorical(logits=logits)
    assert torch.allclose(lp, dist.log_prob(actions), atol=1e-6)
    assert torch.allclose(ent, dist.entropy(), atol=1e-6)


def test_population_update_equals_independent_single_agent_updates():
    """Members trained as one batched computation = each agent trained alone with nn.Module + AdamW +
    clip_grad_norm_ on the same minibatches (an independent implementation of the update)."""
    members, cfg = 3, PPOConfig()
    pop = Population(NetworkSpec(), member_seeds=[0, 1, 2], ppo=cfg)
    agents = []
    for m in range(members):
        net = NetworkSpec().build()
        net.load_state_dict({k: v.detach().clone() for k, v in pop.member_params(m).items()})
        agents.append((net, torch.optim.AdamW(net.parameters(), lr=cfg.lr, eps=cfg.adam_eps, weight_decay=0.0)))
    rollout = random_rollout(members)
    g = torch.Generator().manual_seed(7)
    state = g.get_state()
    stats = pop.update(rollout, g)

    g.set_state(state)
    batch = rollout.flat()
    n = batch["actions"].shape[1]
    grad_norms = [[] for _ in range(members)]
    for _ in range(cfg.epochs):
        order = torch.rand(members, n, generator=g).argsort(dim=1)
        for start in range(0, n - cfg.minibatch_size + 1, cfg.minibatch_size):
            for m, (net, opt) in enumerate(agents):
                idx = order[m, start:start + cfg.minibatch_size]
                logits, values, _ = net(batch["obs"][m, idx])
                loss, _ = ppo_loss(logits, values, batch["actions"][m, idx], batch["log_probs"][m, idx],
                                   batch["advantages"][m, idx], batch["returns"][m, idx], cfg)
                opt.zero_grad()
                loss.backward()
                grad_norms[m].append(float(nn.utils.clip_grad_norm_(net.parameters(), cfg.max_grad_norm)))
                opt.step()
    for m, (net, _) in enumerate(agents):
        for name, p in net.named_parameters():
            # bmm and mm sum in different orders; Adam turns that into ~1e-6 noise (a real error is ~lr = 5e-4)
            torch.testing.assert_close(pop.params[name][m].detach(), p.detach(), rtol=1e-4, atol=1e-5)
        assert stats["grad_norm"][m].item() == pytest.approx(np.mean(grad_norms[m]), rel=1e-4)


def test_population_weight_decay_is_decoupled_per_member():
    pop = Population(NetworkSpec(), member_seeds=[0, 1], ppo=PPOConfig())
    pop.weight_decay = torch.tensor([0.0, 1e-3])
    before = {k: v.detach().clone() for k, v in pop.params.items()}
    pop.decay_weights()
    for name, p in pop.params.items():
        assert torch.equal(p[0], before[name][0])
        torch.testing.assert_close(p[1], before[name][1] * (1 - 5e-4 * 1e-3))


def test_population_weight_decay_follows_each_assignment():
    pop = Population(NetworkSpec(), member_seeds=[0, 1], ppo=PPOConfig())

    def decayed() -> list[bool]:
        before = {k: v.detach().clone() for k, v in pop.params.items()}
        pop.decay_weights()
        return [any(not torch.equal(p[m], before[k][m]) for k, p in pop.params.items()) for m in range(2)]

    assert decayed() == [False, False]  # PPOConfig's weight decay is 0
    pop.weight_decay = torch.tensor([0.0, 1e-3])
    assert decayed() == [False, True]
    pop.weight_decay = torch.zeros(2)
    assert decayed() == [False, False]


def test_new_optimizer_forgets_adam_state():
    pop = Population(NetworkSpec(), member_seeds=[0])
    pop.update(random_rollout(1, T=10), torch.Generator().manual_seed(0))
    assert len(pop.optimizer.state) > 0
    pop.new_optimizer()
    assert len(pop.optimizer.state) == 0


def test_play_episodes_plays_the_collected_episodes_without_their_buffers():
    from plasticity_lab.envs.population import GridworldPopulation
    from plasticity_lab.ppo import collect_episodes, play_episodes
    from plasticity_lab.shifts import distribution

    population = Population(NetworkSpec(), [0, 1, 2])
    env = GridworldPopulation(3, 4)
    dists = [distribution("permute", seed, 2, pool_size=10) for seed in range(3)]
    env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
    collected_generator, played_generator = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    # one batch (min_transitions=1): the episodes an evaluation plays
    rollout = collect_episodes(population, env, collected_generator, advantages=False, min_transitions=1)
    played = play_episodes(population, env, played_generator)
    assert played.shape == (3, 4) and bool((played != 0).any())  # the random policies do collect rewards
    # the gridworld pays multiples of 0.25 (±0.75 a reward), so both sums are exact and must agree exactly
    assert torch.equal(played, rollout.rewards.sum(0))
    # the same random numbers were drawn: both generators are left in the same state
    assert torch.equal(collected_generator.get_state(), played_generator.get_state())


def test_the_optimizer_step_on_input_major_weights_equals_adamw_on_contiguous_ones():
    from plasticity_lab.backends import cpu_kernels

    population = Population(NetworkSpec(), [0, 1])
    key = "encoder.0.layer.weight"
    population.params[key] = cpu_kernels.input_major(population.params[key].detach()).requires_grad_()
    population.new_optimizer()
    twin = {k: v.detach().contiguous().clone().requires_grad_() for k, v in population.params.items()}
    reference = torch.optim.AdamW(list(twin.values()), lr=population.ppo.lr, eps=population.ppo.adam_eps,
                                  weight_decay=0.0, fused=True)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        for k, p in population.params.items():
            p.grad = torch.randn(p.shape, generator=g)
            twin[k].grad = p.grad.clone()
        population.params[key].grad = cpu_kernels.input_major(population.params[key].grad)
        population._optimizer_step()
        reference.step()
    assert not population.params[key].is_contiguous()  # still input-major after the steps
    for k, p in population.params.items():
        assert torch.equal(p.detach(), twin[k].detach()), k  # AdamW is element-wise: the same numbers
        state, want = population.optimizer.state[p], reference.state[twin[k]]
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(state[name], want[name]), (k, name)


def test_a_population_of_one_trains_as_the_readable_single_agent_does():
    """ppo.Agent (nn.Module, loss.backward, clip_grad_norm_, AdamW.step) and a Population of one member, from
    the same weights on the same rollout with the same generator: the same minibatches, the same weights after."""
    from plasticity_lab.ppo import Agent

    cfg = PPOConfig()
    pop = Population(NetworkSpec(), member_seeds=[3], ppo=cfg)
    net = NetworkSpec().build()
    net.load_state_dict({k: v.detach().clone() for k, v in pop.member_params(0).items()})
    agent = Agent(net, cfg)
    rollout = random_rollout(1)
    pop_generator, agent_generator = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    pop_stats = pop.update(rollout, pop_generator)
    agent_stats = agent.update(rollout, agent_generator)
    assert torch.equal(pop_generator.get_state(), agent_generator.get_state())  # the same random draws
    for name, p in net.named_parameters():
        torch.testing.assert_close(pop.params[name][0].detach(), p.detach(), rtol=1e-4, atol=1e-5)
    for key in ("policy_loss", "value_loss", "entropy", "grad_norm", "dead_units", "weight_magnitude",
                "weight_difference"):
        assert agent_stats[key].item() == pytest.approx(pop_stats[key][0].item(), rel=1e-3, abs=1e-6), key


def test_the_single_agent_collects_and_updates_on_a_real_environment():
    """Collection works for one agent on the environment's [1, E] batch, batch after batch until at least 1 024
    transitions (4 batches of 3 copies × 100 steps); an update changes the weights."""
    from plasticity_lab.envs.population import GridworldPopulation
    from plasticity_lab.ppo import Agent, collect_episodes
    from plasticity_lab.shifts import distribution

    agent = Agent(NetworkSpec().build())
    env = GridworldPopulation(1, 3)
    d = distribution("window", 0, 1, pool_size=5)
    env.set_distributions([d.train_levels], [d.mapping])
    rollout = collect_episodes(agent, env, torch.Generator().manual_seed(0))
    assert rollout.actions.shape == (4 * env.episode_length, 1, 3)
    assert rollout.episode_returns().shape == (1, 12)
    torch.testing.assert_close(rollout.returns, rollout.advantages + rollout.values)
    before = [p.detach().clone() for p in agent.network.parameters()]
    stats = agent.update(rollout, torch.Generator().manual_seed(1))
    assert stats["weight_difference"].item() > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.network.parameters()))
