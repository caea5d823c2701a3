"""`ctxenergy estimate` and the cost_model table, checked by hand against the committed campaign's fits."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from ctxenergy.analysis.cost_model import REFERENCE_ANALYSIS, estimate, load_cost_model
from ctxenergy.analysis.derive import derive, write_derived
from ctxenergy.cli import main
from ctxenergy.errors import CtxEnergyError

CAMPAIGN = REFERENCE_ANALYSIS.parents[1]


def _committed(name: str) -> pd.DataFrame:
    return pd.read_parquet(REFERENCE_ANALYSIS / f"{name}.parquet")


def test_estimate_llama_vllm_50k_in_300_out_by_hand(capsys):
    """The issue's example: E = a + b N + c N^2 + (G - 1) E_out(L_eff), E_out read at L_eff = N + (G - 128) / 2 =
    50,086 on the line between the measured 32,768 and 65,536; bands from the systematics table."""
    assert (
        main(
            ["estimate", "--model", "llama-3.1-8b", "--engine", "vllm", "--input", "50000", "--output", "300", "--json"]
        )
        == 0
    )
    got = {e["quantity"]: e for e in json.loads(capsys.readouterr().out)["estimates"]}

    fits, io, cost = _committed("fits"), _committed("io_ratio"), _committed("cost_model")
    sys = _committed("systematics").set_index("systematic")["relative_half_width"]
    absolute = math.hypot(sys["board_spread"], sys["nvml_gain"])  # vLLM's decode is GPU-bound: the board's spread
    n, g = 50_000, 300
    w = (n + (g - 128) / 2 - 32_768) / (65_536 - 32_768)
    for quantity, column, p in (("total", "energy_per_run_j", "e"), ("dynamic", "dynamic_energy_per_run_j", "dyn_e")):
        f = fits[
            (fits.model == "llama-3.1-8b")
            & (fits.engine == "vllm")
            & (fits.phase == "prefill")
            & (fits.quantity == column)
        ].iloc[0]
        prefill = f.a_j + f.b_j_per_token * n + f.c_j_per_token2 * n**2
        at = io[(io.model == "llama-3.1-8b") & (io.engine == "vllm")].set_index("length_tokens")
        e_out = (1 - w) * at.loc[32_768, f"{p}_out_j"] + w * at.loc[65_536, f"{p}_out_j"]
        energy = prefill + (g - 1) * e_out
        assert got[quantity]["energy_j"] == pytest.approx(energy, rel=1e-12)
        assert got[quantity]["decode_length_tokens"] == 50_086

        # systematic: the board spread and NVML's gain in quadrature, prefill and decode adding (one board)
        assert got[quantity]["sys_half_width_j"] == pytest.approx(energy * absolute, rel=1e-9)
        # statistical: the prefill fit's statistical covariance, and the two E_out cells' half-widths
        row = cost[
            (cost.model == "llama-3.1-8b")
            & (cost.engine == "vllm")
            & (cost.quantity == quantity)
            & (cost.term == "prefill")
        ].iloc[0]
        x = np.array([1.0, n, n * n])
        c = np.array(
            [
                [row.cov_stat_aa, row.cov_stat_ab, row.cov_stat_ac],
                [row.cov_stat_ab, row.cov_stat_bb, row.cov_stat_bc],
                [row.cov_stat_ac, row.cov_stat_bc, row.cov_stat_cc],
            ]
        )
        h = (at[f"{p}_out_j_ci_high"] - at[f"{p}_out_j_ci_low"]) / 2
        stat = math.hypot(
            1.959964 * math.sqrt(x @ c @ x), (g - 1) * math.hypot((1 - w) * h.loc[32_768], w * h.loc[65_536])
        )
        assert got[quantity]["stat_half_width_j"] == pytest.approx(stat, rel=1e-6)
        assert got[quantity]["total_half_width_j"] == pytest.approx(math.hypot(stat, energy * absolute), rel=1e-6)
        # the statistical band is far inside the systematic one, and the exported fit is the committed one
        assert 0 < got[quantity]["stat_half_width_j"] < got[quantity]["sys_half_width_j"] / 3
        assert (row.a_j, row.b_j_per_token, row.c_j_per_token2) == (f.a_j, f.b_j_per_token, f.c_j_per_token2)
    # the printed numbers: 2,614 J in total, 2,097 J above idle (README-level check of the arithmetic above)
    assert round(got["total"]["energy_j"]) == 2614 and round(got["dynamic"]["energy_j"]) == 2097


def test_estimate_refuses_outside_the_measured_lengths_and_flags_extrapolation(capsys):
    cost = load_cost_model()
    with pytest.raises(
        CtxEnergyError, match=r"outside the measured prefill range L = 256 \.\.\. 114,688.*--extrapolate"
    ):
        estimate(cost, "llama-3.1-8b", "vllm", 120_000, 10)
    with pytest.raises(CtxEnergyError, match="outside the measured prefill range"):
        estimate(cost, "llama-3.1-8b", "vllm", 100, 10)
    # within the prefill range, but the decode would run past every measured context
    with pytest.raises(CtxEnergyError, match="beyond the largest measured decode context"):
        estimate(cost, "llama-3.1-8b", "vllm", 114_000, 2_000)
    flagged = estimate(cost, "llama-3.1-8b", "vllm", 120_000, 10, extrapolate=True)
    assert flagged.extrapolated and any(n.startswith("EXTRAPOLATED") for n in flagged.notes)
    # one output token: the prefill alone, nothing from the decode
    only = estimate(cost, "llama-3.1-8b", "vllm", 4096, 1).by_quantity["total"]
    assert only.decode_j == 0 and only.total_j == only.prefill_j
    # a CLI user gets one line, no traceback
    assert main(["estimate", "--model", "llama-3.1-8b", "--engine", "vllm", "--input", "120000", "--output", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ctxenergy: llama-3.1-8b/vllm: --input 120,000")


def test_host_bound_decode_carries_the_host_spread():
    """HF's decode waits on the host: its E_out carries the host spread (29 %), not the board's (3 %)."""
    cost = load_cost_model()
    sys = _committed("systematics").set_index("systematic")["relative_half_width"]
    r = estimate(cost, "llama-3.1-8b", "hf-sdpa", 1024, 128).by_quantity["total"]
    assert r.decode_sys_j == pytest.approx(r.decode_j * math.hypot(sys["host_spread_total"], sys["nvml_gain"]))
    assert r.prefill_sys_j == pytest.approx(r.prefill_j * math.hypot(sys["board_spread"], sys["nvml_gain"]))


@pytest.mark.slow
def test_committed_cost_model_regenerates_from_the_committed_cells(tmp_path):
    """The committed cost_model (Parquet, CSV, JSON) is what the analysis writes from the committed cells."""
    tables = derive(pd.read_parquet(CAMPAIGN / "cells.parquet"))
    written = write_derived(tables, [tmp_path / "cost_model.parquet"])
    assert [p.name for p in written] == ["cost_model.parquet", "cost_model.csv", "cost_model.json"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "cost_model.parquet"), _committed("cost_model"))
    for name in ("cost_model.csv", "cost_model.json"):
        assert (tmp_path / name).read_text() == (REFERENCE_ANALYSIS / name).read_text()
    doc = json.loads((tmp_path / "cost_model.json").read_text())
    entry = next(e for e in doc["entries"] if (e["model"], e["engine"], e["quantity"]) == ("qwen2-7b", "vllm", "total"))
    assert entry["prefill"]["length_max_tokens"] == 114_688 and len(entry["output_token"]["points"]) == 10
