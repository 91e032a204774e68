"""Benchmark: gridworld levels generated one at a time (``level_layout``) against a whole array at once
(``plasticity_lab.envs.levels.level_observations``), the same levels both ways, checked equal.

    python benchmarks/levels_speed.py                 # 3 000 levels: one seed's pools over a paper-scale run
    python benchmarks/levels_speed.py --levels 72000 --repeats 3

Both sides start cold (the one-level generator's cache is cleared before each of its runs) and produce the reset
observations a population's level bank stores. Each row prints the median of ``--repeats`` runs and the range.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, default=3000, help="how many levels (from level 0 on)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.levels < 1 or args.repeats < 1:
        raise SystemExit(f"--levels and --repeats must be at least 1, got {args.levels} and {args.repeats}")

    from plasticity_lab.envs import gridworld
    from plasticity_lab.envs.levels import level_observations

    levels = np.arange(args.levels)
    one, together = [], []
    for _ in range(args.repeats):
        gridworld._level_layout.cache_clear()  # noqa: SLF001 — a cold start, as a new process has
        start = time.perf_counter()
        expected = np.stack([gridworld.level_layout(int(lv)).observation() for lv in levels])
        one.append(time.perf_counter() - start)
        start = time.perf_counter()
        observed = level_observations(levels)
        together.append(time.perf_counter() - start)
        if not np.array_equal(observed, expected):
            raise SystemExit("the two generators disagree: this is a bug")
    rows = {"one level at a time": one, "all levels at once": together}
    print(f"{args.levels:,} levels, {args.repeats} run(s) each, median (range); the two outputs compared equal")
    for name, times in rows.items():
        median = statistics.median(times)
        print(f"{name:<22} {median:8.3f} s ({min(times):.3f}–{max(times):.3f})  "
              f"{1e6 * median / args.levels:7.1f} µs a level")
    print(f"speed-up: {statistics.median(one) / statistics.median(together):.1f}×")
    return {name: statistics.median(times) for name, times in rows.items()}


if __name__ == "__main__":
    main()
