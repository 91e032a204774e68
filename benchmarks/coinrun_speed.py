"""Benchmark: ProcGen CoinRun on this machine: the games' speed, the training speed of populations of agents, and the
hours a CoinRun run and a CoinRun study grid would take at the ``book`` and ``paper`` presets.

Three tables, all measured in one run (compare figures within a run: the machine's speed drifts, and another
process on the same cores changes everything):

1. **Environment**: :class:`plasticity_lab.envs.CoinRunPopulation` of ``members × copies`` games stepped with
   uniformly random actions: agent steps per second over all games (one agent step is 2 game frames, the action
   repeat), with and without the *permute* shift's patch reordering of the frames, and the cost of one ``reset``
   (which closes and re-creates every member's ProcGen environment: every batch of episodes and every evaluation
   starts with one). The very first reset of the process, which loads ProcGen, is reported on its own.
2. **Training**: a population of ``members`` agents (``RunConfig(env="coinrun", preset="book")``, seeds 0…M−1, the
   *permute* shift, ``warm_start`` unless ``--condition``), built by :class:`plasticity_lab.experiment.Experiment`
   (11 copies per member for training, 55 for testing). One warm-up epoch (``Experiment.train_epoch``), then
   ``--epochs`` timed epochs, each split into collection (:func:`plasticity_lab.ppo.collect_episodes`: whole
   episodes from the 11 copies, batch after batch, until every member has 1 024 transitions; "of which env" is
   the time spent inside the games' ``reset`` and ``step``), and the update (``population.update``, 3 passes of
   minibatches of 64, plus the condition's after-epoch work, none for ``warm_start``); then one evaluation
   (:func:`plasticity_lab.experiment.evaluate`, one episode in each of the 55 test copies per member). Per-agent
   figures divide the population's time by its size. "transitions/agent-epoch" is the mean over the timed epochs
   (between 1 024 and about 3 200: it depends on how long the policy's episodes last); training agent-steps/s is
   transitions / (collection + update time) per agent.
3. **Projections**: hours of one run and of a study grid at the ``book`` and ``paper`` CoinRun presets
   (:data:`plasticity_lab.config.COINRUN_PRESETS`), from each measured population size's per-agent speed:
   ``rounds × epochs_per_round`` epochs plus ``rounds × evaluations per round`` evaluations, counted as the
   resolved config tests (every ``test_interval`` epochs and at the last epoch of each round). Grids: ``--grid-runs``
   runs (default 45 = 3 conditions × 3 shifts × 5 seeds, the book's CoinRun study) and the paper's 165
   (3 shifts × 11 conditions × 5 seeds), trained one population after another in one process of ``--threads``
   threads. They assume the measured mean transitions per epoch (an agent whose episodes get shorter or longer
   as it learns changes it) and the measured condition's cost; checkpoints and the at-shift actions are left out.

    python benchmarks/coinrun_speed.py                           # the defaults
    python benchmarks/coinrun_speed.py --sizes 1,5 --epochs 3    # the fuller measurement (many times longer)
    python benchmarks/coinrun_speed.py --threads 1               # as `plasticity-lab sweep --threads 1` trains
    python benchmarks/coinrun_speed.py --skip-env --json coinrun-speed.json   # training only, numbers stored

The defaults are smaller than a careful measurement would use (one population size, 2 timed epochs), so that the
default invocation stays short on a 2-core CPU (the README gives this machine's figures).
``--json PATH`` writes every measured number (and the machine it was measured on) as JSON.

Threads matter more than anything else here. Torch's default is one thread per core; while another process is
busy on one of the cores, two threads wait on each other at every operation: on a 2-core machine with one core
taken by another training process, ``--threads 1`` trained a CoinRun agent-epoch in 17 s, the default 2 threads in
74 s and 131 s (two runs). Say which setting a stored measurement used (the JSON records it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

#: The paper's CoinRun grid: 3 shifts × 11 conditions × 5 seeds.
PAPER_GRID_RUNS = 3 * 11 * 5
#: The book's CoinRun study: 3 conditions × 3 shifts × 5 seeds.
BOOK_GRID_RUNS = 3 * 3 * 5
PRESETS = ("book", "paper")


def machine_info() -> dict:
    """The CPU (``plasticity_lab.backends.cpu_info`` where it exists), core count, torch, threads, ProcGen."""
    import torch

    info: dict = {"python": platform.python_version(), "torch": torch.__version__,
                  "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        from plasticity_lab.backends import cpu_info

        info.update(cpu_info())
    except ImportError:  # an older package: no cpu_info
        info["cpu_model"] = platform.processor() or platform.machine()
    from importlib import metadata

    for package in ("plasticity-lab", "procgen-mirror", "procgen"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return info


class TimedEnv:
    """A population environment whose ``reset`` and ``step`` add up their wall time (``seconds``) and count their
    calls; everything else is the environment's own."""

    def __init__(self, env):
        self.env = env
        self.seconds = 0.0
        self.resets = 0
        self.steps = 0

    def __getattr__(self, name):
        return getattr(self.env, name)

    def reset(self, generator):
        start = time.perf_counter()
        try:
            return self.env.reset(generator)
        finally:
            self.seconds += time.perf_counter() - start
            self.resets += 1

    def step(self, actions):
        start = time.perf_counter()
        try:
            return self.env.step(actions)
        finally:
            self.seconds += time.perf_counter() - start
            self.steps += 1


