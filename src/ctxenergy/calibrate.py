"""`ctxenergy calibrate`: how wrong each way of reading GPU energy is over short windows, on this GPU.

Two load patterns, each with a long reference window (the truth) and many short windows:

  bursts  idle -> burst of length w -> idle, the shape of a real measurement. Each method estimates the
          energy the burst adds above idle, tail included. Truth for length w: one edge-aligned counter
          window over all k bursts of that length (each after >= gap_s idle), (E - P_idle x T) / k.
  steady  a load that runs the whole time. Each method estimates the mean power of its own window.
          Truth: one edge-aligned counter window over the whole series (>= truth_s).

The four methods read the same short window at once, so the run stays short:

  naive                 counter read right before the work and right after it
  power_usage_integral  nvmlDeviceGetPowerUsage, sampled by a thread and integrated
  instant_integral      the INSTANT power field, sampled by a thread and integrated
  ours                  NvmlMeter: edges on observed counter updates (telemetry/nvml_meter.py)

On bursts the two trace integrals run from the work's start to `tail_s` after its end (the work's tail
lands there) and subtract idle power over that span; naive subtracts it over its two reads.
Each short window starts at its own phase of the counter's update period (a low-discrepancy sequence):
a window that always started just after an update would flatter the naive reads.
The logic only talks to an NVML backend and a Load, so tests run it on the fake NVML with a fake load.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

import pandas as pd

from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.render import text_table
from ctxenergy.tables import write_csv_or_parquet
from ctxenergy.telemetry.base import IdleBaseline
from ctxenergy.telemetry.counter import CounterRead, counter_delta_j, integrate_trace, wait_for_update
from ctxenergy.telemetry.sampler import PowerSampler, Trace

METHODS = ("naive", "power_usage_integral", "instant_integral", "ours")
PATTERNS = ("bursts", "steady")
UNITS = {"bursts": "J above idle per burst", "steady": "W"}
_GOLDEN = 0.6180339887498949
_NO_IDLE = IdleBaseline(None, [None], 0.0)  # steady windows are never idle: ours is raw energy / window


class Load(Protocol):
    """A known GPU load: MatmulLoad on the GPU, FakeLoad in the tests."""

    uuid: str | None
    description: str

    def run(self, seconds: float) -> tuple[float, float]:
        """One burst of about `seconds` (the same work for the same `seconds`); returns its start and end."""

    def start(self) -> None:
        """Load the GPU continuously until stop()."""

    def stop(self) -> None: ...


@dataclass(frozen=True)
class CalibrationSettings:
    lengths: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0)
    n_windows: int = 20  # short windows per length and pattern (bursts: more if the truth needs them)
    truth_s: float = 20.0  # steady reference window, at least
    bursts_truth_s: float = 15.0  # bursts reference window per length, at least
    gap_s: float = 0.5  # idle before every burst
    tail_s: float = 0.3  # the trace integrals run this far past a burst
    idle_s: float = 2.0  # idle baseline before each burst length
    warmup_s: float = 2.0  # load before each pattern, so the board is at its steady temperature and clocks
    sample_interval_s: float = 0.002  # the power traces of the two integral methods
    patterns: tuple[str, ...] = PATTERNS


# --- pure logic ---


def phase_offsets(k: int, period_s: float) -> list[float]:
    """k phases spread evenly over one update period, in an order that does not drift with the index."""
    return [((i * _GOLDEN) % 1.0) * period_s for i in range(k)]


def aligned_start(t_edge: float, phase_s: float, period_s: float, earliest: float) -> float:
    """The first instant t_edge + phase + m * period (m >= 0) that is not before `earliest`."""
    t = t_edge + phase_s
    if t < earliest:
        t += math.ceil((earliest - t) / period_s - 1e-9) * period_s
    return t


def bursts_needed(n_windows: int, length_s: float, gap_s: float, period_s: float, truth_min_s: float) -> int:
    """Bursts of one length: n_windows, or more when their reference window would be shorter than truth_min_s."""
    cycle = gap_s + length_s + period_s / 2
    return max(n_windows, math.ceil(truth_min_s / cycle - 1e-9))


def burst_estimates(
    a: CounterRead,
    b: CounterRead,
    work_start: float,
    work_end: float,
    ours_dynamic_j: float | None,
    instant: Trace,
    usage: Trace,
    idle_w: float,
    tail_s: float,
) -> dict[str, float | None]:
    """Energy above idle of one burst, by each method."""
    naive = counter_delta_j(a, b)
    end = work_end + tail_s
    return {
        "naive": None if naive is None else naive - idle_w * (b.t - a.t),
        "power_usage_integral": _integral(usage, work_start, end) - idle_w * (end - work_start),
        "instant_integral": _integral(instant, work_start, end) - idle_w * (end - work_start),
        "ours": ours_dynamic_j,
    }


def steady_estimates(
    a: CounterRead, b: CounterRead, ours_raw_j: float | None, ours_window_s: float, instant: Trace, usage: Trace
) -> dict[str, float | None]:
    """Mean power (W) of one window under a steady load, by each method."""
    span = b.t - a.t
    naive = counter_delta_j(a, b)
    return {
        "naive": None if naive is None else naive / span,
        "power_usage_integral": _integral(usage, a.t, b.t) / span,
        "instant_integral": _integral(instant, a.t, b.t) / span,
        "ours": None if ours_raw_j is None else ours_raw_j / ours_window_s,
    }


def _integral(trace: Trace, start: float, end: float) -> float:
    return integrate_trace(trace.t, trace.power_w, start, end)


def error_pct(estimate: float | None, truth: float | None) -> float | None:
    if estimate is None or truth is None or truth == 0 or not math.isfinite(estimate):
        return None
    return (estimate / truth - 1.0) * 100.0


def window_rows(pattern: str, length_s: float, truth: float, windows: list[dict]) -> list[dict]:
    """Tidy rows, one per (window, method), from each window's per-method estimates."""
    rows = []
    for w in windows:
        for method in METHODS:
            est = w["estimates"][method]
            rows.append(
                {
                    "pattern": pattern,
                    "window_s": length_s,
                    "window": w["window"],
                    "phase_s": w["phase_s"],
                    "work_s": w["work_s"],
                    "method": method,
                    "estimate": est,
                    "truth": truth,
                    "unit": UNITS[pattern],
                    "error_pct": error_pct(est, truth),
                    "power_cap_fraction": w.get("power_cap_fraction"),
                    "thermal_throttle": w.get("thermal_throttle", False),
                    "notes": w.get("notes", ""),
                }
            )
    return rows


