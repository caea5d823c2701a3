# Cell jobs measure on an engine host that the (model, engine)'s warm-up job starts and that keeps the engine
# loaded between cells (src/ctxenergy/engine_host.py); every cell is still its own job and output.
from ctxenergy.paths import (
    CELL_JOB,
    CELL_PATTERN,
    WARMUP_JOB,
    WARMUP_PATTERN,
    WARMUP_VARIANT_JOB,
    WARMUP_VARIANT_PATTERN,
)


rule warmup_engine:
    input:
        shared_weights_input,
    output:
        WARMUP_PATTERN,
    log:
        log_path("warmup_engine", WARMUP_JOB),
    benchmark:
        benchmark_path("warmup_engine", WARMUP_JOB)
    priority: pair_priority(0)
    conda:
        engine_env
    resources:
        gpu=cell_gpus,
        runtime=30,
        mem_mb=16000,
    params:
        config=SETTINGS,
        variant=variant_argument,
    shell:
        "ctxenergy warmup --config {params.config} --model {wildcards.model} --engine {wildcards.engine}"
        "{params.variant} --engine-host --out {output} > {log} 2>&1"


# An engine variant (config engine_variants) is another load of the engine, with its own warm-up and host.
use rule warmup_engine as warmup_engine_variant with:
    output:
        WARMUP_VARIANT_PATTERN,
    # in the folders of the default load's: the job-time estimates read a variant's load as its engine's
    log:
        log_path("warmup_engine", WARMUP_VARIANT_JOB),
    benchmark:
        benchmark_path("warmup_engine", WARMUP_VARIANT_JOB)


# The job's output goes to its log; its one progress line (ctxenergy.progress) to the console, through fd 3.
rule measure_cell:
    input:
        # ancient(): a measured cell is not redone because these exist with a newer date (made on another machine
        # or later). Continuing from committed cells on a fresh checkout: `snakemake missing_cells`, then the rest.
        unpack(cell_inputs),
    output:
        # {cell}: L<n>, or with a batch and variant B<b>/L<n>, V-<variant>/[B<b>/]L<n> (ctxenergy.grid.Cell)
        cell=CELL_PATTERN,
        runs=sibling(CELL_PATTERN, "runs"),
        trace=sibling(CELL_PATTERN, "trace"),
    log:
        log_path("measure_cell", CELL_JOB),
    benchmark:
        benchmark_path("measure_cell", CELL_JOB)
    # Once an engine is warm, its cells go next: no other pair's warm-up evicts the host in between.
    priority: pair_priority(1)
    conda:
        engine_env
    resources:
        gpu=cell_gpus,
        runtime=60,
        mem_mb=16000,
    params:
        config=SETTINGS,
        settings=cell_settings,
        cell=cell_arguments,
    shell:
        "ctxenergy measure --config {params.config} --model {wildcards.model} --engine {wildcards.engine}"
        " --phase {wildcards.phase}{params.cell} --prompt {input.prompt}"
        " --warmup-prompt {input.warmup_prompt} --engine-host --out {output.cell} --progress-fd 3 3>&2 > {log} 2>&1"


# Only the cells not yet on disk, with their prompts and warm-ups. On a fresh checkout holding committed cells, a
# plain run would make the missing prompts and warm-ups and, because they are made in the same run, redo every
# cell that uses them; this target measures what is missing, after which a plain run redoes nothing.
rule missing_cells:
    input:
        missing_cell_paths(),
