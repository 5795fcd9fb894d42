"""The findings' verdicts on simulated studies with a known truth: with the strength chosen
on validation as the report chooses it, Holm keeps the chance of any false *better*/*worse*
(and of any false *equivalent*) on a dataset at alpha, and an effect of the size the
report says it detects is found with the stated power.

A simulated dataset has a baseline and ``FAMILIES`` regularized families with ``STRENGTHS``
strengths each, ``SEEDS`` seeds. A seed draws a shared offset (the data draw, which pairing
cancels); every trained model its own quality, seen by both its validation and its test
score (correlation ``RHO``: 0.85 measured on signal, 0.26-0.67 on the other datasets); a
family's first strength is the baseline's own model (λ = 0), as in the study. Each family's
strength is chosen on validation leave-one-seed-out and its effect's standard error is the
jackknife's (:func:`stats.cross_fitted_effect`); a family that chose λ = 0 on every seed is
not a test; the rest go through :func:`stats.decide`, the decision
:func:`findings.findings` makes for each dataset. A few datasets go through ``findings``
itself, from a members table, to show it decides the same from the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from regstudy_report.findings import dataset_power, findings
from regstudy_report.settings import Settings
from regstudy_report.stats import (
    BETTER,
    EQUIVALENT,
    WORSE,
    cross_fitted_effect,
    decide,
    detectable_effect,
    difference_p,
    paired_effect,
)
from regstudy_report.tables import Results

SEEDS, FAMILIES, STRENGTHS, NOISE, RHO = 15, 12, 6, 0.02, 0.85
STUDIES = 400
SETTINGS = Settings()
MARGIN = SETTINGS.margin("r2")


def simulated_dataset(rng, effects: dict[int, float] | None = None):
    """Per family, (val, test) seeds x strengths tables and the baseline's test scores;
    ``effects``: {family: true effect of its strength 2 on both validation and test}."""
    cov = NOISE**2 * np.array([[1.0, RHO], [RHO, 1.0]])
    offset = rng.normal(0.6, 0.1, SEEDS)
    base_val, base_test = (offset[:, None] + rng.multivariate_normal([0, 0], cov, SEEDS)).T
    families = []
    for f in range(FAMILIES):
        quality = rng.multivariate_normal([0, 0], cov, (SEEDS, STRENGTHS - 1))
        val = np.column_stack([base_val, offset[:, None] + quality[..., 0]])
        test = np.column_stack([base_test, offset[:, None] + quality[..., 1]])
        gain = (effects or {}).get(f, 0.0)
        val[:, 2] += gain
        test[:, 2] += gain
        families.append((val, test))
    return families, base_test


def verdicts(families, base_test) -> list[str]:
    """The report's decision: choose leave-one-seed-out, drop the families that chose the
    baseline itself on every seed, decide the rest together."""
    effects = []
    for val, test in families:
        effect, choices = cross_fitted_effect(val, test, base_test)
        if not (choices == 0).all():
            effects.append(effect)
    return [d.verdict for d in decide(effects, MARGIN)]


def binomial_tolerance(p: float, n: int) -> float:
    """Three standard errors of a share p estimated from n simulated studies."""
    return 3 * math.sqrt(p * (1 - p) / n)


def test_holm_keeps_the_family_wise_error_of_a_dataset_at_alpha_with_the_choice_on_validation():
    rng = np.random.default_rng(20261205)
    share = np.mean([any(v in (BETTER, WORSE) for v in verdicts(*simulated_dataset(rng))) for _ in range(STUDIES)])
    assert share <= SETTINGS.alpha + binomial_tolerance(SETTINGS.alpha, STUDIES), share


def test_the_simulation_tells_the_ways_that_fail_apart():
    """Choosing on validation, the plain paired t-test is not enough: on the same seeds it
    tests the luckiest model; leave-one-seed-out without the jackknife's standard error, it
    ignores that the seeds' choices lean on each other. Both give a family far more than
    alpha's false verdicts; the report's way does not."""
    rng = np.random.default_rng(1)
    rates = {"same seeds": [], "leave one out, plain t": [], "report": []}
    for _ in range(600):
        families, base = simulated_dataset(rng)
        val, test = families[0]
        best = int(np.argmax(val.mean(0)))
        rates["same seeds"].append(best != 0 and difference_p(paired_effect(test[:, best] - base)) < 0.05)
        effect, choices = cross_fitted_effect(val, test, base)
        if (choices == 0).all():
            for key in ("leave one out, plain t", "report"):
                rates[key].append(False)
            continue
        rates["leave one out, plain t"].append(difference_p(paired_effect(effect.diffs)) < 0.05)
        rates["report"].append(difference_p(effect) < 0.05)
    rates = {k: float(np.mean(v)) for k, v in rates.items()}
    assert rates["report"] <= 0.05 + binomial_tolerance(0.05, 600), rates
    assert rates["same seeds"] > 0.065 and rates["leave one out, plain t"] > 0.1, rates


def test_holm_keeps_the_family_wise_error_of_equivalence_at_alpha():
    """Every family's true effect exactly at the margin, on every strength: any
    *equivalent* is false."""
    rng = np.random.default_rng(11)
    found = []
    for _ in range(STUDIES):
        families, base_test = simulated_dataset(rng)
        shifted = [(val + MARGIN, test + MARGIN) for val, test in families]
        found.append(any(v == EQUIVALENT for v in verdicts(shifted, base_test)))
    share = float(np.mean(found))
    assert share <= SETTINGS.alpha + binomial_tolerance(SETTINGS.alpha, STUDIES), share


def test_an_effect_of_the_stated_detectable_size_is_found_with_the_stated_power():
    rng = np.random.default_rng(7)
    # what the report states it detects: from the paired spread at alpha / m (m tests);
    # the true spread of a paired difference here is NOISE·√2
    planted = detectable_effect(NOISE * math.sqrt(2), SEEDS, SETTINGS.alpha / FAMILIES, SETTINGS.power)
    found = []
    for _ in range(STUDIES):
        families, base_test = simulated_dataset(rng, {0: planted})
        effect, _ = cross_fitted_effect(*families[0], base_test)
        others = [cross_fitted_effect(val, test, base_test)[0] for val, test in families[1:]]
        found.append(decide([effect, *others], MARGIN)[0].verdict == BETTER)
    share = float(np.mean(found))
    assert share >= SETTINGS.power - binomial_tolerance(SETTINGS.power, STUDIES), share


# --- the same decision through findings(), from a members table ---


def members_table(rng, effects: dict[int, float]) -> Results:
    families, base_test = simulated_dataset(rng, effects)
    base_val = families[0][0][:, 0]
    rows = [{"family": "none", "strength": 0.0, "seed": s, "val_metric": base_val[s], "test_metric": base_test[s]}
            for s in range(SEEDS)]
    for f, (val, test) in enumerate(families):
        rows += [{"family": f"family_{f:02d}", "strength": float(k) / 10, "seed": s, "val_metric": val[s, k],
                  "test_metric": test[s, k]} for k in range(STRENGTHS) for s in range(SEEDS)]
    members = pd.DataFrame(rows).assign(
        dataset="signal", status="ok", metric_name="r2", task="regression", optimizer="Adam", lr=1e-3,
        strength_name=lambda d: np.where(d["family"] == "none", "none", "lam"))
    members["member"] = members.groupby("family").cumcount()
    members["val_loss"], members["test_loss"] = 1 - members["val_metric"], 1 - members["test_metric"]
    empty = pd.DataFrame()
    return Results(members=members, curves=empty, layers=empty, params=empty, features=empty, predictions={},
                   data={}), families, base_test


def test_findings_decide_what_the_simulation_decides_from_the_same_numbers():
    rng = np.random.default_rng(3)
    for _ in range(3):
        study, families, base_test = members_table(rng, {0: 0.05})
        found = [f for f in findings(study, SETTINGS) if f.family != "none"]
        tested = [(f, cross_fitted_effect(val, test, base_test)) for f, (val, test) in zip(found, families)]
        expected = decide([e for f, (e, c) in tested if not (c == 0).all()], MARGIN)
        assert [f.verdict for f, (e, c) in tested if not (c == 0).all()] == [d.verdict for d in expected]
        assert [f.p_adjusted for f, (e, c) in tested if not (c == 0).all()] == \
            pytest.approx([d.p_adjusted for d in expected], rel=1e-9)
        assert all(f.verdict == "no regularization selected" for f, (e, c) in tested if (c == 0).all())
        power = dataset_power(findings(study, SETTINGS), SETTINGS)[0]
        assert power.seeds == SEEDS and power.tests == len(expected)
    # a strength 0.05 better on validation and test: chosen, and found better
    verdicts_ = {f.family: f.verdict for f in findings(members_table(np.random.default_rng(0), {0: 0.05})[0])}
    assert verdicts_["family_00"] == BETTER
