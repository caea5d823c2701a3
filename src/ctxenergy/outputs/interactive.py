"""The report's interactive figures: the hero (prefill J/token vs L with the fit) and the claims' figures (dE/dL vs
L, mean power vs L, the engines' energy ratio vs L) drawn with plotly, so that a reader reads each cell's value,
interval and L by hovering over it, in a page that needs no network (plotly.js inlined once).

Each figure's data come from the function of ctxenergy.outputs.figures that its static PNG/SVG (kept for the
write-up and print) is drawn from (hero_panels, de_dl_panels, power_panels, ratio_panels), so that both always show
the same points; colours, markers and line styles come from ctxenergy.outputs.plotting.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from ctxenergy.analysis.paper_values import PAPER
from ctxenergy.outputs.figures import (
    DE_DL_NOTE,
    DE_DL_RISE_LABEL,
    DE_DL_STAR_LABEL,
    HERO_NOTE,
    PAPER_PLATEAU,
    PAPER_PLATEAU_BAND_LABEL,
    PAPER_PLATEAU_LABEL,
    PAPER_RATIO_LABEL,
    STAR_LABEL,
    de_dl_panels,
    hero_panels,
    power_limit_label,
    power_panels,
    ratio_panels,
)
from ctxenergy.outputs.plotting import PAPER_COLOUR, engine_style
from ctxenergy.outputs.render import fmt, fmt_ci, short_tokens, tokens

# matplotlib's markers and line styles (plotting.ENGINE_STYLES) in plotly's names
MARKERS = {
    "o": "circle",
    "s": "square",
    "^": "triangle-up",
    "D": "diamond",
    "v": "triangle-down",
    "P": "cross",
    "X": "x",
    "*": "star",
}
DASHES = {"-": "solid", "--": "dash", "-.": "dashdot", ":": "dot"}
Y_TICKS = [m * 10.0**e for e in range(-3, 5) for m in (1, 2, 5)]
PLOT_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["select2d", "lasso2d"]}
LEGEND_RANK = {"engine": 1, "mark": 2, "paper": 3}  # the legend lists engines first, then the marks, then the paper
HOVER_NOTE = "Hover over a point for its value and 95 % interval; drag to zoom, double-click to reset."


def _dash(line) -> str:
    return DASHES.get(line, "longdashdot") if isinstance(line, str) else "longdashdot"


class _Legend:
    """Each name once in the legend, in whichever panel draws it first (the panels share one legend)."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def once(self, name: str) -> bool:
        new = name not in self.seen
        self.seen.add(name)
        return new


def _panels(models: list[str]) -> go.Figure:
    return make_subplots(rows=1, cols=len(models), subplot_titles=models, horizontal_spacing=0.08)


def _measured(engine: str, name: str, x, y, lo, hi, text: list[str], legend: _Legend, lines: bool = True) -> go.Scatter:
    """One engine's measured points with their 95 % intervals, in the engine's colour, marker and line style; the
    hover label is each point's `text`."""
    style = engine_style(engine)
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    return go.Scatter(
        x=x,
        y=y,
        mode="lines+markers" if lines else "markers",
        name=name,
        legendgroup=name,
        showlegend=legend.once(name),
        legendrank=LEGEND_RANK["engine"],
        text=text,
        hovertemplate="%{text}<extra></extra>",
        marker={"color": style.colour, "symbol": MARKERS.get(style.marker, "circle"), "size": 7},
        **({"line": {"color": style.colour, "dash": _dash(style.line), "width": 1.5}} if lines else {}),
        error_y={
            "type": "data",
            "symmetric": False,
            "array": np.clip(hi - y, 0, None),
            "arrayminus": np.clip(y - lo, 0, None),
            "color": style.colour,
            "thickness": 1,
        },
    )


def _mark(x, y, name: str, hover: str, legend: _Legend, rank: str = "mark", **kw) -> go.Scatter:
    """A mark or a threshold line (x, y: its points), named once in the legend; `hover` is its label."""
    return go.Scatter(
        x=list(x),
        y=list(y),
        name=name,
        legendgroup=name,
        showlegend=legend.once(name),
        legendrank=LEGEND_RANK[rank],
        hovertemplate=f"{hover}<extra></extra>",
        **kw,
    )


