"""Figures from the derived tables only (results/analysis/*.parquet), as PNG and SVG.

`ctxenergy figures results/analysis/*.parquet --out results/figures/<figure>.png results/figures/<figure>.svg ...`

One colour per engine in every figure (ENGINE_PALETTE), units in every axis label, 95 % intervals drawn as error
bars or bands. A figure whose data are missing (a CPU host has no energy counter; a cell ran out of memory) is still
written, and says in words what is missing and why, so that a run never fails on a figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on a compute node

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from ctxenergy.analysis.cells import engine_rank  # noqa: E402
from ctxenergy.analysis.paper_values import PAPER  # noqa: E402
from ctxenergy.analysis.scaling import fit_from_row  # noqa: E402
from ctxenergy.errors import CtxEnergyError  # noqa: E402

ENGINE_PALETTE = {"hf-eager": "#1b9e77", "hf-sdpa": "#d95f02", "hf-paged": "#7570b3", "vllm": "#e7298a"}
OTHER_ENGINE = "#555555"
PHASE_MARKERS = {"prefill": "o", "generate": "s"}
MISSING_COLOUR = "#b03030"

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


def _yerr(y, lo, hi) -> np.ndarray:
    y, lo, hi = (np.asarray(v, dtype=float) for v in (y, lo, hi))
    return np.vstack([np.clip(np.nan_to_num(y - lo), 0, None), np.clip(np.nan_to_num(hi - y), 0, None)])


def _errorline(ax, x, y, lo, hi, **kw):
    return ax.errorbar(x, y, yerr=_yerr(y, lo, hi), capsize=2.5, elinewidth=0.9, markersize=4, **kw)


def _missing(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, color=MISSING_COLOUR, fontsize=9,
            transform=ax.transAxes)
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


def _excluded_footnote(fig, per_cell: pd.DataFrame, phase: str | None = None) -> None:
    df = per_cell if phase is None else per_cell[per_cell["phase"] == phase]
    bad = df[~df["usable"]]
    # with no usable cell at all, the panels already say why in full
    if len(bad) and df["usable"].any():
        text = "; ".join(f"{r.model}/{r.engine}/{r.phase}/L{r.length_tokens}: {r.excluded_reason.split(':')[0]}"
                         for r in bad.head(6).itertuples())
        more = f" (+{len(bad) - 6} more)" if len(bad) > 6 else ""
        fig.text(0.01, 0.005, f"Excluded from this figure: {text}{more}", fontsize=6.5, color=MISSING_COLOUR,
                 ha="left", va="bottom", wrap=True)


def _subplots(n_rows: int, n_cols: int, w: float = 4.2, h: float = 3.2, **kw):
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(w * n_cols, h * n_rows + 0.5), squeeze=False, **kw)
    return fig, axes


def _legend(fig, axes) -> None:
    handles, labels = {}, {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels and not lab.startswith("_"):
                labels[lab] = True
                handles[lab] = h
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="upper center", ncol=min(len(handles), 5), frameon=False,
                   bbox_to_anchor=(0.5, 1.0))


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
    _legend(fig, axes)
    _excluded_footnote(fig, pc, "prefill")
    fig.tight_layout(rect=(0, 0.04, 1, 0.92))
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
        top.set_yscale("log")
        for ax in (top, bottom):
            _log2_x(ax)
            ax.set_xlabel("context length L (tokens)")
        top.set_title(model)
        top.set_ylabel("energy per token (mJ/token)")
        bottom.set_ylabel("E_out / E_in (x)")
    _legend(fig, axes)
    fig.text(0.99, 0.005, "E_out = (E_generate - E_prefill) / (G - 1): the first output token comes from the prefill",
             fontsize=6.5, ha="right", va="bottom")
    _excluded_footnote(fig, pc)
    fig.tight_layout(rect=(0, 0.04, 1, 0.9))
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
        for (engine, phase), e in d.groupby(["engine", "phase"], sort=False):
            x, y = e["latency_per_token_ms"], e["mean_power_w"]
            ax.errorbar(x, y, xerr=_yerr(x, e["latency_per_token_ms_ci_low"], e["latency_per_token_ms_ci_high"]),
                        yerr=_yerr(y, e["mean_power_w_ci_low"], e["mean_power_w_ci_high"]), ls="none",
                        marker=PHASE_MARKERS.get(phase, "^"), color=colour(engine), capsize=2, markersize=5,
                        label=f"{engine} {phase}")
            for xi, yi, L in zip(x, y, e["length_tokens"]):
                ax.annotate(_tokens(L), (xi, yi), textcoords="offset points", xytext=(3, 3), fontsize=6)
        limit = d["power_limit_w"].max()
        idle = d["idle_power_w"].median()
        if np.isfinite(limit):
            ax.axhline(limit, color="black", ls="--", lw=0.8, label="power limit")
        if np.isfinite(idle):
            ax.axhline(idle, color="grey", ls=":", lw=0.8, label="idle (model resident)")
        ax.set_xscale("log")
        ax.set_xlabel("normalised latency (ms/token)")
        ax.set_ylabel("mean power (W)")
    _legend(fig, axes)
    _excluded_footnote(fig, pc)
    fig.tight_layout(rect=(0, 0.04, 1, 0.88))
    return fig


# ---- our additions ---------------------------------------------------------------------------------------------

def power_traces(t: dict) -> plt.Figure:
    tr, runs, pc = t["traces"], t["trace_runs"], t["per_cell"]
    phases = [p for p in ("prefill", "generate") if p in set(tr["phase"])] or ["prefill"]
    roles = ["smallest L", "largest L"]
    fig, axes = _subplots(len(phases), 2, w=4.8, h=2.8)
    if tr.empty:
        for ax in np.ravel(axes):
            ax.axis("off")
        _missing(axes[0][0], "no power trace: " + energy_missing_message(pc).split(":", 1)[-1].strip())
        fig.tight_layout()
        return fig
    for i, phase in enumerate(phases):
        for j, role in enumerate(roles):
            ax = axes[i][j]
            d = tr[(tr["phase"] == phase) & (tr["role"] == role)]
            if d.empty:
                _missing(ax, f"no {role} {phase} trace")
                continue
            labels = []
            for cell_id, e in d.groupby("cell_id", sort=False):
                engine, model, L = e["engine"].iloc[0], e["model"].iloc[0], int(e["length_tokens"].iloc[0])
                ax.plot(e["t_s"], e["power_w"], color=colour(engine), lw=1.0, drawstyle="steps-post",
                        label=f"{engine}")
                labels.append(f"{model} L={_tokens(L)}")
                r = runs[runs["cell_id"] == cell_id]
                for s, f in zip(r["start_s"], r["first_token_s"]):
                    ax.axvspan(s, f, color=colour(engine), alpha=0.12, lw=0)
                cell = pc[pc["cell_id"] == cell_id]
                if len(cell) and np.isfinite(cell["idle_power_w"].iloc[0]):
                    ax.axhline(cell["idle_power_w"].iloc[0], color="grey", ls=":", lw=0.8, label="idle")
                if len(cell) and np.isfinite(cell["power_limit_w"].iloc[0]):
                    ax.axhline(cell["power_limit_w"].iloc[0], color="black", ls="--", lw=0.8, label="power limit")
            ax.set_title(f"{phase}, {role}: " + ", ".join(sorted(set(labels))), fontsize=8)
            ax.set_xlabel("time since the window's first run (s)")
            ax.set_ylabel("instant power (W)")
    _legend(fig, axes)
    fig.text(0.01, 0.005, "Shaded: prefill of each run (start to first token). NVML publishes power every ~100 ms.",
             fontsize=6.5, ha="left", va="bottom")
    fig.tight_layout(rect=(0, 0.04, 1, 0.92))
    return fig


def achieved_throughput(t: dict) -> plt.Figure:
    pc = t["per_cell"]
    models = _models(pc)
    fig, axes = _subplots(len(models), 2, w=4.4, h=3.0)
    panels = (("prefill", "achieved_tflops", "peak_bf16_tflops", "achieved compute (TFLOP/s)", "dense bf16 peak"),
              ("generate", "achieved_mem_tb_s", "peak_mem_tb_s", "decode memory bandwidth (TB/s)", "memory peak"))
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
                    ax.annotate(f"{dev} {peak_name} {peak:g}", (0.02, peak), xycoords=("axes fraction", "data"),
                                xytext=(0, -10), textcoords="offset points", fontsize=7)
            if not np.isfinite(d[peak_col]).any():
                ax.text(0.02, 0.95, f"device peak unknown ({', '.join(sorted(set(d['device_name'])))})",
                        transform=ax.transAxes, fontsize=7, va="top", color=MISSING_COLOUR)
            _log2_x(ax)
            ax.set_ylim(bottom=0)
            ax.set_xlabel("context length L (tokens)")
            ax.set_ylabel(ylabel)
    _legend(fig, axes)
    fig.tight_layout(rect=(0, 0.02, 1, 0.9))
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
    fig, axes = plt.subplots(2, len(groups), figsize=(4.4 * len(groups), 5.6), squeeze=False,
                             gridspec_kw={"height_ratios": [2.2, 1]}, sharex="col")
    for k, (model, engine) in enumerate(groups):
        top, bottom = axes[0][k], axes[1][k]
        row = f[(f["model"] == model) & (f["engine"] == engine)].iloc[0]
        cells = pc[(pc["model"] == model) & (pc["engine"] == engine) & (pc["phase"] == "prefill")]
        used = cells[cells["usable"]].sort_values("length_tokens")
        c = colour(engine)
        top.set_title(f"{model} / {engine}: prefill")
        _errorline(top, used["length_tokens"], used["energy_per_run_j"], used["energy_per_run_j_ci_low"],
                   used["energy_per_run_j_ci_high"], color=c, marker="o", ls="none", label=f"{engine} measured")
        out = cells[~cells["usable"] & cells["energy_per_run_j"].notna()]
        if len(out):
            top.plot(out["length_tokens"], out["energy_per_run_j"], "x", color=MISSING_COLOUR, ms=8,
                     label="excluded from the fit")
        if row["status"].startswith("not fitted"):
            _missing(top, row["status"] + (f"\n{energy_missing_message(cells)}" if used.empty else ""))
            bottom.axis("off")
            continue
        fit = fit_from_row(row)
        x = np.geomspace(max(used["length_tokens"].min() * 0.8, 1), used["length_tokens"].max() * 1.25, 200)
        y = fit.predict(x)
        band = fit.quantile * fit.predict_se(x)
        top.plot(x, y, color=c, lw=1.2, label="fit a + bL + cL^2")
        top.fill_between(x, y - band, y + band, color=c, alpha=0.2, lw=0, label="95 % band of the fit")
        top.set_yscale("log")
        top.set_ylabel("prefill energy per run (J)")
        top.text(0.02, 0.97, f"a = {row['a_j']:.3g} J\nb = {row['b_j_per_token'] * 1e3:.3g} mJ/token\n"
                 f"c = {row['c_j_per_token2'] * 1e9:.3g} nJ/token^2\nchi2/dof = {row['chi2'] / max(row['dof'], 1):.1f}",
                 transform=top.transAxes, va="top", fontsize=7)
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
            bottom.text(0.02, 0.05, "excluded: " + row["excluded"], transform=bottom.transAxes, fontsize=6,
                        color=MISSING_COLOUR, wrap=True)
    _legend(fig, axes)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
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
