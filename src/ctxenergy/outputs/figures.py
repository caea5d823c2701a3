"""Figures from the derived tables only (results/analysis/*.parquet), as PNG and SVG: one function per figure,
named as in ctxenergy.outputs.catalog.

`ctxenergy figures results/analysis/*.parquet --out results/figures/<figure>.png results/figures/<figure>.svg ...`

One colour per engine in every figure (plotting.ENGINE_PALETTE), units in every axis label, 95 % intervals drawn as
error bars or bands. A figure whose data are missing (a CPU host has no energy counter; a cell ran out of memory) is
still written, and says in words what is missing and why, so that a run never fails on a figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ctxenergy.analysis.cells import engine_rank, serial
from ctxenergy.analysis.paper_values import PAPER
from ctxenergy.analysis.scaling import fit_from_row, threshold_row
from ctxenergy.engines.registry import family
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.catalog import FIGURE_NAMES, SERVING_FIGURE_NAMES, read_tables
from ctxenergy.outputs.plotting import (
    MISSING_COLOUR,
    PAPER_COLOUR,
    PHASE_MARKERS,
    axes_size_in,
    colour,
    ends_of_series,
    energy_missing_message,
    engine_kw,
    engine_style,
    engines_of,
    errorline,
    excluded_note,
    finish,
    label_lengths,
    log2_x,
    log_y,
    models_of,
    plt,
    save,
    say_missing,
    style,
    subplots,
    wrap,
    yerr,
)
from ctxenergy.outputs.render import brief, short_tokens

PHASE_FILL = {"prefill": None, "generate": "white"}  # None: filled in the engine's colour


# ---- the paper's three figures ------------------------------------------------------------------------------------


def energy_intensity(t: dict) -> plt.Figure:
    pc = t["per_cell"]
    pre = pc[(pc["phase"] == "prefill") & pc["usable"]]
    models = models_of(pc)
    fig, axes = subplots(1, len(models))
    for ax, model in zip(axes[0], models):
        d = pre[pre["model"] == model]
        if d.empty:
            say_missing(ax, energy_missing_message(pc[pc["model"] == model]))
            ax.set_title(model)
            continue
        for engine in engines_of(d):
            e = d[d["engine"] == engine].sort_values("length_tokens")
            errorline(
                ax,
                e["length_tokens"],
                e["energy_per_token_j"] * 1e3,
                e["energy_per_token_j_ci_low"] * 1e3,
                e["energy_per_token_j_ci_high"] * 1e3,
                **engine_kw(engine),
                label=f"{engine} total",
            )
            errorline(
                ax,
                e["length_tokens"],
                e["dynamic_energy_per_token_j"] * 1e3,
                e["dynamic_energy_per_token_j_ci_low"] * 1e3,
                e["dynamic_energy_per_token_j_ci_high"] * 1e3,
                **engine_kw(engine),
                mfc="white",
                lw=0.8,
                alpha=0.8,
                label=f"{engine} above idle",
            )
        log2_x(ax)
        ax.set_title(model)
        ax.set_xlabel("context length L (tokens)")
        ax.set_ylabel("prefill energy per input token (mJ/token)")
    finish(fig, axes, [excluded_note(pc, "prefill")], engines_of(pc))
    return fig


def io_energy(t: dict) -> plt.Figure:
    pc, io = t["per_cell"], t["io_ratio"]
    models = models_of(pc)
    fig, axes = subplots(2, len(models), h=3.0)
    for k, model in enumerate(models):
        top, bottom = axes[0][k], axes[1][k]
        d = io[(io["model"] == model) & io["usable"]]
        if d.empty:
            msg = energy_missing_message(pc[pc["model"] == model]) if len(pc) else "no cells"
            if pc[(pc["model"] == model) & pc["usable"]].shape[0]:
                msg = "no (prefill, generate) pair of usable cells at the same L"
            say_missing(top, msg)
            say_missing(bottom, "no E_out/E_in ratio")
            top.set_title(model)
            continue
        for engine in engines_of(d):
            e = d[d["engine"] == engine].sort_values("length_tokens")
            errorline(
                top,
                e["length_tokens"],
                e["e_in_j"] * 1e3,
                e["e_in_j_ci_low"] * 1e3,
                e["e_in_j_ci_high"] * 1e3,
                **engine_kw(engine),
                label=f"{engine} E_in",
            )
            errorline(
                top,
                e["length_tokens"],
                e["e_out_j"] * 1e3,
                e["e_out_j_ci_low"] * 1e3,
                e["e_out_j_ci_high"] * 1e3,
                **engine_kw(engine),
                mfc="white",
                lw=0.8,
                label=f"{engine} E_out",
            )
            errorline(
                bottom,
                e["length_tokens"],
                e["e_ratio"],
                e["e_ratio_ci_low"],
                e["e_ratio_ci_high"],
                **engine_kw(engine),
                label=f"{engine} E_out/E_in",
            )
        claims = PAPER["claims"]
        at_112k = PAPER["table1_length_tokens"]
        paper_pts = [
            (1024, claims[4]["ratio_at_1k"], "vLLM"),
            (at_112k, claims[4]["ratio_at_112k"], "vLLM"),
            (at_112k, claims[5]["ratio_at_112k"], "HF"),
        ]
        lmax = d["length_tokens"].max()
        for x, y, fam in paper_pts:
            if x <= lmax * 1.5:
                # black, not an engine's colour: these are the paper's numbers, not one of our engines
                bottom.plot(
                    [x],
                    [y],
                    marker="x" if fam == "vLLM" else "+",
                    ms=8,
                    color="black",
                    ls="none",
                    label=f"paper, {fam} (per G)",
                )
        log_y(top)
        for ax in (top, bottom):
            log2_x(ax)
            ax.set_xlabel("context length L (tokens)")
        top.set_title(model)
        top.set_ylabel("energy per token (mJ/token)")
        bottom.set_ylabel("E_out / E_in (x)")
    e_out = ("E_out = (E_generate - E_prefill) / (G - 1): the first output token comes from the prefill", "black")
    finish(fig, axes, [excluded_note(pc), e_out], engines_of(pc))
    return fig


def phase_map(t: dict) -> plt.Figure:
    pc = t["per_cell"]
    models = models_of(pc)
    fig, axes = subplots(1, len(models), w=4.6, h=3.6)
    for ax, model in zip(axes[0], models):
        d = pc[(pc["model"] == model) & pc["usable"] & pc["mean_power_w"].notna()]
        ax.set_title(model)
        if d.empty:
            say_missing(ax, energy_missing_message(pc[pc["model"] == model]).replace("energy", "power", 1))
            continue
        points = []
        for engine in engines_of(d):
            phases = set(d["phase"])
            for phase in [p for p in PHASE_MARKERS if p in phases] + sorted(phases - set(PHASE_MARKERS)):
                e = d[(d["engine"] == engine) & (d["phase"] == phase)].sort_values("length_tokens")
                if e.empty:
                    continue
                x, y = e["latency_per_token_ms"], e["mean_power_w"]
                ax.errorbar(
                    x,
                    y,
                    xerr=yerr(x, e["latency_per_token_ms_ci_low"], e["latency_per_token_ms_ci_high"]),
                    yerr=yerr(y, e["mean_power_w_ci_low"], e["mean_power_w_ci_high"]),
                    **engine_kw(engine, line=False),
                    mfc=PHASE_FILL.get(phase, colour(engine)),
                    capsize=2,
                    markersize=5,
                    label=f"{engine} {phase}",
                )
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
        label_lengths(ax, ends_of_series(points) if len({p[3] for p in points}) > 2 else points)
    finish(fig, axes, [excluded_note(pc)], engines_of(pc))
    return fig


# ---- our additions ---------------------------------------------------------------------------------------------


def power_traces(t: dict) -> plt.Figure:
    tr, runs, pc = t["traces"], t["trace_runs"], t["per_cell"]
    if tr.empty:
        fig, axes = subplots(1, 1, w=6.4, h=2.6)
        say_missing(axes[0][0], "no power trace: " + energy_missing_message(pc).split(":", 1)[-1].strip())
        fig.tight_layout()
        return fig
    phases = [p for p in ("prefill", "generate") if p in set(tr["phase"])] or ["prefill"]
    roles = ["smallest L", "largest L"]
    models = sorted(tr["model"].unique())
    fig, axes = subplots(len(phases), 2, w=4.8, h=3.0)
    for i, phase in enumerate(phases):
        for j, role in enumerate(roles):
            ax = axes[i][j]
            d = tr[(tr["phase"] == phase) & (tr["role"] == role)]
            # about 16 characters of 8 pt text per inch of the panel's column: many engines' L wrap onto more lines
            ax.set_title(wrap(power_trace_title(tr, phase, role), int(fig.get_figwidth() / 2 * 0.85 * 16)), fontsize=8)
            if d.empty:
                say_missing(ax, f"no {role} {phase} trace")
                continue
            for engine in engines_of(d):
                for cell_id, e in d[d["engine"] == engine].groupby("cell_id", sort=False):
                    model_rank = models.index(e["model"].iloc[0])
                    ax.plot(
                        e["t_s"],
                        e["power_w"],
                        color=colour(engine),
                        ls=engine_style(engine).line,
                        lw=1.3 if model_rank == 0 else 0.7,
                        drawstyle="steps-post",
                        label=engine if len(models) == 1 else f"{engine} ({e['model'].iloc[0]})",
                    )
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
    note = (
        (
            "Shaded: prefill of each run (start to first token). NVML publishes power every ~100 ms. Each engine's "
            "own smallest and largest L are shown; their L differ where the engines ran different grids."
        ),
        "black",
    )
    finish(fig, axes, [note], engines_of(pc))
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
        parts.append(f"{who} L={', '.join(short_tokens(L) for L in sorted(set(e['length_tokens'])))}")
    if role != "smallest L":
        only = tr[(tr["phase"] == phase)].groupby(["model", "engine"])["role"].agg(set)
        for (model, engine), r in sorted(only.items(), key=lambda kv: (kv[0][0], engine_rank(kv[0][1]))):
            if r == {"smallest L"}:
                who = engine if len(models) == 1 else f"{model}/{engine}"
                parts.append(f"{who}: one L only, left")
    return head + ("\n" + "; ".join(parts) if parts else "")


def achieved_throughput(t: dict) -> plt.Figure:
    pc = t["per_cell"]
    models = models_of(pc)
    fig, axes = subplots(len(models), 2, w=4.4, h=3.0)
    panels = (
        (
            "prefill",
            "achieved_tflops",
            "peak_bf16_tflops",
            "achieved compute (TFLOP/s)",
            "dense bf16 peak {:g} TFLOP/s",
        ),
        ("generate", "achieved_mem_tb_s", "peak_mem_tb_s", "decode memory bandwidth (TB/s)", "memory peak {:g} TB/s"),
    )
    for i, model in enumerate(models):
        for j, (phase, col, peak_col, ylabel, peak_name) in enumerate(panels):
            ax = axes[i][j]
            # timings exist without energy, so this figure keeps no_energy cells; only a failed status is set apart
            d = pc[(pc["model"] == model) & (pc["phase"] == phase) & pc[col].notna()]
            ax.set_title(f"{model}: {phase}")
            if d.empty:
                say_missing(ax, f"no {phase} cell with a {ylabel.split('(')[0].strip()}")
                continue
            for engine in engines_of(d):
                e = d[d["engine"] == engine].sort_values("length_tokens")
                ok, bad = e[e["status"] == "ok"], e[e["status"] != "ok"]
                errorline(
                    ax,
                    ok["length_tokens"],
                    ok[col],
                    ok[f"{col}_ci_low"],
                    ok[f"{col}_ci_high"],
                    **engine_kw(engine),
                    label=engine,
                )
                if len(bad):
                    ax.plot(
                        bad["length_tokens"],
                        bad[col],
                        marker="x",
                        ms=8,
                        ls="none",
                        color=MISSING_COLOUR,
                        label=f"status {', '.join(sorted(set(bad['status'])))}",
                    )
            for dev, g in d.groupby("device_name"):
                peak = g[peak_col].max()
                if np.isfinite(peak):
                    ax.axhline(peak, color="black", ls="--", lw=0.8)
                    ax.annotate(
                        f"{dev} {peak_name.format(peak)}",
                        (0.02, peak),
                        xycoords=("axes fraction", "data"),
                        xytext=(0, -10),
                        textcoords="offset points",
                        fontsize=7,
                    )
            if not np.isfinite(d[peak_col]).any():
                ax.text(
                    0.02,
                    0.95,
                    f"device peak unknown ({', '.join(sorted(set(d['device_name'])))})",
                    transform=ax.transAxes,
                    fontsize=7,
                    va="top",
                    color=MISSING_COLOUR,
                )
            log2_x(ax)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("context length L (tokens)")
            ax.set_ylabel(ylabel)
    finish(fig, axes, engines=engines_of(pc))
    return fig


def energy_fit(t: dict) -> plt.Figure:
    """A grid, one row per model and one column per engine, each cell the fit over its cells (top) and the
    residuals with their intervals (below); chi²/dof in the title, in red where the quadratic does not describe the
    cells, so that a bad fit is seen at once."""
    pc, fits, res = t["per_cell"], t["fits"], t["fit_residuals"]
    f = fits[(fits["phase"] == "prefill") & (fits["quantity"] == "energy_per_run_j")]
    if f.empty:
        fig, axes = subplots(1, 1, w=6, h=3)
        say_missing(axes[0][0], "no fit: " + energy_missing_message(pc).split(":", 1)[-1].strip())
        fig.tight_layout()
        return fig
    models = sorted(f["model"].unique())
    engines = sorted(f["engine"].unique(), key=engine_rank)
    any_fit = not f["status"].str.startswith("not fitted").all()
    fig = plt.figure(figsize=(3.4 * len(engines), (3.6 if any_fit else 2.8) * len(models) + 0.4))
    outer = fig.add_gridspec(len(models), len(engines))
    axes, notes = [], []
    for i, model in enumerate(models):
        for k, engine in enumerate(engines):
            rows = f[(f["model"] == model) & (f["engine"] == engine)]
            if any_fit:
                inner = outer[i, k].subgridspec(2, 1, height_ratios=[2.2, 1], hspace=0.08)
                top = fig.add_subplot(inner[0])
                bottom = fig.add_subplot(inner[1], sharex=top)
                axes += [top, bottom]
            else:
                top, bottom = fig.add_subplot(outer[i, k]), None
                axes.append(top)
            if rows.empty:
                say_missing(top, f"{model} / {engine}: no prefill cells")
                if bottom is not None:
                    bottom.axis("off")
                continue
            note = _fit_panel(top, bottom, rows.iloc[0], pc, res)
            if note:
                notes.append(note)
    finish(fig, np.array(axes), notes, legend=False)
    return fig


def _fit_panel(top, bottom, row: pd.Series, pc: pd.DataFrame, res: pd.DataFrame) -> tuple[str, str] | None:
    """One engine's fit and residuals; returns the footnote naming the cells left out of it, if any."""
    model, engine = row["model"], row["engine"]
    cells = pc[(pc["model"] == model) & (pc["engine"] == engine) & (pc["phase"] == "prefill")]
    used = cells[cells["usable"]].sort_values("length_tokens")
    out = cells[~cells["usable"] & cells["energy_per_run_j"].notna()]
    c = colour(engine)
    fitted = not row["status"].startswith("not fitted")
    chi2 = row.get("chi2_per_dof")
    bad = fitted and not bool(row.get("quadratic_describes", True))
    chi2_text = f", χ²/dof = {chi2:.2g}" if fitted and np.isfinite(chi2) else ""
    top.set_title(
        f"{model} / {engine}{chi2_text}" + (" (not quadratic)" if bad else ""),
        fontsize=8,
        color=MISSING_COLOUR if bad else "black",
    )
    if used.empty and out.empty:
        say_missing(top, row["status"] + f"\n{energy_missing_message(cells)}")
        if bottom is not None:
            bottom.axis("off")
        return None
    if len(used):
        errorline(
            top,
            used["length_tokens"],
            used["energy_per_run_j"],
            used["energy_per_run_j_ci_low"],
            used["energy_per_run_j_ci_high"],
            **engine_kw(engine, line=False),
            label="measured",
        )
    if len(out):
        top.plot(
            out["length_tokens"],
            out["energy_per_run_j"],
            "x",
            color=MISSING_COLOUR,
            ms=8,
            label="excluded from the fit",
        )
    log_y(top)
    log2_x(top)
    top.set_ylabel("prefill energy per run (J)", fontsize=7)
    if not fitted:
        # the cells are still shown, on their axes; the panel says why there is no curve
        top.text(
            0.02,
            0.97,
            wrap(row["status"], int(axes_size_in(top)[0] * 15)),
            transform=top.transAxes,
            va="top",
            fontsize=7,
            color=MISSING_COLOUR,
        )
        top.set_xlabel("context length L (tokens)")
        top.legend(loc="lower right", fontsize=6, frameon=True)
        if bottom is not None:
            bottom.axis("off")
        return None
    fit = fit_from_row(row)
    x = np.geomspace(max(used["length_tokens"].min() * 0.8, 1), used["length_tokens"].max() * 1.25, 200)
    y = fit.predict(x)
    band = fit.quantile * fit.predict_se(x)
    top.plot(x, y, color=c, ls=engine_style(engine).line, lw=1.2, label="fit a + bL + cL²")
    top.fill_between(x, y - band, y + band, color=c, alpha=0.2, lw=0, label="95 % band of the fit")
    top.text(
        0.02,
        0.97,
        f"a = {row['a_j']:.3g} J\nb = {row['b_j_per_token'] * 1e3:.3g} mJ/token\n"
        f"c = {row['c_j_per_token2'] * 1e9:.3g} nJ/token²",
        transform=top.transAxes,
        va="top",
        fontsize=6.5,
    )
    top.legend(loc="lower right", fontsize=6, frameon=True)
    top.tick_params(axis="x", labelbottom=False)
    r = res[
        (res["model"] == model)
        & (res["engine"] == engine)
        & (res["phase"] == "prefill")
        & (res["quantity"] == "energy_per_run_j")
    ].merge(used[["cell_id", "energy_per_run_j_ci_low", "energy_per_run_j_ci_high"]], on="cell_id")
    rel_lo = (r["energy_per_run_j_ci_low"] - r["fitted_j"]) / r["fitted_j"] * 100
    rel_hi = (r["energy_per_run_j_ci_high"] - r["fitted_j"]) / r["fitted_j"] * 100
    errorline(bottom, r["length_tokens"], r["relative_residual"] * 100, rel_lo, rel_hi, **engine_kw(engine, line=False))
    bottom.axhline(0, color="black", lw=0.8)
    bottom.set_ylabel("residual (%)", fontsize=7)
    bottom.set_xlabel("context length L (tokens)", fontsize=7)
    if row["excluded"]:
        left_out = brief(row["excluded"], 110, where=None)
        return f"{model}/{engine}, left out of the fit: {left_out}", MISSING_COLOUR
    return None


