"""The report's statistics (regstudy_report.stats) against scipy and hand computation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from regstudy_report.stats import (
    BETTER,
    EQUIVALENT,
    UNDETERMINED,
    WORSE,
    Effect,
    Interval,
    best_column,
    cross_fitted_effect,
    decide,
    detectable_effect,
    difference_p,
    equivalence_p,
    equivalence_power,
    estimate_text,
    holm,
    improvement_probability,
    iqm,
    leave_one_out_choices,
    near_alpha,
    near_ties,
    resolution,
    paired_effect,
    pooled_sd,
    seeds_needed,
    seeds_to_decide,
    stratified_bootstrap,
    three_way,
    weighted_iqm,
    interval_text,
    mean_interval,
    paired,
    paired_difference,
    sig,
    signed,
    trend,
)

SAMPLE = np.array([0.912, 0.874, 0.951, 0.889, 0.933, 0.902])


def t_interval(x, confidence=0.95):
    """mean ± t_{(1+c)/2, n-1} · sd(ddof=1) / sqrt(n), by hand."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    half = sps.t.ppf((1 + confidence) / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return x.mean(), x.mean() - half, x.mean() + half


# --- mean_interval ---


def test_mean_interval_is_the_student_t_interval():
    mean, lo, hi = t_interval(SAMPLE)
    iv = mean_interval(SAMPLE)
    assert iv.n == len(SAMPLE)
    assert iv.defined
    assert iv.mean == pytest.approx(mean, rel=1e-12)
    assert iv.lo == pytest.approx(lo, rel=1e-12)
    assert iv.hi == pytest.approx(hi, rel=1e-12)
    assert iv.lo < iv.mean < iv.hi


def test_mean_interval_other_confidence():
    mean, lo, hi = t_interval(SAMPLE, confidence=0.9)
    iv = mean_interval(SAMPLE, confidence=0.9)
    assert (iv.lo, iv.hi) == (pytest.approx(lo, rel=1e-12), pytest.approx(hi, rel=1e-12))
    # a 90% interval is narrower than the 95% one
    wide = mean_interval(SAMPLE)
    assert wide.lo < iv.lo and iv.hi < wide.hi


def test_mean_interval_drops_nans():
    with_nans = np.concatenate([SAMPLE[:3], [np.nan], SAMPLE[3:], [np.nan, np.inf]])
    mean, lo, hi = t_interval(SAMPLE)
    iv = mean_interval(with_nans)
    assert iv.n == len(SAMPLE)
    assert (iv.mean, iv.lo, iv.hi) == (pytest.approx(mean, rel=1e-12), pytest.approx(lo, rel=1e-12),
                                       pytest.approx(hi, rel=1e-12))


def test_mean_interval_of_a_pandas_series():
    iv = mean_interval(pd.Series(SAMPLE, index=[5, 3, 1, 0, 2, 4]))
    assert iv.lo == pytest.approx(t_interval(SAMPLE)[1], rel=1e-12)


def test_mean_interval_one_value_has_no_interval():
    iv = mean_interval([0.42])
    assert iv.n == 1
    assert iv.mean == 0.42
    assert math.isnan(iv.lo) and math.isnan(iv.hi)
    assert not iv.defined
    assert not iv.above(0.0) and not iv.below(1.0) and not iv.within(0.0, 1.0)


def test_mean_interval_one_value_after_dropping_nans():
    iv = mean_interval([np.nan, 0.42, np.nan])
    assert iv.n == 1 and iv.mean == 0.42 and not iv.defined


@pytest.mark.parametrize("values", [[], [np.nan, np.nan]])
def test_mean_interval_no_values(values):
    iv = mean_interval(values)
    assert iv.n == 0
    assert math.isnan(iv.mean) and math.isnan(iv.lo) and math.isnan(iv.hi)
    assert not iv.defined


def test_mean_interval_identical_values_collapses():
    iv = mean_interval([0.3] * 4)
    assert iv.n == 4
    assert iv.defined
    assert iv.mean == pytest.approx(0.3, rel=1e-12)
    assert iv.lo == pytest.approx(0.3, rel=1e-12)
    assert iv.hi == pytest.approx(0.3, rel=1e-12)
    assert iv.above(0.29) and iv.below(0.31)


