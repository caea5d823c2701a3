"""Which missing cells fit a time budget: for GPU time that ends at a fixed hour (a SLURM `--time`, a reservation).

A cell whose job is cut off by the time limit is lost with all its GPU time (nothing half-written is kept). So under
a budget `missing_cells` measures only the missing cells whose estimated job times fit, plus one engine load per
(model, engine) it touches: pair by pair (the pair with the longest cell first), each pair's cells longest first.
Estimates come from the benchmark files (Snakemake `benchmark:`) of jobs measured before, e.g. the reference
campaign's `jobs/` folders:

- the same cell's own job time, where it was measured before (a remeasurement);
- else interpolated in log-log over the measured lengths of the same (model, engine, phase);
- else the reference engine's (engines/registry.py) job time of that cell times the engine's ratio to it at the
  nearest L where both were measured (the same model's first; a short cell is mostly the protocol's fixed parts, a
  long one mostly compute);
- else no estimate: the cell is not chosen under a budget (the summary says how many).
A cell job that loaded the engine itself (the first job after an earlier run's warm-up, or `engine_reuse: false`)
counts without that load (the pair's shortest warm-up job is taken off), since the budget charges the loads: once per
(model, engine), or once per cell under `engine_reuse: false`.
A cell whose prompt and output exceed the model's positions is recorded as `exceeds_context` in seconds
(`ModelSpec.exceeds_context`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ctxenergy.batching import batch_limit_of, limit_before_load
from ctxenergy.engines.registry import ENGINES, REFERENCE_ENGINE
from ctxenergy.grid import DEFAULT_VARIANT, Cell, output_tokens
from ctxenergy.job_benchmarks import job_seconds
from ctxenergy.models import resolve_model
from ctxenergy.settings import MeasureSettings, Settings

# A job that measured nothing (oom, exceeds_context) ends within seconds; one with windows takes longer than the
# protocol's fixed parts (idle baseline, warm-up, 5 windows of >= 2 s): such times say nothing about a neighbour L.
MEASURED_JOB_MIN_S = 10.0
EXCEEDS_CONTEXT_S = 5.0
# Each estimate is taken 20 % longer: three H200 calls (2026-11-29, fifth session) took 0.97x, 1.02x and 1.14x
# their estimated cells and engine loads (job times vary between boards, hosts and graph captures).
SAFETY = 1.2
# A cell job served by an engine host holds well under 100 MB (69 MB in the H200 campaign's benchmark files); one that
# loaded the engine in its own processes held 0.7-1.8 GB: its time includes the engine's start.
ENGINE_LOADED_RSS_MB = 400.0
# The most device memory a GPU of this study may have (H200: 141 GB), where the GPUs cannot be asked (a SLURM login
# node, a CPU host): a batch whose weights and KV cache alone exceed it is recorded as out of memory within seconds on
# any of them (ctxenergy.batching.batch_limit_of).
LARGEST_DEVICE_MEMORY_BYTES = 141e9
RESERVE_S = 20.0  # Snakemake's start (DAG, config checks) and the prompt jobs, before the first GPU job


def job_times(jobs_dirs: list[str | Path]) -> dict[tuple[str, str, str, int], float]:
    """(model, engine, phase, L) -> seconds, from `<dir>/measure_cell/<model>/<engine>/<phase>/L<n>.tsv`; where
    several folders hold one cell, the first folder's time counts."""
    return _cell_times([job_seconds(d) for d in jobs_dirs])


def _cell_times(jobs_per_dir: list[pd.DataFrame]) -> dict[tuple[str, str, str, int], float]:
    # A load is taken off at its shortest (a warm-up job is the load plus a warm-up run): the estimate errs long.
    loads = _load_times(jobs_per_dir, pick=min)
    engine_loads = _engine_loads(loads, pick=min)
    times: dict[tuple[str, str, str, int], float] = {}
    for jobs in jobs_per_dir:
        cell_jobs = jobs.loc[jobs["rule"] == "measure_cell", ["job", "s", "max_rss_mb"]]
        for job, s, rss_mb in cell_jobs.itertuples(index=False):
            cell = Cell.from_id("/".join(Path(job).parts[1:]))
            if cell.batch_size != 1 or cell.variant != DEFAULT_VARIANT:
                continue  # the estimates below are of single prompts (a batch is estimated as one, estimate_s)
            model, engine = cell.model, cell.engine
            if rss_mb > ENGINE_LOADED_RSS_MB:  # NaN (no memory column) compares False: taken as it is
                s = max(s - loads.get((model, engine), engine_loads.get(engine, 0.0)), 1.0)
            times.setdefault((model, engine, cell.phase, cell.length), s)
    return times


