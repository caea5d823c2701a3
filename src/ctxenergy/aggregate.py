"""All cells -> one tidy table, one row per cell, with the median and 95 % interval over its windows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ctxenergy.config import check_cell_settings
from ctxenergy.errors import CtxEnergyError
from ctxenergy.measure import below_min_window
from ctxenergy.stats import summarize
from ctxenergy.tables import SUMMARISED, read_cell, write_table

FIRST = [
    "schema_version",
    "cell_id",
    "model",
    "engine",
    "phase",
    "length_tokens",
    "output_tokens",
    "batch_size",
    "engine_variant",
    "status",
    "status_reason",
    "flags",
]


def summarize_cell(windows: pd.DataFrame, meta: dict) -> dict:
    row = windows.iloc[0].to_dict()
    for col in (
        "window",
        "runs",
        "work_s",
        "window_s",
        "run_s",
        "prefill_s",
        "raw_energy_j",
        "energy_j",
        "dynamic_energy_j",
        "energy_per_run_j",
        "dynamic_energy_per_run_j",
        "mean_power_w",
        "edge_uncertainty_j",
        "power_cap_fraction",
        "thermal_throttle",
        "foreign_process",
        "per_device_energy_j",
        "notes",
        "telemetry_faults",
    ):
        row.pop(col, None)
    for col in [c for c in list(row) if c.endswith(("_start", "_end"))]:
        row.pop(col)
    measured = windows[windows["window"] >= 0] if "window" in windows else windows.iloc[0:0]
    row["n_windows"] = len(measured)
    # the GPU time inside the measured windows, for the pipeline's cost (job time over measured time)
    row["measured_work_s"] = float(measured["work_s"].sum()) if "work_s" in measured and len(measured) else 0.0
    for col in SUMMARISED:
        s = summarize(measured[col].tolist()) if col in measured and len(measured) else summarize([])
        row[col] = s["median"]
        row[f"{col}_ci_low"] = s["ci_low"]
        row[f"{col}_ci_high"] = s["ci_high"]
    row["thermal_throttle"] = bool(measured["thermal_throttle"].any()) if "thermal_throttle" in measured else False
    row["foreign_process"] = bool(measured["foreign_process"].any()) if "foreign_process" in measured else False
    row["engine_settings"] = str(meta.get("engine_settings", {}))
    row["attention_kernels"] = attention_kernels_text(meta)
    for col in ("notes", "telemetry_faults"):  # per window, kept in the cell's row with the window they belong to
        texts = zip(measured["window"], measured[col]) if col in measured else []
        row[col] = "; ".join(f"window {w}: {t}" for w, t in texts if isinstance(t, str) and t)
    # Cells measured before measure._apply_validity set this flag get it here, from their windows and settings.
    flags = [f for f in str(row.get("flags") or "").split(",") if f]
    work_s = measured["work_s"].tolist() if "work_s" in measured else []
    if "below_min_window" not in flags and below_min_window(work_s, meta.get("settings", {}).get("min_window_s")):
        row["flags"] = ",".join(flags + ["below_min_window"])
    return row


class MalformedRecord(ValueError):
    """A metadata record the cell schema leaves to its reader, not in the form ctxenergy writes it."""


def attention_kernels_text(meta: dict) -> str:
    """The cell's attention_kernels record as one string for the table of cells (cell.schema.yaml, `cells`)."""
    kernels = meta.get("attention_kernels")
    if kernels is None:
        return "not recorded"
    if not isinstance(kernels, dict) or not all(isinstance(v, str) and " " not in k for k, v in kernels.items()):
        raise MalformedRecord(f"its metadata's attention_kernels is {str(kernels)[:80]!r}, not phase -> kernel name")
    return "; ".join(f"{phase} {kernel}" for phase, kernel in sorted(kernels.items(), reverse=True))  # prefill first


def _default_variant_first(column: pd.Series) -> pd.Series:
    """Sort key: the default variant before the named ones (which sort by name)."""
    return ("1" + column).where(column != "default", "0") if column.name == "engine_variant" else column


def aggregate(
    cell_paths: list[str | Path],
    out_path: str | Path,
    config: dict | None = None,
    settings_source: str = "config",
    allow_mixed_settings: bool = False,
) -> pd.DataFrame:
    """One row per cell file (each read through the cell schema); with `config`, the cells' settings are checked
    against it (check_cell_settings) before anything is written."""
    rows, seen = [], {}
    for path in cell_paths:
        windows, _, _, meta = read_cell(path)
        try:
            row = summarize_cell(windows, meta)
        except MalformedRecord as exc:  # only that: any other failure is not the cell's record
            raise CtxEnergyError(f"{path}: {exc}; measure the cell again") from None
        if row["cell_id"] in seen:  # two rows of one cell would count it twice in every fit
            raise CtxEnergyError(
                f"{seen[row['cell_id']]} and {path}: the same cell {row['cell_id']} twice; keep "
                "one of them (or aggregate the two folders separately)"
            )
        seen[row["cell_id"]] = path
        rows.append(row)
    if config is not None:
        check_cell_settings(rows, config, settings_source, allow_mixed_settings)
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df[[c for c in FIRST if c in df] + [c for c in df if c not in FIRST]]
        df = df.sort_values(
            ["model", "engine", "engine_variant", "phase", "batch_size", "length_tokens"], key=_default_variant_first
        ).reset_index(drop=True)
    write_table(df, out_path)
    return df
