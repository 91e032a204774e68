"""The book: its chapters run, their Colab twins are in sync, and the built pages work offline in a browser.

* Every chapter (a MyST-markdown notebook listed in ``_toc.yml``) executes in smoke mode through papermill
  (``smoke = True`` injected after its ``parameters`` cell); any cell error fails.
* Each chapter has an ``.ipynb`` twin beside it (what Colab opens) with the same cells; its first code cell installs
  the package only on Colab, from the repository named in ``_config.yml``; a cell tagged ``parameters`` sets
  ``smoke = False``.
* ``scripts/execute_book.py`` (the build's first step) finds the same chapters, caches what it executes where the build
  reads it, and leaves a failing chapter out of the cache, for the build to run again and report.
* The book is built once per session (``scripts/build_book.sh`` into a temporary folder: every chapter runs at its
  default scale, fresh, several at a time, with the plotly renderer the build uses; the build itself then executes
  none of them again) and opened in headless Chromium: plotly figures are
  drawn, the shifts chapter has a working slider and a rendered widget, widget JavaScript comes from the site itself
  (no CDN). Screenshots are kept in ``_build/screenshots/``. These tests skip only when Chromium is not installed
  (``bash scripts/setup_browser.sh`` installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

try:
    import jupytext
    import papermill
except ImportError as error:  # not a skip: the book is part of the product
    raise ImportError(f"{error}; the book's tests need the book extra: source scripts/setup.sh dev,stats,book") from None

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
SCREENSHOTS = ROOT / "_build" / "screenshots"


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def _chapters() -> list[Path]:
    """The notebook chapters: toc entries whose markdown has code cells."""
    out = []
    for name in _toc_files():
        path = ROOT / f"{name}.md"
        assert path.exists(), f"_toc.yml names {name} but {path} does not exist"
        if "```{code-cell}" in path.read_text():
            out.append(path)
    return out


CHAPTERS = _chapters()
IDS = [p.stem for p in CHAPTERS]


def _repository_url() -> str:
    return yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def test_book_has_chapters():
    assert len(CHAPTERS) >= 3, [p.name for p in CHAPTERS]


# ----------------------------------------------------------------------------------------------- sources
@pytest.mark.parametrize("chapter", CHAPTERS, ids=IDS)
def test_ipynb_twin_in_sync(chapter: Path):
    twin = chapter.with_suffix(".ipynb")
    fix = f"regenerate it with: jupytext --to ipynb {chapter.relative_to(ROOT)}"
    assert twin.exists(), f"{twin.relative_to(ROOT)} is missing (Colab opens it); {fix}"
    md, nb = jupytext.read(chapter), jupytext.read(twin)

    def cells(notebook):
        return [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in notebook.cells]

    assert cells(md) == cells(nb), f"{twin.relative_to(ROOT)} is out of sync with {chapter.name}; {fix}"
    assert not any(c.get("outputs") for c in _code_cells(nb)), f"{twin.name} must be stored without outputs"
    formats = md.metadata.get("jupytext", {}).get("formats", "")
    assert "ipynb" in formats and "md:myst" in formats, f"{chapter.name} must be paired: formats: md:myst,ipynb"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=IDS)
def test_colab_install_cell_and_parameters(chapter: Path):
    code = _code_cells(jupytext.read(chapter))
    first = code[0].source
    assert '"google.colab" in sys.modules' in first, f"{chapter.name}: first code cell must be the Colab guard"
    assert "pip install" in first and "plasticity-lab" in first, f"{chapter.name}: it must pip-install the package"
    assert _repository_url() in first, f"{chapter.name}: install from the repository in _config.yml"
    # Outside Colab the guard does nothing: everything after `if` is inside it.
    body = first.split('if "google.colab" in sys.modules:', 1)[1]
    assert all(line.startswith((" ", "\t")) or not line.strip() for line in body.splitlines()), first
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{chapter.name}: exactly one cell tagged 'parameters'"
    assert re.search(r"^smoke\s*=\s*False\b", params[0].source, re.M), f"{chapter.name}: smoke = False"
    assert code.index(params[0]) == 1, f"{chapter.name}: the parameters cell comes right after the install cell"


# ------------------------------------------------------------------------------------------- smoke runs
@pytest.mark.parametrize("chapter", CHAPTERS, ids=IDS)
def test_chapter_executes_in_smoke_mode(chapter: Path, tmp_path: Path):
    source = tmp_path / f"{chapter.stem}.ipynb"
    jupytext.write(jupytext.read(chapter), source)
    start = time.perf_counter()
    try:
        papermill.execute_notebook(str(source), str(tmp_path / "out.ipynb"), parameters={"smoke": True},
                                   kernel_name="python3", cwd=str(chapter.parent), progress_bar=False,
                                   log_output=False, execution_timeout=600)
    except papermill.PapermillExecutionError as error:
        pytest.fail(f"{chapter.name} failed in smoke mode at cell {error.exec_count}: {error.ename}: "
                    f"{error.evalue}")
    seconds = time.perf_counter() - start
    out = json.loads((tmp_path / "out.ipynb").read_text())
    injected = [c for c in out["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and "smoke = True" in "".join(injected[0]["source"])
    errors = [o for c in out["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    print(f"{chapter.name}: smoke run {seconds:.1f} s")


# -------------------------------------------------------------------------------- parallel execution
def _execute_book():
    import importlib.util

    spec = importlib.util.spec_from_file_location("execute_book", ROOT / "scripts" / "execute_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_execute_book_finds_the_chapters():
    assert _execute_book().chapters() == CHAPTERS


@pytest.mark.parametrize("value", ["0", "two", "-1", "1.5"])
def test_execute_book_rejects_a_bad_job_count(value: str, tmp_path: Path):
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "execute_book.py"), str(tmp_path / "cache")],
                            env=dict(os.environ, BOOK_JOBS=value), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"BOOK_JOBS={value!r}" in result.stderr and "1 or more" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "cache").exists(), "nothing is written before the job count is checked"


MYST_NOTEBOOK = """---
jupytext:
  text_representation:
    format_name: myst
