"""Convert results stored as run folders into a study, the one format ``plasticity_lab`` reads.

Before it wrote studies, ``plasticity-lab run --out DIR`` wrote a *run folder*: ``DIR/epochs.parquet`` (every
epoch of one population) and ``DIR/manifest.json`` (its configs, versions, hardware, wall time); a study was kept
as a folder of such folders, one per condition. This script turns one run folder, or a folder of them, into the
study that ``plasticity-lab run`` writes today:

* one population per run folder, named as a sweep names it (``PopulationTask.of(configs).name``), holding the
  tables of :func:`plasticity_lab.results.summarise` computed from its ``epochs.parquet`` (curves in blocks of the
  configs' ``test_interval``, the stride a sweep uses), that ``epochs.parquet`` itself, and a manifest that keeps
  every provenance entry of the run folder's (commit, versions, hardware, wall time, any note) and adds
  ``"converted_from": "plasticity-lab run folders"``;
* a study manifest whose ``"sweep"`` is the sweep that produces exactly these runs (the smallest overrides of the
  preset that give the stored configs), so that a sweep file holding it is accepted by ``plasticity-lab sweep``.

The study is written to a temporary folder first and checked — every per-epoch table equal, value for value and
type for type, to the run folder's, every provenance entry kept, the study accepted by its own sweep — before
anything is moved or deleted. Converting in place (``NEW`` = ``OLD``) then removes the run folders' files; into
another folder, ``OLD`` is left as it was.

    python scripts/convert_run_folders.py OLD NEW [--study NAME]     # NAME: the sweep's study (default: NEW's name)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pandas as pd

from plasticity_lab.config import RunConfig
from plasticity_lab.results import load_results, read_manifest, write_population
from plasticity_lab.sweep import PopulationTask, Sweep, check_study, write_study_manifest

CONVERTED_FROM = "plasticity-lab run folders"
#: Entries of a run folder's manifest that are not provenance: its layout's version and what the study restates.
NOT_PROVENANCE = ("format", "configs", "wall_time_s")
#: Entries of the study manifest that its sweep states (not copied from the runs' provenance).
SWEEP_STATED = ("presets", "seeds")


def run_folders(old: Path) -> list[Path]:
    """``old`` itself if it is a run folder, else its run folders (sorted by name)."""
    folders = [old] if (old / "epochs.parquet").exists() else sorted(p.parent for p in old.glob("*/epochs.parquet"))
    if not folders:
        raise ValueError(f"{old} holds no run folder (a folder with epochs.parquet and manifest.json)")
    for folder in folders:
        if not (folder / "manifest.json").exists():
            raise ValueError(f"{folder} has epochs.parquet but no manifest.json: not a run folder")
    return folders


def overrides_of(config: RunConfig) -> dict:
    """The fewest RunConfig fields that, given to the config's preset, give its resolved values (a field another
    one derives from, such as ``test_interval`` from ``epochs_per_round``, is stated only where it differs)."""
    fixed = {"env": config.env, "shift": config.shift, "condition": config.condition, "seed": config.seed,
             "preset": config.preset, "condition_params": config.condition_params}
    target = config.resolved().to_dict()
    overrides: dict = {}
    for field in dataclasses.fields(RunConfig):
        if field.name in fixed:
            continue
        if RunConfig(**fixed, **overrides).resolved().to_dict()[field.name] != target[field.name]:
            if field.name == "ppo":
                raise ValueError("the runs' PPO settings differ from the defaults, which a sweep cannot state")
            overrides[field.name] = target[field.name]
    return overrides


def sweep_of(study: str, populations: list[list[RunConfig]]) -> Sweep:
    """The sweep that produces exactly ``populations`` (each a run folder's configs, in order), every epoch kept."""
    configs = [c for population in populations for c in population]

    def one(what: str, values: list):
        distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True) for v in values))
        if len(distinct) != 1:
            raise ValueError(f"the runs differ in {what} ({', '.join(distinct)}), which one sweep cannot state")
        return json.loads(distinct[0])

    params = {}
    for population in populations:
        value = one(f"the coefficients of {population[0].condition}", [c.condition_params for c in population])
        if value:
            params[population[0].condition] = value
    sweep = Sweep.from_dict({
        "study": study,
        "envs": list(dict.fromkeys(c.env for c in configs)),
        "shifts": list(dict.fromkeys(c.shift for c in configs)),
        "conditions": list(dict.fromkeys(p[0].condition for p in populations)),
        "seeds": list(dict.fromkeys(c.seed for c in configs)),
        "preset": one("preset", [c.preset for c in configs]),
        "overrides": one("the settings beyond their preset", [overrides_of(c) for c in configs]),
        "params": params,
        "max_members": max(len(p) for p in populations),
        "keep_epochs": True,
    })
    produced = [(t.name, [c.resolved().to_dict() for c in t.configs]) for t in sweep.populations()]
    stored = [(PopulationTask.of(p).name, [c.resolved().to_dict() for c in p]) for p in populations]
    if produced != stored:
        raise ValueError("no sweep forms these run folders' populations (each one condition's shifts × seeds, in "
                         "that order, one population per folder); they cannot be converted into a study")
    return sweep


