"""Intervals. Every cell carries the median of its windows and the 95 % t-interval of their mean.

Derived quantities propagate the half-widths of those intervals: sums and differences in quadrature, ratios and
products on the log scale. Non-smooth quantities (an argmin over L, a plateau onset) come from seeded draws that are
normal with the spread that reproduces each cell's 95 % interval (sigma = half-width / 1.96), so that a cell with
few windows carries its wider t-interval into the draw.
"""

from __future__ import annotations

import numpy as np

from ctxenergy.stats import t975

Z975 = 1.959964
SEED = 20261129  # fixed: the derived tables are byte-for-byte reproducible
DRAWS = 4000


def half_width(lo, hi):
    return (np.asarray(hi, dtype=float) - np.asarray(lo, dtype=float)) / 2.0


def sigma95(lo, hi):
    """The sigma of a normal whose 95 % interval is [lo, hi]."""
    return half_width(lo, hi) / Z975


def standard_error(lo, hi, n):
    """Standard error of the mean from a 95 % t-interval over n windows."""
    n = np.atleast_1d(np.asarray(n, dtype=float))
    t = np.array([t975(int(k) - 1) if np.isfinite(k) and k >= 2 else np.nan for k in n])
    return half_width(lo, hi) / t


def ratio_interval(ratio, rel_half):
    """95 % interval of a ratio whose relative half-width is rel_half, symmetric on the log scale."""
    ratio = np.asarray(ratio, dtype=float)
    rel_half = np.asarray(rel_half, dtype=float)
    return ratio * np.exp(-rel_half), ratio * np.exp(rel_half)


def rng():
    return np.random.default_rng(SEED)


def grid_interval(samples) -> tuple[float, float]:
    """2.5 and 97.5 percentiles that stay on the values drawn (a threshold on the L grid stays a grid L)."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    return float(np.quantile(s, 0.025, method="lower")), float(np.quantile(s, 0.975, method="higher"))
