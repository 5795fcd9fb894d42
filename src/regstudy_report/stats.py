"""The statistics of the report: paired differences over seeds, their intervals and tests,
error control across a dataset's findings, power, and aggregates across datasets.

Every comparison in the report pairs members by seed. A seed fixes the data draw (a new
sample, or a new split of digits) and the initialization, so two members with the same
seed differ only in what is compared, and the spread of the differences over seeds
covers data and initialization variation.

Everything here is a pure function of arrays, checked against scipy and statsmodels in
``tests/test_stats.py``: Student-t intervals (``scipy.stats.ttest_1samp``), the paired
t-test and two one-sided tests of equivalence (``statsmodels``' ``DescrStatsW``), Holm's
correction (``multipletests``), power (``TTestPower``) and stratified bootstrap intervals
(``scipy.stats.bootstrap``). ``docs/statistics.md`` explains each in words.
"""

from __future__ import annotations

import gc
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


# --- tests of one paired comparison, and verdicts across a dataset's comparisons ---

ALPHA = 0.05  # family-wise error rate of each dataset's findings (Holm)
POWER = 0.8  # the power at which the report states detectable effects and seeds needed
BETTER, EQUIVALENT, WORSE, UNDETERMINED = "better", "equivalent", "worse", "undetermined"
VERDICTS = (BETTER, EQUIVALENT, WORSE, UNDETERMINED)


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def difference_p(diffs) -> float:
    """Two-sided p-value of the paired t-test of mean(diffs) = 0 (``DescrStatsW.ttest_mean``);
    NaN with fewer than 2 values. Identical differences (no spread) are certain: p = 0 if
    they are not 0, else 1."""
    from statsmodels.stats.weightstats import DescrStatsW

    x = _finite(diffs)
    if len(x) < 2:
        return math.nan
    if np.ptp(x) == 0:
        return 0.0 if x[0] != 0 else 1.0
    return float(DescrStatsW(x).ttest_mean(0.0)[1])


def equivalence_p(diffs, margin: float) -> float:
    """p-value of two one-sided t-tests (TOST) that mean(diffs) lies inside ``(-margin,
    margin)``: the larger of the two one-sided p-values (``DescrStatsW.ttost_mean``).
    Small: the mean is shown to lie within the margin. NaN with fewer than 2 values;
    identical differences: 0 inside the margin, else 1."""
    from statsmodels.stats.weightstats import DescrStatsW

    x = _finite(diffs)
    if len(x) < 2:
        return math.nan
    if np.ptp(x) == 0:
        return 0.0 if abs(x[0]) < margin else 1.0
    return float(DescrStatsW(x).ttost_mean(-margin, margin)[0])


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (``multipletests(method="holm")``): rejecting
    where the adjusted p is below alpha keeps the family-wise error rate at alpha under
    any dependence between the tests. NaN entries stay NaN and do not count as tests."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    tested = np.isfinite(p)
    if tested.any():
        # statsmodels' Holm ends with gc.collect(): over the report's millions of live
        # objects that took 40 ms a call. Frozen objects are left out of a collection.
        gc.freeze()
        try:
            out[tested] = multipletests(p[tested], method="holm")[1]
        finally:
            gc.unfreeze()
    return out


def three_way(mean: float, p_adjusted: float, p_equivalence_adjusted: float, alpha: float = ALPHA) -> str:
    """*equivalent* if the equivalence test rejects (the effect is inside the margin, even
    when it is also shown to differ from 0: a real but negligible effect), else *better* /
    *worse* by the sign of the mean if the difference test rejects, else *undetermined*."""
    if p_equivalence_adjusted < alpha:
        return EQUIVALENT
    if p_adjusted < alpha:
        return BETTER if mean > 0 else WORSE
    return UNDETERMINED


@dataclass(frozen=True)
class Decision:
    """The tests of one paired comparison and its verdict among a dataset's comparisons."""

    p_value: float  # paired t-test of mean = 0, two-sided
    p_equivalence: float  # TOST of -margin < mean < margin
    p_adjusted: float  # Holm across the comparisons decided together
    p_equivalence_adjusted: float
    verdict: str


def decide(diffs: list, margin: float, alpha: float = ALPHA) -> list[Decision]:
    """The verdicts of a dataset's comparisons, each given by its paired differences:
    both tests per comparison (:func:`difference_p`, :func:`equivalence_p`), Holm across
    the comparisons for each test (:func:`holm`), then :func:`three_way`. Keeps the
    chance of any false *better*/*worse* among them, and of any false *equivalent*, at
    ``alpha`` (``tests/test_error_control.py`` simulates it)."""
    arrays = [_finite(d) for d in diffs]
    p = [difference_p(d) for d in arrays]
    q = [equivalence_p(d, margin) for d in arrays]
    p_adj, q_adj = holm(p), holm(q)
    return [Decision(float(pi), float(qi), float(pa), float(qa), three_way(float(np.mean(d)) if len(d) else math.nan,
                                                                          float(pa), float(qa), alpha))
            for d, pi, qi, pa, qa in zip(arrays, p, q, p_adj, q_adj)]


# How far an adjusted p-value may move when the last bits of the arithmetic change: the
# whole study re-trained with every initial weight one ulp up (model.init.perturb_ulps=1)
# moved adjusted p-values by up to a factor of 3 (signal, where 200 full-batch steps
# amplify rounding most); see docs/statistics.md.
BORDERLINE_FACTOR = 4


