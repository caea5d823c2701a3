"""The typed settings mirror the schema, key for key, cannot be changed, and take every default from the schema."""

import dataclasses
import json

import pytest

from ctxenergy.config import PROTOCOL_OPT_IN, cell_settings_hash, load_config, load_schema, validate_schema
from ctxenergy.paths import REPO_ROOT
from ctxenergy.settings import (
    EngineOptions,
    EngineVariant,
    HfOptions,
    MeasureSettings,
    ModelSettings,
    Settings,
    SpotCheckSettings,
    VllmOptions,
)

MINIMAL = {"models": [{"name": "tiny-llama"}], "engines": ["hf-sdpa"], "lengths": [64]}
# The one field that is no schema key: the config as given, which cells record and hash (Settings.as_given).
NOT_IN_SCHEMA = {"as_given"}
SCHEMA = load_schema()
VARIANT_SCHEMA = SCHEMA["properties"]["engine_variants"]["additionalProperties"]


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} - NOT_IN_SCHEMA


@pytest.mark.parametrize(
    "cls, schema",
    [
        (Settings, SCHEMA),
        (ModelSettings, SCHEMA["properties"]["models"]["items"]),
        (EngineVariant, VARIANT_SCHEMA["additionalProperties"]),
        (SpotCheckSettings, SCHEMA["properties"]["spot_check"]),
        (MeasureSettings, SCHEMA["properties"]["measure"]),
        (EngineOptions, SCHEMA["properties"]["engine_options"]),
        (HfOptions, SCHEMA["properties"]["engine_options"]["properties"]["hf"]),
        (VllmOptions, SCHEMA["properties"]["engine_options"]["properties"]["vllm"]),
    ],
)
def test_every_schema_key_is_a_field_and_every_field_a_schema_key(cls, schema):
    assert field_names(cls) == set(schema["properties"])


def test_no_field_has_a_default_of_its_own():
    for cls in (
        Settings,
        ModelSettings,
        EngineVariant,
        SpotCheckSettings,
        MeasureSettings,
        EngineOptions,
        HfOptions,
        VllmOptions,
    ):
        for f in dataclasses.fields(cls):
            assert f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING, (cls, f.name)


def test_settings_are_read_only():
    settings = Settings.from_config(load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config/serving.yaml"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.device = "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.measure.repeats = 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.models[0].tp = 2
    with pytest.raises(TypeError):
        settings.engine_variants["vllm"]["chunked"] = None
    with pytest.raises(TypeError):
        settings.engine_variants["vllm"]["chunked"].options["chunked_prefill"] = False
    assert isinstance(settings.lengths, tuple) and isinstance(settings.models, tuple)
    given = settings.given_config()
    given["measure"]["repeats"] = 99  # a copy: the settings keep what was given
    assert settings.given_config()["measure"]["repeats"] != 99


def test_defaults_come_from_the_schema():
    settings = Settings.from_config(validate_schema(dict(MINIMAL)))
    props = SCHEMA["properties"]
    assert settings.generate_tokens == props["generate_tokens"]["default"]
    assert settings.batch_sizes == tuple(props["batch_sizes"]["default"])
    assert settings.measure.repeats == props["measure"]["properties"]["repeats"]["default"]
    assert settings.measure.gpu_claim_timeout_s == props["measure"]["properties"]["gpu_claim_timeout_s"]["default"]
    hf = props["engine_options"]["properties"]["hf"]["properties"]
    assert settings.engine_options.hf.prefill_cuda_graph_max_tokens == hf["prefill_cuda_graph_max_tokens"]["default"]
    assert settings.models[0].tp == props["models"]["items"]["properties"]["tp"]["default"]
    # keys the schema leaves without a default: the reference campaign's protocol, or not set
    assert {k: getattr(settings.measure, k) for k in PROTOCOL_OPT_IN} == PROTOCOL_OPT_IN
    assert settings.engine_options.vllm.chunked_prefill is None and settings.models[0].random_weights == "engine"
    assert settings.engine_options.of("vllm")["chunked_prefill"] is None


@pytest.mark.parametrize("key", ["hf", "vllm"])
def test_engines_read_every_option_with_the_schemas_default(key):
    """No engine falls back on a default of its own: the options carry every key, None where the schema has no
    default (passed to the engine only where the config sets it)."""
    props = SCHEMA["properties"]["engine_options"]["properties"][key]["properties"]
    options = Settings.from_config(validate_schema(dict(MINIMAL))).engine_options
    assert options.of(key) == EngineOptions.schema_defaults().of(key) == {k: p.get("default") for k, p in props.items()}


def test_what_a_cell_records_is_the_config_as_given():
    config = load_config(REPO_ROOT / "config.yaml", [REPO_ROOT / "config/protocol-target.yaml"])
    settings = Settings.from_config(config)
    assert json.dumps(settings.given_config()["measure"]) == json.dumps(config["measure"])  # key order too
    assert cell_settings_hash(settings.given_config(), "llama-3.1-8b") == cell_settings_hash(config, "llama-3.1-8b")
