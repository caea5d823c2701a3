"""Energy meters on fake hardware: counter arithmetic, edge-aligned NVML windows, fallbacks, flags, RAPL, no source."""

from __future__ import annotations

import os
import statistics
import sys
import time
import types

import pytest
from fake_nvml import UINT64_J, FakeGpu, FakeNvml

from ctxenergy.errors import NoDeviceError
from ctxenergy.telemetry import IdleBaseline, NullMeter, RaplMeter, open_meter, rapl_packages
from ctxenergy.telemetry.counter import (
    MAX_PLAUSIBLE_W,
    CounterLog,
    CounterRead,
    counter_delta_j,
    counter_step_fault,
    detect_update_period,
    integrate_trace,
    power_bound,
    wait_for_update,
)
from ctxenergy.telemetry.nvml_api import REASON_SW_POWER_CAP, REASON_SW_THERMAL, NvmlBackend
from ctxenergy.telemetry.nvml_meter import METHOD_COUNTER, METHOD_INSTANT, NvmlMeter


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.perf_counter()))


# --- counter arithmetic ---


def test_counter_delta_normal():
    assert counter_delta_j(CounterRead(0.0, 1000.0), CounterRead(1.0, 1650.0)) == pytest.approx(650.0)
    assert counter_delta_j(CounterRead(0.0, 1000.0), CounterRead(0.1, 1000.0)) == 0.0


def test_a_counter_near_the_end_of_its_64_bit_range_is_a_fault_not_a_number():
    """Near 2^64 mJ a reading in J keeps only ~4 J of float precision: the wrap was taken back, but window energies
    came out up to ~10 % off with status ok. No real board gets there (584 million years at 1 kW)."""
    assert counter_delta_j(CounterRead(0.0, UINT64_J - 10.0), CounterRead(0.1, 20.0)) is None
    fault = counter_step_fault(CounterRead(0.0, UINT64_J - 10.0), CounterRead(0.1, UINT64_J - 2.0))
    assert fault and "near the end of its 64-bit range" in fault and "read to 4 J only" in fault


def test_a_counter_that_reads_nan_is_a_fault():
    assert counter_delta_j(CounterRead(0.0, 1000.0), CounterRead(0.1, float("nan"))) is None
    assert counter_step_fault(CounterRead(0.0, float("nan")), CounterRead(0.1, float("nan"))) == "counter read nan"
    log = CounterLog(iter([1000.0, float("nan"), float("nan"), 1001.0]).__next__, clock=iter(range(100)).__next__)
    for _ in range(4):
        log.read()
    assert any("counter read nan" in f for f in log.faults(0, 100, max_w=5000.0, stall_s=1000))


def test_counter_delta_refuses_reset_and_huge_jumps():
    assert counter_delta_j(CounterRead(0.0, 5.0e6), CounterRead(0.1, 3.0)) is None  # driver reload: back to ~0
    assert counter_delta_j(CounterRead(0.0, 1000.0), CounterRead(0.1, 999.0)) is None  # a step backwards
    assert counter_delta_j(CounterRead(0.0, 0.0), CounterRead(0.1, 1.0e6)) is None  # 10 MW
    assert counter_delta_j(CounterRead(0.0, 0.0), CounterRead(0.1, 400.0)) == pytest.approx(400.0)  # 4 kW is possible


