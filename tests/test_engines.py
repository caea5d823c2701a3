"""The engine contract on the CPU (hf-eager, hf-sdpa, hf-paged on a tiny random Llama), the plausibility guard
against a prefill served from a prefix cache, and the vLLM adapter's logic without vLLM."""

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest

import ctxenergy.measure as measure_mod
from ctxenergy.config import validate_schema
from ctxenergy.engines import vllm as vllm_mod
from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.grid import Cell
from ctxenergy.models import ModelSpec
from ctxenergy.paths import MODELS_DIR
from ctxenergy.prompts import save_ids
from ctxenergy.settings import EngineOptions, Settings
from ctxenergy.telemetry.base import DeviceInfo, EnergyMeter, IdleBaseline, WindowEnergy

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

G = 5
# The engines' options of a config that sets none (EngineOptions.of: every key, None where not set).
HF_OPTIONS = EngineOptions.schema_defaults().of("hf")
VLLM_OPTIONS = EngineOptions.schema_defaults().of("vllm")


def tiny_spec() -> ModelSpec:
    path = MODELS_DIR / "tiny-llama" / "config.json"
    return ModelSpec("tiny-llama", path, json.loads(path.read_text()), None, "auto")


def llama_spec(**kw) -> ModelSpec:
    path = MODELS_DIR / "llama-3.1-8b" / "config.json"
    return ModelSpec("llama-3.1-8b", path, json.loads(path.read_text()), kw.get("weights"), "auto", kw.get("tp", 1))


# ---------------------------------------------------------------- the contract, for the three transformers engines


@pytest.fixture(scope="module", params=["hf-eager", "hf-sdpa", "hf-paged"])
def hf_engine(request):
    from ctxenergy.engines.hf import HFEngine, HFPagedEngine

    if request.param == "hf-paged":
        engine = HFPagedEngine(request.param, tiny_spec(), "float32", "cpu")
    else:
        engine = HFEngine(request.param, tiny_spec(), "float32", "cpu", HF_OPTIONS)
    engine.load()
    yield engine
    engine.close()


@pytest.mark.parametrize("length", [7, 300])
def test_prefill_returns_one_token_with_ordered_timestamps(hf_engine, length):
    ids = np.arange(length, dtype=np.int64) % 500 + 3
    r = hf_engine.run(ids, 1)
    assert r.tokens_out == 1 and r.tokens_in == length
    assert r.start <= r.first_token <= r.end
    assert r.end - r.first_token < 0.5 * r.total_s + 0.05  # the one token is also the last: little comes after it


def test_generate_returns_exactly_g_tokens(hf_engine):
    ids = np.arange(64, dtype=np.int64) % 500 + 3
    r = hf_engine.run(ids, G)
    assert r.tokens_out == G and r.tokens_in == 64
    assert r.start < r.first_token < r.end  # G > 1 tokens: decoding happens after the first token
    assert r.prefill_s < r.total_s


def test_a_cell_records_the_attention_kernel_torch_chose_on_its_first_run_only(hf_engine):
    """torch's chooser is asked with each SDPA call's own arguments during the first run after a reset (the cell's
    warm-up); later runs (the measured windows) call SDPA unwrapped. Eager attention makes no SDPA call."""
    import torch.nn.functional as F

    original = F.scaled_dot_product_attention
    hf_engine.reset()
    ids = np.arange(64, dtype=np.int64) % 500 + 3
    hf_engine.run(ids, 4)
    kernels = hf_engine.attention_kernels()
    if hf_engine.name == "hf-eager":
        assert kernels == {}
    else:
        expected = {"prefill", "decode"} if hf_engine.name == "hf-sdpa" else {"prefill"}  # paged: see KernelNotes
        assert set(kernels) >= expected and kernels["prefill"] in ("flash_attention", "math"), kernels
        assert F.scaled_dot_product_attention is original  # unwrapped after the first run
    calls = []
    F.scaled_dot_product_attention = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        hf_engine.run(ids, 1)  # a second run: torch's own function, no chooser in between
    finally:
        F.scaled_dot_product_attention = original
    assert hf_engine.attention_kernels() == kernels
    assert (len(calls) > 0) == (hf_engine.name != "hf-eager")
    hf_engine.reset()
    assert hf_engine.attention_kernels() == {}


