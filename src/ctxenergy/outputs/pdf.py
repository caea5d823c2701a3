"""HTML -> PDF through a headless Chromium, when one is installed (Debian: `apt-get install chromium`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from ctxenergy.errors import CtxEnergyError
from ctxenergy.files import replacing

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# No network, no first-run or background services: the page is a self-contained local file.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-pdf-header-footer",
]


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def html_to_pdf(html: str | Path, pdf: str | Path, timeout_s: float = 120) -> Path:
    browser = find_browser()
    if browser is None:
        raise CtxEnergyError(
            "no headless Chromium to render the PDF; install one (Debian: apt-get install chromium) "
            "or read the HTML write-up"
        )
    html, pdf = Path(html).resolve(), Path(pdf)
    with replacing(pdf) as tmp, tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", f"--print-to-pdf={tmp}", html.as_uri()],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if proc.returncode != 0 or not Path(tmp).exists() or Path(tmp).stat().st_size == 0:
            raise CtxEnergyError(
                f"{browser} could not render {html.name} to PDF: {proc.stderr.strip().splitlines()[-1:]}"
            )
    return pdf


def main(args) -> int:
    html_to_pdf(args.html, args.out)
    print(f"{args.html} -> {args.out}")
    return 0
