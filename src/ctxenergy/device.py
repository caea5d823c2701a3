"""Is the configured device usable here? Answered in seconds, before any model is loaded."""

from __future__ import annotations

from ctxenergy.errors import NoDeviceError

SMOKE_HINT = "on a host without a GPU run the CPU smoke config: snakemake --cores 2 --configfile config/smoke.yaml"


def check_device(device: str) -> None:
    """One line naming the problem and the smoke config when a cuda study cannot reach a GPU."""
    if device != "cuda":
        return
    from ctxenergy.telemetry.nvml_api import open_backend

    nv = open_backend()  # NoDeviceError (one line) when NVML is missing, refused or finds no driver
    if nv.device_count() < 1:
        raise NoDeviceError(f"NVML sees no GPU on this host; {SMOKE_HINT}")
