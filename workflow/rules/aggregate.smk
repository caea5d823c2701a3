rule aggregate_cells:
    input:
        cell_paths(),
    output:
        CELLS_TABLE,
    log:
        log_path("aggregate_cells"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        config=SETTINGS,
        # a changed param reruns the table, its missing cells made first: a deleted cell is measured again
        cells_missing=missing_cell_files(),
    shell:
        "ctxenergy aggregate {input} --config {params.config} --out {output} > {log} 2>&1"
