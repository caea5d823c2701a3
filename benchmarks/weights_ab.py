"""The weights A/B (config/weights-ab.yaml): does the random weights' distribution change the energy, and by how much
does it move the engine comparison?

Reads the committed cells of one board and prints, for each engine, every weight set against the engine's own
initialisation (the campaign's), and, for each weight set, the SDPA / vLLM energy ratio per length: all cells of one
board, so NVML's per-board gain cancels. Intervals are 95 % (Welch over windows).

    python benchmarks/weights_ab.py [data/reference/nvidia-h100-80gb-hbm3/weights-ab/cells]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from ctxenergy.grid import cached_cell_tables
from ctxenergy.stats import welch_diff_pct

CELLS = Path(__file__).resolve().parents[1] / "data/reference/nvidia-h100-80gb-hbm3/weights-ab/cells"
# model entry -> (shape, weight set); the entries of config/weights-ab.yaml and config/weights-ab-qwen2*.yaml
ARMS = {
    "llama-3.1-8b": ("llama-3.1-8b", "engine's own"),
    "llama-3.1-8b-uniform": ("llama-3.1-8b", "uniform(+-1e-3)"),
    "llama-3.1-8b-shared": ("llama-3.1-8b", "shared normal(0, 0.02)"),
    "qwen2-7b": ("qwen2-7b", "engine's own"),
    "qwen2-7b-shared": ("qwen2-7b", "shared normal(0, 0.02)"),
}
# what "engine's own" is in each engine
OWN = {"hf-sdpa": "normal(0, 0.02)", "vllm": "uniform(+-1e-3)"}


def windows(root: Path) -> pd.DataFrame:
    rows = []
    for path in cached_cell_tables(root):
        w = pd.read_parquet(path)
        w = w[(w["window"] >= 0) & (w["status"] == "ok")]
        rows.append(w[["model", "engine", "phase", "length_tokens", "device_uuid", "energy_per_run_j"]])
    df = pd.concat(rows, ignore_index=True)
    df["shape"] = df["model"].map(lambda m: ARMS[m][0])
    df["weights"] = df["model"].map(lambda m: ARMS[m][1])
    return df


def _fmt(d: tuple[float, float, float]) -> str:
    return f"{d[0]:+.2f} % [{d[1]:+.2f}, {d[2]:+.2f}]"


def _energy(df: pd.DataFrame, model: str, engine: str, length: int) -> list[float]:
    sel = df[(df["model"] == model) & (df["engine"] == engine) & (df["length_tokens"] == length)]
    return sel["energy_per_run_j"].tolist()


def report(df: pd.DataFrame) -> list[str]:
    boards = sorted(df["device_uuid"].unique())
    out = [
        f"cells: {df.groupby(['model', 'engine', 'length_tokens']).ngroups}, boards: {', '.join(boards)}",
        "",
        "1. Each weight set against the engine's own initialisation (energy per prefill, same engine and board)",
    ]
    for engine in sorted(df["engine"].unique()):
        for model, (shape, weights) in ARMS.items():
            if weights == "engine's own":
                continue
            own = next(m for m, (s, w) in ARMS.items() if s == shape and w == "engine's own")
            for length in sorted(df[(df["model"] == model) & (df["engine"] == engine)]["length_tokens"].unique()):
                a, b = _energy(df, own, engine, length), _energy(df, model, engine, length)
                out.append(
                    f"  {shape} {engine} L={length}: {weights} vs own {OWN[engine]}: {_fmt(welch_diff_pct(a, b))}"
                    f"  ({sum(a) / len(a):.1f} J -> {sum(b) / len(b):.1f} J)"
                )
    out += ["", "2. SDPA / vLLM energy ratio per weight set (same board: the NVML gain cancels)"]
    for model, (shape, weights) in ARMS.items():
        lengths = sorted(
            set(df[(df["model"] == model) & (df["engine"] == "vllm")]["length_tokens"])
            & set(df[(df["model"] == model) & (df["engine"] == "hf-sdpa")]["length_tokens"])
        )
        label = "engine's own (SDPA normal, vLLM uniform)" if weights == "engine's own" else f"both {weights}"
        for length in lengths:
            d = welch_diff_pct(_energy(df, model, "vllm", length), _energy(df, model, "hf-sdpa", length))
            out.append(
                f"  {shape} L={length}, {label}: {1 + d[0] / 100:.3f}x [{1 + d[1] / 100:.3f}, {1 + d[2] / 100:.3f}]"
            )
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else CELLS
    print("\n".join(report(windows(root))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
