"""Benchmark: gridworld agent-epochs per second for populations of agents trained as one batched computation.

Prints a table with, per population size: seconds per population epoch and per agent-epoch, the achieved
GFLOP/s and its fraction of a large float32 matmul's throughput measured in the same run (through MKL, which
``torch.mm`` calls, and through oneDNN: on CPUs that are not Intel's MKL runs its AVX2 code and reaches about
half of what oneDNN does, so both are printed), the peak resident memory of the process, and the projected time
of one paper-scale run (50 000 epochs) and of the whole paper-scale gridworld grid (3 shifts × 11 conditions × 5
seeds).

    python benchmarks/population_speed.py                    # sizes 1, 5, 15, 45 on the CPU
    python benchmarks/population_speed.py --sizes 15 --epochs 10 --device cuda
    python benchmarks/population_speed.py --profile 15       # where the time of one population goes
    python benchmarks/population_speed.py --processes 2 --threads 1   # as `plasticity-lab sweep --workers 2
                                                                     # --threads 1` trains a study
    python benchmarks/population_speed.py --sizes 15 --randomness member --execution eager,graphs
                                                                     # eager vs compiled graphs (see below)
    python benchmarks/population_speed.py --profile 180 --device cuda --execution graphs   # kernels and launches
    python benchmarks/population_speed.py --grid-chunk 200 --device cuda --mix --max-members 180 --execution graphs
    python benchmarks/population_speed.py --cpu-matmul blas          # training's products through MKL, not oneDNN
    python benchmarks/population_speed.py --cpu-matmul onednn,blas   # both, a row each, in the same run
    python benchmarks/population_speed.py --cpu-matmul onednn+sparse,onednn   # with and without the sparse
                                                                              # first layer
    python benchmarks/population_speed.py --sizes 15 --repeats 7     # the median of 7 runs, and their range
    python benchmarks/population_speed.py --sizes 15 --randomness population,member   # one generator vs each
                                                                     # run's own streams, a row each
    python benchmarks/population_speed.py --grid-chunk 200 --device cuda --processes 12   # a paper-scale chunk
    python benchmarks/population_speed.py --grid-chunk 200 --device cuda --mix --max-members 180 --processes 2
                                                                     # the chunk in mixed populations

Each population size runs in its own process, so its peak memory is its own. With ``--processes P``, P
populations of each size train at the same time in P processes of ``--threads`` threads each (how a sweep's
workers share the machine): the row is their combined throughput and memory, and the large matmul it is compared
with runs on P × threads threads.

``--grid-chunk E`` measures a real chunk of the paper-scale grid rather than a table: the populations of
``sweeps/gridworld-book.toml`` (its 12 conditions × 3 shifts × 5 seeds) at the ``paper`` preset (a pool of 100
levels, a test every 100 epochs) train their first E epochs through :func:`plasticity_lab.sweep.run_sweep`,
``--processes`` of them at a time, into a temporary folder. The wall time includes starting the worker processes
and storing the results; the whole grid (50 000 epochs per run) is projected from it.

``--execution graphs`` trains as ``RunConfig(execution="graphs")`` does: the collection step and the minibatch
update each compiled into one graph (:mod:`plasticity_lab.graphs`; CUDA graphs on a GPU). It needs
``--randomness member``. The first two population epochs, which compile, are the warm-up epochs left out of the
timing; the compile time is printed beside the row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# One agent-epoch: 1 100 forward passes to collect, then 51 minibatches of 64 rows, forward + backward. The
# backward pass computes every weight gradient (as many multiply-adds as the forward) and every input gradient
# except the first layer's (the observations need none): this counts the matrix products actually computed.
FORWARD_MACS = 363 * 256 + 256 * 256 + 256 * 4 + 256 * 1
BACKWARD_MACS = FORWARD_MACS + (FORWARD_MACS - 363 * 256)
FLOP_PER_AGENT_EPOCH = 2 * (1100 * FORWARD_MACS + 51 * 64 * (FORWARD_MACS + BACKWARD_MACS))
NOMINAL_FLOP_PER_AGENT_EPOCH = 2 * FORWARD_MACS * (1100 + 3 * 51 * 64)  # backward counted as 2× forward
PAPER_EPOCHS = 10 * 5000
GRID_RUNS = 3 * 11 * 5


def matmul_gflops(device: str, size: int = 2048, repeats: int = 20, onednn: bool = False) -> float:
    """GFLOP/s of a ``size``² float32 matrix product: ``torch.mm`` (MKL on x86 CPUs), or oneDNN's linear."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    if onednn:
        from plasticity_lab.backends.cpu_kernels import onednn_linear

        product = lambda: onednn_linear(a, b)  # noqa: E731
    else:
        product = lambda: a @ b  # noqa: E731
    for _ in range(3):
        product()
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        product()
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _paper_population(members: int, device: str, threads: int, execution: str = "eager", cpu_matmul: str = "auto",
                      randomness: str = "population"):
    """A population of ``members`` fresh agents at the paper's settings (11 episodes per epoch, a pool of 100
    permuted levels), its environments and a random generator; ``execution="graphs"``: its steps compiled;
    ``cpu_matmul``: the library of its training products on the CPU (:func:`plasticity_lab.backends.set_cpu_matmul`);
    ``randomness="member"``: as ``RunConfig(randomness="member")`` trains, each member's own streams (the root,
    from which :func:`_random` takes each epoch's place) and a size-invariant population."""
    import torch

    from plasticity_lab.backends import fastpath
    from plasticity_lab.envs.population import GridworldPopulation
    from plasticity_lab.nets import NetworkSpec
    from plasticity_lab.population import Population
    from plasticity_lab.shifts import distribution

    torch.set_num_threads(threads)
    fastpath.set_cpu_matmul(cpu_matmul)
    from plasticity_lab.streams import MemberStreams

    member = randomness == "member"
    population = Population(NetworkSpec(), list(range(members)), device=device, size_invariant=member)
    env = GridworldPopulation(members, 11, device=device)
    dists = [distribution("permute", seed, 1, pool_size=100) for seed in range(members)]
    env.set_distributions([d.train_levels for d in dists], [d.mapping for d in dists])
    generator = (MemberStreams.for_members([(seed, "permute") for seed in range(members)], device) if member
                 else torch.Generator(device=device).manual_seed(0))
    if execution == "graphs":
        from plasticity_lab.graphs import GraphedSteps

        population.graphs = GraphedSteps(population)
    return population, env, generator


