"""The engine host: one loaded engine serving several cell jobs, keyed by config and code, stopped cleanly.

These run the real CLI and a real host process on the CPU smoke model (tiny-llama, random weights).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ctxenergy import engine_host

pytestmark = pytest.mark.workflow


def measure(
    repo: Path,
    length: int,
    phase: str = "prefill",
    config: str = "config/smoke.yaml",
    extra_env=None,
    host: bool = True,
) -> subprocess.CompletedProcess:
    env = dict(os.environ, CTXENERGY_HOST_DIR=str(repo / "hosts"), **(extra_env or {}))
    cmd = [
        sys.executable,
        "-m",
        "ctxenergy",
        "measure",
        "--config",
        config,
        "--model",
        "tiny-llama",
        "--engine",
        "hf-sdpa",
        "--phase",
        phase,
        "--length",
        str(length),
    ]
    return subprocess.run(
        cmd + (["--engine-host"] if host else []), cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )


def summary(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def stop(repo: Path) -> str:
    env = dict(os.environ, CTXENERGY_HOST_DIR=str(repo / "hosts"))
    return subprocess.run(
        [sys.executable, "-m", "ctxenergy", "engine-host", "--stop"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def wait_gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)


@pytest.fixture
def smoke_repo(repo_copy):
    """The smoke config with a short protocol, so that each cell takes about a second on CPU."""
    cfg = yaml.safe_load((repo_copy / "config" / "smoke.yaml").read_text())
    cfg["measure"].update(repeats=2, min_window_s=0.05, idle_s=0.05, max_runs_per_window=4)
    (repo_copy / "config" / "quick.yaml").write_text(yaml.safe_dump(cfg))
    yield repo_copy
    stop(repo_copy)


def test_cells_reuse_one_loaded_engine_and_stop_ends_it(smoke_repo):
    first = summary(measure(smoke_repo, 64, config="config/quick.yaml"))
    second = summary(measure(smoke_repo, 128, "generate", config="config/quick.yaml"))
    host_a, host_b = first["engine_host"], second["engine_host"]
    assert host_a["pid"] == host_b["pid"] and alive(host_a["pid"])
    assert (host_a["cells_before"], host_b["cells_before"]) == (0, 1)
    assert host_b["load_s"] == host_a["load_s"] > 0  # loaded once
    for s in (first, second):
        cell = pd.read_parquet(smoke_repo / s["out"])
        assert (cell["status"] == "ok").all() and len(cell) == 2
    assert "stopped 1" in stop(smoke_repo)
    assert wait_gone(host_a["pid"])
    assert not list((smoke_repo / "hosts").glob("*.sock"))


def test_a_changed_config_gets_its_own_host(smoke_repo):
    a = summary(measure(smoke_repo, 64, config="config/quick.yaml"))
    cfg = yaml.safe_load((smoke_repo / "config" / "quick.yaml").read_text())
    cfg["measure"]["repeats"] = 3
    (smoke_repo / "config" / "quick3.yaml").write_text(yaml.safe_dump(cfg))
    b = summary(measure(smoke_repo, 64, config="config/quick3.yaml"))
    assert b["engine_host"]["pid"] != a["engine_host"]["pid"]
    assert len(pd.read_parquet(smoke_repo / b["out"])) == 3
    # On CPU hosts do not compete for a device: both stay until stopped. Stopping all but one key spares that one
    # (what a job on a GPU study does before it starts its own host).
    assert alive(a["engine_host"]["pid"]) and alive(b["engine_host"]["pid"])
    os.environ[engine_host.HOST_DIR_ENV] = str(smoke_repo / "hosts")
    try:
        key_b = next(
            p.stem for p in (smoke_repo / "hosts").glob("*.log") if str(b["engine_host"]["pid"]) in p.read_text()
        )
        assert engine_host.stop_idle_hosts(except_key=key_b.rpartition("-")[0]) == [a["engine_host"]["pid"]]
    finally:
        del os.environ[engine_host.HOST_DIR_ENV]
    assert wait_gone(a["engine_host"]["pid"]) and alive(b["engine_host"]["pid"])


def test_a_killed_host_is_replaced_and_no_cell_is_lost(smoke_repo):
    a = summary(measure(smoke_repo, 64, config="config/quick.yaml"))
    os.kill(a["engine_host"]["pid"], signal.SIGKILL)
    assert wait_gone(a["engine_host"]["pid"])
    b = summary(measure(smoke_repo, 128, config="config/quick.yaml"))
    assert b["engine_host"]["pid"] != a["engine_host"]["pid"] and b["engine_host"]["cells_before"] == 0
    assert pd.read_parquet(smoke_repo / a["out"])["status"].eq("ok").all()  # the first cell is untouched


def test_an_idle_host_exits_by_itself(smoke_repo):
    cfg = yaml.safe_load((smoke_repo / "config" / "quick.yaml").read_text())
    cfg["measure"]["engine_host_idle_s"] = 1.0
    (smoke_repo / "config" / "idle.yaml").write_text(yaml.safe_dump(cfg))
    a = summary(measure(smoke_repo, 64, config="config/idle.yaml"))
    assert wait_gone(a["engine_host"]["pid"], timeout=30)
    assert not list((smoke_repo / "hosts").glob("*.sock"))


def test_inside_a_slurm_job_the_engine_loads_in_the_job(smoke_repo):
    proc = measure(smoke_repo, 64, config="config/quick.yaml", extra_env={"SLURM_JOB_ID": "1"})
    s = summary(proc)
    assert "engine_host" not in s and "running inside a SLURM job" in proc.stderr
    assert not list((smoke_repo / "hosts").glob("*.sock")) if (smoke_repo / "hosts").exists() else True


def test_host_keys_follow_config_model_engine_and_devices(tmp_path, monkeypatch):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("x: 1\n")
    b.write_text("x: 2\n")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    base = engine_host.host_key([a], "m", "hf-sdpa")
    assert base == engine_host.host_key([a], "m", "hf-sdpa")
    assert base != engine_host.host_key([b], "m", "hf-sdpa")
    assert base != engine_host.host_key([a], "m", "hf-eager")
    assert base != engine_host.host_key([a], "n", "hf-sdpa")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1")
    assert base != engine_host.host_key([a], "m", "hf-sdpa")


def test_reuse_settings_do_not_change_the_cell_hash():
    from ctxenergy.config import cell_settings_hash, load_config

    config = load_config("config/smoke.yaml")
    before = cell_settings_hash(config, "tiny-llama")
    config["measure"].update(engine_reuse=False, engine_host_idle_s=5)
    assert cell_settings_hash(config, "tiny-llama") == before
    config["measure"]["repeats"] += 1
    assert cell_settings_hash(config, "tiny-llama") != before


def slow_config(repo: Path) -> str:
    cfg = yaml.safe_load((repo / "config" / "quick.yaml").read_text())
    cfg["measure"].update(repeats=3, min_window_s=5.0, max_runs_per_window=100000)
    (repo / "config" / "slow.yaml").write_text(yaml.safe_dump(cfg))
    return "config/slow.yaml"


def start_slow_cell(repo: Path, extra_env=None) -> tuple[subprocess.Popen, int]:
    """A client measuring a ~20 s cell; returns it and its host's pid once the host is measuring."""
    config = slow_config(repo)
    env = dict(os.environ, CTXENERGY_HOST_DIR=str(repo / "hosts"), **(extra_env or {}))
    client = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ctxenergy",
            "measure",
            "--config",
            config,
            "--model",
            "tiny-llama",
            "--engine",
            "hf-sdpa",
            "--phase",
            "prefill",
            "--length",
            "64",
            "--engine-host",
        ],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list((repo / "hosts").glob("*.log")) if (repo / "hosts").exists() else []
        if logs and "loaded in" in logs[0].read_text():
            break
        time.sleep(0.1)
    time.sleep(2.0)  # inside the cell's protocol now
    pid = int(next((repo / "hosts").glob("*.pid")).read_text())
    return client, pid


