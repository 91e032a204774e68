"""The collection step and the minibatch update compiled whole (plasticity_lab.graphs), checked against eager.

``fullgraph=True`` turns any graph break into an error, and an error sends the population back to eager with the
reason in ``fallback``: so ``fallback is None`` after a step means the step compiled as one graph. The graphs are
compiled with the ``aot_eager`` backend, which traces and differentiates them exactly as the CPU's default does but
runs eager kernels, so the tests need no C++ compiler's minutes (the benchmark times the real compiler).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

from plasticity_lab import RunConfig
from plasticity_lab.conditions import parse_condition
from plasticity_lab.envs.population import GridworldPopulation
from plasticity_lab.experiment import Experiment
from plasticity_lab.graphs import GraphedSteps, adamw_step_
from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population
from plasticity_lab.ppo import PPOConfig, collect_episodes
from plasticity_lab.shifts import distribution
from plasticity_lab.streams import MemberStreams

SEEDS = [0, 1, 2]


def _streams():
    return MemberStreams.for_members([(seed, "permute") for seed in SEEDS])


def _population(condition: str, graphs, ppo: PPOConfig = PPOConfig()) -> Population:
    cond = parse_condition(condition)
    population = Population(NetworkSpec(), SEEDS, ppo, condition=cond, size_invariant=True)
    cond.setup(population)
    if graphs is not None:
        population.graphs = GraphedSteps(population, backend=graphs)
    return population


def _env() -> GridworldPopulation:
    env = GridworldPopulation(len(SEEDS), 11)
    dists = [distribution("permute", seed, 1, pool_size=100) for seed in SEEDS]  # permuted observations too
    env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
    return env


@pytest.fixture(autouse=True)
def _fresh_compiler():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_a_graphed_collection_epoch_is_the_eager_one():
    eager = collect_episodes(_population("warm_start", None), _env(), _streams().at("collect", 0))
    population = _population("warm_start", "aot_eager")
    torch._dynamo.utils.counters.clear()
    graphed = collect_episodes(population, _env(), _streams().at("collect", 0))
    assert population.graphs.fallback is None  # one whole graph: a break would have been an error
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2  # the step (once, not per step) and GAE
    assert torch.equal(graphed.actions, eager.actions) and torch.equal(graphed.rewards, eager.rewards)
    torch.testing.assert_close(graphed.advantages, eager.advantages, rtol=0, atol=1e-5)
    torch.testing.assert_close(graphed.values, eager.values, rtol=0, atol=1e-6)
    torch.testing.assert_close(graphed.log_probs, eager.log_probs, rtol=0, atol=1e-6)
    torch.testing.assert_close(graphed.obs, eager.obs, rtol=0, atol=0)


@pytest.mark.parametrize("condition", ["soft_shrink_perturb+layernorm", "regen_l2", "l2"])
def test_a_graphed_minibatch_step_agrees_with_eager(condition):
    """One minibatch step of the whole rollout (so its gradients are compared before Adam can magnify a rounding
    difference): the condition's per-step work included — soft S+P's fresh draw, regenerative L2's loss term (the
    weights moved off θ₀ first, else its gradient is 0), L2's weight decay."""
    ppo = PPOConfig(epochs=1, minibatch_size=1100)
    rollout = collect_episodes(_population("warm_start", None), _env(), _streams().at("collect", 0))
    results = []
    for graphs in (None, "aot_eager"):
        population = _population(condition, graphs, ppo)
        displacement = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in population.params.values():
                p.add_(torch.randn(p.shape, generator=displacement) * 1e-2)
        start = {k: p.detach().clone() for k, p in population.params.items()}
        stats = population.update(rollout, _streams().at("update", 0))
        if graphs is not None:
            assert population.graphs.fallback is None
        results.append((stats, {k: p.detach().clone() for k, p in population.params.items()},
                        {k: p.grad.clone() for k, p in population.params.items()}))
    (eager_stats, eager_params, eager_grads), (stats, params, grads) = results
    for key in eager_grads:
        torch.testing.assert_close(grads[key], eager_grads[key], rtol=1e-5, atol=1e-8)
    for key in eager_params:
        torch.testing.assert_close(params[key], eager_params[key], rtol=0, atol=1e-6)
    for key in eager_stats:
        torch.testing.assert_close(stats[key], eager_stats[key], rtol=1e-4, atol=1e-6)
    assert all(not torch.equal(params[k], start[k]) for k in params)  # every tensor took the step


