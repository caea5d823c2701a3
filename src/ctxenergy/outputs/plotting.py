"""The plotting toolkit of the figures: style, engine colours, axes, error bars, the legend above the panels, the
footnotes below them, length labels that do not overlap, a panel that says in words what is missing, and files
without dates (the same tables give the same bytes).
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a compute node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import Formatter, FuncFormatter  # noqa: E402

from ctxenergy.analysis.cells import engine_rank  # noqa: E402
from ctxenergy.engines.registry import ENGINES  # noqa: E402
from ctxenergy.outputs.render import short_tokens, why_energy_missing  # noqa: E402


@dataclass(frozen=True)
class EngineStyle:
    colour: str
    marker: str
    line: str


# One look per engine in every figure, from the engine registry (colour, marker, line style).
ENGINE_STYLES = {e.name: EngineStyle(e.colour, e.marker, e.linestyle) for e in ENGINES.values()}
OTHER_ENGINE = EngineStyle("#555555", "v", (0, (5, 1, 1, 1, 1, 1)))
ENGINE_PALETTE = {engine: s.colour for engine, s in ENGINE_STYLES.items()}
PHASE_MARKERS = {"prefill": "o", "generate": "s"}
MISSING_COLOUR = "#b03030"
PAPER_COLOUR = "black"  # the paper's numbers: not one of our engines
NOTE_FONTSIZE = 6.5


def engine_style(engine: str) -> EngineStyle:
    return ENGINE_STYLES.get(engine, OTHER_ENGINE)


def colour(engine: str) -> str:
    return engine_style(engine).colour


def engine_kw(engine: str, line: bool = True) -> dict:
    """matplotlib keywords of an engine's look: colour, marker and (line=True) its line style, else no line."""
    s = engine_style(engine)
    return {"color": s.colour, "marker": s.marker, "ls": s.line if line else "none"}


def style() -> None:
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: searchable, smaller files
            "svg.hashsalt": "ctxenergy",
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "axes.titlesize": 10,
            "legend.fontsize": 8,
        }
    )


def log2_x(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(short_tokens))


class PlainLog(Formatter):
    """matplotlib's log-axis labelling (which ticks get a label), written as plain numbers: 30, 100, 600 instead
    of 3 x 10^1, 10^2, 6 x 10^2."""

    def __init__(self, inner: Formatter):
        self.inner = inner

    def set_axis(self, axis):
        super().set_axis(axis)
        self.inner.set_axis(axis)

    def set_locs(self, locs):
        self.inner.set_locs(locs)

    def __call__(self, v, pos=None):
        return f"{v:g}" if self.inner(v, pos) else ""


