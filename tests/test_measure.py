"""The protocol of one cell, with a fake engine on a fake GPU: numbers, statuses and atomic outputs."""

import os
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from fake_nvml import FakeGpu, FakeNvml

import ctxenergy.measure as measure_mod
from ctxenergy.config import check_semantics, load_config, validate_schema
from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.errors import CtxEnergyError
from ctxenergy.grid import Cell
from ctxenergy.info import host_cpu
from ctxenergy.paths import REPO_ROOT
from ctxenergy.prompts import save_ids
from ctxenergy.settings import MeasureSettings, Settings
from ctxenergy.tables import read_cell, sibling
from ctxenergy.telemetry.nvml_meter import NvmlMeter

pytestmark = pytest.mark.slow


EXTRA_W = 300.0


def measure_under(cfg: dict, *args, **kwargs):
    """measure_cell under the test's config as it stands (tests change its `measure:` block)."""
    return measure_mod.measure_cell(Settings.from_config(cfg), *args, **kwargs)


def protocol(**measure) -> MeasureSettings:
    """A `measure:` block with the schema's defaults for what it leaves out."""
    minimal = {"models": [{"name": "m"}], "engines": ["hf-sdpa"], "lengths": [256], "measure": measure}
    return Settings.from_config(validate_schema(minimal)).measure


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
    rec = measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
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
    measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "generate", 256), *prompts[256], out, meter=meter)
    windows, runs, _, meta = read_cell(out)
    assert (runs["tokens_out"] == cfg["generate_tokens"]).all()
    assert meta["output_tokens"] == cfg["generate_tokens"]
    assert meta["attention_kernels"] == {}  # an engine that cannot tell records nothing rather than a guess


def test_oom_cell_is_recorded_not_lost(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu, oom=True))
    out = tmp / "oom" / "L4096.parquet"
    rec = measure_under(cfg, Cell("tiny-llama", "hf-eager", "prefill", 4096), *prompts[4096], out, meter=meter)
    windows, runs, trace, meta = read_cell(out)
    assert rec.status == "oom" and "out of device memory" in meta["status_reason"]
    assert list(windows["window"]) == [-1] and windows["status"].iloc[0] == "oom"
    assert runs.empty and trace.empty
    assert meta["attention_kernels"] == {}  # recorded as "no kernel seen", not "from before the record"


def test_generate_past_max_positions_is_recorded_as_exceeding_context(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup

    def no_engine(*a):
        raise AssertionError("an exceeds_context cell must not load an engine")

    monkeypatch.setattr(measure_mod, "make_engine", no_engine)
    save_ids(np.arange(4096) % 200 + 3, tmp / "L4096b.npy")
    out = tmp / "ctx" / "L4096.parquet"
    rec = measure_under(
        cfg, Cell("tiny-llama", "hf-sdpa", "generate", 4096), tmp / "L4096b.npy", prompts[4096][1], out, meter=meter
    )
    assert rec.status == "exceeds_context"
    assert "exceeds max_position_embeddings=4096" in pd.read_parquet(out)["status_reason"].iloc[0]
    assert read_cell(out)[3]["attention_kernels"] == {}


def test_prompt_of_wrong_length_is_refused(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    with pytest.raises(CtxEnergyError, match="holds 256 tokens, the cell needs exactly 4096"):
        measure_under(
            cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 4096), *prompts[256], tmp / "x.parquet", meter=meter
        )


def test_a_warm_up_prompt_of_another_length_is_refused(setup):
    """A 4096-token warm-up before L=256 windows: the windows would start colder and the timing pass (the warm-up's
    last run) would choose R for the wrong length, leaving windows far shorter than min_window_s."""
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    out = tmp / "w" / "L256.parquet"
    with pytest.raises(
        CtxEnergyError,
        match=r"L4096.w.npy: the warm-up prompt holds 4096 tokens, the cell needs "
        r"exactly 256",
    ):
        measure_under(
            cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), prompts[256][0], prompts[4096][1], out, meter=meter
        )
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
        measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
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
    vllm = measure_under(
        cfg, Cell("tiny-llama", "vllm", "prefill", 4096), *prompts[4096], tmp / "v.parquet", meter=meter
    )
    assert vllm.status == "exceeds_context"
    hf = measure_under(
        cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 4096), *prompts[4096], tmp / "h.parquet", meter=meter
    )
    assert hf.status == "ok"


