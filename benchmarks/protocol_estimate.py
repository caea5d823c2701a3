"""What a campaign's cells would cost under another protocol: an ESTIMATE from the committed cells and job files, not a
GPU measurement.

    python benchmarks/protocol_estimate.py CELLS_DIR JOBS_DIR PROTOCOL_CONFIG [PROTOCOL_CONFIG ...]
    python benchmarks/protocol_estimate.py data/reference/nvidia-h200/campaign/cells \
        data/reference/nvidia-h200/campaign/jobs/measure_cell config/protocol-target.yaml \
        config/protocol-target-shared-warmup.yaml

Each PROTOCOL_CONFIG is read over config.yaml (its `measure:` block is the protocol). Every measured cell keeps what
was measured of it (its run time, the timing pass, its windows' spread, its job's start-up, edges and writing) and
changes only what the protocol decides (pipeline_overhead.py splits the committed job times into these parts):

- runs per window: `measure.runs_per_window` on the cell's recorded timing pass and the new `min_window_s`; a
  window's work is that many runs at the cell's median run time;
- windows: the smallest count between `min_windows` and `max_windows` whose t-interval, at the cell's window-to-window
  spread of the energy per run the target names (`target_energy`: total, dynamic or the wider; a host-bound
  generate cell's `host_bound_target_*`), is within the target (the protocol's rule, on the expected spread), else
  the cap. The spread of shorter windows is scaled from the committed one by sqrt(R_old / R_new) ("central": the
  noise of independent runs) or by R_old / R_new ("pessimistic": as if all of it were edge noise, which falls with
  the window's length); the estimate is given for both. Without a target: `repeats`;
- edges: the cell's own measured time per window beyond work and cool-down, times the windows, plus `cooldown_s`;
- idle: per engine host in the order its cells were measured, the first cell measures the full baseline (`idle_s`
  plus the cell's measured edge time), later cells a re-check of `idle_recheck_s`, plus a full baseline where the
  cell's committed idle power is more than `idle_recheck_tolerance_pct` off the host's floor (which it then becomes);
- warm-up: the runs of the warm-up loop (`warmup_runs`, at the cell's run time) under the new `min_window_s`, or
  under `warmup_shared_s` for a cell whose host finished another cell's windows within 30 s; what the committed
  warm-up took beyond its own runs (a slow first run: compilation, a graph capture) stays.
The warm-up jobs (engine loads) and the jobs that measured nothing (oom, exceeds_context) are counted as committed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))  # pipeline_overhead, beside this file
from pipeline_overhead import overhead_table, unmeasured_jobs_s, warmup_jobs_s  # noqa: E402

from ctxenergy.config import load_config, measure_setting  # noqa: E402
from ctxenergy.grid import Cell  # noqa: E402
from ctxenergy.measure import SHARED_WARMUP_MAX_GAP_S, host_bound, runs_per_window, window_target  # noqa: E402
from ctxenergy.paths import REPO_ROOT  # noqa: E402
from ctxenergy.settings import MeasureSettings  # noqa: E402
from ctxenergy.stats import t975  # noqa: E402
from ctxenergy.tables import read_cell  # noqa: E402


def windows_needed(rel_sd_pct: float, target_pct: float | None, settings: dict) -> tuple[int, str]:
    """Windows the protocol would measure for a cell whose windows spread by rel_sd_pct (of the mean, of the energy
    the target names), and why."""
    if target_pct is None:
        return settings["repeats"], "fixed_count"
    low, high = measure_setting(settings, "min_windows"), measure_setting(settings, "max_windows")
    for n in range(low, high + 1):
        if t975(n - 1) * rel_sd_pct / math.sqrt(n) <= target_pct:
            return n, "target_reached"
    return high, "cap_reached"


def warmup_runs(run_s: float, full_s: float, enough_s: float, min_runs: int) -> int:
    """Runs `measure.warm_up` makes at a steady run time: until one window (`full_s`) has passed, or, when shared,
    until `enough_s` has and at least `min_runs` ran."""
    return min(math.ceil(full_s / run_s), max(min_runs, math.ceil(enough_s / run_s)))


def cell_facts(cells_dir: Path, jobs_dir: Path) -> pd.DataFrame:
    """pipeline_overhead's split of each measured cell's job, plus what the estimate needs from the cell itself."""
    df = overhead_table(cells_dir, jobs_dir)
    rows = []
    for cell in df["cell"]:
        windows, _, _, meta = read_cell(cells_dir / f"{cell}.parquet")
        w = windows[windows["window"] >= 0]
        e = w["energy_per_run_j"].astype(float)
        d = w["dynamic_energy_per_run_j"].astype(float)
        t, host = meta["timeline"], meta.get("engine_host") or {}
        rows.append(
            {
                "cell": cell,
                "old_settings": meta["settings"],
                "timing_run_s": meta["timing_pass_s"],
                "runs_old": int(w["runs"].iloc[0]),
                "run_s": float(w["run_s"].median()),
                "n_old": len(w),
                "rel_sd_pct": float(100 * e.std(ddof=1) / e.mean()),
                "rel_sd_dynamic_pct": float(100 * d.std(ddof=1) / d.mean()),
                "host_bound": host_bound(
                    Cell(meta["model"], meta["engine"], meta["phase"], int(meta["length_tokens"]))
                ),
                "half_width_old_pct": float(100 * t975(len(e) - 1) * e.std(ddof=1) / math.sqrt(len(e)) / e.mean()),
                "idle_power_w": meta["idle_power_w"],
                # window 0 against the later windows: did the warm-up leave the GPU in the state of the later windows?
                "window0_dev_pct": float(100 * (e.iloc[0] / e.iloc[1:].mean() - 1)),
                "later_rel_sd_pct": float(100 * e.iloc[1:].std(ddof=1) / e.iloc[1:].mean()),
                # one host process = one engine load; a cell without a host loaded its own engine
                "host": f"{meta.get('device_uuid')}/{host.get('pid')}" if host else f"own/{cell}",
                "t_idle_start": t["idle_start"],
                "t_windows_end": t["windows_end"],
            }
        )
    return df.merge(pd.DataFrame(rows), on="cell")


def estimate(facts: pd.DataFrame, settings: dict, spread: str = "central") -> pd.DataFrame:
    """Per cell: the new windows, window time and job time under `settings` (a `measure:` block)."""
    recheck_s = measure_setting(settings, "idle_recheck_s")
    tolerance = measure_setting(settings, "idle_recheck_tolerance_pct")
    shared_s = measure_setting(settings, "warmup_shared_s")
    out = []
    for _, hc in facts.sort_values(["host", "t_idle_start"]).groupby("host", sort=False):
        floor, previous_end = None, None
        for _, c in hc.iterrows():
            old = c["old_settings"]
            runs = runs_per_window(c["timing_run_s"], settings["min_window_s"], settings["max_runs_per_window"])
            scale = c["runs_old"] / runs
            target, energy = window_target(MeasureSettings.from_section(settings), c["host_bound"])
            sds = {
                "total": c["rel_sd_pct"],
                "dynamic": c["rel_sd_dynamic_pct"],
                "both": max(c["rel_sd_pct"], c["rel_sd_dynamic_pct"]),
            }
            rel_sd = sds[energy] * (math.sqrt(scale) if spread == "central" else scale)
            rel_sd_total = c["rel_sd_pct"] * (math.sqrt(scale) if spread == "central" else scale)
            n, reason = windows_needed(rel_sd, target, settings)
            work = runs * c["run_s"]
            edge_per_window = max(c["edges_and_cooldowns_s"] / c["n_old"] - old["cooldown_s"], 0.0)
            edges = n * (edge_per_window + settings["cooldown_s"])
            idle_edges = max(c["idle_s"] - old["idle_s"], 0.0)
            if recheck_s is None or floor is None:
                idle, floor, idle_source = idle_edges + settings["idle_s"], c["idle_power_w"], "measured"
            else:
                idle, idle_source = idle_edges + recheck_s, "reused"
                if abs(100 * (c["idle_power_w"] / floor - 1)) > tolerance:
                    idle, floor, idle_source = idle + idle_edges + settings["idle_s"], c["idle_power_w"], "remeasured"
            gap = None if previous_end is None else c["t_idle_start"] - previous_end
            shared = shared_s is not None and gap is not None and gap <= SHARED_WARMUP_MAX_GAP_S
            goal, min_runs = (min(shared_s, settings["min_window_s"]), 2) if shared else (settings["min_window_s"], 1)
            r = c["run_s"]
            old_loop = r * warmup_runs(r, old["min_window_s"], old["min_window_s"], 1)
            new_loop = r * warmup_runs(r, settings["min_window_s"], goal, min_runs)
            warmup = max(c["warmup_s"] - old_loop + new_loop, new_loop) if settings["warmup"] else r
            job = (c["job_s"] - c["idle_s"] - c["warmup_s"] - c["window_span_s"]) + idle + warmup + n * work + edges
            out.append(
                {
                    "cell": c["cell"],
                    "job_s_old": c["job_s"],
                    "windows_s_old": c["windows_s"],
                    "n_old": c["n_old"],
                    "runs_old": c["runs_old"],
                    "runs_new": runs,
                    "half_width_old_pct": c["half_width_old_pct"],
                    "rel_sd_new_pct": rel_sd,
                    "n_new": n,
                    "stop": reason,
                    "windows_s_new": n * work,
                    "host_bound": c["host_bound"],
                    "target_pct": target,
                    "target_energy": energy,
                    "half_width_new_pct": t975(n - 1) * rel_sd / math.sqrt(n),
                    "half_width_total_new_pct": t975(n - 1) * rel_sd_total / math.sqrt(n),
                    "idle_s_old": c["idle_s"],
                    "idle_s_new": idle,
                    "idle_source": idle_source,
                    "warmup_s_old": c["warmup_s"],
                    "warmup_s_new": warmup,
                    "warmup_shared": shared,
                    "edges_s_old": c["edges_and_cooldowns_s"],
                    "edges_s_new": edges,
                    "job_s_new": job,
                }
            )
            previous_end = c["t_windows_end"]
    return pd.DataFrame(out).sort_values("cell").reset_index(drop=True)


def totals(per_cell: pd.DataFrame, other_jobs_s: float) -> dict:
    """GPU time in all (cell jobs + warm-up jobs + jobs that measured nothing) and its ratio to the windows."""
    res = {}
    for when in ("old", "new"):
        gpu_s = per_cell[f"job_s_{when}"].sum() + other_jobs_s
        res[when] = {
            "gpu_s": gpu_s,
            "windows_s": per_cell[f"windows_s_{when}"].sum(),
            "ratio": gpu_s / per_cell[f"windows_s_{when}"].sum(),
        }
    return res


def one_sitting_s(
    facts: pd.DataFrame, per_cell: pd.DataFrame, warmups: dict[str, list[float]], unmeasured_s: float
) -> float:
    """GPU time if the grid ran in one sitting: no engine start inside a cell job (each job's start-up at the
    median of the campaign's) and one warm-up job per (model, engine), its shortest committed one. The campaign ran
    over several sessions and boards, which started engines again; engine hosts make one load per pair."""
    before = facts.set_index("cell")["before_load_s"]
    extra = (before - before.median()).clip(lower=0.0)
    cell_jobs = float((per_cell.set_index("cell")["job_s_new"] - extra).sum())
    return cell_jobs + sum(map(min, warmups.values())) + unmeasured_s


def window0_lines(facts: pd.DataFrame) -> list[str]:
    """Whether the committed warm-up (one window, or one run where a run lasts longer) left window 0 like the rest:
    its deviation from the mean of the later windows, in % and in units of their spread, for GPU-bound cells (a
    host-bound cell's windows differ by the host's pace, 10-25 % in run time, which hides any warm-up effect)."""
    g = facts[~facts["host_bound"]]
    z = g["window0_dev_pct"] / g["later_rel_sd_pct"]
    return [
        f"window 0 after the committed warm-up, {len(g)} GPU-bound cells: median deviation from the later windows "
        f"{g['window0_dev_pct'].median():+.2f} % (|.| median {g['window0_dev_pct'].abs().median():.2f} %, 90th "
        f"percentile {g['window0_dev_pct'].abs().quantile(0.9):.2f} %); below the later windows' mean in "
        f"{int((g['window0_dev_pct'] < 0).sum())} of {len(g)}; median |deviation| / their spread "
        f"{z.abs().median():.2f} (about 0.8 expected of a window like the others)"
    ]


def _summary(name: str, per_cell: pd.DataFrame, other_jobs_s: float, n_warmups: int, n_unmeasured: int) -> list[str]:
    t = totals(per_cell, other_jobs_s)
    old, new = t["old"], t["new"]
    stops = per_cell["stop"].value_counts()
    lines = [
        f"{name}: {len(per_cell)} measured cells + {n_unmeasured} that measured nothing + {n_warmups} warm-up jobs "
        f"(as committed: {other_jobs_s:.0f} s)",
        f"  committed protocol: {old['gpu_s']:.0f} s = {old['gpu_s'] / 3600:.2f} h of GPU job time for "
        f"{old['windows_s']:.0f} s of windows ({old['ratio']:.2f}x); median half-width "
        f"{per_cell['half_width_old_pct'].median():.2f} %, {per_cell['n_old'].median():.0f} windows per cell",
        f"  estimated:          {new['gpu_s']:.0f} s = {new['gpu_s'] / 3600:.2f} h ({new['gpu_s'] / 60:.0f} min) for "
        f"{new['windows_s']:.0f} s of windows ({new['ratio']:.2f}x); {new['gpu_s'] / old['gpu_s']:.2f}x the committed "
        f"GPU time; median expected half-width {per_cell['half_width_new_pct'].median():.2f} % (max "
        f"{per_cell['half_width_new_pct'].max():.2f} %)",
        "  "
        + "; ".join(
            f"{'host-bound generate' if hb else 'GPU-bound'} ({len(g)}): target {g['target_pct'].iloc[0]} % on "
            f"{g['target_energy'].iloc[0]} energy, expected half-width median "
            f"{g['half_width_new_pct'].median():.2f} %, "
            f"max {g['half_width_new_pct'].max():.2f} %, over the target in {int((g['stop'] == 'cap_reached').sum())}; "
            f"total energy's median {g['half_width_total_new_pct'].median():.2f} %"
            for hb, g in per_cell.groupby("host_bound")
        )
        if per_cell["target_pct"].notna().all()
        else "  no target: fixed count",
        "  windows per cell: "
        + ", ".join(f"{k} {v}" for k, v in sorted(per_cell["n_new"].value_counts().items()))
        + "; stop: "
        + ", ".join(f"{k} {v}" for k, v in stops.items()),
        "  idle: "
        + ", ".join(f"{k} {v}" for k, v in per_cell["idle_source"].value_counts().items())
        + f"; shared warm-ups: {int(per_cell['warmup_shared'].sum())}",
    ]
    for part in ("windows", "edges", "idle", "warmup", "job"):
        a, b = per_cell[f"{part}_s_old"].sum(), per_cell[f"{part}_s_new"].sum()
        lines.append(f"    {part + (' (cell jobs)' if part == 'job' else ''):<18} {a:7.0f} s -> {b:7.0f} s")
    return lines


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[3].strip(), file=sys.stderr)
        return 2
    cells_dir, jobs_dir = Path(argv[0]), Path(argv[1])
    facts = cell_facts(cells_dir, jobs_dir)
    warmup_jobs = warmup_jobs_s(jobs_dir.parent / "warmup_engine")
    warmups = [s for times in warmup_jobs.values() for s in times]
    unmeasured = unmeasured_jobs_s(jobs_dir, facts)
    other = sum(warmups) + sum(unmeasured)
    print("ESTIMATE from the committed cells and job files (benchmarks/protocol_estimate.py), not a GPU measurement.")
    print("\n".join(window0_lines(facts)))
    for i, path in enumerate(argv[2:]):
        settings = load_config(REPO_ROOT / "config.yaml", [path])["measure"]
        central = estimate(facts, settings, "central")
        if i == 0:
            cols = [
                "cell",
                "job_s_old",
                "job_s_new",
                "n_new",
                "runs_old",
                "runs_new",
                "half_width_old_pct",
                "half_width_new_pct",
                "windows_s_old",
                "windows_s_new",
                "idle_s_new",
                "warmup_s_new",
                "edges_s_new",
            ]
            print(f"\nper cell under {path} (central spread):")
            print(central[cols].round(2).to_string(index=False))
        for spread in ("central", "pessimistic"):
            per_cell = central if spread == "central" else estimate(facts, settings, spread)
            print()
            print("\n".join(_summary(f"{path}, {spread} spread", per_cell, other, len(warmups), len(unmeasured))))
            sitting = one_sitting_s(facts, per_cell, warmup_jobs, sum(unmeasured))
            print(
                f"  in one sitting ({len(warmup_jobs)} engine loads, no engine start inside a cell job): "
                f"{sitting:.0f} s = {sitting / 60:.0f} min, "
                f"{sitting / per_cell['windows_s_new'].sum():.2f}x the windows"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
