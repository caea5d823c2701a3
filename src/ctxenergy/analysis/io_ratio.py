"""Input vs output tokens per L: E_in = E_prefill / L, E_out per output token, and their ratio.

E_out comes from the generate cell (G output tokens) minus the prefill cell at the same L. The generate run's first
token is produced by its prefill, so the difference holds G - 1 decode steps: E_out = (E_generate - E_prefill)/(G - 1).
The paper divides by G; that variant is kept beside it (`*_per_g`), 1/G smaller (0.8 % at G = 128).
Intervals: the two cells' 95 % half-widths in quadrature for the difference, on the log scale for the ratio
(statistical). The total interval of the ratio adds, in quadrature, the systematic of E_out (the host spread for an
engine whose decode is host-bound, else the board spread) and the board spread of E_in (ctxenergy.analysis.systematics).
A batched pair (batch_size B) holds B sequences: E_in = E_prefill / (B L) and E_out divides by B (G - 1), per
(model, engine, engine_variant, batch_size, L).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.cells import with_serving
from ctxenergy.analysis.scaling import same_board
from ctxenergy.analysis.systematics import NOT_MEASURED, Systematics, total_interval
from ctxenergy.analysis.uncertainty import half_width, ratio_interval

KEY = ["model", "engine", "length_tokens"]


def _pair_rows(pre: pd.Series | None, gen: pd.Series | None, key: dict, systematics: Systematics) -> dict:
    row = dict(key)
    missing = [name for name, c in (("prefill", pre), ("generate", gen)) if c is None]
    unusable = [f"{c['phase']}: {c['excluded_reason']}" for c in (pre, gen) if c is not None and not c["usable"]]
    row["note"] = "; ".join([f"no {m} cell" for m in missing] + unusable)
    row["usable"] = not row["note"]
    row["output_tokens"] = int(gen["output_tokens"]) if gen is not None else np.nan
    row["prefill_cell_id"] = pre["cell_id"] if pre is not None else ""
    row["generate_cell_id"] = gen["cell_id"] if gen is not None else ""
    # E_out is a difference of the two cells: across boards it also carries their offset times E_prefill / (G - 1)
    row["same_board"] = (
        same_board(pre.get("device_uuid"), gen.get("device_uuid")) if pre is not None and gen is not None else None
    )
    L = float(key["length_tokens"])
    batch = float(key.get("batch_size", 1))
    for kind, prefix in (("energy_per_run_j", "e"), ("dynamic_energy_per_run_j", "dyn_e")):
        if not row["usable"]:
            for name in ("in", "out", "out_per_g"):
                row.update(
                    {
                        f"{prefix}_{name}_j": np.nan,
                        f"{prefix}_{name}_j_ci_low": np.nan,
                        f"{prefix}_{name}_j_ci_high": np.nan,
                    }
                )
            for name in ("ratio", "ratio_per_g"):
                row.update(
                    {f"{prefix}_{name}{s}": np.nan for s in ("", "_ci_low", "_ci_high", "_total_low", "_total_high")}
                )
            row[f"{prefix}_ratio_sys_rel"] = np.nan
            continue
        g = float(gen["output_tokens"])
        ep, eg = float(pre[kind]), float(gen[kind])
        hp = float(half_width(pre[f"{kind}_ci_low"], pre[f"{kind}_ci_high"]))
        hg = float(half_width(gen[f"{kind}_ci_low"], gen[f"{kind}_ci_high"]))
        e_in, h_in = ep / (batch * L), hp / (batch * L)
        sys_rel = float(
            np.hypot(systematics.decode_rel(key["engine"], dynamic=prefix == "dyn_e"), systematics.board_rel)
        )
        row[f"{prefix}_ratio_sys_rel"] = sys_rel
        diff, h_diff = eg - ep, float(np.hypot(hp, hg))
        for name, steps in (("out", batch * (g - 1)), ("out_per_g", batch * g)):
            e_out, h_out = diff / steps, h_diff / steps
            row.update(
                {
                    f"{prefix}_{name}_j": e_out,
                    f"{prefix}_{name}_j_ci_low": e_out - h_out,
                    f"{prefix}_{name}_j_ci_high": e_out + h_out,
                }
            )
            ratio = e_out / e_in
            rel = float(np.hypot(h_out / abs(e_out), h_in / e_in)) if e_out != 0 else np.nan
            lo, hi = ratio_interval(ratio, rel)
            suffix = "ratio" if name == "out" else "ratio_per_g"
            tlo, thi = total_interval(ratio, lo, hi, sys_rel)
            row.update(
                {
                    f"{prefix}_{suffix}": ratio,
                    f"{prefix}_{suffix}_ci_low": float(lo),
                    f"{prefix}_{suffix}_ci_high": float(hi),
                    f"{prefix}_{suffix}_total_low": float(tlo),
                    f"{prefix}_{suffix}_total_high": float(thi),
                }
            )
        # E_in keeps the prefill cell's own (possibly asymmetric) interval
        row.update(
            {
                f"{prefix}_in_j": e_in,
                f"{prefix}_in_j_ci_low": float(pre[f"{kind}_ci_low"]) / (batch * L),
                f"{prefix}_in_j_ci_high": float(pre[f"{kind}_ci_high"]) / (batch * L),
            }
        )
    return row


def io_ratio(per_cell: pd.DataFrame, systematics: Systematics = NOT_MEASURED) -> pd.DataFrame:
    """One row per (model, engine, [engine_variant, batch_size,] L) that has a prefill or a generate cell."""
    rows = []
    key_cols = with_serving(KEY, per_cell)
    for key, g in per_cell.groupby(key_cols, sort=False):
        key = dict(zip(key_cols, key))
        pre = g[g["phase"] == "prefill"]
        gen = g[g["phase"] == "generate"]
        rows.append(_pair_rows(pre.iloc[0] if len(pre) else None, gen.iloc[0] if len(gen) else None, key, systematics))
    values = [
        f"{p}_{n}{s}"
        for p in ("e", "dyn_e")
        for n in ("in_j", "out_j", "out_per_g_j", "ratio", "ratio_per_g")
        for s in ("", "_ci_low", "_ci_high") + (("_total_low", "_total_high") if "ratio" in n else ())
    ]
    values += ["e_ratio_sys_rel", "dyn_e_ratio_sys_rel"]
    cols = key_cols + ["output_tokens", "usable", "note", "prefill_cell_id", "generate_cell_id", "same_board"] + values
    out = pd.DataFrame(rows, columns=cols)
    out["output_tokens"] = out["output_tokens"].astype(float)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out
