"""The report as a reader's browser shows it: headless Chromium with the network cut, at a desktop and a phone
width. The key results are in the first screen, every image decodes, the interactive figure answers a mouse over a
point, and nothing is fetched from outside the page. Screenshots go to results/test-artifacts/ to be looked at.

CI installs Chromium (.ci/run: Debian's chromium); without it these tests fail, they do not skip.
"""

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, reference_cells_without_energy
from test_report import build

pytestmark = pytest.mark.workflow


CAMPAIGN_REPORT = REPO / "data" / "reference" / "nvidia-h200" / "campaign" / "outputs" / "report" / "report.html"
ARTIFACTS = REPO / "results" / "test-artifacts"
WIDTHS = (1400, 420)
HEIGHT = 900  # the first screen
SHOT_HEIGHT = 2000  # a screenshot reaches past the key results
# Headless Chromium's window is at least 500 px wide: the page is shown in a frame of the width wanted, in a window
# of at least 500 px, and the screenshot cut to the frame.
MIN_WINDOW = 500
FRAME = """<!DOCTYPE html><html><body style="margin:0"><iframe src="{page}" width="{width}" height="{height}"
style="border:0;display:block"></iframe><script>window.addEventListener('message', function (e) {{
document.body.setAttribute('data-selftest', e.data); }});</script></body></html>"""
# The page's own numbers, read once it has loaded; injected into a copy of the page, never shipped in it.
# The hover is a real mouse event: a mousemove over the first point of a figure's first trace (the hero's, and each
# claim figure's the page has), where plotly listens for it (its drag layer), then the hover label plotly draws is
# read back.
SELFTEST = """<script>
var CLAIM_PLOTS = CLAIM_PLOTS_JSON;
window.addEventListener('load', function () { setTimeout(function () {
  var r = {width: window.innerWidth, height: window.innerHeight};
  var key = document.getElementById('key-results');
  r.key_top = key ? key.getBoundingClientRect().top : null;
  r.images = Array.from(document.images).map(function (i) { return [i.alt, i.naturalWidth]; });
  r.fetched = performance.getEntriesByType('resource').map(function (e) { return e.name; })
    .filter(function (n) { return !/^(data|blob|file|about):/.test(n); });
  r.plotly = typeof window.Plotly !== 'undefined';
  function hover(gd) {
    var point = gd.querySelector('.scatterlayer .trace .points path').getBoundingClientRect();
    var drag = gd.querySelector('.nsewdrag');
    var x = point.left + point.width / 2, y = point.top + point.height / 2;
    drag.dispatchEvent(new MouseEvent('mousemove', {clientX: x, clientY: y, bubbles: true}));
    var label = gd.querySelector('.hoverlayer .hovertext');
    return label ? label.textContent : null;
  }
  var gd = document.getElementById('plot-energy_per_token_fit');
  r.hero_interactive = !!gd;
  if (gd && r.plotly) r.hover = hover(gd);
  r.claim_hovers = {};
  CLAIM_PLOTS.forEach(function (name) {
    var claim = document.getElementById('plot-' + name);
    if (claim && r.plotly) r.claim_hovers[name] = hover(claim);
  });
  parent.postMessage(JSON.stringify(r), '*');
}, 100); });
</script>"""


# The claims' interactive figures, with what each one's hover label says of a point (its unit).
CLAIM_PLOTS = {
    "de_dl": "mJ per extra input token",
    "power_vs_length": "W mean power",
    "engine_ratio": "x prefill energy",
}
SELFTEST = SELFTEST.replace("CLAIM_PLOTS_JSON", json.dumps(list(CLAIM_PLOTS)))


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail(
        "headless Chromium is needed for the browser tests and is not installed: "
        "apt-get install -y --no-install-recommends chromium (.ci/run installs it)"
    )


