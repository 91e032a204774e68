"""The search for the `book` preset (data/gridworld-preset-search/README.md): warm-start vs reset-all under
permute, 5 seeds, 10 rounds, at each epochs-per-round E measured so far. Prints, per E, the paper's t-tests on
normalised reward (mean over rounds 2..10), the same test on the raw round-mean returns, and per-round means.

    python scripts/preset_search_report.py
"""
from scipy import stats
import plasticity_lab as pl
from plasticity_lab import analysis
STUDIES = {300: "data/gridworld-permute-warm-vs-reset", 500: "data/gridworld-preset-search/epochs-500"}
for E, path in STUDIES.items():
    r = pl.load_results(path)
    runs = r.runs("mean")
    t = analysis.condition_ttests(runs, baseline="reset_all")
    print(f"== E={E}: {r.describe()}")
    print(t[["condition","split","t","p","mean","baseline_mean"]].round(4).to_string())
    rounds = r.rounds[r.rounds["round"] >= 2]
    raw = rounds.groupby(["condition", "seed"])[["train_mean", "test_mean", "weight_magnitude", "dead_units"]].mean()
    for col in ["train_mean", "test_mean"]:
        w, b = raw.loc["warm_start", col], raw.loc["reset_all", col]
        tt = stats.ttest_ind(b, w)
        print(f"  raw {col} rounds 2-10: warm {w.mean():.3f}±{w.std():.3f} reset {b.mean():.3f}±{b.std():.3f} t={tt.statistic:.2f} p={tt.pvalue:.4f}")
    per_round = r.rounds.groupby(["condition","round"])[["normalised_train_return","normalised_test_return","weight_magnitude","dead_units"]].mean().round(3)
    print(per_round.unstack(0).to_string())
    print("wall time h:", [round(p.get("wall_time_s",0)/3600,2) for p in r.populations])