def _say_missing(fig: go.Figure, col: int, message: str) -> None:
    """An empty panel says in words what is missing, as the static figure does."""
    fig.add_annotation(
        text=message,
        xref="x domain",
        yref="y domain",
        x=0.5,
        y=0.5,
        showarrow=False,
        font={"color": "#b03030", "size": 11},
        row=1,
        col=col,
    )


def _length_axis(fig: go.Figure, col: int, lengths: list[float], title: str = "context length L (tokens)") -> None:
    """A log axis of L with a tick at every power of two, labelled as the static figures are (1k, 16k)."""
    lengths = [L for L in lengths if np.isfinite(L) and L > 0]
    ticks = [2**n for n in range(int(np.log2(min(lengths, default=1))), int(np.log2(max(lengths, default=1))) + 2)]
    fig.update_xaxes(
        type="log", tickvals=ticks, ticktext=[short_tokens(v) for v in ticks], title_text=title, row=1, col=col
    )


def _log_y(fig: go.Figure, col: int, title: str, **kw) -> None:
    # 1, 2, 5 per decade written out (plotly's own minor labels read '5' for 50)
    fig.update_yaxes(
        type="log",
        tickvals=Y_TICKS,
        ticktext=[f"{v:g}" for v in Y_TICKS],
        row=1,
        col=col,
        title_text=title if col == 1 else None,
        **kw,
    )


def _finish(fig: go.Figure) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        height=440,
        margin={"l": 60, "r": 10, "t": 40, "b": 90},
        legend={"orientation": "h", "y": -0.28, "x": 0, "font": {"size": 11}},
        hoverlabel={"font": {"size": 12}},
        font={"family": "system-ui, sans-serif", "size": 12},
    )
    return fig


# ---- the hero ---------------------------------------------------------------------------------------------------


def hero_figure(t: dict) -> go.Figure:
    """The hero figure, one panel per model, with a hover label on every cell, fit point and mark."""
    panels = hero_panels(t)
    fig = _panels([p.model for p in panels])
    legend = _Legend()
    for k, panel in enumerate(panels, start=1):
        if panel.missing:
            _say_missing(fig, k, panel.missing)
        for s in panel.series:
            style = engine_style(s.engine)
            e = s.cells
            y = e["energy_per_token_j"] * 1e3
            lo, hi = e["energy_per_token_j_ci_low"] * 1e3, e["energy_per_token_j_ci_high"] * 1e3
            text = [
                f"{s.engine}, L = {tokens(L)}<br>{fmt_ci(v, a, b)} mJ/token (95 %)"
                for L, v, a, b in zip(e["length_tokens"], y, lo, hi)
            ]
            fig.add_trace(
                _measured(s.engine, s.engine, e["length_tokens"], y, lo, hi, text, legend, lines=False), row=1, col=k
            )
            if s.fit_x is not None:
                fig.add_trace(
                    go.Scatter(
                        x=s.fit_x,
                        y=s.fit_mj,
                        mode="lines",
                        name=f"{s.engine} fit",
                        legendgroup=s.engine,
                        showlegend=False,
                        line={"color": style.colour, "dash": _dash(style.line), "width": 1.5},
                        hovertemplate=f"{s.engine} fit E(L)/L<br>L = %{{x:,.0f}}: %{{y:.3g}} mJ/token<extra></extra>",
                    ),
                    row=1,
                    col=k,
                )
            if s.star is not None:
                fig.add_trace(
                    _mark(
                        [s.star[0]],
                        [s.star[1]],
                        STAR_LABEL,
                        f"{s.engine}: L* = b/c = {tokens(s.star[0])}",
                        legend,
                        mode="markers",
                        marker={
                            "symbol": "triangle-down-open",
                            "size": 12,
                            "color": style.colour,
                            "line": {"width": 2},
                        },
                    ),
                    row=1,
                    col=k,
                )
            if len(s.lowest):
                r = s.lowest.iloc[0]
                fig.add_trace(
                    _mark(
                        [r["length_tokens"]],
                        [r["energy_per_token_j"] * 1e3],
                        "lowest J/token",
                        f"{s.engine}: lowest J/token at L = {tokens(r['length_tokens'])}, "
                        f"{fmt(r['energy_per_token_j'] * 1e3)} mJ/token",
                        legend,
                        mode="markers",
                        marker={"symbol": "star-open", "size": 15, "color": style.colour, "line": {"width": 1.5}},
                    ),
                    row=1,
                    col=k,
                )
        for family, marker, x, y in panel.paper:
            name = f"paper {family}, {PAPER['device']}"
            fig.add_trace(
                _mark(
                    [x],
                    [y],
                    name,
                    f"{name}: L = {tokens(x)}, {fmt(y)} mJ/token",
                    legend,
                    rank="paper",
                    mode="markers",
                    marker={"symbol": MARKERS.get(marker, "x"), "size": 10, "color": PAPER_COLOUR},
                ),
                row=1,
                col=k,
            )
        _length_axis(fig, k, [L for s in panel.series for L in s.cells["length_tokens"]] + [p[2] for p in panel.paper])
        _log_y(fig, k, "prefill mJ per input token")
    return _finish(fig)


