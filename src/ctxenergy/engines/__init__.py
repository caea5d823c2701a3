"""Engine adapters behind one interface (see base.py); which engines exist is registry.py's table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctxenergy.engines.base import Engine, OutOfMemory, RunTiming
from ctxenergy.engines.registry import ENGINE_NAMES, ENGINES
from ctxenergy.errors import ConfigError, EngineUnavailableError
from ctxenergy.weights import require_shared_weights

if TYPE_CHECKING:
    from ctxenergy.models import ModelSpec
    from ctxenergy.settings import Settings


def make_engine(name: str, spec: ModelSpec, settings: Settings, variant: str = "default") -> Engine:
    if name not in ENGINES:
        raise ConfigError(f"'{name}' is not a known engine (known: {', '.join(ENGINE_NAMES)})")
    info = ENGINES[name]
    if not info.installed():
        raise EngineUnavailableError(info.install_hint())
    require_shared_weights(spec)
    return info.load_class().create(name, spec, settings, info.options(settings, variant))


__all__ = ["Engine", "OutOfMemory", "RunTiming", "make_engine"]
