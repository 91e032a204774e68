"""Execute the book's chapters several at a time into the build's execution cache, and report failed chapters.

``jupyter-book build`` (Jupyter Book 1.x) runs the chapters one after another; each chapter runs its own small
experiments on one thread, so on a machine with several cores most of them sit idle. This script runs the chapters
that are not yet in the cache in parallel worker processes and stores each executed notebook in the same
jupyter-cache the build reads (``execute_notebooks: cache`` in ``_config.yml``). The build then finds them there,
matched by the hash of their code cells, and executes nothing again.

It prints one line as each chapter starts and one as it finishes (with its time); a chapter that fails is one line
naming the chapter, the cell (its number among the chapter's code cells and its line in the ``.md``) and the error's
first line, without the traceback (it stays in the execution cache's record of the chapter, and a build that
executes the chapter itself shows it in the page). A failed chapter is left out of the cache; ``--failed-list FILE``
writes the failed chapters, one a line (path, tab, error), for ``scripts/build_book.sh``, which builds every other
page and then exits non-zero.

    python scripts/execute_book.py CACHE_DIR [--jobs N] [--failed-list FILE]
    python scripts/execute_book.py CACHE_DIR --report      # after a build: one line per failed chapter, exit 1 if any

``--jobs`` defaults to the environment variable ``BOOK_JOBS``, else to the number of usable cores (at most 4).
Exit status: 0 when every chapter ran (or is cached), 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from jupyter_cache import get_cache
from jupyter_cache.cache.db import NbProjectRecord
from jupyter_cache.executors.utils import create_cache_bundle, single_nb_execution

ROOT = Path(__file__).resolve().parent.parent
#: The reader myst-nb itself registers with jupyter-cache for MyST-markdown notebooks.
MYST_READER = {"type": "plugin", "name": "myst_nb_md"}
#: Extra arguments of every kernel this script starts: ipykernel's own log at ERROR, which silences its warning
#: "Kernel is running over TCP without encryption" (one per chapter; the kernel listens on localhost only).
#: What the chapters print, warnings included, still goes into their outputs.
QUIET_KERNEL = ["--IPKernelApp.log_level=ERROR"]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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


def _name(uri: str) -> str:
    path = Path(uri)
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return path.name


def first_error(uri: str, exc_string: str | None) -> str:
    """One line for a chapter's failure, from the traceback jupyter-cache stores: which code cell (its number, and
    its line in the chapter's source) and the error's first line, without colour codes."""
    text = _ANSI.sub("", exc_string or "")
    where, message = "", ""
    cell = re.search(r"An error occurred while executing the following cell:\n-{6,}\n(.*?)\n-{6,}\n(.*)", text,
                     re.S)
    if cell:
        source, rest = cell.group(1), cell.group(2)
        lines = [line for line in rest.splitlines() if line.strip()]
        # IPython's traceback ends with "Name: value"; a value of several lines starts on that line
        named = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b",
                                                    line)]
        message = (named[-1] if named else lines[-1] if lines else "").strip()
        where = _cell_location(uri, source)
    else:
        timeout = re.search(r"(A cell timed out[^\n]*)", text)
        lines = [line for line in text.splitlines() if line.strip()]
        message = timeout.group(1) if timeout else (lines[-1].strip() if lines else "no traceback was recorded")
    if len(message) > 240:
        message = message[:237] + "..."
    return f"{where}: {message}" if where else message


def _cell_location(uri: str, source: str) -> str:
    """``cell K (line L)``: the code cell's number among the chapter's code cells and the line of its first
    source line in the file; whatever of the two can be found."""
    try:
        import jupytext

        path = Path(uri)
        text = path.read_text()
        cells = [c for c in jupytext.read(path, fmt="md:myst").cells if c.cell_type == "code"]
    except Exception:  # the report must not fail on a chapter it cannot read
        return ""
    number = next((k for k, c in enumerate(cells, 1) if c.source.strip() == source.strip()), None)
    offset = text.find(source.strip()) if source.strip() else -1
    parts = []
    if number is not None:
        parts.append(f"cell {number}")
    if offset >= 0:
        parts.append(f"line {text[:offset].count(chr(10)) + 1}")
    return f"{parts[0]} ({parts[1]})" if len(parts) == 2 else (parts[0] if parts else "")


def run_one(cache_dir: Path, uri: str, timeout: int) -> str | None:
    """Execute one chapter of the cache's project into the cache; return its one-line error, or None."""
    cache = get_cache(str(cache_dir))
    record = cache.get_project_record(uri)
    try:
        project_nb = cache.get_project_notebook(record.pk)
        NbProjectRecord.remove_tracebacks([record.pk], cache.db)
        result = single_nb_execution(project_nb.nb, cwd=str(Path(project_nb.uri).parent), timeout=timeout,
                                     allow_errors=False, extra_arguments=QUIET_KERNEL)
        if result.err is not None:
            NbProjectRecord.set_traceback(project_nb.uri, result.exc_string, cache.db)
            return first_error(uri, result.exc_string)
        bundle = create_cache_bundle(project_nb, result.cwd, None, result.time, result.exc_string)
        cache.cache_notebook_bundle(bundle, check_validity=False, overwrite=True)
    except Exception as error:  # a dead kernel, a cache that cannot be written: still one line
        lines = _ANSI.sub("", str(error)).strip().splitlines()
        message = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
        try:
            NbProjectRecord.set_traceback(uri, message, cache.db)
        except Exception:
            pass
        return message
    return None


