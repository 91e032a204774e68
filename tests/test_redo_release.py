"""ReDo's options, the project's default and the authors' release's variant of each step (issue 24): the score,
the timing, AdamW's moments of recycled weights, and where the weight diagnostics are logged — on populations
built by hand, and end to end."""

import math

import pandas as pd
import pytest
import torch

import plasticity_lab as pl
from plasticity_lab.conditions import ReDo, parse_condition
from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population
from plasticity_lab.ppo import PPOConfig
from rollouts import random_rollout

RELEASE = {"score": "release", "timing": "release", "reset_optimizer_state": False, "log_weights": "after",
           "outgoing": "policy_only"}


def _population(condition, seeds=(0, 1)):
    pop = Population(NetworkSpec(**condition.network_options()), member_seeds=list(seeds), ppo=PPOConfig(),
                     condition=condition)
    condition.setup(pop)
    return pop


def _obs(members=2, batch=64, seed=5):
    return (torch.rand(members, batch, 363, generator=torch.Generator().manual_seed(seed)) < 0.1).float()


def _plant_dead(pop, layer, member, units):
    """Incoming weights 0 and bias −1: the units' ReLU output is 0 on every input."""
    with torch.no_grad():
        pop.params[f"{layer}.weight"][member, units] = 0.0
        pop.params[f"{layer}.bias"][member, units] = -1.0


def _expected_dormant(pop, obs, tau, score):
    """Independently, member by member through an ordinary nn.Module, one sample at a time for the release's score:
    the [M, W] dormant masks of each block."""
    masks = []
    for m in range(pop.members):
        net = NetworkSpec().build()
        net.load_state_dict({k: v.detach() for k, v in pop.member_params(m).items()})
        with torch.no_grad():
            hidden = net(obs[m], return_hidden=True)[3]
        row = []
        for a in hidden:  # [B, W]
            if score == "release":
                ratios = [a[b] / a[b].mean() for b in range(a.shape[0])]  # 0/0 = NaN for an all-zero sample
                scores = torch.stack(ratios).mean(0)
            else:
                per_unit = a.mean(0)
                scores = per_unit / (per_unit.mean() + 1e-9)
            row.append(scores <= tau)
        masks.append(row)
    return [torch.stack([masks[m][k] for m in range(pop.members)]) for k in range(len(masks[0]))]


# ---------------------------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------------------------


def _zero_sample_population(score):
    """Member 0: units 5 and 77 of the first layer dead, and a first sample on which its whole first layer is 0
    (an all-zero observation and biases ≤ 0). Member 1: units 7, 100, 200 of the second layer dead."""
    pop = _population(ReDo(score=score))
    obs = _obs()
    obs[0, 0] = 0.0
    with torch.no_grad():
        bias = pop.params["encoder.0.layer.bias"]
        bias[0] = -bias[0].abs()
    _plant_dead(pop, "encoder.0.layer", 0, [5, 77])
    _plant_dead(pop, "encoder.1.layer", 1, [7, 100, 200])
    pop.last_minibatch_obs = obs
    return pop, obs


@pytest.mark.parametrize("score", ["project", "release"])
def test_a_sample_whose_layer_is_all_zero_stops_the_release_from_recycling_that_layer(score):
    pop, obs = _zero_sample_population(score)
    with torch.no_grad():
        first = pop.forward(obs, return_hidden=True)[3][0]
    assert not first[0, 0].any() and first[0, 1:].any(dim=1).all()  # only member 0's first sample is all zero
    expected = _expected_dormant(pop, obs, 0.025, score)
    old = {k: v.detach().clone() for k, v in pop.params.items()}
    got = pop.condition.recycle(pop, torch.Generator().manual_seed(9))
    for a, b in zip(got, expected):
        assert torch.equal(a, b)
    if score == "release":  # 0/0 in every unit of member 0's first layer: nothing recycled there, dead units kept
        assert not got[0][0].any()
        assert torch.equal(pop.params["encoder.0.layer.weight"][0], old["encoder.0.layer.weight"][0])
        kept = ~got[1][0]  # the next layer's rows that were not recycled themselves: columns 5 and 77 untouched
        assert torch.equal(pop.params["encoder.1.layer.weight"][0, kept][:, [5, 77]],
                           old["encoder.1.layer.weight"][0, kept][:, [5, 77]])
        assert pop.params["encoder.1.layer.weight"][0, kept][:, [5, 77]].any()
    else:
        assert got[0][0, [5, 77]].all()
        assert not pop.params["encoder.1.layer.weight"][0, :, [5, 77]].any()
    # member 1 has no all-zero sample: its dead units are recycled under either score
    assert got[1][1, [7, 100, 200]].all()
    assert not pop.params["policy_head.weight"][1, :, [7, 100, 200]].any()


