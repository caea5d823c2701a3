"""Reading and writing the Parquet tables between stages, always atomically.

A cell is three files side by side, written together:
  L{n}.parquet        one row per measured window, with the cell's metadata as columns (the cell's main table)
  L{n}.runs.parquet   one row per run (host timestamps from the engine)
  L{n}.trace.parquet  the instant-power trace of every window
The full metadata (versions, settings, engine options) is also stored as JSON in the main file's
key-value metadata under "ctxenergy".
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"ctxenergy"


def sibling(path: str | Path, kind: str) -> Path:
    """L256.parquet -> L256.<kind>.parquet"""
    path = Path(path)
    return path.with_name(path.name.removesuffix(".parquet") + f".{kind}.parquet")


def _write_tmp(df: pd.DataFrame, path: Path, metadata: dict | None) -> str:
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata is not None:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), META_KEY: json.dumps(metadata, default=str).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    pq.write_table(table, tmp, compression="zstd")
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
    return tmp


def write_tables(files: dict[Path, tuple[pd.DataFrame, dict | None]]) -> None:
    """Write every table to a temporary file first, then move them all into place (the first path last).

    A crash leaves no partial file: either the temporaries (removed here) or the complete set.
    """
    tmps: list[tuple[str, Path]] = []
    try:
        for path, (df, meta) in files.items():
            tmps.append((_write_tmp(df, Path(path), meta), Path(path)))
        for tmp, path in reversed(tmps):
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in tmps:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_table(df: pd.DataFrame, path: str | Path, metadata: dict | None = None) -> None:
    write_tables({Path(path): (df, metadata)})


@contextmanager
def _replacing(path: Path):
    """A temporary file beside `path` that replaces it once written: readers never see a half-written `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_csv_or_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """A table for people or for programs: Parquet for a .parquet path, CSV otherwise; atomic either way."""
    path = Path(path)
    if path.suffix == ".parquet":
        write_table(df, path)
        return path
    with _replacing(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def copy_file(src: str | Path, dst: str | Path) -> Path:
    """A copy that appears whole or not at all (a cell file copied into reference data)."""
    dst = Path(dst)
    with _replacing(dst) as tmp:
        shutil.copyfile(src, tmp)
        shutil.copystat(src, tmp)  # keeps the measured file's time
    return dst


def write_text(text: str, path: str | Path) -> Path:
    """A page (HTML, Markdown) written atomically, UTF-8."""
    path = Path(path)
    with _replacing(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
    return path


def read_metadata(path: str | Path) -> dict:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[META_KEY]) if META_KEY in meta else {}


def read_cell(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """windows, runs, trace, metadata of one cell."""
    path = Path(path)
    return (pd.read_parquet(path), pd.read_parquet(sibling(path, "runs")), pd.read_parquet(sibling(path, "trace")),
            read_metadata(path))
