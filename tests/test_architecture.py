"""The package's architecture, checked: wings whose imports run one way, small modules, no private names shared.

Read from the source (every ``import`` statement, at module level or inside a function), so a rule broken by a lazy
import fails here too. The wings, bottom to top:

* vocabulary — ``schema``: the results' names and the argument checks; ``streams``: the per-run random numbers that
  environments, networks and PPO all draw from;
* network — ``nets``, ``metrics``: modules and diagnostics, knowing nothing of training;
* worlds — ``envs``, ``shifts``: environments and training distributions, knowing nothing of learning;
* backends — how a population's numbers are computed; they know the network and nothing above it;
* learning — ``ppo``, ``population``, ``member_adamw``, ``conditions``, ``graphs``, ``rnd``: the algorithm, its batching, the
  interventions, and its steps compiled whole;
* statistics — ``stats``: tables in, tables out; beside the others, importing only the vocabulary;
* run and store — ``config``, ``environments``, ``experiment``, ``sweep``, ``results``, ``storage``, ``report``, ``cli``;
* figures — the book layer, which nothing else imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "plasticity_lab"
MAX_LINES = 600

WINGS = {
    "vocabulary": {"schema", "streams"},
    "network": {"nets", "metrics"},
    "worlds": {"envs", "shifts"},
    "backends": {"backends"},
    "learning": {"ppo", "population", "member_adamw", "conditions", "graphs", "rnd", "rnd_agent"},
    "statistics": {"stats"},
    "run and store": {"config", "environments", "experiment", "sweep", "results", "storage", "report", "cli", "__init__",
                      "montezuma_run"},
    "figures": {"figures"},
}
#: What each wing may import from the package (besides itself).
MAY_IMPORT = {
    "vocabulary": set(),
    "network": {"vocabulary"},
    "worlds": {"vocabulary"},
    "backends": {"network"},
    "learning": {"vocabulary", "network", "backends"},
    "statistics": {"vocabulary"},
    "run and store": {"vocabulary", "network", "worlds", "backends", "learning", "statistics"},
    "figures": {"vocabulary", "network", "worlds", "backends", "learning", "statistics", "run and store"},
}


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def dotted(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def wing_of(module: str) -> str:
    """The wing of a dotted module name inside the package (``plasticity_lab`` itself is run and store)."""
    parts = module.split(".")
    first = parts[1] if len(parts) > 1 else "__init__"
    for wing, members in WINGS.items():
        if first in members:
            return wing
    raise AssertionError(f"{module} belongs to no wing: add it to WINGS in this test")


def internal_imports(path: Path, source: str | None = None) -> list[tuple[int, str, list[str]]]:
    """``(line, imported module, imported names)`` for every import of the package in ``path`` (or in ``source``,
    read as if it were that file)."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    here = dotted(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "plasticity_lab":
                    found.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "plasticity_lab":
                continue
            names = [a.name for a in node.names]
            # ``from . import x``: each name may itself be a module
            for name in names:
                candidate = f"{module}.{name}"
                if (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").exists() or (
                        PACKAGE.parent / Path(*candidate.split("."))).is_dir():
                    found.append((node.lineno, candidate, []))
                else:
                    found.append((node.lineno, module, [name]))
    return found


def test_every_module_belongs_to_a_wing():
    for path in modules():
        wing_of(dotted(path))


def wrong_way_imports(path: Path, source: str | None = None) -> list[str]:
    here = dotted(path)
    wing = wing_of(here)
    wrong = []
    for line, module, _ in internal_imports(path, source):
        other = wing_of(module)
        if other != wing and other not in MAY_IMPORT[wing]:
            wrong.append(f"line {line}: {here} ({wing}) imports {module} ({other})")
    return wrong


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_one_way_between_the_wings(path):
    wrong = wrong_way_imports(path)
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_nothing_outside_the_backends_imports_their_internals(path):
    here = dotted(path)
    if here.startswith("plasticity_lab.backends"):
        return
    inside = [f"line {line}: {module}" for line, module, _ in internal_imports(path)
              if module.startswith("plasticity_lab.backends.")]
    assert not inside, f"{here} imports a backend's internals (use plasticity_lab.backends): {inside}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_a_reader_can_hold(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (at most {MAX_LINES})"


def private_uses(path: Path, source: str | None = None) -> list[str]:
    """``from .m import _name`` and ``m._name`` on an imported package module both reach into another module's
    private parts."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    wrong = [f"line {line}: imports {name} from {module}" for line, module, names in internal_imports(path, source)
             for name in names if name.startswith("_") and not name.startswith("__")]
    bound = {alias.asname or alias.name.split(".")[-1] for node in ast.walk(tree)
             if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}
    internal = {module.rsplit(".", 1)[-1] for _, module, names in internal_imports(path, source) if not names}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.attr.startswith("_")
                and not node.attr.startswith("__") and node.value.id in bound & internal):
            wrong.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return wrong


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_name_is_used_across_modules(path):
    wrong = private_uses(path)
    assert not wrong, "\n".join(wrong)


def test_the_package_imports_without_the_figures_layer_and_its_libraries():
    import subprocess
    import sys

    code = ("import sys, plasticity_lab; "
            "bad = [m for m in ('plotly', 'seaborn', 'ipywidgets', 'matplotlib', 'plasticity_lab.figures') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_the_import_rules_catch_what_they_forbid():
    """The checkers themselves, on a source written to break each rule (read as if it were nets.py)."""
    nets = PACKAGE / "nets.py"
    source = ("from .figures import style\nfrom .ppo import _private\nfrom . import metrics\n"
              "metrics._by_member(None)\nfrom .backends import batched\n")
    assert "line 1: plasticity_lab.nets (network) imports plasticity_lab.figures.style (figures)" in \
        wrong_way_imports(nets, source)
    assert "line 5: plasticity_lab.nets (network) imports plasticity_lab.backends.batched (backends)" in \
        wrong_way_imports(nets, source)
    assert private_uses(nets, source) == ["line 2: imports _private from plasticity_lab.ppo",
                                          "line 4: metrics._by_member"]
    assert wrong_way_imports(nets) == [] and private_uses(nets) == []
