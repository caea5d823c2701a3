# Analysis and figures: derived tables from the table of cells, figures and pages of the key tables from the derived
# tables only, so that `snakemake --forcerun plot_figures` redraws every figure from cached Parquet without touching
# a measurement. The derived tables, the figures and the table pages are listed once, in the package
# (ctxenergy.outputs.catalog).
from ctxenergy.outputs.catalog import (
    TABLE_PAGES,
    analysis_paths,
    analysis_tables,
    figure_paths,
    figures,
    table_page_paths,
    wants_serving,
)
from ctxenergy.paths import ANALYSIS_DIR, FIGURES_DIR, TABLES_DIR

# The serving table and figures only where the grid has a batch axis or engine variants: a batch-1 grid's outputs
# stay as they were.
SERVING = wants_serving(STUDY)
ANALYSIS_TABLES = analysis_tables(SERVING)
FIGURES = figures(SERVING)
ANALYSIS_TABLE_PATHS = analysis_paths(serving=SERVING)
FIGURE_PNGS = figure_paths("png", serving=SERVING)
FIGURE_SVGS = figure_paths("svg", serving=SERVING)
# The key tables as HTML pages: the Snakemake report shows them, where it offers the Parquet only for download.
TABLE_PAGE_PATHS = table_page_paths()

# The per-token cost model for estimators (docs/cost-model.md): a derived table, also written as CSV and JSON.
COST_MODEL = multiext(f"{ANALYSIS_DIR}/cost_model", ".parquet", ".csv", ".json")


rule analyze_cells:
    input:
        cells=CELLS_TABLE,
        # the cells' own tables: power traces and per-window decode times (traces and runs sit beside each)
        tables=cell_paths(),
    output:
        tables=[
            report(
                f"{ANALYSIS_DIR}/{table}.parquet",
                caption="../report/analysis_table.rst",
                category="Derived tables",
                labels={"table": table},
            )
            for table in ANALYSIS_TABLES
        ],
        # the CSV a report item too; report() flags a copy, so that COST_MODEL's strings stay as other rules use them
        cost_model=[
            (
                report(
                    str(path),
                    caption="../report/cost_model_csv.rst",
                    category="Key tables",
                    subcategory="for programs (CSV)",
                    labels={"table": "cost model"},
                )
                if path.endswith(".csv")
                else path
            )
            for path in COST_MODEL
        ],
    log:
        log_path("analyze_cells"),
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
        ANALYSIS_TABLE_PATHS,
    output:
        [
            report(
                f"{FIGURES_DIR}/{figure.name}.svg",
                caption=f"../report/{figure.name}.rst",
                category="Figures",
                labels={"figure": figure.label},
            )
            for figure in FIGURES
        ],
        FIGURE_PNGS,
    log:
        log_path("plot_figures"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy figures {input} --out {output} > {log} 2>&1"


rule write_table_pages:
    input:
        [f"{ANALYSIS_DIR}/{page.name}.parquet" for page in TABLE_PAGES],
    output:
        [
            report(
                f"{TABLES_DIR}/{page.name}.html",
                caption=f"../report/table_{page.name}.rst",
                category="Key tables",
                subcategory="to read (HTML)",
                labels={"table": page.label},
            )
            for page in TABLE_PAGES
        ],
    log:
        log_path("write_table_pages"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy tables {input} --out {output} > {log} 2>&1"
