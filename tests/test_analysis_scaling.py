"""dE/dL, the weighted E(L) fit and the thresholds: synthetic cases with known answers, then the H200 reference."""

import numpy as np
import pandas as pd
import pytest
from conftest import reference_cells

from ctxenergy.analysis.cells import prepare_cells
from ctxenergy.analysis.per_cell import per_cell_metrics
from ctxenergy.analysis.scaling import (
    PLATEAU_FRACTION,
    fit_from_row,
    fit_quadratic,
    fits,
    plateau_onset,
    power_without_plateau,
    rise_length,
    slopes,
    thresholds,
)

GRID = 2.0 ** np.arange(8, 17)


@pytest.fixture(scope="module")
def pc():
    return per_cell_metrics(prepare_cells(reference_cells()))


def synthetic_cells(a, b, c, rel_half=0.01, power=None, n=5):
    """A prefill group whose energies lie exactly on a + bL + cL^2, each with a +-rel_half 95 % interval."""
    e = a + b * GRID + c * GRID**2
    p = power if power is not None else np.full(GRID.size, 500.0)
    rows = []
    for L, ei, pi in zip(GRID, e, p):
        rows.append(
            {
                "cell_id": f"m/hf-sdpa/prefill/L{int(L)}",
                "model": "m",
                "engine": "hf-sdpa",
                "phase": "prefill",
                "length_tokens": int(L),
                "output_tokens": 1,
                "status": "ok",
                "status_reason": "",
                "flags": "",
                "n_windows": n,
                "energy_per_run_j": ei,
                "energy_per_run_j_ci_low": ei * (1 - rel_half),
                "energy_per_run_j_ci_high": ei * (1 + rel_half),
                "dynamic_energy_per_run_j": ei / 2,
                "dynamic_energy_per_run_j_ci_low": ei / 2 * (1 - rel_half),
                "dynamic_energy_per_run_j_ci_high": ei / 2 * (1 + rel_half),
                "run_s": 1.0,
                "run_s_ci_low": 0.99,
                "run_s_ci_high": 1.01,
                "mean_power_w": pi,
                "mean_power_w_ci_low": pi - 1,
                "mean_power_w_ci_high": pi + 1,
                "power_cap_fraction": 0.0,
                "power_cap_fraction_ci_low": 0.0,
                "power_cap_fraction_ci_high": 0.0,
            }
        )
    return per_cell_metrics(prepare_cells(pd.DataFrame(rows)))


def test_fit_recovers_an_exact_quadratic():
    x = GRID
    f = fit_quadratic(x, 5.0 + 0.02 * x + 3e-7 * x**2, np.full(x.size, 0.1))
    assert f.coef == pytest.approx([5.0, 0.02, 3e-7], rel=1e-6)
    assert f.chi2 == pytest.approx(0.0, abs=1e-9) and f.birge == 1.0 and f.dof == x.size - 3


def test_fit_intervals_cover_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    truth = np.array([5.0, 0.02, 3e-7])
    y0 = truth[0] + truth[1] * GRID + truth[2] * GRID**2
    se = 0.02 * y0
    hits = np.zeros(3)
    trials = 400
    for _ in range(trials):
        f = fit_quadratic(GRID, y0 + rng.standard_normal(GRID.size) * se, se)
        lo, hi = f.interval()
        hits += (lo <= truth) & (truth <= hi)
    # widening by chi2/dof when it exceeds 1 makes the intervals a little conservative, never too narrow
    assert (hits / trials > 0.92).all() and (hits / trials < 0.995).all()


def test_thresholds_of_a_known_curve():
    a, b, c = 100.0, 0.02, 1e-6  # sqrt(a/c) = 10,000; b/c = 20,000
    pc = synthetic_cells(a, b, c)
    ft, res, objects = fits(pc)
    th = thresholds(pc, objects).set_index(["quantity", "threshold"])
    opt = th.loc[("energy_per_run_j", "efficiency_fit")]
    assert opt["value"] == pytest.approx(10_000, rel=1e-6)
    assert opt["ci_low"] < 10_000 < opt["ci_high"]
    cross = th.loc[("energy_per_run_j", "crossover")]
    assert cross["value"] == pytest.approx(20_000, rel=1e-6) and cross["ci_low"] < 20_000 < cross["ci_high"]
    # on the grid, J/token = a/L + b + cL is lowest at 8192 (closest to 10,000 on this curve)
    jpt = (a + b * GRID + c * GRID**2) / GRID
    assert th.loc[("energy_per_run_j", "efficiency_measured"), "value"] == GRID[np.argmin(jpt)] == 8192
    assert res["residual_j"].abs().max() < 1e-6 * res["observed_j"].max()


def test_fit_thresholds_are_undefined_when_the_curve_bends_down():
    pc = synthetic_cells(100.0, 0.02, -1e-8)
    _, _, objects = fits(pc)
    th = thresholds(pc, objects).set_index(["quantity", "threshold"])
    row = th.loc[("energy_per_run_j", "crossover")]
    assert np.isnan(row["value"]) and np.isnan(row["ci_low"]) and "undefined" in row["note"]


