"""Figures from the derived tables: the reference H200 cells, and tables without energy (a CPU host)."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import reference_cells, reference_cells_without_energy, reference_tables

from ctxenergy.analysis.derive import derive, read_cell_tables
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.figures import PLOTTERS, make_figures
from ctxenergy.outputs.plotting import ENGINE_PALETTE, ENGINE_STYLES, style

pytestmark = pytest.mark.slow


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
    raw = reference_cells_without_energy()
    out = tmp_path_factory.mktemp("fig_cpu")
    make_figures(derive(raw), all_outputs(out))
    return out


def test_every_figure_is_written_as_png_and_svg(reference_figures):
    for p in all_outputs(reference_figures):
        assert p.stat().st_size > 2000, p  # a figure with one panel that says what is missing is small
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
        assert "energy missing" in svg_text(no_energy_figures / f"{name}.svg") or "power missing" in svg_text(
            no_energy_figures / f"{name}.svg"
        ), name
    assert "no power trace" in svg_text(no_energy_figures / "power_traces.svg")
    assert "not fitted" in svg_text(no_energy_figures / "energy_fit.svg")
    # timings exist without energy: the throughput figure still plots the cells
    assert ENGINE_PALETTE["hf-sdpa"] in svg_text(no_energy_figures / "achieved_throughput.svg")


def test_an_implausible_cell_is_marked_not_hidden(tmp_path):
    raw = reference_cells()
    raw.loc[raw["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L2048", ["status", "flags"]] = [
        "implausible",
        "implausible",
    ]
    make_figures(derive(raw), [tmp_path / "achieved_throughput.svg", tmp_path / "energy_intensity.svg"])
    assert "status implausible" in svg_text(tmp_path / "achieved_throughput.svg")
    assert "Excluded from this figure" in svg_text(tmp_path / "energy_intensity.svg")


def test_an_unknown_figure_is_refused(tmp_path):
    with pytest.raises(CtxEnergyError, match="unknown figure 'fig9'"):
        make_figures({}, [tmp_path / "fig9.png"])


def _drawn(fig):
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _sdpa_tables_with_an_oom_cell():
    raw = reference_cells()
    oom = raw["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L2048"
    raw.loc[oom, ["status", "status_reason"]] = ["oom", "out of device memory"]
    return derive(raw, read_cell_tables(reference_tables()))


def test_io_energy_footnotes_are_stacked_not_printed_over_each_other():
    import matplotlib.pyplot as plt

    from ctxenergy.outputs.figures import io_energy

    style()
    fig = io_energy(_sdpa_tables_with_an_oom_cell())
    try:
        renderer = _drawn(fig)
        notes = {t.get_text().split(":")[0]: t.get_window_extent(renderer) for t in fig.texts}
        assert set(notes) == {"Excluded from this figure", "E_out = (E_generate - E_prefill) / (G - 1)"}, notes
        a, b = notes.values()
        assert not _overlap(a, b)
        for ax in fig.axes:  # and neither note runs into a panel's tick labels
            for note in (a, b):
                assert not _overlap(note, ax.get_tightbbox(renderer)), ax.get_title()
    finally:
        plt.close(fig)


def test_power_trace_titles_name_each_engines_own_L(tmp_path):
    import pandas as pd

    tables = derive(reference_cells(), read_cell_tables(reference_tables()))
    tr = tables["traces"]
    # a second engine whose smallest L (1k) is not hf-sdpa's (256), and which has no largest-L trace of its own
    paged = tr[tr["role"] == "smallest L"].copy()
    paged["engine"], paged["length_tokens"], paged["cell_id"] = "hf-paged", 1024, paged["cell_id"] + "-paged"
    tables["traces"] = pd.concat([tr, paged], ignore_index=True)
    from ctxenergy.outputs.figures import power_trace_title

    title = power_trace_title(tables["traces"], "prefill", "smallest L")
    assert title == "prefill, each engine's smallest L (llama-3.1-8b)\nhf-sdpa L=256; hf-paged L=1k"
    largest = power_trace_title(tables["traces"], "prefill", "largest L")
    assert largest.endswith("hf-sdpa L=16k; hf-paged: one L only, left")
    make_figures(tables, [tmp_path / "power_traces.svg"])
    svg = svg_text(tmp_path / "power_traces.svg")
    assert "hf-sdpa L=256; hf-paged L=1k" in svg and "llama-3.1-8b L=1k, llama-3.1-8b L=256" not in svg


def test_phase_map_length_labels_do_not_overlap_and_reference_lines_come_last():
    import matplotlib.pyplot as plt

    from ctxenergy.outputs.figures import phase_map

    style()
    fig = phase_map(derive(reference_cells(), read_cell_tables(reference_tables())))
    try:
        renderer = _drawn(fig)
        ax = fig.axes[0]
        labels = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts]
        assert len(labels) >= 5
        for i, (ta, a) in enumerate(labels):
            for tb, b in labels[i + 1 :]:
                assert not _overlap(a, b), (ta, tb)
        # the prefill cells at 1k-16k sit on top of each other at the power limit: one label for the group
        assert "1k–16k" in [t for t, _ in labels]
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend[:2] == ["hf-sdpa prefill", "hf-sdpa generate"]
        assert legend[-2:] == ["power limit", "idle (model resident)"]
    finally:
        plt.close(fig)


def test_a_missing_message_stays_inside_its_panel():
    import matplotlib.pyplot as plt

    from ctxenergy.outputs.figures import energy_fit, energy_intensity

    raw = reference_cells_without_energy()
    tables = derive(raw)
    style()
    for plot in (energy_fit, energy_intensity):
        fig = plot(tables)
        try:
            renderer = _drawn(fig)
            ax = fig.axes[0]
            (text,) = ax.texts
            assert "energy missing" in text.get_text()
            box, panel = text.get_window_extent(renderer), ax.get_window_extent(renderer)
            assert panel.x0 <= box.x0 and box.x1 <= panel.x1 and panel.y0 <= box.y0 and box.y1 <= panel.y1, plot
        finally:
            plt.close(fig)


def test_peak_lines_carry_their_unit(reference_figures):
    svg = svg_text(reference_figures / "achieved_throughput.svg")
    assert "peak 989 TFLOP/s" in svg  # the number alone said nothing about what it measures


CAMPAIGN = Path(__file__).resolve().parents[1] / "data" / "reference" / "nvidia-h200" / "campaign" / "outputs"
OKABE_ITO = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}


@pytest.fixture(scope="module")
def campaign_figures(tmp_path_factory):
    """The figures of the committed campaign (both models, all four engines), from its committed derived tables."""
    import pandas as pd

    tables = {p.stem: pd.read_parquet(p) for p in (CAMPAIGN / "analysis").glob("*.parquet")}
    out = tmp_path_factory.mktemp("campaign")
    make_figures(tables, all_outputs(out))
    return out


def test_engines_differ_in_colour_marker_and_line_style_from_a_colour_blind_safe_palette():
    styles = list(ENGINE_STYLES.values())
    assert {s.colour.upper() for s in styles} <= OKABE_ITO
    for attr in ("colour", "marker", "line"):
        assert len({getattr(s, attr) for s in styles}) == len(styles), attr  # in greyscale too


def test_the_figures_a_reader_of_the_claims_expects(campaign_figures):
    ratio = svg_text(campaign_figures / "engine_ratio.svg")
    assert "7.6x" in ratio and "8.9x" in ratio and "hf-eager / vllm" in ratio
    power = svg_text(campaign_figures / "power_vs_length.svg")
    assert "board power limit (700 W)" in power and "paper: plateau from ~16k" in power and "plateau onset" in power
    assert "L* = b/c" in svg_text(campaign_figures / "de_dl.svg")
    hero = svg_text(campaign_figures / "energy_per_token_fit.svg")
    assert "L* = b/c" in hero and "lowest J/token" in hero and "paper vLLM" in hero


def test_the_fit_figure_is_a_readable_grid_that_shows_a_bad_fit(campaign_figures):
    from PIL import Image

    width, height = Image.open(campaign_figures / "energy_fit.png").size
    assert width / height < 2.5  # one row of eight panels was 5267 x 841 px, shown at 22 %
    svg = svg_text(campaign_figures / "energy_fit.svg")
    assert "χ²/dof = 18 (not quadratic)" in svg and "χ²/dof = 0.93" in svg


def test_phase_map_with_many_engines_labels_the_ends_of_each_series():
    import matplotlib.pyplot as plt
    import pandas as pd

    from ctxenergy.outputs.figures import phase_map

    tables = {p.stem: pd.read_parquet(p) for p in (CAMPAIGN / "analysis").glob("*.parquet")}
    style()
    fig = phase_map(tables)
    try:
        for ax in fig.axes:
            series = 8  # four engines x two phases
            assert len(ax.texts) <= 2 * series, (ax.get_title(), len(ax.texts))
    finally:
        plt.close(fig)