def _load_times(jobs_per_dir: list[pd.DataFrame], pick=max) -> dict[tuple[str, str], float]:
    """(model, engine) -> the longest (`pick=max`) recorded warm-up job, where the engine loads; one row per job."""
    loads: dict[tuple[str, str], float] = {}
    for jobs in jobs_per_dir:
        for job, s in jobs.loc[jobs["rule"] == "warmup_engine", ["job", "s"]].itertuples(index=False):
            key = tuple(Path(job).parts[1:3])  # a variant's load (<model>/<engine>/V-<variant>) as the engine's
            loads[key] = pick(loads[key], s) if key in loads else s
    return loads


def _engine_loads(loads: dict[tuple[str, str], float], pick=max) -> dict[str, float]:
    """engine -> its longest (`pick=max`) load over models, for a model whose load on it was never recorded."""
    by_engine: dict[str, float] = {}
    for (_, engine), s in loads.items():
        by_engine[engine] = pick(by_engine[engine], s) if engine in by_engine else s
    return by_engine


def measured_job_min_s(measure: MeasureSettings) -> float:
    """The shortest job with windows under a `measure:` block: its fewest windows of `min_window_s` (the campaign's
    5 x 2 s = MEASURED_JOB_MIN_S). A target-sized protocol's short cells take ~5 s in all, under the 10 s that would
    count them as jobs that measured nothing; the jobs that did (oom, exceeds_context) took up to 4.1 s."""
    fewest = measure.repeats if measure.target_half_width_pct is None else measure.min_windows
    return min(MEASURED_JOB_MIN_S, fewest * measure.min_window_s)


def estimate_s(times: dict, cell: Cell, min_s: float = MEASURED_JOB_MIN_S, batched: bool = False) -> float | None:
    """Estimated job time of `cell` from measured job times, or None where nothing to estimate from exists; a job
    shorter than `min_s` (measured_job_min_s) measured nothing and is no neighbour.

    A batch of B prompts of L tokens is estimated as one prompt of B * L tokens (the same linear work and KV cache,
    more attention: it errs long), beyond the longest measured prompt by the last two lengths' log-log slope (at
    least linear), and an engine variant as the engine (its cells' own times are not yet kept)."""
    if cell.batch_size != 1 or cell.variant != DEFAULT_VARIANT:
        return estimate_s(times, Cell(cell.model, cell.engine, cell.phase, cell.batch_size * cell.length), min_s, True)
    key = (cell.model, cell.engine, cell.phase, cell.length)
    if key in times:
        return times[key]
    known = sorted((L, s) for (m, e, p, L), s in times.items() if (m, e, p) == key[:3] and s >= min_s)
    below = [k for k in known if k[0] < cell.length]
    above = [k for k in known if k[0] > cell.length]
    if below and above:
        (l0, s0), (l1, s1) = below[-1], above[0]
        f = (math.log(cell.length) - math.log(l0)) / (math.log(l1) - math.log(l0))
        return math.exp(math.log(s0) + f * (math.log(s1) - math.log(s0)))
    if batched and len(below) >= 2 and not above:  # a batch's B * L beyond the longest single prompt measured
        (l0, s0), (l1, s1) = below[-2:]
        slope = max((math.log(s1) - math.log(s0)) / (math.log(l1) - math.log(l0)), 1.0)
        return s1 * (cell.length / l1) ** slope
    # The reference engine's time here, times this engine's ratio to it at the nearest L measured by both (this
    # model first)
    ref = REFERENCE_ENGINE
    ref_here = times.get((cell.model, ref, cell.phase, cell.length))
    ratios = [
        (abs(math.log(L / cell.length)), m != cell.model, s / times[(m, ref, p, L)])
        for (m, e, p, L), s in times.items()
        if (e, p) == (cell.engine, cell.phase) and s >= min_s and (m, ref, p, L) in times
    ]
    if ref_here and ratios:
        return ref_here * min(ratios)[2]
    return None


def device_memory_bytes(settings: Settings) -> float:
    """The memory of the smallest GPU NVML sees here, where a cuda study runs on this host: a batch that does not fit
    it is recorded as out of memory within seconds (as a run without a budget would). Elsewhere (no NVML, no GPU, a
    CPU study) LARGEST_DEVICE_MEMORY_BYTES: the budget then leaves such a batch to a GPU that may hold it."""
    if settings.device != "cuda":
        return LARGEST_DEVICE_MEMORY_BYTES
    from ctxenergy.telemetry.nvml_api import open_backend

    try:
        nv = open_backend()
        sizes = [nv.memory_total_bytes(nv.handle(i)) for i in range(nv.device_count())]
    except Exception:  # noqa: BLE001 (any NVML failure: no device to ask, the study-wide bound applies)
        return LARGEST_DEVICE_MEMORY_BYTES
    return float(min(sizes)) if sizes else LARGEST_DEVICE_MEMORY_BYTES


