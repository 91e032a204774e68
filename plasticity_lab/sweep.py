"""Sweeps: a grid of runs (envs × shifts × conditions × seeds × coefficient values), trained as populations and
stored as a study under ``data/<study>/``.

A sweep file (TOML or YAML) names the grid::

    study = "gridworld-book"              # the folder under data/ (or --out)
    preset = "book"
    shifts = ["permute", "window", "expand"]
    conditions = ["warm_start", "reset_all", "soft_shrink_perturb+layernorm"]
    seeds = "0-4"                         # or a list of integers
    max_members = 15                      # the largest population trained as one computation
    keep_epochs = false                   # true: each population also keeps every epoch (epochs.parquet)
    mix_conditions = false                # true: conditions of one architecture share populations

    [overrides]                           # any RunConfig field, for every run
    epochs_per_round = 300

    [params.soft_shrink_perturb]          # coefficients of one condition: a list sweeps the values
    perturb = [1e-6, 1e-5, 1e-4]

The shifts apply to the environments that have them: Montezuma's Revenge (``envs = ["montezuma"]``) runs each
condition and seed once, with shift ``"none"``. ``[overrides.ppo]``, ``[overrides.rnd]`` and ``[overrides.atari]``
set fields of :class:`~plasticity_lab.ppo.PPOConfig`, :class:`~plasticity_lab.rnd.RNDConfig` and
:class:`~plasticity_lab.envs.montezuma.AtariSettings`.

Each condition's runs (shifts × seeds × coefficient values) are cut into populations of at most ``max_members``
members; a population is the unit of work, of checkpointing and of storage. With ``mix_conditions = true`` the
runs of every condition that builds the same network (all but LayerNorm, CReLU and injection, which each form their
own) are cut into populations together, and every run draws from its own random streams
(``randomness = "member"``), so each run's table is what it would be alone (:class:`~plasticity_lab.conditions.
MemberGroups`): fewer, larger populations, which is what a GPU needs. Re-running a sweep skips the
populations already stored and continues an interrupted one from its checkpoint, so the study ends identical to an
uninterrupted one. Populations train in turns across conditions and shifts (:func:`training_order`), so a study
stopped part-way holds some seeds of every condition under every shift. Populations run in local processes (:func:`run_sweep` with
``workers``) or on a Ray cluster (``backend="ray"``).

A study accepts only the sweep that made it. Its name, preset and overrides may be restated (the folder renamed, a
preset's old scale spelled out as overrides after the preset moved) as long as the sweep still produces exactly
the runs stored; anything else, a moved preset included, is refused before any work rather than mixed in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from .conditions import parse_condition, population_key
from .config import (ENVS, PRESETS, UNSHIFTED_ENVS, RunConfig, config_identity, parse_seeds,
                     settings_from_mappings)
from .results import (STUDY_FORMAT, read_manifest, environment_info, load_results, population_complete,
                      write_population)
from .storage import atomic_write_text

#: The keys a sweep file may hold.
SWEEP_KEYS = ("study", "envs", "shifts", "conditions", "seeds", "preset", "overrides", "params", "max_members",
              "curve_stride", "keep_epochs", "mix_conditions")
BACKENDS = ("local", "ray")
#: Sweep keys that may differ from a stored study's when the sweep still produces the runs stored.
RESTATABLE_KEYS = {"study", "preset", "overrides"}
#: The entries of a study's manifest besides the environment of the session that trained it and ``extra``.
STUDY_KEYS = ("format", "study", "sweep", "presets", "seeds", "populations", "wall_time_s", "last_session_started")


def _as_list(name: str, value, kind=str) -> list:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, kind) for v in value):
        raise ValueError(f"sweep key {name!r} must be a non-empty list of {kind.__name__}s; got {value!r}")
    return list(value)


@dataclass(frozen=True)
class Sweep:
    """A grid of runs. See the module docstring for the file format; the fields are its keys."""

    study: str
    conditions: tuple[str, ...]
    shifts: tuple[str, ...] = ("permute", "window", "expand")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    envs: tuple[str, ...] = ("gridworld",)
    preset: str = "book"
    overrides: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    max_members: int = 15
    curve_stride: int | None = None  # None: one curve point per test interval
    keep_epochs: bool = False  # also store each population's every epoch (what `plasticity-lab run` does)
    mix_conditions: bool = False  # conditions of one architecture train in shared populations

    @classmethod
    def from_dict(cls, data: dict) -> "Sweep":
        """Build and validate a sweep; every error names the bad key or value and the valid ones."""
        if not isinstance(data, dict):
            raise ValueError(f"a sweep must be a mapping of keys to values; got {type(data).__name__}")
        unknown = sorted(set(data) - set(SWEEP_KEYS))
        if unknown:
            raise ValueError(f"unknown sweep key(s) {unknown}; valid: {', '.join(SWEEP_KEYS)}")
        if "study" not in data or "conditions" not in data:
            raise ValueError("a sweep needs 'study' (its folder name) and 'conditions'")
        study = data["study"]
        if not isinstance(study, str) or not study or "/" in study or study.startswith("."):
            raise ValueError(f"study must be a folder name (no '/', not hidden); got {study!r}")
        values = {"study": study, "conditions": tuple(_as_list("conditions", data["conditions"]))}
        for key in ("shifts", "envs"):
            if key in data:
                values[key] = tuple(_as_list(key, data[key]))
        if "seeds" in data:
            seeds = data["seeds"]
            values["seeds"] = tuple(parse_seeds(seeds) if isinstance(seeds, str) else _as_list("seeds", seeds, int))
        if "preset" in data:
            if data["preset"] not in PRESETS:
                raise ValueError(f"unknown preset {data['preset']!r}; valid: {', '.join(PRESETS)}")
            values["preset"] = data["preset"]
        for key in ("overrides", "params"):
            if key in data:
                if not isinstance(data[key], dict):
                    raise ValueError(f"sweep key {key!r} must be a mapping; got {data[key]!r}")
                values[key] = data[key]
        for key in ("max_members", "curve_stride"):
            if data.get(key) is not None:
                v = data[key]
                if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                    raise ValueError(f"sweep key {key!r} must be a positive integer; got {v!r}")
                values[key] = v
        for key in ("keep_epochs", "mix_conditions"):
            if key in data:
                if not isinstance(data[key], bool):
                    raise ValueError(f"sweep key {key!r} must be true or false; got {data[key]!r}")
                values[key] = data[key]
        sweep = cls(**values)
        sweep.configs()  # validates envs, shifts, conditions, overrides and coefficients before any work
        return sweep

    @classmethod
    def from_file(cls, path: str | Path) -> "Sweep":
        """Read a ``.toml``, ``.yaml`` or ``.yml`` sweep file."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no sweep file at {path}")
        suffix = path.suffix.lower()
        if suffix not in (".toml", ".yaml", ".yml"):
            raise ValueError(f"unknown sweep file type {path.suffix!r}; valid: .toml, .yaml, .yml")
        try:
            if suffix == ".toml":
                import tomllib

                data = tomllib.loads(path.read_text())
            else:
                import yaml

                data = yaml.safe_load(path.read_text())
        except Exception as error:  # a syntax error of either format
            raise ValueError(f"cannot parse {path}: {error}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def defaults(cls) -> dict:
        """The keys a sweep may leave out, with the value they then take (as :meth:`to_dict` writes them): what
        a study's manifest from before a key existed means by leaving it out."""
        fields = [f for f in dataclasses.fields(cls) if f.name not in ("study", "conditions")]
        values = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory() for f in fields}
        return json.loads(json.dumps(values))

    def _param_grid(self, condition: str) -> list[dict]:
        """The coefficient combinations of one condition: the product of every listed value."""
        spec = self.params.get(condition, {})
        if not isinstance(spec, dict):
            raise ValueError(f"params.{condition} must be a mapping of coefficient names to values; got {spec!r}")
        names = sorted(spec)
        choices = [spec[n] if isinstance(spec[n], list) else [spec[n]] for n in names]
        return [dict(zip(names, combo)) for combo in itertools.product(*choices)]

    def configs(self) -> list[RunConfig]:
        """Every run of the grid, validated."""
        stray = sorted(set(self.params) - set(self.conditions))
        if stray:
            raise ValueError(f"params given for condition(s) {stray} that the sweep does not run; "
                             f"its conditions: {', '.join(self.conditions)}")
        for env in self.envs:
            if env not in ENVS:
                raise ValueError(f"unknown env {env!r}; valid: {', '.join(ENVS)}")
        fields = {f.name for f in dataclasses.fields(RunConfig)} - {"env", "shift", "condition", "seed", "preset",
                                                                       "condition_params"}
        unknown = sorted(set(self.overrides) - fields)
        if unknown:
            raise ValueError(f"unknown override(s) {unknown}; valid: {', '.join(sorted(fields))}")
        overrides = dict(self.overrides)
        if self.mix_conditions:
            if overrides.setdefault("randomness", "member") != "member":
                raise ValueError(f"mix_conditions needs every run's own random streams (randomness 'member'); "
                                 f"the overrides set randomness {overrides['randomness']!r}")
        settings_from_mappings(overrides, "override")  # [overrides.ppo] and the like are tables in a file
        # the shifts apply to the environments that have them; the others' runs take shift "none"
        return [RunConfig(env=env, shift=shift, condition=condition, seed=seed, preset=self.preset,
                          condition_params=params, **overrides)
                for env in self.envs for condition in self.conditions for params in self._param_grid(condition)
                for shift in (("none",) if env in UNSHIFTED_ENVS else self.shifts) for seed in self.seeds]

    def populations(self) -> list["PopulationTask"]:
        """The grid cut into populations: per env and condition (with ``mix_conditions``, per env and network),
        at most ``max_members`` runs each, in a fixed order (so the same sweep always forms the same populations)."""
        tasks = []
        groups: dict[tuple, list[RunConfig]] = {}
        for c in self.configs():
            key = (c.env, population_key(parse_condition(c.condition)) if self.mix_conditions else c.condition)
            groups.setdefault(key, []).append(c)
        for group in groups.values():
            n = math.ceil(len(group) / self.max_members)
            size = math.ceil(len(group) / n)  # balanced chunks
            for i in range(n):
                tasks.append(PopulationTask.of(group[i * size:(i + 1) * size]))
        return tasks