def _random(source, phase: str, epoch: int):
    """The generator, or member streams at the epoch's place (as ``Experiment`` draws them)."""
    return source.at(phase, epoch) if hasattr(source, "at") else source


def one(members: int, epochs: int, device: str, threads: int, execution: str = "eager",
        cpu_matmul: str = "auto", randomness: str = "population") -> dict:
    import resource

    import torch

    from plasticity_lab.backends import denormals, fastpath
    from plasticity_lab.ppo import collect_episodes

    population, env, generator = _paper_population(members, device, threads, execution, cpu_matmul, randomness)
    collect_time = update_time = warm_up = 0.0
    for epoch in range(epochs + 2):  # two warm-up epochs
        with denormals.flushed():  # as training flushes them (PLASTICITY_LAB_FLUSH_DENORMALS=0 keeps them)
            _sync(device)
            t0 = time.perf_counter()
            rollout = collect_episodes(population, env, _random(generator, "collect", epoch))
            _sync(device)
            t1 = time.perf_counter()
            population.update(rollout, _random(generator, "update", epoch))
            _sync(device)
            t2 = time.perf_counter()
        if epoch >= 2:
            collect_time += t1 - t0
            update_time += t2 - t1
        else:
            warm_up += t2 - t0
    per_epoch = (collect_time + update_time) / epochs
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    matmul = fastpath.cpu_matmul() if device == "cpu" else device
    if device == "cpu" and cpu_matmul == "auto":
        matmul = f"auto→{matmul}"
    return {
        "members": members,
        "matmul": matmul,
        "matmul_reason": fastpath.cpu_matmul_reason() if device == "cpu" else "",
        "s_per_population_epoch": per_epoch,
        "s_per_agent_epoch": per_epoch / members,
        "collect_share": collect_time / (collect_time + update_time),
        "gflops": FLOP_PER_AGENT_EPOCH * members / per_epoch / 1e9,
        "peak_memory_mb": peak_mb,
        "execution": execution if population.graphs is None or population.graphs.fallback is None
        else f"graphs→eager ({population.graphs.fallback})",
        # graphs that the GPU could not replay as CUDA graphs (the compiler says why in its log)
        "cudagraph_skips": int(torch._dynamo.utils.counters["inductor"].get("cudagraph_skips", 0))
        if population.graphs is not None else 0,
        "warm_up_s": warm_up,
    }


