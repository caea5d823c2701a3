import re
import sys

from ctxenergy.config import (
    cell_settings_hash,
    check_semantics,
    validate_workflow_config,
    write_settings_snapshot,
)
from ctxenergy.engines.registry import ENGINES
from ctxenergy.errors import CtxEnergyError
from ctxenergy.gpus import check_tp_fits_host
from ctxenergy.paths import (
    BENCHMARKS_DIR,
    CELLS_TABLE,
    NOTEBOOKS_DIR,
    benchmark_path,
    log_path,
)
from ctxenergy.provenance import report_facts
from ctxenergy.settings import Settings
from ctxenergy.grid import (
    CELL_TAIL,
    CELL_TAIL_PATTERN,
    DEFAULT_VARIANT,
    Cell,
    cached_cell_tables,
    expand_grid,
    prompt_path,
    warmup_path,
)
from ctxenergy.tables import sibling
from ctxenergy.telemetry.nvml_api import check_device
from ctxenergy.workflow_process import check_run_folders_writable, enter_workflow, failed_jobs_line

# Jobs and engine hosts end with this Snakemake process; a lock left by a killed run is removed (workflow_process.py).
RESUMING = enter_workflow(main_process=workflow.is_main_process, dry_run=workflow.dryrun)
if RESUMING:
    print(RESUMING, file=sys.stderr)

try:
    if not workflow.dryrun:  # a dry run writes nothing: it may look at a read-only results/
        check_run_folders_writable()
    # The schema (workflow/schemas/config.schema.yaml) with its defaults: a wrong key or type is one line.
    validate_workflow_config(config, dict(workflow.config_settings.config))
    # Analysing cached cells needs no engine installed.
    check_semantics(config, "config", engines_needed=() if config["cells_source"] else None)
    # The package's functions take the validated config as read-only settings; the rules keep reading `config`.
    STUDY = Settings.from_config(config)
    check_tp_fits_host(STUDY, "config")
except CtxEnergyError as exc:
    sys.exit(f"ctxenergy: {exc}")

# The merged config (config.yaml + --configfile + --config) as this run's jobs must see it: an immutable snapshot
# named by its content, so that no later parse changes the settings of running jobs; passed as a param, not an
# input, so that adding a length does not rerun the cells already measured.
SETTINGS = write_settings_snapshot(config)
# For the Snakemake report's front page (workflow/report/workflow.rst), whose template sees only the config: the
# devices by name and what the runtime statistics cover. Added after the jobs' settings snapshot: no job reads it.
config["report_facts"] = report_facts(config)
CELLS = expand_grid(STUDY)
MODELS = {m["name"]: m for m in config["models"]}


wildcard_constraints:
    model="|".join(re.escape(m) for m in MODELS),
    engine="|".join(re.escape(e) for e in config["engines"]),
    phase="prefill|generate",
    length=r"\d+",
    batch=r"\d+",
    variant=r"[a-z0-9][a-z0-9-]*",
    cell=CELL_TAIL_PATTERN,


def exit_unless_device_usable():
    """Runs at the start of a real run (not a dry run): no GPU means one line and a pointer to the smoke config."""
    if config["cells_source"]:
        return
    try:
        check_device(config["device"])
    except CtxEnergyError as exc:
        sys.exit(f"ctxenergy: {exc}")


def stop_engine_hosts():
    from ctxenergy.engine_host import stop_idle_hosts

    stop_idle_hosts()


def plan_progress():
    """The cells and warm-ups this run will make, for each cell job's progress line (ctxenergy.progress)."""
    from ctxenergy.progress import write_plan

    write_plan((job.rule.name, dict(job.wildcards)) for job in workflow.dag.needrun_jobs())


def print_finished():
    """Where the report and the write-up are, at the end of a successful run."""
    from ctxenergy.progress import finished_line

    print(finished_line(), file=sys.stderr)


# One (model, engine, variant) at a time: its warm-up, then its cells, then the next pair's. Each switch of pair
# restarts the engine host (a model load; for vLLM, minutes of start-up), and Snakemake otherwise picks among ready
# jobs in no useful order. Prompts (CPU, seconds) come first so that a pair's cells are ready when its warm-up is done.
ENGINE_PAIRS = [(m, e, v) for m in MODELS for e in config["engines"] for v in STUDY.variants(e)]
PROMPTS_PRIORITY = 2 * len(ENGINE_PAIRS) + 2


def variant_of(wildcards):
    """The engine variant of a job: a cell's (its `cell` wildcard), a variant warm-up's, else the default."""
    if "cell" in wildcards.keys():
        return CELL_TAIL.fullmatch(wildcards.cell)["variant"] or DEFAULT_VARIANT
    return wildcards.get("variant", DEFAULT_VARIANT)


def cell_of(wildcards):
    return Cell.from_tail(wildcards.model, wildcards.engine, wildcards.phase, wildcards.cell)


