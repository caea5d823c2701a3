"""`ctxenergy calibrate` on the fake NVML: its pure logic, the whole protocol, and the benchmark's fail-fast path."""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from fake_nvml import FakeGpu, FakeLoad, FakeNvml

from ctxenergy.calibrate import (
    METHODS,
    CalibrationSettings,
    aligned_start,
    burst_estimates,
    bursts_needed,
    calibrate,
    claimed_gpu,
    error_pct,
    estimate_runtime_s,
    format_table,
    phase_offsets,
    settings_from_args,
    steady_estimates,
    summarise,
    windows_path,
)
from ctxenergy.cli import main as cli_main
from ctxenergy.errors import CtxEnergyError
from ctxenergy.gpus import LOCK_DIR_ENV, claim
from ctxenergy.tables import write_csv_or_parquet
from ctxenergy.telemetry.counter import CounterRead
from ctxenergy.telemetry.sampler import Trace

pytestmark = pytest.mark.slow


REPO = Path(__file__).resolve().parents[1]
REQUIRED = ["device", "method", "pattern", "window_s", "n_windows", "median_abs_error_pct", "max_abs_error_pct"]


# --- pure logic ---


def test_phase_offsets_cover_the_period_evenly():
    phases = phase_offsets(20, 0.1)
    assert len(phases) == 20 and all(0 <= p < 0.1 for p in phases)
    gaps = [b - a for a, b in zip(sorted(phases), sorted(phases)[1:])]
    assert max(gaps) < 0.1 / 20 * 2.5  # no hole in the period
    assert sorted(phases) != phases  # not a ramp: a drift over the run does not line up with the phase


def test_aligned_start_keeps_the_phase_and_the_earliest_start():
    assert aligned_start(10.0, 0.03, 0.1, earliest=10.0) == pytest.approx(10.03)
    assert aligned_start(10.0, 0.03, 0.1, earliest=10.25) == pytest.approx(10.33)
    assert aligned_start(10.0, 0.03, 0.1, earliest=10.33) == pytest.approx(10.33)


def test_bursts_needed_fills_the_reference_window():
    assert bursts_needed(20, 0.1, 0.5, 0.1, 15.0) == 24  # 0.65 s cycles: 20 would make only 13 s
    assert bursts_needed(20, 0.2, 0.5, 0.1, 15.0) == 20  # exactly 15 s
    assert bursts_needed(20, 2.0, 0.5, 0.1, 15.0) == 20


def test_error_pct():
    assert error_pct(103.0, 100.0) == pytest.approx(3.0)
    assert error_pct(None, 100.0) is None and error_pct(1.0, 0.0) is None and error_pct(float("nan"), 1.0) is None


def _flat(t0: float, t1: float, watts: list[tuple[float, float]], step: float = 0.01) -> Trace:
    """A trace sampled every `step` from a piecewise-constant profile [(from_t, watts), ...]."""
    tr = Trace()
    t = t0
    while t <= t1:
        tr.t.append(t)
        tr.power_w.append([w for start, w in watts if start <= t + 1e-12][-1])
        tr.reasons.append(0)
        t += step
    return tr


def test_burst_estimates_subtract_idle_over_each_methods_own_span():
    trace = _flat(0.0, 2.0, [(0.0, 100.0), (1.0, 600.0), (1.2, 100.0)])  # 100 J above idle in [1.0, 1.2]
    a, b = CounterRead(0.99, 5000.0), CounterRead(1.21, 5000.0 + 100.0 * 0.22 + 80.0)
    est = burst_estimates(a, b, 1.0, 1.2, 99.0, trace, trace, idle_w=100.0, tail_s=0.3)
    assert est["naive"] == pytest.approx(80.0)
    assert est["instant_integral"] == pytest.approx(100.0, abs=0.5)
    assert est["power_usage_integral"] == pytest.approx(100.0, abs=0.5)
    assert est["ours"] == 99.0
    assert set(est) == set(METHODS)


def test_steady_estimates_are_mean_power():
    trace = _flat(0.0, 2.0, [(0.0, 700.0)])
    est = steady_estimates(CounterRead(0.5, 0.0), CounterRead(1.0, 345.0), 280.0, 0.4, trace, trace)
    assert est == pytest.approx(
        {"naive": 690.0, "power_usage_integral": 700.0, "instant_integral": 700.0, "ours": 700.0}
    )


