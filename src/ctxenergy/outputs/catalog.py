"""The one list of what the analysis writes: derived tables, figures, pages of the key tables and documents, with
their file names, titles and captions. The workflow (workflow/rules/figures.smk, report.smk) builds its outputs
from it in a loop, and the figures, the report and the write-up take their titles from it, so that a name or a
title is written once.

The serving outputs (the `serving` table and its figures) are optional: a grid of batch-1 cells with the engines'
defaults (the paper's, the reference campaign's) neither needs nor writes them, so its outputs stay as they were. The
workflow asks for them where the config has a batch axis (`wants_serving`); `ctxenergy analyze` and `ctxenergy
figures` write whatever they are asked for, and the report and the write-up show what they are given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctxenergy.analysis.derive import TABLES as ANALYSIS_TABLES
from ctxenergy.paths import ANALYSIS_DIR, FIGURES_DIR, TABLES_DIR

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

FIGURE_FORMATS = ("png", "svg")  # png: embedded in the pages; svg: the Snakemake report and the write-up's copy


@dataclass(frozen=True)
class Figure:
    name: str  # file name without extension, and the plotting function's name in ctxenergy.outputs.figures
    title: str  # the caption under the figure in the report and the write-up
    label: str  # the Snakemake report's label; its caption is workflow/report/<name>.rst


FIGURES = (
    Figure(
        "energy_per_token_fit",
        "Prefill energy per input token (mJ/token) vs L with the fit E(L)/L, L* and the paper's points",
        "J/token with the fit, L* and the paper's points",
    ),
    Figure(
        "energy_intensity",
        "Prefill energy per input token (mJ/token) vs context length L",
        "energy intensity (paper Fig. 1)",
    ),
    Figure("io_energy", "E_in and E_out (mJ/token) and their ratio vs L", "E_in and E_out (paper Fig. 2)"),
    Figure("phase_map", "Mean power (W) vs latency per token (ms/token)", "phase map (paper Fig. 3)"),
    Figure(
        "de_dl", "Marginal prefill energy dE/dL (mJ/token) vs L, with L* and the onset of its rise", "dE/dL (claim 1)"
    ),
    Figure(
        "power_vs_length",
        "Mean prefill power (W) vs L with the board's power limit and the paper's plateau",
        "power vs L (claim 2)",
    ),
    Figure(
        "engine_ratio",
        "Prefill energy of each HF engine over vLLM's vs L, with the paper's 7.6x and 8.9x",
        "engine energy ratio (claim 6)",
    ),
    Figure(
        "energy_fit",
        "E(L) = a + bL + cL^2 fitted to the prefill cells, with residuals and chi²/dof",
        "E(L) fit and residuals",
    ),
    Figure("power_traces", "Instant power over representative windows", "power traces"),
    Figure(
        "achieved_throughput",
        "Achieved TFLOP/s (prefill) and memory bandwidth (decode) against the device's peak",
        "achieved throughput vs peak",
    ),
)
FIGURE_NAMES = tuple(f.name for f in FIGURES)
# Written only for a grid with serving cells (batch_size > 1, engine variants).
SERVING_TABLES = ("serving",)
SERVING_FIGURES = (
    Figure(
        "serving_energy_per_token",
        "Prefill energy per input token (mJ/token) vs L, one line per batch size B; engine variants dashed",
        "J per input token per batch size (serving)",
    ),
    Figure("serving_io_ratio", "E_out / E_in vs L, one line per batch size B", "E_out/E_in per batch size (serving)"),
)
SERVING_FIGURE_NAMES = tuple(f.name for f in SERVING_FIGURES)
FIGURE_TITLES = {f.name: f.title for f in FIGURES + SERVING_FIGURES}


@dataclass(frozen=True)
class TablePage:
    name: str  # file name without extension: the derived table it shows (<name>.parquet)
    title: str  # the page's heading
    label: str  # the Snakemake report's label; its caption is workflow/report/table_<name>.rst


# The key derived tables as small self-contained HTML pages (ctxenergy.outputs.table_pages), for the Snakemake
# report, whose viewer offers a Parquet file only for download.
TABLE_PAGES = (
    TablePage("claims", "The paper's claims: each verdict with the numbers and intervals that decide it", "claims"),
    TablePage("table1", "The paper's Table 1 beside our prefill cells at ~112k tokens", "Table 1"),
    TablePage("thresholds", "Thresholds (L* and others) with their 95 % intervals", "thresholds (L*)"),
    TablePage("cost_model", "The per-token cost model of a batch-1 request", "cost model"),
)
TABLE_PAGE_TITLES = {t.name: t.title for t in TABLE_PAGES}


def wants_serving(settings: Settings) -> bool:
    """Whether a study asks for the serving outputs: a batch size other than 1, or engine variants."""
    return any(b != 1 for b in settings.batch_sizes) or bool(settings.engine_variants)


def analysis_tables(serving: bool = False) -> tuple[str, ...]:
    return tuple(ANALYSIS_TABLES) + (SERVING_TABLES if serving else ())


def figures(serving: bool = False) -> tuple[Figure, ...]:
    return FIGURES + (SERVING_FIGURES if serving else ())


def analysis_paths(directory: str | Path = ANALYSIS_DIR, serving: bool = False) -> list[str]:
    return [f"{directory}/{t}.parquet" for t in analysis_tables(serving)]


def figure_paths(ext: str = "png", directory: str | Path = FIGURES_DIR, serving: bool = False) -> list[str]:
    return [f"{directory}/{f.name}.{ext}" for f in figures(serving)]


def table_page_paths(directory: str | Path = TABLES_DIR) -> list[str]:
    return [f"{directory}/{t.name}.html" for t in TABLE_PAGES]


def read_tables(paths) -> dict:
    """The derived tables among `paths` by name; the CSV/JSON exports written beside some of them are skipped."""
    import pandas as pd

    return {Path(p).name.removesuffix(".parquet"): pd.read_parquet(p) for p in paths if str(p).endswith(".parquet")}