# ---- 1. the environment -----------------------------------------------------------------------------------------


def parse_env_sizes(text: str) -> list[tuple[int, int]]:
    """``"1x11,5x11"`` → ``[(1, 11), (5, 11)]`` (members × copies)."""
    sizes = []
    for part in text.split(","):
        members, _, copies = part.strip().lower().partition("x")
        try:
            sizes.append((int(members), int(copies or 11)))
        except ValueError:
            raise ValueError(f"bad environment size {part!r}; use MEMBERSxCOPIES, e.g. 5x11") from None
        if min(sizes[-1]) < 1:
            raise ValueError(f"bad environment size {part!r}: members and copies must be >= 1")
    return sizes


def first_reset_seconds() -> float:
    """The first reset of the process (one member, one copy): loading ProcGen's library and its assets."""
    import torch

    from plasticity_lab.envs.coinrun import CoinRunPopulation

    env = CoinRunPopulation(1, 1)
    start = time.perf_counter()
    env.reset(torch.Generator().manual_seed(0))
    return time.perf_counter() - start


def env_speed(members: int, copies: int, steps: int, resets: int = 3, permute: bool = True,
              min_seconds: float = 3.0) -> dict:
    """Random-action agent steps per second of ``members × copies`` games (at least ``steps`` agent steps of every
    game and at least ``min_seconds``, after one untimed step) and the mean seconds of one ``reset`` (over
    ``resets``). ``permute``: the frames go through the *permute* shift's patch reordering, as in a *permute* run."""
    import torch

    from plasticity_lab.envs.coinrun import CoinRunPopulation, coinrun_level_range, patch_mapping

    env = CoinRunPopulation(members, copies)
    env.set_distributions([coinrun_level_range("permute", 1, pool_size=100)] * members,
                          [patch_mapping(seed, 1) if permute else None for seed in range(members)])
    generator = torch.Generator().manual_seed(0)
    env.reset(generator)  # untimed: the first reset of this size
    reset_times = []
    for _ in range(resets):
        start = time.perf_counter()
        env.reset(generator)
        reset_times.append(time.perf_counter() - start)
    def random_actions():
        return torch.randint(0, env.num_actions, (members, copies), generator=generator)

    env.step(random_actions())
    start, done = time.perf_counter(), 0
    while done < steps or time.perf_counter() - start < min_seconds:
        env.step(random_actions())
        done += 1
    seconds, steps = time.perf_counter() - start, done
    games = members * copies
    return {"members": members, "copies": copies, "permute": permute, "agent_steps_timed": steps * games,
            "agent_steps_per_s": steps * games / seconds, "frames_per_s": 2 * steps * games / seconds,
            "ms_per_population_step": 1000 * seconds / steps, "reset_s": sum(reset_times) / len(reset_times)}


# ---- 2. training ------------------------------------------------------------------------------------------------


