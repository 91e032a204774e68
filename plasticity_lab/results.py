"""Results on disk: one format, the study.

A study (under ``data/<study>/``, written by ``plasticity-lab sweep`` and by ``plasticity-lab run --out``) is a
``manifest.json`` (the sweep that made it, versions, hardware, wall time) and one folder per population under
``populations/`` with tidy tables — subsampled curves, per-round and per-run summaries computed from every epoch —
its own manifest (:func:`write_population`) and, where it was asked to keep it (``plasticity-lab run`` always
does), ``epochs.parquet``: every epoch, the table :func:`plasticity_lab.run` returns. :func:`load_results` reads
a study; :meth:`Results.epochs` its per-epoch tables.

Every write goes to a temporary file in the same folder and is renamed into place, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .schema import RUN_KEYS
from .storage import atomic_write

#: Version of the manifest of a run folder, the layout ``plasticity-lab run`` wrote before studies: still read, so
#: that ``scripts/convert_run_folders.py`` can turn one into a study.
MANIFEST_FORMAT = 1


@functools.cache
def git_commit() -> str | None:
    """The package checkout's commit (with ``-dirty`` if it has uncommitted changes), or None outside git.

    Read once per process, the first time it is asked for, and kept: a process runs the code it imported, so a
    checkout that moves on during a long sweep must not change what the process's later results record. (A sweep's
    worker asks as its first population starts, right after importing the package.)
    """
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


#: The libraries whose versions can change a run's numbers or its statistics: recorded where installed.
COMPUTING_LIBRARIES = ("torch", "numpy", "pandas", "scipy", "statsmodels", "gymnasium", "procgen-mirror", "procgen",
                       "ale-py")


def library_versions() -> dict:
    """The installed version of each of :data:`COMPUTING_LIBRARIES` (``None`` where it is not installed)."""
    from importlib import metadata

    versions = {}
    for name in COMPUTING_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment_info() -> dict:
    """Package versions and hardware, for manifests: where a run's numbers came from, down to the CPU's vector
    extensions and the path its products took (and why: see :mod:`plasticity_lab.backends`)."""
    import numpy
    import torch

    from . import __version__, backends

    path = backends.cpu_matmul()
    return {
        "package_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "libraries": library_versions(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **backends.cpu_info(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_matmul": path,
        "cpu_matmul_reason": backends.cpu_matmul_reason(),
        "sparse_kernels_isa": backends.sparse_kernels_isa() if path == "onednn+sparse" else None,
        "backend": os.environ.get(backends.BACKEND_VARIABLE) or "auto",
        "flush_denormals": backends.denormals.status(),
    }


def normalised_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean (± std over seeds) normalised train and test reward per round, one row per shift × condition."""
    from .stats import run_summary

    keys = [k for k in RUN_KEYS if k != "seed"]
    per_run_round = df.groupby([*RUN_KEYS, "round"])["normalised_train_return"].first()
    round_means = per_run_round.groupby([*keys, "round"]).mean()  # over seeds
    per_seed = run_summary(df, at="mean")  # each run's mean over rounds 2..R
    rows = []
    for group, part in per_seed.groupby(keys):
        row = dict(zip(keys, group))
        row["seeds"] = part["seed"].nunique()
        for split in ("train", "test"):
            values = part[f"normalised_{split}_return"]
            row[f"{split} r2..R mean"] = values.mean()
            row[f"{split} ±std"] = values.std(ddof=1) if len(values) > 1 else float("nan")
            if split == "train":
                row.update({f"r{r}": v for r, v in round_means.loc[group].items()})
        rows.append(row)
    return pd.DataFrame(rows).round(3)


# --------------------------------------------------------------------------------------------------------------
# The study store: what a sweep writes under data/<study>/ and load_results reads back
# --------------------------------------------------------------------------------------------------------------

