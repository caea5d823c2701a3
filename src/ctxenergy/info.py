"""`ctxenergy info`: what this host offers for measurement."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from ctxenergy.telemetry import rapl_packages


def host_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The host CPU's model and logical CPU count, e.g. 'AMD EPYC 9654 96-Core Processor x16'. Recorded with every
    cell: engines whose steps wait on Python (HF decode at batch 1) run as fast as this CPU lets them."""
    model = ""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    name = " ".join((model or platform.processor() or platform.machine() or "unknown CPU").split())
    return f"{name} x{os.cpu_count()}"


def device_info(measure_period: bool = True) -> dict:
    info: dict = {"host_cpu": host_cpu(), "rapl_domains": [str(p) for p in rapl_packages()]}
    try:
        from ctxenergy.telemetry.counter import detect_update_period
        from ctxenergy.telemetry.nvml_api import open_backend

        nv = open_backend()
    except Exception as exc:  # noqa: BLE001 - info reports what is missing instead of failing
        info["nvml"] = f"unavailable: {exc}"
        return info
    info["driver_version"] = nv.driver_version()
    info["nvml_version"] = nv.nvml_version()
    gpus = []
    for i in range(nv.device_count()):
        h = nv.handle(i)
        g = {
            "index": i,
            "name": nv.name(h),
            "uuid": nv.uuid(h),
            "memory_total_bytes": nv.memory_total_bytes(h),
            "power_limit_w": nv.power_limit_w(h),
            "power_usage_w": nv.power_usage_w(h),
        }
        t0 = time.perf_counter()
        energy = nv.energy_j(h)
        g["energy_counter"] = energy is not None
        g["energy_read_s"] = time.perf_counter() - t0
        watts, source = nv.power_instant_w(h)
        g["instant_power_w"], g["instant_power_source"] = watts, source
        g["clock_event_reasons"] = nv.clock_event_reasons(h)
        g["temperature_c"] = nv.temperature_c(h)
        g["sm_clock_mhz"] = nv.sm_clock_mhz(h)
        if measure_period and energy is not None:
            g["counter_update_period_s"] = detect_update_period(lambda h=h: nv.energy_j(h), duration_s=1.0)
            g["instant_update_period_s"] = detect_update_period(lambda h=h: nv.power_instant_w(h)[0], duration_s=1.0)
        gpus.append(g)
    info["gpus"] = gpus
    return info