def log_y(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(PlainLog(ax.yaxis.get_major_formatter()))
    ax.yaxis.set_minor_formatter(PlainLog(ax.yaxis.get_minor_formatter()))


def yerr(y, lo, hi) -> np.ndarray:
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    return np.vstack([np.clip(np.nan_to_num(y - lo), 0, None), np.clip(np.nan_to_num(hi - y), 0, None)])


def errorline(ax, x, y, lo, hi, **kw):
    return ax.errorbar(x, y, yerr=yerr(y, lo, hi), capsize=2.5, elinewidth=0.9, markersize=4, **kw)


def wrap(text: str, width: int) -> str:
    """Hard line breaks, paragraph by paragraph (matplotlib's wrap=True wraps to the figure, not to the axes)."""
    return "\n".join(
        textwrap.fill(p, max(width, 12), break_long_words=False, break_on_hyphens=False) or "" for p in text.split("\n")
    )


def axes_size_in(ax) -> tuple[float, float]:
    pos, (w, h) = ax.get_position(), ax.figure.get_size_inches()
    return pos.width * w, pos.height * h


def say_missing(ax, message: str) -> None:
    # about 12 characters of 9 pt text per inch: the message stays inside its panel
    ax.text(
        0.5,
        0.5,
        wrap(message, int(axes_size_in(ax)[0] * 12)),
        ha="center",
        va="center",
        color=MISSING_COLOUR,
        fontsize=9,
        transform=ax.transAxes,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def engines_of(df: pd.DataFrame) -> list[str]:
    return sorted(df["engine"].unique(), key=engine_rank)


def energy_missing_message(per_cell: pd.DataFrame) -> str:
    """Why a figure has no energy, as the report and the write-up say it: the cells' own reasons, counted."""
    if per_cell.empty:
        return "no cells in the table"
    return f"energy missing: {why_energy_missing(per_cell)}"


def excluded_note(per_cell: pd.DataFrame, phase: str | None = None) -> tuple[str, str] | None:
    """The footnote naming the cells left out of a figure, or None."""
    df = per_cell if phase is None else per_cell[per_cell["phase"] == phase]
    bad = df[~df["usable"]]
    # with no usable cell at all, the panels already say why in full
    if not (len(bad) and df["usable"].any()):
        return None
    text = "; ".join(
        f"{r.model}/{r.engine}/{r.phase}/L{r.length_tokens}: {r.excluded_reason.split(':')[0]}"
        for r in bad.head(6).itertuples()
    )
    more = f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""
    return f"Excluded from this figure: {text}{more}", MISSING_COLOUR


def subplots(n_rows: int, n_cols: int, w: float = 4.2, h: float = 3.2, **kw):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows + 0.5), squeeze=False, **kw)
    return fig, axes


def engine_of(label: str, engines) -> str | None:
    first = label.split(" ")[0].split("/")[-1].rstrip(":,")
    return first if first in engines else None