def near_alpha(p: float, alpha: float = ALPHA) -> bool:
    """An adjusted p-value in ``[alpha / 4, 4 alpha]`` (:data:`BORDERLINE_FACTOR`): a
    decision that a small change of the numbers (another CPU's rounding, one more seed)
    can flip."""
    return math.isfinite(p) and alpha / BORDERLINE_FACTOR <= p <= BORDERLINE_FACTOR * alpha


def detectable_effect(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest true mean paired difference the two-sided paired t-test at level
    ``alpha`` detects with probability ``power`` from ``n`` pairs whose differences have
    standard deviation ``sd``: ``d* · sd``, with ``d*`` from ``TTestPower().solve_power``.
    In the units of the differences; NaN for n < 2 or an undefined sd."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not math.isfinite(sd):
        return math.nan
    if sd == 0:
        return 0.0
    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power)) * sd


MAX_SEEDS = 10_000  # beyond this, "more seeds" is not an answer worth printing


def seeds_needed(effect: float, sd: float, alpha: float, power: float = POWER,
                 alternative: str = "two-sided") -> int | None:
    """Pairs needed for the paired t-test at ``alpha`` to detect a true mean difference of
    ``effect`` (differences of standard deviation ``sd``) with probability ``power``
    (``TTestPower().solve_power``, rounded up); None if it would take more than
    :data:`MAX_SEEDS` (or the effect is 0)."""
    from statsmodels.stats.power import TTestPower

    if not (math.isfinite(effect) and math.isfinite(sd)) or effect == 0:
        return None
    if sd == 0:
        return 2
    size = abs(effect) / sd
    with warnings.catch_warnings():  # tiny effects: the solver warns before giving up
        warnings.simplefilter("ignore")
        try:
            n = TTestPower().solve_power(effect_size=size, nobs=None, alpha=alpha, power=power,
                                         alternative=alternative)
        except (ValueError, RuntimeError):
            return None
    n = float(np.squeeze(n))
    if not math.isfinite(n) or n > MAX_SEEDS:
        return None
    return max(2, math.ceil(n - 1e-6))  # the root finder lands a hair above a whole n


def seeds_to_decide(mean: float, sd: float, margin: float, alpha: float,
                    power: float = POWER) -> tuple[int | None, str]:
    """How many seeds would likely decide an undetermined comparison whose true effect is
    the observed ``mean``: the fewer of the pairs needed to show it differs from 0
    (two-sided test of ``mean``) and, where ``|mean| < margin``, to show it lies inside
    the margin (the nearer bound's one-sided test of ``margin - |mean|``, which decides
    TOST). Returns (seeds, the verdict they would give); (None, "") where neither is
    within reach."""
    options = []
    n = seeds_needed(mean, sd, alpha, power)
    if n is not None:
        options.append((n, BETTER if mean > 0 else WORSE))
    if math.isfinite(mean) and abs(mean) < margin:
        n = seeds_needed(margin - abs(mean), sd, alpha, power, alternative="larger")
        if n is not None:
            options.append((n, EQUIVALENT))
    return min(options) if options else (None, "")


def pooled_sd(sds) -> float:
    """The root mean square of standard deviations: the typical spread of a set of
    comparisons (each's variance weighted alike); NaN without any."""
    x = _finite(sds)
    return float(np.sqrt(np.mean(np.square(x)))) if len(x) else math.nan


# --- aggregates across datasets ---


def iqm(values, axis: int = -1):
    """Interquartile mean: the mean of the middle 50% of the values along ``axis``
    (``scipy.stats.trim_mean(x, 0.25)``); robust to a few extreme ones."""
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = _finite(x)
        return float(stats.trim_mean(x, 0.25)) if len(x) else math.nan
    return stats.trim_mean(x, 0.25, axis=axis)


def improvement_probability(diffs, axis: int = -1):
    """The share of paired differences above 0 along ``axis``, ties (0) counting half: an
    estimate of P(the family's member beats its comparator's on the same seed)."""
    x = np.asarray(diffs, dtype=float)
    if x.ndim == 1:
        x = _finite(x)
        if not len(x):
            return math.nan
    return ((x > 0).sum(axis) + 0.5 * (x == 0).sum(axis)) / x.shape[axis]


BOOTSTRAP_RESAMPLES = 2000


def stratified_bootstrap(strata: list, statistic, confidence: float = CONFIDENCE,
                         seed: int = 0) -> Interval:
    """``statistic(samples, axis)`` (a vectorized function of a list of arrays, one per
    stratum) with a percentile bootstrap interval that resamples within each stratum (a
    dataset) independently (``scipy.stats.bootstrap`` over several samples), so every
    resample keeps each dataset's share. A fixed ``seed``: the same interval every run."""
    strata = [_finite(s) for s in strata]
    strata = [s for s in strata if len(s)]
    if not strata:
        return Interval(math.nan, math.nan, math.nan, 0)
    point = float(statistic(strata, axis=-1))
    n = sum(len(s) for s in strata)
    if all(len(s) < 2 for s in strata):
        return Interval(point, math.nan, math.nan, n)
    with warnings.catch_warnings():  # degenerate (constant) resamples: scipy warns
        warnings.simplefilter("ignore")
        result = stats.bootstrap(tuple(strata), lambda *samples, axis=-1: statistic(list(samples), axis=axis),
                                 vectorized=True, paired=False, n_resamples=BOOTSTRAP_RESAMPLES,
                                 confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return Interval(point, float(result.confidence_interval.low), float(result.confidence_interval.high), n)


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
