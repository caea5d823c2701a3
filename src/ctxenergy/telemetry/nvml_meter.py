"""NVML meter: energy from the cumulative counter with edges placed on observed counter updates.

Window, per GPU i (see counter.py for why edges sit on updates):

    idle ..... |  work  | .. tail .. |
    ^t0_i      ^ws      ^we          ^t1_i      t0_i: read that first showed a new counter value before the work
                                                t1_i: read that showed the 2nd new value after the work
    E_i        = C_i(t1_i) - C_i(t0_i)
    dynamic_i  = E_i - P_idle_i * (t1_i - t0_i)
    energy     = sum_i dynamic_i + P_idle * (we - ws)

Waiting for the second update after the work lets the counter book the work's last ~100 ms period
(the first update after the work may close a period that ended before the work did).
GPUs without the counter fall back to integrating the instant-power trace, and the cell says so.

Every counter read (edges and the sampler's reads during the work) goes through one CounterLog per GPU. A window or
idle baseline whose reads failed, whose counter went backwards, jumped or drew more than the board's power limit
allows (counter.POWER_LIMIT_MARGIN), or stopped showing new values, or whose idle power is impossible, gets `faults`
and no energy: the cell is then not ok.
"""

from __future__ import annotations

import functools
import time

from ctxenergy.errors import CtxEnergyError, NoDeviceError
from ctxenergy.processes import own_process_tree
from ctxenergy.telemetry.base import DeviceInfo, DeviceState, EnergyMeter, IdleBaseline, WindowEnergy
from ctxenergy.telemetry.counter import (
    STALL_S,
    CounterLog,
    CounterRead,
    counter_delta_j,
    detect_update_period,
    integrate_trace,
    power_bound,
    wait_for_update,
)
from ctxenergy.telemetry.nvml_api import (
    REASON_SW_POWER_CAP,
    THERMAL_REASONS,
    open_backend,
    visible_devices,
    visible_gpu_uuids,
)
from ctxenergy.telemetry.sampler import PowerSampler

METHOD_COUNTER = "nvml-counter-edge-aligned"
METHOD_INSTANT = "nvml-instant-power-integral"