# ---- the figures a reader of the claims expects -----------------------------------------------------------------


def _prefill_threshold(
    th: pd.DataFrame, model: str, engine: str, name: str, quantity: str = "energy_per_run_j"
) -> float:
    r = threshold_row(th, model, engine, "prefill", name, quantity)
    return float(r["value"]) if r is not None and np.isfinite(r["value"]) else float("nan")


def _paper_row(model: str, engine_family: str) -> dict | None:
    """The paper's Table 1 row of one of our models ('llama-3.1-8b' is the paper's 'Llama-3.1-8B')."""
    return next(
        (r for r in PAPER["table1"] if r["model"].lower() == model.lower() and r["engine"] == engine_family), None
    )


def _mark_once(ax, seen: set, label: str) -> str:
    """A legend label the first time a kind of mark is drawn in a panel, '_' (no entry) after that."""
    if label in seen:
        return "_" + label
    seen.add(label)
    return label


@dataclass(frozen=True)
class HeroSeries:
    """One engine's part of the hero figure: its usable prefill cells, the fit E(L)/L over them, its crossover
    L* = b/c on the fit and its lowest measured J/token (mJ/token throughout)."""

    engine: str
    cells: pd.DataFrame  # usable prefill cells, by L
    fit_x: np.ndarray | None  # None: not fitted
    fit_mj: np.ndarray | None
    star: tuple[float, float] | None  # (L*, mJ/token on the fit) where L* lies within the cells' L
    lowest: pd.DataFrame  # the cell with the lowest J/token (none or one row)