# Where the time goes: the profiler's self time of each op, grouped.
PROFILE_GROUPS = {
    "matrix products": ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm", "mkldnn::_linear_pointwise",
                        "plasticity_lab::sparse_input_linear", "plasticity_lab::sparse_input_weight_grad"),
    "AdamW": ("aten::_fused_adamw_",),
    "minibatch gather": ("aten::index", "aten::index_select"),
    "memory copies": ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat"),
}


# Operations that only describe or allocate tensors: left out when counting the operations that compute.
METADATA_OPS = frozenset({
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::view", "aten::_unsafe_view", "aten::as_strided",
    "aten::transpose", "aten::t", "aten::select", "aten::slice", "aten::narrow", "aten::unsqueeze", "aten::squeeze",
    "aten::expand", "aten::reshape", "aten::_reshape_alias", "aten::permute", "aten::movedim", "aten::flatten",
    "aten::unbind", "aten::split", "aten::chunk", "aten::detach", "aten::alias", "aten::lift_fresh",
    "aten::resolve_conj", "aten::resolve_neg", "aten::result_type", "aten::item", "aten::_local_scalar_dense",
    "aten::is_nonzero", "aten::numel", "aten::size", "aten::stride",
})

# Conversions that, given a number (a 0-dimensional input), only turn it into a tensor argument of another operation.
SCALAR_CONVERSIONS = frozenset({"aten::to", "aten::_to_copy", "aten::copy_", "aten::scalar_tensor"})


def computing_ops(events) -> int:
    """How many operations that compute ran among profiler ``events``: ATen and oneDNN operations that call no
    other such operation, views and allocations left out, nor a scalar turned into a tensor, and this package's
    native operations (:mod:`plasticity_lab.backends.native`) as one each, whatever they call. On a GPU each is about one
    kernel launch, which for networks this small costs more than the kernel's arithmetic."""
    def native(e) -> bool:
        return e.name.startswith("plasticity_lab::")

    def computes(e) -> bool:
        scalar = e.name in SCALAR_CONVERSIONS and bool(e.input_shapes) and e.input_shapes[0] == []
        return e.name.startswith(("aten::", "mkldnn::")) and e.name not in METADATA_OPS and not scalar

    def inside_native(e) -> bool:
        parent = e.cpu_parent
        while parent is not None:
            if native(parent):
                return True
            parent = parent.cpu_parent
        return False

    return sum(1 for e in events if not inside_native(e)
               and (native(e) or computes(e) and not any(computes(c) or native(c) for c in e.cpu_children)))


