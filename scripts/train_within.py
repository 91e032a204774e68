"""Train named conditions to the end within a time limit, and store them as one study folder: the one-command run
for data on a machine lent for minutes (a GPU session), which keeps only what it finished.

    python scripts/train_within.py --conditions warm_start,reset_all --preset paper --device cuda \\
        --seconds 540 --out /tmp/out/gridworld-paper-warm-reset

The conditions' runs (shifts × seeds) train as populations of the sweep they amount to, with ``mix_conditions``
(conditions that build the same network share a population) and so each run's own random streams
(``randomness = "member"``): a run's table does not depend on what it was trained beside, so studies stored by
separate sessions hold the tables one study would have (Montezuma's Revenge, whose RND agents draw from one
generator per population, trains a population per condition instead). Populations train one after another, epoch
by epoch. After ``--probe`` epochs of a population, its remaining time is projected from its own epochs so far; a population that
would end after the time limit is dropped then and there (a checkpoint of a 180-member population is hundreds of MB:
nothing is left to resume elsewhere), and so is one still running at the limit. Finished populations are stored as
a sweep stores them (tables, then manifest) with the study's manifest; nothing else is written into ``--out``.
The folder must not exceed ``--max-mib`` (the tables of a paper-scale grid take a few MB).

Prints one line per population (stored or dropped, and why) and a last line with the folder's size; exits 0 when
every population was stored, 3 when some were dropped, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from plasticity_lab.config import ENVS, PRESETS, UNSHIFTED_ENVS, parse_seeds  # noqa: E402
from plasticity_lab.experiment import experiment_for  # noqa: E402
from plasticity_lab.results import environment_info, population_complete  # noqa: E402
from plasticity_lab.sweep import (PopulationTask, Sweep, check_study, store_population,  # noqa: E402
                                  training_order, write_study_manifest)


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def train_within(sweep: Sweep, out: Path, seconds: float, probe: int = 20, clock=time.monotonic,
                 say=print) -> dict[str, str]:
    """Train ``sweep``'s populations into the study folder ``out`` until ``seconds`` have passed; returns each
    population's fate by name: ``"stored"``, ``"already stored"``, or why it was dropped."""
    if seconds <= 0:
        raise ValueError(f"the time limit must be positive; got {seconds!r} s")
    if probe < 1:
        raise ValueError(f"--probe must be at least 1 epoch; got {probe!r}")
    out = Path(out)
    check_study(out, sweep)  # never into a folder another sweep made
    (out / "populations").mkdir(parents=True, exist_ok=True)
    environment = environment_info()
    start, started = clock(), time.time()
    deadline = start + seconds
    write_study_manifest(out, sweep, environment, started, {}, trains=True)
    fates: dict[str, str] = {}
    for task in training_order(sweep.populations()):
        fates[task.name] = fate = _train_one(task, out, sweep, environment, start, started, deadline, probe, clock)
        say(f"{task.name} ({len(task.configs)} runs: {', '.join(task.conditions)}): {fate}")
    return fates


def _train_one(task: PopulationTask, out: Path, sweep: Sweep, environment: dict, start: float, started: float,
               deadline: float, probe: int, clock) -> str:
    folder = out / "populations" / task.name
    if population_complete(folder, task.configs):
        return "already stored"
    began = clock()
    if began >= deadline:
        return "dropped: no time left"
    experiment = experiment_for(task.configs)
    total = experiment.total_epochs
    while not experiment.finished:
        experiment.train_epoch()
        now = clock()
        done = experiment.epoch
        projected = now + (now - began) / done * (total - done)
        if done >= min(probe, total) and projected > deadline:
            return (f"dropped after {done} of {total} epochs: projected to end {projected - start:.0f} s after the "
                    f"start, past the limit of {deadline - start:.0f} s")
        if now > deadline and not experiment.finished:
            return f"dropped at the limit after {done} of {total} epochs"
    wall = clock() - began
    store_population(task, folder, experiment, wall, sweep.curve_stride, environment)
    write_study_manifest(out, sweep, environment, started, {task.name: task.manifest_entry(wall)})
    return f"stored ({wall:.0f} s)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conditions", required=True, help="comma-separated conditions (each a name or a+b)")
    parser.add_argument("--out", required=True, help="the study folder to write (its name is the study's)")
    parser.add_argument("--seconds", type=float, required=True, help="the time limit for all training")
    parser.add_argument("--env", default="gridworld", help=f"one of: {', '.join(ENVS)}")
    parser.add_argument("--preset", default="paper", help=f"one of: {', '.join(PRESETS)}")
    parser.add_argument("--shifts", default="permute,window,expand")
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-members", type=int, default=180, help="the largest population")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--probe", type=int, default=20, help="epochs before a population's time is projected")
    parser.add_argument("--max-mib", type=float, default=64.0, help="the largest the folder may grow")
    parser.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                        help="a RunConfig field for every run (JSON value), e.g. epochs_per_round=100")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        overrides = {"device": args.device} if args.device != "cpu" else {}
        for item in args.override:
            name, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"bad --override {item!r}; use FIELD=VALUE, e.g. epochs_per_round=100")
            try:
                overrides[name] = json.loads(value)
            except json.JSONDecodeError:
                overrides[name] = value
        sweep = Sweep.from_dict({
            "study": out.resolve().name, "envs": [args.env], "conditions": args.conditions.split(","),
            "shifts": args.shifts.split(","), "seeds": parse_seeds(args.seeds), "preset": args.preset,
            "overrides": overrides, "max_members": args.max_members,
            # Montezuma's Revenge's RND agents draw from one generator per population: a population per condition
            "mix_conditions": args.env not in UNSHIFTED_ENVS})
        if args.max_mib <= 0:
            raise ValueError(f"--max-mib must be positive; got {args.max_mib!r}")
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1; got {args.threads!r}")
            torch.set_num_threads(args.threads)
        fates = train_within(sweep, out, args.seconds, args.probe)
    except ValueError as error:
        print(f"train_within: error: {error}", file=sys.stderr)
        return 2
    size = folder_mib(out)
    print(f"{out}: {sum(f.startswith(('stored', 'already')) for f in fates.values())} of {len(fates)} populations "
          f"stored, {size:.2f} MiB")
    if size > args.max_mib:
        print(f"train_within: error: {out} holds {size:.1f} MiB, more than --max-mib {args.max_mib:g}",
              file=sys.stderr)
        return 2
    return 0 if all(f.startswith(("stored", "already")) for f in fates.values()) else 3


if __name__ == "__main__":
    sys.exit(main())
