"""Random weights that do not depend on the engine (ctxenergy.weights): the shared set generated once and loaded
by every engine, vLLM's uniform dummy init in transformers, and the settings hash of configs that do not ask."""

import json

import numpy as np
import pandas as pd
import pytest

from ctxenergy.config import cell_settings_hash, check_semantics, load_config, validate_schema
from ctxenergy.engines import make_engine
from ctxenergy.engines import vllm as vllm_mod
from ctxenergy.engines.hf import make_shared_weights
from ctxenergy.errors import ConfigError
from ctxenergy.models import resolve_model
from ctxenergy.paths import REPO_ROOT
from ctxenergy.settings import EngineOptions, Settings
from ctxenergy.weights import MARKER, UNIFORM_HIGH

torch = pytest.importorskip("torch")


def tiny_config(tmp_path, mode: str | None) -> dict:
    entry = {"name": "tiny-llama"}
    if mode:
        entry["random_weights"] = mode
    return validate_schema(
        {
            "device": "cpu",
            "dtype": "float32",
            "models": [entry],
            "engines": ["hf-sdpa"],
            "lengths": [64],
            "weights_cache": str(tmp_path / "weights"),
        }
    )


def tiny_settings(tmp_path, mode: str | None) -> Settings:
    return Settings.from_config(tiny_config(tmp_path, mode))


def loaded_params(settings: Settings) -> dict:
    """The weights an hf-sdpa engine of the settings' tiny-llama holds once loaded."""
    engine = make_engine("hf-sdpa", resolve_model(settings, "tiny-llama"), settings)
    engine.load()
    try:
        return {k: v.detach().clone() for k, v in engine.model.state_dict().items()}
    finally:
        engine.close()


def test_labels_and_what_each_engine_loads(tmp_path):
    engine_init = resolve_model(tiny_settings(tmp_path, None), "tiny-llama")
    shared = resolve_model(tiny_settings(tmp_path, "shared"), "tiny-llama")
    uniform = resolve_model(tiny_settings(tmp_path, "uniform"), "tiny-llama")
    assert (engine_init.weights, engine_init.weights_label, engine_init.uniform_init) == (None, "random", False)
    assert shared.weights == str(tmp_path / "weights" / "tiny-llama") and shared.weights_label == "random-shared-seed0"
    assert uniform.weights is None and uniform.weights_label == "random-uniform0.001" and uniform.uniform_init
    # vLLM: its dummy weights are the uniform ones; shared weights are loaded from their folder like real ones
    options = EngineOptions.schema_defaults().of("vllm")
    assert vllm_mod.llm_kwargs(uniform, "bfloat16", options)["load_format"] == "dummy"
    k = vllm_mod.llm_kwargs(shared, "bfloat16", options)
    assert k["model"] == shared.weights and "load_format" not in k


def test_shared_weights_are_generated_once_and_loaded_by_the_engine(tmp_path):
    settings = tiny_settings(tmp_path, "shared")
    with pytest.raises(ConfigError, match="ctxenergy weights --config <config> --model tiny-llama"):
        make_engine("hf-sdpa", resolve_model(settings, "tiny-llama"), settings)  # not generated yet: one line
    out = make_shared_weights(settings, "tiny-llama")
    info = json.loads((out / MARKER).read_text())
    assert info["seed"] == 0 and any(f.endswith(".safetensors") for f in info["files"])
    assert not out.with_name("tiny-llama.partial").exists()
    first = {k: v.clone() for k, v in _load_saved(out).items()}
    make_shared_weights(settings, "tiny-llama")  # the same seed gives the same weights
    assert all(torch.equal(first[k], v) for k, v in _load_saved(out).items())
    loaded = loaded_params(settings)
    assert all(torch.equal(loaded[k], first[k]) for k in first)
    # transformers' init: normal(0, 0.02) matrices, unit norm scales
    q = first["model.layers.0.self_attn.q_proj.weight"]
    assert abs(float(q.std()) - 0.02) < 0.004
    assert torch.all(first["model.norm.weight"] == 1)