def test_an_attention_kernel_order_holds_while_the_engine_is_loaded_and_is_recorded():
    """engine_options.hf.attention_kernel_order: torch tries those kernels, in that order, and no others."""
    from ctxenergy.engines.hf import HFEngine

    assert torch._C._get_flash_sdp_enabled()
    engine = HFEngine("hf-sdpa", tiny_spec(), "float32", "cpu", {**HF_OPTIONS, "attention_kernel_order": ["math"]})
    engine.load()
    try:
        assert not torch._C._get_flash_sdp_enabled()  # not listed: off
        engine.run(np.arange(32, dtype=np.int64) % 500 + 3, 4)
        assert engine.attention_kernels() == {"decode": "math", "prefill": "math"}
        assert engine.settings()["attention_kernel_order"] == ["math"]
    finally:
        engine.close()
    assert torch._C._get_flash_sdp_enabled()  # torch's own order again
    plain = HFEngine("hf-sdpa", tiny_spec(), "float32", "cpu", HF_OPTIONS)
    assert "attention_kernel_order" not in plain.settings()  # unset: the settings cells were compared by before


def test_an_unknown_attention_kernel_is_one_line_naming_the_key():
    from ctxenergy.errors import ConfigError

    cfg = {"models": [{"name": "m"}], "engines": ["hf-sdpa"], "lengths": [256]}
    cfg["engine_options"] = {"hf": {"attention_kernel_order": ["flash"]}}
    with pytest.raises(ConfigError) as err:
        validate_schema(cfg)
    assert "attention_kernel_order" in str(err.value) and "\n" not in str(err.value)
    import yaml

    from ctxenergy.engines.sdpa_kernels import KERNELS
    from ctxenergy.paths import REPO_ROOT

    schema = yaml.safe_load((REPO_ROOT / "workflow/schemas/config.schema.yaml").read_text())
    order = schema["properties"]["engine_options"]["properties"]["hf"]["properties"]["attention_kernel_order"]
    assert tuple(order["items"]["enum"]) == KERNELS  # the names the engine maps onto torch's backends


def test_a_failing_kernel_choice_is_noted_and_the_attention_still_runs(monkeypatch):
    import torch.nn.functional as F

    from ctxenergy.engines.sdpa_kernels import KernelNotes

    def refuse(*args, **kwargs):
        raise RuntimeError("no chooser")

    monkeypatch.setattr(torch, "_fused_sdp_choice", refuse)
    notes = KernelNotes()
    q = torch.randn(1, 2, 1, 8)
    with notes.noting_first_run():
        out = F.scaled_dot_product_attention(q, q, q)
    assert out.shape == q.shape and notes.as_record() == {"decode": "unknown (RuntimeError)"}


def test_load_says_where_its_time_went(hf_engine):
    timings = hf_engine.load_timings
    assert set(timings) == {"import_s", "config_s", "build_s"}
    assert all(v >= 0 for v in timings.values()) and timings["build_s"] > 0


@pytest.mark.slow
def test_prefill_graph_is_recorded_off_on_a_cpu_and_a_failed_capture_runs_eagerly():
    from ctxenergy.engines.hf import HFEngine

    engine = HFEngine("hf-sdpa", tiny_spec(), "float32", "cpu", {**HF_OPTIONS, "prefill_cuda_graph": True})
    engine.load()
    try:
        ids = np.arange(32, dtype=np.int64) % 500 + 3
        assert engine.settings()["prefill_cuda_graph"] is False
        engine.run(ids, 1)
        assert engine.run_notes() == {"prefill_cuda_graph": "off (not a CUDA device)"}
        # Forced on where no CUDA exists, the capture fails: the cell says so and still gets its token.
        engine.graph_enabled = True
        r = engine.run(ids, 1)
        assert r.tokens_out == 1
        assert engine.run_notes()["prefill_cuda_graph"].startswith("capture failed, ran eagerly")
        assert engine.graph_enabled is False
        # The next cell on this engine says why it runs without the graph (on the GPU it once said just "off").
        engine.reset()
        engine.run(ids, 1)
        assert engine.run_notes()["prefill_cuda_graph"].startswith("off: an earlier capture on this engine failed")
    finally:
        engine.close()


