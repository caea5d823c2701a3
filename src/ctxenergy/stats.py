"""Small statistics for windows: median and a 95 % interval of the mean (Student t), and of a difference."""

from __future__ import annotations

import math

import numpy as np

# two-sided 97.5 % quantiles of Student's t for 1..30 degrees of freedom
_T975 = [
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
]


def t975(df: int) -> float:
    if df < 1:
        return math.nan
    return _T975[df - 1] if df <= 30 else 1.96


def summarize(values) -> dict[str, float]:
    """median, mean, and the 95 % t-interval of the mean; NaN where there are too few values."""
    x = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], dtype=float)
    n = x.size
    if n == 0:
        return {"median": math.nan, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n": 0}
    mean = float(x.mean())
    if n == 1:
        return {"median": float(x[0]), "mean": mean, "ci_low": math.nan, "ci_high": math.nan, "n": 1}
    half = t975(n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return {"median": float(np.median(x)), "mean": mean, "ci_low": mean - half, "ci_high": mean + half, "n": n}


def welch_diff_pct(base, other) -> tuple[float, float, float]:
    """(other / base - 1) in %, with a 95 % interval from Welch's t on the difference of the means."""
    base, other = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    m1, m2 = base.mean(), other.mean()
    v1, v2 = base.var(ddof=1) / base.size, other.var(ddof=1) / other.size
    se = math.sqrt(v1 + v2)
    df = (v1 + v2) ** 2 / (v1**2 / (base.size - 1) + v2**2 / (other.size - 1)) if se > 0 else base.size - 1
    half = t975(max(1, int(df))) * se
    return 100 * (m2 - m1) / m1, 100 * (m2 - m1 - half) / m1, 100 * (m2 - m1 + half) / m1


# Run-latency columns of a cell (measure.write_cell): percentiles of the duration of its measured runs.
LATENCY_PERCENTILES = {"run_p50_s": 50, "run_p90_s": 90, "run_p99_s": 99}


def run_latency(durations_s) -> dict[str, float | None]:
    """p50, p90 and p99 of run durations (linear interpolation between order statistics, numpy's default); None
    without runs. With the few dozen runs of a cell, p99 is close to the slowest run, which is what it should say."""
    x = np.asarray([d for d in durations_s if d is not None and math.isfinite(d)], dtype=float)
    if x.size == 0:
        return dict.fromkeys(LATENCY_PERCENTILES)
    return {name: float(np.percentile(x, q)) for name, q in LATENCY_PERCENTILES.items()}
