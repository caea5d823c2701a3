"""The Snakemake process of a run: its identity survives pid reuse, and only a lock whose run is gone is removed."""

import signal
import subprocess
import sys
import time

from ctxenergy import workflow_process

ENTER = (
    "from ctxenergy.workflow_process import enter_workflow; print(enter_workflow(), flush=True); import time; "
    "time.sleep(300)"
)


def start_run(cwd) -> subprocess.Popen:
    """A process that enters the workflow as Snakemake does when it reads the Snakefile, and stays."""
    proc = subprocess.Popen([sys.executable, "-c", ENTER], cwd=cwd, stdout=subprocess.PIPE, text=True)
    proc.first_line = proc.stdout.readline().strip()
    return proc


def test_identity_tells_a_live_process_from_a_dead_one_and_from_a_reused_pid():
    sleeper = subprocess.Popen(["sleep", "300"])
    ident = workflow_process.identity(sleeper.pid)
    assert workflow_process.alive(ident)
    assert not workflow_process.alive(f"{sleeper.pid}:1")  # same pid, another start time: another process
    sleeper.kill()
    time.sleep(0.2)
    assert not workflow_process.alive(ident)  # a zombie (not yet reaped) is gone too
    sleeper.wait()
    assert not workflow_process.alive(ident)


def test_a_lock_is_removed_only_when_no_run_of_the_workflow_is_alive(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/cells.parquet\n")
    running = start_run(tmp_path)  # a live run: its lock is real
    assert running.first_line.startswith("ctxenergy: ") and not locks.exists()  # no live run before it: stale
    locks.mkdir()
    (locks / "0.output.lock").write_text("results/cells.parquet\n")  # the live run's own lock
    second = start_run(tmp_path)
    assert second.first_line == (
        f"ctxenergy: another run of this workflow is measuring in this folder (Snakemake "
        f"pid {running.pid}); wait for it to end, or run in another folder"
    )
    assert (locks / "0.output.lock").exists()
    dry = subprocess.run(
        [
            sys.executable,
            "-c",
            "from ctxenergy.workflow_process import enter_workflow; print(enter_workflow(dry_run=True))",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert dry.stdout.strip() == "None"  # a dry run beside a campaign changes nothing and stops nothing
    for proc in (running, second):
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    third = start_run(tmp_path)
    try:
        assert "resuming a run that was killed part-way (stale lock" in third.first_line
        assert "the same command resumes it" in third.first_line
        assert not locks.exists()
    finally:
        third.kill()
        third.wait()


def test_jobs_see_the_snakemake_process_they_belong_to(tmp_path, monkeypatch):
    monkeypatch.delenv(workflow_process.WORKFLOW_ENV, raising=False)
    assert workflow_process.watch_workflow() is None  # outside a workflow: nothing to watch
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; from ctxenergy.workflow_process import enter_workflow; "
            "enter_workflow(); print(os.environ['CTXENERGY_WORKFLOW'], os.getpid())",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out[0].split(":")[0] == out[1]


def test_unfinished_jobs_of_a_killed_run_are_announced_with_how_to_resume(tmp_path):
    marker = tmp_path / ".snakemake" / "incomplete" / "cmVzdWx0cy9jZWxscy5wYXJxdWV0"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    code = "from ctxenergy.workflow_process import enter_workflow; print(enter_workflow())"
    said = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert said.startswith("ctxenergy: resuming a run that was killed part-way; its unfinished cells are measured")
    assert "with another profile add --rerun-incomplete" in said


def test_a_job_snakemake_on_a_cluster_node_never_clears_the_main_runs_lock(tmp_path):
    """The Snakemake an executor starts for one job reads the Snakefile too; where its flock cannot see the main
    process's (another node, a shared file system), it must not take the main run's lock for a stale one."""
    lock = tmp_path / ".snakemake" / "locks" / "0.input.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    code = (
        "import os; from ctxenergy.workflow_process import enter_workflow; "
        "print(enter_workflow(main_process=False), 'CTXENERGY_WORKFLOW' in os.environ)"
    )
    said = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert said == ["None", "True"] and lock.exists()


def test_a_read_only_results_folder_is_one_line(tmp_path, monkeypatch):
    import pytest

    from ctxenergy.errors import CtxEnergyError

    (tmp_path / "results").mkdir()
    workflow_process.check_run_folders_writable(tmp_path)
    monkeypatch.setattr(workflow_process.os, "access", lambda path, mode: not str(path).endswith("results"))
    with pytest.raises(CtxEnergyError, match=r"^results/: not writable"):
        workflow_process.check_run_folders_writable(tmp_path)


def test_a_failed_run_names_the_logs_to_read_and_that_the_same_command_resumes(tmp_path):
    log = tmp_path / "snakemake.log"
    log.write_text(
        "Error in rule measure_cell:\n    log: results/logs/measure_cell/m/e/prefill/L64.log (check log "
        "file(s) for error details)\n"
    )
    line = workflow_process.failed_jobs_line([log])  # Snakemake 9 passes onerror a list of log files
    assert workflow_process.failed_jobs_line(log) == line
    assert line.startswith(
        "ctxenergy: the run stopped with failed jobs; read results/logs/measure_cell/m/e/prefill/"
        "L64.log; finished cells are kept, so the same command resumes"
    )
    assert "results/logs/" in workflow_process.failed_jobs_line(None)