@dataclass(frozen=True)
class PopulationTask:
    """One population of a sweep: its name (stable for the same member configs) and configs."""

    name: str
    configs: tuple[RunConfig, ...]

    @classmethod
    def of(cls, configs: Sequence[RunConfig]) -> "PopulationTask":
        text = json.dumps([config_identity(c.resolved().to_dict()) for c in configs], sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        first = configs[0]
        conditions = {c.condition for c in configs}
        named = first.condition.replace('+', '_') if len(conditions) == 1 else "mixed"
        return cls(f"{first.env}-{named}-{digest}", tuple(configs))

    @property
    def conditions(self) -> list[str]:
        """The conditions of its runs, in the order they first appear."""
        return list(dict.fromkeys(c.condition for c in self.configs))

    @property
    def labels(self) -> list[str]:
        """The condition labels of its runs (coefficient values included), in the order they first appear."""
        return list(dict.fromkeys(c.label for c in self.configs))

    @property
    def shifts(self) -> list[str]:
        """The shifts of its runs, in the order they first appear."""
        return list(dict.fromkeys(c.shift for c in self.configs))

    def manifest_entry(self, wall_time_s: float) -> dict:
        """What the study's manifest says of it once stored (``conditions`` where it mixes several)."""
        return {"members": len(self.configs), "condition": self.configs[0].condition,
                **({"conditions": self.conditions} if len(self.conditions) > 1 else {}),
                "wall_time_s": round(wall_time_s, 3)}

    @property
    def agent_epochs(self) -> int:
        c = self.configs[0].resolved()
        return len(self.configs) * c.rounds * c.epochs_per_round

    def stride(self, curve_stride: int | None) -> int:
        return curve_stride or self.configs[0].resolved().test_interval


def training_order(tasks: Sequence[PopulationTask]) -> list[PopulationTask]:
    """``tasks`` taken in turn from each condition and shift (each env, condition labels and shifts of a
    population, in the order they first appear): the first population of every condition and shift, then the
    second of every one, and so on.

    A sweep cut into many populations per condition (``max_members = 1`` for CoinRun on a CPU) trains for days; in
    this order a study stopped part-way holds the first seeds of every condition under every shift, which can
    already be compared, instead of every seed of the first condition (or of its first shift) alone. What a
    population computes does not depend on when it trains."""
    queues: dict[tuple, list[PopulationTask]] = {}
    for task in tasks:
        queues.setdefault((task.configs[0].env, tuple(task.labels), tuple(task.shifts)), []).append(task)
    rounds = itertools.zip_longest(*queues.values())
    return [task for turn in rounds for task in turn if task is not None]


#: The states of a sweep's population in :func:`sweep_plan`.
PLAN_STATES = ("stored", "checkpoint", "to train")


def sweep_plan(sweep: Sweep, root: str | Path = "data", out: str | Path | None = None,
               checkpoint_dir: str | Path | None = None):
    """What is left of ``sweep``, without training or writing anything: a table of its populations in the order
    they train (:func:`training_order`) — ``population``, ``conditions`` (their labels), ``shifts``, ``runs``,
    ``agent_epochs``, ``state``, one of :data:`PLAN_STATES` (``"checkpoint"``: interrupted, it continues from
    its checkpoint), and ``wall_time_h``, the hours a stored population took as its manifest records them (NaN for
    the others). The folders are those of :func:`run_sweep`; a study made by another sweep is refused as there.

    A study of many small populations trains over days, in several sittings: this is what tells, before the next
    one, how much is stored and how much is left."""
    study = Path(out) if out is not None else Path(root) / sweep.study
    check_study(study, sweep)
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None else study / "checkpoints"
    rows = []
    for task in training_order(sweep.populations()):
        folder = study / "populations" / task.name
        wall = math.nan
        if population_complete(folder, task.configs):
            state = "stored"
            wall = read_manifest(folder / "manifest.json").get("wall_time_s", math.nan)
        elif (checkpoints / f"{task.name}.pt").exists():
            state = "checkpoint"
        else:
            state = "to train"
        rows.append({"population": task.name, "conditions": ", ".join(task.labels),
                     "shifts": ", ".join(task.shifts),
                     "runs": len(task.configs), "agent_epochs": task.agent_epochs, "state": state,
                     "wall_time_h": wall / 3600})
    return pd.DataFrame(rows, columns=["population", "conditions", "shifts", "runs", "agent_epochs", "state",
                                       "wall_time_h"])


def adopt_populations(sweep: Sweep, source: str | Path, root: str | Path = "data",
                      out: str | Path | None = None) -> list[str]:
    """Copy into ``sweep``'s study the finished populations of another study, ``source``, that the sweep itself
    would train, and record them in its manifest (each entry says ``adopted_from``); returns their names.

    A pilot grown into a larger study (more shifts, more seeds) keeps the runs it already paid for instead of
    training them again: a population's name is a digest of its runs' resolved configs, and a population is
    adopted only when the source holds it complete with exactly the configs this sweep's population of that name
    trains (:func:`~plasticity_lab.results.population_complete`), so what is adopted is what training it here
    would have stored. Each population keeps its own manifest (the commit, machine and wall time that made it).
    Nothing is overwritten: populations the study already holds are left as they are, and a source population is
    copied into a hidden folder of the study and then moved in, so an interrupted copy leaves nothing
    half-written among its populations. Nothing is trained."""
    source = Path(source)
    if not (source / "manifest.json").is_file():
        raise ValueError(f"{source} is not a stored study (it has no manifest.json)")
    study = Path(out) if out is not None else Path(root) / sweep.study
    if study.resolve() == source.resolve():
        raise ValueError(f"{source} is the sweep's own study; adopt from another study")
    check_study(study, sweep)
    source_name = read_manifest(source / "manifest.json").get("study", source.name)
    adopted = {}
    for task in sweep.populations():
        target = study / "populations" / task.name
        if target.exists() or not population_complete(source / "populations" / task.name, task.configs):
            continue
        staging = study / f".adopting-{task.name}"  # outside populations/, which the loaders read
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source / "populations" / task.name, staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        wall = read_manifest(target / "manifest.json").get("wall_time_s", 0.0)
        adopted[task.name] = {**task.manifest_entry(wall), "adopted_from": source_name}
    if adopted:
        write_study_manifest(study, sweep, environment_info(), None, adopted, trains=False)
    return list(adopted)


def train_population(task: PopulationTask, study: str | Path, checkpoint_dir: str | Path, curve_stride: int | None,
                     threads: int | None = None, checkpoint_every: int | None = None, progress=None,
                     keep_checkpoint: bool = False, keep_epochs: bool = False) -> dict:
    """Train one population (continuing from its checkpoint if there is one) and store its tables (with
    ``keep_epochs``, its every epoch too).

    ``progress`` is called with the number of epochs just trained. Returns ``{"name", "wall_time_s", "skipped"}``;
    the wall time includes that of the interrupted processes up to their last checkpoint.
    """
    from .experiment import experiment_for, train

    folder = Path(study) / "populations" / task.name
    if population_complete(folder, task.configs):
        return {"name": task.name, "wall_time_s": 0.0, "skipped": True}
    if threads is not None:
        torch.set_num_threads(threads)
    environment = environment_info()
    checkpoint = Path(checkpoint_dir) / f"{task.name}.pt"
    experiment = experiment_for(task.configs)
    resumed_from = train(experiment, checkpoint, checkpoint_every, on_epoch=progress)
    wall = experiment.elapsed_s
    store_population(task, folder, experiment, wall, curve_stride, environment, resumed_from, keep_epochs)
    if not keep_checkpoint:
        checkpoint.unlink(missing_ok=True)
    return {"name": task.name, "wall_time_s": wall, "skipped": False}


def store_population(task: PopulationTask, folder: Path, experiment, wall_time_s: float, curve_stride: int | None,
                     environment: dict, resumed_from: int = 0, keep_epochs: bool = False) -> None:
    """Store a finished population's tables and manifest in ``folder`` (:func:`~plasticity_lab.results.
    write_population`), with where it resumed from and the backend that computed it."""
    write_population(folder, experiment.table(), list(task.configs), wall_time_s, task.stride(curve_stride),
                     environment, extra={"resumed_from_epoch": resumed_from,
                                         # the backend that computed it ("backend" is the choice asked for, often
                                         # "auto")
                                         "population_backend": experiment.population.backend.name},
                     keep_epochs=keep_epochs)


def write_study_manifest(study: Path, sweep: Sweep, environment: dict, started: float | None, done: dict,
                         trains: bool = True, extra: dict | None = None) -> None:
    """Write the study's manifest: the sweep as given now, the populations finished so far (``done`` adds
    ``{name: PopulationTask.manifest_entry(...)}``), and the environment of this session, which started at
    ``started`` (seconds since the epoch; ``None``: not known, as for results converted from another layout).
    A session that ``trains`` nothing (every population already stored) only restates the sweep: the environment
    and start time stay those of the last session that trained, and so do the entries it added (``extra``, e.g.
    where converted results came from)."""
    manifest_path = study / "manifest.json"
    previous = read_manifest(manifest_path) if manifest_path.exists() else {}
    populations = dict(previous.get("populations", {}))
    populations.update(done)
    if not trains and previous:
        environment = {key: previous.get(key) for key in environment}
        started_text = previous.get("last_session_started")
        kept = {k: v for k, v in previous.items() if k not in STUDY_KEYS and k not in environment}
        extra = {**kept, **(extra or {})}
    else:
        started_text = None if started is None else time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started))
    manifest = {  # STUDY_KEYS, in this order
        "format": STUDY_FORMAT,
        "study": sweep.study,
        "sweep": sweep.to_dict(),
        "presets": [sweep.preset],
        "seeds": list(sweep.seeds),
        "populations": populations,
        "wall_time_s": round(sum(p.get("wall_time_s", 0.0) for p in populations.values()), 3),
        "last_session_started": started_text,
        **(extra or {}),
        **environment,
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2))


