"""Benchmark: the authors' released code against plasticity-lab, on the gridworld at the paper's settings.

Measures, on the machine at hand and in one sitting, the seconds per agent-epoch (one PPO iteration of one agent:
11 episodes of 100 steps, 3 passes of 64-row minibatches, its diagnostics, and a test of 55 episodes every 100
epochs) of

* **the authors' release** (github.com/awjuliani/deep-rl-plasticity with NeuroNav), unmodified: its own
  ``shared.runner.gen_trainer`` builds one agent for the gridworld (``gather-vis_100``, *permute*, the ``linear``
  observation) from its own ``hyperparams.yaml``, and its ``PPOTrainer.train`` runs epoch after epoch;
* **plasticity-lab**, the same settings through its training loop (``Experiment.train_epoch``, what
  :func:`plasticity_lab.run` calls; the ``paper`` preset, *permute*, warm-start), for a population of each size in
  ``--sizes``;
* **the physical limit**: the matrix products of one agent-epoch (``population_speed.FLOP_PER_AGENT_EPOCH``)
  at the speed of a large float32 matrix product on the same threads — no implementation of this network can be
  much faster on this CPU, since everything else it does is smaller than its products.

Each measurement runs in a fresh process with ``--threads`` threads (1 by default: a sweep's ``--threads 1``, and
how the release trains one seed per process), and the rows alternate ``--repeats`` times so that the machine's drift
falls on all of them alike; each row reports its median run and the range. The release's first epoch (it builds
the trainer and tests at epoch 0) is left out. Both are timed the same way: each epoch of the training loop on its
own (the release's ``PPOTrainer.train``, plasticity-lab's ``Experiment.train_epoch``, which :func:`plasticity_lab.run`
calls), the first ``--warmup`` epochs left out, the mean of the next ``--epochs``. With ``--epochs 100`` and the
paper's test interval each measured stretch of both contains exactly one test (the release's at epoch 100, ours
after the 100th epoch).

The release runs under its own Python (``--release-python``: a virtual environment with its requirements, torch,
``gym``, NeuroNav and their imports; NeuroNav from a checkout with ``--neuronav``). Its gridworld constructs a
``torchvision`` resize that only its 64×64 visual observation calls, and its package imports torchvision's
datasets for environments not measured here: where torchvision is not installed (no build of it matches every
torch), the worker supplies stand-ins for those names, which raise if they are ever called, and the output says so.

    python benchmarks/release_speed.py --release ~/deep-rl-plasticity --neuronav ~/neuro-nav \\
        --release-python ~/release-venv/bin/python --sizes 1,15 --repeats 3 --json speed.json
    python benchmarks/release_speed.py --sizes 1 --epochs 4 --warmup 2   # plasticity-lab only, a smoke row

``--keep-denormals`` adds a row: the largest population with denormal floats kept, as the studies stored before
they were flushed trained (see :mod:`plasticity_lab.backends.denormals`); its gap to the row above grows with the
epochs measured, as units die and AdamW's moments of their weights decay into the denormal range.

``--json PATH`` writes the rows and a manifest (the CPU, both environments' library versions, both repositories'
commits, the arguments); the book's chapter 14 draws ``data/benchmarks/release-speed/speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from population_speed import FLOP_PER_AGENT_EPOCH, GRID_RUNS, PAPER_EPOCHS, matmul_gflops, median_run  # noqa: E402

#: The paper's test interval (its ``hyperparams.yaml``'s and the ``paper`` preset's): one test every 100 epochs.
PAPER_TEST_INTERVAL = 100

#: The release's gridworld at the paper's settings: its procgen hyperparameters with the gridworld environment
#: its gridworld analysis reads (the ``gather`` task with 100-level pools, the flat 363-value observation).
RELEASE_ENVIRONMENT = {"name": "gridworld", "task": "gather-vis_100", "shift_type": "permute", "obs_type": "linear",
                       "env_copies": 11}


def _stand_in_torchvision() -> bool:
    """Install stand-ins for the torchvision names the release imports but the measured path never calls; True if
    they were needed."""
    try:
        import torchvision.datasets  # noqa: F401
        import torchvision.transforms  # noqa: F401
        return False
    except ImportError:
        pass
    import types

    def never_called(name):
        def fail(*args, **kwargs):
            raise RuntimeError(f"torchvision.{name} is a stand-in of release_speed.py: the measured path must not "
                               f"call it")
        return fail

    class Resize:  # constructed by the release's GridWorld, called only for 64×64 visual observations
        def __init__(self, *args, **kwargs):
            pass

        __call__ = never_called("transforms.Resize")

    interpolation = types.SimpleNamespace(NEAREST="nearest")
    functional = types.SimpleNamespace(InterpolationMode=interpolation)
    transforms = types.ModuleType("torchvision.transforms")
    transforms.Resize, transforms.functional, transforms.InterpolationMode = Resize, functional, interpolation
    datasets = types.ModuleType("torchvision.datasets")
    for name in ("MNIST", "FashionMNIST", "SVHN", "CIFAR10"):
        setattr(datasets, name, never_called(f"datasets.{name}"))
    package = types.ModuleType("torchvision")
    package.transforms, package.datasets, package.__path__ = transforms, datasets, []
    sys.modules.update({"torchvision": package, "torchvision.transforms": transforms,
                        "torchvision.datasets": datasets})
    return True


def release_worker(release: str, neuronav: str | None, epochs: int, warmup: int, threads: int, seed: int) -> dict:
    """Train one agent with the release's own code and time its epochs ``warmup .. warmup + epochs - 1``."""
    import contextlib
    import tempfile

    sys.path[:0] = [release] + ([neuronav] if neuronav else [])
    stand_ins = _stand_in_torchvision()
    import torch
    import yaml

    torch.set_num_threads(threads)
    with open(Path(release) / "hyperparams.yaml") as f:
        hyperparams = yaml.safe_load(f)
    hyperparams["environment"].update(RELEASE_ENVIRONMENT)
    trainer_params = hyperparams["ppo_trainer"]
    if trainer_params["test_interval"] != PAPER_TEST_INTERVAL or trainer_params["buffer_size"] != 1024:
        raise SystemExit(f"the release's hyperparams.yaml is not the one this benchmark knows: {trainer_params}")
    with tempfile.TemporaryDirectory(prefix="release-speed-") as tmp, open(os.devnull, "w") as devnull:
        os.chdir(tmp)  # its trainer writes TensorBoard logs under ./results
        with contextlib.redirect_stdout(devnull):  # it prints every epoch's statistics
            from shared.runner import gen_trainer

            trainer = gen_trainer(hyperparams, seed=seed, descriptor="baseline_0", base_path=f"{tmp}/results/speed")
            seconds = []
            for epoch in range(warmup + epochs):
                start = time.perf_counter()
                trainer.train(epoch)
                seconds.append(time.perf_counter() - start)
    measured = seconds[warmup:]
    return {"row": "authors' release", "members": 1, "s_per_agent_epoch": sum(measured) / len(measured),
            "epochs": epochs, "torchvision_stand_ins": stand_ins, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "libraries": _versions(["numpy", "gym", "torch"])}


