"""E_in / E_out per L and ratios between engines.

The reference data hold one engine (hf-sdpa). The engine-ratio tests build a second engine by transforming the
real table: a copy named "vllm" whose energies are divided by 7.6 and whose times by 8.9, so the expected ratios
are known exactly.
"""

import numpy as np
import pandas as pd
import pytest
from conftest import reference_cells

from ctxenergy.analysis.cells import prepare_cells
from ctxenergy.analysis.engines import engine_ratios
from ctxenergy.analysis.io_ratio import io_ratio
from ctxenergy.analysis.per_cell import per_cell_metrics
from ctxenergy.analysis.uncertainty import half_width

ENERGY = ("energy_per_run_j", "dynamic_energy_per_run_j")
TIME = ("run_s", "prefill_s")


def suffixed(cols):
    return [f"{c}{s}" for c in cols for s in ("", "_ci_low", "_ci_high")]


def with_second_engine(raw: pd.DataFrame, energy_factor: float, time_factor: float) -> pd.DataFrame:
    other = raw.copy()
    other["engine"] = "vllm"
    other["cell_id"] = other["cell_id"].str.replace("/hf-sdpa/", "/vllm/")
    other[suffixed(ENERGY)] = other[suffixed(ENERGY)] / energy_factor
    other[suffixed(TIME)] = other[suffixed(TIME)] / time_factor
    return pd.concat([other, raw], ignore_index=True)  # vllm first: the pair must still come out as hf / vllm


@pytest.fixture(scope="module")
def raw():
    return reference_cells()


def test_e_out_divides_by_g_minus_one(raw):
    io = io_ratio(per_cell_metrics(prepare_cells(raw))).set_index("length_tokens")
    cells = raw.set_index("cell_id")
    for L in (256, 1024, 16384):
        ep = cells.loc[f"llama-3.1-8b/hf-sdpa/prefill/L{L}", "energy_per_run_j"]
        eg = cells.loc[f"llama-3.1-8b/hf-sdpa/generate/L{L}", "energy_per_run_j"]
        r = io.loc[L]
        assert r["e_in_j"] == pytest.approx(ep / L)
        assert r["e_out_j"] == pytest.approx((eg - ep) / 127)
        assert r["e_out_per_g_j"] == pytest.approx((eg - ep) / 128)
        assert r["e_ratio"] == pytest.approx((eg - ep) / 127 / (ep / L))
        assert r["e_ratio_per_g"] == pytest.approx(r["e_ratio"] * 127 / 128)
        assert r["e_ratio_ci_low"] < r["e_ratio"] < r["e_ratio_ci_high"]
        # the prefill's interval carries over to E_in unchanged
        assert r["e_in_j_ci_low"] == pytest.approx(
            cells.loc[f"llama-3.1-8b/hf-sdpa/prefill/L{L}", "energy_per_run_j_ci_low"] / L
        )
    assert io["usable"].all() and (io["output_tokens"] == 128).all()


def test_e_out_interval_adds_both_cells_in_quadrature(raw):
    pc = per_cell_metrics(prepare_cells(raw)).set_index("cell_id")
    r = io_ratio(pc.reset_index()).set_index("length_tokens").loc[2048]
    p, g = pc.loc["llama-3.1-8b/hf-sdpa/prefill/L2048"], pc.loc["llama-3.1-8b/hf-sdpa/generate/L2048"]
    h = (
        np.hypot(
            half_width(p["energy_per_run_j_ci_low"], p["energy_per_run_j_ci_high"]),
            half_width(g["energy_per_run_j_ci_low"], g["energy_per_run_j_ci_high"]),
        )
        / 127
    )
    assert r["e_out_j_ci_high"] - r["e_out_j"] == pytest.approx(h)


def test_a_missing_partner_is_a_row_with_a_note(raw):
    df = raw[raw["cell_id"] != "llama-3.1-8b/hf-sdpa/generate/L512"]
    io = io_ratio(per_cell_metrics(prepare_cells(df))).set_index("length_tokens")
    assert not io.loc[512, "usable"] and io.loc[512, "note"] == "no generate cell"
    assert np.isnan(io.loc[512, "e_ratio"]) and io.drop(index=512)["usable"].all()


def test_engine_ratios_on_a_transformed_second_engine(raw):
    pc = per_cell_metrics(prepare_cells(with_second_engine(raw, 7.6, 8.9)))
    er = engine_ratios(pc)
    assert len(er) == len(raw)  # one pair per (phase, L)
    assert set(er["engine_a"]) == {"hf-sdpa"} and set(er["engine_b"]) == {"vllm"}
    assert np.allclose(er["energy_ratio"], 7.6) and np.allclose(er["dynamic_energy_ratio"], 7.6)
    assert np.allclose(er["latency_ratio"], 8.9)
    # equal relative widths on both sides: the ratio's log half-width is sqrt(2) times one cell's
    one = pc[pc["engine"] == "hf-sdpa"].set_index(["phase", "length_tokens"])
    rel = half_width(one["energy_per_run_j_ci_low"], one["energy_per_run_j_ci_high"]) / one["energy_per_run_j"]
    got = np.log(er.set_index(["phase", "length_tokens"]).loc[one.index, "energy_ratio_ci_high"] / 7.6)
    assert np.allclose(got, np.sqrt(2) * rel)


def test_engine_ratios_skip_unusable_cells(raw):
    df = with_second_engine(raw, 2.0, 2.0)
    df.loc[df["cell_id"] == "llama-3.1-8b/vllm/prefill/L1024", "flags"] = "foreign_process"
    er = engine_ratios(per_cell_metrics(prepare_cells(df)))
    assert len(er) == len(raw) - 1
    assert not ((er["phase"] == "prefill") & (er["length_tokens"] == 1024)).any()


def test_e_out_across_two_boards_says_so_in_the_table_and_the_report(raw):
    from ctxenergy.analysis.derive import conform
    from ctxenergy.outputs.report import io_section

    pc = per_cell_metrics(prepare_cells(raw))
    io = io_ratio(pc).set_index("length_tokens")
    assert io["same_board"].eq(True).all()  # the reference slice ran on one board
    assert "†" not in io_section(io.reset_index())
    moved = pc.copy()
    moved.loc[moved["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L4096", "device_uuid"] = "GPU-another-board"
    io = io_ratio(moved)
    assert io["same_board"].eq(False).sum() == 1
    assert not io.set_index("length_tokens").loc[4096, "same_board"]
    for table in (io, conform("io_ratio", io)):  # as derived, and as written (nullable boolean)
        html = io_section(table)
        assert html.count("† prefill and generate on two boards") == 1 and "times E_prefill / (G − 1)" in html
