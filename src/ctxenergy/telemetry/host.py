"""Meters for hosts without a GPU: RAPL package energy where readable, otherwise no energy at all.

RAPL's energy_uj counter wraps at max_energy_range_uj; a read before and after the work is enough
(it updates every ~1 ms). Where it is absent or unreadable (containers, non-Intel, no root) the
NullMeter records energy as missing and says why; it never estimates.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ctxenergy.telemetry.base import DeviceInfo, EnergyMeter, IdleBaseline, WindowEnergy

DEFAULT_RAPL_ROOT = Path("/sys/class/powercap")


def rapl_root() -> Path:
    return Path(os.environ.get("CTXENERGY_RAPL_ROOT", DEFAULT_RAPL_ROOT))


def rapl_packages(root: Path | None = None) -> list[Path]:
    """Readable top-level RAPL domains (intel-rapl:N), each a CPU package."""
    root = root or rapl_root()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.glob("intel-rapl:*")):
        if d.name.count(":") == 1 and (d / "energy_uj").is_file():
            try:
                int((d / "energy_uj").read_text())
                out.append(d)
            except (OSError, ValueError):
                continue
    return out


class RaplMeter(EnergyMeter):
    method = "rapl-package"

    def __init__(self, root: Path | None = None):
        self.domains = rapl_packages(root)
        if not self.domains:
            raise FileNotFoundError("no readable RAPL domain")
        self.devices = [
            DeviceInfo(
                name=f"cpu-package {(d / 'name').read_text().strip() if (d / 'name').exists() else d.name}",
                uuid=None,
                index=i,
            )
            for i, d in enumerate(self.domains)
        ]
        self.max_range = [
            int((d / "max_energy_range_uj").read_text()) if (d / "max_energy_range_uj").exists() else 2**32
            for d in self.domains
        ]

    def _read(self) -> list[int]:
        return [int((d / "energy_uj").read_text()) for d in self.domains]

    def _delta_j(self, a: list[int], b: list[int]) -> list[float]:
        return [((y - x) % (m + 1)) / 1e6 for x, y, m in zip(a, b, self.max_range)]

    def measure_idle(self, seconds: float) -> IdleBaseline:
        a, t0 = self._read(), time.perf_counter()
        time.sleep(seconds)
        b, t1 = self._read(), time.perf_counter()
        per = [d / (t1 - t0) for d in self._delta_j(a, b)]
        return IdleBaseline(sum(per), per, t1 - t0)

    def begin_window(self) -> float:
        self._start = self._read()
        self._t0 = time.perf_counter()
        return self._t0

    def end_window(self, work_start: float, work_end: float, idle: IdleBaseline) -> WindowEnergy:
        end, t1 = self._read(), time.perf_counter()
        per = self._delta_j(self._start, end)
        raw = sum(per)
        span = t1 - self._t0
        dynamic = raw - (idle.power_w or 0.0) * span
        energy = dynamic + (idle.power_w or 0.0) * (work_end - work_start)
        return WindowEnergy(work_start, work_end, span, raw, energy, dynamic, per, None, self.method)


class NullMeter(EnergyMeter):
    """No readable energy source: windows carry times but energy is None, with the reason."""

    method = "none"

    def __init__(self, reason: str):
        self.reason = reason
        self.devices = [DeviceInfo(name="cpu", uuid=None, index=None)]

    def measure_idle(self, seconds: float) -> IdleBaseline:
        time.sleep(min(seconds, 0.05))
        return IdleBaseline(None, [None], seconds)

    def begin_window(self) -> float:
        self._t0 = time.perf_counter()
        return self._t0

    def end_window(self, work_start: float, work_end: float, idle: IdleBaseline) -> WindowEnergy:
        return WindowEnergy(
            work_start,
            work_end,
            time.perf_counter() - self._t0,
            None,
            None,
            None,
            [None],
            None,
            self.method,
            notes=[self.reason],
        )
