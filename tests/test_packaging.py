"""The project's set-up files agree with each other."""

import re
import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("stats", "book", "dev"):
        wanted += [r for r in project["optional-dependencies"][extra] if "python_version" not in r]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert sorted(pip_section) == sorted(wanted), "environment.yml's pip list must equal pyproject's requirements"
    assert "python=3.11" in env["dependencies"]


def test_top_level_layout():
    for name in ("book", "plasticity_lab", "data", "_config.yml", "_toc.yml", "environment.yml", "tests",
                 "pyproject.toml", "README.md", "LICENSE", ".ci/run"):
        assert (ROOT / name).exists(), name


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "`bash scripts/test.sh`" in readme
    assert "scripts/test.sh" in (ROOT / ".ci/run").read_text()


def test_package_imports_without_plotting_or_widgets():
    code = ("import sys, plasticity_lab, plasticity_lab.stats, plasticity_lab.cli; "
            "bad = [m for m in ('plotly', 'seaborn', 'matplotlib', 'ipywidgets') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_data_readme_lists_every_stored_study_and_no_page_has_an_unfilled_placeholder():
    data = ROOT / "data"
    readme = (data / "README.md").read_text()
    listed = set(re.findall(r"^\| `([\w.-]+)/` \|", readme, flags=re.MULTILINE))
    # git does not keep empty folders: a study is a folder with files in it
    stored = {p.name for p in data.iterdir() if p.is_dir() and any(f.is_file() for f in p.rglob("*"))}
    assert listed == stored, f"data/README.md lists {sorted(listed)}; data/ holds {sorted(stored)}"
    pages = [ROOT / "README.md", *data.rglob("README.md"), *(ROOT / "book").glob("*.md")]
    unfilled = [str(p.relative_to(ROOT)) for p in pages if re.search(r"\{\{\s*\w+\s*\}\}", p.read_text())]
    assert not unfilled, f"placeholders left in {unfilled}"