def test_interval_predicates():
    iv = Interval(0.5, 0.2, 0.8, 5)
    assert iv.above(0.1) and not iv.above(0.2) and not iv.above(0.5)
    assert iv.below(0.9) and not iv.below(0.8) and not iv.below(0.5)
    assert iv.within(0.2, 0.8) and iv.within(0.0, 1.0) and not iv.within(0.3, 1.0) and not iv.within(0.0, 0.7)
    assert iv.as_dict() == {"mean": 0.5, "lo": 0.2, "hi": 0.8, "n": 5}


# --- paired differences ---


def test_paired_difference_is_the_t_interval_of_the_differences():
    a = pd.Series(SAMPLE, index=range(6))
    b = pd.Series(SAMPLE[::-1] - 0.05, index=range(6))
    expected = t_interval(SAMPLE - (SAMPLE[::-1] - 0.05))
    iv = paired_difference(a, b)
    assert iv.n == 6
    assert (iv.mean, iv.lo, iv.hi) == tuple(pytest.approx(v, rel=1e-12) for v in expected)


def test_paired_difference_pairs_by_seed_not_position():
    seeds_a = [4, 0, 3, 1, 2, 7]  # seed 7 only in a
    seeds_b = [9, 2, 1, 0, 3, 4]  # seed 9 only in b
    va = {4: 0.91, 0: 0.85, 3: 0.88, 1: 0.97, 2: 0.80, 7: 5.0}
    vb = {9: -5.0, 2: 0.70, 1: 0.90, 0: 0.84, 3: 0.81, 4: 0.86}
    a = pd.Series([va[s] for s in seeds_a], index=seeds_a)
    b = pd.Series([vb[s] for s in seeds_b], index=seeds_b)
    common = [0, 1, 2, 3, 4]
    diffs = np.array([va[s] - vb[s] for s in common])

    pairs = paired(a, b)
    assert list(pairs.index) == common
    np.testing.assert_allclose(pairs.to_numpy(), diffs, rtol=1e-15)

    expected = t_interval(diffs)
    iv = paired_difference(a, b)
    assert iv.n == 5
    assert (iv.mean, iv.lo, iv.hi) == tuple(pytest.approx(v, rel=1e-12) for v in expected)
    # the order of either index does not matter
    again = paired_difference(a.sort_index(), b.sample(frac=1.0, random_state=3))
    assert (again.mean, again.lo, again.hi) == (pytest.approx(iv.mean, rel=1e-12), pytest.approx(iv.lo, rel=1e-12),
                                                pytest.approx(iv.hi, rel=1e-12))


def test_paired_difference_drops_nan_pairs():
    a = pd.Series([0.9, np.nan, 0.8, 0.85, 0.7], index=range(5))
    b = pd.Series([0.8, 0.8, np.nan, 0.80, 0.6], index=range(5))
    diffs = np.array([0.9 - 0.8, 0.85 - 0.80, 0.7 - 0.6])
    iv = paired_difference(a, b)
    assert iv.n == 3
    assert iv.mean == pytest.approx(diffs.mean(), rel=1e-12)
    assert iv.lo == pytest.approx(t_interval(diffs)[1], rel=1e-12)


def test_paired_difference_with_one_common_seed_is_undefined():
    iv = paired_difference(pd.Series([1.0, 2.0], index=[0, 1]), pd.Series([0.5, 3.0], index=[1, 2]))
    assert iv.n == 1 and iv.mean == pytest.approx(1.5) and not iv.defined
    assert math.isnan(difference_p(paired_effect([1.5]))) and math.isnan(equivalence_p(paired_effect([1.5]), 0.1))


def test_paired_difference_with_no_common_seed():
    iv = paired_difference(pd.Series([1.0], index=[0]), pd.Series([0.5], index=[1]))
    assert iv.n == 0 and not iv.defined


# --- tests of one comparison, against scipy and by hand ---

DIFFS = np.array([0.012, 0.031, -0.004, 0.022, 0.017, 0.009])


