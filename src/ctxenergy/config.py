"""Load and validate a study configuration: schema first (types, defaults), then the checks a schema cannot express."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from ctxenergy.engines.registry import ENGINE_NAMES, ENGINES, engine_installed
from ctxenergy.errors import ConfigError, CtxEnergyError
from ctxenergy.files import write_text
from ctxenergy.grid import Cell
from ctxenergy.paths import BENCHMARKS_DIR, CONFIG_SCHEMA, MODELS_DIR, REPO_ROOT, SETTINGS_DIR
from ctxenergy.weights import random_weights_mode


def load_schema() -> dict:
    return yaml.safe_load(CONFIG_SCHEMA.read_text())


def _with_defaults(validator_class):
    """A validator that fills `default` values in as it validates (as snakemake.utils.validate does)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = json.loads(json.dumps(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def engine_options_defaults() -> dict:
    """`engine_options` of a config that sets none of them: the schema's defaults, filled in as for a whole config."""
    section: dict = {}
    _with_defaults(jsonschema.Draft202012Validator)(load_schema()["properties"]["engine_options"]).validate(section)
    return section


def _path_of(error: jsonschema.ValidationError) -> str:
    parts = []
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else (f".{p}" if parts else str(p)))
    return "".join(parts) or "(top level)"


def validate_schema(config: dict, source: str = "config") -> dict:
    """Validate against the JSON schema and fill defaults, in place; one line per error."""
    e = _first_schema_error(config)
    if e is not None:
        raise ConfigError(f"{source}: {_path_of(e)}: {e.message}")
    return config


def _first_schema_error(config: dict) -> jsonschema.ValidationError | None:
    validator = _with_defaults(jsonschema.Draft202012Validator)(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    return errors[0] if errors else None


def model_config_path(model: dict) -> Path:
    path = Path(model.get("config") or MODELS_DIR / model["name"] / "config.json")
    return path if path.is_absolute() else (Path.cwd() / path if (Path.cwd() / path).exists() else REPO_ROOT / path)


def read_model_config(model: dict) -> dict:
    path = model_config_path(model)
    if not path.is_file():
        raise ConfigError(
            f"model '{model['name']}': no architecture config at {path}; "
            f"add data/models/{model['name']}/config.json or set models[].config"
        )
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{path}: model '{model['name']}': not valid JSON ({exc}); fix the file or point "
            "models[].config at a model's config.json"
        ) from None


def check_semantics(config: dict, source: str = "config", engines_needed: tuple[str, ...] | None = None) -> dict:
    """Checks a schema cannot express: known names, lengths within the model, files that must exist."""
    for i, engine in enumerate(config["engines"]):
        if engine not in ENGINES:
            raise ConfigError(
                f"{source}: engines[{i}] '{engine}' is not a known engine (known: {', '.join(ENGINE_NAMES)})"
            )
    for i, length in enumerate(config["lengths"]):
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ConfigError(f"{source}: lengths[{i}] = {length!r} is not a positive integer number of tokens")
    if config["generate_tokens"] < 1:
        raise ConfigError(f"{source}: generate_tokens = {config['generate_tokens']} must be >= 1 (G output tokens)")
    names = [m["name"] for m in config["models"]]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: models: duplicate model name in {names}")
    for model in config["models"]:
        arch = read_model_config(model)
        max_pos = arch.get("max_position_embeddings")
        too_long = [L for L in config["lengths"] if max_pos and L > max_pos]
        if too_long:
            raise ConfigError(
                f"{source}: lengths {too_long} exceed model '{model['name']}' max_position_embeddings={max_pos}; "
                "remove them or use a model with a longer context"
            )
        weights = model.get("weights")
        if weights and random_weights_mode(model) != "engine":
            raise ConfigError(
                f"{source}: model '{model['name']}': random_weights: {model['random_weights']} applies only to random "
                "weights, but weights names real ones; remove one of the two"
            )
        if weights and _looks_like_path(weights) and not Path(weights).exists():
            raise ConfigError(
                f"{source}: model '{model['name']}': weights path '{weights}' does not exist; "
                "point it at a local model directory or set weights: null for random weights"
            )
        if model["tp"] > 1:
            bad = [e for e in config["engines"] if not ENGINES[e].tensor_parallel]
            if bad:
                tp_engines = ", ".join(e.name for e in ENGINES.values() if e.tensor_parallel)
                raise ConfigError(
                    f"{source}: model '{model['name']}' has tp={model['tp']}, which engines {bad} do not support "
                    f"(tensor parallel: {tp_engines})"
                )
    for engine in engines_needed if engines_needed is not None else config["engines"]:
        if not engine_installed(engine):
            raise ConfigError(f"{source}: {ENGINES[engine].install_hint()}")
    _check_variants(config, source)
    _check_spot_check(config, source)
    _check_budget(config, source)
    _check_window_counts(config, source)
    return config


def _check_variants(config: dict, source: str) -> None:
    """engine_variants: over lengths and batch sizes of the grid, with the options the engine's `engine_options`
    accepts. Variants of an engine the grid leaves out are not measured (a run of one engine of a config that
    names variants of another, as campaign.yaml suggests: --config 'engines=["hf-sdpa"]')."""
    schema = load_schema()["properties"]["engine_options"]["properties"]
    for engine, variants in config["engine_variants"].items():
        if engine not in ENGINES:  # checked here, not in the schema, so that the registry alone names the engines
            raise ConfigError(
                f"{source}: engine_variants: '{engine}' is not a known engine (known: {', '.join(ENGINE_NAMES)})"
            )
        where = f"{source}: engine_variants.{engine}"
        if engine not in config["engines"]:
            continue
        key = ENGINES[engine].options_key
        for name, variant in variants.items():
            for axis, grid in (("lengths", config["lengths"]), ("batch_sizes", config["batch_sizes"])):
                extra = [v for v in variant.get(axis, []) if v not in grid]
                if extra:
                    raise ConfigError(
                        f"{where}.{name}.{axis}: {extra} not in the grid's {axis} ({grid}); add them "
                        f"to {axis} or remove them from the variant"
                    )
            options = variant["options"]
            if key is None:
                raise ConfigError(f"{where}.{name}.options: {engine} reads no engine options; remove the variant")
            error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema[key]).iter_errors(options))
            if error is not None:
                raise ConfigError(f"{where}.{name}.options: {error.message} (the keys of engine_options.{key})")
            merged = {**config["engine_options"][key], **options}
            if merged.get("distinct_prompts") and merged.get("warmup_same_prompt"):
                raise ConfigError(
                    f"{where}.{name}.options: distinct_prompts and warmup_same_prompt contradict each other; drop one"
                )


