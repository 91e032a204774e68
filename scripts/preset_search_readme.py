"""Write data/gridworld-preset-search/README.md from the stored studies, so that no number in it is typed by hand.

The prose is scripts/preset_search_README.template.md; each ``{name}`` in it is a value computed here from the
stored results (the t-tests of ``plasticity_lab.stats.condition_ttests`` on normalised reward, the same test on
raw round-mean returns, effect sizes and power from ``plasticity_lab.stats.ttest_power``, warm-start's diagnostics in
rounds 1 and 10, wall times from the manifests), formatted once from the full-precision value — never rounded twice. The
qualitative statements of the prose (which gap is significant where, which way effects go) are checked against the
same values, and the script stops with an error naming the statement if the data no longer support it.

    python scripts/preset_search_readme.py           # rewrite the README
    python scripts/preset_search_readme.py --check   # exit 1 if the README differs from what the studies give

tests/test_preset_search_readme.py runs the check.
"""

from __future__ import annotations

import argparse
import re
import string
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "scripts" / "preset_search_README.template.md"
README = ROOT / "data" / "gridworld-preset-search" / "README.md"

#: The search's rows (E, study folder) and the replicates of two of them in the book's grids.
SEARCH = {"e150": "data/gridworld-preset-search/epochs-150", "e200": "data/gridworld-preset-search/epochs-200",
          "e300": "data/gridworld-permute-warm-vs-reset", "e500": "data/gridworld-preset-search/epochs-500",
          "e1000": "data/gridworld-preset-search/epochs-1000"}
REPLICATES = {"rep200": "data/gridworld-book", "rep300": "data/gridworld-book-e300"}
SEEDS_5_9 = "data/gridworld-preset-search/epochs-300-seeds-5-9"
#: The power table's rows, in order: (key, label).
POWER_ROWS = [("e150", "150"), ("e200", "200"), ("e300", "300"),
              ("rep200", "200 (replicate in `../gridworld-book/`)"),
              ("rep300", "300 (replicate in `../gridworld-book-e300/`)"), ("e500", "500"), ("e1000", "1000")]
ALPHA = 0.05


def _comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of warm-start and reset-all under permute (a study may hold other shifts and conditions)."""
    return table[(table["shift"] == "permute") & table["condition"].isin(["warm_start", "reset_all"])]


def _tests(runs: pd.DataFrame) -> dict[str, SimpleNamespace]:
    """Per split: warm-start's and reset-all's mean normalised reward, t, p, Cohen's d, power, seeds for 80 %."""
    from plasticity_lab import stats as lab_stats  # `stats` is scipy's in this script

    tests = lab_stats.ttest_power(lab_stats.condition_ttests(runs, baseline="reset_all"))
    out = {}
    for row in tests.itertuples():
        out[row.split] = SimpleNamespace(warm=row.mean, reset=row.baseline_mean, t=row.t, p=row.p,
                                         d=row.effect_size, power=row.power, seeds=row.seeds_needed)
    return out


def _raw(rounds: pd.DataFrame) -> dict[str, SimpleNamespace]:
    """Per split: the same test on each seed's mean return over the epochs of rounds 2..R."""
    raw = rounds[rounds["round"] >= 2].groupby(["condition", "seed"])[["train_mean", "test_mean"]].mean()
    out = {}
    for split in ("train", "test"):
        warm, reset = raw.loc["warm_start", f"{split}_mean"], raw.loc["reset_all", f"{split}_mean"]
        test = stats.ttest_ind(reset, warm)
        out[f"raw_{split}"] = SimpleNamespace(warm=warm.mean(), reset=reset.mean(), t=test.statistic,
                                              p=test.pvalue)
    return out


def _hours(populations: list[dict]) -> str:
    """Wall time per condition, warm-start / reset-all (one number where both round alike)."""
    hours = {}
    for p in populations:
        conditions = {c["condition"] for c in p["configs"]}
        if len(conditions) == 1 and conditions <= {"warm_start", "reset_all"}:
            hours[conditions.pop()] = f"{p['wall_time_s'] / 3600:.2f}"
    warm, reset = hours["warm_start"], hours["reset_all"]
    return warm if warm == reset else f"{warm} / {reset}"


