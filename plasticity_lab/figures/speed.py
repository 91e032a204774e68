"""How fast the study runs: the authors' release, plasticity-lab and the matrix products' limit (chapter 14).

Everything comes from a stored run of ``benchmarks/release_speed.py`` (its ``--json`` file), which measured all of
its rows in one sitting on one machine, alternating them: speeds measured on different machines or on different
days are not comparable, so this module never mixes files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import pandas as pd

#: What each row of a stored speed run must hold.
SPEED_COLUMNS = ("row", "members", "median_s_per_agent_epoch", "fastest", "slowest", "repeats", "paper_grid_h")

#: The release's row, the reference of the speed-ups.
RELEASE_ROW = "authors' release"


class SpeedRun(NamedTuple):
    """A stored benchmark run: ``table`` (one row per measured implementation, see :func:`load_speed`) and the
    ``manifest`` that says where and how it was measured."""

    table: pd.DataFrame
    manifest: dict


def load_speed(path: str | Path) -> SpeedRun:
    """Read a ``benchmarks/release_speed.py --json`` file.

    The table has the columns of :data:`SPEED_COLUMNS`, plus ``speed_up`` (the release's median seconds per
    agent-epoch over the row's, ``NaN`` where the run did not measure the release) and ``kind`` (``release``,
    ``plasticity-lab`` or ``limit``). One error names a missing file, a malformed one or a missing column.
    """
    path = Path(path)
    try:
        stored = json.loads(path.read_text())
    except OSError as error:
        raise FileNotFoundError(f"no stored speed run at {path}: {error.strerror or error}") from None
    except ValueError as error:
        raise ValueError(f"{path} is not a speed run's JSON: {error}") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("rows"), list) or "manifest" not in stored:
        raise ValueError(f"{path} is not a speed run: it needs 'rows' (a list) and 'manifest' "
                         f"(benchmarks/release_speed.py --json writes both)")
    table = pd.DataFrame(stored["rows"])
    missing = [c for c in SPEED_COLUMNS if c not in table.columns]
    if missing or table.empty:
        raise ValueError(f"{path}: its rows lack {missing or 'any row'}; a speed run's rows have "
                         f"{list(SPEED_COLUMNS)}")
    release = table.loc[table["row"] == RELEASE_ROW, "median_s_per_agent_epoch"]
    table["speed_up"] = release.iloc[0] / table["median_s_per_agent_epoch"] if len(release) else float("nan")
    table["kind"] = ["release" if r == RELEASE_ROW else "limit" if pd.isna(m) else "plasticity-lab"
                     for r, m in zip(table["row"], table["members"])]
    return SpeedRun(table, stored["manifest"])


_COLOURS = {"release": "#969696", "plasticity-lab": "#3182bd", "limit": "#e6550d"}


def speed_figure(run: SpeedRun, title: str | None = None):
    """Two panels over a stored speed run's rows: seconds per agent-epoch (log scale; the bar is the median run,
    the whisker the fastest and slowest), and the paper's gridworld grid in hours of one process at that speed."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .style import TEMPLATE, figure_title, top_margin

    table = run.table.iloc[::-1]  # plotly draws the first row at the bottom: keep the file's order top-down
    labels = [f"{row}<br>{s:.1f}× the release" if s == s else row for row, s in zip(table["row"], table["speed_up"])]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.06, shared_yaxes=True, column_widths=[0.6, 0.4],
                        subplot_titles=("s per agent-epoch", "the paper's grid, hours"))
    colours = [_COLOURS[k] for k in table["kind"]]
    fig.add_trace(go.Bar(
        x=table["median_s_per_agent_epoch"], y=labels, orientation="h", marker_color=colours,
        error_x={"type": "data", "symmetric": False,
                 "array": table["slowest"] - table["median_s_per_agent_epoch"],
                 "arrayminus": table["median_s_per_agent_epoch"] - table["fastest"]},
        customdata=table[["fastest", "slowest", "repeats"]].to_numpy(),
        hovertemplate="%{y}<br>%{x:.4f} s per agent-epoch (median of %{customdata[2]}; "
                      "%{customdata[0]:.4f}–%{customdata[1]:.4f})<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Bar(x=table["paper_grid_h"], y=labels, orientation="h", marker_color=colours,
                         text=[f"{h:,.0f} h" for h in table["paper_grid_h"]], textposition="auto",
                         cliponaxis=False,
                         hovertemplate="%{y}<br>paper grid: %{x:,.0f} h<extra></extra>"), row=1, col=2)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_xaxes(type="log", row=1, col=2)
    fig.update_layout(template=TEMPLATE, showlegend=False, height=140 + 45 * len(table),
                      margin={"t": top_margin(title, 50, above=30), "l": 10, "r": 10, "b": 40},
                      title=figure_title(title, above=30))
    return fig
