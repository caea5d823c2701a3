"""Telemetry that cannot be right makes the cell non-ok, never a number: faults injected into the fake NVML and driven
through measure_cell -> aggregate (frozen counter, steps up and down, failing reads), a healthy GPU without false
alarms, and windows shorter than measure.min_window_s flagged in new and in committed cells."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import REFERENCE
from fake_nvml import FakeGpu, FakeNvml

import ctxenergy.measure as measure_mod
from ctxenergy.aggregate import aggregate, summarize_cell
from ctxenergy.analysis.cells import prepare_cells
from ctxenergy.config import check_semantics, load_config
from ctxenergy.engines.base import Engine, RunTiming
from ctxenergy.grid import Cell
from ctxenergy.paths import REPO_ROOT
from ctxenergy.prompts import save_ids
from ctxenergy.settings import Settings
from ctxenergy.telemetry.nvml_meter import NvmlMeter

pytestmark = pytest.mark.slow


EXTRA_W = 300.0
IDLE_W = 100.0
L = 1024
S_PER_TOKEN = 2e-5  # 20 ms per run: 6.1 J above idle per run


class ScriptedEngine(Engine):
    """Each run draws EXTRA_W above idle on the fake GPU; `on_idle`, `on_warmup` and `on_measured` inject faults at
    the idle baseline (which starts right after synchronize), the first warm-up run and the k-th measured run."""

    name = "hf-sdpa"

    def __init__(self, gpu, on_idle=None, on_warmup=None, on_measured=None):
        self.gpu, self.on_idle, self.on_warmup, self.on_measured = gpu, on_idle, on_warmup, on_measured
        self.warmup_runs = self.measured_runs = 0

    def load(self):
        pass

    def synchronize(self):
        if self.on_idle:
            self.on_idle(self.gpu)

    def run(self, ids, max_new_tokens):
        measured = int(ids[0]) == 3  # the measured prompt starts at 3, the warm-up prompt at 5 (see `cell_files`)
        if measured:
            self.measured_runs += 1
            if self.on_measured:
                self.on_measured(self.gpu, self.measured_runs)
        else:
            self.warmup_runs += 1
            if self.warmup_runs == 1 and self.on_warmup:
                self.on_warmup(self.gpu)
        start = time.perf_counter()
        prefill = ids.size * S_PER_TOKEN
        self.gpu.add_load(start, start + prefill, EXTRA_W)
        time.sleep(prefill)
        return RunTiming(start, start + prefill, time.perf_counter(), int(ids.size), max_new_tokens)


@pytest.fixture
def cell_files(tmp_path):
    save_ids(np.arange(L) % 200 + 3, tmp_path / "p.npy")
    save_ids(np.arange(L) % 190 + 5, tmp_path / "w.npy")
    return tmp_path


def config(**measure):
    cfg = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config/smoke.yaml"])
    cfg["measure"].update(repeats=3, min_window_s=0.3, idle_s=0.3, cooldown_s=0.0)
    cfg["measure"].update(measure)
    check_semantics(cfg)
    return cfg


def measure_and_aggregate(tmp, monkeypatch, gpu: FakeGpu, cfg=None, **hooks) -> pd.Series:
    """One prefill cell measured on `gpu` through measure_cell, then aggregated: its row in the cells table."""
    cfg = cfg or config()
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: ScriptedEngine(gpu, **hooks))
    meter = NvmlMeter(uuids=[gpu.uuid], backend=FakeNvml([gpu]), sample_interval_s=0.01)
    out = tmp / "cells" / f"L{L}.parquet"
    try:
        record = measure_mod.measure_cell(
            Settings.from_config(cfg),
            Cell("tiny-llama", "hf-sdpa", "prefill", L),
            tmp / "p.npy",
            tmp / "w.npy",
            out,
            meter=meter,
        )
    finally:
        meter.close()
    row = aggregate([out], tmp / "cells.parquet").iloc[0]
    # the job's one-line result says the same as the cell
    assert measure_mod.summary(record, out).get("status_reason", "") == row["status_reason"]
    return row


def fake_gpu(**kw) -> FakeGpu:
    return FakeGpu("GPU-fake-0", idle_w=IDLE_W, period_s=0.1, phase_s=0.03, **kw)


def assert_telemetry_error(row: pd.Series, *words: str) -> None:
    assert row["status"] == "telemetry_error", (row["status"], row["status_reason"])
    assert "gpu0" in row["status_reason"]
    for word in words:
        assert word in row["status_reason"], row["status_reason"]
    cells = prepare_cells(pd.DataFrame([row]))
    assert not cells["usable"].iloc[0] and "telemetry_error" in cells["excluded_reason"].iloc[0]


@pytest.mark.parametrize("instant_window_s, read_cost_s", [(None, 0.0), (0.025, 0.004)])
def test_a_healthy_gpu_gives_ok_and_the_right_energy(cell_files, monkeypatch, instant_window_s, read_cost_s):
    """No false alarm, with exact power readings, and like Hopper: a part-time INSTANT field and ~4 ms per counter
    read (the sampler's reads and the edges' polling then contend for the counter)."""
    row = measure_and_aggregate(
        cell_files, monkeypatch, fake_gpu(instant_window_s=instant_window_s, read_cost_s=read_cost_s)
    )
    assert row["status"] == "ok" and row["status_reason"] == "", row["status_reason"]
    assert "telemetry" not in row["flags"]
    assert row["idle_power_w"] == pytest.approx(IDLE_W, rel=0.03)
    assert row["dynamic_energy_per_run_j"] == pytest.approx(EXTRA_W * L * S_PER_TOKEN, rel=0.04)
    assert row["energy_per_run_j"] == pytest.approx((EXTRA_W + IDLE_W) * L * S_PER_TOKEN, rel=0.04)


def test_a_counter_frozen_from_the_start_is_a_telemetry_error(cell_files, monkeypatch):
    gpu = fake_gpu()
    gpu.freeze_counter()
    row = measure_and_aggregate(cell_files, monkeypatch, gpu)
    assert_telemetry_error(row, "idle baseline", "idle power 0.0 W")


def test_a_counter_frozen_after_the_idle_baseline_is_a_telemetry_error(cell_files, monkeypatch):
    row = measure_and_aggregate(cell_files, monkeypatch, fake_gpu(), on_warmup=lambda g: g.freeze_counter())
    assert_telemetry_error(row, "window 0", "no new value")
    assert not np.isfinite(row["energy_per_run_j"])  # no number, not even a negative one


def test_a_jump_inside_a_window_is_a_telemetry_error(cell_files, monkeypatch):
    """+1500 J inside a 0.3 s window of a 700 W board: 5 kW booked as power before."""
    row = measure_and_aggregate(
        cell_files, monkeypatch, fake_gpu(), on_measured=lambda g, k: k == 2 and g.step_counter(1500.0)
    )
    assert_telemetry_error(row, "window 0", "jumped by", "700 W power limit")


def test_a_huge_jump_inside_a_window_is_a_telemetry_error_not_a_trace_integral(cell_files, monkeypatch):
    """+1e9 mJ: refused before, and replaced by the trace integral with a note that aggregation dropped."""
    row = measure_and_aggregate(
        cell_files, monkeypatch, fake_gpu(), on_measured=lambda g, k: k == 2 and g.step_counter(1.0e6)
    )
    assert_telemetry_error(row, "window 0", "jumped by")


def test_a_step_backwards_inside_a_window_is_a_telemetry_error(cell_files, monkeypatch):
    """-50 J inside a window (its net still positive): the window read 41 % low before."""
    row = measure_and_aggregate(
        cell_files, monkeypatch, fake_gpu(), on_measured=lambda g, k: k == 2 and g.step_counter(-50.0)
    )
    assert_telemetry_error(row, "window 0", "went backwards")


def test_a_step_backwards_during_the_idle_baseline_is_a_telemetry_error(cell_files, monkeypatch):
    """-20 J inside the idle baseline: idle read 60 W instead of 100 W and every window came out high."""
    row = measure_and_aggregate(
        cell_files, monkeypatch, fake_gpu(), on_idle=lambda g: g.step_counter(-20.0, at=time.perf_counter() + 0.15)
    )
    assert_telemetry_error(row, "idle baseline", "went backwards")


def test_failing_counter_reads_inside_a_window_are_a_telemetry_error(cell_files, monkeypatch):
    row = measure_and_aggregate(
        cell_files, monkeypatch, fake_gpu(), on_measured=lambda g, k: k == 2 and g.fail_reads(seconds=0.15)
    )
    assert_telemetry_error(row, "window 0", "read(s) failed", "NVML_ERROR_UNKNOWN")


def test_aggregation_keeps_the_windows_notes():
    windows = pd.DataFrame(
        {
            "window": [0, 1, 2],
            "work_s": [1.0] * 3,
            "energy_per_run_j": [1.0] * 3,
            "notes": ["", "gpu0: 3 power samples failed so far", ""],
            "flags": [""] * 3,
        }
    )
    row = summarize_cell(windows, {})
    assert row["notes"] == "window 1: gpu0: 3 power samples failed so far"


# --- windows shorter than measure.min_window_s (issue #21) ---


def test_a_window_shorter_than_min_window_s_is_flagged(cell_files, monkeypatch):
    """Two runs of 20 ms cannot fill a 0.3 s window: the cell keeps its energy and says so."""
    row = measure_and_aggregate(cell_files, monkeypatch, fake_gpu(), cfg=config(max_runs_per_window=2))
    assert row["status"] == "ok"
    assert "below_min_window" in row["flags"].split(",")
    assert row["dynamic_energy_per_run_j"] == pytest.approx(EXTRA_W * L * S_PER_TOKEN, rel=0.1)


CAMPAIGN = REFERENCE / "campaign"


@pytest.mark.parametrize(
    "cell, flagged",
    [
        ("qwen2-7b/hf-paged/prefill/L512", True),  # five windows of 1.40-1.57 s of work at min_window_s = 2 s
        ("llama-3.1-8b/hf-paged/prefill/L1024", True),  # four of five windows short (1.76-1.99 s)
        ("llama-3.1-8b/hf-sdpa/prefill/L1024", False),
    ],
)
def test_committed_cells_short_of_min_window_s_are_flagged_at_aggregation_and_keep_their_numbers(
    tmp_path, cell, flagged
):
    """The campaign's cells predate the flag: aggregation derives it from the windows' work spans and the cell's
    recorded min_window_s, and reports it without changing a number or whether the cell is usable."""
    fresh = aggregate([CAMPAIGN / "cells" / f"{cell}.parquet"], tmp_path / "cells.parquet").iloc[0]
    committed = pd.read_parquet(CAMPAIGN / "cells.parquet").set_index("cell_id").loc[fresh["cell_id"]]
    assert ("below_min_window" in fresh["flags"].split(",")) == flagged
    assert fresh["status"] == committed["status"] == "ok"
    for col in ("energy_per_run_j", "dynamic_energy_per_run_j", "energy_per_run_j_ci_low", "run_s", "mean_power_w"):
        assert fresh[col] == committed[col]
    assert prepare_cells(pd.DataFrame([fresh]))["usable"].iloc[0]


class NVMLError(Exception):
    """pynvml's exception class is NVMLError (its subclasses NVMLError_Unknown, ...): recognised by that name."""


