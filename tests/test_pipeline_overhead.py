"""benchmarks/pipeline_overhead.py on the committed H200 jobs: the breakdown adds up."""

import importlib.util

import pandas as pd
import pytest
from conftest import REFERENCE, REPO

pytestmark = pytest.mark.slow


spec = importlib.util.spec_from_file_location("pipeline_overhead", REPO / "benchmarks" / "pipeline_overhead.py")
overhead = importlib.util.module_from_spec(spec)
spec.loader.exec_module(overhead)


def test_breakdown_of_the_reference_jobs():
    df = overhead.overhead_table(REFERENCE / "cells", REFERENCE / "jobs" / "measure_cell")
    assert len(df) == 17  # 18 cells, less the oom cell, which measured nothing
    assert (df["job_s"] > df["windows_s"]).all() and (df["windows_s"] > 0).all()
    parts = df[["before_load_s", "load_s", "idle_s", "warmup_s", "timing_pass_s", "window_span_s"]].sum(axis=1)
    assert ((parts - df["job_s"]).abs() < 1e-6).all()  # the parts account for the job's wall time
    # these cells ran the timing pass as a run of its own: its gap matches the run time the cell recorded
    gen = df[df["cell"].str.contains("hf-sdpa/generate")]
    assert ((gen["timing_pass_s"] > 2.0) & (gen["timing_pass_s"] < 6.0)).all()
    assert 2.5 < df["job_s"].sum() / df["windows_s"].sum() < 4.5  # 3.39x measured on 2026-11-29


def test_campaign_counts_every_engine_load_and_the_jobs_that_measured_nothing():
    jobs = REFERENCE / "campaign" / "jobs"
    df = overhead.overhead_table(REFERENCE / "campaign" / "cells", jobs / "measure_cell")
    warmups = overhead.warmup_jobs_s(jobs / "warmup_engine")
    # one benchmark row per warm-up job: every (model, engine) of the three HF engines loaded in two sessions, vLLM's
    # once (its later starts were in the first cell job of a call, on a machine whose warm-up had run)
    assert sorted(len(times) for times in warmups.values()) == [1, 1, 2, 2, 2, 2, 2, 2]
    assert len(warmups) == 8 and all(len(warmups[f"{m}/vllm"]) == 1 for m in ("llama-3.1-8b", "qwen2-7b"))
    unmeasured = overhead.unmeasured_jobs_s(jobs / "measure_cell", df)
    cells = pd.read_parquet(REFERENCE / "campaign" / "cells.parquet")
    assert len(unmeasured) == int((cells["status"] != "ok").sum())  # oom and exceeds_context jobs
    assert len(df) + len(unmeasured) == len(cells)
    assert all(0 < s < 10 for s in unmeasured)  # they fail or skip within seconds, before any window


def test_provenance_gives_the_same_ratio_as_this_benchmark(tmp_path):
    """One quantity, one number: the provenance page's job time over measured windows is this script's total."""
    from ctxenergy.cli import main

    campaign, jobs = REFERENCE / "campaign", REFERENCE / "campaign" / "jobs"
    df = overhead.overhead_table(campaign / "cells", jobs / "measure_cell")
    gpu_s = (
        df["job_s"].sum()
        + sum(s for t in overhead.warmup_jobs_s(jobs / "warmup_engine").values() for s in t)
        + sum(overhead.unmeasured_jobs_s(jobs / "measure_cell", df))
    )
    out = tmp_path / "provenance.md"
    assert main(["provenance", "--cells", str(campaign / "cells.parquet"), "--jobs", str(jobs), "--out", str(out)]) == 0
    assert f"{gpu_s / df['windows_s'].sum():.2f}x the measured windows" in out.read_text()
