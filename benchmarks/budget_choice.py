"""Which cells `budget_s` chooses: the plan that `missing_cells` would make for one engine's missing cells.

    python benchmarks/budget_choice.py JOBS_DIR[,JOBS_DIR...] DONE_CELLS_DIR ENGINE BUDGET_S

JOBS_DIR: the `jobs/` folders the estimates come from; DONE_CELLS_DIR: the cells already measured (those are not
missing). Prints the chosen cells, the engine loads they need and the summary line. Run with
PYTHONPATH=<older checkout>/src, it gives that version's choice. Used for docs/gpu-runs/2026-11-29g-call-estimates.txt.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ctxenergy.budget import within_budget
from ctxenergy.config import load_config
from ctxenergy.grid import expand_grid
from ctxenergy.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def choose(jobs_dirs: list[str], done_dir: str, engine: str, budget_s: float) -> tuple[list[str], str]:
    cfg = load_config(REPO / "config.yaml", [REPO / "config" / "campaign.yaml"])
    done = {p.relative_to(done_dir).with_suffix("").as_posix() for p in Path(done_dir).rglob("L*[0-9].parquet")}
    missing = [c for c in expand_grid(Settings.from_config({**cfg, "engines": [engine]})) if c.cell_id not in done]
    chosen, summary = within_budget(missing, budget_s, jobs_dirs, Settings.from_config(cfg))
    return [c.cell_id for c in chosen], summary


def main(argv: list[str]) -> None:
    if len(argv) != 4:
        sys.exit(__doc__.strip().splitlines()[2].strip())
    cells, summary = choose(argv[0].split(","), argv[1], argv[2], float(argv[3]))
    pairs = sorted({"/".join(c.split("/")[:2]) for c in cells})
    print(summary)
    print(f"engine loads: {len(pairs)} ({', '.join(pairs)})")
    print("\n".join(cells))


if __name__ == "__main__":
    main(sys.argv[1:])