@dataclass(frozen=True)
class HeroPanel:
    model: str
    series: list[HeroSeries]
    missing: str  # why the panel is empty ('' where it has series)
    paper: list[tuple[str, str, float, float]]  # (family, marker, L, mJ/token) of the paper's Table 1


def hero_panels(t: dict) -> list[HeroPanel]:
    """The data of the hero figure, one panel per model: read once here for the static figure and the report's
    interactive one, so that both show the same points."""
    pc, fits, th = t["per_cell"], t["fits"], t["thresholds"]
    pre = pc[(pc["phase"] == "prefill") & pc["usable"]]
    panels = []
    for model in models_of(pc):
        d = pre[pre["model"] == model]
        paper = [
            (family, marker, PAPER["table1_length_tokens"], r["j_per_token"] * 1e3)
            for family, marker in (("HF", "P"), ("vLLM", "X"))
            if (r := _paper_row(model, family)) is not None
        ]
        if d.empty:
            panels.append(HeroPanel(model, [], energy_missing_message(pc[pc["model"] == model]), paper))
            continue
        series = []
        for engine in engines_of(d):
            e = d[d["engine"] == engine].sort_values("length_tokens")
            row = fits[
                (fits["model"] == model)
                & (fits["engine"] == engine)
                & (fits["phase"] == "prefill")
                & (fits["quantity"] == "energy_per_run_j")
            ]
            fit_x = fit_mj = star = None
            if len(row) and not row["status"].iloc[0].startswith("not fitted"):
                fit = fit_from_row(row.iloc[0])
                fit_x = np.geomspace(e["length_tokens"].min(), e["length_tokens"].max(), 200)
                fit_mj = fit.predict(fit_x) / fit_x * 1e3
                L_star = _prefill_threshold(th, model, engine, "crossover")
                if e["length_tokens"].min() <= L_star <= e["length_tokens"].max():
                    star = (L_star, fit.predict(np.array([L_star]))[0] / L_star * 1e3)
            low = _prefill_threshold(th, model, engine, "efficiency_measured")
            series.append(HeroSeries(engine, e, fit_x, fit_mj, star, e[e["length_tokens"] == low]))
        panels.append(HeroPanel(model, series, "", paper))
    return panels


