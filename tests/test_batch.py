"""The batch axis and engine variants (docs/serving.md): the grid, the prompts, the limits decided before GPU time,
a batched forward on the tiny CPU model, and the cell columns that per-token numbers are computed from."""

import time

import numpy as np
import pandas as pd
import pytest
from fake_nvml import FakeGpu, FakeNvml

import ctxenergy.measure as measure_mod
from ctxenergy.batching import EXCEEDS_ENGINE_LIMIT, OOM, batch_limit_of, limit_before_load
from ctxenergy.config import cell_settings_hash, check_semantics, load_config
from ctxenergy.engines.base import Engine, RunTiming
from ctxenergy.engines.vllm import NONCE_TOKENS, distinct_prompt, llm_kwargs
from ctxenergy.errors import ConfigError, CtxEnergyError
from ctxenergy.grid import Cell, expand_grid, prompt_path
from ctxenergy.models import ByteTokenizer, resolve_model
from ctxenergy.paths import REPO_ROOT
from ctxenergy.prompts import (
    MAX_SHARED_PREFIX,
    load_cell_prompts,
    make_batch_prompts,
    make_prompts,
    save_ids,
    shared_prefix_tokens,
)
from ctxenergy.settings import EngineOptions, Settings
from ctxenergy.tables import read_cell
from ctxenergy.telemetry.nvml_meter import NvmlMeter

SERVING = [REPO_ROOT / "config" / "serving.yaml"]


def config(*files):
    return load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / f for f in files])


# ---------------------------------------------------------------- the grid


def test_the_default_grid_has_no_batch_or_variant_segment():
    cells = expand_grid(Settings.from_config(config()))
    assert all(c.batch_size == 1 and c.variant == "default" for c in cells)
    assert all(c.cell_id.count("/") == 3 and c.path.name == f"L{c.length}.parquet" for c in cells)
    assert Cell("llama-3.1-8b", "hf-sdpa", "prefill", 1024, 1).cell_id == "llama-3.1-8b/hf-sdpa/prefill/L1024"


def test_batched_and_variant_cells_add_a_segment_each_and_their_ids_parse_back():
    b = Cell("m", "vllm", "prefill", 1024, 4)
    v = Cell("m", "vllm", "generate", 256, 16, "prefix-cache")
    assert b.cell_id == "m/vllm/prefill/B4/L1024"
    assert b.path.as_posix() == "results/cells/m/vllm/prefill/B4/L1024.parquet"
    assert v.cell_id == "m/vllm/generate/V-prefix-cache/B16/L256"
    assert Cell("m", "vllm", "prefill", 8, 1, "chunked").cell_id == "m/vllm/prefill/V-chunked/L8"
    for cell in (b, v, Cell("m", "hf-sdpa", "prefill", 8)):
        assert Cell.from_id(cell.cell_id) == cell
    for bad in ("m/vllm/prefill/B0/L8", "m/vllm/prefill/V-default/L8", "m/vllm/prefill/L8/B4", "m/vllm/B4/L8"):
        with pytest.raises(ValueError):
            Cell.from_id(bad)


def test_the_serving_grid_expands_batches_and_variants():
    cfg = config("serving.yaml")
    cells = expand_grid(Settings.from_config(cfg))
    ids = {c.cell_id for c in cells}
    assert len(ids) == len(cells) == len({c.path for c in cells})
    # hf-sdpa and vLLM's default: 4 B x 5 L x 2 phases; chunked the same; prefix caching at 3 lengths
    assert len(cells) == 40 + 40 + 40 + 24
    assert "llama-3.1-8b/hf-sdpa/prefill/L1024" in ids and "llama-3.1-8b/hf-sdpa/prefill/B64/L65536" in ids
    assert "llama-3.1-8b/vllm/generate/V-chunked/B16/L4096" in ids
    assert {c.length for c in cells if c.variant == "prefix-cache"} == {1024, 16384, 65536}


def test_serving_batch_1_cells_are_the_campaigns_by_settings_hash():
    """aggregate refuses cells of other settings (config.check_cell_settings): the serving grid's batch-1 cells
    must hash as the committed campaign's, so that they combine and compare."""
    serving, campaign = config("serving.yaml"), config("campaign.yaml")
    assert cell_settings_hash(serving, "llama-3.1-8b") == cell_settings_hash(campaign, "llama-3.1-8b")
    committed = pd.read_parquet(REPO_ROOT / "data/reference/nvidia-h200/campaign/cells.parquet")
    llama = committed[committed["model"] == "llama-3.1-8b"]
    assert set(llama["config_hash"]) == {cell_settings_hash(serving, "llama-3.1-8b")}
    campaign_ids = set(llama["cell_id"])
    batch_1 = {
        c.cell_id for c in expand_grid(Settings.from_config(serving)) if c.batch_size == 1 and c.variant == "default"
    }
    assert batch_1 <= campaign_ids  # the same ids: committed cells fill them


