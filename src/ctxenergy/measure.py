"""The measurement protocol of one cell (docs/measurement.md "The protocol of one cell").

load engine -> idle baseline (model resident) -> warm-up on a different prompt for one window's length (its last
run is the timing pass) -> `repeats` windows of R back-to-back runs, each window >= min_window_s -> per-window
energy and times. Engine start-up, idle baseline and warm-up all happen before the first window opens, and the
warm-up ends right before it, so that the first window starts as warm as the later ones.

Opt-in (`measure:` keys of config.PROTOCOL_OPT_IN; absent, the protocol above is unchanged): windows until the
interval reaches a target instead of a fixed count, an idle floor measured once per engine load and re-checked per
cell, and a shorter warm-up for a cell that follows another on the same warm engine. docs/measurement.md, "Windows
sized by a target".
"""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.batching import batch_limit_of, limit_before_load
from ctxenergy.config import cell_settings_hash
from ctxenergy.engines import OutOfMemory, make_engine
from ctxenergy.engines.registry import ENGINES
from ctxenergy.flops import device_peaks, generate_flops, plausibility, prefill_flops
from ctxenergy.grid import Cell, output_tokens
from ctxenergy.info import host_cpu
from ctxenergy.models import resolve_model, tokenizer_label
from ctxenergy.prompts import load_cell_prompts
from ctxenergy.settings import MeasureSettings, Settings
from ctxenergy.stats import run_latency, summarize
from ctxenergy.tables import sibling, write_tables
from ctxenergy.telemetry import EnergyMeter, IdleBaseline, WindowEnergy, open_meter
from ctxenergy.telemetry.memory import MEMORY_COLUMNS, PeakMemory

# A window shorter than this many counter periods is flagged: its edges weigh too much.
MIN_PERIODS_PER_WINDOW = 3
# A cell may share the warm state of the cell before it (measure.warmup_shared_s) only if that cell's windows ended
# this recently: about the time between two cell jobs on one engine host (job start, prompt files, a cell's write
# take ~1-2 s), short against the tens of seconds a board takes to cool.
SHARED_WARMUP_MAX_GAP_S = 30.0
# Why a cell stopped measuring windows (`windows_stop_reason`).
STOP_FIXED, STOP_TARGET, STOP_CAP, STOP_NO_ENERGY = "fixed_count", "target_reached", "cap_reached", "no_energy"
# The status of a cell whose telemetry cannot be right (WindowEnergy.faults, IdleBaseline.faults): no energy from it.
TELEMETRY_ERROR = "telemetry_error"


@dataclass
class CellRecord:
    """Everything measured for one cell, before it becomes tables."""

    cell: Cell
    status: str = "ok"
    status_reason: str = ""
    flags: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)
    windows: list[dict] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    trace: list[dict] = field(default_factory=list)
    timeline: dict = field(default_factory=dict)


def runs_per_window(run_s: float, min_window_s: float, max_runs: int) -> int:
    """Back-to-back runs so that one window lasts at least min_window_s."""
    if run_s <= 0:
        return max_runs
    return int(min(max(math.ceil(min_window_s / run_s), 1), max_runs))


def _state_columns(prefix: str, states) -> dict:
    s = states[0] if states else None
    return {
        f"sm_clock_mhz_{prefix}": getattr(s, "sm_clock_mhz", None),
        f"mem_clock_mhz_{prefix}": getattr(s, "mem_clock_mhz", None),
        f"temperature_c_{prefix}": getattr(s, "temperature_c", None),
        f"clock_event_reasons_{prefix}": getattr(s, "clock_event_reasons", None),
        f"foreign_pids_{prefix}": ",".join(str(p) for st in states for p in st.foreign_pids) if states else "",
    }


