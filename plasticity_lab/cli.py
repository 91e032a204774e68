"""The ``plasticity-lab`` command line.

::

    plasticity-lab run --env gridworld --shift permute --condition warm_start,reset_all --seeds 0-4 --preset smoke
    plasticity-lab sweep sweeps/gridworld-book.toml --workers 2     # a grid, stored as data/<study>/, resumable
    plasticity-lab sweep sweeps/gridworld-book.toml --plan          # ... what of it is stored and what is left
    plasticity-lab sweep sweeps/coinrun-shifts.toml --adopt data/coinrun-pilot   # ... keeping a pilot's runs
    plasticity-lab report data/gridworld-book                        # the paper's tables for a stored study
    plasticity-lab report data/gridworld-book --readout release      # ... read as the authors' release reads them
    plasticity-lab report data/gridworld-book --against data/<other-study>       # two studies side by side
    plasticity-lab fetch gridworld-book                              # a stored study from the repository
    plasticity-lab conditions

``run`` is a sweep given on the command line: it trains one population per condition (all seeds × shifts of a
condition train together), shows a progress bar, stores a study (the sweep's format, every epoch kept) in a new
folder (named after the run unless ``--out`` names it), and prints the normalised reward per round. Run the same
command (same ``--out``) again after a crash: it continues as a sweep does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from .conditions import CONDITIONS
from .config import ENVS, PRESETS, UNSHIFTED_ENVS, parse_seeds
from .shifts import SHIFTS


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plasticity-lab", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train agents and store their per-epoch results")
    run.add_argument("--env", default="gridworld", help=f"one of: {', '.join(ENVS)}")
    run.add_argument("--shift", default=None, help="comma-separated; any of: permute (the default), window, "
                                                   "expand; none for montezuma (its only one)")
    run.add_argument("--condition", default="warm_start",
                     help="comma-separated conditions, each a name or a '+' combination; see `conditions`")
    run.add_argument("--seeds", default="0", help="e.g. 0-4, 0,3,7 or 2")
    run.add_argument("--preset", default="smoke", help=f"one of: {', '.join(PRESETS)}")
    for name in ("rounds", "epochs-per-round", "pool-size", "test-interval", "test-episodes", "num-envs"):
        run.add_argument(f"--{name}", type=int, default=None, help="overrides the preset")
    run.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                     help="a condition coefficient, e.g. --param perturb=1e-5 (repeatable)")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    run.add_argument("--randomness", default=None,
                     help="population (one generator per population, the default) or member (each run its own "
                          "streams: its table is the same whatever it trains beside)")
    run.add_argument("--execution", default=None,
                     help="eager (the default) or graphs: the collection step and the update compiled into one "
                          "graph each (gridworld with --randomness member; agrees with eager to float rounding)")
    run.add_argument("--mix", action="store_true",
                     help="train the conditions that build the same network in one population (implies "
                          "--randomness member)")
    run.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    run.add_argument("--out", default=None, help="the study folder (default: runs/<name>-<time>)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    sweep = sub.add_parser("sweep", help="run a grid of runs from a TOML/YAML sweep file into data/<study>/ "
                                         "(re-run to resume)")
    sweep.add_argument("file", help="the sweep file (.toml, .yaml or .yml)")
    sweep.add_argument("--root", default="data", help="folder of studies (default: data)")
    sweep.add_argument("--out", default=None, help="the study folder (default: <root>/<study>)")
    sweep.add_argument("--backend", default="local", help="local (processes) or ray")
    sweep.add_argument("--address", default=None, help="Ray cluster address (backend ray; default: a local Ray)")
    sweep.add_argument("--workers", type=int, default=1, help="populations trained at once (backend local)")
    sweep.add_argument("--threads", type=int, default=None, help="torch CPU threads per population")
    sweep.add_argument("--checkpoint-dir", default=None, help="where unfinished populations keep checkpoints "
                                                              "(default: <study>/checkpoints)")
    sweep.add_argument("--checkpoint-every", type=int, default=None,
                       help="also checkpoint every N epochs (always at the end of each round)")
    sweep.add_argument("--keep-checkpoints", action="store_true", help="keep each population's final checkpoint")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    sweep.add_argument("--plan", action="store_true",
                       help="train nothing: list the populations in the order they train, which are stored, "
                            "which continue from a checkpoint and what is left")
    sweep.add_argument("--adopt", action="append", default=[], metavar="STUDY",
                       help="train nothing: copy in the finished populations of another stored study that this "
                            "sweep would train (the same runs), then show the plan; may be given more than once")

    report = sub.add_parser("report", help="print the paper's tables (t-tests, correlations, GLM) for a study")
    report.add_argument("study", help="a study folder, e.g. data/gridworld-book")
    report.add_argument("--readout", default="project",
                        help="project (default: this project's smoothed read-outs) or release (the authors' release's "
                             "read-outs and summaries, step by step, quirks included)")
    report.add_argument("--at", default=None, help="run summary for rewards and t-tests: mean (rounds 2..R; the "
                                                   "default) or final; --readout release has its own")
    report.add_argument("--fit-at", default=None, help="run summary for correlations and the GLM: final (the "
                                                       "default) or mean; --readout release has its own")
    report.add_argument("--baseline", default="reset_all", help="the condition the t-tests compare against")
    report.add_argument("--against", default=None, help="another study folder to compare with (the conditions "
                                                        "both hold: ranking and the paper's verdicts in each)")

    fetch = sub.add_parser("fetch", help="download a stored study from the repository's data/ (without a checkout)")
    fetch.add_argument("study", help="the study's name, e.g. gridworld-book")
    fetch.add_argument("--root", default="data", help="folder to put it in (default: data)")
    fetch.add_argument("--url", default=None, help="where the studies are (default: the repository's data/ on "
                                                   "GitHub, or $PLASTICITY_LAB_DATA_URL)")

    sub.add_parser("conditions", help="list the conditions and their coefficients")
    return parser


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"bad --param {item!r}; use NAME=VALUE, e.g. perturb=1e-5")
        try:
            params[name] = int(value) if value.lstrip("-").isdigit() else float(value)
        except ValueError:
            params[name] = {"true": True, "false": False}.get(value.lower(), value)
    return params


def _run_sweep(args, study: str):
    """The sweep equivalent to ``run``'s arguments: one population per condition, every epoch kept. Every config
    is validated here, before any work."""
    from .sweep import Sweep

    unshifted = args.env in UNSHIFTED_ENVS
    shifts = _split(args.shift) if args.shift is not None else ["none" if unshifted else "permute"]
    conditions = _split(args.condition)
    if not shifts:
        raise ValueError("--shift is empty; valid: permute, window, expand")
    if unshifted and shifts != ["none"]:
        raise ValueError(f"--env {args.env} has no shifts: leave --shift out or give none; got {args.shift!r}")
    if not conditions:
        raise ValueError(f"--condition is empty; valid: {', '.join(CONDITIONS)}")
    seeds = parse_seeds(args.seeds)
    overrides = {name: getattr(args, name) for name in ("rounds", "epochs_per_round", "pool_size", "test_interval",
                                                        "test_episodes", "num_envs") if getattr(args, name) is not None}
    if args.device != "cpu":
        overrides["device"] = args.device
    if args.randomness is not None:
        overrides["randomness"] = args.randomness
    if args.execution is not None:
        overrides["execution"] = args.execution
    params = _parse_params(args.param)
    runs = len(shifts) * len(seeds) * (len(conditions) if args.mix else 1)
    return Sweep.from_dict({"study": study, "envs": [args.env], "shifts": shifts, "conditions": conditions,
                            "seeds": seeds, "preset": args.preset, "overrides": overrides,
                            "params": {c: params for c in conditions} if params else {},
                            "max_members": runs, "keep_epochs": True, "mix_conditions": args.mix})


def _run(args) -> int:
    from .results import normalised_table
    from .sweep import run_sweep

    shift_text = (args.shift or ("none" if args.env in UNSHIFTED_ENVS else "permute")).replace(",", "_")
    name = f"{args.env}-{shift_text}-{args.condition.replace(',', '_')}-{args.preset}"
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep = _run_sweep(args, out.resolve().name)
    results = run_sweep(sweep, out=out, threads=args.threads, progress=not args.no_progress)
    if not any((out / "checkpoints").iterdir()):  # the populations finished: nothing to resume
        (out / "checkpoints").rmdir()
    df = results.epochs()
    if args.env == "montezuma":  # no rounds to normalise by: each run's score and RND's reward over the run
        columns = ["condition", "seed", "iterations", "agent_steps", "episodes", "mean_score", "best_score",
                   "intrinsic_reward", "dead_units", "weight_magnitude"]
        print("Montezuma's Revenge, per run: the episodes that ended, their mean and best iteration's score, "
              "and means over the iterations")
        print(results.rounds[columns].to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    else:
        print(normalised_summary(df, normalised_table(df)))
    print(f"\nresults written to {out}/")
    return 0


def _describe_condition(name: str) -> str:
    """A condition's one-line description (a ``+`` combination: its parts' descriptions)."""
    parts = [CONDITIONS[part].description if part in CONDITIONS else part for part in name.split("+")]
    return " + ".join(parts)


def normalised_summary(df: pd.DataFrame, table: pd.DataFrame, width: int = 100) -> str:
    """``run``'s printout: the normalised-reward table (``results.normalised_table``) with headers a reader can
    follow, a sentence on what its numbers are, and a line per row saying what the row is."""
    import textwrap

    from .stats import readout_defaults

    rounds = int(df["round"].max())
    epochs = int(df["epoch_in_round"].max()) + 1
    window, offset = readout_defaults(epochs)
    later = f"r2-{rounds}" if rounds > 2 else "r2"
    names = {"train r2..R mean": f"train: mean {later}", "train ±std": "±sd",
             "test r2..R mean": f"test: mean {later}", "test ±std": "±sd",
             **{f"r{r}": f"round {r}" for r in range(1, rounds + 1)}}
    shown = table.drop(columns=[c for c in ("env",) if c in table and table[c].nunique() == 1])
    shown = shown.rename(columns=names)
    seeds = " or ".join(str(n) for n in sorted(table["seeds"].unique()))

    def para(text: str, indent: str = "", hang: str = "") -> str:
        return textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent + hang)

    lines = [para(
        "Normalised reward: each round's return, smoothed and read just before the round ends (a centred mean "
        f"over {window} epoch(s), read {offset} epoch(s) before the round's end), minus the same read-out of round 1. "
        "0 = as good as at the end of round 1; below 0 = worse (plasticity lost); above 0 = better. "
        f"Train: on the training levels; test: on unseen levels. Means over {seeds} seeds."), ""]
    with pd.option_context("display.width", 250, "display.max_columns", 60):
        lines.append(shown.to_string(index=False))
    lines += ["", "Rows, one per shift and condition:"]
    lines += [para(f"{row['condition']} under {row['shift']}: {_describe_condition(row['condition'])}", "  ", "  ")
              for _, row in table.iterrows()]
    if "reset_all" in set(table["condition"]) and table["condition"].nunique() > 1:
        lines.append(para("reset_all learns every round with a fresh network, so it cannot lose plasticity: a "
                          "condition whose later rounds end below reset_all's has lost some.", "  ", "  "))
    if rounds > 1:
        lines += ["Columns:",
                  para(f"train: mean {later}, test: mean {later}: each seed's normalised reward averaged over rounds 2 "
                       f"to {rounds}, then the mean over seeds; ±sd: the standard deviation of those averages "
                       "between seeds.", "  ", "  "),
                  para("round r: the normalised train reward in round r, mean over seeds (round 1 is 0 by "
                       "definition).", "  ", "  ")]
    return "\n".join(lines)


def _sweep(args) -> int:
    from .sweep import Sweep, run_sweep

    sweep = Sweep.from_file(args.file)
    if args.adopt:
        from .sweep import adopt_populations

        for source in args.adopt:
            names = adopt_populations(sweep, source, root=args.root, out=args.out)
            print(f"adopted {len(names)} population(s) from {source}" + "".join(f"\n  {n}" for n in names))
    if args.plan or args.adopt:
        print(_plan_text(sweep, args))
        return 0
    results = run_sweep(sweep, root=args.root, out=args.out, backend=args.backend, workers=args.workers,
                        threads=args.threads, address=args.address, checkpoint_dir=args.checkpoint_dir,
                        checkpoint_every=args.checkpoint_every, progress=not args.no_progress,
                        keep_checkpoints=args.keep_checkpoints)
    print(f"{results!r}\nstored in {results.path}/ (plasticity-lab report {results.path})")
    return 0


def _plan_text(sweep, args) -> str:
    """``sweep --plan``: the populations (:func:`~plasticity_lab.sweep.sweep_plan`) and a line of totals."""
    from .sweep import sweep_plan

    plan = sweep_plan(sweep, root=args.root, out=args.out, checkpoint_dir=args.checkpoint_dir)
    stored = plan[plan["state"] == "stored"]
    left = plan[plan["state"] != "stored"]
    resumed = int((plan["state"] == "checkpoint").sum())
    total = (f"{sweep.study}: {len(stored)} of {len(plan)} populations stored ({stored['runs'].sum()} of "
             f"{plan['runs'].sum()} runs); {len(left)} left, {resumed} of them from a checkpoint: "
             f"{left['agent_epochs'].sum():,} of {plan['agent_epochs'].sum():,} agent-epochs left")
    timed = stored.dropna(subset=["wall_time_h"])
    if len(left) and len(timed):
        # the pace of what is stored, on whatever machines trained it: a guide to the next sittings, not a promise
        pace = timed["wall_time_h"].sum() / timed["agent_epochs"].sum()
        total += (f"; at the stored populations' pace ({pace * 3600:.3g} s per agent-epoch), about "
                  f"{pace * left['agent_epochs'].sum():.3g} h of one worker")
    with pd.option_context("display.max_rows", None, "display.width", 160, "display.max_colwidth", 60):
        return f"{plan.round({'wall_time_h': 2}).to_string(index=False, na_rep='')}\n{total}"


def _report(args) -> int:
    from .report import report

    print(report(args.study, at=args.at, fit_at=args.fit_at, baseline=args.baseline, against=args.against,
                 readout=args.readout))
    return 0


def _fetch(args) -> int:
    from .results import fetch_study, load_results

    try:
        folder = fetch_study(args.study, Path(args.root) / args.study, base_url=args.url)
    except OSError as error:
        print(f"plasticity-lab: could not download {args.study}: {error}", file=sys.stderr)
        return 1
    print(f"{load_results(folder)!r}\nstored in {folder}/ (plasticity-lab report {folder})")
    return 0


def _conditions() -> int:
    for name, cls in CONDITIONS.items():
        params = cls().parameters()
        extra = "  [" + ", ".join(f"{k}={v}" for k, v in params.items()) + "]" if params else ""
        print(f"{name:<22} {cls.description}{extra}")
    print("\nCombine with '+', e.g. soft_shrink_perturb+layernorm.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"run": _run, "sweep": _sweep, "report": _report, "fetch": _fetch}
        if args.command in commands:
            return commands[args.command](args)
        return _conditions()
    except ValueError as error:
        print(f"plasticity-lab: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
