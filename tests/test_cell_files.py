"""Cell files checked at the boundary: every reader of a cell stops, in one line naming the file, on a bad, corrupt,
partial or mismatched cell; and the aggregation refuses cells measured under other settings than the run's."""

import re
import shutil

import pandas as pd
import pytest
from conftest import REFERENCE

from ctxenergy.aggregate import aggregate
from ctxenergy.cli import main
from ctxenergy.config import load_config
from ctxenergy.errors import CtxEnergyError
from ctxenergy.grid import cached_cell_tables
from ctxenergy.paths import REPO_ROOT
from ctxenergy.tables import read_cell, sibling, write_table, write_tables

pytestmark = pytest.mark.slow


CAMPAIGN = REFERENCE / "campaign" / "cells"
CELLS = [
    "llama-3.1-8b/hf-sdpa/prefill/L1024",
    "llama-3.1-8b/hf-sdpa/prefill/L4096",
    "llama-3.1-8b/vllm/generate/L65536",
]


def copy_cells(dst, cells=CELLS):
    for cell in cells:
        for suffix in (".parquet", ".runs.parquet", ".trace.parquet"):
            (dst / f"{cell}{suffix}").parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(CAMPAIGN / f"{cell}{suffix}", dst / f"{cell}{suffix}")
    return [dst / f"{cell}.parquet" for cell in cells]


def rewrite_windows(path, change):
    windows, _, _, meta = read_cell(path)
    write_table(change(windows), path, meta)