def test_difference_p_is_the_paired_t_test():
    expected = sps.ttest_1samp(DIFFS, 0.0).pvalue
    assert difference_p(paired_effect(DIFFS)) == pytest.approx(expected, rel=1e-10)
    # by hand: t = mean / (sd / sqrt n), two-sided tail of Student's t with n - 1 dof
    t = DIFFS.mean() / (DIFFS.std(ddof=1) / math.sqrt(len(DIFFS)))
    assert difference_p(paired_effect(DIFFS)) == pytest.approx(2 * sps.t.sf(abs(t), len(DIFFS) - 1), rel=1e-10)
    assert difference_p(paired_effect(np.append(DIFFS, [np.nan, np.inf]))) == pytest.approx(expected, rel=1e-10)


def test_equivalence_p_is_statsmodels_tost():
    from statsmodels.stats.weightstats import DescrStatsW

    margin = 0.04
    lower = sps.ttest_1samp(DIFFS, -margin, alternative="greater").pvalue
    upper = sps.ttest_1samp(DIFFS, margin, alternative="less").pvalue
    assert equivalence_p(paired_effect(DIFFS), margin) == pytest.approx(max(lower, upper), rel=1e-10)
    assert equivalence_p(paired_effect(DIFFS), margin) == pytest.approx(DescrStatsW(DIFFS).ttost_mean(-margin, margin)[0])
    # equivalent at 5% exactly when the 90% interval lies inside the margin
    lo, hi = sps.ttest_1samp(DIFFS, 0.0).confidence_interval(0.90)
    for m in (0.02, 0.03, 0.04, 0.06):
        assert (equivalence_p(paired_effect(DIFFS), m) < 0.05) == (-m < lo and hi < m), m


def test_an_effect_with_its_own_standard_error_is_tested_with_it():
    """A jackknife's standard error, not the spread of its differences: t = mean / se."""
    e = Effect(0.01, 0.004, 8, DIFFS)
    assert difference_p(e) == pytest.approx(2 * sps.t.sf(2.5, 7))
    assert equivalence_p(e, 0.02) == pytest.approx(max(sps.t.sf(0.03 / 0.004, 7), sps.t.sf(0.01 / 0.004, 7)))
    iv = e.interval()
    assert (iv.lo, iv.hi) == (pytest.approx(0.01 - sps.t.ppf(0.975, 7) * 0.004), pytest.approx(0.01 + sps.t.ppf(0.975, 7) * 0.004))
    assert e.sd == pytest.approx(0.004 * math.sqrt(8))


def test_identical_differences_get_the_sign_tests_p_value():
    """No spread (the same test accuracy difference on every seed): the t statistic is
    undefined; the exact sign test's p-value, from the binomial distribution by scipy."""
    same = paired_effect([0.01] * 5)
    assert difference_p(same) == pytest.approx(sps.binomtest(5, 5, 0.5).pvalue) == 2 * 0.5**5
    assert difference_p(paired_effect([0.01] * 2)) == 0.5  # two pairs prove nothing
    assert difference_p(paired_effect([0.0] * 5)) == 1.0
    assert equivalence_p(paired_effect([0.0] * 5), 0.02) == \
        pytest.approx(sps.binomtest(5, 5, 0.5, alternative="greater").pvalue)
    assert equivalence_p(paired_effect([0.03] * 5), 0.02) == 1.0


# --- choosing on validation ---


def test_leave_one_out_choices_by_hand():
    val = np.array([[0.50, 0.60, 0.55],
                    [0.50, 0.40, 0.55],
                    [0.50, 0.62, 0.55],
                    [0.50, 0.61, np.nan]])  # column 2 diverged on seed 3: not selectable
    # without seed 0, column 1 averages (0.40 + 0.62 + 0.61) / 3 = 0.543 > 0.5
    # without seed 2, it averages 0.537; without seed 3, 0.54; without seed 1, 0.61
    np.testing.assert_array_equal(leave_one_out_choices(val), [1, 1, 1, 1])
    # column 1 over the other seeds: without seed 0, 0.507; without 1, 0.607; without 2,
    # 0.467 and without 3, 0.44, both below column 0's 0.5
    val[:, 1] = [0.50, 0.20, 0.62, 0.70]
    np.testing.assert_array_equal(leave_one_out_choices(val), [1, 1, 0, 0])
    tie = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    np.testing.assert_array_equal(leave_one_out_choices(tie), [0, 0, 0])  # ties: the weakest (first)
    assert best_column(tie) == 0 and best_column(np.full((3, 2), np.nan)) is None


