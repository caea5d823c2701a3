"""Cells measured twice, compared: a rerun (another day, board or machine) against reference cells.

A cell's 95 % interval covers what varies between its windows within one job on one GPU. A rerun elsewhere also
carries what differs between boards of one GPU model (the H200 boards of the reference data read up to 3.2 % apart
on the same GPU-bound prefills, inside NVML's per-board gain error of about 5 %: docs/measurement.md) and, for
host-bound engines, between host CPUs: HF `generate` at batch 1 waits on Python, so its run time, and with it the
total energy, follows the host's speed while its energy above idle changes much less. So each shared cell gets the
difference with its own interval (Welch, over windows), a verdict that separates "within the intervals" from "within
the board-to-board tolerance", and a note when the two runs differ in run time, settings, host CPU or GPU model.
"""

from __future__ import annotations

import math
from dataclasses import astuple
from pathlib import Path

import pandas as pd

from ctxenergy.config import HOW_NOT_WHAT
from ctxenergy.errors import CtxEnergyError
from ctxenergy.grid import Cell, cached_cell_tables
from ctxenergy.stats import summarize, welch_diff_pct
from ctxenergy.tables import read_cell, write_csv_or_parquet

KEY = ("model", "engine", "phase", "length_tokens")
# Cells match on KEY and, since the batch axis (docs/serving.md), on batch size and engine variant, as Cell's fields.
MATCH = (*KEY, "batch_size", "engine_variant")
# Above this run-time difference the two runs did not do the same thing at the same speed (host-bound engine,
# other settings, a throttled GPU): the note says so.
RUN_TIME_NOTE_PCT = 10.0
# A difference this small is still one GPU model on another board: NVML's per-board gain error is about 5 %, and the
# ten H200 boards of the reference data span up to 3.2 % on the same GPU-bound prefills (docs/measurement.md).
BOARD_TOLERANCE_PCT = 5.0
VERDICTS_WITH_DIFF = ("agrees", "within tolerance", "differs")  # both cells measured, neither a copy of the other


def _cells(directory: str | Path, what: str, key: tuple = MATCH) -> dict[tuple, tuple[pd.DataFrame, dict]]:
    cells = {}
    for path in cached_cell_tables(directory, what):
        windows, _, _, meta = read_cell(path)
        first = windows.iloc[0]
        measured = windows[windows["window"] >= 0] if "window" in windows else windows.iloc[0:0]
        cells[tuple(first[k] for k in key)] = (measured, {**meta, **first.to_dict()})
    return cells


def _values(windows: pd.DataFrame, col: str) -> list[float]:
    return windows[col].dropna().astype(float).tolist() if col in windows else []


def _diff(ref: list[float], new: list[float]) -> tuple[float, float, float]:
    if len(ref) >= 2 and len(new) >= 2:
        return welch_diff_pct(ref, new)
    if ref and new:
        mid = 100 * (sum(new) / len(new) / (sum(ref) / len(ref)) - 1)
        return mid, math.nan, math.nan
    return math.nan, math.nan, math.nan


def _differing(ref, new) -> list[str]:
    """'key ref / new' for each setting that the two cells recorded differently."""
    ref, new = ref if isinstance(ref, dict) else {}, new if isinstance(new, dict) else {}
    keys = sorted((set(ref) | set(new)) - set(HOW_NOT_WHAT))  # how a run was organised, not what it measured
    return [f"{k} {ref.get(k)} / {new.get(k)}" for k in keys if ref.get(k) != new.get(k)]


def _kernel_notes(ref, new) -> list[str]:
    """'attention kernel (decode) cudnn_attention / flash_attention' where both cells recorded the kernel that ran
    (ctxenergy.engines.sdpa_kernels) and it differs: the same engine name, another kernel."""
    if not isinstance(ref, dict) or not isinstance(new, dict) or not (ref and new):
        return []  # cells from before the record, or an engine that cannot tell
    return [
        f"attention kernel ({phase}) {ref.get(phase, 'none')} / {new.get(phase, 'none')}"
        for phase in sorted(set(ref) | set(new))
        if ref.get(phase) != new.get(phase)
    ]


