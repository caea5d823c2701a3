"""`ctxenergy publish`: a run's outputs copied in the layout of results/, every file whole, nothing on a missing one."""

from pathlib import Path

import pytest

from ctxenergy.cli import main
from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs.publish import publish

OUTPUTS = {
    "analysis/per_cell.parquet": b"PAR1 per_cell",
    "analysis/cost_model.json": b'{"model": "tiny"}',
    "figures/energy_intensity.png": b"\x89PNG fake",
    "figures/energy_intensity.svg": b"<svg/>",
    "report/report.html": b"<html>report</html>",
    "paper/paper.html": b"<html>paper</html>",
    "paper/paper.md": b"![energy](../figures/energy_intensity.png)\n",
    "provenance.md": b"# Provenance\n",
}


@pytest.fixture
def results(tmp_path) -> Path:
    root = tmp_path / "results"
    for name, content in OUTPUTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    (root / "cells.parquet").write_bytes(b"not asked for")
    return root


def test_the_copy_has_the_layout_of_results_and_the_same_bytes(results, tmp_path):
    target = tmp_path / "published"
    (target / "figures").mkdir(parents=True)
    (target / "figures" / "old.png").write_bytes(b"kept")
    copies = publish([results / name for name in OUTPUTS], target, root=results)
    assert sorted(copies) == sorted(target / name for name in OUTPUTS)
    for name, content in OUTPUTS.items():
        assert (target / name).read_bytes() == content
    assert (target / "figures" / "old.png").read_bytes() == b"kept"  # files it was not given stay
    assert not (target / "cells.parquet").exists()
    assert not list(target.rglob("*.tmp"))
    link = (target / "paper" / "paper.md").read_text().split("(")[1].rstrip(")\n")
    assert (target / "paper" / link).is_file()  # the write-up's figure link resolves in the copy


def test_the_cli_verb_copies_relative_to_results_by_default(results, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["publish", "results/report/report.html", "results/provenance.md", "--out", "out"]) == 0
    assert (tmp_path / "out" / "report" / "report.html").read_bytes() == OUTPUTS["report/report.html"]
    assert (tmp_path / "out" / "provenance.md").read_bytes() == OUTPUTS["provenance.md"]
    assert "2 files of results -> out" in capsys.readouterr().out


def test_a_missing_input_is_one_line_and_nothing_is_copied(results, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (results / "paper" / "paper.md").unlink()
    files = [f"results/{name}" for name in OUTPUTS]
    assert main(["publish", *files, "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ctxenergy: publish: results/paper/paper.md: no such file"), err
    assert not (tmp_path / "out").exists()


def test_a_file_outside_the_root_is_refused_before_any_copy(results, tmp_path):
    stray = tmp_path / "stray.md"
    stray.write_text("x")
    with pytest.raises(CtxEnergyError, match="is not under"):
        publish([results / "provenance.md", stray], tmp_path / "out", root=results)
    assert not (tmp_path / "out").exists()


def test_a_failed_copy_leaves_no_half_written_file(results, tmp_path, monkeypatch):
    import shutil

    def copy_then_fail(src, dst):
        Path(dst).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", copy_then_fail)
    with pytest.raises(OSError):
        publish([results / "provenance.md"], tmp_path / "out", root=results)
    assert not (tmp_path / "out" / "provenance.md").exists() and not list((tmp_path / "out").glob(".*.tmp"))
