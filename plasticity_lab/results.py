"""Writing and reading a run's results folder: ``epochs.parquet`` + ``manifest.json``.

Every write goes to a temporary file in the same folder and is renamed into place, so a crash never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

import pandas as pd

from .experiment import RUN_KEYS
from .storage import atomic_write

MANIFEST_FORMAT = 1


def git_commit() -> str | None:
    """The package checkout's commit (with ``-dirty`` if it has uncommitted changes), or None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict:
    """Package versions and hardware, for manifests."""
    import numpy
    import torch

    from . import __version__

    return {
        "package_version": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pandas": pd.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def write_run(folder: str | Path, df: pd.DataFrame, configs: list, wall_time: float,
              environment: dict | None = None) -> Path:
    """Store a run's per-epoch table and its manifest (configs, seeds, versions, hardware, wall time).

    ``environment`` should be :func:`environment_info` taken when the run *started* (the checkout may change
    while a long run trains); it defaults to the environment now.
    """
    folder = Path(folder)
    if (folder / "manifest.json").exists():
        raise FileExistsError(f"{folder} already holds results; choose another --out")
    manifest = {
        "format": MANIFEST_FORMAT,
        "configs": [c.resolved().to_dict() for c in configs],
        "presets": sorted({c.preset for c in configs}),
        "seeds": sorted({c.seed for c in configs}),
        "wall_time_s": round(wall_time, 3),
        **(environment if environment is not None else environment_info()),
    }
    atomic_write(folder / "epochs.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(folder / "manifest.json", lambda p: Path(p).write_text(json.dumps(manifest, indent=2)))
    return folder


def read_run(folder: str | Path) -> tuple[pd.DataFrame, dict]:
    """Load a folder written by :func:`write_run`."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    if manifest.get("format", 0) > MANIFEST_FORMAT:
        raise ValueError(f"{folder}/manifest.json has format {manifest['format']}, newer than this package "
                         f"reads ({MANIFEST_FORMAT}); upgrade plasticity-lab")
    return pd.read_parquet(folder / "epochs.parquet"), manifest


def normalised_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean (± std over seeds) normalised train and test reward per round, one row per shift × condition."""
    from .analysis import run_summary

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