def test_summary_and_table():
    rows = []
    for i, err in enumerate([1.0, -2.0, 3.0]):
        for m in METHODS:
            rows.append(
                {
                    "pattern": "bursts",
                    "window_s": 0.2,
                    "window": i,
                    "method": m,
                    "truth": 100.0,
                    "unit": "J",
                    "error_pct": err * (10 if m == "naive" else 1),
                }
            )
    rows.append(
        {
            "pattern": "bursts",
            "window_s": 0.2,
            "window": 3,
            "method": "naive",
            "truth": 100.0,
            "unit": "J",
            "error_pct": None,
        }
    )
    summary = summarise(pd.DataFrame(rows), {"device": "NVIDIA H200", "counter_period_s": 0.1})
    assert list(summary.columns[: len(REQUIRED)]) == REQUIRED
    ours = summary.set_index("method").loc["ours"]
    assert ours["median_abs_error_pct"] == 2.0 and ours["max_abs_error_pct"] == 3.0 and ours["median_error_pct"] == 1.0
    assert summary.set_index("method").loc["naive", "n_windows"] == 3  # a window a method could not read is left out
    table = format_table(summary)
    assert "bursts" in table and "2.00 /   3.00 %" in table and "20.00 /  30.00 %" in table


def test_settings_from_args():
    args = argparse.Namespace(
        lengths="0.1,0.2,0.5,1,2", windows=20, truth_s=20.0, patterns="bursts,steady", quick=False
    )
    s = settings_from_args(args)
    assert s.lengths == (0.1, 0.2, 0.5, 1.0, 2.0) and s.n_windows == 20 and s.patterns == ("bursts", "steady")
    # the default run must fit the GPU budget (~5 minutes)
    assert 200 < estimate_runtime_s(s) < 300
    quick = settings_from_args(argparse.Namespace(**{**vars(args), "quick": True}))
    assert quick.lengths == (0.1, 0.2, 0.5) and estimate_runtime_s(quick) < 75
    with pytest.raises(CtxEnergyError):
        settings_from_args(argparse.Namespace(**{**vars(args), "lengths": "0.1,-1"}))


def test_outputs_paths(tmp_path):
    assert windows_path(tmp_path / "calibration.csv") == tmp_path / "calibration.windows.csv"
    assert windows_path(tmp_path / "c.parquet") == tmp_path / "c.windows.parquet"
    df = pd.DataFrame({"a": [1.0]})
    assert pd.read_csv(write_csv_or_parquet(df, tmp_path / "x" / "t.csv")).equals(df)
    assert pd.read_parquet(write_csv_or_parquet(df, tmp_path / "t.parquet")).equals(df)


# --- the protocol on the fake ---


def _hopper_like(**kw) -> FakeGpu:
    """Counter every 100 ms (4 ms reads), INSTANT averaging the last 25 ms, GetPowerUsage the last 1 s."""
    return FakeGpu(
        "GPU-cal", idle_w=125.0, read_cost_s=0.004, phase_s=0.037, instant_window_s=0.025, average_window_s=1.0, **kw
    )


def test_calibrate_on_the_fake_ranks_the_methods():
    g = _hopper_like()
    s = CalibrationSettings(
        lengths=(0.05, 0.2),
        n_windows=5,
        truth_s=1.5,
        bursts_truth_s=1.5,
        gap_s=0.4,
        tail_s=0.3,
        idle_s=0.5,
        warmup_s=0.3,
    )
    t0 = time.perf_counter()
    windows, meta = calibrate(FakeNvml([g]), FakeLoad([g], 575.0), s, log=lambda line: None)
    elapsed = time.perf_counter() - t0
    assert elapsed == pytest.approx(estimate_runtime_s(s), rel=0.3)  # the printed estimate can be trusted
    assert meta["device"] == "NVIDIA H200" and meta["counter_period_s"] == pytest.approx(0.1, abs=0.01)
    assert meta["bursts_0.2s"]["truth_j"] == pytest.approx(575.0 * 0.2, rel=0.01)
    assert meta["steady"]["truth_w"] == pytest.approx(700.0, rel=0.005)

    summary = summarise(windows, meta).set_index(["pattern", "window_s", "method"])
    assert len(summary) == 2 * 2 * 4 and (summary["n_windows"] >= 5).all()
    err = summary["median_abs_error_pct"]
    for w in (0.05, 0.2):
        assert err["bursts", w, "ours"] < 3.0
        assert err["bursts", w, "naive"] > 3 * err["bursts", w, "ours"] and err["bursts", w, "naive"] > 5.0
        assert err["bursts", w, "power_usage_integral"] > 10.0  # a 1 s average misses a short burst
        assert err["steady", w, "ours"] < 2.0
    assert err["bursts", 0.05, "instant_integral"] > 20.0  # 25 ms of every 100 ms: a 50 ms burst is mostly unseen
    assert set(windows["method"]) == set(METHODS) and windows["phase_s"].nunique() > 3


