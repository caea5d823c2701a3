"""Representative power-trace windows for the figures: per model, engine and phase, the middle window of the
smallest and of the largest L that has a trace, on a time axis starting at the window's first run."""

from __future__ import annotations

import pandas as pd

import ctxenergy

GROUP = ["model", "engine", "phase"]
TRACE_COLS = ["cell_id", "model", "engine", "phase", "length_tokens", "role", "window", "t_s", "power_w"]
RUN_COLS = ["cell_id", "window", "run", "start_s", "first_token_s", "end_s"]


def _with_version(df: pd.DataFrame) -> pd.DataFrame:
    df.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return df


def representative_traces(per_cell: pd.DataFrame, cell_tables: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """cell_tables: cell_id -> (windows, runs, trace) as ctxenergy.tables.read_cell returns them."""
    traces, runs = [], []
    has_trace = [cid for cid, (_, _, tr) in cell_tables.items() if len(tr)]
    cells = per_cell[per_cell["cell_id"].isin(has_trace)]
    for _, g in cells.groupby(GROUP, sort=False):
        g = g.sort_values("length_tokens")
        chosen = {"smallest L": g.iloc[0]} if len(g) == 1 else {"smallest L": g.iloc[0], "largest L": g.iloc[-1]}
        for role, cell in chosen.items():
            _, run_df, trace = cell_tables[cell["cell_id"]]
            trace = trace.apply(pd.to_numeric, errors="coerce") if len(trace) else trace
            windows = sorted(int(w) for w in trace["window"].dropna().unique())
            window = windows[len(windows) // 2]
            tr = trace[trace["window"] == window]
            rn = run_df[run_df["window"] == window] if len(run_df) else run_df
            t0 = float(rn["start_s"].min()) if len(rn) else float(tr["t_s"].min())
            traces.append(
                pd.DataFrame(
                    {
                        "cell_id": cell["cell_id"],
                        "model": cell["model"],
                        "engine": cell["engine"],
                        "phase": cell["phase"],
                        "length_tokens": int(cell["length_tokens"]),
                        "role": role,
                        "window": window,
                        "t_s": tr["t_s"].to_numpy(float) - t0,
                        "power_w": tr["power_w"].to_numpy(float),
                    }
                )
            )
            if len(rn):
                runs.append(
                    pd.DataFrame(
                        {
                            "cell_id": cell["cell_id"],
                            "window": window,
                            "run": rn["run"].to_numpy(int),
                            "start_s": rn["start_s"].to_numpy(float) - t0,
                            "first_token_s": rn["first_token_s"].to_numpy(float) - t0,
                            "end_s": rn["end_s"].to_numpy(float) - t0,
                        }
                    )
                )
    tdf = pd.concat(traces, ignore_index=True) if traces else pd.DataFrame(columns=TRACE_COLS)
    rdf = pd.concat(runs, ignore_index=True) if runs else pd.DataFrame(columns=RUN_COLS)
    tdf = tdf.astype({"length_tokens": "int64", "window": "int64", "t_s": float, "power_w": float})
    rdf = rdf.astype({"window": "int64", "run": "int64", "start_s": float, "first_token_s": float, "end_s": float})
    return _with_version(tdf[TRACE_COLS]), _with_version(rdf[RUN_COLS])
