"""Engine adapters behind one interface (see base.py)."""

from __future__ import annotations

from ctxenergy.config import ENGINE_PACKAGES, KNOWN_ENGINES, engine_installed
from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.errors import ConfigError, EngineUnavailableError
from ctxenergy.models import ModelSpec
from ctxenergy.weights import require_shared_weights


def make_engine(name: str, spec: ModelSpec, config: dict) -> Engine:
    if name not in KNOWN_ENGINES:
        raise ConfigError(f"'{name}' is not a known engine (known: {', '.join(KNOWN_ENGINES)})")
    if not engine_installed(name):
        package, extra = ENGINE_PACKAGES[name]
        raise EngineUnavailableError(
            f"engine '{name}' needs the Python package '{package}', which is not installed; install it with: pip install -e '.[{extra}]'"
        )
    require_shared_weights(spec)
    if name in ("hf-eager", "hf-sdpa"):
        from ctxenergy.engines.hf import HFEngine

        return HFEngine(name, spec, config["dtype"], config["device"], config["engine_options"].get("hf"))
    if name == "hf-paged":
        from ctxenergy.engines.hf import HFPagedEngine

        return HFPagedEngine(name, spec, config["dtype"], config["device"])
    from ctxenergy.engines.vllm import VllmEngine

    return VllmEngine(spec, config["dtype"], config["engine_options"]["vllm"])


__all__ = ["Engine", "OutOfMemory", "RunTiming", "make_engine"]