#: The thread pools a chapter's libraries would size to the machine (OpenMP, OpenBLAS, MKL). The chapters run their
#: experiments on one thread each, one chapter per core; a library that still starts a pool per core spins its
#: threads against the other chapters' and slows every chapter many times over (the Montezuma chapter most).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_thread_env() -> dict[str, str]:
    """This process's environment with each of :data:`THREAD_VARIABLES` set to 1 where it is not set already."""
    env = dict(os.environ)
    for variable in THREAD_VARIABLES:
        env.setdefault(variable, "1")
    return env


def _run_in_process(cache_dir: Path, uri: str, timeout: int) -> tuple[float, str | None]:
    """Run :func:`run_one` in a fresh Python process (``--run-one``); its seconds and error. A process that dies
    is an error too, named by its last line on stderr."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(Path(__file__).resolve()), str(cache_dir), "--run-one", uri,
                             "--timeout", str(timeout)], capture_output=True, text=True, env=one_thread_env())
    seconds = time.perf_counter() - start
    lines = result.stdout.strip().splitlines()
    if result.returncode in (0, 1) and lines and lines[-1].startswith("{"):
        return seconds, json.loads(lines[-1])["error"]
    stderr = [line for line in _ANSI.sub("", result.stderr).splitlines() if line.strip()]
    return seconds, f"the process executing it exited with status {result.returncode}" + (
        f": {stderr[-1].strip()}" if stderr else "")


def execute(cache_dir: Path, jobs: int, timeout: int, paths: list[Path] | None = None) -> list[str]:
    """Execute the uncached notebooks of ``paths`` (default: the book's chapters) with ``jobs`` processes, each in its
    own folder; return the paths of those that failed."""
    cache = get_cache(str(cache_dir))
    for path in chapters() if paths is None else paths:
        cache.add_nb_to_project(str(path), read_data=MYST_READER)
    # The longest chapters first, so that no long one is left to run alone at the end.
    records = sorted(cache.list_unexecuted(), key=lambda r: -Path(r.uri).stat().st_size)
    if not records:
        print("execute_book.py: every chapter is cached", flush=True)
        return []
    total = len(records)
    jobs = min(jobs, total)
    print(f"execute_book.py: executing {total} chapter(s), {jobs} at a time", flush=True)
    start = time.perf_counter()
    failed: list[tuple[str, str]] = []
    done = 0
    lock = threading.Lock()

    def one(uri: str) -> None:
        nonlocal done
        print(f"execute_book.py: {_name(uri)} started", flush=True)
        seconds, error = _run_in_process(Path(cache_dir).resolve(), uri, timeout)
        with lock:
            done += 1
            if error is None:
                print(f"execute_book.py: [{done}/{total}] {_name(uri)} done in {seconds:.0f} s", flush=True)
            else:
                failed.append((uri, error))
                print(f"execute_book.py: [{done}/{total}] {_name(uri)} FAILED after {seconds:.0f} s at {error}",
                      flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, [r.uri for r in records]))
    print(f"execute_book.py: {total - len(failed)} executed in {time.perf_counter() - start:.0f} s"
          + (f"; {len(failed)} failed: {', '.join(_name(u) for u, _ in failed)}" if failed else ""), flush=True)
    order = {r.uri: k for k, r in enumerate(records)}
    return [uri for uri, _ in sorted(failed, key=lambda f: order[f[0]])]


def failures(cache_dir: Path, paths: list[Path] | None = None) -> list[tuple[str, str]]:
    """The chapters of ``paths`` (default: the book's) that the cache holds no executed copy of and whose last
    execution failed — by this script or by the build itself — each with its one-line error."""
    if not Path(cache_dir).exists():
        return []
    cache = get_cache(str(cache_dir))
    wanted = [str(p) for p in (chapters() if paths is None else paths)]
    out = []
    for record in cache.list_project_records():
        if record.uri not in wanted or not record.traceback:
            continue
        try:
            if cache.get_cached_project_nb(record.pk) is not None:
                continue
        except Exception:  # e.g. the chapter's file is gone
            pass
        out.append((record.uri, first_error(record.uri, record.traceback)))
    order = {uri: k for k, uri in enumerate(wanted)}
    return sorted(out, key=lambda f: order.get(f[0], 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cache_dir", type=Path, help="the build's jupyter-cache folder (_build/.jupyter_cache)")
    parser.add_argument("--jobs", type=int, default=None, help="chapters executed at once")
    parser.add_argument("--timeout", type=int, default=None, help="seconds per cell (default: _config.yml's)")
    parser.add_argument("--failed-list", type=Path, default=None,
                        help="write the chapters that failed here, one a line: path, tab, error (empty if none)")
    parser.add_argument("--report", action="store_true",
                        help="execute nothing: print one line per chapter whose last execution failed")
    parser.add_argument("--run-one", metavar="CHAPTER", default=None, help=argparse.SUPPRESS)  # a worker
    args = parser.parse_args(argv)
    if args.run_one is not None:
        error = run_one(args.cache_dir, args.run_one, args.timeout or 600)
        print(json.dumps({"error": error}), flush=True)
        return 1 if error else 0
    if args.report:
        failed = failures(args.cache_dir)
        for uri, error in failed:
            print(f"book: {_name(uri)} failed at {error}", flush=True)
        return 1 if failed else 0
    jobs = args.jobs if args.jobs is not None else default_jobs()
    if jobs < 1:
        parser.error(f"--jobs must be at least 1, got {jobs}")
    timeout = args.timeout
    if timeout is None:
        timeout = yaml.safe_load((ROOT / "_config.yml").read_text()).get("execute", {}).get("timeout", 600)
    failed = execute(args.cache_dir, jobs, timeout)
    if args.failed_list is not None:
        args.failed_list.parent.mkdir(parents=True, exist_ok=True)
        errors = dict(failures(args.cache_dir))
        args.failed_list.write_text("".join(f"{uri}\t{errors.get(uri, '')}\n" for uri in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