def test_near_ties_are_within_a_standard_error_and_half_a_step_of_the_best():
    """Accuracy on 100 validation examples moves in steps of 0.01: column 1 trails the best by
    0.004 on average (standard error 0.0024), within 0.0024 + 0.005; column 2 by 0.02, not."""
    val = np.array([[0.90, 0.89, 0.88], [0.91, 0.91, 0.89], [0.92, 0.91, 0.90], [0.90, 0.90, 0.88], [0.93, 0.93, 0.91]])
    assert resolution(val) == pytest.approx(0.01)
    assert near_ties(val, 0) == [1]
    assert near_ties(val, 0, within=0.0) == [1]  # the half step alone: 0.004 < 0.005
    r2 = val + np.linspace(0, 1e-6, 15).reshape(5, 3)  # no steps to speak of: one standard error only
    assert resolution(r2) < 1e-6 and near_ties(r2, 0, within=0.0) == []


def test_cross_fitted_effect_is_the_jackknife_of_the_leave_one_out_choice_by_hand():
    rng = np.random.default_rng(4)
    val, test = rng.normal(0.5, 0.05, (6, 4)), rng.normal(0.5, 0.05, (6, 4))
    base = rng.normal(0.5, 0.05, 6)
    effect, choices = cross_fitted_effect(val, test, base)

    def theta(rows):
        out = []
        for i in rows:
            others = [j for j in rows if j != i]
            out.append(test[i, int(np.argmax(val[others].mean(0)))] - base[i])
        return np.array(out)

    d = theta(range(6))
    np.testing.assert_allclose(effect.diffs, d)
    np.testing.assert_array_equal(choices, [int(np.argmax(val[[j for j in range(6) if j != i]].mean(0))) for i in range(6)])
    thetas = np.array([theta([j for j in range(6) if j != k]).mean() for k in range(6)])
    assert effect.mean == pytest.approx(d.mean())
    assert effect.se == pytest.approx(math.sqrt(5 / 6 * np.sum((thetas - thetas.mean()) ** 2)))


def test_with_one_choice_on_every_seed_the_jackknife_is_the_paired_t_test():
    rng = np.random.default_rng(5)
    val = np.column_stack([np.full(6, 0.5), np.full(6, 0.9)])  # column 1 chosen everywhere
    test, base = rng.normal(0.6, 0.05, (6, 2)), rng.normal(0.5, 0.05, 6)
    effect, choices = cross_fitted_effect(val, test, base)
    assert (choices == 1).all()
    assert effect.se == pytest.approx(paired_effect(test[:, 1] - base).se)


def test_holm_against_the_step_down_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.005, np.nan])
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then the running maximum
    expected = {3: 0.02, 0: 0.03, 2: 0.06, 1: 0.06}
    adjusted = holm(p)
    for i, value in expected.items():
        assert adjusted[i] == pytest.approx(value, rel=1e-12)
    assert math.isnan(adjusted[4])
    assert np.isnan(holm([np.nan, np.nan])).all()
    assert holm([0.8, 0.9]).max() == 1.0  # capped at 1


@pytest.mark.parametrize("mean, p, q, verdict", [
    (0.03, 0.01, 0.5, BETTER),
    (-0.03, 0.01, 0.5, WORSE),
    (0.001, 0.6, 0.01, EQUIVALENT),
    (0.005, 0.01, 0.01, EQUIVALENT),  # real but smaller than the margin
    (0.02, 0.2, 0.3, UNDETERMINED),
    (0.02, 0.05, 0.05, UNDETERMINED),  # at alpha is not below it
])
def test_three_way(mean, p, q, verdict):
    assert three_way(mean, p, q) == verdict


