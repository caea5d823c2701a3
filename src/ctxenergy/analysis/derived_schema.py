"""The derived tables' schema (workflow/schemas/derived.schema.yaml): its version, and the check and type casts
every derived table passes before it is written or after it is read."""

from __future__ import annotations

import re

import pandas as pd
import yaml

from ctxenergy.errors import CtxEnergyError
from ctxenergy.paths import REPO_ROOT

DERIVED_SCHEMA = REPO_ROOT / "workflow" / "schemas" / "derived.schema.yaml"
# The derived tables' layout, apart from the cell tables' (ctxenergy.SCHEMA_VERSION): 2 added the systematic band.
DERIVED_SCHEMA_VERSION = 2

_KINDS = {"number": "fc iu", "integer": "iu", "string": "OSU", "boolean": "b"}


def load_schema() -> dict:
    return yaml.safe_load(DERIVED_SCHEMA.read_text())


def _column_schema(table_schema: dict, col: str, schema: dict) -> dict | None:
    found = table_schema.get("properties", {}).get(col)
    for pattern, sub in table_schema.get("patternProperties", {}).items():
        if found is None and re.search(pattern, col):
            found = sub
    if found and "$ref" in found:  # only local refs: "#/$defs/<name>"
        found = schema["$defs"][found["$ref"].rsplit("/", 1)[-1]]
    return found


def conform(name: str, df: pd.DataFrame, schema: dict | None = None) -> pd.DataFrame:
    """Cast each column to its schema type, so that empty tables and all-NaN columns keep their types on disk."""
    schema = schema or load_schema()
    ts = schema["$defs"][name]
    df = df.copy()
    for col in df:
        cs = _column_schema(ts, col, schema)
        if cs is None:
            continue
        types = cs["type"] if isinstance(cs["type"], list) else [cs["type"]]
        if types == ["boolean"]:
            df[col] = df[col].astype(bool)
        elif sorted(types) == ["boolean", "null"]:  # true, false or unknown (pandas' nullable boolean)
            df[col] = df[col].astype("boolean")
        elif types == ["integer"]:
            df[col] = df[col].astype("int64")
        elif "number" in types:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        elif types == ["string"]:
            df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    return df


def check_table(name: str, df: pd.DataFrame, schema: dict | None = None) -> None:
    """Columns and their types against the table's schema (a row schema, checked per column: fast on big traces)."""
    schema = schema or load_schema()
    ts = schema["$defs"][name]
    missing = [c for c in ts.get("required", []) if c not in df]
    if missing:
        raise CtxEnergyError(
            f"derived table '{name}' lacks column(s) {', '.join(missing)} (schema {DERIVED_SCHEMA.name})"
        )
    for col in df:
        cs = _column_schema(ts, col, schema)
        if cs is None:
            raise CtxEnergyError(
                f"derived table '{name}' has column '{col}' that {DERIVED_SCHEMA.name} does not describe"
            )
        types = cs["type"] if isinstance(cs["type"], list) else [cs["type"]]
        kinds = "".join(_KINDS[t] for t in types if t in _KINDS)
        if len(df) and df[col].dtype.kind not in kinds.replace(" ", ""):
            if df[col].dtype.kind == "O" and "string" in types and df[col].map(lambda v: isinstance(v, str)).all():
                continue
            raise CtxEnergyError(f"derived table '{name}' column '{col}' is {df[col].dtype}, the schema says {types}")