def test_the_attention_kernel_ab_measures_both_orders_and_keeps_the_campaigns_cells():
    """config/attention-kernels.yaml: hf-sdpa under torch's own kernel order (the campaign's cells, same hash) and
    with FlashAttention-2 first (a variant on its own engine load), prefill and generate at 3 lengths."""
    cfg = config("campaign.yaml", "attention-kernels.yaml")
    check_semantics(cfg, "attention-kernels", engines_needed=())
    settings = Settings.from_config(cfg)
    cells = expand_grid(settings)
    assert len(cells) == 12 and {c.variant for c in cells} == {"default", "flash"}
    assert cell_settings_hash(cfg, "llama-3.1-8b") == cell_settings_hash(config("campaign.yaml"), "llama-3.1-8b")
    from ctxenergy.engines.registry import ENGINES

    assert ENGINES["hf-sdpa"].options(settings, "flash")["attention_kernel_order"][0] == "flash_attention"
    assert ENGINES["hf-sdpa"].options(settings)["attention_kernel_order"] is None  # not set: torch's own order


def test_variants_are_checked_against_the_grid_and_the_engines_options():
    cfg = config("serving.yaml")
    check_semantics(cfg, "serving", engines_needed=())
    bad = config("serving.yaml")
    bad["engine_variants"]["vllm"]["prefix-cache"]["lengths"] = [1000]
    with pytest.raises(ConfigError, match=r"prefix-cache.lengths: \[1000\] not in the grid's lengths"):
        check_semantics(bad, "serving", engines_needed=())
    bad = config("serving.yaml")
    bad["engine_variants"]["vllm"]["chunked"]["options"] = {"chunk": 512}
    with pytest.raises(ConfigError, match="chunked.options: Additional properties are not allowed"):
        check_semantics(bad, "serving", engines_needed=())
    bad = config("serving.yaml")
    bad["engine_variants"]["hf-sdpa"] = {"x": {"options": {"enable_prefix_caching": True}}}
    with pytest.raises(ConfigError, match="hf-sdpa.x.options: Additional properties are not allowed"):
        check_semantics(bad, "serving", engines_needed=())
    # one engine of the serving grid at a time: the other's variants are not measured, and not an error
    one = config("serving.yaml")
    one["engines"] = ["hf-sdpa"]
    check_semantics(one, "serving", engines_needed=())
    assert {c.engine for c in expand_grid(Settings.from_config(one))} == {"hf-sdpa"}


# ---------------------------------------------------------------- prompts


@pytest.mark.parametrize("batch,length", [(4, 64), (64, 256), (16, 4096)])
def test_batch_prompts_are_distinct_sequences_of_exact_length(batch, length):
    measured, warmup = make_batch_prompts(ByteTokenizer(128256), length, batch)
    assert measured.shape == warmup.shape == (batch, length) and measured.dtype == np.int64
    # no two of the 2B sequences share more than a few leading tokens: no cache can serve one from another
    assert shared_prefix_tokens(np.concatenate([measured, warmup])) <= MAX_SHARED_PREFIX
    assert len({tuple(r[: MAX_SHARED_PREFIX + 1]) for r in np.concatenate([measured, warmup])}) == 2 * batch


def test_batch_1_prompt_files_are_unchanged():
    tok = ByteTokenizer(128256)
    measured, warmup = make_prompts(tok, 256)
    assert measured[0] == tok.encode((REPO_ROOT / "data/prompts/base.txt").read_text())[0]  # offset 0, as before
    assert prompt_path("m", 256).as_posix() == "results/prompts/m/L256.npy"
    assert prompt_path("m", 256, batch_size=4).as_posix() == "results/prompts/m/B4/L256.npy"