def profile(members: int, epochs: int, device: str, threads: int, cpu_matmul: str = "auto",
            execution: str = "eager") -> None:
    """Print the profiler's breakdown of ``epochs`` population epochs (collection and update); with
    ``execution="graphs"`` (each member's own streams) the compiled steps, whose kernels a GPU launches per graph."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from plasticity_lab.backends import denormals
    from plasticity_lab.ppo import collect_episodes

    randomness = "member" if execution == "graphs" else "population"
    population, env, root = _paper_population(members, device, threads, execution, cpu_matmul, randomness)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with denormals.flushed():  # as training flushes them
        for epoch in range(2):  # warm-up (with graphs: their compilation)
            population.update(collect_episodes(population, env, _random(root, "collect", epoch)),
                              _random(root, "update", epoch))
        with torch_profile(activities=activities, record_shapes=True) as prof:
            for epoch in range(2, 2 + epochs):
                population.update(collect_episodes(population, env, _random(root, "collect", epoch)),
                                  _random(root, "update", epoch))
    events = prof.key_averages()
    ops = computing_ops(prof.events()) / epochs
    total = sum(e.self_cpu_time_total for e in events)
    shares = dict.fromkeys(PROFILE_GROUPS, 0.0)
    for e in events:
        for group, names in PROFILE_GROUPS.items():
            if e.key in names:
                shares[group] += e.self_cpu_time_total
    shares["everything else"] = total - sum(shares.values())
    print(f"profile: {members} members, {epochs} epochs, execution {execution}"
          + (f" (fell back to eager: {population.graphs.fallback})" if population.graphs is not None
             and population.graphs.fallback else "")
          + f", {total / 1e6 / epochs:.3f} s of CPU self time per epoch")
    for group, t in shares.items():
        print(f"  {group:<18} {100 * t / total:5.1f}%")
    print(f"  {ops:,.0f} operations that compute per population epoch ({ops / members:,.0f} per agent-epoch)")
    if device.startswith("cuda"):
        from torch.autograd import DeviceType

        kernels = sum(1 for e in prof.events() if e.device_type == DeviceType.CUDA) / epochs
        launches = {name: sum(1 for e in prof.events() if e.name == name) / epochs
                    for name in ("cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch")}
        print(f"  {kernels:,.0f} GPU kernels per population epoch; launches from the host per epoch: "
              + ", ".join(f"{n} {c:,.0f}" for n, c in launches.items()))
    print(events.table(sort_by="self_cpu_time_total", row_limit=12))


def _combined(rows: list[dict]) -> dict:
    """Populations trained at the same time, as one: their throughputs and memory add up."""
    if len(rows) == 1:
        return rows[0]
    members = sum(r["members"] for r in rows)
    agent_epochs_per_s = sum(r["members"] / r["s_per_population_epoch"] for r in rows)
    return {
        "members": members,
        "matmul": rows[0]["matmul"],
        "matmul_reason": rows[0].get("matmul_reason", ""),
        "randomness": rows[0].get("randomness", "population"),
        "execution": rows[0].get("execution", "eager"),
        "warm_up_s": max(r.get("warm_up_s", 0.0) for r in rows),
        "cudagraph_skips": sum(r.get("cudagraph_skips", 0) for r in rows),
        "label": f"{len(rows)}×{rows[0]['members']}",
        "s_per_population_epoch": max(r["s_per_population_epoch"] for r in rows),
        "s_per_agent_epoch": 1 / agent_epochs_per_s,
        "collect_share": sum(r["collect_share"] for r in rows) / len(rows),
        "gflops": sum(r["gflops"] for r in rows),
        "peak_memory_mb": sum(r["peak_memory_mb"] for r in rows),
    }


def grid_chunk(epochs: int, device: str, workers: int, threads: int, mix: bool = False, max_members: int | None = None,
               execution: str = "eager"
               ) -> dict:
    """Train the first ``epochs`` epochs of every run of the paper-scale gridworld grid as a sweep (see the module
    docstring) and return its size and timing, with the whole grid's projected hours. ``mix``: the sweep's
    ``mix_conditions`` (conditions that build the same network share populations, each run with its own streams),
    ``max_members``: its largest population (default the book's 15)."""
    import dataclasses
    import tempfile
    from pathlib import Path

    from plasticity_lab.sweep import Sweep, run_sweep

    book = Sweep.from_file(Path(__file__).resolve().parent.parent / "sweeps" / "gridworld-book.toml")
    overrides = {"rounds": 1, "epochs_per_round": epochs, "test_interval": 100, "device": device}
    if execution == "graphs":  # compiled steps draw from each run's own streams
        overrides.update(execution="graphs", randomness="member")
    sweep = dataclasses.replace(book, study="paper-grid-chunk", preset="paper", overrides=overrides, mix_conditions=mix,
        max_members=max_members or book.max_members)
    sweep.configs()  # validated as a sweep file would be
    runs = len(sweep.configs())
    with tempfile.TemporaryDirectory(prefix="paper-grid-chunk-") as out:
        start = time.perf_counter()
        run_sweep(sweep, out=out, workers=workers, threads=threads, progress=False)
        wall = time.perf_counter() - start
    per_agent = wall / (runs * epochs)
    return {"runs": runs, "populations": len(sweep.populations()), "epochs": epochs, "wall_s": wall,
            "s_per_agent_epoch": per_agent, "grid_h": per_agent * runs * PAPER_EPOCHS / 3600}


def median_run(runs: list[dict]) -> dict:
    """The run of median speed among repeated measurements of one row (the slower middle one of an even number),
    with the fastest and slowest run's ``s_per_agent_epoch`` added as ``fastest`` and ``slowest``. A real run
    rather than averaged columns, so that its figures stay consistent with each other."""
    ordered = sorted(runs, key=lambda r: r["s_per_agent_epoch"])
    return {**ordered[len(ordered) // 2], "fastest": ordered[0]["s_per_agent_epoch"],
            "slowest": ordered[-1]["s_per_agent_epoch"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,5,15,45")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="threads per process")
    parser.add_argument("--processes", type=int, default=1,
                        help="populations of each size trained at the same time, one per process")
    parser.add_argument("--profile", type=int, default=None, metavar="MEMBERS",
                        help="instead of the table, profile a population of this size and print where time goes")
    parser.add_argument("--execution", default="eager",
                        help="eager, graphs (the collection step and the update compiled: needs --randomness "
                             "member), or both separated by a comma (a row each, in the same run)")
    parser.add_argument("--cpu-matmul", default=os.environ.get("PLASTICITY_LAB_CPU_MATMUL", "auto"),
                        help="path of the products on the CPU: auto, onednn, onednn+sparse or blas, or several "
                             "separated by commas (a row each, in the same run); default: the environment's "
                             "PLASTICITY_LAB_CPU_MATMUL, else auto")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each row this many times, the rows in turn; the table shows the median run "
                             "and the range of s/agent-epoch (the machine's speed can drift over minutes)")
    parser.add_argument("--grid-chunk", type=int, default=None, metavar="EPOCHS",
                        help="instead of the table, train the first EPOCHS epochs of the paper-scale grid as a sweep "
                             "of --processes workers and project the whole grid from its wall time")
    parser.add_argument("--randomness", default="population",
                        help="population (one generator), member (each run's own streams, size-invariant "
                             "arithmetic: what mixed-condition populations need), or both separated by a comma "
                             "(a row each, in the same run)")
    parser.add_argument("--mix", action="store_true",
                        help="with --grid-chunk: conditions that build the same network share populations")
    parser.add_argument("--max-members", type=int, default=None,
                        help="with --grid-chunk: the largest population (default: the book sweep's 15)")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    kinds = args.cpu_matmul.split(",")
    randomness = args.randomness.split(",")
    executions = args.execution.split(",")
    from plasticity_lab.backends import fastpath
    from plasticity_lab.graphs import EXECUTIONS
    from plasticity_lab.streams import RANDOMNESS

    for choice in randomness:
        if choice not in RANDOMNESS:
            parser.error(f"unknown --randomness {choice!r}; valid: {', '.join(RANDOMNESS)}")
    for choice in executions:
        if choice not in EXECUTIONS:
            parser.error(f"unknown --execution {choice!r}; valid: {', '.join(EXECUTIONS)}")
    if "graphs" in executions and "population" in randomness and args.profile is None and args.grid_chunk is None:
        parser.error("--execution graphs needs --randomness member (a generator object cannot enter a graph)")

    for kind in kinds:
        try:
            fastpath.checked_cpu_matmul(kind, "--cpu-matmul")  # a fast path is probed: one that cannot run is an error
        except ValueError as error:
            parser.error(str(error))
    first = kinds[0]
    if args.profile is not None:
        profile(args.profile, min(args.epochs, 3), args.device, args.threads, first, executions[0])
        return
    if args.grid_chunk is not None:
        if args.grid_chunk < 1:
            parser.error(f"--grid-chunk must be at least 1 epoch; got {args.grid_chunk}")
        fastpath.set_cpu_matmul(first)
        os.environ[fastpath.VARIABLE] = first  # which the sweep's worker processes inherit
        r = grid_chunk(args.grid_chunk, args.device, args.processes, args.threads, args.mix, args.max_members,
                       executions[0])
        print(f"device={args.device} workers={args.processes} threads per worker={args.threads} "
              f"execution={executions[0]} "
              f"cpu matmul={(kinds[0] + ' → ' + fastpath.cpu_matmul()) if args.device == 'cpu' else '-'}")
        print(f"paper-scale grid chunk: {r['runs']} runs in {r['populations']} populations, first {r['epochs']} "
              f"epochs each: {r['wall_s']:.1f} s wall, {r['s_per_agent_epoch']:.5f} s per agent-epoch; the whole "
              f"grid ({r['runs']} runs × {PAPER_EPOCHS} epochs) projected at {r['grid_h']:.2f} h")
        return
    if args.one is not None:
        result = one(args.one, args.epochs, args.device, args.threads, executions[0], first, randomness[0])
        print(json.dumps({**result, "randomness": randomness[0]}))
        return

    import torch

    if min(args.processes, args.threads, args.repeats) < 1:
        parser.error("--processes, --threads and --repeats must be at least 1; got "
                     f"{args.processes}, {args.threads} and {args.repeats}")
    torch.set_num_threads(args.threads * args.processes)
    on_cpu = args.device == "cpu"
    references = {"MKL": lambda: matmul_gflops(args.device)}
    if on_cpu and fastpath.onednn_available():
        references["oneDNN"] = lambda: matmul_gflops(args.device, onednn=True)
    peaks = {name: measure() for name, measure in references.items()}
    runs: dict[tuple[int, str, str, str], list[dict]] = {}
    for _ in range(args.repeats):  # each repeat measures every row once, so that drift spreads over all rows
        for size in [int(s) for s in args.sizes.split(",")]:
            for kind in kinds:
                for choice in randomness:
                    for execution in executions:
                        command = [sys.executable, __file__, "--one", str(size), "--epochs", str(args.epochs),
                                   "--device", args.device, "--threads", str(args.threads), "--cpu-matmul", kind,
                                   "--randomness", choice, "--execution", execution]
                        workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
                                   for _ in range(args.processes)]
                        outputs = [w.communicate()[0] for w in workers]
                        if any(w.returncode for w in workers):
                            raise SystemExit(f"a benchmark process for {size} members failed")
                        runs.setdefault((size, kind, choice, execution), []).append(
                            _combined([json.loads(o.strip().splitlines()[-1]) for o in outputs]))
    rows = [median_run(r) for r in runs.values()]
    peaks = {name: max(peak, references[name]()) for name, peak in peaks.items()}
    print(f"device={args.device} processes={args.processes} threads per process={args.threads} "
          f"torch={torch.__version__}")
    print("large matmul (2048², float32, all threads): "
          + ", ".join(f"{peak:.1f} GFLOP/s through {name}" for name, peak in peaks.items())
          + f";  one agent-epoch = {FLOP_PER_AGENT_EPOCH / 1e9:.2f} GFLOP "
          f"of matrix products computed ({NOMINAL_FLOP_PER_AGENT_EPOCH / 1e9:.2f} if the backward is counted as 2× "
          "the forward)")
    shares = "".join(f" {'% of ' + name:>12}" for name in peaks)
    spread = f" {'range of ' + str(args.repeats):>15}" if args.repeats > 1 else ""
    header = (f"{'members':>7} {'matmul':>11} {'randomness':>10} {'execution':>9} {'s/pop-epoch':>11} {'s/agent-epoch':>13}{spread} "
              f"{'GFLOP/s':>8}{shares} {'collect %':>9} {'peak MB':>8} "
              f"{'paper run (h)':>13} {'paper grid (h)':>14} {'warm-up s':>9}")
    if args.repeats > 1:
        print(f"each row: the median of {args.repeats} runs; 'range of {args.repeats}': the fastest and slowest "
              "run's s/agent-epoch")
    print(header)
    for r in rows:
        per_agent = r["s_per_agent_epoch"]
        run_h = per_agent * r["members"] * PAPER_EPOCHS / 3600  # one population of this size, paper scale
        grid_h = per_agent * PAPER_EPOCHS * GRID_RUNS / 3600
        shares = "".join(f" {100 * r['gflops'] / peak:>11.1f}%" for peak in peaks.values())
        spread = f" {r['fastest']:>7.4f}–{r['slowest']:.4f}" if args.repeats > 1 else ""
        execution = r.get("execution", "eager")
        print(f"{r.get('label', r['members']):>7} {r['matmul']:>11} {r.get('randomness', 'population'):>10} "
              f"{execution if len(execution) <= 9 else 'fell back':>9} {r['s_per_population_epoch']:>11.3f} "
              f"{per_agent:>13.4f}{spread} {r['gflops']:>8.1f}{shares} "
              f"{100 * r['collect_share']:>8.0f}% {r['peak_memory_mb']:>8.0f} {run_h:>13.1f} {grid_h:>14.1f} {r.get('warm_up_s', 0.0):>9.1f}")
    if any(r["matmul"] == "onednn+sparse" for r in rows):
        print("onednn+sparse skips the observation's zeros in the first layer: its GFLOP/s and % count the products "
              "as if computed densely (the same work as the other rows), not the multiply-adds it computes.")
    for execution in sorted({r["execution"] for r in rows if len(r.get("execution", "")) > 9}):
        print(f"execution: {execution}")
    for r in rows:
        if r.get("cudagraph_skips"):
            print(f"{r.get('label', r['members'])} members, graphs: {r['cudagraph_skips']} graph(s) not replayed as "
                  "CUDA graphs (TORCH_LOGS=perf_hints says why)")
    print("warm-up s = the first two population epochs, left out of the timing (with graphs: their compilation)")
    for label, reason in sorted({(r["matmul"], r["matmul_reason"]) for r in rows if r.get("matmul_reason")}):
        print(f"{label}: {reason}")
    print("paper run = one population of that size (with --processes P: P populations at once) trained for "
          "10 × 5 000 epochs; "
          f"paper grid = {GRID_RUNS} runs at that population's per-agent speed.")


if __name__ == "__main__":
    main()
