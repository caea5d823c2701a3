"""Engines against each other at equal L: how many times more energy and time the one needs than the other.

Pairs follow the registry's engine order (baseline first), so a ratio reads "baseline / faster engine", as the
paper's 7.6x does.
Energy and latency are per run of the same cell kind (model, phase, L), so the ratio of J/token is the energy ratio.
Intervals: the two cells' relative 95 % half-widths in quadrature, on the log scale (statistical); the total interval
adds the board spread (ctxenergy.analysis.systematics) in quadrature: the sensor gain cancels in a ratio of one board's
cells, and between boards the spread measures it (the pairs' run times differ between boards as their energies do).
Where the cells carry the serving axes, engines are compared at the same engine_variant and batch_size.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.cells import engine_rank, serving_axes
from ctxenergy.analysis.systematics import NOT_MEASURED, Systematics, total_interval
from ctxenergy.analysis.uncertainty import half_width, ratio_interval

KEY = ["model", "phase", "length_tokens"]
MEASURES = {"energy": "energy_per_run_j", "dynamic_energy": "dynamic_energy_per_run_j", "latency": "run_s"}


def engine_ratios(per_cell: pd.DataFrame, systematics: Systematics = NOT_MEASURED) -> pd.DataFrame:
    rows = []
    usable = per_cell[per_cell["usable"]]
    key_cols = KEY[:1] + serving_axes(per_cell) + KEY[1:]
    for key, g in usable.groupby(key_cols, sort=False):
        by_engine = {r["engine"]: r for _, r in g.iterrows()}
        for a, b in combinations(sorted(by_engine, key=engine_rank), 2):
            ra, rb = by_engine[a], by_engine[b]
            row = dict(zip(key_cols, key), engine_a=a, engine_b=b)
            for name, col in MEASURES.items():
                va, vb = float(ra[col]), float(rb[col])
                rel = np.hypot(
                    float(half_width(ra[f"{col}_ci_low"], ra[f"{col}_ci_high"])) / va,
                    float(half_width(rb[f"{col}_ci_low"], rb[f"{col}_ci_high"])) / vb,
                )
                ratio = va / vb
                lo, hi = ratio_interval(ratio, rel)
                tlo, thi = total_interval(ratio, lo, hi, systematics.ratio_rel())
                row.update(
                    {
                        f"{name}_ratio": ratio,
                        f"{name}_ratio_ci_low": float(lo),
                        f"{name}_ratio_ci_high": float(hi),
                        f"{name}_ratio_total_low": float(tlo),
                        f"{name}_ratio_total_high": float(thi),
                    }
                )
            rows.append(row)
    cols = (
        key_cols
        + ["engine_a", "engine_b"]
        + [f"{n}_ratio{s}" for n in MEASURES for s in ("", "_ci_low", "_ci_high", "_total_low", "_total_high")]
    )
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out
