"""data/gridworld-preset-search/README.md holds no number typed by hand: it is what
scripts/preset_search_readme.py writes from the stored studies, and its results table says what the t-tests of
the stored results give, each value rounded once from full precision."""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "preset_search_readme.py"


def _script():
    spec = importlib.util.spec_from_file_location("preset_search_readme", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def values(script):
    absent = script.missing()
    if absent:
        pytest.skip(f"studies not stored in this checkout: {absent}")
    return script.measure()


def test_readme_is_what_the_stored_studies_give(script, values):
    fix = "run: python scripts/preset_search_readme.py (and edit scripts/preset_search_README.template.md, not the README)"
    assert script.README.read_text() == script.render(values), f"{script.README.relative_to(ROOT)} is stale; {fix}"


def test_results_table_matches_the_t_tests_of_the_stored_results(script, values):
    """Read the table back from the README and compare each value with the t-test of the stored results."""
    import plasticity_lab as pl
    from plasticity_lab import stats

    text = script.README.read_text()
    number = r"([−+]?\d+\.\d+)"
    cell = rf"{number} / {number}, t = {number}, \**p = {number}\**"
    rows = {int(m.group(1)): m.groups()[1:] for m in re.finditer(rf"^\| (\d+) \| {cell} \| {cell} \|", text, re.M)}
    assert sorted(rows) == [150, 200, 300, 500, 1000]
    for key, path in script.SEARCH.items():
        runs = pl.load_results(ROOT / path).runs("mean")
        runs = runs[(runs["shift"] == "permute") & runs["condition"].isin(["warm_start", "reset_all"])]
        tests = stats.condition_ttests(runs, baseline="reset_all").set_index("split")
        got = [float(x.replace("−", "-")) for x in rows[int(key[1:])]]
        for i, split in enumerate(("train", "test")):
            want = tests.loc[split, ["mean", "baseline_mean", "t", "p"]].to_numpy(float)
            for g, w, decimals in zip(got[4 * i:4 * i + 4], want, (3, 3, 2, 3)):
                assert g == round(w, decimals), (key, split, g, w)


def test_the_values_once_typed_twice_rounded_are_rounded_once(values):
    # −0.11548…, −0.04349…, −0.24248… were written −0.116, −0.044, −0.243 after rounding to 4 decimals first
    assert f"{values['e150'].test.warm:.3f}" == "-0.115"
    assert f"{values['e200'].train.reset:.3f}" == "-0.043"
    assert f"{values['rep200'].train.warm:.3f}" == "-0.242"


def test_formatting_a_value_rounds_it_once_and_writes_a_true_minus(script):
    fmt = script._fmt
    assert fmt("+.3f", -0.11548) == "−0.115" and fmt("+.3f", 0.0669) == "+0.067"
    assert fmt("p", 0.1339) == "0.134" and fmt("p", 0.00953) == "0.0095" and fmt("p", 0.0496) == "0.050"
    assert script._p(0.0343) == "**p = 0.034**" and script._p(0.051) == "p = 0.051"
    with pytest.raises(AssertionError, match="no longer show it"):
        script._claim(False, "something")