def train_speed(members: int, epochs: int, condition: str = "warm_start", shift: str = "permute",
                preset: str = "book", device: str = "cpu") -> dict:
    """Time ``epochs`` epochs (after one warm-up epoch) and one evaluation of a CoinRun population of ``members``
    (see the module docstring)."""
    import torch

    from plasticity_lab.config import RunConfig
    from plasticity_lab.experiment import Experiment, evaluate
    from plasticity_lab.ppo import collect_episodes

    configs = [RunConfig(env="coinrun", shift=shift, condition=condition, seed=seed, preset=preset, device=device)
               for seed in range(members)]

    def now() -> float:  # on a GPU, after the queued work is done
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter()

    build_start = time.perf_counter()
    experiment = Experiment(configs)
    build_s = time.perf_counter() - build_start
    start = time.perf_counter()
    experiment.train_epoch()  # warm-up: sets round 1's distributions, first kernels, first allocations
    warmup_s = time.perf_counter() - start
    population, generator = experiment.population, experiment.generator
    train_env = TimedEnv(experiment.train_env)
    collect, collect_env, update, transitions, batches, steps = [], [], [], [], [], []
    for _ in range(epochs):
        train_env.seconds, train_env.resets, train_env.steps = 0.0, 0, 0
        t0 = now()
        rollout = collect_episodes(population, train_env, generator)
        t1 = now()
        population.update(rollout, generator)
        experiment.condition.after_epoch(population, experiment.epoch, generator)
        t2 = now()
        experiment.epoch += 1
        collect.append(t1 - t0)
        collect_env.append(train_env.seconds)
        update.append(t2 - t1)
        transitions.append(rollout.transitions().float().mean().item())
        batches.append(train_env.resets)
        steps.append(train_env.steps)
        del rollout
    test_env = TimedEnv(experiment.test_env)
    t0 = now()
    test_return = evaluate(population, test_env, generator)
    eval_s = now() - t0

    def mean(values):
        return sum(values) / len(values)

    per_epoch = mean(collect) + mean(update)
    per_agent = per_epoch / members
    return {
        "members": members,
        "condition": condition,
        "shift": shift,
        "epochs_timed": epochs,
        "build_s": build_s,
        "warmup_epoch_s": warmup_s,
        "s_per_population_epoch": per_epoch,
        "s_per_agent_epoch": per_agent,
        "collect_s": mean(collect),
        "collect_env_s": mean(collect_env),
        "update_s": mean(update),
        "epoch_s": [c + u for c, u in zip(collect, update)],
        "transitions_per_agent_epoch": mean(transitions),
        "transitions_per_agent_epoch_each": transitions,
        "batches_per_epoch": mean(batches),
        "population_steps_per_epoch": mean(steps),
        "train_agent_steps_per_s": mean(transitions) / per_agent,
        "eval_episodes_per_agent": experiment.cfg.test_episodes,
        "eval_s": eval_s,
        "eval_env_s": test_env.seconds,
        "eval_population_steps": test_env.steps,
        "eval_s_per_agent": eval_s / members,
        "eval_mean_return": test_return.mean().item(),
        "torch_threads": torch.get_num_threads(),
    }


# ---- 3. projections ---------------------------------------------------------------------------------------------


def evaluations_per_round(epochs_per_round: int, test_interval: int) -> int:
    """How many evaluations one round runs: as :meth:`plasticity_lab.experiment.Experiment.train_epoch` tests, every
    ``test_interval`` epochs and at the round's last epoch."""
    return sum(1 for e in range(epochs_per_round) if (e + 1) % test_interval == 0 or e == epochs_per_round - 1)


def preset_plan(preset: str) -> dict:
    """Rounds, epochs per round, test interval and evaluations per round of CoinRun at ``preset``, as the config
    resolves them."""
    from plasticity_lab.config import RunConfig

    cfg = RunConfig(env="coinrun", preset=preset).resolved()
    return {"preset": preset, "rounds": cfg.rounds, "epochs_per_round": cfg.epochs_per_round,
            "pool_size": cfg.pool_size, "test_interval": cfg.test_interval,
            "evaluations_per_round": evaluations_per_round(cfg.epochs_per_round, cfg.test_interval)}


