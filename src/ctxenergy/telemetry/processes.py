"""Which processes other than ours compute on a GPU: another job's energy would be booked to a cell."""

from __future__ import annotations

from ctxenergy.processes import own_process_tree
from ctxenergy.telemetry.nvml_api import open_backend


def foreign_pids(uuids: list[str], backend=None, own: set[int] | None = None) -> dict[str, list[int]]:
    """Compute processes on these GPUs that are not ours: another job's energy would be booked to the cell."""
    nv = backend or open_backend()
    own = own_process_tree() if own is None else own
    out = {}
    for u in uuids:
        pids = [p for p in nv.process_pids(nv.handle_by_uuid(u)) if p not in own]
        if pids:
            out[u] = pids
    return out