def test_the_score_can_differ_per_member():
    pop, obs = _zero_sample_population(["release", "project"])
    release, project = _expected_dormant(pop, obs, 0.025, "release"), _expected_dormant(pop, obs, 0.025, "project")
    got = pop.condition.recycle(pop, torch.Generator().manual_seed(9))
    for a, r, p in zip(got, release, project):
        assert torch.equal(a[0], r[0]) and torch.equal(a[1], p[1])
    assert not got[0][0].any()


# ---------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------


def _fired(cond, epochs=7):
    pop = _population(cond)
    pop.last_minibatch_obs = _obs()
    fired = []
    for epoch in range(epochs):
        old = pop.params["encoder.0.layer.weight"].detach().clone()
        cond.after_epoch(pop, epoch, torch.Generator().manual_seed(epoch))
        now = pop.params["encoder.0.layer.weight"]
        fired.append([m for m in range(2) if not torch.equal(now[m], old[m])])
    return [e for e, members in enumerate(fired) for _ in members], fired


def test_timing_project_acts_after_epochs_period_minus_one_and_release_after_multiples_of_period():
    # tau 1: every unit below its layer's mean is recycled, so a step always changes something
    _, project = _fired(ReDo(period=3, tau=1.0))
    assert [e for e, members in enumerate(project) if members] == [2, 5]  # (epoch + 1) % 3 == 0
    _, release = _fired(ReDo(period=3, tau=1.0, timing="release"))
    assert [e for e, members in enumerate(release) if members] == [3, 6]  # epoch % 3 == 0 and epoch > 0
    _, mixed = _fired(ReDo(period=[2, 3], tau=1.0, timing=["release", "project"]))
    assert mixed == [[], [], [0, 1], [], [0], [1], [0]]  # member 0 at 2, 4, 6; member 1 at 2, 5


# ---------------------------------------------------------------------------------------------------------------
# Adam's moments
# ---------------------------------------------------------------------------------------------------------------


def test_adam_moments_of_recycled_weights_are_zeroed_per_member_or_left():
    cond = ReDo(reset_optimizer_state=[True, False])
    pop = _population(cond)
    pop.update(random_rollout(2), torch.Generator().manual_seed(0))
    pop.last_minibatch_obs = _obs()
    _plant_dead(pop, "encoder.1.layer", 0, [7])
    _plant_dead(pop, "encoder.1.layer", 1, [9])
    w1, head = pop.params["encoder.1.layer.weight"], pop.params["value_head.weight"]
    before = {key: (pop.optimizer.state[w1][key].clone(), pop.optimizer.state[head][key].clone())
              for key in ("exp_avg", "exp_avg_sq")}
    masks = cond.recycle(pop, torch.Generator().manual_seed(1))
    assert masks[1][0, 7] and masks[1][1, 9]
    for key, (s1, sh) in before.items():
        now1, nowh = pop.optimizer.state[w1][key], pop.optimizer.state[head][key]
        assert not now1[0, 7].any() and not nowh[0, :, 7].any()  # member 0: zeroed (the project)
        assert s1[1, 9].any() and torch.equal(now1[1], s1[1]) and torch.equal(nowh[1], sh[1])  # member 1: left


# ---------------------------------------------------------------------------------------------------------------
# where the weight diagnostics are logged
# ---------------------------------------------------------------------------------------------------------------


def _rms(tensors):
    """RMS over a member's tensors, in float64: sqrt(Σx² / N) per member → [M]."""
    flat = torch.cat([t.detach().double().reshape(t.shape[0], -1) for t in tensors], dim=1)
    return (flat.pow(2).sum(1) / flat.shape[1]).sqrt()


