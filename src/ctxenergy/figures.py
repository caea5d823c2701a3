"""Figures from the derived tables only (results/analysis/*.parquet), as PNG and SVG.

`ctxenergy figures results/analysis/*.parquet --out results/figures/<figure>.png results/figures/<figure>.svg ...`

One colour per engine in every figure (ENGINE_PALETTE), units in every axis label, 95 % intervals drawn as error
bars or bands. A figure whose data are missing (a CPU host has no energy counter; a cell ran out of memory) is still
written, and says in words what is missing and why, so that a run never fails on a figure.
"""

from __future__ import annotations

import math
import textwrap
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
from ctxenergy.analysis.paper_values import PAPER  # noqa: E402
from ctxenergy.analysis.scaling import fit_from_row  # noqa: E402
from ctxenergy.errors import CtxEnergyError  # noqa: E402

ENGINE_PALETTE = {"hf-eager": "#1b9e77", "hf-sdpa": "#d95f02", "hf-paged": "#7570b3", "vllm": "#e7298a"}
OTHER_ENGINE = "#555555"
PHASE_MARKERS = {"prefill": "o", "generate": "s"}
MISSING_COLOUR = "#b03030"
NOTE_FONTSIZE = 6.5

FIGURES = {
    "energy_intensity": "Prefill energy per input token (mJ/token) vs context length",
    "io_energy": "Energy per input token and per output token, and their ratio, vs context length",
    "phase_map": "Mean power vs latency per token: the phase map",
    "power_traces": "Instant power over representative windows",
    "achieved_throughput": "Achieved TFLOP/s (prefill) and memory bandwidth (decode) against the device's peak",
    "energy_fit": "E(L) = a + bL + cL^2 fitted to the prefill cells, with residuals",
}


def colour(engine: str) -> str:
    return ENGINE_PALETTE.get(engine, OTHER_ENGINE)


def _style() -> None:
    sns.set_theme(style="whitegrid", context="paper", font_scale=1.0)
    plt.rcParams.update({"svg.fonttype": "none",  # text stays text: searchable, smaller files
                         "svg.hashsalt": "ctxenergy", "figure.dpi": 110, "savefig.dpi": 150,
                         "axes.titlesize": 10, "legend.fontsize": 8})


def _tokens(x, _pos=None) -> str:
    return f"{x / 1024:g}k" if x >= 1024 else f"{x:g}"


def _log2_x(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(_tokens))


class _PlainLog(Formatter):
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


def _log_y(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PlainLog(ax.yaxis.get_major_formatter()))
    ax.yaxis.set_minor_formatter(_PlainLog(ax.yaxis.get_minor_formatter()))


def _brief(text: str, n: int = 110) -> str:
    """A long reason (an engine's whole error message) cut to its start; the report's validity table has it all."""
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n].rsplit(" ", 1)[0] + " …"


def _yerr(y, lo, hi) -> np.ndarray:
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    return np.vstack([np.clip(np.nan_to_num(y - lo), 0, None), np.clip(np.nan_to_num(hi - y), 0, None)])


def _errorline(ax, x, y, lo, hi, **kw):
    return ax.errorbar(x, y, yerr=_yerr(y, lo, hi), capsize=2.5, elinewidth=0.9, markersize=4, **kw)


def _wrap(text: str, width: int) -> str:
    """Hard line breaks, paragraph by paragraph (matplotlib's wrap=True wraps to the figure, not to the axes)."""
    return "\n".join(textwrap.fill(p, max(width, 12), break_long_words=False, break_on_hyphens=False) or ""
                     for p in text.split("\n"))


def _axes_size_in(ax) -> tuple[float, float]:
    pos, (w, h) = ax.get_position(), ax.figure.get_size_inches()
    return pos.width * w, pos.height * h


