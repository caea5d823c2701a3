"""Random weights that do not depend on the engine: one set per model shape, shared by every engine.

Each engine initialises random weights its own way: transformers draws normal(0, initializer_range) (0.02 for the
shipped configs), vLLM's `load_format="dummy"` draws uniform(-1e-3, 1e-3) for every tensor. Under a power cap,
tensor-core power depends on operand values, so two engines measured on their own random weights differ by the
weights as well as by the engine. A model entry's `random_weights` chooses:

- `engine` (the default, what the reference campaign measured): each engine's own initialisation;
- `shared`: transformers' initialisation with a fixed seed, generated once (`ctxenergy weights`, the workflow's
  `shared_weights` rule) and saved as safetensors in `weights_cache`, outside git; both engines load that folder;
- `uniform`: uniform(-1e-3, 1e-3) in every engine (vLLM's dummy weights; transformers applies it after building).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ctxenergy.errors import ConfigError

if TYPE_CHECKING:
    from ctxenergy.settings import Settings

RANDOM_WEIGHTS = ("engine", "shared", "uniform")
SHARED_SEED = 0
# vLLM's initialize_dummy_weights bounds (model_executor/model_loader/weight_utils.py)
UNIFORM_LOW, UNIFORM_HIGH = -1e-3, 1e-3
MARKER = "ctxenergy-weights.json"  # written last: a folder without it is incomplete


def random_weights_mode(entry: dict) -> str:
    """How a `models:` entry draws random weights; "engine" where it does not say (the schema fills in no default,
    so that configs without the key keep their cells' settings hash)."""
    return entry.get("random_weights", "engine")


def shared_weights_dir(settings: Settings, model: str) -> Path:
    return Path(settings.weights_cache) / model


def shared_weights_marker(settings: Settings, model: str) -> Path:
    return shared_weights_dir(settings, model) / MARKER


def require_shared_weights(spec) -> None:
    """Before an engine loads shared weights: they must have been generated completely (the marker is last)."""
    if spec.random_weights == "shared" and not (Path(spec.weights) / MARKER).is_file():
        raise ConfigError(
            f"model '{spec.name}': its shared random weights are not in {spec.weights}; generate them with "
            f"`ctxenergy weights --config <config> --model {spec.name}` (the workflow's shared_weights rule does)"
        )


def weights_label(mode: str, weights: str | None) -> str:
    """What a cell records as its weights: real weights by path or id, random weights by how they were drawn."""
    if mode == "shared":
        return f"random-shared-seed{SHARED_SEED}"
    if mode == "uniform":
        return f"random-uniform{UNIFORM_HIGH:g}"
    return weights or "random"


def apply_uniform(model) -> None:
    """vLLM's dummy initialisation on a built torch model: every floating tensor of the state dict (norm scales
    included) uniform in [-1e-3, 1e-3]."""
    import torch

    with torch.no_grad():
        for tensor in model.state_dict().values():
            if torch.is_floating_point(tensor):
                tensor.uniform_(UNIFORM_LOW, UNIFORM_HIGH)


def make_shared_weights(settings: Settings, model: str) -> Path:
    """Generate the model's shared random weights once (seeded transformers init on the config's device) and save
    them as safetensors beside a copy of its config.json; the marker file is written last."""
    import torch

    from ctxenergy.engines.hf import build_hf_model
    from ctxenergy.models import resolve_model

    spec = resolve_model(settings, model)
    if spec.random_weights != "shared":
        raise ConfigError(f"model '{model}' does not use random_weights: shared; nothing to generate")
    out = shared_weights_dir(settings, model)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    torch.manual_seed(SHARED_SEED)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(SHARED_SEED)
    hf = build_hf_model(spec.with_engine_init(), "sdpa", settings.dtype, settings.device)
    hf.save_pretrained(tmp, safe_serialization=True)
    out.mkdir(parents=True, exist_ok=True)
    for path in tmp.iterdir():
        path.replace(out / path.name)
    tmp.rmdir()
    info = {"model": model, "init": "transformers", "seed": SHARED_SEED, "dtype": settings.dtype,
            "device": settings.device, "torch": torch.__version__, "seconds": round(time.perf_counter() - t0, 1),
            "files": sorted(p.name for p in out.iterdir())}
    (out / MARKER).write_text(json.dumps(info, indent=1))
    return out
