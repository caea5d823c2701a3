import copy
from pathlib import Path

import pytest
import yaml

from ctxenergy.config import check_semantics, load_config, validate_schema
from ctxenergy.errors import ConfigError
from ctxenergy.paths import REPO_ROOT


def default_config():
    return yaml.safe_load((REPO_ROOT / "config.yaml").read_text())


def validated(cfg):
    return check_semantics(validate_schema(cfg), engines_needed=())


def test_default_and_smoke_configs_validate_and_get_defaults():
    cfg = load_config(REPO_ROOT / "config.yaml")
    check_semantics(cfg)
    assert cfg["measure"]["sample_interval_s"] == 0.01  # default filled from the schema
    assert cfg["engine_options"]["vllm"]["enable_prefix_caching"] is False
    assert {m["name"] for m in cfg["models"]} == {"llama-3.1-8b", "qwen2-7b"}
    assert sorted(cfg["lengths"]) == [2**k for k in range(8, 17)] + [114688, 2**17]
    smoke = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / "smoke.yaml"])
    check_semantics(smoke)
    assert [m["name"] for m in smoke["models"]] == ["tiny-llama"]  # a list replaces, never merges


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(engins=["hf-sdpa"]), "Additional properties are not allowed ('engins'"),
        (
            lambda c: c.update(engines=["vlm"]),
            "engines[0] 'vlm' is not a known engine (known: hf-eager, hf-sdpa, hf-paged, vllm)",
        ),
        (
            lambda c: c.update(engine_variants={"vlm": {"eager": {"options": {"enforce_eager": True}}}}),
            "engine_variants: 'vlm' is not a known engine (known: hf-eager, hf-sdpa, hf-paged, vllm)",
        ),
        (lambda c: c["models"].append({"name": "gpt-9"}), "model 'gpt-9': no architecture config"),
        (
            lambda c: c.update(lengths=[1024, 262144]),
            "lengths [262144] exceed model 'llama-3.1-8b' max_position_embeddings=131072",
        ),
        (lambda c: c.update(lengths=[0]), "lengths[0] = 0 is not a positive integer"),
        (lambda c: c.update(lengths=[-5]), "lengths[0] = -5 is not a positive integer"),
        (lambda c: c.update(lengths=["1k"]), "lengths[0]: '1k' is not of type 'integer'"),
        (lambda c: c.update(lengths=[2.5]), "lengths[0]: 2.5 is not of type 'integer'"),
        (lambda c: c.update(generate_tokens=0), "generate_tokens = 0 must be >= 1"),
        (lambda c: c.update(lengths=[]), "lengths: [] should be non-empty"),
        (lambda c: c.update(models=[]), "models: [] should be non-empty"),
        (lambda c: c.update(engines=[]), "engines: [] should be non-empty"),
        (lambda c: c["models"][0].update(weights="./no/such/dir"), "weights path './no/such/dir' does not exist"),
        (lambda c: c["measure"].update(repeats=0), "measure.repeats: 0 is less than the minimum of 1"),
        (lambda c: c["measure"].update(min_windows=2), "measure.min_windows: 2 is less than the minimum of 3"),
        (
            lambda c: c["measure"].update(min_windows=6, max_windows=4),
            "measure.max_windows = 4 is below measure.min_windows = 6",
        ),
        (lambda c: c["measure"].update(target_half_width_pct=0), "measure.target_half_width_pct: 0 is less than or"),
        (lambda c: c["models"][0].update(tp=2), "tp=2, which engines ['hf-eager', 'hf-sdpa'] do not support"),
        (
            lambda c: c.update(spot_check={"cells": ["llama-3.1-8b/hf-sdpa/prefill/L1024"]}),
            "spot_check.cells names cells but spot_check.reference is not set",
        ),
        (
            lambda c: c.update(spot_check={"reference": "r", "cells": ["llama-3.1-8b/vllm/prefill/L1024"]}),
            "spot_check.cells: llama-3.1-8b/vllm/prefill/L1024: engine vllm is not in this config's engines",
        ),
        (
            lambda c: c.update(spot_check={"reference": "r", "cells": ["llama-3.1-8b/hf-sdpa/decode/L1024"]}),
            "spot_check.cells[0]: 'llama-3.1-8b/hf-sdpa/decode/L1024' does not match",
        ),
    ],
)
def test_bad_config_fails_with_one_line(mutate, message):
    cfg = default_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validated(cfg)
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_missing_engine_package_names_the_extra(monkeypatch):
    import ctxenergy.config as config_mod

    cfg = validate_schema(default_config())
    cfg["engines"] = ["hf-sdpa", "vllm"]
    monkeypatch.setattr(config_mod, "engine_installed", lambda e: e != "vllm")
    with pytest.raises(
        ConfigError, match=r"engine 'vllm' needs the Python package 'vllm'.*pip install -e '\.\[vllm\]'"
    ):
        config_mod.check_semantics(cfg)


