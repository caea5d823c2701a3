"""The code's style is checked, not hoped for: ruff (lint and format, configured in pyproject.toml) on the package,
tests, benchmarks and scripts, snakefmt on the workflow."""

import subprocess
import sys

import pytest
from conftest import REPO

PYTHON_TREES = ["src", "tests", "benchmarks", "scripts"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def ruff():
    if _run("ruff", "--version").returncode != 0:
        pytest.fail("ruff is not installed: it is in the test extra (pip install -e '.[test]')")


def test_ruff_finds_nothing_to_report(ruff):
    proc = _run("ruff", "check", *PYTHON_TREES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_finds_nothing_to_change(ruff):
    proc = _run("ruff", "format", "--check", *PYTHON_TREES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_snakefmt_finds_nothing_to_change():
    proc = _run("snakefmt", "--check", "Snakefile", "workflow/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
