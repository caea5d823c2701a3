"""What the kernel says about a process: when it started, whether it still runs, and which processes descend from
it. The one reader of /proc/<pid>/stat.

Below both the workflow (which follows the Snakemake process) and telemetry (which tells our GPU processes from
others'), so that neither imports the other for it.
"""

from __future__ import annotations

import os
from pathlib import Path

# Indices into /proc/<pid>/stat's fields after the command name (proc(5): fields 3, 4 and 22).
_STATE, _PARENT, _START_TIME = 0, 1, 19


def _stat_fields(pid: int | str) -> list[str] | None:
    """The process's /proc/<pid>/stat fields after its command name (Linux), or None when it is gone or there is
    no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rpartition(")")[2].split()  # the command name before ")" may hold spaces and ")"


def start_time(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (with its pid, it names one process: pids are
    reused), or None when it is gone or there is no /proc."""
    fields = _stat_fields(pid)
    return fields[_START_TIME] if fields else None


def alive(pid: int, started: str = "") -> bool:
    """Whether the process still runs: not gone, not a zombie, and, given its `started` (`start_time`), its pid
    not reused by another process."""
    fields = _stat_fields(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False
        try:  # no /proc (macOS): the pid alone
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return fields[_STATE] != "Z" and (not started or fields[_START_TIME] == started)


def own_process_tree(root: int | None = None) -> set[int]:
    """This process and all its descendants (vLLM's tensor-parallel workers are children, not foreign processes)."""
    root = os.getpid() if root is None else root
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(entry)
        if fields is None:
            continue
        children.setdefault(int(fields[_PARENT]), []).append(int(entry))
    tree, todo = {root}, [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in tree:
                tree.add(c)
                todo.append(c)
    return tree
