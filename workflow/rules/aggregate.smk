rule aggregate_cells:
    input:
        cell_paths(),
    output:
        "results/cells.parquet",
    log:
        "results/logs/aggregate_cells.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        config=SETTINGS,
    shell:
        "ctxenergy aggregate {input} --config {params.config} --out {output} > {log} 2>&1"
