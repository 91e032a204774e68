"""plasticity_lab.figures.architecture and plasticity_lab.figures.redo, for the architecture and ReDo chapters (and
their figure), checked against hand-computed values and invariants of the rules: CReLU passes exactly one half of
each unit, LayerNorm's statistics carry the gradient to units that are off, ReDo's fresh incoming weights are
invisible behind zero outgoing weights."""

import math

import pandas as pd
import pytest
import torch

import plasticity_lab as pl
from plasticity_lab import metrics
from plasticity_lab.conditions import ReDo
from plasticity_lab.figures import architecture, redo, resets
from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population


def _population(seeds=(0, 1), **spec):
    return Population(NetworkSpec(**spec), list(seeds))


def _sparse_obs(n=64, seed=5):
    return (torch.rand(n, 363, generator=torch.Generator().manual_seed(seed)) < 0.1).float()


def _gaussian_obs(n=64, seed=5):
    return torch.randn(n, 363, generator=torch.Generator().manual_seed(seed))


def _hidden(pop, obs):
    with torch.no_grad():
        return pop.forward(obs.unsqueeze(0).expand(pop.members, *obs.shape), return_hidden=True)[3]


def _outputs(pop, obs, params=None):
    x = obs.unsqueeze(0).expand(pop.members, *obs.shape)
    saved = pop.params
    if params is not None:
        pop.params = {k: v.detach() for k, v in params.items()}
    try:
        with torch.no_grad():
            logits, value, _ = pop.forward(x)
    finally:
        pop.params = saved
    return logits, value


def _kill_unit(pop, unit, member=0):
    """Make a plain (or CReLU-free) first-layer unit output 0 on every non-negative input: weights 0, bias −1."""
    with torch.no_grad():
        pop.params["encoder.0.layer.weight"][member, unit] = 0.0
        pop.params["encoder.0.layer.bias"][member, unit] = -1.0


# ---------------------------------------------------------------------------------------------------------------
# architecture_table
# ---------------------------------------------------------------------------------------------------------------


def test_architecture_table_counts_by_hand():
    table = architecture.architecture_table(["warm_start", "layernorm", "crelu", "soft_shrink_perturb+layernorm"])
    heads = {"policy_head": 256 * 4 + 4, "value_head": 256 + 1}
    plain = {"encoder.0": 363 * 256 + 256, "encoder.1": 256 * 256 + 256, **heads}
    normed = {"encoder.0": plain["encoder.0"] + 2 * 256, "encoder.1": plain["encoder.1"] + 2 * 256, **heads}
    crelu = {"encoder.0": 363 * 128 + 128, "encoder.1": 256 * 128 + 128, **heads}  # half the rows, same inputs
    for condition, expected in (("warm_start", plain), ("layernorm", normed), ("crelu", crelu),
                                ("soft_shrink_perturb+layernorm", normed)):
        for layer, count in expected.items():
            assert table.loc[(condition, layer), "parameters"] == count, (condition, layer)
    assert table.loc[("crelu", "encoder.0"), "units"] == 128 and table.loc[("crelu", "encoder.0"), "outputs"] == 256
    assert table.loc[("crelu", "encoder.1"), "inputs"] == 256
    assert table.loc[("layernorm", "encoder.1"), "norm"] == "LayerNorm"
    assert table.loc[("warm_start", "encoder.1"), "norm"] == "—"
    # the rows add up to the whole network a population of that condition holds
    for condition in ("warm_start", "layernorm", "crelu"):
        options = pl.parse_condition(condition).network_options()
        stored = sum(v[0].numel() for v in _population((0,), **options).params.values())
        assert table.loc[condition, "parameters"].sum() == stored


# ---------------------------------------------------------------------------------------------------------------
# unit_activity
# ---------------------------------------------------------------------------------------------------------------


def test_crelu_has_exactly_half_its_outputs_zero_and_no_silent_unit():
    pop = _population(crelu=True)
    obs = _gaussian_obs()
    for a in _hidden(pop, obs):  # independently of the function: one of relu(z), relu(−z) is 0 for z ≠ 0
        assert (a == 0).float().mean().item() == 0.5
    activity = architecture.unit_activity(pop, obs)
    assert (activity["zero_fraction"] == 0.5).all()
    assert (activity["never_active"] == 0).all() and (activity["no_gradient"] == 0).all()
    assert (activity["dormant"] == 0).all()
    assert (activity["fewest_active"] == 128).all() and (activity["units"] == 128).all()


