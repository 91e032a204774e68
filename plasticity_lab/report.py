"""The paper's tables for a stored study, as text: normalised reward, t-tests against reset-all, the paper's
conclusions checked one by one (PROTOCOL §7), per-diagnostic correlations and the GLM (PROTOCOL §6) — and,
beyond the paper, the power of each t-test, interquartile means with stratified bootstrap intervals per condition
and the test of soft shrink+perturb's and LayerNorm's interaction.
``plasticity-lab report data/<study>`` prints :func:`report`; ``--readout release`` computes every table from the
authors' release's read-outs instead of the project's (:mod:`plasticity_lab.stats`, ``readout=``)."""

from __future__ import annotations

import pandas as pd

from . import stats
from .stats import check_claims, compare_claims
from .results import Results, load_results

_SPLITS = ("train", "test")
#: How the release's tables say what they summarise (the project's say at=...).
_RELEASE_HOW = "the release's read-out"


def runs_table(results: Results, at: str = "mean", readout: str = "project") -> pd.DataFrame:
    """One row per run of a stored study, as the t-tests take it: the stored ``runs(at)`` for the project's
    read-out; for the release's, :func:`~plasticity_lab.stats.release_summary` of the stored per-round table
    (the release's read-outs are kept there, computed from every epoch, in studies stored since they were added)."""
    if readout not in stats.READOUTS:
        raise ValueError(f"unknown readout={readout!r}; valid values are {stats.READOUTS!r}")
    if readout == "project":
        return results.runs(at)
    _check_release_readouts(results)
    return stats.release_summary(results.rounds)


def _check_release_readouts(results: Results) -> None:
    """One clear error where a study was stored without the release's read-outs in its rounds table."""
    missing = [c for c in ("train_release_readout", "test_release_readout") if c not in results.rounds.columns]
    if missing:
        raise ValueError(f"study {results.path.name} was stored without the release's read-outs (its rounds table "
                         f"lacks {missing}), so readout='release' cannot be computed for it; studies stored by "
                         f"this version of plasticity-lab have them")


def reward_table(results: Results, at: str = "mean", readout: str = "project") -> pd.DataFrame:
    """Normalised reward per env × shift × condition: mean and std over seeds, train and test."""
    runs = runs_table(results, at, readout)
    keys = [k for k in ("env", "shift", "condition") if k in runs.columns]
    grouped = runs.groupby(keys)
    out = grouped.size().rename("seeds").to_frame()
    for split in _SPLITS:
        column = f"normalised_{split}_return"
        out[f"{split} mean"] = grouped[column].mean()
        out[f"{split} std"] = grouped[column].std(ddof=1)
    return out.reset_index()


def interval_table(results: Results, at: str = "mean", reps: int = 2000, seed: int = 0,
                   readout: str = "project") -> pd.DataFrame:
    """Per env × condition, the interquartile mean of each run's normalised reward (train and test) over all of its
    runs, with a 95 % bootstrap interval that resamples runs within each shift
    (:func:`~plasticity_lab.stats.aggregate_ci` with ``strata="shift"``)."""
    runs = runs_table(results, at, readout)
    tables = []
    for env, part in runs.groupby("env", sort=True) if "env" in runs.columns else [(None, runs)]:
        strata = "shift" if "shift" in part.columns and part["shift"].nunique() > 1 else None
        merged = None
        for split in _SPLITS:
            ci = stats.aggregate_ci(part, value=f"normalised_{split}_return", reps=reps, seed=seed,
                                       strata=strata)
            ci = ci.rename(columns={"estimate": f"{split} IQM", "ci_low": f"{split} low",
                                    "ci_high": f"{split} high"})[["condition", "n", f"{split} IQM",
                                                                   f"{split} low", f"{split} high"]]
            merged = ci if merged is None else merged.merge(ci.drop(columns="n"), on="condition")
        tables.append(merged.assign(env=env) if env is not None else merged)
    out = pd.concat(tables, ignore_index=True)
    first = ["env"] if "env" in out.columns else []
    return out[first + [c for c in out.columns if c not in first]].rename(columns={"n": "runs"})


