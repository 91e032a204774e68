"""Execute the book's chapters several at a time into the build's execution cache.

``jupyter-book build`` (Jupyter Book 1.x) runs the chapters one after another; each chapter runs its own small
experiments on one thread, so on a machine with several cores most of them sit idle. This script runs the chapters
that are not yet in the cache in parallel worker processes and stores each executed notebook in the same
jupyter-cache the build reads (``execute_notebooks: cache`` in ``_config.yml``). The build then finds them there,
matched by the hash of their code cells, and executes nothing again. A chapter that fails here is left out of the
cache, so the build executes it again and fails on its error as it would without this step.

    python scripts/execute_book.py CACHE_DIR [--jobs N]

``--jobs`` defaults to the environment variable ``BOOK_JOBS``, else to the number of usable cores (at most 4).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import yaml
from jupyter_cache import get_cache
from jupyter_cache.executors.basic import ExecutionWorkerLocalMProc, ProcessData

ROOT = Path(__file__).resolve().parent.parent
#: The reader myst-nb itself registers with jupyter-cache for MyST-markdown notebooks.
MYST_READER = {"type": "plugin", "name": "myst_nb_md"}


def chapters(root: Path = ROOT) -> list[Path]:
    """The chapters of ``_toc.yml`` that are notebooks (MyST markdown with code cells), in the book's order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    names = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    paths = [root / f"{name}.md" for name in names]
    return [p for p in paths if p.exists() and "```{code-cell}" in p.read_text()]


def default_jobs() -> int:
    """``BOOK_JOBS`` when set, else the number of usable cores (at most 4)."""
    value = os.environ.get("BOOK_JOBS", "")
    if value:
        if not value.isdigit() or int(value) < 1:
            raise SystemExit(f"execute_book.py: BOOK_JOBS={value!r} is not valid; use a whole number of chapters "
                             "run at once, 1 or more (1 leaves them to the build, one after another)")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(cores, 4)


def execute(cache_dir: Path, jobs: int, timeout: int, paths: list[Path] | None = None) -> list[str]:
    """Execute the uncached notebooks of ``paths`` (default: the book's chapters) with ``jobs`` processes, each in its
    own folder; return the paths of those that failed."""
    cache = get_cache(str(cache_dir))
    for path in chapters() if paths is None else paths:
        cache.add_nb_to_project(str(path), read_data=MYST_READER)
    # The longest chapters first, so that no long one is left to run alone at the end.
    records = sorted(cache.list_unexecuted(), key=lambda r: -Path(r.uri).stat().st_size)
    if not records:
        print("execute_book.py: every chapter is cached")
        return []
    print(f"execute_book.py: executing {len(records)} chapter(s), {jobs} at a time", flush=True)
    start = time.perf_counter()
    work = [ProcessData(r.pk, r.uri, cache, timeout, False) for r in records]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        results = pool.map(ExecutionWorkerLocalMProc(), work, chunksize=1)
    failed = [uri for status, uri in results if status != 0]
    print(f"execute_book.py: {len(records) - len(failed)} executed in {time.perf_counter() - start:.0f} s"
          + (f"; failed (the build runs them again and reports the error): {', '.join(failed)}" if failed else ""),
          flush=True)
    return failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir", type=Path, help="the build's jupyter-cache folder (_build/.jupyter_cache)")
    parser.add_argument("--jobs", type=int, default=None, help="chapters executed at once")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: _config.yml's)")
    args = parser.parse_args(argv)
    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        parser.error(f"--jobs must be at least 1, got {jobs}")
    timeout = args.timeout
    if timeout is None:
        timeout = yaml.safe_load((ROOT / "_config.yml").read_text()).get("execute", {}).get("timeout", 600)
    execute(args.cache_dir, jobs, timeout)
    return 0  # failures are the build's to report


if __name__ == "__main__":
    sys.exit(main())