HERO_NOTE = (
    "Lines: the fit E(L)/L = a/L + b + cL (total energy). The paper's points are one run each on another "
    "GPU: compare shapes, not joules."
)
STAR_LABEL = "L* = b/c (quadratic overtakes linear)"


def energy_per_token_fit(t: dict) -> plt.Figure:
    """The hero figure: prefill J/token vs L with the fit E(L)/L over the cells, each engine's crossover L* = b/c
    and lowest measured J/token marked, and the paper's Table 1 points at ~112k."""
    pc = t["per_cell"]
    panels = hero_panels(t)
    fig, axes = subplots(1, len(panels), w=4.8, h=3.6)
    for ax, panel in zip(axes[0], panels):
        ax.set_title(panel.model)
        if panel.missing:
            say_missing(ax, panel.missing)
            continue
        seen: set = set()
        for s in panel.series:
            e = s.cells
            errorline(
                ax,
                e["length_tokens"],
                e["energy_per_token_j"] * 1e3,
                e["energy_per_token_j_ci_low"] * 1e3,
                e["energy_per_token_j_ci_high"] * 1e3,
                **engine_kw(s.engine, line=False),
                label=s.engine,
            )
            if s.fit_x is not None:
                ax.plot(s.fit_x, s.fit_mj, color=colour(s.engine), ls=engine_style(s.engine).line, lw=1.1)
            if s.star is not None:
                ax.plot(
                    [s.star[0]],
                    [s.star[1]],
                    marker="v",
                    ms=9,
                    ls="none",
                    mfc="white",
                    mec=colour(s.engine),
                    mew=1.6,
                    label=_mark_once(ax, seen, STAR_LABEL),
                )
            if len(s.lowest):
                ax.plot(
                    s.lowest["length_tokens"],
                    s.lowest["energy_per_token_j"] * 1e3,
                    marker="*",
                    ms=12,
                    ls="none",
                    mfc="none",
                    mec=colour(s.engine),
                    mew=1.2,
                    label=_mark_once(ax, seen, "lowest J/token"),
                )
        for paper_engine, marker, x, y in panel.paper:
            ax.plot(
                [x],
                [y],
                marker=marker,
                ms=9,
                ls="none",
                color=PAPER_COLOUR,
                label=f"paper {paper_engine}, {PAPER['device']}",
            )
        log2_x(ax)
        log_y(ax)
        ax.set_xlabel("context length L (tokens)")
        ax.set_ylabel("prefill energy per input token (mJ/token)")
    finish(fig, axes, [excluded_note(pc, "prefill"), (HERO_NOTE, "black")], engines_of(pc))
    return fig


