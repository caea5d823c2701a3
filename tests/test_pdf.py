"""HTML -> PDF through a headless browser: the plumbing with a stand-in browser, and one clear line without one."""

import os
import stat

import pytest

from ctxenergy.errors import CtxEnergyError
from ctxenergy.outputs import pdf

pytestmark = pytest.mark.workflow


def fake_browser(tmp_path, body: str):
    exe = tmp_path / "bin" / "chromium"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n" + body)
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe.parent


def test_renders_through_the_browser_and_moves_the_pdf_into_place(tmp_path, monkeypatch):
    # The stand-in writes its arguments into the file it is asked to print to.
    bindir = fake_browser(
        tmp_path, 'for a in "$@"; do case $a in --print-to-pdf=*) echo "%PDF $*" > "${a#*=}";; esac; done\n'
    )
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    html = tmp_path / "paper.html"
    html.write_text("<h1>x</h1>")
    out = pdf.html_to_pdf(html, tmp_path / "out" / "paper.pdf")
    text = out.read_text()
    assert text.startswith("%PDF") and "--headless" in text and "--disable-background-networking" in text
    assert html.resolve().as_uri() in text
    assert [p.name for p in out.parent.iterdir()] == ["paper.pdf"]  # no temporary left


def test_a_failing_browser_leaves_nothing_and_says_so(tmp_path, monkeypatch):
    bindir = fake_browser(tmp_path, "echo 'cannot open display' >&2; exit 1\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "p.html").write_text("x")
    with pytest.raises(CtxEnergyError, match="could not render p.html to PDF"):
        pdf.html_to_pdf(tmp_path / "p.html", tmp_path / "o" / "p.pdf")
    assert not (tmp_path / "o" / "p.pdf").exists() and list((tmp_path / "o").iterdir()) == []


def test_no_browser_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(pdf, "find_browser", lambda: None)
    with pytest.raises(CtxEnergyError) as err:
        pdf.html_to_pdf(tmp_path / "p.html", tmp_path / "p.pdf")
    assert "apt-get install chromium" in str(err.value) and "\n" not in str(err.value)