def _verdict(status_ok: bool, diff: float, low: float, high: float, tolerance_pct: float) -> str:
    if not status_ok or math.isnan(diff):
        return "not comparable"
    if not math.isnan(low) and low <= 0 <= high:
        return "agrees"
    return "within tolerance" if abs(diff) <= tolerance_pct else "differs"


def cell_key(cell_id: str) -> tuple:
    """'llama-3.1-8b/hf-sdpa/prefill/L16384' -> ('llama-3.1-8b', 'hf-sdpa', 'prefill', 16384, 1, 'default'),
    matching MATCH"""
    try:
        return astuple(Cell.from_id(cell_id))
    except ValueError as exc:
        raise CtxEnergyError(f"compare: {exc}") from None


def compare_cells(
    reference: str | Path,
    candidate: str | Path,
    tolerance_pct: float = BOARD_TOLERANCE_PCT,
    cells: list[str] | None = None,
    across_models: bool = False,
) -> pd.DataFrame:
    """One row per cell found under both directories (matched on model, engine, phase and L), or per cell of
    `cells` (cell ids), each of which must be in both. across_models matches on engine, phase and L only: two model
    entries of one shape (an A/B of weight sets, each arm its own model name); the rows carry the reference's model."""
    key = MATCH[1:] if across_models else MATCH
    ref, new = _cells(reference, "reference", key), _cells(candidate, "candidate", key)
    if across_models and cells is not None:
        raise CtxEnergyError("compare: --cells names cells by model; with --across-models compare whole folders")
    if cells is not None:
        if not cells:
            raise CtxEnergyError("compare: no cell given to compare (spot_check.cells in the config, or --cells)")
        wanted = [cell_key(c) for c in cells]
        for c, key in zip(cells, wanted):
            for cells_of, where, name in ((ref, reference, "reference"), (new, candidate, "candidate")):
                if key not in cells_of:
                    raise CtxEnergyError(f"compare: cell {c} is not in the {name} cells '{where}'")
        ref = {k: ref[k] for k in wanted}
    shared = sorted(set(ref) & set(new))
    if not shared:
        raise CtxEnergyError(
            f"compare: no cell is in both '{reference}' and '{candidate}' (cells match on model, engine, phase and L)"
        )
    rows = []
    for match in shared:
        (rw, rm), (nw, nm) = ref[match], new[match]
        r_e, n_e = _values(rw, "energy_per_run_j"), _values(nw, "energy_per_run_j")
        r_s, n_s = summarize(r_e), summarize(n_e)
        diff, low, high = _diff(r_e, n_e)
        dyn = _diff(_values(rw, "dynamic_energy_per_run_j"), _values(nw, "dynamic_energy_per_run_j"))[0]
        run = _diff(_values(rw, "run_s"), _values(nw, "run_s"))[0]
        ok = rm.get("status") == "ok" and nm.get("status") == "ok"
        notes = []
        if not ok:
            notes.append(f"status {rm.get('status')} / {nm.get('status')}")
        if abs(run) > RUN_TIME_NOTE_PCT:
            notes.append(f"run time differs {run:+.0f} %: compare the energy above idle ({dyn:+.1f} %)")
        differing = _differing(rm.get("settings"), nm.get("settings")) + _differing(
            rm.get("engine_settings"), nm.get("engine_settings")
        )
        if differing:
            notes.append("settings differ: " + ", ".join(differing))
        elif rm.get("config_hash") != nm.get("config_hash"):
            notes.append("config_hash differs (an option of the model or another engine)")
        notes += _kernel_notes(rm.get("attention_kernels"), nm.get("attention_kernels"))
        if rm.get("host_cpu") and nm.get("host_cpu") and rm["host_cpu"] != nm["host_cpu"]:
            notes.append(f"host CPU {rm['host_cpu']} / {nm['host_cpu']}")
        same_gpu = rm.get("device_uuid") == nm.get("device_uuid")
        if not same_gpu and rm.get("device_name") != nm.get("device_name"):
            notes.append(f"other GPU model: {rm.get('device_name')} / {nm.get('device_name')}")
        # a cell copied from the reference (e.g. seeded into results/cells) is no remeasurement: say so
        copy = same_gpu and rm.get("measured_at") is not None and rm.get("measured_at") == nm.get("measured_at")
        if copy:
            notes.insert(0, "the same measurement (a copy of the reference cell), not a remeasurement")
        rows.append(
            {
                **{k: rm.get(k) for k in KEY},
                "reference_j": r_s["median"],
                "reference_ci_low": r_s["ci_low"],
                "reference_ci_high": r_s["ci_high"],
                "candidate_j": n_s["median"],
                "candidate_ci_low": n_s["ci_low"],
                "candidate_ci_high": n_s["ci_high"],
                "diff_pct": diff,
                "diff_ci_low_pct": low,
                "diff_ci_high_pct": high,
                "dynamic_diff_pct": dyn,
                "run_s_diff_pct": run,
                "same_gpu": same_gpu,
                "reference_gpu": rm.get("device_uuid"),
                "candidate_gpu": nm.get("device_uuid"),
                "verdict": "same measurement" if copy else _verdict(ok, diff, low, high, tolerance_pct),
                "note": "; ".join(notes),
            }
        )
    return pd.DataFrame(rows)