def one_line_error(tmp_path, paths, capsys) -> str:
    rc = main(["aggregate", *map(str, paths), "--out", str(tmp_path / "cells.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "cells.parquet").exists()
    return err


def test_every_committed_cell_fits_the_schema():
    for path in (p for p in REFERENCE.rglob("L*.parquet") if p.name.count(".") == 1):
        read_cell(path)


@pytest.mark.parametrize("column", ["energy_per_run_j", "phase", "length_tokens", "cell_id"])
def test_a_cell_missing_a_column_stops_the_aggregation_naming_it(tmp_path, capsys, column):
    """Without energy_per_run_j a measured cell was silently excluded (and claims flipped to "not testable");
    without phase it counted as usable; without length_tokens or cell_id it was a traceback."""
    paths = copy_cells(tmp_path / "cells")
    rewrite_windows(paths[2], lambda w: w.drop(columns=[column]))
    err = one_line_error(tmp_path, paths, capsys)
    assert err.startswith(f"ctxenergy: {paths[2]}: ") and f"missing column {column}" in err
    assert "re-measure the cell (delete it and rerun) or restore it" in err


def test_a_measured_cell_with_a_value_of_the_wrong_type_is_refused(tmp_path):
    paths = copy_cells(tmp_path / "cells")
    rewrite_windows(paths[0], lambda w: w.assign(energy_per_run_j="12.5"))
    with pytest.raises(CtxEnergyError, match=r"L1024.parquet: column energy_per_run_j is .*string"):
        read_cell(paths[0])


def write_copy(src, out):
    """A cell written anew (as `ctxenergy measure` writes one) from a committed one."""
    windows, runs, trace, meta = read_cell(src)
    write_tables({out: (windows, meta), sibling(out, "runs"): (runs, None), sibling(out, "trace"): (trace, None)})
    return out


@pytest.mark.parametrize("kind", ["", "runs", "trace"])
def test_a_corrupt_file_of_a_cell_is_one_line_naming_it(tmp_path, capsys, kind):
    paths = copy_cells(tmp_path / "cells")
    truncated = sibling(paths[1], kind) if kind else paths[1]  # a committed cell, cut short (a partial copy)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    err = one_line_error(tmp_path, paths, capsys)
    assert err.startswith(f"ctxenergy: {truncated}: not a readable Parquet file")


@pytest.mark.parametrize("kind", ["runs", "trace"])
def test_a_damaged_runs_or_trace_file_of_a_new_cell_is_noticed(tmp_path, kind):
    fresh = write_copy(CAMPAIGN / f"{CELLS[0]}.parquet", tmp_path / "fresh" / "L1024.parquet")
    flipped = sibling(fresh, kind)  # a cell written now, 64 bytes of its runs or trace zeroed in the middle
    data = flipped.read_bytes()
    flipped.write_bytes(data[: len(data) // 2] + bytes(64) + data[len(data) // 2 + 64 :])
    with pytest.raises(CtxEnergyError, match=f"{flipped.name}: "):
        read_cell(fresh)


def test_a_missing_sibling_is_one_line(tmp_path, capsys):
    paths = copy_cells(tmp_path / "cells")
    sibling(paths[0], "trace").unlink()
    assert one_line_error(tmp_path, paths, capsys).startswith(f"ctxenergy: {sibling(paths[0], 'trace')}: missing")


def test_a_cell_mixed_from_two_measurements_is_noticed(tmp_path):
    """The three files are written as one unit: the main file records the hashes of the two others."""
    src = copy_cells(tmp_path / "src")
    out = write_copy(src[0], tmp_path / "new" / "L1024.parquet")
    assert read_cell(out)[3]["files"].keys() == {"L1024.runs.parquet", "L1024.trace.parquet"}
    shutil.copy2(sibling(src[1], "trace"), sibling(out, "trace"))  # the L4096 cell's trace beside it
    with pytest.raises(CtxEnergyError, match=r"L1024.trace.parquet: not the file written with L1024.parquet"):
        read_cell(out)


def test_compare_and_add_cells_read_through_the_schema(tmp_path, capsys):
    paths = copy_cells(tmp_path / "results" / "cells")
    rewrite_windows(paths[0], lambda w: w.drop(columns=["energy_per_run_j"]))
    assert main(["compare", str(CAMPAIGN), str(tmp_path / "results" / "cells")]) == 2
    assert "missing column energy_per_run_j" in capsys.readouterr().err
    assert main(["add-cells", str(tmp_path / "results"), str(tmp_path / "reference")]) == 2
    assert "missing column energy_per_run_j" in capsys.readouterr().err
    assert not (tmp_path / "reference").exists()  # checked before anything is copied


def test_the_campaign_aggregates_under_its_own_config(tmp_path):
    config = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / "campaign.yaml"])
    table = aggregate(cached_cell_tables(CAMPAIGN), tmp_path / "cells.parquet", config)
    committed = pd.read_parquet(REFERENCE / "campaign" / "cells.parquet")
    # the campaign's cells predate the batch axis (schema_version 1): they read as batch 1 of the default variant,
    # and the table aggregated before those columns existed is otherwise the same
    assert (table["batch_size"] == 1).all() and (table["engine_variant"] == "default").all()
    assert (table["attention_kernels"] == "not recorded").all()  # the cells predate that record too
    pd.testing.assert_frame_equal(table.drop(columns=["batch_size", "engine_variant", "attention_kernels"]), committed)


def test_cells_under_other_settings_stop_the_aggregation_unless_allowed(tmp_path, capsys):
    paths = copy_cells(tmp_path / "cells")
    (tmp_path / "g64.yaml").write_text("generate_tokens: 64\n")
    args = [
        "aggregate",
        *map(str, paths),
        "--out",
        str(tmp_path / "cells.parquet"),
        "--config",
        str(REPO_ROOT / "config.yaml"),
        "--configfile",
        str(REPO_ROOT / "config" / "campaign.yaml"),
    ]
    assert main(args) == 0  # the campaign's cells under the campaign's config
    assert main(args + ["--configfile", str(tmp_path / "g64.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 of 3 cells were measured under other settings than these" in err
    assert all(cell in err for cell in CELLS) and "allow_mixed_settings: true" in err
    assert main(args + ["--configfile", str(tmp_path / "g64.yaml"), "--allow-mixed-settings"]) == 0
    assert "combined as allow_mixed_settings asks" in capsys.readouterr().err
    (tmp_path / "g64.yaml").write_text("generate_tokens: 64\nallow_mixed_settings: true\n")
    assert main(args + ["--configfile", str(tmp_path / "g64.yaml")]) == 0


def test_a_bad_table_of_cells_stops_analyze_and_provenance_in_one_line(tmp_path, capsys):
    table = REFERENCE / "campaign" / "cells.parquet"
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(table.read_bytes()[:-100])
    partial = tmp_path / "partial.parquet"
    write_table(pd.read_parquet(table).drop(columns=["length_tokens"]), partial)
    for bad, problem in ((cut, "not a readable Parquet file"), (partial, "missing column length_tokens")):
        for args in (
            ["analyze", str(bad), "--out", str(tmp_path / "per_cell.parquet")],
            ["provenance", "--cells", str(bad), "--out", str(tmp_path / "provenance.md")],
        ):
            assert main(args) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and err.startswith(f"ctxenergy: {bad}: {problem}")
            assert "snakemake --forcerun aggregate_cells" in err


def legacy(path):
    """The cell as written before the manifest of hashes: its siblings can only be checked by their content."""
    windows, runs, trace, meta = read_cell(path)
    write_tables({path: (windows, {k: v for k, v in meta.items() if k != "files"})})
    return path


@pytest.mark.parametrize("kind, problem", [("runs", r"runs per window"), ("trace", r"outside the cell's windows")])
def test_a_legacy_cell_beside_another_cells_runs_or_trace_is_refused(tmp_path, capsys, kind, problem):
    """Cells without hashes read another cell's runs or trace without a word (different run counts per window,
    timestamps of another measurement)."""
    paths = copy_cells(tmp_path / "cells")
    legacy(paths[0])
    read_cell(paths[0])
    shutil.copy2(sibling(paths[1], kind), sibling(paths[0], kind))  # L4096's file beside L1024
    err = one_line_error(tmp_path, paths, capsys)
    assert err.startswith(f"ctxenergy: {sibling(paths[0], kind)}: ") and re.search(problem, err), err


def test_a_cell_of_a_newer_schema_is_refused(tmp_path, capsys):
    paths = copy_cells(tmp_path / "cells")
    windows, runs, trace, meta = read_cell(paths[0])
    write_tables(
        {
            paths[0]: (windows.assign(schema_version=99), {**meta, "schema_version": 99}),
            sibling(paths[0], "runs"): (runs, None),
            sibling(paths[0], "trace"): (trace, None),
        }
    )
    err = one_line_error(tmp_path, paths, capsys)
    assert f"{paths[0]}: schema_version 99" in err and "newer ctxenergy" in err and "upgrade" in err


def test_a_cell_file_named_after_another_cell_is_refused(tmp_path, capsys):
    paths = copy_cells(tmp_path / "cells")
    renamed = paths[0].with_name("L2048.parquet")
    for kind in ("", "runs", "trace"):
        (sibling(paths[0], kind) if kind else paths[0]).rename(sibling(renamed, kind) if kind else renamed)
    err = one_line_error(tmp_path, [renamed, *paths[1:]], capsys)
    assert err.startswith(f"ctxenergy: {renamed}: holds the cell llama-3.1-8b/hf-sdpa/prefill/L1024"), err
    moved = tmp_path / "cells" / "llama-3.1-8b" / "vllm" / "prefill" / "L4096.parquet"  # the right name, wrong engine
    moved.parent.mkdir(parents=True)
    for kind in ("", "runs", "trace"):
        shutil.move(sibling(paths[1], kind) if kind else paths[1], sibling(moved, kind) if kind else moved)
    assert "holds the cell llama-3.1-8b/hf-sdpa/prefill/L4096" in one_line_error(tmp_path, [moved], capsys)


def test_the_same_cell_twice_stops_the_aggregation_naming_both(tmp_path, capsys):
    paths = copy_cells(tmp_path / "cells")
    copy = copy_cells(tmp_path / "copy", CELLS[:1])[0]
    err = one_line_error(tmp_path, [*paths, copy], capsys)
    assert str(paths[0]) in err and str(copy) in err and "same cell" in err, err
