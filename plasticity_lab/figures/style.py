"""The look every figure of the book shares: colours, the plotly template, axis labels, titles and captions.

One colour per condition and per shift, the same in every figure (plotly and seaborn alike); titles wrapped to the
width of the book's page and hung under the modebar, so a long study caption never runs off a figure; and the
caption line that says which runs produced a figure. Nothing here imports a plotting library: the plotly figures
of :mod:`~plasticity_lab.figures.environment`, :mod:`~plasticity_lab.figures.curves` and
:mod:`~plasticity_lab.figures.comparisons` and the seaborn panels of :mod:`~plasticity_lab.figures.panels` take
what they need from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ..config import at_preset_scale, scale_text

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = [
    "BANDS",
    "BASELINE_COLOR",
    "CONDITION_COLORS",
    "METRIC_LABELS",
    "PALETTE",
    "SHIFT_COLORS",
    "TEMPLATE",
    "TEST_COLOR",
    "TRAIN_COLOR",
    "condition_colors",
    "figure_title",
    "group_menu",
    "metric_label",
    "rgba",
    "study_caption",
    "top_margin",
    "wrap_title",
]

#: One colour per shift, used by every figure that compares shifts.
SHIFT_COLORS = {"permute": "#7b3294", "window": "#e66101", "expand": "#1b7837", "none": "#666666"}
#: The plotly template of every figure.
TEMPLATE = "plotly_white"
#: The train and test curves of one run, and a reference line (a baseline, the unclipped objective, a diagonal).
TRAIN_COLOR, TEST_COLOR, BASELINE_COLOR = "#1f77b4", "#d62728", "#7f7f7f"


#: One colour per condition, the same in every figure of the book; its order is the default order of the
#: conditions in a figure. Other conditions (and coefficient values) take the colours of a fixed palette in order
#: of appearance, skipping those of the conditions shown beside them.
CONDITION_COLORS = {
    "warm_start": "#e6550d", "reset_all": "#3182bd", "reset_final": "#17becf", "shrink_perturb": "#31a354",
    "injection": "#8c564b", "l2": "#e6ab02", "regen_l2": "#e7298a", "regen_w2": "#bcbd22",
    "soft_shrink_perturb": "#756bb1", "redo": "#d62728", "layernorm": "#7f7f7f", "crelu": "#66a61e",
    "soft_shrink_perturb+layernorm": "#000000",
}


#: The colours of the conditions (and coefficient values) without a fixed colour, in the order they are taken.
PALETTE = ("#31a354", "#756bb1", "#e7298a", "#66a61e", "#a6761d", "#17becf", "#bcbd22", "#8c564b", "#d62728",
           "#1b9e77", "#e6ab02", "#7f7f7f")


#: Axis labels of the per-epoch columns (a column not listed is labelled with its own name).
METRIC_LABELS = {
    "train_return": "train return",
    "test_return": "test return (unseen levels)",
    "entropy": "policy entropy (nats)",
    "weight_magnitude": "weight magnitude (RMS of all weights)",
    "weight_difference": "weight change per epoch (RMS)",
    "grad_norm": "gradient norm (before clipping)",
    "dead_units": "dead units (fraction of zero activations)",
    "normalised_train_return": "normalised train reward",
    "normalised_test_return": "normalised test reward",
}


#: Ways to draw the spread between seeds: mean ± sample standard deviation, the range, or no band.
BANDS = ("std", "minmax", "none")


def metric_label(column: str) -> str:
    """The axis label of a per-epoch column (:data:`METRIC_LABELS`, else its name in words)."""
    return METRIC_LABELS.get(column, column.replace("_", " "))


def condition_colors(conditions: Sequence[str]) -> dict[str, str]:
    """A colour for each of ``conditions``: its fixed colour (:data:`CONDITION_COLORS`) where it has one, else the
    next colour of :data:`PALETTE` that no condition shown beside it has."""
    taken = {CONDITION_COLORS[c] for c in conditions if c in CONDITION_COLORS}
    free = [c for c in PALETTE if c not in taken] or list(PALETTE)
    spare = iter(free * (1 + len(conditions) // len(free)))
    return {c: CONDITION_COLORS.get(c) or next(spare) for c in conditions}


def rgba(hex_color: str, alpha: float) -> str:
    """``"#rrggbb"`` as a CSS ``rgba(…)`` colour with opacity ``alpha`` (a band's fill)."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


#: A title line holds about this many characters at the title's 13 px on the book's page (≈ 660 px wide) and takes
#: ``_TITLE_LINE_PX``; the title starts ``_MODEBAR_PX`` below the figure's top edge, under the modebar (the toolbar at
#: the top right).
_TITLE_CHARS, _TITLE_LINE_PX, _MODEBAR_PX = 88, 18, 46


def wrap_title(text: str, width: int = _TITLE_CHARS) -> list[str]:
    """``text`` cut into lines of at most ``width`` characters, between words."""
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + [line]


def figure_title(title: str | None, above: int = 0) -> dict | None:
    """A figure title at the top left of the figure, under the modebar's row, wrapped (long study captions would
    otherwise run off the figure). It hangs down from the figure's top edge, so whatever sits between it and the
    plot area — subplot titles, a dropdown — has the room that :func:`top_margin` leaves (``above``: as there)."""
    if not title:
        return None
    return dict(text="<br>".join(wrap_title(title)), x=0, xref="container", xanchor="left", y=1, yref="container",
                yanchor="top", pad=dict(l=12, t=_MODEBAR_PX), font=dict(size=13))


def top_margin(title: str | None, base: int, above: int = 0) -> int:
    """The top margin that fits ``base`` pixels (modebar, menus) plus the wrapped title and ``above`` (e.g. subplot
    titles or a dropdown between the title and the plot area)."""
    return base + above + (len(wrap_title(title)) * _TITLE_LINE_PX + _MODEBAR_PX - 20 if title else 0)


def group_menu(fig: go.Figure, owner: Sequence[str], groups: Sequence[str], label=str,
               axis_title: bool = False, pad: int = 0) -> dict:
    """A dropdown that shows one group of traces at a time: ``owner[i]`` is the group of ``fig.data[i]``; the first
    group starts visible. With ``axis_title`` each entry also sets the y-axis title to its label."""
    for trace, group in zip(fig.data, owner):
        trace.visible = group == groups[0]
    def args(group):
        visible = {"visible": [o == group for o in owner]}
        return [visible, {"yaxis.title.text": label(group)}] if axis_title else [visible]

    buttons = [dict(label=label(g), method="update", args=args(g)) for g in groups]
    return dict(type="dropdown", buttons=buttons, active=0, direction="down", showactive=True,
                x=0, xanchor="left", y=1, yanchor="bottom", pad=dict(b=pad))


def study_caption(source, study: str | None = None) -> str:
    """One line saying which runs produced a figure, for its title or caption — e.g. ``"study:
    gridworld-permute-warm-vs-reset — gridworld, permute; warm_start, reset_all; preset book with its scale
    overridden (10 rounds × 300 epochs, pool 10), 5 seeds (0–4)"`` (runs made before the preset moved to 10 × 200).

    ``source`` is a manifest (a population's, as :func:`~plasticity_lab.figures.studies.read_runs` returns it: any
    dict with the runs' ``configs``), several manifests (a list, or a mapping name → manifest), or one or more
    :class:`plasticity_lab.RunConfig` (for a live run). Everything is read from the runs' resolved configurations;
    a setting that differs between runs lists its values joined by "/". A preset whose scale (rounds, epochs per
    round, pool) the runs do not have as :data:`plasticity_lab.config.ENV_PRESETS` defines it now is said to be
    overridden, as in :meth:`plasticity_lab.results.Results.describe`. ``study`` (e.g. the study folder's name) is
    put in front.
    """
    if isinstance(source, Mapping) and "configs" in source:
        manifests = [source]
    elif isinstance(source, Mapping):
        manifests = list(source.values())
    else:
        manifests = list(source) if isinstance(source, Sequence) else [source]
    configs = []
    for item in manifests:
        if isinstance(item, Mapping):
            if "configs" not in item:
                raise ValueError("study_caption: a manifest needs its 'configs' (as results.write_population writes them)")
            configs.extend(item["configs"])
        elif hasattr(item, "resolved"):
            configs.append(item.resolved().to_dict())
        else:
            raise ValueError(f"study_caption takes manifests or RunConfigs, got {type(item).__name__}")
    if not configs:
        raise ValueError("study_caption: no runs in the source")

    def values(key: str) -> list:
        return list(dict.fromkeys(c[key] for c in configs))

    def joined(key: str) -> str:
        return "/".join(f"{v:,}" if isinstance(v, int) else str(v) for v in values(key))

    seeds = sorted(set(values("seed")))
    contiguous = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
    seed_text = f"{seeds[0]}–{seeds[-1]}" if contiguous else ", ".join(map(str, seeds))
    n = len(seeds)
    scale = f"{joined('rounds')} rounds × {joined('epochs_per_round')} epochs, pool {joined('pool_size')}"
    if all(c.get("env") == "montezuma" for c in configs):  # no rounds or pools: iterations of its games' rollouts
        scale = "; ".join(sorted({scale_text(c) for c in configs}))
    # Checked against the presets of today: a stored study outlives a preset that moves.
    as_preset = all(at_preset_scale(c) for c in configs)
    scale = f"preset {joined('preset')}{'' if as_preset else ' with its scale overridden'} ({scale})"
    text = (f"{joined('env')}, {joined('shift')}; {', '.join(map(str, values('condition')))}; "
            f"{scale}, {n} seed{'s' if n != 1 else ''} ({seed_text})")
    return f"study: {study} — {text}" if study else text
