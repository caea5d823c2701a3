"""The workflow through real Snakemake, in a copy of the repository (results/ of the checkout is never touched)."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, copy_repo

pytestmark = pytest.mark.workflow


SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def smk(args, cwd, check=True, timeout=600):
    proc = subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[-1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke run shared by the tests below (it is the slow part)."""
    dst = copy_repo(tmp_path_factory.mktemp("smoke") / "repo")
    t0 = time.monotonic()
    proc = smk(["--cores", "2", "--configfile", "config/smoke.yaml"], dst)
    return dst, time.monotonic() - t0, proc


def test_lint_is_clean():
    proc = smk(["--lint"], REPO, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "workflow is in a good condition" in proc.stdout + proc.stderr


def test_dry_run_of_the_default_grid_lists_one_job_per_cell():
    proc = smk(["-n", "--cores", "1", "--resources", "gpu=1"], REPO)
    counts = job_counts(proc.stdout)
    assert counts["measure_cell"] == 2 * 2 * 2 * 11
    assert counts["warmup_engine"] == 4 and counts["make_prompts"] == 22


def test_default_config_without_gpu_fails_fast_with_one_line(repo_copy):
    if Path("/dev/nvidia0").exists():
        pytest.skip("this host has a GPU")  # CI and the development machines have none
    t0 = time.monotonic()
    proc = smk(["--cores", "1"], repo_copy, check=False)
    assert proc.returncode != 0 and time.monotonic() - t0 < 30
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if l.startswith("ctxenergy:")]
    assert len(lines) == 1 and "config/smoke.yaml" in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (repo_copy / "results" / "cells").exists()


def test_bad_config_fails_at_parse_time_with_one_line(repo_copy):
    (repo_copy / "bad.yaml").write_text("engines: [hf-sdpa, vlm]\n")
    proc = smk(["-n", "--configfile", "bad.yaml"], repo_copy, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ctxenergy: config: engines[1] 'vlm' is not a known engine" in out
    assert "Traceback" not in out


def test_smoke_config_runs_end_to_end_on_cpu(smoke_run):
    dst, seconds, proc = smoke_run
    assert seconds < 180, f"smoke run took {seconds:.0f} s (target < 3 min on 2 cores)"
    cells = pd.read_parquet(dst / "results" / "cells.parquet")
    assert len(cells) == 8 and set(cells["status"]) == {"ok"}
    assert cells["flags"].str.contains("no_energy").all()  # no RAPL here: energy is missing, never invented
    assert cells["energy_per_run_j"].isna().all()
    assert (cells["tokenizer"] == "bytes").all() and (cells["weights"] == "random").all()
    gen = cells[cells["phase"] == "generate"]
    assert (gen["output_tokens"] == 8).all()
    for cell in (dst / "results" / "cells").rglob("L*.parquet"):
        assert not cell.name.startswith(".")
    provenance = (dst / "results" / "provenance.md").read_text()  # part of the default target
    assert "8 cells: 8 ok" in provenance and "measure_cell: 8 jobs" in provenance
    # the notebook ran on the committed tables and on this run's, and the cost model was exported (empty: no energy)
    executed = (dst / "results" / "notebooks" / "explore.ipynb").read_text()
    assert "by hand: 89.2%" in executed and "tiny-llama" in executed
    assert all((dst / "results" / "analysis" / f"cost_model.{ext}").exists() for ext in ("parquet", "csv", "json"))


def test_the_console_shows_each_cell_with_the_runs_remaining_time_and_the_pages_at_the_end(smoke_run):
    """What someone running the workflow sees besides Snakemake's "N of M steps" (ctxenergy.progress)."""
    dst, _, proc = smoke_run
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if line.startswith("ctxenergy cell ")]
    assert len(lines) == 8, out[-3000:]
    counts = [int(re.match(r"ctxenergy cell (\d)/8 ", line).group(1)) for line in lines]
    assert sorted(counts) == list(range(1, 9))  # two cells that end at once still get their own counts
    assert {re.search(r"tiny-llama/hf-\w+/\w+/L\d+", line).group() for line in lines} == {
        f"tiny-llama/{e}/{p}/L{n}" for e in ("hf-eager", "hf-sdpa") for p in ("prefill", "generate") for n in (64, 256)
    }
    assert all(": ok, energy not recorded (no energy counter on this host" in line for line in lines)
    assert any(re.search(r"\), \d+ s; ~\d+ s left for \d cells", line) for line in lines)
    assert any(line.endswith(" s; the run's last cell") for line in lines)
    report, paper = (dst / "results" / "report" / "report.html").resolve(), (dst / "results" / "paper" / "paper.html")
    assert f"ctxenergy: run finished; report {report}; write-up {paper.resolve()}\n" in out