def _missing(ax, message: str) -> None:
    # about 12 characters of 9 pt text per inch: the message stays inside its panel
    ax.text(0.5, 0.5, _wrap(message, int(_axes_size_in(ax)[0] * 12)), ha="center", va="center", color=MISSING_COLOUR,
            fontsize=9, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _engines(df: pd.DataFrame) -> list[str]:
    return sorted(df["engine"].unique(), key=engine_rank)


def energy_missing_message(per_cell: pd.DataFrame) -> str:
    """Why a figure has no energy: the cells' own reasons, counted."""
    if per_cell.empty:
        return "no cells in the table"
    reasons = per_cell.loc[~per_cell["usable"], "excluded_reason"].str.split(":").str[0].value_counts()
    listed = ", ".join(f"{n} x {r}" for r, n in reasons.items())
    base = f"energy missing: none of the {len(per_cell)} cells has usable energy ({listed})"
    if "no_energy" in reasons:
        base += ".\nThis host has no readable energy counter (a CPU host): timings are real, energies are not measured."
    return base


def _excluded_note(per_cell: pd.DataFrame, phase: str | None = None) -> tuple[str, str] | None:
    """The footnote naming the cells left out of a figure, or None."""
    df = per_cell if phase is None else per_cell[per_cell["phase"] == phase]
    bad = df[~df["usable"]]
    # with no usable cell at all, the panels already say why in full
    if not (len(bad) and df["usable"].any()):
        return None
    text = "; ".join(f"{r.model}/{r.engine}/{r.phase}/L{r.length_tokens}: {r.excluded_reason.split(':')[0]}"
                     for r in bad.head(6).itertuples())
    more = f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""
    return f"Excluded from this figure: {text}{more}", MISSING_COLOUR


def _subplots(n_rows: int, n_cols: int, w: float = 4.2, h: float = 3.2, **kw):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows + 0.5), squeeze=False, **kw)
    return fig, axes


def _engine_of(label: str, engines) -> str | None:
    first = label.split(" ")[0].split("/")[-1].rstrip(":,")
    return first if first in engines else None


def _legend(fig, axes, engines=()) -> int:
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
        e = _engine_of(lab, engines)
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


def _finish(fig, axes, notes=(), engines=(), legend: bool = True) -> None:
    """Legend on top, footnotes at the bottom one below the other (never on top of each other), and the panels laid
    out in the space between."""
    fig_w, fig_h = fig.get_size_inches()
    rows = _legend(fig, axes, engines) if legend else 0
    line_h = NOTE_FONTSIZE * 1.35 / 72  # inches
    y = 0.05 / fig_h
    for text, colour in reversed([n for n in notes if n]):
        wrapped = _wrap(text, int(fig_w * 19))  # about 19 characters of 6.5 pt text per inch
        fig.text(0.01, y, wrapped, fontsize=NOTE_FONTSIZE, color=colour, ha="left", va="bottom")
        y += (wrapped.count("\n") + 1) * line_h / fig_h
    bottom = y + (0.06 / fig_h if y > 0.05 / fig_h else 0)
    top = 1 - (rows * 0.24 + 0.1) / fig_h if rows else 1
    fig.tight_layout(rect=(0, bottom, 1, top))


def _models(per_cell: pd.DataFrame) -> list[str]:
    return sorted(per_cell["model"].unique()) or [""]


# ---- the paper's three figures ------------------------------------------------------------------------------------

def energy_intensity(t: dict) -> plt.Figure:
    pc = t["per_cell"]
    pre = pc[(pc["phase"] == "prefill") & pc["usable"]]
    models = _models(pc)
    fig, axes = _subplots(1, len(models))
    for ax, model in zip(axes[0], models):
        d = pre[pre["model"] == model]
        if d.empty:
            _missing(ax, energy_missing_message(pc[pc["model"] == model]))
            ax.set_title(model)
            continue
        for engine in _engines(d):
            e = d[d["engine"] == engine].sort_values("length_tokens")
            _errorline(ax, e["length_tokens"], e["energy_per_token_j"] * 1e3, e["energy_per_token_j_ci_low"] * 1e3,
                       e["energy_per_token_j_ci_high"] * 1e3, color=colour(engine), marker="o", label=f"{engine} total")
            _errorline(ax, e["length_tokens"], e["dynamic_energy_per_token_j"] * 1e3,
                       e["dynamic_energy_per_token_j_ci_low"] * 1e3, e["dynamic_energy_per_token_j_ci_high"] * 1e3,
                       color=colour(engine), marker="o", mfc="white", ls="--", label=f"{engine} above idle")
        _log2_x(ax)
        ax.set_title(model)
        ax.set_xlabel("context length L (tokens)")
        ax.set_ylabel("prefill energy per input token (mJ/token)")
    _finish(fig, axes, [_excluded_note(pc, "prefill")], _engines(pc))
    return fig