def test_gae_as_one_product_equals_the_recursion():
    from plasticity_lab.graphs import whole_episode_gae
    from plasticity_lab.ppo import gae

    generator = torch.Generator().manual_seed(0)
    rewards = (torch.rand(100, 3, 11, generator=generator) < 0.05).float() * 0.75
    values = torch.randn(100, 3, 11, generator=generator)
    torch.testing.assert_close(whole_episode_gae(rewards, values, 0.99, 0.95), gae(rewards, values, 0.99, 0.95),
                               rtol=1e-5, atol=1e-5)
    # by hand, two steps, gamma 0.5, lambda 1: A_1 = r_1 − V_1; A_0 = r_0 + 0.5·V_1 − V_0 + 0.5·A_1
    hand = whole_episode_gae(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0]), 0.5, 1.0)
    assert hand.tolist() == [1.0 + 0.5 * 1.0 - 0.5 + 0.5 * 1.0, 1.0]


def test_adamw_written_out_equals_pytorchs():
    torch.manual_seed(0)
    ours = torch.randn(3, 20, 30, requires_grad=True)
    theirs = ours.detach().clone().requires_grad_(True)
    reference = torch.optim.AdamW([theirs], lr=5e-4, eps=1e-8, weight_decay=0.0)
    state = {"step": torch.zeros(()), "exp_avg": torch.zeros_like(ours), "exp_avg_sq": torch.zeros_like(ours)}
    for _ in range(25):
        grad = torch.randn_like(ours) * 10 ** torch.empty_like(ours).uniform_(-6, 0)
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        reference.step()
        with torch.no_grad():
            adamw_step_([ours], [state], lr=5e-4, betas=(0.9, 0.999), eps=1e-8)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert float(state["step"]) == 25
    torch.testing.assert_close(state["exp_avg_sq"], reference.state[theirs]["exp_avg_sq"])


def test_a_compiler_that_fails_sends_the_run_back_to_eager():
    def no_compiler(graph, example_inputs):
        raise RuntimeError("no C++ compiler on this machine")

    population, env, root = _population("warm_start", no_compiler), _env(), _streams()
    rollout = collect_episodes(population, env, root.at("collect", 0))
    assert "no C++ compiler on this machine" in population.graphs.fallback
    population.update(rollout, root.at("update", 0))
    eager = _population("warm_start", None)
    eager.update(collect_episodes(eager, _env(), root.at("collect", 0)), root.at("update", 0))
    for key, value in eager.params.items():
        assert torch.equal(population.params[key], value)


def test_graphs_are_refused_where_they_cannot_run():
    with pytest.raises(ValueError, match="randomness 'member'"):
        RunConfig(execution="graphs")
    with pytest.raises(ValueError, match="env 'gridworld'"):
        RunConfig(env="coinrun", execution="graphs", randomness="member")
    with pytest.raises(ValueError, match="unknown execution 'graph'; valid: eager, graphs"):
        RunConfig(execution="graph")
    experiment = Experiment([RunConfig(execution="graphs", randomness="member", seed=s) for s in (0, 1)])
    assert experiment.execution == "graphs"
    with pytest.raises(ValueError, match="fixed-length episodes"):
        GraphedSteps(Population(NetworkSpec(), [0], episodes_end=True))


def test_a_graphed_run_crosses_shifts_and_tests_without_recompiling(monkeypatch):
    """Two rounds through the run loop: the shift's new optimizer takes over the graphs' persistent AdamW state and
    the test episodes are one more graph, so nothing is compiled again; the first epoch's collection is eager's."""
    import functools

    import plasticity_lab.experiment as experiment_module

    monkeypatch.setattr(experiment_module, "GraphedSteps", functools.partial(GraphedSteps, backend="aot_eager"))
    settings = dict(preset="smoke", rounds=2, epochs_per_round=2, test_interval=2, test_episodes=5,
                    randomness="member", condition="soft_shrink_perturb")
    tables = {}
    for execution in ("eager", "graphs"):
        torch._dynamo.utils.counters.clear()
        experiment = Experiment([RunConfig(execution=execution, seed=s, **settings) for s in (0, 1)])
        experiment.train_to_end()
        tables[execution] = experiment.table()
    assert experiment.execution == "graphs"
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 4  # training step, test step, GAE, update
    first = tables["eager"]["epoch"] == 0
    assert (tables["graphs"][first]["train_return"].to_numpy() == tables["eager"][first]["train_return"].to_numpy()).all()
    assert tables["graphs"]["test_return"].notna().sum() == tables["eager"]["test_return"].notna().sum() == 4


def test_a_pytorch_that_cannot_trace_a_backward_pass_trains_eager(monkeypatch):
    import plasticity_lab.graphs as graphs

    monkeypatch.setattr(graphs, "backward_traceable", lambda: False)
    with pytest.warns(RuntimeWarning, match="the run goes on eager"):
        experiment = Experiment([RunConfig(execution="graphs", randomness="member", seed=s, preset="smoke",
                                           rounds=1, epochs_per_round=1, test_episodes=2) for s in (0, 1)])
    assert experiment.execution.startswith("graphs→eager: torch ") and "2.11" in experiment.execution
    experiment.train_to_end()
    assert experiment.table()["train_return"].notna().all()
