"""`ctxenergy summary`: the key results as a table in the terminal, from the derived tables (Parquet) alone.

Per model and engine: the cells measured and usable, the prefill at the largest L measured in both phases (else the
largest usable prefill): latency, energy with its
statistical 95 % interval, J per input token), the energy per output token there and its ratio to an input token, and
the prefill fit's crossover L* = b/c with its total interval; then the systematic band an absolute energy carries.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ctxenergy.analysis.cost_model import REFERENCE_ANALYSIS
from ctxenergy.analysis.scaling import crossover_row
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.render import text_table
from ctxenergy.paths import ANALYSIS_DIR, REPO_ROOT

NEEDED = ("per_cell", "io_ratio", "thresholds", "systematics")
HEADER = (
    "model",
    "engine",
    "cells ok",
    "L max",
    "prefill s",
    "prefill J [95 %]",
    "J/in tok",
    "J/out tok",
    "out/in",
    "L* = b/c [total]",
)


def read_analysis(folder: Path) -> dict[str, pd.DataFrame]:
    missing = [name for name in NEEDED if not (folder / f"{name}.parquet").is_file()]
    if missing:
        raise CtxEnergyError(
            f"{folder}: no {', '.join(f'{m}.parquet' for m in missing)}; run the analysis first "
            f"(`snakemake {ANALYSIS_DIR}/per_cell.parquet`) or leave --analysis out for the "
            "reference campaign"
        )
    return {name: pd.read_parquet(folder / f"{name}.parquet") for name in NEEDED}


def _num(v, fmt: str) -> str:
    return "" if v is None or not math.isfinite(float(v)) else format(float(v), fmt)


def summary_rows(tables: dict[str, pd.DataFrame]) -> list[tuple[str, ...]]:
    pc, io, th = tables["per_cell"], tables["io_ratio"], tables["thresholds"]
    rows = []
    for (model, engine), cells in pc.groupby(["model", "engine"], sort=False):
        ok = f"{int(cells['usable'].sum())}/{len(cells)}"
        pre = cells[(cells["phase"] == "prefill") & cells["usable"]].sort_values("length_tokens")
        if pre.empty:
            reasons = sorted({str(r).split(":")[0] for r in cells["excluded_reason"] if r})
            rows.append((model, engine, ok, "", "no usable prefill: " + ", ".join(reasons), "", "", "", "", ""))
            continue
        # the largest L with both a prefill and a generate cell, so that the output token is priced there too
        both = io[(io["model"] == model) & (io["engine"] == engine) & io["usable"].astype(bool)]
        both = both[both["length_tokens"].isin(pre["length_tokens"])]
        length = int(both["length_tokens"].max()) if len(both) else int(pre["length_tokens"].max())
        top = pre[pre["length_tokens"] == length].iloc[0]
        pair = both[both["length_tokens"] == length]
        e_out = pair["e_out_j"].iloc[0] if len(pair) else math.nan
        ratio = pair["e_ratio"].iloc[0] if len(pair) else math.nan
        c = crossover_row(th, model, engine)
        star = ""
        if c is not None and math.isfinite(c["value"]):
            star = (
                f"{c['value'] / 1e3:.1f}k [{_num(c['total_low'] / 1e3, '.1f')}, {_num(c['total_high'] / 1e3, '.1f')}]"
            )
        energy = (
            f"{top['energy_per_run_j']:,.0f} [{top['energy_per_run_j_ci_low']:,.0f}, "
            f"{top['energy_per_run_j_ci_high']:,.0f}]"
        )
        rows.append(
            (
                model,
                engine,
                ok,
                f"{length:,}",
                _num(top["run_s"], ".2f"),
                energy,
                _num(top["energy_per_run_j"] / length, ".4f"),
                _num(e_out, ".3f"),
                _num(ratio, ".0f"),
                star,
            )
        )
    return rows


def summary_text(folder: Path, label: str) -> str:
    tables = read_analysis(folder)
    sys = tables["systematics"].set_index("systematic")["relative_half_width"]
    board, gain = float(sys.get("board_spread", math.nan)), float(sys.get("nvml_gain", math.nan))
    devices = ", ".join(sorted({d for d in tables["per_cell"].get("device_name", []) if isinstance(d, str) and d}))
    absolute = math.hypot(board, gain) if math.isfinite(board) else gain
    return "\n".join(
        [
            f"ctxenergy results from {label} ({devices or 'device not recorded'}): prefill at the largest L measured "
            "in both phases, and per output token (G - 1 decode steps) at that L",
            text_table(HEADER, summary_rows(tables), text_cols=len(HEADER)),
            f"Brackets: statistical 95 % intervals; an absolute energy also carries a systematic ±{absolute:.1%} "
            f"(board spread {board:.1%} and NVML gain {gain:.0%} in quadrature). L*: where c L^2 overtakes b L in "
            "E(L) = a + b L + c L^2.",
            "One request: ctxenergy estimate --model M --engine E --input N --output G (docs/cost-model.md).",
        ]
    )


def main(args) -> int:
    folder = Path(args.analysis) if args.analysis else REFERENCE_ANALYSIS
    shown = folder.resolve().relative_to(REPO_ROOT) if folder.resolve().is_relative_to(REPO_ROOT) else folder
    print(summary_text(folder, str(shown)))
    return 0