def test_calibrate_refuses_a_gpu_without_counter():
    g = FakeGpu("GPU-x", has_counter=False)
    with pytest.raises(CtxEnergyError, match="no energy counter"):
        calibrate(FakeNvml([g]), FakeLoad([g]), CalibrationSettings(patterns=("bursts",)), log=lambda line: None)
    with pytest.raises(CtxEnergyError, match="unknown calibration pattern"):
        calibrate(FakeNvml([g]), FakeLoad([g]), CalibrationSettings(patterns=("sawtooth",)), log=lambda line: None)


# --- without a GPU: one line, from the CLI and from the benchmark ---


def test_cli_calibrate_without_nvml_is_one_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert cli_main(["calibrate", "--out", str(tmp_path / "c.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ctxenergy: NVML is not available")
    assert not (tmp_path / "c.csv").exists()


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("energy_accuracy", REPO / "benchmarks" / "energy_accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_fails_fast_in_one_line_without_a_gpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CUDA_VISIBLE_DEVICES": ""}
    # With the driver absent NVML refuses; with a GPU present, the empty CUDA_VISIBLE_DEVICES hides it from torch.
    p = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "energy_accuracy.py"), "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("energy_accuracy: ")
    assert not list(tmp_path.iterdir())


def test_benchmark_overhead_statistics():
    bench = _benchmark_module()
    clock = {"on": False}

    class Sampler:
        def __enter__(self):
            clock["on"] = True

        def __exit__(self, *exc):
            clock["on"] = False

    def run_once():
        return 0.102 if clock["on"] else 0.100

    rows = bench.interleaved_timings(run_once, Sampler, rounds=4, block=2)
    assert len(rows) == 16 and [r["sampler"] for r in rows[:4]] == [True, True, False, False]
    assert [r["sampler"] for r in rows[4:8]] == [False, False, True, True]  # order alternates per round
    s = bench.slowdown(rows)
    assert s["slowdown_pct"] == pytest.approx(2.0) and s["runs_on"] == s["runs_off"] == 8
    assert s["slowdown_ci95_low_pct"] == pytest.approx(2.0) and s["median_off_s"] == pytest.approx(0.100)


def test_calibration_claims_a_free_gpu_like_a_measurement_job(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nv = FakeNvml([FakeGpu("GPU-a"), FakeGpu("GPU-b")])
    held = claim(["GPU-a"], 1, 1.0)  # a cell is measuring on GPU-a
    try:
        with claimed_gpu(nv, timeout_s=1.0) as uuid:
            assert uuid == "GPU-b" and os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-b"
            with pytest.raises(CtxEnergyError, match="no 1 free GPU"):
                claim(["GPU-a", "GPU-b"], 1, 0.3)
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # SLURM gave GPU 1
        held.release()
        with claimed_gpu(nv, timeout_s=1.0) as uuid:
            assert uuid == "GPU-b"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"
    finally:
        held.release()


def test_benchmark_sampler_overhead_runs_prefill_and_generate_workloads_on_cpu():
    """The overhead part end to end on the CPU (tiny model, fake NVML): one row per workload and interval."""
    bench = _benchmark_module()
    summary, runs = bench.sampler_overhead(
        FakeNvml([FakeGpu("GPU-a")]),
        [("prefill", 32, 1), ("generate", 32, 4)],
        [0.01],
        rounds=2,
        block=1,
        log=lambda line: None,
        model="tiny-llama",
        device="cpu",
    )
    assert [r["workload"].split(",")[0] for r in summary] == ["prefill L=32", "generate L=32"]
    assert "G=4" in summary[1]["workload"] and all(r["rounds"] == 2 for r in summary)
    assert len(runs) == 8 and all(r["seconds"] > 0 for r in runs)
    assert "generate L=32, G=4" in bench.format_overhead(summary)


def test_shortest_window_for_a_target_uses_the_edge_aligned_burst_error():
    from ctxenergy.calibrate import shortest_window_s

    table = pd.DataFrame(
        [
            {"method": m, "pattern": p, "window_s": w, "median_abs_error_pct": e}
            for m, p, w, e in [
                ("ours", "bursts", 0.2, 0.94),
                ("ours", "bursts", 0.5, 0.85),
                ("ours", "bursts", 1.0, 0.24),
                ("ours", "bursts", 2.0, 0.16),
                ("ours", "steady", 0.2, 0.10),
                ("naive", "bursts", 0.2, 0.01),
            ]
        ]
    )
    assert shortest_window_s(table, 1.0) == 1.0  # 0.24 % is within a quarter of 1 %; 0.85 % at 0.5 s is not
    assert shortest_window_s(table, 4.0) == 0.2
    assert shortest_window_s(table, 0.5) is None  # even 2 s (0.16 %) is more than a quarter of 0.5 %
    assert shortest_window_s(table, 0.4, share=0.5) == 2.0  # 0.24 % > 0.2 %, 0.16 % within it
