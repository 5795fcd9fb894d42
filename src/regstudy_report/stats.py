"""The statistics of the report: paired differences over seeds, their intervals, verdicts.

Every comparison in the report pairs members by seed. A seed fixes the data draw (a new
sample, or a new split of digits) and the initialization, so two members with the same
seed differ only in what is compared, and the spread of the differences over seeds
covers data and initialization variation.

Intervals are Student-t intervals of the mean (``scipy.stats.ttest_1samp``), 95% by
default, one per comparison (not corrected for the number of comparisons).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """The mean of ``n`` values with its confidence interval ``[lo, hi]`` (NaN when n < 2)."""

    mean: float
    lo: float
    hi: float
    n: int

    @property
    def defined(self) -> bool:
        return self.n >= 2 and math.isfinite(self.lo) and math.isfinite(self.hi)

    def above(self, threshold: float) -> bool:
        """The whole interval lies above ``threshold``."""
        return self.defined and self.lo > threshold

    def below(self, threshold: float) -> bool:
        """The whole interval lies below ``threshold``."""
        return self.defined and self.hi < threshold

    def within(self, low: float, high: float) -> bool:
        """The whole interval lies inside ``[low, high]``."""
        return self.defined and low <= self.lo and self.hi <= high

    def as_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}


def mean_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """t-interval of the mean of ``values`` (NaNs dropped)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    if len(x) == 1:
        return Interval(float(x[0]), math.nan, math.nan, 1)
    with warnings.catch_warnings():  # identical values: scipy warns, and returns [mean, mean]
        warnings.simplefilter("ignore", RuntimeWarning)
        ci = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    return Interval(float(x.mean()), float(ci.low), float(ci.high), len(x))


def paired(a: pd.Series, b: pd.Series) -> pd.Series:
    """``a - b`` for the seeds both have (both indexed by seed), NaN pairs dropped."""
    diff = (a - b).dropna()
    return diff.sort_index()


def paired_difference(a: pd.Series, b: pd.Series, confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``a - b`` over the seeds both have, with its t-interval."""
    return mean_interval(paired(a, b), confidence)


def effect_verdict(diff: Interval) -> str:
    """*helps* if the interval of (regularized - baseline) is above 0, *hurts* if below,
    else *no detectable effect*; *not measured* without an interval (fewer than 2 seeds)."""
    if not diff.defined:
        return "not measured"
    if diff.lo > 0:
        return "helps"
    if diff.hi < 0:
        return "hurts"
    return "no detectable effect"


def trend(x, y) -> tuple[float, float]:
    """Spearman's rank correlation of ``y`` with ``x`` and its two-sided p-value."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan
    result = stats.spearmanr(x[ok], y[ok])
    return float(result.statistic), float(result.pvalue)


def sig(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits (``0.0123``, ``1e-5``, ``2.5e3``);
    missing or non-finite as n/a."""
    if value is None:
        return "n/a"
    value = float(value)
    if not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}"
    if float(text) == 0:
        return "0"  # not -0
    if "e" in text:  # 1e-05 -> 1e-5, 1.23e+04 -> 1.23e4
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def signed(value, digits: int = 3) -> str:
    """Like :func:`sig` with an explicit sign: ``+0.0123``, ``-0.5``, ``0``."""
    text = sig(value, digits)
    return text if text in ("n/a", "0") or text.startswith("-") else f"+{text}"


def at_precision(value, iv: Interval, digits: int = 3):
    """``value`` rounded to the precision its interval is printed with (``digits``
    significant digits of the larger bound), so that a mean like -1.4e-8 within
    [-0.0178, 0.0178] prints as 0. Unchanged without an interval."""
    if not iv.defined or value is None or not math.isfinite(value):
        return value
    scale = max(abs(iv.lo), abs(iv.hi))
    if scale == 0:
        return value
    decimals = digits - 1 - math.floor(math.log10(scale))
    return round(float(value), decimals)


def interval_text(iv: Interval, digits: int = 3) -> str:
    """``[lo, hi]`` with ``digits`` significant digits, or ``[n/a]`` without an interval."""
    if not iv.defined:
        return "[n/a]"
    return f"[{sig(iv.lo, digits)}, {sig(iv.hi, digits)}]"


def estimate_text(mean, lo, hi, digits: int = 3) -> str:
    """``mean [lo, hi]``; just ``mean`` without an interval."""
    nan = float("nan")
    iv = Interval(nan if mean is None else float(mean), nan if lo is None else float(lo),
                  nan if hi is None else float(hi), 2)
    text = sig(at_precision(mean, iv, digits), digits)
    return text if not iv.defined else f"{text} {interval_text(iv, digits)}"


def effect_text(iv: Interval, digits: int = 3) -> str:
    """A difference with its interval: ``+0.0234 [0.0182, 0.0286]``."""
    return f"{signed(at_precision(iv.mean, iv, digits), digits)} {interval_text(iv, digits)}"


def estimate(iv: Interval, digits: int = 3) -> str:
    """A mean with its interval: ``0.957 [0.952, 0.962]``."""
    return estimate_text(iv.mean, iv.lo, iv.hi, digits)
