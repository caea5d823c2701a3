"""The report: one self-contained HTML page (figures embedded as base64) from the derived tables and figure files.

`ctxenergy report --tables results/analysis/*.parquet --figures results/figures/*.png --out results/report/report.html`

It opens with a summary, the hardware and versions, and the validity of every cell; cells that could not be used
(no energy on a CPU host, out of memory, beyond the model's context, faster than the device allows) stay in the
tables with their status and are named wherever they were left out. Numbers, tables and the page come from
ctxenergy.outputs.render; this module holds only the report's sections.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd

from ctxenergy.analysis.cells import serial
from ctxenergy.analysis.scaling import PLATEAU_FRACTION, crossover_row, threshold_row
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.catalog import FIGURE_TITLES, SERVING_FIGURE_NAMES, read_tables
from ctxenergy.outputs.findings import CLAIM_FIGURES, HERO_FIGURE, claim_verdicts, key_findings, provenance_facts
from ctxenergy.outputs.render import (
    ENERGY_MISSING,
    Cell,
    attention_kernels_summary,
    brief,
    ci,
    condensed_reason,
    energy_missing,
    esc,
    finite,
    fit_cells,
    fmt,
    fmt_ci,
    html_table,
    keep_together,
    length_range,
    long_table,
    none_usable,
    page,
    png_data_uri,
    provenance_block,
    tokens,
    total_interval,
    verdict_class,
    why_energy_missing,
)
from ctxenergy.outputs.serving import has_rows as serving_has_rows
from ctxenergy.outputs.serving import section_html as serving_section_html
from ctxenergy.paths import PAPER
from ctxenergy.tables import write_text

NEEDED = ("per_cell", "slopes", "fits", "thresholds", "io_ratio", "engine_ratios", "claims")


# ---- sections ---------------------------------------------------------------------------------------------------


def _groups(pc: pd.DataFrame) -> list[tuple[str, str]]:
    from ctxenergy.analysis.cells import engine_rank

    keys = {(m, e) for m, e in zip(pc["model"], pc["engine"])}
    return sorted(keys, key=lambda k: (k[0], engine_rank(k[1])))


def _th_text(r: pd.Series | None) -> str:
    if r is None:
        return "–"
    if not finite(r["value"]):
        return "undefined" if r["threshold"] in ("efficiency_fit", "crossover") else "not reached"
    if finite(r["ci_low"]):
        return f"{tokens(r['value'])} [{tokens(r['ci_low'])}, {tokens(r['ci_high'])}]"
    return tokens(r["value"])


def summary_section(t: dict) -> str:
    pc, th, io = t["per_cell"], t["thresholds"], t["io_ratio"]

    def at(r, col: str, scale: float = 1.0, why: str = "energy missing") -> str:
        if r is None:
            return why
        return f"{fmt_ci(r[col], r[f'{col}_ci_low'], r[f'{col}_ci_high'], scale=scale)} at {tokens(r['length_tokens'])}"

    rows = []
    for model, engine in _groups(pc):
        g = pc[(pc["model"] == model) & (pc["engine"] == engine)]
        pre = g[(g["phase"] == "prefill") & g["usable"]].sort_values("length_tokens")
        r_io = io[(io["model"] == model) & (io["engine"] == engine) & io["usable"]].sort_values("length_tokens")
        first, last = (pre.iloc[0], pre.iloc[-1]) if len(pre) else (None, None)
        why = none_usable(g[g["phase"] == "prefill"])
        if len(r_io) > 1:
            ratios = f"{at(r_io.iloc[0], 'e_ratio')}; {at(r_io.iloc[-1], 'e_ratio')}"
        elif len(r_io):
            ratios = f"{at(r_io.iloc[0], 'e_ratio')} (one L only)"
        else:
            ratios = "no usable prefill and generate at one L" if g["usable"].any() else none_usable(g)
        rows.append(
            [
                model,
                engine,
                f"{int(g['usable'].sum())} / {len(g)}",
                length_range(g["length_tokens"]),
                at(first, "energy_per_token_j", 1e3, why),
                at(last, "energy_per_token_j", 1e3, why),
                _th_text(threshold_row(th, model, engine, "prefill", "efficiency_measured", "energy_per_run_j")),
                _th_text(crossover_row(th, model, engine)),
                _th_text(threshold_row(th, model, engine, "prefill", "power_plateau")),
                ratios,
            ]
        )
    header = [
        "model",
        "engine",
        "usable cells",
        "L (tokens)",
        "prefill mJ/token (total), smallest L",
        "prefill mJ/token (total), largest L",
        "lowest J/token at L",
        "crossover L* = b/c",
        "power plateau from L",
        "E_out/E_in (x, total energy), smallest and largest L",
    ]
    out = "<h2>Summary</h2>" + html_table(header, rows, text_cols=2)
    out += (
        '<p class="note">Values are medians over windows with 95 % intervals in brackets. J/token of a prefill '
        "cell is per input token. Thresholds come with the interval of seeded draws of every cell (grid L) or of "
        "the fit's coefficients (L*).</p>"
    )
    return out


def missing_banner(pc: pd.DataFrame) -> str:
    if pc.empty:
        return '<div class="warn">The table of cells is empty: nothing was measured.</div>'
    if not energy_missing(pc):
        return ""
    return f'<div class="warn"><b>{ENERGY_MISSING}</b> {esc(why_energy_missing(pc))}</div>'


def hardware_section(pc: pd.DataFrame) -> str:
    cols = [
        "device_name",
        "device_uuid",
        "driver_version",
        "torch_version",
        "engine",
        "engine_version",
        "meter_method",
        "host_cpu",
    ]
    # A column only where some cell recorded the kernel that ran (cells measured before the record read "not recorded").
    recorded = pc["attention_kernels"] if "attention_kernels" in pc else pd.Series(dtype=str)
    kernels = bool((recorded != "not recorded").any())
    pc = pc.assign(**{c: "" for c in cols if c not in pc})
    rows = []
    for key, g in pc.groupby(cols, sort=False, dropna=False):
        rows.append(
            [
                *(k or "–" for k in key),
                *([attention_kernels_summary(g) or "–"] if kernels else []),
                fmt(g["power_limit_w"].max(), 4),
                fmt(g["idle_power_w"].median(), 4),
                fmt(g["peak_bf16_tflops"].max(), 4),
                fmt(g["peak_mem_tb_s"].max(), 3),
                str(len(g)),
            ]
        )
    header = [
        "device",
        "board (UUID)",
        "driver",
        "torch",
        "engine",
        "engine version",
        "energy method",
        "host CPU",
        *(["attention kernel"] if kernels else []),
        "power limit (W)",
        "idle power, median (W)",
        "peak bf16 (TFLOP/s)",
        "peak memory (TB/s)",
        "cells",
    ]
    unrecorded = (
        "<p>Attention kernel: not recorded (these cells were measured before cells recorded the kernel that ran; "
        "docs/measurement.md says what is known).</p>"
        if len(recorded) and not kernels
        else ""
    )
    return "<h2>Hardware and versions</h2>" + html_table(header, rows, text_cols=9 if kernels else 8) + unrecorded


def validity_section(pc: pd.DataFrame) -> str:
    flagged = pc[(pc["status"] != "ok") | (pc["flags"] != "") | ~pc["usable"]]
    counts = pc["status"].value_counts()
    out = "<h2>Validity</h2><p>Status of the cells: " + esc(", ".join(f"{n} {s}" for s, n in counts.items())) + ". "
    if flagged.empty:
        return out + "No cell carries a flag: every cell enters the fits.</p>"
    out += (
        f"{len(flagged)} cell(s) carry a status other than ok or a flag; those not usable are left out of "
        "every fit, ratio and threshold, and stay in the tables below with their status.</p>"
    )
    full, rows = [], []
    for r in flagged.itertuples():
        why = r.excluded_reason or r.status_reason or "–"
        # what the board held explains an out-of-memory cell: said beside its reason where the cell recorded it
        memory = peak_memory(r._asdict()) if r.status == "oom" else ""
        memory = f" (peak memory, GiB: {memory})" if memory else ""
        full.append([r.cell_id, r.status, r.flags or "–", "yes" if r.usable else "no", why + memory])
        rows.append([*full[-1][:4], condensed_reason(why) + memory])
    return out + long_table(
        "Cells with a status or a flag, and why",
        "validity.csv",
        ["cell", "status", "flags", "usable", "why"],
        rows,
        csv_rows=full,
        text_cols=5,
    )


def figure_html(name: str, path: Path) -> str:
    title = FIGURE_TITLES.get(name, name)
    return (
        f'<figure id="fig-{esc(name)}"><img alt="{esc(title)}" src="{png_data_uri(path)}">'
        f"<figcaption>{esc(title)}</figcaption></figure>"
    )


def figures_section(figures: dict[str, Path], shown: set[str] = frozenset()) -> str:
    """The figures not already shown with the key results or a claim."""
    out = "<h2>Figures</h2>"
    if not figures:
        return out + "<p>No figure files were given.</p>"
    rest = [name for name in figures if name not in shown]
    if shown:
        out += (
            '<p class="note">Shown above: '
            + ", ".join(f'<a href="#fig-{esc(n)}">{esc(FIGURE_TITLES.get(n, n))}</a>' for n in figures if n in shown)
            + ".</p>"
        )
    return out + "".join(figure_html(name, figures[name]) for name in rest)


def interactive_figure_html(t: dict, name: str, figures: dict[str, Path], css_class: str = "plotly") -> str:
    """A figure with an interactive version: that one (hover for values) where it has data to show, with its static
    PNG for print; the static PNG alone where it has none (it says in words what is missing). plotly.js is not in
    it: the page inlines it once, before the first interactive figure (with_plotly_js)."""
    from ctxenergy.outputs import interactive

    if not interactive.has_data(t, name):
        return figure_html(name, figures[name]) if name in figures else ""
    title = FIGURE_TITLES.get(name, name)
    static = f'<img class="static" alt="{esc(title)}" src="{png_data_uri(figures[name])}">' if name in figures else ""
    return (
        f'<figure class="{css_class}" id="fig-{esc(name)}"><div class="interactive">'
        f"{interactive.figure_div(interactive.FIGURES[name](t), 'plot-' + name)}</div>{static}"
        f'<figcaption>{esc(title)}. <span class="note">{esc(interactive.NOTES[name])}</span></figcaption></figure>'
    )


INTERACTIVE_DIV = '<div class="interactive">'


def with_plotly_js(body: str) -> str:
    """plotly.js inlined once, just before the first interactive figure draws itself; nothing where none does."""
    from ctxenergy.outputs import interactive

    if INTERACTIVE_DIV not in body:
        return body
    return body.replace(INTERACTIVE_DIV, interactive.plotly_js() + INTERACTIVE_DIV, 1)


def key_results(t: dict, figures: dict[str, Path]) -> str:
    """The box a reader sees first: what was found, with intervals, each claim's verdict as a chip, and the hero
    figure."""
    found = key_findings(t)
    items = (
        "".join(f"<li>{keep_together(esc(f))}</li>" for f in found)
        or "<li>No finding: no cell has usable energy (see Validity).</li>"
    )
    chips = "".join(
        f'<a class="chip {verdict_class(v)}" href="#claim-{cid}" title="{esc(claim)}">({cid}) {esc(v)}</a>'
        for cid, claim, v in claim_verdicts(t["claims"])
    )
    hero = interactive_figure_html(t, HERO_FIGURE, figures, css_class="hero")
    return (
        f'<div class="key" id="key-results"><h2>Key results</h2><ul>{items}</ul>'
        f'<div class="chips"><span class="note">The paper\'s claims:</span>{chips}</div>{hero}</div>'
    )


MEMORY_NOTE = (
    "Peak memory (GiB), where the cells recorded it: torch, the allocator's peak in the measuring "
    "process; board, the most memory in use on the GPU (NVML, every process, sampled) of its total."
)


def peak_memory(d: dict) -> str:
    """A cell's peak memory in GiB as one short text ('torch 71.2 · board 79.1 of 79.6'); empty where the cell did
    not record it (cells before schema_version 2, a CPU study)."""
    parts = []
    if finite(d.get("torch_peak_allocated_gib")):
        parts.append(f"torch {fmt(d['torch_peak_allocated_gib'], 3)}")
    if finite(d.get("nvml_peak_memory_used_gib")):
        total = d.get("memory_total_gib")
        parts.append(
            f"board {fmt(d['nvml_peak_memory_used_gib'], 3)}" + (f" of {fmt(total, 3)}" if finite(total) else "")
        )
    return " · ".join(parts)


def cells_section(pc: pd.DataFrame) -> str:
    with_memory = any(peak_memory(r) for r in pc.to_dict("records"))  # only where some cell recorded it
    rows = []
    for r in pc.itertuples():
        d = r._asdict()
        rows.append(
            [
                r.model,
                r.engine,
                r.phase,
                tokens(r.length_tokens),
                r.status,
                "yes" if r.usable else "no",
                ci(d, "energy_per_token_j", scale=1e3),
                ci(d, "dynamic_energy_per_token_j", scale=1e3),
                ci(d, "latency_per_token_ms"),
                ci(d, "mean_power_w"),
                fmt(r.power_cap_fraction, 2),
                ci(d, "achieved_tflops"),
                fmt(r.tflops_share_of_peak, 2),
                ci(d, "achieved_mem_tb_s"),
                fmt(r.mem_share_of_peak, 2),
                fmt(r.n_windows, 2),
                *([peak_memory(d) or "–"] if with_memory else []),
            ]
        )
    header = [
        "model",
        "engine",
        "phase",
        "L",
        "status",
        "usable",
        "mJ/token (total)",
        "mJ/token (dynamic: above idle)",
        "ms/token",
        "mean power (W)",
        "time at cap",
        "TFLOP/s",
        "of peak",
        "decode TB/s",
        "of peak",
        "windows",
        *(["peak memory (GiB)"] if with_memory else []),
    ]
    return (
        '<h2>Cells</h2><p class="note">Tokens per run: L for prefill, L + G for generate. TFLOP/s: the prefill\'s '
        "FLOP (ctxenergy.flops) over the time to first token. Decode TB/s: weights + KV cache read by the G - 1 "
        "decode steps over the decode time."
        + (f" {MEMORY_NOTE}" if with_memory else "")
        + "</p>"
        + long_table(
            "Every cell with its metrics",
            "cells.csv",
            header,
            rows,
            text_cols=(0, 1, 2, 4, 5, *((16,) if with_memory else ())),
            wide=True,
        )
    )


def board_offset(sy: pd.DataFrame | None) -> str:
    """What separates two boards' cells, from the derived table systematics (its one source): one text for every
    note."""
    if sy is not None and "board_spread" in set(sy["systematic"]):
        r = sy.set_index("systematic").loc["board_spread"]
        if finite(r["relative_half_width"]):
            return (
                f"up to {r['relative_half_width']:.1%} between {r['n_boards']} boards of the reference data on "
                "the same GPU-bound cells, derived table systematics"
            )
    return "not measured here; docs/measurement.md, between boards"


def on_two_boards(table: pd.DataFrame) -> pd.Series:
    """Rows whose two cells ran on two boards (`same_board` false; unknown and one board: False)."""
    if "same_board" not in table:
        return pd.Series(False, index=table.index)
    return table["same_board"].eq(False).fillna(False).astype(bool)


def slopes_section(sl: pd.DataFrame, sy: pd.DataFrame | None = None) -> str:
    d = sl[sl["quantity"] == "energy_per_run_j"]
    if d.empty:
        return "<h2>dE/dL</h2><p>No pair of neighbouring usable cells.</p>"
    across = on_two_boards(d)
    rows = [
        [
            r.model,
            r.engine,
            r.phase,
            f"{tokens(r.length_low)}–{tokens(r.length_high)}" + (" †" if x else ""),
            fmt_ci(r.de_dl_j_per_token, r.de_dl_j_per_token_ci_low, r.de_dl_j_per_token_ci_high, scale=1e3),
        ]
        for r, x in zip(d.itertuples(), across)
    ]  # total energy
    note = (
        f"<p>† {int(across.sum())} of {len(d)} pairs ran on two boards: their interval holds each cell's own "
        f"spread, not the offset between boards ({board_offset(sy)}).</p>"
        if across.any()
        else ""
    )
    return (
        "<h2>dE/dL between neighbouring L</h2>"
        + html_table(["model", "engine", "phase", "L", "dE/dL (mJ/token, total energy)"], rows, text_cols=4)
        + note
    )


def fits_section(ft: pd.DataFrame) -> str:
    if ft.empty:
        return "<h2>Fits</h2><p>No group of cells to fit.</p>"
    rows = []
    for r in ft.itertuples():
        rows.append([r.model, r.engine, r.phase, *fit_cells(r)])
    header = [
        "model",
        "engine",
        "phase",
        "energy",
        "status",
        "a (J)",
        "b (mJ/token)",
        "c (nJ/token²)",
        "chi²/dof (with floor)",
        "chi²/dof (windows only)",
        "model test",
        "cells left out",
    ]
    floor = ft["error_floor_rel"].dropna()
    floor_txt = f"{floor.iloc[0]:.2%}" if len(floor) else "none"
    return (
        '<h2>Fits E(L) = a + bL + cL²</h2><p class="note">Weighted least squares; each cell\'s error is its '
        f"standard error and a relative error floor of {floor_txt} (the board spread / 1.96, see Systematics) in "
        "quadrature. Brackets: statistical 95 % intervals; the derived table holds the total ones. Where chi²/dof "
        "> 1 the total intervals are widened by it. Cells that are not usable are left out and named in the last "
        "column.</p>" + html_table(header, rows, text_cols=(0, 1, 2, 3, 4, 10, 11))
    )


def systematics_section(sy: pd.DataFrame | None) -> str:
    if sy is None or sy.empty:
        return ""
    rows = [
        [
            r.systematic,
            fmt(r.relative_half_width * 100, 3) + " %" if finite(r.relative_half_width) else "not measured",
            str(r.n_pairs),
            str(r.n_boards),
            r.applies_to,
            r.method,
        ]
        for r in sy.itertuples()
    ]
    return (
        '<h2>Systematics</h2><p class="note">The second level of every interval: measured from the committed '
        "cells measured on two boards (derived table board_pairs). Totals add it to the statistical interval in "
        "quadrature.</p>"
        + html_table(
            ["systematic", "95 % half-width", "pairs", "boards", "applies to", "measured as"], rows, text_cols=(0, 4, 5)
        )
    )


THRESHOLDS_NOTE = (
    f"Power plateau: the smallest L from which mean power stays within {PLATEAU_FRACTION:.0%} of its maximum. "
    "energy_per_run_j is total energy, dynamic_energy_per_run_j energy above idle. Brackets: statistical 95 % "
    "intervals; total: with the systematic band."
)


def thresholds_table(th: pd.DataFrame) -> str:
    """The thresholds (L*, the rise of dE/dL, the power plateau, ...) with their intervals: the report's table and
    the Snakemake report's page of it."""
    rows = []
    for r in th.itertuples():
        tok = r.unit == "tokens"
        value = _th_text(pd.Series(r._asdict())) if tok else fmt_ci(r.value, r.ci_low, r.ci_high, 2)
        total = total_interval(r.total_low, r.total_high, r.unit, 2)
        rows.append(
            [r.model, r.engine, r.phase, r.threshold, r.quantity, value, total, r.unit, r.method, r.note or "–"]
        )
    return html_table(
        ["model", "engine", "phase", "threshold", "on", "value", "total interval", "unit", "method", "note"],
        rows,
        text_cols=(0, 1, 2, 3, 4, 7, 8, 9),
    )


