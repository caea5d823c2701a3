"""Energy meters behind one window API: NVML on GPUs, RAPL or nothing on CPU hosts."""

from ctxenergy.telemetry.base import DeviceInfo, DeviceState, EnergyMeter, IdleBaseline, WindowEnergy
from ctxenergy.telemetry.host import NullMeter, RaplMeter, rapl_packages


def open_meter(device: str, uuids: list[str] | None = None, sample_interval_s: float = 0.01) -> EnergyMeter:
    """The meter for a cell's device: NVML for cuda (the GPUs in `uuids` or the visible one), RAPL/none for cpu."""
    if device == "cuda":
        from ctxenergy.telemetry.nvml_meter import NvmlMeter

        return NvmlMeter(uuids=uuids, sample_interval_s=sample_interval_s)
    if rapl_packages():
        return RaplMeter()
    return NullMeter(
        "no readable energy source on this host (no NVIDIA GPU, RAPL absent or not readable): energy not recorded"
    )


__all__ = [
    "DeviceInfo",
    "DeviceState",
    "EnergyMeter",
    "IdleBaseline",
    "WindowEnergy",
    "NullMeter",
    "RaplMeter",
    "open_meter",
]