def test_host_cpu_names_the_model_and_the_logical_cpus(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  Platinum 8480+\n")
    assert host_cpu(cpuinfo) == f"Intel(R) Xeon(R) Platinum 8480+ x{os.cpu_count()}"
    assert host_cpu(tmp_path / "absent").endswith(f" x{os.cpu_count()}")  # no /proc: the platform's name


# --- windows sized by a target, idle floor per engine load, shared warm-up (opt-in) ---------------------------


def _rows(totals, dynamics=None):
    dynamics = totals if dynamics is None else dynamics
    return [{"energy_per_run_j": e, "dynamic_energy_per_run_j": d} for e, d in zip(totals, dynamics)]


def test_windows_stop_reason_by_count_target_cap_and_missing_energy():
    from ctxenergy.stats import summarize

    fixed = protocol(repeats=5)
    assert measure_mod.windows_stop_reason(_rows([1.0] * 4), fixed) is None
    assert measure_mod.windows_stop_reason(_rows([1.0] * 5), fixed) == "fixed_count"
    target = protocol(repeats=5, target_half_width_pct=1.0, min_windows=3, max_windows=5)
    steady = [100.0, 100.2, 99.9]
    assert measure_mod.windows_stop_reason(_rows(steady[:2]), target) is None  # never before min_windows
    assert measure_mod.windows_stop_reason(_rows(steady), target) == "target_reached"
    noisy = [100.0, 104.0, 97.0, 102.0, 99.0]
    assert measure_mod.windows_stop_reason(_rows(noisy[:4]), target) is None
    assert measure_mod.windows_stop_reason(_rows(noisy), target) == "cap_reached"
    assert measure_mod.windows_stop_reason(_rows([None] * 3), target) == "no_energy"
    # the rule's interval is the aggregate's: summarize's t-interval of the mean
    s = summarize(noisy)
    assert measure_mod.relative_half_width_pct(noisy) == pytest.approx(100 * (s["ci_high"] - s["mean"]) / s["mean"])


def test_the_target_applies_to_the_energy_it_names_and_host_bound_cells_take_their_own():
    # HF decode at batch 1: the total follows the host's run time (10 % apart), the energy above idle barely moves
    total, dynamic = [900.0, 990.0, 830.0], [215.0, 218.0, 213.0]
    rows = _rows(total, dynamic)
    base = protocol(repeats=5, target_half_width_pct=1.0, min_windows=3, max_windows=3)
    assert measure_mod.windows_stop_reason(rows, base) == "cap_reached"  # total, as before
    assert measure_mod.windows_stop_reason(rows, replace(base, target_energy="dynamic")) == "cap_reached"  # 2.9 %
    assert measure_mod.windows_stop_reason(_rows(dynamic, total), replace(base, target_energy="both")) == "cap_reached"
    host = replace(base, host_bound_target_half_width_pct=5.0, host_bound_target_energy="dynamic")
    assert measure_mod.windows_stop_reason(rows, host, is_host_bound=True) == "target_reached"
    assert measure_mod.windows_stop_reason(rows, host, is_host_bound=False) == "cap_reached"  # GPU-bound: 1 % on total
    assert measure_mod.window_target(host, True) == (5.0, "dynamic")
    assert measure_mod.window_target(host, False) == (1.0, "total")
    assert measure_mod.window_target(protocol(repeats=5), True) == (None, "total")  # no target: a fixed count for all
    # only the target's percentage set: the host-bound cells keep the energy of the others
    assert measure_mod.window_target(replace(base, host_bound_target_half_width_pct=5.0), True) == (5.0, "total")
    # which cells are host-bound: generate on an engine whose decode waits on the host
    assert measure_mod.host_bound(Cell("m", "hf-sdpa", "generate", 256))
    assert not measure_mod.host_bound(Cell("m", "hf-sdpa", "prefill", 256))
    assert not measure_mod.host_bound(Cell("m", "vllm", "generate", 256))


class HostPacedEngine(SleepyEngine):
    """A run whose GPU work is fixed (0.1 s at EXTRA_W) but whose wall time alternates between 0.3 and 0.45 s: the
    host's pace, idle on the GPU. Its total energy per run moves by ~20 %, its energy above idle does not."""

    def __init__(self, gpu, **kw):
        super().__init__(gpu, **kw)
        self.calls = 0

    def run(self, ids, max_new_tokens):
        self.calls += 1
        start = time.perf_counter()
        self.gpu.add_load(start, start + 0.1, EXTRA_W)
        time.sleep(0.3 if self.calls % 2 else 0.45)
        return RunTiming(start, start + 0.01, time.perf_counter(), int(ids.size), max_new_tokens)


@pytest.mark.parametrize("engine,expect", [("hf-sdpa", ("target_reached", 3)), ("vllm", ("cap_reached", 4))])
def test_a_host_bound_generate_cell_stops_on_its_dynamic_energy(setup, engine, expect):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    cfg["measure"].update(
        target_half_width_pct=1.0,
        min_windows=3,
        max_windows=4,
        host_bound_target_energy="dynamic",
        host_bound_target_half_width_pct=15.0,
    )
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: HostPacedEngine(gpu))
    out = tmp / engine / "L256.parquet"
    measure_under(cfg, Cell("tiny-llama", engine, "generate", 256), *prompts[256], out, meter=meter)
    windows, _, _, meta = read_cell(out)
    assert (meta["windows_stop_reason"], len(windows)) == expect
    assert (windows["runs"] == 1).all()
    assert meta["windows_half_width_pct"] > 1.0  # the total's interval stays what it is, and is recorded
    if engine == "hf-sdpa":
        assert (meta["windows_target_pct"], meta["windows_target_energy"]) == (15.0, "dynamic")
        assert meta["windows_dynamic_half_width_pct"] <= 15.0
    else:
        assert (meta["windows_target_pct"], meta["windows_target_energy"]) == (1.0, "total")


