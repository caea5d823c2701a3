REPORT_TARGETS = [
    "results/report/report.html",
    "results/paper/paper.html",
    "results/paper/paper.md",
    "results/provenance.md",
]


rule write_report:
    input:
        tables=expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES),
        figures=expand("results/figures/{figure}.png", figure=FIGURE_NAMES),
    output:
        report(
            "results/report/report.html",
            caption="../report/report.rst",
            category="Report",
            labels={"document": "ctxenergy report"},
        ),
    log:
        "results/logs/write_report.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy report --tables {input.tables} --figures {input.figures} --out {output} > {log} 2>&1"


rule write_paper:
    input:
        tables=expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES),
        figures=expand("results/figures/{figure}.png", figure=FIGURE_NAMES),
        template="paper/template.md",
    output:
        html=report(
            "results/paper/paper.html",
            caption="../report/paper.rst",
            category="Report",
            labels={"document": "reproduction write-up"},
        ),
        markdown="results/paper/paper.md",
    log:
        "results/logs/write_paper.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy paper --tables {input.tables} --figures {input.figures} --template {input.template}"
        " --out {output.html} --markdown {output.markdown} > {log} 2>&1"


rule write_provenance:
    input:
        cells="results/cells.parquet",
    output:
        report(
            "results/provenance.md",
            caption="../report/provenance.rst",
            category="Report",
            labels={"document": "provenance"},
        ),
    log:
        "results/logs/write_provenance.log",
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
        tables=expand("results/analysis/{table}.parquet", table=ANALYSIS_TABLES) + COST_MODEL,
        figures=expand("results/figures/{figure}.{ext}", figure=FIGURE_NAMES, ext=["png", "svg"]),
        report="results/report/report.html",
        paper=["results/paper/paper.html", "results/paper/paper.md"],
        provenance="results/provenance.md",
    output:
        directory(config["publish_to"]),
    log:
        "results/logs/publish_outputs.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy publish {input} --out {output} > {log} 2>&1"


# Not part of the default target: it needs a headless Chromium (Debian: apt-get install chromium).
rule paper_pdf:
    input:
        "results/paper/paper.html",
    output:
        "results/paper/paper.pdf",
    log:
        "results/logs/paper_pdf.log",
    localrule: True
    conda:
        "../../envs/analysis.yaml"
    shell:
        "ctxenergy pdf {input} --out {output} > {log} 2>&1"