@dataclass(frozen=True)
class SlopeSeries:
    """One engine's prefill dE/dL between neighbouring usable cells (J per extra input token, total energy)."""

    engine: str
    pairs: pd.DataFrame  # rows of the slopes table, by length_low
    middle: pd.Series  # each pair's geometric middle of L: where its point is drawn
    star: float | None  # L* = b/c of the fit, where it lies within the pairs' L
    rise: float | None  # the L from which dE/dL rises


@dataclass(frozen=True)
class SlopePanel:
    model: str
    series: list[SlopeSeries]
    missing: str  # why the panel is empty ('' where it has series)


def de_dl_panels(t: dict) -> list[SlopePanel]:
    """The data of the dE/dL figure, one panel per model: read once here for the static figure and the report's
    interactive one, so that both show the same points."""
    pc, sl, th = t["per_cell"], t["slopes"], t["thresholds"]
    d_all = sl[(sl["phase"] == "prefill") & (sl["quantity"] == "energy_per_run_j")]
    panels = []
    for model in models_of(pc):
        d = d_all[d_all["model"] == model]
        if d.empty:
            missing = "no pair of neighbouring usable prefill cells: " + energy_missing_message(
                pc[pc["model"] == model]
            )
            panels.append(SlopePanel(model, [], missing))
            continue
        series = []
        for engine in engines_of(d):
            e = d[d["engine"] == engine].sort_values("length_low")
            star = _prefill_threshold(th, model, engine, "crossover")
            within = np.isfinite(star) and e["length_low"].min() <= star <= e["length_high"].max()
            rise = _prefill_threshold(th, model, engine, "de_dl_rise")
            middle = np.sqrt(e["length_low"] * e["length_high"])
            series.append(SlopeSeries(engine, e, middle, star if within else None, rise if np.isfinite(rise) else None))
        panels.append(SlopePanel(model, series, ""))
    return panels


