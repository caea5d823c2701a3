"""Which missing cells fit a time budget: for GPU time that ends at a fixed hour (a SLURM `--time`, a reservation).

A cell whose job is cut off by the time limit is lost with all its GPU time (nothing half-written is kept). So under
a budget `missing_cells` measures only the missing cells whose estimated job times fit, longest first, plus one engine
load per (model, engine) it touches. Estimates come from the benchmark files (Snakemake `benchmark:`) of jobs measured
before, e.g. the reference campaign's `jobs/` folders:

- the same cell's own job time, where it was measured before (a remeasurement);
- else interpolated in log-log over the measured lengths of the same (model, engine, phase);
- else hf-sdpa's job time of that cell times the engine's ratio to hf-sdpa at the nearest L where both were
  measured (the same model's first; a short cell is mostly the protocol's fixed parts, a long one mostly compute);
- else no estimate: the cell is not chosen under a budget (the summary says how many).
A cell whose prompt and output exceed the model's positions is recorded as `exceeds_context` in seconds
(`ModelSpec.exceeds_context`).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ctxenergy.grid import Cell, output_tokens
from ctxenergy.models import resolve_model
from ctxenergy.provenance import job_seconds

# A job that measured nothing (oom, exceeds_context) ends within seconds; one with windows takes longer than the
# protocol's fixed parts (idle baseline, warm-up, 5 windows of >= 2 s): such times say nothing about a neighbour L.
MEASURED_JOB_MIN_S = 10.0
EXCEEDS_CONTEXT_S = 5.0
# Each estimate is taken 20 % longer: three H200 calls (2026-11-29, fifth session) took 0.97x, 1.02x and 1.14x
# their estimated cells and engine loads (job times vary between boards, hosts and graph captures).
SAFETY = 1.2
RESERVE_S = 20.0  # Snakemake's start (DAG, config checks) and the prompt jobs, before the first GPU job


def job_times(jobs_dirs: list[str | Path]) -> dict[tuple[str, str, str, int], float]:
    """(model, engine, phase, L) -> seconds, from `<dir>/measure_cell/<model>/<engine>/<phase>/L<n>.tsv`; where
    several folders hold one cell, the first folder's time counts."""
    return _cell_times([job_seconds(d) for d in jobs_dirs])


def _cell_times(jobs_per_dir: list[pd.DataFrame]) -> dict[tuple[str, str, str, int], float]:
    times: dict[tuple[str, str, str, int], float] = {}
    for jobs in jobs_per_dir:
        for job, s in jobs.loc[jobs["rule"] == "measure_cell", ["job", "s"]].itertuples(index=False):
            model, engine, phase, name = Path(job).parts[1:]
            times.setdefault((model, engine, phase, int(name[1:])), s)
    return times


def _load_times(jobs_per_dir: list[pd.DataFrame]) -> dict[tuple[str, str], float]:
    """(model, engine) -> the longest recorded warm-up job (where the engine loads; one row per warm-up job)."""
    loads: dict[tuple[str, str], float] = {}
    for jobs in jobs_per_dir:
        for job, s in jobs.loc[jobs["rule"] == "warmup_engine", ["job", "s"]].itertuples(index=False):
            key = tuple(Path(job).parts[1:])
            loads[key] = max(loads.get(key, 0.0), s)
    return loads


def estimate_s(times: dict, cell: Cell) -> float | None:
    """Estimated job time of `cell` from measured job times, or None where nothing to estimate from exists."""
    key = (cell.model, cell.engine, cell.phase, cell.length)
    if key in times:
        return times[key]
    known = sorted((L, s) for (m, e, p, L), s in times.items()
                   if (m, e, p) == key[:3] and s >= MEASURED_JOB_MIN_S)
    below = [k for k in known if k[0] < cell.length]
    above = [k for k in known if k[0] > cell.length]
    if below and above:
        (l0, s0), (l1, s1) = below[-1], above[0]
        f = (math.log(cell.length) - math.log(l0)) / (math.log(l1) - math.log(l0))
        return math.exp(math.log(s0) + f * (math.log(s1) - math.log(s0)))
    # hf-sdpa's time here, times this engine's ratio to hf-sdpa at the nearest L measured by both (this model first)
    sdpa_here = times.get((cell.model, "hf-sdpa", cell.phase, cell.length))
    ratios = [(abs(math.log(L / cell.length)), m != cell.model, s / times[(m, "hf-sdpa", p, L)])
              for (m, e, p, L), s in times.items()
              if (e, p) == (cell.engine, cell.phase) and s >= MEASURED_JOB_MIN_S and (m, "hf-sdpa", p, L) in times]
    if sdpa_here and ratios:
        return sdpa_here * min(ratios)[2]
    return None


def within_budget(cells: list[Cell], budget_s: float, jobs_dirs: list[str | Path],
                  config: dict) -> tuple[list[Cell], str]:
    """The cells of `config` to measure within `budget_s` (longest first), and a one-line summary of the choice."""
    jobs_per_dir = [job_seconds(d) for d in jobs_dirs]  # every benchmark file read once
    times, loads = _cell_times(jobs_per_dir), _load_times(jobs_per_dir)
    specs = {m["name"]: resolve_model(config, m["name"]) for m in config["models"]}
    engine_loads = {}
    for (_, engine), s in loads.items():
        engine_loads[engine] = max(engine_loads.get(engine, 0.0), s)
    estimated, unknown = [], []
    for cell in cells:
        too_long = specs[cell.model].exceeds_context(cell.length, output_tokens(config, cell.phase), cell.engine)
        s = EXCEEDS_CONTEXT_S if too_long else estimate_s(times, cell)
        (unknown.append(cell) if s is None else estimated.append((s, cell)))
    left = budget_s - RESERVE_S
    chosen, loaded = [], set()
    for s, cell in sorted(estimated, key=lambda x: (-x[0], x[1].cell_id)):
        pair = (cell.model, cell.engine)
        load = 0.0 if pair in loaded else loads.get(pair, engine_loads.get(cell.engine, 0.0))
        cost = (s + load) * SAFETY
        if cost <= left:
            chosen.append(cell)
            loaded.add(pair)
            left -= cost
    used = budget_s - RESERVE_S - left
    summary = (f"budget {budget_s:.0f} s: {len(chosen)} of {len(cells)} missing cells, ~{used:.0f} s estimated "
               f"with engine loads and a {SAFETY - 1:.0%} margin")
    if unknown:
        summary += (f"; {len(unknown)} without a job time to estimate from, not chosen (e.g. {unknown[0].cell_id}; "
                    "measure them without budget_s)")
    return chosen, summary