def thresholds_section(th: pd.DataFrame) -> str:
    if th.empty:
        return "<h2>Thresholds</h2><p>No thresholds: no usable cells.</p>"
    return f'<h2>Thresholds</h2><p class="note">{THRESHOLDS_NOTE}</p>' + thresholds_table(th)


def io_section(io: pd.DataFrame, sy: pd.DataFrame | None = None) -> str:
    out = (
        "<h2>Input vs output tokens</h2><p>E_in = E_prefill / L. E_out = (E_generate − E_prefill) / (G − 1): the "
        "generate run's first output token is produced by its prefill, so the difference between the two cells "
        "holds G − 1 decode steps, and dividing by G (as the paper does, shown beside it) understates the cost of "
        "a decode step by 1/G.</p>"
    )
    if io.empty:
        return out + "<p>No cells.</p>"
    rows = []
    two_boards = on_two_boards(io)
    for r, across in zip(io.itertuples(), two_boards):
        d = r._asdict()
        if not r.usable:
            rows.append([r.model, r.engine, tokens(r.length_tokens), *["–"] * 6, brief(r.note)])
            continue
        rows.append(
            [
                r.model,
                r.engine,
                tokens(r.length_tokens),
                ci(d, "e_in_j", scale=1e3),
                ci(d, "e_out_j"),
                ci(d, "e_out_per_g_j"),
                ci(d, "e_ratio"),
                ci(d, "e_ratio_per_g"),
                ci(d, "dyn_e_ratio"),
                "† prefill and generate on two boards" if across else "–",
            ]
        )
    header = [
        "model",
        "engine",
        "L",
        "E_in (mJ/token, total)",
        "E_out (J/token, total, G−1)",
        "E_out (J/token, total, per G)",
        "E_out/E_in (total, G−1)",
        "E_out/E_in (total, per G)",
        "E_out/E_in (dynamic: above idle)",
        "note",
    ]
    note = (
        "<p>† E_out is the difference of two cells measured on two boards: it also carries their offset "
        f"({board_offset(sy)}) times E_prefill / (G − 1), which the "
        "interval does not hold; small where E_prefill is a small part of E_generate (short L).</p>"
        if (two_boards & io["usable"].astype(bool)).any()
        else ""
    )
    return out + html_table(header, rows, text_cols=(0, 1, 9)) + note