def _fit_conditions(runs: pd.DataFrame) -> list[str]:
    """The conditions a fit reads: the paper's nine analysis conditions where the study has them (in the release's
    order, which its correlation's weighting depends on), and every condition otherwise (e.g. a coefficient sweep)."""
    present = sorted(runs["condition"].unique())
    return [c for c in stats.ANALYSIS_CONDITIONS if c in present] or present


def claims_both_ways(results: Results, alpha: float = 0.05) -> pd.DataFrame:
    """The paper's conclusions (:func:`~plasticity_lab.stats.check_claims`) against a stored study read both ways:
    one row per claim, a column of verdicts per read-out — ``project`` (each run's smoothed mean over rounds 2..R)
    and ``release`` (the authors' release's per-seed value, :func:`~plasticity_lab.stats.release_summary`).

    The two differ in what a run's number is, not in the rule that turns t-tests into a verdict, so where the
    columns disagree the verdict hangs on how the runs are read out. One env at a time, as ``check_claims``; the
    study must hold the release's read-outs (studies stored since they were added)."""
    return compare_claims({readout: runs_table(results, "mean", readout) for readout in stats.READOUTS}, alpha)


def diagnostics_both_ways(results: Results, fit_at: str = "final") -> pd.DataFrame:
    """Which diagnostics predict normalised reward in a stored study, read the project's way and the release's:
    the paper's headline (weight magnitude and dead units significant) under each.

    One row per split × diagnostic, over the shift × condition points of the paper's nine analysis conditions
    (every condition where the study has none of them): for each read-out the correlation's ``r`` and ``p``
    (:func:`~plasticity_lab.stats.diagnostic_correlations`) and the GLM coefficient's ``p``
    (:func:`~plasticity_lab.stats.diagnostics_glm`; NaN where the points are too few for the GLM's six terms).
    Columns ``r project, p project, GLM p project`` and the same for ``release``. The project reads diagnostics as
    levels ``fit_at`` (default the last round, the paper's "after ten rounds"); the release subtracts each
    diagnostic's round-1 read-out and averages its rounds its own way (:func:`~plasticity_lab.stats.release_points`).
    """
    runs = results.runs(fit_at)
    conditions = _fit_conditions(runs)
    _check_release_readouts(results)
    sources = {"project": (runs, {"at": fit_at}), "release": (results.rounds, {"readout": "release"})}
    frames = []
    for split in _SPLITS:
        parts = []
        for readout, (source, kwargs) in sources.items():
            fits = stats.diagnostic_correlations(source, split=split, conditions=conditions, **kwargs)
            part = fits.set_index("diagnostic")[["r", "p"]].rename(columns=lambda c: f"{c} {readout}")
            try:
                glm = stats.diagnostics_glm(source, split=split, conditions=conditions, **kwargs)
                part[f"GLM p {readout}"] = glm["p"].reindex(part.index)
            except ValueError:  # too few points for the GLM's terms
                part[f"GLM p {readout}"] = float("nan")
            parts.append(part)
        frames.append(pd.concat(parts, axis=1).assign(split=split).reset_index())
    out = pd.concat(frames, ignore_index=True).set_index(["split", "diagnostic"])
    out.attrs.update(fit_at=fit_at, conditions=conditions)
    return out


def _section(title: str, body: str) -> str:
    return f"\n## {title}\n\n{body}\n"


def _safe(build) -> str:
    try:
        table = build()
    except ValueError as error:  # too few points or conditions for this statistic: say so, go on
        return f"(not computed: {error})"
    if "n_points" in table.columns and (table["n_points"] < 3).all():
        return f"(not computed: a fit needs at least 3 shift × condition points; the study has {table['n_points'].max()})"
    return table.to_string(float_format=lambda x: f"{x:.4g}")


def _claims_text(runs: pd.DataFrame) -> str:
    lines = []
    for row in check_claims(runs).itertuples():
        lines.append(f"- [{row.verdict}] {row.paper}\n    {row.evidence}")
    return "\n".join(lines)


