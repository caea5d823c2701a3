# The analysis notebook, executed on the committed campaign's tables and this run's (its last section): a notebook
# that no longer runs fails the workflow.
rule execute_notebook:
    input:
        notebook="notebooks/explore.ipynb",
        tables=ANALYSIS_TABLE_PATHS,
        cost_model=COST_MODEL,
    output:
        NOTEBOOKS_DIR / "explore.ipynb",
    log:
        "results/logs/execute_notebook.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy notebook {input.notebook} --analysis results/analysis --out {output} > {log} 2>&1"
