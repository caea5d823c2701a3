"""The results layout is written once, in ctxenergy.paths: the rules and the package build their paths from it."""

import io
import tokenize

from conftest import REPO

from ctxenergy.grid import Cell, prompt_path, warmup_path
from ctxenergy.paths import CELL_JOB, WARMUP_VARIANT_JOB, benchmark_path, log_path


def test_package_paths_keep_the_results_layout():
    assert prompt_path("m", 256, warmup=True).as_posix() == "results/prompts/m/L256.warmup.npy"
    assert prompt_path("m", 256, True, batch_size=4).as_posix() == "results/prompts/m/B4/L256.warmup.npy"
    assert warmup_path("m", "vllm").as_posix() == "results/warmup/m/vllm.json"
    assert warmup_path("m", "vllm", "chunked").as_posix() == "results/warmup/m/vllm/V-chunked.json"
    cell = Cell("m", "vllm", "prefill", 1024, 4, "chunked")
    assert cell.path.as_posix() == "results/cells/m/vllm/prefill/V-chunked/B4/L1024.parquet"


def test_job_logs_and_benchmarks_keep_their_wildcards():
    assert log_path("aggregate_cells") == "results/logs/aggregate_cells.log"
    assert log_path("measure_cell", CELL_JOB) == "results/logs/measure_cell/{model}/{engine}/{phase}/{cell}.log"
    assert benchmark_path("calibrate") == "results/benchmarks/calibrate.tsv"
    assert (
        benchmark_path("warmup_engine", WARMUP_VARIANT_JOB)
        == "results/benchmarks/warmup_engine/{model}/{engine}/V-{variant}.tsv"
    )


def test_rules_write_out_no_results_path():
    """A path under results/ in a rule's string (an output, a log, a shell command) would be a second copy of the
    layout; comments and docstrings may still name one."""
    for smk in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        tokens = tokenize.generate_tokens(io.StringIO(smk.read_text()).readline)
        for token in tokens:
            literal = token.type == tokenize.STRING and not token.string.lstrip("rbfu").startswith(('"""', "'''"))
            assert not (literal and "results/" in token.string), f"{smk.name}:{token.start[0]}: {token.string}"
