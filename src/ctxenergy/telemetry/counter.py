"""Pure logic of a cumulative energy counter that is published every ~100 ms.

Two facts shape everything here (docs/measurement.md): the counter's value only changes at
update instants ~100 ms apart, and a read costs a few ms. So a window's edges are placed on observed
updates: the window opens at the read that first shows a new value and closes at the read that shows
the second new value after the work. Each edge is then known to one read (~4 ms), and the energy between
the edges is a true accumulated amount, not a stale snapshot.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Callable

# A counter that goes backwards by more than this, or jumps forwards by more than MAX_PLAUSIBLE_W
# over the elapsed time, was reset or wrapped: the delta is rejected rather than booked.
MAX_PLAUSIBLE_W = 5000.0
UINT64_J = 2**64 / 1000.0  # nvmlDeviceGetTotalEnergyConsumption is an unsigned 64-bit count of mJ
# The counter counts mJ; read as a float in J it keeps them up to ~8.8e12 J (279 years at 1 kW), and near its wrap
# at UINT64_J only to 4 J.
COUNTER_RESOLUTION_J = 1e-3
# Where the board's power limit is known, energy is checked against it instead, with this margin: the controller
# holds the limit on average but lets short transients through (the H200's first INSTANT reading after work started
# read 888 W at a 700 W limit, 1.27x), and the sensor's gain is off by up to ~5 % per board.
POWER_LIMIT_MARGIN = 1.5
# A counter that shows no new value for this long (or 5 periods of a slower counter) while it is read has stopped.
STALL_S = 1.0


@dataclass(frozen=True)
class CounterRead:
    t: float  # perf_counter() seconds at the end of the read
    energy_j: float
    # start of the last earlier read that still showed the previous value, where known: the value was published after
    # it, so the energy between this read and a later one can have accrued from then on (up to one period more)
    since: float | None = None


def counter_step_fault(
    start: CounterRead, end: CounterRead, max_w: float = MAX_PLAUSIBLE_W, bound: str = ""
) -> str | None:
    """Why the counter's move from `start` to `end` cannot be energy, or None when it can.

    A value that is not a number, or one so near the end of the 64-bit mJ range that a float in J no longer holds
    its millijoules (which is where a wrap happens: taken back, it left energies ~10 % off), is a fault; so is a step
    backwards, and a delta above max_w over the time it can have accrued in (from `start.since`), a jump; `bound`
    says where max_w comes from.
    """
    for value in (start.energy_j, end.energy_j):
        if not math.isfinite(value):
            return f"counter read {value}"
        if math.ulp(value) > COUNTER_RESOLUTION_J:
            return (
                f"counter at {value:.4g} J is near the end of its 64-bit range, where it is read to "
                f"{math.ulp(value):g} J only"
            )
    delta = end.energy_j - start.energy_j
    elapsed = max(end.t - (start.t if start.since is None else start.since), 1e-3)
    if delta < 0:
        return f"counter went backwards by {-delta:.1f} J"
    if delta > max_w * elapsed:
        return f"counter jumped by {delta:.1f} J in {elapsed:.2f} s ({delta / elapsed:.0f} W > {max_w:.0f} W{bound})"
    return None


def counter_delta_j(start: CounterRead, end: CounterRead, max_w: float = MAX_PLAUSIBLE_W) -> float | None:
    """Energy between two reads, or None when the counter read no number, was reset or wrapped in between, or
    implies more than max_w (counter_step_fault): no NaN, negative or huge value is booked."""
    if counter_step_fault(start, end, max_w) is not None:
        return None
    return end.energy_j - start.energy_j


def power_bound(power_limit_w: float | None) -> tuple[float, str]:
    """The most power a board's counter may show, and why: its limit with POWER_LIMIT_MARGIN, else MAX_PLAUSIBLE_W."""
    if power_limit_w:
        return POWER_LIMIT_MARGIN * power_limit_w, f", {POWER_LIMIT_MARGIN:g}x the {power_limit_w:.0f} W power limit"
    return MAX_PLAUSIBLE_W, ", the most any board draws"