@pytest.mark.parametrize("log_weights", ["before", "after", ["after", "before"]])
def test_log_weights_after_measures_the_weights_ReDo_left(log_weights):
    cond = ReDo(tau=1.0, log_weights=log_weights)
    pop = _population(cond)
    assert pop.keep_update_start == (log_weights != "before")
    start = {k: v.detach().clone() for k, v in pop.params.items()}
    logged = pop.update(random_rollout(2), torch.Generator().manual_seed(0))
    updated = {k: v.detach().clone() for k, v in pop.params.items()}
    revised = cond.after_epoch(pop, 9, torch.Generator().manual_seed(1))  # epoch 9: period 10, project timing
    recycled = [k for k in pop.params if not torch.equal(pop.params[k], updated[k])]
    assert recycled  # tau 1 recycles every unit below its layer's mean
    if log_weights == "before":
        assert revised is None and pop.update_start is None
        return
    magnitude = _rms(list(pop.params.values()))
    difference = _rms([pop.params[k] - start[k] for k in pop.params])
    assert set(revised) == {"weight_magnitude", "weight_difference"}
    after = [True, True] if log_weights == "after" else [True, False]
    for m in range(2):
        if after[m]:  # measured after recycling: the change includes ReDo's
            assert revised["weight_magnitude"][m].item() == pytest.approx(magnitude[m].item(), rel=1e-5)
            assert revised["weight_difference"][m].item() == pytest.approx(difference[m].item(), rel=1e-5)
        else:  # as the update logged it
            assert revised["weight_magnitude"][m] == logged["weight_magnitude"][m]
            assert revised["weight_difference"][m] == logged["weight_difference"][m]
        assert revised["weight_difference"][m] != logged["weight_difference"][m] or not after[m]
    # on an epoch where ReDo does not act nothing is revised
    assert cond.after_epoch(pop, 10, torch.Generator().manual_seed(2)) is None


# ---------------------------------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------------------------------

# one environment copy, one episode an epoch
TINY = dict(preset="smoke", rounds=3, epochs_per_round=2, num_envs=1, test_episodes=11, test_interval=2,
            ppo=PPOConfig(min_transitions=100))


def _run(seeds=(0, 1), **params):
    return pl.run([pl.RunConfig(condition="redo", seed=s, condition_params=params, **TINY) for s in seeds])


def test_logging_after_changes_only_the_weight_diagnostics_of_the_epochs_ReDo_acts():
    before = _run(period=2, tau=1.0)
    after = _run(period=2, tau=1.0, log_weights="after")
    assert set(after["condition"]) == {"redo[log_weights=after,period=2,tau=1]"}
    weights = ["weight_magnitude", "weight_difference"]
    rest = [c for c in before.columns if c not in weights + ["condition"]]
    pd.testing.assert_frame_equal(before[rest], after[rest])  # the same training: only the log moves
    acting = before["epoch"] % 2 == 1
    pd.testing.assert_frame_equal(before.loc[~acting, weights], after.loc[~acting, weights])
    assert (before.loc[acting, "weight_difference"] != after.loc[acting, "weight_difference"]).all()


def test_redo_as_released_runs_end_to_end_and_a_population_can_mix_the_variants():
    released = _run(**RELEASE, period=2)
    assert len(released) == 12 and released.drop(columns=["test_return"]).notna().all().all()
    # one population, member 0 with the project's score and member 1 with the release's, trains each member as a
    # population of the same seeds with that score for everyone does (tau 1: every step recycles in both members,
    # so the shared random stream is drawn alike)
    mixed = _run(period=2, tau=1.0, score=["project", "release"])
    project, release = _run(period=2, tau=1.0, score="project"), _run(period=2, tau=1.0, score="release")
    columns = ["train_return", "weight_magnitude", "dead_units", "entropy"]
    for seed, alone in ((0, project), (1, release)):
        pd.testing.assert_frame_equal(mixed.loc[mixed["seed"] == seed, columns].reset_index(drop=True),
                                      alone.loc[alone["seed"] == seed, columns].reset_index(drop=True))


def test_parse_condition_takes_the_options_by_name_and_lists_them():
    cond = parse_condition("redo+layernorm", {"redo.score": "release", "timing": "release"})
    redo = cond.parts[0]
    assert (redo.score, redo.timing, redo.reset_optimizer_state, redo.log_weights) == \
        ("release", "release", True, "before")
    assert ReDo(**RELEASE).parameters() == {"tau": 0.025, "period": 10, **RELEASE}
    assert ReDo(score=["project", "release"]).score == ("project", "release")
    with pytest.raises(ValueError, match=r"redo: score has 3 values .* population has 2 member"):
        _population(ReDo(score=["project", "release", "release"]))
    assert math.isclose(ReDo().tau, 0.025)
