"""The paper's conclusions (PROTOCOL §7), each checked against a stored study with the paper's own test.

Juliani & Ash conclude, for the gridworld and CoinRun: plasticity loss appears under all three shifts with
warm-start; reset-final and plasticity injection can be worse than doing nothing; CReLU helps only sometimes;
LayerNorm alone helps training but not reliably test; the regenerative methods (L2, regenerative L2,
shrink+perturb, soft shrink+perturb) help consistently; soft shrink+perturb + LayerNorm is best overall.

:func:`check_claims` turns each sentence into a rule over two-sample t-tests of normalised reward (one run = one
seed's mean over rounds 2..R, PROTOCOL §6), per shift and split, and says whether the study **agrees**, agrees
**partly**, **disagrees**, or cannot tell (**not testable**: a condition it needs is missing, or none of its
t-tests can be computed — fewer than two seeds on a side, or no spread between seeds). A shift × split pair
without a t-test is left out of a rule and named in the evidence; a study trained in sittings holds such pairs
until its seeds are in. The rules:

* *loses plasticity*: warm-start below reset-all (the network that starts fresh every round), significantly, in
  at least one split of every shift. Some shifts only: partly.
* *can be worse than doing nothing*: below warm-start, significantly, in at least one shift × split. Below
  but never significantly: partly.
* *helps only sometimes*: significantly above warm-start in some but not all shift × split pairs.
* *helps training but not reliably test*: significantly above warm-start in train in most shifts, and not
  significantly above in test in at least one.
* *helps consistently*: above warm-start in every shift × split, significantly in most of them. Above in
  every pair but significantly in fewer: partly.
* *best overall*: the highest mean normalised reward over shifts and splits of all conditions in the study;
  partly when it is not the highest but no condition is significantly above it in any shift × split.

"Most" means more than half. The thresholds are ours: the paper states the conclusions in words.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pandas as pd

from .hypothesis import condition_ranking, condition_ttests

AGREES, PARTLY, DISAGREES, NOT_TESTABLE = "agrees", "partly", "disagrees", "not testable"
REGENERATIVE = ("l2", "regen_l2", "shrink_perturb", "soft_shrink_perturb")
ALL_SHIFTS = ("permute", "window", "expand")


@dataclass(frozen=True)
class Verdict:
    verdict: str
    evidence: str


@dataclass(frozen=True)
class Claim:
    """One conclusion of the paper: its words, the conditions its test needs, and the test."""

    name: str
    paper: str
    needs: tuple[str, ...]
    test: Callable[[pd.DataFrame, float], Verdict]


def _against(runs: pd.DataFrame, condition: str, baseline: str) -> pd.DataFrame:
    """The condition's t-tests against the baseline, one row per shift × split, with ``diff`` = condition −
    baseline mean (positive: the condition kept more of its reward)."""
    pair = runs[runs["condition"].isin([condition, baseline])]
    table = condition_ttests(pair, baseline=baseline)
    table = table[table["condition"] == condition].copy()
    table["diff"] = table["mean"] - table["baseline_mean"]
    return table.reset_index(drop=True)


def _where(table: pd.DataFrame, mask: pd.Series) -> str:
    pairs = [f"{r.shift}/{r.split}" for r in table[mask].itertuples()]
    return ", ".join(pairs) if pairs else "none"


def _pairs(table: pd.DataFrame) -> str:
    return "; ".join(f"{r.shift}/{r.split} {r.diff:+.3f} (p={r.p:.3g})" for r in table.itertuples())


def _untested(table: pd.DataFrame) -> str:
    """The evidence's note on the shift × split pairs that have no t-test (an empty string when every pair has
    one): fewer than two seeds on a side, or seeds that all read the same."""
    missing = table[table["p"].isna()]
    if missing.empty:
        return ""
    few = (missing["n"] < 2) | (missing["n_baseline"] < 2)
    reason = "too few seeds" if few.all() else "too few seeds or no spread between seeds" if few.any() \
        else "no spread between seeds"
    return f" No t-test in {_where(table, table['p'].isna())} ({reason})."


def _none_tested(table: pd.DataFrame, what: str) -> Verdict | None:
    """``not testable`` when none of ``table``'s pairs has a t-test (``what``: the difference it reports)."""
    if table["p"].notna().any():
        return None
    return Verdict(NOT_TESTABLE, f"{what}: {_pairs(table)}.{_untested(table)}")


