"""The study's statistics, on pandas tables only: read-outs and normalised reward, t-tests, effect sizes,
correlations and the GLM, bootstrap intervals, and the paper's conclusions checked.

This package implements the PROTOCOL's "Metrics" section (the normalised-reward rule) and its "Statistics" section
(t-tests against reset-all, diagnostic correlations, the Gaussian GLM), plus what this project adds beyond the paper.
It never imports torch, the network, PPO, the runner, the store or a plotting library: it reads the tables they
write, named by :mod:`plasticity_lab.schema` (``rliable``, when :func:`aggregate_ci` uses it, and ``statsmodels``
are imported when a statistic needs them).

Its input is the runner's tidy per-epoch table (one row per run and epoch: identity, ``round``, ``epoch``,
``epoch_in_round``, the returns and the diagnostics; :mod:`plasticity_lab.stats.readouts` says what it must hold), or
the tables a stored study keeps from it: one row per run x round (:func:`round_table`) and one per run
(:func:`run_summary`).

Two read-outs.  :func:`condition_ttests`, :func:`diagnostic_correlations`, :func:`diagnostics_glm` (and
:func:`analysis_points`, :func:`run_summary`) take ``readout=``:

* ``"project"`` (default) — this project's rules, each stated with its reason where it is applied: curves smoothed
  within a round before they are read, the sparse test curve forward-filled within its round, a run summarised
  over rounds 2..R (or at round R), diagnostics taken as levels (:mod:`plasticity_lab.stats.readouts`).
* ``"release"`` — the authors' public release (``analyze.ipynb`` with ``shared/plotting.py`` of
  github.com/awjuliani/deep-rl-plasticity) step by step, its quirks included: see :func:`release_readouts`,
  :func:`release_summary` and :func:`release_points` (:mod:`plasticity_lab.stats.release`).
  ``tests/test_readout_release.py`` checks it against numbers computed by an independent transcription of the
  release's steps (``tests/fixtures/make_release_readout.py``).

The modules, one job each:

* :mod:`~plasticity_lab.stats.tables` — the vocabulary of the arguments and the checks and groupings every
  statistic shares;
* :mod:`~plasticity_lab.stats.readouts` — the project's read-out: a curve read per round, normalised reward, a run
  summarised;
* :mod:`~plasticity_lab.stats.release` — the authors' release's read-out and summaries;
* :mod:`~plasticity_lab.stats.rounds` — the one run x round table, and the views read from it;
* :mod:`~plasticity_lab.stats.hypothesis` — t-tests against a baseline, their power, gaps across scales, the
  2 x 2 interaction, rankings of conditions;
* :mod:`~plasticity_lab.stats.effects` — Cohen's d, per round;
* :mod:`~plasticity_lab.stats.tallies` — conditions tested against warm-start and reset-all, and counted;
* :mod:`~plasticity_lab.stats.regression` — normalised reward against the diagnostics: correlations and the GLM;
* :mod:`~plasticity_lab.stats.intervals` — aggregate statistics with bootstrap confidence intervals;
* :mod:`~plasticity_lab.stats.claims` — the paper's conclusions, each checked with the paper's own test.

What a user calls is importable from ``plasticity_lab.stats`` itself (``__all__``); the modules' other public
names are the helpers they share.
"""

from ..schema import DIAGNOSTICS, SPLITS
from .claims import (
    AGREES,
    ALL_SHIFTS,
    CLAIMS,
    DISAGREES,
    NOT_TESTABLE,
    PARTLY,
    REGENERATIVE,
    Claim,
    Verdict,
    check_claims,
    compare_claims,
)
from .effects import cohens_d, cohens_d_by_round
from .hypothesis import (
    condition_ranking,
    condition_ttests,
    gap_by_scale,
    interaction_test,
    ranking_agreement,
    ttest_power,
)
from .intervals import STATISTICS, aggregate_ci, rliable_available
from .readouts import as_run_summary, normalised_reward, readout_defaults, round_readout, run_summary
from .regression import UNITS, analysis_points, diagnostic_correlations, diagnostics_glm
from .release import release_offset, release_points, release_readouts, release_summary
from .rounds import round_summary, round_table, rounds_summary
from .tables import ANALYSIS_CONDITIONS, AT_CHOICES, DEFAULT_BY, READOUTS
from .tallies import compare_conditions, tally

__all__ = [
    "AGREES",
    "ALL_SHIFTS",
    "ANALYSIS_CONDITIONS",
    "AT_CHOICES",
    "CLAIMS",
    "Claim",
    "DEFAULT_BY",
    "DIAGNOSTICS",
    "DISAGREES",
    "NOT_TESTABLE",
    "PARTLY",
    "READOUTS",
    "REGENERATIVE",
    "SPLITS",
    "STATISTICS",
    "UNITS",
    "Verdict",
    "aggregate_ci",
    "analysis_points",
    "as_run_summary",
    "check_claims",
    "cohens_d",
    "cohens_d_by_round",
    "compare_claims",
    "compare_conditions",
    "condition_ranking",
    "condition_ttests",
    "diagnostic_correlations",
    "diagnostics_glm",
    "gap_by_scale",
    "interaction_test",
    "normalised_reward",
    "ranking_agreement",
    "readout_defaults",
    "release_offset",
    "release_points",
    "release_readouts",
    "release_summary",
    "rliable_available",
    "round_readout",
    "round_summary",
    "round_table",
    "rounds_summary",
    "run_summary",
    "tally",
    "ttest_power",
]
