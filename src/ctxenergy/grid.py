"""The grid: every (model, engine, phase, L) cell of a config, with one stable id and output path each."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CELLS_DIR = Path("results/cells")
PROMPTS_DIR = Path("results/prompts")
WARMUP_DIR = Path("results/warmup")


@dataclass(frozen=True)
class Cell:
    model: str
    engine: str
    phase: str  # "prefill" or "generate"
    length: int

    @property
    def cell_id(self) -> str:
        return f"{self.model}/{self.engine}/{self.phase}/L{self.length}"

    @classmethod
    def from_id(cls, cell_id: str) -> Cell:
        """The inverse of cell_id: 'llama-3.1-8b/hf-sdpa/prefill/L16384' -> Cell(...)."""
        parts = cell_id.strip("/").split("/")
        if len(parts) != 4 or not parts[3].startswith("L") or not parts[3][1:].isdigit():
            raise ValueError(f"'{cell_id}' is not a cell id (<model>/<engine>/<phase>/L<n>, "
                             "e.g. llama-3.1-8b/hf-sdpa/prefill/L16384)")
        return cls(*parts[:3], int(parts[3][1:]))

    @property
    def path(self) -> Path:
        """The cell's windows table; its runs and power trace sit beside it (see ctxenergy.tables)."""
        return CELLS_DIR / self.model / self.engine / self.phase / f"L{self.length}.parquet"


def expand_grid(config: dict) -> list[Cell]:
    """Cells in a stable order: model, engine, phase, then increasing L."""
    return [
        Cell(model["name"], engine, phase, int(length))
        for model in config["models"]
        for engine in config["engines"]
        for phase in config["phases"]
        for length in sorted(config["lengths"])
    ]


def output_tokens(config: dict, phase: str) -> int:
    return 1 if phase == "prefill" else int(config["generate_tokens"])


def prompt_path(model: str, length: int, warmup: bool = False) -> Path:
    return PROMPTS_DIR / model / (f"L{length}.warmup.npy" if warmup else f"L{length}.npy")


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
