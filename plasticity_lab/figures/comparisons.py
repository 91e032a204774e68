"""Conditions compared: how far apart two conditions are round by round, what each keeps over a study, how a
coefficient or a scale changes it, and how the diagnostics line up with the reward.

Chapters 4–11 draw stored studies with these. The statistics behind them are :mod:`plasticity_lab.stats`'s
(Cohen's d per round: :func:`~plasticity_lab.stats.cohens_d_by_round`); this module draws them.

* :func:`round_separation`, :func:`shift_separation`, :func:`separation_figure` — per round, how many seed standard
  deviations apart two conditions are in each diagnostic and in normalised reward.
* :func:`round_means_figure` — a stored study's per-round values, one panel per shift, with a metric menu.
* :func:`condition_summary_figure` — each run's normalised reward summarised over rounds, per condition.
* :func:`coefficient_sweep_figure` — a stored coefficient sweep with a slider over one coefficient.
* :func:`diagnostic_scatter_figure` — normalised reward against each diagnostic, with its least-squares line.
* :func:`ranking_comparison_figure` — two studies' rankings of their conditions against each other.
* :func:`gap_by_scale_figure` — one comparison's gap, with its interval, at several scales (round lengths).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..schema import DIAGNOSTICS
from ..stats import cohens_d_by_round
from .curves import band_and_mean
from .style import (BANDS, BASELINE_COLOR, METRIC_LABELS, PALETTE, TEMPLATE, TEST_COLOR, TRAIN_COLOR,
                    condition_colors, figure_title, group_menu, metric_label, top_margin)
from .tables import (check_rounds, check_table, normalised_rounds, over_seeds, pick_conditions, run_keys,
                     shifts_in_order)

__all__ = [
    "SWEEP_PANELS",
    "coefficient_sweep_figure",
    "condition_summary_figure",
    "diagnostic_scatter_figure",
    "gap_by_scale_figure",
    "ranking_comparison_figure",
    "round_means_figure",
    "round_separation",
    "separation_figure",
    "shift_separation",
]


def round_separation(df: pd.DataFrame, metrics: Sequence[str] | None = None, condition: str = "warm_start",
                     baseline: str = "reset_all", window: int | None = None,
                     offset: int | None = None) -> pd.DataFrame:
    """How far apart two conditions are in each round, in units of the spread between seeds: Cohen's d,
    ``(mean_condition − mean_baseline) / s_pooled`` with ``s_pooled² = ((n₁−1)s₁² + (n₂−1)s₂²) / (n₁+n₂−2)``
    (sample variances over seeds).

    A run's value in a round is the mean over the round's epochs for a per-epoch column (the diagnostics,
    default), and the normalised reward (:func:`plasticity_lab.stats.normalised_reward`) for
    ``normalised_train_return`` / ``normalised_test_return``. Returns a table indexed by round with one column per
    metric; NaN where either side has fewer than 2 seeds or neither has any spread between seeds (e.g. the
    normalised reward of round 1, which is 0 for every run).
    """
    metrics = list(DIAGNOSTICS) if metrics is None else ([metrics] if isinstance(metrics, str) else list(metrics))
    rewards = [m for m in metrics if m.startswith("normalised_")]
    plain = [m for m in metrics if m not in rewards]
    check_table(df, ["round", "epoch_in_round", *plain], "round_separation")
    pick_conditions(df, [condition, baseline])
    keys = run_keys(df)
    per_round = df.groupby([*keys, "round"])[plain].mean().reset_index()
    if rewards:
        nr = normalised_rounds(df, window, offset)
        per_round = per_round.merge(nr[[*keys, "round", *rewards]], on=[*keys, "round"], how="outer")
    return cohens_d_by_round(per_round, metrics, condition, baseline)


def shift_separation(rounds: pd.DataFrame, metrics: Sequence[str] | None = None, condition: str = "warm_start",
                     baseline: str = "reset_all") -> pd.DataFrame:
    """:func:`round_separation` for every shift of a stored study, from its ``rounds`` table (one row per run ×
    round, :attr:`plasticity_lab.results.Results.rounds`): Cohen's d of ``condition`` against ``baseline`` per
    shift and round, on the round means of the diagnostics and on the normalised rewards as stored.

    Returns a table indexed by (shift, round) with one column per metric (default: the five diagnostics and both
    normalised rewards); NaN where either side has fewer than 2 seeds or there is no spread between seeds.
    """
    if metrics is None:
        metrics = [*DIAGNOSTICS, "normalised_train_return", "normalised_test_return"]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    check_rounds(rounds, metrics, "shift_separation")
    pick_conditions(rounds, [condition, baseline])
    parts = {shift: cohens_d_by_round(rounds[rounds["shift"] == shift], metrics, condition, baseline)
             for shift in shifts_in_order(rounds)}
    out = pd.concat(parts, names=["shift", "round"])
    out.attrs.update(condition=condition, baseline=baseline)
    return out


def round_means_figure(rounds: pd.DataFrame, metrics: Sequence[str] | None = None,
                       conditions: Sequence[str] | None = None, band: str = "std",
                       title: str | None = None) -> go.Figure:
    """Per-round values of a stored study, one panel per shift, with a dropdown menu that picks the metric (it
    works on a static page: every metric is stored in the figure).

    ``rounds`` is a study's ``rounds`` table (:attr:`plasticity_lab.results.Results.rounds`): a diagnostic's value
    in a round is its mean over the round's epochs, a normalised reward its read-out. ``metrics`` defaults to the
    five diagnostics and both normalised rewards. Per condition: the mean over seeds and a band for the spread
    between seeds (``band``: ``std``, ``minmax`` or ``none``).
    """
    if metrics is None:
        metrics = [*DIAGNOSTICS, "normalised_train_return", "normalised_test_return"]
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("round_means_figure needs at least one metric")
    check_rounds(rounds, metrics, "round_means_figure")
    if band not in BANDS:
        raise ValueError(f"unknown band {band!r}; valid: {', '.join(BANDS)}")
    conditions = pick_conditions(rounds, conditions)
    colors = condition_colors(conditions)
    shifts = shifts_in_order(rounds)
    fig = make_subplots(rows=1, cols=len(shifts), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=list(shifts))
    owner = []
    for metric in metrics:
        for j, shift in enumerate(shifts):
            for cond in conditions:
                part = rounds[(rounds["shift"] == shift) & (rounds["condition"] == cond)]
                if part.empty:
                    continue
                before = len(fig.data)
                band_and_mean(fig, over_seeds(part.assign(value=part[metric]), "round", band), cond,
                              colors[cond], metric, band, row=1, col=j + 1, showlegend=j == 0,
                              hover_x=f"{shift}, round")
                owner += [metric] * (len(fig.data) - before)
    fig.update_xaxes(dtick=1, title_text="round")
    top = top_margin(title, 70, above=30)
    fig.update_layout(
        template=TEMPLATE, height=400 + top, yaxis_title=metric_label(metrics[0]), title=figure_title(title, above=30),
        margin=dict(l=70, r=20, t=top, b=90),
        legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0),
        updatemenus=[group_menu(fig, owner, metrics, metric_label, axis_title=True,
                                pad=top_margin(title, 8, above=30))])
    return fig


def separation_figure(df: pd.DataFrame, metrics: Sequence[str] | None = None, condition: str = "warm_start",
                      baseline: str = "reset_all", window: int | None = None, offset: int | None = None,
                      title: str | None = None) -> go.Figure:
    """:func:`round_separation` per round as lines: the diagnostics in the top panel, the normalised rewards in the
    bottom one (their scales differ by an order of magnitude or more).

    ``metrics`` defaults to the five diagnostics and both normalised rewards. Above 0: ``condition`` is higher
    than ``baseline`` in that round; ``|d| = 1`` means the means differ by one (pooled) standard deviation between
    seeds, and the grey band marks ``|d| < 1``.
    """
    if metrics is None:
        metrics = [*DIAGNOSTICS, "normalised_train_return", "normalised_test_return"]
    table = round_separation(df, metrics, condition, baseline, window, offset)
    palette = dict(zip(DIAGNOSTICS, ("#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")))
    reward_colors = {"normalised_train_return": TRAIN_COLOR, "normalised_test_return": TEST_COLOR}
    panels = [[m for m in table.columns if m not in reward_colors], [m for m in table.columns if m in reward_colors]]
    panels = [p for p in panels if p]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.1,
                        subplot_titles=["diagnostics" if p[0] not in reward_colors else "normalised reward"
                                        for p in panels])
    for row, names in enumerate(panels, start=1):
        for i, m in enumerate(names):
            color = reward_colors.get(m) or palette.get(m) or PALETTE[i % len(PALETTE)]
            fig.add_trace(go.Scatter(
                x=table.index.to_numpy(), y=table[m].to_numpy(np.float64), mode="lines+markers", name=metric_label(m),
                line=dict(color=color, width=2.5), marker=dict(size=7), meta={"metric": m},
                hovertemplate=f"{metric_label(m)}<br>round %{{x}}<br>d = %{{y:.2f}}<extra></extra>"), row=row, col=1)
        # after the traces: plotly leaves shapes out of subplots that are still empty
        fig.add_hrect(y0=-1, y1=1, fillcolor="#cccccc", opacity=0.35, line_width=0, layer="below", row=row, col=1)
        fig.add_hline(y=0, line=dict(color="#777777", width=1), row=row, col=1)
        fig.update_yaxes(title_text="Cohen's d", row=row, col=1)
    fig.update_xaxes(dtick=1)
    fig.update_xaxes(title_text=f"round — d = ({condition} − {baseline}) / pooled standard deviation between seeds",
                     row=len(panels), col=1)
    top = top_margin(title, 40, above=30)
    fig.update_layout(template=TEMPLATE, height=300 * len(panels) + top + 110, title=figure_title(title, above=30),
                      margin=dict(l=70, r=20, t=top, b=130),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


SWEEP_PANELS = (("normalised_train_return", "normalised train reward"), ("weight_magnitude", "weight magnitude"),
                ("dead_units", "dead units"))


def coefficient_sweep_figure(results, slider: str = "perturb", lines: str = "shrink",
                             panels: Sequence[tuple[str, str]] = SWEEP_PANELS, title: str | None = None) -> go.Figure:
    """Per-round results of a stored coefficient sweep, with a plotly **slider** over one coefficient (works on a
    static page: every value's traces are in the figure, the slider shows one value's).

    ``results`` is a :class:`~plasticity_lab.results.Results` of a sweep over (at least) the coefficients named
    by ``slider`` and ``lines``; each panel shows one column of ``results.rounds`` per round, as the mean over
    seeds, with one line per value of ``lines``.
    """
    params = results.condition_params()
    for name in (slider, lines):
        if name not in params.columns:
            raise ValueError(f"the study does not sweep {name!r}; its coefficients: "
                             f"{', '.join(c for c in params.columns if c not in ('condition', 'base_condition'))}")
    rounds = results.rounds.merge(params[["condition", slider, lines]], on="condition")
    for column, _ in panels:
        check_table(rounds, [column], "coefficient_sweep_figure")
    means = rounds.groupby([slider, lines, "round"])[[c for c, _ in panels]].mean().reset_index()
    slider_values = sorted(means[slider].unique())
    line_values = sorted(means[lines].unique())
    colors = condition_colors([f"{lines}={v:g}" for v in line_values])
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[label for _, label in panels])
    for s_value in slider_values:
        for l_value in line_values:
            part = means[(means[slider] == s_value) & (means[lines] == l_value)]
            name = f"{lines}={l_value:g}"
            for row, (column, label) in enumerate(panels, start=1):
                fig.add_trace(go.Scatter(
                    x=part["round"], y=part[column], mode="lines+markers", name=name, legendgroup=name,
                    showlegend=row == 1, visible=bool(s_value == slider_values[0]),
                    line={"color": colors[name]},
                    hovertemplate=f"{slider}={s_value:g}, {name}<br>round %{{x}}: %{{y:.3f}}<extra>{label}</extra>"),
                    row=row, col=1)
    per_value = len(line_values) * len(panels)
    steps = []
    for i, s_value in enumerate(slider_values):
        visible = [False] * len(fig.data)
        visible[i * per_value:(i + 1) * per_value] = [True] * per_value
        steps.append({"method": "update", "label": f"{s_value:g}", "args": [{"visible": visible}]})
    fig.update_layout(
        sliders=[{"active": 0, "currentvalue": {"prefix": f"{slider} = "}, "pad": {"t": 40}, "steps": steps}],
        template=TEMPLATE, height=260 * len(panels) + 60 + top_margin(title, 60, 10),
        margin={"t": top_margin(title, 60, 10)}, title=figure_title(title, above=10),
        legend={"title": {"text": lines}})
    fig.update_xaxes(title_text="round", row=len(panels), col=1)
    return fig


def condition_summary_figure(runs: pd.DataFrame, conditions: Sequence[str] | None = None,
                             title: str | None = None):
    """Each run's normalised reward summarised over rounds (a stored study's ``runs(at)`` table, or
    :func:`plasticity_lab.stats.run_summary`): one dot per seed and a bar for the mean over seeds, one column
    of panels per shift, train (top) and test (bottom), one colour per condition."""
    needed = ["shift", "condition", "seed", "normalised_train_return", "normalised_test_return"]
    missing = [c for c in needed if c not in runs.columns]
    if missing:
        raise ValueError(f"condition_summary_figure needs column(s) {missing}; the table has {list(runs.columns)}")
    present = list(pd.unique(runs["condition"]))
    conditions = present if conditions is None else [c for c in conditions if c in present]
    if not conditions:
        raise ValueError(f"none of the conditions are in the table; present: {present}")
    shifts = list(pd.unique(runs["shift"]))
    colors = condition_colors(conditions)
    at = runs.attrs.get("at", "mean")
    what = "mean over rounds 2..R" if at == "mean" else "last round"
    fig = make_subplots(rows=2, cols=len(shifts), shared_yaxes="rows", horizontal_spacing=0.04,
                        vertical_spacing=0.1, subplot_titles=[f"{s}, train" for s in shifts] +
                        [f"{s}, test" for s in shifts])
    for j, shift in enumerate(shifts):
        for i, split in enumerate(("train", "test")):
            column = f"normalised_{split}_return"
            for k, cond in enumerate(conditions):
                part = runs[(runs["shift"] == shift) & (runs["condition"] == cond)].dropna(subset=[column])
                if part.empty:
                    continue
                first = i == 0 and j == 0
                fig.add_trace(go.Bar(x=[k], y=[float(part[column].mean())], marker_color=colors[cond],
                                     opacity=0.35, name=cond, legendgroup=cond, showlegend=first,
                                     hovertemplate=f"{cond}, {shift}, {split}<br>mean over seeds %{{y:.3f}}"
                                                   "<extra></extra>"), row=i + 1, col=j + 1)
                fig.add_trace(go.Scatter(x=np.full(len(part), k, dtype=float), y=part[column].to_numpy(np.float32),
                                         mode="markers", marker=dict(color=colors[cond], size=7),
                                         customdata=part["seed"].to_numpy(), legendgroup=cond, showlegend=False,
                                         hovertemplate=f"{cond}, seed %{{customdata}}<br>%{{y:.3f}}<extra></extra>"),
                              row=i + 1, col=j + 1)
            fig.add_hline(y=0, line=dict(color="#777777", width=1, dash="dot"), row=i + 1, col=j + 1)
            fig.update_xaxes(tickvals=list(range(len(conditions))), ticktext=conditions, tickangle=-45,
                             showticklabels=i == 1, row=i + 1, col=j + 1)
        fig.update_yaxes(title_text=f"normalised reward<br>({what})", row=1, col=1)
        fig.update_yaxes(title_text=f"normalised reward<br>({what})", row=2, col=1)
    top = top_margin(title, 60)
    fig.update_layout(template=TEMPLATE, height=700 + top, margin=dict(l=80, r=20, t=top, b=170), barmode="overlay",
                      title=figure_title(title),
                      legend=dict(orientation="h", yanchor="bottom", y=0, yref="container", x=0))
    return fig


def diagnostic_scatter_figure(points: pd.DataFrame, split: str = "train", diagnostics: Sequence[str] = DIAGNOSTICS,
                              title: str | None = None) -> go.Figure:
    """Normalised reward against each diagnostic, one point per row of ``points`` (e.g. shift × condition means
    of a run summary), with its least-squares line; a **dropdown** picks the diagnostic (it works on a static
    page: every diagnostic's traces are in the figure). The legend entry gives R² and Pearson p."""
    from scipy import stats

    y_column = f"normalised_{split}_return"
    missing = [c for c in (y_column, *diagnostics) if c not in points.columns]
    if missing:
        raise ValueError(f"diagnostic_scatter_figure needs column(s) {missing}; the table has {list(points.columns)}")
    label = points["condition"].astype(str) if "condition" in points.columns else pd.Series([""] * len(points))
    if "shift" in points.columns:
        label = points["shift"].astype(str) + ", " + label
    fig = go.Figure()
    for i, diagnostic in enumerate(diagnostics):
        data = points[[diagnostic, y_column]].assign(label=label).dropna()
        x, y = data[diagnostic].to_numpy(float), data[y_column].to_numpy(float)
        fig.add_trace(go.Scatter(x=x, y=y, mode="markers", text=data["label"], visible=i == 0, name="points",
                                 marker={"size": 9}, hovertemplate="%{text}<br>x %{x:.4g}, y %{y:.3f}<extra></extra>"))
        if len(x) >= 3 and np.ptp(x) > 0:
            fit = stats.linregress(x, y)
            xs = np.linspace(x.min(), x.max(), 2)
            name = f"fit: R² = {fit.rvalue ** 2:.2f}, p = {fit.pvalue:.2g}"
            fig.add_trace(go.Scatter(x=xs, y=fit.intercept + fit.slope * xs, mode="lines", visible=i == 0,
                                     name=name, line={"color": "black", "dash": "dash"}))
        else:
            fig.add_trace(go.Scatter(x=[], y=[], visible=i == 0, name="fit: too few points"))
    buttons = []
    for i, diagnostic in enumerate(diagnostics):
        visible = [False] * len(fig.data)
        visible[2 * i:2 * i + 2] = [True, True]
        buttons.append({"label": METRIC_LABELS.get(diagnostic, diagnostic), "method": "update",
                        "args": [{"visible": visible}, {"xaxis": {"title": {"text": diagnostic}}}]})
    fig.update_layout(updatemenus=[{"buttons": buttons, "x": 0, "y": 1.02, "xanchor": "left", "yanchor": "bottom"}],
                      template=TEMPLATE, height=480, margin={"t": top_margin(title, 60, 40)},
                      title=figure_title(title, above=40),
                      xaxis_title=diagnostics[0], yaxis_title=f"normalised {split} reward")
    return fig


def ranking_comparison_figure(first: pd.DataFrame, second: pd.DataFrame, labels: Sequence[str] = ("first", "second"),
                              title: str | None = None) -> go.Figure:
    """Two studies' :func:`plasticity_lab.stats.condition_ranking` tables against each other: one dot per
    condition both contain, at its mean normalised reward (train and test pooled) in the first study (x) and in
    the second (y). On the dashed diagonal a condition did equally well in both; the two orders agree where the
    dots rise from left to right (:func:`plasticity_lab.stats.ranking_agreement` puts a number on it)."""
    for name, table in (("first", first), ("second", second)):
        missing = [c for c in ("condition", "mean", "rank") if not isinstance(table, pd.DataFrame)
                   or c not in table.columns]
        if missing:
            raise ValueError(f"ranking_comparison_figure needs condition_ranking tables; the {name} lacks {missing}")
    if len(labels) != 2:
        raise ValueError(f"labels must name the two studies; got {list(labels)}")
    both = first.merge(second, on="condition", suffixes=("_first", "_second"))
    if both.empty:
        raise ValueError("the two rankings share no condition")
    colors = condition_colors(list(both["condition"]))
    fig = go.Figure()
    for row in both.itertuples():
        fig.add_trace(go.Scatter(
            x=[row.mean_first], y=[row.mean_second], mode="markers+text", text=[row.condition],
            textposition="top center", textfont={"size": 10}, marker={"size": 10, "color": colors[row.condition]},
            name=row.condition, showlegend=False,
            hovertemplate=(f"{row.condition}<br>{labels[0]}: %{{x:+.3f}} (rank {row.rank_first})<br>"
                           f"{labels[1]}: %{{y:+.3f}} (rank {row.rank_second})<extra></extra>")))
    low = float(min(both["mean_first"].min(), both["mean_second"].min()))
    high = float(max(both["mean_first"].max(), both["mean_second"].max()))
    pad = 0.05 * (high - low or 1.0)
    fig.add_trace(go.Scatter(x=[low - pad, high + pad], y=[low - pad, high + pad], mode="lines", showlegend=False,
                             line={"color": BASELINE_COLOR, "dash": "dash", "width": 1}, hoverinfo="skip"))
    fig.update_layout(template=TEMPLATE, height=560, margin={"t": top_margin(title, 40)}, title=figure_title(title),
                      xaxis_title=f"mean normalised reward: {labels[0]}",
                      yaxis_title=f"mean normalised reward: {labels[1]}")
    return fig


def gap_by_scale_figure(table: pd.DataFrame, scale_label: str = "epochs per round", title: str | None = None
                        ) -> go.Figure:
    """:func:`plasticity_lab.stats.gap_by_scale` drawn: per split (left: train, right: test), the gap in mean
    normalised reward between the condition and its baseline at each scale, with its confidence interval; one
    colour per shift. A filled marker is a gap significant at the 5 % level; below the dotted line the condition
    did worse than its baseline."""
    needed = ["scale", "shift", "split", "gap", "ci_low", "ci_high", "p", "effect_size"]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"gap_by_scale_figure needs gap_by_scale's table; missing column(s) {missing}")
    condition, baseline = table.attrs.get("condition", "condition"), table.attrs.get("baseline", "baseline")
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=["train", "test on unseen levels"])
    shifts = list(pd.unique(table["shift"]))
    for k, shift in enumerate(shifts):
        color = PALETTE[k % len(PALETTE)]
        for col, split in enumerate(("train", "test"), start=1):
            part = table[(table["shift"] == shift) & (table["split"] == split)]
            significant = (part["p"] < 0.05).to_numpy()
            fig.add_trace(go.Scatter(
                x=part["scale"].astype(str), y=part["gap"],
                error_y=dict(type="data", symmetric=False, array=part["ci_high"] - part["gap"],
                             arrayminus=part["gap"] - part["ci_low"], color=color),
                mode="markers", name=shift, legendgroup=shift, showlegend=col == 1 and len(shifts) > 1,
                marker=dict(size=11, color=[color if s else "white" for s in significant],
                            line=dict(color=color, width=2)),
                customdata=np.column_stack([part["p"], part["effect_size"], part["ci_low"], part["ci_high"]]),
                hovertemplate=(f"{shift}, {split}, {scale_label} %{{x}}<br>{condition} − {baseline}: %{{y:+.3f}} "
                               "[%{customdata[2]:+.3f}, %{customdata[3]:+.3f}]<br>p = %{customdata[0]:.3f}, "
                               "d = %{customdata[1]:.2f}<extra></extra>")), row=1, col=col)
            fig.add_hline(y=0, line=dict(color=BASELINE_COLOR, width=1, dash="dot"), row=1, col=col)
            fig.update_xaxes(title_text=scale_label, type="category", row=1, col=col)
    fig.update_yaxes(title_text=f"{condition} − {baseline}<br>mean normalised reward", row=1, col=1)
    fig.update_layout(template=TEMPLATE, height=440, margin={"t": top_margin(title, 50, 20)},
                      title=figure_title(title, above=20))
    return fig
