"""Is the configured device usable here? Answered in seconds, before any model is loaded."""

from __future__ import annotations

import importlib.util

from ctxenergy.errors import NoDeviceError

SMOKE_HINT = "on a host without a GPU run the CPU smoke config: snakemake --cores 2 --configfile config/smoke.yaml"


def check_device(device: str) -> None:
    if device != "cuda":
        return
    if importlib.util.find_spec("pynvml") is None:
        raise NoDeviceError(f"the default config measures an NVIDIA GPU, but nvidia-ml-py is not installed; {SMOKE_HINT}")
    import pynvml

    try:
        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except pynvml.NVMLError as exc:
        raise NoDeviceError(f"no NVIDIA GPU is usable here (NVML: {exc}); {SMOKE_HINT}") from None
    if count < 1:
        raise NoDeviceError(f"NVML sees no GPU on this host; {SMOKE_HINT}")
