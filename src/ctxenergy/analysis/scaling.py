"""How energy scales with context length L, per model, engine and phase.

- dE/dL between neighbouring L: the marginal energy of one more input token.
- E(L) = a + bL + cL^2, fitted by weighted least squares. Each cell's error is its standard error and a relative
  error floor (the board spread / 1.96, ctxenergy.analysis.systematics) in quadrature: another board would not
  measure the cell more exactly than that. Two intervals per coefficient from the same fit: statistical (the cells'
  own errors propagated) and total (the covariance with the floor, inflated by the reduced chi^2 when the points
  still scatter more than their errors say). chi^2/dof is reported with and without the floor, and whether a
  polynomial of degree 2 (or 3, 4) describes the cells at all, with residuals per cell.
- Thresholds with a statistical interval and a total one (statistical and systematic):
    efficiency   the measured L with the lowest J/token, and sqrt(a/c), where E(L)/L = a/L + b + cL is lowest;
    crossover    L* = b/c, where the quadratic term cL^2 overtakes the linear term bL;
    dE/dL rise   the L after which dE/dL rises from its minimum;
    plateau      the smallest L from which mean power stays within PLATEAU_FRACTION of its maximum, and the share
                 of time spent at the power cap there.
Curves are per (model, engine, phase), and per engine_variant and batch_size where the cells carry them
(ctxenergy.analysis.cells.with_serving). A batched curve is fitted to the energy per sequence, E/B, so that b is J per
input token at every B and a is the fixed energy of one sequence; its dE/dL is likewise per input token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

import ctxenergy
from ctxenergy.analysis.cells import batch_sizes, with_serving
from ctxenergy.analysis.uncertainty import DRAWS, Z975, grid_interval, half_width, rng, sigma95, standard_error
from ctxenergy.stats import t975

QUANTITIES = ("energy_per_run_j", "dynamic_energy_per_run_j")
# Within 5 % of the largest mean power counts as the plateau: the spread of mean power between windows at the cap
# is ~1 % (H200 reference cells), and board power limits are enforced to a few per cent.
PLATEAU_FRACTION = 0.05
GROUP = ["model", "engine", "phase"]
# A model "describes" the cells while chi^2/dof stays below its 99.9 % quantile (z = 3.09 in Wilson-Hilferty's
# normal approximation of chi^2).
CHI2_Z = 3.0902
COV_COLUMNS = {
    (0, 0): "cov_aa",
    (0, 1): "cov_ab",
    (0, 2): "cov_ac",
    (1, 1): "cov_bb",
    (1, 2): "cov_bc",
    (2, 2): "cov_cc",
}


@dataclass(frozen=True)
class QuadraticFit:
    coef: np.ndarray  # a [J], b [J/token], c [J/token^2]
    cov: np.ndarray  # total: the cells' errors with the error floor, times the Birge factor
    dof: int
    chi2: float  # with the error floor
    birge: float  # factor applied to the covariance: max(1, chi2/dof)
    cov_stat: np.ndarray | None = None  # the same estimate, with the cells' statistical errors alone propagated
    chi2_stat: float = float("nan")  # chi^2 of the fit weighted by the statistical errors alone
    floor_rel: float = 0.0

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
        """Total 95 % intervals of the coefficients."""
        h = self.quantile * np.sqrt(np.diag(self.cov))
        return self.coef - h, self.coef + h

    def stat_interval(self) -> tuple[np.ndarray, np.ndarray]:
        """Statistical 95 % intervals: what the cells' windows alone leave uncertain in this estimate."""
        cov = self.cov if self.cov_stat is None else self.cov_stat
        h = (Z975 if self.dof > 0 else float("nan")) * np.sqrt(np.diag(cov))
        return self.coef - h, self.coef + h


def fit_from_row(row) -> QuadraticFit:
    """The fit back from a row of the fits table (coefficients and total covariance)."""
    cov = np.zeros((3, 3))
    for (i, j), name in COV_COLUMNS.items():
        cov[i, j] = cov[j, i] = row[name]
    coef = np.array([row["a_j"], row["b_j_per_token"], row["c_j_per_token2"]], dtype=float)
    return QuadraticFit(
        coef=coef, cov=cov, dof=int(row["dof"]), chi2=float(row["chi2"]), birge=float(row["birge_factor"])
    )


