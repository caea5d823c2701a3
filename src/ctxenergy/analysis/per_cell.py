"""Per-cell metrics: J/token (total and above idle), ms/token, mean power, achieved TFLOP/s and memory bandwidth.

Tokens of a run: L for a prefill cell (the input tokens; its one output token comes from the prefill itself), and
L + G for a generate cell (every token of the request). Prefill cells also get the achieved TFLOP/s against the
device's dense bf16 peak; generate cells get the decode time (run minus time to first token), its G - 1 steps and
the memory bandwidth they achieved against the device's peak (weights + KV cache read once per step, ctxenergy.flops).

A batched cell (batch_size B: B distinct prompts of L tokens, each decoding G tokens) runs B times the tokens: every
per-token quantity divides by B as well (J per input token = E_prefill / (B L)), and latency per token is GPU time
per token of the batch. A decode step serves all B sequences: decode_ms_per_token stays the time of one step (what
each sequence waits per output token), and the bytes of a step are the weights once and B KV caches.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.cells import batch_sizes, with_serving
from ctxenergy.analysis.uncertainty import half_width
from ctxenergy.flops import decode_step_bytes
from ctxenergy.stats import summarize

IDENTITY = [
    "cell_id",
    "model",
    "engine",
    "phase",
    "length_tokens",
    "output_tokens",
    "status",
    "status_reason",
    "flags",
    "usable",
    "excluded_reason",
    "n_windows",
    "device_name",
    "device_uuid",
    "driver_version",
    "torch_version",
    "engine_version",
    "meter_method",
    "host_cpu",
    "power_limit_w",
    "idle_power_w",
    "peak_bf16_tflops",
    "peak_mem_tb_s",
]
# Recorded by cells of schema_version 2 (ctxenergy.telemetry.memory, ctxenergy.stats.run_latency): carried where the
# table of cells has them, NaN for the older cells beside them; a table of older cells alone has none of them.
CELL_METRICS = [
    "torch_peak_allocated_gib",
    "torch_peak_reserved_gib",
    "nvml_peak_memory_used_gib",
    "memory_total_gib",
    "run_p50_s",
    "run_p90_s",
    "run_p99_s",
]


def _scaled(df: pd.DataFrame, col: str, factor, out: dict, name: str) -> None:
    """name (+ _ci_low/_ci_high) = col * factor; a negative factor would swap the bounds, none is used."""
    for suffix in ("", "_ci_low", "_ci_high"):
        out[name + suffix] = df[col + suffix].to_numpy(float) * factor


def _rate(numerator, seconds) -> np.ndarray:
    """numerator / seconds, NaN where the time is not positive: a time interval that reaches 0 (few, noisy windows)
    leaves the rate's upper bound open, and NaN says so rather than a negative rate."""
    t = np.asarray(seconds, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, numerator / t, np.nan)


def _inverse(numerator, df: pd.DataFrame, col: str, out: dict, name: str) -> None:
    """name = numerator / col: the interval's bounds swap (a longer time is a lower rate)."""
    out[name] = _rate(numerator, df[col])
    out[name + "_ci_low"] = _rate(numerator, df[col + "_ci_high"])
    out[name + "_ci_high"] = _rate(numerator, df[col + "_ci_low"])


def decode_times(cells: pd.DataFrame, windows: dict[str, pd.DataFrame] | None) -> pd.DataFrame:
    """Decode seconds per run (median and 95 % interval): run_s - prefill_s window by window where the windows are
    given (the two share runs, so their errors cancel); otherwise from the cell medians, intervals in quadrature."""
    rows = []
    for _, c in cells.iterrows():
        w = (windows or {}).get(c["cell_id"])
        if w is not None and "window" in w and (w["window"] >= 0).any():
            m = w[w["window"] >= 0]
            s = summarize((pd.to_numeric(m["run_s"]) - pd.to_numeric(m["prefill_s"])).tolist())
            rows.append((s["median"], s["ci_low"], s["ci_high"]))
        else:
            point = c["run_s"] - c["prefill_s"]
            h = np.hypot(
                half_width(c["run_s_ci_low"], c["run_s_ci_high"]),
                half_width(c["prefill_s_ci_low"], c["prefill_s_ci_high"]),
            )
            rows.append((point, point - h, point + h))
    return pd.DataFrame(rows, columns=["decode_s", "decode_s_ci_low", "decode_s_ci_high"], index=cells.index)