def engines_section(er: pd.DataFrame, pc: pd.DataFrame) -> str:
    out = "<h2>Engines at equal L</h2>"
    if er.empty:
        n = pc.loc[pc["usable"], "engine"].nunique()
        return out + (
            f"<p>No ratio: {n} engine(s) with usable cells; a ratio needs two at the same model, phase and L.</p>"
        )
    rows = [
        [
            r.model,
            r.phase,
            tokens(r.length_tokens),
            f"{r.engine_a} / {r.engine_b}",
            fmt_ci(r.energy_ratio, r.energy_ratio_ci_low, r.energy_ratio_ci_high),
            fmt_ci(r.dynamic_energy_ratio, r.dynamic_energy_ratio_ci_low, r.dynamic_energy_ratio_ci_high),
            fmt_ci(r.latency_ratio, r.latency_ratio_ci_low, r.latency_ratio_ci_high),
        ]
        for r in er.itertuples()
    ]
    return out + html_table(
        [
            "model",
            "phase",
            "L",
            "engines",
            "energy ratio (x, total)",
            "energy ratio (x, dynamic: above idle)",
            "latency ratio (x)",
        ],
        rows,
        text_cols=4,
    )


def claims_section(t: dict, figures: dict[str, Path]) -> tuple[str, set[str]]:
    """Each claim with its verdict chip, its subjects' verdicts and the numbers that decide them, and the one figure
    that shows it (a figure once on the page: a later claim on the same figure links to it). Returns the section
    and the figures it showed."""
    out = (
        '<h2>The paper\'s claims</h2><p class="note">Each verdict is decided against the total interval (the '
        'statistical one and the systematic band in quadrature); one that flips inside it is "not decidable". '
        "The full comparison, with the paper's Table 1, is in the reproduction write-up "
        f"({PAPER}).</p>"
    )
    cl = t["claims"]
    shown: set[str] = set()
    for cid, claim, verdict in claim_verdicts(cl):
        rows = [
            [
                r.subject or "–",
                r.metric or "–",
                r.threshold or "–",
                Cell(r.verdict, verdict_class(r.verdict)),
                r.deciding,
            ]
            for r in cl[cl["claim_id"] == cid].itertuples()
        ]
        out += (
            f'<h3 id="claim-{cid}">({cid}) {esc(claim)} <span class="chip {verdict_class(verdict)}">'
            f"{esc(verdict)}</span></h3>"
            + html_table(
                ["subject", "metric", "threshold", "verdict", "deciding numbers"], rows, text_cols=(0, 1, 2, 3, 4)
            )
        )
        name = CLAIM_FIGURES.get(cid)
        if name in figures and name not in shown:
            out += interactive_figure_html(t, name, figures)
            shown.add(name)
        elif name in figures:
            out += f'<p class="note">Figure: <a href="#fig-{esc(name)}">{esc(FIGURE_TITLES.get(name, name))}</a>.</p>'
    return out, shown