def test_counter_step_fault_names_steps_back_and_jumps_against_the_bound():
    assert counter_step_fault(CounterRead(0.0, 1000.0), CounterRead(0.1, 999.0)) == "counter went backwards by 1.0 J"
    # 150 J in 0.1 s is 1.5 kW: possible for MAX_PLAUSIBLE_W, not for 1.5x a 700 W board
    assert counter_step_fault(CounterRead(0.0, 0.0), CounterRead(0.1, 150.0)) is None
    max_w, bound = power_bound(700.0)
    assert max_w == 1050.0 and "700 W power limit" in bound
    assert "jumped by 150.0 J" in counter_step_fault(CounterRead(0.0, 0.0), CounterRead(0.1, 150.0), max_w, bound)
    # the value read at t=1.0 was published after the read that started at 0.9 still showed the old one: 100 J may
    # have accrued over 0.2 s, not 0.1 s
    assert counter_step_fault(CounterRead(1.0, 0.0, since=0.9), CounterRead(1.1, 200.0), max_w) is None
    assert counter_delta_j(CounterRead(0.0, 0.0), CounterRead(0.1, 150.0), max_w) is None
    assert power_bound(None) == (MAX_PLAUSIBLE_W, ", the most any board draws")


def test_counter_log_sees_steps_inside_a_span_and_failed_reads():
    values = iter([10.0, 10.0, 20.0, 15.0, 25.0, RuntimeError("NVML_ERROR_UNKNOWN"), 35.0])
    now = [0.0]

    def read():
        v = next(values)
        if isinstance(v, Exception):
            raise v
        return v

    def clock():
        now[0] += 0.01
        return now[0]

    log = CounterLog(read, clock)
    assert [log.read() for _ in range(7)] == [10.0, 10.0, 20.0, 15.0, 25.0, 25.0, 35.0]  # a failed read: the last value
    assert [c.energy_j for c in log.changes] == [10.0, 20.0, 15.0, 25.0, 35.0]
    faults = log.faults(0.0, now[0], 1000.0)
    assert any("went backwards by 5.0 J" in f for f in faults)  # its net (10 -> 35 J) is fine
    assert any("1 energy-counter read(s) failed (RuntimeError: NVML_ERROR_UNKNOWN)" in f for f in faults)
    assert log.faults(0.0, now[0] + 2.0, 1000.0)[-1].startswith("counter showed no new value for 2.0 s")
    log.clear_before(now[0] + 0.001)
    assert log.changes == [] and log.errors == []


def _scripted(values, step=0.001):
    """A read() over a list of values and a clock that advances `step` per call."""
    it = iter(values)
    now = [0.0]

    def clock():
        now[0] += step
        return now[0]

    return (lambda: next(it)), clock


def test_wait_for_update_returns_the_first_changed_value():
    read, clock = _scripted([5.0, 5.0, 5.0, 7.0, 9.0])
    r = wait_for_update(read, clock=clock)
    assert r.energy_j == 7.0
    read, clock = _scripted([5.0, 6.0, 6.0, 8.0])
    assert wait_for_update(read, previous=6.0, clock=clock).energy_j == 5.0  # any change from `previous` counts
    read, clock = _scripted([6.0, 6.0, 6.0, 8.0])
    assert wait_for_update(read, previous=6.0, clock=clock).energy_j == 8.0


def test_wait_for_update_gives_up_on_a_frozen_counter():
    read, clock = _scripted([3.0] * 2000, step=0.01)
    r = wait_for_update(read, timeout_s=0.5, clock=clock)
    assert r.energy_j == 3.0 and 0.5 < r.t < 0.6


@pytest.mark.slow
def test_detect_update_period_on_the_fake():
    g = FakeGpu("GPU-a", period_s=0.1)
    nv = FakeNvml([g])
    assert detect_update_period(lambda: nv.energy_j(g), duration_s=0.6) == pytest.approx(0.1, abs=0.005)
    frozen = FakeGpu("GPU-b", period_s=10.0)
    assert detect_update_period(lambda: nv.energy_j(frozen), duration_s=0.2, max_s=0.3) is None


def test_detect_update_period_watches_longer_for_a_slow_counter():
    # A counter that ticks every 0.4 s: 0.6 s shows one change; watching on (up to max_s) finds the period.
    values = [float(int(i * 0.01 / 0.4)) for i in range(1, 1000)]  # one read per 10 ms clock step
    read, clock = _scripted(values, step=0.01)
    assert detect_update_period(read, duration_s=0.6, max_s=3.0, clock=clock) == pytest.approx(0.4, abs=0.02)
    read, clock = _scripted(values, step=0.01)
    assert detect_update_period(read, duration_s=0.6, max_s=0.6, clock=clock) is None  # the old, fixed 0.6 s


