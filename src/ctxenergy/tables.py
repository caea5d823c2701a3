"""Reading and writing the Parquet tables between stages, always atomically.

A cell is three files side by side, written together:
  L{n}.parquet        one row per measured window, with the cell's metadata as columns (the cell's main table)
  L{n}.runs.parquet   one row per run (host timestamps from the engine)
  L{n}.trace.parquet  the instant-power trace of every window
The full metadata (versions, settings, engine options) is also stored as JSON in the main file's
key-value metadata under "ctxenergy", with the SHA-256 of the two other files ("files"): a reader that finds a
runs or trace file of another measurement beside it says so. Every read of a cell checks the three files against
workflow/schemas/cell.schema.yaml (read_cell).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ctxenergy.errors import CtxEnergyError
from ctxenergy.files import commit, replacing, temp_beside
from ctxenergy.files import write_text as write_text  # report.py and paper.py write their pages through tables
from ctxenergy.paths import REPO_ROOT

META_KEY = b"ctxenergy"
CELL_SCHEMA = REPO_ROOT / "workflow" / "schemas" / "cell.schema.yaml"
# What a reader of a bad cell file is told to do.
CELL_FIX = "re-measure the cell (delete it and rerun) or restore it"


def sibling(path: str | Path, kind: str) -> Path:
    """L256.parquet -> L256.<kind>.parquet"""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".parquet") + f".{kind}.parquet")


def _write_tmp(df: pd.DataFrame, path: Path, metadata: dict | None) -> str:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), META_KEY: json.dumps(metadata, default=str).encode()}
        )
    tmp = temp_beside(path)
    pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)  # readers verify: no silent bit flip
    return tmp


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_tables(files: dict[Path, tuple[pd.DataFrame, dict | None]]) -> None:
    """Write every table to a temporary file first, then move them all into place (the first path last).

    A crash leaves no partial file: either the temporaries (removed here) or the complete set. The first table's
    metadata, when it has some, records the SHA-256 of the others ("files"), so that a reader notices a set mixed
    from two writes (a crash between two moves, a file restored from elsewhere).
    """
    tmps: list[tuple[str, Path]] = []
    (first, (first_df, first_meta)), *others = files.items()
    try:
        for path, (df, meta) in others:
            tmps.append((_write_tmp(df, Path(path), meta), Path(path)))
        if first_meta is not None and others:
            first_meta = dict(first_meta, files={path.name: _sha256(tmp) for tmp, path in tmps})
        tmps.insert(0, (_write_tmp(first_df, Path(first), first_meta), Path(first)))
        for tmp, path in reversed(tmps):
            commit(tmp, path)
    except BaseException:
        for tmp, _ in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_table(df: pd.DataFrame, path: str | Path, metadata: dict | None = None) -> None:
    write_tables({Path(path): (df, metadata)})


def write_csv_or_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """A table for people or for programs: Parquet for a .parquet path, CSV otherwise; atomic either way."""
    path = Path(path)
    if path.suffix == ".parquet":
        write_table(df, path)
        return path
    with replacing(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """A copy that appears whole or not at all (a cell file copied into reference data)."""
    dst = Path(dst)
    with replacing(dst) as tmp:
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)  # keeps the measured file's time
    return dst


def read_metadata(path: str | Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}


class CellFileError(CtxEnergyError):
    """A cell file that is missing, unreadable, or not what the cell schema describes."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _read_checked(path: Path, table_schema: dict, fix: str = CELL_FIX) -> tuple[pd.DataFrame, pa.Schema]:
    """One file of a cell (or the table of cells), read whole (a corrupt page fails here, not later) and its
    columns checked; `fix` tells the user what to do about a bad one."""
    try:
        schema = pq.read_schema(path)
        df = pd.read_parquet(path, page_checksum_verification=True)  # files written before checksums have none
    except FileNotFoundError:
        raise CellFileError(f"{path}: missing; {fix}") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CellFileError(f"{path}: not a readable Parquet file ({_first_line(exc)}); {fix}") from None
    missing = [c for c in table_schema.get("required", []) if c not in schema.names]
    if missing:
        raise CellFileError(f"{path}: missing column {', '.join(missing)}; {fix}")
    for field in schema:
        described = table_schema.get("properties", {}).get(field.name, {})
        types = described.get("type", [])
        types = types if isinstance(types, list) else [types]
        if types and not pa.types.is_null(field.type) and not any(_ARROW_KINDS[t](field.type) for t in types):
            raise CellFileError(
                f"{path}: column {field.name} is {field.type}, the cell schema says {' or '.join(types)}; {fix}"
            )
    return df, schema