def summary_line(df: pd.DataFrame, tolerance_pct: float) -> str:
    counts = df["verdict"].value_counts()
    parts = [f"{counts.get(v, 0)} {v}" for v in (*VERDICTS_WITH_DIFF, "not comparable")]
    if counts.get("same measurement"):
        parts.append(f"{counts['same measurement']} the same measurement (copied, not remeasured)")
    return f"{len(df)} cells compared: " + ", ".join(parts) + f" (tolerance {tolerance_pct:g} %)"


def board_offset_line(df: pd.DataFrame) -> str | None:
    """The prefills remeasured on another board, summarised: a difference that all of them share is the boards'
    offset, which no cell's interval holds (generate cells are left out: their run time follows the host CPU)."""
    other = df[(df["phase"] == "prefill") & ~df["same_gpu"] & df["verdict"].isin(VERDICTS_WITH_DIFF)]
    if len(other) < 2:
        return None
    d = other["diff_pct"]
    return (
        f"{len(other)} prefill cells on another board: median difference {d.median():+.2f} % "
        f"({d.min():+.2f} .. {d.max():+.2f} %); a shift that they all share is the boards' offset "
        "(docs/measurement.md, between boards), not an error of one cell"
    )


def main(args) -> int:
    tolerance = BOARD_TOLERANCE_PCT if args.tolerance_pct is None else args.tolerance_pct
    df = compare_cells(args.reference, args.candidate, tolerance, args.cells, args.across_models)
    if args.out:
        write_csv_or_parquet(df, args.out)
    cell = df["model"] + "/" + df["engine"] + "/" + df["phase"] + "/L" + df["length_tokens"].astype(str)
    shown = df.assign(cell=cell)
    cols = [
        "cell",
        "reference_j",
        "candidate_j",
        "diff_pct",
        "diff_ci_low_pct",
        "diff_ci_high_pct",
        "dynamic_diff_pct",
        "run_s_diff_pct",
        "same_gpu",
        "verdict",
        "note",
    ]
    with pd.option_context("display.width", 250, "display.max_colwidth", 90):
        print(shown[cols].round(2).to_string(index=False))
    print(summary_line(df, tolerance))
    offset = board_offset_line(df)
    if offset:
        print(offset)
    return 1 if (df["verdict"] == "differs").any() and not args.exit_zero else 0
