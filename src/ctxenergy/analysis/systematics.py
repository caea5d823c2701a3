"""The systematic level of uncertainty: what the windows of one cell on one board cannot show.

Every number carries two intervals (docs/measurement.md, "Uncertainty"): the statistical one from the windows of its
cells (ctxenergy.analysis.uncertainty), and a systematic band measured here from the committed cells that were measured
more than once, on different boards:

  board spread  the same GPU-bound cell (prefill of any engine, generate of an engine whose decode is GPU-bound) with
                the same settings, measured on two boards: the largest relative difference of energy per run. It is
                taken as the 95 % half-width of any energy and of any ratio or shape built from energies (an
                energy ratio of cells on two boards carries it in full; on one board part of it cancels, so this
                is conservative there).
  power spread  the same pairs' mean power, where both cells ran at the board's power cap (mean power within 5 % of
                the limit): the plateau is the cap, and boards differ more in the time they take for the same work
                than in the power they hold there, so the band of a mean power at the cap is its own, smaller one
                (a host-bound short prefill's mean power follows the host, not the board).
  host spread   generate cells of a host-bound engine (HF `generate` at batch 1 waits on Python) on two hosts: the
                largest relative difference, of total and of dynamic energy. It applies to the decode part of
                those engines' generate cells (E_out), where the host sets the run time.
  NVML gain     the per-board sensor gain error, about +-5 % (ctxenergy.compare.BOARD_TOLERANCE_PCT; only an
                external meter removes it). It applies to absolute energy only: a ratio of two cells from one
                board cancels it, and between boards the board spread already measures it.

Fits weight each cell with its statistical standard error and a relative error floor of board spread / 1.96 in
quadrature, so that a fit is not asked to pass through points more exactly than another board would measure them.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.uncertainty import Z975
from ctxenergy.compare import BOARD_TOLERANCE_PCT
from ctxenergy.config import HOW_NOT_WHAT
from ctxenergy.engines.registry import ENGINES
from ctxenergy.paths import REPO_ROOT

# Where committed cells live: every set of them, remeasurements included.
REFERENCE_DIR = REPO_ROOT / "data" / "reference"
# Engines whose decode waits on the host CPU at batch 1 (docs/measurement.md: 23-43 ms per decode step, whatever
# the L, against vLLM's 5-9 ms on the same GPU): their generate cells follow the host, not the board.
HOST_BOUND_DECODE = tuple(e.name for e in ENGINES.values() if e.host_bound_decode)
NVML_GAIN_REL = BOARD_TOLERANCE_PCT / 100.0
KEY = ["model", "engine", "phase", "length_tokens"]
# A cell "at the power cap" holds a mean power within this fraction of the board's limit (scaling.PLATEAU_FRACTION).
CAP_FRACTION = 0.05


@dataclass(frozen=True)
class Systematics:
    """Relative 95 % half-widths (fractions); NaN where no committed cell was measured twice."""

    board_rel: float
    host_total_rel: float
    host_dynamic_rel: float
    power_rel: float = math.nan
    gain_rel: float = NVML_GAIN_REL

    @property
    def floor_sigma_rel(self) -> float:
        """The relative error floor of a cell in a fit (one sigma); 0 where the board spread is not measured."""
        return self.board_rel / Z975 if np.isfinite(self.board_rel) else 0.0

    @property
    def power_floor_sigma_rel(self) -> float:
        """The relative error floor of a cell's mean power (one sigma); 0 where not measured."""
        return self.power_rel / Z975 if np.isfinite(self.power_rel) else 0.0

    @property
    def absolute_rel(self) -> float:
        """An absolute energy: the board spread and the sensor gain in quadrature."""
        return float(np.hypot(self.board_rel, self.gain_rel)) if np.isfinite(self.board_rel) else self.gain_rel

    def decode_rel(self, engine: str, dynamic: bool = False) -> float:
        """The decode part of a generate cell (E_out): the host spread for a host-bound engine, else the board's."""
        if engine in HOST_BOUND_DECODE:
            return self.host_dynamic_rel if dynamic else self.host_total_rel
        return self.board_rel

    def ratio_rel(self) -> float:
        """A ratio of two energies (or a shape of one curve): the board spread; the sensor gain cancels."""
        return self.board_rel