def _window_row(index: int, runs: list, w: WindowEnergy) -> dict:
    n = len(runs)
    row = {
        "window": index,
        "runs": n,
        "work_s": w.work_s,
        "window_s": w.window_s,
        "run_s": w.work_s / n,
        "prefill_s": float(np.mean([r.prefill_s for r in runs])),
        "raw_energy_j": w.raw_energy_j,
        "energy_j": w.energy_j,
        "dynamic_energy_j": w.dynamic_energy_j,
        "energy_per_run_j": None if w.energy_j is None else w.energy_j / n,
        "dynamic_energy_per_run_j": None if w.dynamic_energy_j is None else w.dynamic_energy_j / n,
        "mean_power_w": None if w.energy_j is None else w.energy_j / w.work_s,
        "edge_uncertainty_j": w.edge_uncertainty_j,
        "power_cap_fraction": w.power_cap_fraction,
        "thermal_throttle": w.thermal_throttle,
        "foreign_process": w.foreign_process,
        "per_device_energy_j": ",".join("" if e is None else f"{e:.4f}" for e in w.per_device_energy_j),
        "notes": "; ".join(w.notes),
        "telemetry_faults": "; ".join(w.faults),
    }
    row.update(_state_columns("start", w.state_start))
    row.update(_state_columns("end", w.state_end))
    return row


def warmup_prompt_for(settings: Settings, cell: Cell, prompt: np.ndarray, warmup_prompt: np.ndarray) -> np.ndarray:
    """The prompt the warm-up and timing passes run on: a different one of the same length, or, only when
    engine_options.vllm.warmup_same_prompt asks for it, the measured prompt itself (the seed paper's mistake, kept
    to show that the plausibility guard catches a prefill served from vLLM's prefix cache)."""
    # Only vLLM's options have the key: the other engines never warm up on the measured prompt.
    same = bool(ENGINES[cell.engine].options(settings, cell.variant).get("warmup_same_prompt"))
    return prompt if same else warmup_prompt


def relative_half_width_pct(values) -> float | None:
    """Half-width of the 95 % t-interval of the mean (`stats.summarize`, as the aggregate reports it), in % of the
    mean; None with fewer than two values."""
    s = summarize(values)
    if s["n"] < 2 or not s["mean"]:
        return None
    return 100 * (s["ci_high"] - s["mean"]) / abs(s["mean"])


# The energy per run a target applies to (`measure.target_energy`): total, above idle, or the wider of the two.
TARGET_ENERGY_COLUMNS = {
    "total": ("energy_per_run_j",),
    "dynamic": ("dynamic_energy_per_run_j",),
    "both": ("energy_per_run_j", "dynamic_energy_per_run_j"),
}


def host_bound(cell: Cell) -> bool:
    """A generate cell of an engine whose batch-1 decode waits on the host CPU (engines.registry): its run time, and
    with it its total energy, follows the host; its energy above idle is the GPU's work."""
    return cell.phase == "generate" and ENGINES[cell.engine].host_bound_decode


def window_target(settings: MeasureSettings, is_host_bound: bool = False) -> tuple[float | None, str]:
    """The interval target of a cell's windows: (half-width in % of the mean, or None for a fixed count; which energy
    per run, a key of TARGET_ENERGY_COLUMNS). A host-bound cell takes the `host_bound_target_*` settings where set."""
    pct, energy = settings.target_half_width_pct, settings.target_energy
    if pct is not None and is_host_bound:
        pct = settings.host_bound_target_half_width_pct or pct
        energy = settings.host_bound_target_energy or energy
    return pct, energy


def target_half_width_pct(windows: list[dict], energy: str) -> float | None:
    """The half-width the target is checked on: that of the energy per run `energy` names (the wider one for
    "both"); None where any of them has none (fewer than two windows, no energy counter)."""
    widths = [relative_half_width_pct([w.get(col) for w in windows]) for col in TARGET_ENERGY_COLUMNS[energy]]
    return None if any(h is None for h in widths) else max(widths)