def test_a_stopped_job_takes_its_host_down_without_writing_the_cell(smoke_repo):
    client, host_pid = start_slow_cell(smoke_repo)
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=30)
    assert client.returncode != 0
    assert wait_gone(host_pid, timeout=30)
    assert not (smoke_repo / "results" / "cells" / "tiny-llama" / "hf-sdpa" / "prefill" / "L64.parquet").exists()


def test_job_and_host_end_with_a_killed_snakemake_without_writing_the_cell(smoke_repo):
    """Snakemake killed with SIGKILL tells nobody: the job and its host watch the Snakemake process they serve."""
    snakemake = subprocess.Popen(["sleep", "300"])  # stands in for the Snakemake process
    client, host_pid = start_slow_cell(smoke_repo, {"CTXENERGY_WORKFLOW": f"{snakemake.pid}:"})
    snakemake.kill()
    snakemake.wait()
    assert wait_gone(host_pid, timeout=10) and client.wait(timeout=10) != 0
    assert not (smoke_repo / "results" / "cells" / "tiny-llama" / "hf-sdpa" / "prefill" / "L64.parquet").exists()
    # Whichever watch sees it first stops: the host itself, or the job, which takes its host down with it (a race
    # of two 0.5 s polls; under load the job's often wins). Either way it is the ended Snakemake that stopped them.
    said = next((smoke_repo / "hosts").glob("*.log")).read_text() + client.stderr.read()
    assert "has ended: stopping" in said


def test_stop_does_not_wait_for_a_host_measuring_for_a_dead_job(smoke_repo):
    client, host_pid = start_slow_cell(smoke_repo)
    client.kill()  # SIGKILL: the job cannot tell its host
    client.wait(timeout=30)
    t0 = time.monotonic()
    stop(smoke_repo)
    assert time.monotonic() - t0 < engine_host.STOP_REPLY_TIMEOUT_S + 15
    assert wait_gone(host_pid, timeout=30)


def test_the_socket_path_appears_only_once_the_host_listens(tmp_path, monkeypatch):
    """A client that sees the path must be able to connect: between bind and listen a connect is refused, which
    under load made a freshly spawned host look unreachable."""
    import socket

    path = tmp_path / "h.sock"
    exists_at_listen = []
    real_listen = socket.socket.listen

    def listen(self, *args):
        exists_at_listen.append(path.exists())
        return real_listen(self, *args)

    monkeypatch.setattr(socket.socket, "listen", listen)
    server = engine_host._listen(path)
    try:
        assert exists_at_listen == [False] and path.exists()
        conn = engine_host._connect(path)
        assert conn is not None
        conn.close()
    finally:
        server.close()
