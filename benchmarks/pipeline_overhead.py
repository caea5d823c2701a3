"""Where a measurement job's GPU time goes: job wall time (Snakemake `benchmark:`) against the measured windows.

    python benchmarks/pipeline_overhead.py CELLS_DIR JOBS_DIR
    python benchmarks/pipeline_overhead.py data/reference/nvidia-h200/cells data/reference/nvidia-h200/jobs/measure_cell
    python benchmarks/pipeline_overhead.py results/cells results/benchmarks/measure_cell

Where the warm-up jobs' benchmarks lie beside the cells' (JOBS_DIR/../warmup_engine), their wall time is counted
too: with engine hosts (the default since 2026-11-29) the warm-up job is where each engine loads, once.

Each cell's timeline (perf_counter marks written by `ctxenergy measure`) splits the job into: start-up before the
engine load (interpreter, imports, config, GPU claim, meter start incl. the counter-period probe), engine load,
idle baseline, warm-up, the windows (measured time plus the edges and cool-downs between them), and the rest
(writing, exit). The goal of the reference campaign is job wall time <= 1.5 x the sum of measured windows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ctxenergy.grid import cached_cell_tables
from ctxenergy.tables import read_cell


def overhead_table(cells_dir: Path, jobs_dir: Path) -> pd.DataFrame:
    rows = []
    for path in cached_cell_tables(cells_dir):
        rel = Path(path).relative_to(cells_dir)
        tsv = jobs_dir / rel.with_suffix(".tsv")
        windows, _, _, meta = read_cell(path)
        t = meta.get("timeline", {})
        if not tsv.exists() or "windows_end" not in t:
            continue  # a cell measured outside Snakemake, or not measured (oom, exceeds_context)
        job_s = float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
        measured = windows[windows["window"] >= 0]
        row = {
            "cell": str(rel.with_suffix("")),
            "job_s": job_s,
            "windows_s": float(measured["work_s"].sum()),
            "load_s": t["load_end"] - t["load_start"],
            "idle_s": t["idle_end"] - t["idle_start"],
            "warmup_s": t.get("warmup_end", t["idle_end"]) - t.get("warmup_start", t["idle_end"]),
            "window_span_s": t["windows_end"] - t["windows_start"],
        }
        # Between the load and the first window, besides idle and warm-up: the timing pass (a separate run in
        # cells measured before the warm-up doubled as the timing pass).
        row["timing_pass_s"] = (t["windows_start"] - t["load_end"]) - row["idle_s"] - row["warmup_s"]
        row["before_load_s"] = (
            job_s
            - (t["windows_end"] - t["load_start"])
            - ((t["write_start"] - t["windows_end"]) if "write_start" in t else 0.0)
        )  # upper bound where unmarked
        if "meter_open_start" in t:
            row["meter_open_s"] = t["meter_open_end"] - t["meter_open_start"]
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["edges_and_cooldowns_s"] = df["window_span_s"] - df["windows_s"]
        df["job_over_windows"] = df["job_s"] / df["windows_s"]
    return df


def warmup_jobs_s(directory: Path) -> dict[str, list[float]]:
    """Wall times of the warm-up jobs of each (model, engine) found under `directory`, one per row of its benchmark
    file: a campaign over several device calls loads an engine once per call and keeps one row for each."""
    if not directory.is_dir():
        return {}
    return {
        str(tsv.relative_to(directory).with_suffix("")): pd.read_csv(tsv, sep="\t")["s"].astype(float).tolist()
        for tsv in sorted(directory.rglob("*.tsv"))
    }


def unmeasured_jobs_s(jobs_dir: Path, measured: pd.DataFrame) -> list[float]:
    """Wall times of the jobs that measured nothing (status oom, exceeds_context): GPU time the campaign spent too."""
    done = set(measured["cell"])
    return [
        float(pd.read_csv(tsv, sep="\t")["s"].iloc[0])
        for tsv in sorted(jobs_dir.rglob("*.tsv"))
        if str(tsv.relative_to(jobs_dir).with_suffix("")) not in done
    ]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    df = overhead_table(Path(argv[0]), Path(argv[1]))
    if df.empty:
        print("no cells with both a timeline and a job benchmark", file=sys.stderr)
        return 1
    warmups = warmup_jobs_s(Path(argv[1]).parent / "warmup_engine")
    cols = [
        "cell",
        "job_s",
        "windows_s",
        "job_over_windows",
        "before_load_s",
        "load_s",
        "idle_s",
        "warmup_s",
        "timing_pass_s",
        "edges_and_cooldowns_s",
    ]
    print(df[cols].round(2).to_string(index=False))
    total = df[
        [
            "job_s",
            "windows_s",
            "before_load_s",
            "load_s",
            "idle_s",
            "warmup_s",
            "timing_pass_s",
            "edges_and_cooldowns_s",
        ]
    ].sum()
    print()
    print(
        f"{len(df)} jobs: {total['job_s']:.0f} s of job wall time for {total['windows_s']:.0f} s of measured windows "
        f"({total['job_s'] / total['windows_s']:.2f}x)"
    )
    warmup_s = [s for times in warmups.values() for s in times]
    unmeasured_s = unmeasured_jobs_s(Path(argv[1]), df)
    if unmeasured_s:
        print(f"+ {len(unmeasured_s)} jobs that measured nothing (oom, exceeds_context): {sum(unmeasured_s):.0f} s")
    if warmup_s or unmeasured_s:
        gpu_s = total["job_s"] + sum(warmup_s) + sum(unmeasured_s)
        print(
            f"+ {len(warmup_s)} warm-up jobs (engine loads): {sum(warmup_s):.0f} s -> {gpu_s:.0f} s in all, "
            f"{gpu_s / total['windows_s']:.2f}x the windows (goal <= 1.5x)"
        )
    for k in ("before_load_s", "load_s", "warmup_s", "idle_s", "timing_pass_s", "edges_and_cooldowns_s"):
        print(f"  {k[:-2]:<22} {total[k]:7.0f} s  ({total[k] / total['job_s']:.0%} of job time)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