def test_cells_share_one_engine_host_per_engine_which_the_workflow_stops(smoke_run):
    from ctxenergy.tables import read_cell

    dst, _, _ = smoke_run
    hosts = {}
    for path in (dst / "results" / "cells").rglob("L*[0-9].parquet"):
        meta = read_cell(path)[3]
        hosts.setdefault(meta["engine"], set()).add(meta["engine_host"]["pid"])
        assert meta["engine_host"]["load_s"] > 0
    # Each engine's 4 cells ran on one or two hosts (--cores 2 may run two cells of one engine side by side).
    assert set(hosts) == {"hf-eager", "hf-sdpa"} and all(1 <= len(p) <= 2 for p in hosts.values())
    assert not list((dst / "results" / "engine-hosts").glob("*.sock"))  # onsuccess stopped them


def test_each_cell_records_the_attention_kernel_that_ran(smoke_run):
    """hf-sdpa's kernel is torch's choice (here on a CPU); eager attention calls no SDPA kernel."""
    from ctxenergy.tables import read_cell

    dst, _, _ = smoke_run
    for path in (dst / "results" / "cells").rglob("L*[0-9].parquet"):
        meta = read_cell(path)[3]
        phases = {"prefill"} if meta["phase"] == "prefill" else {"prefill", "decode"}
        expected = {} if meta["engine"] == "hf-eager" else dict.fromkeys(phases, "flash_attention")
        assert meta["attention_kernels"] == expected, (path, meta["attention_kernels"])
    # carried through the table of cells into the write-up's stack line, per engine
    paper = (dst / "results" / "paper" / "paper.md").read_text()
    assert "hf-eager and hf-sdpa (attention kernel: prefill flash_attention; decode flash_attention)" in paper
    report = (dst / "results" / "report" / "report.html").read_text()
    hardware = report[report.index("<h2>Hardware and versions") :]
    assert "attention kernel</th>" in hardware and "prefill flash_attention; decode flash_attention" in hardware


def test_rerunning_one_cell_touches_only_that_cell(smoke_run):
    dst, _, _ = smoke_run
    target = "results/cells/tiny-llama/hf-sdpa/prefill/L64.parquet"
    proc = smk(["-n", target, "--forcerun", target, "--configfile", "config/smoke.yaml"], dst)
    assert job_counts(proc.stdout) == {"measure_cell": 1, "total": 1}
    proc = smk(["-n", "--configfile", "config/smoke.yaml", "--forcerun", "aggregate_cells"], dst)
    counts = job_counts(proc.stdout)
    assert "measure_cell" not in counts and counts["aggregate_cells"] == 1


def test_committed_cells_survive_a_fresh_checkout_that_adds_a_length(smoke_run, tmp_path):
    """Continuing a campaign elsewhere: only the cells are carried (no prompts, warm-ups or Snakemake metadata);
    adding a length makes new prompts and warm-ups, and must measure only the new cells."""
    dst, _, _ = smoke_run
    fresh = copy_repo(tmp_path / "fresh")
    shutil.copytree(dst / "results" / "cells", fresh / "results" / "cells")
    (fresh / "more.yaml").write_text("lengths: [64, 128, 256]\n")
    # And one engine's cells at L=64 were never measured: the L=64 prompt is made again, hf-sdpa's cells there stay.
    for phase in ("prefill", "generate"):
        for f in (fresh / "results" / "cells" / "tiny-llama" / "hf-eager" / phase).glob("L64.*"):
            f.unlink()
    proc = smk(["missing_cells", "--cores", "2", "--configfile", "config/smoke.yaml", "more.yaml"], fresh)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("measure_cell") == 6, proc.stdout  # 2 engines x 2 phases at L=128, hf-eager at L=64
    assert counts.get("make_prompts") == 2 and counts.get("warmup_engine") == 2
    proc = smk(["-n", "--configfile", "config/smoke.yaml", "more.yaml"], fresh)
    counts = job_counts(proc.stdout)
    assert "measure_cell" not in counts and counts.get("aggregate_cells") == 1, proc.stdout


