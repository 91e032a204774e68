"""The paper's conclusions, checked on synthetic run summaries whose verdicts are known by construction."""

import numpy as np
import pandas as pd
import pytest

from plasticity_lab.stats import AGREES, DISAGREES, NOT_TESTABLE, PARTLY, check_claims

SHIFTS = ("permute", "window", "expand")
TIGHT = np.array([-0.02, -0.01, 0.0, 0.01, 0.02])  # seed offsets: tiny spread, so differences are significant
WIDE = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])  # a spread that no difference below ~0.5 survives


def _runs(spec: dict) -> pd.DataFrame:
    """spec[condition] = (train mean, test mean, offsets) or a callable shift -> (train, test, offsets)."""
    rows = []
    for condition, value in spec.items():
        for shift in SHIFTS:
            train, test, offsets = value(shift) if callable(value) else value
            for seed, offset in enumerate(offsets):
                rows.append({"env": "gridworld", "shift": shift, "condition": condition, "seed": seed,
                             "normalised_train_return": train + offset, "normalised_test_return": test + offset})
    return pd.DataFrame(rows)


AGREEING = {
    "reset_all": (0.0, 0.0, TIGHT),
    "warm_start": (-0.5, -0.5, TIGHT),
    "reset_final": (-0.8, -0.8, TIGHT),
    "injection": (-0.55, -0.55, WIDE),  # below warm-start, but within the seeds' spread
    "crelu": lambda shift: (-0.2, -0.2, TIGHT) if shift == "permute" else (-0.5, -0.5, TIGHT),
    "layernorm": lambda shift: (-0.2, -0.5 if shift == "expand" else -0.3, TIGHT),
    "l2": (-0.1, -0.1, TIGHT),
    "regen_l2": (-0.1, -0.1, TIGHT),
    "shrink_perturb": (-0.1, -0.1, TIGHT),
    "soft_shrink_perturb": (-0.05, -0.05, TIGHT),
    "soft_shrink_perturb+layernorm": (0.1, 0.1, TIGHT),
}


def _verdicts(runs):
    table = check_claims(runs)
    return dict(zip(table["claim"], table["verdict"])), table


def test_a_study_built_to_agree_agrees_with_every_claim():
    verdicts, table = _verdicts(_runs(AGREEING))
    assert verdicts == {
        "warm-start loses plasticity": AGREES,
        "reset-final can hurt": AGREES,
        "injection can hurt": PARTLY,  # below warm-start everywhere, significantly nowhere
        "CReLU helps sometimes": AGREES,  # permute only: 2 of 6 pairs
        "LayerNorm helps training": AGREES,  # train helped in 3 of 3 shifts, test in 2 of 3
        "regenerative methods help": AGREES,
        "soft S+P + LayerNorm is best": AGREES,
    }
    evidence = dict(zip(table["claim"], table["evidence"]))
    # warm-start − reset-all = −0.5 in every pair (the offsets cancel in the means)
    assert evidence["warm-start loses plasticity"].count("-0.500") == 6
    assert "in train in 3 of 3 shifts, in test in 2 of 3" in evidence["LayerNorm helps training"]
    assert "rank 1 of 11" in evidence["soft S+P + LayerNorm is best"]


def test_a_study_built_to_disagree_disagrees():
    spec = dict(AGREEING)
    spec["warm_start"] = (0.0, 0.0, TIGHT)  # no loss against reset-all
    spec["reset_final"] = (0.2, 0.2, TIGHT)  # better than warm-start everywhere
    spec["crelu"] = (0.3, 0.3, TIGHT)  # helps everywhere: not "only sometimes"
    spec["layernorm"] = (-0.3, 0.3, TIGHT)  # hurts train, helps test
    spec["l2"] = spec["regen_l2"] = spec["shrink_perturb"] = spec["soft_shrink_perturb"] = (-0.4, -0.4, TIGHT)
    spec["soft_shrink_perturb+layernorm"] = (0.1, 0.1, TIGHT)  # below CReLU's 0.3, significantly
    verdicts, table = _verdicts(_runs(spec))
    assert verdicts["warm-start loses plasticity"] == DISAGREES
    assert verdicts["reset-final can hurt"] == DISAGREES
    assert verdicts["CReLU helps sometimes"] == DISAGREES
    assert verdicts["LayerNorm helps training"] == DISAGREES  # train hurt, test helped in every shift
    assert verdicts["regenerative methods help"] == DISAGREES
    assert verdicts["soft S+P + LayerNorm is best"] == DISAGREES
    assert "crelu" in dict(zip(table["claim"], table["evidence"]))["soft S+P + LayerNorm is best"]


