"""The key derived tables as small self-contained HTML pages: the paper's claims with their verdicts and intervals,
Table 1, the thresholds (L* and others) and the cost model. The Snakemake report shows them as they are, where it
offers a Parquet table only for download.

`ctxenergy tables results/analysis/*.parquet --out results/tables/claims.html results/tables/table1.html ...`

Each page is one derived table (catalog.TABLE_PAGES) rendered by ctxenergy.outputs.render, with the report's and the
write-up's own rows where they have that table; its columns are described in workflow/schemas/derived.schema.yaml.
Like the report's sections, the pages show the rows measured as the paper measured (batch 1, default settings).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ctxenergy.analysis.cells import serial
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.catalog import TABLE_PAGE_TITLES, TABLE_PAGES, read_tables
from ctxenergy.outputs.findings import claim_verdicts
from ctxenergy.outputs.render import (
    Cell,
    energy_label,
    esc,
    finite,
    fmt,
    fmt_ci,
    html_table,
    join_words,
    length_range,
    page,
    tokens,
    total_interval,
    verdict_class,
)

SCHEMA = "workflow/schemas/derived.schema.yaml"


def _interval(v, lo, hi, unit: str) -> str:
    """A claim's value with its statistical interval, lengths in tokens as the tables write them."""
    if unit == "tokens" and finite(v):
        return f"{tokens(v)} [{tokens(lo)}, {tokens(hi)}]" if finite(lo) and finite(hi) else tokens(v)
    return fmt_ci(v, lo, hi)


def claims_body(cl: pd.DataFrame) -> str:
    """Each claim with its verdict over all subjects, then one row per subject: the value that decides it with its
    statistical and total 95 % intervals, the threshold and the verdict."""
    if cl.empty:
        return "<p>No claims: the table is empty.</p>"
    out = (
        '<p class="note">Each verdict is decided against the total interval (the statistical one and the systematic '
        'band in quadrature); one that flips inside it is "not decidable within uncertainty".</p>'
    )
    header = ["subject", "metric", "value [95 % CI]", "total interval", "unit", "threshold", "verdict", "deciding"]
    for cid, claim, verdict in claim_verdicts(cl):
        rows = [
            [
                r.subject or "–",
                r.metric or "–",
                _interval(r.value, r.ci_low, r.ci_high, r.unit),
                total_interval(r.total_low, r.total_high, r.unit),
                r.unit or "–",
                r.threshold or "–",
                Cell(r.verdict, verdict_class(r.verdict)),
                r.deciding or "–",
            ]
            for r in cl[cl["claim_id"] == cid].itertuples()
        ]
        out += (
            f'<h2>({cid}) {esc(claim)} <span class="chip {verdict_class(verdict)}">{esc(verdict)}</span></h2>'
            + html_table(header, rows, text_cols=(0, 1, 4, 5, 6, 7), wide=True)
        )
    return out


def table1_body(t1: pd.DataFrame) -> str:
    from ctxenergy.outputs.paper import TABLE1_HEADER, TABLE1_TEXT_COLS, table1_note, table1_rows

    if t1.empty:
        return "<p>No rows: the table is empty.</p>"
    return html_table(TABLE1_HEADER, table1_rows(t1), text_cols=TABLE1_TEXT_COLS, wide=True) + (
        f'<p class="note">{esc(table1_note(t1))}</p>'
    )


def thresholds_body(th: pd.DataFrame) -> str:
    from ctxenergy.outputs.report import THRESHOLDS_NOTE, thresholds_table

    if th.empty:
        return "<p>No thresholds: no usable cells.</p>"
    return f'<p class="note">{esc(THRESHOLDS_NOTE)}</p>' + thresholds_table(th)


def _systematic(sys_rel) -> str:
    return f"± {fmt(sys_rel * 100, 2)} %" if finite(sys_rel) else "–"


def cost_model_body(cm: pd.DataFrame) -> str:
    """The prefill fits E(L) = a + bL + cL² and the energy per output token at each measured L, per model, engine
    and energy (total, or above idle)."""
    if cm.empty:
        return "<p>No cost model: no usable cells.</p>"
    devices = join_words(sorted({d for d in cm["device_name"] if d})) or "no device"
    out = (
        f'<p class="note">E(N, G) = E_prefill(N) + (G − 1) E_out(L_eff), from cells measured on {esc(devices)} '
        "(docs/cost-model.md; <code>ctxenergy estimate</code> computes it with its intervals). Also written as "
        "cost_model.csv and cost_model.json beside cost_model.parquet.</p>"
    )
    prefill = cm[cm["term"] == "prefill"]
    rows = [
        [
            r.model,
            r.engine,
            energy_label(r.quantity),
            length_range([r.length_min_tokens, r.length_max_tokens]),
            fmt(r.a_j),
            fmt(r.b_j_per_token, scale=1e3),
            fmt(r.c_j_per_token2, scale=1e9),
            fmt(getattr(r, "chi2_per_dof", None)),
            _systematic(r.sys_rel),
            r.note or "–",
        ]
        for r in prefill.itertuples()
    ]
    out += "<h2>Prefill: E(L) = a + bL + cL²</h2>" + html_table(
        [
            "model",
            "engine",
            "energy",
            "measured L (tokens)",
            "a (J)",
            "b (mJ/token)",
            "c (nJ/token²)",
            "chi²/dof",
            "systematic (95 %)",
            "note",
        ],
        rows,
        text_cols=(0, 1, 2, 9),
    )
    output = cm[cm["term"] == "output_token"]
    rows = [
        [
            r.model,
            r.engine,
            energy_label(r.quantity),
            tokens(r.length_tokens),
            fmt_ci(r.e_out_j, r.e_out_j_ci_low, r.e_out_j_ci_high),
            tokens(r.output_tokens_measured),
            _systematic(r.sys_rel),
            r.note or "–",
        ]
        for r in output.itertuples()
    ]
    out += "<h2>Output tokens: E_out at each measured L</h2>" + html_table(
        ["model", "engine", "energy", "L", "E_out (J/token) [95 % CI]", "G measured", "systematic (95 %)", "note"],
        rows,
        text_cols=(0, 1, 2, 7),
        sortable=True,
    )
    return out


BODIES: dict[str, Callable[[pd.DataFrame], str]] = {
    "claims": claims_body,
    "table1": table1_body,
    "thresholds": thresholds_body,
    "cost_model": cost_model_body,
}


def table_page(name: str, table: pd.DataFrame) -> str:
    """One derived table as a self-contained page: its title, where its columns are described, the table."""
    title = TABLE_PAGE_TITLES[name]
    source = (
        f'<p class="note">From the derived table {esc(name)}.parquet; its columns are described in '
        f"<code>{SCHEMA}</code>.</p>"
    )
    return page(title, f"<h1>{esc(title)}</h1>" + source + BODIES[name](serial(table)))


def write_table_pages(tables: dict[str, pd.DataFrame], out_paths) -> list[Path]:
    from ctxenergy.tables import write_text

    written = []
    for path in map(Path, out_paths):
        name = path.name.removesuffix(".html")
        if name not in BODIES or path.suffix != ".html":
            known = ", ".join(f"{t.name}.html" for t in TABLE_PAGES)
            raise CtxEnergyError(f"'{path}': unknown table page (known: {known})")
        if name not in tables:
            raise CtxEnergyError(f"'{path}' needs the derived table {name}.parquet (ctxenergy analyze)")
        written.append(write_text(table_page(name, tables[name]), path))
    return written


def main(args) -> int:
    written = write_table_pages(read_tables(args.tables), args.out)
    print(f"{len(written)} table pages written")
    return 0