def test_adding_a_length_measures_only_its_cells(smoke_run, tmp_path):
    """The jobs' settings snapshot is named by its content, so one more length gives another snapshot path: that
    path must not count as a changed param of the cells already measured."""
    dst = shutil.copytree(smoke_run[0], tmp_path / "repo", symlinks=True)
    (dst / "more.yaml").write_text("lengths: [64, 128, 256]\n")
    counts = job_counts(smk(["-n", "--configfile", "config/smoke.yaml", "more.yaml"], dst).stdout)
    assert counts.get("measure_cell") == 4 and counts.get("make_prompts") == 1, counts  # L=128 only


def test_missing_cells_under_a_budget_plans_only_the_cells_that_fit(repo_copy):
    """Continuing the campaign on GPU time that ends at a fixed hour: `budget_s` picks the missing cells whose
    estimated job times fit, so that none is cut off by the limit (a dry run: no GPU needed)."""
    cells = REPO / "data" / "reference" / "nvidia-h200" / "campaign" / "cells"
    shutil.copytree(cells, repo_copy / "results" / "cells")
    # hf-paged is complete in the campaign (vLLM, left, is not installed here): half of it is made missing again
    gone = repo_copy / "results" / "cells" / "qwen2-7b" / "hf-paged"
    missing = len(list(gone.glob("*/L*[0-9].parquet")))
    shutil.rmtree(gone)
    args = [
        "missing_cells",
        "-n",
        "--cores",
        "1",
        "--configfile",
        "config/campaign.yaml",
        "--config",
        'engines=["hf-paged"]',
    ]
    jobs = [str(REPO / "data" / "reference" / "nvidia-h200" / d / "jobs") for d in ("campaign", "engines-h200")]
    proc = smk(args + ["budget_s=300", f"job_times={jobs}".replace("'", '"')], repo_copy)
    line = [x for x in proc.stderr.splitlines() if x.startswith("ctxenergy: budget 300 s: ")]
    assert len(line) == 1, proc.stderr
    chosen = int(re.search(rf": (\d+) of {missing} missing cells", line[0]).group(1))
    assert 0 < chosen < missing and job_counts(proc.stdout)["measure_cell"] == chosen, proc.stdout
    everything = job_counts(smk(args, repo_copy).stdout)["measure_cell"]
    assert everything == missing


