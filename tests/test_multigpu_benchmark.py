"""benchmarks/multigpu.py: what can be checked without two GPUs (the runs themselves need them)."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
from conftest import REPO

from ctxenergy.stats import welch_diff_pct

pytestmark = pytest.mark.workflow


spec = importlib.util.spec_from_file_location("multigpu", REPO / "benchmarks" / "multigpu.py")
multigpu = importlib.util.module_from_spec(spec)
spec.loader.exec_module(multigpu)


def test_cells_on_one_gpu_at_the_same_time_are_found():
    cells = [
        ("a", "GPU-1", 0.0, 10.0),
        ("b", "GPU-2", 5.0, 15.0),
        ("c", "GPU-1", 10.0, 20.0),
        ("d", "GPU-1,GPU-2", 19.0, 30.0),
    ]
    # a and c touch but do not overlap; d (tp=2) overlaps c on GPU-1; b ends before d starts on GPU-2
    assert multigpu.overlapping_cells(cells) == [("c", "d")]
    assert multigpu.overlapping_cells([("x", "", 0.0, 1.0), ("y", "", 0.0, 1.0)]) == []  # CPU cells: no GPU


def test_welch_difference_in_percent():
    rng = np.random.default_rng(0)
    base = 100 + rng.normal(0, 0.5, 15)
    same, higher = 100 + rng.normal(0, 0.5, 15), 103 + rng.normal(0, 0.5, 15)
    d, lo, hi = welch_diff_pct(base, same)
    assert lo < 0 < hi and hi - lo < 1.5
    d, lo, hi = welch_diff_pct(base, higher)
    assert 2 < lo < d < hi < 4


def test_parallel_run_on_the_cpu_writes_its_rows(tmp_path):
    csv = tmp_path / "multigpu.csv"
    rc = multigpu.main(
        ["parallel", "--config", "config/smoke.yaml", "--work", str(tmp_path / "work"), "--csv", str(csv)]
    )
    assert rc == 0
    df = pd.read_csv(csv)
    assert list(df.columns) == ["device", "gpus", "cells", "wall_s", "gpu_uuids"]
    assert df["gpus"].tolist() == [2, 1] and (df["cells"] == 8).all() and (df["wall_s"] > 0).all()
    assert df["gpu_uuids"].isna().all()  # no GPU here
