"""vLLM's offline engine (`vllm.LLM`), built once per job, prefix caching off unless the config asks for it.

The engine core runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set before vllm is imported): its errors
show here directly instead of as a dead worker, and its timestamps are taken on this process's clocks.

The vLLM-specific calls are kept thin; what can be checked without vLLM (the LLM keyword arguments built from the
options, the first-token time taken from a request's metrics, the output check) are plain functions below.
"""

from __future__ import annotations

import os
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.models import ModelSpec

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

IN_PROCESS_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}

# How far a metrics timestamp may lie outside [start, end] and still be trusted (then clamped): the clock offsets
# are read a few microseconds apart, a genuine first token cannot lie outside the call at all.
CLOCK_TOLERANCE_S = 2e-3

# Messages vLLM and torch use when device memory does not suffice (at start-up: the KV cache for max_model_len does
# not fit; while running: an allocation failed).
_OOM_PATTERNS = re.compile(
    r"out of memory|available KV cache memory|no available memory for the cache blocks|insufficient memory",
    re.IGNORECASE,
)


def llm_kwargs(spec: ModelSpec, dtype: str, options: dict) -> dict:
    """Keyword arguments of vllm.LLM for one model and the config's engine_options.vllm.

    Random weights (`load_format="dummy"`) from the folder that holds the model's config.json unless the model
    names real weights. Prompts are token ids, so no tokenizer is loaded. A whole prompt is one prefill chunk
    (max_num_batched_tokens = max_model_len), as in HF's single forward pass, unless the options ask for vLLM's
    chunked prefill (its default chunk size) or name max_num_batched_tokens. `options` has every key
    (settings.EngineOptions.of); those not set (None) are not passed, so vLLM's own defaults apply and the recorded
    settings say so.
    """
    max_len = spec.max_positions
    if not max_len:
        raise ValueError(f"model '{spec.name}': its config has no max_position_embeddings; vLLM needs max_model_len")
    kwargs = {
        "model": spec.weights or str(spec.config_path.parent),
        "skip_tokenizer_init": True,
        "dtype": dtype,
        "enable_prefix_caching": bool(options["enable_prefix_caching"]),
        "max_model_len": int(max_len),
        "tensor_parallel_size": int(spec.tp),
        # Request metrics (the first token's time) exist only with stats on; their cost is host bookkeeping per step.
        "disable_log_stats": False,
    }
    if options["max_num_batched_tokens"] is not None:
        kwargs["max_num_batched_tokens"] = int(options["max_num_batched_tokens"])
    elif options["chunked_prefill"]:
        kwargs["enable_chunked_prefill"] = True  # and vLLM's default chunk size, recorded from its config
    else:
        kwargs["max_num_batched_tokens"] = int(max_len)
    if options["max_num_seqs"] is not None:
        kwargs["max_num_seqs"] = int(options["max_num_seqs"])
    if not spec.weights:
        kwargs["load_format"] = "dummy"
    if options["enforce_eager"] is not None:
        kwargs["enforce_eager"] = bool(options["enforce_eager"])
    if options["compilation_level"] is not None:
        # An int is what LLM() accepts across versions (it became CompilationConfig.mode, formerly .level).
        kwargs["compilation_config"] = int(options["compilation_level"])
    if options["gpu_memory_utilization"] is not None:
        kwargs["gpu_memory_utilization"] = float(options["gpu_memory_utilization"])
    return kwargs