def _loses_plasticity(runs, alpha):
    table = _against(runs, "warm_start", "reset_all")
    untestable = _none_tested(table, "warm-start − reset-all")
    if untestable:
        return untestable
    tested = table[table["p"].notna()]
    worse = (tested["diff"] < 0) & (tested["p"] < alpha)
    shifts = sorted(tested["shift"].unique())
    losing = sorted(tested.loc[worse, "shift"].unique())
    verdict = AGREES if losing == shifts else PARTLY if losing else DISAGREES
    absent = sorted(set(ALL_SHIFTS) - set(table["shift"]))
    note = f" Not in the study: {', '.join(absent)}." if absent else ""
    if len(shifts) < len(ALL_SHIFTS) and verdict == AGREES:  # "all three shifts", seen in fewer
        verdict = PARTLY
    counted = "shifts" if len(tested) == len(table) else "shifts with a t-test"
    return Verdict(verdict, f"warm-start − reset-all: {_pairs(table)}. Significantly below in "
                            f"{len(losing)} of {len(shifts)} {counted} ({', '.join(losing) or 'none'})."
                            f"{note}{_untested(table)}")


def _can_be_worse(condition: str):
    def test(runs, alpha):
        table = _against(runs, condition, "warm_start")
        untestable = _none_tested(table, f"{condition} − warm-start")
        if untestable:
            return untestable
        below = table["diff"] < 0
        significant = below & (table["p"] < alpha)
        verdict = AGREES if significant.any() else PARTLY if below.any() else DISAGREES
        return Verdict(verdict, f"{condition} − warm-start: {_pairs(table)}. Below in {_where(table, below)}; "
                                f"significantly in {_where(table, significant)}.{_untested(table)}")
    return test


def _helps_sometimes(condition: str):
    def test(runs, alpha):
        table = _against(runs, condition, "warm_start")
        untestable = _none_tested(table, f"{condition} − warm-start")
        if untestable:
            return untestable
        tested = table[table["p"].notna()]
        helped = (tested["diff"] > 0) & (tested["p"] < alpha)
        verdict = AGREES if 0 < helped.sum() < len(tested) else DISAGREES
        counted = "shift × split pairs" + ("" if len(tested) == len(table) else " with a t-test")
        return Verdict(verdict, f"{condition} − warm-start: {_pairs(table)}. Significantly above in "
                                f"{int(helped.sum())} of {len(tested)} {counted}.{_untested(table)}")
    return test


def _helps_train_not_test(condition: str):
    def test(runs, alpha):
        table = _against(runs, condition, "warm_start")
        untestable = _none_tested(table, f"{condition} − warm-start")
        if untestable:
            return untestable
        note = _untested(table)
        table = table[table["p"].notna()]
        helped = (table["diff"] > 0) & (table["p"] < alpha)
        train, test_ = table["split"] == "train", table["split"] == "test"
        train_helped, test_helped = int((helped & train).sum()), int((helped & test_).sum())
        helps_train = train_helped > train.sum() / 2
        test_unreliable = test_helped < test_.sum()
        verdict = AGREES if helps_train and test_unreliable else PARTLY if helps_train or test_unreliable \
            else DISAGREES
        return Verdict(verdict, f"{condition} − warm-start: {_pairs(table)}. Significantly above in train in "
                                f"{train_helped} of {int(train.sum())} shifts, in test in {test_helped} of "
                                f"{int(test_.sum())}.{note}")
    return test


def _helps_consistently(runs, alpha):
    held = set(runs["condition"])
    verdicts, notes = [], []
    for condition in [c for c in REGENERATIVE if c in held]:
        table = _against(runs, condition, "warm_start")
        if table["p"].isna().all():  # no t-test for this method: it says nothing either way
            notes.append(f"{condition}: not testable ({_untested(table).strip()})")
            continue
        table = table[table["p"].notna()]
        above = table["diff"] > 0
        significant = above & (table["p"] < alpha)
        if above.all() and significant.sum() > len(table) / 2:
            verdicts.append(AGREES)
        elif above.all() or significant.any():
            verdicts.append(PARTLY)
        else:
            verdicts.append(DISAGREES)
        notes.append(f"{condition}: above warm-start in {int(above.sum())} of {len(table)}, significantly in "
                     f"{int(significant.sum())} ({verdicts[-1]})")
    if not verdicts:
        return Verdict(NOT_TESTABLE, "; ".join(notes) + ".")
    verdict = AGREES if all(v == AGREES for v in verdicts) else \
        DISAGREES if all(v == DISAGREES for v in verdicts) else PARTLY
    absent = [c for c in REGENERATIVE if c not in held]
    if absent:  # a claim about four methods, tested on fewer, is at most partly confirmed
        verdict = PARTLY if verdict == AGREES else verdict
        notes.append(f"not in the study: {', '.join(absent)}")
    return Verdict(verdict, "; ".join(notes) + ".")