def _load_saved(folder) -> dict:
    from safetensors.torch import load_file

    tensors = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(f))
    return tensors


def test_uniform_weights_in_transformers_are_vllms_dummy_weights(tmp_path):
    weights = loaded_params(tiny_settings(tmp_path, "uniform"))
    floats = [v for v in weights.values() if torch.is_floating_point(v)]
    assert all(float(v.abs().max()) <= UNIFORM_HIGH for v in floats)
    # norm scales too (vLLM's dummy loader draws every tensor), not left at 1
    assert float(weights["model.norm.weight"].abs().max()) <= UNIFORM_HIGH
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert abs(float(q.std()) - UNIFORM_HIGH / np.sqrt(3)) < 1e-4


def test_random_weights_with_real_weights_is_refused_in_one_line(tmp_path):
    config = tiny_config(tmp_path, "shared")
    config["models"][0]["weights"] = str(tmp_path)
    with pytest.raises(ConfigError, match="random_weights: shared applies only to random weights"):
        check_semantics(config, "cfg.yaml", engines_needed=())


def test_configs_without_the_key_keep_the_committed_cells_settings_hash():
    """The key has no schema default, so the campaign's cells keep the hash they were measured under."""
    config = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / "campaign.yaml"])
    cells = pd.read_parquet(
        REPO_ROOT / "data/reference/nvidia-h200/campaign/cells/llama-3.1-8b/hf-sdpa/prefill/L4096.parquet"
    )
    assert "random_weights" not in config["models"][0]
    assert cell_settings_hash(config, "llama-3.1-8b") == cells["config_hash"].iloc[0]


@pytest.mark.slow
def test_the_workflow_generates_shared_weights_before_the_engine_loads(repo_copy):
    import subprocess
    import sys

    (repo_copy / "config" / "shared.yaml").write_text(
        "models:\n  - name: tiny-llama\n    random_weights: shared\nengines: [hf-sdpa]\nlengths: [64]\n"
        "phases: [prefill]\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "--cores",
            "1",
            "--configfile",
            "config/smoke.yaml",
            "config/shared.yaml",
            "--quiet",
            "rules",
        ],
        cwd=repo_copy,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "shared_weights" in out.stdout and "warmup_engine" in out.stdout


def test_compare_across_models_pairs_the_arms_of_one_shape(tmp_path):
    """The A/B's arms are model entries of one shape under other names: matched on engine, phase and L."""
    from ctxenergy.compare import compare_cells
    from ctxenergy.tables import read_cell, sibling, write_tables

    src = REPO_ROOT / "data/reference/nvidia-h200/campaign/cells/llama-3.1-8b/hf-sdpa/prefill"
    for arm, model, scale in (("a", "llama-3.1-8b", 1.0), ("b", "llama-3.1-8b-uniform", 1.10)):
        for name in ("L4096.parquet", "L32768.parquet"):
            windows, runs, trace, meta = read_cell(src / name)
            windows["model"] = model
            if arm == "b":
                windows["measured_at"] = "2026-12-06T02:00:00+00:00"  # measured again, not a copy
            for col in ("energy_per_run_j", "dynamic_energy_per_run_j"):
                windows[col] = windows[col] * scale
            out = tmp_path / arm / model / "hf-sdpa" / "prefill" / name
            write_tables(
                {out: (windows, meta), sibling(out, "runs"): (runs, None), sibling(out, "trace"): (trace, None)}
            )
    with pytest.raises(Exception, match="no cell is in both"):
        compare_cells(tmp_path / "a", tmp_path / "b")  # matched on the model too: nothing shared
    df = compare_cells(tmp_path / "a", tmp_path / "b", across_models=True)
    assert sorted(df["length_tokens"]) == [4096, 32768] and set(df["model"]) == {"llama-3.1-8b"}
    assert np.allclose(df["diff_pct"], 10.0) and (df["verdict"] == "differs").all()
