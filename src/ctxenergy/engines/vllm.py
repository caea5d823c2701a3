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

import numpy as np

from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.models import ModelSpec

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
    (max_num_batched_tokens = max_model_len), as in HF's single forward pass. Settings left unset in the options
    are not passed, so vLLM's own defaults apply and the recorded settings say so.
    """
    max_len = spec.max_positions
    if not max_len:
        raise ValueError(f"model '{spec.name}': its config has no max_position_embeddings; vLLM needs max_model_len")
    kwargs = {
        "model": spec.weights or str(spec.config_path.parent),
        "skip_tokenizer_init": True,
        "dtype": dtype,
        "enable_prefix_caching": bool(options.get("enable_prefix_caching", False)),
        "max_model_len": int(max_len),
        "max_num_batched_tokens": int(max_len),
        "tensor_parallel_size": int(spec.tp),
        # Request metrics (the first token's time) exist only with stats on; their cost is host bookkeeping per step.
        "disable_log_stats": False,
    }
    if not spec.weights:
        kwargs["load_format"] = "dummy"
    if options.get("enforce_eager") is not None:
        kwargs["enforce_eager"] = bool(options["enforce_eager"])
    if options.get("compilation_level") is not None:
        # An int is what LLM() accepts across versions (it became CompilationConfig.mode, formerly .level).
        kwargs["compilation_config"] = int(options["compilation_level"])
    if options.get("gpu_memory_utilization") is not None:
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


def check_request_output(outputs, n_in: int, n_out: int) -> tuple[int, int]:
    """(tokens produced, prompt tokens served from the prefix cache) of one request; raises unless vLLM returned
    one request with n_in prompt tokens and exactly n_out output tokens."""
    if len(outputs) != 1:
        raise RuntimeError(f"vLLM returned {len(outputs)} request outputs for one prompt")
    out = outputs[0]
    prompt_ids = getattr(out, "prompt_token_ids", None)
    if prompt_ids is not None and len(prompt_ids) != n_in:
        raise RuntimeError(f"vLLM saw {len(prompt_ids)} prompt tokens, the cell sent {n_in}")
    if len(out.outputs) != 1:
        raise RuntimeError(f"vLLM returned {len(out.outputs)} completions, expected 1")
    produced = len(out.outputs[0].token_ids)
    if produced != n_out:
        raise RuntimeError(f"vLLM returned {produced} tokens, expected exactly {n_out} (ignore_eos was set)")
    return produced, int(getattr(out, "num_cached_tokens", 0) or 0)


def is_out_of_memory(exc: BaseException) -> bool:
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    return bool(_OOM_PATTERNS.search(str(exc)))


class VllmEngine(Engine):
    """vllm: offline vllm.LLM, one request per run, batch size 1."""

    name = "vllm"

    def __init__(self, spec: ModelSpec, dtype: str, options: dict):
        self.spec = spec
        self.dtype = dtype
        self.options = dict(options or {})
        self.kwargs = llm_kwargs(spec, dtype, self.options)
        self.llm = None
        self.offsets: ClockOffsets | None = None
        self.first_token_source = "not probed"
        self.cached_tokens: list[int] = []  # per run: prompt tokens vLLM took from its prefix cache
        self._params: dict[int, object] = {}
        self._warned_cache = False

    @classmethod
    def create(cls, name: str, spec: ModelSpec, config: dict, options: dict) -> VllmEngine:
        return cls(spec, config["dtype"], options)

    def load(self) -> None:
        for key, value in IN_PROCESS_ENV.items():
            os.environ.setdefault(key, value)
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") != "0":
            print("ctxenergy: VLLM_ENABLE_V1_MULTIPROCESSING is set to something other than 0 in the environment: "
                  "the engine core runs in another process", file=sys.stderr)
        from vllm import LLM

        try:
            self.llm = LLM(**self.kwargs)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
            raise
        self.offsets = measure_clock_offsets()
        self._probe_first_token_source()

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
        prompt = {"prompt_token_ids": ids.tolist()}  # built before the clock starts
        params = self._sampling(max_new_tokens)
        start = time.perf_counter()
        try:
            outputs = self.llm.generate([prompt], params, use_tqdm=False)
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemory(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
            raise
        end = time.perf_counter()  # generate() returns once the tokens are on the host: no extra synchronize
        produced, cached = check_request_output(outputs, int(ids.size), max_new_tokens)
        self.cached_tokens.append(cached)
        if cached and not self._warned_cache:
            self._warned_cache = True
            print(f"ctxenergy: vLLM took {cached} of {ids.size} prompt tokens from its prefix cache: the prefill was "
                  "not fully computed (enable_prefix_caching is on)", file=sys.stderr)
        first, _ = first_token_time(getattr(outputs[0], "metrics", None), self.offsets, start, end)
        # Without metrics the end of the call is the first token's time: exact for max_tokens=1.
        return RunTiming(start, end if first is None else first, end, int(ids.size), produced)

    def versions(self) -> dict[str, str]:
        import torch
        import vllm

        return {"vllm": vllm.__version__, "torch": torch.__version__}

    def settings(self) -> dict:
        k = self.kwargs
        settings = {
            "enable_prefix_caching": k["enable_prefix_caching"],
            "enforce_eager": k.get("enforce_eager", False),
            "compilation_level": k.get("compilation_config"),
            "tensor_parallel_size": k["tensor_parallel_size"],
            "max_model_len": k["max_model_len"],
            "max_num_batched_tokens": k["max_num_batched_tokens"],
            "gpu_memory_utilization": k.get("gpu_memory_utilization"),
            "load_format": k.get("load_format", "auto"),
            "in_process": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0",
            "first_token_source": self.first_token_source,
            "warmup_same_prompt": bool(self.options.get("warmup_same_prompt", False)),
        }
        settings.update(self._resolved_compilation())
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
        return {"compilation_mode": None if mode is None else str(getattr(mode, "name", mode)),
                "cudagraph_mode": graphs_name, "cuda_graphs": graphs_on}

    def reset(self) -> None:
        # A cell on a reused engine must not find the previous cell's prompt in the prefix cache (the prompts of
        # all lengths share their beginning); with caching off there is nothing to drop.
        if self.llm is not None and self.kwargs["enable_prefix_caching"]:
            self.llm.reset_prefix_cache()

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
