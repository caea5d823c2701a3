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
"""

from __future__ import annotations

import os
import time

from ctxenergy.errors import NoDeviceError
from ctxenergy.telemetry.base import DeviceInfo, DeviceState, EnergyMeter, IdleBaseline, WindowEnergy
from ctxenergy.telemetry.counter import CounterRead, counter_delta_j, detect_update_period, integrate_trace, wait_for_update
from ctxenergy.telemetry.nvml_api import REASON_SW_POWER_CAP, THERMAL_REASONS, open_backend, visible_gpu_uuids
from ctxenergy.telemetry.sampler import PowerSampler

METHOD_COUNTER = "nvml-counter-edge-aligned"
METHOD_INSTANT = "nvml-instant-power-integral"


class NvmlMeter(EnergyMeter):
    def __init__(self, uuids: list[str] | None = None, sample_interval_s: float = 0.01, backend=None,
                 detect_period: bool = True, own_pids: set[int] | None = None):
        self.nv = backend or open_backend()
        uuids = uuids if uuids is not None else visible_gpu_uuids()
        if uuids:
            self.handles = [self.nv.handle_by_uuid(u) for u in uuids]
        else:
            if self.nv.device_count() < 1:
                raise NoDeviceError("NVML sees no GPU on this host; on a CPU host use --configfile config/smoke.yaml")
            self.handles = [self.nv.handle(_first_visible_index())]
        driver = self.nv.driver_version()
        self.devices = [
            DeviceInfo(
                name=self.nv.name(h), uuid=self.nv.uuid(h), index=None, driver_version=driver,
                memory_total_bytes=self.nv.memory_total_bytes(h), power_limit_w=self.nv.power_limit_w(h),
            )
            for h in self.handles
        ]
        self.has_counter = all(self.nv.energy_j(h) is not None for h in self.handles)
        self.method = METHOD_COUNTER if self.has_counter else METHOD_INSTANT
        self._own_pids_given = own_pids
        self.counter_period_s = (
            detect_update_period(lambda: self.nv.energy_j(self.handles[0])) if (detect_period and self.has_counter) else None
        )
        self._instant_source = self.nv.power_instant_w(self.handles[0])[1]
        self._samplers = [
            PowerSampler(self._sampler_read(h), sample_interval_s, source=self._instant_source).start() for h in self.handles
        ]
        self._starts: list[CounterRead] = []

    def _sampler_read(self, handle):
        def read():
            watts, _ = self.nv.power_instant_w(handle)
            return watts, self.nv.clock_event_reasons(handle)

        return read

    # --- state ---
    def _own_pids(self) -> set[int]:
        if self._own_pids_given is not None:
            return self._own_pids_given
        from ctxenergy.gpus import own_process_tree

        return own_process_tree()  # an engine's worker processes (vLLM tp) are ours, not foreign

    def state(self) -> list[DeviceState]:
        own = self._own_pids()
        out = []
        for h in self.handles:
            out.append(DeviceState(
                sm_clock_mhz=self.nv.sm_clock_mhz(h), mem_clock_mhz=self.nv.mem_clock_mhz(h),
                temperature_c=self.nv.temperature_c(h), power_limit_w=self.nv.power_limit_w(h),
                clock_event_reasons=self.nv.clock_event_reasons(h),
                foreign_pids=[p for p in self.nv.process_pids(h) if p not in own],
            ))
        return out

    # --- windows ---
    def _open_edges(self) -> list[CounterRead]:
        return [wait_for_update(lambda h=h: self.nv.energy_j(h)) for h in self.handles]

    def _close_edges(self) -> list[CounterRead]:
        ends = []
        for h in self.handles:
            first = wait_for_update(lambda h=h: self.nv.energy_j(h))
            ends.append(wait_for_update(lambda h=h: self.nv.energy_j(h), previous=first.energy_j))
        return ends

    def measure_idle(self, seconds: float) -> IdleBaseline:
        if not self.has_counter:
            t0 = time.perf_counter()
            time.sleep(seconds)
            t1 = time.perf_counter()
            per = [integrate_trace(*self._trace_arrays(i, t0, t1), t0, t1) / (t1 - t0) for i in range(len(self.handles))]
            return IdleBaseline(sum(per), per, t1 - t0)
        starts = self._open_edges()
        time.sleep(seconds)
        ends = self._close_edges()
        per = []
        for s, e in zip(starts, ends):
            d = counter_delta_j(s, e)
            per.append(None if d is None else d / (e.t - s.t))
        total = None if any(p is None for p in per) else sum(per)
        return IdleBaseline(total, per, ends[0].t - starts[0].t)

    def begin_window(self) -> float:
        self._state_start = self.state()
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
                if raw is None:
                    notes.append(f"gpu{i}: energy counter reset or wrapped inside the window; instant-power integral used")
                    raw = integrate_trace(*self._trace_arrays(i, s.t, e.t), s.t, e.t)
            else:
                span = t_close - work_start
                raw = integrate_trace(*self._trace_arrays(i, work_start, t_close), work_start, t_close)
            per_raw.append(raw)
            per_dyn.append(None if (raw is None or p_idle is None) else raw - p_idle * span)
        raw_total = sum(per_raw) if all(r is not None for r in per_raw) else None
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
                notes.append(f"gpu{i}: {sampler.failed_reads} power samples failed so far ({sampler.last_error}); "
                             "the trace has gaps, the counter's energy does not depend on it")
        for i in range(len(self.handles)):
            self._samplers[i].clear_before(self._t_open - 1.0)
        return WindowEnergy(
            work_start=work_start, work_end=work_end, window_s=t_close - self._t_open, raw_energy_j=raw_total,
            energy_j=energy, dynamic_energy_j=dynamic, per_device_energy_j=per_device, edge_uncertainty_j=edge_unc,
            method=self.method, trace=trace, state_start=self._state_start, state_end=state_end,
            power_cap_fraction=cap_fraction, thermal_throttle=thermal, foreign_process=foreign, notes=notes,
        )

    def close(self) -> None:
        for s in self._samplers:
            s.stop()


def _first_visible_index() -> int:
    value = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return int(value) if value.isdigit() else 0