def test_prefill_graph_is_skipped_above_its_length_limit():
    from ctxenergy.engines.hf import HFEngine

    engine = HFEngine("hf-sdpa", tiny_spec(), "float32", "cpu", {**HF_OPTIONS, "prefill_cuda_graph_max_tokens": 16})
    engine.load()
    try:
        engine.graph_enabled = True  # as on a GPU: the length limit is checked before any capture
        engine.run(np.arange(32, dtype=np.int64) % 500 + 3, 1)
        assert engine.run_notes() == {"prefill_cuda_graph": "not used above 16 tokens"}
    finally:
        engine.close()


@pytest.mark.slow
def test_paged_cache_is_one_request_long_and_never_shares_blocks():
    """Left to transformers, the KV cache takes ~90 % of free memory (of RAM on a CPU: 20 GB and a minute here)."""
    from ctxenergy.engines.hf import HFPagedEngine, paged_num_blocks

    spec = tiny_spec()
    engine = HFPagedEngine("hf-paged", spec, "float32", "cpu")
    engine.load()
    try:
        s = engine.settings()
        assert s["allow_block_sharing"] is False
        assert s["num_blocks"] == paged_num_blocks(spec.max_positions + 1, s["block_size"])
        assert s["num_blocks"] * s["block_size"] <= spec.max_positions + 2 * s["block_size"]
        assert s["max_batch_tokens"] == spec.max_positions  # the whole context fits in one prefill chunk here
        cache = engine.manager.batch_processor.cache
        assert cache.use_prefix_sharing is False
        ids = np.arange(600, dtype=np.int64) % 500 + 3
        for _ in range(2):  # the same prompt twice: the second must be recomputed, not found in the cache
            assert engine.run(ids, 1).tokens_out == 1
        assert getattr(cache, "_total_prefix_length", 0) == 0
    finally:
        engine.close()


@pytest.mark.slow
def test_paged_prefill_chunk_halves_until_transformers_accepts_the_footprint(monkeypatch):
    """On an H200 the static 'paged|sdpa' mask of a 131072-token chunk does not fit; the adapter halves the chunk."""
    from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager

    from ctxenergy.engines.hf import HFPagedEngine

    original = ContinuousBatchingManager.warmup
    tried = []

    def warmup(self):
        tried.append(self.continuous_batching_config.max_batch_tokens)
        if self.continuous_batching_config.max_batch_tokens > 512:
            raise MemoryError("Memory footprint is more than available memory")
        return original(self)

    monkeypatch.setattr(ContinuousBatchingManager, "warmup", warmup)
    engine = HFPagedEngine("hf-paged", tiny_spec(), "float32", "cpu")
    engine.load()
    try:
        assert tried == [4096, 2048, 1024, 512]
        assert engine.settings()["max_batch_tokens"] == 512
        r = engine.run(np.arange(1500, dtype=np.int64) % 500 + 3, 2)  # a prefill of three chunks, then one step
        assert r.tokens_out == 2 and r.tokens_in == 1500 and r.start <= r.first_token <= r.end
    finally:
        engine.close()


@pytest.mark.slow
def test_paged_gives_up_with_out_of_memory_when_no_chunk_fits(monkeypatch):
    from transformers.generation.continuous_batching.continuous_api import ContinuousBatchingManager

    from ctxenergy.engines.hf import HFPagedEngine

    def warmup(self):  # transformers' own check first, then a real allocation failure
        if self.continuous_batching_config.max_batch_tokens > 1024:
            raise MemoryError("Memory footprint is more than available memory")
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 25.00 GiB")

    monkeypatch.setattr(ContinuousBatchingManager, "warmup", warmup)
    engine = HFPagedEngine("hf-paged", tiny_spec(), "float32", "cpu")
    with pytest.raises(OutOfMemory):
        engine.load()
    engine.close()


