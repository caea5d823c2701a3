import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # fake_nvml


def copy_repo(dst: Path) -> Path:
    """A clone-like copy of the repository (tracked and unignored files, without the reference data), so that
    workflow tests never touch the checkout's results/."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for f in files:
        src = REPO / f
        if src.is_file() and not f.startswith("data/reference/"):
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)
    return dst


@pytest.fixture
def repo_copy(tmp_path):
    return copy_repo(tmp_path / "repo")


REFERENCE = REPO / "data" / "reference" / "nvidia-h200"
# The analysis tests pin their numbers to one fixed slice of the reference data (llama-3.1-8b under hf-sdpa,
# L = 256 ... 16384, measured 2026-11-29), so that adding reference cells never changes what they assert.
SDPA_SLICE = REFERENCE / "cells" / "llama-3.1-8b" / "hf-sdpa"


def reference_cells():
    import pandas as pd

    cells = pd.read_parquet(REFERENCE / "cells.parquet")
    return cells[(cells["model"] == "llama-3.1-8b") & (cells["engine"] == "hf-sdpa")].reset_index(drop=True)


def reference_tables():
    from ctxenergy.grid import cached_cell_tables

    return cached_cell_tables(SDPA_SLICE)


def reference_cells_without_energy():
    """The reference slice as a host without a readable energy source would have measured it."""
    import numpy as np

    raw = reference_cells()
    cols = [c for c in raw if c.startswith(("energy_per_run", "dynamic_energy", "mean_power", "power_cap"))]
    raw[cols] = np.nan
    raw["flags"] = "no_energy"
    return raw
