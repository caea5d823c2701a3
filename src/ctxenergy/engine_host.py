"""One loaded engine serving the cell jobs of one (model, engine), so that a grid pays each engine's start-up once.

Snakemake runs one job per cell, so that a cell stays rerunnable by its output path. Loading the model in every
job cost more GPU time than the measured windows themselves (docs/design-notes.md, "Engine reuse"). So the first
cell job of a (model, engine) starts a host process that claims the GPU, loads the engine and keeps it; that job
and the following ones send it their cell over a Unix socket, wait, and exit with its result. The host measures
with the same `measure_cell` as a job without a host, and writes the cell's tables itself (atomically).

A host ends when it has been idle for `measure.engine_host_idle_s`, when a job for another engine needs the GPU
(on a GPU study the job asks idle hosts to stop before it starts its own), when the workflow ends (the Snakefile's
onsuccess and onerror stop every idle host), when the Snakemake process of the run it serves is gone, even killed
with SIGKILL (workflow_process.py; the cell in progress is then not written), on SIGTERM, and after any error other
than running out of memory (a later job starts a fresh one). A host is keyed by the effective config, model, engine,
visible GPUs and this package's code: change any of them and the next job starts a new host instead of reusing a
stale one.

Not used under a batch scheduler (SLURM_JOB_ID set): a process outliving its job there would hold a GPU the
scheduler has given to someone else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import ctxenergy
from ctxenergy import processes
from ctxenergy.errors import CtxEnergyError
from ctxenergy.files import try_lock, unlock
from ctxenergy.paths import ENGINE_HOSTS_DIR
from ctxenergy.workflow_process import WorkflowWatch, current_workflow

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

HOST_DIR_ENV = "CTXENERGY_HOST_DIR"
# More concurrent hosts of one key than GPUs cannot run; a bound keeps the slot search finite.
MAX_SLOTS = 16
LISTEN_TIMEOUT_S = 60.0  # from spawning a host to its socket existing (it listens before importing torch)
STOP_TIMEOUT_S = 60.0
# An idle host answers a stop at once; one that does not is still measuring for a job that died: it is terminated.
STOP_REPLY_TIMEOUT_S = 10.0


class EngineHostError(CtxEnergyError):
    """The engine host failed or exited; the message names its log."""


@dataclass
class ResidentEngine:
    """The engine a host keeps loaded, or why it failed to load (re-raised for every cell it is asked for).

    It also keeps what later cells of the same load may reuse (`measure.run_protocol` reads and sets them): the idle
    floor (an `IdleBaseline`) with the instant it was measured, and when the last cell's windows ended without
    error, which tells a cell whether the GPU is still warm from work on this engine.
    """

    engine: object | None = None
    load_error: BaseException | None = None
    load_s: float | None = None
    load_breakdown_s: dict = field(default_factory=dict)
    cells_served: int = 0
    idle_floor: object | None = None
    idle_floor_at: float | None = None  # perf_counter
    last_windows_end: float | None = None  # perf_counter; None after a cell that failed

    def provenance(self) -> dict:
        return {"pid": os.getpid(), "load_s": self.load_s, "cells_before": self.cells_served}


def reuse_enabled(settings: Settings) -> tuple[bool, str]:
    """Whether cell jobs go through a host, and why not when they do not."""
    if not settings.measure.engine_reuse:
        return False, "measure.engine_reuse is false"
    if os.environ.get("SLURM_JOB_ID"):
        return False, "running inside a SLURM job"
    return True, ""


def host_dir() -> Path:
    return Path(os.environ.get(HOST_DIR_ENV, ENGINE_HOSTS_DIR))


def _code_fingerprint() -> str:
    """Changes whenever a module of this package changes, so that a host never serves with outdated code."""
    root = Path(ctxenergy.__file__).parent
    h = hashlib.sha256(ctxenergy.__version__.encode())
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_mtime_ns}:{st.st_size}".encode())
    return h.hexdigest()


def host_key(config_files: list, model: str, engine: str) -> str:
    h = hashlib.sha256()
    for path in config_files:
        h.update(Path(path).read_bytes())
    for part in (model, engine, os.environ.get("CUDA_VISIBLE_DEVICES", ""), sys.executable, _code_fingerprint()):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:16]


def _paths(key: str, slot: int) -> dict[str, Path]:
    base = host_dir() / f"{key}-{slot}"
    return {ext: base.with_suffix(f".{ext}") for ext in ("sock", "lock", "pid", "log")}


def _try_lock(path: Path, block: bool = False) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    return try_lock(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), block)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _send(sock: socket.socket, message: dict) -> None:
    sock.sendall(json.dumps(message, default=str).encode() + b"\n")


def _receive(sock: socket.socket) -> dict | None:
    """One newline-terminated JSON message, or None when the peer closed the connection first."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            return json.loads(b"".join(chunks))


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


# --- the job's side -------------------------------------------------------------------------------------------


def _connect(path: Path) -> socket.socket | None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        s.close()
        return None
    return s


