"""How energy scales with context length L, per model, engine and phase.

- dE/dL between neighbouring L: the marginal energy of one more input token.
- E(L) = a + bL + cL^2, fitted by weighted least squares (weights 1/SE^2 of each cell's mean), coefficient intervals
  from the covariance (inflated by the reduced chi^2 when the points scatter more than their errors say), residuals.
- Thresholds with intervals:
    efficiency   the measured L with the lowest J/token, and sqrt(a/c), where E(L)/L = a/L + b + cL is lowest;
    crossover    L* = b/c, where the quadratic term cL^2 overtakes the linear term bL;
    dE/dL rise   the L after which dE/dL rises from its minimum;
    plateau      the smallest L from which mean power stays within PLATEAU_FRACTION of its maximum, and the share
                 of time spent at the power cap there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.uncertainty import DRAWS, Z975, grid_interval, half_width, rng, sigma95, standard_error
from ctxenergy.stats import t975

QUANTITIES = ("energy_per_run_j", "dynamic_energy_per_run_j")
# Within 5 % of the largest mean power counts as the plateau: the spread of mean power between windows at the cap
# is ~1 % (H200 reference cells), and board power limits are enforced to a few per cent.
PLATEAU_FRACTION = 0.05
GROUP = ["model", "engine", "phase"]
COV_COLUMNS = {(0, 0): "cov_aa", (0, 1): "cov_ab", (0, 2): "cov_ac", (1, 1): "cov_bb", (1, 2): "cov_bc",
               (2, 2): "cov_cc"}


@dataclass(frozen=True)
class QuadraticFit:
    coef: np.ndarray  # a [J], b [J/token], c [J/token^2]
    cov: np.ndarray
    dof: int
    chi2: float
    birge: float  # factor applied to the covariance: max(1, chi2/dof)

    def predict(self, length) -> np.ndarray:
        x = np.asarray(length, dtype=float)
        return self.coef[0] + self.coef[1] * x + self.coef[2] * x * x

    def predict_se(self, length) -> np.ndarray:
        x = np.asarray(length, dtype=float)
        design = np.stack([np.ones_like(x), x, x * x], axis=-1)
        return np.sqrt(np.einsum("...i,ij,...j->...", design, self.cov, design))

    @property
    def quantile(self) -> float:
        """97.5 % quantile for the intervals: normal while the cells' own errors explain the scatter (known
        sigma), Student t once the scatter sets the scale (estimated from dof residuals)."""
        if self.dof <= 0:
            return float("nan")
        return t975(self.dof) if self.birge > 1.0 else Z975

    def interval(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.quantile * np.sqrt(np.diag(self.cov))
        return self.coef - h, self.coef + h


def fit_from_row(row) -> QuadraticFit:
    """The fit back from a row of the fits table (coefficients and covariance)."""
    cov = np.zeros((3, 3))
    for (i, j), name in COV_COLUMNS.items():
        cov[i, j] = cov[j, i] = row[name]
    coef = np.array([row["a_j"], row["b_j_per_token"], row["c_j_per_token2"]], dtype=float)
    return QuadraticFit(coef=coef, cov=cov, dof=int(row["dof"]), chi2=float(row["chi2"]),
                        birge=float(row["birge_factor"]))


def fit_quadratic(length, energy, se) -> QuadraticFit:
    """Weighted least squares of energy = a + b L + c L^2 with weights 1/se^2 (numpy only).

    L is scaled to [0, 1] before solving: L^2 reaches 1.7e10 at 128k tokens and would ruin the conditioning.
    """
    x = np.asarray(length, dtype=float)
    y = np.asarray(energy, dtype=float)
    s = np.asarray(se, dtype=float)
    if x.size < 3:
        raise ValueError(f"a quadratic needs at least 3 points, got {x.size}")
    scale = float(np.max(np.abs(x)))
    u = x / scale
    design = np.stack([np.ones_like(u), u, u * u], axis=1) / s[:, None]
    coef_u, *_ = np.linalg.lstsq(design, y / s, rcond=None)
    cov_u = np.linalg.inv(design.T @ design)
    resid = (y - np.stack([np.ones_like(u), u, u * u], axis=1) @ coef_u) / s
    chi2 = float(resid @ resid)
    dof = x.size - 3
    birge = max(1.0, chi2 / dof) if dof > 0 else 1.0
    d = np.diag([1.0, 1.0 / scale, 1.0 / scale**2])
    return QuadraticFit(coef=d @ coef_u, cov=d @ cov_u @ d * birge, dof=dof, chi2=chi2, birge=birge)


def cell_se(group: pd.DataFrame, col: str) -> np.ndarray:
    """Standard error of each cell's mean; a cell without an interval (one window) gets the largest relative SE of
    its group, and a floor of 1e-4 relative keeps one very tight cell from taking all the weight."""
    y = group[col].to_numpy(float)
    se = standard_error(group[f"{col}_ci_low"], group[f"{col}_ci_high"], group["n_windows"])
    rel = se / np.abs(y)
    fallback = np.nanmax(rel) if np.isfinite(rel).any() else 0.05
    rel = np.where(np.isfinite(rel), rel, fallback)
    return np.maximum(rel, 1e-4) * np.abs(y)


def slopes(per_cell: pd.DataFrame) -> pd.DataFrame:
    """dE/dL between neighbouring usable L, per model, engine, phase and energy quantity."""
    rows = []
    usable = per_cell[per_cell["usable"]]
    for key, g in usable.groupby(GROUP, sort=False):
        g = g.sort_values("length_tokens")
        for q in QUANTITIES:
            L = g["length_tokens"].to_numpy(float)
            e = g[q].to_numpy(float)
            h = half_width(g[f"{q}_ci_low"], g[f"{q}_ci_high"])
            boards = g["device_uuid"].to_numpy() if "device_uuid" in g else np.full(len(g), "")
            for i in range(len(g) - 1):
                dl = L[i + 1] - L[i]
                v = (e[i + 1] - e[i]) / dl
                hh = np.hypot(h[i], h[i + 1]) / dl
                rows.append(dict(zip(GROUP, key), quantity=q, length_low=int(L[i]), length_high=int(L[i + 1]),
                                 de_dl_j_per_token=v, de_dl_j_per_token_ci_low=v - hh,
                                 de_dl_j_per_token_ci_high=v + hh, same_board=same_board(boards[i], boards[i + 1])))
    cols = GROUP + ["quantity", "length_low", "length_high", "de_dl_j_per_token", "de_dl_j_per_token_ci_low",
                    "de_dl_j_per_token_ci_high", "same_board"]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out


def same_board(a, b) -> bool | None:
    """Whether two cells ran on one board: a slope or difference between boards also carries their offset (up to
    3.2 % between H200 boards), which neither cell's interval holds. None where a cell does not record its board."""
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        return None
    return a == b


