"""Training on a CUDA device: the same code and, up to float rounding, the same computation as on the CPU.

The CUDA cases skip where no GPU is present; the CPU cases run the same checks everywhere.
"""

import dataclasses

import pytest
import torch

import plasticity_lab as pl
from plasticity_lab.envs.population import GridworldPopulation
from plasticity_lab.experiment import Experiment
from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population
from plasticity_lab.ppo import collect_episodes
from plasticity_lab.shifts import distribution

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=needs_cuda)]
OTHER_DEVICE = "cuda"  # compared with the CPU below


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("condition", ["reset_all", "soft_shrink_perturb+layernorm", "redo", "injection", "crelu"])
def test_a_population_trains_on_the_device(device, condition):
    configs = [pl.RunConfig(condition=condition, shift=shift, seed=seed, preset="smoke", rounds=2,
                            epochs_per_round=2, device=device)
               for shift, seed in (("permute", 0), ("window", 1))]
    experiment = Experiment(configs)
    experiment.train_to_end()
    assert {p.device.type for p in experiment.population.params.values()} == {device}
    table = experiment.table()
    assert len(table) == 2 * 2 * 2  # members × rounds × epochs per round
    for column in ("train_return", "weight_magnitude", "grad_norm", "entropy"):
        assert table[column].notna().all() and (table[column].abs() < 1e6).all(), column


@pytest.mark.parametrize("device", DEVICES)
def test_coinrun_trains_on_the_device(device):
    """The CNN population with episodes that end (members with different numbers of transitions) on the device:
    ProcGen steps on the CPU, the frames go to the device."""
    pytest.importorskip("procgen")
    configs = [pl.RunConfig(env="coinrun", condition="soft_shrink_perturb+layernorm", shift=shift, seed=seed,
                            preset="smoke", rounds=2, epochs_per_round=1, num_envs=2, test_episodes=2,
                            ppo=pl.PPOConfig(min_transitions=64), device=device)
               for shift, seed in (("permute", 0), ("window", 1))]
    experiment = Experiment(configs)
    experiment.train_to_end()
    assert {p.device.type for p in experiment.population.params.values()} == {device}
    table = experiment.table()
    assert len(table) == 2 * 2 and table["train_return"].between(-2.0, 10.0).all()
    for column in ("weight_magnitude", "grad_norm", "entropy"):
        assert table[column].notna().all() and (table[column].abs() < 1e6).all(), column


@pytest.mark.parametrize("device", DEVICES)
def test_montezuma_trains_on_the_device(device):
    """The RND agents and their predictors on the device, the games on the CPU; checkpoints come back to the CPU."""
    pytest.importorskip("ale_py")
    from plasticity_lab.montezuma_run import MontezumaExperiment

    rnd = pl.RNDConfig(rollout_length=8, init_steps=4, epochs=1, minibatches=2)
    configs = [pl.RunConfig(env="montezuma", condition="soft_shrink_perturb+layernorm", seed=seed, preset="smoke",
                            rnd=rnd, device=device) for seed in (0, 1)]
    experiment = MontezumaExperiment(configs)
    experiment.train_to_end()
    assert {p.device.type for p in experiment.population.params.values()} == {device}
    assert {p.device.type for p in experiment.agent.rnd.predictor_params.values()} == {device}
    table = experiment.table()
    assert len(table) == 2 * 2 and (table["rooms_visited"] == 1).all()
    for column in ("intrinsic_reward", "predictor_loss", "weight_magnitude", "grad_norm", "entropy"):
        assert table[column].notna().all() and (table[column].abs() < 1e6).all(), column
    state = experiment.state_dict()
    assert all(v.device.type == "cpu" for v in state["params"].values())


def _rollout_on_cpu(members: int) -> tuple[Population, object]:
    population = Population(NetworkSpec(), list(range(members)))
    env = GridworldPopulation(members, 11)
    dists = [distribution("permute", seed, 1, pool_size=10) for seed in range(members)]
    env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
    return population, collect_episodes(population, env, torch.Generator().manual_seed(0))


def _to(rollout, device: str):
    return dataclasses.replace(rollout, **{f.name: getattr(rollout, f.name).to(device)
                                           for f in dataclasses.fields(rollout)
                                           if getattr(rollout, f.name) is not None})


