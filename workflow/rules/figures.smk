# Analysis and figures: derived tables from the table of cells, figures from the derived tables only, so that
# `snakemake --forcerun plot_figures` redraws every figure from cached Parquet without touching a measurement.
ANALYSIS_TABLES = [
    "per_cell",
    "slopes",
    "fits",
    "fit_residuals",
    "thresholds",
    "io_ratio",
    "engine_ratios",
    "claims",
    "table1",
    "traces",
    "trace_runs",
    "systematics",
    "board_pairs",
]
# The per-token cost model for estimators (docs/cost-model.md): a derived table, also written as CSV and JSON.
COST_MODEL = multiext("results/analysis/cost_model", ".parquet", ".csv", ".json")
FIGURES = [
    "energy_intensity",
    "io_energy",
    "phase_map",
    "power_traces",
    "achieved_throughput",
    "energy_fit",
]


rule analyze_cells:
    input:
        cells="results/cells.parquet",
        # the cells' own tables: power traces and per-window decode times (traces and runs sit beside each)
        tables=cell_paths(),
    output:
        tables=expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES),
        cost_model=COST_MODEL,
    log:
        "results/logs/analyze_cells.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        config=SETTINGS,
    shell:
        "ctxenergy analyze {input.cells} --cell-tables {input.tables} --config {params.config}"
        " --out {output.tables} {output.cost_model[0]} > {log} 2>&1"


rule plot_figures:
    input:
        expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES),
    output:
        report(
            "results/figures/energy_intensity.svg",
            caption="../report/energy_intensity.rst",
            category="Figures",
            labels={"figure": "energy intensity (paper Fig. 1)"},
        ),
        report(
            "results/figures/io_energy.svg",
            caption="../report/io_energy.rst",
            category="Figures",
            labels={"figure": "E_in and E_out (paper Fig. 2)"},
        ),
        report(
            "results/figures/phase_map.svg",
            caption="../report/phase_map.rst",
            category="Figures",
            labels={"figure": "phase map (paper Fig. 3)"},
        ),
        report(
            "results/figures/power_traces.svg",
            caption="../report/power_traces.rst",
            category="Figures",
            labels={"figure": "power traces"},
        ),
        report(
            "results/figures/achieved_throughput.svg",
            caption="../report/achieved_throughput.rst",
            category="Figures",
            labels={"figure": "achieved throughput vs peak"},
        ),
        report(
            "results/figures/energy_fit.svg",
            caption="../report/energy_fit.rst",
            category="Figures",
            labels={"figure": "E(L) fit and residuals"},
        ),
        expand("results/figures/{figure}.png", figure=FIGURES),
    log:
        "results/logs/plot_figures.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy figures {input} --out {output} > {log} 2>&1"