def windows_stop_reason(windows: list[dict], settings: MeasureSettings, is_host_bound: bool = False) -> str | None:
    """Why the windows measured so far (their rows, in order: energy_per_run_j, dynamic_energy_per_run_j) are
    enough, or None to measure another.

    Without `target_half_width_pct`: after `repeats` windows. With it: once the interval of the mean energy per run
    (`target_energy`: total, dynamic or both) is within the target, after at least `min_windows` and at most
    `max_windows`; a host-bound cell (`host_bound`) uses `host_bound_target_half_width_pct` and
    `host_bound_target_energy` where set. Stopping when the interval first looks narrow enough favours a run of
    windows that happened to agree, so the stated 95 % covers a little less than 95 %; at least three windows (the
    schema's minimum) keep that effect small against the target, which sits well below the board-to-board spread
    (or, for a host-bound cell, the host-to-host spread) that no interval covers anyway.
    """
    n = len(windows)
    target, energy = window_target(settings, is_host_bound)
    if target is None:
        return STOP_FIXED if n >= settings.repeats else None
    if n < settings.min_windows:
        return None
    half = target_half_width_pct(windows, energy)
    if half is None:
        return STOP_NO_ENERGY  # nothing to size the interval on (a host without an energy counter)
    if half <= target:
        return STOP_TARGET
    return STOP_CAP if n >= settings.max_windows else None


def idle_baseline(meter: EnergyMeter, settings: MeasureSettings, resident, meta: dict) -> IdleBaseline:
    """The idle power the cell's windows subtract: measured (`idle_s`), or, with `idle_recheck_s` on an engine host,
    the floor measured once for this load when a short re-check agrees with it within the tolerance."""
    recheck_s = settings.idle_recheck_s
    floor = getattr(resident, "idle_floor", None) if recheck_s is not None else None
    if floor is None or floor.power_w is None:
        idle, source = meter.measure_idle(settings.idle_s), "measured"
    else:
        check = meter.measure_idle(recheck_s)
        # a re-check whose telemetry failed agrees with nothing: the floor is measured again in full
        diff = None if (check.power_w is None or check.faults) else 100 * (check.power_w / floor.power_w - 1)
        meta["idle_recheck_w"], meta["idle_recheck_diff_pct"] = check.power_w, diff
        if diff is not None and abs(diff) <= settings.idle_recheck_tolerance_pct:
            idle, source = floor, "reused"
        else:
            idle, source = meter.measure_idle(settings.idle_s), "remeasured"
    meta["idle_source"] = source
    if source == "reused":
        meta["idle_age_s"] = time.perf_counter() - resident.idle_floor_at
    else:
        meta["idle_age_s"] = 0.0
        if resident is not None and recheck_s is not None and not idle.faults:  # a faulty floor is never reused
            resident.idle_floor, resident.idle_floor_at = idle, time.perf_counter()
    return idle


def warm_up(
    engine,
    warmup_prompt: np.ndarray,
    n_out: int,
    settings: MeasureSettings,
    previous_windows_end: float | None,
    meta: dict,
):
    """Runs on the warm-up prompt right before the windows; returns the last run's timing (the timing pass).

    For as long as one window: kernels, clocks, power and temperature then start every window in the same state (a
    single short run left the first window measurably off). With `warmup_shared_s`, a cell whose engine finished
    another cell's windows within SHARED_WARMUP_MAX_GAP_S is already warm: it runs only that long, but at least two
    runs (the first captures this length's CUDA graph, the second times a replay) unless one run already lasts a
    window, which bounds every warm-up.
    """
    shared_s = settings.warmup_shared_s
    start = time.perf_counter()
    gap = None if previous_windows_end is None else start - previous_windows_end
    shared = shared_s is not None and gap is not None and gap <= SHARED_WARMUP_MAX_GAP_S
    full_s = settings.min_window_s
    enough_s, min_runs = (min(shared_s, full_s), 2) if shared else (full_s, 1)
    runs = 0
    while True:
        timing = engine.run(warmup_prompt, n_out)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= full_s or (runs >= min_runs and elapsed >= enough_s):
            break
    meta["warmup_mode"] = "shared" if shared else "per_cell"
    meta["warmup_runs"] = runs
    meta["warmup_gap_s"] = gap
    return timing