def test_batch_prompt_files_are_checked_for_shape_and_shared_prefixes(tmp_path):
    measured, warmup = make_batch_prompts(ByteTokenizer(4096), 64, 4)
    save_ids(measured, tmp_path / "p.npy")
    save_ids(warmup, tmp_path / "w.npy")
    a, b = load_cell_prompts(64, tmp_path / "p.npy", tmp_path / "w.npy", 4096, "tiny-llama", batch_size=4)
    assert a.shape == b.shape == (4, 64)
    with pytest.raises(CtxEnergyError, match="holds 4 sequences of 64 tokens, the cell needs 8"):
        load_cell_prompts(64, tmp_path / "p.npy", tmp_path / "w.npy", 4096, batch_size=8)
    shared = measured.copy()
    shared[1, :10] = shared[0, :10]
    save_ids(shared, tmp_path / "s.npy")
    with pytest.raises(CtxEnergyError, match=r"share their first 1[0-9] tokens"):
        load_cell_prompts(64, tmp_path / "s.npy", tmp_path / "w.npy", 4096, batch_size=4)


def test_distinct_prompts_give_every_request_its_own_first_block():
    ids = np.arange(32, dtype=np.int64) + 3
    seen = {tuple(distinct_prompt(ids, n, 4096)[:NONCE_TOKENS]) for n in range(5000)}
    assert len(seen) == 5000  # 5000 requests, 5000 different beginnings
    out = distinct_prompt(ids, 123456, 128256)
    assert out.size == ids.size and (out[NONCE_TOKENS:] == ids[NONCE_TOKENS:]).all()
    assert out.min() >= 0 and out.max() < 128256


# ---------------------------------------------------------------- limits before GPU time


def test_vllm_batches_beyond_one_prefill_step_are_refused_unless_chunked():
    cfg = config("serving.yaml")
    spec = resolve_model(Settings.from_config(cfg), "llama-3.1-8b")
    options = EngineOptions.schema_defaults().of("vllm")
    big = Cell("llama-3.1-8b", "vllm", "prefill", 65536, 4)
    status, reason = limit_before_load(big, spec, options, 1, "bfloat16")
    assert status == EXCEEDS_ENGINE_LIMIT and "262144 tokens exceed max_num_batched_tokens = 131072" in reason
    assert limit_before_load(big, spec, {**options, "chunked_prefill": True}, 1, "bfloat16") is None
    assert limit_before_load(Cell("llama-3.1-8b", "vllm", "prefill", 16384, 4), spec, options, 1, "bfloat16") is None
    status, reason = limit_before_load(
        Cell("llama-3.1-8b", "vllm", "prefill", 256, 64), spec, {**options, "max_num_seqs": 32}, 1, "bfloat16"
    )
    assert status == EXCEEDS_ENGINE_LIMIT and "max_num_seqs = 32" in reason
    # chunked prefill at vLLM's default: the chunk is vLLM's, not passed; max_num_seqs only where set
    kwargs = llm_kwargs(spec, "bfloat16", {**options, "chunked_prefill": True})
    assert "max_num_batched_tokens" not in kwargs and kwargs["enable_chunked_prefill"] is True
    assert llm_kwargs(spec, "bfloat16", options)["max_num_batched_tokens"] == 131072


def test_a_batch_beyond_the_devices_memory_is_recorded_not_run():
    cfg = config("serving.yaml")
    spec = resolve_model(Settings.from_config(cfg), "llama-3.1-8b")

    class Device:
        memory_total_bytes = 80 * 2**30

    class Loaded(Engine):
        def load(self): ...
        def run(self, ids, n): ...

    # 64 x 65536 tokens of KV cache: 2 x 32 layers x 8 heads x 128 x 2 bytes = 128 KiB a token, 512 GiB
    status, reason = batch_limit_of(
        Cell("llama-3.1-8b", "hf-sdpa", "prefill", 65536, 64), Loaded(), 1, "bfloat16", spec, Device()
    )
    assert status == OOM and "KV cache of B * (L + G) = 4194368 tokens 512.0 GiB" in reason
    assert (
        batch_limit_of(Cell("llama-3.1-8b", "hf-sdpa", "prefill", 1024, 16), Loaded(), 1, "bfloat16", spec, Device())
        is None
    )


# ---------------------------------------------------------------- measuring a batch


class BatchEngine(Engine):
    """Each run takes time in proportion to all its tokens and draws 300 W above idle on the fake GPU."""

    name = "hf-sdpa"

    def __init__(self, gpu):
        self.gpu, self.shapes = gpu, []

    def load(self):
        pass

    def run(self, ids, max_new_tokens):
        self.shapes.append(ids.shape)
        start = time.perf_counter()
        total = ids.size * 2e-5 + max_new_tokens * 1e-3
        self.gpu.add_load(start, start + total, 300.0)
        time.sleep(total)
        n = ids.shape[0] if ids.ndim == 2 else 1
        return RunTiming(start, start + ids.size * 2e-5, time.perf_counter(), int(ids.size), n * max_new_tokens)