class CounterLog:
    """One GPU's energy counter, read by every thread through here, one read at a time, with each new value logged.

    The window edges poll the counter and the power sampler reads it during the work, so the log holds every step
    the counter showed inside a window, in the order it showed them, not only its net move; `faults` says which
    steps cannot be energy. A failed read is logged and answered with the last value, so that edge polling goes on.
    """

    def __init__(self, read: Callable[[], float], clock: Callable[[], float] = time.perf_counter):
        self._read, self._clock = read, clock
        self._lock = threading.Lock()
        self.changes: list[CounterRead] = []
        self.errors: list[tuple[float, str]] = []
        self._last: float | None = None
        self._last_start: float | None = None

    def read(self) -> float:
        with self._lock:
            start = self._clock()
            try:
                value = self._read()
            except Exception as exc:  # noqa: BLE001 - a failed read makes its window a fault, it does not end the job
                self.errors.append((self._clock(), f"{type(exc).__name__}: {exc}"))
                if self._last is None:
                    raise
                return self._last
            if value != self._last:
                self.changes.append(CounterRead(self._clock(), value, since=self._last_start))
                self._last = value
            self._last_start = start
            return value

    def faults(self, begin: float, end: float, max_w: float, bound: str = "", stall_s: float = STALL_S) -> list[str]:
        """What makes the counter's energy over [begin, end] wrong: failed reads, a step backwards or a jump between
        two of its values, more energy than max_w over the whole span, or no new value for longer than stall_s."""
        with self._lock:
            changes = [c for c in self.changes if begin <= c.t <= end]
            errors = [e for e in self.errors if begin <= e[0] <= end]
        out = []
        if errors:
            out.append(f"{len(errors)} energy-counter read(s) failed ({errors[-1][1]})")
        for a, b in zip(changes, changes[1:]):
            fault = counter_step_fault(a, b, max_w, bound)
            if fault:
                out.append(f"{b.t - begin:.2f} s in: {fault}")
        if len(changes) >= 2 and not out:
            fault = counter_step_fault(changes[0], changes[-1], max_w, bound)
            if fault:
                out.append(f"{fault} over the span")
        gap = max(b - a for a, b in zip([begin] + [c.t for c in changes], [c.t for c in changes] + [end]))
        if gap > stall_s:
            out.append(f"counter showed no new value for {gap:.1f} s (stopped?)")
        return out

    def clear_before(self, t: float) -> None:
        with self._lock:
            self.changes = [c for c in self.changes if c.t >= t]
            self.errors = [e for e in self.errors if e[0] >= t]


def wait_for_update(
    read: Callable[[], float],
    previous: float | None = None,
    timeout_s: float = 1.0,
    clock: Callable[[], float] = time.perf_counter,
) -> CounterRead:
    """Poll until the counter shows a value different from `previous` (or from its first read)."""
    first = read() if previous is None else previous
    deadline = clock() + timeout_s
    while True:
        value = read()
        now = clock()
        if value != first:
            return CounterRead(now, value)
        if now > deadline:
            return CounterRead(now, value)  # a counter that never moves: the caller sees a zero delta


def detect_update_period(
    read: Callable[[], float],
    duration_s: float = 0.6,
    max_s: float = 3.0,
    clock: Callable[[], float] = time.perf_counter,
) -> float | None:
    """Median interval between observed counter changes, watched for `duration_s` and, while fewer than 3 changes
    have been seen, on up to `max_s` (a counter ticking every 0.3-1 s still gets a period); None if it changed fewer
    than 3 times by then."""
    changes: list[float] = []
    last = read()
    start = clock()
    end, limit = start + duration_s, start + max(max_s, duration_s)
    while True:
        now = clock()
        if now >= limit or (now >= end and len(changes) >= 3):
            break
        value = read()
        if value != last:
            changes.append(clock())
            last = value
    if len(changes) < 3:
        return None
    return statistics.median(b - a for a, b in zip(changes, changes[1:]))


def integrate_trace(times: list[float], watts: list[float], start: float, end: float) -> float:
    """Energy (J) of a sampled power trace over [start, end], holding each sample until the next (zero-order hold)."""
    if not times or end <= start:
        return 0.0
    energy = 0.0
    for i, (t, w) in enumerate(zip(times, watts)):
        t_next = times[i + 1] if i + 1 < len(times) else end
        lo, hi = max(t, start), min(t_next, end)
        if hi > lo:
            energy += w * (hi - lo)
    if times[0] > start:  # before the first sample: hold the first sample backwards
        energy += watts[0] * (min(times[0], end) - start)
    return energy
