"""How well `budget_s` estimates job times: estimates made from earlier jobs against the jobs measured since.

    python benchmarks/budget_estimates.py BEFORE_JOBS_DIR[,BEFORE_JOBS_DIR...] AFTER_JOBS_DIR [ENGINE]
        [--configfile C ... --device-memory-gb G]

BEFORE: the `jobs/` folders the estimate had (e.g. those of a checkout of an earlier commit); AFTER: a `jobs/`
folder that also holds the cells measured since. For every cell job in AFTER and not in BEFORE: the estimate
(`ctxenergy.budget.estimate_s`), the measured job time, whether the job loaded the engine itself (its time then holds
the load, which the budget charges apart), and the totals. Run with PYTHONPATH=<older checkout>/src, it gives that
version's estimates. Used for docs/gpu-runs/2026-11-29f-call-estimates.txt.

A batch or an engine variant is a job of its own. With the run's config files (`--configfile`) the estimate is the
budget's own: a cell past the model's positions, the engine's limits or the memory of a GPU of
`--device-memory-gb` costs the seconds of a cell recorded without measuring, else a batch of B prompts is estimated
as one prompt of B x L tokens. For the H100 serving cells (benchmarks/results/budget_serving_estimates.txt):

    python benchmarks/budget_estimates.py \\
        data/reference/nvidia-h200/campaign/jobs,data/reference/nvidia-h200/engines-h200/jobs \\
        data/reference/nvidia-h100-80gb-hbm3/serving/jobs --configfile config/serving.yaml --device-memory-gb 80
"""

from __future__ import annotations

import argparse
import sys

from ctxenergy.budget import estimate_s, job_times
from ctxenergy.grid import DEFAULT_VARIANT, Cell

try:
    from ctxenergy.job_benchmarks import job_seconds
except ImportError:  # the package before the benchmark files had a module of their own (an older checkout)
    from ctxenergy.provenance import job_seconds

try:
    from ctxenergy.budget import ENGINE_LOADED_RSS_MB
except ImportError:  # the package before loads were taken off (run against an older checkout: its estimates)
    ENGINE_LOADED_RSS_MB = 400.0


def compare(
    before: list[str], after: str, engine: str | None = None, settings=None, memory_bytes: float | None = None
) -> list[tuple[str, float, float, bool]]:
    """(cell id, estimate, job seconds, whether the job loaded the engine) per new cell job; with `settings`, the
    budget's own estimate (`memory_bytes`: the GPU's memory the budget plans with)."""
    old = job_times(before)
    jobs = job_seconds(after)
    if "max_rss_mb" not in jobs:  # an older job_seconds: whether a job loaded the engine is not known
        jobs["max_rss_mb"] = float("nan")
    rows = []
    for job, s, rss_mb in jobs.loc[jobs["rule"] == "measure_cell", ["job", "s", "max_rss_mb"]].itertuples(index=False):
        cell = Cell.from_id(job.split("/", 1)[1])
        single = cell.batch_size == 1 and cell.variant == DEFAULT_VARIANT  # a batch or variant is its own job
        if (single and (cell.model, cell.engine, cell.phase, cell.length) in old) or (engine and cell.engine != engine):
            continue
        if settings is None:
            est = estimate_s(old, cell)
        else:
            from ctxenergy.budget import _estimates

            estimated, _ = _estimates([cell], old, settings, memory_bytes)
            est = estimated[0][0] if estimated else None
        rows.append((cell.cell_id, est, float(s), bool(rss_mb > ENGINE_LOADED_RSS_MB)))
    return sorted(rows)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("before", help="comma-separated jobs/ folders the estimate is made from")
    parser.add_argument("after", help="a jobs/ folder holding the cells measured since")
    parser.add_argument("engine", nargs="?", default=None, help="only this engine's cells")
    parser.add_argument("--configfile", nargs="*", default=None, help="the run's config files (over config.yaml)")
    parser.add_argument("--device-memory-gb", type=float, default=None, help="the GPU's memory (with --configfile)")
    args = parser.parse_args(argv)
    settings = None
    if args.configfile is not None:
        from pathlib import Path

        from ctxenergy.config import load_config
        from ctxenergy.paths import REPO_ROOT
        from ctxenergy.settings import Settings

        config = load_config(REPO_ROOT / "config.yaml", [Path(c) for c in args.configfile])
        settings = Settings.from_config(config)
    memory = args.device_memory_gb * 1e9 if args.device_memory_gb else None
    rows = compare(args.before.split(","), args.after, args.engine, settings, memory)
    print(f"{'cell':40s} {'estimate_s':>10s} {'job_s':>8s}  job loaded the engine")
    for cell_id, est, s, loaded in rows:
        print(f"{cell_id:40s} {est if est is not None else float('nan'):10.1f} {s:8.1f}  {'yes' if loaded else ''}")
    known = [(est, s) for _, est, s, _ in rows if est is not None]
    est_sum, job_sum = sum(e for e, _ in known), sum(s for _, s in known)
    print(
        f"{len(known)} of {len(rows)} cells estimated: {est_sum:.0f} s estimated, {job_sum:.0f} s measured "
        f"({job_sum / est_sum:.2f}x)"
        if known
        else f"{len(rows)} cells, none estimated"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
