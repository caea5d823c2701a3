"""The warm-up job of a (model, engine): load the engine once, run one short request, record how long it took.

It fails early (an engine that does not load fails here, not in every cell) and prepares what the cell
jobs reuse (for vLLM, its compile cache). It is not the in-process warm-up that precedes each window.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import numpy as np

from ctxenergy.engines import make_engine
from ctxenergy.files import write_text
from ctxenergy.models import resolve_model

if TYPE_CHECKING:
    from ctxenergy.settings import Settings


def warm_up_engine(settings: Settings, model: str, engine_name: str, out, variant: str = "default") -> dict:
    """Load the engine (with the options of `variant`) in this process, run one short request, close it."""
    spec = resolve_model(settings, model)
    engine = make_engine(engine_name, spec, settings, variant)
    t0 = time.perf_counter()
    engine.load()
    t1 = time.perf_counter()
    try:
        return _write(_first_request(model, engine_name, engine, t1 - t0), out)
    finally:
        engine.close()


def warm_up_resident(model: str, engine_name: str, resident, out) -> dict:
    """The same on an engine host's resident engine, which then stays loaded for the cells."""
    if resident.load_error is not None:
        raise resident.load_error
    result = _first_request(model, engine_name, resident.engine, resident.load_s)
    resident.engine.reset()
    result["engine_host_pid"] = resident.provenance()["pid"]
    return _write(result, out)


def _first_request(model: str, engine_name: str, engine, load_s: float) -> dict:
    ids = (np.arange(64, dtype=np.int64) % 200) + 3
    run = engine.run(ids, 2)
    return {
        "model": model,
        "engine": engine_name,
        "load_s": load_s,
        "first_request_s": run.total_s,
        "tokens_out": run.tokens_out,
        "versions": engine.versions(),
        "settings": engine.settings(),
    }


def _write(result: dict, out) -> dict:
    write_text(json.dumps(result, indent=2), out)
    return result
