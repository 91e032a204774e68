"""The computations of the chapters on resets and regularisation, and the stored-study helpers
(plasticity_lab.figures: resets, regularisation, environment, studies), checked against hand-computed values and
invariants of the conditions' rules."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

import plasticity_lab as pl
from plasticity_lab import stats
from plasticity_lab.conditions import ShrinkPerturb
from plasticity_lab.experiment import Experiment
from plasticity_lab.figures import comparisons, environment, regularisation, resets, studies
from plasticity_lab.nets import NetworkSpec
from plasticity_lab.population import Population

HEAD_PARAMS = (256 * 4 + 4) + (256 * 1 + 1)  # policy head + value head


def _population(seeds=(0, 1), **spec):
    return Population(NetworkSpec(**spec), list(seeds))


def _obs(n=64, seed=5):
    return (torch.rand(n, 363, generator=torch.Generator().manual_seed(seed)) < 0.1).float()


def _snapshot(pop):
    return {k: v.detach().clone() for k, v in pop.params.items()}


# ---------------------------------------------------------------------------------------------------------------
# layer RMS
# ---------------------------------------------------------------------------------------------------------------


def test_layer_rms_by_hand():
    params = {"a.weight": torch.tensor([[3.0, 4.0], [1.0, 1.0]]), "a.bias": torch.tensor([[0.0], [1.0]]),
              "b.weight": torch.tensor([[1.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]])}
    table = resets.layer_rms(params)
    assert list(table.index) == ["a", "b", "all"] and list(table.columns) == [0, 1]
    assert table.loc["a", 0] == pytest.approx(math.sqrt(25 / 3))
    assert table.loc["a", 1] == pytest.approx(1.0)
    assert table.loc["b", 0] == pytest.approx(1.0) and table.loc["b", 1] == pytest.approx(2.0)
    assert table.loc["all", 0] == pytest.approx(math.sqrt(29 / 7))
    assert table.loc["all", 1] == pytest.approx(math.sqrt(19 / 7))


def test_expected_fresh_rms_is_the_uniform_init_and_matches_a_draw():
    pop = _population(seeds=(3,))
    expected = resets.expected_fresh_rms(pop)
    assert expected["encoder.0.layer"] == pytest.approx(1 / math.sqrt(3 * 363))
    assert expected["policy_head"] == pytest.approx(1 / math.sqrt(3 * 256))
    measured = resets.layer_rms(pop.params)[0]
    for layer, tolerance in (("encoder.0.layer", 0.01), ("encoder.1.layer", 0.01), ("policy_head", 0.06),
                             ("all", 0.01)):
        assert measured[layer] == pytest.approx(expected[layer], rel=tolerance), layer
    # a LayerNorm starts at gain 1, bias 0: RMS √½ whatever its width
    assert resets.expected_fresh_rms(_population(layernorm=True))["encoder.0.norm"] == pytest.approx(math.sqrt(0.5))


# ---------------------------------------------------------------------------------------------------------------
# at a shift
# ---------------------------------------------------------------------------------------------------------------


def test_apply_at_shift_leaves_the_population_untouched_and_repeats_with_a_seed():
    pop = _population()
    before = _snapshot(pop)
    first = resets.apply_at_shift(pop, "reset_all", seed=7)
    second = resets.apply_at_shift(pop, "reset_all", seed=7)
    for name, value in pop.params.items():
        assert torch.equal(value.detach(), before[name])
        assert torch.equal(first.params[name], second.params[name])
        assert not torch.equal(first.params[name], before[name])


def test_default_seed_does_not_redraw_the_initial_parameters():
    # A generator seeded with a member's own seed would re-draw exactly that member's θ₀.
    pop = _population(seeds=(0,))
    reset = resets.apply_at_shift(pop, "reset_all")
    for name, value in reset.params.items():
        assert not torch.equal(value, pop.initial_params[name]), name


def test_shrink_perturb_with_beta_one_is_a_reset():
    pop = _population()
    reset = resets.apply_at_shift(pop, "reset_all", seed=3)
    mixed = resets.apply_at_shift(pop, ShrinkPerturb(perturb=1.0), seed=3)
    for name in pop.params:
        assert torch.equal(reset.params[name], mixed.params[name]), name


def test_reset_final_redraws_only_the_heads():
    pop = _population()
    table = resets.at_shift_table(pop, ["reset_final"]).set_index("layer")
    assert table.loc["encoder.0.layer", "rms_change"] == 0 and table.loc["encoder.1.layer", "rms_change"] == 0
    assert table.loc["policy_head", "rms_change"] > 0 and table.loc["value_head", "rms_change"] > 0


def test_shrink_perturb_rms_follows_the_mixture_of_independent_draws():
    # θ ← ½θ + ½θ_fresh with θ_fresh independent of θ and of mean 0: RMS² ≈ ¼·RMS(θ)² + ¼·RMS(fresh)².
    pop = _population(seeds=(0, 1, 2))
    table = resets.at_shift_table(pop, ["shrink_perturb"]).set_index("layer")
    fresh = resets.expected_fresh_rms(pop)
    for layer in ("encoder.0.layer", "encoder.1.layer", "all"):
        before = table.loc[layer, "rms_before"]
        predicted = math.sqrt(0.25 * before**2 + 0.25 * fresh[layer] ** 2)
        assert table.loc[layer, "rms_after"] == pytest.approx(predicted, rel=0.01), layer


def test_warm_start_changes_nothing_and_injection_keeps_the_outputs_exactly():
    pop = _population()
    outputs = resets.at_shift_outputs(pop, ["warm_start", "injection", "reset_all"], _obs())
    for condition in ("warm_start", "injection"):
        row = outputs.loc[condition]
        assert row.max_logit_change == 0 and row.max_value_change == 0 and row.policy_tv == 0
    assert outputs.loc["warm_start", "params_after"] == outputs.loc["warm_start", "params_before"]
    assert outputs.loc["injection", "params_after"] - outputs.loc["injection", "params_before"] == 2 * HEAD_PARAMS
    assert outputs.loc["reset_all", "max_logit_change"] > 0 and 0 < outputs.loc["reset_all", "policy_tv"] < 1
    table = resets.at_shift_table(pop, ["injection"])
    assert (table["rms_change"] == 0).all()  # the effective head h + a − b is h


def test_injection_trains_the_original_head_and_its_copy_identically():
    # Both layers get the same gradient (∂L/∂W_h = ∂L/∂W_a) from a fresh AdamW, so they take the same steps.
    config = pl.RunConfig(condition="injection", seed=0, preset="smoke", rounds=2, epochs_per_round=1,
                          test_episodes=2)
    experiment = Experiment([config])
    experiment.train_epoch()
    before = _snapshot(experiment.population)
    with pytest.raises(ValueError, match="no injected head"):
        resets.injection_head_updates(experiment.population, before)
    experiment.train_epoch()  # the shift (injection), then one epoch of updates
    updates = resets.injection_head_updates(experiment.population, before)
    assert set(updates.index) == {"policy_head.weight", "policy_head.bias", "value_head.weight", "value_head.bias"}
    assert (updates["base_change"] > 1e-4).all()
    assert (updates["max_difference"] < 1e-5).all()
    assert np.allclose(updates["base_change"], updates["added_change"], rtol=1e-3)


# ---------------------------------------------------------------------------------------------------------------
# regularisers
# ---------------------------------------------------------------------------------------------------------------


def test_regulariser_terms_and_directions_by_hand():
    theta = torch.tensor([[3.0, 1.0, 2.0]])
    theta0 = torch.tensor([[0.0, 0.0, 1.0]])
    pset = regularisation.ParameterSet({"w": theta}, {"w": theta0})
    terms = regularisation.regulariser_terms(pset).iloc[0]
    assert terms.weight_norm == pytest.approx(math.sqrt(14))
    assert terms.l2_to_init == pytest.approx(math.sqrt(11))  # (3, 1, 1)
    assert terms.w2_to_init == pytest.approx(3.0)  # sorted: (1, 2, 3) − (0, 0, 1) = (1, 2, 2)
    d = regularisation.regulariser_directions(pset, coefs={"l2": 0.1, "regen_l2": 0.5, "regen_w2": 0.3})
    torch.testing.assert_close(d["l2"]["w"], -0.1 * theta)
    torch.testing.assert_close(d["regen_l2"]["w"], -0.5 * torch.tensor([[3.0, 1.0, 1.0]]) / math.sqrt(11))
    # each value is pulled toward the initial value of the same rank: 3 → 1, 1 → 0, 2 → 0
    torch.testing.assert_close(d["regen_w2"]["w"], -0.3 * torch.tensor([[2.0, 1.0, 2.0]]) / 3.0)
    with pytest.raises(ValueError, match="unknown regulariser"):
        regularisation.regulariser_directions(pset, coefs={"l1": 1.0})


def test_regenerative_directions_are_zero_not_nan_at_the_initial_parameters():
    theta0 = torch.tensor([[0.5, -1.0]])
    d = regularisation.regulariser_directions(regularisation.ParameterSet({"w": theta0}, {"w": theta0}))
    for name in ("regen_l2", "regen_w2"):
        assert torch.equal(d[name]["w"], torch.zeros_like(theta0)), name


def test_w2_is_blind_to_shuffling_values_within_a_tensor_but_l2_to_init_is_not():
    pop = _population()
    shuffled = regularisation.shuffle_within_tensors(pop.params, torch.Generator().manual_seed(7))
    for name, value in shuffled.items():  # the same values per tensor and member, elsewhere
        assert torch.equal(value.reshape(2, -1).sort(1).values, pop.params[name].detach().reshape(2, -1).sort(1).values)
    terms = regularisation.regulariser_terms(pop, shuffled)
    assert (terms["w2_to_init"] == 0).all()
    # independent values of mean 0: ‖θ − θ₀‖ ≈ √2·‖θ₀‖
    assert np.allclose(terms["l2_to_init"], math.sqrt(2) * terms["weight_norm"], rtol=0.02)


def test_scaling_the_weights_is_seen_by_both():
    pop = _population()
    grown = {k: 1.5 * v.detach() for k, v in pop.params.items()}
    terms = regularisation.regulariser_terms(pop, grown)
    norm0 = regularisation.regulariser_terms(pop)["weight_norm"]
    assert np.allclose(terms["l2_to_init"], 0.5 * norm0, rtol=1e-5)
    assert np.allclose(terms["w2_to_init"], 0.5 * norm0, rtol=1e-5)  # a positive scale keeps every value's rank


@pytest.mark.parametrize("spec", [{}, {"layernorm": True}])
@pytest.mark.parametrize("block", [0, 1])
def test_relabelling_units_keeps_the_function_and_the_w2_term(spec, block):
    pop = _population(**spec)
    perm = torch.randperm(256, generator=torch.Generator().manual_seed(1))
    relabelled = regularisation.relabel_units(pop, perm, block=block)
    obs = _obs().unsqueeze(0).expand(2, -1, -1)
    with torch.no_grad():
        logits, value, _ = pop.forward(obs)
        twin = resets.copy_population(pop)
        twin.params = relabelled
        new_logits, new_value, _ = twin.forward(obs)
    torch.testing.assert_close(new_logits, logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(new_value, value, rtol=0, atol=1e-5)
    terms = regularisation.regulariser_terms(pop, relabelled)
    assert (terms["w2_to_init"] == 0).all()
    assert (terms["l2_to_init"] > 0.5 * terms["weight_norm"]).all()
    with pytest.raises(ValueError, match="permutation"):
        regularisation.relabel_units(pop, torch.zeros(256, dtype=torch.long), block=block)


def test_regulariser_field_values_and_the_mirror_minimum():
    field = regularisation.regulariser_field(theta0=(0.5, -0.5), extent=1.0, points=5)
    assert len(field) == 3 * 25
    at = field.set_index(["regulariser", "x", "y"])
    assert at.loc[("l2", 1.0, -0.5), "value"] == pytest.approx(math.hypot(1.0, 0.5))
    assert at.loc[("regen_l2", 0.5, -0.5), "value"] == pytest.approx(0.0, abs=1e-6)
    assert at.loc[("regen_w2", 0.5, -0.5), "value"] == pytest.approx(0.0, abs=1e-6)
    # θ₀ with its two values swapped: far from θ₀, yet the same distribution of values
    assert at.loc[("regen_l2", -0.5, 0.5), "value"] == pytest.approx(math.sqrt(2))
    assert at.loc[("regen_w2", -0.5, 0.5), "value"] == pytest.approx(0.0, abs=1e-6)
    # regenerative L2 pulls with the same strength everywhere (coef), L2 in proportion to θ
    regen = at.loc["regen_l2"].drop(index=(0.5, -0.5))
    assert np.allclose(np.hypot(regen["dx"], regen["dy"]), 1e-2, rtol=1e-4)
    l2 = at.loc["l2"].reset_index()
    assert np.allclose(l2["dx"], -1e-3 * l2["x"]) and np.allclose(l2["dy"], -1e-3 * l2["y"])


# ---------------------------------------------------------------------------------------------------------------
# inputs, studies, figures
# ---------------------------------------------------------------------------------------------------------------


def test_random_walk_observations_apply_the_mapping():
    from plasticity_lab.shifts import permute_mapping

    raw = environment.random_walk_observations(range(10), steps=30, seed=2)
    mapping = permute_mapping(0, 2)
    mapped = environment.random_walk_observations(range(10), steps=30, seed=2, mapping=mapping)
    assert raw.shape == (30, 363)
    torch.testing.assert_close(mapped, raw[:, torch.as_tensor(mapping)])  # obs[i] = raw[mapping[i]]
    assert ((raw.reshape(30, 121, 3)[:, :, 0] == 1).sum(1) == 1).all()  # one agent cell in every observation


def test_load_study_is_none_until_a_population_is_stored(tmp_path):
    assert studies.load_study(tmp_path / "absent") is None
    (tmp_path / "empty").mkdir()
    assert studies.load_study(tmp_path / "empty") is None
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        studies.load_study(broken)


def test_condition_summary_figure_draws_the_means_over_seeds():
    runs = pd.DataFrame({"shift": ["permute"] * 4, "condition": ["a", "a", "b", "b"], "seed": [0, 1, 0, 1],
                         "normalised_train_return": [0.1, 0.3, -0.2, 0.0],
                         "normalised_test_return": [0.0, 0.2, 0.4, 0.6]})
    fig = comparisons.condition_summary_figure(runs, ["b", "a", "c"])
    bars = {(t.name, t.yaxis): t.y[0] for t in fig.data if t.type == "bar"}
    assert bars[("a", "y")] == pytest.approx(0.2) and bars[("b", "y")] == pytest.approx(-0.1)
    assert bars[("a", "y2")] == pytest.approx(0.1) and bars[("b", "y2")] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs column"):
        comparisons.condition_summary_figure(runs.drop(columns="seed"))


def test_output_change_sees_a_scaled_network_but_not_a_relabelled_one():
    pop = _population()
    obs = _obs()
    same = resets.output_change(pop, regularisation.relabel_units(pop, torch.arange(255, -1, -1)), obs)
    assert same.max_logit_change < 1e-5 and same.policy_tv < 1e-5
    grown = resets.output_change(pop, {k: 1.5 * v.detach() for k, v in pop.params.items()}, obs)
    assert grown.max_logit_change > 1e-3 and grown.policy_tv > 0
    with pytest.raises(ValueError, match="parameter names"):
        resets.output_change(pop, {"w": torch.zeros(2, 3)}, obs)


def _runs(values: dict[str, list[float]], shift="permute") -> pd.DataFrame:
    rows = [{"env": "gridworld", "shift": shift, "condition": c, "seed": s, "normalised_train_return": v,
             "normalised_test_return": -v} for c, vs in values.items() for s, v in enumerate(vs)]
    return pd.DataFrame(rows)


def test_describe_gaps_words_each_shift_and_split_as_the_numbers_say():
    tests = pd.DataFrame([
        {"shift": "permute", "condition": "warm_start", "split": "train", "mean": -0.2, "baseline_mean": 0.1,
         "p": 0.01},
        {"shift": "permute", "condition": "warm_start", "split": "test", "mean": 0.3, "baseline_mean": 0.1,
         "p": 0.2},
        {"shift": "expand", "condition": "warm_start", "split": "train", "mean": 0.5, "baseline_mean": -1.0,
         "p": 0.0004},
    ])
    text = studies.describe_gaps(tests)
    assert text.splitlines() == [
        "* *permute* — train: warm_start significantly below reset_all (-0.200 against +0.100, p = 0.010); "
        "test: warm_start above reset_all (+0.300 against +0.100, p = 0.200).",
        "* *expand* — train: warm_start significantly above reset_all (+0.500 against -1.000, p < 0.001).",
    ]
    # the level of significance is the caller's: at 0.005 the permute train gap is no longer significant
    assert "train: warm_start below reset_all" in studies.describe_gaps(tests, alpha=0.005)
    assert "warm_start above shrink" in studies.describe_gaps(tests, baseline="shrink")
    # one seed on a side: condition_ttests gives no p, and the words say why rather than "p = nan"
    one_seed = tests.iloc[:1].assign(p=float("nan"))
    assert studies.describe_gaps(one_seed) == ("* *permute* — train: warm_start below reset_all (-0.200 against "
                                               "+0.100, no t-test: too few seeds).")
    with pytest.raises(ValueError, match="missing: \\['p'\\]"):
        studies.describe_gaps(tests.drop(columns="p"))
    with pytest.raises(ValueError, match="alpha must lie in \\(0, 1\\); got 1.5"):
        studies.describe_gaps(tests, alpha=1.5)


def test_compare_conditions_and_tally_count_by_hand():
    runs = _runs({"warm_start": [0.0, 0.1, -0.1], "reset_all": [1.0, 1.1, 0.9], "x": [0.5, 0.6, 0.4]})
    table = stats.compare_conditions(runs, ["x", "warm_start"])
    # x vs warm_start, x vs reset_all, warm_start vs reset_all; two splits each
    assert len(table) == 6 and set(table["baseline"]) == {"warm_start", "reset_all"}
    row = table[(table.condition == "x") & (table.baseline == "warm_start") & (table.split == "train")].iloc[0]
    assert row["mean"] == pytest.approx(0.5) and row["baseline_mean"] == pytest.approx(0.0)
    assert row["t"] < 0  # higher than the baseline: negative t
    counts = stats.tally(table)
    # train: x (0.5) above warm-start (0.0), below reset-all (1.0); test: the signs flip. Every gap is 5 sd.
    assert counts.loc[("x", "warm_start")].to_dict() == {"comparisons": 2, "above": 1, "below": 1,
                                                          "significantly_above": 1, "significantly_below": 1}
    assert counts.loc[("warm_start", "reset_all"), "significantly_below"] == 1
    with pytest.raises(ValueError, match="baselines"):
        stats.compare_conditions(runs[runs.condition == "x"], ["x"])