@pytest.fixture
def fake_gpu(tmp_path):
    cfg = config("smoke.yaml", "smoke-batch.yaml")
    cfg["measure"].update(repeats=3, min_window_s=0.3, idle_s=0.3, cooldown_s=0.0)
    gpu = FakeGpu("GPU-fake-0", idle_w=100.0, period_s=0.1, phase_s=0.03)
    meter = NvmlMeter(uuids=["GPU-fake-0"], backend=FakeNvml([gpu]), sample_interval_s=0.01)
    measured, warmup = make_batch_prompts(ByteTokenizer(4096), 64, 4)
    save_ids(measured, tmp_path / "B4.npy")
    save_ids(warmup, tmp_path / "B4.w.npy")
    yield cfg, gpu, meter, tmp_path
    meter.close()


@pytest.mark.slow
def test_a_batched_cell_records_b_and_the_whole_batchs_tokens(fake_gpu, monkeypatch):
    cfg, gpu, meter, tmp = fake_gpu
    engine = BatchEngine(gpu)
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: engine)
    cell = Cell("tiny-llama", "hf-sdpa", "generate", 64, 4)
    out = tmp / "cells" / cell.path.relative_to("results/cells")
    rec = measure_mod.measure_cell(Settings.from_config(cfg), cell, tmp / "B4.npy", tmp / "B4.w.npy", out, meter=meter)
    windows, runs, _, meta = read_cell(out)  # the path's B4/ folder is the id's
    assert rec.status == "ok" and set(engine.shapes) == {(4, 64)}
    assert (windows["batch_size"] == 4).all() and (windows["engine_variant"] == "default").all()
    assert (windows["cell_id"] == "tiny-llama/generate".replace("/", "/hf-sdpa/") + "/B4/L64").all()
    # per input token = energy per run / (B * L); per output token / (B * G): both counts are in the runs
    assert (runs["tokens_in"] == 4 * 64).all() and (runs["tokens_out"] == 4 * cfg["generate_tokens"]).all()
    assert meta["batch_size"] == 4 and meta["output_tokens"] == cfg["generate_tokens"]
    assert windows["energy_per_run_j"].notna().all()


@pytest.mark.slow
def test_a_cell_file_moved_out_of_its_batch_folder_is_refused(fake_gpu, monkeypatch):
    cfg, gpu, meter, tmp = fake_gpu
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: BatchEngine(gpu))
    cell = Cell("tiny-llama", "hf-sdpa", "prefill", 64, 4)
    out = tmp / "cells" / cell.path.relative_to("results/cells")
    measure_mod.measure_cell(Settings.from_config(cfg), cell, tmp / "B4.npy", tmp / "B4.w.npy", out, meter=meter)
    moved = out.parent.parent / "L64.parquet"
    for suffix in ("", ".runs", ".trace"):
        (out.parent / f"L64{suffix}.parquet").rename(moved.parent / f"L64{suffix}.parquet")
    with pytest.raises(CtxEnergyError, match="not the one its name says"):
        read_cell(moved)


def test_an_oversize_vllm_batch_is_recorded_without_loading_an_engine(fake_gpu, monkeypatch, tmp_path):
    cfg, gpu, meter, tmp = fake_gpu

    def no_engine(*a):
        raise AssertionError("a batch beyond the engine's limit must not load an engine")

    monkeypatch.setattr(measure_mod, "make_engine", no_engine)
    measured, warmup = make_batch_prompts(ByteTokenizer(4096), 2048, 4)
    save_ids(measured, tmp / "big.npy")
    save_ids(warmup, tmp / "big.w.npy")
    cell = Cell("tiny-llama", "vllm", "prefill", 2048, 4)  # 8192 tokens, one step holds max_model_len = 4096
    out = tmp / "cells" / cell.path.relative_to("results/cells")
    rec = measure_mod.measure_cell(
        Settings.from_config(cfg), cell, tmp / "big.npy", tmp / "big.w.npy", out, meter=meter
    )
    windows, runs, _, _ = read_cell(out)
    assert rec.status == EXCEEDS_ENGINE_LIMIT and list(windows["window"]) == [-1] and runs.empty
    assert "8192 tokens exceed max_num_batched_tokens = 4096" in windows["status_reason"].iloc[0]