def decode_bytes(arch: dict | None, length: int, tokens: int, batch: int = 1) -> float:
    """Bytes the G - 1 decode steps of a generate run stream: weights + the KV cache at each step's context (the
    weights once and B caches for a batch of B sequences)."""
    if arch is None or tokens < 2:
        return float("nan")
    if batch == 1:
        return float(sum(decode_step_bytes(arch, length + i) for i in range(1, tokens)))
    weights = decode_step_bytes(arch, 0)
    return float(sum(weights + batch * (decode_step_bytes(arch, length + i) - weights) for i in range(1, tokens)))


def per_cell_metrics(
    cells: pd.DataFrame, windows: dict[str, pd.DataFrame] | None = None, archs: dict[str, dict | None] | None = None
) -> pd.DataFrame:
    """One row per cell (every status), metrics NaN where the cell has no measurement."""
    df = cells
    out: dict = {"schema_version": np.full(len(df), ctxenergy.SCHEMA_VERSION)}
    for col in with_serving(IDENTITY, df):
        out[col] = df[col].to_numpy()
    for col in CELL_METRICS:
        if col in df:
            out[col] = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
    if "attention_kernels" in df:  # tables aggregated since cells record it
        out["attention_kernels"] = df["attention_kernels"].fillna("not recorded").astype(str).to_numpy()
    prefill = (df["phase"] == "prefill").to_numpy()
    batch = batch_sizes(df)
    tokens = np.where(prefill, df["length_tokens"], df["length_tokens"] + df["output_tokens"]).astype(float) * batch
    out["tokens_per_run"] = tokens
    for col in [
        "energy_per_run_j",
        "dynamic_energy_per_run_j",
        "run_s",
        "prefill_s",
        "mean_power_w",
        "power_cap_fraction",
    ]:
        _scaled(df, col, 1.0, out, col)
    _scaled(df, "energy_per_run_j", 1.0 / tokens, out, "energy_per_token_j")
    _scaled(df, "dynamic_energy_per_run_j", 1.0 / tokens, out, "dynamic_energy_per_token_j")
    _scaled(df, "run_s", 1000.0 / tokens, out, "latency_per_token_ms")

    # Compute rate of the prefill; for a generate cell the prefill is a small part of the run, so none is given.
    flops = np.where(prefill, df["flops_per_run"], np.nan) / 1e12
    _inverse(flops, df, "prefill_s", out, "achieved_tflops")
    peak = df["peak_bf16_tflops"].to_numpy(float)
    for s in ("", "_ci_low", "_ci_high"):
        out["tflops_share_of_peak" + s] = out["achieved_tflops" + s] / peak

    dec = decode_times(df, windows)
    steps = np.where(prefill, np.nan, df["output_tokens"] - 1).astype(float)
    for s in ("", "_ci_low", "_ci_high"):
        out["decode_s" + s] = np.where(prefill, np.nan, dec["decode_s" + s])
        out["decode_ms_per_token" + s] = out["decode_s" + s] * 1000.0 / steps
    archs = archs or {}
    nbytes = np.array(
        [
            np.nan if p else decode_bytes(archs.get(m), int(L), int(g), int(b))
            for p, m, L, g, b in zip(prefill, df["model"], df["length_tokens"], df["output_tokens"], batch)
        ]
    )
    out["decode_bytes"] = nbytes
    out["achieved_mem_tb_s"] = _rate(nbytes / 1e12, out["decode_s"])
    out["achieved_mem_tb_s_ci_low"] = _rate(nbytes / 1e12, out["decode_s_ci_high"])
    out["achieved_mem_tb_s_ci_high"] = _rate(nbytes / 1e12, out["decode_s_ci_low"])
    mem_peak = df["peak_mem_tb_s"].to_numpy(float)
    for s in ("", "_ci_low", "_ci_high"):
        out["mem_share_of_peak" + s] = out["achieved_mem_tb_s" + s] / mem_peak
    return pd.DataFrame(out)
