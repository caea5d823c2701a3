"""The run's progress lines: one per finished cell with the run's count and remaining time, and the pages at the end."""

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from ctxenergy.config import load_config
from ctxenergy.grid import Cell
from ctxenergy.paths import REPO_ROOT
from ctxenergy.progress import PLAN, cell_line, cell_result, duration, finished_line, write_plan
from ctxenergy.settings import Settings
from ctxenergy.workflow_process import WORKFLOW_ENV, identity


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """A workflow folder whose Snakemake (this process) has planned four prefill cells and one engine load."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(WORKFLOW_ENV, identity())
    cfg = Settings.from_config(load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config/smoke.yaml"]))
    cells = [Cell("tiny-llama", "hf-sdpa", "prefill", n) for n in (64, 256, 1024, 4096)]
    jobs = [
        ("make_prompts", {"model": "tiny-llama", "length": "64"}),
        ("warmup_engine", {"model": "tiny-llama", "engine": "hf-eager"}),
        *(
            ("measure_cell", {"model": c.model, "engine": c.engine, "phase": c.phase, "cell": f"L{c.length}"})
            for c in cells
        ),
    ]
    write_plan(jobs)
    return cfg, cells


def touch(path, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    if mtime is not None:
        os.utime(path, (mtime, mtime))


def bench(job: str, seconds: float):
    """A Snakemake benchmark file of this run's folder (results/benchmarks/<rule>/<wildcards>.tsv)."""
    tsv = Path("results", "benchmarks", job + ".tsv")
    tsv.parent.mkdir(parents=True, exist_ok=True)
    tsv.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:{seconds:02.0f}\t50\n")


def test_a_cell_line_counts_the_run_and_estimates_what_is_left(run_dir):
    cfg, (l64, l256, l1024, l4096) = run_dir
    started = json.loads(PLAN.read_text())["started"]
    touch(l256.path, started - 100)  # measured by an earlier run, redone by this one (--forcerun): not done
    bench("measure_cell/tiny-llama/hf-sdpa/prefill/L256", 20)  # its earlier job time is its estimate
    touch(l4096.path)  # written by this run: done (its job has not printed its line yet)
    bench("warmup_engine/tiny-llama/hf-eager", 30)  # the engine load still to come
    summary = {"status": "ok", "flags": ["short_window"], "energy_per_run_j": [10.0, 10.2, 9.8]}
    line = cell_line(l64, summary, 12.0, cfg)
    # L1024 has no job time to estimate from: it takes this cell's 12 s
    assert line == (
        "ctxenergy cell 1/4 tiny-llama/hf-sdpa/prefill/L64: 10 [9.5, 10.5] J/run (flags short_window), "
        "12 s; ~62 s left for 2 cells, 1 of them at this cell's pace (no job time to estimate from)"
    )
    touch(l256.path)
    touch(l1024.path)
    touch(Path("results/warmup/tiny-llama/hf-eager.json"))
    assert line.startswith("ctxenergy cell ")  # not a "ctxenergy: " line, which is an error's or the run's end
    assert cell_line(l64, summary, 12.0, cfg).endswith("12 s; the run's last cell")


def _line_of(cell, cfg):
    return cell_line(cell, {"status": "ok", "flags": [], "energy_per_run_j": [1.0, 1.0]}, 1.0, cfg)


def test_cells_that_end_at_once_get_their_own_counts(run_dir):
    """Four jobs printing at the same moment (four processes): counts 1..4, each once."""
    cfg, cells = run_dir
    for c in cells:
        touch(c.path)
    ctx = multiprocessing.get_context("fork")  # forked: the settings travel without pickling
    go, lines = ctx.Event(), ctx.Queue()
    jobs = [ctx.Process(target=lambda c=c: (go.wait(), lines.put(_line_of(c, cfg)))) for c in cells]
    for job in jobs:
        job.start()
    go.set()
    counts = sorted(lines.get(timeout=30).split()[2] for _ in jobs)
    for job in jobs:
        job.join()
    assert counts == ["1/4", "2/4", "3/4", "4/4"]


def test_a_new_run_counts_from_one(run_dir):
    cfg, (l64, *_) = run_dir
    touch(l64.path)
    assert _line_of(l64, cfg).split()[2] == "1/4"
    write_plan([("measure_cell", {"model": "tiny-llama", "engine": "hf-sdpa", "phase": "prefill", "cell": "L64"})])
    assert _line_of(l64, cfg).split()[2] == "1/1"


def test_a_cell_whose_file_appears_late_with_an_older_time_gets_its_own_count(run_dir):
    """A cell's file keeps the time its temporary was written, not the time it was moved into place: a job that
    wrote first may move its file in after another job has printed its line (seen in a CI run as counts 1, 1)."""
    cfg, (l64, l256, l1024, l4096) = run_dir
    started = json.loads(PLAN.read_text())["started"]
    summary = {"status": "ok", "flags": [], "energy_per_run_j": [1.0, 1.0]}
    touch(l64.path, started + 2.0)
    first = cell_line(l64, summary, 1.0, cfg).split()[2]
    touch(l256.path, started + 1.0)  # written before L64's file, in place after L64's line
    second = cell_line(l256, summary, 1.0, cfg).split()[2]
    assert (first, second) == ("1/4", "2/4")
    assert cell_line(l64, summary, 1.0, cfg).split()[2] == "1/4"  # a cell printed twice keeps its place


def test_another_runs_plan_gives_the_cell_alone(run_dir, monkeypatch):
    cfg, cells = run_dir
    monkeypatch.setenv(WORKFLOW_ENV, "1:1")  # a job of another Snakemake than the one that wrote the plan
    summary = {"status": "ok", "flags": ["no_energy", "below_min_window"], "energy_per_run_j": [None, None]}
    assert cell_line(cells[0], summary, 3.0, cfg) == (
        "ctxenergy cell tiny-llama/hf-sdpa/prefill/L64: ok, energy not "
        "recorded (no energy counter on this host; flags "
        "below_min_window), 3 s"
    )


def test_a_status_is_one_line_with_its_reason():
    reason = "out of device memory: CUDA out of memory. Tried to allocate 39.00 GiB. GPU 0 has a total capacity " * 5
    text = cell_result({"status": "oom", "status_reason": reason, "flags": []})
    assert text.startswith("oom: out of device memory: CUDA out of memory.") and len(text) < 100
    assert duration(45) == "45 s" and duration(12 * 60) == "12 min" and duration(125 * 60) == "2 h 05 min"


def test_the_end_of_a_run_names_the_report_and_the_write_up(run_dir):
    assert "made by the default target" in finished_line()
    report = Path("results/report/report.html")
    paper = Path("results/paper/paper.html")
    touch(report)
    touch(paper, time.time() - 3600)  # an earlier run's
    line = finished_line()
    assert line == (
        f"ctxenergy: run finished; report {report.resolve()}; write-up {paper.resolve()} (not remade by this run)"
    )