def processes_in(directory: Path) -> list[int]:
    """PIDs of the processes whose working directory is `directory` (the workflow's jobs and engine hosts)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == directory:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


# Flags that follow the host's timing on a CPU (a window a little shorter than min_window_s), not the run's structure.
TIMING_FLAGS = {"below_min_window", "short_window"}


def cell_structure(cells: pd.DataFrame) -> list:
    columns = ["cell_id", "status", "n_windows", "output_tokens"]
    rows = cells.sort_values("cell_id")
    flags = [sorted(set(str(f).split(",")) - TIMING_FLAGS - {""}) for f in rows["flags"]]
    return [[*values, f] for values, f in zip(rows[columns].values.tolist(), flags)]


def test_a_run_killed_mid_cell_resumes_with_the_same_command(smoke_run, tmp_path):
    """kill -9 of Snakemake while a cell is measured: the cell's job and its engine host stop with it (nothing is
    written after the kill), and the same command again finishes the grid as the uninterrupted run did."""
    dst = copy_repo(tmp_path / "repo").resolve()
    command = ["--cores", "1", "--configfile", "config/smoke.yaml"]
    run = subprocess.Popen(SNAKEMAKE + command, cwd=dst, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list((dst / "results" / "logs").glob("measure_cell/*/*/*/*.log")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # inside the cell now
    run.kill()
    run.wait()
    written = lambda: sorted((dst / "results" / "cells").rglob("*.parquet"))  # noqa: E731
    deadline = time.monotonic() + 10
    while processes_in(dst) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_in(dst) == [], "a job or engine host outlived the killed Snakemake"
    at_kill = written()
    time.sleep(3.0)
    assert written() == at_kill
    proc = smk(command, dst)
    assert "ctxenergy: resuming a run that was killed part-way (stale lock" in proc.stderr
    assert cell_structure(pd.read_parquet(dst / "results" / "cells.parquet")) == cell_structure(
        pd.read_parquet(smoke_run[0] / "results" / "cells.parquet")
    )
    assert processes_in(dst) == []


def test_nothing_to_do_after_a_complete_run(smoke_run):
    dst, _, _ = smoke_run
    proc = smk(["-n", "--configfile", "config/smoke.yaml"], dst)
    assert "Nothing to be done" in proc.stdout + proc.stderr


@pytest.mark.parametrize("deleted", ["L64.parquet", "L64.runs.parquet"])
def test_a_cell_deleted_after_a_run_is_measured_again_and_its_row_rebuilt(smoke_run, tmp_path, deleted):
    """Snakemake does not remake a missing intermediate file whose consumer is up to date: a deleted cell stayed a
    row of results/cells.parquet while `snakemake` said "Nothing to be done"."""
    dst = shutil.copytree(smoke_run[0], tmp_path / "repo", symlinks=True)
    (dst / "results" / "cells" / "tiny-llama" / "hf-sdpa" / "prefill" / deleted).unlink()
    counts = job_counts(smk(["-n", "--configfile", "config/smoke.yaml"], dst).stdout)
    assert counts.get("measure_cell") == 1 and counts.get("aggregate_cells") == 1, counts


def test_cli_measure_without_gpu_is_one_line(repo_copy):
    if Path("/dev/nvidia0").exists():
        pytest.skip("this host has a GPU")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ctxenergy",
            "measure",
            "--model",
            "llama-3.1-8b",
            "--engine",
            "hf-sdpa",
            "--phase",
            "prefill",
            "--length",
            "256",
        ],
        cwd=repo_copy,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("ctxenergy: ") and "smoke.yaml" in proc.stderr
    assert not (repo_copy / "results" / "cells").exists()


def test_one_engine_pair_at_a_time_on_one_gpu_slot(tmp_path):
    """With one job at a time, Snakemake runs a (model, engine)'s warm-up and all its cells before the next pair's
    warm-up: every switch of pair would restart the engine host (a model load, minutes for vLLM)."""
    dst = copy_repo(tmp_path / "repo")
    (dst / "order.yaml").write_text(
        "lengths: [64, 128]\ngenerate_tokens: 2\n"
        "measure: {repeats: 2, min_window_s: 0.02, idle_s: 0.02, cooldown_s: 0.0, max_runs_per_window: 4}\n"
    )
    proc = smk(["missing_cells", "--cores", "1", "--configfile", "config/smoke.yaml", "order.yaml"], dst)
    jobs = re.findall(r"^(?:local)?rule (\w+):.*?^\s+wildcards: ([^\n]*)", proc.stdout + proc.stderr, re.M | re.S)
    gpu_jobs = [
        (rule, re.search(r"engine=([\w-]+)", wc).group(1))
        for rule, wc in jobs
        if rule in ("warmup_engine", "measure_cell")
    ]
    assert [e for _, e in gpu_jobs] == ["hf-eager"] * 5 + ["hf-sdpa"] * 5, gpu_jobs
    assert gpu_jobs[0][0] == gpu_jobs[5][0] == "warmup_engine"


def test_published_outputs_of_cached_cells_with_their_provenance(repo_copy):
    campaign = REPO / "data" / "reference" / "nvidia-h200" / "campaign"
    logs = sorted((REPO / "docs" / "gpu-runs").glob("*-campaign-*.log"))
    (repo_copy / "docs" / "gpu-runs").mkdir(parents=True, exist_ok=True)
    for log in logs:  # config/campaign.yaml names the committed logs of its runs
        shutil.copy2(log, repo_copy / "docs" / "gpu-runs" / log.name)
    smk(
        [
            "publish_outputs",
            "--cores",
            "1",
            "--configfile",
            "config/campaign.yaml",
            "--config",
            f"cells_source={campaign / 'cells'}",
            "publish_to=published",
        ],
        repo_copy,
    )
    out = repo_copy / "published"
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == {
        "analysis",
        "figures",
        "report",
        "paper",
        "tables",
        "provenance.md",
    }
    assert (out / "analysis" / "cost_model.json").exists()  # the estimators' export is published with the tables
    assert (out / "report" / "report.html").stat().st_size > 0 and (out / "figures" / "energy_fit.svg").exists()
    assert "](../figures/energy_intensity.png)" in (out / "paper" / "paper.md").read_text()  # links still resolve
    text = (out / "provenance.md").read_text()
    n_cells = len(pd.read_parquet(campaign / "cells.parquet"))
    assert f"measure_cell: {n_cells} jobs" in text and "warmup_engine: " in text  # the jobs kept beside the cells
    assert text.count("--configfile config/campaign.yaml") == len(logs) >= 5
    # what is committed beside the cells is what they regenerate: every derived table, the write-up, the figures
    committed = campaign / "outputs"
    for table in sorted((committed / "analysis").glob("*.parquet")):
        pd.testing.assert_frame_equal(pd.read_parquet(out / "analysis" / table.name), pd.read_parquet(table))
    assert {p.name for p in (out / "analysis").iterdir()} == {p.name for p in (committed / "analysis").iterdir()}
    assert (out / "paper" / "paper.md").read_text() == (committed / "paper" / "paper.md").read_text()
    assert {p.name for p in (out / "figures").iterdir()} == {p.name for p in (committed / "figures").iterdir()}
    assert {p.name for p in (out / "tables").iterdir()} == {p.name for p in (committed / "tables").iterdir()}


def test_spot_check_measures_the_named_cells_and_compares_them(smoke_run, repo_copy):
    reference = repo_copy.parent / "reference-cells"
    shutil.copytree(smoke_run[0] / "results" / "cells", reference)
    # results/cells holding copies of the reference (as after a "continue" run) must not stand in for a remeasurement
    shutil.copytree(reference, repo_copy / "results" / "cells")
    spot = f'spot_check={{"reference": "{reference}", "cells": ["tiny-llama/hf-sdpa/prefill/L64"]}}'
    proc = smk(["spot_check", "--cores", "1", "--configfile", "config/smoke.yaml", "--config", spot], repo_copy)
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts.get("measure_spot_cell") == 1 and "measure_cell" not in counts  # only the named cell is measured
    fresh = repo_copy / "results" / "spot_check" / "cells" / "tiny-llama" / "hf-sdpa" / "prefill" / "L64.parquet"
    assert (
        pd.read_parquet(fresh)["measured_at"].iloc[0]
        != pd.read_parquet(reference / fresh.relative_to(fresh.parents[3]))["measured_at"].iloc[0]
    )
    table = pd.read_csv(repo_copy / "results" / "spot_check.csv")
    assert table[["model", "engine", "phase", "length_tokens"]].values.tolist() == [
        ["tiny-llama", "hf-sdpa", "prefill", 64]
    ]
    assert table["verdict"].iloc[0] == "not comparable"  # no energy counter on this host: nothing is invented
    # a cell outside the grid is refused in one line before anything runs
    bad = smk(
        ["spot_check", "--cores", "1", "--configfile", "config/smoke.yaml", "--config", spot.replace("L64", "L128")],
        repo_copy,
        check=False,
    )
    lines = [line for line in bad.stderr.strip().splitlines() if "spot_check" in line]
    assert bad.returncode != 0 and "length 128 is not in this config's lengths (64, 256)" in bad.stderr
    assert "Traceback" not in bad.stderr and len(lines) == 1
    nowhere = smk(
        [
            "spot_check",
            "--cores",
            "1",
            "--configfile",
            "config/smoke.yaml",
            "--config",
            spot.replace(str(reference), str(reference) + "-missing"),
        ],
        repo_copy,
        check=False,
    )
    assert nowhere.returncode != 0 and "Missing input files for rule spot_check" in nowhere.stdout + nowhere.stderr
    assert job_counts(nowhere.stdout).get("measure_spot_cell") is None  # stopped before any cell was measured


def test_a_dry_run_with_other_settings_during_a_campaign_changes_none_of_its_cells(tmp_path):
    """A second parse (dry run, --lint, another snakemake call) while cells are being measured: every cell of the
    running campaign is measured under the settings that campaign started with, and records their hash."""
    dst = copy_repo(tmp_path / "repo")
    campaign = subprocess.Popen(
        SNAKEMAKE + ["--cores", "1", "--configfile", "config/smoke.yaml"],
        cwd=dst,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    cells_dir = dst / "results" / "cells"
    deadline = time.monotonic() + 300
    while not list(cells_dir.rglob("L*[0-9].parquet")) and campaign.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert campaign.poll() is None, "the campaign ended before a dry run could interfere"
    (dst / "other.yaml").write_text("measure: {repeats: 5, min_window_s: 0.1}\n")
    other = smk(
        ["-n", "--configfile", "config/smoke.yaml", "other.yaml", "--config", "generate_tokens=4"], dst, check=False
    )
    assert "measure_cell" in other.stdout, other.stdout + other.stderr  # it parsed, and planned the rest
    out, _ = campaign.communicate(timeout=600)
    assert campaign.returncode == 0, out[-3000:]
    cells = pd.read_parquet(dst / "results" / "cells.parquet")
    assert len(cells) == 8
    assert cells["config_hash"].nunique() == 1 and (cells["n_windows"] == 3).all()
    assert (cells.loc[cells["phase"] == "generate", "output_tokens"] == 8).all()


def test_a_cell_deleted_after_a_run_is_measured_again_for_the_table_as_target(smoke_run, tmp_path):
    """`snakemake results/cells.parquet` (not rule all) said "Nothing to be done" and kept the deleted cell's row."""
    dst = shutil.copytree(smoke_run[0], tmp_path / "repo", symlinks=True)
    (dst / "results" / "cells" / "tiny-llama" / "hf-sdpa" / "prefill" / "L64.parquet").unlink()
    args = ["results/cells.parquet", "--configfile", "config/smoke.yaml"]
    counts = job_counts(smk(["-n", *args], dst).stdout)
    assert counts.get("measure_cell") == 1 and counts.get("aggregate_cells") == 1, counts


