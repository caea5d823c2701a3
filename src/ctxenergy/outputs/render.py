"""The one rendering layer of the report, the write-up and the figures: numbers, tables (HTML, Markdown and plain
text for a terminal), the "why is energy missing" message and the page around them.

Everything a reader sees as text is formatted here once, so that the report, the write-up and the figures say the
same thing in the same words. A number with its interval is ctxenergy.numbers's, which the analysis shares.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ctxenergy.numbers import finite, fmt, fmt_ci

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em}
table{border-collapse:collapse;margin:.6em 0 1em;font-size:.85em}
.tw{overflow-x:auto;margin:.6em 0 1em}.tw table{margin:0}table.wide{font-size:.76em}
table.wide th,table.wide td{padding:.2em .35em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:right;vertical-align:top}
th{background:#f3f3f3}td.t,th.t{text-align:left}td.nw,.ci{white-space:nowrap}.ci{color:#555}
tbody tr:nth-child(even){background:#fafafa}
.warn{background:#fff3f0;border-left:4px solid #b03030;padding:.6em 1em;margin:1em 0}
.note{color:#555;font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#444}
code{background:#f5f5f5;padding:0 .2em}
.confirmed{color:#1a7f37;font-weight:600}.refuted{color:#b03030;font-weight:600}
.untestable{color:#777;font-weight:600}
.toc{font-size:.9em;color:#444}.toc a{color:#2a5db0;text-decoration:none;margin-right:.2em}
.prov{font-size:.8em;color:#555;border-top:1px solid #ddd;border-bottom:1px solid #ddd;padding:.3em 0;margin:.4em 0}
.key{border:2px solid #0072b2;border-radius:6px;padding:.4em 1em .6em;margin:.8em 0;background:#f5f9fc}
.key h2{margin-top:.3em;border:0}.key ul{margin:.3em 0;padding-left:1.2em}.key figure{margin:.4em 0 0}
.chips{display:flex;flex-wrap:wrap;gap:.3em;margin:.4em 0}
.chip{display:inline-block;border-radius:1em;padding:.1em .6em;font-size:.8em;text-decoration:none;border:1px solid}
.chip.confirmed{background:#e6f4ea;border-color:#1a7f37}.chip.refuted{background:#fdecea;border-color:#b03030}
.chip.untestable{background:#f0f0f0;border-color:#888}.chip.mixed{background:#fff6e0;border-color:#b07d00}
details.long{margin:.6em 0 1em}details.long summary{cursor:pointer;font-weight:600}
details.long .tw{max-height:75vh;overflow:auto}details.long thead th{position:sticky;top:0;z-index:1}
table.sortable th{cursor:pointer}table.sortable th[aria-sort=ascending]::after{content:" ▲"}
table.sortable th[aria-sort=descending]::after{content:" ▼"}
figure.hero .static{display:none}
figure.hero .interactive{overflow-x:auto}figure.hero .interactive>div{min-width:600px}
@media print{figure.hero .interactive{display:none}figure.hero .static{display:block}body{max-width:none;margin:0}.tw{overflow:visible}figure,tr{break-inside:avoid}h2,h3{break-after:avoid}
details.long .tw{max-height:none}}
"""  # noqa: E501 (the page's bytes: a committed report regenerates byte-identically)
# Sorting of tables marked sortable: a click on a header sorts by that column, numbers by their value (the first
# number of '36.9 [34.3, 39.4]' or '16,384'), text alphabetically; a second click reverses. No network, no library.
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function(t){
 t.querySelectorAll('thead th').forEach(function(th,i){th.addEventListener('click',function(){
  var asc=th.getAttribute('aria-sort')!=='ascending',b=t.tBodies[0],rows=Array.from(b.rows);
  var key=function(r){var x=r.cells[i]?r.cells[i].textContent.trim():'',
   m=x.replace(/,/g,'').match(/^-?[0-9.]+(e-?[0-9]+)?/);
   return m?[0,parseFloat(m[0])]:[1,x.toLowerCase()];};
  rows.sort(function(p,q){var a=key(p),c=key(q);var d=a[0]-c[0]||(a[1]<c[1]?-1:a[1]>c[1]?1:0);return asc?d:-d;});
  t.querySelectorAll('thead th').forEach(function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',asc?'ascending':'descending');rows.forEach(function(r){b.appendChild(r);});});});});
"""


# ---- numbers ----------------------------------------------------------------------------------------------------


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def ci(row, col: str, digits: int = 3, scale: float = 1.0, missing: str = "–") -> str:
    """A derived table's value with its interval: the columns col, col_ci_low and col_ci_high of a row."""
    return fmt_ci(row.get(col), row.get(f"{col}_ci_low"), row.get(f"{col}_ci_high"), digits, scale, missing)


def tokens(L) -> str:
    return f"{int(L):,}" if finite(L) else "–"


def total_interval(lo, hi, unit: str, digits: int = 3) -> str:
    """A total (statistical and systematic) interval as the tables write it: 'lo–hi', lengths in tokens."""
    if not (finite(lo) and finite(hi)):
        return "–"
    return f"{tokens(lo)}–{tokens(hi)}" if unit == "tokens" else f"{fmt(lo, digits)}–{fmt(hi, digits)}"


def short_tokens(x, _pos=None) -> str:
    """A length as an axis or a label shows it: 1k, 16k, 256."""
    return f"{x / 1024:g}k" if x >= 1024 else f"{x:g}"


def length_range(lengths) -> str:
    lo, hi = min(lengths, default=float("nan")), max(lengths, default=float("nan"))
    return tokens(lo) if lo == hi or not finite(hi) else f"{tokens(lo)}–{tokens(hi)}"


def join_words(items: list[str]) -> str:
    """'a, b and c'; 'none' for no item."""
    items = [i for i in items if i]
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else "none"


def energy_label(quantity: str) -> str:
    """'total' or 'dynamic (above idle)' for an energy column of the derived tables."""
    return "dynamic (above idle)" if quantity.startswith("dynamic") else "total"


def brief(text, n: int = 140, where: str | None = "Validity") -> str:
    """A long reason (an engine's whole error message) cut to its start for a table cell or a figure; the report's
    validity table keeps it whole (`where` names it; None: no pointer)."""
    text = " ".join(str(text).split())
    if len(text) <= n:
        return text
    return text[:n].rsplit(" ", 1)[0] + (f" … (in full under {where})" if where else " …")


def fit_cells(fit, where: str | None = "Validity") -> list[str]:
    """A row of the fits table as the report's and the write-up's fit tables show it, after the model and engine
    (and phase): energy, status, a, b, c with intervals, chi²/dof with the floor and without, the model test, the
    cells left out (`where` names the table with their reasons in full)."""
    d = fit._asdict()
    fitted = not str(fit.status).startswith("not fitted")
    return [
        energy_label(fit.quantity),
        fit.status,
        ci(d, "a_j") if fitted else "–",
        ci(d, "b_j_per_token", scale=1e3) if fitted else "–",
        ci(d, "c_j_per_token2", scale=1e9) if fitted else "–",
        fmt(fit.chi2_per_dof, 3) if fitted and finite(fit.chi2_per_dof) else "–",
        fmt(fit.chi2_per_dof_stat, 3) if fitted and finite(fit.chi2_per_dof_stat) else "–",
        fit.model_note if fitted else "–",
        brief(fit.excluded, where=where) if fit.excluded else "none",
    ]


# ---- why energy is missing --------------------------------------------------------------------------------------

ENERGY_MISSING = "Energy is missing."
NO_COUNTER = (
    "This host has no readable energy counter (a CPU host without RAPL, or no NVML): timings, latency per "
    "token and achieved throughput are real, every energy, power, fit, ratio and threshold is missing."
)


def excluded_reasons(cells: pd.DataFrame) -> pd.Series:
    """How many unusable cells each reason kept out ('no_energy', 'status oom', ...): the first word of
    excluded_reason."""
    return cells.loc[~cells["usable"], "excluded_reason"].str.split(":").str[0].value_counts()


def attention_kernels_summary(cells: pd.DataFrame) -> str:
    """'prefill cudnn_attention; decode cudnn_attention' over cells that recorded the attention kernel torch chose
    (the table's attention_kernels, 'prefill k; decode k' per cell; ' or ' where cells differ, '(not recorded in some
    cells)' where some predate the record); '' where none recorded one (or the engine cannot tell)."""
    if "attention_kernels" not in cells:
        return ""
    by_phase: dict[str, set[str]] = {}
    for text in cells["attention_kernels"].dropna():
        for part in [p for p in str(text).split("; ") if p and text != "not recorded"]:
            phase, _, kernel = part.partition(" ")
            by_phase.setdefault(phase, set()).add(kernel)
    if not by_phase:
        return ""
    phases = sorted(by_phase, key=lambda phase: (phase != "prefill", phase))
    kinds = "; ".join(f"{phase} {' or '.join(sorted(by_phase[phase]))}" for phase in phases)
    unknown = " (not recorded in some cells)" if (cells["attention_kernels"] == "not recorded").any() else ""
    return kinds + unknown


def energy_missing_reason(cells: pd.DataFrame) -> str:
    """The reasons no cell has usable energy, counted: '14 cells no_energy, 1 cells status oom'."""
    return ", ".join(f"{n} cells {r}" for r, n in excluded_reasons(cells).items())


def why_energy_missing(cells: pd.DataFrame) -> str:
    """Why no cell has usable energy, in the one wording of the report, the write-up and the figures: 'No cell has
    usable energy (14 cells no_energy).', then NO_COUNTER where the host has no energy counter at all."""
    why = f"No cell has usable energy ({energy_missing_reason(cells)})."
    return f"{why} {NO_COUNTER}" if no_counter(cells) else why


def no_counter(cells: pd.DataFrame) -> bool:
    """True where energy is missing because the host has no energy counter at all."""
    return "no_energy" in excluded_reasons(cells)


def energy_missing(cells: pd.DataFrame) -> bool:
    return not cells["usable"].any()


def none_usable(cells: pd.DataFrame) -> str:
    """What a summary cell says where a group has no usable cell: 'energy missing' on a host without an energy
    counter, otherwise the statuses that kept the cells out ('none usable: 1 status oom')."""
    if cells.empty:
        return "not measured"
    reasons = excluded_reasons(cells)
    if set(reasons.index) <= {"no_energy"}:
        return "energy missing"
    return "none usable: " + ", ".join(f"{n} {r}" for r, n in reasons.items())


# ---- tables -----------------------------------------------------------------------------------------------------


class Cell(str):
    """A table cell's text with a CSS class of its own (a verdict's colour)."""

    css: str = ""

    def __new__(cls, text, css: str = ""):
        obj = super().__new__(cls, text)
        obj.css = css
        return obj


INTERVAL = re.compile(r"\[[^\[\]<>]*\]")


def keep_together(escaped: str) -> str:
    """Each bracketed interval of an escaped cell in a span that does not break: '36.9 [34.3, 39.4]' wraps, where
    it must, before the bracket and not after the comma."""
    return INTERVAL.sub(lambda m: f'<span class="ci">{m.group(0)}</span>', escaped)


def no_break(text: str) -> bool:
    """A table cell never broken across lines: a name or a number (at most 40 characters, no space)."""
    return bool(text) and len(text) <= 40 and not re.search(r"\s", text)


def text_columns(text_cols: int | Iterable[int]) -> set[int]:
    return set(range(text_cols)) if isinstance(text_cols, int) else set(text_cols)


def html_table(
    header: list[str],
    rows: list[list[str]],
    text_cols: int | Iterable[int] = 1,
    wide: bool = False,
    sortable: bool = False,
) -> str:
    """A table; text columns (the first text_cols, or those indices) are left-aligned, the rest right-aligned
    numbers. A line breaks between a value and its [interval], never inside either, nor inside a name without a
    space (llama-3.1-8b, hf-paged). Cells are escaped here, so callers pass plain strings (or Cell)."""
    text = text_columns(text_cols)

    def cell(tag, i, v):
        v = "" if v is None else v
        classes = ["t"] if i in text else []
        if tag == "td" and no_break(str(v)):
            classes.append("nw")
        classes += [c for c in [getattr(v, "css", "")] if c]
        cls = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{cls}>{keep_together(esc(v))}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    # wide: many columns, a smaller font so that it fits
    classes = " ".join(c for c, on in (("wide", wide), ("sortable", sortable)) if on)
    table = f'<table class="{classes}">' if classes else "<table>"
    return f'<div class="tw">{table}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def md_table(header: list[str], rows: list[list[str]], text_cols: int | Iterable[int] = 1, aligned: bool = True) -> str:
    """A pipe table: text columns (the first text_cols, or those indices) left-aligned (:---), numbers right-aligned
    (---:); not aligned: every column '---', as the viewer aligns it. A missing value (None, NaN) reads '–'."""

    def cell(v) -> str:
        if v is None or (pd.api.types.is_scalar(v) and pd.isna(v)):
            return "–"
        return str(v).replace("|", "\\|").replace("\n", " ")

    text = text_columns(text_cols)
    align = [(":---" if i in text else "---:") if aligned else "---" for i in range(len(header))]
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]], text_cols: int | Iterable[int] = 1) -> str:
    """A table for a terminal: each column as wide as its widest entry, two spaces apart, a rule of dashes under the
    header; text columns (the first text_cols, or those indices) left-aligned, numbers right-aligned."""
    text = text_columns(text_cols)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(row) -> str:
        cells = (str(v).ljust(w) if i in text else str(v).rjust(w) for i, (v, w) in enumerate(zip(row, widths)))
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def csv_data_uri(header: list[str], rows: list[list[str]]) -> str:
    """A table as a CSV file the page carries itself (a data URI: no server, no network)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return "data:text/csv;charset=utf-8;base64," + base64.b64encode(buf.getvalue().encode()).decode("ascii")


def long_table(title: str, csv_name: str, header: list[str], rows: list[list[str]], csv_rows=None, **table_kw) -> str:
    """A long table collapsed under a line that says what it holds, sortable by a click on a header, its header
    sticky while it scrolls, and a link that downloads it as CSV (csv_rows: the full texts, where the page shows
    them cut)."""
    link = f'<a download="{esc(csv_name)}" href="{csv_data_uri(header, csv_rows or rows)}">download as CSV</a>'
    return (
        f'<details class="long"><summary>{esc(title)} ({len(rows)} rows)</summary><p class="note">{link}; '
        "click a column's header to sort.</p>" + html_table(header, rows, sortable=True, **table_kw) + "</details>"
    )


def condensed_reason(text) -> str:
    """A cell's status reason as one line: an engine's whole error message (a CUDA out-of-memory text runs to 400
    characters) cut to its first sentence, at most 90 characters; the CSV download keeps it whole."""
    text = " ".join(str(text).split())
    first = brief(re.split(r"(?<=[.;])\s", text, maxsplit=1)[0], 90, where=None)
    return first + " …)" * (first.count("(") - first.count(")")) if first != text else first


def provenance_block(facts: dict[str, str], provenance_href: str | None = "../provenance.md") -> str:
    """One line on every page: the data, the devices, ctxenergy's version and commit, the date of that commit."""
    link = f' · <a href="{esc(provenance_href)}">provenance (boards, versions, commands)</a>' if provenance_href else ""
    return (
        f'<div class="prov">{esc(facts["cells"])} on {esc(facts["devices"])} · ctxenergy {esc(facts["version"])}, '
        f"commit {esc(facts['commit'])} ({esc(facts['date'])}){link}</div>"
    )


# ---- the page ---------------------------------------------------------------------------------------------------


def png_data_uri(path: str | Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def page(title: str, body: str, extra_css: str = "") -> str:
    """The page around `body`; `extra_css`: rules of one kind of page only, after the shared ones."""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}{extra_css}</style></head><body>\n{body}\n"
        f"<script>{SORT_JS}</script></body></html>\n"
    )


def verdict_class(verdict: str) -> str:
    from ctxenergy.analysis.claims import IN_KIND

    if verdict.startswith("mixed"):
        return "mixed"
    return {"confirmed": "confirmed", IN_KIND: "confirmed", "refuted": "refuted"}.get(verdict, "untestable")
