"""``studies.substitute_condition``: one condition's runs taken from another study, checked by hand-built tables."""

import pandas as pd
import pytest

from plasticity_lab import stats
from plasticity_lab.figures import studies


def _runs(condition, values, shifts=("permute", "window"), seeds=(0, 1)):
    rows = []
    it = iter(values)
    for shift in shifts:
        for seed in seeds:
            rows.append({"env": "gridworld", "shift": shift, "condition": condition, "seed": seed,
                         "normalised_train_return": next(it), "normalised_test_return": 0.0})
    return pd.DataFrame(rows)


def test_the_replacement_takes_the_conditions_place_and_nothing_else_changes():
    base = pd.concat([_runs("warm_start", [0, 1, 2, 3]), _runs("regen_l2", [10, 11, 12, 13])], ignore_index=True)
    other = _runs("regen_l2[coef=0.0001]", [20, 21, 22, 23])
    swapped = studies.substitute_condition(base, other, "regen_l2")
    assert list(swapped.columns) == list(base.columns)
    assert sorted(swapped["condition"].unique()) == ["regen_l2", "warm_start"]
    regen = swapped[swapped["condition"] == "regen_l2"].sort_values(["shift", "seed"])
    assert list(regen["normalised_train_return"]) == [20, 21, 22, 23]
    warm = swapped[swapped["condition"] == "warm_start"].sort_values(["shift", "seed"])
    assert list(warm["normalised_train_return"]) == [0, 1, 2, 3]
    assert list(base.loc[base["condition"] == "regen_l2", "normalised_train_return"]) == [10, 11, 12, 13]  # untouched


def test_statistics_read_the_replacement():
    base = pd.concat([_runs("warm_start", [0.0, 0.1, 0.2, 0.3]), _runs("regen_l2", [0.0, 0.1, 0.2, 0.3])],
                     ignore_index=True)
    swapped = studies.substitute_condition(base, _runs("regen_l2[coef=0.0001]", [1.0, 1.1, 1.2, 1.3]), "regen_l2")
    before = stats.condition_ttests(base, baseline="warm_start")
    after = stats.condition_ttests(swapped, baseline="warm_start")

    def train(table):
        rows = table[(table["split"] == "train") & (table["condition"] == "regen_l2")]
        return rows.set_index("shift")["t"]

    assert (train(before).abs() < 1e-9).all()  # identical samples
    assert (train(after) < -5).all()  # the replacement is higher by 1.0 with the same spread: t = -1/0.0707


@pytest.mark.parametrize("replacement, condition, message", [
    (pd.concat([_runs("a", [0] * 4), _runs("b", [0] * 4)]), "regen_l2", r"exactly one condition; it holds \['a', 'b'\]"),
    (_runs("x", [0] * 4), "l2", "condition 'l2' is not in the runs"),
    (_runs("x", [0] * 2, shifts=("permute",)), "regen_l2", r"only in the runs \[\('gridworld', 'window', 0\)"),
    (_runs("x", [0] * 6, seeds=(0, 1, 2)), "regen_l2", r"only in the replacement \[\('gridworld', 'permute', 2\)"),
])
def test_a_replacement_that_does_not_match_is_one_clear_error(replacement, condition, message):
    base = pd.concat([_runs("warm_start", [0] * 4), _runs("regen_l2", [0] * 4)], ignore_index=True)
    with pytest.raises(ValueError, match=message):
        studies.substitute_condition(base, replacement, condition)