# ---- the claims' figures ----------------------------------------------------------------------------------------


def de_dl_figure(t: dict) -> go.Figure:
    """Claim 1: prefill dE/dL between neighbouring L, each point at the pair's geometric middle, with each engine's
    L* = b/c (a line) and the L from which dE/dL rises (a triangle on the L axis)."""
    panels = de_dl_panels(t)
    fig = _panels([p.model for p in panels])
    legend = _Legend()
    for k, panel in enumerate(panels, start=1):
        if panel.missing:
            _say_missing(fig, k, panel.missing)
            continue
        values = [
            v
            for s in panel.series
            for col in ("de_dl_j_per_token_ci_low", "de_dl_j_per_token_ci_high")
            for v in s.pairs[col] * 1e3
            if np.isfinite(v) and v > 0
        ]
        # the axis spans the intervals with a margin; the triangles sit on its bottom, as the static figure's do
        bottom, top = np.log10(min(values)) - 0.12, np.log10(max(values)) + 0.1
        on_axis = 10 ** (bottom + 0.02 * (top - bottom))
        for s in panel.series:
            e, style = s.pairs, engine_style(s.engine)
            y, lo, hi = (
                e[c] * 1e3 for c in ("de_dl_j_per_token", "de_dl_j_per_token_ci_low", "de_dl_j_per_token_ci_high")
            )
            text = [
                f"{s.engine}, L = {tokens(a)}–{tokens(b)}<br>dE/dL {fmt_ci(v, c, d)} mJ per extra input token (95 %)"
                for a, b, v, c, d in zip(e["length_low"], e["length_high"], y, lo, hi)
            ]
            fig.add_trace(_measured(s.engine, s.engine, s.middle, y, lo, hi, text, legend), row=1, col=k)
            if s.star is not None:
                fig.add_trace(
                    _mark(
                        [s.star, s.star],
                        [10**bottom, 10**top],
                        DE_DL_STAR_LABEL,
                        f"{s.engine}: L* = b/c = {tokens(s.star)}",
                        legend,
                        mode="lines",
                        opacity=0.8,
                        line={"color": style.colour, "dash": _dash(style.line), "width": 1},
                    ),
                    row=1,
                    col=k,
                )
            if s.rise is not None:
                fig.add_trace(
                    _mark(
                        [s.rise],
                        [on_axis],
                        DE_DL_RISE_LABEL,
                        f"{s.engine}: dE/dL starts to rise at L = {tokens(s.rise)}",
                        legend,
                        mode="markers",
                        cliponaxis=False,
                        marker={"symbol": "triangle-up", "size": 11, "color": style.colour},
                    ),
                    row=1,
                    col=k,
                )
        lengths = [L for s in panel.series for L in (*s.pairs["length_low"], *s.pairs["length_high"])]
        _length_axis(fig, k, lengths, "context length L (tokens; geometric middle of the pair)")
        _log_y(fig, k, "prefill dE/dL (mJ per extra input token)", range=[bottom, top])
    return _finish(fig)