class BrokenNvml(FakeNvml):
    """A fake NVML whose `broken` calls raise NVMLError once `gpu.broken` is set (from the start: `broken_now`)."""

    def __init__(self, gpus, broken: set[str], broken_now: bool = False):
        super().__init__(gpus)
        self.broken, self.now = broken, broken_now

    def _maybe_raise(self, name, value):
        if name in self.broken and (self.now or getattr(self.gpus[0], "broken", False)):
            raise NVMLError("Unknown Error")
        return value

    def handle_by_uuid(self, uuid):
        return self._maybe_raise("open", super().handle_by_uuid(uuid))

    def power_instant_w(self, h):
        return self._maybe_raise("power", super().power_instant_w(h))

    def sm_clock_mhz(self, h):
        return self._maybe_raise("clock", super().sm_clock_mhz(h))


def test_an_nvml_error_opening_the_gpu_is_one_line_naming_nvml_and_the_driver():
    from ctxenergy.errors import CtxEnergyError

    with pytest.raises(CtxEnergyError, match=r"^NVML: Unknown Error while opening GPU GPU-fake-0; check the driver"):
        NvmlMeter(uuids=["GPU-fake-0"], backend=BrokenNvml([fake_gpu()], {"open"}, broken_now=True))


@pytest.mark.parametrize("broken, note", [("power", None), ("clock", "sm_clock_mhz read failed (NVML: Unknown")])
def test_failed_power_or_clock_reads_leave_the_counters_energy_and_say_so(cell_files, monkeypatch, broken, note):
    """Instant power is not needed for the counter's energy, nor a clock for any energy: the cell is measured."""
    gpu = fake_gpu()
    cfg = config()
    monkeypatch.setattr(
        measure_mod, "make_engine", lambda *a: ScriptedEngine(gpu, on_measured=lambda g, k: setattr(g, "broken", True))
    )
    meter = NvmlMeter(
        uuids=[gpu.uuid], backend=BrokenNvml([gpu], {broken}, broken_now=broken == "power"), sample_interval_s=0.01
    )
    out = cell_files / "cells" / f"L{L}.parquet"
    try:
        record = measure_mod.measure_cell(
            Settings.from_config(cfg),
            Cell("tiny-llama", "hf-sdpa", "prefill", L),
            cell_files / "p.npy",
            cell_files / "w.npy",
            out,
            meter=meter,
        )
    finally:
        meter.close()
    windows = pd.read_parquet(out)
    assert record.status == "ok", record.status_reason
    truth = EXTRA_W * L * S_PER_TOKEN + IDLE_W * windows["run_s"]
    assert ((windows["energy_per_run_j"] / truth - 1).abs() < 0.05).all()
    if note:
        assert windows["notes"].str.contains(note, regex=False).any(), windows["notes"].tolist()