# ---------------------------------------------------------------- the plausibility guard, through measure_cell

PHYSICAL_S = 8.1  # Llama-3.1-8B prefill of 114,688 tokens on an H200/H100 (H200 campaign)
CACHED_S = 0.076  # the same prompt served from vLLM's prefix cache (H200 campaign)


class PrefixCachingEngine(Engine):
    """A vLLM stand-in on a virtual clock: a prompt seen before is 'prefilled' in CACHED_S, a new one in PHYSICAL_S."""

    name = "vllm"

    def __init__(self, caching: bool):
        self.caching, self.seen, self.prompts, self.clock = caching, set(), [], time.perf_counter()

    def load(self):
        pass

    def run(self, ids, max_new_tokens):
        key = ids.tobytes()
        self.prompts.append(key)
        prefill = CACHED_S if self.caching and key in self.seen else PHYSICAL_S
        self.seen.add(key)
        start = self.clock
        self.clock = start + prefill + 0.007 * (max_new_tokens - 1)
        return RunTiming(start, start + prefill, self.clock, int(ids.size), max_new_tokens)


class FakeH200Meter(EnergyMeter):
    """A meter that reads 500 W while working on a device named like an H200 (whose peak the guard knows)."""

    method = "fake"
    counter_period_s = None

    def __init__(self):
        self.devices = [DeviceInfo(name="NVIDIA H200", uuid="GPU-fake", index=0, power_limit_w=700.0)]

    def measure_idle(self, seconds):
        return IdleBaseline(80.0, [80.0], seconds)

    def begin_window(self):
        return time.perf_counter()

    def end_window(self, work_start, work_end, idle):
        e = 500.0 * (work_end - work_start)
        return WindowEnergy(
            work_start, work_end, work_end - work_start, e, e, e - 80.0 * (work_end - work_start), [e], 0.0, self.method
        )


def guard_config(caching: bool, same_prompt: bool) -> dict:
    return validate_schema(
        {
            "device": "cpu",
            "models": [{"name": "llama-3.1-8b"}],
            "engines": ["vllm"],
            "lengths": [114688],
            "phases": ["prefill"],
            "measure": {"repeats": 3, "min_window_s": 1.0, "idle_s": 0.0, "cooldown_s": 0.0},
            "engine_options": {"vllm": {"enable_prefix_caching": caching, "warmup_same_prompt": same_prompt}},
        }
    )


@pytest.fixture
def guarded_cell(tmp_path, monkeypatch):
    L = 114688
    prompt, warmup = tmp_path / "p.npy", tmp_path / "w.npy"
    save_ids(np.arange(L) % 200 + 3, prompt)
    save_ids(np.arange(L) % 190 + 5, warmup)

    def measure(caching, same_prompt, engine_name="vllm"):
        engine = PrefixCachingEngine(caching)
        monkeypatch.setattr(measure_mod, "make_engine", lambda *a: engine)
        cell = Cell("llama-3.1-8b", engine_name, "prefill", L)
        settings = Settings.from_config(guard_config(caching, same_prompt))
        record = measure_mod.measure_cell(
            settings,
            cell,
            prompt,
            warmup,
            tmp_path / f"{caching}-{same_prompt}-{engine_name}.parquet",
            meter=FakeH200Meter(),
        )
        return record, engine

    return measure


@pytest.mark.slow
def test_a_prefill_served_from_the_prefix_cache_is_flagged_implausible(guarded_cell):
    record, engine = guarded_cell(caching=True, same_prompt=True)
    assert record.meta["warmup_prompt"] == "measured"
    assert len(set(engine.prompts)) == 1  # warm-up, timing pass and windows all ran the measured prompt
    assert record.status == "implausible" and "implausible" in record.flags
    assert record.meta["achieved_tflops"] > record.meta["peak_bf16_tflops"]
    assert "prefix cache" in record.status_reason


