"""What a run tells the person watching it: one line per finished cell, and where the outputs are at the end.

The cell's line: its id, the energy per run with its 95 % interval (or its status and a one-line reason), the cell's
time, and an estimate of the time the run still needs. Which cells the run still has to measure is known only to
the main Snakemake process, once it has built its DAG: at `onstart` it writes the plan (the cells and engine
warm-ups it will run, with its own identity and the time) to PLAN. A cell job counts as done the planned cells
whose file was written since then; the rest, and the warm-ups not yet run, are estimated from the benchmark files
of earlier jobs as `budget_s` estimates them (ctxenergy.budget): this run's own results/benchmarks first, then the
config's `job_times` folders. So the estimate stays right when some cells already exist, under a rerun of existing
cells (--forcerun: an old file is not done), for a target of a few cells, and with several jobs at once. The count
is the cell's place among this run's printed lines, taken under a lock in a list beside the plan: file times cannot
give it, as a file keeps the time its temporary was written, not when it was moved into place. A job of another
run, or one started without Snakemake, finds no plan of its own and prints the cell alone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ctxenergy.grid import DEFAULT_VARIANT, Cell, warmup_path
from ctxenergy.paths import BENCHMARKS_DIR, PAPER, REPORT

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

PLAN = Path(".snakemake/ctxenergy-plan.json")
# A progress line is no "ctxenergy: " line: those are the one line of an error or of the run's end.
PREFIX = "ctxenergy cell"
THIS_RUN_JOBS = BENCHMARKS_DIR
REPORT_PAGES = {"report": REPORT, "write-up": PAPER}


def write_plan(jobs, path: str | Path = PLAN) -> Path:
    """The plan of this run, from (rule name, wildcards) of every job Snakemake will run (at `onstart`)."""
    from ctxenergy.files import write_text
    from ctxenergy.workflow_process import current_workflow

    cells, warmups = [], []
    for rule, wildcards in jobs:
        if rule == "measure_cell":
            cells.append(Cell.from_id("/".join(wildcards[k] for k in ("model", "engine", "phase", "cell"))).cell_id)
        elif rule in ("warmup_engine", "warmup_engine_variant"):  # a variant is an engine load of its own
            model, engine = wildcards["model"], wildcards["engine"]
            variant = wildcards.get("variant", DEFAULT_VARIANT)
            warmups.append([model, engine, str(warmup_path(model, engine, variant))])
    plan = {"workflow": current_workflow(), "started": time.time(), "cells": sorted(cells), "warmups": warmups}
    _printed_list(path).unlink(missing_ok=True)  # the lines of an earlier run; its entries would not count anyway
    return write_text(json.dumps(plan, indent=1), path)


def _printed_list(plan_path: str | Path) -> Path:
    """Beside the plan: one line '<plan's start> <cell id>' per cell line printed, in the order printed."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.stem + "-printed.txt")


def read_plan(path: str | Path = PLAN) -> dict | None:
    """This run's plan; None outside a workflow, or when the plan on disk is another run's."""
    from ctxenergy.workflow_process import current_workflow

    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    workflow = current_workflow()
    return plan if workflow and plan.get("workflow") == workflow else None


def _written_since(path: Path, started: float) -> bool:
    try:
        return path.stat().st_mtime >= started
    except OSError:
        return False


def _place_in_run(cell: Cell, plan: dict, plan_path: str | Path) -> int:
    """This cell's place among the cell lines this run has printed (its own place if it printed before), taken
    under an exclusive lock so that two jobs ending at once never share a count."""
    from ctxenergy.files import try_lock

    stamp = repr(plan["started"])
    path = _printed_list(plan_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        try_lock(f.fileno(), block=True)  # released when the file closes
        f.seek(0)
        printed = [line.split(" ", 1)[1] for line in f.read().splitlines() if line.startswith(stamp + " ")]
        if cell.cell_id not in printed:
            f.write(f"{stamp} {cell.cell_id}\n")
            printed.append(cell.cell_id)
    return printed.index(cell.cell_id) + 1


def duration(seconds: float) -> str:
    """45 s, 12 min, 2 h 05 min."""
    seconds = max(float(seconds), 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"


def cell_result(summary: dict) -> str:
    """Energy per run with its interval (median and 95 % interval of the mean over windows, as the table of cells
    gives them), or the status and its reason in one line."""
    from ctxenergy.outputs.render import condensed_reason, fmt_ci
    from ctxenergy.stats import summarize

    status = summary.get("status", "ok")
    if status != "ok":
        return f"{status}: {condensed_reason(summary.get('status_reason') or 'no reason recorded')}"
    s = summarize(summary.get("energy_per_run_j") or [])
    flags = ", ".join(f for f in summary.get("flags", []) if f != "no_energy")
    if s["n"] == 0:
        return f"ok, energy not recorded (no energy counter on this host{'; flags ' + flags if flags else ''})"
    return f"{fmt_ci(s['median'], s['ci_low'], s['ci_high'])} J/run" + (f" (flags {flags})" if flags else "")


def remaining(
    plan: dict, cell: Cell, elapsed_s: float, settings: Settings, plan_path: str | Path = PLAN
) -> tuple[str | None, str]:
    """The run's count of cells ('3/8'; None for a cell it did not plan) and the expected time of what it has
    still to do ('~2 min left for 5 cells')."""
    from ctxenergy.budget import expected_s

    started = plan["started"]
    planned = [Cell.from_id(c) for c in plan["cells"]]
    left = [c for c in planned if c != cell and not _written_since(c.path, started)]
    loads = [(m, e) for m, e, path in plan["warmups"] if not _written_since(Path(path), started)]
    count = f"{_place_in_run(cell, plan, plan_path)}/{len(planned)}" if cell in planned else None
    if not left:
        return count, "the run's last cell"
    seconds, unknown = expected_s(left, loads, [THIS_RUN_JOBS, *settings.job_times], settings)
    seconds += len(unknown) * elapsed_s
    paced = f", {len(unknown)} of them at this cell's pace (no job time to estimate from)" if unknown else ""
    return count, f"~{duration(seconds)} left for {len(left)} cell{'s' * (len(left) != 1)}{paced}"


def cell_line(cell: Cell, summary: dict, elapsed_s: float, settings: Settings, plan_path: str | Path = PLAN) -> str:
    """The one line a finished cell job prints to the console."""
    line = f"{cell.cell_id}: {cell_result(summary)}, {duration(elapsed_s)}"
    plan = read_plan(plan_path)
    if plan is None:
        return f"{PREFIX} {line}"
    count, rest = remaining(plan, cell, elapsed_s, settings, plan_path)
    return f"{PREFIX} {count + ' ' if count else ''}{line}; {rest}"


def finished_line(plan_path: str | Path = PLAN) -> str:
    """The last line of a successful run: where the report and the write-up are (absolute, to open or click), and
    whether this run remade them."""
    plan = read_plan(plan_path)
    pages = []
    for name, path in REPORT_PAGES.items():
        if path.is_file():
            stale = plan is not None and not _written_since(path, plan["started"])
            pages.append(f"{name} {path.resolve()}" + (" (not remade by this run)" if stale else ""))
    if not pages:
        return "ctxenergy: run finished; the report is made by the default target (snakemake without a target)"
    return "ctxenergy: run finished; " + "; ".join(pages)
