"""Hugging Face transformers engines: eager attention, PyTorch SDPA, and transformers' own PagedAttention; and the
models' shared random weights, which transformers initialises (random_weights: shared)."""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.engines.sdpa_kernels import KernelNotes, kernel_order
from ctxenergy.errors import ConfigError
from ctxenergy.models import ModelSpec
from ctxenergy.weights import MARKER, SHARED_SEED, apply_uniform, shared_weights_dir

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

ATTENTION = {"hf-eager": "eager", "hf-sdpa": "sdpa", "hf-paged": "paged|sdpa"}


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def build_hf_model(spec: ModelSpec, attn_implementation: str, dtype: str, device: str, timings: dict | None = None):
    """Random weights from the shipped architecture config (built on the device directly; transformers' normal init,
    or vLLM's uniform one when the model asks for it), or weights from a folder (real or shared random ones).

    `timings` receives where the load's time went (seconds): the engine load is the largest cost of a cell job.
    """
    t0 = time.perf_counter()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    t1 = time.perf_counter()
    torch_dtype = _torch_dtype(dtype)
    if spec.weights:
        # Loaded on the host, then moved: placing it with device_map (or a torch.device context) needs accelerate,
        # which the engines do not otherwise use.
        model = AutoModelForCausalLM.from_pretrained(
            spec.weights, dtype=torch_dtype, attn_implementation=attn_implementation, local_files_only=True
        ).to(device)
        t2 = time.perf_counter()
    else:
        cfg = AutoConfig.from_pretrained(str(spec.config_path.parent), local_files_only=True)
        t2 = time.perf_counter()
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch_dtype, attn_implementation=attn_implementation)
        if spec.uniform_init:
            apply_uniform(model)
    if device == "cuda":
        torch.cuda.synchronize()  # the random initialisation runs asynchronously on the GPU
    t3 = time.perf_counter()
    if timings is not None:
        timings.update(import_s=t1 - t0, config_s=t2 - t1, build_s=t3 - t2)
    model.eval()
    # Greedy and EOS-free, so that a generate run always produces exactly G tokens.
    gc = model.generation_config
    gc.do_sample = False
    gc.temperature = None
    gc.top_p = None
    gc.top_k = None
    if gc.pad_token_id is None:
        gc.pad_token_id = 0
    return model


@contextlib.contextmanager
def mask_decisions_as_in_eager():
    """Let transformers decide the attention mask during a CUDA-graph capture as it does when running eagerly.

    transformers counts a stream capture as tracing and then builds the full L x L causal mask instead of passing
    is_causal to SDPA, which takes SDPA off its flash kernel: a captured 16k-token prefill ran 1.6x slower than the
    eager one on the H200 with transformers 5.17 (docs/measurement.md); 5.22 decides as in eager mode when there is
    no padding mask. Our prompts carry none, so the eager decision depends on shapes only and holds in the graph.
    """
    import transformers.masking_utils as masking
    from transformers.utils import import_utils

    original = masking.is_tracing

    def is_tracing_outside_capture(tensor=None):
        capturing = import_utils.is_cuda_stream_capturing
        import_utils.is_cuda_stream_capturing = lambda: False
        try:
            return original(tensor)
        finally:
            import_utils.is_cuda_stream_capturing = capturing

    masking.is_tracing = is_tracing_outside_capture
    try:
        yield
    finally:
        masking.is_tracing = original


@contextlib.contextmanager
def scalar_tensors_made_on_device():
    """Let torch.tensor(<Python scalar>, device=<CUDA device>) be recorded by a CUDA-graph capture.

    transformers' eager attention mask (masking_utils.eager_mask in 5.17) calls torch.tensor(0.0, device=...): a copy
    from pageable host memory, which a stream capture refuses ("Cannot copy between CPU and CUDA tensors during CUDA
    graph capture"), so on the H200 hf-eager's prefill capture failed and its short prefills ran without the graph.
    torch.full makes the same scalar (same value and dtype) with a fill kernel on the device, which the graph records.
    Anything else goes to torch.tensor unchanged.
    """
    import torch

    original = torch.tensor

    def tensor(data, *args, **kwargs):
        device = kwargs.get("device")
        if (
            not args
            and isinstance(data, bool | int | float)
            and set(kwargs) <= {"device", "dtype"}
            and device is not None
            and torch.device(device).type == "cuda"
        ):
            dtype = kwargs.get("dtype")
            return torch.full((), data, dtype=dtype if dtype is not None else original(data).dtype, device=device)
        return original(data, *args, **kwargs)

    torch.tensor = tensor
    try:
        yield
    finally:
        torch.tensor = original


