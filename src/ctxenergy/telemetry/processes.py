"""Which processes are ours and which others compute on a GPU: another job's energy would be booked to a cell."""

from __future__ import annotations

import os
from pathlib import Path

from ctxenergy.telemetry.nvml_api import open_backend


def own_process_tree(root: int | None = None) -> set[int]:
    """This process and all its descendants (vLLM's tensor-parallel workers are children, not foreign processes)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the command name may contain spaces and ')'
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in tree:
                tree.add(c)
                todo.append(c)
    return tree


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