def _study(path: str, root: Path) -> SimpleNamespace:
    import plasticity_lab as pl

    results = pl.load_results(root / path)
    runs, rounds = _comparison(results.runs("mean")), _comparison(results.rounds)
    means = rounds.groupby(["condition", "round"])[["weight_magnitude", "dead_units"]].mean()
    last = int(rounds["round"].max())
    study = SimpleNamespace(**_tests(runs), **_raw(rounds), runs=runs, rounds=means, last=last,
                            hours=_hours(results.populations),
                            wm1=means.loc[("warm_start", 1), "weight_magnitude"],
                            wm10=means.loc[("warm_start", last), "weight_magnitude"],
                            du1=means.loc[("warm_start", 1), "dead_units"],
                            du10=means.loc[("warm_start", last), "dead_units"])
    study.agent_epochs = sum(c["rounds"] * c["epochs_per_round"] for c in results.configs
                             if c["shift"] == "permute" and c["condition"] in ("warm_start", "reset_all"))
    return study


def missing(root: Path = ROOT) -> list[str]:
    """The studies this README is computed from that are not stored under ``root``."""
    paths = [*SEARCH.values(), *REPLICATES.values(), SEEDS_5_9]
    return [p for p in paths if not (root / p / "manifest.json").exists()]


def _claim(holds: bool, statement: str) -> None:
    if not holds:
        raise AssertionError(f"the README's prose says {statement!r}, but the stored results no longer show it: "
                             f"edit {TEMPLATE.relative_to(ROOT)}")


def measure(root: Path = ROOT) -> dict:
    """Every value the template names, computed from the stored studies under ``root``; checks the prose's claims."""
    v: dict = {key: _study(path, root) for key, path in {**SEARCH, **REPLICATES}.items()}
    v["s59"] = s59 = _study(SEEDS_5_9, root)
    v["ten"] = SimpleNamespace(**_tests(pd.concat([v["e300"].runs, s59.runs])))
    search = [v[k] for k in SEARCH]
    v["agent_epochs"] = f"{sum(s.agent_epochs for s in search) + s59.agent_epochs:,}".replace(",", " ")
    growth = [s.wm10 / s.wm1 for s in search]
    v["wm_growth_low"], v["wm_growth_high"] = min(growth), max(growth)
    v["underpowered"] = sum(getattr(v[k], split).power < 0.5 for k, _ in POWER_ROWS for split in ("train", "test"))
    v["power_rows"] = 2 * len(POWER_ROWS)
    later = [v[k] for k in ("e200", "e300", "e500", "e1000")]
    v["raw_test_p_max"] = max(s.raw_test.p for s in later)
    v["results_table"] = _results_table(v)
    v["power_table"] = _power_table(v)

    # the prose's statements, checked
    for s in search:
        m = s.rounds
        separate = all(m.loc[("warm_start", r), c] > m.loc[("reset_all", r), c]
                       for r in range(2, s.last + 1) for c in ("weight_magnitude", "dead_units"))
        _claim(separate, "the diagnostics separate at every scale from round 2 on")
        for c in ("weight_magnitude", "dead_units"):
            reset1, reset_last = m.loc[("reset_all", 1), c], m.loc[("reset_all", s.last), c]
            _claim(abs(reset_last - reset1) < 0.05 * reset1, "reset-all's diagnostics stay near their round-1 values")
    _claim(all(s.du10 > s.du1 for s in search), "warm-start's dead-unit fraction has risen")
    e = {k: v[k] for k in (*SEARCH, *REPLICATES)}
    _claim(max(SEARCH, key=lambda k: v[k].test.d) in ("e200", "e300"), "the test gap is largest at E = 200 and 300")
    _claim(v["e200"].test.d > v["e500"].test.d > v["e1000"].test.d and v["e300"].test.d > v["e500"].test.d,
           "the test gap shrinks as the rounds get longer")
    _claim(v["e1000"].train.d < 0, "the training gap is reversed at E = 1000")
    _claim(v["ten"].test.p < ALPHA <= v["ten"].train.p, "pooled, the test gap is significant and the training gap not")
    _claim(v["ten"].test.d < v["e300"].test.d, "the E = 300 effect is smaller than its first five seeds suggested")
    _claim(v["e200"].test.p < ALPHA and v["e200"].raw_test.p < ALPHA, "E = 200 meets the criterion, raw test too")
    _claim(v["e150"].test.p >= ALPHA and v["e150"].train.p >= ALPHA and v["e150"].raw_test.p >= ALPHA,
           "at E = 150 neither gap is significant")
    _claim(all(v[k].test.warm < v[k].test.reset and v[k].test.p >= ALPHA for k in ("e300", "rep300", "e500", "e1000")),
           "above E = 200 the normalised test gap stays below zero but misses p < 0.05")
    _claim(v["raw_test_p_max"] < ALPHA, "the raw test gap is significant at every scale from 200 on")
    _claim(all(s.train.p >= ALPHA for s in search), "the training gap reaches significance at no scale of the search")
    _claim(v["rep200"].train.p < ALPHA <= v["rep200"].test.p, "in the E = 200 replicate the training gap is "
                                                             "significant and the test gap is not")
    _claim(all(s.raw_test.warm < s.raw_test.reset for s in e.values()),
           "warm-start's test return on unseen levels is lower at every scale")
    _claim(all(getattr(v[k], split).warm < getattr(v[k], split).reset for k in ("e200", "rep200")
               for split in ("train", "test")), "both E = 200 studies put warm-start below reset-all on both splits")
    return v


