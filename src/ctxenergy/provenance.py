"""Where a set of cells came from, as a short Markdown page generated from the cells themselves.

    ctxenergy provenance --cells results/cells.parquet [--jobs results/benchmarks] [--logs LOG ...] --out PROVENANCE.md

It lists the measurement dates, each GPU board (name, UUID, driver, power limit) with its cells, the software
versions per engine, the host CPUs, the weights, the energy method, the commands that ran (the `Command:` line
of each Snakemake log given, with the run's elapsed time) and the GPU time: the wall time of every job from
Snakemake's `benchmark:` files (cell jobs and warm-up jobs, one row per run) against the measured windows.
Written from the data, so it cannot drift from what is committed beside it.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pandas as pd

from ctxenergy.errors import CtxEnergyError
from ctxenergy.files import write_text
from ctxenergy.job_benchmarks import job_seconds
from ctxenergy.outputs.render import md_table
from ctxenergy.paths import BENCHMARKS_DIR, CELLS_TABLE
from ctxenergy.tables import read_cells_table

COMMAND = re.compile(r"^\s*Command:\s*(.+?)\s*$")
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")  # Snakemake's job time stamps
ELAPSED = re.compile(r"^Elapsed time:\s*(?:(\d+) days?, )?(\d+):(\d+):(\d+(?:\.\d+)?)\s*$")


def snakemake_runs(logs: list[str | Path]) -> list[dict]:
    """The command line, first time stamp and elapsed seconds of each Snakemake log, in the order they ran
    (elapsed is None for a run that did not end)."""
    runs = []
    for path in logs:
        command, started, elapsed = None, None, None
        for line in Path(path).read_text(errors="replace").splitlines():
            if command is None and (m := COMMAND.match(line)):
                command = m.group(1)
            elif started is None and (m := STAMP.match(line)):
                started = dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            elif m := ELAPSED.match(line):
                days, h, mi, s = m.groups()
                elapsed = int(days or 0) * 86400 + int(h) * 3600 + int(mi) * 60 + float(s)
        if command is not None:
            runs.append({"log": Path(path).name, "command": command, "started": started, "elapsed_s": elapsed})
    return sorted(runs, key=lambda r: (r["started"] or dt.datetime.max, r["log"]))


def _measured_window_s(cells: pd.DataFrame) -> float:
    ok = cells[cells["status"] == "ok"]
    if "measured_work_s" in ok and ok["measured_work_s"].notna().all():  # as benchmarks/pipeline_overhead.py sums
        return float(ok["measured_work_s"].sum())
    return float((ok["window_s"] * ok["n_windows"]).sum())  # tables aggregated before measured_work_s existed


def _seconds(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


# Columns that tables of cells from older versions may lack (host_cpu is recorded since the third H200 session).
DESCRIBED = [
    "measured_at",
    "device_name",
    "device_uuid",
    "driver_version",
    "power_limit_w",
    "engine_version",
    "torch_version",
    "host_cpu",
    "weights",
    "meter_method",
    "window_s",
    "n_windows",
]


def provenance(cells: pd.DataFrame, jobs: pd.DataFrame, runs: list[dict]) -> str:
    cells = cells.assign(**{c: None for c in DESCRIBED if c not in cells})
    measured = cells[cells["measured_at"].notna()]
    dates = sorted({str(t)[:10] for t in measured["measured_at"]})
    out = ["# Provenance", ""]
    counts = cells["status"].value_counts()
    out.append(
        f"{len(cells)} cells: "
        + ", ".join(f"{n} {s}" for s, n in counts.items())
        + ". "
        + (
            f"Measured {measured['measured_at'].min()} to {measured['measured_at'].max()} ({', '.join(dates)})."
            if len(measured)
            else "No cell was measured."
        )
    )
    out += ["", "## GPUs", ""]
    on_gpu = cells[cells["device_uuid"].notna()]
    rows = [
        [
            name,
            uuid,
            driver,
            f"{limit:.0f}" if pd.notna(limit) else None,
            len(g),
            f"{g['measured_at'].min()} to {g['measured_at'].max()}",
        ]
        for (name, uuid, driver, limit), g in on_gpu.groupby(
            ["device_name", "device_uuid", "driver_version", "power_limit_w"], dropna=False, sort=False
        )
    ]
    out.append(
        md_table(["device", "board (UUID)", "driver", "power limit (W)", "cells", "measured"], rows, aligned=False)
    )
    out += ["", "## Software, host and method", ""]
    rows = [
        [engine, ev, tv, cpu, w, m, len(g)]
        for (engine, ev, tv, cpu, w, m), g in on_gpu.groupby(
            ["engine", "engine_version", "torch_version", "host_cpu", "weights", "meter_method"],
            dropna=False,
            sort=False,
        )
    ]
    header = ["engine", "engine version", "torch", "host CPU", "weights", "energy method", "cells"]
    out.append(md_table(header, rows, aligned=False))
    if runs:
        out += ["", "## Commands", "", "As Snakemake logged them (shell quoting not kept), in the order they ran:", ""]
        out.append(
            md_table(
                ["log", "started", "command", "elapsed"],
                [
                    [
                        r["log"],
                        r["started"],
                        f"`{r['command']}`",
                        _seconds(r["elapsed_s"]) if r["elapsed_s"] is not None else "did not end",
                    ]
                    for r in runs
                ],
                aligned=False,
            )
        )
    out += ["", "## GPU time", ""]
    windows = _measured_window_s(cells)
    if len(jobs):
        per_rule = jobs.groupby("rule")["s"].agg(["count", "sum"])
        total = float(jobs["s"].sum())
        out.append(
            ", ".join(f"{r}: {int(c)} jobs, {_seconds(s)}" for r, (c, s) in per_rule.iterrows())
            + f". In all {_seconds(total)} of job wall time"
            + (
                f", {total / windows:.2f}x the measured windows ({_seconds(windows)} of GPU work inside the "
                "windows; `benchmarks/pipeline_overhead.py` splits the rest)."
                if windows
                else "."
            )
        )
    else:
        out.append(f"No job benchmark files given; measured windows: {_seconds(windows)}.")
    ended = [r["elapsed_s"] for r in runs if r["elapsed_s"] is not None]
    if ended:
        out.append(
            f"The Snakemake runs above took {_seconds(sum(ended))} from start to end (engine loads, "
            "prompt jobs and scheduling included)."
        )
    return "\n".join(out) + "\n"


def main(args) -> int:
    if not Path(args.cells).is_file():
        raise CtxEnergyError(
            f"provenance: no table of cells at '{args.cells}' (ctxenergy aggregate writes one, "
            f"{CELLS_TABLE} in the workflow)"
        )
    cells = read_cells_table(args.cells)
    text = provenance(cells, job_seconds(args.jobs), snakemake_runs(sorted(args.logs or [])))
    write_text(text, args.out)
    print(f"provenance of {len(cells)} cells -> {args.out}")
    return 0


def report_facts(
    config: dict, cells_table: str | Path = CELLS_TABLE, benchmarks: str | Path = BENCHMARKS_DIR
) -> dict[str, str]:
    """What the Snakemake report's front page (workflow/report/workflow.rst, whose template sees only the config)
    says beyond the config: the devices the cells ran on, by name, from the table of cells; and, where the cells
    were not all measured by this folder's jobs (`cells_source`, or cells copied in from another checkout), that
    Snakemake's runtime statistics cover only the jobs run here."""
    cells = pd.DataFrame()
    if Path(cells_table).is_file():
        try:
            cells = read_cells_table(cells_table)
        except CtxEnergyError:  # a bad table stops the run that reads it, with its own line; the page says less
            cells = pd.DataFrame()
    names = cells["device_name"].dropna().astype(str) if "device_name" in cells else pd.Series(dtype=str)
    names = names[names != ""]
    if names.empty:
        devices = f"device ``{config['device']}``"
    else:
        parts = []
        for name, n in names.value_counts().items():
            uuids = cells.loc[names[names == name].index].get("device_uuid", pd.Series(dtype=str)).dropna()
            boards = {b for text in uuids.astype(str) for b in text.split(",") if b}
            on = f", {len(boards)} board{'s' * (len(boards) != 1)}" if boards else ""
            parts.append(f"{name} ({n} cells{on})")
        devices = ", ".join(parts)
        if set(names) == {"cpu"} and "host_cpu" in cells and cells["host_cpu"].notna().any():
            devices = f"CPU {cells['host_cpu'].dropna().iloc[0]} ({len(names)} cells)"
    note = ""
    measured_here = (
        {
            p.relative_to(Path(benchmarks, "measure_cell")).with_suffix("").as_posix()
            for p in Path(benchmarks, "measure_cell").rglob("L*.tsv")
        }
        if Path(benchmarks).is_dir()
        else set()
    )
    outside = [c for c in cells.get("cell_id", []) if c not in measured_here]
    if config.get("cells_source"):
        note = (
            f"The cells come from ``{config['cells_source']}`` (measured in earlier runs, not in this folder): the "
            "runtime statistics of this report cover only the analysis jobs run here; the measurement jobs' times "
            "are in provenance.md."
        )
    elif outside:
        note = (
            f"{len(outside)} of {len(cells)} cells were measured outside this folder's runs (no job record "
            "here): the runtime statistics of this report cover only the jobs run here; provenance.md has the "
            "job times it was given."
        )
    return {"devices": devices, "statistics_note": note}