def _weighted_polynomial(u, y, s, degree: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Coefficients (in u), (X'WX)^-1 and chi^2 of a weighted least-squares polynomial."""
    x = np.vander(u, degree + 1, increasing=True)
    a = x / s[:, None]
    coef, *_ = np.linalg.lstsq(a, y / s, rcond=None)
    resid = (y - x @ coef) / s
    return coef, np.linalg.inv(a.T @ a), float(resid @ resid)


def chi2_limit(dof: int, z: float = CHI2_Z) -> float:
    """The chi^2/dof a correct model exceeds with probability ~0.1 % (z = 3.09; Wilson-Hilferty)."""
    if dof <= 0:
        return float("nan")
    k = float(dof)
    return (1 - 2 / (9 * k) + z * np.sqrt(2 / (9 * k))) ** 3


def fit_quadratic(length, energy, se, floor_rel: float = 0.0) -> QuadraticFit:
    """Weighted least squares of energy = a + b L + c L^2 (numpy only); each point weighted by 1 / (se^2 +
    (floor_rel * energy)^2).

    L is scaled to [0, 1] before solving: L^2 reaches 1.7e10 at 128k tokens and would ruin the conditioning.
    """
    x = np.asarray(length, dtype=float)
    y = np.asarray(energy, dtype=float)
    s_stat = np.asarray(se, dtype=float)
    if x.size < 3:
        raise ValueError(f"a quadratic needs at least 3 points, got {x.size}")
    scale = float(np.max(np.abs(x)))
    u = x / scale
    s = np.hypot(s_stat, floor_rel * np.abs(y))
    coef_u, inv, chi2 = _weighted_polynomial(u, y, s, 2)
    # the statistical errors alone, propagated through the same (floored) weights: a sandwich covariance
    b = np.vander(u, 3, increasing=True) * (s_stat / s**2)[:, None]
    cov_stat_u = inv @ (b.T @ b) @ inv
    chi2_stat = _weighted_polynomial(u, y, s_stat, 2)[2] if floor_rel > 0 else chi2
    dof = x.size - 3
    birge = max(1.0, chi2 / dof) if dof > 0 else 1.0
    d = np.diag([1.0, 1.0 / scale, 1.0 / scale**2])
    return QuadraticFit(
        coef=d @ coef_u,
        cov=d @ inv @ d * birge,
        dof=dof,
        chi2=chi2,
        birge=birge,
        cov_stat=d @ cov_stat_u @ d,
        chi2_stat=chi2_stat,
        floor_rel=floor_rel,
    )


def polynomial_note(length, energy, se, floor_rel: float, max_degree: int = 4) -> tuple[bool, str]:
    """Whether the quadratic describes the cells within their errors (floor included), and if not, whether a
    polynomial of degree 3 ... max_degree does: (quadratic describes, note)."""
    x = np.asarray(length, dtype=float)
    y = np.asarray(energy, dtype=float)
    s = np.hypot(np.asarray(se, dtype=float), floor_rel * np.abs(y))
    u = x / float(np.max(np.abs(x)))
    tried = []
    for degree in range(2, max_degree + 1):
        dof = x.size - degree - 1
        if dof <= 0:
            break
        per_dof = _weighted_polynomial(u, y, s, degree)[2] / dof
        tried.append((degree, per_dof, chi2_limit(dof)))
        if per_dof <= chi2_limit(dof):
            break
    if not tried:
        return True, "too few cells to test the model (no degrees of freedom)"
    degree, per_dof, limit = tried[-1]
    if degree == 2 and per_dof <= limit:
        return True, f"the quadratic describes the cells (chi2/dof {per_dof:.3g} <= {limit:.3g}, the 99.9 % limit)"
    listed = ", ".join(f"{v:.3g} (degree {d}, limit {lim:.3g})" for d, v, lim in tried)
    if per_dof <= limit:
        return False, f"not quadratic: chi2/dof {listed}; a polynomial of degree {degree} describes the cells"
    return False, f"no polynomial of degree 2-{tried[-1][0]} describes the cells: chi2/dof {listed}"


def cell_se(group: pd.DataFrame, col: str) -> np.ndarray:
    """Standard error of each cell's mean; a cell without an interval (one window) gets the largest relative SE of
    its group, and a floor of 1e-4 relative keeps one very tight cell from taking all the weight."""
    y = group[col].to_numpy(float)
    se = standard_error(group[f"{col}_ci_low"], group[f"{col}_ci_high"], group["n_windows"])
    rel = se / np.abs(y)
    fallback = np.nanmax(rel) if np.isfinite(rel).any() else 0.05
    rel = np.where(np.isfinite(rel), rel, fallback)
    return np.maximum(rel, 1e-4) * np.abs(y)


def per_sequence(g: pd.DataFrame) -> pd.DataFrame:
    """The cells' energies per sequence (E / B, intervals likewise); the table itself where it has no batch axis."""
    if "batch_size" not in g:
        return g
    g = g.copy()
    b = batch_sizes(g)
    for q in QUANTITIES:
        for s in ("", "_ci_low", "_ci_high"):
            g[q + s] = g[q + s].to_numpy(float) / b
    return g


def slopes(per_cell: pd.DataFrame) -> pd.DataFrame:
    """dE/dL between neighbouring usable L, per model, engine, phase (and serving axes) and energy quantity."""
    rows = []
    usable = per_cell[per_cell["usable"]]
    group = with_serving(GROUP, per_cell)
    for key, g in usable.groupby(group, sort=False):
        g = per_sequence(g.sort_values("length_tokens"))
        for q in QUANTITIES:
            L = g["length_tokens"].to_numpy(float)
            e = g[q].to_numpy(float)
            h = half_width(g[f"{q}_ci_low"], g[f"{q}_ci_high"])
            boards = g["device_uuid"].to_numpy() if "device_uuid" in g else np.full(len(g), "")
            for i in range(len(g) - 1):
                dl = L[i + 1] - L[i]
                v = (e[i + 1] - e[i]) / dl
                hh = np.hypot(h[i], h[i + 1]) / dl
                rows.append(
                    dict(
                        zip(group, key),
                        quantity=q,
                        length_low=int(L[i]),
                        length_high=int(L[i + 1]),
                        de_dl_j_per_token=v,
                        de_dl_j_per_token_ci_low=v - hh,
                        de_dl_j_per_token_ci_high=v + hh,
                        same_board=same_board(boards[i], boards[i + 1]),
                    )
                )
    cols = group + [
        "quantity",
        "length_low",
        "length_high",
        "de_dl_j_per_token",
        "de_dl_j_per_token_ci_low",
        "de_dl_j_per_token_ci_high",
        "same_board",
    ]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out


def same_board(a, b) -> bool | None:
    """Whether two cells ran on one board: a slope or difference between boards also carries their offset (up to
    the board spread of ctxenergy.analysis.systematics), which neither cell's interval holds. None where a cell does
    not record its board."""
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        return None
    return a == b


def _excluded_note(all_cells: pd.DataFrame) -> str:
    bad = all_cells[~all_cells["usable"]]
    return "; ".join(f"L={int(r.length_tokens)} excluded ({r.excluded_reason})" for r in bad.itertuples())


def fits(per_cell: pd.DataFrame, floor_rel: float = 0.0) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Coefficients per (model, engine, phase, quantity), residuals per cell, and the fit objects by key; floor_rel
    is the relative error floor of each cell (one sigma; Systematics.floor_sigma_rel)."""
    rows, resid_rows, objects = [], [], {}
    group = with_serving(GROUP, per_cell)
    for key, g_all in per_cell.groupby(group, sort=False):
        g = per_sequence(g_all[g_all["usable"]].sort_values("length_tokens"))
        note = _excluded_note(g_all)
        for q in QUANTITIES:
            row = dict(
                zip(group, key),
                quantity=q,
                n_cells=len(g),
                n_excluded=int((~g_all["usable"]).sum()),
                excluded=note,
                error_floor_rel=floor_rel,
            )
            if len(g) < 3:
                row["status"] = f"not fitted: {len(g)} usable cell(s), a quadratic needs 3"
                rows.append(row)
                continue
            L = g["length_tokens"].to_numpy(float)
            y = g[q].to_numpy(float)
            se = cell_se(g, q)
            f = fit_quadratic(L, y, se, floor_rel)
            objects[(*key, q)] = f
            lo, hi = f.stat_interval()
            tlo, thi = f.interval()
            describes, model_note = polynomial_note(L, y, se, floor_rel)
            per_dof = f.chi2 / f.dof if f.dof > 0 else np.nan
            row.update(
                status="fitted" if f.dof > 0 else "exact: 3 points, no interval",
                dof=f.dof,
                chi2=f.chi2,
                chi2_per_dof=per_dof,
                chi2_per_dof_stat=f.chi2_stat / f.dof if f.dof > 0 else np.nan,
                quadratic_describes=describes,
                model_note=model_note,
                birge_factor=f.birge,
                length_min=int(L.min()),
                length_max=int(L.max()),
            )
            for i, name in enumerate(("a_j", "b_j_per_token", "c_j_per_token2")):
                row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = f.coef[i], lo[i], hi[i]
                row[f"{name}_total_low"], row[f"{name}_total_high"] = tlo[i], thi[i]
            # the covariance travels with the table, so a figure can draw the fit's band from Parquet alone
            for (i, j), name in COV_COLUMNS.items():
                row[name] = f.cov[i, j]
            rows.append(row)
            pred = f.predict(L)
            s_total = np.hypot(se, floor_rel * np.abs(y))
            for c, length, obs, p, s in zip(g["cell_id"], L, y, pred, s_total):
                resid_rows.append(
                    dict(
                        zip(group, key),
                        quantity=q,
                        cell_id=c,
                        length_tokens=int(length),
                        observed_j=obs,
                        fitted_j=p,
                        residual_j=obs - p,
                        relative_residual=(obs - p) / p,
                        standardized_residual=(obs - p) / s,
                    )
                )
    coef_cols = [
        f"{n}{s}"
        for n in ("a_j", "b_j_per_token", "c_j_per_token2")
        for s in ("", "_ci_low", "_ci_high", "_total_low", "_total_high")
    ]
    cols = (
        group
        + [
            "quantity",
            "status",
            "n_cells",
            "n_excluded",
            "excluded",
            "error_floor_rel",
            "dof",
            "chi2",
            "chi2_per_dof",
            "chi2_per_dof_stat",
            "quadratic_describes",
            "model_note",
            "birge_factor",
            "length_min",
            "length_max",
        ]
        + coef_cols
        + list(COV_COLUMNS.values())
    )
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    res_cols = group + [
        "quantity",
        "cell_id",
        "length_tokens",
        "observed_j",
        "fitted_j",
        "residual_j",
        "relative_residual",
        "standardized_residual",
    ]
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
    return (
        f"power peaks at L = {L[peak]:.0f} ({p[peak]:.0f} W) and falls to {p[-1]:.0f} W at L = {L[-1]:.0f}: no plateau"
    )


def cell_draws(g: pd.DataFrame, col: str, gen, floor_rel: float = 0.0) -> np.ndarray:
    """DRAWS draws of every cell's value: normal with the sigma of its 95 % interval, and the relative error floor
    in quadrature (0: the statistical draws alone)."""
    mu = g[col].to_numpy(float)
    s = sigma95(g[f"{col}_ci_low"], g[f"{col}_ci_high"])
    s = np.hypot(np.where(np.isfinite(s), s, 0.0), floor_rel * np.abs(mu))
    return mu + gen.standard_normal((DRAWS, mu.size)) * s


def _row(
    key: dict, quantity, threshold, value, lo, hi, unit, method, note="", defined=1.0, total=(np.nan, np.nan)
) -> dict:
    return dict(
        key,
        quantity=quantity,
        threshold=threshold,
        value=float(value),
        ci_low=float(lo),
        ci_high=float(hi),
        total_low=float(total[0]),
        total_high=float(total[1]),
        unit=unit,
        defined_fraction=float(defined),
        method=method,
        note=note,
    )


def _coefficient_draws(f: QuadraticFit, cov: np.ndarray | None, gen) -> np.ndarray:
    """Draws of (a, b, c) whose 95 % region matches the fit's intervals for this covariance."""
    scale = f.quantile / Z975 if cov is f.cov else 1.0
    if cov is None or not np.isfinite(scale) or f.dof <= 0:
        return np.tile(f.coef, (1, 1))
    return gen.multivariate_normal(f.coef, cov * scale**2, size=DRAWS, method="svd")


def _fit_thresholds(key: dict, q, f: QuadraticFit | None, gen) -> list[dict]:
    rows = []
    if f is None:
        return rows
    a, b, c = f.coef
    stat = _coefficient_draws(f, f.cov_stat, gen)
    total = _coefficient_draws(f, f.cov, gen)

    def optimum(co):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((co[:, 0] > 0) & (co[:, 2] > 0), np.sqrt(co[:, 0] / co[:, 2]), np.nan)

    def crossover(co):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where((co[:, 1] > 0) & (co[:, 2] > 0), co[:, 1] / co[:, 2], np.nan)

    point_opt = np.sqrt(a / c) if a > 0 and c > 0 else np.nan
    point_cross = b / c if b > 0 and c > 0 else np.nan
    for name, point, of, method, why in (
        ("efficiency_fit", point_opt, optimum, "sqrt(a/c) of the fit: where E(L)/L is lowest", "needs a > 0 and c > 0"),
        ("crossover", point_cross, crossover, "b/c of the fit: where c L^2 overtakes b L", "needs b > 0 and c > 0"),
    ):
        d_stat, d_total = of(stat), of(total)
        defined = float(np.isfinite(d_total).mean())
        # no interval around an undefined point: the defined draws alone would suggest a value the fit does not give

        def interval(d, point=point):
            ok = np.isfinite(point) and np.isfinite(d).any() and d.size > 1
            return (np.nanpercentile(d, 2.5), np.nanpercentile(d, 97.5)) if ok else (np.nan, np.nan)

        note = "" if np.isfinite(point) else f"undefined for this fit ({why})"
        if np.isfinite(point) and defined < 0.95:
            note = f"defined in {defined:.0%} of the coefficient draws ({why})"
        if f.dof > 0 and f.chi2 / f.dof > chi2_limit(f.dof):
            note = "; ".join(
                filter(
                    None,
                    [
                        note,
                        f"the quadratic does not describe these cells (chi2/dof "
                        f"{f.chi2 / f.dof:.3g} > {chi2_limit(f.dof):.3g}): a property of the "
                        "fit, not of the cells",
                    ],
                )
            )
        rows.append(
            _row(key, q, name, point, *interval(d_stat), "tokens", method, note, defined, total=interval(d_total))
        )
    return rows


def threshold_row(
    thresholds: pd.DataFrame, model: str, engine: str, phase: str, name: str, quantity: str | None = None
) -> pd.Series | None:
    """One threshold of a model and engine in a phase (of that quantity, where given) from the thresholds table; None
    where none was derived. Its value may be NaN: undefined for that fit, or not reached within the measured L."""
    t = thresholds[
        (thresholds["model"] == model)
        & (thresholds["engine"] == engine)
        & (thresholds["phase"] == phase)
        & (thresholds["threshold"] == name)
    ]
    if quantity:
        t = t[t["quantity"] == quantity]
    return t.iloc[0] if len(t) else None


def crossover_row(thresholds: pd.DataFrame, model: str, engine: str) -> pd.Series | None:
    """The crossover L* = b/c of the prefill fit of total energy, the one every output quotes."""
    return threshold_row(thresholds, model, engine, "prefill", "crossover", "energy_per_run_j")


def thresholds(
    per_cell: pd.DataFrame, fit_objects: dict, floor_rel: float = 0.0, power_floor_rel: float = 0.0
) -> pd.DataFrame:
    """Thresholds per (model, engine, phase) with statistical intervals (the cells' windows) and total ones (the
    relative error floor of energy, floor_rel, or of mean power, power_floor_rel, in quadrature; for the fit's
    thresholds its total covariance)."""
    gen = rng()
    rows = []
    group = with_serving(GROUP, per_cell)
    for values, g in per_cell[per_cell["usable"]].groupby(group, sort=False):
        key = dict(zip(group, values))
        g = g.sort_values("length_tokens")
        L = g["length_tokens"].to_numpy(float)
        tokens = g["tokens_per_run"].to_numpy(float)
        for q in QUANTITIES:
            if len(g) >= 2:
                point = efficiency_length(L, g[q].to_numpy(float) / tokens)
                lo, hi = grid_interval(efficiency_length(L, cell_draws(g, q, gen) / tokens))
                total = grid_interval(efficiency_length(L, cell_draws(g, q, gen, floor_rel) / tokens))
                note = "lowest J/token at the largest L measured: the minimum may lie beyond" if point == L[-1] else ""
                rows.append(
                    _row(
                        key,
                        q,
                        "efficiency_measured",
                        point,
                        lo,
                        hi,
                        "tokens",
                        "measured L with the lowest J/token (interval: draws of every cell)",
                        note,
                        total=total,
                    )
                )
            if len(g) >= 3:
                point = rise_length(L, g[q].to_numpy(float))
                d = rise_length(L, cell_draws(g, q, gen))
                lo, hi = grid_interval(d)
                total = grid_interval(rise_length(L, cell_draws(g, q, gen, floor_rel)))
                note = "" if np.isfinite(point) else "dE/dL is smallest at the largest L: no rise within the measured L"
                rows.append(
                    _row(
                        key,
                        q,
                        "de_dl_rise",
                        point,
                        lo,
                        hi,
                        "tokens",
                        "end of the segment with the smallest dE/dL",
                        note,
                        float(np.isfinite(d).mean()),
                        total=total,
                    )
                )
            rows += _fit_thresholds(key, q, fit_objects.get((*values, q)), gen)
        if len(g) >= 2 and g["mean_power_w"].notna().all():
            point = plateau_onset(L, g["mean_power_w"].to_numpy(float))
            d = plateau_onset(L, cell_draws(g, "mean_power_w", gen))
            lo, hi = grid_interval(d)
            total = grid_interval(plateau_onset(L, cell_draws(g, "mean_power_w", gen, power_floor_rel)))
            pmax = g["mean_power_w"].max()
            note = (
                f"mean power within {PLATEAU_FRACTION:.0%} of its maximum ({pmax:.0f} W)"
                if np.isfinite(point)
                else power_without_plateau(g["length_tokens"], g["mean_power_w"])
            )
            rows.append(
                _row(
                    key,
                    "mean_power_w",
                    "power_plateau",
                    point,
                    lo,
                    hi,
                    "tokens",
                    f"smallest L from which mean power stays within {PLATEAU_FRACTION:.0%} of the maximum",
                    note,
                    float(np.isfinite(d).mean()),
                    total=total,
                )
            )
            at = g[g["length_tokens"] == point] if np.isfinite(point) else g.iloc[-1:]
            r = at.iloc[0]
            rows.append(
                _row(
                    key,
                    "power_cap_fraction",
                    "cap_share_at_plateau",
                    r["power_cap_fraction"],
                    r["power_cap_fraction_ci_low"],
                    r["power_cap_fraction_ci_high"],
                    "fraction of time",
                    f"share of the window's time at the power cap, at L={int(r['length_tokens'])}",
                    "" if np.isfinite(point) else "at the largest L (no plateau)",
                )
            )
    cols = group + [
        "quantity",
        "threshold",
        "value",
        "ci_low",
        "ci_high",
        "total_low",
        "total_high",
        "unit",
        "defined_fraction",
        "method",
        "note",
    ]
    out = pd.DataFrame(rows, columns=cols)
    out.insert(0, "schema_version", ctxenergy.SCHEMA_VERSION)
    return out
