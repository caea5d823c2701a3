"""notebooks/explore.ipynb runs on the committed campaign's tables (and on a run's, its last section)."""

import json

import nbformat
import pytest

from ctxenergy.cli import main
from ctxenergy.notebook import execute_notebook
from ctxenergy.paths import REPO_ROOT

pytestmark = pytest.mark.workflow


NOTEBOOK = REPO_ROOT / "notebooks" / "explore.ipynb"
CAMPAIGN_ANALYSIS = REPO_ROOT / "data" / "reference" / "nvidia-h200" / "campaign" / "outputs" / "analysis"


def _text(nb) -> str:
    return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def test_explore_notebook_executes_on_the_committed_tables(tmp_path):
    out = execute_notebook(NOTEBOOK, tmp_path / "explore.ipynb", analysis=CAMPAIGN_ANALYSIS)
    nb = nbformat.read(str(out), as_version=4)
    text = _text(nb)
    # the hero's L* (checked against the thresholds table inside), the claim and the request by hand, the figure drawn
    assert "llama-3.1-8b vllm: L* = b/c = 55,223 tokens" in text
    assert "by hand: 89.2% of the request's energy is the prefill" in text
    assert "by hand 2,614.4 J; estimate 2,614.4 J" in text
    assert any(
        o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "llama-3.1-8b  vllm" in text  # the run's summary (here the campaign's own folder)


def test_the_committed_notebook_carries_no_outputs():
    """Outputs belong to the executed copy (results/notebooks/), not to the committed source."""
    nb = json.loads(NOTEBOOK.read_text())
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb["cells"] if c["cell_type"] == "code")


def test_a_failing_cell_is_one_line_and_writes_nothing(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('tables disagree')")])
    broken = tmp_path / "broken.ipynb"
    nbformat.write(nb, str(broken))
    assert main(["notebook", str(broken), "--out", str(tmp_path / "out.ipynb")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ctxenergy: {broken}: a cell failed: ") and "tables disagree" in err
    assert not (tmp_path / "out.ipynb").exists()
