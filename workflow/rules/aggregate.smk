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
    shell:
        "ctxenergy aggregate {input} --out {output} > {log} 2>&1"