def test_decide_is_both_tests_then_holm_then_three_way():
    rng = np.random.default_rng(1)
    diffs = [rng.normal(0.05, 0.01, 6), rng.normal(0.0, 0.002, 6), rng.normal(-0.01, 0.03, 6), [0.01]]
    effects = [paired_effect(d) for d in diffs]
    decisions = decide(effects, margin=0.02)
    p = [difference_p(e) for e in effects]
    q = [equivalence_p(e, 0.02) for e in effects]
    for d, pa, qa, x in zip(decisions, holm(p), holm(q), diffs):
        assert (d.p_adjusted, d.p_equivalence_adjusted) == (pytest.approx(pa, nan_ok=True), pytest.approx(qa, nan_ok=True))
        assert d.verdict == three_way(float(np.mean(x)), pa, qa)
    assert [d.verdict for d in decisions[:3]] == [BETTER, EQUIVALENT, UNDETERMINED]
    assert decisions[3].verdict == UNDETERMINED and math.isnan(decisions[3].p_value)  # one pair: no test


def test_near_alpha():
    assert near_alpha(0.0125) and near_alpha(0.2) and near_alpha(0.06)
    assert not near_alpha(0.012) and not near_alpha(0.21) and not near_alpha(math.nan)


# --- power ---


def test_detectable_effect_has_the_stated_power_by_the_noncentral_t():
    sd, n, alpha = 0.05, 8, 0.05 / 10
    effect = detectable_effect(sd, n, alpha)
    # power of the two-sided paired t-test by hand: noncentral t with nc = effect / (sd / sqrt n)
    crit = sps.t.isf(alpha / 2, n - 1)
    nc = effect / (sd / math.sqrt(n))
    power = sps.nct.sf(crit, n - 1, nc) + sps.nct.cdf(-crit, n - 1, nc)
    assert power == pytest.approx(0.8, abs=1e-6)
    assert detectable_effect(sd, 2 * n, alpha) < effect  # more seeds, smaller effects
    assert math.isnan(detectable_effect(sd, 1, alpha)) and detectable_effect(0.0, n, alpha) == 0.0


def test_seeds_needed_inverts_the_detectable_effect():
    sd, alpha = 0.05, 0.005
    for n in (5, 10, 20):
        effect = detectable_effect(sd, n, alpha)
        assert seeds_needed(effect, sd, alpha) == n  # rounded up from n minus a solver's hair
        assert seeds_needed(effect * 1.01, sd, alpha) <= n
    assert seeds_needed(1e-9, sd, alpha) is None  # beyond MAX_SEEDS
    assert seeds_needed(0.0, sd, alpha) is None


def test_seeds_to_decide_takes_the_nearer_verdict():
    # a clear effect far outside the margin: the difference test decides it
    n, verdict = seeds_to_decide(0.05, 0.05, 0.01, 0.005)
    assert verdict == BETTER and n == seeds_needed(0.05, 0.05, 0.005)
    # a tiny effect well inside the margin: equivalence is nearer, and it needs both
    # one-sided tests of TOST: the first n whose power P1 + P2 - 1 reaches 0.8
    n, verdict = seeds_to_decide(0.001, 0.02, 0.02, 0.005)
    assert verdict == EQUIVALENT
    assert equivalence_power(0.001, 0.02, 0.02, n, 0.005) >= 0.8 > equivalence_power(0.001, 0.02, 0.02, n - 1, 0.005)
    assert n > seeds_needed(0.019, 0.02, 0.005, alternative="larger")  # more than the nearer side alone
    assert seeds_to_decide(-0.05, 0.05, 0.01, 0.005)[1] == WORSE


def test_equivalence_power_by_the_noncentral_t_and_by_simulation():
    effect, margin, sd, n, alpha = 0.005, 0.02, 0.02, 25, 0.01
    df, se = n - 1, sd / math.sqrt(n)
    crit = sps.t.isf(alpha, df)
    sides = [sps.nct.sf(crit, df, (margin - effect) / se), sps.nct.sf(crit, df, (margin + effect) / se)]
    assert equivalence_power(effect, margin, sd, n, alpha) == pytest.approx(sum(sides) - 1, rel=1e-6)
    # a lower bound of TOST's true power: simulated, TOST rejects at least that often
    rng = np.random.default_rng(0)
    rejected = np.mean([equivalence_p(paired_effect(rng.normal(effect, sd, n)), margin) < alpha for _ in range(2000)])
    assert rejected >= equivalence_power(effect, margin, sd, n, alpha) - 0.03
    assert equivalence_power(0.03, margin, sd, n, alpha) == 0.0  # outside the margin