def test_unit_activity_of_a_plain_network_by_hand():
    pop = _population()
    _kill_unit(pop, unit=7, member=1)
    obs = _sparse_obs()
    activity = architecture.unit_activity(pop, obs)
    hidden = _hidden(pop, obs)
    for k, (layer, a) in enumerate(zip(("encoder.0.layer", "encoder.1.layer"), hidden)):
        for m in range(2):
            row = activity.loc[(m, layer)]
            assert row.zero_fraction == pytest.approx(float((a[m] == 0).float().mean()))
            never = (a[m] == 0).all(0)
            assert row.never_active == pytest.approx(float(never.float().mean()))
            # a ReLU unit that is 0 on every input passes no gradient, and every other unit does
            assert row.no_gradient == row.never_active
            assert row.fewest_active == int((a[m] > 0).sum(1).min())
    assert bool((hidden[0][1][:, 7] == 0).all())
    # the last block's zero fraction is the study's dead-units diagnostic
    with torch.no_grad():
        features = pop.forward(obs.unsqueeze(0).expand(2, *obs.shape))[2]
    dead = metrics.dead_unit_fraction(features)
    for m in range(2):
        assert activity.loc[(m, "encoder.1.layer"), "zero_fraction"] == pytest.approx(float(dead[m]))


def test_layernorm_reaches_units_that_are_off_everywhere():
    pop = _population(layernorm=True)
    with torch.no_grad():
        pop.params["encoder.0.norm.bias"][0, :10] = -100.0  # ten units off on every input
    obs = _sparse_obs()
    activity = architecture.unit_activity(pop, obs)
    row = activity.loc[(0, "encoder.0.layer")]
    assert row.never_active >= 10 / 256
    assert row.no_gradient == 0  # the mean and variance of the layer carry the gradient to them
    # the same units without LayerNorm get none
    plain = _population()
    with torch.no_grad():
        plain.params["encoder.0.layer.bias"][0, :10] = -100.0
    assert architecture.unit_activity(plain, obs).loc[(0, "encoder.0.layer"), "no_gradient"] >= 10 / 256
    # fresh gains and biases: the normalised pre-activations have mean 0, so some unit is on for every input
    fresh = architecture.unit_activity(_population(layernorm=True), _gaussian_obs())
    assert (fresh["fewest_active"] >= 1).all()


def test_unit_activity_dormant_matches_what_redo_recycles():
    pop = _population()
    obs = _sparse_obs()
    activity = architecture.unit_activity(pop, obs, tau=0.1)
    _, recycled = redo.recycle(pop, obs, ReDo(tau=0.1))
    for layer, mask in zip(("encoder.0.layer", "encoder.1.layer"), recycled):
        for m in range(2):
            assert activity.loc[(m, layer), "dormant"] == pytest.approx(float(mask[m].float().mean()))


# ---------------------------------------------------------------------------------------------------------------
# apply_after_steps (soft shrink+perturb on LayerNorm's gains and biases)
# ---------------------------------------------------------------------------------------------------------------


def test_soft_shrink_perturb_pulls_layernorm_parameters_deterministically():
    pop = _population((0,), layernorm=True)
    with torch.no_grad():
        for name, value in pop.params.items():
            if name.endswith("norm.weight"):
                value.fill_(2.0)
            elif name.endswith("norm.bias"):
                value.fill_(-0.4)
    before = {k: v.detach().clone() for k, v in pop.params.items()}
    beta, steps = 0.01, 50
    condition = pl.parse_condition("soft_shrink_perturb+layernorm", {"perturb": beta})
    after = architecture.apply_after_steps(pop, condition, steps)
    alpha_n = (1 - beta) ** steps
    for name, value in after.params.items():
        if name.endswith("norm.weight"):
            assert torch.allclose(value, torch.full_like(value, 1 + 1.0 * alpha_n), atol=1e-5), name
        elif name.endswith("norm.bias"):
            assert torch.allclose(value, torch.full_like(value, -0.4 * alpha_n), atol=1e-5), name
        assert torch.equal(pop.params[name].detach(), before[name]), "the population itself must not change"
    # the linear weights shrink too, but with a random fresh component: not a constant
    weight = after.params["encoder.0.layer.weight"]
    assert not torch.allclose(weight, before["encoder.0.layer.weight"] * alpha_n, atol=1e-7)
    same = architecture.apply_after_steps(pop, condition, 0)
    assert all(torch.equal(same.params[k], before[k]) for k in before)
    with pytest.raises(ValueError, match="steps"):
        architecture.apply_after_steps(pop, condition, -1)