@pytest.mark.slow
def test_a_physically_possible_prefill_is_ok(guarded_cell):
    record, engine = guarded_cell(caching=False, same_prompt=False)
    assert record.meta["warmup_prompt"] == "different"
    assert engine.prompts[0] != engine.prompts[-1]
    assert record.status == "ok" and "implausible" not in record.flags
    assert 300 < record.meta["achieved_tflops"] < record.meta["peak_bf16_tflops"]


@pytest.mark.slow
def test_prefix_caching_is_caught_even_with_a_different_warmup_prompt(guarded_cell):
    """The windows repeat the measured prompt: from its second run on, a prefix cache serves it."""
    record, engine = guarded_cell(caching=True, same_prompt=False)
    assert record.meta["warmup_prompt"] == "different"
    assert record.status == "implausible"


@pytest.mark.slow
def test_warmup_same_prompt_applies_to_vllm_only(guarded_cell):
    record, engine = guarded_cell(caching=False, same_prompt=True, engine_name="hf-sdpa")
    assert record.meta["warmup_prompt"] == "different"
    assert engine.prompts[0] != engine.prompts[-1]
    assert record.status == "ok"


def test_the_demo_config_asks_for_the_mistake_and_the_grid_config_does_not():
    from ctxenergy.config import load_config
    from ctxenergy.paths import REPO_ROOT

    demo = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config/vllm-prefix-cache-demo.yaml"])
    assert demo["engines"] == ["vllm"] and demo["phases"] == ["prefill"]
    assert demo["engine_options"]["vllm"]["enable_prefix_caching"] is True
    assert demo["engine_options"]["vllm"]["warmup_same_prompt"] is True
    grid = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config/engines-h200.yaml"])
    assert grid["engines"] == ["hf-sdpa", "hf-paged", "vllm"]
    assert grid["engine_options"]["vllm"]["enable_prefix_caching"] is False
    assert grid["engine_options"]["vllm"]["warmup_same_prompt"] is False


# ---------------------------------------------------------------- the vLLM adapter's logic, without vLLM


def test_llm_kwargs_random_weights_one_chunk_and_no_prefix_caching_by_default():
    spec = llama_spec(tp=2)
    k = vllm_mod.llm_kwargs(spec, "bfloat16", VLLM_OPTIONS)
    assert k["model"] == str(spec.config_path.parent) and k["load_format"] == "dummy"
    assert k["skip_tokenizer_init"] is True and k["dtype"] == "bfloat16"
    assert k["enable_prefix_caching"] is False
    assert k["max_model_len"] == k["max_num_batched_tokens"] == 131072
    assert k["tensor_parallel_size"] == 2
    assert k["disable_log_stats"] is False  # request metrics carry the first token's time
    assert "compilation_config" not in k  # the schema's null: vLLM's own default applies
    unset = vllm_mod.llm_kwargs(
        spec, "bfloat16", {**VLLM_OPTIONS, "enforce_eager": None, "gpu_memory_utilization": None}
    )
    assert not {"enforce_eager", "gpu_memory_utilization"} & set(unset)  # passed only where set


def test_llm_kwargs_pass_what_the_options_set():
    opts = {
        **VLLM_OPTIONS,
        "enable_prefix_caching": True,
        "enforce_eager": True,
        "compilation_level": 3,
        "gpu_memory_utilization": 0.5,
        "warmup_same_prompt": True,
    }
    k = vllm_mod.llm_kwargs(llama_spec(weights="/models/llama"), "float16", opts)
    assert k["model"] == "/models/llama" and "load_format" not in k  # real weights are loaded, not random
    assert (k["enable_prefix_caching"], k["enforce_eager"], k["compilation_config"], k["gpu_memory_utilization"]) == (
        True,
        True,
        3,
        0.5,
    )
    assert "warmup_same_prompt" not in k  # a protocol option, not an engine one


def test_llm_kwargs_from_the_schema_defaults():
    cfg = validate_schema({"models": [{"name": "llama-3.1-8b"}], "engines": ["vllm"], "lengths": [1024]})
    k = vllm_mod.llm_kwargs(llama_spec(), "bfloat16", Settings.from_config(cfg).engine_options.of("vllm"))
    assert k["enable_prefix_caching"] is False and k["enforce_eager"] is False
    assert k["gpu_memory_utilization"] == 0.88 and "compilation_config" not in k