_ARROW_KINDS = {
    "integer": pa.types.is_integer,
    "number": lambda t: pa.types.is_integer(t) or pa.types.is_floating(t),
    "string": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t),
    "boolean": pa.types.is_boolean,
    "null": pa.types.is_null,
}


def _check_rows(path: Path, windows: pd.DataFrame, table_schema: dict) -> None:
    """Every row of the main table against the schema (a handful of rows: one per window)."""
    import jsonschema

    if windows.empty:
        raise CellFileError(f"{path}: no rows (a cell has one row per window, or one with window -1); {CELL_FIX}")
    validator = jsonschema.Draft202012Validator(table_schema)
    for i, row in enumerate(json.loads(windows.to_json(orient="records"))):
        error = jsonschema.exceptions.best_match(validator.iter_errors(row))
        if error is not None:
            what = (
                f"missing column {error.message.split(chr(39))[1]}"
                if error.validator == "required"
                else f"column {'.'.join(map(str, error.absolute_path))}: {error.message}"
            )
            raise CellFileError(
                f"{path}: row {i} (status {row.get('status')}, window {row.get('window')}): {what}; {CELL_FIX}"
            )


@functools.cache
def _cell_schema() -> dict:
    import yaml

    return yaml.safe_load(CELL_SCHEMA.read_text())


