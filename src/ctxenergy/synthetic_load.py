"""A known GPU load for calibration: back-to-back n^3 matmuls on the current CUDA device.

At n = 8192 in bf16 one matmul takes ~1.7 ms on an H200 (docs/gpu-runs/2026-11-29-energy_accuracy.log) and the
board sits at its power limit, so the load is steady; a burst is a fixed number of matmuls, so bursts of one length
do identical work.
"""

from __future__ import annotations

import threading
import time

from ctxenergy.errors import NoDeviceError


def nvml_uuid(device) -> str | None:
    """NVML's name ("GPU-<uuid>") of a torch CUDA device, so that a meter reads exactly the GPU the work runs on."""
    import torch

    raw = str(getattr(torch.cuda.get_device_properties(device), "uuid", "") or "")
    if not raw:
        return None
    return raw if raw.startswith(("GPU-", "MIG-")) else f"GPU-{raw}"


class MatmulLoad:
    """`run(seconds)`: one synchronous burst; `start()`/`stop()`: the same matmuls on a thread until stopped."""

    def __init__(self, n: int = 8192, dtype: str = "bfloat16", timing_s: float = 2.0):
        import torch

        if not torch.cuda.is_available():
            raise NoDeviceError("torch sees no CUDA device: calibration needs an NVIDIA GPU and a CUDA build of torch")
        self._torch = torch
        self.device = torch.device("cuda", torch.cuda.current_device())
        self.name = torch.cuda.get_device_name(self.device)
        self.uuid = nvml_uuid(self.device)
        g = torch.Generator(device=self.device).manual_seed(0)
        kind = getattr(torch, dtype)
        self.a = torch.randn(n, n, device=self.device, dtype=kind, generator=g)
        self.b = torch.randn(n, n, device=self.device, dtype=kind, generator=g)
        self.c = torch.empty(n, n, device=self.device, dtype=kind)
        self.flop_per_matmul = 2.0 * n**3
        # Time the rate after the board has reached its power limit, where the bursts will run.
        self.matmul_s = 0.002
        count = self._burst(max(1, int(timing_s / 2 / self.matmul_s)))[2]
        start, end, count = self._burst(count)
        self.matmul_s = (end - start) / count
        tflops = self.flop_per_matmul / self.matmul_s / 1e12
        self.description = f"{n}^3 {dtype} matmuls, {self.matmul_s * 1e3:.2f} ms each, {tflops:.0f} TFLOP/s"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _matmul(self) -> None:
        self._torch.matmul(self.a, self.b, out=self.c)

    def _burst(self, count: int) -> tuple[float, float, int]:
        torch = self._torch
        torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        for _ in range(count):
            self._matmul()
        torch.cuda.synchronize(self.device)
        return start, time.perf_counter(), count

    def run(self, seconds: float) -> tuple[float, float]:
        start, end, _ = self._burst(max(1, round(seconds / self.matmul_s)))
        return start, end

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ctxenergy-matmul-load", daemon=True)
        self._thread.start()
        time.sleep(0.05)

    def _loop(self) -> None:
        torch = self._torch
        batch = max(1, round(0.03 / self.matmul_s))
        with torch.cuda.device(self.device):
            previous = None
            # Two batches in flight: the queue never runs dry while this thread waits for the GIL.
            while not self._stop.is_set():
                for _ in range(batch):
                    self._matmul()
                event = torch.cuda.Event()
                event.record()
                if previous is not None:
                    previous.synchronize()
                previous = event
            torch.cuda.synchronize(self.device)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def close(self) -> None:
        self.stop()
        del self.a, self.b, self.c
        self._torch.cuda.empty_cache()