def pair_priority(offset):
    """Priority of a job of one (model, engine, variant): the pair's cells (offset 1) above its warm-up (0), both
    above every later pair's jobs."""

    def priority(wildcards):
        rank = ENGINE_PAIRS.index((wildcards.model, wildcards.engine, variant_of(wildcards)))
        return 2 * (len(ENGINE_PAIRS) - rank) + offset

    return priority


def cell_inputs(wildcards):
    """A cell's prompt files (one sequence, or its batch's B) and its engine's (variant's) warm-up."""
    cell = cell_of(wildcards)
    engine_ready = warmup_path(cell.model, cell.engine, cell.variant)
    return {
        "prompt": ancient(str(prompt_path(cell.model, cell.length, False, cell.batch_size))),
        "warmup_prompt": ancient(str(prompt_path(cell.model, cell.length, True, cell.batch_size))),
        "engine_ready": ancient(str(engine_ready)),
    }


def cell_arguments(wildcards):
    """The cell's length, batch size and variant as `ctxenergy measure` options (the paper's cells: --length)."""
    cell = cell_of(wildcards)
    batch = f" --batch-size {cell.batch_size}" if cell.batch_size != 1 else ""
    return f" --length {cell.length}{batch}{variant_argument(wildcards)}"


def variant_argument(wildcards):
    variant = variant_of(wildcards)
    return "" if variant == DEFAULT_VARIANT else f" --variant {variant}"


def batch_argument(wildcards):
    batch = wildcards.get("batch")
    return f" --batch-size {batch}" if batch else ""


def engine_env(wildcards):
    return f"../../envs/{ENGINES[wildcards.engine].conda_env}.yaml"


def shared_weights_input(wildcards):
    """The model's generated shared random weights, where it asks for them (random_weights: shared)."""
    from ctxenergy.weights import shared_weights_marker

    model = STUDY.model(wildcards.model)
    if model.random_weights != "shared" or model.weights:
        return []
    return ancient(str(shared_weights_marker(STUDY, wildcards.model)))


def cell_gpus(wildcards):
    """GPUs a cell occupies: its model's tensor-parallel degree on a GPU study, none on CPU."""
    return STUDY.model(wildcards.model).tp if STUDY.device == "cuda" else 0


def cell_settings(wildcards):
    """Only the settings that change this cell's numbers: a changed figure option never reruns a GPU cell; a
    variant's cells also rerun when its options change."""
    variant = variant_of(wildcards)
    if variant == DEFAULT_VARIANT:
        return cell_settings_hash(config, wildcards.model)
    options = config["engine_variants"][wildcards.engine][variant]["options"]
    return f"{cell_settings_hash(config, wildcards.model)}+{sorted(options.items())}"


def cell_paths():
    if config["cells_source"]:
        return cached_cell_tables(config["cells_source"])
    return [str(c.path) for c in CELLS]


def missing_cell_paths():
    """The grid's cells not on disk; under budget_s only those whose estimated job times fit (ctxenergy.budget)."""
    if config["cells_source"]:
        return []
    missing = [c for c in CELLS if not c.path.exists()]
    if config["budget_s"] is not None and missing:
        from ctxenergy.budget import within_budget

        missing, summary = within_budget(missing, config["budget_s"], config["job_times"], STUDY)
        print(f"ctxenergy: {summary}", file=sys.stderr)
    return [str(c.path) for c in missing]


def missing_cell_files():
    """The grid's cell files not on disk while results/cells.parquet is (a cell deleted after it was aggregated).
    Snakemake does not remake a deleted intermediate file whose consumer is up to date (not even for the explicit
    target results/cells.parquet); as a param of aggregate_cells, a change in this list reruns the table, and its
    missing cells are made first. The run after such a repair aggregates once more (it recorded the old list).
    """
    from pathlib import Path

    if not CELLS_TABLE.exists():
        return []
    return sorted(p for p in cell_paths() if not Path(p).exists())


def provenance_jobs_dir():
    """The jobs' benchmark files: this run's, or those kept beside cached cells (<cells_source>/../jobs)."""
    from pathlib import Path

    if config["cells_source"]:
        return str(Path(config["cells_source"]).parent / "jobs")
    return str(BENCHMARKS_DIR)


def provenance_logs():
    import glob

    return sorted({p for pattern in config["provenance_logs"] for p in glob.glob(pattern)})


def final_outputs():
    """The cells themselves are targets too: Snakemake would not remake a deleted intermediate file whose consumer
    (results/cells.parquet) is up to date, and the table would keep the deleted cell's row."""
    cell_files = [str(f) for p in cell_paths() for f in (p, sibling(p, "runs"), sibling(p, "trace"))]
    return [
        *cell_files,
        CELLS_TABLE,
        *REPORT_TARGETS,
        *COST_MODEL,
        *TABLE_PAGE_PATHS,
        NOTEBOOKS_DIR / "explore.ipynb",
    ]
