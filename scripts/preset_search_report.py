"""The search for the `book` preset (data/gridworld-preset-search/README.md): warm-start vs reset-all under
permute, 5 seeds, 10 rounds, at each epochs-per-round E measured so far. Prints, per E, the paper's t-tests on
normalised reward (mean over rounds 2..10), the same test on the raw round-mean returns, and per-round means.
Then, per E and split, the observed effect size (Cohen's d) of the normalised-reward gap, the power of a 5-seed
t-test to detect an effect that large at the 5 % level, and the seeds per condition that 80 % power would need
(planning figures: an effect size estimated from 5 seeds is itself noisy and tends to be overstated).

    python scripts/preset_search_report.py
"""
import pandas as pd
from scipy import stats

import plasticity_lab as pl

STUDIES = {150: "data/gridworld-preset-search/epochs-150", 200: "data/gridworld-preset-search/epochs-200",
           300: "data/gridworld-permute-warm-vs-reset", 500: "data/gridworld-preset-search/epochs-500",
           1000: "data/gridworld-preset-search/epochs-1000"}
# The book's two grids hold the same comparison at E = 200 and 300 (same scale and seeds, trained in other
# populations): replicates of those rows with another shared random stream; the spread between them shows the noise.
REPLICATES = [("300, book grid at E = 300", "data/gridworld-book-e300"), ("200, book study", "data/gridworld-book")]


def comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of warm-start and reset-all under permute (a study may hold other shifts and conditions)."""
    return table[(table["shift"] == "permute") & table["condition"].isin(["warm_start", "reset_all"])]


power_rows = []
search_runs = {}
for E, path in [*STUDIES.items(), *REPLICATES]:
    r = pl.load_results(path)
    runs = search_runs[E] = comparison(r.runs("mean"))
    t = pl.stats.condition_ttests(runs, baseline="reset_all")
    print(f"== E={E}: {r.describe()}")
    print(t[["condition","split","t","p","mean","baseline_mean"]].round(4).to_string())
    rounds_all = comparison(r.rounds)
    rounds = rounds_all[rounds_all["round"] >= 2]
    raw = rounds.groupby(["condition", "seed"])[["train_mean", "test_mean", "weight_magnitude", "dead_units"]].mean()
    for col in ["train_mean", "test_mean"]:
        w, b = raw.loc["warm_start", col], raw.loc["reset_all", col]
        tt = stats.ttest_ind(b, w)
        print(f"  raw {col} rounds 2-10: warm {w.mean():.3f}±{w.std():.3f} reset {b.mean():.3f}±{b.std():.3f} t={tt.statistic:.2f} p={tt.pvalue:.4f}")
    per_round = rounds_all.groupby(["condition","round"])[["normalised_train_return","normalised_test_return","weight_magnitude","dead_units"]].mean().round(3)
    print(per_round.unstack(0).to_string())
    print("wall time h:", [round(p.get("wall_time_s", 0) / 3600, 2) for p in r.populations
                           if {c["condition"] for c in p["configs"]} <= {"warm_start", "reset_all"}])
    for row in pl.stats.ttest_power(t).itertuples():
        power_rows.append((E, row.split, row.effect_size, row.power, row.seeds_needed))
print("== effect sizes of the normalised-reward gap (warm-start below reset-all > 0)")
for E, split, d, power, needed in power_rows:
    print(f"  E={E!s:>16} {split:5}: d = {d:5.2f}, power at 5 seeds = {power:.2f}, seeds for 80 % power = {needed:.0f}")

# Ten seeds at E = 300: seeds 0-4 from the first study, seeds 5-9 from their own sweep.
ten = pd.concat([search_runs[300],
                 comparison(pl.load_results("data/gridworld-preset-search/epochs-300-seeds-5-9").runs("mean"))])
print(f"== E=300 with seeds {sorted(int(s) for s in ten['seed'].unique())}")
ten_tests = pl.stats.ttest_power(pl.stats.condition_ttests(ten, baseline="reset_all"))
print(ten_tests[["condition", "split", "t", "p", "mean", "baseline_mean", "n", "n_baseline", "effect_size",
                 "power"]].round(4).to_string())
