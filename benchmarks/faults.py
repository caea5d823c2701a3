"""Fault suite: what a user sees when something goes wrong, for every fault in a catalogue.

    python benchmarks/faults.py [--out benchmarks/results/faults.csv] [--only ID ...]

Each fault is injected into its own temporary copy of the repository (or its own fake GPU), run the way a user
or the workflow runs it (the `ctxenergy` CLI, Snakemake on the CPU smoke config, or `measure_cell` on a fake
NVML), and its outcome sorted into one of four classes by `classify`:

  correct         the run gives the result it gives without the fault (or the documented correct result)
  clear error     it stops (non-zero exit, or a cell status other than ok / a flag that excludes the cell) with one
                  line that starts `ctxenergy:` (or is the cell's reason) and names the file or key, no traceback
  ugly error      it stops with a traceback, a multi-line dump, a line that does not name the thing, a hang,
                  a valid input refused, or damage left behind (overwritten inputs, partial files, processes)
  silently wrong  exit 0 / status ok with a wrong or missing number, a stale row, or changed settings

and a fifth, counted apart: `upstream`, an ugly error raised by a tool before any of this project's code runs (the
fault's catalogue entry says why nothing here can reach it, and where it is reported); never counted as clear.

The table has one row per fault: id, kind, fault, class, and the line the user would act on (for a traceback,
its last line; for a silently wrong result, what was wrong). tests/test_faults.py runs each fault as a test.
Expensive setup (one CPU smoke run, one fake-GPU config) is made once and copied per fault.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # fake_nvml
from conftest import copy_repo  # noqa: E402  (the tests' clone-like copy of the repository, the same for the suite)

CORRECT, CLEAR, UGLY, SILENT, UPSTREAM = "correct", "clear error", "ugly error", "silently wrong", "upstream"
CLASSES = (CORRECT, CLEAR, UGLY, SILENT, UPSTREAM)
# Text that is a dump rather than a message: a Python traceback, jsonschema's validation report.
UGLY_MARKERS = ("Traceback (most recent call last)", "Failed validating", "On instance", "On schema")


# --- what a run showed, and its class --------------------------------------------------------------------------


@dataclass
class Observation:
    """What one faulted run showed its user.

    failed: it stopped (non-zero exit, an exception, a non-ok cell status, or a flag that excludes the cell).
    message: what the user reads: stderr of a command; Snakemake's output and its failed jobs' logs; a cell's reason.
    channel: "cli" (stderr must be exactly one line), "workflow" (the `ctxenergy:` line among Snakemake's output)
             or "status" (a cell's status reason or flag, one line).
    right: on success, whether the result equals the correct one; detail says what was wrong.
    names: the message must name one of these (the file or the key) to be clear.
    damage: what the run broke or left behind even though it reported an error (overwritten inputs, partial files,
            processes left running); a run with damage is never clear.
    must_succeed: the input is valid: refusing it is an ugly error, however clearly worded.
    """

    failed: bool
    message: str = ""
    channel: str = "cli"
    right: bool = True
    detail: str = ""
    names: tuple[str, ...] = ()
    damage: str = ""
    must_succeed: bool = False
    timed_out: bool = False


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def classify(obs: Observation) -> tuple[str, str]:
    """(class, the line the user acts on) of one observation; see the module doc for the four classes."""
    if obs.timed_out:
        return UGLY, f"no answer: {obs.detail or 'timed out'}"
    if not obs.failed:
        if obs.damage:
            return SILENT, obs.damage
        return (CORRECT, "same result as without the fault") if obs.right else (SILENT, obs.detail)
    text = obs.message
    if obs.damage:
        return UGLY, f"{_error_line(obs) or _telling_line(text)} [{obs.damage}]"
    if any(marker in text for marker in UGLY_MARKERS):
        return UGLY, _exception_line(text) if "Traceback" in text else _first_marker_context(text)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if obs.channel == "cli" and len(lines) != 1:
        return UGLY, (f"{len(lines)} lines: {lines[0]}" if lines else "stopped without a word")
    line = _error_line(obs)
    if not line:
        return UGLY, f"no ctxenergy: line: {_telling_line(text) or 'nothing'}"
    if obs.must_succeed:
        return UGLY, f"valid input refused: {line}"
    if obs.names and not any(n in line for n in obs.names):
        return UGLY, f"names none of {', '.join(obs.names)}: {line}"
    return CLEAR, line


def _error_line(obs: Observation) -> str:
    lines = [line.strip() for line in obs.message.splitlines() if line.strip()]
    if obs.channel == "status":
        return lines[0] if len(lines) == 1 else ""
    ours = [line[line.index("ctxenergy:") :] for line in lines if "ctxenergy:" in line]
    if obs.channel == "cli":
        return ours[0] if ours and lines[0].startswith("ctxenergy:") else ""
    named = [line for line in ours if any(n in line for n in obs.names)]
    return (named or ours or [""])[-1]


def _telling_line(text: str) -> str:
    """The first line of a long output that says what went wrong."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    telling = [x for x in lines if re.search(r"error|exception|cannot|failed|lock", x, re.I)]
    return (telling or lines or [""])[0]


def _exception_line(text: str) -> str:
    """The line of a traceback that names the exception (its last `SomethingError: ...` line)."""
    tail = text.split("Traceback (most recent call last)")[-1]
    found = re.findall(r"^\s*([\w.]+(?:Error|Exception|Interrupt|Exit)\b.*)$", tail, re.M)
    return found[0].strip() if found else _last_line(tail)


def _first_marker_context(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{len(lines)}-line dump: {lines[0] if lines else ''}"


# --- running things --------------------------------------------------------------------------------------------

PYTHON = sys.executable
SNAKEMAKE = [PYTHON, "-m", "snakemake"]


def _limit_file_size(max_bytes: int):
    """preexec_fn: a disk that is full after max_bytes per file (writes fail with EFBIG instead of killing)."""

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

    return apply


def run_cmd(
    args: list[str], cwd: Path, timeout: float = 180, file_limit: int | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            args,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=_limit_file_size(file_limit) if file_limit else None,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(args, -999, out, err)


def ctxenergy(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run_cmd([PYTHON, "-m", "ctxenergy", *args], cwd, **kw)


def snakemake(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return run_cmd(SNAKEMAKE + args, cwd, **kw)


def from_cli(proc: subprocess.CompletedProcess, right: bool = True, detail: str = "", **kw) -> Observation:
    if proc.returncode == -999:
        return Observation(failed=True, timed_out=True, detail="the command did not end")
    return Observation(
        failed=proc.returncode != 0, message=proc.stderr, channel="cli", right=right, detail=detail, **kw
    )


def workflow_text(proc: subprocess.CompletedProcess, cwd: Path) -> str:
    """What a Snakemake user reads: its output plus the logs it points to for the failed jobs."""
    text = proc.stdout + proc.stderr
    for log in dict.fromkeys(re.findall(r"log: (\S+?) \(check log file", text)):
        path = cwd / log
        if path.is_file():
            text += "\n" + path.read_text(errors="replace")
    return text


def from_workflow(
    proc: subprocess.CompletedProcess, cwd: Path, right: bool = True, detail: str = "", **kw
) -> Observation:
    if proc.returncode == -999:
        return Observation(failed=True, timed_out=True, detail="snakemake did not end")
    return Observation(
        failed=proc.returncode != 0,
        message=workflow_text(proc, cwd),
        channel="workflow",
        right=right,
        detail=detail,
        **kw,
    )


def from_exception(exc: BaseException, **kw) -> Observation:
    """An exception out of an in-process call, as `ctxenergy` would print it: one line for its own errors."""
    from ctxenergy.errors import CtxEnergyError

    if isinstance(exc, CtxEnergyError):
        return Observation(failed=True, message=f"ctxenergy: {exc}", channel="cli", **kw)
    return Observation(failed=True, message="".join(traceback.format_exception(exc)), channel="cli", **kw)


@contextlib.contextmanager
def read_only(path: Path):
    """`path` read-only for this process's children: a read-only bind mount as root, permissions otherwise.
    Yields False where neither works (a root without mount rights), so that the fault can say so."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield True
        finally:
            path.chmod(mode)
        return
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if mounted and subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode:
        subprocess.run(["umount", str(path)], capture_output=True)
        mounted = False
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], capture_output=True)


def processes_under(directory: Path) -> list[int]:
    """Processes whose working directory lies in `directory` (all started by this suite's runs there)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if Path(os.readlink(proc / "cwd")).is_relative_to(directory):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def stop_processes(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.append(pid)
    return out


# --- shared setup ----------------------------------------------------------------------------------------------

# The CPU smoke config cut to one engine and one length, with short windows: a complete run in seconds.
QUICK = (
    "engines: [hf-sdpa]\nlengths: [64]\n"
    "measure: {warmup: true, repeats: 2, min_window_s: 0.05, max_runs_per_window: 8, idle_s: 0.05, "
    "cooldown_s: 0.0}\n"
)
# Cells long enough (a few seconds per job) to kill or interrupt a job while it measures.
SLOW = (
    "measure: {warmup: true, repeats: 3, min_window_s: 2.0, max_runs_per_window: 100000, idle_s: 0.5, "
    "cooldown_s: 0.0}\n"
)
CONFIGS = ["--configfile", "config/smoke.yaml", "quick.yaml"]
CLI_CONFIG = ["--config", "config.yaml", "--configfile", "config/smoke.yaml", "--configfile", "quick.yaml"]
CELL = "results/cells/tiny-llama/hf-sdpa/prefill/L64.parquet"
GEN_CELL = "results/cells/tiny-llama/hf-sdpa/generate/L64.parquet"
PROMPT = "results/prompts/tiny-llama/L64.npy"
WARMUP = "results/prompts/tiny-llama/L64.warmup.npy"
# A slice of the committed H200 cells with energy: the cell-file faults corrupt copies of these.
REFERENCE_CELLS = REPO / "data" / "reference" / "nvidia-h200" / "cells" / "llama-3.1-8b" / "hf-sdpa"
REFERENCE_SLICE = [f"{phase}/L{n}" for phase in ("prefill", "generate") for n in (256, 512, 1024)]


class Context:
    """Temporary space and the expensive bases the faults copy: made on first use, shared by every fault."""

    def __init__(self, root: Path | None = None):
        self._tmp = None if root else tempfile.TemporaryDirectory(prefix="ctxenergy-faults-")
        self.root = Path(root or self._tmp.name)
        self._smoke: Path | None = None
        self._cells: Path | None = None
        self._clean_analysis: dict | None = None
        self._n = 0

    def close(self) -> None:
        stop_processes(processes_under(self.root))
        if self._tmp:
            self._tmp.cleanup()

    def workdir(self, name: str) -> Path:
        self._n += 1
        path = self.root / f"{self._n:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def smoke(self) -> Path:
        """A repository copy in which the quick smoke run is complete (prompts, warm-up, cells, table of cells)."""
        if self._smoke is None:
            base = copy_repo(self.root / "smoke-base")
            (base / "quick.yaml").write_text(QUICK)
            proc = snakemake(["results/cells.parquet", "--cores", "2", *CONFIGS], base, timeout=600)
            if proc.returncode:
                raise RuntimeError(
                    f"the fault suite's base smoke run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
                )
            self._smoke = base
        return self._smoke

    def smoke_copy(self, name: str) -> Path:
        dst = self.workdir(name) / "repo"
        shutil.copytree(self.smoke(), dst, symlinks=True)
        return dst

    def cells(self) -> Path:
        """A folder with six reference cells (three files each)."""
        if self._cells is None:
            self._cells = self.root / "reference-cells"
            for rel in REFERENCE_SLICE:
                for suffix in ("", ".runs", ".trace"):
                    src = REFERENCE_CELLS / f"{rel}{suffix}.parquet"
                    (self._cells / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, self._cells / f"{rel}{suffix}.parquet")
        return self._cells

    def cells_copy(self, name: str) -> Path:
        dst = self.workdir(name) / "cells"
        shutil.copytree(self.cells(), dst)
        return dst

    def clean_analysis(self) -> dict:
        if self._clean_analysis is None:
            result = analyse_cells(self.cells(), self.workdir("clean-analysis"))
            if result["proc"].returncode:
                raise RuntimeError(f"analysis of the clean reference cells failed:\n{result['proc'].stderr}")
            self._clean_analysis = result
        return self._clean_analysis


# --- cell files: aggregate + analyse, compared with the clean cells ----------------------------------------------

COMPARED = [
    "cell_id",
    "model",
    "engine",
    "phase",
    "length_tokens",
    "status",
    "usable",
    "energy_per_run_j",
    "dynamic_energy_per_run_j",
    "run_s",
    "n_windows",
]


def analyse_cells(cells_dir: Path, work: Path, file_limit: int | None = None, out_dir: Path | None = None) -> dict:
    """`ctxenergy aggregate` then `ctxenergy analyze` (per-cell and trace tables) over a folder of cells."""
    tables = sorted(str(p) for p in cells_dir.rglob("L*.parquet") if p.name.count(".") == 1)
    out_dir = out_dir or work
    cells_table = out_dir / "cells.parquet"
    proc = ctxenergy(["aggregate", *tables, "--out", str(cells_table)], work, file_limit=file_limit)
    result = {"proc": proc, "per_cell": None, "traces": None}
    if proc.returncode:
        return result
    proc = ctxenergy(
        [
            "analyze",
            str(cells_table),
            "--cell-tables",
            *tables,
            "--out",
            str(out_dir / "per_cell.parquet"),
            str(out_dir / "traces.parquet"),
        ],
        work,
        file_limit=file_limit,
    )
    result["proc"] = proc
    if proc.returncode == 0:
        result["per_cell"] = pd.read_parquet(out_dir / "per_cell.parquet")
        result["traces"] = pd.read_parquet(out_dir / "traces.parquet")
    return result


def _frame_differs(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> str:
    if len(a) != len(b):
        return f"{len(b)} cells where there are {len(a)}"
    a = a.sort_values("cell_id").reset_index(drop=True) if "cell_id" in a and "cell_id" in b else a
    b = b.sort_values("cell_id").reset_index(drop=True) if "cell_id" in a and "cell_id" in b else b
    for col in columns:
        if col not in a:
            continue
        if col not in b:
            return f"column {col} missing from the result"
        x, y = a[col], b[col]
        if x.dtype.kind in "fi" and y.dtype.kind in "fi":
            if not np.allclose(x.to_numpy(float), y.to_numpy(float), rtol=1e-9, equal_nan=True):
                return f"{col} differs ({_first_diff(x, y)})"
        elif not (x.astype(str).reset_index(drop=True) == y.astype(str).reset_index(drop=True)).all():
            return f"{col} differs ({_first_diff(x, y)})"
    return ""


def _first_diff(x: pd.Series, y: pd.Series) -> str:
    for i, (u, v) in enumerate(zip(x, y)):
        if str(u) != str(v):
            return f"row {i}: {u} -> {v}"
    return "values"


def cell_file_fault(
    ctx: Context,
    name: str,
    inject: Callable[[Path], None],
    names: tuple[str, ...],
    excluded_ok: str = "",
    must_stop: str = "",
) -> Observation:
    """Corrupt a copy of the reference cells, aggregate and analyse them, compare with the clean cells.

    excluded_ok: a cell id whose exclusion from the analysis (usable false, with a reason) is also correct.
    must_stop: the file breaks the data contract (workflow/schemas/cell.schema.yaml: a malformed or stale file stops
    the reader): exit 0 is wrong even when the numbers come out as before; says what was read silently.
    """
    cells = ctx.cells_copy(name)
    inject(cells)
    work = cells.parent
    result = analyse_cells(cells, work)
    proc = result["proc"]
    if proc.returncode:
        return from_cli(proc, names=names)
    clean = ctx.clean_analysis()
    per_cell = result["per_cell"]
    if excluded_ok and excluded_ok in set(per_cell["cell_id"]):
        row = per_cell[per_cell["cell_id"] == excluded_ok].iloc[0]
        if not row["usable"] and str(row.get("excluded_reason", "")):
            return Observation(failed=True, message=str(row["excluded_reason"]), channel="status")
    diff = _frame_differs(clean["per_cell"], per_cell, COMPARED) or must_stop
    if not diff:
        diff = _frame_differs(clean["traces"], result["traces"], list(clean["traces"].columns))
        diff = f"traces: {diff}" if diff else ""
    return Observation(failed=False, right=not diff, detail=diff and f"exit 0, {diff}")


def drop_column(rel: str, column: str) -> Callable[[Path], None]:
    def inject(cells: Path) -> None:
        _rewrite(cells / f"{rel}.parquet", lambda df: df.drop(columns=[column]))

    return inject


def _rewrite(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame], meta_change=None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = dict(table.schema.metadata or {})
    df = change(table.to_pandas())
    new = pa.Table.from_pandas(df, preserve_index=False)
    if meta_change:
        meta = meta_change(meta)
    new = new.replace_schema_metadata(
        {**(new.schema.metadata or {}), **{k: v for k, v in meta.items() if k != b"pandas"}}
    )
    pq.write_table(new, path)


def truncate(rel_file: str, keep: float = 0.5) -> Callable[[Path], None]:
    def inject(cells: Path) -> None:
        path = cells / rel_file
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return inject


# --- telemetry: one cell on a fake GPU, with faults in its NVML ----------------------------------------------------

EXTRA_W = 300.0
S_PER_TOKEN = 2e-5


class NVMLError(Exception):
    """Stands in for pynvml.NVMLError (a plain Exception subclass whose str is NVML's error string)."""


def _fake_classes():
    from fake_nvml import FakeNvml

    from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming

    class FaultyNvml(FakeNvml):
        """The fake NVML with hooks: each hook takes the value the fake would return (or raises)."""

        def __init__(self, gpus, **hooks):
            super().__init__(gpus)
            self.hooks = hooks

        def _hooked(self, name, value):
            hook = self.hooks.get(name)
            return hook(value) if hook else value

        def handle_by_uuid(self, uuid):
            return self._hooked("open", super().handle_by_uuid(uuid))

        def energy_j(self, h):
            return self._hooked("energy", super().energy_j(h))

        def power_instant_w(self, h):
            return self._hooked("power", super().power_instant_w(h))

        def sm_clock_mhz(self, h):
            return self._hooked("clock", super().sm_clock_mhz(h))

        def clock_event_reasons(self, h):
            return self._hooked("reasons", super().clock_event_reasons(h))

    class SleepyEngine(Engine):
        """Each run draws EXTRA_W above idle on the fake GPU for a time proportional to its tokens; `on_run` sees
        whether a run is the warm-up ("warmup") or a measured one ("window")."""

        name = "hf-sdpa"

        def __init__(self, gpu, measured_first_token, on_run=None, oom=False):
            self.gpu, self.first, self.on_run, self.oom = gpu, measured_first_token, on_run, oom

        def load(self):
            pass

        def run(self, ids, max_new_tokens):
            if self.oom:
                raise OutOfMemory("CUDA out of memory. Tried to allocate 39.00 GiB")
            if self.on_run:
                self.on_run("window" if int(ids[0]) == self.first else "warmup")
            start = time.perf_counter()
            total = ids.size * S_PER_TOKEN
            self.gpu.add_load(start, start + total, EXTRA_W)
            time.sleep(total)
            return RunTiming(start, start + total, time.perf_counter(), int(ids.size), max_new_tokens)

    return FaultyNvml, SleepyEngine


@dataclass
class GpuFault:
    """A fault in the fake GPU: NVML hooks, a change to the GPU, and actions at the first warm-up / window run
    and half-way through the idle baseline."""

    hooks: Callable[[object], dict] = lambda gpu: {}
    gpu: dict = field(default_factory=dict)
    setup: Callable[[object], None] | None = None
    at_idle: Callable[[object], None] | None = None
    at_warmup: Callable[[object], None] | None = None
    at_window: Callable[[object], None] | None = None
    oom: bool = False
    flags: tuple[str, ...] = ()  # flags that report this fault (the cell is then excluded, with the flag as reason)
    # Relative error still correct. The counter's edges are exact to a read; the instant-power integral (no counter,
    # or a counter reset) samples every 10 ms runs of ~5 ms in 0.25 s windows, which leaves up to ~10 %.
    tolerance: float = 0.05
    check: Callable[[pd.DataFrame], str] | None = None  # extra check of an ok cell's windows: "" or what is wrong


def telemetry_fault(ctx: Context, name: str, fault: GpuFault) -> Observation:
    from fake_nvml import FakeGpu

    import ctxenergy.measure as measure_mod
    from ctxenergy.config import check_semantics, load_config
    from ctxenergy.grid import Cell
    from ctxenergy.prompts import save_ids
    from ctxenergy.settings import Settings
    from ctxenergy.tables import read_cell
    from ctxenergy.telemetry.nvml_meter import NvmlMeter

    FaultyNvml, SleepyEngine = _fake_classes()
    work = ctx.workdir(name)
    config = load_config(REPO / "config.yaml", [REPO / "config/smoke.yaml"])
    config["measure"].update(repeats=3, min_window_s=0.25, idle_s=0.3, cooldown_s=0.0)
    check_semantics(config)
    L = 256
    prompt, warmup = np.arange(L) % 200 + 3, np.arange(L) % 190 + 5
    save_ids(prompt, work / "p.npy")
    save_ids(warmup, work / "w.npy")
    gpu = FakeGpu("GPU-fake-0", **{"idle_w": 100.0, "period_s": 0.1, "phase_s": 0.03, **fault.gpu})
    if fault.setup:
        fault.setup(gpu)
    fired = set()

    def on_run(kind):
        action = fault.at_warmup if kind == "warmup" else fault.at_window
        if action and kind not in fired:
            fired.add(kind)
            action(gpu)

    engine = SleepyEngine(gpu, int(prompt[0]), on_run, oom=fault.oom)
    out = work / "L256.parquet"
    real_make_engine, meter = measure_mod.make_engine, None
    measure_mod.make_engine = lambda *a: engine
    try:
        meter = NvmlMeter(
            uuids=["GPU-fake-0"],
            backend=FaultyNvml([gpu], **fault.hooks(gpu)),
            sample_interval_s=0.01,
            own_pids={os.getpid()},
        )
        if fault.at_idle:
            real_idle = meter.measure_idle

            def idle_with_fault(seconds):
                threading.Timer(seconds / 2, fault.at_idle, args=(gpu,)).start()
                return real_idle(seconds)

            meter.measure_idle = idle_with_fault
        record = measure_mod.measure_cell(
            Settings.from_config(config),
            Cell("tiny-llama", "hf-sdpa", "prefill", L),
            work / "p.npy",
            work / "w.npy",
            out,
            meter=meter,
        )
    except Exception as exc:  # noqa: BLE001 - what escapes is what the user would see
        return from_exception(exc)
    finally:
        measure_mod.make_engine = real_make_engine
        if meter is not None:
            meter.close()
    windows, _, _, meta = read_cell(out)
    if record.status != "ok":
        return Observation(
            failed=True, message=meta.get("status_reason") or f"status {record.status}, no reason", channel="status"
        )
    reported = [f for f in fault.flags if f in record.flags]
    if reported:
        return Observation(failed=True, message=f"flag {reported[0]}", channel="status")
    truth = EXTRA_W * L * S_PER_TOKEN + gpu.idle_w * windows["run_s"]
    got = windows["energy_per_run_j"].astype(float)
    err = (got / truth - 1).abs()
    if not np.isfinite(got).all() or (err > fault.tolerance).any():
        worst = int(np.nanargmax(err.fillna(np.inf).to_numpy()))
        return Observation(
            failed=False,
            right=False,
            detail=f"status ok, energy per run {got.iloc[worst]:.4g} J where the load drew "
            f"{truth.iloc[worst]:.4g} J (window {worst})",
        )
    extra = fault.check(windows) if fault.check else ""
    return Observation(failed=False, right=not extra, detail=extra)


def _freeze(gpu):
    """A hook that freezes the counter once gpu.frozen is set."""

    def hook(value):
        if getattr(gpu, "frozen", None) is None:
            return value
        return gpu.frozen

    return hook


def _freeze_now(gpu):
    from fake_nvml import FakeNvml

    gpu.frozen = FakeNvml([gpu]).energy_j(gpu)


def _step(joules):
    def action(gpu):
        gpu.counter_offset_j += joules

    return action


def _raise_after(gpu, what: str, times: int | None = None):
    """A hook that raises NVMLError once gpu.broken is set (`times` times, or forever)."""

    def hook(value):
        if getattr(gpu, "broken", False) and (times is None or gpu.raised < times):
            gpu.raised += 1
            raise NVMLError(what)
        return value

    gpu.raised = 0
    return hook


def _break(gpu):
    gpu.broken = True


def _raise_always(what):
    def hook(value):
        raise NVMLError(what)

    return hook


def _near_wrap(gpu):
    from fake_nvml import UINT64_J

    # wraps about 1.5 s after the meter opens: during the idle baseline, warm-up or first windows
    gpu.counter_offset_j = UINT64_J - 1000.0 - gpu.true_energy(time.perf_counter()) - 100.0 * 1.5


def _reset_counter(gpu):
    gpu.counter_offset_j = -(gpu.true_energy(time.perf_counter()) + 1000.0)


def _foreign(gpu):
    gpu.pids.append(424242)
    gpu.add_load(time.perf_counter(), math.inf, 200.0)


def _reasons_recorded(bit):
    def check(windows: pd.DataFrame) -> str:
        seen = windows["clock_event_reasons_start"].fillna(0).astype(int) & bit
        return "" if seen.any() else f"clock event reason {bit:#x} reported by NVML but not recorded"

    return check


def _cap_recorded(windows: pd.DataFrame) -> str:
    return "" if (windows["power_cap_fraction"].fillna(0) > 0.5).all() else "power cap reported but not recorded"


# --- CLI measure on the CPU smoke config ----------------------------------------------------------------------------


def measure_args(*extra: str, length: int = 64, engine: str = "hf-sdpa") -> list[str]:
    return [
        "measure",
        *CLI_CONFIG,
        "--model",
        "tiny-llama",
        "--engine",
        engine,
        "--phase",
        "prefill",
        "--length",
        str(length),
        *extra,
    ]


def _files_state(repo: Path, rels: list[str]) -> dict:
    return {rel: (repo / rel).read_bytes() if (repo / rel).is_file() else None for rel in rels}


def _partial_files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and (p.name.startswith(".") or p.name.endswith(".tmp"))
    )


def measure_fault(
    ctx: Context,
    name: str,
    prepare: Callable[[Path], list[str]],
    names: tuple[str, ...],
    file_limit: int | None = None,
    out: str = "out/L64.parquet",
    length: int = 64,
    engine: str = "hf-sdpa",
    guard: tuple[str, ...] = (PROMPT, WARMUP),
    must_stop: str = "",
) -> Observation:
    """`ctxenergy measure` after `prepare(repo)` (which returns extra arguments). Correct: exit 0 with an ok cell,
    or, where `must_stop` says what exit 0 would hide, a clear refusal. `guard` files must not change whatever
    happens; nothing partial may be left in the output folder."""
    repo = ctx.smoke_copy(name)
    extra = prepare(repo)
    before = _files_state(repo, list(guard))
    proc = ctxenergy(measure_args(*extra, "--out", out, length=length, engine=engine), repo, file_limit=file_limit)
    changed = [rel for rel, data in _files_state(repo, list(guard)).items() if data != before[rel]]
    damage = f"overwrote {', '.join(changed)}" if changed else ""
    partial = _partial_files((repo / out).parent) if (repo / out).parent.exists() else []
    if partial:
        damage = (damage + "; " if damage else "") + f"left {', '.join(partial)}"
    obs = from_cli(proc, names=names, damage=damage)
    if not obs.failed and not damage:
        from ctxenergy.tables import read_cell

        windows, _, _, meta = read_cell(repo / out)
        obs.right = meta["status"] == "ok" and meta["length_tokens"] == length and not must_stop
        obs.detail = f"exit 0, {must_stop}" if must_stop else f"exit 0, cell status {meta['status']}"
    return obs


def _write_npy(rel: str, ids) -> Callable[[Path], None]:
    def write(repo: Path) -> None:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(repo / rel, np.asarray(ids))

    return write


# --- Snakemake runs ------------------------------------------------------------------------------------------------


def _cells_table(repo: Path) -> pd.DataFrame:
    return pd.read_parquet(repo / "results" / "cells.parquet")


def _dry_run_shell(repo: Path, target: str, args: list[str]) -> str:
    proc = snakemake([target, "-n", "-p", "--cores", "1", "--forcerun", target, *args], repo)
    text = proc.stdout + proc.stderr
    commands = [line[line.index("ctxenergy measure") :] for line in text.splitlines() if "ctxenergy measure" in line]
    if not commands:
        raise RuntimeError(f"no measure command in the dry run:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return commands[0]


def settings_change_mid_campaign(ctx: Context) -> Observation:
    """A campaign's cell job starts after a dry run with another --config: it must still measure the campaign's
    settings (G = 8 output tokens), not the dry run's."""
    repo = ctx.smoke_copy("settings")
    command = _dry_run_shell(repo, GEN_CELL, CONFIGS)
    other = snakemake(["-n", "--cores", "1", "--config", "generate_tokens=3", *CONFIGS], repo)
    if other.returncode:
        return from_workflow(other, repo)
    command = command.replace(" --engine-host", "").split(" > ")[0]
    proc = subprocess.run(command, shell=True, cwd=repo, capture_output=True, text=True, timeout=180)
    if proc.returncode:
        return from_cli(proc)
    cell = pd.read_parquet(repo / GEN_CELL)
    tokens = int(cell["output_tokens"].iloc[0])
    return Observation(
        failed=False,
        right=tokens == 8,
        detail=f"exit 0, the campaign's cell measured G = {tokens} (the dry run's) instead of 8",
    )


def stale_row_after_deleting_a_cached_cell(ctx: Context) -> Observation:
    repo = ctx.smoke_copy("stale-row")
    shutil.copytree(repo / "results" / "cells", repo / "cached")
    args = ["results/cells.parquet", "--cores", "1", "--config", "cells_source=cached", *CONFIGS]
    first = snakemake(args, repo)
    if first.returncode:
        return from_workflow(first, repo)
    for f in (repo / "cached" / "tiny-llama" / "hf-sdpa" / "prefill").glob("L64*"):
        f.unlink()
    proc = snakemake(args, repo)
    if proc.returncode:
        return from_workflow(proc, repo, names=("cached",))
    ids = list(_cells_table(repo)["cell_id"])
    return Observation(
        failed=False,
        right=ids == ["tiny-llama/hf-sdpa/generate/L64"],
        detail=f"exit 0, results/cells.parquet still lists {ids} after a cell was deleted",
    )


def _start(args: list[str], repo: Path) -> subprocess.Popen:
    return subprocess.Popen(
        SNAKEMAKE + args, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )


def _wait_for(path: Path, seconds: float = 120) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.2)
    return False


SLOW_RUN = [CELL, "--cores", "1", *CONFIGS, "slow.yaml"]
MEASURE_LOG = "results/logs/measure_cell/tiny-llama/hf-sdpa/prefill/L64.log"


def _slow_repo(ctx: Context, name: str) -> Path:
    repo = ctx.smoke_copy(name)
    (repo / "slow.yaml").write_text(SLOW)
    for f in (repo / CELL).parent.glob("L64*"):
        f.unlink()
    (repo / MEASURE_LOG).unlink(missing_ok=True)
    return repo


def _after_stop(
    ctx: Context, repo: Path, started: subprocess.Popen, stop: Callable[[subprocess.Popen], None], what: str
) -> Observation:
    """Stop a running campaign mid-cell with `stop`, then run it again as a user would: correct when the rerun
    completes the cell and nothing of the stopped run keeps running."""
    if not _wait_for(repo / MEASURE_LOG):
        started.kill()
        return Observation(failed=True, timed_out=True, detail="the cell job never started")
    time.sleep(3.0)  # inside the measurement (engine loaded, windows running)
    before = processes_under(repo)
    stop(started)
    with contextlib.suppress(subprocess.TimeoutExpired):
        started.communicate(timeout=60)
    time.sleep(1.0)
    proc = snakemake(SLOW_RUN, repo, timeout=300)
    left = alive([p for p in before if p != started.pid])
    stop_processes(left)
    stop_processes(processes_under(repo))
    damage = f"{len(left)} process(es) of the stopped run still running after the rerun" if left else ""
    if proc.returncode:
        return from_workflow(proc, repo, names=("--unlock", "--rerun-incomplete", "unlock"), damage=damage)
    cells = _cells_table(repo) if (repo / "results" / "cells.parquet").exists() else None
    ok = (repo / CELL).exists() and pd.read_parquet(repo / CELL)["status"].iloc[0] == "ok"
    return Observation(
        failed=False,
        right=ok,
        damage=damage,
        detail="" if ok else f"rerun after {what} exit 0 without an ok cell ({cells is not None})",
    )


def kill9_snakemake(ctx: Context) -> Observation:
    repo = _slow_repo(ctx, "kill9")
    return _after_stop(ctx, repo, _start(SLOW_RUN, repo), lambda p: p.send_signal(signal.SIGKILL), "kill -9")


def ctrl_c_snakemake(ctx: Context) -> Observation:
    repo = _slow_repo(ctx, "ctrl-c")
    return _after_stop(ctx, repo, _start(SLOW_RUN, repo), lambda p: os.killpg(p.pid, signal.SIGINT), "Ctrl-C")


def kill9_cell_job(ctx: Context) -> Observation:
    """The measure job itself dies (OOM killer, node failure): Snakemake must say so, and a rerun must work."""
    repo = _slow_repo(ctx, "kill-job")

    def kill_job(p):
        for pid in processes_under(repo):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "ctxenergy measure" in cmd or "ctxenergy engine-host" in cmd or "-m ctxenergy measure" in cmd:
                os.kill(pid, signal.SIGKILL)

    started = _start(SLOW_RUN, repo)
    if not _wait_for(repo / MEASURE_LOG):
        started.kill()
        return Observation(failed=True, timed_out=True, detail="the cell job never started")
    time.sleep(3.0)
    kill_job(started)
    out, err = started.communicate(timeout=120)
    first = from_workflow(subprocess.CompletedProcess(SLOW_RUN, started.returncode, out, err), repo, names=("L64",))
    stop_processes(processes_under(repo))
    if not first.failed:
        ok = (repo / CELL).exists() and pd.read_parquet(repo / CELL)["status"].iloc[0] == "ok"
        first.right, first.detail = ok, "" if ok else "exit 0 after its cell job was killed, no ok cell"
    return first


def concurrent_snakemake(ctx: Context) -> Observation:
    """A second `snakemake` in the same folder while the first measures: the second must say so in one line, the
    first must finish its cell."""
    repo = _slow_repo(ctx, "concurrent")
    first = _start(SLOW_RUN, repo)
    if not _wait_for(repo / MEASURE_LOG):
        first.kill()
        return Observation(failed=True, timed_out=True, detail="the cell job never started")
    second = snakemake(SLOW_RUN, repo, timeout=300)
    out, err = first.communicate(timeout=300)
    stop_processes(processes_under(repo))
    ok = first.returncode == 0 and pd.read_parquet(repo / CELL)["status"].iloc[0] == "ok"
    if not ok:
        return Observation(failed=False, right=False, detail="the first run did not finish its cell beside a second")
    if second.returncode == 0:
        return Observation(failed=False, right=True, detail="the second run waited or found nothing to do")
    return from_workflow(second, repo, names=("another", "running", "lock"))


def workflow_simple(
    ctx: Context,
    name: str,
    args: list[str],
    names: tuple[str, ...],
    prepare=None,
    check: Callable[[Path, subprocess.CompletedProcess], str] | None = None,
    must_succeed: bool = False,
) -> Observation:
    repo = ctx.smoke_copy(name)
    if prepare:
        prepare(repo)
    proc = snakemake(args, repo)
    obs = from_workflow(proc, repo, names=names, must_succeed=must_succeed)
    if not obs.failed and check:
        wrong = check(repo, proc)
        obs.right, obs.detail = not wrong, wrong
    return obs


def read_only_results_workflow(ctx: Context) -> Observation:
    repo = ctx.smoke_copy("ro-results")
    with read_only(repo / "results") as ok:
        if not ok:
            return _patched_read_only_note()
        proc = snakemake(["results/cells.parquet", "--cores", "1", "--forcerun", "aggregate_cells", *CONFIGS], repo)
    return from_workflow(proc, repo, names=("results", "read-only", "Read-only", "permission"))


def _patched_read_only_note() -> Observation:
    return Observation(failed=False, right=False, detail="could not make a folder read-only here (no mount rights)")


# --- the catalogue ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    id: str
    kind: str  # config | cli | prompts | cell-files | telemetry | workflow | disk | kill | concurrency
    fault: str  # what is injected
    correct: str  # what a correct outcome is
    run: Callable[[Context], Observation]
    issue: bool = False  # one of the paths reported in the issue "No silent wrong number"
    # why an ugly outcome is out of this project's reach (raised before its code runs): then classed `upstream`
    upstream: str = ""


def _config_check(
    text: str | None,
    names: tuple[str, ...],
    extra: list[str] | None = None,
    base: str = "smoke",
    right: Callable[[str], str] | None = None,
    must_succeed: bool = False,
    files: dict | None = None,
):
    """`ctxenergy check` of the smoke config with an overlay `text` (None: no overlay) and further files."""

    def run(ctx: Context) -> Observation:
        work = ctx.workdir("check")
        for rel, content in (files or {}).items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(content)
        args = ["check", "--config", str(REPO / "config.yaml"), "--configfile", str(REPO / "config" / f"{base}.yaml")]
        if text is not None:
            (work / "overlay.yaml").write_text(text)
            args += ["--configfile", "overlay.yaml"]
        proc = ctxenergy(args + (extra or []), work)
        obs = from_cli(proc, names=names, must_succeed=must_succeed)
        if not obs.failed and right:
            wrong = right(proc.stdout)
            obs.right, obs.detail = not wrong, wrong
        return obs

    return run


def _shipped_config(name: str):
    def run(ctx: Context) -> Observation:
        import importlib.util

        import yaml

        merged = {
            **yaml.safe_load((REPO / "config.yaml").read_text()),
            **(yaml.safe_load((REPO / "config" / name).read_text()) or {}),
        }
        vllm_missing = "vllm" in merged.get("engines", []) and importlib.util.find_spec("vllm") is None
        proc = ctxenergy(["check", "--config", f"config/{name}"], REPO)
        # where vLLM is missing, the one right refusal is the line that says so
        return from_cli(proc, names=("vllm",) if vllm_missing else (name,), must_succeed=not vllm_missing)

    return run


def _cell_file(rel_inject, names, excluded_ok="", must_stop=""):
    def run(ctx: Context) -> Observation:
        return cell_file_fault(ctx, "cells", rel_inject, names, excluded_ok, must_stop)

    return run


def _swap_sibling(kind: str):
    def inject(cells: Path) -> None:
        shutil.copy2(cells / f"prefill/L512.{kind}.parquet", cells / f"prefill/L256.{kind}.parquet")

    return inject


def _rename_cell(cells: Path) -> None:
    for suffix in ("", ".runs", ".trace"):
        shutil.copy2(cells / f"prefill/L1024{suffix}.parquet", cells / f"prefill/L2048{suffix}.parquet")
    for suffix in ("", ".runs", ".trace"):
        (cells / f"prefill/L1024{suffix}.parquet").unlink()
    # the clean set has L1024 at that place: a file named L2048 that holds L1024's numbers
    _rewrite(cells / "prefill/L2048.parquet", lambda df: df)


def _duplicate_cell(cells: Path) -> None:
    (cells / "copy").mkdir()
    for suffix in ("", ".runs", ".trace"):
        shutil.copy2(cells / f"prefill/L256{suffix}.parquet", cells / f"copy/L256{suffix}.parquet")


def _future_schema(cells: Path) -> None:
    def meta(m):
        data = json.loads(m[b"ctxenergy"])
        data["schema_version"] = 99
        return {**m, b"ctxenergy": json.dumps(data).encode()}

    _rewrite(cells / "prefill/L256.parquet", lambda df: df.assign(schema_version=99), meta)


def _bad_kernel_record(cells: Path) -> None:
    def meta(m):
        data = json.loads(m[b"ctxenergy"])
        data["attention_kernels"] = "cudnn"  # a hand-edited record: a name where a phase -> kernel mapping belongs
        return {**m, b"ctxenergy": json.dumps(data).encode()}

    _rewrite(cells / "prefill/L256.parquet", lambda df: df, meta)


def _nan_energy(cells: Path) -> None:
    _rewrite(
        cells / "prefill/L256.parquet",
        lambda df: df.assign(
            energy_per_run_j=np.nan, dynamic_energy_per_run_j=np.nan, energy_j=np.nan, dynamic_energy_j=np.nan
        ),
    )


def _strings_for_numbers(cells: Path) -> None:
    _rewrite(cells / "prefill/L256.parquet", lambda df: df.assign(energy_per_run_j=df["energy_per_run_j"].map(str)))


def _empty_file(rel: str):
    def inject(cells: Path) -> None:
        (cells / rel).write_bytes(b"")

    return inject


def _remove(rel: str):
    def inject(cells: Path) -> None:
        (cells / rel).unlink()

    return inject


def _disk_full_aggregate(ctx: Context) -> Observation:
    cells = ctx.cells_copy("disk-full-aggregate")
    out = cells.parent / "results"
    out.mkdir()
    tables = sorted(str(p) for p in cells.rglob("L*.parquet") if p.name.count(".") == 1)
    proc = ctxenergy(["aggregate", *tables, "--out", str(out / "cells.parquet")], cells.parent, file_limit=2048)
    partial = _partial_files(out) + (["cells.parquet"] if proc.returncode and (out / "cells.parquet").exists() else [])
    return from_cli(
        proc,
        names=("cells.parquet", "disk", "space", "File too large"),
        damage=f"left {', '.join(partial)}" if partial else "",
    )


def _read_only_aggregate(ctx: Context) -> Observation:
    cells = ctx.cells_copy("ro-aggregate")
    out = cells.parent / "results"
    tables = sorted(str(p) for p in cells.rglob("L*.parquet") if p.name.count(".") == 1)
    with read_only(out) as ok:
        if not ok:
            return _patched_read_only_note()
        proc = ctxenergy(["aggregate", *tables, "--out", str(out / "cells.parquet")], cells.parent)
    return from_cli(proc, names=("results", "cells.parquet"))


def _prompts_cmd(ctx: Context, name: str, file_limit=None, ro=False) -> Observation:
    work = ctx.workdir(name)
    out = work / "prompts"
    args = [
        "prompts",
        *CLI_CONFIG[:4],
        "--model",
        "tiny-llama",
        "--length",
        "4096",
        "--out",
        str(out / "L4096.npy"),
        "--warmup-out",
        str(out / "L4096.warmup.npy"),
    ]
    out.mkdir()
    with read_only(out) if ro else contextlib.nullcontext(True) as ok:
        if not ok:
            return _patched_read_only_note()
        proc = ctxenergy(args, REPO, file_limit=file_limit)
    partial = _partial_files(out) + ([p.name for p in out.glob("*.npy")] if proc.returncode else [])
    return from_cli(proc, names=("L4096", "prompts"), damage=f"left {', '.join(partial)}" if partial else "")


def _measure_read_only(ctx: Context) -> Observation:
    repo = ctx.smoke_copy("ro-measure")
    out = repo / "ro"
    with read_only(out) as ok:
        if not ok:
            return _patched_read_only_note()
        proc = ctxenergy(measure_args("--out", "ro/L64.parquet"), repo)
    return from_cli(proc, names=("ro", "L64.parquet"))


def _measure_out_blocked(repo: Path) -> list[str]:
    (repo / "blocked").write_text("a file where the output folder should be\n")
    return []


def _prompt_missing(repo: Path) -> list[str]:
    # prompts of the campaign that differ from what `ctxenergy prompts` would make now, so that a rewrite shows
    _write_npy(PROMPT, np.arange(64) + 11)(repo)
    _write_npy(WARMUP, np.arange(64) + 17)(repo)
    return ["--prompt", "missing.npy"]


def _corrupt_prompt(repo: Path) -> list[str]:
    (repo / PROMPT).write_bytes(b"\x93NUMPY garbage that is not an array")
    return []


def _delete_cell_check(repo: Path, proc) -> str:
    cells = _cells_table(repo)
    measured = len(re.findall(r"rule measure_cell:", proc.stdout + proc.stderr))
    if measured != 1 or len(cells) != 2 or set(cells["status"]) != {"ok"}:
        return (
            f"exit 0, {measured} cells measured: results/cells.parquet keeps {len(cells)} rows, the deleted "
            "cell's among them"
        )
    return ""


def _lengths_check(repo: Path, proc) -> str:
    return "" if "L128" in proc.stdout else "exit 0, the dry run plans no cell at L = 128"


TELEMETRY: list[tuple] = [
    # id, what is injected, correct outcome, fault[, from the issue]
    (
        "counter-frozen",
        "energy counter never advances",
        "non-ok cell with a reason",
        GpuFault(hooks=lambda g: {"energy": _freeze(g)}, setup=lambda g: setattr(g, "frozen", 5000.0)),
        True,
    ),
    (
        "counter-frozen-after-idle",
        "counter stops after the idle baseline",
        "non-ok cell with a reason",
        GpuFault(hooks=lambda g: {"energy": _freeze(g)}, at_warmup=_freeze_now),
        True,
    ),
    (
        "counter-jump-1500j",
        "+1500 J jump inside a window (beyond the 700 W board)",
        "non-ok cell with a reason",
        GpuFault(at_window=_step(1500.0)),
        True,
    ),
    (
        "counter-backward-50j",
        "-50 J backward step inside a window",
        "non-ok cell with a reason",
        GpuFault(at_window=_step(-50.0)),
        True,
    ),
    (
        "counter-backward-20j-idle",
        "-20 J step during the idle baseline",
        "non-ok cell with a reason",
        GpuFault(at_idle=_step(-20.0)),
        True,
    ),
    (
        "counter-jump-300j-idle",
        "+300 J jump during the idle baseline",
        "non-ok cell with a reason",
        GpuFault(at_idle=_step(300.0)),
    ),
    (
        "counter-nan",
        "counter reads NaN from the first window",
        "non-ok cell with a reason",
        GpuFault(
            hooks=lambda g: {"energy": lambda v: float("nan") if getattr(g, "broken", False) else v}, at_window=_break
        ),
    ),
    # non-ok, not the wrap taken back: near 2^64 mJ a float in J holds 4 J only, which left energies ~8 % off
    ("counter-wrap", "64-bit counter wraps during the cell", "non-ok cell with a reason", GpuFault(setup=_near_wrap)),
    (
        "counter-reset",
        "counter resets to 0 inside a window",
        "correct energy (instant-power integral) or non-ok",
        GpuFault(at_window=_reset_counter, tolerance=0.15),
    ),
    (
        "no-counter",
        "GPU without an energy counter",
        "correct energy from the instant-power trace",
        GpuFault(gpu={"has_counter": False}, tolerance=0.15),
    ),
    (
        "counter-slow-1s",
        "counter published every 1 s (windows of 0.25 s)",
        "correct energy, or flagged short_window",
        GpuFault(gpu={"period_s": 1.0}, flags=("short_window",)),
    ),
    (
        "nvml-open-error",
        "NVML error when the GPU is opened",
        "one-line error naming NVML",
        GpuFault(hooks=lambda g: {"open": _raise_always("Unknown Error")}),
    ),
    (
        "nvml-energy-lost",
        "energy read fails from the first window on (GPU lost)",
        "non-ok cell or one-line error",
        GpuFault(hooks=lambda g: {"energy": _raise_after(g, "GPU is lost")}, at_window=_break),
    ),
    (
        "nvml-energy-transient",
        "one energy read fails inside a window",
        "correct energy, or non-ok with a reason",
        GpuFault(hooks=lambda g: {"energy": _raise_after(g, "Timeout", times=1)}, at_window=_break),
    ),
    (
        "nvml-power-errors",
        "every instant-power read fails",
        "correct energy (the counter does not need them)",
        GpuFault(hooks=lambda g: {"power": _raise_always("Not Supported")}),
    ),
    (
        "nvml-clock-error",
        "clock reads fail from the first window on",
        "correct energy, or non-ok with a reason",
        GpuFault(hooks=lambda g: {"clock": _raise_after(g, "Unknown Error")}, at_window=_break),
    ),
    (
        "gpu-busy",
        "another process on the GPU drawing 200 W",
        "flagged foreign_process or non-ok",
        GpuFault(setup=_foreign, flags=("foreign_process",)),
    ),
    (
        "thermal-throttle",
        "NVML reports thermal slowdown",
        "flagged thermal_throttle or non-ok",
        GpuFault(setup=lambda g: setattr(g, "reasons", 0x40), flags=("thermal_throttle",)),
    ),
    (
        "power-cap",
        "NVML reports the software power cap",
        "correct energy, power_cap_fraction recorded",
        GpuFault(setup=lambda g: setattr(g, "reasons", 0x4), check=_cap_recorded),
    ),
    (
        "clock-slowdown",
        "NVML reports hardware slowdown",
        "correct energy, the reason recorded",
        GpuFault(setup=lambda g: setattr(g, "reasons", 0x8), check=_reasons_recorded(0x8)),
    ),
    ("oom", "engine runs out of device memory", "cell status oom with a reason", GpuFault(oom=True)),
]


def _telemetry(fault_id: str, gpu_fault: GpuFault):
    return lambda ctx: telemetry_fault(ctx, fault_id, gpu_fault)


def catalogue() -> list[Fault]:
    f: list[Fault] = []
    add = f.append
    # --- config ---
    for name in sorted(p.name for p in (REPO / "config").glob("*.yaml")):
        add(
            Fault(
                f"shipped-config-{name.removesuffix('.yaml')}",
                "config",
                f"ctxenergy check --config config/{name}",
                "valid (an overlay is checked on top of config.yaml), or a clear line where an engine is missing",
                _shipped_config(name),
                issue=True,
            )
        )
    add(
        Fault(
            "configfile-missing-cli",
            "config",
            "ctxenergy check --configfile nope.yaml (no such file)",
            "one line naming the file",
            _config_check(None, ("nope.yaml",), ["--configfile", "nope.yaml"]),
        )
    )
    add(
        Fault(
            "config-invalid-yaml",
            "config",
            "overlay that is not YAML",
            "one line naming the file",
            _config_check("lengths: [64\nengines: {", ("overlay.yaml",)),
        )
    )
    add(
        Fault(
            "config-typo-key",
            "config",
            "misspelt top-level key (lenghts)",
            "one line naming the key",
            _config_check("lenghts: [128]\n", ("lenghts",)),
        )
    )
    add(
        Fault(
            "config-wrong-type",
            "config",
            "generate_tokens: eight",
            "one line naming the key",
            _config_check("generate_tokens: eight\n", ("generate_tokens",)),
        )
    )
    add(
        Fault(
            "config-length-string",
            "config",
            "lengths: ['64']",
            "one line naming the key",
            _config_check("lengths: ['64']\n", ("lengths",)),
        )
    )
    add(
        Fault(
            "config-length-too-long",
            "config",
            "a length beyond the model's context",
            "one line naming it",
            _config_check("lengths: [64, 100000]\n", ("lengths", "100000")),
        )
    )
    add(
        Fault(
            "config-unknown-engine",
            "config",
            "engines: [vlm]",
            "one line naming the engine",
            _config_check("engines: [vlm]\n", ("vlm",)),
        )
    )
    add(
        Fault(
            "config-zero-tokens",
            "config",
            "generate_tokens: 0",
            "one line naming the key",
            _config_check("generate_tokens: 0\n", ("generate_tokens",)),
        )
    )
    add(
        Fault(
            "config-zero-repeats",
            "config",
            "measure.repeats: 0",
            "one line naming the key",
            _config_check("measure: {repeats: 0}\n", ("repeats",)),
        )
    )
    add(
        Fault(
            "config-no-models",
            "config",
            "models: []",
            "one line naming the key",
            _config_check("models: []\n", ("models",)),
        )
    )
    add(
        Fault(
            "config-duplicate-lengths",
            "config",
            "lengths: [64, 64]",
            "4 cells, or one line naming lengths",
            _config_check(
                "lengths: [64, 64]\n",
                ("lengths",),
                right=lambda out: "" if ", 4 cells" in out else f"exit 0: {out.strip()}",
            ),
        )
    )
    add(
        Fault(
            "config-model-json-invalid",
            "config",
            "a model whose config.json is not JSON",
            "one line naming the file",
            _config_check(
                "models: [{name: broken, config: broken/config.json}]\n",
                ("broken/config.json",),
                files={"broken/config.json": '{"hidden_size": 128,'},
            ),
            issue=True,
        )
    )
    add(
        Fault(
            "config-model-json-missing",
            "config",
            "a model without an architecture config",
            "one line naming the file",
            _config_check("models: [{name: nowhere}]\n", ("nowhere",)),
        )
    )
    add(
        Fault(
            "config-weights-missing",
            "config",
            "weights: a path that does not exist",
            "one line naming it",
            _config_check("models: [{name: tiny-llama, weights: ./no/such/model}]\n", ("no/such/model",)),
        )
    )
    add(
        Fault(
            "config-empty-overlay",
            "config",
            "an empty overlay file",
            "the smoke config, unchanged",
            _config_check("", ("overlay.yaml",), right=lambda out: "" if ", 8 cells" in out else out.strip()),
        )
    )
    # --- workflow configuration ---
    add(
        Fault(
            "snakemake-configfile-missing",
            "config",
            "snakemake --configfile nope.yaml",
            "one line naming it",
            lambda ctx: workflow_simple(ctx, "smk-configfile", ["-n", "--configfile", "nope.yaml"], ("nope.yaml",)),
            issue=True,
            upstream="Snakemake loads --configfile while parsing its command line, before the Snakefile or "
            "anything of ours runs (a profile only adds arguments); its traceback ends naming the file "
            "(FileNotFoundError: ... 'nope.yaml'); the same report: dib-lab/charcoal#114",
        )
    )
    add(
        Fault(
            "snakemake-config-type",
            "config",
            "snakemake --config generate_tokens=abc",
            "one line naming the key",
            lambda ctx: workflow_simple(
                ctx, "smk-type", ["-n", "--config", "generate_tokens=abc", *CONFIGS], ("generate_tokens",)
            ),
            issue=True,
        )
    )
    add(
        Fault(
            "snakemake-config-lengths",
            "config",
            "snakemake --config 'lengths=[64,128]'",
            "a grid with L = 128, or one line saying how to set lengths",
            lambda ctx: workflow_simple(
                ctx, "smk-lengths", ["-n", "--config", "lengths=[64,128]", *CONFIGS], ("lengths",), check=_lengths_check
            ),
            issue=True,
        )
    )
    add(
        Fault(
            "snakemake-unknown-engine",
            "config",
            "snakemake --config engines=[vlm]",
            "one line naming it",
            lambda ctx: workflow_simple(ctx, "smk-engine", ["-n", "--config", "engines=[vlm]", *CONFIGS], ("vlm",)),
        )
    )
    # --- ctxenergy measure ---
    add(
        Fault(
            "measure-engine-not-in-config",
            "cli",
            "measure --engine hf-eager where quick.yaml lists hf-sdpa only",
            "one line naming the file that lists the engines",
            lambda ctx: measure_fault(ctx, "engine-not-in-config", lambda r: [], ("quick.yaml",), engine="hf-eager"),
            issue=True,
        )
    )
    add(
        Fault(
            "measure-unknown-model",
            "cli",
            "measure --model nosuch",
            "one line naming the model",
            lambda ctx: from_cli(
                ctxenergy([a if a != "tiny-llama" else "nosuch" for a in measure_args()], ctx.smoke()),
                names=("nosuch",),
            ),
        )
    )
    add(
        Fault(
            "measure-length-0",
            "cli",
            "measure --length 0",
            "one line naming --length",
            lambda ctx: measure_fault(ctx, "length-0", lambda r: [], ("--length", "length"), length=0),
            issue=True,
        )
    )
    add(
        Fault(
            "measure-length-negative",
            "cli",
            "measure --length -8",
            "one line naming --length",
            lambda ctx: measure_fault(ctx, "length-neg", lambda r: [], ("--length", "length"), length=-8),
        )
    )
    add(
        Fault(
            "measure-prompt-missing",
            "prompts",
            "measure --prompt missing.npy (L64.npy exists)",
            "one line naming the missing file; results/prompts untouched",
            lambda ctx: measure_fault(ctx, "prompt-missing", _prompt_missing, ("missing.npy",)),
            issue=True,
        )
    )
    add(
        Fault(
            "measure-warmup-wrong-length",
            "prompts",
            "warm-up prompt of 32 tokens for L = 64",
            "one line naming the warm-up file",
            lambda ctx: measure_fault(
                ctx,
                "warmup-length",
                lambda r: (_write_npy("w32.npy", np.arange(32) + 5)(r), ["--warmup-prompt", "w32.npy"])[1],
                ("w32.npy",),
                must_stop="measured after a 32-token warm-up",
            ),
            issue=True,
        )
    )
    add(
        Fault(
            "measure-warmup-same-as-prompt",
            "prompts",
            "warm-up prompt identical to the measured prompt",
            "one line naming the warm-up file",
            lambda ctx: measure_fault(
                ctx,
                "warmup-same",
                lambda r: ["--warmup-prompt", PROMPT],
                (PROMPT, "warm"),
                must_stop="warmed up on the measured prompt itself",
            ),
        )
    )
    add(
        Fault(
            "measure-prompt-corrupt",
            "prompts",
            "prompt file of garbage bytes",
            "one line naming the file",
            lambda ctx: measure_fault(
                ctx,
                "prompt-corrupt",
                lambda r: (_corrupt_prompt(r), ["--prompt", PROMPT])[1],
                ("L64.npy",),
                guard=(WARMUP,),
            ),
            issue=True,
        )
    )
    add(
        Fault(
            "measure-prompt-empty",
            "prompts",
            "prompt file of 0 bytes",
            "one line naming the file",
            lambda ctx: measure_fault(
                ctx, "prompt-empty", lambda r: ((r / "e.npy").write_bytes(b""), ["--prompt", "e.npy"])[1], ("e.npy",)
            ),
        )
    )
    add(
        Fault(
            "measure-prompt-wrong-length",
            "prompts",
            "measured prompt of 32 tokens for L = 64",
            "one line naming the file",
            lambda ctx: measure_fault(
                ctx,
                "prompt-length",
                lambda r: (_write_npy("p32.npy", np.arange(32) + 3)(r), ["--prompt", "p32.npy"])[1],
                ("p32.npy",),
            ),
        )
    )
    add(
        Fault(
            "measure-prompt-out-of-vocab",
            "prompts",
            "token ids beyond the vocabulary (10^6)",
            "one line naming the file",
            lambda ctx: measure_fault(
                ctx,
                "prompt-vocab",
                lambda r: (_write_npy("big.npy", np.full(64, 10**6))(r), ["--prompt", "big.npy"])[1],
                ("big.npy",),
            ),
        )
    )
    add(
        Fault(
            "measure-prompt-2d",
            "prompts",
            "prompt saved as a 1 x 64 array",
            "the cell, or one line naming it",
            lambda ctx: measure_fault(
                ctx,
                "prompt-2d",
                lambda r: (_write_npy("p2d.npy", (np.arange(64) + 3)[None])(r), ["--prompt", "p2d.npy"])[1],
                ("p2d.npy",),
            ),
        )
    )
    add(
        Fault(
            "measure-prompt-float",
            "prompts",
            "prompt of float token ids",
            "the cell, or one line naming it",
            lambda ctx: measure_fault(
                ctx,
                "prompt-float",
                lambda r: (_write_npy("pf.npy", np.arange(64) + 3.5)(r), ["--prompt", "pf.npy"])[1],
                ("pf.npy",),
                must_stop="float ids truncated to other tokens",
            ),
        )
    )
    add(
        Fault(
            "measure-out-blocked",
            "disk",
            "--out below a path that is a file",
            "one line naming the path",
            lambda ctx: measure_fault(
                ctx, "out-blocked", _measure_out_blocked, ("blocked",), out="blocked/L64.parquet"
            ),
        )
    )
    add(
        Fault(
            "measure-disk-full",
            "disk",
            "disk full while the cell is written (8 KiB file limit)",
            "one line naming the cell; no partial file",
            lambda ctx: measure_fault(ctx, "disk-full", lambda r: [], ("L64", "out/"), file_limit=8192),
        )
    )
    add(
        Fault(
            "measure-read-only", "disk", "--out in a read-only folder", "one line naming the folder", _measure_read_only
        )
    )
    # --- prompts and aggregate commands ---
    add(
        Fault(
            "prompts-disk-full",
            "disk",
            "disk full while prompts are written (100 B file limit)",
            "one line naming the prompt file; no partial file",
            lambda ctx: _prompts_cmd(ctx, "prompts-full", 100),
        )
    )
    add(
        Fault(
            "prompts-read-only",
            "disk",
            "prompts into a read-only folder",
            "one line naming the folder",
            lambda ctx: _prompts_cmd(ctx, "prompts-ro", ro=True),
        )
    )
    add(
        Fault(
            "aggregate-disk-full",
            "disk",
            "disk full while results/cells.parquet is written (2 KiB)",
            "one line naming the table; no partial file",
            _disk_full_aggregate,
        )
    )
    add(
        Fault(
            "aggregate-read-only",
            "disk",
            "results folder read-only for aggregate",
            "one line naming it",
            _read_only_aggregate,
        )
    )
    # --- cell files ---
    add(
        Fault(
            "cell-no-energy-column",
            "cell-files",
            "a cell without energy_per_run_j",
            "one line naming the file",
            _cell_file(drop_column("prefill/L256", "energy_per_run_j"), ("L256",)),
            issue=True,
        )
    )
    add(
        Fault(
            "cell-no-phase-column",
            "cell-files",
            "a cell without phase",
            "one line naming the file",
            _cell_file(drop_column("prefill/L256", "phase"), ("L256",)),
            issue=True,
        )
    )
    add(
        Fault(
            "cell-no-length-column",
            "cell-files",
            "a cell without length_tokens",
            "one line naming the file",
            _cell_file(drop_column("prefill/L256", "length_tokens"), ("L256",)),
            issue=True,
        )
    )
    add(
        Fault(
            "cell-no-id-column",
            "cell-files",
            "a cell without cell_id",
            "one line naming the file",
            _cell_file(drop_column("prefill/L256", "cell_id"), ("L256",)),
            issue=True,
        )
    )
    add(
        Fault(
            "cell-no-status-column",
            "cell-files",
            "a cell without status",
            "one line naming the file",
            _cell_file(drop_column("prefill/L256", "status"), ("L256",)),
        )
    )
    add(
        Fault(
            "cell-corrupt",
            "cell-files",
            "a cell file cut in half",
            "one line naming the file",
            _cell_file(truncate("prefill/L256.parquet"), ("L256",)),
            issue=True,
        )
    )
    add(
        Fault(
            "cell-empty",
            "cell-files",
            "a cell file of 0 bytes",
            "one line naming the file",
            _cell_file(_empty_file("prefill/L256.parquet"), ("L256",)),
        )
    )
    add(
        Fault(
            "cell-trace-corrupt",
            "cell-files",
            "a .trace.parquet cut in half",
            "one line naming the file",
            _cell_file(truncate("prefill/L256.trace.parquet"), ("L256.trace",)),
            issue=True,
        )
    )
    add(
        Fault(
            "cell-runs-missing",
            "cell-files",
            "a cell without its .runs.parquet",
            "one line naming the file",
            _cell_file(_remove("prefill/L256.runs.parquet"), ("L256.runs",)),
        )
    )
    add(
        Fault(
            "cell-trace-of-another-cell",
            "cell-files",
            "L256's .trace.parquet replaced by L512's",
            "one line naming the mismatched files",
            _cell_file(_swap_sibling("trace"), ("L256",)),
            issue=True,
        )
    )
    add(
        Fault(
            "cell-runs-of-another-cell",
            "cell-files",
            "L256's .runs.parquet replaced by L512's",
            "one line naming the mismatched files",
            _cell_file(_swap_sibling("runs"), ("L256",)),
        )
    )
    add(
        Fault(
            "cell-future-schema",
            "cell-files",
            "a cell with schema_version 99",
            "one line naming the file",
            _cell_file(
                _future_schema, ("L256", "schema"), must_stop="a cell of schema_version 99 read as the current version"
            ),
        )
    )
    add(
        Fault(
            "cell-bad-kernel-record",
            "cell-files",
            "a cell whose metadata's attention_kernels is a bare name instead of phase -> kernel",
            "one line naming the cell",
            _cell_file(
                _bad_kernel_record,
                ("L256", "attention_kernels"),
                must_stop="a malformed attention-kernel record read without a word",
            ),
        )
    )
    add(
        Fault(
            "cell-wrong-name",
            "cell-files",
            "L1024's files renamed L2048",
            "one line naming the file",
            _cell_file(
                _rename_cell, ("L2048",), must_stop="L2048.parquet holding an L = 1024 cell read without a word"
            ),
        )
    )
    add(
        Fault(
            "cell-duplicate",
            "cell-files",
            "one cell's files also in a second folder",
            "one line naming both",
            _cell_file(_duplicate_cell, ("L256",)),
        )
    )
    add(
        Fault(
            "cell-nan-energy",
            "cell-files",
            "an ok cell whose energies are all NaN, without a no_energy flag",
            "excluded with a reason, or one line naming the file",
            _cell_file(_nan_energy, ("L256",), excluded_ok="llama-3.1-8b/hf-sdpa/prefill/L256"),
        )
    )
    add(
        Fault(
            "cell-energy-as-text",
            "cell-files",
            "energy_per_run_j stored as text",
            "one line naming the file",
            _cell_file(_strings_for_numbers, ("L256",)),
        )
    )
    # --- telemetry ---
    for fault_id, what, correct, gpu_fault, *issue in TELEMETRY:
        add(
            Fault(fault_id, "telemetry", what, correct, _telemetry(fault_id, gpu_fault), issue=bool(issue and issue[0]))
        )
    # --- workflow, kills and concurrency ---
    add(
        Fault(
            "settings-change-mid-campaign",
            "concurrency",
            "dry run with --config generate_tokens=3 while a campaign's cell job waits",
            "the cell measures the campaign's G = 8",
            settings_change_mid_campaign,
            issue=True,
        )
    )
    add(
        Fault(
            "stale-row-deleted-cell",
            "workflow",
            "a cached cell deleted, the workflow run again",
            "results/cells.parquet without its row",
            stale_row_after_deleting_a_cached_cell,
            issue=True,
        )
    )
    add(
        Fault(
            "deleted-cell-rerun",
            "workflow",
            "one measured cell deleted, the workflow run again",
            "only that cell measured again",
            issue=True,
            run=lambda ctx: workflow_simple(
                ctx,
                "deleted-cell",
                ["results/cells.parquet", "--cores", "1", *CONFIGS],
                ("L64",),
                prepare=lambda r: [f.unlink() for f in (r / CELL).parent.glob("L64*")],
                check=_delete_cell_check,
            ),
        )
    )
    add(
        Fault(
            "corrupt-cell-in-workflow",
            "workflow",
            "a measured cell cut in half, aggregate_cells forced",
            "one line naming the cell",
            lambda ctx: workflow_simple(
                ctx,
                "corrupt-in-workflow",
                ["results/cells.parquet", "--cores", "1", "--forcerun", "aggregate_cells", *CONFIGS],
                ("L64",),
                prepare=lambda r: truncate(CELL)(r),
            ),
        )
    )
    add(
        Fault(
            "read-only-results",
            "disk",
            "results/ read-only, aggregate_cells forced",
            "one line naming results/",
            read_only_results_workflow,
        )
    )
    add(
        Fault(
            "kill9-snakemake",
            "kill",
            "kill -9 of snakemake while a cell measures, then the same command again",
            "the rerun completes the cell (or says in one line how), no process left",
            kill9_snakemake,
            issue=True,
        )
    )
    add(
        Fault(
            "ctrl-c-snakemake",
            "kill",
            "Ctrl-C (SIGINT to the group) while a cell measures, then again",
            "the rerun completes the cell, no process left",
            ctrl_c_snakemake,
        )
    )
    add(
        Fault(
            "kill9-cell-job",
            "kill",
            "kill -9 of the cell's measuring process",
            "one line naming the cell",
            kill9_cell_job,
        )
    )
    add(
        Fault(
            "concurrent-snakemake",
            "concurrency",
            "a second snakemake in the folder while the first measures",
            "the first completes; the second says in one line that another run holds the folder",
            concurrent_snakemake,
        )
    )
    return f


FAULTS = catalogue()


# --- runner --------------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: Fault
    cls: str
    message: str
    seconds: float


def run_fault(fault: Fault, ctx: Context) -> Outcome:
    t0 = time.monotonic()
    try:
        obs = fault.run(ctx)
        cls, message = classify(obs)
        if cls == UGLY and fault.upstream:
            cls, message = UPSTREAM, f"{message} [{fault.upstream}]"
    except Exception as exc:  # noqa: BLE001 - a harness failure is reported, not hidden
        cls, message = "harness error", f"{type(exc).__name__}: {_last_line(str(exc)) or exc!r}"
    # the table is committed: no path of the machine that ran it
    message = message.replace(str(ctx.root), "<tmp>").replace(str(REPO), "<repo>")
    message = re.sub(r"/tmp/ctxenergy-faults-\w+", "<tmp>", message)
    return Outcome(fault, cls, " ".join(message.split())[:300], time.monotonic() - t0)


def write_table(outcomes: list[Outcome], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "kind", "fault", "correct_outcome", "from_issue", "outcome", "message"])
        for o in outcomes:
            w.writerow(
                [
                    o.fault.id,
                    o.fault.kind,
                    o.fault.fault,
                    o.fault.correct,
                    "yes" if o.fault.issue else "",
                    o.cls,
                    o.message,
                ]
            )


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    out = {c: 0 for c in CLASSES}
    for o in outcomes:
        out[o.cls] = out.get(o.cls, 0) + 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "faults.csv"))
    p.add_argument("--only", nargs="*", help="fault ids to run (default: all)")
    args = p.parse_args(argv)
    faults = [f for f in FAULTS if not args.only or f.id in args.only]
    ctx = Context()
    outcomes = []
    t0 = time.monotonic()
    try:
        for fault in faults:
            o = run_fault(fault, ctx)
            outcomes.append(o)
            print(f"{o.seconds:6.1f} s  {fault.id:34s} {o.cls:15s} {o.message[:110]}", flush=True)
    finally:
        ctx.close()
    write_table(outcomes, Path(args.out))
    c = counts(outcomes)
    print(
        f"{len(outcomes)} faults in {time.monotonic() - t0:.0f} s: "
        + ", ".join(f"{n} {k}" for k, n in c.items())
        + f" -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