NOT_MEASURED = Systematics(board_rel=math.nan, host_total_rel=math.nan, host_dynamic_rel=math.nan)


def _cell_row(path: Path) -> dict | None:
    from ctxenergy.tables import read_metadata

    meta = read_metadata(path)
    if meta.get("status") != "ok" or not meta.get("device_uuid"):
        return None
    windows = pd.read_parquet(path)
    measured = windows[windows["window"] >= 0] if "window" in windows else windows
    if measured.empty or "energy_per_run_j" not in measured:
        return None
    # what was measured, not how the run was organised: cells agree on these or are not the same measurement
    settings = {k: v for k, v in (meta.get("settings") or {}).items() if k not in HOW_NOT_WHAT}
    return {
        "model": meta["model"],
        "engine": meta["engine"],
        "phase": meta["phase"],
        "length_tokens": int(meta["length_tokens"]),
        "device_name": meta.get("device_name") or "",
        "device_uuid": meta["device_uuid"],
        "measured_at": str(meta.get("measured_at", "")),
        "host_cpu": meta.get("host_cpu") or "",
        # a batch of B prompts and an engine variant are other measurements of the same (model, engine, phase, L)
        "settings": json.dumps(
            [
                settings,
                meta.get("engine_settings"),
                int(meta.get("batch_size") or 1),
                meta.get("engine_variant") or "default",
            ],
            sort_keys=True,
            default=str,
        ),
        "energy_j": float(measured["energy_per_run_j"].median()),
        "dynamic_energy_j": float(measured["dynamic_energy_per_run_j"].median()),
        "run_s": float(measured["run_s"].median()),
        "mean_power_w": float(measured["mean_power_w"].median()) if "mean_power_w" in measured else math.nan,
        "power_limit_w": float(meta.get("power_limit_w") or math.nan),
        "path": str(path),
    }


@lru_cache(maxsize=4)
def committed_cells(root: str = str(REFERENCE_DIR)) -> pd.DataFrame:
    """One row per committed ok cell under root (copies of one measurement, same board and time, kept once)."""
    base = Path(root)
    paths = sorted(p for p in base.rglob("L*.parquet") if p.name.count(".") == 1) if base.is_dir() else []
    rows = [r for r in map(_cell_row, paths) if r is not None]
    cols = KEY + [
        "device_name",
        "device_uuid",
        "measured_at",
        "host_cpu",
        "settings",
        "energy_j",
        "dynamic_energy_j",
        "run_s",
        "mean_power_w",
        "power_limit_w",
        "path",
    ]
    df = pd.DataFrame(rows, columns=cols)
    df["path"] = [str(Path(p).relative_to(base)) for p in df["path"]]
    return df.drop_duplicates(KEY + ["device_uuid", "measured_at"]).reset_index(drop=True)


def board_pairs(cells: pd.DataFrame) -> pd.DataFrame:
    """Every pair of measurements of one cell with the same settings on two boards of one GPU model (an H100 and an
    H200 differ by design, not by board), with their relative differences (b / a - 1) and whether the pair measures a
    board (GPU-bound) or a host (host-bound decode)."""
    rows = []
    for key, g in cells.groupby(KEY + ["settings", "device_name"], sort=True):
        for (_, a), (_, b) in itertools.combinations(g.sort_values("measured_at").iterrows(), 2):
            if a["device_uuid"] == b["device_uuid"]:
                continue
            host_bound = key[2] == "generate" and key[1] in HOST_BOUND_DECODE
            rows.append(
                {
                    **dict(zip(KEY, key)),
                    "kind": "host" if host_bound else "board",
                    "board_a": a["device_uuid"],
                    "board_b": b["device_uuid"],
                    "cell_a": a["path"],
                    "cell_b": b["path"],
                    "energy_a_j": a["energy_j"],
                    "energy_b_j": b["energy_j"],
                    "energy_diff_rel": b["energy_j"] / a["energy_j"] - 1,
                    "dynamic_energy_diff_rel": b["dynamic_energy_j"] / a["dynamic_energy_j"] - 1,
                    "run_s_diff_rel": b["run_s"] / a["run_s"] - 1,
                    "mean_power_diff_rel": b["mean_power_w"] / a["mean_power_w"] - 1,
                    "at_power_cap": bool(
                        min(a["mean_power_w"] / a["power_limit_w"], b["mean_power_w"] / b["power_limit_w"])
                        >= 1 - CAP_FRACTION
                    ),
                }
            )
    cols = KEY + [
        "kind",
        "board_a",
        "board_b",
        "cell_a",
        "cell_b",
        "energy_a_j",
        "energy_b_j",
        "energy_diff_rel",
        "dynamic_energy_diff_rel",
        "run_s_diff_rel",
        "mean_power_diff_rel",
        "at_power_cap",
    ]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out


