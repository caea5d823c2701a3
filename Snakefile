# ctxenergy: the energy of input and output tokens as context grows.
# Results layout (src/ctxenergy/paths.py, from which the rules take their paths):
#   results/prompts/{model}/L{length}.npy (+ .warmup.npy)     exact-length token ids
#   results/weights/{model}/                                   shared random weights (random_weights: shared)
#   results/warmup/{model}/{engine}.json                       engine loads, start-up time
#   results/cells/{model}/{engine}/{phase}/L{length}.parquet   one cell (+ .runs/.trace.parquet); batched and
#     engine-variant cells: .../{phase}/[V-{variant}/][B{batch}/]L{length}.parquet (docs/serving.md)
#   results/cells.parquet                                      all cells, one row each
#   results/analysis/, results/figures/, results/tables/, results/report/, results/paper/, results/notebooks/
from snakemake.utils import min_version

min_version("9.20.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/measure.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/calibrate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/notebook.smk"
include: "workflow/rules/spot_check.smk"


onstart:
    exit_unless_device_usable()
    plan_progress()


# Engine hosts outlive their jobs by design; the workflow's end is the end of their use.
onsuccess:
    stop_engine_hosts()
    print_finished()


onerror:
    stop_engine_hosts()
    print(failed_jobs_line(log), file=sys.stderr)


rule all:
    default_target: True
    input:
        final_outputs(),