def _remove_stale(paths: dict[str, Path]) -> None:
    for ext in ("sock", "pid"):
        with contextlib.suppress(FileNotFoundError):
            paths[ext].unlink()


def _spawn(
    config_files: list, model: str, engine: str, key: str, slot: int, idle_s: float, variant: str = "default"
) -> subprocess.Popen:
    paths = _paths(key, slot)
    _remove_stale(paths)
    log = open(paths["log"], "ab")  # handed to the child, closed here right after
    cmd = [
        sys.executable,
        "-m",
        "ctxenergy",
        "engine-host",
        "--config",
        str(config_files[0]),
        "--model",
        model,
        "--engine",
        engine,
        "--socket",
        str(paths["sock"]),
        "--idle-s",
        str(idle_s),
        "--variant",
        variant,
    ]
    for extra in config_files[1:]:
        cmd += ["--configfile", str(extra)]
    # A new session: the host must outlive this job (Snakemake ends a job's process group with the job).
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    deadline = time.monotonic() + LISTEN_TIMEOUT_S
    while not paths["sock"].exists():
        if proc.poll() is not None:
            raise EngineHostError(
                f"the engine host for {model}/{engine} exited (status {proc.returncode}) before "
                f"listening; its log {paths['log']} ends with:\n{_log_tail(paths['log'])}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise EngineHostError(
                f"the engine host for {model}/{engine} did not listen within {LISTEN_TIMEOUT_S:.0f} s;"
                f" see {paths['log']}"
            )
        time.sleep(0.02)
    return proc


def stop_idle_hosts(except_key: str | None = None) -> list[int]:
    """Ask every host that is not serving a job (and not of `except_key`) to exit, and wait until it has: the GPU it
    holds is then free for the caller. Returns the PIDs stopped."""
    stopped = []
    directory = host_dir()
    if not directory.is_dir():
        return stopped
    for sock_path in sorted(directory.glob("*.sock")):
        key, _, slot = sock_path.stem.rpartition("-")
        if key == except_key or not slot.isdigit():
            continue
        paths = _paths(key, int(slot))
        fd = _try_lock(paths["lock"])
        if fd is None:
            continue  # serving a job right now
        try:
            pid = _read_pid(paths["pid"])
            conn = _connect(paths["sock"])
            if conn is None:
                _remove_stale(paths)
                continue
            with conn:
                conn.settimeout(STOP_REPLY_TIMEOUT_S)
                try:
                    _send(conn, {"op": "stop"})
                    _receive(conn)
                except OSError:  # no answer: busy with a cell whose job is gone
                    if pid:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while pid and processes.alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid:
                stopped.append(pid)
        finally:
            unlock(fd)
    return stopped


def _exit_on_signal(signum, frame):
    """SIGTERM as SystemExit, so that `finally` blocks (closing the engine, removing the socket) run."""
    raise SystemExit(128 + signum)


def _await_reply(conn: socket.socket, pid_path: Path) -> dict | None:
    """Wait for the host's answer. If this job is stopped meanwhile (Snakemake ending it, Ctrl-C), the host is
    terminated too: it abandons the cell without writing it, instead of measuring on for a job that is gone and
    holding the GPU while it does."""
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        return _receive(conn)
    except (KeyboardInterrupt, SystemExit):
        pid = _read_pid(pid_path)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)


def request(
    config_files: list, settings: Settings, model: str, engine: str, message: dict, variant: str = "default"
) -> dict:
    """Send `message` to a host of (config, model, engine, variant), starting one when none is idle; return its
    reply. An engine variant (config engine_variants) is another load of the engine, with its own host."""
    key = host_key(config_files, model, engine if variant == "default" else f"{engine}/V-{variant}")
    fd, slot = None, 0
    for slot in range(MAX_SLOTS):
        fd = _try_lock(_paths(key, slot)["lock"])
        if fd is not None:
            break
    if fd is None:  # every slot busy: queue behind the first
        slot = 0
        fd = _try_lock(_paths(key, slot)["lock"], block=True)
    paths = _paths(key, slot)
    try:
        conn = _connect(paths["sock"])
        if conn is None:
            if settings.device == "cuda":  # an idle host of another engine may hold the GPU the new one needs
                stop_idle_hosts(except_key=key)
            _spawn(config_files, model, engine, key, slot, settings.measure.engine_host_idle_s, variant)
            conn = _connect(paths["sock"])
            if conn is None:
                raise EngineHostError(f"cannot connect to the engine host at {paths['sock']}; see {paths['log']}")
        with conn:
            _send(conn, dict(message, key=key, workflow=current_workflow()))
            reply = _await_reply(conn, paths["pid"])
    finally:
        unlock(fd)
    if reply is None:
        raise EngineHostError(
            f"the engine host for {model}/{engine} exited while serving this job; its log "
            f"{paths['log']} ends with:\n{_log_tail(paths['log'])}"
        )
    if not reply.get("ok"):
        raise EngineHostError(
            f"the engine host for {model}/{engine} failed: {reply.get('error')} (log: {paths['log']})"
        )
    return reply


# --- the host's side ------------------------------------------------------------------------------------------


