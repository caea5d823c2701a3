"""Figures from the derived tables: the reference H200 cells, and tables without energy (a CPU host)."""

from conftest import reference_cells, reference_tables
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from ctxenergy.analysis.derive import derive, read_cell_tables
from ctxenergy.errors import CtxEnergyError
from ctxenergy.figures import ENGINE_PALETTE, PLOTTERS, make_figures



def all_outputs(directory: Path) -> list[Path]:
    return [directory / f"{name}.{ext}" for name in PLOTTERS for ext in ("png", "svg")]


def svg_text(path: Path) -> str:
    ET.parse(path)  # well-formed
    return path.read_text()


@pytest.fixture(scope="module")
def reference_figures(tmp_path_factory):
    tables = derive(reference_cells(), read_cell_tables(reference_tables()))
    out = tmp_path_factory.mktemp("fig")
    make_figures(tables, all_outputs(out))
    return out


@pytest.fixture(scope="module")
def no_energy_figures(tmp_path_factory):
    raw = reference_cells()
    cols = [c for c in raw if c.startswith(("energy_per_run", "dynamic_energy", "mean_power", "power_cap"))]
    raw[cols] = np.nan
    raw["flags"] = "no_energy"
    out = tmp_path_factory.mktemp("fig_cpu")
    make_figures(derive(raw), all_outputs(out))
    return out


def test_every_figure_is_written_as_png_and_svg(reference_figures):
    for p in all_outputs(reference_figures):
        assert p.stat().st_size > 5000, p
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            svg_text(p)


def test_units_and_the_fixed_engine_colour(reference_figures):
    energy = svg_text(reference_figures / "energy_intensity.svg")
    assert "mJ/token" in energy and "context length L (tokens)" in energy
    assert ENGINE_PALETTE["hf-sdpa"] in energy  # hf-sdpa is drawn in its own colour, in every figure
    for name in ("io_energy", "phase_map", "achieved_throughput", "energy_fit", "power_traces"):
        assert ENGINE_PALETTE["hf-sdpa"] in svg_text(reference_figures / f"{name}.svg"), name
    assert "(W)" in svg_text(reference_figures / "phase_map.svg")
    assert "TFLOP/s" in svg_text(reference_figures / "achieved_throughput.svg")
    assert "989" in svg_text(reference_figures / "achieved_throughput.svg")  # the H200 peak line is labelled


def test_figures_without_energy_say_so(no_energy_figures):
    for p in all_outputs(no_energy_figures):
        assert p.exists(), p
    for name in ("energy_intensity", "io_energy", "phase_map"):
        assert "energy missing" in svg_text(no_energy_figures / f"{name}.svg") or \
               "power missing" in svg_text(no_energy_figures / f"{name}.svg"), name
    assert "no power trace" in svg_text(no_energy_figures / "power_traces.svg")
    assert "not fitted" in svg_text(no_energy_figures / "energy_fit.svg")
    # timings exist without energy: the throughput figure still plots the cells
    assert ENGINE_PALETTE["hf-sdpa"] in svg_text(no_energy_figures / "achieved_throughput.svg")


def test_an_implausible_cell_is_marked_not_hidden(tmp_path):
    raw = reference_cells()
    raw.loc[raw["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L2048", ["status", "flags"]] = ["implausible", "implausible"]
    make_figures(derive(raw), [tmp_path / "achieved_throughput.svg", tmp_path / "energy_intensity.svg"])
    assert "status implausible" in svg_text(tmp_path / "achieved_throughput.svg")
    assert "Excluded from this figure" in svg_text(tmp_path / "energy_intensity.svg")


def test_an_unknown_figure_is_refused(tmp_path):
    with pytest.raises(CtxEnergyError, match="unknown figure 'fig9'"):
        make_figures({}, [tmp_path / "fig9.png"])
