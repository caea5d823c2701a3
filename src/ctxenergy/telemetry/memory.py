"""Peak device memory of one cell: the torch allocator's peaks and NVML's memory in use, sampled.

Two views, because they answer different questions. torch's `max_memory_allocated` / `max_memory_reserved` (peak
stats reset when the cell starts, so that a resident engine's earlier cells do not count) are what this process's
tensors and its caching allocator held: what an out-of-memory message is about. NVML's memory used is the whole
board's (every process, the CUDA context, NCCL buffers, a vLLM KV-cache pool reserved up front), sampled while the
cell runs, so a short spike between two samples can be missed. On a CPU study, or where torch never touched CUDA in
this process, the torch fields are None; without NVML (RAPL or no meter) the NVML fields are None.
"""

from __future__ import annotations

import sys
import threading

GIB = 2**30
# The columns a cell records (measure.CELL_COLUMNS), in GiB; None where the source is absent.
MEMORY_COLUMNS = [
    "torch_peak_allocated_gib",
    "torch_peak_reserved_gib",
    "nvml_peak_memory_used_gib",
    "memory_total_gib",
]
# NVML's memory used changes with allocations, not with every kernel: ten reads a second are plenty, and cost
# nothing beside the power sampler's hundred.
SAMPLE_INTERVAL_S = 0.1


def _torch_cuda():
    """torch.cuda where this process already uses it (never imported or initialised here: a CPU study or an
    engine whose model lives in another process has no peak of its own to report)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


class PeakMemory:
    """Started when a cell starts; `stop()` gives the cell's MEMORY_COLUMNS."""

    def __init__(self, meter=None, interval_s: float = SAMPLE_INTERVAL_S):
        self._nv = getattr(meter, "nv", None)
        self._handles = list(getattr(meter, "handles", []) or []) if self._nv is not None else []
        devices = getattr(meter, "devices", None) or []
        totals = [d.memory_total_bytes for d in devices if getattr(d, "memory_total_bytes", None)]
        self._total = min(totals) if totals else None  # the board that fills first
        self._peak_used: list[int | None] = [None] * len(self._handles)
        self.failed_reads = 0
        cuda = _torch_cuda()
        if cuda is not None:
            for i in range(cuda.device_count()):
                cuda.reset_peak_memory_stats(i)
        self._stop = threading.Event()
        self._interval = interval_s
        self._thread = None
        if self._handles:
            self._sample()
            self._thread = threading.Thread(target=self._run, name="ctxenergy-memory-sampler", daemon=True)
            self._thread.start()

    def _sample(self) -> None:
        for i, h in enumerate(self._handles):
            try:
                used = int(self._nv.memory_used_bytes(h))
            except Exception:  # noqa: BLE001 - a failed read is a missed sample, never the cell's end
                self.failed_reads += 1
                continue
            self._peak_used[i] = used if self._peak_used[i] is None else max(self._peak_used[i], used)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def stop(self) -> dict:
        """The cell's peaks in GiB (torch: this process's devices, the largest; NVML: the fullest board)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            self._sample()  # the state at the cell's end (an out-of-memory cell ends at its peak)
        cuda = _torch_cuda()
        allocated = reserved = None
        if cuda is not None:
            n = range(cuda.device_count())
            allocated = max((cuda.max_memory_allocated(i) for i in n), default=0) or None
            reserved = max((cuda.max_memory_reserved(i) for i in n), default=0) or None
        used = [u for u in self._peak_used if u is not None]
        return {
            "torch_peak_allocated_gib": None if allocated is None else allocated / GIB,
            "torch_peak_reserved_gib": None if reserved is None else reserved / GIB,
            "nvml_peak_memory_used_gib": max(used) / GIB if used else None,
            "memory_total_gib": None if self._total is None else self._total / GIB,
        }