def io_energy(t: dict) -> plt.Figure:
    pc, io = t["per_cell"], t["io_ratio"]
    models = _models(pc)
    fig, axes = _subplots(2, len(models), h=3.0)
    for k, model in enumerate(models):
        top, bottom = axes[0][k], axes[1][k]
        d = io[(io["model"] == model) & io["usable"]]
        if d.empty:
            msg = energy_missing_message(pc[pc["model"] == model]) if len(pc) else "no cells"
            if pc[(pc["model"] == model) & pc["usable"]].shape[0]:
                msg = "no (prefill, generate) pair of usable cells at the same L"
            _missing(top, msg)
            _missing(bottom, "no E_out/E_in ratio")
            top.set_title(model)
            continue
        for engine in _engines(d):
            e = d[d["engine"] == engine].sort_values("length_tokens")
            c = colour(engine)
            _errorline(top, e["length_tokens"], e["e_in_j"] * 1e3, e["e_in_j_ci_low"] * 1e3, e["e_in_j_ci_high"] * 1e3,
                       color=c, marker="o", label=f"{engine} E_in")
            _errorline(top, e["length_tokens"], e["e_out_j"] * 1e3, e["e_out_j_ci_low"] * 1e3,
                       e["e_out_j_ci_high"] * 1e3, color=c, marker="s", ls="--", label=f"{engine} E_out")
            _errorline(bottom, e["length_tokens"], e["e_ratio"], e["e_ratio_ci_low"], e["e_ratio_ci_high"], color=c,
                       marker="D", label=f"{engine} E_out/E_in")
        claims = PAPER["claims"]
        at_112k = PAPER["table1_length_tokens"]
        paper_pts = [(1024, claims[4]["ratio_at_1k"], "vLLM"), (at_112k, claims[4]["ratio_at_112k"], "vLLM"),
                     (at_112k, claims[5]["ratio_at_112k"], "HF")]
        lmax = d["length_tokens"].max()
        for x, y, fam in paper_pts:
            if x <= lmax * 1.5:
                # black, not an engine's colour: these are the paper's numbers, not one of our engines
                bottom.plot([x], [y], marker="x" if fam == "vLLM" else "+", ms=8, color="black", ls="none",
                            label=f"paper, {fam} (per G)")
        _log_y(top)
        for ax in (top, bottom):
            _log2_x(ax)
            ax.set_xlabel("context length L (tokens)")
        top.set_title(model)
        top.set_ylabel("energy per token (mJ/token)")
        bottom.set_ylabel("E_out / E_in (x)")
    e_out = ("E_out = (E_generate - E_prefill) / (G - 1): the first output token comes from the prefill",
             "black")
    _finish(fig, axes, [_excluded_note(pc), e_out], _engines(pc))
    return fig


def phase_map(t: dict) -> plt.Figure:
    pc = t["per_cell"]
    models = _models(pc)
    fig, axes = _subplots(1, len(models), w=4.6, h=3.6)
    for ax, model in zip(axes[0], models):
        d = pc[(pc["model"] == model) & pc["usable"] & pc["mean_power_w"].notna()]
        ax.set_title(model)
        if d.empty:
            _missing(ax, energy_missing_message(pc[pc["model"] == model]).replace("energy", "power", 1))
            continue
        points = []
        for engine in _engines(d):
            phases = set(d["phase"])
            for phase in [p for p in PHASE_MARKERS if p in phases] + sorted(phases - set(PHASE_MARKERS)):
                e = d[(d["engine"] == engine) & (d["phase"] == phase)].sort_values("length_tokens")
                if e.empty:
                    continue
                x, y = e["latency_per_token_ms"], e["mean_power_w"]
                ax.errorbar(x, y, xerr=_yerr(x, e["latency_per_token_ms_ci_low"], e["latency_per_token_ms_ci_high"]),
                            yerr=_yerr(y, e["mean_power_w_ci_low"], e["mean_power_w_ci_high"]), ls="none",
                            marker=PHASE_MARKERS.get(phase, "^"), color=colour(engine), capsize=2, markersize=5,
                            label=f"{engine} {phase}")
                points += [(xi, yi, int(L), (engine, phase)) for xi, yi, L in zip(x, y, e["length_tokens"])]
        limit = d["power_limit_w"].max()
        idle = d["idle_power_w"].median()
        if np.isfinite(limit):
            ax.axhline(limit, color="black", ls="--", lw=0.8, label="power limit")
        if np.isfinite(idle):
            ax.axhline(idle, color="grey", ls=":", lw=0.8, label="idle (model resident)")
        ax.set_xscale("log")
        ax.set_xlabel("normalised latency (ms/token)")
        ax.set_ylabel("mean power (W)")
        _label_lengths(ax, points)
    _finish(fig, axes, [_excluded_note(pc)], _engines(pc))
    return fig