def browse(page: Path, width: int, *args: str, height: int = HEIGHT) -> subprocess.CompletedProcess:
    """Chromium, headless, on a local page shown in a frame `width` px wide, with every network request refused."""
    frame = page.with_name(f"frame-{width}-{page.name}")
    frame.write_text(FRAME.format(page=html.escape(page.name), width=width, height=height))
    command = [
        chromium(),
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-extensions",
        "--proxy-server=127.0.0.1:9",
        "--host-resolver-rules=MAP * ~NOTFOUND",
        f"--window-size={max(width, MIN_WINDOW)},{height}",
        "--virtual-time-budget=10000",
        *args,
        frame.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def selftest(page: Path, tmp: Path, width: int) -> dict:
    copy = tmp / f"selftest-{width}.html"
    copy.write_text(page.read_text().replace("</body>", SELFTEST + "</body>", 1))
    dom = browse(copy, width, "--dump-dom").stdout
    found = re.search(r'data-selftest="([^"]*)"', dom)
    assert found, f"the page's self-test did not run at {width} px"
    return json.loads(html.unescape(found.group(1)))


def screenshot(page: Path, tmp: Path, name: str, width: int) -> Path:
    import matplotlib.image

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    out = ARTIFACTS / f"{name}-{width}px.png"
    copy = tmp / f"{name}.html"
    shutil.copyfile(page, copy)
    browse(copy, width, f"--screenshot={out}", height=SHOT_HEIGHT)
    matplotlib.image.imsave(out, matplotlib.image.imread(out)[:, :width])  # the frame, without the window's rest
    assert out.stat().st_size > 10_000, out
    return out


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> Path:
    """The report of a host without an energy counter, as the CPU smoke run writes it (figures say what is
    missing)."""
    out = tmp_path_factory.mktemp("smoke")
    build(reference_cells_without_energy(), out)
    return out / "report" / "report.html"


def check_page(page: Path, name: str, tmp: Path, interactive: bool, claim_plots: bool = False) -> None:
    """claim_plots: the claims' figures must be interactive; without it, those the page has are checked."""
    text = page.read_text()
    present = [p for p in CLAIM_PLOTS if f'id="plot-{p}"' in text]
    if claim_plots:
        assert present == list(CLAIM_PLOTS), f"{name}: the claims' interactive figures are missing"
    for width in WIDTHS:
        r = selftest(page, tmp, width)
        assert r["width"] == width
        assert r["key_top"] is not None and 0 <= r["key_top"] < r["height"], (
            f"{name} at {width} px: the key results start at {r['key_top']} px, below the first screen"
        )
        assert r["images"] and all(w > 0 for _, w in r["images"]), (
            f"{name} at {width} px: images that did not decode: {[a for a, w in r['images'] if w <= 0]}"
        )
        assert r["fetched"] == [], f"{name} fetched from outside the page: {r['fetched']}"
        if interactive:
            assert r["plotly"] and r["hero_interactive"], f"{name}: plotly.js did not load without a network"
            assert r["hover"] and "mJ/token" in r["hover"], f"{name} at {width} px: no hover label ({r['hover']})"
            for plot in present:
                label = r["claim_hovers"].get(plot)
                assert label and CLAIM_PLOTS[plot] in label and "L = " in label and "[" in label, (
                    f"{name} at {width} px: no hover label on {plot} ({label})"
                )
        screenshot(page, tmp, name, width)


def test_the_smoke_report_reads_in_a_browser_without_network(smoke_report, tmp_path):
    check_page(smoke_report, "smoke-report", tmp_path, interactive=False)


def test_the_campaign_report_reads_in_a_browser_without_network_and_its_hero_answers_a_hover(tmp_path):
    assert 'id="plot-energy_per_token_fit"' in CAMPAIGN_REPORT.read_text(), (
        "the committed campaign report predates the interactive figure: regenerate it (README, publish_outputs)"
    )
    check_page(CAMPAIGN_REPORT, "campaign-report", tmp_path, interactive=True)


@pytest.fixture(scope="module")
def fresh_campaign_report(tmp_path_factory) -> Path:
    """The campaign report as this code writes it, from the committed campaign's derived tables and figures (the
    committed report may predate the code)."""
    outputs = CAMPAIGN_REPORT.parents[1]
    out = tmp_path_factory.mktemp("campaign") / "report.html"
    tables = sorted((outputs / "analysis").glob("*.parquet"))
    figures = sorted((outputs / "figures").glob("*.png"))
    command = [sys.executable, "-m", "ctxenergy", "report", "--tables", *tables, "--figures", *figures, "--out", out]
    subprocess.run(list(map(str, command)), cwd=REPO, capture_output=True, text=True, check=True)
    return out


def test_a_fresh_campaign_report_answers_a_hover_on_each_claims_figure_without_network(fresh_campaign_report, tmp_path):
    check_page(fresh_campaign_report, "campaign-report-fresh", tmp_path, interactive=True, claim_plots=True)
