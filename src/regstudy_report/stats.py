"""The statistics of the report: paired differences over seeds, their intervals and tests,
error control across a dataset's findings, power, and aggregates across datasets.

Every comparison in the report pairs members by seed. A seed fixes the data draw (a new
sample, or a new split of digits) and the initialization, so two members with the same
seed differ only in what is compared, and the spread of the differences over seeds
covers data and initialization variation.

Everything here is a pure function of arrays, checked against scipy and statsmodels in
``tests/unit/test_stats.py``: Student-t intervals (``scipy.stats.ttest_1samp``), the paired
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


@dataclass(frozen=True)
class Effect:
    """An estimated mean paired difference: ``mean`` with standard error ``se`` from ``n``
    seeds (Student's t with n - 1 degrees of freedom), and the per-seed ``diffs`` behind it."""

    mean: float
    se: float
    n: int
    diffs: np.ndarray

    def interval(self, confidence: float = CONFIDENCE) -> Interval:
        """``mean ± t((1 + confidence)/2, n - 1) · se``; NaN bounds below 2 seeds."""
        if self.n < 2 or not math.isfinite(self.se):
            return Interval(self.mean, math.nan, math.nan, self.n)
        half = float(stats.t.ppf((1 + confidence) / 2, self.n - 1)) * self.se
        return Interval(self.mean, self.mean - half, self.mean + half, self.n)

    @property
    def sd(self) -> float:
        """The spread of one seed's difference that this standard error implies: se · √n."""
        return self.se * math.sqrt(self.n) if self.n else math.nan


def paired_effect(diffs) -> Effect:
    """The mean of paired differences with its classical standard error ``s / √n``."""
    x = _finite(diffs)
    if len(x) == 0:
        return Effect(math.nan, math.nan, 0, x)
    se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan
    return Effect(float(x.mean()), se, len(x), x)


def difference_p(effect: Effect) -> float:
    """Two-sided p-value of the t-test of ``effect.mean = 0``: ``t = mean / se`` with n - 1
    degrees of freedom (for a plain paired difference, ``DescrStatsW.ttest_mean``); NaN
    below 2 seeds. No spread at all (the same test accuracy difference on every seed)
    leaves t undefined: then the exact sign test, ``2 · 0.5^n`` if the differences are not
    0 (n pairs all on one side), else 1."""
    if effect.n < 2 or not math.isfinite(effect.mean):
        return math.nan
    if effect.se == 0 or not math.isfinite(effect.se):
        if np.ptp(effect.diffs) == 0:
            return min(1.0, 2 * 0.5 ** effect.n) if effect.diffs[0] != 0 else 1.0
        return difference_p(paired_effect(effect.diffs))
    return float(2 * stats.t.sf(abs(effect.mean / effect.se), effect.n - 1))


def equivalence_p(effect: Effect, margin: float) -> float:
    """p-value of two one-sided t-tests (TOST) that ``effect.mean`` lies inside ``(-margin,
    margin)``: the larger of the p-values of ``t = (mean + margin) / se`` against "≤ -margin"
    and ``t = (mean - margin) / se`` against "≥ margin" (for a plain paired difference,
    ``DescrStatsW.ttost_mean``). Small: the mean is shown to lie within the margin. NaN
    below 2 seeds. No spread at all: the sign test's ``0.5^n`` inside the margin, else 1."""
    if effect.n < 2 or not math.isfinite(effect.mean):
        return math.nan
    if effect.se == 0 or not math.isfinite(effect.se):
        if np.ptp(effect.diffs) == 0:
            return 0.5 ** effect.n if abs(effect.diffs[0]) < margin else 1.0
        return equivalence_p(paired_effect(effect.diffs), margin)
    df = effect.n - 1
    return float(max(stats.t.sf((effect.mean + margin) / effect.se, df),
                     stats.t.sf((margin - effect.mean) / effect.se, df)))


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


# --- choosing a strength on validation without flattering the test ---


def selectable(val: np.ndarray) -> np.ndarray:
    """The columns (strengths) of a seeds x strengths validation table that can be chosen:
    a value on every seed (a setting that diverged on some seed is not a viable choice)."""
    return np.isfinite(np.asarray(val, dtype=float)).all(axis=0)


def best_column(val: np.ndarray) -> int | None:
    """The column with the highest mean validation metric over all seeds, among the
    selectable ones; ties: the first (columns go weakest first). None if none is."""
    val = np.asarray(val, dtype=float)
    ok = selectable(val)
    if not ok.any():
        return None
    means = np.where(ok, np.nanmean(np.where(np.isfinite(val), val, 0.0), axis=0), -np.inf)
    return int(np.argmax(means))


def leave_one_out_choices(val: np.ndarray) -> np.ndarray:
    """For each seed (row), the column with the highest mean validation metric over the
    *other* seeds (ties: the first; columns go weakest first), among the selectable ones;
    -1 where none is or there is no other seed.

    Cross-fitting: a seed's test difference is then taken at a strength its own members
    did not choose, so the luck that made a strength look best on validation (which a
    model's test score shares, as both come from the same trained model) does not also
    flatter its test effect: choosing on all seeds and testing on the same seeds nearly
    doubled the rate of false *better* verdicts in a simulation (tests/unit/test_error_control.py).
    """
    val = np.asarray(val, dtype=float)
    n = val.shape[0]
    ok = selectable(val)
    if n < 2 or not ok.any():
        return np.full(n, -1)
    totals = np.where(ok, val, 0.0).sum(axis=0)
    others = (totals[None, :] - np.where(ok, val, 0.0)) / (n - 1)
    others[:, ~ok] = -np.inf
    return np.argmax(others, axis=1)


def cross_fitted_effect(val: np.ndarray, test: np.ndarray, base: np.ndarray) -> tuple[Effect, np.ndarray]:
    """The effect of choosing a strength on validation, judged on test without flattering
    it, and each seed's choice (a column index; -1 where none).

    ``val``, ``test``: seeds x strengths (columns weakest first); ``base``: the comparator's
    test metric per seed. Each seed's difference is its test metric at the strength the
    *other* seeds' validation prefers (:func:`leave_one_out_choices`) minus its comparator's.
    Each such difference has mean 0 when no strength matters, but they are not
    independent (a strength that drew lucky validation on several seeds is chosen for the
    others), so the standard error is the jackknife's over seeds, the whole choice re-made
    without each seed in turn: ``se² = (n-1)/n · Σ_k (θ_(k) - θ̄)²``. It equals the
    classical ``s / √n`` when every seed chooses the same strength, and keeps the false
    positive rate at or below alpha in simulation (tests/unit/test_error_control.py), where the
    plain t-test on these differences did not (0.16 at alpha 0.05)."""
    val, test, base = (np.asarray(a, dtype=float) for a in (val, test, base))
    choices = leave_one_out_choices(val)
    keep = (choices >= 0) & np.isfinite(base)
    rows = np.flatnonzero(keep)
    diffs = test[rows, choices[rows]] - base[rows]
    n = len(diffs)
    if n < 2:
        return Effect(float(diffs.mean()) if n else math.nan, math.nan, n, diffs), choices
    replicates = []
    for k in range(len(val)):
        others = np.delete(np.arange(len(val)), k)
        c = leave_one_out_choices(val[others])
        ok = (c >= 0) & np.isfinite(base[others])
        if ok.sum() < 1:
            continue
        replicates.append(float(np.mean(test[others[ok], c[ok]] - base[others[ok]])))
    r = np.asarray(replicates)
    se = float(math.sqrt((len(r) - 1) / len(r) * np.sum((r - r.mean()) ** 2))) if len(r) > 2 else math.nan
    return Effect(float(diffs.mean()), se, n, diffs), choices


NEAR_TIE = 1.0  # standard errors: how close on validation another strength may come to the best


def resolution(values) -> float:
    """The smallest step between distinct values: an accuracy's one example of its split
    (1/n), next to nothing for R²."""
    u = np.unique(_finite(np.ravel(values)))
    steps = np.diff(u)
    return float(steps[steps > 0].min()) if (steps > 0).any() else 0.0


def near_ties(val: np.ndarray, best: int, within: float | None = None) -> list[int]:
    """The selectable columns whose validation metric, paired by seed, comes within
    ``within`` standard errors (:data:`NEAR_TIE`) plus half the metric's resolution of
    column ``best``'s mean (an exact tie included): another draw of the arithmetic may well
    have chosen them. The half step: one trained model more or less right on a single
    validation example moves an accuracy by a whole step, and a one-ulp perturbation of
    the study did that (docs/statistics.md)."""
    within = NEAR_TIE if within is None else within
    val = np.asarray(val, dtype=float)
    ok = selectable(val)
    half_step = resolution(val[:, ok]) / 2 if ok.any() else 0.0
    out = []
    for j in np.flatnonzero(ok):
        if j == best:
            continue
        d = val[:, best] - val[:, j]
        if len(d) >= 2 and d.mean() <= within * d.std(ddof=1) / math.sqrt(len(d)) + half_step:
            out.append(int(j))
    return out


@dataclass(frozen=True)
class Decision:
    """The tests of one paired comparison and its verdict among a dataset's comparisons."""

    p_value: float  # paired t-test of mean = 0, two-sided
    p_equivalence: float  # TOST of -margin < mean < margin
    p_adjusted: float  # Holm across the comparisons decided together
    p_equivalence_adjusted: float
    verdict: str


def decide(effects: list[Effect], margin: float, alpha: float = ALPHA) -> list[Decision]:
    """The verdicts of a dataset's comparisons: both tests per comparison
    (:func:`difference_p`, :func:`equivalence_p`), Holm across the comparisons for each
    test (:func:`holm`), then :func:`three_way`. Keeps the chance of any false
    *better*/*worse* among them, and of any false *equivalent*, at ``alpha``
    (``tests/unit/test_error_control.py`` simulates it)."""
    p = [difference_p(e) for e in effects]
    q = [equivalence_p(e, margin) for e in effects]
    p_adj, q_adj = holm(p), holm(q)
    return [Decision(float(pi), float(qi), float(pa), float(qa), three_way(e.mean, float(pa), float(qa), alpha))
            for e, pi, qi, pa, qa in zip(effects, p, q, p_adj, q_adj)]


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


def equivalence_power(effect: float, margin: float, sd: float, n: int, alpha: float) -> float:
    """Probability that TOST at ``alpha`` shows equivalence within ``±margin`` from ``n``
    pairs whose true mean difference is ``effect`` (standard deviation ``sd``): at least
    ``P1 + P2 - 1``, each ``P`` the power of one one-sided test (``TTestPower``, the
    noncentral t), since both must reject (Bonferroni's bound, tight where one side
    dominates); 0 outside the margin."""
    from statsmodels.stats.power import TTestPower

    if n < 2 or not abs(effect) < margin:
        return 0.0
    if sd == 0:
        return 1.0
    power = TTestPower().power
    sides = [power(effect_size=(margin - s * effect) / sd, nobs=n, alpha=alpha, alternative="larger")
             for s in (1, -1)]
    return max(0.0, float(sum(sides)) - 1.0)


def seeds_to_decide(mean: float, sd: float, margin: float, alpha: float,
                    power: float = POWER) -> tuple[int | None, str]:
    """How many seeds would likely decide an undetermined comparison whose true effect is
    the observed ``mean``, at level ``alpha`` (the report passes alpha / m, Holm's
    strictest step): the fewer of the pairs needed to show it differs from 0 (two-sided
    test of ``mean``) and, where ``|mean| < margin``, to show it lies inside the margin
    (both one-sided tests of TOST: :func:`equivalence_power`). Returns (seeds, the verdict
    they would give); (None, "") where neither is within :data:`MAX_SEEDS`."""
    options = []
    n = seeds_needed(mean, sd, alpha, power)
    if n is not None:
        options.append((n, BETTER if mean > 0 else WORSE))
    if math.isfinite(mean) and math.isfinite(sd) and abs(mean) < margin:
        low, high = 2, MAX_SEEDS  # the power rises with n: bisect for the first n that reaches it
        if equivalence_power(mean, margin, sd, high, alpha) >= power:
            while low < high:
                mid = (low + high) // 2
                low, high = (low, mid) if equivalence_power(mean, margin, sd, mid, alpha) >= power else (mid + 1, high)
            options.append((low, EQUIVALENT))
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


def weighted_iqm(values, weights, axis: int = -1):
    """Interquartile mean with weights: the weighted mean of the values in the middle 50% of
    the total weight, a value straddling a quartile counting with the part of its weight
    inside (equal weights: :func:`iqm` up to how a quartile splits a value). ``values``
    may carry leading batch axes; ``weights`` is 1-D along ``axis``."""
    x = np.moveaxis(np.asarray(values, dtype=float), axis, -1)
    w = np.broadcast_to(np.asarray(weights, dtype=float), x.shape)
    order = np.argsort(x, axis=-1, kind="stable")
    x, w = np.take_along_axis(x, order, -1), np.take_along_axis(w, order, -1)
    total = w.sum(-1, keepdims=True)
    upper = np.cumsum(w, -1)
    lower = upper - w
    inside = np.clip(np.minimum(upper, 0.75 * total) - np.maximum(lower, 0.25 * total), 0.0, None)
    return (inside * x).sum(-1) / inside.sum(-1)


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
    resample keeps each dataset's share. Strata of fewer than 2 values are left out. A
    fixed ``seed``: the same interval every run."""
    strata = [_finite(s) for s in strata]
    strata = [s for s in strata if len(s) >= 2]  # a single value cannot be resampled
    if not strata:
        return Interval(math.nan, math.nan, math.nan, 0)
    point = float(statistic(strata, axis=-1))
    n = sum(len(s) for s in strata)
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
