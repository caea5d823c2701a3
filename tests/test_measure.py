"""The protocol of one cell, with a fake engine on a fake GPU: numbers, statuses and atomic outputs."""

import os
import time

import numpy as np
import pandas as pd
import pytest

import ctxenergy.measure as measure_mod
from ctxenergy.config import check_semantics, load_config
from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.errors import CtxEnergyError
from ctxenergy.grid import Cell
from ctxenergy.info import host_cpu
from ctxenergy.paths import REPO_ROOT
from ctxenergy.prompts import save_ids
from ctxenergy.tables import read_cell, sibling
from ctxenergy.telemetry.nvml_meter import NvmlMeter
from fake_nvml import FakeGpu, FakeNvml

EXTRA_W = 300.0


class SleepyEngine(Engine):
    """Each run draws EXTRA_W above idle on the fake GPU for a time proportional to its tokens."""

    name = "hf-sdpa"

    def __init__(self, gpu, s_per_token=2e-5, decode_s=0.002, oom=False):
        self.gpu, self.s_per_token, self.decode_s, self.oom = gpu, s_per_token, decode_s, oom

    def load(self):
        pass

    def run(self, ids, max_new_tokens):
        if self.oom:
            raise OutOfMemory("CUDA out of memory. Tried to allocate 39.00 GiB")
        start = time.perf_counter()
        prefill = ids.size * self.s_per_token
        total = prefill + (max_new_tokens - 1) * self.decode_s
        self.gpu.add_load(start, start + total, EXTRA_W)
        time.sleep(total)
        return RunTiming(start, start + prefill, time.perf_counter(), int(ids.size), max_new_tokens)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    cfg = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config/smoke.yaml"])
    cfg["measure"].update(repeats=3, min_window_s=0.3, idle_s=0.3, cooldown_s=0.0)
    check_semantics(cfg)
    gpu = FakeGpu("GPU-fake-0", idle_w=100.0, period_s=0.1, phase_s=0.03)
    meter = NvmlMeter(uuids=["GPU-fake-0"], backend=FakeNvml([gpu]), sample_interval_s=0.01)
    prompts = {}
    for L in (256, 4096):
        save_ids(np.arange(L) % 200 + 3, tmp_path / f"L{L}.npy")
        save_ids(np.arange(L) % 190 + 5, tmp_path / f"L{L}.w.npy")
        prompts[L] = (tmp_path / f"L{L}.npy", tmp_path / f"L{L}.w.npy")
    yield cfg, gpu, meter, prompts, tmp_path, monkeypatch
    meter.close()


