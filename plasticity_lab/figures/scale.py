"""How big the stored studies are, against the paper's scale, and what the paper's scale would cost (chapter 14).

Everything comes from the studies' manifests: each population records its runs' configs (rounds, epochs per round,
level pool, seeds) and the wall time of the processes that trained it, so a study's measured seconds per
agent-epoch, and from it the time the paper's grid would take at that speed, are read rather than assumed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..config import PRESETS

#: The paper's gridworld grid: 3 shifts × 11 conditions × 5 seeds (PROTOCOL §1, §4).
PAPER_GRID_RUNS = 3 * 11 * 5


def paper_agent_epochs_per_run() -> int:
    """Epochs of one run at the ``paper`` preset: 10 rounds × 5 000 epochs."""
    paper = PRESETS["paper"]
    return paper["rounds"] * paper["epochs_per_round"]


def study_folders(data: str | Path, env: str = "gridworld") -> list[Path]:
    """Every stored study of ``env`` under ``data`` (a folder whose ``manifest.json`` describes a sweep of that
    environment only), sorted by path. The paper's scale this module measures against is the gridworld's; the other
    environments' chapters state their own."""
    found = []
    for manifest in sorted(Path(data).rglob("manifest.json")):
        if "populations" in manifest.parts:
            continue
        try:
            sweep = json.loads(manifest.read_text()).get("sweep")
        except (OSError, ValueError):
            continue
        if sweep is not None and all(e == env for e in sweep.get("envs", ["gridworld"])):
            found.append(manifest.parent)
    return found


def scale_table(data: str | Path) -> pd.DataFrame:
    """One row per stored gridworld study under ``data`` (:func:`study_folders`): its scale and its measured cost.

    Columns: ``study`` (its path under ``data``), ``runs``, ``seeds``, ``rounds``, ``epochs_per_round``,
    ``pool_size``, ``agent_epochs_per_run`` (the mean over its runs), ``agent_epochs`` (all runs together),
    ``wall_time_h`` (the populations' summed wall time), ``s_per_agent_epoch`` (wall time over agent-epochs: the
    cost of one agent-epoch to one training process), ``fraction_of_paper_run`` (a run's epochs against the
    ``paper`` preset's) and ``paper_grid_h`` (the paper's grid, :data:`PAPER_GRID_RUNS` runs of the ``paper``
    preset's length, at this study's measured cost per agent-epoch, one process).
    """
    from ..results import load_results

    rows = []
    root = Path(data)
    for folder in study_folders(root):
        study = load_results(folder)
        configs = [c for p in study.populations for c in p["configs"]]
        if not configs:
            continue
        epochs = [c["rounds"] * c["epochs_per_round"] for c in configs]
        wall = sum(p.get("wall_time_s") or 0.0 for p in study.populations)
        per_agent_epoch = wall / sum(epochs) if wall else float("nan")

        def spread(key: str) -> str:
            values = sorted({c[key] for c in configs})
            return "/".join(map(str, values))

        rows.append({
            "study": str(folder.relative_to(root)),
            "runs": len(configs),
            "seeds": len({c["seed"] for c in configs}),
            "rounds": spread("rounds"),
            "epochs_per_round": spread("epochs_per_round"),
            "pool_size": spread("pool_size"),
            "agent_epochs_per_run": sum(epochs) / len(epochs),
            "agent_epochs": sum(epochs),
            "wall_time_h": wall / 3600,
            "s_per_agent_epoch": per_agent_epoch,
            "fraction_of_paper_run": sum(epochs) / len(epochs) / paper_agent_epochs_per_run(),
            "paper_grid_h": per_agent_epoch * PAPER_GRID_RUNS * paper_agent_epochs_per_run() / 3600,
        })
    if not rows:
        raise ValueError(f"no stored study under {root}: a study is a folder whose manifest.json describes a sweep")
    return pd.DataFrame(rows)


def scale_figure(table: pd.DataFrame, title: str | None = None):
    """Two panels over the studies of :func:`scale_table`: each study's epochs per run against the ``paper``
    preset's (log scale), and the paper's whole grid projected at each study's measured cost per agent-epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .style import TEMPLATE, figure_title, top_margin

    ordered = table.sort_values("agent_epochs_per_run")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.28,
                        subplot_titles=("epochs per run", "the paper's grid at this cost (hours, one process)"))
    hover = ("%{y}<br>%{x:,.0f} epochs per run (%{customdata[0]:.1%} of the paper's)<br>"
             "%{customdata[1]} runs, %{customdata[2]} seeds<extra></extra>")
    fig.add_trace(go.Bar(x=ordered["agent_epochs_per_run"], y=ordered["study"], orientation="h",
                         marker_color="#3182bd", name="stored study",
                         customdata=ordered[["fraction_of_paper_run", "runs", "seeds"]].to_numpy(),
                         hovertemplate=hover), row=1, col=1)
    fig.add_vline(x=paper_agent_epochs_per_run(), line_dash="dash", line_color="#444444", row=1, col=1,
                  annotation_text="paper preset", annotation_position="top")
    measured = ordered[ordered["s_per_agent_epoch"].notna()]
    fig.add_trace(go.Bar(x=measured["paper_grid_h"], y=measured["study"], orientation="h", marker_color="#e6550d",
                         name="projected", customdata=measured[["s_per_agent_epoch"]].to_numpy(),
                         hovertemplate="%{y}<br>%{customdata[0]:.3f} s per agent-epoch<br>"
                                       "paper grid: %{x:,.0f} h<extra></extra>"), row=1, col=2)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_xaxes(type="log", row=1, col=2)
    fig.update_layout(template=TEMPLATE, showlegend=False, height=120 + 32 * len(ordered),
                      margin={"t": top_margin(title, 50, above=30), "l": 10, "r": 10, "b": 40},
                      title=figure_title(title, above=30))
    return fig
