"""Energy-measurement accuracy on this GPU, and what measuring costs the workload.

1. Calibration (ctxenergy.calibrate): every method's error over short windows against a long reference
   window, on bursts (idle -> work -> idle) and on a steady load.
2. Sampler overhead: a Llama-3.1-8B-shaped model (random bf16 weights, hf-sdpa), prefill at L=4096 (GPU-bound)
   and generate at L=1024 with G=16 (host-bound decode), in blocks with the meter's power-sampler thread running
   and blocks without, interleaved.

Run on a GPU host from the repository root (no Snakemake needed):
    PYTHONPATH=src python3 benchmarks/energy_accuracy.py [--out-dir benchmarks/results] [--quick]
Writes calibration.csv (+ .windows.csv, .meta.json) and sampler_overhead.csv (+ .runs.csv), prints both tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Callable, ContextManager

REPO = Path(__file__).resolve().parents[1]
try:
    import ctxenergy  # noqa: F401
except ImportError:  # run without PYTHONPATH=src
    sys.path.insert(0, str(REPO / "src"))

import numpy as np
import pandas as pd

from ctxenergy.errors import CtxEnergyError, NoDeviceError

MODEL = "llama-3.1-8b"
PRODUCTION_INTERVAL_S = 0.01  # NvmlMeter's default sampler interval
CALIBRATION_INTERVAL_S = 0.002  # the calibration's trace interval


def require_gpu():
    """NVML and a CUDA torch, or one line saying which is missing."""
    from ctxenergy.telemetry.nvml_api import open_backend

    backend = open_backend()
    if backend.device_count() < 1:
        raise NoDeviceError("NVML sees no GPU on this host")
    try:
        import torch
    except ImportError:
        raise NoDeviceError("torch is not installed: the benchmark needs a CUDA build of torch") from None
    if not torch.cuda.is_available():
        raise NoDeviceError("torch sees no CUDA device (a CPU build of torch, or CUDA_VISIBLE_DEVICES hides every GPU)")
    return backend


# --- sampler overhead ---


def interleaved_timings(
    run_once: Callable[[], float], sampler_on: Callable[[], ContextManager], rounds: int, block: int
) -> list[dict]:
    """`block` runs with the sampler and `block` without, per round; the order alternates so drift favours neither."""
    rows = []
    for r in range(rounds):
        for on in (True, False) if r % 2 == 0 else (False, True):
            with sampler_on() if on else contextlib.nullcontext():
                for i in range(block):
                    rows.append({"round": r, "sampler": on, "run": i, "seconds": run_once()})
    return rows


def slowdown(rows: list[dict], seed: int = 0) -> dict:
    """Median over rounds of (median time with sampler / median time without - 1), with a bootstrap 95 % interval."""
    df = pd.DataFrame(rows)
    per_round = df.groupby(["round", "sampler"])["seconds"].median().unstack()  # a stray slow run moves no round
    ratios = ((per_round[True] / per_round[False] - 1.0) * 100.0).to_numpy()
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(ratios, size=(2000, ratios.size)), axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return {
        "rounds": int(ratios.size),
        "runs_on": int(df["sampler"].sum()),
        "runs_off": int((~df["sampler"]).sum()),
        "median_on_s": float(df.loc[df["sampler"], "seconds"].median()),
        "median_off_s": float(df.loc[~df["sampler"], "seconds"].median()),
        "slowdown_pct": float(np.median(ratios)),
        "slowdown_ci95_low_pct": float(low),
        "slowdown_ci95_high_pct": float(high),
    }


def sampler_overhead(
    backend,
    workloads: list[tuple[str, int, int]],
    intervals: list[float],
    rounds: int,
    block: int,
    log: Callable[[str], None],
    model: str = MODEL,
    device: str = "cuda",
) -> tuple[list[dict], list[dict]]:
    """Run times with the meter's sampler thread running and without, per workload (phase, L, output tokens):
    a GPU-bound prefill, and an HF generate whose decode steps wait on the host (where a sampler thread competing
    for the interpreter would show). `device="cpu"` only to try the code."""
    import torch

    from ctxenergy.engines.hf import HFEngine
    from ctxenergy.models import ModelSpec
    from ctxenergy.settings import EngineOptions
    from ctxenergy.synthetic_load import nvml_uuid
    from ctxenergy.telemetry.nvml_meter import NvmlMeter

    config_path = REPO / "data" / "models" / model / "config.json"
    arch = json.loads(config_path.read_text())
    spec = ModelSpec(name=model, config_path=config_path, arch=arch, weights=None, tokenizer="bytes")
    on_gpu = device == "cuda"
    options = EngineOptions.schema_defaults().of("hf")  # as the study runs hf-sdpa by default
    engine = HFEngine("hf-sdpa", spec, "bfloat16" if on_gpu else "float32", device, options)
    t0 = time.perf_counter()
    engine.load()  # build_hf_model: random weights from the shipped config, built on the device
    log(f"{model} built in {time.perf_counter() - t0:.1f} s")
    uuid = nvml_uuid(torch.device("cuda", torch.cuda.current_device())) if on_gpu else None
    device_name = torch.cuda.get_device_name() if on_gpu else device
    summary, runs = [], []
    for phase, length, tokens in workloads:
        ids = np.random.default_rng(0).integers(0, int(arch["vocab_size"]), size=length, dtype=np.int64)

        def run_once(ids=ids, tokens=tokens) -> float:
            r = engine.run(ids, tokens)
            return r.end - r.start

        for _ in range(3):
            run_once()
        what = f"prefill L={length}" if phase == "prefill" else f"generate L={length}, G={tokens}"
        workload = f"{what}, {model} shape (random {'bf16' if on_gpu else 'fp32'}, hf-sdpa)"
        for interval in intervals:
            # The production sampler exactly: NvmlMeter's own thread, reading instant power and clock-event reasons.
            def sampler_on(interval=interval):
                return NvmlMeter(
                    uuids=[uuid] if uuid else None, sample_interval_s=interval, backend=backend, detect_period=False
                )

            rows = interleaved_timings(run_once, sampler_on, rounds, block)
            s = slowdown(rows)
            summary.append({"device": device_name, "workload": workload, "sampler_interval_s": interval, **s})
            runs += [{"workload": workload, "sampler_interval_s": interval, **r} for r in rows]
            log(
                f"{what}, sampler every {interval * 1e3:.0f} ms: {s['slowdown_pct']:+.2f} % "
                f"(95 % CI {s['slowdown_ci95_low_pct']:+.2f} .. {s['slowdown_ci95_high_pct']:+.2f} %)"
            )
    engine.close()
    return summary, runs


def format_overhead(summary: list[dict]) -> str:
    lines = [f"{'workload':<66} {'sampler':>8} {'off s':>8} {'on s':>8} {'slowdown':>10} {'95 % CI':>18}"]
    for r in summary:
        lines.append(
            f"{r['workload']:<66} {r['sampler_interval_s'] * 1e3:>6.0f}ms {r['median_off_s']:>8.4f} "
            f"{r['median_on_s']:>8.4f} {r['slowdown_pct']:>+9.2f}% "
            f"{r['slowdown_ci95_low_pct']:>+8.2f}..{r['slowdown_ci95_high_pct']:+.2f}%"
        )
    return "\n".join(lines)


# --- main ---


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default=str(REPO / "benchmarks" / "results"))
    p.add_argument("--parts", default="calibration,overhead", help="calibration, overhead, or both")
    p.add_argument(
        "--quick", action="store_true", help="short calibration (lengths <= 0.5 s, 8 windows) and fewer rounds"
    )
    p.add_argument("--windows", type=int, default=20)
    p.add_argument("--truth-s", type=float, default=20.0)
    p.add_argument("--lengths", default="0.1,0.2,0.5,1,2")
    p.add_argument("--patterns", default="bursts,steady")
    p.add_argument("--length", type=int, default=4096, help="prefill length of the overhead workload")
    p.add_argument("--generate-length", type=int, default=1024, help="prompt length of the generate workload")
    p.add_argument("--generate-tokens", type=int, default=16, help="output tokens of the generate workload (0: none)")
    p.add_argument(
        "--rounds", type=int, default=12, help="overhead rounds (each: a block with the sampler, one without)"
    )
    p.add_argument("--block", type=int, default=3, help="prefills per block")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from ctxenergy.calibrate import format_table, run_on_gpu, settings_from_args, windows_path
    from ctxenergy.tables import write_csv_or_parquet

    parts = {p.strip() for p in args.parts.split(",") if p.strip()}
    backend = require_gpu()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    tables = []
    if "calibration" in parts:
        summary, windows, meta = run_on_gpu(settings_from_args(args), log)
        path = write_csv_or_parquet(summary, out / "calibration.csv")
        write_csv_or_parquet(windows, windows_path(path))
        (out / "calibration.meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        tables.append(f"Calibration on {meta['device']}: median / max |error| per method\n{format_table(summary)}")
    if "overhead" in parts:
        rounds = min(args.rounds, 6) if args.quick else args.rounds
        workloads = [("prefill", args.length, 1)]
        if args.generate_tokens:
            workloads.append(("generate", args.generate_length, args.generate_tokens))
        summary_rows, runs = sampler_overhead(
            backend, workloads, [PRODUCTION_INTERVAL_S, CALIBRATION_INTERVAL_S], rounds, args.block, log
        )
        write_csv_or_parquet(pd.DataFrame(summary_rows), out / "sampler_overhead.csv")
        write_csv_or_parquet(pd.DataFrame(runs), out / "sampler_overhead.runs.csv")
        tables.append(
            "Sampler overhead (run time with the power-sampler thread vs without)\n" + format_overhead(summary_rows)
        )
    print("\n\n".join(tables))
    print(f"\n{time.perf_counter() - t0:.0f} s; tables in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except CtxEnergyError as exc:
        print(f"energy_accuracy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