def test_llm_kwargs_need_max_positions():
    spec = llama_spec()
    arch = {k: v for k, v in spec.arch.items() if k != "max_position_embeddings"}
    with pytest.raises(ValueError, match="max_position_embeddings"):
        vllm_mod.llm_kwargs(ModelSpec(spec.name, spec.config_path, arch, None, "auto"), "bfloat16", VLLM_OPTIONS)


def test_sampling_is_greedy_eos_free_and_exact():
    assert vllm_mod.sampling_kwargs(128) == {
        "max_tokens": 128,
        "temperature": 0.0,
        "ignore_eos": True,
        "detokenize": False,
    }
    with pytest.raises(ValueError):
        vllm_mod.sampling_kwargs(0)


def test_first_token_from_engine_core_monotonic_timestamp():
    offsets = vllm_mod.measure_clock_offsets()
    start = time.perf_counter()
    mono = time.monotonic()
    time.sleep(0.01)
    end = time.perf_counter()
    t, source = vllm_mod.first_token_time(SimpleNamespace(first_token_ts=mono), offsets, start, end)
    assert source == "metrics.first_token_ts"
    assert start <= t <= end and t < end - 0.005  # converted to perf_counter, not replaced by the end of the call


def test_first_token_from_wall_clock_fields():
    offsets = vllm_mod.measure_clock_offsets()
    start = time.perf_counter()
    arrival = time.time()
    time.sleep(0.01)
    first_wall = time.time()
    time.sleep(0.01)
    end = time.perf_counter()
    v1 = SimpleNamespace(first_token_ts=0.0, arrival_time=arrival, first_token_latency=first_wall - arrival)
    t, source = vllm_mod.first_token_time(v1, offsets, start, end)
    assert source == "metrics.arrival_time+first_token_latency" and start + 0.005 < t < end - 0.005
    t0, source0 = vllm_mod.first_token_time(SimpleNamespace(first_token_time=first_wall), offsets, start, end)
    assert source0 == "metrics.first_token_time" and abs(t0 - t) < 1e-3


def test_first_token_outside_the_call_is_not_trusted():
    offsets = vllm_mod.ClockOffsets(monotonic=0.0, wall=0.0)
    t, source = vllm_mod.first_token_time(SimpleNamespace(first_token_ts=50.0), offsets, 10.0, 11.0)
    assert t is None and "outside the call" in source
    assert vllm_mod.first_token_time(None, offsets, 10.0, 11.0) == (None, "no metrics")
    t, _ = vllm_mod.first_token_time(SimpleNamespace(first_token_ts=11.001), offsets, 10.0, 11.0)
    assert t == 11.0  # within the tolerance: clamped into the call


def request_output(n_out, n_in=8, cached=0, metrics=None):
    return SimpleNamespace(
        prompt_token_ids=list(range(n_in)),
        outputs=[SimpleNamespace(token_ids=[1] * n_out)],
        num_cached_tokens=cached,
        metrics=metrics,
    )


def test_output_check_demands_exactly_n_tokens():
    assert vllm_mod.check_request_output([request_output(4, cached=16)], 8, 4) == (4, 16)
    with pytest.raises(RuntimeError, match="exactly 4"):
        vllm_mod.check_request_output([request_output(3)], 8, 4)
    with pytest.raises(RuntimeError, match="prompt tokens"):
        vllm_mod.check_request_output([request_output(4, n_in=7)], 8, 4)
    with pytest.raises(RuntimeError, match="2 request outputs"):
        vllm_mod.check_request_output([request_output(4), request_output(4)], 8, 4)


class OutOfMemoryError(RuntimeError):  # named like torch's, which the adapter must not need to import
    pass


def test_out_of_memory_is_recognised():
    assert vllm_mod.is_out_of_memory(OutOfMemoryError("CUDA error"))
    assert vllm_mod.is_out_of_memory(
        ValueError(
            "To serve at least one request with the models's max seq len (131072), (16.0 GiB KV cache is needed, which "
            "is larger than the available KV cache memory (9.2 GiB)."
        )
    )
    assert vllm_mod.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not vllm_mod.is_out_of_memory(RuntimeError("shape mismatch"))


