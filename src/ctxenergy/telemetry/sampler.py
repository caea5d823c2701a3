"""A background thread that samples instant power (and clock-event reasons) into a trace.

The trace is a picture of each window (and the fallback energy source on GPUs without a counter),
timestamped with time.perf_counter(), the clock the engines stamp their runs with. The same thread also reads the
energy counter about twice per counter period while the work runs, so that a step the counter takes inside a window is
seen (the window's edges read it only at both ends).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Trace:
    t: list[float] = field(default_factory=list)
    power_w: list[float] = field(default_factory=list)
    reasons: list[int] = field(default_factory=list)
    source: str = "instant"

    def between(self, start: float, end: float) -> "Trace":
        keep = [i for i, t in enumerate(self.t) if start <= t <= end]
        return Trace(
            [self.t[i] for i in keep], [self.power_w[i] for i in keep], [self.reasons[i] for i in keep], self.source
        )


class PowerSampler:
    """Samples `read()` -> (watts, reasons) every `interval_s`, and calls `counter()` every `counter_interval_s`,
    until stopped."""

    def __init__(
        self,
        read: Callable[[], tuple[float, int]],
        interval_s: float = 0.01,
        source: str = "instant",
        counter: Callable[[], object] | None = None,
        counter_interval_s: float = 0.05,
    ):
        self._read = read
        self._interval = interval_s
        self._counter = counter
        self._counter_interval = counter_interval_s
        self._trace = Trace(source=source)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ctxenergy-power-sampler", daemon=True)
        self.failed_reads = 0
        self.last_error: str | None = None

    def start(self) -> "PowerSampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        next_t = next_counter_t = time.perf_counter()
        while not self._stop.is_set():
            try:
                watts, reasons = self._read()
            except Exception as exc:  # noqa: BLE001 - a failed read (driver hiccup) must not end the trace silently
                self.failed_reads += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                now = time.perf_counter()
                with self._lock:
                    self._trace.t.append(now)
                    self._trace.power_w.append(watts)
                    self._trace.reasons.append(reasons)
            if self._counter is not None and time.perf_counter() >= next_counter_t:
                next_counter_t = time.perf_counter() + self._counter_interval
                try:
                    self._counter()
                except Exception as exc:  # noqa: BLE001 - counted like a failed power read; the counter log has it too
                    self.failed_reads += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
            next_t += self._interval
            delay = next_t - time.perf_counter()
            if delay > 0:
                self._stop.wait(delay)
            else:
                next_t = time.perf_counter()

    def snapshot(self, start: float, end: float) -> Trace:
        with self._lock:
            return self._trace.between(start, end)

    def clear_before(self, t: float) -> None:
        """Drop samples older than t so that a long job does not grow the trace without bound."""
        with self._lock:
            keep = next((i for i, ti in enumerate(self._trace.t) if ti >= t), len(self._trace.t))
            del self._trace.t[:keep], self._trace.power_w[:keep], self._trace.reasons[:keep]

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