def test_plateau_onset():
    L = np.array([256, 512, 1024, 2048, 4096, 8192])
    assert plateau_onset(L, np.array([300, 500, 690, 700, 705, 702.0])) == 1024
    # a dip back below the band after reaching it moves the onset past the dip
    assert plateau_onset(L, np.array([300, 700, 600, 700, 705, 702.0])) == 2048
    assert np.isnan(plateau_onset(L, np.array([100, 200, 300, 400, 500, 600.0])))  # still rising
    # power that peaks and falls below the band at the largest L (hf-eager on the H200: 697 W at 2048, 590 W at
    # 8192) has no plateau; this once gave the smallest L
    falling = np.array([645, 688, 694, 697, 680, 590.0])
    assert np.isnan(plateau_onset(L, falling))
    assert np.isnan(plateau_onset(L, np.stack([falling, falling]))).all()
    assert (
        power_without_plateau(L, falling)
        == "power peaks at L = 2048 (697 W) and falls to 590 W at L = 8192: no plateau"
    )
    assert "still rising" in power_without_plateau(L, np.array([100, 200, 300, 400, 500, 600.0]))
    assert PLATEAU_FRACTION == 0.05


def test_rise_length():
    L = np.array([1, 2, 3, 4, 5.0])
    assert rise_length(L, np.array([0, 3, 4, 6, 9.0])) == 3  # slopes 3, 1, 2, 3: lowest on 2-3
    assert np.isnan(rise_length(L, np.array([0, 4, 7, 9, 10.0])))  # slopes keep falling


def test_slopes_are_finite_differences_of_the_reference(pc):
    sl = slopes(pc)
    pre = pc[pc["phase"] == "prefill"].sort_values("length_tokens")
    e, L = pre["energy_per_run_j"].to_numpy(), pre["length_tokens"].to_numpy()
    got = sl[(sl["phase"] == "prefill") & (sl["quantity"] == "energy_per_run_j")]["de_dl_j_per_token"].to_numpy()
    assert np.allclose(got, np.diff(e) / np.diff(L))
    assert sl["same_board"].eq(True).all()  # the reference slice ran on one board


def test_a_slope_between_two_boards_says_so(pc):
    moved = pc.copy()
    one = moved["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L4096"
    moved.loc[one, "device_uuid"] = "GPU-another-board"
    sl = slopes(moved).query("phase == 'prefill' and quantity == 'energy_per_run_j'")
    across = {(r.length_low, r.length_high) for r in sl.itertuples() if r.same_board is False}
    assert across == {(2048, 4096), (4096, 8192)}
    moved.loc[one, "device_uuid"] = ""  # a cell that does not record its board: unknown, not "same"
    sl = slopes(moved).query("phase == 'prefill' and quantity == 'energy_per_run_j'")
    assert sl.set_index("length_high").loc[4096, "same_board"] is None


def test_reference_prefill_fit_is_convex_and_close_to_the_cells(pc):
    ft, res, objects = fits(pc)
    row = ft[(ft["phase"] == "prefill") & (ft["quantity"] == "energy_per_run_j")].iloc[0]
    assert row["n_cells"] == 7 and row["status"] == "fitted"
    assert row["c_j_per_token2_ci_low"] > 0 and row["b_j_per_token_ci_low"] > 0
    r = res[(res["phase"] == "prefill") & (res["quantity"] == "energy_per_run_j")]
    assert r["relative_residual"].abs().max() < 0.2
    assert r.loc[r["length_tokens"] >= 2048, "relative_residual"].abs().max() < 0.01
    # the covariance stored in the table gives back the same fit
    f = fit_from_row(row)
    assert np.allclose(f.cov, objects[("llama-3.1-8b", "hf-sdpa", "prefill", "energy_per_run_j")].cov)


def test_reference_thresholds(pc):
    _, _, objects = fits(pc)
    th = thresholds(pc, objects)
    pre = th[th["phase"] == "prefill"].set_index(["quantity", "threshold"])
    cells = pc[pc["phase"] == "prefill"].sort_values("length_tokens")
    # the measured efficiency threshold is the L with the lowest J/token, and its interval holds it
    best = cells.iloc[cells["energy_per_token_j"].argmin()]["length_tokens"]
    eff = pre.loc[("energy_per_run_j", "efficiency_measured")]
    assert eff["value"] == best and eff["ci_low"] <= best <= eff["ci_high"]
    # prefill runs at the 700 W cap from ~1k tokens on this board: the plateau starts well below 16k
    plateau = pre.loc[("mean_power_w", "power_plateau")]
    assert plateau["value"] <= 2048 and plateau["ci_high"] <= 4096
    gen = th[(th["phase"] == "generate") & (th["threshold"] == "power_plateau")].iloc[0]
    assert np.isnan(gen["value"]) and "still rising" in gen["note"]


def test_an_excluded_cell_leaves_the_fit_and_is_named():
    raw = reference_cells()
    raw.loc[raw["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L4096", ["status", "status_reason"]] = ["oom", "no memory"]
    pc = per_cell_metrics(prepare_cells(raw))
    ft, res, _ = fits(pc)
    row = ft[(ft["phase"] == "prefill") & (ft["quantity"] == "energy_per_run_j")].iloc[0]
    assert row["n_cells"] == 6 and row["n_excluded"] == 1
    assert "L=4096 excluded (status oom" in row["excluded"]
    assert "llama-3.1-8b/hf-sdpa/prefill/L4096" not in set(res["cell_id"])
    assert 4096 not in set(slopes(pc).query("phase == 'prefill'")[["length_low", "length_high"]].to_numpy().ravel())