def test_integrate_trace_holds_each_sample():
    t, w = [0.0, 1.0, 2.0], [10.0, 20.0, 30.0]
    assert integrate_trace(t, w, 0.5, 2.5) == pytest.approx(10 * 0.5 + 20 * 1.0 + 30 * 0.5)
    assert integrate_trace(t, w, -1.0, 1.0) == pytest.approx(10 * 2.0)  # first sample held backwards
    assert integrate_trace(t, w, 3.0, 4.0) == pytest.approx(30.0)  # last sample held forwards
    assert integrate_trace([], [], 0.0, 1.0) == 0.0
    assert integrate_trace(t, w, 2.0, 1.0) == 0.0


# --- the NVML meter on the fake ---


def _meter(gpus, **kw) -> NvmlMeter:
    kw.setdefault("detect_period", False)
    return NvmlMeter(uuids=[g.uuid for g in gpus], backend=FakeNvml(gpus), **kw)


def _burst_window(meter: NvmlMeter, gpus, idle: IdleBaseline, seconds: float, extra_w, phase_s: float = 0.0):
    """begin -> (phase) naive read -> load -> naive read -> end; returns (window, naive dynamic J, work start, end)."""
    nv = meter.nv
    t_edge = meter.begin_window()
    sleep_until(t_edge + phase_s)
    a_j = sum(nv.energy_j(g) for g in gpus)
    a_t = time.perf_counter()
    ws = time.perf_counter()
    for g, w in zip(gpus, extra_w):
        g.add_load(ws, ws + seconds, w)
    sleep_until(ws + seconds)
    we = ws + seconds
    b_j = sum(nv.energy_j(g) for g in gpus)
    b_t = time.perf_counter()
    window = meter.end_window(ws, we, idle)
    naive = b_j - a_j - idle.power_w * (b_t - a_t)
    return window, naive, ws, we


@pytest.mark.slow
def test_edge_aligned_windows_are_right_where_naive_reads_are_not():
    g = FakeGpu("GPU-a", idle_w=100.0, read_cost_s=0.002, phase_s=0.013)
    meter = _meter([g], detect_period=True)
    try:
        assert meter.method == METHOD_COUNTER and meter.counter_period_s == pytest.approx(0.1, abs=0.01)
        idle = meter.measure_idle(0.3)
        assert idle.power_w == pytest.approx(100.0, rel=0.02)
        for seconds in (0.05, 0.2, 0.5):
            ours, naive = [], []
            for phase in (0.02, 0.06):
                w, naive_j, ws, we = _burst_window(meter, [g], idle, seconds, [500.0], phase)
                exact = g.extra_energy(ws, we)
                assert exact == pytest.approx(500.0 * seconds)
                ours.append(abs(w.dynamic_energy_j / exact - 1))
                naive.append(abs(naive_j / exact - 1))
                # energy_j: the dynamic part plus idle power over the work only
                assert w.energy_j == pytest.approx(w.dynamic_energy_j + idle.power_w * seconds)
                assert w.window_s >= seconds and w.edge_uncertainty_j > 0
            assert max(ours) < 0.03, (seconds, ours)
            naive_median = statistics.median(naive)
            assert naive_median > 0.04 and naive_median > 3 * statistics.median(ours), (seconds, naive, ours)
    finally:
        meter.close()