def comparison_table(results: Results, other: Results, at: str = "mean",
                     readout: str = "project") -> tuple[pd.DataFrame, dict]:
    """Two studies over the conditions both hold: per condition, its mean normalised reward (train and test pooled)
    and rank in each study, and each of the paper's claims' verdict in each (:func:`~plasticity_lab.stats.
    compare_claims`); with :func:`~plasticity_lab.stats.ranking_agreement` of the two orders.

    Returns ``(ranks, agreement)``: ``ranks`` has one row per shared condition (its mean and rank in each study,
    the columns suffixed by the studies' names: their folder names, or "first" and "second" where those are the
    same); ``agreement`` is ``ranking_agreement``'s dict plus ``"names"``, ``"claims"`` (the verdicts table) and
    ``"rankings"`` (each study's :func:`~plasticity_lab.stats.condition_ranking` over the shared conditions, as
    :func:`~plasticity_lab.figures.comparisons.ranking_comparison_figure` takes them)."""
    first, second = runs_table(results, at, readout), runs_table(other, at, readout)
    shared = sorted(set(first["condition"]) & set(second["condition"]))
    if len(shared) < 3:
        raise ValueError(f"a comparison needs at least 3 conditions in both studies; shared: {shared}")
    first, second = first[first["condition"].isin(shared)], second[second["condition"].isin(shared)]
    names = (results.path.name, other.path.name) if results.path.name != other.path.name else ("first", "second")
    rankings = (stats.condition_ranking(first), stats.condition_ranking(second))
    ranks = rankings[0].merge(rankings[1], on="condition", suffixes=(f" {names[0]}", f" {names[1]}"))
    ranks = ranks.drop(columns=[c for c in ranks.columns if c.startswith("runs")])
    return ranks, {**stats.ranking_agreement(first, second), "names": names, "rankings": rankings,
                   "claims": compare_claims(dict(zip(names, (first, second))))}


def _comparison_text(results: Results, other: Results, at: str, readout: str) -> str:
    try:
        ranks, agreement = comparison_table(results, other, at, readout)
    except ValueError as error:
        return f"(not computed: {error})"
    p = agreement["p"]
    return "\n\n".join([
        ranks.to_string(index=False, float_format=lambda x: f"{x:+.3f}"),
        f"Kendall's tau between the two orders of {agreement['conditions']} conditions: {agreement['tau']:+.2f} "
        f"(p {'< 0.001' if p < 0.001 else f'= {p:.3f}'}; 1 = the same order)",
        "The paper's conclusions over these conditions:\n" + agreement["claims"].to_string()])


