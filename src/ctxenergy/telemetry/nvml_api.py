"""The thin layer over NVML that everything else reads through; tests replace it with a fake.

Units are converted here once: energy in J, power in W, clocks in MHz, temperature in C.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ctxenergy.errors import SMOKE_HINT, NoDeviceError

FI_DEV_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT: the instant-power field (mW), newer drivers only

# Clock-event (throttle) reason bits, nvmlClocksEventReason*.
REASON_GPU_IDLE = 0x1
REASON_SW_POWER_CAP = 0x4
REASON_HW_SLOWDOWN = 0x8
REASON_SW_THERMAL = 0x20
REASON_HW_THERMAL = 0x40
REASON_HW_POWER_BRAKE = 0x80
THERMAL_REASONS = REASON_SW_THERMAL | REASON_HW_THERMAL


@runtime_checkable
class Nvml(Protocol):
    """What the meter, the GPU claims and `ctxenergy info` read from NVML: NvmlBackend, or the tests' fake (checked
    against this in tests/test_telemetry.py). Handles are opaque; units as in the module docstring."""

    def driver_version(self) -> str: ...
    def nvml_version(self) -> str: ...
    def device_count(self) -> int: ...
    def handle(self, index: int) -> Any: ...
    def handle_by_uuid(self, uuid: str) -> Any: ...
    def uuid(self, handle) -> str: ...
    def name(self, handle) -> str: ...
    def memory_total_bytes(self, handle) -> int: ...
    def memory_used_bytes(self, handle) -> int: ...
    def energy_j(self, handle) -> float | None: ...
    def power_usage_w(self, handle) -> float: ...
    def power_instant_w(self, handle) -> tuple[float, str]: ...
    def sm_clock_mhz(self, handle) -> int: ...
    def mem_clock_mhz(self, handle) -> int: ...
    def temperature_c(self, handle) -> int: ...
    def power_limit_w(self, handle) -> float: ...
    def clock_event_reasons(self, handle) -> int: ...
    def process_pids(self, handle) -> list[int]: ...


class NvmlBackend:
    """Real NVML through nvidia-ml-py (module pynvml). Handles are opaque to callers."""

    def __init__(self):
        try:
            import pynvml
        except ImportError:
            raise NoDeviceError(
                "NVML is not available: the package nvidia-ml-py is not installed (pip install nvidia-ml-py); "
                f"{SMOKE_HINT}"
            ) from None
        self._nv = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NoDeviceError(
                f"NVML could not start ({exc}): no NVIDIA driver, or this container may not read the GPU; {SMOKE_HINT}"
            ) from None
        self._energy_supported: dict[int, bool] = {}
        self._instant_supported: dict[int, bool] = {}

    # --- inventory ---
    def driver_version(self) -> str:
        return _str(self._nv.nvmlSystemGetDriverVersion())

    def nvml_version(self) -> str:
        try:
            return _str(self._nv.nvmlSystemGetNVMLVersion())
        except self._nv.NVMLError:
            return "unknown"

    def device_count(self) -> int:
        return self._nv.nvmlDeviceGetCount()

    def handle(self, index: int):
        return self._nv.nvmlDeviceGetHandleByIndex(index)

    def handle_by_uuid(self, uuid: str):
        return self._nv.nvmlDeviceGetHandleByUUID(uuid)

    def uuid(self, handle) -> str:
        return _str(self._nv.nvmlDeviceGetUUID(handle))

    def name(self, handle) -> str:
        return _str(self._nv.nvmlDeviceGetName(handle))

    def memory_total_bytes(self, handle) -> int:
        return int(self._nv.nvmlDeviceGetMemoryInfo(handle).total)

    def memory_used_bytes(self, handle) -> int:
        """Device memory in use by every process and the driver (nvmlDeviceGetMemoryInfo's `used`)."""
        return int(self._nv.nvmlDeviceGetMemoryInfo(handle).used)

    # --- energy and power ---
    def energy_j(self, handle) -> float | None:
        """Cumulative energy since the driver loaded (J); None where the GPU has no counter (pre-Volta)."""
        key = id(handle)
        if self._energy_supported.get(key) is False:
            return None
        try:
            value = self._nv.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000.0
            self._energy_supported[key] = True
            return value
        except self._nv.NVMLError_NotSupported:
            self._energy_supported[key] = False
            return None

    def power_usage_w(self, handle) -> float:
        """nvmlDeviceGetPowerUsage: on Ampere and newer a lagging ~1 s average; never integrated for energy."""
        return self._nv.nvmlDeviceGetPowerUsage(handle) / 1000.0

    def power_instant_w(self, handle) -> tuple[float, str]:
        """Instant power and where it came from: the INSTANT field, else GetPowerUsage (older drivers)."""
        key = id(handle)
        if self._instant_supported.get(key, True):
            try:
                (fv,) = self._nv.nvmlDeviceGetFieldValues(handle, [FI_DEV_POWER_INSTANT])
                if fv.nvmlReturn == 0:
                    self._instant_supported[key] = True
                    return _field_value(fv) / 1000.0, "instant"
            except self._nv.NVMLError:
                pass
            self._instant_supported[key] = False
        return self.power_usage_w(handle), "power_usage"

    # --- state ---
    def sm_clock_mhz(self, handle) -> int:
        return self._nv.nvmlDeviceGetClockInfo(handle, self._nv.NVML_CLOCK_SM)

    def mem_clock_mhz(self, handle) -> int:
        return self._nv.nvmlDeviceGetClockInfo(handle, self._nv.NVML_CLOCK_MEM)

    def temperature_c(self, handle) -> int:
        return self._nv.nvmlDeviceGetTemperature(handle, self._nv.NVML_TEMPERATURE_GPU)

    def power_limit_w(self, handle) -> float:
        return self._nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0

    def clock_event_reasons(self, handle) -> int:
        fn = (
            getattr(self._nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
            or self._nv.nvmlDeviceGetCurrentClocksThrottleReasons
        )
        return int(fn(handle))

    def process_pids(self, handle) -> list[int]:
        try:
            return [p.pid for p in self._nv.nvmlDeviceGetComputeRunningProcesses(handle)]
        except self._nv.NVMLError:
            return []


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _field_value(fv) -> float:
    # valueType: 0 double, 1 uint, 2 ulong, 3 ulonglong, 4 slonglong
    kind = fv.valueType
    return {0: fv.value.dVal, 1: fv.value.uiVal, 2: fv.value.ulVal, 3: fv.value.ullVal, 4: fv.value.sllVal}.get(
        kind, fv.value.uiVal
    )


_backend_factory = NvmlBackend


def set_backend_factory(factory: Callable[[], Nvml]) -> None:
    """Tests inject a fake NVML (for example several fake GPUs) here."""
    global _backend_factory
    _backend_factory = factory


def open_backend() -> Nvml:
    return _backend_factory()


def check_device(device: str) -> None:
    """Is the configured device usable here? One line naming the problem and the smoke config when a cuda study
    cannot reach a GPU; answered in seconds, before any model is loaded."""
    if device != "cuda":
        return
    nv = open_backend()  # NoDeviceError (one line) when NVML is missing, refused or finds no driver
    if nv.device_count() < 1:
        raise NoDeviceError(f"NVML sees no GPU on this host; {SMOKE_HINT}")


def visible_devices() -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES (GPU indices or UUIDs), None when it is unset: the one reader of it."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def visible_gpu_uuids() -> list[str] | None:
    """UUIDs in CUDA_VISIBLE_DEVICES when it names them; None when it is unset, empty or uses indices."""
    items = visible_devices()
    if not items:
        return None
    return items if all(v.startswith(("GPU-", "MIG-")) for v in items) else None
