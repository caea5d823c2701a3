"""ctxenergy provenance: the page is read from the cells, the jobs' benchmark files and Snakemake's logs."""

import pandas as pd
from conftest import REFERENCE, REPO

from ctxenergy.cli import main
from ctxenergy.job_benchmarks import job_seconds
from ctxenergy.provenance import snakemake_runs

CAMPAIGN = REFERENCE / "campaign"
LOGS = sorted((REPO / "docs" / "gpu-runs").glob("2026-11-29*-campaign-*.log"))


def test_committed_campaign(tmp_path):
    out = tmp_path / "provenance.md"
    assert (
        main(
            [
                "provenance",
                "--cells",
                str(CAMPAIGN / "cells.parquet"),
                "--jobs",
                str(CAMPAIGN / "jobs"),
                "--logs",
                *map(str, LOGS),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    text = out.read_text()
    cells = pd.read_parquet(CAMPAIGN / "cells.parquet")
    assert text.startswith(f"# Provenance\n\n{len(cells)} cells: ")
    for uuid in cells["device_uuid"].dropna().unique():  # every board is named, with its number of cells
        n = int((cells["device_uuid"] == uuid).sum())
        assert f"| {uuid} | " in text and f" | {n} | " in text
    jobs = job_seconds(CAMPAIGN / "jobs")
    measure = jobs[jobs["rule"] == "measure_cell"]
    assert len(measure) == len(cells)  # one benchmark file per cell job, skipped and oom cells included
    assert f"measure_cell: {len(measure)} jobs" in text
    # one row per run: `missing_cells`, or the planned cells of a call that had less time than the engine needed
    assert text.count("`python3 -m snakemake ") == text.count("--configfile config/campaign.yaml") == len(LOGS) >= 8


def test_runs_are_ordered_by_their_start_and_an_unfinished_run_says_so(tmp_path):
    late, early = tmp_path / "a.log", tmp_path / "b.log"
    late.write_text(
        "Building DAG of jobs...\n  Command: snakemake all --cores 1\n[Sun Nov 29 09:00:00 2026]\n"
        "rule x:\nElapsed time: 1 day, 0:01:30.5\n"
    )
    early.write_text("  Command: snakemake missing_cells --cores 1\n[Sun Nov 29 08:00:00 2026]\nrule y:\n")
    runs = snakemake_runs([late, early])
    assert [r["log"] for r in runs] == ["b.log", "a.log"]
    assert runs[0]["elapsed_s"] is None and runs[1]["elapsed_s"] == 86400 + 90.5


def test_without_jobs_or_logs_it_still_describes_the_cells(tmp_path):
    out = tmp_path / "sub" / "p.md"
    assert main(["provenance", "--cells", str(REFERENCE / "cells.parquet"), "--out", str(out)]) == 0
    text = out.read_text()
    assert "No job benchmark files given" in text and "## Commands" not in text
    assert "NVIDIA H200" in text


def test_a_missing_table_of_cells_is_one_line_and_writes_nothing(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "p.md"
    proc = subprocess.run(
        [sys.executable, "-m", "ctxenergy", "provenance", "--cells", str(tmp_path / "none.parquet"), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "no table of cells at" in lines[0] and not out.exists()
