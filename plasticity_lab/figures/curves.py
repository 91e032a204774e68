"""Curves over epochs and rounds: how return, normalised reward and the diagnostics evolve through the shifts.

Chapters 2–10 draw their runs with these, live runs and stored studies alike. Each takes a per-epoch table of
:func:`plasticity_lab.run` (or a stored study's ``curves``) with one or more conditions and seeds; a figure with
several conditions draws one line per condition (the mean over seeds) and a band for the spread between seeds, and
marks the shifts with dotted lines.

* :func:`learning_curve_figure` — train/test return per epoch of one run (or the mean over runs).
* :func:`smoothed` — a per-epoch column smoothed inside each run and round (the read-out's smoothing).
* :func:`rounds_curve_figure`, :func:`study_curves_figure` — curves over all rounds per condition, for one shift or
  (with a menu) for every shift of a stored study.
* :func:`readout_figure`, :func:`normalised_reward_figure` — how the normalised reward is read from a curve, and
  its value per round.
* :func:`diagnostics_figure` — the diagnostics over all rounds, with a dropdown menu (works on a static page).
* :func:`after_shift_figure` — the first epochs after a shift against those of round 1.
* :func:`band_and_mean` — the line and band of one condition, which every figure over seeds draws.

The read-outs are those of :mod:`plasticity_lab.stats` (:func:`~plasticity_lab.stats.round_readout`,
:func:`~plasticity_lab.stats.normalised_reward`): a figure shows the numbers the statistics use.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..schema import DIAGNOSTICS
from ..stats import round_readout
from .style import (BASELINE_COLOR, TEMPLATE, TEST_COLOR, TRAIN_COLOR, condition_colors, figure_title, group_menu,
                    metric_label, rgba, top_margin)
from .tables import check_table, normalised_rounds, over_seeds, pick_conditions, run_keys, shifts_in_order

__all__ = [
    "after_shift_figure",
    "band_and_mean",
    "diagnostics_figure",
    "learning_curve_figure",
    "normalised_reward_figure",
    "readout_figure",
    "rounds_curve_figure",
    "smoothed",
    "study_curves_figure",
]


def learning_curve_figure(df: pd.DataFrame, baselines: Mapping[str, float] | None = None,
                          title: str | None = None, smooth: int = 5) -> go.Figure:
    """Train and test return per epoch of a :func:`plasticity_lab.run` table (one run, or the mean over runs).

    ``train_return`` is the mean return of each epoch's training episodes: drawn faintly per epoch and, bold, as a
    trailing moving average over ``smooth`` epochs (restarted at every round, so no average straddles a shift;
    ``smooth=1`` draws the raw curve only). ``test_return`` (drawn at the epochs where it was measured) is the
    mean over the test episodes on unseen levels. ``baselines`` (label → return) are drawn as dashed horizontal
    lines, e.g. a random policy's return. Round boundaries (shifts) are dotted vertical lines.
    """
    for column in ("epoch", "round", "train_return", "test_return"):
        if column not in df.columns:
            raise ValueError(f"learning_curve_figure needs column {column!r} (a table from plasticity_lab.run)")
    per_epoch = df.groupby("epoch", sort=True)[["train_return", "test_return", "round"]].mean()
    tested = per_epoch["test_return"].dropna()
    fig = go.Figure()
    smooth = max(1, int(smooth))
    fig.add_trace(go.Scatter(x=per_epoch.index, y=per_epoch["train_return"], mode="lines",
                             name="train return" if smooth == 1 else "train return, per epoch",
                             line=dict(color=TRAIN_COLOR, width=2 if smooth == 1 else 1),
                             opacity=1.0 if smooth == 1 else 0.35,
                             hovertemplate="epoch %{x}<br>train return %{y:.2f}<extra></extra>"))
    if smooth > 1:
        smoothed = per_epoch.groupby("round")["train_return"].transform(
            lambda x: x.rolling(smooth, min_periods=1).mean())
        fig.add_trace(go.Scatter(x=per_epoch.index, y=smoothed, mode="lines",
                                 name=f"train return, mean of last {smooth} epochs",
                                 line=dict(color=TRAIN_COLOR, width=3),
                                 hovertemplate="epoch %{x}<br>smoothed train return %{y:.2f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=tested.index, y=tested.values, mode="lines+markers",
                             name="test return (unseen levels)", line=dict(color=TEST_COLOR, width=2),
                             marker=dict(size=5),
                             hovertemplate="epoch %{x}<br>test return %{y:.2f}<extra></extra>"))
    for i, (label, value) in enumerate((baselines or {}).items()):
        fig.add_trace(go.Scatter(x=[per_epoch.index.min(), per_epoch.index.max()], y=[value, value],
                                 mode="lines", name=label,
                                 line=dict(color=BASELINE_COLOR, dash=["dash", "dot", "dashdot"][i % 3]),
                                 hovertemplate=f"{label}: {value:.2f}<extra></extra>"))
    starts = per_epoch.index[per_epoch["round"].diff().fillna(0) > 0]
    for x in starts:
        fig.add_vline(x=x - 0.5, line=dict(color="#555555", dash="dot", width=1.5))
    fig.update_layout(template=TEMPLATE, height=460, xaxis_title="epoch (one epoch = 11 episodes of 100 steps)",
                      yaxis_title="return per episode", margin=dict(l=60, r=20, t=top_margin(title, 40), b=40),
                      legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), title=figure_title(title))
    return fig


def smoothed(df: pd.DataFrame, metric: str, window: int, ffill: bool | None = None) -> pd.Series:
    """``metric`` smoothed by a centred moving average of ``window`` epochs inside each run and round — never
    across a shift — aligned with ``df``'s index.

    At a round's edges the average takes the epochs the round has (``min_periods=1``). Sparse columns (``ffill``,
    default: ``test_return`` only) are first carried forward from each test to the next inside the round, so an
    epoch's value is the round's latest test. This is the smoothing of the normalised-reward read-out
    (:func:`plasticity_lab.stats.round_readout`): with the read-out's window, the curve passes through its read
    points.
    """
    window = int(window)
    if window < 1:
        raise ValueError(f"window must be at least 1 epoch, got {window}")
    ffill = metric == "test_return" if ffill is None else ffill
    order = df.sort_values([*run_keys(df), "round", "epoch_in_round"], kind="stable")
    groups = [order[k] for k in (*run_keys(order), "round")]
    values = order[metric].astype(float)
    if ffill:
        values = values.groupby(groups, sort=False).ffill()
    out = values.groupby(groups, sort=False).transform(lambda s: s.rolling(window, center=True, min_periods=1).mean())
    return out.reindex(df.index)


def band_and_mean(fig: go.Figure, stats: pd.DataFrame, condition: str, color: str, metric: str, band: str,
                  row: int | None = None, col: int | None = None, showlegend: bool = True, dash: str = "solid",
                  name: str | None = None, hover_x: str = "epoch") -> None:
    """Add a condition's seed band (two traces: upper bound, then lower bound filled up to it) and its mean line to
    ``fig`` (in the subplot ``row``, ``col`` if given). ``stats`` is the condition's table of
    :func:`~plasticity_lab.figures.tables.over_seeds` (its index is the x axis); ``band`` one of
    :data:`~plasticity_lab.figures.style.BANDS`. Every figure that draws conditions over seeds draws them with this,
    so their lines, bands and hover texts look alike."""
    where = {"row": row, "col": col} if row is not None else {}
    x = stats.index.to_numpy(np.float32)  # float32 halves what the page carries; epochs stay exact
    name = name or condition
    if band != "none":
        for bound in ("hi", "lo"):
            fig.add_trace(go.Scatter(
                x=x, y=stats[bound].to_numpy(np.float32), mode="lines", line=dict(width=0, color=color),
                fill="tonexty" if bound == "lo" else None, fillcolor=rgba(color, 0.18), hoverinfo="skip",
                showlegend=False, legendgroup=name, name=f"{name} ({band} over seeds)",
                meta={"condition": condition, "metric": metric, "role": f"band_{bound}"}), **where)
    fig.add_trace(go.Scatter(
        x=x, y=stats["mean"].to_numpy(np.float32), mode="lines", line=dict(color=color, width=2, dash=dash),
        name=name, legendgroup=name, showlegend=showlegend, customdata=stats["n"].to_numpy(),
        meta={"condition": condition, "metric": metric, "role": "mean"},
        hovertemplate=f"{name}<br>{hover_x} %{{x}}<br>{metric_label(metric)} %{{y:.3f}}"
                      f"<br>mean of %{{customdata}} seeds<extra></extra>"), **where)


def _shift_lines(fig: go.Figure, df: pd.DataFrame, rows: int | None = None) -> None:
    """Dotted vertical lines at the shifts, in each of ``rows`` stacked panels (None: a figure without subplots)."""
    starts = df.groupby("round")["epoch"].min().sort_index().to_numpy()[1:]
    line = dict(color="#777777", dash="dot", width=1)
    for x in starts:
        if rows is None:
            fig.add_vline(x=float(x) - 0.5, line=line)
        else:
            for r in range(1, rows + 1):
                fig.add_vline(x=float(x) - 0.5, line=line, row=r, col=1)


def rounds_curve_figure(df: pd.DataFrame, metrics: Sequence[str] = ("train_return", "test_return"),
                        conditions: Sequence[str] | None = None, smooth: int = 20, band: str = "std",
                        title: str | None = None, panel_height: int = 300) -> go.Figure:
    """Learning curves over all rounds, one panel per metric (default: train and test return), one colour per
    condition: each seed's curve is smoothed (:func:`smoothed`, ``smooth`` epochs, inside each round), then the
    mean over seeds is drawn as a line and the spread between seeds as a band (``band``: ``"std"`` = mean ± sample
    standard deviation, ``"minmax"`` = the range, ``"none"``). Dotted lines mark the shifts.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    check_table(df, ["round", "epoch", "epoch_in_round", *metrics], "rounds_curve_figure")
    conditions = pick_conditions(df, conditions)
    colors = condition_colors(conditions)
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True, vertical_spacing=0.08 if len(metrics) > 1 else 0)
    for i, metric in enumerate(metrics):
        values = df.assign(value=smoothed(df, metric, smooth))
        for cond in conditions:
            stats = over_seeds(values[values["condition"] == cond], "epoch", band)
            band_and_mean(fig, stats, cond, colors[cond], metric, band, row=i + 1, col=1, showlegend=i == 0)
        fig.update_yaxes(title_text=metric_label(metric), row=i + 1, col=1)
    _shift_lines(fig, df, rows=len(metrics))
    fig.update_xaxes(title_text="epoch (dotted lines: shifts)", row=len(metrics), col=1)
    top = top_margin(title, 30)
    fig.update_layout(template=TEMPLATE, height=panel_height * len(metrics) + top + 110,
                      margin=dict(l=70, r=20, t=top, b=110), title=figure_title(title),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def study_curves_figure(curves: pd.DataFrame, metrics: Sequence[str] = ("train_return", "weight_magnitude"),
                        conditions: Sequence[str] | None = None, band: str = "std",
                        title: str | None = None) -> go.Figure:
    """A stored study's curves over all rounds (:attr:`plasticity_lab.results.Results.curves`, which may hold
    several shifts), drawn as :func:`rounds_curve_figure` draws one shift, with a menu that picks the shift. Every
    shift is stored in the figure, so the menu works on a static page.

    The curves are drawn as stored, without further smoothing: each point is already the mean of a block of
    ``epochs_averaged`` epochs (said in the title). ``conditions`` defaults to every condition in the table; one
    absent from a shift is left out of that shift's panels.
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    needed = ["shift", "round", "epoch", "epoch_in_round", *metrics]
    check_table(curves.drop(columns="shift", errors="ignore"), [c for c in needed if c != "shift"],
                "study_curves_figure")
    if "shift" not in curves.columns:
        raise ValueError(f"study_curves_figure needs a 'shift' column (a stored study's curves table); "
                         f"the table has {list(curves.columns)}")
    if "env" in curves.columns and curves["env"].nunique() > 1:
        raise ValueError(f"study_curves_figure draws one env at a time; the table has "
                         f"{sorted(curves['env'].unique())}: filter it")
    conditions = pick_conditions(curves, conditions)
    shifts = shifts_in_order(curves)
    blocks = sorted({int(b) for b in curves["epochs_averaged"].dropna()}) if "epochs_averaged" in curves else []
    if blocks:
        what = "each point: the mean of a block of " + "/".join(map(str, blocks)) + " epoch(s)"
        title = f"{title} — {what}" if title else what
    fig, owner = None, []
    for shift in shifts:
        part = curves[curves["shift"] == shift]
        present = [c for c in conditions if c in set(part["condition"])]
        one = rounds_curve_figure(part, metrics=metrics, conditions=present, smooth=1, band=band, title=title)
        for trace in one.data:
            trace.meta = {**trace.meta, "shift": shift}
        if fig is None:
            fig = one
        else:
            fig.add_traces(list(one.data))
        owner += [shift] * len(one.data)
    top = fig.layout.margin.t + 40
    fig.update_layout(margin=dict(t=top), height=fig.layout.height + 40,
                      updatemenus=[group_menu(fig, owner, shifts, pad=top - 40)])
    return fig


def normalised_reward_figure(df: pd.DataFrame, splits: Sequence[str] = ("train", "test"),
                             conditions: Sequence[str] | None = None, window: int | None = None,
                             offset: int | None = None, title: str | None = None) -> go.Figure:
    """Normalised reward per round (PROTOCOL §5), one panel per split, one colour per condition: a dot per seed
    and a line through the mean over seeds. Round 1 is 0 by construction; below 0 = worse than after round 1.

    ``df`` is a per-epoch table (the normalised reward is then computed with
    :func:`plasticity_lab.stats.normalised_reward`, ``window``/``offset`` passed on, any stored
    ``normalised_*`` column ignored) or that function's output.
    """
    splits = [splits] if isinstance(splits, str) else list(splits)
    nr = normalised_rounds(df, window, offset)
    columns = [f"normalised_{s}_return" for s in splits]
    check_table(nr, ["round", *columns], "normalised_reward_figure")
    conditions = pick_conditions(nr, conditions)
    colors = condition_colors(conditions)
    fig = make_subplots(rows=1, cols=len(splits), shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=[metric_label(c) for c in columns])
    nudge = 0.08
    for j, column in enumerate(columns):
        for k, cond in enumerate(conditions):
            part = nr[nr["condition"] == cond].dropna(subset=[column])
            dx = (k - (len(conditions) - 1) / 2) * nudge
            fig.add_trace(go.Scatter(
                x=part["round"] + dx, y=part[column].to_numpy(np.float32), mode="markers",
                marker=dict(color=colors[cond], size=6, opacity=0.45), name=f"{cond}, one seed",
                legendgroup=cond, showlegend=False, customdata=part["seed"].to_numpy(),
                meta={"condition": cond, "metric": column, "role": "seed"},
                hovertemplate=f"{cond}, seed %{{customdata}}<br>round %{{x:.0f}}<br>%{{y:.3f}}<extra></extra>"),
                row=1, col=j + 1)
            mean = part.groupby("round")[column].mean()
            fig.add_trace(go.Scatter(
                x=mean.index.to_numpy() + dx, y=mean.to_numpy(np.float32), mode="lines+markers",
                line=dict(color=colors[cond], width=2.5), marker=dict(size=8), name=cond, legendgroup=cond,
                showlegend=j == 0, meta={"condition": cond, "metric": column, "role": "mean"},
                hovertemplate=f"{cond}: mean over seeds<br>round %{{x:.0f}}<br>%{{y:.3f}}<extra></extra>"),
                row=1, col=j + 1)
        fig.add_hline(y=0, line=dict(color="#777777", width=1, dash="dot"), row=1, col=j + 1)
        fig.update_xaxes(title_text="round", dtick=1, row=1, col=j + 1)
    fig.update_yaxes(title_text="normalised reward (round r − round 1)", row=1, col=1)
    top = top_margin(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=380 + top, margin=dict(l=70, r=20, t=top, b=90),
                      title=figure_title(title, above=30),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def readout_figure(df: pd.DataFrame, condition: str | None = None, seed: int | None = None,
                   metric: str = "train_return", window: int | None = None, offset: int | None = None,
                   title: str | None = None) -> go.Figure:
    """How the normalised reward is read from one run's curve (PROTOCOL §5).

    Faint: ``metric`` per epoch; bold: the curve smoothed inside each round (:func:`smoothed`); diamonds: the
    read-outs of :func:`plasticity_lab.stats.round_readout` (``offset`` epochs before each shift and before the
    end); dashed: round 1's read-out. The normalised reward of round r is the height of its diamond above the
    dashed line (hover). ``condition``/``seed`` pick the run (default: the table's first).
    """
    check_table(df, ["round", "epoch", "epoch_in_round", metric], "readout_figure")
    condition = df["condition"].iloc[0] if condition is None else condition
    seed = int(df.loc[df["condition"] == condition, "seed"].iloc[0]) if seed is None else seed
    run = df[(df["condition"] == condition) & (df["seed"] == seed)]
    if run.empty:
        raise ValueError(f"no run with condition={condition!r} and seed={seed!r} in the table")
    run = run.drop(columns=[c for c in run.columns if c.startswith("normalised_")]).sort_values("epoch")
    reads = round_readout(run, metric, window=window, offset=offset)
    window, offset = reads.attrs["window"], reads.attrs["offset"]
    read_epoch = reads.attrs["read_epoch"]
    first = run.groupby("round")["epoch"].min()
    x_read = reads["round"].map(first).to_numpy() + read_epoch
    base = float(reads.loc[reads["round"] == 1, metric].iloc[0])
    color = condition_colors([condition])[condition]
    raw = run.dropna(subset=[metric])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=raw["epoch"], y=raw[metric].to_numpy(np.float32), mode="lines",
                             line=dict(color=color, width=1), opacity=0.3, name=f"{metric_label(metric)}, per epoch",
                             meta={"role": "raw"}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=run["epoch"], y=smoothed(run, metric, window).to_numpy(np.float32), mode="lines",
                             line=dict(color=color, width=2.5), name=f"centred mean over {window} epochs",
                             meta={"role": "smoothed"},
                             hovertemplate="epoch %{x}<br>smoothed %{y:.3f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=x_read, y=reads[metric].to_numpy(np.float32), mode="markers",
                             marker=dict(symbol="diamond", size=11, color="#222222"),
                             name=f"read-out, {offset} epochs before each shift",
                             customdata=np.stack([reads["round"], reads[metric] - base], axis=1),
                             meta={"role": "readout"},
                             hovertemplate="round %{customdata[0]:.0f}: read-out %{y:.3f}<br>normalised reward "
                                           "%{customdata[1]:+.3f}<extra></extra>"))
    fig.add_hline(y=base, line=dict(color="#222222", dash="dash", width=1.2))
    _shift_lines(fig, run)
    top = top_margin(title, 30)
    fig.update_layout(template=TEMPLATE, height=390 + top, xaxis_title="epoch (dotted lines: shifts)",
                      yaxis_title=metric_label(metric), title=figure_title(title),
                      margin=dict(l=70, r=20, t=top, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def diagnostics_figure(df: pd.DataFrame, metrics: Sequence[str] | None = None,
                       conditions: Sequence[str] | None = None, smooth: int = 20, band: str = "std",
                       title: str | None = None) -> go.Figure:
    """The diagnostics over all rounds, with a dropdown menu that picks which one is shown — it works on a static
    page (every diagnostic is stored in the figure; the menu only switches which traces are visible).

    ``metrics`` defaults to the five diagnostics of PROTOCOL §5 (any per-epoch column can be added, e.g.
    ``train_return``). Each is drawn as in :func:`rounds_curve_figure`: per condition, the mean over seeds of the
    smoothed curves and a band for the spread between seeds; dotted lines mark the shifts.
    """
    metrics = list(DIAGNOSTICS) if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    if not metrics:
        raise ValueError("diagnostics_figure needs at least one metric")
    check_table(df, ["round", "epoch", "epoch_in_round", *metrics], "diagnostics_figure")
    conditions = pick_conditions(df, conditions)
    colors = condition_colors(conditions)
    fig = go.Figure()
    owner = []  # the metric each trace belongs to
    for metric in metrics:
        values = df.assign(value=smoothed(df, metric, smooth))
        for cond in conditions:
            before = len(fig.data)
            band_and_mean(fig, over_seeds(values[values["condition"] == cond], "epoch", band), cond,
                          colors[cond], metric, band)
            owner += [metric] * (len(fig.data) - before)
    _shift_lines(fig, df)
    fig.update_layout(
        template=TEMPLATE, height=440 + top_margin(title, 70), xaxis_title="epoch (dotted lines: shifts)",
        yaxis_title=metric_label(metrics[0]), title=figure_title(title),
        margin=dict(l=70, r=20, t=top_margin(title, 70), b=90),
        legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0),
        updatemenus=[group_menu(fig, owner, metrics, metric_label, axis_title=True, pad=top_margin(title, 8))])
    return fig


def after_shift_figure(df: pd.DataFrame, metrics: Sequence[str] = ("entropy", "train_return"), first: int = 30,
                       conditions: Sequence[str] | None = None, band: str = "std",
                       title: str | None = None) -> go.Figure:
    """The first ``first`` epochs of a round, one panel per metric: solid, the mean over rounds 2…R (the rounds
    that begin with a shift); dashed, round 1 (every network fresh). Per condition and seed the rounds are
    averaged epoch by epoch; then the line is the mean over seeds and the band the spread between seeds. No
    smoothing (sparse columns such as ``test_return`` show the epochs where they were measured).
    """
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    check_table(df, ["round", "epoch_in_round", *metrics], "after_shift_figure")
    if int(first) < 1:
        raise ValueError(f"first must be at least 1 epoch, got {first}")
    conditions = pick_conditions(df, conditions)
    colors = condition_colors(conditions)
    early = df[df["epoch_in_round"] < int(first)]
    keys = run_keys(early)
    fig = make_subplots(rows=1, cols=len(metrics), horizontal_spacing=0.1,
                        subplot_titles=[metric_label(m) for m in metrics])
    for j, metric in enumerate(metrics):
        for cond in conditions:
            part = early[early["condition"] == cond]
            for rounds, dash, suffix in ((part["round"] >= 2, "solid", "rounds 2…R"),
                                         (part["round"] == 1, "dash", "round 1")):
                sel = part[rounds]
                if sel.empty:
                    continue
                per_seed = (sel.groupby([*keys, "epoch_in_round"])[metric].mean().rename("value").reset_index())
                band_and_mean(fig, over_seeds(per_seed, "epoch_in_round", band), cond, colors[cond], metric,
                              band if dash == "solid" else "none", row=1, col=j + 1, showlegend=j == 0,
                              dash=dash, name=f"{cond}, {suffix}", hover_x="epoch in round")
        fig.update_xaxes(title_text="epochs since the round began", row=1, col=j + 1)
    top = top_margin(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=360 + top, title=figure_title(title, above=30),
                      margin=dict(l=60, r=20, t=top, b=90),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig
