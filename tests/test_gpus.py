"""GPU claiming on multi-GPU hosts, tensor-parallel cells, the shipped scale-out configs (fake GPUs, real processes)."""

import json
import multiprocessing as mp
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from fake_nvml import FakeGpu, FakeNvml

from ctxenergy.config import check_semantics, load_config, validate_schema
from ctxenergy.errors import ConfigError, NoDeviceError
from ctxenergy.gpus import LOCK_DIR_ENV, GpuClaimError, check_tp_fits_host, claim, claimed_gpus
from ctxenergy.models import parameter_counts
from ctxenergy.processes import own_process_tree
from ctxenergy.settings import Settings
from ctxenergy.telemetry import nvml_api
from ctxenergy.telemetry.nvml_meter import NvmlMeter
from ctxenergy.telemetry.processes import foreign_pids

FORK = mp.get_context("fork")  # children inherit the test's imports: a claim starts in milliseconds


def uuids(n):
    return [f"GPU-{i:08x}-fake-4000-8000-{i:012x}" for i in range(n)]


def fake_nvml(n):
    return FakeNvml([FakeGpu(u) for u in uuids(n)])


def study(tp=1, timeout_s=30.0, **config):
    return Settings.from_config(
        validate_schema(
            {
                "device": "cuda",
                "engines": ["vllm"],
                "lengths": [64],
                "models": [{"name": "tiny-llama", "tp": tp}],
                "measure": {"gpu_claim_timeout_s": timeout_s},
                **config,
            }
        )
    )


@pytest.fixture(autouse=True)
def lock_env(tmp_path, monkeypatch):
    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path / "locks"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    return tmp_path / "locks"


def _cell_job(n_gpus, tp, hold_s, out, barrier):
    """One measurement job: claim like `ctxenergy measure` does, hold the GPUs, record what and when."""
    barrier.wait()
    with claimed_gpus(study(tp), "tiny-llama", backend=fake_nvml(n_gpus)) as got:
        t0 = time.monotonic()
        seen = os.environ["CUDA_VISIBLE_DEVICES"]
        time.sleep(hold_s)
        t1 = time.monotonic()
    Path(out).write_text(json.dumps({"pid": os.getpid(), "uuids": got, "cvd": seen, "t0": t0, "t1": t1}))


