"""The reproduction write-up: paper/template.md filled from the derived tables, as Markdown and as one
self-contained HTML page.

`ctxenergy paper --tables results/analysis/*.parquet --figures results/figures/*.png --template paper/template.md
 --out results/paper/paper.html --markdown results/paper/paper.md`

Every number comes from a derived table or from the paper's own table (ctxenergy.analysis.paper_values); the
template holds only prose and `${name}` placeholders. The Markdown is turned into HTML here, by a converter for the
small subset the template uses, so that no Markdown package is needed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from pathlib import Path
from string import Template

import pandas as pd

from ctxenergy.analysis.claims import NEAR_TABLE1, RELATIVE_TOLERANCE, paper_engine_ratios
from ctxenergy.analysis.paper_values import PAPER
from ctxenergy.analysis.scaling import PLATEAU_FRACTION
from ctxenergy.analysis.uncertainty import DRAWS
from ctxenergy.errors import CtxEnergyError
from ctxenergy.report import (FIGURE_TITLES, brief, ci, finite, fmt, fmt_ci, keep_together, page, png_data_uri,
                               read_inputs, tokens)
from ctxenergy.tables import write_text

CLAIM_ORDER = (1, 2, 3, 4, 5, 6)


def md_table(header: list[str], rows: list[list[str]], text_cols: int | Iterable[int] = 1) -> str:
    """A pipe table: text columns (the first text_cols, or those indices) left-aligned (:---), numbers right-aligned
    (---:)."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    text = set(range(text_cols)) if isinstance(text_cols, int) else set(text_cols)
    align = [":---" if i in text else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def _join(items: list[str]) -> str:
    items = [i for i in items if i]
    return ", ".join(items[:-1]) + (" and " if len(items) > 1 else "") + items[-1] if items else "none"


# ---- sections ---------------------------------------------------------------------------------------------------

def setup_text(pc: pd.DataFrame) -> str:
    if pc.empty:
        return "No cells were measured."
    gen = pc[pc["phase"] == "generate"]
    g = sorted({int(x) for x in gen["output_tokens"]})
    lengths = ", ".join(tokens(L) for L in sorted(pc["length_tokens"].unique()))
    stack = stack_text(pc)
    windows = sorted({int(x) for x in pc["n_windows"].dropna() if x > 0})
    from ctxenergy.analysis.cells import engine_rank

    engines = sorted(pc["engine"].unique(), key=engine_rank)  # the order of every table and figure
    return (f"Models {_join(sorted(pc['model'].unique()))}; engines {_join(engines)}; "
            f"context lengths L = {lengths} tokens; generate cells with G = {_join([str(x) for x in g])} output "
            f"tokens; {_join([str(w) for w in windows])} windows per cell. Stack: {stack}.")


def stack_text(pc: pd.DataFrame) -> str:
    """Device, driver, torch and energy method once per distinct combination, with the engines (and their versions)
    that ran on it: 'NVIDIA H200 (driver 580.159.04), torch 2.11.0+cu130, energy by nvml-...: hf-eager, hf-sdpa and
    hf-paged 5.17.0'."""
    from ctxenergy.analysis.cells import engine_rank

    keys = ["device_name", "driver_version", "torch_version", "meter_method"]
    ran = pc[pc["device_name"].fillna("") != ""]  # a cell recorded but never run (exceeds_context) has no device
    pc = ran if len(ran) else pc
    parts = []
    for (device, driver, torch, meter), g in pc.fillna({k: "" for k in keys}).groupby(keys, sort=False):
        by_version: dict[str, list[str]] = {}
        for engine in sorted(g["engine"].unique(), key=engine_rank):
            versions = sorted({v for v in g.loc[g["engine"] == engine, "engine_version"] if v}) or ["–"]
            by_version.setdefault(", ".join(versions), []).append(engine)
        engines = "; ".join(f"{_join(es)} {v}" for v, es in by_version.items())
        parts.append(f"{device or 'unknown device'} (driver {driver or '–'}), torch {torch or '–'}, energy by "
                     f"{meter or '–'}; engines {engines}")
    return ". ".join(parts)


def energy_missing_text(pc: pd.DataFrame) -> str:
    if pc.empty or pc["usable"].any():
        return ""
    reasons = pc["excluded_reason"].str.split(":").str[0].value_counts()
    listed = ", ".join(f"{n} cells {r}" for r, n in reasons.items())
    return (f"**Energy is missing: no cell has usable energy ({listed}).** Every energy, ratio, fit, threshold and "
            "verdict below is therefore empty or \"not testable\"; timings are real. Run the workflow on a GPU, or "
            "with `--configfile config/reference-h200.yaml` to analyse the committed H200 cells.")


def table1_md(t1: pd.DataFrame) -> str:
    rows = []
    for r in t1.itertuples():
        d = r._asdict()
        measured = r.status != "not measured"
        rows.append([r.paper_model, r.paper_engine, f"{r.paper_latency_s:g}", f"{r.paper_energy_j:,.1f}",
                     f"{r.paper_j_per_token:.4f}", fmt(r.paper_implied_tflops, 3),
                     r.engine or "–", tokens(r.length_tokens) if measured else "–",
                     ci(d, "latency_s") if measured else "not measured",
                     ci(d, "energy_j", 4) if measured else "not measured",
                     ci(d, "j_per_token") if measured else "not measured",
                     ci(d, "achieved_tflops") if measured else "–", brief(r.status, where="Validity in the report")])
    return md_table(["model", "paper engine", "paper latency (s)", "paper energy (J)", "paper J/token",
                     "TFLOP/s the paper's latency implies", "our engine", "our L", "our latency (s)", "our energy (J)",
                     "our J/token", "our TFLOP/s", "our status"], rows,
                    text_cols=(0, 1, 6, 12))


def table1_note(t1: pd.DataFrame) -> str:
    from ctxenergy.flops import device_peaks

    peak = device_peaks(PAPER["device"])["bf16_tflops"]
    parts = []
    for r in t1.drop_duplicates(["paper_model", "paper_engine"]).itertuples():
        if finite(r.paper_implied_tflops):
            share = r.paper_implied_tflops / peak
            verdict = ("more than the card can compute: not a full prefill" if share > 1
                       else "possible for a full prefill")
            parts.append(f"{r.paper_model} {r.paper_engine}: {r.paper_implied_tflops:,.0f} TFLOP/s, "
                         f"{share:.2f}x the {PAPER['device']}'s dense bf16 peak of {peak:g} TFLOP/s ({verdict})")
    ratios = "; ".join(f"{r['model']}: {r['energy_ratio']:.2f}x energy, {r['latency_ratio']:.2f}x latency"
                       for r in paper_engine_ratios())
    measured = t1[t1["status"] != "not measured"]
    text = ""
    if measured.empty:
        text += (f"We have no cell within {NEAR_TABLE1:.0%} of 112,000 tokens, so our side of Table 1 is "
                 "\"not measured\". ")
    if parts:
        text += ("Our FLOP model of the prefill (ctxenergy.flops) turns the paper's latencies into the compute "
                 "rate they imply: " + "; ".join(parts) + ". ")
    text += (f"The paper's own Table 1 gives HF/vLLM ratios of {ratios}: its \"7.6x\" matches Llama's energy ratio "
             "and its \"8.9x\" Qwen's energy ratio, not a latency ratio.")
    return text


def claims_md(cl: pd.DataFrame, pc: pd.DataFrame) -> str:
    devices = _join(sorted({d for d in pc["device_name"] if d})) or "no device"
    out = []
    for cid in CLAIM_ORDER:
        rows = cl[cl["claim_id"] == cid]
        if rows.empty:
            continue
        text = rows.iloc[0]["claim"]
        verdicts = sorted(set(rows["verdict"]))
        overall = verdicts[0] if len(verdicts) == 1 else "mixed: " + ", ".join(verdicts)
        out.append(f"### ({cid}) {text}")
        out.append(f"Paper: {rows.iloc[0]['paper_value'] or 'no single number'}. Verdict: **{overall}**.")
        out.append("")
        for r in rows.itertuples():
            who = f"{r.subject}: " if r.subject else ""
            out.append(f"- **{r.verdict}**: {who}{r.deciding}.")
        out.append("")
    out.append(f"The paper measured on an {PAPER['device']}; our cells ran on {devices}. A threshold tied to the "
               "board power limit (the plateau) moves with the board, so a refutation on other hardware is about "
               "the claim's generality, not about the paper's own measurement.")
    return "\n".join(out)


def io_md(io: pd.DataFrame) -> tuple[str, str]:
    usable = io[io["usable"]]
    if usable.empty:
        note = ("No (prefill, generate) pair of usable cells: E_in, E_out and their ratio are missing. "
                + (f"Reasons: {'; '.join(sorted(set(io['note'])))}." if len(io) else ""))
        return note, ""
    g = sorted({int(x) for x in usable["output_tokens"]})
    parts = []
    for (model, engine), d in usable.groupby(["model", "engine"], sort=False):
        d = d.sort_values("length_tokens")
        lo, hi = d.iloc[0], d.iloc[-1]
        ratio = f"{fmt_ci(lo.e_ratio, lo.e_ratio_ci_low, lo.e_ratio_ci_high)}x at L = {tokens(lo.length_tokens)}"
        if len(d) > 1:
            ratio += (f" and {fmt_ci(hi.e_ratio, hi.e_ratio_ci_low, hi.e_ratio_ci_high)}x at L = "
                      f"{tokens(hi.length_tokens)}")
        else:
            ratio += " (the only L with both phases)"
        parts.append(f"{model} / {engine}: E_out/E_in = {ratio}; one output token costs "
                     f"{fmt_ci(hi.e_out_j, hi.e_out_j_ci_low, hi.e_out_j_ci_high)} J there")
    note = (f"With G = {_join([str(x) for x in g])}, E_out divides the generate-minus-prefill energy by G − 1 "
            "decode steps (the paper's G is shown beside it). " + "; ".join(parts) + ".")
    rows = [[r.model, r.engine, tokens(r.length_tokens), ci(r._asdict(), "e_in_j", scale=1e3),
             ci(r._asdict(), "e_out_j"), ci(r._asdict(), "e_out_per_g_j"), ci(r._asdict(), "e_ratio"),
             ci(r._asdict(), "e_ratio_per_g"), ci(r._asdict(), "dyn_e_ratio")] for r in usable.itertuples()]
    table = md_table(["model", "engine", "L", "E_in (mJ/token)", "E_out (J/token, G − 1)", "E_out (J/token, G)",
                      "E_out/E_in (G − 1)", "E_out/E_in (G)", "E_out/E_in above idle"], rows, text_cols=2)
    return note, table


def scaling_md(fits: pd.DataFrame) -> str:
    f = fits[(fits["phase"] == "prefill")]
    if f.empty:
        return "No prefill cells to fit."
    rows, sentences = [], []
    for r in f.itertuples():
        d = r._asdict()
        fitted = not r.status.startswith("not fitted")
        rows.append([r.model, r.engine, r.quantity.replace("_per_run_j", ""), r.status,
                     ci(d, "a_j") if fitted else "–", ci(d, "b_j_per_token", scale=1e3) if fitted else "–",
                     ci(d, "c_j_per_token2", scale=1e9) if fitted else "–",
                     fmt(r.chi2 / r.dof, 3) if fitted and finite(r.dof) and r.dof > 0 else "–",
                     brief(r.excluded, where="Validity in the report") if r.excluded else "none"])
        if fitted and r.quantity == "energy_per_run_j":
            sentences.append(f"For {r.model} / {r.engine}, E(L) = {fmt(r.a_j)} J + {fmt(r.b_j_per_token * 1e3)} "
                             f"mJ/token · L + {fmt(r.c_j_per_token2 * 1e9)} nJ/token² · L² over L = "
                             f"{tokens(r.length_min)}–{tokens(r.length_max)}.")
    return (" ".join(sentences) + "\n\n" + md_table(["model", "engine", "energy", "status", "a (J)", "b (mJ/token)",
                                                     "c (nJ/token²)", "χ²/dof", "cells left out"], rows,
                                                    text_cols=(0, 1, 2, 3, 8)))


def thresholds_md(th: pd.DataFrame) -> str:
    d = th[(th["phase"] == "prefill") & th["quantity"].isin(["energy_per_run_j", "mean_power_w", "power_cap_fraction"])]
    if d.empty:
        return "No thresholds: no usable prefill cells."
    rows = []
    for r in d.itertuples():
        if r.unit == "tokens":
            value = (f"{tokens(r.value)} [{tokens(r.ci_low)}, {tokens(r.ci_high)}]" if finite(r.value)
                     else "undefined" if r.threshold in ("efficiency_fit", "crossover") else "not reached")
        else:
            value = fmt_ci(r.value, r.ci_low, r.ci_high, 2)
        rows.append([r.model, r.engine, r.threshold, value, r.unit, r.method, r.note or "–"])
    return md_table(["model", "engine", "threshold", "value", "unit", "method", "note"], rows,
                    text_cols=(0, 1, 2, 4, 5, 6))


def figures_md(figures: dict[str, Path], out_md: Path | None) -> str:
    lines = []
    for name in FIGURE_TITLES:
        if name in figures:
            # the Markdown copy links the figure files relative to itself; the HTML embeds them
            target = Path(figures[name])
            rel = Path("../figures") / target.name
            if out_md is not None:
                try:
                    rel = Path(_relpath(target, out_md.parent))
                except ValueError:
                    pass
            lines.append(f"![{FIGURE_TITLES[name]}]({rel.as_posix()})")
            lines.append("")
    return "\n".join(lines) if lines else "No figure files were given."


def _relpath(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(Path(target).resolve(), Path(start).resolve())


def values(t: dict, figures: dict[str, Path], out_md: Path | None = None) -> dict[str, str]:
    pc = t["per_cell"]
    io_note, io_table = io_md(t["io_ratio"])
    gen = pc[pc["phase"] == "generate"]
    gs = sorted({int(x) for x in gen["output_tokens"]})
    g_effect = ", ".join(f"{1 / g:.1%} at G = {g}" for g in gs) if gs else "no generate cell measured"
    return {
        "paper_citation": f"{PAPER['authors']}, \"{PAPER['title']}\"",
        "paper_device": PAPER["device"],
        "n_cells": str(len(pc)), "n_usable": str(int(pc["usable"].sum())),
        "devices": _join(sorted({d for d in pc["device_name"] if d})) or "no recorded device",
        "energy_missing": energy_missing_text(pc),
        "setup": setup_text(pc),
        "table1": table1_md(t["table1"]), "table1_note": table1_note(t["table1"]),
        "claims": claims_md(t["claims"], pc),
        "io_note": io_note, "io_table": io_table,
        "scaling": scaling_md(t["fits"]), "thresholds": thresholds_md(t["thresholds"]),
        "figures": figures_md(figures, out_md),
        "g_effect": g_effect, "plateau_fraction": f"{PLATEAU_FRACTION:.0%}", "draws": f"{DRAWS:,}",
        "tolerance": f"{RELATIVE_TOLERANCE:.0%}", "near": f"{NEAR_TABLE1:.0%}",
    }


def render_markdown(template: str, vals: dict[str, str]) -> str:
    try:
        text = Template(template).substitute(vals)
    except KeyError as exc:
        raise CtxEnergyError(f"paper template: placeholder ${{{exc.args[0]}}} has no value "
                             f"(known: {', '.join(sorted(vals))})") from None
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


# ---- Markdown subset -> HTML ------------------------------------------------------------------------------------

def _inline(text: str) -> str:
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<em>\1</em>", s)
    s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f'<a href="{m.group(2)}">{m.group(1)}</a>', s)
    return s


def _table_html(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        parts = re.split(r"(?<!\\)\|", line.strip().strip("|"))
        return [p.strip().replace("\\|", "|") for p in parts]
    # ':---' is a left-aligned (text) column; '---' and '---:' keep the page's right alignment of numbers
    left = [c.startswith(":") and not c.endswith(":") for c in cells(lines[1])] if len(lines) > 1 else []

    def cell(tag: str, i: int, c: str) -> str:
        classes = ["t"] if i < len(left) and left[i] else []
        if tag == "td" and c and len(c) <= 40 and not re.search(r"\s", c):
            classes.append("nw")  # a name or a number: never broken across lines
        cls = f' class="{" ".join(classes)}"' if classes else ""
        return f"<{tag}{cls}>{keep_together(_inline(c))}</{tag}>"
    head = "".join(cell("th", i, c) for i, c in enumerate(cells(lines[0])))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(cells(line))) + "</tr>"
                   for line in lines[2:])
    return f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def markdown_to_html(md: str, images: dict[str, str] | None = None) -> str:
    """Headings, paragraphs, '-' lists, pipe tables, images alone on a line; `images` maps an image's file name to
    the src to use (a data URI, so that the page stands alone)."""
    images = images or {}
    out, para, items, table = [], [], [], []

    def flush():
        if para:
            out.append(f"<p>{_inline(' '.join(para))}</p>")
            para.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
            items.clear()
        if table:
            out.append(_table_html(table))
            table.clear()

    for line in md.splitlines():
        s = line.rstrip()
        if s.startswith("|"):
            if para or items:
                flush()
            table.append(s)
            continue
        if table:
            flush()
        m_head = re.match(r"^(#{1,4})\s+(.*)$", s)
        m_img = re.match(r"^!\[([^\]]*)\]\(([^)\s]+)\)$", s)
        if not s:
            flush()
        elif m_head:
            flush()
            n = len(m_head.group(1))
            out.append(f"<h{n}>{_inline(m_head.group(2))}</h{n}>")
        elif m_img:
            flush()
            alt, src = m_img.group(1), m_img.group(2)
            src = images.get(Path(src).name, src)
            out.append(f'<figure><img alt="{html.escape(alt)}" src="{html.escape(src)}">'
                       f"<figcaption>{_inline(alt)}</figcaption></figure>")
        elif s.startswith("- "):
            if para:
                flush()
            items.append(s[2:])
        elif items and line.startswith("  "):
            items[-1] += " " + s.strip()
        else:
            if items:
                flush()
            para.append(s)
    flush()
    return "\n".join(out)


def build_paper(t: dict, figures: dict[str, Path], template: str, out_md: Path | None = None) -> tuple[str, str]:
    md = render_markdown(template, values(t, figures, out_md))
    images = {Path(p).name: png_data_uri(p) for p in figures.values()}
    title = "Reproducing \"The Cost of Context\" with ctxenergy"
    return md, page(title, markdown_to_html(md, images))


def main(args) -> int:
    tables, figures = read_inputs(args.tables, args.figures)
    if "table1" not in tables:
        raise CtxEnergyError("the paper needs the derived table table1 (ctxenergy analyze)")
    template = Path(args.template)
    if not template.is_file():
        raise CtxEnergyError(f"paper template '{template}' not found (paper/template.md in the repository)")
    md, page_html = build_paper(tables, figures, template.read_text(encoding="utf-8"), Path(args.markdown))
    write_text(md, args.markdown)
    write_text(page_html, args.out)
    print(f"paper -> {args.out}, {args.markdown}")
    return 0