class JitteryEngine(SleepyEngine):
    """Runs draw 10 % above or below EXTRA_W in a pattern of period 7, so windows differ by a few %: a spread that
    a few windows cannot narrow to a tight target."""

    def __init__(self, gpu, **kw):
        super().__init__(gpu, **kw)
        self.calls = 0

    def run(self, ids, max_new_tokens):
        self.calls += 1
        start = time.perf_counter()
        total = ids.size * self.s_per_token
        self.gpu.add_load(start, start + total, EXTRA_W * (1.1 if self.calls % 7 < 3 else 0.9))
        time.sleep(total)
        return RunTiming(start, start + total, time.perf_counter(), int(ids.size), max_new_tokens)


def test_default_protocol_measures_repeats_windows_and_says_so(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    out = tmp / "fixed" / "L256.parquet"
    measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
    windows, _, _, meta = read_cell(out)
    assert len(windows) == cfg["measure"]["repeats"] == 3
    assert meta["windows_stop_reason"] == "fixed_count" and (windows["windows_stop_reason"] == "fixed_count").all()
    assert meta["idle_source"] == "measured" and meta["warmup_mode"] == "per_cell"
    assert meta["windows_half_width_pct"] > 0


def test_target_sized_windows_stop_when_the_interval_is_narrow_enough(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    # a target that the fake GPU's windows (a few % apart on a busy CPU host) meet at once: the minimum count
    cfg["measure"].update(repeats=8, target_half_width_pct=50.0, min_windows=3, max_windows=8)
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    out = tmp / "target" / "L256.parquet"
    measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
    windows, _, _, meta = read_cell(out)
    assert meta["windows_stop_reason"] == "target_reached" and len(windows) == 3
    assert meta["windows_half_width_pct"] <= 50.0


def test_target_sized_windows_stop_at_the_cap_when_the_work_varies(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    cfg["measure"].update(min_window_s=0.1, target_half_width_pct=0.01, min_windows=3, max_windows=4)
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: JitteryEngine(gpu, s_per_token=1e-4))
    out = tmp / "cap" / "L256.parquet"
    measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
    windows, _, _, meta = read_cell(out)
    assert meta["windows_stop_reason"] == "cap_reached" and len(windows) == 4
    assert meta["windows_half_width_pct"] > 0.01


def _resident(gpu, engine_cls=SleepyEngine, **kw):
    from ctxenergy.engine_host import ResidentEngine

    return ResidentEngine(engine=engine_cls(gpu, **kw), load_s=0.0)


def test_idle_floor_is_measured_once_per_load_and_rechecked_per_cell(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    cfg["measure"].update(idle_s=1.0, idle_recheck_s=0.2, idle_recheck_tolerance_pct=2.0)
    resident = _resident(gpu)
    cell = Cell("tiny-llama", "hf-sdpa", "prefill", 256)
    metas = []
    for i in range(3):
        if i == 2:
            gpu.idle_w = 110.0  # the floor moved by 10 %: the re-check must catch it
        out = tmp / "idle" / f"{i}.parquet"
        rec = measure_under(cfg, cell, *prompts[256], out, meter=meter, resident=resident)
        metas.append(read_cell(out)[3])
        assert rec.status == "ok"
    first, second, third = metas
    assert first["idle_source"] == "measured" and first["idle_age_s"] == 0.0
    assert second["idle_source"] == "reused" and second["idle_age_s"] > 0.5
    assert second["idle_power_w"] == first["idle_power_w"] and abs(second["idle_recheck_diff_pct"]) < 2.0
    # the re-check is short: the idle part of the cell took well under the full baseline's (edges ~0.1-0.3 s each)
    idle_span = [m["timeline"]["idle_end"] - m["timeline"]["idle_start"] for m in metas]
    assert idle_span[1] < idle_span[0] - 0.5
    assert third["idle_source"] == "remeasured" and third["idle_recheck_diff_pct"] > 5.0
    assert abs(third["idle_power_w"] / 110.0 - 1) < 0.03
    assert resident.idle_floor.power_w == third["idle_power_w"]  # the new floor for the cells after it


def test_without_idle_recheck_a_resident_engine_measures_idle_in_every_cell(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    resident = _resident(gpu)
    cell = Cell("tiny-llama", "hf-sdpa", "prefill", 256)
    for i in range(2):
        measure_under(cfg, cell, *prompts[256], tmp / "every" / f"{i}.parquet", meter=meter, resident=resident)
        assert read_cell(tmp / "every" / f"{i}.parquet")[3]["idle_source"] == "measured"
    assert resident.idle_floor is None


def test_shared_warmup_only_right_after_a_cell_on_the_same_engine(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    cfg["measure"].update(warmup_shared_s=0.05)
    resident = _resident(gpu)
    cell = Cell("tiny-llama", "hf-sdpa", "prefill", 256)

    def measured(name):
        measure_under(cfg, cell, *prompts[256], tmp / "warm" / f"{name}.parquet", meter=meter, resident=resident)
        meta = read_cell(tmp / "warm" / f"{name}.parquet")[3]
        return meta, meta["timeline"]["warmup_end"] - meta["timeline"]["warmup_start"]

    first, first_s = measured("first")
    assert first["warmup_mode"] == "per_cell" and first_s >= cfg["measure"]["min_window_s"]
    second, second_s = measured("second")
    assert second["warmup_mode"] == "shared" and second["warmup_runs"] >= 2 and second["warmup_gap_s"] < 30
    assert 0.05 <= second_s < cfg["measure"]["min_window_s"]
    monkeypatch.setattr(measure_mod, "SHARED_WARMUP_MAX_GAP_S", 0.0)  # the board had time to cool: warm up fully
    third, third_s = measured("third")
    assert third["warmup_mode"] == "per_cell" and third_s >= cfg["measure"]["min_window_s"]


def test_a_failed_cell_leaves_the_next_one_a_full_warmup(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    cfg["measure"].update(warmup_shared_s=0.05)
    resident = _resident(gpu)
    cell = Cell("tiny-llama", "hf-sdpa", "prefill", 256)
    measure_under(cfg, cell, *prompts[256], tmp / "f0.parquet", meter=meter, resident=resident)
    resident.engine.oom = True
    assert measure_under(cfg, cell, *prompts[256], tmp / "f1.parquet", meter=meter, resident=resident).status == "oom"
    resident.engine.oom = False
    measure_under(cfg, cell, *prompts[256], tmp / "f2.parquet", meter=meter, resident=resident)
    assert read_cell(tmp / "f2.parquet")[3]["warmup_mode"] == "per_cell"


def test_without_warmup_shared_s_every_cell_warms_up_for_a_window(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    resident = _resident(gpu)
    cell = Cell("tiny-llama", "hf-sdpa", "prefill", 256)
    for i in range(2):
        measure_under(cfg, cell, *prompts[256], tmp / f"w{i}.parquet", meter=meter, resident=resident)
        meta = read_cell(tmp / f"w{i}.parquet")[3]
        t = meta["timeline"]
        assert meta["warmup_mode"] == "per_cell"
        assert t["warmup_end"] - t["warmup_start"] >= cfg["measure"]["min_window_s"]


def test_a_faulty_idle_floor_is_never_reused_and_a_faulty_recheck_remeasures():
    """The per-load idle floor (idle_recheck_s) and telemetry faults: a floor whose counter failed is not kept for
    later cells, and a re-check whose counter failed does not vouch for the kept floor."""
    from types import SimpleNamespace

    from ctxenergy.telemetry.base import IdleBaseline

    settings = protocol(idle_s=2.0, idle_recheck_s=0.5, idle_recheck_tolerance_pct=2.0)
    answers = []

    class Meter:
        def measure_idle(self, seconds):
            return answers.pop(0)

    resident = SimpleNamespace(idle_floor=None, idle_floor_at=0.0)
    answers.append(IdleBaseline(100.0, [100.0], 2.0, faults=["gpu0: counter went backwards"]))
    measure_mod.idle_baseline(Meter(), settings, resident, {})
    assert resident.idle_floor is None  # faulty: the next cell measures again
    good = IdleBaseline(100.0, [100.0], 2.0)
    answers.append(good)
    measure_mod.idle_baseline(Meter(), settings, resident, {})
    assert resident.idle_floor is good
    meta = {}
    answers += [IdleBaseline(100.5, [100.5], 0.5, faults=["gpu0: counter stopped"]), IdleBaseline(99.0, [99.0], 2.0)]
    idle = measure_mod.idle_baseline(Meter(), settings, resident, meta)
    assert meta["idle_source"] == "remeasured" and idle.power_w == 99.0


# --- per-cell peak memory and run-latency percentiles (schema_version 2) ----------------------------------------


class HungryEngine(SleepyEngine):
    """Runs that fill the fake board's memory for as long as they run, as an engine's activations do."""

    peak_bytes = 60 * 2**30

    def run(self, ids, max_new_tokens):
        resting = self.gpu.memory_used_bytes
        self.gpu.memory_used_bytes = self.peak_bytes
        try:
            return super().run(ids, max_new_tokens)
        finally:
            self.gpu.memory_used_bytes = resting


def test_a_cell_records_its_peak_memory_and_run_latency_percentiles(setup):
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: HungryEngine(gpu, s_per_token=1e-4))
    out = tmp / "mem" / "L256.parquet"
    measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], out, meter=meter)
    windows, runs, _, meta = read_cell(out)
    assert (windows["schema_version"] == 2).all() and meta["schema_version"] == 2
    # NVML saw the runs' 60 GiB (sampled: the runs last long enough to be seen), not the 2 GiB at rest
    assert meta["nvml_peak_memory_used_gib"] == pytest.approx(60.0)
    assert meta["memory_total_gib"] == pytest.approx(141.0)
    # torch never touched CUDA in this process: no allocator peak to report, and none invented
    assert meta["torch_peak_allocated_gib"] is None and windows["torch_peak_reserved_gib"].isna().all()
    durations = runs["end_s"] - runs["start_s"]
    assert windows["run_p50_s"].iloc[0] == pytest.approx(float(np.median(durations)))
    assert windows["run_p90_s"].iloc[0] == pytest.approx(float(np.percentile(durations, 90)))
    assert (
        durations.min()
        <= windows["run_p50_s"].iloc[0]
        <= windows["run_p90_s"].iloc[0]
        <= windows["run_p99_s"].iloc[0]
        <= durations.max()
    )


def test_an_oom_cell_keeps_its_peak_memory(setup):
    """The peak is what explains an out-of-memory cell: it is recorded although no window was measured."""
    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    gpu.memory_used_bytes = 139 * 2**30
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu, oom=True))
    out = tmp / "oom-mem" / "L4096.parquet"
    measure_under(cfg, Cell("tiny-llama", "hf-eager", "prefill", 4096), *prompts[4096], out, meter=meter)
    windows, _, _, meta = read_cell(out)
    assert meta["status"] == "oom" and windows["nvml_peak_memory_used_gib"].iloc[0] == pytest.approx(139.0)
    assert windows["run_p50_s"].isna().all()  # no runs, no latency


def test_peak_memory_reads_the_torch_allocator_after_resetting_its_peak(monkeypatch):
    """The allocator's peak is this cell's: the stats are reset when the cell starts (a resident engine's earlier,
    longer cells left a higher peak), and read over this process's devices."""
    import sys
    import types

    from ctxenergy.telemetry.memory import PeakMemory

    state = {"peak": [50 * 2**30], "resets": 0}

    def reset(i):
        state["resets"] += 1
        state["peak"][i] = 8 * 2**30  # the weights, resident

    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        is_initialized=lambda: True,
        device_count=lambda: 1,
        reset_peak_memory_stats=reset,
        max_memory_allocated=lambda i: state["peak"][i],
        max_memory_reserved=lambda i: state["peak"][i] + 2**30,
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    memory = PeakMemory(None)  # a CPU meter: no NVML
    state["peak"][0] = 12 * 2**30  # this cell's activations
    got = memory.stop()
    assert state["resets"] == 1
    assert got["torch_peak_allocated_gib"] == 12.0 and got["torch_peak_reserved_gib"] == 13.0
    assert got["nvml_peak_memory_used_gib"] is None and got["memory_total_gib"] is None


def test_run_latency_percentiles():
    from ctxenergy.stats import run_latency

    assert run_latency([]) == {"run_p50_s": None, "run_p90_s": None, "run_p99_s": None}
    got = run_latency([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    assert got == {"run_p50_s": 6.0, "run_p90_s": 10.0, "run_p99_s": pytest.approx(10.9)}


def test_cells_of_schema_1_aggregate_beside_new_ones_with_the_new_fields_missing(setup):
    from conftest import SDPA_SLICE

    from ctxenergy.aggregate import aggregate
    from ctxenergy.tables import read_cells_table

    cfg, gpu, meter, prompts, tmp, monkeypatch = setup
    monkeypatch.setattr(measure_mod, "make_engine", lambda *a: SleepyEngine(gpu))
    new = tmp / "new" / "L256.parquet"
    measure_under(cfg, Cell("tiny-llama", "hf-sdpa", "prefill", 256), *prompts[256], new, meter=meter)
    old = SDPA_SLICE / "prefill" / "L256.parquet"
    assert read_cell(old)[3].get("schema_version", 1) == 1
    aggregate([old, new], tmp / "cells.parquet")
    cells = read_cells_table(tmp / "cells.parquet").set_index("model")
    assert cells.loc["llama-3.1-8b", "schema_version"] == 1 and cells.loc["tiny-llama", "schema_version"] == 2
    for col in ("nvml_peak_memory_used_gib", "memory_total_gib", "run_p50_s", "run_p90_s", "run_p99_s"):
        assert np.isnan(cells.loc["llama-3.1-8b", col]) and cells.loc["tiny-llama", col] > 0
    assert cells["torch_peak_allocated_gib"].isna().all()
    # a table of schema-1 cells alone is what it was: no empty columns added
    only_old = aggregate([old], tmp / "old.parquet")
    assert "run_p50_s" not in only_old and "nvml_peak_memory_used_gib" not in only_old