@pytest.mark.slow
def test_the_hf_engine_runs_a_batch_in_one_forward_on_the_tiny_cpu_model():
    from ctxenergy.engines import make_engine

    settings = Settings.from_config(config("smoke.yaml"))
    engine = make_engine("hf-sdpa", resolve_model(settings, "tiny-llama"), settings)
    engine.load()
    try:
        measured, _ = make_batch_prompts(ByteTokenizer(4096), 32, 3)
        prefill = engine.run(measured, 1)
        assert prefill.tokens_in == 3 * 32 and prefill.tokens_out == 3
        generate = engine.run(measured, 5)
        assert generate.tokens_in == 3 * 32 and generate.tokens_out == 3 * 5
        assert generate.start <= generate.first_token <= generate.end
        single = engine.run(measured[0], 5)
        assert single.tokens_in == 32 and single.tokens_out == 5
    finally:
        engine.close()


@pytest.mark.slow
def test_the_hf_paged_engine_runs_a_batch_as_b_requests_on_the_tiny_cpu_model():
    from ctxenergy.engines import make_engine

    settings = Settings.from_config(config("smoke.yaml"))
    engine = make_engine("hf-paged", resolve_model(settings, "tiny-llama"), settings)
    engine.load()
    try:
        measured, _ = make_batch_prompts(ByteTokenizer(4096), 32, 3)
        run = engine.run(measured, 4)
        assert run.tokens_in == 3 * 32 and run.tokens_out == 3 * 4
        assert run.start <= run.first_token <= run.end
    finally:
        engine.close()


def test_the_budget_estimates_a_batch_as_one_prompt_of_b_times_l_and_skips_what_no_gpu_holds():
    from ctxenergy.budget import _cell_times, beyond_any_device, estimate_s, within_budget
    from ctxenergy.job_benchmarks import job_seconds

    cfg = config("serving.yaml")
    times = _cell_times([job_seconds(d) for d in cfg["job_times"]])
    batch = Cell("llama-3.1-8b", "hf-sdpa", "prefill", 1024, 16)
    assert estimate_s(times, batch) == estimate_s(times, Cell("llama-3.1-8b", "hf-sdpa", "prefill", 16384))
    chunked = Cell("llama-3.1-8b", "vllm", "prefill", 1024, 4, "chunked")
    assert estimate_s(times, chunked) == estimate_s(times, Cell("llama-3.1-8b", "vllm", "prefill", 4096))
    spec = resolve_model(Settings.from_config(cfg), "llama-3.1-8b")
    assert beyond_any_device(Cell("llama-3.1-8b", "hf-sdpa", "prefill", 65536, 64), spec, 1, "bfloat16")
    assert not beyond_any_device(Cell("llama-3.1-8b", "hf-sdpa", "prefill", 4096, 64), spec, 1, "bfloat16")
    missing = [c for c in expand_grid(Settings.from_config(cfg)) if c.batch_size > 1 or c.variant != "default"]
    chosen, summary = within_budget(missing, 1e7, cfg["job_times"], Settings.from_config(cfg))
    assert len(chosen) == len(missing) and "without a job time" not in summary


class EightyGigabyteNvml(FakeNvml):
    def memory_total_bytes(self, h):
        return 80 * 10**9  # an H100's


def test_on_a_gpu_host_the_budget_knows_which_batches_its_gpus_cannot_hold(monkeypatch):
    """Where NVML answers, a batch beyond the smallest GPU's memory is recorded as out of memory within seconds, as a
    run without a budget records it; on a host without GPUs the budget leaves it to a GPU that may hold it."""
    from ctxenergy.budget import EXCEEDS_CONTEXT_S, LARGEST_DEVICE_MEMORY_BYTES, device_memory_bytes, within_budget
    from ctxenergy.telemetry import nvml_api

    settings = Settings.from_config(config("serving.yaml"))
    b8 = Cell("llama-3.1-8b", "hf-sdpa", "prefill", 65536, 8)  # weights 16 GB + KV cache 69 GB: not in 80 GB
    budget_s = 20.0 + 1.2 * (EXCEEDS_CONTEXT_S + 40.0)  # the reserve, and the cell with an engine load at most

    def no_nvml():
        raise nvml_api.NoDeviceError("no NVML here")

    monkeypatch.setattr(nvml_api, "_backend_factory", no_nvml)
    assert device_memory_bytes(settings) == LARGEST_DEVICE_MEMORY_BYTES
    assert within_budget([b8], budget_s, settings.job_times, settings)[0] == []  # 141 GB may hold it: hours
    monkeypatch.setattr(nvml_api, "_backend_factory", lambda: EightyGigabyteNvml([FakeGpu("GPU-a"), FakeGpu("GPU-b")]))
    assert device_memory_bytes(settings) == 80e9
    assert within_budget([b8], budget_s, settings.job_times, settings)[0] == [b8]
