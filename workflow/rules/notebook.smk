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
        log_path("execute_notebook"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        f"ctxenergy notebook {{input.notebook}} --analysis {ANALYSIS_DIR} --out {{output}} > {{log}} 2>&1"