def summarise(windows: pd.DataFrame, meta: dict) -> pd.DataFrame:
    """One row per (pattern, window length, method): median and max absolute error against the truth."""
    rows = []
    for (pattern, length), g in windows.groupby(["pattern", "window_s"], sort=False):
        for method in METHODS:
            m = g[g["method"] == method]
            err = m["error_pct"].dropna().astype(float)
            rows.append(
                {
                    "device": meta["device"],
                    "method": method,
                    "pattern": pattern,
                    "window_s": float(length),
                    "n_windows": int(err.size),
                    "median_abs_error_pct": float(err.abs().median()) if err.size else None,
                    "max_abs_error_pct": float(err.abs().max()) if err.size else None,
                    "median_error_pct": float(err.median()) if err.size else None,
                    "truth": float(m["truth"].iloc[0]) if len(m) else None,
                    "truth_unit": UNITS[pattern],
                    "counter_period_s": meta.get("counter_period_s"),
                    "instant_source": meta.get("instant_source"),
                    "driver_version": meta.get("driver_version"),
                }
            )
    return pd.DataFrame(rows)


def format_table(summary: pd.DataFrame) -> str:
    """Median / max absolute error (%) per method, one line per pattern and window length."""
    rows = []
    for (pattern, length), g in summary.groupby(["pattern", "window_s"], sort=False):
        by = {r["method"]: r for _, r in g.iterrows()}
        errors = [
            "n/a"
            if (r := by.get(m)) is None or pd.isna(r["median_abs_error_pct"])
            # the max in a fixed width: the slashes of a column line up
            else f"{r['median_abs_error_pct']:.2f} / {r['max_abs_error_pct']:>6.2f} %"
            for m in METHODS
        ]
        unit = "J" if pattern == "bursts" else "W"
        rows.append([pattern, f"{length:.2f}s", f"{g['truth'].iloc[0]:.1f} {unit}", *errors])
    return text_table(["pattern", "window", "truth", *METHODS], rows)


# A window's own edge error may take this share of a cell's interval target: it then widens a window-to-window spread
# that has to fit the target by at most ~3 % (in quadrature), and leaves the target to the work's own variation.
EDGE_SHARE_OF_TARGET = 0.25


