"""A fake NVML: GPUs whose energy counter integrates a scripted power profile and publishes it every period.

Time is real (time.perf_counter), so the meter's polling, sampler thread and edge logic run as on hardware.
"""

from __future__ import annotations

import threading
import time


class FakeGpu:
    def __init__(self, uuid: str, idle_w: float = 100.0, period_s: float = 0.1, phase_s: float = 0.0,
                 read_cost_s: float = 0.0, has_counter: bool = True):
        self.uuid = uuid
        self.idle_w = idle_w
        self.period_s = period_s
        self.phase_s = phase_s
        self.read_cost_s = read_cost_s
        self.has_counter = has_counter
        self.t0 = time.perf_counter()
        self.segments: list[tuple[float, float, float]] = []  # (start, end, extra watts) above idle
        self.lock = threading.Lock()
        self.pids: list[int] = []
        self.reasons = 0

    def add_load(self, start: float, end: float, extra_w: float) -> None:
        with self.lock:
            self.segments.append((start, end, extra_w))

    def true_energy(self, t: float) -> float:
        """Exact energy (J) since t0."""
        e = self.idle_w * (t - self.t0)
        with self.lock:
            for s, en, w in self.segments:
                lo, hi = max(s, self.t0), min(en, t)
                if hi > lo:
                    e += w * (hi - lo)
        return e

    def power(self, t: float) -> float:
        with self.lock:
            return self.idle_w + sum(w for s, en, w in self.segments if s <= t < en)

    def published_energy(self, t: float) -> float:
        """The counter as NVML shows it: the true integral up to the last publish instant."""
        k = int((t - self.t0 - self.phase_s) // self.period_s)
        tick = self.t0 + self.phase_s + k * self.period_s
        return self.true_energy(max(tick, self.t0)) + 1000.0


class FakeNvml:
    """Implements the NvmlBackend methods the package uses."""

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

    def energy_j(self, h):
        if not h.has_counter:
            return None
        if h.read_cost_s:
            time.sleep(h.read_cost_s)
        return h.published_energy(time.perf_counter())

    def power_usage_w(self, h):
        return h.power(time.perf_counter())

    def power_instant_w(self, h):
        return h.power(time.perf_counter()), "instant"

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