def report(study: str | Results, at: str | None = None, fit_at: str | None = None, baseline: str = "reset_all",
           against: str | Results | None = None, readout: str = "project") -> str:
    """The report of a stored study (a path or loaded :class:`~plasticity_lab.results.Results`).

    ``against`` (another stored study, e.g. the same grid at another round length) adds a section comparing the
    two over the conditions both hold (:func:`comparison_table`).

    The fits use the paper's nine analysis conditions where the study has them (in the release's order, which its
    correlation's weighting depends on), and every condition otherwise.

    ``readout="project"`` (default): ``at`` summarises each run for the reward table, the t-tests and the rest
    (default ``"mean"``, the mean over rounds 2..R; or ``"final"``); ``fit_at`` for the correlations and the GLM
    (default ``"final"``, the paper's "after ten rounds").  ``readout="release"``: every table from the authors'
    release's read-outs (:func:`~plasticity_lab.stats.release_summary` for the per-run tables and the t-tests,
    :func:`~plasticity_lab.stats.release_points` for the fits), which have one summary each, so ``at`` and
    ``fit_at`` must be left out (or ``"mean"``); the study must have been stored with the release's read-outs.

    A Montezuma's Revenge study, which has no rounds, gets :func:`montezuma_report` (its baseline: ``warm_start``).
    """
    given = (at, fit_at)  # as asked for, before the defaults below
    if readout not in stats.READOUTS:
        raise ValueError(f"unknown readout={readout!r}; valid values are {stats.READOUTS!r}")
    if readout == "release":
        for name, value in (("at", at), ("fit_at", fit_at)):
            if value not in (None, "mean"):
                raise ValueError(f"readout='release' summarises runs only the release's way (its own mean over "
                                 f"rounds); {name}={value!r} does not apply: leave it out")
        at = fit_at = "mean"
    at = "mean" if at is None else at
    fit_at = "final" if fit_at is None else fit_at
    for name, value in (("at", at), ("fit_at", fit_at)):
        if value not in stats.AT_CHOICES:
            raise ValueError(f"unknown {name}={value!r}; valid: {', '.join(stats.AT_CHOICES)}")
    results = study if isinstance(study, Results) else load_results(study)
    if {c.get("env") for c in results.configs} == {"montezuma"}:
        if against is not None or readout != "project" or given != (None, None):
            raise ValueError("a Montezuma's Revenge study has no rounds to read out or fit: its report takes none "
                             "of at, fit_at, against or readout")
        return montezuma_report(results, baseline="warm_start" if baseline == "reset_all" else baseline)
    release = readout == "release"
    runs = runs_table(results, at, readout)
    fit_runs = runs if release else results.runs(fit_at)
    how, fit_how = (_RELEASE_HOW, _RELEASE_HOW) if release else (f"at={at}", f"at={fit_at}")
    fit_conditions = _fit_conditions(fit_runs)
    text = [f"# {results.describe()}",
            f"{_runs_held(results, runs)}; conditions: {', '.join(sorted(runs['condition'].unique()))}",
            f"read-out: {readout}" + (" (the authors' release, step by step, quirks included: "
                                      "plasticity_lab.stats.release_summary / release_points)" if release else
                                      " (this project's: smoothed read-outs, see plasticity_lab.stats)")]
    wall = results.manifest.get("wall_time_s")
    if wall is not None:
        text.append(f"training wall time: {wall / 3600:.2f} h")
    text.append(_section(f"Normalised reward ({how}; negative = plasticity lost)",
                         _safe(lambda: reward_table(results, at, readout))))
    text.append(_section(f"t-tests against {baseline} ({how}; negative t = better than {baseline}); beyond the "
                         "paper, each gap's effect size d, the test's power against an effect that large and the "
                         "seeds per condition for 80 % power",
                         _safe(lambda: stats.ttest_power(
                             stats.condition_ttests(runs, baseline=baseline, at=at, readout=readout)))))
    for env in sorted(runs["env"].unique()):
        text.append(_section(f"The paper's conclusions (PROTOCOL §7) against this study ({env}, {how})",
                             _claims_text(runs[runs["env"] == env])))
    text.append(_section(f"Beyond the paper: interquartile mean of normalised reward per condition, 95 % bootstrap "
                         f"interval resampling runs within each shift ({how})",
                         _safe(lambda: interval_table(results, at, readout=readout))))
    text.append(_section(f"Beyond the paper: soft shrink+perturb and LayerNorm apart and together, mean normalised "
                         f"reward and the interaction's test (positive = better than the two gains added; {how})",
                         _safe(lambda: stats.interaction_test(runs, at=at))))
    if against is not None:
        other = against if isinstance(against, Results) else load_results(against)
        text.append(_section(f"Against {other.describe()}: mean normalised reward over shifts and splits, its rank, "
                             f"and the verdicts ({how}; the conditions both studies hold)",
                             _comparison_text(results, other, at, readout)))
    # the release's fits read its per-round read-outs (its weighting needs them); the project's, the run summary
    fit_source = results.rounds if release else fit_runs
    fit_kwargs = {"readout": "release"} if release else {"at": fit_at}
    for split in _SPLITS:
        text.append(_section(f"Correlations of normalised {split} reward with each diagnostic ({fit_how}, "
                             "shift × condition means)",
                             _safe(lambda s=split: stats.diagnostic_correlations(
                                 fit_source, split=s, conditions=fit_conditions, **fit_kwargs))))
    for split in _SPLITS:
        for env in sorted(fit_runs["env"].unique()):
            text.append(_section(f"GLM of normalised {split} reward on the diagnostics ({env}, {fit_how})",
                                 _safe(lambda s=split, e=env: stats.diagnostics_glm(
                                     fit_source, split=s, env=e, conditions=fit_conditions, **fit_kwargs))))
    if "train_release_readout" in results.rounds.columns and runs["env"].nunique() == 1:
        both_at = "final" if release else fit_at  # the release's own report fixes fit_at to its mean
        text.append(_section("Read both ways: the paper's conclusions, the project's read-out beside the release's",
                             _safe(lambda: claims_both_ways(results))))
        text.append(_section(f"Read both ways: each diagnostic's correlation with normalised reward and its GLM p "
                             f"(project at={both_at}; release its own mean)",
                             _safe(lambda: diagnostics_both_ways(results, both_at))))
    return "\n".join(text)