def shortest_window_s(summary: pd.DataFrame, target_pct: float, share: float = EDGE_SHARE_OF_TARGET) -> float | None:
    """The shortest calibrated window whose edge-aligned (`ours`) median error on idle -> work -> idle bursts, the
    shape of a real window, is within `share` of a cell's interval target; None when no calibrated length is.

    Bursts, not the steady load: a steady load flatters every method (its edges fall in the same power as its middle).
    """
    rows = summary[
        (summary["method"] == "ours")
        & (summary["pattern"] == "bursts")
        & (summary["median_abs_error_pct"] <= share * target_pct)
    ]
    return float(rows["window_s"].min()) if len(rows) else None


def estimate_runtime_s(s: CalibrationSettings, period_s: float = 0.1) -> float:
    """What the protocol below takes (loads run for their nominal length)."""
    total = 0.0
    if "bursts" in s.patterns:
        total += s.warmup_s
        for w in s.lengths:
            k = bursts_needed(s.n_windows, w, s.gap_s, period_s, s.bursts_truth_s)
            total += s.gap_s + s.idle_s + 2.5 * period_s + k * (s.gap_s + w + period_s / 2) + 2.5 * period_s
    if "steady" in s.patterns:
        series = s.n_windows * sum(w + 3 * period_s for w in s.lengths)
        total += s.warmup_s + max(s.truth_s, series) + 2.5 * period_s
    return total


# --- the protocol (real time: NVML, or the fake) ---


def _sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


class _Instruments:
    """Our meter on the load's GPU, plus the plain counter read and the two power traces the other methods use."""

    def __init__(self, backend, uuid: str | None, sample_interval_s: float, log: Callable[[str], None]):
        from ctxenergy.telemetry.nvml_meter import NvmlMeter

        self.nv = backend
        try:
            self.meter = NvmlMeter(uuids=[uuid] if uuid else None, backend=backend)
        except Exception as exc:  # noqa: BLE001 - a UUID NVML does not know: the visible GPU is the best guess
            log(f"NVML does not know the load's GPU {uuid} ({exc}); reading the first visible GPU instead")
            self.meter = NvmlMeter(uuids=None, backend=backend)
        if not self.meter.has_counter:
            self.meter.close()
            raise CtxEnergyError(
                f"{self.meter.devices[0].name} has no energy counter: calibration needs it as the reference "
                "(measurements on this GPU integrate instant power, and say so)"
            )
        self.handle = self.meter.handles[0]
        self.period_s = self.meter.counter_period_s or 0.1
        h = self.handle
        self.instant_source = backend.power_instant_w(h)[1]
        self.instant = PowerSampler(
            lambda: (backend.power_instant_w(h)[0], 0), sample_interval_s, source=self.instant_source
        ).start()
        self.usage = PowerSampler(
            lambda: (backend.power_usage_w(h), 0), sample_interval_s, source="power_usage"
        ).start()

    def _energy(self) -> float:
        return self.nv.energy_j(self.handle)

    def read(self) -> CounterRead:
        value = self._energy()
        return CounterRead(time.perf_counter(), value)

    def open_edge(self) -> CounterRead:
        return wait_for_update(self._energy)

    def close_edge(self) -> CounterRead:
        first = wait_for_update(self._energy)
        return wait_for_update(self._energy, previous=first.energy_j)

    def traces(self, start: float, end: float) -> tuple[Trace, Trace]:
        return self.instant.snapshot(start - 0.5, end + 0.5), self.usage.snapshot(start - 0.5, end + 0.5)

    def forget_before(self, t: float) -> None:
        self.instant.clear_before(t)
        self.usage.clear_before(t)

    def close(self) -> None:
        self.instant.stop()
        self.usage.stop()
        self.meter.close()


def _ours_flags(ew) -> dict:
    return {
        "power_cap_fraction": ew.power_cap_fraction,
        "thermal_throttle": ew.thermal_throttle,
        "notes": "; ".join(ew.notes + ew.faults),
    }  # a window with faults has no energy of ours; they say why


