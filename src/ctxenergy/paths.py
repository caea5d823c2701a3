"""Where things live: the repository's shipped files (schemas, model configs, base text), and the layout of a run's
results, which the package and the workflow (Snakefile, workflow/rules/*.smk) both take from here.

The results paths are relative: the workflow and the commands' defaults write them under the working directory.
A *_PATTERN is a path with the workflow's wildcards ({model}, {engine}, ...) left in, for a rule's output or for
str.format; a job's log and benchmark file take the same wildcards (log_path, benchmark_path).
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
MODELS_DIR = REPO_ROOT / "data" / "models"
BASE_TEXT = REPO_ROOT / "data" / "prompts" / "base.txt"

# The wildcards that name one job of a rule, shared by its outputs, log and benchmark file.
PROMPT_JOB = "{model}/L{length}"
BATCH_PROMPT_JOB = "{model}/B{batch}/L{length}"
WARMUP_JOB = "{model}/{engine}"
WARMUP_VARIANT_JOB = "{model}/{engine}/V-{variant}"  # an engine variant's own load (config engine_variants)
CELL_JOB = "{model}/{engine}/{phase}/{cell}"  # {cell}: ctxenergy.grid.Cell.tail

RESULTS_DIR = Path("results")
PROMPTS_DIR = RESULTS_DIR / "prompts"  # {model}/[B{batch}/]L{length}.npy (+ .warmup.npy)
PROMPT_PATTERN = f"{PROMPTS_DIR}/{PROMPT_JOB}.npy"
WARMUP_PROMPT_PATTERN = f"{PROMPTS_DIR}/{PROMPT_JOB}.warmup.npy"
BATCH_PROMPT_PATTERN = f"{PROMPTS_DIR}/{BATCH_PROMPT_JOB}.npy"
BATCH_WARMUP_PROMPT_PATTERN = f"{PROMPTS_DIR}/{BATCH_PROMPT_JOB}.warmup.npy"
WARMUP_DIR = RESULTS_DIR / "warmup"  # engine loads, start-up times
WARMUP_PATTERN = f"{WARMUP_DIR}/{WARMUP_JOB}.json"
WARMUP_VARIANT_PATTERN = f"{WARMUP_DIR}/{WARMUP_VARIANT_JOB}.json"
CELLS_DIR = RESULTS_DIR / "cells"
# One cell's windows table; its .runs and .trace tables sit beside it (ctxenergy.tables.sibling).
CELL_PATTERN = f"{CELLS_DIR}/{CELL_JOB}.parquet"
CELLS_TABLE = RESULTS_DIR / "cells.parquet"  # all cells, one row each
ANALYSIS_DIR = RESULTS_DIR / "analysis"  # derived tables, {table}.parquet (ctxenergy.outputs.catalog)
FIGURES_DIR = RESULTS_DIR / "figures"  # {figure}.png and .svg
TABLES_DIR = RESULTS_DIR / "tables"  # the key derived tables as small HTML pages, {table}.html (catalog.TABLE_PAGES)
REPORT = RESULTS_DIR / "report" / "report.html"
PAPER = RESULTS_DIR / "paper" / "paper.html"
PAPER_MARKDOWN = RESULTS_DIR / "paper" / "paper.md"  # links its figures as ../figures/
PAPER_PDF = RESULTS_DIR / "paper" / "paper.pdf"
PROVENANCE = RESULTS_DIR / "provenance.md"
NOTEBOOKS_DIR = RESULTS_DIR / "notebooks"
SETTINGS_DIR = RESULTS_DIR / "config"  # the jobs' settings snapshots, {hash}.yaml
BENCHMARKS_DIR = RESULTS_DIR / "benchmarks"  # Snakemake's benchmark file of each job (benchmark_path)
LOGS_DIR = RESULTS_DIR / "logs"  # each job's log (log_path)
ENGINE_HOSTS_DIR = RESULTS_DIR / "engine-hosts"  # the engine hosts' sockets, locks and logs
# A spot check's cells, measured apart from CELLS_DIR (which may hold copies of the reference cells).
SPOT_CHECK_CELLS_DIR = RESULTS_DIR / "spot_check" / "cells"
SPOT_CHECK_CELL_PATTERN = f"{SPOT_CHECK_CELLS_DIR}/{CELL_JOB}.parquet"
SPOT_CHECK_TABLE = RESULTS_DIR / "spot_check.csv"
CALIBRATION_TABLE = RESULTS_DIR / "calibration" / "calibration.csv"
CALIBRATION_WINDOWS = RESULTS_DIR / "calibration" / "calibration.windows.csv"


def log_path(rule: str, job: str = "") -> str:
    """A job's log: <LOGS_DIR>/<rule>.log for a rule of one job, else <LOGS_DIR>/<rule>/<job>.log (job: its
    wildcards, e.g. WARMUP_JOB)."""
    return _job_file(LOGS_DIR, rule, job, ".log")


def benchmark_path(rule: str, job: str = "") -> str:
    """A job's Snakemake benchmark file, laid out like its log; the job-time estimates (ctxenergy.budget) and the
    provenance page read <BENCHMARKS_DIR>/<rule>/<job>.tsv back."""
    return _job_file(BENCHMARKS_DIR, rule, job, ".tsv")


def _job_file(folder: Path, rule: str, job: str, suffix: str) -> str:
    return f"{folder}/{rule}/{job}{suffix}" if job else f"{folder}/{rule}{suffix}"