def test_hub_id_weights_are_not_checked_as_paths():
    cfg = default_config()
    cfg["models"][0]["weights"] = "meta-llama/Llama-3.1-8B"
    validated(cfg)  # a hub id: resolved offline at load time, not a missing path


def test_settings_hash_ignores_grid_but_not_protocol():
    from ctxenergy.config import cell_settings_hash

    a = validate_schema(default_config())
    b = copy.deepcopy(a)
    b["lengths"] = [256]
    b["engines"] = ["hf-sdpa"]
    assert cell_settings_hash(a, "llama-3.1-8b") == cell_settings_hash(b, "llama-3.1-8b")
    b["measure"]["repeats"] = 9
    assert cell_settings_hash(a, "llama-3.1-8b") != cell_settings_hash(b, "llama-3.1-8b")


def test_campaign_cells_keep_their_settings_hash():
    """The committed campaign's cells were measured under config.yaml + config/campaign.yaml: a new measure setting
    with a schema default (filled into every config) would change this hash and orphan them."""
    import pandas as pd

    from ctxenergy.config import cell_settings_hash

    campaign = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / "campaign.yaml"])
    cells = pd.read_parquet(REPO_ROOT / "data" / "reference" / "nvidia-h200" / "campaign" / "cells.parquet")
    for model, hashes in cells.groupby("model")["config_hash"]:
        assert set(hashes) == {cell_settings_hash(campaign, model)}


def test_opt_in_protocol_settings_enter_the_hash_only_when_they_change_the_protocol():
    from ctxenergy.config import PROTOCOL_OPT_IN, cell_settings_hash

    base = validate_schema(default_config())
    explicit = copy.deepcopy(base)
    explicit["measure"].update(PROTOCOL_OPT_IN)  # every opt-in key at the value of the campaign's protocol
    assert cell_settings_hash(explicit, "llama-3.1-8b") == cell_settings_hash(base, "llama-3.1-8b")
    target = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / "protocol-target.yaml"])
    assert cell_settings_hash(target, "llama-3.1-8b") != cell_settings_hash(base, "llama-3.1-8b")


@pytest.mark.parametrize("name", ["protocol-target.yaml", "protocol-target-shared-warmup.yaml"])
def test_target_protocols_window_length_comes_from_the_calibration(name):
    """The shipped window length is the shortest whose measured edge error fits the target (a new calibration that
    moves it must move the config too)."""
    import pandas as pd

    from ctxenergy.calibrate import shortest_window_s

    measure = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / name])["measure"]
    calibration = pd.read_csv(REPO_ROOT / "benchmarks" / "results" / "calibration.csv")
    assert measure["min_window_s"] == shortest_window_s(calibration, measure["target_half_width_pct"]) == 1.0


def test_settings_snapshot_is_written_once_by_content_and_never_rewritten(tmp_path):
    from ctxenergy.config import write_settings_snapshot

    a = validate_schema(default_config())
    first = write_settings_snapshot(a, tmp_path)
    stamp = Path(first).stat().st_mtime_ns
    assert yaml.safe_load(Path(first).read_text()) == a and Path(write_settings_snapshot(a, tmp_path)) == Path(first)
    assert Path(first).stat().st_mtime_ns == stamp  # the same settings: the file stays as it is
    b = copy.deepcopy(a)
    b["generate_tokens"] = 4  # another parse with other settings: another file, the first one untouched
    second = write_settings_snapshot(b, tmp_path)
    assert Path(second) != Path(first) and yaml.safe_load(Path(first).read_text()) == a
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([Path(first).name, Path(second).name])
    Path(first).write_text("generate_tokens: 1\n")
    with pytest.raises(ConfigError, match="settings snapshot does not match its name"):
        write_settings_snapshot(a, tmp_path)


def test_unreadable_yaml_is_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p)


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid_over_the_default(path):
    """Each file in config/ is used as `--configfile` over config.yaml: together they must pass the schema and the
    semantic checks (engines need not be installed here)."""
    config = load_config(REPO_ROOT / "config.yaml", [path])
    check_semantics(config, str(path), engines_needed=())


def test_campaign_runs_one_engine_at_a_time_and_spot_checks_with_its_own_file():
    # The campaign is run engine by engine (--config 'engines=[...]'): no part of campaign.yaml may tie it to one
    # engine. A spot_check naming hf-sdpa cells once sat in campaign.yaml and refused every hf-eager run.
    campaign = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / "campaign.yaml"])
    for engine in campaign["engines"]:
        check_semantics({**campaign, "engines": [engine]}, engines_needed=())
    spot = load_config(
        REPO_ROOT / "config.yaml", [REPO_ROOT / "config" / "campaign.yaml", REPO_ROOT / "config" / "spot-check.yaml"]
    )
    check_semantics(spot)  # hf-sdpa only: needs no vLLM
    assert spot["engines"] == ["hf-sdpa"] and len(spot["spot_check"]["cells"]) == 3
