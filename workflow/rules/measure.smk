# Cell jobs measure on an engine host that the (model, engine)'s warm-up job starts and that keeps the engine
# loaded between cells (src/ctxenergy/engine_host.py); every cell is still its own job and output.


rule warmup_engine:
    input:
        shared_weights_input,
    output:
        "results/warmup/{model}/{engine}.json",
    log:
        "results/logs/warmup_engine/{model}/{engine}.log",
    benchmark:
        "results/benchmarks/warmup_engine/{model}/{engine}.tsv"
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
        "results/warmup/{model}/{engine}/V-{variant}.json",
    log:
        "results/logs/warmup_engine/{model}/{engine}/V-{variant}.log",
    benchmark:
        "results/benchmarks/warmup_engine/{model}/{engine}/V-{variant}.tsv"


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
        "results/logs/measure_cell/{model}/{engine}/{phase}/{cell}.log",
    benchmark:
        "results/benchmarks/measure_cell/{model}/{engine}/{phase}/{cell}.tsv"
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