def race(tmp_path, jobs, n_gpus, tp, hold_s=0.4):
    barrier = FORK.Barrier(jobs)
    procs = [
        FORK.Process(target=_cell_job, args=(n_gpus, tp, hold_s, tmp_path / f"job{i}.json", barrier))
        for i in range(jobs)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * jobs
    return [json.loads((tmp_path / f"job{i}.json").read_text()) for i in range(jobs)]


def assert_never_shared(records):
    by_gpu = {}
    for r in records:
        for u in r["uuids"]:
            by_gpu.setdefault(u, []).append((r["t0"], r["t1"]))
    for u, spans in by_gpu.items():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, f"{u} held by two jobs at once: {spans}"
    return by_gpu


def max_concurrent(records):
    events = sorted([(r["t0"], 1) for r in records] + [(r["t1"], -1) for r in records], key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, d in events:
        now += d
        peak = max(peak, now)
    return peak


@pytest.mark.slow
def test_eight_cells_race_for_four_gpus_and_never_share_one(tmp_path):
    records = race(tmp_path, jobs=8, n_gpus=4, tp=1)
    by_gpu = assert_never_shared(records)
    assert all(len(r["uuids"]) == 1 and r["cvd"] == r["uuids"][0] for r in records)
    assert sorted(by_gpu) == uuids(4)  # all four GPUs worked
    assert max_concurrent(records) == 4  # four at a time: the other four waited (gpu=8 on a 4-GPU host)
    assert len({r["pid"] for r in records}) == 8


@pytest.mark.slow
def test_tp2_cells_claim_disjoint_pairs(tmp_path):
    records = race(tmp_path, jobs=4, n_gpus=4, tp=2)
    assert_never_shared(records)
    for r in records:
        assert len(set(r["uuids"])) == 2 and r["cvd"] == ",".join(r["uuids"])
    assert max_concurrent(records) == 2


def test_tp2_cell_claims_two_distinct_gpus_and_restores_env():
    nv = fake_nvml(3)
    with claimed_gpus(study(tp=2, timeout_s=0), "tiny-llama", backend=nv) as got:
        assert len(got) == 2 and len(set(got)) == 2
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(got)
        with pytest.raises(GpuClaimError) as exc:  # one GPU left: a second tp-2 cell must wait, not share
            claim(uuids(3), 2, timeout_s=0.3)
        msg = str(exc.value)
        assert "\n" not in msg
        assert all(f"{u} held by pid {os.getpid()}" in msg for u in got)
        assert f"{(set(uuids(3)) - set(got)).pop()} free" in msg
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    again = claim(uuids(3), 2, timeout_s=0)
    again.release()


def _holder(uuid_list, ready):
    c = claim(uuid_list, len(uuid_list), timeout_s=5)
    Path(ready).write_text(",".join(c.uuids))
    time.sleep(120)


def _start_holder(tmp_path, uuid_list, name):
    ready = tmp_path / f"{name}.ready"
    p = FORK.Process(target=_holder, args=(uuid_list, ready), daemon=True)
    p.start()
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert time.monotonic() < deadline and p.is_alive(), "holder process did not claim its GPU"
        time.sleep(0.02)
    return p


def test_no_free_gpu_within_timeout_names_gpus_and_holding_pids(tmp_path):
    a, b = uuids(2)
    ha, hb = _start_holder(tmp_path, [a], "a"), _start_holder(tmp_path, [b], "b")
    try:
        t0 = time.monotonic()
        with pytest.raises(GpuClaimError) as exc:
            with claimed_gpus(study(timeout_s=0.5), "tiny-llama", backend=fake_nvml(2)):
                pass
        assert 0.5 <= time.monotonic() - t0 < 3
        msg = str(exc.value)
        assert "\n" not in msg
        assert f"{a} held by pid {ha.pid}" in msg and f"{b} held by pid {hb.pid}" in msg
        assert "CUDA_VISIBLE_DEVICES" not in os.environ
    finally:
        for p in (ha, hb):
            p.kill()
            p.join()


def test_sigkill_while_holding_frees_the_gpu(tmp_path):
    (only,) = uuids(1)
    holder = _start_holder(tmp_path, [only], "h")
    with pytest.raises(GpuClaimError):
        claim([only], 1, timeout_s=0.2)
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(5)
    assert holder.exitcode == -signal.SIGKILL
    c = claim([only], 1, timeout_s=0)  # no stale lock left behind: immediately free
    assert c.uuids == [only]
    c.release()


def test_waiting_job_gets_the_gpu_when_the_holder_is_killed(tmp_path):
    (only,) = uuids(1)
    holder = _start_holder(tmp_path, [only], "h")
    killer = subprocess.Popen([sys.executable, "-c", f"import os,time; time.sleep(0.5); os.kill({holder.pid}, 9)"])
    c = claim([only], 1, timeout_s=10, poll_s=0.05)
    assert 0.4 < c.waited_s < 3
    c.release()
    killer.wait()
    holder.join(5)


def test_tp_larger_than_the_host_is_one_clear_line():
    with pytest.raises(GpuClaimError) as exc:
        with claimed_gpus(study(tp=4), "tiny-llama", backend=fake_nvml(2)):
            pass
    msg = str(exc.value)
    assert "\n" not in msg and "tp=4" in msg and "2 GPU(s)" in msg and all(u in msg for u in uuids(2))
    with pytest.raises(ConfigError) as exc:
        check_tp_fits_host(study(tp=4), "config/x.yaml", backend=fake_nvml(2))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("config/x.yaml: model 'tiny-llama' has tp=4 but this host has 2 GPU(s)")
    check_tp_fits_host(study(tp=2), backend=fake_nvml(2))  # fits: silent


@pytest.mark.parametrize("tp", [0, -1, 1.5, "2", True])
def test_tp_not_a_positive_integer_is_one_clear_line(tp):
    # the schema says so, before there are settings to check against the host
    with pytest.raises(ConfigError, match=r"^config: models\[0\]\.tp: [^\n]*$"):
        study(tp=tp)


def test_host_check_is_skipped_where_nvml_cannot_tell(monkeypatch):
    def no_nvml():
        raise NoDeviceError("no NVML here")

    monkeypatch.setattr(nvml_api, "_backend_factory", no_nvml)
    monkeypatch.setattr("ctxenergy.gpus._on_slurm_submit_host", lambda: False)
    check_tp_fits_host(study(tp=8))  # CI: no NVML, nothing to check against
    monkeypatch.setattr(nvml_api, "_backend_factory", lambda: fake_nvml(1))
    with pytest.raises(ConfigError):
        check_tp_fits_host(study(tp=8))
    monkeypatch.setattr("ctxenergy.gpus._on_slurm_submit_host", lambda: True)
    check_tp_fits_host(study(tp=8))  # a SLURM login node's GPUs are not the compute nodes'
    check_tp_fits_host(study(tp=8, device="cpu"), backend=fake_nvml(1))
    cached = study(tp=8, cells_source="data/reference/nvidia-h200/cells")  # analysis only: no GPU needed
    check_tp_fits_host(cached, backend=fake_nvml(1))
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # a CPU-side SLURM job re-parsing the workflow
    check_tp_fits_host(study(tp=8), backend=fake_nvml(1))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # the cell's own job, given one GPU by SLURM
    with pytest.raises(ConfigError, match="tp=8 but CUDA_VISIBLE_DEVICES=0 gives 1 GPU"):
        check_tp_fits_host(study(tp=8), backend=fake_nvml(1))


def test_slurm_given_index_is_used_as_given(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with claimed_gpus(study(), "tiny-llama", backend=fake_nvml(4)) as got:
        assert got == [uuids(4)[2]]  # the meter reads SLURM's GPU, found through NVML
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "2"
        assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2" and "CUDA_DEVICE_ORDER" not in os.environ
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with pytest.raises(GpuClaimError, match=r"tp=2 but CUDA_VISIBLE_DEVICES='2' gives 1 GPU"):
        with claimed_gpus(study(tp=2), "tiny-llama", backend=fake_nvml(4)):
            pass
    with pytest.raises(ConfigError, match="gives 1 GPU"):
        check_tp_fits_host(study(tp=2), backend=fake_nvml(4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    with pytest.raises(GpuClaimError, match="names GPU 7 but NVML sees 4"):
        with claimed_gpus(study(), "tiny-llama", backend=fake_nvml(4)):
            pass


def test_given_set_larger_than_tp_is_shared_through_locks(monkeypatch):
    given = uuids(4)[1:3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", ",".join(given))
    cfg = study(timeout_s=0)
    with claimed_gpus(cfg, "tiny-llama", backend=fake_nvml(4)) as first:
        inner = os.environ["CUDA_VISIBLE_DEVICES"]
        c = claim(given, 1, timeout_s=0)  # another job given the same two GPUs gets the other one
        assert first == [inner] and c.uuids != first and c.uuids[0] in given
        with pytest.raises(GpuClaimError):
            claim(given, 1, timeout_s=0)
        c.release()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(given)


def test_lock_files_are_shared_by_all_users(lock_env):
    claim(uuids(1), 1, timeout_s=0).release()
    assert stat.S_IMODE(lock_env.stat().st_mode) == 0o1777
    assert stat.S_IMODE((lock_env / f"{uuids(1)[0]}.lock").stat().st_mode) == 0o666


@pytest.mark.slow
def test_tp_cell_energy_is_the_sum_of_its_gpus():
    a, b, c = (FakeGpu(u, idle_w=w) for u, w in zip(uuids(3), (100.0, 120.0, 90.0)))
    meter = NvmlMeter(uuids=[a.uuid, b.uuid], backend=FakeNvml([a, b, c]), detect_period=False)
    try:
        idle = meter.measure_idle(0.3)
        assert idle.per_device_w == pytest.approx([100.0, 120.0], rel=0.02)
        meter.begin_window()
        ws = time.perf_counter()
        a.add_load(ws, ws + 0.6, 300.0)
        b.add_load(ws, ws + 0.6, 100.0)
        c.add_load(ws, ws + 10, 5000.0)  # a GPU the cell did not claim: must not be metered
        time.sleep(0.6)
        we = time.perf_counter()
        w = meter.end_window(ws, we, idle)
    finally:
        meter.close()
    assert [d.uuid for d in meter.devices] == [a.uuid, b.uuid]
    span = we - ws
    assert w.per_device_energy_j == pytest.approx([400.0 * span, 220.0 * span], rel=0.04)
    assert w.energy_j == pytest.approx(sum(w.per_device_energy_j), rel=1e-9)


def test_foreign_process_on_a_claimed_gpu_is_detected(capfd):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        gpus = [FakeGpu(u) for u in uuids(2)]
        gpus[0].pids = [os.getpid(), child.pid]  # our own worker process: not foreign
        gpus[1].pids = [1]  # init is nobody's child: foreign
        nv = FakeNvml(gpus)
        assert child.pid in own_process_tree()
        assert foreign_pids(uuids(2), nv) == {uuids(2)[1]: [1]}
        with claimed_gpus(study(tp=2), "tiny-llama", backend=nv):
            pass
        err = capfd.readouterr().err
        assert f"{uuids(2)[1]} also runs pid(s) 1, not ours" in err and uuids(2)[0] + " also" not in err
        meter = NvmlMeter(uuids=uuids(2)[1:], backend=nv, detect_period=False)
        try:
            idle = meter.measure_idle(0.1)
            meter.begin_window()
            t = time.perf_counter()
            w = meter.end_window(t, t + 0.01, idle)
        finally:
            meter.close()
        assert w.foreign_process and w.state_start[0].foreign_pids == [1]
    finally:
        child.kill()
        child.wait()


def test_cpu_study_claims_nothing():
    with claimed_gpus(study(device="cpu"), "tiny-llama", backend=fake_nvml(1)) as got:
        assert got is None and "CUDA_VISIBLE_DEVICES" not in os.environ


# --- shipped configs and profiles ---


def test_llama_70b_shape_matches_the_model_card():
    arch = json.loads((REPO / "data/models/llama-3.1-70b/config.json").read_text())
    assert (
        arch["num_hidden_layers"],
        arch["hidden_size"],
        arch["num_attention_heads"],
        arch["num_key_value_heads"],
        arch["intermediate_size"],
        arch["vocab_size"],
        arch["max_position_embeddings"],
    ) == (80, 8192, 64, 8, 28672, 128256, 131072)
    assert arch["rope_scaling"]["rope_type"] == "llama3" and arch["rope_scaling"]["factor"] == 8.0
    assert arch["rope_theta"] == 500000.0
    assert 70.4e9 < parameter_counts(arch)["total"] < 70.8e9  # the card's 70.6 B


def test_llama_70b_tp2_config_is_valid():
    cfg = load_config(REPO / "config.yaml", [REPO / "config/llama-70b-tp2.yaml"])
    check_semantics(cfg, "config/llama-70b-tp2.yaml", engines_needed=())
    assert [(m["name"], m["tp"]) for m in cfg["models"]] == [("llama-3.1-70b", 2)]
    assert cfg["engines"] == ["vllm"] and cfg["device"] == "cuda"


def test_scale_out_check_config_is_small():
    cfg = load_config(REPO / "config.yaml", [REPO / "config/scale-out-check.yaml"])
    check_semantics(cfg, "config/scale-out-check.yaml", engines_needed=())
    assert len(cfg["models"]) == 1 and cfg["engines"] == ["hf-sdpa"]
    assert len(cfg["lengths"]) == 3 and max(cfg["lengths"]) <= 4096


def test_profiles_keep_site_facts_out_of_rules():
    slurm = yaml.safe_load((REPO / "workflow/profiles/slurm/profile.yaml").read_text())
    multi = yaml.safe_load((REPO / "workflow/profiles/multi-gpu/profile.yaml").read_text())
    assert slurm["executor"] == "slurm" and "resources" not in slurm  # SLURM, not Snakemake, hands out GPUs
    assert isinstance(multi["resources"]["gpu"], int) and multi["resources"]["gpu"] >= 1
    rules = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    assert "slurm_partition" not in rules and "gpu_model" not in rules


@pytest.mark.slow
def test_multi_gpu_profile_dry_run(repo_copy):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--workflow-profile",
            "workflow/profiles/multi-gpu",
            "--configfile",
            "config/smoke.yaml",
        ],
        cwd=repo_copy,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "measure_cell" in proc.stdout


@pytest.mark.slow
def test_gpus_check_command_shows_another_process_is_refused(monkeypatch, capsys):
    from ctxenergy.cli import main

    monkeypatch.setattr(nvml_api, "_backend_factory", lambda: fake_nvml(2))
    assert main(["gpus", "--check"]) == 0
    out = capsys.readouterr().out
    assert f"pid {os.getpid()} claimed {uuids(2)[0]}" in out
    refused = f"no 1 free GPU(s) within 1 s: {uuids(2)[0]} held by pid {os.getpid()}"
    assert f"another process: refused: ctxenergy.gpus.GpuClaimError: {refused}" in out
    assert "claimable again" in out
