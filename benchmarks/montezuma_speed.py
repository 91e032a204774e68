"""Benchmark: Montezuma's Revenge on this machine: the game's speed, the RND agents' training speed, and the hours
a run and the book's study would take at the ``book`` and ``paper`` presets.

Three tables, measured in one run (compare figures within a run: the machine's speed drifts):

1. **Game**: ``members × copies`` games stepped with uniformly random actions, played both ways
   (:class:`~plasticity_lab.envs.montezuma.MontezumaEmulators`, the default, and ale-py's vector environment,
   :class:`~plasticity_lab.envs.montezuma.MontezumaPopulation`): agent steps per second over all games (one agent
   step is 4 frames, the frame skip).
2. **Training**: a population of ``members`` RND agents (``RunConfig(env="montezuma", preset="book")``: 8 games per
   member, 128-step rollouts; seeds 0…M−1, ``warm_start`` unless ``--condition``), built by
   :class:`plasticity_lab.montezuma_run.MontezumaExperiment`. Its first iteration, which includes the random start
   that begins RND's observation statistics (:attr:`~plasticity_lab.rnd.RNDConfig.init_steps` steps per game), is
   timed on its own; then ``--iterations`` timed iterations (rollout, intrinsic rewards, four passes of updates of
   the agent and the predictor). Per-agent figures divide the population's time by its size.
3. **Projections**: hours of one run, and of the book's grid (``--grid-runs``, default 15 = 3 conditions × 5
   seeds) trained population after population in one process, at the ``book`` and ``paper`` presets
   (:data:`plasticity_lab.config.MONTEZUMA_PRESETS`), from each population size's per-agent speed: the random start
   once, plus the preset's iterations at the measured cost per agent-step, scaled by the preset's games per run.

    python benchmarks/montezuma_speed.py                          # the defaults (a few minutes)
    python benchmarks/montezuma_speed.py --sizes 1,5 --iterations 3 --threads 1 --json montezuma-speed.json

``--json PATH`` writes every measured number and the machine it was measured on.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

#: The paper's Montezuma's Revenge comparison: 3 conditions × 20 replicates (PROTOCOL §1, §3).
PAPER_GRID_RUNS = 3 * 20
PRESETS = ("book", "paper")


def parse_sizes(text: str) -> list[int]:
    """``"1,5"`` → [1, 5]: population sizes, positive and distinct."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"bad --sizes {text!r}; give distinct positive integers, e.g. 1,5")
    return sizes


def preset_plan(preset: str) -> dict:
    """What one run of a Montezuma's Revenge preset does: iterations, games, steps per rollout, agent steps."""
    from plasticity_lab.config import RunConfig

    cfg = RunConfig(env="montezuma", preset=preset).resolved()
    steps = cfg.epochs_per_round * cfg.num_envs * cfg.rnd.rollout_length
    return {"preset": preset, "iterations": cfg.epochs_per_round, "games": cfg.num_envs,
            "rollout_length": cfg.rnd.rollout_length, "agent_steps": steps, "frames": 4 * steps,
            "init_steps": cfg.rnd.init_steps * cfg.num_envs}


def project(row: dict, plan: dict, grid_runs: int) -> dict:
    """Hours of one run, of a population of ``row["members"]`` runs, of ``grid_runs`` runs and of the paper's
    grid, from the measured cost of one agent step in a population of that size (the population's time over the
    agent steps of all its members): ``s_per_agent_step`` for training and ``init_s_per_agent_step`` for the
    random start's steps."""
    run_s = plan["agent_steps"] * row["s_per_agent_step"] + plan["init_steps"] * row["init_s_per_agent_step"]
    run_h = run_s / 3600
    return {"preset": plan["preset"], "members": row["members"], "run_h": run_h,
            "population_h": row["members"] * run_h, "grid_h": grid_runs * run_h,
            "paper_grid_h": PAPER_GRID_RUNS * run_h}


def measure_game(members: int, copies: int, steps: int, games: str) -> dict:
    import torch

    from plasticity_lab.envs.montezuma import N_ACTIONS, AtariSettings, montezuma_games

    env = montezuma_games(list(range(members)), copies, settings=AtariSettings(games=games))
    generator = torch.Generator().manual_seed(0)
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        env.step(torch.randint(0, N_ACTIONS, (members, copies), generator=generator))
    elapsed = time.perf_counter() - start
    env.close()
    return {"games": games, "members": members, "copies": copies, "steps": steps,
            "agent_steps_per_s": members * copies * steps / elapsed}


