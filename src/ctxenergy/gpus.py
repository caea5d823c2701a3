"""Claiming GPUs for a measurement job on a multi-GPU host.

Snakemake counts `gpu` resources but never says which GPU a job gets, so a job claims its own:
an exclusive flock on a lock file named after the GPU's UUID. The kernel drops the lock when the
process dies, however it dies (SIGKILL included), so a killed job never strands a GPU. The job then
sets CUDA_VISIBLE_DEVICES to the claimed UUIDs, so the engine sees only those and the meter reads only
those. Under SLURM (or whenever CUDA_VISIBLE_DEVICES is already set) the GPUs given are used as they are.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path

from ctxenergy.errors import CtxEnergyError

LOCK_DIR_ENV = "CTXENERGY_GPU_LOCK_DIR"


class GpuClaimError(CtxEnergyError):
    pass


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV, Path(tempfile.gettempdir()) / "ctxenergy-gpu-locks"))


def _try_lock(uuid: str):
    d = lock_dir()
    d.mkdir(parents=True, exist_ok=True)
    f = open(d / f"{uuid}.lock", "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def claim(uuids: list[str], count: int, timeout_s: float, poll_s: float = 0.2, holders=None) -> tuple[list[str], list]:
    """Claim `count` distinct GPUs out of `uuids`, waiting up to timeout_s; returns (claimed uuids, lock files)."""
    if count > len(uuids):
        raise GpuClaimError(f"a cell needs {count} GPUs but this host has {len(uuids)} ({', '.join(uuids)}); lower tp")
    deadline = time.monotonic() + timeout_s
    while True:
        held: list = []
        got: list[str] = []
        for u in uuids:
            f = _try_lock(u)
            if f is not None:
                held.append(f)
                got.append(u)
                if len(got) == count:
                    return got, held
        for f in held:  # not enough free: release what we took so that two tp jobs cannot deadlock
            f.close()
        if time.monotonic() > deadline:
            who = holders(uuids) if holders else ""
            raise GpuClaimError(
                f"no {count} free GPU(s) within {timeout_s:.0f} s; held: {', '.join(uuids)}{(' by ' + who) if who else ''}"
            )
        time.sleep(poll_s)


def _lock_holders(uuids: list[str]) -> str:
    out = []
    for u in uuids:
        p = lock_dir() / f"{u}.lock"
        pid = p.read_text().strip() if p.exists() else ""
        out.append(f"{u} (pid {pid or '?'})")
    return ", ".join(out)


def host_gpu_uuids(backend=None) -> list[str]:
    from ctxenergy.telemetry.nvml_api import open_backend

    nv = backend or open_backend()
    return [nv.uuid(nv.handle(i)) for i in range(nv.device_count())]


@contextlib.contextmanager
def claimed_gpus(config: dict, cell, backend=None):
    """Yield the GPU UUIDs this cell runs on (None on CPU), with CUDA_VISIBLE_DEVICES set to them."""
    if config["device"] != "cuda":
        yield None
        return
    from ctxenergy.models import resolve_model

    tp = resolve_model(config, cell.model).tp
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given:  # SLURM or the user chose: respect it, and meter exactly those GPUs
        from ctxenergy.telemetry.nvml_api import visible_gpu_uuids

        uuids = visible_gpu_uuids()
        if uuids is None:
            all_uuids = host_gpu_uuids(backend)
            uuids = [all_uuids[int(i)] for i in given.split(",") if i.strip().isdigit() and int(i) < len(all_uuids)]
        if len(uuids) < tp:
            raise GpuClaimError(f"cell needs tp={tp} GPUs but CUDA_VISIBLE_DEVICES={given} gives {len(uuids)}")
        yield uuids[:tp]
        return
    uuids, locks = claim(host_gpu_uuids(backend), tp, config["measure"]["gpu_claim_timeout_s"], holders=_lock_holders)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)
    try:
        yield uuids
    finally:
        os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        for f in locks:
            f.close()