DE_DL_NOTE = "dE/dL: the energy of the prefill between neighbouring L over their distance (total energy)."
DE_DL_STAR_LABEL = "L* = b/c of the fit (one line per engine)"
DE_DL_RISE_LABEL = "dE/dL starts to rise (triangle on the axis)"


def de_dl(t: dict) -> plt.Figure:
    """Claim 1: the marginal energy dE/dL between neighbouring L, with each engine's L* = b/c and the L from which
    dE/dL rises marked."""
    panels = de_dl_panels(t)
    fig, axes = subplots(1, len(panels), w=4.6, h=3.4)
    for ax, panel in zip(axes[0], panels):
        ax.set_title(panel.model)
        if panel.missing:
            say_missing(ax, panel.missing)
            continue
        seen: set = set()
        for s in panel.series:
            e = s.pairs
            errorline(
                ax,
                s.middle,
                e["de_dl_j_per_token"] * 1e3,
                e["de_dl_j_per_token_ci_low"] * 1e3,
                e["de_dl_j_per_token_ci_high"] * 1e3,
                **engine_kw(s.engine),
                label=s.engine,
            )
            if s.star is not None:
                ax.axvline(
                    s.star,
                    color=colour(s.engine),
                    ls=engine_style(s.engine).line,
                    lw=0.9,
                    alpha=0.8,
                    label=_mark_once(ax, seen, DE_DL_STAR_LABEL),
                )
            if s.rise is not None:
                ax.plot(
                    [s.rise],
                    [0.02],
                    marker="^",
                    ms=8,
                    ls="none",
                    color=colour(s.engine),
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                    label=_mark_once(ax, seen, DE_DL_RISE_LABEL),
                )
        log2_x(ax)
        log_y(ax)
        ax.set_xlabel("context length L (tokens; geometric middle of the pair)")
        ax.set_ylabel("prefill dE/dL (mJ per extra input token)")
    finish(fig, axes, [(DE_DL_NOTE, "black")], engines_of(t["per_cell"]))
    return fig


@dataclass(frozen=True)
class PowerSeries:
    """One engine's mean prefill power over its usable cells, and the cell from which it plateaus."""

    engine: str
    cells: pd.DataFrame  # usable prefill cells with a mean power, by L
    onset: pd.DataFrame  # the cell where the plateau begins (none or one row)


@dataclass(frozen=True)
class PowerPanel:
    model: str
    series: list[PowerSeries]
    missing: str  # why the panel is empty ('' where it has series)
    limit_w: float  # the board's power limit (nan where unknown)
    idle_w: float  # idle power with the model resident (nan where unknown)


# The paper's power plateau (claim 2): from ~16k tokens, within a band of watts on its GPU.
PAPER_PLATEAU = PAPER["claims"][2]
PAPER_PLATEAU_LABEL = f"paper: plateau from ~{short_tokens(PAPER_PLATEAU['plateau_from_tokens'])}"
PAPER_PLATEAU_BAND_LABEL = f"paper's plateau power ({PAPER['device']})"


def power_panels(t: dict) -> list[PowerPanel]:
    """The data of the power figure, one panel per model: read once here for the static figure and the report's
    interactive one, so that both show the same points."""
    pc, th = t["per_cell"], t["thresholds"]
    pre = pc[(pc["phase"] == "prefill") & pc["usable"] & pc["mean_power_w"].notna()]
    panels = []
    for model in models_of(pc):
        d = pre[pre["model"] == model]
        if d.empty:
            missing = energy_missing_message(pc[pc["model"] == model]).replace("energy", "power", 1)
            panels.append(PowerPanel(model, [], missing, float("nan"), float("nan")))
            continue
        series = []
        for engine in engines_of(d):
            e = d[d["engine"] == engine].sort_values("length_tokens")
            onset = _prefill_threshold(th, model, engine, "power_plateau", "mean_power_w")
            series.append(PowerSeries(engine, e, e[e["length_tokens"] == onset]))
        panels.append(PowerPanel(model, series, "", d["power_limit_w"].max(), d["idle_power_w"].median()))
    return panels