def test_dry_run_of_the_serving_grid_names_batches_and_variants(tmp_path):
    """config/serving.yaml's hf-sdpa part (vLLM is not installed here): one job per cell, a prompt job per (L, B)."""
    proc = smk(
        [
            "-n",
            "--cores",
            "1",
            "--resources",
            "gpu=1",
            "--configfile",
            "config/serving.yaml",
            "--config",
            "engines=[hf-sdpa]",
        ],
        REPO,
    )
    counts = job_counts(proc.stdout)
    assert counts["measure_cell"] == 5 * 4 * 2
    assert counts["make_prompts"] == 5 and counts["make_batch_prompts"] == 5 * 3
    assert "results/cells/llama-3.1-8b/hf-sdpa/prefill/B64/L65536.parquet" in proc.stdout
    assert "results/cells/llama-3.1-8b/hf-sdpa/prefill/L1024.parquet" in proc.stdout


def test_the_batch_smoke_config_runs_batched_cells_on_cpu(tmp_path):
    """config/smoke-batch.yaml: batch 1 and a batch of 4 distinct prompts, prefill and generate, through the whole
    workflow; the batch-1 cells keep their paths, the batched ones lie under B4/ and record B."""
    dst = copy_repo(tmp_path / "repo")
    smk(["results/cells.parquet", "--cores", "2", "--configfile", "config/smoke.yaml", "config/smoke-batch.yaml"], dst)
    cells = pd.read_parquet(dst / "results" / "cells.parquet")
    assert sorted(cells["cell_id"]) == [
        "tiny-llama/hf-sdpa/generate/B4/L64",
        "tiny-llama/hf-sdpa/generate/L64",
        "tiny-llama/hf-sdpa/generate/V-small-graph/B4/L64",
        "tiny-llama/hf-sdpa/prefill/B4/L64",
        "tiny-llama/hf-sdpa/prefill/L64",
        "tiny-llama/hf-sdpa/prefill/V-small-graph/B4/L64",
    ]
    assert set(cells["status"]) == {"ok"}
    variant = cells[cells["engine_variant"] == "small-graph"]
    assert len(variant) == 2 and (variant["batch_size"] == 4).all()
    assert variant["engine_settings"].str.contains("'prefill_cuda_graph_max_tokens': 64").all()
    assert (dst / "results/warmup/tiny-llama/hf-sdpa/V-small-graph.json").exists()  # its own engine load
    assert dict(zip(cells["cell_id"], cells["batch_size"]))["tiny-llama/hf-sdpa/prefill/B4/L64"] == 4
    runs = pd.read_parquet(dst / "results/cells/tiny-llama/hf-sdpa/generate/B4/L64.runs.parquet")
    assert (runs["tokens_in"] == 4 * 64).all() and (runs["tokens_out"] == 4 * 8).all()
    prompts = np.load(dst / "results/prompts/tiny-llama/B4/L64.npy")
    assert prompts.shape == (4, 64) and np.load(dst / "results/prompts/tiny-llama/L64.npy").shape == (64,)