kernelspec:
  name: python3
  display_name: Python 3
---
# {title}

```{{code-cell}} ipython3
{code}
```
"""


def test_execute_book_caches_what_runs_and_leaves_failures_to_the_build(tmp_path: Path):
    from jupyter_cache import get_cache

    good, bad = tmp_path / "good.md", tmp_path / "bad.md"
    good.write_text(MYST_NOTEBOOK.format(title="Good", code="print(6 * 7)"))
    bad.write_text(MYST_NOTEBOOK.format(title="Bad", code="raise ValueError('broken chapter')"))
    failed = _execute_book().execute(tmp_path / "cache", jobs=2, timeout=120, paths=[good, bad])
    assert failed == [str(bad)]
    cache = get_cache(str(tmp_path / "cache"))
    cached = {Path(r.uri).name: r for r in cache.list_project_records()}
    assert set(cached) == {"good.md", "bad.md"}
    stored = cache.get_cached_project_nb(cached["good.md"].pk)
    assert stored is not None and cache.get_cached_project_nb(cached["bad.md"].pk) is None
    outputs = cache.get_cache_bundle(stored.pk).nb.cells[-1].outputs
    assert "".join(o.get("text", "") for o in outputs).strip() == "42"
    # A second call finds nothing new to run but the failure, which it tries (and reports) again.
    assert _execute_book().execute(tmp_path / "cache", jobs=1, timeout=120, paths=[good, bad]) == [str(bad)]


# ------------------------------------------------------------------------------------------- built book
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def built_book(tmp_path_factory) -> Path:
    """Build the whole book once (fresh execution cache) and return its html folder."""
    if _chromium() is None:
        pytest.skip("Chromium is not installed (bash scripts/setup_browser.sh installs it)")
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, BOOK_SKIP_SETUP="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("BOOK_JOBS", None)  # the default: chapters run in parallel before the build
    start = time.perf_counter()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "build_book.sh"), "--path-output", str(out)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    log = result.stdout + result.stderr
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS / "build.log").write_text(log)
    assert result.returncode == 0, f"the book build failed (log: _build/screenshots/build.log):\n{log[-6000:]}"
    print(f"book built in {time.perf_counter() - start:.0f} s")
    return out / "_build" / "html"


def test_build_reads_every_chapter_from_the_parallel_execution(built_book):
    log = (SCREENSHOTS / "build.log").read_text()
    assert f"execute_book.py: {len(CHAPTERS)} executed" in log, log[:2000]
    assert "Executing notebook" not in log, "the build executed a chapter that execute_book.py should have cached"
    cached = set(re.findall(r"([\w.]+\.md): Using cached notebook", log))
    assert cached == {p.name for p in CHAPTERS}, cached


def _browser(page: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp}", "--virtual-time-budget=8000", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="session")
def pages(built_book, tmp_path_factory) -> dict[str, tuple[str, str]]:
    """Chapter stem → (the page's HTML as built, its DOM after the browser ran its scripts); screenshots too."""
    tmp = tmp_path_factory.mktemp("chromium")
    out = {}
    for chapter in CHAPTERS:
        page = built_book / chapter.relative_to(ROOT).with_suffix(".html")
        assert page.exists(), page
        dom = _browser(page, tmp / "profile", "--dump-dom").stdout
        assert "<html" in dom, f"Chromium returned no DOM for {page.name}"
        shot = SCREENSHOTS / f"{chapter.stem}.png"
        _browser(page, tmp / "profile", f"--screenshot={shot}", "--window-size=1280,2000")
        out[chapter.stem] = (page.read_text(), dom)
    return out


SHIFTS = "03_shifts"


def test_static_pages_draw_plotly_figures(pages):
    for stem, (_, dom) in pages.items():
        source = (BOOK / f"{stem}.md").read_text()
        if "plots." in source:
            assert 'class="plot-container' in dom and "main-svg" in dom, f"{stem}: no plotly figure was drawn"
            assert "Plotly is not defined" not in dom


def test_shifts_page_has_a_drawn_figure_and_a_slider(pages, built_book, tmp_path):
    html, dom = pages[SHIFTS]
    assert dom.count('class="plot-container') >= 3, "the shifts chapter should show several plotly figures"
    assert 'class="slider-container"' in dom, "the plotly figure with a slider over rounds is missing"
    # the ipywidgets explorer is rendered by the HTML manager (from its saved state), not left as a placeholder
    assert "widget-hslider" in dom or "widget-slider" in dom, "the ipywidgets explorer was not rendered"
    assert "widget-image" in dom and "widget-dropdown" in dom
    assert "Error displaying widget" not in dom
    # the 1280×2000 screenshot shows the top of the page; keep the whole page too (explorer and slider figure)
    assert (SCREENSHOTS / f"{SHIFTS}.png").stat().st_size > 20_000, "the screenshot looks empty"
    page = built_book / "book" / f"{SHIFTS}.html"
    shot = SCREENSHOTS / f"{SHIFTS}-full.png"
    _browser(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,10000")
    assert shot.stat().st_size > 100_000, "the full-page screenshot looks empty"


SOFT_SP = "08_soft_shrink_perturb"


def test_soft_shrink_perturb_page_has_figures_a_coefficient_slider_and_the_live_sliders(pages, built_book, tmp_path):
    html, dom = pages[SOFT_SP]
    assert dom.count('class="plot-container') >= 3 and "main-svg" in dom, "plotly figures were not drawn"
    # the plotly slider over the stored coefficient sweep (works without a kernel)
    assert 'class="slider-container"' in dom, "the plotly slider over the stored coefficient sweep is missing"
    assert "perturb = " in dom, "the slider's current-value label is missing"
    # the ipywidgets explorer (two log sliders) is rendered from its saved state
    assert dom.count("widget-slider") >= 2 or dom.count("widget-hslider") >= 2, "the live sliders were not rendered"
    assert "Error displaying widget" not in dom
    page = built_book / "book" / f"{SOFT_SP}.html"
    shot = SCREENSHOTS / f"{SOFT_SP}-full.png"
    _browser(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,9000")
    assert shot.stat().st_size > 100_000, "the full-page screenshot looks empty"


CDN = ("cdn.jsdelivr.net", "cdnjs.cloudflare.com", "unpkg.com", "cdn.plot.ly")


def test_widget_javascript_is_served_locally(pages, built_book):
    html, dom = pages[SHIFTS]
    for text in (html, dom):
        assert re.search(r'<script[^>]*src="[^"]*vendor/require\.js', text), "require.js is not the local copy"
        assert re.search(r'<script[^>]*src="[^"]*vendor/html-manager/embed-amd\.js', text), "no local embed-amd.js"
    assert (built_book / "vendor" / "require.js").exists()
    assert (built_book / "vendor" / "html-manager" / "embed-amd.js").exists()
    in_static = [p.name for p in (built_book / "_static").rglob("*") if p.name in ("require.js", "embed-amd.js")]
    assert not in_static, f"widget JavaScript must not be in _static/ (every .js there lands on every page): {in_static}"
    for stem, (html, dom) in pages.items():
        for text in (html, dom):
            external = [s for s in re.findall(r'<(?:script|link)[^>]*(?:src|href)="(https?://[^"]+)"', text)
                        if any(c in s for c in CDN)]
            assert not external, f"{stem}: loads from a CDN: {external}"
        # each script is included once (the _static pitfall renders widgets twice)
        srcs = re.findall(r'<script[^>]*src="([^"?]+)', html)
        assert len(srcs) == len(set(srcs)), f"{stem}: a script is included twice"


def test_colab_button_opens_the_ipynb_twin(pages):
    repo = _repository_url().removeprefix("https://github.com/")
    for stem, (html, _) in pages.items():
        link = f"https://colab.research.google.com/github/{repo}/blob/main/book/{stem}.ipynb"
        assert link in html, f"{stem}: no Colab button pointing at {link}"
