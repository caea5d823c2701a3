"""What one request costs: the per-token cost model (the `cost_model` derived table) and `ctxenergy estimate`.

A request of N input tokens and G output tokens (batch 1, as measured) costs, in GPU energy,

  E(N, G) = E_prefill(N) + (G - 1) * E_out(L_eff)

  E_prefill(N)  the prefill fit E(L) = a + b L + c L^2 of the cells (ctxenergy.analysis.scaling), valid from the
                smallest to the largest measured L; it produces the first output token.
  E_out(L)      energy per further output token, measured as (E_generate - E_prefill) / (G_m - 1) at each measured L
                (ctxenergy.analysis.io_ratio; G_m = 128 in the shipped configs). A decode step costs more as the context
                grows, so E_out is read at L_eff = N + (G - G_m) / 2, the L whose measured decode steps have the mean
                context of the request's, linearly interpolated between the two neighbouring measured L.

Both in total energy and in energy above the idle floor ("dynamic"). Bands, as 95 % half-widths:
  statistical  the prefill fit's statistical covariance (the cells' windows alone) and the interpolated E_out's
               interval (its two cells' half-widths in quadrature), in quadrature with each other;
  systematic   absolute energy: the board spread and NVML's sensor gain in quadrature for the prefill, and for E_out
               the host spread instead of the board spread where the engine's decode waits on the host
               (ctxenergy.analysis.systematics); prefill and decode run on one board and one sensor, so their
               systematic parts add linearly;
  total        statistical and systematic in quadrature.
docs/cost-model.md explains the table for an estimator's author.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.cells import SERVING_AXES, serial, serving_axes
from ctxenergy.analysis.derived_schema import DERIVED_SCHEMA_VERSION, check_table
from ctxenergy.analysis.systematics import NOT_MEASURED, Systematics
from ctxenergy.analysis.uncertainty import Z975
from ctxenergy.errors import CtxEnergyError
from ctxenergy.paths import ANALYSIS_DIR, REPO_ROOT

# The committed fits that `ctxenergy estimate` reads unless told otherwise: the reference campaign's.
REFERENCE_ANALYSIS = REPO_ROOT / "data" / "reference" / "nvidia-h200" / "campaign" / "outputs" / "analysis"
QUANTITIES = {"total": "energy_per_run_j", "dynamic": "dynamic_energy_per_run_j"}
IO_PREFIX = {"total": "e", "dynamic": "dyn_e"}
COV_STAT_COLUMNS = {
    (0, 0): "cov_stat_aa",
    (0, 1): "cov_stat_ab",
    (0, 2): "cov_stat_ac",
    (1, 1): "cov_stat_bb",
    (1, 2): "cov_stat_bc",
    (2, 2): "cov_stat_cc",
}
COLUMNS = (
    [
        "model",
        "engine",
        "device_name",
        "quantity",
        "term",
        "length_tokens",
        "length_min_tokens",
        "length_max_tokens",
        "a_j",
        "b_j_per_token",
        "c_j_per_token2",
    ]
    + list(COV_STAT_COLUMNS.values())
    + [
        "chi2_per_dof",
        "quadratic_describes",
        "e_out_j",
        "e_out_j_ci_low",
        "e_out_j_ci_high",
        "output_tokens_measured",
        "sys_rel",
        "note",
    ]
)


def _devices(cells: pd.DataFrame) -> str:
    names = sorted({str(d) for d in cells.get("device_name", pd.Series(dtype=str)) if isinstance(d, str) and d})
    return ", ".join(names)


def cost_model(
    per_cell: pd.DataFrame, fit_objects: dict, io: pd.DataFrame, systematics: Systematics = NOT_MEASURED
) -> pd.DataFrame:
    """One row per (model, engine, quantity) for the prefill fit and one per measured L for E_out (term
    "output_token"), each with its measured range, statistical uncertainty and systematic half-width (sys_rel).
    A request served alone: the cells at batch 1 with the engine's default settings (the serving table holds the
    batched ones)."""
    rows = []
    # the fits of batch 1 and default settings, keyed with the serving axes where the cells carry them
    axes = tuple(SERVING_AXES[a] for a in serving_axes(per_cell))
    per_cell, io = serial(per_cell), serial(io)
    prefill_rel = systematics.absolute_rel
    for (model, engine), cells in per_cell[per_cell["usable"]].groupby(["model", "engine"], sort=False):
        device = _devices(cells)
        for quantity, column in QUANTITIES.items():
            f = fit_objects.get((model, engine, *axes, "prefill", column))
            pre = cells[cells["phase"] == "prefill"]
            if f is not None:
                describes = f.dof <= 0 or f.chi2 / f.dof <= _chi2_limit(f.dof)
                row = dict(
                    model=model,
                    engine=engine,
                    device_name=device,
                    quantity=quantity,
                    term="prefill",
                    length_tokens=np.nan,
                    length_min_tokens=int(pre["length_tokens"].min()),
                    length_max_tokens=int(pre["length_tokens"].max()),
                    a_j=f.coef[0],
                    b_j_per_token=f.coef[1],
                    c_j_per_token2=f.coef[2],
                    chi2_per_dof=f.chi2 / f.dof if f.dof > 0 else np.nan,
                    quadratic_describes=bool(describes),
                    sys_rel=prefill_rel,
                    note=""
                    if describes
                    else "the quadratic does not describe the cells within their errors: "
                    "between measured L it may be off by more than its band",
                )
                cov = f.cov if f.cov_stat is None else f.cov_stat
                row.update({name: cov[i, j] for (i, j), name in COV_STAT_COLUMNS.items()})
                rows.append(row)
            p = IO_PREFIX[quantity]
            out = io[(io["model"] == model) & (io["engine"] == engine) & io["usable"].astype(bool)]
            out = out.sort_values("length_tokens")
            decode_rel = float(
                np.hypot(systematics.decode_rel(engine, dynamic=quantity == "dynamic"), systematics.gain_rel)
            )
            for r in out.itertuples():
                rows.append(
                    dict(
                        model=model,
                        engine=engine,
                        device_name=device,
                        quantity=quantity,
                        term="output_token",
                        length_tokens=float(r.length_tokens),
                        length_min_tokens=int(out["length_tokens"].min()),
                        length_max_tokens=int(out["length_tokens"].max()),
                        e_out_j=getattr(r, f"{p}_out_j"),
                        e_out_j_ci_low=getattr(r, f"{p}_out_j_ci_low"),
                        e_out_j_ci_high=getattr(r, f"{p}_out_j_ci_high"),
                        output_tokens_measured=float(r.output_tokens),
                        sys_rel=decode_rel,
                        note="",
                    )
                )
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return table


def _chi2_limit(dof: int) -> float:
    from ctxenergy.analysis.scaling import chi2_limit

    return chi2_limit(dof)


# ---- the estimate -----------------------------------------------------------------------------------------------


@dataclass
class Estimate:
    """GPU energy of one request in one quantity (total or dynamic), with 95 % half-widths in joules."""

    quantity: str
    prefill_j: float
    prefill_stat_j: float
    prefill_sys_j: float
    decode_steps: int
    e_out_j: float
    e_out_stat_j: float
    decode_j: float
    decode_stat_j: float
    decode_sys_j: float
    decode_length_tokens: float  # L_eff at which E_out was read
    decode_method: str

    @property
    def total_j(self) -> float:
        return self.prefill_j + self.decode_j

    @property
    def stat_j(self) -> float:
        return float(np.hypot(self.prefill_stat_j, self.decode_stat_j))

    @property
    def sys_j(self) -> float:
        return self.prefill_sys_j + self.decode_sys_j

    @property
    def band_j(self) -> float:
        """Total 95 % half-width: statistical and systematic in quadrature."""
        return float(np.hypot(self.stat_j, self.sys_j))

    def as_dict(self) -> dict:
        return {
            "quantity": self.quantity,
            "energy_j": self.total_j,
            "stat_half_width_j": self.stat_j,
            "sys_half_width_j": self.sys_j,
            "total_half_width_j": self.band_j,
            "prefill_j": self.prefill_j,
            "prefill_stat_half_width_j": self.prefill_stat_j,
            "prefill_sys_half_width_j": self.prefill_sys_j,
            "decode_steps": self.decode_steps,
            "e_out_j": self.e_out_j,
            "e_out_stat_half_width_j": self.e_out_stat_j,
            "decode_j": self.decode_j,
            "decode_stat_half_width_j": self.decode_stat_j,
            "decode_sys_half_width_j": self.decode_sys_j,
            "decode_length_tokens": self.decode_length_tokens,
            "decode_method": self.decode_method,
        }


@dataclass
class RequestEstimate:
    model: str
    engine: str
    device_name: str
    input_tokens: int
    output_tokens: int
    by_quantity: dict[str, Estimate]
    notes: list[str] = field(default_factory=list)
    extrapolated: bool = False

    def as_dict(self) -> dict:
        return {
            "model": self.model,
            "engine": self.engine,
            "device_name": self.device_name,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "extrapolated": self.extrapolated,
            "notes": self.notes,
            "estimates": [e.as_dict() for e in self.by_quantity.values()],
        }


def prefill_energy(row: pd.Series, n: float) -> tuple[float, float]:
    """E_prefill(n) of a prefill row of the cost model and its statistical 95 % half-width (the fit's statistical
    covariance propagated: 1.96 sqrt(x' C x) with x = (1, n, n^2))."""
    x = np.array([1.0, n, n * n])
    coef = np.array([row["a_j"], row["b_j_per_token"], row["c_j_per_token2"]], dtype=float)
    cov = np.zeros((3, 3))
    for (i, j), name in COV_STAT_COLUMNS.items():
        cov[i, j] = cov[j, i] = row[name]
    return float(x @ coef), float(Z975 * math.sqrt(max(x @ cov @ x, 0.0)))


def output_token_energy(rows: pd.DataFrame, length: float, extrapolate: bool) -> tuple[float, float, float, str]:
    """E_out at L = length from the output_token rows (sorted by L): (E_out, its statistical 95 % half-width, the L
    used, how it was read). Linear between the two neighbouring measured L; outside them the nearest measured L, or
    with extrapolate the line through the two end rows."""
    L = rows["length_tokens"].to_numpy(float)
    e = rows["e_out_j"].to_numpy(float)
    h = ((rows["e_out_j_ci_high"] - rows["e_out_j_ci_low"]) / 2).to_numpy(float)
    exact = np.flatnonzero(L == length)
    if exact.size:
        k = int(exact[0])
        return e[k], h[k], length, f"measured at L = {L[k]:,.0f}"
    if L.size == 1 or (not extrapolate and (length < L[0] or length > L[-1])):
        k = 0 if length < L[0] else L.size - 1
        return e[k], h[k], L[k], f"nearest measured L = {L[k]:,.0f} (L_eff = {length:,.0f} is outside the measured L)"
    i = int(np.clip(np.searchsorted(L, length) - 1, 0, L.size - 2))
    w = (length - L[i]) / (L[i + 1] - L[i])
    value = (1 - w) * e[i] + w * e[i + 1]
    half = float(np.hypot((1 - w) * h[i], w * h[i + 1]))
    how = "interpolated" if 0 <= w <= 1 else "extrapolated"
    return value, half, length, f"{how} at L = {length:,.0f} between L = {L[i]:,.0f} and {L[i + 1]:,.0f}"


def load_cost_model(analysis_dir: str | Path = REFERENCE_ANALYSIS) -> pd.DataFrame:
    path = Path(analysis_dir) / "cost_model.parquet"
    if not path.is_file():
        raise CtxEnergyError(
            f"{path}: no cost model there; run the workflow's analysis (`snakemake "
            f"{ANALYSIS_DIR}/cost_model.parquet`) or leave --analysis out for the reference campaign"
        )

    table = pd.read_parquet(path)
    version = table["schema_version"].iloc[0] if "schema_version" in table and len(table) else None
    if version != DERIVED_SCHEMA_VERSION:
        raise CtxEnergyError(
            f"{path}: schema_version {version}, this ctxenergy reads {DERIVED_SCHEMA_VERSION}; "
            "rerun the analysis (`ctxenergy analyze`)"
        )
    try:
        check_table("cost_model", table)
    except CtxEnergyError as exc:
        raise CtxEnergyError(f"{path}: {exc}; rerun the analysis (`ctxenergy analyze`)") from None
    return table


def estimate(
    cost: pd.DataFrame, model: str, engine: str, input_tokens: int, output_tokens: int, extrapolate: bool = False
) -> RequestEstimate:
    """The energy of a request of input_tokens and output_tokens (batch 1) from the cost model's rows of one model
    and engine; a CtxEnergyError names what is missing or outside the measured range (unless extrapolate)."""
    if input_tokens < 1 or output_tokens < 1:
        raise CtxEnergyError(
            f"--input {input_tokens} / --output {output_tokens}: a request has at least 1 input "
            "and 1 output token (the first output token is the prefill's)"
        )
    pair = cost[(cost["model"] == model) & (cost["engine"] == engine)]
    if pair.empty:
        known = ", ".join(sorted({f"{m}/{e}" for m, e in zip(cost["model"], cost["engine"])}))
        raise CtxEnergyError(f"--model {model} --engine {engine}: not in the cost model (it has: {known})")
    notes, extrapolated, results = [], False, {}
    for quantity in QUANTITIES:
        rows = pair[pair["quantity"] == quantity]
        pre = rows[rows["term"] == "prefill"]
        out = rows[rows["term"] == "output_token"].sort_values("length_tokens")
        if pre.empty:
            raise CtxEnergyError(
                f"{model}/{engine}: no prefill fit in the cost model (fewer than 3 usable prefill "
                "cells); measure more lengths"
            )
        pre = pre.iloc[0]
        lo, hi = int(pre["length_min_tokens"]), int(pre["length_max_tokens"])
        outside = []
        if not lo <= input_tokens <= hi:
            outside.append(f"--input {input_tokens:,} is outside the measured prefill range L = {lo:,} ... {hi:,}")
        steps = output_tokens - 1
        if steps and out.empty:
            raise CtxEnergyError(
                f"{model}/{engine}: no usable generate cell in the cost model, so no energy per "
                "output token; use --output 1 for the prefill alone"
            )
        g_measured = float(out["output_tokens_measured"].median()) if steps else float(output_tokens)
        if steps:
            top = float(out["length_tokens"].max()) + g_measured - 1
            if input_tokens + output_tokens - 1 > top:
                outside.append(
                    f"the request's context reaches {input_tokens + output_tokens - 1:,} tokens, beyond "
                    f"the largest measured decode context ({top:,.0f})"
                )
        if outside and not extrapolate:
            raise CtxEnergyError(
                f"{model}/{engine}: {'; '.join(outside)}; the cost model holds only measured "
                "lengths (pass --extrapolate to compute anyway, flagged)"
            )
        if outside and quantity == "total":
            notes += [f"EXTRAPOLATED: {o}" for o in outside]
        extrapolated = extrapolated or bool(outside)
        prefill_j, prefill_stat = prefill_energy(pre, input_tokens)
        if steps:
            l_eff = input_tokens + (output_tokens - g_measured) / 2
            e_out, e_out_stat, l_used, how = output_token_energy(out, l_eff, extrapolate)
            decode_rel = float(out["sys_rel"].iloc[0])
        else:
            e_out, e_out_stat, l_used, how, decode_rel = 0.0, 0.0, math.nan, "no decode step (1 output token)", 0.0
        results[quantity] = Estimate(
            quantity=quantity,
            prefill_j=prefill_j,
            prefill_stat_j=prefill_stat,
            prefill_sys_j=abs(prefill_j) * float(pre["sys_rel"]),
            decode_steps=steps,
            e_out_j=e_out,
            e_out_stat_j=e_out_stat,
            decode_j=steps * e_out,
            decode_stat_j=steps * e_out_stat,
            decode_sys_j=abs(steps * e_out) * decode_rel,
            decode_length_tokens=l_used,
            decode_method=how,
        )
        if quantity == "total" and pre["note"]:
            notes.append(f"prefill: {pre['note']}")
    return RequestEstimate(
        model=model,
        engine=engine,
        device_name=str(pair["device_name"].iloc[0]),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        by_quantity=results,
        notes=notes,
        extrapolated=extrapolated,
    )


def format_estimate(r: RequestEstimate, source: str) -> str:
    def band(e: Estimate) -> str:
        return (
            f"{e.total_j:,.1f} J  [stat {e.total_j - e.stat_j:,.1f}, {e.total_j + e.stat_j:,.1f}]  "
            f"[total {e.total_j - e.band_j:,.1f}, {e.total_j + e.band_j:,.1f}]"
        )

    t, d = r.by_quantity["total"], r.by_quantity["dynamic"]
    lines = [
        f"{r.model} / {r.engine} on {r.device_name or 'an unnamed device'}: {r.input_tokens:,} input + "
        f"{r.output_tokens:,} output tokens, batch 1 (95 % intervals; total adds the systematic band)",
        f"  GPU energy, total:       {band(t)}",
        f"  GPU energy, above idle:  {band(d)}",
        f"  prefill E({r.input_tokens:,}): {t.prefill_j:,.1f} J total ({t.prefill_stat_j:,.2f} stat, "
        f"{t.prefill_sys_j:,.1f} sys), {d.prefill_j:,.1f} J above idle",
    ]
    if t.decode_steps:
        lines.append(
            f"  decode {t.decode_steps:,} x E_out: {t.decode_steps:,} x {t.e_out_j:.4g} J = "
            f"{t.decode_j:,.1f} J total, {t.decode_steps:,} x {d.e_out_j:.4g} J = {d.decode_j:,.1f} J above "
            f"idle; E_out {t.decode_method}"
        )
    else:
        lines.append("  decode: none (the only output token is the prefill's)")
    lines += [f"  note: {n}" for n in r.notes]
    lines.append(f"  source: {source} (docs/cost-model.md)")
    return "\n".join(lines)


def main(args) -> int:
    source = Path(args.analysis) if args.analysis else REFERENCE_ANALYSIS
    cost = load_cost_model(source)
    result = estimate(cost, args.model, args.engine, args.input, args.output, extrapolate=args.extrapolate)
    shown = source.relative_to(REPO_ROOT) if source.resolve().is_relative_to(REPO_ROOT) else source
    if args.json:
        print(json.dumps({**result.as_dict(), "source": str(shown)}, indent=2))
    else:
        print(format_estimate(result, str(shown / "cost_model.parquet")))
    return 0


# ---- the export beside the Parquet table ------------------------------------------------------------------------


def cost_model_document(table: pd.DataFrame) -> dict:
    """The cost model as one JSON document: per model, engine and quantity, the prefill fit and E_out per L."""

    def clean(v):
        if isinstance(v, (float, np.floating)):
            return None if not np.isfinite(v) else float(v)
        if isinstance(v, (np.integer,)):
            return int(v)
        if isinstance(v, (np.bool_,)):
            return bool(v)
        return v

    entries = []
    for (model, engine, quantity), g in table.groupby(["model", "engine", "quantity"], sort=False):
        pre = g[g["term"] == "prefill"]
        out = g[g["term"] == "output_token"].sort_values("length_tokens")
        entry = {"model": model, "engine": engine, "device_name": g["device_name"].iloc[0], "quantity": quantity}
        if len(pre):
            p = pre.iloc[0]
            entry["prefill"] = {
                k: clean(p[k])
                for k in [
                    "length_min_tokens",
                    "length_max_tokens",
                    "a_j",
                    "b_j_per_token",
                    "c_j_per_token2",
                    *COV_STAT_COLUMNS.values(),
                    "chi2_per_dof",
                    "quadratic_describes",
                    "sys_rel",
                    "note",
                ]
            }
        if len(out):
            entry["output_token"] = {
                "sys_rel": clean(out["sys_rel"].iloc[0]),
                "output_tokens_measured": clean(out["output_tokens_measured"].iloc[0]),
                "points": [
                    {k: clean(r[k]) for k in ["length_tokens", "e_out_j", "e_out_j_ci_low", "e_out_j_ci_high"]}
                    for _, r in out.iterrows()
                ],
            }
        entries.append(entry)
    return {
        "schema_version": int(table["schema_version"].iloc[0]) if len(table) else None,
        "description": "GPU energy of a batch-1 request: E(N, G) = a + b N + c N^2 + (G - 1) E_out(N + (G - "
        "G_m) / 2); docs/cost-model.md",
        "units": {"energy": "J", "length": "tokens", "sys_rel": "relative 95 % half-width"},
        "entries": entries,
    }


def write_exports(table: pd.DataFrame, parquet_path: Path) -> list[Path]:
    """cost_model.csv and cost_model.json beside cost_model.parquet."""
    from ctxenergy.tables import write_text

    csv, js = parquet_path.with_suffix(".csv"), parquet_path.with_suffix(".json")
    write_text(table.to_csv(index=False, float_format="%.10g"), csv)
    write_text(json.dumps(cost_model_document(table), indent=1) + "\n", js)
    return [csv, js]