# ---------------------------------------------------------------------------------------------------------------
# two_by_two
# ---------------------------------------------------------------------------------------------------------------


def test_two_by_two_by_hand():
    rows = []
    values = {"warm_start": (0.0, 0.2), "soft_shrink_perturb": (1.0, 1.0), "layernorm": (0.5, 0.7),
              "soft_shrink_perturb+layernorm": (3.0, 3.0)}
    for condition, seeds in values.items():
        for seed, v in enumerate(seeds):
            rows.append({"shift": "permute", "condition": condition, "seed": seed,
                         "normalised_train_return": v, "normalised_test_return": -v})
    table = architecture.two_by_two(pd.DataFrame(rows))
    train = table.loc[("permute", "train")]
    assert train["warm_start"] == pytest.approx(0.1) and train["layernorm"] == pytest.approx(0.6)
    # both − first − second + neither = 3 − 1 − 0.6 + 0.1
    assert train["interaction"] == pytest.approx(1.5)
    assert table.loc[("permute", "test"), "interaction"] == pytest.approx(-1.5)
    # its test: pooled within-cell variance (0.02 + 0.02) / 4, SE = sqrt(0.01 · 4/2)
    assert train["t"] == pytest.approx(1.5 / 0.02 ** 0.5)
    with pytest.raises(ValueError, match="missing"):
        architecture.two_by_two(pd.DataFrame(rows[:6]))


# ---------------------------------------------------------------------------------------------------------------
# unit_scores
# ---------------------------------------------------------------------------------------------------------------


def test_unit_scores_by_hand():
    pop = _population()
    _kill_unit(pop, unit=3, member=0)
    obs = _sparse_obs()
    scores = redo.unit_scores(pop, obs)
    assert len(scores) == 2 * (256 + 256)
    hidden = _hidden(pop, obs)
    for layer, a in zip(("encoder.0.layer", "encoder.1.layer"), hidden):
        part = scores[(scores.layer == layer) & (scores.member == 1)].set_index("unit")
        means = a[1].abs().mean(0)
        expected = means / means.mean()
        assert torch.allclose(torch.tensor(part["score"].to_numpy()), expected, rtol=1e-4, atol=1e-7)
        assert part["zero_fraction"].to_numpy() == pytest.approx((a[1] == 0).float().mean(0).numpy())
    dead = scores[(scores.layer == "encoder.0.layer") & (scores.member == 0) & (scores.unit == 3)].iloc[0]
    assert dead.score == 0 and dead.zero_fraction == 1 and dead.mean_activation == 0


# ---------------------------------------------------------------------------------------------------------------
# recycle, silence_units, recycling_table
# ---------------------------------------------------------------------------------------------------------------


def test_recycle_zeroes_outgoing_keeps_biases_and_leaves_the_original_alone():
    pop = _population()
    obs = _sparse_obs()
    before = {k: v.detach().clone() for k, v in pop.params.items()}
    after, recycled = redo.recycle(pop, obs)
    assert all(torch.equal(pop.params[k].detach(), before[k]) for k in before)
    # the recycled units are those whose score (by hand) is at most τ
    hidden = _hidden(pop, obs)
    for a, mask in zip(hidden, recycled):
        means = a.abs().mean(1)
        assert torch.equal(mask, means / (means.mean(1, keepdim=True) + 1e-9) <= 0.025)
    assert all(bool(m.any()) for m in recycled), "the test needs dormant units in both layers"
    p = after.params
    first, second = recycled
    for m in range(2):
        # outgoing weights of the recycled units: exactly 0 in the next layer and in both heads
        assert bool((p["encoder.1.layer.weight"][m][:, first[m]] == 0).all())
        assert bool((p["policy_head.weight"][m][:, second[m]] == 0).all())
        assert bool((p["value_head.weight"][m][:, second[m]] == 0).all())
        # incoming weights: new exactly for the recycled units; biases unchanged
        changed = (p["encoder.0.layer.weight"][m] != before["encoder.0.layer.weight"][m]).any(1)
        assert torch.equal(changed, first[m])
        for name in ("encoder.0.layer.bias", "encoder.1.layer.bias", "policy_head.bias", "value_head.bias"):
            assert torch.equal(p[name][m], before[name][m]), name
        # weights between units that were not recycled are untouched
        keep_rows, keep_cols = ~second[m], ~first[m]
        assert torch.equal(p["encoder.1.layer.weight"][m][keep_rows][:, keep_cols],
                           before["encoder.1.layer.weight"][m][keep_rows][:, keep_cols])
        assert torch.equal(p["policy_head.weight"][m][:, ~second[m]], before["policy_head.weight"][m][:, ~second[m]])