class _FirstTokenClock:
    """A generate() streamer that only notes when the first new token reaches the host."""

    def __init__(self):
        self.calls = 0
        self.first_token: float | None = None

    def put(self, value):
        self.calls += 1
        if self.calls == 2 and self.first_token is None:  # call 1 is the prompt, call 2 the first new token
            self.first_token = time.perf_counter()

    def end(self):
        pass


class HFEngine(Engine):
    """hf-eager and hf-sdpa: one forward pass for prefill, generate() for G tokens.

    A prefill of up to `prefill_cuda_graph_max_tokens` tokens replays a CUDA graph of that forward pass, captured at
    the cell's first (warm-up) run. Short HF prefills are otherwise bound by the host launching ~1,000 kernels one by
    one: on the H200 a 1k-token prefill ran 31.7 ms in some windows and 37 ms in others at lower power, because this
    host's CPU speed varied (docs/measurement.md). The graph runs the same kernels on the same shapes (see
    mask_decisions_as_in_eager), launched at once: the cell then measures the GPU's work, not the host's jitter.
    Each cell records whether it ran one.
    """

    def __init__(self, name: str, spec: ModelSpec, dtype: str, device: str, options: dict):
        """`options`: engine_options.hf, every key (settings.EngineOptions.of)."""
        self.name = name
        self.spec = spec
        self.dtype = dtype
        self.device = device
        self.model = None
        self.graph_max_tokens = int(options["prefill_cuda_graph_max_tokens"])
        self.graph_enabled = bool(options["prefill_cuda_graph"]) and device == "cuda"
        self._graph = None  # ((B, L), static input ids, graph, static logits)
        self.capture_failure = None  # why the capture failed, for every later cell of this engine
        self.graph_note = self._idle_note()
        self.kernels = KernelNotes()
        self.kernel_order = tuple(options["attention_kernel_order"] or ())  # not set: (), torch's own order
        self._ordered = contextlib.ExitStack()  # holds the order while the engine is loaded

    @classmethod
    def create(cls, name: str, spec: ModelSpec, settings: Settings, options: dict) -> HFEngine:
        return cls(name, spec, settings.dtype, settings.device, options)

    def load(self) -> None:
        if self.kernel_order:
            self._ordered.enter_context(kernel_order(self.kernel_order))
        self.load_timings: dict[str, float] = {}
        self.model = build_hf_model(self.spec, ATTENTION[self.name], self.dtype, self.device, self.load_timings)

    def synchronize(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def run(self, ids: np.ndarray, max_new_tokens: int) -> RunTiming:
        with self.kernels.noting_first_run():  # a cell's first run is its warm-up, never a measured window
            return self._run(ids, max_new_tokens)

    def attention_kernels(self) -> dict[str, str]:
        return self.kernels.as_record()

    def _run(self, ids: np.ndarray, max_new_tokens: int) -> RunTiming:
        import torch

        # A batch's rows have equal lengths: no padding, no attention mask beyond the causal one.
        input_ids = torch.as_tensor(np.atleast_2d(ids), dtype=torch.long, device=self.device)
        try:
            with torch.inference_mode():
                self.synchronize()
                start = time.perf_counter()
                if max_new_tokens == 1:
                    # Prefill: the full forward pass over L tokens (filling the KV cache, as generate would),
                    # logits only for the last position; the token exists once it is on the host.
                    graph = self._prefill_graph(input_ids)
                    if graph is not None:
                        _, static_ids, g, logits = graph
                        static_ids.copy_(input_ids)
                        self.synchronize()
                        start = time.perf_counter()
                        g.replay()
                    else:
                        logits = self.model(input_ids=input_ids, use_cache=True, logits_to_keep=1).logits
                    logits[:, -1].argmax(-1).tolist()
                    end = time.perf_counter()
                    return RunTiming(start, end, end, int(ids.size), int(input_ids.shape[0]))
                clock = _FirstTokenClock()
                out = self.model.generate(
                    input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=max_new_tokens,
                    do_sample=False,
                    streamer=clock,
                )
                end = time.perf_counter()
        except torch.OutOfMemoryError as exc:
            self._release()
            raise OutOfMemory(str(exc).splitlines()[0]) from None
        produced = int(out.shape[1] - input_ids.shape[1]) * int(input_ids.shape[0])
        return RunTiming(start, clock.first_token or end, end, int(ids.size), produced)

    def _prefill_graph(self, input_ids):
        """The captured prefill of this length (captured now if needed), or None where the eager call runs."""
        import torch

        shape = tuple(input_ids.shape)  # (B, L): a graph replays one shape
        if not self.graph_enabled or input_ids.numel() > self.graph_max_tokens:
            if self.graph_enabled:
                self.graph_note = f"not used above {self.graph_max_tokens} tokens"
            return None
        if self._graph is not None and self._graph[0] == shape:
            return self._graph
        self._graph = None
        self._release()
        static_ids = input_ids.clone()
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up iterations off the capture stream, as torch recommends
                for _ in range(2):
                    self.model(input_ids=static_ids, use_cache=True, logits_to_keep=1)
            torch.cuda.current_stream().wait_stream(side)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g), mask_decisions_as_in_eager(), scalar_tensors_made_on_device():
                out = self.model(input_ids=static_ids, use_cache=True, logits_to_keep=1)
            self.synchronize()
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - a model that cannot be captured runs eagerly, and says so
            self.graph_enabled = False
            self.capture_failure = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            self.graph_note = f"capture failed, ran eagerly: {self.capture_failure}"
            self._release()
            return None
        self._graph = (shape, static_ids, g, out.logits)
        self.graph_note = "used"
        return self._graph

    def run_notes(self) -> dict:
        return {"prefill_cuda_graph": self.graph_note}

    def _idle_note(self) -> str:
        if self.capture_failure:  # a plain "off" would read as configured off
            return f"off: an earlier capture on this engine failed ({self.capture_failure})"
        if self.device != "cuda":
            return "off (not a CUDA device)"
        return "no prefill-only run" if self.graph_enabled else "off"

    def reset(self) -> None:
        self._graph = None
        self.graph_note = self._idle_note()
        self.kernels = KernelNotes()
        self._release()

    def _release(self) -> None:
        import gc

        import torch

        gc.collect()
        if self.device == "cuda":
            torch.cuda.empty_cache()

    def versions(self) -> dict[str, str]:
        import torch
        import transformers

        versions = {"torch": torch.__version__, "transformers": transformers.__version__}
        if self.device == "cuda" and torch.backends.cudnn.is_available():  # whose attention kernel torch may pick
            versions["cudnn"] = str(torch.backends.cudnn.version())
        return versions

    def settings(self) -> dict:
        return {
            "attn_implementation": ATTENTION[self.name],
            "prefill_cuda_graph": self.graph_enabled,
            "prefill_cuda_graph_max_tokens": self.graph_max_tokens,
            **self._order_setting(),
        }

    def _order_setting(self) -> dict:
        """Only where set: cells under torch's own order keep the settings they were compared by before."""
        return {"attention_kernel_order": list(self.kernel_order)} if self.kernel_order else {}

    def close(self) -> None:
        self._graph = None
        self.model = None
        self._release()
        self._ordered.close()  # torch's own kernel order again