@needs_cuda
def test_an_update_on_the_gpu_agrees_with_the_cpu():
    # Same members (weights drawn from their seeds on the CPU), same rollout, same minibatch order (the shuffle
    # follows the generator's device, a CPU generator for both): the forward passes agree to float rounding, and
    # so does one epoch of updates, measured against the size of the update itself (Adam's first steps turn a
    # rounding difference in a near-zero gradient into a full step, so single entries may differ).
    on_cpu, rollout = _rollout_on_cpu(3)
    on_gpu = Population(NetworkSpec(), list(range(3)), device=OTHER_DEVICE)
    for name, value in on_cpu.params.items():
        assert torch.equal(value.detach(), on_gpu.params[name].detach().cpu()), name
    obs = rollout.obs[0]  # [M, E, obs]
    with torch.no_grad():
        for a, b in zip(on_cpu.forward(obs), on_gpu.forward(obs.to(OTHER_DEVICE))):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
    before = {k: v.detach().clone() for k, v in on_cpu.params.items()}
    stats_cpu = on_cpu.update(rollout, torch.Generator().manual_seed(1))
    stats_gpu = on_gpu.update(_to(rollout, OTHER_DEVICE), torch.Generator().manual_seed(1))
    for name, start in before.items():
        step_cpu = on_cpu.params[name].detach() - start
        step_gpu = on_gpu.params[name].detach().cpu() - start
        assert (step_gpu - step_cpu).abs().mean() <= 0.02 * step_cpu.abs().mean() + 1e-9, name
    torch.testing.assert_close(stats_gpu["grad_norm"].cpu(), stats_cpu["grad_norm"], rtol=1e-3, atol=1e-6)


@needs_cuda
def test_an_uneven_cnn_update_on_the_gpu_agrees_with_the_cpu():
    """Members with different numbers of transitions (episodes that end), the CNN, AdamW per member: one update on
    the GPU moves the weights as on the CPU, to float rounding measured against the update's own size."""
    from plasticity_lab.ppo import PPOConfig, Rollout, gae

    g = torch.Generator().manual_seed(0)
    T, M, E = 6, 2, 3
    valid = torch.zeros(T, M, E, dtype=torch.bool)
    for m, lengths in enumerate(([6, 5, 4], [3, 2, 6])):  # 15 and 11 transitions
        for e, n in enumerate(lengths):
            valid[:n, m, e] = True
    rewards = torch.randn(T, M, E, generator=g) * valid
    values = torch.randn(T, M, E, generator=g) * 0.1
    rollout = Rollout(obs=torch.rand(T, M, E, 3, 64, 64, generator=g)[valid],
                      actions=torch.randint(0, 9, (T, M, E), generator=g),
                      log_probs=torch.log(torch.rand(T, M, E, generator=g) * 0.5 + 0.1), values=values,
                      rewards=rewards, valid=valid)
    rollout.advantages = gae(rewards, values, 0.99, 0.95, valid)
    rollout.returns = rollout.advantages + values
    spec, ppo = NetworkSpec(encoder="cnn", n_actions=9), PPOConfig(minibatch_size=5, epochs=2)
    on_cpu = Population(spec, [0, 1], ppo, episodes_end=True)
    on_gpu = Population(spec, [0, 1], ppo, device=OTHER_DEVICE, episodes_end=True)
    start = {k: v.detach().clone() for k, v in on_cpu.params.items()}
    on_cpu.update(rollout, torch.Generator().manual_seed(1))
    on_gpu.update(_to(rollout, OTHER_DEVICE), torch.Generator().manual_seed(1))
    for name, p in on_cpu.params.items():
        moved = (p.detach() - start[name]).abs().max()
        assert (on_gpu.params[name].detach().cpu() - p.detach()).abs().max() <= 1e-2 * moved + 1e-6, name


@needs_cuda
def test_graphed_steps_agree_with_eager_on_the_device():
    """The compiled steps as a GPU runs them (inductor, replayed as CUDA graphs) against eager on the same device: a
    collection epoch, then one minibatch step of the whole rollout, to float rounding."""
    from plasticity_lab.graphs import GraphedSteps
    from plasticity_lab.ppo import PPOConfig
    from plasticity_lab.streams import MemberStreams

    seeds = [0, 1, 2]
    root = MemberStreams.for_members([(s, "permute") for s in seeds], "cuda")
    results = []
    for graphed in (False, True):
        population = Population(NetworkSpec(), seeds, PPOConfig(epochs=1, minibatch_size=1100), device="cuda",
                                size_invariant=True)
        if graphed:
            population.graphs = GraphedSteps(population)
        env = GridworldPopulation(len(seeds), 11, device="cuda")
        dists = [distribution("permute", s, 1, pool_size=100) for s in seeds]
        env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
        rollout = collect_episodes(population, env, root.at("collect", 0))
        update_from = rollout if not graphed else results[0][0]  # both update on the eager rollout
        population.update(update_from, root.at("update", 0))
        if graphed:
            assert population.graphs.fallback is None, population.graphs.fallback
        results.append((rollout, {k: v.detach().clone() for k, v in population.params.items()}))
    (eager, eager_params), (graphed, params) = results
    assert (graphed.actions == eager.actions).float().mean() > 0.999  # an action flips only at a CDF's edge
    torch.testing.assert_close(graphed.values[0], eager.values[0], rtol=1e-4, atol=1e-5)
    for key in eager_params:
        torch.testing.assert_close(params[key], eager_params[key], rtol=0, atol=1e-5)
