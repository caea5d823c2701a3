"""The workflow on a real single-node SLURM cluster (munge + slurmctld + slurmd, fake GPUs), through Snakemake's
SLURM executor and workflow/profiles/slurm: GPU jobs are submitted as GPU jobs and each cell records the
CUDA_VISIBLE_DEVICES that SLURM gave it.

Needs root and Debian's slurmctld, slurmd, slurm-client and munge. Skipped only where they are not installed and
CI is not set; on CI a missing SLURM is a failure (.ci/run must install it).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO, copy_repo

from ctxenergy.tables import read_metadata

pytestmark = pytest.mark.workflow


SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
INSTALLED = shutil.which("slurmctld", path=SBIN) is not None
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
INSTALL = "apt-get install -y --no-install-recommends slurmctld slurmd slurm-client munge"
GPUS = 2

if not INSTALLED and not IN_CI:
    pytest.skip(f"slurmctld is not installed ({INSTALL})", allow_module_level=True)


def _slurm(cmd, env):
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)


def _teardown(cluster: Path, env):
    # Jobs first: a job step outlives slurmd. Then the daemons, by the PIDs start_slurm.sh recorded.
    _slurm(["scancel", "--user", "root"], env)
    recorded = cluster / "pids"
    pids = [int(line.split()[1]) for line in recorded.read_text().splitlines()] if recorded.exists() else []
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 2.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.1)
    etc = Path("/etc/slurm/slurm.conf")
    if etc.is_symlink() and os.readlink(etc) == str(cluster / "slurm.conf"):
        etc.unlink()
    shutil.rmtree(cluster, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    if not INSTALLED:
        pytest.fail(f"CI is set but slurmctld is not installed: .ci/run must run `{INSTALL}`")
    # Not under pytest's tmp: munged runs as the munge user and must reach its socket through every parent directory.
    path = Path(tempfile.mkdtemp(prefix="ctxenergy-slurm-"))
    env = dict(os.environ, PATH=SBIN, SLURM_CONF=str(path / "slurm.conf"))
    env.pop("CUDA_VISIBLE_DEVICES", None)  # only SLURM may set it in the jobs
    try:
        proc = subprocess.run(
            ["bash", str(REPO / "scripts/ci/start_slurm.sh"), str(path), str(GPUS)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"start_slurm.sh failed:\n{proc.stdout}\n{proc.stderr}"
        yield path, env
    finally:
        _teardown(path, env)


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The CPU smoke config through the SLURM executor, its measurement jobs asking for one GPU each."""
    _, env = cluster
    work = copy_repo(tmp_path_factory.mktemp("slurm") / "repo")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--workflow-profile",
        "workflow/profiles/slurm",
        "--configfile",
        "config/smoke.yaml",
        "--jobs",
        "4",
        # This cluster has no accounting (no sacct) and no accounts; do not wait 40 s before the first status check.
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        "--slurm-init-seconds-before-status-checks",
        "1",
        # A CPU study asks for no GPU (cell_gpus = 0); ask for one as a GPU study's cells do, so SLURM assigns one.
        "--set-resources",
        "measure_cell:gpu=1",
        "measure_cell:mem_mb=2000",
        "warmup_engine:mem_mb=2000",
        "--default-resources",
        "mem_mb=1000",
        "runtime=10",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, f"snakemake --executor slurm failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}"
    return work, elapsed, proc


def slurm_jobs(env) -> list[dict]:
    out = _slurm(["scontrol", "-o", "show", "job"], env).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(m.groups() for m in re.finditer(r"(\w[\w/:]*)=(\S*)", line))
        comment = fields.get("Comment", "")
        jobs.append(
            {
                "id": fields["JobId"],
                "state": fields["JobState"],
                "gres": fields.get("TresPerJob", ""),
                "rule": re.sub(r"^rule_(\w+?)_wildcards_.*$", r"\1", comment),
                "comment": comment,
                "start": datetime.fromisoformat(fields["StartTime"]),
                "end": datetime.fromisoformat(fields["EndTime"]),
            }
        )
    return jobs


def cells(work: Path) -> dict[str, dict]:
    found = {}
    for p in sorted((work / "results/cells").rglob("L*.parquet")):
        if p.name.count(".") == 1:  # L64.parquet, not L64.runs.parquet
            meta = read_metadata(p)
            # the job's wildcards, as the SLURM executor joins them into its comment: {cell} is L<n> at batch 1
            key = f"{meta['model']}_{meta['engine']}_{meta['phase']}_L{meta['length_tokens']}"
            found[key] = meta
    return found


def test_smoke_config_runs_through_the_slurm_executor(slurm_run):
    work, elapsed, proc = slurm_run
    assert (work / "results/cells.parquet").is_file()
    got = cells(work)
    assert len(got) == 8 and all(m["status"] == "ok" for m in got.values())
    # Every cell ran on the GPU SLURM assigned: CUDA_VISIBLE_DEVICES is set in no other way in these jobs.
    assert {m["cuda_visible_devices"] for m in got.values()} <= {str(i) for i in range(GPUS)}
    print(f"SLURM smoke run: {elapsed:.0f} s")


def test_gpu_jobs_are_submitted_as_gpu_jobs_and_never_share_a_gpu(slurm_run, cluster):
    work, _, _ = slurm_run
    jobs = slurm_jobs(cluster[1])
    measure = [j for j in jobs if j["rule"] == "measure_cell"]
    others = [j for j in jobs if j["rule"] != "measure_cell"]
    assert len(measure) == 8 and all(j["state"] == "COMPLETED" for j in jobs)
    assert all(j["gres"] == "gres:gpu:1" for j in measure)  # sbatch --gpus=1
    assert others and not any("gpu" in j["gres"] for j in others)  # warm-ups of a CPU study take none
    cvd = {}
    for key, meta in cells(work).items():
        job = next(j for j in measure if j["comment"] == f"rule_measure_cell_wildcards_{key}")
        cvd[job["id"]] = meta["cuda_visible_devices"]
    overlapping = [
        (a, b)
        for i, a in enumerate(measure)
        for b in measure[i + 1 :]
        if a["start"] < b["end"] and b["start"] < a["end"]
    ]
    assert overlapping, "no two GPU jobs ran at once: the test did not exercise two GPUs"
    for a, b in overlapping:
        assert cvd[a["id"]] != cvd[b["id"]], f"jobs {a['id']} and {b['id']} ran at once on GPU {cvd[a['id']]}"