@pytest.mark.slow
def test_two_gpus_are_metered_apart_and_summed():
    a = FakeGpu("GPU-a", idle_w=100.0, phase_s=0.0)
    b = FakeGpu("GPU-b", idle_w=80.0, phase_s=0.05)
    meter = _meter([a, b])
    try:
        idle = meter.measure_idle(0.3)
        assert idle.per_device_w == pytest.approx([100.0, 80.0], rel=0.02)
        w, _, ws, we = _burst_window(meter, [a, b], idle, 0.3, [300.0, 500.0])
        per = [100.0 * 0.3 + 300.0 * 0.3, 80.0 * 0.3 + 500.0 * 0.3]
        assert w.per_device_energy_j == pytest.approx(per, rel=0.03)
        assert w.energy_j == pytest.approx(sum(per), rel=0.03)
        assert w.dynamic_energy_j == pytest.approx(800.0 * 0.3, rel=0.03)
    finally:
        meter.close()


def test_any_gpu_of_a_multi_gpu_window_can_raise_the_flags():
    a, b = FakeGpu("GPU-a", phase_s=0.0), FakeGpu("GPU-b", phase_s=0.05)
    meter = _meter([a, b], sample_interval_s=0.005)
    idle = IdleBaseline(200.0, [100.0, 100.0], 1.0)
    try:
        t = meter.begin_window()
        b.reasons = REASON_SW_THERMAL | REASON_SW_POWER_CAP  # only the second GPU, only during the work
        sleep_until(t + 0.3)
        b.reasons = 0
        w = meter.end_window(t, t + 0.3, idle)
        assert w.thermal_throttle
        assert 0.3 < w.power_cap_fraction < 0.7  # one GPU of two capped the whole time
    finally:
        meter.close()


