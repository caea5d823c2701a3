"""A study's settings as typed, read-only values, built once from the validated config.

The schema (workflow/schemas/config.schema.yaml) is the one source of defaults: `config.validate_schema` fills them
in, and `Settings.from_config` copies the filled-in config into frozen dataclasses whose fields have no defaults of
their own. Keys the schema leaves without a default on purpose (so that configs without them keep their cells'
settings hash) take, for `measure:`, the reference campaign's values of `config.PROTOCOL_OPT_IN`; elsewhere None
stands for "not set".

Snakemake's rules keep their dict `config`; the package's modules take a `Settings`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from types import MappingProxyType

from ctxenergy.config import PROTOCOL_OPT_IN, engine_options_defaults
from ctxenergy.errors import ConfigError
from ctxenergy.grid import DEFAULT_VARIANT
from ctxenergy.weights import random_weights_mode


@dataclass(frozen=True)
class ModelSettings:
    """One entry of `models:`."""

    name: str
    config: str | None  # None: data/models/<name>/config.json
    weights: str | None  # None: random weights
    tokenizer: str
    random_weights: str  # "engine" where the entry does not say (ctxenergy.weights.random_weights_mode)
    tp: int

    @classmethod
    def from_entry(cls, entry: dict) -> ModelSettings:
        return cls(
            name=entry["name"],
            config=entry.get("config"),
            weights=entry["weights"],
            tokenizer=entry["tokenizer"],
            random_weights=random_weights_mode(entry),
            tp=entry["tp"],
        )


@dataclass(frozen=True)
class EngineVariant:
    """One variant of `engine_variants.<engine>`: options over the engine's, optionally on part of the grid."""

    options: Mapping[str, object]  # a partial set of the engine's `engine_options` keys
    lengths: tuple[int, ...] | None  # None: all the grid's lengths
    batch_sizes: tuple[int, ...] | None  # None: all the grid's batch sizes

    @classmethod
    def from_entry(cls, entry: dict) -> EngineVariant:
        return cls(
            options=MappingProxyType(dict(entry["options"])),
            lengths=_tuple_or_none(entry.get("lengths")),
            batch_sizes=_tuple_or_none(entry.get("batch_sizes")),
        )


@dataclass(frozen=True)
class SpotCheckSettings:
    reference: str | None
    cells: tuple[str, ...]


@dataclass(frozen=True)
class MeasureSettings:
    """The measurement protocol of one cell (`measure:`)."""

    warmup: bool
    repeats: int
    min_window_s: float
    max_runs_per_window: int
    idle_s: float
    sample_interval_s: float
    cooldown_s: float
    # PROTOCOL_OPT_IN: the config's value, else the one that reproduces the reference campaign's protocol
    target_half_width_pct: float | None
    target_energy: str
    host_bound_target_half_width_pct: float | None
    host_bound_target_energy: str | None
    min_windows: int
    max_windows: int
    idle_recheck_s: float | None
    idle_recheck_tolerance_pct: float
    warmup_shared_s: float | None
    engine_reuse: bool
    engine_host_idle_s: float
    gpu_claim_timeout_s: float

    @classmethod
    def from_section(cls, section: dict) -> MeasureSettings:
        return cls(
            **{
                f.name: section.get(f.name, PROTOCOL_OPT_IN[f.name]) if f.name in PROTOCOL_OPT_IN else section[f.name]
                for f in fields(cls)
            }
        )


@dataclass(frozen=True)
class HfOptions:
    """`engine_options.hf`: hf-eager and hf-sdpa; None: not set, torch's own kernel order applies."""

    prefill_cuda_graph: bool
    prefill_cuda_graph_max_tokens: int
    attention_kernel_order: tuple[str, ...] | None


@dataclass(frozen=True)
class VllmOptions:
    """`engine_options.vllm`; None: not set, vLLM's own default applies."""

    enable_prefix_caching: bool
    enforce_eager: bool
    compilation_level: int | None
    gpu_memory_utilization: float
    warmup_same_prompt: bool
    chunked_prefill: bool | None
    max_num_batched_tokens: int | None
    max_num_seqs: int | None
    distinct_prompts: bool | None


