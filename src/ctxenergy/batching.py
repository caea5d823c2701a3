"""Whether a batch of B sequences of L tokens (and G output tokens each) can run as one batch, decided before any
GPU time where that is knowable (docs/serving.md): from the config before the engine loads (limit_before_load),
else from the device and the loaded engine before the cell's idle baseline and warm-up (batch_limit_of).

A batch that cannot run is recorded, not measured, with a status and a one-line reason, as an out-of-memory cell is:
- `exceeds_engine_limit`: beyond a limit the engine's settings fix before it loads (vLLM without chunked prefill:
  B * L above max_num_batched_tokens, so the batch would not be one prefill step; B above max_num_seqs; hf-paged:
  more KV blocks than its cache holds), or, once loaded, beyond its KV cache (vLLM would preempt and recompute,
  measuring something else than one batch);
- `oom`: the weights and the batch's KV cache alone exceed the device's memory (a lower bound of what the engine
  needs: activations come on top, and a batch that passes this check may still run out, which is caught as an
  out-of-memory error is for every cell).
"""

from __future__ import annotations

from ctxenergy.engines.registry import ENGINES
from ctxenergy.models import parameter_counts

EXCEEDS_ENGINE_LIMIT = "exceeds_engine_limit"
OOM = "oom"
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}


def kv_cache_bytes(arch: dict, tokens: int, dtype: str) -> int:
    """Keys and values of `tokens` positions over all layers."""
    p = parameter_counts(arch)
    kv_heads = arch.get("num_key_value_heads", p["heads"])
    return 2 * p["layers"] * kv_heads * p["head_dim"] * DTYPE_BYTES[dtype] * tokens


def limit_before_load(cell, spec, options: dict, n_out: int, dtype: str) -> tuple[str, str] | None:
    """(status, reason) where the batch of `cell` cannot run on its engine with these options, else None (known from
    the config alone, before the meter opens or the engine loads). `options`: the engine's options of the cell's
    variant (EngineInfo.options)."""
    if cell.batch_size == 1:
        return None
    engine = ENGINES[cell.engine].load_class()  # each engine knows its own limits
    reason = engine.batch_limit_before_load(cell.batch_size, cell.length, n_out, spec, options, dtype)
    return None if reason is None else (EXCEEDS_ENGINE_LIMIT, reason)


def batch_limit_of(cell, engine, n_out: int, dtype: str, spec, device) -> tuple[str, str] | None:
    """(status, reason) where the loaded engine cannot run the cell's batch, checked before its idle baseline and
    warm-up: the device's memory (`device.memory_total_bytes`, where the meter reads it) and the engine's own limit
    (Engine.batch_limit, e.g. vLLM's KV cache)."""
    if cell.batch_size == 1:
        return None
    memory = getattr(device, "memory_total_bytes", None)
    if memory and spec.tp == 1:
        weights = parameter_counts(spec.arch)["total"] * DTYPE_BYTES[dtype]
        kv = kv_cache_bytes(spec.arch, cell.batch_size * (cell.length + n_out), dtype)
        if weights + kv > memory:
            return OOM, (
                f"predicted: weights {weights / 2**30:.1f} GiB + KV cache of B * (L + G) = "
                f"{cell.batch_size * (cell.length + n_out)} tokens {kv / 2**30:.1f} GiB exceed the "
                f"device's {memory / 2**30:.1f} GiB"
            )
    reason = engine.batch_limit(cell.batch_size, cell.length, n_out)
    return None if reason is None else (EXCEEDS_ENGINE_LIMIT, reason)