def beyond_any_device(
    cell: Cell, spec, n_out: int, dtype: str, memory_bytes: float = LARGEST_DEVICE_MEMORY_BYTES
) -> bool:
    """A batch that no GPU of this study holds (weights and KV cache above `memory_bytes`, device_memory_bytes)."""

    class Largest:
        memory_total_bytes = memory_bytes

    class Unloaded:
        def batch_limit(self, *args):
            return None

    return batch_limit_of(cell, Unloaded(), n_out, dtype, spec, Largest()) is not None


def _estimates(
    cells: list[Cell], times: dict, settings: Settings, memory_bytes: float | None = None
) -> tuple[list[tuple[float, Cell]], list[Cell]]:
    """(estimated job seconds, cell) of the cells with an estimate, and the cells without one; `memory_bytes`: the
    smallest GPU's memory where known beforehand (else asked of NVML where a batch needs it)."""
    specs = {m.name: resolve_model(settings, m.name) for m in settings.models}
    memory = memory_bytes
    if memory is None:
        memory = device_memory_bytes(settings) if any(c.batch_size > 1 for c in cells) else LARGEST_DEVICE_MEMORY_BYTES
    min_s = measured_job_min_s(settings.measure)
    estimated, unknown = [], []
    for cell in cells:
        n_out = output_tokens(settings, cell.phase)
        too_long = specs[cell.model].exceeds_context(cell.length, n_out, cell.engine) or limit_before_load(
            cell, specs[cell.model], ENGINES[cell.engine].options(settings, cell.variant), n_out, settings.dtype
        )
        too_long = too_long or beyond_any_device(cell, specs[cell.model], n_out, settings.dtype, memory)
        s = EXCEEDS_CONTEXT_S if too_long else estimate_s(times, cell, min_s)
        (unknown.append(cell) if s is None else estimated.append((s, cell)))
    return estimated, unknown


def expected_s(
    cells: list[Cell], loads: list[tuple[str, str]], jobs_dirs: list[str | Path], settings: Settings
) -> tuple[float, list[Cell]]:
    """The expected job seconds of `cells` and of the engine loads (warm-up jobs) of the (model, engine) pairs
    `loads`, from the same estimates as the budget but without its margin (an expectation for a progress line, not a
    bound that must hold), and the cells without an estimate."""
    jobs_per_dir = [job_seconds(d) for d in jobs_dirs]
    load_times = _load_times(jobs_per_dir)
    engine_loads = _engine_loads(load_times)
    estimated, unknown = _estimates(cells, _cell_times(jobs_per_dir), settings)
    seconds = sum(s for s, _ in estimated) + sum(load_times.get(p, engine_loads.get(p[1], 0.0)) for p in loads)
    return seconds, unknown


def _pair_by_pair(estimated: list[tuple[float, Cell]]) -> list[tuple[float, Cell]]:
    """Cells grouped by (model, engine), each group longest first, the groups in the order of their longest cell: a
    pair's cells fill the budget before another pair's engine load is paid. (Longest first across pairs chose, in
    the H200 campaign's first vLLM call, three cells under two engine starts where one start and 13 cells, two of
    them past the model's positions, fitted.)"""
    by_pair: dict[tuple[str, str, str], list[tuple[float, Cell]]] = {}
    for s, cell in sorted(estimated, key=lambda x: (-x[0], x[1].cell_id)):
        by_pair.setdefault((cell.model, cell.engine, cell.variant), []).append((s, cell))
    return [item for group in by_pair.values() for item in group]  # dicts keep insertion order: longest pair first


def within_budget(
    cells: list[Cell], budget_s: float, jobs_dirs: list[str | Path], settings: Settings
) -> tuple[list[Cell], str]:
    """The cells of `settings` to measure within `budget_s` (pair by pair, longest first), and a one-line summary of
    the choice."""
    jobs_per_dir = [job_seconds(d) for d in jobs_dirs]  # every benchmark file read once
    loads = _load_times(jobs_per_dir)
    times, engine_loads = _cell_times(jobs_per_dir), _engine_loads(loads)
    estimated, unknown = _estimates(cells, times, settings)
    left = budget_s - RESERVE_S
    chosen, loaded = [], set()
    reuse = settings.measure.engine_reuse  # false: every cell job loads the engine itself
    for s, cell in _pair_by_pair(estimated):
        pair = (cell.model, cell.engine, cell.variant)  # a variant is a load of its own
        load = 0.0 if reuse and pair in loaded else loads.get(pair[:2], engine_loads.get(cell.engine, 0.0))
        cost = (s + load) * SAFETY
        if cost <= left:
            chosen.append(cell)
            loaded.add(pair)
            left -= cost
    used = budget_s - RESERVE_S - left
    summary = (
        f"budget {budget_s:.0f} s: {len(chosen)} of {len(cells)} missing cells, ~{used:.0f} s estimated "
        f"with engine loads and a {SAFETY - 1:.0%} margin"
    )
    if unknown:
        summary += (
            f"; {len(unknown)} without a job time to estimate from, not chosen (e.g. {unknown[0].cell_id}; "
            "measure them without budget_s)"
        )
    return chosen, summary
