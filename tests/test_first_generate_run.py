"""benchmarks/first_generate_run.py on the tiny CPU model: one row per kernel order and length, with the kernel torch
chose, from a process per order (the order's environment variable is read once per process)."""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_it_times_first_and_second_runs_per_kernel_order_and_names_the_kernel(tmp_path):
    out = tmp_path / "first.csv"
    cmd = [sys.executable, str(REPO / "benchmarks" / "first_generate_run.py"), "--configfile", "config/smoke.yaml"]
    cmd += ["--model", "tiny-llama", "--lengths", "64", "128", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(out)
    assert list(table[["order", "length"]].itertuples(index=False, name=None)) == [
        ("default", 64),
        ("default", 128),
        ("cudnn_last", 64),
        ("cudnn_last", 128),
    ]
    assert (table["first_s"] > 0).all() and (table["second_s"] > 0).all()
    assert ((table["extra_s"] - (table["first_s"] - table["second_s"])).abs() <= 0.002).all()  # each rounded
    # torch on a CPU has no cuDNN attention: its fused CPU kernel under both orders
    assert set(table["prefill_kernel"]) == set(table["decode_kernel"]) == {"flash_attention"}
    assert set(table["device"]) == {"cpu"}


def test_a_failing_order_is_one_line(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "first_generate_run.py"), "--configfile", "config/smoke.yaml"]
    cmd += ["--model", "no-such-model", "--out", str(tmp_path / "x.csv")]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert proc.stdout.strip() == "first_generate_run: the run with kernel order 'default' failed (exit 1)"
    assert not (tmp_path / "x.csv").exists()


def test_from_cells_reads_the_first_run_out_of_the_committed_h100_slice():
    slice_cells = "data/reference/nvidia-h100-80gb-hbm3/protocol-fast-slice/cells"
    cmd = [sys.executable, str(REPO / "benchmarks" / "first_generate_run.py"), "--from-cells", slice_cells]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last == (
        "hf-sdpa: 10 generate cells whose warm-up was one run; that first run took 3.98 to 4.79 s more than the "
        "median later run (median 4.33 s)"
    )
    committed = (REPO / "benchmarks" / "results" / "first_generate_run_cells.txt").read_text()
    assert proc.stdout in committed  # the committed output is what the script prints now