def test_prefill_cell_energy_matches_the_load(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    out = tmp / "cells" / "L256.parquet"
    rec = measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
    windows, runs, trace, meta = read_cell(out)
    assert rec.status == "ok" and meta["status"] == "ok"
    assert len(windows) == 3 and (windows["runs"] == rec.meta["runs_per_window"]).all()
    assert rec.meta["runs_per_window"] > 1  # a short run is repeated back-to-back
    assert (windows["work_s"] >= 0.3 * 0.9).all()
    assert abs(meta["idle_power_w"] / 100.0 - 1) < 0.03
    # dynamic energy per run = EXTRA_W x the load's length; total adds idle power over the run's wall time
    load_s = 256 * 2e-5
    assert np.allclose(windows["dynamic_energy_per_run_j"], EXTRA_W * load_s, rtol=0.03)
    assert np.allclose(windows["energy_per_run_j"], EXTRA_W * load_s + 100 * windows["run_s"], rtol=0.03)
    assert len(runs) == 3 * rec.meta["runs_per_window"] and (runs["tokens_out"] == 1).all()
    assert (runs["start_s"] <= runs["first_token_s"]).all() and (runs["first_token_s"] <= runs["end_s"]).all()
    assert len(trace) > 10 and trace["power_w"].max() >= 100 + EXTRA_W - 1
    # the engine's start-up and warm-up lie before the first window
    t = meta["timeline"]
    assert t["load_end"] <= t["idle_start"] < t["idle_end"] <= t["warmup_start"] < t["warmup_end"] <= t["windows_start"]
    assert t["windows_start"] <= runs["start_s"].min()
    # the warm-up lasts as long as one window, so that the first window starts as warm as the others
    assert t["warmup_end"] - t["warmup_start"] >= cfg["measure"]["min_window_s"]
    assert meta["device_name"] == "NVIDIA H200" and meta["meter_method"] == "nvml-counter-edge-aligned"
    assert abs(meta["counter_period_s"] - 0.1) < 0.02
    # the host CPU is part of the cell: host-bound engines run as fast as it lets them
    assert meta["host_cpu"] == host_cpu() and (windows["host_cpu"] == host_cpu()).all()


def test_generate_cell_records_g_tokens(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    out = tmp / "g" / "L256.parquet"
    measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-sdpa", "generate", 256), *prompts[256], out, meter=meter)
    windows, runs, _, meta = read_cell(out)
    assert (runs["tokens_out"] == cfg["generate_tokens"]).all()
    assert meta["output_tokens"] == cfg["generate_tokens"]


def test_oom_cell_is_recorded_not_lost(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu, oom=True))
    out = tmp / "oom" / "L4096.parquet"
    rec = measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-eager", "prefill", 4096), *prompts[4096], out, meter=meter)
    windows, runs, trace, meta = read_cell(out)
    assert rec.status == "oom" and "out of device memory" in meta["status_reason"]
    assert list(windows["window"]) == [-1] and windows["status"].iloc[0] == "oom"
    assert runs.empty and trace.empty


def test_generate_past_max_positions_is_recorded_as_exceeding_context(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup

    def no_engine(*a):
        raise AssertionError("an exceeds_context cell must not load an engine")

    monkeypatch.setattr(measure_mod, "make_engine", no_engine)
    save_ids(np.arange(4096) % 200 + 3, tmp / "L4096b.npy")
    out = tmp / "ctx" / "L4096.parquet"
    rec = measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-sdpa", "generate", 4096), tmp / "L4096b.npy",
                                   prompts[4096][1], out, meter=meter)
    assert rec.status == "exceeds_context"
    assert "exceeds max_position_embeddings=4096" in pd.read_parquet(out)["status_reason"].iloc[0]


def test_prompt_of_wrong_length_is_refused(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    with pytest.raises(CtxEnergyError, match="holds 256 tokens, the cell needs exactly 4096"):
        measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 4096), *prompts[256], tmp / "x.parquet", meter=meter)


def test_a_warm_up_prompt_of_another_length_is_refused(setup):
    """A 4096-token warm-up before L=256 windows: the windows would start colder and the timing pass (the warm-up's
    last run) would choose R for the wrong length, leaving windows far shorter than min_window_s."""
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    out = tmp / "w" / "L256.parquet"
    with pytest.raises(CtxEnergyError, match=r"L4096.w.npy: the warm-up prompt holds 4096 tokens, the cell needs "
                                              r"exactly 256"):
        measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), prompts[256][0],
                                 prompts[4096][1], out, meter=meter)
    assert not out.exists()


def test_a_crash_while_writing_leaves_no_partial_cell(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    import ctxenergy.tables as tables

    real = tables._write_tmp
    calls = []

    def failing(df, path, meta):
        calls.append(path)
        if len(calls) == 3:  # the third of the cell's three files fails
            raise OSError("disk full")
        return real(df, path, meta)

    monkeypatch.setattr(tables, "_write_tmp", failing)
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    out = tmp / "crash" / "L256.parquet"
    with pytest.raises(OSError, match="disk full"):
        measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
    assert list((tmp / "crash").iterdir()) == []  # neither a partial table nor a temporary file
    assert not out.exists() and not sibling(out, "runs").exists()


def test_runs_per_window():
    assert measure_mod.runs_per_window(0.03, 1.0, 512) == 34
    assert measure_mod.runs_per_window(5.0, 1.0, 512) == 1
    assert measure_mod.runs_per_window(1e-6, 1.0, 64) == 64


def test_vllm_prefill_of_max_positions_is_recorded_as_exceeding_context(setup):
    """vLLM refuses prompt + output > max_model_len, so its prefill of exactly max positions cannot run; HF's can."""
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    vllm = measure_mod.measure_cell(cfg, Cell("tiny-llama", "vllm", "prefill", 4096), *prompts[4096], tmp / "v.parquet",
                                    meter=meter)
    assert vllm.status == "exceeds_context"
    hf = measure_mod.measure_cell(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 4096), *prompts[4096], tmp / "h.parquet",
                                  meter=meter)
    assert hf.status == "ok"


def test_host_cpu_names_the_model_and_the_logical_cpus(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  Platinum 8480+\n")
    assert host_cpu(cpuinfo) == f"Intel(R) Xeon(R) Platinum 8480+ x{os.cpu_count()}"
    assert host_cpu(tmp_path / "absent").endswith(f" x{os.cpu_count()}")  # no /proc: the platform's name