def test_the_snakemake_report_names_the_device_and_what_its_statistics_cover(smoke_run, tmp_path):
    """`snakemake --report`: its front page (workflow/report/workflow.rst) names the device the cells ran on, not
    the config's `device: cpu`; every cell was measured here, so no note on the statistics."""
    import json
    import zipfile

    dst = shutil.copytree(smoke_run[0], tmp_path / "repo", symlinks=True)
    smk(["--report", "report.zip", "--configfile", "config/smoke.yaml"], dst)
    with zipfile.ZipFile(dst / "report.zip") as z:
        text = "".join(z.read(n).decode(errors="replace") for n in z.namelist() if n.endswith((".html", ".js")))
        claims = [z.read(n).decode() for n in z.namelist() if n.endswith("/claims.html")]
        results = json.loads(
            re.search(r"var results = (\{.*?\});\s*</script>", z.read("report/report.html").decode(), re.S)[1]
        )
    assert re.search(r"on CPU .+ x\d+ \(8 cells\)", text), "device name missing from the report's front page"
    assert "runtime statistics of this report cover only" not in text
    assert "Derived tables" in text  # the analysis tables, as report items with captions
    # the key tables as pages the report shows, not only Parquet to download: the claims with their verdicts
    item = results["results/tables/claims.html"]
    assert item["mime_type"] == "text/html" and "workflow/schemas/derived.schema.yaml" in item["caption"]
    assert len(claims) == 1 and "<table" in claims[0] and "verdict</th>" in claims[0]
    assert results["results/analysis/cost_model.csv"]["mime_type"] == "text/csv"