def check_study(study: Path, sweep: Sweep) -> None:
    """Refuse to write into a study made by a different sweep (nothing stored is overwritten)."""
    manifest_path = study / "manifest.json"
    if not manifest_path.exists():
        if study.exists() and any(study.iterdir()):
            raise ValueError(f"{study} exists and is not a sweep's study; choose another study name or --out")
        return
    manifest = read_manifest(manifest_path)
    stored = manifest.get("sweep")
    if stored is None:
        raise ValueError(f"{study} holds results of another kind (not a sweep); choose another study name or --out")
    stored = {**Sweep.defaults(), **stored}  # a key added since the study was made: it meant the default
    current = sweep.to_dict()
    changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
    # A renamed study, or its scale spelled out instead of named by a preset, is the same sweep when it produces
    # exactly the runs stored (population names are digests of the resolved configs).
    produced = {task.name for task in sweep.populations()}
    same_runs = bool(manifest.get("populations")) and set(manifest["populations"]) <= produced
    if changed and not (set(changed) <= RESTATABLE_KEYS and same_runs):
        raise ValueError(f"{study} was made by a different sweep (differs in {', '.join(changed)}); "
                         f"give this sweep another study name or --out")
    _check_stored_runs(study, sweep, produced)


def _check_stored_runs(study: Path, sweep: Sweep, produced: set[str]) -> None:
    """Refuse a study whose stored runs the same sweep file no longer produces (``produced``: the names of the
    sweep's populations): a preset's scale or a condition's defaults changed since it was made, and new runs would
    be mixed with the old ones."""
    stored = sorted(p for p in (study / "populations").glob("*/manifest.json") if p.parent.name not in produced)
    if not stored:
        return
    then = config_identity(read_manifest(stored[0])["configs"][0])
    key = (then["env"], then["shift"], then["condition"], then["seed"])
    now = next((config_identity(c.resolved().to_dict()) for c in sweep.configs()
                if (c.env, c.shift, c.condition, c.seed) == key), None)
    if now is None:
        detail = f"its run {'/'.join(map(str, key))} is not in this sweep"
    else:
        changed = sorted(k for k in set(then) | set(now) if then.get(k) != now.get(k))
        detail = ", ".join(f"{k}: stored {then.get(k)!r}, now {now.get(k)!r}" for k in changed)
    raise ValueError(f"{study} holds {len(stored)} population(s) that this sweep no longer produces ({detail}); "
                     f"a preset or a condition's defaults changed since it was made. Give this sweep another study "
                     f"name or --out")


