"""Runs that need a node with two GPUs (docs/scale-out.md): the same cells with gpu=2 and with gpu=1, and the energy
of cells alone against beside a busy second GPU.

    python benchmarks/multigpu.py parallel [--config config/llama-sdpa-16k.yaml] [--work DIR]
    python benchmarks/multigpu.py interference [--config config/llama-sdpa-16k.yaml] [--lengths 1024,4096,16384]

parallel: for gpu=2, then gpu=1, a fresh copy of this repository runs `snakemake missing_cells --cores N
--resources gpu=N` (the cells only, no figures), and one row per run is appended to benchmarks/results/multigpu.csv
(device, gpus, cells, wall_s, gpu_uuids). It fails if two cells ever measured on one GPU at the same time.

interference: the config's first model and engine, prefill at each length, measured alone, then with the other GPU
running a steady bf16 matmul load, then alone again (--rounds times), each cell through `ctxenergy measure
--engine-host`. Writes benchmarks/results/multigpu_interference.csv: per length the energy per run alone and beside
the load, their difference in % with a 95 % interval (Welch, over windows), and a cell's own half-width.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ctxenergy.config import load_config
from ctxenergy.grid import cached_cell_tables
from ctxenergy.stats import t975, welch_diff_pct
from ctxenergy.tables import read_cell

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# The load beside the measured cells: claims a GPU the way cells do (so never theirs), then runs matmuls until
# terminated. Printing "loaded" tells the caller the load runs.
LOAD = """
import signal, sys, time
from ctxenergy.gpus import claimed_devices
from ctxenergy.synthetic_load import MatmulLoad
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
with claimed_devices(1, 600, who="the interference load") as uuids:
    load = MatmulLoad()
    load.start()
    print("loaded", uuids[0], flush=True)
    try:
        while True:
            time.sleep(1)
    finally:
        load.close()