def measure_bursts(
    inst: _Instruments, load: Load, s: CalibrationSettings, log: Callable[[str], None]
) -> tuple[list[dict], dict]:
    rows: list[dict] = []
    info: dict = {}
    start, last_end = load.run(s.warmup_s)
    period = inst.period_s
    for length in s.lengths:
        _sleep_until(last_end + s.gap_s)
        idle = inst.meter.measure_idle(s.idle_s)
        if idle.power_w is None or idle.faults:
            why = "; ".join(idle.faults) or "the energy counter reset"
            raise CtxEnergyError(f"the idle baseline cannot be right ({why}); run the calibration again")
        k = bursts_needed(s.n_windows, length, s.gap_s, period, s.bursts_truth_s)
        windows = []
        truth_open = inst.open_edge()
        for i, phase in enumerate(phase_offsets(k, period)):
            # Open our window about a period before the burst may start, so that the start can sit at its phase.
            _sleep_until(last_end + s.gap_s - period - 0.01)
            t_edge = inst.meter.begin_window()
            _sleep_until(aligned_start(t_edge, phase, period, max(last_end + s.gap_s, t_edge + 0.001)))
            a = inst.read()
            ws, we = load.run(length)
            b = inst.read()
            ours = inst.meter.end_window(ws, we, idle)
            last_end = we
            _sleep_until(we + s.tail_s + 3 * s.sample_interval_s)  # the traces must reach the end of the tail
            instant, usage = inst.traces(ws, we + s.tail_s)
            est = burst_estimates(a, b, ws, we, ours.dynamic_energy_j, instant, usage, idle.power_w, s.tail_s)
            windows.append({"window": i, "phase_s": phase, "work_s": we - ws, "estimates": est, **_ours_flags(ours)})
            inst.forget_before(ws - 1.0)
        truth_close = inst.close_edge()
        total = counter_delta_j(truth_open, truth_close)
        if total is None:
            raise CtxEnergyError("the energy counter reset during a reference window; run the calibration again")
        span = truth_close.t - truth_open.t
        truth = (total - idle.power_w * span) / k
        rows += window_rows("bursts", length, truth, windows)
        info[f"bursts_{length:g}s"] = {
            "bursts": k,
            "truth_j": truth,
            "reference_window_s": span,
            "idle_w": idle.power_w,
        }
        log(
            f"bursts {length:g} s: {k} bursts, truth {truth:.1f} J above idle per burst "
            f"(reference window {span:.1f} s, idle {idle.power_w:.1f} W)"
        )
    return rows, info


def measure_steady(
    inst: _Instruments, load: Load, s: CalibrationSettings, log: Callable[[str], None]
) -> tuple[list[dict], dict]:
    period = inst.period_s
    per_length: dict[float, list[dict]] = {w: [] for w in s.lengths}
    phases = phase_offsets(s.n_windows * len(s.lengths), period)
    load.start()
    try:
        time.sleep(s.warmup_s)
        truth_open = inst.open_edge()
        j = 0
        # Lengths interleaved, so a slow drift of the board's power touches every length alike.
        for i in range(s.n_windows):
            for length in s.lengths:
                t_edge = inst.meter.begin_window()
                _sleep_until(aligned_start(t_edge, phases[j], period, t_edge + 0.001))
                a = inst.read()
                _sleep_until(a.t + length)
                b = inst.read()
                ours = inst.meter.end_window(a.t, b.t, _NO_IDLE)
                instant, usage = inst.traces(a.t, b.t)
                est = steady_estimates(a, b, ours.raw_energy_j, ours.window_s, instant, usage)
                per_length[length].append(
                    {"window": i, "phase_s": phases[j], "work_s": b.t - a.t, "estimates": est, **_ours_flags(ours)}
                )
                inst.forget_before(a.t - 1.0)
                j += 1
        _sleep_until(truth_open.t + s.truth_s)
        truth_close = inst.close_edge()
    finally:
        load.stop()
    total = counter_delta_j(truth_open, truth_close)
    if total is None:
        raise CtxEnergyError("the energy counter reset during a reference window; run the calibration again")
    span = truth_close.t - truth_open.t
    truth_w = total / span
    rows: list[dict] = []
    for length, windows in per_length.items():
        rows += window_rows("steady", length, truth_w, windows)
    log(f"steady: truth {truth_w:.1f} W over {span:.1f} s")
    return rows, {"steady": {"truth_w": truth_w, "reference_window_s": span}}