def power_vs_length(t: dict) -> plt.Figure:
    """Claim 2: mean prefill power vs L with the board's power limit, idle power, each engine's plateau onset and
    the paper's plateau (from ~16k, 280-310 W on its GPU)."""
    panels = power_panels(t)
    fig, axes = subplots(1, len(panels), w=4.6, h=3.4)
    for ax, panel in zip(axes[0], panels):
        ax.set_title(panel.model)
        if panel.missing:
            say_missing(ax, panel.missing)
            continue
        seen: set = set()
        for s in panel.series:
            e = s.cells
            errorline(
                ax,
                e["length_tokens"],
                e["mean_power_w"],
                e["mean_power_w_ci_low"],
                e["mean_power_w_ci_high"],
                **engine_kw(s.engine),
                label=s.engine,
            )
            if len(s.onset):
                ax.plot(
                    s.onset["length_tokens"],
                    s.onset["mean_power_w"],
                    marker="o",
                    ms=13,
                    ls="none",
                    mfc="none",
                    mec=colour(s.engine),
                    mew=1.3,
                    label=_mark_once(ax, seen, "plateau onset"),
                )
        if np.isfinite(panel.limit_w):
            ax.axhline(panel.limit_w, color="black", ls="--", lw=0.9, label=power_limit_label(panel.limit_w))
        if np.isfinite(panel.idle_w):
            ax.axhline(panel.idle_w, color="grey", ls=":", lw=0.8, label="idle (model resident)")
        lo, hi = PAPER_PLATEAU["plateau_power_w"]
        ax.axhspan(lo, hi, color="grey", alpha=0.15, lw=0, label=PAPER_PLATEAU_BAND_LABEL)
        ax.axvline(PAPER_PLATEAU["plateau_from_tokens"], color=PAPER_COLOUR, ls="-.", lw=0.9, label=PAPER_PLATEAU_LABEL)
        log2_x(ax)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("context length L (tokens)")
        ax.set_ylabel("mean prefill power (W)")
    finish(fig, axes, [excluded_note(t["per_cell"], "prefill")], engines_of(t["per_cell"]))
    return fig


def power_limit_label(limit_w: float) -> str:
    return f"board power limit ({limit_w:.0f} W)"


@dataclass(frozen=True)
class RatioSeries:
    """One engine's prefill energy over vLLM's at equal L (total energy)."""

    engine: str
    ratios: pd.DataFrame  # rows of the engine ratios table, by L


@dataclass(frozen=True)
class RatioPanel:
    model: str
    series: list[RatioSeries]
    missing: str  # why the panel is empty ('' where it has series)
    paper: float | None  # the paper's HF / vLLM ratio at ~112k for this model, where it gives one


NO_RATIO = "no ratio: it needs vLLM and another engine with usable prefill cells at the same L"
PAPER_RATIO_LABEL = f"paper: HF / vLLM at ~{PAPER['table1_length_tokens'] / 1000:g}k"


def ratio_panels(t: dict) -> list[RatioPanel]:
    """The data of the engine ratio figure, one panel per model: read once here for the static figure and the
    report's interactive one, so that both show the same points."""
    pc, er = t["per_cell"], t["engine_ratios"]
    d_all = er[(er["phase"] == "prefill") & er["engine_b"].isin(family("vLLM")) & er["energy_ratio"].notna()]
    paper = PAPER["claims"][6]["energy_ratio"]
    panels = []
    for model in models_of(pc):
        d = d_all[d_all["model"] == model]
        value = next((v for k, v in paper.items() if k.lower() == model.lower()), None)
        series = [
            RatioSeries(engine, d[d["engine_a"] == engine].sort_values("length_tokens"))
            for engine in sorted(d["engine_a"].unique(), key=engine_rank)
        ]
        panels.append(RatioPanel(model, series, NO_RATIO if d.empty else "", value))
    return panels


def engine_ratio(t: dict) -> plt.Figure:
    """Claim 6: the prefill energy of each HF engine over vLLM's at equal L, with the paper's 7.6x (Llama) and
    8.9x (Qwen2) at ~112k."""
    panels = ratio_panels(t)
    fig, axes = subplots(1, len(panels), w=4.4, h=3.4)
    for ax, panel in zip(axes[0], panels):
        ax.set_title(panel.model)
        if panel.missing:
            say_missing(ax, panel.missing)
            continue
        for s in panel.series:
            e = s.ratios
            errorline(
                ax,
                e["length_tokens"],
                e["energy_ratio"],
                e["energy_ratio_ci_low"],
                e["energy_ratio_ci_high"],
                **engine_kw(s.engine),
                label=f"{s.engine} / vllm",
            )
        if panel.paper is not None:
            ax.plot(
                [PAPER["table1_length_tokens"]],
                [panel.paper],
                marker="X",
                ms=10,
                ls="none",
                color=PAPER_COLOUR,
                label=PAPER_RATIO_LABEL,
            )
            ax.annotate(
                f"{panel.paper:g}x",
                (PAPER["table1_length_tokens"], panel.paper),
                xytext=(-6, 6),
                textcoords="offset points",
                ha="right",
                fontsize=8,
            )
        ax.axhline(1, color="grey", lw=0.8)
        log2_x(ax)
        log_y(ax)
        ax.set_xlabel("context length L (tokens)")
        ax.set_ylabel("prefill energy ratio (x, total energy)")
    finish(fig, axes, engines=engines_of(t["per_cell"]))
    return fig


