"""`ctxenergy analyze` end to end on the H200 reference cells, and the derived tables' schema."""

import math

import jsonschema
import numpy as np
import pandas as pd
import pytest
from conftest import reference_cells, reference_tables

from ctxenergy.analysis.derive import TABLES, derive
from ctxenergy.analysis.derived_schema import DERIVED_SCHEMA_VERSION, check_table, conform, load_schema
from ctxenergy.cli import main
from ctxenergy.errors import CtxEnergyError


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis")
    paths = [str(out / f"{t}.parquet") for t in TABLES]
    reference_cells().to_parquet(out / "cells.parquet")
    assert main(["analyze", str(out / "cells.parquet"), "--cell-tables", *reference_tables(), "--out", *paths]) == 0
    return {t: pd.read_parquet(out / f"{t}.parquet") for t in TABLES}


def rows_as_json(df: pd.DataFrame):
    for rec in df.to_dict(orient="records"):
        yield {
            k: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v)
            for k, v in rec.items()
        }


def test_every_table_is_written_and_every_row_matches_its_schema(written):
    schema = load_schema()
    for name, df in written.items():
        validator = jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{name}"})
        for row in rows_as_json(df.head(200)):
            errors = list(validator.iter_errors(row))
            assert not errors, f"{name}: {errors[0].message}"
    assert len(written["per_cell"]) == 14 and len(written["traces"]) > 100
    # every derived table carries the derived layout's version (2: the systematic band), not the cell tables'
    assert DERIVED_SCHEMA_VERSION == 2
    assert all((df["schema_version"] == DERIVED_SCHEMA_VERSION).all() for df in written.values() if len(df))


def test_derived_tables_are_reproducible(written):
    again = derive(reference_cells())
    # same seed, same numbers: the thresholds' intervals come from seeded draws
    pd.testing.assert_frame_equal(conform("thresholds", again["thresholds"]), written["thresholds"])
    pd.testing.assert_frame_equal(conform("fits", again["fits"]), written["fits"])


def test_traces_start_at_the_windows_first_run(written):
    runs = written["trace_runs"]
    assert (runs.groupby("cell_id")["start_s"].min() == 0).all()
    tr = written["traces"]
    assert set(tr["role"]) == {"smallest L", "largest L"}
    assert (tr["power_w"] > 50).all() and tr["t_s"].max() < 10


def test_an_unknown_table_name_is_refused_with_the_known_ones(tmp_path):
    with pytest.raises(CtxEnergyError, match="unknown derived table 'figure1'.*per_cell"):
        from ctxenergy.analysis.derive import write_derived

        write_derived(derive(reference_cells()), [tmp_path / "figure1.parquet"])


def test_the_schema_catches_an_undescribed_column():
    t = derive(reference_cells())
    bad = t["slopes"].assign(mystery=1.0)
    with pytest.raises(CtxEnergyError, match="'mystery'"):
        check_table("slopes", bad)
    with pytest.raises(CtxEnergyError, match="lacks column"):
        check_table("slopes", t["slopes"].drop(columns=["de_dl_j_per_token"]))


def test_cells_without_energy_give_empty_but_valid_tables(tmp_path):
    """What a CPU host produces: every energy NaN and flagged no_energy, no power trace."""
    raw = reference_cells()
    cols = [c for c in raw if c.startswith(("energy_per_run", "dynamic_energy", "mean_power", "power_cap"))]
    raw[cols] = np.nan
    raw["flags"] = "no_energy"
    raw[["idle_power_w", "peak_bf16_tflops"]] = None
    cells_path = tmp_path / "cells.parquet"
    raw.to_parquet(cells_path)
    paths = [str(tmp_path / "out" / f"{t}.parquet") for t in TABLES]
    assert main(["analyze", str(cells_path), "--out", *paths]) == 0
    t = {name: pd.read_parquet(p) for name, p in zip(TABLES, paths)}
    assert not t["per_cell"]["usable"].any() and t["per_cell"]["latency_per_token_ms"].notna().all()
    assert t["fits"]["status"].str.startswith("not fitted").all()
    assert t["thresholds"].empty and t["engine_ratios"].empty and t["traces"].empty
    assert set(t["claims"]["verdict"]) == {"not testable"}
    assert t["io_ratio"]["note"].str.contains("no_energy").all()
