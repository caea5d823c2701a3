"""Snakemake's benchmark files of the jobs: one row per run of a job, named by its rule and path."""

from ctxenergy.job_benchmarks import job_seconds


def test_job_times_per_rule_sum_every_row(tmp_path):
    (tmp_path / "measure_cell" / "m" / "e" / "prefill").mkdir(parents=True)
    (tmp_path / "measure_cell" / "m" / "e" / "prefill" / "L8.tsv").write_text("s\th:m:s\n3.5\t0:00:03\n")
    (tmp_path / "warmup_engine" / "m").mkdir(parents=True)
    (tmp_path / "warmup_engine" / "m" / "e.tsv").write_text("s\th:m:s\n10\t0:00:10\n12\t0:00:12\n")
    (tmp_path / "calibrate.tsv").write_text("s\th:m:s\n60\t0:01:00\n")
    jobs = job_seconds(tmp_path)
    assert jobs.groupby("rule")["s"].sum().to_dict() == {"calibrate": 60.0, "measure_cell": 3.5, "warmup_engine": 22.0}
    assert job_seconds(tmp_path / "absent").empty