# ---- the serving case: batch sizes and engine variants -------------------------------------------------------------

# The default engine draws solid lines; each variant its own line style (in the order the table lists them).
VARIANT_LINES = ("-", "--", ":", "-.")
NO_SERVING = (
    "no serving cells: every cell ran one request at a time (batch 1) with the engine's default settings, "
    "so there is no batch axis to draw"
)


def _batch_colours(batches) -> dict[int, tuple]:
    """One colour per batch size, light to dark as B grows (the engines' colours mark the panels' titles)."""
    cmap = plt.get_cmap("viridis")
    bs = sorted(set(int(b) for b in batches))
    return {b: cmap(0.85 * (1 - i / max(len(bs) - 1, 1))) for i, b in enumerate(bs)}


def _serving_panels(t: dict, metric: str, ylabel: str, scale: float, note: str) -> plt.Figure:
    sv = t.get("serving")
    rows = sv[sv["metric"] == metric] if sv is not None and len(sv) else None
    if rows is None or rows.empty:
        fig, axes = subplots(1, 1, w=5.0)
        say_missing(
            axes[0][0],
            NO_SERVING if rows is None or sv is None or sv.empty else f"no usable serving cells for {metric}",
        )
        finish(fig, axes, legend=False)
        return fig
    panels = sorted({(m, e) for m, e in zip(rows["model"], rows["engine"])}, key=lambda k: (k[0], engine_rank(k[1])))
    fig, axes = subplots(1, len(panels))
    colours = _batch_colours(rows["batch_size"])
    variants = list(dict.fromkeys(["default", *rows["engine_variant"]]))
    for ax, (model, engine) in zip(axes[0], panels):
        d = rows[(rows["model"] == model) & (rows["engine"] == engine)]
        for (variant, b), e in d.groupby(["engine_variant", "batch_size"], sort=True):
            e = e.sort_values("length_tokens")
            line = VARIANT_LINES[variants.index(variant) % len(VARIANT_LINES)]
            label = f"B = {int(b)}" + ("" if variant == "default" else f", {variant}")
            errorline(
                ax,
                e["length_tokens"],
                e["value"] * scale,
                e["ci_low"] * scale,
                e["ci_high"] * scale,
                color=colours[int(b)],
                marker=engine_style(engine).marker,
                ls=line,
                mfc="white" if variant != "default" else None,
                label=label,
            )
        log2_x(ax)
        log_y(ax)
        ax.set_title(f"{model} / {engine}", color=colour(engine))
        ax.set_xlabel("context length L per sequence (tokens)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6.5, ncol=2)
    finish(fig, axes, [(note, "black")], legend=False)
    return fig


def serving_energy_per_token(t: dict) -> plt.Figure:
    return _serving_panels(
        t,
        "e_in",
        "prefill energy per input token (mJ/token)",
        1e3,
        "J per input token = E_prefill / (B L): B distinct prompts of L tokens prefilled together; "
        "95 % intervals of the windows. Dashed and dotted: vLLM variants (chunked prefill, prefix "
        "caching with distinct prompts) at the same B.",
    )


def serving_io_ratio(t: dict) -> plt.Figure:
    return _serving_panels(
        t,
        "io_ratio",
        "E_out / E_in (x)",
        1.0,
        "E_out = (E_generate - E_prefill) / (B (G - 1)), E_in = E_prefill / (B L): both per token "
        "of the batch; 95 % intervals.",
    )


# one function per figure of the catalog, named as the figure
PLOTTERS = {name: globals()[name] for name in FIGURE_NAMES + SERVING_FIGURE_NAMES}


def make_figures(tables: dict[str, pd.DataFrame], out_paths) -> list[Path]:
    style()
    by_name: dict[str, list[Path]] = {}
    for p in map(Path, out_paths):
        name = p.name.rsplit(".", 1)[0]
        if name not in PLOTTERS:
            raise CtxEnergyError(f"'{p}': unknown figure '{name}' (known: {', '.join(PLOTTERS)})")
        if p.suffix not in (".png", ".svg"):
            raise CtxEnergyError(f"'{p}': figures are written as .png or .svg")
        by_name.setdefault(name, []).append(p)
    written = []
    # the paper's figures show one request at a time with the engines' defaults; the serving figures every cell
    paper_tables = {k: serial(v) for k, v in tables.items()}
    for name, paths in by_name.items():
        fig = PLOTTERS[name](tables if name in SERVING_FIGURE_NAMES else paper_tables)
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
