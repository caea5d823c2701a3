"""The grid: every (model, engine, phase, L) cell of a config, with one stable id and output path each.

Two optional axes (docs/serving.md): the batch size B (`batch_sizes`, default [1]) and an engine's option variant
(`engine_variants`, the default variant being the engine as `engine_options` sets it). A cell of the default variant
at batch 1 keeps the paper's id `<model>/<engine>/<phase>/L<n>`; the others add a segment each before L:
`<model>/<engine>/<phase>/V-<variant>/B<b>/L<n>` (V- only for a variant, B only for B > 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

from ctxenergy.paths import (
    BATCH_PROMPT_PATTERN,
    BATCH_WARMUP_PROMPT_PATTERN,
    CELL_PATTERN,
    PROMPT_PATTERN,
    WARMUP_PATTERN,
    WARMUP_PROMPT_PATTERN,
    WARMUP_VARIANT_PATTERN,
)

DEFAULT_VARIANT = "default"
# The part of a cell id after <model>/<engine>/<phase>/ (CELL_TAIL_PATTERN: the workflow's `cell` wildcard).
CELL_TAIL_PATTERN = r"(?:V-[a-z0-9][a-z0-9-]*/)?(?:B[0-9]+/)?L[0-9]+"
CELL_TAIL = re.compile(r"(?:V-(?P<variant>[a-z0-9][a-z0-9-]*)/)?(?:B(?P<batch>[0-9]+)/)?L(?P<length>[0-9]+)")


@dataclass(frozen=True)
class Cell:
    model: str
    engine: str
    phase: str  # "prefill" or "generate"
    length: int
    batch_size: int = 1  # B sequences of `length` tokens prefilled (and decoded) together
    variant: str = DEFAULT_VARIANT  # the engine's option set (config engine_variants)

    @property
    def tail(self) -> str:
        """The id after <model>/<engine>/<phase>/: L<n>, B<b>/L<n>, V-<variant>/L<n> or V-<variant>/B<b>/L<n>."""
        variant = "" if self.variant == DEFAULT_VARIANT else f"V-{self.variant}/"
        batch = "" if self.batch_size == 1 else f"B{self.batch_size}/"
        return f"{variant}{batch}L{self.length}"

    @property
    def cell_id(self) -> str:
        return f"{self.model}/{self.engine}/{self.phase}/{self.tail}"

    @classmethod
    def from_id(cls, cell_id: str) -> Cell:
        """The inverse of cell_id: 'llama-3.1-8b/hf-sdpa/prefill/L16384' -> Cell(...), and likewise for ids with a
        batch or variant segment ('llama-3.1-8b/vllm/prefill/V-chunked/B4/L1024')."""
        parts = cell_id.strip("/").split("/")
        tail = CELL_TAIL.fullmatch("/".join(parts[3:])) if len(parts) >= 4 else None
        bad_phase = len(parts) >= 4 and parts[2] not in ("prefill", "generate")
        if tail is None or bad_phase or int(tail["batch"] or 1) < 1 or tail["variant"] == DEFAULT_VARIANT:
            raise ValueError(
                f"'{cell_id}' is not a cell id (<model>/<engine>/<phase>/[V-<variant>/][B<b>/]L<n>, "
                "e.g. llama-3.1-8b/hf-sdpa/prefill/L16384 or llama-3.1-8b/vllm/prefill/B4/L1024)"
            )
        return cls(*parts[:3], int(tail["length"]), int(tail["batch"] or 1), tail["variant"] or DEFAULT_VARIANT)

    @classmethod
    def from_tail(cls, model: str, engine: str, phase: str, tail: str) -> Cell:
        return cls.from_id(f"{model}/{engine}/{phase}/{tail}")

    @property
    def path(self) -> Path:
        """The cell's windows table; its runs and power trace sit beside it (see ctxenergy.tables)."""
        return Path(CELL_PATTERN.format(model=self.model, engine=self.engine, phase=self.phase, cell=self.tail))

    @property
    def n_sequences(self) -> int:
        return self.batch_size


def expand_grid(settings: Settings) -> list[Cell]:
    """Cells in a stable order: model, engine, variant (the default first), phase, increasing B, increasing L.

    A variant's own `lengths` / `batch_sizes` (each a subset of the grid's) narrow it; absent, it runs the whole
    grid."""
    cells = []
    for model in settings.models:
        for engine in settings.engines:
            for variant, spec in settings.variants(engine).items():
                for phase in settings.phases:
                    for batch in sorted(spec.batch_sizes or settings.batch_sizes):
                        for length in sorted(spec.lengths or settings.lengths):
                            cells.append(Cell(model.name, engine, phase, int(length), int(batch), variant))
    return cells


def output_tokens(settings: Settings, phase: str) -> int:
    return 1 if phase == "prefill" else int(settings.generate_tokens)


def prompt_path(model: str, length: int, warmup: bool = False, batch_size: int = 1) -> Path:
    """A batch-1 cell's prompt file (one sequence); a batch's holds B distinct sequences, shape (B, L)."""
    if batch_size == 1:
        pattern = WARMUP_PROMPT_PATTERN if warmup else PROMPT_PATTERN
    else:
        pattern = BATCH_WARMUP_PROMPT_PATTERN if warmup else BATCH_PROMPT_PATTERN
    return Path(pattern.format(model=model, length=length, batch=batch_size))


def warmup_path(model: str, engine: str, variant: str = DEFAULT_VARIANT) -> Path:
    """The warm-up record of an engine's load (one per variant): its cells wait for it."""
    if variant == DEFAULT_VARIANT:
        return Path(WARMUP_PATTERN.format(model=model, engine=engine))
    return Path(WARMUP_VARIANT_PATTERN.format(model=model, engine=engine, variant=variant))


def cached_cell_tables(directory: str | Path, what: str = "cells_source") -> list[str]:
    """The main table of every cell under a directory of cells (not their .runs/.trace siblings); `what` names the
    setting or argument that gave the directory, for the error."""
    directory = Path(directory)
    if not directory.is_dir():
        from ctxenergy.errors import ConfigError

        raise ConfigError(f"{what} '{directory}' is not a directory of cell tables")
    found = sorted(p for p in directory.rglob("L*.parquet") if p.name.count(".") == 1)
    if not found:
        from ctxenergy.errors import ConfigError

        raise ConfigError(f"{what} '{directory}' holds no cell tables (L<n>.parquet)")
    return [str(p) for p in found]