def test_pooled_sd_is_the_root_mean_square():
    assert pooled_sd([0.03, 0.04, np.nan]) == pytest.approx(math.sqrt((0.03**2 + 0.04**2) / 2))
    assert math.isnan(pooled_sd([]))


# --- aggregates ---


def test_iqm_is_scipys_trimmed_mean():
    x = np.array([5.0, -1.0, 0.2, 0.4, 0.3, 0.1, 0.5, 9.0])
    assert iqm(x) == pytest.approx(sps.trim_mean(x, 0.25))
    assert iqm(x) == pytest.approx(np.mean(np.sort(x)[2:6]))  # the middle half, by hand
    rows = np.stack([x, x[::-1] + 1])
    np.testing.assert_allclose(iqm(rows, axis=-1), [iqm(x), iqm(x + 1)])


def test_weighted_iqm_gives_each_stratum_its_weight():
    """Four zeros weighing 1/4 each and two tens weighing 1/2 each (two datasets of 4 and 2
    seeds, each the same total weight): the middle half of the mass is half zeros, half tens."""
    values = np.array([0.0, 0.0, 0.0, 0.0, 10.0, 10.0])
    assert weighted_iqm(values, [0.25] * 4 + [0.5] * 2) == pytest.approx(5.0)
    assert weighted_iqm([1.0, 2.0, 3.0, 4.0], np.ones(4)) == pytest.approx(iqm([1.0, 2.0, 3.0, 4.0])) == 2.5
    batch = np.stack([values, values + 1])
    np.testing.assert_allclose(weighted_iqm(batch, [0.25] * 4 + [0.5] * 2), [5.0, 6.0])


def test_improvement_probability_counts_ties_half():
    assert improvement_probability([0.1, -0.2, 0.0, 0.3]) == pytest.approx(2.5 / 4)
    np.testing.assert_allclose(improvement_probability(np.array([[1.0, -1.0], [0.0, 0.0]]), axis=-1), [0.5, 0.5])


def test_stratified_bootstrap_resamples_within_each_stratum():
    """Each resample keeps every stratum's size: a statistic that is the first stratum's
    mean never sees the second's values, and the interval is scipy's for that stratum alone."""
    a, b = np.array([0.1, 0.4, 0.2, 0.3, 0.5]), np.array([100.0, 200.0, 300.0])
    first = lambda strata, axis=-1: np.mean(strata[0], axis=axis)  # noqa: E731
    iv = stratified_bootstrap([a, b], first)
    assert iv.mean == pytest.approx(a.mean()) and 0.1 <= iv.lo < a.mean() < iv.hi <= 0.5
    assert iv == stratified_bootstrap([a, b], first)  # a fixed seed: the same interval
    alone = sps.bootstrap((a,), np.mean, n_resamples=2000, method="percentile", rng=np.random.default_rng(0))
    assert iv.lo == pytest.approx(alone.confidence_interval.low, abs=0.03)
    assert iv.hi == pytest.approx(alone.confidence_interval.high, abs=0.03)


# --- trend ---


def test_trend_is_spearman():
    x = np.array([0.0, 0.0, 0.1, 0.1, 0.2, 0.2, 0.5, 0.5, 1.0, 1.0])
    y = np.array([0.31, 0.27, 0.35, 0.30, 0.33, 0.41, 0.52, 0.47, 0.80, 0.92])
    expected = sps.spearmanr(x, y)
    rho, p = trend(x, y)
    assert rho == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-12)
    assert rho > 0.8 and p < 0.01
    falling_rho, falling_p = trend(x, -y)
    assert falling_rho == pytest.approx(-expected.statistic, rel=1e-12)
    assert falling_p == pytest.approx(expected.pvalue, rel=1e-12)


def test_trend_drops_non_finite_pairs():
    x = np.array([1.0, 2.0, np.nan, 3.0, 4.0, 5.0, 6.0])
    y = np.array([2.0, 1.0, 7.0, np.inf, 5.0, 3.0, 6.0])
    keep = [0, 1, 4, 5, 6]
    expected = sps.spearmanr(x[keep], y[keep])
    rho, p = trend(x, y)
    assert rho == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-12)