def _excluded_note(all_cells: pd.DataFrame) -> str:
    bad = all_cells[~all_cells["usable"]]
    return "; ".join(f"L={int(r.length_tokens)} excluded ({r.excluded_reason})" for r in bad.itertuples())


def fits(per_cell: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Coefficients per (model, engine, phase, quantity), residuals per cell, and the fit objects by key."""
    rows, resid_rows, objects = [], [], {}
    for key, g_all in per_cell.groupby(GROUP, sort=False):
        g = g_all[g_all["usable"]].sort_values("length_tokens")
        note = _excluded_note(g_all)
        for q in QUANTITIES:
            row = dict(zip(GROUP, key), quantity=q, n_cells=len(g), n_excluded=int((~g_all["usable"]).sum()),
                       excluded=note)
            if len(g) < 3:
                row["status"] = f"not fitted: {len(g)} usable cell(s), a quadratic needs 3"
                rows.append(row)
                continue
            L = g["length_tokens"].to_numpy(float)
            y = g[q].to_numpy(float)
            se = cell_se(g, q)
            f = fit_quadratic(L, y, se)
            objects[(*key, q)] = f
            lo, hi = f.interval()
            row.update(status="fitted" if f.dof > 0 else "exact: 3 points, no interval", dof=f.dof, chi2=f.chi2,
                       birge_factor=f.birge, length_min=int(L.min()), length_max=int(L.max()))
            for i, name in enumerate(("a_j", "b_j_per_token", "c_j_per_token2")):
                row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = f.coef[i], lo[i], hi[i]
            # the covariance travels with the table, so a figure can draw the fit's band from Parquet alone
            for (i, j), name in COV_COLUMNS.items():
                row[name] = f.cov[i, j]
            rows.append(row)
            pred = f.predict(L)
            for c, length, obs, p, s in zip(g["cell_id"], L, y, pred, se):
                resid_rows.append(dict(zip(GROUP, key), quantity=q, cell_id=c, length_tokens=int(length),
                                       observed_j=obs, fitted_j=p, residual_j=obs - p, relative_residual=(obs - p) / p,
                                       standardized_residual=(obs - p) / s))
    coef_cols = [f"{n}{s}" for n in ("a_j", "b_j_per_token", "c_j_per_token2") for s in ("", "_ci_low", "_ci_high")]
    cols = GROUP + ["quantity", "status", "n_cells", "n_excluded", "excluded", "dof", "chi2", "birge_factor",
                    "length_min", "length_max"] + coef_cols + list(COV_COLUMNS.values())
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    res_cols = GROUP + ["quantity", "cell_id", "length_tokens", "observed_j", "fitted_j", "residual_j",
                        "relative_residual", "standardized_residual"]
    res = pd.DataFrame(resid_rows, columns=res_cols)
    res.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out, res, objects


# ---- thresholds -------------------------------------------------------------------------------------------------

def efficiency_length(length, energy_per_token) -> np.ndarray:
    """argmin over L of J/token, along the last axis (one value per draw)."""
    return np.asarray(length)[np.argmin(energy_per_token, axis=-1)]


def rise_length(length, energy) -> np.ndarray:
    """The L after which dE/dL rises: the upper end of the segment with the smallest dE/dL, NaN when the smallest
    slope is the last segment (no rise within the measured L)."""
    L = np.asarray(length, dtype=float)
    slope = np.diff(energy, axis=-1) / np.diff(L)
    k = np.argmin(slope, axis=-1)
    return np.where(k < slope.shape[-1] - 1, L[k + 1], np.nan)


def plateau_onset(length, power, fraction: float = PLATEAU_FRACTION) -> np.ndarray:
    """Smallest L from which every larger L has mean power >= (1 - fraction) * max; NaN when only the largest L does
    (power still rising at the end of the measured range) or none does (power falls again after a peak): no plateau
    seen either way."""
    L = np.asarray(length, dtype=float)
    p = np.atleast_2d(power)
    inside = p >= (1.0 - fraction) * p.max(axis=-1, keepdims=True)
    # from the right: all L' >= L inside
    tail = np.flip(np.logical_and.accumulate(np.flip(inside, axis=-1), axis=-1), axis=-1)
    first = np.argmax(tail, axis=-1)  # 0 also where no L is in the tail: the largest L's check below
    onset = np.where(tail[..., -1] & (first < L.size - 1), L[first], np.nan)
    return onset if np.ndim(power) > 1 else onset[0]


def power_without_plateau(length, power, fraction: float = PLATEAU_FRACTION) -> str:
    """Why a curve of mean power has no plateau: still rising at its largest L, or falling again after a peak."""
    L, p = np.asarray(length, dtype=float), np.asarray(power, dtype=float)
    peak = int(np.argmax(p))
    if p[-1] >= (1.0 - fraction) * p[peak]:
        return f"power still rising at the largest L (maximum {p[peak]:.0f} W): no plateau within the measured L"
    return (f"power peaks at L = {L[peak]:.0f} ({p[peak]:.0f} W) and falls to {p[-1]:.0f} W at L = {L[-1]:.0f}: "
            "no plateau")


def _draws(g: pd.DataFrame, col: str, gen) -> np.ndarray:
    mu = g[col].to_numpy(float)
    s = sigma95(g[f"{col}_ci_low"], g[f"{col}_ci_high"])
    s = np.where(np.isfinite(s), s, 0.0)
    return mu + gen.standard_normal((DRAWS, mu.size)) * s


def _row(key, quantity, threshold, value, lo, hi, unit, method, note="", defined=1.0) -> dict:
    return dict(zip(GROUP, key), quantity=quantity, threshold=threshold, value=float(value), ci_low=float(lo),
                ci_high=float(hi), unit=unit, defined_fraction=float(defined), method=method, note=note)


def _fit_thresholds(key, q, f: QuadraticFit | None, gen) -> list[dict]:
    rows = []
    if f is None:
        return rows
    a, b, c = f.coef
    # draws of (a, b, c) whose 95 % region matches the t-intervals of the coefficients
    scale = f.quantile / Z975
    if np.isfinite(scale):
        coefs = gen.multivariate_normal(f.coef, f.cov * scale**2, size=DRAWS, method="svd")
    else:
        coefs = np.tile(f.coef, (1, 1))
    da, db, dc = coefs[:, 0], coefs[:, 1], coefs[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        opt = np.where((da > 0) & (dc > 0), np.sqrt(da / dc), np.nan)
        cross = np.where((db > 0) & (dc > 0), db / dc, np.nan)
        point_opt = np.sqrt(a / c) if a > 0 and c > 0 else np.nan
        point_cross = b / c if b > 0 and c > 0 else np.nan
    for name, point, d, method, why in (
        ("efficiency_fit", point_opt, opt, "sqrt(a/c) of the fit: where E(L)/L is lowest", "needs a > 0 and c > 0"),
        ("crossover", point_cross, cross, "b/c of the fit: where c L^2 overtakes b L", "needs b > 0 and c > 0"),
    ):
        defined = float(np.isfinite(d).mean())
        # no interval around an undefined point: the defined draws alone would suggest a value the fit does not give
        ok = np.isfinite(point) and defined > 0 and d.size > 1
        lo, hi = (np.nanpercentile(d, 2.5), np.nanpercentile(d, 97.5)) if ok else (np.nan, np.nan)
        note = "" if np.isfinite(point) else f"undefined for this fit ({why})"
        if np.isfinite(point) and defined < 0.95:
            note = f"defined in {defined:.0%} of the coefficient draws ({why})"
        rows.append(_row(key, q, name, point, lo, hi, "tokens", method, note, defined))
    return rows


def thresholds(per_cell: pd.DataFrame, fit_objects: dict) -> pd.DataFrame:
    gen = rng()
    rows = []
    for key, g in per_cell[per_cell["usable"]].groupby(GROUP, sort=False):
        g = g.sort_values("length_tokens")
        L = g["length_tokens"].to_numpy(float)
        tokens = g["tokens_per_run"].to_numpy(float)
        for q in QUANTITIES:
            if len(g) >= 2:
                e = _draws(g, q, gen)
                point = efficiency_length(L, g[q].to_numpy(float) / tokens)
                lo, hi = grid_interval(efficiency_length(L, e / tokens))
                note = "lowest J/token at the largest L measured: the minimum may lie beyond" if point == L[-1] else ""
                rows.append(_row(key, q, "efficiency_measured", point, lo, hi, "tokens",
                                 "measured L with the lowest J/token (interval: draws of every cell)", note))
            if len(g) >= 3:
                point = rise_length(L, g[q].to_numpy(float))
                d = rise_length(L, _draws(g, q, gen))
                lo, hi = grid_interval(d)
                note = "" if np.isfinite(point) else "dE/dL is smallest at the largest L: no rise within the measured L"
                rows.append(_row(key, q, "de_dl_rise", point, lo, hi, "tokens",
                                 "end of the segment with the smallest dE/dL", note, float(np.isfinite(d).mean())))
            rows += _fit_thresholds(key, q, fit_objects.get((*key, q)), gen)
        if len(g) >= 2 and g["mean_power_w"].notna().all():
            point = plateau_onset(L, g["mean_power_w"].to_numpy(float))
            d = plateau_onset(L, _draws(g, "mean_power_w", gen))
            lo, hi = grid_interval(d)
            pmax = g["mean_power_w"].max()
            note = (f"mean power within {PLATEAU_FRACTION:.0%} of its maximum ({pmax:.0f} W)" if np.isfinite(point)
                    else power_without_plateau(g["length_tokens"], g["mean_power_w"]))
            rows.append(_row(key, "mean_power_w", "power_plateau", point, lo, hi, "tokens",
                             f"smallest L from which mean power stays within {PLATEAU_FRACTION:.0%} of the maximum",
                             note, float(np.isfinite(d).mean())))
            at = g[g["length_tokens"] == point] if np.isfinite(point) else g.iloc[-1:]
            r = at.iloc[0]
            rows.append(_row(key, "power_cap_fraction", "cap_share_at_plateau", r["power_cap_fraction"],
                             r["power_cap_fraction_ci_low"], r["power_cap_fraction_ci_high"], "fraction of time",
                             f"share of the window's time at the power cap, at L={int(r['length_tokens'])}",
                             "" if np.isfinite(point) else "at the largest L (no plateau)"))
    cols = GROUP + ["quantity", "threshold", "value", "ci_low", "ci_high", "unit", "defined_fraction", "method", "note"]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out