def power_figure(t: dict) -> go.Figure:
    """Claim 2: mean prefill power vs L with the board's power limit, idle power, each engine's plateau onset and
    the paper's plateau (its band of watts and its ~16k)."""
    panels = power_panels(t)
    fig = _panels([p.model for p in panels])
    legend = _Legend()
    paper_from = PAPER_PLATEAU["plateau_from_tokens"]
    paper_lo, paper_hi = PAPER_PLATEAU["plateau_power_w"]
    for k, panel in enumerate(panels, start=1):
        if panel.missing:
            _say_missing(fig, k, panel.missing)
            continue
        lengths = [L for s in panel.series for L in s.cells["length_tokens"]] + [paper_from]
        # the horizontal lines and the band span the panel: a little past its first and last L
        x_ends = [min(lengths) / 1.2, max(lengths) * 1.2]
        highest = [v for s in panel.series for v in s.cells["mean_power_w_ci_high"] if np.isfinite(v)]
        top = max([*highest, panel.limit_w if np.isfinite(panel.limit_w) else 0, paper_hi]) * 1.03
        for s in panel.series:
            e, style = s.cells, engine_style(s.engine)
            y, lo, hi = e["mean_power_w"], e["mean_power_w_ci_low"], e["mean_power_w_ci_high"]
            text = [
                f"{s.engine}, L = {tokens(L)}<br>{fmt_ci(v, a, b)} W mean power (95 %)"
                for L, v, a, b in zip(e["length_tokens"], y, lo, hi)
            ]
            fig.add_trace(_measured(s.engine, s.engine, e["length_tokens"], y, lo, hi, text, legend), row=1, col=k)
            if len(s.onset):
                r = s.onset.iloc[0]
                fig.add_trace(
                    _mark(
                        [r["length_tokens"]],
                        [r["mean_power_w"]],
                        "plateau onset",
                        f"{s.engine}: plateau from L = {tokens(r['length_tokens'])}, {fmt(r['mean_power_w'])} W",
                        legend,
                        mode="markers",
                        marker={"symbol": "circle-open", "size": 17, "color": style.colour, "line": {"width": 1.5}},
                    ),
                    row=1,
                    col=k,
                )
        if np.isfinite(panel.limit_w):
            fig.add_trace(
                _mark(
                    x_ends,
                    [panel.limit_w] * 2,
                    power_limit_label(panel.limit_w),
                    f"board power limit: {fmt(panel.limit_w)} W",
                    legend,
                    mode="lines",
                    line={"color": "black", "dash": "dash", "width": 1},
                ),
                row=1,
                col=k,
            )
        if np.isfinite(panel.idle_w):
            fig.add_trace(
                _mark(
                    x_ends,
                    [panel.idle_w] * 2,
                    "idle (model resident)",
                    f"idle (model resident): {fmt(panel.idle_w)} W",
                    legend,
                    mode="lines",
                    line={"color": "grey", "dash": "dot", "width": 1},
                ),
                row=1,
                col=k,
            )
        fig.add_trace(
            _mark(
                [x_ends[0], x_ends[1], x_ends[1], x_ends[0], x_ends[0]],
                [paper_lo, paper_lo, paper_hi, paper_hi, paper_lo],
                PAPER_PLATEAU_BAND_LABEL,
                f"paper's plateau power: {fmt(paper_lo)}–{fmt(paper_hi)} W on {PAPER['device']}",
                legend,
                rank="paper",
                mode="lines",
                fill="toself",
                fillcolor="rgba(128, 128, 128, 0.15)",
                line={"width": 0},
            ),
            row=1,
            col=k,
        )
        fig.add_trace(
            _mark(
                [paper_from, paper_from],
                [0, top],
                PAPER_PLATEAU_LABEL,
                f"paper: power plateaus from L ≈ {tokens(paper_from)}",
                legend,
                rank="paper",
                mode="lines",
                line={"color": PAPER_COLOUR, "dash": "dashdot", "width": 1},
            ),
            row=1,
            col=k,
        )
        _length_axis(fig, k, lengths)
        fig.update_yaxes(range=[0, top], title_text="mean prefill power (W)" if k == 1 else None, row=1, col=k)
    return _finish(fig)


