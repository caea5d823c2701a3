"""Synthetic serving cells: a batch axis and vLLM variants on one board, with known answers (shared by the serving
tests)."""

import pandas as pd

MODEL = "llama-3.1-8b"
LENGTHS = (256, 1024, 4096, 16384, 65536)
BATCHES = (1, 4, 16, 64)
G = 128


def prefill_energy(B: int, L: int, host_j: float = 3.0, b: float = 0.02, c: float = 2e-7) -> float:
    """A fixed host cost per run (the short prefill's idle GPU) and B sequences of b L + c L^2."""
    return host_j + B * (b * L + c * L * L)


def decode_energy(B: int, L: int, step_j: float = 2.0, kv_j_per_token: float = 1e-5) -> float:
    """G - 1 steps, each the weights once and B KV caches."""
    return (G - 1) * (step_j + B * kv_j_per_token * L)


def cell(
    engine: str, variant: str, B: int, phase: str, L: int, energy: float, rel: float = 0.005, batch_axis: bool = True
) -> dict:
    row = {
        "cell_id": f"{MODEL}/{engine}/{phase}/L{L}" + (f"/B{B}/{variant}" if batch_axis else ""),
        "model": MODEL,
        "engine": engine,
        "phase": phase,
        "length_tokens": L,
        "output_tokens": G if phase == "generate" else 1,
        "status": "ok",
        "status_reason": "",
        "flags": "",
        "n_windows": 5,
        "device_name": "NVIDIA H200",
        "device_uuid": "GPU-a",
        "power_limit_w": 700.0,
    }
    if batch_axis:
        row.update(batch_size=B, engine_variant=variant)
    t = energy / 500.0
    for col, v in (
        ("energy_per_run_j", energy),
        ("dynamic_energy_per_run_j", 0.8 * energy),
        ("run_s", t),
        ("prefill_s", t if phase == "prefill" else t / 10),
        ("mean_power_w", 500.0),
        ("power_cap_fraction", 0.5),
    ):
        row.update({col: v, f"{col}_ci_low": v * (1 - rel), f"{col}_ci_high": v * (1 + rel)})
    return row


def serving_cells(
    engines=("hf-sdpa", "vllm"), batches=BATCHES, lengths=LENGTHS, variants=None, batch_axis: bool = True, **energy
) -> pd.DataFrame:
    """Prefill and generate cells for every engine, B and L; variants: {name: energy factor} for vLLM (at every B and
    L, prefill and generate)."""
    rows = []
    for engine in engines:
        for name, factor in {"default": 1.0, **((variants or {}) if engine == "vllm" else {})}.items():
            for B in batches:
                for L in lengths:
                    e = prefill_energy(B, L, **energy) * factor
                    rows.append(cell(engine, name, B, "prefill", L, e, batch_axis=batch_axis))
                    rows.append(
                        cell(engine, name, B, "generate", L, e + decode_energy(B, L) * factor, batch_axis=batch_axis)
                    )
    return pd.DataFrame(rows)
