"""The report's interactive figure: the hero (prefill J/token vs L with the fit) drawn with plotly, so that a reader
reads each cell's value, interval and L by hovering over it, in a page that needs no network (plotly.js inlined once).

Its data come from ctxenergy.outputs.figures.hero_panels, the same function the static PNG/SVG (kept for the
write-up and print) is drawn from; colours, markers and line styles come from ctxenergy.outputs.plotting.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from ctxenergy.analysis.paper_values import PAPER
from ctxenergy.outputs.figures import HERO_NOTE, STAR_LABEL, hero_panels
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


def _dash(line) -> str:
    return DASHES.get(line, "longdashdot") if isinstance(line, str) else "longdashdot"


def has_data(t: dict) -> bool:
    """True where the hero has at least one usable prefill cell to hover over."""
    return any(panel.series for panel in hero_panels(t))


def hero_figure(t: dict) -> go.Figure:
    """The hero figure, one panel per model, with a hover label on every cell, fit point and mark."""
    panels = hero_panels(t)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p.model for p in panels], horizontal_spacing=0.08)
    legend_seen: set[str] = set()
    rank = {"engine": 1, "mark": 2, "paper": 3}  # the legend lists engines first, then the marks, then the paper

    def once(name: str) -> bool:
        new = name not in legend_seen
        legend_seen.add(name)
        return new

    for k, panel in enumerate(panels, start=1):
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
                go.Scatter(
                    x=e["length_tokens"],
                    y=y,
                    mode="markers",
                    name=s.engine,
                    legendgroup=s.engine,
                    showlegend=once(s.engine),
                    legendrank=rank["engine"],
                    text=text,
                    hovertemplate="%{text}<extra></extra>",
                    marker={"color": style.colour, "symbol": MARKERS.get(style.marker, "circle"), "size": 7},
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": np.clip(hi - y, 0, None),
                        "arrayminus": np.clip(y - lo, 0, None),
                        "color": style.colour,
                        "thickness": 1,
                    },
                ),
                row=1,
                col=k,
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
                    go.Scatter(
                        x=[s.star[0]],
                        y=[s.star[1]],
                        mode="markers",
                        name=STAR_LABEL,
                        legendgroup="star",
                        showlegend=once(STAR_LABEL),
                        legendrank=rank["mark"],
                        marker={
                            "symbol": "triangle-down-open",
                            "size": 12,
                            "color": style.colour,
                            "line": {"width": 2},
                        },
                        hovertemplate=f"{s.engine}: L* = b/c = {tokens(s.star[0])}<extra></extra>",
                    ),
                    row=1,
                    col=k,
                )
            if len(s.lowest):
                r = s.lowest.iloc[0]
                fig.add_trace(
                    go.Scatter(
                        x=[r["length_tokens"]],
                        y=[r["energy_per_token_j"] * 1e3],
                        mode="markers",
                        name="lowest J/token",
                        legendgroup="lowest",
                        showlegend=once("lowest J/token"),
                        legendrank=rank["mark"],
                        marker={"symbol": "star-open", "size": 15, "color": style.colour, "line": {"width": 1.5}},
                        hovertemplate=(
                            f"{s.engine}: lowest J/token at L = {tokens(r['length_tokens'])}, "
                            f"{fmt(r['energy_per_token_j'] * 1e3)} mJ/token<extra></extra>"
                        ),
                    ),
                    row=1,
                    col=k,
                )
        for family, marker, x, y in panel.paper:
            name = f"paper {family}, {PAPER['device']}"
            fig.add_trace(
                go.Scatter(
                    x=[x],
                    y=[y],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=once(name),
                    legendrank=rank["paper"],
                    marker={"symbol": MARKERS.get(marker, "x"), "size": 10, "color": PAPER_COLOUR},
                    hovertemplate=f"{name}: L = {tokens(x)}, {fmt(y)} mJ/token<extra></extra>",
                ),
                row=1,
                col=k,
            )
        lengths = [L for s in panel.series for L in s.cells["length_tokens"]] + [p[2] for p in panel.paper]
        ticks = [2**n for n in range(int(np.log2(min(lengths, default=1))), int(np.log2(max(lengths, default=1))) + 2)]
        fig.update_xaxes(
            type="log",
            tickvals=ticks,
            ticktext=[short_tokens(v) for v in ticks],
            title_text="context length L (tokens)",
            row=1,
            col=k,
        )
        # 1, 2, 5 per decade written out (plotly's own minor labels read '5' for 50)
        fig.update_yaxes(
            type="log",
            tickvals=Y_TICKS,
            ticktext=[f"{v:g}" for v in Y_TICKS],
            row=1,
            col=k,
            title_text="prefill mJ per input token" if k == 1 else None,
        )
    fig.update_layout(
        template="plotly_white",
        height=440,
        margin={"l": 60, "r": 10, "t": 40, "b": 90},
        legend={"orientation": "h", "y": -0.28, "x": 0, "font": {"size": 11}},
        hoverlabel={"font": {"size": 12}},
        font={"family": "system-ui, sans-serif", "size": 12},
    )
    return fig


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


NOTE = HERO_NOTE + " Hover over a point for its value and 95 % interval; drag to zoom, double-click to reset."
