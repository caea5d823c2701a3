# How right each way of reading GPU energy is over short windows, on the GPU a job gets: not part of `all`.
# Run it with: snakemake --cores 1 --resources gpu=1 results/calibration/calibration.csv


rule calibrate:
    output:
        table="results/calibration/calibration.csv",
        windows="results/calibration/calibration.windows.csv",
    log:
        "results/logs/calibrate.log",
    benchmark:
        "results/benchmarks/calibrate.tsv"
    conda:
        "../../envs/hf.yaml"
    resources:
        gpu=1,
        runtime=15,
    shell:
        "ctxenergy calibrate --out {output.table} --windows-out {output.windows} > {log} 2>&1"
