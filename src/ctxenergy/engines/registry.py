"""Every engine the package can measure, once: its name and what the config checks, the workflow, the measurement
and the analysis need to know about it. Adding an engine is one entry here and one engine module.

Nothing here imports an engine's Python package: the config checks read this table on a host without GPU libraries.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ctxenergy.settings import Settings


@dataclass(frozen=True)
class EngineInfo:
    name: str  # as in config.yaml's `engines:` and in every cell id
    label: str  # how tables and figures name it
    engine_class: str  # "module:Class" of its Engine (engines/base.py), imported only when an engine is made
    package: str  # the Python package it runs on; its version is a cell's engine_version
    extra: str  # the pip extra that installs that package
    conda_env: str  # the workflow's environment for its jobs: envs/<conda_env>.yaml
    options_key: str | None  # its settings under config `engine_options:`, if it reads any
    tensor_parallel: bool  # runs a model over several GPUs (models[].tp > 1)
    host_bound_decode: bool  # batch-1 decode waits on the host CPU (docs/measurement.md: 23-43 ms per step)
    prefill_fills_context: bool  # a prefill of exactly max_position_embeddings tokens runs (vLLM refuses it)
    family: str | None  # the seed paper's engine family it stands for in the claims ("HF", "vLLM"), or none
    # Its look in every figure, told apart by colour (Okabe-Ito: safe under colour-vision deficiency), by marker and
    # by line style (in greyscale).
    colour: str = "#555555"
    marker: str = "v"
    linestyle: str = "-"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.package) is not None

    def install_hint(self) -> str:
        return (
            f"engine '{self.name}' needs the Python package '{self.package}', which is not installed; "
            f"install it with: pip install -e '.[{self.extra}]'"
        )

    def load_class(self) -> type:
        module, cls = self.engine_class.split(":")
        return getattr(importlib.import_module(module), cls)

    def options(self, settings: Settings, variant: str = "default") -> dict:
        """Its settings of engine_options ({} where it reads none; every key the schema defines, None where not set),
        with those of `variant` (engine_variants) over them."""
        base = settings.engine_options.of(self.options_key) if self.options_key else {}
        if variant == "default":
            return base
        return {**base, **settings.engine_variants[self.name][variant].options}


# In display order: the baseline first, so that a ratio "a / b" reads "how much more the baseline costs".
ENGINES: dict[str, EngineInfo] = {
    e.name: e
    for e in (
        EngineInfo(
            name="hf-eager",
            label="hf-eager",
            engine_class="ctxenergy.engines.hf:HFEngine",
            package="transformers",
            extra="hf",
            conda_env="hf",
            options_key="hf",
            tensor_parallel=False,
            host_bound_decode=True,
            prefill_fills_context=True,
            family="HF",
            colour="#e69f00",  # orange
            marker="o",
            linestyle="-",
        ),
        EngineInfo(
            name="hf-sdpa",
            label="hf-sdpa",
            engine_class="ctxenergy.engines.hf:HFEngine",
            package="transformers",
            extra="hf",
            conda_env="hf",
            options_key="hf",
            tensor_parallel=False,
            host_bound_decode=True,
            prefill_fills_context=True,
            family="HF",
            colour="#0072b2",  # blue
            marker="s",
            linestyle="--",
        ),
        # transformers' paged path is ours, in neither of the paper's families: reported beside them, never the baseline
        EngineInfo(
            name="hf-paged",
            label="hf-paged",
            engine_class="ctxenergy.engines.hf:HFPagedEngine",
            package="transformers",
            extra="hf",
            conda_env="hf",
            options_key=None,
            tensor_parallel=False,
            host_bound_decode=True,
            prefill_fills_context=True,
            family=None,
            colour="#009e73",  # bluish green
            marker="^",
            linestyle="-.",
        ),
        EngineInfo(
            name="vllm",
            label="vllm",
            engine_class="ctxenergy.engines.vllm:VllmEngine",
            package="vllm",
            extra="vllm",
            conda_env="vllm",
            options_key="vllm",
            tensor_parallel=True,
            host_bound_decode=False,
            prefill_fills_context=False,
            family="vLLM",
            colour="#cc79a7",  # reddish purple
            marker="D",
            linestyle=":",
        ),
    )
}
ENGINE_NAMES = tuple(ENGINES)
# HF's default attention: job times of other engines are estimated as ratios to it (budget.py), and its package
# builds shared random weights (weights.py).
REFERENCE_ENGINE = "hf-sdpa"


def engine_rank(name: str) -> int:
    """Position in the display order; an unknown engine after all known ones."""
    return ENGINE_NAMES.index(name) if name in ENGINES else len(ENGINE_NAMES)


def family(name: str) -> tuple[str, ...]:
    """The engines of one of the seed paper's engine families ("HF", "vLLM"), in display order."""
    return tuple(e.name for e in ENGINES.values() if e.family == name)


def engine_installed(name: str) -> bool:
    return ENGINES[name].installed()
