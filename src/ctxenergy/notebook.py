"""`ctxenergy notebook`: execute an analysis notebook (notebooks/explore.ipynb) into an executed copy, with nbclient.

The notebook reads the committed campaign's derived tables; CTXENERGY_ANALYSIS tells it a run's own folder of derived
tables (--analysis). A cell that raises fails the command with the cell's error, and no executed copy is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from ctxenergy.errors import CtxEnergyError
from ctxenergy.paths import REPO_ROOT

INSTALL_HINT = "install the notebook extra: pip install -e '.[notebook]' (scripts/setup.sh does)"


def execute_notebook(
    source: str | Path, out: str | Path, analysis: str | Path | None = None, timeout_s: int = 300
) -> Path:
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
    except ImportError as exc:
        raise CtxEnergyError(f"notebook: {exc.name} is not installed; {INSTALL_HINT}") from None
    from ctxenergy.tables import write_text

    nb = nbformat.read(str(source), as_version=4)
    previous = os.environ.get("CTXENERGY_ANALYSIS")
    if analysis:
        os.environ["CTXENERGY_ANALYSIS"] = str(Path(analysis).resolve())
    try:
        # run from the repository root, so that relative paths in the notebook mean what they do in the workflow
        NotebookClient(
            nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}
        ).execute()
    except CellExecutionError as exc:
        raise CtxEnergyError(f"{source}: a cell failed: {str(exc).strip().splitlines()[-1]}") from None
    finally:
        if analysis:
            if previous is None:
                os.environ.pop("CTXENERGY_ANALYSIS", None)
            else:
                os.environ["CTXENERGY_ANALYSIS"] = previous
    return write_text(nbformat.writes(nb), out)


def main(args) -> int:
    out = execute_notebook(args.notebook, args.out, args.analysis)
    print(f"{args.notebook} executed -> {out}")
    return 0