class NvmlMeter(EnergyMeter):
    def __init__(
        self,
        uuids: list[str] | None = None,
        sample_interval_s: float = 0.01,
        backend=None,
        detect_period: bool = True,
        own_pids: set[int] | None = None,
    ):
        self.nv = backend or open_backend()
        uuids = uuids if uuids is not None else visible_gpu_uuids()
        try:
            self._open(uuids, sample_interval_s, detect_period)
        except Exception as exc:
            if not is_nvml_error(exc):
                raise
            which = f"GPU {', '.join(uuids)}" if uuids else "the GPU"
            raise CtxEnergyError(
                f"NVML: {exc} while opening {which}; check the driver (nvidia-smi) and that this "
                "process may read the GPU (a GPU lost to the driver needs a reset or reboot)"
            ) from None
        self._own_pids_given = own_pids
        self._state_errors: list[str] = []  # clock, temperature, ... reads that failed since the last window ended
        self._starts: list[CounterRead] = []
        self._failed_at_open = [0] * len(self.handles)

    def _open(self, uuids: list[str] | None, sample_interval_s: float, detect_period: bool) -> None:
        """The GPUs' handles, inventory, counters and power samplers."""
        if uuids:
            self.handles = [self.nv.handle_by_uuid(u) for u in uuids]
        else:
            if self.nv.device_count() < 1:
                raise NoDeviceError("NVML sees no GPU on this host; on a CPU host use --configfile config/smoke.yaml")
            self.handles = [self.nv.handle(_first_visible_index())]
        driver = self.nv.driver_version()
        self.devices = [
            DeviceInfo(
                name=self.nv.name(h),
                uuid=self.nv.uuid(h),
                index=None,
                driver_version=driver,
                memory_total_bytes=self.nv.memory_total_bytes(h),
                power_limit_w=self.nv.power_limit_w(h),
            )
            for h in self.handles
        ]
        self.has_counter = all(self.nv.energy_j(h) is not None for h in self.handles)
        self.method = METHOD_COUNTER if self.has_counter else METHOD_INSTANT
        self._counters = [CounterLog(lambda h=h: self.nv.energy_j(h)) for h in self.handles] if self.has_counter else []
        for log in self._counters:
            log.read()  # the first value, so that a later failed read has one to answer with
        self.counter_period_s = (
            detect_update_period(self._counters[0].read) if (detect_period and self.has_counter) else None
        )
        # edges wait this long for a new value at most: a wait that runs out is a stalled counter (CounterLog.faults)
        self._stall_s = max(STALL_S, 5 * (self.counter_period_s or 0.0))
        self._polling = False  # the edges are polling the counter: the sampler leaves it alone meanwhile
        try:
            self._instant_source = self.nv.power_instant_w(self.handles[0])[1]
        except Exception as exc:  # the sampler counts its failed reads; the counter's energy does not need them
            if not is_nvml_error(exc):
                raise
            self._instant_source = "unavailable"
        self._samplers = [
            PowerSampler(
                self._sampler_read(h),
                sample_interval_s,
                source=self._instant_source,
                counter=self._sampler_counter(i) if self.has_counter else None,
                counter_interval_s=(self.counter_period_s or 0.1) / 2,
            ).start()
            for i, h in enumerate(self.handles)
        ]

    def _sampler_read(self, handle):
        def read():
            watts, _ = self.nv.power_instant_w(handle)
            return watts, self.nv.clock_event_reasons(handle)

        return read

    def _sampler_counter(self, i: int):
        def read():
            if not self._polling:
                self._counters[i].read()

        return read

    # --- state ---
    def _own_pids(self) -> set[int]:
        if self._own_pids_given is not None:
            return self._own_pids_given
        return own_process_tree()  # an engine's worker processes (vLLM tp) are ours, not foreign

    def state(self) -> list[DeviceState]:
        """Each GPU's state; a field whose read fails is None, and the failure a note of the window (no energy
        depends on it)."""
        own = self._own_pids()
        out = []
        for h in self.handles:
            read = functools.partial(self._state_field, h)
            out.append(
                DeviceState(
                    sm_clock_mhz=read("sm_clock_mhz"),
                    mem_clock_mhz=read("mem_clock_mhz"),
                    temperature_c=read("temperature_c"),
                    power_limit_w=read("power_limit_w"),
                    clock_event_reasons=read("clock_event_reasons"),
                    foreign_pids=[p for p in self.nv.process_pids(h) if p not in own],
                )
            )
        return out

    def _state_field(self, handle, name: str):
        try:
            return getattr(self.nv, name)(handle)
        except Exception as exc:
            if not is_nvml_error(exc):
                raise
            self._state_errors.append(f"{name} read failed (NVML: {exc})")
            return None

    # --- windows ---
    def _open_edges(self) -> list[CounterRead]:
        self._polling = True
        try:
            return [wait_for_update(log.read, timeout_s=self._stall_s) for log in self._counters]
        finally:
            self._polling = False

    def _close_edges(self) -> list[CounterRead]:
        ends = []
        self._polling = True
        try:
            for log in self._counters:
                first = wait_for_update(log.read, timeout_s=self._stall_s)
                ends.append(wait_for_update(log.read, previous=first.energy_j, timeout_s=self._stall_s))
        finally:
            self._polling = False
        return ends

    def _counter_faults(self, i: int, begin: float, end: float) -> list[str]:
        """What makes GPU i's counter wrong over [begin, end] (CounterLog.faults against its power limit)."""
        return self._counters[i].faults(begin, end, *power_bound(self.devices[i].power_limit_w), stall_s=self._stall_s)

    def _trace_faults(self, i: int, energy_j: float, span_s: float) -> list[str]:
        """GPUs without a counter: the trace is the energy, so its failed reads and excess power are faults."""
        out = []
        failed = self._samplers[i].failed_reads - self._failed_at_open[i]
        if failed:
            out.append(
                f"{failed} instant-power read(s) failed ({self._samplers[i].last_error}): "
                "the trace that is this GPU's energy has gaps"
            )
        max_w, bound = power_bound(self.devices[i].power_limit_w)
        if span_s > 0 and energy_j / span_s > max_w:
            out.append(f"trace power {energy_j / span_s:.0f} W > {max_w:.0f} W{bound}")
        return out

    def _idle_power_fault(self, i: int, power_w: float | None) -> str | None:
        limit = self.devices[i].power_limit_w
        if power_w is not None and not (0 < power_w <= (limit or power_bound(None)[0])):
            within = f"the {limit:.0f} W power limit" if limit else "any board's power"
            return f"idle power {power_w:.1f} W is impossible (above 0 W and within {within} expected)"
        return None

    def measure_idle(self, seconds: float) -> IdleBaseline:
        faults: list[str] = []
        if not self.has_counter:
            self._failed_at_open = [s.failed_reads for s in self._samplers]
            t0 = time.perf_counter()
            time.sleep(seconds)
            t1 = time.perf_counter()
            per = [
                integrate_trace(*self._trace_arrays(i, t0, t1), t0, t1) / (t1 - t0) for i in range(len(self.handles))
            ]
            for i, p in enumerate(per):
                fault = self._idle_power_fault(i, p)
                faults += [f"gpu{i}: {f}" for f in self._trace_faults(i, p * (t1 - t0), t1 - t0) + [fault] if f]
            return IdleBaseline(sum(per), per, t1 - t0, faults)
        begin = time.perf_counter()
        starts = self._open_edges()
        time.sleep(seconds)
        ends = self._close_edges()
        per = []
        for i, (s, e) in enumerate(zip(starts, ends)):
            d = counter_delta_j(s, e)
            per.append(None if d is None else d / (e.t - s.t))
            fault = self._idle_power_fault(i, per[-1])
            faults += [f"gpu{i}: {f}" for f in self._counter_faults(i, begin, e.t) + [fault] if f]
        total = None if any(p is None for p in per) else sum(per)
        return IdleBaseline(total, per, ends[0].t - starts[0].t, faults)

    def begin_window(self) -> float:
        self._state_start = self.state()
        self._failed_at_open = [s.failed_reads for s in self._samplers]
        self._t_begin = time.perf_counter()
        if self.has_counter:
            self._starts = self._open_edges()
            self._t_open = min(s.t for s in self._starts)
        else:
            self._t_open = time.perf_counter()
        return time.perf_counter()

    def _trace_arrays(self, i: int, start: float, end: float):
        tr = self._samplers[i].snapshot(start - 0.2, end + 0.2)
        return tr.t, tr.power_w

    def end_window(self, work_start: float, work_end: float, idle: IdleBaseline) -> WindowEnergy:
        notes: list[str] = []
        faults: list[str] = []
        if self.has_counter:
            ends = self._close_edges()
            t_close = max(e.t for e in ends)
        else:
            time.sleep(0.25)  # let the instant field publish the work's last period
            t_close = time.perf_counter()
        state_end = self.state()
        per_raw: list[float | None] = []
        per_dyn: list[float | None] = []
        for i in range(len(self.handles)):
            p_idle = idle.per_device_w[i] if i < len(idle.per_device_w) else None
            if self.has_counter:
                s, e = self._starts[i], ends[i]
                raw = counter_delta_j(s, e)
                span = e.t - s.t
                dev_faults = self._counter_faults(i, self._t_begin, e.t)
                if raw is None and not dev_faults:  # counter_delta_j's own refusal, in case the log missed it
                    dev_faults.append("energy counter reset or wrapped inside the window")
            else:
                span = t_close - work_start
                raw = integrate_trace(*self._trace_arrays(i, work_start, t_close), work_start, t_close)
                dev_faults = self._trace_faults(i, raw, span)
            faults += [f"gpu{i}: {f}" for f in dev_faults]
            per_raw.append(raw)
            per_dyn.append(None if (raw is None or p_idle is None) else raw - p_idle * span)
        raw_total = sum(per_raw) if all(r is not None for r in per_raw) else None
        if faults or idle.faults:  # no number from telemetry that cannot be right (raw_energy_j shows what it read)
            per_dyn = [None] * len(per_dyn)
        dynamic = sum(per_dyn) if all(d is not None for d in per_dyn) else None
        energy = None if (dynamic is None or idle.power_w is None) else dynamic + idle.power_w * (work_end - work_start)
        per_device = []
        for i, d in enumerate(per_dyn):
            p_idle = idle.per_device_w[i] if i < len(idle.per_device_w) else None
            per_device.append(None if (d is None or p_idle is None) else d + p_idle * (work_end - work_start))
        # One counter read (~4 ms on Hopper) at each edge at the window's mean power bounds the edge placement error.
        read_s = 0.004
        mean_w = (raw_total / max(t_close - self._t_open, 1e-9)) if raw_total is not None else None
        edge_unc = None if mean_w is None else 2 * read_s * mean_w
        trace = self._samplers[0].snapshot(self._t_open, t_close)
        # Reasons of every metered GPU: one GPU of a tensor-parallel cell that throttles throttles the cell.
        in_work = [r for sampler in self._samplers for r in sampler.snapshot(work_start, work_end).reasons]
        cap_fraction = (sum(1 for r in in_work if r & REASON_SW_POWER_CAP) / len(in_work)) if in_work else None
        thermal = any(r & THERMAL_REASONS for r in in_work) or any(
            (st.clock_event_reasons or 0) & THERMAL_REASONS for st in self._state_start + state_end
        )
        foreign = any(st.foreign_pids for st in self._state_start + state_end)
        if not self.has_counter:
            notes.append("this GPU has no energy counter: energy is the integral of the instant-power trace")
        for i, sampler in enumerate(self._samplers):
            if sampler.failed_reads:
                notes.append(
                    f"gpu{i}: {sampler.failed_reads} power samples failed so far ({sampler.last_error}); "
                    "the trace has gaps, the counter's energy does not depend on it"
                )
        notes += list(dict.fromkeys(self._state_errors))
        self._state_errors = []
        for i in range(len(self.handles)):
            self._samplers[i].clear_before(self._t_open - 1.0)
        for log in self._counters:
            log.clear_before(self._t_begin - 1.0)
        return WindowEnergy(
            work_start=work_start,
            work_end=work_end,
            window_s=t_close - self._t_open,
            raw_energy_j=raw_total,
            energy_j=energy,
            dynamic_energy_j=dynamic,
            per_device_energy_j=per_device,
            edge_uncertainty_j=edge_unc,
            method=self.method,
            trace=trace,
            state_start=self._state_start,
            state_end=state_end,
            power_cap_fraction=cap_fraction,
            thermal_throttle=thermal,
            foreign_process=foreign,
            notes=notes,
            faults=faults,
        )

    def close(self) -> None:
        for s in self._samplers:
            s.stop()


def is_nvml_error(exc: BaseException) -> bool:
    """pynvml's errors: NVMLError and the subclasses it makes per return code (NVMLError_Unknown, ...)."""
    return any(cls.__name__ == "NVMLError" for cls in type(exc).__mro__)


def _first_visible_index() -> int:
    first = (visible_devices() or [""])[0]
    return int(first) if first.isdigit() else 0