def project(row: dict, plan: dict, grid_runs: int) -> dict:
    """Hours of one run (one agent) at ``plan``'s scale from a measured training ``row``; of one population of the
    row's size; of ``grid_runs`` runs and of the paper's grid, one population after another."""
    epochs = plan["rounds"] * plan["epochs_per_round"]
    evaluations = plan["rounds"] * plan["evaluations_per_round"]
    train_h = epochs * row["s_per_agent_epoch"] / 3600
    eval_h = evaluations * row["eval_s_per_agent"] / 3600
    run_h = train_h + eval_h
    return {**plan, "members": row["members"], "epochs": epochs, "evaluations": evaluations,
            "run_train_h": train_h, "run_eval_h": eval_h, "run_h": run_h,
            "population_h": run_h * row["members"], "grid_runs": grid_runs, "grid_h": run_h * grid_runs,
            "paper_grid_runs": PAPER_GRID_RUNS, "paper_grid_h": run_h * PAPER_GRID_RUNS}


# ---- the report -------------------------------------------------------------------------------------------------


def _hours(h: float) -> str:
    return f"{h:,.1f} h" + (f" ({h / 24:,.1f} d)" if h >= 48 else "")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1", help="population sizes to train, comma-separated (default: 1; "
                        "the fuller measurement: 1,5)")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per size, after one warm-up epoch "
                        "(default: 2, kept small for the default's time; 3 or more is steadier)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    parser.add_argument("--device", default="cpu", help="where the networks train: cpu or cuda (the games step on the "
                                                        "CPU either way)")
    parser.add_argument("--env-sizes", default="1x11,5x11,15x11", help="MEMBERSxCOPIES of the environment table")
    parser.add_argument("--env-steps", type=int, default=40,
                        help="timed agent steps of every game per size, at least (and at least --env-seconds)")
    parser.add_argument("--env-seconds", type=float, default=3.0, help="timed seconds per environment row, at least")
    parser.add_argument("--condition", default="warm_start", help="the trained condition (default: warm_start)")
    parser.add_argument("--grid-runs", type=int, default=BOOK_GRID_RUNS,
                        help=f"runs of the projected study grid (default: {BOOK_GRID_RUNS} = 3 conditions × 3 shifts "
                             f"× 5 seeds; the paper's {PAPER_GRID_RUNS} is always shown too)")
    parser.add_argument("--skip-env", action="store_true", help="leave out the environment table")
    parser.add_argument("--skip-training", action="store_true", help="leave out training and the projections")
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the measured numbers here as JSON")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        env_sizes = parse_env_sizes(args.env_sizes)
    except ValueError as error:
        parser.error(str(error))
    if min(sizes) < 1 or args.epochs < 1 or args.env_steps < 1 or args.grid_runs < 1:
        parser.error("--sizes, --epochs, --env-steps and --grid-runs must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1; got {args.threads}")

    import torch

    from plasticity_lab.envs.coinrun import procgen_available

    if not procgen_available():
        raise SystemExit("ProcGen is not installed; see the README's optional extras")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    machine = machine_info()
    print(f"CPU: {machine.get('cpu_model', '?')} ({machine['cpu_count']} logical cores)   torch {machine['torch']}   "
          f"torch threads: {machine['torch_threads']}   ProcGen "
          f"{machine.get('procgen-mirror', machine.get('procgen', '?'))}   python {machine['python']}")
    result: dict = {"measured_at": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
                    "machine": machine, "settings": vars(args)}

    if not args.skip_env:
        first = first_reset_seconds()
        rows = [env_speed(m, c, args.env_steps, permute=p, min_seconds=args.env_seconds)
                for m, c in env_sizes for p in (False, True)]
        result["environment"] = {"first_reset_s": first, "rows": rows}
        print()
        print(f"1. ProcGen CoinRun, random actions (at least {args.env_steps} agent steps of every game and "
              f"{args.env_seconds:g} s timed per row; one agent step = 2 frames)")
        print(f"{'members×copies':>14} {'permute':>7} {'agent steps/s':>13} {'frames/s':>9} "
              f"{'ms/population step':>18} {'reset (s)':>9}")
        for r in rows:
            print(f"{r['members']:>9}×{r['copies']:<4} {'yes' if r['permute'] else 'no':>7} "
                  f"{r['agent_steps_per_s']:>13,.0f} {r['frames_per_s']:>9,.0f} {r['ms_per_population_step']:>18.1f} "
                  f"{r['reset_s']:>9.3f}")
        print(f"reset = closing and re-creating every member's ProcGen environment (each batch of episodes and each "
              f"evaluation starts with one); the process's first reset, loading ProcGen: {first:.2f} s")

    if not args.skip_training:
        rows = []
        for members in sizes:
            rows.append(train_speed(members, args.epochs, args.condition, device=args.device))
            sys.stdout.flush()
        result["training"] = rows
        print()
        print(f"2. Training on {args.device} (CoinRun, book preset, shift permute, {args.condition}; 11 copies per member; "
              f"{args.epochs} timed epochs after 1 warm-up epoch; evaluation = one of 55 test episodes per member)")
        print(f"{'members':>7} {'s/pop-epoch':>11} {'s/agent-epoch':>13} {'collect':>8} {'of which env':>12} "
              f"{'update':>8} {'eval (pop)':>10} {'eval/agent':>10} {'transitions/agent-epoch':>23} "
              f"{'batches':>7} {'train agent-steps/s':>19} {'warm-up (s)':>11}")
        for r in rows:
            print(f"{r['members']:>7} {r['s_per_population_epoch']:>11.1f} {r['s_per_agent_epoch']:>13.1f} "
                  f"{r['collect_s']:>8.1f} {r['collect_env_s']:>12.1f} {r['update_s']:>8.1f} {r['eval_s']:>10.1f} "
                  f"{r['eval_s_per_agent']:>10.1f} {r['transitions_per_agent_epoch']:>23,.0f} "
                  f"{r['batches_per_epoch']:>7.1f} {r['train_agent_steps_per_s']:>19.1f} {r['warmup_epoch_s']:>11.1f}")
        print("seconds; s/pop-epoch = collect + update (the evaluation apart); the timed epochs' totals: "
              + "; ".join(f"{r['members']} member(s): " + ", ".join(f"{s:.1f}" for s in r["epoch_s"]) for r in rows))
        print("transitions per timed epoch (mean over members): " + "; ".join(
            f"{r['members']} member(s): " + ", ".join(f"{t:,.0f}" for t in r["transitions_per_agent_epoch_each"])
            for r in rows))

        plans = [preset_plan(p) for p in PRESETS]
        projections = [project(r, plan, args.grid_runs) for plan in plans for r in rows]
        result["projections"] = projections
        print()
        print(f"3. Projections (one process of {machine['torch_threads']} threads, populations one after another, "
              "at the measured per-agent speed of each population size)")
        for plan in plans:
            print(f"   {plan['preset']}: {plan['rounds']} rounds × {plan['epochs_per_round']} epochs, pool "
                  f"{plan['pool_size']}, a test every {plan['test_interval']} epochs → "
                  f"{plan['evaluations_per_round']} evaluations per round")
        print(f"{'preset':>6} {'members':>7} {'one run':>20} {'of which eval':>16} {'one population':>20} "
              f"{'grid of ' + str(args.grid_runs):>24} {'paper grid (' + str(PAPER_GRID_RUNS) + ')':>26}")
        for p in projections:
            print(f"{p['preset']:>6} {p['members']:>7} {_hours(p['run_h']):>20} {_hours(p['run_eval_h']):>16} "
                  f"{_hours(p['population_h']):>20} {_hours(p['grid_h']):>24} {_hours(p['paper_grid_h']):>26}")
        print(f"one run = one agent's epochs and evaluations; one population = that many runs trained together; grid "
              f"of {args.grid_runs} (the book's CoinRun study: 3 conditions × 3 shifts × 5 seeds) and the paper's "
              f"{PAPER_GRID_RUNS} (3 shifts × 11 conditions × 5 seeds), at the measured mean transitions per epoch "
              f"and the cost of {args.condition}.")

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["peak_rss_mb"] = peak_mb
    result["wall_s"] = time.perf_counter() - started
    print()
    print(f"peak resident memory of the process: {peak_mb:,.0f} MB; benchmark wall time: {result['wall_s']:.0f} s")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"numbers written to {path}")
    return result


if __name__ == "__main__":
    main()