def _check_window_counts(config: dict, source: str) -> None:
    low, high = (measure_setting(config["measure"], k) for k in ("min_windows", "max_windows"))
    if high < low:
        raise ConfigError(
            f"{source}: measure.max_windows = {high} is below measure.min_windows = {low}; "
            "raise max_windows or lower min_windows (at least 3)"
        )


def _check_budget(config: dict, source: str) -> None:
    if config["budget_s"] is None:
        return
    if not config["job_times"]:
        raise ConfigError(
            f"{source}: budget_s needs job_times to estimate job times from: set it to folders of "
            "earlier jobs' benchmark files, e.g. data/reference/nvidia-h200/campaign/jobs"
        )
    missing = [d for d in config["job_times"] if not Path(d, "measure_cell").is_dir()]
    if missing:
        raise ConfigError(
            f"{source}: job_times: {missing[0]} has no measure_cell/ folder of job benchmark files; "
            f"name a folder like {BENCHMARKS_DIR} or data/reference/nvidia-h200/campaign/jobs"
        )


def _check_spot_check(config: dict, source: str) -> None:
    """Every spot-check cell must be a cell of this grid (else its job would not exist), before any GPU time."""
    grid = {
        "model": [m["name"] for m in config["models"]],
        "engine": config["engines"],
        "phase": config["phases"],
        "length": config["lengths"],
    }
    spot = config["spot_check"]
    if spot["cells"] and not spot["reference"]:
        raise ConfigError(
            f"{source}: spot_check.cells names cells but spot_check.reference is not set; set it to a "
            "folder of reference cells, e.g. data/reference/nvidia-h200/campaign/cells"
        )
    for cell_id in spot["cells"]:
        cell = Cell.from_id(cell_id)  # the schema has checked the id's form
        for what, value in (
            ("model", cell.model),
            ("engine", cell.engine),
            ("phase", cell.phase),
            ("length", cell.length),
        ):
            if value not in grid[what]:
                raise ConfigError(
                    f"{source}: spot_check.cells: {cell_id}: {what} {value} is not in this config's "
                    f"{what}s ({', '.join(map(str, grid[what]))})"
                )