def calibrate(
    backend,
    load: Load,
    settings: CalibrationSettings = CalibrationSettings(),
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> tuple[pd.DataFrame, dict]:
    """Run the patterns on `load` and read them through `backend`; returns per-window rows and metadata."""
    unknown = [p for p in settings.patterns if p not in PATTERNS]
    if unknown:
        raise CtxEnergyError(f"unknown calibration pattern(s) {', '.join(unknown)} (known: {', '.join(PATTERNS)})")
    t0 = time.perf_counter()
    inst = _Instruments(backend, load.uuid, settings.sample_interval_s, log)
    try:
        dev = inst.meter.devices[0]
        meta = {
            "device": dev.name,
            "uuid": dev.uuid,
            "driver_version": dev.driver_version,
            "power_limit_w": dev.power_limit_w,
            "counter_period_s": inst.meter.counter_period_s,
            "instant_source": inst.instant_source,
            "load": load.description,
            "settings": asdict(settings),
        }
        log(
            f"calibrating {dev.name} ({dev.uuid}); counter period {inst.period_s * 1e3:.0f} ms; "
            f"load: {load.description}; about {estimate_runtime_s(settings, inst.period_s):.0f} s"
        )
        rows: list[dict] = []
        for pattern in settings.patterns:
            measure = measure_bursts if pattern == "bursts" else measure_steady
            got, info = measure(inst, load, settings, log)
            rows += got
            meta.update(info)
    finally:
        inst.close()
    meta["elapsed_s"] = time.perf_counter() - t0
    return pd.DataFrame(rows), meta


# --- command line ---


def settings_from_args(args) -> CalibrationSettings:
    lengths = tuple(float(x) for x in str(args.lengths).split(",") if x.strip())
    if not lengths or min(lengths) <= 0:
        raise CtxEnergyError(f"--lengths {args.lengths!r}: give positive window lengths in seconds, e.g. 0.1,0.2,0.5")
    patterns = tuple(p.strip() for p in str(getattr(args, "patterns", ",".join(PATTERNS))).split(",") if p.strip())
    s = CalibrationSettings(
        lengths=lengths, n_windows=int(args.windows), truth_s=float(args.truth_s), patterns=patterns
    )
    if getattr(args, "quick", False):
        s = CalibrationSettings(
            lengths=tuple(w for w in lengths if w <= 0.5) or lengths[:1],
            n_windows=min(s.n_windows, 8),
            truth_s=min(s.truth_s, 8.0),
            bursts_truth_s=6.0,
            idle_s=1.0,
            warmup_s=1.0,
            patterns=patterns,
        )
    return s


def windows_path(out: str | Path) -> Path:
    """calibration.csv -> calibration.windows.csv"""
    out = Path(out)
    return out.with_name(f"{out.stem}.windows{out.suffix or '.csv'}")


@contextlib.contextmanager
def claimed_gpu(backend, timeout_s: float = 3600.0):
    """Hold one GPU with the lock every measurement job takes: a calibration sharing a GPU with a cell would spoil
    both. Must run before CUDA is initialised in this process."""
    from ctxenergy.engine_host import stop_idle_hosts
    from ctxenergy.gpus import claimed_devices

    stop_idle_hosts()  # an idle engine host may hold the GPU
    with claimed_devices(1, timeout_s, backend, who="the calibration") as uuids:
        yield uuids[0]


def run_on_gpu(
    settings: CalibrationSettings, log: Callable[[str], None], backend=None
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """NVML first (fails in one line on a host without a GPU), then the matmul load on the current CUDA device."""
    from ctxenergy.synthetic_load import MatmulLoad
    from ctxenergy.telemetry.nvml_api import open_backend

    backend = backend or open_backend()
    load = MatmulLoad()
    try:
        windows, meta = calibrate(backend, load, settings, log)
    finally:
        load.close()
    return summarise(windows, meta), windows, meta


def main(args) -> int:
    from ctxenergy.telemetry.nvml_api import open_backend

    settings = settings_from_args(args)
    backend = open_backend()
    with claimed_gpu(backend) as uuid:
        print(f"ctxenergy: calibrating {uuid}", file=sys.stderr, flush=True)
        summary, windows, meta = run_on_gpu(settings, lambda line: print(line, file=sys.stderr, flush=True), backend)
    out = write_csv_or_parquet(summary, args.out)
    write_csv_or_parquet(windows, getattr(args, "windows_out", None) or windows_path(out))
    print(format_table(summary))
    print(f"{meta['device']}: {len(summary)} rows -> {out} ({meta['elapsed_s']:.0f} s)")
    return 0
