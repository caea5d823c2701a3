# How right each way of reading GPU energy is over short windows, on the GPU a job gets: not part of `all`.
# Run it with: snakemake --cores 1 --resources gpu=1 results/calibration/calibration.csv
from ctxenergy.paths import CALIBRATION_TABLE, CALIBRATION_WINDOWS


rule calibrate:
    output:
        table=CALIBRATION_TABLE,
        windows=CALIBRATION_WINDOWS,
    log:
        log_path("calibrate"),
    benchmark:
        benchmark_path("calibrate")
    conda:
        "../../envs/hf.yaml"
    resources:
        gpu=1,
        runtime=15,
    shell:
        "ctxenergy calibrate --out {output.table} --windows-out {output.windows} > {log} 2>&1"