def _best_overall(condition: str):
    def test(runs, alpha):
        means = condition_ranking(runs).set_index("condition")["mean"]
        rank = list(means.index).index(condition) + 1
        beaten_by, tested = [], False
        for other in means.index:
            if other == condition:
                continue
            table = _against(runs, other, condition)
            tested = tested or table["p"].notna().any()
            if ((table["diff"] > 0) & (table["p"] < alpha)).any():
                beaten_by.append(other)
        verdict = AGREES if rank == 1 else PARTLY if not beaten_by else DISAGREES
        top = ", ".join(f"{c} {m:+.3f}" for c, m in means.head(3).items())
        if verdict == PARTLY and not tested:  # "no condition significantly above it" needs a t-test
            return Verdict(NOT_TESTABLE, f"rank {rank} of {len(means)} by mean normalised reward over shifts and "
                                         f"splits (top: {top}); no t-test against it could be computed (too few "
                                         f"seeds or no spread between seeds).")
        return Verdict(verdict, f"rank {rank} of {len(means)} by mean normalised reward over shifts and splits "
                                f"(top: {top}); significantly beaten in some shift × split by "
                                f"{', '.join(beaten_by) or 'no condition'}.")
    return test


CLAIMS: tuple[Claim, ...] = (
    Claim("warm-start loses plasticity", "Plasticity loss appears under all three shifts with warm-start.",
          ("warm_start", "reset_all"), _loses_plasticity),
    Claim("reset-final can hurt", "Reset-final can be worse than doing nothing.",
          ("warm_start", "reset_final"), _can_be_worse("reset_final")),
    Claim("injection can hurt", "Plasticity injection can be worse than doing nothing.",
          ("warm_start", "injection"), _can_be_worse("injection")),
    Claim("CReLU helps sometimes", "CReLU helps only sometimes.",
          ("warm_start", "crelu"), _helps_sometimes("crelu")),
    Claim("LayerNorm helps training", "LayerNorm alone helps training but not reliably test.",
          ("warm_start", "layernorm"), _helps_train_not_test("layernorm")),
    Claim("regenerative methods help", "The regenerative methods (L2, regenerative L2, S+P, soft S+P) help "
          "consistently.", ("warm_start", *REGENERATIVE), _helps_consistently),
    Claim("soft S+P + LayerNorm is best", "Soft shrink+perturb + LayerNorm is best overall.",
          ("soft_shrink_perturb+layernorm", "warm_start", "reset_all"), _best_overall("soft_shrink_perturb+layernorm")),
)


def check_claims(runs: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Each of the paper's conclusions against a study's run summary (a stored study's ``runs("mean")`` or
    :func:`~plasticity_lab.stats.run_summary`; one env). Columns: ``claim``, ``paper`` (its words),
    ``verdict`` (agrees / partly / disagrees / not testable) and ``evidence`` (the numbers behind it: mean
    differences in normalised reward with their p-values, per shift/split)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    if "env" in runs.columns and runs["env"].nunique() > 1:
        raise ValueError(f"check_claims takes one env at a time; the table has {sorted(runs['env'].unique())}")
    present = set(runs["condition"])
    rows = []
    for claim in CLAIMS:
        missing = [c for c in claim.needs if c not in present]
        if claim.name == "regenerative methods help" and "warm_start" in present:
            missing = [] if any(c in present for c in REGENERATIVE) else list(REGENERATIVE)
        if missing:
            result = Verdict(NOT_TESTABLE, f"the study has no {', '.join(missing)}")
        else:
            result = claim.test(runs, alpha)
        rows.append({"claim": claim.name, "paper": claim.paper, "verdict": result.verdict,
                     "evidence": result.evidence})
    return pd.DataFrame(rows)


def compare_claims(studies: Mapping[str, pd.DataFrame], alpha: float = 0.05) -> pd.DataFrame:
    """:func:`check_claims` for several studies side by side, e.g. the same grid at two round lengths: one row per
    claim, one column of verdicts per study (named by the mapping's keys), in the mapping's order."""
    if not studies:
        raise ValueError("compare_claims needs at least one study: a mapping of names to run summaries")
    columns = {name: check_claims(runs, alpha).set_index("claim")["verdict"] for name, runs in studies.items()}
    table = pd.DataFrame(columns)
    table.index.name = "claim"
    return table
