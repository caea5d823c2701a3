"""`ctxenergy publish`: a run's outputs (derived tables, table pages, figures, report, write-up, provenance) copied
into a folder of their own, e.g. beside reference cells to be committed with them.

    ctxenergy publish results/analysis/* results/figures/* results/report/report.html results/paper/paper.html \
        results/paper/paper.md results/provenance.md --out data/reference/nvidia-h200/campaign/outputs

Each file keeps its place relative to results/, so the copy has the layout of results/ and the write-up's links
(paper.md shows ../figures/) still resolve. Every file is checked before any is written, and each is written whole
or not at all (ctxenergy.files): an error leaves no half-written file behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ctxenergy.errors import CtxEnergyError
from ctxenergy.files import replacing
from ctxenergy.paths import RESULTS_DIR


def publish(files, target: str | Path, root: str | Path = RESULTS_DIR) -> list[Path]:
    """Copy each of `files` (under `root`) to the same place under `target`; returns the copies. Files already in
    `target` that are not among them stay."""
    root, target = Path(root), Path(target)
    copies = []
    for file in dict.fromkeys(map(Path, files)):  # a file named twice is copied once
        if not file.is_file():
            raise CtxEnergyError(
                f"publish: {file}: no such file, nothing was copied; make it first (`snakemake "
                "publish_outputs` makes every output it publishes)"
            )
        try:
            place = Path(os.path.abspath(file)).relative_to(os.path.abspath(root))  # links stay links: not resolved
        except ValueError:
            raise CtxEnergyError(
                f"publish: {file} is not under {root}/, nothing was copied; name files under it, "
                "or their folder with --root"
            ) from None
        copies.append((file, target / place))
    for file, copy in copies:
        with replacing(copy) as tmp:
            shutil.copyfile(file, tmp)
    return [copy for _, copy in copies]


def main(args) -> int:
    copies = publish(args.files, args.out, args.root)
    print(f"{len(copies)} files of {args.root} -> {args.out}")
    return 0
