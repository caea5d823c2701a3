"""ctxenergy add-cells: a run's new cells, with their job times, into a folder of reference cells."""

import shutil
from pathlib import Path

import pandas as pd
from conftest import REFERENCE

from ctxenergy.cli import main

CAMPAIGN = REFERENCE / "campaign"
SIBLINGS = (".parquet", ".runs.parquet", ".trace.parquet")


def put_cell(src_cells: Path, cell: str, dst_cells: Path) -> None:
    for suffix in SIBLINGS:
        (dst_cells / f"{cell}{suffix}").parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src_cells / f"{cell}{suffix}", dst_cells / f"{cell}{suffix}")


def a_run(tmp_path: Path, cells: list[str]) -> Path:
    results = tmp_path / "results"
    for cell in cells:
        put_cell(CAMPAIGN / "cells", cell, results / "cells")
        tsv = results / "benchmarks" / "measure_cell" / f"{cell}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text("s\th:m:s\n21.5\t0:00:21\n")
    warm = results / "benchmarks" / "warmup_engine" / "llama-3.1-8b" / "hf-sdpa.tsv"
    warm.parent.mkdir(parents=True)
    warm.write_text("s\th:m:s\n16.1\t0:00:16\n")
    return results


def test_adds_what_the_folder_lacks_with_job_times_and_warm_up_rows_once(tmp_path, capsys):
    cells = ["llama-3.1-8b/hf-sdpa/prefill/L1024", "llama-3.1-8b/hf-sdpa/generate/L1024"]
    results = a_run(tmp_path, cells)
    folder = tmp_path / "reference"
    put_cell(CAMPAIGN / "cells", cells[0], folder / "cells")  # the same measurement: left alone
    warm = folder / "jobs" / "warmup_engine" / "llama-3.1-8b" / "hf-sdpa.tsv"
    warm.parent.mkdir(parents=True)
    warm.write_text("s\th:m:s\n17.0\t0:00:17\n")  # an earlier session's warm-up job
    assert main(["add-cells", str(results), str(folder)]) == 0
    assert "added 1 cells" in capsys.readouterr().out
    assert all((folder / "cells" / f"{cells[1]}{s}").exists() for s in SIBLINGS)
    assert (folder / "jobs" / "measure_cell" / f"{cells[1]}.tsv").read_text().splitlines()[1].startswith("21.5")
    assert warm.read_text().splitlines() == ["s\th:m:s", "17.0\t0:00:17", "16.1\t0:00:16"]
    table = pd.read_parquet(folder / "cells.parquet")
    assert sorted(table["cell_id"]) == sorted(cells)
    assert main(["add-cells", str(results), str(folder)]) == 0  # a rerun adds nothing twice
    assert "added 0 cells" in capsys.readouterr().out and len(warm.read_text().splitlines()) == 3


def test_a_cell_from_another_measurement_stops_it_before_anything_is_copied(tmp_path, capsys):
    cells = ["llama-3.1-8b/hf-sdpa/prefill/L1024", "llama-3.1-8b/hf-sdpa/prefill/L2048"]
    results = a_run(tmp_path, cells)
    folder = tmp_path / "reference"
    put_cell(REFERENCE / "cells", cells[0], folder / "cells")  # the first session's cell of the same id
    assert main(["add-cells", str(results), str(folder)]) != 0
    err = capsys.readouterr().err.strip()
    assert "already holds 1 of these cells from another measurement (e.g. llama-3.1-8b/hf-sdpa/prefill/L1024)" in err
    assert "\n" not in err and "Traceback" not in err
    assert not (folder / "cells" / f"{cells[1]}.parquet").exists() and not (folder / "cells.parquet").exists()


def test_no_cells_in_results_is_one_line(tmp_path, capsys):
    (tmp_path / "results" / "cells").mkdir(parents=True)
    assert main(["add-cells", str(tmp_path / "results"), str(tmp_path / "reference")]) != 0
    err = capsys.readouterr().err.strip()
    assert "holds no cell tables" in err and "\n" not in err
