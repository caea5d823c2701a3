"""The meter interface every energy source implements, and the records it returns.

A measurement opens a window, runs the work, and closes the window with the work's own start and end
instants. The meter returns the energy the work is responsible for:

    dynamic_energy_j = window energy - idle power x window length   (everything above idle, tail included)
    energy_j         = dynamic_energy_j + idle power x work span    (what the GPU drew while working)

so the idle stretches a window needs at its edges (to meet counter updates) enter neither number.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from ctxenergy.telemetry.sampler import Trace


@dataclass
class DeviceState:
    """One GPU's state at one instant (None where the source cannot tell)."""

    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    temperature_c: int | None = None
    power_limit_w: float | None = None
    clock_event_reasons: int | None = None
    foreign_pids: list[int] = field(default_factory=list)


@dataclass
class IdleBaseline:
    power_w: float | None  # summed over the metered devices
    per_device_w: list[float | None]
    duration_s: float
    # why this baseline cannot be right (a counter that stopped, stepped or failed; an impossible idle power)
    faults: list[str] = field(default_factory=list)


@dataclass
class WindowEnergy:
    """What a meter measured over one window of work."""

    work_start: float
    work_end: float
    window_s: float  # edge to edge (>= the work span)
    raw_energy_j: float | None  # counter delta edge to edge, summed over devices
    energy_j: float | None  # attributable to the work (see module doc)
    dynamic_energy_j: float | None
    per_device_energy_j: list[float | None]
    edge_uncertainty_j: float | None  # what one read's worth of edge placement could move energy_j by
    method: str
    trace: Trace | None = None
    state_start: list[DeviceState] = field(default_factory=list)
    state_end: list[DeviceState] = field(default_factory=list)
    power_cap_fraction: float | None = None
    thermal_throttle: bool = False
    foreign_process: bool = False
    notes: list[str] = field(default_factory=list)
    # telemetry that cannot be right in this window (the energies are then None): the cell is not ok
    faults: list[str] = field(default_factory=list)

    @property
    def work_s(self) -> float:
        return self.work_end - self.work_start


@dataclass
class DeviceInfo:
    name: str
    uuid: str | None
    index: int | None
    driver_version: str | None = None
    memory_total_bytes: int | None = None
    power_limit_w: float | None = None


class EnergyMeter(ABC):
    """One energy source (NVML GPUs, RAPL, or none) behind one small window API."""

    method: str
    counter_period_s: float | None = None
    devices: list[DeviceInfo]

    @abstractmethod
    def measure_idle(self, seconds: float) -> IdleBaseline: ...

    @abstractmethod
    def begin_window(self) -> float:
        """Prepare a window; returns the instant from which the caller should start the work at once."""

    @abstractmethod
    def end_window(self, work_start: float, work_end: float, idle: IdleBaseline) -> WindowEnergy: ...

    def state(self) -> list[DeviceState]:
        return []

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