def run_sweep(sweep: Sweep, root: str | Path = "data", out: str | Path | None = None, backend: str = "local",
              workers: int = 1, threads: int | None = None, address: str | None = None,
              checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None,
              progress: bool = True, keep_checkpoints: bool = False):
    """Train every population of ``sweep`` not yet stored, store each as it finishes, and return
    :func:`~plasticity_lab.results.load_results` of the study.

    * ``out`` — the study folder (default ``root/<sweep.study>``); ``checkpoint_dir`` — where unfinished
      populations keep their checkpoints (default ``<study>/checkpoints``, which git ignores);
    * ``backend="local"`` runs ``workers`` populations at a time in local processes (in this process when 1);
      ``backend="ray"`` submits every population as a Ray task to the cluster at ``address`` (a local Ray instance
      if None), each asking for ``threads`` CPUs;
    * ``threads`` — torch CPU threads per population (default: all cores shared among the workers).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
    for name, value in (("workers", workers), ("threads", threads), ("checkpoint_every", checkpoint_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    if address is not None and backend != "ray":
        raise ValueError("address is for backend='ray' only")
    study = Path(out) if out is not None else Path(root) / sweep.study
    check_study(study, sweep)
    tasks = sweep.populations()
    checkpoints = Path(checkpoint_dir) if checkpoint_dir is not None else study / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    environment = environment_info()
    started = time.time()
    # the turns are taken over the whole sweep, then what is stored is dropped: a study resumed after seed 0 of
    # every condition and seed 1 of the first goes on with seed 1 of the others, not seed 2 of the first
    todo = [t for t in training_order(tasks) if not population_complete(study / "populations" / t.name, t.configs)]
    write_study_manifest(study, sweep, environment, started, {}, trains=bool(todo))
    total = sum(t.agent_epochs for t in tasks)
    bar = _bar(total, progress, sweep.study)
    bar.update(total - sum(t.agent_epochs for t in todo))
    kwargs = dict(study=study, checkpoint_dir=checkpoints, curve_stride=sweep.curve_stride,
                  checkpoint_every=checkpoint_every, keep_checkpoint=keep_checkpoints, keep_epochs=sweep.keep_epochs)

    def finished(result: dict, task: PopulationTask) -> None:
        write_study_manifest(study, sweep, environment, started,
                             {task.name: task.manifest_entry(result["wall_time_s"])})

    if backend == "ray":
        _run_ray(todo, kwargs, threads or 1, address, bar, finished)
    elif workers == 1:
        for task in todo:
            members = len(task.configs)
            finished(train_population(task, threads=threads, progress=lambda n, m=members: bar.update(n * m),
                                      **kwargs), task)
    else:
        _run_processes(todo, kwargs, workers, threads, bar, finished)
    bar.close()
    return load_results(study)


def _run_processes(todo, kwargs, workers, threads, bar, finished) -> None:
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = threads or max(1, (torch.get_num_threads()) // workers)
    context = mp.get_context("spawn")  # a fresh interpreter per worker: no forked torch thread pools
    with context.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = {pool.submit(_worker, task, kwargs, threads, queue): task for task in todo}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                while not queue.empty():
                    bar.update(queue.get())
                for future in done:
                    finished(future.result(), futures[future])
            while not queue.empty():
                bar.update(queue.get())


def _worker(task, kwargs, threads, queue) -> dict:
    members = len(task.configs)
    return train_population(task, threads=threads, progress=lambda n: queue.put(n * members), **kwargs)


def _run_ray(todo, kwargs, threads, address, bar, finished) -> None:
    try:
        import ray
    except ImportError:
        raise ValueError("backend 'ray' needs Ray: pip install 'plasticity-lab[cluster]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=threads)(_ray_task)
        refs = {remote.remote(task, kwargs, threads): task for task in todo}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                task = refs[ref]
                finished(ray.get(ref), task)
                bar.update(task.agent_epochs)
    finally:
        if started_here:
            ray.shutdown()


def _ray_task(task, kwargs, threads) -> dict:
    return train_population(task, threads=threads, **kwargs)


def _bar(total: int, enabled: bool, desc: str):
    from .experiment import progress_bar

    return progress_bar(total, enabled, desc, unit="agent-epoch")
