"""Newly measured cells into a folder of reference cells, with their job times: how a run on a GPU becomes
committed reference data that the provenance page and `benchmarks/pipeline_overhead.py` can account for.

    ctxenergy add-cells results data/reference/nvidia-h200/campaign

Copies every cell of `results/cells` that the folder's `cells/` lacks (with its runs and power trace), its job's
benchmark file (`results/benchmarks/measure_cell/...` -> `jobs/measure_cell/...`), the warm-up jobs' rows that the
folder's `jobs/warmup_engine/` lacks, and re-aggregates `cells.parquet`. A cell the folder holds from the same
measurement (same `measured_at`) is left alone; one it holds from another measurement stops the command before
anything is copied: replacing a reference cell is a decision (move the old one away first).
"""

from __future__ import annotations

from pathlib import Path

from ctxenergy.aggregate import aggregate
from ctxenergy.errors import CtxEnergyError
from ctxenergy.files import write_text
from ctxenergy.grid import cached_cell_tables
from ctxenergy.tables import copy_file, read_cell

SIBLINGS = (".parquet", ".runs.parquet", ".trace.parquet")


def _measured_at(path: Path) -> str:
    """When the cell was measured; reading it checks its three files against the cell schema."""
    return str(read_cell(path)[0]["measured_at"].iloc[0])


def add_cells(results: str | Path, folder: str | Path) -> str:
    """Copy what `folder` lacks from `results`; returns a one-line summary."""
    results, folder = Path(results), Path(folder)
    src_cells, dst_cells = results / "cells", folder / "cells"
    new, conflicts = [], []
    for path in map(Path, cached_cell_tables(src_cells, "add-cells: results")):
        rel = path.relative_to(src_cells).with_suffix("")
        dst = dst_cells / f"{rel}.parquet"
        measured_at = _measured_at(path)  # every cell checked before anything is copied
        if not dst.exists():
            new.append(rel)
        elif _measured_at(dst) != measured_at:
            conflicts.append(rel)
    if conflicts:
        raise CtxEnergyError(
            f"add-cells: {dst_cells} already holds {len(conflicts)} of these cells from another measurement (e.g. "
            f"{conflicts[0]}); to replace them move the old ones away first, else remove them from {src_cells}"
        )
    with_job = 0
    for rel in new:
        for suffix in SIBLINGS:
            if (src_cells / f"{rel}{suffix}").exists():
                copy_file(src_cells / f"{rel}{suffix}", dst_cells / f"{rel}{suffix}")
        tsv = results / "benchmarks" / "measure_cell" / f"{rel}.tsv"
        if tsv.exists():
            copy_file(tsv, folder / "jobs" / "measure_cell" / f"{rel}.tsv")
            with_job += 1
    warmups = 0
    # <model>/<engine>.tsv, and an engine variant's <model>/<engine>/V-<variant>.tsv
    for tsv in sorted((results / "benchmarks" / "warmup_engine").rglob("*.tsv")):
        dst = folder / "jobs" / "warmup_engine" / tsv.relative_to(results / "benchmarks" / "warmup_engine")
        header, *rows = tsv.read_text().splitlines()
        kept = dst.read_text().splitlines() if dst.exists() else [header]
        added = [r for r in rows if r not in kept[1:]]  # one row per warm-up job; a rerun of this adds nothing
        if added:
            write_text("\n".join(kept + added) + "\n", dst)
            warmups += len(added)
    table = aggregate(cached_cell_tables(dst_cells), folder / "cells.parquet")
    return (
        f"added {len(new)} cells to {dst_cells} ({with_job} with their job times), {warmups} warm-up job rows; "
        f"{folder / 'cells.parquet'}: {len(table)} cells"
    )


def main(args) -> int:
    print(add_cells(args.results, args.folder))
    return 0
