"""Why is an HF engine's first generate run at a new length slow? Times the first and the second generate run at each
length on one loaded engine, under torch's default SDPA kernel order and with cuDNN's attention put last
(TORCH_CUDNN_SDPA_DEPRIORITIZED=1, read once per process: each order runs in a process of its own), and records the
attention kernel torch chose (ctxenergy.engines.sdpa_kernels).

On the H100 the first hf-sdpa generate run at a new length took 6.4-8.0 s and the measured runs 2.3-2.4 s (issue
"The paper's grid in 45 GPU-minutes": ~26 % of the fast protocol's job time). If the extra time goes with
cuDNN's attention (a plan per new shape; every decode step has a new key length), it shows here as a large
`extra_s` under the default order with `cudnn_attention` in the kernels and a small one with FlashAttention-2.

    python benchmarks/first_generate_run.py [--configfile C ...] [--model llama-3.1-8b] [--engine hf-sdpa]
        [--lengths 256 4096 16384] [--out first_generate_run.csv]

Timing only (no energy): a few GPU-minutes at most. On a CPU host (`--configfile config/smoke.yaml --model
tiny-llama`) it runs the same code on the tiny model, where torch has no cuDNN attention.

    python benchmarks/first_generate_run.py --from-cells data/reference/nvidia-h100-80gb-hbm3/protocol-fast-slice/cells

reads the same comparison out of measured generate cells instead (no GPU): each cell's first run at its length
(`timing_pass_s`, the warm-up's timed run) against the median of its measured runs
(benchmarks/results/first_generate_run_h100_slice.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ORDERS = {"default": {}, "cudnn_last": {"TORCH_CUDNN_SDPA_DEPRIORITIZED": "1"}}
COLUMNS = ["order", "length", "first_s", "second_s", "extra_s", "prefill_kernel", "decode_kernel", "device", "cudnn"]


def measure(configfiles: list[str], model: str, engine_name: str, lengths: list[int]) -> list[dict]:
    """In this process: one engine load, then per length a reset, a first and a second generate run."""
    from ctxenergy.config import load_config
    from ctxenergy.engines import make_engine
    from ctxenergy.models import resolve_model
    from ctxenergy.paths import REPO_ROOT
    from ctxenergy.settings import Settings

    settings = Settings.from_config(load_config(REPO_ROOT / "config.yaml", [Path(c) for c in configfiles]))
    spec = resolve_model(settings, model)
    engine = make_engine(engine_name, spec, settings)
    engine.load()
    versions = engine.versions()
    device = settings.device
    if device == "cuda":
        import torch

        device = torch.cuda.get_device_name()
    rng = np.random.default_rng(0)
    rows = []
    for length in lengths:
        engine.reset()  # as between two cells: the next run is a cell's first
        ids = rng.integers(3, spec.vocab_size, size=length, dtype=np.int64)
        first = engine.run(ids, settings.generate_tokens).total_s
        second = engine.run(ids, settings.generate_tokens).total_s
        kernels = engine.attention_kernels()
        rows.append(
            {
                "length": length,
                "first_s": round(first, 3),
                "second_s": round(second, 3),
                "extra_s": round(first - second, 3),
                "prefill_kernel": kernels.get("prefill", "none"),
                "decode_kernel": kernels.get("decode", "none"),
                "device": device,
                "cudnn": versions.get("cudnn", ""),
            }
        )
    engine.close()
    return rows


def from_cells(folder: str) -> list[dict]:
    """The first run against the later runs of every generate cell under `folder` whose warm-up was that one run
    (its timed run, `timing_pass_s`, is then the first run at the length; a warm-up of several runs times its last,
    a warm one, and tells nothing here)."""
    from ctxenergy.grid import cached_cell_tables
    from ctxenergy.tables import read_cell

    rows = []
    for path in cached_cell_tables(folder):
        _, runs, _, meta = read_cell(path)
        if meta.get("phase") != "generate" or meta.get("status") != "ok" or not meta.get("timing_pass_s"):
            continue
        first, timeline = float(meta["timing_pass_s"]), meta.get("timeline", {})
        warmup_s = timeline.get("warmup_end", 0.0) - timeline.get("warmup_start", 0.0)
        one_run = meta["warmup_runs"] == 1 if "warmup_runs" in meta else warmup_s < 1.2 * first  # older cells: span
        if not one_run:
            continue
        later = float(np.median(runs["end_s"] - runs["start_s"]))
        kernels = meta.get("attention_kernels")
        rows.append(
            {
                "cell": Path(path).relative_to(folder).with_suffix("").as_posix(),
                "length": int(meta["length_tokens"]),
                "first_s": round(first, 3),
                "second_s": round(later, 3),
                "extra_s": round(first - later, 3),
                "prefill_kernel": "not recorded" if kernels is None else kernels.get("prefill", "none"),
                "decode_kernel": "not recorded" if kernels is None else kernels.get("decode", "none"),
                "device": meta.get("device_name", ""),
            }
        )
    return sorted(rows, key=lambda r: (r["cell"].split("/")[:2], r["length"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="*", default=[], help="config files over config.yaml")
    parser.add_argument("--model", default="llama-3.1-8b", help="a model of the config")
    parser.add_argument("--engine", default="hf-sdpa", help="an HF engine (hf-sdpa, hf-paged, hf-eager)")
    parser.add_argument("--lengths", nargs="+", type=int, default=[256, 4096, 16384], help="prompt lengths")
    parser.add_argument("--out", default="first_generate_run.csv", help="the table written")
    parser.add_argument("--from-cells", help="read first and later runs out of measured cells (no GPU)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one order, JSON rows on stdout
    args = parser.parse_args(argv)
    if args.from_cells:
        import pandas as pd

        table = pd.DataFrame(from_cells(args.from_cells))
        print(table.to_string(index=False))
        if len(table):
            table["engine"] = table["cell"].str.split("/").str[1]
            for engine, g in table.groupby("engine", sort=True):
                print(
                    f"{engine}: {len(g)} generate cells whose warm-up was one run; that first run took "
                    f"{g['extra_s'].min():.2f} to {g['extra_s'].max():.2f} s more than the median later run "
                    f"(median {g['extra_s'].median():.2f} s)"
                )
        return 0
    if args.child:
        print(json.dumps(measure(args.configfile, args.model, args.engine, args.lengths)))
        return 0
    rows = []
    for order, env in ORDERS.items():
        cmd = [sys.executable, __file__, "--child", "--model", args.model, "--engine", args.engine]
        cmd += ["--lengths", *map(str, args.lengths), "--configfile", *args.configfile]
        proc = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            print(f"first_generate_run: the run with kernel order '{order}' failed (exit {proc.returncode})")
            return 1
        rows += [{"order": order, **row} for row in json.loads(proc.stdout.strip().splitlines()[-1])]
    import pandas as pd

    table = pd.DataFrame(rows, columns=COLUMNS)
    table.to_csv(args.out, index=False)
    print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