def ratio_figure(t: dict) -> go.Figure:
    """Claim 6: the prefill energy of each HF engine over vLLM's at equal L, with the paper's HF / vLLM ratio at
    ~112k (7.6x Llama, 8.9x Qwen2)."""
    panels = ratio_panels(t)
    fig = _panels([p.model for p in panels])
    legend = _Legend()
    paper_at = PAPER["table1_length_tokens"]
    for k, panel in enumerate(panels, start=1):
        if panel.missing:
            _say_missing(fig, k, panel.missing)
            continue
        lengths = [L for s in panel.series for L in s.ratios["length_tokens"]]
        if panel.paper is not None:
            lengths.append(paper_at)
        for s in panel.series:
            e = s.ratios
            y, lo, hi = e["energy_ratio"], e["energy_ratio_ci_low"], e["energy_ratio_ci_high"]
            name = f"{s.engine} / vllm"
            text = [
                f"{name}, L = {tokens(L)}<br>{fmt_ci(v, a, b)} x prefill energy (total, 95 %)"
                for L, v, a, b in zip(e["length_tokens"], y, lo, hi)
            ]
            fig.add_trace(_measured(s.engine, name, e["length_tokens"], y, lo, hi, text, legend), row=1, col=k)
        fig.add_trace(
            go.Scatter(
                x=[min(lengths) / 1.2, max(lengths) * 1.2],
                y=[1, 1],
                mode="lines",
                line={"color": "grey", "width": 1},
                showlegend=False,
                hoverinfo="skip",
            ),
            row=1,
            col=k,
        )
        if panel.paper is not None:
            fig.add_trace(
                _mark(
                    [paper_at],
                    [panel.paper],
                    PAPER_RATIO_LABEL,
                    f"paper: HF / vLLM = {panel.paper:g}x at L ≈ {tokens(paper_at)} on {PAPER['device']}",
                    legend,
                    rank="paper",
                    mode="markers+text",
                    text=[f"{panel.paper:g}x"],
                    textposition="top left",
                    marker={"symbol": "x", "size": 11, "color": PAPER_COLOUR},
                ),
                row=1,
                col=k,
            )
        _length_axis(fig, k, lengths)
        _log_y(fig, k, "prefill energy ratio (x, total energy)")
    return _finish(fig)


# ---- the page ---------------------------------------------------------------------------------------------------

# Each interactive figure, by the name of its static one: its data (the function the static figure reads), how it
# is drawn, and the note under it.
PANELS: dict[str, Callable[[dict], list]] = {
    "energy_per_token_fit": hero_panels,
    "de_dl": de_dl_panels,
    "power_vs_length": power_panels,
    "engine_ratio": ratio_panels,
}
FIGURES: dict[str, Callable[[dict], go.Figure]] = {
    "energy_per_token_fit": hero_figure,
    "de_dl": de_dl_figure,
    "power_vs_length": power_figure,
    "engine_ratio": ratio_figure,
}
NOTES = {
    "energy_per_token_fit": f"{HERO_NOTE} {HOVER_NOTE}",
    "de_dl": f"{DE_DL_NOTE} {HOVER_NOTE}",
    "power_vs_length": HOVER_NOTE,
    "engine_ratio": HOVER_NOTE,
}


def has_data(t: dict, name: str = "energy_per_token_fit") -> bool:
    """True where the figure `name` has an interactive version and at least one series to hover over."""
    return name in PANELS and any(panel.series for panel in PANELS[name](t))


def plotly_js() -> str:
    """plotly.js itself, inlined once per page: the page needs no network."""
    return f'<script charset="utf-8">{get_plotlyjs()}</script>'


def figure_div(fig: go.Figure, div_id: str) -> str:
    """The figure's div and the script that draws it (plotly.js must come earlier in the page)."""
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config=PLOT_CONFIG,
        default_width="100%",
        default_height="440px",
    )


# Where the report shows an interactive figure, its static PNG waits for print; in a rule set of the report's own,
# so that the stylesheet the write-up shares keeps its bytes.
CSS = (
    "figure.plotly .static{display:none}"
    "figure.plotly .interactive{overflow-x:auto}figure.plotly .interactive>div{min-width:600px}"
    "@media print{figure.plotly .interactive{display:none}figure.plotly .static{display:block}}"
)