def serving_section(sv: pd.DataFrame | None, figures: dict[str, Path]) -> tuple[str, set[str]]:
    """The Serving section with its figures, and the figures it showed; nothing where no cell is batched."""
    if not serving_has_rows(sv):
        return "", set()
    shown = {n for n in SERVING_FIGURE_NAMES if n in figures}
    return serving_section_html(
        sv, "".join(figure_html(n, figures[n]) for n in SERVING_FIGURE_NAMES if n in figures)
    ), shown


def build_report(t: dict, figures: dict[str, Path]) -> str:
    serving, serving_shown = serving_section(t.get("serving"), figures)
    # every other section is about one request at a time with the engines' defaults, as the paper measured
    t = {k: serial(v) for k, v in t.items()}
    pc = t["per_cell"]
    facts = provenance_facts(pc)
    body = (
        f"<h1>ctxenergy: energy of input and output tokens vs context length, on {esc(facts['devices'])}</h1>"
        + provenance_block(facts)
        + missing_banner(pc)
        + key_results(t, figures)
        + "<!--contents-->"
    )
    claims, shown = claims_section(t, figures)
    body += claims + summary_section(t) + serving + hardware_section(pc) + validity_section(pc)
    sy = t.get("systematics")
    body += (
        figures_section(figures, shown | serving_shown | {HERO_FIGURE})
        + cells_section(pc)
        + io_section(t["io_ratio"], sy)
    )
    body += slopes_section(t["slopes"], sy)
    body += systematics_section(t.get("systematics")) + fits_section(t["fits"])
    body += thresholds_section(t["thresholds"]) + engines_section(t["engine_ratios"], pc)
    from ctxenergy.outputs import interactive

    return page(
        f"ctxenergy report: {facts['devices']}, {facts['date']}",
        with_plotly_js(with_contents(body)),
        extra_css=interactive.CSS,
    )