def _l_range(ls: list[int], series_ls: list[int]) -> str:
    ls = sorted(set(ls))
    if len(ls) == 1:
        return _tokens(ls[0])
    inside = [L for L in series_ls if ls[0] <= L <= ls[-1]]
    if len(ls) > 2 and sorted(set(inside)) == ls:
        return f"{_tokens(ls[0])}–{_tokens(ls[-1])}"
    return ", ".join(_tokens(L) for L in ls)


def _label_lengths(ax, points, near_in: float = 0.13, fontsize: float = 6) -> list[str]:
    """Each point's L beside it, in its engine's colour. Points of one series closer together than a label share one
    label ("1k–16k"), and each label goes to the first side of its points where it covers no other label or point.
    points: (x, y, L, series) with series = (engine, phase). Returns the labels written."""
    if not points:
        return []
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())
    w_in, h_in = _axes_size_in(ax)
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
        return out * 10 + sum(max(0.0, min(x1, b[2]) - max(x0, b[0])) * max(0.0, min(y1, b[3]) - max(y0, b[1]))
                              for b in taken)

    written = []
    for c in clusters:
        series = points[c[0]][3]
        text = _l_range([points[i][2] for i in c], [p[2] for p in points if p[3] == series])
        bx0, by0 = xy[c].min(axis=0)
        bx1, by1 = xy[c].max(axis=0)
        w, h = len(text) * char_w, line_h
        cx = (bx0 + bx1 - w) / 2
        candidates = [(bx1 + gap, by1), (bx1 + gap, by0 - h), (bx0 - gap - w, by1), (bx0 - gap - w, by0 - h),
                      (cx, by1 + gap), (cx, by0 - gap - h), (bx1 + gap, (by0 + by1 - h) / 2),
                      (bx0 - gap - w, (by0 + by1 - h) / 2)]
        best = min(candidates, key=lambda q: overlap((q[0], q[1], q[0] + w, q[1] + h)))
        taken.append((best[0], best[1], best[0] + w, best[1] + h))
        ax.annotate(text, (best[0] / w_in, best[1] / h_in), xycoords="axes fraction", ha="left", va="bottom",
                    fontsize=fontsize, color=colour(series[0]))
        written.append(text)
    return written


# ---- our additions ---------------------------------------------------------------------------------------------

