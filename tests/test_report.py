"""The HTML report and the reproduction write-up, from the H200 reference and from cells without energy."""

import html
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import reference_cells, reference_cells_without_energy, reference_tables

from ctxenergy.analysis.derive import TABLES, derive, read_cell_tables, write_derived
from ctxenergy.cli import main
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.figures import PLOTTERS, make_figures
from ctxenergy.outputs.paper import markdown_to_html, render_markdown
from ctxenergy.outputs.plotting import energy_missing_message
from ctxenergy.outputs.render import NO_COUNTER, fmt_ci, why_energy_missing

pytestmark = pytest.mark.slow


ROOT = Path(__file__).resolve().parents[1]


def build(raw: pd.DataFrame, out: Path, cell_tables=None, figures=True) -> dict:
    """Derived tables + PNG figures + report + paper under `out`, as the workflow lays them out."""
    tables = derive(raw, cell_tables or {})
    # write_derived also returns the cost model's CSV and JSON exports: the pages read the Parquet tables only
    table_paths = [
        p for p in write_derived(tables, [out / "analysis" / f"{t}.parquet" for t in TABLES]) if p.suffix == ".parquet"
    ]
    figs = [out / "figures" / f"{n}.png" for n in PLOTTERS] if figures else []
    if figures:
        make_figures(tables, figs)
    args = ["--tables", *map(str, table_paths), "--figures", *map(str, figs)]
    assert main(["report", *args, "--out", str(out / "report" / "report.html")]) == 0
    assert (
        main(
            [
                "paper",
                *args,
                "--template",
                str(ROOT / "paper" / "template.md"),
                "--out",
                str(out / "paper" / "paper.html"),
                "--markdown",
                str(out / "paper" / "paper.md"),
            ]
        )
        == 0
    )
    return {
        "tables": tables,
        "report": (out / "report" / "report.html").read_text(),
        "paper_html": (out / "paper" / "paper.html").read_text(),
        "paper_md": (out / "paper" / "paper.md").read_text(),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    raw = reference_cells()
    return build(raw, tmp_path_factory.mktemp("ref"), read_cell_tables(reference_tables()))


@pytest.fixture(scope="module")
def no_energy(tmp_path_factory):
    raw = reference_cells_without_energy()
    oom = raw["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L16384"
    raw.loc[oom, ["status", "status_reason"]] = ["oom", "out of device memory"]
    return build(raw, tmp_path_factory.mktemp("cpu"), figures=False)


def visible_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def self_contained(page: str) -> bool:
    """Everything inside the page, except the link to provenance.md beside it (the outputs' layout)."""
    markup = re.sub(r"(<script[^>]*>).*?</script>", r"\1</script>", page, flags=re.S)  # plotly.js's own strings
    refs = re.findall(r'(?:src|href)="([^"]+)"', markup)
    return all(r.startswith("data:") or r.startswith("#") or r == "../provenance.md" for r in refs)


def test_report_opens_with_summary_hardware_and_validity(reference):
    page = reference["report"]
    order = [page.index(h) for h in ("<h2>Summary", "<h2>Hardware and versions", "<h2>Validity", "<h2>Figures")]
    assert order == sorted(order)
    for text in (
        "NVIDIA H200",
        "580.159.04",
        "2.11.0+cu130",
        "5.17.0",
        "nvml-counter-edge-aligned",
        "14 ok",
        "board (UUID)",
        *reference["tables"]["per_cell"]["device_uuid"].unique(),
    ):
        assert text in page, text
    pc = reference["tables"]["per_cell"].set_index("cell_id")
    r = pc.loc["llama-3.1-8b/hf-sdpa/prefill/L16384"]
    expected = fmt_ci(
        r["energy_per_token_j"], r["energy_per_token_j_ci_low"], r["energy_per_token_j_ci_high"], scale=1e3
    )
    # the summary's largest-L prefill J/token, from the table (as read: the interval sits in a span of its own)
    assert f"{expected} at 16,384" in visible_text(page)


def test_report_is_one_self_contained_page(reference):
    page = reference["report"]
    assert page.count("<img ") == len(PLOTTERS)
    assert self_contained(page)
    assert "G − 1" in page and "understates" in page  # the E_out denominator and why


def test_report_without_energy_says_so_and_keeps_every_cell(no_energy):
    page = no_energy["report"]
    assert "Energy is missing" in page and "no readable energy counter" in page
    assert page.count("llama-3.1-8b") >= 14  # every cell has its row
    assert "status oom: out of device memory" in page
    assert "<h2>Validity" in page and "oom" in page
    assert "not fitted" in page


def test_paper_compares_table1_and_judges_each_claim(reference):
    md = reference["paper_md"]
    for number in ("25.54", "7,600.2", "0.0678", "3.54", "1,005.1", "23.04", "6,832.0", "2.71", "769.6"):
        assert number in md, number
    assert "not measured" in md
    for cid in range(1, 7):
        assert f"### ({cid})" in md
    claims = reference["tables"]["claims"].set_index("claim_id")
    assert f"**{claims.loc[2, 'verdict']}**" in md and claims.loc[2, "deciding"] in md
    assert "7.56x energy, 7.21x latency" in md  # the paper's gap recomputed from its own Table 1
    assert "${" not in md  # every placeholder filled


def test_paper_html_embeds_figures_and_md_links_them(reference):
    assert self_contained(reference["paper_html"])
    assert reference["paper_html"].count("<img ") == len(PLOTTERS)
    assert "](../figures/energy_intensity.png)" in reference["paper_md"]
    assert "<table>" in reference["paper_html"] and "<h3>" in reference["paper_html"]


def test_the_report_the_write_up_and_the_figures_say_why_energy_is_missing_in_the_same_words(no_energy):
    pc = no_energy["tables"]["per_cell"]
    why = why_energy_missing(pc)
    assert why.startswith("No cell has usable energy (13 cells no_energy, 1 cells status oom).")
    assert why.endswith(NO_COUNTER)
    assert html.escape(why) in no_energy["report"] and why in no_energy["paper_md"]
    assert energy_missing_message(pc) == f"energy missing: {why}"


def test_paper_without_energy(no_energy):
    md = no_energy["paper_md"]
    # no verdict is confirmed (the verdicts' names still appear in the rules that explain them)
    assert "Energy is missing" in md and "not testable" in md and "**confirmed" not in md


def test_markdown_to_html_keeps_the_pages_look():
    html = markdown_to_html(
        "# T\n\nsome `a<b` and **bold**, L* = b/c and L* again, *emphasis*\n\n- one\n- two\n\n"
        "| x | y |\n|:---|---:|\n| hf-sdpa | 2 \\| 3 [1.5, 4] |\n\n"
        "![cap](../figures/f.png)\n",
        images={"f.png": "data:image/png;base64,AAAA"},
    )
    assert "<h1>T</h1>" in html and "<code>a&lt;b</code>" in html and "<strong>bold</strong>" in html
    assert "L* = b/c and L* again" in html and "<em>emphasis</em>" in html  # '*' inside a name is no emphasis
    assert re.search(r"<ul>\s*<li>one</li>\s*<li>two</li>\s*</ul>", html)
    assert '<div class="tw"><table>' in html and '<th class="t">x</th>' in html
    assert '<td class="t nw">hf-sdpa</td>' in html and '<td>2 | 3 <span class="ci">[1.5, 4]</span></td>' in html
    assert re.search(
        r'<figure><img alt="cap" src="data:image/png;base64,AAAA"\s*/?><figcaption>cap</figcaption>'
        r"</figure>",
        html,
    )


def test_a_template_placeholder_without_value_is_an_error():
    with pytest.raises(CtxEnergyError, match=r"\$\{nope\}"):
        render_markdown("${nope}", {"a": "1"})


@pytest.fixture(scope="module")
def three_engines(tmp_path_factory):
    """All the committed H200 cells: hf-sdpa on the whole grid, hf-paged at 1k and 16k (generate at 1k only), and
    hf-eager's one cell, out of memory, with the engine's whole error message as its reason."""
    raw = pd.read_parquet(ROOT / "data" / "reference" / "nvidia-h200" / "cells.parquet")
    return build(raw, tmp_path_factory.mktemp("engines"), figures=False)


def summary_row(page: str, engine: str) -> str:
    summary = page[page.index("<h2>Summary") : page.index("<h2>Hardware")]
    return next(visible_text(r) for r in summary.split("<tr>") if f">{engine}<" in r)


def test_summary_says_why_a_group_has_no_energy_and_gives_one_l_once(three_engines):
    page = three_engines["report"]
    eager = summary_row(page, "hf-eager")
    assert "none usable: 1 status oom" in eager and "energy missing" not in eager  # it ran out of memory
    assert "16,384–16,384" not in eager
    paged = summary_row(page, "hf-paged")
    assert paged.count("at 1,024") == 2 and "(one L only)" in paged  # not "x at 1,024; x at 1,024"


def test_a_long_reason_is_one_line_in_the_page_and_whole_in_the_csv(three_engines):
    import base64

    page = three_engines["report"]
    reason = three_engines["tables"]["per_cell"].set_index("engine").loc["hf-eager", "excluded_reason"]
    assert len(reason) > 400
    assert html.escape(reason) not in page  # 12,864 characters of CUDA messages filled the validity table
    validity = page[page.index("<h2>Validity") : page.index("<h2>Figures")]
    row = next(visible_text(r) for r in validity.split("<tr>") if "hf-eager" in r)
    assert "status oom: out of device memory" in row and len(row) < 200
    csv_uri = re.search(r'download="validity.csv" href="data:text/csv;charset=utf-8;base64,([^"]+)"', validity)
    assert reason in base64.b64decode(csv_uri.group(1)).decode()
    assert three_engines["paper_md"].count(reason) == 0


def test_verdicts_are_coloured_and_intervals_do_not_break(reference):
    page = reference["report"]
    claims = page[page.index("<h2>The paper") :]
    verdicts = set(reference["tables"]["claims"]["verdict"])
    for verdict in verdicts:
        css = {
            "confirmed": "confirmed",
            "confirmed in kind, onset hardware-dependent": "confirmed",
            "refuted": "refuted",
        }.get(verdict, "untestable")
        assert re.search(rf'<td class="[^"]*\b{css}\b[^"]*">{verdict}</td>', claims), verdict
    # an interval is one unit for line breaking, in the report and in the write-up
    assert re.search(r'<span class="ci">\[[\d.,]+, [\d.,]+\]</span>', page)
    assert re.search(r'<span class="ci">\[[\d.,]+, [\d.,]+\]</span>', reference["paper_html"])


def test_paper_tables_align_text_left_and_name_the_stack_once(three_engines):
    md = three_engines["paper_md"]
    assert md.count("NVIDIA H200 (driver 580.159.04)") == 1
    assert "engines hf-eager, hf-sdpa and hf-paged 5.17.0" in md
    assert "|:---|:---|---:|" in md  # model and engine are text, L a number
    page = three_engines["paper_html"]
    assert '<td class="t nw">llama-3.1-8b</td>' in page
    assert "(the only L with both phases)" in md  # hf-paged's one (prefill, generate) pair, said once
    assert "### Thresholds of the prefill cells" in md


def test_the_stack_names_the_attention_kernel_where_cells_recorded_it():
    from ctxenergy.outputs.paper import stack_text

    def cells(kernels):
        pc = pd.DataFrame(
            {
                "engine": ["hf-eager", "hf-sdpa", "hf-sdpa"],
                "engine_version": "5.17.0",
                "device_name": "NVIDIA H100 80GB HBM3",
                "driver_version": "580.159.04",
                "torch_version": "2.11.0+cu130",
                "meter_method": "nvml-energy-counter",
            }
        )
        if kernels is not None:
            pc["attention_kernels"] = kernels
        return pc

    cudnn = "prefill cudnn_attention; decode cudnn_attention"
    text = stack_text(cells(["", cudnn, cudnn]))
    assert text.endswith(f"engines hf-eager and hf-sdpa (attention kernel: {cudnn}) 5.17.0")
    mixed = stack_text(cells(["", "prefill flash_attention", "not recorded"]))
    assert mixed.endswith("hf-sdpa (attention kernel: prefill flash_attention (not recorded in some cells)) 5.17.0")
    two = stack_text(cells(["", "prefill cudnn_attention", "prefill flash_attention; decode flash_attention"]))
    assert "(attention kernel: prefill cudnn_attention or flash_attention; decode flash_attention)" in two
    assert stack_text(cells(None)) == stack_text(cells(["not recorded"] * 3))  # a table from before: as before
    assert "attention" not in stack_text(cells(None))


def test_a_table_from_before_the_kernel_record_keeps_its_hardware_table(reference):
    hardware = reference["report"][reference["report"].index("<h2>Hardware and versions") :]
    assert "attention kernel" not in hardware[: hardware.index("</table>")]


def test_cells_that_predate_the_kernel_record_get_one_note_not_a_column_of_dashes():
    from ctxenergy.outputs.report import hardware_section

    pc = pd.DataFrame(
        {
            "engine": ["hf-sdpa", "vllm"],
            "device_name": "NVIDIA H200",
            "power_limit_w": 700.0,
            "idle_power_w": 80.0,
            "peak_bf16_tflops": 989.0,
            "peak_mem_tb_s": 4.8,
        }
    )
    old = hardware_section(pc.assign(attention_kernels="not recorded"))
    assert "attention kernel</th>" not in old and "Attention kernel: not recorded" in old
    assert "not recorded" not in hardware_section(pc)  # a table without the column says nothing of it
    new = hardware_section(pc.assign(attention_kernels=["prefill cudnn_attention; decode cudnn_attention", ""]))
    assert "attention kernel</th>" in new and "prefill cudnn_attention; decode cudnn_attention" in new
    assert "Attention kernel: not recorded" not in new


def test_the_report_has_in_page_contents(reference):
    page = reference["report"]
    toc = page[page.index('<p class="toc">') :]
    toc = toc[: toc.index("</p>")]
    for anchor in re.findall(r'href="#([^"]+)"', toc):
        assert f'id="{anchor}"' in page, anchor
    assert toc.count("href=") == page.count("<h2>")
    assert page.index('<p class="toc">') < page.index("<h2>Summary")


def test_paper_names_only_devices_that_ran_and_cuts_a_long_table1_status(tmp_path):
    raw = reference_cells()
    base = raw[raw["cell_id"] == "llama-3.1-8b/hf-sdpa/prefill/L16384"].iloc[0]
    oom = base.copy()
    oom["cell_id"], oom["length_tokens"] = "llama-3.1-8b/hf-sdpa/prefill/L114688", 114688
    oom["status"], oom["status_reason"] = "oom", "out of device memory: " + "CUDA said a great deal. " * 20
    skipped = base.copy()  # recorded, never run: no device, no versions
    skipped["cell_id"], skipped["phase"], skipped["length_tokens"] = (
        "llama-3.1-8b/hf-sdpa/generate/L131072",
        "generate",
        131072,
    )
    skipped["status"], skipped["status_reason"] = "exceeds_context", "L + G exceeds the model's context"
    skipped["output_tokens"] = 128
    for col in ("device_name", "device_uuid", "driver_version", "torch_version", "engine_version", "meter_method"):
        skipped[col] = None
    built = build(pd.concat([raw, oom.to_frame().T, skipped.to_frame().T], ignore_index=True), tmp_path, figures=False)
    md = built["paper_md"]
    assert "unknown device" not in md and "Stack: NVIDIA H200 (driver 580.159.04)" in md
    row = next(line for line in md.splitlines() if "| hf-sdpa | 114,688 |" in line)
    assert "| oom (status oom: out of device memory: CUDA said a great deal. …) |" in row and len(row) < 400


def test_the_report_leads_with_key_results_verdict_chips_and_the_hero_figure(reference):
    page = reference["report"]
    key = page[page.index('<div class="key"') : page.index("<h2>The paper")]
    assert page.index('<div class="key"') < page.index("<h2>Summary")
    assert "<li>The lowest prefill energy per input token: " in key and '<span class="ci">[' in key
    claims = reference["tables"]["claims"]
    for cid in sorted(set(claims["claim_id"])):
        assert f'href="#claim-{cid}"' in key and f'id="claim-{cid}"' in page, cid
    assert 'id="fig-energy_per_token_fit"' in key
    assert page.count('id="fig-') == len(PLOTTERS)  # each figure once: with the key results, a claim or the rest


def plotly_array(value) -> list:
    """A plotly figure's array as a list: plotly writes numpy arrays as {"dtype", "bdata": base64}."""
    import base64

    import numpy as np

    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def test_the_hero_is_interactive_offline_and_shows_the_static_figures_cells(reference):
    """The report's hero figure is a plotly figure with plotly.js inlined once (no network), drawn from the same
    cells as the static PNG it keeps for print."""
    import json

    page = reference["report"]
    key = page[page.index('<div class="key"') : page.index("<h2>The paper")]
    assert page.count('<script charset="utf-8">') == 1 and not re.search(r"<script[^>]*\ssrc=", page)
    assert 'id="plot-energy_per_token_fit"' in key and '<img class="static"' in key
    traces = json.loads(
        re.search(r'Plotly\.newPlot\(\s*"plot-energy_per_token_fit",\s*(\[.*?\]),\s*\{"template"', key, re.S).group(1)
    )
    pc = reference["tables"]["per_cell"]
    cells = pc[(pc["phase"] == "prefill") & pc["usable"]]
    for engine, e in cells.groupby("engine"):
        trace = next(t for t in traces if t["name"] == engine)
        assert plotly_array(trace["x"]) == e.sort_values("length_tokens")["length_tokens"].tolist()
        assert plotly_array(trace["y"]) == pytest.approx(
            (e.sort_values("length_tokens")["energy_per_token_j"] * 1e3).tolist()
        )
        assert "mJ/token (95 %)" in trace["text"][0]


def test_each_claims_figure_is_interactive_where_its_tables_have_data_and_static_otherwise(reference, no_energy):
    """dE/dL and mean power have cells of the reference slice to hover over: interactive, with the PNG kept for
    print; the engine ratio needs vLLM, which the slice lacks: its PNG alone. plotly.js is inlined once, before the
    first interactive figure, and not at all where no figure is interactive."""
    page = reference["report"]
    claims = page[page.index("<h2>The paper") : page.index("<h2>Summary")]
    for name in ("de_dl", "power_vs_length"):
        figure = claims[claims.index(f'<figure class="plotly" id="fig-{name}">') :]
        figure = figure[: figure.index("</figure>")]
        assert f'id="plot-{name}"' in figure and '<img class="static"' in figure, name
        assert "Hover over a point" in figure
    assert '<figure id="fig-engine_ratio"><img ' in claims and 'id="plot-engine_ratio"' not in page
    assert page.count('<script charset="utf-8">') == 1
    assert page.index('<script charset="utf-8">') < page.index('id="plot-energy_per_token_fit"')
    assert "figure.plotly .static{display:none}" in page  # the report's own rules
    assert "figure.plotly" not in reference["paper_html"]  # the write-up's page is as before
    assert '<script charset="utf-8">' not in no_energy["report"] and "plot-" not in no_energy["report"]


def test_every_page_has_a_viewport_and_a_provenance_line(reference):
    from ctxenergy import __version__

    for page in (reference["report"], reference["paper_html"]):
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
        prov = page[page.index('<div class="prov">') :]
        prov = prov[: prov.index("</div>")]
        assert f"ctxenergy {__version__}, commit " in prov and 'href="../provenance.md"' in prov
        assert "NVIDIA H200" in prov


def test_long_tables_are_collapsed_sortable_and_downloadable(reference):
    page = reference["report"]
    cells = page[page.index("<h2>Cells") : page.index("<h2>Input vs output")]
    assert cells.count('<details class="long">') == 1 and '<table class="wide sortable">' in cells
    assert 'download="cells.csv"' in cells
    assert "position:sticky" in page and "table.sortable" in page


def test_the_write_up_has_an_abstract_and_numbered_figures_the_text_refers_to(reference):
    md = reference["paper_md"]
    assert md.index("## Abstract") < md.index("## What we measured")
    assert "![Figure 1. " in md and "See Figure " in md
    numbers = {int(n) for n in re.findall(r"See Figure (\d+)\.", md)}
    assert numbers and all(f"![Figure {n}. " in md for n in numbers)


def test_peak_memory_explains_an_out_of_memory_cell_only_where_cells_recorded_it(tmp_path, three_engines):
    """Cells of schema_version 2 record their peak memory: the report shows it in the table of cells and beside an
    out-of-memory cell's reason; the committed cells (schema 1) have none, and the report says nothing of it."""
    assert "peak memory (GiB)" not in three_engines["report"] and "(peak memory, GiB" not in three_engines["report"]
    assert "nvml_peak_memory_used_gib" not in three_engines["tables"]["per_cell"]
    raw = pd.read_parquet(ROOT / "data" / "reference" / "nvidia-h200" / "cells.parquet")
    oom = raw["engine"] == "hf-eager"
    raw["torch_peak_allocated_gib"] = raw["nvml_peak_memory_used_gib"] = raw["memory_total_gib"] = float("nan")
    raw.loc[oom, ["torch_peak_allocated_gib", "nvml_peak_memory_used_gib", "memory_total_gib"]] = [131.5, 139.2, 140.0]
    raw["run_p50_s"] = raw["run_s"]
    built = build(raw, tmp_path, figures=False)
    per_cell = built["tables"]["per_cell"].set_index("engine")
    assert per_cell.loc["hf-eager", "nvml_peak_memory_used_gib"] == 139.2
    assert per_cell.loc["hf-sdpa", "memory_total_gib"].isna().all() and per_cell["run_p50_s"].notna().any()
    page = built["report"]
    validity = page[page.index("<h2>Validity") : page.index("<h2>Figures")]
    row = next(visible_text(r) for r in validity.split("<tr>") if "hf-eager" in r)
    assert "status oom: out of device memory" in row and "(peak memory, GiB: torch 132 · board 139 of 140)" in row
    cells = page[page.index("<h2>Cells") :]
    assert "peak memory (GiB)" in cells and "board 139 of 140" in cells