def test_report_facts_say_when_the_statistics_cover_only_the_jobs_run_here(smoke_run, tmp_path):
    from ctxenergy.provenance import report_facts

    dst = smoke_run[0]
    cells, bench = dst / "results" / "cells.parquet", dst / "results" / "benchmarks"
    facts = report_facts({"device": "cpu", "cells_source": None}, cells, bench)
    assert facts["statistics_note"] == "" and facts["devices"].endswith("(8 cells)")
    # cells copied in from another checkout: 2 of them have no job here
    partial = shutil.copytree(bench, tmp_path / "benchmarks")
    for f in (partial / "measure_cell" / "tiny-llama" / "hf-eager" / "prefill").glob("*.tsv"):
        f.unlink()
    note = report_facts({"device": "cpu", "cells_source": None}, cells, partial)["statistics_note"]
    assert note.startswith("2 of 8 cells were measured outside this folder's runs")
    reference = REPO / "data" / "reference" / "nvidia-h200"
    facts = report_facts(
        {"device": "cuda", "cells_source": "data/reference/nvidia-h200/cells"},
        reference / "cells.parquet",
        tmp_path / "none",
    )
    assert facts["devices"] == "NVIDIA H200 (18 cells, 2 boards)"
    assert "come from ``data/reference/nvidia-h200/cells``" in facts["statistics_note"]
    assert "cover only the analysis jobs run here" in facts["statistics_note"]
