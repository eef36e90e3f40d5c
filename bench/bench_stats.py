"""Small statistics for bench_edit.py (standard library only): medians, spreads, per-round ratios and
the rounds a ratio needs before its 95 % confidence interval is narrower than a target."""
from __future__ import annotations

import math
from collections.abc import Sequence

# Student's t, two-sided 95 % (the 0.975 quantile), by degrees of freedom 1..30.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        return math.inf
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df)  # Cornish-Fisher: within 0.1 % of the exact quantile above 30


def quantile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max, quartiles and the relative range (max - min) / median."""
    mid = median(values)
    return {"n": len(values), "median": mid, "min": min(values), "max": max(values), "q1": quantile(values, 0.25),
            "q3": quantile(values, 0.75), "range_rel": (max(values) - min(values)) / mid if mid else math.nan}


def ci_halfwidth_rel(ratios: Sequence[float]) -> float:
    """Half-width of the 95 % confidence interval of the (geometric) mean ratio, relative (0.02 = 2 %).
    Computed on log ratios, so a ratio and its inverse resolve alike; nan below two rounds."""
    n = len(ratios)
    if n < 2:
        return math.nan
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))
    return math.expm1(t975(n - 1) * sd / math.sqrt(n))


def log_sd(ratios: Sequence[float]) -> float:
    n = len(ratios)
    if n < 2:
        return math.nan
    logs = [math.log(r) for r in ratios]
    mean = sum(logs) / n
    return math.sqrt(sum((x - mean) ** 2 for x in logs) / (n - 1))


def geometric_mean(ratios: Sequence[float]) -> float:
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def rounds_to_resolve(ratios: Sequence[float], target: float = 0.02, min_rounds: int = 3) -> int | None:
    """The first round count n (n >= min_rounds) from which the 95 % CI half-width of the first n rounds
    stays below `target` through the last round; None if it never does."""
    reached = None
    for n in range(max(2, min_rounds), len(ratios) + 1):
        if ci_halfwidth_rel(ratios[:n]) < target:
            reached = reached or n
        else:
            reached = None
    return reached


def projected_rounds(ratios: Sequence[float], target: float = 0.02) -> int | None:
    """Rounds that would bring the CI half-width below `target` if the round-to-round spread stays
    what it is now (None with fewer than two rounds)."""
    sd = log_sd(ratios)
    if math.isnan(sd):
        return None
    goal = math.log1p(target)
    for n in range(2, 10_000):
        if t975(n - 1) * sd / math.sqrt(n) < goal:
            return n
    return None


def verdict(ratios: Sequence[float], bound: float) -> str:
    """Against an upper bound: met (the whole CI is at or below it), missed (all of it above), or
    not resolved. With one round only the value itself is compared."""
    center = geometric_mean(ratios)
    half = ci_halfwidth_rel(ratios)
    if math.isnan(half):
        return "met (1 round)" if center <= bound else f"missed by {100 * (center / bound - 1):.1f} % (1 round)"
    low, high = center / (1 + half), center * (1 + half)
    if high <= bound:
        return "met"
    if low > bound:
        return f"missed by {100 * (center / bound - 1):.1f} %"
    return f"not resolved (CI {low:.3f}-{high:.3f} holds {bound:g})"
