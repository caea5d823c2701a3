"""Where things live: the repository's shipped files (schemas, model configs, base text), and the layout of a run's
results, which the package and the workflow (Snakefile, workflow/rules/*.smk) both take from here.

The results paths are relative: the workflow and the commands' defaults write them under the working directory.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
MODELS_DIR = REPO_ROOT / "data" / "models"
BASE_TEXT = REPO_ROOT / "data" / "prompts" / "base.txt"

RESULTS_DIR = Path("results")
PROMPTS_DIR = RESULTS_DIR / "prompts"  # {model}/[B{batch}/]L{length}.npy (+ .warmup.npy)
WARMUP_DIR = RESULTS_DIR / "warmup"  # {model}/{engine}.json, a variant's {model}/{engine}/V-{variant}.json
CELLS_DIR = RESULTS_DIR / "cells"
# One cell's windows table ({cell}: ctxenergy.grid.Cell.tail); its .runs and .trace tables sit beside it.
CELL_PATTERN = f"{CELLS_DIR}/{{model}}/{{engine}}/{{phase}}/{{cell}}.parquet"
CELLS_TABLE = RESULTS_DIR / "cells.parquet"  # all cells, one row each
ANALYSIS_DIR = RESULTS_DIR / "analysis"  # derived tables, {table}.parquet (ctxenergy.outputs.catalog)
FIGURES_DIR = RESULTS_DIR / "figures"  # {figure}.png and .svg
REPORT = RESULTS_DIR / "report" / "report.html"
PAPER = RESULTS_DIR / "paper" / "paper.html"
PAPER_MARKDOWN = RESULTS_DIR / "paper" / "paper.md"  # links its figures as ../figures/
PAPER_PDF = RESULTS_DIR / "paper" / "paper.pdf"
PROVENANCE = RESULTS_DIR / "provenance.md"
NOTEBOOKS_DIR = RESULTS_DIR / "notebooks"
SETTINGS_DIR = RESULTS_DIR / "config"  # the jobs' settings snapshots, {hash}.yaml
BENCHMARKS_DIR = RESULTS_DIR / "benchmarks"  # Snakemake's benchmark file of each job, {rule}/...tsv
LOGS_DIR = RESULTS_DIR / "logs"
ENGINE_HOSTS_DIR = RESULTS_DIR / "engine-hosts"  # the engine hosts' sockets, locks and logs