def read_cell(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """windows, runs, trace, metadata of one cell, each file checked against the cell schema; a bad, corrupt,
    partial or mismatched file stops the reader with one line naming it (CellFileError)."""
    path = Path(path)
    schema = _cell_schema()["$defs"]
    windows, arrow_schema = _read_checked(path, schema["windows"])
    meta_bytes = (arrow_schema.metadata or {}).get(META_KEY)
    meta = json.loads(meta_bytes) if meta_bytes else {}
    _check_version(path, windows, meta)
    _check_rows(path, windows, schema["windows"])
    _check_name(path, windows.iloc[0])
    runs, _ = _read_checked(sibling(path, "runs"), schema["runs"])
    trace, _ = _read_checked(sibling(path, "trace"), schema["trace"])
    for name, digest in meta.get("files", {}).items():  # cells written before the manifest have none
        if _sha256(path.with_name(name)) != digest:
            raise CellFileError(
                f"{path.with_name(name)}: not the file written with {path.name} (its content "
                f"differs from the hash recorded there); {CELL_FIX}"
            )
    _check_siblings_belong(path, windows, runs, trace, meta)
    return with_serving_defaults(windows), runs, trace, meta


# Columns added with schema_version 2 (the batch axis and engine variants, docs/serving.md), as cells written before
# them read: one sequence per run, the engine as engine_options set it.
# The windows' columns the table of cells summarises per cell (ctxenergy.aggregate): <name>, <name>_ci_low and
# <name>_ci_high (median and t-interval of the mean over the windows).
SUMMARISED = [
    "energy_per_run_j",
    "dynamic_energy_per_run_j",
    "run_s",
    "prefill_s",
    "mean_power_w",
    "power_cap_fraction",
    "window_s",
    "edge_uncertainty_j",
]
SERVING_DEFAULTS = {"batch_size": 1, "engine_variant": "default"}


def with_serving_defaults(df: pd.DataFrame) -> pd.DataFrame:
    """A cell's windows (or the table of cells) with batch_size and engine_variant filled in where it predates them."""
    missing = {c: v for c, v in SERVING_DEFAULTS.items() if c not in df}
    if not missing:
        return df
    df = df.copy()
    for column, value in missing.items():
        df[column] = value
    return df


def _check_version(path: Path, windows: pd.DataFrame, meta: dict) -> None:
    """A cell of a later layout would be read as this one's, its columns meaning what they meant then."""
    import ctxenergy

    versions = [meta.get("schema_version"), *(windows["schema_version"] if "schema_version" in windows else [])]
    newest = max((int(v) for v in versions if isinstance(v, (int, float)) and v == v), default=None)
    if newest is not None and newest > ctxenergy.SCHEMA_VERSION:
        raise CellFileError(
            f"{path}: schema_version {newest}, written by a newer ctxenergy (this one reads up to "
            f"{ctxenergy.SCHEMA_VERSION}); upgrade ctxenergy to read it"
        )


CELL_NAME = re.compile(r"L(\d+)\.parquet")
PHASES = ("prefill", "generate")


def _check_name(path: Path, row: pd.Series) -> None:
    """A cell file named L<n>.parquet holds the cell of length n; in the workflow's <model>/<engine>/<phase>/
    layout (a phase folder, under an engine's folder) the folders name its phase, engine and model too, and the
    folders between phase and file its variant and batch (V-<variant>/B<b>/, as its cell_id)."""
    from ctxenergy.engines.registry import ENGINES
    from ctxenergy.grid import CELL_TAIL

    cell = str(row["cell_id"])
    named = CELL_NAME.fullmatch(path.name)
    folders = path.parent.parts
    wrong = bool(named) and int(named.group(1)) != row["length_tokens"]
    id_tail = cell.split("/", 3)[-1] if cell.count("/") >= 3 else ""
    tail_folders = [f for f in id_tail.split("/")[:-1] if f]
    if tail_folders and named:  # a batched or variant cell: its id's segments are the folders above the file
        wrong = wrong or list(folders[-len(tail_folders) :]) != tail_folders or not CELL_TAIL.fullmatch(id_tail)
        folders = folders[: -len(tail_folders)]
    elif named and folders and (folders[-1].startswith("V-") or (folders[-1][:1] == "B" and folders[-1][1:].isdigit())):
        wrong = True  # a batch-1 default cell moved into a batch's or variant's folder
    if folders and folders[-1] in PHASES:
        wrong = wrong or folders[-1] != row["phase"]
        if len(folders) >= 2 and folders[-2] in ENGINES:
            model = tuple(str(row["model"]).split("/"))
            wrong = wrong or folders[-2] != row["engine"] or folders[-2 - len(model) : -2] != model
    if wrong:
        raise CellFileError(
            f"{path}: holds the cell {cell}, not the one its name says (renamed or moved); put it "
            f"back at <model>/<engine>/<phase>/[V-<variant>/][B<b>/]L<length>.parquet (its cell_id) "
            f"or {CELL_FIX}"
        )


# perf_counter seconds by which a run or power sample may lie outside the cell's recorded windows (a sample taken
# as the last window closes); another cell's files lie seconds to hours away.
TIMELINE_MARGIN_S = 0.5


def _check_siblings_belong(
    path: Path, windows: pd.DataFrame, runs: pd.DataFrame, trace: pd.DataFrame, meta: dict
) -> None:
    """The runs and trace files are this cell's, checked by content (cells written before the hash manifest have
    no other check): the runs per window are the windows' `runs`, and every timestamp lies in the cell's timeline."""
    measured = windows[windows["window"] >= 0]
    expected = {int(w): int(n) for w, n in zip(measured["window"], measured["runs"])}
    found = {int(w): int(n) for w, n in runs.groupby("window").size().items()}
    runs_path = sibling(path, "runs")
    if found != expected:
        raise CellFileError(
            f"{runs_path}: runs per window {found} where {path.name} records {expected}: the runs "
            f"of another measurement; {CELL_FIX}"
        )
    timeline = meta.get("timeline") or {}
    if "windows_start" not in timeline or "windows_end" not in timeline:
        return
    start, end = timeline["windows_start"] - TIMELINE_MARGIN_S, timeline["windows_end"] + TIMELINE_MARGIN_S
    for file, times in ((runs_path, runs["start_s"]), (sibling(path, "trace"), trace["t_s"])):
        outside = times[(times < start) | (times > end)]
        if len(outside):
            raise CellFileError(
                f"{file}: {len(outside)} timestamps outside the cell's windows "
                f"({timeline['windows_start']:.1f}-{timeline['windows_end']:.1f} s in {path.name}): "
                f"the file of another measurement; {CELL_FIX}"
            )


def read_cells_table(path: str | Path) -> pd.DataFrame:
    """The table of cells (results/cells.parquet), checked against the cell schema's `cells` entry."""
    fix = "rebuild it from the cells (snakemake --forcerun aggregate_cells, or ctxenergy aggregate)"
    return with_serving_defaults(_read_checked(Path(path), _cell_schema()["$defs"]["cells"], fix)[0])
