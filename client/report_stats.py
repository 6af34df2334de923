"""The intervals of gpuprof's reports, all at CONFIDENCE: a mean's by Student's t, a median's from its order
statistics, a ratio of means' by Fieller's theorem, a percentile bootstrap for anything else, and
Spearman's rho's by Fisher's z. docs/report.md says which figure gets which, and why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CONFIDENCE",
    "NO_INTERVAL",
    "Interval",
    "bootstrap_interval",
    "finite",
    "median_interval",
    "ratio_interval",
    "spearman_interval",
    "t_interval",
]

CONFIDENCE = 0.95  # of every interval in the report
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # a fixed seed: the same job gives the same report

Interval = tuple[float, float]
NO_INTERVAL: Interval = (math.nan, math.nan)


def finite(values: Iterable[Any]) -> np.ndarray:
    """The finite values as floats (a missing one, of any kind, left out)."""
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    array = pd.to_numeric(series, errors="coerce").astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    return array[np.isfinite(array)]


def t_interval(values: Iterable[Any]) -> Interval:
    """The mean's interval by Student's t with n - 1 degrees of freedom; NaN below two values."""
    from scipy import stats

    x = finite(values)
    if x.size < 2:
        return NO_INTERVAL
    sem = float(stats.sem(x))
    if sem == 0:
        return (float(x.mean()), float(x.mean()))
    low, high = stats.t.interval(CONFIDENCE, x.size - 1, loc=x.mean(), scale=sem)
    return (float(low), float(high))


def median_interval(values: Iterable[Any]) -> Interval:
    """The median's distribution-free interval: the two order statistics that cover it with at least the
    confidence asked whatever the distribution (binomial(n, 1/2); ``scipy.stats.quantile_test``). NaN when
    n is too small for that (below 6 at 95%)."""
    from scipy import stats

    x = finite(values)
    if x.size == 0:
        return NO_INTERVAL
    ci = stats.quantile_test(x, q=float(np.median(x)), p=0.5).confidence_interval(CONFIDENCE)
    return (float(ci.low), float(ci.high))


def bootstrap_interval(
    samples: tuple[np.ndarray, ...], statistic: Callable[..., Any], paired: bool
) -> Interval:
    """A percentile bootstrap interval of ``statistic(*samples, axis)`` (``scipy.stats.bootstrap``, fixed
    seed); paired: the samples are columns of the same requests, resampled together."""
    from scipy import stats

    if any(len(sample) < 2 for sample in samples):
        return NO_INTERVAL
    result = stats.bootstrap(
        samples,
        statistic,
        paired=paired,
        vectorized=True,
        n_resamples=BOOTSTRAP_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        random_state=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def ratio_interval(numerator: Iterable[Any], denominator: Iterable[Any]) -> Interval:
    """The interval of mean(numerator) / mean(denominator), two independent samples, by Fieller's theorem:
    the ratios R for which mean(num) - R mean(den) is within Student's t of zero (Welch-Satterthwaite
    degrees of freedom at the estimate). NaN when the denominator's mean is not clearly above zero (the set
    is then unbounded) or a sample has fewer than two values."""
    from scipy import stats

    num, den = finite(numerator), finite(denominator)
    if num.size < 2 or den.size < 2 or den.mean() == 0:
        return NO_INTERVAL
    a, b = float(num.mean()), float(den.mean())
    va, vb = float(num.var(ddof=1)) / num.size, float(den.var(ddof=1)) / den.size
    ratio = a / b
    if va == 0 and vb == 0:
        return (ratio, ratio)
    df = (va + ratio**2 * vb) ** 2 / (va**2 / (num.size - 1) + (ratio**2 * vb) ** 2 / (den.size - 1))
    t = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
    lead = b**2 - t**2 * vb  # > 0: the denominator's interval excludes zero
    if lead <= 0:
        return NO_INTERVAL
    spread = t * math.sqrt(a**2 * vb + b**2 * va - t**2 * va * vb)
    return ((a * b - spread) / lead, (a * b + spread) / lead)


def spearman_interval(rho: float, n: int) -> Interval:
    """Spearman's rho's interval by Fisher's z with Bonett and Wright's standard error."""
    from scipy import stats

    if n <= 3 or not math.isfinite(rho) or abs(rho) >= 1:
        return NO_INTERVAL
    z, se = math.atanh(rho), math.sqrt(1 + rho**2 / 2) / math.sqrt(n - 3)
    quantile = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))
    return (math.tanh(z - quantile * se), math.tanh(z + quantile * se))