class _Formatter(string.Formatter):
    """``str.format`` with a true minus sign and a ``p`` format for p-values (3 decimals, or 2 significant digits
    below 0.01)."""

    def format_field(self, value, spec):
        if spec == "p":
            text = f"{value:.3f}" if value >= 0.01 else f"{value:.2g}"
        else:
            text = format(value, spec)
        return text.replace("-", "−") if isinstance(value, (int, float)) else text


def _fmt(spec: str, value) -> str:
    return _Formatter().format_field(value, spec)


def _p(value: float) -> str:
    text = f"p = {_fmt('p', value)}"
    return f"**{text}**" if value < ALPHA else text


def _results_table(v: dict) -> str:
    lines = ["| E | normalised train: warm / reset, t, p | normalised test: warm / reset, t, p | raw train p "
             "| raw test: warm / reset, p |", "|---|---|---|---|---|"]
    for key in SEARCH:
        s = v[key]
        cells = [key[1:]]
        for split in (s.train, s.test):
            cells.append(f"{_fmt('+.3f', split.warm)} / {_fmt('+.3f', split.reset)}, t = {_fmt('.2f', split.t)}, "
                         f"{_p(split.p)}")
        cells.append(_fmt("p", s.raw_train.p))
        cells.append(f"{_fmt('.3f', s.raw_test.warm)} / {_fmt('.3f', s.raw_test.reset)}, {_p(s.raw_test.p)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _power_table(v: dict) -> str:
    lines = ["| E | normalised train: d, power at 5 seeds, seeds for 80 % power | normalised test: d, power, seeds |",
             "|---|---|---|"]
    for key, label in POWER_ROWS:
        s = v[key]
        cells = [label] + [f"{_fmt('.2f', x.d)}, {_fmt('.2f', x.power)}, {_fmt('.0f', x.seeds)}"
                           for x in (s.train, s.test)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: Prose is wrapped to the project's line width once the values are in.
WIDTH = 115


def _wrap(text: str) -> str:
    """Re-wrap each prose paragraph (tables, headings and comments are left as they are)."""
    blocks = []
    for block in text.split("\n\n"):
        if block.lstrip().startswith(("|", "#", "<!--")):
            blocks.append(block)
        else:
            # "E = 200", "p = 0.034", "0.041 → 0.082" stay on one line
            joined = re.sub(r" (=|→) ", "\x00\\1\x00", " ".join(block.split()))
            wrapped = textwrap.fill(joined, WIDTH, break_long_words=False, break_on_hyphens=False)
            blocks.append(wrapped.replace("\x00", " "))
    return "\n\n".join(blocks).rstrip("\n") + "\n"


def render(values: dict, template: str | None = None) -> str:
    """The README's text: the template with every value filled in, its paragraphs re-wrapped."""
    template = TEMPLATE.read_text() if template is None else template
    return _wrap(_Formatter().vformat(template, (), values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare: exit 1 if the README differs")
    args = parser.parse_args(argv)
    absent = missing()
    if absent:
        print(f"preset_search_readme.py: studies not stored in this checkout: {absent}", file=sys.stderr)
        return 2
    text = render(measure())
    if args.check:
        if README.read_text() != text:
            print(f"{README.relative_to(ROOT)} differs from what the stored studies give; run "
                  f"python scripts/preset_search_readme.py", file=sys.stderr)
            return 1
        print(f"{README.relative_to(ROOT)} matches the stored studies")
        return 0
    README.write_text(text)
    print(f"wrote {README.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