def power_traces(t: dict) -> plt.Figure:
    tr, runs, pc = t["traces"], t["trace_runs"], t["per_cell"]
    if tr.empty:
        fig, axes = _subplots(1, 1, w=6.4, h=2.6)
        _missing(axes[0][0], "no power trace: " + energy_missing_message(pc).split(":", 1)[-1].strip())
        fig.tight_layout()
        return fig
    phases = [p for p in ("prefill", "generate") if p in set(tr["phase"])] or ["prefill"]
    roles = ["smallest L", "largest L"]
    models = sorted(tr["model"].unique())
    fig, axes = _subplots(len(phases), 2, w=4.8, h=3.0)
    for i, phase in enumerate(phases):
        for j, role in enumerate(roles):
            ax = axes[i][j]
            d = tr[(tr["phase"] == phase) & (tr["role"] == role)]
            # about 16 characters of 8 pt text per inch of the panel's column: many engines' L wrap onto more lines
            ax.set_title(_wrap(power_trace_title(tr, phase, role), int(fig.get_figwidth() / 2 * 0.85 * 16)),
                         fontsize=8)
            if d.empty:
                _missing(ax, f"no {role} {phase} trace")
                continue
            for engine in _engines(d):
                for cell_id, e in d[d["engine"] == engine].groupby("cell_id", sort=False):
                    ax.plot(e["t_s"], e["power_w"], color=colour(engine), lw=1.0, drawstyle="steps-post",
                            label=engine if len(models) == 1 else f"{engine} ({e['model'].iloc[0]})")
                    r = runs[runs["cell_id"] == cell_id]
                    for s, f in zip(r["start_s"], r["first_token_s"]):
                        ax.axvspan(s, f, color=colour(engine), alpha=0.12, lw=0)
                    cell = pc[pc["cell_id"] == cell_id]
                    if len(cell) and np.isfinite(cell["idle_power_w"].iloc[0]):
                        ax.axhline(cell["idle_power_w"].iloc[0], color="grey", ls=":", lw=0.8, label="idle")
                    if len(cell) and np.isfinite(cell["power_limit_w"].iloc[0]):
                        ax.axhline(cell["power_limit_w"].iloc[0], color="black", ls="--", lw=0.8, label="power limit")
            ax.set_xlabel("time since the window's first run (s)")
            ax.set_ylabel("instant power (W)")
    note = (("Shaded: prefill of each run (start to first token). NVML publishes power every ~100 ms. Each engine's "
             "own smallest and largest L are shown; their L differ where the engines ran different grids."), "black")
    _finish(fig, axes, [note], _engines(pc))
    return fig


def power_trace_title(tr: pd.DataFrame, phase: str, role: str) -> str:
    """'prefill, each engine's smallest L' over a line naming every engine's L in the panel (the engines' smallest
    or largest L need not be the same); an engine with one L only is shown in the smallest-L panel, and said so."""
    d = tr[(tr["phase"] == phase) & (tr["role"] == role)]
    models = sorted(tr["model"].unique())
    head = f"{phase}, each engine's {role}" + (f" ({models[0]})" if len(models) == 1 else "")
    parts = []
    for (model, engine), e in sorted(d.groupby(["model", "engine"]), key=lambda kv: (kv[0][0], engine_rank(kv[0][1]))):
        who = engine if len(models) == 1 else f"{model}/{engine}"
        parts.append(f"{who} L={', '.join(_tokens(L) for L in sorted(set(e['length_tokens'])))}")
    if role != "smallest L":
        only = tr[(tr["phase"] == phase)].groupby(["model", "engine"])["role"].agg(set)
        for (model, engine), r in sorted(only.items(), key=lambda kv: (kv[0][0], engine_rank(kv[0][1]))):
            if r == {"smallest L"}:
                who = engine if len(models) == 1 else f"{model}/{engine}"
                parts.append(f"{who}: one L only, left")
    return head + ("\n" + "; ".join(parts) if parts else "")