def run_protocol(
    cell: Cell,
    engine,
    meter: EnergyMeter,
    prompt: np.ndarray,
    warmup_prompt: np.ndarray,
    n_out: int,
    settings: MeasureSettings,
    record: CellRecord,
    resident=None,
) -> None:
    """Idle baseline, warm-up (whose last run is the timing pass) and the measured windows; fills `record`.

    resident (an engine_host.ResidentEngine) keeps what the next cell of the same load may reuse: the idle floor and
    when this cell's windows ended (cleared first, so a cell that fails leaves the next one a full warm-up)."""
    t = record.timeline
    previous_windows_end = getattr(resident, "last_windows_end", None)
    if resident is not None:
        resident.last_windows_end = None
    engine.synchronize()
    t["idle_start"] = time.perf_counter()
    idle = idle_baseline(meter, settings, resident, record.meta)
    t["idle_end"] = time.perf_counter()
    record.meta["idle_power_w"] = idle.power_w
    record.meta["idle_telemetry_faults"] = idle.faults
    # The warm-up runs on the warm-up prompt, so the measured prompt stays unseen by any cache.
    timing = None
    if settings.warmup:
        t["warmup_start"] = time.perf_counter()
        timing = warm_up(engine, warmup_prompt, n_out, settings, previous_windows_end, record.meta)
        t["warmup_end"] = time.perf_counter()
    # Timing pass (the warm-up's last run when there was one): same length, same cost as a measured run.
    timing = engine.run(warmup_prompt, n_out) if timing is None else timing
    reps = runs_per_window(timing.total_s, settings.min_window_s, settings.max_runs_per_window)
    record.meta["runs_per_window"] = reps
    record.meta["timing_pass_s"] = timing.total_s
    t["windows_start"] = time.perf_counter()
    w, stop = 0, None
    while stop is None:
        if settings.cooldown_s:
            time.sleep(settings.cooldown_s)
        meter.begin_window()
        runs = [engine.run(prompt, n_out) for _ in range(reps)]
        energy = meter.end_window(runs[0].start, runs[-1].end, idle)
        record.windows.append(_window_row(w, runs, energy))
        for i, r in enumerate(runs):
            record.runs.append(
                {
                    "window": w,
                    "run": i,
                    "start_s": r.start,
                    "first_token_s": r.first_token,
                    "end_s": r.end,
                    "tokens_in": r.tokens_in,
                    "tokens_out": r.tokens_out,
                }
            )
        if energy.trace is not None:
            for ts, pw, rs in zip(energy.trace.t, energy.trace.power_w, energy.trace.reasons):
                record.trace.append(
                    {"window": w, "t_s": ts, "power_w": pw, "clock_event_reasons": rs, "source": energy.trace.source}
                )
        expected = n_out * (len(prompt) if prompt.ndim == 2 else 1)  # a batch's runs count all its sequences
        bad = [r for r in runs if r.tokens_out != expected]
        if bad:
            raise RuntimeError(f"engine returned {bad[0].tokens_out} tokens, expected {expected}")
        w += 1
        stop = windows_stop_reason(record.windows, settings, host_bound(cell))
    t["windows_end"] = time.perf_counter()
    record.meta["windows_stop_reason"] = stop
    record.meta["windows_half_width_pct"] = relative_half_width_pct([r["energy_per_run_j"] for r in record.windows])
    record.meta["windows_dynamic_half_width_pct"] = relative_half_width_pct(
        [r["dynamic_energy_per_run_j"] for r in record.windows]
    )
    record.meta["windows_target_pct"], record.meta["windows_target_energy"] = window_target(settings, host_bound(cell))
    if resident is not None:
        resident.last_windows_end = t["windows_end"]


