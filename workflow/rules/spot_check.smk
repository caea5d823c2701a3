# A user's spot check: the cells named in spot_check.cells, measured here (results/cells), against the reference
# cells; the table gives each difference with its interval and a verdict. It is written even when a cell differs.
rule spot_check:
    input:
        # the reference folder first: a missing one stops the run before any cell is measured
        reference=config["spot_check"]["reference"] or [],
        cells=expand("results/cells/{cell}.parquet", cell=config["spot_check"]["cells"]),
    output:
        "results/spot_check.csv",
    log:
        "results/logs/spot_check.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        cells=config["spot_check"]["cells"],
    shell:
        "ctxenergy compare {input.reference:q} results/cells --cells {params.cells:q} --exit-zero --out {output}"
        " 2>&1 | tee {log}"