def _slug(title: str) -> str:
    return "sec-" + re.sub(r"[^a-z0-9]+", "-", html.unescape(title).lower()).strip("-")


def with_contents(body: str) -> str:
    """Anchors on the sections and a line of links to them under the title (in-page links only)."""
    titles = re.findall(r"<h2>(.*?)</h2>", body)
    if not titles:
        return body
    body = re.sub(r"<h2>(.*?)</h2>", lambda m: f'<a id="{_slug(m.group(1))}"></a>{m.group(0)}', body)
    toc = '<p class="toc">Contents: ' + " · ".join(f'<a href="#{_slug(t)}">{t}</a>' for t in titles) + "</p>"
    return body.replace("<!--contents-->", toc, 1)


def read_inputs(table_paths, figure_paths) -> tuple[dict, dict]:
    tables = read_tables(table_paths)
    missing = [n for n in NEEDED if n not in tables]
    if missing:
        raise CtxEnergyError(f"the report needs the derived tables {', '.join(missing)} (ctxenergy analyze)")
    given = {Path(p).name.rsplit(".", 1)[0]: Path(p) for p in figure_paths if str(p).endswith(".png")}
    order = list(FIGURE_TITLES) + sorted(set(given) - set(FIGURE_TITLES))  # the paper's three first
    figures = {name: given[name] for name in order if name in given}
    return tables, figures


def main(args) -> int:
    tables, figures = read_inputs(args.tables, args.figures)
    write_text(build_report(tables, figures), args.out)
    print(f"report -> {args.out} ({len(figures)} figures embedded)")
    return 0
