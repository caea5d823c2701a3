"""The "Serving" section of the report and the write-up, from the serving table (ctxenergy.analysis.serving): the
same tables, rendered as HTML or Markdown. Absent (an empty string) where no cell is batched or runs a variant."""

from __future__ import annotations

import pandas as pd

from ctxenergy.analysis.cells import engine_rank
from ctxenergy.analysis.serving import SATURATION_TOLERANCE, SHORT_PREFILL_TOKENS, short_prefill_batch
from ctxenergy.outputs.render import finite, fmt, fmt_ci, html_table, md_table, tokens

TITLE = "Serving"


def _with_total(v, lo, hi, tlo, thi, digits: int = 3, scale: float = 1.0) -> str:
    total = f" (total {fmt(tlo, digits, scale)}–{fmt(thi, digits, scale)})" if finite(tlo) and finite(thi) else ""
    return fmt_ci(v, lo, hi, digits, scale) + total


def _sorted(df: pd.DataFrame, *extra: str) -> pd.DataFrame:
    return (
        df.assign(_rank=df["engine"].map(engine_rank))
        .sort_values(["model", "_rank", "engine_variant", *extra])
        .drop(columns="_rank")
    )


def _band(sv: pd.DataFrame, metric: str) -> str:
    s = sv.loc[sv["metric"] == metric, "sys_rel"]
    return f"+-{s.iloc[0]:.1%}" if len(s) and finite(s.iloc[0]) else "not measured"


def intro(sv: pd.DataFrame) -> str:
    return (
        f"Cells of B distinct prompts of L tokens each, prefilled (and, for generate cells, decoded) together, and "
        f"vLLM with its deployment options (engine variants). J per input token = E_prefill / (B L); E_out = "
        f"(E_generate - E_prefill) / (B (G - 1)). Brackets hold the statistical 95 % interval of the windows; "
        f"total intervals add the systematic band in quadrature: {_band(sv, 'e_in')} on J per token (board spread "
        f"and NVML gain: an absolute energy), {_band(sv, 'batch_gain')} on ratios (board spread: the gain "
        f"cancels). A short prefill (L <= {tokens(SHORT_PREFILL_TOKENS)}) stops being host-bound at the smallest "
        f"B from which every larger measured B lowers J per input token by at most {SATURATION_TOLERANCE:.0%}."
    )


def tables(sv: pd.DataFrame) -> list[tuple[str, list[str], list[list[str]], tuple[int, ...]]]:
    """(title, header, rows, text columns) of each table of the section."""
    out = []
    e_in = sv[sv["metric"] == "e_in"]
    gain = sv[sv["metric"] == "batch_gain"]
    rows = []
    for (model, engine, variant, L), g in _sorted(e_in, "length_tokens").groupby(
        ["model", "engine", "engine_variant", "length_tokens"], sort=False
    ):
        g = g.sort_values("batch_size")
        first, last = g.iloc[0], g.iloc[-1]
        x = gain[
            (gain["model"] == model)
            & (gain["engine"] == engine)
            & (gain["engine_variant"] == variant)
            & (gain["length_tokens"] == L)
            & (gain["batch_size"] == last["batch_size"])
        ]
        ratio = (
            (_with_total(*(x.iloc[0][c] for c in ("value", "ci_low", "ci_high", "total_low", "total_high"))) + "x")
            if len(x)
            else "–"
        )
        rows.append(
            [
                model,
                engine,
                variant,
                tokens(L),
                str(int(first["batch_size"])),
                _with_total(
                    first["value"],
                    first["ci_low"],
                    first["ci_high"],
                    first["total_low"],
                    first["total_high"],
                    scale=1e3,
                ),
                str(int(last["batch_size"])),
                _with_total(
                    last["value"], last["ci_low"], last["ci_high"], last["total_low"], last["total_high"], scale=1e3
                ),
                ratio,
            ]
        )
    if rows:
        out.append(
            (
                "J per input token: the smallest against the largest batch measured",
                [
                    "model",
                    "engine",
                    "variant",
                    "L",
                    "B",
                    "mJ/token",
                    "B max",
                    "mJ/token at B max",
                    "gain (B small / B max)",
                ],
                rows,
                (0, 1, 2),
            )
        )
    hb = short_prefill_batch(sv)
    if len(hb):
        out.append(
            (
                "The batch from which a short prefill is no longer host-bound",
                ["model", "engine", "variant", "L", "batch", "interval (total)", "measured up to", "note"],
                [
                    [
                        r.model,
                        r.engine,
                        r.engine_variant,
                        tokens(r.length_tokens),
                        fmt(r.value, 3),
                        f"{fmt(r.total_low, 3)}–{fmt(r.total_high, 3)}",
                        str(int(r.batch_size)),
                        r.note,
                    ]
                    for r in hb.itertuples()
                ],
                (0, 1, 2, 7),
            )
        )
    io = sv[sv["metric"] == "io_ratio"]
    if len(io):
        out.append(
            (
                "E_out / E_in per batch size",
                ["model", "engine", "variant", "B", "L", "E_out / E_in"],
                [
                    [
                        r.model,
                        r.engine,
                        r.engine_variant,
                        str(int(r.batch_size)),
                        tokens(r.length_tokens),
                        _with_total(r.value, r.ci_low, r.ci_high, r.total_low, r.total_high) + "x",
                    ]
                    for r in _sorted(io, "batch_size", "length_tokens").itertuples()
                ],
                (0, 1, 2),
            )
        )
    var = sv[sv["metric"] == "variant_ratio"]
    if len(var):
        out.append(
            (
                "Engine variants against the default settings (energy per token, same B and L)",
                [
                    "model",
                    "engine",
                    "variant",
                    "B",
                    "phase",
                    "L",
                    "variant / default",
                    "equal within the total interval",
                ],
                [
                    [
                        r.model,
                        r.engine,
                        r.engine_variant,
                        str(int(r.batch_size)),
                        r.phase,
                        tokens(r.length_tokens),
                        _with_total(r.value, r.ci_low, r.ci_high, r.total_low, r.total_high) + "x",
                        "yes" if r.equal_within_interval is True else "no" if r.equal_within_interval is False else "–",
                    ]
                    for r in _sorted(var, "batch_size", "phase", "length_tokens").itertuples()
                ],
                (0, 1, 2, 4, 7),
            )
        )
    return out


def has_rows(sv: pd.DataFrame | None) -> bool:
    return sv is not None and len(sv) > 0


def section_html(sv: pd.DataFrame | None, figures_html: str = "") -> str:
    if not has_rows(sv):
        return ""
    body = f'<h2>{TITLE}</h2><p class="note">{intro(sv)}</p>' + figures_html
    for title, header, rows, text in tables(sv):
        body += f"<h3>{title}</h3>" + html_table(header, rows, text_cols=text)
    return body


def section_md(sv: pd.DataFrame | None, figures_md: str = "") -> str:
    """The write-up's section, with its leading blank line; "" where there are no serving cells."""
    if not has_rows(sv):
        return ""
    parts = [f"## {TITLE}", intro(sv)] + ([figures_md] if figures_md else [])
    for title, header, rows, text in tables(sv):
        parts += [f"### {title}", md_table(header, rows, text_cols=text)]
    return "\n\n" + "\n\n".join(parts)
