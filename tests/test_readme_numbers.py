"""The README's headline numbers are the committed cells' numbers: a change of either without the other fails here."""

import re

import pandas as pd

from conftest import REFERENCE, REPO

README = (REPO / "README.md").read_text()


def row(first_cell: str) -> list[str]:
    line = next(line for line in README.splitlines() if line.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def numbers(text: str) -> list[float]:
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*\.?\d*", text)]


def test_table1_rows_at_114688_are_the_engine_cells():
    cells = pd.read_parquet(REFERENCE / "engines-h200" / "cells.parquet")
    pre = cells[(cells["phase"] == "prefill") & (cells["length_tokens"] == 114688)].set_index("engine")
    for label, engine in [("hf-sdpa", "hf-sdpa"), ("vllm", "vllm"), ("hf-paged (transformers' PagedAttention)",
                                                                     "hf-paged")]:
        c = pre.loc[engine]
        _, latency, energy, per_token, tflops, *_ = row(label)
        assert numbers(latency) == [round(c[k], 2) for k in ("run_s", "run_s_ci_low", "run_s_ci_high")], label
        assert numbers(energy) == [round(c[k]) for k in
                                   ("energy_per_run_j", "energy_per_run_j_ci_low", "energy_per_run_j_ci_high")], label
        assert numbers(per_token) == [round(c["energy_per_run_j"] / 114688, 4)], label
        assert numbers(tflops) == [round(c["achieved_tflops"])], label
    energy = pre.loc["hf-sdpa", "energy_per_run_j"] / pre.loc["vllm", "energy_per_run_j"]
    latency = pre.loc["hf-sdpa", "run_s"] / pre.loc["vllm", "run_s"]
    _, latency_text, energy_text, *_ = row("hf-sdpa / vllm")
    assert latency_text == f"{latency:.2f}x" and energy_text.startswith(f"**{energy:.2f}x**")
    assert f"prefill {energy:.2f}x more cheaply" in README


def test_headline_prefill_per_token_at_1k_to_16k_are_the_reference_cells():
    cells = pd.read_parquet(REFERENCE / "cells.parquet")
    pre = cells[(cells["model"] == "llama-3.1-8b") & (cells["engine"] == "hf-sdpa")
                & (cells["phase"] == "prefill")].set_index("length_tokens")
    for L in (1024, 4096, 16384):
        c = pre.loc[L]
        per_token, tflops = row(f"{L:,}")[1:3]
        mj = [c[k] / L * 1e3 for k in ("energy_per_run_j", "energy_per_run_j_ci_low", "energy_per_run_j_ci_high")]
        assert numbers(per_token) == [float(f"{v:.3g}") for v in mj], L
        assert numbers(tflops) == [round(c["achieved_tflops"])], L


def test_headline_output_tokens_and_ratios_are_the_derived_table():
    from conftest import reference_cells, reference_tables
    from ctxenergy.analysis.derive import derive, read_cell_tables

    io = derive(reference_cells(), read_cell_tables(reference_tables()))["io_ratio"].set_index("length_tokens")
    for L in (1024, 4096, 16384):
        e_out, ratio = row(f"{L:,}")[3:5]
        got = [float(f"{io.loc[L, k]:.3g}") for k in ("e_out_j", "e_out_j_ci_low", "e_out_j_ci_high")]
        assert numbers(e_out) == got, L
        assert numbers(ratio) == [float(f"{io.loc[L, k]:.3g}") for k in ("e_ratio", "e_ratio_ci_low", "e_ratio_ci_high")], L
