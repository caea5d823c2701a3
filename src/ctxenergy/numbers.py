"""How a number reads as text, with its interval: one way for the analysis's verdicts and for the outputs.

A module of its own below both: the analysis cannot import the outputs' rendering layer (ctxenergy.outputs.render
reads the analysis's verdicts), yet a claim's deciding text and the report's tables show the same numbers.
"""

from __future__ import annotations

import math


def finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def fmt(v, digits: int = 3, scale: float = 1.0, missing: str = "–") -> str:
    if not finite(v):
        return missing
    x = float(v) * scale
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}g}" if abs(x) < 10**digits else f"{x:,.0f}"


def fmt_ci(v, lo, hi, digits: int = 3, scale: float = 1.0, missing: str = "–") -> str:
    if not finite(v):
        return missing
    if finite(lo) and finite(hi):
        return f"{fmt(v, digits, scale)} [{fmt(lo, digits, scale)}, {fmt(hi, digits, scale)}]"
    return fmt(v, digits, scale)
