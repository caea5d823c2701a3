"""The table of cells as the analysis sees it: numeric columns as numbers, and which cells may enter a fit.

A cell stays in every table with its status; only `usable` cells enter fits, ratios and thresholds, and
`excluded_reason` says in words why a cell did not.

The serving axes: a cell of a batched grid prefills B distinct prompts of L tokens together (`batch_size`), and a
vLLM cell may run with an engine option set (`engine_variant`: chunked prefill, prefix caching). Tables of cells
measured before these axes have neither column: they read as batch 1, variant "default", and every derived table
then keeps exactly its former columns (the axes join a table's key only where the cells carry them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# One fixed order of engines (the registry's): the baseline first, so a ratio "a / b" reads "how much more the
# baseline costs". Tables and figures sort by it.
from ctxenergy.engines.registry import engine_rank as engine_rank
from ctxenergy.tables import SUMMARISED

# Flags that make a cell's energy unusable (others, such as short_window, stay visible but keep the cell).
EXCLUDING_FLAGS = {
    "no_energy": "energy not measured on this host (no readable energy counter)",
    "foreign_process": "another process used the GPU during a window",
    "implausible": "faster than the device's peak allows",
}

NUMERIC = [
    "length_tokens",
    "output_tokens",
    "power_limit_w",
    "counter_period_s",
    "idle_power_w",
    "runs_per_window",
    "flops_per_run",
    "peak_bf16_tflops",
    "peak_mem_tb_s",
    "achieved_tflops",
    "n_windows",
]
TEXT = [
    "cell_id",
    "model",
    "engine",
    "phase",
    "status",
    "status_reason",
    "flags",
    "device_name",
    "driver_version",
    "torch_version",
    "engine_version",
    "meter_method",
    "weights",
    "tokenizer",
    "host_cpu",
    "device_uuid",
]


# The serving axes, in the order they join a key after the engine; their values in a table that lacks them.
SERVING_AXES = {"engine_variant": "default", "batch_size": 1}


def serving_axes(df: pd.DataFrame) -> list[str]:
    """The serving axes this table carries (none for a table of batch-1 cells measured before them)."""
    return [c for c in SERVING_AXES if c in df]


def with_serving(base: list[str], df: pd.DataFrame) -> list[str]:
    """A grouping key with the table's serving axes inserted after the engine: (model, engine, engine_variant,
    batch_size, ...); the key unchanged for a table without them."""
    axes = serving_axes(df)
    i = base.index("engine") + 1 if "engine" in base else len(base)
    return base[:i] + axes + base[i:]


def batch_sizes(df: pd.DataFrame) -> np.ndarray:
    """B of each row as floats (1 where the table has no batch axis): the divisor of every per-token quantity."""
    return df["batch_size"].to_numpy(float) if "batch_size" in df else np.ones(len(df))


def serial(df: pd.DataFrame) -> pd.DataFrame:
    """The rows measured as the paper measured: one request at a time (B = 1), the engine's default settings."""
    keep = np.ones(len(df), dtype=bool)
    if "batch_size" in df:
        keep &= df["batch_size"].to_numpy() == 1
    if "engine_variant" in df:
        keep &= df["engine_variant"].to_numpy() == "default"
    return df if keep.all() else df[keep]


def has_serving(df: pd.DataFrame) -> bool:
    """Whether any row is a serving cell: B > 1 or an engine variant."""
    return len(serial(df)) < len(df)


def flag_list(flags) -> list[str]:
    if flags is None or (isinstance(flags, float) and np.isnan(flags)):
        return []
    return [f for f in str(flags).split(",") if f]


def _excluded_reason(row) -> str:
    if row["status"] != "ok":
        reason = f"status {row['status']}"
        return f"{reason}: {row['status_reason']}" if row["status_reason"] else reason
    for flag in flag_list(row["flags"]):
        if flag in EXCLUDING_FLAGS:
            return f"{flag}: {EXCLUDING_FLAGS[flag]}"
    if not np.isfinite(row["energy_per_run_j"]):
        return "no energy value"
    return ""


def prepare_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """A copy with numbers coerced (CPU cells store None), sorted, and `usable` / `excluded_reason` added."""
    df = cells.copy()
    for col in NUMERIC + [f"{c}{s}" for c in SUMMARISED for s in ("", "_ci_low", "_ci_high")]:
        df[col] = pd.to_numeric(df[col], errors="coerce").astype(float) if col in df else np.nan
    for col in TEXT:
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str) if col in df else ""
    df["length_tokens"] = df["length_tokens"].astype("int64")
    if "batch_size" in df:  # cells measured before the batch axis: B = 1
        df["batch_size"] = pd.to_numeric(df["batch_size"], errors="coerce").fillna(1).astype("int64")
    if "engine_variant" in df:
        v = df["engine_variant"].astype(object)
        df["engine_variant"] = v.where(v.notna() & (v != ""), "default").astype(str)
    if not has_serving(df):  # one request at a time, default settings: the paper's tables, without serving axes
        df = df.drop(columns=serving_axes(df))
    df["output_tokens"] = df["output_tokens"].fillna(1).astype("int64")
    df["excluded_reason"] = [_excluded_reason(r) for _, r in df.iterrows()] if len(df) else pd.Series(dtype=str)
    df["usable"] = df["excluded_reason"] == ""
    df["engine_rank"] = df["engine"].map(engine_rank)
    order = ["model", "engine_rank", *serving_axes(df), "phase", "length_tokens"]
    return df.sort_values(order).reset_index(drop=True)


def load_cells(path) -> pd.DataFrame:
    from ctxenergy.tables import read_cells_table

    return prepare_cells(read_cells_table(path))