def convert(old: str | Path, new: str | Path, study: str | None = None) -> Path:
    """Write the study of the run folders in ``old`` into ``new`` (``new`` = ``old``: in place); see the module
    docstring. Returns ``new``."""
    old, new = Path(old), Path(new)
    in_place = new.resolve() == old.resolve()
    if not in_place and new.exists() and any(new.iterdir()):
        raise ValueError(f"{new} exists and is not empty; give a new folder, or the same folder to convert in place")
    folders = run_folders(old)
    runs = []
    for folder in folders:
        manifest = read_manifest(folder / "manifest.json")
        if "sweep" in manifest or "population" in manifest:
            raise ValueError(f"{folder / 'manifest.json'} belongs to a study already")
        runs.append((folder, pd.read_parquet(folder / "epochs.parquet"), manifest,
                     [RunConfig.from_dict(c) for c in manifest["configs"]]))
    sweep = sweep_of(study or new.resolve().name, [configs for *_, configs in runs])
    taken = ["populations"] if folders == [old] else ["populations", "manifest.json"]  # a run folder's own goes
    if in_place and any((old / name).exists() for name in taken):
        raise ValueError(f"{old} holds a study's files beside its run folders; convert into another folder")

    new.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=new.resolve().parent, prefix=f".{new.resolve().name}.converting."))
    try:
        done, provenances = {}, []
        for folder, df, manifest, configs in runs:
            task = PopulationTask.of(configs)
            provenance = {k: v for k, v in manifest.items() if k not in NOT_PROVENANCE}
            provenances.append(provenance)
            write_population(staging / "populations" / task.name, df, configs, manifest["wall_time_s"],
                             task.stride(None), provenance, extra={"converted_from": CONVERTED_FROM},
                             keep_epochs=True)
            done[task.name] = {"members": len(configs), "condition": configs[0].condition,
                               "wall_time_s": round(manifest["wall_time_s"], 3)}
        shared = {k: v for k, v in provenances[0].items()
                  if k not in SWEEP_STATED and all(p.get(k, object()) == v for p in provenances[1:])}
        write_study_manifest(staging, sweep, shared, None, done, extra={"converted_from": CONVERTED_FROM})
        _check(staging, sweep, runs)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # from here on the checked study is the only copy of what is deleted: a failure leaves it in its folder
    _move_into_place(staging, new, folders if in_place else [])
    return new


def _check(study: Path, sweep: Sweep, runs: list) -> None:
    """The converted study holds every epoch, config and provenance entry of the run folders, and its sweep
    accepts it (raises AssertionError, or ValueError from the sweep, otherwise)."""
    check_study(study, sweep)
    results = load_results(study)
    for folder, df, manifest, configs in runs:
        name = PopulationTask.of(configs).name
        population = study / "populations" / name
        stored = pd.read_parquet(population / "epochs.parquet")
        pd.testing.assert_frame_equal(stored, df, check_exact=True)
        assert stored.equals(df) and list(stored.dtypes) == list(df.dtypes), f"{folder}: per-epoch table differs"
        written = json.loads((population / "manifest.json").read_text())
        assert written["configs"] == manifest["configs"], f"{folder}: configs differ"
        lost = [k for k in manifest if k not in ("format",) and written.get(k) != manifest[k]]
        assert not lost, f"{folder}: the converted manifest lost or changed {lost}"
        labels = list(dict.fromkeys(c.label for c in configs))
        pd.testing.assert_frame_equal(results.epochs(labels), df, check_exact=True)


def _move_into_place(staging: Path, new: Path, old_folders: list[Path]) -> None:
    """Rename the checked study to ``new``; in place, the run folders' files go first (the study's manifest may
    take the name of a run folder's own)."""
    if not old_folders:
        if new.exists():
            new.rmdir()  # empty: checked before anything was written
        os.replace(staging, new)
        return
    for folder in old_folders:
        for name in ("epochs.parquet", "manifest.json"):
            (folder / name).unlink()
        if folder != new and not any(folder.iterdir()):
            folder.rmdir()
    for item in ("populations", "manifest.json"):
        os.replace(staging / item, new / item)
    staging.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="a run folder, or a folder of run folders")
    parser.add_argument("new", help="the study folder to write (the same folder as OLD: convert in place)")
    parser.add_argument("--study", default=None, help="the study's name in its sweep (default: NEW's folder name)")
    args = parser.parse_args(argv)
    try:
        new = convert(args.old, args.new, args.study)
    except ValueError as error:
        print(f"convert_run_folders.py: error: {error}", file=sys.stderr)
        return 2
    results = load_results(new)
    for population in results.populations:
        print(f"  populations/{population['population']}: {len(population['configs'])} runs, every epoch equal to "
              f"the run folder's")
    print(f"{results!r}\nstored in {new}/ (its sweep: study = {results.manifest['sweep']['study']!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
