"""What a reader should see first: the key findings as sentences with their intervals, each claim's verdict, the
figure that shows each claim, and where the pages came from. Shared by the report's key-results box and the
write-up's abstract, so that both say the same thing.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
from pathlib import Path

import pandas as pd

from ctxenergy import __version__
from ctxenergy.analysis.claims import VERDICTS
from ctxenergy.engines.registry import family
from ctxenergy.outputs.render import fmt, fmt_ci, join_words, tokens

HERO_FIGURE = "energy_per_token_fit"
# The figure that shows each claim of the paper; a claim without one of its own points at the closest.
CLAIM_FIGURES = {
    1: "de_dl",
    2: "power_vs_length",
    3: "energy_intensity",
    4: "io_energy",
    5: "io_energy",
    6: "engine_ratio",
    7: "io_energy",
    8: "io_energy",
    9: "achieved_throughput",
    10: "phase_map",
    11: "energy_intensity",
    12: "io_energy",
}


def verdict_summary(rows: pd.DataFrame) -> str:
    """'confirmed' when every row agrees; otherwise the count of each verdict, in VERDICTS' order."""
    counts = rows["verdict"].value_counts()
    if len(counts) == 1:
        return counts.index[0]
    return "mixed: " + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts)


def claim_verdicts(cl: pd.DataFrame) -> list[tuple[int, str, str]]:
    """(claim id, the claim, its verdict over all subjects), in the paper's order."""
    return [
        (int(cid), rows["claim"].iloc[0], verdict_summary(rows))
        for cid, rows in cl.sort_values("claim_id").groupby("claim_id", sort=False)
    ]


def _threshold_values(th: pd.DataFrame, name: str, quantity: str) -> pd.DataFrame:
    d = th[(th["phase"] == "prefill") & (th["threshold"] == name) & (th["quantity"] == quantity)]
    return d[d["value"].notna()]


def key_findings(t: dict) -> list[str]:
    """Three to five sentences with their 95 % intervals, each read from a derived table; none where a table has
    nothing to say (no usable cell: the page says why elsewhere)."""
    pc, th, io, er = t["per_cell"], t["thresholds"], t["io_ratio"], t["engine_ratios"]
    out = []
    pre = pc[(pc["phase"] == "prefill") & pc["usable"] & pc["energy_per_token_j"].notna()]
    if len(pre):
        parts = []
        for model, d in pre.groupby("model"):
            r = d.loc[d["energy_per_token_j"].idxmin()]
            value = fmt_ci(r.energy_per_token_j, r.energy_per_token_j_ci_low, r.energy_per_token_j_ci_high, scale=1e3)
            parts.append(f"{value} mJ/token ({model}, {r.engine}, L = {tokens(r.length_tokens)})")
        out.append("The lowest prefill energy per input token: " + "; ".join(parts) + ".")
    star = _threshold_values(th, "crossover", "energy_per_run_j")
    if len(star):
        lo, hi = star.loc[star["value"].idxmin()], star.loc[star["value"].idxmax()]
        out.append(
            f"The quadratic term of E(L) overtakes the linear one (L* = b/c) between L = {tokens(lo.value)} "
            f"({lo.model}, {lo.engine}) and {tokens(hi.value)} ({hi.model}, {hi.engine})."
        )
    plateau = _threshold_values(th, "power_plateau", "mean_power_w")
    limit = pc["power_limit_w"].max() if "power_limit_w" in pc else float("nan")
    if len(plateau) and pd.notna(limit):
        out.append(
            f"Prefill power reaches a plateau at the board's {fmt(limit)} W power limit from L = "
            f"{tokens(plateau['value'].min())}–{tokens(plateau['value'].max())} on, depending on the engine."
        )
    usable = io[io["usable"] & io["e_ratio"].notna()]
    if len(usable):
        fast = usable[usable["engine"].isin(family("vLLM"))]
        r = usable.loc[usable["length_tokens"].idxmax()] if fast.empty else fast.sort_values("length_tokens").iloc[-1]
        out.append(
            f"One output token costs {fmt_ci(r.e_ratio, r.e_ratio_ci_low, r.e_ratio_ci_high)}x the energy of "
            f"an input token at L = {tokens(r.length_tokens)} ({r.model}, {r.engine}, total energy)."
        )
    ratios = er[(er["phase"] == "prefill") & er["engine_b"].isin(family("vLLM")) & er["energy_ratio"].notna()]
    if len(ratios):
        top = ratios[ratios["length_tokens"] == ratios["length_tokens"].max()]
        parts = [
            f"{r.engine_a} {fmt_ci(r.energy_ratio, r.energy_ratio_ci_low, r.energy_ratio_ci_high)}x ({r.model})"
            for r in top.itertuples()
        ]
        out.append(
            f"Against vLLM at L = {tokens(top['length_tokens'].iloc[0])}, prefill needs "
            + join_words(parts)
            + " the energy."
        )
    return out[:5]


def git_commit(root: Path | None = None) -> tuple[str, str]:
    """The repository's commit (short, '+modified' where the working tree differs) and its date; ('unknown', '')
    outside a git checkout. The date is the commit's, not the clock's, so the same commit gives the same page."""
    root = root or Path(__file__).resolve().parents[3]

    def run(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit, date = run("log", "-1", "--format=%h %cs").split()
        dirty = run("status", "--porcelain", "--untracked-files=no", "--", "src", "paper")
        return commit + ("+modified" if dirty else ""), date
    except (OSError, subprocess.SubprocessError, ValueError):
        return "unknown", ""


def provenance_facts(pc: pd.DataFrame) -> dict[str, str]:
    """Where a page came from: devices, ctxenergy version, commit and date, and the cells."""
    commit, date = git_commit()
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():  # reproducible builds set the date themselves
        date = dt.datetime.fromtimestamp(int(os.environ["SOURCE_DATE_EPOCH"]), dt.timezone.utc).date().isoformat()
    devices = join_words(sorted({d for d in pc.get("device_name", []) if d})) or "no device recorded"
    return {
        "devices": devices,
        "version": __version__,
        "commit": commit,
        "date": date or "unknown",
        "cells": f"{len(pc)} cells, {int(pc['usable'].sum())} with usable energy",
    }
