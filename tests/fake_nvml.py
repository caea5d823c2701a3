"""A fake NVML: GPUs whose energy counter integrates a scripted power profile and publishes it every period.

Time is real (time.perf_counter), so the meter's polling, sampler thread and edge logic run as on hardware.
By default the power readings are exact; `instant_window_s` and `average_window_s` make them behave like
Hopper's: published once per period, averaging only the last W seconds before the update (docs/measurement.md
"Why NVML cannot simply be read before and after": INSTANT ~25 ms, GetPowerUsage ~1 s).
Faults are injected per GPU at an instant: a counter that stops publishing (`freeze_counter`), one that steps by
+-X J (`step_counter`), and energy reads that fail (`fail_reads`).
"""

from __future__ import annotations

import math
import threading
import time

UINT64_J = 2**64 / 1000.0  # the real counter is an unsigned 64-bit count of mJ


class FakeNvmlError(Exception):
    """What a failing NVML call raises (pynvml raises NVMLError subclasses such as NVMLError_Unknown)."""


class FakeGpu:
    def __init__(
        self,
        uuid: str,
        idle_w: float = 100.0,
        period_s: float = 0.1,
        phase_s: float = 0.0,
        read_cost_s: float = 0.0,
        has_counter: bool = True,
        instant_window_s: float | None = None,
        average_window_s: float | None = None,
    ):
        self.uuid = uuid
        self.idle_w = idle_w
        self.period_s = period_s
        self.phase_s = phase_s
        self.read_cost_s = read_cost_s
        self.has_counter = has_counter
        self.instant_window_s = instant_window_s
        self.average_window_s = average_window_s
        self.t0 = time.perf_counter()
        self.segments: list[tuple[float, float, float]] = []  # (start, end, extra watts) above idle
        self.lock = threading.Lock()
        self.pids: list[int] = []
        self.reasons = 0
        self.counter_offset_j = 0.0  # tests set it to make the published counter reset or wrap
        self.frozen_at: float | None = None  # the counter publishes no new value from this instant on
        self.steps: list[tuple[float, float]] = []  # (instant, J): publications from the instant on are off by J
        self.failing_reads: tuple[float, float] | None = None  # energy reads in [start, end) raise
        self.memory_used_bytes = 2 * 2**30  # what NVML reports in use; tests raise it while an engine runs

    def freeze_counter(self, at: float | None = None) -> None:
        self.frozen_at = time.perf_counter() if at is None else at

    def step_counter(self, delta_j: float, at: float | None = None) -> None:
        with self.lock:
            self.steps.append((time.perf_counter() if at is None else at, delta_j))

    def fail_reads(self, seconds: float = math.inf, at: float | None = None) -> None:
        start = time.perf_counter() if at is None else at
        self.failing_reads = (start, start + seconds)

    def add_load(self, start: float, end: float, extra_w: float) -> None:
        with self.lock:
            self.segments.append((start, end, extra_w))

    def end_open_loads(self, t: float) -> None:
        """Cut every load that has no end (a steady load) at t."""
        with self.lock:
            self.segments = [(s, min(en, t) if math.isinf(en) else en, w) for s, en, w in self.segments]

    def true_energy(self, t: float) -> float:
        """Exact energy (J) since t0."""
        e = self.idle_w * (t - self.t0)
        with self.lock:
            for s, en, w in self.segments:
                lo, hi = max(s, self.t0), min(en, t)
                if hi > lo:
                    e += w * (hi - lo)
        return e

    def extra_energy(self, start: float, end: float) -> float:
        """Exact energy (J) above idle over [start, end]."""
        return self.true_energy(end) - self.true_energy(start) - self.idle_w * (end - start)

    def power(self, t: float) -> float:
        with self.lock:
            return self.idle_w + sum(w for s, en, w in self.segments if s <= t < en)

    def last_tick(self, t: float) -> float:
        k = int((t - self.t0 - self.phase_s) // self.period_s)
        return max(self.t0 + self.phase_s + k * self.period_s, self.t0)

    def published_energy(self, t: float) -> float:
        """The counter as NVML shows it: the true integral up to the last publish instant (plus injected steps)."""
        tick = self.last_tick(t if self.frozen_at is None else min(t, self.frozen_at))
        with self.lock:
            stepped = sum(d for at, d in self.steps if at <= tick)
        return (self.true_energy(tick) + 1000.0 + self.counter_offset_j + stepped) % UINT64_J

    def published_mean_power(self, t: float, window_s: float | None) -> float:
        """Exact power now, or the mean over the last window_s before the last publish instant."""
        if window_s is None:
            return self.power(t)
        tick = self.last_tick(t)
        return (self.true_energy(tick) - self.true_energy(tick - window_s)) / window_s


class FakeNvml:
    """Implements the NVML protocol (telemetry/nvml_api.Nvml) the package reads; tests/test_telemetry.py checks it."""

    def __init__(self, gpus: list[FakeGpu], name: str = "NVIDIA H200"):
        self.gpus = gpus
        self._name = name

    def driver_version(self):
        return "fake-1.0"

    def nvml_version(self):
        return "fake"

    def device_count(self):
        return len(self.gpus)

    def handle(self, index):
        return self.gpus[index]

    def handle_by_uuid(self, uuid):
        for g in self.gpus:
            if g.uuid == uuid:
                return g
        raise KeyError(uuid)

    def uuid(self, h):
        return h.uuid

    def name(self, h):
        return self._name

    def memory_total_bytes(self, h):
        return 141 * 2**30

    def memory_used_bytes(self, h):
        return h.memory_used_bytes

    def energy_j(self, h):
        if not h.has_counter:
            return None
        if h.read_cost_s:
            time.sleep(h.read_cost_s)
        now = time.perf_counter()
        if h.failing_reads is not None and h.failing_reads[0] <= now < h.failing_reads[1]:
            raise FakeNvmlError("NVML_ERROR_UNKNOWN")
        return h.published_energy(now)

    def power_usage_w(self, h):
        return h.published_mean_power(time.perf_counter(), h.average_window_s)

    def power_instant_w(self, h):
        return h.published_mean_power(time.perf_counter(), h.instant_window_s), "instant"

    def sm_clock_mhz(self, h):
        return 1980

    def mem_clock_mhz(self, h):
        return 3201

    def temperature_c(self, h):
        return 40

    def power_limit_w(self, h):
        return 700.0

    def clock_event_reasons(self, h):
        return h.reasons

    def process_pids(self, h):
        return list(h.pids)


class FakeLoad:
    """The calibration's load on fake GPUs: each call adds `extra_w` above idle for as long as it runs."""

    def __init__(self, gpus: list[FakeGpu], extra_w: float = 500.0):
        self.gpus = gpus
        self.extra_w = extra_w
        self.uuid = gpus[0].uuid
        self.description = f"fake load, +{extra_w:.0f} W"

    def run(self, seconds: float) -> tuple[float, float]:
        start = time.perf_counter()
        for g in self.gpus:
            g.add_load(start, start + seconds, self.extra_w)
        time.sleep(seconds)
        return start, start + seconds

    def start(self) -> None:
        now = time.perf_counter()
        for g in self.gpus:
            g.add_load(now, math.inf, self.extra_w)

    def stop(self) -> None:
        now = time.perf_counter()
        for g in self.gpus:
            g.end_open_loads(now)