def test_meter_reads_the_gpus_cuda_visible_devices_names(monkeypatch):
    gpus = [FakeGpu("GPU-a"), FakeGpu("GPU-b"), FakeGpu("GPU-c")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-c,GPU-a")
    with NvmlMeter(backend=FakeNvml(gpus), detect_period=False) as m:
        assert [d.uuid for d in m.devices] == ["GPU-c", "GPU-a"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with NvmlMeter(backend=FakeNvml(gpus), detect_period=False) as m:
        assert [d.uuid for d in m.devices] == ["GPU-b"]


def test_gpu_without_counter_integrates_instant_power_and_says_so():
    g = FakeGpu("GPU-a", idle_w=100.0, has_counter=False)
    meter = _meter([g], sample_interval_s=0.002, detect_period=True)
    try:
        assert meter.method == METHOD_INSTANT and meter.counter_period_s is None
        idle = meter.measure_idle(0.2)
        assert idle.power_w == pytest.approx(100.0, rel=0.02)
        t = meter.begin_window()
        g.add_load(t, t + 0.3, 400.0)
        sleep_until(t + 0.3)
        w = meter.end_window(t, t + 0.3, idle)
        assert w.method == METHOD_INSTANT
        assert any("no energy counter" in n for n in w.notes)
        assert w.energy_j == pytest.approx(500.0 * 0.3, rel=0.05)
    finally:
        meter.close()


@pytest.mark.slow
def test_foreign_process_thermal_and_power_cap_are_flagged():
    g = FakeGpu("GPU-a", idle_w=100.0)
    meter = _meter([g], sample_interval_s=0.005, own_pids={os.getpid()})
    idle = IdleBaseline(100.0, [100.0], 1.0)
    try:
        g.pids = [os.getpid()]
        w, *_ = _burst_window(meter, [g], idle, 0.2, [300.0])
        assert not w.foreign_process and not w.thermal_throttle and w.power_cap_fraction == 0.0

        g.pids = [os.getpid(), 424242]
        g.reasons = REASON_SW_THERMAL
        w, *_ = _burst_window(meter, [g], idle, 0.2, [300.0])
        assert w.foreign_process and w.state_start[0].foreign_pids == [424242]
        assert w.thermal_throttle

        # capped for the second half of the work only
        g.pids, g.reasons = [], 0
        t = meter.begin_window()
        g.add_load(t, t + 0.4, 600.0)
        sleep_until(t + 0.2)
        g.reasons = REASON_SW_POWER_CAP
        sleep_until(t + 0.4)
        w = meter.end_window(t, t + 0.4, idle)
        g.reasons = 0
        assert 0.3 < w.power_cap_fraction < 0.7
        assert not w.thermal_throttle
    finally:
        meter.close()


def test_counter_reset_inside_a_window_is_a_fault_not_a_trace_estimate():
    """A driver reload mid-window: the part-time INSTANT trace is no exact stand-in (86 % off on 50 ms bursts on
    Hopper), so the window gets a fault and no energy; the cell is remeasured rather than estimated."""
    g = FakeGpu("GPU-a", idle_w=100.0)
    meter = _meter([g], sample_interval_s=0.002)
    idle = IdleBaseline(100.0, [100.0], 1.0)
    try:
        t = meter.begin_window()
        g.add_load(t, t + 0.3, 400.0)
        sleep_until(t + 0.15)
        # a driver reload: the counter restarts near 0
        g.counter_offset_j = -g.published_energy(time.perf_counter()) + 5.0
        sleep_until(t + 0.3)
        w = meter.end_window(t, t + 0.3, idle)
        assert any("went backwards" in f for f in w.faults), w.faults
        assert w.raw_energy_j is None and w.energy_j is None and w.dynamic_energy_j is None
    finally:
        meter.close()


def test_counter_wrap_inside_a_window_is_a_fault():
    g = FakeGpu("GPU-a", idle_w=100.0)
    meter = _meter([g])
    idle = IdleBaseline(100.0, [100.0], 1.0)
    try:
        now = time.perf_counter()
        g.counter_offset_j = UINT64_J - 1000.0 - g.true_energy(now) - 60.0  # ~60 J before the wrap
        t = meter.begin_window()
        g.add_load(t, t + 0.3, 400.0)
        sleep_until(t + 0.3)
        w = meter.end_window(t, t + 0.3, idle)
        assert g.published_energy(time.perf_counter()) < 1000.0  # it did wrap
        assert any("near the end of its 64-bit range" in f for f in w.faults) and w.energy_j is None
    finally:
        meter.close()


# --- NVML missing or refused ---


def _fake_pynvml(init_error: str | None = None, energy_supported: bool = True, calls: list | None = None):
    mod = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # pynvml's name
        pass

    def nvml_init():
        if init_error:
            raise NVMLError(init_error)

    def energy(handle):
        if calls is not None:
            calls.append("energy")
        if not energy_supported:
            raise NVMLError_NotSupported("Not Supported")
        return 123456

    def field_values(handle, ids):
        raise NVMLError("Not Supported")

    mod.NVMLError, mod.NVMLError_NotSupported = NVMLError, NVMLError_NotSupported
    mod.nvmlInit = nvml_init
    mod.nvmlDeviceGetTotalEnergyConsumption = energy
    mod.nvmlDeviceGetFieldValues = field_values
    mod.nvmlDeviceGetPowerUsage = lambda handle: 250000
    return mod


def test_nvml_refused_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(init_error="Insufficient Permissions"))
    with pytest.raises(NoDeviceError) as err:
        NvmlBackend()
    assert "Insufficient Permissions" in str(err.value) and "\n" not in str(err.value)


def test_nvml_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NoDeviceError) as err:
        NvmlBackend()
    assert "nvidia-ml-py" in str(err.value) and "\n" not in str(err.value)


def test_backend_without_energy_counter_or_instant_field(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(energy_supported=False, calls=calls))
    nv = NvmlBackend()
    assert nv.energy_j("h") is None and nv.energy_j("h") is None
    assert calls == ["energy"]  # the answer is kept: no failing call on every poll
    assert nv.power_instant_w("h") == (250.0, "power_usage")
    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(calls=calls))
    assert NvmlBackend().energy_j("h") == pytest.approx(123.456)