def achieved_throughput(t: dict) -> plt.Figure:
    pc = t["per_cell"]
    models = _models(pc)
    fig, axes = _subplots(len(models), 2, w=4.4, h=3.0)
    panels = (("prefill", "achieved_tflops", "peak_bf16_tflops", "achieved compute (TFLOP/s)",
               "dense bf16 peak {:g} TFLOP/s"),
              ("generate", "achieved_mem_tb_s", "peak_mem_tb_s", "decode memory bandwidth (TB/s)",
               "memory peak {:g} TB/s"))
    for i, model in enumerate(models):
        for j, (phase, col, peak_col, ylabel, peak_name) in enumerate(panels):
            ax = axes[i][j]
            # timings exist without energy, so this figure keeps no_energy cells; only a failed status is set apart
            d = pc[(pc["model"] == model) & (pc["phase"] == phase) & pc[col].notna()]
            ax.set_title(f"{model}: {phase}")
            if d.empty:
                _missing(ax, f"no {phase} cell with a {ylabel.split('(')[0].strip()}")
                continue
            for engine in _engines(d):
                e = d[d["engine"] == engine].sort_values("length_tokens")
                ok, bad = e[e["status"] == "ok"], e[e["status"] != "ok"]
                _errorline(ax, ok["length_tokens"], ok[col], ok[f"{col}_ci_low"], ok[f"{col}_ci_high"],
                           color=colour(engine), marker="o", label=engine)
                if len(bad):
                    ax.plot(bad["length_tokens"], bad[col], marker="x", ms=8, ls="none", color=MISSING_COLOUR,
                            label=f"status {', '.join(sorted(set(bad['status'])))}")
            for dev, g in d.groupby("device_name"):
                peak = g[peak_col].max()
                if np.isfinite(peak):
                    ax.axhline(peak, color="black", ls="--", lw=0.8)
                    ax.annotate(f"{dev} {peak_name.format(peak)}", (0.02, peak), xycoords=("axes fraction", "data"),
                                xytext=(0, -10), textcoords="offset points", fontsize=7)
            if not np.isfinite(d[peak_col]).any():
                ax.text(0.02, 0.95, f"device peak unknown ({', '.join(sorted(set(d['device_name'])))})",
                        transform=ax.transAxes, fontsize=7, va="top", color=MISSING_COLOUR)
            _log2_x(ax)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("context length L (tokens)")
            ax.set_ylabel(ylabel)
    _finish(fig, axes, engines=_engines(pc))
    return fig


def energy_fit(t: dict) -> plt.Figure:
    pc, fits, res = t["per_cell"], t["fits"], t["fit_residuals"]
    f = fits[(fits["phase"] == "prefill") & (fits["quantity"] == "energy_per_run_j")]
    groups = [tuple(k) for k in f[["model", "engine"]].drop_duplicates().to_numpy()]
    groups.sort(key=lambda k: (k[0], engine_rank(k[1])))
    if not groups:
        fig, axes = _subplots(1, 1, w=6, h=3)
        _missing(axes[0][0], "no fit: " + energy_missing_message(pc).split(":", 1)[-1].strip())
        fig.tight_layout()
        return fig
    # residual panels only where something was fitted (a CPU host has no fit at all: one row of panels)
    any_fit = not f["status"].str.startswith("not fitted").all()
    if any_fit:
        fig, axes = plt.subplots(2, len(groups), figsize=(4.4 * len(groups), 5.6), squeeze=False,
                                 gridspec_kw={"height_ratios": [2.2, 1]}, sharex="col")
    else:
        fig, axes = plt.subplots(1, len(groups), figsize=(4.4 * len(groups), 3.8), squeeze=False)
    notes = []
    for k, (model, engine) in enumerate(groups):
        top = axes[0][k]
        bottom = axes[1][k] if any_fit else None
        row = f[(f["model"] == model) & (f["engine"] == engine)].iloc[0]
        cells = pc[(pc["model"] == model) & (pc["engine"] == engine) & (pc["phase"] == "prefill")]
        used = cells[cells["usable"]].sort_values("length_tokens")
        c = colour(engine)
        top.set_title(f"{model} / {engine}: prefill")
        out = cells[~cells["usable"] & cells["energy_per_run_j"].notna()]
        if used.empty and out.empty:
            _missing(top, row["status"] + f"\n{energy_missing_message(cells)}")
            if bottom is not None:
                bottom.axis("off")
            continue
        if len(used):
            _errorline(top, used["length_tokens"], used["energy_per_run_j"], used["energy_per_run_j_ci_low"],
                       used["energy_per_run_j_ci_high"], color=c, marker="o", ls="none", label="measured")
        if len(out):
            top.plot(out["length_tokens"], out["energy_per_run_j"], "x", color=MISSING_COLOUR, ms=8,
                     label="excluded from the fit")
        _log_y(top)
        top.set_ylabel("prefill energy per run (J)")
        _log2_x(top)
        if row["status"].startswith("not fitted"):
            # the cells are still shown, on their axes; the panel says why there is no curve
            top.text(0.02, 0.97, _wrap(row["status"], int(_axes_size_in(top)[0] * 15)), transform=top.transAxes,
                     va="top", fontsize=7, color=MISSING_COLOUR)
            top.tick_params(axis="x", labelbottom=True)
            top.set_xlabel("context length L (tokens)")
            top.legend(loc="lower right", fontsize=7, frameon=True)
            if bottom is not None:
                bottom.axis("off")
            continue
        fit = fit_from_row(row)
        x = np.geomspace(max(used["length_tokens"].min() * 0.8, 1), used["length_tokens"].max() * 1.25, 200)
        y = fit.predict(x)
        band = fit.quantile * fit.predict_se(x)
        top.plot(x, y, color=c, lw=1.2, label="fit a + bL + cL^2")
        top.fill_between(x, y - band, y + band, color=c, alpha=0.2, lw=0, label="95 % band of the fit")
        top.text(0.02, 0.97, f"a = {row['a_j']:.3g} J\nb = {row['b_j_per_token'] * 1e3:.3g} mJ/token\n"
                 f"c = {row['c_j_per_token2'] * 1e9:.3g} nJ/token^2\nchi2/dof = {row['chi2'] / max(row['dof'], 1):.1f}",
                 transform=top.transAxes, va="top", fontsize=7)
        # one legend per panel, in the panel's own engine colour; the data rise to the right, so lower right is free
        top.legend(loc="lower right", fontsize=7, frameon=True)
        r = res[(res["model"] == model) & (res["engine"] == engine) & (res["phase"] == "prefill")
                & (res["quantity"] == "energy_per_run_j")].merge(
            used[["cell_id", "energy_per_run_j_ci_low", "energy_per_run_j_ci_high"]], on="cell_id")
        rel_lo = (r["energy_per_run_j_ci_low"] - r["fitted_j"]) / r["fitted_j"] * 100
        rel_hi = (r["energy_per_run_j_ci_high"] - r["fitted_j"]) / r["fitted_j"] * 100
        _errorline(bottom, r["length_tokens"], r["relative_residual"] * 100, rel_lo, rel_hi, color=c, marker="o",
                   ls="none")
        bottom.axhline(0, color="black", lw=0.8)
        bottom.set_ylabel("residual (% of fit)")
        bottom.set_xlabel("context length L (tokens)")
        _log2_x(bottom)
        if row["excluded"]:
            # below the panels, not over the residuals
            notes.append((f"{model}/{engine}, left out of the fit: {_brief(row['excluded'])}", MISSING_COLOUR))
    _finish(fig, axes, notes, legend=False)
    return fig