class FakeLLM:
    def __init__(self, outputs=None, error=None):
        self.outputs, self.error, self.calls = outputs, error, []

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((prompts, params, use_tqdm))
        if self.error:
            raise self.error
        return self.outputs(prompts)


def fake_vllm_engine(llm, n):
    engine = vllm_mod.VllmEngine(tiny_spec(), "float32", VLLM_OPTIONS)
    engine.llm, engine.offsets, engine._params = llm, vllm_mod.measure_clock_offsets(), {n: f"params-{n}"}
    return engine


def test_vllm_attention_backend_is_read_from_the_model_and_never_fails_the_load():
    class Backend:
        @staticmethod
        def get_name():
            return "FLASH_ATTN"

    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_backend = Backend
            self.impl = SimpleNamespace(vllm_flash_attn_version=3)

    model = torch.nn.Sequential(Layer(), Layer(), torch.nn.Linear(2, 2))
    assert vllm_mod.attention_backend(SimpleNamespace(apply_model=lambda f: [f(model)])) == (
        "flash_attn (FlashAttention 3)"
    )

    def broken(f):
        raise AttributeError("this vLLM has no apply_model")

    assert vllm_mod.attention_backend(SimpleNamespace(apply_model=broken)) == ""


def test_vllm_run_sends_token_ids_and_times_the_first_token_from_metrics():
    def outputs(prompts):
        t = time.monotonic()
        time.sleep(0.005)
        return [request_output(3, n_in=len(prompts[0]["prompt_token_ids"]), metrics=SimpleNamespace(first_token_ts=t))]

    llm = FakeLLM(outputs)
    engine = fake_vllm_engine(llm, 3)
    r = engine.run(np.arange(10, dtype=np.int64) + 3, 3)
    prompts, params, use_tqdm = llm.calls[0]
    assert prompts == [{"prompt_token_ids": list(range(3, 13))}] and params == "params-3" and use_tqdm is False
    assert (r.tokens_in, r.tokens_out) == (10, 3) and r.start <= r.first_token < r.end - 0.004
    assert engine.cached_tokens == [0]


def test_vllm_run_without_metrics_ends_prefill_at_the_end_of_the_call_and_counts_cache_hits(capsys):
    llm = FakeLLM(lambda prompts: [request_output(1, n_in=10, cached=8)])
    engine = fake_vllm_engine(llm, 1)
    r = engine.run(np.arange(10, dtype=np.int64), 1)
    assert r.first_token == r.end and engine.cached_tokens == [8]
    assert "prefix cache" in capsys.readouterr().err  # a reused prefill is said out loud, not only flagged later


def test_vllm_run_maps_out_of_memory():
    engine = fake_vllm_engine(FakeLLM(error=OutOfMemoryError("CUDA out of memory")), 1)
    with pytest.raises(OutOfMemory):
        engine.run(np.arange(10, dtype=np.int64), 1)
    engine = fake_vllm_engine(FakeLLM(error=RuntimeError("shape mismatch")), 1)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        engine.run(np.arange(10, dtype=np.int64), 1)


def test_vllm_settings_record_what_changes_the_numbers():
    engine = vllm_mod.VllmEngine(
        llama_spec(), "bfloat16", {**VLLM_OPTIONS, "enable_prefix_caching": True, "enforce_eager": True}
    )
    engine.llm = SimpleNamespace()  # a vLLM that does not expose its resolved compilation settings
    s = engine.settings()
    assert s["enable_prefix_caching"] is True and s["enforce_eager"] is True and s["cuda_graphs"] is False
    assert s["compilation_mode"] is None and s["cudagraph_mode"] is None
    assert s["max_model_len"] == 131072 and s["tensor_parallel_size"] == 1 and s["load_format"] == "dummy"
    assert {"compilation_level", "compilation_mode", "cudagraph_mode", "first_token_source", "in_process"} <= set(s)