def _versions(engine) -> dict:
    versions = {"ctxenergy": ctxenergy.__version__, "python": platform.python_version()}
    try:
        versions.update(engine.versions())
    except Exception:  # noqa: BLE001 - versions are best effort; the engine may have failed to load
        pass
    return versions


def below_min_window(work_s, min_window_s: float | None) -> bool:
    """A window whose work is shorter than measure.min_window_s: run_protocol sets R so that R runs (the work span,
    not the edge-to-edge window_s, which adds idle stretches at the edges) last at least that long."""
    return bool(min_window_s) and min(work_s, default=min_window_s) < min_window_s


def telemetry_faults(record: CellRecord) -> list[str]:
    """Where the cell's telemetry cannot be right: its idle baseline's faults and each window's, named."""
    faults = [f"idle baseline {f}" for f in record.meta.get("idle_telemetry_faults", [])]
    for w in record.windows:
        faults += [f"window {w['window']} {f}" for f in w["telemetry_faults"].split("; ") if f]
    return faults


def _apply_validity(record: CellRecord, arch: dict, meter: EnergyMeter | None) -> None:
    wins = record.windows
    if not wins:
        return
    period = record.meta.get("counter_period_s")
    if period and min(w["work_s"] for w in wins) < MIN_PERIODS_PER_WINDOW * period:
        record.flags.append("short_window")
    if below_min_window([w["work_s"] for w in wins], record.meta["settings"].get("min_window_s")):
        record.flags.append("below_min_window")
    if any(w["thermal_throttle"] for w in wins):
        record.flags.append("thermal_throttle")
    if any(w["foreign_process"] for w in wins):
        record.flags.append("foreign_process")
    faults = telemetry_faults(record)
    if faults:
        record.flags.append(TELEMETRY_ERROR)
        shown = "; ".join(faults[:3]) + (f"; and {len(faults) - 3} more" if len(faults) > 3 else "")
        record.status, record.status_reason = TELEMETRY_ERROR, f"telemetry cannot be right: {shown}"
    elif all(w["energy_j"] is None for w in wins):
        record.flags.append("no_energy")
    cell = record.cell
    if cell.phase == "prefill":
        prefill_s = float(np.median([w["prefill_s"] for w in wins]))
        tflops = cell.batch_size * prefill_flops(arch, cell.length) / prefill_s / 1e12
        record.meta["achieved_tflops"] = tflops
        reason = plausibility(tflops, record.meta.get("device_name"), record.meta.get("measured_peak_tflops"))
        if reason:
            record.flags.append("implausible")
            if record.status == "ok":  # a telemetry error is named first; the flag keeps this one
                record.status, record.status_reason = "implausible", reason