PLOTTERS = {"energy_intensity": energy_intensity, "io_energy": io_energy, "phase_map": phase_map,
            "power_traces": power_traces, "achieved_throughput": achieved_throughput, "energy_fit": energy_fit}


def read_tables(paths) -> dict[str, pd.DataFrame]:
    return {Path(p).name.removesuffix(".parquet"): pd.read_parquet(p) for p in paths}


def save(fig, paths) -> None:
    for p in map(Path, paths):
        p.parent.mkdir(parents=True, exist_ok=True)
        # no dates in the files: the same tables give the same bytes
        meta = {"Date": None} if p.suffix == ".svg" else {"Software": None}
        fig.savefig(p, format=p.suffix.lstrip("."), metadata=meta, bbox_inches="tight")


def make_figures(tables: dict[str, pd.DataFrame], out_paths) -> list[Path]:
    _style()
    by_name: dict[str, list[Path]] = {}
    for p in map(Path, out_paths):
        name = p.name.rsplit(".", 1)[0]
        if name not in PLOTTERS:
            raise CtxEnergyError(f"'{p}': unknown figure '{name}' (known: {', '.join(PLOTTERS)})")
        if p.suffix not in (".png", ".svg"):
            raise CtxEnergyError(f"'{p}': figures are written as .png or .svg")
        by_name.setdefault(name, []).append(p)
    written = []
    for name, paths in by_name.items():
        fig = PLOTTERS[name](tables)
        try:
            save(fig, paths)
        finally:
            plt.close(fig)
        written += paths
    return written


def main(args) -> int:
    tables = read_tables(args.tables)
    missing = {"per_cell", "io_ratio", "fits", "fit_residuals", "traces", "trace_runs"} - set(tables)
    if missing:
        raise CtxEnergyError(f"figures need the derived tables {', '.join(sorted(missing))} (ctxenergy analyze)")
    written = make_figures(tables, args.out)
    print(f"{len(written)} figure files written")
    return 0
