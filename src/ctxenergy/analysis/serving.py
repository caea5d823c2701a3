"""The serving case: what an input token costs when several prompts share the GPU (batch_size B) and vLLM runs as
deployed (engine_variant: chunked prefill, prefix caching with distinct prompts).

One long table, `serving`, one row per metric and point (column `metric`):
  e_in              J per input token of a prefill cell, E_prefill / (B L), per (model, engine, variant, B, L); total
                    interval with the board spread and the sensor gain (an absolute energy)
  batch_gain        e_in at B = 1 over e_in at B (same model, engine, variant, L): how many times cheaper an input
                    token is at batch B; total interval with the board spread (a ratio: the gain cancels)
  host_bound_batch  per (model, engine, variant, L): the batch from which a prefill stops being host-bound, defined
                    measurably as the smallest measured B from which every larger measured B lowers J per input
                    token by at most SATURATION_TOLERANCE (e_in(B) / e_in(B_max) <= 1.10): past it more sequences no
                    longer fill an idle GPU. Interval on the B grid: the same rule applied to the low and the high end
                    of each ratio's total interval. batch_size holds B_max, the largest B measured there; a value
                    equal to B_max says the saturation was not seen within the measured batches
  io_ratio          E_out / E_in per B (E_out = (E_generate - E_prefill) / (B (G - 1))), from the io_ratio table
  variant_ratio     energy per token of an engine variant over the default engine at the same (model, engine, B, L,
                    phase); equal_within_interval says whether 1 lies inside the total interval (for prefix caching
                    with distinct prompts, the test that caching changes nothing)

Empty where the cells carry no serving axis (every cell batch 1 with the engine's defaults).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.cells import has_serving, serving_axes
from ctxenergy.analysis.systematics import NOT_MEASURED, Systematics, total_interval
from ctxenergy.analysis.uncertainty import half_width, ratio_interval

# "No longer cheaper by batching": within a tenth, the tolerance the claims call flat (claims.FLAT_TOLERANCE).
SATURATION_TOLERANCE = 0.10
# Short prefills, the ones host-bound at batch 1 (256 to 2k tokens in the campaign).
SHORT_PREFILL_TOKENS = 2048
DEFAULT_VARIANT = "default"
COLUMNS = [
    "metric",
    "model",
    "engine",
    "engine_variant",
    "batch_size",
    "phase",
    "length_tokens",
    "value",
    "ci_low",
    "ci_high",
    "total_low",
    "total_high",
    "sys_rel",
    "unit",
    "compared_to",
    "equal_within_interval",
    "mean_power_w",
    "note",
]


def _axes(df: pd.DataFrame) -> pd.DataFrame:
    """The table with both serving axes (defaults where it lacks one)."""
    df = df.copy()
    if "engine_variant" not in df:
        df["engine_variant"] = DEFAULT_VARIANT
    if "batch_size" not in df:
        df["batch_size"] = 1
    return df


def ratio_of(a: pd.Series, b: pd.Series, col: str, sys_rel: float) -> tuple[float, float, float, float, float]:
    """a[col] / b[col]: (ratio, ci_low, ci_high, total_low, total_high), intervals on the log scale in quadrature."""
    va, vb = float(a[col]), float(b[col])
    rel = float(
        np.hypot(
            half_width(a[f"{col}_ci_low"], a[f"{col}_ci_high"]) / va,
            half_width(b[f"{col}_ci_low"], b[f"{col}_ci_high"]) / vb,
        )
    )
    r = va / vb
    lo, hi = ratio_interval(r, rel)
    tlo, thi = total_interval(r, lo, hi, sys_rel)
    return r, float(lo), float(hi), float(tlo), float(thi)


def _row(metric: str, r: pd.Series, **kw) -> dict:
    base = {
        "metric": metric,
        "model": r["model"],
        "engine": r["engine"],
        "engine_variant": r["engine_variant"],
        "batch_size": int(r["batch_size"]),
        "phase": r.get("phase", "prefill"),
        "length_tokens": int(r["length_tokens"]),
        "compared_to": "",
        "equal_within_interval": None,
        "mean_power_w": np.nan,
        "note": "",
    }
    return {**base, **kw}


def saturation_batch(batches, ratios) -> float:
    """The smallest B from which every larger B has ratio (J per input token over that at the largest B) within
    SATURATION_TOLERANCE; NaN where a ratio is not finite."""
    b, r = np.asarray(batches, dtype=float), np.asarray(ratios, dtype=float)
    if not np.isfinite(r).all():
        return float("nan")
    ok = r <= 1.0 + SATURATION_TOLERANCE
    tail = np.flip(np.logical_and.accumulate(np.flip(ok)))
    return float(b[int(np.argmax(tail))])


def _prefill_rows(pre: pd.DataFrame, sys: Systematics) -> list[dict]:
    rows = []
    for r in pre.itertuples(index=False):
        r = pd.Series(r._asdict())
        v, lo, hi = (float(r[f"energy_per_token_j{s}"]) for s in ("", "_ci_low", "_ci_high"))
        tlo, thi = total_interval(v, lo, hi, sys.absolute_rel)
        rows.append(
            _row(
                "e_in",
                r,
                value=v,
                ci_low=lo,
                ci_high=hi,
                total_low=float(tlo),
                total_high=float(thi),
                sys_rel=sys.absolute_rel,
                unit="J/token",
                mean_power_w=float(r["mean_power_w"]),
            )
        )
    for _, g in pre.groupby(["model", "engine", "engine_variant", "length_tokens"], sort=False):
        g = g.sort_values("batch_size")
        by_b = {int(r["batch_size"]): r for _, r in g.iterrows()}
        if 1 in by_b:
            for b, r in by_b.items():
                if b == 1:
                    continue
                v, lo, hi, tlo, thi = ratio_of(by_b[1], r, "energy_per_token_j", sys.ratio_rel())
                rows.append(
                    _row(
                        "batch_gain",
                        r,
                        value=v,
                        ci_low=lo,
                        ci_high=hi,
                        total_low=tlo,
                        total_high=thi,
                        sys_rel=sys.ratio_rel(),
                        unit="x",
                        compared_to="batch_size 1",
                        mean_power_w=float(r["mean_power_w"]),
                    )
                )
        if len(by_b) < 2:
            continue
        top = g.iloc[-1]
        ratios = [ratio_of(r, top, "energy_per_token_j", sys.ratio_rel()) for _, r in g.iterrows()]
        bs = g["batch_size"].to_numpy(float)
        point = saturation_batch(bs, [x[0] for x in ratios])
        low = saturation_batch(bs, [x[3] for x in ratios])
        high = saturation_batch(bs, [x[4] for x in ratios])
        first = ratios[0]
        note = (
            f"J per input token at B = {int(bs[0])} is {first[0]:.3g}x [{first[3]:.3g}, {first[4]:.3g}] (total) "
            f"that at B = {int(bs[-1])}"
        )
        if point == bs[-1]:
            note += "; still falling at the largest measured B: the saturation may lie beyond it"
        rows.append(
            _row(
                "host_bound_batch",
                top,
                value=point,
                ci_low=low,
                ci_high=high,
                total_low=low,
                total_high=high,
                sys_rel=sys.ratio_rel(),
                unit="sequences",
                compared_to=f"batch_size {int(bs[-1])} (the largest measured)",
                note=note,
            )
        )
    return rows


def _io_rows(io: pd.DataFrame) -> list[dict]:
    rows = []
    for _, r in io[io["usable"].astype(bool)].iterrows():
        r = r.copy()
        r["phase"] = "generate"
        rows.append(
            _row(
                "io_ratio",
                r,
                value=float(r["e_ratio"]),
                ci_low=float(r["e_ratio_ci_low"]),
                ci_high=float(r["e_ratio_ci_high"]),
                total_low=float(r["e_ratio_total_low"]),
                total_high=float(r["e_ratio_total_high"]),
                sys_rel=float(r["e_ratio_sys_rel"]),
                unit="x",
                note=f"E_out {float(r['e_out_j']):.4g} J, E_in {float(r['e_in_j']):.4g} J per token",
            )
        )
    return rows


def _variant_rows(pc: pd.DataFrame, sys: Systematics) -> list[dict]:
    rows = []
    key = ["model", "engine", "batch_size", "phase", "length_tokens"]
    for _, g in pc.groupby(key, sort=False):
        base = g[g["engine_variant"] == DEFAULT_VARIANT]
        if base.empty:
            continue
        b = base.iloc[0]
        for _, r in g[g["engine_variant"] != DEFAULT_VARIANT].iterrows():
            v, lo, hi, tlo, thi = ratio_of(r, b, "energy_per_token_j", sys.ratio_rel())
            equal = bool(tlo <= 1.0 <= thi) if np.isfinite(tlo) and np.isfinite(thi) else None
            rows.append(
                _row(
                    "variant_ratio",
                    r,
                    value=v,
                    ci_low=lo,
                    ci_high=hi,
                    total_low=tlo,
                    total_high=thi,
                    sys_rel=sys.ratio_rel(),
                    unit="x",
                    compared_to=DEFAULT_VARIANT,
                    equal_within_interval=equal,
                    mean_power_w=float(r["mean_power_w"]),
                    note=(
                        "equal to the default within the total interval"
                        if equal
                        else "differs from the default beyond the total interval"
                        if equal is False
                        else ""
                    ),
                )
            )
    return rows


def serving(per_cell: pd.DataFrame, io: pd.DataFrame, systematics: Systematics = NOT_MEASURED) -> pd.DataFrame:
    """The serving table (columns COLUMNS); no rows where no cell is batched or runs an engine variant."""
    rows = []
    if serving_axes(per_cell) and has_serving(per_cell):
        pc = _axes(per_cell[per_cell["usable"]])
        rows += _prefill_rows(pc[pc["phase"] == "prefill"], systematics)
        rows += _io_rows(_axes(io))
        rows += _variant_rows(pc, systematics)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["equal_within_interval"] = out["equal_within_interval"].astype("boolean")
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out


def short_prefill_batch(table: pd.DataFrame) -> pd.DataFrame:
    """The host_bound_batch rows of short prefills (L <= SHORT_PREFILL_TOKENS), the ones host-bound at B = 1."""
    t = table[(table["metric"] == "host_bound_batch") & (table["length_tokens"] <= SHORT_PREFILL_TOKENS)]
    return t.sort_values(["model", "engine", "engine_variant", "length_tokens"])
