"""All derived tables from the table of cells (+ the cells' own tables for traces and decode times):
`ctxenergy analyze results/cells.parquet --cell-tables <cell tables> --out results/analysis/<table>.parquet ...`.

Every table is checked against workflow/schemas/derived.schema.yaml before it is written.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from ctxenergy.analysis.cells import load_cells, prepare_cells, serial
from ctxenergy.analysis.claims import claims, table1
from ctxenergy.analysis.cost_model import cost_model, write_exports
from ctxenergy.analysis.derived_schema import DERIVED_SCHEMA_VERSION, check_table, conform, load_schema
from ctxenergy.analysis.engines import engine_ratios
from ctxenergy.analysis.io_ratio import io_ratio
from ctxenergy.analysis.paper_values import PAPER_MODELS
from ctxenergy.analysis.per_cell import per_cell_metrics
from ctxenergy.analysis.scaling import fits, slopes, thresholds
from ctxenergy.analysis.serving import serving
from ctxenergy.analysis.systematics import Systematics, reference_systematics, systematics_from_pairs, systematics_table
from ctxenergy.analysis.traces import representative_traces
from ctxenergy.errors import CtxEnergyError

TABLES = (
    "per_cell",
    "slopes",
    "fits",
    "fit_residuals",
    "thresholds",
    "io_ratio",
    "engine_ratios",
    "claims",
    "table1",
    "traces",
    "trace_runs",
    "systematics",
    "board_pairs",
    "cost_model",
)
# Written when asked for (ctxenergy.outputs.catalog.wants_serving): a batch-1 grid's outputs stay without it.
OPTIONAL_TABLES = ("serving",)
# Tables also written as CSV and JSON beside their Parquet, for programs outside this project (docs/cost-model.md).
EXPORTED = {"cost_model": write_exports}


def model_archs(models, config_path: str | Path | None = None) -> dict[str, dict | None]:
    """Architecture (config.json) of each model, for byte and FLOP counts; None where it cannot be found."""
    from ctxenergy.config import read_model_config

    entries = {}
    if config_path:
        entries = {m["name"]: m for m in (yaml.safe_load(Path(config_path).read_text()) or {}).get("models", [])}
    archs = {}
    for name in models:
        try:
            archs[name] = read_model_config(entries.get(name, {"name": name}))
        except CtxEnergyError:
            archs[name] = None
    return archs


def derive(
    cells: pd.DataFrame,
    cell_tables: dict | None = None,
    archs: dict | None = None,
    board_pairs: pd.DataFrame | None = None,
) -> dict[str, pd.DataFrame]:
    """cells: the table of cells (prepared or raw); cell_tables: cell_id -> (windows, runs, trace); board_pairs: cells
    measured on two boards (ctxenergy.analysis.systematics.board_pairs), by default those of the committed reference
    data, which set the systematic band of every number."""
    if "usable" not in cells:
        cells = prepare_cells(cells)
    cell_tables = cell_tables or {}
    if board_pairs is None:
        _, board_pairs = reference_systematics()
    sys: Systematics = systematics_from_pairs(board_pairs)
    windows = {cid: t[0] for cid, t in cell_tables.items()}
    pc = per_cell_metrics(cells, windows, archs)
    sl = slopes(pc)
    ft, res, objects = fits(pc, sys.floor_sigma_rel)
    th = thresholds(pc, objects, sys.floor_sigma_rel, sys.power_floor_sigma_rel)
    io = io_ratio(pc, sys)
    er = engine_ratios(pc, sys)
    tr, tr_runs = representative_traces(serial(pc), cell_tables)
    # the paper's claims and Table 1 are about one request at a time with the engines' default settings
    tables = {
        "per_cell": pc,
        "slopes": sl,
        "fits": ft,
        "fit_residuals": res,
        "thresholds": th,
        "io_ratio": io,
        "engine_ratios": er,
        "table1": table1(serial(pc), archs),
        "claims": claims(serial(pc), serial(sl), serial(th), serial(io), serial(er), sys, archs),
        "traces": tr,
        "trace_runs": tr_runs,
        "systematics": systematics_table(board_pairs),
        "board_pairs": board_pairs,
        "cost_model": cost_model(pc, objects, io, sys),
        "serving": serving(pc, io, sys),
    }
    return {name: t.assign(schema_version=DERIVED_SCHEMA_VERSION) for name, t in tables.items()}


def write_derived(tables: dict[str, pd.DataFrame], out_paths) -> list[Path]:
    from ctxenergy.tables import write_table

    schema = load_schema()
    written = []
    for path in map(Path, out_paths):
        name = path.name.removesuffix(".parquet")
        if name not in tables:
            raise CtxEnergyError(
                f"'{path}': unknown derived table '{name}' (known: {', '.join(TABLES + OPTIONAL_TABLES)})"
            )
        table = conform(name, tables[name], schema)
        check_table(name, table, schema)
        write_table(table, path)
        written.append(path)
        if name in EXPORTED:
            written += EXPORTED[name](table, path)
    return written


def read_cell_tables(paths) -> dict:
    from ctxenergy.tables import read_cell

    out = {}
    for p in paths:
        windows, runs, trace, _ = read_cell(p)
        out[str(windows["cell_id"].iloc[0])] = (windows, runs, trace)
    return out


def main(args) -> int:
    cells = load_cells(args.cells)
    # the paper's models too: Table 1 converts the paper's latencies into the TFLOP/s they imply
    models = sorted(set(cells["model"]) | set(PAPER_MODELS.values()))
    tables = derive(cells, read_cell_tables(args.cell_tables or []), model_archs(models, getattr(args, "config", None)))
    written = write_derived(tables, args.out)
    usable = int(cells["usable"].sum())
    print(f"{len(cells)} cells ({usable} with usable energy) -> {len(written)} derived tables")
    if usable == 0 and len(cells):
        print("no cell has usable energy: derived energy values are empty, and the figures say so")
    return 0