def measure_training(members: int, iterations: int, condition: str) -> dict:
    from plasticity_lab.config import RunConfig
    from plasticity_lab.montezuma_run import MontezumaExperiment

    configs = [RunConfig(env="montezuma", preset="book", condition=condition, seed=s,
                         epochs_per_round=iterations + 1) for s in range(members)]
    experiment = MontezumaExperiment(configs)
    cfg = experiment.cfg
    per_iteration = members * cfg.num_envs * cfg.rnd.rollout_length  # agent steps of the population
    init_steps = members * cfg.num_envs * cfg.rnd.init_steps
    start = time.perf_counter()
    experiment.train_epoch()  # the random start and the first iteration
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(iterations):
        experiment.train_epoch()
    timed = time.perf_counter() - start
    experiment.close()
    # the population's seconds per agent step: a run of a population of M costs 1/M of the population's time
    s_per_step = timed / (iterations * per_iteration)
    init_s = max(first - timed / iterations, 0.0) / init_steps
    return {"members": members, "condition": condition, "games_per_member": cfg.num_envs,
            "iterations_timed": iterations, "s_per_iteration": timed / iterations,
            "agent_steps_per_s": iterations * per_iteration / timed,
            "agent_steps_per_s_per_agent": iterations * per_iteration / timed / members,
            "s_per_agent_step": s_per_step, "init_s": first - timed / iterations,
            "init_s_per_agent_step": init_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,3", help="population sizes to train (default 1,3)")
    parser.add_argument("--iterations", type=int, default=2, help="timed iterations per size (default 2)")
    parser.add_argument("--condition", default="warm_start")
    parser.add_argument("--game-steps", type=int, default=300, help="random steps per game measurement")
    parser.add_argument("--grid-runs", type=int, default=15, help="runs of the projected grid (default 15)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-game", action="store_true")
    parser.add_argument("--json", default=None, help="write the numbers to this file")
    args = parser.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
        if args.iterations < 1 or args.game_steps < 1 or args.grid_runs < 1:
            raise ValueError("--iterations, --game-steps and --grid-runs must be positive")
    except ValueError as error:
        print(f"montezuma_speed: error: {error}", file=sys.stderr)
        return 2
    import torch

    from plasticity_lab.results import environment_info

    if args.threads:
        torch.set_num_threads(args.threads)
    machine = environment_info()
    out = {"when": datetime.datetime.now().isoformat(timespec="seconds"), "threads": torch.get_num_threads(),
           "machine": machine}
    print(f"{machine.get('cpu_model') or platform.processor()}, torch {torch.__version__}, "
          f"{out['threads']} thread(s)\n")
    if not args.skip_game:
        out["game"] = [measure_game(m, 8, args.game_steps, games) for games in ("emulators", "vector")
                       for m in (1, 4)]
        print("Game, random actions (8 games per member):")
        for r in out["game"]:
            print(f"  {r['games']:9s} {r['members']} × {r['copies']} games: "
                  f"{r['agent_steps_per_s']:8.0f} agent-steps/s "
                  f"({4 * r['agent_steps_per_s']:.0f} frames/s)")
    out["training"] = [measure_training(m, args.iterations, args.condition) for m in sizes]
    print(f"\nTraining ({args.condition}, book preset: 8 games × 128 steps per member per iteration, "
          f"{out['threads']} thread(s)):")
    print("  members  s/iteration  agent-steps/s  per agent  random start (s)")
    for r in out["training"]:
        print(f"  {r['members']:7d}  {r['s_per_iteration']:11.1f}  {r['agent_steps_per_s']:13.1f}  "
              f"{r['agent_steps_per_s_per_agent']:9.1f}  {r['init_s']:16.1f}")
    plans = [preset_plan(p) for p in PRESETS]
    out["projections"] = [project(r, plan, args.grid_runs) for plan in plans for r in out["training"]]
    print(f"\nProjections (hours; grid = {args.grid_runs} runs, paper grid = {PAPER_GRID_RUNS} runs, one process):")
    for plan in plans:
        print(f"  {plan['preset']}: {plan['iterations']} iterations × {plan['games']} games × "
              f"{plan['rollout_length']} steps = {plan['agent_steps']:,} agent steps ({plan['frames']:,} frames) "
              "per run")
        for p in (p for p in out["projections"] if p["preset"] == plan["preset"]):
            print(f"    measured with {p['members']} member(s): run {p['run_h']:.1f} h, population "
                  f"{p['population_h']:.1f} h, grid {p['grid_h']:.1f} h, paper grid {p['paper_grid_h']:.0f} h")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