# --- hosts without a GPU ---


def _rapl_tree(root, energy_uj: int, max_uj: int = 262143328850):
    pkg = root / "intel-rapl:0"
    pkg.mkdir(parents=True)
    (pkg / "energy_uj").write_text(f"{energy_uj}\n")
    (pkg / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (pkg / "name").write_text("package-0\n")
    sub = root / "intel-rapl:0:0"  # a sub-zone (core): part of the package, never added to it
    sub.mkdir()
    (sub / "energy_uj").write_text("5\n")
    broken = root / "intel-rapl:1"
    broken.mkdir()
    (broken / "energy_uj").write_text("unreadable\n")
    return pkg


def test_rapl_reader_on_a_fake_sysfs_tree_with_wraparound(tmp_path, monkeypatch):
    max_uj = 262143328850
    pkg = _rapl_tree(tmp_path, energy_uj=max_uj - 1_000_000, max_uj=max_uj)
    monkeypatch.setenv("CTXENERGY_RAPL_ROOT", str(tmp_path))
    assert rapl_packages() == [pkg]
    meter = open_meter("cpu")
    assert isinstance(meter, RaplMeter) and meter.devices[0].name == "cpu-package package-0"
    idle = IdleBaseline(10.0, [10.0], 1.0)
    t = meter.begin_window()
    (pkg / "energy_uj").write_text("2000000\n")  # wrapped: 1 J to the top, then 2 J
    w = meter.end_window(t, t + 0.001, idle)
    assert w.raw_energy_j == pytest.approx(3.0, abs=1e-5)
    assert w.dynamic_energy_j == pytest.approx(3.0 - 10.0 * w.window_s)
    assert w.energy_j == pytest.approx(w.dynamic_energy_j + 10.0 * 0.001)


def test_no_energy_source_records_none_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CTXENERGY_RAPL_ROOT", str(tmp_path / "absent"))
    meter = open_meter("cpu")
    assert isinstance(meter, NullMeter)
    idle = meter.measure_idle(0.01)
    assert idle.power_w is None
    t = meter.begin_window()
    w = meter.end_window(t, t + 0.01, idle)
    assert w.energy_j is None and w.raw_energy_j is None and w.method == "none"
    assert w.notes and "energy not recorded" in w.notes[0]


def test_sampler_survives_failing_reads_and_counts_them():
    import time as _time

    from ctxenergy.telemetry.sampler import PowerSampler

    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] % 2:
            raise RuntimeError("NVML_ERROR_UNKNOWN")
        return 100.0, 0

    sampler = PowerSampler(flaky, interval_s=0.005).start()
    _time.sleep(0.15)
    sampler.stop()
    trace = sampler.snapshot(0, _time.perf_counter())
    assert sampler.failed_reads >= 5 and "NVML_ERROR_UNKNOWN" in sampler.last_error
    assert len(trace.t) >= 5  # it kept sampling after the failures


@pytest.mark.parametrize("backend", [NvmlBackend, FakeNvml])
def test_nvml_backends_implement_the_protocol_the_package_reads(backend):
    """The fake stands in for NVML in every GPU test: it must offer each call of the protocol, with its arguments."""
    import inspect

    from ctxenergy.telemetry.nvml_api import Nvml

    calls = [n for n, v in vars(Nvml).items() if inspect.isfunction(v) and not n.startswith("_")]
    assert len(calls) >= 17
    for name in calls:
        assert callable(getattr(backend, name, None)), f"{backend.__name__} lacks {name}"
        wanted = list(inspect.signature(getattr(Nvml, name)).parameters)
        got = list(inspect.signature(getattr(backend, name)).parameters)
        assert len(got) == len(wanted), f"{backend.__name__}.{name}{tuple(got)}: the protocol has {tuple(wanted)}"
    assert isinstance(FakeNvml([FakeGpu("GPU-a")]), Nvml)
