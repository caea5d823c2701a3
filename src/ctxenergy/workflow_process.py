"""The Snakemake process a run belongs to: its jobs and engine hosts end with it, and a run killed outright (SIGKILL,
a lost session) resumes with the same command.

Why a watch and not the kernel's help: `prctl(PR_SET_PDEATHSIG)` fires when the *parent* dies, but an engine host's
parent is the job that started it, which ends normally after its cell while the host must live on for the next
cells; and a job's parent is a shell that outlives Snakemake. Snakemake's jobs share its process group, but SIGKILL
of the Snakemake process signals nobody else. So Snakemake exports its identity (pid and start time, so that a
reused pid is not mistaken for it) when it reads the Snakefile; every job inherits it, and jobs and hosts poll it
and stop themselves, without writing the cell they were measuring, once it is gone.

Resuming: a SIGKILLed Snakemake leaves its lock in .snakemake/locks and its running jobs' outputs marked incomplete.
The default profile sets `rerun-incomplete` (those jobs run again, so a cell finished by an orphan after the kill is
never trusted), and `clear_stale_snakemake_lock` removes a lock whose run is provably gone: every Snakemake reading
this Snakefile holds a shared flock on `.snakemake/ctxenergy-run.lock` for its whole life, which the kernel drops
however the process ends; an exclusive flock that succeeds therefore proves that no such run is alive. Limits: only
Snakemake's default file store of locks is cleared (with `--persistence-backend db` its own `--unlock` message
stands), and cluster jobs still running (their Snakemake reads the Snakefile too) keep the lock until they end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import threading
from pathlib import Path

from ctxenergy import processes
from ctxenergy.files import lock
from ctxenergy.paths import LOGS_DIR, RESULTS_DIR

WORKFLOW_ENV = "CTXENERGY_WORKFLOW"
RESUME = (
    "its unfinished cells are measured again (the same command resumes it: the default profile sets "
    "rerun-incomplete; with another profile add --rerun-incomplete)"
)
POLL_S = 0.5
# After asking itself to stop (SIGTERM: `finally` blocks close the engine), a process stuck in native code is ended.
FORCE_EXIT_AFTER_S = 30.0
_run_lock_fd: int | None = None


def identity(pid: int | None = None) -> str:
    """The process's pid and start time, "pid:ticks" (ticks empty without /proc): one process, even once its pid
    is reused."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}:{processes.start_time(pid) or ''}"


def alive(process_identity: str) -> bool:
    """Whether that process still runs: not gone, not a zombie, and its pid not reused by another process."""
    pid, _, started = process_identity.partition(":")
    return processes.alive(int(pid), started)


def current_workflow() -> str | None:
    return os.environ.get(WORKFLOW_ENV) or None


class WorkflowWatch:
    """A daemon thread that sends SIGTERM to this process once the followed Snakemake process has ended."""

    def __init__(self, workflow: str | None = None):
        self._workflow = workflow
        self._stop = threading.Event()
        threading.Thread(target=self._run, name="workflow-watch", daemon=True).start()

    def follow(self, workflow: str | None) -> None:
        """Follow another run's Snakemake (an engine host serves whichever run sent its current request)."""
        if workflow:
            self._workflow = workflow

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            workflow = self._workflow
            if workflow and not alive(workflow):
                print(
                    f"ctxenergy: the run's Snakemake (pid {workflow.partition(':')[0]}) has ended: stopping",
                    file=sys.stderr,
                    flush=True,
                )
                os.kill(os.getpid(), signal.SIGTERM)
                if not self._stop.wait(FORCE_EXIT_AFTER_S):
                    os._exit(128 + signal.SIGTERM)
                return


def watch_workflow() -> WorkflowWatch | None:
    """In a job started by Snakemake: end this process when Snakemake has ended (None outside a workflow)."""
    workflow = current_workflow()
    return WorkflowWatch(workflow) if workflow else None