def test_loss_in_some_shifts_only_is_partial():
    spec = {"reset_all": (0.0, 0.0, TIGHT),
            "warm_start": lambda shift: (-0.5, -0.5, TIGHT) if shift == "window" else (0.0, 0.0, TIGHT)}
    verdicts, table = _verdicts(_runs(spec))
    assert verdicts["warm-start loses plasticity"] == PARTLY
    assert "1 of 3 shifts (window)" in table.loc[0, "evidence"]


def test_claims_without_their_conditions_are_not_testable():
    verdicts, table = _verdicts(_runs({"warm_start": AGREEING["warm_start"], "l2": AGREEING["l2"]}))
    assert verdicts["warm-start loses plasticity"] == NOT_TESTABLE
    assert "reset_all" in table.loc[0, "evidence"]
    assert verdicts["soft S+P + LayerNorm is best"] == NOT_TESTABLE
    # one of the four regenerative methods, agreeing: at most partly confirmed
    assert verdicts["regenerative methods help"] == PARTLY


def test_bad_alpha_and_several_envs_are_refused():
    runs = _runs(AGREEING)
    with pytest.raises(ValueError, match="alpha=1.5"):
        check_claims(runs, alpha=1.5)
    two = pd.concat([runs, runs.assign(env="coinrun")])
    with pytest.raises(ValueError, match="one env at a time"):
        check_claims(two)


def test_loss_seen_in_one_shift_of_one_is_not_all_three():
    spec = {"reset_all": (0.0, 0.0, TIGHT), "warm_start": (-0.5, -0.5, TIGHT)}
    runs = _runs(spec)
    verdicts, table = _verdicts(runs[runs["shift"] == "permute"])
    assert verdicts["warm-start loses plasticity"] == PARTLY
    assert "Not in the study: expand, window" in table.loc[0, "evidence"]


def test_compare_claims_puts_each_studys_verdicts_side_by_side():
    from plasticity_lab.stats import compare_claims

    disagreeing = dict(AGREEING, warm_start=(0.0, 0.0, TIGHT))  # no loss against reset-all
    table = compare_claims({"long rounds": _runs(AGREEING), "short rounds": _runs(disagreeing)})
    assert list(table.columns) == ["long rounds", "short rounds"]
    assert table.loc["warm-start loses plasticity"].to_dict() == {"long rounds": AGREES, "short rounds": DISAGREES}
    assert table.loc["soft S+P + LayerNorm is best"].to_dict() == {"long rounds": AGREES, "short rounds": AGREES}
    with pytest.raises(ValueError, match="at least one study"):
        compare_claims({})


def test_pairs_without_a_t_test_are_left_out_and_a_claim_with_none_is_not_testable():
    """A study trained in sittings: one seed of a condition gives no t-test. A claim none of whose pairs has one
    cannot be judged (not "disagrees"); pairs without one are left out of the rule and named."""
    one_seed = np.array([0.0])
    # every condition with one seed: nothing can be tested, whatever the means say
    spec = {c: (mean, mean, one_seed) for c, mean in
            (("reset_all", 0.0), ("warm_start", -0.5), ("reset_final", -0.8), ("crelu", -0.2),
             ("layernorm", -0.2), ("l2", -0.1), ("soft_shrink_perturb+layernorm", -0.3))}
    verdicts, table = _verdicts(_runs(spec))
    assert verdicts == {claim: NOT_TESTABLE for claim in verdicts}
    evidence = dict(zip(table["claim"], table["evidence"]))
    assert "No t-test in expand/train, expand/test, permute/train, permute/test, window/train, window/test (too " \
           "few seeds)." in evidence["warm-start loses plasticity"]
    assert "l2: not testable (No t-test in" in evidence["regenerative methods help"]
    assert "no t-test against it could be computed" in evidence["soft S+P + LayerNorm is best"]
    # five seeds under permute, one under window and expand: the loss is judged on permute alone, and as one shift
    # of three it is partial, with the shifts that could not be tested named
    spec = {"reset_all": lambda shift: (0.0, 0.0, TIGHT if shift == "permute" else one_seed),
            "warm_start": lambda shift: (-0.5, -0.5, TIGHT if shift == "permute" else one_seed)}
    verdicts, table = _verdicts(_runs(spec))
    assert verdicts["warm-start loses plasticity"] == PARTLY
    assert "Significantly below in 1 of 1 shifts with a t-test (permute)." in table.loc[0, "evidence"]
    assert "No t-test in expand/train, expand/test, window/train, window/test (too few seeds)." \
        in table.loc[0, "evidence"]
    # seeds that all read the same give no t-test either, and the evidence says why
    flat = np.zeros(5)
    verdicts, table = _verdicts(_runs({"reset_all": (0.0, 0.0, flat), "warm_start": (0.0, 0.0, flat)}))
    assert verdicts["warm-start loses plasticity"] == NOT_TESTABLE
    assert "(no spread between seeds)" in table.loc[0, "evidence"]