class HFPagedEngine(HFEngine):
    """hf-paged: transformers' continuous-batching manager with PagedAttention, started once per job.

    It runs under torch.no_grad(): its worker thread fails under inference_mode. Block sharing between
    requests (transformers' prefix reuse) is off, so a measured prompt never reuses the warm-up's KV blocks.
    The first token's time comes from the request's own per-token timestamps (perf_counter).

    The KV cache is sized for one request of the model's whole context (the protocol runs one request at a time):
    left to itself, transformers sizes it to ~90 % of free memory, which on a CPU host is ~90 % of RAM (20 GB on
    a 24 GB machine, and tens of seconds to set up). A prefill chunk (max_batch_tokens) is the whole context when
    it fits; 'paged|sdpa' keeps a static attention mask of max_batch_tokens x (cache + max_batch_tokens), so where
    transformers' own footprint check refuses that, the chunk is halved until it fits and settings() records it.
    """

    BLOCK_SIZE = 256  # transformers' default page size, in tokens
    MIN_BATCH_TOKENS = 256
    # It has no settings of its own: the manager runs its own forward passes, with its own CUDA graphs (settings()),
    # never HFEngine's prefill graph, under torch's own kernel order.
    NO_OPTIONS = MappingProxyType(
        {"prefill_cuda_graph": False, "prefill_cuda_graph_max_tokens": 0, "attention_kernel_order": None}
    )

    def __init__(self, name: str, spec: ModelSpec, dtype: str, device: str):
        super().__init__(name, spec, dtype, device, self.NO_OPTIONS)

    @classmethod
    def create(cls, name: str, spec: ModelSpec, settings: Settings, options: dict) -> HFPagedEngine:
        return cls(name, spec, settings.dtype, settings.device)

    @classmethod
    def batch_limit_before_load(
        cls, batch_size: int, length: int, n_out: int, spec, options: dict, dtype: str
    ) -> str | None:
        """Its cache holds one request of the model's whole context: a batch needing more KV blocks does not fit."""
        cache = paged_num_blocks((spec.max_positions or 131072) + 1, cls.BLOCK_SIZE)
        needed = batch_size * -(-(length + n_out) // cls.BLOCK_SIZE)
        if needed > cache:
            return (
                f"B = {batch_size} sequences of L + G = {length + n_out} tokens need {needed} KV "
                f"blocks, the hf-paged cache holds {cache} (one request of the model's "
                "whole context)"
            )
        return None

    def load(self) -> None:
        import torch

        super().load()
        max_len = self.spec.max_positions or 131072
        # +1: a prefill cell may use all max positions and still produce its one token.
        num_blocks = paged_num_blocks(max_len + 1, self.BLOCK_SIZE)
        batch_tokens = max_len
        with torch.no_grad():
            while True:
                manager = self._start_manager(num_blocks, batch_tokens)
                if manager is not None:
                    break
                if batch_tokens // 2 < self.MIN_BATCH_TOKENS:
                    raise OutOfMemory(
                        f"hf-paged: no prefill chunk of >= {self.MIN_BATCH_TOKENS} tokens fits beside "
                        f"a KV cache of {num_blocks} blocks"
                    )
                batch_tokens //= 2
        self.manager = manager
        self._counter = 0

    def _start_manager(self, num_blocks: int, batch_tokens: int):
        """A started manager whose cache and static tensors exist, or None when they do not fit in memory."""
        import torch
        from transformers import GenerationConfig
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        gen = GenerationConfig(max_new_tokens=1, do_sample=False, eos_token_id=-1, pad_token_id=0)
        cb = ContinuousBatchingConfig(
            allow_block_sharing=False, block_size=self.BLOCK_SIZE, num_blocks=num_blocks, max_batch_tokens=batch_tokens
        )
        manager = self.model.init_continuous_batching(generation_config=gen, continuous_batching_config=cb)
        try:
            # Builds the cache and static tensors here, in this thread and outside every window, instead of in the
            # worker at the first request; raises MemoryError when transformers' footprint check refuses them.
            manager.warmup()
        except (MemoryError, torch.OutOfMemoryError):
            manager.batch_processor = None
            if manager._original_attn_impl is not None:
                self.model.set_attn_implementation(manager._original_attn_impl)
            self._release()
            return None
        manager.start()
        return manager

    def _run(self, ids: np.ndarray, max_new_tokens: int) -> RunTiming:
        """One request, or a batch's B requests added together (the manager batches them); the batch's first token
        is its last request's first token."""
        import torch

        rows = [[int(i) for i in row] for row in np.atleast_2d(ids)]  # built before the clock starts
        request_ids = []
        for _ in rows:
            self._counter += 1
            request_ids.append(f"cell-{self._counter}")
        results = []
        with torch.no_grad():
            self.synchronize()
            start = time.perf_counter()
            for tokens, request_id in zip(rows, request_ids):
                self.manager.add_request(
                    tokens,
                    request_id=request_id,
                    max_new_tokens=max_new_tokens,
                    record_timestamps=True,
                    eos_token_id=-1,
                )
            for request_id in request_ids:
                result = None
                for result in self.manager.request_id_iter(request_id):
                    if result.is_finished():
                        break
                results.append(result)
                if result is None or result.error:
                    break
            end = time.perf_counter()
        for result in results:
            if result is None or result.error:
                fatal = getattr(self.manager.background_thread_status, "fatal_error", None)
                message = (result.error if result is not None else None) or (str(fatal) if fatal else None)
                message = message or "the continuous-batching worker stopped"
                if "out of memory" in message.lower():
                    raise OutOfMemory(message.splitlines()[0])
                raise RuntimeError(f"hf-paged request failed: {message}")
        first = max(r.timestamps[0] if r.timestamps else end for r in results)
        return RunTiming(start, first, end, int(ids.size), sum(len(r.generated_tokens) for r in results))

    def run_notes(self) -> dict:
        return {}  # the manager runs its own forward passes (and its own CUDA-graph setting, in settings())

    def settings(self) -> dict:
        cb = self.manager.continuous_batching_config
        graphs = cb.use_cuda_graph
        return {
            "attn_implementation": ATTENTION[self.name],
            "allow_block_sharing": cb.allow_block_sharing,
            "block_size": cb.block_size,
            "num_blocks": cb.num_blocks,
            "max_batch_tokens": cb.max_batch_tokens,
            "use_cuda_graph": list(graphs) if isinstance(graphs, tuple) else graphs,
            "use_async_batching": cb.use_async_batching,
            **self._order_setting(),
        }

    def close(self) -> None:
        manager = getattr(self, "manager", None)
        if manager is not None:
            manager.stop(block=True)
            self.manager = None
        super().close()


def paged_num_blocks(tokens: int, block_size: int) -> int:
    """KV-cache blocks for one request of `tokens` tokens, plus one spare."""
    return -(-tokens // block_size) + 1


def make_shared_weights(settings: Settings, model: str) -> Path:
    """Generate the model's shared random weights once (seeded transformers init on the config's device) and save
    them as safetensors beside a copy of its config.json; the marker file is written last."""
    import torch

    from ctxenergy.models import resolve_model

    spec = resolve_model(settings, model)
    if spec.random_weights != "shared":
        raise ConfigError(f"model '{model}' does not use random_weights: shared; nothing to generate")
    out = shared_weights_dir(settings, model)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    torch.manual_seed(SHARED_SEED)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(SHARED_SEED)
    hf = build_hf_model(spec.with_engine_init(), "sdpa", settings.dtype, settings.device)
    hf.save_pretrained(tmp, safe_serialization=True)
    out.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        path.replace(out / path.name)
    tmp.rmdir()
    info = {
        "model": model,
        "init": "transformers",
        "seed": SHARED_SEED,
        "dtype": settings.dtype,
        "device": settings.device,
        "torch": torch.__version__,
        "seconds": round(time.perf_counter() - t0, 1),
        "files": sorted(p.name for p in out.iterdir()),
    }
    (out / MARKER).write_text(json.dumps(info, indent=1))
    return out