@pytest.mark.parametrize("x, y", [
    ([1, 2, 3, 4], [0.5, 0.5, 0.5, 0.5]),  # constant y
    ([2, 2, 2, 2], [0.1, 0.4, 0.2, 0.3]),  # constant x
    ([1, 2], [0.1, 0.2]),  # fewer than 3 points
    ([1, 2, np.nan, 4], [0.1, 0.2, 0.3, np.nan]),  # 2 finite pairs
])
def test_trend_undefined(x, y):
    rho, p = trend(x, y)
    assert math.isnan(rho) and math.isnan(p)


# --- number formatting ---


@pytest.mark.parametrize("value, text", [
    (0.906812, "0.907"),
    (1e-5, "1e-5"),
    (12345.6, "1.23e4"),
    (2500.0, "2.5e3"),
    (0.0123456, "0.0123"),
    (-0.5, "-0.5"),
    (100.0, "100"),
    (0.0, "0"),
    (3, "3"),
    (np.float32(0.25), "0.25"),
    (-1.23456e-7, "-1.23e-7"),
    (math.nan, "n/a"),
    (math.inf, "n/a"),
    (-math.inf, "n/a"),
    (None, "n/a"),
])
def test_sig(value, text):
    assert sig(value) == text


def test_sig_digits():
    assert sig(0.906812, 2) == "0.91"
    assert sig(12345.6, 5) == "12346"
    assert sig(12345.6, 1) == "1e4"


@pytest.mark.parametrize("value, text", [
    (0.0123456, "+0.0123"),
    (-0.5, "-0.5"),
    (0.0, "0"),
    (1e-5, "+1e-5"),
    (12345.6, "+1.23e4"),
    (-12345.6, "-1.23e4"),
    (math.nan, "n/a"),
    (None, "n/a"),
])
def test_signed(value, text):
    assert signed(value) == text


def test_interval_text():
    assert interval_text(Interval(0.1, 0.054512, 0.19321, 5)) == "[0.0545, 0.193]"
    assert interval_text(Interval(0.0, -1.5e-5, 2.0e4, 5)) == "[-1.5e-5, 2e4]"
    assert interval_text(Interval(0.1, 0.054512, 0.19321, 5), digits=2) == "[0.055, 0.19]"
    assert interval_text(Interval(0.1, math.nan, math.nan, 1)) == "[n/a]"
    assert interval_text(Interval(math.nan, math.nan, math.nan, 0)) == "[n/a]"


def test_interval_text_of_a_measured_interval():
    iv = mean_interval(SAMPLE)
    _, lo, hi = t_interval(SAMPLE)
    assert interval_text(iv) == f"[{float(f'{lo:.3g}')}, {float(f'{hi:.3g}')}]"


def test_estimate_text():
    assert estimate_text(0.120004, 0.054512, 0.19321) == "0.12 [0.0545, 0.193]"
    assert estimate_text(-2.5e-5, -4e-5, -1e-5) == "-2.5e-5 [-4e-5, -1e-5]"
    assert estimate_text(0.120004, None, None) == "0.12"
    assert estimate_text(0.120004, math.nan, math.nan) == "0.12"
    assert estimate_text(0.120004, 0.05, None) == "0.12"
    assert estimate_text(None, None, None) == "n/a"


def test_a_mean_prints_at_its_intervals_precision():
    """-1.4e-8 within [-0.0178, 0.0178] is 0 at the interval's precision; 0.02345 within
    [0.0182, 0.0286] keeps four decimals (3 significant digits of the larger bound)."""
    from regstudy_report.stats import Interval, at_precision, effect_text, estimate

    noise = Interval(-1.4e-8, -0.0178, 0.0178, 5)
    assert effect_text(noise) == "0 [-0.0178, 0.0178]"
    assert estimate(noise) == "0 [-0.0178, 0.0178]"
    assert at_precision(0.023456, Interval(0.023456, 0.0182, 0.0286, 5)) == 0.0235
    assert effect_text(Interval(0.023456, 0.0182, 0.0286, 5)) == "+0.0235 [0.0182, 0.0286]"
    assert estimate(Interval(0.95712, float("nan"), float("nan"), 1)) == "0.957"  # no interval