def top_legend(fig, axes, engines=()) -> int:
    """One legend above the panels: each engine's entries together, in the fixed engine order, one column per engine
    where every engine has the same number of entries; reference lines (idle, power limit, the paper's points) after
    them. Returns the number of rows."""
    engines = list(engines) or list(ENGINE_PALETTE)
    entries: dict[str, object] = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_") and lab not in entries:
                entries[lab] = h
    if not entries:
        return 0
    by_engine: dict[str, list[str]] = {}
    others = []
    for lab in entries:
        e = engine_of(lab, engines)
        (by_engine.setdefault(e, []) if e else others).append(lab)
    groups = [by_engine[e] for e in sorted(by_engine, key=engine_rank)]
    sizes = {len(g) for g in groups}
    labels = [lab for g in groups for lab in g] + others
    handles = [entries[lab] for lab in labels]
    if len(sizes) == 1 and (k := sizes.pop()) > 1:
        # matplotlib fills a legend column by column: pad the rest to whole columns so that a column is an engine
        pad = (-len(others)) % k
        handles += [Line2D([], [], alpha=0)] * pad
        labels += [" "] * pad
        ncol = len(labels) // k
    else:
        ncol = min(len(labels), 5)
    fig.legend(handles, labels, loc="upper center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 1.0))
    return math.ceil(len(labels) / ncol)


def finish(fig, axes, notes=(), engines=(), legend: bool = True) -> None:
    """Legend on top, footnotes at the bottom one below the other (never on top of each other), and the panels laid
    out in the space between."""
    fig_w, fig_h = fig.get_size_inches()
    rows = top_legend(fig, axes, engines) if legend else 0
    line_h = NOTE_FONTSIZE * 1.35 / 72  # inches
    y = 0.05 / fig_h
    for text, colour in reversed([n for n in notes if n]):
        wrapped = wrap(text, int(fig_w * 19))  # about 19 characters of 6.5 pt text per inch
        fig.text(0.01, y, wrapped, fontsize=NOTE_FONTSIZE, color=colour, ha="left", va="bottom")
        y += (wrapped.count("\n") + 1) * line_h / fig_h
    bottom = y + (0.06 / fig_h if y > 0.05 / fig_h else 0)
    top = 1 - (rows * 0.24 + 0.1) / fig_h if rows else 1
    fig.tight_layout(rect=(0, bottom, 1, top))


def models_of(per_cell: pd.DataFrame) -> list[str]:
    return sorted(per_cell["model"].unique()) or [""]


def l_range(ls: list[int], series_ls: list[int]) -> str:
    ls = sorted(set(ls))
    if len(ls) == 1:
        return short_tokens(ls[0])
    inside = [L for L in series_ls if ls[0] <= L <= ls[-1]]
    if len(ls) > 2 and sorted(set(inside)) == ls:
        return f"{short_tokens(ls[0])}–{short_tokens(ls[-1])}"
    return ", ".join(short_tokens(L) for L in ls)


def ends_of_series(points: list) -> list:
    """The points of each series at its smallest and its largest L: where many series share a panel, labelling
    every L piles the labels up; the ends say which way each series runs."""
    keep = []
    for series in dict.fromkeys(p[3] for p in points):
        mine = [p for p in points if p[3] == series]
        ends = {min(p[2] for p in mine), max(p[2] for p in mine)}
        keep += [p for p in mine if p[2] in ends]
    return keep


def label_lengths(ax, points, near_in: float = 0.13, fontsize: float = 6) -> list[str]:
    """Each point's L beside it, in its engine's colour. Points of one series closer together than a label share one
    label ("1k–16k"), and each label goes to the first side of its points where it covers no other label or point.
    points: (x, y, L, series) with series = (engine, phase). Returns the labels written."""
    if not points:
        return []
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    w_in, h_in = axes_size_in(ax)
    xy = ax.transAxes.inverted().transform(ax.transData.transform(np.array([(p[0], p[1]) for p in points], float)))
    xy = xy * (w_in, h_in)  # inches from the panel's lower left corner
    clusters: list[list[int]] = []
    for i, (_, _, _, series) in enumerate(points):
        for c in clusters:
            if points[c[0]][3] == series and min(np.hypot(*(xy[i] - xy[j])) for j in c) < near_in:
                c.append(i)
                break
        else:
            clusters.append([i])
    char_w, line_h, gap = fontsize * 0.62 / 72, fontsize * 1.25 / 72, 0.03
    taken = [(x - 0.04, y - 0.04, x + 0.04, y + 0.04) for x, y in xy]  # the markers

    def overlap(box) -> float:
        x0, y0, x1, y1 = box
        out = max(0.0, -x0) + max(0.0, x1 - w_in) + max(0.0, -y0) + max(0.0, y1 - h_in)  # outside the panel
        return out * 10 + sum(
            max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1])) for b in taken
        )

    written = []
    for c in clusters:
        series = points[c[0]][3]
        text = l_range([points[i][2] for i in c], [p[2] for p in points if p[3] == series])
        bx0, by0 = xy[c].min(axis=0)
        bx1, by1 = xy[c].max(axis=0)
        w, h = len(text) * char_w, line_h
        cx = (bx0 + bx1 - w) / 2
        candidates = [
            (bx1 + gap, by1),
            (bx1 + gap, by0 - h),
            (bx0 - gap - w, by1),
            (bx0 - gap - w, by0 - h),
            (cx, by1 + gap),
            (cx, by0 - gap - h),
            (bx1 + gap, (by0 + by1 - h) / 2),
            (bx0 - gap - w, (by0 + by1 - h) / 2),
        ]
        best = min(candidates, key=lambda q: overlap((q[0], q[1], q[0] + w, q[1] + h)))
        taken.append((best[0], best[1], best[0] + w, best[1] + h))
        ax.annotate(
            text,
            (best[0] / w_in, best[1] / h_in),
            xycoords="axes fraction",
            ha="left",
            va="bottom",
            fontsize=fontsize,
            color=colour(series[0]),
        )
        written.append(text)
    return written


def save(fig, paths) -> None:
    for p in map(Path, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        # no dates in the files: the same tables give the same bytes
        meta = {"Date": None} if p.suffix == ".svg" else {"Software": None}
        fig.savefig(p, format=p.suffix.lstrip("."), metadata=meta, bbox_inches="tight")