def enter_workflow(workdir: str | Path = ".", main_process: bool = True, dry_run: bool = False) -> str | None:
    """Called by the Snakefile in the Snakemake process: export its identity to the jobs, mark the run alive and
    remove a lock left by a killed run. Returns the line that tells the user a killed run is being resumed, or, for
    a real run (not `dry_run`) while another holds Snakemake's locks here, that another run is measuring.

    Only the main Snakemake process takes part in the run lock: the Snakemake that an executor starts for one job
    (on a cluster node, over a shared file system whose flock may not reach the main process's) must never take the
    main run's lock for a stale one; its jobs still follow it."""
    global _run_lock_fd
    os.environ[WORKFLOW_ENV] = identity()
    if _run_lock_fd is not None or not main_process:
        return None
    meta = Path(workdir, ".snakemake")
    meta.mkdir(exist_ok=True)
    fd = os.open(meta / "ctxenergy-run.lock", os.O_RDWR | os.O_CREAT, 0o644)
    message = None
    if not lock(fd, block=False):  # another run of this workflow is alive: its lock and its unfinished jobs are real
        if not dry_run and any((meta / "locks").glob("*.lock")):  # it is a real run (a dry run locks nothing)
            holder = Path(meta / "ctxenergy-run.lock").read_text().partition(":")[0].strip() or "unknown"
            message = (
                f"ctxenergy: another run of this workflow is measuring in this folder (Snakemake pid "
                f"{holder}); wait for it to end, or run in another folder"
            )
    else:
        os.ftruncate(fd, 0)
        os.write(fd, identity().encode())  # who holds the run: named to a second run started beside it
        removed = clear_stale_snakemake_lock(meta)
        unfinished = [p for p in (meta / "incomplete").rglob("*") if p.is_file() and p.name != "migration_underway"]
        if removed or unfinished:
            message = (
                "ctxenergy: resuming a run that was killed part-way"
                + (f" (stale lock {removed} removed)" if removed else "")
                + f"; {RESUME}"
            )
    lock(fd, shared=True)
    _run_lock_fd = fd  # held (and never inherited by jobs: O_CLOEXEC) until this process ends
    return message


def clear_stale_snakemake_lock(meta: Path) -> Path | None:
    """Remove Snakemake's lock files (what `snakemake --unlock` does), once no run of this workflow is alive."""
    locks = meta / "locks"
    if not any(locks.glob("*.lock")):
        return None
    shutil.rmtree(locks, ignore_errors=True)
    return locks


def check_run_folders_writable(workdir: str | Path = ".") -> None:
    """A real run writes under results/ and .snakemake/: a read-only one is one line before any job (Snakemake's
    own ProtectedOutputException or permission error otherwise, after its DAG)."""
    from ctxenergy.errors import CtxEnergyError

    for name in (str(RESULTS_DIR), ".snakemake"):
        folder = Path(workdir, name)
        if folder.exists() and not os.access(folder, os.W_OK):
            raise CtxEnergyError(
                f"{name}/: not writable (read-only or another user's); make it writable, or run "
                "the workflow in a folder of your own"
            )


def failed_jobs_line(snakemake_log) -> str:
    """The line after a failed run: which logs to read, and that the same command resumes (finished cells stay).
    `snakemake_log`: what onerror gets, Snakemake's log file (a list of them in Snakemake 9) or None."""
    files = snakemake_log if isinstance(snakemake_log, (list, tuple)) else [snakemake_log]
    text = "".join(Path(f).read_text(errors="replace") for f in files if f and Path(f).is_file())
    logs = list(dict.fromkeys(re.findall(r"log: (\S+?) \(check log file", text)))
    where = f"read {', '.join(logs)}" if logs else f"read the error above and the failed jobs' logs under {LOGS_DIR}/"
    return (
        f"ctxenergy: the run stopped with failed jobs; {where}; finished cells are kept, so the same command "
        "resumes (after a fix) and measures only what is missing"
    )
