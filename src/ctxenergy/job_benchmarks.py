"""The wall time and memory of each job, from the benchmark files Snakemake writes for a rule's `benchmark:`.

Read by the budget (estimates from jobs measured before) and by the provenance page (the GPU time a campaign took).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def job_seconds(jobs_dir: str | Path | None) -> pd.DataFrame:
    """Every job with a Snakemake benchmark file under `jobs_dir`: rule, job, wall seconds and the largest resident
    memory of its processes in MB (NaN where the file lacks it), one row per benchmark row."""
    rows = []
    if jobs_dir is not None and Path(jobs_dir).is_dir():
        root = Path(jobs_dir)
        for tsv in sorted(root.rglob("*.tsv")):
            rel = tsv.relative_to(root)
            bench = pd.read_csv(tsv, sep="\t")
            rss = pd.to_numeric(bench.get("max_rss", pd.Series(index=bench.index, dtype=float)), errors="coerce")
            rule = rel.parts[0] if len(rel.parts) > 1 else rel.stem  # calibrate.tsv lies at the top
            for s, mb in zip(bench["s"], rss):
                rows.append({"rule": rule, "job": str(rel.with_suffix("")), "s": float(s), "max_rss_mb": mb})
    return pd.DataFrame(rows, columns=["rule", "job", "s", "max_rss_mb"])