def _listen(path: Path) -> socket.socket:
    """Listen on `path`. The socket is bound and listening under a temporary name and then renamed into place, so
    that a client which sees the path can connect (between bind and listen a connect is refused)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    tmp = path.with_name(path.name + "~")  # not *.sock; one byte longer (AF_UNIX paths are limited to ~107 bytes)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # only this user may connect
    try:
        s.bind(str(tmp))
    finally:
        os.umask(old)
    s.listen(64)
    os.replace(tmp, path)
    return s


def _load(settings: Settings, model: str, engine_name: str, variant: str = "default") -> ResidentEngine:
    from ctxenergy.engines import make_engine
    from ctxenergy.models import resolve_model

    resident = ResidentEngine()
    try:
        engine = make_engine(engine_name, resolve_model(settings, model), settings, variant)
        t0 = time.perf_counter()
        engine.load()
        resident.load_s = time.perf_counter() - t0
        resident.load_breakdown_s = getattr(engine, "load_timings", {})
        resident.engine = engine
    except Exception as exc:  # noqa: BLE001 - kept and reported to every cell the host is asked for
        traceback.print_exc()
        resident.load_error = exc
    return resident


def _handle(
    message: dict,
    settings: Settings,
    model: str,
    engine_name: str,
    resident: ResidentEngine,
    meter,
    uuids,
    variant: str = "default",
) -> dict:
    from ctxenergy.grid import Cell

    op = message.get("op")
    if op == "warmup":
        from ctxenergy.warmup import warm_up_resident

        return {"ok": True, "result": warm_up_resident(model, engine_name, resident, message["out"])}
    if op == "measure":
        from ctxenergy.measure import measure_cell, summary

        c = message["cell"]
        cell = Cell(
            c["model"],
            c["engine"],
            c["phase"],
            int(c["length"]),
            int(c.get("batch_size", 1)),
            c.get("variant", "default"),
        )
        if (cell.model, cell.engine, cell.variant) != (model, engine_name, variant):
            return {
                "ok": False,
                "error": f"this host serves {model}/{engine_name} (variant {variant}), not "
                f"{cell.model}/{cell.engine} (variant {cell.variant})",
            }
        record = measure_cell(
            settings,
            cell,
            message["prompt"],
            message["warmup_prompt"],
            message["out"],
            meter=meter,
            gpu_uuids=uuids,
            job_start=message.get("job_start"),
            resident=resident,
        )
        return {"ok": True, "summary": summary(record, message["out"])}
    return {"ok": False, "error": f"unknown request {op!r}"}


def serve(
    config_files: list, model: str, engine_name: str, socket_path, idle_s: float, variant: str = "default"
) -> int:
    """The host process: listen at once (so the spawning job sees it start), claim the GPU, load, then serve."""
    from ctxenergy.config import load_config
    from ctxenergy.settings import Settings

    socket_path = Path(socket_path)
    key, _, slot = socket_path.stem.rpartition("-")
    pid_path = socket_path.with_suffix(".pid")
    server = _listen(socket_path)
    pid_path.write_text(str(os.getpid()))
    signal.signal(signal.SIGTERM, _exit_on_signal)
    # Gone with the run it serves (SIGTERM, as from a stop): a cell it was measuring is abandoned, not written.
    workflow_watch = WorkflowWatch(current_workflow())
    print(f"engine host {key}-{slot} pid {os.getpid()}: {model}/{engine_name}", flush=True)
    status = 0
    meter = None
    resident = ResidentEngine()
    try:
        settings = Settings.from_config(load_config(config_files[0], config_files[1:]))
        from ctxenergy.gpus import claimed_gpus
        from ctxenergy.telemetry import open_meter

        with claimed_gpus(settings, model) as uuids:
            meter = open_meter(settings.device, uuids=uuids, sample_interval_s=settings.measure.sample_interval_s)
            resident = _load(settings, model, engine_name, variant)
            print(f"loaded in {resident.load_s} s" if resident.engine else "load failed", flush=True)
            server.settimeout(idle_s)
            while True:
                try:
                    conn, _ = server.accept()
                except socket.timeout:
                    print(f"idle for {idle_s} s: exiting", flush=True)
                    break
                with conn:
                    conn.settimeout(None)
                    message = _receive(conn) or {}
                    if message.get("op") == "stop":
                        _send(conn, {"ok": True})
                        print("asked to stop", flush=True)
                        break
                    if message.get("key") != key:
                        _send(conn, {"ok": False, "error": "request for another host key"})
                        continue
                    workflow_watch.follow(message.get("workflow"))
                    try:
                        reply = _handle(message, settings, model, engine_name, resident, meter, uuids, variant)
                        fatal = False
                    except Exception as exc:  # noqa: BLE001 - reported to the job; the host then exits
                        traceback.print_exc()
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                        fatal = True
                    with contextlib.suppress(OSError):
                        _send(conn, reply)
                    if fatal:
                        status = 1
                        break
    finally:
        if resident.engine is not None:
            resident.engine.close()
        if meter is not None:
            meter.close()
        server.close()
        for path in (socket_path, pid_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return status