#: Version of the study layout (``manifest.json``'s ``format``); a newer one is refused with a clear error.
STUDY_FORMAT = 1
#: The tables of a population folder (and of :class:`Results`), each a parquet file.
TABLES = ("curves", "rounds", "runs_mean", "runs_final")
#: The optional table of a population folder: every epoch (its manifest says ``"keeps_epochs": true``).
EPOCHS_TABLE = "epochs"
#: The script that turns the run folders ``plasticity-lab run`` wrote before studies were its format into a study.
CONVERSION_SCRIPT = "scripts/convert_run_folders.py"


def curve_table(df: pd.DataFrame, stride: int) -> pd.DataFrame:
    """Subsample per-epoch curves for storage: the mean of each block of ``stride`` epochs within a round.

    A row stands for epochs ``epoch - stride + 1 … epoch`` (``epochs_averaged`` of them; fewer at a round's end);
    ``test_return`` is the mean of the tests in the block (NaN if none). ``stride=1`` keeps every epoch.
    Statistics must not be computed from these curves (their smoothing windows are counted in epochs): use the
    ``rounds`` and ``runs_*`` tables, computed from every epoch before subsampling.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"curve stride must be a positive integer; got {stride!r}")
    keys = [k for k in RUN_KEYS if k in df.columns]
    block = df["epoch_in_round"] // stride
    groups = df.groupby([*keys, "round", block.rename("_block")], sort=False)
    numeric = [c for c in df.columns if c not in keys and c not in ("round", "epoch", "epoch_in_round")]
    out = groups[numeric].mean()
    out["epoch"] = groups["epoch"].max()
    out["epoch_in_round"] = groups["epoch_in_round"].max()
    out["epochs_averaged"] = groups["epoch"].size()
    out = out.reset_index().drop(columns="_block")
    return out[[*keys, "round", "epoch", "epoch_in_round", "epochs_averaged", *numeric]]


def summarise(df: pd.DataFrame, stride: int = 1) -> dict[str, pd.DataFrame]:
    """The stored tables of a per-epoch table: subsampled curves, per-round table and the two per-run summaries
    (:func:`plasticity_lab.stats.run_summary` with ``at="mean"`` and ``at="final"``); the per-round table is
    :func:`plasticity_lab.stats.round_table`, built here from every epoch because its read-outs need them. A
    Montezuma's Revenge table gets its own under the same names (:func:`plasticity_lab.montezuma_run.
    montezuma_summary`)."""
    from .stats import round_table, run_summary

    if "env" in df.columns and (df["env"] == "montezuma").any():  # no rounds or tests: tables of its own
        from .montezuma_run import montezuma_summary

        return montezuma_summary(df, stride)
    return {
        "curves": curve_table(df, stride),
        "rounds": round_table(df),
        "runs_mean": run_summary(df, at="mean"),
        "runs_final": run_summary(df, at="final"),
    }


def read_manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a plasticity-lab manifest (not a JSON object)")
    fmt = manifest.get("format", 0)
    newest = STUDY_FORMAT if "sweep" in manifest or "population" in manifest else MANIFEST_FORMAT
    if not isinstance(fmt, int) or fmt > newest:
        raise ValueError(f"{path} has format {fmt!r}, newer than this package reads ({newest}); "
                         f"upgrade plasticity-lab")
    return manifest


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as error:  # pyarrow raises several kinds for truncated or foreign files
        raise ValueError(f"cannot read {path}: corrupt or truncated results file ({error})") from None


def write_population(folder: str | Path, df: pd.DataFrame, configs: list, wall_time: float, stride: int,
                     environment: dict, extra: dict | None = None, keep_epochs: bool = False) -> Path:
    """Store one finished population: its tables (with ``keep_epochs``, also ``df`` itself as
    ``epochs.parquet``), then (last, so its presence means "complete") its manifest."""
    folder = Path(folder)
    tables = summarise(df, stride)
    if keep_epochs:
        tables[EPOCHS_TABLE] = df
    for name, table in tables.items():
        atomic_write(folder / f"{name}.parquet", lambda p, t=table: t.to_parquet(p, index=False))
    manifest = {
        "format": STUDY_FORMAT,
        "population": folder.name,
        "configs": [c.resolved().to_dict() for c in configs],
        "curve_stride": stride,
        "epochs": int(df["epoch"].max()) + 1,
        "keeps_epochs": keep_epochs,
        "wall_time_s": round(wall_time, 3),
        **(extra or {}),
        **environment,
    }
    atomic_write(folder / "manifest.json", lambda p: Path(p).write_text(json.dumps(manifest, indent=2)))
    return folder


def population_files(manifest: dict) -> list[str]:
    """The files of a finished population folder besides its manifest: the tables, and ``epochs.parquet`` where
    its manifest says it kept every epoch."""
    names = [*TABLES, *([EPOCHS_TABLE] if manifest.get("keeps_epochs") else [])]
    return [f"{name}.parquet" for name in names]


def population_complete(folder: str | Path, configs: list) -> bool:
    """Whether ``folder`` holds the finished results of exactly these ``configs``, compared as runs are told apart
    (:func:`~plasticity_lab.config.config_identity`): a population stored before a later setting existed is the
    same run as one with that setting at its earlier behaviour, and is not trained again."""
    from .config import config_identity

    path = Path(folder) / "manifest.json"
    if not path.exists():
        return False
    manifest = read_manifest(path)
    stored = [config_identity(c) for c in manifest.get("configs") or []]
    # through JSON, as the manifest holds them (tuples become lists)
    wanted = json.loads(json.dumps([config_identity(c.resolved().to_dict()) for c in configs]))
    return stored == wanted and all((Path(folder) / name).exists() for name in population_files(manifest))


class Results:
    """A stored study, loaded: tidy pandas tables plus the manifest(s).

    * ``curves`` — per-epoch curves, one row per run and block of ``epochs_averaged`` epochs (for plots);
    * ``rounds`` — one row per run × round: read-outs, normalised rewards, round means of returns and diagnostics,
      and (in studies stored since they were added) the release's read-outs that ``readout="release"`` reads;
    * ``runs(at)`` — one row per run: normalised reward (mean over rounds 2..R for ``at="mean"``, round R for
      ``"final"``) and diagnostics; what :func:`~plasticity_lab.stats.condition_ttests`,
      :func:`~plasticity_lab.stats.diagnostic_correlations` and
      :func:`~plasticity_lab.stats.diagnostics_glm` take;
    * ``manifest`` — the study's manifest; ``populations`` — each population's manifest (configs, versions,
      hardware, wall time);
    * ``epochs(conditions)`` — every epoch of the runs whose populations kept it (read from disk when asked: it is
      by far the largest table).
    """

    def __init__(self, path: Path, tables: dict[str, pd.DataFrame], manifest: dict, populations: list[dict]):
        self.path = path
        self.curves = tables["curves"]
        self.rounds = tables["rounds"]
        self._runs = {"mean": tables["runs_mean"], "final": tables["runs_final"]}
        self.manifest = manifest
        self.populations = populations

    def runs(self, at: str = "mean") -> pd.DataFrame:
        if at not in self._runs:
            raise ValueError(f"unknown at={at!r}; valid: mean, final")
        table = self._runs[at].copy()
        table.attrs["at"] = at
        return table

    @property
    def configs(self) -> list[dict]:
        return [c for p in self.populations for c in p["configs"]]

    @property
    def planned_labels(self) -> list[str] | None:
        """The condition label of every run the study's sweep computes, stored or not (coefficient values
        included), or ``None`` when the manifest records no sweep this package can read. A study trained in
        sittings holds fewer runs than this until it is complete."""
        from .sweep import Sweep

        if "sweep" not in self.manifest:
            return None
        try:
            configs = Sweep.from_dict(self.manifest["sweep"]).configs()
        except ValueError:  # a sweep of an older or newer package: its plan is unknown here
            return None
        return [c.label for c in configs]

    def epochs(self, conditions: Sequence[str] | None = None) -> pd.DataFrame:
        """Every epoch of the study's runs (for ``conditions``, condition labels as the tables name them; default
        all): the per-epoch tables of the populations that kept them, concatenated in the order of
        :attr:`populations` — for one population, exactly the table :func:`plasticity_lab.run` returned.

        Only populations written with ``keep_epochs`` (every ``plasticity-lab run --out``; a sweep with
        ``keep_epochs = true``) have one; a request none of them can answer raises one ``ValueError``.
        """
        labels = [_labels(p) for p in self.populations]
        kept = [(p, held) for p, held in zip(self.populations, labels) if p.get("keeps_epochs")]
        lacking = []
        if conditions is not None:
            conditions = [conditions] if isinstance(conditions, str) else list(conditions)
            every = set().union(*labels)
            unknown = [c for c in conditions if c not in every]
            if unknown:
                raise ValueError(f"study {self.path.name} holds no condition {', '.join(map(repr, unknown))}; "
                                 f"it holds: {', '.join(sorted(every))}")
            lacking = [c for c in conditions if not any(c in held for _, held in kept)]
            kept = [(p, held) for p, held in kept if held & set(conditions)]
        if lacking or not kept:
            whose = f"the populations of {', '.join(lacking)}" if lacking else "its populations"
            raise ValueError(f"study {self.path.name}: {whose} did not keep every epoch (only the tables "
                             f"{', '.join(TABLES)}); a study keeps them when written by `plasticity-lab run --out` "
                             f"or by a sweep with keep_epochs = true")
        df = pd.concat([_read_parquet(self.path / "populations" / p["population"] / f"{EPOCHS_TABLE}.parquet")
                        for p, _ in kept], ignore_index=True)
        if conditions is not None:
            df = df[df["condition"].isin(conditions)].reset_index(drop=True)
        return df

    def condition_params(self) -> pd.DataFrame:
        """One row per condition label of the study, with a column per overridden coefficient (a coefficient
        sweep's grid), e.g. ``condition="soft_shrink_perturb[perturb=1e-05,shrink=1]", perturb=1e-05, shrink=1``."""
        from .config import RunConfig

        rows = {}
        for data in self.configs:
            config = RunConfig.from_dict(data)
            rows[config.label] = {"condition": config.label, "base_condition": config.condition,
                                  **config.condition_params}
        return pd.DataFrame(list(rows.values()))

    def describe(self) -> str:
        """One line for figure captions: study, preset(s) and scale, seeds."""
        from .config import at_preset_scale, scale_text

        configs = self.configs
        presets = sorted({c["preset"] for c in configs})
        scale = "; ".join(sorted({scale_text(c) for c in configs}))
        as_defined = all(at_preset_scale(c) for c in configs)
        preset_text = f"preset {'/'.join(presets)}" + ("" if as_defined else " with its scale overridden")
        seeds = sorted({c["seed"] for c in configs})
        return (f"study {self.path.name}, {preset_text} ({scale}), "
                f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")

    def __repr__(self) -> str:
        return f"<Results {self.describe()}: {len(self.runs())} runs>"


def load_results(path: str | Path) -> Results:
    """Load a stored study (``data/<study>``, written by ``plasticity-lab sweep`` or ``plasticity-lab run``) into
    :class:`Results`.

    A corrupt or truncated file, a manifest of a newer format, or a folder in the run-folder layout that
    ``plasticity-lab run`` wrote before the study was its format, raises one ``ValueError`` naming the folder or
    file (and, for run folders, the script that converts them).
    """
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"no results folder at {path}")
    manifest_path = path / "manifest.json"
    manifest = read_manifest(manifest_path) if manifest_path.exists() else None
    if manifest is None or "sweep" not in manifest:
        if (path / "epochs.parquet").exists() or any(path.glob("*/epochs.parquet")):
            raise ValueError(f"{path} is in the run-folder layout (epochs.parquet + manifest.json per run) that "
                             f"`plasticity-lab run` wrote before it wrote studies; this version reads studies only. "
                             f"Convert it into one with: python {CONVERSION_SCRIPT} {path} {path}")
        if manifest is not None:
            raise ValueError(f"{manifest_path} is not the manifest of a study (it records no sweep)")
        raise ValueError(f"{path} holds no finished results yet")
    folders = sorted(p.parent for p in (path / "populations").glob("*/manifest.json"))
    if not folders:
        raise ValueError(f"{path} holds no finished results yet")
    parts = [_load_population(f) for f in folders]
    tables = {name: pd.concat([p[0][name] for p in parts], ignore_index=True) for name in TABLES}
    return Results(path, tables, manifest, [p[1] for p in parts])


#: Where the repository's stored studies can be downloaded from (its ``data/`` folder on GitHub); the environment
#: variable ``PLASTICITY_LAB_DATA_URL`` names another place (any URL ``urllib`` opens, ``file://`` included).
DATA_URL = "https://raw.githubusercontent.com/plasticity-lab/plasticity-lab/main/data"
DATA_URL_VARIABLE = "PLASTICITY_LAB_DATA_URL"


def fetch_study(name: str, dest: str | Path, base_url: str | None = None, timeout: float = 60,
                conditions: Sequence[str] | None = None) -> Path:
    """Download the stored study ``name`` — its manifest and the manifest and files of every population the
    manifest lists as finished (its tables, and its every epoch where it kept them) — from ``base_url/name``
    (default: :data:`DATA_URL`, or the URL in ``$PLASTICITY_LAB_DATA_URL``) into the folder ``dest``, and return
    ``dest``. With ``conditions`` (condition labels), only the populations of those conditions.

    For a notebook opened without the repository (on Colab). The files land in a temporary folder beside ``dest``
    that is renamed into place once every file has arrived, so a failed download leaves nothing behind; it raises
    the ``OSError`` (e.g. ``urllib.error.URLError``) that stopped it. An existing ``dest`` is refused.
    """
    import shutil
    import tempfile
    import urllib.request

    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"study name {name!r} must be a single folder name, e.g. 'gridworld-book'")
    dest = Path(dest)
    if dest.exists():
        raise ValueError(f"{dest} exists already; fetch_study writes only new folders")
    base = (base_url or os.environ.get(DATA_URL_VARIABLE) or DATA_URL).rstrip("/") + f"/{name}"

    def get(relative: str, into: Path) -> bytes:
        with urllib.request.urlopen(f"{base}/{relative}", timeout=timeout) as response:
            data = response.read()
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return data

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        manifest = json.loads(get("manifest.json", staging))
        if "sweep" not in manifest:
            raise ValueError(f"{base}/manifest.json is not the manifest of a sweep study")
        # the study manifest names each population's condition without its coefficients: "l2" for "l2[coef=0.1]"
        wanted = None if conditions is None else {c.split("[")[0] for c in conditions}
        for population, entry in manifest.get("populations", {}).items():
            held = set(entry.get("conditions", [entry.get("condition")]))  # a mixed population names them all
            if wanted is not None and not held & wanted:
                continue
            folder = f"populations/{population}"
            for file in population_files(json.loads(get(f"{folder}/manifest.json", staging))):
                get(f"{folder}/{file}", staging)
        os.replace(staging, dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dest


def _load_population(folder: Path) -> tuple[dict[str, pd.DataFrame], dict]:
    manifest = read_manifest(folder / "manifest.json")
    return {name: _read_parquet(folder / f"{name}.parquet") for name in TABLES}, manifest


def _labels(manifest: dict) -> set[str]:
    """The condition labels (as the tables name them) of a population's runs."""
    from .config import RunConfig

    return {RunConfig.from_dict(c).label for c in manifest["configs"]}