def measure_cell(
    settings: Settings,
    cell: Cell,
    prompt_file,
    warmup_file,
    out_path,
    meter: EnergyMeter | None = None,
    gpu_uuids: list[str] | None = None,
    job_start: float | None = None,
    resident=None,
) -> CellRecord:
    """Measure one cell and write its tables atomically to out_path (+ .runs / .trace siblings).

    job_start (perf_counter, one clock for all processes of the host) lets the timeline show what the job spent
    before this call (imports, GPU claim): the pipeline's own cost against the measured windows.
    resident (an engine_host.ResidentEngine) is an engine loaded earlier and kept after this cell; without it the
    engine is loaded here and closed at the end.
    """
    spec = resolve_model(settings, cell.model)
    given = settings.given_config()  # the forms a cell records: its settings hash and its `measure:` block as given
    n_out = output_tokens(settings, cell.phase)
    record = CellRecord(cell)
    if job_start is not None:
        record.timeline["job_start"] = job_start
    record.timeline["measure_start"] = time.perf_counter()
    record.meta.update(
        {
            "study": settings.study,
            "model": cell.model,
            "engine": cell.engine,
            "phase": cell.phase,
            "length_tokens": cell.length,
            "output_tokens": n_out,
            "dtype": settings.dtype,
            "device": settings.device,
            "weights": spec.weights_label,
            "config_hash": cell_settings_hash(given, cell.model),
            "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
            "tp": spec.tp,
            "settings": given["measure"],
            "host_cpu": host_cpu(),
            # energy per run is the whole batch's: per input token / (B * L), per output token / (B * G)
            "batch_size": cell.batch_size,
            "engine_variant": cell.variant,
        }
    )
    prompt, warmup_prompt = load_cell_prompts(
        cell.length, prompt_file, warmup_file, spec.vocab_size, cell.model, cell.batch_size
    )
    warmup_prompt = warmup_prompt_for(settings, cell, prompt, warmup_prompt)
    record.meta["warmup_prompt"] = "measured" if warmup_prompt is prompt else "different"
    record.meta["tokenizer"] = tokenizer_label(spec)
    record.meta["attention_kernels"] = {}  # no attention ran (yet): a cell recorded without measuring keeps it so
    engine = None
    batch_limit = limit_before_load(
        cell, spec, ENGINES[cell.engine].options(settings, cell.variant), n_out, settings.dtype
    )
    if spec.exceeds_context(cell.length, n_out, cell.engine):  # recorded, not measured
        record.status = "exceeds_context"
        record.status_reason = (
            f"L + G = {cell.length + n_out} exceeds max_position_embeddings={spec.max_positions}; "
            "the cell is recorded but not measured"
        )
    elif batch_limit is not None:  # a batch beyond the engine's settings: recorded, not measured
        record.status, record.status_reason = batch_limit
    else:
        own_meter = meter is None
        record.timeline["meter_open_start"] = time.perf_counter()
        meter = meter or open_meter(
            settings.device, uuids=gpu_uuids, sample_interval_s=settings.measure.sample_interval_s
        )
        record.timeline["meter_open_end"] = time.perf_counter()
        memory = PeakMemory(meter)  # peak stats reset here: a resident engine's earlier cells do not count
        try:
            dev = meter.devices[0]
            record.meta.update(
                {
                    "meter_method": meter.method,
                    "counter_period_s": meter.counter_period_s,
                    "device_name": dev.name,
                    "device_uuid": ",".join(d.uuid or "" for d in meter.devices),
                    "driver_version": dev.driver_version,
                    "power_limit_w": dev.power_limit_w,
                    "n_devices": len(meter.devices),
                }
            )
            t = record.timeline
            if resident is None:
                engine = make_engine(cell.engine, spec, settings, cell.variant)
                t["load_start"] = time.perf_counter()
                engine.load()
                t["load_end"] = time.perf_counter()
                record.meta["load_breakdown_s"] = getattr(engine, "load_timings", {})
            else:
                record.meta["engine_host"] = resident.provenance()
                record.meta["load_breakdown_s"] = resident.load_breakdown_s
                resident.cells_served += 1
                if resident.load_error is not None:
                    raise resident.load_error
                engine = resident.engine  # reset after its last use (the warm-up request or the previous cell)
                t["load_start"] = t["load_end"] = time.perf_counter()  # loaded before this cell, by the host
            record.meta["engine_settings"] = engine.settings()
            beyond = batch_limit_of(cell, engine, n_out, settings.dtype, spec, dev)
            if beyond is not None:
                record.status, record.status_reason = beyond
            else:
                run_protocol(cell, engine, meter, prompt, warmup_prompt, n_out, settings.measure, record, resident)
            record.meta["engine_settings"].update(engine.run_notes())
        except OutOfMemory as exc:
            record.status, record.status_reason = "oom", f"out of device memory: {exc}"
            record.windows.clear()
        finally:
            record.meta.update(memory.stop())
            if engine is not None:
                record.meta["versions"] = _versions(engine)
                # what ran before an out-of-memory error too; read before reset() clears it
                record.meta["attention_kernels"] = engine.attention_kernels()
                if resident is None:
                    engine.close()
                else:
                    engine.reset()  # what this cell left in device memory is not the next cell's business
            if own_meter:
                meter.close()
        _apply_validity(record, spec.arch, meter)
    record.meta.setdefault("versions", {"ctxenergy": ctxenergy.__version__, "python": platform.python_version()})
    flops = prefill_flops(spec.arch, cell.length) if n_out == 1 else generate_flops(spec.arch, cell.length, n_out)
    record.meta["flops_per_run"] = flops * cell.batch_size
    peaks = device_peaks(record.meta.get("device_name"))
    record.meta["peak_bf16_tflops"] = peaks["bf16_tflops"] if peaks else None
    record.meta["peak_mem_tb_s"] = peaks["mem_tb_s"] if peaks else None
    record.timeline["write_start"] = time.perf_counter()
    write_cell(record, out_path)
    return record


