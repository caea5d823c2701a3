"""The report's interactive figures, from the committed campaign's derived tables (both models, all four engines):
one trace per engine drawn from the same data as the static figure, each point's hover label with its value, its
95 % interval and its L, and the same thresholds as the static figure."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import reference_cells_without_energy

from ctxenergy.analysis.cells import serial
from ctxenergy.analysis.derive import derive
from ctxenergy.analysis.paper_values import PAPER
from ctxenergy.outputs import interactive
from ctxenergy.outputs.figures import de_dl_panels, power_panels, ratio_panels
from ctxenergy.outputs.plotting import engine_style
from ctxenergy.outputs.render import fmt_ci, tokens

CAMPAIGN = Path(__file__).resolve().parents[1] / "data" / "reference" / "nvidia-h200" / "campaign" / "outputs"
CLAIM_FIGURES = ("de_dl", "power_vs_length", "engine_ratio")


@pytest.fixture(scope="module")
def campaign() -> dict:
    # as the report reads them: one request at a time with the engines' defaults
    return {p.stem: serial(pd.read_parquet(p)) for p in (CAMPAIGN / "analysis").glob("*.parquet")}


def traces_of(fig, col: int) -> dict:
    """The traces of one panel (1: the first model), by name."""
    axis = "x" if col == 1 else f"x{col}"
    return {t.name: t for t in fig.data if t.xaxis == axis}


def assert_measured(trace, engine: str, x, y, lo, hi, unit: str) -> None:
    """One engine's points: where the static figure has them, in its colour, each hover with value and interval."""
    assert trace.marker.color == engine_style(engine).colour
    assert list(trace.x) == pytest.approx(list(x))
    assert list(trace.y) == pytest.approx(list(y))
    for text, v, a, b in zip(trace.text, y, lo, hi):
        assert f"{fmt_ci(v, a, b)} {unit}" in text and "L = " in text, text
        assert "95 %" in text


def test_de_dl_has_one_trace_per_engine_with_each_pairs_value_interval_and_l(campaign):
    fig = interactive.de_dl_figure(campaign)
    panels = de_dl_panels(campaign)
    assert [p.model for p in panels] == ["llama-3.1-8b", "qwen2-7b"]
    for col, panel in enumerate(panels, start=1):
        traces = traces_of(fig, col)
        assert {s.engine for s in panel.series} == {"hf-eager", "hf-sdpa", "hf-paged", "vllm"}
        for s in panel.series:
            e = s.pairs
            assert_measured(
                traces[s.engine],
                s.engine,
                s.middle,
                e["de_dl_j_per_token"] * 1e3,
                e["de_dl_j_per_token_ci_low"] * 1e3,
                e["de_dl_j_per_token_ci_high"] * 1e3,
                "mJ per extra input token",
            )
            first = traces[s.engine].text[0]
            assert f"L = {tokens(e['length_low'].iloc[0])}–{tokens(e['length_high'].iloc[0])}" in first
        # the thresholds the static figure marks: L* = b/c as a line, the rise of dE/dL as a triangle
        axis = "x" if col == 1 else f"x{col}"
        stars = [t.x[0] for t in fig.data if t.name.startswith("L* = b/c") and t.xaxis == axis]
        rises = [t.x[0] for t in fig.data if t.name.startswith("dE/dL starts to rise") and t.xaxis == axis]
        assert sorted(stars) == pytest.approx(sorted(s.star for s in panel.series if s.star is not None))
        assert sorted(rises) == pytest.approx(sorted(s.rise for s in panel.series if s.rise is not None))
        assert stars and rises


def test_power_shows_each_cells_watts_the_boards_limit_and_the_papers_16k(campaign):
    fig = interactive.power_figure(campaign)
    for col, panel in enumerate(power_panels(campaign), start=1):
        traces = traces_of(fig, col)
        for s in panel.series:
            e = s.cells
            assert_measured(
                traces[s.engine],
                s.engine,
                e["length_tokens"],
                e["mean_power_w"],
                e["mean_power_w_ci_low"],
                e["mean_power_w_ci_high"],
                "W mean power",
            )
        assert set(traces[f"board power limit ({panel.limit_w:.0f} W)"].y) == {panel.limit_w}
        assert set(traces["paper: plateau from ~16k"].x) == {16384}
        assert "paper's plateau power (NVIDIA A100)" in traces and "idle (model resident)" in traces
    assert "board power limit (700 W)" in {t.name for t in fig.data}
    assert any(t.name == "plateau onset" for t in fig.data)


def test_engine_ratio_shows_each_hf_engine_over_vllm_and_the_papers_7_6x_and_8_9x(campaign):
    fig = interactive.ratio_figure(campaign)
    papers = []
    for col, panel in enumerate(ratio_panels(campaign), start=1):
        traces = traces_of(fig, col)
        assert {s.engine for s in panel.series} == {"hf-eager", "hf-sdpa", "hf-paged"}
        for s in panel.series:
            e = s.ratios
            assert_measured(
                traces[f"{s.engine} / vllm"],
                s.engine,
                e["length_tokens"],
                e["energy_ratio"],
                e["energy_ratio_ci_low"],
                e["energy_ratio_ci_high"],
                "x prefill energy",
            )
        paper = traces["paper: HF / vLLM at ~112k"]
        papers.append(paper.text[0])
        assert list(paper.x) == [PAPER["table1_length_tokens"]]
    assert papers == ["7.6x", "8.9x"]


def test_each_engine_is_named_once_in_the_shared_legend(campaign):
    for name in ("energy_per_token_fit", *CLAIM_FIGURES):
        fig = interactive.FIGURES[name](campaign)
        named = [t.name for t in fig.data if t.showlegend is not False]
        assert len(named) == len(set(named)), name


@pytest.mark.slow  # derives the tables of the reference slice
def test_without_energy_no_figure_is_interactive_and_each_panel_says_what_is_missing():
    tables = derive(reference_cells_without_energy())
    for name in ("energy_per_token_fit", *CLAIM_FIGURES):
        assert not interactive.has_data(tables, name), name
    assert not interactive.has_data(tables, "phase_map")  # a figure without an interactive version
    fig = interactive.power_figure(tables)  # still drawn: each panel says what is missing
    assert fig.layout.annotations and "power" in " ".join(a.text for a in fig.layout.annotations)
    assert np.isnan(power_panels(tables)[0].limit_w)
