"""The backends behind one interface: which is chosen, and that the fast one equals the reference."""

import pytest
import torch

from plasticity_lab import backends
from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population
from rollouts import random_rollout


def test_auto_takes_the_batched_backend_where_it_knows_the_network_the_member_loop_for_a_cnn_on_the_cpu():
    mlp = NetworkSpec(layernorm=True, crelu=True).build()
    cnn = NetworkSpec(encoder="cnn").build()
    assert backends.backend_for(mlp, "auto").name == "batched"
    assert backends.backend_for(cnn, "auto").name == "member_loop"
    assert backends.backend_for(cnn, "auto", device="cuda").name == "reference"  # one launch per member: no
    assert backends.backend_for(mlp, "auto", device="cuda").name == "batched"
    assert backends.backend_for(mlp, "reference").name == "reference"
    assert backends.backend_for(mlp, "member_loop").name == "member_loop"


def test_a_bad_or_impossible_backend_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown backend 'fast'; valid: auto, batched, member_loop, reference"):
        backends.backend_for(NetworkSpec().build(), "fast")
    with pytest.raises(ValueError, match="backend 'batched' cannot compute .*valid here: auto, member_loop, reference"):
        backends.backend_for(NetworkSpec(encoder="cnn").build(), "batched")


def test_the_environment_variable_chooses_the_reference_for_a_population(monkeypatch):
    monkeypatch.setenv(backends.BACKEND_VARIABLE, "reference")
    assert Population(NetworkSpec(), [0, 1]).backend.name == "reference"
    monkeypatch.delenv(backends.BACKEND_VARIABLE)
    assert Population(NetworkSpec(), [0, 1]).backend.name == "batched"


@pytest.mark.parametrize("options", [{}, {"layernorm": True}, {"crelu": True}], ids=["plain", "layernorm", "crelu"])
def test_the_batched_backend_trains_as_the_reference_does(monkeypatch, options):
    """One PPO update of 3 members from the same weights on the same rollout and minibatches: the same weights
    after, up to the float rounding of different summation orders (a real error is of the order of lr = 5e-4)."""
    populations = {}
    for name in ("reference", "batched"):
        monkeypatch.setenv(backends.BACKEND_VARIABLE, name)
        population = Population(NetworkSpec(**options), [0, 1, 2])
        assert population.backend.name == name
        stats = population.update(random_rollout(3), torch.Generator().manual_seed(4))
        populations[name] = (population, stats)
    (reference, ref_stats), (batched, stats) = populations["reference"], populations["batched"]
    for key, value in reference.params.items():
        torch.testing.assert_close(batched.params[key].detach(), value.detach(), rtol=1e-4, atol=1e-5)
    for key in ("policy_loss", "value_loss", "grad_norm", "dead_units"):
        torch.testing.assert_close(stats[key], ref_stats[key], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"layernorm": True, "crelu": True}], ids=["plain", "layernorm+crelu"])
def test_the_member_loop_computes_the_cnn_as_the_reference_does(monkeypatch, options):
    """Forward (hidden layers included, for ReDo) and one PPO update of 2 CNN members from the same weights on the
    same rollout and minibatches: the same numbers up to float rounding."""
    from plasticity_lab.ppo import PPOConfig, Rollout, gae

    g = torch.Generator().manual_seed(0)
    T, M, E = 4, 2, 3
    obs = torch.rand(T, M, E, 3, 64, 64, generator=g)
    rewards, values = torch.randn(T, M, E, generator=g), torch.randn(T, M, E, generator=g) * 0.1
    rollout = Rollout(obs=obs, actions=torch.randint(0, 9, (T, M, E), generator=g),
                      log_probs=torch.log(torch.rand(T, M, E, generator=g) * 0.5 + 0.1), values=values,
                      rewards=rewards)
    rollout.advantages = gae(rewards, values, 0.99, 0.95)
    rollout.returns = rollout.advantages + values
    spec, ppo = NetworkSpec(encoder="cnn", n_actions=9, **options), PPOConfig(minibatch_size=6, epochs=1, adam_eps=1e-6)
    populations = {}
    for name in ("reference", "member_loop"):
        monkeypatch.setenv(backends.BACKEND_VARIABLE, name)
        population = Population(spec, [0, 1], ppo)
        assert population.backend.name == name
        forward = population.forward(obs[0], return_hidden=True)
        populations[name] = (population, forward, population.update(rollout, torch.Generator().manual_seed(4)))
    (reference, ref_forward, ref_stats), (loop, forward, stats) = populations["reference"], populations["member_loop"]
    for got, want in zip([*forward[:3], *forward[3]], [*ref_forward[:3], *ref_forward[3]]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    for key, value in reference.params.items():
        torch.testing.assert_close(loop.params[key].detach(), value.detach(), rtol=1e-4, atol=1e-5)
    for key in ("policy_loss", "value_loss", "grad_norm"):
        torch.testing.assert_close(stats[key], ref_stats[key], rtol=1e-3, atol=1e-5)
