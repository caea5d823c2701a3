# A user's spot check: the cells named in spot_check.cells, measured here into results/spot_check/cells (apart from
# results/cells, which may hold copies of the reference after a "continue" run: those would compare with themselves),
# against the reference cells; the table gives each difference with its interval and a verdict. It is written even
# when a cell differs.
from ctxenergy.paths import SPOT_CHECK_CELL_PATTERN, SPOT_CHECK_CELLS_DIR, SPOT_CHECK_TABLE


use rule measure_cell as measure_spot_cell with:
    output:
        cell=SPOT_CHECK_CELL_PATTERN,
        runs=sibling(SPOT_CHECK_CELL_PATTERN, "runs"),
        trace=sibling(SPOT_CHECK_CELL_PATTERN, "trace"),
    log:
        log_path("measure_spot_cell", CELL_JOB),
    benchmark:
        benchmark_path("measure_spot_cell", CELL_JOB)


rule spot_check:
    input:
        # the reference folder first: a missing one stops the run before any cell is measured
        reference=config["spot_check"]["reference"] or [],
        cells=expand(f"{SPOT_CHECK_CELLS_DIR}/{{cell}}.parquet", cell=config["spot_check"]["cells"]),
    output:
        SPOT_CHECK_TABLE,
    log:
        log_path("spot_check"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        cells=config["spot_check"]["cells"],
    shell:
        f"ctxenergy compare {{input.reference:q}} {SPOT_CHECK_CELLS_DIR} --cells {{params.cells:q}} --exit-zero"
        " --out {output}"
        " 2>&1 | tee {log}"