def test_recycled_network_computes_what_the_silenced_one_does():
    pop = _population()
    obs = _sparse_obs()
    after, recycled = redo.recycle(pop, obs)
    silenced = redo.silence_units(pop, recycled)
    # fresh incoming weights behind zero outgoing weights cannot reach the outputs
    logits, value = _outputs(after, obs)
    s_logits, s_value = _outputs(pop, obs, silenced)
    assert torch.equal(logits, s_logits) and torch.equal(value, s_value)
    # silence_units zeroes exactly the outgoing columns, nothing else, and leaves its input alone
    first, second = recycled
    for name, value_ in silenced.items():
        original = pop.params[name].detach()
        if name == "encoder.1.layer.weight":
            expected = original.masked_fill(first[:, None, :], 0.0)
        elif name in ("policy_head.weight", "value_head.weight"):
            expected = original.masked_fill(second[:, None, :], 0.0)
        else:
            expected = original
        assert torch.equal(value_, expected), name
    assert not torch.equal(pop.params["policy_head.weight"].detach(), silenced["policy_head.weight"])
    with pytest.raises(ValueError, match="mask"):
        redo.silence_units(pop, [first[:, :10], second])


def test_recycling_units_that_are_zero_everywhere_keeps_the_outputs_exactly():
    pop = _population()
    obs = _sparse_obs()
    after, recycled = redo.recycle(pop, obs, ReDo(tau=0.0))
    assert any(bool(m.any()) for m in recycled), "the test needs units that are 0 on every input"
    logits, value = _outputs(pop, obs)
    new_logits, new_value = _outputs(after, obs)
    assert torch.equal(logits, new_logits) and torch.equal(value, new_value)
    # with τ > 0 weakly active units are removed too: the outputs move, by exactly their contributions
    after_tau, recycled_tau = redo.recycle(pop, obs)
    assert resets.output_change(pop, after_tau.params, obs).max_logit_change > 0


def test_policy_only_leaves_the_value_head_reading_recycled_units():
    pop = _population()
    obs = _sparse_obs()
    after, recycled = redo.recycle(pop, obs, ReDo(outgoing="policy_only"))
    last = recycled[-1]
    assert bool(last.any())
    table = redo.recycling_table(pop, after, recycled)
    for m in range(2):
        policy = table.loc[(m, "encoder.1.layer", "policy_head")]
        value = table.loc[(m, "encoder.1.layer", "value_head")]
        assert policy.outgoing_zero == policy.recycled == int(last[m].sum())
        assert value.outgoing_zero == 0
    # the policy equals the fully recycled network's; the value head now reads the new units
    full, _ = redo.recycle(pop, obs)
    assert torch.equal(_outputs(after, obs)[0], _outputs(full, obs)[0])
    assert not torch.equal(_outputs(after, obs)[1], _outputs(full, obs)[1])


def test_recycling_table_reads_the_weights_not_the_mask():
    pop = _population()
    obs = _sparse_obs()
    after, recycled = redo.recycle(pop, obs)
    table = redo.recycling_table(pop, after, recycled)
    assert (table["recycled"] == table["incoming_changed"]).all()
    assert (table["changed_not_recycled"] == 0).all() and (table["bias_changed"] == 0).all()
    assert (table["outgoing_zero"] == table["recycled"]).all() and (table["zero_not_recycled"] == 0).all()
    assert set(table.index.get_level_values("reader")) == {"encoder.1.layer", "policy_head", "value_head"}
    # told that nothing was recycled, the table still sees the changed rows and the zero columns
    nothing = [torch.zeros_like(m) for m in recycled]
    blind = redo.recycling_table(pop, after, nothing)
    assert (blind["recycled"] == 0).all()
    assert (blind["zero_not_recycled"] == table["outgoing_zero"]).all()
    first = blind.xs("encoder.0.layer", level="layer")
    assert (first["changed_not_recycled"] == table.xs("encoder.0.layer", level="layer")["incoming_changed"]).all()
    # not told which inputs were zeroed, it sees every row of the second layer changed where a first-layer unit
    # was recycled (its zeroed column runs through every row), else only the recycled rows
    second = blind.xs("encoder.1.layer", level="layer")
    for m in range(2):
        expected = 256 if bool(recycled[0][m].any()) else int(recycled[1][m].sum())
        assert (second.loc[m, "changed_not_recycled"] == expected).all(), m


