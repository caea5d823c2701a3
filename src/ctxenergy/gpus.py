"""Claiming GPUs for a measurement job: one cell per GPU on a multi-GPU host, k GPUs for a tp=k cell.

Snakemake counts `gpu` resources but never says which GPU a job gets (it sets no CUDA_VISIBLE_DEVICES), so a
job claims its own: an exclusive flock on <lock dir>/<GPU UUID>.lock. The kernel drops the lock when the
last process holding the file goes away, however it goes (SIGKILL included), so a killed job never strands
a GPU. The job then sets CUDA_VISIBLE_DEVICES to the claimed UUIDs, so the engine sees only those and the
meter reads only those. When CUDA_VISIBLE_DEVICES is already set (SLURM, or the user) the job claims among
those GPUs only and leaves the variable as it was whenever it uses all of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ctxenergy.errors import ConfigError, CtxEnergyError, NoDeviceError
from ctxenergy.files import try_lock
from ctxenergy.telemetry.nvml_api import open_backend, visible_devices
from ctxenergy.telemetry.processes import foreign_pids

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

LOCK_DIR_ENV = "CTXENERGY_GPU_LOCK_DIR"


class GpuClaimError(CtxEnergyError):
    """No GPU (or not enough) for a cell: one line naming the GPUs and who holds them."""


def lock_dir() -> Path:
    """Where the lock files live: a local directory shared by every job on the host (never a network file system)."""
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "ctxenergy-gpu-locks")


def _ensure_lock_dir() -> Path:
    d = lock_dir()
    if not d.is_dir():
        d.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # sticky and world-writable like /tmp: jobs of several users share it
            os.chmod(d, 0o1777)
    return d


def _open_lock_file(path: Path) -> int:
    # Open before create: with fs.protected_regular, O_CREAT on another user's file in a sticky directory is refused.
    try:
        return os.open(path, os.O_RDWR)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)  # umask would otherwise keep other users from writing their PID
            return fd
        except FileExistsError:
            return os.open(path, os.O_RDWR)
    except PermissionError:
        return os.open(path, os.O_RDONLY)  # flock needs no write access; only the PID note is lost


def _try_lock(uuid: str, note_pid: bool = True) -> int | None:
    fd = try_lock(_open_lock_file(_ensure_lock_dir() / f"{uuid}.lock"))
    if fd is None or not note_pid:
        return fd
    with contextlib.suppress(OSError):  # the holder's PID, for the error message of whoever waits
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _is_locked(uuid: str) -> bool:
    fd = _try_lock(uuid, note_pid=False)
    if fd is None:
        return True
    os.close(fd)
    return False


def _holder(uuid: str) -> str:
    path = lock_dir() / f"{uuid}.lock"
    if not path.exists() or not _is_locked(uuid):
        return f"{uuid} free"
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"{uuid} held by pid {pid or '?'}"


def holders(uuids: list[str]) -> str:
    """'GPU-a held by pid 123, GPU-b free': who holds each GPU now."""
    return ", ".join(_holder(u) for u in uuids)


@dataclasses.dataclass
class GpuClaim:
    """GPUs held by this process until release() (or until the process dies)."""

    uuids: list[str]
    waited_s: float
    fds: list[int]

    def release(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def claim(uuids: list[str], count: int, timeout_s: float, poll_s: float = 0.2) -> GpuClaim:
    """Claim `count` distinct GPUs out of `uuids`, waiting up to timeout_s for them to become free."""
    if count > len(uuids):
        raise GpuClaimError(f"{count} GPUs needed but only {len(uuids)} available ({', '.join(uuids) or 'none'})")
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    while True:
        fds: list[int] = []
        got: list[str] = []
        for u in uuids:
            fd = _try_lock(u)
            if fd is not None:
                fds.append(fd)
                got.append(u)
                if len(got) == count:
                    return GpuClaim(got, time.monotonic() - t0, fds)
        # Not enough free: give back what we took, so that two tp jobs holding one GPU each cannot deadlock.
        for fd in fds:
            os.close(fd)
        if time.monotonic() >= deadline:
            raise GpuClaimError(
                f"no {count} free GPU(s) within {timeout_s:g} s: {holders(uuids)} "
                f"(locks in {lock_dir()}; a longer measure.gpu_claim_timeout_s waits longer)"
            )
        # Jitter: two waiting tp jobs retrying in lockstep could keep taking one GPU each.
        time.sleep(min(poll_s * random.uniform(0.5, 1.5), max(deadline - time.monotonic(), 0.0)))


def host_gpu_uuids(backend=None) -> list[str]:
    nv = backend or open_backend()
    return [nv.uuid(nv.handle(i)) for i in range(nv.device_count())]


def resolve_visible(tokens: list[str], backend=None) -> list[str]:
    """CUDA_VISIBLE_DEVICES entries (indices or UUIDs) -> UUIDs.

    Indices are NVML indices (PCI bus order); SLURM numbers GPUs the same way, and where its cgroups hide the
    other GPUs NVML sees only the allocated ones, numbered from 0 as SLURM numbers them.
    """
    host = host_gpu_uuids(backend)
    out = []
    for tok in tokens:
        if tok.isdigit():
            i = int(tok)
            if i >= len(host):
                raise GpuClaimError(
                    f"CUDA_VISIBLE_DEVICES names GPU {i} but NVML sees {len(host)} GPU(s) ({', '.join(host)})"
                )
            out.append(host[i])
        elif tok.startswith(("GPU-", "MIG-")):
            full = [u for u in host if u.startswith(tok)]  # CUDA accepts a unique UUID prefix
            out.append(full[0] if len(full) == 1 else tok)
        else:
            raise GpuClaimError(f"CUDA_VISIBLE_DEVICES entry '{tok}' is neither a GPU index nor a GPU UUID")
    return out


def _on_slurm_submit_host() -> bool:
    # The workflow is parsed where it is submitted; under SLURM the GPUs that count are the compute nodes', not these.
    return shutil.which("sbatch") is not None and "SLURM_JOB_ID" not in os.environ


def check_tp_fits_host(settings: Settings, source: str = "config", backend=None) -> None:
    """Fail with one line when a model's tp exceeds the GPUs this host can give; silent where NVML cannot tell.

    Meant for parse time (common.smk), which Snakemake repeats inside every SLURM job. Skipped on a host without
    NVML (CI, a laptop), on a SLURM submit host (its GPUs are not the ones the jobs will get), in a SLURM job given
    no GPU, and when cells_source analyses cached cells.
    """
    if settings.device != "cuda" or settings.cells_source:
        return  # nothing is measured on a GPU
    tps = [(m.name, m.tp) for m in settings.models]  # the schema has checked each tp
    given = visible_devices()
    if "SLURM_JOB_ID" in os.environ and given is None:
        return  # a SLURM job given no GPU (prompts, figures) parses the workflow too; it measures nothing
    if backend is None:
        if _on_slurm_submit_host():
            return
        try:
            backend = open_backend()
        except NoDeviceError:
            return
    try:
        if given is not None:
            usable = resolve_visible(given, backend)
            where = f"CUDA_VISIBLE_DEVICES={','.join(given)} gives"
        else:
            usable = host_gpu_uuids(backend)
            where = "this host has"
    except CtxEnergyError:
        raise
    except Exception:  # noqa: BLE001 - a parse-time check must not fail a run for a reason of its own
        return
    for name, tp in tps:
        if tp > len(usable):
            raise ConfigError(
                f"{source}: model '{name}' has tp={tp} but {where} {len(usable)} GPU(s)"
                f"{' (' + ', '.join(usable) + ')' if usable else ''}; lower tp to {max(len(usable), 1)} "
                f"or run on a node with {tp} GPUs"
            )


@contextlib.contextmanager
def claimed_devices(count: int, timeout_s: float, backend=None, who: str = "a cell"):
    """Claim `count` GPUs (among those CUDA_VISIBLE_DEVICES gives, else all of the host's), make them the only ones
    CUDA sees, and yield their UUIDs; the environment is restored and the GPUs released on exit.

    Must run before CUDA is initialised in this process. Measurement cells and the calibration both claim through
    here, so neither can share a GPU with the other.
    """
    nv = backend or open_backend()
    given = visible_devices()
    if given is not None:  # SLURM or the user chose: claim among those GPUs only
        tokens = given
        pool = resolve_visible(tokens, nv)
        where = f"CUDA_VISIBLE_DEVICES={','.join(tokens)!r} gives"
    else:
        tokens, pool = [], host_gpu_uuids(nv)
        where = "this host has"
    if count > len(pool):
        raise GpuClaimError(
            f"{who} has tp={count} but {where} {len(pool)} GPU(s)"
            f"{' (' + ', '.join(pool) + ')' if pool else ''}; lower tp or run on a node with {count} GPUs"
        )
    got = claim(pool, count, timeout_s)
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")}
    try:
        if given is None:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(got.uuids)
        elif len(got.uuids) < len(tokens):  # a subset of what was given: keep the given spelling (index or UUID)
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(t for t, u in zip(tokens, pool) if u in got.uuids)
        if any(t.isdigit() for t in tokens):
            # CUDA's default order (fastest first) can differ from NVML's PCI order; make index i the same GPU for both.
            os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        print(
            f"ctxenergy: claimed {', '.join(got.uuids)} after {got.waited_s:.1f} s "
            f"(CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']})",
            file=sys.stderr,
        )
        with contextlib.suppress(Exception):  # a warning only; the meter flags the cell itself
            for u, pids in foreign_pids(got.uuids, nv).items():
                print(
                    f"ctxenergy: warning: {u} also runs pid(s) {', '.join(map(str, pids))}, not ours; "
                    "the cell will be flagged foreign_process",
                    file=sys.stderr,
                )
        yield got.uuids
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        got.release()


@contextlib.contextmanager
def claimed_gpus(settings: Settings, cell, backend=None):
    """Yield the UUIDs of the GPUs this cell runs on (None on CPU), with CUDA_VISIBLE_DEVICES set to them.

    `cell` is a Cell or a model name (the warm-up job has no cell). Raises GpuClaimError, before anything is
    loaded, when the cell's tp exceeds the GPUs available or none frees up within measure.gpu_claim_timeout_s.
    """
    if settings.device != "cuda":
        yield None
        return
    model = getattr(cell, "model", cell)
    with claimed_devices(
        settings.model(model).tp, settings.measure.gpu_claim_timeout_s, backend, who=f"model '{model}'"
    ) as uuids:
        yield uuids


def main(args) -> int:
    """`ctxenergy gpus [--check]`: who holds which GPU; --check proves that a claim shuts out other jobs."""
    import subprocess

    uuids = host_gpu_uuids()
    print(f"lock dir {lock_dir()}; CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
    for u in uuids:
        print(_holder(u))
    if not args.check:
        return 0
    mine = claim(uuids, 1, timeout_s=0)
    print(f"pid {os.getpid()} claimed {mine.uuids[0]}")
    other = subprocess.run(
        [sys.executable, "-c", f"from ctxenergy.gpus import claim; claim([{mine.uuids[0]!r}], 1, timeout_s=1)"],
        capture_output=True,
        text=True,
    )
    refused = other.returncode != 0 and f"held by pid {os.getpid()}" in other.stderr
    print(f"another process: {'refused: ' + other.stderr.strip().splitlines()[-1] if refused else 'NOT refused'}")
    mine.release()
    claim(mine.uuids, 1, timeout_s=0).release()
    print(f"released {mine.uuids[0]}: claimable again")
    return 0 if refused else 1
