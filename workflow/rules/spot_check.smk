# A user's spot check: the cells named in spot_check.cells, measured here (results/cells), against the reference
# cells; the table gives each difference with its interval and a verdict. It is written even when a cell differs.
rule spot_check:
    input:
        expand("results/cells/{cell}.parquet", cell=config["spot_check"]["cells"]),
    output:
        "results/spot_check.csv",
    log:
        "results/logs/spot_check.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        reference=config["spot_check"]["reference"] or "",
        cells=config["spot_check"]["cells"],
    shell:
        "ctxenergy compare {params.reference:q} results/cells --cells {params.cells:q} --exit-zero --out {output}"
        " 2>&1 | tee {log}"