def test_recycling_crelu_units_takes_both_halves():
    pop = _population(crelu=True)
    with torch.no_grad():  # units 5 and 9 of member 0: pre-activations near 0, so both halves are small
        for unit in (5, 9):
            pop.params["encoder.1.layer.weight"][0, unit] *= 1e-4
            pop.params["encoder.1.layer.bias"][0, unit] = 0.0
    obs = _sparse_obs()
    after, recycled = redo.recycle(pop, obs)
    assert all(m.shape == (2, 128) for m in recycled)
    assert bool(recycled[-1][0, 5]) and bool(recycled[-1][0, 9])
    for m in range(2):
        columns = torch.cat([recycled[-1][m], recycled[-1][m]])
        assert bool((after.params["policy_head.weight"][m][:, columns] == 0).all())
        assert bool((after.params["policy_head.weight"][m][:, ~columns] != 0).any(0).all())
    assert torch.equal(_outputs(after, obs)[0], _outputs(pop, obs, redo.silence_units(pop, recycled))[0])
    table = redo.recycling_table(pop, after, recycled)
    assert (table["outgoing_zero"] == table["recycled"]).all() and (table["zero_not_recycled"] == 0).all()


# ---------------------------------------------------------------------------------------------------------------
# run_redo
# ---------------------------------------------------------------------------------------------------------------


def _configs(condition, **params):
    return [pl.RunConfig(shift="permute", condition=condition, seed=s, preset="smoke", rounds=2, epochs_per_round=5,
                         pool_size=10, test_interval=5, test_episodes=2, condition_params=params) for s in (0, 1)]


def test_run_redo_trains_like_run_and_logs_each_recycling_step():
    experiment, log = redo.run_redo(_configs("redo"))
    reference = pl.run(_configs("redo"))
    pd.testing.assert_frame_equal(experiment.table(), reference)
    assert "recycle" not in vars(experiment.condition)  # ReDo's own method is back
    # period 10: one step, after the update of epoch 9 (the last epoch), for both members and both layers
    assert sorted(log["epoch"].unique()) == [9] and sorted(log["round"].unique()) == [2]
    assert len(log) == 2 * 2 and set(log["seed"]) == {0, 1}
    assert ((log["recycled"] >= 0) & (log["recycled"] <= log["units"])).all()
    # right after that last step a recycled unit is exactly the one whose outgoing weights are all 0
    last = log[log["layer"] == "encoder.1.layer"].set_index("seed")["recycled"]
    zero_columns = (experiment.population.params["policy_head.weight"].detach() == 0).all(1).sum(1)
    assert [int(zero_columns[m]) for m in range(2)] == [int(last[0]), int(last[1])]
    with pytest.raises(ValueError, match="ReDo"):
        redo.run_redo(_configs("warm_start"))


# ---------------------------------------------------------------------------------------------------------------
# unit_scores_figure
# ---------------------------------------------------------------------------------------------------------------


def test_unit_scores_figure_counts_dormant_units_and_floors_zero_scores():
    scores = pd.DataFrame({"layer": ["a"] * 4 + ["b"] * 2, "network": ["x", "x", "y", "y", "x", "y"],
                           "score": [0.0, 0.02, 0.5, 0.025, 3.0, 0.0], "zero_fraction": [1, 0.9, 0.1, 0.95, 0, 1]})
    fig = redo.unit_scores_figure(scores, tau=0.025, floor=1e-3)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == "a — dormant: x 2 of 2, y 1 of 2" and titles[1] == "b — dormant: x 0 of 1, y 1 of 1"
    first = fig.data[0]  # layer a, network x
    assert list(first.y) == [1e-3, 0.02] and list(first.customdata) == [0.0, 0.02]
    assert fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError, match="zero_fraction"):
        redo.unit_scores_figure(scores.drop(columns="zero_fraction"))
    with pytest.raises(ValueError, match="floor"):
        redo.unit_scores_figure(scores, floor=0)
    assert math.isclose(min(min(t.y) for t in fig.data), 1e-3)
