"""Per-cell metrics on the real H200 reference cells (read from data/reference, not copied)."""

import numpy as np
import pandas as pd
import pytest
from conftest import reference_cells, reference_tables

from ctxenergy.analysis.cells import prepare_cells
from ctxenergy.analysis.derive import model_archs
from ctxenergy.analysis.per_cell import decode_bytes, per_cell_metrics
from ctxenergy.flops import decode_step_bytes
from ctxenergy.tables import read_cell


@pytest.fixture(scope="module")
def raw():
    return reference_cells()


@pytest.fixture(scope="module")
def windows():
    return {str(w["cell_id"].iloc[0]): w for w in (read_cell(p)[0] for p in reference_tables())}


@pytest.fixture(scope="module")
def pc(raw, windows):
    return per_cell_metrics(prepare_cells(raw), windows, model_archs(["llama-3.1-8b"]))


def test_energy_per_token_divides_by_the_tokens_of_a_run(pc):
    pre, gen = pc[pc["phase"] == "prefill"], pc[pc["phase"] == "generate"]
    assert np.allclose(pre["energy_per_token_j"], pre["energy_per_run_j"] / pre["length_tokens"])
    assert np.allclose(gen["energy_per_token_j"], gen["energy_per_run_j"] / (gen["length_tokens"] + 128))
    assert np.allclose(pc["latency_per_token_ms"], pc["run_s"] * 1e3 / pc["tokens_per_run"])
    for col in ("energy_per_token_j", "dynamic_energy_per_token_j", "latency_per_token_ms", "mean_power_w"):
        assert (pc[f"{col}_ci_low"] <= pc[col] * 1.05).all() and (pc[f"{col}_ci_high"] >= pc[col] * 0.95).all()
    assert (pc["dynamic_energy_per_token_j"] < pc["energy_per_token_j"]).all()


def test_achieved_tflops_matches_what_measure_recorded_and_stays_below_peak(raw, pc):
    pre = pc[pc["phase"] == "prefill"].set_index("cell_id")
    recorded = raw.set_index("cell_id").loc[pre.index, "achieved_tflops"].astype(float)
    assert np.allclose(pre["achieved_tflops"], recorded, rtol=1e-9)
    assert (pre["achieved_tflops"] < 989.0).all()
    assert np.allclose(pre["tflops_share_of_peak"], pre["achieved_tflops"] / 989.0)
    # a longer prefill time is a lower rate: the bounds swap
    assert (pre["achieved_tflops_ci_low"] <= pre["achieved_tflops"]).all()
    assert pc.loc[pc["phase"] == "generate", "achieved_tflops"].isna().all()


def test_decode_time_comes_from_each_window_and_bandwidth_stays_below_peak(pc, windows):
    gen = pc[pc["phase"] == "generate"].sort_values("length_tokens")
    w = windows["llama-3.1-8b/hf-sdpa/generate/L1024"]
    expected = float(np.median(w["run_s"] - w["prefill_s"]))
    assert gen.set_index("cell_id").loc["llama-3.1-8b/hf-sdpa/generate/L1024", "decode_s"] == pytest.approx(expected)
    assert gen["decode_bytes"].is_monotonic_increasing  # the KV cache read grows with L
    assert (gen["achieved_mem_tb_s"] < 4.8).all() and (gen["achieved_mem_tb_s"] > 0).all()
    assert np.allclose(gen["decode_ms_per_token"], gen["decode_s"] * 1e3 / 127)
    assert pc.loc[pc["phase"] == "prefill", "achieved_mem_tb_s"].isna().all()


def test_decode_bytes_sum_g_minus_one_steps():
    arch = model_archs(["llama-3.1-8b"])["llama-3.1-8b"]
    assert decode_bytes(arch, 1000, 3) == decode_step_bytes(arch, 1001) + decode_step_bytes(arch, 1002)
    assert np.isnan(decode_bytes(None, 1000, 3)) and np.isnan(decode_bytes(arch, 1000, 1))


def test_unusable_cells_keep_their_row_status_and_reason(raw):
    df = raw.copy()
    energy_cols = [c for c in df if c.startswith(("energy_per_run_j", "dynamic_energy_per_run_j", "mean_power_w"))]
    oom = df["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L16384"
    df.loc[oom, energy_cols + ["run_s", "prefill_s", "n_windows"]] = np.nan
    df.loc[oom, ["status", "status_reason"]] = ["oom", "out of device memory"]
    cpu = df["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L256"
    df.loc[cpu, energy_cols] = np.nan
    df.loc[cpu, "flags"] = "no_energy"
    fast = df["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L512"
    df.loc[fast, ["status", "flags"]] = ["implausible", "implausible"]
    cells = prepare_cells(df)
    out = per_cell_metrics(cells).set_index("cell_id")
    assert len(out) == len(df)
    assert out.loc["llama-3.1-8b/hf-sdpa/prefill/L16384", "excluded_reason"].startswith("status oom")
    assert out.loc["llama-3.1-8b/hf-sdpa/prefill/L256", "excluded_reason"].startswith("no_energy")
    assert out.loc["llama-3.1-8b/hf-sdpa/prefill/L512", "excluded_reason"].startswith("status implausible")
    assert out["usable"].sum() == len(df) - 3
    assert np.isnan(out.loc["llama-3.1-8b/hf-sdpa/prefill/L16384", "energy_per_token_j"])
    # timings stay: a CPU cell still has a latency per token
    assert np.isfinite(out.loc["llama-3.1-8b/hf-sdpa/prefill/L256", "latency_per_token_ms"])


def test_cpu_tables_store_none_and_still_load(raw):
    """CPU cells store None in numeric metadata columns (object dtype); the analysis must coerce, not crash."""
    df = raw.copy()
    for col in (
        "idle_power_w",
        "peak_bf16_tflops",
        "peak_mem_tb_s",
        "power_limit_w",
        "achieved_tflops",
        "driver_version",
    ):
        df[col] = pd.Series([None] * len(df), dtype=object)
    cells = prepare_cells(df)
    assert cells["idle_power_w"].dtype == float and cells["idle_power_w"].isna().all()
    assert (cells["driver_version"] == "").all()
    out = per_cell_metrics(cells)
    assert out["tflops_share_of_peak"].isna().all() and out["achieved_tflops"].notna().any()


def test_a_time_interval_reaching_zero_leaves_the_rate_open(raw):
    """Three noisy windows on a CPU can give a time interval below 0; the rate's upper bound is then unknown."""
    df = raw.copy()
    cell = df["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L1024"
    df.loc[cell, "prefill_s_ci_low"] = -0.01
    out = per_cell_metrics(prepare_cells(df)).set_index("cell_id").loc["llama-3.1-8b/hf-sdpa/prefill/L1024"]
    assert np.isnan(out["achieved_tflops_ci_high"])
    assert 0 < out["achieved_tflops_ci_low"] < out["achieved_tflops"]