def ours_configs(members: int, epochs_per_round: int) -> list:
    """The runs plasticity-lab's rows train: the ``paper`` preset, *permute*, warm-start, one round of
    ``epochs_per_round`` epochs, seeds ``0 .. members - 1``. The test interval is given explicitly: a preset derives
    it from the epochs per round (50 tests a round), which would test far more often in a short round."""
    import plasticity_lab as pl

    return [pl.RunConfig(shift="permute", condition="warm_start", seed=seed, preset="paper", rounds=1,
                         epochs_per_round=epochs_per_round, test_interval=PAPER_TEST_INTERVAL)
            for seed in range(members)]


def ours_worker(members: int, epochs: int, warmup: int, threads: int, flush_denormals: bool = True) -> dict:
    """Train ``members`` paper-preset runs as one population and time its epochs ``warmup .. warmup + epochs - 1``,
    one :meth:`~plasticity_lab.experiment.Experiment.train_epoch` at a time, as the release's epochs are timed;
    ``flush_denormals=False``: with denormal floats kept (see :mod:`plasticity_lab.backends.denormals`)."""
    import torch

    import plasticity_lab as pl
    from plasticity_lab.backends import denormals
    from plasticity_lab.experiment import Experiment

    os.environ[denormals.VARIABLE] = "1" if flush_denormals else "0"  # read by every training epoch

    torch.set_num_threads(threads)
    # one epoch more in the round than is trained: its last epoch would test once more
    experiment = Experiment(ours_configs(members, warmup + epochs + 1))
    seconds = []
    for _ in range(warmup + epochs):
        start = time.perf_counter()
        experiment.train_epoch()
        seconds.append(time.perf_counter() - start)
    measured = seconds[warmup:]
    kept = "" if flush_denormals else ", denormals kept"
    return {"row": f"plasticity-lab, population of {members}{kept}", "members": members,
            "flush_denormals": denormals.status(),
            "s_per_agent_epoch": sum(measured) / len(measured) / members, "epochs": epochs,
            "cpu_matmul": pl.cpu_matmul(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def limit_worker(threads: int) -> dict:
    """The matrix products of one agent-epoch at a large product's speed on ``threads`` threads."""
    import torch

    torch.set_num_threads(threads)
    gflops = max(matmul_gflops("cpu") for _ in range(3))
    return {"row": "matrix products at a large product's speed", "members": None, "gflops": gflops,
            "s_per_agent_epoch": FLOP_PER_AGENT_EPOCH / (gflops * 1e9)}


def _versions(names) -> dict:
    from importlib import metadata

    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _git(folder: str | None) -> str | None:
    if not folder:
        return None
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def _measure(python: str, job: dict, threads: int) -> dict:
    """Run one worker in a fresh process; its result is the last line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([python, str(Path(__file__).resolve()), "--worker", json.dumps(job)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {job['kind']} measurement failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _median(runs: list[dict]) -> dict:
    """The median run with its range (``population_speed.median_run``), the median of the runs' speeds and their
    count."""
    return {**median_run(runs), "median_s_per_agent_epoch": statistics.median(r["s_per_agent_epoch"] for r in runs),
            "repeats": len(runs)}


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or any(s < 1 for s in sizes):
        raise SystemExit(f"--sizes must be a comma-separated list of positive population sizes, got {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", help="a checkout of the authors' release (github.com/awjuliani/deep-rl-"
                                          "plasticity); without it only plasticity-lab and the limit are measured")
    parser.add_argument("--neuronav", help="a checkout of NeuroNav, if the release's Python does not have it")
    parser.add_argument("--release-python", default=sys.executable,
                        help="the Python that has the release's requirements (default: this one)")
    parser.add_argument("--sizes", default="1,15", help="plasticity-lab's population sizes")
    parser.add_argument("--epochs", type=int, default=100, help="epochs measured per row (100: one test each)")
    parser.add_argument("--warmup", type=int, default=20, help="epochs before the measured ones")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every measurement")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the rows this many times")
    parser.add_argument("--keep-denormals", action="store_true",
                        help="also measure the largest population with denormals kept "
                             "(PLASTICITY_LAB_FLUSH_DENORMALS=0), as studies before they were flushed trained")
    parser.add_argument("--json", help="write the rows and a manifest to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        job = json.loads(args.worker)
        kind = job.pop("kind")
        result = {"release": release_worker, "ours": ours_worker, "limit": limit_worker}[kind](**job)
        print(json.dumps(result))
        return result

    for name in ("epochs", "threads", "repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.warmup < 1:
        raise SystemExit(f"--warmup must be at least 1 (the release tests at its first epoch), got {args.warmup}")
    sizes = _parse_sizes(args.sizes)
    if args.release and not (Path(args.release) / "shared" / "runner.py").is_file():
        raise SystemExit(f"--release {args.release!r} is not a checkout of the authors' release "
                         f"(no shared/runner.py in it)")
    jobs = []
    if args.release:
        jobs.append((args.release_python, {"kind": "release", "release": str(Path(args.release).resolve()),
                                           "neuronav": args.neuronav and str(Path(args.neuronav).resolve()),
                                           "epochs": args.epochs, "warmup": args.warmup,
                                           "threads": args.threads, "seed": 0}))
    for members in sizes:
        jobs.append((sys.executable, {"kind": "ours", "members": members, "epochs": args.epochs,
                                      "warmup": args.warmup, "threads": args.threads}))
    if args.keep_denormals:
        jobs.append((sys.executable, {"kind": "ours", "members": max(sizes), "epochs": args.epochs,
                                      "warmup": args.warmup, "threads": args.threads, "flush_denormals": False}))
    jobs.append((sys.executable, {"kind": "limit", "threads": args.threads}))

    sys.path.insert(0, str(ROOT))
    from plasticity_lab.results import environment_info

    info = environment_info()  # read before measuring: the checkout's commit as the measurement starts
    runs: dict[int, list[dict]] = {i: [] for i in range(len(jobs))}
    started = time.perf_counter()
    for repeat in range(args.repeats):
        for i, (python, job) in enumerate(jobs):
            runs[i].append(_measure(python, dict(job), args.threads))
            print(f"  [{repeat + 1}/{args.repeats}] {runs[i][-1]['row']}: "
                  f"{runs[i][-1]['s_per_agent_epoch']:.4f} s per agent-epoch", file=sys.stderr, flush=True)
    rows = [_median(runs[i]) for i in range(len(jobs))]
    release = next((r for r in rows if r["row"] == "authors' release"), None)
    for r in rows:
        r["paper_grid_h"] = r["median_s_per_agent_epoch"] * PAPER_EPOCHS * GRID_RUNS / 3600
        r["speed_up_vs_release"] = (release["median_s_per_agent_epoch"] / r["median_s_per_agent_epoch"]
                                    if release else None)

    print(f"threads per process: {args.threads}; {args.epochs} epochs per measurement after {args.warmup}; "
          f"{args.repeats} repeat(s), the median shown (range in brackets)")
    print(f"{'':<48} {'s/agent-epoch':>13} {'range':>17} {'vs release':>10} {'paper grid (h)':>14}")
    for r in rows:
        vs = f"{r['speed_up_vs_release']:.1f}×" if r["speed_up_vs_release"] else "–"
        print(f"{r['row']:<48} {r['median_s_per_agent_epoch']:>13.4f} "
              f"{r['fastest']:>8.4f}–{r['slowest']:<8.4f} {vs:>10} {r['paper_grid_h']:>14.1f}")
    print(f"paper grid = {GRID_RUNS} runs (3 shifts × 11 conditions × 5 seeds) × {PAPER_EPOCHS:,} epochs in one "
          f"process at that speed; the limit row assumes every product ran at a large product's speed")
    if release and release.get("torchvision_stand_ins"):
        print("the release ran with stand-ins for torchvision's Resize and datasets (torchvision not installed); "
              "the measured path never calls them")

    if args.json:
        from plasticity_lab.storage import atomic_write_text

        manifest = {
            "benchmark": "benchmarks/release_speed.py",
            "arguments": {k: v for k, v in vars(args).items() if k not in ("worker", "json")},
            "release_commit": _git(args.release), "neuronav_commit": _git(args.neuronav),
            "release_environment": RELEASE_ENVIRONMENT,
            "flop_per_agent_epoch": FLOP_PER_AGENT_EPOCH,
            "wall_time_s": time.perf_counter() - started,
            **info,
        }
        atomic_write_text(args.json, json.dumps({"manifest": manifest, "rows": rows}, indent=1) + "\n")
    return {"rows": rows}


if __name__ == "__main__":
    main()