#: What :func:`montezuma_report` summarises per run: the stored ``rounds`` table's score and rooms, and the
#: ``runs_final`` table's diagnostics (their means over the last tenth of the iterations).
MONTEZUMA_SCORES = ("mean_score", "best_score", "rooms_visited")
MONTEZUMA_FINAL = ("intrinsic_reward", "dead_units", "weight_magnitude", "weight_difference")


def montezuma_tests(per_run: pd.DataFrame, column: str, baseline: str = "warm_start") -> pd.DataFrame:
    """Two-sample t-tests (pooled variance, as the paper's) of ``column`` of each condition's runs against
    ``baseline``'s: ``condition, n, mean, baseline_mean, t, p`` (positive ``t``: the condition's mean above the
    baseline's; NaN where a side has fewer than two runs or both have no spread)."""
    from scipy import stats as scipy_stats

    present = sorted(per_run["condition"].unique())
    if baseline not in present or len(present) < 2:
        raise ValueError(f"the t-tests need {baseline} and another condition; the study holds {', '.join(present)}")
    base = per_run.loc[per_run["condition"] == baseline, column].dropna()
    rows = []
    for condition, part in per_run.groupby("condition", sort=True):
        if condition == baseline:
            continue
        values = part[column].dropna()
        t, p = (scipy_stats.ttest_ind(values, base) if len(values) > 1 and len(base) > 1
                and (values.std() > 0 or base.std() > 0) else (float("nan"), float("nan")))
        rows.append({"condition": condition, "n": len(values), "mean": values.mean(),
                     "baseline_mean": base.mean(), "t": float(t), "p": float(p)})
    return pd.DataFrame(rows)


def _runs_held(results: Results, runs: pd.DataFrame) -> str:
    """How many runs the report reads, and, for a study still being trained, how many its sweep computes and which
    conditions are still wholly missing."""
    planned = results.planned_labels
    if planned is None or len(runs) >= len(planned):
        return f"{len(runs)} runs"
    held = set(runs["condition"])
    missing = [c for c in dict.fromkeys(planned) if c not in held]
    return (f"{len(runs)} of the {len(planned)} runs its sweep computes (still being trained"
            + (f"; no run yet of {', '.join(missing)})" if missing else ")"))


def montezuma_report(results: Results, baseline: str = "warm_start") -> str:
    """The report of a stored Montezuma's Revenge study: per condition, the mean (± std over seeds) of each run's
    mean score, best iteration's score and rooms reached, and of the diagnostics over its last tenth; the t-tests
    of the mean score and of the last tenth's dead units against ``baseline`` (the paper compares the
    interventions with the RND baseline by the score)."""
    per_run = results.rounds[["condition", "seed", *MONTEZUMA_SCORES]].merge(
        results.runs("final")[["condition", "seed", *MONTEZUMA_FINAL]], on=["condition", "seed"])
    columns = [*MONTEZUMA_SCORES, *MONTEZUMA_FINAL]
    grouped = per_run.groupby("condition")[columns]
    summary = grouped.mean().round(6).astype(str) + " ± " + grouped.std(ddof=1).round(6).astype(str)
    summary.insert(0, "seeds", per_run.groupby("condition")["seed"].nunique())
    text = [f"# {results.describe()}",
            f"{_runs_held(results, per_run)}; conditions: {', '.join(sorted(per_run['condition'].unique()))}"]
    wall = results.manifest.get("wall_time_s")
    if wall is not None:
        text.append(f"training wall time: {wall / 3600:.2f} h")
    text.append(_section("Per condition, mean ± std over seeds: each run's mean score (episodes that ended), best "
                         "iteration's score, rooms reached; the diagnostics over its last tenth of iterations",
                         summary.to_string()))
    for column in ("mean_score", "dead_units"):
        text.append(_section(f"t-tests of each run's {column} against {baseline} (pooled variance)",
                             _safe(lambda c=column: montezuma_tests(per_run, c, baseline))))
    return "\n".join(text)
