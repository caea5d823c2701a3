"""How long the analysis takes to regenerate from cached cells: derived tables, figures, report, write-up.

    python benchmarks/regenerate.py [--cells data/reference/nvidia-h200] [--repeats 3]

Each stage runs as the workflow runs it, `python -m ctxenergy <verb>` in a fresh process (interpreter start-up and
imports included), on the committed reference cells, writing into a temporary directory. Nothing touches a GPU.
Target: derived tables + figures in <= 10 s (last result: benchmarks/results/regenerate.txt).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ctxenergy.analysis.derive import TABLES  # noqa: E402
from ctxenergy.grid import cached_cell_tables  # noqa: E402
from ctxenergy.outputs.figures import PLOTTERS  # noqa: E402

TARGET_S = 10.0


def stages(cells_dir: Path, out: Path) -> list[tuple[str, list[str]]]:
    tables = [str(out / "analysis" / f"{t}.parquet") for t in TABLES]
    pngs = [str(out / "figures" / f"{f}.png") for f in PLOTTERS]
    svgs = [str(out / "figures" / f"{f}.svg") for f in PLOTTERS]
    return [
        (
            "tables",
            [
                "analyze",
                str(cells_dir / "cells.parquet"),
                "--cell-tables",
                *cached_cell_tables(cells_dir / "cells"),
                "--out",
                *tables,
            ],
        ),
        ("figures", ["figures", *tables, "--out", *pngs, *svgs]),
        ("report", ["report", "--tables", *tables, "--figures", *pngs, "--out", str(out / "report" / "report.html")]),
        (
            "paper",
            [
                "paper",
                "--tables",
                *tables,
                "--figures",
                *pngs,
                "--template",
                str(ROOT / "paper" / "template.md"),
                "--out",
                str(out / "paper" / "paper.html"),
                "--markdown",
                str(out / "paper" / "paper.md"),
            ],
        ),
    ]


def run_once(cells_dir: Path) -> dict[str, float]:
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in stages(cells_dir, Path(tmp)):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "ctxenergy", *argv], cwd=ROOT, check=True, capture_output=True)
            times[name] = time.perf_counter() - t0
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cells",
        default=str(ROOT / "data" / "reference" / "nvidia-h200"),
        help="a folder with cells.parquet and cells/ (default: the committed H200 reference)",
    )
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    cells_dir = Path(args.cells)
    n_cells = len(cached_cell_tables(cells_dir / "cells"))
    runs = [run_once(cells_dir) for _ in range(args.repeats)]
    names = list(runs[0])
    print("Regeneration from cached cells (no GPU used: CPU-only timings)")
    print(
        f"host: {platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"input: {cells_dir.relative_to(ROOT) if cells_dir.is_relative_to(ROOT) else cells_dir} "
        f"({n_cells} cells); {args.repeats} repeats, each stage a fresh `python -m ctxenergy` process"
    )
    print()
    print(f"{'stage':<22}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name in names:
        t = [r[name] for r in runs]
        print(f"{name:<22}{statistics.median(t):>10.2f}{min(t):>10.2f}{max(t):>10.2f}")
    tf = [r["tables"] + r["figures"] for r in runs]
    total = [sum(r.values()) for r in runs]
    print(f"{'tables + figures':<22}{statistics.median(tf):>10.2f}{min(tf):>10.2f}{max(tf):>10.2f}")
    print(f"{'all four':<22}{statistics.median(total):>10.2f}{min(total):>10.2f}{max(total):>10.2f}")
    verdict = "met" if statistics.median(tf) <= TARGET_S else "MISSED"
    print(f"\ntarget: tables + figures <= {TARGET_S:g} s: {verdict} (median {statistics.median(tf):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
