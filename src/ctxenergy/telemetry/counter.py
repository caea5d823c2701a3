"""Pure logic of a cumulative energy counter that is published every ~100 ms.

Two facts shape everything here (docs/measurement.md): the counter's value only changes at
update instants ~100 ms apart, and a read costs a few ms. So a window's edges are placed on observed
updates: the window opens at the read that first shows a new value and closes at the read that shows
the second new value after the work. Each edge is then known to one read (~4 ms), and the energy between
the edges is a true accumulated amount, not a stale snapshot.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

# A counter that goes backwards by more than this, or jumps forwards by more than MAX_PLAUSIBLE_W
# over the elapsed time, was reset or wrapped: the delta is rejected rather than booked.
MAX_PLAUSIBLE_W = 5000.0
UINT64_J = 2**64 / 1000.0  # nvmlDeviceGetTotalEnergyConsumption is an unsigned 64-bit count of mJ


@dataclass(frozen=True)
class CounterRead:
    t: float  # perf_counter() seconds at the end of the read
    energy_j: float


def counter_delta_j(start: CounterRead, end: CounterRead) -> float | None:
    """Energy between two reads, or None when the counter was reset or wrapped in between.

    A wrap of the 64-bit mJ counter is taken back when it is plausible (small true delta); anything else
    that is negative or implies more than MAX_PLAUSIBLE_W is refused so that no negative or huge value is booked.
    """
    delta = end.energy_j - start.energy_j
    elapsed = max(end.t - start.t, 1e-3)
    if delta < 0:
        wrapped = delta + UINT64_J
        if 0 <= wrapped <= MAX_PLAUSIBLE_W * elapsed:
            return wrapped
        return None
    if delta > MAX_PLAUSIBLE_W * elapsed:
        return None
    return delta


def wait_for_update(read: Callable[[], float], previous: float | None = None, timeout_s: float = 1.0,
                    clock: Callable[[], float] = time.perf_counter) -> CounterRead:
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


def detect_update_period(read: Callable[[], float], duration_s: float = 0.6, max_s: float = 3.0,
                         clock: Callable[[], float] = time.perf_counter) -> float | None:
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