def summary(record: CellRecord, out_path) -> dict:
    """The one-line result a measurement job prints."""
    result = {"cell": record.cell.cell_id, "status": record.status, "flags": record.flags, "out": str(out_path)}
    if record.status != "ok":
        result["status_reason"] = record.status_reason
    if record.windows:
        result.update(
            runs_per_window=record.meta.get("runs_per_window"),
            energy_per_run_j=[w["energy_per_run_j"] for w in record.windows],
            run_s=[w["run_s"] for w in record.windows],
        )
    if "engine_host" in record.meta:
        result["engine_host"] = record.meta["engine_host"]
    return result


CELL_COLUMNS = [
    "model",
    "engine",
    "phase",
    "length_tokens",
    "output_tokens",
    "dtype",
    "device",
    "device_name",
    "device_uuid",
    "driver_version",
    "power_limit_w",
    "meter_method",
    "counter_period_s",
    "idle_power_w",
    "runs_per_window",
    "weights",
    "tokenizer",
    "config_hash",
    "measured_at",
    "cuda_visible_devices",
    "tp",
    "flops_per_run",
    "peak_bf16_tflops",
    "peak_mem_tb_s",
    "achieved_tflops",
    "host_cpu",
    "windows_stop_reason",
    "idle_source",
    "batch_size",
    "engine_variant",
    *MEMORY_COLUMNS,
]


def write_cell(record: CellRecord, out_path) -> None:
    meta = dict(
        record.meta,
        status=record.status,
        status_reason=record.status_reason,
        flags=record.flags,
        timeline=record.timeline,
        schema_version=ctxenergy.SCHEMA_VERSION,
    )
    base = {
        "schema_version": ctxenergy.SCHEMA_VERSION,
        "cell_id": record.cell.cell_id,
        "status": record.status,
        "status_reason": record.status_reason,
        "flags": ",".join(record.flags),
    }
    base.update({c: meta.get(c) for c in CELL_COLUMNS})
    base["torch_version"] = meta.get("versions", {}).get("torch")
    base["engine_version"] = _engine_version(record.cell.engine, meta.get("versions", {}))
    base.update(run_latency([r["end_s"] - r["start_s"] for r in record.runs]))  # LATENCY_PERCENTILES
    windows = [dict(base, **w) for w in record.windows] or [dict(base, window=-1, runs=0)]
    windows_df = pd.DataFrame(windows)
    runs_df = pd.DataFrame(
        record.runs, columns=["window", "run", "start_s", "first_token_s", "end_s", "tokens_in", "tokens_out"]
    )
    trace_df = pd.DataFrame(record.trace, columns=["window", "t_s", "power_w", "clock_event_reasons", "source"])
    write_tables(
        {
            out_path: (windows_df, meta),
            sibling(out_path, "runs"): (runs_df, None),
            sibling(out_path, "trace"): (trace_df, None),
        }
    )


def _engine_version(engine: str, versions: dict) -> str | None:
    return versions.get(ENGINES[engine].package)
