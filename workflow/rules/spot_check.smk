# A user's spot check: the cells named in spot_check.cells, measured here into results/spot_check/cells (apart from
# results/cells, which may hold copies of the reference after a "continue" run: those would compare with themselves),
# against the reference cells; the table gives each difference with its interval and a verdict. It is written even
# when a cell differs.
use rule measure_cell as measure_spot_cell with:
    output:
        cell="results/spot_check/cells/{model}/{engine}/{phase}/{cell}.parquet",
        runs="results/spot_check/cells/{model}/{engine}/{phase}/{cell}.runs.parquet",
        trace="results/spot_check/cells/{model}/{engine}/{phase}/{cell}.trace.parquet",
    log:
        "results/logs/measure_spot_cell/{model}/{engine}/{phase}/{cell}.log",
    benchmark:
        "results/benchmarks/measure_spot_cell/{model}/{engine}/{phase}/{cell}.tsv"


rule spot_check:
    input:
        # the reference folder first: a missing one stops the run before any cell is measured
        reference=config["spot_check"]["reference"] or [],
        cells=expand("results/spot_check/cells/{cell}.parquet", cell=config["spot_check"]["cells"]),
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
        "ctxenergy compare {input.reference:q} results/spot_check/cells --cells {params.cells:q} --exit-zero"
        " --out {output}"
        " 2>&1 | tee {log}"