def _looks_like_path(weights: str) -> bool:
    # A hub id is "org/name"; anything absolute, relative-dotted or with more parts is a path.
    return weights.startswith(("/", ".", "~")) or weights.count("/") != 1 or Path(weights).exists()


def merge_config(config: dict, overlay: dict) -> dict:
    """Merge `overlay` into `config` in place as Snakemake merges config files: mappings key by key, others replaced."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            merge_config(config[key], value)
        else:
            config[key] = value
    return config


def load_config(path: str | Path, overrides: list[str | Path] = ()) -> dict:
    """Read a YAML config and the files layered over it (merged like Snakemake's --configfile), validate it."""
    config: dict[str, Any] = {}
    for p in [path, *overrides]:
        p = Path(p)
        if not p.is_file():
            raise ConfigError(
                f"{p}: no such config file; check the path (a study config such as config.yaml or one in config/)"
            )
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: not a mapping of config keys (it holds a {type(data).__name__}); see config.yaml")
        merge_config(config, data)
    source = str(path)
    validate_schema(config, source)
    return config


def key_sources(files: list[str | Path], key: str) -> list[str]:
    """The files among `files` (read in order) that set top-level `key`: the last one decides its value."""
    found = []
    for p in files:
        with contextlib.suppress(OSError, yaml.YAMLError):
            data = yaml.safe_load(Path(p).read_text())
            if isinstance(data, dict) and key in data:
                found.append(str(p))
    return found


def _as_in_a_config_file(value):
    """A --config value with its scalars read as YAML, as a config file would give them."""
    if isinstance(value, str):
        parsed = yaml.safe_load(value) if value.strip() else value
        return parsed if isinstance(parsed, (int, float, bool, str, type(None))) else value
    if isinstance(value, dict) or hasattr(value, "items"):
        return {k: _as_in_a_config_file(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_in_a_config_file(v) for v in value]
    return value


def validate_workflow_config(config: dict, command_line: dict) -> dict:
    """The workflow's merged config: values given with Snakemake's --config typed as YAML (Snakemake passes the items
    of a list as strings: 'lengths=[256,1024]' arrives as ['256', '1024']), then the schema, with defaults, one line."""
    merge_config(config, {k: _as_in_a_config_file(v) for k, v in command_line.items()})
    e = _first_schema_error(config)
    if e is None:
        return config
    message = f"config: {_path_of(e)}: {e.message}"
    key = next(iter(e.absolute_path), None)
    if key not in command_line:
        raise ConfigError(message)
    wants = e.validator_value if e.validator == "type" else None
    given = command_line[key]
    if wants == "array":
        fix = f"write a list: --config '{key}=[a, b]'"
    elif wants == "object" or (hasattr(given, "items") and any(":" in str(k) for k in given)):
        fix = f"write a mapping with a space after each colon: --config '{key}={{name: value}}'"
    else:
        fix = f"correct --config {key}=..."
    raise ConfigError(f"{message}; {fix}, or set {key} in a file given with --configfile")


# Measurement settings that decide how jobs reach the GPU, not what a cell measures: left out of the cell hash.
HOW_NOT_WHAT = ("engine_reuse", "engine_host_idle_s")
# Protocol settings added after the reference campaign, with the values that reproduce its protocol. The schema gives
# them no default (a filled-in default would enter every cell's hash and orphan the committed cells); code reads them
# with `measure_setting`, and the hash leaves each out while it has this value.
PROTOCOL_OPT_IN = {
    "target_half_width_pct": None,  # None: `repeats` windows, as before
    "target_energy": "total",  # the energy per run the target applies to
    "host_bound_target_half_width_pct": None,  # None: host-bound generate cells take target_half_width_pct
    "host_bound_target_energy": None,  # None: host-bound generate cells take target_energy
    "min_windows": 3,
    "max_windows": 5,  # the campaign's count: a target only ever shortens a cell
    "idle_recheck_s": None,  # None: a full idle baseline in every cell
    "idle_recheck_tolerance_pct": 2.0,
    "warmup_shared_s": None,  # None: every cell warms up for one window
}


def measure_setting(settings: dict, key: str):
    """A `measure:` setting of PROTOCOL_OPT_IN, or its value that reproduces the reference campaign's protocol."""
    return settings.get(key, PROTOCOL_OPT_IN[key])


def cell_settings_hash(config: dict, model: str) -> str:
    """Hash of the settings that change a cell's numbers (not figure options), recorded in every cell."""
    relevant = {
        "device": config["device"],
        "dtype": config["dtype"],
        "model": next(m for m in config["models"] if m["name"] == model),
        "generate_tokens": config["generate_tokens"],
        "measure": {
            k: v
            for k, v in config["measure"].items()
            if k not in HOW_NOT_WHAT and not (k in PROTOCOL_OPT_IN and v == PROTOCOL_OPT_IN[k])
        },
        "engine_options": config["engine_options"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def cells_under_other_settings(cells: list[dict], config: dict) -> dict[str, list[str]]:
    """The cells (dicts with cell_id, model, config_hash) not measured under `config`'s settings for their model,
    as {the settings hash they were measured under: [cell ids]}."""
    models = {m["name"] for m in config["models"]}
    wanted = {name: cell_settings_hash(config, name) for name in models}
    other: dict[str, list[str]] = {}
    for cell in cells:
        if cell.get("model") not in models or cell.get("config_hash") != wanted[cell["model"]]:
            other.setdefault(str(cell.get("config_hash")), []).append(str(cell.get("cell_id")))
    return other


def check_cell_settings(rows: list[dict], config: dict, source: str, allow_mixed_settings: bool) -> None:
    """Stop, in one line naming them, before cells measured under other settings than `config` are combined."""
    other = cells_under_other_settings(rows, config)
    if not other:
        return
    n = sum(map(len, other.values()))
    named = "; ".join(f"settings {h}: {', '.join(ids)}" for h, ids in sorted(other.items()))
    line = f"{source}: {n} of {len(rows)} cells were measured under other settings than these ({named})"
    if not allow_mixed_settings:
        raise CtxEnergyError(
            f"{line}; re-measure them (delete them and rerun), or combine them knowingly with "
            "allow_mixed_settings: true (snakemake --config allow_mixed_settings=True; ctxenergy "
            "aggregate --allow-mixed-settings)"
        )
    print(f"ctxenergy: {line}; combined as allow_mixed_settings asks", file=sys.stderr)


class SettingsSnapshot:
    """A run's settings snapshot as a rule param: its path, formatted into the job's command.

    Not a str on purpose: Snakemake compares only params of built-in types with the previous run, so a new snapshot
    (one more length, another budget) does not rerun the cells measured before; the cell's own `settings` param (its
    settings hash) decides that.
    """

    def __init__(self, path: str | Path):
        self.path = str(path)

    def __str__(self) -> str:
        return self.path

    __fspath__ = __str__


def write_settings_snapshot(config: dict, directory: str | Path = SETTINGS_DIR) -> SettingsSnapshot:
    """The merged config for the jobs, as `<directory>/<hash of its content>.yaml`: written once, atomically, and
    never rewritten, so that no later parse (a dry run, --lint, another run with other settings) changes the
    settings of jobs already running."""
    text = yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False)
    path = Path(directory) / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.yaml"
    if path.exists():
        if path.read_text() != text:
            raise ConfigError(f"{path}: settings snapshot does not match its name (edited?); delete it and rerun")
        return SettingsSnapshot(path)
    write_text(text, path)  # a concurrent parse writing the same settings writes the same bytes
    return SettingsSnapshot(path)