def _largest(values) -> float:
    v = np.abs(np.asarray(values, dtype=float))
    return float(v.max()) if v.size else math.nan


def systematics_from_pairs(pairs: pd.DataFrame) -> Systematics:
    board, host = pairs[pairs["kind"] == "board"], pairs[pairs["kind"] == "host"]
    return Systematics(
        board_rel=_largest(board["energy_diff_rel"]),
        host_total_rel=_largest(host["energy_diff_rel"]),
        host_dynamic_rel=_largest(host["dynamic_energy_diff_rel"]),
        power_rel=_largest(board.loc[board["at_power_cap"].astype(bool), "mean_power_diff_rel"]),
    )


def systematics_table(pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per systematic: its relative 95 % half-width, what it applies to and what it was measured from."""
    s = systematics_from_pairs(pairs)
    rows = []
    for name, value, kind, applies, method in (
        (
            "board_spread",
            s.board_rel,
            "board",
            "every energy, ratio and shape (fit error floor: this / 1.96)",
            "largest |difference| of a GPU-bound cell measured on two boards with the same settings",
        ),
        (
            "power_spread",
            s.power_rel,
            "cap",
            "mean power (the power plateau; its error floor: this / 1.96)",
            "largest |difference| of mean power of the pairs whose cells both ran at the power cap",
        ),
        (
            "host_spread_total",
            s.host_total_rel,
            "host",
            f"E_out from total energy of host-bound engines ({', '.join(HOST_BOUND_DECODE)})",
            "largest |difference| of a host-bound generate cell on two hosts",
        ),
        (
            "host_spread_dynamic",
            s.host_dynamic_rel,
            "host",
            "E_out from dynamic energy (above idle) of host-bound engines",
            "largest |difference| of its energy above idle on two hosts",
        ),
        (
            "nvml_gain",
            s.gain_rel,
            "",
            "absolute energy only (cancels in a ratio of cells from one board)",
            "NVML's per-board sensor gain error (literature; compare's tolerance)",
        ),
    ):
        sub = (
            pairs[(pairs["kind"] == "board") & pairs["at_power_cap"].astype(bool)]
            if kind == "cap"
            else pairs[pairs["kind"] == kind]
            if kind
            else pairs.iloc[0:0]
        )
        boards = set(sub["board_a"]) | set(sub["board_b"])
        rows.append(
            {
                "systematic": name,
                "relative_half_width": value,
                "n_pairs": len(sub),
                "n_boards": len(boards),
                "applies_to": applies,
                "method": method,
            }
        )
    out = pd.DataFrame(rows)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out


def reference_systematics(root: str | Path = REFERENCE_DIR) -> tuple[Systematics, pd.DataFrame]:
    """The systematics measured from the committed cells under root, and their pairs (NOT_MEASURED if none)."""
    pairs = board_pairs(committed_cells(str(root)))
    return (systematics_from_pairs(pairs) if len(pairs) else NOT_MEASURED), pairs


def total_interval(value, lo, hi, sys_rel):
    """The statistical interval [lo, hi] widened by a relative systematic half-width, in quadrature on each side:
    the total interval a verdict is decided against."""
    value, lo, hi = (np.asarray(x, dtype=float) for x in (value, lo, hi))
    s = np.where(np.isfinite(sys_rel), sys_rel, 0.0) * np.abs(value)
    return value - np.hypot(value - lo, s), value + np.hypot(hi - value, s)
