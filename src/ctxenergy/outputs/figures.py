"""Figures from the derived tables only (results/analysis/*.parquet), as PNG and SVG: one function per figure,
named as in ctxenergy.outputs.catalog.

`ctxenergy figures results/analysis/*.parquet --out results/figures/<figure>.png results/figures/<figure>.svg ...`

One colour per engine in every figure (plotting.ENGINE_PALETTE), units in every axis label, 95 % intervals drawn as
error bars or bands. A figure whose data are missing (a CPU host has no energy counter; a cell ran out of memory) is
still written, and says in words what is missing and why, so that a run never fails on a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ctxenergy.analysis.cells import engine_rank
from ctxenergy.analysis.paper_values import PAPER
from ctxenergy.analysis.scaling import fit_from_row
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.catalog import FIGURE_NAMES
from ctxenergy.outputs.plotting import (MISSING_COLOUR, PHASE_MARKERS, axes_size_in, colour,
                                        energy_missing_message, engines_of, errorline, excluded_note, finish,
                                        label_lengths, log2_x, log_y, models_of, plt, save, say_missing, style,
                                        subplots, wrap, yerr)
from ctxenergy.outputs.render import brief, short_tokens

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
            errorline(ax, e["length_tokens"], e["energy_per_token_j"] * 1e3, e["energy_per_token_j_ci_low"] * 1e3,
                       e["energy_per_token_j_ci_high"] * 1e3, color=colour(engine), marker="o", label=f"{engine} total")
            errorline(ax, e["length_tokens"], e["dynamic_energy_per_token_j"] * 1e3,
                       e["dynamic_energy_per_token_j_ci_low"] * 1e3, e["dynamic_energy_per_token_j_ci_high"] * 1e3,
                       color=colour(engine), marker="o", mfc="white", ls="--", label=f"{engine} above idle")
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
            c = colour(engine)
            errorline(top, e["length_tokens"], e["e_in_j"] * 1e3, e["e_in_j_ci_low"] * 1e3, e["e_in_j_ci_high"] * 1e3,
                       color=c, marker="o", label=f"{engine} E_in")
            errorline(top, e["length_tokens"], e["e_out_j"] * 1e3, e["e_out_j_ci_low"] * 1e3,
                       e["e_out_j_ci_high"] * 1e3, color=c, marker="s", ls="--", label=f"{engine} E_out")
            errorline(bottom, e["length_tokens"], e["e_ratio"], e["e_ratio_ci_low"], e["e_ratio_ci_high"], color=c,
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
        log_y(top)
        for ax in (top, bottom):
            log2_x(ax)
            ax.set_xlabel("context length L (tokens)")
        top.set_title(model)
        top.set_ylabel("energy per token (mJ/token)")
        bottom.set_ylabel("E_out / E_in (x)")
    e_out = ("E_out = (E_generate - E_prefill) / (G - 1): the first output token comes from the prefill",
             "black")
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
                ax.errorbar(x, y, xerr=yerr(x, e["latency_per_token_ms_ci_low"], e["latency_per_token_ms_ci_high"]),
                            yerr=yerr(y, e["mean_power_w_ci_low"], e["mean_power_w_ci_high"]), ls="none",
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
        label_lengths(ax, points)
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
            ax.set_title(wrap(power_trace_title(tr, phase, role), int(fig.get_figwidth() / 2 * 0.85 * 16)),
                         fontsize=8)
            if d.empty:
                say_missing(ax, f"no {role} {phase} trace")
                continue
            for engine in engines_of(d):
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
                say_missing(ax, f"no {phase} cell with a {ylabel.split('(')[0].strip()}")
                continue
            for engine in engines_of(d):
                e = d[d["engine"] == engine].sort_values("length_tokens")
                ok, bad = e[e["status"] == "ok"], e[e["status"] != "ok"]
                errorline(ax, ok["length_tokens"], ok[col], ok[f"{col}_ci_low"], ok[f"{col}_ci_high"],
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
            log2_x(ax)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("context length L (tokens)")
            ax.set_ylabel(ylabel)
    finish(fig, axes, engines=engines_of(pc))
    return fig


def energy_fit(t: dict) -> plt.Figure:
    pc, fits, res = t["per_cell"], t["fits"], t["fit_residuals"]
    f = fits[(fits["phase"] == "prefill") & (fits["quantity"] == "energy_per_run_j")]
    groups = [tuple(k) for k in f[["model", "engine"]].drop_duplicates().to_numpy()]
    groups.sort(key=lambda k: (k[0], engine_rank(k[1])))
    if not groups:
        fig, axes = subplots(1, 1, w=6, h=3)
        say_missing(axes[0][0], "no fit: " + energy_missing_message(pc).split(":", 1)[-1].strip())
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
            say_missing(top, row["status"] + f"\n{energy_missing_message(cells)}")
            if bottom is not None:
                bottom.axis("off")
            continue
        if len(used):
            errorline(top, used["length_tokens"], used["energy_per_run_j"], used["energy_per_run_j_ci_low"],
                       used["energy_per_run_j_ci_high"], color=c, marker="o", ls="none", label="measured")
        if len(out):
            top.plot(out["length_tokens"], out["energy_per_run_j"], "x", color=MISSING_COLOUR, ms=8,
                     label="excluded from the fit")
        log_y(top)
        top.set_ylabel("prefill energy per run (J)")
        log2_x(top)
        if row["status"].startswith("not fitted"):
            # the cells are still shown, on their axes; the panel says why there is no curve
            top.text(0.02, 0.97, wrap(row["status"], int(axes_size_in(top)[0] * 15)), transform=top.transAxes,
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
        errorline(bottom, r["length_tokens"], r["relative_residual"] * 100, rel_lo, rel_hi, color=c, marker="o",
                   ls="none")
        bottom.axhline(0, color="black", lw=0.8)
        bottom.set_ylabel("residual (% of fit)")
        bottom.set_xlabel("context length L (tokens)")
        log2_x(bottom)
        if row["excluded"]:
            # below the panels, not over the residuals
            left_out = brief(row["excluded"], 110, where=None)
            notes.append((f"{model}/{engine}, left out of the fit: {left_out}", MISSING_COLOUR))
    finish(fig, axes, notes, legend=False)
    return fig


# one function per figure of the catalog, named as the figure
PLOTTERS = {name: globals()[name] for name in FIGURE_NAMES}


def read_tables(paths) -> dict[str, pd.DataFrame]:
    return {Path(p).name.removesuffix(".parquet"): pd.read_parquet(p) for p in paths}


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