@dataclass(frozen=True)
class EngineOptions:
    hf: HfOptions
    vllm: VllmOptions

    @classmethod
    def from_section(cls, section: dict) -> EngineOptions:
        """From a validated, default-filled `engine_options`: a key the schema leaves without a default is None
        where the config does not set it."""
        hf, vllm = section["hf"], section["vllm"]
        order = hf.get("attention_kernel_order")
        return cls(
            hf=HfOptions(
                prefill_cuda_graph=hf["prefill_cuda_graph"],
                prefill_cuda_graph_max_tokens=hf["prefill_cuda_graph_max_tokens"],
                attention_kernel_order=tuple(order) if order is not None else None,
            ),
            vllm=VllmOptions(**{f.name: vllm.get(f.name) for f in fields(VllmOptions)}),
        )

    @classmethod
    def schema_defaults(cls) -> EngineOptions:
        """The options of a config that sets none: for an engine made outside a study (tests, benchmarks)."""
        return cls.from_section(engine_options_defaults())

    def of(self, key: str) -> dict:
        """The options under `key` (registry.EngineInfo.options_key) as the engines read them: every key, None
        where it is not set."""
        return asdict(getattr(self, key))


@dataclass(frozen=True)
class Settings:
    """A validated, default-filled study config (see the schema for what each field means)."""

    study: str
    device: str
    dtype: str
    models: tuple[ModelSettings, ...]
    weights_cache: str
    engines: tuple[str, ...]
    lengths: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    engine_variants: Mapping[str, Mapping[str, EngineVariant]]  # engine -> variant name -> variant
    phases: tuple[str, ...]
    generate_tokens: int
    cells_source: str | None
    allow_mixed_settings: bool
    publish_to: str
    spot_check: SpotCheckSettings
    budget_s: float | None
    job_times: tuple[str, ...]
    provenance_logs: tuple[str, ...]
    measure: MeasureSettings
    engine_options: EngineOptions
    # Not a schema key: the validated config as JSON, key order and absent keys as given. A cell records its
    # `measure:` block and hashes its settings in that form (config.cell_settings_hash), which must not change.
    as_given: str

    @classmethod
    def from_config(cls, config: dict) -> Settings:
        """From a config that `config.validate_schema` (or `validate_workflow_config`) has checked and filled."""
        return cls(
            study=config["study"],
            device=config["device"],
            dtype=config["dtype"],
            models=tuple(ModelSettings.from_entry(m) for m in config["models"]),
            weights_cache=config["weights_cache"],
            engines=tuple(config["engines"]),
            lengths=tuple(config["lengths"]),
            batch_sizes=tuple(config["batch_sizes"]),
            engine_variants=MappingProxyType(
                {
                    engine: MappingProxyType({name: EngineVariant.from_entry(v) for name, v in variants.items()})
                    for engine, variants in config["engine_variants"].items()
                }
            ),
            phases=tuple(config["phases"]),
            generate_tokens=config["generate_tokens"],
            cells_source=config["cells_source"],
            allow_mixed_settings=config["allow_mixed_settings"],
            publish_to=config["publish_to"],
            spot_check=SpotCheckSettings(config["spot_check"]["reference"], tuple(config["spot_check"]["cells"])),
            budget_s=config["budget_s"],
            job_times=tuple(config["job_times"]),
            provenance_logs=tuple(config["provenance_logs"]),
            measure=MeasureSettings.from_section(config["measure"]),
            engine_options=EngineOptions.from_section(config["engine_options"]),
            as_given=json.dumps(config),
        )

    def given_config(self) -> dict:
        """The validated config as given (a fresh copy: changing it changes nothing here)."""
        return json.loads(self.as_given)

    def variants(self, engine: str) -> dict[str, EngineVariant]:
        """The engine's variants of `engine_variants` by name, default (the engine as `engine_options` sets it)
        first."""
        return {
            DEFAULT_VARIANT: EngineVariant(MappingProxyType({}), None, None),
            **self.engine_variants.get(engine, {}),
        }

    def model(self, name: str) -> ModelSettings:
        """The entry of model `name`; ConfigError naming the config's models if it has none."""
        for entry in self.models:
            if entry.name == name:
                return entry
        raise ConfigError(f"model '{name}' is not in the config (models: {', '.join(m.name for m in self.models)})")


def _tuple_or_none(values) -> tuple | None:
    return None if values is None else tuple(values)
