"""Random weights that do not depend on the engine: one set per model shape, shared by every engine.

Each engine initialises random weights its own way: transformers draws normal(0, initializer_range) (0.02 for the
shipped configs), vLLM's `load_format="dummy"` draws uniform(-1e-3, 1e-3) for every tensor. Under a power cap,
tensor-core power depends on operand values, so two engines measured on their own random weights differ by the
weights as well as by the engine. A model entry's `random_weights` chooses:

- `engine` (the default, what the reference campaign measured): each engine's own initialisation;
- `shared`: transformers' initialisation with a fixed seed, generated once (`ctxenergy weights`, the workflow's
  `shared_weights` rule: ctxenergy.engines.hf.make_shared_weights) and saved as safetensors in `weights_cache`,
  outside git; both engines load that folder;
- `uniform`: uniform(-1e-3, 1e-3) in every engine (vLLM's dummy weights; transformers applies it after building).
"""

from __future__ import annotations

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
