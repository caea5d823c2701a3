from ctxenergy.paths import PAPER, PAPER_MARKDOWN, PAPER_PDF, PROVENANCE, REPORT

REPORT_TARGETS = [REPORT, PAPER, PAPER_MARKDOWN, PROVENANCE]


rule write_report:
    input:
        tables=ANALYSIS_TABLE_PATHS,
        figures=FIGURE_PNGS,
    output:
        report(
            REPORT,
            caption="../report/report.rst",
            category="Report",
            labels={"document": "ctxenergy report"},
        ),
    log:
        log_path("write_report"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy report --tables {input.tables} --figures {input.figures} --out {output} > {log} 2>&1"


rule write_paper:
    input:
        tables=ANALYSIS_TABLE_PATHS,
        figures=FIGURE_PNGS,
        template="paper/template.md",
    output:
        html=report(
            PAPER,
            caption="../report/paper.rst",
            category="Report",
            labels={"document": "reproduction write-up"},
        ),
        markdown=PAPER_MARKDOWN,
    log:
        log_path("write_paper"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy paper --tables {input.tables} --figures {input.figures} --template {input.template}"
        " --out {output.html} --markdown {output.markdown} > {log} 2>&1"


rule write_provenance:
    input:
        cells=CELLS_TABLE,
    output:
        report(
            PROVENANCE,
            caption="../report/provenance.rst",
            category="Report",
            labels={"document": "provenance"},
        ),
    log:
        log_path("write_provenance"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    params:
        jobs=provenance_jobs_dir(),
        logs=provenance_logs(),
    shell:
        "ctxenergy provenance --cells {input.cells} --jobs {params.jobs:q} --logs {params.logs:q}"
        " --out {output} > {log} 2>&1"


# Not part of the default target: the analysis outputs copied into a folder of their own (config publish_to), in
# the layout of results/ (paper.md links ../figures/), to be committed beside reference cells (ctxenergy publish).
rule publish_outputs:
    input:
        tables=ANALYSIS_TABLE_PATHS + COST_MODEL,
        figures=FIGURE_PNGS + FIGURE_SVGS,
        table_pages=TABLE_PAGE_PATHS,
        report=REPORT,
        paper=[PAPER, PAPER_MARKDOWN],
        provenance=PROVENANCE,
    output:
        directory(config["publish_to"]),
    log:
        log_path("publish_outputs"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy publish {input} --out {output} > {log} 2>&1"


# Not part of the default target: it needs a headless Chromium (Debian: apt-get install chromium).
rule paper_pdf:
    input:
        PAPER,
    output:
        PAPER_PDF,
    log:
        log_path("paper_pdf"),
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy pdf {input} --out {output} > {log} 2>&1"