def test_a_graph_capture_keeps_sdpa_on_its_causal_path(monkeypatch):
    """transformers builds a full mask while it thinks a CUDA graph is being captured (no flash kernel then);
    during our capture it must take the eager decision: no mask, is_causal. Simulated on the CPU."""
    import torch.nn.functional as F
    from transformers.utils import import_utils

    from ctxenergy.engines.hf import HFEngine, mask_decisions_as_in_eager

    engine = HFEngine("hf-sdpa", tiny_spec(), "float32", "cpu", HF_OPTIONS)
    engine.load()
    seen = []
    real_sdpa = F.scaled_dot_product_attention

    def recording_sdpa(*args, **kwargs):
        seen.append((kwargs.get("attn_mask") is None, kwargs.get("is_causal")))
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording_sdpa)
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording_sdpa)
    ids = torch.arange(16).unsqueeze(0) + 3
    try:
        with torch.inference_mode():
            engine.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            eager = set(seen)
            seen.clear()
            monkeypatch.setattr(import_utils, "is_cuda_stream_capturing", lambda: True)
            engine.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            captured_plain = set(seen)
            seen.clear()
            with mask_decisions_as_in_eager():
                engine.model(input_ids=ids, use_cache=True, logits_to_keep=1)
            captured_ours = set(seen)
    finally:
        engine.close()
    assert eager == {(True, True)}
    # transformers 5.17 (the GPU image's) passes the full mask while capturing: what made captured 16k prefills 1.6x
    # slower; 5.22 no longer does when there is no padding mask. Either way ours takes the eager decision.
    assert captured_plain in ({(False, False)}, eager)
    assert captured_ours == eager
    assert import_utils.is_cuda_stream_capturing() is True  # restored (to the monkeypatched value)


def test_scalar_tensors_for_a_cuda_device_are_filled_on_the_device_during_capture(monkeypatch):
    """eager attention's mask makes torch.tensor(0.0, device=<cuda>), a host copy that a capture refuses: inside our
    capture context such a scalar comes from torch.full (a fill kernel), with torch.tensor's dtype. Simulated on the
    CPU: torch.full is recorded instead of run for the CUDA device."""
    from ctxenergy.engines.hf import HFEngine, scalar_tensors_made_on_device

    original = torch.tensor
    calls = []
    real_full = torch.full

    def recording_full(size, value, *, dtype=None, device=None):
        calls.append((size, value, dtype, device))
        return real_full(size, value, dtype=dtype)  # made on the CPU here: no CUDA on this host

    monkeypatch.setattr(torch, "full", recording_full)
    with scalar_tensors_made_on_device():
        assert torch.tensor(0.0, device="cuda:0", dtype=torch.bfloat16).dtype == torch.bfloat16
        torch.tensor(1, device="cuda")
        torch.tensor(True, device=torch.device("cuda", 0))
        torch.tensor(0.5, device="cuda")
        assert len(calls) == 4
        kept = [torch.tensor([1.0, 2.0], device="cpu"), torch.tensor(3.0), torch.tensor(3.0, device="cpu")]
    assert calls == [
        ((), 0.0, torch.bfloat16, "cuda:0"),
        ((), 1, torch.int64, "cuda"),
        ((), True, torch.bool, torch.device("cuda", 0)),
        ((), 0.5, torch.float32, "cuda"),
    ]
    assert len(calls) == 4 and [t.tolist() for t in kept] == [[1.0, 2.0], 3.0, 3.0]  # the rest: torch.tensor itself
    assert torch.tensor is original

    engine = HFEngine("hf-eager", tiny_spec(), "float32", "cpu", HF_OPTIONS)
    engine.load()
    ids = torch.arange(16).unsqueeze(0) + 3
    try:
        with torch.inference_mode():
            plain = engine.model(input_ids=ids, use_cache=True, logits_to_keep=1).logits
            with scalar_tensors_made_on_device():
                inside = engine.model(input_ids=ids, use_cache=True, logits_to_keep=1).logits
    finally:
        engine.close()
    assert torch.equal(plain, inside)  # the eager model itself is unchanged by the context