def sampling_kwargs(max_new_tokens: int) -> dict:
    """Greedy, EOS ignored and no detokenisation, so a request always returns exactly max_new_tokens token ids."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return {"max_tokens": int(max_new_tokens), "temperature": 0.0, "ignore_eos": True, "detokenize": False}


@dataclass(frozen=True)
class ClockOffsets:
    """perf_counter() minus another clock, so that a timestamp t on that clock is t + offset on perf_counter."""

    monotonic: float
    wall: float


def attention_backend(llm) -> str:
    """The attention backend of the loaded model's attention layers, e.g. 'flash_attn (FlashAttention 3)' or
    'cpu_attn', read in the worker (LLM.apply_model; in this process, as the engine core runs here); '' where this
    vLLM does not say. A record for the cell, never a reason to fail the load."""

    def backends(model) -> list[str]:
        names = set()
        for module in model.modules():
            backend = getattr(module, "attn_backend", None)
            if backend is None:
                continue
            name = backend.get_name() if hasattr(backend, "get_name") else getattr(backend, "__name__", str(backend))
            version = getattr(getattr(module, "impl", None), "vllm_flash_attn_version", None)
            names.add(str(name).lower() + (f" (FlashAttention {version})" if version else ""))
        return sorted(names)

    try:
        found = sorted({name for worker in llm.apply_model(backends) for name in worker})
    except Exception:  # noqa: BLE001 - an older or newer vLLM without these attributes: nothing recorded
        return ""
    return "+".join(found)


def measure_clock_offsets() -> ClockOffsets:
    """Offsets to perf_counter of time.monotonic (vLLM V1's engine-core timestamps) and time.time (its wall-clock
    timestamps). Each is read between two perf_counter reads and taken at their midpoint."""

    def offset(clock) -> float:
        a = time.perf_counter()
        t = clock()
        b = time.perf_counter()
        return (a + b) / 2 - t

    return ClockOffsets(monotonic=offset(time.monotonic), wall=offset(time.time))


def first_token_time(metrics, offsets: ClockOffsets, start: float, end: float) -> tuple[float | None, str]:
    """The first token's time on perf_counter from a RequestOutput's metrics, and which field gave it.

    vLLM V1 (RequestStateStats): first_token_ts on the engine core's time.monotonic; arrival_time (wall clock) +
    first_token_latency as a second choice. vLLM V0 (RequestMetrics): first_token_time on the wall clock.
    A value outside [start, end] beyond CLOCK_TOLERANCE_S is not trusted: (None, reason) is returned and the caller
    falls back to the end of the call.
    """
    if metrics is None:
        return None, "no metrics"
    candidates = []
    ts = getattr(metrics, "first_token_ts", None)
    if ts:
        candidates.append((ts + offsets.monotonic, "metrics.first_token_ts"))
    arrival, latency = getattr(metrics, "arrival_time", None), getattr(metrics, "first_token_latency", None)
    if arrival and latency:
        candidates.append((arrival + latency + offsets.wall, "metrics.arrival_time+first_token_latency"))
    v0 = getattr(metrics, "first_token_time", None)
    if v0:
        candidates.append((v0 + offsets.wall, "metrics.first_token_time"))
    if not candidates:
        return None, "metrics without a first-token time"
    for t, source in candidates:
        if start - CLOCK_TOLERANCE_S <= t <= end + CLOCK_TOLERANCE_S:
            return min(max(t, start), end), source
    return None, f"{candidates[0][1]} outside the call by {_outside(candidates[0][0], start, end):.3g} s"


def _outside(t: float, start: float, end: float) -> float:
    return start - t if t < start else t - end


def check_request_output(outputs, n_in: int, n_out: int, n_requests: int = 1) -> tuple[int, int]:
    """(tokens produced, prompt tokens served from the prefix cache), summed over the requests of one run; raises
    unless vLLM returned n_requests requests, each with n_in prompt tokens and exactly n_out output tokens."""
    if len(outputs) != n_requests:
        raise RuntimeError(f"vLLM returned {len(outputs)} request outputs for {n_requests} prompts")
    produced_total = cached_total = 0
    for out in outputs:
        prompt_ids = getattr(out, "prompt_token_ids", None)
        if prompt_ids is not None and len(prompt_ids) != n_in:
            raise RuntimeError(f"vLLM saw {len(prompt_ids)} prompt tokens, the cell sent {n_in}")
        if len(out.outputs) != 1:
            raise RuntimeError(f"vLLM returned {len(out.outputs)} completions, expected 1")
        produced = len(out.outputs[0].token_ids)
        if produced != n_out:
            raise RuntimeError(f"vLLM returned {produced} tokens, expected exactly {n_out} (ignore_eos was set)")
        produced_total += produced
        cached_total += int(getattr(out, "num_cached_tokens", 0) or 0)
    return produced_total, cached_total


# Leading tokens of a prompt replaced by a per-request number (distinct_prompts): in base (vocab - FIRST_NONCE_ID),
# three digits give > 10^6 distinct requests even for a 256-id vocabulary, 2 * 10^15 for Llama's.
NONCE_TOKENS = 3
FIRST_NONCE_ID = 3  # ids 0-2 are often special (pad, bos, eos)


def distinct_prompt(ids: np.ndarray, number: int, vocab_size: int) -> np.ndarray:
    """`ids` with its first NONCE_TOKENS tokens replaced by the digits of `number`: two requests of different
    numbers differ in their first block, so no prefix cache (which keys blocks on everything before them) can serve
    one from the other, and the prompt keeps its length."""
    base = vocab_size - FIRST_NONCE_ID
    if number >= base**NONCE_TOKENS:
        raise ValueError(f"request number {number} has no distinct prefix in a vocabulary of {vocab_size}")
    out = np.array(ids, dtype=np.int64, copy=True)
    for k in range(min(NONCE_TOKENS, out.size)):
        out[k] = FIRST_NONCE_ID + (number // base**k) % base
    return out


def is_out_of_memory(exc: BaseException) -> bool:
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return bool(_OOM_PATTERNS.search(str(exc)))


class VllmEngine(Engine):
    """vllm: offline vllm.LLM; a run is one `generate` call of one request, or of B requests for a batch (the
    batch's first token is its last request's first token: the batch has been prefilled)."""

    name = "vllm"

    def __init__(self, spec: ModelSpec, dtype: str, options: dict):
        self.spec = spec
        self.dtype = dtype
        self.options = dict(options)
        self.kwargs = llm_kwargs(spec, dtype, self.options)
        self.llm = None
        self.offsets: ClockOffsets | None = None
        self.first_token_source = "not probed"
        self.cached_tokens: list[int] = []  # per run: prompt tokens vLLM took from its prefix cache
        self._params: dict[int, object] = {}
        self._warned_cache = False
        self._requests = 0  # requests sent so far: the number distinct_prompts writes into each
        self._phases_run: set[str] = set()  # since the last reset: what attention_kernels reports
        self.attention_backend = ""  # read at load (attention_backend); "" where vLLM does not say

    @classmethod
    def create(cls, name: str, spec: ModelSpec, settings: Settings, options: dict) -> VllmEngine:
        return cls(spec, settings.dtype, options)

    def load(self) -> None:
        for key, value in IN_PROCESS_ENV.items():
            os.environ.setdefault(key, value)
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            print(
                "ctxenergy: VLLM_ENABLE_V1_MULTIPROCESSING is set to something other than 0 in the environment: "
                "the engine core runs in another process",
                file=sys.stderr,
            )
        from vllm import LLM

        try:
            self.llm = LLM(**self.kwargs)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
            raise
        self.offsets = measure_clock_offsets()
        self._probe_first_token_source()
        self.attention_backend = attention_backend(self.llm)

    def _probe_first_token_source(self) -> None:
        """One short request (outside every window) to learn whether request metrics give the first token's time;
        settings() reports the answer, so the recorded cell says how its first-token times were taken."""
        ids = np.full(16, min(self.spec.vocab_size - 1, 1000), dtype=np.int64)
        start = time.perf_counter()
        outputs = self.llm.generate([{"prompt_token_ids": ids.tolist()}], self._sampling(2), use_tqdm=False)
        end = time.perf_counter()
        check_request_output(outputs, ids.size, 2)
        first, source = first_token_time(getattr(outputs[0], "metrics", None), self.offsets, start, end)
        self.first_token_source = source if first is not None else f"end of call ({source})"

    def _sampling(self, n: int):
        if n not in self._params:
            from vllm import SamplingParams

            self._params[n] = SamplingParams(**sampling_kwargs(n))
        return self._params[n]

    def run(self, ids: np.ndarray, max_new_tokens: int) -> RunTiming:
        rows = np.atleast_2d(ids)
        if self.options["distinct_prompts"]:  # a prompt never seen by this engine, so the cache serves nothing
            rows = [distinct_prompt(r, self._requests + i, self.spec.vocab_size) for i, r in enumerate(rows)]
        self._requests += len(rows)
        self._phases_run.update(("prefill", "decode") if max_new_tokens > 1 else ("prefill",))
        prompts = [{"prompt_token_ids": r.tolist()} for r in rows]  # built before the clock starts
        n_in = int(rows[0].size)
        params = self._sampling(max_new_tokens)
        start = time.perf_counter()
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
            raise
        end = time.perf_counter()  # generate() returns once the tokens are on the host: no extra synchronize
        produced, cached = check_request_output(outputs, n_in, max_new_tokens, len(prompts))
        self.cached_tokens.append(cached)
        if cached and not self._warned_cache:
            self._warned_cache = True
            print(
                f"ctxenergy: vLLM took {cached} of {n_in * len(prompts)} prompt tokens from its prefix cache: the "
                "prefill was not fully computed (enable_prefix_caching is on)",
                file=sys.stderr,
            )
        firsts = [first_token_time(getattr(o, "metrics", None), self.offsets, start, end)[0] for o in outputs]
        # Without metrics the end of the call is the first token's time: exact for max_tokens=1.
        first = end if any(f is None for f in firsts) else max(firsts)
        return RunTiming(start, first, end, n_in * len(prompts), produced)

    @classmethod
    def batch_limit_before_load(
        cls, batch_size: int, length: int, n_out: int, spec, options: dict, dtype: str
    ) -> str | None:
        """Without chunked prefill a batch beyond max_num_batched_tokens would not be one prefill step; beyond
        max_num_seqs it would not be one batch."""
        kwargs = llm_kwargs(spec, dtype, options)
        step, tokens = kwargs.get("max_num_batched_tokens"), batch_size * length
        if step is not None and not options["chunked_prefill"] and tokens > step:
            return (
                f"B * L = {batch_size} * {length} = {tokens} tokens exceed max_num_batched_tokens = "
                f"{step}: the batch would not be one prefill step (use a chunked_prefill "
                "variant to measure it chunked)"
            )
        if kwargs.get("max_num_seqs") is not None and batch_size > kwargs["max_num_seqs"]:
            return f"B = {batch_size} exceeds max_num_seqs = {kwargs['max_num_seqs']}"
        return None

    def batch_limit(self, batch_size: int, length: int, n_out: int) -> str | None:
        """Beyond the loaded engine's KV cache, vLLM would preempt and recompute sequences: not one batch."""
        cache = self._scheduler_settings()
        capacity = None if cache["num_gpu_blocks"] is None else cache["num_gpu_blocks"] * cache["block_size"]
        needed = batch_size * (length + n_out)
        if capacity is not None and needed > capacity:
            return (
                f"B * (L + G) = {needed} tokens exceed vLLM's KV cache of {capacity} tokens "
                f"({cache['num_gpu_blocks']} blocks of {cache['block_size']}): it would preempt sequences"
            )
        if cache["max_num_seqs"] is not None and batch_size > cache["max_num_seqs"]:
            return f"B = {batch_size} exceeds vLLM's max_num_seqs = {cache['max_num_seqs']}"
        return None

    def _scheduler_settings(self) -> dict:
        """What the loaded vLLM chose for the batch: step size (the prefill chunk), sequences per step, KV cache."""
        config = getattr(getattr(self.llm, "llm_engine", None), "vllm_config", None)
        sched, cache = getattr(config, "scheduler_config", None), getattr(config, "cache_config", None)
        return {
            "max_num_batched_tokens": getattr(
                sched, "max_num_batched_tokens", self.kwargs.get("max_num_batched_tokens")
            ),
            "max_num_seqs": getattr(sched, "max_num_seqs", self.kwargs.get("max_num_seqs")),
            "chunked_prefill": getattr(sched, "enable_chunked_prefill", self.kwargs.get("enable_chunked_prefill")),
            "num_gpu_blocks": getattr(cache, "num_gpu_blocks", None),
            "block_size": getattr(cache, "block_size", None),
        }

    def run_notes(self) -> dict:
        """Prompt tokens vLLM served from its prefix cache in this cell's runs (warm-up included): 0 unless a prompt
        repeated one it had seen, which distinct_prompts rules out."""
        return {"prefix_cached_tokens": int(sum(self.cached_tokens)), "requests_sent": self._requests}

    def versions(self) -> dict[str, str]:
        import torch
        import vllm

        return {"vllm": vllm.__version__, "torch": torch.__version__}

    def settings(self) -> dict:
        k = self.kwargs
        settings = {
            "enable_prefix_caching": k["enable_prefix_caching"],
            "enforce_eager": bool(self.options["enforce_eager"]),
            "compilation_level": k.get("compilation_config"),
            "tensor_parallel_size": k["tensor_parallel_size"],
            "max_model_len": k["max_model_len"],
            # not set: off (the schema gives these no default, so that configs without them keep their hash)
            "chunked_prefill_option": bool(self.options["chunked_prefill"]),
            "distinct_prompts": bool(self.options["distinct_prompts"]),
            "gpu_memory_utilization": k.get("gpu_memory_utilization"),
            "load_format": k.get("load_format", "auto"),  # not passed for real weights: vLLM's default
            "in_process": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0",
            "first_token_source": self.first_token_source,
            "warmup_same_prompt": bool(self.options["warmup_same_prompt"]),
        }
        settings.update(self._resolved_compilation())
        settings.update({k: v for k, v in self._scheduler_settings().items() if k != "chunked_prefill"})
        settings["enable_chunked_prefill"] = self._scheduler_settings()["chunked_prefill"]
        return settings

    def _resolved_compilation(self) -> dict:
        """What vLLM actually chose (compilation mode, CUDA-graph mode); None where this version does not say."""
        cc = getattr(getattr(getattr(self.llm, "llm_engine", None), "vllm_config", None), "compilation_config", None)
        mode = getattr(cc, "mode", getattr(cc, "level", None))
        graphs = getattr(cc, "cudagraph_mode", None)
        graphs_name = None if graphs is None else str(getattr(graphs, "name", graphs))
        graphs_on = None if graphs_name is None else graphs_name.upper() != "NONE"
        if self.kwargs.get("enforce_eager"):
            graphs_on = False  # enforce_eager disables CUDA graphs whatever the mode says
        return {
            "compilation_mode": None if mode is None else str(getattr(mode, "name", mode)),
            "cudagraph_mode": graphs_name,
            "cuda_graphs": graphs_on,
        }

    def reset(self) -> None:
        # A cell on a reused engine must not find the previous cell's prompt in the prefix cache (the prompts of
        # all lengths share their beginning); with caching off there is nothing to drop.
        if self.llm is not None and self.kwargs["enable_prefix_caching"]:
            self.llm.reset_prefix_cache()
        self.cached_tokens.clear()
        self._phases_run.clear()

    def attention_kernels(self) -> dict[str, str]:
        """vLLM's attention backend (one for prefill and decode, chosen at load) for the phases this cell ran."""
        return dict.fromkeys(sorted(self._phases_run), self.attention_backend) if self.attention_backend else {}

    def close(self) -> None:
        if self.llm is None:
            return
        self.llm = None
        import gc

        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # noqa: BLE001 - releasing memory at exit is best effort
            pass