"""


def copy_repo(dst: Path) -> Path:
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        if (REPO / f).is_file() and not f.startswith("data/reference/"):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / f, dst / f)
    return dst


def overlapping_cells(cells: list[tuple[str, str, float, float]]) -> list[tuple[str, str]]:
    """Pairs of cells that measured on one GPU at the same time: (cell, uuid, start, end) on one clock."""
    clashes = []
    by_gpu: dict[str, list] = {}
    for cell, uuid, start, end in cells:
        for u in uuid.split(","):
            if u:
                by_gpu.setdefault(u, []).append((start, end, cell))
    for spans in by_gpu.values():
        spans.sort()
        for (_, e1, c1), (s2, _, c2) in zip(spans, spans[1:]):
            if s2 < e1:
                clashes.append((c1, c2))
    return clashes


def _cell_spans(cells_dir: Path) -> tuple[list, str]:
    spans, device = [], "cpu"
    for path in cached_cell_tables(cells_dir):
        windows, _, _, meta = read_cell(path)
        t = meta.get("timeline", {})
        device = meta.get("device_name") or device
        if "idle_start" in t and "windows_end" in t:
            spans.append(
                (
                    meta["model"] + "/" + meta["engine"] + "/" + meta["phase"] + f"/L{meta['length_tokens']}",
                    str(windows["device_uuid"].iloc[0] or ""),
                    t["idle_start"],
                    t["windows_end"],
                )
            )
    return spans, device


def parallel(args) -> int:
    rows = []
    for gpus in (2, 1):
        repo = copy_repo(Path(args.work) / f"gpus{gpus}")
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "missing_cells",
            "--cores",
            str(gpus),
            "--resources",
            f"gpu={gpus}",
            "--configfile",
            args.config,
        ]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        (Path(args.work) / f"gpus{gpus}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            print(f"gpu={gpus}: snakemake failed; see {Path(args.work) / f'gpus{gpus}.log'}", file=sys.stderr)
            return 1
        spans, device = _cell_spans(repo / "results" / "cells")
        clashes = overlapping_cells(spans)
        if clashes:
            print(f"gpu={gpus}: cells measured on one GPU at once: {clashes}", file=sys.stderr)
            return 1
        uuids = sorted({u for _, uuid, _, _ in spans for u in uuid.split(",") if u})
        rows.append(
            {
                "device": device,
                "gpus": gpus,
                "cells": len(spans),
                "wall_s": round(wall, 1),
                "gpu_uuids": " ".join(uuids),
            }
        )
        print(f"gpu={gpus}: {len(spans)} cells in {wall:.0f} s on {len(uuids)} GPU(s)")
    df = pd.DataFrame(rows)
    out = Path(args.csv)
    df.to_csv(out, mode="a", header=not out.exists(), index=False)
    print(df.to_string(index=False))
    ratio = rows[0]["wall_s"] / rows[1]["wall_s"]
    print(f"gpu=2 / gpu=1 wall time: {ratio:.2f} (target <= 0.6)")
    return 0


def _measure(config: str, model: str, engine: str, length: int, out: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ctxenergy",
            "measure",
            "--config",
            config,
            "--model",
            model,
            "--engine",
            engine,
            "--phase",
            "prefill",
            "--length",
            str(length),
            "--engine-host",
            "--out",
            str(out),
        ],
        cwd=REPO,
        check=True,
    )


def _start_load() -> subprocess.Popen:
    load = subprocess.Popen([sys.executable, "-c", LOAD], cwd=REPO, stdout=subprocess.PIPE, text=True)
    line = load.stdout.readline()
    if not line.startswith("loaded"):
        load.kill()
        raise SystemExit("multigpu: the interference load did not start (needs a second free GPU)")
    print(f"load running on {line.split()[1]}")
    return load


def interference(args) -> int:
    config = load_config(args.config)
    model, engine = config["models"][0]["name"], config["engines"][0]
    lengths = [int(x) for x in args.lengths.split(",")]
    work = Path(args.work)
    per_run: dict[tuple[int, str], list[float]] = {}
    device = None
    conditions = [c for _ in range(args.rounds) for c in ("alone", "loaded")] + ["alone"]
    for i, condition in enumerate(conditions):
        load = _start_load() if condition == "loaded" else None
        try:
            for length in lengths:
                out = work / f"{i:02d}-{condition}" / f"L{length}.parquet"
                _measure(args.config, model, engine, length, out)
                windows, _, _, meta = read_cell(out)
                device = meta.get("device_name")
                per_run.setdefault((length, condition), []).extend(windows["energy_per_run_j"].dropna().tolist())
        finally:
            if load is not None:
                load.send_signal(signal.SIGTERM)
                load.wait(timeout=60)
    subprocess.run([sys.executable, "-m", "ctxenergy", "engine-host", "--stop"], cwd=REPO, check=False)
    rows = []
    for length in lengths:
        alone, loaded = np.array(per_run[(length, "alone")]), np.array(per_run[(length, "loaded")])
        diff, low, high = welch_diff_pct(alone, loaded)
        half = 100 * t975(alone.size - 1) * alone.std(ddof=1) / math.sqrt(alone.size) / alone.mean()
        rows.append(
            {
                "device": device,
                "model": model,
                "engine": engine,
                "length": length,
                "alone_j": alone.mean(),
                "loaded_j": loaded.mean(),
                "diff_pct": diff,
                "diff_ci_low_pct": low,
                "diff_ci_high_pct": high,
                "alone_half_width_pct": half,
                "windows_alone": alone.size,
                "windows_loaded": loaded.size,
            }
        )
    df = pd.DataFrame(rows)
    df.to_csv(args.csv.replace("multigpu.csv", "multigpu_interference.csv"), index=False)
    print(df.round(3).to_string(index=False))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", choices=["parallel", "interference"])
    p.add_argument("--config", default="config/llama-sdpa-16k.yaml")
    p.add_argument("--lengths", default="1024,4096,16384", help="interference: prefill lengths")
    p.add_argument("--rounds", type=int, default=2, help="interference: alone/loaded pairs (then alone once more)")
    p.add_argument("--work", default="results/multigpu", help="working folder for the runs' copies and cells")
    p.add_argument("--csv", default=str(RESULTS / "multigpu.csv"))
    args = p.parse_args(argv)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return parallel(args) if args.run == "parallel" else interference(args)


if __name__ == "__main__":
    sys.exit(main())
